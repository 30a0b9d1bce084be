/* The submit contract: API misuse is refused synchronously with -EINVAL or
 * -EBUSY and no callback ever runs for it; the op is not taken. */
#include "common.h"

#include <unistd.h>

/* After a refused submit: nothing in flight, and no callback turns up. */
static void assert_untaken(rio_loop *loop, t_rec *io)
{
	cr_assert(!rio_op_in_flight(&io->op), "a refused op is in flight");
	t_drain(loop, 2000);
	t_loop_sleep(loop, 5);
	cr_assert_eq(io->calls, 0, "a refused op got a callback (res %d)",
		     io->res);
}

Test(submit, null_callback_or_op_is_einval, .timeout = 20)
{
	rio_loop *loop = t_loop();
	t_rec r = { .calls = 0 };
	char buf[8];
	int a, b;

	t_pair(&a, &b);
	cr_assert_eq(rio_recv(loop, &r.op, b, buf, sizeof(buf), 0, NULL), -EINVAL);
	cr_assert_eq(rio_send(loop, &r.op, a, buf, sizeof(buf), 0, NULL), -EINVAL);
	cr_assert_eq(rio_timeout(loop, &r.op, 0, NULL), -EINVAL);
	cr_assert_eq(rio_close(loop, &r.op, a, NULL), -EINVAL);
	cr_assert_eq(rio_accept(loop, &r.op, a, NULL, NULL, 0, NULL), -EINVAL);
	cr_assert_eq(rio_timeout(loop, NULL, 0, t_rec_cb), -EINVAL);
	cr_assert_eq(rio_recv(loop, NULL, b, buf, sizeof(buf), 0, t_rec_cb), -EINVAL);
	cr_assert_eq(rio_cancel(loop, NULL, &r.op, t_rec_cb), -EINVAL);
	cr_assert_eq(rio_cancel(loop, &r.op, &r.op, NULL), -EINVAL);
	assert_untaken(loop, &r);
	/* `a` was not closed by the refused rio_close. */
	cr_assert_eq(write(a, "x", 1), 1);
	close(a);
	close(b);
	t_loop_done(loop);
}

Test(submit, op_already_in_flight_is_ebusy, .timeout = 20)
{
	rio_loop *loop = t_loop();
	t_rec r = { .calls = 0 }, c = { .calls = 0 };
	char buf[8];
	int a, b;

	t_pair(&a, &b);
	cr_assert_eq(rio_recv(loop, &r.op, b, buf, sizeof(buf), 0, t_rec_cb), 0);
	cr_assert_eq(rio_recv(loop, &r.op, b, buf, sizeof(buf), 0, t_rec_cb), -EBUSY);
	cr_assert_eq(rio_send(loop, &r.op, a, "x", 1, 0, t_rec_cb), -EBUSY);
	cr_assert_eq(rio_timeout(loop, &r.op, 0, t_rec_cb), -EBUSY);
	cr_assert_eq(rio_post(loop, &r.op, t_rec_cb), -EBUSY);
	cr_assert(rio_op_in_flight(&r.op), "the first submission is untouched");
	/* The first one still completes, exactly once, with its data. */
	cr_assert_eq(write(a, "hi", 2), 2);
	T_RUN_UNTIL(loop, r.calls > 0, 3000);
	t_loop_sleep(loop, 10);
	cr_assert_eq(r.calls, 1);
	cr_assert_eq(r.res, 2, "the in-flight recv got %d", r.res);
	/* A cancel op that is itself in flight cannot be reused either. */
	cr_assert_eq(rio_timeout(loop, &r.op, 10000 * T_MS, t_rec_cb), 0);
	cr_assert_eq(rio_cancel(loop, &c.op, &r.op, t_rec_cb), 0);
	cr_assert_eq(rio_cancel(loop, &c.op, &r.op, t_rec_cb), -EBUSY);
	T_RUN_UNTIL(loop, r.calls > 1 && c.calls > 0, 3000);
	cr_assert_eq(c.calls, 1);
	cr_assert_eq(r.res, -ECANCELED);
	close(a);
	close(b);
	t_loop_done(loop);
}

Test(submit, multishot_accept_with_an_address_is_einval, .timeout = 20)
{
	rio_loop *loop = t_loop();
	t_rec acc = { .calls = 0 };
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);
	int lfd = t_listen(AF_INET, 8, NULL);

	cr_assert_eq(rio_accept(loop, &acc.op, lfd, (struct sockaddr *)&ss, &len,
				RIO_MULTISHOT, t_rec_cb),
		     -EINVAL);
	cr_assert_eq(rio_accept(loop, &acc.op, lfd, NULL, &len, RIO_MULTISHOT,
				t_rec_cb),
		     -EINVAL);
	assert_untaken(loop, &acc);
	close(lfd);
	t_loop_done(loop);
}

Test(submit, deadline_on_a_multishot_op_or_timer_is_einval, .timeout = 20)
{
	rio_loop *loop = t_loop();
	t_rec acc = { .calls = 0 }, t = { .calls = 0 }, r = { .calls = 0 };
	rio_bufpool *pool = NULL;
	int lfd = t_listen(AF_INET, 8, NULL);
	int a, b, rc;

	rio_op_set_deadline(&acc.op, 50 * T_MS);
	cr_assert_eq(rio_accept(loop, &acc.op, lfd, NULL, NULL, RIO_MULTISHOT,
				t_rec_cb),
		     -EINVAL);
	rio_op_set_deadline(&t.op, 50 * T_MS);
	cr_assert_eq(rio_timeout(loop, &t.op, 1 * T_MS, t_rec_cb), -EINVAL);
	assert_untaken(loop, &acc);
	assert_untaken(loop, &t);

	t_pair(&a, &b);
	rc = rio_bufpool_create(loop, 4, 4096, &pool);
	if (rc == 0) {
		rio_op_set_deadline(&r.op, 50 * T_MS);
		cr_assert_eq(rio_recv_multishot(loop, &r.op, b, pool, t_rec_cb),
			     -EINVAL);
		assert_untaken(loop, &r);
		cr_assert_eq(rio_bufpool_destroy(pool), 0);
	} else {
		cr_assert(rc == -EINVAL && !t_kernel_at_least(6, 0),
			  "rio_bufpool_create: %s", rio_strerror(rc));
		cr_log_warn("no buffer rings here: multishot recv part skipped");
	}
	/* A one-shot accept does take a deadline. */
	rio_op_set_deadline(&acc.op, 20 * T_MS);
	cr_assert_eq(rio_accept(loop, &acc.op, lfd, NULL, NULL, 0, t_rec_cb), 0);
	T_RUN_UNTIL(loop, acc.calls > 0, 3000);
	cr_assert_eq(acc.res, -ETIMEDOUT);
	close(a);
	close(b);
	close(lfd);
	t_loop_done(loop);
}

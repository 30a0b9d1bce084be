/* The loop itself: destroy contract, run modes, counters, op state. */
#include "common.h"

#include <stdlib.h>
#include <unistd.h>

struct op_rec {
	rio_op op;
	int calls;
	int res;
};

static void rec_cb(rio_loop *loop, rio_op *op, int res)
{
	struct op_rec *r = T_CONTAINER_OF(op, struct op_rec, op);

	(void)loop;
	r->calls++;
	r->res = res;
}

Test(loop, destroy_with_an_op_in_flight_is_ebusy, .timeout = 20)
{
	rio_loop *loop = t_loop();
	struct op_rec t = { .calls = 0 }, c = { .calls = 0 };

	cr_assert_eq(rio_timeout(loop, &t.op, 10000 * T_MS, rec_cb), 0);
	cr_assert_eq(rio_loop_destroy(loop), -EBUSY);
	/* The loop is intact and still runs the op. */
	cr_assert(rio_op_in_flight(&t.op));
	cr_assert_eq(rio_cancel(loop, &c.op, &t.op, rec_cb), 0);
	T_RUN_UNTIL(loop, t.calls && c.calls, 3000);
	cr_assert_eq(t.res, -ECANCELED);
	cr_assert_eq(rio_loop_destroy(loop), 0);
}

Test(loop, run_modes_return_the_ops_in_flight, .timeout = 20)
{
	rio_loop *loop = t_loop();
	struct op_rec t[3];
	uint64_t start = t_now_ns();

	memset(t, 0, sizeof(t));
	cr_assert_eq(rio_loop_run(loop, RIO_RUN_NOWAIT), 0, "idle loop");
	cr_assert_eq(rio_loop_run(loop, RIO_RUN_DEFAULT), 0, "idle loop");
	for (int i = 0; i < 3; i++)
		cr_assert_eq(rio_timeout(loop, &t[i].op,
					 (uint64_t)(i + 1) * 200 * T_MS, rec_cb),
			     0);
	cr_assert_eq(rio_loop_run(loop, RIO_RUN_NOWAIT), 3);
	cr_assert_lt(t_now_ns() - start, 150 * T_MS, "NOWAIT blocked");
	cr_assert_eq(rio_loop_run(loop, RIO_RUN_ONCE), 2,
		     "ONCE: one timer done, two left");
	cr_assert_eq(t[0].calls, 1);
	cr_assert_eq(t[1].calls + t[2].calls, 0);
	cr_assert_eq(rio_loop_run(loop, RIO_RUN_DEFAULT), 0);
	cr_assert_eq(t[1].calls + t[2].calls, 2);
	t_loop_done(loop);
}

Test(loop, counters_match_what_the_test_did, .timeout = 20)
{
	rio_loop *loop = t_loop();
	struct op_rec t[5], p[3], c = { .calls = 0 }, bad = { .calls = 0 };
	rio_counters k;
	uint64_t helper0;

	memset(t, 0, sizeof(t));
	memset(p, 0, sizeof(p));
	rio_loop_counters(loop, &k);
	cr_assert_eq(k.ops_submitted, 0);
	cr_assert_eq(k.ops_completed, 0);
	cr_assert_eq(k.completions, 0);
	helper0 = t_helper_ops;
	for (int i = 0; i < 5; i++)
		cr_assert_eq(rio_timeout(loop, &t[i].op,
					 i == 4 ? 10000 * T_MS : 0, rec_cb),
			     0);
	for (int i = 0; i < 3; i++)
		cr_assert_eq(rio_post(loop, &p[i].op, rec_cb), 0);
	cr_assert_eq(rio_cancel(loop, &c.op, &t[4].op, rec_cb), 0);
	/* Refused submissions count for nothing. */
	cr_assert_eq(rio_timeout(loop, &t[0].op, 0, rec_cb), -EBUSY);
	cr_assert_eq(rio_timeout(loop, &bad.op, 0, NULL), -EINVAL);
	rio_loop_counters(loop, &k);
	cr_assert_eq(k.ops_submitted, 9, "submitted %llu, want 9",
		     (unsigned long long)k.ops_submitted);
	t_drain(loop, 3000);
	rio_loop_counters(loop, &k);
	cr_assert_eq(k.ops_submitted, 9 + (t_helper_ops - helper0));
	cr_assert_eq(k.ops_completed, 9 + (t_helper_ops - helper0),
		     "completed %llu", (unsigned long long)k.ops_completed);
	cr_assert_eq(k.completions, k.ops_completed, "no multishot here");
	cr_assert_gt(k.enters, 0);
	cr_assert_eq(t[4].res, -ECANCELED);
	cr_assert_eq(bad.calls, 0);
	t_loop_done(loop);
}

Test(loop, op_in_flight_tracks_the_op_life, .timeout = 20)
{
	rio_loop *loop = t_loop();
	struct op_rec t = { .calls = 0 };

	rio_op_init(&t.op);
	cr_assert(!rio_op_in_flight(&t.op));
	cr_assert_eq(rio_timeout(loop, &t.op, 1 * T_MS, rec_cb), 0);
	cr_assert(rio_op_in_flight(&t.op));
	T_RUN_UNTIL(loop, t.calls, 3000);
	cr_assert(!rio_op_in_flight(&t.op));
	cr_assert_eq(t.op.res, 0);
	t_loop_done(loop);
}

Test(loop, strerror_is_never_null, .timeout = 10)
{
	const int errs[] = { 0, -EINVAL, -ECANCELED, -ETIMEDOUT, -ENOBUFS,
			     -12345, 12345 };

	for (size_t i = 0; i < sizeof(errs) / sizeof(errs[0]); i++) {
		const char *s = rio_strerror(errs[i]);

		cr_assert_not_null(s);
		cr_assert_gt(strlen(s), 0);
	}
	cr_assert_str_neq(rio_strerror(-ECANCELED), rio_strerror(-ETIMEDOUT));
}

Test(loop, counters_count_each_multishot_result, .timeout = 20)
{
	rio_loop *loop = t_loop();
	struct op_rec acc = { .calls = 0 }, c = { .calls = 0 };
	rio_counters k0, k;
	uint16_t port;
	int lfd = t_listen(AF_INET, 8, &port);
	int cfd[3];
	uint64_t helper0;

	rio_loop_counters(loop, &k0);
	helper0 = t_helper_ops;
	cr_assert_eq(rio_accept(loop, &acc.op, lfd, NULL, NULL, RIO_MULTISHOT,
				rec_cb),
		     0);
	for (int i = 0; i < 3; i++)
		cfd[i] = t_connect(AF_INET, port);
	T_RUN_UNTIL(loop, acc.calls >= 3, 3000);
	cr_assert_eq(rio_cancel(loop, &c.op, &acc.op, rec_cb), 0);
	T_RUN_UNTIL(loop, acc.calls >= 4 && c.calls, 3000);
	t_drain(loop, 2000);
	rio_loop_counters(loop, &k);
	/* accept + cancel taken; 3 accepted fds + final + cancel delivered. */
	cr_assert_eq(k.ops_submitted - k0.ops_submitted,
		     2 + (t_helper_ops - helper0));
	cr_assert_eq(k.ops_completed - k0.ops_completed,
		     2 + (t_helper_ops - helper0));
	cr_assert_eq(k.completions - k0.completions,
		     5 + (t_helper_ops - helper0), "completions %llu",
		     (unsigned long long)(k.completions - k0.completions));
	for (int i = 0; i < 3; i++)
		close(cfd[i]);
	close(lfd);
	t_loop_done(loop);
}

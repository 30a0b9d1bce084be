/* rio_loop_stop: from another thread it ends a blocked RIO_RUN_DEFAULT; a
 * stop requested before the run ends it after one turn. */
#include "common.h"

#include <pthread.h>
#include <unistd.h>

struct rec {
	rio_op op;
	int calls;
	int res;
};

static void rec_cb(rio_loop *loop, rio_op *op, int res)
{
	struct rec *r = RIO_CONTAINER_OF(op, struct rec, op);

	(void)loop;
	r->calls++;
	r->res = res;
}

static void *stopper_main(void *arg)
{
	usleep(50000); /* let the loop block first */
	rio_loop_stop(arg);
	return NULL;
}

Test(stop, from_another_thread_returns_run_default, .timeout = 20)
{
	rio_loop *loop = t_loop();
	struct rec t = { .calls = 0 }, c = { .calls = 0 };
	pthread_t th;
	uint64_t start;
	int rc;

	cr_assert_eq(rio_timeout(loop, &t.op, 10000 * T_MS, rec_cb), 0);
	cr_assert_eq(pthread_create(&th, NULL, stopper_main, loop), 0);
	start = t_now_ns();
	rc = rio_loop_run(loop, RIO_RUN_DEFAULT);
	pthread_join(th, NULL);
	cr_assert_lt(t_now_ns() - start, 5000 * T_MS, "stop did not return");
	cr_assert_eq(rc, 1, "one op (the timer) is still in flight, got %d",
		     rc);
	cr_assert_eq(t.calls, 0);
	cr_assert_eq(rio_cancel(loop, &c.op, &t.op, rec_cb), 0);
	T_RUN_UNTIL(loop, t.calls > 0 && c.calls > 0, 3000);
	cr_assert_eq(t.res, -ECANCELED);
	t_loop_done(loop);
}

Test(stop, before_run_returns_after_one_turn, .timeout = 20)
{
	rio_loop *loop = t_loop();
	struct rec t = { .calls = 0 }, c = { .calls = 0 };
	uint64_t start;

	cr_assert_eq(rio_timeout(loop, &t.op, 10000 * T_MS, rec_cb), 0);
	rio_loop_stop(loop);
	start = t_now_ns();
	cr_assert_eq(rio_loop_run(loop, RIO_RUN_DEFAULT), 1);
	cr_assert_lt(t_now_ns() - start, 2000 * T_MS, "a pending stop was lost");
	/* The stop is consumed: the next run goes on until the work ends. */
	cr_assert_eq(rio_cancel(loop, &c.op, &t.op, rec_cb), 0);
	cr_assert_eq(rio_loop_run(loop, RIO_RUN_DEFAULT), 0);
	cr_assert_eq(t.res, -ECANCELED);
	cr_assert_eq(c.res, 0);
	t_loop_done(loop);
}

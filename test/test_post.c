/* rio_post from other threads: runs on the loop thread with res 0, wakes
 * a blocked loop, never loses a wakeup; rio_loop_wake. */
#include "common.h"

#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

struct posted {
	rio_op op;
	int calls;
	int res;
	pthread_t ran_on;
	rio_op *to_cancel; /* optional: cancel this from the callback */
	rio_op cancel;
	int cancel_rc;
};

static void cancel_done_cb(rio_loop *loop, rio_op *op, int res)
{
	(void)loop;
	(void)op;
	(void)res;
}

static void posted_cb(rio_loop *loop, rio_op *op, int res)
{
	struct posted *p = RIO_CONTAINER_OF(op, struct posted, op);

	p->calls++;
	p->res = res;
	p->ran_on = pthread_self();
	if (p->to_cancel)
		p->cancel_rc = rio_cancel(loop, &p->cancel, p->to_cancel,
					  cancel_done_cb);
}

struct timer {
	rio_op op;
	int calls;
	int res;
};

static void timer_cb(rio_loop *loop, rio_op *op, int res)
{
	struct timer *t = RIO_CONTAINER_OF(op, struct timer, op);

	(void)loop;
	t->calls++;
	t->res = res;
}

enum action { DO_POST, DO_WAKE_THEN_POST };

struct poster {
	rio_loop *loop;
	struct posted *p;
	enum action what;
	int rc;
};

static void *poster_main(void *arg)
{
	struct poster *ps = arg;

	usleep(50000); /* let the loop block first */
	switch (ps->what) {
	case DO_POST:
		ps->rc = rio_post(ps->loop, &ps->p->op, posted_cb);
		break;
	case DO_WAKE_THEN_POST:
		rio_loop_wake(ps->loop);
		usleep(20000);
		ps->rc = rio_post(ps->loop, &ps->p->op, posted_cb);
		break;
	}
	return NULL;
}

Test(post, wakes_run_default_and_runs_on_the_loop_thread, .timeout = 20)
{
	rio_loop *loop = t_loop();
	struct timer t = { .calls = 0 };
	struct posted p = { .calls = 0 };
	struct poster ps = { .loop = loop, .p = &p, .what = DO_POST };
	pthread_t th;
	uint64_t start;
	int rc;

	/* A long timer keeps RUN_DEFAULT blocked; the posted callback
	 * cancels it, so the run can only end early through the post. */
	cr_assert_eq(rio_timeout(loop, &t.op, 10000 * T_MS, timer_cb), 0);
	p.to_cancel = &t.op;
	cr_assert_eq(pthread_create(&th, NULL, poster_main, &ps), 0);
	start = t_now_ns();
	rc = rio_loop_run(loop, RIO_RUN_DEFAULT);
	pthread_join(th, NULL);
	cr_assert_eq(ps.rc, 0, "rio_post: %s", rio_strerror(ps.rc));
	cr_assert_eq(rc, 0, "RUN_DEFAULT returned %d", rc);
	cr_assert_lt(t_now_ns() - start, 5000 * T_MS, "the post never woke it");
	cr_assert_eq(p.calls, 1);
	cr_assert_eq(p.res, 0, "posted res %d", p.res);
	cr_assert(pthread_equal(p.ran_on, pthread_self()),
		  "posted callback ran off the loop thread");
	cr_assert_eq(p.cancel_rc, 0);
	cr_assert_eq(t.calls, 1);
	cr_assert_eq(t.res, -ECANCELED);
	t_loop_done(loop);
}

Test(post, wakes_run_once, .timeout = 20)
{
	rio_loop *loop = t_loop();
	struct timer t = { .calls = 0 };
	struct posted p = { .calls = 0 };
	struct poster ps = { .loop = loop, .p = &p, .what = DO_WAKE_THEN_POST };
	rio_counters cnt;
	pthread_t th;
	uint64_t start;
	int rc;

	cr_assert_eq(rio_timeout(loop, &t.op, 10000 * T_MS, timer_cb), 0);
	cr_assert_eq(pthread_create(&th, NULL, poster_main, &ps), 0);
	start = t_now_ns();
	/* Bounded: each turn returns on a completion, the post is one. */
	for (int i = 0; i < 10 && p.calls == 0; i++) {
		rc = rio_loop_run(loop, RIO_RUN_ONCE);
		cr_assert_geq(rc, 0);
	}
	pthread_join(th, NULL);
	cr_assert_eq(ps.rc, 0);
	cr_assert_eq(p.calls, 1);
	cr_assert_eq(p.res, 0);
	cr_assert_lt(t_now_ns() - start, 5000 * T_MS);
	cr_assert_eq(t.calls, 0, "the long timer fired early");
	rio_loop_counters(loop, &cnt);
	cr_assert_geq(cnt.wakeups, 1, "no cross-thread wakeup was counted");
	cr_assert(rio_op_in_flight(&t.op));
	{
		struct posted c = { .calls = 0 };

		cr_assert_eq(rio_cancel(loop, &c.op, &t.op, posted_cb), 0);
		T_RUN_UNTIL(loop, t.calls > 0 && c.calls > 0, 3000);
	}
	t_loop_done(loop);
}

enum { THREADS = 4, PER_THREAD = 500 };

struct burst {
	rio_loop *loop;
	struct posted *ops;
	int failures;
};

static void *burst_main(void *arg)
{
	struct burst *b = arg;

	for (int i = 0; i < PER_THREAD; i++)
		if (rio_post(b->loop, &b->ops[i].op, posted_cb) != 0)
			b->failures++;
	return NULL;
}

static int sum_calls(const struct posted *ops, int n)
{
	int total = 0;

	for (int i = 0; i < n; i++)
		total += ops[i].calls;
	return total;
}

Test(post, posts_from_many_threads_each_run_exactly_once, .timeout = 30)
{
	rio_loop *loop = t_loop();
	struct posted *ops = calloc(THREADS * PER_THREAD, sizeof(*ops));
	struct burst b[THREADS];
	pthread_t th[THREADS];

	cr_assert_not_null(ops);
	for (int i = 0; i < THREADS; i++) {
		b[i] = (struct burst){ loop, ops + i * PER_THREAD, 0 };
		cr_assert_eq(pthread_create(&th[i], NULL, burst_main, &b[i]), 0);
	}
	for (int i = 0; i < THREADS; i++)
		pthread_join(th[i], NULL);
	for (int i = 0; i < THREADS; i++)
		cr_assert_eq(b[i].failures, 0, "rio_post refused");
	T_RUN_UNTIL(loop, sum_calls(ops, THREADS * PER_THREAD) >=
				  THREADS * PER_THREAD,
		    10000);
	t_loop_sleep(loop, 10);
	for (int i = 0; i < THREADS * PER_THREAD; i++) {
		cr_assert_eq(ops[i].calls, 1, "post %d ran %d times", i,
			     ops[i].calls);
		cr_assert_eq(ops[i].res, 0);
		cr_assert(pthread_equal(ops[i].ran_on, pthread_self()));
	}
	free(ops);
	t_loop_done(loop);
}

Test(post, misuse_is_refused_synchronously, .timeout = 20)
{
	rio_loop *loop = t_loop();
	struct posted p = { .calls = 0 };

	cr_assert_eq(rio_post(loop, &p.op, NULL), -EINVAL);
	cr_assert_eq(rio_post(loop, NULL, posted_cb), -EINVAL);
	cr_assert_eq(rio_post(loop, &p.op, posted_cb), 0);
	cr_assert(rio_op_in_flight(&p.op), "a posted op is in flight");
	cr_assert_eq(rio_post(loop, &p.op, posted_cb), -EBUSY);
	T_RUN_UNTIL(loop, p.calls > 0, 3000);
	t_loop_sleep(loop, 5);
	cr_assert_eq(p.calls, 1, "the refused posts must not run");
	t_loop_done(loop);
}

Test(post, cancel_of_a_posted_op_is_consistent, .timeout = 20)
{
	rio_loop *loop = t_loop();
	struct posted p = { .calls = 0 }, c = { .calls = 0 };

	cr_assert_eq(rio_post(loop, &p.op, posted_cb), 0);
	cr_assert_eq(rio_cancel(loop, &c.op, &p.op, posted_cb), 0);
	T_RUN_UNTIL(loop, p.calls > 0 && c.calls > 0, 3000);
	t_loop_sleep(loop, 5);
	cr_assert_eq(p.calls, 1);
	cr_assert_eq(c.calls, 1);
	/* Either it was stopped, or it ran with its real result (0). */
	if (c.res == 0)
		cr_assert_eq(p.res, -ECANCELED);
	else
		cr_assert(c.res == -EALREADY || c.res == -ENOENT,
			  "cancel of a post: %d (%s)", c.res, rio_strerror(c.res));
	if (c.res != 0)
		cr_assert_eq(p.res, 0, "posted op got %d", p.res);
	t_loop_done(loop);
}

/* Posts racing a loop that is blocked: no wakeup may be lost. The only
 * other op is a 10 s timer, so a lost wakeup shows up as a stall. */
struct racer {
	rio_loop *loop;
	struct posted *ops;
	int failures;
	unsigned seed;
};

static void *racer_main(void *arg)
{
	struct racer *r = arg;

	for (int i = 0; i < PER_THREAD; i++) {
		if (rio_post(r->loop, &r->ops[i].op, posted_cb) != 0)
			r->failures++;
		r->seed = r->seed * 1103515245u + 12345u;
		if ((r->seed >> 16) % 8 == 0)
			usleep((r->seed >> 8) % 200);
	}
	return NULL;
}

Test(post, posts_racing_a_blocked_loop_lose_no_wakeup, .timeout = 30)
{
	rio_loop *loop = t_loop();
	struct posted *ops = calloc(THREADS * PER_THREAD, sizeof(*ops));
	struct racer r[THREADS];
	pthread_t th[THREADS];
	struct timer t = { .calls = 0 };
	struct posted c = { .calls = 0 };
	uint64_t start = t_now_ns();
	int turns = 0;

	cr_assert_not_null(ops);
	cr_assert_eq(rio_timeout(loop, &t.op, 10000 * T_MS, timer_cb), 0);
	for (int i = 0; i < THREADS; i++) {
		r[i] = (struct racer){ loop, ops + i * PER_THREAD, 0, 7u * i + 1 };
		cr_assert_eq(pthread_create(&th[i], NULL, racer_main, &r[i]), 0);
	}
	while (sum_calls(ops, THREADS * PER_THREAD) < THREADS * PER_THREAD &&
	       t.calls == 0 && ++turns < 100000)
		cr_assert_geq(rio_loop_run(loop, RIO_RUN_ONCE), 0);
	for (int i = 0; i < THREADS; i++)
		pthread_join(th[i], NULL);
	cr_assert_eq(t.calls, 0, "the loop stalled until its 10 s timer: a "
				 "post's wakeup was lost");
	cr_assert_lt(t_now_ns() - start, 5000 * T_MS);
	for (int i = 0; i < THREADS; i++)
		cr_assert_eq(r[i].failures, 0);
	for (int i = 0; i < THREADS * PER_THREAD; i++)
		cr_assert_eq(ops[i].calls, 1, "post %d ran %d times", i,
			     ops[i].calls);
	cr_assert_eq(rio_cancel(loop, &c.op, &t.op, posted_cb), 0);
	T_RUN_UNTIL(loop, t.calls > 0 && c.calls > 0, 3000);
	free(ops);
	t_loop_done(loop);
}

/* Timers: rio_timeout fires with 0, never early, in deadline order. */
#include "common.h"

struct timer {
	rio_op op;
	int calls;
	int res;
	int seq;
	uint64_t fired_ns;
};

static int g_seq;

static void timer_cb(rio_loop *loop, rio_op *op, int res)
{
	struct timer *t = RIO_CONTAINER_OF(op, struct timer, op);

	(void)loop;
	t->calls++;
	t->res = res;
	t->seq = ++g_seq;
	t->fired_ns = t_now_ns();
	cr_assert_eq(op->res, res, "op->res must equal the callback's res");
	cr_assert_eq(op->flags & RIO_OP_F_MORE, 0u, "a timer is one-shot");
}

Test(timeout, fires_with_zero_after_its_duration, .timeout = 20)
{
	rio_loop *loop = t_loop();
	struct timer t = { .calls = 0 };
	uint64_t start = t_now_ns();

	cr_assert_eq(rio_timeout(loop, &t.op, 30 * T_MS, timer_cb), 0);
	cr_assert(rio_op_in_flight(&t.op), "a submitted timer is in flight");
	cr_assert_eq(t.calls, 0, "callback ran inside submit");
	T_RUN_UNTIL(loop, t.calls > 0, 3000);
	cr_assert_eq(t.res, 0, "timer res %d (%s)", t.res, rio_strerror(t.res));
	/* CLOCK_MONOTONIC timers never fire early; allow 1 ms of rounding. */
	cr_assert_geq(t.fired_ns - start, 29 * T_MS, "fired after %llu ns",
		      (unsigned long long)(t.fired_ns - start));
	cr_assert(!rio_op_in_flight(&t.op), "completed op still in flight");
	t_loop_sleep(loop, 40);
	cr_assert_eq(t.calls, 1, "timer completed %d times", t.calls);
	t_loop_done(loop);
}

Test(timeout, zero_duration_completes_on_a_later_turn, .timeout = 20)
{
	rio_loop *loop = t_loop();
	struct timer t = { .calls = 0 };

	cr_assert_eq(rio_timeout(loop, &t.op, 0, timer_cb), 0);
	cr_assert_eq(t.calls, 0, "callback ran inside submit");
	T_RUN_UNTIL(loop, t.calls > 0, 2000);
	cr_assert_eq(t.res, 0);
	t_loop_sleep(loop, 10);
	cr_assert_eq(t.calls, 1);
	t_loop_done(loop);
}

Test(timeout, two_timers_fire_in_deadline_order, .timeout = 20)
{
	rio_loop *loop = t_loop();
	struct timer slow = { .calls = 0 }, fast = { .calls = 0 };
	uint64_t start = t_now_ns();

	g_seq = 0;
	/* Submitted first, but due later. */
	cr_assert_eq(rio_timeout(loop, &slow.op, 60 * T_MS, timer_cb), 0);
	cr_assert_eq(rio_timeout(loop, &fast.op, 10 * T_MS, timer_cb), 0);
	T_RUN_UNTIL(loop, slow.calls > 0 && fast.calls > 0, 3000);
	cr_assert_eq(fast.res, 0);
	cr_assert_eq(slow.res, 0);
	cr_assert_eq(fast.seq, 1, "the 10 ms timer must fire first");
	cr_assert_eq(slow.seq, 2, "the 60 ms timer must fire second");
	cr_assert_geq(fast.fired_ns - start, 9 * T_MS);
	cr_assert_geq(slow.fired_ns - start, 59 * T_MS);
	cr_assert_eq(fast.calls + slow.calls, 2);
	t_loop_done(loop);
}

Test(timeout, run_default_returns_when_timers_are_done, .timeout = 20)
{
	rio_loop *loop = t_loop();
	struct timer t[8];
	uint64_t start = t_now_ns();
	int rc;

	g_seq = 0;
	memset(t, 0, sizeof(t));
	/* Reverse order of submission: seq must follow the durations. */
	for (int i = 0; i < 8; i++)
		cr_assert_eq(rio_timeout(loop, &t[i].op,
					 (uint64_t)(8 - i) * 5 * T_MS, timer_cb),
			     0);
	rc = rio_loop_run(loop, RIO_RUN_DEFAULT);
	cr_assert_eq(rc, 0, "RUN_DEFAULT returned %d with timers done", rc);
	cr_assert_lt(t_now_ns() - start, 2000 * T_MS);
	for (int i = 0; i < 8; i++) {
		cr_assert_eq(t[i].calls, 1, "timer %d: %d calls", i, t[i].calls);
		cr_assert_eq(t[i].res, 0);
		cr_assert_eq(t[i].seq, 8 - i, "timer %d fired at position %d", i,
			     t[i].seq);
	}
	t_loop_done(loop);
}

struct ticker {
	rio_op op;
	int calls;
	int bad;
};

static void ticker_cb(rio_loop *loop, rio_op *op, int res)
{
	struct ticker *t = RIO_CONTAINER_OF(op, struct ticker, op);

	t->calls++;
	if (res != 0)
		t->bad++;
	/* The op is the caller's again inside its callback: resubmit. */
	if (t->calls < 5 && rio_timeout(loop, op, 1 * T_MS, ticker_cb) != 0)
		t->bad++;
}

Test(timeout, resubmit_from_own_callback, .timeout = 20)
{
	rio_loop *loop = t_loop();
	struct ticker t = { .calls = 0 };

	cr_assert_eq(rio_timeout(loop, &t.op, 1 * T_MS, ticker_cb), 0);
	T_RUN_UNTIL(loop, t.calls >= 5, 3000);
	t_loop_sleep(loop, 10);
	cr_assert_eq(t.calls, 5, "ticked %d times", t.calls);
	cr_assert_eq(t.bad, 0, "a tick failed or a resubmit was refused");
	cr_assert(!rio_op_in_flight(&t.op));
	t_loop_done(loop);
}

Test(timeout, huge_durations_do_not_wrap_around, .timeout = 20)
{
	rio_loop *loop = t_loop();
	struct timer t[3];
	struct timer c[3];
	const uint64_t huge[3] = { UINT64_MAX, UINT64_MAX / 2,
				   (uint64_t)INT64_MAX + 1 };

	memset(t, 0, sizeof(t));
	memset(c, 0, sizeof(c));
	/* Centuries away: adding them to "now" must not wrap into the past. */
	for (int i = 0; i < 3; i++)
		cr_assert_eq(rio_timeout(loop, &t[i].op, huge[i], timer_cb), 0);
	t_loop_sleep(loop, 30);
	for (int i = 0; i < 3; i++)
		cr_assert_eq(t[i].calls, 0, "timer of %llu ns fired with %d",
			     (unsigned long long)huge[i], t[i].res);
	for (int i = 0; i < 3; i++)
		cr_assert_eq(rio_cancel(loop, &c[i].op, &t[i].op, timer_cb), 0);
	T_RUN_UNTIL(loop, t[0].calls && t[1].calls && t[2].calls, 3000);
	for (int i = 0; i < 3; i++) {
		cr_assert_eq(t[i].res, -ECANCELED);
		cr_assert_eq(c[i].res, 0);
	}
	t_loop_done(loop);
}

/*
 * rio_wakeup_start / rio_wakeup_send: a handle that keeps the loop
 * running and is woken from other threads, on every backend. Sends are
 * merged but never lost (after a send, a callback runs that sees what
 * the sender did before it); a cancel ends it once; what is refused.
 */
#include "common.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <unistd.h>

static struct {
	rio_op op;
	rio_loop *loop;
	int calls, finals, final_res;
	unsigned flags;
	int cancel_after; /* the callback cancels after this many */
	rio_op cancel;
	atomic_int sent;  /* senders' work, done before each send */
	int seen;         /* what the last callback saw of it */
	atomic_int acked; /* callbacks so far, for a sender to wait on */
} W;

static void cancel_cb(rio_loop *loop, rio_op *op, int res)
{
	(void)loop;
	(void)op;
	cr_assert_eq(res, 0);
}

static void w_cb(rio_loop *loop, rio_op *op, int res)
{
	if (!(op->flags & RIO_OP_F_MORE)) {
		W.finals++;
		W.final_res = res;
		return;
	}
	cr_assert_eq(res, 0);
	cr_assert_eq(W.finals, 0, "a callback after the final one");
	W.calls++;
	W.seen = atomic_load(&W.sent);
	atomic_store(&W.acked, W.calls);
	if (W.cancel_after && W.calls == W.cancel_after)
		cr_assert_eq(rio_cancel(loop, &W.cancel, &W.op, cancel_cb), 0);
}

static void *sender(void *arg)
{
	int n = *(int *)arg;
	for (int i = 0; i < n; i++) {
		usleep(20000);
		atomic_fetch_add(&W.sent, 1);
		rio_wakeup_send(W.loop, &W.op);
		/* one callback per send: a slow loop (valgrind) would merge
		 * the next one into it; 5 s at most */
		for (int k = 0; k < 5000 && atomic_load(&W.acked) <= i; k++)
			usleep(1000);
	}
	return NULL;
}

/* Nothing else in flight: RIO_RUN_DEFAULT waits on the handle, gets each
 * send (20 ms apart, each after the last one's callback: none merged),
 * and returns once the callback has cancelled it. */
Test(wakeup, keeps_the_loop_running_until_cancelled, .timeout = 20)
{
	memset(&W, 0, sizeof W);
	W.loop = t_loop();
	W.cancel_after = 3;
	cr_assert_eq(rio_wakeup_start(W.loop, &W.op, w_cb), 0);
	cr_assert_eq(rio_op_in_flight(&W.op), 1);
	pthread_t th;
	static int three = 3;
	cr_assert_eq(pthread_create(&th, NULL, sender, &three), 0);
	uint64_t t0 = t_now_ns();
	cr_assert_eq(rio_loop_run(W.loop, RIO_RUN_DEFAULT), 0);
	pthread_join(th, NULL);
	cr_assert_eq(W.calls, 3);
	cr_assert_eq(W.finals, 1);
	cr_assert_eq(W.final_res, -ECANCELED);
	cr_assert_eq(W.seen, 3);
	cr_assert_geq(t_now_ns() - t0, 55 * T_MS, "returned before the sends");
	t_loop_done(W.loop);
}

static void *burst(void *arg)
{
	(void)arg;
	for (int i = 0; i < 2000; i++) {
		atomic_fetch_add(&W.sent, 1);
		cr_assert_eq(rio_wakeup_send(W.loop, &W.op), 0);
	}
	return NULL;
}

/* 4 threads x 2000 sends as fast as they go: merged into fewer callbacks,
 * but the last callback has seen all 8000. */
Test(wakeup, sends_merge_but_none_is_lost, .timeout = 30)
{
	memset(&W, 0, sizeof W);
	W.loop = t_loop();
	cr_assert_eq(rio_wakeup_start(W.loop, &W.op, w_cb), 0);
	pthread_t th[4];
	for (int i = 0; i < 4; i++)
		cr_assert_eq(pthread_create(&th[i], NULL, burst, NULL), 0);
	T_RUN_UNTIL(W.loop, W.seen == 8000, 10000);
	for (int i = 0; i < 4; i++)
		pthread_join(th[i], NULL);
	t_loop_sleep(W.loop, 20);
	cr_assert_eq(W.seen, 8000);
	cr_assert_geq(W.calls, 1);
	cr_assert_leq(W.calls, 8000);
	t_rec c = {.calls = 0};
	cr_assert_eq(rio_cancel(W.loop, &c.op, &W.op, t_rec_cb), 0);
	T_RUN_UNTIL(W.loop, W.finals == 1 && c.calls == 1, 5000);
	cr_assert_eq(W.final_res, -ECANCELED);
	cr_assert_eq(c.res, 0);
	t_loop_done(W.loop);
}

/* A send, then a cancel before the loop ran: the send's callback comes
 * first, in the next run (not inside rio_cancel), then the final; exactly
 * one each. RIO_RUN_ONCE returns with a send that woke it delivered. */
Test(wakeup, a_send_before_the_cancel_is_delivered_first, .timeout = 20)
{
	memset(&W, 0, sizeof W);
	W.loop = t_loop();
	cr_assert_eq(rio_wakeup_start(W.loop, &W.op, w_cb), 0);
	static int one = 1;
	pthread_t th;
	cr_assert_eq(pthread_create(&th, NULL, sender, &one), 0);
	for (int k = 0; k < 50 && W.calls == 0; k++)
		cr_assert_eq(rio_loop_run(W.loop, RIO_RUN_ONCE), 1);
	pthread_join(th, NULL);
	cr_assert_eq(W.calls, 1);
	cr_assert_eq(rio_wakeup_send(W.loop, &W.op), 0);
	cr_assert_eq(rio_wakeup_send(W.loop, &W.op), 0);
	t_rec c = {.calls = 0};
	cr_assert_eq(rio_cancel(W.loop, &c.op, &W.op, t_rec_cb), 0);
	cr_assert_eq(W.calls, 1, "a callback ran inside rio_cancel");
	t_rec c2 = {.calls = 0}; /* a second cancel: it is on its way */
	cr_assert_eq(rio_cancel(W.loop, &c2.op, &W.op, t_rec_cb), 0);
	T_RUN_UNTIL(W.loop, W.finals == 1 && c.calls == 1 && c2.calls == 1,
		    5000);
	cr_assert_eq(c.res, 0);
	cr_assert_eq(c2.res, -EALREADY);
	cr_assert_eq(W.calls, 2, "the sends were not delivered first");
	cr_assert_eq(W.final_res, -ECANCELED);
	t_loop_done(W.loop);
}

/* A callback that sends to its own handle and then cancels it, as a
 * handler that wakes itself and then shuts down does. No callback runs
 * inside rio_cancel() (a callback never recurses): the send is delivered
 * in a later turn, then the final. The nested callback this once ran
 * called rio_cancel() again with the cancel op still being taken, which
 * took it twice and left the loop with an op that never ends (the
 * threads.epoll hang in CI). */
static struct {
	rio_op op, cancel;
	int depth, max_depth, in_cancel;
	int calls, finals, final_res, more_after_final;
	int cancel_calls, cancel_res;
} S;

static void s_cancel_cb(rio_loop *loop, rio_op *op, int res)
{
	(void)loop;
	(void)op;
	S.cancel_calls++;
	S.cancel_res = res;
}

static void s_cb(rio_loop *loop, rio_op *op, int res)
{
	if (++S.depth > S.max_depth)
		S.max_depth = S.depth;
	if (!(op->flags & RIO_OP_F_MORE)) {
		S.finals++;
		S.final_res = res;
	} else if (S.finals) {
		S.more_after_final++;
	} else if (++S.calls == 1) {
		cr_assert_eq(rio_wakeup_send(loop, op), 0);
		S.in_cancel = 1;
		int r = rio_cancel(loop, &S.cancel, op, s_cancel_cb);
		S.in_cancel = 0;
		cr_assert_eq(r, 0);
		cr_assert_eq(S.calls, 1, "a callback ran inside rio_cancel");
	} else if (S.in_cancel) {
		/* what threads.c's callback did on its next call */
		rio_cancel(loop, &S.cancel, op, s_cancel_cb);
	}
	S.depth--;
}

Test(wakeup, a_cancel_from_its_callback_runs_no_callback_inside, .timeout = 20)
{
	memset(&S, 0, sizeof S);
	rio_loop *loop = t_loop();
	cr_assert_eq(rio_wakeup_start(loop, &S.op, s_cb), 0);
	cr_assert_eq(rio_wakeup_send(loop, &S.op), 0);
	T_RUN_UNTIL(loop, S.finals == 1 && S.cancel_calls == 1, 5000);
	t_loop_sleep(loop, 20);
	cr_assert_eq(S.max_depth, 1, "a callback ran inside another");
	cr_assert_eq(S.calls, 2, "the send before the cancel: %d calls",
		     S.calls);
	cr_assert_eq(S.finals, 1);
	cr_assert_eq(S.final_res, -ECANCELED);
	cr_assert_eq(S.more_after_final, 0);
	cr_assert_eq(S.cancel_calls, 1);
	cr_assert_eq(S.cancel_res, 0);
	/* the cancel op was taken once: nothing is left in flight */
	t_loop_done(loop);
}

/* Two threads send without pause while the loop cancels the handle, and
 * go on after its final completion: a send that raced the cancel is
 * delivered before the final or dropped, never after it, and none leaves
 * the op on the loop's stack of woken handles (nor does one more send
 * after the final). Once the senders are joined, the same op starts again
 * as a new handle: no callback comes without a send of its own (a stale
 * push would bring one). */
/* A handle that only counts: its callbacks, its final (and the final's
 * result), and any callback after the final. */
typedef struct tally {
	rio_op op;
	int calls, finals, final_res, more_after_final;
} tally;

static void tally_cb(rio_loop *loop, rio_op *op, int res)
{
	tally *t = RIO_CONTAINER_OF(op, tally, op);
	(void)loop;
	if (!(op->flags & RIO_OP_F_MORE)) {
		t->finals++;
		t->final_res = res;
	} else if (t->finals) {
		t->more_after_final++;
	} else {
		t->calls++;
	}
}

static struct {
	rio_loop *loop;
	tally h;
	atomic_int stop;
} R;

static void *r_sender(void *arg)
{
	long *n = arg;
	uint64_t end = t_now_ns() + 10000 * T_MS;
	while (!atomic_load(&R.stop) && t_now_ns() < end) {
		cr_assert_eq(rio_wakeup_send(R.loop, &R.h.op), 0);
		if (++*n % 64 == 0)
			sched_yield(); /* valgrind runs one thread at a time */
	}
	return NULL;
}

Test(wakeup, a_send_racing_the_cancel_never_comes_after_it, .timeout = 30)
{
	memset(&R, 0, sizeof R);
	R.loop = t_loop();
	cr_assert_eq(rio_wakeup_start(R.loop, &R.h.op, tally_cb), 0);
	pthread_t th[2];
	long n[2] = {0, 0};
	for (int i = 0; i < 2; i++)
		cr_assert_eq(pthread_create(&th[i], NULL, r_sender, &n[i]), 0);
	T_RUN_UNTIL(R.loop, R.h.calls >= 20, 5000);
	t_rec c = {.calls = 0};
	cr_assert_eq(rio_cancel(R.loop, &c.op, &R.h.op, t_rec_cb), 0);
	T_RUN_UNTIL(R.loop, R.h.finals == 1 && c.calls == 1, 5000);
	t_loop_sleep(R.loop, 30); /* the senders go on */
	atomic_store(&R.stop, 1);
	for (int i = 0; i < 2; i++)
		pthread_join(th[i], NULL);
	/* one more, from this thread, after the final: dropped too; no run
	 * in between, so a push any send left would still be there */
	cr_assert_eq(rio_wakeup_send(R.loop, &R.h.op), 0);
	cr_assert_eq(c.res, 0);
	cr_assert_eq(R.h.final_res, -ECANCELED);
	cr_assert_eq(R.h.finals, 1);
	cr_assert_eq(R.h.more_after_final, 0, "%d callbacks after the final",
		     R.h.more_after_final);
	cr_log_info("%ld sends, %d callbacks before the final", n[0] + n[1],
		    R.h.calls);

	/* the same op, a new handle */
	R.h.calls = R.h.finals = R.h.final_res = 0;
	cr_assert_eq(rio_wakeup_start(R.loop, &R.h.op, tally_cb), 0);
	t_loop_sleep(R.loop, 30);
	cr_assert_eq(R.h.calls, 0, "%d callbacks with no send", R.h.calls);
	cr_assert_eq(rio_wakeup_send(R.loop, &R.h.op), 0);
	T_RUN_UNTIL(R.loop, R.h.calls == 1, 5000);
	t_rec c2 = {.calls = 0};
	cr_assert_eq(rio_cancel(R.loop, &c2.op, &R.h.op, t_rec_cb), 0);
	T_RUN_UNTIL(R.loop, R.h.finals == 1 && c2.calls == 1, 5000);
	cr_assert_eq(R.h.calls, 1);
	cr_assert_eq(R.h.more_after_final, 0);
	t_loop_done(R.loop);
}

/* Two handles, each with a send pending, are delivered in one drain,
 * oldest first. A's callback cancels B, which that drain has already
 * taken off the stack: B's send still comes, then B's final. And a
 * rio_loop_cancel_all() with a send pending on a handle: the send first,
 * then the final. */
static struct {
	rio_op a, cancel_b;
	tally b;
	int a_calls;
	int cancel_res, cancel_calls;
} P2;

static void p2_cancel_cb(rio_loop *loop, rio_op *op, int res)
{
	(void)loop, (void)op;
	P2.cancel_calls++;
	P2.cancel_res = res;
}

static void p2_a_cb(rio_loop *loop, rio_op *op, int res)
{
	(void)res;
	if (!(op->flags & RIO_OP_F_MORE))
		return;
	if (++P2.a_calls == 1) {
		cr_assert_eq(P2.b.calls, 0, "B came before A");
		cr_assert_eq(rio_cancel(loop, &P2.cancel_b, &P2.b.op, p2_cancel_cb),
			     0);
		cr_assert_eq(P2.b.calls, 0, "a callback inside rio_cancel");
	}
}

Test(wakeup, a_cancel_leaves_a_pending_send_first, .timeout = 20)
{
	memset(&P2, 0, sizeof P2);
	rio_loop *loop = t_loop();
	cr_assert_eq(rio_wakeup_start(loop, &P2.a, p2_a_cb), 0);
	cr_assert_eq(rio_wakeup_start(loop, &P2.b.op, tally_cb), 0);
	cr_assert_eq(rio_wakeup_send(loop, &P2.a), 0);
	cr_assert_eq(rio_wakeup_send(loop, &P2.b.op), 0);
	T_RUN_UNTIL(loop, P2.b.finals == 1 && P2.cancel_calls == 1, 5000);
	cr_assert_eq(P2.a_calls, 1);
	cr_assert_eq(P2.b.calls, 1, "B's pending send: %d calls", P2.b.calls);
	cr_assert_eq(P2.b.final_res, -ECANCELED);
	cr_assert_eq(P2.cancel_res, 0);

	/* cancel-all with a send pending on A */
	cr_assert_eq(rio_wakeup_send(loop, &P2.a), 0);
	cr_assert_eq(rio_loop_cancel_all(loop), 0);
	cr_assert_eq(P2.a_calls, 1, "a callback inside rio_loop_cancel_all");
	t_drain(loop, 5000);
	cr_assert_eq(P2.a_calls, 2, "A's pending send: %d calls", P2.a_calls);
	cr_assert_eq(rio_op_in_flight(&P2.a), 0);
	cr_assert_eq(P2.b.more_after_final, 0);
	t_loop_done(loop);
}

Test(wakeup, what_is_refused, .timeout = 20)
{
	rio_loop *loop = t_loop();
	rio_op op, other;
	rio_op_init(&op);
	rio_op_init(&other);
	cr_assert_eq(rio_wakeup_start(NULL, &op, t_nop_cb), -EINVAL);
	cr_assert_eq(rio_wakeup_start(loop, NULL, t_nop_cb), -EINVAL);
	cr_assert_eq(rio_wakeup_start(loop, &op, NULL), -EINVAL);
	rio_op_set_deadline(&op, T_MS);
	cr_assert_eq(rio_wakeup_start(loop, &op, t_nop_cb), -EINVAL);
	rio_op_set_deadline(&op, 0);
	/* not a wakeup */
	cr_assert_eq(rio_wakeup_send(loop, &other), -EINVAL);
	cr_assert_eq(rio_wakeup_send(loop, NULL), -EINVAL);
	cr_assert_eq(rio_wakeup_start(loop, &op, t_nop_cb), 0);
	cr_assert_eq(rio_wakeup_start(loop, &op, t_nop_cb), -EBUSY);
	/* a handle of another loop: its stack would deliver it there */
	rio_loop *other_loop = t_loop();
	cr_assert_eq(rio_wakeup_send(other_loop, &op), -EINVAL);
	t_loop_done(other_loop);
	cr_assert_eq(rio_loop_destroy(loop), -EBUSY, "a running wakeup");
	t_rec c = {.calls = 0};
	cr_assert_eq(rio_cancel(loop, &c.op, &op, t_rec_cb), 0);
	t_loop_done(loop);
}

/* The loop itself: destroy contract, run modes, counters, op state. */
#include "common.h"

#include <pthread.h>
#include <semaphore.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

struct op_rec {
	rio_op op;
	int calls;
	int res;
};

static void rec_cb(rio_loop *loop, rio_op *op, int res)
{
	struct op_rec *r = RIO_CONTAINER_OF(op, struct op_rec, op);

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

/*
 * A loop created on one thread and run on another: the first thread to run
 * it owns it. Ops queued on the creating thread before that (more than the
 * 4-entry ring holds, so some wait in user space) complete on the runner;
 * a run from any other thread is refused with -EPERM and changes nothing,
 * and the owner goes on using the loop.
 */
enum { XT_TIMERS = 12 };

struct xthread {
	rio_loop *loop;
	int fd;
	char in[8];
	struct op_rec timers[XT_TIMERS], rx, tx, later;
	int run1, run2, submit2;
	sem_t ran, again;
};

static void *xthread_main(void *arg)
{
	struct xthread *x = arg;

	/* RIO_RUN_DEFAULT returns once no op is in flight; every op here
	 * ends by itself (timers, data already sent), and the test's
	 * .timeout bounds the rest. No cr_assert off the test's thread. */
	x->run1 = rio_loop_run(x->loop, RIO_RUN_DEFAULT);
	sem_post(&x->ran);
	while (sem_wait(&x->again) != 0)
		;
	x->submit2 = rio_timeout(x->loop, &x->later.op, 1 * T_MS, rec_cb);
	x->run2 = rio_loop_run(x->loop, RIO_RUN_DEFAULT);
	return NULL;
}

static void wait_sem(sem_t *s, unsigned ms)
{
	struct timespec ts;
	int r;

	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += ms / 1000;
	ts.tv_nsec += (long)(ms % 1000) * 1000000L;
	if (ts.tv_nsec >= 1000000000L) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000L;
	}
	while ((r = sem_timedwait(s, &ts)) != 0 && errno == EINTR)
		;
	cr_assert_eq(r, 0, "the loop's thread did not report in %u ms", ms);
}

Test(loop, belongs_to_the_thread_that_first_runs_it, .timeout = 20)
{
	static struct xthread x; /* zeroed */
	rio_loop *loop = t_loop_opts(4, 0);
	int peer;
	pthread_t th;
	int n;

	x.loop = loop;
	t_pair(&x.fd, &peer);
	cr_assert_eq(sem_init(&x.ran, 0, 0), 0);
	cr_assert_eq(sem_init(&x.again, 0, 0), 0);
	for (int i = 0; i < XT_TIMERS; i++)
		cr_assert_eq(rio_timeout(loop, &x.timers[i].op,
					 (uint64_t)(i + 1) * T_MS, rec_cb),
			     0);
	cr_assert_eq(write(peer, "ping", 4), 4);
	cr_assert_eq(rio_recv(loop, &x.rx.op, x.fd, x.in, sizeof(x.in), 0,
			      rec_cb),
		     0);
	cr_assert_eq(rio_send(loop, &x.tx.op, x.fd, "pong", 4, 0, rec_cb), 0);

	cr_assert_eq(pthread_create(&th, NULL, xthread_main, &x), 0);
	wait_sem(&x.ran, 10000);
	cr_assert_eq(x.run1, 0, "first run on the new thread: %d", x.run1);
	for (int i = 0; i < XT_TIMERS; i++) {
		cr_assert_eq(x.timers[i].calls, 1, "timer %d", i);
		cr_assert_eq(x.timers[i].res, 0, "timer %d", i);
	}
	cr_assert_eq(x.rx.calls, 1);
	cr_assert_eq(x.rx.res, 4, "recv: %d", x.rx.res);
	cr_assert_eq(memcmp(x.in, "ping", 4), 0);
	cr_assert_eq(x.tx.res, 4, "send: %d", x.tx.res);

	/* The creating thread no longer may run it; nothing is touched. */
	cr_assert_eq(rio_loop_run(loop, RIO_RUN_NOWAIT), -EPERM);
	cr_assert_eq(rio_loop_run(loop, RIO_RUN_DEFAULT), -EPERM);

	sem_post(&x.again);
	cr_assert_eq(pthread_join(th, NULL), 0);
	cr_assert_eq(x.submit2, 0);
	cr_assert_eq(x.run2, 0, "second run on the owner: %d", x.run2);
	cr_assert_eq(x.later.calls, 1);
	cr_assert_eq(x.later.res, 0);
	char got[8];
	n = (int)read(peer, got, sizeof(got));
	cr_assert_eq(n, 4, "peer read %d", n);
	cr_assert_eq(memcmp(got, "pong", 4), 0);
	close(peer);
	close(x.fd);
	sem_destroy(&x.ran);
	sem_destroy(&x.again);
	/* Nothing is in flight: destroy needs no run, from any thread. */
	cr_assert_eq(rio_loop_destroy(loop), 0);
}

/* rio_cancel: results, -ENOENT, and exactly-once under cancel races. */
#include "common.h"

#include <pthread.h>
#include <unistd.h>

Test(cancel, pending_recv_is_cancelled, .timeout = 20)
{
	rio_loop *loop = t_loop();
	t_rec r = { .calls = 0 }, c = { .calls = 0 };
	char buf[64];
	int a, b;

	t_pair(&a, &b);
	cr_assert_eq(rio_recv(loop, &r.op, b, buf, sizeof(buf), 0, t_rec_cb), 0);
	t_loop_sleep(loop, 5);
	cr_assert_eq(r.calls, 0);
	cr_assert_eq(rio_cancel(loop, &c.op, &r.op, t_rec_cb), 0);
	cr_assert_eq(c.calls + r.calls, 0, "callback ran inside rio_cancel");
	T_RUN_UNTIL(loop, r.calls > 0 && c.calls > 0, 3000);
	cr_assert_eq(r.res, -ECANCELED, "target: %d (%s)", r.res,
		     rio_strerror(r.res));
	cr_assert_eq(c.res, 0, "cancel: %d (%s)", c.res, rio_strerror(c.res));
	/* The socket is untouched: data sent now is still there to read. */
	cr_assert_eq(write(a, "after", 5), 5);
	cr_assert_eq(rio_recv(loop, &r.op, b, buf, sizeof(buf), 0, t_rec_cb), 0);
	T_RUN_UNTIL(loop, r.calls > 1, 3000);
	cr_assert_eq(r.res, 5);
	t_loop_sleep(loop, 10);
	cr_assert_eq(r.calls, 2);
	cr_assert_eq(c.calls, 1);
	close(a);
	close(b);
	t_loop_done(loop);
}

Test(cancel, pending_timeout_is_cancelled, .timeout = 20)
{
	rio_loop *loop = t_loop();
	t_rec t = { .calls = 0 }, c = { .calls = 0 };
	uint64_t start = t_now_ns();

	cr_assert_eq(rio_timeout(loop, &t.op, 10000 * T_MS, t_rec_cb), 0);
	cr_assert_eq(rio_cancel(loop, &c.op, &t.op, t_rec_cb), 0);
	T_RUN_UNTIL(loop, t.calls > 0 && c.calls > 0, 3000);
	cr_assert_eq(t.res, -ECANCELED);
	cr_assert_eq(c.res, 0);
	cr_assert_lt(t_now_ns() - start, 3000 * T_MS);
	t_loop_done(loop);
}

Test(cancel, target_not_in_flight_is_enoent, .timeout = 20)
{
	rio_loop *loop = t_loop();
	t_rec never = { .calls = 0 }, done = { .calls = 0 };
	t_rec c1 = { .calls = 0 }, c2 = { .calls = 0 };

	/* Never submitted. */
	cr_assert_eq(rio_cancel(loop, &c1.op, &never.op, t_rec_cb), 0);
	T_RUN_UNTIL(loop, c1.calls > 0, 3000);
	cr_assert_eq(c1.res, -ENOENT, "got %d (%s)", c1.res,
		     rio_strerror(c1.res));
	cr_assert_eq(never.calls, 0, "a never-submitted op got a callback");

	/* Submitted and already completed. */
	cr_assert_eq(rio_timeout(loop, &done.op, 0, t_rec_cb), 0);
	T_RUN_UNTIL(loop, done.calls > 0, 3000);
	cr_assert_eq(rio_cancel(loop, &c2.op, &done.op, t_rec_cb), 0);
	T_RUN_UNTIL(loop, c2.calls > 0, 3000);
	cr_assert_eq(c2.res, -ENOENT, "got %d (%s)", c2.res,
		     rio_strerror(c2.res));
	cr_assert_eq(done.calls, 1, "a completed op completed again");
	cr_assert_eq(done.res, 0);
	t_loop_done(loop);
}

/*
 * A target whose work the kernel has already done, with its completion not
 * yet delivered: it is in flight for the caller, so the cancel reports
 * -EALREADY on every backend (found by test/fuzz seed 40: io_uring said
 * -ENOENT, the fallback -EALREADY). A send of a few bytes into an empty
 * socket buffer finishes at once on every backend: the fallback sends at
 * submit, io_uring inline when the SQEs go in, ahead of the cancel.
 */
Test(cancel, finished_but_undelivered_target_is_ealready, .timeout = 20)
{
	rio_loop *loop = t_loop();
	int a, b;
	t_pair(&a, &b);
	for (int i = 0; i < 20; i++) {
		t_rec s = { .calls = 0 }, c = { .calls = 0 };
		cr_assert_eq(rio_send(loop, &s.op, a, "done", 4, 0, t_rec_cb), 0);
		cr_assert_eq(rio_cancel(loop, &c.op, &s.op, t_rec_cb), 0);
		T_RUN_UNTIL(loop, s.calls > 0 && c.calls > 0, 3000);
		cr_assert_eq(s.res, 4, "send: %d (%s)", s.res, rio_strerror(s.res));
		cr_assert_eq(c.res, -EALREADY, "round %d: cancel of a finished "
			     "send in flight: %d (%s)", i, c.res,
			     rio_strerror(c.res));
		t_drain_fd(b);
	}
	close(a);
	close(b);
	t_loop_done(loop);
}

/* ---- the race: recv and its cancel submitted in the same turn ---- */

struct writer {
	int fd;
	unsigned delay_us;
	int ok;
};

static void *writer_main(void *arg)
{
	struct writer *w = arg;

	usleep(w->delay_us);
	w->ok = write(w->fd, "racedata", 8) == 8;
	return NULL;
}

Test(cancel, recv_and_cancel_in_one_turn_complete_exactly_once,
     .timeout = 60)
{
	enum { ITERS = 300 };
	rio_loop *loop = t_loop();
	t_rec r, c;
	char buf[64];
	int a, b;
	int got_data = 0, got_cancelled = 0, nodata_cancelled = 0;

	t_pair(&a, &b);
	for (int i = 0; i < ITERS; i++) {
		int mode = i % 3; /* 0: data queued, 1: none, 2: racing writer */
		struct writer w = { .fd = a, .delay_us = (unsigned)(i * 37) % 300 };
		pthread_t th;

		memset(&r, 0, sizeof(r));
		memset(&c, 0, sizeof(c));
		if (mode == 0) {
			cr_assert_eq(write(a, "queued!!", 8), 8);
			usleep(200);
		}
		if (mode == 2)
			cr_assert_eq(pthread_create(&th, NULL, writer_main, &w), 0);
		cr_assert_eq(rio_recv(loop, &r.op, b, buf, sizeof(buf), 0, t_rec_cb), 0);
		cr_assert_eq(rio_cancel(loop, &c.op, &r.op, t_rec_cb), 0);
		T_RUN_UNTIL(loop, r.calls > 0 && c.calls > 0, 3000);
		if (mode == 2) {
			pthread_join(th, NULL);
			cr_assert(w.ok, "writer thread failed");
		}
		t_drain(loop, 1000);
		cr_assert_eq(r.calls, 1, "iter %d: target ran %d times", i, r.calls);
		cr_assert_eq(c.calls, 1, "iter %d: cancel ran %d times", i, c.calls);
		cr_assert(r.res > 0 || r.res == -ECANCELED,
			  "iter %d: target res %d (%s)", i, r.res,
			  rio_strerror(r.res));
		cr_assert(c.res == 0 || c.res == -ENOENT || c.res == -EALREADY,
			  "iter %d: cancel res %d (%s)", i, c.res,
			  rio_strerror(c.res));
		/* The two results must tell the same story. */
		if (c.res == 0)
			cr_assert_eq(r.res, -ECANCELED,
				     "iter %d: cancel found it, target got %d", i,
				     r.res);
		if (r.res > 0)
			cr_assert_neq(c.res, 0, "iter %d: data and cancel 0", i);
		/* the target was in flight when the cancel was submitted */
		cr_assert_neq(c.res, -ENOENT, "iter %d: -ENOENT for a target "
			      "in flight (target %d)", i, r.res);
		if (mode == 1)
			nodata_cancelled += r.res == -ECANCELED;
		got_data += r.res > 0;
		got_cancelled += r.res == -ECANCELED;
		t_drain_fd(b); /* start the next round with an empty socket */
	}
	cr_log_info("cancel race: %d data, %d cancelled of %d", got_data,
		    got_cancelled, ITERS);
	/* With no data ever sent the target can only be cancelled. */
	cr_assert_eq(nodata_cancelled, ITERS / 3);
	/* io_uring issues the recv before the cancel in one submit: queued
	 * data completes it inline, so both outcomes must show up. */
	if (t_backend(loop) == RIO_BACKEND_URING)
		cr_assert_gt(got_data, 0, "queued data never beat the cancel");
	close(a);
	close(b);
	t_loop_done(loop);
}

Test(cancel, multishot_accept_cancel_ends_the_stream, .timeout = 20)
{
	rio_loop *loop = t_loop();
	t_rec acc = { .calls = 0 }, c = { .calls = 0 }, c2 = { .calls = 0 };
	int lfd = t_listen(AF_INET, 8, NULL);

	cr_assert_eq(rio_accept(loop, &acc.op, lfd, NULL, NULL, RIO_MULTISHOT,
				t_rec_cb),
		     0);
	t_loop_sleep(loop, 5);
	cr_assert_eq(rio_cancel(loop, &c.op, &acc.op, t_rec_cb), 0);
	T_RUN_UNTIL(loop, acc.calls > 0 && c.calls > 0, 3000);
	cr_assert_eq(acc.calls, 1);
	cr_assert_eq(acc.res, -ECANCELED);
	cr_assert_eq(acc.flags & RIO_OP_F_MORE, 0u, "final completion has MORE");
	cr_assert_eq(c.res, 0);
	/* Cancelling it again finds nothing. */
	cr_assert_eq(rio_cancel(loop, &c2.op, &acc.op, t_rec_cb), 0);
	T_RUN_UNTIL(loop, c2.calls > 0, 3000);
	cr_assert_eq(c2.res, -ENOENT);
	cr_assert_eq(acc.calls, 1);
	close(lfd);
	t_loop_done(loop);
}

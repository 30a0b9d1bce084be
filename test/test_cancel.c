/* rio_cancel: results, -ENOENT, and exactly-once under cancel races. */
#include "common.h"

#include <fcntl.h>
#include <sys/socket.h>
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

/*
 * The peer has shut its writing side (its FIN is in) and reads nothing: a
 * send that finds no room waits. io_uring's own wait for room fires at
 * once on such a socket (it always watches POLLRDHUP), and the kernel
 * ends up handing the send to an io-wq worker that blocks in it, out of
 * reach of cancel, close and deadlines; ringio waits on a poll of its own
 * (uring.c). Each of those ends the send promptly, and a reader lets it
 * finish, on every backend. Found by the relay fuzzer (seed 1373).
 */
enum how { BY_CANCEL, BY_CLOSE, BY_DEADLINE, BY_READER };
enum send_kind { K_SEND, K_SENDMSG, K_SEND_WAITALL, K_SPLICE_OUT };

static void send_to_a_peer_past_its_fin(enum send_kind kind, enum how how)
{
	rio_loop *loop = t_loop();
	static char big[256 << 10];
	t_rec s = { .calls = 0 }, c = { .calls = 0 };
	struct iovec iov = { big, sizeof(big) };
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1 };
	int a, b, p[2] = { -1, -1 };

	t_pair(&a, &b);
	cr_assert_eq(shutdown(b, SHUT_WR), 0);
	t_fill_sndbuf(a, b);
	if (how == BY_DEADLINE)
		rio_op_set_deadline(&s.op, 100 * T_MS);
	int r;
	switch (kind) {
	case K_SEND:
		r = rio_send(loop, &s.op, a, big, sizeof(big), 0, t_rec_cb);
		break;
	case K_SENDMSG:
		r = rio_sendmsg(loop, &s.op, a, &msg, 0, t_rec_cb);
		break;
	case K_SEND_WAITALL:
		r = rio_send(loop, &s.op, a, big, sizeof(big), MSG_WAITALL,
			     t_rec_cb);
		break;
	default:
		cr_assert_eq(pipe2(p, O_NONBLOCK | O_CLOEXEC), 0);
		cr_assert_eq(write(p[1], big, 4096), 4096);
		r = rio_splice_out(loop, &s.op, p[0], a, 4096, t_rec_cb);
		break;
	}
	cr_assert_eq(r, 0, "submit: %s", rio_strerror(r));
	t_loop_sleep(loop, 50);
	cr_assert_eq(s.calls, 0, "a send into a full socket completed: %d",
		     s.res);
	int cut = -ECANCELED;
	switch (how) {
	case BY_CANCEL:
		cr_assert_eq(rio_cancel(loop, &c.op, &s.op, t_rec_cb), 0);
		T_RUN_UNTIL(loop, s.calls && c.calls, 2000);
		cr_assert_eq(c.res, 0, "cancel: %s", rio_strerror(c.res));
		break;
	case BY_CLOSE:
		cr_assert_eq(rio_close(loop, &c.op, a, t_rec_cb), 0);
		a = -1;
		T_RUN_UNTIL(loop, s.calls && c.calls, 2000);
		cr_assert_eq(c.res, 0, "close: %s", rio_strerror(c.res));
		break;
	case BY_DEADLINE:
		T_RUN_UNTIL(loop, s.calls, 2000);
		cut = -ETIMEDOUT;
		break;
	case BY_READER: {
		int roomy = 1 << 20; /* no zero-window probes on the way */
		setsockopt(b, SOL_SOCKET, SO_RCVBUF, &roomy, sizeof(roomy));
		T_RUN_UNTIL(loop, (t_drain_fd(b), s.calls), 5000);
		break;
	}
	}
	cr_assert_eq(s.calls, 1);
	if (how == BY_READER)
		cr_assert(kind == K_SEND_WAITALL ? s.res == (int)sizeof(big)
						 : s.res > 0,
			  "with a reader: %s", rio_strerror(s.res));
	else /* a MSG_WAITALL send cut short says what it sent, if any */
		cr_assert(s.res == cut ||
			  (kind == K_SEND_WAITALL && s.res > 0 &&
			   s.res < (int)sizeof(big)),
			  "ended with %s", rio_strerror(s.res));
	int fds[] = { a, b, p[0], p[1] };
	for (int i = 0; i < 4; i++)
		if (fds[i] >= 0)
			close(fds[i]);
	t_loop_done(loop);
}

Test(cancel, send_to_a_peer_past_its_fin_is_cancelled, .timeout = 20)
{
	send_to_a_peer_past_its_fin(K_SEND, BY_CANCEL);
}

Test(cancel, sendmsg_to_a_peer_past_its_fin_is_cancelled, .timeout = 20)
{
	send_to_a_peer_past_its_fin(K_SENDMSG, BY_CANCEL);
}

Test(cancel, waitall_send_to_a_peer_past_its_fin_is_cancelled, .timeout = 20)
{
	send_to_a_peer_past_its_fin(K_SEND_WAITALL, BY_CANCEL);
}

Test(cancel, splice_out_to_a_peer_past_its_fin_is_cancelled, .timeout = 20)
{
	send_to_a_peer_past_its_fin(K_SPLICE_OUT, BY_CANCEL);
}

Test(cancel, send_to_a_peer_past_its_fin_ends_with_its_close, .timeout = 20)
{
	send_to_a_peer_past_its_fin(K_SEND, BY_CLOSE);
}

Test(cancel, send_to_a_peer_past_its_fin_meets_its_deadline, .timeout = 20)
{
	send_to_a_peer_past_its_fin(K_SEND, BY_DEADLINE);
}

Test(cancel, waitall_send_to_a_peer_past_its_fin_meets_its_deadline,
     .timeout = 20)
{
	send_to_a_peer_past_its_fin(K_SEND_WAITALL, BY_DEADLINE);
}

Test(cancel, send_to_a_peer_past_its_fin_goes_on_when_it_reads, .timeout = 20)
{
	send_to_a_peer_past_its_fin(K_SEND, BY_READER);
}

Test(cancel, waitall_send_to_a_peer_past_its_fin_goes_on_when_it_reads,
     .timeout = 20)
{
	send_to_a_peer_past_its_fin(K_SEND_WAITALL, BY_READER);
}

Test(cancel, splice_out_to_a_peer_past_its_fin_goes_on_when_it_reads,
     .timeout = 20)
{
	send_to_a_peer_past_its_fin(K_SPLICE_OUT, BY_READER);
}

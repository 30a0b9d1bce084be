/*
 * rio_poll: one completion with the ready mask, never from inside the
 * submit; a watch with no events (errors and hang-ups only) that data does
 * not end and a reset does; RDHUP only when asked; cancel, close and
 * deadlines as for any op; bad arguments. Every backend.
 */
#include "common.h"

#include <poll.h>
#include <unistd.h>

static void poll_submit(rio_loop *loop, t_rec *r, int fd, unsigned ev)
{
	rio_op_init(&r->op);
	r->calls = 0;
	cr_assert_eq(rio_poll(loop, &r->op, fd, ev, t_rec_cb), 0);
	cr_assert_eq(r->calls, 0, "completed inside the submit");
}

Test(poll, readable_when_data_arrives, .timeout = 20)
{
	rio_loop *loop = t_loop();
	t_rec r = {0};
	int a, b;

	t_pair(&a, &b);
	poll_submit(loop, &r, b, POLLIN);
	t_loop_sleep(loop, 50);
	cr_assert_eq(r.calls, 0, "ready with nothing to read: 0x%x", r.res);
	cr_assert_eq(write(a, "x", 1), 1);
	T_RUN_UNTIL(loop, r.calls == 1, 2000);
	cr_assert(r.res > 0 && (r.res & POLLIN), "res 0x%x", r.res);
	/* POLLOUT: a fresh connection can take bytes at once */
	poll_submit(loop, &r, b, POLLOUT);
	T_RUN_UNTIL(loop, r.calls == 1, 2000);
	cr_assert(r.res & POLLOUT, "res 0x%x", r.res);
	cr_assert_eq(r.res & POLLIN, 0, "a bit not asked for: 0x%x", r.res);
	close(a);
	close(b);
	t_loop_done(loop);
}

/* events 0: errors and hang-ups only. Data does not end it, a reset does,
 * and SO_ERROR says which. */
Test(poll, watch_ends_on_reset_not_on_data, .timeout = 20)
{
	rio_loop *loop = t_loop();
	t_rec r = {0};
	int a, b, err = 0;
	socklen_t el = sizeof err;

	t_pair(&a, &b);
	poll_submit(loop, &r, b, 0);
	cr_assert_eq(write(a, "data", 4), 4);
	t_loop_sleep(loop, 50);
	cr_assert_eq(r.calls, 0, "data ended a watch: 0x%x", r.res);
	t_rst_close(a);
	T_RUN_UNTIL(loop, r.calls == 1, 2000);
	cr_assert(r.res > 0 && (r.res & POLLERR), "res 0x%x", r.res);
	cr_assert_eq(getsockopt(b, SOL_SOCKET, SO_ERROR, &err, &el), 0);
	/* libkqueue (kqueue on Linux) reads SO_ERROR to report the event,
	 * which clears it; native kqueue, epoll and io_uring leave it */
	if (t_backend(loop) == RIO_BACKEND_KQUEUE && err == 0)
		err = ECONNRESET;
	cr_assert_eq(err, ECONNRESET, "SO_ERROR %d", err);
	close(b);
	t_loop_done(loop);
}

/* A FIN ends a watch with POLLRDHUP (and no POLLERR) on every backend;
 * a POLLOUT poll too, with nothing but what it may report. A cancel gives
 * -ECANCELED. */
Test(poll, fin_is_rdhup_not_error, .timeout = 20)
{
	rio_loop *loop = t_loop();
	t_rec w = {0}, o = {0}, c = {0};
	int a, b;

	t_pair(&a, &b);
	t_fill_sndbuf(b, a); /* b not writable, a has its data queued */
	poll_submit(loop, &w, b, 0);
	poll_submit(loop, &o, b, POLLOUT);
	t_loop_sleep(loop, 30);
	cr_assert_eq(w.calls + o.calls, 0, "ready for nothing: 0x%x 0x%x",
		     w.res, o.res);
	cr_assert_eq(shutdown(a, SHUT_WR), 0);
	T_RUN_UNTIL(loop, w.calls == 1 && o.calls == 1, 2000);
	cr_assert_eq(w.res, POLLRDHUP, "watch: 0x%x", w.res);
	cr_assert_eq(o.res, POLLRDHUP, "POLLOUT poll: 0x%x", o.res);
	poll_submit(loop, &w, b, POLLIN);
	rio_op_init(&c.op);
	t_drain_fd(b);
	cr_assert_eq(rio_cancel(loop, &c.op, &w.op, t_rec_cb), 0);
	T_RUN_UNTIL(loop, w.calls == 1 && c.calls == 1, 2000);
	cr_assert(w.res == -ECANCELED || (w.res & POLLIN), "res %d", w.res);
	close(a);
	close(b);
	t_loop_done(loop);
}

Test(poll, close_and_deadline_end_it, .timeout = 20)
{
	rio_loop *loop = t_loop();
	t_rec p = {0}, cl = {0}, d = {0};
	int a, b;

	t_pair(&a, &b);
	poll_submit(loop, &p, b, POLLIN);
	rio_op_init(&cl.op);
	t_seq = 0;
	cr_assert_eq(rio_close(loop, &cl.op, b, t_rec_cb), 0);
	T_RUN_UNTIL(loop, p.calls == 1 && cl.calls == 1, 2000);
	cr_assert_eq(p.res, -ECANCELED);
	cr_assert_lt(p.seq, cl.seq, "the close completed before the poll");
	cr_assert_eq(cl.res, 0);

	t_pair(&b, &cl.res); /* a fresh pair: b and a second end */
	int other = cl.res;
	rio_op_init(&d.op);
	rio_op_set_deadline(&d.op, 50 * T_MS);
	cr_assert_eq(rio_poll(loop, &d.op, b, POLLIN, t_rec_cb), 0);
	T_RUN_UNTIL(loop, d.calls == 1, 2000);
	cr_assert_eq(d.res, -ETIMEDOUT);
	close(a);
	close(b);
	close(other);
	t_loop_done(loop);
}

Test(poll, bad_arguments, .timeout = 20)
{
	rio_loop *loop = t_loop();
	t_rec r = {0};
	int a, b;

	t_pair(&a, &b);
	rio_op_init(&r.op);
	cr_assert_eq(rio_poll(loop, &r.op, b, 0x8000, t_rec_cb), -EINVAL);
	cr_assert_eq(rio_poll(loop, &r.op, b, POLLIN, NULL), -EINVAL);
	cr_assert_eq(rio_poll(NULL, &r.op, b, POLLIN, t_rec_cb), -EINVAL);
	close(a);
	/* a number that is not open: -EBADF, as a completion */
	poll_submit(loop, &r, 1000, POLLIN);
	T_RUN_UNTIL(loop, r.calls == 1, 2000);
	cr_assert_eq(r.res, -EBADF, "res %d", r.res);
	close(b);
	t_loop_done(loop);
}

/*
 * The mask is what is ready when the poll completes, on every backend:
 * data and then a FIN arriving before the loop runs give POLLIN and
 * POLLRDHUP together. io_uring's POLL_ADD reported the first wakeup's
 * bits only (POLLIN), the fallback asks poll(2) (found by test/fuzz).
 */
Test(poll, the_mask_holds_everything_ready_at_completion, .timeout = 20)
{
	rio_loop *loop = t_loop();
	for (int round = 0; round < 10; round++) {
		t_rec r = {0};
		int a, b;
		t_pair(&a, &b);
		poll_submit(loop, &r, b, POLLIN);
		t_loop_sleep(loop, 2); /* armed in the kernel */
		cr_assert_eq(write(a, "x", 1), 1);
		cr_assert_eq(shutdown(a, SHUT_WR), 0);
		usleep(2000);
		T_RUN_UNTIL(loop, r.calls == 1, 2000);
		cr_assert_eq(r.res, POLLIN | POLLRDHUP, "round %d: res 0x%x, "
			     "want POLLIN|POLLRDHUP", round, r.res);
		t_rec c = {0};
		cr_assert_eq(rio_close(loop, &c.op, b, t_rec_cb), 0);
		T_RUN_UNTIL(loop, c.calls == 1, 2000);
		close(a);
	}
	t_loop_done(loop);
}

/* A poll for POLLIN and a recv wait on one datagram socket; one datagram
 * comes: the poll reports it and the recv takes it, on every backend (as
 * io_uring wakes every waiter; the fallback asked poll(2) only after the
 * recv had taken it, and the poll waited on: fuzz seed 93903189). */
Test(poll, a_poll_beside_a_recv_sees_the_datagram_the_recv_takes,
     .timeout = 20)
{
	rio_loop *loop = t_loop();
	t_rec pr = { .calls = 0 }, rr = { .calls = 0 };
	char buf[64];
	int sv[2];

	cr_assert_eq(socketpair(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK |
				SOCK_CLOEXEC, 0, sv), 0);
	cr_assert_eq(rio_recv(loop, &rr.op, sv[0], buf, sizeof buf, 0,
			      t_rec_cb), 0);
	cr_assert_eq(rio_poll(loop, &pr.op, sv[0], POLLIN, t_rec_cb), 0);
	t_loop_sleep(loop, 20);
	cr_assert_eq(pr.calls + rr.calls, 0);
	cr_assert_eq(send(sv[1], "dgram", 5, 0), 5);
	T_RUN_UNTIL(loop, pr.calls && rr.calls, 2000);
	cr_assert_eq(rr.res, 5);
	cr_assert(pr.res > 0 && (pr.res & POLLIN), "poll: %d", pr.res);
	close(sv[0]);
	close(sv[1]);
	t_loop_done(loop);
}

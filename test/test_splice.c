/* rio_splice_in / rio_splice_out: a zero-copy relay through a pipe. */
#include "common.h"

#include <fcntl.h>
#include <sys/ioctl.h>
#include <unistd.h>

#ifdef __linux__

/* An echo on one socket made of splices: sock -> pipe, pipe -> sock until
 * the pipe is empty, then the next splice in; end of stream is passed on
 * as shutdown(SHUT_WR). */
struct relay {
	rio_op op;
	int sock, pipe[2];
	size_t chunk;
	uint32_t in_pipe; /* bytes spliced in and not yet out */
	uint64_t moved, calls_in, calls_out;
	int done, err;
};

static void relay_cb(rio_loop *loop, rio_op *op, int res);

static void relay_in(rio_loop *loop, struct relay *r)
{
	cr_assert_eq(rio_splice_in(loop, &r->op, r->sock, r->pipe[1], r->chunk,
				   relay_cb),
		     0);
}

static void relay_cb(rio_loop *loop, rio_op *op, int res)
{
	struct relay *r = RIO_CONTAINER_OF(op, struct relay, op);

	if (res < 0) {
		r->err = res;
		r->done = 1;
		return;
	}
	if (r->in_pipe == 0) { /* a splice in finished */
		r->calls_in++;
		if (res == 0) {
			shutdown(r->sock, SHUT_WR);
			r->done = 1;
			return;
		}
		r->in_pipe = (uint32_t)res;
	} else {
		r->calls_out++;
		r->in_pipe -= (uint32_t)res;
		r->moved += (uint64_t)res;
	}
	if (r->in_pipe > 0)
		cr_assert_eq(rio_splice_out(loop, &r->op, r->pipe[0], r->sock,
					    r->in_pipe, relay_cb),
			     0);
	else
		relay_in(loop, r);
}

static void nb_pipe(int p[2])
{
	cr_assert_eq(pipe2(p, O_NONBLOCK | O_CLOEXEC), 0);
}

static struct io {
	rio_op op;
	int calls, res;
} io_a, io_b;

static void io_cb(rio_loop *loop, rio_op *op, int res)
{
	struct io *io = RIO_CONTAINER_OF(op, struct io, op);

	(void)loop;
	io->calls++;
	io->res = res;
}

Test(splice, relay_echoes_64_mib_unchanged, .timeout = 60)
{
	rio_loop *loop = t_loop();
	struct relay r = { .chunk = 64 * 1024 };
	t_stream s = { .total = 64ull << 20 };
	int a;

	t_pair(&a, &r.sock);
	nb_pipe(r.pipe);
	t_set_blocking(a);
	t_timeouts(a, 10);
	s.fd = a;
	relay_in(loop, &r);
	t_stream_run(loop, &s, 30000);
	T_RUN_UNTIL(loop, r.done, 5000);
	cr_assert_eq(r.err, 0, "relay failed: %s", rio_strerror(r.err));
	cr_assert_eq(r.moved, s.total, "moved %llu of %llu",
		     (unsigned long long)r.moved, (unsigned long long)s.total);
	/* Each splice in needed its splice out: the relay really ran. */
	cr_assert_geq(r.calls_out, r.calls_in - 1);
	cr_assert_gt(r.calls_in, 64, "only %llu splices for 64 MiB",
		     (unsigned long long)r.calls_in);
	close(a);
	close(r.sock);
	close(r.pipe[0]);
	close(r.pipe[1]);
	t_loop_done(loop);
}

Test(splice, splice_in_waits_for_data_and_never_completes_in_submit,
     .timeout = 20)
{
	rio_loop *loop = t_loop();
	int a, b, p[2], c, d;
	char buf[16];

	t_pair(&a, &b);
	t_pair(&c, &d);
	nb_pipe(p);
	io_a.calls = io_b.calls = 0;
	cr_assert_eq(rio_splice_in(loop, &io_a.op, b, p[1], 4096, io_cb), 0);
	t_loop_sleep(loop, 50);
	cr_assert_eq(io_a.calls, 0, "splice in completed with no data: %d",
		     io_a.res);
	cr_assert_eq(write(a, "hello", 5), 5);
	T_RUN_UNTIL(loop, io_a.calls == 1, 3000);
	cr_assert_eq(io_a.res, 5, "splice in res %d (%s)", io_a.res,
		     rio_strerror(io_a.res));
	/* The pipe holds data now, so a splice out can finish at once; its
	 * callback still waits for the loop. */
	cr_assert_eq(rio_splice_out(loop, &io_b.op, p[0], c, 5, io_cb), 0);
	cr_assert_eq(io_b.calls, 0, "callback ran inside rio_splice_out");
	T_RUN_UNTIL(loop, io_b.calls == 1, 3000);
	cr_assert_eq(io_b.res, 5);
	t_timeouts(d, 3);
	t_set_blocking(d);
	cr_assert_eq(read(d, buf, sizeof buf), 5);
	cr_assert_eq(memcmp(buf, "hello", 5), 0);
	close(a);
	close(b);
	close(c);
	close(d);
	close(p[0]);
	close(p[1]);
	t_loop_done(loop);
}

Test(splice, end_of_stream_and_reset_peer, .timeout = 20)
{
	rio_loop *loop = t_loop();
	int a, b, p[2];

	t_pair(&a, &b);
	nb_pipe(p);
	io_a.calls = 0;
	cr_assert_eq(rio_splice_in(loop, &io_a.op, b, p[1], 4096, io_cb), 0);
	shutdown(a, SHUT_WR);
	T_RUN_UNTIL(loop, io_a.calls == 1, 3000);
	cr_assert_eq(io_a.res, 0, "splice in at end of stream: %d",
		     io_a.res);

	/* Out toward a peer that has reset: -EPIPE or -ECONNRESET, and no
	 * SIGPIPE (the test would die of it). */
	cr_assert_eq(write(p[1], "x", 1), 1);
	t_rst_close(a);
	usleep(20000);
	io_b.calls = 0;
	for (int i = 0; i < 10; i++) { /* the first may still be taken */
		cr_assert_eq(write(p[1], "x", 1), 1);
		cr_assert_eq(rio_splice_out(loop, &io_b.op, p[0], b, 2, io_cb), 0);
		T_RUN_UNTIL(loop, io_b.calls == i + 1, 3000);
		if (io_b.res < 0)
			break;
	}
	cr_assert(io_b.res == -EPIPE || io_b.res == -ECONNRESET,
		  "splice out to a reset peer: %d (%s)", io_b.res,
		  rio_strerror(io_b.res));
	close(b);
	close(p[0]);
	close(p[1]);
	t_loop_done(loop);
}

Test(splice, a_pipe_that_is_not_ready_is_an_error_not_a_hang,
     .timeout = 20)
{
	rio_loop *loop = t_loop();
	int a, b, p[2], q[2];
	char fill[4096];
	int n = 0;

	t_pair(&a, &b);
	nb_pipe(p);
	nb_pipe(q);
	/* Out from an empty pipe while the socket has room. */
	io_a.calls = 0;
	cr_assert_eq(rio_splice_out(loop, &io_a.op, p[0], b, 100, io_cb), 0);
	T_RUN_UNTIL(loop, io_a.calls == 1, 3000);
	cr_assert_eq(io_a.res, -ENODATA, "got %d (%s)", io_a.res,
		     rio_strerror(io_a.res));
	/* In to a full pipe while the socket has data. */
	memset(fill, 'f', sizeof fill);
	while (write(q[1], fill, sizeof fill) > 0)
		;
	cr_assert_eq(write(a, "data", 4), 4);
	io_a.calls = 0;
	cr_assert_eq(rio_splice_in(loop, &io_a.op, b, q[1], 100, io_cb), 0);
	T_RUN_UNTIL(loop, io_a.calls == 1, 3000);
	cr_assert_eq(io_a.res, -ENOBUFS, "got %d (%s)", io_a.res,
		     rio_strerror(io_a.res));
	/* The data is still there for a proper splice. */
	cr_assert_eq(ioctl(b, FIONREAD, &n), 0);
	cr_assert_eq(n, 4);
	/* Bad arguments are refused at submit. */
	cr_assert_eq(rio_splice_in(loop, &io_a.op, b, -1, 100, io_cb), -EINVAL);
	cr_assert_eq(rio_splice_out(loop, &io_a.op, p[0], b, 0, io_cb), -EINVAL);
	close(a);
	close(b);
	for (int i = 0; i < 2; i++) {
		close(p[i]);
		close(q[i]);
	}
	t_loop_done(loop);
}

Test(splice, cancel_close_and_deadline_end_a_waiting_splice, .timeout = 20)
{
	rio_loop *loop = t_loop();
	struct io cancel = { .calls = 0 }, closer = { .calls = 0 };
	int a, b, p[2];

	t_pair(&a, &b);
	nb_pipe(p);
	io_a.calls = 0;
	cr_assert_eq(rio_splice_in(loop, &io_a.op, b, p[1], 100, io_cb), 0);
	t_loop_sleep(loop, 20);
	cr_assert_eq(rio_cancel(loop, &cancel.op, &io_a.op, io_cb), 0);
	T_RUN_UNTIL(loop, io_a.calls == 1 && cancel.calls == 1, 3000);
	cr_assert_eq(io_a.res, -ECANCELED);
	cr_assert_eq(cancel.res, 0);

	io_a.calls = 0;
	rio_op_set_deadline(&io_a.op, 30 * T_MS);
	uint64_t t0 = t_now_ns();
	cr_assert_eq(rio_splice_in(loop, &io_a.op, b, p[1], 100, io_cb), 0);
	T_RUN_UNTIL(loop, io_a.calls == 1, 3000);
	cr_assert_eq(io_a.res, -ETIMEDOUT, "got %d", io_a.res);
	cr_assert_geq(t_now_ns() - t0, 25 * T_MS);
	rio_op_set_deadline(&io_a.op, 0);

	io_a.calls = 0;
	cr_assert_eq(rio_splice_in(loop, &io_a.op, b, p[1], 100, io_cb), 0);
	t_loop_sleep(loop, 20);
	cr_assert_eq(rio_close(loop, &closer.op, b, io_cb), 0);
	T_RUN_UNTIL(loop, io_a.calls == 1 && closer.calls == 1, 3000);
	cr_assert_eq(io_a.res, -ECANCELED, "got %d", io_a.res);
	cr_assert_eq(closer.res, 0);
	close(a);
	close(p[0]);
	close(p[1]);
	t_loop_done(loop);
}

#else

static struct io {
	rio_op op;
	int calls, res;
} io_a;

static void io_cb(rio_loop *loop, rio_op *op, int res)
{
	(void)loop;
	(void)op;
	io_a.calls++;
	io_a.res = res;
}

/* splice(2) is Linux's: elsewhere the op completes with -EOPNOTSUPP. */
Test(splice, not_supported_here_completes_with_eopnotsupp, .timeout = 20)
{
	rio_loop *loop = t_loop();
	int a, b, p[2];

	t_pair(&a, &b);
	cr_assert_eq(pipe(p), 0);
	cr_assert_eq(write(a, "x", 1), 1);
	cr_assert_eq(rio_splice_in(loop, &io_a.op, b, p[1], 1, io_cb), 0);
	T_RUN_UNTIL(loop, io_a.calls == 1, 3000);
	cr_assert_eq(io_a.res, -EOPNOTSUPP);
	close(a);
	close(b);
	close(p[0]);
	close(p[1]);
	t_loop_done(loop);
}

#endif

/*
 * A result decided at submit (io_uring tries a splice at once; the other
 * backends refuse it at submit off Linux) is this turn's work: one
 * RIO_RUN_ONCE delivers it and returns, with nothing else in flight and
 * no watchdog armed. A turn that delivered it first and then waited in
 * the kernel for more would never return (the .timeout fails it).
 */
Test(splice, run_once_returns_after_a_result_decided_at_submit, .timeout = 10)
{
	rio_loop *loop = t_loop();
	int a, b, p[2];
	t_pair(&a, &b);
	cr_assert_eq(pipe2(p, O_NONBLOCK | O_CLOEXEC), 0);
	cr_assert_eq(write(p[1], "ready", 5), 5);
	for (int round = 0; round < 3; round++) {
		t_rec s = { .calls = 0 };
		cr_assert_eq(rio_splice_out(loop, &s.op, p[0], a, 5, t_rec_cb), 0);
		int r = rio_loop_run(loop, RIO_RUN_ONCE);
		cr_assert_geq(r, 0, "rio_loop_run: %s", rio_strerror(r));
		cr_assert_eq(s.calls, 1, "round %d: RUN_ONCE returned without "
			     "the result decided at submit", round);
		if (s.res == -EOPNOTSUPP)
			break;
		cr_assert_eq(s.res, 5, "splice_out: %d (%s)", s.res,
			     rio_strerror(s.res));
		t_drain_fd(b);
		cr_assert_eq(write(p[1], "ready", 5), 5);
	}
	close(p[0]);
	close(p[1]);
	close(a);
	close(b);
	t_loop_done(loop);
}

#ifdef __linux__ /* splice(2) */
/*
 * Results reach the caller in the order they were decided, across the
 * turn's kernel enter as well: a callback of the results a turn starts with
 * submits a splice in that is decided at submit (the socket holds "AAA"),
 * then the peer sends "BBB" and the callback submits a recv on the same
 * stream, which io_uring completes when the turn enters the kernel. The
 * splice's bytes came first, so its completion must come first (io_uring
 * delivered the recv first when its turn no longer ran the results queued
 * before the enter).
 */
static struct order {
	int a, b, p[2];
	rio_op splice, recv;
	char buf[16];
	int seq, splice_at, recv_at, splice_res, recv_res;
} ord;

static void ord_splice_cb(rio_loop *loop, rio_op *op, int res)
{
	(void)loop;
	(void)op;
	ord.splice_res = res;
	ord.splice_at = ++ord.seq;
}

static void ord_recv_cb(rio_loop *loop, rio_op *op, int res)
{
	(void)loop;
	(void)op;
	ord.recv_res = res;
	ord.recv_at = ++ord.seq;
}

/* A cancel of an idle op: -ENOENT, decided at submit, so this runs among
 * the results the next turn starts with. */
static void ord_start_cb(rio_loop *loop, rio_op *op, int res)
{
	(void)op;
	cr_assert_eq(res, -ENOENT);
	cr_assert_eq(rio_splice_in(loop, &ord.splice, ord.b, ord.p[1], 3,
				   ord_splice_cb), 0);
	cr_assert_eq(write(ord.a, "BBB", 3), 3);
	cr_assert_eq(rio_recv(loop, &ord.recv, ord.b, ord.buf, sizeof ord.buf, 0,
			      ord_recv_cb), 0);
}

Test(splice, a_result_decided_at_submit_comes_before_a_later_read, .timeout = 10)
{
	rio_loop *loop = t_loop();
	rio_op idle, cancel;
	rio_op_init(&idle);
	rio_op_init(&cancel);
	t_pair(&ord.a, &ord.b);
	cr_assert_eq(pipe2(ord.p, O_NONBLOCK | O_CLOEXEC), 0);
	cr_assert_eq(write(ord.a, "AAA", 3), 3);
	cr_assert_eq(rio_cancel(loop, &cancel, &idle, ord_start_cb), 0);
	T_RUN_UNTIL(loop, ord.splice_at && ord.recv_at, 3000);
	cr_assert_eq(ord.splice_res, 3, "splice_in: %d (%s)", ord.splice_res,
		     rio_strerror(ord.splice_res));
	cr_assert_eq(ord.recv_res, 3, "recv: %d (%s)", ord.recv_res,
		     rio_strerror(ord.recv_res));
	cr_assert_eq(memcmp(ord.buf, "BBB", 3), 0);
	cr_assert_lt(ord.splice_at, ord.recv_at,
		     "the recv of the later bytes was delivered before the "
		     "splice decided at submit");
	close(ord.a);
	close(ord.b);
	close(ord.p[0]);
	close(ord.p[1]);
	t_loop_done(loop);
}
#endif

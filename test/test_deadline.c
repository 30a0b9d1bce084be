/* rio_op_set_deadline: -ETIMEDOUT when it passes, nothing when data wins. */
#include "common.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <unistd.h>

struct io {
	rio_op op;
	int calls;
	int res;
	unsigned flags;
	uint64_t at_ns;
};

static void io_cb(rio_loop *loop, rio_op *op, int res)
{
	struct io *io = RIO_CONTAINER_OF(op, struct io, op);

	(void)loop;
	io->calls++;
	io->res = res;
	io->flags = op->flags;
	io->at_ns = t_now_ns();
}

Test(deadline, recv_nobody_answers_times_out, .timeout = 20)
{
	rio_loop *loop = t_loop();
	struct io r = { .calls = 0 };
	char buf[32];
	uint64_t start;
	int a, b;

	t_pair(&a, &b);
	rio_op_set_deadline(&r.op, 30 * T_MS);
	start = t_now_ns();
	cr_assert_eq(rio_recv(loop, &r.op, b, buf, sizeof(buf), 0, io_cb), 0);
	T_RUN_UNTIL(loop, r.calls > 0, 3000);
	cr_assert_eq(r.res, -ETIMEDOUT, "got %d (%s)", r.res,
		     rio_strerror(r.res));
	cr_assert_geq(r.at_ns - start, 29 * T_MS, "deadline fired early");
	cr_assert_lt(r.at_ns - start, 2000 * T_MS, "deadline fired late");
	/* The socket still works afterwards: nothing half-read. */
	cr_assert_eq(write(a, "late", 4), 4);
	rio_op_set_deadline(&r.op, 0);
	cr_assert_eq(rio_recv(loop, &r.op, b, buf, sizeof(buf), 0, io_cb), 0);
	T_RUN_UNTIL(loop, r.calls > 1, 3000);
	cr_assert_eq(r.res, 4);
	t_loop_sleep(loop, 40);
	cr_assert_eq(r.calls, 2, "stray completion after the deadline");
	close(a);
	close(b);
	t_loop_done(loop);
}

struct later_write {
	rio_op op;
	int fd;
	int ok;
};

static void later_write_cb(rio_loop *loop, rio_op *op, int res)
{
	struct later_write *w = RIO_CONTAINER_OF(op, struct later_write, op);

	(void)loop;
	w->ok = res == 0 && write(w->fd, "intime", 6) == 6;
}

Test(deadline, data_in_time_wins_and_the_deadline_never_fires,
     .timeout = 20)
{
	rio_loop *loop = t_loop();
	struct io r = { .calls = 0 };
	struct later_write w = { .ok = 0 };
	char buf[32];
	int a, b;

	t_pair(&a, &b);
	w.fd = a;
	rio_op_set_deadline(&r.op, 80 * T_MS);
	cr_assert_eq(rio_recv(loop, &r.op, b, buf, sizeof(buf), 0, io_cb), 0);
	cr_assert_eq(rio_timeout(loop, &w.op, 10 * T_MS, later_write_cb), 0);
	T_RUN_UNTIL(loop, r.calls > 0, 3000);
	cr_assert(w.ok);
	cr_assert_eq(r.res, 6, "got %d (%s)", r.res, rio_strerror(r.res));
	cr_assert_eq(memcmp(buf, "intime", 6), 0);
	/* Wait well past the deadline: no -ETIMEDOUT may follow. */
	t_loop_sleep(loop, 150);
	cr_assert_eq(r.calls, 1, "the op completed %d times", r.calls);
	cr_assert_eq(r.res, 6);
	close(a);
	close(b);
	t_loop_done(loop);
}

Test(deadline, stays_on_the_op_until_changed, .timeout = 20)
{
	rio_loop *loop = t_loop();
	struct io r = { .calls = 0 };
	char buf[8];
	int a, b;

	t_pair(&a, &b);
	rio_op_set_deadline(&r.op, 5 * T_MS);
	for (int i = 0; i < 3; i++) {
		cr_assert_eq(rio_recv(loop, &r.op, b, buf, sizeof(buf), 0, io_cb),
			     0);
		T_RUN_UNTIL(loop, r.calls > i, 3000);
		cr_assert_eq(r.res, -ETIMEDOUT, "submission %d: %d", i, r.res);
	}
	/* Removed: the recv now waits, and a later cancel ends it. */
	rio_op_set_deadline(&r.op, 0);
	cr_assert_eq(rio_recv(loop, &r.op, b, buf, sizeof(buf), 0, io_cb), 0);
	t_loop_sleep(loop, 30);
	cr_assert_eq(r.calls, 3, "a recv without deadline completed: %d",
		     r.res);
	{
		struct io c = { .calls = 0 };

		cr_assert_eq(rio_cancel(loop, &c.op, &r.op, io_cb), 0);
		T_RUN_UNTIL(loop, r.calls > 3 && c.calls > 0, 3000);
		cr_assert_eq(r.res, -ECANCELED);
	}
	close(a);
	close(b);
	t_loop_done(loop);
}

Test(deadline, connect_that_never_completes_times_out, .timeout = 20)
{
	rio_loop *loop = t_loop();
	struct io c = { .calls = 0 };
	struct sockaddr_storage ss;
	socklen_t len;
	uint16_t port;
	int filler, fd;
	int lfd = t_full_listener(&port, &filler);
	uint64_t start;

	len = t_loopback(AF_INET, port, &ss);
	fd = rio_socket_tcp(AF_INET);
	cr_assert_geq(fd, 0);
	rio_op_set_deadline(&c.op, 50 * T_MS);
	start = t_now_ns();
	cr_assert_eq(rio_connect(loop, &c.op, fd, (struct sockaddr *)&ss, len,
				 io_cb),
		     0);
	T_RUN_UNTIL(loop, c.calls > 0, 3000);
	cr_assert_eq(c.res, -ETIMEDOUT, "got %d (%s)", c.res,
		     rio_strerror(c.res));
	cr_assert_geq(c.at_ns - start, 49 * T_MS);
	close(fd);
	close(filler);
	close(lfd);
	t_loop_done(loop);
}

Test(deadline, huge_deadline_never_fires, .timeout = 20)
{
	rio_loop *loop = t_loop();
	struct io r = { .calls = 0 };
	char buf[8];
	int a, b;

	t_pair(&a, &b);
	rio_op_set_deadline(&r.op, UINT64_MAX);
	cr_assert_eq(rio_recv(loop, &r.op, b, buf, sizeof(buf), 0, io_cb), 0);
	t_loop_sleep(loop, 30);
	cr_assert_eq(r.calls, 0, "a deadline centuries away fired: %d (%s)",
		     r.res, rio_strerror(r.res));
	cr_assert_eq(write(a, "ok", 2), 2);
	T_RUN_UNTIL(loop, r.calls > 0, 3000);
	cr_assert_eq(r.res, 2);
	close(a);
	close(b);
	t_loop_done(loop);
}

/* "Multishot ops and timeouts take no deadline": every other op does,
 * close and cancel included. A generous deadline must not change them. */
Test(deadline, close_and_cancel_take_a_deadline, .timeout = 20)
{
	rio_loop *loop = t_loop();
	struct io r = { .calls = 0 }, c = { .calls = 0 }, cl = { .calls = 0 };
	char buf[8];
	int a, b, rc;

	t_pair(&a, &b);
	cr_assert_eq(rio_recv(loop, &r.op, b, buf, sizeof(buf), 0, io_cb), 0);
	rio_op_set_deadline(&c.op, 1000 * T_MS);
	rc = rio_cancel(loop, &c.op, &r.op, io_cb);
	cr_assert_eq(rc, 0, "rio_cancel with a deadline refused: %d (%s)", rc,
		     rio_strerror(rc));
	T_RUN_UNTIL(loop, r.calls > 0 && c.calls > 0, 3000);
	cr_assert_eq(r.res, -ECANCELED);
	cr_assert_eq(c.res, 0);
	rio_op_set_deadline(&cl.op, 1000 * T_MS);
	rc = rio_close(loop, &cl.op, a, io_cb);
	cr_assert_eq(rc, 0, "rio_close with a deadline refused: %d (%s)", rc,
		     rio_strerror(rc));
	T_RUN_UNTIL(loop, cl.calls > 0, 3000);
	cr_assert_eq(cl.res, 0);
	close(b);
	t_loop_done(loop);
}

/*
 * Two recvs on one stream, the later one with a deadline, data arriving
 * between them: the later one reads first (the bytes are there when it is
 * issued), the earlier one next. The completions must come in that order,
 * or the caller reassembles the stream wrong. On io_uring the deadline's
 * linked timeout posts its own CQE after the other recv's; an op that
 * waited for it was delivered late (found by test/fuzz seed 5).
 */
struct chunk {
	rio_op op;
	char buf[8];
	int calls, res, order;
};

static int chunk_seq;

static void chunk_cb(rio_loop *loop, rio_op *op, int res)
{
	struct chunk *c = RIO_CONTAINER_OF(op, struct chunk, op);
	(void)loop;
	c->calls++;
	c->res = res;
	c->order = chunk_seq++;
}

Test(deadline, a_deadline_keeps_completions_in_stream_order, .timeout = 30)
{
	rio_loop *loop = t_loop();
	int a, b;
	t_pair(&a, &b);
	for (int round = 0; round < 20; round++) {
		struct chunk first = { .calls = 0 }, second = { .calls = 0 };
		char data[16];
		for (int i = 0; i < 16; i++)
			data[i] = (char)(round * 16 + i);
		chunk_seq = 0;
		cr_assert_eq(rio_recv(loop, &first.op, b, first.buf, 8, 0,
				      chunk_cb), 0);
		t_loop_sleep(loop, 2); /* the first recv waits in the kernel */
		cr_assert_eq(write(a, data, 16), 16);
		rio_op_set_deadline(&second.op, 10000 * T_MS);
		cr_assert_eq(rio_recv(loop, &second.op, b, second.buf, 8, 0,
				      chunk_cb), 0);
		T_RUN_UNTIL(loop, first.calls && second.calls, 3000);
		cr_assert_eq(first.res, 8);
		cr_assert_eq(second.res, 8);
		struct chunk *early = first.order == 0 ? &first : &second;
		cr_assert_eq(memcmp(early->buf, data, 8), 0,
			     "round %d: the first completion (%s recv) holds "
			     "bytes 8..15: delivered out of the kernel's order",
			     round, early == &first ? "earlier" : "later");
	}
	close(a);
	close(b);
	t_loop_done(loop);
}

/* ---- ringio's deadline or the kernel's ETIMEDOUT; absolute deadlines ---- */

Test(deadline, its_own_deadline_says_so_the_kernels_does_not, .timeout = 30)
{
	rio_loop *loop = t_loop();
	struct io r = {.calls = 0}, c = {.calls = 0};
	char buf[8];
	int a, b;
	t_pair(&a, &b);
	rio_op_set_deadline(&r.op, 30 * T_MS);
	cr_assert_eq(rio_recv(loop, &r.op, b, buf, sizeof buf, 0, io_cb), 0);
	T_RUN_UNTIL(loop, r.calls == 1, 3000);
	cr_assert_eq(r.res, -ETIMEDOUT);
	cr_assert_eq(r.flags, RIO_OP_F_DEADLINE, "flags %x", r.flags);
	/* the kernel's own: a SYN nobody answers, one retry (about 3 s) */
	uint16_t port;
	int filler, lfd = t_full_listener(&port, &filler);
	int s = rio_socket_tcp(AF_INET);
	int one = 1;
	cr_assert_eq(setsockopt(s, IPPROTO_TCP, TCP_SYNCNT, &one, sizeof one),
		     0);
	struct sockaddr_storage ss;
	socklen_t sl = t_loopback(AF_INET, port, &ss);
	cr_assert_eq(rio_connect(loop, &c.op, s, (struct sockaddr *)&ss, sl,
				 io_cb), 0);
	T_RUN_UNTIL(loop, c.calls == 1, 15000);
	cr_assert_eq(c.res, -ETIMEDOUT, "%s", rio_strerror(c.res));
	cr_assert_eq(c.flags & RIO_OP_F_DEADLINE, 0,
		     "the kernel's ETIMEDOUT read as ringio's deadline");
	close(s);
	close(filler);
	close(lfd);
	close(a);
	close(b);
	t_loop_done(loop);
}

static struct {
	rio_loop *loop;
	struct io recv;
	int fd;
	uint64_t when;
	char buf[8];
} req;

/* the request's second step, 60 ms in: the same absolute deadline */
static void step_cb(rio_loop *loop, rio_op *op, int res)
{
	(void)op;
	cr_assert_eq(res, 0);
	rio_op_set_deadline_at(&req.recv.op, req.when);
	cr_assert_eq(rio_recv(loop, &req.recv.op, req.fd, req.buf,
			      sizeof req.buf, 0, io_cb), 0);
}

Test(deadline, an_absolute_deadline_covers_the_whole_request, .timeout = 20)
{
	rio_loop *loop = t_loop();
	int a, b;
	t_pair(&a, &b);
	memset(&req, 0, sizeof req);
	req.fd = b;
	uint64_t start = rio_now_ns();
	cr_assert_lt(start > t_now_ns() ? start - t_now_ns()
					: t_now_ns() - start, 5 * T_MS,
		     "rio_now_ns is not CLOCK_MONOTONIC");
	req.when = start + 150 * T_MS;
	struct io t = {.calls = 0};
	cr_assert_eq(rio_timeout(loop, &t.op, 60 * T_MS, step_cb), 0);
	T_RUN_UNTIL(loop, req.recv.calls == 1, 3000);
	uint64_t took = req.recv.at_ns - start;
	cr_assert_eq(req.recv.res, -ETIMEDOUT);
	cr_assert_eq(req.recv.flags, RIO_OP_F_DEADLINE);
	/* 150 ms from the start, not 60 + 150 */
	cr_assert_geq(took, 149 * T_MS, "fired early: %llu ms",
		      (unsigned long long)(took / T_MS));
	cr_assert_lt(took, 205 * T_MS, "the deadline restarted at submit: "
		     "%llu ms", (unsigned long long)(took / T_MS));
	/* it stays on the op: past now, a new submit ends at once */
	uint64_t t0 = t_now_ns();
	cr_assert_eq(rio_recv(loop, &req.recv.op, b, req.buf, sizeof req.buf, 0,
			      io_cb), 0);
	T_RUN_UNTIL(loop, req.recv.calls == 2, 3000);
	cr_assert_eq(req.recv.res, -ETIMEDOUT);
	cr_assert_lt(req.recv.at_ns - t0, 50 * T_MS);
	/* data before the deadline wins; a relative one replaces it */
	rio_op_set_deadline_at(&req.recv.op, rio_now_ns() + 2000 * T_MS);
	cr_assert_eq(send(a, "x", 1, 0), 1);
	cr_assert_eq(rio_recv(loop, &req.recv.op, b, req.buf, sizeof req.buf, 0,
			      io_cb), 0);
	T_RUN_UNTIL(loop, req.recv.calls == 3, 3000);
	cr_assert_eq(req.recv.res, 1);
	cr_assert_eq(req.recv.flags, 0);
	rio_op_set_deadline(&req.recv.op, 0);
	cr_assert_eq(req.recv.op.deadline_ns, 0);
	close(a);
	close(b);
	t_loop_done(loop);
}

static struct io last; /* a composite's completion */

static void last_cb(rio_loop *loop, rio_op *op, int res)
{
	(void)loop;
	last.calls++;
	last.res = res;
	last.flags = op->flags;
}

Test(deadline, a_relays_idle_timeout_and_a_connect_any_try_say_so,
     .timeout = 20)
{
	rio_loop *loop = t_loop();
	rio_bufpool *pool = t_bufpool(loop, 8, 4096);
	int a, b;
	t_pair(&a, &b);
	static rio_relay rl;
	memset(&rl, 0, sizeof rl);
	memset(&last, 0, sizeof last);
	rio_relay_opts ro = {.pool = pool, .idle_ns = 50 * T_MS};
	cr_assert_eq(rio_relay_start(loop, &rl, a, a, &ro, last_cb), 0);
	T_RUN_UNTIL(loop, last.calls == 1, 3000);
	cr_assert_eq(last.res, -ETIMEDOUT);
	cr_assert_eq(last.flags, RIO_OP_F_DEADLINE, "flags %x", last.flags);
	/* connect_any: its one address never answers; try_ns ends it */
	uint16_t port;
	int filler, lfd = t_full_listener(&port, &filler);
	rio_addr addr;
	addr.len = t_loopback(AF_INET, port, &addr.ss);
	rio_upstreams_opts uo = {.try_ns = 80 * T_MS};
	rio_upstreams *u;
	cr_assert_eq(rio_upstreams_create(&addr, 1, &uo, &u), 0);
	static rio_connector c;
	memset(&c, 0, sizeof c);
	memset(&last, 0, sizeof last);
	cr_assert_eq(rio_connect_any(loop, &c, u, last_cb), 0);
	T_RUN_UNTIL(loop, last.calls == 1, 3000);
	cr_assert_eq(last.res, -ETIMEDOUT);
	cr_assert_eq(last.flags, RIO_OP_F_DEADLINE, "flags %x", last.flags);
	cr_assert_eq(rio_upstreams_destroy(u), 0);
	close(filler);
	close(lfd);
	close(a);
	close(b);
	cr_assert_eq(rio_bufpool_destroy(pool), 0);
	t_loop_done(loop);
}

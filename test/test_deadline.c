/* rio_op_set_deadline: -ETIMEDOUT when it passes, nothing when data wins. */
#include "common.h"

#include <pthread.h>
#include <unistd.h>

struct io {
	rio_op op;
	int calls;
	int res;
	uint64_t at_ns;
};

static void io_cb(rio_loop *loop, rio_op *op, int res)
{
	struct io *io = RIO_CONTAINER_OF(op, struct io, op);

	(void)loop;
	io->calls++;
	io->res = res;
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

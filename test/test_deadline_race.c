/* Deadlines and exactly-once: data racing a deadline, a cancel beating it,
 * an op that fails before its deadline. One completion each, always. */
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

/* ---- the race: data arriving around the deadline ---- */

struct writer {
	int fd;
	unsigned delay_us;
	int ok;
};

static void *writer_main(void *arg)
{
	struct writer *w = arg;

	usleep(w->delay_us);
	w->ok = write(w->fd, "racy", 4) == 4;
	return NULL;
}

Test(deadline, deadline_racing_data_completes_exactly_once, .timeout = 60)
{
	enum { ITERS = 150 };
	rio_loop *loop = t_loop();
	struct io r;
	char buf[16];
	int a, b, data = 0, timedout = 0;

	t_pair(&a, &b);
	for (int i = 0; i < ITERS; i++) {
		/* Deadline 1 ms; the write lands 0..2 ms after submit. */
		struct writer w = { .fd = a,
				    .delay_us = (unsigned)(i * 131) % 2000 };
		pthread_t th;

		memset(&r, 0, sizeof(r));
		rio_op_set_deadline(&r.op, 1 * T_MS);
		cr_assert_eq(pthread_create(&th, NULL, writer_main, &w), 0);
		cr_assert_eq(rio_recv(loop, &r.op, b, buf, sizeof(buf), 0, io_cb),
			     0);
		T_RUN_UNTIL(loop, r.calls > 0, 3000);
		pthread_join(th, NULL);
		cr_assert(w.ok);
		t_drain(loop, 1000);
		cr_assert_eq(r.calls, 1, "iter %d: %d completions", i, r.calls);
		cr_assert(r.res == 4 || r.res == -ETIMEDOUT,
			  "iter %d: res %d (%s)", i, r.res, rio_strerror(r.res));
		data += r.res == 4;
		timedout += r.res == -ETIMEDOUT;
		t_drain_fd(b);
	}
	/* Late stragglers from any of the iterations would land here. */
	t_loop_sleep(loop, 20);
	cr_assert_eq(r.calls, 1);
	cr_assert_eq(data + timedout, ITERS);
	cr_log_info("deadline race: %d data, %d timed out", data, timedout);
	close(a);
	close(b);
	t_loop_done(loop);
}

Test(deadline, cancel_beats_the_deadline, .timeout = 20)
{
	rio_loop *loop = t_loop();
	struct io r = { .calls = 0 }, c = { .calls = 0 };
	char buf[8];
	int a, b;

	t_pair(&a, &b);
	rio_op_set_deadline(&r.op, 40 * T_MS);
	cr_assert_eq(rio_recv(loop, &r.op, b, buf, sizeof(buf), 0, io_cb), 0);
	t_loop_sleep(loop, 5);
	cr_assert_eq(rio_cancel(loop, &c.op, &r.op, io_cb), 0);
	T_RUN_UNTIL(loop, r.calls > 0 && c.calls > 0, 3000);
	cr_assert_eq(r.res, -ECANCELED, "got %d (%s)", r.res,
		     rio_strerror(r.res));
	cr_assert_eq(c.res, 0);
	t_loop_sleep(loop, 80); /* past the deadline: nothing more */
	cr_assert_eq(r.calls, 1);
	close(a);
	close(b);
	t_loop_done(loop);
}

Test(deadline, an_op_that_fails_at_once_completes_once, .timeout = 20)
{
	rio_loop *loop = t_loop();
	struct io c = { .calls = 0 };
	struct sockaddr_storage ss;
	socklen_t len = t_loopback(AF_INET, t_closed_port(), &ss);
	int fd = rio_socket_tcp(AF_INET);

	cr_assert_geq(fd, 0);
	rio_op_set_deadline(&c.op, 20 * T_MS);
	cr_assert_eq(rio_connect(loop, &c.op, fd, (struct sockaddr *)&ss, len,
				 io_cb),
		     0);
	T_RUN_UNTIL(loop, c.calls > 0, 3000);
	cr_assert_eq(c.res, -ECONNREFUSED, "got %d (%s)", c.res,
		     rio_strerror(c.res));
	t_loop_sleep(loop, 40);
	cr_assert_eq(c.calls, 1, "the deadline fired after the op completed");
	close(fd);
	t_loop_done(loop);
}

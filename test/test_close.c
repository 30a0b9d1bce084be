/* rio_close: pending ops on the fd complete with -ECANCELED first. */
#include "common.h"

#include <fcntl.h>
#include <unistd.h>

static void assert_closed(int fd)
{
	cr_assert_eq(fcntl(fd, F_GETFD), -1, "fd %d is still open", fd);
	cr_assert_eq(errno, EBADF);
}

Test(close, cancels_pending_recv_and_send_before_completing, .timeout = 30)
{
	rio_loop *loop = t_loop();
	t_rec r = { .calls = 0 }, s = { .calls = 0 }, c = { .calls = 0 };
	static char big[65536], in[64];
	int a, b, attempt;

	t_seq = 0;
	t_pair(&a, &b);
	cr_assert_eq(rio_recv(loop, &r.op, a, in, sizeof(in), 0, t_rec_cb), 0);
	/* Peer b never reads: once the send buffer is full, a send waits. */
	for (attempt = 0; attempt < 5; attempt++) {
		t_fill_sndbuf(a, b);
		cr_assert_eq(rio_send(loop, &s.op, a, big, sizeof(big), 0, t_rec_cb),
			     0);
		t_loop_sleep(loop, 20);
		if (s.calls == 0)
			break;
		cr_assert_gt(s.res, 0, "send on a full socket: %d (%s)", s.res,
			     rio_strerror(s.res));
		s.calls = 0; /* it squeezed in; fill again */
	}
	cr_assert_lt(attempt, 5, "could not get a send to stay pending");
	cr_assert_eq(r.calls, 0, "recv completed with nothing sent: %d", r.res);
	cr_assert(rio_op_in_flight(&r.op) && rio_op_in_flight(&s.op));

	cr_assert_eq(rio_close(loop, &c.op, a, t_rec_cb), 0);
	T_RUN_UNTIL(loop, r.calls && s.calls && c.calls, 3000);
	cr_assert_eq(r.res, -ECANCELED, "recv: %d (%s)", r.res,
		     rio_strerror(r.res));
	cr_assert_eq(s.res, -ECANCELED, "send: %d (%s)", s.res,
		     rio_strerror(s.res));
	cr_assert_eq(c.res, 0, "close: %d (%s)", c.res, rio_strerror(c.res));
	cr_assert_lt(r.seq, c.seq, "recv completed after the close");
	cr_assert_lt(s.seq, c.seq, "send completed after the close");
	assert_closed(a);
	t_loop_sleep(loop, 10);
	cr_assert_eq(r.calls + s.calls + c.calls, 3, "a second completion");
	close(b);
	t_loop_done(loop);
}

Test(close, cancels_a_pending_connect, .timeout = 30)
{
	rio_loop *loop = t_loop();
	t_rec cn = { .calls = 0 }, c = { .calls = 0 };
	struct sockaddr_storage ss;
	socklen_t len;
	uint16_t port;
	int filler, fd;
	int lfd = t_full_listener(&port, &filler);

	t_seq = 0;
	len = t_loopback(AF_INET, port, &ss);
	fd = rio_socket_tcp(AF_INET);
	cr_assert_geq(fd, 0);
	cr_assert_eq(rio_connect(loop, &cn.op, fd, (struct sockaddr *)&ss, len,
				 t_rec_cb),
		     0);
	t_loop_sleep(loop, 30);
	cr_assert_eq(cn.calls, 0, "connect to a full listener finished: %d (%s)",
		     cn.res, rio_strerror(cn.res));
	cr_assert_eq(rio_close(loop, &c.op, fd, t_rec_cb), 0);
	T_RUN_UNTIL(loop, cn.calls && c.calls, 3000);
	cr_assert_eq(cn.res, -ECANCELED, "connect: %d (%s)", cn.res,
		     rio_strerror(cn.res));
	cr_assert_eq(c.res, 0, "close: %d (%s)", c.res, rio_strerror(c.res));
	cr_assert_lt(cn.seq, c.seq, "connect completed after the close");
	assert_closed(fd);
	close(filler);
	close(lfd);
	t_loop_done(loop);
}

Test(close, ends_a_multishot_accept_on_the_listener, .timeout = 20)
{
	rio_loop *loop = t_loop();
	t_rec acc = { .calls = 0 }, c = { .calls = 0 };
	int lfd = t_listen(AF_INET, 8, NULL);

	t_seq = 0;
	cr_assert_eq(rio_accept(loop, &acc.op, lfd, NULL, NULL, RIO_MULTISHOT,
				t_rec_cb),
		     0);
	t_loop_sleep(loop, 5);
	cr_assert_eq(rio_close(loop, &c.op, lfd, t_rec_cb), 0);
	T_RUN_UNTIL(loop, acc.calls && c.calls, 3000);
	cr_assert_eq(acc.calls, 1);
	cr_assert_eq(acc.res, -ECANCELED, "accept: %d (%s)", acc.res,
		     rio_strerror(acc.res));
	cr_assert_eq(acc.flags & RIO_OP_F_MORE, 0u, "final accept has MORE");
	cr_assert_eq(c.res, 0);
	cr_assert_lt(acc.seq, c.seq);
	assert_closed(lfd);
	t_loop_done(loop);
}

Test(close, leaves_ops_on_other_fds_alone, .timeout = 20)
{
	rio_loop *loop = t_loop();
	t_rec r1 = { .calls = 0 }, r2 = { .calls = 0 }, c = { .calls = 0 };
	char b1[8], b2[8];
	int a1, x1, a2, x2;

	t_seq = 0;
	t_pair(&a1, &x1);
	t_pair(&a2, &x2);
	cr_assert_eq(rio_recv(loop, &r1.op, a1, b1, sizeof(b1), 0, t_rec_cb), 0);
	cr_assert_eq(rio_recv(loop, &r2.op, a2, b2, sizeof(b2), 0, t_rec_cb), 0);
	cr_assert_eq(rio_close(loop, &c.op, a1, t_rec_cb), 0);
	T_RUN_UNTIL(loop, r1.calls && c.calls, 3000);
	cr_assert_eq(r1.res, -ECANCELED);
	cr_assert_eq(r2.calls, 0, "an op on another fd was touched: %d", r2.res);
	cr_assert_eq(write(x2, "ok", 2), 2);
	T_RUN_UNTIL(loop, r2.calls, 3000);
	cr_assert_eq(r2.res, 2);
	close(x1);
	close(a2);
	close(x2);
	t_loop_done(loop);
}

Test(close, plain_close_and_a_bad_fd, .timeout = 20)
{
	rio_loop *loop = t_loop();
	t_rec c1 = { .calls = 0 }, c2 = { .calls = 0 };
	int a, b;

	t_pair(&a, &b);
	cr_assert_eq(rio_close(loop, &c1.op, a, t_rec_cb), 0);
	T_RUN_UNTIL(loop, c1.calls, 3000);
	cr_assert_eq(c1.res, 0);
	assert_closed(a);
	/* `a` is free now and nothing reopened it: close(2) says EBADF. */
	cr_assert_eq(rio_close(loop, &c2.op, a, t_rec_cb), 0,
		     "a bad fd is reported through the callback");
	T_RUN_UNTIL(loop, c2.calls, 3000);
	cr_assert_eq(c2.res, -EBADF, "got %d (%s)", c2.res, rio_strerror(c2.res));
	close(b);
	t_loop_done(loop);
}

Test(close, cancels_a_recv_with_a_deadline_not_times_it_out, .timeout = 20)
{
	rio_loop *loop = t_loop();
	t_rec r = { .calls = 0 }, c = { .calls = 0 };
	char buf[8];
	int a, b;

	t_seq = 0;
	t_pair(&a, &b);
	rio_op_set_deadline(&r.op, 30 * T_MS);
	cr_assert_eq(rio_recv(loop, &r.op, a, buf, sizeof(buf), 0, t_rec_cb), 0);
	cr_assert_eq(rio_close(loop, &c.op, a, t_rec_cb), 0);
	T_RUN_UNTIL(loop, r.calls && c.calls, 3000);
	cr_assert_eq(r.res, -ECANCELED, "got %d (%s)", r.res,
		     rio_strerror(r.res));
	cr_assert_eq(c.res, 0);
	cr_assert_lt(r.seq, c.seq);
	t_loop_sleep(loop, 50);
	cr_assert_eq(r.calls, 1, "the deadline fired after the close");
	close(b);
	t_loop_done(loop);
}

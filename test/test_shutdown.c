/*
 * rio_shutdown: shutdown(2) through the loop, the same on every backend:
 * a FIN after the data sent before it, a send still waiting for room ends
 * with -EPIPE, SHUT_RD ends a pending recv with end of stream, and errors
 * (-EINVAL at submit; -ENOTSOCK, -ENOTCONN, -EBADF as results).
 */
#include "common.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

/* A send and a shutdown submitted in one turn: the peer reads the bytes,
 * then end of stream. */
Test(shutdown, a_fin_goes_after_the_data_sent_before_it, .timeout = 20)
{
	rio_loop *loop = t_loop();
	t_rec s = { .calls = 0 }, sh = { .calls = 0 };
	char buf[16];
	size_t have = 0;
	int a, b;

	t_pair(&a, &b);
	cr_assert_eq(rio_send(loop, &s.op, a, "data", 4, 0, t_rec_cb), 0);
	cr_assert_eq(rio_shutdown(loop, &sh.op, a, SHUT_WR, t_rec_cb), 0);
	cr_assert_eq(s.calls + sh.calls, 0, "a callback ran inside submit");
	T_RUN_UNTIL(loop, s.calls && sh.calls, 5000);
	cr_assert_eq(s.res, 4);
	cr_assert_eq(sh.res, 0, "shutdown: %s", rio_strerror(sh.res));
	T_RUN_UNTIL(loop, t_recv_upto(b, buf, 4, &have), 5000);
	cr_assert_eq(memcmp(buf, "data", 4), 0);
	T_RUN_UNTIL(loop, recv(b, buf, 1, MSG_DONTWAIT) == 0, 5000);
	close(a);
	close(b);
	t_loop_done(loop);
}

/* The socket is full: the send waits for room; a shutdown then ends it
 * with -EPIPE (the peer never reads), on every backend. */
Test(shutdown, a_send_waiting_for_room_ends_with_epipe, .timeout = 20)
{
	rio_loop *loop = t_loop();
	static char big[64 << 10];
	t_rec s = { .calls = 0 }, sh = { .calls = 0 };
	int a, b;

	t_pair(&a, &b);
	t_fill_sndbuf(a, b);
	cr_assert_eq(rio_send(loop, &s.op, a, big, sizeof big, 0, t_rec_cb), 0);
	t_loop_sleep(loop, 30);
	cr_assert_eq(s.calls, 0, "a send into a full socket completed");
	cr_assert_eq(rio_shutdown(loop, &sh.op, a, SHUT_WR, t_rec_cb), 0);
	T_RUN_UNTIL(loop, s.calls && sh.calls, 5000);
	cr_assert_eq(sh.res, 0, "shutdown: %s", rio_strerror(sh.res));
	cr_assert_eq(s.res, -EPIPE, "the waiting send ended with %s",
		     rio_strerror(s.res));
	close(a);
	close(b);
	t_loop_done(loop);
}

/* SHUT_RD: a recv waiting for data ends with end of stream. */
Test(shutdown, shut_rd_ends_a_waiting_recv, .timeout = 20)
{
	rio_loop *loop = t_loop();
	t_rec r = { .calls = 0 }, sh = { .calls = 0 };
	char buf[8];
	int a, b;

	t_pair(&a, &b);
	cr_assert_eq(rio_recv(loop, &r.op, a, buf, sizeof buf, 0, t_rec_cb), 0);
	t_loop_sleep(loop, 20);
	cr_assert_eq(r.calls, 0);
	cr_assert_eq(rio_shutdown(loop, &sh.op, a, SHUT_RD, t_rec_cb), 0);
	T_RUN_UNTIL(loop, r.calls && sh.calls, 5000);
	cr_assert_eq(sh.res, 0);
	cr_assert_eq(r.res, 0, "the recv ended with %s", rio_strerror(r.res));
	close(a);
	close(b);
	t_loop_done(loop);
}

Test(shutdown, errors, .timeout = 20)
{
	rio_loop *loop = t_loop();
	t_rec sh = { .calls = 0 };
	int p[2];

	cr_assert_eq(pipe2(p, O_CLOEXEC), 0);
	int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	int dead = dup(p[0]); /* a number no file has */

	close(dead);
	cr_assert_eq(rio_shutdown(loop, &sh.op, s, 7, t_rec_cb), -EINVAL);
	cr_assert_eq(rio_shutdown(NULL, &sh.op, s, SHUT_WR, t_rec_cb), -EINVAL);
	cr_assert_eq(rio_shutdown(loop, &sh.op, s, SHUT_WR, NULL), -EINVAL);
	struct {
		int fd, err;
	} c[] = { { p[0], -ENOTSOCK }, { s, -ENOTCONN }, { dead, -EBADF } };
	for (size_t i = 0; i < sizeof c / sizeof c[0]; i++) {
		sh.calls = 0;
		cr_assert_eq(rio_shutdown(loop, &sh.op, c[i].fd, SHUT_RDWR,
					  t_rec_cb), 0);
		T_RUN_UNTIL(loop, sh.calls, 5000);
		cr_assert_eq(sh.res, c[i].err, "fd %d: %s", c[i].fd,
			     rio_strerror(sh.res));
	}
	close(p[0]);
	close(p[1]);
	close(s);
	t_loop_done(loop);
}

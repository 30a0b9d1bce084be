/*
 * Unix-domain stream sockets through the loop, on every backend: accept
 * and connect by path and by abstract name (rio_addr_parse), 64 MiB each
 * way through an echo, and file descriptors passed with SCM_RIGHTS
 * through rio_sendmsg / rio_recvmsg.
 */
#include "common.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

static void nop_cb(rio_loop *loop, rio_op *op, int res)
{
	(void)loop;
	(void)op;
	(void)res;
}

/* Listen on `text` (a unix address), accept and connect through the loop,
 * and move a few bytes each way. */
static void accept_and_connect(const char *text)
{
	rio_loop *loop = t_loop();
	t_rec acc = { .calls = 0 }, con = { .calls = 0 };
	t_rec snd = { .calls = 0 }, rcv = { .calls = 0 };
	char buf[16];
	rio_addr a;

	cr_assert_eq(rio_addr_parse(text, &a), 0, "%s", text);
	int lfd = rio_listen_addr(&a, 8, RIO_SOCK_UNLINK);
	cr_assert_geq(lfd, 0, "listen on %s: %s", text, rio_strerror(lfd));
	int c = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	cr_assert_geq(c, 0);
	cr_assert_eq(rio_accept(loop, &acc.op, lfd, NULL, NULL, 0, t_rec_cb), 0);
	cr_assert_eq(rio_connect(loop, &con.op, c, (struct sockaddr *)&a.ss,
				 a.len, t_rec_cb), 0);
	T_RUN_UNTIL(loop, acc.calls && con.calls, 5000);
	cr_assert_eq(con.res, 0, "connect: %s", rio_strerror(con.res));
	cr_assert_geq(acc.res, 0, "accept: %s", rio_strerror(acc.res));
	int s = acc.res;
	cr_assert_eq(rio_send(loop, &snd.op, c, "ping", 4, 0, t_rec_cb), 0);
	cr_assert_eq(rio_recv(loop, &rcv.op, s, buf, sizeof buf, MSG_WAITALL,
			      t_rec_cb), 0);
	/* MSG_WAITALL for 16 bytes: it waits for the second send */
	T_RUN_UNTIL(loop, snd.calls == 1, 5000);
	cr_assert_eq(rcv.calls, 0, "a MSG_WAITALL recv ended with 4 of 16");
	cr_assert_eq(snd.res, 4);
	cr_assert_eq(rio_send(loop, &snd.op, c, "0123456789ab", 12, 0,
			      t_rec_cb), 0);
	T_RUN_UNTIL(loop, rcv.calls && snd.calls == 2, 5000);
	cr_assert_eq(rcv.res, 16);
	cr_assert_eq(memcmp(buf, "ping0123456789ab", 16), 0);
	close(s);
	close(c);
	close(lfd);
	if (text[5] != '@')
		cr_assert_eq(unlink(text + 5), 0, "the socket file: %s",
			     strerror(errno));
	t_loop_done(loop);
}

Test(unix_domain, accept_and_connect_by_path, .timeout = 20)
{
	char dir[64], text[128];

	snprintf(dir, sizeof dir, "/tmp/ringio-test-XXXXXX");
	cr_assert_not_null(mkdtemp(dir));
	snprintf(text, sizeof text, "unix:%s/s.sock", dir);
	accept_and_connect(text);
	cr_assert_eq(rmdir(dir), 0);
}

Test(unix_domain, accept_and_connect_by_abstract_name, .timeout = 20)
{
	char text[64];

	snprintf(text, sizeof text, "unix:@ringio-test-unix-%d", (int)getpid());
	accept_and_connect(text);
}

/* 64 MiB each way: a writer and a reader on one end, a relay echoing on
 * the other. */
Test(unix_domain, sixty_four_mib_each_way_through_an_echo, .timeout = 180)
{
	rio_loop *loop = t_loop();
	rio_bufpool *pool = t_bufpool(loop, 64, 16384);
	rio_relay_opts o = { .pool = pool, .splice = RIO_SPLICE_AUTO };
	rio_relay r;
	t_stream st = { .total = 64u << 20 };
	int sv[2];

	cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	rio_op_init(&r.op);
	cr_assert_eq(rio_relay_start(loop, &r, sv[1], sv[1], &o, nop_cb), 0);
	st.fd = sv[0];
	t_timeouts(st.fd, 60);
	t_stream_run(loop, &st, 150000);
	/* the writer's FIN came back: the echo ended by itself */
	T_RUN_UNTIL(loop, !rio_op_in_flight(&r.op), 5000);
	cr_assert_eq(r.op.res, 0, "the echo ended with %s",
		     rio_strerror(r.op.res));
	rio_relay_counters k;
	rio_relay_get_counters(&r, &k);
	cr_assert_eq(k.bytes[0], 64u << 20);
	close(sv[0]);
	close(sv[1]);
	cr_assert_eq(rio_bufpool_destroy(pool), 0);
	t_loop_done(loop);
}

/* SCM_RIGHTS: two descriptors (two pipes' write ends) and one byte go
 * through rio_sendmsg; rio_recvmsg gets new descriptors for the same
 * files. A control buffer too small for them
 * says MSG_CTRUNC, on every backend. */
Test(unix_domain, scm_rights_passes_descriptors, .timeout = 20)
{
	rio_loop *loop = t_loop();
	t_rec snd = { .calls = 0 }, rcv = { .calls = 0 };
	int sv[2], p[2], q[2];
	char one = 'x', got = 0;
	union {
		struct cmsghdr h;
		char b[CMSG_SPACE(2 * sizeof(int))];
	} out, in;
	struct iovec iov = { &one, 1 }, iiov = { &got, 1 };
	struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1,
			    .msg_control = out.b, .msg_controllen = sizeof out.b };
	struct msghdr im = { .msg_iov = &iiov, .msg_iovlen = 1,
			     .msg_control = in.b, .msg_controllen = sizeof in.b };

	cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK |
				SOCK_CLOEXEC, 0, sv), 0);
	cr_assert_eq(pipe2(p, O_CLOEXEC), 0);
	cr_assert_eq(pipe2(q, O_CLOEXEC), 0);
	memset(&out, 0, sizeof out);
	struct cmsghdr *c = CMSG_FIRSTHDR(&m);
	c->cmsg_level = SOL_SOCKET;
	c->cmsg_type = SCM_RIGHTS;
	c->cmsg_len = CMSG_LEN(2 * sizeof(int));
	int pass[2] = { p[1], q[1] };
	memcpy(CMSG_DATA(c), pass, sizeof pass);

	cr_assert_eq(rio_recvmsg(loop, &rcv.op, sv[1], &im, MSG_CMSG_CLOEXEC,
				 t_rec_cb), 0);
	t_loop_sleep(loop, 10);
	cr_assert_eq(rio_sendmsg(loop, &snd.op, sv[0], &m, 0, t_rec_cb), 0);
	T_RUN_UNTIL(loop, snd.calls && rcv.calls, 5000);
	cr_assert_eq(snd.res, 1, "sendmsg: %s", rio_strerror(snd.res));
	cr_assert_eq(rcv.res, 1, "recvmsg: %s", rio_strerror(rcv.res));
	cr_assert_eq(got, 'x');
	cr_assert_eq(im.msg_flags & MSG_CTRUNC, 0);
	struct cmsghdr *ic = CMSG_FIRSTHDR(&im);
	cr_assert_not_null(ic, "no control message came");
	cr_assert(ic->cmsg_level == SOL_SOCKET && ic->cmsg_type == SCM_RIGHTS);
	cr_assert_eq(ic->cmsg_len, CMSG_LEN(2 * sizeof(int)));
	int fds[2];
	memcpy(fds, CMSG_DATA(ic), sizeof fds);
	for (int i = 0; i < 2; i++) {
		int rd = i ? q[0] : p[0];
		char b = 0;

		cr_assert_geq(fds[i], 0);
		cr_assert(fcntl(fds[i], F_GETFD) & FD_CLOEXEC,
			  "MSG_CMSG_CLOEXEC was not honoured");
		cr_assert_eq(write(fds[i], "y", 1), 1);
		cr_assert_eq(read(rd, &b, 1), 1, "the passed fd is not the pipe");
		cr_assert_eq(b, 'y');
		close(fds[i]);
	}

	/* room for no descriptor: the kernel drops them, says MSG_CTRUNC */
	snd.calls = rcv.calls = 0;
	im.msg_controllen = CMSG_SPACE(0);
	im.msg_flags = 0;
	cr_assert_eq(rio_sendmsg(loop, &snd.op, sv[0], &m, 0, t_rec_cb), 0);
	cr_assert_eq(rio_recvmsg(loop, &rcv.op, sv[1], &im, 0, t_rec_cb), 0);
	T_RUN_UNTIL(loop, snd.calls && rcv.calls, 5000);
	cr_assert_eq(rcv.res, 1, "recvmsg: %s", rio_strerror(rcv.res));
	cr_assert(im.msg_flags & MSG_CTRUNC, "no MSG_CTRUNC: flags %#x",
		  im.msg_flags);
	for (int i = 0; i < 2; i++) {
		close(p[i]);
		close(q[i]);
	}
	close(sv[0]);
	close(sv[1]);
	t_loop_done(loop);
}

/*
 * Several ops pending on one fd, the way servers run them (a pool of
 * receivers on one datagram socket, pipelined sends, a few one-shot
 * accepts on one listener): each completes with its data or a real error,
 * never with a stray -EAGAIN. The kernel does hand io_uring -EAGAIN here
 * (the readiness one op was woken for was taken by another); the runtime,
 * not the caller, owns the retry. Every op's data is counted, so a retry
 * that lost or doubled a result shows too.
 */
#include "common.h"

#include <pthread.h>
#include <stdlib.h>
#include <sys/un.h>
#include <unistd.h>

enum { NOPS = 4, MSGS = 2000 };

enum mode { M_RECV, M_RECVMSG, M_SEND, M_SENDMSG, M_ACCEPT };

struct slot {
	rio_op op;
	char buf[256];
	struct iovec iov;
	struct msghdr mh;
};

struct eag {
	rio_loop *loop;
	enum mode mode;
	int fd, peer;       /* the fd the ops share, and the other end */
	int stream;         /* recv side: a stream (bytes) or datagrams */
	struct slot s[NOPS];
	uint64_t units;     /* datagrams / bytes / connections done */
	uint64_t want;
	int eagain, other, other_res, stop, live;
	pthread_t th;
	uint16_t port;
};

static void submit(struct eag *e, struct slot *s);

static void cb(rio_loop *loop, rio_op *op, int res)
{
	struct eag *e = op->data;
	struct slot *s = RIO_CONTAINER_OF(op, struct slot, op);

	(void)loop;
	e->live--;
	if (res == -EAGAIN) {
		e->eagain++;
	} else if (res < 0) {
		if (res != -ECANCELED || !e->stop) {
			e->other++;
			e->other_res = res;
		}
		return;
	} else if (e->mode == M_ACCEPT) {
		close(res);
		e->units++;
	} else if (e->mode == M_SEND || e->mode == M_SENDMSG ||
		   e->stream) {
		e->units += (uint64_t)res;
	} else {
		e->units++;
	}
	if (!e->stop && e->units < e->want)
		submit(e, s);
}

static void submit(struct eag *e, struct slot *s)
{
	int r = -EINVAL;

	rio_op_init(&s->op);
	s->op.data = e;
	s->iov = (struct iovec){s->buf, sizeof s->buf};
	s->mh = (struct msghdr){.msg_iov = &s->iov, .msg_iovlen = 1};
	switch (e->mode) {
	case M_RECV:
		r = rio_recv(e->loop, &s->op, e->fd, s->buf, sizeof s->buf, 0, cb);
		break;
	case M_RECVMSG:
		r = rio_recvmsg(e->loop, &s->op, e->fd, &s->mh, 0, cb);
		break;
	case M_SEND:
		r = rio_send(e->loop, &s->op, e->fd, s->buf, sizeof s->buf, 0, cb);
		break;
	case M_SENDMSG:
		r = rio_sendmsg(e->loop, &s->op, e->fd, &s->mh, 0, cb);
		break;
	case M_ACCEPT:
		r = rio_accept(e->loop, &s->op, e->fd, NULL, NULL, 0, cb);
		break;
	}
	cr_assert_eq(r, 0, "submit: %s", rio_strerror(r));
	e->live++;
}

/* The far end: sends MSGS one-byte messages, 50 us apart (recv modes),
 * reads everything slowly (send modes), or connects MSGS / 4 times. */
static void *far_end(void *arg)
{
	struct eag *e = arg;
	char buf[4096];

	switch (e->mode) {
	case M_RECV:
	case M_RECVMSG:
		for (int i = 0; i < MSGS; i++) {
			if (send(e->peer, "x", 1, 0) != 1)
				break;
			usleep(50);
		}
		break;
	case M_SEND:
	case M_SENDMSG:
		for (uint64_t got = 0; got < e->want;) {
			ssize_t n = recv(e->peer, buf, sizeof buf, 0);

			if (n <= 0)
				break;
			got += (uint64_t)n;
			if (got % (16 * sizeof buf) < sizeof buf)
				usleep(200);
		}
		break;
	case M_ACCEPT:
		for (uint64_t i = 0; i < e->want; i++) {
			int c = t_try_connect(AF_INET, e->port);

			if (c >= 0)
				close(c);
			usleep(100);
		}
		break;
	}
	return NULL;
}

static void run(enum mode mode, int type, int family)
{
	struct eag *e = calloc(1, sizeof(*e));
	int sv[2];

	cr_assert_not_null(e);
	e->loop = t_loop();
	e->mode = mode;
	e->stream = type == SOCK_STREAM;
	if (mode == M_ACCEPT) {
		e->fd = t_listen(AF_INET, 1024, &e->port);
		cr_assert_eq(rio_set_nonblock(e->fd, 1), 0);
		e->peer = -1;
		e->want = MSGS / 4;
	} else if (family == AF_INET) {
		t_pair(&e->fd, &e->peer);
		t_set_blocking(e->peer);
		t_timeouts(e->peer, 5);
	} else {
		/* non-blocking, as a server's sockets are; the far end blocks */
		cr_assert_eq(socketpair(AF_UNIX, type | SOCK_NONBLOCK |
					SOCK_CLOEXEC, 0, sv), 0);
		e->fd = sv[0];
		e->peer = sv[1];
		t_set_blocking(e->peer);
		t_timeouts(e->peer, 5);
	}
	if (mode == M_RECV || mode == M_RECVMSG)
		e->want = MSGS;
	if (mode == M_SEND || mode == M_SENDMSG) {
		/* a small send buffer, so that the sends wait for room */
		int sz = 4096;

		cr_assert_eq(setsockopt(e->fd, SOL_SOCKET, SO_SNDBUF, &sz,
					sizeof sz), 0);
		e->want = (uint64_t)MSGS * sizeof e->s[0].buf;
	}
	for (int i = 0; i < NOPS; i++)
		submit(e, &e->s[i]);
	cr_assert_eq(pthread_create(&e->th, NULL, far_end, e), 0);
	T_RUN_UNTIL(e->loop, e->units >= e->want || e->other ||
		    e->live == 0, 20000);
	e->stop = 1;
	if (e->peer >= 0)
		shutdown(e->peer, SHUT_RDWR);
	pthread_join(e->th, NULL);
	t_rec cr = {0};
	rio_op_init(&cr.op);
	cr_assert_eq(rio_close(e->loop, &cr.op, e->fd, t_rec_cb), 0);
	T_RUN_UNTIL(e->loop, cr.calls == 1 && e->live == 0, 5000);
	cr_assert_eq(e->eagain, 0, "%d completions were -EAGAIN (%llu of %llu "
		     "done)", e->eagain, (unsigned long long)e->units,
		     (unsigned long long)e->want);
	cr_assert_eq(e->other, 0, "an op failed: %s",
		     rio_strerror(e->other_res));
	cr_assert_geq(e->units, e->want, "%llu of %llu",
		      (unsigned long long)e->units,
		      (unsigned long long)e->want);
	if (e->peer >= 0)
		close(e->peer);
	t_loop_done(e->loop);
	free(e);
}

Test(eagain, recv_on_one_datagram_socket, .timeout = 60)
{
	run(M_RECV, SOCK_DGRAM, AF_UNIX);
}

Test(eagain, recvmsg_on_one_datagram_socket, .timeout = 60)
{
	run(M_RECVMSG, SOCK_DGRAM, AF_UNIX);
}

Test(eagain, recv_on_one_stream_socket, .timeout = 60)
{
	run(M_RECV, SOCK_STREAM, AF_UNIX);
}

Test(eagain, recvmsg_on_one_tcp_socket, .timeout = 60)
{
	run(M_RECVMSG, SOCK_STREAM, AF_INET);
}

Test(eagain, send_on_one_tcp_socket, .timeout = 60)
{
	run(M_SEND, SOCK_STREAM, AF_INET);
}

Test(eagain, sendmsg_on_one_stream_socket, .timeout = 60)
{
	run(M_SENDMSG, SOCK_STREAM, AF_UNIX);
}

Test(eagain, accept_on_one_listener, .timeout = 60)
{
	run(M_ACCEPT, SOCK_STREAM, AF_INET);
}

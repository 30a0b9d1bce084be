/*
 * rio_loop_cancel_all: a forced stop, on every backend. Every kind of op
 * in flight ends exactly once, in later turns, with -ECANCELED (a
 * multishot op with its final completion, a relay and a connect_any as a
 * cancel of them ends them, a listener through on_stop), after which the
 * loop runs dry and can be destroyed; a result decided before the cancel
 * is delivered as it is; callbacks may submit (a close) and what they
 * submit is not touched; ops waiting for room in a full SQ before the
 * first run end too; what is refused.
 */
#include "common.h"

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

/* One op's completions: results with RIO_OP_F_MORE, and the final one. */
typedef struct t_end {
	rio_op op;
	int more, finals, res;
	unsigned flags;
	int close_fd; /* >= 0: the final callback closes it through the loop */
	rio_op close;
	int closed, close_res;
} t_end;

static void close_cb(rio_loop *loop, rio_op *op, int res)
{
	(void)loop;
	t_end *e = RIO_CONTAINER_OF(op, t_end, close);
	e->closed++;
	e->close_res = res;
}

static void end_cb(rio_loop *loop, rio_op *op, int res)
{
	t_end *e = RIO_CONTAINER_OF(op, t_end, op);
	if (op->flags & RIO_OP_F_MORE) {
		e->more++;
		return;
	}
	e->finals++;
	e->res = res;
	e->flags = op->flags;
	if (e->close_fd >= 0) {
		cr_assert_eq(rio_close(loop, &e->close, e->close_fd, close_cb),
			     0);
		e->close_fd = -1;
	}
}

static t_end *ends_new(int n)
{
	t_end *e = calloc((size_t)n, sizeof *e);
	cr_assert_not_null(e);
	for (int i = 0; i < n; i++)
		e[i].close_fd = -1;
	return e;
}

typedef struct t_lis {
	int stops, err;
} t_lis;

static void lis_accept(rio_listener *l, rio_loop *loop, int fd,
		       const struct sockaddr *peer, socklen_t len, void *data)
{
	(void)loop;
	(void)peer;
	(void)len;
	(void)data;
	close(fd);
	rio_listener_release(l);
}

static void lis_stop(rio_listener *l, int err, void *data)
{
	(void)l;
	t_lis *s = data;
	s->stops++;
	s->err = err;
}

/* The relay and connect_any record into these. */
static t_end relay_end, any_end;

static void relay_cb(rio_loop *loop, rio_op *op, int res)
{
	(void)op;
	end_cb(loop, &relay_end.op, res);
}

static void any_cb(rio_loop *loop, rio_op *op, int res)
{
	(void)op;
	if (res >= 0)
		close(res);
	end_cb(loop, &any_end.op, res);
}

enum {
	K_RECV, K_RECV_MULTI, K_SEND, K_ACCEPT, K_ACCEPT_MULTI, K_CONNECT,
	K_TIMEOUT, K_POLL, K_SIGNAL, K_WAKEUP, K_READ, K_DGRAMS, K_STARVED,
	K_RECVMSG, K_N
};

static const char *const kname[K_N] = {
	"recv", "recv_multishot", "send", "accept", "accept multishot",
	"connect", "timeout", "poll", "signal", "wakeup", "read",
	"recvmsg_multishot", "starved recv_multishot", "recvmsg",
};

/* One of each kind that waits on a peer, a timer or a signal, plus a
 * relay, a connect_any and a listener: one cancel-all ends them all. */
Test(cancel_all, ends_every_kind_in_flight_once, .timeout = 60)
{
	rio_loop *loop = t_loop();
	t_end *e = ends_new(K_N);
	int fds[32], nf = 0;
	int a, b, c, d, s, p, x, y, g, h;
	uint16_t port;

	t_pair(&a, &b); /* a recv on a, nothing sent */
	fds[nf++] = a, fds[nf++] = b;
	char rbuf[64];
	cr_assert_eq(rio_recv(loop, &e[K_RECV].op, a, rbuf, sizeof rbuf, 0,
			      end_cb), 0);

	rio_bufpool *pool = t_bufpool(loop, 4, 4096);
	t_pair(&c, &d);
	fds[nf++] = c, fds[nf++] = d;
	cr_assert_eq(rio_recv_multishot(loop, &e[K_RECV_MULTI].op, c, pool,
					end_cb), 0);

	t_pair(&s, &p); /* a send into a full socket */
	fds[nf++] = s, fds[nf++] = p;
	t_fill_sndbuf(s, p);
	static char sbuf[65536];
	cr_assert_eq(rio_send(loop, &e[K_SEND].op, s, sbuf, sizeof sbuf, 0,
			      end_cb), 0);

	int l1 = t_listen(AF_INET, 16, &port);
	int l2 = t_listen(AF_INET, 16, &port);
	fds[nf++] = l1, fds[nf++] = l2;
	cr_assert_eq(fcntl(l1, F_SETFL, O_NONBLOCK), 0);
	cr_assert_eq(fcntl(l2, F_SETFL, O_NONBLOCK), 0);
	cr_assert_eq(rio_accept(loop, &e[K_ACCEPT].op, l1, NULL, NULL, 0,
				end_cb), 0);
	cr_assert_eq(rio_accept(loop, &e[K_ACCEPT_MULTI].op, l2, NULL, NULL,
				RIO_MULTISHOT, end_cb), 0);

	/* a connect that cannot finish: a listener whose queue is full */
	uint16_t fport;
	int filler;
	int fl = t_full_listener(&fport, &filler);
	fds[nf++] = fl, fds[nf++] = filler;
	struct sockaddr_storage fss;
	socklen_t flen = t_loopback(AF_INET, fport, &fss);
	int cfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
			 0);
	cr_assert(cfd >= 0);
	fds[nf++] = cfd;
	cr_assert_eq(rio_connect(loop, &e[K_CONNECT].op, cfd,
				 (struct sockaddr *)&fss, flen, end_cb), 0);

	cr_assert_eq(rio_timeout(loop, &e[K_TIMEOUT].op, 60000 * T_MS,
				 end_cb), 0);
	cr_assert_eq(rio_poll(loop, &e[K_POLL].op, b, POLLIN, end_cb), 0);

	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGUSR2);
	cr_assert_eq(pthread_sigmask(SIG_BLOCK, &set, NULL), 0);
	cr_assert_eq(rio_signal(loop, &e[K_SIGNAL].op, RIO_SIG(SIGUSR2),
				end_cb), 0);
	cr_assert_eq(rio_wakeup_start(loop, &e[K_WAKEUP].op, end_cb), 0);

	int pp[2];
	cr_assert_eq(pipe2(pp, O_NONBLOCK | O_CLOEXEC), 0);
	fds[nf++] = pp[0], fds[nf++] = pp[1];
	cr_assert_eq(rio_read(loop, &e[K_READ].op, pp[0], rbuf, sizeof rbuf,
			      end_cb), 0);

	rio_bufpool *dpool = t_bufpool(loop, 4, 2048 + RIO_DGRAM_HEADROOM);
	int u = rio_bind_udp("127.0.0.1", 0, 0);
	cr_assert(u >= 0, "rio_bind_udp: %s", rio_strerror(u));
	fds[nf++] = u;
	cr_assert_eq(rio_recvmsg_multishot(loop, &e[K_DGRAMS].op, u, dpool, 0,
					   end_cb), 0);

	/* a multishot recv whose one buffer the test keeps: starved */
	rio_bufpool *one = t_bufpool(loop, 1, 512);
	int q, r;
	t_pair(&q, &r);
	fds[nf++] = q, fds[nf++] = r;
	cr_assert_eq(rio_recv_multishot(loop, &e[K_STARVED].op, q, one,
					end_cb), 0);
	cr_assert_eq(write(r, "first", 5), 5);
	T_RUN_UNTIL(loop, e[K_STARVED].more == 1, 5000);
	uint16_t kept = e[K_STARVED].op.buf_id;
	cr_assert_eq(write(r, "second", 6), 6);
	t_loop_sleep(loop, 100); /* the recv finds the pool dry */
	cr_assert_eq(e[K_STARVED].more, 1, "received without a buffer");

	struct msghdr mh = {0};
	struct iovec iov = {rbuf, sizeof rbuf};
	mh.msg_iov = &iov;
	mh.msg_iovlen = 1;
	cr_assert_eq(rio_recvmsg(loop, &e[K_RECVMSG].op, d, &mh, 0, end_cb),
		     0);

	/* a relay between two idle pairs, a connect_any that cannot
	 * connect, a listener */
	t_pair(&x, &g);
	t_pair(&y, &h);
	fds[nf++] = x, fds[nf++] = y, fds[nf++] = g, fds[nf++] = h;
	static rio_relay rl;
	memset(&relay_end, 0, sizeof relay_end);
	memset(&any_end, 0, sizeof any_end);
	relay_end.close_fd = any_end.close_fd = -1;
	rio_relay_opts ro = {.pool = pool};
	cr_assert_eq(rio_relay_start(loop, &rl, x, y, &ro, relay_cb), 0);

	rio_addr ua;
	char text[64];
	snprintf(text, sizeof text, "127.0.0.1:%u", fport);
	cr_assert_eq(rio_addr_parse(text, &ua), 0);
	rio_upstreams *ups;
	cr_assert_eq(rio_upstreams_create(&ua, 1, NULL, &ups), 0);
	static rio_connector conn;
	cr_assert_eq(rio_connect_any(loop, &conn, ups, any_cb), 0);

	int l3 = t_listen(AF_INET, 16, &port);
	fds[nf++] = l3;
	cr_assert_eq(fcntl(l3, F_SETFL, O_NONBLOCK), 0);
	t_lis ls = {0};
	rio_listener_opts lo = {.on_accept = lis_accept, .on_stop = lis_stop,
				.data = &ls};
	rio_listener *lis;
	cr_assert_eq(rio_listener_start(loop, l3, &lo, &lis), 0);

	t_loop_sleep(loop, 50); /* everything armed and waiting */
	for (int i = 0; i < K_N; i++)
		cr_assert_eq(e[i].finals, 0, "%s ended early: %d", kname[i],
			     e[i].res);
	cr_assert_eq(relay_end.finals + any_end.finals + ls.stops, 0);

	cr_assert_eq(rio_loop_cancel_all(loop), 0);
	for (int i = 0; i < K_N; i++)
		cr_assert_eq(e[i].finals, 0, "%s ended inside the call",
			     kname[i]);
	cr_assert_eq(relay_end.finals + any_end.finals + ls.stops, 0);

	T_RUN_UNTIL(loop, relay_end.finals && any_end.finals && ls.stops &&
			  e[K_RECVMSG].finals && e[K_WAKEUP].finals &&
			  e[K_SIGNAL].finals && e[K_TIMEOUT].finals,
		    5000);
	/* and the loop ends by itself: nothing is left in flight */
	cr_assert_eq(rio_loop_run(loop, RIO_RUN_DEFAULT), 0);
	for (int i = 0; i < K_N; i++) {
		cr_assert_eq(e[i].finals, 1, "%s: %d final completions",
			     kname[i], e[i].finals);
		cr_assert_eq(e[i].res, -ECANCELED, "%s ended with %s",
			     kname[i], rio_strerror(e[i].res));
		cr_assert_eq(e[i].flags & RIO_OP_F_MORE, 0);
		cr_assert_eq(rio_op_in_flight(&e[i].op), 0);
	}
	cr_assert_eq(e[K_STARVED].more, 1);
	cr_assert_eq(relay_end.finals, 1);
	cr_assert_eq(relay_end.res, -ECANCELED, "relay: %s",
		     rio_strerror(relay_end.res));
	cr_assert_eq(any_end.finals, 1);
	cr_assert_eq(any_end.res, -ECANCELED, "connect_any: %s",
		     rio_strerror(any_end.res));
	cr_assert_eq(ls.stops, 1);
	cr_assert_eq(ls.err, -ECANCELED);
	cr_assert_eq(rio_listener_destroy(lis), 0);

	/* nothing more to end: a second call changes nothing */
	cr_assert_eq(rio_loop_cancel_all(loop), 0);
	cr_assert_eq(rio_loop_run(loop, RIO_RUN_NOWAIT), 0);

	cr_assert_eq(rio_bufpool_put(one, kept), 0);
	cr_assert_eq(rio_upstreams_destroy(ups), 0);
	rio_bufpool_destroy(one);
	rio_bufpool_destroy(dpool);
	rio_bufpool_destroy(pool);
	for (int i = 0; i < nf; i++)
		close(fds[i]);
	cr_assert_eq(pthread_sigmask(SIG_UNBLOCK, &set, NULL), 0);
	t_loop_done(loop);
	free(e);
}

/* Results decided before the cancel-all are delivered as they are: bytes
 * already received, a connection already queued. Every callback closes
 * its socket through the loop, and those closes (submitted after the
 * call) complete normally, as does a timeout submitted after it. */
Test(cancel_all, delivers_what_was_decided_and_leaves_later_ops, .timeout = 30)
{
	rio_loop *loop = t_loop();
	t_end *e = ends_new(3);
	int a, b;
	uint16_t port;
	t_pair(&a, &b);
	int l = t_listen(AF_INET, 16, &port);
	cr_assert_eq(fcntl(l, F_SETFL, O_NONBLOCK), 0);
	int c = t_connect(AF_INET, port);
	cr_assert_eq(write(b, "ready", 5), 5);
	usleep(20000); /* the bytes are in a's queue, the connection in l's */
	char buf[16], buf2[16];
	struct sockaddr_storage peer;
	socklen_t plen = sizeof peer;
	e[0].close_fd = a;
	cr_assert_eq(rio_recv(loop, &e[0].op, a, buf, sizeof buf, 0, end_cb),
		     0);
	e[1].close_fd = l;
	cr_assert_eq(rio_accept(loop, &e[1].op, l, (struct sockaddr *)&peer,
				&plen, 0, end_cb), 0);
	e[2].close_fd = b;
	cr_assert_eq(rio_recv(loop, &e[2].op, b, buf2, sizeof buf2, 0,
			      end_cb), 0);

	cr_assert_eq(rio_loop_cancel_all(loop), 0);
	/* submitted after the call: not touched */
	t_end later = {.close_fd = -1};
	cr_assert_eq(rio_timeout(loop, &later.op, 30 * T_MS, end_cb), 0);

	T_RUN_UNTIL(loop, e[0].closed && e[1].closed && e[2].closed &&
			  later.finals, 5000);
	cr_assert_eq(rio_loop_run(loop, RIO_RUN_DEFAULT), 0);
	cr_assert_eq(e[0].finals, 1);
	cr_assert_eq(e[0].res, 5, "the bytes received: %s",
		     rio_strerror(e[0].res));
	cr_assert_eq(memcmp(buf, "ready", 5), 0);
	cr_assert_eq(e[1].finals, 1);
	cr_assert_geq(e[1].res, 0, "the queued connection: %s",
		      rio_strerror(e[1].res));
	close(e[1].res);
	cr_assert_eq(e[2].finals, 1);
	cr_assert_eq(e[2].res, -ECANCELED, "the idle recv: %d %s", e[2].res,
		     rio_strerror(e[2].res));
	for (int i = 0; i < 3; i++) {
		cr_assert_eq(e[i].closed, 1, "op %d's close", i);
		cr_assert_eq(e[i].close_res, 0, "op %d's close: %s", i,
			     rio_strerror(e[i].close_res));
	}
	cr_assert_eq(later.finals, 1);
	cr_assert_eq(later.res, 0, "the later timeout: %s",
		     rio_strerror(later.res));
	close(c);
	t_loop_done(loop);
	free(e);
}

/* A cancel of the caller's own on the way: both end once, the cancel
 * with 0, its target with -ECANCELED. */
Test(cancel_all, beside_a_cancel_of_the_callers, .timeout = 30)
{
	rio_loop *loop = t_loop();
	t_end *e = ends_new(2);
	int a, b;
	t_pair(&a, &b);
	char buf[16];
	cr_assert_eq(rio_recv(loop, &e[0].op, a, buf, sizeof buf, 0, end_cb),
		     0);
	t_loop_sleep(loop, 10);
	cr_assert_eq(rio_cancel(loop, &e[1].op, &e[0].op, end_cb), 0);
	cr_assert_eq(rio_loop_cancel_all(loop), 0);
	T_RUN_UNTIL(loop, e[0].finals && e[1].finals, 5000);
	cr_assert_eq(rio_loop_run(loop, RIO_RUN_DEFAULT), 0);
	cr_assert_eq(e[0].finals, 1);
	cr_assert_eq(e[0].res, -ECANCELED);
	cr_assert_eq(e[1].finals, 1);
	cr_assert_eq(e[1].res, 0, "the caller's cancel: %s",
		     rio_strerror(e[1].res));
	close(a);
	close(b);
	t_loop_done(loop);
	free(e);
}

/* Before the first run, with more ops than the SQ has room for (the rest
 * wait in user space on io_uring), on the creating thread: all end. */
Test(cancel_all, before_the_first_run_with_a_full_sq, .timeout = 30)
{
	enum { N = 24 };
	rio_loop *loop = t_loop_opts(4, 8);
	t_end *e = ends_new(N);
	int a[N], b[N];
	char buf[N][8];
	for (int i = 0; i < N; i++) {
		t_pair(&a[i], &b[i]);
		cr_assert_eq(rio_recv(loop, &e[i].op, a[i], buf[i],
				      sizeof buf[i], 0, end_cb), 0);
	}
	cr_assert_eq(rio_loop_cancel_all(loop), 0);
	T_RUN_UNTIL(loop, e[N - 1].finals, 5000);
	cr_assert_eq(rio_loop_run(loop, RIO_RUN_DEFAULT), 0);
	for (int i = 0; i < N; i++) {
		cr_assert_eq(e[i].finals, 1, "recv %d: %d", i, e[i].finals);
		cr_assert_eq(e[i].res, -ECANCELED, "recv %d: %s", i,
			     rio_strerror(e[i].res));
		close(a[i]);
		close(b[i]);
	}
	t_loop_done(loop);
	free(e);
}

static void *other_thread(void *arg)
{
	return (void *)(intptr_t)rio_loop_cancel_all(arg);
}

Test(cancel_all, refusals, .timeout = 30)
{
	cr_assert_eq(rio_loop_cancel_all(NULL), -EINVAL);
	rio_loop *loop = t_loop();
	cr_assert_eq(rio_loop_cancel_all(loop), 0, "nothing in flight");
	cr_assert_eq(rio_loop_run(loop, RIO_RUN_NOWAIT), 0);
	t_end t = {.close_fd = -1};
	cr_assert_eq(rio_timeout(loop, &t.op, 60000 * T_MS, end_cb), 0);
	pthread_t th;
	void *ret;
	cr_assert_eq(pthread_create(&th, NULL, other_thread, loop), 0);
	cr_assert_eq(pthread_join(th, &ret), 0);
	cr_assert_eq((intptr_t)ret, -EPERM, "from another thread: %s",
		     rio_strerror((int)(intptr_t)ret));
	cr_assert_eq(rio_loop_cancel_all(loop), 0);
	T_RUN_UNTIL(loop, t.finals, 5000);
	cr_assert_eq(t.res, -ECANCELED);
	t_loop_done(loop);
}

/* The forced stop as ringio(7) has it: a signal op's callback calls it,
 * from inside a turn. The signal op is among what it ends (its final
 * completion after the signal's), and so are the ops beside it. */
static t_end sig_end;
static int sig_seen;

static void sig_cb(rio_loop *loop, rio_op *op, int res)
{
	if (op->flags & RIO_OP_F_MORE) {
		cr_assert_eq(res, SIGUSR1);
		sig_seen++;
		cr_assert_eq(rio_loop_cancel_all(loop), 0);
		return;
	}
	end_cb(loop, &sig_end.op, res);
}

Test(cancel_all, from_a_signal_ops_callback, .timeout = 30)
{
	rio_loop *loop = t_loop();
	t_end *e = ends_new(2);
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGUSR1);
	cr_assert_eq(pthread_sigmask(SIG_BLOCK, &set, NULL), 0);
	memset(&sig_end, 0, sizeof sig_end);
	sig_end.close_fd = -1;
	sig_seen = 0;
	rio_op sop;
	rio_op_init(&sop);
	cr_assert_eq(rio_signal(loop, &sop, RIO_SIG(SIGUSR1), sig_cb), 0);
	int a, b;
	t_pair(&a, &b);
	char buf[8];
	cr_assert_eq(rio_recv(loop, &e[0].op, a, buf, sizeof buf, 0, end_cb),
		     0);
	cr_assert_eq(rio_timeout(loop, &e[1].op, 60000 * T_MS, end_cb), 0);
	t_loop_sleep(loop, 20);
	cr_assert_eq(kill(getpid(), SIGUSR1), 0);
	T_RUN_UNTIL(loop, sig_end.finals && e[0].finals && e[1].finals, 5000);
	cr_assert_eq(rio_loop_run(loop, RIO_RUN_DEFAULT), 0);
	cr_assert_eq(sig_seen, 1);
	cr_assert_eq(sig_end.finals, 1);
	cr_assert_eq(sig_end.res, -ECANCELED);
	for (int i = 0; i < 2; i++) {
		cr_assert_eq(e[i].finals, 1);
		cr_assert_eq(e[i].res, -ECANCELED, "op %d: %s", i,
			     rio_strerror(e[i].res));
	}
	close(a);
	close(b);
	cr_assert_eq(pthread_sigmask(SIG_UNBLOCK, &set, NULL), 0);
	t_loop_done(loop);
	free(e);
}

/*
 * Datagrams through the loop, on every backend: rio_recvmsg_multishot
 * (each datagram with its sender, control data and real length, in a pool
 * buffer), rio_sendto, and the datagram socket helpers. 100,000 datagrams
 * of 0..1472 bytes with none lost and every byte checked; truncation; a
 * dry pool; many receives on one socket; senders' addresses over IPv4,
 * IPv6, dual-stack and unix names; control data (IP_PKTINFO, SCM_RIGHTS,
 * MSG_CTRUNC); a send into a full socket waits; what is refused.
 */
#include "common.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

/* A pool buffer's room for payload with `control` bytes of control data. */
static size_t room(size_t size, size_t control)
{
	return size - RIO_DGRAM_HEADROOM - ((control + 7) & ~(size_t)7);
}

static bool same_addr(const struct sockaddr *a, socklen_t al,
		      const struct sockaddr_storage *b, socklen_t bl)
{
	return a && al == bl && memcmp(a, b, bl) == 0;
}

static socklen_t local_addr(int fd, struct sockaddr_storage *ss)
{
	socklen_t len = sizeof *ss;
	memset(ss, 0, sizeof *ss);
	cr_assert_eq(getsockname(fd, (struct sockaddr *)ss, &len), 0, "%s",
		     strerror(errno));
	return len;
}

/* ---- a flow: datagram i is dg_len(i) bytes of pattern i, in order ---- */

enum { SLOTS = 32, BIG = 1472 };

struct flow;

struct slot {
	rio_op op;
	struct flow *f;
	int busy;
	uint8_t buf[BIG];
};

struct flow {
	rio_loop *loop;
	int tx, rx;
	struct sockaddr_storage to, from;
	socklen_t tolen, fromlen;
	uint64_t total, sent, got;
	unsigned window;
	rio_bufpool *pool;
	rio_op recv;
	int finals, final_res;
	int bad;
	char why[200];
	uint64_t at;                   /* when got reaches it: */
	void (*at_fn)(struct flow *f); /* ...this runs, once */
	struct slot slots[SLOTS];
};

static size_t dg_len(uint64_t i)
{
	return (size_t)((i * 7919u) % (BIG + 1));
}

static void flow_fail(struct flow *f, const char *fmt, uint64_t i,
		      long long a, long long b)
{
	if (f->bad++)
		return;
	snprintf(f->why, sizeof f->why, fmt, (unsigned long long)i, a, b);
}

static void flow_top_up(struct flow *f);

static void flow_sent(rio_loop *loop, rio_op *op, int res)
{
	(void)loop;
	struct slot *s = RIO_CONTAINER_OF(op, struct slot, op);
	s->busy = 0;
	if (res < 0)
		flow_fail(s->f, "send of a datagram (%llu sent): %lld %lld",
			  s->f->sent, res, 0);
	flow_top_up(s->f);
}

static void flow_top_up(struct flow *f)
{
	for (int k = 0; k < SLOTS && f->sent < f->total &&
			f->sent - f->got < f->window && !f->bad; k++) {
		struct slot *s = &f->slots[k];
		if (s->busy)
			continue;
		size_t len = dg_len(f->sent);
		t_pat_fill(s->buf, len, f->sent << 16);
		s->busy = 1;
		s->f = f;
		int r = rio_sendto(f->loop, &s->op, f->tx, s->buf, len, 0,
				   (struct sockaddr *)&f->to, f->tolen,
				   flow_sent);
		if (r) {
			flow_fail(f, "rio_sendto #%llu: %lld %lld", f->sent, r,
				  0);
			return;
		}
		f->sent++;
	}
}

static void flow_recv(rio_loop *loop, rio_op *op, int res)
{
	(void)loop;
	struct flow *f = op->data;
	if (!(op->flags & RIO_OP_F_MORE)) {
		f->finals++;
		f->final_res = res;
		return;
	}
	rio_dgram d;
	if (!(op->flags & RIO_OP_F_BUF) || rio_dgram_get(op, &d) != 0) {
		flow_fail(f, "datagram #%llu came without its buffer (%lld, "
			     "flags %llx)", f->got, res, op->flags);
		return;
	}
	uint64_t i = f->got++;
	if ((size_t)res != dg_len(i) || d.len != (size_t)res ||
	    d.full_len != (size_t)res || (op->flags & RIO_OP_F_TRUNC))
		flow_fail(f, "datagram #%llu: %lld bytes, sent %lld", i, res,
			  (long long)dg_len(i));
	else if (t_pat_check(d.data, d.len, i << 16) != d.len)
		flow_fail(f, "datagram #%llu: byte %lld of %lld differs", i,
			  (long long)t_pat_check(d.data, d.len, i << 16), res);
	else if (!same_addr(d.peer, d.peer_len, &f->from, f->fromlen))
		flow_fail(f, "datagram #%llu: sender of %lld bytes is not the "
			     "sender (len %lld)", i, res, d.peer_len);
	if (rio_bufpool_put(f->pool, op->buf_id) != 0)
		flow_fail(f, "datagram #%llu: buffer %lld not lent (%lld)", i,
			  op->buf_id, 0);
	if (f->at_fn && f->got == f->at) {
		f->at_fn(f);
		f->at_fn = NULL;
	}
	flow_top_up(f);
}

/* f->tx sends f->total datagrams to f->rx, `window` at most unreceived
 * (none may be lost: a loopback socket drops only past its receive
 * buffer, which the window keeps clear of). */
static void flow_run(struct flow *f, unsigned limit_ms)
{
	f->fromlen = local_addr(f->tx, &f->from);
	f->tolen = local_addr(f->rx, &f->to);
	f->recv.data = f;
	cr_assert_eq(rio_recvmsg_multishot(f->loop, &f->recv, f->rx, f->pool,
					   0, flow_recv), 0);
	flow_top_up(f);
	T_RUN_UNTIL(f->loop, f->got == f->total || f->bad || f->finals,
		    limit_ms);
	cr_assert_eq(f->bad, 0, "%s", f->why);
	cr_assert_eq(f->finals, 0, "the receive ended: %s",
		     rio_strerror(f->final_res));
	cr_assert_eq(f->got, f->total);
	t_rec c = {.calls = 0};
	cr_assert_eq(rio_cancel(f->loop, &c.op, &f->recv, t_rec_cb), 0);
	T_RUN_UNTIL(f->loop, f->finals == 1 && c.calls == 1, 5000);
	cr_assert_eq(f->final_res, -ECANCELED);
}

static void flow_udp(struct flow *f, rio_loop *loop, unsigned count)
{
	memset(f, 0, sizeof *f);
	f->loop = loop;
	f->total = 100000;
	f->window = SLOTS;
	f->pool = t_bufpool(loop, count, 2048);
	f->rx = rio_bind_udp("127.0.0.1", 0, 0);
	f->tx = rio_bind_udp(NULL, 0, 0);
	cr_assert_geq(f->rx, 0, "%s", rio_strerror(f->rx));
	cr_assert_geq(f->tx, 0, "%s", rio_strerror(f->tx));
}

static void flow_done(struct flow *f)
{
	close(f->tx);
	close(f->rx);
	cr_assert_eq(rio_bufpool_destroy(f->pool), 0);
	t_loop_done(f->loop);
}

Test(datagrams, hundred_thousand_datagrams_of_0_to_1472_bytes, .timeout = 120)
{
	static struct flow f;
	flow_udp(&f, t_loop(), 64);
	flow_run(&f, 90000);
	rio_counters c;
	rio_loop_counters(f.loop, &c);
	/* batched: a turn takes many datagrams, not one enter each */
	cr_assert_lt(c.enters, f.total, "%llu enters for %llu datagrams",
		     (unsigned long long)c.enters,
		     (unsigned long long)f.total);
	flow_done(&f);
}

/* Kernels before 6.0 take no address with IORING_OP_SEND: the datagram
 * goes as a sendmsg there (a fault plan makes this kernel do the same).
 * The other backends run the flow as they always do. */
Test(datagrams, sends_go_as_sendmsg_where_send_takes_no_address, .timeout = 60)
{
	static struct flow f;
	cr_assert_eq(setenv("RINGIO_FAULTS", "seed=5,old_send=1000", 1), 0);
	rio_loop *loop = t_loop();
	unsetenv("RINGIO_FAULTS");
	flow_udp(&f, loop, 64);
	f.total = 5000;
	flow_run(&f, 30000);
	flow_done(&f);
}

/* A stream's multishot recv on the flow's pool, beside its datagrams
 * (io_uring: from here on the kernel picks the pool's buffers, so the
 * datagrams come one CQE each instead of in recvmmsg batches). */
static struct stream_share {
	int sv[2];
	t_rec rec;
	int bytes, bad;
} share;

static void share_cb(rio_loop *loop, rio_op *op, int res)
{
	(void)loop;
	if (!(op->flags & RIO_OP_F_MORE)) {
		t_rec_cb(loop, op, res);
		return;
	}
	if (res <= 0 || !(op->flags & RIO_OP_F_BUF) ||
	    memcmp(op->buf, "stream", (size_t)res > 6 ? 6 : (size_t)res))
		share.bad++;
	share.bytes += res;
	if (rio_bufpool_put(((struct flow *)op->data)->pool, op->buf_id))
		share.bad++;
}

static void share_start(struct flow *f)
{
	memset(&share, 0, sizeof share);
	cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0,
				share.sv), 0);
	share.rec.op.data = f;
	cr_assert_eq(rio_recv_multishot(f->loop, &share.rec.op, share.sv[0],
					f->pool, share_cb), 0);
	cr_assert_eq(write(share.sv[1], "stream", 6), 6);
}

static void share_end(struct flow *f)
{
	cr_assert_eq(share.bad, 0);
	cr_assert_eq(share.bytes, 6);
	cr_assert_eq(share.rec.calls, 0, "the stream's recv ended: %s",
		     rio_strerror(share.rec.res));
	t_rec c = {.calls = 0};
	cr_assert_eq(rio_cancel(f->loop, &c.op, &share.rec.op, t_rec_cb), 0);
	T_RUN_UNTIL(f->loop, share.rec.calls == 1 && c.calls == 1, 5000);
	cr_assert_eq(share.rec.res, -ECANCELED);
	close(share.sv[0]);
	close(share.sv[1]);
}

/* A pool that also serves a stream: its datagrams arrive the same, none
 * lost, whether the stream came first or in the middle of them. */
Test(datagrams, a_pool_shared_with_a_stream_serves_datagrams_the_same,
     .timeout = 60)
{
	static struct flow f;
	flow_udp(&f, t_loop(), 64);
	f.total = 20000;
	share_start(&f);
	flow_run(&f, 30000);
	share_end(&f);
	flow_done(&f);

	flow_udp(&f, t_loop(), 64);
	f.total = 20000;
	f.at = 5000;
	f.at_fn = share_start;
	flow_run(&f, 30000);
	cr_assert_null(f.at_fn, "the stream never started");
	share_end(&f);
	flow_done(&f);
}

/* ---- one datagram at a time, from a plain socket ---- */

typedef struct t_got {
	rio_op op;
	rio_bufpool *pool;
	int hold;           /* keep the buffers */
	uint16_t held[64];
	int nheld;
	int n, finals, final_res;
	int res[64];
	unsigned flags[64];
	rio_dgram d[64];
	uint8_t data[64][64]; /* the first bytes of each */
	struct sockaddr_storage peer[64];
	int stop_at, stop_fd; /* at the stop_at'th datagram: a cancel of the */
	int stop_close;       /* receive, or a close of stop_fd, submitted */
	t_rec stopper;        /* from its callback */
	int late;             /* datagrams after the final completion */
} t_got;

static void got_cb(rio_loop *loop, rio_op *op, int res)
{
	(void)loop;
	t_got *g = RIO_CONTAINER_OF(op, t_got, op);
	if (!(op->flags & RIO_OP_F_MORE)) {
		g->finals++;
		g->final_res = res;
		return;
	}
	cr_assert_lt(g->n, 64);
	g->late += g->finals;
	int i = g->n++;
	g->res[i] = res;
	g->flags[i] = op->flags;
	cr_assert_eq(rio_dgram_get(op, &g->d[i]), 0);
	memcpy(g->data[i], op->buf, res < 64 ? (size_t)res : 64);
	if (g->d[i].peer)
		memcpy(&g->peer[i], g->d[i].peer, g->d[i].peer_len);
	if (g->hold)
		g->held[g->nheld++] = op->buf_id;
	else
		cr_assert_eq(rio_bufpool_put(g->pool, op->buf_id), 0);
	if (g->n == g->stop_at)
		cr_assert_eq(g->stop_close
				     ? rio_close(loop, &g->stopper.op, g->stop_fd,
						 t_rec_cb)
				     : rio_cancel(loop, &g->stopper.op, &g->op,
						  t_rec_cb),
			     0);
}

static void got_start(rio_loop *loop, t_got *g, int fd, size_t control)
{
	cr_assert_eq(rio_recvmsg_multishot(loop, &g->op, fd, g->pool, control,
					   got_cb), 0);
}

static void got_end(rio_loop *loop, t_got *g)
{
	t_rec c = {.calls = 0};
	cr_assert_eq(rio_cancel(loop, &c.op, &g->op, t_rec_cb), 0);
	T_RUN_UNTIL(loop, g->finals == 1 && c.calls == 1, 5000);
	cr_assert_eq(g->final_res, -ECANCELED);
	for (int i = 0; i < g->nheld; i++)
		cr_assert_eq(rio_bufpool_put(g->pool, g->held[i]), 0);
	g->nheld = 0;
}

/* The test's receiver: a pool of `count` buffers of `size` on loop. */
static t_got *got_new(rio_loop *loop, unsigned count, size_t size, int hold)
{
	static t_got g;
	memset(&g, 0, sizeof g);
	g.pool = t_bufpool(loop, count, size);
	g.hold = hold;
	return &g;
}

/* End the receive, free its pool and the loop. */
static void got_done(rio_loop *loop, t_got *g)
{
	got_end(loop, g);
	cr_assert_eq(rio_bufpool_destroy(g->pool), 0);
	t_loop_done(loop);
}

/* A blocking UDP socket on 127.0.0.1 (the test's own sender). */
static int plain_udp(void)
{
	int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	cr_assert_geq(fd, 0);
	struct sockaddr_in a = {.sin_family = AF_INET,
				.sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	cr_assert_eq(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
	t_timeouts(fd, 5);
	return fd;
}

static void send_to(int fd, int to_fd, const void *buf, size_t len)
{
	struct sockaddr_storage ss;
	socklen_t l = local_addr(to_fd, &ss);
	cr_assert_eq(sendto(fd, buf, len, 0, (struct sockaddr *)&ss, l),
		     (ssize_t)len, "%s", strerror(errno));
}

/* A cancel, or a close of the socket, from a datagram's callback ends the
 * receive after the datagrams that had been taken with it (none after
 * its final completion); after a cancel, the rest wait in the socket for
 * the next receive, in order. */
Test(datagrams, a_cancel_or_close_from_a_datagrams_callback_ends_it,
     .timeout = 20)
{
	for (int how = 0; how < 2; how++) {
		rio_loop *loop = t_loop();
		t_got *g = got_new(loop, 16, 512, 0);
		int rx = rio_bind_udp(NULL, 0, 0), tx = plain_udp();
		char msg[16];
		for (int i = 0; i < 5; i++) {
			snprintf(msg, sizeof msg, "d%d", i);
			send_to(tx, rx, msg, 3);
		}
		g->stop_at = 1;
		g->stop_close = how;
		g->stop_fd = rx;
		got_start(loop, g, rx, 0);
		T_RUN_UNTIL(loop, g->finals == 1 && g->stopper.calls == 1,
			    5000);
		cr_assert_eq(g->final_res, -ECANCELED, "%d after %d: %s",
			     g->final_res, g->n, rio_strerror(g->final_res));
		cr_assert_eq(g->stopper.res, 0, "%s: %s",
			     how ? "the close" : "the cancel",
			     rio_strerror(g->stopper.res));
		t_drain(loop, 50);
		cr_assert_eq(g->late, 0, "%d datagrams after the final", g->late);
		cr_assert_eq(g->finals, 1);
		int taken = g->n;
		cr_assert(taken >= 1 && taken <= 5, "%d datagrams", taken);
		if (!how) { /* the rest, for the next receive */
			g->stop_at = 0;
			g->finals = 0;
			got_start(loop, g, rx, 0);
			T_RUN_UNTIL(loop, g->n == 5, 5000);
			t_loop_sleep(loop, 50);
			cr_assert_eq(g->n, 5, "%d datagrams, then %d", taken,
				     g->n - taken);
		}
		for (int i = 0; i < g->n; i++) {
			snprintf(msg, sizeof msg, "d%d", i);
			cr_assert_eq(memcmp(g->data[i], msg, 3), 0,
				     "datagram %d is %.3s", i, g->data[i]);
		}
		close(tx);
		if (!how) { /* the close closed rx */
			got_end(loop, g);
			close(rx);
		}
		cr_assert_eq(rio_bufpool_destroy(g->pool), 0);
		t_loop_done(loop);
	}
}

Test(datagrams, an_empty_datagram_is_a_datagram, .timeout = 20)
{
	rio_loop *loop = t_loop();
	t_got *g = got_new(loop, 8, 512, 0);
	int rx = rio_bind_udp(NULL, 0, 0), tx = plain_udp();
	got_start(loop, g, rx, 0);
	send_to(tx, rx, "", 0);
	send_to(tx, rx, "hello", 5);
	send_to(tx, rx, "", 0);
	T_RUN_UNTIL(loop, g->n == 3, 5000);
	struct sockaddr_storage from;
	socklen_t fl = local_addr(tx, &from);
	int want[3] = {0, 5, 0};
	for (int i = 0; i < 3; i++) {
		cr_assert_eq(g->res[i], want[i], "datagram %d: %d", i, g->res[i]);
		cr_assert_eq(g->flags[i], RIO_OP_F_MORE | RIO_OP_F_BUF,
			     "datagram %d: flags %x", i, g->flags[i]);
		cr_assert_eq(g->d[i].len, (size_t)want[i]);
		cr_assert_eq(g->d[i].full_len, (size_t)want[i]);
		cr_assert(same_addr((struct sockaddr *)&g->peer[i],
				    g->d[i].peer_len, &from, fl));
	}
	cr_assert_eq(memcmp(g->data[1], "hello", 5), 0);
	cr_assert_eq(g->finals, 0, "an empty datagram ended the receive");
	close(rx);
	close(tx);
	got_done(loop, g);
}

Test(datagrams, a_datagram_longer_than_its_buffer_is_cut_and_says_so,
     .timeout = 20)
{
	rio_loop *loop = t_loop();
	t_got *g = got_new(loop, 8, 256, 0);
	int rx = rio_bind_udp(NULL, 0, 0), tx = plain_udp();
	/* 16 bytes of room for control data: 256 - 144 - 16 = 96 of payload */
	size_t fit = room(256, 13);
	cr_assert_eq(fit, 96);
	got_start(loop, g, rx, 13);
	uint8_t big[500];
	t_pat_fill(big, sizeof big, 0);
	send_to(tx, rx, big, sizeof big);
	send_to(tx, rx, big, fit);
	send_to(tx, rx, big, fit + 1);
	T_RUN_UNTIL(loop, g->n == 3, 5000);
	size_t sent[3] = {sizeof big, fit, fit + 1};
	for (int i = 0; i < 3; i++) {
		int cut = sent[i] > fit;
		cr_assert_eq(g->res[i], (int)fit, "datagram %d: %d", i, g->res[i]);
		cr_assert_eq(!!(g->flags[i] & RIO_OP_F_TRUNC), cut,
			     "datagram %d of %zu: flags %x", i, sent[i],
			     g->flags[i]);
		cr_assert_eq(!!(g->d[i].msg_flags & MSG_TRUNC), cut);
		cr_assert_eq(g->d[i].full_len, sent[i], "datagram %d: %zu", i,
			     g->d[i].full_len);
		cr_assert_eq(t_pat_check(g->data[i], 64, 0), 64);
	}
	close(rx);
	close(tx);
	got_done(loop, g);
}

Test(datagrams, a_dry_pool_parks_the_receive_and_loses_nothing, .timeout = 20)
{
	rio_loop *loop = t_loop();
	t_got *g = got_new(loop, 2, 256, 1);
	int rx = rio_bind_udp(NULL, 0, 0), tx = plain_udp();
	got_start(loop, g, rx, 0);
	for (uint8_t i = 0; i < 6; i++)
		send_to(tx, rx, &i, 1);
	T_RUN_UNTIL(loop, g->n == 2, 5000);
	t_loop_sleep(loop, 100);
	cr_assert_eq(g->n, 2, "%d datagrams in a pool of 2", g->n);
	cr_assert_eq(g->finals, 0, "a dry pool ended the receive: %s",
		     rio_strerror(g->final_res));
	cr_assert_eq(rio_op_in_flight(&g->op), 1);
	/* one buffer back: one more datagram */
	cr_assert_eq(rio_bufpool_put(g->pool, g->held[0]), 0);
	g->held[0] = g->held[--g->nheld];
	T_RUN_UNTIL(loop, g->n == 3, 5000);
	t_loop_sleep(loop, 50);
	cr_assert_eq(g->n, 3);
	/* all back, and kept back: the rest */
	g->hold = 0;
	for (int i = 0; i < g->nheld; i++)
		cr_assert_eq(rio_bufpool_put(g->pool, g->held[i]), 0);
	g->nheld = 0;
	T_RUN_UNTIL(loop, g->n == 6, 5000);
	for (int i = 0; i < 6; i++) {
		cr_assert_eq(g->res[i], 1);
		cr_assert_eq(g->data[i][0], i, "datagram %d is #%d", i,
			     g->data[i][0]);
	}
	rio_counters c;
	rio_loop_counters(loop, &c);
	cr_assert_geq(c.enobufs_rearms, 1);
	close(rx);
	close(tx);
	got_done(loop, g);
}

/* ---- many receives on one socket ---- */

enum { NRECV = 8, NONESHOT = 4, MANY = 3000 };

struct many {
	rio_op multi[NRECV];
	rio_op one[NONESHOT];
	struct msghdr msg[NONESHOT];
	struct iovec iov[NONESHOT];
	uint32_t val[NONESHOT];
	rio_bufpool *pool;
	int fd;
	uint8_t seen[MANY];
	int dup, finals, final_bad, got, one_done;
};

static struct many M;

static void note(uint32_t v)
{
	if (v >= MANY || M.seen[v]++)
		M.dup++;
	else
		M.got++;
}

static void many_multi_cb(rio_loop *loop, rio_op *op, int res)
{
	(void)loop;
	if (!(op->flags & RIO_OP_F_MORE)) {
		M.finals++;
		M.final_bad += res != -ECANCELED;
		return;
	}
	uint32_t v = UINT32_MAX;
	if (res == 4)
		memcpy(&v, op->buf, 4);
	note(v);
	rio_bufpool_put(M.pool, op->buf_id);
}

static void many_one_cb(rio_loop *loop, rio_op *op, int res)
{
	int k = (int)(op - M.one);
	if (res == -ECANCELED) {
		M.one_done++;
		return;
	}
	note(res == 4 ? M.val[k] : UINT32_MAX);
	M.msg[k].msg_iov = &M.iov[k];
	M.msg[k].msg_iovlen = 1;
	cr_assert_eq(rio_recvmsg(loop, op, M.fd, &M.msg[k], 0, many_one_cb), 0);
}

Test(datagrams, many_receives_pending_on_one_socket_share_the_datagrams,
     .timeout = 60)
{
	rio_loop *loop = t_loop();
	memset(&M, 0, sizeof M);
	M.pool = t_bufpool(loop, 64, 256);
	M.fd = rio_bind_udp(NULL, 0, 0);
	int rcv = 1 << 20;
	setsockopt(M.fd, SOL_SOCKET, SO_RCVBUF, &rcv, sizeof rcv);
	int tx = plain_udp();
	for (int k = 0; k < NRECV; k++)
		cr_assert_eq(rio_recvmsg_multishot(loop, &M.multi[k], M.fd,
						   M.pool, 0, many_multi_cb),
			     0);
	for (int k = 0; k < NONESHOT; k++) {
		M.iov[k] = (struct iovec){&M.val[k], sizeof M.val[k]};
		M.msg[k].msg_iov = &M.iov[k];
		M.msg[k].msg_iovlen = 1;
		cr_assert_eq(rio_recvmsg(loop, &M.one[k], M.fd, &M.msg[k], 0,
					 many_one_cb), 0);
	}
	/* in rounds of 100, each received before the next: nothing dropped */
	for (uint32_t v = 0; v < MANY;) {
		for (int i = 0; i < 100; i++, v++)
			send_to(tx, M.fd, &v, 4);
		T_RUN_UNTIL(loop, M.got + M.dup >= (int)v, 10000);
	}
	cr_assert_eq(M.dup, 0, "%d datagrams delivered twice (or mangled)",
		     M.dup);
	cr_assert_eq(M.got, MANY);
	/* a close through the loop ends every one of them, once */
	t_rec cl = {.calls = 0};
	cr_assert_eq(rio_close(loop, &cl.op, M.fd, t_rec_cb), 0);
	T_RUN_UNTIL(loop, cl.calls == 1, 5000);
	cr_assert_eq(cl.res, 0);
	cr_assert_eq(M.finals, NRECV);
	cr_assert_eq(M.final_bad, 0);
	cr_assert_eq(M.one_done, NONESHOT);
	close(tx);
	cr_assert_eq(rio_bufpool_destroy(M.pool), 0);
	t_loop_done(loop);
}

/* ---- senders' addresses, and replies to them ---- */

/* rx gets a datagram from tx through the loop; its sender must be tx's
 * address, and a reply by rio_sendto to that address must reach tx. */
static void reply_to_sender(int rx, int tx, const char *what)
{
	rio_loop *loop = t_loop();
	t_got *g = got_new(loop, 8, 512, 1);
	got_start(loop, g, rx, 0);
	struct sockaddr_storage to;
	socklen_t tl = local_addr(rx, &to);
	cr_assert_eq(sendto(tx, "ping", 4, 0, (struct sockaddr *)&to, tl), 4,
		     "%s: %s", what, strerror(errno));
	T_RUN_UNTIL(loop, g->n == 1, 5000);
	cr_assert_eq(g->res[0], 4);
	cr_assert_not_null(g->d[0].peer, "%s: no sender", what);
	struct sockaddr_storage from;
	socklen_t fl = local_addr(tx, &from);
	rio_addr a = {.len = g->d[0].peer_len};
	memcpy(&a.ss, g->d[0].peer, a.len);
	char text[128] = "?";
	rio_addr_format(&a, text, sizeof text);
	cr_assert(same_addr(g->d[0].peer, g->d[0].peer_len, &from, fl),
		  "%s: the sender reads as %s (len %u, want %u)", what, text,
		  g->d[0].peer_len, fl);
	/* the reply goes from the buffer to the address in it */
	t_rec s = {.calls = 0};
	cr_assert_eq(rio_sendto(loop, &s.op, rx, g->d[0].data, 4, 0,
				g->d[0].peer, g->d[0].peer_len, t_rec_cb), 0);
	T_RUN_UNTIL(loop, s.calls == 1, 5000);
	cr_assert_eq(s.res, 4, "%s: reply: %s", what, rio_strerror(s.res));
	char back[8];
	t_set_blocking(tx);
	t_timeouts(tx, 5);
	cr_assert_eq(recv(tx, back, sizeof back, 0), 4, "%s: %s", what,
		     strerror(errno));
	cr_assert_eq(memcmp(back, "ping", 4), 0);
	got_done(loop, g);
	close(rx);
	close(tx);
}

Test(datagrams, the_sender_of_an_ipv4_datagram_and_a_reply, .timeout = 20)
{
	int tx = rio_socket_dgram(AF_INET);
	cr_assert_geq(tx, 0);
	struct sockaddr_in a = {.sin_family = AF_INET,
				.sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	cr_assert_eq(bind(tx, (struct sockaddr *)&a, sizeof a), 0);
	reply_to_sender(rio_bind_udp("127.0.0.1", 0, 0), tx, "ipv4");
}

Test(datagrams, the_sender_of_an_ipv6_datagram_and_a_reply, .timeout = 20)
{
	if (!t_ipv6_loopback())
		cr_skip_test("this machine has no IPv6 loopback (::1)");
	int rx = rio_bind_udp("::1", 0, RIO_SOCK_V6ONLY);
	cr_assert_geq(rx, 0, "%s", rio_strerror(rx));
	reply_to_sender(rx, rio_bind_udp("::1", 0, 0), "ipv6");
}

Test(datagrams, a_dual_stack_socket_hears_ipv4_senders_mapped, .timeout = 20)
{
	if (!t_ipv6_loopback())
		cr_skip_test("this machine has no IPv6 loopback (::1)");
	int rx = rio_bind_udp("::", 0, 0);
	cr_assert_geq(rx, 0, "%s", rio_strerror(rx));
	/* to 127.0.0.1 at rx's port: reply_to_sender sends to rx's own
	 * address (::), which an IPv4 socket cannot; send here instead */
	int tx = plain_udp();
	struct sockaddr_in to = {.sin_family = AF_INET,
				 .sin_port = htons((uint16_t)rio_local_port(rx)),
				 .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	rio_loop *loop = t_loop();
	t_got *g = got_new(loop, 8, 512, 0);
	got_start(loop, g, rx, 0);
	cr_assert_eq(sendto(tx, "v4", 2, 0, (struct sockaddr *)&to, sizeof to),
		     2);
	T_RUN_UNTIL(loop, g->n == 1, 5000);
	const struct sockaddr_in6 *m = (const void *)&g->peer[0];
	cr_assert_eq(m->sin6_family, AF_INET6);
	cr_assert(IN6_IS_ADDR_V4MAPPED(&m->sin6_addr));
	cr_assert_eq(m->sin6_port, htons((uint16_t)rio_local_port(tx)));
	got_done(loop, g);
	close(rx);
	close(tx);
}

Test(datagrams, unix_datagrams_by_path_and_by_abstract_name, .timeout = 20)
{
	char dir[64], text[128];
	snprintf(dir, sizeof dir, "/tmp/ringio-test-XXXXXX");
	cr_assert_not_null(mkdtemp(dir));
	snprintf(text, sizeof text, "unix:%s/d.sock", dir);
	rio_addr a;
	cr_assert_eq(rio_addr_parse(text, &a), 0);
	int rx = rio_bind_dgram(&a, RIO_SOCK_UNLINK);
	cr_assert_geq(rx, 0, "%s", rio_strerror(rx));
	/* the client: autobound to an abstract name, so it can be answered */
	int tx = rio_socket_dgram(AF_UNIX);
	cr_assert_geq(tx, 0, "%s", rio_strerror(tx));
	reply_to_sender(rx, tx, "unix path");
	/* a stale file is taken over with RIO_SOCK_UNLINK only */
	rx = rio_bind_dgram(&a, 0);
	cr_assert_eq(rx, -EADDRINUSE, "%s", rio_strerror(rx));
	rx = rio_bind_dgram(&a, RIO_SOCK_UNLINK);
	cr_assert_geq(rx, 0, "%s", rio_strerror(rx));
	close(rx);
	cr_assert_eq(unlink(text + 5), 0);
	cr_assert_eq(rmdir(dir), 0);

	snprintf(text, sizeof text, "unix:@ringio-test-dgram-%d", getpid());
	cr_assert_eq(rio_addr_parse(text, &a), 0);
	rx = rio_bind_dgram(&a, 0);
	cr_assert_geq(rx, 0, "%s", rio_strerror(rx));
	/* a path-bound sender this time */
	snprintf(dir, sizeof dir, "/tmp/ringio-test-XXXXXX");
	cr_assert_not_null(mkdtemp(dir));
	snprintf(text, sizeof text, "unix:%s/c.sock", dir);
	rio_addr c;
	cr_assert_eq(rio_addr_parse(text, &c), 0);
	tx = rio_bind_dgram(&c, 0);
	cr_assert_geq(tx, 0, "%s", rio_strerror(tx));
	reply_to_sender(rx, tx, "unix abstract");
	cr_assert_eq(unlink(text + 5), 0);
	cr_assert_eq(rmdir(dir), 0);
}

/* ---- control data ---- */

Test(datagrams, control_data_comes_with_its_datagram, .timeout = 20)
{
	rio_loop *loop = t_loop();
	t_got *g = got_new(loop, 8, 512, 1);
	int rx = rio_bind_udp(NULL, 0, 0), tx = plain_udp();
	int on = 1;
	cr_assert_eq(setsockopt(rx, IPPROTO_IP, IP_PKTINFO, &on, sizeof on), 0);
	got_start(loop, g, rx, CMSG_SPACE(sizeof(struct in_pktinfo)));
	send_to(tx, rx, "pkt", 3);
	T_RUN_UNTIL(loop, g->n == 1, 5000);
	cr_assert_eq(g->res[0], 3);
	struct msghdr m = {.msg_control = g->d[0].control,
			   .msg_controllen = g->d[0].control_len};
	struct cmsghdr *cm = CMSG_FIRSTHDR(&m);
	cr_assert_not_null(cm, "no control data (%zu bytes)",
			   g->d[0].control_len);
	cr_assert_eq(cm->cmsg_level, IPPROTO_IP);
	cr_assert_eq(cm->cmsg_type, IP_PKTINFO);
	struct in_pktinfo pi;
	memcpy(&pi, CMSG_DATA(cm), sizeof pi);
	cr_assert_eq(pi.ipi_addr.s_addr, htonl(INADDR_LOOPBACK));
	cr_assert_eq(g->d[0].msg_flags & MSG_CTRUNC, 0);
	cr_assert_eq(memcmp(g->d[0].data, "pkt", 3), 0);
	got_done(loop, g);
	close(rx);
	close(tx);
}

static void send_fd(int sock, int fd)
{
	char c[CMSG_SPACE(sizeof(int))];
	memset(c, 0, sizeof c);
	struct iovec iov = {"fd", 2};
	struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1,
			   .msg_control = c, .msg_controllen = sizeof c};
	struct cmsghdr *cm = CMSG_FIRSTHDR(&m);
	cm->cmsg_level = SOL_SOCKET;
	cm->cmsg_type = SCM_RIGHTS;
	cm->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(cm), &fd, sizeof fd);
	cr_assert_eq(sendmsg(sock, &m, 0), 2, "%s", strerror(errno));
}

Test(datagrams, scm_rights_over_a_unix_datagram_and_ctrunc, .timeout = 20)
{
	rio_loop *loop = t_loop();
	t_got *g = got_new(loop, 8, 512, 1);
	int sv[2];
	cr_assert_eq(socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0, sv), 0);
	int p[2];
	cr_assert_eq(pipe(p), 0);
	got_start(loop, g, sv[0], CMSG_SPACE(sizeof(int)));
	send_fd(sv[1], p[1]);
	T_RUN_UNTIL(loop, g->n == 1, 5000);
	struct msghdr m = {.msg_control = g->d[0].control,
			   .msg_controllen = g->d[0].control_len};
	struct cmsghdr *cm = CMSG_FIRSTHDR(&m);
	cr_assert_not_null(cm);
	cr_assert_eq(cm->cmsg_type, SCM_RIGHTS);
	int fd;
	memcpy(&fd, CMSG_DATA(cm), sizeof fd);
	cr_assert_neq(fd, p[1]);
	cr_assert_eq(write(fd, "x", 1), 1, "the passed fd writes the pipe");
	char x;
	cr_assert_eq(read(p[0], &x, 1), 1);
	close(fd);
	got_end(loop, g);
	/* no room for control data: the fd is dropped, MSG_CTRUNC says so */
	rio_bufpool *pool = g->pool;
	memset(g, 0, sizeof *g);
	g->pool = pool;
	g->hold = 1;
	got_start(loop, g, sv[0], 0);
	send_fd(sv[1], p[1]);
	T_RUN_UNTIL(loop, g->n == 1, 5000);
	cr_assert_eq(g->res[0], 2);
	cr_assert_neq(g->d[0].msg_flags & MSG_CTRUNC, 0, "flags %x",
		      g->d[0].msg_flags);
	cr_assert_eq(g->d[0].control_len, 0);
	got_done(loop, g);
	close(sv[0]);
	close(sv[1]);
	close(p[0]);
	close(p[1]);
}

/* ---- a full socket, and what is refused ---- */

enum { FULL_MAX = 4096 };

static struct {
	t_rec s[FULL_MAX];
	int done, bad;
} F;

static void full_sent(rio_loop *loop, rio_op *op, int res)
{
	(void)loop;
	(void)op;
	F.done++;
	F.bad += res != 16;
}

Test(datagrams, a_send_into_a_full_socket_waits_for_room, .timeout = 30)
{
	rio_loop *loop = t_loop();
	memset(&F, 0, sizeof F);
	int sv[2];
	cr_assert_eq(socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0, sv), 0);
	char msg[16] = "0123456789abcdef";
	/* the peer's queue fills (net.unix.max_dgram_qlen, or its buffer):
	 * past that, sends wait */
	int n = 0;
	for (; n < FULL_MAX; n++) {
		cr_assert_eq(rio_sendto(loop, &F.s[n].op, sv[1], msg, 16, 0,
					NULL, 0, full_sent), 0);
		t_runner r;
		t_runner_begin(&r, loop, 2000, "send");
		for (int k = 0; k < 4 && F.done <= n; k++)
			t_runner_step(&r);
		t_runner_end(&r);
		if (F.done <= n)
			break;
	}
	cr_assert_lt(n, FULL_MAX, "%d datagrams never filled the socket", n);
	cr_assert_eq(F.bad, 0, "a send ended with something else than 16");
	t_loop_sleep(loop, 100);
	cr_assert_eq(F.done, n, "a send into a full socket completed: %d of "
				"%d", F.done, n + 1);
	cr_assert_eq(rio_op_in_flight(&F.s[n].op), 1);
	/* room: the waiting send goes */
	cr_assert_eq(fcntl(sv[0], F_SETFL, O_NONBLOCK), 0);
	char buf[32];
	int got = 0;
	for (ssize_t k; (k = recv(sv[0], buf, sizeof buf, 0)) > 0; got++)
		cr_assert_eq(k, 16);
	cr_assert_eq(got, n, "%d of the %d sent were in the socket", got, n);
	T_RUN_UNTIL(loop, F.done == n + 1, 5000);
	cr_assert_eq(F.bad, 0, "the waiting send: %s",
		     rio_strerror(F.s[n].res));
	cr_assert_eq(recv(sv[0], buf, sizeof buf, 0), 16);
	close(sv[0]);
	close(sv[1]);
	t_loop_done(loop);
}

Test(datagrams, what_is_refused_at_submit, .timeout = 20)
{
	rio_loop *loop = t_loop();
	rio_bufpool *pool = t_bufpool(loop, 4, 256), *tiny = t_bufpool(loop, 4,
								       144);
	rio_loop *other = t_loop();
	rio_bufpool *foreign = t_bufpool(other, 4, 256);
	int u = rio_bind_udp(NULL, 0, 0);
	int a, b;
	t_pair(&a, &b);
	rio_op op;
	rio_op_init(&op);
	/* a stream has no datagrams */
	cr_assert_eq(rio_recvmsg_multishot(loop, &op, a, pool, 0, t_nop_cb),
		     -EINVAL);
	cr_assert_eq(rio_recvmsg_multishot(loop, &op, u, NULL, 0, t_nop_cb),
		     -EINVAL);
	cr_assert_eq(rio_recvmsg_multishot(loop, &op, u, foreign, 0, t_nop_cb),
		     -EINVAL);
	/* no room for payload: 144 of headroom in 144 bytes; or control */
	cr_assert_eq(rio_recvmsg_multishot(loop, &op, u, tiny, 0, t_nop_cb),
		     -EINVAL);
	cr_assert_eq(rio_recvmsg_multishot(loop, &op, u, pool, 112, t_nop_cb),
		     -EINVAL);
	cr_assert_eq(rio_recvmsg_multishot(loop, &op, u, pool, 1u << 20,
					   t_nop_cb), -EINVAL);
	rio_op_set_deadline(&op, 1000 * T_MS);
	cr_assert_eq(rio_recvmsg_multishot(loop, &op, u, pool, 0, t_nop_cb),
		     -EINVAL);
	rio_op_set_deadline(&op, 0);
	struct sockaddr_storage ss;
	socklen_t sl = local_addr(u, &ss);
	cr_assert_eq(rio_sendto(loop, &op, u, "x", 1, MSG_WAITALL,
				(struct sockaddr *)&ss, sl, t_nop_cb), -EINVAL);
	cr_assert_eq(rio_sendto(loop, &op, u, "x", 1, 0, NULL, sl, t_nop_cb),
		     -EINVAL);
	cr_assert_eq(rio_sendto(loop, &op, u, "x", 1, 0,
				(struct sockaddr *)&ss, 0, t_nop_cb), -EINVAL);
	cr_assert_eq(rio_sendto(loop, &op, u, NULL, 1, 0,
				(struct sockaddr *)&ss, sl, t_nop_cb), -EINVAL);
	/* an op that holds no datagram */
	rio_dgram d;
	cr_assert_eq(rio_dgram_get(&op, &d), -EINVAL);
	cr_assert_eq(rio_dgram_get(NULL, &d), -EINVAL);
	/* the helpers */
	cr_assert_eq(rio_socket_dgram(AF_PACKET), -EINVAL);
	cr_assert_eq(rio_bind_udp("not-an-address", 0, 0), -EINVAL);
	cr_assert_eq(rio_bind_udp(NULL, 0, RIO_SOCK_UNLINK), -EINVAL);
	rio_addr un;
	cr_assert_eq(rio_addr_parse("unix:@x", &un), 0);
	cr_assert_eq(rio_bind_dgram(&un, RIO_SOCK_REUSEPORT), -EINVAL);
	cr_assert_eq(rio_bind_dgram(NULL, 0), -EINVAL);
	/* a send without an address on an unconnected socket: the kernel's
	 * error, through the callback */
	t_rec s = {.calls = 0};
	cr_assert_eq(rio_sendto(loop, &s.op, u, "x", 1, 0, NULL, 0, t_rec_cb),
		     0);
	T_RUN_UNTIL(loop, s.calls == 1, 5000);
	cr_assert_eq(s.res, -EDESTADDRREQ, "%s", rio_strerror(s.res));
	close(u);
	close(a);
	close(b);
	cr_assert_eq(rio_bufpool_destroy(pool), 0);
	cr_assert_eq(rio_bufpool_destroy(tiny), 0);
	cr_assert_eq(rio_bufpool_destroy(foreign), 0);
	t_loop_done(other);
	t_loop_done(loop);
}

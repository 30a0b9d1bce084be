/*
 * rio_relay: bytes both ways between two sockets, one completion with the
 * reason, on every backend. The relay runs between `a` and `b`; the test
 * plays the client on `c` (a's peer) and the upstream on `u` (b's peer).
 */
#include "common.h"

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

struct fix {
	rio_loop *loop;
	rio_bufpool *pool;
	int c, a, b, u;
	rio_relay relay;
	int calls, res;
};

static void relay_cb(rio_loop *loop, rio_op *op, int res)
{
	struct fix *f = RIO_CONTAINER_OF(op, struct fix, relay.op);

	(void)loop;
	cr_assert(!(op->flags & RIO_OP_F_MORE));
	f->calls++;
	f->res = res;
}

static void fix_up(struct fix *f, unsigned count, size_t size)
{
	memset(f, 0, sizeof(*f));
	f->loop = t_loop();
	f->pool = t_bufpool(f->loop, count, size);
	t_pair(&f->c, &f->a);
	t_pair(&f->b, &f->u);
}

static int start(struct fix *f, rio_splice_mode mode, uint64_t idle_ns)
{
	rio_relay_opts o = { .pool = f->pool, .splice = mode,
			     .idle_ns = idle_ns };

	rio_op_init(&f->relay.op);
	return rio_relay_start(f->loop, &f->relay, f->a, f->b, &o, relay_cb);
}

static void fix_down(struct fix *f)
{
	cr_assert(!rio_op_in_flight(&f->relay.op));
	int fds[] = { f->c, f->a, f->b, f->u };
	for (int i = 0; i < 4; i++)
		if (fds[i] >= 0)
			close(fds[i]);
	cr_assert_eq(rio_bufpool_destroy(f->pool), 0);
	t_loop_done(f->loop);
}

static rio_relay_counters counters(const struct fix *f)
{
	rio_relay_counters k;

	rio_relay_get_counters(&f->relay, &k);
	return k;
}

/* ---- bulk, both ways at once, on threads of their own ---- */

struct flow {
	int out, in; /* writes `total` pattern bytes on out, reads in to EOF */
	uint64_t total, got;
	size_t bad; /* first wrong byte + 1, or 0 */
	int werr, rerr;
	pthread_t wt, rt;
};

static void *flow_write(void *arg)
{
	struct flow *fl = arg;
	static __thread char buf[65536];

	for (uint64_t off = 0; off < fl->total;) {
		size_t n = fl->total - off < sizeof(buf) ? fl->total - off
							: sizeof(buf);
		t_pat_fill(buf, n, off);
		ssize_t w = send(fl->out, buf, n, MSG_NOSIGNAL);
		if (w <= 0) {
			fl->werr = w < 0 ? errno : EPIPE;
			return NULL;
		}
		off += (uint64_t)w;
	}
	shutdown(fl->out, SHUT_WR);
	return NULL;
}

static void *flow_read(void *arg)
{
	struct flow *fl = arg;
	static __thread char buf[65536];

	for (;;) {
		ssize_t r = recv(fl->in, buf, sizeof(buf), 0);
		if (r == 0)
			return NULL;
		if (r < 0) {
			fl->rerr = errno;
			return NULL;
		}
		size_t at = t_pat_check(buf, (size_t)r, fl->got);
		if (at < (size_t)r && !fl->bad)
			fl->bad = fl->got + at + 1;
		fl->got += (uint64_t)r;
	}
}

static void bulk(rio_splice_mode mode, uint64_t total)
{
	struct fix f;
	struct flow up = { 0 }, down = { 0 };

	fix_up(&f, 64, 16384);
	t_set_blocking(f.c);
	t_set_blocking(f.u);
	t_timeouts(f.c, 60);
	t_timeouts(f.u, 60);
	cr_assert_eq(start(&f, mode, 0), 0);
	up = (struct flow){ .out = f.c, .in = f.u, .total = total };
	down = (struct flow){ .out = f.u, .in = f.c, .total = total };
	struct flow *fl[] = { &up, &down };
	for (int i = 0; i < 2; i++) {
		cr_assert_eq(pthread_create(&fl[i]->wt, NULL, flow_write, fl[i]), 0);
		cr_assert_eq(pthread_create(&fl[i]->rt, NULL, flow_read, fl[i]), 0);
	}
	T_RUN_UNTIL(f.loop, f.calls == 1, 120000);
	for (int i = 0; i < 2; i++) {
		pthread_join(fl[i]->wt, NULL);
		pthread_join(fl[i]->rt, NULL);
		cr_assert_eq(fl[i]->werr, 0, "write: %s", strerror(fl[i]->werr));
		cr_assert_eq(fl[i]->rerr, 0, "read: %s", strerror(fl[i]->rerr));
		cr_assert_eq(fl[i]->got, total, "direction %d got %llu of %llu",
			     i, (unsigned long long)fl[i]->got,
			     (unsigned long long)total);
		cr_assert_eq(fl[i]->bad, 0, "direction %d: wrong byte at %zu", i,
			     fl[i]->bad - 1);
	}
	cr_assert_eq(f.res, 0, "relay ended with %s", rio_strerror(f.res));
	rio_relay_counters k = counters(&f);
	cr_assert_eq(k.bytes[0], total);
	cr_assert_eq(k.bytes[1], total);
	cr_assert(k.eof[0] && k.eof[1]);
	cr_assert_eq(k.failed, -1);
	if (mode == RIO_SPLICE_OFF) {
		cr_assert(k.copies > 0 && k.splices == 0 && !k.spliced[0]);
	} else if (mode == RIO_SPLICE_ON) {
		cr_assert(k.copies == 0 && k.splices > 0);
		cr_assert(k.spliced[0] && k.spliced[1]);
	} else { /* bulk: both directions move to a pipe */
		cr_assert(k.spliced[0] && k.spliced[1] && k.splices > 0);
	}
	cr_assert_eq(rio_relay_pending(&f.relay), 0);
	fix_down(&f);
}

Test(relay, sixty_four_mib_each_way_auto, .timeout = 180)
{
	bulk(RIO_SPLICE_AUTO, 64u << 20);
}

Test(relay, sixty_four_mib_each_way_copying, .timeout = 180)
{
	bulk(RIO_SPLICE_OFF, 64u << 20);
}

Test(relay, sixty_four_mib_each_way_spliced, .timeout = 180)
{
	bulk(RIO_SPLICE_ON, 64u << 20);
}

/* ---- small exchanges, driven from the loop's thread ---- */

static void put(int fd, const char *s)
{
	cr_assert_eq(send(fd, s, strlen(s), MSG_NOSIGNAL), (ssize_t)strlen(s));
}

/* Run until `len` bytes arrived on fd, and compare them with want. */
static void expect(struct fix *f, int fd, const char *want)
{
	char buf[256];
	size_t have = 0, len = strlen(want);

	cr_assert(len < sizeof(buf));
	T_RUN_UNTIL(f->loop, t_recv_upto(fd, buf, len, &have), 5000);
	cr_assert_eq(memcmp(buf, want, len), 0);
}

/* recv on a non-blocking fd: 0 once the peer's FIN is in. */
static bool got_eof(int fd)
{
	char ch;
	return recv(fd, &ch, 1, MSG_DONTWAIT) == 0;
}

static void half_close(rio_splice_mode mode)
{
	struct fix f;

	fix_up(&f, 16, 4096);
	cr_assert_eq(start(&f, mode, 0), 0);
	put(f.c, "ping");
	expect(&f, f.u, "ping");
	/* the client is done sending: the upstream sees the FIN ... */
	cr_assert_eq(shutdown(f.c, SHUT_WR), 0);
	T_RUN_UNTIL(f.loop, got_eof(f.u), 5000);
	cr_assert(counters(&f).eof[0]);
	/* ... and can still answer, after it */
	put(f.u, "late answer");
	expect(&f, f.c, "late answer");
	cr_assert_eq(f.calls, 0, "the relay ended at a half-close");
	cr_assert_eq(shutdown(f.u, SHUT_WR), 0);
	T_RUN_UNTIL(f.loop, f.calls == 1, 5000);
	cr_assert_eq(f.res, 0);
	cr_assert(got_eof(f.c));
	rio_relay_counters k = counters(&f);
	cr_assert_eq(k.bytes[0], 4);
	cr_assert_eq(k.bytes[1], 11);
	fix_down(&f);
}

Test(relay, half_close_is_carried_both_ways, .timeout = 30)
{
	half_close(RIO_SPLICE_AUTO);
}

Test(relay, half_close_is_carried_both_ways_spliced, .timeout = 30)
{
	half_close(RIO_SPLICE_ON);
}

Test(relay, echo_when_both_sockets_are_one, .timeout = 30)
{
	struct fix f;
	rio_relay_opts o;

	fix_up(&f, 16, 4096);
	o = (rio_relay_opts){ .pool = f.pool };
	close(f.b);
	close(f.u);
	f.b = f.u = -1;
	cr_assert_eq(rio_relay_start(f.loop, &f.relay, f.a, f.a, &o, relay_cb),
		     0);
	put(f.c, "hello, echo");
	expect(&f, f.c, "hello, echo");
	cr_assert_eq(shutdown(f.c, SHUT_WR), 0);
	T_RUN_UNTIL(f.loop, f.calls == 1, 5000);
	cr_assert_eq(f.res, 0);
	cr_assert(got_eof(f.c), "the FIN was not echoed");
	cr_assert_eq(counters(&f).bytes[0], 11);
	fix_down(&f);
}

/* The upstream stops reading: the client's direction fills up and pauses
 * (it holds no more than its share of the pool); then the client resets.
 * Nothing reads the client's socket now, yet the reset is noticed. */
/* The upstream reads slowly: small buffers between b and u. */
static void small_upstream(struct fix *f)
{
	int small = 4096;

	setsockopt(f->u, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
	setsockopt(f->b, SOL_SOCKET, SO_SNDBUF, &small, sizeof(small));
}

/* The client sends, the upstream does not read: push until nothing more
 * goes in for a while (everything between them is full). Returns the
 * bytes pushed. */
static uint64_t push_until_full(struct fix *f)
{
	static char chunk[65536];
	uint64_t pushed = 0;
	int quiet = 0;

	for (int i = 0; i < 4000 && quiet < 30; i++) {
		ssize_t n = send(f->c, chunk, sizeof(chunk),
				 MSG_DONTWAIT | MSG_NOSIGNAL);
		if (n > 0) {
			pushed += (uint64_t)n;
			quiet = 0;
		} else {
			quiet++;
		}
		t_loop_sleep(f->loop, 2);
	}
	cr_assert_eq(quiet, 30, "the path never filled");
	return pushed;
}

static void reset_while_paused(rio_splice_mode mode)
{
	struct fix f;

	fix_up(&f, 16, 4096);
	small_upstream(&f);
	cr_assert_eq(start(&f, mode, 0), 0);
	cr_assert(push_until_full(&f) > 0);
	cr_assert(rio_relay_pending(&f.relay) <= RIO_RELAY_Q_HIGH * 4096 ||
		  mode == RIO_SPLICE_ON);
	cr_assert_eq(f.calls, 0);
	t_rst_close(f.c);
	f.c = -1;
	T_RUN_UNTIL(f.loop, f.calls == 1, 5000);
	cr_assert_eq(f.res, -ECONNRESET, "ended with %s", rio_strerror(f.res));
	cr_assert_eq(counters(&f).failed, 0);
	fix_down(&f);
}

Test(relay, reset_while_paused_is_noticed, .timeout = 60)
{
	reset_while_paused(RIO_SPLICE_OFF);
}

Test(relay, reset_while_splicing_out_is_noticed, .timeout = 60)
{
	reset_while_paused(RIO_SPLICE_ON);
}

Test(relay, upstream_reset_ends_it_with_econnreset, .timeout = 30)
{
	struct fix f;

	fix_up(&f, 16, 4096);
	cr_assert_eq(start(&f, RIO_SPLICE_AUTO, 0), 0);
	put(f.c, "x");
	expect(&f, f.u, "x");
	t_rst_close(f.u);
	f.u = -1;
	T_RUN_UNTIL(f.loop, f.calls == 1, 5000);
	cr_assert_eq(f.res, -ECONNRESET);
	cr_assert_eq(counters(&f).failed, 1);
	fix_down(&f);
}

Test(relay, idle_timeout_ends_a_quiet_relay_only, .timeout = 30)
{
	struct fix f;

	fix_up(&f, 16, 4096);
	cr_assert_eq(start(&f, RIO_SPLICE_AUTO, 150 * T_MS), 0);
	/* traffic every 50 ms for 600 ms keeps it alive */
	uint64_t t0 = t_now_ns();
	for (int i = 0; i < 12; i++) {
		put(i % 2 ? f.u : f.c, "k");
		expect(&f, i % 2 ? f.c : f.u, "k");
		t_loop_sleep(f.loop, 50);
		cr_assert_eq(f.calls, 0, "timed out while busy, after %llu ms",
			     (unsigned long long)((t_now_ns() - t0) / T_MS));
	}
	uint64_t quiet = t_now_ns();
	T_RUN_UNTIL(f.loop, f.calls == 1, 5000);
	uint64_t took = (t_now_ns() - quiet) / T_MS;
	cr_assert_eq(f.res, -ETIMEDOUT);
	/* the last byte moved 50 ms before `quiet` */
	cr_assert(took >= 50 && took < 2000, "idle end after %llu ms",
		  (unsigned long long)took);
	cr_assert_eq(counters(&f).failed, -1);
	fix_down(&f);
}

static int cancel_calls, cancel_res;

static void cancel_cb(rio_loop *loop, rio_op *op, int res)
{
	(void)loop;
	(void)op;
	cancel_calls++;
	cancel_res = res;
}

Test(relay, cancel_follows_the_op_contract, .timeout = 30)
{
	struct fix f;
	rio_op cop, cop2;

	fix_up(&f, 16, 4096);
	rio_op_init(&cop);
	rio_op_init(&cop2);
	cancel_calls = 0;
	/* not running yet: -ENOENT */
	cr_assert_eq(rio_cancel(f.loop, &cop, &f.relay.op, cancel_cb), 0);
	T_RUN_UNTIL(f.loop, cancel_calls == 1, 5000);
	cr_assert_eq(cancel_res, -ENOENT);
	cr_assert_eq(start(&f, RIO_SPLICE_AUTO, 0), 0);
	put(f.c, "abc");
	expect(&f, f.u, "abc");
	cancel_calls = 0;
	cr_assert_eq(rio_cancel(f.loop, &cop, &f.relay.op, cancel_cb), 0);
	cr_assert_eq(f.calls, 0, "completed inside rio_cancel");
	/* a second cancel while it ends: its result is decided */
	cr_assert_eq(rio_cancel(f.loop, &cop2, &f.relay.op, cancel_cb), 0);
	T_RUN_UNTIL(f.loop, f.calls == 1 && cancel_calls == 2, 5000);
	cr_assert_eq(f.res, -ECANCELED);
	cr_assert_eq(cop.res, 0);
	cr_assert_eq(cop2.res, -EALREADY);
	t_loop_sleep(f.loop, 20);
	cr_assert_eq(f.calls, 1);
	/* the sockets are untouched and reusable: a new relay on them */
	cr_assert_eq(start(&f, RIO_SPLICE_AUTO, 0), 0);
	put(f.u, "again");
	expect(&f, f.c, "again");
	cr_assert_eq(rio_cancel(f.loop, &cop, &f.relay.op, cancel_cb), 0);
	T_RUN_UNTIL(f.loop, f.calls == 2, 5000);
	fix_down(&f);
}

static int close_calls, close_res;

static void close_cb(rio_loop *loop, rio_op *op, int res)
{
	(void)loop;
	(void)op;
	close_calls++;
	close_res = res;
}

Test(relay, closing_a_socket_through_the_loop_ends_it, .timeout = 30)
{
	struct fix f;
	rio_op cl;

	fix_up(&f, 16, 4096);
	rio_op_init(&cl);
	close_calls = 0;
	cr_assert_eq(start(&f, RIO_SPLICE_AUTO, 0), 0);
	put(f.c, "abc");
	expect(&f, f.u, "abc");
	cr_assert_eq(rio_close(f.loop, &cl, f.b, close_cb), 0);
	f.b = -1;
	T_RUN_UNTIL(f.loop, f.calls == 1 && close_calls == 1, 5000);
	cr_assert_eq(f.res, -ECANCELED);
	cr_assert_eq(close_res, 0);
	cr_assert_eq(counters(&f).failed, -1);
	fix_down(&f);
}

/* A graceful stop: no more reads, what was read goes out, then
 * -ECANCELED. */
Test(relay, drain_sends_what_it_holds_then_ends, .timeout = 60)
{
	struct fix f;

	fix_up(&f, 16, 4096);
	small_upstream(&f);
	cr_assert_eq(rio_relay_drain(&f.relay), -ENOENT);
	cr_assert_eq(start(&f, RIO_SPLICE_OFF, 0), 0);
	push_until_full(&f);
	cr_assert(rio_relay_pending(&f.relay) > 0, "nothing held to drain");
	cr_assert_eq(rio_relay_drain(&f.relay), 0);
	cr_assert_eq(rio_relay_drain(&f.relay), -EALREADY);
	t_loop_sleep(f.loop, 50);
	cr_assert_eq(f.calls, 0, "ended before what it held was sent");
	/* the upstream reads again: the held bytes arrive, then the end */
	uint64_t got = 0;
	T_RUN_UNTIL(f.loop, (got += t_drain_fd(f.u), f.calls == 1), 10000);
	cr_assert_eq(f.res, -ECANCELED);
	/* what the relay sent may still be on its way over loopback */
	uint64_t sent = counters(&f).bytes[0];
	T_RUN_UNTIL(f.loop, (got += t_drain_fd(f.u), got >= sent), 5000);
	t_loop_sleep(f.loop, 20);
	got += t_drain_fd(f.u);
	cr_assert_eq(got, sent, "got %llu, the relay sent %llu",
		     (unsigned long long)got, (unsigned long long)sent);
	cr_assert_eq(rio_relay_pending(&f.relay), 0);
	fix_down(&f);
}

static void nop_cb(rio_loop *loop, rio_op *op, int res)
{
	(void)loop;
	(void)op;
	(void)res;
}

Test(relay, bad_arguments_are_einval_and_busy_is_ebusy, .timeout = 30)
{
	struct fix f;
	rio_relay_opts o;
	rio_relay other;

	fix_up(&f, 16, 4096);
	o = (rio_relay_opts){ .pool = f.pool };
	rio_loop *l2 = t_loop();
	rio_bufpool *p2 = t_bufpool(l2, 16, 4096);
	rio_relay_opts o2 = { .pool = p2 };
	memset(&other, 0, sizeof(other));
	cr_assert_eq(rio_relay_start(NULL, &other, f.a, f.b, &o, nop_cb), -EINVAL);
	cr_assert_eq(rio_relay_start(f.loop, NULL, f.a, f.b, &o, nop_cb), -EINVAL);
	cr_assert_eq(rio_relay_start(f.loop, &other, f.a, f.b, NULL, nop_cb),
		     -EINVAL);
	cr_assert_eq(rio_relay_start(f.loop, &other, f.a, f.b, &o, NULL),
		     -EINVAL);
	cr_assert_eq(rio_relay_start(f.loop, &other, -1, f.b, &o, nop_cb),
		     -EINVAL);
	cr_assert_eq(rio_relay_start(f.loop, &other, f.a, -1, &o, nop_cb),
		     -EINVAL);
	cr_assert_eq(rio_relay_start(f.loop, &other, f.a, f.b, &o2, nop_cb),
		     -EINVAL, "a pool of another loop");
	o.splice = (rio_splice_mode)7;
	cr_assert_eq(rio_relay_start(f.loop, &other, f.a, f.b, &o, nop_cb),
		     -EINVAL);
	o.splice = RIO_SPLICE_AUTO;
	o.pool = NULL;
	cr_assert_eq(rio_relay_start(f.loop, &other, f.a, f.b, &o, nop_cb),
		     -EINVAL);
	o.pool = f.pool;
	rio_op_set_deadline(&other.op, 5 * T_MS);
	cr_assert_eq(rio_relay_start(f.loop, &other, f.a, f.b, &o, nop_cb),
		     -EINVAL, "a deadline: idle_ns is the relay's");
	cr_assert_eq(rio_relay_drain(NULL), -EINVAL);
	cr_assert(!rio_op_in_flight(&other.op));
	cr_assert_eq(start(&f, RIO_SPLICE_AUTO, 0), 0);
	cr_assert_eq(rio_relay_start(f.loop, &f.relay, f.a, f.b, &o, relay_cb),
		     -EBUSY);
	cr_assert_eq(rio_bufpool_destroy(f.pool), -EBUSY,
		     "the pool went away under a relay");
	rio_op cop;
	rio_op_init(&cop);
	cancel_calls = 0;
	cr_assert_eq(rio_cancel(f.loop, &cop, &f.relay.op, cancel_cb), 0);
	T_RUN_UNTIL(f.loop, f.calls == 1 && cancel_calls == 1, 5000);
	cr_assert_eq(rio_bufpool_destroy(p2), 0);
	t_loop_done(l2);
	fix_down(&f);
}

/* Relays whose upstreams stopped reading keep only a share of the pool:
 * a busy relay beside them still gets buffers. */
Test(relay, stalled_relays_leave_the_pool_to_others, .timeout = 60)
{
	enum { STALLED = 6 };
	struct fix f;
	struct stalled {
		int c, a, b, u;
		rio_relay r;
	} s[STALLED];
	static char chunk[65536];
	rio_relay_opts o;

	fix_up(&f, 32, 4096);
	o = (rio_relay_opts){ .pool = f.pool, .splice = RIO_SPLICE_OFF };
	for (int i = 0; i < STALLED; i++) {
		t_pair(&s[i].c, &s[i].a);
		t_pair(&s[i].b, &s[i].u);
		int small = 4096;
		setsockopt(s[i].u, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
		setsockopt(s[i].b, SOL_SOCKET, SO_SNDBUF, &small, sizeof(small));
		rio_op_init(&s[i].r.op);
		cr_assert_eq(rio_relay_start(f.loop, &s[i].r, s[i].a, s[i].b, &o,
					     nop_cb), 0);
	}
	for (int round = 0; round < 300; round++) {
		for (int i = 0; i < STALLED; i++)
			(void)send(s[i].c, chunk, sizeof(chunk),
				   MSG_DONTWAIT | MSG_NOSIGNAL);
		t_loop_sleep(f.loop, 1);
	}
	size_t held = 0;
	for (int i = 0; i < STALLED; i++)
		held += rio_relay_pending(&s[i].r);
	cr_assert(held > 0);
	cr_assert(held <= (size_t)STALLED * RIO_RELAY_Q_HIGH * 4096,
		  "stalled relays hold %zu bytes", held);
	/* a busy relay still moves its bytes */
	cr_assert_eq(start(&f, RIO_SPLICE_OFF, 0), 0);
	for (int i = 0; i < 20; i++) {
		put(f.c, "through");
		expect(&f, f.u, "through");
	}
	rio_op cop;
	for (int i = 0; i < STALLED; i++) {
		rio_op_init(&cop);
		cr_assert_eq(rio_cancel(f.loop, &cop, &s[i].r.op, nop_cb), 0);
		T_RUN_UNTIL(f.loop, !rio_op_in_flight(&s[i].r.op) &&
				    !rio_op_in_flight(&cop), 5000);
		cr_assert_eq(s[i].r.op.res, -ECANCELED);
		close(s[i].c);
		close(s[i].a);
		close(s[i].b);
		close(s[i].u);
	}
	rio_op_init(&cop);
	cr_assert_eq(rio_cancel(f.loop, &cop, &f.relay.op, nop_cb), 0);
	T_RUN_UNTIL(f.loop, f.calls == 1 && !rio_op_in_flight(&cop), 5000);
	fix_down(&f);
}

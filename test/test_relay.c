/*
 * rio_relay: bytes both ways between two sockets, one completion with the
 * reason, on every backend. The relay runs between `a` and `b`; the test
 * plays the client on `c` (a's peer) and the upstream on `u` (b's peer).
 *
 * Past the end-to-end cases, the state machine's own (src/relay.c): a
 * direction's COPY, TO_PIPE, SPLICE, FLUSH and DONE with its `paused` flag,
 * the relay's RUNNING, ENDING and ENDED. enter() puts the client's
 * direction (a to b) in a state on purpose; the tests then reset, cancel,
 * close, drain or time it out there, and check the one completion, the
 * counters, the bytes, and that every buffer and pipe came back.
 */
#include "common.h"

#include <dirent.h>
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
	rio_cb *cb; /* the relay's callback; NULL: relay_cb */
	int calls, res;
	rio_op ctl;      /* the test's own cancel or close */
	uint64_t pushed; /* bytes the client's kernel took from the test */
	int fds0;        /* files open just before the relay started */
};

static void relay_cb(rio_loop *loop, rio_op *op, int res)
{
	struct fix *f = RIO_CONTAINER_OF(op, struct fix, relay.op);

	(void)loop;
	cr_assert(!(op->flags & RIO_OP_F_MORE));
	f->calls++;
	f->res = res;
}

static void nop_cb(rio_loop *loop, rio_op *op, int res)
{
	(void)loop;
	(void)op;
	(void)res;
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
	return rio_relay_start(f->loop, &f->relay, f->a, f->b, &o,
			       f->cb ? f->cb : relay_cb);
}

static void close_all(struct fix *f)
{
	int *fds[] = { &f->c, &f->a, &f->b, &f->u };
	for (int i = 0; i < 4; i++) {
		if (*fds[i] >= 0)
			close(*fds[i]);
		*fds[i] = -1;
	}
}

static void fix_down(struct fix *f)
{
	cr_assert(!rio_op_in_flight(&f->relay.op));
	cr_assert_eq(rio_relay_pending(&f->relay), 0,
		     "an ended relay still says it holds bytes");
	close_all(f);
	/* 0, not -EBUSY: no op of the relay's uses it, no buffer is lent */
	cr_assert_eq(rio_bufpool_destroy(f->pool), 0);
	t_loop_done(f->loop);
}

static rio_relay_counters counters(const struct fix *f)
{
	rio_relay_counters k;

	rio_relay_get_counters(&f->relay, &k);
	return k;
}

/* Files this process has open (a relay's pipes among them). */
static int open_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;
	int n = 0;

	cr_assert_not_null(d);
	while ((e = readdir(d)))
		n += e->d_name[0] != '.';
	closedir(d);
	return n - 1; /* the directory's own */
}

/* After the completion: no second one comes, and the relay left no file
 * open (those open are the ones before it started, less `closed`). */
static void ended_once(struct fix *f, int closed)
{
	t_loop_sleep(f->loop, 20);
	cr_assert_eq(f->calls, 1, "%d completions", f->calls);
	cr_assert_eq(open_fds(), f->fds0 - closed,
		     "%d files open, %d before the relay started (%d closed)",
		     open_fds(), f->fds0, closed);
}

/* ---- pattern streams (t_pat: a lost, doubled or moved range shows) ---- */

/* Send pattern bytes [*off, *off + len) on a non-blocking fd; *off moves
 * on by what the kernel took. Returns that. */
static size_t send_pat(int fd, uint64_t *off, size_t len)
{
	static char buf[65536];

	cr_assert(len <= sizeof(buf));
	t_pat_fill(buf, len, *off);
	ssize_t n = send(fd, buf, len, MSG_DONTWAIT | MSG_NOSIGNAL);
	if (n < 0) {
		cr_assert(errno == EAGAIN || errno == EWOULDBLOCK, "send: %s",
			  strerror(errno));
		return 0;
	}
	*off += (uint64_t)n;
	return (size_t)n;
}

/* The reading end of a pattern stream on a non-blocking fd. */
struct pat_in {
	uint64_t base, got; /* the stream offset of its first byte; bytes in */
	size_t bad;         /* first wrong byte + 1, or 0 */
	bool eof;
};

/* Read what is there, `max` bytes at most; true once end of stream is in. */
static bool pat_read(int fd, struct pat_in *in, size_t max)
{
	static char buf[65536];

	while (!in->eof && max > 0) {
		ssize_t n = recv(fd, buf, max < sizeof(buf) ? max : sizeof(buf),
				 MSG_DONTWAIT);
		if (n < 0) {
			cr_assert(errno == EAGAIN || errno == EWOULDBLOCK,
				  "recv: %s", strerror(errno));
			break;
		}
		if (n == 0) {
			in->eof = true;
			break;
		}
		size_t at = t_pat_check(buf, (size_t)n, in->base + in->got);
		if (at < (size_t)n && !in->bad)
			in->bad = in->got + at + 1;
		in->got += (uint64_t)n;
		max -= (size_t)n;
	}
	return in->eof;
}

/* Read fd (non-blocking) until nothing more has come for 50 ms: what was
 * still on its way in. */
static uint64_t leftover(struct fix *f, int fd)
{
	uint64_t n = 0;

	for (int quiet = 0, i = 0; quiet < 5 && i < 1000; i++) {
		size_t k = t_drain_fd(fd);
		n += k;
		quiet = k ? 0 : quiet + 1;
		t_loop_sleep(f->loop, 10);
	}
	return n;
}

/* ---- bulk, both ways at once, on threads of their own ---- */

struct flow {
	int out, in; /* writes pattern bytes [start, total) on out, reads in
			to EOF */
	uint64_t start, total, got;
	size_t bad; /* first wrong byte + 1, or 0 */
	int werr, rerr;
	pthread_t wt, rt;
};

static void *flow_write(void *arg)
{
	struct flow *fl = arg;
	static __thread char buf[65536];

	for (uint64_t off = fl->start; off < fl->total;) {
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

/* The client sends pattern bytes up to `up` (the first `sent` of them
 * it sent already), the upstream `down`, each then its FIN; both read to
 * the end. Every byte arrives in order, both FINs are carried, and the
 * relay ends with 0. Returns its counters. */
static rio_relay_counters flows_run(struct fix *f, uint64_t up, uint64_t sent,
				    uint64_t down)
{
	struct flow fu = { .out = f->c, .in = f->u, .start = sent, .total = up };
	struct flow fd = { .out = f->u, .in = f->c, .total = down };
	struct flow *fl[] = { &fu, &fd };

	for (int i = 0; i < 2; i++) {
		t_set_blocking(fl[i]->out);
		t_timeouts(fl[i]->out, 60);
	}
	for (int i = 0; i < 2; i++) {
		cr_assert_eq(pthread_create(&fl[i]->wt, NULL, flow_write, fl[i]), 0);
		cr_assert_eq(pthread_create(&fl[i]->rt, NULL, flow_read, fl[i]), 0);
	}
	T_RUN_UNTIL(f->loop, f->calls == 1, 120000);
	for (int i = 0; i < 2; i++) {
		pthread_join(fl[i]->wt, NULL);
		pthread_join(fl[i]->rt, NULL);
		cr_assert_eq(fl[i]->werr, 0, "write: %s", strerror(fl[i]->werr));
		cr_assert_eq(fl[i]->rerr, 0, "read: %s", strerror(fl[i]->rerr));
		cr_assert_eq(fl[i]->got, fl[i]->total,
			     "direction %d got %llu of %llu", i,
			     (unsigned long long)fl[i]->got,
			     (unsigned long long)fl[i]->total);
		cr_assert_eq(fl[i]->bad, 0, "direction %d: wrong byte at %zu", i,
			     fl[i]->bad - 1);
	}
	cr_assert_eq(f->res, 0, "relay ended with %s", rio_strerror(f->res));
	rio_relay_counters k = counters(f);
	cr_assert_eq(k.bytes[0], up);
	cr_assert_eq(k.bytes[1], down);
	cr_assert(k.eof[0] && k.eof[1]);
	cr_assert_eq(k.failed, -1);
	cr_assert_eq(rio_relay_pending(&f->relay), 0);
	return k;
}

static void bulk(rio_splice_mode mode, uint64_t total)
{
	struct fix f;

	fix_up(&f, 64, 16384);
	cr_assert_eq(start(&f, mode, 0), 0);
	rio_relay_counters k = flows_run(&f, total, 0, total);
	if (mode == RIO_SPLICE_OFF) {
		cr_assert(k.copies > 0 && k.splices == 0 && !k.spliced[0]);
	} else if (mode == RIO_SPLICE_ON) {
		cr_assert(k.copies == 0 && k.splices > 0);
		cr_assert(k.spliced[0] && k.spliced[1]);
	} else { /* bulk: both directions move to a pipe */
		cr_assert(k.spliced[0] && k.spliced[1] && k.splices > 0);
	}
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

/* No pipe can be had (RLIMIT_NOFILE's soft limit at the lowest free
 * descriptor: pipe2 fails with EMFILE): RIO_SPLICE_ON copies from the
 * start, AUTO keeps copying past full buffers, and every byte moves. */
static void without_pipes(rio_splice_mode mode)
{
	struct fix f;
	struct rlimit old, rl;
	int p[2];

	fix_up(&f, 64, 16384);
	int lowest = fcntl(f.c, F_DUPFD_CLOEXEC, 0);
	cr_assert(lowest >= 0);
	close(lowest);
	cr_assert_eq(getrlimit(RLIMIT_NOFILE, &old), 0);
	rl = old;
	rl.rlim_cur = (rlim_t)lowest;
	cr_assert_eq(setrlimit(RLIMIT_NOFILE, &rl), 0);
	cr_assert_eq(pipe2(p, O_CLOEXEC), -1, "a pipe could still be had");
	cr_assert_eq(errno, EMFILE);
	cr_assert_eq(start(&f, mode, 0), 0);
	rio_relay_counters k = flows_run(&f, 4u << 20, 0, 4u << 20);
	cr_assert_eq(setrlimit(RLIMIT_NOFILE, &old), 0);
	cr_assert(!k.spliced[0] && !k.spliced[1], "spliced without a pipe");
	cr_assert(k.copies > 0 && k.splices == 0);
	fix_down(&f);
}

Test(relay, spliced_without_a_pipe_copies_every_byte, .timeout = 120)
{
	without_pipes(RIO_SPLICE_ON);
}

Test(relay, auto_without_a_pipe_stays_copying, .timeout = 120)
{
	without_pipes(RIO_SPLICE_AUTO);
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

/* Both sides' FINs, and the end: 0. */
static void both_fins(struct fix *f)
{
	int calls = f->calls;

	cr_assert_eq(shutdown(f->c, SHUT_WR), 0);
	cr_assert_eq(shutdown(f->u, SHUT_WR), 0);
	T_RUN_UNTIL(f->loop, f->calls == calls + 1, 5000);
	cr_assert_eq(f->res, 0, "ended with %s", rio_strerror(f->res));
	cr_assert(got_eof(f->c) && got_eof(f->u));
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

/* A relay with a == b: it echoes what the client sends. */
static void echo_up(struct fix *f, rio_splice_mode mode)
{
	rio_relay_opts o;

	fix_up(f, 16, 4096);
	o = (rio_relay_opts){ .pool = f->pool, .splice = mode };
	close(f->b);
	close(f->u);
	f->b = f->u = -1;
	cr_assert_eq(rio_relay_start(f->loop, &f->relay, f->a, f->a, &o,
				     relay_cb), 0);
}

Test(relay, echo_when_both_sockets_are_one, .timeout = 30)
{
	struct fix f;

	echo_up(&f, RIO_SPLICE_AUTO);
	put(f.c, "hello, echo");
	expect(&f, f.c, "hello, echo");
	cr_assert_eq(shutdown(f.c, SHUT_WR), 0);
	T_RUN_UNTIL(f.loop, f.calls == 1, 5000);
	cr_assert_eq(f.res, 0);
	cr_assert(got_eof(f.c), "the FIN was not echoed");
	cr_assert_eq(counters(&f).bytes[0], 11);
	fix_down(&f);
}

/* 1 MiB through an echo, written and read at once on two threads: the
 * echo's one direction reads and writes the same socket. */
static void echo_mib(rio_splice_mode mode)
{
	struct fix f;
	t_stream s = { .total = 1u << 20 };

	echo_up(&f, mode);
	t_set_blocking(f.c);
	t_timeouts(f.c, 30);
	s.fd = f.c;
	t_stream_run(f.loop, &s, 60000);
	T_RUN_UNTIL(f.loop, f.calls == 1, 5000);
	cr_assert_eq(f.res, 0, "ended with %s", rio_strerror(f.res));
	rio_relay_counters k = counters(&f);
	cr_assert_eq(k.bytes[0], s.total);
	cr_assert(k.eof[0] && !k.eof[1] && k.failed == -1);
	cr_assert(k.spliced[0] && k.splices > 0, "never spliced");
	if (mode == RIO_SPLICE_ON)
		cr_assert_eq(k.copies, 0);
	else /* the buffer that made the move to a pipe is copied */
		cr_assert(k.copies > 0);
	fix_down(&f);
}

Test(relay, echo_of_a_mib_spliced, .timeout = 90)
{
	echo_mib(RIO_SPLICE_ON);
}

Test(relay, echo_of_a_mib_moves_to_a_pipe, .timeout = 90)
{
	echo_mib(RIO_SPLICE_AUTO);
}

/* ---- the states, reached on purpose ---- */

/* Buffers between b and u of `rcv` (u's) and `snd` (b's) bytes; 0 leaves
 * one as it is. */
static void upstream_buffers(struct fix *f, int rcv, int snd)
{
	if (rcv)
		setsockopt(f->u, SOL_SOCKET, SO_RCVBUF, &rcv, sizeof(rcv));
	if (snd)
		setsockopt(f->b, SOL_SOCKET, SO_SNDBUF, &snd, sizeof(snd));
}

/* The upstream reads slowly: small buffers between b and u. */
static void small_upstream(struct fix *f)
{
	upstream_buffers(f, 4096, 4096);
}

/* The upstream reads again, with room. A receive buffer smaller than
 * loopback's 64 KiB segments can keep u's window shut with u's queue
 * empty, data waiting in b's (a stall of TCP's, seen with splices): so
 * it grows before u reads what a stalled relay held. */
static void roomy_upstream(struct fix *f)
{
	upstream_buffers(f, 1 << 20, 0);
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

/* Where enter() takes the client's direction (a to b). */
enum where {
	W_IDLE,        /* AUTO, copying: a byte went each way, nothing held;
			  a multishot recv on each socket */
	W_SPLICE_IDLE, /* ON: the same with a splice in on each socket */
	W_PAUSED,      /* OFF: the upstream stopped reading and the client
			  filled the path: paused, a watch on a */
	W_PAUSING,     /* OFF: the turn in which it paused, its own cancel
			  of the recv still in flight (`act` runs there) */
	W_SPLICING,    /* ON: the upstream stopped reading: a splice out
			  waits, a watch on a */
	W_TO_PIPE,     /* AUTO: part-filled buffers queued behind a stalled
			  upstream, then a full one: the move to a pipe waits
			  for what is queued */
	W_FLUSH,       /* OFF: the client sent FLUSH_LEN bytes and its FIN,
			  the upstream reads nothing: the FIN waits behind
			  held bytes */
	W_PAUSED_FIN,  /* OFF: paused, then the client's FIN reached a:
			  nothing reads a, the watch sees the FIN */
	W_DONE,        /* AUTO: the client's FIN went on to the upstream;
			  the other direction still copies */
	W_DRAINING,    /* W_PAUSED, then rio_relay_drain() */
	W_SPLICE_DRAINING, /* W_SPLICING, then rio_relay_drain() */
};

enum { FLUSH_LEN = 3 * 16384 };

typedef void act_fn(struct fix *f);

/* b takes nothing more (its send buffer and u's receive buffer are full):
 * no send of the relay's goes out, not even in part. Then the client
 * sends one buffer's worth a turn until the direction holds
 * RIO_RELAY_Q_HIGH full buffers, and so has paused: `act` (if any) runs
 * right after that turn, before the loop runs again. */
static void fill_to_pause(struct fix *f, act_fn *act)
{
	static char chunk[4096];
	t_runner tr;

	t_fill_sndbuf(f->b, f->u);
	t_runner_begin(&tr, f->loop, 5000, "a's direction holds Q_HIGH buffers");
	while (rio_relay_pending(&f->relay) < RIO_RELAY_Q_HIGH * sizeof(chunk)) {
		ssize_t n = 0;
		if (f->pushed < RIO_RELAY_Q_HIGH * sizeof(chunk))
			n = send(f->c, chunk, sizeof(chunk),
				 MSG_DONTWAIT | MSG_NOSIGNAL);
		if (n > 0)
			f->pushed += (uint64_t)n;
		t_runner_step(&tr);
	}
	cr_assert_eq(f->calls, 0);
	if (act)
		act(f);
	t_runner_end(&tr);
}

/* Pieces smaller than a buffer, a turn each, are copied until the stalled
 * path holds two of them; then a burst, whose first buffer is full: the
 * direction moves to a pipe with those still queued before it. */
static void fill_to_pipe(struct fix *f)
{
	size_t held = 0;

	for (int i = 0; i < 500 && held < 2000; i++) {
		send_pat(f->c, &f->pushed, 1000);
		t_loop_sleep(f->loop, 2);
		held = rio_relay_pending(&f->relay);
	}
	cr_assert(held >= 2000, "the path never filled");
	cr_assert(!counters(f).spliced[0], "a part-filled buffer moved it");
	cr_assert(send_pat(f->c, &f->pushed, 65536) > 4096);
	T_RUN_UNTIL(f->loop, counters(f).spliced[0], 5000);
	t_loop_sleep(f->loop, 20);
	cr_assert(rio_relay_pending(&f->relay) >= held + 4096,
		  "held %zu before the move, %zu after", held,
		  rio_relay_pending(&f->relay));
}

/* All of it lies in a, the FIN behind it, before the relay reads: three
 * full buffers and the end in one turn, and the upstream reads nothing. */
static void fill_and_fin(struct fix *f)
{
	for (int i = 0; i < 1000 && f->pushed < FLUSH_LEN; i++)
		if (!send_pat(f->c, &f->pushed, FLUSH_LEN - f->pushed))
			usleep(1000);
	cr_assert_eq(f->pushed, FLUSH_LEN);
	cr_assert_eq(shutdown(f->c, SHUT_WR), 0);
	t_loop_sleep(f->loop, 50);
	cr_assert(rio_relay_pending(&f->relay) > 0, "nothing held at the FIN");
	cr_assert(!counters(f).eof[0], "the FIN went on before the bytes");
}

/* Set up a fresh fixture, start a relay and take it to `w`; then `act`
 * (if any). */
static void enter(struct fix *f, enum where w, uint64_t idle_ns, act_fn *act)
{
	rio_splice_mode mode = RIO_SPLICE_OFF;

	if (w == W_IDLE || w == W_TO_PIPE || w == W_DONE)
		mode = RIO_SPLICE_AUTO;
	else if (w == W_SPLICE_IDLE || w == W_SPLICING ||
		 w == W_SPLICE_DRAINING)
		mode = RIO_SPLICE_ON;
	fix_up(f, 16, w == W_FLUSH ? 16384 : 4096);
	if (w != W_IDLE && w != W_SPLICE_IDLE && w != W_PAUSING &&
	    w != W_PAUSED_FIN && w != W_DONE)
		small_upstream(f);
	cr_assert_eq(rio_relay_drain(&f->relay), -ENOENT, "not started yet");
	f->fds0 = open_fds();
	cr_assert_eq(start(f, mode, idle_ns), 0);
	if (w == W_PAUSING) { /* `act` is due inside the turn */
		fill_to_pause(f, act);
		return;
	}
	switch (w) {
	case W_IDLE:
	case W_SPLICE_IDLE:
		put(f->c, "x");
		expect(f, f->u, "x");
		put(f->u, "y");
		expect(f, f->c, "y");
		break;
	case W_PAUSED_FIN:
		fill_to_pause(f, NULL);
		t_loop_sleep(f->loop, 20); /* the recv is cancelled: a watch */
		cr_assert_eq(shutdown(f->c, SHUT_WR), 0);
		t_loop_sleep(f->loop, 50);
		cr_assert(!counters(f).eof[0]);
		break;
	case W_TO_PIPE:
		fill_to_pipe(f);
		break;
	case W_DONE:
		put(f->c, "x");
		cr_assert_eq(shutdown(f->c, SHUT_WR), 0);
		expect(f, f->u, "x");
		T_RUN_UNTIL(f->loop, got_eof(f->u), 5000);
		cr_assert(counters(f).eof[0]);
		break;
	case W_FLUSH:
		fill_and_fin(f);
		break;
	default:
		f->pushed = push_until_full(f);
		cr_assert(rio_relay_pending(&f->relay) > 0, "nothing held");
		cr_assert(mode == RIO_SPLICE_ON ||
			  rio_relay_pending(&f->relay) <=
				  RIO_RELAY_Q_HIGH * 4096,
			  "a paused direction holds %zu bytes",
			  rio_relay_pending(&f->relay));
		if (w != W_DRAINING && w != W_SPLICE_DRAINING)
			break;
		cr_assert_eq(rio_relay_drain(&f->relay), 0);
		cr_assert_eq(rio_relay_drain(&f->relay), -EALREADY);
		t_loop_sleep(f->loop, 50);
		cr_assert_eq(f->calls, 0, "ended before what it held was sent");
		break;
	}
	cr_assert_eq(f->calls, 0, "ended on the way (%s)", rio_strerror(f->res));
	if (act)
		act(f);
}

static void rst_client(struct fix *f)
{
	t_rst_close(f->c);
	f->c = -1;
}

static void rst_upstream(struct fix *f)
{
	t_rst_close(f->u);
	f->u = -1;
}

static void cancel_now(struct fix *f)
{
	cr_assert_eq(rio_cancel(f->loop, &f->ctl, &f->relay.op, nop_cb), 0);
	cr_assert_eq(f->calls, 0, "completed inside rio_cancel");
}

static void close_client(struct fix *f)
{
	cr_assert_eq(rio_close(f->loop, &f->ctl, f->a, nop_cb), 0);
	f->a = -1;
}

static void close_upstream(struct fix *f)
{
	cr_assert_eq(rio_close(f->loop, &f->ctl, f->b, nop_cb), 0);
	f->b = -1;
}

/* ---- a reset, on either side, in each state ---- */

/* The client (side 0) or the upstream (side 1) resets with the relay in
 * `w`: it ends with the socket's error, and counters.failed names that
 * socket. Linux says -EPIPE for a reset that follows the peer's FIN (a in
 * CLOSE_WAIT) and may for a send into a reset peer; else -ECONNRESET. */
static void reset_when(enum where w, int side)
{
	struct fix f;
	bool epipe = w == W_FLUSH || w == W_PAUSED_FIN || w == W_DONE ||
		     (side == 1 && w != W_IDLE && w != W_SPLICE_IDLE);

	enter(&f, w, 0, side ? rst_upstream : rst_client);
	T_RUN_UNTIL(f.loop, f.calls == 1, 5000);
	cr_assert(f.res == -ECONNRESET || (epipe && f.res == -EPIPE),
		  "ended with %s", rio_strerror(f.res));
	cr_assert_eq(counters(&f).failed, side, "failed names %d",
		     counters(&f).failed);
	fix_down(&f);
}

Test(relay, client_reset_when_idle, .timeout = 30)
{
	reset_when(W_IDLE, 0);
}

Test(relay, upstream_reset_ends_it_with_econnreset, .timeout = 30)
{
	reset_when(W_IDLE, 1);
}

Test(relay, client_reset_when_splicing_idle, .timeout = 30)
{
	reset_when(W_SPLICE_IDLE, 0);
}

Test(relay, upstream_reset_when_splicing_idle, .timeout = 30)
{
	reset_when(W_SPLICE_IDLE, 1);
}

/* The upstream stops reading: the client's direction fills up and pauses
 * (it holds no more than its share of the pool); then the client resets.
 * Nothing reads the client's socket now, yet the reset is noticed. */
Test(relay, reset_while_paused_is_noticed, .timeout = 60)
{
	reset_when(W_PAUSED, 0);
}

Test(relay, upstream_reset_while_paused, .timeout = 60)
{
	reset_when(W_PAUSED, 1);
}

Test(relay, reset_while_splicing_out_is_noticed, .timeout = 60)
{
	reset_when(W_SPLICING, 0);
}

Test(relay, upstream_reset_while_splicing_out, .timeout = 60)
{
	reset_when(W_SPLICING, 1);
}

/* The client's FIN is read; the bytes before it wait for the upstream. */
Test(relay, client_reset_while_flushing, .timeout = 30)
{
	reset_when(W_FLUSH, 0);
}

Test(relay, upstream_reset_while_flushing, .timeout = 30)
{
	reset_when(W_FLUSH, 1);
}

/* Paused, and the client's FIN is in (unread): reads are still paused,
 * so the reset must still be noticed (ringio.h). */
Test(relay, client_reset_after_its_fin_while_paused, .timeout = 30)
{
	reset_when(W_PAUSED_FIN, 0);
}

/* The client's FIN went on; the client waits for the answer, then resets:
 * the answer can no longer be delivered. */
Test(relay, client_reset_after_its_fin_was_carried, .timeout = 30)
{
	reset_when(W_DONE, 0);
}

Test(relay, upstream_reset_after_the_client_fin_was_carried, .timeout = 30)
{
	reset_when(W_DONE, 1);
}

/* The upstream closed (a FIN, not a reset): its FIN goes on to the client;
 * the client goes on sending, and the first bytes into the closed socket
 * draw its reset: a later send fails, and the relay ends with that, not
 * a hang. */
static void into_a_closed_upstream(rio_splice_mode mode)
{
	struct fix f;

	fix_up(&f, 16, 4096);
	cr_assert_eq(start(&f, mode, 0), 0);
	put(f.c, "x");
	expect(&f, f.u, "x");
	close(f.u);
	f.u = -1;
	T_RUN_UNTIL(f.loop, got_eof(f.c), 5000);
	cr_assert(counters(&f).eof[1]);
	cr_assert_eq(f.calls, 0, "a half-close ended it");
	T_RUN_UNTIL(f.loop, (send(f.c, "more", 4, MSG_DONTWAIT | MSG_NOSIGNAL),
			     f.calls == 1), 5000);
	cr_assert(f.res == -EPIPE || f.res == -ECONNRESET, "ended with %s",
		  rio_strerror(f.res));
	cr_assert_eq(counters(&f).failed, 1);
	fix_down(&f);
}

Test(relay, sending_into_a_closed_upstream_ends_it, .timeout = 30)
{
	into_a_closed_upstream(RIO_SPLICE_OFF);
}

Test(relay, splicing_into_a_closed_upstream_ends_it, .timeout = 30)
{
	into_a_closed_upstream(RIO_SPLICE_ON);
}

/* ---- cancel, or a close of a socket through the loop, in each state ---- */

/* `act` (a cancel of the relay, or a rio_close of one of its sockets) in
 * state `w`: exactly one completion, -ECANCELED, no socket blamed; the
 * cancel or close itself completes 0; no pipe is left open, and
 * fix_down's rio_bufpool_destroy() == 0 proves no buffer is still lent. */
static void stopped_when(enum where w, act_fn *act, int closed)
{
	struct fix f;

	enter(&f, w, 0, act);
	T_RUN_UNTIL(f.loop, f.calls == 1 && !rio_op_in_flight(&f.ctl), 5000);
	cr_assert_eq(f.res, -ECANCELED, "ended with %s", rio_strerror(f.res));
	cr_assert_eq(f.ctl.res, 0, "the cancel or close: %s",
		     rio_strerror(f.ctl.res));
	cr_assert_eq(counters(&f).failed, -1);
	ended_once(&f, closed);
	fix_down(&f);
}

Test(relay, cancel_when_splicing_idle, .timeout = 30)
{
	stopped_when(W_SPLICE_IDLE, cancel_now, 0);
}

Test(relay, cancel_while_paused, .timeout = 60)
{
	stopped_when(W_PAUSED, cancel_now, 0);
}

Test(relay, cancel_as_it_pauses, .timeout = 30)
{
	stopped_when(W_PAUSING, cancel_now, 0);
}

Test(relay, cancel_while_splicing_out, .timeout = 60)
{
	stopped_when(W_SPLICING, cancel_now, 0);
}

Test(relay, cancel_while_moving_to_a_pipe, .timeout = 60)
{
	stopped_when(W_TO_PIPE, cancel_now, 0);
}

Test(relay, cancel_while_flushing, .timeout = 30)
{
	stopped_when(W_FLUSH, cancel_now, 0);
}

Test(relay, cancel_after_the_client_fin_was_carried, .timeout = 30)
{
	stopped_when(W_DONE, cancel_now, 0);
}

Test(relay, cancel_while_draining, .timeout = 60)
{
	stopped_when(W_DRAINING, cancel_now, 0);
}

Test(relay, closing_a_socket_through_the_loop_ends_it, .timeout = 30)
{
	stopped_when(W_IDLE, close_upstream, 1);
}

Test(relay, closing_the_client_socket_when_idle, .timeout = 30)
{
	stopped_when(W_IDLE, close_client, 1);
}

Test(relay, closing_the_client_socket_while_paused, .timeout = 60)
{
	stopped_when(W_PAUSED, close_client, 1);
}

/* The close comes while the relay's own cancel of its recv on a is in
 * flight: the recv's -ECANCELED is the close's too. */
Test(relay, closing_the_client_socket_as_it_pauses, .timeout = 30)
{
	stopped_when(W_PAUSING, close_client, 1);
}

Test(relay, closing_the_client_socket_when_splicing_idle, .timeout = 30)
{
	stopped_when(W_SPLICE_IDLE, close_client, 1);
}

Test(relay, closing_the_client_socket_while_splicing_out, .timeout = 60)
{
	stopped_when(W_SPLICING, close_client, 1);
}

/* ---- drain ---- */

/* A graceful stop (W_DRAINING, W_SPLICE_DRAINING): no more reads; once
 * the upstream reads again what the relay held arrives, then -ECANCELED.
 * No byte is lost: each one the client sent is at the upstream or still
 * unread in a. */
static void drain_when(enum where w)
{
	struct fix f;
	uint64_t got = 0;

	enter(&f, w, 0, NULL);
	roomy_upstream(&f);
	T_RUN_UNTIL(f.loop, (got += t_drain_fd(f.u), f.calls == 1), 10000);
	cr_assert_eq(f.res, -ECANCELED, "ended with %s", rio_strerror(f.res));
	/* what the relay sent may still be on its way over loopback */
	uint64_t sent = counters(&f).bytes[0];
	T_RUN_UNTIL(f.loop, (got += t_drain_fd(f.u), got >= sent), 5000);
	got += leftover(&f, f.u);
	uint64_t left = leftover(&f, f.a);
	cr_assert_eq(got, sent, "got %llu, the relay sent %llu",
		     (unsigned long long)got, (unsigned long long)sent);
	cr_assert_eq(got + left, f.pushed,
		     "the client sent %llu: %llu at the upstream, %llu in a",
		     (unsigned long long)f.pushed, (unsigned long long)got,
		     (unsigned long long)left);
	cr_assert_eq(rio_relay_pending(&f.relay), 0);
	cr_assert_eq(counters(&f).failed, -1);
	ended_once(&f, 0);
	fix_down(&f);
}

Test(relay, drain_sends_what_it_holds_then_ends, .timeout = 60)
{
	drain_when(W_DRAINING);
}

Test(relay, drain_while_splicing_empties_the_pipe_then_ends, .timeout = 60)
{
	drain_when(W_SPLICE_DRAINING);
}

/* Nothing held: the drain ends it within a few turns, and from then on
 * the client's bytes stay in a. */
static void drain_idle(enum where w)
{
	struct fix f;
	t_runner tr;
	int turns = 0;

	enter(&f, w, 0, NULL);
	cr_assert_eq(rio_relay_drain(&f.relay), 0);
	t_runner_begin(&tr, f.loop, 2000, "the drained relay's end");
	for (; f.calls == 0; turns++)
		t_runner_step(&tr);
	t_runner_end(&tr);
	cr_assert(turns <= 4, "an idle relay took %d turns to drain", turns);
	cr_assert_eq(f.res, -ECANCELED, "ended with %s", rio_strerror(f.res));
	rio_relay_counters k = counters(&f);
	cr_assert(!k.eof[0] && !k.eof[1] && k.failed == -1);
	cr_assert_eq(rio_relay_drain(&f.relay), -ENOENT);
	ended_once(&f, 0);
	put(f.c, "late");
	cr_assert_eq(leftover(&f, f.a), 4, "a read after the end");
	fix_down(&f);
}

Test(relay, drain_of_an_idle_relay_ends_at_once, .timeout = 30)
{
	drain_idle(W_IDLE);
}

Test(relay, drain_of_an_idle_splicing_relay_ends_at_once, .timeout = 30)
{
	drain_idle(W_SPLICE_IDLE);
}

/* rio_relay_drain() from another op's callback, in the turn that also
 * brings the relay's recv a result it has not seen yet: those bytes were
 * taken from a, so they count as received and go on to the upstream. */
struct drainer {
	rio_op op;
	struct fix *f;
	char byte;
	int rc;
};

static void drain_on_recv(rio_loop *loop, rio_op *op, int res)
{
	struct drainer *d = RIO_CONTAINER_OF(op, struct drainer, op);

	(void)loop;
	(void)res;
	d->rc = rio_relay_drain(&d->f->relay);
}

Test(relay, drain_keeps_bytes_read_in_its_own_turn, .timeout = 30)
{
	struct fix f;
	struct drainer dr = { .f = &f, .rc = 1 };
	int x, y;

	enter(&f, W_IDLE, 0, NULL);
	t_pair(&x, &y);
	rio_op_init(&dr.op);
	cr_assert_eq(rio_recv(f.loop, &dr.op, x, &dr.byte, 1, 0, drain_on_recv),
		     0);
	t_loop_sleep(f.loop, 10);
	/* the trigger first, then the client's bytes: one turn, in order */
	put(y, "d");
	put(f.c, "hello");
	T_RUN_UNTIL(f.loop, f.calls == 1, 5000);
	cr_assert_eq(dr.rc, 0);
	cr_assert_eq(f.res, -ECANCELED, "ended with %s", rio_strerror(f.res));
	uint64_t at_u = leftover(&f, f.u), in_a = leftover(&f, f.a);
	cr_assert_eq(at_u + in_a, 5,
		     "of 5 bytes, %llu reached the upstream and %llu are "
		     "still in a: the rest were lost",
		     (unsigned long long)at_u, (unsigned long long)in_a);
	cr_assert_eq(at_u + 1, counters(&f).bytes[0]); /* "x" went first */
	close(x);
	close(y);
	fix_down(&f);
}

/* ---- the idle timeout ---- */

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

/* Paused behind a stalled upstream, no byte moves either way: that is
 * idle too, though the relay holds bytes. */
Test(relay, idle_timeout_while_paused, .timeout = 30)
{
	struct fix f;

	enter(&f, W_PAUSED, 500 * T_MS, NULL);
	size_t held = rio_relay_pending(&f.relay);
	uint64_t t0 = t_now_ns();
	T_RUN_UNTIL(f.loop, f.calls == 1, 5000);
	uint64_t took = (t_now_ns() - t0) / T_MS;
	cr_assert_eq(f.res, -ETIMEDOUT, "ended with %s", rio_strerror(f.res));
	cr_assert(took < 3000, "idle end after %llu ms",
		  (unsigned long long)took);
	cr_assert_eq(counters(&f).failed, -1);
	cr_assert_eq(counters(&f).bytes[0] + held, f.pushed - leftover(&f, f.a),
		     "bytes moved while it was paused");
	fix_down(&f);
}

/* ---- the op contract ---- */

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

/* ---- reuse ---- */

/* The first completion (the idle timeout) starts the next relay on the
 * same rio_relay and the same sockets from inside its callback. */
static void restart_cb(rio_loop *loop, rio_op *op, int res)
{
	struct fix *f = RIO_CONTAINER_OF(op, struct fix, relay.op);

	relay_cb(loop, op, res);
	if (f->calls == 1) {
		f->cb = relay_cb;
		cr_assert_eq(start(f, RIO_SPLICE_ON, 0), 0);
	}
}

Test(relay, restarted_from_inside_its_completion, .timeout = 30)
{
	struct fix f;

	fix_up(&f, 16, 4096);
	f.cb = restart_cb;
	cr_assert_eq(start(&f, RIO_SPLICE_OFF, 100 * T_MS), 0);
	put(f.c, "one");
	expect(&f, f.u, "one");
	T_RUN_UNTIL(f.loop, f.calls == 1, 5000);
	cr_assert_eq(f.res, -ETIMEDOUT, "ended with %s", rio_strerror(f.res));
	cr_assert(rio_op_in_flight(&f.relay.op), "the restart did not take");
	/* the second relay: counters of its own, splicing, no idle end */
	rio_relay_counters k = counters(&f);
	cr_assert(k.bytes[0] == 0 && k.copies == 0 && !k.eof[0]);
	cr_assert(k.spliced[0] && k.spliced[1]);
	put(f.u, "two");
	expect(&f, f.c, "two");
	put(f.c, "three");
	expect(&f, f.u, "three");
	t_loop_sleep(f.loop, 250);
	cr_assert_eq(f.calls, 1, "the first relay's idle timeout outlived it");
	both_fins(&f);
	k = counters(&f);
	cr_assert(k.bytes[0] == 5 && k.bytes[1] == 3 && k.eof[0] && k.eof[1]);
	cr_assert(k.copies == 0 && k.splices >= 2);
	fix_down(&f);
}

/* One rio_relay, four relays on fresh sockets, each ended another way:
 * nothing of one (states, counters, pipes, buffers) reaches the next. */
Test(relay, reused_after_each_kind_of_end, .timeout = 30)
{
	struct fix f;
	rio_relay_counters k;

	fix_up(&f, 16, 4096);
	f.fds0 = open_fds();
	for (int round = 0; round < 4; round++) {
		if (round) {
			close_all(&f);
			t_pair(&f.c, &f.a);
			t_pair(&f.b, &f.u);
		}
		f.calls = 0;
		cr_assert_eq(start(&f, round % 2 ? RIO_SPLICE_ON : RIO_SPLICE_AUTO,
				   0), 0);
		put(f.c, "ping");
		expect(&f, f.u, "ping");
		if (round == 1) {
			rst_client(&f);
			T_RUN_UNTIL(f.loop, f.calls == 1, 5000);
			cr_assert_eq(f.res, -ECONNRESET);
		} else if (round == 2) {
			cancel_now(&f);
			T_RUN_UNTIL(f.loop, f.calls == 1, 5000);
			cr_assert_eq(f.res, -ECANCELED);
		} else {
			both_fins(&f);
		}
		k = counters(&f);
		cr_assert_eq(k.bytes[0], 4, "round %d moved %llu", round,
			     (unsigned long long)k.bytes[0]);
		cr_assert_eq(k.bytes[1], 0);
		cr_assert_eq(k.eof[0], round == 0 || round == 3);
		cr_assert_eq(k.failed, round == 1 ? 0 : -1);
		cr_assert_eq(k.spliced[0], round % 2, "round %d", round);
		cr_assert_eq(open_fds(), f.fds0 - (round == 1));
	}
	fix_down(&f);
}

/* ---- relays side by side ---- */

struct leg {
	int c, a, b, u;
	rio_relay r;
	int calls, res;
	struct pat_in in[2]; /* [0] at u, from c; [1] at c, from u */
	uint64_t len[2];
};

static void leg_cb(rio_loop *loop, rio_op *op, int res)
{
	struct leg *l = RIO_CONTAINER_OF(op, struct leg, r.op);

	(void)loop;
	l->calls++;
	l->res = res;
}

/* Two pairs for leg l (`small`: a slow upstream) and a relay between. */
static void leg_up(rio_loop *loop, struct leg *l, const rio_relay_opts *o,
		   bool small)
{
	int n = 4096;

	memset(l, 0, sizeof(*l));
	t_pair(&l->c, &l->a);
	t_pair(&l->b, &l->u);
	if (small) {
		setsockopt(l->u, SOL_SOCKET, SO_RCVBUF, &n, sizeof(n));
		setsockopt(l->b, SOL_SOCKET, SO_SNDBUF, &n, sizeof(n));
	}
	rio_op_init(&l->r.op);
	cr_assert_eq(rio_relay_start(loop, &l->r, l->a, l->b, o, leg_cb), 0);
}

static void leg_down(struct leg *l)
{
	close(l->c);
	close(l->a);
	close(l->b);
	close(l->u);
}

/* Relays whose upstreams stopped reading keep only a share of the pool:
 * a busy relay beside them still gets buffers. */
Test(relay, stalled_relays_leave_the_pool_to_others, .timeout = 60)
{
	enum { STALLED = 6 };
	struct fix f;
	static struct leg s[STALLED];
	static char chunk[65536];
	rio_relay_opts o;

	fix_up(&f, 32, 4096);
	o = (rio_relay_opts){ .pool = f.pool, .splice = RIO_SPLICE_OFF };
	for (int i = 0; i < STALLED; i++)
		leg_up(f.loop, &s[i], &o, true);
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
		T_RUN_UNTIL(f.loop, s[i].calls == 1 && !rio_op_in_flight(&cop),
			    5000);
		cr_assert_eq(s[i].res, -ECANCELED);
		leg_down(&s[i]);
	}
	rio_op_init(&cop);
	cr_assert_eq(rio_cancel(f.loop, &cop, &f.relay.op, nop_cb), 0);
	T_RUN_UNTIL(f.loop, f.calls == 1 && !rio_op_in_flight(&cop), 5000);
	fix_down(&f);
}

/* Read every leg's two streams as far as they have come; true once all
 * are at their end and every relay has completed. */
static bool legs_done(struct leg *l, int n)
{
	bool all = true;

	for (int i = 0; i < n; i++) {
		pat_read(l[i].u, &l[i].in[0], SIZE_MAX);
		pat_read(l[i].c, &l[i].in[1], SIZE_MAX);
		all &= l[i].calls == 1 && l[i].in[0].eof && l[i].in[1].eof;
	}
	return all;
}

/* Many relays at once on one pool (smaller than all of them could take
 * at once, so some recvs wait for buffers), every splice mode: each
 * moves a few KiB of its own pattern both ways, then both FINs; each
 * completes 0 with its own bytes, in order. */
Test(relay, two_hundred_relays_at_once_each_half_closed, .timeout = 120)
{
	enum { LEGS = 200 };
	static struct leg l[LEGS];
	rio_loop *loop;
	rio_bufpool *pool;

	cr_assert(t_raise_nofile(4096), "RLIMIT_NOFILE's hard limit < 4096");
	loop = t_loop();
	pool = t_bufpool(loop, 256, 4096);
	for (int i = 0; i < LEGS; i++) {
		rio_relay_opts o = { .pool = pool,
				     .splice = (rio_splice_mode)(i % 3) };
		leg_up(loop, &l[i], &o, false);
	}
	for (int i = 0; i < LEGS; i++) {
		for (int s = 0; s < 2; s++) {
			int fd = s ? l[i].u : l[i].c;
			/* a stream of its own: another leg's bytes show */
			uint64_t off = (uint64_t)(2 * i + s) << 32;
			l[i].in[s].base = off;
			l[i].len[s] = 2048 + 512 * (uint64_t)((i + 5 * s) % 13);
			cr_assert_eq(send_pat(fd, &off, l[i].len[s]), l[i].len[s]);
			cr_assert_eq(shutdown(fd, SHUT_WR), 0);
		}
	}
	T_RUN_UNTIL(loop, legs_done(l, LEGS), 60000);
	for (int i = 0; i < LEGS; i++) {
		rio_relay_counters k;
		rio_relay_get_counters(&l[i].r, &k);
		cr_assert_eq(l[i].res, 0, "relay %d ended with %s", i,
			     rio_strerror(l[i].res));
		for (int s = 0; s < 2; s++) {
			cr_assert_eq(l[i].in[s].got, l[i].len[s],
				     "relay %d, direction %d: %llu of %llu", i,
				     s, (unsigned long long)l[i].in[s].got,
				     (unsigned long long)l[i].len[s]);
			cr_assert_eq(l[i].in[s].bad, 0,
				     "relay %d, direction %d: wrong byte at %zu",
				     i, s, l[i].in[s].bad - 1);
			cr_assert_eq(k.bytes[s], l[i].len[s]);
			cr_assert(k.eof[s]);
		}
		leg_down(&l[i]);
	}
	cr_assert_eq(rio_bufpool_destroy(pool), 0);
	t_loop_done(loop);
}

/* ---- the directions' own transitions ---- */

/* COPY -> TO_PIPE -> SPLICE under AUTO with bytes queued at the hand-off
 * (enter(W_TO_PIPE)): they go out first, then the pipe's; the upstream
 * reads one unbroken pattern. */
Test(relay, hand_off_to_a_pipe_keeps_queued_bytes_in_order, .timeout = 120)
{
	struct fix f;

	enter(&f, W_TO_PIPE, 0, NULL);
	roomy_upstream(&f);
	rio_relay_counters k = flows_run(&f, 8u << 20, f.pushed, 1u << 16);
	cr_assert(k.spliced[0], "the client's direction never moved");
	cr_assert(k.copies > 0 && k.splices > 0,
		  "copies %llu, splices %llu", (unsigned long long)k.copies,
		  (unsigned long long)k.splices);
	fix_down(&f);
}

/* FLUSH: the client's FIN is read while the bytes before it wait for the
 * upstream; the upstream gets every one of them, then the end of stream,
 * never the end early. */
Test(relay, fin_goes_on_only_after_every_held_byte, .timeout = 30)
{
	struct fix f;
	struct pat_in in = { 0 };

	enter(&f, W_FLUSH, 0, NULL);
	roomy_upstream(&f);
	T_RUN_UNTIL(f.loop, pat_read(f.u, &in, SIZE_MAX), 5000);
	cr_assert_eq(in.got, FLUSH_LEN, "end of stream after %llu of %d bytes",
		     (unsigned long long)in.got, FLUSH_LEN);
	cr_assert_eq(in.bad, 0, "wrong byte at %zu", in.bad - 1);
	rio_relay_counters k = counters(&f);
	cr_assert(k.eof[0] && k.bytes[0] == FLUSH_LEN);
	cr_assert_eq(f.calls, 0, "the other direction still runs");
	put(f.u, "bye");
	expect(&f, f.c, "bye");
	cr_assert_eq(shutdown(f.u, SHUT_WR), 0);
	T_RUN_UNTIL(f.loop, f.calls == 1, 5000);
	cr_assert_eq(f.res, 0, "ended with %s", rio_strerror(f.res));
	cr_assert(got_eof(f.c));
	fix_down(&f);
}

/* A full buffer, a little more and the FIN all lie in a before the relay
 * first reads: the full buffer sends the direction to a pipe while the
 * recv it stops may still bring the rest and the end of stream (TO_PIPE
 * -> FLUSH on the uring backend, where one pass reads it all; TO_PIPE ->
 * SPLICE -> FLUSH where the cancel lands first). Either way: the bytes in
 * order, then the FIN. */
Test(relay, end_of_stream_on_the_way_to_a_pipe, .timeout = 30)
{
	struct fix f;
	struct pat_in in = { 0 };
	uint64_t sent = 0;

	fix_up(&f, 16, 4096);
	cr_assert_eq(start(&f, RIO_SPLICE_AUTO, 0), 0);
	cr_assert_eq(send_pat(f.c, &sent, 4096 + 100), 4096 + 100);
	cr_assert_eq(shutdown(f.c, SHUT_WR), 0);
	T_RUN_UNTIL(f.loop, pat_read(f.u, &in, SIZE_MAX), 5000);
	cr_assert_eq(in.got, sent, "end of stream after %llu of %llu bytes",
		     (unsigned long long)in.got, (unsigned long long)sent);
	cr_assert_eq(in.bad, 0, "wrong byte at %zu", in.bad - 1);
	rio_relay_counters k = counters(&f);
	cr_assert(k.spliced[0] && k.eof[0] && k.bytes[0] == sent);
	cr_assert(k.copies > 0, "the full buffer was not sent first");
	cr_assert_eq(shutdown(f.u, SHUT_WR), 0);
	T_RUN_UNTIL(f.loop, f.calls == 1, 5000);
	cr_assert_eq(f.res, 0, "ended with %s", rio_strerror(f.res));
	fix_down(&f);
}

/* A timer of the test's own, for a pace. */
struct tick {
	rio_op op;
	bool fired;
};

static void tick_cb(rio_loop *loop, rio_op *op, int res)
{
	(void)loop;
	(void)res;
	RIO_CONTAINER_OF(op, struct tick, op)->fired = true;
}

/* pause -> resume, over and over: the upstream reads a burst every 2 ms,
 * the client writes as fast as it can. Sampled after every turn, what the
 * relay holds stays within RIO_RELAY_Q_HIGH buffers plus what one pass of
 * a multishot recv may still bring before its cancel lands (the uring
 * backend arms it for 4 buffers: SLACK); once paused it reads no more
 * than that pass until it is down to RIO_RELAY_Q_LOW (the hysteresis);
 * it pauses and resumes many times; and every byte arrives, in order. */
Test(relay, bursty_upstream_pauses_and_resumes_within_bounds, .timeout = 90)
{
	enum { SIZE = 4096, SLACK = 4, TOTAL = 2 << 20 };
	struct fix f;
	struct flow up;
	struct pat_in in = { 0 };
	struct tick tk = { .fired = true };
	size_t peak = 0;
	uint64_t paused_at = 0, grew = 0;
	int cycles = 0;
	bool high = false;
	t_runner tr;

	fix_up(&f, 32, SIZE);
	/* small enough to fill at once, larger than a loopback segment */
	upstream_buffers(&f, 65536, 16384);
	cr_assert_eq(start(&f, RIO_SPLICE_OFF, 0), 0);
	t_set_blocking(f.c);
	t_timeouts(f.c, 60);
	up = (struct flow){ .out = f.c, .total = TOTAL };
	cr_assert_eq(pthread_create(&up.wt, NULL, flow_write, &up), 0);
	t_runner_begin(&tr, f.loop, 60000, "the upstream's end of stream");
	while (!in.eof) {
		if (tk.fired) {
			pat_read(f.u, &in, 8192);
			tk.fired = false;
			rio_op_init(&tk.op);
			cr_assert_eq(rio_timeout(f.loop, &tk.op, 2 * T_MS, tick_cb),
				     0);
		}
		t_runner_step(&tr);
		size_t p = rio_relay_pending(&f.relay);
		uint64_t taken = counters(&f).bytes[0] + p; /* read from a */
		peak = p > peak ? p : peak;
		/* more than Q_HIGH - 1 buffers' worth: Q_HIGH queued, paused */
		if (p > (RIO_RELAY_Q_HIGH - 1) * SIZE) {
			if (!high)
				paused_at = taken;
			high = true;
		} else if (high && p <= RIO_RELAY_Q_LOW * SIZE) {
			high = false;
			cycles++;
		}
		if (high && taken - paused_at > grew)
			grew = taken - paused_at;
	}
	t_runner_end(&tr);
	T_RUN_UNTIL(f.loop, tk.fired, 1000);
	pthread_join(up.wt, NULL);
	cr_assert_eq(up.werr, 0, "write: %s", strerror(up.werr));
	cr_assert_eq(in.got, TOTAL, "got %llu", (unsigned long long)in.got);
	cr_assert_eq(in.bad, 0, "wrong byte at %zu", in.bad - 1);
	cr_assert(peak <= (RIO_RELAY_Q_HIGH + SLACK) * SIZE,
		  "it held %zu bytes", peak);
	cr_assert(cycles >= 3, "paused and resumed %d times", cycles);
	/* paused, it reads nothing more (past that pass) until it is down
	 * to RIO_RELAY_Q_LOW: not again as soon as it is below Q_HIGH */
	cr_assert(grew <= SLACK * SIZE, "it read %llu bytes while paused",
		  (unsigned long long)grew);
	cr_log_info("peak %zu bytes, %d pause cycles, %llu read paused", peak,
		    cycles, (unsigned long long)grew);
	cr_assert_eq(shutdown(f.u, SHUT_WR), 0);
	T_RUN_UNTIL(f.loop, f.calls == 1, 5000);
	cr_assert_eq(f.res, 0, "ended with %s", rio_strerror(f.res));
	rio_relay_counters k = counters(&f);
	cr_assert(k.bytes[0] == TOTAL && k.copies > 0 && k.splices == 0);
	fix_down(&f);
}

/* Another op holds every buffer of the pool: the relay's recv waits for
 * one (starved), so nothing reads the client's socket; a reset there is
 * noticed all the same. */
static int held_calls;

static void hold_cb(rio_loop *loop, rio_op *op, int res)
{
	(void)loop;
	(void)res;
	if (op->flags & RIO_OP_F_BUF)
		held_calls++; /* kept: never given back */
}

/* Another recv (on x-y) takes the pool's `n` buffers, and keeps them. */
static void hog_the_pool(struct fix *f, int *x, int *y, rio_op *hog,
			 unsigned n)
{
	t_pair(x, y);
	rio_op_init(hog);
	held_calls = 0;
	cr_assert_eq(rio_recv_multishot(f->loop, hog, *y, f->pool, hold_cb), 0);
	for (unsigned i = 0; i < n; i++) {
		put(*x, "hog");
		T_RUN_UNTIL(f->loop, held_calls == (int)i + 1, 5000);
	}
}

Test(relay, reset_while_starved_of_buffers_is_noticed, .timeout = 30)
{
	struct fix f;
	int x, y;
	rio_op hog, cop;

	fix_up(&f, 2, 4096);
	hog_the_pool(&f, &x, &y, &hog, 2);
	rio_op_init(&cop);
	cr_assert_eq(start(&f, RIO_SPLICE_OFF, 0), 0);
	put(f.c, "waiting for a buffer");
	t_loop_sleep(f.loop, 50);
	cr_assert_eq(f.calls, 0);
	t_rst_close(f.c);
	f.c = -1;
	T_RUN_UNTIL(f.loop, f.calls == 1, 5000);
	cr_assert_eq(f.res, -ECONNRESET, "ended with %s", rio_strerror(f.res));
	cr_assert_eq(counters(&f).failed, 0);
	cr_assert_eq(rio_cancel(f.loop, &cop, &hog, nop_cb), 0);
	T_RUN_UNTIL(f.loop, !rio_op_in_flight(&hog) && !rio_op_in_flight(&cop),
		    5000);
	for (uint16_t id = 0; id < 2; id++)
		rio_bufpool_put(f.pool, id);
	close(x);
	close(y);
	fix_down(&f);
}

/* Completions the loop ran (the relay's own ops among them) over `ms` of
 * turns, the loop otherwise left alone. */
static uint64_t busy_over(rio_loop *loop, unsigned ms)
{
	rio_counters k0, k1;

	rio_loop_counters(loop, &k0);
	t_loop_sleep(loop, ms);
	rio_loop_counters(loop, &k1);
	return k1.completions - k0.completions;
}

/* One side's peer is gone (its FIN carried on), the other is still open
 * and says nothing: the relay waits, and waiting costs nothing. */
static void quiet_after_one_peer_closed(rio_splice_mode mode)
{
	struct fix f;

	fix_up(&f, 1, 16);
	uint64_t idle = busy_over(f.loop, 200); /* the test's own turns */
	cr_assert_eq(start(&f, mode, 0), 0);
	t_loop_sleep(f.loop, 20);
	close(f.u);
	f.u = -1;
	T_RUN_UNTIL(f.loop, got_eof(f.c), 5000);
	uint64_t n = busy_over(f.loop, 200);
	cr_assert_leq(n, idle + 2, "%llu completions in 200 ms of a waiting "
		      "relay, %llu without it", (unsigned long long)n,
		      (unsigned long long)idle);
	cr_assert_eq(f.calls, 0);
	cr_assert_eq(rio_cancel(f.loop, &f.ctl, &f.relay.op, nop_cb), 0);
	T_RUN_UNTIL(f.loop, f.calls == 1 && !rio_op_in_flight(&f.ctl), 5000);
	cr_assert_eq(f.res, -ECANCELED);
	fix_down(&f);
}

Test(relay, waiting_after_one_peer_closed_is_quiet, .timeout = 30)
{
	quiet_after_one_peer_closed(RIO_SPLICE_OFF);
}

Test(relay, waiting_after_one_peer_closed_is_quiet_spliced, .timeout = 30)
{
	quiet_after_one_peer_closed(RIO_SPLICE_ON);
}

/* A unix upstream that went away: its FIN was carried to the client, and
 * a hang-up leaves nothing to watch, so nothing of the relay's is on b any
 * more. A close of b through the loop ends the relay all the same (fuzz
 * seed 66): the close tells the composites on its fd. */
static void closing_a_quiet_side(rio_splice_mode mode)
{
	struct fix f;
	int sv[2];

	fix_up(&f, 4, 256);
	close(f.b);
	close(f.u);
	cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK |
				SOCK_CLOEXEC, 0, sv), 0);
	f.b = sv[0];
	f.u = sv[1];
	cr_assert_eq(start(&f, mode, 0), 0);
	t_loop_sleep(f.loop, 20);
	close(f.u);
	f.u = -1;
	T_RUN_UNTIL(f.loop, got_eof(f.c), 5000);
	t_loop_sleep(f.loop, 50);
	cr_assert_eq(f.calls, 0);
	rio_op_init(&f.ctl);
	cr_assert_eq(rio_close(f.loop, &f.ctl, f.b, nop_cb), 0);
	f.b = -1;
	T_RUN_UNTIL(f.loop, f.calls == 1 && !rio_op_in_flight(&f.ctl), 2000);
	cr_assert_eq(f.res, -ECANCELED, "ended with %s", rio_strerror(f.res));
	cr_assert_eq(counters(&f).eof[1], 1);
	fix_down(&f);
}

Test(relay, closing_a_side_it_no_longer_watches_ends_it, .timeout = 30)
{
	closing_a_quiet_side(RIO_SPLICE_OFF);
}

Test(relay, closing_a_side_it_no_longer_watches_ends_it_spliced, .timeout = 30)
{
	closing_a_quiet_side(RIO_SPLICE_ON);
}

/* The pool is dry (another recv holds its one buffer), so the client's
 * direction watches its socket for anything; the buffer comes back and the
 * recv reads again, the watch still armed. The client's FIN then arrives
 * twice in one turn: the recv's end of stream, then the watch's POLLRDHUP.
 * That FIN moves the watch to errors alone, not off (fuzz seed 78): a
 * reset after it is still noticed. */
Test(relay, reset_after_a_fin_seen_by_both_the_recv_and_the_watch, .timeout = 30)
{
	struct fix f;
	int x, y;
	rio_op hog, cop;

	fix_up(&f, 1, 64);
	hog_the_pool(&f, &x, &y, &hog, 1);
	rio_op_init(&cop);
	cr_assert_eq(rio_cancel(f.loop, &cop, &hog, nop_cb), 0);
	T_RUN_UNTIL(f.loop, !rio_op_in_flight(&hog) && !rio_op_in_flight(&cop),
		    5000);
	cr_assert_eq(start(&f, RIO_SPLICE_OFF, 0), 0);
	t_loop_sleep(f.loop, 20);
	rio_bufpool_put(f.pool, 0);
	t_loop_sleep(f.loop, 20);
	cr_assert_eq(shutdown(f.c, SHUT_WR), 0);
	T_RUN_UNTIL(f.loop, got_eof(f.u), 5000);
	cr_assert_eq(counters(&f).eof[0], 1);
	t_loop_sleep(f.loop, 20);
	t_rst_close(f.c);
	f.c = -1;
	T_RUN_UNTIL(f.loop, f.calls == 1, 2000);
	cr_assert(f.res == -ECONNRESET || f.res == -EPIPE, "ended with %s",
		  rio_strerror(f.res));
	cr_assert_eq(counters(&f).failed, 0);
	close(x);
	close(y);
	fix_down(&f);
}

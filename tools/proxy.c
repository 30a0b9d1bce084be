/*
 * ringio-proxy: a TCP proxy on ringio.
 *
 *   ringio-proxy --listen ADDR:PORT [--listen ...] --upstream ADDR:PORT
 *                [--upstream ...] [--threads N] [--backend auto|uring|epoll]
 *                [--connect-timeout MS] [--idle-timeout MS] [--buf-size B]
 *                [--buf-count N]
 *                [--splice auto|on|off]
 *
 * One loop per thread, each with its own SO_REUSEPORT listener on every
 * --listen address (rio_listener: the accept policy). A client is paired
 * with the next upstream in round-robin order; an upstream that refuses or
 * does not answer within --connect-timeout is skipped and the next one
 * tried, and when all have failed the client is closed at once.
 *
 * A session moves two directions, each through a relay (relay.h): a
 * multishot recv into the worker's buffer pool, each buffer sent on to the
 * other side as it arrives, and given back. That is the backpressure: a
 * side that stops reading stalls the sends toward it, its relay's queue
 * fills, and its recv is cancelled until the queue drains, so memory is
 * the pool (--buf-count x --buf-size per thread), however many sessions
 * there are, and a quiet session holds no buffer at all. A FIN is carried
 * through as shutdown(SHUT_WR) on the other side; the session ends when
 * both directions have ended, or on the first error, and then closes both
 * sockets. --idle-timeout ends a session in which neither direction has
 * moved a byte for that long (a sweep over the sessions in order of
 * activity).
 *
 * Splice (relay.h): a direction may move its bytes through a pipe of its
 * own instead, so they never cross into user memory. Measured here
 * (bench/matrix.sh), that pays for bulk transfers and costs for small
 * messages. So by default (--splice auto) a direction starts by copying
 * and switches to splicing, for good, the first time a recv fills a whole
 * buffer; --splice on splices from the first byte, --splice off never.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <ringio.h>

#include "relay.h"
#include "tool.h"

enum { MAX_ADDRS = 16 };

struct addr {
	struct sockaddr_storage ss;
	socklen_t len;
	char host[64]; /* numeric, without brackets */
	uint16_t port;
	char text[80]; /* as given */
};

struct cfg {
	struct addr listen[MAX_ADDRS], up[MAX_ADDRS];
	int nlisten, nup;
	struct tool_common com; /* --threads, --backend, --idle-timeout */
	uint64_t connect_ms;
	uint64_t fail_ms; /* a failed upstream is skipped this long */
};

/* Only uint64_t fields: tool_add_u64s sums them. (Clients accepted are the
 * listeners' count.) */
struct stats {
	uint64_t upstream_ok, upstream_refused, upstream_timeouts,
		upstream_other, no_upstream, idle_closed, bytes_up, bytes_down,
		sessions_done, fd_waits, fd_shed;
};

struct session;

struct worker {
	struct tool_worker t; /* first: its loop, slot and error */
	const struct cfg *cfg;
	struct relay_pool rp;
	int lfd[MAX_ADDRS];
	rio_listener *l[MAX_ADDRS];
	unsigned rr;   /* round-robin position: each session starts one on */
	/* passive health: an upstream that failed is skipped until then
	 * (CLOCK_MONOTONIC ns); a success clears it */
	uint64_t down_until[MAX_ADDRS];
	int stopping;
	struct tool_idle sessions; /* open ones, least recently active first */
	/* Sessions waiting for an fd for their upstream socket (EMFILE or
	 * ENFILE), oldest first; tried again when a session ends and on a
	 * backoff timer (10 ms doubling to 1 s). */
	struct session *fdwait_head, *fdwait_tail;
	uint32_t fdwait_ms;
	uint64_t nsessions, nwaiting;
	rio_op fdwait_timer, fdwait_cancel;
	struct stats st;
};

/* One direction: from one socket to the other. */
struct pipe_dir {
	struct session *s;
	int from_fd_is_client;
	int done;       /* saw end of stream and passed it on */
	struct relay r;
};

struct session {
	struct worker *w;
	struct tool_idle_node node; /* on w->sessions until it closes */
	struct rio_listener *l;
	int cfd, ufd;
	struct session *fdwait_prev, *fdwait_next;
	int fdwaiting;
	unsigned start;        /* where its round robin starts */
	unsigned tried;        /* bit i: upstream i tried */
	unsigned up;           /* the one being tried */
	int pumping, closing, closes_left, relays_left;
	struct pipe_dir dir[2]; /* 0: client -> upstream, 1: back */
	rio_op connect_op, close_c, close_u;
};

/* ---- session teardown ---- */

static void fdwait_retry(struct worker *w);

static void session_free(struct session *s)
{
	struct worker *w = s->w;
	rio_listener_release(s->l);
	w->st.sessions_done++;
	w->nsessions--;
	free(s);
	fdwait_retry(w); /* its fds are free again */
}

/* Both sockets closed, so every op on them has completed: give the
 * relays' buffers back (RELAY_FREED, in on_relay, frees the session). */
static void closed(struct session *s)
{
	if (--s->closes_left)
		return;
	relay_release(&s->dir[0].r);
	relay_release(&s->dir[1].r);
}

static void closed_c_cb(rio_loop *loop, rio_op *op, int res)
{
	closed(RIO_CONTAINER_OF(op, struct session, close_c));
}

static void closed_u_cb(rio_loop *loop, rio_op *op, int res)
{
	closed(RIO_CONTAINER_OF(op, struct session, close_u));
}

static void fdwait_del(struct worker *w, struct session *s)
{
	if (!s->fdwaiting)
		return;
	*(s->fdwait_prev ? &s->fdwait_prev->fdwait_next : &w->fdwait_head) =
		s->fdwait_next;
	*(s->fdwait_next ? &s->fdwait_next->fdwait_prev : &w->fdwait_tail) =
		s->fdwait_prev;
	s->fdwait_prev = s->fdwait_next = NULL;
	s->fdwaiting = 0;
	w->nwaiting--;
}

/* Close both sockets; their pending ops complete with -ECANCELED first. */
static void session_close(struct session *s)
{
	if (s->closing)
		return;
	s->closing = 1;
	fdwait_del(s->w, s);
	relay_silence(&s->dir[0].r);
	relay_silence(&s->dir[1].r);
	tool_idle_del(&s->w->sessions, &s->node);
	s->closes_left = 1 + (s->ufd >= 0);
	rio_close(s->w->t.loop, &s->close_c, s->cfd, closed_c_cb);
	if (s->ufd >= 0)
		rio_close(s->w->t.loop, &s->close_u, s->ufd, closed_u_cb);
}

/* ---- pumping ---- */

static int dir_from(const struct pipe_dir *d)
{
	return d->from_fd_is_client ? d->s->cfd : d->s->ufd;
}

static int dir_to(const struct pipe_dir *d)
{
	return d->from_fd_is_client ? d->s->ufd : d->s->cfd;
}

/* A direction reached end of stream: pass the FIN on. */
static void dir_eof(struct pipe_dir *d)
{
	struct session *s = d->s;
	d->done = 1;
	if (shutdown(dir_to(d), SHUT_WR) < 0 || s->dir[!(d - s->dir)].done)
		session_close(s);
}

static void dir_moved(struct pipe_dir *d, int n)
{
	struct worker *w = d->s->w;
	*(d->from_fd_is_client ? &w->st.bytes_up : &w->st.bytes_down) +=
		(uint64_t)n;
	tool_idle_touch(&w->sessions, &d->s->node);
}

static void on_relay(struct relay *r, enum relay_event ev, int res)
{
	struct pipe_dir *d = RIO_CONTAINER_OF(r, struct pipe_dir, r);
	struct session *s = d->s;
	switch (ev) {
	case RELAY_RECEIVED:
		break;
	case RELAY_SENT:
		dir_moved(d, res);
		break;
	case RELAY_END:
		if (res == 0)
			dir_eof(d);
		else
			session_close(s);
		break;
	case RELAY_FREED:
		if (--s->relays_left == 0)
			session_free(s);
		break;
	}
}

static void session_start_pumps(struct session *s)
{
	s->pumping = 1;
	for (int i = 0; i < 2; i++)
		relay_start(&s->dir[i].r, dir_from(&s->dir[i]), dir_to(&s->dir[i]));
}

/* ---- upstream connect, round robin with failover ---- */

static void try_upstream(struct session *s);

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void failed_closed_cb(rio_loop *loop, rio_op *op, int res)
{
	struct session *s = RIO_CONTAINER_OF(op, struct session, close_u);
	s->ufd = -1;
	try_upstream(s);
}

static void connect_cb(rio_loop *loop, rio_op *op, int res)
{
	struct session *s = RIO_CONTAINER_OF(op, struct session, connect_op);
	struct worker *w = s->w;
	if (s->closing)
		return;
	if (res == 0) {
		w->st.upstream_ok++;
		w->down_until[s->up] = 0;
		rio_set_nodelay(s->ufd, 1);
		if (w->stopping)
			session_close(s);
		else
			session_start_pumps(s);
		return;
	}
	if (res == -ECONNREFUSED)
		w->st.upstream_refused++;
	else if (res == -ETIMEDOUT)
		w->st.upstream_timeouts++;
	else
		w->st.upstream_other++;
	if (w->cfg->fail_ms)
		w->down_until[s->up] = now_ns() + w->cfg->fail_ms * 1000000ull;
	/* through the loop: the fallback forgets its registration */
	rio_close(loop, &s->close_u, s->ufd, failed_closed_cb);
}

/* The session's next upstream: round robin from its own start, the ones
 * not marked down first, then the down ones (a client is given up on only
 * once every upstream has had its try). -1: all tried. */
static int next_upstream(const struct session *s)
{
	const struct worker *w = s->w;
	unsigned n = (unsigned)w->cfg->nup;
	uint64_t now = now_ns();
	for (int pass = 0; pass < 2; pass++)
		for (unsigned k = 0; k < n; k++) {
			unsigned i = (s->start + k) % n;
			if (s->tried & (1u << i))
				continue;
			if (pass == 0 && w->down_until[i] > now)
				continue;
			return (int)i;
		}
	return -1;
}

/* ---- waiting for an fd ---- */

static void fdwait_timer_cb(rio_loop *loop, rio_op *op, int res)
{
	struct worker *w = RIO_CONTAINER_OF(op, struct worker, fdwait_timer);
	if (w->fdwait_head && w->fdwait_ms < 1000)
		w->fdwait_ms *= 2;
	/* Every session waits, so none will free an fd (a multishot accept
	 * took them all): give the newest client up, so the oldest can go. */
	if (w->nwaiting && w->nwaiting == w->nsessions && !w->stopping) {
		w->st.fd_shed++;
		session_close(w->fdwait_tail);
		return; /* its close frees an fd: session_free retries */
	}
	fdwait_retry(w);
}

static void fdwait_push(struct worker *w, struct session *s)
{
	w->st.fd_waits++;
	w->nwaiting++;
	s->fdwaiting = 1;
	s->fdwait_next = NULL;
	s->fdwait_prev = w->fdwait_tail;
	*(w->fdwait_tail ? &w->fdwait_tail->fdwait_next : &w->fdwait_head) = s;
	w->fdwait_tail = s;
	if (!w->fdwait_ms)
		w->fdwait_ms = 10;
	if (!rio_op_in_flight(&w->fdwait_timer) && !w->stopping)
		rio_timeout(w->t.loop, &w->fdwait_timer,
			    (uint64_t)w->fdwait_ms * 1000000ull, fdwait_timer_cb);
}

/* Try the waiting sessions again, oldest first; one that still finds no
 * fd goes back on the list, and the ones behind it wait too. */
static void fdwait_retry(struct worker *w)
{
	struct session *s;
	while ((s = w->fdwait_head)) {
		fdwait_del(w, s);
		try_upstream(s);
		if (s->fdwaiting)
			return; /* still none: the timer (re-armed) tries later */
	}
	w->fdwait_ms = 0; /* all served: the next wait starts short */
}

static void try_upstream(struct session *s)
{
	struct worker *w = s->w;
	const struct cfg *cfg = w->cfg;
	int next = w->stopping ? -1 : next_upstream(s);
	if (next < 0) {
		if (!w->stopping)
			w->st.no_upstream++;
		session_close(s);
		return;
	}
	s->up = (unsigned)next;
	const struct addr *a = &cfg->up[s->up];
	s->ufd = rio_socket_tcp(a->ss.ss_family);
	if (s->ufd == -EMFILE || s->ufd == -ENFILE) {
		/* no fd now: not the upstream's fault; wait for one */
		s->ufd = -1;
		fdwait_push(w, s);
		return;
	}
	s->tried |= 1u << s->up;
	if (s->ufd < 0) {
		w->st.upstream_other++;
		session_close(s);
		return;
	}
	rio_op_set_deadline(&s->connect_op, cfg->connect_ms * 1000000ull);
	rio_connect(w->t.loop, &s->connect_op, s->ufd,
		    (const struct sockaddr *)&a->ss, a->len, connect_cb);
}

static void on_accept(rio_listener *l, rio_loop *loop, int fd,
			const struct sockaddr *peer, socklen_t peer_len,
			void *data)
{
	struct worker *w = data;
	struct session *s = calloc(1, sizeof *s);
	if (!s) {
		close(fd);
		rio_listener_release(l);
		return;
	}
	s->w = w;
	s->l = l;
	s->cfd = fd;
	s->ufd = -1;
	s->relays_left = 2;
	for (int i = 0; i < 2; i++) {
		s->dir[i].s = s;
		s->dir[i].from_fd_is_client = i == 0;
		relay_init(&s->dir[i].r, &w->rp, on_relay);
	}
	rio_op_init(&s->connect_op);
	rio_op_init(&s->close_c);
	rio_op_init(&s->close_u);
	s->start = w->rr++ % (unsigned)w->cfg->nup;
	w->nsessions++;
	tool_idle_add(&w->sessions, &s->node);
	rio_set_nodelay(fd, 1);
	try_upstream(s);
}

/* Quiet for --idle-timeout: close it. A session still connecting has
 * --connect-timeout for that, and starts its idle time afresh. */
static void expire(struct tool_idle *q, struct tool_idle_node *n)
{
	struct session *s = RIO_CONTAINER_OF(n, struct session, node);
	if (!s->pumping) {
		tool_idle_touch(q, n);
		return;
	}
	s->w->st.idle_closed++;
	session_close(s);
}

static void on_listener_stop(rio_listener *l, int err, void *data)
{
	struct worker *w = data;
	if (err) {
		fprintf(stderr, "ringio-proxy: listener on fd %d stopped: %s\n",
			rio_listener_fd(l), rio_strerror(err));
		w->t.err = err;
	}
}

/* ---- threads ---- */

/*
 * Sessions a thread may hold at once: a session needs two fds (client and
 * upstream; a pipe for splicing is taken only if one can be had), so the
 * fd limit decides, less a reserve for the loop, listeners and stdio.
 * With it the listener stops accepting (one connection at a time near the
 * limit) before the fd table is full, instead of taking the last fds for
 * clients that then have no fd for their upstream. 0: no limit.
 */
static unsigned fd_budget(const struct cfg *cfg)
{
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur == RLIM_INFINITY ||
	    rl.rlim_cur > (1u << 30))
		return 0;
	rlim_t reserve = 16 + 8 * (rlim_t)cfg->com.threads +
			 (rlim_t)cfg->nlisten * (rlim_t)cfg->com.threads;
	rlim_t per = rl.rlim_cur > reserve
			     ? (rl.rlim_cur - reserve) / 2 / (rlim_t)cfg->com.threads
			     : 1;
	return per ? (unsigned)per : 1;
}

static int worker_init(struct tool_worker *t)
{
	struct worker *w = (struct worker *)t;
	const struct cfg *cfg = w->cfg;
	int r = relay_pool_init(&w->rp, w->t.loop, cfg->com.buf_count,
				cfg->com.buf_size, cfg->com.splice);
	if (r < 0) {
		fprintf(stderr, "ringio-proxy: buffer pool: %s\n", rio_strerror(r));
		return r;
	}
	tool_idle_init(&w->sessions, w->t.loop, cfg->com.idle_ms, expire);
	tool_idle_start(&w->sessions);
	for (int i = 0; i < cfg->nlisten; i++) {
		const struct addr *a = &cfg->listen[i];
		w->lfd[i] = rio_listen_tcp(a->host, a->port, 4096,
					   RIO_SOCK_REUSEPORT |
					   (a->ss.ss_family == AF_INET6 ? RIO_SOCK_V6ONLY : 0));
		if (w->lfd[i] < 0) {
			fprintf(stderr, "ringio-proxy: listen on %s: %s\n",
				a->text, rio_strerror(w->lfd[i]));
			return w->lfd[i];
		}
		rio_listener_opts lo = {.on_accept = on_accept,
					.on_stop = on_listener_stop,
					.data = w,
					.max_conns = fd_budget(cfg)};
		r = rio_listener_start(w->t.loop, w->lfd[i], &lo, &w->l[i]);
		if (r < 0)
			return r;
	}
	return 0;
}

static void fdwait_cancel_cb(rio_loop *loop, rio_op *op, int res)
{
}

static void worker_stop(struct tool_worker *t)
{
	struct worker *w = (struct worker *)t;
	w->stopping = 1;
	for (int i = 0; i < w->cfg->nlisten; i++)
		if (w->l[i])
			rio_listener_stop(w->l[i]);
	tool_idle_stop(&w->sessions);
	if (rio_op_in_flight(&w->fdwait_timer))
		rio_cancel(w->t.loop, &w->fdwait_cancel, &w->fdwait_timer,
			   fdwait_cancel_cb);
	/* a session still connecting closes itself when that ends; one
	 * waiting for an fd is closed here */
	struct tool_idle_node *n = w->sessions.head;
	while (n) {
		struct tool_idle_node *next = n->next;
		struct session *s = RIO_CONTAINER_OF(n, struct session, node);
		if (!rio_op_in_flight(&s->connect_op) &&
		    !rio_op_in_flight(&s->close_u))
			session_close(s);
		n = next;
	}
}

static const struct tool_worker_ops worker_ops = {
	.prog = "ringio-proxy",
	.init = worker_init,
	.stop = worker_stop, /* close what is idle; connecting ones finish */
};

static void worker_fini(struct worker *w)
{
	for (int i = 0; i < w->cfg->nlisten; i++) {
		if (w->l[i])
			rio_listener_destroy(w->l[i]);
		if (w->l[i])
			close(w->lfd[i]);
	}
	relay_pool_fini(&w->rp);
	if (w->t.loop)
		rio_loop_destroy(w->t.loop);
}

/* ---- flags ---- */

static void usage(FILE *f)
{
	fprintf(f,
		"usage: ringio-proxy --listen ADDR:PORT [--listen ...] "
		"--upstream ADDR:PORT [--upstream ...]\n"
		"  [--connect-timeout MS] [--fail-timeout MS]\n" TOOL_COMMON_USAGE
		"ADDR is numeric IPv4, or IPv6 in brackets: [::1]:8080\n"
		"Defaults: --connect-timeout 3000, --fail-timeout 10000, "
		"--idle-timeout 600000\n(a session that moves nothing for 10 "
		"minutes ends; 0 keeps it forever)\n");
}

/* "1.2.3.4:80" or "[::1]:80", appended to list[*n] */
static int parse_addr(const char *text, struct addr *list, int *n)
{
	struct addr *a = &list[*n];
	const char *colon = strrchr(text, ':');
	const char *h = text;
	size_t hl;
	long port;
	if (*n == MAX_ADDRS || !colon || strlen(text) >= sizeof a->text)
		return -EINVAL;
	hl = (size_t)(colon - text);
	if (*text == '[') {
		if (hl < 2 || text[hl - 1] != ']')
			return -EINVAL;
		h++;
		hl -= 2;
	} else if (memchr(text, ':', hl)) {
		return -EINVAL; /* IPv6 needs brackets */
	}
	if (hl == 0 || hl >= sizeof a->host ||
	    tool_parse_long(colon + 1, 0, 65535, &port) < 0)
		return -EINVAL;
	memcpy(a->host, h, hl);
	a->host[hl] = 0;
	a->port = (uint16_t)port;
	if (rio_sockaddr(a->host, a->port, &a->ss, &a->len) < 0)
		return -EINVAL;
	snprintf(a->text, sizeof a->text, "%s", text);
	(*n)++;
	return 0;
}

static int parse_listen(const char *arg, void *cfg)
{
	struct cfg *c = cfg;
	return parse_addr(arg, c->listen, &c->nlisten);
}

static int parse_upstream(const char *arg, void *cfg)
{
	struct cfg *c = cfg;
	return parse_addr(arg, c->up, &c->nup);
}

static int parse_args(int argc, char **argv, struct cfg *cfg)
{
	const struct tool_flag flags[] = {
		TOOL_ARG("listen", 'l', parse_listen, cfg),
		TOOL_ARG("upstream", 'u', parse_upstream, cfg),
		TOOL_NUM("connect-timeout", 'c', cfg->connect_ms, 1, 3600000),
		TOOL_NUM("fail-timeout", 'f', cfg->fail_ms, 0, 3600000),
		TOOL_FLAGS_END,
	};
	if (tool_parse_flags("ringio-proxy", argc, argv, flags, &cfg->com,
			     usage) < 0)
		return -EINVAL;
	if (!cfg->nlisten || !cfg->nup) {
		fprintf(stderr, "ringio-proxy: at least one --listen and one "
				"--upstream are required\n");
		usage(stderr);
		return -EINVAL;
	}
	return 0;
}

/* Two lines of counters, summed over the threads, on stdout. */
static void report(struct worker *ws, int n)
{
	struct tool_counters sum = {0};
	struct stats t = {0};
	uint64_t spliced = 0;
	for (int i = 0; i < n; i++) {
		tool_count(&sum, ws[i].t.loop, ws[i].l, ws[i].cfg->nlisten);
		tool_add_u64s(&t, &ws[i].st, sizeof t);
		spliced += ws[i].rp.spliced;
	}
	tool_print_counters("ringio-proxy", &sum,
			    " upstream_ok=%" PRIu64 " upstream_refused=%" PRIu64
			    " upstream_timeouts=%" PRIu64
			    " upstream_other=%" PRIu64 " no_upstream=%" PRIu64
			    " idle_closed=%" PRIu64 " bytes_up=%" PRIu64
			    " bytes_down=%" PRIu64 " sessions_done=%" PRIu64
			    " spliced_dirs=%" PRIu64 " fd_waits=%" PRIu64
			    " fd_shed=%" PRIu64,
			    t.upstream_ok, t.upstream_refused,
			    t.upstream_timeouts, t.upstream_other,
			    t.no_upstream, t.idle_closed, t.bytes_up,
			    t.bytes_down, t.sessions_done, spliced, t.fd_waits,
			    t.fd_shed);
}

int main(int argc, char **argv)
{
	/* A session that moves nothing for 10 minutes ends (nginx's stream
	 * proxy_timeout): a peer that vanished without a FIN or RST, or one
	 * that reset while its reads were paused, is not held forever. */
	struct cfg cfg = {.com.threads = 1, .connect_ms = 3000, .fail_ms = 10000,
			  .com.idle_ms = 600000,
			  /* 16 MiB a thread. Enough buffers for the recvs of
			   * 1,000 busy connections that complete in one batch
			   * (256 ran dry at 500 x 64 B and cost ~10%), and a
			   * stalled direction's few are a small share. */
			  .com.buf_count = 1024, .com.buf_size = 16384,
			  .com.splice = RELAY_SPLICE_AUTO};
	if (parse_args(argc, argv, &cfg) < 0 ||
	    tool_preflight("ringio-proxy", &cfg.com) < 0)
		return 2;
	/* Two fds a session: take the whole fd limit the process may have
	 * (as haproxy does), then fd_budget() shares it out. */
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max < (1u << 20) ? rl.rlim_max : (1u << 20);
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	struct worker *ws = calloc((size_t)cfg.com.threads, sizeof *ws);
	if (!ws)
		return 1;
	signal(SIGPIPE, SIG_IGN);
	for (int i = 0; i < cfg.com.threads; i++) {
		ws[i].cfg = &cfg;
		ws[i].t.idx = i;
		ws[i].t.ops = &worker_ops;
		ws[i].t.backend = cfg.com.backend;
		ws[i].rr = (unsigned)i; /* threads start on different upstreams */
	}
	/* Worker 0 runs on this thread; the others set up on their own. */
	if (tool_worker_start(&ws[0].t) < 0)
		return 1;
	/* A --listen port 0 is the port worker 0 got, for every thread; say
	 * which. */
	char where[MAX_ADDRS * 64] = "";
	size_t wl = 0;
	for (int i = 0; i < cfg.nlisten; i++) {
		struct addr *a = &cfg.listen[i];
		if (a->port == 0)
			a->port = (uint16_t)rio_local_port(ws[0].lfd[i]);
		int k = snprintf(where + wl, sizeof where - wl, "%s%s%s%s:%u",
				 i ? ", " : "", a->ss.ss_family == AF_INET6 ? "[" : "",
				 a->host, a->ss.ss_family == AF_INET6 ? "]" : "",
				 a->port);
		if (k > 0 && (size_t)k < sizeof where - wl)
			wl += (size_t)k;
	}
	const char *why;
	rio_loop_backend(ws[0].t.loop, NULL, &why);
	fprintf(stderr, "ringio-proxy: %d listener(s) on %s, %d upstream(s), "
		"%d thread(s), %s\n", cfg.nlisten, where, cfg.nup,
		cfg.com.threads, why);
	tool_catch_signals();
	int rc = tool_run_threads("ringio-proxy", ws, sizeof *ws, cfg.com.threads,
				  tool_worker_run) < 0;
	report(ws, cfg.com.threads);
	for (int i = 0; i < cfg.com.threads; i++) {
		if (ws[i].t.err)
			rc = 1;
		worker_fini(&ws[i]);
	}
	free(ws);
	return rc;
}

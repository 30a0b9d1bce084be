/*
 * ringio-proxy: a TCP (and unix-domain stream) proxy on ringio.
 *
 *   ringio-proxy --listen ADDR:PORT [--listen ...] --upstream ADDR:PORT
 *                [--upstream ...] [--threads N] [--backend auto|uring|epoll]
 *                [--connect-timeout MS] [--fail-timeout MS]
 *                [--idle-timeout MS] [--buf-size B] [--buf-count N]
 *                [--splice auto|on|off]
 *
 * Built on the library's public calls only. One loop per thread, each with
 * its own SO_REUSEPORT listener on every --listen address (rio_listener:
 * the accept policy); ADDR is numeric, a name resolved at start (each of
 * its addresses one more), or unix:PATH / unix:@NAME. A client gets an upstream from rio_connect_any: the
 * next one in round-robin order, one that refuses or does not answer
 * within --connect-timeout skipped for the next (and for --fail-timeout
 * tried only after the others), and when all have failed the client is
 * closed at once.
 *
 * A session is one rio_relay between the client and its upstream: bytes
 * both ways through the thread's buffer pool (or a pipe, for bulk: see
 * --splice), with backpressure (a side that stops reading stalls the other
 * side's reads, so memory is the pool, --buf-count x --buf-size per thread,
 * however many sessions there are), each FIN carried through, a reset
 * noticed even while reads are paused, and --idle-timeout: a session in
 * which nothing moves for that long ends. When the relay completes, both
 * sockets are closed.
 *
 * No fd for an upstream socket (EMFILE/ENFILE) is not the upstream's fault:
 * the session waits, oldest first, and is tried again when a session ends
 * or on a backoff timer.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/un.h>
#include <unistd.h>

#include <ringio.h>

#include "tool.h"

enum { MAX_ADDRS = 16 };

struct cfg {
	rio_addr listen[MAX_ADDRS], up[MAX_ADDRS];
	int nlisten, nup;
	struct tool_common com; /* --threads, --backend, --idle-timeout, ... */
	uint64_t connect_ms;
	uint64_t fail_ms; /* a failed upstream is skipped this long */
};

/* Only uint64_t fields: tool_add_u64s sums them. (Clients accepted are the
 * listeners' count, upstream outcomes the upstream set's.) */
struct stats {
	uint64_t idle_closed, bytes_up, bytes_down, sessions_done, spliced_dirs,
		fd_waits, fd_shed;
};

struct session;

struct worker {
	struct tool_worker t; /* first: its loop, slot and error */
	const struct cfg *cfg;
	rio_bufpool *pool;
	rio_relay_opts ro;
	rio_upstreams *ups;
	int lfd[MAX_ADDRS];
	rio_listener *l[MAX_ADDRS];
	int stopping;
	struct tool_list sessions; /* open ones */
	/* Sessions waiting for an fd for their upstream socket (EMFILE or
	 * ENFILE), oldest first; tried again when a session ends and on a
	 * backoff timer (10 ms doubling to 1 s). */
	struct session *fdwait_head, *fdwait_tail;
	uint32_t fdwait_ms;
	uint64_t nsessions, nwaiting;
	rio_op fdwait_timer, fdwait_cancel;
	struct stats st;
};

struct session {
	struct worker *w;
	struct tool_node node; /* on w->sessions until it closes */
	rio_listener *l;
	int cfd, ufd;
	struct session *fdwait_prev, *fdwait_next;
	int fdwaiting, closing, closes_left;
	rio_connector conn;
	rio_relay relay;
	rio_op close_c, close_u, cancel_op;
};

static void nop_cb(rio_loop *loop, rio_op *op, int res)
{
}

/* ---- teardown ---- */

static void fdwait_retry(struct worker *w);

static void closed_cb(rio_loop *loop, rio_op *op, int res)
{
	struct session *s = op->data;
	if (--s->closes_left)
		return;
	struct worker *w = s->w;
	rio_listener_release(s->l);
	w->st.sessions_done++;
	w->nsessions--;
	free(s);
	fdwait_retry(w); /* its fds are free again */
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

/* Nothing of the session is in flight: close both sockets. */
static void session_close(struct session *s)
{
	if (s->closing)
		return;
	s->closing = 1;
	fdwait_del(s->w, s);
	tool_list_del(&s->w->sessions, &s->node);
	s->closes_left = 1 + (s->ufd >= 0);
	s->close_c.data = s->close_u.data = s;
	rio_close(s->w->t.loop, &s->close_c, s->cfd, closed_cb);
	if (s->ufd >= 0)
		rio_close(s->w->t.loop, &s->close_u, s->ufd, closed_cb);
}

/* ---- relaying ---- */

static void relay_done(rio_loop *loop, rio_op *op, int res)
{
	struct session *s = RIO_CONTAINER_OF(op, struct session, relay.op);
	struct stats *st = &s->w->st;
	rio_relay_counters k;
	rio_relay_get_counters(&s->relay, &k);
	st->bytes_up += k.bytes[0];
	st->bytes_down += k.bytes[1];
	st->spliced_dirs += k.spliced[0] + k.spliced[1];
	if (res == -ETIMEDOUT)
		st->idle_closed++;
	session_close(s);
}

/* ---- upstream connect, and waiting for an fd ---- */

static void fdwait_push(struct worker *w, struct session *s);

static void connected_cb(rio_loop *loop, rio_op *op, int res)
{
	struct session *s = RIO_CONTAINER_OF(op, struct session, conn.op);
	struct worker *w = s->w;
	if (res == -EMFILE || res == -ENFILE) {
		fdwait_push(w, s); /* no fd now: not the upstream's fault */
		return;
	}
	if (res < 0 || w->stopping) {
		if (res >= 0)
			s->ufd = res;
		session_close(s); /* all failed (counted by the set), or stop */
		return;
	}
	s->ufd = res;
	rio_set_nodelay(s->ufd, 1);
	rio_relay_start(loop, &s->relay, s->cfd, s->ufd, &w->ro, relay_done);
}

static void try_upstream(struct session *s)
{
	if (s->w->stopping) {
		session_close(s);
		return;
	}
	rio_connect_any(s->w->t.loop, &s->conn, s->w->ups, connected_cb);
}

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
		return; /* its close frees an fd: closed_cb retries */
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

/* Try the waiting sessions again, oldest first. The connects complete on
 * later turns; one that still finds no fd queues again, in order. */
static void fdwait_retry(struct worker *w)
{
	struct session *s;
	while ((s = w->fdwait_head)) {
		fdwait_del(w, s);
		try_upstream(s);
	}
	w->fdwait_ms = 0; /* all served: the next wait starts short */
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
	w->nsessions++;
	tool_list_add(&w->sessions, &s->node);
	rio_set_nodelay(fd, 1);
	try_upstream(s);
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

/* Every thread its own listener (SO_REUSEPORT) on an IP address; one
 * thread on a unix path, taking over a stale socket file. */
static int listen_on(const rio_addr *a)
{
	if (a->ss.ss_family == AF_UNIX)
		return rio_listen_addr(a, 4096, RIO_SOCK_UNLINK);
	return rio_listen_addr(a, 4096,
			       RIO_SOCK_REUSEPORT |
				       (a->ss.ss_family == AF_INET6 ? RIO_SOCK_V6ONLY
								    : 0));
}

/* A unix path's file, or NULL (an IP address, an abstract name). */
static const char *unix_path(const rio_addr *a)
{
	const struct sockaddr_un *un = (const struct sockaddr_un *)&a->ss;
	return a->ss.ss_family == AF_UNIX && un->sun_path[0] ? un->sun_path
							     : NULL;
}

static int worker_init(struct tool_worker *t)
{
	struct worker *w = (struct worker *)t;
	const struct cfg *cfg = w->cfg;
	int r = rio_bufpool_create(w->t.loop, cfg->com.buf_count,
				   cfg->com.buf_size, &w->pool);
	if (r < 0) {
		fprintf(stderr, "ringio-proxy: buffer pool: %s\n", rio_strerror(r));
		return r;
	}
	w->ro = (rio_relay_opts){.pool = w->pool,
				 .splice = cfg->com.splice,
				 .idle_ns = cfg->com.idle_ms * 1000000ull};
	/* --fail-timeout 0: a failed upstream is not held back at all */
	rio_upstreams_opts uo = {.try_ns = cfg->connect_ms * 1000000ull,
				 .retry_ns = cfg->fail_ms ? cfg->fail_ms * 1000000ull
							  : 1,
				 .first = (unsigned)w->t.idx};
	r = rio_upstreams_create(cfg->up, (unsigned)cfg->nup, &uo, &w->ups);
	if (r < 0)
		return r;
	/* threads start on different upstreams (.first) */
	for (int i = 0; i < cfg->nlisten; i++) {
		w->lfd[i] = listen_on(&cfg->listen[i]);
		if (w->lfd[i] < 0) {
			char text[128];
			rio_addr_format(&cfg->listen[i], text, sizeof text);
			fprintf(stderr, "ringio-proxy: listen on %s: %s\n", text,
				rio_strerror(w->lfd[i]));
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

/* Stop: no more clients; every session ends now (a relay or a connect
 * is cancelled, and its session closes when it completes; one waiting
 * for an fd closes at once). */
static void worker_stop(struct tool_worker *t)
{
	struct worker *w = (struct worker *)t;
	w->stopping = 1;
	for (int i = 0; i < w->cfg->nlisten; i++)
		if (w->l[i])
			rio_listener_stop(w->l[i]);
	if (rio_op_in_flight(&w->fdwait_timer))
		rio_cancel(w->t.loop, &w->fdwait_cancel, &w->fdwait_timer,
			   nop_cb);
	struct tool_node *n = w->sessions.head;
	while (n) {
		struct tool_node *next = n->next;
		struct session *s = RIO_CONTAINER_OF(n, struct session, node);
		if (rio_op_in_flight(&s->conn.op))
			rio_cancel(w->t.loop, &s->cancel_op, &s->conn.op, nop_cb);
		else if (rio_op_in_flight(&s->relay.op))
			rio_cancel(w->t.loop, &s->cancel_op, &s->relay.op, nop_cb);
		else
			session_close(s);
		n = next;
	}
}

static const struct tool_worker_ops worker_ops = {
	.prog = "ringio-proxy",
	.init = worker_init,
	.stop = worker_stop,
};

static void worker_fini(struct worker *w)
{
	for (int i = 0; i < w->cfg->nlisten; i++) {
		if (w->l[i])
			rio_listener_destroy(w->l[i]);
		if (w->l[i])
			close(w->lfd[i]);
	}
	if (w->ups)
		rio_upstreams_destroy(w->ups);
	if (w->pool)
		rio_bufpool_destroy(w->pool);
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
		"ADDR is numeric IPv4, IPv6 in brackets ([::1]:8080), or a "
		"unix-domain socket:\nunix:PATH (a stale socket file there is "
		"taken over, and removed at exit)\nor unix:@NAME (abstract); "
		"--listen unix: takes --threads 1\n"
		"Defaults: --connect-timeout 3000, --fail-timeout 10000, "
		"--idle-timeout 600000\n(a session that moves nothing for 10 "
		"minutes ends; 0 keeps it forever)\n");
}

/* An address (or every address of a name), appended to list[*n] */
static int parse_addr(const char *text, rio_addr *list, int *n)
{
	return tool_resolve("ringio-proxy", text, list, n, MAX_ADDRS);
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
	rio_upstream_counters u = {0};
	for (int i = 0; i < n; i++) {
		tool_count(&sum, ws[i].t.loop, ws[i].l, ws[i].cfg->nlisten);
		tool_add_u64s(&t, &ws[i].st, sizeof t);
		if (ws[i].ups) {
			rio_upstream_counters k;
			rio_upstreams_counters(ws[i].ups, -1, &k);
			tool_add_u64s(&u, &k, sizeof u);
		}
	}
	tool_print_counters("ringio-proxy", &sum,
			    " upstream_ok=%" PRIu64 " upstream_refused=%" PRIu64
			    " upstream_timeouts=%" PRIu64
			    " upstream_other=%" PRIu64 " no_upstream=%" PRIu64
			    " idle_closed=%" PRIu64 " bytes_up=%" PRIu64
			    " bytes_down=%" PRIu64 " sessions_done=%" PRIu64
			    " spliced_dirs=%" PRIu64 " fd_waits=%" PRIu64
			    " fd_shed=%" PRIu64,
			    u.connected, u.refused, u.timeouts, u.other,
			    u.exhausted, t.idle_closed, t.bytes_up,
			    t.bytes_down, t.sessions_done, t.spliced_dirs,
			    t.fd_waits, t.fd_shed);
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
			  .com.splice = RIO_SPLICE_AUTO};
	if (parse_args(argc, argv, &cfg) < 0 ||
	    tool_preflight("ringio-proxy", &cfg.com) < 0)
		return 2;
	for (int i = 0; i < cfg.nlisten; i++)
		if (cfg.listen[i].ss.ss_family == AF_UNIX && cfg.com.threads > 1) {
			fprintf(stderr, "ringio-proxy: --listen on a unix socket "
				"takes --threads 1 (threads share an IP port "
				"through SO_REUSEPORT; a unix path has one "
				"listener)\n");
			return 2;
		}
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
	}
	/* Worker 0 runs on this thread; the others set up on their own. */
	if (tool_worker_start(&ws[0].t) < 0)
		return 1;
	/* A --listen port 0 is the port worker 0 got, for every thread; say
	 * which. */
	char where[MAX_ADDRS * 128] = "";
	size_t wl = 0;
	for (int i = 0; i < cfg.nlisten; i++) {
		rio_addr *a = &cfg.listen[i];
		in_port_t *port = a->ss.ss_family == AF_INET6
			? &((struct sockaddr_in6 *)&a->ss)->sin6_port
			: &((struct sockaddr_in *)&a->ss)->sin_port;
		if (a->ss.ss_family != AF_UNIX && *port == 0)
			*port = htons((uint16_t)rio_local_port(ws[0].lfd[i]));
		char text[128];
		if (rio_addr_format(a, text, sizeof text) < 0)
			snprintf(text, sizeof text, "?");
		int k = snprintf(where + wl, sizeof where - wl, "%s%s",
				 i ? ", " : "", text);
		if (k > 0 && (size_t)k < sizeof where - wl)
			wl += (size_t)k;
	}
	const char *why;
	rio_loop_backend(ws[0].t.loop, NULL, &why);
	fprintf(stderr, "ringio-proxy: %d listener(s) on %s, %d upstream(s), "
		"%d thread(s), %s\n", cfg.nlisten, where, cfg.nup,
		cfg.com.threads, why);
	if (tool_catch_signals("ringio-proxy", ws[0].t.loop) < 0)
		return 1;
	int rc = tool_run_threads("ringio-proxy", ws, sizeof *ws, cfg.com.threads,
				  tool_worker_run) < 0;
	report(ws, cfg.com.threads);
	for (int i = 0; i < cfg.com.threads; i++) {
		if (ws[i].t.err)
			rc = 1;
		worker_fini(&ws[i]);
	}
	for (int i = 0; i < cfg.nlisten; i++) /* the files we made */
		if (unix_path(&cfg.listen[i]))
			unlink(unix_path(&cfg.listen[i]));
	free(ws);
	return rc;
}

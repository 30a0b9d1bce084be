/*
 * ringio-echo: an echo server on ringio. One loop per thread, each with its
 * own SO_REUSEPORT listener; each connection is one rio_relay from the
 * socket back to itself (the library's relay: a multishot recv into the
 * thread's buffer pool, each buffer sent straight back, reads paused while
 * too much waits to be echoed, so one slow reader cannot hold the whole
 * pool). With --splice auto (the default) a connection that fills a whole
 * buffer in one recv is bulk: it moves on to a pipe of its own, and its
 * bytes go back out without ever being copied into user memory.
 *
 * Accepting goes through rio_listener (the accept policy: client errors
 * retried, load errors backed off, fatal errors reported). A connection
 * that moves nothing for --idle-timeout (a first read included) ends: the
 * relay's own idle timer. SIGINT/SIGTERM shut down gracefully: stop
 * accepting, drain every relay (no more reads; what was read is echoed;
 * an idle one ends at once), close the rest after --drain-timeout (or at
 * a second signal: every op of the loop cancelled), print the counters,
 * exit 0.
 *
 * --udp: each thread also echoes datagrams on a UDP socket of the same
 * address and port (SO_REUSEPORT: the kernel spreads senders over the
 * threads): a multishot rio_recvmsg_multishot into a pool of datagram
 * buffers, each datagram sent back from its buffer to its sender with
 * rio_sendto, the buffer given back when the send completes.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <ringio.h>

#include "tool.h"

struct cfg {
	const char *addr;
	int port;
	const char *unix_path; /* --unix: thread 0 listens there too */
	rio_addr un;
	struct tool_common com; /* --threads, --backend, --idle-timeout,
				 * --buf-count, --buf-size, --splice */
	uint64_t drain_ms; /* graceful shutdown: how long in-flight echoes get */
	unsigned max_conns; /* per thread; 0: no limit */
	int udp;            /* --udp */
};

/* Datagram buffers: the largest UDP datagram fits whole after the
 * headroom, so none is cut. */
enum { UDP_BUFS = 256, UDP_BUF_SIZE = 65536 + RIO_DGRAM_HEADROOM };

struct worker {
	struct tool_worker t; /* first: its loop, slot and error */
	const struct cfg *cfg;
	rio_bufpool *pool;
	rio_relay_opts ro;
	int lfd[2];         /* TCP; unix (--unix, thread 0) */
	rio_listener *l[2];
	int nl;
	struct tool_list conns; /* relaying (not yet closing) */
	rio_op drain_op;        /* the drain deadline */
	rio_op cancel_drain_op;
	int draining;
	uint64_t idle_closed, resets, spliced;
	/* --udp */
	int ufd;
	rio_bufpool *upool;
	rio_op urecv, ucancel;
	rio_op *usend;          /* one per datagram buffer, by its id */
	int uerr_run;           /* receive errors in a row */
	uint64_t datagrams, truncated, udp_errors;
};

struct conn {
	struct worker *w;
	rio_listener *l; /* that accepted it */
	int fd;
	struct tool_node node; /* on w->conns until its relay ends */
	rio_relay relay;       /* fd back to fd */
	rio_op close_op, cancel_op;
};

static void nop_cb(rio_loop *loop, rio_op *op, int res)
{
}

/* The drain is over when no connection is left open: end its timer. */
static void drain_check(struct worker *w)
{
	if (w->draining && !w->conns.head &&
	    rio_op_in_flight(&w->drain_op) &&
	    !rio_op_in_flight(&w->cancel_drain_op))
		rio_cancel(w->t.loop, &w->cancel_drain_op, &w->drain_op, nop_cb);
}

static void close_cb(rio_loop *loop, rio_op *op, int res)
{
	struct conn *c = RIO_CONTAINER_OF(op, struct conn, close_op);
	rio_listener_release(c->l);
	free(c);
}

/* The relay is over (every op of it done): count why, close the socket. */
static void relay_done(rio_loop *loop, rio_op *op, int res)
{
	struct conn *c = RIO_CONTAINER_OF(op, struct conn, relay.op);
	struct worker *w = c->w;
	rio_relay_counters k;
	rio_relay_get_counters(&c->relay, &k);
	w->spliced += k.spliced[0];
	if (res == -ETIMEDOUT)
		w->idle_closed++;
	else if (res == -ECONNRESET)
		w->resets++;
	tool_list_del(&w->conns, &c->node);
	rio_close(loop, &c->close_op, c->fd, close_cb);
	drain_check(w);
}

static void on_accept(rio_listener *l, rio_loop *loop, int fd,
		      const struct sockaddr *peer, socklen_t peer_len,
		      void *data)
{
	struct worker *w = data;
	struct conn *c = calloc(1, sizeof *c);
	if (!c) {
		close(fd);
		rio_listener_release(l);
		return;
	}
	c->w = w;
	c->l = l;
	c->fd = fd;
	rio_set_nodelay(fd, 1); /* fails on a unix socket: nothing to do */
	tool_list_add(&w->conns, &c->node);
	rio_relay_start(loop, &c->relay, fd, fd, &w->ro, relay_done);
}

static void udp_arm(struct worker *w);

static void udp_sent(rio_loop *loop, rio_op *op, int res)
{
	struct worker *w = op->data;
	if (res < 0)
		w->udp_errors++;
	rio_bufpool_put(w->upool, (uint16_t)(op - w->usend));
}

/* A datagram: back to its sender from its own buffer. A cut one (it
 * cannot be, with buffers this size) is counted and dropped. */
static void udp_recv(rio_loop *loop, rio_op *op, int res)
{
	struct worker *w = RIO_CONTAINER_OF(op, struct worker, urecv);
	if (op->flags & RIO_OP_F_BUF) {
		rio_op *s = &w->usend[op->buf_id];
		rio_dgram d;
		w->datagrams++;
		w->uerr_run = 0;
		if (op->flags & RIO_OP_F_TRUNC)
			w->truncated++;
		else if (!w->draining && rio_dgram_get(op, &d) == 0 && d.peer &&
			 rio_sendto(loop, s, w->ufd, d.data, d.len, 0, d.peer,
				    d.peer_len, udp_sent) == 0)
			return;
		rio_bufpool_put(w->upool, op->buf_id);
	}
	if ((op->flags & RIO_OP_F_MORE) || res == -ECANCELED || w->draining)
		return;
	/* an error ended it: again, unless it keeps failing */
	w->udp_errors++;
	if (++w->uerr_run <= 8) {
		udp_arm(w);
		return;
	}
	fprintf(stderr, "ringio-echo: udp receive: %s\n", rio_strerror(res));
	w->t.err = res;
}

static void udp_arm(struct worker *w)
{
	int r = rio_recvmsg_multishot(w->t.loop, &w->urecv, w->ufd, w->upool,
				      0, udp_recv);
	if (r < 0) {
		fprintf(stderr, "ringio-echo: udp receive: %s\n",
			rio_strerror(r));
		w->t.err = r;
	}
}

static void udp_stop(struct worker *w)
{
	if (rio_op_in_flight(&w->urecv) && !rio_op_in_flight(&w->ucancel))
		rio_cancel(w->t.loop, &w->ucancel, &w->urecv, nop_cb);
}

/* The datagram socket and its buffers; bound before the TCP listener, so
 * that a client who sees the TCP port open finds the UDP one bound too.
 * *port 0: it picks the port, which TCP then takes as well. */
static int udp_init(struct worker *w, int *port)
{
	const struct cfg *cfg = w->cfg;
	int r = rio_bufpool_create(w->t.loop, UDP_BUFS, UDP_BUF_SIZE, &w->upool);
	w->usend = calloc(UDP_BUFS, sizeof *w->usend);
	if (r < 0 || !w->usend) {
		fprintf(stderr, "ringio-echo: datagram buffers: %s\n",
			rio_strerror(r < 0 ? r : -ENOMEM));
		return r < 0 ? r : -ENOMEM;
	}
	for (int i = 0; i < UDP_BUFS; i++)
		w->usend[i].data = w;
	w->ufd = rio_bind_udp(cfg->addr, (uint16_t)*port, RIO_SOCK_REUSEPORT);
	if (w->ufd < 0) {
		fprintf(stderr, "ringio-echo: udp on %s:%d: %s\n", cfg->addr,
			*port, rio_strerror(w->ufd));
		return w->ufd;
	}
	*port = rio_local_port(w->ufd);
	udp_arm(w);
	return w->t.err;
}

static void on_listener_stop(rio_listener *l, int err, void *data)
{
	struct worker *w = data;
	if (err) {
		fprintf(stderr, "ringio-echo: listener stopped: %s\n",
			rio_strerror(err));
		w->t.err = err;
	}
}

static void close_all(struct worker *w)
{
	for (struct tool_node *n = w->conns.head; n; n = n->next) {
		struct conn *c = RIO_CONTAINER_OF(n, struct conn, node);
		if (!rio_op_in_flight(&c->cancel_op))
			rio_cancel(w->t.loop, &c->cancel_op, &c->relay.op, nop_cb);
	}
	udp_stop(w);
}

static void drain_cb(rio_loop *loop, rio_op *op, int res)
{
	if (res == 0)
		close_all(RIO_CONTAINER_OF(op, struct worker, drain_op));
}

/* Graceful shutdown: stop accepting; every relay stops reading, echoes
 * what it read and ends (an idle one at once); after drain_ms the rest
 * are cancelled. */
static void drain(struct tool_worker *t)
{
	struct worker *w = (struct worker *)t;
	w->draining = 1;
	for (int i = 0; i < w->nl; i++)
		rio_listener_stop(w->l[i]); /* -EALREADY: it stopped itself */
	for (struct tool_node *n = w->conns.head; n; n = n->next)
		rio_relay_drain(&RIO_CONTAINER_OF(n, struct conn, node)->relay);
	udp_stop(w); /* echoes under way complete on their own */
	if (w->conns.head)
		rio_timeout(w->t.loop, &w->drain_op, w->cfg->drain_ms * 1000000ull,
			    drain_cb);
}

static int worker_init(struct tool_worker *t)
{
	struct worker *w = (struct worker *)t;
	const struct cfg *cfg = w->cfg;
	int r = rio_bufpool_create(w->t.loop, cfg->com.buf_count,
				   cfg->com.buf_size, &w->pool);
	if (r < 0) {
		fprintf(stderr, "ringio-echo: buffer pool: %s\n", rio_strerror(r));
		return r;
	}
	w->ro = (rio_relay_opts){.pool = w->pool,
				 .splice = cfg->com.splice,
				 .idle_ns = cfg->com.idle_ms * 1000000ull};
	int port = cfg->port;
	if (cfg->udp && (r = udp_init(w, &port)) < 0)
		return r;
	w->lfd[0] = rio_listen_tcp(cfg->addr, (uint16_t)port, 4096,
				   RIO_SOCK_REUSEPORT);
	if (w->lfd[0] < 0) {
		fprintf(stderr, "ringio-echo: listen on %s:%d: %s\n", cfg->addr,
			port, rio_strerror(w->lfd[0]));
		return w->lfd[0];
	}
	w->nl = 1;
	if (cfg->unix_path && w->t.idx == 0) {
		/* one listener on a path: thread 0's */
		w->lfd[1] = rio_listen_addr(&cfg->un, 4096, RIO_SOCK_UNLINK);
		if (w->lfd[1] < 0) {
			fprintf(stderr, "ringio-echo: listen on unix:%s: %s\n",
				cfg->unix_path, rio_strerror(w->lfd[1]));
			return w->lfd[1];
		}
		w->nl = 2;
	}
	rio_listener_opts lo = {.on_accept = on_accept,
				.on_stop = on_listener_stop,
				.data = w,
				.max_conns = cfg->max_conns};
	for (int i = 0; i < w->nl; i++) {
		r = rio_listener_start(w->t.loop, w->lfd[i], &lo, &w->l[i]);
		if (r < 0)
			return r;
	}
	return 0;
}

static void usage(FILE *f)
{
	fprintf(f, "usage: ringio-echo --port P [--addr A] [--unix PATH] "
		   "[--udp] [--max-conns N]\n  [--drain-timeout MS]\n"
		   TOOL_COMMON_USAGE
		   "--unix PATH: echo on a unix-domain socket too (@NAME: "
		   "abstract); a stale socket\nfile there is taken over, and "
		   "removed at exit\n"
		   "--udp: echo datagrams on the same address and port too, "
		   "one socket per thread\n");
}

static int parse_args(int argc, char **argv, struct cfg *cfg)
{
	const struct tool_flag flags[] = {
		TOOL_NUM("port", 'p', cfg->port, 0, 65535),
		TOOL_ARG("addr", 'a', tool_parse_string, &cfg->addr),
		TOOL_ARG("unix", 'u', tool_parse_string, &cfg->unix_path),
		TOOL_NUM("max-conns", 'm', cfg->max_conns, 0, 1 << 24),
		TOOL_NUM("drain-timeout", 'd', cfg->drain_ms, 0, 86400000),
		TOOL_SWITCH("udp", 'U', cfg->udp),
		TOOL_FLAGS_END,
	};
	if (tool_parse_flags("ringio-echo", argc, argv, flags, &cfg->com,
			     usage) < 0)
		return -EINVAL;
	if (cfg->port < 0) {
		fprintf(stderr, "ringio-echo: --port is required\n");
		usage(stderr);
		return -EINVAL;
	}
	struct sockaddr_storage ss;
	socklen_t len;
	if (rio_sockaddr(cfg->addr, 0, &ss, &len) < 0) {
		fprintf(stderr, "ringio-echo: --addr '%s' is not a numeric "
				"IPv4/IPv6 address\n", cfg->addr);
		return -EINVAL;
	}
	if (cfg->unix_path) {
		char text[160];
		int r = -ENAMETOOLONG;
		if (strlen(cfg->unix_path) < sizeof text - 5) {
			snprintf(text, sizeof text, "unix:%s", cfg->unix_path);
			r = rio_addr_parse(text, &cfg->un);
		}
		if (r < 0) {
			fprintf(stderr, "ringio-echo: --unix '%s': %s\n",
				cfg->unix_path, r == -ENAMETOOLONG
						? "a unix path takes 107 bytes "
						  "at most"
						: "an empty name");
			return -EINVAL;
		}
	}
	/* --max-conns is for the process: each thread takes its share */
	if (cfg->max_conns)
		cfg->max_conns = (cfg->max_conns + (unsigned)cfg->com.threads - 1) /
				 (unsigned)cfg->com.threads;
	return 0;
}

static const struct tool_worker_ops worker_ops = {
	.prog = "ringio-echo",
	.init = worker_init,
	.stop = drain,     /* the first signal: drain */
};

/* Two lines of counters, summed over the threads, on stdout. */
static void report(struct worker *ws, int n)
{
	struct tool_counters sum = {0};
	uint64_t idle = 0, resets = 0, spliced = 0, dg = 0, cut = 0, uerr = 0;
	for (int i = 0; i < n; i++) {
		tool_count(&sum, ws[i].t.loop, ws[i].l, ws[i].nl);
		idle += ws[i].idle_closed;
		resets += ws[i].resets;
		spliced += ws[i].spliced;
		dg += ws[i].datagrams;
		cut += ws[i].truncated;
		uerr += ws[i].udp_errors;
	}
	tool_print_counters("ringio-echo", &sum,
			    " idle_closed=%" PRIu64 " resets=%" PRIu64
			    " spliced=%" PRIu64 " datagrams=%" PRIu64
			    " truncated=%" PRIu64 " udp_errors=%" PRIu64,
			    idle, resets, spliced, dg, cut, uerr);
}

static void worker_fini(struct worker *w)
{
	for (int i = 0; i < w->nl; i++)
		if (w->l[i] && rio_listener_destroy(w->l[i]) == 0)
			w->l[i] = NULL;
	if (w->pool)
		rio_bufpool_destroy(w->pool);
	if (w->upool)
		rio_bufpool_destroy(w->upool);
	free(w->usend);
	if (w->ufd >= 0)
		close(w->ufd);
	if (w->t.loop && rio_loop_destroy(w->t.loop) < 0)
		fprintf(stderr, "ringio-echo: loop still busy at exit\n");
	for (int i = 0; i < 2; i++)
		if (w->lfd[i] >= 0)
			close(w->lfd[i]);
}

int main(int argc, char **argv)
{
	/* 64 KiB buffers: a 64 KiB message in one recv and one send (16 KiB
	 * buffers cost ~1.35x the CPU per round trip at that size). */
	struct cfg cfg = {.addr = "127.0.0.1", .port = -1, .com.threads = 1,
			  .com.buf_count = 1024, .com.buf_size = 65536,
			  .com.splice = RIO_SPLICE_AUTO, .drain_ms = 5000};
	if (parse_args(argc, argv, &cfg) < 0 ||
	    tool_preflight("ringio-echo", &cfg.com) < 0)
		return 2;
	struct worker *ws = calloc((size_t)cfg.com.threads, sizeof *ws);
	if (!ws)
		return 1;
	signal(SIGPIPE, SIG_IGN);
	for (int i = 0; i < cfg.com.threads; i++) {
		ws[i].cfg = &cfg;
		ws[i].lfd[0] = ws[i].lfd[1] = ws[i].ufd = -1;
		ws[i].t.idx = i;
		ws[i].t.ops = &worker_ops;
		ws[i].t.backend = cfg.com.backend;
	}
	/* Worker 0 runs on this thread; the others set up on their own. */
	if (tool_worker_start(&ws[0].t) < 0)
		return 1;
	/* with --port 0 every thread shares the first one's port */
	if (cfg.port == 0)
		cfg.port = rio_local_port(ws[0].lfd[0]);
	const char *why;
	rio_loop_backend(ws[0].t.loop, NULL, &why);
	fprintf(stderr, "ringio-echo: listening on %s:%d%s%s%s, %d thread(s), "
		"%s\n", cfg.addr, cfg.port, cfg.udp ? " (tcp and udp)" : "",
		cfg.unix_path ? " and unix:" : "",
		cfg.unix_path ? cfg.unix_path : "", cfg.com.threads, why);
	if (tool_catch_signals("ringio-echo", ws[0].t.loop) < 0)
		return 1;
	int rc = tool_run_threads("ringio-echo", ws, sizeof *ws, cfg.com.threads,
				  tool_worker_run) < 0;
	report(ws, cfg.com.threads);
	for (int i = 0; i < cfg.com.threads; i++) {
		if (ws[i].t.err)
			rc = 1;
		worker_fini(&ws[i]);
	}
	free(ws);
	if (cfg.unix_path && cfg.unix_path[0] != '@')
		unlink(cfg.unix_path); /* the file its listener made */
	return rc;
}

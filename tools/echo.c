/*
 * ringio-echo: an echo server on ringio. One loop per thread, each with its
 * own SO_REUSEPORT listener; multishot accept, multishot recv into a buffer
 * pool, and the received buffer sent straight back (no copy). A connection
 * queues the buffers it has not yet echoed; past Q_HIGH of them (a client
 * that sends but does not read) its receive is cancelled, and re-armed when
 * the queue drains to Q_LOW, so one slow reader cannot hold the whole pool.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <ringio.h>

#define container_of(p, T, m) ((T *)((char *)(p) - offsetof(T, m)))

struct cfg {
	const char *addr;
	int port;
	int threads;
	rio_backend_kind backend;
	unsigned buf_count;
	size_t buf_size;
};

struct worker {
	const struct cfg *cfg;
	rio_loop *loop;
	rio_bufpool *pool;
	int lfd;
	rio_op accept_op;
	rio_op retry_op; /* backoff timer after a load error on accept */
	uint16_t *next;  /* per buffer id: the next queued buffer, or NONE */
	uint32_t *len;   /* per buffer id: bytes received into it */
	uint64_t conns, accept_errors;
	pthread_t tid;
	int err;
};

#define NONE 0xffffu
enum { Q_HIGH = 16, Q_LOW = 4 };

struct conn {
	struct worker *w;
	int fd;
	int recv_done;  /* the multishot recv has ended for good */
	int paused;     /* its recv is (being) cancelled for backpressure */
	int closing, closed;
	uint16_t head, tail; /* queue of received buffers to echo */
	uint16_t qlen;
	uint32_t off;        /* bytes of `head` already sent */
	rio_op recv_op, send_op, close_op, pause_op;
};

static rio_loop *volatile loops[256];
static volatile int nloops;

static void on_signal(int sig)
{
	(void)sig;
	for (int i = 0; i < nloops; i++)
		if (loops[i])
			rio_loop_stop(loops[i]);
}

static void release_queue(struct conn *c)
{
	struct worker *w = c->w;
	while (c->head != NONE) {
		uint16_t id = c->head;
		c->head = w->next[id];
		rio_bufpool_put(w->pool, id);
	}
	c->tail = NONE;
	c->qlen = 0;
}

static void conn_free(struct conn *c)
{
	/* the backpressure cancel is the one op not tied to the fd */
	if (c->closed && !rio_op_in_flight(&c->pause_op))
		free(c);
}

static void close_cb(rio_loop *loop, rio_op *op, int res)
{
	struct conn *c = container_of(op, struct conn, close_op);
	release_queue(c);
	c->closed = 1;
	conn_free(c);
}

static void pause_cb(rio_loop *loop, rio_op *op, int res)
{
	conn_free(container_of(op, struct conn, pause_op));
}

static void conn_close(struct conn *c)
{
	if (c->closing)
		return;
	c->closing = 1;
	rio_close(c->w->loop, &c->close_op, c->fd, close_cb);
}

static void send_cb(rio_loop *loop, rio_op *op, int res);
static void recv_cb(rio_loop *loop, rio_op *op, int res);

static void send_head(struct conn *c)
{
	struct worker *w = c->w;
	uint16_t id = c->head;
	char *p = rio_bufpool_buf(w->pool, id);
	rio_send(w->loop, &c->send_op, c->fd, p + c->off, w->len[id] - c->off,
		 0, send_cb);
}

static void send_cb(rio_loop *loop, rio_op *op, int res)
{
	struct conn *c = container_of(op, struct conn, send_op);
	struct worker *w = c->w;
	if (c->closing)
		return;
	if (res <= 0) {
		conn_close(c);
		return;
	}
	c->off += (uint32_t)res;
	if (c->off == w->len[c->head]) {
		uint16_t id = c->head;
		c->head = w->next[id];
		if (c->head == NONE)
			c->tail = NONE;
		c->off = 0;
		c->qlen--;
		rio_bufpool_put(w->pool, id);
		if (c->paused && c->qlen <= Q_LOW &&
		    !rio_op_in_flight(&c->recv_op)) {
			c->paused = 0;
			rio_recv_multishot(loop, &c->recv_op, c->fd, w->pool,
					   recv_cb);
		}
	}
	if (c->head != NONE)
		send_head(c);
	else if (c->recv_done)
		conn_close(c);
}

static void recv_cb(rio_loop *loop, rio_op *op, int res)
{
	struct conn *c = container_of(op, struct conn, recv_op);
	struct worker *w = c->w;
	if (op->flags & RIO_OP_F_BUF) {
		uint16_t id = op->buf_id;
		if (c->closing) {
			rio_bufpool_put(w->pool, id);
		} else {
			w->len[id] = (uint32_t)res;
			w->next[id] = NONE;
			int idle = c->head == NONE;
			if (idle)
				c->head = id;
			else
				w->next[c->tail] = id;
			c->tail = id;
			c->qlen++;
			if (idle)
				send_head(c);
			if (c->qlen >= Q_HIGH && !c->paused &&
			    (op->flags & RIO_OP_F_MORE)) {
				c->paused = 1;
				rio_cancel(loop, &c->pause_op, op, pause_cb);
			}
		}
	}
	if (op->flags & RIO_OP_F_MORE)
		return;
	if (res == -ECANCELED && c->paused && !c->closing) {
		/* paused for backpressure: send_cb re-arms it */
		if (c->qlen <= Q_LOW) {
			c->paused = 0;
			rio_recv_multishot(loop, op, c->fd, w->pool, recv_cb);
		}
		return;
	}
	c->recv_done = 1;
	if (res < 0 || c->head == NONE)
		conn_close(c);
}

static void accept_cb(rio_loop *loop, rio_op *op, int res);

static void retry_cb(rio_loop *loop, rio_op *op, int res)
{
	struct worker *w = container_of(op, struct worker, retry_op);
	rio_accept(loop, &w->accept_op, w->lfd, NULL, NULL, RIO_MULTISHOT,
		   accept_cb);
}

static void accept_failed(struct worker *w, int res)
{
	w->accept_errors++;
	switch (-res) {
	case EMFILE: case ENFILE: case ENOBUFS: case ENOMEM:
		/* out of resources: back off instead of spinning */
		rio_timeout(w->loop, &w->retry_op, 50 * 1000000ull, retry_cb);
		return;
	case ECANCELED: case EBADF: case EINVAL: case ENOTSOCK:
		fprintf(stderr, "ringio-echo: accept: %s\n", rio_strerror(res));
		w->err = res;
		return;
	default: /* the client's fault: accept again at once */
		retry_cb(w->loop, &w->retry_op, 0);
	}
}

static void accept_cb(rio_loop *loop, rio_op *op, int res)
{
	struct worker *w = container_of(op, struct worker, accept_op);
	if (res >= 0) {
		struct conn *c = calloc(1, sizeof *c);
		if (!c) {
			close(res);
		} else {
			w->conns++;
			c->w = w;
			c->fd = res;
			c->head = c->tail = NONE;
			rio_set_nodelay(res, 1);
			rio_recv_multishot(loop, &c->recv_op, res, w->pool,
					   recv_cb);
		}
	}
	if (!(op->flags & RIO_OP_F_MORE))
		accept_failed(w, res < 0 ? res : -EINVAL);
}

static int worker_init(struct worker *w)
{
	const struct cfg *cfg = w->cfg;
	rio_loop_opts o = {.backend = cfg->backend, .sq_entries = 1024};
	int r = rio_loop_create(&w->loop, &o);
	if (r < 0) {
		fprintf(stderr, "ringio-echo: loop: %s\n", rio_strerror(r));
		return r;
	}
	r = rio_bufpool_create(w->loop, cfg->buf_count, cfg->buf_size, &w->pool);
	if (r < 0) {
		fprintf(stderr, "ringio-echo: buffer pool: %s\n", rio_strerror(r));
		return r;
	}
	w->next = calloc(cfg->buf_count, sizeof *w->next);
	w->len = calloc(cfg->buf_count, sizeof *w->len);
	if (!w->next || !w->len)
		return -ENOMEM;
	w->lfd = rio_listen_tcp(cfg->addr, (uint16_t)cfg->port, 4096,
				RIO_SOCK_REUSEPORT);
	if (w->lfd < 0) {
		fprintf(stderr, "ringio-echo: listen on %s:%d: %s\n", cfg->addr,
			cfg->port, rio_strerror(w->lfd));
		return w->lfd;
	}
	return rio_accept(w->loop, &w->accept_op, w->lfd, NULL, NULL,
			  RIO_MULTISHOT, accept_cb);
}

static void *worker_run(void *arg)
{
	struct worker *w = arg;
	int r = rio_loop_run(w->loop, RIO_RUN_DEFAULT);
	if (r < 0)
		w->err = r;
	return NULL;
}

static void usage(FILE *f)
{
	fprintf(f, "usage: ringio-echo --port P [--addr A] [--threads N] "
		   "[--backend auto|uring|epoll|kqueue]\n"
		   "                   [--buf-count N (power of 2)] "
		   "[--buf-size BYTES]\n");
}

static int parse_int(const char *s, long lo, long hi, long *out)
{
	char *end;
	errno = 0;
	long v = strtol(s, &end, 10);
	if (errno || end == s || *end || v < lo || v > hi)
		return -EINVAL;
	*out = v;
	return 0;
}

static int parse_args(int argc, char **argv, struct cfg *cfg)
{
	static const struct option opts[] = {
		{"port", required_argument, 0, 'p'},
		{"addr", required_argument, 0, 'a'},
		{"threads", required_argument, 0, 't'},
		{"backend", required_argument, 0, 'b'},
		{"buf-count", required_argument, 0, 'n'},
		{"buf-size", required_argument, 0, 's'},
		{"help", no_argument, 0, 'h'},
		{0, 0, 0, 0},
	};
	int c;
	long v;
	while ((c = getopt_long(argc, argv, "p:a:t:b:n:s:h", opts, NULL)) != -1) {
		const char *bad = NULL;
		switch (c) {
		case 'p':
			if (parse_int(optarg, 0, 65535, &v)) bad = "--port";
			else cfg->port = (int)v;
			break;
		case 'a':
			cfg->addr = optarg;
			break;
		case 't':
			if (parse_int(optarg, 1, 256, &v)) bad = "--threads";
			else cfg->threads = (int)v;
			break;
		case 'b':
			v = rio_backend_parse(optarg);
			if (v < 0) bad = "--backend";
			else cfg->backend = (rio_backend_kind)v;
			break;
		case 'n':
			if (parse_int(optarg, 1, 32768, &v) || (v & (v - 1)))
				bad = "--buf-count";
			else cfg->buf_count = (unsigned)v;
			break;
		case 's':
			if (parse_int(optarg, 64, 1 << 24, &v)) bad = "--buf-size";
			else cfg->buf_size = (size_t)v;
			break;
		case 'h':
			usage(stdout);
			exit(0);
		default:
			usage(stderr);
			return -EINVAL;
		}
		if (bad) {
			fprintf(stderr, "ringio-echo: invalid value for %s: '%s'\n",
				bad, optarg);
			return -EINVAL;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "ringio-echo: unexpected argument '%s'\n",
			argv[optind]);
		return -EINVAL;
	}
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
	return 0;
}

static void report(struct worker *ws, int n)
{
	rio_counters t = {0};
	uint64_t conns = 0, aerr = 0;
	for (int i = 0; i < n; i++) {
		rio_counters c;
		if (!ws[i].loop)
			continue;
		rio_loop_counters(ws[i].loop, &c);
		t.ops_submitted += c.ops_submitted;
		t.completions += c.completions;
		t.cq_overflows += c.cq_overflows;
		t.enobufs_rearms += c.enobufs_rearms;
		t.multishot_rearms += c.multishot_rearms;
		t.enters += c.enters;
		conns += ws[i].conns;
		aerr += ws[i].accept_errors;
	}
	fprintf(stderr,
		"ringio-echo: connections=%" PRIu64 " accept_errors=%" PRIu64
		" ops=%" PRIu64 " completions=%" PRIu64 " enters=%" PRIu64
		" cq_overflows=%" PRIu64 " enobufs_rearms=%" PRIu64
		" multishot_rearms=%" PRIu64 "\n",
		conns, aerr, t.ops_submitted, t.completions, t.enters,
		t.cq_overflows, t.enobufs_rearms, t.multishot_rearms);
}

int main(int argc, char **argv)
{
	/* 64 KiB buffers: a 64 KiB message in one recv and one send (16 KiB
	 * buffers cost ~1.35x the CPU per round trip at that size). */
	struct cfg cfg = {.addr = "127.0.0.1", .port = -1, .threads = 1,
			  .buf_count = 1024, .buf_size = 65536};
	if (parse_args(argc, argv, &cfg) < 0)
		return 2;
	struct worker *ws = calloc((size_t)cfg.threads, sizeof *ws);
	if (!ws)
		return 1;
	signal(SIGPIPE, SIG_IGN);
	for (int i = 0; i < cfg.threads; i++) {
		ws[i].cfg = &cfg;
		if (worker_init(&ws[i]) < 0)
			return 1;
		loops[i] = ws[i].loop;
		nloops = i + 1;
		/* with --port 0 every thread shares the first one's port */
		if (cfg.port == 0)
			cfg.port = rio_local_port(ws[i].lfd);
	}
	const char *why;
	rio_loop_backend(ws[0].loop, NULL, &why);
	fprintf(stderr, "ringio-echo: listening on %s:%d, %d thread(s), %s\n",
		cfg.addr, cfg.port, cfg.threads, why);
	struct sigaction sa = {.sa_handler = on_signal};
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	for (int i = 1; i < cfg.threads; i++)
		pthread_create(&ws[i].tid, NULL, worker_run, &ws[i]);
	worker_run(&ws[0]);
	for (int i = 1; i < cfg.threads; i++) {
		rio_loop_stop(ws[i].loop);
		pthread_join(ws[i].tid, NULL);
	}
	report(ws, cfg.threads);
	int rc = 0;
	for (int i = 0; i < cfg.threads; i++)
		if (ws[i].err && ws[i].err != -ECANCELED)
			rc = 1;
	return rc;
}

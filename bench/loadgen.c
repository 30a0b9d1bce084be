/*
 * rio-loadgen — closed-loop echo load generator.
 *
 * N connections, each with exactly one message of `size` bytes in flight:
 * send it, wait until all of it has come back (checking every byte), record
 * the round-trip time, send the next. One thread, edge-triggered epoll,
 * non-blocking sockets. Prints one key=value line at the end.
 *
 * Every message is a slice of one random pattern at an offset that changes
 * per connection and per message, so an echo that mixes connections, drops,
 * repeats or reorders bytes is caught at the first wrong byte.
 *
 * With --udp each "connection" is a connected UDP socket with one datagram
 * of `size` bytes in flight, which must come back whole. UDP may drop: a
 * datagram not echoed within 200 ms is sent again and counted (lost=N);
 * an echo of an earlier copy is recognised and skipped. A socket with no
 * echo for 2 s fails (counted in errors).
 *
 * With --stat-pid the generator also samples the server's CPU time at the
 * exact edges of the measured window (after warmup, at the end), so the
 * per-round-trip CPU cost excludes warmup and connection setup.
 */
#define _GNU_SOURCE
#include "bench_util.h"
#include "hist.h"

#include <errno.h>
#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_CONNS 60000
#define MAX_SIZE (16L << 20)
#define MAX_SECONDS 3600.0
#define CONNECT_TIMEOUT_NS (5ull * 1000000000ull)
/* Distinct start offsets into the pattern; prime, so offsets cycle slowly. */
#define PATTERN_SPAN 251
#define MAX_EVENTS 256
#define MAX_PROCS 256
#define MAX_DGRAM 65507
#define DGRAM_RESEND_NS (200ull * 1000000ull)
#define DGRAM_LOST_NS (2ull * 1000000000ull)

enum conn_state { CONN_CONNECTING, CONN_READY, CONN_DEAD };

struct conn {
	int fd;
	enum conn_state state;
	unsigned idx;
	uint32_t msgs; /* completed messages; picks the next pattern offset */
	size_t sent;
	size_t rcvd;
	const unsigned char *msg; /* the current message inside the pattern */
	const unsigned char *prev; /* the one before (--udp: a late echo) */
	uint64_t start_ns;
	uint64_t sent_ns; /* --udp: when the datagram last went */
};

struct opts {
	const char *host;
	int port;
	unsigned conns;
	size_t size;
	double seconds;
	double warmup;
	int cpu;       /* -1: do not pin */
	int stat_pid;  /* -1: no server CPU sampling */
	int stat_cpu;  /* -1: no core-busy sampling */
	unsigned procs; /* generator processes sharing the connections */
	bool udp;       /* datagrams, one per message */
};

/* CPU counters sampled at the edges of the measured window, in ticks. */
struct cpu_sample {
	long long proc; /* server utime+stime, -1 if unreadable */
	long long core; /* busy ticks of --stat-cpu, -1 if unreadable */
	uint64_t self_us; /* our own CPU time: is the generator the bottleneck? */
};

struct lg {
	struct opts o;
	int ep;
	struct conn *conns;
	unsigned live;
	unsigned char *pattern; /* size + PATTERN_SPAN random bytes */
	unsigned char *scratch; /* receive buffer, size bytes */
	uint64_t measure_ns; /* start of the measured window */
	uint64_t end_ns;
	bool measuring;
	uint64_t rtts;
	uint64_t errors;
	uint64_t lost; /* --udp: datagrams sent again */
	struct cpu_sample cpu0, cpu1;
	struct hist hist;
};

static void usage(FILE *f)
{
	fprintf(f,
		"usage: rio-loadgen --port P [--host ADDR] [--conns N] [--size BYTES]\n"
		"                   [--seconds S] [--warmup S] [--cpu C]\n"
		"                   [--stat-pid PID] [--stat-cpu C] [--procs P]\n"
		"  --host      numeric IPv4/IPv6 address (default 127.0.0.1)\n"
		"  --conns     connections, each with one message in flight (default 50)\n"
		"  --size      message size in bytes, 1..%ld (default 64)\n"
		"  --seconds   measured time (default 5), after --warmup (default 1)\n"
		"  --cpu       pin the generator to this CPU\n"
		"  --stat-pid  report this process's CPU time over the measured window\n"
		"  --stat-cpu  report this CPU's busy time over the measured window\n"
		"  --procs     split the connections over P processes (1..%d) that\n"
		"              start together; one line for all of them\n"
		"  --udp       connected UDP sockets, one datagram in flight each\n"
		"              (--size up to %d)\n"
		"prints: rtt_per_s=.. p50_us=.. p99_us=.. errors=.. conns=.. size=..\n",
		MAX_SIZE, MAX_PROCS, MAX_DGRAM);
}

static int bad_flag(const char *name, const char *val)
{
	fprintf(stderr, "rio-loadgen: bad value for --%s: '%s'\n", name,
		val ? val : "");
	usage(stderr);
	return -1;
}

static int parse_one(struct opts *o, const char *name, const char *val)
{
	long v;
	double d;

	if (strcmp(name, "host") == 0) {
		o->host = val;
		return 0;
	}
	if (strcmp(name, "seconds") == 0 || strcmp(name, "warmup") == 0) {
		if (bench_parse_seconds(val, MAX_SECONDS, &d) != 0)
			return bad_flag(name, val);
		*(name[0] == 's' ? &o->seconds : &o->warmup) = d;
		return 0;
	}
	if (strcmp(name, "port") == 0 && !bench_parse_long(val, 1, 65535, &v))
		o->port = (int)v;
	else if (strcmp(name, "conns") == 0 &&
		 !bench_parse_long(val, 1, MAX_CONNS, &v))
		o->conns = (unsigned)v;
	else if (strcmp(name, "size") == 0 &&
		 !bench_parse_long(val, 1, MAX_SIZE, &v))
		o->size = (size_t)v;
	else if (strcmp(name, "cpu") == 0 &&
		 !bench_parse_long(val, 0, 4095, &v))
		o->cpu = (int)v;
	else if (strcmp(name, "stat-pid") == 0 &&
		 !bench_parse_long(val, 1, 1L << 30, &v))
		o->stat_pid = (int)v;
	else if (strcmp(name, "stat-cpu") == 0 &&
		 !bench_parse_long(val, 0, 4095, &v))
		o->stat_cpu = (int)v;
	else if (strcmp(name, "procs") == 0 &&
		 !bench_parse_long(val, 1, MAX_PROCS, &v))
		o->procs = (unsigned)v;
	else
		return bad_flag(name, val);
	return 0;
}

static int parse_opts(struct opts *o, int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "host", required_argument, NULL, 0 },
		{ "port", required_argument, NULL, 0 },
		{ "conns", required_argument, NULL, 0 },
		{ "size", required_argument, NULL, 0 },
		{ "seconds", required_argument, NULL, 0 },
		{ "warmup", required_argument, NULL, 0 },
		{ "cpu", required_argument, NULL, 0 },
		{ "stat-pid", required_argument, NULL, 0 },
		{ "stat-cpu", required_argument, NULL, 0 },
		{ "procs", required_argument, NULL, 0 },
		{ "udp", no_argument, NULL, 'u' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	int c, li;

	*o = (struct opts){ .host = "127.0.0.1", .port = 0, .conns = 50,
			    .size = 64, .seconds = 5, .warmup = 1, .cpu = -1,
			    .stat_pid = -1, .stat_cpu = -1, .procs = 1 };
	while ((c = getopt_long(argc, argv, "h", longopts, &li)) != -1) {
		if (c == 'h') {
			usage(stdout);
			exit(0);
		}
		if (c == 'u') {
			o->udp = true;
			continue;
		}
		if (c != 0 || parse_one(o, longopts[li].name, optarg) != 0) {
			if (c != 0)
				usage(stderr);
			return -1;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "rio-loadgen: unexpected argument '%s'\n",
			argv[optind]);
		return -1;
	}
	if (o->udp && o->size > MAX_DGRAM) {
		fprintf(stderr, "rio-loadgen: --size %zu is more than a UDP "
				"datagram holds (%d)\n", o->size, MAX_DGRAM);
		return -1;
	}
	if (o->procs > o->conns) {
		fprintf(stderr, "rio-loadgen: --procs %u is more than --conns "
				"%u\n", o->procs, o->conns);
		return -1;
	}
	if (o->port == 0 || o->seconds <= 0) {
		fprintf(stderr, "rio-loadgen: --port is required and "
				"--seconds must be > 0\n");
		usage(stderr);
		return -1;
	}
	return 0;
}

/* ---- CPU sampling ------------------------------------------------- */

/*
 * utime+stime of a whole process, in clock ticks. The process-level
 * /proc/PID/stat is the right source: the kernel sums every thread in the
 * group there (io_uring's iou-wrk/iou-sqp threads are threads of the
 * server) and also keeps the time of threads that have already exited.
 * Summing /proc/PID/task/ * /stat would miss io-wq workers that exited in the
 * window (they retire after being idle) and races with threads coming and
 * going.
 */
static long long proc_ticks(int pid)
{
	char path[64], buf[1024];
	unsigned long long ut, st;
	const char *p;
	FILE *f;
	size_t n;

	snprintf(path, sizeof(path), "/proc/%d/stat", pid);
	f = fopen(path, "r");
	if (f == NULL)
		return -1;
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	/* comm may hold spaces and ')'; the fields start after the last ')'. */
	p = strrchr(buf, ')');
	if (p == NULL)
		return -1;
	/* Fields 3..13 precede utime (14) and stime (15). */
	if (sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu",
		   &ut, &st) != 2)
		return -1;
	return (long long)(ut + st);
}

/*
 * Busy ticks of one CPU from /proc/stat. With the server alone on its CPU
 * this also counts what the process's own time misses: softirq work that
 * the kernel pushed to ksoftirqd and interrupt time.
 */
static long long core_ticks(int cpu)
{
	unsigned long long v[7];
	char want[32], line[512];
	long long busy = -1;
	FILE *f;

	f = fopen("/proc/stat", "r");
	if (f == NULL)
		return -1;
	snprintf(want, sizeof(want), "cpu%d ", cpu);
	while (fgets(line, sizeof(line), f) != NULL) {
		if (strncmp(line, want, strlen(want)) != 0)
			continue;
		/* user nice system idle iowait irq softirq; steal is the
		 * hypervisor's, not work done here. */
		if (sscanf(line + strlen(want),
			   "%llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1],
			   &v[2], &v[3], &v[4], &v[5], &v[6]) == 7)
			busy = (long long)(v[0] + v[1] + v[2] + v[5] + v[6]);
		break;
	}
	fclose(f);
	return busy;
}

static void cpu_sample(const struct opts *o, struct cpu_sample *s)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	s->self_us = (uint64_t)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) *
			     1000000u +
		     (uint64_t)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec);
	s->proc = o->stat_pid > 0 ? proc_ticks(o->stat_pid) : -1;
	s->core = o->stat_cpu >= 0 ? core_ticks(o->stat_cpu) : -1;
}

/* ---- connections -------------------------------------------------- */

static void conn_fail(struct lg *g, struct conn *c, int err, const char *what)
{
	if (c->state == CONN_DEAD)
		return;
	/* One line per failed connection, but never a flood. */
	if (g->errors < 10)
		fprintf(stderr, "rio-loadgen: conn %u: %s: %s\n", c->idx, what,
			err ? strerror(err) : "closed by server");
	g->errors++;
	close(c->fd);
	c->fd = -1;
	if (c->state == CONN_READY)
		g->live--;
	c->state = CONN_DEAD;
}

static void msg_begin(struct lg *g, struct conn *c, uint64_t now)
{
	c->prev = c->msg;
	c->msg = g->pattern + (c->idx * 97u + c->msgs) % PATTERN_SPAN;
	c->sent = 0;
	c->rcvd = 0;
	c->start_ns = now;
}

/* Push the current message as far as the socket takes it (a datagram:
 * all of it, or nothing yet). */
static void conn_send(struct lg *g, struct conn *c)
{
	while (g->o.udp && c->sent == 0) {
		ssize_t n = send(c->fd, c->msg, g->o.size, 0);
		c->sent_ns = bench_now_ns();
		if (n == (ssize_t)g->o.size)
			c->sent = g->o.size;
		else if (n < 0 && errno == EINTR)
			continue;
		else if (!(n < 0 && errno == EAGAIN))
			conn_fail(g, c, n < 0 ? errno : EMSGSIZE, "send");
		return;
	}
	while (c->sent < g->o.size) {
		ssize_t n = send(c->fd, c->msg + c->sent, g->o.size - c->sent,
				 MSG_NOSIGNAL);

		if (n > 0) {
			c->sent += (size_t)n;
		} else if (n < 0 && errno == EINTR) {
			continue;
		} else if (n < 0 && errno == EAGAIN) {
			return; /* EPOLLOUT (always armed, edge) resumes us */
		} else {
			conn_fail(g, c, n < 0 ? errno : 0, "send");
			return;
		}
	}
}

static void msg_done(struct lg *g, struct conn *c)
{
	uint64_t now = bench_now_ns();

	if (g->measuring && now < g->end_ns) {
		hist_add(&g->hist, now - c->start_ns);
		g->rtts++;
	}
	c->msgs++;
	msg_begin(g, c, now);
	conn_send(g, c);
}

static void verify(struct lg *g, struct conn *c, size_t n)
{
	const unsigned char *want = c->msg + c->rcvd;
	size_t i;

	if (memcmp(g->scratch, want, n) == 0)
		return;
	for (i = 0; i < n && g->scratch[i] == want[i]; i++)
		;
	fprintf(stderr,
		"rio-loadgen: FATAL: echo mismatch on conn %u, message %u, "
		"byte %zu: got 0x%02x, want 0x%02x\n",
		c->idx, c->msgs, c->rcvd + i, g->scratch[i], want[i]);
	exit(1);
}

/*
 * Take what the server has echoed. A short read means the socket was empty
 * at that moment and any later byte raises a new edge, so we skip the
 * recv() that would only say EAGAIN — unless the event carried a hang-up,
 * which raises no further edge and must be read to the end.
 */
static void conn_recv(struct lg *g, struct conn *c, uint32_t events)
{
	bool hup = events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR);

	while (c->state == CONN_READY) {
		size_t want = g->o.size - c->rcvd;
		ssize_t n = recv(c->fd, g->scratch, want, 0);

		if (n > 0) {
			verify(g, c, (size_t)n);
			c->rcvd += (size_t)n;
			if (c->rcvd == g->o.size) {
				/* The next echo cannot be here yet; its
				 * arrival raises a new edge. */
				msg_done(g, c);
				if (!hup)
					return;
			} else if ((size_t)n < want && !hup)
				return;
		} else if (n == 0) {
			conn_fail(g, c, 0, "recv");
		} else if (errno == EAGAIN) {
			return;
		} else if (errno != EINTR) {
			conn_fail(g, c, errno, "recv");
		}
	}
}

/* Echoed datagrams: each must be the whole message in flight. */
static void conn_recv_dgram(struct lg *g, struct conn *c)
{
	while (c->state == CONN_READY) {
		ssize_t n = recv(c->fd, g->scratch, g->o.size + 1, 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			return;
		if (n < 0) {
			conn_fail(g, c, errno, "recv");
			return;
		}
		if ((size_t)n == g->o.size && c->prev &&
		    memcmp(g->scratch, c->msg, (size_t)n) != 0 &&
		    memcmp(g->scratch, c->prev, (size_t)n) == 0)
			continue; /* the echo of a copy sent again: had it */
		if ((size_t)n != g->o.size || c->sent != g->o.size) {
			fprintf(stderr, "rio-loadgen: FATAL: conn %u, message "
					"%u: a datagram of %zd bytes (sent %zu "
					"of %zu)\n", c->idx, c->msgs, n,
				c->sent, g->o.size);
			exit(1);
		}
		verify(g, c, (size_t)n);
		msg_done(g, c);
	}
}

static void conn_event(struct lg *g, struct conn *c, uint32_t events)
{
	if (g->o.udp && c->state == CONN_READY) {
		if ((events & EPOLLOUT) && c->sent == 0)
			conn_send(g, c);
		if (events & (EPOLLIN | EPOLLERR))
			conn_recv_dgram(g, c);
		return;
	}
	if (c->state != CONN_READY)
		return;
	if ((events & EPOLLOUT) && c->sent < g->o.size)
		conn_send(g, c);
	if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))
		conn_recv(g, c, events);
}

static int conn_open(struct lg *g, struct conn *c,
		     const struct sockaddr_storage *ss, socklen_t len)
{
	struct epoll_event ev = { .events = EPOLLIN | EPOLLOUT | EPOLLRDHUP |
					    EPOLLET,
				  .data.ptr = c };

	c->state = CONN_DEAD;
	c->fd = socket(ss->ss_family,
		       (g->o.udp ? SOCK_DGRAM : SOCK_STREAM) | SOCK_NONBLOCK |
			       SOCK_CLOEXEC, 0);
	if (c->fd < 0)
		return -errno;
	if (!g->o.udp)
		bench_set_nodelay(c->fd);
	if (connect(c->fd, (const struct sockaddr *)ss, len) != 0 &&
	    errno != EINPROGRESS) {
		int err = -errno;

		close(c->fd);
		c->fd = -1;
		return err;
	}
	/* Registered once, both directions, edge-triggered: no epoll_ctl on the
	 * hot path. A connect's completion is the first EPOLLOUT edge. */
	if (epoll_ctl(g->ep, EPOLL_CTL_ADD, c->fd, &ev) != 0) {
		int err = -errno;

		close(c->fd);
		c->fd = -1;
		return err;
	}
	if (g->o.udp) { /* a UDP connect only names the peer: done */
		c->state = CONN_READY;
		g->live++;
		return 1;
	}
	c->state = CONN_CONNECTING;
	return 0;
}

/* A connecting socket reported an event: did the connect succeed? */
static void conn_connected(struct lg *g, struct conn *c, int *last_err)
{
	int err = 0;
	socklen_t el = sizeof(err);

	if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &el) != 0)
		err = errno;
	if (err != 0) {
		*last_err = err;
		close(c->fd);
		c->fd = -1;
		c->state = CONN_DEAD;
		return;
	}
	c->state = CONN_READY;
	g->live++;
}

static unsigned wait_connects(struct lg *g, unsigned pending, int *last_err)
{
	struct epoll_event evs[MAX_EVENTS];
	uint64_t deadline = bench_now_ns() + CONNECT_TIMEOUT_NS;

	while (pending > 0) {
		uint64_t now = bench_now_ns();
		int i, n;

		if (now >= deadline)
			break;
		n = epoll_wait(g->ep, evs, MAX_EVENTS,
			       (int)((deadline - now) / 1000000 + 1));
		if (n < 0 && errno != EINTR)
			break;
		for (i = 0; i < n; i++) {
			struct conn *c = evs[i].data.ptr;

			if (c->state != CONN_CONNECTING)
				continue;
			conn_connected(g, c, last_err);
			pending--;
		}
	}
	return pending;
}

/* Open every connection; 0 if at least one is up, else -1. */
static int connect_all(struct lg *g)
{
	struct sockaddr_storage ss;
	socklen_t len;
	unsigned i, pending = 0, failed;
	int err, last_err = 0;

	if (bench_sockaddr(g->o.host, g->o.port, &ss, &len) != 0) {
		fprintf(stderr, "rio-loadgen: --host must be a numeric IPv4 or "
				"IPv6 address: '%s'\n", g->o.host);
		exit(BENCH_EXIT_USAGE);
	}
	for (i = 0; i < g->o.conns; i++) {
		g->conns[i].idx = i;
		err = conn_open(g, &g->conns[i], &ss, len);
		if (err < 0)
			last_err = -err;
		else if (err == 0)
			pending++;
	}
	pending = wait_connects(g, pending, &last_err);
	failed = g->o.conns - g->live;
	for (i = 0; i < g->o.conns; i++) {
		struct conn *c = &g->conns[i];

		if (c->state == CONN_CONNECTING) {
			close(c->fd);
			c->fd = -1;
			c->state = CONN_DEAD;
			last_err = ETIMEDOUT;
		}
	}
	if (g->live == 0) {
		fprintf(stderr, "rio-loadgen: no connection to %s port %d: %s\n",
			g->o.host, g->o.port, strerror(last_err));
		return -1;
	}
	if (failed > 0) {
		fprintf(stderr, "rio-loadgen: %u of %u connections failed: %s\n",
			failed, g->o.conns, strerror(last_err));
		g->errors += failed;
	}
	return 0;
}

/* ---- the run ------------------------------------------------------ */

static void pattern_init(struct lg *g)
{
	/* xorshift64: a random-looking pattern, reproducible run to run. */
	uint64_t x = 0x9e3779b97f4a7c15ull;
	size_t i, n = g->o.size + PATTERN_SPAN;

	for (i = 0; i < n; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		g->pattern[i] = (unsigned char)(x >> 56);
	}
}

static void start_measuring(struct lg *g, uint64_t now)
{
	cpu_sample(&g->o, &g->cpu0);
	g->measure_ns = now;
	g->end_ns = now + (uint64_t)(g->o.seconds * 1e9);
	g->measuring = true;
}

static void run(struct lg *g)
{
	struct epoll_event evs[MAX_EVENTS];
	uint64_t now = bench_now_ns();
	uint64_t warm_end = now + (uint64_t)(g->o.warmup * 1e9);
	unsigned i;

	g->end_ns = warm_end + (uint64_t)(g->o.seconds * 1e9);
	if (g->o.warmup == 0)
		start_measuring(g, now);
	for (i = 0; i < g->o.conns; i++) {
		if (g->conns[i].state != CONN_READY)
			continue;
		msg_begin(g, &g->conns[i], bench_now_ns());
		conn_send(g, &g->conns[i]);
	}
	uint64_t lost_check = now + DGRAM_RESEND_NS / 4;
	while (now < g->end_ns && g->live > 0) {
		uint64_t edge = g->measuring ? g->end_ns : warm_end;
		int n, timeout_ms = (int)((edge - now + 999999) / 1000000);

		if (g->o.udp && timeout_ms > 50)
			timeout_ms = 50; /* to notice lost datagrams */
		n = epoll_wait(g->ep, evs, MAX_EVENTS, timeout_ms);
		if (n < 0 && errno != EINTR) {
			perror("rio-loadgen: epoll_wait");
			exit(1);
		}
		for (int k = 0; k < n; k++)
			conn_event(g, evs[k].data.ptr, evs[k].events);
		now = bench_now_ns();
		if (!g->measuring && now >= warm_end)
			start_measuring(g, now);
		if (g->o.udp && now >= lost_check) {
			lost_check = now + DGRAM_RESEND_NS / 4;
			for (i = 0; i < g->o.conns; i++) {
				struct conn *c = &g->conns[i];
				if (c->state != CONN_READY)
					continue;
				if (now - c->start_ns > DGRAM_LOST_NS) {
					conn_fail(g, c, ETIMEDOUT,
						  "no echo of a datagram");
				} else if (now - c->sent_ns > DGRAM_RESEND_NS) {
					g->lost++; /* dropped: send it again */
					c->sent = 0;
					conn_send(g, c);
				}
			}
		}
	}
	cpu_sample(&g->o, &g->cpu1);
}

static double ticks_us(const struct cpu_sample *a, const struct cpu_sample *b,
		       int proc)
{
	long long x = proc ? a->proc : a->core, y = proc ? b->proc : b->core;

	if (x < 0 || y < 0)
		return -1;
	return (double)(y - x) * 1e6 / (double)sysconf(_SC_CLK_TCK);
}

static void print_cpu(const struct lg *g, const char *name, int proc)
{
	double us = g->measuring ? ticks_us(&g->cpu0, &g->cpu1, proc) : -1;

	if (us < 0) {
		printf(" %s_us=na %s_us_per_rt=na", name, name);
		return;
	}
	printf(" %s_us=%.0f %s_us_per_rt=%.3f", name, us, name,
	       g->rtts ? us / (double)g->rtts : 0.0);
}

static void report(const struct lg *g)
{
	double secs = (double)(g->end_ns - g->measure_ns) / 1e9;
	double lg_us = (double)(g->cpu1.self_us - g->cpu0.self_us);
	double lg_pct = g->measuring ? lg_us / (secs * 1e4) : 0.0;
	const struct hist *h = &g->hist;

	printf("rtt_per_s=%.1f p50_us=%.1f p99_us=%.1f p999_us=%.1f "
	       "max_us=%.1f mean_us=%.1f errors=%llu conns=%u size=%zu "
	       "seconds=%.3f rtts=%llu",
	       g->measuring ? (double)g->rtts / secs : 0.0,
	       (double)hist_quantile(h, 0.50) / 1e3,
	       (double)hist_quantile(h, 0.99) / 1e3,
	       (double)hist_quantile(h, 0.999) / 1e3, (double)h->max / 1e3,
	       h->count ? (double)h->sum / (double)h->count / 1e3 : 0.0,
	       (unsigned long long)g->errors, g->o.conns, g->o.size,
	       g->measuring ? secs : 0.0, (unsigned long long)g->rtts);
	printf(" lg_cpu_pct=%.0f", lg_pct);
	if (g->o.udp)
		printf(" lost=%llu", (unsigned long long)g->lost);
	if (g->o.stat_pid > 0)
		print_cpu(g, "srv_cpu", 1);
	if (g->o.stat_cpu >= 0)
		print_cpu(g, "core", 0);
	printf("\n");
	fflush(stdout);
}

static void lg_free(struct lg *g)
{
	for (unsigned i = 0; g->conns && i < g->o.conns; i++)
		if (g->conns[i].fd >= 0 && g->conns[i].state != CONN_DEAD)
			close(g->conns[i].fd);
	if (g->ep > 0)
		close(g->ep);
	free(g->conns);
	free(g->pattern);
	free(g->scratch);
	free(g);
}

/* Allocate and connect; 0, or the exit status to fail with. */
static int lg_setup(struct lg *g)
{
	hist_reset(&g->hist);
	g->conns = calloc(g->o.conns, sizeof(*g->conns));
	g->pattern = malloc(g->o.size + PATTERN_SPAN);
	g->scratch = malloc(g->o.size + 1);
	g->ep = epoll_create1(EPOLL_CLOEXEC);
	if (!g->conns || !g->pattern || !g->scratch || g->ep < 0) {
		perror("rio-loadgen: setup");
		return 1;
	}
	pattern_init(g);
	return connect_all(g) != 0 ? 1 : 0;
}

/* ---- --procs: several generator processes, one report ------------- */

/* What a child hands back, in memory shared with the parent. */
struct child_res {
	uint64_t rtts, errors, lost, self_us;
	struct hist hist;
};

struct shared {
	_Atomic unsigned ready, failed;
	_Atomic uint64_t start_ns; /* 0 until every child is connected */
	struct child_res res[MAX_PROCS];
};

static void sleep_until(uint64_t ns)
{
	struct timespec ts = { .tv_sec = (time_t)(ns / 1000000000u),
			       .tv_nsec = (long)(ns % 1000000000u) };

	while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) ==
	       EINTR)
		;
}

static int child_main(struct lg *g, struct shared *sh, unsigned i)
{
	struct child_res *r = &sh->res[i];
	uint64_t give_up = bench_now_ns() + 30ull * 1000000000u;
	uint64_t start;

	g->o.conns = g->o.conns / g->o.procs + (i < g->o.conns % g->o.procs);
	g->o.stat_pid = -1; /* the parent samples the server */
	g->o.stat_cpu = -1;
	if (lg_setup(g) != 0) {
		sh->failed++;
		return 1;
	}
	sh->ready++;
	while ((start = sh->start_ns) == 0) { /* bounded: the parent's 30 s */
		if (sh->failed || bench_now_ns() > give_up)
			return 1;
		usleep(1000);
	}
	sleep_until(start);
	run(g);
	r->rtts = g->rtts;
	r->errors = g->errors;
	r->lost = g->lost;
	r->self_us = g->cpu1.self_us - g->cpu0.self_us;
	r->hist = g->hist;
	return g->errors ? 1 : 0;
}

/*
 * Fork --procs children that share out the connections, start them at one
 * instant once all are connected, sample the server's CPU at the window's
 * edges here, and report the sum (latency histograms merged; lg_cpu_pct is
 * the busiest child's, since the question it answers is whether a
 * generator was the bottleneck).
 */
static int run_procs(struct lg *g)
{
	struct shared *sh = mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE,
				 MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	unsigned i, n = g->o.procs, forked = 0;
	uint64_t give_up = bench_now_ns() + 30ull * 1000000000u, max_self = 0;
	int status, rc = 0;
	pid_t pids[MAX_PROCS];

	if (sh == MAP_FAILED) {
		perror("rio-loadgen: mmap");
		return 1;
	}
	memset(sh, 0, sizeof(*sh));
	for (i = 0; i < n; i++) {
		pids[i] = fork();
		if (pids[i] < 0) {
			perror("rio-loadgen: fork");
			sh->failed++;
			break;
		}
		if (pids[i] == 0)
			_exit(child_main(g, sh, i));
		forked++;
	}
	while (sh->ready + sh->failed < forked && bench_now_ns() < give_up)
		usleep(1000);
	if (sh->ready == n) {
		uint64_t start = bench_now_ns() + 20000000u; /* 20 ms slack */
		uint64_t warm_end = start + (uint64_t)(g->o.warmup * 1e9);

		sh->start_ns = start;
		sleep_until(warm_end);
		cpu_sample(&g->o, &g->cpu0);
		g->measure_ns = warm_end;
		g->end_ns = warm_end + (uint64_t)(g->o.seconds * 1e9);
		g->measuring = true;
		sleep_until(g->end_ns);
		cpu_sample(&g->o, &g->cpu1);
	} else {
		sh->failed++; /* children waiting to start give up */
		rc = 1;
	}
	for (i = 0; i < forked; i++) {
		if (waitpid(pids[i], &status, 0) < 0 || !WIFEXITED(status) ||
		    WEXITSTATUS(status) != 0)
			rc = 1;
	}
	if (rc == 0) {
		for (i = 0; i < n; i++) {
			const struct child_res *r = &sh->res[i];

			g->rtts += r->rtts;
			g->errors += r->errors;
			g->lost += r->lost;
			hist_merge(&g->hist, &r->hist);
			if (r->self_us > max_self)
				max_self = r->self_us;
		}
		g->cpu0.self_us = 0;
		g->cpu1.self_us = max_self;
		report(g);
		rc = g->errors ? 1 : 0;
	} else {
		fprintf(stderr, "rio-loadgen: a generator process failed\n");
	}
	munmap(sh, sizeof(*sh));
	return rc;
}

int main(int argc, char **argv)
{
	struct lg *g = calloc(1, sizeof(*g));
	int err, status;

	if (g == NULL)
		return 1;
	if (parse_opts(&g->o, argc, argv) != 0) {
		free(g);
		return BENCH_EXIT_USAGE;
	}
	if (g->o.cpu >= 0 && (err = bench_pin_cpu(g->o.cpu)) != 0) {
		fprintf(stderr, "rio-loadgen: cannot pin to CPU %d: %s\n",
			g->o.cpu, strerror(-err));
		free(g);
		return BENCH_EXIT_USAGE;
	}
	if (g->o.procs > 1) {
		hist_reset(&g->hist);
		status = run_procs(g);
		free(g);
		return status;
	}
	if (lg_setup(g) != 0) {
		lg_free(g);
		return 1;
	}
	run(g);
	report(g);
	status = g->errors ? 1 : 0;
	lg_free(g);
	return status;
}

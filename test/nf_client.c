/*
 * nf_client: the client (and, where a case needs one it controls, the
 * upstream) for test/netfaults.sh. Plain sockets on 127.0.0.1, every wait
 * bounded by poll(2) timeouts. Each subcommand prints what it measured and
 * exits 0 when its checks hold, 1 when one fails (the reason on stderr),
 * 2 on bad arguments.
 *
 *   req PORT TIMEOUT_MS echo|closed
 *       echo: send "ping", the same 4 bytes must come back within
 *       TIMEOUT_MS. closed: the peer must end the connection (EOF or
 *       reset) within TIMEOUT_MS, without sending a byte.
 *   stream PORT MIB TIMEOUT_S
 *       Send MIB MiB of a position-dependent pattern to an echo (through
 *       the proxy), read everything back, compare byte by byte and by
 *       checksum, then send FIN and expect EOF.
 *   rst PROXY_PORT UP_PORT PROXY_PID DIR NFT_CHAIN
 *       Be the upstream (listen on UP_PORT) and the client of a proxied
 *       session, move bytes both ways, then reset the session in DIR
 *       mid-stream: c2p, p2u, u2p, p2c (an nft "reject with tcp reset"
 *       rule in NFT_CHAIN, e.g. "inet nf rst": the matched packet's sender
 *       gets the reset), c2p-linger, u2p-linger (a real RST: SO_LINGER 0
 *       close by the client / the upstream). Both ends must see the
 *       session end, the proxy's fd count must come back to its baseline,
 *       and a new session must work.
 *   stall PROXY_PORT UP_PORT PROXY_PID up|client FLOW_S STALL_S BOUND_MIB
 *       Be the upstream and the client; push bytes for FLOW_S seconds
 *       with both reading, then the named side stops reading and the other
 *       keeps pushing for STALL_S seconds. The proxy's VmRSS must stay
 *       within BOUND_MIB of its value before the session, and must not
 *       grow while the reader is stalled (by more than 2 MiB).
 *   crowd PORT N_IDLE N_HALF HALF_ADDR IDLE_MS BOUND_MS
 *       Open N_IDLE connections that never send, and N_HALF more bound to
 *       HALF_ADDR (whose handshake ACKs netfaults.sh drops: half-open at
 *       the server), then a good client must have its "ping" echoed
 *       within BOUND_MS of starting to connect (three good clients, one
 *       after the other), and the server must close every idle one within
 *       4 x IDLE_MS + 1 s after that.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static const char *sub = "nf_client";

static double now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static int fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int fail(const char *fmt, ...)
{
	va_list ap;
	fprintf(stderr, "nf_client %s: FAIL: ", sub);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	return 1;
}

static long num(const char *s, long lo, long hi)
{
	char *end;
	errno = 0;
	long v = strtol(s, &end, 10);
	if (errno || *end || end == s || v < lo || v > hi) {
		fprintf(stderr, "nf_client %s: bad number '%s'\n", sub, s);
		exit(2);
	}
	return v;
}

static void addr_of(const char *host, int port, struct sockaddr_in *sa)
{
	memset(sa, 0, sizeof *sa);
	sa->sin_family = AF_INET;
	sa->sin_port = htons((uint16_t)port);
	if (inet_pton(AF_INET, host, &sa->sin_addr) != 1) {
		fprintf(stderr, "nf_client %s: bad address '%s'\n", sub, host);
		exit(2);
	}
}

/* A non-blocking socket, connect started (from `src` if not NULL).
 * Returns the fd or -errno. */
static int connect_start(const char *src, int port)
{
	struct sockaddr_in sa;
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (src) {
		struct sockaddr_in sb;
		addr_of(src, 0, &sb);
		if (bind(fd, (struct sockaddr *)&sb, sizeof sb) < 0) {
			int e = -errno;
			close(fd);
			return e;
		}
	}
	addr_of("127.0.0.1", port, &sa);
	if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0 &&
	    errno != EINPROGRESS) {
		int e = -errno;
		close(fd);
		return e;
	}
	return fd;
}

/* Wait up to `ms` for `ev` on fd; returns revents, 0 on timeout. */
static int wait_fd(int fd, short ev, int ms)
{
	struct pollfd p = {.fd = fd, .events = ev};
	int r;
	do
		r = poll(&p, 1, ms < 0 ? 0 : ms);
	while (r < 0 && errno == EINTR);
	return r > 0 ? p.revents : 0;
}

/* Connect to 127.0.0.1:port within ms; returns the (non-blocking) fd or
 * -errno (-ETIMEDOUT). */
static int connect_to(int port, int ms)
{
	int fd = connect_start(NULL, port), err = 0;
	socklen_t sl = sizeof err;
	if (fd < 0)
		return fd;
	if (!(wait_fd(fd, POLLOUT, ms) & (POLLOUT | POLLERR | POLLHUP))) {
		close(fd);
		return -ETIMEDOUT;
	}
	getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &sl);
	if (err) {
		close(fd);
		return -err;
	}
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	return fd;
}

static int listen_on(int port)
{
	struct sockaddr_in sa;
	int one = 1;
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	addr_of("127.0.0.1", port, &sa);
	if (bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(fd, 64) < 0) {
		int e = -errno;
		close(fd);
		return e;
	}
	return fd;
}

static int accept_within(int lfd, int ms)
{
	if (!(wait_fd(lfd, POLLIN, ms) & POLLIN))
		return -ETIMEDOUT;
	int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
	return fd < 0 ? -errno : fd;
}

static int port_of(int fd, int peer)
{
	struct sockaddr_in sa;
	socklen_t sl = sizeof sa;
	if ((peer ? getpeername : getsockname)(fd, (struct sockaddr *)&sa, &sl) < 0)
		return -1;
	return ntohs(sa.sin_port);
}

/* ---- the pattern: byte `off` of stream `seed`, not periodic ---- */

static uint64_t mix(uint64_t x)
{
	x += 0x9e3779b97f4a7c15ull;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
	return x ^ (x >> 31);
}

static void pattern(uint64_t seed, uint64_t off, unsigned char *buf, size_t len)
{
	size_t i = 0;
	while (i < len) {
		uint64_t w = mix(((off + i) >> 3) ^ seed);
		for (unsigned b = (unsigned)((off + i) & 7); b < 8 && i < len; b++)
			buf[i++] = (unsigned char)(w >> (8 * b));
	}
}

/* FNV-1a, 64 bits */
static uint64_t fnv(uint64_t h, const unsigned char *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		h = (h ^ p[i]) * 0x100000001b3ull;
	return h;
}
#define FNV0 0xcbf29ce484222325ull

/* ---- req ---- */

static int cmd_req(int argc, char **argv)
{
	if (argc != 3)
		return 2;
	int port = (int)num(argv[0], 1, 65535), ms = (int)num(argv[1], 1, 600000);
	int want_echo = !strcmp(argv[2], "echo");
	if (!want_echo && strcmp(argv[2], "closed"))
		return 2;
	double t0 = now_ms();
	int fd = connect_to(port, ms);
	if (fd < 0)
		return fail("connect to %d: %s", port, strerror(-fd));
	if (send(fd, "ping", 4, MSG_NOSIGNAL) != 4)
		return fail("send: %s", strerror(errno));
	char buf[8];
	size_t got = 0;
	for (;;) {
		int left = ms - (int)(now_ms() - t0);
		if (left <= 0)
			return fail("nothing within %d ms (got %zu bytes)", ms, got);
		if (!(wait_fd(fd, POLLIN, left) & (POLLIN | POLLERR | POLLHUP)))
			continue;
		ssize_t k = recv(fd, buf + got, sizeof buf - got, 0);
		if (k < 0 && (errno == EAGAIN || errno == EINTR))
			continue;
		double el = now_ms() - t0;
		if (want_echo) {
			if (k <= 0)
				return fail("connection ended (%s) after %.1f ms",
					    k ? strerror(errno) : "EOF", el);
			got += (size_t)k;
			if (got < 4)
				continue;
			if (got != 4 || memcmp(buf, "ping", 4))
				return fail("wrong echo (%zu bytes)", got);
			printf("req: echoed in %.1f ms\n", el);
			close(fd);
			return 0;
		}
		if (k > 0)
			return fail("got %zd bytes, expected the end", k);
		printf("req: closed (%s) in %.1f ms\n", k ? strerror(errno) : "EOF", el);
		close(fd);
		return 0;
	}
}

/* ---- stream ---- */

static int cmd_stream(int argc, char **argv)
{
	if (argc != 3)
		return 2;
	int port = (int)num(argv[0], 1, 65535);
	uint64_t total = (uint64_t)num(argv[1], 1, 4096) << 20;
	double limit = (double)num(argv[2], 1, 3600) * 1e3;
	const uint64_t seed = 0x5eed;
	static unsigned char tx[65536], rx[65536], want[65536];
	uint64_t sent = 0, got = 0, sum_tx = FNV0, sum_rx = FNV0;
	int shut = 0, eof = 0;
	double t0 = now_ms();
	int fd = connect_to(port, 5000);
	if (fd < 0)
		return fail("connect to %d: %s", port, strerror(-fd));
	while (!eof) {
		double el = now_ms() - t0;
		if (el > limit)
			return fail("timed out after %.0f ms: sent %llu, received %llu "
				    "of %llu", el, (unsigned long long)sent,
				    (unsigned long long)got, (unsigned long long)total);
		struct pollfd p = {.fd = fd, .events = POLLIN};
		if (sent < total)
			p.events |= POLLOUT;
		if (poll(&p, 1, 1000) < 0 && errno != EINTR)
			return fail("poll: %s", strerror(errno));
		if (sent < total && (p.revents & POLLOUT)) {
			size_t n = total - sent < sizeof tx ? (size_t)(total - sent) : sizeof tx;
			pattern(seed, sent, tx, n);
			ssize_t k = send(fd, tx, n, MSG_NOSIGNAL);
			if (k < 0 && errno != EAGAIN && errno != EINTR)
				return fail("send at %llu: %s", (unsigned long long)sent,
					    strerror(errno));
			if (k > 0) {
				sum_tx = fnv(sum_tx, tx, (size_t)k);
				sent += (uint64_t)k;
			}
		}
		if (sent == total && !shut) {
			if (shutdown(fd, SHUT_WR) < 0)
				return fail("shutdown: %s", strerror(errno));
			shut = 1;
		}
		if (p.revents & (POLLIN | POLLERR | POLLHUP)) {
			ssize_t k = recv(fd, rx, sizeof rx, 0);
			if (k < 0 && errno != EAGAIN && errno != EINTR)
				return fail("recv at %llu: %s", (unsigned long long)got,
					    strerror(errno));
			if (k == 0) {
				if (got != total)
					return fail("EOF after %llu of %llu bytes",
						    (unsigned long long)got,
						    (unsigned long long)total);
				eof = 1;
			}
			if (k > 0) {
				if (got + (uint64_t)k > total)
					return fail("more bytes back than sent");
				pattern(seed, got, want, (size_t)k);
				if (memcmp(rx, want, (size_t)k)) {
					size_t i = 0;
					while (rx[i] == want[i])
						i++;
					return fail("byte %llu differs",
						    (unsigned long long)(got + i));
				}
				sum_rx = fnv(sum_rx, rx, (size_t)k);
				got += (uint64_t)k;
			}
		}
	}
	double el = now_ms() - t0;
	printf("stream: %llu bytes each way in %.0f ms, fnv sent %016llx "
	       "received %016llx\n", (unsigned long long)total, el,
	       (unsigned long long)sum_tx, (unsigned long long)sum_rx);
	close(fd);
	if (sum_tx != sum_rx)
		return fail("checksums differ");
	return 0;
}

/* ---- /proc of the proxy ---- */

static int fd_count(int pid)
{
	char path[64];
	snprintf(path, sizeof path, "/proc/%d/fd", pid);
	DIR *d = opendir(path);
	if (!d)
		return -1;
	int n = 0;
	struct dirent *e;
	while ((e = readdir(d)))
		if (e->d_name[0] != '.')
			n++;
	closedir(d);
	return n;
}

static long rss_kib(int pid)
{
	char path[64], line[256];
	long v = -1;
	snprintf(path, sizeof path, "/proc/%d/status", pid);
	FILE *f = fopen(path, "r");
	if (!f)
		return -1;
	while (fgets(line, sizeof line, f))
		if (sscanf(line, "VmRSS: %ld kB", &v) == 1)
			break;
	fclose(f);
	return v;
}

/* ---- a session both of whose ends are ours ---- */

struct end {
	const char *name;
	int fd;
	uint64_t tx_seed, rx_seed; /* what it sends, what it expects */
	uint64_t sent, got;
	int sending, reading;
	int ended;       /* saw EOF or an error */
	int err;         /* 0: EOF */
	double ended_ms;
	unsigned char buf[16384];
};

/* One pass over both ends: send and receive what the sockets take.
 * Returns -1 (with a message) on corrupted data. */
static int pump(struct end *e, int n, int ms)
{
	struct pollfd p[2];
	for (int i = 0; i < n; i++) {
		p[i].fd = e[i].ended ? -1 : e[i].fd;
		p[i].events = (short)((e[i].reading ? POLLIN : 0) |
				      (e[i].sending ? POLLOUT : 0));
		p[i].revents = 0;
	}
	if (poll(p, (nfds_t)n, ms) < 0 && errno != EINTR)
		return fail("poll: %s", strerror(errno)), -1;
	for (int i = 0; i < n; i++) {
		struct end *x = &e[i];
		if (x->ended)
			continue;
		if (x->sending && (p[i].revents & (POLLOUT | POLLERR | POLLHUP))) {
			pattern(x->tx_seed, x->sent, x->buf, sizeof x->buf);
			ssize_t k = send(x->fd, x->buf, sizeof x->buf, MSG_NOSIGNAL);
			if (k > 0)
				x->sent += (uint64_t)k;
			else if (k < 0 && errno != EAGAIN && errno != EINTR) {
				x->ended = 1;
				x->err = errno;
				x->ended_ms = now_ms();
				continue;
			}
		}
		if (x->reading && (p[i].revents & (POLLIN | POLLERR | POLLHUP))) {
			static unsigned char want[16384];
			ssize_t k = recv(x->fd, x->buf, sizeof x->buf, 0);
			if (k > 0) {
				pattern(x->rx_seed, x->got, want, (size_t)k);
				if (memcmp(want, x->buf, (size_t)k))
					return fail("%s: corrupted bytes near %llu",
						    x->name,
						    (unsigned long long)x->got), -1;
				x->got += (uint64_t)k;
			} else if (k == 0 || (errno != EAGAIN && errno != EINTR)) {
				x->ended = 1;
				x->err = k ? errno : 0;
				x->ended_ms = now_ms();
			}
		}
	}
	return 0;
}

/* Client to the proxy and the upstream's end of it, both ready. */
static int session_open(int pport, int lfd, struct end *c, struct end *u)
{
	memset(c, 0, sizeof *c);
	memset(u, 0, sizeof *u);
	c->name = "client";
	u->name = "upstream";
	c->tx_seed = u->rx_seed = 0xc11e;
	u->tx_seed = c->rx_seed = 0x0b57;
	c->fd = connect_to(pport, 3000);
	if (c->fd < 0)
		return fail("connect to the proxy: %s", strerror(-c->fd));
	u->fd = accept_within(lfd, 3000);
	if (u->fd < 0)
		return fail("the proxy did not connect upstream: %s",
			    strerror(-u->fd));
	return 0;
}

/* A new session carries bytes both ways: the proxy still serves. */
static int session_check(int pport, int lfd)
{
	struct end e[2];
	if (session_open(pport, lfd, &e[0], &e[1]))
		return 1;
	double t0 = now_ms();
	e[0].sending = e[0].reading = e[1].sending = e[1].reading = 1;
	while (e[0].got < 65536 || e[1].got < 65536) {
		if (now_ms() - t0 > 3000)
			return fail("a new session moved %llu / %llu bytes in 3 s",
				    (unsigned long long)e[0].got,
				    (unsigned long long)e[1].got);
		if (pump(e, 2, 100) < 0)
			return 1;
		if (e[0].ended || e[1].ended)
			return fail("a new session ended: %s %s",
				    e[0].ended ? "client" : "upstream",
				    strerror(e[0].ended ? e[0].err : e[1].err));
	}
	close(e[0].fd);
	close(e[1].fd);
	return 0;
}

static int nft(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int nft(const char *fmt, ...)
{
	char cmd[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(cmd, sizeof cmd, fmt, ap);
	va_end(ap);
	int r = system(cmd);
	if (r != 0)
		fprintf(stderr, "nf_client %s: '%s' failed (%d)\n", sub, cmd, r);
	return r;
}

static void linger0_close(int fd)
{
	struct linger l = {1, 0};
	setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
	close(fd);
}

static int wait_fds(int pid, int want, int ms, int *now)
{
	double t0 = now_ms();
	for (;;) {
		*now = fd_count(pid);
		if (*now == want)
			return 0;
		if (now_ms() - t0 > ms)
			return -1;
		usleep(10000);
	}
}

static int cmd_rst(int argc, char **argv)
{
	if (argc != 5)
		return 2;
	int pport = (int)num(argv[0], 1, 65535), uport = (int)num(argv[1], 1, 65535);
	int pid = (int)num(argv[2], 1, 1 << 30);
	const char *dir = argv[3], *chain = argv[4];
	struct end e[2];
	struct end *c = &e[0], *u = &e[1];
	int lfd = listen_on(uport), now;
	if (lfd < 0)
		return fail("listen on %d: %s", uport, strerror(-lfd));

	/* one session first, so that the baseline is the idle proxy's after
	 * whatever it allocates once */
	if (session_check(pport, lfd))
		return 1;
	usleep(100000);
	int base = fd_count(pid);
	if (base < 0)
		return fail("no /proc/%d/fd", pid);

	if (session_open(pport, lfd, c, u))
		return 1;
	int cport = port_of(c->fd, 0), xport = port_of(u->fd, 1);
	c->sending = c->reading = u->sending = u->reading = 1;
	double t0 = now_ms();
	/* mid-stream: 1 MiB each way first */
	while (c->got < (1u << 20) || u->got < (1u << 20)) {
		if (now_ms() - t0 > 5000)
			return fail("only %llu / %llu bytes moved before the reset",
				    (unsigned long long)c->got,
				    (unsigned long long)u->got);
		if (pump(e, 2, 100) < 0)
			return 1;
		if (c->ended || u->ended)
			return fail("the session ended before the reset");
	}
	int open_fds = fd_count(pid);
	double ti = now_ms();
	/* The reset: an nft reject rule answers a packet with a RST to its
	 * sender. RSTs themselves pass (the peers' kernels answer with one
	 * once a socket is gone). */
	const char *noreset = "tcp flags \\& rst != rst reject with tcp reset";
	if (!strcmp(dir, "c2p")) /* the proxy's client socket is reset */
		nft("nft add rule %s tcp sport %d tcp dport %d %s", chain, pport,
		    cport, noreset);
	else if (!strcmp(dir, "p2c")) /* the client's socket is reset */
		nft("nft add rule %s tcp sport %d tcp dport %d %s", chain, cport,
		    pport, noreset);
	else if (!strcmp(dir, "u2p")) /* the proxy's upstream socket */
		nft("nft add rule %s tcp sport %d tcp dport %d %s", chain, xport,
		    uport, noreset);
	else if (!strcmp(dir, "p2u")) /* the upstream's socket */
		nft("nft add rule %s tcp sport %d tcp dport %d %s", chain, uport,
		    xport, noreset);
	else if (!strcmp(dir, "c2p-linger")) {
		linger0_close(c->fd);
		c->fd = -1;
		c->ended = 1;
		c->err = ECONNRESET;
		c->ended_ms = now_ms();
	} else if (!strcmp(dir, "u2p-linger")) {
		linger0_close(u->fd);
		u->fd = -1;
		u->ended = 1;
		u->err = ECONNRESET;
		u->ended_ms = now_ms();
	} else {
		return 2;
	}
	/* Both ends keep sending and reading: each must see the session
	 * end (EOF, or an error) promptly. */
	while (!c->ended || !u->ended) {
		if (now_ms() - ti > 3000)
			return fail("%s: 3 s after the reset the %s still runs "
				    "(client %llu/%llu bytes, upstream %llu/%llu)",
				    dir, !c->ended ? "client" : "upstream",
				    (unsigned long long)c->sent,
				    (unsigned long long)c->got,
				    (unsigned long long)u->sent,
				    (unsigned long long)u->got);
		if (pump(e, 2, 50) < 0)
			return 1;
	}
	nft("nft flush chain %s", chain);
	double tc = c->ended_ms - ti, tu = u->ended_ms - ti;
	if (c->fd >= 0)
		close(c->fd);
	if (u->fd >= 0)
		close(u->fd);
	if (wait_fds(pid, base, 3000, &now) < 0)
		return fail("%s: the proxy holds %d fds 3 s after the reset, "
			    "%d before the session", dir, now, base);
	double tf = now_ms() - ti;
	if (session_check(pport, lfd))
		return fail("%s: the proxy does not serve a new session", dir);
	printf("rst %s: client ended (%s) at %.1f ms, upstream ended (%s) at "
	       "%.1f ms, proxy fds %d -> %d -> %d (back at %.1f ms), new "
	       "session ok\n", dir, c->err ? strerror(c->err) : "EOF", tc,
	       u->err ? strerror(u->err) : "EOF", tu, base, open_fds, now, tf);
	close(lfd);
	return 0;
}

/* ---- stall ---- */

static int cmd_stall(int argc, char **argv)
{
	if (argc != 7)
		return 2;
	int pport = (int)num(argv[0], 1, 65535), uport = (int)num(argv[1], 1, 65535);
	int pid = (int)num(argv[2], 1, 1 << 30);
	int up_stops = !strcmp(argv[3], "up");
	if (!up_stops && strcmp(argv[3], "client"))
		return 2;
	double flow = (double)num(argv[4], 1, 600) * 1e3;
	double stall = (double)num(argv[5], 1, 600) * 1e3;
	long bound = num(argv[6], 1, 1 << 20) * 1024;
	struct end e[2];
	int lfd = listen_on(uport);
	if (lfd < 0)
		return fail("listen on %d: %s", uport, strerror(-lfd));
	if (session_check(pport, lfd)) /* the one-time allocations */
		return 1;
	usleep(100000);
	long base = rss_kib(pid), peak = base, at_stall, end_rss;
	if (base < 0)
		return fail("no /proc/%d/status", pid);
	if (session_open(pport, lfd, &e[0], &e[1]))
		return 1;
	struct end *snd = up_stops ? &e[0] : &e[1], *rcv = up_stops ? &e[1] : &e[0];
	snd->sending = 1;
	rcv->reading = 1;
	double t0 = now_ms(), next = t0;
	while (now_ms() - t0 < flow) {
		if (pump(e, 2, 20) < 0)
			return 1;
		if (e[0].ended || e[1].ended)
			return fail("the session ended while flowing");
		if (now_ms() >= next) {
			long r = rss_kib(pid);
			peak = r > peak ? r : peak;
			next += 100;
		}
	}
	uint64_t flowed = rcv->got;
	rcv->reading = 0; /* the reader stops */
	at_stall = rss_kib(pid);
	uint64_t sent_at_stall = snd->sent;
	long stall_peak = at_stall;
	double ts = now_ms();
	next = ts;
	while (now_ms() - ts < stall) {
		if (pump(e, 2, 20) < 0)
			return 1;
		if (e[0].ended || e[1].ended)
			return fail("the session ended while stalled");
		if (now_ms() >= next) {
			long r = rss_kib(pid);
			peak = r > peak ? r : peak;
			stall_peak = r > stall_peak ? r : stall_peak;
			next += 100;
		}
	}
	end_rss = rss_kib(pid);
	printf("stall %s: %.1f MiB through in %.0f ms, then %.1f MiB more pushed "
	       "while stalled (%.0f ms); proxy VmRSS %ld KiB before, %ld at the "
	       "stall, %ld at the end, peak %ld (bound: +%ld KiB, +2048 while "
	       "stalled)\n", up_stops ? "upstream-reader" : "client-reader",
	       (double)flowed / 1048576.0, flow,
	       (double)(snd->sent - sent_at_stall) / 1048576.0, stall, base,
	       at_stall, end_rss, peak, bound);
	if (flowed < (4u << 20))
		return fail("only %llu bytes flowed before the stall",
			    (unsigned long long)flowed);
	if (peak - base > bound)
		return fail("VmRSS grew by %ld KiB, over the bound of %ld KiB",
			    peak - base, bound);
	if (stall_peak - at_stall > 2048)
		return fail("VmRSS grew by %ld KiB while the reader was stalled",
			    stall_peak - at_stall);
	close(e[0].fd);
	close(e[1].fd);
	/* and it still serves */
	if (session_check(pport, lfd))
		return fail("no new session after the stall");
	close(lfd);
	return 0;
}

/* ---- crowd ---- */

static int cmd_crowd(int argc, char **argv)
{
	if (argc != 6)
		return 2;
	int port = (int)num(argv[0], 1, 65535);
	int nidle = (int)num(argv[1], 0, 100000), nhalf = (int)num(argv[2], 0, 100000);
	const char *half_addr = argv[3];
	int idle_ms = (int)num(argv[4], 1, 600000), bound = (int)num(argv[5], 1, 600000);
	int n = nidle + nhalf;
	int *fds = calloc((size_t)n, sizeof *fds);
	struct rlimit rl;
	if (!fds)
		return fail("out of memory");
	getrlimit(RLIMIT_NOFILE, &rl);
	if (rl.rlim_cur < (rlim_t)n + 64)
		return fail("RLIMIT_NOFILE %llu is too low for %d sockets",
			    (unsigned long long)rl.rlim_cur, n);
	double t0 = now_ms();
	/* the half-open ones first: their handshakes never complete at the
	 * server (it holds them in SYN_RECV, or sent a cookie) */
	for (int i = 0; i < n; i++) {
		fds[i] = connect_start(i < nhalf ? half_addr : NULL, port);
		if (fds[i] < 0)
			return fail("socket %d of %d: %s", i, n, strerror(-fds[i]));
	}
	/* every client thinks it is connected (the half-open ones too: the
	 * SYN-ACK reached them) */
	int done = 0;
	struct pollfd *p = calloc((size_t)n, sizeof *p);
	if (!p)
		return fail("out of memory");
	while (done < n) {
		if (now_ms() - t0 > 20000)
			return fail("%d of %d connects still pending after 20 s",
				    n - done, n);
		int m = 0;
		for (int i = 0; i < n; i++)
			if (fds[i] >= 0) {
				p[m].fd = fds[i];
				p[m].events = POLLOUT;
				p[m].revents = 0;
				m++;
			}
		if (poll(p, (nfds_t)m, 200) < 0 && errno != EINTR)
			return fail("poll: %s", strerror(errno));
		for (int i = 0, j = 0; i < n; i++) {
			if (fds[i] < 0)
				continue;
			if (p[j].revents & (POLLERR | POLLHUP))
				return fail("connect %d failed", i);
			if (p[j].revents & POLLOUT) {
				done++;
				fds[i] = -fds[i] - 1; /* connected; keep the fd */
			}
			j++;
		}
	}
	for (int i = 0; i < n; i++)
		fds[i] = -fds[i] - 1;
	double tconn = now_ms() - t0;
	printf("crowd: %d half-open + %d idle connections up in %.0f ms\n", nhalf,
	       nidle, tconn);
	int rc = 0;
	for (int g = 0; g < 3; g++) {
		double tg = now_ms();
		int fd = connect_to(port, bound);
		char buf[8];
		size_t got = 0;
		if (fd < 0) {
			rc = fail("good client %d: connect: %s", g, strerror(-fd));
			break;
		}
		send(fd, "ping", 4, MSG_NOSIGNAL);
		while (got < 4) {
			int left = bound + 2000 - (int)(now_ms() - tg);
			if (left <= 0 || !(wait_fd(fd, POLLIN, left) & (POLLIN | POLLHUP | POLLERR)))
				break;
			ssize_t k = recv(fd, buf + got, sizeof buf - got, 0);
			if (k <= 0 && !(k < 0 && errno == EAGAIN))
				break;
			if (k > 0)
				got += (size_t)k;
		}
		double el = now_ms() - tg;
		close(fd);
		printf("crowd: good client %d served in %.1f ms (bound %d ms = "
		       "idle timeout %d + 200)\n", g, el, bound, idle_ms);
		if (got != 4 || memcmp(buf, "ping", 4)) {
			rc = fail("good client %d: no echo within %d ms", g, bound + 2000);
			break;
		}
		if (el > bound) {
			rc = fail("good client %d waited %.1f ms, over %d", g, el, bound);
			break;
		}
	}
	/* The server must close every idle one (the ones it took later from
	 * its backlog too) within 4 idle timeouts and a second. */
	int closed = 0;
	double tw = now_ms(), wmax = 4.0 * idle_ms + 1000;
	while (rc == 0 && closed < nidle) {
		if (now_ms() - tw > wmax) {
			rc = fail("%d of %d idle connections still open %.0f ms "
				  "after the good clients", nidle - closed, nidle, wmax);
			break;
		}
		int m = 0;
		for (int i = nhalf; i < n; i++)
			if (fds[i] >= 0) {
				p[m].fd = fds[i];
				p[m].events = POLLIN;
				p[m].revents = 0;
				m++;
			}
		if (poll(p, (nfds_t)m, 100) < 0 && errno != EINTR)
			return fail("poll: %s", strerror(errno));
		for (int i = nhalf, j = 0; i < n; i++) {
			if (fds[i] < 0)
				continue;
			if (p[j++].revents) {
				char b;
				ssize_t k = recv(fds[i], &b, 1, MSG_DONTWAIT);
				if (k > 0) {
					rc = fail("an idle connection got data");
					break;
				}
				if (k == 0 || errno != EAGAIN) {
					close(fds[i]);
					fds[i] = -1;
					closed++;
				}
			}
		}
	}
	printf("crowd: %d of %d idle connections closed by the server, the "
	       "last %.0f ms after they were all up\n", closed, nidle,
	       now_ms() - t0 - tconn);
	for (int i = 0; i < n; i++)
		if (fds[i] >= 0)
			close(fds[i]);
	free(fds);
	free(p);
	return rc;
}

int main(int argc, char **argv)
{
	signal(SIGPIPE, SIG_IGN);
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (argc < 2)
		goto usage;
	sub = argv[1];
	int r = 2;
	if (!strcmp(sub, "req"))
		r = cmd_req(argc - 2, argv + 2);
	else if (!strcmp(sub, "stream"))
		r = cmd_stream(argc - 2, argv + 2);
	else if (!strcmp(sub, "rst"))
		r = cmd_rst(argc - 2, argv + 2);
	else if (!strcmp(sub, "stall"))
		r = cmd_stall(argc - 2, argv + 2);
	else if (!strcmp(sub, "crowd"))
		r = cmd_crowd(argc - 2, argv + 2);
	if (r != 2)
		return r;
usage:
	fprintf(stderr, "usage: nf_client req|stream|rst|stall|crowd ... "
			"(see the comment at the top of test/nf_client.c)\n");
	return 2;
}

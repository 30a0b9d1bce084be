#include "common.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/time.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

uint64_t t_helper_ops;

uint64_t t_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* RINGIO_BACKEND=uring on a machine that refuses io_uring (seccomp, a
 * container policy, kernel.io_uring_disabled, no io_uring at all): the
 * .uring tests cannot run here, which is a skip with the reason, not a
 * failure. Not when a fault plan is what refused it. */
static void skip_if_no_uring(int rc)
{
	const char *b = getenv("RINGIO_BACKEND");

	if (!b || rio_backend_parse(b) != RIO_BACKEND_URING ||
	    getenv("RINGIO_FAULTS") ||
	    (rc != -EPERM && rc != -EACCES && rc != -ENOSYS))
		return;
	cr_skip_test("io_uring is refused on this machine (%s): the .uring "
		     "tests cannot run here (ringio-probe says why)",
		     rio_strerror(rc));
}

rio_loop *t_loop_opts(unsigned sq_entries, unsigned cq_entries)
{
	rio_loop_opts opts = { .sq_entries = sq_entries,
			       .cq_entries = cq_entries };
	rio_loop *loop = NULL;
	int rc = rio_loop_create(&loop, &opts);

	if (rc < 0)
		skip_if_no_uring(rc);
	cr_assert_eq(rc, 0, "rio_loop_create(sq %u, cq %u): %s", sq_entries,
		     cq_entries, rio_strerror(rc));
	cr_assert_not_null(loop);
	return loop;
}

rio_loop *t_loop(void)
{
	rio_loop *loop = NULL;
	int rc = rio_loop_create(&loop, NULL);

	if (rc < 0)
		skip_if_no_uring(rc);
	cr_assert_eq(rc, 0, "rio_loop_create: %s", rio_strerror(rc));
	cr_assert_not_null(loop);
	return loop;
}

void t_loop_done(rio_loop *loop)
{
	int rc;

	t_drain(loop, 5000);
	rc = rio_loop_destroy(loop);
	cr_assert_eq(rc, 0, "rio_loop_destroy: %s", rio_strerror(rc));
}

rio_backend_kind t_backend(const rio_loop *loop)
{
	return rio_loop_backend(loop, NULL, NULL);
}

/* ---- runner ---- */

static void wd_cb(rio_loop *loop, rio_op *op, int res)
{
	t_runner *r = RIO_CONTAINER_OF(op, t_runner, wd);

	(void)loop;
	(void)res;
	r->wd_armed = 0;
}

static void wd_cancel_cb(rio_loop *loop, rio_op *op, int res)
{
	t_runner *r = RIO_CONTAINER_OF(op, t_runner, cancel);

	(void)loop;
	(void)res;
	r->cancel_armed = 0;
}

void t_runner_begin(t_runner *r, rio_loop *loop, unsigned limit_ms,
		    const char *what)
{
	memset(r, 0, sizeof(*r));
	r->loop = loop;
	r->what = what;
	r->start_ns = t_now_ns();
	r->limit_ns = (uint64_t)limit_ms * T_MS;
	r->max_iters = 20000000ul;
}

int t_runner_own(const t_runner *r)
{
	return r->wd_armed + r->cancel_armed;
}

int t_runner_step(t_runner *r)
{
	uint64_t elapsed = t_now_ns() - r->start_ns;
	uint64_t slice;
	int rc;

	if (elapsed >= r->limit_ns)
		cr_assert_fail("timed out after %llu ms waiting for: %s",
			       (unsigned long long)(elapsed / T_MS), r->what);
	if (++r->iters > r->max_iters)
		cr_assert_fail("gave up after %lu loop turns waiting for: %s",
			       r->iters, r->what);
	if (!r->wd_armed) {
		slice = r->limit_ns - elapsed;
		if (slice > 20 * T_MS)
			slice = 20 * T_MS;
		rio_op_init(&r->wd);
		rc = rio_timeout(r->loop, &r->wd, slice, wd_cb);
		cr_assert_eq(rc, 0, "watchdog rio_timeout: %s", rio_strerror(rc));
		r->wd_armed = 1;
		t_helper_ops++;
	}
	rc = rio_loop_run(r->loop, RIO_RUN_ONCE);
	cr_assert(rc >= 0, "rio_loop_run(ONCE) failed: %s", rio_strerror(rc));
	r->last = rc;
	return rc;
}

void t_runner_end(t_runner *r)
{
	uint64_t start = t_now_ns();
	unsigned long n = 0;
	int rc;

	if (r->wd_armed) {
		rio_op_init(&r->cancel);
		rc = rio_cancel(r->loop, &r->cancel, &r->wd, wd_cancel_cb);
		cr_assert_eq(rc, 0, "watchdog rio_cancel: %s", rio_strerror(rc));
		r->cancel_armed = 1;
		t_helper_ops++;
	}
	while (t_runner_own(r) > 0) {
		/* The watchdog itself bounds each turn (<= 20 ms). */
		cr_assert(t_now_ns() - start < 2000 * T_MS && ++n < 1000000,
			  "the runner's watchdog/cancel never completed");
		rc = rio_loop_run(r->loop, RIO_RUN_ONCE);
		cr_assert(rc >= 0, "rio_loop_run(ONCE) failed: %s",
			  rio_strerror(rc));
	}
}

void t_drain(rio_loop *loop, unsigned limit_ms)
{
	t_runner r;
	int n;

	t_runner_begin(&r, loop, limit_ms, "no user op in flight");
	n = rio_loop_run(loop, RIO_RUN_NOWAIT);
	cr_assert(n >= 0, "rio_loop_run(NOWAIT) failed: %s", rio_strerror(n));
	while (n - t_runner_own(&r) > 0)
		n = t_runner_step(&r);
	t_runner_end(&r);
}

struct sleeper {
	rio_op op;
	int done;
};

static void sleeper_cb(rio_loop *loop, rio_op *op, int res)
{
	(void)loop;
	(void)res;
	RIO_CONTAINER_OF(op, struct sleeper, op)->done = 1;
}

void t_loop_sleep(rio_loop *loop, unsigned ms)
{
	struct sleeper s = { .done = 0 };
	int rc = rio_timeout(loop, &s.op, (uint64_t)ms * T_MS, sleeper_cb);

	cr_assert_eq(rc, 0, "rio_timeout: %s", rio_strerror(rc));
	t_helper_ops++;
	T_RUN_UNTIL(loop, s.done, ms + 5000);
}

/* ---- sockets ---- */

socklen_t t_loopback(int family, uint16_t port, struct sockaddr_storage *ss)
{
	memset(ss, 0, sizeof(*ss));
	if (family == AF_INET6) {
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;

		s6->sin6_family = AF_INET6;
		s6->sin6_addr = in6addr_loopback;
		s6->sin6_port = htons(port);
		return sizeof(*s6);
	}
	struct sockaddr_in *s4 = (struct sockaddr_in *)ss;

	s4->sin_family = AF_INET;
	s4->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	s4->sin_port = htons(port);
	return sizeof(*s4);
}

static uint16_t port_of(int fd)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);

	cr_assert_eq(getsockname(fd, (struct sockaddr *)&ss, &len), 0,
		     "getsockname: %s", strerror(errno));
	if (ss.ss_family == AF_INET6)
		return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
	return ntohs(((struct sockaddr_in *)&ss)->sin_port);
}

int t_listen(int family, int backlog, uint16_t *port)
{
	struct sockaddr_storage ss;
	socklen_t len = t_loopback(family, 0, &ss);
	int one = 1;
	int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);

	cr_assert(fd >= 0, "socket: %s", strerror(errno));
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	cr_assert_eq(bind(fd, (struct sockaddr *)&ss, len), 0, "bind: %s",
		     strerror(errno));
	cr_assert_eq(listen(fd, backlog), 0, "listen: %s", strerror(errno));
	if (port)
		*port = port_of(fd);
	return fd;
}

int t_try_connect(int family, uint16_t port)
{
	struct sockaddr_storage ss;
	socklen_t len = t_loopback(family, port, &ss);
	int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);

	cr_assert(fd >= 0, "socket: %s", strerror(errno));
	if (connect(fd, (struct sockaddr *)&ss, len) < 0) {
		int err = errno;

		close(fd);
		return -err;
	}
	return fd;
}

int t_connect(int family, uint16_t port)
{
	int fd = t_try_connect(family, port);

	cr_assert(fd >= 0, "connect: %s", strerror(-fd));
	return fd;
}

void t_pair(int *a, int *b)
{
	uint16_t port;
	int one = 1;
	int lfd = t_listen(AF_INET, 4, &port);

	*a = t_connect(AF_INET, port);
	*b = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
	cr_assert(*b >= 0, "accept4: %s", strerror(errno));
	close(lfd);
	cr_assert_eq(fcntl(*a, F_SETFL, fcntl(*a, F_GETFL) | O_NONBLOCK), 0);
	cr_assert_eq(fcntl(*b, F_SETFL, fcntl(*b, F_GETFL) | O_NONBLOCK), 0);
	setsockopt(*a, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	setsockopt(*b, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

uint16_t t_closed_port(void)
{
	uint16_t port;
	int fd = t_listen(AF_INET, 1, &port);

	close(fd);
	return port;
}

void t_rst_close(int fd)
{
	struct linger lg = { .l_onoff = 1, .l_linger = 0 };

	cr_assert_eq(setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg)), 0,
		     "SO_LINGER: %s", strerror(errno));
	close(fd);
}

int t_full_listener(uint16_t *port, int *filler)
{
	struct sockaddr_storage ss;
	socklen_t len;
	struct pollfd pfd;
	struct tcp_info ti;
	socklen_t tlen;
	int err = 0;
	socklen_t elen = sizeof(err);
	int lfd = t_listen(AF_INET, 0, port);
	uint64_t start;
	int fd;

	/* backlog 0 admits one queued connection; once it is queued the
	 * listener drops every further SYN (LISTENOVERFLOWS), so the next
	 * connect stays in SYN_SENT for the whole SYN retry schedule. */
	len = t_loopback(AF_INET, *port, &ss);
	fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	cr_assert(fd >= 0);
	if (connect(fd, (struct sockaddr *)&ss, len) != 0)
		cr_assert_eq(errno, EINPROGRESS, "connect: %s", strerror(errno));
	pfd = (struct pollfd){ .fd = fd, .events = POLLOUT };
	cr_assert_eq(poll(&pfd, 1, 2000), 1, "filler connect never finished");
	getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &elen);
	cr_assert_eq(err, 0, "filler connect: %s", strerror(err));
	/* For a listener, tcpi_unacked is the accept queue length. */
	start = t_now_ns();
	for (;;) {
		memset(&ti, 0, sizeof(ti));
		tlen = sizeof(ti);
		cr_assert_eq(getsockopt(lfd, IPPROTO_TCP, TCP_INFO, &ti, &tlen), 0);
		if (ti.tcpi_unacked >= 1)
			break;
		cr_assert(t_now_ns() - start < 2000 * T_MS,
			  "accept queue never filled");
		usleep(1000);
	}
	*filler = fd;
	return lfd;
}

size_t t_fill_sndbuf(int fd, int peer)
{
	static char junk[4096];
	int small = 4096;
	size_t total = 0;
	int quiet = 0;

	setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &small, sizeof(small));
	setsockopt(peer, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
	/* Send until EAGAIN, twice in a row across a short pause, so that
	 * what loopback was still moving has settled. */
	for (int round = 0; round < 200 && quiet < 2; round++) {
		ssize_t n = send(fd, junk, sizeof(junk),
				 MSG_DONTWAIT | MSG_NOSIGNAL);

		if (n > 0) {
			total += (size_t)n;
			quiet = 0;
			round = 0;
			cr_assert(total < (64u << 20), "send buffer never filled");
			continue;
		}
		cr_assert(n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK),
			  "fill send: %s", strerror(errno));
		quiet++;
		usleep(5000);
	}
	cr_assert_eq(quiet, 2, "send buffer kept draining");
	return total;
}

size_t t_drain_fd(int fd)
{
	char buf[16384];
	size_t total = 0;

	for (int i = 0; i < 100000; i++) {
		ssize_t n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);

		if (n <= 0)
			break;
		total += (size_t)n;
	}
	return total;
}

void t_timeouts(int fd, int sec)
{
	struct timeval tv = { .tv_sec = sec };

	cr_assert_eq(setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)), 0);
	cr_assert_eq(setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)), 0);
}

int t_set_blocking(int fd)
{
	int fl = fcntl(fd, F_GETFL);

	if (fl < 0)
		return -errno;
	return fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) < 0 ? -errno : 0;
}

bool t_ipv6_loopback(void)
{
	struct sockaddr_storage ss;
	socklen_t len = t_loopback(AF_INET6, 0, &ss);
	int fd = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
	bool ok;

	if (fd < 0)
		return false;
	ok = bind(fd, (struct sockaddr *)&ss, len) == 0;
	close(fd);
	return ok;
}

bool t_raise_nofile(rlim_t need)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
		return false;
	if (rl.rlim_cur >= need)
		return true;
	if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < need)
		return false;
	rl.rlim_cur = need;
	return setrlimit(RLIMIT_NOFILE, &rl) == 0;
}

bool t_kernel_at_least(int major, int minor)
{
	struct utsname u;
	int ma = 0, mi = 0;

	if (uname(&u) != 0 || sscanf(u.release, "%d.%d", &ma, &mi) != 2)
		return false;
	return ma > major || (ma == major && mi >= minor);
}

rio_bufpool *t_bufpool(rio_loop *loop, unsigned count, size_t size)
{
	rio_bufpool *pool = NULL;
	int rc = rio_bufpool_create(loop, count, size, &pool);

	/* Buffer rings arrived in 5.19, multishot recv in 6.0: only a kernel
	 * that old may say -EINVAL here. */
	if (rc == -EINVAL && !t_kernel_at_least(6, 0))
		cr_skip_test("kernel lacks provided-buffer rings / multishot "
			     "recv (rio_bufpool_create: -EINVAL)");
	cr_assert_eq(rc, 0, "rio_bufpool_create(%u, %zu): %s", count, size,
		     rio_strerror(rc));
	cr_assert_not_null(pool);
	return pool;
}

/* ---- data ---- */

/* ---- echo checks ---- */

bool t_recv_upto(int fd, void *buf, size_t len, size_t *have)
{
	ssize_t n = recv(fd, (char *)buf + *have, len - *have, MSG_DONTWAIT);

	if (n > 0)
		*have += (size_t)n;
	return *have == len;
}

void t_echo_check(rio_loop *loop, int fd, const char *msg)
{
	size_t len = strlen(msg), have = 0;
	char buf[256];

	cr_assert_lt(len, sizeof(buf));
	cr_assert_eq(send(fd, msg, len, MSG_NOSIGNAL), (ssize_t)len);
	T_RUN_UNTIL(loop, t_recv_upto(fd, buf, len, &have), 5000);
	cr_assert_eq(memcmp(buf, msg, len), 0, "the echo of '%s' differs", msg);
}

void t_echo_check_port(rio_loop *loop, uint16_t port, const char *msg)
{
	int fd = t_connect(AF_INET, port);

	t_echo_check(loop, fd, msg);
	close(fd);
}

int t_stall_client(rio_loop *loop, uint16_t port, uint64_t *pushed)
{
	static char chunk[65536];
	int c = t_connect(AF_INET, port), stuck = 0;

	*pushed = 0;
	for (int i = 0; i < 4000 && stuck < 50; i++) {
		ssize_t n = send(c, chunk, sizeof(chunk), MSG_DONTWAIT);
		unsigned ms = n > 0 ? 0 : 10;

		if (n > 0) {
			*pushed += (uint64_t)n;
			stuck = 0;
		} else {
			stuck++;
		}
		if (loop)
			t_loop_sleep(loop, ms);
		else if (ms)
			usleep(ms * 1000);
	}
	cr_assert_eq(stuck, 50, "the pipeline never filled up");
	return c;
}

void *t_stream_writer(void *arg)
{
	t_stream *s = arg;
	char *buf = malloc(65536);

	cr_assert_not_null(buf);
	s->fnv_out = T_FNV_INIT;
	while (s->sent < s->total && !s->werr) {
		size_t n = s->total - s->sent < 65536 ? s->total - s->sent : 65536;

		t_pat_fill(buf, n, s->sent);
		s->fnv_out = t_fnv(s->fnv_out, buf, n);
		for (size_t o = 0; o < n && !s->werr;) {
			ssize_t k = send(s->fd, buf + o, n - o, MSG_NOSIGNAL);

			if (k <= 0)
				s->werr = k < 0 ? errno : EPIPE;
			else
				o += (size_t)k;
		}
		s->sent += n;
		if (s->pace_us)
			usleep(s->pace_us);
	}
	if (shutdown(s->fd, SHUT_WR) < 0 && !s->werr)
		s->werr = errno;
	free(buf);
	return NULL;
}

void *t_stream_reader(void *arg)
{
	t_stream *s = arg;
	char *buf = malloc(65536);
	ssize_t n;

	cr_assert_not_null(buf);
	s->fnv_in = T_FNV_INIT;
	while ((n = recv(s->fd, buf, 65536, 0)) > 0) {
		s->fnv_in = t_fnv(s->fnv_in, buf, (size_t)n);
		s->got += (uint64_t)n;
	}
	if (n < 0)
		s->rerr = errno;
	free(buf);
	atomic_store(&s->done, 1);
	return NULL;
}

void t_stream_run(rio_loop *loop, t_stream *s, unsigned limit_ms)
{
	pthread_t tw, tr;

	cr_assert_eq(pthread_create(&tw, NULL, t_stream_writer, s), 0);
	cr_assert_eq(pthread_create(&tr, NULL, t_stream_reader, s), 0);
	T_RUN_UNTIL(loop, atomic_load(&s->done), limit_ms);
	pthread_join(tw, NULL);
	pthread_join(tr, NULL);
	cr_assert_eq(s->werr, 0, "writer: %s", strerror(s->werr));
	cr_assert_eq(s->rerr, 0, "reader: %s", strerror(s->rerr));
	cr_assert_eq(s->sent, s->total);
	cr_assert_eq(s->got, s->total, "echoed %llu of %llu bytes",
		     (unsigned long long)s->got, (unsigned long long)s->total);
	cr_assert_eq(s->fnv_in, s->fnv_out, "the echoed stream differs");
}

/* ---- tools as child processes ---- */

void t_die_with_parent(void)
{
	prctl(PR_SET_PDEATHSIG, SIGKILL);
}

pid_t t_tool_spawn(char *const argv[], const char *env, int *out_fd)
{
	int so[2];
	pid_t pid;

	cr_assert_eq(pipe(so), 0);
	pid = fork();
	cr_assert(pid >= 0, "fork: %s", strerror(errno));
	if (pid == 0) {
		t_die_with_parent();
		dup2(so[1], 1);
		if (env)
			putenv((char *)env);
		execv(argv[0], argv);
		_exit(127);
	}
	close(so[1]);
	*out_fd = so[0];
	return pid;
}

void t_wait_listening(uint16_t port)
{
	int fd = -1;

	for (int i = 0; i < 500 && fd < 0; i++) {
		fd = t_try_connect(AF_INET, port);
		if (fd < 0)
			usleep(10000);
	}
	cr_assert_geq(fd, 0, "nothing listens on port %u", port);
	close(fd);
}

void t_tool_stop(pid_t pid, int out_fd, char *out, size_t cap)
{
	size_t have = 0;
	ssize_t n;
	int st;

	cr_assert_eq(kill(pid, SIGTERM), 0, "the tool died before SIGTERM");
	while (have < cap - 1 &&
	       (n = read(out_fd, out + have, cap - 1 - have)) > 0)
		have += (size_t)n;
	out[have] = 0;
	close(out_fd);
	cr_assert_eq(waitpid(pid, &st, 0), pid);
	cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0,
		  "exit status %d after SIGTERM; it printed: %s", st, out);
	cr_log_info("%s", out);
}

long t_rss_kib(pid_t pid)
{
	char path[64], line[256];
	long kib = -1;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	f = fopen(path, "r");
	cr_assert_not_null(f);
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "VmRSS: %ld", &kib) == 1)
			break;
	fclose(f);
	cr_assert_gt(kib, 0, "no VmRSS in %s", path);
	return kib;
}

uint64_t t_field(const char *out, const char *name)
{
	const char *f = strstr(out, name);

	cr_assert_not_null(f, "no %s in: %s", name, out);
	return strtoull(f + strlen(name), NULL, 10);
}

static uint64_t mix64(uint64_t x)
{
	x += 0x9e3779b97f4a7c15ull;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
	return x ^ (x >> 31);
}

void t_pat_fill(void *buf, size_t len, uint64_t off)
{
	uint8_t *p = buf;
	uint64_t word = mix64(off >> 3);

	for (size_t i = 0; i < len; i++, off++) {
		if ((off & 7) == 0)
			word = mix64(off >> 3);
		p[i] = (uint8_t)(word >> ((off & 7) * 8));
	}
}

size_t t_pat_check(const void *buf, size_t len, uint64_t off)
{
	const uint8_t *p = buf;
	uint64_t word = mix64(off >> 3);

	for (size_t i = 0; i < len; i++, off++) {
		if ((off & 7) == 0)
			word = mix64(off >> 3);
		if (p[i] != (uint8_t)(word >> ((off & 7) * 8)))
			return i;
	}
	return len;
}

uint64_t t_fnv(uint64_t h, const void *buf, size_t len)
{
	const uint8_t *p = buf;

	for (size_t i = 0; i < len; i++) {
		h ^= p[i];
		h *= 0x100000001b3ull;
	}
	return h;
}

/* ---- callback recorder ---- */

int t_seq;
int t_done;

void t_nop_cb(rio_loop *loop, rio_op *op, int res)
{
	(void)loop;
	(void)op;
	(void)res;
}

void t_rec_cb(rio_loop *loop, rio_op *op, int res)
{
	t_rec *r = RIO_CONTAINER_OF(op, t_rec, op);

	(void)loop;
	r->calls++;
	r->res = res;
	r->flags = op->flags;
	r->seq = ++t_seq;
}

void t_rec_count_cb(rio_loop *loop, rio_op *op, int res)
{
	t_rec_cb(loop, op, res);
	t_done++;
}

void t_rec_all_once(const t_rec *r, int n, const char *what)
{
	for (int i = 0; i < n; i++)
		cr_assert_eq(r[i].calls, 1, "%s %d completed %d times", what, i,
			     r[i].calls);
}

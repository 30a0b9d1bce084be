/* ringio-proxy, as a user runs it: a child process in front of upstreams
 * on loopback. Bytes both ways, half-close both ways, failover, all
 * upstreams down, a reader that stops, 1,000 concurrent connections, and
 * a real client (redis-benchmark to redis-server) when they are here. */
#include "tload.h"
#include "tserver.h"

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef RIO_PROXY_BIN
#define RIO_PROXY_BIN NULL
#endif

typedef struct proxy {
	pid_t pid;
	int out;  /* its stdout (the counters) */
	uint16_t port;
} proxy;

/* > 0: the next proxy_start runs the proxy with this RLIMIT_NOFILE (soft
 * and hard), set before it starts. */
static rlim_t proxy_nofile;

/* Start ringio-proxy on 127.0.0.1:`port` with `ups` upstream ports and
 * extra flags (NULL-terminated); wait for its start-up line (a probe
 * connection would be a session of its own). With port 0 the proxy picks
 * one, and p->port is read from the start-up line. */
static void proxy_start_on(proxy *p, uint16_t port, const uint16_t *ups,
			   int nups, const char *const *extra)
{
	char *argv[32], lbuf[32], ubuf[8][32], line[512];
	int so[2], se[2], n = 0;
	size_t have = 0;

	if (!RIO_PROXY_BIN)
		cr_skip_test("ringio-proxy not built (RINGIO_BUILD_TOOLS=OFF)");
	p->port = port;
	snprintf(lbuf, sizeof(lbuf), "127.0.0.1:%u", p->port);
	argv[n++] = "ringio-proxy";
	argv[n++] = "--listen";
	argv[n++] = lbuf;
	for (int i = 0; i < nups; i++) {
		snprintf(ubuf[i], sizeof(ubuf[i]), "127.0.0.1:%u", ups[i]);
		argv[n++] = "--upstream";
		argv[n++] = ubuf[i];
	}
	while (extra && *extra)
		argv[n++] = (char *)*extra++;
	argv[n] = NULL;
	cr_assert_eq(pipe(so), 0);
	cr_assert_eq(pipe(se), 0);
	p->pid = fork();
	cr_assert(p->pid >= 0);
	if (p->pid == 0) {
		t_die_with_parent();
		dup2(so[1], 1);
		dup2(se[1], 2);
		if (proxy_nofile) {
			struct rlimit rl = { proxy_nofile, proxy_nofile };

			if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
				_exit(126);
		}
		execv(RIO_PROXY_BIN, argv);
		_exit(127);
	}
	close(so[1]);
	close(se[1]);
	p->out = so[0];
	while (!memchr(line, '\n', have) && have < sizeof(line) - 1) {
		struct pollfd pf = { .fd = se[0], .events = POLLIN };
		ssize_t k;

		cr_assert_eq(poll(&pf, 1, 5000), 1, "ringio-proxy did not start");
		k = read(se[0], line + have, sizeof(line) - 1 - have);
		cr_assert_gt(k, 0, "ringio-proxy exited at start-up");
		have += (size_t)k;
	}
	line[have] = 0;
	cr_assert_not_null(strstr(line, "listener(s)"), "ringio-proxy: %s", line);
	close(se[0]);
	/* the start-up line says where it listens */
	const char *at = strstr(line, " on 127.0.0.1:");
	unsigned got = 0;

	cr_assert(at && sscanf(at, " on 127.0.0.1:%u", &got) == 1,
		  "no listening address in: %s", line);
	if (port)
		cr_assert_eq(got, port, "%s", line);
	p->port = (uint16_t)got;
	cr_assert_neq(p->port, 0, "%s", line);
}

static void proxy_start(proxy *p, const uint16_t *ups, int nups,
			const char *const *extra)
{
	proxy_start_on(p, t_closed_port(), ups, nups, extra);
}

/* SIGTERM; it must print its counters and exit 0. Returns the counters. */
static void proxy_stop(proxy *p, char *out, size_t cap)
{
	t_tool_stop(p->pid, p->out, out, cap);
	cr_assert_not_null(strstr(out, "accepted="), "no counters: %s", out);
}
/* ---- 64 MiB each way ---- */

#define TOTAL (64u << 20)

/* `splice`: the --splice mode; returns spliced_dirs. */
static uint64_t sixty_four_mib(const char *splice)
{
	rio_loop *loop = t_loop();
	t_stream s = { .total = TOTAL };
	const char *extra[] = { "--splice", splice, NULL };
	char out[1024];
	proxy p;
	tsrv up;

	tsrv_start(&up, loop, NULL, 0);
	proxy_start(&p, &up.port, 1, extra);
	s.fd = t_connect(AF_INET, p.port);
	t_timeouts(s.fd, 60);
	t_stream_run(loop, &s, 150000);
	cr_assert_eq(up.bytes, TOTAL);
	close(s.fd);
	proxy_stop(&p, out, sizeof(out));
	cr_assert_eq(t_field(out, "bytes_up="), TOTAL);
	cr_assert_eq(t_field(out, "bytes_down="), TOTAL);
	tsrv_finish(&up);
	t_loop_done(loop);
	return t_field(out, "spliced_dirs=");
}

/* The default (--splice auto): a bulk transfer switches both directions
 * to splicing, and the bytes still arrive unchanged. */
Test(proxy, sixty_four_mib_each_way, .timeout = 180)
{
	cr_assert_eq(sixty_four_mib("auto"), 2, "bulk was not spliced");
}

Test(proxy, sixty_four_mib_each_way_copying, .timeout = 180)
{
	cr_assert_eq(sixty_four_mib("off"), 0);
}

/* The upstream ends its side first: the client sees EOF and can still
 * send, and the upstream gets all of it and then the client's FIN. */
static void half_close(const char *splice)
{
	uint16_t uport;
	int lfd = t_listen(AF_INET, 16, &uport), c, u;
	const char *extra[] = { "--splice", splice, NULL };
	char buf[64], out[1024];
	proxy p;

	proxy_start(&p, &uport, 1, extra);
	c = t_connect(AF_INET, p.port);
	t_timeouts(c, 10);
	u = accept(lfd, NULL, NULL);
	cr_assert_geq(u, 0);
	t_timeouts(u, 10);
	cr_assert_eq(send(u, "hello", 5, 0), 5);
	cr_assert_eq(shutdown(u, SHUT_WR), 0);
	cr_assert_eq(recv(c, buf, 5, MSG_WAITALL), 5);
	cr_assert_eq(memcmp(buf, "hello", 5), 0);
	cr_assert_eq(recv(c, buf, 1, 0), 0, "no FIN to the client");
	cr_assert_eq(send(c, "after", 5, 0), 5, "the other way closed too");
	cr_assert_eq(shutdown(c, SHUT_WR), 0);
	cr_assert_eq(recv(u, buf, 5, MSG_WAITALL), 5);
	cr_assert_eq(memcmp(buf, "after", 5), 0);
	cr_assert_eq(recv(u, buf, 1, 0), 0, "no FIN to the upstream");
	close(c);
	close(u);
	close(lfd);
	proxy_stop(&p, out, sizeof(out));
	cr_assert_eq(t_field(out, "spliced_dirs="), strcmp(splice, "on") ? 0 : 2);
}

Test(proxy, half_close_both_ways, .timeout = 60)
{
	half_close("auto"); /* small messages: copied */
}

Test(proxy, half_close_both_ways_spliced, .timeout = 60)
{
	half_close("on");
}

/* --threads 2: each thread sets up and runs its own loop (a ring is tied
 * to the thread that set it up); 64 connections land on both listeners. */
Test(proxy, every_thread_serves, .timeout = 60)
{
	static const char *const extra[] = { "--threads", "2", NULL };
	rio_loop *loop = t_loop();
	char out[1024];
	proxy p;
	tsrv up;

	tsrv_start(&up, loop, NULL, 0);
	proxy_start(&p, &up.port, 1, extra);
	for (int i = 0; i < 64; i++)
		t_echo_check_port(loop, p.port, "threads");
	proxy_stop(&p, out, sizeof(out));
	cr_assert_eq(t_field(out, "accepted="), 64);
	tsrv_finish(&up);
	t_loop_done(loop);
}

Test(proxy, refusing_upstream_is_skipped, .timeout = 60)
{
	rio_loop *loop = t_loop();
	uint16_t ups[2];
	char out[1024];
	proxy p;
	tsrv up;

	tsrv_start(&up, loop, NULL, 0);
	ups[0] = t_closed_port();
	ups[1] = up.port;
	proxy_start(&p, ups, 2, NULL);
	for (int i = 0; i < 4; i++) /* the first starts on the dead one */
		t_echo_check_port(loop, p.port, "failover");
	proxy_stop(&p, out, sizeof(out));
	/* then --fail-timeout (10 s by default) keeps the others off it */
	cr_assert_eq(t_field(out, "upstream_refused="), 1, "%s", out);
	cr_assert_eq(t_field(out, "no_upstream="), 0);
	tsrv_finish(&up);
	t_loop_done(loop);
}

Test(proxy, all_upstreams_down_closes_the_client_promptly, .timeout = 60)
{
	uint16_t ups[2] = { t_closed_port(), t_closed_port() };
	static const char *const extra[] = { "--connect-timeout", "500", NULL };
	char buf[8], out[1024];
	uint64_t t0;
	ssize_t n;
	proxy p;
	int c;

	proxy_start(&p, ups, 2, extra);
	c = t_connect(AF_INET, p.port);
	t_timeouts(c, 10);
	t0 = t_now_ns();
	n = recv(c, buf, sizeof(buf), 0);
	cr_assert(n == 0 || (n < 0 && errno == ECONNRESET),
		  "recv gave %zd (%s)", n, strerror(errno));
	cr_assert_lt(t_now_ns() - t0, 2000 * T_MS, "not closed promptly");
	close(c);
	proxy_stop(&p, out, sizeof(out));
	cr_assert_geq(t_field(out, "no_upstream="), 1);
}

/* Listening sockets on 127.0.0.1:port in /proc/net/tcp. */
static int listeners_on(uint16_t port)
{
	FILE *f = fopen("/proc/net/tcp", "r");
	char l[256];
	int n = 0;

	cr_assert_not_null(f);
	while (fgets(l, sizeof l, f)) {
		unsigned lp, st;

		if (sscanf(l, " %*d: %*8[0-9A-Fa-f]:%x %*8[0-9A-Fa-f]:%*x %x",
			   &lp, &st) == 2 && lp == port && st == 0x0A)
			n++;
	}
	fclose(f);
	return n;
}

/* --listen 127.0.0.1:0 with two threads: one port for both (bound by the
 * first thread, then by the second with SO_REUSEPORT), printed at start,
 * and both threads serve on it. */
Test(proxy, port_zero_is_one_port_for_every_thread, .timeout = 60)
{
	static const char *const extra[] = { "--threads", "2", NULL };
	rio_loop *loop = t_loop();
	char out[1024];
	proxy p;
	tsrv up;

	tsrv_start(&up, loop, NULL, 0);
	proxy_start_on(&p, 0, &up.port, 1, extra);
	/* the second thread sets up on its own: give it a moment */
	for (int i = 0; i < 250 && listeners_on(p.port) < 2; i++)
		t_loop_sleep(loop, 20);
	cr_assert_eq(listeners_on(p.port), 2, "listening sockets on port %u",
		     p.port);
	for (int i = 0; i < 32; i++)
		t_echo_check_port(loop, p.port, "port zero");
	proxy_stop(&p, out, sizeof(out));
	cr_assert_eq(t_field(out, "upstream_ok="), 32);
	tsrv_finish(&up);
	t_loop_done(loop);
}

/* The proxy started at RLIMIT_NOFILE 64, with 200 clients x 64 KiB: it
 * accepts no more sessions than it has fds for (two each), and a client
 * that still finds no fd for its upstream waits for one instead of being
 * closed; every client is served, none given up. */
Test(proxy, fd_exhaustion_waits_instead_of_closing, .timeout = 120)
{
	enum { CONNS = 200, NOFILE = 64 };
	char out[1024];
	tload_result res;
	rio_loop *loop = t_loop();
	proxy p;
	tsrv up;
	int rfd;

	tsrv_start(&up, loop, NULL, 0);
	proxy_nofile = NOFILE;
	proxy_start(&p, &up.port, 1, NULL);
	proxy_nofile = 0;
	tload_opts o = { .port = p.port, .conns = CONNS, .rounds = 1,
			 .size = 65536, .max_connecting = CONNS, .hold_fd = -1,
			 .limit_ms = 60000, .seed = 21, .nofile = CONNS + 100 };
	pid_t pid = tload_spawn(&o, &rfd);
	tload_finish(loop, pid, rfd, 90000, &res);
	proxy_stop(&p, out, sizeof(out));
	cr_log_info("at NOFILE %d: %s", NOFILE, out);
	cr_assert_eq(res.ok, CONNS, "served %d of %d (failed %d, aborted %d, "
		     "connect errors %d); proxy: %s", res.ok, CONNS, res.failed,
		     res.aborted, res.connect_errors, out);
	cr_assert_eq(res.mismatches, 0);
	cr_assert_eq(t_field(out, "upstream_ok="), CONNS, "%s", out);
	cr_assert_eq(t_field(out, "fd_shed="), 0, "%s", out);
	cr_log_info("fd_waits=%llu",
		    (unsigned long long)t_field(out, "fd_waits="));
	tsrv_finish(&up);
	t_loop_done(loop);
}

/* Open fds of process `pid`. */
static int fds_of(pid_t pid)
{
	char path[64];
	int n = 0;

	snprintf(path, sizeof path, "/proc/%d/fd", (int)pid);
	DIR *d = opendir(path);
	cr_assert_not_null(d);
	for (struct dirent *e; (e = readdir(d));)
		n += e->d_name[0] != '.';
	closedir(d);
	return n;
}

/* Worse: 8 fds left, and 40 clients queued at once. A multishot accept
 * (io_uring) can take all 8 for clients, and then every session waits for
 * an upstream fd that no session will ever free. The proxy must not hang:
 * it gives the newest client up (fd_shed) so the oldest can go, serves
 * the rest, and serves as before once the burst is over. */
Test(proxy, every_session_waiting_for_an_fd_does_not_hang, .timeout = 120)
{
	enum { CONNS = 40, SPARE = 8 };
	rio_loop *loop = t_loop();
	char out[1024], buf[4];
	int c[CONNS], served = 0, closed = 0;
	proxy p;
	tsrv up;

	tsrv_start(&up, loop, NULL, 0);
	proxy_start(&p, &up.port, 1, NULL);
	t_loop_sleep(loop, 50);
	rlim_t lim = (rlim_t)fds_of(p.pid) + SPARE;
	struct rlimit rl = { lim, lim };
	cr_assert_eq(prlimit(p.pid, RLIMIT_NOFILE, &rl, NULL), 0);
	for (int i = 0; i < CONNS; i++) {
		c[i] = t_connect(AF_INET, p.port);
		t_timeouts(c[i], 30);
		cr_assert_eq(send(c[i], "ping", 4, 0), 4);
	}
	/* every client ends one way or the other, while the upstream runs;
	 * a served one closes, and its session's fds come back */
	size_t have[CONNS] = {0};
	int done = 0;
	uint64_t end = t_now_ns() + 30000 * T_MS;

	while (done < CONNS && t_now_ns() < end) {
		for (int i = 0; i < CONNS; i++) {
			char x;

			if (c[i] < 0)
				continue;
			if (t_recv_upto(c[i], buf, 4, &have[i])) {
				served++;
			} else {
				ssize_t k = recv(c[i], &x, 1,
						 MSG_PEEK | MSG_DONTWAIT);

				if (!(k == 0 || (k < 0 && errno != EAGAIN)))
					continue;
				closed++; /* given up: closed or reset */
			}
			close(c[i]);
			c[i] = -1;
			done++;
		}
		t_loop_sleep(loop, 2);
	}
	cr_assert_eq(done, CONNS, "%d of %d clients neither served nor closed "
		     "in 30 s", CONNS - done, CONNS);
	/* after the burst, served as ever */
	t_loop_sleep(loop, 200);
	t_echo_check_port(loop, p.port, "after");
	proxy_stop(&p, out, sizeof(out));
	cr_log_info("served %d, given up %d: %s", served, closed, out);
	cr_assert_gt(served, 0);
	cr_assert_eq((uint64_t)closed, t_field(out, "fd_shed="),
		     "clients closed for another reason: %s", out);
	tsrv_finish(&up);
	t_loop_done(loop);
}

/* Sessions whose upstream never reads (its listener never accepts, so
 * the proxy's sends stall and its reads from the client pause), then each
 * client resets: the proxy notices at once, though nothing reads the
 * client's socket (its reset watch), and its fds go back to where they
 * were. --idle-timeout 0: nothing else would end these sessions. */
static void reset_while_backpressured(const char *splice)
{
	enum { SESSIONS = 8 };
	const char *const extra[] = { "--idle-timeout", "0", "--splice", splice,
				      NULL };
	rio_loop *loop = t_loop();
	uint16_t up_port;
	int up = t_listen(AF_INET, 128, &up_port), c[SESSIONS];
	char out[1024];
	uint64_t pushed;
	proxy p;

	proxy_start(&p, &up_port, 1, extra);
	t_loop_sleep(loop, 50);
	int base = fds_of(p.pid);
	for (int i = 0; i < SESSIONS; i++)
		c[i] = t_stall_client(loop, p.port, &pushed);
	cr_assert_geq(fds_of(p.pid), base + 2 * SESSIONS);
	for (int i = 0; i < SESSIONS; i++)
		t_rst_close(c[i]);
	uint64_t t0 = t_now_ns();
	int now = fds_of(p.pid);
	for (int i = 0; i < 100 && now > base; i++) {
		t_loop_sleep(loop, 20);
		now = fds_of(p.pid);
	}
	cr_assert_leq(now, base, "%d fds still held %llu ms after %d clients "
		      "reset (base %d)", now - base,
		      (unsigned long long)((t_now_ns() - t0) / T_MS), SESSIONS,
		      base);
	proxy_stop(&p, out, sizeof(out));
	cr_assert_eq(t_field(out, "sessions_done="), SESSIONS, "%s", out);
	close(up);
	t_loop_done(loop);
}

Test(proxy, reset_while_backpressured_is_noticed, .timeout = 120)
{
	reset_while_backpressured("off");
}

Test(proxy, reset_while_backpressured_is_noticed_spliced, .timeout = 120)
{
	reset_while_backpressured("on");
}

/* Many sessions connecting at once, upstreams [live, refusing]: each
 * session tries every upstream before it gives up, so none is given up on
 * while the live one is there (sessions that shared one round-robin
 * position could try the refusing one twice). */
Test(proxy, concurrent_sessions_try_every_upstream, .timeout = 120)
{
	enum { CONNS = 300 };
	char out[1024];
	tload_result res;
	rio_loop *loop;
	uint16_t ups[2];
	proxy p;
	tsrv up;

	if (!t_raise_nofile(3 * CONNS + 200))
		cr_skip_test("RLIMIT_NOFILE hard limit below %d", 3 * CONNS + 200);
	loop = t_loop();
	tsrv_start(&up, loop, NULL, 0);
	ups[0] = up.port;
	ups[1] = t_closed_port();
	proxy_start(&p, ups, 2, NULL);
	tload_opts o = { .port = p.port, .conns = CONNS, .rounds = 2,
			 .size = 512, .max_connecting = CONNS, .limit_ms = 60000,
			 .seed = 15, .nofile = CONNS + 100 };
	tload_all_at_once(loop, &up, &o, &res);
	T_RUN_UNTIL(loop, up.live == 0, 20000);
	proxy_stop(&p, out, sizeof(out));
	cr_assert_eq(t_field(out, "no_upstream="), 0, "%s", out);
	cr_assert_eq(t_field(out, "upstream_ok="), CONNS, "%s", out);
	tsrv_finish(&up);
	t_loop_done(loop);
}

/* Passive health: upstreams [blackholed, live] with --connect-timeout
 * 500. The first session waits out the timeout and fails over; later ones
 * skip the dead upstream until --fail-timeout passes, then it is tried
 * again. The blackhole is a listener whose accept queue is full: the
 * kernel drops SYNs to it. */
Test(proxy, failed_upstream_is_skipped_until_fail_timeout, .timeout = 60)
{
	static const char *const extra[] = { "--connect-timeout", "500",
					     "--fail-timeout", "1500", NULL };
	rio_loop *loop = t_loop();
	uint16_t ups[2];
	char out[1024];
	int filler, hole;
	uint64_t t0, first_ms, rest_ms;
	proxy p;
	tsrv up;

	tsrv_start(&up, loop, NULL, 0);
	hole = t_full_listener(&ups[0], &filler);
	ups[1] = up.port;
	proxy_start(&p, ups, 2, extra);
	t0 = t_now_ns();
	t_echo_check_port(loop, p.port, "first");
	first_ms = (t_now_ns() - t0) / T_MS;
	cr_assert_geq(first_ms, 450, "the first session did not meet the "
		      "blackhole (%llu ms)", (unsigned long long)first_ms);
	t0 = t_now_ns();
	for (int i = 0; i < 8; i++)
		t_echo_check_port(loop, p.port, "later");
	rest_ms = (t_now_ns() - t0) / T_MS;
	/* trying the dead one again would cost 500 ms a session (4 s) */
	cr_assert_lt(rest_ms, 2000, "8 later sessions took %llu ms: the dead "
		     "upstream was tried again", (unsigned long long)rest_ms);
	/* past --fail-timeout the dead one gets its try again */
	t_loop_sleep(loop, 1600);
	t_echo_check_port(loop, p.port, "after");
	t_echo_check_port(loop, p.port, "after");
	proxy_stop(&p, out, sizeof(out));
	cr_assert_eq(t_field(out, "upstream_timeouts="), 2, "%s", out);
	cr_assert_eq(t_field(out, "no_upstream="), 0);
	close(filler);
	close(hole);
	tsrv_finish(&up);
	t_loop_done(loop);
}

/* IPv6 both sides: a client on [::1] through a --listen [::1]:P to an
 * upstream on [::1]. */
Test(proxy, ipv6_both_sides, .timeout = 60)
{
	char lbuf[32], ubuf[32], out[1024];
	const char *const flags[] = { "--listen", lbuf, "--upstream", ubuf,
				      NULL };
	uint16_t port6 = t_closed_port();
	rio_loop *loop;
	proxy p;
	tsrv up;

	if (!t_ipv6_loopback())
		cr_skip_test("this machine has no IPv6 loopback (::1)");
	loop = t_loop();
	int lfd = rio_listen_tcp("::1", 0, 64, RIO_SOCK_V6ONLY);

	cr_assert_geq(lfd, 0, "rio_listen_tcp(::1): %s", rio_strerror(lfd));
	tsrv_start_fd(&up, loop, lfd, NULL, 0);
	snprintf(lbuf, sizeof(lbuf), "[::1]:%u", port6);
	snprintf(ubuf, sizeof(ubuf), "[::1]:%u", up.port);
	proxy_start(&p, NULL, 0, flags); /* its only upstream is ubuf */
	for (int i = 0; i < 4; i++) {
		int fd = t_connect(AF_INET6, port6);

		t_echo_check(loop, fd, "over IPv6");
		close(fd);
	}
	proxy_stop(&p, out, sizeof(out));
	cr_assert_eq(t_field(out, "upstream_ok="), 4);
	tsrv_finish(&up);
	t_loop_done(loop);
}

/* --idle-timeout 300: a session that keeps talking every 100 ms lives
 * past it; one that goes quiet is closed (its client sees EOF) between
 * 300 ms and a generous bound, copying or spliced. */
static void idle_timeout(const char *splice)
{
	const char *const flags[] = { "--idle-timeout", "300", "--splice",
				      splice, NULL };
	rio_loop *loop = t_loop();
	char out[1024], buf[8];
	proxy p;
	tsrv up;

	tsrv_start(&up, loop, NULL, 0);
	proxy_start(&p, &up.port, 1, flags);
	int busy = t_connect(AF_INET, p.port);
	int quiet = t_connect(AF_INET, p.port);

	t_echo_check(loop, quiet, "once");
	uint64_t t0 = t_now_ns();
	for (int i = 0; i < 8; i++) { /* 800 ms of talking */
		t_echo_check(loop, busy, "talk");
		if (i == 1 && t_now_ns() - t0 < 250000000ull) /* not yet */
			cr_assert_eq(recv(quiet, buf, sizeof(buf), MSG_DONTWAIT),
				     -1, "closed before its idle timeout");
		t_loop_sleep(loop, 100);
	}
	t_echo_check(loop, busy, "still open");
	/* the quiet one has been closed by now */
	T_RUN_UNTIL(loop, recv(quiet, buf, sizeof(buf), MSG_DONTWAIT) == 0,
		    3000);
	close(busy);
	close(quiet);
	proxy_stop(&p, out, sizeof(out));
	cr_assert_eq(t_field(out, "idle_closed="), 1);
	tsrv_finish(&up);
	t_loop_done(loop);
}

Test(proxy, idle_sessions_are_closed, .timeout = 60)
{
	idle_timeout("off");
}

Test(proxy, idle_sessions_are_closed_spliced, .timeout = 60)
{
	idle_timeout("on");
}

/* `stalled` clients that send and never read, then one that reads: it
 * is served, and the proxy's memory grew by less than `max_kib` (its
 * pool, or its pipes, are the bound, not the bytes pushed). */
static void stalled_readers(const char *const *flags, int stalled,
			    long max_kib)
{
	rio_loop *loop = t_loop();
	uint64_t pushed = 0, n;
	char out[1024];
	long rss0, rss1;
	int fds[8];
	proxy p;
	tsrv up;

	cr_assert_leq(stalled, 8);
	tsrv_start(&up, loop, NULL, 0);
	proxy_start(&p, &up.port, 1, flags);
	t_echo_check_port(loop, p.port, "warm");
	rss0 = t_rss_kib(p.pid);
	for (int i = 0; i < stalled; i++) {
		fds[i] = t_stall_client(loop, p.port, &n);
		pushed += n;
	}
	rss1 = t_rss_kib(p.pid);
	cr_log_info("%d client(s) pushed %llu KiB into the proxy and never "
		    "read; proxy RSS %ld -> %ld KiB", stalled,
		    (unsigned long long)(pushed >> 10), rss0, rss1);
	cr_assert_lt(rss1 - rss0, max_kib, "proxy memory grew by %ld KiB",
		     rss1 - rss0);
	t_echo_check_port(loop, p.port, "still served");
	for (int i = 0; i < stalled; i++)
		close(fds[i]);
	proxy_stop(&p, out, sizeof(out));
	tsrv_finish(&up);
	t_loop_done(loop);
}

/* Spliced (the bulk flow switches to its pipes): the pipes are the bound. */
Test(proxy, stalled_reader_keeps_memory_bounded, .timeout = 60)
{
	stalled_readers(NULL, 1, 2048);
}

/* Copying through a 16 x 16 KiB pool: the pool is the bound. */
Test(proxy, stalled_reader_keeps_memory_bounded_copying, .timeout = 60)
{
	const char *const flags[] = { "--splice", "off", "--buf-count", "16",
				      NULL };

	stalled_readers(flags, 1, 2048);
}

/* Two stalled sessions share a 128 x 64 KiB pool with
 * everyone else: each direction holds a few buffers at most (its relay
 * stops receiving, and the stop lands within a few more: test_recv_cap),
 * so a third client is still served. Were
 * they to keep receiving, the megabytes they push would take the whole
 * pool and the last echo would never come back. */
Test(proxy, stalled_readers_leave_the_pool_to_others, .timeout = 90)
{
	const char *const flags[] = { "--splice", "off", "--buf-count", "128",
				      "--buf-size", "65536", NULL };

	stalled_readers(flags, 2, 2048);
}

Test(proxy, thousand_concurrent_connections, .timeout = 180)
{
	enum { CONNS = 1000, ROUNDS = 3, SIZE = 1024 };
	char out[1024];
	tload_result res;
	rio_loop *loop;
	proxy p;
	tsrv up;

	if (!t_raise_nofile(3 * CONNS + 200)) /* the proxy inherits it */
		cr_skip_test("RLIMIT_NOFILE hard limit below %d", 3 * CONNS + 200);
	loop = t_loop();
	tsrv_start(&up, loop, NULL, 0);
	proxy_start(&p, &up.port, 1, NULL);
	tload_opts o = { .port = p.port, .conns = CONNS, .rounds = ROUNDS,
			 .size = SIZE, .max_connecting = 256, .limit_ms = 120000,
			 .seed = 9, .nofile = CONNS + 100 };
	tload_all_at_once(loop, &up, &o, &res);
	T_RUN_UNTIL(loop, up.live == 0, 20000);
	proxy_stop(&p, out, sizeof(out));
	cr_assert_eq(t_field(out, "upstream_ok="), CONNS);
	tsrv_finish(&up);
	t_loop_done(loop);
}

/* A real client and server: redis-benchmark through the proxy to
 * redis-server, when both are installed (.ci/run installs them). */
/* redis-benchmark through the proxy to redis-server: over TCP, or with a
 * unix socket on one side: TCP in front of a unix-socket redis
 * (--unixsocket), or redis-benchmark -s to the proxy's unix socket. */
enum redis_way { REDIS_TCP, REDIS_TO_UNIX, REDIS_FROM_UNIX };

/* Connect to a unix path as a client, or -1. */
static int unix_try(const char *path)
{
	char text[160];
	rio_addr a;

	snprintf(text, sizeof text, "unix:%s", path);
	cr_assert_eq(rio_addr_parse(text, &a), 0, "%s", text);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (connect(fd, (struct sockaddr *)&a.ss, a.len) == 0)
		return fd;
	close(fd);
	return -1;
}

static void redis_through_the_proxy(enum redis_way way)
{
	const char *srv = "/usr/bin/redis-server", *bench = "/usr/bin/redis-benchmark";
	char port[8], pport[8], out[1024], cmd[512], dir[64] = "";
	char rsock[128], psock[128], up[160], lis[160], to[160];
	uint16_t rport = t_closed_port();
	proxy p;
	pid_t rs;
	FILE *f;
	int fd = -1, ok = 0;

	if (access(srv, X_OK) || access(bench, X_OK))
		cr_skip_test("redis-server / redis-benchmark not installed");
	snprintf(dir, sizeof dir, "/tmp/ringio-test-XXXXXX");
	cr_assert_not_null(mkdtemp(dir));
	snprintf(rsock, sizeof rsock, "%s/redis.sock", dir);
	snprintf(psock, sizeof psock, "%s/proxy.sock", dir);
	snprintf(port, sizeof(port), "%u", way == REDIS_TO_UNIX ? 0u : rport);
	rs = fork();
	cr_assert(rs >= 0);
	if (rs == 0) {
		t_die_with_parent();
		int nul = open("/dev/null", O_WRONLY);

		dup2(nul, 1);
		if (way == REDIS_TO_UNIX) /* --port 0: no TCP at all */
			execl(srv, "redis-server", "--port", port, "--unixsocket",
			      rsock, "--save", "", "--appendonly", "no",
			      (char *)NULL);
		else
			execl(srv, "redis-server", "--port", port, "--bind",
			      "127.0.0.1", "--save", "", "--appendonly", "no",
			      (char *)NULL);
		_exit(127);
	}
	for (int i = 0; i < 500 && fd < 0; i++) {
		fd = way == REDIS_TO_UNIX ? unix_try(rsock)
					  : t_try_connect(AF_INET, rport);
		if (fd < 0)
			usleep(10000);
	}
	cr_assert_geq(fd, 0, "redis-server did not start");
	close(fd);
	if (way == REDIS_TO_UNIX)
		snprintf(up, sizeof up, "unix:%s", rsock);
	else
		snprintf(up, sizeof up, "127.0.0.1:%u", rport);
	snprintf(lis, sizeof lis, "unix:%s", psock);
	const char *const flags[] = { "--upstream", up,
				      way == REDIS_FROM_UNIX ? "--listen" : NULL,
				      lis, NULL };
	proxy_start(&p, NULL, 0, flags);
	snprintf(pport, sizeof(pport), "%u", p.port);
	if (way == REDIS_FROM_UNIX)
		snprintf(to, sizeof to, "-s %s", psock);
	else
		snprintf(to, sizeof to, "-h 127.0.0.1 -p %s", pport);
	snprintf(cmd, sizeof(cmd), "timeout 60 %s %s -n 20000 -c 50 "
		 "-t set,get -q 2>&1", bench, to);
	f = popen(cmd, "r");
	cr_assert_not_null(f);
	while (fgets(out, sizeof(out), f)) {
		cr_log_info("redis-benchmark: %s", out);
		if (strstr(out, "requests per second"))
			ok++;
	}
	cr_assert_eq(pclose(f), 0, "redis-benchmark failed");
	cr_assert_eq(ok, 2, "expected SET and GET results");
	kill(rs, SIGTERM);
	waitpid(rs, NULL, 0);
	proxy_stop(&p, out, sizeof(out));
	cr_assert_eq(t_field(out, "no_upstream="), 0);
	unlink(rsock);
	cr_assert_eq(rmdir(dir), 0, "rmdir: %s", strerror(errno));
}

Test(proxy, redis_benchmark_through_the_proxy, .timeout = 120)
{
	redis_through_the_proxy(REDIS_TCP);
}

Test(proxy, redis_benchmark_to_a_unix_socket_redis, .timeout = 120)
{
	redis_through_the_proxy(REDIS_TO_UNIX);
}

Test(proxy, redis_benchmark_from_a_unix_socket_client, .timeout = 120)
{
	redis_through_the_proxy(REDIS_FROM_UNIX);
}

/* ---- unix-domain sockets on either side ---- */

/* Run ringio-proxy with three flags and their values (a NULL flag ends
 * them) that must make it exit by itself; its exit status. */
static int proxy_exit(const char *f1, const char *v1, const char *f2,
		      const char *v2, const char *f3, const char *v3)
{
	char *argv[] = { (char *)RIO_PROXY_BIN, (char *)f1, (char *)v1,
			 (char *)f2, (char *)v2, (char *)f3, (char *)v3, NULL };
	int so, st = -1;

	if (!RIO_PROXY_BIN)
		cr_skip_test("ringio-proxy not built (RINGIO_BUILD_TOOLS=OFF)");
	pid_t pid = t_tool_spawn(argv, NULL, &so);

	for (int i = 0; i < 1000 && waitpid(pid, &st, WNOHANG) == 0; i++)
		usleep(10000);
	close(so);
	cr_assert(WIFEXITED(st), "ringio-proxy did not exit by itself");
	return WEXITSTATUS(st);
}

/* A unix address "unix:DIR/NAME" in `text`, parsed into *a. */
static void unix_addr(rio_addr *a, char *text, size_t cap, const char *dir,
		      const char *name)
{
	snprintf(text, cap, "unix:%s/%s", dir, name);
	cr_assert_eq(rio_addr_parse(text, a), 0, "%s", text);
}

static int unix_client(const rio_addr *a)
{
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

	cr_assert_eq(connect(fd, (const struct sockaddr *)&a->ss, a->len), 0,
		     "connect: %s", strerror(errno));
	return fd;
}

/* TCP to a unix upstream, unix to unix, then unix to a TCP upstream; a
 * stale socket file where the proxy listens is taken over, and the proxy
 * removes its file at exit. */
Test(proxy, unix_sockets_on_either_side, .timeout = 60)
{
	char dir[64], utext[160], ltext[160], tcpup[32], out[1024];
	rio_addr ua, la;
	struct stat st;
	rio_loop *loop = t_loop();
	tsrv up;
	proxy p;

	snprintf(dir, sizeof dir, "/tmp/ringio-test-XXXXXX");
	cr_assert_not_null(mkdtemp(dir));
	unix_addr(&ua, utext, sizeof utext, dir, "up.sock");
	unix_addr(&la, ltext, sizeof ltext, dir, "proxy.sock");
	/* a stale file where the proxy will listen */
	int stale = rio_listen_addr(&la, 1, 0);
	cr_assert_geq(stale, 0, "%s", rio_strerror(stale));
	close(stale);
	int lfd = rio_listen_addr(&ua, 64, 0);
	cr_assert_geq(lfd, 0, "%s", rio_strerror(lfd));
	tsrv_start_fd(&up, loop, lfd, NULL, 0);
	const char *const flags[] = { "--listen", ltext, "--upstream", utext,
				      NULL };
	proxy_start(&p, NULL, 0, flags); /* its only upstream is utext */
	for (int i = 0; i < 4; i++) {
		int fd = i < 2 ? t_connect(AF_INET, p.port) : unix_client(&la);

		t_echo_check(loop, fd, i < 2 ? "tcp to unix" : "unix to unix");
		close(fd);
	}
	proxy_stop(&p, out, sizeof(out));
	cr_assert_eq(t_field(out, "upstream_ok="), 4);
	cr_assert_neq(stat(ltext + 5, &st), 0,
		      "the proxy left its socket file");
	tsrv_finish(&up);
	cr_assert_eq(unlink(utext + 5), 0);

	/* unix to a TCP upstream */
	tsrv_start(&up, loop, NULL, 0);
	snprintf(tcpup, sizeof tcpup, "127.0.0.1:%u", up.port);
	const char *const flags2[] = { "--listen", ltext, "--upstream", tcpup,
				       NULL };
	proxy_start(&p, NULL, 0, flags2);
	int fd = unix_client(&la);
	t_echo_check(loop, fd, "unix to tcp");
	close(fd);
	proxy_stop(&p, out, sizeof(out));
	cr_assert_eq(t_field(out, "upstream_ok="), 1);
	tsrv_finish(&up);
	cr_assert_eq(rmdir(dir), 0, "rmdir: %s", strerror(errno));

	/* one listener on a unix path: more threads are refused, exit 2 */
	cr_assert_eq(proxy_exit("--listen", ltext, "--upstream", tcpup,
				"--threads", "2"), 2);
	t_loop_done(loop);
}

/* --upstream NAME:PORT: the name is resolved at start (localhost, from
 * /etc/hosts: no traffic leaves the machine), and every address it gives
 * is an upstream. What is not an address is refused with exit 2. */
Test(proxy, upstream_by_name, .timeout = 60)
{
	char ubuf[32], out[1024];
	const char *const flags[] = { "--upstream", ubuf, NULL };
	rio_loop *loop = t_loop();
	tsrv up;
	proxy p;

	tsrv_start(&up, loop, NULL, 0);
	snprintf(ubuf, sizeof ubuf, "localhost:%u", up.port);
	proxy_start(&p, NULL, 0, flags);
	for (int i = 0; i < 4; i++) {
		int fd = t_connect(AF_INET, p.port);

		t_echo_check(loop, fd, "to localhost");
		close(fd);
	}
	proxy_stop(&p, out, sizeof(out));
	cr_assert_eq(t_field(out, "upstream_ok="), 4);
	tsrv_finish(&up);
	static const char *const bad[] = {
		"localhost", "localhost:", "localhost:99999", ":80",
		"local:host:80", "unix:", "[::1]80",
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
		cr_assert_eq(proxy_exit("--listen", "127.0.0.1:0", "--upstream",
					bad[i], NULL, NULL), 2,
			     "--upstream '%s' was taken", bad[i]);
	t_loop_done(loop);
}

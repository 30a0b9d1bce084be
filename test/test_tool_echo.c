/* ringio-echo as a process.
 *
 * With --threads 2, every thread sets up its own loop and serves. SO_REUSEPORT spreads 64 connections over both listeners (all on
 * one would be a 1 in 2^63 chance), so a thread that cannot run its loop
 * leaves connections that are never echoed. (ringio-proxy's twin is in
 * test_proxy.c.) */
#include "common.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <unistd.h>

enum { CLIENTS = 64 };

Test(tool_echo, every_thread_serves, .timeout = 60)
{
#ifndef RIO_ECHO_BIN
	cr_skip_test("ringio-echo not built (RINGIO_BUILD_TOOLS=OFF)");
#else
	uint16_t port = t_closed_port();
	char ports[8], out[4096];
	char *argv[] = { RIO_ECHO_BIN, "--port", ports, "--threads", "2", NULL };
	char buf[16];
	int so;

	snprintf(ports, sizeof(ports), "%u", port);
	pid_t echo = t_tool_spawn(argv, NULL, &so);
	t_wait_listening(port);
	for (int i = 0; i < CLIENTS; i++) {
		int fd = t_connect(AF_INET, port);

		t_timeouts(fd, 5);
		cr_assert_eq(send(fd, "ping", 4, 0), 4);
		cr_assert_eq(recv(fd, buf, 4, MSG_WAITALL), 4,
			     "client %d was not echoed: %s", i, strerror(errno));
		cr_assert_eq(memcmp(buf, "ping", 4), 0);
		close(fd);
	}
	t_tool_stop(echo, so, out, sizeof(out));
	/* the t_wait_listening probe is one more */
	cr_assert_eq(t_field(out, " accepted="), CLIENTS + 1);
#endif
}

/* ringio-echo with `flags` (NULL-terminated, at most 8) on a port of
 * its own. */
static pid_t echo_spawn(const char *const *flags, uint16_t *port, int *so)
{
	static char ports[8];
	char *argv[16] = { RIO_ECHO_BIN, "--port", ports };
	int n = 3;

	*port = t_closed_port();
	snprintf(ports, sizeof(ports), "%u", *port);
	for (; flags && *flags; flags++) {
		cr_assert_lt(n, 14);
		argv[n++] = (char *)*flags;
	}
	argv[n] = NULL;
	pid_t pid = t_tool_spawn(argv, NULL, so);
	t_wait_listening(*port);
	return pid;
}

/* 64 MiB echoed while it is sent, then SHUT_WR: every byte comes back
 * unchanged, then the EOF. Returns the echo's `spliced=` count. */
static uint64_t sixty_four_mib(const char *splice)
{
	const char *const flags[] = { "--splice", splice, NULL };
	rio_loop *loop = t_loop(); /* runs nothing: the server is a process */
	t_stream s = { .total = 64ull << 20 };
	char out[4096];
	uint16_t port;
	int so;
	pid_t echo = echo_spawn(flags, &port, &so);

	s.fd = t_connect(AF_INET, port);
	t_timeouts(s.fd, 60);
	t_stream_run(loop, &s, 150000);
	close(s.fd);
	t_tool_stop(echo, so, out, sizeof(out));
	t_loop_done(loop);
	return t_field(out, " spliced=");
}

/* By default (--splice auto) a bulk stream fills whole buffers, so its
 * connection moves on to a pipe: the bytes are still echoed unchanged,
 * and the end of the stream still comes through. */
Test(tool_echo, bulk_is_spliced_and_unchanged, .timeout = 180)
{
#ifndef RIO_ECHO_BIN
	cr_skip_test("ringio-echo not built (RINGIO_BUILD_TOOLS=OFF)");
#else
	cr_assert_eq(sixty_four_mib("auto"), 1, "the bulk stream was not spliced");
#endif
}

Test(tool_echo, bulk_copying_is_unchanged, .timeout = 180)
{
#ifndef RIO_ECHO_BIN
	cr_skip_test("ringio-echo not built (RINGIO_BUILD_TOOLS=OFF)");
#else
	cr_assert_eq(sixty_four_mib("off"), 0);
#endif
}

/* Small messages never fill a 64 KiB buffer: with --splice auto they keep
 * copying (which is faster for them); with --splice on they splice from
 * the first byte, and are echoed just the same. */
static void ping_pong(const char *splice, int spliced)
{
	enum { CONNS = 4, ROUNDS = 100 };
	const char *const flags[] = { "--splice", splice, NULL };
	char out[4096], msg[100], buf[100];
	int fds[CONNS], so;
	uint16_t port;
	pid_t echo = echo_spawn(flags, &port, &so);

	for (int i = 0; i < CONNS; i++) {
		fds[i] = t_connect(AF_INET, port);
		t_timeouts(fds[i], 5);
	}
	for (int r = 0; r < ROUNDS; r++)
		for (int i = 0; i < CONNS; i++) {
			t_pat_fill(msg, sizeof(msg), (uint64_t)(r * CONNS + i));
			cr_assert_eq(send(fds[i], msg, sizeof(msg), 0),
				     (ssize_t)sizeof(msg));
			cr_assert_eq(recv(fds[i], buf, sizeof(buf), MSG_WAITALL),
				     (ssize_t)sizeof(buf), "round %d: %s", r,
				     strerror(errno));
			cr_assert_eq(memcmp(buf, msg, sizeof(msg)), 0);
		}
	for (int i = 0; i < CONNS; i++)
		close(fds[i]);
	t_tool_stop(echo, so, out, sizeof(out));
	/* the t_wait_listening probe is one more connection */
	cr_assert_eq(t_field(out, " spliced="), spliced ? CONNS + 1 : 0);
}

Test(tool_echo, small_messages_keep_copying, .timeout = 60)
{
#ifndef RIO_ECHO_BIN
	cr_skip_test("ringio-echo not built (RINGIO_BUILD_TOOLS=OFF)");
#else
	ping_pong("auto", 0);
#endif
}

Test(tool_echo, small_messages_spliced, .timeout = 60)
{
#ifndef RIO_ECHO_BIN
	cr_skip_test("ringio-echo not built (RINGIO_BUILD_TOOLS=OFF)");
#else
	ping_pong("on", 1);
#endif
}

/* `stalled` clients that send and never read, then one that reads: it is
 * echoed, and the server's memory grew by less than `max_kib`. */
static void stalled_readers(const char *const *flags, int stalled,
			    long max_kib)
{
	uint64_t pushed = 0, n;
	char out[4096], buf[4];
	int so, fds[8];
	uint16_t port;

	cr_assert_leq(stalled, 8);
	pid_t echo = echo_spawn(flags, &port, &so);
	long rss0 = t_rss_kib(echo);

	for (int i = 0; i < stalled; i++) {
		fds[i] = t_stall_client(NULL, port, &n);
		pushed += n;
	}
	long rss1 = t_rss_kib(echo);

	cr_log_info("%d client(s) pushed %llu KiB and never read; echo RSS "
		    "%ld -> %ld KiB", stalled,
		    (unsigned long long)(pushed >> 10), rss0, rss1);
	cr_assert_lt(rss1 - rss0, max_kib, "echo memory grew by %ld KiB",
		     rss1 - rss0);
	int fd = t_connect(AF_INET, port);

	t_timeouts(fd, 5);
	cr_assert_eq(send(fd, "ping", 4, 0), 4);
	cr_assert_eq(recv(fd, buf, 4, MSG_WAITALL), 4,
		     "a client after the stalled ones was not echoed: %s",
		     strerror(errno));
	cr_assert_eq(memcmp(buf, "ping", 4), 0);
	close(fd);
	for (int i = 0; i < stalled; i++)
		close(fds[i]);
	t_tool_stop(echo, so, out, sizeof(out));
}

/* Clients that send and never read share the buffer pool (128 x 64 KiB
 * here, copying) with everyone else: each holds a few buffers at most
 * (its receive stops while its echoes wait, and the stop lands within a
 * few more: test_recv_cap), so the next client is still echoed. Were they to keep receiving, the megabytes they
 * push would take the whole pool and that echo would never come. */
Test(tool_echo, stalled_readers_leave_the_pool_to_others, .timeout = 90)
{
#ifndef RIO_ECHO_BIN
	cr_skip_test("ringio-echo not built (RINGIO_BUILD_TOOLS=OFF)");
#else
	const char *const flags[] = { "--splice", "off", "--buf-count", "128",
				      NULL };

	stalled_readers(flags, 2, 8192);
#endif
}

/* Spliced (the default: what a stalled client pushes is bulk), each holds
 * its pipe, and no pool buffer at all. */
Test(tool_echo, stalled_readers_spliced, .timeout = 90)
{
#ifndef RIO_ECHO_BIN
	cr_skip_test("ringio-echo not built (RINGIO_BUILD_TOOLS=OFF)");
#else
	stalled_readers(NULL, 4, 2048);
#endif
}

/* ---- start-up errors: the cause and what to do, exit 2 ---- */

#ifdef RIO_ECHO_BIN
#include <poll.h>
#include <sys/wait.h>

/* Run ringio-echo with `args` (and `env`, "NAME=VALUE" or NULL) on a port
 * nothing uses; it must exit by itself within 10 s. Returns its exit
 * status; its stderr goes to `err`. */
static int echo_exit(const char *const *args, const char *env, char *err,
		     size_t cap)
{
	char ports[8], *argv[24];
	int n = 0, pe[2];
	size_t have = 0;

	snprintf(ports, sizeof ports, "%u", t_closed_port());
	argv[n++] = RIO_ECHO_BIN;
	argv[n++] = "--port";
	argv[n++] = ports;
	while (*args && n < 22)
		argv[n++] = (char *)*args++;
	argv[n] = NULL;
	cr_assert_eq(pipe(pe), 0);
	pid_t pid = fork();
	cr_assert(pid >= 0);
	if (pid == 0) {
		t_die_with_parent();
		dup2(pe[1], 2);
		unsetenv("RINGIO_BACKEND"); /* it would win over --backend */
		if (env)
			putenv((char *)env);
		execv(RIO_ECHO_BIN, argv);
		_exit(127);
	}
	close(pe[1]);
	uint64_t end = t_now_ns() + 10000 * T_MS;
	for (;;) {
		struct pollfd pf = { .fd = pe[0], .events = POLLIN };
		int left = (int)((end - t_now_ns()) / T_MS);

		cr_assert_gt(left, 0, "ringio-echo did not exit: %.*s",
			     (int)have, err);
		if (poll(&pf, 1, left) <= 0)
			continue;
		ssize_t k = read(pe[0], err + have, cap - 1 - have);
		if (k <= 0)
			break;
		have += (size_t)k;
	}
	err[have] = 0;
	close(pe[0]);
	int st;
	cr_assert_eq(waitpid(pid, &st, 0), pid);
	cr_assert(WIFEXITED(st), "ringio-echo died of signal %d", WTERMSIG(st));
	return WEXITSTATUS(st);
}
#endif

Test(tool_echo, bad_ringio_backend_is_named, .timeout = 30)
{
#ifndef RIO_ECHO_BIN
	cr_skip_test("ringio-echo not built (RINGIO_BUILD_TOOLS=OFF)");
#else
	static const char *const none[] = { NULL };
	char err[1024];

	cr_assert_eq(echo_exit(none, "RINGIO_BACKEND=garbage", err, sizeof err),
		     2, "%s", err);
	cr_assert_not_null(strstr(err, "RINGIO_BACKEND='garbage'"), "%s", err);
	cr_assert_null(strstr(err, "listening"), "%s", err);
#endif
}

Test(tool_echo, backend_not_built_is_named, .timeout = 30)
{
#if !defined(RIO_ECHO_BIN)
	cr_skip_test("ringio-echo not built (RINGIO_BUILD_TOOLS=OFF)");
#elif defined(RIO_TEST_HAVE_KQUEUE)
	cr_skip_test("this build has kqueue: no backend is missing from it");
#else
	static const char *const args[] = { "--backend", "kqueue", NULL };
	char err[1024];

	cr_assert_eq(echo_exit(args, NULL, err, sizeof err), 2, "%s", err);
	cr_assert_not_null(strstr(err, "no kqueue backend"), "%s", err);
#endif
}

/* io_uring refused, as seccomp or a container would refuse it (the fault
 * plan makes io_uring_setup fail with EPERM): the reason is named, and
 * what to do. */
Test(tool_echo, refused_io_uring_says_why, .timeout = 30)
{
#if !defined(RIO_ECHO_BIN) || !defined(RINGIO_FAULT_HOOKS)
	cr_skip_test("needs ringio-echo and RINGIO_FAULT_HOOKS (a fault plan "
		     "refuses io_uring)");
#else
	static const char *const args[] = { "--backend", "uring", NULL };
	char err[1024];

	cr_assert_eq(echo_exit(args, "RINGIO_FAULTS=seed=1,uring_setup=EPERM",
			       err, sizeof err), 2, "%s", err);
	cr_assert_not_null(strstr(err, "io_uring cannot be used here"), "%s", err);
	cr_assert_not_null(strstr(err, "seccomp or container policy"), "%s", err);
	cr_assert_not_null(strstr(err, "--backend auto"), "%s", err);
#endif
}

/* Buffers for every thread beyond the memory there is: refused before
 * anything is allocated, not OOM-killed after "listening". */
Test(tool_echo, pool_beyond_memory_is_refused, .timeout = 30)
{
#ifndef RIO_ECHO_BIN
	cr_skip_test("ringio-echo not built (RINGIO_BUILD_TOOLS=OFF)");
#else
	/* 256 x 32768 x 16 MiB = 128 TiB */
	static const char *const args[] = { "--threads", "256", "--buf-count",
					    "32768", "--buf-size", "16777216",
					    NULL };
	char err[1024];

	cr_assert_eq(echo_exit(args, NULL, err, sizeof err), 2, "%s", err);
	cr_assert_not_null(strstr(err, "MiB of buffers"), "%s", err);
	cr_assert_null(strstr(err, "listening"), "%s", err);
#endif
}

/* --unix PATH: thread 0 echoes on a unix-domain socket as well (a stale
 * socket file there taken over); the file is gone after exit. */
Test(tool_echo, echoes_on_a_unix_socket_too, .timeout = 60)
{
#ifndef RIO_ECHO_BIN
	cr_skip_test("ringio-echo not built (RINGIO_BUILD_TOOLS=OFF)");
#else
	char dir[64], path[128], text[160], out[4096], buf[8];
	rio_addr a;
	uint16_t port;
	int so;

	snprintf(dir, sizeof dir, "/tmp/ringio-test-XXXXXX");
	cr_assert_not_null(mkdtemp(dir));
	snprintf(path, sizeof path, "%s/echo.sock", dir);
	snprintf(text, sizeof text, "unix:%s", path);
	cr_assert_eq(rio_addr_parse(text, &a), 0);
	int stale = rio_listen_addr(&a, 1, 0);
	cr_assert_geq(stale, 0);
	close(stale);
	const char *const flags[] = { "--unix", path, "--threads", "2", NULL };
	pid_t echo = echo_spawn(flags, &port, &so);
	for (int i = 0; i < 4; i++) {
		int fd = -1;

		for (int k = 0; k < 500 && fd < 0; k++) { /* thread 0 may lag */
			fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
			if (connect(fd, (struct sockaddr *)&a.ss, a.len) < 0) {
				close(fd);
				fd = -1;
				usleep(10000);
			}
		}
		cr_assert_geq(fd, 0, "nothing listens on %s", path);
		t_timeouts(fd, 5);
		cr_assert_eq(send(fd, "unix", 4, 0), 4);
		cr_assert_eq(recv(fd, buf, 4, MSG_WAITALL), 4,
			     "not echoed: %s", strerror(errno));
		cr_assert_eq(memcmp(buf, "unix", 4), 0);
		close(fd);
	}
	t_tool_stop(echo, so, out, sizeof(out));
	/* four unix clients and the t_wait_listening probe */
	cr_assert_eq(t_field(out, " accepted="), 5);
	cr_assert_neq(access(path, F_OK), 0, "the socket file is still there");
	cr_assert_eq(rmdir(dir), 0);
	char err[1024];
	static const char *const empty[] = { "--unix", "", NULL };
	cr_assert_eq(echo_exit(empty, NULL, err, sizeof err), 2, "%s", err);
	cr_assert_not_null(strstr(err, "--unix"), "%s", err);
#endif
}

/* --udp: datagrams on the same port are echoed to their senders, whole
 * (an empty one and a 65507-byte one too), by every thread: 32 senders
 * spread by SO_REUSEPORT. */
Test(tool_echo, echoes_datagrams_on_the_same_port, .timeout = 60)
{
#ifndef RIO_ECHO_BIN
	cr_skip_test("ringio-echo not built (RINGIO_BUILD_TOOLS=OFF)");
#else
	enum { SENDERS = 32, EACH = 20 };
	static uint8_t out_buf[65507], in_buf[65536];
	char out[4096];
	uint16_t port;
	int so;
	const char *const flags[] = { "--udp", "--threads", "2", NULL };
	pid_t echo = echo_spawn(flags, &port, &so);
	struct sockaddr_storage to;
	socklen_t tl = t_loopback(AF_INET, port, &to);
	uint64_t sent = 0;
	for (int s = 0; s < SENDERS; s++) {
		int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
		cr_assert_geq(fd, 0);
		t_timeouts(fd, 5);
		for (int i = 0; i < EACH; i++, sent++) {
			size_t len = i == 0 ? 0 : i == 1 ? sizeof out_buf
					  : (size_t)(s * 131 + i * 71) % 1473;
			t_pat_fill(out_buf, len, sent << 20);
			cr_assert_eq(sendto(fd, out_buf, len, 0,
					    (struct sockaddr *)&to, tl),
				     (ssize_t)len, "%s", strerror(errno));
			ssize_t k = recv(fd, in_buf, sizeof in_buf, 0);
			cr_assert_eq(k, (ssize_t)len,
				     "sender %d, datagram %d of %zu bytes: %zd "
				     "(%s)", s, i, len, k, strerror(errno));
			cr_assert_eq(t_pat_check(in_buf, len, sent << 20), len);
		}
		close(fd);
	}
	/* TCP still echoes on the same port */
	int c = t_connect(AF_INET, port);
	t_timeouts(c, 5);
	cr_assert_eq(send(c, "tcp", 3, 0), 3);
	cr_assert_eq(recv(c, in_buf, 3, MSG_WAITALL), 3, "%s", strerror(errno));
	close(c);
	t_tool_stop(echo, so, out, sizeof(out));
	cr_assert_eq(t_field(out, " datagrams="), sent, "%s", out);
	cr_assert_eq(t_field(out, " truncated="), 0);
	cr_assert_eq(t_field(out, " udp_errors="), 0);
#endif
}

/* The bytes the socket from local port `lport` to `rport` on 127.0.0.1
 * has received and its owner not read (/proc/net/tcp's rx_queue), or -1
 * when there is no such socket. */
static long rx_queue(uint16_t lport, uint16_t rport)
{
	FILE *f = fopen("/proc/net/tcp", "re");
	char line[512];
	long q = -1;
	cr_assert_not_null(f);
	while (q < 0 && fgets(line, sizeof line, f)) {
		unsigned la, lp, ra, rp, st;
		unsigned long tx, rx;
		if (sscanf(line, " %*d: %x:%x %x:%x %x %lx:%lx", &la, &lp, &ra,
			   &rp, &st, &tx, &rx) == 7 &&
		    lp == lport && rp == rport)
			q = (long)rx;
	}
	fclose(f);
	return q;
}

/* SIGTERM drains: the listeners stop, and a connection whose client reads
 * nothing keeps its relay (and the process) waiting for --drain-timeout;
 * a second SIGTERM ends every op at once and the process exits 0 with its
 * counters. */
Test(tool_echo, a_second_signal_ends_a_drain, .timeout = 90)
{
#ifndef RIO_ECHO_BIN
	cr_skip_test("ringio-echo not built (RINGIO_BUILD_TOOLS=OFF)");
#else
	const char *const flags[] = { "--threads", "2", "--udp",
				      "--drain-timeout", "60000", NULL };
	char out[4096];
	uint16_t port;
	int so;
	pid_t echo = echo_spawn(flags, &port, &so);
	/* a client that sends and never reads: the echo fills its window */
	int fd = t_connect(AF_INET, port);
	int small = 4096;
	cr_assert_eq(setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small,
				sizeof small), 0);
	cr_assert_eq(fcntl(fd, F_SETFL, O_NONBLOCK), 0);
	/* Until the echo's relay has stopped reading: its side of the
	 * connection holds unread bytes that do not go down for 500 ms. It
	 * stops only with 4 received buffers (or a full pipe) it cannot send
	 * on, the client reading nothing: what the drain must wait for.
	 * (Only until the client's sends stall, the relay may not have got
	 * that far on a loaded machine, and a drain rightly ends at once:
	 * seen in CI.) */
	struct sockaddr_in me;
	socklen_t mlen = sizeof me;
	cr_assert_eq(getsockname(fd, (struct sockaddr *)&me, &mlen), 0);
	static char junk[65536];
	size_t sent = 0;
	long last = -1;
	int still = 0;
	uint64_t end = t_now_ns() + 30000 * T_MS;
	while (still < 5) {
		cr_assert_lt(t_now_ns(), end, "the echo never stopped reading "
			     "(%zu bytes sent, %ld unread)", sent, last);
		ssize_t k = send(fd, junk, sizeof junk, 0);
		if (k > 0) {
			sent += (size_t)k;
			continue;
		}
		cr_assert_eq(errno, EAGAIN, "send: %s", strerror(errno));
		usleep(100000);
		long q = rx_queue(port, ntohs(me.sin_port));
		still = q > 0 && q == last ? still + 1 : 0;
		last = q;
	}
	cr_assert_eq(kill(echo, SIGTERM), 0);
	usleep(500000);
	int st;
	cr_assert_eq(waitpid(echo, &st, WNOHANG), 0,
		     "it exited while a relay had bytes to echo");
	uint64_t t0 = t_now_ns();
	t_tool_stop(echo, so, out, sizeof out); /* the second: exit 0 */
	cr_assert_lt(t_now_ns() - t0, 10000 * T_MS,
		     "the second SIGTERM waited for the 60 s drain");
	cr_assert_geq(t_field(out, " accepted="), 2, "%s", out);
	close(fd);
#endif
}

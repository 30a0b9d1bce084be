/* Fault suite 9: a seeded fault plan (RINGIO_FAULTS) against a server:
 * accept fails with ECONNABORTED and EPROTO, readiness lies, sends come
 * back short, EAGAIN follows readiness, a buffer ring runs dry. The server
 * stays up and no healthy connection loses a byte: every connection either
 * is refused at accept (and the client sees that before any echo) or
 * echoes every byte it was sent. Run in-process on the test server, and on
 * ringio-echo (multishot recv from a buffer pool), which must also print
 * its counters on SIGTERM and exit 0. */
#include "tload.h"
#include "tserver.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#define PLAN "spurious=200,eagain=150,short_write=300,accept_abort=150," \
	     "accept_eproto=100,enobufs=50"

enum { CONNS = 200, ROUNDS = 20, SIZE = 3000 };

/* Every connection is accounted for once: refused at accept or served.
 * `probes` are connections the test made outside the load client. */
static void check(const tload_result *r, uint64_t accepted,
		  uint64_t client_errors, int probes)
{
	cr_log_info("%d ok, %d refused at accept (server counted %llu), "
		    "%llu round trips", r->ok, r->aborted,
		    (unsigned long long)client_errors,
		    (unsigned long long)r->rounds);
	cr_assert_eq(r->ok, CONNS, "ok %d failed %d", r->ok, r->failed);
	cr_assert_eq(r->failed, 0, "healthy connections broke");
	cr_assert_eq(r->mismatches, 0, "echoed bytes differ");
	cr_assert_eq(r->rounds, (uint64_t)CONNS * ROUNDS);
	cr_assert_gt(r->aborted, 0, "the plan refused no accept");
	cr_assert_eq(accepted + client_errors,
		     (uint64_t)(r->ok + r->aborted + probes),
		     "accepted %llu + refused %llu != %d connections",
		     (unsigned long long)accepted,
		     (unsigned long long)client_errors,
		     r->ok + r->aborted + probes);
	cr_assert_geq(client_errors, (uint64_t)r->aborted);
}

static tload_opts load(uint16_t port, unsigned seed)
{
	tload_opts o = { .port = port, .conns = CONNS, .rounds = ROUNDS,
			 .size = SIZE, .max_connecting = 64, .hold_fd = -1,
			 .retry_aborted = 1, .limit_ms = 120000, .seed = seed };
	return o;
}

Test(serve_faults, in_process_server_survives_the_plan, .timeout = 200)
{
#ifndef RINGIO_FAULT_HOOKS
	cr_skip_test("built without RINGIO_FAULT_HOOKS");
#endif
	rio_accept_counters c;
	rio_counters lc;
	tload_result res;
	tsrv s;
	int rfd;

	cr_assert_eq(setenv("RINGIO_FAULTS", "seed=11," PLAN, 1), 0);
	rio_loop *loop = t_loop();
	unsetenv("RINGIO_FAULTS");
	tsrv_start(&s, loop, NULL, 0);
	tload_opts o = load(s.port, 3);
	pid_t pid = tload_spawn(&o, &rfd);
	tload_finish(loop, pid, rfd, 150000, &res);
	T_RUN_UNTIL(loop, s.live == 0, 10000);
	rio_listener_counters(s.l, &c);
	rio_loop_counters(loop, &lc);
	cr_log_info("faults injected: %llu", (unsigned long long)lc.faults_injected);
	check(&res, c.accepted, c.client_errors, 0);
	cr_assert_eq(s.stopped, 0, "the listener stopped");
	cr_assert_eq(s.other_errors, 0, "server: %s", rio_strerror(s.last_error));
	tsrv_finish(&s);
	t_loop_done(loop);
}

static uint64_t field(const char *out, const char *name)
{
	const char *p = strstr(out, name);

	cr_assert_not_null(p, "no %s in ringio-echo's report:\n%s", name, out);
	return strtoull(p + strlen(name), NULL, 10);
}

Test(serve_faults, ringio_echo_survives_the_plan, .timeout = 200)
{
#if !defined(RINGIO_FAULT_HOOKS) || !defined(RIO_ECHO_BIN)
	cr_skip_test("needs RINGIO_FAULT_HOOKS and ringio-echo built");
#else
	uint16_t port = t_closed_port();
	char ports[8], out[4096] = "";
	int so[2], rfd, st, fd = -1;
	size_t have = 0;
	ssize_t n;
	tload_result res;

	snprintf(ports, sizeof(ports), "%u", port);
	cr_assert_eq(pipe(so), 0);
	pid_t echo = fork();
	cr_assert(echo >= 0);
	if (echo == 0) {
		dup2(so[1], 1);
		setenv("RINGIO_FAULTS", "seed=5," PLAN, 1);
		execl(RIO_ECHO_BIN, "ringio-echo", "--port", ports,
		      "--buf-count", "64", "--buf-size", "4096", (char *)NULL);
		_exit(127);
	}
	close(so[1]);
	for (int i = 0; i < 500 && fd < 0; i++) { /* up within 5 s */
		fd = t_try_connect(AF_INET, port);
		if (fd < 0)
			usleep(10000);
	}
	cr_assert_geq(fd, 0, "ringio-echo never listened on %u", port);
	close(fd);
	tload_opts o = load(port, 4);
	pid_t pid = tload_spawn(&o, &rfd);
	tload_finish(NULL, pid, rfd, 150000, &res);
	cr_assert_eq(kill(echo, 0), 0, "ringio-echo died under the plan");
	cr_assert_eq(kill(echo, SIGTERM), 0);
	while (have < sizeof(out) - 1 &&
	       (n = read(so[0], out + have, sizeof(out) - 1 - have)) > 0)
		have += (size_t)n;
	out[have] = 0;
	cr_assert_eq(waitpid(echo, &st, 0), echo);
	cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0,
		  "ringio-echo exit status %d", st);
	cr_log_info("%s", out);
	check(&res, field(out, " accepted="), field(out, "client_errors="), 1);
	cr_assert_gt(field(out, "faults_injected="), 0);
	cr_assert_eq(field(out, "fatal_errors="), 0);
#endif
}

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
	cr_assert_eq(s.other_errors, 0, "server: %s while %s",
		     rio_strerror(s.other_error), s.other_sending ? "sending" : "receiving");
	tsrv_finish(&s);
	t_loop_done(loop);
}

Test(serve_faults, ringio_echo_survives_the_plan, .timeout = 200)
{
#if !defined(RINGIO_FAULT_HOOKS) || !defined(RIO_ECHO_BIN)
	cr_skip_test("needs RINGIO_FAULT_HOOKS and ringio-echo built");
#else
	uint16_t port = t_closed_port();
	char ports[8], out[4096] = "";
	char *argv[] = { RIO_ECHO_BIN, "--port", ports, "--buf-count", "64",
			 "--buf-size", "4096", NULL };
	int so, rfd;
	tload_result res;

	snprintf(ports, sizeof(ports), "%u", port);
	pid_t echo = t_tool_spawn(argv, "RINGIO_FAULTS=seed=5," PLAN, &so);
	t_wait_listening(port);
	tload_opts o = load(port, 4);
	pid_t pid = tload_spawn(&o, &rfd);
	tload_finish(NULL, pid, rfd, 150000, &res);
	cr_assert_eq(kill(echo, 0), 0, "ringio-echo died under the plan");
	t_tool_stop(echo, so, out, sizeof(out));
	/* the t_wait_listening probe is one more connection */
	check(&res, t_field(out, " accepted="), t_field(out, "client_errors="), 1);
	cr_assert_gt(t_field(out, "faults_injected="), 0);
	cr_assert_eq(t_field(out, "fatal_errors="), 0);
#endif
}

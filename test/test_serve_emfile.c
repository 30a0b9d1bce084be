/* Fault suite 1: RLIMIT_NOFILE at 64 and 500 clients. The listener pauses
 * on EMFILE instead of spinning (its CPU time during the pause is measured),
 * never stops, and serves every waiting client once connections close. */
#include "tload.h"
#include "tserver.h"

#include <sys/resource.h>
#include <sys/time.h>
#include <unistd.h>

enum { CLIENTS = 500, NOFILE = 64, PAUSE_MS = 1000 };

static uint64_t cpu_us(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru); /* every thread, io_uring's workers too */
	return (uint64_t)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000000 +
	       (uint64_t)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec);
}

Test(serve_emfile, pauses_without_spinning_then_serves_all, .timeout = 120)
{
	int hold[2];
	cr_assert_eq(pipe(hold), 0);
	tload_opts o = { .conns = CLIENTS, .rounds = 1, .size = 64,
			 .max_connecting = CLIENTS, .hold_fd = hold[0],
			 .limit_ms = 60000, .seed = 1, .nofile = 4096 };
	struct rlimit rl;
	rio_accept_counters c0, c1, c;
	tload_result res;
	int rfd;

	rio_loop *loop = t_loop();
	tsrv s;
	tsrv_start(&s, loop, NULL, 0);
	o.port = s.port;
	pid_t pid = tload_spawn(&o, &rfd);
	close(hold[0]);
	/* the client's process keeps a normal limit; this one gets 64 */
	cr_assert_eq(getrlimit(RLIMIT_NOFILE, &rl), 0);
	rl.rlim_cur = NOFILE;
	cr_assert_eq(setrlimit(RLIMIT_NOFILE, &rl), 0);

	/* Fill the table: the accepts that fit are echoed and held open. */
	T_RUN_UNTIL(loop, (rio_listener_counters(s.l, &c0), c0.load_errors > 0),
		    20000);
	t_loop_sleep(loop, 100);
	rio_listener_counters(s.l, &c0);
	uint64_t t0 = t_now_ns(), u0 = cpu_us();
	t_loop_sleep(loop, PAUSE_MS);
	uint64_t used_us = cpu_us() - u0, wall_us = (t_now_ns() - t0) / 1000;
	rio_listener_counters(s.l, &c1);
	cr_log_info("EMFILE pause: %llu us CPU over %llu us wall (%.2f%%), "
		    "%llu load errors, %d of %d accepted",
		    (unsigned long long)used_us, (unsigned long long)wall_us,
		    100.0 * (double)used_us / (double)wall_us,
		    (unsigned long long)(c1.load_errors - c0.load_errors),
		    s.accepted, CLIENTS);
	cr_assert_lt(s.accepted, CLIENTS, "never hit the fd limit");
	cr_assert_eq(s.stopped, 0, "the listener stopped on EMFILE");
	/* A spinning accept loop burns ~100% of a core; the 10 ms..1 s
	 * backoff wakes ~7 times a second. */
	cr_assert_lt(used_us * 10, wall_us, "CPU %llu us in %llu us of pause",
		     (unsigned long long)used_us, (unsigned long long)wall_us);
	cr_assert_leq(c1.load_errors - c0.load_errors, 20,
		      "too many retries during the pause");

	/* Release: clients close, the server frees fds and resumes. */
	cr_assert_eq(write(hold[1], "g", 1), 1);
	tload_finish(loop, pid, rfd, 60000, &res);
	close(hold[1]);
	T_RUN_UNTIL(loop, s.live == 0, 10000);
	rio_listener_counters(s.l, &c);
	cr_log_info("served %d/%d clients; load_errors %llu, early_resumes "
		    "%llu", res.ok, CLIENTS, (unsigned long long)c.load_errors,
		    (unsigned long long)c.early_resumes);
	cr_assert_eq(res.ok, CLIENTS, "served %d (failed %d, aborted %d, "
		     "connect errors %d)", res.ok, res.failed, res.aborted,
		     res.connect_errors);
	cr_assert_eq(res.mismatches, 0);
	cr_assert_eq(s.accepted, CLIENTS);
	cr_assert_eq(s.stopped, 0, "the listener stopped");
	cr_assert_eq(c.fatal_errors, 0);
	cr_assert_gt(c.early_resumes, 0, "closing connections never resumed "
		     "accepting early");
	tsrv_finish(&s);
	t_loop_done(loop);
}

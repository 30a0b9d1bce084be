/* Fault suite 8: soak. Echo load with random disconnects and resets (with
 * data in flight) for RIO_SOAK_MS (default 60 s); afterwards the server's
 * open fd count and heap in use are back where they were after a warm-up
 * of the same load, and no healthy connection lost a byte. */
#include "tload.h"
#include "tserver.h"

#include <dirent.h>
#include <malloc.h>
#include <stdlib.h>
#include <unistd.h>
#if defined(__SANITIZE_ADDRESS__)
/* libasan's; gcc ships no header for it (sanitizer/allocator_interface.h
 * comes with clang's runtime) */
size_t __sanitizer_get_current_allocated_bytes(void);
#endif

enum { CONNS = 100, WARMUP_MS = 3000, HEAP_SLACK = 64 << 10 };

static int open_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	int n = 0;

	cr_assert_not_null(d);
	while (readdir(d))
		n++;
	closedir(d);
	return n - 3; /* ".", ".." and the DIR's own fd */
}

static size_t heap_in_use(void)
{
#if defined(__SANITIZE_ADDRESS__)
	return __sanitizer_get_current_allocated_bytes();
#else
	return mallinfo2().uordblks;
#endif
}

static void run_load(rio_loop *loop, tsrv *s, unsigned ms, unsigned seed,
		     tload_result *res)
{
	tload_opts o = { .port = s->port, .conns = CONNS, .size = 16384,
			 .soak_ms = ms, .rst_permille = 20,
			 .close_permille = 20, .hold_fd = -1,
			 .limit_ms = ms + 30000, .seed = seed };
	int rfd;
	pid_t pid = tload_spawn(&o, &rfd);

	tload_finish(loop, pid, rfd, ms + 30000, res);
	T_RUN_UNTIL(loop, s->live == 0, 10000);
	cr_assert_eq(res->failed, 0, "%d healthy connections broke", res->failed);
	cr_assert_eq(res->mismatches, 0, "%d echoes differed", res->mismatches);
	cr_assert_eq(res->connect_errors, 0);
	cr_assert_gt(res->killed, 0, "the soak killed no connection");
	cr_assert_eq(s->other_errors, 0, "server: %s while %s",
		     rio_strerror(s->other_error),
		     s->other_sending ? "sending" : "receiving");
}

Test(serve_soak, fds_and_memory_return_after_the_storm, .timeout = 600)
{
	const char *env = getenv("RIO_SOAK_MS");
	unsigned soak_ms = env ? (unsigned)atoi(env) : 60000;
	rio_loop *loop = t_loop();
	tload_result warm, res;
	tsrv s;

	cr_assert_gt(soak_ms, 0, "RIO_SOAK_MS must be a positive number");
	tsrv_start(&s, loop, NULL, 5000 * T_MS);
	run_load(loop, &s, WARMUP_MS, 1, &warm);
	int fds0 = open_fds();
	size_t heap0 = heap_in_use();
	int accepted0 = s.accepted;

	run_load(loop, &s, soak_ms, 2, &res);
	int fds1 = open_fds();
	size_t heap1 = heap_in_use();
	cr_log_info("soak %u ms: %d connections (%d killed by the client), "
		    "%llu round trips, %llu MiB; server fds %d -> %d, heap "
		    "in use %zu -> %zu bytes", soak_ms, s.accepted - accepted0,
		    res.killed, (unsigned long long)res.rounds,
		    (unsigned long long)(res.bytes >> 20), fds0, fds1, heap0,
		    heap1);
	cr_assert_gt(res.rounds, 1000);
	cr_assert_eq(fds1, fds0, "fd count %d after the soak, %d before",
		     fds1, fds0);
	cr_assert_leq(heap1, heap0 + HEAP_SLACK, "heap grew from %zu to %zu",
		      heap0, heap1);
	cr_assert_eq(s.stopped, 0);
	tsrv_finish(&s);
	t_loop_done(loop);
}

/*
 * Shared helpers for the ringio Criterion suite.
 *
 * Include this header first in every test file (it sets _GNU_SOURCE).
 * Everything here uses plain syscalls for the test's own plumbing (pairs,
 * listeners, fills) so that a bug in ringio's socket helpers shows up in
 * test_sockets.c and nowhere else.
 *
 * Every loop run by a test goes through a runner (T_RUN_UNTIL, t_drain,
 * t_loop_sleep): it is bounded in wall-clock time and in iterations, and it
 * keeps a short watchdog timeout in flight so that RIO_RUN_ONCE can never
 * block forever. The ops the runner submits are tallied in t_helper_ops so
 * that a test checking rio_loop_counters() can account for them.
 */
#ifndef RIO_TEST_COMMON_H
#define RIO_TEST_COMMON_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <criterion/criterion.h>
#include <criterion/logging.h>
#include <errno.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/types.h>

#include <ringio.h>

#define T_MS 1000000ull /* nanoseconds per millisecond */

/* Ops submitted (and completed) by the helpers' runners, per process. */
extern uint64_t t_helper_ops;

uint64_t t_now_ns(void);

/* A loop with the backend RINGIO_BACKEND asks for (default options). */
rio_loop *t_loop(void);
/* A loop with the given ring sizes (0 = library default). */
rio_loop *t_loop_opts(unsigned sq_entries, unsigned cq_entries);
/* Drain every user op (bounded), then destroy, asserting both succeed. */
void t_loop_done(rio_loop *loop);
rio_backend_kind t_backend(const rio_loop *loop);

/* ---- the bounded runner ---- */

typedef struct t_runner {
	rio_loop *loop;
	const char *what;
	uint64_t start_ns, limit_ns;
	unsigned long iters, max_iters;
	rio_op wd, cancel;
	int wd_armed, cancel_armed;
	int last; /* last rio_loop_run() result */
} t_runner;

void t_runner_begin(t_runner *r, rio_loop *loop, unsigned limit_ms,
		    const char *what);
/* One RIO_RUN_ONCE turn with the watchdog armed; cr_fail past the bounds. */
int t_runner_step(t_runner *r);
/* The runner's own ops still in flight. */
int t_runner_own(const t_runner *r);
/* Cancel the watchdog and run until the runner owns nothing in flight. */
void t_runner_end(t_runner *r);

/* Run `loop` until `cond` holds; fail the test after `limit_ms`. */
#define T_RUN_UNTIL(loop, cond, limit_ms)                              \
	do {                                                           \
		t_runner t_r_;                                         \
		t_runner_begin(&t_r_, (loop), (limit_ms), #cond);      \
		while (!(cond))                                        \
			t_runner_step(&t_r_);                          \
		t_runner_end(&t_r_);                                   \
	} while (0)

/* Run until no user op is in flight; fail after `limit_ms`. */
void t_drain(rio_loop *loop, unsigned limit_ms);
/* Run the loop for `ms` milliseconds (a helper timer), dispatching. */
void t_loop_sleep(rio_loop *loop, unsigned ms);

/* A client of the echo (or proxy) on `port` that sends 64 KiB chunks and
 * never reads, until 50 tries in a row over half a second get nothing in
 * (the pipeline is full); fails if that never happens. Returns its fd and
 * the bytes it got in. Runs `loop` while it waits (NULL: sleeps). */
int t_stall_client(rio_loop *loop, uint16_t port, uint64_t *pushed);

/* ---- callback recorder ---- */

/* Embed `op`, submit with t_rec_cb: it counts calls and keeps the last
 * result, flags, and the completion's place in t_seq order. */
typedef struct t_rec {
	rio_op op;
	int calls;
	int res;
	unsigned flags;
	int seq;
} t_rec;

/* Completions recorded so far, in order (a test may reset it). */
extern int t_seq;
/* Completions through t_rec_count_cb (a test resets it per phase). */
extern int t_done;

void t_rec_cb(rio_loop *loop, rio_op *op, int res);
/* t_rec_cb, and t_done++. */
void t_rec_count_cb(rio_loop *loop, rio_op *op, int res);
/* A callback that does nothing (ops a test only submits or refuses). */
void t_nop_cb(rio_loop *loop, rio_op *op, int res);
/* Assert each of r[0..n) completed exactly once. */
void t_rec_all_once(const t_rec *r, int n, const char *what);

/* ---- sockets (plain syscalls, 127.0.0.1 / ::1 only) ---- */

/* Blocking listener on the loopback of `family`, port 0; *port gets it.
 * backlog is passed to listen(2) as is. Returns the fd (asserts). */
int t_listen(int family, int backlog, uint16_t *port);
/* The loopback sockaddr of `family` with `port`. */
socklen_t t_loopback(int family, uint16_t port, struct sockaddr_storage *ss);
/* A blocking client connected to loopback:port. Returns the fd. */
int t_connect(int family, uint16_t port);
/* The same, returning -errno when connect fails (no assertion). */
int t_try_connect(int family, uint16_t port);
/* A connected IPv4 loopback TCP pair, both O_NONBLOCK and TCP_NODELAY. */
void t_pair(int *a, int *b);
/* A port on 127.0.0.1 that nothing listens on (bound, then closed). */
uint16_t t_closed_port(void);
/* Close with SO_LINGER {1, 0}: the peer gets a real RST. */
void t_rst_close(int fd);
/* A listener (backlog 0) whose accept queue is full: a connect to it stays
 * in SYN_SENT. *filler is the queued client; close both when done. */
int t_full_listener(uint16_t *port, int *filler);
/* Shrink fd's SO_SNDBUF and fill it (and the peer's receive queue) until
 * send would block. Returns the bytes queued. */
size_t t_fill_sndbuf(int fd, int peer);
/* Read a non-blocking fd until EAGAIN or EOF; returns bytes read. */
size_t t_drain_fd(int fd);
int t_set_blocking(int fd);
/* SO_RCVTIMEO and SO_SNDTIMEO of `sec` seconds: a blocking call on fd
 * cannot hang a test. */
void t_timeouts(int fd, int sec);
bool t_ipv6_loopback(void);
/* Raise RLIMIT_NOFILE's soft limit to at least `need`. false: the hard
 * limit is lower. */
bool t_raise_nofile(rlim_t need);
/* Kernel release >= major.minor. */
bool t_kernel_at_least(int major, int minor);
/* rio_bufpool_create, asserting success; skips the test only where the
 * kernel predates provided-buffer rings / multishot recv (< 6.0). */
rio_bufpool *t_bufpool(rio_loop *loop, unsigned count, size_t size);

/* ---- echo checks (the test thread runs the server's loop) ---- */

/* Non-blocking: read into buf[*have, len); true once *have == len. */
bool t_recv_upto(int fd, void *buf, size_t len, size_t *have);
/* Send `msg` on `fd` and run `loop` until the same bytes come back
 * (asserts; 5 s at most). */
void t_echo_check(rio_loop *loop, int fd, const char *msg);
/* The same on a fresh connection to 127.0.0.1:port, closed afterwards. */
void t_echo_check_port(rio_loop *loop, uint16_t port, const char *msg);

/* A pattern stream through an echo, on two threads sharing `fd`: the
 * writer sends `total` bytes (t_pat_fill, 64 KiB a send, sleeping pace_us
 * between sends) and shuts down its write side; the reader reads to end
 * of stream. FNV-1a of both sides, for comparison. */
typedef struct t_stream {
	int fd;
	uint64_t total;
	unsigned pace_us;
	uint64_t sent, got, fnv_out, fnv_in;
	int werr, rerr;  /* errno of a failed send / recv */
	atomic_int done; /* the reader is finished */
} t_stream;
void *t_stream_writer(void *arg);
void *t_stream_reader(void *arg);
/* Run both threads while `loop` runs (the server side), join them, and
 * assert that every byte came back unchanged. */
void t_stream_run(rio_loop *loop, t_stream *s, unsigned limit_ms);

/* ---- the project's tools, run as child processes ---- */

/* In a forked child: die with the test process, so that a failed test
 * (whose process ends at the failed assertion) leaves no child behind to
 * hold the runner's pipes open. */
void t_die_with_parent(void);
/* fork + exec argv (argv[0] is the binary's path) with its stdout on a
 * pipe (*out_fd) and `env` ("NAME=VALUE", or NULL) added. */
pid_t t_tool_spawn(char *const argv[], const char *env, int *out_fd);
/* Wait until something accepts on 127.0.0.1:port (5 s at most). The probe
 * is one connection, opened and closed. */
void t_wait_listening(uint16_t port);
/* SIGTERM it, read its stdout to the end into `out`; it must exit 0. */
void t_tool_stop(pid_t pid, int out_fd, char *out, size_t cap);
/* The number after `name` in a tool's counter line (asserts it is there). */
uint64_t t_field(const char *out, const char *name);
/* A process's resident set (VmRSS), in KiB. */
long t_rss_kib(pid_t pid);

/* ---- data ---- */

/* A position-dependent pattern: byte i of the stream is a hash of i, so a
 * lost, duplicated or reordered range is caught. */
void t_pat_fill(void *buf, size_t len, uint64_t stream_off);
/* Index of the first byte that does not match, or len. */
size_t t_pat_check(const void *buf, size_t len, uint64_t stream_off);
/* FNV-1a 64, chainable (start with T_FNV_INIT). */
#define T_FNV_INIT 0xcbf29ce484222325ull
uint64_t t_fnv(uint64_t h, const void *buf, size_t len);

#endif

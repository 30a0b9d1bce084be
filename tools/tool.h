/*
 * What ringio's tools share: strict number flags, the messages for a bad
 * command line, one loop per thread stopped by SIGINT/SIGTERM, and
 * summing per-thread counters. Not part of the library.
 */
#ifndef RIO_TOOL_H
#define RIO_TOOL_H

#include <getopt.h>
#include <stddef.h>
#include <stdint.h>

#include <ringio.h>

#include "relay.h"

#define TOOL_MAX_THREADS 256

/* The flags every tool takes, parsed one way. */
struct tool_common {
	int threads;              /* --threads N: one loop per thread */
	rio_backend_kind backend; /* --backend auto|uring|epoll|kqueue */
	uint64_t idle_ms;         /* --idle-timeout MS; 0: none */
	unsigned buf_count;       /* --buf-count N: a power of 2 */
	size_t buf_size;          /* --buf-size BYTES */
	enum relay_splice splice; /* --splice auto|on|off */
};

/* Their getopt_long entries, for a tool's option table. */
#define TOOL_COMMON_OPTIONS                                   \
	{ "threads", required_argument, 0, 't' },             \
	{ "backend", required_argument, 0, 'b' },             \
	{ "idle-timeout", required_argument, 0, 'i' },        \
	{ "buf-count", required_argument, 0, 'n' },           \
	{ "buf-size", required_argument, 0, 's' },            \
	{ "splice", required_argument, 0, 'S' }
#define TOOL_COMMON_SHORT "t:b:i:n:s:S:"
/* Their usage lines. */
#define TOOL_COMMON_USAGE                                                  \
	"  [--threads N] [--backend auto|uring|epoll|kqueue] "             \
	"[--idle-timeout MS]\n"                                             \
	"  [--buf-count N (power of 2)] [--buf-size BYTES] "                \
	"[--splice auto|on|off]\n"

/* getopt_long's `c` with its `arg`: if it is a common flag, store it (or
 * point *bad at the flag's name when the value is wrong) and return 1;
 * else return 0. */
int tool_common_flag(int c, const char *arg, struct tool_common *com,
		     const char **bad);

/* Parse a whole decimal number in [lo, hi]. Returns 0 or -EINVAL. */
int tool_parse_long(const char *s, long lo, long hi, long *out);

/* "PROG: invalid value for FLAG: 'VAL'" on stderr; returns -EINVAL. */
int tool_bad_value(const char *prog, const char *flag, const char *val);

/* After getopt: -EINVAL (with a message) if operands are left over. */
int tool_no_operands(const char *prog, int argc, char **argv, int first);

/*
 * After the flags, before anything starts: refuse what cannot run here,
 * with a message that names the cause and what to do, and -EINVAL (the
 * tool exits 2): a RINGIO_BACKEND that names no backend, a backend this
 * build or this machine does not have (io_uring refused: the reason, as
 * ringio-probe gives it), buffers for every thread (com->threads x
 * com->buf_count x com->buf_size) beyond the memory available.
 */
int tool_preflight(const char *prog, const struct tool_common *com);

/* Let SIGINT/SIGTERM (and tool_stop_all) stop worker i's loop. Any
 * thread, one slot per worker; a loop registered after a stop was asked
 * for is stopped at once. */
void tool_stop_on_signal(int i, rio_loop *loop);
/* Stop every registered loop (what the signal handler does). */
void tool_stop_all(void);
void tool_catch_signals(void);

/* Run `run` on each of `n` workers (`stride` bytes apart from `first`):
 * the first on this thread, the others on threads of their own; returns
 * when all have returned: 0, or -errno when a thread could not be started
 * (said on stderr; every worker is then stopped, and the ones that never
 * started never set up). */
int tool_run_threads(const char *prog, void *first, size_t stride, int n,
		     void *(*run)(void *));

/*
 * Idle timeout for connections: a list in order of last activity, and a
 * sweep timer (due when the oldest entry falls due, at least 5 ms apart)
 * that hands the ones quiet for idle_ms or more, oldest first, to
 * `expire`, which must take
 * them off the list (tool_idle_del). A quiet connection costs a list
 * entry, and no op of its own.
 */
struct tool_idle_node {
	struct tool_idle_node *prev, *next;
	uint64_t active_ms;
};
struct tool_idle {
	struct tool_idle_node *head, *tail;
	rio_loop *loop;
	uint64_t idle_ms; /* 0: no timeout (the list still lists) */
	void (*expire)(struct tool_idle *q, struct tool_idle_node *n);
	rio_op sweep_op, cancel_op;
	int stopped;
};
void tool_idle_init(struct tool_idle *q, rio_loop *loop, uint64_t idle_ms,
		    void (*expire)(struct tool_idle *, struct tool_idle_node *));
/* Arm the sweep (if there is a timeout); tool_idle_stop ends it. */
void tool_idle_start(struct tool_idle *q);
void tool_idle_stop(struct tool_idle *q);
void tool_idle_add(struct tool_idle *q, struct tool_idle_node *n);
void tool_idle_del(struct tool_idle *q, struct tool_idle_node *n);
/* It moved a byte: to the back of the list (only with a timeout). */
void tool_idle_touch(struct tool_idle *q, struct tool_idle_node *n);

/*
 * A worker: one loop on one thread. A tool's worker struct starts with a
 * struct tool_worker. tool_worker_run (for tool_run_threads) sets up
 * workers 1..n-1 on their own threads (worker 0: tool_worker_start on the
 * main thread first), runs the loop until a signal stops it, calls `stop`
 * and runs on until nothing is in flight; a second signal meanwhile calls
 * `force` (if set) and runs on again. A loop error is printed and kept in
 * `err`, as is a failed set-up (which stops every worker).
 */
struct tool_worker;
struct tool_worker_ops {
	const char *prog;                       /* for messages */
	int (*init)(struct tool_worker *w);     /* w->loop exists: listen */
	void (*stop)(struct tool_worker *w);    /* the first signal */
	void (*force)(struct tool_worker *w);   /* a second one; may be NULL */
};
struct tool_worker {
	rio_backend_kind backend; /* for its loop (1024 SQEs) */
	rio_loop *loop;
	int idx; /* its slot: 0..n-1 */
	int err;
	const struct tool_worker_ops *ops;
};
int tool_worker_start(struct tool_worker *w);
void *tool_worker_run(void *arg);

/* *total += *c, field by field. */
void tool_add_counters(rio_counters *total, const rio_counters *c);

#endif

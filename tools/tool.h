/*
 * What ringio's tools share: one flag parser (strict numbers, the messages
 * for a bad command line), one loop per thread stopped by SIGINT/SIGTERM,
 * and the loop and listener counters, summed over the threads and printed.
 * Not part of the library.
 */
#ifndef RIO_TOOL_H
#define RIO_TOOL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <ringio.h>

#define TOOL_MAX_THREADS 256

/* The flags every tool takes, parsed one way (by tool_parse_flags). */
struct tool_common {
	int threads;              /* --threads N: one loop per thread */
	rio_backend_kind backend; /* --backend auto|uring|epoll|kqueue */
	uint64_t idle_ms;         /* --idle-timeout MS; 0: none */
	unsigned buf_count;       /* --buf-count N: a power of 2 */
	size_t buf_size;          /* --buf-size BYTES */
	rio_splice_mode splice;   /* --splice auto|on|off */
};

/* Their usage lines. */
#define TOOL_COMMON_USAGE                                                  \
	"  [--threads N] [--backend auto|uring|epoll|kqueue] "             \
	"[--idle-timeout MS]\n"                                             \
	"  [--buf-count N (power of 2)] [--buf-size BYTES] "                \
	"[--splice auto|on|off]\n"

/*
 * One flag, in a table that TOOL_FLAGS_END ends: --name ARG, or -letter
 * ARG (TOOL_SWITCH: none). TOOL_NUM takes a whole decimal number in [lo, hi] (lo >= 0) into
 * `var`, an int, unsigned, uint64_t or size_t; TOOL_ARG hands ARG to
 * `parse`, which stores it through `dst` and returns 0, or -EINVAL for a
 * value it refuses.
 */
struct tool_flag {
	const char *name; /* the long name, without the dashes */
	char letter;      /* the short one */
	void *dst;
	size_t size; /* TOOL_NUM: sizeof var */
	long lo, hi; /* TOOL_NUM: the range */
	int (*parse)(const char *arg, void *dst); /* TOOL_ARG */
};
#define TOOL_NUM(name, letter, var, lo, hi) \
	{ (name), (letter), &(var), sizeof(var), (lo), (hi), NULL }
#define TOOL_ARG(name, letter, parse, dst) \
	{ (name), (letter), (dst), 0, 0, 0, (parse) }
/* --name alone (no ARG): sets the int `var` to 1 */
#define TOOL_SWITCH(name, letter, var) \
	{ (name), (letter), &(var), 0, 0, 0, NULL }
#define TOOL_FLAGS_END { NULL, 0, NULL, 0, 0, 0, NULL }

/*
 * Parse the command line: the tool's `flags`, the common ones into *com,
 * and --help (usage(stdout), then exit 0). Long names may be abbreviated
 * (getopt_long). Returns 0, or -EINVAL (the tool exits 2) after a message
 * on stderr: "PROG: invalid value for --NAME: 'ARG'" for a value refused,
 * getopt's message and usage(stderr) for an unknown flag or a missing
 * value, "PROG: unexpected argument 'ARG'" for an operand.
 */
int tool_parse_flags(const char *prog, int argc, char **argv,
		     const struct tool_flag *flags, struct tool_common *com,
		     void (*usage)(FILE *f));

/* Parse a whole decimal number in [lo, hi]. Returns 0 or -EINVAL. */
int tool_parse_long(const char *s, long lo, long hi, long *out);
/* An address as the tools take it, appended to list[*n] (max entries):
 * what rio_addr_parse() reads (1.2.3.4:80, [::1]:80, unix:PATH,
 * unix:@NAME), or NAME:PORT, resolved now with getaddrinfo(): every
 * address it gives (IPv4 and IPv6, in its order), each once. Says what is
 * wrong on stderr (prog: ...) and returns -EINVAL; 0 on success. Blocks
 * while the name is looked up: for start-up only. */
int tool_resolve(const char *prog, const char *text, rio_addr *list, int *n,
		 int max);
/* A TOOL_ARG parser for a string flag: *(const char **)dst = arg. */
int tool_parse_string(const char *arg, void *dst);

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
/* Stop every registered loop (what a signal does). */
void tool_stop_all(void);
/* Take SIGINT and SIGTERM as completions of a rio_signal op on `loop`
 * (worker 0's; call it on its thread before tool_run_threads, whose
 * threads inherit the blocked signals): each one stops every loop, the
 * first for a drain, the second to force the end. No handler runs. 0, or
 * -errno (said on stderr). */
int tool_catch_signals(const char *prog, rio_loop *loop);

/* Run `run` on each of `n` workers (`stride` bytes apart from `first`):
 * the first on this thread, the others on threads of their own; returns
 * when all have returned: 0, or -errno when a thread could not be started
 * (said on stderr; every worker is then stopped, and the ones that never
 * started never set up). */
int tool_run_threads(const char *prog, void *first, size_t stride, int n,
		     void *(*run)(void *));

/* A list of connections, in the order they were added (for a graceful
 * stop, which walks them). */
struct tool_node {
	struct tool_node *prev, *next;
};
struct tool_list {
	struct tool_node *head, *tail;
};
void tool_list_add(struct tool_list *q, struct tool_node *n);
void tool_list_del(struct tool_list *q, struct tool_node *n);

/*
 * A worker: one loop on one thread. A tool's worker struct starts with a
 * struct tool_worker. tool_worker_run (for tool_run_threads) sets up
 * workers 1..n-1 on their own threads (worker 0: tool_worker_start on the
 * main thread first), runs the loop until a signal stops it, calls `stop`
 * and runs on until nothing is in flight; a second signal meanwhile ends
 * every op of the loop (rio_loop_cancel_all: the callbacks see
 * -ECANCELED and close what is theirs) and runs on again. A loop error is printed and kept in
 * `err`, as is a failed set-up (which stops every worker).
 */
struct tool_worker;
struct tool_worker_ops {
	const char *prog;                       /* for messages */
	int (*init)(struct tool_worker *w);     /* w->loop exists: listen */
	void (*stop)(struct tool_worker *w);    /* the first signal */
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

/* What a tool's loops and listeners counted, summed over its threads. */
struct tool_counters {
	rio_counters loop;
	rio_accept_counters accept;
};
/* Add what `loop` and the `n` listeners at `l` counted; a NULL loop or
 * listener counts nothing. */
void tool_count(struct tool_counters *sum, const rio_loop *loop,
		rio_listener *const *l, int n);
/*
 * Two lines on stdout, flushed: "PROG: accepted=N ... fatal_errors=N"
 * (the listeners' counters) followed by the tool's own fields, `fmt` with
 * its arguments (" name=%" PRIu64 ...), then "PROG: ops=N ...
 * faults_injected=N" (the loops').
 */
void tool_print_counters(const char *prog, const struct tool_counters *sum,
			 const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* *total += *add, where both are `size` bytes of uint64_t fields only. */
void tool_add_u64s(void *total, const void *add, size_t size);

#endif

/*
 * What ringio's tools share: strict number flags, the messages for a bad
 * command line, one loop per thread stopped by SIGINT/SIGTERM, and
 * summing per-thread counters. Not part of the library.
 */
#ifndef RIO_TOOL_H
#define RIO_TOOL_H

#include <stddef.h>

#include <ringio.h>

#define TOOL_MAX_THREADS 256

/* Parse a whole decimal number in [lo, hi]. Returns 0 or -EINVAL. */
int tool_parse_long(const char *s, long lo, long hi, long *out);

/* "PROG: invalid value for FLAG: 'VAL'" on stderr; returns -EINVAL. */
int tool_bad_value(const char *prog, const char *flag, const char *val);

/* After getopt: -EINVAL (with a message) if operands are left over. */
int tool_no_operands(const char *prog, int argc, char **argv, int optind);

/* Have SIGINT/SIGTERM stop this loop (rio_loop_stop), once
 * tool_catch_signals() has run; at most TOOL_MAX_THREADS loops. */
void tool_stop_on_signal(rio_loop *loop);
void tool_catch_signals(void);

/* Run `run` on each of `n` workers (`stride` bytes apart from `first`):
 * the first on this thread, the others on threads of their own; returns
 * when all have returned. */
void tool_run_threads(void *first, size_t stride, int n,
		      void *(*run)(void *));

/* *total += *c, field by field. */
void tool_add_counters(rio_counters *total, const rio_counters *c);

#endif

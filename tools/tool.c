#define _GNU_SOURCE
#include "tool.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int tool_parse_long(const char *s, long lo, long hi, long *out)
{
	char *end;
	errno = 0;
	long v = strtol(s, &end, 10);
	if (errno || end == s || *end || v < lo || v > hi)
		return -EINVAL;
	*out = v;
	return 0;
}

int tool_common_flag(int c, const char *arg, struct tool_common *com,
		     const char **bad)
{
	long v;
	switch (c) {
	case 't':
		if (tool_parse_long(arg, 1, TOOL_MAX_THREADS, &v))
			*bad = "--threads";
		else
			com->threads = (int)v;
		return 1;
	case 'b':
		v = rio_backend_parse(arg);
		if (v < 0)
			*bad = "--backend";
		else
			com->backend = (rio_backend_kind)v;
		return 1;
	case 'i':
		if (tool_parse_long(arg, 0, 86400000, &v))
			*bad = "--idle-timeout";
		else
			com->idle_ms = (uint64_t)v;
		return 1;
	default:
		return 0;
	}
}

int tool_bad_value(const char *prog, const char *flag, const char *val)
{
	fprintf(stderr, "%s: invalid value for %s: '%s'\n", prog, flag, val);
	return -EINVAL;
}

int tool_no_operands(const char *prog, int argc, char **argv, int optind)
{
	if (optind >= argc)
		return 0;
	fprintf(stderr, "%s: unexpected argument '%s'\n", prog, argv[optind]);
	return -EINVAL;
}

static rio_loop *_Atomic loops[TOOL_MAX_THREADS];
static atomic_int stopping;

/* rio_loop_stop is an atomic store and a wakeup write: async-signal-safe.
 * A loop registers before it checks `stopping`, and a stop sets
 * `stopping` before it reads the loops: one of the two sees the other. */
void tool_stop_all(void)
{
	atomic_store(&stopping, 1);
	for (int i = 0; i < TOOL_MAX_THREADS; i++) {
		rio_loop *l = atomic_load(&loops[i]);
		if (l)
			rio_loop_stop(l);
	}
}

static void on_signal(int sig)
{
	(void)sig;
	tool_stop_all();
}

void tool_stop_on_signal(int i, rio_loop *loop)
{
	if (i < 0 || i >= TOOL_MAX_THREADS)
		return;
	atomic_store(&loops[i], loop);
	if (atomic_load(&stopping))
		rio_loop_stop(loop);
}

void tool_catch_signals(void)
{
	struct sigaction sa = {.sa_handler = on_signal};
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
}

void tool_run_threads(void *first, size_t stride, int n,
		      void *(*run)(void *))
{
	pthread_t tid[TOOL_MAX_THREADS];
	char *w = first;
	for (int i = 1; i < n; i++)
		pthread_create(&tid[i], NULL, run, w + (size_t)i * stride);
	run(w);
	for (int i = 1; i < n; i++)
		pthread_join(tid[i], NULL);
}

/* rio_counters is a run of uint64_t and nothing else. */
_Static_assert(sizeof(rio_counters) % sizeof(uint64_t) == 0,
	       "rio_counters holds only uint64_t fields");

void tool_add_counters(rio_counters *total, const rio_counters *c)
{
	uint64_t *t = (uint64_t *)total;
	const uint64_t *a = (const uint64_t *)c;
	for (size_t i = 0; i < sizeof *c / sizeof *a; i++)
		t[i] += a[i];
}

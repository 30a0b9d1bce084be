#define _GNU_SOURCE
#include "tool.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

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
	case 'n':
		if (tool_parse_long(arg, 1, 32768, &v) || (v & (v - 1)))
			*bad = "--buf-count";
		else
			com->buf_count = (unsigned)v;
		return 1;
	case 's':
		if (tool_parse_long(arg, 64, 1 << 24, &v))
			*bad = "--buf-size";
		else
			com->buf_size = (size_t)v;
		return 1;
	case 'S':
		if (!strcmp(arg, "auto"))
			com->splice = RELAY_SPLICE_AUTO;
		else if (!strcmp(arg, "on"))
			com->splice = RELAY_SPLICE_ON;
		else if (!strcmp(arg, "off"))
			com->splice = RELAY_SPLICE_OFF;
		else
			*bad = "--splice";
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

int tool_no_operands(const char *prog, int argc, char **argv, int first)
{
	if (first >= argc)
		return 0;
	fprintf(stderr, "%s: unexpected argument '%s'\n", prog, argv[first]);
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

int tool_run_threads(const char *prog, void *first, size_t stride, int n,
		     void *(*run)(void *))
{
	pthread_t tid[TOOL_MAX_THREADS];
	char *w = first;
	int started = 1, err = 0;
	for (; started < n; started++) {
		err = pthread_create(&tid[started], NULL, run,
				     w + (size_t)started * stride);
		if (err) { /* the ones started stop; the process exits 1 */
			fprintf(stderr, "%s: cannot start thread %d of %d: %s\n",
				prog, started + 1, n, strerror(err));
			tool_stop_all();
			break;
		}
	}
	run(w);
	for (int i = 1; i < started; i++)
		pthread_join(tid[i], NULL);
	return err ? -err : 0;
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

/* ---- workers ---- */

int tool_worker_start(struct tool_worker *w)
{
	rio_loop_opts o = {.backend = w->backend, .sq_entries = 1024};
	int r = rio_loop_create(&w->loop, &o);
	if (r < 0)
		fprintf(stderr, "%s: loop: %s\n", w->ops->prog, rio_strerror(r));
	else
		r = w->ops->init(w);
	if (w->loop)
		tool_stop_on_signal(w->idx, w->loop);
	if (r < 0)
		w->err = r;
	return r;
}

void *tool_worker_run(void *arg)
{
	struct tool_worker *w = arg;
	if (w->idx > 0 && tool_worker_start(w) < 0) {
		tool_stop_all(); /* the process exits 1 */
		return NULL;
	}
	int r = rio_loop_run(w->loop, RIO_RUN_DEFAULT);
	if (r >= 0) { /* stopped by a signal */
		w->ops->stop(w);
		r = rio_loop_run(w->loop, RIO_RUN_DEFAULT);
		if (r > 0 && w->ops->force) { /* a second signal */
			w->ops->force(w);
			r = rio_loop_run(w->loop, RIO_RUN_DEFAULT);
		}
	}
	if (r < 0) {
		fprintf(stderr, "%s: loop: %s\n", w->ops->prog, rio_strerror(r));
		w->err = r;
	}
	return NULL;
}

/* ---- idle timeout ---- */

#define container_of(p, T, m) ((T *)((char *)(p) - offsetof(T, m)))

static uint64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void sweep_cb(rio_loop *loop, rio_op *op, int res);

static void arm_sweep(struct tool_idle *q)
{
	uint64_t ms = q->idle_ms / 4;
	rio_timeout(q->loop, &q->sweep_op, (ms < 10 ? 10 : ms) * 1000000ull,
		    sweep_cb);
}

static void sweep_cb(rio_loop *loop, rio_op *op, int res)
{
	struct tool_idle *q = container_of(op, struct tool_idle, sweep_op);
	if (res < 0 || q->stopped)
		return;
	uint64_t now = now_ms();
	while (q->head && now - q->head->active_ms >= q->idle_ms) {
		struct tool_idle_node *n = q->head;
		q->expire(q, n);
		if (q->head == n) /* it did not take it off: do not spin */
			tool_idle_del(q, n);
	}
	arm_sweep(q);
}

static void nop_cb(rio_loop *loop, rio_op *op, int res)
{
}

void tool_idle_init(struct tool_idle *q, rio_loop *loop, uint64_t idle_ms,
		    void (*expire)(struct tool_idle *, struct tool_idle_node *))
{
	memset(q, 0, sizeof *q);
	q->loop = loop;
	q->idle_ms = idle_ms;
	q->expire = expire;
	rio_op_init(&q->sweep_op);
	rio_op_init(&q->cancel_op);
}

void tool_idle_start(struct tool_idle *q)
{
	if (q->idle_ms && !rio_op_in_flight(&q->sweep_op))
		arm_sweep(q);
}

void tool_idle_stop(struct tool_idle *q)
{
	q->stopped = 1;
	if (rio_op_in_flight(&q->sweep_op) && !rio_op_in_flight(&q->cancel_op))
		rio_cancel(q->loop, &q->cancel_op, &q->sweep_op, nop_cb);
}

void tool_idle_add(struct tool_idle *q, struct tool_idle_node *n)
{
	n->active_ms = q->idle_ms ? now_ms() : 0;
	n->next = NULL;
	n->prev = q->tail;
	*(q->tail ? &q->tail->next : &q->head) = n;
	q->tail = n;
}

void tool_idle_del(struct tool_idle *q, struct tool_idle_node *n)
{
	*(n->prev ? &n->prev->next : &q->head) = n->next;
	*(n->next ? &n->next->prev : &q->tail) = n->prev;
	n->prev = n->next = NULL;
}

void tool_idle_touch(struct tool_idle *q, struct tool_idle_node *n)
{
	if (!q->idle_ms)
		return;
	if (q->tail == n) {
		n->active_ms = now_ms();
	} else {
		tool_idle_del(q, n);
		tool_idle_add(q, n);
	}
}

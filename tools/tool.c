#define _GNU_SOURCE
#include "tool.h"

#include <errno.h>
#include <getopt.h>
#include <netdb.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
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

int tool_parse_string(const char *arg, void *dst)
{
	*(const char **)dst = arg;
	return 0;
}

static int add_addr(rio_addr *list, int *n, int max, const rio_addr *a)
{
	for (int i = 0; i < *n; i++)
		if (list[i].len == a->len && !memcmp(&list[i].ss, &a->ss, a->len))
			return 0; /* one name may give an address twice */
	if (*n == max)
		return -ENOSPC;
	list[(*n)++] = *a;
	return 0;
}

int tool_resolve(const char *prog, const char *text, rio_addr *list, int *n,
		 int max)
{
	rio_addr a;
	int r = rio_addr_parse(text, &a);
	const char *colon = strrchr(text, ':');
	long port;
	if (r == 0) {
		r = add_addr(list, n, max, &a);
	} else if (!strncmp(text, "unix:", 5) || text[0] == '[' || !colon ||
		   colon == text || strchr(text, ':') != colon ||
		   tool_parse_long(colon + 1, 0, 65535, &port) < 0) {
		fprintf(stderr, "%s: '%s' is not an address: give IP:PORT, "
			"[IPv6]:PORT, NAME:PORT, unix:PATH or unix:@NAME%s\n",
			prog, text,
			r == -ENAMETOOLONG ? " (a unix name takes 107 bytes at "
					     "most)" : "");
		return -EINVAL;
	} else {
		char host[256];
		size_t hl = (size_t)(colon - text);
		if (hl >= sizeof host) {
			fprintf(stderr, "%s: host name too long in '%s'\n", prog,
				text);
			return -EINVAL;
		}
		memcpy(host, text, hl);
		host[hl] = '\0';
		struct addrinfo hints = {.ai_socktype = SOCK_STREAM,
					 .ai_flags = AI_NUMERICSERV};
		struct addrinfo *res = NULL;
		int g = getaddrinfo(host, colon + 1, &hints, &res);
		if (g) {
			fprintf(stderr, "%s: cannot resolve '%s': %s\n", prog,
				host, gai_strerror(g));
			return -EINVAL;
		}
		r = 0;
		for (struct addrinfo *ai = res; ai && !r; ai = ai->ai_next) {
			if ((ai->ai_family != AF_INET && ai->ai_family != AF_INET6) ||
			    ai->ai_addrlen > sizeof a.ss)
				continue;
			memset(&a, 0, sizeof a);
			memcpy(&a.ss, ai->ai_addr, ai->ai_addrlen);
			a.len = ai->ai_addrlen;
			r = add_addr(list, n, max, &a);
		}
		freeaddrinfo(res);
	}
	if (r == -ENOSPC)
		fprintf(stderr, "%s: more than %d addresses (with '%s')\n", prog,
			max, text);
	return r ? -EINVAL : 0;
}

static int parse_backend(const char *arg, void *dst)
{
	int v = rio_backend_parse(arg);
	if (v < 0)
		return -EINVAL;
	*(rio_backend_kind *)dst = (rio_backend_kind)v;
	return 0;
}

static int parse_buf_count(const char *arg, void *dst)
{
	long v;
	if (tool_parse_long(arg, 1, 32768, &v) || (v & (v - 1)))
		return -EINVAL; /* not a power of 2 */
	*(unsigned *)dst = (unsigned)v;
	return 0;
}

static int parse_splice(const char *arg, void *dst)
{
	static const char *const names[] = {[RIO_SPLICE_OFF] = "off",
					    [RIO_SPLICE_AUTO] = "auto",
					    [RIO_SPLICE_ON] = "on"};
	for (int i = 0; i < 3; i++)
		if (!strcmp(arg, names[i])) {
			*(rio_splice_mode *)dst = (rio_splice_mode)i;
			return 0;
		}
	return -EINVAL;
}

static int set_flag(const struct tool_flag *f, const char *arg)
{
	long v;
	if (f->parse)
		return f->parse(arg, f->dst);
	if (f->size == 0) { /* a switch */
		*(int *)f->dst = 1;
		return 0;
	}
	if (tool_parse_long(arg, f->lo, f->hi, &v) < 0)
		return -EINVAL;
	if (f->size == sizeof(uint32_t)) { /* int or unsigned */
		uint32_t u = (uint32_t)v;
		memcpy(f->dst, &u, sizeof u);
	} else { /* uint64_t or size_t */
		uint64_t u = (uint64_t)v;
		memcpy(f->dst, &u, sizeof u);
	}
	return 0;
}

enum { MAX_FLAGS = 32 };

/* Append the flags of `table` to all[n...]; returns the new count. */
static int add_flags(const struct tool_flag **all, int n,
		     const struct tool_flag *table)
{
	for (const struct tool_flag *f = table; f->name; f++) {
		/* a mistake in the table, not on the command line */
		if (n == MAX_FLAGS ||
		    (!f->parse && f->size != 0 && f->size != 4 && f->size != 8))
			abort();
		all[n++] = f;
	}
	return n;
}

int tool_parse_flags(const char *prog, int argc, char **argv,
		     const struct tool_flag *flags, struct tool_common *com,
		     void (*usage)(FILE *f))
{
	const struct tool_flag common[] = {
		TOOL_NUM("threads", 't', com->threads, 1, TOOL_MAX_THREADS),
		TOOL_ARG("backend", 'b', parse_backend, &com->backend),
		TOOL_NUM("idle-timeout", 'i', com->idle_ms, 0, 86400000),
		TOOL_ARG("buf-count", 'n', parse_buf_count, &com->buf_count),
		TOOL_NUM("buf-size", 's', com->buf_size, 64, 1 << 24),
		TOOL_ARG("splice", 'S', parse_splice, &com->splice),
		TOOL_FLAGS_END,
	};
	const struct tool_flag *all[MAX_FLAGS];
	int n = add_flags(all, add_flags(all, 0, flags), common);
	/* getopt_long's view of them: "x:" for each, and --help */
	struct option opts[MAX_FLAGS + 2];
	char letters[2 * MAX_FLAGS + 2];
	size_t nl = 0;
	for (int i = 0; i < n; i++) {
		int sw = !all[i]->parse && all[i]->size == 0;
		opts[i] = (struct option){all[i]->name,
					  sw ? no_argument : required_argument,
					  NULL, all[i]->letter};
		letters[nl++] = all[i]->letter;
		if (!sw)
			letters[nl++] = ':';
	}
	opts[n] = (struct option){"help", no_argument, NULL, 'h'};
	opts[n + 1] = (struct option){0};
	memcpy(&letters[nl], "h", 2);

	int c;
	while ((c = getopt_long(argc, argv, letters, opts, NULL)) != -1) {
		if (c == 'h') {
			usage(stdout);
			exit(0);
		}
		int i = 0;
		while (i < n && all[i]->letter != c)
			i++;
		if (i == n) { /* getopt said what is wrong */
			usage(stderr);
			return -EINVAL;
		}
		if (set_flag(all[i], optarg) < 0) {
			fprintf(stderr, "%s: invalid value for --%s: '%s'\n",
				prog, all[i]->name, optarg);
			return -EINVAL;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "%s: unexpected argument '%s'\n", prog,
			argv[optind]);
		return -EINVAL;
	}
	return 0;
}

static rio_loop *_Atomic loops[TOOL_MAX_THREADS];
static atomic_int stopping;
static atomic_uint stops;   /* tool_stop_all calls: a worker's phase */
static atomic_int running;  /* workers whose loops have not finished */
/* SIGINT and SIGTERM, as completions on worker 0's loop (rio_signal) */
static rio_loop *sig_loop;
static rio_op sig_op, sig_cancel;

/* A loop registers before it checks `stopping`, and a stop sets
 * `stopping` before it reads the loops: one of the two sees the other. */
void tool_stop_all(void)
{
	atomic_store(&stopping, 1);
	atomic_fetch_add(&stops, 1);
	for (int i = 0; i < TOOL_MAX_THREADS; i++) {
		rio_loop *l = atomic_load(&loops[i]);
		if (l)
			rio_loop_stop(l);
	}
}

void tool_stop_on_signal(int i, rio_loop *loop)
{
	if (i < 0 || i >= TOOL_MAX_THREADS)
		return;
	atomic_store(&loops[i], loop);
	if (atomic_load(&stopping))
		rio_loop_stop(loop);
}

static void on_signal(rio_loop *loop, rio_op *op, int res)
{
	(void)loop;
	(void)op;
	if (res > 0) /* SIGINT or SIGTERM; the final: cancelled at exit */
		tool_stop_all();
}

static void nop_cb(rio_loop *loop, rio_op *op, int res)
{
	(void)loop;
	(void)op;
	(void)res;
}

int tool_catch_signals(const char *prog, rio_loop *loop)
{
	/* blocked on this thread by rio_signal; the workers' threads, created
	 * after this, inherit the mask */
	int r = rio_signal(loop, &sig_op, RIO_SIG(SIGINT) | RIO_SIG(SIGTERM),
			   on_signal);
	if (r < 0)
		fprintf(stderr, "%s: cannot take SIGINT/SIGTERM: %s\n", prog,
			rio_strerror(r));
	else
		sig_loop = loop;
	return r;
}

/* Run w's loop until a stop (returns what is in flight) or until nothing
 * of the worker's is (0), or -errno. Worker 0's loop also holds the signal
 * op, which does not count: it stays until every other worker is done (a
 * second signal must still reach them), then is cancelled. */
static int run_phase(struct tool_worker *w, unsigned *seen)
{
	if (w->loop != sig_loop) {
		int r = rio_loop_run(w->loop, RIO_RUN_DEFAULT);
		*seen = atomic_load(&stops);
		return r;
	}
	for (;;) {
		int r = rio_loop_run(w->loop, RIO_RUN_ONCE);
		unsigned now = atomic_load(&stops);
		if (r < 0 || now != *seen) {
			*seen = now;
			return r;
		}
		int own = rio_op_in_flight(&sig_op);
		if (r > own || (own && atomic_load(&running) > 1))
			continue; /* a later turn */
		if (!own)
			return 0;
		if (!rio_op_in_flight(&sig_cancel))
			rio_cancel(w->loop, &sig_cancel, &sig_op, nop_cb);
	}
}

int tool_run_threads(const char *prog, void *first, size_t stride, int n,
		     void *(*run)(void *))
{
	pthread_t tid[TOOL_MAX_THREADS];
	char *w = first;
	int started = 1, err = 0;
	atomic_store(&running, n);
	for (; started < n; started++) {
		err = pthread_create(&tid[started], NULL, run,
				     w + (size_t)started * stride);
		if (err) { /* the ones started stop; the process exits 1 */
			fprintf(stderr, "%s: cannot start thread %d of %d: %s\n",
				prog, started + 1, n, strerror(err));
			atomic_fetch_sub(&running, n - started);
			tool_stop_all();
			break;
		}
	}
	run(w);
	for (int i = 1; i < started; i++)
		pthread_join(tid[i], NULL);
	return err ? -err : 0;
}

void tool_add_u64s(void *total, const void *add, size_t size)
{
	uint64_t *t = total;
	const uint64_t *a = add;
	for (size_t i = 0; i < size / sizeof *a; i++)
		t[i] += a[i];
}

/* rio_counters is a run of uint64_t and nothing else. */
_Static_assert(sizeof(rio_counters) % sizeof(uint64_t) == 0,
	       "rio_counters holds only uint64_t fields");
/* rio_accept_counters: the nine uint64_t counters that are summed and
 * printed, then `live` and `last_error`, which are not. */
_Static_assert(offsetof(rio_accept_counters, live) == 9 * sizeof(uint64_t),
	       "a new accept counter: print it in tool_print_counters");

void tool_count(struct tool_counters *sum, const rio_loop *loop,
		rio_listener *const *l, int n)
{
	if (!loop)
		return;
	rio_counters c;
	rio_loop_counters(loop, &c);
	tool_add_u64s(&sum->loop, &c, sizeof c);
	for (int i = 0; i < n; i++) {
		rio_accept_counters a;
		if (!l[i])
			continue;
		rio_listener_counters(l[i], &a);
		tool_add_u64s(&sum->accept, &a,
			      offsetof(rio_accept_counters, live));
	}
}

void tool_print_counters(const char *prog, const struct tool_counters *sum,
			 const char *fmt, ...)
{
	const rio_accept_counters *a = &sum->accept;
	const rio_counters *t = &sum->loop;
	va_list ap;
	printf("%s: accepted=%" PRIu64 " client_errors=%" PRIu64
	       " network_errors=%" PRIu64 " load_errors=%" PRIu64
	       " error_pauses=%" PRIu64 " early_resumes=%" PRIu64
	       " limit_pauses=%" PRIu64 " shed=%" PRIu64
	       " fatal_errors=%" PRIu64,
	       prog, a->accepted, a->client_errors, a->network_errors,
	       a->load_errors, a->error_pauses, a->early_resumes,
	       a->limit_pauses, a->shed, a->fatal_errors);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n%s: ops=%" PRIu64 " completions=%" PRIu64
	       " enters=%" PRIu64 " cq_overflows=%" PRIu64
	       " enobufs_rearms=%" PRIu64 " multishot_rearms=%" PRIu64
	       " spurious_wakeups=%" PRIu64 " faults_injected=%" PRIu64 "\n",
	       prog, t->ops_submitted, t->completions, t->enters,
	       t->cq_overflows, t->enobufs_rearms, t->multishot_rearms,
	       t->spurious_wakeups, t->faults_injected);
	fflush(stdout);
}

/* ---- before start ---- */

static unsigned long long read_ull(const char *path, const char *fmt)
{
	FILE *f = fopen(path, "re");
	char line[128];
	unsigned long long v = 0;
	if (!f)
		return 0;
	while (fgets(line, sizeof line, f))
		if (sscanf(line, fmt, &v) == 1)
			break;
	fclose(f);
	return v;
}

/* Memory this process can still have, in bytes (0: unknown): the
 * machine's MemAvailable, or less where a cgroup (v2) caps it. */
static uint64_t mem_available(void)
{
	uint64_t have = (uint64_t)read_ull("/proc/meminfo",
					   "MemAvailable: %llu kB") * 1024;
	uint64_t max = read_ull("/sys/fs/cgroup/memory.max", "%llu");
	uint64_t cur = read_ull("/sys/fs/cgroup/memory.current", "%llu");
	if (max && max > cur && (!have || max - cur < have))
		have = max - cur;
	return have;
}

static int backend_preflight(const char *prog, const struct tool_common *com)
{
	const char *env = getenv("RINGIO_BACKEND");
	int from_env = env && *env;
	if (from_env && rio_backend_parse(env) < 0) {
		fprintf(stderr, "%s: RINGIO_BACKEND='%s' names no backend: use "
			"auto, uring, epoll or kqueue, or unset it\n", prog, env);
		return -EINVAL;
	}
	rio_backend_kind want = from_env ? (rio_backend_kind)rio_backend_parse(env)
					 : com->backend;
	const char *how = from_env ? "RINGIO_BACKEND=" : "--backend ";
	const char *name = rio_backend_name(want);
	rio_loop_opts o = {.backend = com->backend};
	rio_loop *loop;
	int r = rio_loop_create(&loop, &o);
	if (r == 0)
		return rio_loop_destroy(loop) < 0 ? -EINVAL : 0;
	if (r == -ENOSYS) {
		fprintf(stderr, "%s: %s%s: this build of libringio has no %s "
			"backend (kqueue: the BSDs, macOS, or Linux with "
			"libkqueue); use auto\n", prog, how, name, name);
		return -EINVAL;
	}
	if (want == RIO_BACKEND_URING) {
		/* what auto sees says why io_uring is refused */
		rio_loop_opts a = {.backend = RIO_BACKEND_AUTO};
		const char *why = rio_strerror(r);
		rio_loop *l2 = NULL;
		char saved[64] = "";
		if (from_env) { /* no thread runs yet: the environment is ours */
			snprintf(saved, sizeof saved, "%s", env);
			unsetenv("RINGIO_BACKEND");
		}
		if (rio_loop_create(&l2, &a) == 0)
			rio_loop_backend(l2, NULL, &why);
		if (from_env)
			setenv("RINGIO_BACKEND", saved, 1);
		fprintf(stderr, "%s: %suring: io_uring cannot be used here (%s; "
			"%s); use --backend auto, which falls back to epoll\n",
			prog, how, rio_strerror(r), why);
		if (l2)
			rio_loop_destroy(l2);
		return -EINVAL;
	}
	fprintf(stderr, "%s: cannot create a %s loop: %s\n", prog, name,
		rio_strerror(r));
	return -EINVAL;
}

int tool_preflight(const char *prog, const struct tool_common *com)
{
	int r = backend_preflight(prog, com);
	if (r < 0)
		return r;
	/* Pools are touched at start: all of it is committed at once. Three
	 * quarters of what is available, so that socket buffers and the rest
	 * still fit. */
	uint64_t need = (uint64_t)com->threads * com->buf_count * com->buf_size;
	uint64_t have = mem_available() / 4 * 3;
	if (have && need > have) {
		fprintf(stderr, "%s: %d thread(s) x --buf-count %u x --buf-size "
			"%zu = %llu MiB of buffers, more than the %llu MiB (3/4 "
			"of the memory available) it may take: use fewer "
			"threads or a smaller pool\n",
			prog, com->threads, com->buf_count, com->buf_size,
			(unsigned long long)(need >> 20),
			(unsigned long long)(have >> 20));
		return -EINVAL;
	}
	return 0;
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

/* The worker is done: one fewer for worker 0's loop to wait for. */
static void worker_done(void)
{
	atomic_fetch_sub(&running, 1);
	if (sig_loop)
		rio_loop_wake(sig_loop);
}

void *tool_worker_run(void *arg)
{
	struct tool_worker *w = arg;
	unsigned seen = 0;
	if (w->idx > 0 && tool_worker_start(w) < 0) {
		tool_stop_all(); /* the process exits 1 */
		worker_done();
		return NULL;
	}
	int r = run_phase(w, &seen);
	if (r >= 0) { /* stopped by a signal, or nothing left */
		w->ops->stop(w);
		r = run_phase(w, &seen);
		if (r > 0) { /* a second signal: no more waiting */
			rio_loop_cancel_all(w->loop);
			do /* a third and later: nothing more to do */
				r = run_phase(w, &seen);
			while (r > 0);
		}
	}
	if (r < 0) {
		fprintf(stderr, "%s: loop: %s\n", w->ops->prog, rio_strerror(r));
		w->err = r;
	}
	worker_done();
	return NULL;
}

/* ---- a list of connections ---- */

void tool_list_add(struct tool_list *q, struct tool_node *n)
{
	n->next = NULL;
	n->prev = q->tail;
	*(q->tail ? &q->tail->next : &q->head) = n;
	q->tail = n;
}

void tool_list_del(struct tool_list *q, struct tool_node *n)
{
	*(n->prev ? &n->prev->next : &q->head) = n->next;
	*(n->next ? &n->next->prev : &q->tail) = n->prev;
	n->prev = n->next = NULL;
}

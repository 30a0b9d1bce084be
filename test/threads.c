/*
 * threads — the library's cross-thread paths, as a plain program so that it
 * runs under ThreadSanitizer (Criterion's shared arena does not start under
 * TSan). ctest runs it in every build; test/run.sh --tsan runs it (and the
 * tools, threaded) in a -fsanitize=thread build, where a data race makes
 * the process exit non-zero.
 *
 *   threads                 the library checks, on $RINGIO_BACKEND
 *   threads --tool BIN ...  run a threaded tool (ringio-echo) on a free
 *                           port, echo through it from several client
 *                           threads, stop it with SIGTERM, and require
 *                           exit status 0 and every byte back
 *
 * Every wait is bounded; a failed check prints what and exits 1.
 */
#define _GNU_SOURCE
#include <ringio.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

#define CHECK(cond, ...)                                                   \
	do {                                                               \
		if (!(cond)) {                                             \
			fprintf(stderr, "threads: %s:%d: %s: ", __FILE__,  \
				__LINE__, #cond);                          \
			fprintf(stderr, __VA_ARGS__);                      \
			fputc('\n', stderr);                               \
			exit(1);                                           \
		}                                                          \
	} while (0)

static uint64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Join `th` within `ms`, or fail saying `what`. */
static void join_within(pthread_t th, unsigned ms, const char *what)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += ms / 1000;
	ts.tv_nsec += (long)(ms % 1000) * 1000000;
	if (ts.tv_nsec >= 1000000000) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000;
	}
	int r = pthread_timedjoin_np(th, NULL, &ts);
	CHECK(r == 0, "%s: not done within %u ms (%s)", what, ms, strerror(r));
}

static rio_loop *new_loop(void)
{
	rio_loop *loop;
	int r = rio_loop_create(&loop, NULL); /* RINGIO_BACKEND picks */
	CHECK(r == 0, "rio_loop_create: %s", rio_strerror(r));
	return loop;
}

/* ---- posts from many threads into a loop run on another ---- */

enum { POSTERS = 4, POSTS = 500 };

struct post {
	rio_op op;
	int calls;      /* loop thread only */
	int res;
	pthread_t ran_on;
};

struct storm {
	rio_loop *loop;
	pthread_t loop_thread;
	struct post posts[POSTERS][POSTS];
	atomic_int posted, ran;
	int post_rc[POSTERS];
	rio_op keep;      /* a long timer: RUN_DEFAULT blocks between posts */
	rio_op stopper;   /* cancels `keep` once every post has run */
	int run_rc;
	atomic_int loop_ready;
};

static struct storm sm;

static void keep_cb(rio_loop *loop, rio_op *op, int res)
{
	(void)loop, (void)op, (void)res;
}

static void post_cb(rio_loop *loop, rio_op *op, int res)
{
	struct post *p = (struct post *)op;
	p->calls++;
	p->res = res;
	p->ran_on = pthread_self();
	if (atomic_fetch_add(&sm.ran, 1) + 1 == POSTERS * POSTS)
		rio_cancel(loop, &sm.stopper, &sm.keep, keep_cb);
}

static void *poster_main(void *arg)
{
	int i = (int)(intptr_t)arg;
	while (!atomic_load(&sm.loop_ready))
		usleep(1000);
	for (int j = 0; j < POSTS; j++) {
		int r = rio_post(sm.loop, &sm.posts[i][j].op, post_cb);
		if (r < 0) {
			sm.post_rc[i] = r;
			return NULL;
		}
		atomic_fetch_add(&sm.posted, 1);
		if (j % 64 == 0)
			rio_loop_wake(sm.loop); /* wakes racing posts */
	}
	return NULL;
}

/* Created on main, first run here: this thread owns the loop. */
static void *storm_loop_main(void *arg)
{
	(void)arg;
	sm.loop_thread = pthread_self();
	atomic_store(&sm.loop_ready, 1);
	sm.run_rc = rio_loop_run(sm.loop, RIO_RUN_DEFAULT);
	return NULL;
}

static void check_posts(void)
{
	pthread_t lt, pt[POSTERS];
	uint64_t t0 = now_ms();

	sm.loop = new_loop();
	/* Submitted on the creating thread, before the owner runs it. */
	rio_op_init(&sm.keep);
	CHECK(rio_timeout(sm.loop, &sm.keep, 60ull * 1000000000, keep_cb) == 0,
	      "timeout");
	CHECK(pthread_create(&lt, NULL, storm_loop_main, NULL) == 0, "thread");
	for (int i = 0; i < POSTERS; i++)
		CHECK(pthread_create(&pt[i], NULL, poster_main,
				     (void *)(intptr_t)i) == 0, "thread");
	for (int i = 0; i < POSTERS; i++)
		pthread_join(pt[i], NULL);
	/* ends when the last post cancels `keep` */
	join_within(lt, 30000, "the posts' run");
	CHECK(now_ms() - t0 < 30000, "took %llu ms",
	      (unsigned long long)(now_ms() - t0));
	CHECK(sm.run_rc == 0, "run: %d", sm.run_rc);
	for (int i = 0; i < POSTERS; i++)
		CHECK(sm.post_rc[i] == 0, "rio_post: %s",
		      rio_strerror(sm.post_rc[i]));
	CHECK(atomic_load(&sm.ran) == POSTERS * POSTS, "ran %d of %d",
	      atomic_load(&sm.ran), POSTERS * POSTS);
	for (int i = 0; i < POSTERS; i++)
		for (int j = 0; j < POSTS; j++) {
			struct post *p = &sm.posts[i][j];
			CHECK(p->calls == 1 && p->res == 0,
			      "post %d/%d: %d calls, res %d", i, j, p->calls,
			      p->res);
			CHECK(pthread_equal(p->ran_on, sm.loop_thread),
			      "post %d/%d ran off the loop thread", i, j);
		}
	/* The owner has exited; nothing is in flight. */
	CHECK(rio_loop_destroy(sm.loop) == 0, "destroy");
}

/* ---- rio_loop_stop from another thread, many times ---- */

enum { STOPS = 200 };

struct stopper {
	rio_loop *loop;
	atomic_int round;  /* the loop thread's turn number */
	atomic_int acked;  /* stops the stopper thread has sent */
};

static void *stopper_main(void *arg)
{
	struct stopper *s = arg;
	uint64_t deadline = now_ms() + 30000;
	for (int i = 1; i <= STOPS && now_ms() < deadline; i++) {
		while (atomic_load(&s->round) < i && now_ms() < deadline)
			usleep(100);
		rio_loop_stop(s->loop);
		atomic_store(&s->acked, i);
	}
	return NULL;
}

static void check_stops(void)
{
	struct stopper s = {.loop = new_loop()};
	rio_op keep;
	pthread_t th;

	rio_op_init(&keep);
	CHECK(rio_timeout(s.loop, &keep, 60ull * 1000000000, keep_cb) == 0,
	      "timeout");
	CHECK(pthread_create(&th, NULL, stopper_main, &s) == 0, "thread");
	for (int i = 1; i <= STOPS; i++) {
		atomic_store(&s.round, i);
		/* Blocks on the 60 s timer until stop i arrives. */
		int r = rio_loop_run(s.loop, RIO_RUN_DEFAULT);
		CHECK(r == 1, "run %d returned %d", i, r);
		CHECK(atomic_load(&s.acked) >= i - 1, "stop %d", i);
	}
	pthread_join(th, NULL);
	rio_op cancel;
	rio_op_init(&cancel);
	CHECK(rio_cancel(s.loop, &cancel, &keep, keep_cb) == 0, "cancel");
	CHECK(rio_loop_run(s.loop, RIO_RUN_DEFAULT) == 0, "drain");
	CHECK(rio_loop_destroy(s.loop) == 0, "destroy");
}

/* ---- a threaded tool under load ---- */

enum { CLIENTS = 8, ROUNDS = 300, MSG = 512 };

static uint16_t tool_port;
static atomic_int client_fail;

static int connect_port(uint16_t port)
{
	struct sockaddr_in a = {.sin_family = AF_INET,
				.sin_port = htons(port),
				.sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0) {
		int e = errno;
		close(fd);
		return -e;
	}
	struct timeval tv = {.tv_sec = 10};
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	return fd;
}

static void *client_main(void *arg)
{
	unsigned seed = (unsigned)(uintptr_t)arg;
	char out[MSG], in[MSG];
	int fd = connect_port(tool_port);
	if (fd < 0) {
		fprintf(stderr, "threads: connect: %s\n", strerror(-fd));
		atomic_fetch_add(&client_fail, 1);
		return NULL;
	}
	for (int r = 0; r < ROUNDS; r++) {
		for (int i = 0; i < MSG; i++)
			out[i] = (char)rand_r(&seed);
		if (send(fd, out, MSG, MSG_NOSIGNAL) != MSG)
			goto fail;
		for (size_t got = 0; got < MSG;) {
			ssize_t n = recv(fd, in + got, MSG - got, 0);
			if (n <= 0)
				goto fail;
			got += (size_t)n;
		}
		if (memcmp(in, out, MSG) != 0)
			goto fail;
	}
	close(fd);
	return NULL;
fail:
	fprintf(stderr, "threads: client echo failed: %s\n", strerror(errno));
	atomic_fetch_add(&client_fail, 1);
	close(fd);
	return NULL;
}

static uint16_t free_port(void)
{
	struct sockaddr_in a = {.sin_family = AF_INET,
				.sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof a;
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	CHECK(fd >= 0, "socket");
	CHECK(bind(fd, (struct sockaddr *)&a, sizeof a) == 0, "bind");
	CHECK(getsockname(fd, (struct sockaddr *)&a, &len) == 0, "getsockname");
	close(fd);
	return ntohs(a.sin_port);
}

static int run_tool(int argc, char **argv)
{
	char port[16];
	char *args[32];
	int n = 0;
	pid_t pid;
	int st;

	CHECK(argc >= 1 && argc < 28, "usage: threads --tool BIN [ARGS...]");
	tool_port = free_port();
	snprintf(port, sizeof port, "%u", tool_port);
	for (int i = 0; i < argc; i++)
		args[n++] = argv[i];
	args[n++] = "--port";
	args[n++] = port;
	args[n] = NULL;
	CHECK(posix_spawn(&pid, argv[0], NULL, NULL, args, environ) == 0,
	      "spawn %s", argv[0]);
	/* Up to 10 s for it to listen. */
	int fd = -1;
	for (uint64_t end = now_ms() + 10000; now_ms() < end; usleep(20000))
		if ((fd = connect_port(tool_port)) >= 0)
			break;
	CHECK(fd >= 0, "%s never listened on %u", argv[0], tool_port);
	close(fd);

	pthread_t th[CLIENTS];
	for (int i = 0; i < CLIENTS; i++)
		CHECK(pthread_create(&th[i], NULL, client_main,
				     (void *)(uintptr_t)(i + 1)) == 0, "thread");
	for (int i = 0; i < CLIENTS; i++)
		pthread_join(th[i], NULL);
	kill(pid, SIGTERM);
	/* Up to 20 s to exit (TSan's report and shutdown are slow). */
	pid_t w = 0;
	for (uint64_t end = now_ms() + 20000; now_ms() < end; usleep(20000))
		if ((w = waitpid(pid, &st, WNOHANG)) != 0)
			break;
	if (w == 0) {
		kill(pid, SIGKILL);
		waitpid(pid, &st, 0);
		CHECK(0, "%s did not exit within 20 s of SIGTERM", argv[0]);
	}
	CHECK(atomic_load(&client_fail) == 0, "%d client(s) failed",
	      atomic_load(&client_fail));
	CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0,
	      "%s: status %d (a sanitizer report exits non-zero)", argv[0],
	      WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st));
	printf("threads: %s: %d clients x %d echoes of %d B through it, exit 0\n",
	       argv[0], CLIENTS, ROUNDS, MSG);
	return 0;
}

/* ---- a wakeup handle sent to from many threads ---- */

enum { WAKERS = 4, WAKES = 3000 };

static struct {
	rio_loop *loop;
	rio_op op, cancel, stop;
	atomic_int sent, loop_ready, seen, reached;
	int calls, finals, final_res, run_rc;
	int payload[WAKERS]; /* written before each send, read by the loop */
} wk;

static void wake_cb(rio_loop *loop, rio_op *op, int res)
{
	if (!(op->flags & RIO_OP_F_MORE)) {
		wk.finals++;
		wk.final_res = res;
		return;
	}
	wk.calls++;
	/* `sent` first: each waker adds to its payload before `sent`, so
	 * every payload counted in what this reads is seen below */
	int seen = atomic_load(&wk.sent);
	int sum = 0;
	for (int i = 0; i < WAKERS; i++)
		sum += __atomic_load_n(&wk.payload[i], __ATOMIC_ACQUIRE);
	atomic_store(&wk.seen, seen);
	if (seen == WAKERS * WAKES && !atomic_load(&wk.reached)) {
		CHECK(sum == WAKERS * WAKES, "the loop saw %d of %d", sum,
		      WAKERS * WAKES);
		atomic_store(&wk.reached, 1);
	}
}

/* Posted once the wakers are joined: no send is running, so the cancel
 * keeps what rio_wakeup_start(3) asks and the op could be reused after
 * its final completion. */
static void wake_stop_cb(rio_loop *loop, rio_op *op, int res)
{
	(void)op;
	CHECK(res == 0, "post: %d", res);
	CHECK(rio_cancel(loop, &wk.cancel, &wk.op, keep_cb) == 0, "cancel");
}

static void *waker_main(void *arg)
{
	int i = (int)(intptr_t)arg;
	while (!atomic_load(&wk.loop_ready))
		usleep(1000);
	for (int j = 0; j < WAKES; j++) {
		__atomic_fetch_add(&wk.payload[i], 1, __ATOMIC_RELEASE);
		atomic_fetch_add(&wk.sent, 1);
		CHECK(rio_wakeup_send(wk.loop, &wk.op) == 0, "send");
	}
	return NULL;
}

static void *wake_loop_main(void *arg)
{
	(void)arg;
	atomic_store(&wk.loop_ready, 1);
	wk.run_rc = rio_loop_run(wk.loop, RIO_RUN_DEFAULT);
	return NULL;
}

/* WAKERS threads send to a wakeup handle of a loop that runs on its own
 * thread in RIO_RUN_DEFAULT with nothing else in flight: it keeps running
 * on the handle alone, and a callback sees every send (none is lost while
 * they merge). Then, the wakers joined, a post cancels the handle, and
 * the run returns. */
static void check_wakeups(void)
{
	pthread_t lt, wt[WAKERS];
	uint64_t t0 = now_ms();
	wk.loop = new_loop();
	CHECK(rio_wakeup_start(wk.loop, &wk.op, wake_cb) == 0, "start");
	CHECK(pthread_create(&lt, NULL, wake_loop_main, NULL) == 0, "thread");
	for (int i = 0; i < WAKERS; i++)
		CHECK(pthread_create(&wt[i], NULL, waker_main,
				     (void *)(intptr_t)i) == 0, "thread");
	for (int i = 0; i < WAKERS; i++)
		pthread_join(wt[i], NULL);
	for (uint64_t end = now_ms() + 10000;
	     !atomic_load(&wk.reached) && now_ms() < end;)
		usleep(1000);
	CHECK(atomic_load(&wk.reached),
	      "a send was lost: the callbacks saw %d of %d within 10 s",
	      atomic_load(&wk.seen), WAKERS * WAKES);
	CHECK(rio_post(wk.loop, &wk.stop, wake_stop_cb) == 0, "post");
	join_within(lt, 10000, "the run after the cancel");
	CHECK(now_ms() - t0 < 20000, "took %llu ms",
	      (unsigned long long)(now_ms() - t0));
	CHECK(wk.run_rc == 0, "run returned %d", wk.run_rc);
	CHECK(wk.finals == 1 && wk.final_res == -ECANCELED, "final %d (%d)",
	      wk.final_res, wk.finals);
	CHECK(wk.calls >= 1 && wk.calls <= WAKERS * WAKES, "%d callbacks",
	      wk.calls);
	CHECK(rio_loop_destroy(wk.loop) == 0, "destroy");
}

/* ---- a send merged into one already pending, seen by its callback ---- */

enum { MERGES = 300 };

static struct {
	rio_loop *loop;
	rio_op handle, hold, stop, cancel;
	int round;       /* written before each post: the post orders it */
	int data;        /* plain: written between the two sends */
	int calls;       /* loop thread only */
	atomic_int inside, go, ack;
	int run_rc;
} mg;

/* Keeps the loop thread busy (so nothing drains the woken handles) until
 * the main thread has sent twice; `inside` and `go` are relaxed, so they
 * order nothing between the threads. */
static void hold_cb(rio_loop *loop, rio_op *op, int res)
{
	(void)loop, (void)op;
	CHECK(res == 0, "post: %d", res);
	int r = mg.round;
	atomic_store_explicit(&mg.inside, r, memory_order_relaxed);
	uint64_t end = now_ms() + 10000;
	while (atomic_load_explicit(&mg.go, memory_order_relaxed) != r) {
		CHECK(now_ms() < end, "round %d: the sends never came", r);
		sched_yield(); /* valgrind runs one thread at a time */
	}
}

static void merged_cb(rio_loop *loop, rio_op *op, int res)
{
	(void)loop, (void)res;
	if (!(op->flags & RIO_OP_F_MORE))
		return;
	mg.calls++;
	/* only the library orders this read after the main thread's write
	 * (the second send's exchange, through the drain's); under TSan a
	 * missing edge is a reported race */
	CHECK(mg.data == mg.round, "round %d: the callback read %d", mg.round,
	      mg.data);
	atomic_store_explicit(&mg.ack, mg.round, memory_order_release);
}

static void merged_stop_cb(rio_loop *loop, rio_op *op, int res)
{
	(void)op, (void)res;
	CHECK(rio_cancel(loop, &mg.cancel, &mg.handle, keep_cb) == 0, "cancel");
}

static void *merged_loop_main(void *arg)
{
	(void)arg;
	mg.run_rc = rio_loop_run(mg.loop, RIO_RUN_DEFAULT);
	return NULL;
}

/* Each round, while the loop thread is held inside a post's callback,
 * the main thread sends (a push: the handle was idle), writes `data`,
 * and sends again: that second send finds the first one pending and
 * merges, pushing nothing. The callback that follows must see `data`.
 * It is the drain's acquire-release exchange of `pending` that orders
 * it; with a release store there (before 46dbf52) TSan reports a race
 * here, and a CPU may let the callback read the old value. */
static void check_merged_sends(void)
{
	pthread_t lt;
	mg.loop = new_loop();
	CHECK(rio_wakeup_start(mg.loop, &mg.handle, merged_cb) == 0, "start");
	CHECK(pthread_create(&lt, NULL, merged_loop_main, NULL) == 0,
	      "thread");
	for (int r = 1; r <= MERGES; r++) {
		uint64_t end = now_ms() + 10000;
		mg.round = r;
		CHECK(rio_post(mg.loop, &mg.hold, hold_cb) == 0, "post");
		while (atomic_load_explicit(&mg.inside, memory_order_relaxed) !=
		       r) {
			CHECK(now_ms() < end, "round %d: never held", r);
			sched_yield();
		}
		CHECK(rio_wakeup_send(mg.loop, &mg.handle) == 0, "send");
		mg.data = r;
		CHECK(rio_wakeup_send(mg.loop, &mg.handle) == 0, "send");
		atomic_store_explicit(&mg.go, r, memory_order_relaxed);
		while (atomic_load_explicit(&mg.ack, memory_order_acquire) !=
		       r) {
			CHECK(now_ms() < end, "round %d: no callback", r);
			sched_yield();
		}
	}
	CHECK(rio_post(mg.loop, &mg.stop, merged_stop_cb) == 0, "post");
	join_within(lt, 10000, "the run after the cancel");
	CHECK(mg.run_rc == 0, "run returned %d", mg.run_rc);
	CHECK(mg.calls == MERGES, "%d callbacks for %d merged pairs", mg.calls,
	      MERGES);
	CHECK(rio_loop_destroy(mg.loop) == 0, "destroy");
}

int main(int argc, char **argv)
{
	if (argc >= 2 && strcmp(argv[1], "--tool") == 0)
		return run_tool(argc - 2, argv + 2);
	CHECK(argc == 1, "usage: threads [--tool BIN [ARGS...]]");
	check_posts();
	check_stops();
	check_wakeups();
	check_merged_sends();
	printf("threads: %d posts from %d threads into a loop handed to its "
	       "own thread, %d cross-thread stops, %d wakeups from %d threads, "
	       "%d merged sends seen: ok\n", POSTERS * POSTS, POSTERS, STOPS,
	       WAKERS * WAKES, WAKERS, MERGES);
	return 0;
}

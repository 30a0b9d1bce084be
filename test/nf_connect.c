/*
 * nf_connect: rio_connect with a deadline against an address whose SYNs
 * are dropped (test/netfaults.sh sets up the blackhole). Uses only the
 * public API; the backend comes from RINGIO_BACKEND.
 *
 *   nf_connect HOST PORT DEADLINE_MS COUNT MAX_MS
 *
 * Submits COUNT connects at once, each with DEADLINE_MS on it, and then
 * keeps the loop running for another 3 x DEADLINE_MS (a timer) to catch a
 * second completion. Passes (exit 0) when every connect completed exactly
 * once, with -ETIMEDOUT, no sooner than 0.9 x DEADLINE_MS and no later
 * than MAX_MS after it was submitted. Prints one line per connect.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <ringio.h>

enum { MAXN = 64 };

struct conn {
	rio_op op;
	int fd;
	int completions;
	int res;
	double ms;
};

static struct conn conns[MAXN];
static double t0;
static int left;

static double now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static void on_connect(rio_loop *loop, rio_op *op, int res)
{
	struct conn *c = RIO_CONTAINER_OF(op, struct conn, op);
	(void)loop;
	if (c->completions++ == 0) {
		c->res = res;
		c->ms = now_ms() - t0;
		left--;
	}
}

static void on_timer(rio_loop *loop, rio_op *op, int res)
{
	(void)op;
	(void)res;
	rio_loop_stop(loop);
}

int main(int argc, char **argv)
{
	struct sockaddr_storage ss;
	socklen_t sl;
	rio_loop *loop;
	rio_op timer;
	const char *msg = "?";
	int fail = 0;

	if (argc != 6) {
		fprintf(stderr, "usage: nf_connect HOST PORT DEADLINE_MS COUNT MAX_MS\n");
		return 2;
	}
	long port = strtol(argv[2], NULL, 10), deadline = strtol(argv[3], NULL, 10);
	long count = strtol(argv[4], NULL, 10), max_ms = strtol(argv[5], NULL, 10);
	if (port <= 0 || port > 65535 || deadline <= 0 || count <= 0 ||
	    count > MAXN || max_ms <= 0 ||
	    rio_sockaddr(argv[1], (uint16_t)port, &ss, &sl) < 0) {
		fprintf(stderr, "nf_connect: bad arguments\n");
		return 2;
	}
	int r = rio_loop_create(&loop, NULL);
	if (r < 0) {
		fprintf(stderr, "nf_connect: rio_loop_create: %s\n", rio_strerror(r));
		return 1;
	}
	rio_loop_backend(loop, NULL, &msg);
	printf("nf_connect: backend %s\n", msg);

	t0 = now_ms();
	for (long i = 0; i < count; i++) {
		struct conn *c = &conns[i];
		rio_op_init(&c->op);
		c->fd = rio_socket_tcp(ss.ss_family);
		if (c->fd < 0) {
			fprintf(stderr, "nf_connect: socket: %s\n", rio_strerror(c->fd));
			return 1;
		}
		rio_op_set_deadline(&c->op, (uint64_t)deadline * 1000000ull);
		r = rio_connect(loop, &c->op, c->fd, (struct sockaddr *)&ss, sl,
				on_connect);
		if (r < 0) {
			fprintf(stderr, "nf_connect: rio_connect: %s\n", rio_strerror(r));
			return 1;
		}
		left++;
	}
	/* All must be done by max_ms; then watch 3 deadlines more for a
	 * second completion. The timer bounds the whole run. */
	rio_op_init(&timer);
	rio_timeout(loop, &timer, (uint64_t)(max_ms + 3 * deadline) * 1000000ull,
		    on_timer);
	while (rio_op_in_flight(&timer)) {
		r = rio_loop_run(loop, RIO_RUN_ONCE);
		if (r < 0) {
			fprintf(stderr, "nf_connect: loop: %s\n", rio_strerror(r));
			return 1;
		}
		if (now_ms() - t0 > (double)(max_ms + 3 * deadline) + 5000) {
			fprintf(stderr, "nf_connect: timer did not fire\n");
			return 1;
		}
	}
	for (long i = 0; i < count; i++) {
		struct conn *c = &conns[i];
		int ok = c->completions == 1 && c->res == -ETIMEDOUT &&
			 c->ms >= 0.9 * (double)deadline && c->ms <= (double)max_ms;
		printf("nf_connect: connect %ld: %d completion(s), res %d (%s), "
		       "%.1f ms: %s\n", i, c->completions, c->res,
		       c->completions ? rio_strerror(c->res) : "-", c->ms,
		       ok ? "ok" : "WRONG");
		fail |= !ok;
		close(c->fd);
	}
	if (left)
		fail = 1;
	r = rio_loop_destroy(loop);
	if (r < 0) {
		fprintf(stderr, "nf_connect: rio_loop_destroy: %s\n", rio_strerror(r));
		fail = 1;
	}
	return fail;
}

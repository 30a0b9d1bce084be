/*
 * A load client in a child process (its own fd limit, its own CPU time),
 * driven by plain epoll so that it shares no code with ringio. Each
 * connection sends pattern data (t_pat_fill, its own stream offset) and
 * checks every echoed byte. 127.0.0.1 only; bounded by limit_ms.
 */
#ifndef RIO_TEST_TLOAD_H
#define RIO_TEST_TLOAD_H

#include "common.h"

#include <sys/types.h>

typedef struct tload_opts {
	uint16_t port;
	int conns;          /* connections (at once in soak mode) */
	int rounds;         /* round trips per connection; 0 = connect only */
	size_t size;        /* bytes per round trip (soak: at most) */
	int max_connecting; /* connects in flight at once; 0 = 128 */
	unsigned soak_ms;   /* > 0: keep `conns` busy this long, replacing
			       the ones killed on purpose */
	unsigned rst_permille, close_permille; /* soak: kill a connection
			       with data in flight, by RST or by close */
	int hold_fd;        /* >= 0: a finished connection stays open until
			       this fd turns readable; -1 = close at once */
	int retry_aborted;  /* reopen a connection that ends before its first
			       echoed byte (a server-side accept fault) */
	unsigned limit_ms;  /* the child gives up after this */
	unsigned seed;
	unsigned nofile;    /* raise the child's RLIMIT_NOFILE to this */
} tload_opts;

typedef struct tload_result {
	int ok;             /* finished every round trip, closed cleanly */
	int failed;         /* broke after data flowed, not killed by us */
	int aborted;        /* ended before the first echoed byte */
	int mismatches;     /* echoed bytes that were not what was sent */
	int connect_errors;
	int killed;         /* soak: connections we reset or closed */
	uint64_t rounds, bytes;
	int timed_out;      /* the child hit limit_ms */
	int setup_error;    /* errno of a failed setup step in the child */
} tload_result;

/* Fork the client. *res_fd is the pipe its result arrives on. */
pid_t tload_spawn(const tload_opts *o, int *res_fd);
/* Is the child's result in? (non-blocking) */
bool tload_ready(int res_fd);
/* Run `loop` (may be NULL) until the result is in; reap the child. */
void tload_finish(rio_loop *loop, pid_t pid, int res_fd, unsigned limit_ms,
		  tload_result *out);

struct tsrv;
/* o->conns clients each do their round trips and then hold their
 * connection open (o->hold_fd is set here). Once `up`, the echo server at
 * the end of the path, has echoed every byte, all of them must be open on
 * it at once; then they are let go, and every one must have finished
 * every round trip with no byte wrong. */
void tload_all_at_once(rio_loop *loop, struct tsrv *up, tload_opts *o,
		       tload_result *res);

#endif

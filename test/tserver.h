/*
 * An echo server on a rio_listener, for the server fault suite: one op per
 * connection alternating recv and send (partial sends resent), an optional
 * idle deadline on both, and counters for what happened to connections.
 * Runs on the test's loop, in the test's thread.
 */
#ifndef RIO_TEST_TSERVER_H
#define RIO_TEST_TSERVER_H

#include "common.h"

struct tconn;

typedef struct tsrv {
	rio_loop *loop;
	rio_listener *l;
	int lfd;
	uint16_t port;
	uint64_t idle_ns;    /* deadline of every recv and send; 0 = none */
	struct tconn *conns; /* open, not closing */
	int stopped;         /* on_stop ran (count: must end at 1) */
	int stop_err;
	/* what happened */
	int accepted, live, closed;
	int eofs, timeouts, resets, send_errors, other_errors, cancelled;
	int last_error;  /* the latest error a connection ended with, 0 if none
			  * (an EOF is not one) */
	int other_error; /* the last of the other_errors, with `other_sending` */
	int other_sending;
	uint64_t bytes;
	uint64_t first_timeout_ns;
} tsrv;

/* Listen on 127.0.0.1 (backlog 4096) and start the listener; `lo` may be
 * NULL or carry max_conns / backoff (its callbacks are replaced). */
void tsrv_start(tsrv *s, rio_loop *loop, const rio_listener_opts *lo,
		uint64_t idle_ns);
/* Start on an existing listening fd instead. */
void tsrv_start_fd(tsrv *s, rio_loop *loop, int lfd,
		   const rio_listener_opts *lo, uint64_t idle_ns);
/* Close every open connection through the loop (pending ops cancelled). */
void tsrv_close_all(tsrv *s);
/* Stop the listener if it runs, close everything, run until nothing is in
 * flight, destroy the listener and close the listening fd. */
void tsrv_finish(tsrv *s);

#endif

/*
 * What the reactor's files share: reactor.c (fd state and registration,
 * the syscalls, submit and event dispatch) and dgram.c (datagrams in
 * batches: recvmmsg / sendmmsg). Nothing here leaves fallback/.
 */
#ifndef RIO_REACTOR_INT_H
#define RIO_REACTOR_INT_H

#include <errno.h>
#include "internal.h"
#include "poller.h"
#include "timer.h"

struct fdent {
	rio__opq rq, wq;  /* read side: accept, recv*; write side: connect, send* */
	rio__opq pq;      /* rio_poll ops: checked on every event of the fd */
	uint32_t gen;
	uint8_t registered;
	uint8_t ready;    /* RIO__EV_IN/OUT last seen ready */
	uint8_t hot;      /* on the hot list: work left over from a turn */
	uint8_t nopoll;   /* the poller refused it (a regular file): always ready */
	uint8_t stream;   /* SOCK_STREAM: a short read means drained */
	uint8_t sock;     /* a socket: only its errors are SO_ERROR's */
	uint8_t eof;      /* hang-up seen: a short read leaves the EOF queued */
	int soerr;        /* a socket error the poller consumed (rio__pev.err) */
	uint64_t ino;     /* the file soerr was taken for (fstat) */
	uint64_t sigs;    /* a signal op's fd (sig_open): its signals,
			     bit sig - 1 */
};

struct reactor {
	const struct rio__poller *p;
	int pfd;
	int wake_r, wake_w;
	struct fdent *fds;
	size_t nfds;
	int *hot;
	size_t nhot, hot_cap;
	rio__timers timers;
	/* the datagrams the last recvmmsg took, delivered before the next */
	uint16_t got[RIO__DGRAM_BATCH];
	unsigned ngot;
	/* signal ops' fds watching each signal (the poller wakes for it) */
	uint16_t sigwatch[65];
};

/* BATCHED: the op and those behind it have their results, deferred */
enum attempt { DONE, AGAIN, MORE, NOBUF, BATCHED };

static inline struct reactor *R(rio_loop *loop) { return loop->be_data; }

static inline int again(int res)
{
	return res == -EAGAIN || res == -EWOULDBLOCK;
}

/* A result known now, delivered next turn (rio__defer), off the timers. */
static inline void defer(rio_loop *loop, rio_op *op, int res)
{
	rio__timer_del(&R(loop)->timers, op);
	rio__defer(loop, op, res);
}

/* A result now: off the timers at the final one. */
static inline void complete(rio_loop *loop, rio_op *op, int res,
			    unsigned flags)
{
	if (!(flags & RIO_OP_F_MORE))
		rio__timer_del(&R(loop)->timers, op);
	rio__complete(loop, op, res, flags);
}

/* ---- dgram.c ---- */

/* Datagrams into as many free pool buffers as there are (up to
 * RIO__DGRAM_BATCH), in one call: MORE with *res of them taken (r->got), AGAIN,
 * NOBUF (pool dry) or DONE with an error. */
RIO__HIDDEN enum attempt rio__reactor_recv_dgrams(rio_loop *loop, rio_op *op,
						  int *res);
/* One completion per datagram the last recv_dgrams took, in order. */
RIO__HIDDEN void rio__reactor_deliver_dgrams(rio_loop *loop, rio_op *op);
/* The datagram sends queued on op's fd from op on, in one sendmmsg:
 * BATCHED (those sent deferred), AGAIN, or DONE with an error. */
RIO__HIDDEN enum attempt rio__reactor_send_dgrams(rio_loop *loop, rio_op *op,
						  int *res);

#endif

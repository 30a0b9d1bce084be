/*
 * A relay: bytes from one socket to another (or back to the same one)
 * through a loop's buffer pool, the way ringio-echo and ringio-proxy move
 * them. Not part of the library.
 *
 * A multishot recv fills pool buffers; each arrives on the relay's queue
 * and is sent, in order, to `to`, then given back to the pool. No buffer
 * is held while a connection is quiet, so memory follows the pool, not
 * the number of connections. Backpressure: at RELAY_Q_HIGH queued
 * buffers (the receiver of `to` is slower than the sender on `from`) the
 * recv is cancelled, and armed again once the queue drains to
 * RELAY_Q_LOW; the bytes wait in the kernel, and TCP's window stops the
 * sender. While three quarters of the pool are lent out, a relay stops at
 * RELAY_Q_TIGHT instead, so slow readers cannot take the whole pool
 * between them before the owner's idle timeout ends them.
 *
 * Splice: a relay may move its bytes through a pipe of its own instead
 * (rio_splice_in / rio_splice_out), so they never cross into user memory:
 * one splice in, then splices out until the pipe is empty, then the next.
 * The pipe (64 KiB) is its bound, and it holds no pool buffer. That pays
 * for bulk transfers and costs for small messages, where two splices and
 * a pipe do more work than a recv and a send. RELAY_SPLICE_AUTO starts
 * every relay copying and switches it, for good, the first time a recv
 * fills a whole buffer: it stops receiving, sends what it holds, then
 * splices. RELAY_SPLICE_ON splices from the first byte (falling back to
 * copying if no pipe can be had), RELAY_SPLICE_OFF never.
 */
#ifndef RIO_RELAY_H
#define RIO_RELAY_H

#include <stddef.h>
#include <stdint.h>

#include <ringio.h>

enum { RELAY_Q_HIGH = 4, RELAY_Q_TIGHT = 2, RELAY_Q_LOW = 1 };

enum relay_splice { RELAY_SPLICE_OFF, RELAY_SPLICE_AUTO, RELAY_SPLICE_ON };

/* Bytes one splice moves at most: a default pipe's capacity. */
enum { RELAY_SPLICE_LEN = 65536 };

/* A loop's pool and what the relays of that loop keep per buffer. */
struct relay_pool {
	rio_loop *loop;
	rio_bufpool *pool;
	size_t size;    /* of each buffer */
	unsigned count; /* buffers in the pool */
	unsigned out;   /* of them, lent to relays */
	enum relay_splice splice;
	uint64_t spliced; /* relays that have moved to a pipe */
	uint16_t *next; /* per buffer id: the next one on its queue */
	uint32_t *len;  /* per buffer id: bytes received into it */
};

/* Returns 0, or -errno (the pool's, or -ENOMEM). */
int relay_pool_init(struct relay_pool *p, rio_loop *loop, unsigned count,
		    size_t size, enum relay_splice splice);
void relay_pool_fini(struct relay_pool *p);

enum relay_event {
	RELAY_RECEIVED, /* res bytes arrived (into a buffer or the pipe) */
	RELAY_SENT,     /* res bytes went out */
	RELAY_END,      /* the relay is over: res is 0 at end of stream from
			 * `from` with everything sent, or the recv's, a
			 * send's or a splice's -errno (bytes may be left) */
	RELAY_FREED,    /* after relay_release: it may be freed now */
};

struct relay;
typedef void relay_cb(struct relay *r, enum relay_event ev, int res);

struct relay {
	struct relay_pool *p;
	relay_cb *cb;
	int from, to;
	uint8_t recv_done; /* the recv has ended for good */
	uint8_t handed;    /* ... to move on to the pipe */
	uint8_t paused;    /* its recv is cancelled (backpressure, hand-off) */
	uint8_t hand_off, silent, released;
	uint16_t head, tail, qlen; /* received, not yet sent */
	uint32_t off;              /* bytes of `head` already sent */
	int pipe[2];               /* splicing: its pipe; -1 while copying */
	uint32_t plen, poff;       /* bytes in the pipe, and sent of them */
	rio_op recv_op, send_op, pause_op;
	rio_op splice_op;
	/* While nothing reads `from` (paused, or splicing out): a watch for a
	 * reset there, so a peer that resets is noticed even then. */
	rio_op watch_op;
};

/* Set up (nothing in flight, nothing queued), then start relaying from
 * `from` to `to`; from == to echoes. `cb` hears of it. */
void relay_init(struct relay *r, struct relay_pool *p, relay_cb *cb);
void relay_start(struct relay *r, int from, int to);
/* Nothing received and not yet sent. */
int relay_idle(const struct relay *r);
/* Its owner is closing the sockets, through the loop (which completes the
 * relay's ops): from now on no event but RELAY_FREED. */
void relay_silence(struct relay *r);
/* Once those closes have completed: give the queue back to the pool and
 * close the pipe. RELAY_FREED follows, at once or when the relay's last op not tied to
 * the sockets (a cancel) completes. */
void relay_release(struct relay *r);

#endif

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
 */
#ifndef RIO_RELAY_H
#define RIO_RELAY_H

#include <stddef.h>
#include <stdint.h>

#include <ringio.h>

enum { RELAY_Q_HIGH = 4, RELAY_Q_TIGHT = 2, RELAY_Q_LOW = 1 };

/* A loop's pool and what the relays of that loop keep per buffer. */
struct relay_pool {
	rio_loop *loop;
	rio_bufpool *pool;
	size_t size;    /* of each buffer */
	unsigned count; /* buffers in the pool */
	unsigned out;   /* of them, lent to relays */
	uint16_t *next; /* per buffer id: the next one on its queue */
	uint32_t *len;  /* per buffer id: bytes received into it */
};

/* Returns 0, or -errno (the pool's, or -ENOMEM). */
int relay_pool_init(struct relay_pool *p, rio_loop *loop, unsigned count,
		    size_t size);
void relay_pool_fini(struct relay_pool *p);

enum relay_event {
	RELAY_RECEIVED, /* res bytes arrived */
	RELAY_SENT,     /* res bytes went out */
	RELAY_END,      /* the relay is over, see below */
	RELAY_FREED,    /* after relay_release: it may be freed now */
};
/* RELAY_END's res: */
enum {
	RELAY_EOF = 0,    /* end of stream from `from`, and everything sent */
	RELAY_HANDED = 1, /* relay_hand_off() was called, and all sent */
	/* < 0: the recv's or a send's -errno; bytes may be left unsent */
};

struct relay;
typedef void relay_cb(struct relay *r, enum relay_event ev, int res);

struct relay {
	struct relay_pool *p;
	relay_cb *cb;
	int from, to;
	uint8_t recv_done; /* the recv has ended for good */
	uint8_t handed;    /* ... because of relay_hand_off() */
	uint8_t paused;    /* its recv is cancelled for backpressure */
	uint8_t hand_off, silent, released;
	uint16_t head, tail, qlen; /* received, not yet sent */
	uint32_t off;              /* bytes of `head` already sent */
	rio_op recv_op, send_op, pause_op;
};

/* Set up (nothing in flight, nothing queued), then start relaying from
 * `from` to `to`; from == to echoes. `cb` hears of it. */
void relay_init(struct relay *r, struct relay_pool *p, relay_cb *cb);
void relay_start(struct relay *r, int from, int to);
/* Stop receiving; RELAY_END with RELAY_HANDED once what was received has
 * been sent (or RELAY_EOF / an error, if that came first). */
void relay_hand_off(struct relay *r);
/* Nothing queued (so nothing being sent). */
int relay_idle(const struct relay *r);
/* Its owner is closing the sockets, through the loop (which completes the
 * relay's ops): from now on no event but RELAY_FREED. */
void relay_silence(struct relay *r);
/* Once those closes have completed: give the queue back to the pool.
 * RELAY_FREED follows, at once or when the relay's last op not tied to
 * the sockets (a cancel) completes. */
void relay_release(struct relay *r);

#endif

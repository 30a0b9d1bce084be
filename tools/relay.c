/* A relay through a buffer pool: see relay.h. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "relay.h"

#define NONE 0xffffu

int relay_pool_init(struct relay_pool *p, rio_loop *loop, unsigned count,
		    size_t size, enum relay_splice splice)
{
	memset(p, 0, sizeof *p);
	p->loop = loop;
	p->size = size;
	p->count = count;
	p->splice = splice;
	int r = rio_bufpool_create(loop, count, size, &p->pool);
	if (r < 0)
		return r;
	p->next = calloc(count, sizeof *p->next);
	p->len = calloc(count, sizeof *p->len);
	if (!p->next || !p->len) {
		relay_pool_fini(p);
		return -ENOMEM;
	}
	return 0;
}

void relay_pool_fini(struct relay_pool *p)
{
	if (p->pool)
		rio_bufpool_destroy(p->pool);
	free(p->next);
	free(p->len);
	memset(p, 0, sizeof *p);
}

static void recv_cb(rio_loop *loop, rio_op *op, int res);
static void send_cb(rio_loop *loop, rio_op *op, int res);
static void pause_cb(rio_loop *loop, rio_op *op, int res);
static void splice_cb(rio_loop *loop, rio_op *op, int res);
static void watch_cb(rio_loop *loop, rio_op *op, int res);

/* Nothing reads `from` for now: watch it for a reset (once; the watch
 * lasts until it fires or the owner closes the socket). */
static void watch(struct relay *r)
{
	if (r->silent || r->from < 0 || rio_op_in_flight(&r->watch_op))
		return;
	rio_poll(r->p->loop, &r->watch_op, r->from, 0, watch_cb);
}

/* A send or splice out of > 0 bytes that moved none: the peer is gone. */
static int out_err(int res)
{
	return res < 0 ? res : -EPIPE;
}

static void end(struct relay *r, int res)
{
	if (r->silent)
		return;
	r->silent = 1;
	r->cb(r, RELAY_END, res);
}

static void arm(struct relay *r)
{
	r->paused = 0;
	int e = rio_recv_multishot(r->p->loop, &r->recv_op, r->from,
				   r->p->pool, recv_cb);
	if (e < 0) {
		r->recv_done = 1;
		end(r, e);
	}
}

/* Cancel the recv (backpressure or hand-off). One cancel at a time: if
 * the last one has not completed yet, pause_cb looks again. */
static void stop_recv(struct relay *r)
{
	if (r->paused || r->recv_done || !rio_op_in_flight(&r->recv_op) ||
	    rio_op_in_flight(&r->pause_op))
		return;
	r->paused = 1;
	rio_cancel(r->p->loop, &r->pause_op, &r->recv_op, pause_cb);
}

/* Queued enough: stop receiving for now. */
static int queue_full(const struct relay *r)
{
	const struct relay_pool *p = r->p;
	return r->qlen >= RELAY_Q_HIGH ||
	       (r->qlen >= RELAY_Q_TIGHT && p->out >= p->count / 4 * 3);
}

static void put(struct relay_pool *p, uint16_t id)
{
	p->out--;
	rio_bufpool_put(p->pool, id);
}

static void send_head(struct relay *r)
{
	struct relay_pool *p = r->p;
	char *b = rio_bufpool_buf(p->pool, r->head);
	int e = rio_send(p->loop, &r->send_op, r->to, b + r->off,
			 p->len[r->head] - r->off, 0, send_cb);
	if (e < 0)
		end(r, e);
}

/* ---- splicing: one splice into the pipe, then out until it is empty */

static int make_pipe(struct relay *r)
{
	if (pipe2(r->pipe, O_NONBLOCK | O_CLOEXEC) < 0) {
		r->pipe[0] = r->pipe[1] = -1;
		return -1;
	}
	r->p->spliced++;
	return 0;
}

static void splice_in(struct relay *r)
{
	r->plen = r->poff = 0;
	int e = rio_splice_in(r->p->loop, &r->splice_op, r->from, r->pipe[1],
			      RELAY_SPLICE_LEN, splice_cb);
	if (e < 0)
		end(r, e);
}

static void splice_out(struct relay *r)
{
	watch(r); /* `from` is not read until the pipe is empty */
	int e = rio_splice_out(r->p->loop, &r->splice_op, r->pipe[0], r->to,
			       r->plen - r->poff, splice_cb);
	if (e < 0)
		end(r, e);
}

static void splice_cb(rio_loop *loop, rio_op *op, int res)
{
	struct relay *r = RIO_CONTAINER_OF(op, struct relay, splice_op);
	if (r->silent)
		return;
	if (r->plen == 0) { /* a splice in: 0 is the end of the stream */
		if (res <= 0) {
			end(r, res);
			return;
		}
		r->plen = (uint32_t)res;
		r->cb(r, RELAY_RECEIVED, res);
		if (!r->silent)
			splice_out(r);
		return;
	}
	if (res <= 0) {
		end(r, out_err(res));
		return;
	}
	r->poff += (uint32_t)res;
	if (r->poff < r->plen)
		splice_out(r);
	else
		splice_in(r);
	if (!r->silent)
		r->cb(r, RELAY_SENT, res);
}

/* ---- copying through the pool ---- */

/* The recv is over and everything received has been sent: the end of
 * the stream, or on to the pipe after a hand-off. */
static void drained(struct relay *r)
{
	if (r->handed)
		splice_in(r);
	else
		end(r, 0);
}

/* The recv has ended for good (`handed`: by hand-off); on once the queue
 * is empty. */
static void recv_over(struct relay *r, int handed)
{
	r->recv_done = 1;
	r->handed = (uint8_t)handed;
	if (r->head == NONE)
		drained(r);
	else if (handed)
		watch(r); /* sending what it holds first */
}

/* Stop receiving; send what was received, then splice (or END, if the
 * stream ended or failed first). */
static void hand_off(struct relay *r)
{
	if (r->hand_off || r->silent)
		return;
	r->hand_off = 1;
	if (r->recv_done)
		return; /* it ended already: END says how */
	if (!rio_op_in_flight(&r->recv_op))
		recv_over(r, 1); /* paused, the recv already cancelled */
	else
		stop_recv(r);
}

static void recv_cb(rio_loop *loop, rio_op *op, int res)
{
	struct relay *r = RIO_CONTAINER_OF(op, struct relay, recv_op);
	struct relay_pool *p = r->p;
	if (op->flags & RIO_OP_F_BUF) {
		uint16_t id = op->buf_id;
		p->out++;
		if (r->silent) {
			put(p, id);
		} else {
			p->len[id] = (uint32_t)res;
			p->next[id] = NONE;
			int was_empty = r->head == NONE;
			if (was_empty)
				r->head = id;
			else
				p->next[r->tail] = id;
			r->tail = id;
			r->qlen++;
			if (was_empty)
				send_head(r);
			if (queue_full(r) && (op->flags & RIO_OP_F_MORE))
				stop_recv(r);
			/* a full buffer: bulk, so splice from now on */
			if ((size_t)res == p->size &&
			    p->splice == RELAY_SPLICE_AUTO && r->pipe[0] < 0 &&
			    (op->flags & RIO_OP_F_MORE) && make_pipe(r) == 0)
				hand_off(r);
			if (!r->silent)
				r->cb(r, RELAY_RECEIVED, res);
		}
	}
	if ((op->flags & RIO_OP_F_MORE) || r->silent)
		return;
	if (res == -ECANCELED && r->paused) {
		if (r->hand_off)
			recv_over(r, 1);
		else if (r->qlen <= RELAY_Q_LOW)
			arm(r); /* else send_cb arms it once drained */
		else
			watch(r);
		return;
	}
	if (res < 0) {
		r->recv_done = 1;
		end(r, res);
	} else {
		recv_over(r, 0);
	}
}

static void send_cb(rio_loop *loop, rio_op *op, int res)
{
	struct relay *r = RIO_CONTAINER_OF(op, struct relay, send_op);
	struct relay_pool *p = r->p;
	if (r->silent)
		return;
	if (res <= 0) {
		end(r, out_err(res));
		return;
	}
	r->off += (uint32_t)res;
	if (r->off == p->len[r->head]) {
		uint16_t id = r->head;
		r->head = p->next[id];
		if (r->head == NONE)
			r->tail = NONE;
		r->off = 0;
		r->qlen--;
		put(p, id);
		if (r->paused && !r->hand_off && !r->recv_done &&
		    r->qlen <= RELAY_Q_LOW && !rio_op_in_flight(&r->recv_op))
			arm(r);
	}
	if (r->head != NONE && !r->silent)
		send_head(r);
	if (r->silent)
		return;
	r->cb(r, RELAY_SENT, res);
	if (r->head == NONE && r->recv_done)
		drained(r);
}

/* The watch fired: a reset (POLLERR) ends the relay with the socket's
 * error; a FIN or hang-up is left to the relay's own ops to report. */
static void watch_cb(rio_loop *loop, rio_op *op, int res)
{
	struct relay *r = RIO_CONTAINER_OF(op, struct relay, watch_op);
	if (r->silent || res <= 0 || !(res & POLLERR))
		return;
	int err = 0;
	socklen_t len = sizeof err;
	if (getsockopt(r->from, SOL_SOCKET, SO_ERROR, &err, &len) < 0 || !err)
		err = ECONNRESET;
	r->recv_done = 1;
	end(r, -err);
}

static void pause_cb(rio_loop *loop, rio_op *op, int res)
{
	struct relay *r = RIO_CONTAINER_OF(op, struct relay, pause_op);
	if (r->released) {
		r->cb(r, RELAY_FREED, 0);
		return;
	}
	if (r->silent)
		return;
	/* A cancel that found nothing to stop (-EALREADY: a result was on
	 * its way) leaves the recv running: not paused after all. */
	if (res < 0 && rio_op_in_flight(&r->recv_op))
		r->paused = 0;
	if (r->hand_off || queue_full(r))
		stop_recv(r);
}

void relay_init(struct relay *r, struct relay_pool *p, relay_cb *cb)
{
	memset(r, 0, sizeof *r);
	r->p = p;
	r->cb = cb;
	r->from = r->to = -1;
	r->head = r->tail = NONE;
	r->pipe[0] = r->pipe[1] = -1;
	rio_op_init(&r->recv_op);
	rio_op_init(&r->send_op);
	rio_op_init(&r->pause_op);
	rio_op_init(&r->splice_op);
	rio_op_init(&r->watch_op);
}

void relay_start(struct relay *r, int from, int to)
{
	r->from = from;
	r->to = to;
	if (r->p->splice == RELAY_SPLICE_ON && make_pipe(r) == 0)
		splice_in(r);
	else
		arm(r);
}

int relay_idle(const struct relay *r)
{
	return r->head == NONE && r->plen == 0;
}

void relay_silence(struct relay *r)
{
	r->silent = 1;
}

void relay_release(struct relay *r)
{
	r->silent = 1;
	while (r->head != NONE) {
		uint16_t id = r->head;
		r->head = r->p->next[id];
		put(r->p, id);
	}
	r->tail = NONE;
	r->qlen = 0;
	if (r->pipe[0] >= 0) { /* no op uses it: they were on the sockets */
		close(r->pipe[0]);
		close(r->pipe[1]);
		r->pipe[0] = r->pipe[1] = -1;
	}
	r->released = 1;
	if (!rio_op_in_flight(&r->pause_op))
		r->cb(r, RELAY_FREED, 0);
}

/*
 * The relay (ringio.h): bytes between two sockets, both ways, as one
 * composite op, built on the public op API so it is the same on every
 * backend.
 *
 * Each direction is an explicit state machine:
 *
 *   COPY     a multishot recv into the pool; each buffer is queued and
 *            sent on, in order, then given back
 *   TO_PIPE  a recv filled a whole buffer (RIO_SPLICE_AUTO: bulk): the
 *            recv is stopped and what is queued sent, then SPLICE
 *   SPLICE   one splice into the direction's pipe, then splices out until
 *            it is empty, then the next
 *   FLUSH    end of stream read: what is held is sent, then the FIN is
 *            passed on (shutdown(SHUT_WR) of the other socket)
 *   DONE     the FIN was passed on
 *
 * plus one flag, `paused` (backpressure: too much queued; reads stop
 * until the queue is down to RIO_RELAY_Q_LOW). The relay as a whole is
 * RUNNING, then ENDING (its result decided: every op it has in flight is
 * cancelled and waited for), then ENDED (its completion is queued).
 *
 * One function, reconcile(), compares what should be in flight with what
 * is, and submits or cancels the difference; every callback records its
 * result in the state and calls it. No other path submits or cancels.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

#define NONE 0xffffu

enum dstate { D_COPY, D_TO_PIPE, D_SPLICE, D_FLUSH, D_DONE };

/* A direction's watch of its source: for anything (a reset, or a FIN,
 * which the reads then report) until its FIN is seen, by the watch or the
 * reads; then for errors alone (a reset after the FIN: Linux reports
 * EPIPE), since a FIN keeps a socket readable and a poll for it would fire
 * forever (io_uring, which always watches POLLRDHUP, arms such a poll
 * edge-triggered: uring.c); off once a hang-up is seen (both ways shut
 * down: nothing to learn). */
enum watch { W_ANY, W_ERRORS, W_OFF };
enum rstate { R_RUNNING, R_ENDING, R_ENDED };

/* Bytes one splice moves at most: a default pipe's capacity. */
enum { SPLICE_LEN = 65536 };

/* The ops of a direction, in the order the end cancels them. */
enum { OP_IN, OP_OUT, OP_WATCH, DIR_OPS };

struct dir {
	int from, to;     /* sockets */
	uint8_t idx;      /* 0: a to b, 1: b to a */
	uint8_t state;    /* enum dstate */
	uint8_t paused;   /* backpressure: no reads until Q_LOW */
	uint8_t watch;    /* enum watch: how `from` is watched while nothing
			     reads it */
	uint8_t in_cancelled; /* we cancelled the read in flight */
	uint8_t end_cancelled; /* bit per DIR_OPS op: cancelled by the end */
	uint16_t head, tail, qlen; /* received buffers, not yet sent */
	uint32_t off;              /* bytes of `head` already sent */
	size_t held;               /* bytes received, not yet sent */
	int pipe[2];               /* SPLICE: its pipe */
	uint32_t plen, poff;       /* bytes in the pipe, and sent of them */
	/* in: the multishot recv (COPY), or a splice in (SPLICE);
	 * out: a send (COPY), or a splice out (SPLICE);
	 * watch: a poll on `from` while nothing reads it, for a reset;
	 * ctl: the cancels, one at a time */
	rio_op op[DIR_OPS];
	rio_op ctl;
};

/* It lives in rio_relay.priv (declared there as u64s): may_alias. */
struct __attribute__((may_alias)) relay {
	rio_relay *pub;
	rio_loop *loop;
	rio_bufpool *pool;
	uint8_t state;   /* enum rstate */
	uint8_t ndirs;   /* 1: an echo (a == b) */
	uint8_t splice;  /* rio_splice_mode */
	uint8_t draining;
	uint8_t timer_cancelled;
	int res;         /* what it ends with */
	uint64_t idle_ns;
	uint64_t active_ns; /* when a byte last moved */
	/* a and b as they were at start (fd, generation): a close through
	 * the loop ends it, told even while nothing of the relay's is on
	 * that socket; and no op is armed on a closed fd */
	struct rio__fdwatch fdw[2];
	rio_relay_counters ctr;
	struct dir d[2];
	rio_op timer;
};

_Static_assert(sizeof(struct relay) <= sizeof(((rio_relay *)0)->priv),
	       "rio_relay.priv is too small for struct relay");

/* A direction's relay: d[idx] of it. */
static struct relay *R(const struct dir *d)
{
	return RIO_CONTAINER_OF((struct dir *)(uintptr_t)(d - d->idx),
				struct relay, d[0]);
}

static struct relay *relay_of(const rio_relay *pub)
{
	return (struct relay *)(void *)pub->priv.u64;
}

static void reconcile(struct relay *r);
static int relay_cancel(rio_loop *loop, rio_op *op);

/* ---- the result ---- */

/* The relay's result is decided (the first one wins): from now on it only
 * cancels and waits. `side`: the socket that failed (0 a, 1 b) or -1. */
static void end(struct relay *r, int res, int side)
{
	if (r->state != R_RUNNING)
		return;
	r->state = R_ENDING;
	r->res = res;
	r->ctr.failed = (int8_t)side;
}

/* The socket a direction reads (0 a, 1 b) and the one it writes. */
static int from_side(const struct dir *d)
{
	return R(d)->ndirs == 1 ? 0 : d->idx;
}

static int to_side(const struct dir *d)
{
	return R(d)->ndirs == 1 ? 0 : !d->idx;
}

/* An op of ours ended with res < 0 that nobody here asked for: -ECANCELED
 * is a close of the socket through the loop (or a cancel of it), not the
 * socket's own error. */
static void failed(struct dir *d, int res, int side)
{
	end(R(d), res, res == -ECANCELED ? -1 : side);
}

/* The idle clock: CLOCK_MONOTONIC_COARSE (a tick, ~4 ms, is plenty for
 * an idle timeout, and reading it costs a few ns on every byte moved). */
static uint64_t idle_clock(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void touch(struct relay *r)
{
	if (r->idle_ns)
		r->active_ns = idle_clock();
}

/* ---- the queue of received buffers ---- */

static void enqueue(struct dir *d, uint16_t id, uint32_t len)
{
	struct rio__buflink *l = R(d)->pool->link;
	l[id].len = len;
	l[id].next = NONE;
	if (d->head == NONE)
		d->head = id;
	else
		l[d->tail].next = id;
	d->tail = id;
	d->qlen++;
	d->held += len;
}

static void dequeue(struct dir *d)
{
	rio_bufpool *pool = R(d)->pool;
	uint16_t id = d->head;
	d->head = pool->link[id].next;
	if (d->head == NONE)
		d->tail = NONE;
	d->qlen--;
	d->off = 0;
	rio_bufpool_put(pool, id);
}

/* Queued enough: stop reading for now. */
static int queue_full(const struct dir *d)
{
	const rio_bufpool *p = R(d)->pool;
	return d->qlen >= RIO_RELAY_Q_HIGH ||
	       (d->qlen >= RIO_RELAY_Q_TIGHT && p->nlent >= p->count / 4 * 3);
}

/* ---- callbacks: record, then reconcile ---- */

static struct dir *dir_of_op(rio_op *op, int which)
{
	return RIO_CONTAINER_OF(op - which, struct dir, op);
}

static void in_cb(rio_loop *loop, rio_op *op, int res)
{
	struct dir *d = dir_of_op(op, OP_IN);
	struct relay *r = R(d);
	(void)loop;
	if (op->flags & RIO_OP_F_BUF) { /* a multishot recv's buffer */
		if (r->state != R_RUNNING) {
			rio_bufpool_put(r->pool, op->buf_id);
		} else {
			enqueue(d, op->buf_id, (uint32_t)res);
			touch(r);
			if (queue_full(d))
				d->paused = 1;
			if ((size_t)res == r->pool->size && d->state == D_COPY &&
			    r->splice == RIO_SPLICE_AUTO &&
			    (op->flags & RIO_OP_F_MORE) && !r->draining &&
			    pipe2(d->pipe, O_NONBLOCK | O_CLOEXEC) == 0) {
				d->state = D_TO_PIPE; /* bulk: on to a pipe */
				R(d)->ctr.spliced[d->idx] = 1;
			}
		}
		if (op->flags & RIO_OP_F_MORE) {
			reconcile(r);
			return;
		}
	}
	/* A cancel of ours ended it, unless its socket is being closed
	 * through the loop: then that close did, whatever we asked. */
	int asked = d->in_cancelled &&
		    !rio__fd_gen_ended(loop, op->priv.fd, op->priv.gen);
	d->in_cancelled = 0;
	if (r->state != R_RUNNING) {
		/* ending: the result no longer matters */
	} else if (op->priv.kind == RIO__OP_SPLICE_IN && res > 0) {
		d->plen = (uint32_t)res;
		d->poff = 0;
		d->held += (size_t)res;
		touch(r);
	} else if (res == 0 && !(op->flags & RIO_OP_F_BUF)) {
		d->watch = W_ERRORS; /* end of stream: pass it on once flushed */
		d->state = D_FLUSH;
	} else if (res < 0 && !(res == -ECANCELED && asked)) {
		failed(d, res, from_side(d));
	}
	reconcile(r);
}

static void out_cb(rio_loop *loop, rio_op *op, int res)
{
	struct dir *d = dir_of_op(op, OP_OUT);
	struct relay *r = R(d);
	(void)loop;
	if (r->state != R_RUNNING) {
		if (res > 0) /* they went out all the same: count them */
			r->ctr.bytes[d->idx] += (uint64_t)res;
		reconcile(r);
		return;
	}
	if (res <= 0) { /* of > 0 bytes, none went: the peer is gone */
		failed(d, res < 0 ? res : -EPIPE, to_side(d));
		reconcile(r);
		return;
	}
	r->ctr.bytes[d->idx] += (uint64_t)res;
	d->held -= (size_t)res;
	touch(r);
	if (op->priv.kind == RIO__OP_SPLICE_OUT) {
		r->ctr.splices++;
		d->poff += (uint32_t)res;
		if (d->poff == d->plen)
			d->plen = d->poff = 0;
	} else {
		r->ctr.copies++;
		d->off += (uint32_t)res;
		if (d->off == r->pool->link[d->head].len)
			dequeue(d);
		if (d->paused && d->qlen <= RIO_RELAY_Q_LOW)
			d->paused = 0;
	}
	reconcile(r);
}

/* A reset (POLLERR) ends the relay with the socket's error; a FIN or
 * hang-up is left to the reads to report: past a FIN the watch is for
 * errors alone, past a hang-up there is none. */
static void watch_cb(rio_loop *loop, rio_op *op, int res)
{
	struct dir *d = dir_of_op(op, OP_WATCH);
	struct relay *r = R(d);
	(void)loop;
	if (r->state == R_RUNNING) {
		if (res > 0 && (res & POLLERR)) {
			int err = 0;
			socklen_t len = sizeof err;
			if (getsockopt(d->from, SOL_SOCKET, SO_ERROR, &err,
				       &len) < 0 || !err)
				err = ECONNRESET;
			failed(d, -err, from_side(d));
		} else if (res > 0) {
			/* a hang-up: shut both ways, nothing more to learn;
			 * else a FIN (whatever the level now: the recv may
			 * have seen it first): errors alone from now on */
			d->watch = res & POLLHUP ? W_OFF : W_ERRORS;
		} else if (res < 0) {
			failed(d, res, from_side(d));
		}
	}
	reconcile(r);
}

static void ctl_cb(rio_loop *loop, rio_op *op, int res)
{
	(void)loop;
	(void)res; /* -EALREADY: the target's own result is on its way */
	reconcile(R(RIO_CONTAINER_OF(op, struct dir, ctl)));
}

static void timer_cb(rio_loop *loop, rio_op *op, int res)
{
	struct relay *r = RIO_CONTAINER_OF(op, struct relay, timer);
	(void)loop;
	if (r->state == R_RUNNING && res == 0 &&
	    idle_clock() - r->active_ns >= r->idle_ns) {
		/* ringio's: its -ETIMEDOUT (if it stays the result) says so */
		r->pub->op.priv.bits |= RIO__B_TIMEDOUT;
		end(r, -ETIMEDOUT, -1);
	}
	reconcile(r); /* else: armed again for the rest */
}

/* ---- reconcile ---- */

static void cancel_in(struct dir *d)
{
	rio_op *in = &d->op[OP_IN];
	if (!rio_op_in_flight(in) || d->in_cancelled ||
	    rio_op_in_flight(&d->ctl))
		return;
	d->in_cancelled = 1;
	rio__must(&d->ctl, rio_cancel(R(d)->loop, &d->ctl, in, ctl_cb));
}

static void send_head(struct dir *d)
{
	struct relay *r = R(d);
	rio_op *out = &d->op[OP_OUT];
	if (d->head == NONE || rio_op_in_flight(out))
		return;
	char *b = rio_bufpool_buf(r->pool, d->head);
	rio__must(out, rio_send(r->loop, out, d->to, b + d->off,
				r->pool->link[d->head].len - d->off, 0,
				out_cb));
}

static void splice_out(struct dir *d)
{
	rio_op *out = &d->op[OP_OUT];
	if (d->poff == d->plen || rio_op_in_flight(out))
		return;
	rio__must(out, rio_splice_out(R(d)->loop, out, d->pipe[0], d->to,
				      d->plen - d->poff, out_cb));
}

/* What one direction should have in flight, given its state. */
static void reconcile_dir(struct dir *d)
{
	struct relay *r = R(d);
	rio_op *in = &d->op[OP_IN];
	int reading = !d->paused && !r->draining;
	switch (d->state) {
	case D_COPY:
		if (reading && !rio_op_in_flight(in))
			rio__must(in, rio_recv_multishot(r->loop, in, d->from,
							 r->pool, in_cb));
		else if (!reading)
			cancel_in(d);
		send_head(d);
		break;
	case D_TO_PIPE:
		cancel_in(d);
		send_head(d);
		if (rio_op_in_flight(in) || d->head != NONE ||
		    rio_op_in_flight(&d->op[OP_OUT]))
			break;
		d->state = D_SPLICE;
		/* fall through */
	case D_SPLICE:
		if (d->plen) {
			splice_out(d);
		} else if (r->draining) {
			cancel_in(d);
		} else if (!rio_op_in_flight(in)) {
			rio__must(in, rio_splice_in(r->loop, in, d->from,
						    d->pipe[1], SPLICE_LEN,
						    in_cb));
		}
		break;
	case D_FLUSH:
		send_head(d);
		splice_out(d);
		if (d->held || rio_op_in_flight(&d->op[OP_OUT]))
			break;
		if (shutdown(d->to, SHUT_WR) < 0) {
			failed(d, -errno, to_side(d));
			return;
		}
		r->ctr.eof[d->idx] = 1;
		d->state = D_DONE;
		break;
	case D_DONE:
		break;
	}
	/* Nothing reads `from` (paused, starved of buffers or about to be:
	 * the pool is dry, splicing out, or past its FIN): watch it, so a
	 * reset there is noticed even now. A recv that a dry pool starves
	 * later, with no result of this relay's in between, is not seen
	 * here: a reset then waits for a buffer or the idle timeout. */
	rio_op *w = &d->op[OP_WATCH];
	int starved = in->priv.state == RIO__ST_STARVED ||
		      (in->priv.kind == RIO__OP_RECV_MULTI &&
		       r->pool->nlent == r->pool->count);
	if ((!rio_op_in_flight(in) || starved) && d->watch != W_OFF &&
	    !rio_op_in_flight(w))
		rio__must(w, d->watch == W_ANY
				     ? rio_poll(r->loop, w, d->from, 0, watch_cb)
				     : rio__poll_events(r->loop, w, d->from,
							POLLERR | POLLHUP,
							watch_cb));
}

static int dir_busy(const struct dir *d)
{
	for (int i = 0; i < DIR_OPS; i++)
		if (rio_op_in_flight(&d->op[i]))
			return 1;
	return rio_op_in_flight(&d->ctl);
}

/* The result is decided: cancel what is in flight (each direction's ctl
 * cancels its own ops, one at a time; the first also the timer), then,
 * with nothing left, give everything back and complete. */
static void teardown(struct relay *r)
{
	int busy = rio_op_in_flight(&r->timer);
	for (int i = 0; i < r->ndirs; i++) {
		struct dir *d = &r->d[i];
		busy |= dir_busy(d);
		if (rio_op_in_flight(&d->ctl))
			continue;
		rio_op *target = NULL;
		/* An op whose socket a close through the loop is ending is
		 * left to that close, which completes it. */
		for (int k = 0; k < DIR_OPS && !target; k++)
			if (rio_op_in_flight(&d->op[k]) &&
			    !(d->end_cancelled & (1u << k)) &&
			    !(k == OP_IN && d->in_cancelled) &&
			    !rio__fd_gen_ended(r->loop, d->op[k].priv.fd,
					       d->op[k].priv.gen)) {
				d->end_cancelled |= (uint8_t)(1u << k);
				target = &d->op[k];
			}
		if (!target && i == 0 && rio_op_in_flight(&r->timer) &&
		    !r->timer_cancelled) {
			r->timer_cancelled = 1;
			target = &r->timer;
		}
		if (target)
			rio__must(&d->ctl, rio_cancel(r->loop, &d->ctl,
						      target, ctl_cb));
	}
	if (busy)
		return;
	for (int i = 0; i < r->ndirs; i++) {
		struct dir *d = &r->d[i];
		while (d->head != NONE)
			dequeue(d);
		d->held = 0; /* what was not sent is dropped */
		if (d->pipe[0] >= 0) {
			close(d->pipe[0]);
			close(d->pipe[1]);
			d->pipe[0] = d->pipe[1] = -1;
		}
	}
	r->pool->users--;
	r->state = R_ENDED;
	rio__fd_unwatch(r->loop, &r->fdw[0]);
	rio__fd_unwatch(r->loop, &r->fdw[1]);
	rio__defer(r->loop, &r->pub->op, r->res);
}

/* a or b was closed through the loop (its number may be another file's
 * already): nothing more may be armed on it. */
static int closed_under_us(struct relay *r)
{
	return rio__fd_gen_ended(r->loop, r->fdw[0].fd, r->fdw[0].gen) ||
	       rio__fd_gen_ended(r->loop, r->fdw[1].fd, r->fdw[1].gen);
}

static void reconcile(struct relay *r)
{
	if (r->state == R_RUNNING && closed_under_us(r))
		end(r, -ECANCELED, -1);
	if (r->state == R_RUNNING) {
		int done = 0, idle = 0;
		for (int i = 0; i < r->ndirs && r->state == R_RUNNING; i++) {
			struct dir *d = &r->d[i];
			reconcile_dir(d);
			done += d->state == D_DONE;
			/* drained: nothing held, nothing on its way out, and
			 * no read whose bytes could still arrive */
			idle += d->state == D_DONE ||
				(!d->held && !rio_op_in_flight(&d->op[OP_OUT]) &&
				 !rio_op_in_flight(&d->op[OP_IN]));
		}
		if (r->state == R_RUNNING && done == r->ndirs)
			end(r, 0, -1);
		else if (r->state == R_RUNNING && r->draining &&
			 idle == r->ndirs)
			end(r, -ECANCELED, -1);
		else if (r->state == R_RUNNING && r->idle_ns &&
			 !rio_op_in_flight(&r->timer)) {
			uint64_t since = idle_clock() - r->active_ns;
			rio__must(&r->timer,
				  rio_timeout(r->loop, &r->timer,
					      since < r->idle_ns
						      ? r->idle_ns - since
						      : 1,
					      timer_cb));
		}
	}
	if (r->state == R_ENDING)
		teardown(r);
}

/* ---- the API ---- */

int rio_relay_start(rio_loop *loop, rio_relay *pub, int a, int b,
		    const rio_relay_opts *opts, rio_cb *cb)
{
	if (!pub || !opts || !opts->pool || opts->pool->loop != loop ||
	    a < 0 || b < 0 || pub->op.deadline_ns ||
	    (unsigned)opts->splice > RIO_SPLICE_OFF)
		return -EINVAL;
	int e = rio__op_take(loop, &pub->op, cb, RIO__OP_RELAY, a);
	if (e)
		return e;
	pub->op.priv.a.composite.cancel = relay_cancel;
	struct relay *r = relay_of(pub);
	memset(r, 0, sizeof *r);
	r->pub = pub;
	r->loop = loop;
	r->pool = opts->pool;
	r->pool->users++;
	r->splice = (uint8_t)opts->splice;
	r->idle_ns = opts->idle_ns;
	r->active_ns = idle_clock();
	r->ndirs = a == b ? 1 : 2;
	r->ctr.failed = -1;
	rio__fd_watch(loop, &r->fdw[0], &pub->op, a);
	if (a != b) {
		rio__fd_watch(loop, &r->fdw[1], &pub->op, b);
	} else { /* an echo: one socket, one watch */
		r->fdw[1].fd = a;
		r->fdw[1].gen = r->fdw[0].gen;
	}
	for (int i = 0; i < r->ndirs; i++) {
		struct dir *d = &r->d[i];
		d->idx = (uint8_t)i;
		d->from = i ? b : a;
		d->to = i ? a : b;
		d->head = d->tail = NONE;
		d->pipe[0] = d->pipe[1] = -1;
		if (r->splice == RIO_SPLICE_ON &&
		    pipe2(d->pipe, O_NONBLOCK | O_CLOEXEC) == 0) {
			d->state = D_SPLICE;
			r->ctr.spliced[i] = 1;
		}
	}
	pub->op.priv.state = RIO__ST_KERNEL;
	reconcile(r);
	return 0;
}

static int relay_cancel(rio_loop *loop, rio_op *op)
{
	struct relay *r = relay_of(RIO_CONTAINER_OF(op, rio_relay, op));
	(void)loop;
	if (r->state != R_RUNNING)
		return -EALREADY;
	end(r, -ECANCELED, -1);
	reconcile(r);
	return 0;
}

int rio_relay_drain(rio_relay *pub)
{
	if (!pub)
		return -EINVAL;
	if (pub->op.priv.kind != RIO__OP_RELAY || !rio_op_in_flight(&pub->op))
		return -ENOENT;
	struct relay *r = relay_of(pub);
	if (r->state != R_RUNNING || r->draining)
		return -EALREADY;
	r->draining = 1;
	reconcile(r);
	return 0;
}

size_t rio_relay_pending(const rio_relay *pub)
{
	if (!pub || pub->op.priv.kind != RIO__OP_RELAY)
		return 0;
	const struct relay *r = relay_of(pub);
	return r->d[0].held + (r->ndirs == 2 ? r->d[1].held : 0);
}

void rio_relay_get_counters(const rio_relay *pub, rio_relay_counters *out)
{
	if (!pub || !out)
		return;
	*out = relay_of(pub)->ctr;
}

/*
 * The listener: multishot accept plus the accept policy of DESIGN.md. It is
 * built only on the public op API, so it behaves the same on every backend.
 *
 * One function, kick(), reconciles what should be in flight with what is:
 * the accept runs while the listener runs, is not paused for load and is
 * under max_conns; otherwise it is cancelled. Every callback updates state
 * and calls kick(), so no path re-arms or cancels on its own.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "internal.h"

/* L_DESTROYED: destroyed with connections out; the last release frees */
enum lstate { L_RUNNING, L_STOPPING, L_STOPPED, L_DESTROYED };

struct rio_listener {
	rio_loop *loop;
	int fd;
	enum lstate state;
	int paused_load;   /* a load error: wait for the timer or a release */
	int accept_cancelled; /* we cancelled the accept now in flight */
	uint32_t pause_ms; /* the current pause's length */
	uint32_t error_run; /* client/network errors since the last accept */
	int err;           /* what on_stop will report */
	uint32_t backoff_ms;
	rio_listener_opts o;
	rio_accept_counters c;
	rio_op accept_op, timer_op, cancel_accept_op, cancel_timer_op,
		stop_op;
	rio_listener *next, *prev; /* loop->listeners, until destroyed */
};

#define L_OF(op, m) ((rio_listener *)((char *)(op) - offsetof(rio_listener, m)))

enum eclass { E_CLIENT, E_NETWORK, E_LOAD, E_FATAL };

static enum eclass classify(int err)
{
	switch (err) {
	case ECONNABORTED: case EPROTO: case ECONNRESET: case EPERM:
	case EINTR: case ENOTCONN:
		return E_CLIENT;
	case ENETDOWN: case ENETUNREACH: case EHOSTDOWN: case EHOSTUNREACH:
	case ENONET: case ENOPROTOOPT: case EOPNOTSUPP: case ETIMEDOUT:
		return E_NETWORK;
	case EBADF: case ENOTSOCK: case EINVAL: case EFAULT: case ECANCELED:
		return E_FATAL;
	default: /* EMFILE ENFILE ENOBUFS ENOMEM, and the unknown: back off */
		return E_LOAD;
	}
}

static void accept_cb(rio_loop *loop, rio_op *op, int res);
static void timer_cb(rio_loop *loop, rio_op *op, int res);
static void cancel_accept_cb(rio_loop *loop, rio_op *op, int res);
static void cancel_timer_cb(rio_loop *loop, rio_op *op, int res);

static int want_accept(const rio_listener *l)
{
	return l->state == L_RUNNING && !l->paused_load &&
	       !(l->o.max_conns && l->c.live >= l->o.max_conns);
}

static void cancel(rio_listener *l, rio_op *target, rio_op *cop,
		   rio_cb *cb)
{
	if (rio_op_in_flight(target) && !rio_op_in_flight(cop))
		rio__must(cop, rio_cancel(l->loop, cop, target, cb));
}

static int busy(const rio_listener *l)
{
	return rio_op_in_flight(&l->accept_op) ||
	       rio_op_in_flight(&l->timer_op) ||
	       rio_op_in_flight(&l->cancel_accept_op) ||
	       rio_op_in_flight(&l->cancel_timer_op) ||
	       rio_op_in_flight(&l->stop_op);
}

/*
 * Multishot only while a whole accept queue fits under max_conns. One
 * kernel pass of a multishot accept takes every connection queued, and a
 * queue holds up to net.core.somaxconn (plus what completes its handshake
 * during the pass): past the limit those would have to be closed, and a
 * client that waited in the backlog is never reset because the server is
 * busy. Nearer the limit, one-shot accepts: one connection each, so the
 * limit holds however accepting resumes (a bulk release, the end of a
 * pause). The reactor delivers one connection at a time either way.
 */
enum { QUEUE_MARGIN = 64, QUEUE_DEFAULT = 4096 };

static uint32_t accept_queue_cap(void)
{
	static atomic_uint cap; /* read once per process */
	unsigned c = atomic_load_explicit(&cap, memory_order_relaxed);
	if (c)
		return c;
	c = QUEUE_DEFAULT;
	FILE *f = fopen("/proc/sys/net/core/somaxconn", "re");
	if (f) {
		unsigned v;
		if (fscanf(f, "%u", &v) == 1 && v > 0 && v < (1u << 24))
			c = v;
		fclose(f);
	}
	c += QUEUE_MARGIN;
	atomic_store_explicit(&cap, c, memory_order_relaxed);
	return c;
}

static unsigned accept_flags(const rio_listener *l)
{
	if (l->o.max_conns && l->o.max_conns - l->c.live <= accept_queue_cap())
		return 0;
	return RIO_MULTISHOT;
}

/* Make the ops in flight match the state. May run on_stop, after which `l`
 * may be gone: callers return right after kick(). */
static void kick(rio_listener *l)
{
	if (want_accept(l)) {
		if (!rio_op_in_flight(&l->accept_op)) {
			l->accept_cancelled = 0;
			rio__must(&l->accept_op,
				  rio_accept(l->loop, &l->accept_op, l->fd,
					     NULL, NULL, accept_flags(l),
					     accept_cb));
		}
	} else if (rio_op_in_flight(&l->accept_op)) {
		l->accept_cancelled = 1;
		cancel(l, &l->accept_op, &l->cancel_accept_op, cancel_accept_cb);
	}
	if (l->paused_load && l->state == L_RUNNING) {
		/* a timer still being cancelled is re-armed when it ends */
		if (!rio_op_in_flight(&l->timer_op))
			rio__must(&l->timer_op,
				  rio_timeout(l->loop, &l->timer_op,
					      (uint64_t)l->pause_ms * 1000000ull,
					      timer_cb));
	} else {
		cancel(l, &l->timer_op, &l->cancel_timer_op, cancel_timer_cb);
	}
	if (l->state == L_STOPPING && !busy(l)) {
		l->state = L_STOPPED;
		if (l->o.on_stop)
			l->o.on_stop(l, l->err, l->o.data);
	}
}

static void stop_with(rio_listener *l, int err)
{
	if (err) {
		l->c.fatal_errors++;
		l->err = err;
	}
	l->state = L_STOPPING;
}

/* Client and network errors re-arm at once: each one uses up a connection.
 * One that does not (an LSM refusing every accept with EPERM leaves the
 * connection queued) would spin, so a long run of them with no accept in
 * between pauses like a load error. */
enum { ERROR_RUN_MAX = 256 };

static void pause_load(rio_listener *l)
{
	l->paused_load = 1;
	l->pause_ms = l->backoff_ms;
	l->backoff_ms = l->backoff_ms * 2 > l->o.backoff_ms_max
				? l->o.backoff_ms_max
				: l->backoff_ms * 2;
}

static void accept_failed(rio_listener *l, int err)
{
	enum eclass k = classify(-err);
	l->c.last_error = err;
	if (k == E_CLIENT || k == E_NETWORK) {
		if (k == E_CLIENT)
			l->c.client_errors++;
		else
			l->c.network_errors++;
		if (++l->error_run >= ERROR_RUN_MAX) {
			l->error_run = 0;
			l->c.error_pauses++;
			pause_load(l);
		}
		return;
	}
	if (k == E_LOAD) {
		l->c.load_errors++;
		pause_load(l);
	} else {
		stop_with(l, err);
	}
}

/* The peer's address, the same on every backend: a multishot accept
 * cannot return one per connection, so it is asked of the socket. */
static int peer_of(int fd, struct sockaddr_storage *ss, socklen_t *len)
{
	*len = sizeof *ss;
	return getpeername(fd, (struct sockaddr *)ss, len) == 0;
}

static void accept_cb(rio_loop *loop, rio_op *op, int res)
{
	rio_listener *l = L_OF(op, accept_op);
	struct sockaddr_storage peer;
	socklen_t peer_len = sizeof peer;
	if (res >= 0) {
		if (!want_accept(l)) {
			/* the kernel accepted it before our cancel landed */
			close(res);
			l->c.shed++;
		} else if (!peer_of(res, &peer, &peer_len)) {
			/* reset before we could hand it out: the client's */
			int e = -errno;
			close(res);
			accept_failed(l, e);
		} else {
			l->c.accepted++;
			l->c.live++;
			if (l->c.live == l->o.max_conns)
				l->c.limit_pauses++;
			l->backoff_ms = l->o.backoff_ms_min;
			l->error_run = 0;
			l->o.on_accept(l, loop, res, (struct sockaddr *)&peer,
				      peer_len, l->o.data);
		}
	}
	if (op->flags & RIO_OP_F_MORE) {
		if (!want_accept(l))
			kick(l); /* over the limit, or stopped from on_accept */
		return;
	}
	/* Final. A -ECANCELED we asked for is no error. */
	if (res < 0 && !(res == -ECANCELED && l->accept_cancelled))
		accept_failed(l, res);
	kick(l);
}

static void timer_cb(rio_loop *loop, rio_op *op, int res)
{
	rio_listener *l = L_OF(op, timer_op);
	if (res == 0)
		l->paused_load = 0;
	kick(l);
}

/* One callback per cancel op: from an op alone there is no telling which
 * of the two it is (a single callback that guessed took the timer's
 * cancel for the accept's, and kicked a listener one rio_op off the real
 * one, when an early release cut a load pause short). */
static void cancel_accept_cb(rio_loop *loop, rio_op *op, int res)
{
	kick(L_OF(op, cancel_accept_op));
}

static void cancel_timer_cb(rio_loop *loop, rio_op *op, int res)
{
	kick(L_OF(op, cancel_timer_op));
}

static void stop_cb(rio_loop *loop, rio_op *op, int res)
{
	kick(L_OF(op, stop_op));
}

int rio_listener_start(rio_loop *loop, int fd, const rio_listener_opts *opts,
		       rio_listener **out)
{
	if (!loop || !opts || !opts->on_accept || !out || fd < 0)
		return -EINVAL;
	rio_listener_opts o = *opts;
	if (!o.backoff_ms_min)
		o.backoff_ms_min = 10;
	if (!o.backoff_ms_max)
		o.backoff_ms_max = o.backoff_ms_min > 1000 ? o.backoff_ms_min
							    : 1000;
	if (o.backoff_ms_min > o.backoff_ms_max)
		return -EINVAL;
	rio_listener *l = calloc(1, sizeof *l);
	if (!l)
		return -ENOMEM;
	l->loop = loop;
	l->fd = fd;
	l->o = o;
	l->backoff_ms = o.backoff_ms_min;
	l->next = loop->listeners;
	if (l->next)
		l->next->prev = l;
	loop->listeners = l;
	kick(l);
	*out = l;
	return 0;
}

static void unlink_listener(rio_listener *l)
{
	if (l->prev)
		l->prev->next = l->next;
	else
		l->loop->listeners = l->next;
	if (l->next)
		l->next->prev = l->prev;
	l->next = l->prev = NULL;
}

/* Stop a running listener; on_stop gets `err`. */
static void stop(rio_listener *l, int err)
{
	l->state = L_STOPPING;
	l->err = err;
	/* on_stop must run on a later turn: with nothing else in flight to
	 * carry it there, a post does (kick waits for it). */
	if (!busy(l))
		rio__must(&l->stop_op, rio_post(l->loop, &l->stop_op, stop_cb));
	kick(l);
}

int rio_listener_stop(rio_listener *l)
{
	if (!l)
		return -EINVAL;
	if (l->state != L_RUNNING)
		return -EALREADY;
	stop(l, 0);
	return 0;
}

void rio__listeners_cancel(rio_loop *loop)
{
	/* kick() never frees a listener (only destroy and release do), and
	 * runs no on_stop here: each stop leaves a post or a cancel pending */
	for (rio_listener *l = loop->listeners; l; l = l->next)
		if (l->state == L_RUNNING)
			stop(l, -ECANCELED);
}

int rio_listener_release(rio_listener *l)
{
	if (!l || l->c.live == 0)
		return -EINVAL;
	l->c.live--;
	if (l->state == L_DESTROYED) {
		if (l->c.live == 0)
			free(l);
		return 0;
	}
	if (l->paused_load && l->state == L_RUNNING) {
		l->paused_load = 0;
		l->c.early_resumes++;
	}
	if (l->state == L_RUNNING)
		kick(l);
	return 0;
}

void rio_listener_counters(const rio_listener *l, rio_accept_counters *out)
{
	*out = l->c;
}

int rio_listener_fd(const rio_listener *l)
{
	return l->fd;
}

int rio_listener_destroy(rio_listener *l)
{
	if (!l)
		return -EINVAL;
	if (l->state != L_STOPPED || busy(l))
		return -EBUSY;
	/* Connections still out: their owner will release them, and the
	 * last release frees the listener. */
	unlink_listener(l);
	if (l->c.live > 0) {
		l->state = L_DESTROYED;
		return 0;
	}
	free(l);
	return 0;
}

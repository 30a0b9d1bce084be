/*
 * The loop: backend selection, op validation and lifecycle, the turn, the
 * cross-thread post stack. Backends see ops only through submit/poll.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "internal.h"

uint64_t rio__now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static const char *const backend_names[] = {"auto", "uring", "epoll",
					     "kqueue"};

const char *rio_backend_name(rio_backend_kind kind)
{
	if ((unsigned)kind >= sizeof backend_names / sizeof *backend_names)
		return NULL;
	return backend_names[kind];
}

const char *rio_backend_reason_name(rio_backend_reason reason)
{
	static const char *const names[] = {
		"default", "requested", "env", "io_uring ENOSYS",
		"io_uring EPERM", "io_uring disabled", "io_uring memlock",
		"io_uring probe", "io_uring flags", "fault injected",
	};
	if ((unsigned)reason >= sizeof names / sizeof *names)
		return NULL;
	return names[reason];
}

int rio_backend_parse(const char *name)
{
	if (!name)
		return -EINVAL;
	for (unsigned i = 0; i < sizeof backend_names / sizeof *backend_names;
	     i++)
		if (strcmp(name, backend_names[i]) == 0)
			return (int)i;
	if (strcmp(name, "io_uring") == 0)
		return RIO_BACKEND_URING;
	return -EINVAL;
}

/* The backends this build has, by kind; NULL where not built. */
static const struct rio__backend *backend_for(rio_backend_kind kind)
{
	if (kind == RIO_BACKEND_URING)
		return &rio__backend_uring;
	for (int i = 0; rio__fallbacks[i]; i++)
		if (kind == RIO_BACKEND_AUTO || rio__fallbacks[i]->kind == kind)
			return rio__fallbacks[i];
	return NULL;
}

/* io_uring failures that mean "this machine won't do io_uring", as the
 * backend classified them: auto moves on to the readiness fallback.
 * Resource errors (EMFILE, plain ENOMEM) are the caller's to see. */
static int uring_refused(rio_backend_reason r)
{
	return r >= RIO_REASON_URING_ENOSYS && r <= RIO_REASON_FAULT;
}

static int try_backend(rio_loop *loop, const struct rio__backend *be,
		       const rio_loop_opts *opts, char *why, size_t why_len)
{
	loop->be = be;
	loop->kind = be->kind;
	int r = be->init(loop, opts, why, why_len);
	if (r < 0)
		loop->be = NULL;
	return r;
}

static int select_backend(rio_loop *loop, const rio_loop_opts *opts)
{
	const char *env = getenv("RINGIO_BACKEND");
	rio_backend_kind want = opts->backend;
	rio_backend_reason why_chosen =
		want ? RIO_REASON_REQUESTED : RIO_REASON_DEFAULT;
	if (env && *env) {
		int k = rio_backend_parse(env);
		if (k < 0)
			return -EINVAL;
		want = (rio_backend_kind)k;
		why_chosen = RIO_REASON_ENV;
	}
	loop->reason = why_chosen;
	char why[160] = "";
	if (want == RIO_BACKEND_AUTO || want == RIO_BACKEND_URING) {
		int r = try_backend(loop, &rio__backend_uring, opts, why,
				    sizeof why);
		if (r == 0 || want == RIO_BACKEND_URING ||
		    !uring_refused(loop->reason))
			return r;
		const struct rio__backend *fb = backend_for(RIO_BACKEND_AUTO);
		if (!fb)
			return r;
		rio_backend_reason refused = loop->reason;
		r = try_backend(loop, fb, opts, why + strlen(why), 0);
		if (r == 0) {
			loop->reason = refused;
			char tail[sizeof loop->msg];
			snprintf(tail, sizeof tail, "%s: %s", fb->name, why);
			memcpy(loop->msg, tail, sizeof loop->msg);
		}
		return r;
	}
	const struct rio__backend *be = backend_for(want);
	if (!be)
		return -ENOSYS;
	return try_backend(loop, be, opts, why, sizeof why);
}

int rio_loop_create(rio_loop **out, const rio_loop_opts *opts)
{
	static const rio_loop_opts defaults;
	if (!out)
		return -EINVAL;
	*out = NULL;
	if (!opts)
		opts = &defaults;
	if (opts->flags || (unsigned)opts->backend > RIO_BACKEND_KQUEUE)
		return -EINVAL;
	rio_loop *loop = calloc(1, sizeof *loop);
	if (!loop)
		return -ENOMEM;
	atomic_init(&loop->posted, NULL);
	int r = rio__faults_init(&loop->faults);
	if (r == 0)
		r = select_backend(loop, opts);
	if (r < 0) {
		free(loop);
		return r;
	}
	*out = loop;
	return 0;
}

int rio_loop_destroy(rio_loop *loop)
{
	if (!loop)
		return -EINVAL;
	if (loop->in_run || loop->active || loop->npools ||
	    atomic_load(&loop->posted_count))
		return -EBUSY;
	loop->be->fini(loop);
	free(loop);
	return 0;
}

rio_backend_kind rio_loop_backend(const rio_loop *loop,
				  rio_backend_reason *reason, const char **msg)
{
	if (reason)
		*reason = loop->reason;
	if (msg)
		*msg = loop->msg;
	return loop->kind;
}

void rio_loop_counters(const rio_loop *loop, rio_counters *out)
{
	*out = loop->ctr;
	out->ops_submitted += atomic_load(&loop->posts_total);
}

void rio_loop_stop(rio_loop *loop)
{
	atomic_store(&loop->stop, 1);
	loop->be->wake(loop);
}

void rio_loop_wake(rio_loop *loop)
{
	loop->be->wake(loop);
}

/* ---- op lifecycle ---- */

void rio_op_init(rio_op *op)
{
	memset(op, 0, sizeof *op);
}

void rio_op_set_deadline(rio_op *op, uint64_t timeout_ns)
{
	op->deadline_ns = timeout_ns;
}

int rio_op_in_flight(const rio_op *op)
{
	return op->priv.state != RIO__ST_IDLE;
}

void rio__complete(rio_loop *loop, rio_op *op, int res, unsigned flags)
{
	int internal = op->priv.bits & RIO__B_INTERNAL;
	op->res = res;
	op->flags = flags;
	if (!(flags & RIO_OP_F_MORE)) {
		assert(op->priv.state != RIO__ST_IDLE);
		op->priv.state = RIO__ST_IDLE;
		op->priv.bits = 0;
		if (!internal) {
			assert(loop->active > 0);
			loop->active--;
			loop->ctr.ops_completed++;
		}
	}
	if (!(flags & RIO_OP_F_MORE) && op->priv.kind == RIO__OP_RECV_MULTI)
		((rio_bufpool *)op->priv.p0)->users--;
	if (!internal)
		loop->ctr.completions++;
	op->priv.cb(loop, op, res);
}

void rio__defer(rio_loop *loop, rio_op *op, int res)
{
	op->res = res;
	op->priv.state = RIO__ST_PENDING;
	rio__opq_push(&loop->pending, op);
}

/* Common checks and bookkeeping of every submit call. */
static int take(rio_loop *loop, rio_op *op, rio_cb *cb, enum rio__kind kind,
		int fd)
{
	if (!loop || !op || !cb)
		return -EINVAL;
	if (op->priv.state != RIO__ST_IDLE)
		return -EBUSY;
	op->priv.cb = cb;
	op->priv.kind = (uint16_t)kind;
	op->priv.fd = fd;
	op->priv.bits = 0;
	op->priv.u1 = 0;
	op->flags = 0;
	op->buf = NULL;
	loop->active++;
	loop->ctr.ops_submitted++;
	return 0;
}

/* Which ops honour a deadline is decided here, once, for every backend:
 * not multishot ops (validated away), not timeouts (they are one), and not
 * close and cancel, which never wait on a peer. */
static int submit(rio_loop *loop, rio_op *op)
{
	unsigned k = op->priv.kind;
	if (op->deadline_ns && !(op->priv.bits & RIO__B_MULTISHOT) &&
	    k != RIO__OP_TIMEOUT && k != RIO__OP_CLOSE && k != RIO__OP_CANCEL)
		op->priv.bits |= RIO__B_DEADLINE;
	op->priv.state = RIO__ST_KERNEL;
	loop->be->submit(loop, op);
	return 0;
}

int rio_accept(rio_loop *loop, rio_op *op, int fd, struct sockaddr *addr,
	       socklen_t *addrlen, unsigned flags, rio_cb *cb)
{
	if (flags & ~RIO_MULTISHOT)
		return -EINVAL;
	if ((flags & RIO_MULTISHOT) &&
	    (addr || addrlen || (op && op->deadline_ns)))
		return -EINVAL;
	if ((addr == NULL) != (addrlen == NULL))
		return -EINVAL;
	int r = take(loop, op, cb, RIO__OP_ACCEPT, fd);
	if (r)
		return r;
	op->priv.p0 = addr;
	op->priv.p1 = addrlen;
	if (flags & RIO_MULTISHOT)
		op->priv.bits |= RIO__B_MULTISHOT;
	return submit(loop, op);
}

int rio_connect(rio_loop *loop, rio_op *op, int fd,
		const struct sockaddr *addr, socklen_t addrlen, rio_cb *cb)
{
	if (!addr || addrlen == 0)
		return -EINVAL;
	int r = take(loop, op, cb, RIO__OP_CONNECT, fd);
	if (r)
		return r;
	op->priv.p0 = (void *)addr;
	op->priv.u0 = addrlen;
	return submit(loop, op);
}

static int submit_io(rio_loop *loop, rio_op *op, enum rio__kind kind, int fd,
		     void *p, uint64_t len, int msg_flags, rio_cb *cb)
{
	if (!p && len)
		return -EINVAL;
	int r = take(loop, op, cb, kind, fd);
	if (r)
		return r;
	op->priv.p0 = p;
	op->priv.u0 = len;
	op->priv.n0 = (uint32_t)msg_flags;
	return submit(loop, op);
}

int rio_recv(rio_loop *loop, rio_op *op, int fd, void *buf, size_t len,
	     int msg_flags, rio_cb *cb)
{
	return submit_io(loop, op, RIO__OP_RECV, fd, buf, len, msg_flags, cb);
}

int rio_send(rio_loop *loop, rio_op *op, int fd, const void *buf, size_t len,
	     int msg_flags, rio_cb *cb)
{
	return submit_io(loop, op, RIO__OP_SEND, fd, (void *)buf, len,
			 msg_flags | MSG_NOSIGNAL, cb);
}

int rio_sendmsg(rio_loop *loop, rio_op *op, int fd, const struct msghdr *msg,
		int msg_flags, rio_cb *cb)
{
	if (!msg)
		return -EINVAL;
	return submit_io(loop, op, RIO__OP_SENDMSG, fd, (void *)msg, 0,
			 msg_flags | MSG_NOSIGNAL, cb);
}

int rio_recvmsg(rio_loop *loop, rio_op *op, int fd, struct msghdr *msg,
		int msg_flags, rio_cb *cb)
{
	if (!msg)
		return -EINVAL;
	return submit_io(loop, op, RIO__OP_RECVMSG, fd, msg, 0, msg_flags, cb);
}

static int submit_splice(rio_loop *loop, rio_op *op, enum rio__kind kind,
			 int sock, int pipe, size_t len, rio_cb *cb)
{
	if (pipe < 0 || len == 0)
		return -EINVAL;
	int r = take(loop, op, cb, kind, sock);
	if (r)
		return r;
	op->priv.u0 = len > INT_MAX ? INT_MAX : len;
	op->priv.n0 = (uint32_t)pipe;
	return submit(loop, op);
}

int rio_splice_in(rio_loop *loop, rio_op *op, int sock, int pipe_w,
		  size_t len, rio_cb *cb)
{
	return submit_splice(loop, op, RIO__OP_SPLICE_IN, sock, pipe_w, len, cb);
}

int rio_splice_out(rio_loop *loop, rio_op *op, int pipe_r, int sock,
		   size_t len, rio_cb *cb)
{
	return submit_splice(loop, op, RIO__OP_SPLICE_OUT, sock, pipe_r, len,
			     cb);
}

int rio_recv_multishot(rio_loop *loop, rio_op *op, int fd, rio_bufpool *pool,
		       rio_cb *cb)
{
	if (!pool || pool->loop != loop || (op && op->deadline_ns))
		return -EINVAL;
	int r = take(loop, op, cb, RIO__OP_RECV_MULTI, fd);
	if (r)
		return r;
	op->priv.p0 = pool;
	op->priv.p1 = NULL; /* io_uring: the cancel op aimed at it */
	op->priv.bits |= RIO__B_MULTISHOT;
	/* On a datagram socket 0 bytes is a datagram: the recv goes on. */
	int type = 0;
	socklen_t tl = sizeof type;
	if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &tl) == 0 &&
	    (type == SOCK_DGRAM || type == SOCK_SEQPACKET))
		op->priv.bits |= RIO__B_DGRAM;
	pool->users++;
	return submit(loop, op);
}

int rio_poll(rio_loop *loop, rio_op *op, int fd, unsigned events,
	     rio_cb *cb)
{
	if (events & ~(unsigned)(POLLIN | POLLOUT | POLLPRI | POLLRDHUP |
				 POLLERR | POLLHUP))
		return -EINVAL;
	int r = take(loop, op, cb, RIO__OP_POLL, fd);
	if (r)
		return r;
	/* io_uring reports a peer's FIN to any poll: so do all backends */
	op->priv.n0 = events | POLLERR | POLLHUP | POLLRDHUP;
	return submit(loop, op);
}

int rio_close(rio_loop *loop, rio_op *op, int fd, rio_cb *cb)
{
	int r = take(loop, op, cb, RIO__OP_CLOSE, fd);
	if (r)
		return r;
	return submit(loop, op);
}

int rio_timeout(rio_loop *loop, rio_op *op, uint64_t timeout_ns, rio_cb *cb)
{
	if (op && op->deadline_ns)
		return -EINVAL;
	int r = take(loop, op, cb, RIO__OP_TIMEOUT, -1);
	if (r)
		return r;
	op->priv.u0 = timeout_ns;
	return submit(loop, op);
}

int rio_cancel(rio_loop *loop, rio_op *op, rio_op *target, rio_cb *cb)
{
	if (!target || target == op)
		return -EINVAL;
	int r = take(loop, op, cb, RIO__OP_CANCEL, -1);
	if (r)
		return r;
	op->priv.p0 = target;
	switch (target->priv.state) {
	case RIO__ST_IDLE:
		rio__defer(loop, op, -ENOENT);
		return 0;
	case RIO__ST_PENDING:
	case RIO__ST_POSTED:
		/* Its result is already decided; it cannot be stopped. */
		rio__defer(loop, op, -EALREADY);
		return 0;
	default:
		return submit(loop, op);
	}
}

/* ---- cross-thread posts ---- */

int rio_post(rio_loop *loop, rio_op *op, rio_cb *cb)
{
	if (!loop || !op || !cb)
		return -EINVAL;
	if (op->priv.state != RIO__ST_IDLE)
		return -EBUSY;
	op->priv.cb = cb;
	op->priv.kind = RIO__OP_POST;
	op->priv.bits = 0;
	op->priv.state = RIO__ST_POSTED;
	op->flags = 0;
	atomic_fetch_add(&loop->posted_count, 1);
	atomic_fetch_add(&loop->posts_total, 1);
	rio_op *head = atomic_load_explicit(&loop->posted, memory_order_relaxed);
	do
		op->priv.next = head;
	while (!atomic_compare_exchange_weak_explicit(
		&loop->posted, &head, op, memory_order_release,
		memory_order_relaxed));
	/* Only the post that finds the stack empty needs to wake the loop:
	 * later ones ride on the same wakeup. */
	if (head == NULL)
		loop->be->wake(loop);
	return 0;
}

/* Move posted ops, oldest first, onto the pending queue. */
static void drain_posted(rio_loop *loop)
{
	rio_op *op = atomic_exchange_explicit(&loop->posted, NULL,
					      memory_order_acquire);
	rio_op *rev = NULL;
	while (op) {
		rio_op *next = op->priv.next;
		op->priv.next = rev;
		rev = op;
		op = next;
	}
	while (rev) {
		rio_op *next = rev->priv.next;
		atomic_fetch_sub(&loop->posted_count, 1);
		loop->active++;
		rio__defer(loop, rev, 0);
		rev = next;
	}
}

/* Run the completions queued so far; ones queued by these callbacks wait
 * for the next call, so a callback cannot recurse. Results are delivered
 * in the order they were decided: a backend calls this before it runs a
 * callback for a result it has just found, and each turn starts with it. */
unsigned rio__flush_pending(rio_loop *loop)
{
	rio__opq q;
	rio__opq_take(&q, &loop->pending);
	rio_op *op;
	unsigned n = 0;
	for (; (op = rio__opq_pop(&q)); n++)
		rio__complete(loop, op, op->res, 0);
	return n;
}

static unsigned in_flight(rio_loop *loop)
{
	return loop->active + atomic_load(&loop->posted_count);
}

int rio_loop_run(rio_loop *loop, rio_run_mode mode)
{
	if (!loop || (unsigned)mode > RIO_RUN_NOWAIT)
		return -EINVAL;
	if (!loop->owned) {
		int b = loop->be->bind ? loop->be->bind(loop) : 0;
		if (b < 0)
			return b;
		loop->owner = pthread_self();
		loop->owned = 1;
	} else if (!pthread_equal(loop->owner, pthread_self())) {
		return -EPERM;
	}
	if (loop->in_run)
		return -EBUSY;
	loop->in_run = 1;
	int r = 0;
	for (;;) {
		/* decided before this turn: a turn that delivers them has
		 * done its work and does not wait */
		unsigned early = rio__flush_pending(loop);
		drain_posted(loop);
		int block = mode != RIO_RUN_NOWAIT && !early &&
			    rio__opq_empty(&loop->pending) &&
			    !atomic_load(&loop->stop) && loop->active > 0;
		r = loop->be->poll(loop, block);
		if (r < 0)
			break;
		rio__flush_pending(loop);
		if (atomic_exchange(&loop->stop, 0) || mode != RIO_RUN_DEFAULT ||
		    in_flight(loop) == 0)
			break;
	}
	loop->in_run = 0;
	return r < 0 ? r : (int)in_flight(loop);
}


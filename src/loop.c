/*
 * The loop: backend selection, the turn, and the cross-thread post stack.
 * The op lifecycle is op.c's; backends see ops only through submit/poll.
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
	atomic_init(&loop->woken, NULL);
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
	rio__fdtab_free(&loop->fds);
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

/* ---- cross-thread posts ---- */

/* Push op on a cross-thread stack through its `link` field (lock-free,
 * any thread); returns the old top. */
static rio_op *push(_Atomic(rio_op *) *top, rio_op *op, rio_op **link)
{
	rio_op *head = atomic_load_explicit(top, memory_order_relaxed);
	do
		*link = head;
	while (!atomic_compare_exchange_weak_explicit(
		top, &head, op, memory_order_release, memory_order_relaxed));
	return head;
}

int rio_post(rio_loop *loop, rio_op *op, rio_cb *cb)
{
	int r = rio__op_claim(loop, op, cb, RIO__OP_POST);
	if (r)
		return r;
	op->priv.fd = -1;
	op->priv.state = RIO__ST_POSTED;
	atomic_fetch_add(&loop->posted_count, 1);
	atomic_fetch_add(&loop->posts_total, 1);
	/* Only the post that finds the stack empty needs to wake the loop:
	 * later ones ride on the same wakeup. */
	if (push(&loop->posted, op, &op->priv.next) == NULL)
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

/* ---- wakeup handles ---- */

int rio_wakeup_start(rio_loop *loop, rio_op *op, rio_cb *cb)
{
	if (!op || op->deadline_ns)
		return -EINVAL;
	int r = rio__op_take(loop, op, cb, RIO__OP_WAKEUP, -1);
	if (r)
		return r;
	op->priv.bits |= RIO__B_MULTISHOT;
	op->priv.a.wakeup.loop = loop;
	op->priv.state = RIO__ST_KERNEL; /* the core's: no backend sees it */
	return 0;
}

int rio_wakeup_send(rio_loop *loop, rio_op *op)
{
	if (!loop || !op || op->priv.kind != RIO__OP_WAKEUP ||
	    op->priv.a.wakeup.loop != loop)
		return -EINVAL; /* another loop's stack would deliver it there */
	/* one push per merge: the drain clears `pending` before the
	 * callback, so a send during it pushes again; after a cancel it
	 * stays set and a send does nothing */
	if (__atomic_exchange_n(&op->priv.a.wakeup.pending, 1,
				__ATOMIC_ACQ_REL))
		return 0;
	if (push(&loop->woken, op, &op->priv.a.wakeup.next) == NULL)
		loop->be->wake(loop);
	return 0;
}

/* Deliver the woken handles, oldest first. `pending` is cleared with an
 * exchange, not a store: every send that found it set (and so pushed
 * nothing) comes earlier in its modification order, and the acquire here
 * makes what those senders did before sending visible to the callback.
 * A release store followed by the callback's loads may be reordered
 * (store to load: x86 allows it), and a send merged into a callback that
 * read stale data would never be seen. A cancelled handle keeps
 * `pending` set (rio__wakeup_cancel): this send is its last one. */
void rio__drain_woken(rio_loop *loop)
{
	rio_op *op = atomic_exchange_explicit(&loop->woken, NULL,
					      memory_order_acquire);
	rio_op *rev = NULL;
	while (op) { /* oldest first */
		rio_op *next = op->priv.a.wakeup.next;
		op->priv.a.wakeup.next = rev;
		rev = op;
		op = next;
	}
	while (rev) {
		rio_op *next = rev->priv.a.wakeup.next;
		rev->priv.a.wakeup.next = NULL;
		/* only a running handle is ever pushed (see the cancel) */
		if (rev->priv.kind == RIO__OP_WAKEUP &&
		    rev->priv.state == RIO__ST_KERNEL) {
			int last = !!(rev->priv.bits & RIO__B_CANCELLED);
			__atomic_exchange_n(&rev->priv.a.wakeup.pending, last,
					    __ATOMIC_ACQ_REL);
			rio__complete(loop, rev, 0, RIO_OP_F_MORE);
			if (last)
				rio__defer(loop, rev, -ECANCELED);
		}
		rev = next;
	}
}

/* A cancel of a running handle (cancel_here). It runs no callback (a
 * callback never recurses, and one that called rio_cancel again met the
 * cancel op half taken). It sets `pending` for good, so that no send
 * pushes the op again: one that comes after it merges into nothing (it
 * is dropped). One that came before it is on the woken stack, or about
 * to be by a sender that then wakes the loop: the drain delivers it,
 * then ends the handle; otherwise the handle ends now. */
int rio__wakeup_cancel(rio_loop *loop, rio_op *op)
{
	if (op->priv.bits & RIO__B_CANCELLED)
		return -EALREADY; /* on its way to its final completion */
	op->priv.bits |= RIO__B_CANCELLED;
	if (!__atomic_exchange_n(&op->priv.a.wakeup.pending, 1,
				 __ATOMIC_ACQ_REL))
		rio__defer(loop, op, -ECANCELED);
	return 0;
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
		if (atomic_load_explicit(&loop->woken, memory_order_relaxed)) {
			rio__drain_woken(loop);
			early = 1; /* this turn's work: do not wait */
		}
		rio__resume_starved(loop);
		int block = mode != RIO_RUN_NOWAIT && !early &&
			    rio__opq_empty(&loop->pending) &&
			    !atomic_load(&loop->stop) && loop->active > 0;
		r = loop->be->poll(loop, block);
		if (r < 0)
			break;
		rio__flush_pending(loop);
		/* a send that woke this poll: delivered in this turn */
		if (atomic_load_explicit(&loop->woken, memory_order_relaxed))
			rio__drain_woken(loop);
		if (atomic_exchange(&loop->stop, 0) || mode != RIO_RUN_DEFAULT ||
		    in_flight(loop) == 0)
			break;
	}
	loop->in_run = 0;
	return r < 0 ? r : (int)in_flight(loop);
}


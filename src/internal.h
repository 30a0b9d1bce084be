/*
 * What crosses files inside the library: the loop, the backend interface
 * and the op lifecycle helpers. Nothing here is exported.
 */
#ifndef RIO_INTERNAL_H
#define RIO_INTERNAL_H

#include <assert.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include "ringio.h"
#include "queue.h"
#include "fault.h"

#define RIO__HIDDEN __attribute__((visibility("hidden")))

/* op->priv.kind */
enum rio__kind {
	RIO__OP_NONE = 0,
	RIO__OP_ACCEPT,
	RIO__OP_CONNECT,
	RIO__OP_RECV,
	RIO__OP_SEND,
	RIO__OP_RECVMSG,
	RIO__OP_SENDMSG,
	RIO__OP_RECV_MULTI,
	RIO__OP_SPLICE_IN,  /* priv.fd: the socket, n0: the pipe, u0: len */
	RIO__OP_SPLICE_OUT,
	RIO__OP_CLOSE,
	RIO__OP_TIMEOUT,
	RIO__OP_CANCEL,
	RIO__OP_POST,
	RIO__OP_WAKE, /* internal: the loop's wakeup channel */
	RIO__OP_POLL, /* priv.n0: the poll(2) events asked for */
};

/* op->priv.state: who holds the op now. */
enum rio__state {
	RIO__ST_IDLE = 0, /* the caller's */
	RIO__ST_PENDING,  /* result known, on loop->pending for the next turn */
	RIO__ST_POSTED,   /* on the cross-thread stack */
	RIO__ST_KERNEL,   /* submitted to the kernel / armed in the reactor */
	RIO__ST_SQWAIT,   /* waiting for room in the submission queue */
	RIO__ST_PARKED,   /* multishot recv waiting for pool buffers */
};

/* op->priv.bits */
#define RIO__B_MULTISHOT 0x01u
#define RIO__B_CANCELLED 0x02u /* a cancel or close asked it to stop */
#define RIO__B_INTERNAL 0x08u  /* the loop's own op: not counted as active */
#define RIO__B_DEADLINE 0x10u  /* its deadline applies (set by the core) */
#define RIO__B_FDCOUNTED 0x20u /* counted in the backend's per-fd table */
#define RIO__B_FAULTEND 0x40u  /* a fault is ending it with priv.n0 (errno) */
#define RIO__B_CAPPED 0x80u    /* io_uring: armed with a length cap */
#define RIO__B_CLOSED 0x10000u /* io_uring: a close's own CQEs are in */
#define RIO__B_RETRY 0x20000u  /* io_uring: resubmitted after -EAGAIN */
#define RIO__B_DGRAM 0x40000u  /* multishot recv on a datagram socket: a
				* result of 0 is an empty datagram, not EOF */
#define RIO__B_CQES_SHIFT 8    /* backend: completions still outstanding */
#define RIO__B_CQES_MASK (0xffu << RIO__B_CQES_SHIFT)

/*
 * A backend: one file of static functions and one of these. The core calls
 * nothing else. Every op handed to submit() is validated and counted; the
 * backend completes it (exactly once per result) through rio__complete().
 */
struct rio__backend {
	const char *name;
	rio_backend_kind kind;
	/* Set up; on failure return -errno and say why in `why`. */
	int (*init)(rio_loop *loop, const rio_loop_opts *opts, char *why,
		    size_t why_len);
	void (*fini)(rio_loop *loop);
	/* The first rio_loop_run(), on the thread that will own the loop;
	 * -errno fails that run. May be NULL. */
	int (*bind)(rio_loop *loop);
	/* Take an op (any kind but POST). Never completes it inline. */
	void (*submit)(rio_loop *loop, rio_op *op);
	/* Flush submissions, wait for events if `block`, run completions. */
	int (*poll)(rio_loop *loop, int block);
	/* Wake a blocked poll(); any thread. */
	void (*wake)(rio_loop *loop);
	int (*pool_init)(rio_bufpool *pool);
	void (*pool_fini)(rio_bufpool *pool);
	/* Buffer `id` is free again: lend it to the kernel / the reactor. */
	void (*pool_put)(rio_bufpool *pool, uint16_t id);
	/* The readiness fallback's poller (epoll, kqueue); NULL otherwise. */
	const struct rio__poller *poller;
};

RIO__HIDDEN extern const struct rio__backend rio__backend_uring;
/* The readiness backends this build has, NULL-terminated, in order of
 * preference (fallback/backends.c, generated per platform). */
RIO__HIDDEN extern const struct rio__backend *const rio__fallbacks[];

struct rio_loop {
	const struct rio__backend *be;
	void *be_data;
	rio_backend_kind kind;
	rio_backend_reason reason;
	char msg[192];
	uint32_t active;   /* user ops in flight (loop thread only) */
	uint32_t npools;
	uint16_t next_bgid;
	int in_run;
	int owned;         /* owner is set: the loop has been run */
	pthread_t owner;   /* the thread that first ran the loop */
	rio__opq pending;  /* completions to deliver on the next turn */
	_Atomic(rio_op *) posted;    /* cross-thread stack, newest first */
	atomic_uint posted_count;
	atomic_ulong posts_total;   /* counted apart: any thread posts */
	atomic_int stop;
	rio_counters ctr;
	struct rio__faults faults; /* test builds: the fault plan */
};

struct rio_bufpool {
	rio_loop *loop;
	unsigned char *mem;
	size_t mem_len;
	size_t size;
	unsigned count;
	uint16_t bgid;
	uint32_t users;        /* ops in flight that use this pool */
	unsigned char *lent;   /* bitmap: buffer is the caller's */
	unsigned nlent;        /* buffers the caller holds */
	void *be;              /* backend state (io_uring: the buffer ring) */
};

/* Deliver one result to op's callback. Without RIO_OP_F_MORE in `flags` it
 * is the final one: the op goes back to the caller first. */
RIO__HIDDEN void rio__complete(rio_loop *loop, rio_op *op, int res,
			       unsigned flags);
/* Complete op with `res` on the next turn (errors found while submitting). */
RIO__HIDDEN void rio__defer(rio_loop *loop, rio_op *op, int res);
/* Deliver the deferred results queued so far (not those their callbacks
 * defer): a backend calls it before a callback for a result decided after
 * them, so that results reach the caller in the order they were decided
 * (two ops on one fd: the bytes, the connections, in the kernel's order). */
RIO__HIDDEN unsigned rio__flush_pending(rio_loop *loop);
RIO__HIDDEN uint64_t rio__now_ns(void);

/* One non-blocking splice(2) for a RIO__OP_SPLICE_* op: bytes or -errno.
 * With `sock_ready` (the socket was reported or may be ready), an EAGAIN
 * that is the pipe's becomes -ENOBUFS / -ENODATA: waiting on the socket
 * would never end it. -EAGAIN then means a spurious wakeup: wait again. */
RIO__HIDDEN int rio__splice_try(const rio_op *op, int sock_ready);

/* Buffer-pool bookkeeping shared by the backends. */
RIO__HIDDEN void rio__pool_mark_lent(rio_bufpool *pool, uint16_t id);

static inline unsigned rio__cqes(const rio_op *op)
{
	return (op->priv.bits & RIO__B_CQES_MASK) >> RIO__B_CQES_SHIFT;
}

static inline void rio__set_cqes(rio_op *op, unsigned n)
{
	op->priv.bits = (op->priv.bits & ~RIO__B_CQES_MASK) |
			(n << RIO__B_CQES_SHIFT);
}

#endif

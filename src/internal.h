/*
 * What crosses files inside the library: the loop, the backend interface
 * and the op lifecycle helpers. Nothing here is exported.
 */
#ifndef RIO_INTERNAL_H
#define RIO_INTERNAL_H

#include <assert.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include "ringio.h"
#include "queue.h"
#include "fault.h"
#include "fdtab.h"

#define RIO__HIDDEN __attribute__((visibility("hidden")))

/*
 * The op's private area (rio_op.priv), field by field. No field changes
 * meaning with the op's kind or the backend:
 *   cb          the callback
 *   next, prev  the one queue the op is on (queue.h)
 *   live_next, live_prev   the loop's list of user ops in flight (all
 *               but posts), oldest first: what rio_loop_cancel_all ends
 *   due_ns      when time ends it (CLOCK_MONOTONIC ns): its deadline, or a
 *               timeout's expiry; set by the core at submit
 *   a.*         the arguments of its kind (below)
 *   be.uring    io_uring's scratch: CQEs still to come, RIO__U_* bits
 *   be.reactor  the fallback's scratch: its slot + 1 in the timer heap
 *               (each backend sets its scratch at submit; the core does not)
 *   fd          the file it works on (-1: none)
 *   gen         the generation of its fd when it was submitted (fdtab.c)
 *   fault_err   the errno a fault hook is ending it with
 *   kind, state, bits   below
 *
 * The arguments, by kind:
 *   a.io        RECV, SEND, READ, WRITE (buf, len), RECVMSG, SENDMSG
 *               (msg); the MSG_* flags (READ, WRITE: none); bytes done
 *               so far under MSG_WAITALL
 *   a.accept    ACCEPT: where the peer's address goes (may be NULL)
 *   a.connect   CONNECT: the address
 *   a.multi     RECV_MULTI, RECVMSG_MULTI: the pool; the cancel aimed at it
 *               (io_uring); RECVMSG_MULTI: the room for control data in
 *               each buffer (a multiple of 8)
 *   a.sendto    SENDTO: the datagram, where to, the MSG_* flags
 *   a.splice    SPLICE_IN, SPLICE_OUT: the pipe end; bytes at most
 *   a.poll      POLL: the poll(2) events asked for
 *   a.shutdown  SHUTDOWN: shutdown(2)'s `how`
 *   a.wakeup    WAKEUP: the next on the loop's stack of woken ones; a
 *               send is pending (both written by senders: atomics); the
 *               loop it runs on (a send to another is refused)
 *   a.signal    SIGNAL: a signal read that counted more than one, and
 *               how many of it are still to deliver (fd is its signalfd,
 *               or what the backend's sig_open made, which the core
 *               closes at its final completion)
 *   a.cancel    CANCEL: the target; whether the target ended on its own
 *               first (io_uring)
 *   a.close     CLOSE: the next close waiting on the same fd number; ops
 *               of the generation it ends still in flight
 *   a.timeout   TIMEOUT: its length
 *   a.composite RELAY, CONNECT_ANY: what rio_cancel() of it calls (set by
 *               relay.c / upstream.c after rio__op_take): ask it to end
 *               with -ECANCELED; returns what the cancel completes with,
 *               0, or -EALREADY when its result is decided
 */

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
	RIO__OP_RECVMSG_MULTI, /* datagrams with their senders, into a pool */
	RIO__OP_SENDTO,
	RIO__OP_SPLICE_IN,
	RIO__OP_SPLICE_OUT,
	RIO__OP_CLOSE,
	RIO__OP_TIMEOUT,
	RIO__OP_CANCEL,
	RIO__OP_POST,
	RIO__OP_WAKE, /* internal: the loop's wakeup channel */
	RIO__OP_POLL,
	RIO__OP_SHUTDOWN,
	RIO__OP_SIGNAL,      /* multishot, on a signalfd of its own */
	RIO__OP_WAKEUP,      /* the core's alone: rio_wakeup_send wakes it */
	RIO__OP_READ,        /* read(2) / write(2), any fd (a.io) */
	RIO__OP_WRITE,
	RIO__OP_RELAY,       /* composite (relay.c): no backend sees it */
	RIO__OP_CONNECT_ANY, /* composite (upstream.c) */
	RIO__OP_KINDS
};

/* Which readiness an op waits for, in the fallback. */
enum rio__side {
	RIO__SIDE_NONE = 0, /* none: timers, cancels, closes, posts */
	RIO__SIDE_READ,     /* data or connections to take */
	RIO__SIDE_WRITE,    /* room to write, or a connect's outcome */
	RIO__SIDE_ANY,      /* rio_poll: whatever it asked for */
};

/* What the backends and the core need to know of a kind; one row each
 * (op.c). */
struct rio__kind_info {
	uint8_t side;     /* enum rio__side */
	uint8_t tracked;  /* counted on its fd: a close of the fd waits for it */
	uint8_t deadline; /* rio_op.deadline_ns applies (if not multishot) */
	uint8_t again;    /* a -EAGAIN from the kernel is no result: retry */
	uint8_t io;       /* a.io: bytes moved, MSG_WAITALL honoured */
	uint8_t pool;     /* receives into a buffer pool (a.multi) */
	uint8_t composite; /* runs ops of its own; no backend sees it
			      (a.composite) */
	uint8_t batch;    /* the fallback sends a turn's worth on one fd in
			     one call (sendmmsg): queued, never tried at
			     submit */
};

RIO__HIDDEN extern const struct rio__kind_info rio__kinds[RIO__OP_KINDS];

static inline const struct rio__kind_info *rio__kind(const rio_op *op)
{
	return &rio__kinds[op->priv.kind];
}

/* op->priv.state: who holds the op now. */
enum rio__state {
	RIO__ST_IDLE = 0, /* the caller's */
	RIO__ST_PENDING,  /* result known, on loop->pending for the next turn */
	RIO__ST_POSTED,   /* on the cross-thread stack */
	RIO__ST_KERNEL,   /* submitted to the kernel / armed in the reactor */
	RIO__ST_SQWAIT,   /* io_uring: waiting for room in the submission queue */
	RIO__ST_STARVED,  /* multishot recv waiting for pool buffers */
};

/* op->priv.bits, the core's */
#define RIO__B_MULTISHOT 0x01u
#define RIO__B_CANCELLED 0x02u /* a cancel or close asked it to stop */
#define RIO__B_INTERNAL 0x08u  /* the loop's own op: not counted as active */
#define RIO__B_DEADLINE 0x10u  /* its deadline applies (set by the core) */
#define RIO__B_TRACKED 0x20u   /* counted on its fd (fdtab.c) */
#define RIO__B_FAULTEND 0x40u  /* a fault is ending it with priv.fault_err */
#define RIO__B_CLOSED 0x80u    /* a close whose own result is in, waiting
				* for its generation's ops (fdtab.c) */
#define RIO__B_DGRAM 0x100u    /* multishot recv on a datagram socket: a
				* result of 0 is an empty datagram, not EOF */
#define RIO__B_TIMEDOUT 0x200u /* ringio's deadline ended it: its
				* -ETIMEDOUT gets RIO_OP_F_DEADLINE */
#define RIO__B_INNER 0x400u    /* a library part's own (a listener's, a
				* relay's, a connect_any's): a cancel-all
				* ends its owner, which ends it */

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
	/* End an op it holds (state KERNEL or SQWAIT) as a cancel of it
	 * would: -ECANCELED, or its result if that is decided first; no
	 * completion of a cancel op's own (rio_loop_cancel_all). */
	void (*cancel)(rio_loop *loop, rio_op *op);
	/* A starved multishot recv's pool has buffers again: arm it anew. */
	void (*resume)(rio_loop *loop, rio_op *op);
	/* An fd the loop made for an op of its own (a signal op's signalfd)
	 * is about to be closed: forget it. May be NULL. */
	void (*drop_fd)(rio_loop *loop, int fd);
	/* The readiness fallback's poller (epoll, kqueue); NULL otherwise. */
	const struct rio__poller *poller;
	/* A signal op's fd where signalfd(2) is not the way (kqueue:
	 * EVFILT_SIGNAL): an fd readable when one of `set` (blocked) came,
	 * or -errno; and one read of it: the signal, how many times it came
	 * (*times), -EAGAIN when none did. NULL: signalfd. */
	int (*sig_open)(rio_loop *loop, const sigset_t *set);
	int (*sig_read)(rio_loop *loop, int fd, unsigned *times);
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
	rio__opq starved;  /* multishot recvs waiting for pool buffers */
	rio__opq live;     /* user ops in flight but posts, oldest first
			      (priv.live_next/live_prev) */
	rio_listener *listeners; /* the loop's, not yet destroyed */
	int resume_starved; /* a buffer came back while recvs were starved */
	struct rio__fdtab fds; /* ops in flight per fd number (fdtab.c) */
	_Atomic(rio_op *) posted;    /* cross-thread stack, newest first */
	_Atomic(rio_op *) woken;     /* wakeup ops sent to, newest first */
	atomic_uint posted_count;
	atomic_ulong posts_total;   /* counted apart: any thread posts */
	atomic_int stop;
	rio_counters ctr;
	struct rio__faults faults; /* test builds: the fault plan */
};

/* A received buffer waiting on a relay's queue to be sent on. */
struct rio__buflink {
	uint32_t len;  /* bytes received into it */
	uint16_t next; /* the next buffer id on the same queue */
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
	struct rio__buflink *link; /* per buffer id: a relay's queue (relay.c) */
	void *be;              /* backend state (io_uring: the buffer ring) */
};

/* ---- the op lifecycle (op.c) ---- */

/* Checks and resets that every submit and rio_post make; touches only the
 * op (rio_post runs on any thread). -EINVAL, -EBUSY or 0. */
RIO__HIDDEN int rio__op_claim(rio_loop *loop, rio_op *op, rio_cb *cb,
			      enum rio__kind kind);
/* take() of every submit call: rio__op_claim, then the op is counted in
 * flight with fd `fd` and its arguments zeroed. A composite op (relay,
 * connect_any) is taken this way and later completed with rio__defer; it
 * never reaches a backend. */
RIO__HIDDEN int rio__op_take(rio_loop *loop, rio_op *op, rio_cb *cb,
			     enum rio__kind kind, int fd);
/* rio_poll for exactly `events` (POLLERR | POLLHUP alone: an error or a
 * hang-up of both directions, not a peer's FIN; the relay's watch of a
 * socket whose FIN it has read). */
/* A submit of a library part's own op (a listener's, a relay's, a
 * connect_any's), well formed, so never refused: marked as the part's, so
 * that rio_loop_cancel_all ends the part rather than the op. */
static inline void rio__must(rio_op *op, int r)
{
	assert(r == 0);
	(void)r;
	if (op->priv.state != RIO__ST_IDLE)
		op->priv.bits |= RIO__B_INNER;
}
/* Stop the loop's running listeners with -ECANCELED (listener.c). */
RIO__HIDDEN void rio__listeners_cancel(rio_loop *loop);
/* Deliver the wakeups sent so far (loop thread). */
RIO__HIDDEN void rio__drain_woken(rio_loop *loop);
/* A cancel of a running wakeup handle: 0 or -EALREADY (loop.c). */
RIO__HIDDEN int rio__wakeup_cancel(rio_loop *loop, rio_op *op);
RIO__HIDDEN int rio__poll_events(rio_loop *loop, rio_op *op, int fd,
				 unsigned events, rio_cb *cb);
/* Deliver one result to op's callback: the one place a callback runs.
 * Without RIO_OP_F_MORE in `flags` it is the final one: the op goes back
 * to the caller first. A close whose generation still has ops in flight
 * is held until the last of them has been delivered (fdtab.c). */
RIO__HIDDEN void rio__complete(rio_loop *loop, rio_op *op, int res,
			       unsigned flags);
/* Complete op with `res` on the next turn (results found without the
 * kernel: at submit, by a cancel or a close). */
static inline void rio__defer(rio_loop *loop, rio_op *op, int res)
{
	op->res = res;
	op->priv.state = RIO__ST_PENDING;
	rio__opq_push(&loop->pending, op);
}
/* Deliver the deferred results queued so far (not those their callbacks
 * defer): a backend calls it before a callback for a result decided after
 * them, so that results reach the caller in the order they were decided
 * (two ops on one fd: the bytes, the connections, in the kernel's order). */
RIO__HIDDEN unsigned rio__flush_pending(rio_loop *loop);
/* What ended an op the kernel (or the reactor) stopped before it had a
 * result: -ECANCELED when a cancel or a close of its file asked for it,
 * else -ETIMEDOUT when it has a deadline, else `res`. */
RIO__HIDDEN int rio__stopped(rio_loop *loop, rio_op *op, int res);
RIO__HIDDEN uint64_t rio__now_ns(void);
/* now + ns, saturating: a deadline centuries away must not wrap. */
RIO__HIDDEN uint64_t rio__due_in(uint64_t ns);

/* ---- starved multishot recvs (bufpool.c) ---- */

/* op's pool ran dry: it waits, off the backend, for a buffer to come
 * back. */
RIO__HIDDEN void rio__starve(rio_loop *loop, rio_op *op);
/* Once per turn: the starved recvs whose pool has buffers again go back
 * to the backend (be->resume). */
RIO__HIDDEN void rio__resume_starved(rio_loop *loop);
/* The starved recvs on fd end with `res` (deferred): its file is gone. */
RIO__HIDDEN void rio__starved_end_fd(rio_loop *loop, int fd, int res);
RIO__HIDDEN void rio__pool_mark_lent(rio_bufpool *pool, uint16_t id);

/* ---- datagrams ---- */

/* A datagram buffer's header: io_uring's struct io_uring_recvmsg_out,
 * which the fallback fills the same way. The sender's address follows
 * (RIO__DGRAM_NAME bytes), then the control data, then the payload. */
struct rio__dgram_hdr {
	uint32_t namelen;    /* the sender's address's real length */
	uint32_t controllen; /* control data received */
	uint32_t payloadlen; /* the datagram's real length (MSG_TRUNC) */
	uint32_t flags;      /* recvmsg's msg_flags */
};
enum { RIO__DGRAM_NAME = RIO_DGRAM_HEADROOM - sizeof(struct rio__dgram_hdr) };

/* Where a RECVMSG_MULTI op's payload starts in each buffer. */
static inline size_t rio__dgram_payload_off(const rio_op *op)
{
	return RIO_DGRAM_HEADROOM + op->priv.a.multi.control;
}

/* ---- datagrams in batches (dgram.c) ---- */

/* Datagrams one recvmmsg / sendmmsg moves at most. */
enum { RIO__DGRAM_BATCH = 32 };

/* A pool's free buffers as a stack of ids, in user space: the fallback's
 * view of every pool, io_uring's of a pool it keeps from the kernel. */
struct rio__freelist {
	unsigned n;
	uint16_t ids[];
};
/* count ids, the lowest on top (lent first); NULL without memory. */
RIO__HIDDEN struct rio__freelist *rio__freelist_new(unsigned count);
struct mmsghdr;
/* recvmmsg (out = 0) or sendmmsg (out = 1), or one recvmsg / sendmsg per
 * datagram where the system has neither: as the syscall, -1 with errno. */
RIO__HIDDEN int rio__mmsg(int fd, struct mmsghdr *mm, unsigned n, int fl,
			  int out);
/* The datagrams waiting on op's socket (a RECVMSG_MULTI), into as many of
 * fl's buffers as are free (up to RIO__DGRAM_BATCH), in one call, each
 * laid out as io_uring lays it out and lent out: how many, their ids in
 * got[]; -ENOBUFS with none free (or the fault hook's); -EAGAIN; or the
 * socket's error. */
RIO__HIDDEN int rio__dgram_recv(rio_loop *loop, rio_op *op,
				struct rio__freelist *fl, uint16_t *got);
/* How many buffers rio__dgram_recv offers from fl: taking fewer means
 * the socket had no more. */
static inline unsigned rio__dgram_offer(const struct rio__freelist *fl)
{
	return fl->n < RIO__DGRAM_BATCH ? fl->n : RIO__DGRAM_BATCH;
}
/* One completion (RIO_OP_F_MORE) per datagram rio__dgram_recv took, in
 * order. A callback that cancels the op or closes its fd ends it after
 * these: they had arrived. */
RIO__HIDDEN void rio__dgram_deliver(rio_loop *loop, rio_op *op,
				    const uint16_t *got, unsigned n);

/* One non-blocking splice(2) for a RIO__OP_SPLICE_* op: bytes or -errno.
 * With `sock_ready` (the socket was reported or may be ready), an EAGAIN
 * that is the pipe's becomes -ENOBUFS / -ENODATA: waiting on the socket
 * would never end it. -EAGAIN then means a spurious wakeup: wait again. */
/* A non-blocking, close-on-exec stream socket of AF_INET, AF_INET6 or
 * AF_UNIX (sock.c); -EINVAL for another family, or -errno. */
RIO__HIDDEN int rio__socket_stream(int family);
RIO__HIDDEN int rio__splice_try(const rio_op *op, int sock_ready);
/* A write that can raise SIGPIPE (rio_write, rio_splice_out) is about to
 * run on this thread: SIGPIPE blocked here, once per thread. */
RIO__HIDDEN void rio__sigpipe_block(void);
/* It failed with EPIPE: take back the SIGPIPE it raised. */
RIO__HIDDEN void rio__sigpipe_take(void);
/* A SIGNAL op's next signal from its fd (a signalfd, or the backend's
 * sig_read): its number, -EAGAIN when none is pending, or -errno. */
RIO__HIDDEN int rio__signal_read(rio_loop *loop, rio_op *op);

#endif

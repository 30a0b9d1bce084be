/*
 * The io_uring backend. One ring per loop; an op's user_data is its address
 * with a tag in the low bits (rio_op is 8-aligned) telling which of its
 * SQEs a CQE belongs to. An op finishes when every CQE it expects has
 * arrived, so an op and its linked timeout, or a close and its cancel-fd,
 * surface as exactly one completion whatever order the kernel posts them.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <liburing.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "internal.h"

/* TAG_FAULT: an internal cancel the fault hooks issue; its CQE is dropped */
enum { TAG_MAIN = 0, TAG_LT = 1, TAG_AUX = 2, TAG_FAULT = 3, TAG_MASK = 7 };

/*
 * Per-fd bookkeeping so that a close completes only after every op still
 * pending on its fd: with DEFER_TASKRUN the cancelled ops' CQEs are posted
 * from task work and may arrive after the close's own CQE.
 *
 * Keyed by number *and generation*: once the kernel has run close(N), a
 * callback may open a new file that gets N while the close's CQEs (or its
 * cancelled ops' CQEs) are still to be reaped. Each rio_close() of N ends
 * a generation: the close takes the count of that generation's ops still
 * in flight (it completes when they have), and ops submitted after it
 * belong to the next generation, so the new file's ops are neither waited
 * for nor taken for cancelled. An fd-counted op keeps its generation in
 * priv.u1; a close keeps the generation it ends in priv.u1, the old ops it
 * still waits for in priv.u0, and the next close of the same number still
 * waiting in priv.p1.
 */
struct fdslot {
	uint32_t inflight; /* ops of the current generation in flight */
	uint32_t gen;      /* the current generation */
	rio_op *closers;   /* closes waiting for their generation's ops */
};

struct uring {
	struct io_uring ring;
	rio__opq sqwait;  /* ops waiting for SQEs, FIFO */
	rio__opq parked;  /* multishot recvs waiting for pool buffers */
	rio__opq done;    /* results found without the kernel: next turn */
	struct fdslot *fds;
	size_t nfds;
	int efd;
	uint64_t wake_val;
	rio_op wake_op;
	unsigned setup_flags;
	int rearm_parked; /* a buffer came back while recvs were parked */
	int recv_nocap;   /* the kernel refused a multishot recv's length cap */
	int bound;        /* enabled for (and its fd registered by) a thread */
};

/* A multishot recv is armed for this many of its pool's buffers' worth of
 * bytes at a time, and re-armed by the loop when the kernel ends it there
 * (the length cap, Linux 6.17+). Otherwise one pass of the kernel may fill
 * up to 32 buffers before a cancel (backpressure) lands. */
enum { RECV_CAP_BUFS = 4 };

static struct uring *U(rio_loop *loop) { return loop->be_data; }

static void set_ud(struct io_uring_sqe *sqe, rio_op *op, unsigned tag)
{
	io_uring_sqe_set_data64(sqe, (uint64_t)(uintptr_t)op | tag);
}

static struct __kernel_timespec *op_ts(rio_op *op, uint64_t ns)
{
	struct __kernel_timespec *ts = (void *)op->priv.ts;
	ts->tv_sec = (long long)(ns / 1000000000ull);
	ts->tv_nsec = (long long)(ns % 1000000000ull);
	return ts;
}

static int needs_fd_slot(const rio_op *op)
{
	switch (op->priv.kind) {
	case RIO__OP_CLOSE: case RIO__OP_TIMEOUT: case RIO__OP_CANCEL:
	case RIO__OP_WAKE: case RIO__OP_POST:
		return 0;
	default:
		return op->priv.fd >= 0;
	}
}

static struct fdslot *fd_slot(struct uring *u, int fd, int grow)
{
	if (fd < 0)
		return NULL;
	if ((size_t)fd >= u->nfds) {
		if (!grow)
			return NULL;
		size_t n = u->nfds ? u->nfds : 64;
		while (n <= (size_t)fd)
			n *= 2;
		struct fdslot *t = realloc(u->fds, n * sizeof *t);
		if (!t)
			return NULL; /* ordering degrades, nothing breaks */
		memset(t + u->nfds, 0, (n - u->nfds) * sizeof *t);
		u->fds = t;
		u->nfds = n;
	}
	return &u->fds[fd];
}

/* SQEs an op needs: a linked timeout or a close's cancel-fd adds one. */
static unsigned sqes_needed(const rio_op *op)
{
	return (op->priv.kind == RIO__OP_CLOSE ||
		(op->priv.bits & RIO__B_DEADLINE)) ? 2 : 1;
}

static size_t send_len(rio_loop *loop, const rio_op *op)
{
	size_t len = op->priv.u0;
	if (len > 1 && rio__fault(loop, RIO__F_SHORT_WRITE))
		len = 1 + rio__fault_rand(loop) % (len - 1);
	return len;
}

/* A retried send or receive waits for readiness before it tries again
 * (IORING_RECVSEND_POLL_FIRST, 5.19; older kernels ignore the hint). */
static void poll_first(const rio_op *op, struct io_uring_sqe *sqe)
{
	if (op->priv.bits & RIO__B_RETRY)
		sqe->ioprio |= IORING_RECVSEND_POLL_FIRST;
}

static void prep_main(rio_loop *loop, struct uring *u, rio_op *op,
		      struct io_uring_sqe *sqe)
{
	int fd = op->priv.fd;
	void *p = op->priv.p0;
	switch (op->priv.kind) {
	case RIO__OP_ACCEPT:
		if (op->priv.bits & RIO__B_MULTISHOT)
			io_uring_prep_multishot_accept(sqe, fd, NULL, NULL,
						       SOCK_NONBLOCK | SOCK_CLOEXEC);
		else
			io_uring_prep_accept(sqe, fd, p, op->priv.p1,
					     SOCK_NONBLOCK | SOCK_CLOEXEC);
		break;
	case RIO__OP_CONNECT:
		io_uring_prep_connect(sqe, fd, p, (socklen_t)op->priv.u0);
		break;
	case RIO__OP_RECV:
		io_uring_prep_recv(sqe, fd, p, op->priv.u0, (int)op->priv.n0);
		poll_first(op, sqe);
		break;
	case RIO__OP_SEND:
		io_uring_prep_send(sqe, fd, p, send_len(loop, op),
				   (int)op->priv.n0);
		poll_first(op, sqe);
		break;
	case RIO__OP_RECVMSG:
		io_uring_prep_recvmsg(sqe, fd, p, op->priv.n0);
		poll_first(op, sqe);
		break;
	case RIO__OP_SENDMSG:
		io_uring_prep_sendmsg(sqe, fd, p, op->priv.n0);
		poll_first(op, sqe);
		break;
	case RIO__OP_RECV_MULTI: {
		rio_bufpool *pool = p;
		size_t cap = RECV_CAP_BUFS * pool->size;
		io_uring_prep_recv_multishot(sqe, fd, NULL, 0, 0);
		sqe->flags |= IOSQE_BUFFER_SELECT;
		sqe->buf_group = pool->bgid;
		op->priv.bits &= ~RIO__B_CAPPED;
		if (!u->recv_nocap) {
			/* sqe->optlen in newer headers: the same field */
			sqe->file_index = cap > (1u << 30) ? 1u << 30 : (unsigned)cap;
			op->priv.bits |= RIO__B_CAPPED;
			/* an old kernel's refusal, by a field it checks */
			if (rio__fault(loop, RIO__F_NOCAP))
				sqe->addr2 = 1;
		}
		break;
	}
	case RIO__OP_POLL:
		io_uring_prep_poll_add(sqe, fd, op->priv.n0);
		break;
	case RIO__OP_SPLICE_IN: /* wait for the socket; splice on the CQE */
		io_uring_prep_poll_add(sqe, fd, POLLIN);
		break;
	case RIO__OP_SPLICE_OUT:
		io_uring_prep_poll_add(sqe, fd, POLLOUT);
		break;
	case RIO__OP_CLOSE:
		io_uring_prep_close(sqe, fd);
		break;
	case RIO__OP_TIMEOUT:
		io_uring_prep_timeout(sqe, op_ts(op, op->priv.u0), 0, 0);
		break;
	case RIO__OP_CANCEL:
		io_uring_prep_cancel64(sqe, (uint64_t)(uintptr_t)p, 0);
		break;
	case RIO__OP_WAKE:
		io_uring_prep_read(sqe, u->efd, &u->wake_val, sizeof u->wake_val,
				   0);
		break;
	default:
		assert(!"unknown op kind");
	}
	set_ud(sqe, op, TAG_MAIN);
}

/* Fill SQEs for op, or return -EAGAIN if the SQ has no room for them. */
static int prep(rio_loop *loop, struct uring *u, rio_op *op)
{
	unsigned need = sqes_needed(op);
	if (io_uring_sq_space_left(&u->ring) < need)
		return -EAGAIN;
	struct io_uring_sqe *sqe = io_uring_get_sqe(&u->ring);
	if (op->priv.kind == RIO__OP_CLOSE) {
		/* Cancel everything on the fd first; hard link, because a
		 * cancel that finds nothing (-ENOENT) must not fail the close. */
		io_uring_prep_cancel_fd(sqe, op->priv.fd, IORING_ASYNC_CANCEL_ALL);
		sqe->flags |= IOSQE_IO_HARDLINK;
		set_ud(sqe, op, TAG_AUX);
		sqe = io_uring_get_sqe(&u->ring);
	}
	prep_main(loop, u, op, sqe);
	if (op->priv.bits & RIO__B_DEADLINE) {
		/* absolute (CLOCK_MONOTONIC), fixed when the op was submitted:
		 * time on sqwait counts, and a retried op keeps its deadline */
		sqe->flags |= IOSQE_IO_LINK;
		sqe = io_uring_get_sqe(&u->ring);
		io_uring_prep_link_timeout(sqe, (void *)op->priv.ts,
					   IORING_TIMEOUT_ABS);
		/* Its CQE names no op and is dropped: the op completes at
		 * its own CQE (see finish), in the kernel's order. */
		set_ud(sqe, NULL, TAG_LT);
		need--;
	}
	rio__set_cqes(op, need);
	op->priv.state = RIO__ST_KERNEL;
	return 0;
}

/* Hand op to the kernel's SQ; a full SQ is flushed, and if it is still
 * full the op waits its turn on sqwait. Never fails. */
static void enqueue(rio_loop *loop, rio_op *op)
{
	struct uring *u = U(loop);
	if (rio__opq_empty(&u->sqwait)) {
		if (prep(loop, u, op) == 0)
			return;
		loop->ctr.sq_full++;
		if (u->bound) { /* before the first run, only sqwait can wait */
			io_uring_submit(&u->ring);
			loop->ctr.enters++;
			if (prep(loop, u, op) == 0)
				return;
		}
	} else {
		loop->ctr.sq_full++;
	}
	op->priv.state = RIO__ST_SQWAIT;
	rio__opq_push(&u->sqwait, op);
}

static void flush_sqwait(rio_loop *loop)
{
	struct uring *u = U(loop);
	for (int tries = 0; !rio__opq_empty(&u->sqwait) && tries < 2;) {
		rio_op *op = u->sqwait.head;
		if (prep(loop, u, op) == 0) {
			rio__opq_remove(&u->sqwait, op);
			op->priv.state = RIO__ST_KERNEL;
			continue;
		}
		io_uring_submit(&u->ring);
		loop->ctr.enters++;
		tries++;
	}
}

/* Complete op now; results decided without the kernel. */
static void finish(rio_loop *loop, rio_op *op, int res);

static void defer(rio_loop *loop, rio_op *op, int res)
{
	op->res = res;
	op->priv.state = RIO__ST_PENDING;
	rio__opq_push(&U(loop)->done, op);
}

/* A cancel of an op the kernel does not hold yet is settled here. */
static void cancel_local(rio_loop *loop, rio_op *op, rio_op *target)
{
	struct uring *u = U(loop);
	if (target->priv.state == RIO__ST_SQWAIT)
		rio__opq_remove(&u->sqwait, target);
	else
		rio__opq_remove(&u->parked, target);
	defer(loop, target, -ECANCELED);
	defer(loop, op, 0);
}

/* Closing an fd ends the multishot recvs parked on it. */
static void close_parked(rio_loop *loop, int fd)
{
	struct uring *u = U(loop);
	rio_op *op = u->parked.head;
	while (op) {
		rio_op *next = op->priv.next;
		if (op->priv.fd == fd) {
			rio__opq_remove(&u->parked, op);
			defer(loop, op, -ECANCELED);
		}
		op = next;
	}
}

/* A close ends its fd's generation: it will wait for the ops in flight
 * now, and ops submitted from here on are the next file's. */
static void end_generation(struct uring *u, rio_op *close_op)
{
	struct fdslot *s = fd_slot(u, close_op->priv.fd, 1);
	close_op->priv.u0 = 0;
	if (!s)
		return; /* no table: the close completes on its own CQEs */
	close_op->priv.u1 = s->gen;
	close_op->priv.u0 = s->inflight;
	s->inflight = 0;
	s->gen++;
	if (close_op->priv.u0) {
		close_op->priv.p1 = s->closers;
		s->closers = close_op;
	}
}

/* An fd-counted op whose generation a close has ended (or is ending). */
static int fd_closing(struct uring *u, const rio_op *op)
{
	if (!(op->priv.bits & RIO__B_FDCOUNTED))
		return 0;
	struct fdslot *s = fd_slot(u, op->priv.fd, 0);
	return s && (uint32_t)op->priv.u1 != s->gen;
}

static int is_splice(const rio_op *op)
{
	return op->priv.kind == RIO__OP_SPLICE_IN ||
	       op->priv.kind == RIO__OP_SPLICE_OUT;
}

static void uring_submit(rio_loop *loop, rio_op *op)
{
	struct uring *u = U(loop);
	if (op->priv.kind == RIO__OP_CANCEL) {
		rio_op *target = op->priv.p0;
		if (target->priv.state == RIO__ST_SQWAIT ||
		    target->priv.state == RIO__ST_PARKED) {
			cancel_local(loop, op, target);
			return;
		}
		target->priv.bits |= RIO__B_CANCELLED;
		if (target->priv.kind == RIO__OP_RECV_MULTI)
			target->priv.p1 = op; /* see multishot_cqe */
	} else if (op->priv.kind == RIO__OP_CLOSE) {
		close_parked(loop, op->priv.fd);
		end_generation(u, op);
	}
	/* a splice is tried at once only with no other op on its fd in
	 * flight: ops on one fd run in the order they were submitted, and
	 * SQEs queued before it have not run yet (fuzz seed 1569) */
	int alone = 1;
	if (is_splice(op)) {
		struct fdslot *s = fd_slot(u, op->priv.fd, 0);
		alone = !s || s->inflight == 0;
	}
	if (needs_fd_slot(op)) {
		struct fdslot *s = fd_slot(u, op->priv.fd, 1);
		if (s) {
			s->inflight++;
			op->priv.u1 = s->gen;
			op->priv.bits |= RIO__B_FDCOUNTED;
		}
	}
	if (op->priv.bits & RIO__B_DEADLINE) {
		uint64_t now = rio__now_ns(), d = op->deadline_ns;
		op_ts(op, d > UINT64_MAX - now ? UINT64_MAX : now + d);
	}
	if (is_splice(op) && alone) { /* try first: the socket is often ready */
		int res = rio__splice_try(op, 0); /* not ready: the poll waits */
		if (res != -EAGAIN) {
			defer(loop, op, res);
			return;
		}
	}
	enqueue(loop, op);
}

/* ---- completions ---- */

/* A close's own CQEs are in: deliver it, unless ops of the generation it
 * ended are still in flight (the last of them delivers it). */
static void finish_close(rio_loop *loop, rio_op *op, int res)
{
	op->res = res;
	if (op->priv.u0 > 0) {
		op->priv.bits |= RIO__B_CLOSED;
		return;
	}
	rio__complete(loop, op, res, 0);
}

/* An fd-counted op of generation `gen` on `fd` has completed. */
static void fd_op_done(rio_loop *loop, int fd, uint32_t gen)
{
	struct fdslot *s = fd_slot(U(loop), fd, 0);
	assert(s);
	if (gen == s->gen) {
		assert(s->inflight > 0);
		s->inflight--;
		return;
	}
	rio_op **pc = &s->closers;
	while (*pc && (uint32_t)(*pc)->priv.u1 != gen)
		pc = (rio_op **)&(*pc)->priv.p1;
	rio_op *c = *pc;
	assert(c && c->priv.u0 > 0);
	if (--c->priv.u0 > 0)
		return;
	*pc = c->priv.p1; /* no op of its generation is left to find it */
	c->priv.p1 = NULL;
	if (c->priv.bits & RIO__B_CLOSED)
		rio__complete(loop, c, c->res, 0);
}

/*
 * What stopped an op the kernel ended with -ECANCELED (or -EINTR: an io-wq
 * worker was running it): a cancel or a close asked for it, else its
 * linked timeout fired. Decided from the op's own CQE: the linked
 * timeout's CQE can come after other ops' CQEs, and waiting for it would
 * deliver this op out of the kernel's order (two recvs on one stream
 * would hand the caller its bytes out of order).
 */
static int stopped(rio_loop *loop, const rio_op *op, int res)
{
	if ((op->priv.bits & RIO__B_CANCELLED) || fd_closing(U(loop), op))
		return -ECANCELED;
	if (op->priv.bits & RIO__B_DEADLINE)
		return -ETIMEDOUT;
	return res;
}

static void finish(rio_loop *loop, rio_op *op, int res)
{
	unsigned bits = op->priv.bits;
	if (res == -ECANCELED || res == -EINTR)
		res = stopped(loop, op, res);
	switch (op->priv.kind) {
	case RIO__OP_TIMEOUT:
		if (res == -ETIME)
			res = 0;
		break;
	case RIO__OP_CLOSE:
		finish_close(loop, op, res);
		return;
	case RIO__OP_RECV: case RIO__OP_SEND: case RIO__OP_RECVMSG:
	case RIO__OP_SENDMSG: case RIO__OP_ACCEPT:
		/* The kernel's -EAGAIN (several ops on one fd: another took
		 * the readiness this one was woken for) is no result: retry
		 * (a deadline that passed meanwhile fires at once), unless
		 * a cancel or a close is ending the op. */
		if (res != -EAGAIN)
			break;
		if ((bits & RIO__B_CANCELLED) || fd_closing(U(loop), op)) {
			res = -ECANCELED;
			break;
		}
		op->priv.bits |= RIO__B_RETRY;
		enqueue(loop, op);
		return;
	case RIO__OP_SPLICE_IN:
	case RIO__OP_SPLICE_OUT:
		if (res != -EAGAIN)
			break;
		if ((bits & RIO__B_CANCELLED) || fd_closing(U(loop), op)) {
			res = -ECANCELED;
			break;
		}
		enqueue(loop, op); /* a spurious wakeup: poll again */
		return;
	default:
		break;
	}
	int fd = op->priv.fd;
	uint32_t gen = (uint32_t)op->priv.u1;
	rio__complete(loop, op, res, 0);
	/* op may be reused by now: only fd, gen and bits are used below. */
	if (bits & RIO__B_FDCOUNTED)
		fd_op_done(loop, fd, gen);
}

static void cqe_done(rio_loop *loop, rio_op *op)
{
	unsigned n = rio__cqes(op);
	assert(n > 0);
	rio__set_cqes(op, n - 1);
	if (n == 1)
		finish(loop, op, op->res);
}

static void park(rio_loop *loop, rio_op *op)
{
	struct uring *u = U(loop);
	rio_bufpool *pool = op->priv.p0;
	op->priv.state = RIO__ST_PARKED;
	rio__opq_push(&u->parked, op);
	/* Buffers may have come back between the kernel running dry and this
	 * CQE being read. */
	if (pool->nlent < pool->count)
		u->rearm_parked = 1;
}

/* Once per turn, not once per returned buffer: re-arm the parked recvs
 * whose pool has buffers again. A re-armed recv with no data waiting costs
 * no buffer; one that finds the pool dry again simply parks again. */
static void rearm_parked(rio_loop *loop)
{
	struct uring *u = U(loop);
	if (!u->rearm_parked)
		return;
	u->rearm_parked = 0;
	rio_op *op = u->parked.head;
	while (op) {
		rio_op *next = op->priv.next;
		rio_bufpool *pool = op->priv.p0;
		if (pool->nlent < pool->count) {
			rio__opq_remove(&u->parked, op);
			loop->ctr.enobufs_rearms++;
			op->priv.state = RIO__ST_KERNEL;
			enqueue(loop, op);
		}
		op = next;
	}
}

/* The kernel ended a multishot op on its own (pool dry, length cap) while
 * a cancel aimed at it was on its way: that cancel will find nothing
 * (-ENOENT), yet it is the cancel that ends the stream for the caller. */
static void ended_before_cancel(rio_op *op)
{
	if (op->priv.p1) {
		((rio_op *)op->priv.p1)->priv.u1 = 1;
		op->priv.p1 = NULL;
	}
}

/* A multishot CQE. Without F_MORE the kernel ended the stream: re-arm it
 * unless it ended in an error or a cancel; -ENOBUFS parks the recv until
 * a buffer is given back. */
static void multishot_cqe(rio_loop *loop, rio_op *op, int res, unsigned cf)
{
	unsigned flags = RIO_OP_F_MORE;
	if (cf & IORING_CQE_F_BUFFER) {
		rio_bufpool *pool = op->priv.p0;
		uint16_t bid = (uint16_t)(cf >> IORING_CQE_BUFFER_SHIFT);
		rio__pool_mark_lent(pool, bid);
		op->buf = pool->mem + (size_t)bid * pool->size;
		op->buf_id = bid;
		flags |= RIO_OP_F_BUF;
	}
	if (cf & IORING_CQE_F_MORE) {
		rio__complete(loop, op, res, flags);
		return;
	}
	int cancelled = op->priv.bits & RIO__B_CANCELLED;
	int is_recv = op->priv.kind == RIO__OP_RECV_MULTI;
	/* A close of its file ends the op, even one whose kernel request
	 * ended on its own (-ENOBUFS) before the cancel-fd saw it; a close of
	 * an earlier file with the same number does not. */
	if (fd_closing(U(loop), op))
		cancelled = 1;
	if ((op->priv.bits & RIO__B_FAULTEND) && res == -ECANCELED && !cancelled) {
		res = -(int)op->priv.n0;
		op->priv.bits &= ~RIO__B_FAULTEND;
	}
	/* A kernel without the length cap (before 6.17) refuses it, before
	 * receiving anything: arm without it from now on. */
	int capless = res == -EINVAL && is_recv &&
		      (op->priv.bits & RIO__B_CAPPED);
	if (capless)
		U(loop)->recv_nocap = 1;
	if ((res == -ENOBUFS || capless) && is_recv) {
		if (!cancelled) {
			if (capless)
				enqueue(loop, op);
			else
				park(loop, op);
			return;
		}
		/* The pool ran dry (or the cap was refused) as it was
		 * cancelled. */
		res = -ECANCELED;
		ended_before_cancel(op);
	}
	int result = is_recv && !(op->priv.bits & RIO__B_DGRAM) ? res > 0
								 : res >= 0;
	if (res == -EAGAIN && !cancelled) { /* no result: arm it again */
		loop->ctr.multishot_rearms++;
		enqueue(loop, op);
		return;
	}
	if (result && !cancelled) {
		loop->ctr.multishot_rearms++;
		enqueue(loop, op);
		rio__complete(loop, op, res, flags);
		return;
	}
	if (result) { /* a last result raced the cancel: deliver it first */
		ended_before_cancel(op);
		rio__complete(loop, op, res, flags);
		res = -ECANCELED;
	}
	op->res = res;
	cqe_done(loop, op);
}

#ifdef RINGIO_FAULT_HOOKS
/* End a live multishot op as if the kernel had ended it with `err`: cancel
 * it for real, and let its final -ECANCELED read as `err`. */
static void fault_end(rio_loop *loop, rio_op *op, int err)
{
	if (op->priv.bits & (RIO__B_FAULTEND | RIO__B_CANCELLED))
		return;
	/* an SQE once taken must be filled: the kernel would run it */
	struct io_uring_sqe *sqe = io_uring_get_sqe(&U(loop)->ring);
	if (!sqe)
		return;
	io_uring_prep_cancel64(sqe, (uint64_t)(uintptr_t)op, 0);
	set_ud(sqe, op, TAG_FAULT);
	op->priv.bits |= RIO__B_FAULTEND;
	op->priv.n0 = (uint32_t)-err;
}

/* Rewrite a CQE the way a misbehaving kernel or network could. Returns 0
 * when the CQE is consumed (nothing to deliver). */
static int fault_cqe(rio_loop *loop, rio_op *op, int *res, unsigned cf)
{
	int multi = op->priv.bits & RIO__B_MULTISHOT;
	/* Once a fault is ending the op, what the kernel already accepted
	 * is delivered as is: a real accept error ends the stream once, and
	 * faulting these too would drop connections nobody is told of. */
	if (op->priv.kind == RIO__OP_ACCEPT && *res >= 0 &&
	    !(op->priv.bits & RIO__B_FAULTEND)) {
		int err = rio__fault(loop, RIO__F_ACCEPT_ABORT) ? -ECONNABORTED
			: rio__fault(loop, RIO__F_ACCEPT_EPROTO) ? -EPROTO : 0;
		if (!err)
			return 1;
		close(*res); /* the client sees its connection reset */
		if (!multi || !(cf & IORING_CQE_F_MORE)) {
			*res = err;
			return 1;
		}
		fault_end(loop, op, err);
		return 0;
	}
	if (op->priv.kind == RIO__OP_RECV_MULTI && (cf & IORING_CQE_F_MORE) &&
	    rio__fault(loop, RIO__F_ENOBUFS))
		fault_end(loop, op, -ENOBUFS); /* this CQE's data still counts */
	return 1;
}
#else
static int fault_cqe(rio_loop *loop, rio_op *op, int *res, unsigned cf)
{
	return 1;
}
#endif

/* A poll's result: the kernel reports the bits of the wakeup that ended
 * it; what became ready since (a FIN behind the data) is ready as well
 * when the caller sees it, and the fallback reports it (poll(2) at
 * delivery), so ask poll(2) too. Only what was asked for. */
static int poll_mask(const rio_op *op, int res)
{
	struct pollfd p = {.fd = op->priv.fd, .events = (short)op->priv.n0};
	if (poll(&p, 1, 0) > 0)
		res |= p.revents;
	return res & (int)op->priv.n0;
}

static void handle_cqe(rio_loop *loop, uint64_t ud, int res, unsigned cf)
{
	rio_op *op = (rio_op *)(uintptr_t)(ud & ~(uint64_t)TAG_MASK);
	if ((ud & TAG_MASK) == TAG_MAIN && !fault_cqe(loop, op, &res, cf))
		return;
	switch (ud & TAG_MASK) {
	case TAG_FAULT:
		return;
	case TAG_LT: /* no op: see prep */
		return;
	case TAG_AUX:
		cqe_done(loop, op);
		return;
	default:
		if (op->priv.bits & RIO__B_MULTISHOT) {
			multishot_cqe(loop, op, res, cf);
			return;
		}
		/* The core sends the kernel only cancels whose target is in
		 * flight for the caller; the kernel's -ENOENT then means the
		 * target's work is done and its completion on its way: it
		 * could not be stopped, -EALREADY as on every backend (or 0,
		 * a multishot stream that ended by itself on the way). */
		if (op->priv.kind == RIO__OP_CANCEL && res == -ENOENT)
			res = op->priv.u1 ? 0 : -EALREADY;
		if (is_splice(op) && res >= 0) /* the poll fired */
			res = rio__splice_try(op, 1);
		if (op->priv.kind == RIO__OP_POLL && res > 0)
			res = poll_mask(op, res);
		op->res = res;
		cqe_done(loop, op);
	}
}

enum { BATCH = 64, MAX_PER_TURN = 16384 };

/* Copy CQEs out and advance the CQ before running callbacks, so callbacks
 * that submit (and maybe enter the kernel) never see a half-read ring. */
static void reap(rio_loop *loop)
{
	struct uring *u = U(loop);
	struct io_uring_cqe *cqes[BATCH];
	struct { uint64_t ud; int res; unsigned flags; } batch[BATCH];
	for (unsigned total = 0; total < MAX_PER_TURN;) {
		if (IO_URING_READ_ONCE(*u->ring.sq.kflags) & IORING_SQ_CQ_OVERFLOW)
			loop->ctr.cq_overflows++;
		unsigned n = io_uring_peek_batch_cqe(&u->ring, cqes, BATCH);
		if (n == 0)
			break;
		for (unsigned i = 0; i < n; i++) {
			batch[i].ud = cqes[i]->user_data;
			batch[i].res = cqes[i]->res;
			batch[i].flags = cqes[i]->flags;
		}
		io_uring_cq_advance(&u->ring, n);
		for (unsigned i = 0; i < n; i++)
			handle_cqe(loop, batch[i].ud, batch[i].res,
				   batch[i].flags);
		total += n;
	}
}

static void run_done(rio_loop *loop)
{
	rio__opq q;
	rio__opq_take(&q, &U(loop)->done);
	rio_op *op;
	while ((op = rio__opq_pop(&q)))
		finish(loop, op, op->res);
}

static int uring_poll(rio_loop *loop, int block)
{
	struct uring *u = U(loop);
	/* decided before the CQEs this turn reaps; delivering them is this
	 * turn's work, so it does not wait */
	if (!rio__opq_empty(&u->done)) {
		run_done(loop);
		block = 0;
	}
	rearm_parked(loop);
	flush_sqwait(loop);
	if (!rio__opq_empty(&u->done) || !rio__opq_empty(&loop->pending))
		block = 0;
	int r = block ? io_uring_submit_and_wait(&u->ring, 1)
		      : io_uring_submit_and_get_events(&u->ring);
	loop->ctr.enters++;
	/* EINTR: a signal; EBUSY/EAGAIN: the kernel wants its CQ backlog
	 * drained first (pre-5.19 NODROP behaviour). Reaping fixes both. */
	if (r < 0 && r != -EINTR && r != -EBUSY && r != -EAGAIN &&
	    r != -ETIME)
		return r;
	reap(loop);
	run_done(loop);
	return 0;
}

/* ---- wakeups ---- */

static void wake_cb(rio_loop *loop, rio_op *op, int res)
{
	if (res == -ECANCELED)
		return; /* the ring is going away */
	loop->ctr.wakeups++;
	op->priv.bits = RIO__B_INTERNAL;
	op->priv.state = RIO__ST_KERNEL;
	enqueue(loop, op);
}

static void uring_wake(rio_loop *loop)
{
	uint64_t one = 1;
	ssize_t n = write(U(loop)->efd, &one, sizeof one);
	(void)n; /* EAGAIN: the counter is saturated, a wakeup is pending */
}

/* ---- setup ---- */

static const struct { int op; const char *name; } needed_ops[] = {
	{IORING_OP_ACCEPT, "ACCEPT"},       {IORING_OP_CONNECT, "CONNECT"},
	{IORING_OP_RECV, "RECV"},           {IORING_OP_SEND, "SEND"},
	{IORING_OP_RECVMSG, "RECVMSG"},     {IORING_OP_SENDMSG, "SENDMSG"},
	{IORING_OP_CLOSE, "CLOSE"},         {IORING_OP_TIMEOUT, "TIMEOUT"},
	{IORING_OP_LINK_TIMEOUT, "LINK_TIMEOUT"},
	{IORING_OP_ASYNC_CANCEL, "ASYNC_CANCEL"}, {IORING_OP_READ, "READ"},
};

static int probe_ops(struct io_uring *ring, char *why, size_t why_len)
{
	struct io_uring_probe *p = io_uring_get_probe_ring(ring);
	if (!p) {
		snprintf(why, why_len, "io_uring opcode probe failed");
		return -ENOSYS;
	}
	int r = 0;
	for (size_t i = 0; i < sizeof needed_ops / sizeof *needed_ops; i++)
		if (!io_uring_opcode_supported(p, needed_ops[i].op)) {
			snprintf(why, why_len, "io_uring lacks IORING_OP_%s",
				 needed_ops[i].name);
			r = -ENOSYS;
			break;
		}
	io_uring_free_probe(p);
	return r;
}

static void flags_str(unsigned f, char *buf, size_t len)
{
	snprintf(buf, len, "%s%s%s%s",
		 f & IORING_SETUP_SINGLE_ISSUER ? "SINGLE_ISSUER|" : "",
		 f & IORING_SETUP_DEFER_TASKRUN ? "DEFER_TASKRUN|" : "",
		 f & IORING_SETUP_COOP_TASKRUN ? "COOP_TASKRUN|" : "",
		 f & IORING_SETUP_SUBMIT_ALL ? "SUBMIT_ALL|" : "");
	size_t n = strlen(buf);
	if (n)
		buf[n - 1] = '\0';
}

/* Drop the setup flag the kernel is least likely to know, in the order
 * they appeared: DEFER_TASKRUN (6.1; COOP_TASKRUN, 5.19, stands in for
 * it), then COOP_TASKRUN, SINGLE_ISSUER (6.0), SUBMIT_ALL (5.18),
 * R_DISABLED (5.10). */
static int drop_flag(unsigned *f)
{
	if (*f & IORING_SETUP_DEFER_TASKRUN) {
		*f &= ~IORING_SETUP_DEFER_TASKRUN;
		*f |= IORING_SETUP_COOP_TASKRUN;
	} else if (*f & IORING_SETUP_COOP_TASKRUN) {
		*f &= ~IORING_SETUP_COOP_TASKRUN;
	} else if (*f & IORING_SETUP_SINGLE_ISSUER) {
		*f &= ~IORING_SETUP_SINGLE_ISSUER;
	} else if (*f & IORING_SETUP_SUBMIT_ALL) {
		*f &= ~IORING_SETUP_SUBMIT_ALL;
	} else if (*f & IORING_SETUP_R_DISABLED) {
		*f &= ~IORING_SETUP_R_DISABLED;
	} else {
		return 0;
	}
	return 1;
}

static void explain_setup_error(rio_loop *loop, int r, char *why, size_t len)
{
	const char *what = "";
	char sys[64] = "";
	if (r == -ENOSYS)
		loop->reason = RIO_REASON_URING_ENOSYS;
	if (r == -EPERM || r == -EACCES) {
		loop->reason = RIO_REASON_URING_EPERM;
		FILE *f = fopen("/proc/sys/kernel/io_uring_disabled", "r");
		int v = -1;
		if (f) {
			if (fscanf(f, "%d", &v) != 1)
				v = -1;
			fclose(f);
		}
		if (v > 0) {
			loop->reason = RIO_REASON_URING_DISABLED;
			snprintf(sys, sizeof sys, " (kernel.io_uring_disabled=%d)", v);
		} else {
			what = " (seccomp or container policy)";
		}
	} else if (r == -ENOMEM) {
		struct rlimit rl;
		if (getrlimit(RLIMIT_MEMLOCK, &rl) == 0 &&
		    rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < (8u << 20)) {
			loop->reason = RIO_REASON_URING_MEMLOCK;
			what = " (RLIMIT_MEMLOCK too low)";
		}
	} else if (r == -EINVAL) {
		loop->reason = RIO_REASON_URING_FLAGS;
		what = " (no setup flag set accepted)";
	}
	snprintf(why, len, "io_uring_setup returned %s%s%s",
		 strerrorname_np(-r) ? strerrorname_np(-r) : "error", sys, what);
}

static int setup_ring(rio_loop *loop, struct uring *u,
		      const rio_loop_opts *opts, char *why, size_t why_len)
{
	unsigned entries = opts->sq_entries ? opts->sq_entries : 256;
	/* R_DISABLED: the ring is enabled by the thread that first runs the
	 * loop (uring_bind), which SINGLE_ISSUER then ties it to. */
	unsigned f = IORING_SETUP_SUBMIT_ALL | IORING_SETUP_SINGLE_ISSUER |
		     IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_R_DISABLED;
	for (;;) {
		struct io_uring_params p;
		memset(&p, 0, sizeof p);
		p.flags = f | IORING_SETUP_CLAMP;
		if (opts->cq_entries) {
			p.flags |= IORING_SETUP_CQSIZE;
			p.cq_entries = opts->cq_entries;
		}
		int r = io_uring_queue_init_params(entries, &u->ring, &p);
		if (r == 0) {
			u->setup_flags = f;
			return 0;
		}
		if (r != -EINVAL || !drop_flag(&f)) {
			explain_setup_error(loop, r, why, why_len);
			return r;
		}
	}
}

static int uring_init(rio_loop *loop, const rio_loop_opts *opts, char *why,
		      size_t why_len)
{
	if (opts->cq_entries && opts->cq_entries < opts->sq_entries)
		return -EINVAL;
	if (loop->faults.setup_err) {
		int e = -loop->faults.setup_err;
		explain_setup_error(loop, e, why, why_len);
		size_t n = strlen(why);
		snprintf(why + n, why_len - n, " (fault injected)");
		return e;
	}
	struct uring *u = calloc(1, sizeof *u);
	if (!u)
		return -ENOMEM;
	int r = setup_ring(loop, u, opts, why, why_len);
	if (r < 0) {
		free(u);
		return r;
	}
	r = probe_ops(&u->ring, why, why_len);
	if (r == 0) {
		u->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
		if (u->efd < 0)
			r = -errno;
	} else {
		loop->reason = RIO_REASON_URING_PROBE;
	}
	if (r < 0) {
		io_uring_queue_exit(&u->ring);
		free(u);
		return r;
	}
	loop->be_data = u;
	char fl[96];
	flags_str(u->setup_flags, fl, sizeof fl);
	snprintf(loop->msg, sizeof loop->msg, "io_uring (%s)", fl);
	u->wake_op.priv.cb = wake_cb;
	u->wake_op.priv.kind = RIO__OP_WAKE;
	u->wake_op.priv.fd = -1;
	u->wake_op.priv.bits = RIO__B_INTERNAL;
	u->wake_op.priv.state = RIO__ST_KERNEL;
	enqueue(loop, &u->wake_op);
	return 0;
}

/* The first rio_loop_run(): the ring becomes this thread's. Enabling it
 * makes this thread its SINGLE_ISSUER (and the one DEFER_TASKRUN runs task
 * work on); the ring fd is registered in this thread's io_uring context,
 * so an enter skips the fd lookup. */
static int uring_bind(rio_loop *loop)
{
	struct uring *u = U(loop);
	if (u->setup_flags & IORING_SETUP_R_DISABLED) {
		/* By hand: Debian's liburing 2.3 declares
		 * io_uring_enable_rings() but does not export it. */
		if (syscall(__NR_io_uring_register, u->ring.ring_fd,
			    IORING_REGISTER_ENABLE_RINGS, NULL, 0) < 0)
			return -errno;
	}
	io_uring_register_ring_fd(&u->ring); /* optional: ignore a refusal */
	u->bound = 1;
	return 0;
}

static void uring_fini(rio_loop *loop)
{
	struct uring *u = U(loop);
	io_uring_queue_exit(&u->ring);
	close(u->efd);
	free(u->fds);
	free(u);
}

/* ---- provided-buffer rings ---- */

struct bufring {
	struct io_uring_buf_ring *br;
	size_t bytes;
};

static int uring_pool_init(rio_bufpool *pool)
{
	struct uring *u = U(pool->loop);
	struct bufring *b = calloc(1, sizeof *b);
	if (!b)
		return -ENOMEM;
	/* liburing 2.3 has no io_uring_setup_buf_ring: map the ring
	 * ourselves; the kernel wants it page-aligned. */
	b->bytes = pool->count * sizeof(struct io_uring_buf);
	b->br = mmap(NULL, b->bytes, PROT_READ | PROT_WRITE,
		     MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
	if (b->br == MAP_FAILED) {
		free(b);
		return -ENOMEM;
	}
	struct io_uring_buf_reg reg = {
		.ring_addr = (uint64_t)(uintptr_t)b->br,
		.ring_entries = pool->count,
		.bgid = pool->bgid,
	};
	int r = io_uring_register_buf_ring(&u->ring, &reg, 0);
	if (r < 0) {
		munmap(b->br, b->bytes);
		free(b);
		return r;
	}
	io_uring_buf_ring_init(b->br);
	int mask = io_uring_buf_ring_mask(pool->count);
	for (unsigned i = 0; i < pool->count; i++)
		io_uring_buf_ring_add(b->br, pool->mem + (size_t)i * pool->size,
				      (unsigned)pool->size, (unsigned short)i,
				      mask, (int)i);
	io_uring_buf_ring_advance(b->br, (int)pool->count);
	pool->be = b;
	return 0;
}

static void uring_pool_fini(rio_bufpool *pool)
{
	struct bufring *b = pool->be;
	io_uring_unregister_buf_ring(&U(pool->loop)->ring, pool->bgid);
	munmap(b->br, b->bytes);
	free(b);
}

static void uring_pool_put(rio_bufpool *pool, uint16_t id)
{
	struct bufring *b = pool->be;
	io_uring_buf_ring_add(b->br, pool->mem + (size_t)id * pool->size,
			      (unsigned)pool->size, id,
			      io_uring_buf_ring_mask(pool->count), 0);
	io_uring_buf_ring_advance(b->br, 1);
	struct uring *u = U(pool->loop);
	if (!rio__opq_empty(&u->parked))
		u->rearm_parked = 1;
}

const struct rio__backend rio__backend_uring = {
	.name = "uring",
	.kind = RIO_BACKEND_URING,
	.init = uring_init,
	.fini = uring_fini,
	.bind = uring_bind,
	.submit = uring_submit,
	.poll = uring_poll,
	.wake = uring_wake,
	.pool_init = uring_pool_init,
	.pool_fini = uring_pool_fini,
	.pool_put = uring_pool_put,
};

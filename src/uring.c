/*
 * The io_uring backend's op core: an op becomes SQEs, and CQEs become its
 * completions. An op's user_data is its address with a tag in the low bits
 * (rio_op is 8-aligned) telling which of its SQEs a CQE belongs to. An op
 * finishes when every CQE it expects has arrived, so a close and its
 * cancel-fd surface as exactly one completion whatever order the kernel
 * posts them. What every backend shares (fd tracking, a close waiting for
 * its fd's ops, starved multishot recvs, deadlines, fault rewrites, the
 * completion queue) is the core's; the ring itself is uring_setup.c's,
 * the buffer rings uring_bufring.c's.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <string.h>
#include <unistd.h>

#include "uring.h"

/* TAG_STOP: an internal cancel (a fault hook's, or an edge poll's that has
 * its result: see poll_cqe); its CQE is dropped */
enum { TAG_MAIN = 0, TAG_LT = 1, TAG_AUX = 2, TAG_STOP = 3, TAG_MASK = 7 };

/* op->priv.be.uring.bits */
#define RIO__U_CAPPED 0x1u /* a multishot recv armed with a length cap */
#define RIO__U_RETRY 0x2u  /* resubmitted after the kernel's -EAGAIN */
#define RIO__U_EDGE 0x4u   /* its poll armed as an edge-triggered multishot */
#define RIO__U_STOPPING 0x8u /* an edge poll with its result in op->res,
				* stopped; delivered at its last CQE */
#define RIO__U_WAITOUT 0x10u /* a send waiting for room: a poll for now */
#define RIO__U_DGPOLL 0x20u  /* datagrams in batches: a poll for now */
#define RIO__U_HELD 0x40u    /* ...its datagrams being delivered: no SQE of
			      * its is in the kernel */

/* A multishot recv is armed for this many of its pool's buffers' worth of
 * bytes at a time, and re-armed by the loop when the kernel ends it there
 * (the length cap, Linux 6.17+). Otherwise one pass of the kernel may fill
 * up to 32 buffers before a cancel (backpressure) lands. */
enum { RECV_CAP_BUFS = 4 };

static struct uring *U(rio_loop *loop) { return rio__uring(loop); }

static void set_ud(struct io_uring_sqe *sqe, rio_op *op, unsigned tag)
{
	io_uring_sqe_set_data64(sqe, (uint64_t)(uintptr_t)op | tag);
}

/* The timespec of the timeout SQE in sqe's slot (a linked timeout's
 * deadline, a timeout's length): the kernel copies it when it takes the
 * SQE (io_timeout_prep), so it need live only as long as the SQE. */
static struct __kernel_timespec *slot_ts(struct uring *u,
					 const struct io_uring_sqe *sqe,
					 uint64_t ns)
{
	struct __kernel_timespec *ts = &u->slots[sqe - u->ring.sq.sqes].ts;
	ts->tv_sec = (long long)(ns / 1000000000ull);
	ts->tv_nsec = (long long)(ns % 1000000000ull);
	return ts;
}

/* SQEs an op needs: a linked timeout or a close's cancel-fd adds one. */
static unsigned sqes_needed(const rio_op *op)
{
	return (op->priv.kind == RIO__OP_CLOSE ||
		(op->priv.bits & RIO__B_DEADLINE)) ? 2 : 1;
}

/* A retried send or receive waits for readiness before it tries again
 * (IORING_RECVSEND_POLL_FIRST, 5.19; older kernels ignore the hint). */
static void poll_first(const rio_op *op, struct io_uring_sqe *sqe)
{
	if (op->priv.be.uring.bits & RIO__U_RETRY)
		sqe->ioprio |= IORING_RECVSEND_POLL_FIRST;
}

/* A poll of op's: single-shot, or edge-triggered multishot (poll_cqe). */
static void prep_wait(struct io_uring_sqe *sqe, const rio_op *op,
		      unsigned events)
{
	if (op->priv.be.uring.bits & RIO__U_EDGE)
		io_uring_prep_poll_multishot(sqe, op->priv.fd, events);
	else
		io_uring_prep_poll_add(sqe, op->priv.fd, events);
}

/*
 * A send that finds no room waits on a poll of ours, not the kernel's:
 * io_uring's internal poll watches POLLRDHUP too, so on a socket whose
 * peer has shut its writing side it fires at once, again and again, until
 * the kernel hands the send to an io-wq worker that blocks in it, where no
 * cancel, close or deadline reaches it (Linux 6.x). So sends go with
 * MSG_DONTWAIT and come back with -EAGAIN when full; the poll then waits
 * for POLLOUT (poll_cqe keeps POLLRDHUP from spinning it). A sendmsg with
 * MSG_WAITALL keeps the kernel's wait: resuming one part-sent means
 * rebuilding its iovecs, and MSG_DONTWAIT would lose the count of what it
 * sent before -EAGAIN.
 */
static int send_waits(const rio_op *op)
{
	return op->priv.kind == RIO__OP_SENDMSG &&
	       (op->priv.a.io.flags & MSG_WAITALL);
}

static void prep_recv_multi(rio_loop *loop, struct uring *u, rio_op *op,
			    struct io_uring_sqe *sqe)
{
	rio_bufpool *pool = op->priv.a.multi.pool;
	size_t cap = RECV_CAP_BUFS * pool->size;
	rio__uring_pool_lend(pool);
	io_uring_prep_recv_multishot(sqe, op->priv.fd, NULL, 0, 0);
	sqe->flags |= IOSQE_BUFFER_SELECT;
	sqe->buf_group = pool->bgid;
	op->priv.be.uring.bits &= (uint8_t)~RIO__U_CAPPED;
	if (!u->recv_nocap) {
		/* sqe->optlen in newer headers: the same field */
		sqe->file_index = cap > (1u << 30) ? 1u << 30 : (unsigned)cap;
		op->priv.be.uring.bits |= RIO__U_CAPPED;
		/* an old kernel's refusal, by a field it checks */
		if (rio__fault(loop, RIO__F_NOCAP))
			sqe->addr2 = 1;
	}
}

/* The msghdr (and iovec) of the SQE in sqe's slot: the kernel copies it
 * when it takes the SQE, so it need live only as long as the SQE. */
static struct slotmsg *slot_of(struct uring *u, const struct io_uring_sqe *sqe)
{
	struct slotmsg *sm = &u->slots[sqe - u->ring.sq.sqes];
	memset(sm, 0, sizeof *sm);
	return sm;
}

/* Datagrams with their senders, control data and real lengths, each in one
 * buffer laid out as struct io_uring_recvmsg_out says (rio_dgram_get).
 * MSG_TRUNC: the header gives a cut datagram's real length. A pool kept
 * in user space: a poll, then recvmmsg into its free list (dgram_cqe);
 * one the kernel picks from: a multishot recvmsg, a CQE per datagram. */
static void prep_recvmsg_multi(struct uring *u, rio_op *op,
			       struct io_uring_sqe *sqe)
{
	if (rio__uring_pool_user(op->priv.a.multi.pool)) {
		op->priv.be.uring.bits |= RIO__U_DGPOLL;
		io_uring_prep_poll_add(sqe, op->priv.fd, POLLIN);
		return;
	}
	op->priv.be.uring.bits &= (uint8_t)~RIO__U_DGPOLL;
	struct msghdr *m = &slot_of(u, sqe)->m;
	m->msg_namelen = RIO__DGRAM_NAME;
	m->msg_controllen = op->priv.a.multi.control;
	io_uring_prep_recvmsg_multishot(sqe, op->priv.fd, m, MSG_TRUNC);
	sqe->flags |= IOSQE_BUFFER_SELECT;
	sqe->buf_group = op->priv.a.multi.pool->bgid;
}

/* A datagram: IORING_OP_SEND with its address (6.0), or before that a
 * sendmsg of a msghdr in the SQE's slot. MSG_DONTWAIT as every send. */
static void prep_sendto(rio_loop *loop, struct uring *u, rio_op *op,
			struct io_uring_sqe *sqe)
{
	const typeof(op->priv.a.sendto) *a = &op->priv.a.sendto;
	int fl = a->flags | MSG_DONTWAIT;
	if (u->send_addr && !rio__fault(loop, RIO__F_OLD_SEND)) {
		io_uring_prep_send(sqe, op->priv.fd, a->buf, a->len, fl);
		if (a->to) {
			sqe->addr2 = (uint64_t)(uintptr_t)a->to;
			sqe->addr_len = (uint16_t)a->tolen;
		}
		return;
	}
	struct slotmsg *sm = slot_of(u, sqe);
	sm->iov = (struct iovec){(void *)a->buf, a->len};
	sm->m.msg_name = (void *)a->to;
	sm->m.msg_namelen = a->tolen;
	sm->m.msg_iov = &sm->iov;
	sm->m.msg_iovlen = 1;
	io_uring_prep_sendmsg(sqe, op->priv.fd, &sm->m, (unsigned)fl);
}

static void prep_main(rio_loop *loop, struct uring *u, rio_op *op,
		      struct io_uring_sqe *sqe)
{
	int fd = op->priv.fd;
	switch (op->priv.kind) {
	case RIO__OP_ACCEPT:
		if (op->priv.bits & RIO__B_MULTISHOT)
			io_uring_prep_multishot_accept(sqe, fd, NULL, NULL,
						       SOCK_NONBLOCK | SOCK_CLOEXEC);
		else
			io_uring_prep_accept(sqe, fd, op->priv.a.accept.addr,
					     op->priv.a.accept.addrlen,
					     SOCK_NONBLOCK | SOCK_CLOEXEC);
		break;
	case RIO__OP_CONNECT:
		io_uring_prep_connect(sqe, fd, op->priv.a.connect.addr,
				      op->priv.a.connect.addrlen);
		break;
	case RIO__OP_RECV:
		io_uring_prep_recv(sqe, fd, op->priv.a.io.buf, op->priv.a.io.len, op->priv.a.io.flags);
		poll_first(op, sqe);
		break;
	case RIO__OP_SEND:
		if (op->priv.be.uring.bits & RIO__U_WAITOUT) {
			prep_wait(sqe, op, POLLOUT);
			break;
		}
		/* MSG_WAITALL is done here (translate): the kernel's would
		 * wait on its own poll */
		io_uring_prep_send(sqe, fd,
				   (char *)op->priv.a.io.buf + op->priv.a.io.done,
				   rio__fault_send_len(loop, op->priv.a.io.len -
								 op->priv.a.io.done),
				   (op->priv.a.io.flags | MSG_DONTWAIT) &
					   ~MSG_WAITALL);
		break;
	case RIO__OP_RECVMSG:
		io_uring_prep_recvmsg(sqe, fd, op->priv.a.io.msg, (unsigned)op->priv.a.io.flags);
		poll_first(op, sqe);
		break;
	case RIO__OP_SENDMSG:
		if (op->priv.be.uring.bits & RIO__U_WAITOUT) {
			prep_wait(sqe, op, POLLOUT);
			break;
		}
		/* with MSG_WAITALL the kernel's own wait (see send_waits) */
		io_uring_prep_sendmsg(sqe, fd, op->priv.a.io.msg,
				      (unsigned)(op->priv.a.io.flags |
						 (send_waits(op) ? 0
								 : MSG_DONTWAIT)));
		poll_first(op, sqe);
		break;
	case RIO__OP_READ: /* -1: at the file position, for any file */
		io_uring_prep_read(sqe, fd, op->priv.a.io.buf,
				   (unsigned)op->priv.a.io.len, (uint64_t)-1);
		break;
	case RIO__OP_WRITE: /* the thread that enters runs it */
		rio__sigpipe_block();
		io_uring_prep_write(sqe, fd, op->priv.a.io.buf,
				    (unsigned)op->priv.a.io.len, (uint64_t)-1);
		break;
	case RIO__OP_RECV_MULTI:
		prep_recv_multi(loop, u, op, sqe);
		break;
	case RIO__OP_RECVMSG_MULTI:
		prep_recvmsg_multi(u, op, sqe);
		break;
	case RIO__OP_SENDTO:
		if (op->priv.be.uring.bits & RIO__U_WAITOUT)
			prep_wait(sqe, op, POLLOUT);
		else
			prep_sendto(loop, u, op, sqe);
		break;
	case RIO__OP_POLL:
		prep_wait(sqe, op, op->priv.a.poll.events);
		break;
	case RIO__OP_SPLICE_IN: /* wait for the socket; splice on the CQE */
		prep_wait(sqe, op, POLLIN);
		break;
	case RIO__OP_SPLICE_OUT:
		prep_wait(sqe, op, POLLOUT);
		break;
	case RIO__OP_CLOSE:
		io_uring_prep_close(sqe, fd);
		break;
	case RIO__OP_SIGNAL: /* its signalfd readable: read it here */
		io_uring_prep_poll_multishot(sqe, fd, POLLIN);
		break;
	case RIO__OP_SHUTDOWN: /* an SQE, not the syscall: in SQ order */
		io_uring_prep_shutdown(sqe, fd, op->priv.a.shutdown.how);
		break;
	case RIO__OP_TIMEOUT:
		io_uring_prep_timeout(sqe, slot_ts(u, sqe, op->priv.a.timeout.ns),
				      0, 0);
		break;
	case RIO__OP_CANCEL:
		io_uring_prep_cancel64(sqe, (uint64_t)(uintptr_t)op->priv.a.cancel.target,
				       0);
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
		/* absolute, fixed by the core at submit: time on sqwait
		 * counts, and a retried op keeps its deadline */
		sqe->flags |= IOSQE_IO_LINK;
		sqe = io_uring_get_sqe(&u->ring);
		io_uring_prep_link_timeout(sqe, slot_ts(u, sqe, op->priv.due_ns),
					   IORING_TIMEOUT_ABS);
		/* Its CQE names no op and is dropped: the op completes at
		 * its own CQE (see translate), in the kernel's order. */
		set_ud(sqe, NULL, TAG_LT);
		need--;
	}
	op->priv.be.uring.cqes = (uint8_t)need;
	op->priv.state = RIO__ST_KERNEL;
	return 0;
}

void rio__uring_enqueue(rio_loop *loop, rio_op *op)
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

static int is_splice(const rio_op *op)
{
	return op->priv.kind == RIO__OP_SPLICE_IN ||
	       op->priv.kind == RIO__OP_SPLICE_OUT;
}

/* A cancel of target (by `canceller`, or by a cancel-all when NULL):
 * 0 when settled here (target deferred), -EALREADY when its result is on
 * its way, 1 when the kernel must be asked to stop it. */
static int aim(rio_loop *loop, rio_op *target, rio_op *canceller)
{
	if (target->priv.state == RIO__ST_SQWAIT) {
		/* the kernel does not hold it yet: settled here */
		rio__opq_remove(&U(loop)->sqwait, target);
		rio__defer(loop, target, -ECANCELED);
		return 0;
	}
	if (target->priv.be.uring.bits & RIO__U_STOPPING)
		return -EALREADY; /* an edge poll with its result */
	if (target->priv.be.uring.bits & RIO__U_HELD) {
		/* its datagrams being delivered: the kernel holds nothing of
		 * it; it ends after them (dgram_cqe) */
		rio__defer(loop, target, -ECANCELED);
		return 0;
	}
	target->priv.bits |= RIO__B_CANCELLED;
	if (rio__kind(target)->pool)
		target->priv.a.multi.canceller = canceller; /* multishot_cqe */
	return 1;
}

void rio__uring_submit(rio_loop *loop, rio_op *op)
{
	op->priv.be.uring.bits = 0;
	if (op->priv.kind == RIO__OP_CANCEL) {
		int r = aim(loop, op->priv.a.cancel.target, op);
		if (r <= 0) {
			rio__defer(loop, op, r);
			return;
		}
	}
	/* A splice is tried at once (the socket is often ready), but only
	 * with no other op on its fd in flight: ops on one fd run in the
	 * order they were submitted, and SQEs queued before it have not run
	 * yet (fuzz seed 1569). Not ready: the poll waits. */
	if (is_splice(op) && rio__fd_others(loop, op) == 0) {
		int res = rio__splice_try(op, 0);
		if (res != -EAGAIN) {
			rio__defer(loop, op, res);
			return;
		}
	}
	rio__uring_enqueue(loop, op);
}

/* ---- completions ---- */

/* A result the kernel gave for a single-shot op, all its CQEs in. */
static void translate(rio_loop *loop, rio_op *op, int res)
{
	/* -ECANCELED (or -EINTR: an io-wq worker was running it) means a
	 * cancel, a close or its linked timeout stopped it: decided from the
	 * op's own CQE, since the linked timeout's CQE can come after other
	 * ops' CQEs, and waiting for it would deliver this op out of the
	 * kernel's order (two recvs on one stream: bytes out of order). */
	if (res == -ECANCELED || res == -EINTR)
		res = rio__stopped(loop, op, res);
	if (op->priv.kind == RIO__OP_TIMEOUT && res == -ETIME)
		res = 0;
	int wait_out = (op->priv.kind == RIO__OP_SEND ||
			op->priv.kind == RIO__OP_SENDMSG ||
			op->priv.kind == RIO__OP_SENDTO) && !send_waits(op);
	if (op->priv.kind == RIO__OP_SEND &&
	    (op->priv.a.io.flags & MSG_WAITALL) && op->priv.a.io.len > 0) {
		/* MSG_WAITALL, here: on until every byte is sent; cut short,
		 * what was sent */
		uint32_t *done = &op->priv.a.io.done;
		if (res > 0)
			*done += (uint32_t)res;
		if (res > 0 && *done < op->priv.a.io.len)
			res = -EAGAIN;
		else if (res != -EAGAIN && *done)
			res = (int)*done;
	}
	/* The kernel's -EAGAIN (several ops on one fd: another took the
	 * readiness this one was woken for; for a splice, a spurious
	 * wakeup of its poll) is no result: try again (a deadline that
	 * passed meanwhile fires at once), unless a cancel or a close is
	 * ending the op. */
	if (res == -EAGAIN && rio__kind(op)->again) {
		if ((op->priv.bits & RIO__B_CANCELLED) ||
		    rio__fd_closing(loop, op)) {
			res = rio__kind(op)->io && op->priv.a.io.done
				      ? (int)op->priv.a.io.done
				      : -ECANCELED;
		} else {
			op->priv.be.uring.bits |=
				wait_out ? RIO__U_WAITOUT : RIO__U_RETRY;
			rio__uring_enqueue(loop, op);
			return;
		}
	}
	rio__complete(loop, op, res, 0);
}

static void cqe_done(rio_loop *loop, rio_op *op)
{
	assert(op->priv.be.uring.cqes > 0);
	if (--op->priv.be.uring.cqes == 0)
		translate(loop, op, op->res);
}

/* The kernel ended a multishot op on its own (pool dry, length cap) while
 * a cancel aimed at it was on its way: that cancel will find nothing
 * (-ENOENT), yet it is the cancel that ends the stream for the caller. */
static void ended_before_cancel(rio_op *op)
{
	rio_op *c = op->priv.a.multi.canceller;
	if (rio__kind(op)->pool && c) {
		c->priv.a.cancel.ended_first = 1;
		op->priv.a.multi.canceller = NULL;
	}
}

/* A datagram's CQE counts the bytes of its buffer it used: the header,
 * the address's room, the control data's, then the payload. res becomes
 * the payload's bytes and op->buf its start, as on the fallback. */
static int dgram_res(rio_op *op, int res, unsigned *flags)
{
	size_t off = rio__dgram_payload_off(op);
	const struct rio__dgram_hdr *h = op->buf;
	if (res < (int)off) /* cannot be: the buffer has room for them */
		return -EFAULT;
	op->buf = (char *)op->buf + off;
	if (h->flags & MSG_TRUNC)
		*flags |= RIO_OP_F_TRUNC;
	return res - (int)off;
}

/* A multishot CQE. Without F_MORE the kernel ended the stream: re-arm it
 * unless it ended in an error or a cancel; -ENOBUFS starves the recv until
 * a buffer is given back. */
static void multishot_cqe(rio_loop *loop, rio_op *op, int res, unsigned cf)
{
	unsigned flags = RIO_OP_F_MORE;
	int is_recv = rio__kind(op)->pool;
	if (cf & IORING_CQE_F_BUFFER) {
		rio_bufpool *pool = op->priv.a.multi.pool;
		uint16_t bid = (uint16_t)(cf >> IORING_CQE_BUFFER_SHIFT);
		rio__pool_mark_lent(pool, bid);
		op->buf = pool->mem + (size_t)bid * pool->size;
		op->buf_id = bid;
		flags |= RIO_OP_F_BUF;
		if (op->priv.kind == RIO__OP_RECVMSG_MULTI)
			res = dgram_res(op, res, &flags);
	}
	if (cf & IORING_CQE_F_MORE) {
		rio__complete(loop, op, res, flags);
		return;
	}
	/* A close of its file ends the op, even one whose kernel request
	 * ended on its own (-ENOBUFS) before the cancel-fd saw it; a close of
	 * an earlier file with the same number does not. */
	int cancelled = (op->priv.bits & RIO__B_CANCELLED) ||
			rio__fd_closing(loop, op);
	if ((op->priv.bits & RIO__B_FAULTEND) && res == -ECANCELED && !cancelled) {
		res = -op->priv.fault_err;
		op->priv.bits &= ~RIO__B_FAULTEND;
	}
	/* A kernel without the length cap (before 6.17) refuses it, before
	 * receiving anything: arm without it from now on. */
	int capless = res == -EINVAL && is_recv &&
		      (op->priv.be.uring.bits & RIO__U_CAPPED);
	if (capless)
		U(loop)->recv_nocap = 1;
	if ((res == -ENOBUFS || capless) && is_recv) {
		if (!cancelled) {
			if (capless)
				rio__uring_enqueue(loop, op);
			else
				rio__starve(loop, op);
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
		rio__uring_enqueue(loop, op);
		return;
	}
	if (result && !cancelled) {
		loop->ctr.multishot_rearms++;
		rio__uring_enqueue(loop, op);
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

/* Ask the kernel to end op's request now: an internal cancel, whose own CQE
 * is dropped; the op's last CQE follows. Returns 0, or -EBUSY when no SQE
 * can be had. */
static int stop(rio_loop *loop, rio_op *op)
{
	struct uring *u = U(loop);
	struct io_uring_sqe *sqe = io_uring_get_sqe(&u->ring);
	if (!sqe && u->bound) {
		io_uring_submit(&u->ring);
		loop->ctr.enters++;
		sqe = io_uring_get_sqe(&u->ring);
	}
	if (!sqe)
		return -EBUSY;
	io_uring_prep_cancel64(sqe, (uint64_t)(uintptr_t)op, 0);
	set_ud(sqe, op, TAG_STOP);
	return 0;
}

/* A cancel-all's: the internal cancel, or when no SQE can be had before
 * the first run (the SQ full of what waits for it), one at that run. */
void rio__uring_cancel(rio_loop *loop, rio_op *op)
{
	if (aim(loop, op, NULL) == 1 && stop(loop, op) != 0)
		rio__opq_push(&U(loop)->stopq, op);
}

/* Those waiting for their stop get it; first in a turn, before any CQE
 * of theirs can be reaped (the loop is bound now: the SQ can be flushed) */
static void flush_stops(rio_loop *loop)
{
	struct uring *u = U(loop);
	rio_op *op;
	while ((op = u->stopq.head) && stop(loop, op) == 0)
		rio__opq_remove(&u->stopq, op);
}

#ifdef RINGIO_FAULT_HOOKS
/* End a live multishot op as if the kernel had ended it with `err`: cancel
 * it for real, and let its final -ECANCELED read as `err`. */
static void fault_end(rio_loop *loop, rio_op *op, int err)
{
	if (op->priv.bits & (RIO__B_FAULTEND | RIO__B_CANCELLED))
		return;
	if (stop(loop, op))
		return;
	op->priv.bits |= RIO__B_FAULTEND;
	op->priv.fault_err = (int16_t)-err;
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
		int r = rio__fault_accept(loop, *res);
		if (r >= 0)
			return 1;
		if (!multi || !(cf & IORING_CQE_F_MORE)) {
			*res = r;
			return 1;
		}
		fault_end(loop, op, r);
		return 0;
	}
	if (rio__kind(op)->pool && (cf & IORING_CQE_F_MORE) &&
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

/* Ops that wait on a poll of ours now: a poll, a splice (then it splices),
 * a send that found no room (then it sends again). */
static int polling(const rio_op *op)
{
	return op->priv.kind == RIO__OP_POLL || is_splice(op) ||
	       (op->priv.be.uring.bits & RIO__U_WAITOUT);
}

/* What a poll of op's asked for, of what the kernel reported. A poll's
 * own: the kernel reports the bits of the wakeup that ended it; what
 * became ready since (a FIN behind the data) is ready as well when the
 * caller sees it, and the fallback reports it (poll(2) at delivery), so
 * ask poll(2) too. A splice or a send: its readiness, or an error or a
 * hang-up, which the syscall then reports. */
static int poll_mask(const rio_op *op, int res)
{
	if (op->priv.kind != RIO__OP_POLL) {
		int in = op->priv.kind == RIO__OP_SPLICE_IN;
		return res & ((in ? POLLIN : POLLOUT) | POLLERR | POLLHUP);
	}
	short events = (short)op->priv.a.poll.events;
	struct pollfd p = {.fd = op->priv.fd, .events = events};
	if (poll(&p, 1, 0) > 0)
		res |= p.revents;
	return res & events;
}

/* A poll of op's is over: `res` is what it asked for (> 0), or an error. */
static void poll_done(rio_loop *loop, rio_op *op, int res)
{
	uint8_t *ub = &op->priv.be.uring.bits;
	*ub &= (uint8_t)~(RIO__U_EDGE | RIO__U_STOPPING);
	/* the fd is being closed (its number may be another file's by
	 * now): no syscall on it */
	if (res > 0 && op->priv.kind != RIO__OP_POLL &&
	    rio__fd_closing(loop, op))
		res = -ECANCELED;
	if (res > 0 && (*ub & RIO__U_WAITOUT)) { /* room: send again */
		*ub &= (uint8_t)~RIO__U_WAITOUT;
		rio__uring_enqueue(loop, op);
		return;
	}
	if (res > 0 && is_splice(op))
		res = rio__splice_try(op, 1);
	op->res = res;
	cqe_done(loop, op);
}

/* io_uring watches POLLERR, POLLHUP and POLLRDHUP whatever a poll asks for,
 * so a poll for something else (POLLOUT, or errors alone: the relay's
 * watch of a socket past its peer's FIN) on a socket that has its peer's
 * FIN fires at once, forever: the bit that fires is not one it asked for.
 * Such a poll is armed again as an edge-triggered multishot poll, which
 * fires only on a new wakeup of the socket (room, a reset, data, a
 * hang-up), and what those bring is masked again. The first asked-for bit
 * is its result: kept in op->res while the poll is stopped, and acted on
 * at its last CQE; a cancel meanwhile finds the result decided
 * (-EALREADY, rio__uring_submit). */
static void poll_cqe(rio_loop *loop, rio_op *op, int res, unsigned cf)
{
	uint8_t *ub = &op->priv.be.uring.bits;
	int ending = (op->priv.bits & RIO__B_CANCELLED) ||
		     rio__fd_closing(loop, op);
	if (res > 0)
		res = poll_mask(op, res);
	if (cf & IORING_CQE_F_MORE) { /* the edge poll: one wakeup */
		if (res > 0 && !ending && !(*ub & RIO__U_STOPPING) &&
		    stop(loop, op) == 0) {
			op->res = res;
			*ub |= RIO__U_STOPPING;
		}
		return;
	}
	if (*ub & RIO__U_STOPPING) {
		res = op->res;
	} else if (res == 0) { /* fired for a bit it did not ask for */
		if (!ending) {
			*ub |= RIO__U_EDGE;
			rio__uring_enqueue(loop, op);
			return;
		}
		res = -ECANCELED;
	}
	poll_done(loop, op, res);
}

/* A datagram socket's poll fired (a pool kept in user space): batches of
 * datagrams, each a completion, until the socket has no more or the pool
 * is dry, then the poll again. A cancel or a close from a callback ends
 * the op after the batch (aim); one that raced the poll's CQE, at once. */
static void dgram_cqe(rio_loop *loop, rio_op *op, int res)
{
	uint8_t *ub = &op->priv.be.uring.bits;
	if (res >= 0 && ((op->priv.bits & RIO__B_CANCELLED) ||
			 rio__fd_closing(loop, op))) {
		ended_before_cancel(op);
		res = -ECANCELED;
	}
	for (int batches = 0; res >= 0 && batches < 4; batches++) {
		if (!rio__uring_pool_user(op->priv.a.multi.pool))
			break; /* lent to the kernel meanwhile: its way now */
		uint16_t got[RIO__DGRAM_BATCH];
		struct rio__freelist *fl =
			rio__uring_pool_free(op->priv.a.multi.pool);
		/* fewer than offered: the socket is drained */
		int offer = (int)rio__dgram_offer(fl);
		res = rio__dgram_recv(loop, op, fl, got);
		if (res <= 0)
			break;
		*ub |= RIO__U_HELD;
		rio__dgram_deliver(loop, op, got, (unsigned)res);
		*ub &= (uint8_t)~RIO__U_HELD;
		if (op->priv.state != RIO__ST_KERNEL)
			return; /* a cancel settled it (aim) */
		if (rio__fd_closing(loop, op))
			res = -ECANCELED;
		else if (res < offer)
			res = -EAGAIN; /* drained */
	}
	if (res == -ENOBUFS) {
		rio__starve(loop, op);
		return;
	}
	if (res >= 0 || res == -EAGAIN) {
		loop->ctr.multishot_rearms++;
		rio__uring_enqueue(loop, op);
		return;
	}
	op->res = res;
	cqe_done(loop, op);
}

/* A signal op's poll fired: every signal pending on its signalfd, one
 * completion each, read to the end (the poll fires again only on a new
 * one; a read fails only with EAGAIN, when none is left). A cancel stops
 * the reading: what is not read stays pending in the process. The kernel
 * ending the poll by itself re-arms it. */
static void signal_cqe(rio_loop *loop, rio_op *op, int res, unsigned cf)
{
	while (res > 0 && !(op->priv.bits & RIO__B_CANCELLED)) {
		int sig = rio__signal_read(loop, op);
		if (sig < 0)
			break;
		rio__complete(loop, op, sig, RIO_OP_F_MORE);
	}
	if (cf & IORING_CQE_F_MORE)
		return;
	if (res >= 0 && !(op->priv.bits & RIO__B_CANCELLED)) {
		loop->ctr.multishot_rearms++;
		rio__uring_enqueue(loop, op);
		return;
	}
	op->res = res;
	cqe_done(loop, op);
}

static void handle_cqe(rio_loop *loop, uint64_t ud, int res, unsigned cf)
{
	rio_op *op = (rio_op *)(uintptr_t)(ud & ~(uint64_t)TAG_MASK);
	if ((ud & TAG_MASK) == TAG_MAIN && !fault_cqe(loop, op, &res, cf))
		return;
	switch (ud & TAG_MASK) {
	case TAG_STOP:
		return;
	case TAG_LT: /* no op: see prep */
		return;
	case TAG_AUX:
		cqe_done(loop, op);
		return;
	default:
		if (op->priv.kind == RIO__OP_SIGNAL) {
			signal_cqe(loop, op, res, cf);
			return;
		}
		if (op->priv.be.uring.bits & RIO__U_DGPOLL) {
			dgram_cqe(loop, op, res);
			return;
		}
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
			res = op->priv.a.cancel.ended_first ? 0 : -EALREADY;
		if (polling(op)) {
			poll_cqe(loop, op, res, cf);
			return;
		}
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

int rio__uring_poll(rio_loop *loop, int block)
{
	struct uring *u = U(loop);
	/* Results decided before this enter (at submit, by callbacks of the
	 * results the turn started with) go first: what the enter finds was
	 * decided after them. Delivering them is this turn's work, so it
	 * does not wait for the kernel. */
	if (rio__flush_pending(loop))
		block = 0;
	flush_stops(loop);
	flush_sqwait(loop);
	if (!rio__opq_empty(&loop->pending))
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
	rio__uring_enqueue(loop, op);
}

void rio__uring_arm_wake(rio_loop *loop)
{
	rio_op *op = &U(loop)->wake_op;
	op->priv.cb = wake_cb;
	op->priv.kind = RIO__OP_WAKE;
	op->priv.fd = -1;
	op->priv.bits = RIO__B_INTERNAL;
	op->priv.state = RIO__ST_KERNEL;
	rio__uring_enqueue(loop, op);
}

void rio__uring_wake(rio_loop *loop)
{
	uint64_t one = 1;
	ssize_t n = write(U(loop)->efd, &one, sizeof one);
	(void)n; /* EAGAIN: the counter is saturated, a wakeup is pending */
}

/*
 * What the io_uring backend's three files share: the ring's state, and the
 * functions one file gives the others. uring_setup.c makes the ring (probe,
 * setup flags and their fallback) and holds the backend's table for the
 * core; uring_bufring.c the provided-buffer rings; uring.c prepares ops as
 * SQEs and turns CQEs into completions.
 */
#ifndef RIO_URING_H
#define RIO_URING_H

#include <liburing.h>
#include "internal.h"

struct uring {
	struct io_uring ring;
	rio__opq sqwait;  /* ops waiting for SQEs, FIFO */
	int efd;          /* the wakeup eventfd */
	uint64_t wake_val;
	rio_op wake_op;   /* the read on efd, always in flight */
	unsigned setup_flags;
	int recv_nocap;   /* the kernel refused a multishot recv's length cap */
	int send_addr;    /* IORING_OP_SEND takes an address (6.0) */
	/* per SQE slot: what the SQE there points to and the kernel reads
	 * when it takes the SQE (no room in rio_op for them): a datagram
	 * op's msghdr (and iovec), a timeout's timespec */
	struct slotmsg {
		struct msghdr m;
		struct iovec iov;
		struct __kernel_timespec ts;
	} *slots;
	rio__opq stopq;   /* a cancel-all's stops waiting for an SQE */
	int bound;        /* enabled for (and its fd registered by) a thread */
};

static inline struct uring *rio__uring(rio_loop *loop)
{
	return loop->be_data;
}

/* uring_bufring.c */
RIO__HIDDEN int rio__uring_pool_init(rio_bufpool *pool);
RIO__HIDDEN void rio__uring_pool_fini(rio_bufpool *pool);
RIO__HIDDEN void rio__uring_pool_put(rio_bufpool *pool, uint16_t id);
/* Whether pool's free buffers are still in user space (its free list). */
RIO__HIDDEN int rio__uring_pool_user(rio_bufpool *pool);
RIO__HIDDEN struct rio__freelist *rio__uring_pool_free(rio_bufpool *pool);
/* Before the first SQE that lets the kernel pick pool's buffers: its free
 * buffers go to its ring, and every one given back from now on. */
RIO__HIDDEN void rio__uring_pool_lend(rio_bufpool *pool);

/* uring.c, the op core */
RIO__HIDDEN void rio__uring_submit(rio_loop *loop, rio_op *op);
RIO__HIDDEN int rio__uring_poll(rio_loop *loop, int block);
RIO__HIDDEN void rio__uring_wake(rio_loop *loop);
/* Hand op to the kernel's SQ; a full SQ is flushed, and if it is still
 * full the op waits its turn. Never fails. Also resumes a starved recv. */
RIO__HIDDEN void rio__uring_enqueue(rio_loop *loop, rio_op *op);
/* A cancel-all of op (see struct rio__backend). */
RIO__HIDDEN void rio__uring_cancel(rio_loop *loop, rio_op *op);
/* Arm the read on the wakeup eventfd (once, at init). */
RIO__HIDDEN void rio__uring_arm_wake(rio_loop *loop);

#endif

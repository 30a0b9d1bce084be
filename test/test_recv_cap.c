/* How far a multishot recv runs on after a cancel.
 *
 * A relay that stops receiving for backpressure cancels its multishot
 * recv; whatever the kernel has received into pool buffers before the
 * cancel lands still arrives, and those buffers are held by a peer that
 * is not reading. io_uring's own limit is 32 receives in one pass, so a
 * stalled connection could hold 32 buffers. ringio arms a recv for
 * 4 buffers' worth of bytes at a time (RECV_CAP_BUFS in src/uring.c) (the kernel's
 * multishot length cap, Linux 6.17+) and re-arms it itself, so the cancel
 * lands within a few buffers. The readiness backends run completions one
 * at a time and stop at once. */
#include "common.h"

#include <stdlib.h>
#include <unistd.h>

enum { NBUF = 256, BUFSZ = 4096, BACKLOG = 2 << 20 };

struct cap {
	rio_op op, cancel;
	rio_bufpool *pool;
	int data, finals, final_res, cancelled;
};

static void cancel_cb(rio_loop *loop, rio_op *op, int res)
{
	(void)loop;
	(void)op;
	(void)res;
}

static void recv_cb(rio_loop *loop, rio_op *op, int res)
{
	struct cap *c = RIO_CONTAINER_OF(op, struct cap, op);

	if (op->flags & RIO_OP_F_BUF) {
		c->data++;
		/* give it back at once: only the cap may stop the kernel */
		cr_assert_eq(rio_bufpool_put(c->pool, op->buf_id), 0);
	}
	if (!(op->flags & RIO_OP_F_MORE)) {
		c->finals++;
		c->final_res = res;
		return;
	}
	if (!c->cancelled) {
		c->cancelled = 1;
		cr_assert_eq(rio_cancel(loop, &c->cancel, op, cancel_cb), 0);
	}
}

Test(recv_cap, cancel_lands_within_a_few_buffers, .timeout = 30)
{
	rio_loop *loop = t_loop();
	struct cap *c = calloc(1, sizeof(*c));
	static char chunk[65536];
	size_t queued = 0;
	int a, b;

	cr_assert_not_null(c);
	if (t_backend(loop) == RIO_BACKEND_URING && !t_kernel_at_least(6, 17))
		cr_skip_test("this kernel's io_uring has no multishot recv "
			     "length cap (Linux 6.17+): the cancel may land "
			     "after up to 32 buffers");
	t_pair(&a, &b);
	/* megabytes waiting before the recv starts */
	for (int i = 0; i < 1000 && queued < BACKLOG; i++) {
		ssize_t n = send(a, chunk, sizeof(chunk), MSG_DONTWAIT);

		if (n <= 0)
			break;
		queued += (size_t)n;
	}
	cr_assert_geq(queued, 64 * BUFSZ, "only %zu bytes queued", queued);
	c->pool = t_bufpool(loop, NBUF, BUFSZ);
	rio_op_init(&c->op);
	rio_op_init(&c->cancel);
	cr_assert_eq(rio_recv_multishot(loop, &c->op, b, c->pool, recv_cb), 0);
	T_RUN_UNTIL(loop, c->finals == 1, 5000);
	cr_log_info("%s: %d buffers arrived for a recv cancelled at its first "
		    "(%zu KiB waiting)", rio_backend_name(t_backend(loop)),
		    c->data, queued >> 10);
	cr_assert_eq(c->final_res, -ECANCELED);
	cr_assert_geq(c->data, 1);
	/* the first buffer, the rest of its batch, and at most one more
	 * batch armed before the cancel was read */
	cr_assert_leq(c->data, 8, "%d buffers arrived after the cancel",
		      c->data - 1);
	cr_assert_eq(rio_bufpool_destroy(c->pool), 0);
	close(a);
	close(b);
	free(c);
	t_loop_done(loop);
}

/* A kernel without the cap (before 6.17) refuses it with -EINVAL before
 * receiving anything; the loop then arms recvs without it, and the
 * stream arrives whole and in order, the refusal never seen. The fault
 * plan makes this kernel refuse it the way an old one does. */
#ifdef RINGIO_FAULT_HOOKS
/* only the fault-plan test below uses it */
struct fb {
	rio_op op;
	rio_bufpool *pool;
	uint64_t got;
	int finals, final_res, bad;
};

static void fb_cb(rio_loop *loop, rio_op *op, int res)
{
	struct fb *f = RIO_CONTAINER_OF(op, struct fb, op);

	(void)loop;
	if (op->flags & RIO_OP_F_BUF) {
		if (t_pat_check(op->buf, (size_t)res, f->got) != (size_t)res)
			f->bad++;
		f->got += (uint64_t)res;
		cr_assert_eq(rio_bufpool_put(f->pool, op->buf_id), 0);
	}
	if (!(op->flags & RIO_OP_F_MORE)) {
		f->finals++;
		f->final_res = res;
	}
}
#endif

Test(recv_cap, refused_cap_falls_back, .timeout = 30)
{
#ifndef RINGIO_FAULT_HOOKS
	cr_skip_test("built without RINGIO_FAULT_HOOKS: no fault plan");
#else
	enum { TOTAL = 1 << 20 };
	static char out[TOTAL];
	struct fb *f = calloc(1, sizeof(*f));
	size_t sent = 0;
	int a, b;

	cr_assert_not_null(f);
	cr_assert_eq(setenv("RINGIO_FAULTS", "seed=3,nocap=1000", 1), 0);
	rio_loop *loop = t_loop();

	unsetenv("RINGIO_FAULTS");
	t_pair(&a, &b);
	t_pat_fill(out, TOTAL, 0);
	f->pool = t_bufpool(loop, 16, BUFSZ);
	rio_op_init(&f->op);
	cr_assert_eq(rio_recv_multishot(loop, &f->op, b, f->pool, fb_cb), 0);
	/* bounded: 10 s of 1 ms turns at most */
	for (int i = 0; i < 10000 && f->got < TOTAL && !f->finals; i++) {
		ssize_t n = sent < TOTAL ? send(a, out + sent, TOTAL - sent,
						MSG_DONTWAIT) : 0;

		if (n > 0)
			sent += (size_t)n;
		t_loop_sleep(loop, 1);
	}
	cr_assert_eq(f->finals, 0, "the recv ended: %s",
		     rio_strerror(f->final_res));
	cr_assert_eq(f->got, TOTAL, "got %llu of %d bytes",
		     (unsigned long long)f->got, TOTAL);
	cr_assert_eq(f->bad, 0, "the stream arrived changed");
	close(a);
	T_RUN_UNTIL(loop, f->finals == 1, 5000);
	cr_assert_eq(f->final_res, 0, "end of stream: %s",
		     rio_strerror(f->final_res));
	cr_assert_eq(rio_bufpool_destroy(f->pool), 0);
	close(b);
	free(f);
	t_loop_done(loop);
#endif
}

/* Ending a multishot recv (cancel, close) while its 4-buffer pool runs dry:
 * one final completion, -ECANCELED, never -ENOBUFS, and no dependence on
 * buffers coming back. */
#include "common.h"

#include <stdlib.h>
#include <unistd.h>

#define NBUF 4

/* ---- ending a multishot recv from its own callback while the pool runs
 * dry: the kernel may already have queued the -ENOBUFS that stops it ---- */

struct dry {
	rio_op op, end; /* end: the cancel or close issued from the callback */
	rio_bufpool *pool;
	int fd;
	int use_close;
	int calls, data, finals, final_res, enobufs_seen, end_calls, end_res;
	int end_rc, final_seq, end_seq, seq;
	uint16_t held[NBUF];
	int nheld;
};

static void dry_end_cb(rio_loop *loop, rio_op *op, int res)
{
	struct dry *d = RIO_CONTAINER_OF(op, struct dry, end);

	(void)loop;
	d->end_calls++;
	d->end_res = res;
	d->end_seq = ++d->seq;
}

static void dry_cb(rio_loop *loop, rio_op *op, int res)
{
	struct dry *d = RIO_CONTAINER_OF(op, struct dry, op);

	d->calls++;
	if (res == -ENOBUFS)
		d->enobufs_seen++;
	if (!(op->flags & RIO_OP_F_MORE)) {
		d->finals++;
		d->final_res = res;
		d->final_seq = ++d->seq;
		return;
	}
	if (res > 0 && (op->flags & RIO_OP_F_BUF) && d->nheld < NBUF)
		d->held[d->nheld++] = op->buf_id; /* keep it: pool runs dry */
	if (d->data++ == 0) /* first data: end the stream, keep the buffers */
		d->end_rc = d->use_close ?
				    rio_close(loop, &d->end, d->fd, dry_end_cb) :
				    rio_cancel(loop, &d->end, op, dry_end_cb);
}

static void run_dry(int use_close)
{
	rio_loop *loop = t_loop();
	rio_bufpool *pool = t_bufpool(loop, NBUF, 64);
	struct dry *d = calloc(1, sizeof(*d));
	char junk[8192];
	int a, b;

	cr_assert_not_null(d);
	t_pair(&a, &b);
	/* 8 KiB already queued for 4 x 64-byte buffers: the recv fills all
	 * four at once and the kernel ends it with -ENOBUFS right behind. */
	memset(junk, 'j', sizeof(junk));
	cr_assert_eq(send(a, junk, sizeof(junk), 0), (ssize_t)sizeof(junk));
	usleep(2000);
	d->pool = pool;
	d->fd = b;
	d->use_close = use_close;
	cr_assert_eq(rio_recv_multishot(loop, &d->op, b, pool, dry_cb), 0);
	/* Buffers stay held until both ops are done: a stream that only ends
	 * once a buffer comes back would hang here. */
	T_RUN_UNTIL(loop, d->finals > 0 && d->end_calls > 0, 2000);
	cr_assert_eq(d->end_rc, 0, "ending op refused: %d", d->end_rc);
	cr_assert_eq(d->enobufs_seen, 0, "-ENOBUFS reached the callback");
	cr_assert_eq(d->finals, 1);
	cr_assert_eq(d->final_res, -ECANCELED, "final res %d (%s)", d->final_res,
		     rio_strerror(d->final_res));
	if (use_close) {
		cr_assert_eq(d->end_res, 0, "close: %d", d->end_res);
		cr_assert_lt(d->final_seq, d->end_seq,
			     "recv ended after its fd's close completed");
	} else {
		cr_assert(d->end_res == 0 || d->end_res == -EALREADY,
			  "cancel of a live stream: %d (%s)", d->end_res,
			  rio_strerror(d->end_res));
	}
	for (int i = 0; i < d->nheld; i++)
		cr_assert_eq(rio_bufpool_put(pool, d->held[i]), 0);
	t_loop_sleep(loop, 10);
	cr_assert_eq(d->finals, 1, "a completion after the final one");
	cr_assert_eq(d->end_calls, 1);
	cr_assert_eq(rio_bufpool_destroy(pool), 0);
	if (!use_close)
		close(b);
	close(a);
	free(d);
	t_loop_done(loop);
}

Test(bufpool, cancel_from_callback_as_the_pool_runs_dry, .timeout = 20)
{
	run_dry(0);
}

Test(bufpool, close_from_callback_as_the_pool_runs_dry, .timeout = 20)
{
	run_dry(1);
}

/* ---- a cancel from a timer racing a stream that keeps running the pool
 * dry: exactly one final completion, never -ENOBUFS ---- */

struct race {
	rio_op op, timer, cancel, giveback;
	rio_bufpool *pool;
	uint64_t got;
	int finals, final_res, enobufs_seen, cancel_calls, cancel_res;
	int bad, timer_done, giveback_armed;
	uint16_t held[NBUF];
	int nheld;
};

static void race_giveback_cb(rio_loop *loop, rio_op *op, int res)
{
	struct race *r = RIO_CONTAINER_OF(op, struct race, giveback);

	(void)loop;
	(void)res;
	for (int i = 0; i < r->nheld; i++)
		r->bad += rio_bufpool_put(r->pool, r->held[i]) != 0;
	r->nheld = 0;
	r->giveback_armed = 0;
}

static void race_recv_cb(rio_loop *loop, rio_op *op, int res)
{
	struct race *r = RIO_CONTAINER_OF(op, struct race, op);

	if (res == -ENOBUFS)
		r->enobufs_seen++;
	if (!(op->flags & RIO_OP_F_MORE)) {
		r->finals++;
		r->final_res = res;
		return;
	}
	if (res <= 0 || !(op->flags & RIO_OP_F_BUF) || r->nheld >= NBUF) {
		r->bad++;
		return;
	}
	r->bad += t_pat_check(op->buf, (size_t)res, r->got) != (size_t)res;
	r->got += (uint64_t)res;
	r->held[r->nheld++] = op->buf_id; /* all back together, 1 ms later */
	if (!r->giveback_armed) {
		r->giveback_armed = 1;
		r->bad += rio_timeout(loop, &r->giveback, 1 * T_MS,
				      race_giveback_cb) != 0;
	}
}

static void race_cancel_cb(rio_loop *loop, rio_op *op, int res)
{
	struct race *r = RIO_CONTAINER_OF(op, struct race, cancel);

	(void)loop;
	r->cancel_calls++;
	r->cancel_res = res;
}

static void race_timer_cb(rio_loop *loop, rio_op *op, int res)
{
	struct race *r = RIO_CONTAINER_OF(op, struct race, timer);

	(void)res;
	r->timer_done = 1;
	r->bad += rio_cancel(loop, &r->cancel, &r->op, race_cancel_cb) != 0;
}

Test(bufpool, cancel_racing_a_stream_that_runs_the_pool_dry, .timeout = 60)
{
	enum { ITERS = 40, QUEUED = 32768 };
	rio_loop *loop = t_loop();
	rio_bufpool *pool = t_bufpool(loop, NBUF, 1024);
	struct race *r = calloc(1, sizeof(*r));
	char *data = malloc(QUEUED);

	cr_assert(r && data);
	t_pat_fill(data, QUEUED, 0);
	for (int i = 0; i < ITERS; i++) {
		int a, b;

		memset(r, 0, sizeof(*r));
		r->pool = pool;
		t_pair(&a, &b);
		cr_assert_eq(send(a, data, QUEUED, 0), QUEUED);
		cr_assert_eq(rio_recv_multishot(loop, &r->op, b, pool,
						race_recv_cb),
			     0);
		cr_assert_eq(rio_timeout(loop, &r->timer,
					 (uint64_t)(i % 8) * 500 * 1000,
					 race_timer_cb),
			     0);
		T_RUN_UNTIL(loop, r->finals && r->cancel_calls &&
					  !r->giveback_armed,
			    3000);
		cr_assert_eq(r->enobufs_seen, 0, "iter %d: -ENOBUFS reached the "
						 "callback", i);
		cr_assert_eq(r->bad, 0, "iter %d: bad data, flags or submit", i);
		cr_assert_eq(r->finals, 1);
		cr_assert_eq(r->final_res, -ECANCELED, "iter %d: final %d (%s)", i,
			     r->final_res, rio_strerror(r->final_res));
		cr_assert(r->cancel_res == 0 || r->cancel_res == -EALREADY,
			  "iter %d: cancel of a live stream gave %d (%s)", i,
			  r->cancel_res, rio_strerror(r->cancel_res));
		for (int k = 0; k < r->nheld; k++)
			cr_assert_eq(rio_bufpool_put(pool, r->held[k]), 0);
		close(a);
		close(b);
	}
	cr_assert_eq(rio_bufpool_destroy(pool), 0);
	free(data);
	free(r);
	t_loop_done(loop);
}

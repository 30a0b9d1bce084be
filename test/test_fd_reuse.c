/*
 * A closed fd's number handed out again while its rio_close() is still
 * being completed: the new file is a different file. The kernel has run
 * close(N); a callback in the same turn opens a socket that gets N and
 * starts ops on it. The close must complete after the ops of the *old*
 * file only (never waiting for the new file's), and the new file's ops
 * must never be ended on the old file's behalf.
 */
#include "common.h"

#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

struct reuse {
	rio_loop *loop;
	int trig[2];    /* a pair whose recv completes at once: the trigger */
	int old_fd;     /* the fd being closed (its number is reused) */
	int old_peer;   /* old_fd's peer, when old_fd is one end of a pair */
	int mine, peer; /* the new pair; mine has old_fd's number */
	int extra[256], nextra;
	int reused;
	int multishot;  /* start a multishot recv on the new file */
	rio_bufpool *pool;
	t_rec trig_op, old_op, close_op, new_op;
	char tb[16], ob[16], nb[16];
	uint64_t got;
	int bad;
};

static struct reuse *R;

static void new_multi_cb(rio_loop *loop, rio_op *op, int res)
{
	struct reuse *r = R;

	if (op->flags & RIO_OP_F_BUF) {
		r->got += (uint64_t)res;
		cr_assert_eq(rio_bufpool_put(r->pool, op->buf_id), 0);
	}
	if (!(op->flags & RIO_OP_F_MORE))
		t_rec_cb(loop, op, res);
}

/* Runs in the turn that reaps the close: open sockets until one gets the
 * closed number (fds are handed out lowest first), then use it. */
static void trigger_cb(rio_loop *loop, rio_op *op, int res)
{
	struct reuse *r = R;
	int sp[2];

	t_rec_cb(loop, op, res);
	while (r->nextra < 256) {
		cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK |
					SOCK_CLOEXEC, 0, sp), 0);
		if (sp[0] == r->old_fd || sp[1] == r->old_fd) {
			r->mine = sp[0] == r->old_fd ? sp[0] : sp[1];
			r->peer = sp[0] == r->old_fd ? sp[1] : sp[0];
			r->reused = 1;
			break;
		}
		r->extra[r->nextra++] = sp[0];
		r->extra[r->nextra++] = sp[1];
	}
	if (!r->reused)
		return; /* the close has not run yet: nothing to reuse */
	rio_op_init(&r->new_op.op);
	if (r->multishot)
		cr_assert_eq(rio_recv_multishot(loop, &r->new_op.op, r->mine,
						r->pool, new_multi_cb), 0);
	else
		cr_assert_eq(rio_recv(loop, &r->new_op.op, r->mine, r->nb,
				      sizeof r->nb, 0, t_rec_cb), 0);
}

/* old_fd: a pair end with a recv pending on it (`pending`), or a fresh
 * socket with nothing pending; then the trigger and the close, submitted
 * in one batch, trigger first. */
static struct reuse *setup(int pending, int multishot)
{
	struct reuse *r = calloc(1, sizeof(*r));

	cr_assert_not_null(r);
	R = r;
	r->loop = t_loop();
	r->multishot = multishot;
	r->old_peer = -1;
	if (multishot)
		r->pool = t_bufpool(r->loop, 8, 64);
	cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK |
				SOCK_CLOEXEC, 0, r->trig), 0);
	if (pending) {
		int p[2];

		cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK |
					SOCK_CLOEXEC, 0, p), 0);
		r->old_fd = p[0];
		r->old_peer = p[1];
		rio_op_init(&r->old_op.op);
		cr_assert_eq(rio_recv(r->loop, &r->old_op.op, r->old_fd, r->ob,
				      sizeof r->ob, 0, t_rec_cb), 0);
		/* the recv is in the kernel / armed before the close comes */
		t_loop_sleep(r->loop, 20);
		cr_assert_eq(r->old_op.calls, 0);
	} else {
		r->old_fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK |
				   SOCK_CLOEXEC, 0);
		cr_assert_geq(r->old_fd, 0);
	}
	cr_assert_eq(write(r->trig[1], "go", 2), 2);
	t_seq = 0;
	rio_op_init(&r->trig_op.op);
	rio_op_init(&r->close_op.op);
	cr_assert_eq(rio_recv(r->loop, &r->trig_op.op, r->trig[0], r->tb,
			      sizeof r->tb, 0, trigger_cb), 0);
	cr_assert_eq(rio_close(r->loop, &r->close_op.op, r->old_fd, t_rec_cb), 0);
	return r;
}

static void teardown(struct reuse *r)
{
	if (r->reused) {
		close(r->peer);
		T_RUN_UNTIL(r->loop, r->new_op.calls == 1, 2000);
		close(r->mine);
	}
	for (int i = 0; i < r->nextra; i++)
		close(r->extra[i]);
	close(r->trig[0]);
	close(r->trig[1]);
	if (r->old_peer >= 0)
		close(r->old_peer);
	if (r->pool) {
		t_drain(r->loop, 2000);
		cr_assert_eq(rio_bufpool_destroy(r->pool), 0);
	}
	t_loop_done(r->loop);
	free(r);
}

/* The close must not wait for an op on the file that took its number. */
static void close_completes_without_new_file(int pending)
{
	struct reuse *r = setup(pending, 0);

	/* the new file's recv gets nothing for as long as this waits */
	T_RUN_UNTIL(r->loop, r->close_op.calls == 1, 1000);
	cr_assert_eq(r->close_op.res, 0, "close: %s",
		     rio_strerror(r->close_op.res));
	cr_assert(r->reused, "no socket got the closed fd's number %d",
		  r->old_fd);
	if (pending) {
		cr_assert_eq(r->old_op.calls, 1);
		cr_assert_eq(r->old_op.res, -ECANCELED, "old recv: %s",
			     rio_strerror(r->old_op.res));
		cr_assert_lt(r->old_op.seq, r->close_op.seq,
			     "the close completed before the op it cancelled");
	}
	/* the new file's recv is untouched, and gets its byte */
	cr_assert_eq(r->new_op.calls, 0, "the new file's recv ended: %s",
		     rio_strerror(r->new_op.res));
	cr_assert_eq(write(r->peer, "x", 1), 1);
	T_RUN_UNTIL(r->loop, r->new_op.calls == 1, 2000);
	cr_assert_eq(r->new_op.res, 1, "new recv: %s",
		     rio_strerror(r->new_op.res));
	r->new_op.calls = 0;
	rio_op_init(&r->new_op.op);
	cr_assert_eq(rio_recv(r->loop, &r->new_op.op, r->mine, r->nb,
			      sizeof r->nb, 0, t_rec_cb), 0);
	teardown(r);
}

Test(fd_reuse, close_does_not_wait_for_the_new_file, .timeout = 30)
{
	close_completes_without_new_file(0);
}

Test(fd_reuse, close_waits_for_the_old_file_only, .timeout = 30)
{
	close_completes_without_new_file(1);
}

/* A multishot recv on the new file runs on while the old file's close is
 * being completed: it delivers every byte and ends only at end of stream. */
static void multishot_survives(int pending)
{
	enum { TOTAL = 4096 };
	struct reuse *r = setup(pending, 1);
	char data[TOTAL];

	T_RUN_UNTIL(r->loop, r->trig_op.calls == 1, 1000);
	cr_assert(r->reused, "no socket got the closed fd's number %d",
		  r->old_fd);
	/* more than a pass of the recv (4 x 64 B buffers) at a time */
	t_pat_fill(data, TOTAL, 0);
	size_t sent = 0;
	for (int i = 0; i < 2000 && (sent < TOTAL || r->got < TOTAL) &&
			r->new_op.calls == 0; i++) {
		ssize_t n = sent < TOTAL ? write(r->peer, data + sent,
						 TOTAL - sent) : 0;

		if (n > 0)
			sent += (size_t)n;
		t_loop_sleep(r->loop, 1);
	}
	cr_assert_eq(r->new_op.calls, 0,
		     "the new file's multishot recv ended after %llu of %d "
		     "bytes: %s", (unsigned long long)r->got, TOTAL,
		     rio_strerror(r->new_op.res));
	cr_assert_eq(r->got, TOTAL);
	T_RUN_UNTIL(r->loop, r->close_op.calls == 1, 1000);
	cr_assert_eq(r->close_op.res, 0);
	if (pending) {
		cr_assert_eq(r->old_op.calls, 1);
		cr_assert_eq(r->old_op.res, -ECANCELED, "old recv: %s",
			     rio_strerror(r->old_op.res));
		cr_assert_lt(r->old_op.seq, r->close_op.seq);
	}
	close(r->peer);
	T_RUN_UNTIL(r->loop, r->new_op.calls == 1, 2000);
	cr_assert_eq(r->new_op.res, 0, "end of stream: %s",
		     rio_strerror(r->new_op.res));
	r->new_op.calls = 0;
	r->reused = 0; /* teardown: nothing left on it */
	close(r->mine);
	teardown(r);
}

Test(fd_reuse, multishot_on_the_new_file_is_not_cancelled, .timeout = 30)
{
	multishot_survives(0);
}

Test(fd_reuse, multishot_survives_the_old_files_cancel, .timeout = 30)
{
	multishot_survives(1);
}

/* Data ops on a connected pair: send, recv, sendmsg, recvmsg, end of stream. */
#include "common.h"

#include <fcntl.h>
#include <sys/uio.h>
#include <unistd.h>

struct io {
	rio_op op;
	int calls;
	int res;
	int in_submit;
	int ran_in_submit;
};

static void io_cb(rio_loop *loop, rio_op *op, int res)
{
	struct io *io = RIO_CONTAINER_OF(op, struct io, op);

	(void)loop;
	io->calls++;
	io->res = res;
	if (io->in_submit)
		io->ran_in_submit = 1;
}

Test(io, send_then_recv_carries_the_bytes, .timeout = 20)
{
	rio_loop *loop = t_loop();
	struct io s = { .calls = 0 }, r = { .calls = 0 };
	char out[3000], in[4096];
	size_t got = 0;
	int a, b;

	t_pair(&a, &b);
	t_pat_fill(out, sizeof(out), 0);
	cr_assert_eq(rio_recv(loop, &r.op, b, in, sizeof(in), 0, io_cb), 0);
	s.in_submit = 1;
	cr_assert_eq(rio_send(loop, &s.op, a, out, sizeof(out), 0, io_cb), 0);
	s.in_submit = 0;
	T_RUN_UNTIL(loop, s.calls > 0 && r.calls > 0, 3000);
	cr_assert_eq(s.ran_in_submit, 0, "callback ran inside rio_send");
	cr_assert_eq(s.res, (int)sizeof(out), "send res %d (%s)", s.res,
		     rio_strerror(s.res));
	cr_assert_gt(r.res, 0, "recv res %d (%s)", r.res, rio_strerror(r.res));
	got = (size_t)r.res;
	/* TCP may split it; collect the rest with more recvs. */
	for (int i = 0; i < 100 && got < sizeof(out); i++) {
		int before = r.calls;

		cr_assert_eq(rio_recv(loop, &r.op, b, in + got, sizeof(in) - got,
				      0, io_cb),
			     0);
		T_RUN_UNTIL(loop, r.calls > before, 3000);
		cr_assert_gt(r.res, 0, "recv res %d", r.res);
		got += (size_t)r.res;
	}
	cr_assert_eq(got, sizeof(out));
	cr_assert_eq(t_pat_check(in, got, 0), got, "received bytes differ");
	cr_assert_eq(s.calls, 1);
	close(a);
	close(b);
	t_loop_done(loop);
}

Test(io, recv_with_data_already_queued_never_runs_inside_submit,
     .timeout = 20)
{
	rio_loop *loop = t_loop();
	struct io r = { .calls = 0 };
	char buf[64];
	int a, b;

	t_pair(&a, &b);
	cr_assert_eq(write(a, "hello", 5), 5);
	usleep(2000);
	r.in_submit = 1;
	cr_assert_eq(rio_recv(loop, &r.op, b, buf, sizeof(buf), 0, io_cb), 0);
	r.in_submit = 0;
	cr_assert_eq(r.calls, 0, "callback ran inside rio_recv");
	T_RUN_UNTIL(loop, r.calls > 0, 3000);
	cr_assert_eq(r.res, 5);
	cr_assert_eq(memcmp(buf, "hello", 5), 0);
	close(a);
	close(b);
	t_loop_done(loop);
}

Test(io, sendmsg_and_recvmsg_scatter_gather, .timeout = 20)
{
	rio_loop *loop = t_loop();
	struct io s = { .calls = 0 }, r = { .calls = 0 };
	static char src[6000], dst[6000];
	struct iovec siov[3] = {
		{ src, 7 }, { src + 7, 2993 }, { src + 3000, 3000 },
	};
	struct iovec riov[3];
	struct msghdr smsg = { .msg_iov = siov, .msg_iovlen = 3 };
	struct msghdr rmsg;
	size_t got = 0;
	int a, b;

	t_pair(&a, &b);
	t_pat_fill(src, sizeof(src), 12345);
	memset(dst, 0, sizeof(dst));
	cr_assert_eq(rio_sendmsg(loop, &s.op, a, &smsg, 0, io_cb), 0);
	/* Receive into two uneven iovecs until everything arrived. */
	for (int i = 0; i < 100 && got < sizeof(dst); i++) {
		int before = r.calls;
		size_t first = got < 1000 ? 1000 - got : 0;

		riov[0] = (struct iovec){ dst + got, first };
		riov[1] = (struct iovec){ dst + got + first,
					  sizeof(dst) - got - first };
		rmsg = (struct msghdr){ .msg_iov = first ? riov : riov + 1,
					.msg_iovlen = first ? 2 : 1 };
		cr_assert_eq(rio_recvmsg(loop, &r.op, b, &rmsg, 0, io_cb), 0);
		T_RUN_UNTIL(loop, r.calls > before, 3000);
		cr_assert_gt(r.res, 0, "recvmsg res %d (%s)", r.res,
			     rio_strerror(r.res));
		got += (size_t)r.res;
	}
	cr_assert_eq(s.calls, 1);
	cr_assert_eq(s.res, (int)sizeof(src), "sendmsg res %d (%s)", s.res,
		     rio_strerror(s.res));
	cr_assert_eq(got, sizeof(dst));
	cr_assert_eq(t_pat_check(dst, sizeof(dst), 12345), sizeof(dst),
		     "bytes differ after scatter/gather");
	close(a);
	close(b);
	t_loop_done(loop);
}

Test(io, recv_returns_zero_after_peer_shutdown, .timeout = 20)
{
	rio_loop *loop = t_loop();
	struct io r = { .calls = 0 };
	char buf[64];
	int a, b;

	t_pair(&a, &b);
	/* Pending first, then the FIN arrives. */
	cr_assert_eq(rio_recv(loop, &r.op, b, buf, sizeof(buf), 0, io_cb), 0);
	t_loop_sleep(loop, 5);
	cr_assert_eq(r.calls, 0, "recv completed with no data and no FIN");
	cr_assert_eq(shutdown(a, SHUT_WR), 0);
	T_RUN_UNTIL(loop, r.calls > 0, 3000);
	cr_assert_eq(r.res, 0, "EOF must be res 0, got %d (%s)", r.res,
		     rio_strerror(r.res));
	/* End of stream is sticky: a new recv completes with 0 at once. */
	cr_assert_eq(rio_recv(loop, &r.op, b, buf, sizeof(buf), 0, io_cb), 0);
	T_RUN_UNTIL(loop, r.calls > 1, 3000);
	cr_assert_eq(r.res, 0);
	cr_assert_eq(r.calls, 2);
	close(a);
	close(b);
	t_loop_done(loop);
}

struct dribble {
	rio_op op;
	int fd;
	int sent;
	int bad;
};

static void dribble_cb(rio_loop *loop, rio_op *op, int res)
{
	struct dribble *d = RIO_CONTAINER_OF(op, struct dribble, op);
	char chunk[1000];

	t_pat_fill(chunk, sizeof(chunk), (uint64_t)d->sent * 1000);
	if (res != 0 || write(d->fd, chunk, sizeof(chunk)) != 1000)
		d->bad++;
	if (++d->sent < 4 && rio_timeout(loop, op, 3 * T_MS, dribble_cb) != 0)
		d->bad++;
}

Test(io, recv_waitall_collects_every_piece, .timeout = 20)
{
	rio_loop *loop = t_loop();
	struct io r = { .calls = 0 };
	struct dribble d = { .sent = 0 };
	char buf[4000];
	int a, b;

	t_pair(&a, &b);
	d.fd = a;
	/* 4 x 1000 bytes, 3 ms apart; MSG_WAITALL must wait for all 4000. */
	cr_assert_eq(rio_recv(loop, &r.op, b, buf, sizeof(buf), MSG_WAITALL,
			      io_cb),
		     0);
	cr_assert_eq(rio_timeout(loop, &d.op, 3 * T_MS, dribble_cb), 0);
	T_RUN_UNTIL(loop, r.calls > 0 && d.sent == 4, 3000);
	cr_assert_eq(d.bad, 0);
	cr_assert_eq(r.res, (int)sizeof(buf), "MSG_WAITALL recv gave %d", r.res);
	cr_assert_eq(t_pat_check(buf, sizeof(buf), 0), sizeof(buf));
	cr_assert_eq(r.calls, 1);
	close(a);
	close(b);
	t_loop_done(loop);
}

/*
 * A MSG_WAITALL recv or send ended early (cancel, close, deadline) after
 * moving part of `len` reports the bytes it moved, on every backend: they
 * are in (or gone from) the caller's buffer, and a -ECANCELED would lose
 * the count. Found by test/fuzz seed 35 (io_uring gave 195, the fallback
 * -ECANCELED).
 */
enum cut_how { CUT_CANCEL, CUT_CLOSE, CUT_DEADLINE };

static void waitall_cut_short(enum cut_how how, int send_side)
{
	rio_loop *loop = t_loop();
	struct io r = { .calls = 0 };
	t_rec c = { .calls = 0 };
	static char buf[8 << 20];
	int a, b;
	t_pair(&a, &b);
	int fd = send_side ? a : b;
	if (how == CUT_DEADLINE)
		rio_op_set_deadline(&r.op, 200 * T_MS); /* > the sleep below */
	if (send_side) {
		/* more than both socket buffers hold: part goes, then it
		 * waits for a reader that never comes */
		cr_assert_eq(rio_send(loop, &r.op, fd, buf, sizeof buf,
				      MSG_WAITALL, io_cb), 0);
	} else {
		cr_assert_eq(write(a, "0123456789", 10), 10);
		cr_assert_eq(rio_recv(loop, &r.op, fd, buf, 100, MSG_WAITALL,
				      io_cb), 0);
	}
	t_loop_sleep(loop, 20);
	cr_assert_eq(r.calls, 0, "a WAITALL op completed early: %d", r.res);
	if (how == CUT_CANCEL)
		cr_assert_eq(rio_cancel(loop, &c.op, &r.op, t_rec_cb), 0);
	else if (how == CUT_CLOSE)
		cr_assert_eq(rio_close(loop, &c.op, fd, t_rec_cb), 0);
	T_RUN_UNTIL(loop, r.calls > 0, 3000);
	if (send_side)
		cr_assert(r.res > 0 && r.res < (int)sizeof buf,
			  "send cut short: %d (%s), want the bytes sent",
			  r.res, rio_strerror(r.res));
	else
		cr_assert_eq(r.res, 10, "recv cut short: %d (%s), want the "
			     "10 bytes received", r.res, rio_strerror(r.res));
	if (how != CUT_DEADLINE)
		T_RUN_UNTIL(loop, c.calls > 0, 3000);
	if (how != CUT_CLOSE)
		close(fd);
	close(fd == a ? b : a);
	t_loop_done(loop);
}

Test(io, waitall_recv_cancelled_reports_its_bytes, .timeout = 20)
{
	waitall_cut_short(CUT_CANCEL, 0);
}

Test(io, waitall_recv_closed_reports_its_bytes, .timeout = 20)
{
	waitall_cut_short(CUT_CLOSE, 0);
}

Test(io, waitall_recv_past_its_deadline_reports_its_bytes, .timeout = 20)
{
	waitall_cut_short(CUT_DEADLINE, 0);
}

Test(io, waitall_send_cancelled_reports_its_bytes, .timeout = 20)
{
	waitall_cut_short(CUT_CANCEL, 1);
}

Test(io, waitall_send_closed_reports_its_bytes, .timeout = 20)
{
	waitall_cut_short(CUT_CLOSE, 1);
}

Test(io, waitall_send_past_its_deadline_reports_its_bytes, .timeout = 20)
{
	waitall_cut_short(CUT_DEADLINE, 1);
}

/*
 * MSG_WAITALL on rio_recvmsg and rio_sendmsg, as on rio_recv: the op
 * completes when every iovec is full, on every backend (io_uring does it
 * in the kernel; found by test/fuzz seed 190, where the fallback returned
 * the first piece).
 */
Test(io, recvmsg_waitall_fills_every_iovec, .timeout = 20)
{
	rio_loop *loop = t_loop();
	struct io r = { .calls = 0 };
	struct dribble d = { .sent = 0 };
	static char part[3][1500];
	struct iovec iov[3] = {
		{ part[0], 1000 }, { part[1], 1500 }, { part[2], 1500 },
	};
	struct msghdr m = { .msg_iov = iov, .msg_iovlen = 3 };
	int a, b;

	t_pair(&a, &b);
	d.fd = a;
	/* 4 x 1000 bytes, 3 ms apart, into 1000 + 1500 + 1500 */
	cr_assert_eq(rio_recvmsg(loop, &r.op, b, &m, MSG_WAITALL, io_cb), 0);
	cr_assert_eq(rio_timeout(loop, &d.op, 3 * T_MS, dribble_cb), 0);
	T_RUN_UNTIL(loop, r.calls > 0 && d.sent == 4, 3000);
	cr_assert_eq(d.bad, 0);
	cr_assert_eq(r.res, 4000, "MSG_WAITALL recvmsg gave %d", r.res);
	static char all[4000];
	memcpy(all, part[0], 1000);
	memcpy(all + 1000, part[1], 1500);
	memcpy(all + 2500, part[2], 1500);
	cr_assert_eq(t_pat_check(all, sizeof all, 0), sizeof all);
	close(a);
	close(b);
	t_loop_done(loop);
}

Test(io, sendmsg_waitall_sends_every_iovec, .timeout = 30)
{
	rio_loop *loop = t_loop();
	struct io s = { .calls = 0 };
	enum { PART = 3 << 20 };
	static char buf[3 * PART];
	struct iovec iov[3] = {
		{ buf, PART }, { buf + PART, PART }, { buf + 2 * PART, PART },
	};
	struct msghdr m = { .msg_iov = iov, .msg_iovlen = 3 };
	int a, b;

	t_pair(&a, &b);
	t_pat_fill(buf, sizeof buf, 0);
	cr_assert_eq(rio_sendmsg(loop, &s.op, a, &m, MSG_WAITALL, io_cb), 0);
	/* far more than the socket buffers hold: read it all while the
	 * loop sends the rest */
	static char got[sizeof buf];
	size_t have = 0;
	uint64_t end = t_now_ns() + 20000 * T_MS;
	while ((have < sizeof got || !s.calls) && t_now_ns() < end) {
		rio_loop_run(loop, RIO_RUN_NOWAIT);
		ssize_t n = recv(b, got + have, sizeof got - have, MSG_DONTWAIT);
		if (n > 0)
			have += (size_t)n;
		else
			usleep(100);
	}
	cr_assert_eq(s.calls, 1, "the sendmsg never completed (%zu read)", have);
	cr_assert_eq(s.res, (int)sizeof buf, "MSG_WAITALL sendmsg gave %d",
		     s.res);
	cr_assert_eq(have, sizeof got);
	cr_assert_eq(t_pat_check(got, sizeof got, 0), sizeof got);
	close(a);
	close(b);
	t_loop_done(loop);
}

/*
 * Ops on one socket run in the order they were submitted: after a reset,
 * the first one takes the error (-ECONNRESET) and the next sees what is
 * left (a recv its end of stream, a send -EPIPE), on every backend. Found
 * by test/fuzz seeds 1412 and 1569: the fallback tried a send at submit
 * but a multishot recv submitted before it only when the loop polled;
 * io_uring tried a splice at submit, ahead of SQEs queued before it.
 */
static void first_takes_the_reset(int multishot_first)
{
	rio_loop *loop = t_loop();
	struct io first = { .calls = 0 }, second = { .calls = 0 };
	rio_bufpool *pool;
	int a, b, p[2];
	t_pair(&a, &b);
	cr_assert_eq(pipe2(p, O_NONBLOCK | O_CLOEXEC), 0);
	cr_assert_eq(rio_bufpool_create(loop, 4, 256, &pool), 0);
	t_rst_close(b);
	usleep(20000); /* the reset is in */
	if (multishot_first) {
		cr_assert_eq(rio_recv_multishot(loop, &first.op, a, pool, io_cb), 0);
		cr_assert_eq(rio_send(loop, &second.op, a, "x", 1, 0, io_cb), 0);
	} else {
		cr_assert_eq(rio_send(loop, &first.op, a, "x", 1, 0, io_cb), 0);
		cr_assert_eq(rio_splice_in(loop, &second.op, a, p[1], 100, io_cb), 0);
	}
	T_RUN_UNTIL(loop, first.calls && second.calls, 3000);
	if (!multishot_first && second.res == -EOPNOTSUPP)
		cr_skip_test("splice is not supported on this backend");
	cr_assert_eq(first.res, -ECONNRESET, "the op submitted first got %d "
		     "(%s), the second %d (%s)", first.res,
		     rio_strerror(first.res), second.res, rio_strerror(second.res));
	if (multishot_first)
		cr_assert_eq(second.res, -EPIPE, "send after: %d (%s)",
			     second.res, rio_strerror(second.res));
	else
		cr_assert_eq(second.res, 0, "splice_in after: %d (%s)",
			     second.res, rio_strerror(second.res));
	cr_assert_eq(rio_bufpool_destroy(pool), 0);
	close(a);
	close(p[0]);
	close(p[1]);
	t_loop_done(loop);
}

Test(io, a_multishot_recv_submitted_first_takes_the_reset, .timeout = 20)
{
	first_takes_the_reset(1);
}

Test(io, a_send_submitted_first_takes_the_reset, .timeout = 20)
{
	first_takes_the_reset(0);
}

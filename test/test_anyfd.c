/*
 * rio_read / rio_write on files that are not sockets, on every backend:
 * pipes (1 MiB through, in order; end of file; a write with the reader
 * gone is -EPIPE and no SIGPIPE), eventfd, a pty, a regular file; a
 * pending read ends by its deadline or by a close through the loop.
 */
#include "common.h"

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <termios.h>
#include <unistd.h>

static void pipe2_nb(int p[2])
{
	cr_assert_eq(pipe2(p, O_NONBLOCK | O_CLOEXEC), 0);
}

enum { BIG = 1 << 20, CHUNK = 65536 };

static struct {
	rio_op r, w;
	int rfd, wfd;
	size_t got, put;
	uint8_t in[CHUNK], out[CHUNK];
	int bad, eof, rres, wres;
} P;

static void p_wrote(rio_loop *loop, rio_op *op, int res)
{
	if (res <= 0) {
		P.wres = res;
		return;
	}
	P.put += (size_t)res;
	if (P.put < BIG) {
		size_t n = BIG - P.put < CHUNK ? BIG - P.put : CHUNK;
		t_pat_fill(P.out, n, P.put);
		cr_assert_eq(rio_write(loop, op, P.wfd, P.out, n, p_wrote), 0);
	}
}

static void p_read(rio_loop *loop, rio_op *op, int res)
{
	if (res <= 0) {
		P.rres = res;
		P.eof = 1;
		return;
	}
	if (t_pat_check(P.in, (size_t)res, P.got) != (size_t)res)
		P.bad++;
	P.got += (size_t)res;
	cr_assert_eq(rio_read(loop, op, P.rfd, P.in, sizeof P.in, p_read), 0);
}

Test(anyfd, a_mebibyte_through_a_pipe_then_end_of_file, .timeout = 30)
{
	rio_loop *loop = t_loop();
	memset(&P, 0, sizeof P);
	int p[2];
	pipe2_nb(p);
	P.rfd = p[0];
	P.wfd = p[1];
	/* the read waits on an empty pipe */
	cr_assert_eq(rio_read(loop, &P.r, P.rfd, P.in, sizeof P.in, p_read), 0);
	t_loop_sleep(loop, 20);
	cr_assert_eq(P.got + P.eof, 0);
	t_pat_fill(P.out, CHUNK, 0);
	cr_assert_eq(rio_write(loop, &P.w, P.wfd, P.out, CHUNK, p_wrote), 0);
	T_RUN_UNTIL(loop, P.got == BIG || P.bad || P.eof, 20000);
	cr_assert_eq(P.bad, 0, "bytes out of order");
	cr_assert_eq(P.got, BIG);
	T_RUN_UNTIL(loop, !rio_op_in_flight(&P.w), 5000);
	/* the writer goes: end of file */
	close(P.wfd);
	T_RUN_UNTIL(loop, P.eof, 5000);
	cr_assert_eq(P.rres, 0);
	close(P.rfd);
	t_loop_done(loop);
}

Test(anyfd, a_write_with_the_reader_gone_is_epipe_not_sigpipe,
     .timeout = 20)
{
	rio_loop *loop = t_loop();
	int p[2];
	pipe2_nb(p);
	close(p[0]);
	t_rec w = {.calls = 0};
	cr_assert_eq(rio_write(loop, &w.op, p[1], "x", 1, t_rec_cb), 0);
	T_RUN_UNTIL(loop, w.calls == 1, 5000);
	cr_assert_eq(w.res, -EPIPE, "%s", rio_strerror(w.res));
	sigset_t pend;
	cr_assert_eq(sigpending(&pend), 0);
	cr_assert(!sigismember(&pend, SIGPIPE), "a SIGPIPE is left pending");
	/* a full pipe whose reader goes while the write waits */
	int q[2];
	pipe2_nb(q);
	static char fill[65536];
	while (write(q[1], fill, sizeof fill) > 0)
		;
	t_rec w2 = {.calls = 0};
	cr_assert_eq(rio_write(loop, &w2.op, q[1], fill, 1, t_rec_cb), 0);
	t_loop_sleep(loop, 20);
	cr_assert_eq(w2.calls, 0, "a write into a full pipe did not wait");
	close(q[0]);
	T_RUN_UNTIL(loop, w2.calls == 1, 5000);
	cr_assert_eq(w2.res, -EPIPE, "%s", rio_strerror(w2.res));
	cr_assert_eq(sigpending(&pend), 0);
	cr_assert(!sigismember(&pend, SIGPIPE));
	close(p[1]);
	close(q[1]);
	t_loop_done(loop);
}

Test(anyfd, eventfd_and_a_pty, .timeout = 20)
{
	rio_loop *loop = t_loop();
	int efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	cr_assert_geq(efd, 0);
	uint64_t v = 0;
	t_rec r = {.calls = 0};
	cr_assert_eq(rio_read(loop, &r.op, efd, &v, sizeof v, t_rec_cb), 0);
	t_loop_sleep(loop, 20);
	cr_assert_eq(r.calls, 0);
	uint64_t seven = 7;
	t_rec w = {.calls = 0};
	cr_assert_eq(rio_write(loop, &w.op, efd, &seven, sizeof seven,
			       t_rec_cb), 0);
	T_RUN_UNTIL(loop, r.calls == 1 && w.calls == 1, 5000);
	cr_assert_eq(w.res, 8);
	cr_assert_eq(r.res, 8);
	cr_assert_eq(v, 7);
	close(efd);

	int m = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
	if (m < 0)
		cr_skip_test("no pty on this machine (posix_openpt: %s)",
			     strerror(errno));
	cr_assert_eq(grantpt(m), 0);
	cr_assert_eq(unlockpt(m), 0);
	int sl = open(ptsname(m), O_RDWR | O_NOCTTY | O_CLOEXEC);
	cr_assert_geq(sl, 0);
	struct termios tio;
	cr_assert_eq(tcgetattr(sl, &tio), 0);
	cfmakeraw(&tio);
	cr_assert_eq(tcsetattr(sl, TCSANOW, &tio), 0);
	char buf[16];
	t_rec pr = {.calls = 0}, pw = {.calls = 0};
	cr_assert_eq(rio_read(loop, &pr.op, sl, buf, sizeof buf, t_rec_cb), 0);
	t_loop_sleep(loop, 20);
	cr_assert_eq(pr.calls, 0, "a read on a quiet tty did not wait");
	cr_assert_eq(rio_write(loop, &pw.op, m, "tty!", 4, t_rec_cb), 0);
	T_RUN_UNTIL(loop, pr.calls == 1 && pw.calls == 1, 5000);
	cr_assert_eq(pw.res, 4);
	cr_assert_eq(pr.res, 4);
	cr_assert_eq(memcmp(buf, "tty!", 4), 0);
	close(sl);
	close(m);
	t_loop_done(loop);
}

Test(anyfd, a_regular_file_at_its_offset, .timeout = 20)
{
	rio_loop *loop = t_loop();
	char path[] = "/tmp/ringio-test-XXXXXX";
	int fd = mkstemp(path);
	cr_assert_geq(fd, 0);
	unlink(path);
	t_rec w = {.calls = 0}, r = {.calls = 0};
	cr_assert_eq(rio_write(loop, &w.op, fd, "hello ", 6, t_rec_cb), 0);
	T_RUN_UNTIL(loop, w.calls == 1, 5000);
	cr_assert_eq(rio_write(loop, &w.op, fd, "world", 5, t_rec_cb), 0);
	T_RUN_UNTIL(loop, w.calls == 2, 5000);
	cr_assert_eq(w.res, 5);
	cr_assert_eq(lseek(fd, 0, SEEK_CUR), 11, "the offset did not advance");
	cr_assert_eq(lseek(fd, 0, SEEK_SET), 0);
	char buf[32] = "";
	cr_assert_eq(rio_read(loop, &r.op, fd, buf, sizeof buf, t_rec_cb), 0);
	T_RUN_UNTIL(loop, r.calls == 1, 5000);
	cr_assert_eq(r.res, 11);
	cr_assert_eq(memcmp(buf, "hello world", 11), 0);
	cr_assert_eq(rio_read(loop, &r.op, fd, buf, sizeof buf, t_rec_cb), 0);
	T_RUN_UNTIL(loop, r.calls == 2, 5000);
	cr_assert_eq(r.res, 0, "end of file");
	close(fd);
	t_loop_done(loop);
}

Test(anyfd, a_waiting_read_ends_by_its_deadline_or_a_close, .timeout = 20)
{
	rio_loop *loop = t_loop();
	int p[2];
	pipe2_nb(p);
	char buf[8];
	t_rec r = {.calls = 0};
	rio_op_set_deadline(&r.op, 30 * T_MS);
	cr_assert_eq(rio_read(loop, &r.op, p[0], buf, sizeof buf, t_rec_cb), 0);
	T_RUN_UNTIL(loop, r.calls == 1, 5000);
	cr_assert_eq(r.res, -ETIMEDOUT);
	cr_assert_eq(r.flags, RIO_OP_F_DEADLINE);
	rio_op_set_deadline(&r.op, 0);
	cr_assert_eq(rio_read(loop, &r.op, p[0], buf, sizeof buf, t_rec_cb), 0);
	t_rec c = {.calls = 0};
	cr_assert_eq(rio_close(loop, &c.op, p[0], t_rec_cb), 0);
	T_RUN_UNTIL(loop, r.calls == 2 && c.calls == 1, 5000);
	cr_assert_eq(r.res, -ECANCELED);
	cr_assert_lt(r.seq, c.seq, "the close completed before its fd's read");
	cr_assert_eq(c.res, 0);
	close(p[1]);
	t_loop_done(loop);
}

Test(anyfd, what_is_refused, .timeout = 20)
{
	rio_loop *loop = t_loop();
	rio_op op;
	rio_op_init(&op);
	cr_assert_eq(rio_read(loop, &op, 0, NULL, 1, t_nop_cb), -EINVAL);
	cr_assert_eq(rio_write(loop, &op, 1, NULL, 1, t_nop_cb), -EINVAL);
	cr_assert_eq(rio_read(loop, &op, 0, &op, 1, NULL), -EINVAL);
	/* a closed number: the kernel's -EBADF, through the callback */
	t_rec r = {.calls = 0};
	char c;
	int p[2];
	pipe2_nb(p);
	close(p[0]);
	close(p[1]);
	cr_assert_eq(rio_read(loop, &r.op, p[0], &c, 1, t_rec_cb), 0);
	T_RUN_UNTIL(loop, r.calls == 1, 5000);
	cr_assert_eq(r.res, -EBADF);
	t_loop_done(loop);
}

/* Error results from real faults: RST, closed peers, no SIGPIPE. */
#include "common.h"

#include <signal.h>
#include <unistd.h>

/* SIGPIPE at its default disposition: a send that raised it would kill the
 * forked test process, and Criterion would report the test as crashed. */
static void sigpipe_default(void)
{
	struct sigaction sa = { .sa_handler = SIG_DFL };
	sigset_t set;

	sigemptyset(&sa.sa_mask);
	cr_assert_eq(sigaction(SIGPIPE, &sa, NULL), 0);
	sigemptyset(&set);
	sigaddset(&set, SIGPIPE);
	cr_assert_eq(sigprocmask(SIG_UNBLOCK, &set, NULL), 0);
}

Test(errors, recv_pending_when_peer_resets_gets_econnreset, .timeout = 20)
{
	rio_loop *loop = t_loop();
	t_rec r = { .calls = 0 };
	char buf[128];
	int a, b;

	t_pair(&a, &b);
	cr_assert_eq(rio_recv(loop, &r.op, b, buf, sizeof(buf), 0, t_rec_cb), 0);
	t_loop_sleep(loop, 5);
	cr_assert_eq(r.calls, 0, "recv completed before anything happened");
	t_rst_close(a);
	T_RUN_UNTIL(loop, r.calls > 0, 3000);
	cr_assert_eq(r.res, -ECONNRESET, "got %d (%s)", r.res,
		     rio_strerror(r.res));
	t_loop_sleep(loop, 10);
	cr_assert_eq(r.calls, 1);
	close(b);
	t_loop_done(loop);
}

Test(errors, send_after_local_shutdown_is_epipe_without_sigpipe,
     .timeout = 20)
{
	rio_loop *loop = t_loop();
	t_rec s = { .calls = 0 };
	char buf[256] = { 0 };
	int a, b;

	sigpipe_default();
	t_pair(&a, &b);
	cr_assert_eq(shutdown(a, SHUT_WR), 0);
	/* send(2) here raises SIGPIPE unless MSG_NOSIGNAL: ringio adds it. */
	cr_assert_eq(rio_send(loop, &s.op, a, buf, sizeof(buf), 0, t_rec_cb), 0);
	T_RUN_UNTIL(loop, s.calls > 0, 3000);
	cr_assert_eq(s.res, -EPIPE, "got %d (%s)", s.res, rio_strerror(s.res));
	cr_assert_eq(s.calls, 1);
	close(a);
	close(b);
	t_loop_done(loop);
}

Test(errors, send_after_peer_reset_ends_in_epipe_without_sigpipe,
     .timeout = 20)
{
	rio_loop *loop = t_loop();
	t_rec s = { .calls = 0 };
	t_rec m = { .calls = 0 };
	char buf[1024] = { 0 };
	struct iovec iov = { buf, sizeof(buf) };
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1 };
	int a, b, first = 0, saw_epipe = 0;

	sigpipe_default();
	t_pair(&a, &b);
	t_rst_close(b);
	usleep(2000);
	/* The first send reports the pending reset (ECONNRESET) or already
	 * EPIPE; every send after that is EPIPE. Never a signal. */
	for (int i = 0; i < 8 && !saw_epipe; i++) {
		cr_assert_eq(rio_send(loop, &s.op, a, buf, sizeof(buf), 0, t_rec_cb),
			     0);
		T_RUN_UNTIL(loop, s.calls > i, 3000);
		if (i == 0)
			first = s.res;
		cr_assert(s.res == -EPIPE || s.res == -ECONNRESET ||
				  (i == 0 && s.res > 0),
			  "send %d after RST: %d (%s)", i, s.res,
			  rio_strerror(s.res));
		saw_epipe = s.res == -EPIPE;
	}
	cr_assert(saw_epipe, "never got -EPIPE (first result %d)", first);
	/* sendmsg takes the same path. */
	cr_assert_eq(rio_sendmsg(loop, &m.op, a, &msg, 0, t_rec_cb), 0);
	T_RUN_UNTIL(loop, m.calls > 0, 3000);
	cr_assert_eq(m.res, -EPIPE, "sendmsg got %d (%s)", m.res,
		     rio_strerror(m.res));
	close(a);
	t_loop_done(loop);
}

Test(errors, recv_on_a_closed_fd_number_is_ebadf_via_callback, .timeout = 20)
{
	rio_loop *loop = t_loop();
	t_rec r = { .calls = 0 };
	char buf[16];
	int a, b, stale;

	t_pair(&a, &b);
	stale = b;
	close(b); /* nothing opens an fd before the submit below */
	cr_assert_eq(rio_recv(loop, &r.op, stale, buf, sizeof(buf), 0, t_rec_cb), 0,
		     "a bad fd is the kernel's error, not API misuse");
	cr_assert_eq(r.calls, 0, "callback ran inside submit");
	T_RUN_UNTIL(loop, r.calls > 0, 3000);
	cr_assert_eq(r.res, -EBADF, "got %d (%s)", r.res, rio_strerror(r.res));
	close(a);
	t_loop_done(loop);
}

Test(errors, recv_on_a_pipe_is_enotsock, .timeout = 20)
{
	rio_loop *loop = t_loop();
	t_rec r = { .calls = 0 };
	char buf[16];
	int p[2];

	cr_assert_eq(pipe(p), 0);
	cr_assert_eq(write(p[1], "x", 1), 1);
	cr_assert_eq(rio_recv(loop, &r.op, p[0], buf, sizeof(buf), 0, t_rec_cb), 0);
	T_RUN_UNTIL(loop, r.calls > 0, 3000);
	cr_assert_eq(r.res, -ENOTSOCK, "got %d (%s)", r.res,
		     rio_strerror(r.res));
	close(p[0]);
	close(p[1]);
	t_loop_done(loop);
}

/*
 * Readiness is only a hint: the behaviours DESIGN.md asks of the fallback,
 * run on every backend (io_uring must give the same results; the checks
 * that only make sense for a reactor say so).
 */
#include "common.h"

#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

static int is_fallback(rio_loop *loop)
{
	return t_backend(loop) != RIO_BACKEND_URING;
}

enum { CONNECTS = 2000, BATCH = 100 };

/* 2,000 connects to a closed port, each socket handed to the loop before
 * connect() runs (the reactor registers it first, so the fresh socket's
 * write readiness is seen): every one must fail, none may succeed. */
static void refused_connects(void)
{
	rio_loop *loop = t_loop();
	uint16_t port = t_closed_port();
	struct sockaddr_storage ss;
	socklen_t sl = t_loopback(AF_INET, port, &ss);
	static t_rec r[BATCH];
	int fds[BATCH], refused = 0, false_ok = 0, other = 0;
	for (int done = 0; done < CONNECTS; done += BATCH) {
		memset(r, 0, sizeof r);
		for (int i = 0; i < BATCH; i++) {
			fds[i] = rio_socket_tcp(AF_INET);
			cr_assert_geq(fds[i], 0);
			cr_assert_eq(rio_connect(loop, &r[i].op, fds[i],
						 (struct sockaddr *)&ss, sl,
						 t_rec_cb), 0);
		}
		T_RUN_UNTIL(loop, ({
			int all = 1;
			for (int i = 0; i < BATCH; i++)
				all &= r[i].calls > 0;
			all;
		}), 10000);
		for (int i = 0; i < BATCH; i++) {
			cr_assert_eq(r[i].calls, 1);
			refused += r[i].res == -ECONNREFUSED;
			false_ok += r[i].res == 0;
			other += r[i].res != 0 && r[i].res != -ECONNREFUSED;
			close(fds[i]);
		}
	}
	cr_log_info("%d refused, %d false successes, %d other", refused,
		    false_ok, other);
	cr_assert_eq(false_ok, 0, "%d connects to a closed port 'succeeded'",
		     false_ok);
	cr_assert_eq(refused, CONNECTS, "refused %d of %d (other: %d)",
		     refused, CONNECTS, other);
	t_loop_done(loop);
}

Test(readiness, closed_port_2000_connects_never_succeed, .timeout = 60)
{
	refused_connects();
}

/* The same with fake readiness and ERR|HUP-only edges thrown in (fault
 * builds): a stale edge re-parks the connect, never completes it. */
Test(readiness, closed_port_connects_under_fake_edges, .timeout = 60)
{
#ifndef RINGIO_FAULT_HOOKS
	cr_skip_test("built without RINGIO_FAULT_HOOKS: no fault plan");
#else
	setenv("RINGIO_FAULTS", "seed=11,spurious=500,errhup=500", 1);
	refused_connects();
#endif
}

/* A connect to a peer that never answers (its accept queue is full, so
 * the SYN is dropped) ends at its deadline with -ETIMEDOUT. */
Test(readiness, connect_deadline_to_silent_peer, .timeout = 20)
{
	rio_loop *loop = t_loop();
	int filler;
	uint16_t port;
	int lfd = t_full_listener(&port, &filler);
	struct sockaddr_storage ss;
	socklen_t sl = t_loopback(AF_INET, port, &ss);
	t_rec c = {0};
	int fd = rio_socket_tcp(AF_INET);
	rio_op_set_deadline(&c.op, 200 * T_MS);
	uint64_t t0 = t_now_ns();
	cr_assert_eq(rio_connect(loop, &c.op, fd, (struct sockaddr *)&ss, sl,
				 t_rec_cb), 0);
	T_RUN_UNTIL(loop, c.calls > 0, 5000);
	cr_assert_eq(c.res, -ETIMEDOUT, "got %d (%s)", c.res,
		     rio_strerror(c.res));
	cr_assert_geq(t_now_ns() - t0, 150 * T_MS, "deadline fired early");
	close(fd);
	close(filler);
	close(lfd);
	t_loop_done(loop);
}

/* A send queued behind a pending connect: the connect completes first
 * (the write edge goes to it), then the send moves its bytes. */
Test(readiness, write_edge_goes_to_connect_before_send, .timeout = 20)
{
	rio_loop *loop = t_loop();
	uint16_t port;
	int lfd = t_listen(AF_INET, 16, &port);
	struct sockaddr_storage ss;
	socklen_t sl = t_loopback(AF_INET, port, &ss);
	t_rec c = {0}, s = {0};
	static const char msg[] = "after the connect";
	int fd = rio_socket_tcp(AF_INET);
	t_seq = 0;
	cr_assert_eq(rio_connect(loop, &c.op, fd, (struct sockaddr *)&ss, sl,
				 t_rec_cb), 0);
	cr_assert_eq(rio_send(loop, &s.op, fd, msg, sizeof msg, 0, t_rec_cb), 0);
	T_RUN_UNTIL(loop, c.calls && s.calls, 5000);
	cr_assert_eq(c.res, 0, "connect: %s", rio_strerror(c.res));
	cr_assert_eq(s.res, (int)sizeof msg, "send: %d", s.res);
	if (is_fallback(loop))
		cr_assert_lt(c.seq, s.seq, "send completed before connect");
	int peer = accept(lfd, NULL, NULL);
	char buf[sizeof msg] = {0};
	cr_assert_eq(recv(peer, buf, sizeof msg, MSG_WAITALL), (ssize_t)sizeof msg);
	cr_assert_str_eq(buf, msg);
	close(peer);
	close(fd);
	close(lfd);
	t_loop_done(loop);
}

/* Readiness that is not real: a recv sees fake edges for a while and must
 * neither complete nor assert; it completes when data really arrives, and
 * the counters show the spurious wakeups (fallback). */
Test(readiness, spurious_wakeups_repark, .timeout = 20)
{
#ifndef RINGIO_FAULT_HOOKS
	cr_skip_test("built without RINGIO_FAULT_HOOKS: no fault plan");
#else
	setenv("RINGIO_FAULTS", "seed=3,spurious=1000,eagain=300", 1);
	rio_loop *loop = t_loop();
	int a, b;
	t_pair(&a, &b);
	char buf[32];
	t_rec r = {0};
	cr_assert_eq(rio_recv(loop, &r.op, a, buf, sizeof buf, 0, t_rec_cb), 0);
	t_loop_sleep(loop, 100);
	cr_assert_eq(r.calls, 0, "recv completed (%d) with no data sent", r.res);
	cr_assert_eq(send(b, "ping", 4, 0), 4);
	T_RUN_UNTIL(loop, r.calls > 0, 5000);
	cr_assert_eq(r.res, 4);
	cr_assert_eq(memcmp(buf, "ping", 4), 0);
	rio_counters k;
	rio_loop_counters(loop, &k);
	if (is_fallback(loop)) {
		cr_assert_gt(k.spurious_wakeups, 0);
		cr_assert_gt(k.faults_injected, 0);
	}
	close(a);
	close(b);
	t_loop_done(loop);
#endif
}

/* Close an fd with ops pending, open a new socket that gets the same fd
 * number: nothing of the old file reaches the new one. */
Test(readiness, fd_number_reuse_sees_no_stale_op, .timeout = 20)
{
	rio_loop *loop = t_loop();
	int a, b;
	t_pair(&a, &b);
	char old_buf[16], new_buf[16];
	t_rec old_r = {0}, cl = {0}, new_r = {0};
	cr_assert_eq(rio_recv(loop, &old_r.op, a, old_buf, sizeof old_buf, 0,
			      t_rec_cb), 0);
	t_loop_sleep(loop, 20); /* let it park */
	int num = a;
	cr_assert_eq(rio_close(loop, &cl.op, a, t_rec_cb), 0);
	T_RUN_UNTIL(loop, cl.calls > 0, 5000);
	cr_assert_eq(old_r.calls, 1);
	cr_assert_eq(old_r.res, -ECANCELED);
	cr_assert_eq(cl.res, 0);
	/* the lowest free number comes back: that of `a` */
	int c, d;
	t_pair(&c, &d);
	int reused = c == num ? c : d == num ? d : -1;
	cr_assert_neq(reused, -1, "fd %d was not reused (%d, %d)", num, c, d);
	int peer = reused == c ? d : c;
	cr_assert_eq(rio_recv(loop, &new_r.op, reused, new_buf, sizeof new_buf,
			      0, t_rec_cb), 0);
	cr_assert_eq(send(peer, "new", 3, 0), 3);
	/* the old file's peer writes too: none of it may reach the new fd */
	(void)!send(b, "old", 3, MSG_NOSIGNAL);
	T_RUN_UNTIL(loop, new_r.calls > 0, 5000);
	t_loop_sleep(loop, 20);
	cr_assert_eq(new_r.calls, 1);
	cr_assert_eq(new_r.res, 3);
	cr_assert_eq(memcmp(new_buf, "new", 3), 0);
	cr_assert_eq(old_r.calls, 1, "the old recv fired again");
	close(b);
	close(c);
	close(d);
	t_loop_done(loop);
}

/* An fd closed behind the loop's back: ops on it complete with -EBADF,
 * and another connection keeps being served. */
Test(readiness, ebadf_behind_the_loops_back, .timeout = 20)
{
	rio_loop *loop = t_loop();
	int a, b, c, d;
	t_pair(&a, &b);
	t_pair(&c, &d);
	char buf[16], buf2[16];
	t_rec parked = {0}, late = {0}, healthy = {0};
	cr_assert_eq(rio_recv(loop, &parked.op, a, buf, sizeof buf, 0, t_rec_cb), 0);
	t_loop_sleep(loop, 20);
	cr_assert_eq(close(a), 0); /* behind the loop's back */
	cr_assert_eq(rio_send(loop, &late.op, a, "x", 1, 0, t_rec_cb), 0);
	cr_assert_eq(rio_recv(loop, &healthy.op, c, buf2, sizeof buf2, 0,
			      t_rec_cb), 0);
	cr_assert_eq(send(d, "alive", 5, 0), 5);
	T_RUN_UNTIL(loop, late.calls && healthy.calls, 5000);
	cr_assert_eq(late.res, -EBADF, "got %d", late.res);
	cr_assert_eq(healthy.res, 5);
	if (is_fallback(loop)) {
		/* the reactor learns of EBADF and fails the parked op too */
		T_RUN_UNTIL(loop, parked.calls > 0, 5000);
		cr_assert_eq(parked.res, -EBADF);
	} else {
		/* io_uring holds the file: the recv lives on until its peer
		 * closes, then reports the end of the stream */
		close(b);
		b = -1;
		T_RUN_UNTIL(loop, parked.calls > 0, 5000);
		cr_assert_eq(parked.res, 0);
	}
	cr_assert_eq(parked.calls, 1);
	if (b >= 0)
		close(b);
	close(c);
	close(d);
	t_loop_done(loop);
}

/* A blocking fd handed to the loop never stalls it: a timer still fires
 * while a recv waits on a blocking socket with no data. */
Test(readiness, blocking_fd_never_stalls_the_loop, .timeout = 20)
{
	rio_loop *loop = t_loop();
	int a, b;
	t_pair(&a, &b);
	cr_assert_eq(t_set_blocking(a), 0);
	char buf[16];
	t_rec r = {0}, t = {0};
	cr_assert_eq(rio_recv(loop, &r.op, a, buf, sizeof buf, 0, t_rec_cb), 0);
	cr_assert_eq(rio_timeout(loop, &t.op, 30 * T_MS, t_rec_cb), 0);
	T_RUN_UNTIL(loop, t.calls > 0, 3000);
	cr_assert_eq(t.res, 0);
	cr_assert_eq(r.calls, 0);
	if (is_fallback(loop))
		cr_assert(fcntl(a, F_GETFL) & O_NONBLOCK,
			  "the reactor left the fd blocking");
	cr_assert_eq(send(b, "data", 4, 0), 4);
	T_RUN_UNTIL(loop, r.calls > 0, 3000);
	cr_assert_eq(r.res, 4);
	close(a);
	close(b);
	t_loop_done(loop);
}

/* One poller wait per loop turn on the fallback; one enter on io_uring. */
Test(readiness, one_wait_per_turn, .timeout = 20)
{
	rio_loop *loop = t_loop();
	int a, b;
	t_pair(&a, &b);
	char buf[16];
	t_rec r = {0};
	cr_assert_eq(rio_recv(loop, &r.op, a, buf, sizeof buf, 0, t_rec_cb), 0);
	rio_counters k0, k1;
	rio_loop_counters(loop, &k0);
	for (int i = 0; i < 10; i++)
		rio_loop_run(loop, RIO_RUN_NOWAIT);
	rio_loop_counters(loop, &k1);
	cr_assert_eq(k1.enters - k0.enters, 10, "%llu waits in 10 turns",
		     (unsigned long long)(k1.enters - k0.enters));
	close(b);
	T_RUN_UNTIL(loop, r.calls > 0, 3000);
	close(a);
	t_loop_done(loop);
}

/* auto comes up on the fallback, with the reason, when io_uring setup is
 * refused (made to fail by the fault hook). */
Test(readiness, auto_falls_back_with_the_reason, .timeout = 20)
{
#ifndef RINGIO_FAULT_HOOKS
	cr_skip_test("built without RINGIO_FAULT_HOOKS: no fault plan");
#else
	static const struct { const char *plan; rio_backend_reason why;
			      const char *word; } cases[] = {
		{"uring_setup=EPERM", RIO_REASON_URING_EPERM, "EPERM"},
		{"uring_setup=ENOSYS", RIO_REASON_URING_ENOSYS, "ENOSYS"},
		{"uring_setup=EINVAL", RIO_REASON_URING_FLAGS, "EINVAL"},
	};
	unsetenv("RINGIO_BACKEND");
	for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
		setenv("RINGIO_FAULTS", cases[i].plan, 1);
		rio_loop *loop;
		cr_assert_eq(rio_loop_create(&loop, NULL), 0, "%s", cases[i].plan);
		rio_backend_reason why;
		const char *msg;
		rio_backend_kind k = rio_loop_backend(loop, &why, &msg);
		cr_assert_neq(k, RIO_BACKEND_URING, "%s", cases[i].plan);
		cr_assert_eq(why, cases[i].why, "%s: reason %d", cases[i].plan, why);
		cr_assert(strstr(msg, cases[i].word), "message: %s", msg);
		cr_assert_eq(rio_loop_destroy(loop), 0);
		/* forcing io_uring reports the error instead */
		rio_loop_opts o = {.backend = RIO_BACKEND_URING};
		cr_assert_lt(rio_loop_create(&loop, &o), 0);
	}
	/* a resource error is not papered over */
	setenv("RINGIO_FAULTS", "uring_setup=ENOMEM", 1);
	rio_loop *loop;
	int r = rio_loop_create(&loop, NULL);
	if (r == 0) { /* memlock below 8 MiB: that ENOMEM means memlock */
		rio_backend_reason why;
		rio_loop_backend(loop, &why, NULL);
		cr_assert_eq(why, RIO_REASON_URING_MEMLOCK);
		rio_loop_destroy(loop);
	} else {
		cr_assert_eq(r, -ENOMEM);
	}
#endif
}

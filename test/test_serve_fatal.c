/* Fault suite 4: the listening socket is destroyed behind the server's
 * back. The fatal path reports the error to the owner through on_stop,
 * exactly once; established connections keep being served. */
#include "tserver.h"

#include <unistd.h>

/* shutdown(2) on the listening socket, not through the loop: the pending
 * accept fails with EINVAL, on io_uring and on epoll alike. */
Test(serve_fatal, listener_shut_down_behind_the_back, .timeout = 30)
{
	rio_loop *loop = t_loop();
	rio_accept_counters c;
	tsrv s;
	int a;

	tsrv_start(&s, loop, NULL, 0);
	a = t_connect(AF_INET, s.port);
	T_RUN_UNTIL(loop, s.accepted == 1, 3000);
	cr_assert_eq(shutdown(s.lfd, SHUT_RDWR), 0);
	T_RUN_UNTIL(loop, s.stopped, 3000);
	cr_assert_eq(s.stop_err, -EINVAL, "on_stop got %s",
		     rio_strerror(s.stop_err));
	rio_listener_counters(s.l, &c);
	cr_assert_eq(c.fatal_errors, 1);
	t_echo_check(loop, a, "still served");
	t_loop_sleep(loop, 50);
	cr_assert_eq(s.stopped, 1, "on_stop ran again");
	close(a);
	tsrv_finish(&s);
	t_loop_done(loop);
}

/* close(2) on the listening fd while the listener waits at max_conns: when
 * a connection ends it resumes, and accept finds the fd gone (EBADF). */
Test(serve_fatal, listener_closed_behind_the_back, .timeout = 30)
{
	rio_loop *loop = t_loop();
	rio_listener_opts lo = { .max_conns = 2 };
	tsrv s;
	int a, b;

	tsrv_start(&s, loop, &lo, 0);
	a = t_connect(AF_INET, s.port);
	b = t_connect(AF_INET, s.port);
	T_RUN_UNTIL(loop, s.accepted == 2, 3000);
	cr_assert_eq(close(s.lfd), 0);
	s.lfd = -1;
	close(a);
	T_RUN_UNTIL(loop, s.stopped, 3000);
	cr_assert_eq(s.stop_err, -EBADF, "on_stop got %s",
		     rio_strerror(s.stop_err));
	t_echo_check(loop, b, "the other one goes on");
	close(b);
	tsrv_finish(&s);
	t_loop_done(loop);
}

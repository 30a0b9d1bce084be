/* rio_listener: the API's contract — bad arguments, on_stop exactly once
 * and never inside start/stop, max_conns and release, the error classes. */
#include "tserver.h"

#include <unistd.h>

static void nop_accept(rio_listener *l, int fd, void *data)
{
	(void)l;
	(void)data;
	close(fd);
}

static void count_stop(rio_listener *l, int err, void *data)
{
	int *n = data;

	(void)l;
	(void)err;
	(*n)++;
}

Test(listener, bad_arguments_are_einval, .timeout = 20)
{
	rio_loop *loop = t_loop();
	rio_listener_opts o = { .on_accept = nop_accept };
	rio_listener *l = NULL;
	uint16_t port;
	int lfd = t_listen(AF_INET, 8, &port);

	cr_assert_eq(rio_listener_start(NULL, lfd, &o, &l), -EINVAL);
	cr_assert_eq(rio_listener_start(loop, -1, &o, &l), -EINVAL);
	cr_assert_eq(rio_listener_start(loop, lfd, NULL, &l), -EINVAL);
	cr_assert_eq(rio_listener_start(loop, lfd, &o, NULL), -EINVAL);
	o.on_accept = NULL;
	cr_assert_eq(rio_listener_start(loop, lfd, &o, &l), -EINVAL);
	o.on_accept = nop_accept;
	o.backoff_ms_min = 500;
	o.backoff_ms_max = 100;
	cr_assert_eq(rio_listener_start(loop, lfd, &o, &l), -EINVAL);
	cr_assert_null(l);
	cr_assert_eq(rio_listener_stop(NULL), -EINVAL);
	cr_assert_eq(rio_listener_release(NULL), -EINVAL);
	cr_assert_eq(rio_listener_destroy(NULL), -EINVAL);
	close(lfd);
	t_loop_done(loop);
}

Test(listener, stop_reports_once_on_a_later_turn, .timeout = 20)
{
	rio_loop *loop = t_loop();
	int stops = 0;
	rio_listener_opts o = { .on_accept = nop_accept, .on_stop = count_stop,
				.data = &stops };
	rio_listener *l;
	uint16_t port;
	int lfd = t_listen(AF_INET, 8, &port);

	cr_assert_eq(rio_listener_start(loop, lfd, &o, &l), 0);
	cr_assert_eq(rio_listener_fd(l), lfd);
	cr_assert_eq(rio_listener_destroy(l), -EBUSY, "a running listener");
	cr_assert_eq(rio_listener_stop(l), 0);
	cr_assert_eq(stops, 0, "on_stop ran inside rio_listener_stop");
	cr_assert_eq(rio_listener_stop(l), -EALREADY);
	T_RUN_UNTIL(loop, stops > 0, 3000);
	t_loop_sleep(loop, 20);
	cr_assert_eq(stops, 1);
	cr_assert_eq(rio_listener_destroy(l), 0);
	close(lfd);
	t_loop_done(loop);
}

/* A listener that is not a socket: the fatal path, not a crash or a
 * retry loop; the loop's other work goes on. */
Test(listener, not_a_socket_is_fatal_and_reported, .timeout = 20)
{
	rio_loop *loop = t_loop();
	tsrv s;
	int p[2];
	rio_accept_counters c;

	cr_assert_eq(pipe(p), 0);
	tsrv_start_fd(&s, loop, p[0], NULL, 0);
	T_RUN_UNTIL(loop, s.stopped, 3000);
	cr_assert_eq(s.stop_err, -ENOTSOCK, "got %s", rio_strerror(s.stop_err));
	rio_listener_counters(s.l, &c);
	cr_assert_eq(c.fatal_errors, 1);
	cr_assert_eq(c.last_error, -ENOTSOCK);
	close(p[1]);
	tsrv_finish(&s);
	t_loop_done(loop);
}

/* max_conns: at the limit the listener waits (the client stays in the
 * backlog); a release lets exactly one more in. */
Test(listener, max_conns_pauses_until_release, .timeout = 30)
{
	rio_loop *loop = t_loop();
	rio_listener_opts lo = { .max_conns = 2 };
	rio_accept_counters c;
	tsrv s;
	int cl[3];

	tsrv_start(&s, loop, &lo, 0);
	for (int i = 0; i < 3; i++)
		cl[i] = t_connect(AF_INET, s.port);
	T_RUN_UNTIL(loop, s.accepted == 2, 3000);
	t_loop_sleep(loop, 100);
	cr_assert_eq(s.accepted, 2, "accepted past max_conns");
	rio_listener_counters(s.l, &c);
	cr_assert_eq(c.live, 2);
	cr_assert_eq(c.limit_pauses, 1);
	cr_assert_eq(c.shed, 0);
	close(cl[0]); /* the server sees EOF, closes, releases */
	T_RUN_UNTIL(loop, s.accepted == 3, 3000);
	cr_assert_eq(s.closed, 1);
	close(cl[1]);
	close(cl[2]);
	tsrv_finish(&s);
	cr_assert_eq(s.stop_err, 0);
	t_loop_done(loop);
}

/* A long run of client errors with no accept between pauses like a load
 * error (an error that leaves its connection queued must not spin), and
 * accepting goes on afterwards. Every accept is made to fail here; near
 * max_conns accepts are one-shot, so each one fails on its own (a
 * multishot accept would hand over the rest of its batch). */
Test(listener, error_run_pauses_then_goes_on, .timeout = 30)
{
#ifndef RINGIO_FAULT_HOOKS
	cr_skip_test("built without RINGIO_FAULT_HOOKS");
#endif
	enum { N = 300 };
	static int fds[N];
	rio_listener_opts lo = { .max_conns = 64 };
	rio_accept_counters c;
	rio_loop *loop;
	tsrv s;

	if (!t_raise_nofile(2 * N + 100))
		cr_skip_test("RLIMIT_NOFILE hard limit below %d", 2 * N + 100);
	cr_assert_eq(setenv("RINGIO_FAULTS", "seed=1,accept_abort=1000", 1), 0);
	loop = t_loop();
	unsetenv("RINGIO_FAULTS");
	tsrv_start(&s, loop, &lo, 0);
	for (int i = 0; i < N; i++)
		fds[i] = t_connect(AF_INET, s.port);
	T_RUN_UNTIL(loop, (rio_listener_counters(s.l, &c),
			   c.client_errors == N), 10000);
	cr_assert_eq(c.error_pauses, 1, "error pauses: %llu",
		     (unsigned long long)c.error_pauses);
	cr_assert_eq(c.accepted, 0);
	cr_assert_eq(s.stopped, 0);
	for (int i = 0; i < N; i++)
		close(fds[i]);
	tsrv_finish(&s);
	t_loop_done(loop);
}

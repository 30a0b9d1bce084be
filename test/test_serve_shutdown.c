/* Graceful shutdown: stop accepting, let in-flight connections finish or
 * hit their deadline, close everything; every op completes exactly once
 * and the loop can be destroyed. */
#include "tserver.h"

#include <pthread.h>
#include <unistd.h>

#define TOTAL (8u << 20)

Test(serve_shutdown, in_flight_finish_idle_time_out_nothing_new, .timeout = 60)
{
	rio_loop *loop = t_loop();
	/* a transfer paced to outlast the stop (~100 ms) */
	t_stream a = { .total = TOTAL, .pace_us = 800 };
	pthread_t tw, tr;
	rio_counters ctr;
	char c1;
	int idle, late;
	tsrv s;

	tsrv_start(&s, loop, NULL, 1000 * T_MS);
	a.fd = t_connect(AF_INET, s.port);
	t_timeouts(a.fd, 10);
	idle = t_connect(AF_INET, s.port);
	t_timeouts(idle, 10);
	cr_assert_eq(pthread_create(&tw, NULL, t_stream_writer, &a), 0);
	cr_assert_eq(pthread_create(&tr, NULL, t_stream_reader, &a), 0);
	T_RUN_UNTIL(loop, s.accepted == 2 && s.bytes > 0, 5000);

	cr_assert_eq(rio_listener_stop(s.l), 0);
	T_RUN_UNTIL(loop, s.stopped, 3000);
	cr_assert_eq(s.stop_err, 0);
	late = t_connect(AF_INET, s.port); /* waits in the backlog */
	t_timeouts(late, 10);
	T_RUN_UNTIL(loop, atomic_load(&a.done) && s.live == 0, 20000);
	pthread_join(tw, NULL);
	pthread_join(tr, NULL);
	cr_assert_eq(s.accepted, 2, "accepted after the stop");
	cr_assert_eq(a.werr + a.rerr, 0, "the client failed");
	cr_assert_eq(a.got, TOTAL, "the in-flight transfer was cut short");
	cr_assert_eq(a.fnv_in, a.fnv_out);
	cr_assert_eq(s.eofs, 1);
	cr_assert_eq(s.timeouts, 1, "the idle connection did not time out");
	cr_assert_eq(recv(idle, &c1, 1, 0), 0, "the idle client saw no close");
	tsrv_finish(&s); /* closes the listening socket */
	cr_assert_leq(recv(late, &c1, 1, 0), 0, "the late client got data");
	close(late);
	close(idle);
	close(a.fd);
	t_drain(loop, 3000);
	rio_loop_counters(loop, &ctr);
	cr_assert_eq(ctr.ops_submitted, ctr.ops_completed,
		     "%llu ops submitted, %llu completed",
		     (unsigned long long)ctr.ops_submitted,
		     (unsigned long long)ctr.ops_completed);
	t_loop_done(loop);
}

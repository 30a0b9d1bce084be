/* Fault suite 3: 1,000 silent clients (connect, send nothing). A
 * well-behaved client is echoed long before any silent one's deadline; the
 * silent ones are closed at their deadline, and see the close. */
#include "tserver.h"

#include <unistd.h>

enum { SILENT = 1000, IDLE_MS = 1500 };

Test(serve_silent, silent_clients_hold_up_nobody, .timeout = 120)
{
	static int fds[SILENT];
	rio_loop *loop;
	char buf[8];
	size_t have = 0;
	uint64_t t0, echo_ns;
	int good, eofs = 0;
	tsrv s;

	if (!t_raise_nofile(2 * SILENT + 200))
		cr_skip_test("RLIMIT_NOFILE hard limit below %d", 2 * SILENT + 200);
	loop = t_loop();
	tsrv_start(&s, loop, NULL, (uint64_t)IDLE_MS * T_MS);
	t0 = t_now_ns();
	for (int i = 0; i < SILENT; i++)
		fds[i] = t_connect(AF_INET, s.port);
	good = t_connect(AF_INET, s.port);
	cr_assert_eq(send(good, "hello", 5, 0), 5);
	T_RUN_UNTIL(loop, t_recv_upto(good, buf, 5, &have), IDLE_MS);
	echo_ns = t_now_ns() - t0;
	cr_assert_eq(memcmp(buf, "hello", 5), 0);
	cr_assert_eq(s.timeouts, 0, "a silent client timed out before the "
		     "good one was served");
	T_RUN_UNTIL(loop, s.accepted == SILENT + 1, 5000);
	close(good);

	T_RUN_UNTIL(loop, s.timeouts == SILENT, IDLE_MS + 10000);
	cr_log_info("good client echoed %.1f ms after the silent ones began "
		    "connecting; first silent close at %.1f ms (deadline %d "
		    "ms)", (double)echo_ns / 1e6,
		    (double)(s.first_timeout_ns - t0) / 1e6, IDLE_MS);
	cr_assert_geq(s.first_timeout_ns - t0, (uint64_t)IDLE_MS * T_MS,
		      "closed before the deadline");
	T_RUN_UNTIL(loop, s.live == 0, 5000);
	for (int i = 0; i < SILENT; i++) {
		if (recv(fds[i], buf, 1, MSG_DONTWAIT) == 0)
			eofs++;
		close(fds[i]);
	}
	cr_assert_eq(eofs, SILENT, "only %d silent clients saw the close", eofs);
	cr_assert_eq(s.eofs, 1);
	cr_assert_eq(s.other_errors, 0, "server: %s while %s",
		     rio_strerror(s.other_error),
		     s.other_sending ? "sending" : "receiving");
	tsrv_finish(&s);
	t_loop_done(loop);
}

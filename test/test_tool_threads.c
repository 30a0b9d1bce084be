/* ringio-echo with --threads 2: every thread sets up its own loop and
 * serves. SO_REUSEPORT spreads 64 connections over both listeners (all on
 * one would be a 1 in 2^63 chance), so a thread that cannot run its loop
 * leaves connections that are never echoed. (ringio-proxy's twin is in
 * test_proxy.c.) */
#include "common.h"

#include <stdio.h>
#include <unistd.h>

enum { CLIENTS = 64 };

Test(tool_threads, ringio_echo_every_thread_serves, .timeout = 60)
{
#ifndef RIO_ECHO_BIN
	cr_skip_test("ringio-echo not built (RINGIO_BUILD_TOOLS=OFF)");
#else
	uint16_t port = t_closed_port();
	char ports[8], out[4096];
	char *argv[] = { RIO_ECHO_BIN, "--port", ports, "--threads", "2", NULL };
	char buf[16];
	int so;

	snprintf(ports, sizeof(ports), "%u", port);
	pid_t echo = t_tool_spawn(argv, NULL, &so);
	t_wait_listening(port);
	for (int i = 0; i < CLIENTS; i++) {
		int fd = t_connect(AF_INET, port);

		t_timeouts(fd, 5);
		cr_assert_eq(send(fd, "ping", 4, 0), 4);
		cr_assert_eq(recv(fd, buf, 4, MSG_WAITALL), 4,
			     "client %d was not echoed: %s", i, strerror(errno));
		cr_assert_eq(memcmp(buf, "ping", 4), 0);
		close(fd);
	}
	t_tool_stop(echo, so, out, sizeof(out));
	/* the t_wait_listening probe is one more */
	cr_assert_eq(t_field(out, " accepted="), CLIENTS + 1);
#endif
}

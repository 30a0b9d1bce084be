/* ringio-echo as a process.
 *
 * With --threads 2, every thread sets up its own loop and serves. SO_REUSEPORT spreads 64 connections over both listeners (all on
 * one would be a 1 in 2^63 chance), so a thread that cannot run its loop
 * leaves connections that are never echoed. (ringio-proxy's twin is in
 * test_proxy.c.) */
#include "common.h"

#include <stdio.h>
#include <unistd.h>

enum { CLIENTS = 64 };

Test(tool_echo, every_thread_serves, .timeout = 60)
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

/* Clients that send and never read share the buffer pool (128 x 64 KiB
 * here) with everyone else: each holds a few dozen buffers at most (its
 * receive stops while its echoes wait; on io_uring the kernel may fill up
 * to 32 more in one go before the stop lands), so the next client is
 * still echoed. Were they to keep receiving, the megabytes they push would
 * take the whole pool and that echo would never come. */
Test(tool_echo, stalled_readers_leave_the_pool_to_others, .timeout = 90)
{
#ifndef RIO_ECHO_BIN
	cr_skip_test("ringio-echo not built (RINGIO_BUILD_TOOLS=OFF)");
#else
	enum { STALLED = 2 };
	uint16_t port = t_closed_port();
	char ports[8], out[4096], buf[4];
	char *argv[] = { RIO_ECHO_BIN, "--port", ports, "--buf-count", "128",
			 NULL };
	uint64_t pushed = 0, n;
	int so, fds[STALLED];

	snprintf(ports, sizeof(ports), "%u", port);
	pid_t echo = t_tool_spawn(argv, NULL, &so);
	t_wait_listening(port);
	for (int i = 0; i < STALLED; i++) {
		fds[i] = t_stall_client(NULL, port, &n);
		pushed += n;
	}
	cr_log_info("%d clients pushed %llu KiB and never read", STALLED,
		    (unsigned long long)(pushed >> 10));
	int fd = t_connect(AF_INET, port);

	t_timeouts(fd, 5);
	cr_assert_eq(send(fd, "ping", 4, 0), 4);
	cr_assert_eq(recv(fd, buf, 4, MSG_WAITALL), 4,
		     "a client after the stalled ones was not echoed: %s",
		     strerror(errno));
	cr_assert_eq(memcmp(buf, "ping", 4), 0);
	close(fd);
	for (int i = 0; i < STALLED; i++)
		close(fds[i]);
	t_tool_stop(echo, so, out, sizeof(out));
#endif
}

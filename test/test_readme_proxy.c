/* README's "A proxy in 60 lines", as README shows it (CMake cuts it out of
 * README.md and builds it): a child process in front of upstreams on
 * loopback, on every backend. 64 MiB each way with equal checksums,
 * half-close both ways, failover from a refusing upstream, and it stays
 * within its 60 lines. */
#include "tserver.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef RIO_README_PROXY_BIN
#define RIO_README_PROXY_BIN NULL
#endif

typedef struct example {
	pid_t pid;
	int out;
	uint16_t port;
} example;

/* Run it on 127.0.0.1 with `ups` upstream ports; wait until it listens
 * (the probe is one session of its own). */
static void example_start(example *e, const uint16_t *ups, int n)
{
	char *argv[8], lbuf[32], ubuf[4][32];

	if (!RIO_README_PROXY_BIN)
		cr_skip_test("the README proxy was not built");
	cr_assert(n <= 4);
	e->port = t_closed_port();
	snprintf(lbuf, sizeof(lbuf), "127.0.0.1:%u", e->port);
	argv[0] = RIO_README_PROXY_BIN;
	argv[1] = lbuf;
	for (int i = 0; i < n; i++) {
		snprintf(ubuf[i], sizeof(ubuf[i]), "127.0.0.1:%u", ups[i]);
		argv[2 + i] = ubuf[i];
	}
	argv[2 + n] = NULL;
	e->pid = t_tool_spawn(argv, NULL, &e->out);
	t_wait_listening(e->port);
}

/* It must still be running (nothing killed it); then SIGTERM it. */
static void example_stop(example *e)
{
	int st;

	cr_assert_eq(waitpid(e->pid, &st, WNOHANG), 0,
		     "the example exited while serving (status %d)", st);
	kill(e->pid, SIGTERM);
	cr_assert_eq(waitpid(e->pid, &st, 0), e->pid);
	close(e->out);
}

#define TOTAL (64u << 20)

/* Through the example to an echo upstream: every byte comes back, and the
 * client's FIN comes back after the last one. The refusing upstream
 * listed first is skipped. */
Test(readme_proxy, sixty_four_mib_each_way, .timeout = 180)
{
	rio_loop *loop = t_loop();
	t_stream s = { .total = TOTAL };
	example e;
	tsrv up;

	tsrv_start(&up, loop, NULL, 0);
	uint16_t ups[] = { t_closed_port(), up.port };
	example_start(&e, ups, 2);
	s.fd = t_connect(AF_INET, e.port);
	t_timeouts(s.fd, 60);
	t_stream_run(loop, &s, 150000);
	cr_assert_eq(s.fnv_in, s.fnv_out);
	cr_assert_eq(up.bytes, TOTAL);
	close(s.fd);
	example_stop(&e);
	tsrv_finish(&up);
	t_loop_done(loop);
}

/* The upstream ends its side first: the client sees EOF and can still
 * send; then the client's FIN reaches the upstream. */
Test(readme_proxy, half_close_both_ways, .timeout = 60)
{
	uint16_t uport;
	int lfd = t_listen(AF_INET, 16, &uport), c, u;
	char buf[64];
	example e;

	example_start(&e, &uport, 1);
	u = accept(lfd, NULL, NULL); /* the start-up probe's session */
	cr_assert_geq(u, 0);
	close(u);
	c = t_connect(AF_INET, e.port);
	t_timeouts(c, 10);
	u = accept(lfd, NULL, NULL);
	cr_assert_geq(u, 0);
	t_timeouts(u, 10);
	cr_assert_eq(send(u, "hello", 5, 0), 5);
	cr_assert_eq(shutdown(u, SHUT_WR), 0);
	cr_assert_eq(recv(c, buf, 5, MSG_WAITALL), 5);
	cr_assert_eq(memcmp(buf, "hello", 5), 0);
	cr_assert_eq(recv(c, buf, 1, 0), 0, "no FIN to the client");
	cr_assert_eq(send(c, "after", 5, 0), 5, "the other way closed too");
	cr_assert_eq(shutdown(c, SHUT_WR), 0);
	cr_assert_eq(recv(u, buf, 5, MSG_WAITALL), 5);
	cr_assert_eq(memcmp(buf, "after", 5), 0);
	cr_assert_eq(recv(u, buf, 1, 0), 0, "no FIN to the upstream");
	close(c);
	close(u);
	close(lfd);
	example_stop(&e);
}

/* Upstreams [refusing, live]: every client reaches the live one, whichever
 * the round robin starts at. */
Test(readme_proxy, fails_over_from_a_refusing_upstream, .timeout = 60)
{
	uint16_t live;
	int lfd = t_listen(AF_INET, 16, &live);
	example e;
	char buf[16], want[16];

	uint16_t ups[] = { t_closed_port(), live };
	example_start(&e, ups, 2);
	int probe = accept(lfd, NULL, NULL);
	cr_assert_geq(probe, 0, "the start-up probe did not fail over");
	close(probe);
	for (int i = 0; i < 4; i++) {
		int c = t_connect(AF_INET, e.port);
		t_timeouts(c, 10);
		snprintf(want, sizeof(want), "client %d", i);
		cr_assert_eq(send(c, want, strlen(want), 0), (ssize_t)strlen(want));
		int u = accept(lfd, NULL, NULL);
		cr_assert_geq(u, 0, "client %d reached no upstream", i);
		t_timeouts(u, 10);
		memset(buf, 0, sizeof(buf));
		cr_assert_eq(recv(u, buf, strlen(want), MSG_WAITALL),
			     (ssize_t)strlen(want));
		cr_assert_str_eq(buf, want);
		close(u);
		cr_assert_eq(recv(c, buf, 1, 0), 0, "the upstream's FIN was lost");
		close(c);
	}
	close(lfd);
	example_stop(&e);
}

/* What README calls it. */
Test(readme_proxy, is_sixty_lines_at_most, .timeout = 10)
{
	FILE *f = fopen(RIO_README_PROXY_SRC, "r");
	int lines = 0, ch;

	cr_assert_not_null(f, "%s", RIO_README_PROXY_SRC);
	while ((ch = fgetc(f)) != EOF)
		lines += ch == '\n';
	fclose(f);
	cr_assert(lines >= 30 && lines <= 60, "the README proxy has %d lines",
		  lines);
}

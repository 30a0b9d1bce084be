/* Fault suite 2 and 5: clients that reset. Connections reset in the accept
 * queue before the server accepts them (SO_LINGER 0), and peers that reset
 * mid-stream: the listener keeps going, counts them, and a well-behaved
 * client is still echoed. SIGPIPE stays at its default disposition, so a
 * send that raised it would kill the test. */
#include "tserver.h"

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

enum { RESETS = 200 };

/* Every reset client ends in exactly one place: refused by accept (a
 * client error) or accepted and then closed by the server on its reset. */
static void check_accounting(tsrv *s, int resets, int good)
{
	rio_accept_counters c;

	T_RUN_UNTIL(s->loop, s->live == 0, 5000);
	rio_listener_counters(s->l, &c);
	cr_log_info("%d resets: accepted %llu (server saw %d ECONNRESET, %d "
		    "EOF), client errors %llu", resets,
		    (unsigned long long)c.accepted, s->resets, s->eofs,
		    (unsigned long long)c.client_errors);
	cr_assert_eq(s->stopped, 0, "the listener stopped");
	cr_assert_eq(c.accepted + c.client_errors, (uint64_t)(resets + good));
	cr_assert_eq((uint64_t)(s->resets + s->eofs), c.accepted,
		     "a reset connection was not closed as reset or EOF");
	cr_assert_eq(s->other_errors, 0, "server: %s while %s",
		     rio_strerror(s->other_error),
		     s->other_sending ? "sending" : "receiving");
}

Test(serve_rst, resets_in_the_accept_queue_are_counted, .timeout = 60)
{
	rio_loop *loop = t_loop();
	uint16_t port;
	int lfd = t_listen(AF_INET, 4096, &port);
	tsrv s;

	cr_assert_eq(rio_set_nonblock(lfd, 1), 0);
	for (int i = 0; i < RESETS; i++)
		t_rst_close(t_connect(AF_INET, port));
	tsrv_start_fd(&s, loop, lfd, NULL, 0);
	t_echo_check_port(loop, port, "after the resets");
	check_accounting(&s, RESETS, 1);
	/* and while the accept is armed */
	for (int i = 0; i < RESETS; i++)
		t_rst_close(t_connect(AF_INET, port));
	t_echo_check_port(loop, port, "still here");
	check_accounting(&s, 2 * RESETS, 2);
	tsrv_finish(&s);
	t_loop_done(loop);
}

Test(serve_rst, peer_reset_mid_stream_is_econnreset, .timeout = 30)
{
	rio_loop *loop = t_loop();
	struct sigaction sa = { .sa_handler = SIG_DFL };
	char big[65536];
	tsrv s;
	int fd;

	sigemptyset(&sa.sa_mask);
	cr_assert_eq(sigaction(SIGPIPE, &sa, NULL), 0);
	tsrv_start(&s, loop, NULL, 0);
	/* a reset while the server waits in recv */
	fd = t_connect(AF_INET, s.port);
	t_echo_check(loop, fd, "abc");
	t_rst_close(fd);
	T_RUN_UNTIL(loop, s.closed == 1, 5000);
	cr_assert_eq(s.resets, 1, "recv after a peer reset: last error %s",
		     rio_strerror(s.last_error));
	/* a reset while the server sends into a peer that does not read */
	fd = t_connect(AF_INET, s.port);
	memset(big, 'x', sizeof(big));
	for (int i = 0; i < 64; i++) /* until both buffers are full */
		if (send(fd, big, sizeof(big), MSG_DONTWAIT) < 0)
			break;
	t_loop_sleep(loop, 50);
	t_rst_close(fd);
	T_RUN_UNTIL(loop, s.closed == 2, 5000);
	cr_assert_eq(s.send_errors + s.resets, 2,
		     "send into a reset peer: last error %s",
		     rio_strerror(s.last_error));
	cr_assert(s.last_error == -ECONNRESET || s.last_error == -EPIPE,
		  "got %s", rio_strerror(s.last_error));
	t_echo_check_port(loop, s.port, "others are still served");
	tsrv_finish(&s);
	t_loop_done(loop);
}

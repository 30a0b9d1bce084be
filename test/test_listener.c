/* rio_listener: the API's contract — bad arguments, on_stop exactly once
 * and never inside start/stop, max_conns and release, the error classes. */
#include "tserver.h"

#include <unistd.h>

static void nop_accept(rio_listener *l, rio_loop *loop, int fd,
			const struct sockaddr *peer, socklen_t peer_len,
			void *data)
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

/* Destroyed (from on_stop, as ringio.h allows) while connections it
 * accepted are still out: the owner's later rio_listener_release() calls
 * are still valid, one per connection, and the last one frees it (ASan
 * and valgrind see a use after free otherwise). */
struct hold {
	int fds[8], n, stops;
	rio_listener *l;
};

static void hold_accept(rio_listener *l, rio_loop *loop, int fd,
			const struct sockaddr *peer, socklen_t peer_len,
			void *data)
{
	struct hold *h = data;

	(void)l;
	cr_assert_lt(h->n, 8);
	h->fds[h->n++] = fd;
}

static void destroy_on_stop(rio_listener *l, int err, void *data)
{
	struct hold *h = data;

	cr_assert_eq(err, 0);
	h->stops++;
	cr_assert_eq(rio_listener_destroy(l), 0);
}

Test(listener, destroy_with_connections_out_defers_the_free, .timeout = 20)
{
	rio_loop *loop = t_loop();
	struct hold h = {0};
	rio_listener_opts o = { .on_accept = hold_accept,
				.on_stop = destroy_on_stop, .data = &h };
	uint16_t port;
	int lfd = t_listen(AF_INET, 8, &port);
	int cl[3];

	cr_assert_eq(rio_listener_start(loop, lfd, &o, &h.l), 0);
	for (int i = 0; i < 3; i++)
		cl[i] = t_connect(AF_INET, port);
	T_RUN_UNTIL(loop, h.n == 3, 3000);
	cr_assert_eq(rio_listener_stop(h.l), 0);
	T_RUN_UNTIL(loop, h.stops == 1, 3000);
	/* the three connections outlive the listener's owner-facing life */
	for (int i = 0; i < 3; i++) {
		close(h.fds[i]);
		close(cl[i]);
		cr_assert_eq(rio_listener_release(h.l), 0, "release %d", i);
	}
	close(lfd);
	t_loop_done(loop);
}

/* max_conns 100 with 600 clients waiting in the backlog: the listener
 * fills up, then all 100 are released at once (a bulk idle timeout). It
 * must resume one connection at a time however it resumes: never more
 * than max_conns live, and never a waiting client accepted only to be
 * closed (shed) because the server was busy. */
struct bulk {
	rio_listener *l;
	int fds[256], n, over;
	unsigned max;
};

static void bulk_accept(rio_listener *l, rio_loop *loop, int fd,
			const struct sockaddr *peer, socklen_t peer_len,
			void *data)
{
	struct bulk *b = data;
	rio_accept_counters c;

	rio_listener_counters(l, &c);
	if (c.live > b->max)
		b->over++;
	if (b->n < 256)
		b->fds[b->n++] = fd;
	else
		close(fd);
}

Test(listener, bulk_release_resumes_without_overshoot, .timeout = 60)
{
	enum { CLIENTS = 600, MAX = 100 };
	rio_loop *loop = t_loop();
	struct bulk *b = calloc(1, sizeof(*b));
	rio_listener_opts o = { .on_accept = bulk_accept, .data = b,
				.max_conns = MAX };
	uint16_t port;
	int lfd = t_listen(AF_INET, 1024, &port);
	int *cl = calloc(CLIENTS, sizeof(int));
	rio_accept_counters c;

	cr_assert(b && cl);
	cr_assert(t_raise_nofile(2 * CLIENTS + 256), "RLIMIT_NOFILE too low");
	cr_assert_eq(rio_set_nonblock(lfd, 1), 0);
	b->max = MAX;
	cr_assert_eq(rio_listener_start(loop, lfd, &o, &b->l), 0);
	/* every client completes its handshake into the backlog */
	for (int i = 0; i < CLIENTS; i++)
		cl[i] = t_connect(AF_INET, port);
	T_RUN_UNTIL(loop, b->n == MAX, 5000);
	t_loop_sleep(loop, 50);
	cr_assert_eq(b->n, MAX);
	/* all at once, in one turn */
	for (int i = 0; i < MAX; i++) {
		close(b->fds[i]);
		cr_assert_eq(rio_listener_release(b->l), 0);
	}
	T_RUN_UNTIL(loop, b->n == 2 * MAX, 5000);
	t_loop_sleep(loop, 100);
	rio_listener_counters(b->l, &c);
	cr_assert_eq(c.shed, 0, "%llu waiting clients accepted and closed",
		     (unsigned long long)c.shed);
	cr_assert_eq(b->over, 0, "%d accepts past max_conns", b->over);
	cr_assert_eq(b->n, 2 * MAX);
	cr_assert_eq(c.live, MAX);
	for (int i = MAX; i < b->n; i++) {
		close(b->fds[i]);
		cr_assert_eq(rio_listener_release(b->l), 0);
	}
	cr_assert_eq(rio_listener_stop(b->l), 0);
	for (int i = 0; i < CLIENTS; i++)
		close(cl[i]);
	t_drain(loop, 5000);
	cr_assert_eq(rio_listener_destroy(b->l), 0);
	close(lfd);
	free(cl);
	free(b);
	t_loop_done(loop);
}

/* on_accept gets the listener's loop and the client's address, the one
 * the client's own socket is bound to, on every backend, IPv4 and IPv6. */
struct peer_seen {
	rio_loop *loop;
	struct sockaddr_storage ss;
	socklen_t len;
	int fd, n;
};

static void peer_accept(rio_listener *l, rio_loop *loop, int fd,
			const struct sockaddr *peer, socklen_t peer_len,
			void *data)
{
	struct peer_seen *s = data;

	(void)l;
	s->loop = loop;
	cr_assert(peer_len > 0 && peer_len <= sizeof s->ss);
	memcpy(&s->ss, peer, peer_len);
	s->len = peer_len;
	s->fd = fd;
	s->n++;
}

static void peer_address_for(int family)
{
	rio_loop *loop = t_loop();
	struct peer_seen seen = { .fd = -1 };
	rio_listener_opts o = { .on_accept = peer_accept, .data = &seen };
	rio_listener *l;
	uint16_t port;
	int lfd = t_listen(family, 8, &port);

	cr_assert_eq(rio_listener_start(loop, lfd, &o, &l), 0);
	int c = t_connect(family, port);
	struct sockaddr_storage mine;
	socklen_t mine_len = sizeof mine;
	cr_assert_eq(getsockname(c, (struct sockaddr *)&mine, &mine_len), 0);
	T_RUN_UNTIL(loop, seen.n == 1, 5000);
	cr_assert_eq(seen.loop, loop, "on_accept got another loop");
	cr_assert_eq(seen.len, mine_len);
	cr_assert_eq(memcmp(&seen.ss, &mine, mine_len), 0,
		     "the peer address is not the client's");
	cr_assert_eq(rio_listener_release(l), 0);
	close(seen.fd);
	close(c);
	cr_assert_eq(rio_listener_stop(l), 0);
	t_drain(loop, 5000);
	cr_assert_eq(rio_listener_destroy(l), 0);
	close(lfd);
	t_loop_done(loop);
}

Test(listener, on_accept_gets_the_loop_and_the_peer_ipv4, .timeout = 20)
{
	peer_address_for(AF_INET);
}

Test(listener, on_accept_gets_the_loop_and_the_peer_ipv6, .timeout = 20)
{
	peer_address_for(AF_INET6);
}

/* rio_connect: success to a loopback listener, ECONNREFUSED on a closed port. */
#include "common.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <sys/un.h>
#include <unistd.h>

struct conn {
	rio_op op;
	int calls;
	int res;
	int in_submit; /* set around the submit call */
	int ran_in_submit;
	struct sockaddr_storage addr; /* must outlive the op */
};

static void connect_cb(rio_loop *loop, rio_op *op, int res)
{
	struct conn *c = RIO_CONTAINER_OF(op, struct conn, op);

	(void)loop;
	c->calls++;
	c->res = res;
	if (c->in_submit)
		c->ran_in_submit = 1;
}

static int submit_connect(rio_loop *loop, struct conn *c, int fd,
			  uint16_t port)
{
	socklen_t len = t_loopback(AF_INET, port, &c->addr);
	int rc;

	c->in_submit = 1;
	rc = rio_connect(loop, &c->op, fd, (struct sockaddr *)&c->addr, len,
			 connect_cb);
	c->in_submit = 0;
	return rc;
}

Test(connect, succeeds_to_a_loopback_listener, .timeout = 20)
{
	rio_loop *loop = t_loop();
	struct conn c = { .calls = 0 };
	struct sockaddr_in peer;
	socklen_t plen = sizeof(peer);
	uint16_t port;
	int lfd = t_listen(AF_INET, 8, &port);
	int fd = rio_socket_tcp(AF_INET);
	int afd;
	char b = 0;

	cr_assert_geq(fd, 0, "rio_socket_tcp: %s", rio_strerror(fd));
	cr_assert_eq(submit_connect(loop, &c, fd, port), 0);
	T_RUN_UNTIL(loop, c.calls > 0, 3000);
	cr_assert_eq(c.res, 0, "connect: %d (%s)", c.res, rio_strerror(c.res));
	cr_assert_eq(c.ran_in_submit, 0, "callback ran inside rio_connect");
	cr_assert_eq(getpeername(fd, (struct sockaddr *)&peer, &plen), 0,
		     "a connected socket has a peer");
	cr_assert_eq(ntohs(peer.sin_port), port);

	/* The connection is real: the listener holds its other end. */
	afd = accept(lfd, NULL, NULL);
	cr_assert_geq(afd, 0);
	cr_assert_eq(write(afd, "k", 1), 1);
	for (int i = 0; i < 2000 && read(fd, &b, 1) != 1; i++)
		usleep(1000);
	cr_assert_eq(b, 'k');
	t_loop_sleep(loop, 10);
	cr_assert_eq(c.calls, 1);
	close(afd);
	close(fd);
	close(lfd);
	t_loop_done(loop);
}

Test(connect, refused_on_a_closed_port, .timeout = 20)
{
	rio_loop *loop = t_loop();
	struct conn c = { .calls = 0 };
	uint16_t port = t_closed_port();
	int fd = rio_socket_tcp(AF_INET);

	cr_assert_geq(fd, 0);
	cr_assert_eq(submit_connect(loop, &c, fd, port), 0,
		     "a refused connect is an error for the callback");
	T_RUN_UNTIL(loop, c.calls > 0, 3000);
	cr_assert_eq(c.res, -ECONNREFUSED, "got %d (%s)", c.res,
		     rio_strerror(c.res));
	cr_assert_eq(c.ran_in_submit, 0, "callback ran inside rio_connect");
	t_loop_sleep(loop, 10);
	cr_assert_eq(c.calls, 1);
	close(fd);
	t_loop_done(loop);
}

static int count_done(const struct conn *c, int n)
{
	int done = 0;

	for (int i = 0; i < n; i++)
		done += c[i].calls > 0;
	return done;
}

Test(connect, many_refused_and_accepted_in_one_turn, .timeout = 20)
{
	enum { N = 32 };
	rio_loop *loop = t_loop();
	struct conn c[N];
	int fd[N];
	uint16_t open_port, closed_port = t_closed_port();
	int lfd = t_listen(AF_INET, N, &open_port);

	memset(c, 0, sizeof(c));
	for (int i = 0; i < N; i++) {
		fd[i] = rio_socket_tcp(AF_INET);
		cr_assert_geq(fd[i], 0);
		cr_assert_eq(submit_connect(loop, &c[i], fd[i],
					    i % 2 ? closed_port : open_port),
			     0);
	}
	T_RUN_UNTIL(loop, count_done(c, N) == N, 5000);
	t_loop_sleep(loop, 10);
	for (int i = 0; i < N; i++) {
		cr_assert_eq(c[i].calls, 1, "connect %d: %d calls", i,
			     c[i].calls);
		cr_assert_eq(c[i].res, i % 2 ? -ECONNREFUSED : 0,
			     "connect %d: %d (%s)", i, c[i].res,
			     rio_strerror(c[i].res));
		close(fd[i]);
	}
	close(lfd);
	t_loop_done(loop);
}

/* An AF_UNIX listener with a full backlog: connect(2) does not wait there,
 * and rio_connect's -EAGAIN is its documented result on every backend (a
 * caller tries another address or later). Once the listener accepts, a
 * new connect succeeds. */
Test(connect, unix_full_backlog_is_eagain, .timeout = 20)
{
	rio_loop *loop = t_loop();
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	socklen_t sl = offsetof(struct sockaddr_un, sun_path) + 1 +
		       (socklen_t)snprintf(sa.sun_path + 1,
					   sizeof sa.sun_path - 1,
					   "ringio-test-%d", (int)getpid());
	int lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	int queued[8], nq = 0;
	struct conn c = {0};

	cr_assert_geq(lfd, 0);
	cr_assert_eq(bind(lfd, (struct sockaddr *)&sa, sl), 0);
	cr_assert_eq(listen(lfd, 0), 0);
	/* fill the backlog (abstract name: nothing on disk) */
	for (; nq < 8; nq++) {
		queued[nq] = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK |
				    SOCK_CLOEXEC, 0);
		if (connect(queued[nq], (struct sockaddr *)&sa, sl) < 0) {
			cr_assert_eq(errno, EAGAIN, "%s", strerror(errno));
			close(queued[nq]);
			break;
		}
	}
	cr_assert(nq > 0 && nq < 8, "the backlog never filled (%d)", nq);

	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	rio_op_init(&c.op);
	cr_assert_eq(rio_connect(loop, &c.op, fd, (struct sockaddr *)&sa, sl,
				 connect_cb), 0);
	T_RUN_UNTIL(loop, c.calls == 1, 3000);
	cr_assert_eq(c.res, -EAGAIN, "full backlog: %s", rio_strerror(c.res));
	close(fd);

	/* room again: the same connect goes through */
	int a = accept(lfd, NULL, NULL);
	cr_assert_geq(a, 0);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	c.calls = 0;
	rio_op_init(&c.op);
	cr_assert_eq(rio_connect(loop, &c.op, fd, (struct sockaddr *)&sa, sl,
				 connect_cb), 0);
	T_RUN_UNTIL(loop, c.calls == 1, 3000);
	cr_assert_eq(c.res, 0, "with room: %s", rio_strerror(c.res));
	close(fd);
	close(a);
	for (int i = 0; i < nq; i++)
		close(queued[i]);
	close(lfd);
	t_loop_done(loop);
}

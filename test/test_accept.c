/* rio_accept: one-shot with the peer's address, and multishot. */
#include "common.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <unistd.h>

#define NCLIENTS 6

struct acceptor {
	rio_op op;
	int calls;
	int finals;
	int more_missing; /* results >= 0 without RIO_OP_F_MORE */
	int last_res;
	unsigned last_flags;
	int fds[NCLIENTS + 2];
	int nfds;
};

static void accept_cb(rio_loop *loop, rio_op *op, int res)
{
	struct acceptor *a = RIO_CONTAINER_OF(op, struct acceptor, op);

	(void)loop;
	a->calls++;
	a->last_res = res;
	a->last_flags = op->flags;
	if (res >= 0 && a->nfds < NCLIENTS + 2)
		a->fds[a->nfds++] = res;
	if (!(op->flags & RIO_OP_F_MORE))
		a->finals++;
}

static void check_fd_flags(int fd)
{
	int fl = fcntl(fd, F_GETFL);
	int fdfl = fcntl(fd, F_GETFD);

	cr_assert(fl >= 0 && fdfl >= 0, "accepted fd %d is not open", fd);
	cr_assert(fl & O_NONBLOCK, "accepted fd must be non-blocking");
	cr_assert(fdfl & FD_CLOEXEC, "accepted fd must be close-on-exec");
}

Test(accept, oneshot_fills_the_peer_address, .timeout = 20)
{
	rio_loop *loop = t_loop();
	struct acceptor a = { .calls = 0 };
	struct sockaddr_storage peer, mine;
	socklen_t peer_len = sizeof(peer), mine_len = sizeof(mine);
	uint16_t port;
	int lfd = t_listen(AF_INET, 8, &port);
	int cfd;
	char c = 'x';

	memset(&peer, 0, sizeof(peer));
	cr_assert_eq(rio_accept(loop, &a.op, lfd, (struct sockaddr *)&peer,
				&peer_len, 0, accept_cb),
		     0);
	t_loop_sleep(loop, 5);
	cr_assert_eq(a.calls, 0, "accept completed with nobody connecting");
	cfd = t_connect(AF_INET, port);
	T_RUN_UNTIL(loop, a.calls > 0, 3000);
	cr_assert_eq(a.calls, 1);
	cr_assert_geq(a.last_res, 0, "accept: %s", rio_strerror(a.last_res));
	cr_assert_eq(a.last_flags & RIO_OP_F_MORE, 0u, "one-shot has no MORE");
	check_fd_flags(a.last_res);

	/* The address is the client's own local address. */
	cr_assert_eq(getsockname(cfd, (struct sockaddr *)&mine, &mine_len), 0);
	cr_assert_eq(peer_len, sizeof(struct sockaddr_in), "addrlen %u",
		     (unsigned)peer_len);
	cr_assert_eq(peer.ss_family, AF_INET);
	cr_assert_eq(((struct sockaddr_in *)&peer)->sin_addr.s_addr,
		     htonl(INADDR_LOOPBACK));
	cr_assert_eq(((struct sockaddr_in *)&peer)->sin_port,
		     ((struct sockaddr_in *)&mine)->sin_port,
		     "peer port does not match the client's port");

	/* And the fd really is that connection. */
	cr_assert_eq(write(cfd, &c, 1), 1);
	c = 0;
	for (int i = 0; i < 2000 && read(a.last_res, &c, 1) != 1; i++)
		usleep(1000);
	cr_assert_eq(c, 'x');
	close(a.last_res);
	close(cfd);
	close(lfd);
	t_loop_done(loop);
}

Test(accept, oneshot_without_address, .timeout = 20)
{
	rio_loop *loop = t_loop();
	struct acceptor a = { .calls = 0 };
	uint16_t port;
	int lfd = t_listen(AF_INET, 8, &port);
	int cfd = t_connect(AF_INET, port); /* already queued */

	cr_assert_eq(rio_accept(loop, &a.op, lfd, NULL, NULL, 0, accept_cb), 0);
	cr_assert_eq(a.calls, 0, "callback ran inside submit");
	T_RUN_UNTIL(loop, a.calls > 0, 3000);
	cr_assert_geq(a.last_res, 0, "accept: %s", rio_strerror(a.last_res));
	check_fd_flags(a.last_res);
	t_loop_sleep(loop, 10);
	cr_assert_eq(a.calls, 1);
	close(a.last_res);
	close(cfd);
	close(lfd);
	t_loop_done(loop);
}

Test(accept, multishot_one_completion_per_client, .timeout = 20)
{
	rio_loop *loop = t_loop();
	struct acceptor a = { .calls = 0 };
	struct acceptor c = { .calls = 0 }; /* the cancel op */
	uint16_t port;
	int lfd = t_listen(AF_INET, 64, &port);
	int cfd[NCLIENTS];
	int late;

	cr_assert_eq(rio_accept(loop, &a.op, lfd, NULL, NULL, RIO_MULTISHOT,
				accept_cb),
		     0);
	/* Clients arrive one by one, then the rest in a burst. */
	for (int i = 0; i < 2; i++) {
		cfd[i] = t_connect(AF_INET, port);
		T_RUN_UNTIL(loop, a.calls > i, 3000);
	}
	for (int i = 2; i < NCLIENTS; i++)
		cfd[i] = t_connect(AF_INET, port);
	T_RUN_UNTIL(loop, a.calls >= NCLIENTS, 3000);
	t_loop_sleep(loop, 10);
	cr_assert_eq(a.calls, NCLIENTS, "%d completions for %d clients", a.calls,
		     NCLIENTS);
	cr_assert_eq(a.finals, 0, "a multishot accept ended early (res %d)",
		     a.last_res);
	cr_assert(rio_op_in_flight(&a.op), "multishot accept must stay armed");
	for (int i = 0; i < a.nfds; i++) {
		check_fd_flags(a.fds[i]);
		for (int j = 0; j < i; j++)
			cr_assert_neq(a.fds[i], a.fds[j], "fd handed out twice");
	}

	/* Cancel ends the stream with one final completion, MORE clear. */
	cr_assert_eq(rio_cancel(loop, &c.op, &a.op, accept_cb), 0);
	T_RUN_UNTIL(loop, a.finals > 0 && c.calls > 0, 3000);
	cr_assert_eq(a.calls, NCLIENTS + 1);
	cr_assert_eq(a.last_res, -ECANCELED, "final res %d (%s)", a.last_res,
		     rio_strerror(a.last_res));
	cr_assert_eq(c.last_res, 0, "cancel res %d", c.last_res);
	cr_assert(!rio_op_in_flight(&a.op));

	/* No stray completion for a client arriving after the cancel. */
	late = t_connect(AF_INET, port);
	t_loop_sleep(loop, 20);
	cr_assert_eq(a.calls, NCLIENTS + 1, "completion after the final one");
	close(late);
	for (int i = 0; i < a.nfds; i++)
		close(a.fds[i]);
	for (int i = 0; i < NCLIENTS; i++)
		close(cfd[i]);
	close(lfd);
	t_loop_done(loop);
}

Test(accept, error_on_a_socket_that_does_not_listen, .timeout = 20)
{
	rio_loop *loop = t_loop();
	struct acceptor a = { .calls = 0 };
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	cr_assert(fd >= 0);
	/* accept4 on an unconnected, non-listening socket fails EINVAL; the
	 * error arrives through the callback, not from the submit call. */
	cr_assert_eq(rio_accept(loop, &a.op, fd, NULL, NULL, 0, accept_cb), 0);
	T_RUN_UNTIL(loop, a.calls > 0, 3000);
	cr_assert_eq(a.last_res, -EINVAL, "got %d (%s)", a.last_res,
		     rio_strerror(a.last_res));
	cr_assert_eq(a.calls, 1);
	close(fd);
	t_loop_done(loop);
}

/* A real fd limit: RLIMIT_NOFILE lowered so that the next fd cannot be
 * allocated. accept4's EMFILE arrives through the callback; the loop and
 * the listener survive it, and the queued client is accepted once the
 * limit is back. */
static void run_emfile(unsigned flags)
{
	rio_loop *loop = t_loop();
	struct acceptor a = { .calls = 0 }, b = { .calls = 0 };
	struct rlimit old, low;
	uint16_t port;
	int lfd = t_listen(AF_INET, 8, &port);
	int cfd = t_connect(AF_INET, port);
	int probe;

	cr_assert_eq(getrlimit(RLIMIT_NOFILE, &old), 0);
	/* The lowest free fd number is the next one the kernel hands out. */
	probe = dup(0);
	cr_assert_geq(probe, 0);
	close(probe);
	low = old;
	low.rlim_cur = (rlim_t)probe; /* fds 0..probe-1 only: no room */
	cr_assert_eq(setrlimit(RLIMIT_NOFILE, &low), 0);
	cr_assert_eq(rio_accept(loop, &a.op, lfd, NULL, NULL, flags, accept_cb), 0);
	T_RUN_UNTIL(loop, a.finals > 0, 3000);
	cr_assert_eq(setrlimit(RLIMIT_NOFILE, &old), 0);
	cr_assert_eq(a.last_res, -EMFILE, "accept under a full fd table: %d (%s)",
		     a.last_res, rio_strerror(a.last_res));
	cr_assert_eq(a.calls, 1, "%d completions", a.calls);
	cr_assert_eq(a.last_flags & RIO_OP_F_MORE, 0u);

	cr_assert_eq(rio_accept(loop, &b.op, lfd, NULL, NULL, 0, accept_cb), 0);
	T_RUN_UNTIL(loop, b.calls > 0, 3000);
	cr_assert_geq(b.last_res, 0, "the client was lost: %d (%s)", b.last_res,
		      rio_strerror(b.last_res));
	close(b.last_res);
	close(cfd);
	close(lfd);
	t_loop_done(loop);
}

Test(accept, oneshot_emfile_under_a_real_fd_limit, .timeout = 20)
{
	run_emfile(0);
}

Test(accept, multishot_emfile_under_a_real_fd_limit_ends_it, .timeout = 20)
{
	run_emfile(RIO_MULTISHOT);
}

/*
 * Completions come in the order the kernel did the work. Two connections
 * queued; a one-shot accept, then a multishot one on the same listener:
 * the one-shot accept takes the first connection (the readiness fallback
 * accepts at submit), so its completion comes first, before any the
 * multishot accept delivers (found by test/fuzz seed 37: the fallback
 * delivered the multishot's result first, and the caller could not tell
 * which connection came first).
 */
static int accept_seq;
struct ordered {
	rio_op op;
	int fd[4], seq[4], n;
};

static void ordered_cb(rio_loop *loop, rio_op *op, int res)
{
	struct ordered *o = RIO_CONTAINER_OF(op, struct ordered, op);
	(void)loop;
	if (res >= 0 && o->n < 4) {
		o->fd[o->n] = res;
		o->seq[o->n++] = accept_seq++;
	}
}

static int local_port(int fd, int peer)
{
	struct sockaddr_in a;
	socklen_t l = sizeof a;
	int r = peer ? getpeername(fd, (struct sockaddr *)&a, &l)
		     : getsockname(fd, (struct sockaddr *)&a, &l);
	cr_assert_eq(r, 0);
	return ntohs(a.sin_port);
}

Test(accept, completions_come_in_the_kernels_order, .timeout = 20)
{
	rio_loop *loop = t_loop();
	uint16_t port;
	int lfd = t_listen(AF_INET, 64, &port);
	for (int round = 0; round < 10; round++) {
		struct ordered one = { .n = 0 }, multi = { .n = 0 };
		t_rec c = { .calls = 0 };
		int cfd[2];
		accept_seq = 0;
		for (int i = 0; i < 2; i++)
			cfd[i] = t_connect(AF_INET, port);
		t_loop_sleep(loop, 2);
		cr_assert_eq(rio_accept(loop, &one.op, lfd, NULL, NULL, 0,
					ordered_cb), 0);
		cr_assert_eq(rio_accept(loop, &multi.op, lfd, NULL, NULL,
					RIO_MULTISHOT, ordered_cb), 0);
		T_RUN_UNTIL(loop, one.n == 1 && multi.n == 1, 3000);
		/* the first completion holds the first connection */
		struct ordered *first = one.seq[0] == 0 ? &one : &multi;
		cr_assert_eq(local_port(first->fd[0], 1), local_port(cfd[0], 0),
			     "round %d: the first completion (%s accept) holds "
			     "the second connection", round,
			     first == &one ? "one-shot" : "multishot");
		cr_assert_eq(rio_cancel(loop, &c.op, &multi.op, t_rec_cb), 0);
		T_RUN_UNTIL(loop, c.calls > 0 && !rio_op_in_flight(&multi.op),
			    3000);
		for (int i = 0; i < 2; i++) {
			close(cfd[i]);
			close(i ? multi.fd[0] : one.fd[0]);
		}
	}
	close(lfd);
	t_loop_done(loop);
}

#include "tload.h"
#include "tserver.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/wait.h>
#include <unistd.h>

enum { C_FREE, C_CONNECTING, C_ACTIVE, C_HOLD };

struct lc {
	int fd, state, got_any;
	int round;
	size_t want, sent, recvd; /* this round */
	uint64_t off;             /* stream offset of this round's start */
};

struct lstate {
	const tload_opts *o;
	tload_result r;
	struct lc *c;
	int ep, connecting, to_open, released;
	uint64_t rng, stream;
	char *sbuf, *rbuf;
};

static uint32_t rnd(struct lstate *s)
{
	s->rng ^= s->rng << 13;
	s->rng ^= s->rng >> 7;
	s->rng ^= s->rng << 17;
	return (uint32_t)(s->rng >> 11);
}

static void set_events(struct lstate *s, struct lc *c, uint32_t ev)
{
	struct epoll_event e = { .events = ev, .data.ptr = c };

	epoll_ctl(s->ep, EPOLL_CTL_MOD, c->fd, &e);
}

static void start_round(struct lstate *s, struct lc *c)
{
	c->want = s->o->soak_ms ? 1 + rnd(s) % s->o->size : s->o->size;
	c->sent = c->recvd = 0;
	c->off = s->stream;
	s->stream += c->want;
	set_events(s, c, EPOLLIN | EPOLLOUT);
}

static int open_conn(struct lstate *s, struct lc *c)
{
	struct sockaddr_storage ss;
	socklen_t len = t_loopback(AF_INET, s->o->port, &ss);
	struct epoll_event e = { .events = EPOLLOUT, .data.ptr = c };
	int one = 1;

	memset(c, 0, sizeof(*c));
	c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (c->fd < 0) {
		s->r.setup_error = errno;
		return -1;
	}
	setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (connect(c->fd, (struct sockaddr *)&ss, len) < 0 &&
	    errno != EINPROGRESS) {
		s->r.connect_errors++;
		close(c->fd);
		return -1;
	}
	c->state = C_CONNECTING;
	s->connecting++;
	epoll_ctl(s->ep, EPOLL_CTL_ADD, c->fd, &e);
	return 0;
}

/* The connection is over; `reopen` opens another in its place (soak mode
 * refills free slots by itself). */
static void end_conn(struct lstate *s, struct lc *c, int *tally, int reopen)
{
	if (c->state == C_CONNECTING)
		s->connecting--;
	close(c->fd);
	c->state = C_FREE;
	if (tally)
		(*tally)++;
	if (reopen && !s->o->soak_ms)
		s->to_open++;
}

static void kill_conn(struct lstate *s, struct lc *c)
{
	if (rnd(s) % 2) {
		struct linger lg = { 1, 0 };

		setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	}
	end_conn(s, c, &s->r.killed, 1);
}

static void round_done(struct lstate *s, struct lc *c, uint64_t now,
		       uint64_t end)
{
	s->r.rounds++;
	if (s->o->soak_ms ? now < end : ++c->round < s->o->rounds) {
		start_round(s, c);
		return;
	}
	if (s->o->hold_fd >= 0 && !s->released) {
		c->state = C_HOLD;
		set_events(s, c, EPOLLIN);
		return;
	}
	end_conn(s, c, &s->r.ok, 0);
}

static void broke(struct lstate *s, struct lc *c)
{
	int retry = !c->got_any && s->o->retry_aborted;

	end_conn(s, c, c->got_any ? &s->r.failed : &s->r.aborted, retry);
}

static void on_event(struct lstate *s, struct lc *c, uint32_t ev,
		     uint64_t now, uint64_t end)
{
	if (c->state == C_CONNECTING) {
		int err = 0;
		socklen_t l = sizeof(err);

		getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &l);
		if (err) {
			s->r.connect_errors++;
			end_conn(s, c, NULL, 0);
			return;
		}
		s->connecting--;
		c->state = C_ACTIVE;
		if (s->o->rounds == 0 && !s->o->soak_ms) {
			round_done(s, c, now, end);
			return;
		}
		start_round(s, c);
		return;
	}
	if (c->state == C_HOLD) {
		char b;

		if (read(c->fd, &b, 1) <= 0 || s->released)
			end_conn(s, c, &s->r.ok, 0);
		return;
	}
	if ((ev & EPOLLOUT) && c->sent < c->want) {
		size_t n = c->want - c->sent;
		ssize_t w;

		if (n > 65536)
			n = 65536;
		t_pat_fill(s->sbuf, n, c->off + c->sent);
		w = send(c->fd, s->sbuf, n, MSG_NOSIGNAL);
		if (w < 0 && errno != EAGAIN) {
			broke(s, c);
			return;
		}
		if (w > 0)
			c->sent += (size_t)w;
		if (c->sent == c->want) {
			set_events(s, c, EPOLLIN);
			if (s->o->soak_ms &&
			    rnd(s) % 1000 < s->o->rst_permille + s->o->close_permille) {
				kill_conn(s, c);
				return;
			}
		}
	}
	if (ev & (EPOLLIN | EPOLLERR | EPOLLHUP)) {
		ssize_t n = recv(c->fd, s->rbuf, 65536, 0);

		if (n < 0 && errno == EAGAIN)
			return;
		if (n <= 0 || c->recvd + (size_t)n > c->sent) {
			broke(s, c);
			return;
		}
		if (t_pat_check(s->rbuf, (size_t)n, c->off + c->recvd) !=
		    (size_t)n)
			s->r.mismatches++;
		c->got_any = 1;
		c->recvd += (size_t)n;
		s->r.bytes += (uint64_t)n;
		if (c->recvd == c->want)
			round_done(s, c, now, end);
	}
}

static void release_held(struct lstate *s)
{
	s->released = 1;
	for (int i = 0; i < s->o->conns; i++)
		if (s->c[i].state == C_HOLD)
			end_conn(s, &s->c[i], &s->r.ok, 0);
}

/* Open connections into free slots, at most max_connecting at once. */
static void fill(struct lstate *s, uint64_t now, uint64_t end)
{
	int maxc = s->o->max_connecting ? s->o->max_connecting : 128;

	for (int i = 0; i < s->o->conns && s->connecting < maxc; i++) {
		if (s->c[i].state != C_FREE)
			continue;
		if (s->o->soak_ms ? now >= end : s->to_open == 0)
			break;
		if (!s->o->soak_ms)
			s->to_open--;
		if (open_conn(s, &s->c[i]) < 0 && s->r.setup_error)
			break;
	}
}

static int active(const struct lstate *s)
{
	for (int i = 0; i < s->o->conns; i++)
		if (s->c[i].state != C_FREE)
			return 1;
	return 0;
}

static void client_main(const tload_opts *o, int wfd)
{
	struct lstate s = { .o = o, .rng = o->seed * 2654435761ull + 1 };
	struct epoll_event evs[256], he = { .events = EPOLLIN };
	uint64_t start = t_now_ns(), end = start + (uint64_t)o->soak_ms * T_MS;

	if (o->nofile) {
		/* The soft limit is what counts; the hard one is left where
		 * it is unless it is lower (valgrind refuses a change to it,
		 * and the client only needs the room). */
		struct rlimit rl;

		if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
			s.r.setup_error = errno;
		rl.rlim_cur = o->nofile;
		if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < o->nofile)
			rl.rlim_max = o->nofile;
		if (!s.r.setup_error && setrlimit(RLIMIT_NOFILE, &rl) < 0)
			s.r.setup_error = errno;
	}
	s.c = calloc((size_t)o->conns, sizeof(*s.c));
	s.sbuf = malloc(65536);
	s.rbuf = malloc(65536);
	s.stream = (uint64_t)o->seed << 40;
	s.to_open = o->conns;
	s.ep = epoll_create1(EPOLL_CLOEXEC);
	if (o->hold_fd >= 0)
		epoll_ctl(s.ep, EPOLL_CTL_ADD, o->hold_fd, &he);
	while (!s.r.setup_error) {
		uint64_t now = t_now_ns();

		if (now - start > (uint64_t)o->limit_ms * T_MS) {
			s.r.timed_out = 1;
			break;
		}
		fill(&s, now, end);
		if (!active(&s) && (o->soak_ms ? now >= end : s.to_open == 0))
			break;
		int n = epoll_wait(s.ep, evs, 256, 50);

		for (int i = 0; i < n; i++) {
			if (evs[i].data.ptr == NULL) {
				release_held(&s);
				epoll_ctl(s.ep, EPOLL_CTL_DEL, o->hold_fd, NULL);
				continue;
			}
			struct lc *c = evs[i].data.ptr;

			if (c->state != C_FREE)
				on_event(&s, c, evs[i].events, now, end);
		}
	}
	if (write(wfd, &s.r, sizeof(s.r)) != (ssize_t)sizeof(s.r))
		_exit(3);
	_exit(0);
}

pid_t tload_spawn(const tload_opts *o, int *res_fd)
{
	int p[2];
	pid_t pid;

	cr_assert_eq(pipe2(p, O_CLOEXEC), 0);
	pid = fork();
	cr_assert(pid >= 0, "fork: %s", strerror(errno));
	if (pid == 0) {
		t_die_with_parent();
		close(p[0]);
		client_main(o, p[1]);
	}
	close(p[1]);
	*res_fd = p[0];
	return pid;
}

bool tload_ready(int res_fd)
{
	struct pollfd pf = { .fd = res_fd, .events = POLLIN };

	return poll(&pf, 1, 0) == 1;
}

void tload_finish(rio_loop *loop, pid_t pid, int res_fd, unsigned limit_ms,
		  tload_result *out)
{
	int st = 0;

	if (loop) {
		T_RUN_UNTIL(loop, tload_ready(res_fd), limit_ms);
	} else {
		struct pollfd pf = { .fd = res_fd, .events = POLLIN };

		cr_assert_eq(poll(&pf, 1, (int)limit_ms), 1,
			     "the load client did not finish in %u ms",
			     limit_ms);
	}
	cr_assert_eq(read(res_fd, out, sizeof(*out)), (ssize_t)sizeof(*out),
		     "the load client died without a result");
	close(res_fd);
	cr_assert_eq(waitpid(pid, &st, 0), pid);
	cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0,
		  "load client exit status %d", st);
	cr_assert_eq(out->setup_error, 0, "load client setup: %s",
		     strerror(out->setup_error));
	cr_assert_eq(out->timed_out, 0, "load client hit its time limit "
		     "(ok %d failed %d aborted %d)", out->ok, out->failed,
		     out->aborted);
}

void tload_all_at_once(rio_loop *loop, tsrv *up, tload_opts *o,
		       tload_result *res)
{
	uint64_t all = (uint64_t)o->conns * (uint64_t)o->rounds * o->size;
	int hold[2], rfd;
	pid_t pid;

	cr_assert_eq(pipe(hold), 0);
	o->hold_fd = hold[0];
	pid = tload_spawn(o, &rfd);
	close(hold[0]);
	T_RUN_UNTIL(loop, up->bytes == all || tload_ready(rfd), o->limit_ms);
	cr_log_info("%d connections open at once on the server, %llu bytes "
		    "echoed", up->live, (unsigned long long)up->bytes);
	cr_assert_eq(up->live, o->conns, "not all connections were open at "
		     "once");
	cr_assert_eq(write(hold[1], "g", 1), 1);
	tload_finish(loop, pid, rfd, 60000, res);
	close(hold[1]);
	cr_assert_eq(res->ok, o->conns, "ok %d failed %d aborted %d connect "
		     "errors %d", res->ok, res->failed, res->aborted,
		     res->connect_errors);
	cr_assert_eq(res->mismatches, 0);
	cr_assert_eq(res->rounds, (uint64_t)o->conns * (uint64_t)o->rounds);
}

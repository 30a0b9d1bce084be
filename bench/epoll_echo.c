/*
 * rio-epoll-echo — the baseline: a hand-written, single-threaded,
 * edge-triggered epoll echo server, written the way a careful C programmer
 * writes one when speed matters. Everything ringio is compared against.
 *
 * Per connection: one buffer; read until the socket is empty, writing each
 * chunk straight back. If the socket will not take a whole chunk, keep the
 * rest, switch interest to EPOLLOUT and stop reading until it has drained
 * (backpressure: a client that does not read cannot make us buffer more).
 */
#define _GNU_SOURCE
#include "bench_util.h"

#include <errno.h>
#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <unistd.h>

#define MAX_EVENTS 512
#define DEFAULT_BUF (64 * 1024)

struct conn {
	int fd;
	bool out_mode;  /* waiting for EPOLLOUT; not reading */
	size_t off;     /* buf[off, len) still has to go back */
	size_t len;
	struct conn *prev, *next; /* all connections, for shutdown */
	unsigned char buf[];
};

struct server {
	int ep;
	int lfd;
	int sfd;
	size_t buf_size;
	struct conn *conns;
	unsigned long long accepted;
	unsigned long long partial_writes; /* times we had to wait for EPOLLOUT */
};

/* epoll data for the two non-connection fds; never dereferenced. */
static char listener_tag, signal_tag;

static void usage(FILE *f)
{
	fprintf(f, "usage: rio-epoll-echo --port P [--addr A] [--cpu C] "
		   "[--buf-size BYTES]\n"
		   "  --addr      numeric address to listen on (default 127.0.0.1)\n"
		   "  --buf-size  per-connection buffer (default 65536)\n");
}

static void conn_close(struct server *s, struct conn *c)
{
	/* close() drops the epoll registration: this fd is never dup'ed. */
	close(c->fd);
	if (c->prev)
		c->prev->next = c->next;
	else
		s->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	free(c);
}

static int set_interest(struct server *s, struct conn *c, uint32_t ev)
{
	struct epoll_event e = { .events = ev | EPOLLET, .data.ptr = c };

	return epoll_ctl(s->ep, EPOLL_CTL_MOD, c->fd, &e);
}

/* Send buf[off, len). 1: all gone, 0: socket full, -1: connection dead. */
static int flush(struct conn *c)
{
	while (c->off < c->len) {
		ssize_t n = send(c->fd, c->buf + c->off, c->len - c->off,
				 MSG_NOSIGNAL);

		if (n >= 0)
			c->off += (size_t)n;
		else if (errno == EAGAIN)
			return 0;
		else if (errno != EINTR)
			return -1;
	}
	return 1;
}

/*
 * Read and echo until the socket is empty or full. `strict`: the caller
 * knows nothing about the socket's state, so read until EAGAIN. Otherwise a
 * short read proves the socket was empty: any byte arriving later raises a
 * new edge, so the read that would only return EAGAIN is skipped (nginx
 * does the same). A hang-up raises no new edge, hence EPOLLRDHUP -> strict.
 * Returns 0, or -1 if the connection must be closed.
 */
static int echo(struct server *s, struct conn *c, bool strict)
{
	for (;;) {
		ssize_t n = recv(c->fd, c->buf, s->buf_size, 0);
		int r;

		if (n == 0)
			return -1;
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return errno == EAGAIN ? 0 : -1;
		}
		c->off = 0;
		c->len = (size_t)n;
		r = flush(c);
		if (r < 0)
			return -1;
		if (r == 0) {
			s->partial_writes++;
			c->out_mode = true;
			return set_interest(s, c, EPOLLOUT);
		}
		if ((size_t)n < s->buf_size && !strict)
			return 0;
	}
}

static int on_writable(struct server *s, struct conn *c)
{
	int r = flush(c);

	if (r <= 0)
		return r;
	/* Drained: read what queued up meanwhile, then listen again. Reading
	 * first saves the wakeup that re-arming EPOLLIN on a readable socket
	 * would cause; data that lands after the read is caught by EPOLL_CTL_MOD,
	 * which reports a socket that is already readable. */
	c->out_mode = false;
	if (echo(s, c, true) < 0)
		return -1;
	if (c->out_mode)
		return 0;
	return set_interest(s, c, EPOLLIN | EPOLLRDHUP);
}

static void on_conn(struct server *s, struct conn *c, uint32_t events)
{
	int r;

	if (c->out_mode)
		r = (events & (EPOLLOUT | EPOLLERR | EPOLLHUP)) ?
			    on_writable(s, c) :
			    0;
	else
		r = echo(s, c, events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR));
	if (r < 0)
		conn_close(s, c);
}

static void add_conn(struct server *s, int fd)
{
	struct conn *c = malloc(sizeof(*c) + s->buf_size);
	struct epoll_event e = { .events = EPOLLIN | EPOLLRDHUP | EPOLLET };

	if (c == NULL) {
		close(fd);
		return;
	}
	*c = (struct conn){ .fd = fd, .next = s->conns };
	e.data.ptr = c;
	bench_set_nodelay(fd);
	if (epoll_ctl(s->ep, EPOLL_CTL_ADD, fd, &e) != 0) {
		close(fd);
		free(c);
		return;
	}
	if (s->conns)
		s->conns->prev = c;
	s->conns = c;
	s->accepted++;
}

static void on_accept(struct server *s)
{
	for (;;) {
		int fd = accept4(s->lfd, NULL, NULL,
				 SOCK_NONBLOCK | SOCK_CLOEXEC);

		if (fd >= 0) {
			add_conn(s, fd);
			continue;
		}
		if (errno == EAGAIN)
			return;
		if (errno == EINTR || errno == ECONNABORTED || errno == EPROTO)
			continue;
		/* EMFILE and friends: the queue keeps the connections; the next
		 * arrival raises a new edge. Good enough for a benchmark. */
		perror("rio-epoll-echo: accept4");
		return;
	}
}

static int parse_opts(int argc, char **argv, const char **addr, int *port,
		      int *cpu, size_t *buf_size)
{
	static const struct option longopts[] = {
		{ "port", required_argument, NULL, 'p' },
		{ "addr", required_argument, NULL, 'a' },
		{ "cpu", required_argument, NULL, 'c' },
		{ "buf-size", required_argument, NULL, 'b' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	long v;
	int o;

	while ((o = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
		if (o == 'a')
			*addr = optarg;
		else if (o == 'p' && !bench_parse_long(optarg, 1, 65535, &v))
			*port = (int)v;
		else if (o == 'c' && !bench_parse_long(optarg, 0, 4095, &v))
			*cpu = (int)v;
		else if (o == 'b' && !bench_parse_long(optarg, 1, 1L << 26, &v))
			*buf_size = (size_t)v;
		else if (o == 'h') {
			usage(stdout);
			exit(0);
		} else {
			if (optarg)
				fprintf(stderr, "rio-epoll-echo: bad value '%s'\n",
					optarg);
			usage(stderr);
			return -1;
		}
	}
	if (*port == 0 || optind < argc) {
		usage(stderr);
		return -1;
	}
	return 0;
}

static int server_init(struct server *s, const char *addr, int port)
{
	struct epoll_event el = { .events = EPOLLIN | EPOLLET,
				  .data.ptr = &listener_tag };
	struct epoll_event es = { .events = EPOLLIN, .data.ptr = &signal_tag };

	s->sfd = bench_signalfd();
	s->lfd = bench_listen(addr, port, 1);
	if (s->lfd < 0) {
		fprintf(stderr, "rio-epoll-echo: listen on %s port %d: %s\n",
			addr, port, strerror(-s->lfd));
		return -1;
	}
	s->ep = epoll_create1(EPOLL_CLOEXEC);
	if (s->sfd < 0 || s->ep < 0 ||
	    epoll_ctl(s->ep, EPOLL_CTL_ADD, s->lfd, &el) != 0 ||
	    epoll_ctl(s->ep, EPOLL_CTL_ADD, s->sfd, &es) != 0) {
		perror("rio-epoll-echo: setup");
		return -1;
	}
	return 0;
}

static int server_loop(struct server *s)
{
	struct epoll_event evs[MAX_EVENTS];

	for (;;) {
		int n = epoll_wait(s->ep, evs, MAX_EVENTS, -1);

		if (n < 0 && errno != EINTR) {
			perror("rio-epoll-echo: epoll_wait");
			return 1;
		}
		for (int i = 0; i < n; i++) {
			void *p = evs[i].data.ptr;

			if (p == &signal_tag)
				return 0;
			if (p == &listener_tag)
				on_accept(s);
			else
				on_conn(s, p, evs[i].events);
		}
	}
}

int main(int argc, char **argv)
{
	struct server s = { .ep = -1, .lfd = -1, .sfd = -1,
			    .buf_size = DEFAULT_BUF };
	const char *addr = "127.0.0.1";
	int port = 0, cpu = -1, err, status;

	if (parse_opts(argc, argv, &addr, &port, &cpu, &s.buf_size) != 0)
		return BENCH_EXIT_USAGE;
	if (cpu >= 0 && (err = bench_pin_cpu(cpu)) != 0) {
		fprintf(stderr, "rio-epoll-echo: cannot pin to CPU %d: %s\n",
			cpu, strerror(-err));
		return BENCH_EXIT_USAGE;
	}
	if (server_init(&s, addr, port) != 0)
		return 1;
	status = server_loop(&s);
	while (s.conns)
		conn_close(&s, s.conns);
	close(s.ep);
	close(s.lfd);
	close(s.sfd);
	fprintf(stderr, "rio-epoll-echo: accepted=%llu partial_writes=%llu\n",
		s.accepted, s.partial_writes);
	return status;
}

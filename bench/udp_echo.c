/*
 * rio-udp-echo — the baseline for datagrams: a hand-written, single-
 * threaded UDP echo server on edge-triggered epoll, batched both ways:
 * recvmmsg takes up to --batch datagrams (each with its sender) in one
 * call, sendmmsg sends them back in one call. The msghdrs are reset before
 * every receive (msg_namelen is in-out), as such a server must.
 *
 * It also listens on TCP on the same port, accepting and closing at once,
 * only so that bench/run.sh sees it is up (its probe is a TCP connect).
 * SIGINT/SIGTERM end it (signalfd), printing datagrams=N.
 */
#define _GNU_SOURCE
#include "bench_util.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_BATCH 256
#define DGRAM_MAX 65536

struct srv {
	int fd, lfd, sfd, ep;
	unsigned batch;
	struct mmsghdr *mm;
	struct iovec *iov;
	struct sockaddr_storage *peer;
	unsigned char *mem;
	unsigned pend, pend_off; /* received, not yet all sent back */
	unsigned long long datagrams;
};

static void usage(FILE *f)
{
	fprintf(f, "usage: rio-udp-echo --port P [--addr A] [--batch N]\n"
		   "  --addr   numeric address (default 127.0.0.1)\n"
		   "  --batch  datagrams per recvmmsg / sendmmsg, 1..%d "
		   "(default 32)\n", MAX_BATCH);
}

/* Send back what the last recvmmsg took; 0 when all went, -1 when the
 * socket is full (EPOLLOUT resumes it). */
static int flush(struct srv *s)
{
	while (s->pend_off < s->pend) {
		int n = sendmmsg(s->fd, s->mm + s->pend_off,
				 s->pend - s->pend_off, MSG_DONTWAIT);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			return -1;
		if (n < 0) { /* the one at pend_off cannot go: drop it */
			s->pend_off++;
			continue;
		}
		s->pend_off += (unsigned)n;
	}
	s->pend = s->pend_off = 0;
	return 0;
}

static void on_readable(struct srv *s)
{
	for (;;) {
		if (s->pend && flush(s) < 0)
			return;
		for (unsigned i = 0; i < s->batch; i++) {
			s->iov[i].iov_len = DGRAM_MAX;
			s->mm[i].msg_hdr = (struct msghdr){
				.msg_name = &s->peer[i],
				.msg_namelen = sizeof s->peer[i],
				.msg_iov = &s->iov[i],
				.msg_iovlen = 1,
			};
		}
		int n = recvmmsg(s->fd, s->mm, s->batch, MSG_DONTWAIT, NULL);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return; /* EAGAIN: the next edge brings more */
		s->datagrams += (unsigned)n;
		for (int i = 0; i < n; i++)
			s->iov[i].iov_len = s->mm[i].msg_len;
		s->pend = (unsigned)n;
		s->pend_off = 0;
		if (flush(s) < 0)
			return;
	}
}

static int setup(struct srv *s, const char *addr, int port)
{
	struct sockaddr_storage ss;
	socklen_t len;
	if (bench_sockaddr(addr, port, &ss, &len) != 0) {
		fprintf(stderr, "rio-udp-echo: --addr must be numeric: '%s'\n",
			addr);
		return BENCH_EXIT_USAGE;
	}
	s->mm = calloc(s->batch, sizeof *s->mm);
	s->iov = calloc(s->batch, sizeof *s->iov);
	s->peer = calloc(s->batch, sizeof *s->peer);
	s->mem = malloc((size_t)s->batch * DGRAM_MAX);
	if (!s->mm || !s->iov || !s->peer || !s->mem)
		return 1;
	for (unsigned i = 0; i < s->batch; i++)
		s->iov[i].iov_base = s->mem + (size_t)i * DGRAM_MAX;
	s->fd = socket(ss.ss_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (s->fd < 0 || bind(s->fd, (struct sockaddr *)&ss, len) != 0) {
		perror("rio-udp-echo: udp socket");
		return 1;
	}
	s->lfd = bench_listen(addr, port, 1);
	s->sfd = bench_signalfd();
	s->ep = epoll_create1(EPOLL_CLOEXEC);
	if (s->lfd < 0 || s->sfd < 0 || s->ep < 0) {
		fprintf(stderr, "rio-udp-echo: setup failed\n");
		return 1;
	}
	struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLET,
				 .data.fd = s->fd};
	epoll_ctl(s->ep, EPOLL_CTL_ADD, s->fd, &ev);
	ev = (struct epoll_event){.events = EPOLLIN, .data.fd = s->lfd};
	epoll_ctl(s->ep, EPOLL_CTL_ADD, s->lfd, &ev);
	ev = (struct epoll_event){.events = EPOLLIN, .data.fd = s->sfd};
	epoll_ctl(s->ep, EPOLL_CTL_ADD, s->sfd, &ev);
	return 0;
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{"port", required_argument, NULL, 'p'},
		{"addr", required_argument, NULL, 'a'},
		{"batch", required_argument, NULL, 'b'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	const char *addr = "127.0.0.1";
	long port = 0, batch = 32;
	int c;
	while ((c = getopt_long(argc, argv, "p:a:b:h", longopts, NULL)) != -1) {
		switch (c) {
		case 'p':
			if (bench_parse_long(optarg, 1, 65535, &port) != 0)
				goto bad;
			break;
		case 'a':
			addr = optarg;
			break;
		case 'b':
			if (bench_parse_long(optarg, 1, MAX_BATCH, &batch) != 0)
				goto bad;
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			goto bad;
		}
	}
	if (optind < argc || port == 0)
		goto bad;
	struct srv s = {.batch = (unsigned)batch};
	int rc = setup(&s, addr, (int)port);
	if (rc)
		return rc;
	for (int done = 0; !done;) {
		struct epoll_event evs[16];
		int n = epoll_wait(s.ep, evs, 16, -1);
		if (n < 0 && errno != EINTR) {
			perror("rio-udp-echo: epoll_wait");
			return 1;
		}
		for (int i = 0; i < n; i++) {
			int fd = evs[i].data.fd;
			if (fd == s.sfd) {
				done = 1;
			} else if (fd == s.lfd) {
				int a = accept4(s.lfd, NULL, NULL, SOCK_CLOEXEC);
				if (a >= 0)
					close(a);
			} else {
				on_readable(&s);
			}
		}
	}
	printf("rio-udp-echo: datagrams=%llu\n", s.datagrams);
	return 0;
bad:
	usage(stderr);
	return BENCH_EXIT_USAGE;
}

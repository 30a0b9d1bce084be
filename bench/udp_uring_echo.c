/*
 * rio-udp-uring-echo — raw liburing's floor for datagrams, as
 * rio-uring-echo is for streams: single thread, no abstraction. One ring
 * (SINGLE_ISSUER|DEFER_TASKRUN where the kernel takes them), one multishot
 * recvmsg into a ring of provided buffers (each datagram laid out as
 * struct io_uring_recvmsg_out: header, sender, payload), and each
 * datagram sent back from its own buffer with IORING_OP_SEND and the
 * sender's address (Linux 6.0). One io_uring_submit_and_wait() per turn,
 * CQEs reaped in a batch, buffers given back to the kernel once per turn.
 * The same work per datagram as ringio-echo --udp on io_uring, without
 * ringio: what is left of a gap between the two is ringio's.
 *
 * It also listens on TCP on the same port, accepting and closing at once,
 * only so that bench/run.sh sees it is up (its probe is a TCP connect).
 * SIGINT/SIGTERM end it (signalfd), printing datagrams=N.
 */
#define _GNU_SOURCE
#include "bench_util.h"

#include <errno.h>
#include <getopt.h>
#include <liburing.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#define BGID 1
#define NBUFS 256                  /* a power of two: the buffer ring */
#define NAME_ROOM 128              /* a sockaddr_storage */
#define HEAD (sizeof(struct io_uring_recvmsg_out) + NAME_ROOM)
#define BUF_SIZE (HEAD + 65536)    /* any datagram, whole */

enum tag { T_RECV = 1, T_SEND, T_LISTEN, T_SIGNAL };

struct srv {
	struct io_uring ring;
	int fd, lfd, sfd;
	struct msghdr mh; /* the recvmsg's shape: name room, no control */
	struct io_uring_buf_ring *br;
	unsigned char *mem;
	unsigned returned; /* buffers added since the last advance */
	unsigned long long datagrams;
	int done;
};

static uint64_t ud(enum tag t, unsigned bid)
{
	return (uint64_t)t | (uint64_t)bid << 8;
}

static struct io_uring_sqe *sqe_get(struct srv *s)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&s->ring);
	if (!sqe) { /* full: flush and take one */
		io_uring_submit(&s->ring);
		sqe = io_uring_get_sqe(&s->ring);
	}
	return sqe;
}

static void buf_back(struct srv *s, unsigned bid)
{
	io_uring_buf_ring_add(s->br, s->mem + (size_t)bid * BUF_SIZE, BUF_SIZE,
			      (unsigned short)bid,
			      io_uring_buf_ring_mask(NBUFS), (int)s->returned);
	s->returned++;
}

static void arm_recv(struct srv *s)
{
	struct io_uring_sqe *sqe = sqe_get(s);
	io_uring_prep_recvmsg_multishot(sqe, s->fd, &s->mh, MSG_TRUNC);
	sqe->flags |= IOSQE_BUFFER_SELECT;
	sqe->buf_group = BGID;
	io_uring_sqe_set_data64(sqe, ud(T_RECV, 0));
}

static void arm_poll(struct srv *s, int fd, enum tag t)
{
	struct io_uring_sqe *sqe = sqe_get(s);
	io_uring_prep_poll_multishot(sqe, fd, POLLIN);
	io_uring_sqe_set_data64(sqe, ud(t, 0));
}

/* A datagram: back to its sender from its own buffer. */
static void on_recv(struct srv *s, const struct io_uring_cqe *cqe)
{
	if (cqe->flags & IORING_CQE_F_BUFFER) {
		unsigned bid = cqe->flags >> IORING_CQE_BUFFER_SHIFT;
		unsigned char *b = s->mem + (size_t)bid * BUF_SIZE;
		struct io_uring_recvmsg_out *o =
			io_uring_recvmsg_validate(b, cqe->res, &s->mh);
		if (o && !(o->flags & MSG_TRUNC)) {
			s->datagrams++;
			struct io_uring_sqe *sqe = sqe_get(s);
			io_uring_prep_send(sqe, s->fd,
					   io_uring_recvmsg_payload(o, &s->mh),
					   io_uring_recvmsg_payload_length(
						   o, cqe->res, &s->mh),
					   0);
			sqe->addr2 = (uint64_t)(uintptr_t)io_uring_recvmsg_name(o);
			sqe->addr_len = (uint16_t)o->namelen;
			io_uring_sqe_set_data64(sqe, ud(T_SEND, bid));
		} else {
			buf_back(s, bid);
		}
	}
	if (!(cqe->flags & IORING_CQE_F_MORE)) /* -ENOBUFS, or the kernel's */
		arm_recv(s);
}

static void dispatch(struct srv *s, const struct io_uring_cqe *cqe)
{
	uint64_t d = io_uring_cqe_get_data64(cqe);
	switch ((enum tag)(d & 0xff)) {
	case T_RECV:
		on_recv(s, cqe);
		break;
	case T_SEND:
		if (cqe->res == -EINVAL) {
			fprintf(stderr, "rio-udp-uring-echo: IORING_OP_SEND "
					"with an address needs Linux 6.0\n");
			s->done = 1;
		}
		buf_back(s, (unsigned)(d >> 8));
		break;
	case T_LISTEN: {
		int a = accept4(s->lfd, NULL, NULL, SOCK_CLOEXEC);
		if (a >= 0)
			close(a);
		if (!(cqe->flags & IORING_CQE_F_MORE))
			arm_poll(s, s->lfd, T_LISTEN);
		break;
	}
	case T_SIGNAL:
		s->done = 1;
		break;
	}
}

static int setup(struct srv *s, const char *addr, int port)
{
	static const unsigned tries[] = {
		IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN,
		IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_COOP_TASKRUN,
		IORING_SETUP_COOP_TASKRUN,
		0,
	};
	struct sockaddr_storage ss;
	socklen_t len;
	if (bench_sockaddr(addr, port, &ss, &len) != 0) {
		fprintf(stderr, "rio-udp-uring-echo: --addr must be numeric: "
				"'%s'\n", addr);
		return BENCH_EXIT_USAGE;
	}
	int r = -EINVAL;
	for (size_t i = 0; i < sizeof tries / sizeof *tries && r == -EINVAL;
	     i++) {
		struct io_uring_params p = {.flags = tries[i] |
						     IORING_SETUP_CQSIZE,
					    .cq_entries = 4 * NBUFS};
		r = io_uring_queue_init_params(NBUFS, &s->ring, &p);
	}
	if (r < 0) {
		fprintf(stderr, "rio-udp-uring-echo: io_uring: %s\n",
			strerror(-r));
		return 1;
	}
	/* liburing 2.3 has no io_uring_setup_buf_ring(): map it ourselves */
	size_t page = (size_t)sysconf(_SC_PAGESIZE);
	size_t br_bytes = (NBUFS * sizeof(struct io_uring_buf) + page - 1) &
			  ~(page - 1);
	s->br = mmap(NULL, br_bytes, PROT_READ | PROT_WRITE,
		     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	s->mem = mmap(NULL, (size_t)NBUFS * BUF_SIZE, PROT_READ | PROT_WRITE,
		      MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
	if (s->br == MAP_FAILED || s->mem == MAP_FAILED)
		return 1;
	struct io_uring_buf_reg reg = {.ring_addr = (uint64_t)(uintptr_t)s->br,
				       .ring_entries = NBUFS,
				       .bgid = BGID};
	r = io_uring_register_buf_ring(&s->ring, &reg, 0);
	if (r != 0) {
		fprintf(stderr, "rio-udp-uring-echo: buffer ring: %s\n",
			strerror(-r));
		return 1;
	}
	io_uring_buf_ring_init(s->br);
	for (unsigned i = 0; i < NBUFS; i++)
		buf_back(s, i);
	io_uring_buf_ring_advance(s->br, (int)s->returned);
	s->returned = 0;

	s->fd = socket(ss.ss_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
		       0);
	if (s->fd < 0 || bind(s->fd, (struct sockaddr *)&ss, len) != 0) {
		perror("rio-udp-uring-echo: udp socket");
		return 1;
	}
	s->lfd = bench_listen(addr, port, 1);
	s->sfd = bench_signalfd();
	if (s->lfd < 0 || s->sfd < 0) {
		fprintf(stderr, "rio-udp-uring-echo: setup failed\n");
		return 1;
	}
	s->mh.msg_namelen = NAME_ROOM;
	arm_recv(s);
	arm_poll(s, s->lfd, T_LISTEN);
	arm_poll(s, s->sfd, T_SIGNAL);
	return 0;
}

static void usage(FILE *f)
{
	fprintf(f, "usage: rio-udp-uring-echo --port P [--addr A]\n"
		   "  --addr   numeric address (default 127.0.0.1)\n");
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{"port", required_argument, NULL, 'p'},
		{"addr", required_argument, NULL, 'a'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	const char *addr = "127.0.0.1";
	long port = 0;
	int c;
	while ((c = getopt_long(argc, argv, "p:a:h", longopts, NULL)) != -1) {
		switch (c) {
		case 'p':
			if (bench_parse_long(optarg, 1, 65535, &port) != 0)
				goto bad;
			break;
		case 'a':
			addr = optarg;
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
	static struct srv s;
	int rc = setup(&s, addr, (int)port);
	if (rc)
		return rc;
	while (!s.done) {
		int r = io_uring_submit_and_wait(&s.ring, 1);
		if (r < 0 && r != -EINTR && r != -EAGAIN && r != -EBUSY) {
			fprintf(stderr, "rio-udp-uring-echo: enter: %s\n",
				strerror(-r));
			return 1;
		}
		struct io_uring_cqe *cqes[64];
		unsigned n;
		while ((n = io_uring_peek_batch_cqe(&s.ring, cqes, 64)) > 0) {
			for (unsigned i = 0; i < n; i++)
				dispatch(&s, cqes[i]);
			io_uring_cq_advance(&s.ring, n);
		}
		if (s.returned) { /* the turn's buffers, in one publish */
			io_uring_buf_ring_advance(s.br, (int)s.returned);
			s.returned = 0;
		}
	}
	printf("rio-udp-uring-echo: datagrams=%llu\n", s.datagrams);
	return 0;
bad:
	usage(stderr);
	return BENCH_EXIT_USAGE;
}

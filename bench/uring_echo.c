/*
 * rio-uring-echo — a raw liburing echo server: the userland floor that
 * ringio's io_uring backend is measured against. Single thread, no
 * abstraction: one ring (SINGLE_ISSUER|DEFER_TASKRUN where the kernel takes
 * them), a multishot accept, one multishot recv per connection into a ring
 * of provided buffers, and the received buffer itself sent straight back.
 * One io_uring_submit_and_wait() per loop turn, CQEs reaped in a batch,
 * returned buffers published to the kernel once per turn.
 *
 * Ordering: a stream socket must see its echo in order, but two sends in
 * flight on one socket may complete out of order (the first can be parked
 * on poll while the second goes through). So each connection keeps a FIFO
 * of received buffers and has at most one send in flight; a short send is
 * resubmitted from where it stopped.
 */
#define _GNU_SOURCE
#include "bench_util.h"

#include <assert.h>
#include <errno.h>
#include <getopt.h>
#include <liburing.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define BGID 1
#define SQ_ENTRIES 4096
/* Room for several CQEs per connection per turn without overflowing. */
#define CQ_ENTRIES 16384
/*
 * 1024 x 64 KiB: a 64 KiB message usually lands in one buffer, so it costs
 * one recv and one send completion (16 KiB buffers took ~40% more CPU per
 * round trip at 64 KiB); 1024 leaves room for 500 connections whose
 * messages arrive split in two.
 */
#define DEFAULT_BUFS 1024
#define DEFAULT_BUF_SIZE (64 * 1024)
#define ACCEPT_RETRY_NS (10 * 1000 * 1000)
#define GET_SQE_TRIES 1000
/* Received buffers one connection may hold before its recv is paused. */
#define MAX_QUEUED 16

/* user_data: a connection pointer (8-byte aligned) with a tag in bits 0-2. */
enum tag {
	TAG_ACCEPT = 1,
	TAG_RECV,
	TAG_SEND,
	TAG_SIGNAL,
	TAG_RETRY,
	TAG_CANCEL,
};
#define TAG_MASK UINT64_C(7)

struct buf {
	uint32_t len;  /* bytes received into it */
	uint32_t off;  /* bytes already sent back */
	int32_t next;  /* next buffer id in its connection's queue, or -1 */
};

struct conn {
	int fd;
	bool recv_armed; /* a multishot recv is live */
	bool starved;    /* recv ended on ENOBUFS; waits on the starved list */
	bool send_busy;  /* a send of q_head is in flight */
	bool dead;       /* a send failed: drop data, wait for recv to end */
	bool rx_done;    /* EOF or a receive error: never re-arm */
	bool paused;     /* queue full: recv cancelled until it drains */
	unsigned queued; /* buffers in the queue */
	int32_t q_head, q_tail; /* received buffers still to send back */
	struct conn *prev, *next; /* all connections, for shutdown */
	struct conn *starved_next;
};

struct stats {
	unsigned long long turns, cqes, accepted, short_sends, enobufs, pauses;
};

struct server {
	struct io_uring ring;
	unsigned setup_flags;
	unsigned first_try; /* --setup: where ring_init() starts dropping flags */
	bool ring_ok;
	struct io_uring_buf_ring *br;
	size_t br_bytes;
	unsigned char *bufmem;
	struct buf *bufs;
	unsigned nbufs;
	unsigned buf_size;
	unsigned br_pending; /* buffers added since the last advance */
	unsigned held;       /* buffers out of the ring (in queues) */
	int lfd;
	int sfd;
	struct conn *conns;
	struct conn *starved_head, *starved_tail;
	struct __kernel_timespec retry_ts;
	bool stop;
	int status;
	struct stats st;
};

static uint64_t tagged(struct conn *c, enum tag t)
{
	return (uint64_t)(uintptr_t)c | (uint64_t)t;
}

/* A full SQ is flushed and retried: submission never fails for room. */
static struct io_uring_sqe *get_sqe(struct server *s)
{
	for (int i = 0; i < GET_SQE_TRIES; i++) {
		struct io_uring_sqe *sqe = io_uring_get_sqe(&s->ring);
		int r;

		if (sqe != NULL)
			return sqe;
		r = io_uring_submit(&s->ring);
		if (r < 0 && r != -EINTR && r != -EAGAIN && r != -EBUSY) {
			fprintf(stderr, "rio-uring-echo: submit: %s\n",
				strerror(-r));
			break;
		}
	}
	fprintf(stderr, "rio-uring-echo: FATAL: no SQE\n");
	exit(1);
}

/* ---- provided buffers --------------------------------------------- */

static unsigned char *buf_addr(const struct server *s, int bid)
{
	return s->bufmem + (size_t)bid * s->buf_size;
}

/* Give a buffer back; the kernel sees it at the next buf_publish(). */
static void buf_return(struct server *s, int bid)
{
	io_uring_buf_ring_add(s->br, buf_addr(s, bid), s->buf_size,
			      (unsigned short)bid,
			      io_uring_buf_ring_mask(s->nbufs),
			      (int)s->br_pending++);
	s->held--;
}

/* One release-store per turn, however many buffers came back. */
static void buf_publish(struct server *s)
{
	if (s->br_pending == 0)
		return;
	io_uring_buf_ring_advance(s->br, (int)s->br_pending);
	s->br_pending = 0;
}

/*
 * liburing 2.3 has no io_uring_setup_buf_ring(): map the ring ourselves
 * (page-aligned, as the kernel requires), register it, fill it.
 */
static int bufs_init(struct server *s)
{
	size_t page = (size_t)sysconf(_SC_PAGESIZE);
	size_t data = (size_t)s->nbufs * s->buf_size;
	struct io_uring_buf_reg reg = { 0 };
	int r;

	s->br_bytes = (s->nbufs * sizeof(struct io_uring_buf) + page - 1) &
		      ~(page - 1);
	s->br = mmap(NULL, s->br_bytes, PROT_READ | PROT_WRITE,
		     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	/* Populated up front: the ring hands buffers out round-robin, so
	 * without this the first pass over it pays a page fault per page, which
	 * in a VM can cost more than the echo itself. */
	s->bufmem = mmap(NULL, data, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
	s->bufs = calloc(s->nbufs, sizeof(*s->bufs));
	if (s->br == MAP_FAILED || s->bufmem == MAP_FAILED || s->bufs == NULL)
		return -ENOMEM;
	reg.ring_addr = (uint64_t)(uintptr_t)s->br;
	reg.ring_entries = s->nbufs;
	reg.bgid = BGID;
	r = io_uring_register_buf_ring(&s->ring, &reg, 0);
	if (r != 0)
		return r;
	io_uring_buf_ring_init(s->br);
	s->held = s->nbufs;
	for (unsigned i = 0; i < s->nbufs; i++)
		buf_return(s, (int)i);
	buf_publish(s);
	return 0;
}

/* ---- connections -------------------------------------------------- */

static void arm_recv(struct server *s, struct conn *c)
{
	struct io_uring_sqe *sqe = get_sqe(s);

	io_uring_prep_recv_multishot(sqe, c->fd, NULL, 0, 0);
	sqe->flags |= IOSQE_BUFFER_SELECT;
	sqe->buf_group = BGID;
	io_uring_sqe_set_data64(sqe, tagged(c, TAG_RECV));
	c->recv_armed = true;
}

static void send_head(struct server *s, struct conn *c)
{
	struct io_uring_sqe *sqe = get_sqe(s);
	struct buf *b = &s->bufs[c->q_head];

	io_uring_prep_send(sqe, c->fd, buf_addr(s, c->q_head) + b->off,
			   b->len - b->off, MSG_NOSIGNAL);
	io_uring_sqe_set_data64(sqe, tagged(c, TAG_SEND));
	c->send_busy = true;
}

/* Free the connection once nothing in the kernel refers to it any more. */
static void conn_maybe_close(struct server *s, struct conn *c)
{
	if (c->recv_armed || c->starved || c->send_busy || c->q_head >= 0)
		return;
	close(c->fd);
	if (c->prev)
		c->prev->next = c->next;
	else
		s->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	free(c);
}

static void drop_queue(struct server *s, struct conn *c)
{
	while (c->q_head >= 0) {
		int bid = c->q_head;

		c->q_head = s->bufs[bid].next;
		buf_return(s, bid);
	}
	c->q_tail = -1;
	c->queued = 0;
}

/*
 * A send failed: the peer is gone. Return the data, and shut the socket
 * down so that a live multishot recv ends (with 0) and the connection can
 * be freed from its completion.
 */
static void conn_kill(struct server *s, struct conn *c)
{
	c->dead = true;
	drop_queue(s, c);
	shutdown(c->fd, SHUT_RDWR);
	conn_maybe_close(s, c);
}

static void conn_new(struct server *s, int fd)
{
	struct conn *c = malloc(sizeof(*c));

	if (c == NULL) {
		close(fd);
		return;
	}
	*c = (struct conn){ .fd = fd, .q_head = -1, .q_tail = -1,
			    .next = s->conns };
	if (s->conns)
		s->conns->prev = c;
	s->conns = c;
	bench_set_nodelay(fd);
	arm_recv(s, c);
	s->st.accepted++;
}

/*
 * Per-connection backpressure: a peer that sends but does not read its echo
 * would otherwise drain the shared buffer pool and starve everyone. Stop
 * its recv until what it holds has gone back.
 */
static void pause_recv(struct server *s, struct conn *c)
{
	struct io_uring_sqe *sqe = get_sqe(s);

	io_uring_prep_cancel64(sqe, tagged(c, TAG_RECV), 0);
	io_uring_sqe_set_data64(sqe, TAG_CANCEL);
	c->paused = true;
	s->st.pauses++;
}

static void enqueue(struct server *s, struct conn *c, int bid, int len)
{
	s->bufs[bid] = (struct buf){ .len = (uint32_t)len, .next = -1 };
	if (c->q_tail >= 0)
		s->bufs[c->q_tail].next = bid;
	else
		c->q_head = bid;
	c->q_tail = bid;
	if (++c->queued >= MAX_QUEUED && c->recv_armed && !c->paused)
		pause_recv(s, c);
	if (!c->send_busy)
		send_head(s, c);
}

static void starve(struct server *s, struct conn *c)
{
	c->starved = true;
	c->starved_next = NULL;
	if (s->starved_tail)
		s->starved_tail->starved_next = c;
	else
		s->starved_head = c;
	s->starved_tail = c;
}

/*
 * Re-arm connections whose recv ran out of buffers, oldest first, one per
 * free buffer: re-arming more would only fail again with ENOBUFS at once.
 * Buffers only come back when sends complete, so this never spins.
 */
static void rearm_starved(struct server *s)
{
	unsigned avail = s->nbufs - s->held;

	while (s->starved_head && avail > 0) {
		struct conn *c = s->starved_head;

		s->starved_head = c->starved_next;
		if (s->starved_head == NULL)
			s->starved_tail = NULL;
		c->starved = false;
		if (c->dead) {
			conn_maybe_close(s, c);
			continue;
		}
		arm_recv(s, c);
		avail--;
	}
}

/* ---- completions -------------------------------------------------- */

/* The multishot recv is over: re-arm it, park it, or let the conn go. */
static void recv_ended(struct server *s, struct conn *c, int res)
{
	if (c->dead || c->rx_done) {
		conn_maybe_close(s, c);
		return;
	}
	if (c->paused)
		return; /* re-armed when its queue drains */
	if (res == -ENOBUFS) {
		s->st.enobufs++;
		starve(s, c);
		return;
	}
	/* The kernel may end a multishot at any time (e.g. CQ overflow). */
	arm_recv(s, c);
}

static void on_recv(struct server *s, struct conn *c,
		    const struct io_uring_cqe *cqe)
{
	bool more = cqe->flags & IORING_CQE_F_MORE;
	int res = cqe->res;

	if (res > 0) {
		int bid = (int)(cqe->flags >> IORING_CQE_BUFFER_SHIFT);

		assert(cqe->flags & IORING_CQE_F_BUFFER);
		s->held++;
		if (c->dead)
			buf_return(s, bid);
		else
			enqueue(s, c, bid, res);
	} else if (res != -ENOBUFS && res != -ECANCELED) {
		c->rx_done = true; /* EOF or error; pending echoes still go */
	}
	if (!more) {
		c->recv_armed = false;
		recv_ended(s, c, res);
	}
}

static void on_send(struct server *s, struct conn *c, int res)
{
	int bid = c->q_head;
	struct buf *b = &s->bufs[bid];

	c->send_busy = false;
	if (res <= 0) {
		conn_kill(s, c);
		return;
	}
	b->off += (uint32_t)res;
	if (b->off < b->len) {
		s->st.short_sends++;
		send_head(s, c);
		return;
	}
	c->q_head = b->next;
	c->queued--;
	buf_return(s, bid);
	if (c->q_head >= 0) {
		send_head(s, c);
		return;
	}
	c->q_tail = -1;
	if (c->paused) {
		c->paused = false;
		/* Still armed: the cancel has not landed yet, and recv_ended()
		 * re-arms when it does. */
		if (!c->recv_armed && !c->rx_done) {
			arm_recv(s, c);
			return;
		}
	}
	conn_maybe_close(s, c);
}

static void arm_accept(struct server *s)
{
	struct io_uring_sqe *sqe = get_sqe(s);

	io_uring_prep_multishot_accept(sqe, s->lfd, NULL, NULL, SOCK_CLOEXEC);
	io_uring_sqe_set_data64(sqe, TAG_ACCEPT);
}

static void on_accept(struct server *s, const struct io_uring_cqe *cqe)
{
	int res = cqe->res;

	if (res >= 0) {
		conn_new(s, res);
	} else if (res == -EBADF || res == -EINVAL || res == -ENOTSOCK ||
		   res == -EFAULT) {
		fprintf(stderr, "rio-uring-echo: accept: %s\n", strerror(-res));
		s->stop = true;
		s->status = 1;
		return;
	}
	if (cqe->flags & IORING_CQE_F_MORE)
		return;
	if (res >= 0 || res == -ECONNABORTED || res == -EINTR) {
		arm_accept(s);
		return;
	}
	/* EMFILE, ENOMEM...: try again after a pause, never in a busy loop. */
	struct io_uring_sqe *sqe = get_sqe(s);

	s->retry_ts = (struct __kernel_timespec){ .tv_nsec = ACCEPT_RETRY_NS };
	io_uring_prep_timeout(sqe, &s->retry_ts, 0, 0);
	io_uring_sqe_set_data64(sqe, TAG_RETRY);
}

static void dispatch(struct server *s, const struct io_uring_cqe *cqe)
{
	struct conn *c = (struct conn *)(uintptr_t)(cqe->user_data & ~TAG_MASK);

	switch (cqe->user_data & TAG_MASK) {
	case TAG_RECV:
		on_recv(s, c, cqe);
		break;
	case TAG_SEND:
		on_send(s, c, cqe->res);
		break;
	case TAG_ACCEPT:
		on_accept(s, cqe);
		break;
	case TAG_RETRY:
		arm_accept(s);
		break;
	case TAG_SIGNAL:
		s->stop = true;
		break;
	case TAG_CANCEL:
		break; /* the recv's own final CQE carries the outcome */
	default:
		assert(!"unknown user_data tag");
	}
}

static int reap(struct server *s)
{
	struct io_uring_cqe *cqe;
	unsigned head, n = 0;

	io_uring_for_each_cqe(&s->ring, head, cqe) {
		dispatch(s, cqe);
		n++;
	}
	io_uring_cq_advance(&s->ring, n);
	return (int)n;
}

static void server_loop(struct server *s)
{
	while (!s->stop) {
		int r;

		buf_publish(s);
		rearm_starved(s);
		r = io_uring_submit_and_wait(&s->ring, 1);
		if (r < 0 && r != -EINTR && r != -EAGAIN && r != -EBUSY &&
		    r != -ETIME) {
			fprintf(stderr, "rio-uring-echo: submit_and_wait: %s\n",
				strerror(-r));
			s->status = 1;
			return;
		}
		s->st.cqes += (unsigned long long)reap(s);
		s->st.turns++;
	}
}

/* ---- setup -------------------------------------------------------- */

/*
 * SINGLE_ISSUER|DEFER_TASKRUN (6.1+) runs completion work only when we ask
 * for events, in our own context and in batches. Older kernels reject the
 * flags with -EINVAL; drop them one step at a time.
 */
static int ring_init(struct server *s)
{
	static const unsigned tries[] = {
		IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN,
		IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_COOP_TASKRUN,
		IORING_SETUP_COOP_TASKRUN,
		0,
	};
	int r = -EINVAL;

	for (size_t i = s->first_try; i < sizeof(tries) / sizeof(tries[0]); i++) {
		struct io_uring_params p = { 0 };

		p.flags = tries[i] | IORING_SETUP_CQSIZE;
		p.cq_entries = CQ_ENTRIES;
		r = io_uring_queue_init_params(SQ_ENTRIES, &s->ring, &p);
		if (r == 0) {
			s->setup_flags = tries[i];
			s->ring_ok = true;
			/* Saves an fd lookup per io_uring_enter(); optional. */
			io_uring_register_ring_fd(&s->ring);
			return 0;
		}
		if (r != -EINVAL)
			break;
	}
	return r;
}

static const char *flags_name(unsigned f)
{
	if (f & IORING_SETUP_DEFER_TASKRUN)
		return "SINGLE_ISSUER|DEFER_TASKRUN";
	if (f & IORING_SETUP_SINGLE_ISSUER)
		return "SINGLE_ISSUER|COOP_TASKRUN";
	return f ? "COOP_TASKRUN" : "none";
}

static int server_init(struct server *s, const char *addr, int port)
{
	struct io_uring_sqe *sqe;
	int r;

	s->sfd = bench_signalfd();
	s->lfd = bench_listen(addr, port, 0);
	if (s->lfd < 0) {
		fprintf(stderr, "rio-uring-echo: listen on %s port %d: %s\n",
			addr, port, strerror(-s->lfd));
		return -1;
	}
	r = ring_init(s);
	if (r == 0)
		r = bufs_init(s);
	if (r != 0 || s->sfd < 0) {
		fprintf(stderr, "rio-uring-echo: io_uring setup: %s\n",
			strerror(r ? -r : -s->sfd));
		return -1;
	}
	arm_accept(s);
	sqe = get_sqe(s);
	io_uring_prep_poll_add(sqe, s->sfd, POLLIN);
	io_uring_sqe_set_data64(sqe, TAG_SIGNAL);
	return 0;
}

static void usage(FILE *f)
{
	fprintf(f, "usage: rio-uring-echo --port P [--addr A] [--cpu C] "
		   "[--bufs N] [--buf-size BYTES]\n"
		   "                      [--setup defer|coop|none]\n"
		   "  --addr      numeric address to listen on (default 127.0.0.1)\n"
		   "  --bufs      provided buffers, a power of two <= 32768 "
		   "(default %d)\n"
		   "  --buf-size  bytes per provided buffer (default %d)\n"
		   "  --setup     defer|coop|none: ring flags to start from, to\n"
		   "              measure what DEFER_TASKRUN buys (default defer)\n",
		DEFAULT_BUFS, DEFAULT_BUF_SIZE);
}

/* --setup name -> index into ring_init()'s list, or -1. */
static int setup_index(const char *name)
{
	if (strcmp(name, "defer") == 0)
		return 0;
	if (strcmp(name, "coop") == 0)
		return 1;
	return strcmp(name, "none") == 0 ? 3 : -1;
}

struct opts {
	const char *addr;
	int port, cpu;
	long nbufs, buf_size;
	unsigned first_try;
};

static int parse_opts(int argc, char **argv, struct opts *o)
{
	static const struct option longopts[] = {
		{ "port", required_argument, NULL, 'p' },
		{ "addr", required_argument, NULL, 'a' },
		{ "cpu", required_argument, NULL, 'c' },
		{ "bufs", required_argument, NULL, 'n' },
		{ "buf-size", required_argument, NULL, 'b' },
		{ "setup", required_argument, NULL, 's' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	long v;
	int c;

	while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
		if (c == 'a')
			o->addr = optarg;
		else if (c == 'p' && !bench_parse_long(optarg, 1, 65535, &v))
			o->port = (int)v;
		else if (c == 'c' && !bench_parse_long(optarg, 0, 4095, &v))
			o->cpu = (int)v;
		else if (c == 'n' && !bench_parse_long(optarg, 1, 32768, &v) &&
			 (v & (v - 1)) == 0)
			o->nbufs = v;
		else if (c == 'b' && !bench_parse_long(optarg, 64, 1L << 24, &v))
			o->buf_size = v;
		else if (c == 's' && setup_index(optarg) >= 0)
			o->first_try = (unsigned)setup_index(optarg);
		else if (c == 'h') {
			usage(stdout);
			exit(0);
		} else {
			if (optarg)
				fprintf(stderr, "rio-uring-echo: bad value '%s'\n",
					optarg);
			usage(stderr);
			return -1;
		}
	}
	if (o->port == 0 || optind < argc) {
		usage(stderr);
		return -1;
	}
	return 0;
}

static void server_free(struct server *s)
{
	while (s->conns) {
		struct conn *c = s->conns;

		s->conns = c->next;
		close(c->fd);
		free(c);
	}
	/* Exiting the ring cancels every request before the memory goes. */
	if (s->ring_ok)
		io_uring_queue_exit(&s->ring);
	if (s->br && s->br != MAP_FAILED)
		munmap(s->br, s->br_bytes);
	if (s->bufmem && s->bufmem != MAP_FAILED)
		munmap(s->bufmem, (size_t)s->nbufs * s->buf_size);
	free(s->bufs);
	if (s->lfd >= 0)
		close(s->lfd);
	if (s->sfd >= 0)
		close(s->sfd);
}

int main(int argc, char **argv)
{
	struct opts o = { .addr = "127.0.0.1", .cpu = -1,
			  .nbufs = DEFAULT_BUFS, .buf_size = DEFAULT_BUF_SIZE };
	struct server s = { .lfd = -1, .sfd = -1 };
	int err;

	if (parse_opts(argc, argv, &o) != 0)
		return BENCH_EXIT_USAGE;
	if (o.cpu >= 0 && (err = bench_pin_cpu(o.cpu)) != 0) {
		fprintf(stderr, "rio-uring-echo: cannot pin to CPU %d: %s\n",
			o.cpu, strerror(-err));
		return BENCH_EXIT_USAGE;
	}
	s.nbufs = (unsigned)o.nbufs;
	s.buf_size = (unsigned)o.buf_size;
	s.first_try = o.first_try;
	if (server_init(&s, o.addr, o.port) == 0)
		server_loop(&s);
	else
		s.status = 1;
	fprintf(stderr,
		"rio-uring-echo: flags=%s bufs=%ux%u accepted=%llu turns=%llu "
		"cqes=%llu short_sends=%llu enobufs=%llu pauses=%llu\n",
		flags_name(s.setup_flags), s.nbufs, s.buf_size, s.st.accepted,
		s.st.turns, s.st.cqes, s.st.short_sends, s.st.enobufs,
		s.st.pauses);
	server_free(&s);
	return s.status;
}

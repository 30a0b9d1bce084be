/*
 * The op lifecycle, the same on every backend: the kinds and what each
 * needs, validation of the submit calls, what the core does before a
 * backend sees an op (deadline, fd tracking, a close ending its fd's
 * generation, a cancel settled without the kernel), and the one place a
 * callback runs. Backends only prepare ops and translate results.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/signalfd.h>
#endif

#include "internal.h"

/* side, tracked, deadline, again, io, pool, composite, batch */
const struct rio__kind_info rio__kinds[RIO__OP_KINDS] = {
	[RIO__OP_NONE] = {RIO__SIDE_NONE, 0, 0, 0, 0, 0, 0, 0},
	[RIO__OP_ACCEPT] = {RIO__SIDE_READ, 1, 1, 1, 0, 0, 0, 0},
	[RIO__OP_CONNECT] = {RIO__SIDE_WRITE, 1, 1, 0, 0, 0, 0, 0},
	[RIO__OP_RECV] = {RIO__SIDE_READ, 1, 1, 1, 1, 0, 0, 0},
	[RIO__OP_SEND] = {RIO__SIDE_WRITE, 1, 1, 1, 1, 0, 0, 0},
	[RIO__OP_RECVMSG] = {RIO__SIDE_READ, 1, 1, 1, 1, 0, 0, 0},
	[RIO__OP_SENDMSG] = {RIO__SIDE_WRITE, 1, 1, 1, 1, 0, 0, 0},
	[RIO__OP_RECV_MULTI] = {RIO__SIDE_READ, 1, 0, 0, 0, 1, 0, 0},
	[RIO__OP_RECVMSG_MULTI] = {RIO__SIDE_READ, 1, 0, 0, 0, 1, 0, 0},
	[RIO__OP_SENDTO] = {RIO__SIDE_WRITE, 1, 1, 1, 0, 0, 0, 1},
	[RIO__OP_SPLICE_IN] = {RIO__SIDE_READ, 1, 1, 1, 0, 0, 0, 0},
	[RIO__OP_SPLICE_OUT] = {RIO__SIDE_WRITE, 1, 1, 1, 0, 0, 0, 0},
	/* close and cancel never wait on a peer; a timeout is one */
	[RIO__OP_CLOSE] = {RIO__SIDE_NONE, 0, 0, 0, 0, 0, 0, 0},
	[RIO__OP_TIMEOUT] = {RIO__SIDE_NONE, 0, 0, 0, 0, 0, 0, 0},
	[RIO__OP_CANCEL] = {RIO__SIDE_NONE, 0, 0, 0, 0, 0, 0, 0},
	[RIO__OP_POST] = {RIO__SIDE_NONE, 0, 0, 0, 0, 0, 0, 0},
	[RIO__OP_WAKE] = {RIO__SIDE_NONE, 0, 0, 0, 0, 0, 0, 0},
	[RIO__OP_POLL] = {RIO__SIDE_ANY, 1, 1, 0, 0, 0, 0, 0},
	/* a close waits for it; it never waits on a peer */
	[RIO__OP_SHUTDOWN] = {RIO__SIDE_NONE, 1, 0, 0, 0, 0, 0, 0},
	/* on a file of its own: nothing to track */
	[RIO__OP_SIGNAL] = {RIO__SIDE_READ, 0, 0, 0, 0, 0, 0, 0},
	[RIO__OP_WAKEUP] = {RIO__SIDE_NONE, 0, 0, 0, 0, 0, 0, 0},
	[RIO__OP_READ] = {RIO__SIDE_READ, 1, 1, 1, 1, 0, 0, 0},
	[RIO__OP_WRITE] = {RIO__SIDE_WRITE, 1, 1, 1, 1, 0, 0, 0},
	/* composites: their own ops do the waiting */
	[RIO__OP_RELAY] = {RIO__SIDE_NONE, 0, 0, 0, 0, 0, 1, 0},
	[RIO__OP_CONNECT_ANY] = {RIO__SIDE_NONE, 0, 0, 0, 0, 0, 1, 0},
};

/* The ABI (soname 1): what a caller embeds does not change size. */
_Static_assert(sizeof(void *) != 8 || sizeof(rio_op) == 144,
	       "rio_op changed size");

uint64_t rio__now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

uint64_t rio__due_in(uint64_t ns)
{
	uint64_t now = rio__now_ns();
	return ns > UINT64_MAX - now ? UINT64_MAX : now + ns;
}

void rio_op_init(rio_op *op)
{
	memset(op, 0, sizeof *op);
}

void rio_op_set_deadline(rio_op *op, uint64_t timeout_ns)
{
	/* a length past 2^63 ns (292 years) is no deadline anyone waits for */
	op->deadline_ns = timeout_ns & ~RIO_DEADLINE_ABS;
	if (timeout_ns & RIO_DEADLINE_ABS)
		op->deadline_ns = ~RIO_DEADLINE_ABS;
}

void rio_op_set_deadline_at(rio_op *op, uint64_t when_ns)
{
	op->deadline_ns = RIO_DEADLINE_ABS | (when_ns & ~RIO_DEADLINE_ABS);
}

uint64_t rio_now_ns(void)
{
	return rio__now_ns();
}

int rio_op_in_flight(const rio_op *op)
{
	return op->priv.state != RIO__ST_IDLE;
}

/* ---- results ---- */

void rio__complete(rio_loop *loop, rio_op *op, int res, unsigned flags)
{
	int final = !(flags & RIO_OP_F_MORE);
	if (final && op->priv.kind == RIO__OP_CLOSE &&
	    op->priv.a.close.waiting > 0) {
		op->res = res; /* delivered by the last op it waits for */
		op->priv.bits |= RIO__B_CLOSED;
		return;
	}
	unsigned bits = op->priv.bits;
	int internal = bits & RIO__B_INTERNAL;
	if (final && (bits & RIO__B_TIMEDOUT) && res == -ETIMEDOUT)
		flags |= RIO_OP_F_DEADLINE;
	if (final && res == -EPIPE && op->priv.kind == RIO__OP_WRITE)
		rio__sigpipe_take(); /* the one its write raised */
	int fd = op->priv.fd;
	uint32_t gen = op->priv.gen;
	/* A multishot op's results taken with one syscall go out after a
	 * callback among them ended it (a cancel or close settles it as
	 * pending): its decided final result must outlive theirs. */
	int decided = !final && op->priv.state == RIO__ST_PENDING;
	int final_res = op->res;
	op->res = res;
	op->flags = flags;
	if (final) {
		assert(op->priv.state != RIO__ST_IDLE);
		op->priv.state = RIO__ST_IDLE;
		op->priv.bits = 0;
		if (!internal) {
			assert(loop->active > 0);
			loop->active--;
			loop->ctr.ops_completed++;
			if (op->priv.kind != RIO__OP_POST)
				RIO__OPQ_REMOVE(&loop->live, op,
						live_next, live_prev);
		}
		if (rio__kind(op)->pool)
			op->priv.a.multi.pool->users--;
	}
	if (!internal)
		loop->ctr.completions++;
	if (final && op->priv.kind == RIO__OP_CLOSE)
		rio__fd_closed(loop, fd, gen); /* composites on the fd */
	if (final && op->priv.kind == RIO__OP_SIGNAL && fd >= 0) {
		/* its own signalfd: gone before the caller hears of it */
		if (loop->be->drop_fd)
			loop->be->drop_fd(loop, fd);
		close(fd);
		op->priv.fd = -1;
	}
	op->priv.cb(loop, op, res);
	if (decided)
		op->res = final_res;
	/* op may be the caller's again, even resubmitted: fd, gen and bits
	 * were read before */
	if (final && (bits & RIO__B_TRACKED)) {
		rio_op *close_op = rio__fd_done(&loop->fds, fd, gen);
		if (close_op) /* the last op it waited for */
			rio__complete(loop, close_op, close_op->res, 0);
	}
}

/* Run the completions queued so far; ones queued by these callbacks wait
 * for the next call, so a callback cannot recurse. Results are delivered
 * in the order they were decided: a backend calls this before it runs a
 * callback for a result it has just found, and each turn starts with it. */
unsigned rio__flush_pending(rio_loop *loop)
{
	rio__opq q;
	rio__opq_take(&q, &loop->pending);
	rio_op *op;
	unsigned n = 0;
	for (; (op = rio__opq_pop(&q)); n++)
		rio__complete(loop, op, op->res, 0);
	return n;
}

int rio__stopped(rio_loop *loop, rio_op *op, int res)
{
	if ((op->priv.bits & RIO__B_CANCELLED) || rio__fd_closing(loop, op))
		return -ECANCELED;
	if (op->priv.bits & RIO__B_DEADLINE) {
		op->priv.bits |= RIO__B_TIMEDOUT;
		return -ETIMEDOUT;
	}
	return res;
}

/* ---- submission ---- */

int rio__op_claim(rio_loop *loop, rio_op *op, rio_cb *cb,
		  enum rio__kind kind)
{
	if (!loop || !op || !cb)
		return -EINVAL;
	if (op->priv.state != RIO__ST_IDLE)
		return -EBUSY;
	op->priv.cb = cb;
	op->priv.kind = (uint8_t)kind;
	op->priv.bits = 0;
	op->flags = 0;
	op->buf = NULL;
	return 0;
}

/* Common checks and bookkeeping of every submit call. */
int rio__op_take(rio_loop *loop, rio_op *op, rio_cb *cb, enum rio__kind kind,
		 int fd)
{
	int r = rio__op_claim(loop, op, cb, kind);
	if (r)
		return r;
	op->priv.fd = fd;
	op->priv.gen = 0;
	op->priv.fault_err = 0;
	memset(&op->priv.a, 0, sizeof op->priv.a);
	loop->active++;
	RIO__OPQ_PUSH(&loop->live, op, live_next, live_prev);
	loop->ctr.ops_submitted++;
	return 0;
}

/* What the core does for every op before its backend sees it: which ops
 * honour a deadline is decided here, once (not multishot ops, which are
 * validated away), and when time ends an op; tracked ops are counted on
 * their fd; a close ends its fd's generation. */
static int submit(rio_loop *loop, rio_op *op)
{
	const struct rio__kind_info *k = rio__kind(op);
	if (op->deadline_ns && k->deadline &&
	    !(op->priv.bits & RIO__B_MULTISHOT)) {
		op->priv.bits |= RIO__B_DEADLINE;
		op->priv.due_ns = op->deadline_ns & RIO_DEADLINE_ABS
					  ? op->deadline_ns & ~RIO_DEADLINE_ABS
					  : rio__due_in(op->deadline_ns);
	} else if (op->priv.kind == RIO__OP_TIMEOUT) {
		op->priv.due_ns = rio__due_in(op->priv.a.timeout.ns);
	}
	if (k->tracked) {
		rio__fd_track(loop, op);
	} else if (op->priv.kind == RIO__OP_CLOSE) {
		rio__starved_end_fd(loop, op->priv.fd, -ECANCELED);
		rio__fd_close(loop, op);
	}
	op->priv.state = RIO__ST_KERNEL;
	loop->be->submit(loop, op);
	return 0;
}

int rio_accept(rio_loop *loop, rio_op *op, int fd, struct sockaddr *addr,
	       socklen_t *addrlen, unsigned flags, rio_cb *cb)
{
	if (flags & ~RIO_MULTISHOT)
		return -EINVAL;
	if ((flags & RIO_MULTISHOT) &&
	    (addr || addrlen || (op && op->deadline_ns)))
		return -EINVAL;
	if ((addr == NULL) != (addrlen == NULL))
		return -EINVAL;
	int r = rio__op_take(loop, op, cb, RIO__OP_ACCEPT, fd);
	if (r)
		return r;
	op->priv.a.accept.addr = addr;
	op->priv.a.accept.addrlen = addrlen;
	if (flags & RIO_MULTISHOT)
		op->priv.bits |= RIO__B_MULTISHOT;
	return submit(loop, op);
}

int rio_connect(rio_loop *loop, rio_op *op, int fd,
		const struct sockaddr *addr, socklen_t addrlen, rio_cb *cb)
{
	if (!addr || addrlen == 0)
		return -EINVAL;
	int r = rio__op_take(loop, op, cb, RIO__OP_CONNECT, fd);
	if (r)
		return r;
	op->priv.a.connect.addr = addr;
	op->priv.a.connect.addrlen = addrlen;
	return submit(loop, op);
}

static int submit_io(rio_loop *loop, rio_op *op, enum rio__kind kind, int fd,
		     void *buf, size_t len, struct msghdr *msg, int msg_flags,
		     rio_cb *cb)
{
	int r = rio__op_take(loop, op, cb, kind, fd);
	if (r)
		return r;
	op->priv.a.io.buf = buf;
	op->priv.a.io.len = len > INT_MAX ? INT_MAX : len; /* res is an int */
	op->priv.a.io.msg = msg;
	op->priv.a.io.flags = msg_flags;
	return submit(loop, op);
}

int rio_recv(rio_loop *loop, rio_op *op, int fd, void *buf, size_t len,
	     int msg_flags, rio_cb *cb)
{
	if (!buf && len)
		return -EINVAL;
	return submit_io(loop, op, RIO__OP_RECV, fd, buf, len, NULL, msg_flags,
			 cb);
}

int rio_send(rio_loop *loop, rio_op *op, int fd, const void *buf, size_t len,
	     int msg_flags, rio_cb *cb)
{
	if (!buf && len)
		return -EINVAL;
	return submit_io(loop, op, RIO__OP_SEND, fd, (void *)buf, len, NULL,
			 msg_flags | MSG_NOSIGNAL, cb);
}

int rio_sendmsg(rio_loop *loop, rio_op *op, int fd, const struct msghdr *msg,
		int msg_flags, rio_cb *cb)
{
	if (!msg)
		return -EINVAL;
	return submit_io(loop, op, RIO__OP_SENDMSG, fd, NULL, 0,
			 (struct msghdr *)msg, msg_flags | MSG_NOSIGNAL, cb);
}

int rio_recvmsg(rio_loop *loop, rio_op *op, int fd, struct msghdr *msg,
		int msg_flags, rio_cb *cb)
{
	if (!msg)
		return -EINVAL;
	return submit_io(loop, op, RIO__OP_RECVMSG, fd, NULL, 0, msg,
			 msg_flags, cb);
}

int rio_read(rio_loop *loop, rio_op *op, int fd, void *buf, size_t len,
	     rio_cb *cb)
{
	if (!buf && len)
		return -EINVAL;
	return submit_io(loop, op, RIO__OP_READ, fd, buf, len, NULL, 0, cb);
}

int rio_write(rio_loop *loop, rio_op *op, int fd, const void *buf,
	      size_t len, rio_cb *cb)
{
	if (!buf && len)
		return -EINVAL;
	rio__sigpipe_block(); /* the write runs on this thread */
	return submit_io(loop, op, RIO__OP_WRITE, fd, (void *)buf, len, NULL, 0,
			 cb);
}

static int submit_splice(rio_loop *loop, rio_op *op, enum rio__kind kind,
			 int sock, int pipe, size_t len, rio_cb *cb)
{
	if (pipe < 0 || len == 0)
		return -EINVAL;
	int r = rio__op_take(loop, op, cb, kind, sock);
	if (r)
		return r;
	op->priv.a.splice.len = len > INT_MAX ? INT_MAX : (uint32_t)len;
	op->priv.a.splice.pipe = pipe;
	return submit(loop, op);
}

int rio_splice_in(rio_loop *loop, rio_op *op, int sock, int pipe_w,
		  size_t len, rio_cb *cb)
{
	return submit_splice(loop, op, RIO__OP_SPLICE_IN, sock, pipe_w, len, cb);
}

int rio_splice_out(rio_loop *loop, rio_op *op, int pipe_r, int sock,
		   size_t len, rio_cb *cb)
{
	return submit_splice(loop, op, RIO__OP_SPLICE_OUT, sock, pipe_r, len,
			     cb);
}

/* 1: a datagram socket (SOCK_DGRAM, SOCK_SEQPACKET), 0: another type,
 * -1: not a socket (the backend's syscall then says why) */
static int is_dgram(int fd)
{
	int type = 0;
	socklen_t tl = sizeof type;
	if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &tl) < 0)
		return -1;
	return type == SOCK_DGRAM || type == SOCK_SEQPACKET;
}

static int submit_multi(rio_loop *loop, rio_op *op, enum rio__kind kind,
			int fd, rio_bufpool *pool, int dgram, rio_cb *cb)
{
	int r = rio__op_take(loop, op, cb, kind, fd);
	if (r)
		return r;
	op->priv.a.multi.pool = pool;
	op->priv.bits |= RIO__B_MULTISHOT;
	/* On a datagram socket 0 bytes is a datagram: the recv goes on. */
	if (dgram > 0)
		op->priv.bits |= RIO__B_DGRAM;
	pool->users++;
	return 0;
}

int rio_recv_multishot(rio_loop *loop, rio_op *op, int fd, rio_bufpool *pool,
		       rio_cb *cb)
{
	if (!pool || pool->loop != loop || (op && op->deadline_ns))
		return -EINVAL;
	int r = submit_multi(loop, op, RIO__OP_RECV_MULTI, fd, pool,
			     is_dgram(fd), cb);
	return r ? r : submit(loop, op);
}

enum { CONTROL_MAX = 65536 };

int rio_recvmsg_multishot(rio_loop *loop, rio_op *op, int fd,
			  rio_bufpool *pool, size_t control_len, rio_cb *cb)
{
	size_t control = (control_len + 7) & ~(size_t)7;
	if (!pool || pool->loop != loop || (op && op->deadline_ns) ||
	    control_len > CONTROL_MAX ||
	    pool->size <= RIO_DGRAM_HEADROOM + control)
		return -EINVAL;
	int dgram = is_dgram(fd);
	if (dgram == 0)
		return -EINVAL; /* a stream has no datagrams */
	int r = submit_multi(loop, op, RIO__OP_RECVMSG_MULTI, fd, pool, 1, cb);
	if (r)
		return r;
	op->priv.a.multi.control = (uint32_t)control;
	return submit(loop, op);
}

int rio_dgram_get(const rio_op *op, rio_dgram *out)
{
	if (!op || !out || op->priv.kind != RIO__OP_RECVMSG_MULTI ||
	    !(op->flags & RIO_OP_F_BUF) || !op->buf || op->res < 0)
		return -EINVAL;
	size_t off = rio__dgram_payload_off(op);
	unsigned char *base = (unsigned char *)op->buf - off;
	const struct rio__dgram_hdr *h = (const void *)base;
	uint32_t namelen = h->namelen < RIO__DGRAM_NAME ? h->namelen
							: RIO__DGRAM_NAME;
	uint32_t ctl = h->controllen < op->priv.a.multi.control
			       ? h->controllen
			       : op->priv.a.multi.control;
	*out = (rio_dgram){
		.data = op->buf,
		.len = (size_t)op->res,
		.full_len = h->payloadlen > (uint32_t)op->res ? h->payloadlen
							      : (size_t)op->res,
		.peer = namelen ? (const struct sockaddr *)(base + sizeof *h)
				: NULL,
		.peer_len = namelen,
		.control = ctl ? base + RIO_DGRAM_HEADROOM : NULL,
		.control_len = ctl,
		.msg_flags = (int)h->flags,
	};
	return 0;
}

int rio_sendto(rio_loop *loop, rio_op *op, int fd, const void *buf,
	       size_t len, int msg_flags, const struct sockaddr *to,
	       socklen_t tolen, rio_cb *cb)
{
	if ((!buf && len) || (!to && tolen) || (to && !tolen) ||
	    (msg_flags & MSG_WAITALL) || len > INT_MAX)
		return -EINVAL;
	int r = rio__op_take(loop, op, cb, RIO__OP_SENDTO, fd);
	if (r)
		return r;
	op->priv.a.sendto.buf = buf;
	op->priv.a.sendto.len = len;
	op->priv.a.sendto.to = to;
	op->priv.a.sendto.tolen = tolen;
	op->priv.a.sendto.flags = msg_flags | MSG_NOSIGNAL;
	return submit(loop, op);
}

int rio_poll(rio_loop *loop, rio_op *op, int fd, unsigned events,
	     rio_cb *cb)
{
	if (events & ~(unsigned)(POLLIN | POLLOUT | POLLPRI | POLLRDHUP |
				 POLLERR | POLLHUP))
		return -EINVAL;
	/* io_uring reports a peer's FIN to any poll: so do all backends */
	return rio__poll_events(loop, op, fd,
				events | POLLERR | POLLHUP | POLLRDHUP, cb);
}

int rio__poll_events(rio_loop *loop, rio_op *op, int fd, unsigned events,
		     rio_cb *cb)
{
	int r = rio__op_take(loop, op, cb, RIO__OP_POLL, fd);
	if (r)
		return r;
	op->priv.a.poll.events = events;
	return submit(loop, op);
}

int rio_shutdown(rio_loop *loop, rio_op *op, int fd, int how, rio_cb *cb)
{
	if (how != SHUT_RD && how != SHUT_WR && how != SHUT_RDWR)
		return -EINVAL;
	int r = rio__op_take(loop, op, cb, RIO__OP_SHUTDOWN, fd);
	if (r)
		return r;
	op->priv.a.shutdown.how = how;
	return submit(loop, op);
}

/* A signal op's fd where the backend has no way of its own: a signalfd
 * (Linux). */
static int signal_fd(const sigset_t *set)
{
#ifdef __linux__
	int fd = signalfd(-1, set, SFD_NONBLOCK | SFD_CLOEXEC);
	return fd < 0 ? -errno : fd;
#else
	(void)set;
	return -EOPNOTSUPP;
#endif
}

int rio_signal(rio_loop *loop, rio_op *op, uint64_t sigs, rio_cb *cb)
{
	sigset_t set;
	sigemptyset(&set);
	for (int sig = 1; sig <= 64; sig++)
		if ((sigs & RIO_SIG(sig)) &&
		    (sig >= NSIG || sigaddset(&set, sig) < 0))
			return -EINVAL;
	if (!sigs || (op && op->deadline_ns))
		return -EINVAL;
	int r = rio__op_take(loop, op, cb, RIO__OP_SIGNAL, -1);
	if (r)
		return r;
	op->priv.bits |= RIO__B_MULTISHOT;
	op->priv.a.signal.left = 0;
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	int sfd = loop->be->sig_open ? loop->be->sig_open(loop, &set)
				     : signal_fd(&set);
	if (sfd < 0) {
		rio__defer(loop, op, sfd);
		return 0;
	}
	op->priv.fd = sfd;
	return submit(loop, op);
}

int rio__signal_read(rio_loop *loop, rio_op *op)
{
	typeof(op->priv.a.signal) *a = &op->priv.a.signal;
	if (a->left) { /* the rest of a read that counted more than one */
		a->left--;
		return a->sig;
	}
	if (loop->be->sig_read) {
		unsigned times = 1;
		int sig = loop->be->sig_read(loop, op->priv.fd, &times);
		if (sig > 0 && times > 1) {
			a->sig = sig;
			a->left = times - 1;
		}
		return sig;
	}
#ifdef __linux__
	struct signalfd_siginfo si;
	ssize_t n = read(op->priv.fd, &si, sizeof si);
	if (n == (ssize_t)sizeof si)
		return (int)si.ssi_signo;
	return n < 0 ? -errno : -EIO;
#else
	return -EOPNOTSUPP;
#endif
}

int rio_close(rio_loop *loop, rio_op *op, int fd, rio_cb *cb)
{
	int r = rio__op_take(loop, op, cb, RIO__OP_CLOSE, fd);
	if (r)
		return r;
	return submit(loop, op);
}

int rio_timeout(rio_loop *loop, rio_op *op, uint64_t timeout_ns, rio_cb *cb)
{
	if (op && op->deadline_ns)
		return -EINVAL;
	int r = rio__op_take(loop, op, cb, RIO__OP_TIMEOUT, -1);
	if (r)
		return r;
	op->priv.a.timeout.ns = timeout_ns;
	return submit(loop, op);
}

/* A cancel of `target`, as far as the core settles it: what the cancel
 * completes with (0, -ENOENT, -EALREADY, or a composite's answer), the
 * target deferred if it ends here; or 1 when its backend holds it. */
static int cancel_here(rio_loop *loop, rio_op *target)
{
	switch (target->priv.state) {
	case RIO__ST_IDLE:
		return -ENOENT;
	case RIO__ST_PENDING:
	case RIO__ST_POSTED:
		/* Its result is already decided; it cannot be stopped. */
		return -EALREADY;
	case RIO__ST_STARVED:
		/* The backend does not hold it: settled here. */
		rio__opq_remove(&loop->starved, target);
		rio__defer(loop, target, -ECANCELED);
		return 0;
	default:
		break;
	}
	if (target->priv.kind == RIO__OP_WAKEUP)
		return rio__wakeup_cancel(loop, target);
	if (rio__kind(target)->composite)
		return target->priv.a.composite.cancel(loop, target);
	return 1;
}

int rio_cancel(rio_loop *loop, rio_op *op, rio_op *target, rio_cb *cb)
{
	if (!target || target == op)
		return -EINVAL;
	int r = rio__op_take(loop, op, cb, RIO__OP_CANCEL, -1);
	if (r)
		return r;
	op->priv.a.cancel.target = target;
	r = cancel_here(loop, target);
	if (r <= 0) {
		rio__defer(loop, op, r);
		return 0;
	}
	return submit(loop, op);
}

/* Kinds a cancel-all leaves alone: none waits on a peer, and each ends
 * promptly by itself. */
static int ends_alone(const rio_op *op)
{
	switch (op->priv.kind) {
	case RIO__OP_CLOSE:
	case RIO__OP_SHUTDOWN:
	case RIO__OP_CANCEL:
	case RIO__OP_POST:
		return 1;
	default:
		return 0;
	}
}

int rio_loop_cancel_all(rio_loop *loop)
{
	if (!loop)
		return -EINVAL;
	if (loop->owned && !pthread_equal(loop->owner, pthread_self()))
		return -EPERM;
	rio__listeners_cancel(loop);
	/* The ops in flight now, oldest first: ops the cancels add (a
	 * composite's own cancels) go after `last` and are not visited. */
	rio_op *last = loop->live.tail;
	for (rio_op *op = loop->live.head, *next; op; op = next) {
		next = op == last ? NULL : op->priv.live_next;
		/* a part's op: its owner is asked (above, or as a composite
		 * op); one a cancel already ends: on its way */
		if (ends_alone(op) ||
		    (op->priv.bits & (RIO__B_INNER | RIO__B_CANCELLED)) ||
		    rio__fd_closing(loop, op))
			continue;
		if (cancel_here(loop, op) == 1)
			loop->be->cancel(loop, op);
	}
	return 0;
}

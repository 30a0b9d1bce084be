/*
 * The readiness reactor: turns readiness into the completions io_uring
 * would give. An op tries its syscall first; on EAGAIN it parks on its
 * fd's queue for that direction (FIFO) and waits for the poller. Readiness
 * is only a hint: an op retried after an event may see EAGAIN again, and
 * then simply parks again (counted as a spurious wakeup).
 *
 * Every fd is registered once per generation, edge-triggered for both
 * directions, so steady state needs no epoll_ctl; the reactor remembers
 * which directions were last seen ready and clears a bit only when a
 * syscall says EAGAIN. Closing an fd through the loop bumps its
 * generation: events and ops of the old file can never reach the new one.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "reactor.h"
#include "reactor_int.h"

enum { WAKE_GEN = 0xffffffffu, BUDGET = 64, MAX_EVENTS = 256 };


static int is_read_side(const rio_op *op)
{
	return rio__kind(op)->side == RIO__SIDE_READ;
}

static struct fdent *fd_ent(struct reactor *r, int fd)
{
	if (fd < 0 || rio__grow((void **)&r->fds, &r->nfds, sizeof *r->fds,
				(size_t)fd) < 0)
		return NULL;
	return &r->fds[fd];
}

static rio__opq *queue_of(struct fdent *e, const rio_op *op)
{
	switch (rio__kind(op)->side) {
	case RIO__SIDE_ANY:
		return &e->pq;
	case RIO__SIDE_READ:
		return &e->rq;
	default:
		return &e->wq;
	}
}

/* For rio_poll: what poll(2) says is ready on fd for `events`, not
 * waiting (0: nothing; readiness was a hint), with a socket error the
 * poller consumed (libkqueue reads SO_ERROR, so poll(2) no longer sees it)
 * as POLLERR; -EBADF for a number that is not open. */
static int fd_ready(struct reactor *r, int fd, short events)
{
	struct pollfd p = {.fd = fd, .events = events};
	if (poll(&p, 1, 0) < 0)
		return errno == EINTR || errno == EAGAIN ? 0 : -errno;
	if (p.revents & POLLNVAL)
		return -EBADF;
	if (r->fds[fd].soerr)
		p.revents |= POLLERR;
	return p.revents;
}

/* A result found without readiness (at submit, by a cancel or close):
 * the core delivers it after this poll, never from inside submit. */
static void mark_hot(struct reactor *r, int fd)
{
	struct fdent *e = &r->fds[fd];
	if (e->hot)
		return;
	if (r->nhot == r->hot_cap) {
		size_t cap = r->hot_cap ? r->hot_cap * 2 : 64;
		int *h = realloc(r->hot, cap * sizeof *h);
		if (!h)
			return; /* the fd is served on its next edge instead */
		r->hot = h;
		r->hot_cap = cap;
	}
	e->hot = 1;
	r->hot[r->nhot++] = fd;
}

/* First use of an fd in this generation: make it non-blocking (a blocking
 * fd must never stall the loop) and register it with the poller. Returns
 * 1 when it registered just now. */
/* The inode of the file under fd (0 if fstat fails). */
static uint64_t file_ino(int fd)
{
	struct stat st;
	return fstat(fd, &st) == 0 ? (uint64_t)st.st_ino : 0;
}

static int ensure_registered(struct reactor *r, int fd, struct fdent *e)
{
	if (e->registered)
		return 0;
	if (e->sigs) { /* a signal op's: ready by RIO__PEV_SIG, not by fd */
		e->registered = 1;
		e->ready = RIO__EV_IN; /* what came before: read it */
		return 1;
	}
	int fl = fcntl(fd, F_GETFL);
	if (fl < 0)
		return -errno;
	if (!(fl & O_NONBLOCK) && fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
		return -errno;
	int res = r->p->add(r->pfd, fd, e->gen);
	if (res == -EPERM) { /* regular files: never "not ready" */
		e->nopoll = 1;
		res = 0;
	}
	if (res < 0)
		return res;
	int type = 0;
	socklen_t tl = sizeof type;
	e->sock = getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &tl) == 0;
	e->stream = e->sock && type == SOCK_STREAM;
	/* The number may be a new file's (the last closed behind the
	 * loop's back): an error the poller took for the last is not its.
	 * The same file registered again keeps it. */
	if (e->soerr && file_ino(fd) != e->ino)
		e->soerr = 0;
	e->registered = 1;
	e->eof = 0;
	e->ready = RIO__EV_IN | RIO__EV_OUT; /* unknown: try the syscall */
	return 1;
}

/* An fd going from idle to waiting: is the file under this number still
 * the one registered? The caller may have closed an idle fd itself and
 * got the number back for a new file, which the poller does not watch and
 * which may be blocking. One epoll_ctl per idle->waiting transition; a
 * connection that keeps an op parked (multishot recv) pays it once. */
static int revalidate(struct reactor *r, int fd, struct fdent *e)
{
	if (e->nopoll || e->sigs || !rio__opq_empty(&e->rq) ||
	    !rio__opq_empty(&e->wq))
		return 0;
	int res = r->p->rearm(r->pfd, fd, e->gen);
	if (res != -ENOENT)
		return res;
	e->registered = 0;
	res = ensure_registered(r, fd, e);
	return res < 0 ? res : 0;
}

/* ---- the syscalls ---- */

static int sys(ssize_t n) { return n < 0 ? -errno : (int)n; }

/* A connect that reported write readiness: believe it only when SO_ERROR
 * is 0 and the socket has a peer. ENOTCONN means the edge was stale (a
 * fresh socket is writable before connect() has done anything). */
static enum attempt verify_connect(rio_op *op, int *res)
{
	int err = 0;
	socklen_t len = sizeof err;
	if (getsockopt(op->priv.fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
		err = errno;
	if (err) {
		*res = -err;
		return DONE;
	}
	struct sockaddr_storage ss;
	socklen_t sl = sizeof ss;
	if (getpeername(op->priv.fd, (struct sockaddr *)&ss, &sl) == 0) {
		*res = 0;
		return DONE;
	}
	if (errno == ENOTCONN)
		return AGAIN;
	*res = -errno;
	return DONE;
}

/*
 * recvmsg/sendmsg for a MSG_WAITALL op that has moved `done` bytes: the
 * caller's message with its iovecs advanced past them (the caller's msghdr
 * is left alone). Control data goes with the first bytes only: a resumed
 * call passes none (a receive that finds more sets MSG_CTRUNC in the
 * caller's msg_flags).
 */
static ssize_t msg_resume(int fd, struct msghdr *m, size_t done, int fl,
			  int out)
{
	if (done == 0)
		return out ? sendmsg(fd, m, fl) : recvmsg(fd, m, fl);
	struct iovec iov[64];
	size_t i = 0, n = 0;
	while (i < m->msg_iovlen && done >= m->msg_iov[i].iov_len)
		done -= m->msg_iov[i++].iov_len;
	for (; i < m->msg_iovlen && n < 64; i++, n++) {
		iov[n] = m->msg_iov[i];
		iov[n].iov_base = (char *)iov[n].iov_base + done;
		iov[n].iov_len -= done;
		done = 0;
	}
	struct msghdr c = {.msg_iov = iov, .msg_iovlen = n};
	ssize_t r = out ? sendmsg(fd, &c, fl) : recvmsg(fd, &c, fl);
	if (r > 0 && !out)
		m->msg_flags |= c.msg_flags & (MSG_CTRUNC | MSG_TRUNC);
	return r;
}

static int try_io(rio_loop *loop, rio_op *op)
{
	int fd = op->priv.fd;
	const typeof(op->priv.a.io) *io = &op->priv.a.io;
	/* io->done: bytes done so far, for MSG_WAITALL */
	int fl = (io->flags | MSG_DONTWAIT) & ~MSG_WAITALL;
	switch (op->priv.kind) {
	case RIO__OP_ACCEPT:
		return sys(accept4(fd, op->priv.a.accept.addr,
				   op->priv.a.accept.addrlen,
				   SOCK_NONBLOCK | SOCK_CLOEXEC));
	case RIO__OP_RECV:
		return sys(recv(fd, (char *)io->buf + io->done,
				io->len - io->done, fl));
	case RIO__OP_SEND:
		return sys(send(fd, (char *)io->buf + io->done,
				rio__fault_send_len(loop, io->len - io->done),
				fl | MSG_NOSIGNAL));
	case RIO__OP_READ:
		return sys(read(fd, (char *)io->buf + io->done,
				io->len - io->done));
	case RIO__OP_WRITE:
		rio__sigpipe_block(); /* this thread runs it */
		return sys(write(fd, (char *)io->buf + io->done,
				 io->len - io->done));
	case RIO__OP_RECVMSG:
		return sys(msg_resume(fd, io->msg, io->done, fl, 0));
	case RIO__OP_SENDMSG:
		return sys(msg_resume(fd, io->msg, io->done, fl | MSG_NOSIGNAL,
				      1));
	case RIO__OP_SPLICE_IN: case RIO__OP_SPLICE_OUT:
		/* An EAGAIN that is the pipe's must end the op: an
		 * edge-triggered socket that is ready would never wake it. */
		return rio__splice_try(op, 1);
	default:
		assert(!"not a plain io op");
		return -EINVAL;
	}
}

/* One multishot recv into a pool buffer. */
static enum attempt recv_multi(rio_loop *loop, rio_op *op, int *res,
			       unsigned *flags)
{
	rio_bufpool *pool = op->priv.a.multi.pool;
	struct rio__freelist *fl = pool->be;
	/* a faked dry pool has buffers: the recv resumes next turn */
	if (fl->n == 0 || rio__fault(loop, RIO__F_ENOBUFS))
		return NOBUF;
	uint16_t id = fl->ids[fl->n - 1];
	void *buf = pool->mem + (size_t)id * pool->size;
	*res = sys(recv(op->priv.fd, buf, pool->size, MSG_DONTWAIT));
	if (again(*res))
		return AGAIN;
	if (*res < 0 || (*res == 0 && !(op->priv.bits & RIO__B_DGRAM)))
		return DONE;
	if (*res == 0) { /* an empty datagram: no data, no buffer (io_uring's) */
		*flags = RIO_OP_F_MORE;
		return MORE;
	}
	fl->n--;
	rio__pool_mark_lent(pool, id);
	op->buf = buf;
	op->buf_id = id;
	*flags = RIO_OP_F_MORE | RIO_OP_F_BUF;
	return MORE;
}

/* The bytes a recv or send (or their msg forms) asks for. */
static size_t io_len(const rio_op *op)
{
	const struct msghdr *m = op->priv.a.io.msg;
	if (!m)
		return op->priv.a.io.len;
	size_t n = 0;
	for (size_t i = 0; i < m->msg_iovlen && n < INT_MAX; i++)
		n += m->msg_iov[i].iov_len;
	return n > INT_MAX ? INT_MAX : n; /* res is an int */
}

static int waitall(const rio_op *op)
{
	return rio__kind(op)->io && (op->priv.a.io.flags & MSG_WAITALL) &&
	       io_len(op) > 0;
}

/* An op a cancel, a close or its deadline ends with `err`: a MSG_WAITALL
 * op that has moved part of its bytes reports them instead, as io_uring
 * does (they are in, or gone from, the caller's buffer). */
static int cut_short(const rio_op *op, int err)
{
	return waitall(op) && op->priv.a.io.done > 0 ? (int)op->priv.a.io.done
						    : err;
}

/* MSG_WAITALL as io_uring does it: keep going until `len` bytes are done;
 * at end of stream or on an error, report what was done if anything. */
static enum attempt attempt_all(rio_loop *loop, rio_op *op, int *res)
{
	/* Every pass makes progress or returns, so this ends within len
	 * passes; stopping early would strand an edge-triggered fd. */
	size_t len = io_len(op);
	uint32_t *done = &op->priv.a.io.done;
	while (*done < len) {
		int n = try_io(loop, op);
		if (n == -EINTR)
			continue;
		if (again(n))
			return AGAIN;
		if (n <= 0) {
			*res = *done ? (int)*done : n;
			return DONE;
		}
		*done += (uint32_t)n;
	}
	*res = (int)*done;
	return DONE;
}

/* Try an op's syscall once. No callback runs here: the caller unlinks a
 * finished op before completing it, so the callback may resubmit it. */
static enum attempt attempt(rio_loop *loop, rio_op *op, int *res,
			    unsigned *flags)
{
	*flags = 0;
	switch (op->priv.kind) {
	case RIO__OP_CONNECT:
		return verify_connect(op, res);
	case RIO__OP_RECV_MULTI:
		return recv_multi(loop, op, res, flags);
	case RIO__OP_RECVMSG_MULTI:
		return rio__reactor_recv_dgrams(loop, op, res);
	case RIO__OP_SENDTO:
		return rio__reactor_send_dgrams(loop, op, res);
	case RIO__OP_SIGNAL:
		*res = rio__signal_read(loop, op);
		if (*res < 0)
			return again(*res) ? AGAIN : DONE;
		*flags = RIO_OP_F_MORE;
		return MORE;
	default:
		break;
	}
	if (waitall(op))
		return attempt_all(loop, op, res);
	for (int i = 0; i < 3; i++) {
		*res = try_io(loop, op);
		if (*res != -EINTR)
			break;
	}
	if (again(*res))
		return AGAIN;
	if (op->priv.kind == RIO__OP_ACCEPT && *res >= 0)
		*res = rio__fault_accept(loop, *res);
	if ((op->priv.bits & RIO__B_MULTISHOT) && *res >= 0) {
		*flags = RIO_OP_F_MORE;
		return MORE;
	}
	return DONE;
}

static void starve(rio_loop *loop, rio__opq *q, rio_op *op)
{
	rio__opq_remove(q, op);
	rio__starve(loop, op);
}

/* Flush both queues of fd with `res` and forget its registration: the
 * file is gone (closed through the loop, or EBADF behind its back). */
static int cut_short(const rio_op *op, int err);

static void flush_fd(rio_loop *loop, int fd, int res)
{
	struct reactor *r = R(loop);
	struct fdent *e = &r->fds[fd];
	rio_op *op;
	while ((op = rio__opq_pop(&e->rq)))
		defer(loop, op, cut_short(op, res));
	while ((op = rio__opq_pop(&e->wq)))
		defer(loop, op, cut_short(op, res));
	while ((op = rio__opq_pop(&e->pq)))
		defer(loop, op, res);
	rio__starved_end_fd(loop, fd, res);
	if (e->registered && !e->nopoll && !e->sigs)
		r->p->del(r->pfd, fd);
	e->registered = e->ready = e->nopoll = e->stream = e->eof = 0;
	e->sock = 0;
	e->soerr = 0;
	e->gen++;
}

/* The poller consumed a socket error to report an event (libkqueue reads
 * SO_ERROR): the syscalls then see only its aftermath, a connect that is
 * not connected, a recv at end of stream, a send with EPIPE. The first op
 * that sees the aftermath gets the error instead. An error a syscall
 * delivers itself (native kqueue leaves SO_ERROR alone) retires it. */
static enum attempt take_soerr(struct fdent *e, const rio_op *op,
			       enum attempt a, int *res)
{
	if (!e->soerr || a == NOBUF || a == MORE || a == BATCHED)
		return a;
	int take = 0;
	unsigned side = rio__kind(op)->side;
	if (op->priv.kind == RIO__OP_CONNECT)
		take = a == AGAIN;
	else if (op->priv.kind == RIO__OP_ACCEPT)
		take = 0;
	else if (side == RIO__SIDE_READ)
		/* EPIPE is a reset after the peer's FIN (CLOSE_WAIT), where
		 * Linux's recv reports the end of stream, not the error */
		take = a == DONE && *res == 0 && e->soerr != EPIPE;
	else if (side == RIO__SIDE_WRITE)
		take = a == DONE && *res == -EPIPE;
	if (take) {
		*res = -e->soerr;
		a = DONE;
	}
	if (a == DONE && *res < 0)
		e->soerr = 0;
	return a;
}

/* A stream socket that returned less than asked has no more data queued:
 * take the read side as not ready without the read that would say EAGAIN
 * (data arriving after it raises a fresh edge). Not for datagrams, where a
 * short read says nothing about the next one. Not once a hang-up was seen:
 * the EOF (or error) behind the data raises no new edge, so only the read
 * that returns it may end the readiness. */
static void note_short_read(struct reactor *r, struct fdent *e,
			    const rio_op *op, int res)
{
	uint64_t asked;
	if (!e->stream || e->eof || res <= 0 || r->p->eof_edge_unreliable)
		return;
	if (op->priv.kind == RIO__OP_RECV_MULTI)
		asked = op->priv.a.multi.pool->size;
	else if (op->priv.kind == RIO__OP_RECV &&
		 !(op->priv.a.io.flags & MSG_WAITALL))
		asked = op->priv.a.io.len;
	else
		return;
	if ((uint64_t)res < asked)
		e->ready &= (uint8_t)~RIO__EV_IN;
}

/* Run a direction's queue after readiness, up to a budget; what is left
 * goes on the hot list for the next turn. Callbacks may grow the fd table
 * or close the fd: re-read both after each one. */
static void run_queue(rio_loop *loop, int fd, unsigned dir, int from_event)
{
	struct reactor *r = R(loop);
	uint32_t gen = r->fds[fd].gen;
	int progress = 0;
	for (int budget = BUDGET; budget > 0; budget--) {
		/* Results deferred so far were decided before this attempt:
		 * they go first (their callbacks may change the queue). */
		rio__flush_pending(loop);
		struct fdent *e = &r->fds[fd];
		rio__opq *q = dir == RIO__EV_IN ? &e->rq : &e->wq;
		rio_op *op = q->head;
		if (!op || e->gen != gen || !(e->ready & dir))
			return;
		if (from_event && !progress && rio__fault(loop, RIO__F_EAGAIN)) {
			/* EAGAIN after readiness; the data is really there, so
			 * keep the ready bit and come back next turn, as a
			 * later real edge would make us do. */
			loop->ctr.spurious_wakeups++;
			mark_hot(r, fd);
			return;
		}
		int res = 0;
		unsigned flags;
		switch (take_soerr(e, op, attempt(loop, op, &res, &flags), &res)) {
		case AGAIN:
			if (from_event && !progress)
				loop->ctr.spurious_wakeups++;
			e->ready &= (uint8_t)~dir;
			return;
		case NOBUF:
			starve(loop, q, op);
			continue;
		case MORE:
			if (op->priv.kind == RIO__OP_RECVMSG_MULTI) {
				rio__reactor_deliver_dgrams(loop, op);
				break;
			}
			note_short_read(r, e, op, res);
			complete(loop, op, res, flags);
			break;
		case BATCHED: /* delivered by the next flush */
			break;
		case DONE:
			note_short_read(r, e, op, res);
			rio__opq_remove(q, op);
			complete(loop, op, res, 0);
			if (res == -EBADF && r->fds[fd].gen == gen)
				flush_fd(loop, fd, -EBADF);
			break;
		}
		progress = 1;
	}
	if (r->fds[fd].gen == gen)
		mark_hot(r, fd);
}

/* ---- submit ---- */

/* The reactor holds every op it has in user space: a cancel (a cancel-all's
 * too) takes it off its queue and settles it now. */
void rio__reactor_cancel(rio_loop *loop, rio_op *t)
{
	struct reactor *r = R(loop);
	assert(t->priv.state == RIO__ST_KERNEL);
	if (t->priv.kind != RIO__OP_TIMEOUT)
		rio__opq_remove(queue_of(&r->fds[t->priv.fd], t), t);
	defer(loop, t, cut_short(t, -ECANCELED));
}

static void submit_cancel(rio_loop *loop, rio_op *op)
{
	rio__reactor_cancel(loop, op->priv.a.cancel.target);
	defer(loop, op, 0);
}

static void submit_close(rio_loop *loop, rio_op *op)
{
	struct reactor *r = R(loop);
	int fd = op->priv.fd;
	if (fd >= 0 && (size_t)fd < r->nfds)
		flush_fd(loop, fd, -ECANCELED);
	defer(loop, op, close(fd) < 0 ? -errno : 0);
}

static void submit_connect(rio_loop *loop, rio_op *op, struct fdent *e)
{
	int res = revalidate(R(loop), op->priv.fd, e);
	if (res < 0) {
		defer(loop, op, res);
		return;
	}
	res = connect(op->priv.fd, op->priv.a.connect.addr,
		      op->priv.a.connect.addrlen);
	if (res == 0 || (errno != EINPROGRESS && errno != EINTR)) {
		defer(loop, op, res == 0 ? 0 : -errno);
		return;
	}
	/* A single write edge goes to the connect before any send. */
	rio__opq_push_front(&e->wq, op);
	e->ready &= (uint8_t)~RIO__EV_OUT;
}

/* Try first, if the queue is empty (FIFO); park on EAGAIN. Tried even when
 * the direction was last seen not ready: that syscall is also what finds an
 * fd closed behind the loop's back (EBADF), which no event would report. */
static void arm_io(rio_loop *loop, rio_op *op, struct fdent *e)
{
	struct reactor *r = R(loop);
	rio__opq *q = queue_of(e, op);
	unsigned dir = is_read_side(op) ? RIO__EV_IN : RIO__EV_OUT;
	/* multishot ops deliver from the poll loop; batched sends wait for
	 * the turn's others */
	int multishot = (op->priv.bits & RIO__B_MULTISHOT) ||
			rio__kind(op)->batch;
	int fd = op->priv.fd;
	/* accept4 has no MSG_DONTWAIT: know the fd is ours (non-blocking)
	 * before calling it. recv/send are safe to try first. */
	int checked = op->priv.kind == RIO__OP_ACCEPT;
	int res = checked ? revalidate(r, fd, e) : 0;
	if (res < 0) {
		defer(loop, op, res);
		return;
	}
	/* Tried at once, unless an op submitted before it on this fd waits
	 * to be tried (a multishot recv, which only the poll loop runs):
	 * ops on one fd run in the order they were submitted, so the first
	 * takes a socket error (fuzz seed 1412) */
	int behind = e->hot;
	if (rio__opq_empty(q) && !multishot && !behind) {
		unsigned flags;
		enum attempt a = take_soerr(e, op, attempt(loop, op, &res, &flags),
					    &res);
		if (a == DONE) {
			note_short_read(r, e, op, res);
			defer(loop, op, res);
			if (res == -EBADF)
				flush_fd(loop, fd, -EBADF);
			return;
		}
		e->ready &= (uint8_t)~dir;
	}
	if (!checked && (res = revalidate(r, fd, e)) < 0) {
		defer(loop, op, res);
		return;
	}
	rio__opq_push(q, op);
	if (behind)
		e->ready |= (uint8_t)dir; /* tried after those, this turn */
	/* multishot ops deliver from the poll loop, never from submit */
	if (multishot && (e->ready & dir))
		mark_hot(r, fd);
}

void rio__reactor_submit(rio_loop *loop, rio_op *op)
{
	struct reactor *r = R(loop);
	op->priv.be.reactor.heap_slot = 0;
	switch (op->priv.kind) {
	case RIO__OP_TIMEOUT:
		if (rio__timer_add(&r->timers, op))
			defer(loop, op, -ENOMEM);
		return;
	case RIO__OP_CANCEL:
		submit_cancel(loop, op);
		return;
	case RIO__OP_CLOSE:
		submit_close(loop, op);
		return;
	case RIO__OP_SHUTDOWN: /* never waits: the syscall, now */
		defer(loop, op, shutdown(op->priv.fd, op->priv.a.shutdown.how)
					? -errno : 0);
		return;
	default:
		break;
	}
	struct fdent *e = fd_ent(r, op->priv.fd);
	int res = op->priv.fd < 0 ? -EBADF
		: !e ? -ENOMEM : ensure_registered(r, op->priv.fd, e);
	if (res < 0) {
		defer(loop, op, res);
		return;
	}
	if ((op->priv.bits & RIO__B_DEADLINE) && rio__timer_add(&r->timers, op)) {
		defer(loop, op, -ENOMEM);
		return;
	}
	if (op->priv.kind == RIO__OP_CONNECT) {
		submit_connect(loop, op, e);
	} else if (op->priv.kind == RIO__OP_POLL) {
		/* try first: a hang-up that came before it raises no edge */
		int events = (int)op->priv.a.poll.events;
		res = fd_ready(r, op->priv.fd, (short)events);
		if (res > 0)
			res &= events;
		if (res != 0)
			defer(loop, op, res);
		else
			rio__opq_push(&e->pq, op);
	} else {
		arm_io(loop, op, e);
	}
}

/* ---- poll ---- */

static void expire_timers(rio_loop *loop)
{
	struct reactor *r = R(loop);
	uint64_t now = rio__now_ns();
	for (int n = 0; n < 4096; n++) {
		rio__flush_pending(loop); /* decided before this expiry */
		rio_op *op = rio__timer_expired(&r->timers, now);
		if (!op)
			break;
		if (op->priv.kind == RIO__OP_TIMEOUT) {
			rio__complete(loop, op, 0, 0);
			continue;
		}
		rio__opq_remove(queue_of(&r->fds[op->priv.fd], op), op);
		op->priv.bits |= RIO__B_TIMEDOUT;
		rio__complete(loop, op, cut_short(op, -ETIMEDOUT), 0);
	}
}

static void run_hot(rio_loop *loop)
{
	struct reactor *r = R(loop);
	size_t n = r->nhot;
	int list[BUDGET];
	while (n > 0) {
		size_t k = n < BUDGET ? n : BUDGET;
		/* take the oldest k; run_queue may append new ones */
		memcpy(list, r->hot, k * sizeof *list);
		memmove(r->hot, r->hot + k, (r->nhot - k) * sizeof *r->hot);
		r->nhot -= k;
		n -= k;
		for (size_t i = 0; i < k; i++) {
			r->fds[list[i]].hot = 0;
			run_queue(loop, list[i], RIO__EV_IN, 0);
			run_queue(loop, list[i], RIO__EV_OUT, 0);
		}
	}
}

/* The loop is closing an fd of its own: forget it, as a close does. */
void rio__reactor_drop_fd(rio_loop *loop, int fd)
{
	struct reactor *r = R(loop);
	if (fd < 0 || (size_t)fd >= r->nfds)
		return;
	flush_fd(loop, fd, -ECANCELED);
	uint64_t sigs = r->fds[fd].sigs;
	r->fds[fd].sigs = 0;
	for (int sig = 1; sig <= 64; sig++)
		if ((sigs & RIO_SIG(sig)) && --r->sigwatch[sig] == 0)
			r->p->sig_close(r->pfd, sig);
}

/* ---- signal ops, by the poller's own way (kqueue: EVFILT_SIGNAL) ---- */

int rio__reactor_sig_open(rio_loop *loop, const sigset_t *set)
{
	struct reactor *r = R(loop);
	int fd = r->p->sig_open(r->pfd, set);
	if (fd < 0)
		return fd;
	struct fdent *e = fd_ent(r, fd);
	if (!e) { /* the loop's knotes no other op needs go too */
		close(fd);
		for (int sig = 1; sig <= 64 && sig < NSIG; sig++)
			if (sigismember(set, sig) == 1 && !r->sigwatch[sig])
				r->p->sig_close(r->pfd, sig);
		return -ENOMEM;
	}
	for (int sig = 1; sig <= 64 && sig < NSIG; sig++)
		if (sigismember(set, sig) == 1) {
			e->sigs |= RIO_SIG(sig);
			r->sigwatch[sig]++;
		}
	return fd;
}

int rio__reactor_sig_read(rio_loop *loop, int fd, unsigned *times)
{
	return R(loop)->p->sig_read(fd, times);
}

/* Signal `sig` came: the signal ops watching it read their fds. */
static void signal_event(rio_loop *loop, int sig)
{
	struct reactor *r = R(loop);
	if (sig < 1 || sig > 64 || !r->sigwatch[sig])
		return;
	/* a callback may grow the table: its size re-read each time */
	for (size_t fd = 0; fd < r->nfds; fd++) {
		struct fdent *e = &r->fds[fd];
		if (!(e->sigs & RIO_SIG(sig)) || !e->registered)
			continue;
		e->ready |= RIO__EV_IN;
		run_queue(loop, (int)fd, RIO__EV_IN, 1);
	}
}

/* A starved recv's pool has buffers again: back to the head of its queue,
 * tried this turn. */
void rio__reactor_resume(rio_loop *loop, rio_op *op)
{
	struct reactor *r = R(loop);
	rio__opq_push_front(&r->fds[op->priv.fd].rq, op);
	mark_hot(r, op->priv.fd);
}

static void drain_wake(rio_loop *loop)
{
	char buf[64];
	while (read(R(loop)->wake_r, buf, sizeof buf) > 0)
		;
	loop->ctr.wakeups++;
}

/* The poller may have dropped events (RIO__PEV_LOST): readiness is only a
 * hint, so take every fd as ready both ways and let the syscalls say. */
static void resync(rio_loop *loop)
{
	struct reactor *r = R(loop);
	char buf[64];
	ssize_t got = 0, k;
	while ((k = read(r->wake_r, buf, sizeof buf)) > 0)
		got += k; /* its edge may be lost too: the wakeup is this turn */
	if (got)
		loop->ctr.wakeups++;
	for (size_t fd = 0; fd < r->nfds; fd++) {
		struct fdent *e = &r->fds[fd];
		if (!e->registered)
			continue;
		e->ready |= RIO__EV_IN | RIO__EV_OUT;
		e->eof = 1; /* a lost event may have been the hang-up */
		if (!rio__opq_empty(&e->rq) || !rio__opq_empty(&e->wq))
			mark_hot(r, (int)fd);
	}
}

/* Any event of the fd: one poll(2) says what is ready, and each rio_poll
 * op that asked for some of it completes, oldest first; the others wait
 * (readiness was a hint). A callback may cancel, submit or close: each
 * completion starts again from the head, and a new file ends the pass. */
static void run_polls(rio_loop *loop, int fd)
{
	struct reactor *r = R(loop);
	uint32_t gen = r->fds[fd].gen;
	short events = 0;
	rio__flush_pending(loop); /* decided before this readiness */
	if (r->fds[fd].gen != gen)
		return;
	for (rio_op *op = r->fds[fd].pq.head; op; op = op->priv.next)
		events |= (short)op->priv.a.poll.events;
	int ready = fd_ready(r, fd, events);
	if (ready == 0)
		return;
	for (int budget = BUDGET; budget > 0; budget--) {
		struct fdent *e = &r->fds[fd];
		rio_op *op = e->pq.head;
		while (op && ready > 0 && !(ready & (int)op->priv.a.poll.events))
			op = op->priv.next;
		if (!op || e->gen != gen)
			return;
		rio__opq_remove(&e->pq, op);
		complete(loop, op,
			 ready < 0 ? ready : ready & (int)op->priv.a.poll.events, 0);
	}
}

static void handle_event(rio_loop *loop, const struct rio__pev *ev)
{
	struct reactor *r = R(loop);
	if (ev->fd == RIO__PEV_LOST) {
		resync(loop);
		return;
	}
	if (ev->fd == RIO__PEV_SIG) {
		signal_event(loop, (int)ev->gen);
		return;
	}
	if (ev->gen == WAKE_GEN) {
		drain_wake(loop);
		return;
	}
	if (ev->fd < 0 || (size_t)ev->fd >= r->nfds)
		return;
	struct fdent *e = &r->fds[ev->fd];
	if (ev->gen != e->gen || !e->registered)
		return; /* an event of a closed file: stale */
	/* libkqueue's EV_EOF error on a pipe is no socket error */
	if (ev->err && e->sock) { /* rare: the fstat only then */
		e->soerr = ev->err;
		e->ino = file_ino(ev->fd);
	}
	unsigned any = RIO__EV_ERR | RIO__EV_HUP;
	if (ev->events & (any | RIO__EV_RDHUP))
		e->eof = 1;
	/* Polls first, as io_uring wakes every waiter of the socket at once:
	 * a poll sees the readiness this event brought before a recv or a
	 * send of the same turn uses it up (a datagram a recv takes, room a
	 * send fills); after them, it would wait on (fuzz seed 93903189). */
	if (!rio__opq_empty(&e->pq)) {
		run_polls(loop, ev->fd);
		e = &r->fds[ev->fd];
		if (ev->gen != e->gen)
			return;
	}
	if (ev->events & (RIO__EV_IN | any)) {
		e->ready |= RIO__EV_IN;
		run_queue(loop, ev->fd, RIO__EV_IN, 1);
	}
	e = &r->fds[ev->fd];
	if (ev->gen == e->gen && (ev->events & (RIO__EV_OUT | any))) {
		e->ready |= RIO__EV_OUT;
		run_queue(loop, ev->fd, RIO__EV_OUT, 1);
	}
}

#ifdef RINGIO_FAULT_HOOKS
/* Readiness that is not real: for fds with parked ops, a fake edge on the
 * direction they wait for, or an ERR|HUP-only edge for a pending connect. */
static int inject_events(rio_loop *loop, struct rio__pev *evs, int n)
{
	struct reactor *r = R(loop);
	for (size_t fd = 0; fd < r->nfds && n < MAX_EVENTS; fd++) {
		struct fdent *e = &r->fds[fd];
		unsigned ev = 0;
		if (!e->registered || (rio__opq_empty(&e->rq) &&
				       rio__opq_empty(&e->wq) &&
				       rio__opq_empty(&e->pq)))
			continue;
		if (!rio__opq_empty(&e->wq) &&
		    e->wq.head->priv.kind == RIO__OP_CONNECT &&
		    rio__fault(loop, RIO__F_ERRHUP))
			ev = RIO__EV_ERR | RIO__EV_HUP;
		else if (rio__fault(loop, RIO__F_SPURIOUS))
			ev = rio__opq_empty(&e->rq) ? RIO__EV_OUT : RIO__EV_IN;
		if (ev)
			evs[n++] = (struct rio__pev){
				.fd = (int)fd, .gen = e->gen, .events = ev};
	}
	return n;
}
#else
static int inject_events(rio_loop *loop, struct rio__pev *evs, int n)
{
	return n;
}
#endif

int rio__reactor_poll(rio_loop *loop, int block)
{
	struct reactor *r = R(loop);
	int timeout = 0;
	if (block && r->nhot == 0)
		timeout = rio__timer_wait_ms(&r->timers, rio__now_ns());
	struct rio__pev evs[MAX_EVENTS];
	int n = r->p->wait(r->pfd, evs, MAX_EVENTS, timeout);
	loop->ctr.enters++;
	if (n < 0 && n != -EINTR)
		return n;
	if (n < 0)
		n = 0;
	n = inject_events(loop, evs, n);
	for (int i = 0; i < n; i++)
		handle_event(loop, &evs[i]);
	run_hot(loop);
	expire_timers(loop);
	return 0;
}

void rio__reactor_wake(rio_loop *loop)
{
	char c = 1;
	ssize_t n = write(R(loop)->wake_w, &c, 1);
	(void)n; /* EAGAIN: the pipe is full, a wakeup is already pending */
}

/* ---- setup ---- */

static int nonblock_pipe(int fds[2])
{
	if (pipe(fds) < 0)
		return -errno;
	for (int i = 0; i < 2; i++)
		if (fcntl(fds[i], F_SETFL, O_NONBLOCK) < 0 ||
		    fcntl(fds[i], F_SETFD, FD_CLOEXEC) < 0)
			return -errno;
	return 0;
}

int rio__reactor_init(rio_loop *loop, const rio_loop_opts *opts, char *why,
		      size_t why_len)
{
	struct reactor *r = calloc(1, sizeof *r);
	if (!r)
		return -ENOMEM;
	r->p = loop->be->poller;
	r->wake_r = r->wake_w = -1;
	r->pfd = r->p->open();
	int res = r->pfd < 0 ? r->pfd : 0;
	int pfds[2] = {-1, -1};
	if (!res)
		res = nonblock_pipe(pfds);
	r->wake_r = pfds[0];
	r->wake_w = pfds[1];
	if (!res)
		res = r->p->add(r->pfd, r->wake_r, WAKE_GEN);
	if (res < 0) {
		if (r->pfd >= 0)
			close(r->pfd);
		if (pfds[0] >= 0)
			close(pfds[0]), close(pfds[1]);
		free(r);
		return res;
	}
	loop->be_data = r;
	size_t used = strlen(loop->msg);
	if (used == 0)
		snprintf(loop->msg, sizeof loop->msg, "%s", r->p->name);
	(void)opts;
	(void)why;
	(void)why_len;
	return 0;
}

void rio__reactor_fini(rio_loop *loop)
{
	struct reactor *r = R(loop);
	close(r->pfd);
	close(r->wake_r);
	close(r->wake_w);
	rio__timer_free(&r->timers);
	free(r->fds);
	free(r->hot);
	free(r);
}

int rio__reactor_pool_init(rio_bufpool *pool)
{
	pool->be = rio__freelist_new(pool->count);
	return pool->be ? 0 : -ENOMEM;
}

void rio__reactor_pool_fini(rio_bufpool *pool)
{
	free(pool->be);
}

void rio__reactor_pool_put(rio_bufpool *pool, uint16_t id)
{
	struct rio__freelist *fl = pool->be;
	fl->ids[fl->n++] = id;
}


/*
 * Datagrams on the readiness fallback, in batches: a multishot datagram
 * receive takes as many as there are free pool buffers (up to
 * DGRAM_BATCH) in one recvmmsg and lays each out as io_uring does
 * (struct rio__dgram_hdr, the sender, the control data, the payload);
 * the datagram sends queued on one socket in a turn go in one sendmmsg.
 * Where there is neither, one recvmsg / sendmsg per datagram.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <string.h>
#include <sys/socket.h>

#include "reactor_int.h"

#if defined(__linux__) || defined(__FreeBSD__)
static int recv_batch(int fd, struct mmsghdr *mm, unsigned n, int fl)
{
	return recvmmsg(fd, mm, n, fl, NULL);
}

static int send_batch(int fd, struct mmsghdr *mm, unsigned n, int fl)
{
	return sendmmsg(fd, mm, n, fl);
}
#else /* one call per datagram where there is no recvmmsg / sendmmsg */
static int msg_batch(int fd, struct mmsghdr *mm, unsigned n, int fl,
		     int out)
{
	unsigned i = 0;
	for (; i < n; i++) {
		ssize_t k = out ? sendmsg(fd, &mm[i].msg_hdr, fl)
				: recvmsg(fd, &mm[i].msg_hdr, fl);
		if (k < 0)
			return i ? (int)i : -1;
		mm[i].msg_len = (unsigned)k;
	}
	return (int)i;
}

static int recv_batch(int fd, struct mmsghdr *mm, unsigned n, int fl)
{
	return msg_batch(fd, mm, n, fl, 0);
}

static int send_batch(int fd, struct mmsghdr *mm, unsigned n, int fl)
{
	return msg_batch(fd, mm, n, fl, 1);
}
#endif

/* Datagrams into as many pool buffers as are free (up to DGRAM_BATCH),
 * in one call, each laid out as io_uring lays it out (rio_dgram_get): the
 * header, the sender's address, the control data, the payload. MSG_TRUNC:
 * a cut datagram's real length, as io_uring's header gives it. *res is
 * how many arrived (on r->got, lent out), delivered by deliver_dgrams. */
enum attempt rio__reactor_recv_dgrams(rio_loop *loop, rio_op *op, int *res)
{
	struct reactor *r = R(loop);
	rio_bufpool *pool = op->priv.a.multi.pool;
	struct freelist *fl = pool->be;
	if (fl->n == 0 || rio__fault(loop, RIO__F_ENOBUFS))
		return NOBUF;
	size_t off = rio__dgram_payload_off(op);
	uint32_t ctl = op->priv.a.multi.control;
	unsigned k = fl->n < DGRAM_BATCH ? fl->n : DGRAM_BATCH;
	struct mmsghdr mm[DGRAM_BATCH];
	struct iovec iov[DGRAM_BATCH];
	for (unsigned i = 0; i < k; i++) {
		unsigned char *b = pool->mem +
				   (size_t)fl->ids[fl->n - 1 - i] * pool->size;
		iov[i] = (struct iovec){b + off, pool->size - off};
		mm[i].msg_len = 0;
		mm[i].msg_hdr = (struct msghdr){
			.msg_name = b + sizeof(struct rio__dgram_hdr),
			.msg_namelen = RIO__DGRAM_NAME,
			.msg_iov = &iov[i],
			.msg_iovlen = 1,
			.msg_control = ctl ? b + RIO_DGRAM_HEADROOM : NULL,
			.msg_controllen = ctl,
		};
	}
	int n = recv_batch(op->priv.fd, mm, k, MSG_DONTWAIT | MSG_TRUNC);
	if (n < 0) {
		*res = -errno;
		return again(*res) ? AGAIN : DONE;
	}
	for (int i = 0; i < n; i++) {
		uint16_t id = fl->ids[--fl->n];
		struct rio__dgram_hdr *h =
			(void *)(pool->mem + (size_t)id * pool->size);
		*h = (struct rio__dgram_hdr){
			.namelen = mm[i].msg_hdr.msg_namelen,
			.controllen = (uint32_t)mm[i].msg_hdr.msg_controllen,
			.payloadlen = mm[i].msg_len,
			.flags = (uint32_t)mm[i].msg_hdr.msg_flags,
		};
		rio__pool_mark_lent(pool, id);
		r->got[i] = id;
	}
	r->ngot = (unsigned)n;
	*res = n;
	return MORE;
}

/* One completion per datagram recv_dgrams took, in order. A callback that
 * cancels the op or closes its fd ends it after these: they had arrived
 * (io_uring delivers what it posted before a cancel, too). */
void rio__reactor_deliver_dgrams(rio_loop *loop, rio_op *op)
{
	struct reactor *r = R(loop);
	uint16_t got[DGRAM_BATCH];
	unsigned n = r->ngot;
	memcpy(got, r->got, n * sizeof *got);
	r->ngot = 0;
	rio_bufpool *pool = op->priv.a.multi.pool;
	size_t off = rio__dgram_payload_off(op);
	for (unsigned i = 0; i < n; i++) {
		unsigned char *b = pool->mem + (size_t)got[i] * pool->size;
		const struct rio__dgram_hdr *h = (const void *)b;
		size_t room = pool->size - off;
		unsigned flags = RIO_OP_F_MORE | RIO_OP_F_BUF;
		if (h->flags & MSG_TRUNC)
			flags |= RIO_OP_F_TRUNC;
		op->buf = b + off;
		op->buf_id = got[i];
		complete(loop, op,
			 (int)(h->payloadlen < room ? h->payloadlen : room),
			 flags);
	}
}

/* The datagram sends queued on op's fd from op on, with op's flags, in one
 * sendmmsg: those sent leave the queue with their results deferred (a
 * cancel now finds them decided), delivered in order before the next
 * attempt. An error or EAGAIN is the first unsent one's. */
enum attempt rio__reactor_send_dgrams(rio_loop *loop, rio_op *op, int *res)
{
	struct reactor *r = R(loop);
	rio__opq *q = &r->fds[op->priv.fd].wq;
	int fl = op->priv.a.sendto.flags;
	struct mmsghdr mm[DGRAM_BATCH];
	struct iovec iov[DGRAM_BATCH];
	rio_op *ops[DGRAM_BATCH];
	unsigned k = 0;
	for (rio_op *o = op; o && k < DGRAM_BATCH &&
			     o->priv.kind == RIO__OP_SENDTO &&
			     o->priv.a.sendto.flags == fl;
	     o = o->priv.next, k++) {
		const typeof(o->priv.a.sendto) *a = &o->priv.a.sendto;
		ops[k] = o;
		iov[k] = (struct iovec){(void *)a->buf, a->len};
		mm[k].msg_len = 0;
		mm[k].msg_hdr = (struct msghdr){
			.msg_name = (void *)a->to,
			.msg_namelen = a->tolen,
			.msg_iov = &iov[k],
			.msg_iovlen = 1,
		};
	}
	int n = send_batch(op->priv.fd, mm, k, fl | MSG_DONTWAIT);
	if (n <= 0) {
		*res = n < 0 ? -errno : -EAGAIN;
		return again(*res) ? AGAIN : DONE;
	}
	for (int i = 0; i < n && i < (int)k; i++) {
		rio__opq_remove(q, ops[i]);
		defer(loop, ops[i], (int)mm[i].msg_len);
	}
	return BATCHED;
}

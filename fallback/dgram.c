/*
 * Datagrams on the readiness fallback, in batches: a multishot datagram
 * receive takes as many as there are free pool buffers in one recvmmsg
 * (the core's src/dgram.c, which io_uring shares); the datagram sends
 * queued on one socket in a turn go in one sendmmsg. Where there is
 * neither, one recvmsg / sendmsg per datagram.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <string.h>
#include <sys/socket.h>

#include "reactor_int.h"

/* Datagrams into as many pool buffers as are free, in one call (the
 * core's rio__dgram_recv): MORE with *res of them taken (r->got), lent
 * out and delivered by deliver_dgrams; NOBUF; AGAIN; or DONE with the
 * socket's error. */
enum attempt rio__reactor_recv_dgrams(rio_loop *loop, rio_op *op, int *res)
{
	struct reactor *r = R(loop);
	int n = rio__dgram_recv(loop, op, op->priv.a.multi.pool->be, r->got);
	if (n == -ENOBUFS)
		return NOBUF;
	*res = n;
	if (n < 0)
		return again(n) ? AGAIN : DONE;
	r->ngot = (unsigned)n;
	return MORE;
}

/* One completion per datagram recv_dgrams took, in order (a callback may
 * take more into r->got: delivered from a copy). */
void rio__reactor_deliver_dgrams(rio_loop *loop, rio_op *op)
{
	struct reactor *r = R(loop);
	uint16_t got[RIO__DGRAM_BATCH];
	unsigned n = r->ngot;
	memcpy(got, r->got, n * sizeof *got);
	r->ngot = 0;
	rio__dgram_deliver(loop, op, got, n);
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
	struct mmsghdr mm[RIO__DGRAM_BATCH];
	struct iovec iov[RIO__DGRAM_BATCH];
	rio_op *ops[RIO__DGRAM_BATCH];
	unsigned k = 0;
	for (rio_op *o = op; o && k < RIO__DGRAM_BATCH &&
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
	int n = rio__mmsg(op->priv.fd, mm, k, fl | MSG_DONTWAIT, 1);
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

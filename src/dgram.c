/*
 * Datagrams received in batches, for every backend: a multishot datagram
 * receive takes as many datagrams as there are free buffers in its pool's
 * user-space free list (up to RIO__DGRAM_BATCH) in one recvmmsg, and lays
 * each out as io_uring's multishot recvmsg does (struct rio__dgram_hdr,
 * the sender, the control data, the payload), so a caller reads them the
 * same way (rio_dgram_get) whichever backend took them. The fallback
 * receives every datagram this way; io_uring does for a pool it has not
 * lent to the kernel (uring_bufring.c), after a poll of the socket, since
 * one recvmmsg of 32 datagrams costs less than 32 multishot CQEs.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "internal.h"

struct rio__freelist *rio__freelist_new(unsigned count)
{
	struct rio__freelist *fl =
		malloc(sizeof *fl + count * sizeof(uint16_t));
	if (!fl)
		return NULL;
	/* lend the lowest ids first, as a fresh io_uring buffer ring does */
	fl->n = count;
	for (unsigned i = 0; i < count; i++)
		fl->ids[i] = (uint16_t)(count - 1 - i);
	return fl;
}

#if defined(__linux__) || defined(__FreeBSD__)
int rio__mmsg(int fd, struct mmsghdr *mm, unsigned n, int fl, int out)
{
	return out ? sendmmsg(fd, mm, n, fl) : recvmmsg(fd, mm, n, fl, NULL);
}
#else /* one call per datagram where there is no recvmmsg / sendmmsg */
int rio__mmsg(int fd, struct mmsghdr *mm, unsigned n, int fl, int out)
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
#endif

int rio__dgram_recv(rio_loop *loop, rio_op *op, struct rio__freelist *fl,
		    uint16_t *got)
{
	rio_bufpool *pool = op->priv.a.multi.pool;
	if (fl->n == 0 || rio__fault(loop, RIO__F_ENOBUFS))
		return -ENOBUFS;
	size_t off = rio__dgram_payload_off(op);
	uint32_t ctl = op->priv.a.multi.control;
	unsigned k = rio__dgram_offer(fl);
	struct mmsghdr mm[RIO__DGRAM_BATCH];
	struct iovec iov[RIO__DGRAM_BATCH];
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
	int n = rio__mmsg(op->priv.fd, mm, k, MSG_DONTWAIT | MSG_TRUNC, 0);
	if (n < 0)
		return errno == EWOULDBLOCK ? -EAGAIN : -errno;
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
		got[i] = id;
	}
	return n;
}

void rio__dgram_deliver(rio_loop *loop, rio_op *op, const uint16_t *got,
			unsigned n)
{
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
		rio__complete(loop, op,
			      (int)(h->payloadlen < room ? h->payloadlen : room),
			      flags);
	}
}

/*
 * The io_uring backend's provided-buffer rings. A pool's free buffers are
 * kept in user space (a free list) until a receive that lets the kernel
 * pick buffers is first armed on it; from then on they are lent to the
 * kernel through a registered ring (IORING_REGISTER_PBUF_RING), given
 * back to it one by one as the caller returns them. A pool that only ever
 * serves multishot datagram receives stays in user space: those take
 * their datagrams in batches, with recvmmsg (src/dgram.c), which is where
 * io_uring's one CQE per datagram loses to a readiness loop.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <sys/mman.h>

#include "uring.h"

struct bufring {
	struct io_uring_buf_ring *br;
	size_t bytes;
	int kernel;               /* lent to the kernel: the ring holds them */
	struct rio__freelist *fl; /* until then, the free ones */
};

int rio__uring_pool_init(rio_bufpool *pool)
{
	struct uring *u = rio__uring(pool->loop);
	struct bufring *b = calloc(1, sizeof *b);
	if (!b)
		return -ENOMEM;
	/* liburing 2.3 has no io_uring_setup_buf_ring: map the ring
	 * ourselves; the kernel wants it page-aligned. */
	b->bytes = pool->count * sizeof(struct io_uring_buf);
	b->br = mmap(NULL, b->bytes, PROT_READ | PROT_WRITE,
		     MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
	if (b->br == MAP_FAILED) {
		free(b);
		return -ENOMEM;
	}
	struct io_uring_buf_reg reg = {
		.ring_addr = (uint64_t)(uintptr_t)b->br,
		.ring_entries = pool->count,
		.bgid = pool->bgid,
	};
	int r = io_uring_register_buf_ring(&u->ring, &reg, 0);
	if (r < 0) {
		munmap(b->br, b->bytes);
		free(b);
		return r;
	}
	io_uring_buf_ring_init(b->br);
	b->fl = rio__freelist_new(pool->count);
	if (!b->fl) {
		io_uring_unregister_buf_ring(&u->ring, pool->bgid);
		munmap(b->br, b->bytes);
		free(b);
		return -ENOMEM;
	}
	pool->be = b;
	return 0;
}

int rio__uring_pool_user(rio_bufpool *pool)
{
	return !((struct bufring *)pool->be)->kernel;
}

struct rio__freelist *rio__uring_pool_free(rio_bufpool *pool)
{
	return ((struct bufring *)pool->be)->fl;
}

void rio__uring_pool_lend(rio_bufpool *pool)
{
	struct bufring *b = pool->be;
	if (b->kernel)
		return;
	b->kernel = 1;
	int mask = io_uring_buf_ring_mask(pool->count);
	for (unsigned i = 0; i < b->fl->n; i++) /* the lowest id first */
		io_uring_buf_ring_add(b->br,
				      pool->mem +
					      (size_t)b->fl->ids[b->fl->n - 1 - i] *
						      pool->size,
				      (unsigned)pool->size,
				      b->fl->ids[b->fl->n - 1 - i], mask, (int)i);
	io_uring_buf_ring_advance(b->br, (int)b->fl->n);
	b->fl->n = 0;
}

void rio__uring_pool_fini(rio_bufpool *pool)
{
	struct bufring *b = pool->be;
	io_uring_unregister_buf_ring(&rio__uring(pool->loop)->ring, pool->bgid);
	munmap(b->br, b->bytes);
	free(b->fl);
	free(b);
}

void rio__uring_pool_put(rio_bufpool *pool, uint16_t id)
{
	struct bufring *b = pool->be;
	if (!b->kernel) {
		b->fl->ids[b->fl->n++] = id;
		return;
	}
	io_uring_buf_ring_add(b->br, pool->mem + (size_t)id * pool->size,
			      (unsigned)pool->size, id,
			      io_uring_buf_ring_mask(pool->count), 0);
	io_uring_buf_ring_advance(b->br, 1);
}

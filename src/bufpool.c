/*
 * Provided-buffer pools, the part every backend shares: the memory, which
 * buffers are lent to the caller, argument checks, and the multishot recvs
 * a dry pool starves, which wait here until buffers come back. The backend
 * keeps its own view of the free buffers (the fallback: a free list;
 * io_uring: a free list until the kernel picks them, then a registered
 * buffer ring).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <sys/mman.h>

#include "internal.h"

int rio_bufpool_create(rio_loop *loop, unsigned count, size_t size,
		       rio_bufpool **out)
{
	if (!loop || !out || count == 0 || count > 32768 ||
	    (count & (count - 1)) || size == 0 || size > (1u << 30))
		return -EINVAL;
	*out = NULL;
	rio_bufpool *pool = calloc(1, sizeof *pool);
	if (!pool)
		return -ENOMEM;
	pool->loop = loop;
	pool->size = size;
	pool->count = count;
	pool->bgid = loop->next_bgid++;
	pool->lent = calloc((count + 7) / 8, 1);
	pool->link = calloc(count, sizeof *pool->link);
	/* Populated up front: a buffer ring cycles through every buffer, and
	 * first-touch page faults on the receive path cost ~3x throughput
	 * until the whole pool has been touched once. */
	pool->mem_len = ((size_t)count * size + 4095) & ~(size_t)4095;
	pool->mem = mmap(NULL, pool->mem_len, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
	if (pool->mem == MAP_FAILED)
		pool->mem = NULL;
	int r = pool->lent && pool->link && pool->mem ? 0 : -ENOMEM;
	if (r == 0)
		r = loop->be->pool_init(pool);
	if (r < 0) {
		free(pool->lent);
		free(pool->link);
		if (pool->mem)
			munmap(pool->mem, pool->mem_len);
		free(pool);
		return r;
	}
	loop->npools++;
	*out = pool;
	return 0;
}

int rio_bufpool_destroy(rio_bufpool *pool)
{
	if (!pool)
		return -EINVAL;
	if (pool->users)
		return -EBUSY;
	pool->loop->be->pool_fini(pool);
	pool->loop->npools--;
	free(pool->lent);
	free(pool->link);
	munmap(pool->mem, pool->mem_len);
	free(pool);
	return 0;
}

void rio__pool_mark_lent(rio_bufpool *pool, uint16_t id)
{
	unsigned char bit = (unsigned char)(1u << (id % 8));
	assert(!(pool->lent[id / 8] & bit));
	pool->lent[id / 8] |= bit;
	pool->nlent++;
}

int rio_bufpool_put(rio_bufpool *pool, uint16_t id)
{
	if (!pool || id >= pool->count)
		return -EINVAL;
	unsigned char bit = (unsigned char)(1u << (id % 8));
	if (!(pool->lent[id / 8] & bit))
		return -EINVAL;
	pool->lent[id / 8] &= (unsigned char)~bit;
	pool->nlent--;
	pool->loop->be->pool_put(pool, id);
	if (!rio__opq_empty(&pool->loop->starved))
		pool->loop->resume_starved = 1;
	return 0;
}

void *rio_bufpool_buf(const rio_bufpool *pool, uint16_t id)
{
	if (!pool || id >= pool->count)
		return NULL;
	return pool->mem + (size_t)id * pool->size;
}

size_t rio_bufpool_size(const rio_bufpool *pool)
{
	return pool ? pool->size : 0;
}

/* ---- multishot recvs starved of buffers ---- */

static int has_buffers(const rio_bufpool *pool)
{
	return pool->nlent < pool->count;
}

void rio__starve(rio_loop *loop, rio_op *op)
{
	op->priv.state = RIO__ST_STARVED;
	rio__opq_push(&loop->starved, op);
	/* Buffers may have come back between the pool running dry and now
	 * (io_uring: the CQE that says so being read). */
	if (has_buffers(op->priv.a.multi.pool))
		loop->resume_starved = 1;
}

/* Once per turn, not once per returned buffer. A resumed recv with no data
 * waiting costs no buffer; one that finds the pool dry again simply
 * starves again. */
void rio__resume_starved(rio_loop *loop)
{
	if (!loop->resume_starved)
		return;
	loop->resume_starved = 0;
	rio_op *op = loop->starved.head;
	while (op) {
		rio_op *next = op->priv.next;
		if (has_buffers(op->priv.a.multi.pool)) {
			rio__opq_remove(&loop->starved, op);
			loop->ctr.enobufs_rearms++;
			op->priv.state = RIO__ST_KERNEL;
			loop->be->resume(loop, op);
		}
		op = next;
	}
}

void rio__starved_end_fd(rio_loop *loop, int fd, int res)
{
	rio_op *op = loop->starved.head;
	while (op) {
		rio_op *next = op->priv.next;
		if (op->priv.fd == fd) {
			rio__opq_remove(&loop->starved, op);
			rio__defer(loop, op, res);
		}
		op = next;
	}
}

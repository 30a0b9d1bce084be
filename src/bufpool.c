/*
 * Provided-buffer pools, the part every backend shares: the memory, which
 * buffers are lent to the caller, and argument checks. The backend keeps
 * its own view of the free buffers (io_uring: a registered buffer ring).
 */
#include <errno.h>
#include <stdlib.h>

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
	pool->mem = aligned_alloc(4096, ((count * size) + 4095) & ~(size_t)4095);
	int r = pool->lent && pool->mem ? 0 : -ENOMEM;
	if (r == 0)
		r = loop->be->pool_init(pool);
	if (r < 0) {
		free(pool->lent);
		free(pool->mem);
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
	free(pool->mem);
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

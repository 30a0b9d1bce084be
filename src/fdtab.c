/* Ops in flight per fd number, by generation; see fdtab.h. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

int rio__grow(void **tab, size_t *n, size_t size, size_t i)
{
	if (i < *n)
		return 0;
	size_t m = *n ? *n : 64;
	while (m <= i)
		m *= 2;
	char *t = realloc(*tab, m * size);
	if (!t)
		return -ENOMEM;
	memset(t + *n * size, 0, (m - *n) * size);
	*tab = t;
	*n = m;
	return 0;
}

static struct rio__fdslot *slot(const struct rio__fdtab *t, int fd)
{
	return fd >= 0 && (size_t)fd < t->n ? &t->slots[fd] : NULL;
}

static struct rio__fdslot *slot_grow(struct rio__fdtab *t, int fd)
{
	if (fd < 0 || rio__grow((void **)&t->slots, &t->n, sizeof *t->slots,
				(size_t)fd) < 0)
		return NULL;
	return &t->slots[fd];
}

void rio__fd_track(rio_loop *loop, rio_op *op)
{
	struct rio__fdslot *s = slot_grow(&loop->fds, op->priv.fd);
	if (!s)
		return;
	s->inflight++;
	op->priv.gen = s->gen;
	op->priv.bits |= RIO__B_TRACKED;
}

void rio__fd_close(rio_loop *loop, rio_op *close_op)
{
	struct rio__fdslot *s = slot_grow(&loop->fds, close_op->priv.fd);
	close_op->priv.a.close.waiting = 0;
	close_op->priv.a.close.next = NULL;
	if (!s)
		return; /* no table: the close completes on its own result */
	close_op->priv.gen = s->gen;
	close_op->priv.a.close.waiting = s->inflight;
	s->inflight = 0;
	s->gen++;
	if (close_op->priv.a.close.waiting) {
		close_op->priv.a.close.next = s->closers;
		s->closers = close_op;
	}
}

int rio__fd_closing(const rio_loop *loop, const rio_op *op)
{
	if (!(op->priv.bits & RIO__B_TRACKED))
		return 0;
	const struct rio__fdslot *s = slot(&loop->fds, op->priv.fd);
	return s && op->priv.gen != s->gen;
}

uint32_t rio__fd_gen(rio_loop *loop, int fd)
{
	struct rio__fdslot *s = slot_grow(&loop->fds, fd);
	return s ? s->gen : 0;
}

void rio__fd_watch(rio_loop *loop, struct rio__fdwatch *w, rio_op *op, int fd)
{
	struct rio__fdslot *s = slot_grow(&loop->fds, fd);
	w->fd = fd;
	w->gen = s ? s->gen : 0;
	w->op = s ? op : NULL;
	w->next = s ? s->watches : NULL;
	if (s)
		s->watches = w;
}

void rio__fd_unwatch(rio_loop *loop, struct rio__fdwatch *w)
{
	if (!w->op)
		return;
	struct rio__fdslot *s = slot(&loop->fds, w->fd);
	struct rio__fdwatch **pw = &s->watches;
	while (*pw != w) /* a few: the composites on one socket */
		pw = &(*pw)->next;
	*pw = w->next;
	w->next = NULL;
	w->op = NULL;
}

void rio__fd_closed(rio_loop *loop, int fd, uint32_t gen)
{
	/* from the head again after each: a composite's cancel may unlink
	 * others (a relay that ends unlinks its other socket's watch) */
	for (;;) {
		struct rio__fdslot *s = slot(&loop->fds, fd);
		struct rio__fdwatch *w = s ? s->watches : NULL;
		while (w && w->gen != gen)
			w = w->next;
		if (!w)
			return;
		rio_op *op = w->op;
		rio__fd_unwatch(loop, w);
		op->priv.a.composite.cancel(loop, op);
	}
}

int rio__fd_gen_ended(const rio_loop *loop, int fd, uint32_t gen)
{
	const struct rio__fdslot *s = slot(&loop->fds, fd);
	return s && gen != s->gen;
}

unsigned rio__fd_others(const rio_loop *loop, const rio_op *op)
{
	const struct rio__fdslot *s = slot(&loop->fds, op->priv.fd);
	if (!s)
		return 0;
	unsigned self = (op->priv.bits & RIO__B_TRACKED) && op->priv.gen == s->gen;
	return s->inflight - self;
}

rio_op *rio__fd_done(struct rio__fdtab *t, int fd, uint32_t gen)
{
	struct rio__fdslot *s = slot(t, fd);
	assert(s);
	if (gen == s->gen) {
		assert(s->inflight > 0);
		s->inflight--;
		return NULL;
	}
	rio_op **pc = &s->closers;
	while (*pc && (*pc)->priv.gen != gen)
		pc = &(*pc)->priv.a.close.next;
	rio_op *c = *pc;
	assert(c && c->priv.a.close.waiting > 0);
	if (--c->priv.a.close.waiting > 0)
		return NULL;
	*pc = c->priv.a.close.next; /* no op of its generation is left */
	c->priv.a.close.next = NULL;
	return c->priv.bits & RIO__B_CLOSED ? c : NULL;
}

void rio__fdtab_free(struct rio__fdtab *t)
{
	free(t->slots);
	t->slots = NULL;
	t->n = 0;
}

/*
 * The timer heap of backends that keep time themselves (the readiness
 * fallback): ops by when time ends them (priv.due_ns); see timer.h.
 */
#include <errno.h>
#include <stdlib.h>

#include "timer.h"

static uint64_t due(const rio_op *op) { return op->priv.due_ns; }

static void place(rio__timers *t, size_t i, rio_op *op)
{
	t->heap[i] = op;
	op->priv.be.reactor.heap_slot = i + 1;
}

static void sift_up(rio__timers *t, size_t i)
{
	rio_op *op = t->heap[i];
	while (i > 0) {
		size_t parent = (i - 1) / 2;
		if (due(t->heap[parent]) <= due(op))
			break;
		place(t, i, t->heap[parent]);
		i = parent;
	}
	place(t, i, op);
}

static void sift_down(rio__timers *t, size_t i)
{
	rio_op *op = t->heap[i];
	for (;;) {
		size_t c = 2 * i + 1;
		if (c >= t->len)
			break;
		if (c + 1 < t->len && due(t->heap[c + 1]) < due(t->heap[c]))
			c++;
		if (due(op) <= due(t->heap[c]))
			break;
		place(t, i, t->heap[c]);
		i = c;
	}
	place(t, i, op);
}

int rio__timer_add(rio__timers *t, rio_op *op)
{
	assert(!rio__timer_armed(op));
	if (t->len == t->cap) {
		size_t cap = t->cap ? t->cap * 2 : 64;
		rio_op **h = realloc(t->heap, cap * sizeof *h);
		if (!h)
			return -ENOMEM;
		t->heap = h;
		t->cap = cap;
	}
	t->heap[t->len] = op;
	sift_up(t, t->len++);
	return 0;
}

void rio__timer_del(rio__timers *t, rio_op *op)
{
	if (!rio__timer_armed(op))
		return;
	size_t i = op->priv.be.reactor.heap_slot - 1;
	assert(i < t->len && t->heap[i] == op);
	op->priv.be.reactor.heap_slot = 0;
	rio_op *last = t->heap[--t->len];
	if (i == t->len)
		return;
	place(t, i, last);
	sift_down(t, i);
	sift_up(t, last->priv.be.reactor.heap_slot - 1);
}

rio_op *rio__timer_expired(rio__timers *t, uint64_t now_ns)
{
	if (t->len == 0 || due(t->heap[0]) > now_ns)
		return NULL;
	rio_op *op = t->heap[0];
	rio__timer_del(t, op);
	return op;
}

int rio__timer_wait_ms(const rio__timers *t, uint64_t now_ns)
{
	if (t->len == 0)
		return -1;
	uint64_t d = due(t->heap[0]);
	if (d <= now_ns)
		return 0;
	uint64_t ms = (d - now_ns + 999999) / 1000000;
	return ms > 3600000 ? 3600000 : (int)ms;
}

void rio__timer_free(rio__timers *t)
{
	free(t->heap);
	t->heap = NULL;
	t->len = t->cap = 0;
}

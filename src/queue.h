/*
 * The one intrusive queue of the library: a doubly linked FIFO of rio_op,
 * threaded through op->priv.next/prev. O(1) push, pop and removal from the
 * middle (cancel). An op is on at most one queue at a time.
 */
#ifndef RIO_QUEUE_H
#define RIO_QUEUE_H

#include <stddef.h>
#include "ringio.h"

typedef struct rio__opq {
	rio_op *head, *tail;
	size_t len;
} rio__opq;

static inline int rio__opq_empty(const rio__opq *q) { return q->head == NULL; }

static inline void rio__opq_push(rio__opq *q, rio_op *op)
{
	op->priv.next = NULL;
	op->priv.prev = q->tail;
	if (q->tail)
		q->tail->priv.next = op;
	else
		q->head = op;
	q->tail = op;
	q->len++;
}

static inline void rio__opq_push_front(rio__opq *q, rio_op *op)
{
	op->priv.prev = NULL;
	op->priv.next = q->head;
	if (q->head)
		q->head->priv.prev = op;
	else
		q->tail = op;
	q->head = op;
	q->len++;
}

static inline void rio__opq_remove(rio__opq *q, rio_op *op)
{
	if (op->priv.prev)
		op->priv.prev->priv.next = op->priv.next;
	else
		q->head = op->priv.next;
	if (op->priv.next)
		op->priv.next->priv.prev = op->priv.prev;
	else
		q->tail = op->priv.prev;
	op->priv.next = op->priv.prev = NULL;
	q->len--;
}

static inline rio_op *rio__opq_pop(rio__opq *q)
{
	rio_op *op = q->head;
	if (op)
		rio__opq_remove(q, op);
	return op;
}

/* Move everything from `from` to the (empty) `to`, leaving `from` empty. */
static inline void rio__opq_take(rio__opq *to, rio__opq *from)
{
	*to = *from;
	from->head = from->tail = NULL;
	from->len = 0;
}

#endif

/*
 * The one intrusive queue of the library: a doubly linked FIFO of rio_op,
 * threaded through op->priv.next/prev. O(1) push, pop and removal from the
 * middle (cancel). An op is on at most one queue at a time (and, while in
 * flight, on its loop's list of live ops: priv.live_next/live_prev).
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

/* Append op to q, through the link fields NEXT and PREV of op->priv (the
 * loop's list of ops in flight is threaded through a second pair). */
#define RIO__OPQ_PUSH(q, op, NEXT, PREV)                                     \
	do {                                                                 \
		(op)->priv.NEXT = NULL;                                      \
		(op)->priv.PREV = (q)->tail;                                 \
		if ((q)->tail)                                               \
			(q)->tail->priv.NEXT = (op);                         \
		else                                                         \
			(q)->head = (op);                                    \
		(q)->tail = (op);                                            \
		(q)->len++;                                                  \
	} while (0)

/* Unlink op from q (O(1), from anywhere in it). */
#define RIO__OPQ_REMOVE(q, op, NEXT, PREV)                                   \
	do {                                                                 \
		if ((op)->priv.PREV)                                         \
			(op)->priv.PREV->priv.NEXT = (op)->priv.NEXT;        \
		else                                                         \
			(q)->head = (op)->priv.NEXT;                         \
		if ((op)->priv.NEXT)                                         \
			(op)->priv.NEXT->priv.PREV = (op)->priv.PREV;        \
		else                                                         \
			(q)->tail = (op)->priv.PREV;                         \
		(op)->priv.NEXT = (op)->priv.PREV = NULL;                    \
		(q)->len--;                                                  \
	} while (0)

static inline void rio__opq_push(rio__opq *q, rio_op *op)
{
	RIO__OPQ_PUSH(q, op, next, prev);
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
	RIO__OPQ_REMOVE(q, op, next, prev);
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

/*
 * A binary min-heap of ops by when time ends them (priv.due_ns, absolute
 * CLOCK_MONOTONIC ns, set by the core), for backends that keep time
 * themselves (the readiness fallback). An op in the heap keeps its slot + 1
 * in priv.be.reactor.heap_slot.
 */
#ifndef RIO_TIMER_H
#define RIO_TIMER_H

#include <stddef.h>
#include <stdint.h>
#include "internal.h"

typedef struct rio__timers {
	rio_op **heap;
	size_t len, cap;
} rio__timers;

/* Insert op, due at op->priv.due_ns. Returns 0 or -ENOMEM. */
RIO__HIDDEN int rio__timer_add(rio__timers *t, rio_op *op);
/* Remove op if it is in the heap; harmless otherwise. */
RIO__HIDDEN void rio__timer_del(rio__timers *t, rio_op *op);
/* The earliest op due at or before now_ns, removed; NULL if none. */
RIO__HIDDEN rio_op *rio__timer_expired(rio__timers *t, uint64_t now_ns);
/* Milliseconds until the earliest deadline (rounded up), -1 if none. */
RIO__HIDDEN int rio__timer_wait_ms(const rio__timers *t, uint64_t now_ns);
RIO__HIDDEN void rio__timer_free(rio__timers *t);

static inline int rio__timer_armed(const rio_op *op)
{
	return op->priv.be.reactor.heap_slot != 0;
}

#endif

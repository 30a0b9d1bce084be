/*
 * Ops in flight per fd number, by generation: what lets a close complete
 * only after every op pending on its fd, on every backend, and keeps a
 * file that reuses the number apart from the closed one.
 *
 * io_uring posts a closed fd's cancelled ops' CQEs from task work, maybe
 * after the close's own CQE; and once close(N) has run, a callback may
 * open a new file that gets N while those CQEs are still to be reaped.
 * So each rio_close() of N ends a generation: the close takes the count of
 * that generation's ops still in flight (priv.a.close.waiting) and is held
 * until they have been delivered; ops submitted after it belong to the
 * next generation, so the new file's ops are neither waited for nor taken
 * for cancelled. An op remembers its generation in priv.gen.
 */
#ifndef RIO_FDTAB_H
#define RIO_FDTAB_H

#include <stddef.h>
#include <stdint.h>
#include "ringio.h"

/*
 * A composite op's interest in one generation of an fd (it lives in the
 * composite's private area; nothing is allocated): a relay may have no op
 * of its own on a socket for as long as that side is quiet, yet a close of
 * that socket through the loop must end it. When a close of the watched
 * generation is delivered, the watch is unlinked and the composite's
 * cancel (priv.a.composite.cancel) is called, just before the close's own
 * callback and as a callback is: it may submit.
 */
struct rio__fdwatch {
	struct rio__fdwatch *next;
	rio_op *op;   /* the composite; NULL while not linked */
	int fd;
	uint32_t gen; /* the generation watched */
};

struct rio__fdslot {
	uint32_t inflight; /* tracked ops of the current generation */
	uint32_t gen;      /* the current generation */
	rio_op *closers;   /* closes waiting for their generation's ops */
	struct rio__fdwatch *watches; /* of any generation not yet closed */
};

struct rio__fdtab {
	struct rio__fdslot *slots;
	size_t n;
};

/* A tracked kind's op is submitted: count it in its fd's generation (a
 * table that cannot grow leaves it uncounted: ordering degrades, nothing
 * breaks). */
void rio__fd_track(rio_loop *loop, rio_op *op);
/* A close is submitted: it ends its fd's generation and will wait for the
 * ops counted in it. */
void rio__fd_close(rio_loop *loop, rio_op *close_op);
/* A tracked op whose generation a close has ended (or is ending). */
int rio__fd_closing(const rio_loop *loop, const rio_op *op);
/* Generation `gen` of fd has been ended by a close (for an op whose final
 * result is being delivered: rio__fd_closing no longer sees it as
 * tracked). */
int rio__fd_gen_ended(const rio_loop *loop, int fd, uint32_t gen);
/* The current generation of fd (0 when the table cannot hold it). */
uint32_t rio__fd_gen(rio_loop *loop, int fd);
/* For composite `op`, watch fd's current generation (w->gen says which). A
 * table that cannot grow leaves it unlinked: the composite then learns of
 * the close at its next op's result only. */
void rio__fd_watch(rio_loop *loop, struct rio__fdwatch *w, rio_op *op, int fd);
/* Unlink a watch (one already told, or never linked: nothing). */
void rio__fd_unwatch(rio_loop *loop, struct rio__fdwatch *w);
/* The close of fd's generation `gen` is being delivered: tell its
 * watches. */
void rio__fd_closed(rio_loop *loop, int fd, uint32_t gen);
/* Ops of op's generation in flight on its fd besides op itself. */
unsigned rio__fd_others(const rio_loop *loop, const rio_op *op);
/* A tracked op's final result was delivered: uncount it. Returns the close
 * it was the last op for, if that close's own result is in: deliver it
 * now. */
rio_op *rio__fd_done(struct rio__fdtab *t, int fd, uint32_t gen);
void rio__fdtab_free(struct rio__fdtab *t);

/* Grow a table of `*n` elements of `size` bytes so that index `i` fits,
 * the new ones zeroed; doubles from 64. 0, or -ENOMEM leaving it as it
 * was. The fd tables of the core and the reactor use it. */
int rio__grow(void **tab, size_t *n, size_t size, size_t i);

#endif

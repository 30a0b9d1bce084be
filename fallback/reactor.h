/* The reactor's backend functions; a poller file pairs them with itself
 * in one `const struct rio__backend`. */
#ifndef RIO_REACTOR_H
#define RIO_REACTOR_H

#include "internal.h"

RIO__HIDDEN int rio__reactor_init(rio_loop *loop, const rio_loop_opts *opts,
				  char *why, size_t why_len);
RIO__HIDDEN void rio__reactor_fini(rio_loop *loop);
RIO__HIDDEN void rio__reactor_submit(rio_loop *loop, rio_op *op);
RIO__HIDDEN int rio__reactor_poll(rio_loop *loop, int block);
RIO__HIDDEN void rio__reactor_wake(rio_loop *loop);
RIO__HIDDEN int rio__reactor_pool_init(rio_bufpool *pool);
RIO__HIDDEN void rio__reactor_pool_fini(rio_bufpool *pool);
RIO__HIDDEN void rio__reactor_pool_put(rio_bufpool *pool, uint16_t id);
RIO__HIDDEN void rio__reactor_resume(rio_loop *loop, rio_op *op);
RIO__HIDDEN void rio__reactor_cancel(rio_loop *loop, rio_op *op);
RIO__HIDDEN void rio__reactor_drop_fd(rio_loop *loop, int fd);
/* A signal op's fd, and a read of it, through the poller's sig_* hooks
 * (those backends whose poller has them). */
RIO__HIDDEN int rio__reactor_sig_open(rio_loop *loop, const sigset_t *set);
RIO__HIDDEN int rio__reactor_sig_read(rio_loop *loop, int fd,
				      unsigned *times);

#define RIO__REACTOR_BACKEND(NAME, KIND, POLLER, SIGNALS)                   \
	{                                                                   \
		.name = NAME, .kind = KIND, .init = rio__reactor_init,      \
		.fini = rio__reactor_fini, .submit = rio__reactor_submit,   \
		.poll = rio__reactor_poll, .wake = rio__reactor_wake,       \
		.pool_init = rio__reactor_pool_init,                        \
		.pool_fini = rio__reactor_pool_fini,                        \
		.pool_put = rio__reactor_pool_put,                          \
		.resume = rio__reactor_resume,                              \
		.cancel = rio__reactor_cancel,                              \
		.drop_fd = rio__reactor_drop_fd, .poller = POLLER,          \
		.sig_open = SIGNALS ? rio__reactor_sig_open : NULL,         \
		.sig_read = SIGNALS ? rio__reactor_sig_read : NULL,         \
	}

#endif

/*
 * The poller interface under the readiness reactor: register an fd once,
 * edge-triggered for both directions, keyed by fd and generation; remove
 * it; wait for events. epoll and kqueue each implement it in one file; all
 * the logic (queues, retries, verification) lives in reactor.c.
 */
#ifndef RIO_POLLER_H
#define RIO_POLLER_H

#include <signal.h>
#include <stdint.h>

#define RIO__EV_IN 0x1u
#define RIO__EV_OUT 0x2u
#define RIO__EV_ERR 0x4u
#define RIO__EV_HUP 0x8u
#define RIO__EV_RDHUP 0x10u /* the peer shut down writing: EOF is queued */

/* An event whose fd is RIO__PEV_LOST says the poller may have dropped
 * events: the reactor must treat every fd as ready both ways. */
#define RIO__PEV_LOST (-1)
/* An event whose fd is RIO__PEV_SIG says signal `gen` came (sig_open). */
#define RIO__PEV_SIG (-2)

struct rio__pev {
	int fd;
	uint32_t gen;
	unsigned events; /* RIO__EV_* */
	/* A socket error the poller consumed to report the event (libkqueue
	 * reads SO_ERROR, which clears it), else 0: the reactor delivers it. */
	int err;
};

struct rio__poller {
	const char *name;
	/* A new poller instance: its fd, or -errno. */
	int (*open)(void);
	/* Watch fd (read and write, edge-triggered); events carry `gen`. */
	int (*add)(int pfd, int fd, uint32_t gen);
	/* Re-check fd's registration (key `gen`): -ENOENT if the poller no
	 * longer watches this file (it was closed and the number reused). */
	int (*rearm)(int pfd, int fd, uint32_t gen);
	/* Stop watching fd. */
	int (*del)(int pfd, int fd);
	/* Wait up to timeout_ms (-1: forever) for at most `max` events. */
	int (*wait)(int pfd, struct rio__pev *evs, int max, int timeout_ms);
	/* A peer's FIN that follows data already reported may raise no edge
	 * of its own (libkqueue): a short read then says nothing about what
	 * is queued behind it. */
	int eof_edge_unreliable;
	/* Signal ops, where the poller has a way of its own (kqueue:
	 * EVFILT_SIGNAL; NULL: the core's signalfd). sig_open: an fd of the
	 * op's own that records the signals of `set` (blocked), each of them
	 * also waking this poller's wait, as an event of RIO__PEV_SIG;
	 * sig_read: one read of that fd (struct rio__backend's); sig_close:
	 * no more wakeups for `sig`. */
	int (*sig_open)(int pfd, const sigset_t *set);
	int (*sig_read)(int fd, unsigned *times);
	void (*sig_close)(int pfd, int sig);
};

#endif

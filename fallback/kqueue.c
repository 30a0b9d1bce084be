/*
 * The kqueue poller: EVFILT_READ and EVFILT_WRITE registered once per fd
 * with EV_CLEAR (edge-triggered, like the epoll poller). kqueue reports the
 * two filters as separate events; the reactor does not care. udata packs
 * the fd and its generation. Builds on the BSDs, macOS, and Linux with
 * libkqueue.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/event.h>
#include <sys/time.h>
#include <unistd.h>

#include "poller.h"
#include "reactor.h"

static void *pack(int fd, uint32_t gen)
{
	return (void *)(uintptr_t)(((uint64_t)gen << 32) | (uint32_t)fd);
}

static int kq_open(void)
{
	int fd = kqueue();
	return fd < 0 ? -errno : fd;
}

/* Write filter first. libkqueue keeps one epoll registration per fd, and
 * adding a filter rebuilds its mask from the EPOLLIN/EPOLLOUT bits of the
 * filters already there plus the new filter's own flags: added after the
 * read filter, the write filter drops the read filter's EPOLLRDHUP, and a
 * peer's FIN then never comes back as EV_EOF (only a full hang-up, an
 * error, or an empty receive queue at the moment of the event does).
 * Added before it, the read filter brings EPOLLRDHUP in itself. Native
 * kqueue does not care about the order. */
static int kq_add(int pfd, int fd, uint32_t gen)
{
	struct kevent ch[2];
	EV_SET(&ch[0], fd, EVFILT_WRITE, EV_ADD | EV_CLEAR, 0, 0, pack(fd, gen));
	EV_SET(&ch[1], fd, EVFILT_READ, EV_ADD | EV_CLEAR, 0, 0, pack(fd, gen));
	if (kevent(pfd, ch, 2, NULL, 0, NULL) < 0)
		return errno == EINVAL ? -EPERM : -errno; /* EPERM: not pollable */
	return 0;
}

static int kq_del(int pfd, int fd)
{
	struct kevent ch[2];
	EV_SET(&ch[0], fd, EVFILT_READ, EV_DELETE, 0, 0, 0);
	EV_SET(&ch[1], fd, EVFILT_WRITE, EV_DELETE, 0, 0, 0);
	return kevent(pfd, ch, 2, NULL, 0, NULL) < 0 ? -errno : 0;
}

#ifdef __linux__
/* libkqueue cannot see close(): a knote outlives its file, and EV_ADD for
 * a new file under the same number only updates the stale knote, which
 * then watches nothing (EV_ENABLE finds it too, so reuse cannot be
 * detected). Drop the knote and report the fd as new: the reactor then
 * registers it the whole way, O_NONBLOCK included. */
static int kq_rearm(int pfd, int fd, uint32_t gen)
{
	(void)gen;
	kq_del(pfd, fd);
	return -ENOENT;
}
#else
/* Native kqueue drops an fd's knotes when the file is closed: if they are
 * gone (ENOENT), the number belongs to a new file. */
static int kq_rearm(int pfd, int fd, uint32_t gen)
{
	struct kevent ch[2];
	EV_SET(&ch[0], fd, EVFILT_READ, EV_ENABLE, 0, 0, pack(fd, gen));
	EV_SET(&ch[1], fd, EVFILT_WRITE, EV_ENABLE, 0, 0, pack(fd, gen));
	return kevent(pfd, ch, 2, NULL, 0, NULL) < 0 ? -errno : 0;
}
#endif

/* Signal ops by EVFILT_SIGNAL natively; over libkqueue a signalfd (the
 * core's), unless a test build asks (RINGIO_KQ_EVFILT_SIGNAL): libkqueue
 * reads signals with a signalfd on a thread of its own, which cannot see
 * a signal sent to another thread (pthread_kill of the loop's), where the
 * core's signalfd, read on the loop's thread, sees it. */
#if !defined(__linux__) || defined(RINGIO_KQ_EVFILT_SIGNAL)
#define KQ_SIGNALS 1
#else
#define KQ_SIGNALS 0
#endif

static int kq_wait(int pfd, struct rio__pev *out, int max, int timeout_ms)
{
	struct kevent evs[256];
	struct timespec ts, *tsp = NULL;
	if (max > 256)
		max = 256;
#ifdef __linux__
	/* libkqueue asks epoll for up to `max` fds and turns each into one
	 * event per filter; whatever does not fit in `max` events it drops,
	 * and with EV_CLEAR those edges never come again. So only a full
	 * batch can have lost events: keep a slot to say so. */
	int lossy = max > 1;
	if (lossy)
		max--;
#endif
	if (timeout_ms >= 0) {
		ts.tv_sec = timeout_ms / 1000;
		ts.tv_nsec = (long)(timeout_ms % 1000) * 1000000L;
		tsp = &ts;
	}
	int n = kevent(pfd, NULL, 0, evs, max, tsp);
	if (n < 0)
		return -errno;
	for (int i = 0; i < n; i++) {
		uint64_t key = (uint64_t)(uintptr_t)evs[i].udata;
#if KQ_SIGNALS
		if (evs[i].filter == EVFILT_SIGNAL) { /* kq_sig_open's */
			out[i].fd = RIO__PEV_SIG;
			out[i].gen = (uint32_t)evs[i].ident;
			out[i].events = RIO__EV_IN;
			out[i].err = 0;
			continue;
		}
#endif
		unsigned e = evs[i].filter == EVFILT_READ ? RIO__EV_IN : RIO__EV_OUT;
		if (evs[i].flags & EV_EOF)
			e |= RIO__EV_HUP;
		if (evs[i].flags & EV_ERROR)
			e |= RIO__EV_ERR;
		out[i].fd = (int)(uint32_t)key;
		out[i].gen = (uint32_t)(key >> 32);
		out[i].events = e;
		/* EV_EOF on a socket: fflags is its error. libkqueue got it
		 * from SO_ERROR, which cleared it for the syscalls. */
		out[i].err = (evs[i].flags & EV_EOF) ? (int)evs[i].fflags : 0;
	}
#ifdef __linux__
	if (lossy && n == max) {
		out[n].fd = RIO__PEV_LOST;
		out[n].gen = 0;
		out[n].events = RIO__EV_IN | RIO__EV_OUT;
		out[n].err = 0;
		n++;
	}
#endif
	return n;
}

/* ---- signal ops: EVFILT_SIGNAL ---- */

#if KQ_SIGNALS

/* Take one instance of `sig` pending for this thread or the process (it
 * is blocked), never waiting: 1 taken, 0 none (another taker was first).
 * macOS has no sigtimedwait: sigwait there, only when pending, which a
 * second taker (another loop's) could turn into a wait. */
static int take_one(int sig)
{
	sigset_t one;
	sigemptyset(&one);
	sigaddset(&one, sig);
#ifdef __APPLE__
	sigset_t pend;
	int got;
	return sigpending(&pend) == 0 && sigismember(&pend, sig) == 1 &&
	       sigwait(&one, &got) == 0;
#else
	struct timespec zero = {0, 0};
	return sigtimedwait(&one, NULL, &zero) == sig;
#endif
}

/* Take every instance of `sig` pending (at most 64): how many. */
static unsigned take_pending(int sig)
{
	unsigned n = 0;
	while (n < 64 && take_one(sig))
		n++;
	return n;
}

/* Add (EV_ADD) or drop (EV_DELETE) an EVFILT_SIGNAL knote for each
 * signal of `set` on kqueue kq. */
static int sig_knotes(int kq, const sigset_t *set, unsigned short how)
{
	for (int sig = 1; sig <= 64 && sig < NSIG; sig++) {
		struct kevent ch;
		if (sigismember(set, sig) != 1)
			continue;
		EV_SET(&ch, sig, EVFILT_SIGNAL, how | (how == EV_ADD ? EV_CLEAR : 0),
		       0, 0, NULL);
		if (kevent(kq, &ch, 1, NULL, 0, NULL) < 0 && how == EV_ADD)
			return -errno;
	}
	return 0;
}

/* Send `sig` again: natively to this thread, which blocks it (a send to
 * the process could go to a thread that does not, and its default action
 * end the process); libkqueue sees only what is sent to the process. */
static void send_again(int sig)
{
#ifdef __linux__
	kill(getpid(), sig);
#else
	pthread_kill(pthread_self(), sig);
#endif
}

/* A signal op's fd: a kqueue of its own with an EVFILT_SIGNAL knote per
 * signal of `set`, which tells what came, and the same knotes on the
 * loop's kqueue, whose events (RIO__PEV_SIG) wake the loop to read it: a
 * kqueue inside another is not readable under libkqueue. No signalfd:
 * native kqueue has none. EVFILT_SIGNAL sees only what is sent after it
 * is added (libkqueue even drops what is pending then), while a signalfd
 * sees what is pending: those are taken first (and, natively, what came
 * while the knotes were added) and sent again once the knotes are there. */
static int kq_sig_open(int pfd, const sigset_t *set)
{
	unsigned again[65] = {0};
	int kq = kqueue();
	if (kq < 0)
		return -errno;
	for (int sig = 1; sig <= 64 && sig < NSIG; sig++)
		if (sigismember(set, sig) == 1)
			again[sig] = take_pending(sig);
	int r = sig_knotes(kq, set, EV_ADD);
	if (r == 0)
		r = sig_knotes(pfd, set, EV_ADD);
	for (int sig = 1; sig <= 64 && sig < NSIG; sig++) {
#ifndef __linux__
		if (sigismember(set, sig) == 1)
			again[sig] += take_pending(sig);
#endif
		for (; again[sig] > 0; again[sig]--)
			send_again(sig);
	}
	if (r < 0) {
		close(kq);
		return r;
	}
	return kq;
}

static void kq_sig_close(int pfd, int sig)
{
	sigset_t one;
	sigemptyset(&one);
	sigaddset(&one, sig);
	sig_knotes(pfd, &one, EV_DELETE);
}

/* The next signal for this op, and how often: a real-time signal as many
 * times as it was sent (each is queued), another once (a signalfd merges
 * those pending alike). Natively a knote of every kqueue watching the
 * signal records it and the signal stays pending: the op that takes it
 * has it, as with a signalfd read, and one that finds it taken reads on.
 * libkqueue took it already (a signalfd of its own): its count is it. */
static int kq_sig_read(int fd, unsigned *times)
{
	struct timespec zero = {0, 0};
	for (int k = 0; k < 64; k++) {
		struct kevent ev;
		int n = kevent(fd, NULL, 0, &ev, 1, &zero);
		if (n < 0)
			return -errno;
		if (n == 0)
			return -EAGAIN;
		int sig = (int)ev.ident;
#ifdef __linux__
		unsigned got = ev.data > 1 ? (unsigned)ev.data : 1;
#else
		unsigned got = take_pending(sig);
		if (got == 0)
			continue; /* another op's (or loop's) */
#endif
		*times = 1;
#ifdef SIGRTMIN
		if (sig >= SIGRTMIN)
			*times = got;
#endif
		return sig;
	}
	return -EAGAIN;
}

#endif

static const struct rio__poller kqueue_poller = {
	.name = "kqueue",
	.open = kq_open,
	.add = kq_add,
	.rearm = kq_rearm,
	.del = kq_del,
	.wait = kq_wait,
#if KQ_SIGNALS
	.sig_open = kq_sig_open,
	.sig_read = kq_sig_read,
	.sig_close = kq_sig_close,
#endif
#ifdef __linux__
	/* libkqueue: EV_EOF for a FIN hangs on its epoll mask keeping
	 * EPOLLRDHUP, which rests on the filter order in kq_add (read
	 * first, it never came: bufpool.short_tail_then_eof_ends_the_stream
	 * 10 runs in 10, proxy.half_close 1 in 6). Do not trust it. */
	.eof_edge_unreliable = 1,
#endif
};

const struct rio__backend rio__backend_kqueue =
	RIO__REACTOR_BACKEND("kqueue", RIO_BACKEND_KQUEUE, &kqueue_poller,
			     KQ_SIGNALS);

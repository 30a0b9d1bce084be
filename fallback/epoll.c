/*
 * The epoll poller: every fd registered once, EPOLLIN|EPOLLOUT|EPOLLRDHUP
 * edge-triggered, so that a steady connection costs no epoll_ctl at all.
 * The event key packs the fd and its generation.
 */
#include <errno.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "poller.h"
#include "reactor.h"

static int ep_open(void)
{
	int fd = epoll_create1(EPOLL_CLOEXEC);
	return fd < 0 ? -errno : fd;
}

static int ep_add(int pfd, int fd, uint32_t gen)
{
	struct epoll_event ev = {
		.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET,
		.data.u64 = ((uint64_t)gen << 32) | (uint32_t)fd,
	};
	if (epoll_ctl(pfd, EPOLL_CTL_ADD, fd, &ev) == 0)
		return 0;
	if (errno != EEXIST)
		return -errno;
	/* Registered by an earlier generation of this number whose file is
	 * still open elsewhere (dup): take it over with the new key. */
	return epoll_ctl(pfd, EPOLL_CTL_MOD, fd, &ev) == 0 ? 0 : -errno;
}

static int ep_rearm(int pfd, int fd, uint32_t gen)
{
	struct epoll_event ev = {
		.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET,
		.data.u64 = ((uint64_t)gen << 32) | (uint32_t)fd,
	};
	return epoll_ctl(pfd, EPOLL_CTL_MOD, fd, &ev) == 0 ? 0 : -errno;
}

static int ep_del(int pfd, int fd)
{
	struct epoll_event ev = {0};
	return epoll_ctl(pfd, EPOLL_CTL_DEL, fd, &ev) == 0 ? 0 : -errno;
}

static int ep_wait(int pfd, struct rio__pev *out, int max, int timeout_ms)
{
	struct epoll_event evs[256];
	if (max > 256)
		max = 256;
	int n = epoll_wait(pfd, evs, max, timeout_ms);
	if (n < 0)
		return -errno;
	for (int i = 0; i < n; i++) {
		uint32_t e = evs[i].events;
		out[i].fd = (int)(uint32_t)evs[i].data.u64;
		out[i].gen = (uint32_t)(evs[i].data.u64 >> 32);
		out[i].err = 0;
		out[i].events = (e & (EPOLLIN | EPOLLRDHUP) ? RIO__EV_IN : 0) |
				(e & EPOLLRDHUP ? RIO__EV_RDHUP : 0) |
				(e & EPOLLOUT ? RIO__EV_OUT : 0) |
				(e & EPOLLERR ? RIO__EV_ERR : 0) |
				(e & EPOLLHUP ? RIO__EV_HUP : 0);
	}
	return n;
}

static const struct rio__poller epoll_poller = {
	.name = "epoll",
	.open = ep_open,
	.add = ep_add,
	.rearm = ep_rearm,
	.del = ep_del,
	.wait = ep_wait,
};

const struct rio__backend rio__backend_epoll =
	RIO__REACTOR_BACKEND("epoll", RIO_BACKEND_EPOLL, &epoll_poller, 0);

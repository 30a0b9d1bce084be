/*
 * Socket helpers the tools and most servers need. Plain syscalls, -errno
 * results, no DNS: addresses are numeric.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>
#include <sys/ioctl.h>
#include <stddef.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "internal.h"

/* A splice into a socket, a write into a pipe, cannot say MSG_NOSIGNAL,
 * and one toward a closed peer raises SIGPIPE. The first such op on a
 * thread blocks SIGPIPE there for good; one that fails with EPIPE takes
 * back the signal it raised, so the caller sees -EPIPE and nothing else,
 * as with rio_send. */
static _Thread_local int sigpipe_blocked;

void rio__sigpipe_block(void)
{
	if (!sigpipe_blocked) {
		sigset_t set;
		sigemptyset(&set);
		sigaddset(&set, SIGPIPE);
		pthread_sigmask(SIG_BLOCK, &set, NULL);
		sigpipe_blocked = 1;
	}
}

void rio__sigpipe_take(void)
{
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGPIPE);
	const struct timespec now = {0, 0};
	sigtimedwait(&set, NULL, &now);
}

#ifdef __linux__
/* EAGAIN with the socket ready: is the pipe the one not ready? */
static int pipe_stuck(const rio_op *op)
{
	int queued = 0;
	if (ioctl(op->priv.a.splice.pipe, FIONREAD, &queued) < 0)
		return -errno;
	if (op->priv.kind == RIO__OP_SPLICE_IN)
		return queued > 0 ? -ENOBUFS : -EAGAIN;
	return queued == 0 ? -ENODATA : -EAGAIN;
}
#endif

int rio__splice_try(const rio_op *op, int sock_ready)
{
#ifdef __linux__
	int in = op->priv.a.splice.pipe, out = op->priv.fd;
	if (op->priv.kind == RIO__OP_SPLICE_IN) {
		in = op->priv.fd;
		out = op->priv.a.splice.pipe;
	} else {
		rio__sigpipe_block();
	}
	ssize_t n = splice(in, NULL, out, NULL, op->priv.a.splice.len,
			   SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
	if (n >= 0)
		return (int)n;
	int err = errno;
	if (err == EPIPE && op->priv.kind == RIO__OP_SPLICE_OUT)
		rio__sigpipe_take();
	if (err == EAGAIN && sock_ready)
		return pipe_stuck(op);
	return -err;
#else
	(void)op;
	(void)sock_ready;
	return -EOPNOTSUPP;
#endif
}

int rio_sockaddr(const char *host, uint16_t port, struct sockaddr_storage *ss,
		 socklen_t *len)
{
	if (!ss || !len)
		return -EINVAL;
	memset(ss, 0, sizeof *ss);
	if (!host)
		host = "127.0.0.1";
	struct sockaddr_in *in4 = (struct sockaddr_in *)ss;
	struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
	if (inet_pton(AF_INET, host, &in4->sin_addr) == 1) {
		in4->sin_family = AF_INET;
		in4->sin_port = htons(port);
		*len = sizeof *in4;
		return 0;
	}
	if (inet_pton(AF_INET6, host, &in6->sin6_addr) == 1) {
		in6->sin6_family = AF_INET6;
		in6->sin6_port = htons(port);
		*len = sizeof *in6;
		return 0;
	}
	return -EINVAL;
}

static int setint(int fd, int level, int opt, int v)
{
	return setsockopt(fd, level, opt, &v, sizeof v) ? -errno : 0;
}

int rio__socket_stream(int family)
{
	if (family != AF_INET && family != AF_INET6 && family != AF_UNIX)
		return -EINVAL;
	int fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	return fd < 0 ? -errno : fd;
}

int rio_socket_tcp(int family)
{
	if (family != AF_INET && family != AF_INET6)
		return -EINVAL;
	return rio__socket_stream(family);
}

/* RIO_SOCK_UNLINK: the file at a unix address's path is a socket that no
 * one listens on (left by a process that is gone): remove it. Anything
 * else there stays, and bind() then says -EADDRINUSE. */
static void unlink_stale(const struct sockaddr_storage *ss, socklen_t len,
			 int type)
{
	const struct sockaddr_un *un = (const void *)ss;
	struct stat st;
	if (un->sun_path[0] == '\0' || lstat(un->sun_path, &st) < 0 ||
	    !S_ISSOCK(st.st_mode))
		return;
	int probe = socket(AF_UNIX, type | SOCK_CLOEXEC, 0);
	if (probe < 0)
		return;
	int r = connect(probe, (const struct sockaddr *)ss, len);
	int err = errno;
	close(probe);
	if (r < 0 && err == ECONNREFUSED)
		unlink(un->sun_path);
}

int rio_listen_tcp(const char *host, uint16_t port, int backlog,
		   unsigned flags)
{
	rio_addr a;
	if (rio_sockaddr(host, port, &a.ss, &a.len) < 0)
		return -EINVAL;
	return rio_listen_addr(&a, backlog, flags);
}

/* A bound socket of `type` on `a` (a listener once the caller listens):
 * the flags, checks and options rio_listen_addr and rio_bind_dgram
 * share. */
static int bind_addr(const rio_addr *a, int type, unsigned flags)
{
	if (!a || a->len > sizeof a->ss)
		return -EINVAL;
	int un = a->ss.ss_family == AF_UNIX;
	unsigned ok = un ? RIO_SOCK_UNLINK : RIO_SOCK_REUSEPORT | RIO_SOCK_V6ONLY;
	if ((flags & ~ok) ||
	    (!un && a->ss.ss_family != AF_INET && a->ss.ss_family != AF_INET6) ||
	    (un && a->len <= offsetof(struct sockaddr_un, sun_path)))
		return -EINVAL;
	struct sockaddr_storage ss = a->ss;
	socklen_t len = a->len;
	int fd = socket(ss.ss_family, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (un && (flags & RIO_SOCK_UNLINK))
		unlink_stale(&ss, len, type);
	/* SO_REUSEADDR: a TCP listener restarts over its TIME_WAITs; on UDP
	 * it would let two sockets share a port unasked */
	int r = un || type != SOCK_STREAM ? 0
					  : setint(fd, SOL_SOCKET, SO_REUSEADDR, 1);
	if (!r && (flags & RIO_SOCK_REUSEPORT))
		r = setint(fd, SOL_SOCKET, SO_REUSEPORT, 1);
	if (!r && ss.ss_family == AF_INET6)
		r = setint(fd, IPPROTO_IPV6, IPV6_V6ONLY,
			   !!(flags & RIO_SOCK_V6ONLY));
	if (!r && bind(fd, (struct sockaddr *)&ss, len) < 0)
		r = -errno;
	if (r) {
		close(fd);
		return r;
	}
	return fd;
}

int rio_listen_addr(const rio_addr *a, int backlog, unsigned flags)
{
	int fd = bind_addr(a, SOCK_STREAM, flags);
	if (fd >= 0 && listen(fd, backlog > 0 ? backlog : SOMAXCONN) < 0) {
		int r = -errno;
		close(fd);
		return r;
	}
	return fd;
}

int rio_bind_dgram(const rio_addr *a, unsigned flags)
{
	return bind_addr(a, SOCK_DGRAM, flags);
}

int rio_bind_udp(const char *host, uint16_t port, unsigned flags)
{
	rio_addr a;
	if (rio_sockaddr(host, port, &a.ss, &a.len) < 0)
		return -EINVAL;
	return rio_bind_dgram(&a, flags);
}

int rio_socket_dgram(int family)
{
	if (family != AF_INET && family != AF_INET6 && family != AF_UNIX)
		return -EINVAL;
	int fd = socket(family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	int r = 0;
	if (family == AF_INET6) /* IPv4 peers too, whatever the sysctl says */
		r = setint(fd, IPPROTO_IPV6, IPV6_V6ONLY, 0);
	/* a unix datagram socket with no name cannot be answered: Linux's
	 * autobind gives it an abstract one (a bind of the family alone;
	 * the path zeroed though unread, for checkers that read it anyway) */
	struct sockaddr_un un = {.sun_family = AF_UNIX};
	if (!r && family == AF_UNIX &&
	    bind(fd, (struct sockaddr *)&un, sizeof(sa_family_t)) < 0)
		r = -errno;
	if (r) {
		close(fd);
		return r;
	}
	return fd;
}

int rio_local_port(int fd)
{
	/* Zeroed: getsockname writes only the `len` bytes it returns, and a
	 * family it did not write reads as AF_UNSPEC, not as garbage. */
	struct sockaddr_storage ss = {0};
	socklen_t len = sizeof ss;
	if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0)
		return -errno;
	if (ss.ss_family == AF_INET)
		return ntohs(((struct sockaddr_in *)&ss)->sin_port);
	if (ss.ss_family == AF_INET6)
		return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
	return -EAFNOSUPPORT;
}

int rio_set_nonblock(int fd, int on)
{
	int fl = fcntl(fd, F_GETFL);
	if (fl < 0)
		return -errno;
	int want = on ? fl | O_NONBLOCK : fl & ~O_NONBLOCK;
	if (want != fl && fcntl(fd, F_SETFL, want) < 0)
		return -errno;
	return 0;
}

int rio_set_nodelay(int fd, int on)
{
	return setint(fd, IPPROTO_TCP, TCP_NODELAY, !!on);
}

const char *rio_strerror(int res)
{
	return strerror(res < 0 ? -res : res);
}

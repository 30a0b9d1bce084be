/* Socket helpers: rio_sockaddr, rio_listen_tcp, rio_local_port,
 * rio_socket_tcp, rio_set_nonblock/nodelay, and an IPv6 round trip. */
#include "common.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

Test(sockets, sockaddr_parses_numeric_addresses, .timeout = 10)
{
	struct sockaddr_storage ss;
	struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
	struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
	socklen_t len = 0;

	cr_assert_eq(rio_sockaddr("127.0.0.1", 8080, &ss, &len), 0);
	cr_assert_eq(len, sizeof(struct sockaddr_in));
	cr_assert_eq(s4->sin_family, AF_INET);
	cr_assert_eq(s4->sin_port, htons(8080));
	cr_assert_eq(s4->sin_addr.s_addr, htonl(INADDR_LOOPBACK));

	cr_assert_eq(rio_sockaddr("::1", 443, &ss, &len), 0);
	cr_assert_eq(len, sizeof(struct sockaddr_in6));
	cr_assert_eq(s6->sin6_family, AF_INET6);
	cr_assert_eq(s6->sin6_port, htons(443));
	cr_assert_eq(memcmp(&s6->sin6_addr, &in6addr_loopback, 16), 0);

	memset(&ss, 0xff, sizeof(ss));
	cr_assert_eq(rio_sockaddr(NULL, 1, &ss, &len), 0, "NULL is 127.0.0.1");
	cr_assert_eq(s4->sin_family, AF_INET);
	cr_assert_eq(s4->sin_addr.s_addr, htonl(INADDR_LOOPBACK));
	cr_assert_eq(s4->sin_port, htons(1));
}

Test(sockets, sockaddr_rejects_bad_strings, .timeout = 10)
{
	const char *bad[] = { "",           "localhost",     "1.2.3.4.5",
			      "256.1.1.1",  "::g",           "127.0.0.1:80",
			      "[::1]",      "1.2.3.4/8",     " 127.0.0.1",
			      "fe80::1::2", "example.com" };
	struct sockaddr_storage ss;
	socklen_t len;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		cr_assert_eq(rio_sockaddr(bad[i], 80, &ss, &len), -EINVAL,
			     "'%s' accepted", bad[i]);
}

static void assert_listening(int fd)
{
	int on = 0;
	socklen_t len = sizeof(on);

	cr_assert_eq(getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &on, &len), 0);
	cr_assert(on, "fd %d does not listen", fd);
	cr_assert(fcntl(fd, F_GETFL) & O_NONBLOCK, "listener must be non-blocking");
	cr_assert(fcntl(fd, F_GETFD) & FD_CLOEXEC, "listener must be cloexec");
	len = sizeof(on);
	cr_assert_eq(getsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, &len), 0);
	cr_assert(on, "listener must have SO_REUSEADDR");
}

Test(sockets, listen_on_port_zero_picks_a_port, .timeout = 10)
{
	int fd = rio_listen_tcp("127.0.0.1", 0, 16, 0);
	int port, fd2, cfd;

	cr_assert_geq(fd, 0, "rio_listen_tcp: %s", rio_strerror(fd));
	assert_listening(fd);
	port = rio_local_port(fd);
	cr_assert_gt(port, 0, "rio_local_port: %d", port);
	cr_assert_leq(port, 65535);
	/* It really listens there. */
	cfd = t_connect(AF_INET, (uint16_t)port);
	close(cfd);
	/* The same port again, without SO_REUSEPORT, is taken. */
	fd2 = rio_listen_tcp("127.0.0.1", (uint16_t)port, 16, 0);
	cr_assert_eq(fd2, -EADDRINUSE, "second listener: %d", fd2);
	close(fd);
}

Test(sockets, reuseport_lets_two_listeners_share_a_port, .timeout = 10)
{
	int a = rio_listen_tcp(NULL, 0, 0, RIO_SOCK_REUSEPORT);
	int port, b, on = 0;
	socklen_t len = sizeof(on);

	cr_assert_geq(a, 0, "%s", rio_strerror(a));
	cr_assert_eq(getsockopt(a, SOL_SOCKET, SO_REUSEPORT, &on, &len), 0);
	cr_assert(on);
	port = rio_local_port(a);
	cr_assert_gt(port, 0);
	b = rio_listen_tcp(NULL, (uint16_t)port, 0, RIO_SOCK_REUSEPORT);
	cr_assert_geq(b, 0, "second REUSEPORT listener: %s", rio_strerror(b));
	cr_assert_eq(rio_local_port(b), port);
	close(a);
	close(b);
}

Test(sockets, listen_rejects_a_bad_host, .timeout = 10)
{
	cr_assert_eq(rio_listen_tcp("not-an-address", 0, 0, 0), -EINVAL);
	cr_assert_eq(rio_listen_tcp("999.0.0.1", 0, 0, 0), -EINVAL);
}

Test(sockets, socket_and_option_helpers, .timeout = 10)
{
	int fd = rio_socket_tcp(AF_INET);
	int on = 0, p[2];
	socklen_t len = sizeof(on);

	cr_assert_geq(fd, 0, "%s", rio_strerror(fd));
	cr_assert(fcntl(fd, F_GETFL) & O_NONBLOCK);
	cr_assert(fcntl(fd, F_GETFD) & FD_CLOEXEC);
	cr_assert_eq(rio_set_nonblock(fd, 0), 0);
	cr_assert_eq(fcntl(fd, F_GETFL) & O_NONBLOCK, 0);
	cr_assert_eq(rio_set_nonblock(fd, 1), 0);
	cr_assert(fcntl(fd, F_GETFL) & O_NONBLOCK);
	cr_assert_eq(rio_set_nodelay(fd, 1), 0);
	cr_assert_eq(getsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, &len), 0);
	cr_assert(on);
	cr_assert_eq(rio_set_nodelay(fd, 0), 0);
	len = sizeof(on);
	cr_assert_eq(getsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, &len), 0);
	cr_assert_eq(on, 0);
	close(fd);

	/* On things that are not TCP sockets they report the error. */
	cr_assert_eq(pipe(p), 0);
	cr_assert_lt(rio_local_port(p[0]), 0);
	cr_assert_lt(rio_set_nodelay(p[0], 1), 0);
	close(p[0]);
	close(p[1]);
	cr_assert_eq(rio_set_nonblock(p[0], 1), -EBADF);
	cr_assert_eq(rio_local_port(p[0]), -EBADF);
}

Test(sockets, ipv6_listener_and_connect_through_the_loop, .timeout = 20)
{
	t_rec acc = { .calls = 0 }, con = { .calls = 0 };
	t_rec snd = { .calls = 0 }, rcv = { .calls = 0 };
	struct sockaddr_storage ss, peer;
	socklen_t len, plen = sizeof(peer);
	rio_loop *loop;
	char buf[8];
	int lfd, cfd, port, v6only = 0;
	socklen_t olen = sizeof(v6only);

	if (!t_ipv6_loopback())
		cr_skip_test("this machine has no IPv6 loopback (::1)");
	loop = t_loop();
	lfd = rio_listen_tcp("::1", 0, 8, RIO_SOCK_V6ONLY);
	cr_assert_geq(lfd, 0, "rio_listen_tcp(::1): %s", rio_strerror(lfd));
	assert_listening(lfd);
	cr_assert_eq(getsockopt(lfd, IPPROTO_IPV6, IPV6_V6ONLY, &v6only, &olen),
		     0);
	cr_assert(v6only, "RIO_SOCK_V6ONLY not applied");
	port = rio_local_port(lfd);
	cr_assert_gt(port, 0);
	cr_assert_eq(rio_sockaddr("::1", (uint16_t)port, &ss, &len), 0);
	cfd = rio_socket_tcp(AF_INET6);
	cr_assert_geq(cfd, 0);

	cr_assert_eq(rio_accept(loop, &acc.op, lfd, (struct sockaddr *)&peer,
				&plen, 0, t_rec_cb),
		     0);
	cr_assert_eq(rio_connect(loop, &con.op, cfd, (struct sockaddr *)&ss, len,
				 t_rec_cb),
		     0);
	T_RUN_UNTIL(loop, acc.calls && con.calls, 3000);
	cr_assert_eq(con.res, 0, "connect [::1]: %s", rio_strerror(con.res));
	cr_assert_geq(acc.res, 0, "accept: %s", rio_strerror(acc.res));
	cr_assert_eq(peer.ss_family, AF_INET6);
	cr_assert_eq(plen, sizeof(struct sockaddr_in6));

	cr_assert_eq(rio_send(loop, &snd.op, cfd, "six", 3, 0, t_rec_cb), 0);
	cr_assert_eq(rio_recv(loop, &rcv.op, acc.res, buf, sizeof(buf), 0, t_rec_cb),
		     0);
	T_RUN_UNTIL(loop, snd.calls && rcv.calls, 3000);
	cr_assert_eq(snd.res, 3);
	cr_assert_eq(rcv.res, 3);
	cr_assert_eq(memcmp(buf, "six", 3), 0);
	close(acc.res);
	close(cfd);
	close(lfd);
	t_loop_done(loop);
}

/* rio_listen_addr listens where a rio_addr says, IPv4 and IPv6, and
 * refuses what is not an address of either. */
Test(sockets, listen_addr_listens_on_the_address, .timeout = 10)
{
	rio_addr a;

	memset(&a, 0, sizeof(a));
	cr_assert_eq(rio_sockaddr("127.0.0.1", 0, &a.ss, &a.len), 0);
	int fd = rio_listen_addr(&a, 0, 0);
	cr_assert_geq(fd, 0, "%s", rio_strerror(fd));
	int port = rio_local_port(fd);
	cr_assert_gt(port, 0);
	int c = t_connect(AF_INET, (uint16_t)port);
	close(c);
	close(fd);
	if (t_ipv6_loopback()) {
		cr_assert_eq(rio_sockaddr("::1", 0, &a.ss, &a.len), 0);
		fd = rio_listen_addr(&a, 0, RIO_SOCK_V6ONLY);
		cr_assert_geq(fd, 0, "%s", rio_strerror(fd));
		c = t_connect(AF_INET6, (uint16_t)rio_local_port(fd));
		close(c);
		close(fd);
	}
	cr_assert_eq(rio_listen_addr(NULL, 0, 0), -EINVAL);
	cr_assert_eq(rio_sockaddr("127.0.0.1", 0, &a.ss, &a.len), 0);
	cr_assert_eq(rio_listen_addr(&a, 0, 0x80), -EINVAL);
	a.ss.ss_family = AF_PACKET;
	cr_assert_eq(rio_listen_addr(&a, 0, 0), -EINVAL);
	cr_assert_eq(rio_sockaddr("127.0.0.1", 0, &a.ss, &a.len), 0);
	cr_assert_eq(rio_listen_addr(&a, 0, RIO_SOCK_UNLINK), -EINVAL,
		     "RIO_SOCK_UNLINK is for unix paths");
}

/* A connect to a unix address, from a blocking socket; -errno or 0. */
static int unix_connect(const rio_addr *a)
{
	int c = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	int r = connect(c, (const struct sockaddr *)&a->ss, a->len) ? -errno : 0;

	close(c);
	return r;
}

/* The unlink policy (ringio.h): a path is a file that bind() makes; ringio
 * removes one only when asked (RIO_SOCK_UNLINK), and then only a socket
 * that no one listens on. */
Test(sockets, listen_addr_on_a_unix_path_and_its_unlink_policy, .timeout = 10)
{
	char dir[64], text[160], path[128];
	struct stat st;
	rio_addr a;

	snprintf(dir, sizeof dir, "/tmp/ringio-test-XXXXXX");
	cr_assert_not_null(mkdtemp(dir));
	snprintf(path, sizeof path, "%s/s.sock", dir);
	snprintf(text, sizeof text, "unix:%s", path);
	cr_assert_eq(rio_addr_parse(text, &a), 0);

	int fd = rio_listen_addr(&a, 0, 0);
	cr_assert_geq(fd, 0, "%s", rio_strerror(fd));
	cr_assert(fcntl(fd, F_GETFL) & O_NONBLOCK);
	cr_assert(fcntl(fd, F_GETFD) & FD_CLOEXEC);
	cr_assert_eq(stat(path, &st), 0);
	cr_assert(S_ISSOCK(st.st_mode));
	cr_assert_eq(unix_connect(&a), 0);
	cr_assert_eq(rio_local_port(fd), -EAFNOSUPPORT, "no port on a unix socket");
	/* taken: by a live listener, even with RIO_SOCK_UNLINK */
	cr_assert_eq(rio_listen_addr(&a, 0, 0), -EADDRINUSE);
	cr_assert_eq(rio_listen_addr(&a, 0, RIO_SOCK_UNLINK), -EADDRINUSE);
	cr_assert_eq(unix_connect(&a), 0, "the live listener was removed");
	close(fd);
	/* stale: its file stays; only RIO_SOCK_UNLINK takes it over */
	cr_assert_eq(unix_connect(&a), -ECONNREFUSED);
	cr_assert_eq(rio_listen_addr(&a, 0, 0), -EADDRINUSE);
	fd = rio_listen_addr(&a, 0, RIO_SOCK_UNLINK);
	cr_assert_geq(fd, 0, "%s", rio_strerror(fd));
	cr_assert_eq(unix_connect(&a), 0);
	close(fd);
	/* not a socket: never removed */
	cr_assert_eq(unlink(path), 0);
	int reg = open(path, O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
	cr_assert_geq(reg, 0);
	close(reg);
	cr_assert_eq(rio_listen_addr(&a, 0, RIO_SOCK_UNLINK), -EADDRINUSE);
	cr_assert_eq(stat(path, &st), 0);
	cr_assert(S_ISREG(st.st_mode), "a regular file was removed");
	cr_assert_eq(unlink(path), 0);
	/* IP-only flags */
	cr_assert_eq(rio_listen_addr(&a, 0, RIO_SOCK_REUSEPORT), -EINVAL);
	cr_assert_eq(rio_listen_addr(&a, 0, RIO_SOCK_V6ONLY), -EINVAL);
	cr_assert_eq(rmdir(dir), 0);

	/* an abstract name: no file; free again once its socket is closed */
	snprintf(text, sizeof text, "unix:@ringio-test-%d", (int)getpid());
	cr_assert_eq(rio_addr_parse(text, &a), 0);
	fd = rio_listen_addr(&a, 0, 0);
	cr_assert_geq(fd, 0, "%s", rio_strerror(fd));
	cr_assert_eq(rio_listen_addr(&a, 0, 0), -EADDRINUSE);
	cr_assert_eq(unix_connect(&a), 0);
	close(fd);
	fd = rio_listen_addr(&a, 0, 0);
	cr_assert_geq(fd, 0, "%s", rio_strerror(fd));
	close(fd);
}

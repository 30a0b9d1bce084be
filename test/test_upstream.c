/* Upstreams: rio_addr_parse/format, and rio_connect_any over a set of
 * loopback addresses: round robin, failed addresses tried last until
 * retry_ns, the per-try deadline, cancel, EMFILE, misuse. */
#include "common.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

/* ---- helpers ---- */

struct conn {
	rio_connector c;
	int calls;
	int res;
	int in_submit; /* set around the submit call */
	int ran_in_submit;
};

static void conn_cb(rio_loop *loop, rio_op *op, int res)
{
	struct conn *x = RIO_CONTAINER_OF(op, struct conn, c.op);

	(void)loop;
	x->calls++;
	x->res = res;
	if (x->in_submit)
		x->ran_in_submit = 1;
}

static int submit(rio_loop *loop, struct conn *x, rio_upstreams *u)
{
	int rc;

	x->calls = 0;
	x->res = 0;
	x->in_submit = 1;
	rc = rio_connect_any(loop, &x->c, u, conn_cb);
	x->in_submit = 0;
	return rc;
}

/* One rio_connect_any, run to its completion; returns its result. */
static int connect_once(rio_loop *loop, struct conn *x, rio_upstreams *u)
{
	cr_assert_eq(submit(loop, x, u), 0);
	T_RUN_UNTIL(loop, x->calls > 0, 5000);
	cr_assert_eq(x->calls, 1);
	cr_assert_eq(x->ran_in_submit, 0, "the callback ran inside the submit");
	return x->res;
}

static rio_addr loopback_addr(int family, uint16_t port)
{
	rio_addr a;

	memset(&a, 0, sizeof a);
	a.len = t_loopback(family, port, &a.ss);
	return a;
}

static rio_upstreams *make_set(const rio_addr *addrs, unsigned n,
			       uint64_t try_ns, uint64_t retry_ns)
{
	rio_upstreams_opts o = { .try_ns = try_ns, .retry_ns = retry_ns };
	rio_upstreams *u = NULL;
	int rc = rio_upstreams_create(addrs, n, &o, &u);

	cr_assert_eq(rc, 0, "rio_upstreams_create: %s", rio_strerror(rc));
	cr_assert_not_null(u);
	return u;
}

static rio_upstream_counters ctr(const rio_upstreams *u, int i)
{
	rio_upstream_counters c;

	rio_upstreams_counters(u, i, &c);
	return c;
}

/* The totals over the set are these. */
static void assert_totals(const rio_upstreams *u, uint64_t connected,
			  uint64_t refused, uint64_t timeouts,
			  uint64_t exhausted)
{
	rio_upstream_counters t = ctr(u, -1);

	cr_assert(t.connected == connected && t.refused == refused &&
		  t.timeouts == timeouts && t.other == 0 &&
		  t.exhausted == exhausted,
		  "connected %llu refused %llu timeouts %llu other %llu "
		  "exhausted %llu",
		  (unsigned long long)t.connected,
		  (unsigned long long)t.refused,
		  (unsigned long long)t.timeouts,
		  (unsigned long long)t.other,
		  (unsigned long long)t.exhausted);
}

/* Destroy the set and the loop, asserting both succeed. */
static void done(rio_loop *loop, rio_upstreams *u)
{
	cr_assert_eq(rio_upstreams_destroy(u), 0);
	t_loop_done(loop);
}

/* A listener whose accept queue is full: a connect to it hangs. */
struct full {
	uint16_t port;
	int lfd, filler;
};

static rio_addr full_open(struct full *f)
{
	f->lfd = t_full_listener(&f->port, &f->filler);
	return loopback_addr(AF_INET, f->port);
}

static void full_close(const struct full *f)
{
	close(f->filler);
	close(f->lfd);
}

static int count_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;
	int n = 0;

	cr_assert_not_null(d);
	while ((e = readdir(d)))
		n += e->d_name[0] != '.';
	closedir(d);
	return n - 1; /* the directory's own fd */
}

/* Take the connection fd made to listener lfd (within 2 s); -1 if none. */
static int accept_within(int lfd, int ms)
{
	struct pollfd p = { .fd = lfd, .events = POLLIN };

	if (poll(&p, 1, ms) != 1)
		return -1;
	return accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
}

/* A connected fd's peer port. */
static uint16_t peer_port(int fd)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof ss;

	cr_assert_eq(getpeername(fd, (struct sockaddr *)&ss, &len), 0,
		     "getpeername: %s", strerror(errno));
	if (ss.ss_family == AF_INET6)
		return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
	return ntohs(((struct sockaddr_in *)&ss)->sin_port);
}

/* ---- rio_addr ---- */

Test(addr, parses_and_formats_back, .timeout = 10)
{
	static const char *const good[] = {
		"1.2.3.4:80", "127.0.0.1:0", "255.255.255.255:65535",
		"[::1]:80", "[2001:db8::1]:8080", "[::ffff:10.0.0.1]:1",
		"[::]:443",
	};
	char buf[64];

	for (size_t k = 0; k < sizeof good / sizeof good[0]; k++) {
		rio_addr a;
		int rc = rio_addr_parse(good[k], &a);

		cr_assert_eq(rc, 0, "%s: %s", good[k], rio_strerror(rc));
		rc = rio_addr_format(&a, buf, sizeof buf);
		cr_assert_eq(rc, (int)strlen(good[k]), "%s: format gave %d",
			     good[k], rc);
		cr_assert_str_eq(buf, good[k]);
	}
}

Test(addr, fills_the_sockaddr, .timeout = 10)
{
	rio_addr a;
	struct sockaddr_in *in4 = (struct sockaddr_in *)&a.ss;
	struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&a.ss;
	struct in6_addr lo6 = IN6ADDR_LOOPBACK_INIT;

	cr_assert_eq(rio_addr_parse("10.1.2.3:8080", &a), 0);
	cr_assert_eq(a.ss.ss_family, AF_INET);
	cr_assert_eq(a.len, sizeof(struct sockaddr_in));
	cr_assert_eq(ntohs(in4->sin_port), 8080);
	cr_assert_eq(ntohl(in4->sin_addr.s_addr), 0x0a010203u);

	cr_assert_eq(rio_addr_parse("[::1]:443", &a), 0);
	cr_assert_eq(a.ss.ss_family, AF_INET6);
	cr_assert_eq(a.len, sizeof(struct sockaddr_in6));
	cr_assert_eq(ntohs(in6->sin6_port), 443);
	cr_assert_eq(memcmp(&in6->sin6_addr, &lo6, sizeof lo6), 0);

	/* a port is decimal: leading zeros are only zeros */
	cr_assert_eq(rio_addr_parse("1.2.3.4:0080", &a), 0);
	cr_assert_eq(ntohs(in4->sin_port), 80);
}

Test(addr, rejects_what_is_not_an_address, .timeout = 10)
{
	static const char *const bad[] = {
		"", "1.2.3.4", "1.2.3.4:", ":80", "[]:80", "::1:80", "::1",
		"[::1]", "[::1]80", "[::1]:", "[::1", "::1]:80", "[::1]:80:",
		"1.2.3.4:65536", "1.2.3.4:99999999999999999999", "1.2.3.4:-1",
		"1.2.3.4:+80", "1.2.3.4: 80", "1.2.3.4:80 ", " 1.2.3.4:80",
		"1.2.3.4:8x", "1.2.3.4:0x50", "1.2.3:80", "1.2.3.4.5:80",
		"256.1.1.1:80", "localhost:80", "[1.2.3.4]:80",
		"[fe80::1%lo]:80", "1.2.3.4:80:80", "[::1]:80]",
		"garbage", "::",
	};
	rio_addr a;
	char longhost[128];

	rio_addr before;

	memset(&a, 0x5a, sizeof a);
	before = a;
	for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++)
		cr_assert_eq(rio_addr_parse(bad[k], &a), -EINVAL,
			     "\"%s\" was taken", bad[k]);
	cr_assert_eq(memcmp(&a, &before, sizeof a), 0,
		     "a failed parse wrote *out");
	memset(longhost, '1', sizeof longhost);
	memcpy(longhost + sizeof longhost - 4, ":80", 4);
	cr_assert_eq(rio_addr_parse(longhost, &a), -EINVAL);
	cr_assert_eq(rio_addr_parse(NULL, &a), -EINVAL);
	cr_assert_eq(rio_addr_parse("1.2.3.4:80", NULL), -EINVAL);
}

Test(addr, format_checks_family_and_room, .timeout = 10)
{
	rio_addr a;
	char buf[32];

	cr_assert_eq(rio_addr_parse("1.2.3.4:80", &a), 0);
	/* "1.2.3.4:80" is 10 characters: 11 bytes with its NUL */
	cr_assert_eq(rio_addr_format(&a, buf, 10), -ENOSPC);
	cr_assert_eq(rio_addr_format(&a, buf, 0), -ENOSPC);
	cr_assert_eq(rio_addr_format(&a, buf, 11), 10);
	cr_assert_str_eq(buf, "1.2.3.4:80");
	cr_assert_eq(rio_addr_format(NULL, buf, sizeof buf), -EINVAL);
	cr_assert_eq(rio_addr_format(&a, NULL, sizeof buf), -EINVAL);
	a.ss.ss_family = AF_PACKET; /* not an address family of ours */
	cr_assert_eq(rio_addr_format(&a, buf, sizeof buf), -EINVAL);
	cr_assert_eq(rio_addr_parse("[::1]:80", &a), 0);
	a.len = sizeof(struct sockaddr_in); /* too short for IPv6 */
	cr_assert_eq(rio_addr_format(&a, buf, sizeof buf), -EINVAL);
}

/* Unix-domain addresses: a path, or an abstract name ('@': a NUL byte). */
Test(addr, unix_paths_and_abstract_names, .timeout = 10)
{
	static const char *const good[] = {
		"unix:/run/ringio.sock", "unix:relative.sock", "unix:@ringio",
		"unix:@with space", "unix:/", "unix:@@",
	};
	const size_t base = offsetof(struct sockaddr_un, sun_path);
	struct sockaddr_un *un;
	char buf[256], text[200];
	rio_addr a;

	for (size_t k = 0; k < sizeof good / sizeof good[0]; k++) {
		const char *name = good[k] + 5;
		int abstract = name[0] == '@';
		int rc = rio_addr_parse(good[k], &a);

		cr_assert_eq(rc, 0, "%s: %s", good[k], rio_strerror(rc));
		un = (struct sockaddr_un *)&a.ss;
		cr_assert_eq(a.ss.ss_family, AF_UNIX);
		/* a path with its NUL; an abstract name without one */
		cr_assert_eq(a.len, base + strlen(name) + !abstract, "%s", good[k]);
		if (abstract)
			cr_assert(un->sun_path[0] == '\0' &&
				  memcmp(un->sun_path + 1, name + 1,
					 strlen(name) - 1) == 0);
		else
			cr_assert_str_eq(un->sun_path, name);
		rc = rio_addr_format(&a, buf, sizeof buf);
		cr_assert_eq(rc, (int)strlen(good[k]), "%s: format gave %d",
			     good[k], rc);
		cr_assert_str_eq(buf, good[k]);
		cr_assert_eq(rio_addr_format(&a, buf, strlen(good[k])), -ENOSPC);
	}
	/* sun_path holds 108 bytes: a path of 107 and its NUL; a name of 107
	 * after its leading NUL */
	for (int abstract = 0; abstract < 2; abstract++) {
		memset(text, 'p', sizeof text);
		memcpy(text, abstract ? "unix:@" : "unix:/", 6);
		text[5 + 108 - !abstract] = '\0';
		cr_assert_eq(rio_addr_parse(text, &a), 0, "%zu bytes",
			     strlen(text) - 5);
		cr_assert_eq(a.len, sizeof(struct sockaddr_un));
		cr_assert_eq(rio_addr_format(&a, buf, sizeof buf),
			     (int)strlen(text));
		cr_assert_str_eq(buf, text);
		text[5 + 108 - !abstract] = 'p';
		text[5 + 109 - !abstract] = '\0';
		cr_assert_eq(rio_addr_parse(text, &a), -ENAMETOOLONG,
			     "%zu bytes", strlen(text) - 5);
	}
	cr_assert_eq(rio_addr_parse("unix:", &a), -EINVAL);
	cr_assert_eq(rio_addr_parse("unix:@", &a), -EINVAL);
	cr_assert_eq(rio_addr_parse("unix", &a), -EINVAL);
	cr_assert_eq(rio_addr_parse("UNIX:/x", &a), -EINVAL);
	/* an abstract name with a NUL inside parses from no text, and
	 * cannot be written as text */
	cr_assert_eq(rio_addr_parse("unix:@ab", &a), 0);
	un = (struct sockaddr_un *)&a.ss;
	un->sun_path[1] = '\0';
	cr_assert_eq(rio_addr_format(&a, buf, sizeof buf), -EINVAL);
}

/* ---- the set ---- */

Test(upstreams, create_checks_its_arguments, .timeout = 10)
{
	rio_addr a[65], un;
	rio_upstreams *u = NULL;
	rio_upstream_counters c;

	for (int i = 0; i < 65; i++)
		a[i] = loopback_addr(AF_INET, (uint16_t)(1000 + i));
	cr_assert_eq(rio_upstreams_create(NULL, 1, NULL, &u), -EINVAL);
	cr_assert_eq(rio_upstreams_create(a, 0, NULL, &u), -EINVAL);
	cr_assert_eq(rio_upstreams_create(a, 65, NULL, &u), -EINVAL);
	cr_assert_eq(rio_upstreams_create(a, 1, NULL, NULL), -EINVAL);
	memset(&un, 0, sizeof un);
	un.ss.ss_family = AF_PACKET;
	un.len = sizeof un.ss;
	cr_assert_eq(rio_upstreams_create(&un, 1, NULL, &u), -EINVAL);
	un.ss.ss_family = AF_UNIX;
	un.len = offsetof(struct sockaddr_un, sun_path); /* no name */
	cr_assert_eq(rio_upstreams_create(&un, 1, NULL, &u), -EINVAL);
	un = a[0];
	un.len = 4; /* shorter than a sockaddr_in */
	cr_assert_eq(rio_upstreams_create(&un, 1, NULL, &u), -EINVAL);
	cr_assert_null(u, "a failed create stored a set");

	cr_assert_eq(rio_upstreams_create(a, 64, NULL, &u), 0);
	cr_assert_not_null(u);
	c = ctr(u, -1);
	cr_assert(c.connected == 0 && c.refused == 0 && c.timeouts == 0 &&
		  c.other == 0 && c.exhausted == 0);
	memset(&c, 0xff, sizeof c);
	rio_upstreams_counters(u, 64, &c); /* past the set: zeros */
	cr_assert(c.connected == 0 && c.refused == 0 && c.exhausted == 0);
	cr_assert_eq(rio_upstreams_destroy(u), 0);
	cr_assert_eq(rio_upstreams_destroy(NULL), -EINVAL);
}

/* ---- rio_connect_any ---- */

Test(connect_any, connects_to_a_listening_address, .timeout = 20)
{
	rio_loop *loop = t_loop();
	struct conn x = { .calls = 0 };
	uint16_t port;
	int lfd = t_listen(AF_INET, 8, &port);
	rio_addr a = loopback_addr(AF_INET, port);
	rio_upstreams *u = make_set(&a, 1, 0, 0);
	int fd, afd, fl;

	fd = connect_once(loop, &x, u);
	cr_assert_geq(fd, 0, "connect_any: %s", rio_strerror(fd));
	cr_assert_eq(x.c.upstream, 0);
	cr_assert_eq(peer_port(fd), port);
	fl = fcntl(fd, F_GETFL);
	cr_assert(fl & O_NONBLOCK, "the fd is non-blocking");
	cr_assert(fcntl(fd, F_GETFD) & FD_CLOEXEC, "the fd is close-on-exec");
	cr_assert_eq(ctr(u, 0).connected, 1);
	cr_assert_eq(ctr(u, -1).connected, 1);

	/* a real connection: the listener holds its other end */
	afd = accept_within(lfd, 2000);
	cr_assert_geq(afd, 0);
	cr_assert_eq(peer_port(afd), rio_local_port(fd));
	t_loop_sleep(loop, 10);
	cr_assert_eq(x.calls, 1);
	close(afd);
	close(fd);
	close(lfd);
	done(loop, u);
}

/* A temporary directory for unix socket files, removed by unix_dir_done. */
static void unix_dir(char *dir, size_t len)
{
	snprintf(dir, len, "/tmp/ringio-test-XXXXXX");
	cr_assert_not_null(mkdtemp(dir), "mkdtemp: %s", strerror(errno));
}

static void unix_dir_done(const char *dir, const char *file)
{
	char path[256];

	snprintf(path, sizeof path, "%s/%s", dir, file);
	unlink(path);
	cr_assert_eq(rmdir(dir), 0, "rmdir %s: %s", dir, strerror(errno));
}

/* connect_any to unix-domain listeners: a path that is missing, a stale
 * socket file (refused), then a live path, then an abstract name. */
Test(connect_any, connects_to_unix_paths_and_abstract_names, .timeout = 20)
{
	rio_loop *loop = t_loop();
	struct conn x = { .calls = 0 };
	char dir[64], text[3][128];
	rio_addr a[3];
	int lfd[2], fd, afd;

	unix_dir(dir, sizeof dir);
	snprintf(text[0], sizeof text[0], "unix:%s/missing.sock", dir);
	snprintf(text[1], sizeof text[1], "unix:%s/live.sock", dir);
	snprintf(text[2], sizeof text[2], "unix:@ringio-test-%d", (int)getpid());
	for (int i = 0; i < 3; i++)
		cr_assert_eq(rio_addr_parse(text[i], &a[i]), 0, "%s", text[i]);
	lfd[0] = rio_listen_addr(&a[1], 8, 0);
	lfd[1] = rio_listen_addr(&a[2], 8, 0);
	cr_assert(lfd[0] >= 0 && lfd[1] >= 0, "listen: %s / %s",
		  rio_strerror(lfd[0]), rio_strerror(lfd[1]));

	rio_upstreams *u = make_set(a, 2, 0, 0);
	fd = connect_once(loop, &x, u);
	cr_assert_geq(fd, 0, "connect_any: %s", rio_strerror(fd));
	cr_assert_eq(x.c.upstream, 1);
	cr_assert_eq(ctr(u, 0).other, 1, "the missing path is an error");
	cr_assert_eq(ctr(u, 1).connected, 1);
	afd = accept_within(lfd[0], 2000);
	cr_assert_geq(afd, 0);
	cr_assert_eq(write(afd, "hi", 2), 2);
	char got[2];
	size_t have = 0;
	T_RUN_UNTIL(loop, t_recv_upto(fd, got, 2, &have), 2000);
	cr_assert_eq(memcmp(got, "hi", 2), 0);
	close(afd);
	close(fd);
	cr_assert_eq(rio_upstreams_destroy(u), 0);

	/* the live listener goes, its file stays: refused */
	close(lfd[0]);
	u = make_set(&a[1], 1, 0, 0);
	x.calls = 0;
	cr_assert_eq(connect_once(loop, &x, u), -ECONNREFUSED);
	cr_assert_eq(ctr(u, 0).refused, 1);
	cr_assert_eq(rio_upstreams_destroy(u), 0);

	u = make_set(&a[2], 1, 0, 0);
	x.calls = 0;
	fd = connect_once(loop, &x, u);
	cr_assert_geq(fd, 0, "abstract: %s", rio_strerror(fd));
	afd = accept_within(lfd[1], 2000);
	cr_assert_geq(afd, 0);
	close(afd);
	close(fd);
	close(lfd[1]);
	unix_dir_done(dir, "live.sock");
	done(loop, u);
}

Test(connect_any, connects_over_ipv6, .timeout = 20)
{
	rio_loop *loop;
	struct conn x = { .calls = 0 };
	uint16_t p4, p6;
	int l4, l6, fd, afd;
	rio_addr a[2];
	rio_upstreams *u;

	if (!t_ipv6_loopback())
		cr_skip_test("no IPv6 loopback here");
	loop = t_loop();
	l6 = t_listen(AF_INET6, 8, &p6);
	l4 = t_listen(AF_INET, 8, &p4);
	a[0] = loopback_addr(AF_INET6, p6);
	a[1] = loopback_addr(AF_INET, p4);
	u = make_set(a, 2, 0, 0);
	for (int k = 0; k < 2; k++) {
		fd = connect_once(loop, &x, u);
		cr_assert_geq(fd, 0, "connect_any: %s", rio_strerror(fd));
		cr_assert_eq(x.c.upstream, k);
		cr_assert_eq(peer_port(fd), k ? p4 : p6);
		afd = accept_within(k ? l4 : l6, 2000);
		cr_assert_geq(afd, 0);
		close(afd);
		close(fd);
	}
	close(l4);
	close(l6);
	done(loop, u);
}

Test(connect_any, a_refusing_address_then_a_good_one, .timeout = 20)
{
	rio_loop *loop = t_loop();
	struct conn x = { .calls = 0 };
	uint16_t good;
	int lfd = t_listen(AF_INET, 8, &good);
	rio_addr a[2] = { loopback_addr(AF_INET, t_closed_port()),
			  loopback_addr(AF_INET, good) };
	rio_upstreams *u = make_set(a, 2, 0, 0);
	int fd0 = count_fds();
	int fd = connect_once(loop, &x, u);

	cr_assert_geq(fd, 0, "connect_any: %s", rio_strerror(fd));
	cr_assert_eq(x.c.upstream, 1, "the good address is index 1");
	cr_assert_eq(peer_port(fd), good);
	cr_assert_eq(ctr(u, 0).refused, 1);
	cr_assert_eq(ctr(u, 0).connected, 0);
	cr_assert_eq(ctr(u, 1).connected, 1);
	cr_assert_eq(ctr(u, 1).refused, 0);
	assert_totals(u, 1, 1, 0, 0);
	/* the refused socket was closed: only the connection is new */
	cr_assert_eq(count_fds(), fd0 + 1);
	close(fd);
	close(lfd);
	done(loop, u);
}

Test(connect_any, round_robin_starts_one_on_each_call, .timeout = 20)
{
	enum { N = 3 };
	rio_loop *loop = t_loop();
	struct conn x = { .calls = 0 };
	uint16_t port[N];
	int lfd[N];
	rio_addr a[N];
	rio_upstreams *u;

	for (int i = 0; i < N; i++) {
		lfd[i] = t_listen(AF_INET, 8, &port[i]);
		a[i] = loopback_addr(AF_INET, port[i]);
	}
	u = make_set(a, N, 0, 0);
	for (int k = 0; k < 2 * N; k++) {
		int fd = connect_once(loop, &x, u);
		int want = k % N;

		cr_assert_geq(fd, 0, "call %d: %s", k, rio_strerror(fd));
		cr_assert_eq(x.c.upstream, want, "call %d went to %d", k,
			     x.c.upstream);
		for (int i = 0; i < N; i++) {
			int afd = accept_within(lfd[i], i == want ? 2000 : 0);

			cr_assert_eq(afd >= 0, i == want,
				     "call %d: listener %d %s a connection", k,
				     i, afd >= 0 ? "got" : "did not get");
			if (afd >= 0)
				close(afd);
		}
		close(fd);
	}
	for (int i = 0; i < N; i++) {
		cr_assert_eq(ctr(u, i).connected, 2);
		close(lfd[i]);
	}
	done(loop, u);
}

/* opts.first: sets of one list made by different loops start on
 * different addresses (first mod n), then go round from there. */
Test(connect_any, first_sets_where_the_round_robin_starts, .timeout = 20)
{
	enum { N = 3 };
	rio_loop *loop = t_loop();
	struct conn x = { .calls = 0 };
	uint16_t port[N];
	int lfd[N];
	rio_addr a[N];

	for (int i = 0; i < N; i++) {
		lfd[i] = t_listen(AF_INET, 8, &port[i]);
		a[i] = loopback_addr(AF_INET, port[i]);
	}
	for (unsigned first = 0; first < 5; first++) {
		rio_upstreams_opts o = { .first = first };
		rio_upstreams *u = NULL;

		cr_assert_eq(rio_upstreams_create(a, N, &o, &u), 0);
		for (int k = 0; k < 2; k++) {
			int fd = connect_once(loop, &x, u);

			cr_assert_geq(fd, 0, "%s", rio_strerror(fd));
			cr_assert_eq(x.c.upstream, (int)((first + (unsigned)k) % N),
				     "first %u, call %d went to %d", first, k,
				     x.c.upstream);
			int afd = accept_within(lfd[x.c.upstream], 2000);
			cr_assert_geq(afd, 0);
			close(afd);
			close(fd);
		}
		cr_assert_eq(rio_upstreams_destroy(u), 0);
	}
	for (int i = 0; i < N; i++)
		close(lfd[i]);
	t_loop_done(loop);
}

/* Address 0 refuses. Calls start at 0, 1, 0, 1, ...: a call that starts at
 * 0 tries it first unless it failed within retry_ns. */
Test(connect_any, a_failed_address_waits_retry_ns, .timeout = 20)
{
	rio_loop *loop = t_loop();
	struct conn x = { .calls = 0 };
	uint16_t good;
	int lfd = t_listen(AF_INET, 16, &good);
	rio_addr a[2] = { loopback_addr(AF_INET, t_closed_port()),
			  loopback_addr(AF_INET, good) };
	rio_upstreams *u = make_set(a, 2, 0, 500 * T_MS);
	int fd;

	fd = connect_once(loop, &x, u); /* starts at 0: refused, then 1 */
	cr_assert_geq(fd, 0);
	close(fd);
	cr_assert_eq(ctr(u, 0).refused, 1);
	fd = connect_once(loop, &x, u); /* starts at 1 */
	cr_assert_geq(fd, 0);
	close(fd);
	fd = connect_once(loop, &x, u); /* starts at 0, which is down */
	cr_assert_geq(fd, 0);
	close(fd);
	cr_assert_eq(x.c.upstream, 1);
	cr_assert_eq(ctr(u, 0).refused, 1, "the down address was tried");

	t_loop_sleep(loop, 600); /* retry_ns passes */
	fd = connect_once(loop, &x, u); /* starts at 1 */
	cr_assert_geq(fd, 0);
	close(fd);
	fd = connect_once(loop, &x, u); /* starts at 0: tried again */
	cr_assert_geq(fd, 0);
	close(fd);
	cr_assert_eq(x.c.upstream, 1);
	cr_assert_eq(ctr(u, 0).refused, 2, "not tried again after retry_ns");
	cr_assert_eq(ctr(u, 1).connected, 5);
	cr_assert_eq(ctr(u, -1).exhausted, 0);
	for (int i = 0; i < 5; i++)
		close(accept_within(lfd, 2000));
	close(lfd);
	done(loop, u);
}

/* Listen on 127.0.0.1:port exactly (a port t_closed_port gave). */
static int listen_on(uint16_t port)
{
	struct sockaddr_storage ss;
	socklen_t len = t_loopback(AF_INET, port, &ss);
	int one = 1;
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	cr_assert_geq(fd, 0);
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	cr_assert_eq(bind(fd, (struct sockaddr *)&ss, len), 0, "bind: %s",
		     strerror(errno));
	cr_assert_eq(listen(fd, 8), 0);
	return fd;
}

/* Both addresses refuse and are down; address 0 comes up and connects
 * (tried last, but tried): that clears its mark, so a call that starts at
 * the still-down address 1 goes to 0 first. */
Test(connect_any, a_success_clears_the_mark, .timeout = 20)
{
	rio_loop *loop = t_loop();
	struct conn x = { .calls = 0 };
	uint16_t p0 = t_closed_port(), p1 = t_closed_port();
	rio_addr a[2] = { loopback_addr(AF_INET, p0),
			  loopback_addr(AF_INET, p1) };
	rio_upstreams *u = make_set(a, 2, 0, 10000 * T_MS);
	int lfd, fd;

	cr_assert_eq(connect_once(loop, &x, u), -ECONNREFUSED); /* at 0 */
	lfd = listen_on(p0);
	fd = connect_once(loop, &x, u); /* at 1: both down; 1, then 0 */
	cr_assert_geq(fd, 0, "connect_any: %s", rio_strerror(fd));
	cr_assert_eq(x.c.upstream, 0);
	cr_assert_eq(ctr(u, 1).refused, 2);
	close(fd);
	fd = connect_once(loop, &x, u); /* at 0 */
	cr_assert_geq(fd, 0);
	close(fd);
	fd = connect_once(loop, &x, u); /* at 1, down; 0 is up again */
	cr_assert_geq(fd, 0);
	close(fd);
	cr_assert_eq(x.c.upstream, 0);
	cr_assert_eq(ctr(u, 1).refused, 2,
		     "the down address went before the one that came back");
	cr_assert_eq(ctr(u, 0).connected, 3);
	close(lfd);
	done(loop, u);
}

/* A listener whose backlog is full leaves the connect in SYN_SENT: try_ns
 * ends it with -ETIMEDOUT, and the next address is tried. */
Test(connect_any, a_hanging_try_times_out_and_the_next_connects,
     .timeout = 20)
{
	rio_loop *loop = t_loop();
	struct conn x = { .calls = 0 };
	struct full f;
	uint16_t good;
	int lfd = t_listen(AF_INET, 8, &good);
	rio_addr a[2] = { full_open(&f), loopback_addr(AF_INET, good) };
	rio_upstreams *u = make_set(a, 2, 100 * T_MS, 0);
	uint64_t t0 = t_now_ns();
	int fd = connect_once(loop, &x, u);
	uint64_t took = t_now_ns() - t0;

	cr_assert_geq(fd, 0, "connect_any: %s", rio_strerror(fd));
	cr_assert_eq(x.c.upstream, 1);
	cr_assert_eq(peer_port(fd), good);
	cr_assert_eq(ctr(u, 0).timeouts, 1);
	assert_totals(u, 1, 0, 1, 0);
	cr_assert_geq(took, 90 * T_MS, "the try ended after %llu ms",
		      (unsigned long long)(took / T_MS));
	cr_assert_lt(took, 2000 * T_MS);
	close(fd);
	close(lfd);
	full_close(&f);
	done(loop, u);
}

Test(connect_any, all_failing_gives_the_last_error, .timeout = 20)
{
	rio_loop *loop = t_loop();
	struct conn x = { .calls = 0 };
	struct full f;
	rio_addr a[2] = { loopback_addr(AF_INET, t_closed_port()),
			  full_open(&f) };
	rio_upstreams *u = make_set(a, 2, 100 * T_MS, 0);
	int fd0 = count_fds();

	/* starts at 0: refused, then the hang times out: the last error */
	cr_assert_eq(connect_once(loop, &x, u), -ETIMEDOUT);
	cr_assert_eq(x.c.upstream, 1);
	cr_assert_eq(ctr(u, -1).exhausted, 1);
	cr_assert_eq(ctr(u, 0).refused, 1);
	cr_assert_eq(ctr(u, 1).timeouts, 1);
	/* starts at 1: both are down, and both are still tried, once each */
	cr_assert_eq(connect_once(loop, &x, u), -ECONNREFUSED);
	cr_assert_eq(x.c.upstream, 0);
	cr_assert_eq(ctr(u, -1).exhausted, 2);
	cr_assert_eq(ctr(u, 0).refused, 2);
	cr_assert_eq(ctr(u, 1).timeouts, 2);
	assert_totals(u, 0, 2, 2, 2);
	cr_assert_eq(ctr(u, 0).exhausted, 0, "exhausted is the set's");
	cr_assert_eq(count_fds(), fd0, "a failed try's socket leaked");
	full_close(&f);
	done(loop, u);
}

struct canceller {
	rio_op op;
	int calls;
	int res;
};

static void cancel_cb(rio_loop *loop, rio_op *op, int res)
{
	struct canceller *k = RIO_CONTAINER_OF(op, struct canceller, op);

	(void)loop;
	k->calls++;
	k->res = res;
}

static void cancel(rio_loop *loop, struct canceller *k, struct conn *x)
{
	memset(k, 0, sizeof *k);
	cr_assert_eq(rio_cancel(loop, &k->op, &x->c.op, cancel_cb), 0);
}

Test(connect_any, cancel_while_a_try_hangs, .timeout = 20)
{
	rio_loop *loop = t_loop();
	struct conn x = { .calls = 0 };
	struct canceller k1, k2;
	struct full f;
	rio_addr a = full_open(&f);
	rio_upstreams *u = make_set(&a, 1, 10000 * T_MS, 0);
	int fd0 = count_fds();

	cr_assert_eq(submit(loop, &x, u), 0);
	t_loop_sleep(loop, 50);
	cr_assert_eq(x.calls, 0, "the try did not hang");
	cr_assert(rio_op_in_flight(&x.c.op));
	cr_assert_eq(count_fds(), fd0 + 1, "no socket for the try");
	cancel(loop, &k1, &x);
	cancel(loop, &k2, &x); /* it is ending already */
	T_RUN_UNTIL(loop, x.calls > 0 && k1.calls > 0 && k2.calls > 0, 3000);
	t_loop_sleep(loop, 20);
	cr_assert_eq(x.calls, 1);
	cr_assert_eq(x.res, -ECANCELED, "got %s", rio_strerror(x.res));
	cr_assert_eq(k1.calls, 1);
	cr_assert_eq(k1.res, 0);
	cr_assert_eq(k2.calls, 1);
	cr_assert_eq(k2.res, -EALREADY, "second cancel: %s",
		     rio_strerror(k2.res));
	cr_assert_eq(count_fds(), fd0, "the try's socket leaked");
	assert_totals(u, 0, 0, 0, 0); /* a cancelled try counts nowhere */
	/* the connector can be used again */
	cr_assert_eq(submit(loop, &x, u), 0);
	cancel(loop, &k1, &x);
	T_RUN_UNTIL(loop, x.calls > 0 && k1.calls > 0, 3000);
	cr_assert_eq(x.res, -ECANCELED);
	cr_assert_eq(count_fds(), fd0);
	full_close(&f);
	done(loop, u);
}

/* Cancel after 0, 1, 2, ... turns of the loop, so that the cancel lands
 * in every step a connector goes through: its first connect, the close of
 * a refused socket, the next connect, ... up to the try that hangs. Each
 * time: exactly one -ECANCELED, the cancel 0, no fd left. The loop's
 * counters tell the steps apart: the connector, then a connect, a close, a
 * connect, ... were submitted, so an odd count from 3 on means that the
 * close of a refused socket is in flight. */
Test(connect_any, cancel_in_every_step, .timeout = 60)
{
	rio_loop *loop = t_loop();
	struct full f;
	rio_addr a[3] = { loopback_addr(AF_INET, t_closed_port()),
			  loopback_addr(AF_INET, t_closed_port()),
			  full_open(&f) };
	rio_upstreams *u = make_set(a, 3, 10000 * T_MS, 1);
	int fd0 = count_fds();
	int in_close = 0, reached_hang = 0;

	for (int turns = 0; turns < 200 && !reached_hang; turns++) {
		struct conn x = { .calls = 0 };
		struct canceller k;
		rio_counters c0, c1;
		uint64_t subs;

		t_loop_sleep(loop, 2); /* retry_ns (1 ns) has passed */
		rio_loop_counters(loop, &c0);
		cr_assert_eq(submit(loop, &x, u), 0);
		for (int i = 0; i < turns; i++)
			cr_assert_geq(rio_loop_run(loop, RIO_RUN_NOWAIT), 0);
		rio_loop_counters(loop, &c1);
		subs = c1.ops_submitted - c0.ops_submitted;
		cr_assert_eq(x.calls, 0, "turn %d: it completed (%s)", turns,
			     rio_strerror(x.res));
		in_close += subs >= 3 && subs % 2 == 1;
		reached_hang = subs == 6; /* the third address's connect */
		cancel(loop, &k, &x);
		T_RUN_UNTIL(loop, x.calls > 0 && k.calls > 0, 3000);
		t_loop_sleep(loop, 2);
		cr_assert_eq(x.calls, 1, "turn %d: %d completions", turns,
			     x.calls);
		cr_assert_eq(x.res, -ECANCELED, "turn %d: %s", turns,
			     rio_strerror(x.res));
		cr_assert_eq(k.res, 0, "turn %d: cancel gave %s", turns,
			     rio_strerror(k.res));
		cr_assert_eq(count_fds(), fd0, "turn %d: a socket leaked",
			     turns);
	}
	cr_assert(reached_hang, "the connector never got to the third try");
	/* io_uring has a close in flight between turns; the fallback closes
	 * at submit and may deliver it in the same turn (the next test
	 * cancels from inside a turn) */
	cr_log_info("%s: cancelled during a close %d times",
		    rio_backend_name(t_backend(loop)), in_close);
	cr_assert_eq(ctr(u, -1).timeouts, 0);
	cr_assert_eq(ctr(u, -1).exhausted, 0);
	full_close(&f);
	done(loop, u);
}

/* A probe that runs once per delivery pass of the loop: an op settled
 * without the kernel (a cancel of an idle op: -ENOENT, deferred), submitted
 * again from its callback. It cancels the connector once the loop's
 * counters say that the close of the refused socket is in flight: the
 * connector, its connect and that close were submitted, and nothing else
 * of the connector's. */
struct probe {
	rio_op op, idle;
	struct conn *x;
	struct canceller k;
	rio_counters c0;
	uint64_t own;     /* ops the probe submitted since c0 */
	uint64_t h0;      /* t_helper_ops at c0: the runner's ops */
	int runs;
	int cancelled_at; /* the connector's op count at the cancel */
};

static uint64_t connector_ops(rio_loop *loop, const struct probe *p)
{
	rio_counters c;

	rio_loop_counters(loop, &c);
	return c.ops_submitted - p->c0.ops_submitted - p->own -
	       (t_helper_ops - p->h0);
}

static void probe_cb(rio_loop *loop, rio_op *op, int res)
{
	struct probe *p = RIO_CONTAINER_OF(op, struct probe, op);
	uint64_t n = connector_ops(loop, p);

	cr_assert_eq(res, -ENOENT);
	if (++p->runs > 100000 || n > 3)
		return; /* too late: the test fails on cancelled_at */
	if (n == 3) {
		p->cancelled_at = (int)n;
		cancel(loop, &p->k, p->x);
		p->own++;
		return;
	}
	cr_assert_eq(rio_cancel(loop, &p->op, &p->idle, probe_cb), 0);
	p->own++;
}

Test(connect_any, cancel_while_closing_a_refused_socket, .timeout = 20)
{
	rio_loop *loop = t_loop();
	struct conn x = { .calls = 0 };
	struct probe p;
	struct full f;
	rio_addr a[2] = { loopback_addr(AF_INET, t_closed_port()),
			  full_open(&f) };
	rio_upstreams *u = make_set(a, 2, 10000 * T_MS, 0);
	int fd0 = count_fds();

	memset(&p, 0, sizeof p);
	p.x = &x;
	rio_loop_counters(loop, &p.c0);
	p.h0 = t_helper_ops;
	cr_assert_eq(submit(loop, &x, u), 0);
	cr_assert_eq(rio_cancel(loop, &p.op, &p.idle, probe_cb), 0);
	p.own++;
	T_RUN_UNTIL(loop, x.calls > 0 && p.k.calls > 0, 3000);
	t_loop_sleep(loop, 20);
	cr_assert_eq(p.cancelled_at, 3, "the probe missed the close (%d runs)",
		     p.runs);
	cr_assert_eq(x.calls, 1);
	cr_assert_eq(x.res, -ECANCELED, "got %s", rio_strerror(x.res));
	cr_assert_eq(p.k.res, 0, "cancel: %s", rio_strerror(p.k.res));
	cr_assert_eq(connector_ops(loop, &p), 3,
		     "a try started after the cancel");
	assert_totals(u, 0, 1, 0, 0);
	cr_assert_eq(count_fds(), fd0, "a socket leaked");
	full_close(&f);
	done(loop, u);
}

Test(connect_any, cancel_of_a_finished_connector, .timeout = 20)
{
	rio_loop *loop = t_loop();
	struct conn x = { .calls = 0 };
	struct canceller k;
	uint16_t port;
	int lfd = t_listen(AF_INET, 8, &port);
	rio_addr a = loopback_addr(AF_INET, port);
	rio_upstreams *u = make_set(&a, 1, 0, 0);
	int fd = connect_once(loop, &x, u);

	cr_assert_geq(fd, 0);
	cancel(loop, &k, &x);
	T_RUN_UNTIL(loop, k.calls > 0, 3000);
	cr_assert_eq(k.res, -ENOENT, "got %s", rio_strerror(k.res));
	cr_assert_eq(x.calls, 1);
	cr_assert_geq(fcntl(fd, F_GETFD), 0, "the caller's fd was closed");
	close(fd);
	close(lfd);
	done(loop, u);
}

/* socket() fails with EMFILE: the call ends at once with it (on the next
 * turn), no address is marked down, and nothing is counted. */
Test(connect_any, emfile_ends_it_at_once, .timeout = 20)
{
	rio_loop *loop = t_loop();
	struct conn x = { .calls = 0 };
	struct canceller k = { .calls = 0 };
	uint16_t p0, p1;
	int l0 = t_listen(AF_INET, 8, &p0), l1 = t_listen(AF_INET, 8, &p1);
	rio_addr a[2] = { loopback_addr(AF_INET, p0),
			  loopback_addr(AF_INET, p1) };
	rio_upstreams *u = make_set(a, 2, 0, 10000 * T_MS);
	struct rlimit old, low;
	int lowest, fd;

	t_loop_sleep(loop, 1); /* the loop's first run needs nothing new */
	lowest = dup(0);
	cr_assert_geq(lowest, 0);
	close(lowest);
	cr_assert_eq(getrlimit(RLIMIT_NOFILE, &old), 0);
	low = old;
	low.rlim_cur = (rlim_t)lowest; /* no new fd at all */
	cr_assert_eq(setrlimit(RLIMIT_NOFILE, &low), 0);
	fd = submit(loop, &x, u);
	if (fd == 0) /* decided: a cancel cannot stop it */
		fd = rio_cancel(loop, &k.op, &x.c.op, cancel_cb);
	if (fd == 0)
		T_RUN_UNTIL(loop, x.calls > 0 && k.calls > 0, 3000);
	cr_assert_eq(setrlimit(RLIMIT_NOFILE, &old), 0);
	cr_assert_eq(fd, 0);
	cr_assert_eq(x.calls, 1);
	cr_assert_eq(x.ran_in_submit, 0, "the callback ran inside the submit");
	cr_assert_eq(x.res, -EMFILE, "got %s", rio_strerror(x.res));
	cr_assert_eq(x.c.upstream, -1, "no address was tried");
	cr_assert_eq(k.res, -EALREADY, "cancel: %s", rio_strerror(k.res));
	assert_totals(u, 0, 0, 0, 0); /* EMFILE counts nowhere */

	/* nothing marked down: the call that starts at 0 again goes to 0 */
	fd = connect_once(loop, &x, u); /* starts at 1 */
	cr_assert_geq(fd, 0);
	cr_assert_eq(x.c.upstream, 1);
	close(fd);
	fd = connect_once(loop, &x, u); /* starts at 0 */
	cr_assert_geq(fd, 0);
	cr_assert_eq(x.c.upstream, 0, "EMFILE marked address 0 down");
	close(fd);
	close(l0);
	close(l1);
	done(loop, u);
}

Test(connect_any, misuse_is_refused, .timeout = 20)
{
	rio_loop *loop = t_loop();
	struct conn x = { .calls = 0 }, y = { .calls = 0 };
	struct canceller k;
	struct full f;
	rio_addr a = full_open(&f);
	rio_upstreams *u = make_set(&a, 1, 10000 * T_MS, 0);

	cr_assert_eq(rio_connect_any(NULL, &x.c, u, conn_cb), -EINVAL);
	cr_assert_eq(rio_connect_any(loop, NULL, u, conn_cb), -EINVAL);
	cr_assert_eq(rio_connect_any(loop, &x.c, NULL, conn_cb), -EINVAL);
	cr_assert_eq(rio_connect_any(loop, &x.c, u, NULL), -EINVAL);
	rio_op_set_deadline(&y.c.op, 100 * T_MS); /* use try_ns */
	cr_assert_eq(rio_connect_any(loop, &y.c, u, conn_cb), -EINVAL);
	cr_assert_eq(rio_upstreams_destroy(u), 0,
		     "a refused call left the set busy");
	u = make_set(&a, 1, 10000 * T_MS, 0);

	cr_assert_eq(submit(loop, &x, u), 0);
	cr_assert_eq(rio_connect_any(loop, &x.c, u, conn_cb), -EBUSY);
	cr_assert_eq(rio_upstreams_destroy(u), -EBUSY);
	t_loop_sleep(loop, 20);
	cr_assert_eq(rio_upstreams_destroy(u), -EBUSY);
	cancel(loop, &k, &x);
	T_RUN_UNTIL(loop, x.calls > 0 && k.calls > 0, 3000);
	t_loop_sleep(loop, 10);
	cr_assert_eq(x.calls, 1, "the refused second submit completed");
	cr_assert_eq(x.res, -ECANCELED);
	full_close(&f);
	done(loop, u);
}

/* Two connectors on one set at once: each call starts one on. */
Test(connect_any, connectors_share_a_set, .timeout = 20)
{
	rio_loop *loop = t_loop();
	struct conn x = { .calls = 0 }, y = { .calls = 0 };
	uint16_t p0, p1;
	int l0 = t_listen(AF_INET, 8, &p0), l1 = t_listen(AF_INET, 8, &p1);
	rio_addr a[2] = { loopback_addr(AF_INET, p0),
			  loopback_addr(AF_INET, p1) };
	rio_upstreams *u = make_set(a, 2, 0, 0);

	cr_assert_eq(submit(loop, &x, u), 0);
	cr_assert_eq(submit(loop, &y, u), 0);
	cr_assert_eq(rio_upstreams_destroy(u), -EBUSY);
	T_RUN_UNTIL(loop, x.calls > 0 && y.calls > 0, 5000);
	cr_assert_geq(x.res, 0);
	cr_assert_geq(y.res, 0);
	cr_assert_eq(x.c.upstream, 0);
	cr_assert_eq(y.c.upstream, 1);
	cr_assert_eq(peer_port(x.res), p0);
	cr_assert_eq(peer_port(y.res), p1);
	close(x.res);
	close(y.res);
	close(l0);
	close(l1);
	done(loop, u);
}

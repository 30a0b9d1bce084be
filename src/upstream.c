/*
 * Upstreams: connect to the first address of a set that answers
 * (rio_connect_any), round robin, trying what failed lately only after the
 * rest. Built on the public op API, as the listener is, so it behaves the
 * same on every backend; only the connector's own completion goes through
 * the core, as a composite op (rio__op_take, rio__defer).
 *
 * A connector runs one try at a time on one inner op, `try_op`: the
 * connect of a fresh socket, then, if that failed, the rio_close of the
 * socket (through the loop: the fallback forgets its registration), then
 * the next address's connect. A cancel closes the socket of the connect in
 * flight with the second inner op, `stop_op` (a rio_close ends the ops on
 * its fd first), or lets the close in flight finish; the connector
 * completes with -ECANCELED once both inner ops are back. Each step is a
 * callback of an inner op, so no result is ever delivered inside a submit.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <stddef.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>

#include "internal.h"

enum { MAX_ADDRS = 64 };
#define TRY_NS_DEFAULT (3000ull * 1000 * 1000)
#define RETRY_NS_DEFAULT (10000ull * 1000 * 1000)

struct upstream {
	rio_addr addr;
	uint64_t down_until_ns; /* failed lately: tried after the others
				   until then (CLOCK_MONOTONIC); 0: never */
	rio_upstream_counters c; /* `exhausted` stays 0: the set's */
};

struct rio_upstreams {
	unsigned n;
	unsigned next;   /* where the next call starts */
	uint32_t busy;   /* connectors in flight */
	uint64_t try_ns, retry_ns;
	uint64_t exhausted;
	struct upstream a[];
};

/* A connector's private area (rio_connector.priv). */
struct ca {
	rio_op try_op;   /* the try: a connect, then the close of its socket
			    if it failed */
	rio_op stop_op;  /* a cancel's close of the socket being connected */
	rio_upstreams *u;
	uint64_t tried;  /* bit i: address i was tried in this call */
	int fd;          /* the socket being connected; -1: none */
	int err;         /* the last try's error */
	uint8_t err_deadline; /* that error is try_ns passing */
	uint8_t start;   /* the address this call started at */
	uint8_t cur;     /* the address being tried */
	uint8_t cancelled;
};

_Static_assert(sizeof(struct ca) <= sizeof(((rio_connector *)0)->priv),
	       "rio_connector.priv is too small for the connector's state");
_Static_assert(_Alignof(struct ca) <= _Alignof(rio_op),
	       "rio_connector.priv is not aligned for the connector's state");
_Static_assert(MAX_ADDRS <= 64, "ca.tried has a bit per address");

static struct ca *ca_of(rio_connector *c)
{
	return (struct ca *)(void *)c->priv.u64;
}

static rio_connector *connector_of(struct ca *p)
{
	return RIO_CONTAINER_OF(p, rio_connector, priv);
}

static void connect_cb(rio_loop *loop, rio_op *op, int res);
static void close_cb(rio_loop *loop, rio_op *op, int res);
static void stop_cb(rio_loop *loop, rio_op *op, int res);

/* ---- addresses ---- */

/* The least length of an address of `family` (a unix one: one byte of
 * name, or of an abstract name's leading NUL); 0 for a family not ours. */
static socklen_t family_len(int family)
{
	if (family == AF_INET)
		return sizeof(struct sockaddr_in);
	if (family == AF_INET6)
		return sizeof(struct sockaddr_in6);
	if (family == AF_UNIX)
		return offsetof(struct sockaddr_un, sun_path) + 1;
	return 0;
}

/* "unix:PATH" or "unix:@NAME" (abstract: no file, a leading NUL byte). */
static int parse_unix(const char *name, rio_addr *out)
{
	struct sockaddr_un *un = (struct sockaddr_un *)&out->ss;
	size_t n = strlen(name);
	int abstract = name[0] == '@';
	if (n == (size_t)abstract) /* "unix:" or "unix:@": no name */
		return -EINVAL;
	/* a path needs its NUL terminator in sun_path; a name does not */
	if (n >= sizeof un->sun_path + (size_t)abstract)
		return -ENAMETOOLONG;
	memset(out, 0, sizeof *out);
	un->sun_family = AF_UNIX;
	memcpy(un->sun_path, name, n);
	if (abstract)
		un->sun_path[0] = '\0';
	out->len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n +
			       !abstract);
	return 0;
}

/* "0".."65535", decimal digits only (leading zeros allowed). */
static int parse_port(const char *s, uint16_t *port)
{
	unsigned long v = 0;
	if (*s == '\0')
		return -EINVAL;
	for (; *s; s++) {
		if (*s < '0' || *s > '9')
			return -EINVAL;
		v = v * 10 + (unsigned long)(*s - '0');
		if (v > 65535)
			return -EINVAL;
	}
	*port = (uint16_t)v;
	return 0;
}

int rio_addr_parse(const char *text, rio_addr *out)
{
	if (!text || !out)
		return -EINVAL;
	if (strncmp(text, "unix:", 5) == 0)
		return parse_unix(text + 5, out);
	char host[INET6_ADDRSTRLEN];
	const char *h = text, *colon;
	size_t hlen;
	int family = AF_INET;
	if (*text == '[') { /* [v6]:port */
		const char *close = strchr(text, ']');
		if (!close || close[1] != ':')
			return -EINVAL;
		h = text + 1;
		hlen = (size_t)(close - h);
		colon = close + 1;
		family = AF_INET6;
	} else { /* v4:port; a bare v6 address has more than one colon */
		colon = strchr(text, ':');
		if (!colon || strchr(colon + 1, ':'))
			return -EINVAL;
		hlen = (size_t)(colon - text);
	}
	if (hlen == 0 || hlen >= sizeof host)
		return -EINVAL;
	memcpy(host, h, hlen);
	host[hlen] = '\0';

	uint16_t port;
	rio_addr a;
	memset(&a, 0, sizeof a);
	if (parse_port(colon + 1, &port))
		return -EINVAL;
	if (family == AF_INET) {
		struct sockaddr_in *in4 = (struct sockaddr_in *)&a.ss;
		if (inet_pton(AF_INET, host, &in4->sin_addr) != 1)
			return -EINVAL;
		in4->sin_port = htons(port);
	} else {
		struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&a.ss;
		if (inet_pton(AF_INET6, host, &in6->sin6_addr) != 1)
			return -EINVAL;
		in6->sin6_port = htons(port);
	}
	a.ss.ss_family = (sa_family_t)family;
	a.len = family_len(family);
	*out = a;
	return 0;
}

int rio_addr_format(const rio_addr *a, char *buf, size_t len)
{
	if (!a || !buf)
		return -EINVAL;
	int family = a->ss.ss_family;
	if (!family_len(family) || a->len < family_len(family) ||
	    a->len > sizeof a->ss)
		return -EINVAL;
	char host[INET6_ADDRSTRLEN];
	unsigned port;
	int n;
	if (family == AF_UNIX) {
		const struct sockaddr_un *un = (const void *)&a->ss;
		size_t max = a->len - offsetof(struct sockaddr_un, sun_path);
		int abstract = un->sun_path[0] == '\0';
		const char *name = un->sun_path + abstract;
		size_t nlen = strnlen(name, max - (size_t)abstract);
		/* an abstract name is every byte: one with a NUL inside
		 * cannot be written as text */
		if (abstract && nlen != max - 1)
			return -EINVAL;
		n = snprintf(buf, len, "unix:%s%.*s", abstract ? "@" : "",
			     (int)nlen, name);
	} else if (family == AF_INET) {
		const struct sockaddr_in *in4 = (const void *)&a->ss;
		inet_ntop(AF_INET, &in4->sin_addr, host, sizeof host);
		port = ntohs(in4->sin_port);
		n = snprintf(buf, len, "%s:%u", host, port);
	} else {
		const struct sockaddr_in6 *in6 = (const void *)&a->ss;
		inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof host);
		port = ntohs(in6->sin6_port);
		n = snprintf(buf, len, "[%s]:%u", host, port);
	}
	if (n < 0)
		return -EINVAL;
	return (size_t)n >= len ? -ENOSPC : n;
}

/* ---- the set ---- */

int rio_upstreams_create(const rio_addr *addrs, unsigned n,
			 const rio_upstreams_opts *opts, rio_upstreams **out)
{
	if (!addrs || !out || n == 0 || n > MAX_ADDRS)
		return -EINVAL;
	for (unsigned i = 0; i < n; i++) {
		socklen_t need = family_len(addrs[i].ss.ss_family);
		if (!need || addrs[i].len < need ||
		    addrs[i].len > sizeof addrs[i].ss)
			return -EINVAL;
	}
	rio_upstreams *u = calloc(1, sizeof *u + n * sizeof u->a[0]);
	if (!u)
		return -ENOMEM;
	u->n = n;
	u->try_ns = opts && opts->try_ns ? opts->try_ns : TRY_NS_DEFAULT;
	u->retry_ns = opts && opts->retry_ns ? opts->retry_ns : RETRY_NS_DEFAULT;
	u->next = opts ? opts->first % n : 0;
	for (unsigned i = 0; i < n; i++) {
		u->a[i].addr = addrs[i];
		/* an IP address's own size; a unix one's is its name's */
		if (addrs[i].ss.ss_family != AF_UNIX)
			u->a[i].addr.len = family_len(addrs[i].ss.ss_family);
	}
	*out = u;
	return 0;
}

int rio_upstreams_destroy(rio_upstreams *u)
{
	if (!u)
		return -EINVAL;
	if (u->busy)
		return -EBUSY;
	free(u);
	return 0;
}

void rio_upstreams_counters(const rio_upstreams *u, int i,
			    rio_upstream_counters *out)
{
	if (!out)
		return;
	memset(out, 0, sizeof *out);
	if (!u || (i >= 0 && (unsigned)i >= u->n))
		return;
	if (i >= 0) {
		*out = u->a[i].c;
		return;
	}
	for (unsigned k = 0; k < u->n; k++) {
		const rio_upstream_counters *c = &u->a[k].c;
		out->connected += c->connected;
		out->refused += c->refused;
		out->timeouts += c->timeouts;
		out->other += c->other;
	}
	out->exhausted = u->exhausted;
}

/* ---- the connector ---- */

static int is_down(const struct upstream *a, uint64_t now)
{
	return a->down_until_ns > now;
}

/* The next address to try: from this call's start on, the first not yet
 * tried and not down, else the first not yet tried; -1 when all were. */
static int pick(const rio_upstreams *u, const struct ca *p)
{
	uint64_t now = rio__now_ns();
	for (int pass = 0; pass < 2; pass++) {
		for (unsigned k = 0; k < u->n; k++) {
			unsigned i = (p->start + k) % u->n;
			if (p->tried & (1ull << i))
				continue;
			if (pass == 0 && is_down(&u->a[i], now))
				continue;
			return (int)i;
		}
	}
	return -1;
}

/* A socket that cannot be made for want of resources is no fault of the
 * address: the call ends, and nothing is marked down. */
static int is_local_error(int err)
{
	return err == -EMFILE || err == -ENFILE || err == -ENOBUFS ||
	       err == -ENOMEM;
}

/* A try of address i failed with err: count it, mark the address down. */
static void count_failure(rio_upstreams *u, unsigned i, int err)
{
	struct upstream *a = &u->a[i];
	if (err == -ECONNREFUSED)
		a->c.refused++;
	else if (err == -ETIMEDOUT)
		a->c.timeouts++;
	else
		a->c.other++;
	a->down_until_ns = rio__due_in(u->retry_ns);
}

/* The connector's one completion (next turn). Both inner ops are idle, so
 * the callback may submit it again at once. */
static void finish(rio_loop *loop, struct ca *p, int res)
{
	assert(!rio_op_in_flight(&p->try_op) && !rio_op_in_flight(&p->stop_op));
	assert(p->u->busy > 0);
	p->u->busy--;
	if (res == p->err && p->err_deadline) /* the last try's try_ns */
		connector_of(p)->op.priv.bits |= RIO__B_TIMEDOUT;
	rio__defer(loop, &connector_of(p)->op, res);
}

/* Start the next try, or end: with the last error once every address was
 * tried, at once when no socket can be made. */
static void next_try(rio_loop *loop, struct ca *p)
{
	rio_upstreams *u = p->u;
	for (;;) {
		int i = pick(u, p);
		if (i < 0) {
			u->exhausted++;
			finish(loop, p, p->err);
			return;
		}
		const rio_addr *a = &u->a[i].addr;
		int fd = rio__socket_stream(a->ss.ss_family);
		if (fd < 0 && is_local_error(fd)) {
			finish(loop, p, fd);
			return;
		}
		p->tried |= 1ull << i;
		p->cur = (uint8_t)i;
		connector_of(p)->upstream = i;
		if (fd < 0) { /* this address cannot be reached from here */
			count_failure(u, (unsigned)i, fd);
			p->err = fd;
			p->err_deadline = 0;
			continue;
		}
		p->fd = fd;
		rio_op_set_deadline(&p->try_op, u->try_ns);
		rio__must(&p->try_op,
			  rio_connect(loop, &p->try_op, fd,
				      (const struct sockaddr *)&a->ss, a->len,
				      connect_cb));
		return;
	}
}

static int connect_any_cancel(rio_loop *loop, rio_op *op);

int rio_connect_any(rio_loop *loop, rio_connector *c, rio_upstreams *u,
		    rio_cb *cb)
{
	if (!c || !u || c->op.deadline_ns)
		return -EINVAL;
	int r = rio__op_take(loop, &c->op, cb, RIO__OP_CONNECT_ANY, -1);
	if (r)
		return r;
	c->op.priv.a.composite.cancel = connect_any_cancel;
	struct ca *p = ca_of(c);
	memset(p, 0, sizeof *p); /* its ops are idle: c->op was */
	p->u = u;
	p->fd = -1;
	p->start = (uint8_t)u->next;
	u->next = (u->next + 1) % u->n;
	u->busy++;
	c->upstream = -1;
	c->op.priv.state = RIO__ST_KERNEL;
	next_try(loop, p);
	return 0;
}

/* After a cancel: done once both inner ops are back. */
static void settle_cancel(rio_loop *loop, struct ca *p)
{
	if (!rio_op_in_flight(&p->try_op) && !rio_op_in_flight(&p->stop_op))
		finish(loop, p, -ECANCELED);
}

static void connect_cb(rio_loop *loop, rio_op *op, int res)
{
	struct ca *p = RIO_CONTAINER_OF(op, struct ca, try_op);
	if (p->cancelled) { /* stop_op closes the socket, whatever res */
		settle_cancel(loop, p);
		return;
	}
	struct upstream *a = &p->u->a[p->cur];
	int fd = p->fd;
	p->fd = -1;
	if (res == 0) {
		a->c.connected++;
		a->down_until_ns = 0;
		finish(loop, p, fd); /* the fd is the caller's now */
		return;
	}
	count_failure(p->u, p->cur, res);
	p->err = res;
	p->err_deadline = (op->flags & RIO_OP_F_DEADLINE) != 0;
	rio__must(&p->try_op, rio_close(loop, &p->try_op, fd, close_cb));
}

static void close_cb(rio_loop *loop, rio_op *op, int res)
{
	struct ca *p = RIO_CONTAINER_OF(op, struct ca, try_op);
	(void)res; /* the fd is gone either way */
	if (p->cancelled)
		settle_cancel(loop, p);
	else
		next_try(loop, p);
}

static void stop_cb(rio_loop *loop, rio_op *op, int res)
{
	(void)res;
	settle_cancel(loop, RIO_CONTAINER_OF(op, struct ca, stop_op));
}

/* rio_cancel() of a running connector (c->op in RIO__ST_KERNEL). A try is
 * always in flight then: a connect, whose socket a close through the loop
 * stops (the connect ends first, with -ECANCELED or its result), or the
 * close of a failed socket, which ends by itself. A cancelled try counts
 * against no address. */
static int connect_any_cancel(rio_loop *loop, rio_op *op)
{
	struct ca *p = ca_of(RIO_CONTAINER_OF(op, rio_connector, op));
	if (p->cancelled)
		return -EALREADY;
	p->cancelled = 1;
	if (p->fd >= 0) {
		int fd = p->fd;
		p->fd = -1;
		rio__must(&p->stop_op,
			  rio_close(loop, &p->stop_op, fd, stop_cb));
	}
	assert(rio_op_in_flight(&p->try_op));
	return 0;
}

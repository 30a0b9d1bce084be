#include "tserver.h"

#include <stdlib.h>
#include <unistd.h>

struct tconn {
	tsrv *s;
	int fd;
	int closing;
	size_t len, off;
	struct tconn *prev, *next;
	rio_op op, close_op;
	char buf[16384];
};

static void io_cb(rio_loop *loop, rio_op *op, int res);

static void unlink_conn(struct tconn *c)
{
	tsrv *s = c->s;
	*(c->prev ? &c->prev->next : &s->conns) = c->next;
	if (c->next)
		c->next->prev = c->prev;
}

static void close_cb(rio_loop *loop, rio_op *op, int res)
{
	struct tconn *c = RIO_CONTAINER_OF(op, struct tconn, close_op);
	tsrv *s = c->s;

	(void)loop;
	cr_assert_eq(res, 0, "server close: %s", rio_strerror(res));
	cr_assert_eq(rio_listener_release(s->l), 0);
	s->live--;
	s->closed++;
	free(c);
}

static void conn_close(struct tconn *c)
{
	if (c->closing)
		return;
	c->closing = 1;
	unlink_conn(c);
	cr_assert_eq(rio_close(c->s->loop, &c->close_op, c->fd, close_cb), 0);
}

/* How a connection ended: res is 0 (EOF) or -errno. An EOF is no error,
 * so it leaves last_error alone: an assertion about the errors names one. */
static void note_error(tsrv *s, int res, int sending)
{
	if (res != 0)
		s->last_error = res;
	if (res == 0)
		s->eofs++;
	else if (res == -ETIMEDOUT) {
		if (!s->timeouts++)
			s->first_timeout_ns = t_now_ns();
	} else if (res == -ECANCELED)
		s->cancelled++;
	else if (sending && (res == -EPIPE || res == -ECONNRESET))
		s->send_errors++;
	else if (res == -ECONNRESET)
		s->resets++;
	else {
		s->other_errors++;
		s->other_error = res;
		s->other_sending = sending;
	}
}

static void do_recv(struct tconn *c)
{
	cr_assert_eq(rio_recv(c->s->loop, &c->op, c->fd, c->buf,
			      sizeof(c->buf), 0, io_cb), 0);
}

static void do_send(struct tconn *c)
{
	cr_assert_eq(rio_send(c->s->loop, &c->op, c->fd, c->buf + c->off,
			      c->len - c->off, 0, io_cb), 0);
}

/* One op per connection: recv, then send until all of it is out. */
static void io_cb(rio_loop *loop, rio_op *op, int res)
{
	struct tconn *c = RIO_CONTAINER_OF(op, struct tconn, op);
	int sending = c->len > 0;

	(void)loop;
	if (c->closing)
		return;
	if (res <= 0) {
		note_error(c->s, res, sending);
		conn_close(c);
		return;
	}
	if (!sending) {
		c->len = (size_t)res;
		c->off = 0;
		do_send(c);
		return;
	}
	c->off += (size_t)res;
	c->s->bytes += (uint64_t)res;
	if (c->off < c->len) {
		do_send(c);
		return;
	}
	c->len = 0;
	do_recv(c);
}

static void on_accept(rio_listener *l, rio_loop *loop, int fd,
			const struct sockaddr *peer, socklen_t peer_len,
			void *data)
{
	tsrv *s = data;
	struct tconn *c = calloc(1, sizeof(*c));

	(void)l;
	cr_assert_not_null(c);
	c->s = s;
	c->fd = fd;
	c->next = s->conns;
	if (s->conns)
		s->conns->prev = c;
	s->conns = c;
	s->accepted++;
	s->live++;
	rio_op_set_deadline(&c->op, s->idle_ns);
	do_recv(c);
}

static void on_stop(rio_listener *l, int err, void *data)
{
	tsrv *s = data;

	(void)l;
	s->stopped++;
	s->stop_err = err;
}

void tsrv_start_fd(tsrv *s, rio_loop *loop, int lfd,
		   const rio_listener_opts *lo, uint64_t idle_ns)
{
	rio_listener_opts o = { 0 };
	int rc;

	memset(s, 0, sizeof(*s));
	if (lo)
		o = *lo;
	o.on_accept = on_accept;
	o.on_stop = on_stop;
	o.data = s;
	s->loop = loop;
	s->lfd = lfd;
	s->port = (uint16_t)rio_local_port(lfd);
	s->idle_ns = idle_ns;
	rc = rio_listener_start(loop, lfd, &o, &s->l);
	cr_assert_eq(rc, 0, "rio_listener_start: %s", rio_strerror(rc));
}

void tsrv_start(tsrv *s, rio_loop *loop, const rio_listener_opts *lo,
		uint64_t idle_ns)
{
	uint16_t port;
	int lfd = t_listen(AF_INET, 4096, &port);

	cr_assert_eq(rio_set_nonblock(lfd, 1), 0);
	tsrv_start_fd(s, loop, lfd, lo, idle_ns);
}

void tsrv_close_all(tsrv *s)
{
	while (s->conns)
		conn_close(s->conns);
}

void tsrv_finish(tsrv *s)
{
	if (!s->stopped && rio_listener_stop(s->l) == 0)
		T_RUN_UNTIL(s->loop, s->stopped, 5000);
	tsrv_close_all(s);
	T_RUN_UNTIL(s->loop, s->live == 0, 10000);
	cr_assert_eq(s->stopped, 1, "on_stop ran %d times", s->stopped);
	cr_assert_eq(rio_listener_destroy(s->l), 0);
	if (s->lfd >= 0)
		close(s->lfd);
}

/* 1,000 concurrent connections on one loop: multishot accept, an echo per
 * connection, every fd closed through rio_close, every callback counted. */
#include "common.h"

#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#define NCONN 1000
#define MSGLEN 16

struct client {
	rio_op connect_op, send_op, recv_op, close_op;
	struct sockaddr_storage addr;
	int fd;
	char out[MSGLEN], in[MSGLEN];
	int got;
	int n_connect, n_send, n_recv, n_close;
	int bad;
};

struct server {
	rio_op recv_op, send_op, close_op;
	int fd;
	char buf[MSGLEN];
	int len, echoed;
	int n_recv, n_send, n_close;
	int bad;
};

struct world {
	rio_op accept_op, cancel_op, lclose_op;
	int lfd;
	struct client cl[NCONN];
	struct server sv[NCONN];
	int accepted, accept_final, accept_final_res, accept_no_more;
	int cancel_res, cancel_calls, lclose_calls, lclose_res;
	int clients_done, servers_done, stray;
};

static struct world *W;

static void client_close_cb(rio_loop *loop, rio_op *op, int res)
{
	struct client *c = RIO_CONTAINER_OF(op, struct client, close_op);

	(void)loop;
	c->n_close++;
	c->bad += res != 0;
	W->clients_done++;
}

static void client_recv_cb(rio_loop *loop, rio_op *op, int res)
{
	struct client *c = RIO_CONTAINER_OF(op, struct client, recv_op);

	c->n_recv++;
	if (res <= 0) {
		c->bad++;
	} else {
		c->got += res;
		if (c->got < MSGLEN) {
			c->bad += rio_recv(loop, op, c->fd, c->in + c->got,
					   (size_t)(MSGLEN - c->got), 0,
					   client_recv_cb) != 0;
			return;
		}
		c->bad += memcmp(c->in, c->out, MSGLEN) != 0;
	}
	c->bad += rio_close(loop, &c->close_op, c->fd, client_close_cb) != 0;
}

static void client_send_cb(rio_loop *loop, rio_op *op, int res)
{
	struct client *c = RIO_CONTAINER_OF(op, struct client, send_op);

	(void)loop;
	c->n_send++;
	c->bad += res != MSGLEN;
}

static void client_connect_cb(rio_loop *loop, rio_op *op, int res)
{
	struct client *c = RIO_CONTAINER_OF(op, struct client, connect_op);

	c->n_connect++;
	if (res != 0) {
		c->bad++;
		c->bad += rio_close(loop, &c->close_op, c->fd,
				    client_close_cb) != 0;
		return;
	}
	c->bad += rio_recv(loop, &c->recv_op, c->fd, c->in, MSGLEN, 0,
			   client_recv_cb) != 0;
	c->bad += rio_send(loop, &c->send_op, c->fd, c->out, MSGLEN, 0,
			   client_send_cb) != 0;
}

static void server_close_cb(rio_loop *loop, rio_op *op, int res)
{
	struct server *s = RIO_CONTAINER_OF(op, struct server, close_op);

	(void)loop;
	s->n_close++;
	s->bad += res != 0;
	W->servers_done++;
}

static void server_recv_cb(rio_loop *loop, rio_op *op, int res);

static void server_send_cb(rio_loop *loop, rio_op *op, int res)
{
	struct server *s = RIO_CONTAINER_OF(op, struct server, send_op);

	s->n_send++;
	if (res <= 0 || res > s->len) {
		s->bad++;
		return;
	}
	if (res < s->len) { /* short: send the rest */
		memmove(s->buf, s->buf + res, (size_t)(s->len - res));
		s->len -= res;
		s->bad += rio_send(loop, op, s->fd, s->buf, (size_t)s->len, 0,
				   server_send_cb) != 0;
		return;
	}
	s->bad += rio_recv(loop, &s->recv_op, s->fd, s->buf, MSGLEN, 0,
			   server_recv_cb) != 0;
}

static void server_recv_cb(rio_loop *loop, rio_op *op, int res)
{
	struct server *s = RIO_CONTAINER_OF(op, struct server, recv_op);

	s->n_recv++;
	if (res > 0) { /* echo it */
		s->len = res;
		s->echoed += res;
		s->bad += rio_send(loop, &s->send_op, s->fd, s->buf,
				   (size_t)res, 0, server_send_cb) != 0;
		return;
	}
	s->bad += res != 0; /* the client closed: EOF */
	s->bad += rio_close(loop, &s->close_op, s->fd, server_close_cb) != 0;
}

static void accept_cb(rio_loop *loop, rio_op *op, int res)
{
	struct server *s;

	if (!(op->flags & RIO_OP_F_MORE)) {
		W->accept_final++;
		W->accept_final_res = res;
		return;
	}
	if (res < 0 || W->accepted >= NCONN) {
		W->stray++;
		return;
	}
	s = &W->sv[W->accepted++];
	s->fd = res;
	s->bad += rio_recv(loop, &s->recv_op, s->fd, s->buf, MSGLEN, 0,
			   server_recv_cb) != 0;
}

static void cancel_cb(rio_loop *loop, rio_op *op, int res)
{
	(void)loop;
	(void)op;
	W->cancel_calls++;
	W->cancel_res = res;
}

static void lclose_cb(rio_loop *loop, rio_op *op, int res)
{
	(void)loop;
	(void)op;
	W->lclose_calls++;
	W->lclose_res = res;
}

Test(many_conns, thousand_echo_connections_on_one_loop, .timeout = 120)
{
	rio_loop *loop;
	uint16_t port;
	socklen_t alen;
	int total_echo = 0;

	if (!t_raise_nofile(2 * NCONN + 200))
		cr_skip_test("RLIMIT_NOFILE hard limit below %d", 2 * NCONN + 200);
	W = calloc(1, sizeof(*W));
	cr_assert_not_null(W);
	loop = t_loop();
	W->lfd = t_listen(AF_INET, 2 * NCONN, &port);
	cr_assert_eq(rio_accept(loop, &W->accept_op, W->lfd, NULL, NULL,
				RIO_MULTISHOT, accept_cb),
		     0);
	for (int i = 0; i < NCONN; i++) {
		struct client *c = &W->cl[i];

		snprintf(c->out, MSGLEN, "conn-%010d", i);
		c->out[MSGLEN - 1] = '!';
		c->fd = rio_socket_tcp(AF_INET);
		cr_assert_geq(c->fd, 0, "client socket %d: %s", i,
			      rio_strerror(c->fd));
		alen = t_loopback(AF_INET, port, &c->addr);
		cr_assert_eq(rio_connect(loop, &c->connect_op, c->fd,
					 (struct sockaddr *)&c->addr, alen,
					 client_connect_cb),
			     0);
	}
	T_RUN_UNTIL(loop, W->clients_done == NCONN && W->servers_done == NCONN,
		    60000);
	cr_assert_eq(W->accepted, NCONN);
	cr_assert_eq(W->accept_final, 0, "multishot accept ended early: %d",
		     W->accept_final_res);
	cr_assert_eq(rio_cancel(loop, &W->cancel_op, &W->accept_op, cancel_cb),
		     0);
	T_RUN_UNTIL(loop, W->accept_final && W->cancel_calls, 3000);
	cr_assert_eq(rio_close(loop, &W->lclose_op, W->lfd, lclose_cb), 0);
	T_RUN_UNTIL(loop, W->lclose_calls, 3000);
	t_loop_sleep(loop, 20);

	cr_assert_eq(W->stray, 0, "accept completions beyond the clients");
	cr_assert_eq(W->accept_final, 1);
	cr_assert_eq(W->accept_final_res, -ECANCELED);
	cr_assert_eq(W->cancel_res, 0);
	cr_assert_eq(W->lclose_calls, 1);
	cr_assert_eq(W->lclose_res, 0);
	for (int i = 0; i < NCONN; i++) {
		struct client *c = &W->cl[i];
		struct server *s = &W->sv[i];

		cr_assert_eq(c->bad, 0, "client %d went wrong", i);
		cr_assert_eq(c->n_connect, 1, "client %d connect x%d", i,
			     c->n_connect);
		cr_assert_eq(c->n_send, 1);
		cr_assert_geq(c->n_recv, 1);
		cr_assert_eq(c->n_close, 1, "client %d close x%d", i, c->n_close);
		cr_assert_eq(c->got, MSGLEN);
		cr_assert_eq(s->bad, 0, "server conn %d went wrong", i);
		cr_assert_eq(s->n_close, 1);
		cr_assert_geq(s->n_recv, 2, "echo, then end of stream");
		total_echo += s->echoed;
	}
	cr_assert_eq(total_echo, NCONN * MSGLEN);
	t_loop_done(loop);
	free(W);
}

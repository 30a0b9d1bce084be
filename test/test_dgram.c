/*
 * Datagram sockets under a multishot recv: a zero-length datagram is a
 * datagram (res 0, more to come), not the end of a stream; the recv goes
 * on and delivers what follows, in order, on every backend.
 */
#include "common.h"

#include <stdlib.h>
#include <unistd.h>

struct dg {
	rio_op op;
	rio_bufpool *pool;
	int n, finals, final_res, nobuf;
	int len[16];
	char data[16][8];
};

static void dg_cb(rio_loop *loop, rio_op *op, int res)
{
	struct dg *d = RIO_CONTAINER_OF(op, struct dg, op);

	(void)loop;
	if (!(op->flags & RIO_OP_F_MORE)) {
		d->finals++;
		d->final_res = res;
		if (op->flags & RIO_OP_F_BUF)
			cr_assert_eq(rio_bufpool_put(d->pool, op->buf_id), 0);
		return;
	}
	cr_assert_geq(res, 0, "a result with more to come: %s",
		      rio_strerror(res));
	if (d->n < 16) {
		d->len[d->n] = res;
		if (res > 0)
			memcpy(d->data[d->n], op->buf,
			       (size_t)res < 8 ? (size_t)res : 8);
	}
	d->n++;
	if (op->flags & RIO_OP_F_BUF)
		cr_assert_eq(rio_bufpool_put(d->pool, op->buf_id), 0);
	else
		d->nobuf++;
	cr_assert_eq(!!(op->flags & RIO_OP_F_BUF), res > 0,
		     "a %d-byte result %s a buffer", res,
		     op->flags & RIO_OP_F_BUF ? "with" : "without");
}

static void zero_length_datagrams(int family)
{
	static const char *msgs[] = {"a", "", "bc", "", "", "def"};
	enum { NMSG = 6 };
	rio_loop *loop = t_loop();
	struct dg *d = calloc(1, sizeof(*d));
	int rx, tx;

	cr_assert_not_null(d);
	if (family == AF_UNIX) {
		int sv[2];

		cr_assert_eq(socketpair(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK |
					SOCK_CLOEXEC, 0, sv), 0);
		rx = sv[0];
		tx = sv[1];
	} else {
		struct sockaddr_storage a;
		socklen_t al;

		rx = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		tx = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
		cr_assert(rx >= 0 && tx >= 0);
		al = t_loopback(AF_INET, 0, &a);
		cr_assert_eq(bind(rx, (struct sockaddr *)&a, al), 0);
		al = t_loopback(AF_INET, (uint16_t)rio_local_port(rx), &a);
		cr_assert_eq(connect(tx, (struct sockaddr *)&a, al), 0);
	}
	d->pool = t_bufpool(loop, 8, 64);
	rio_op_init(&d->op);
	cr_assert_eq(rio_recv_multishot(loop, &d->op, rx, d->pool, dg_cb), 0);
	t_loop_sleep(loop, 10);
	for (int i = 0; i < NMSG; i++) {
		cr_assert_eq(send(tx, msgs[i], strlen(msgs[i]), 0),
			     (ssize_t)strlen(msgs[i]));
		t_loop_sleep(loop, 5); /* one at a time, and a pass each */
	}
	T_RUN_UNTIL(loop, d->n >= NMSG || d->finals, 3000);
	cr_assert_eq(d->finals, 0, "the multishot recv ended: %s",
		     rio_strerror(d->final_res));
	cr_assert_eq(d->n, NMSG);
	/* an empty datagram takes no buffer (io_uring's way), on every
	 * backend; every other result comes in one */
	cr_assert_eq(d->nobuf, 3, "%d of 3 empty datagrams came without a buffer",
		     d->nobuf);
	for (int i = 0; i < NMSG; i++) {
		cr_assert_eq(d->len[i], (int)strlen(msgs[i]), "datagram %d", i);
		cr_assert_eq(memcmp(d->data[i], msgs[i], strlen(msgs[i])), 0);
	}
	/* what follows still arrives */
	cr_assert_eq(send(tx, "zz", 2, 0), 2);
	T_RUN_UNTIL(loop, d->n == NMSG + 1 || d->finals, 3000);
	cr_assert_eq(d->finals, 0);
	cr_assert_eq(d->len[NMSG], 2);

	t_rec c = {0};
	rio_op_init(&c.op);
	cr_assert_eq(rio_cancel(loop, &c.op, &d->op, t_rec_cb), 0);
	T_RUN_UNTIL(loop, d->finals == 1 && c.calls == 1, 3000);
	cr_assert_eq(d->final_res, -ECANCELED);
	cr_assert_eq(rio_bufpool_destroy(d->pool), 0);
	close(rx);
	close(tx);
	free(d);
	t_loop_done(loop);
}

Test(dgram, zero_length_datagram_is_a_datagram_unix, .timeout = 20)
{
	zero_length_datagrams(AF_UNIX);
}

Test(dgram, zero_length_datagram_is_a_datagram_udp, .timeout = 20)
{
	zero_length_datagrams(AF_INET);
}

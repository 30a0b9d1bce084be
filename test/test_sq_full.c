/* A full SQ: sq_entries 4, a thousand ops submitted from one callback,
 * ops that need two SQEs (linked deadline, close + cancel), and cancels of
 * ops still waiting for room. Nothing fails, everything completes once. */
#include "common.h"

#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

/* ---- sq_entries 4: 1,000 mixed ops from one callback ---- */

struct mixed {
	rio_op kick;
	t_rec tmo[500];
	t_rec snd[250], rcv[250];
	char rbuf[250][8];
	int a[250], b[250];
	int refused;
};

static void submit_mixed_cb(rio_loop *loop, rio_op *op, int res)
{
	struct mixed *m = RIO_CONTAINER_OF(op, struct mixed, kick);

	(void)res;
	for (int i = 0; i < 250; i++) {
		m->refused += rio_recv(loop, &m->rcv[i].op, m->b[i], m->rbuf[i],
				       8, MSG_WAITALL, t_rec_count_cb) != 0;
		m->refused += rio_timeout(loop, &m->tmo[2 * i].op,
					  (uint64_t)(i % 5) * T_MS,
					  t_rec_count_cb) != 0;
		m->refused += rio_send(loop, &m->snd[i].op, m->a[i], "8bytes!!",
				       8, 0, t_rec_count_cb) != 0;
		m->refused += rio_timeout(loop, &m->tmo[2 * i + 1].op, 0,
					  t_rec_count_cb) != 0;
	}
}

Test(tiny_ring, sq4_thousand_ops_from_one_callback, .timeout = 60)
{
	rio_loop *loop = t_loop_opts(4, 0);
	struct mixed *m = calloc(1, sizeof(*m));

	cr_assert_not_null(m);
	for (int i = 0; i < 250; i++)
		t_pair(&m->a[i], &m->b[i]);
	t_done = 0;
	cr_assert_eq(rio_post(loop, &m->kick, submit_mixed_cb), 0);
	T_RUN_UNTIL(loop, t_done >= 1000, 20000);
	t_loop_sleep(loop, 10);
	cr_assert_eq(m->refused, 0, "%d submits refused", m->refused);
	cr_assert_eq(t_done, 1000);
	t_rec_all_once(m->tmo, 500, "timeout");
	t_rec_all_once(m->snd, 250, "send");
	t_rec_all_once(m->rcv, 250, "recv");
	for (int i = 0; i < 250; i++) {
		cr_assert_eq(m->snd[i].res, 8, "send %d: %d", i, m->snd[i].res);
		cr_assert_eq(m->rcv[i].res, 8, "recv %d: %d", i, m->rcv[i].res);
		cr_assert_eq(memcmp(m->rbuf[i], "8bytes!!", 8), 0);
		close(m->a[i]);
		close(m->b[i]);
	}
	free(m);
	t_loop_done(loop);
}

/* ---- ops with two SQEs (a linked deadline, a close's cancel) and cancels
 * of ops still waiting for SQ room, all through a 4-entry SQ ---- */

enum { NFD = 64 };

struct pairs_batch {
	rio_op kick;
	t_rec dl[NFD], rc[NFD], cancel[NFD], tmo[NFD], close_[NFD];
	char buf[NFD][2][8];
	int a[NFD], b[NFD];
	int refused;
};

static void submit_pairs_cb(rio_loop *loop, rio_op *op, int res)
{
	struct pairs_batch *p = RIO_CONTAINER_OF(op, struct pairs_batch, kick);

	(void)res;
	for (int i = 0; i < NFD; i++) {
		/* An odd one-SQE op first, so two-SQE ops straddle the end of
		 * the SQ at every alignment. */
		p->refused += rio_timeout(loop, &p->tmo[i].op, 0, t_rec_count_cb) != 0;
		rio_op_set_deadline(&p->dl[i].op, 2 * T_MS);
		p->refused += rio_recv(loop, &p->dl[i].op, p->a[i], p->buf[i][0],
				       8, 0, t_rec_count_cb) != 0;
		p->refused += rio_recv(loop, &p->rc[i].op, p->b[i], p->buf[i][1],
				       8, 0, t_rec_count_cb) != 0;
		p->refused += rio_cancel(loop, &p->cancel[i].op, &p->rc[i].op,
					 t_rec_count_cb) != 0;
	}
}

static void submit_closes_cb(rio_loop *loop, rio_op *op, int res)
{
	struct pairs_batch *p = RIO_CONTAINER_OF(op, struct pairs_batch, kick);

	(void)res;
	for (int i = 0; i < NFD; i++) {
		p->refused += rio_timeout(loop, &p->tmo[i].op, 0, t_rec_count_cb) != 0;
		p->refused += rio_recv(loop, &p->rc[i].op, p->a[i], p->buf[i][0],
				       8, 0, t_rec_count_cb) != 0;
		p->refused += rio_close(loop, &p->close_[i].op, p->a[i],
					t_rec_count_cb) != 0;
	}
}

Test(tiny_ring, sq4_deadlines_and_cancels_of_waiting_ops, .timeout = 60)
{
	rio_loop *loop = t_loop_opts(4, 0);
	struct pairs_batch *p = calloc(1, sizeof(*p));

	cr_assert_not_null(p);
	for (int i = 0; i < NFD; i++)
		t_pair(&p->a[i], &p->b[i]);
	t_done = 0;
	cr_assert_eq(rio_post(loop, &p->kick, submit_pairs_cb), 0);
	T_RUN_UNTIL(loop, t_done >= 4 * NFD, 10000);
	t_loop_sleep(loop, 20);
	cr_assert_eq(p->refused, 0);
	cr_assert_eq(t_done, 4 * NFD, "%d completions for %d ops", t_done,
		     4 * NFD);
	for (int i = 0; i < NFD; i++) {
		cr_assert_eq(p->dl[i].calls, 1);
		cr_assert_eq(p->dl[i].res, -ETIMEDOUT,
			     "recv %d with a deadline: %d (%s)", i, p->dl[i].res,
			     rio_strerror(p->dl[i].res));
		cr_assert_eq(p->rc[i].calls, 1);
		cr_assert_eq(p->rc[i].res, -ECANCELED, "cancelled recv %d: %d", i,
			     p->rc[i].res);
		cr_assert_eq(p->cancel[i].res, 0, "cancel %d: %d (%s)", i,
			     p->cancel[i].res, rio_strerror(p->cancel[i].res));
		cr_assert_eq(p->tmo[i].res, 0);
		close(p->a[i]);
		close(p->b[i]);
	}
	free(p);
	t_loop_done(loop);
}

Test(tiny_ring, sq4_closes_cancel_their_fds_ops_in_order, .timeout = 60)
{
	rio_loop *loop = t_loop_opts(4, 0);
	struct pairs_batch *p = calloc(1, sizeof(*p));

	cr_assert_not_null(p);
	for (int i = 0; i < NFD; i++)
		t_pair(&p->a[i], &p->b[i]);
	t_done = 0;
	cr_assert_eq(rio_post(loop, &p->kick, submit_closes_cb), 0);
	T_RUN_UNTIL(loop, t_done >= 3 * NFD, 10000);
	t_loop_sleep(loop, 10);
	cr_assert_eq(p->refused, 0);
	cr_assert_eq(t_done, 3 * NFD);
	for (int i = 0; i < NFD; i++) {
		cr_assert_eq(p->rc[i].res, -ECANCELED, "recv %d: %d (%s)", i,
			     p->rc[i].res, rio_strerror(p->rc[i].res));
		cr_assert_eq(p->close_[i].res, 0, "close %d: %d (%s)", i,
			     p->close_[i].res, rio_strerror(p->close_[i].res));
		cr_assert_lt(p->rc[i].seq, p->close_[i].seq,
			     "recv %d completed after its fd's close", i);
		cr_assert_eq(fcntl(p->a[i], F_GETFD), -1, "fd not closed");
		close(p->b[i]);
	}
	free(p);
	t_loop_done(loop);
}

/* A cancel of an op that waits for SQ room ends it with -ECANCELED, even
 * when it has a deadline (io_uring settled it without the kernel and then
 * read its -ECANCELED as the deadline's -ETIMEDOUT). Before the first run
 * a full SQ cannot be flushed, so the ops past the fourth SQE wait. */
Test(tiny_ring, sq4_a_cancelled_waiting_op_with_a_deadline_is_cancelled,
     .timeout = 20)
{
	rio_loop *loop = t_loop_opts(4, 0);
	enum { N = 8 };
	t_rec rc[N], cancel[N];
	char buf[N][8];
	int a, b;

	t_pair(&a, &b);
	t_done = 0;
	for (int i = 0; i < N; i++) {
		rio_op_init(&rc[i].op);
		rio_op_init(&cancel[i].op);
		rc[i].calls = cancel[i].calls = 0;
		rio_op_set_deadline(&rc[i].op, 10000 * T_MS);
		cr_assert_eq(rio_recv(loop, &rc[i].op, b, buf[i], 8, 0,
				      t_rec_count_cb), 0);
	}
	for (int i = 0; i < N; i++)
		cr_assert_eq(rio_cancel(loop, &cancel[i].op, &rc[i].op,
					t_rec_count_cb), 0);
	T_RUN_UNTIL(loop, t_done >= 2 * N, 5000);
	for (int i = 0; i < N; i++) {
		cr_assert_eq(rc[i].calls, 1);
		cr_assert_eq(rc[i].res, -ECANCELED,
			     "cancelled recv %d with a deadline: %d (%s)", i,
			     rc[i].res, rio_strerror(rc[i].res));
		cr_assert_eq(cancel[i].calls, 1);
	}
	close(a);
	close(b);
	t_loop_done(loop);
}

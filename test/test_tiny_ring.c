/* Tiny rings: thousands of ops through an 8- or 4-entry SQ, none lost. */
#include "common.h"

#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

/* ---- one callback submits a whole batch ---- */

struct batch {
	rio_op kick;
	t_rec *ops;
	int n;
	int refused;
};

static void submit_timeouts_cb(rio_loop *loop, rio_op *op, int res)
{
	struct batch *b = RIO_CONTAINER_OF(op, struct batch, kick);

	(void)res;
	for (int i = 0; i < b->n; i++)
		if (rio_timeout(loop, &b->ops[i].op, 0, t_rec_count_cb) != 0)
			b->refused++;
}

Test(tiny_ring, sq8_cq8_two_thousand_zero_timeouts, .timeout = 60)
{
	enum { N = 2000 };
	rio_loop *loop = t_loop_opts(8, 8);
	struct batch b = { .n = N };
	rio_counters cnt;

	b.ops = calloc(N, sizeof(*b.ops));
	cr_assert_not_null(b.ops);
	t_done = 0;
	cr_assert_eq(rio_post(loop, &b.kick, submit_timeouts_cb), 0);
	T_RUN_UNTIL(loop, t_done >= N, 20000);
	t_loop_sleep(loop, 10);
	cr_assert_eq(b.refused, 0, "a submit failed for lack of room");
	cr_assert_eq(t_done, N);
	t_rec_all_once(b.ops, N, "timeout");
	for (int i = 0; i < N; i++)
		cr_assert_eq(b.ops[i].res, 0);
	rio_loop_counters(loop, &cnt);
	cr_log_info("sq_full %llu cq_overflows %llu",
		    (unsigned long long)cnt.sq_full,
		    (unsigned long long)cnt.cq_overflows);
	if (t_backend(loop) == RIO_BACKEND_URING)
		cr_assert_gt(cnt.sq_full, 0,
			     "2000 submissions into an 8-entry SQ never found "
			     "it full");
	cr_assert_geq(cnt.ops_completed, (uint64_t)N + 1);
	free(b.ops);
	t_loop_done(loop);
}

struct poster {
	rio_loop *loop;
	t_rec *ops;
	int n;
	int refused;
};

static void *poster_main(void *arg)
{
	struct poster *p = arg;

	for (int i = 0; i < p->n; i++)
		if (rio_post(p->loop, &p->ops[i].op, t_rec_count_cb) != 0)
			p->refused++;
	return NULL;
}

Test(tiny_ring, sq8_cq8_two_thousand_posts_from_a_thread, .timeout = 60)
{
	enum { N = 2000 };
	rio_loop *loop = t_loop_opts(8, 8);
	struct poster p = { .loop = loop, .n = N };
	pthread_t th;

	p.ops = calloc(N, sizeof(*p.ops));
	cr_assert_not_null(p.ops);
	t_done = 0;
	cr_assert_eq(pthread_create(&th, NULL, poster_main, &p), 0);
	pthread_join(th, NULL); /* all 2000 queued before the loop runs */
	cr_assert_eq(p.refused, 0);
	T_RUN_UNTIL(loop, t_done >= N, 20000);
	t_loop_sleep(loop, 10);
	cr_assert_eq(t_done, N);
	t_rec_all_once(p.ops, N, "post");
	for (int i = 0; i < N; i++)
		cr_assert_eq(p.ops[i].res, 0);
	free(p.ops);
	t_loop_done(loop);
}

/* ---- sends on connected pairs: each completes inline, flooding the CQ ---- */

enum { PAIRS = 100, PER_PAIR = 20, MSG = 16 };

struct send_batch {
	rio_op kick;
	t_rec *ops;
	int *fds;
	char msg[MSG];
	int refused;
};

static void submit_sends_cb(rio_loop *loop, rio_op *op, int res)
{
	struct send_batch *b = RIO_CONTAINER_OF(op, struct send_batch, kick);

	(void)res;
	for (int i = 0; i < PAIRS * PER_PAIR; i++)
		if (rio_send(loop, &b->ops[i].op, b->fds[i / PER_PAIR], b->msg,
			     MSG, 0, t_rec_count_cb) != 0)
			b->refused++;
}

Test(tiny_ring, sq8_cq8_two_thousand_sends_in_one_turn, .timeout = 60)
{
	rio_loop *loop = t_loop_opts(8, 8);
	struct send_batch b = { .refused = 0 };
	int peer[PAIRS], fds[PAIRS];
	rio_counters cnt;

	b.ops = calloc(PAIRS * PER_PAIR, sizeof(*b.ops));
	b.fds = fds;
	memset(b.msg, 'm', MSG);
	cr_assert_not_null(b.ops);
	for (int i = 0; i < PAIRS; i++)
		t_pair(&fds[i], &peer[i]);
	t_done = 0;
	cr_assert_eq(rio_post(loop, &b.kick, submit_sends_cb), 0);
	T_RUN_UNTIL(loop, t_done >= PAIRS * PER_PAIR, 20000);
	t_loop_sleep(loop, 10);
	cr_assert_eq(b.refused, 0);
	t_rec_all_once(b.ops, PAIRS * PER_PAIR, "send");
	for (int i = 0; i < PAIRS * PER_PAIR; i++)
		cr_assert_eq(b.ops[i].res, MSG, "send %d: %d", i, b.ops[i].res);
	/* Every byte reached its peer. */
	for (int i = 0; i < PAIRS; i++) {
		size_t got = 0;

		for (int k = 0; k < 200 && got < PER_PAIR * MSG; k++) {
			got += t_drain_fd(peer[i]);
			if (got < PER_PAIR * MSG)
				usleep(1000);
		}
		cr_assert_eq(got, (size_t)PER_PAIR * MSG, "pair %d got %zu", i,
			     got);
		close(peer[i]);
		close(fds[i]);
	}
	rio_loop_counters(loop, &cnt);
	cr_log_info("sends: sq_full %llu cq_overflows %llu",
		    (unsigned long long)cnt.sq_full,
		    (unsigned long long)cnt.cq_overflows);
	if (t_backend(loop) == RIO_BACKEND_URING)
		cr_assert_gt(cnt.sq_full, 0);
	free(b.ops);
	t_loop_done(loop);
}

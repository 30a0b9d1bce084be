/* Multishot recv into a 4-buffer pool: every byte, in order, no -ENOBUFS. */
#include "common.h"

#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

#define FLOOD (1u << 20)
#define NBUF 4
#define BUFSZ 4096

struct flood {
	int fd;
	int ok;
};

static void *flood_main(void *arg)
{
	struct flood *f = arg;
	static char chunk[8192];
	uint64_t off = 0;

	f->ok = 1;
	while (off < FLOOD && f->ok) {
		size_t n = FLOOD - off < sizeof(chunk) ? FLOOD - off : sizeof(chunk);
		size_t done = 0;

		t_pat_fill(chunk, n, off);
		while (done < n) {
			ssize_t w = send(f->fd, chunk + done, n - done,
					 MSG_NOSIGNAL);

			if (w <= 0) {
				f->ok = 0;
				break;
			}
			done += (size_t)w;
		}
		off += n;
	}
	close(f->fd); /* end of stream */
	return NULL;
}

struct sink {
	rio_op op;
	rio_op later; /* gives held buffers back from a timer */
	rio_bufpool *pool;
	uint64_t got;
	uint64_t fnv;
	int calls, finals, final_res;
	int enobufs_seen, bad_flags, mismatches, put_errors;
	uint16_t held[NBUF];
	int nheld, later_armed, deferrals;
};

static void give_back_cb(rio_loop *loop, rio_op *op, int res)
{
	struct sink *s = RIO_CONTAINER_OF(op, struct sink, later);

	(void)loop;
	(void)res;
	for (int i = 0; i < s->nheld; i++)
		s->put_errors += rio_bufpool_put(s->pool, s->held[i]) != 0;
	s->nheld = 0;
	s->later_armed = 0;
}

static void sink_cb(rio_loop *loop, rio_op *op, int res)
{
	struct sink *s = RIO_CONTAINER_OF(op, struct sink, op);

	s->calls++;
	if (res == -ENOBUFS)
		s->enobufs_seen++;
	if (res <= 0) {
		if (op->flags & RIO_OP_F_MORE)
			s->bad_flags++;
		s->finals++;
		s->final_res = res;
		return;
	}
	if (!(op->flags & RIO_OP_F_BUF) || !(op->flags & RIO_OP_F_MORE) ||
	    op->buf != rio_bufpool_buf(s->pool, op->buf_id) || res > BUFSZ) {
		s->bad_flags++;
		return;
	}
	/* Process first: check the bytes sit where the stream says. */
	if (t_pat_check(op->buf, (size_t)res, s->got) != (size_t)res)
		s->mismatches++;
	s->fnv = t_fnv(s->fnv, op->buf, (size_t)res);
	s->got += (uint64_t)res;
	/* Then give the buffer back: mostly at once; every 5th is held, and
	 * once all four are held they go back from a 2 ms timer, so the pool
	 * runs dry while the peer is still flooding. */
	if (s->nheld >= NBUF)
		s->bad_flags++; /* a fifth buffer from a 4-buffer pool */
	if ((s->calls % 5 != 0 && s->nheld == 0) || s->nheld >= NBUF) {
		s->put_errors += rio_bufpool_put(s->pool, op->buf_id) != 0;
		return;
	}
	s->held[s->nheld++] = op->buf_id;
	if (s->nheld == NBUF && !s->later_armed) {
		s->later_armed = 1;
		s->deferrals++;
		if (rio_timeout(loop, &s->later, 2 * T_MS, give_back_cb) != 0)
			s->put_errors++;
	}
}

Test(bufpool, four_buffers_carry_a_megabyte_intact, .timeout = 60)
{
	rio_loop *loop = t_loop();
	rio_bufpool *pool = t_bufpool(loop, NBUF, BUFSZ);
	struct sink *s = calloc(1, sizeof(*s));
	struct flood f;
	rio_counters cnt;
	pthread_t th;
	char *expect = malloc(FLOOD);
	int a, b;

	cr_assert(s && expect);
	s->pool = pool;
	s->fnv = T_FNV_INIT;
	cr_assert_eq(rio_bufpool_size(pool), (size_t)BUFSZ);
	t_pair(&a, &b);
	cr_assert_eq(t_set_blocking(a), 0);
	f.fd = a;
	cr_assert_eq(rio_recv_multishot(loop, &s->op, b, pool, sink_cb), 0);
	cr_assert_eq(pthread_create(&th, NULL, flood_main, &f), 0);
	T_RUN_UNTIL(loop, s->finals > 0, 30000);
	pthread_join(th, NULL);
	/* Buffers still held (if the stream ended while holding) go back. */
	T_RUN_UNTIL(loop, !s->later_armed, 3000);
	for (int i = 0; i < s->nheld; i++)
		cr_assert_eq(rio_bufpool_put(pool, s->held[i]), 0);
	s->nheld = 0;

	cr_assert(f.ok, "flood thread failed to send");
	cr_assert_eq(s->enobufs_seen, 0, "-ENOBUFS reached the callback");
	cr_assert_eq(s->bad_flags, 0, "completion flags/buffer wrong");
	cr_assert_eq(s->put_errors, 0, "rio_bufpool_put refused a lent id");
	cr_assert_eq(s->finals, 1);
	cr_assert_eq(s->final_res, 0, "stream ended with %d (%s)", s->final_res,
		     rio_strerror(s->final_res));
	cr_assert_eq(s->got, (uint64_t)FLOOD, "received %llu of %u bytes",
		     (unsigned long long)s->got, FLOOD);
	cr_assert_eq(s->mismatches, 0, "bytes out of order or corrupted");
	t_pat_fill(expect, FLOOD, 0);
	cr_assert_eq(s->fnv, t_fnv(T_FNV_INIT, expect, FLOOD), "checksum");
	cr_assert_gt(s->deferrals, 0, "the test never held every buffer");
	rio_loop_counters(loop, &cnt);
	cr_assert_gt(cnt.enobufs_rearms, 0,
		     "pool ran dry (%d deferrals) but no -ENOBUFS re-arm counted",
		     s->deferrals);
	cr_log_info("bufpool: %d completions, %llu enobufs re-arms", s->calls,
		    (unsigned long long)cnt.enobufs_rearms);
	cr_assert_eq(rio_bufpool_destroy(pool), 0);
	close(b);
	free(expect);
	free(s);
	t_loop_done(loop);
}

struct tail {
	rio_op op;
	rio_bufpool *pool;
	int n, res[4];
};

static void tail_cb(rio_loop *loop, rio_op *op, int res)
{
	struct tail *t = RIO_CONTAINER_OF(op, struct tail, op);

	(void)loop;
	if (t->n < 4)
		t->res[t->n] = res;
	t->n++;
	if (res > 0)
		rio_bufpool_put(t->pool, op->buf_id);
}

/* Data that ends short of a buffer, then the peer's FIN, both queued before
 * the first poll: the one edge that reports them is used up by the data, so
 * the short read must not end the readiness before the EOF is read. */
Test(bufpool, short_tail_then_eof_ends_the_stream, .timeout = 20)
{
	rio_loop *loop = t_loop();
	struct tail t = { .pool = t_bufpool(loop, NBUF, BUFSZ) };
	static char data[BUFSZ + 904];
	struct pollfd pfd;
	int a, b;

	t_pair(&a, &b);
	cr_assert_eq(send(a, data, sizeof(data), 0), (ssize_t)sizeof(data));
	close(a);
	pfd = (struct pollfd){ .fd = b, .events = POLLRDHUP };
	cr_assert_eq(poll(&pfd, 1, 3000), 1, "FIN did not arrive");
	cr_assert_eq(rio_recv_multishot(loop, &t.op, b, t.pool, tail_cb), 0);
	T_RUN_UNTIL(loop, t.n > 0 && t.res[t.n - 1] <= 0, 3000);
	cr_assert_eq(t.n, 3);
	cr_assert_eq(t.res[0], BUFSZ);
	cr_assert_eq(t.res[1], 904);
	cr_assert_eq(t.res[2], 0, "end of stream");
	cr_assert_eq(rio_bufpool_destroy(t.pool), 0);
	close(b);
	t_loop_done(loop);
}

Test(bufpool, misuse_and_lifetime, .timeout = 20)
{
	rio_loop *loop = t_loop();
	rio_bufpool *pool = t_bufpool(loop, NBUF, BUFSZ);
	rio_bufpool *bad = NULL;
	t_rec r = { .calls = 0 }, c = { .calls = 0 };
	int a, b;

	cr_assert_eq(rio_bufpool_create(loop, 3, BUFSZ, &bad), -EINVAL,
		     "count must be a power of two");
	cr_assert_eq(rio_bufpool_create(loop, 0, BUFSZ, &bad), -EINVAL);
	cr_assert_eq(rio_bufpool_create(loop, 65536, BUFSZ, &bad), -EINVAL);
	cr_assert_eq(rio_bufpool_create(loop, 4, 0, &bad), -EINVAL);
	cr_assert_null(bad);
	/* Every buffer is in the pool: none is lent out, none can be put. */
	cr_assert_eq(rio_bufpool_put(pool, 0), -EINVAL, "put of a buffer not lent");
	cr_assert_eq(rio_bufpool_put(pool, NBUF), -EINVAL, "put out of range");
	for (uint16_t i = 0; i < NBUF; i++)
		cr_assert_not_null(rio_bufpool_buf(pool, i));

	t_pair(&a, &b);
	cr_assert_eq(rio_recv_multishot(loop, &r.op, b, pool, t_rec_cb), 0);
	cr_assert_eq(rio_bufpool_destroy(pool), -EBUSY,
		     "destroyed a pool an op is using");
	/* Cancel ends the stream: one final completion, no data, no MORE. */
	cr_assert_eq(rio_cancel(loop, &c.op, &r.op, t_rec_cb), 0);
	T_RUN_UNTIL(loop, r.calls > 0 && c.calls > 0, 3000);
	cr_assert_eq(r.calls, 1);
	cr_assert_eq(r.res, -ECANCELED);
	cr_assert_eq(r.flags & RIO_OP_F_MORE, 0u);
	cr_assert_eq(rio_bufpool_destroy(pool), 0);
	close(a);
	close(b);
	t_loop_done(loop);
}

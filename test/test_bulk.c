/* 64 MiB through rio_send to a slow reader: short sends resubmitted, every
 * byte arrives once and in order. */
#include "common.h"

#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

#define TOTAL (64ull << 20)
#define CHUNK (256u << 10)

struct reader {
	int fd;
	uint64_t got;
	uint64_t bad_at; /* first mismatching stream offset, or UINT64_MAX */
	int eof;
	int err;
	int pauses;
};

static void *reader_main(void *arg)
{
	struct reader *r = arg;
	static char buf[16384];
	uint64_t next_pause = 2u << 20;

	/* Slow: small reads, and a pause every 2 MiB, so the sender keeps
	 * hitting a full socket. */
	for (;;) {
		ssize_t n = recv(r->fd, buf, sizeof(buf), 0);
		size_t at;

		if (n == 0) {
			r->eof = 1;
			break;
		}
		if (n < 0) {
			r->err = errno;
			break;
		}
		at = t_pat_check(buf, (size_t)n, r->got);
		if (at != (size_t)n && r->bad_at == UINT64_MAX)
			r->bad_at = r->got + at;
		r->got += (uint64_t)n;
		if (r->got >= next_pause) {
			usleep(3000);
			r->pauses++;
			next_pause += 2u << 20;
		}
	}
	return NULL;
}

struct sender {
	rio_op op;
	rio_op close_op;
	int fd;
	char *chunk;
	uint64_t chunk_off; /* stream offset of chunk[0] */
	size_t chunk_len, chunk_sent;
	uint64_t sent;
	int sends, short_sends, errors, closed, close_res;
};

static void close_cb(rio_loop *loop, rio_op *op, int res)
{
	struct sender *s = RIO_CONTAINER_OF(op, struct sender, close_op);

	(void)loop;
	s->closed++;
	s->close_res = res;
}

static int send_next(rio_loop *loop, struct sender *s);

static void send_cb(rio_loop *loop, rio_op *op, int res)
{
	struct sender *s = RIO_CONTAINER_OF(op, struct sender, op);

	s->sends++;
	if (res <= 0) {
		s->errors++;
		return;
	}
	if ((size_t)res < s->chunk_len - s->chunk_sent)
		s->short_sends++;
	s->chunk_sent += (size_t)res;
	s->sent += (uint64_t)res;
	if (s->sent == TOTAL) {
		if (rio_close(loop, &s->close_op, s->fd, close_cb) != 0)
			s->errors++;
		return;
	}
	if (send_next(loop, s) != 0)
		s->errors++;
}

static int send_next(rio_loop *loop, struct sender *s)
{
	if (s->chunk_sent == s->chunk_len) {
		s->chunk_off += s->chunk_len;
		s->chunk_len = TOTAL - s->chunk_off < CHUNK ?
				       (size_t)(TOTAL - s->chunk_off) :
				       CHUNK;
		s->chunk_sent = 0;
		t_pat_fill(s->chunk, s->chunk_len, s->chunk_off);
	}
	/* A short send leaves the tail: submit just the rest. */
	return rio_send(loop, &s->op, s->fd, s->chunk + s->chunk_sent,
			s->chunk_len - s->chunk_sent, 0, send_cb);
}

Test(bulk, sixty_four_mib_to_a_slow_reader, .timeout = 120)
{
	rio_loop *loop = t_loop();
	struct sender s = { .sends = 0 };
	struct reader r = { .bad_at = UINT64_MAX };
	int small = 64 << 10;
	pthread_t th;
	int a, b;

	t_pair(&a, &b);
	cr_assert_eq(t_set_blocking(b), 0);
	setsockopt(b, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
	s.fd = a;
	s.chunk = malloc(CHUNK);
	cr_assert_not_null(s.chunk);
	r.fd = b;
	cr_assert_eq(pthread_create(&th, NULL, reader_main, &r), 0);
	s.chunk_len = 0; /* send_next fills the first chunk */
	s.chunk_sent = 0;
	s.chunk_off = 0;
	cr_assert_eq(send_next(loop, &s), 0);
	T_RUN_UNTIL(loop, s.closed > 0 || s.errors > 0, 90000);
	pthread_join(th, NULL);

	cr_assert_eq(s.errors, 0, "send failed (last res %d: %s)", s.op.res,
		     rio_strerror(s.op.res));
	cr_assert_eq(s.sent, TOTAL);
	cr_assert_eq(s.close_res, 0);
	cr_assert_eq(s.closed, 1);
	cr_assert_eq(r.err, 0, "reader: %s", strerror(r.err));
	cr_assert(r.eof, "reader never saw end of stream");
	cr_assert_eq(r.got, TOTAL, "reader got %llu of %llu bytes",
		     (unsigned long long)r.got, TOTAL);
	cr_assert_eq(r.bad_at, UINT64_MAX, "stream corrupt at offset %llu",
		     (unsigned long long)r.bad_at);
	cr_log_info("bulk: %d sends, %d short, %d reader pauses", s.sends,
		    s.short_sends, r.pauses);
	close(b);
	free(s.chunk);
	t_loop_done(loop);
}

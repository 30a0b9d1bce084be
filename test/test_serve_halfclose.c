/* Fault suite 6: half-close. A client sends 64 MiB and shuts down its
 * write side; the echo returns every byte, identical (FNV-1a over the
 * stream), and then closes. Blocking client threads, the server on the
 * test's loop. */
#include "tserver.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/time.h>
#include <unistd.h>

#define TOTAL (64u << 20)

struct side {
	int fd;
	uint64_t fnv, bytes;
	int err;
	atomic_int done;
};

static void *writer(void *arg)
{
	struct side *w = arg;
	char *buf = malloc(65536);

	w->fnv = T_FNV_INIT;
	for (uint64_t off = 0; off < TOTAL && !w->err;) {
		size_t n = 65536;
		ssize_t k;

		t_pat_fill(buf, n, off);
		w->fnv = t_fnv(w->fnv, buf, n);
		for (size_t s = 0; s < n; s += (size_t)k) {
			k = send(w->fd, buf + s, n - s, MSG_NOSIGNAL);
			if (k <= 0) {
				w->err = errno;
				break;
			}
		}
		off += n;
		w->bytes = off;
	}
	if (shutdown(w->fd, SHUT_WR) < 0)
		w->err = errno;
	free(buf);
	atomic_store(&w->done, 1);
	return NULL;
}

static void *reader(void *arg)
{
	struct side *r = arg;
	char *buf = malloc(65536);
	ssize_t n;

	r->fnv = T_FNV_INIT;
	while ((n = recv(r->fd, buf, 65536, 0)) > 0) {
		r->fnv = t_fnv(r->fnv, buf, (size_t)n);
		r->bytes += (uint64_t)n;
	}
	if (n < 0)
		r->err = errno;
	free(buf);
	atomic_store(&r->done, 1);
	return NULL;
}

Test(serve_halfclose, echo_returns_every_byte_then_closes, .timeout = 120)
{
	rio_loop *loop = t_loop();
	struct timeval tv = { .tv_sec = 30 };
	struct side w = { .err = 0 }, r = { .err = 0 };
	pthread_t tw, tr;
	tsrv s;

	tsrv_start(&s, loop, NULL, 0);
	w.fd = r.fd = t_connect(AF_INET, s.port);
	setsockopt(w.fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(w.fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	cr_assert_eq(pthread_create(&tw, NULL, writer, &w), 0);
	cr_assert_eq(pthread_create(&tr, NULL, reader, &r), 0);
	T_RUN_UNTIL(loop, atomic_load(&r.done) && atomic_load(&w.done), 90000);
	pthread_join(tw, NULL);
	pthread_join(tr, NULL);
	cr_assert_eq(w.err, 0, "writer: %s", strerror(w.err));
	cr_assert_eq(r.err, 0, "reader: %s", strerror(r.err));
	cr_assert_eq(w.bytes, TOTAL);
	cr_assert_eq(r.bytes, TOTAL, "echoed %llu of %u bytes",
		     (unsigned long long)r.bytes, TOTAL);
	cr_assert_eq(r.fnv, w.fnv, "the echoed stream differs");
	T_RUN_UNTIL(loop, s.closed == 1, 5000);
	cr_assert_eq(s.eofs, 1, "the server did not close on end of stream");
	cr_assert_eq(s.bytes, TOTAL);
	close(w.fd);
	tsrv_finish(&s);
	t_loop_done(loop);
}

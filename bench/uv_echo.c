/*
 * rio-uv-echo — libuv's echo server, written the way libuv's own
 * benchmarks and docs write one: uv_tcp_t per connection, uv_read_start
 * with a per-connection 64 KiB buffer, uv_try_write first and a queued
 * uv_write (reading stopped until it drains) when the socket will not take
 * it all. Single-threaded; SIGINT/SIGTERM stop it.
 */
#define _GNU_SOURCE
#include "bench_util.h"

#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#define BUF (64 * 1024)

struct conn {
	uv_tcp_t tcp;
	uv_write_t wr;
	uv_buf_t pending;
	char buf[BUF];
};

static uv_loop_t *loop;
static uv_tcp_t server;
static uv_signal_t sigint, sigterm;

static void on_close(uv_handle_t *h)
{
	free(h->data);
}

static void alloc_cb(uv_handle_t *h, size_t hint, uv_buf_t *b)
{
	struct conn *c = h->data;

	(void)hint;
	*b = uv_buf_init(c->buf, BUF);
}

static void read_cb(uv_stream_t *s, ssize_t n, const uv_buf_t *b);

static void write_cb(uv_write_t *w, int status)
{
	struct conn *c = w->data;

	if (status < 0) {
		uv_close((uv_handle_t *)&c->tcp, on_close);
		return;
	}
	uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, read_cb);
}

static void read_cb(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
	struct conn *c = s->data;

	if (n < 0) {
		uv_close((uv_handle_t *)s, on_close);
		return;
	}
	if (n == 0)
		return;
	uv_buf_t out = uv_buf_init(b->base, (unsigned)n);
	int w = uv_try_write(s, &out, 1);

	if (w == n)
		return;
	if (w < 0 && w != UV_EAGAIN) {
		uv_close((uv_handle_t *)s, on_close);
		return;
	}
	if (w > 0) {
		out.base += w;
		out.len -= (size_t)w;
	}
	/* the rest goes out queued; the buffer is busy until it has */
	uv_read_stop(s);
	c->wr.data = c;
	uv_write(&c->wr, s, &out, 1, write_cb);
}

static void on_conn(uv_stream_t *srv, int status)
{
	struct conn *c;

	if (status < 0)
		return;
	c = malloc(sizeof(*c));
	if (!c)
		return;
	uv_tcp_init(loop, &c->tcp);
	c->tcp.data = c;
	if (uv_accept(srv, (uv_stream_t *)&c->tcp) < 0) {
		uv_close((uv_handle_t *)&c->tcp, on_close);
		return;
	}
	uv_tcp_nodelay(&c->tcp, 1);
	uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, read_cb);
}

static void close_walk(uv_handle_t *h, void *arg)
{
	(void)arg;
	if (!uv_is_closing(h))
		uv_close(h, h->data && h != (uv_handle_t *)&server ? on_close
								   : NULL);
}

static void on_signal(uv_signal_t *s, int sig)
{
	(void)s;
	(void)sig;
	uv_walk(loop, close_walk, NULL);
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{"port", required_argument, 0, 'p'},
		{"addr", required_argument, 0, 'a'},
		{"help", no_argument, 0, 'h'},
		{0, 0, 0, 0},
	};
	const char *addr = "127.0.0.1";
	long port = -1;
	int c, lfd;

	while ((c = getopt_long(argc, argv, "p:a:h", opts, NULL)) != -1) {
		switch (c) {
		case 'p':
			if (bench_parse_long(optarg, 0, 65535, &port)) {
				fprintf(stderr, "rio-uv-echo: bad --port '%s'\n",
					optarg);
				return BENCH_EXIT_USAGE;
			}
			break;
		case 'a':
			addr = optarg;
			break;
		case 'h':
			printf("usage: rio-uv-echo --port P [--addr A]\n");
			return 0;
		default:
			fprintf(stderr, "usage: rio-uv-echo --port P [--addr A]\n");
			return BENCH_EXIT_USAGE;
		}
	}
	if (port < 0 || optind < argc) {
		fprintf(stderr, "usage: rio-uv-echo --port P [--addr A]\n");
		return BENCH_EXIT_USAGE;
	}
	lfd = bench_listen(addr, (int)port, 1);
	if (lfd < 0) {
		fprintf(stderr, "rio-uv-echo: listen on %s:%ld: %s\n", addr, port,
			strerror(-lfd));
		return 1;
	}
	loop = uv_default_loop();
	uv_tcp_init(loop, &server);
	server.data = NULL;
	if (uv_tcp_open(&server, lfd) < 0 ||
	    uv_listen((uv_stream_t *)&server, 4096, on_conn) < 0) {
		fprintf(stderr, "rio-uv-echo: libuv refused the listener\n");
		return 1;
	}
	uv_signal_init(loop, &sigint);
	uv_signal_init(loop, &sigterm);
	sigint.data = sigterm.data = NULL;
	uv_signal_start(&sigint, on_signal, SIGINT);
	uv_signal_start(&sigterm, on_signal, SIGTERM);
	signal(SIGPIPE, SIG_IGN);
	uv_run(loop, UV_RUN_DEFAULT);
	uv_loop_close(loop);
	return 0;
}

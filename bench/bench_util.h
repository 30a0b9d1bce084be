/*
 * bench_util — the few helpers the benchmark programs share: strict flag
 * parsing, CPU pinning, socket setup and a monotonic clock. The programs use
 * nothing from libringio, so they measure the same thing whatever state the
 * library is in.
 */
#ifndef RIO_BENCH_UTIL_H
#define RIO_BENCH_UTIL_H

#include <stdint.h>
#include <sys/socket.h>

/* Exit status for a bad command line; 1 is any runtime failure. */
#define BENCH_EXIT_USAGE 2

/*
 * Parse a whole decimal integer in [min, max] into *out. Returns 0, or -1
 * when `s` is not a number, has trailing junk or is out of range.
 */
int bench_parse_long(const char *s, long min, long max, long *out);

/* Parse seconds (fractions allowed) in [0, max]. Returns 0 or -1. */
int bench_parse_seconds(const char *s, double max, double *out);

/*
 * Pin the calling thread to `cpu`. Threads created afterwards (io_uring's
 * io-wq workers included) inherit the mask. Returns 0 or -errno.
 */
int bench_pin_cpu(int cpu);

/*
 * Fill *ss / *len from a numeric IPv4 or IPv6 address (no name lookup, so
 * a typo can never send traffic anywhere unexpected). Returns 0 or -EINVAL.
 */
int bench_sockaddr(const char *addr, int port, struct sockaddr_storage *ss,
		   socklen_t *len);

/*
 * A listening TCP socket on addr:port with SO_REUSEADDR and the largest
 * backlog the kernel allows; non-blocking if `nonblock`. Returns the fd or
 * -errno.
 */
int bench_listen(const char *addr, int port, int nonblock);

/* Disable Nagle: an echo must not wait for an ACK. Returns 0 or -errno. */
int bench_set_nodelay(int fd);

/*
 * Block SIGINT and SIGTERM and return a signalfd that becomes readable when
 * one arrives, so a server's event loop sees shutdown as one more event
 * (no handler, no EINTR race). Returns the fd or -errno.
 */
int bench_signalfd(void);

uint64_t bench_now_ns(void);

#endif

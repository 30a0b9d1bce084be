/*
 * Fault injection, for tests: makes the real backends misbehave the way
 * the kernel can but will not on demand (readiness that is not real, a
 * stale write edge, an ERR|HUP-only connect "failure", short writes,
 * EAGAIN after readiness, accept errors, a buffer ring running dry), and
 * io_uring setup failing. Compiled in only with RINGIO_FAULT_HOOKS (test
 * builds); release builds ignore RINGIO_FAULTS entirely.
 *
 * The plan comes from the environment when a loop is created:
 *   RINGIO_FAULTS="seed=42,spurious=200,eagain=100,short_write=300"
 * Rates are per mille per chance; one PRNG per loop, seeded from the plan,
 * so a failing run can be replayed with the same plan.
 *   uring_setup=EPERM|ENOSYS|EINVAL|ENOMEM  io_uring setup fails so
 *   spurious      fake readiness for an fd with parked ops (fallback)
 *   errhup        fake ERR|HUP-only event for a pending connect (fallback)
 *   eagain        EAGAIN after real readiness (fallback)
 *   short_write   a send moves fewer bytes than asked (both)
 *   accept_abort  an accepted connection is reset: -ECONNABORTED (both)
 *   accept_eproto likewise, -EPROTO (both)
 *   enobufs       a multishot recv finds its buffer ring dry (both)
 *   nocap         the kernel refuses a multishot recv's length cap, as
 *                 kernels before 6.17 do (io_uring)
 *   old_send      a datagram send goes as IORING_OP_SENDMSG, as on kernels
 *                 before 6.0, whose IORING_OP_SEND takes no address
 *                 (io_uring)
 */
#ifndef RIO_FAULT_H
#define RIO_FAULT_H

#include <stddef.h>
#include <stdint.h>

enum rio__fault_kind {
	RIO__F_SPURIOUS,
	RIO__F_ERRHUP,
	RIO__F_EAGAIN,
	RIO__F_SHORT_WRITE,
	RIO__F_ACCEPT_ABORT,
	RIO__F_ACCEPT_EPROTO,
	RIO__F_ENOBUFS,
	RIO__F_NOCAP,
	RIO__F_OLD_SEND,
	RIO__F_COUNT,
};

struct rio__faults {
	uint64_t rng;
	uint16_t rate[RIO__F_COUNT];
	int setup_err; /* errno io_uring setup is made to fail with, or 0 */
};

struct rio_loop;

#ifdef RINGIO_FAULT_HOOKS
/* Parse RINGIO_FAULTS into f. Returns 0, or -EINVAL for a bad plan. */
int rio__faults_init(struct rio__faults *f);
/* Roll the dice for fault k; counts it when it fires. */
int rio__fault(struct rio_loop *loop, enum rio__fault_kind k);
uint32_t rio__fault_rand(struct rio_loop *loop);
/* The rewrites both backends make, in one place: */
/* How much of a `len`-byte send to pass to the kernel (a short write). */
size_t rio__fault_send_len(struct rio_loop *loop, size_t len);
/* A connection the kernel accepted as `fd`: fd, or the plan resets it
 * (the client sees the close) and the caller gets the error a kernel
 * reports for a connection aborted early (-ECONNABORTED, -EPROTO). */
int rio__fault_accept(struct rio_loop *loop, int fd);
#else
static inline int rio__faults_init(struct rio__faults *f)
{
	(void)f;
	return 0;
}
static inline int rio__fault(struct rio_loop *loop, enum rio__fault_kind k)
{
	(void)loop;
	(void)k;
	return 0;
}
static inline uint32_t rio__fault_rand(struct rio_loop *loop)
{
	(void)loop;
	return 0;
}
static inline size_t rio__fault_send_len(struct rio_loop *loop, size_t len)
{
	(void)loop;
	return len;
}
static inline int rio__fault_accept(struct rio_loop *loop, int fd)
{
	(void)loop;
	return fd;
}
#endif

#endif

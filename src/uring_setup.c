/*
 * The io_uring backend's ring: setup with the best flags the kernel takes
 * (dropped one by one on -EINVAL), the opcode probe, why io_uring was
 * refused (for the fallback's reason), enabling the ring for the thread
 * that first runs the loop, teardown; and the backend's table for the
 * core.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "uring.h"

static const struct { int op; const char *name; } needed_ops[] = {
	{IORING_OP_ACCEPT, "ACCEPT"},       {IORING_OP_CONNECT, "CONNECT"},
	{IORING_OP_RECV, "RECV"},           {IORING_OP_SEND, "SEND"},
	{IORING_OP_RECVMSG, "RECVMSG"},     {IORING_OP_SENDMSG, "SENDMSG"},
	{IORING_OP_CLOSE, "CLOSE"},         {IORING_OP_TIMEOUT, "TIMEOUT"},
	{IORING_OP_LINK_TIMEOUT, "LINK_TIMEOUT"},
	{IORING_OP_ASYNC_CANCEL, "ASYNC_CANCEL"}, {IORING_OP_READ, "READ"},
};

static int probe_ops(struct uring *u, char *why, size_t why_len)
{
	struct io_uring *ring = &u->ring;
	struct io_uring_probe *p = io_uring_get_probe_ring(ring);
	if (!p) {
		snprintf(why, why_len, "io_uring opcode probe failed");
		return -ENOSYS;
	}
	int r = 0;
	for (size_t i = 0; i < sizeof needed_ops / sizeof *needed_ops; i++)
		if (!io_uring_opcode_supported(p, needed_ops[i].op)) {
			snprintf(why, why_len, "io_uring lacks IORING_OP_%s",
				 needed_ops[i].name);
			r = -ENOSYS;
			break;
		}
	/* the same kernel (6.0) gave IORING_OP_SEND an address */
	u->send_addr = io_uring_opcode_supported(p, IORING_OP_SEND_ZC);
	io_uring_free_probe(p);
	return r;
}

static void flags_str(unsigned f, char *buf, size_t len)
{
	snprintf(buf, len, "%s%s%s%s",
		 f & IORING_SETUP_SINGLE_ISSUER ? "SINGLE_ISSUER|" : "",
		 f & IORING_SETUP_DEFER_TASKRUN ? "DEFER_TASKRUN|" : "",
		 f & IORING_SETUP_COOP_TASKRUN ? "COOP_TASKRUN|" : "",
		 f & IORING_SETUP_SUBMIT_ALL ? "SUBMIT_ALL|" : "");
	size_t n = strlen(buf);
	if (n)
		buf[n - 1] = '\0';
}

/* Drop the setup flag the kernel is least likely to know, in the order
 * they appeared: DEFER_TASKRUN (6.1; COOP_TASKRUN, 5.19, stands in for
 * it), then COOP_TASKRUN, SINGLE_ISSUER (6.0), SUBMIT_ALL (5.18),
 * R_DISABLED (5.10). */
static int drop_flag(unsigned *f)
{
	if (*f & IORING_SETUP_DEFER_TASKRUN) {
		*f &= ~IORING_SETUP_DEFER_TASKRUN;
		*f |= IORING_SETUP_COOP_TASKRUN;
	} else if (*f & IORING_SETUP_COOP_TASKRUN) {
		*f &= ~IORING_SETUP_COOP_TASKRUN;
	} else if (*f & IORING_SETUP_SINGLE_ISSUER) {
		*f &= ~IORING_SETUP_SINGLE_ISSUER;
	} else if (*f & IORING_SETUP_SUBMIT_ALL) {
		*f &= ~IORING_SETUP_SUBMIT_ALL;
	} else if (*f & IORING_SETUP_R_DISABLED) {
		*f &= ~IORING_SETUP_R_DISABLED;
	} else {
		return 0;
	}
	return 1;
}

static void explain_setup_error(rio_loop *loop, int r, char *why, size_t len)
{
	const char *what = "";
	char sys[64] = "";
	if (r == -ENOSYS)
		loop->reason = RIO_REASON_URING_ENOSYS;
	if (r == -EPERM || r == -EACCES) {
		loop->reason = RIO_REASON_URING_EPERM;
		FILE *f = fopen("/proc/sys/kernel/io_uring_disabled", "r");
		int v = -1;
		if (f) {
			if (fscanf(f, "%d", &v) != 1)
				v = -1;
			fclose(f);
		}
		if (v > 0) {
			loop->reason = RIO_REASON_URING_DISABLED;
			snprintf(sys, sizeof sys, " (kernel.io_uring_disabled=%d)", v);
		} else {
			what = " (seccomp or container policy)";
		}
	} else if (r == -ENOMEM) {
		struct rlimit rl;
		if (getrlimit(RLIMIT_MEMLOCK, &rl) == 0 &&
		    rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < (8u << 20)) {
			loop->reason = RIO_REASON_URING_MEMLOCK;
			what = " (RLIMIT_MEMLOCK too low)";
		}
	} else if (r == -EINVAL) {
		loop->reason = RIO_REASON_URING_FLAGS;
		what = " (no setup flag set accepted)";
	}
	snprintf(why, len, "io_uring_setup returned %s%s%s",
		 strerrorname_np(-r) ? strerrorname_np(-r) : "error", sys, what);
}

static int setup_ring(rio_loop *loop, struct uring *u,
		      const rio_loop_opts *opts, char *why, size_t why_len)
{
	unsigned entries = opts->sq_entries ? opts->sq_entries : 256;
	/* R_DISABLED: the ring is enabled by the thread that first runs the
	 * loop (uring_bind), which SINGLE_ISSUER then ties it to. */
	unsigned f = IORING_SETUP_SUBMIT_ALL | IORING_SETUP_SINGLE_ISSUER |
		     IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_R_DISABLED;
	for (;;) {
		struct io_uring_params p;
		memset(&p, 0, sizeof p);
		p.flags = f | IORING_SETUP_CLAMP;
		if (opts->cq_entries) {
			p.flags |= IORING_SETUP_CQSIZE;
			p.cq_entries = opts->cq_entries;
		}
		int r = io_uring_queue_init_params(entries, &u->ring, &p);
		if (r == 0) {
			u->setup_flags = f;
			return 0;
		}
		if (r != -EINVAL || !drop_flag(&f)) {
			explain_setup_error(loop, r, why, why_len);
			return r;
		}
	}
}

static int uring_init(rio_loop *loop, const rio_loop_opts *opts, char *why,
		      size_t why_len)
{
	if (opts->cq_entries && opts->cq_entries < opts->sq_entries)
		return -EINVAL;
	if (loop->faults.setup_err) {
		int e = -loop->faults.setup_err;
		explain_setup_error(loop, e, why, why_len);
		size_t n = strlen(why);
		snprintf(why + n, why_len - n, " (fault injected)");
		return e;
	}
	struct uring *u = calloc(1, sizeof *u);
	if (!u)
		return -ENOMEM;
	int r = setup_ring(loop, u, opts, why, why_len);
	if (r < 0) {
		free(u);
		return r;
	}
	r = probe_ops(u, why, why_len);
	if (r < 0)
		loop->reason = RIO_REASON_URING_PROBE;
	u->efd = -1;
	if (r == 0) {
		u->slots = calloc(u->ring.sq.ring_entries, sizeof *u->slots);
		u->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
		r = u->efd < 0 ? -errno : !u->slots ? -ENOMEM : 0;
	}
	if (r < 0) {
		if (u->efd >= 0)
			close(u->efd);
		free(u->slots);
		io_uring_queue_exit(&u->ring);
		free(u);
		return r;
	}
	loop->be_data = u;
	char fl[96];
	flags_str(u->setup_flags, fl, sizeof fl);
	snprintf(loop->msg, sizeof loop->msg, "io_uring (%s)", fl);
	rio__uring_arm_wake(loop);
	return 0;
}

/* The first rio_loop_run(): the ring becomes this thread's. Enabling it
 * makes this thread its SINGLE_ISSUER (and the one DEFER_TASKRUN runs task
 * work on); the ring fd is registered in this thread's io_uring context,
 * so an enter skips the fd lookup. */
static int uring_bind(rio_loop *loop)
{
	struct uring *u = rio__uring(loop);
	if (u->setup_flags & IORING_SETUP_R_DISABLED) {
		/* By hand: Debian's liburing 2.3 declares
		 * io_uring_enable_rings() but does not export it. */
		if (syscall(__NR_io_uring_register, u->ring.ring_fd,
			    IORING_REGISTER_ENABLE_RINGS, NULL, 0) < 0)
			return -errno;
	}
	io_uring_register_ring_fd(&u->ring); /* optional: ignore a refusal */
	u->bound = 1;
	return 0;
}

static void uring_fini(rio_loop *loop)
{
	struct uring *u = rio__uring(loop);
	io_uring_queue_exit(&u->ring);
	close(u->efd);
	free(u->slots);
	free(u);
}

const struct rio__backend rio__backend_uring = {
	.name = "uring",
	.kind = RIO_BACKEND_URING,
	.init = uring_init,
	.fini = uring_fini,
	.bind = uring_bind,
	.submit = rio__uring_submit,
	.poll = rio__uring_poll,
	.wake = rio__uring_wake,
	.pool_init = rio__uring_pool_init,
	.pool_fini = rio__uring_pool_fini,
	.pool_put = rio__uring_pool_put,
	.resume = rio__uring_enqueue,
	.cancel = rio__uring_cancel,
};

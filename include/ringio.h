/*
 * ringio — a completion-based (proactor) I/O runtime.
 *
 * The caller submits operations on caller-owned `rio_op` structs and gets
 * exactly one completion per operation (one per result for multishot ops, the
 * last one without RIO_OP_F_MORE). A completion carries what an io_uring CQE
 * carries: res >= 0 is a byte count, an fd or 0; res < 0 is -errno.
 *
 * Threading: a loop belongs to the thread that first runs it, whichever
 * thread created it. Only rio_post(), rio_wakeup_send(), rio_loop_wake()
 * and rio_loop_stop() may be called from other threads; those four are
 * also async-signal-safe (a lock-free atomic and a write(2)), and no
 * other call is. rio_signal() takes signals without a handler.
 *
 * Errors: functions return 0 (or a count / fd) on success and -errno on
 * failure. A submit function returns -EINVAL or -EBUSY only for API misuse it
 * can see without the kernel (NULL op or callback, an op still in flight, an
 * unsupported combination); then the op is not taken and no callback will
 * run. Every other error — including ones found while submitting — is
 * delivered to the op's callback on a later turn of the loop, never from
 * inside the submit call.
 */
#ifndef RINGIO_H
#define RINGIO_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/uio.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(RINGIO_STATIC)
#define RIO_API
#elif defined(__GNUC__)
#define RIO_API __attribute__((visibility("default")))
#else
#define RIO_API
#endif

#define RINGIO_VERSION_MAJOR 0
#define RINGIO_VERSION_MINOR 2
#define RINGIO_VERSION_PATCH 0

typedef struct rio_loop rio_loop;
typedef struct rio_op rio_op;
typedef struct rio_bufpool rio_bufpool;

/*
 * Completion callback. `res` is the result (also stored in op->res). During a
 * multishot completion op->flags has RIO_OP_F_MORE set when more completions
 * will follow; the final one has it clear. After the final callback returns —
 * or from inside it, to resubmit — the op is the caller's again.
 */
typedef void rio_cb(rio_loop *loop, rio_op *op, int res);

/* ------------------------------------------------------------------ */
/* Loop                                                                */
/* ------------------------------------------------------------------ */

typedef enum rio_backend_kind {
	RIO_BACKEND_AUTO = 0, /* io_uring, else the readiness fallback */
	RIO_BACKEND_URING = 1,
	RIO_BACKEND_EPOLL = 2,
	RIO_BACKEND_KQUEUE = 3,
} rio_backend_kind;

/* Why the loop runs the backend it runs (rio_loop_backend()). */
typedef enum rio_backend_reason {
	RIO_REASON_DEFAULT = 0,      /* auto chose its first choice */
	RIO_REASON_REQUESTED = 1,    /* the options asked for this backend */
	RIO_REASON_ENV = 2,          /* RINGIO_BACKEND forced it */
	RIO_REASON_URING_ENOSYS = 3, /* kernel without io_uring */
	RIO_REASON_URING_EPERM = 4,  /* seccomp / container policy */
	RIO_REASON_URING_DISABLED = 5, /* kernel.io_uring_disabled */
	RIO_REASON_URING_MEMLOCK = 6,  /* RLIMIT_MEMLOCK too low */
	RIO_REASON_URING_PROBE = 7,    /* an opcode the runtime needs is missing */
	RIO_REASON_URING_FLAGS = 8,    /* setup rejected every flag set */
	RIO_REASON_FAULT = 9,          /* a test fault hook failed io_uring */
} rio_backend_reason;

typedef struct rio_loop_opts {
	rio_backend_kind backend; /* 0 = auto; RINGIO_BACKEND overrides it */
	unsigned sq_entries;      /* io_uring SQ size; 0 = 256 */
	unsigned cq_entries;      /* io_uring CQ size; 0 = 2 * sq_entries */
	unsigned flags;           /* reserved, must be 0 */
} rio_loop_opts;

/*
 * Create a loop, on any thread. It becomes the loop of the thread that first
 * runs it (rio_loop_run), on every backend; io_uring ties its ring to that
 * thread then (SINGLE_ISSUER, the registered ring fd). Before that first
 * run, the creating thread may create pools and submit ops (they wait in
 * user space when the ring is full) as long as it hands the loop over
 * properly (e.g. pthread_create). `opts` may be NULL for defaults. On
 * success stores the loop in *out and returns 0. Errors: -EINVAL (bad
 * options, out NULL, unknown RINGIO_BACKEND value), -ENOMEM,
 * -EMFILE/-ENFILE, -ENOSYS (the forced backend is not available on this
 * machine), or the error io_uring setup returned when io_uring was forced.
 */
RIO_API int rio_loop_create(rio_loop **out, const rio_loop_opts *opts);

/*
 * Destroy a loop with no user op in flight and no buffer pool. Returns
 * -EBUSY (and destroys nothing) while ops are in flight (run the loop until
 * they complete first) and while a buffer pool created on the loop still
 * exists (rio_bufpool_destroy() it first).
 */
RIO_API int rio_loop_destroy(rio_loop *loop);

typedef enum rio_run_mode {
	RIO_RUN_DEFAULT = 0, /* until no op is in flight, or rio_loop_stop() */
	RIO_RUN_ONCE = 1,    /* wait for at least one completion, dispatch */
	RIO_RUN_NOWAIT = 2,  /* dispatch what is ready, never block */
} rio_run_mode;

/*
 * Run the loop on the calling thread. Returns the number of user ops still
 * in flight (0: the loop is idle), -EPERM (and runs nothing) on a thread
 * other than the one that ran it first, -EBUSY from a callback, or -errno
 * if the backend failed (the loop is then unusable except for destroy).
 * Destroy the loop on that thread, or once that thread has exited: until
 * then io_uring keeps the ring registered to it.
 */
RIO_API int rio_loop_run(rio_loop *loop, rio_run_mode mode);

/* Make rio_loop_run() return after the current turn. Any thread. */
RIO_API void rio_loop_stop(rio_loop *loop);

/*
 * A forced stop: ask every user op in flight on the loop to end, as
 * rio_cancel() of each would, without a cancel op per target. Each ends
 * exactly once, with -ECANCELED, or with its own result when that was
 * already decided (data already received, a connection already accepted),
 * in later turns, never inside this call. A multishot op gets its final
 * completion; a relay or a connect_any ends as a cancel of it does; every
 * listener of the loop stops (its on_stop gets -ECANCELED). Closes,
 * shutdowns, cancels and posts in flight are left to end on their own
 * (none waits on a peer). Ops submitted after it returns, from the
 * callbacks it leads to (a close of the fd) or otherwise, are not touched.
 * Run the loop on afterwards: RIO_RUN_DEFAULT returns once those
 * callbacks have submitted nothing more, and rio_loop_destroy() succeeds.
 * Call it on the loop's thread (or before its first run, on the thread
 * that created it). Returns 0, -EINVAL for a NULL loop, or -EPERM on
 * another thread. Not async-signal-safe: call it from the callback of a
 * rio_signal() op, or of a rio_wakeup_start() op that a handler woke.
 */
RIO_API int rio_loop_cancel_all(rio_loop *loop);

/* Wake a loop blocked in rio_loop_run() for no particular work. Any thread. */
RIO_API void rio_loop_wake(rio_loop *loop);

/*
 * Hand work to the loop from any thread: `cb` runs on the loop's thread on a
 * later turn with res 0. A loop with posts pending refuses to be destroyed
 * (-EBUSY).
 * `op` must not be in flight. A posted op counts as in flight from the time
 * it is posted. Returns 0, or -EINVAL / -EBUSY for misuse.
 */
RIO_API int rio_post(rio_loop *loop, rio_op *op, rio_cb *cb);

/*
 * A wakeup handle (libuv's uv_async_t): `op` stays in flight, so
 * RIO_RUN_DEFAULT keeps running with nothing else to do, and completes
 * on the loop's thread, res 0 with RIO_OP_F_MORE, after rio_wakeup_send()
 * from any thread. Sends made before the callback runs are merged into
 * one completion, and one made while it runs brings another: after a
 * send, a callback always runs that sees what the sender did before it.
 * rio_cancel() ends it (final completion, -ECANCELED) after a send not
 * yet delivered, whose callback runs after rio_cancel() returns (none
 * runs inside it). A send after the cancel does nothing of its own.
 * `op` may be reused or freed once its final completion has run and no
 * thread is inside a send to it.
 * -EINVAL: NULL argument, a deadline on op.
 */
RIO_API int rio_wakeup_start(rio_loop *loop, rio_op *op, rio_cb *cb);

/* Wake `op` (rio_wakeup_start on `loop`): any thread, and from a signal
 * handler (a lock-free atomic and, for the first send of a merge, a
 * write(2)). Returns 0, or -EINVAL when op was not started by
 * rio_wakeup_start() on loop. */
RIO_API int rio_wakeup_send(rio_loop *loop, rio_op *op);

/*
 * Which backend runs and why. `reason` and `msg` may be NULL. The message is
 * human-readable, e.g. "io_uring (SINGLE_ISSUER|DEFER_TASKRUN|SUBMIT_ALL)"
 * or "epoll: io_uring_setup returned EPERM (kernel.io_uring_disabled=2)";
 * it lives as long as the loop.
 */
RIO_API rio_backend_kind rio_loop_backend(const rio_loop *loop,
					  rio_backend_reason *reason,
					  const char **msg);

/* A reason's name: "default", "requested", "env", "io_uring ENOSYS",
 * ...; NULL for an unknown value. */
RIO_API const char *rio_backend_reason_name(rio_backend_reason reason);

/* "auto", "uring", "epoll", "kqueue"; NULL for an unknown value. */
RIO_API const char *rio_backend_name(rio_backend_kind kind);

/* Parse a backend name as above. Returns the kind, or -EINVAL. */
RIO_API int rio_backend_parse(const char *name);

/* Per-loop counters; monotonic since rio_loop_create(). */
typedef struct rio_counters {
	uint64_t ops_submitted;    /* ops taken by submit calls and rio_post */
	uint64_t ops_completed;    /* final completions delivered */
	uint64_t completions;      /* callbacks run, multishot results included */
	uint64_t cq_overflows;     /* turns the kernel held CQEs in its backlog */
	uint64_t sq_full;          /* submits that found the SQ full (it was
				      flushed early, or the op waited) */
	uint64_t enobufs_rearms;   /* multishot recv re-armed after -ENOBUFS */
	uint64_t multishot_rearms; /* multishot ops re-armed after !F_MORE */
	uint64_t spurious_wakeups; /* fallback: readiness that was not */
	uint64_t enters;           /* io_uring_enter / epoll_wait calls */
	uint64_t wakeups;          /* cross-thread wakeups received */
	uint64_t faults_injected;  /* test builds: RINGIO_FAULTS injections */
} rio_counters;

/* Copy the loop's counters into *out. */
RIO_API void rio_loop_counters(const rio_loop *loop, rio_counters *out);

/* ------------------------------------------------------------------ */
/* Operations                                                          */
/* ------------------------------------------------------------------ */

#define RIO_OP_F_MORE 0x1u /* op->flags: more completions will follow */
#define RIO_OP_F_BUF 0x2u  /* op->flags: op->buf / op->buf_id hold data */
/* op->flags with res -ETIMEDOUT: ringio's own deadline ended the op (its
 * deadline_ns, a relay's idle_ns, a connect_any try's try_ns), not the
 * kernel's ETIMEDOUT (a TCP connect or retransmission timing out) */
#define RIO_OP_F_DEADLINE 0x8u

/* Submit flags. */
#define RIO_MULTISHOT 0x1u /* accept: multishot accept */

/*
 * The struct of type `type` whose member `member` is at `ptr`: from the
 * rio_op a callback gets back to the caller's struct that embeds it.
 *   struct conn *c = RIO_CONTAINER_OF(op, struct conn, recv_op);
 */
#define RIO_CONTAINER_OF(ptr, type, member) \
	((type *)(void *)((char *)(ptr) - offsetof(type, member)))

/*
 * An operation. Embed it in your own struct and find that struct again with
 * RIO_CONTAINER_OF; ringio allocates nothing per op. Zero it (or call
 * rio_op_init()) once before first use. The public fields are valid inside
 * the callback; the `priv` block belongs to ringio.
 */
struct rio_op {
	void *data;         /* the caller's, untouched by ringio */
	int res;            /* last result */
	unsigned flags;     /* RIO_OP_F_* of the current completion */
	void *buf;          /* RIO_OP_F_BUF: start of received data */
	uint16_t buf_id;    /* RIO_OP_F_BUF: give back with rio_bufpool_put */
	uint64_t deadline_ns; /* deadline, 0 = none: relative, or absolute
				 with RIO_DEADLINE_ABS. Set before submit */
	/* ringio's. Every field has one meaning whatever the op's kind and
	 * the backend: src/internal.h says which (ABI: soname 1). */
	struct {
		rio_cb *cb;
		rio_op *next, *prev;
		rio_op *live_next, *live_prev;
		uint64_t due_ns;
		union {
			struct {
				void *buf;
				size_t len;
				struct msghdr *msg;
				uint32_t done;
				int flags;
			} io;
			struct {
				struct sockaddr *addr;
				socklen_t *addrlen;
			} accept;
			struct {
				const struct sockaddr *addr;
				socklen_t addrlen;
			} connect;
			struct {
				struct rio_bufpool *pool;
				rio_op *canceller;
				uint32_t control;
			} multi;
			struct {
				const void *buf;
				size_t len;
				const struct sockaddr *to;
				socklen_t tolen;
				int flags;
			} sendto;
			struct {
				int pipe;
				uint32_t len;
			} splice;
			struct {
				uint32_t events;
			} poll;
			struct {
				int how;
			} shutdown;
			struct {
				int sig;
				uint32_t left;
			} signal;
			struct {
				rio_op *target;
				int ended_first;
			} cancel;
			struct {
				rio_op *next;
				uint32_t waiting;
			} close;
			struct {
				uint64_t ns;
			} timeout;
			struct {
				int (*cancel)(rio_loop *, rio_op *);
			} composite;
			struct {
				rio_op *next;
				rio_loop *loop;
				uint32_t pending;
			} wakeup;
		} a;
		union {
			struct {
				uint8_t cqes;
				uint8_t bits;
			} uring;
			struct {
				size_t heap_slot;
			} reactor;
		} be;
		int fd;
		uint32_t gen;
		uint32_t bits;
		int16_t fault_err;
		uint8_t kind;
		uint8_t state;
	} priv;
};

/* Zero an op. Never call it on an op in flight. */
RIO_API void rio_op_init(rio_op *op);

/*
 * Give the next submission of `op` a deadline `timeout_ns` from the moment it
 * is submitted; 0 removes it. The deadline stays on the op for later
 * submissions until changed. When it passes, the op completes with
 * -ETIMEDOUT and RIO_OP_F_DEADLINE in op->flags (which the kernel's own
 * ETIMEDOUT never has). Multishot ops and timeouts take no deadline (-EINVAL at
 * submit). Close and cancel accept one and ignore it: neither waits on a
 * peer, so both complete promptly.
 */
RIO_API void rio_op_set_deadline(rio_op *op, uint64_t timeout_ns);

/*
 * An absolute deadline: the op's next submissions end with -ETIMEDOUT
 * (RIO_OP_F_DEADLINE set) at `when_ns` on CLOCK_MONOTONIC (rio_now_ns()),
 * however late they are submitted; one passed already ends the op at
 * once. Give every op of a request the same `when_ns` for one deadline
 * over the whole request. It stays on the op until changed; a relative
 * one (rio_op_set_deadline) replaces it, and 0 there removes either. The
 * ops that take a relative deadline take this one.
 */
RIO_API void rio_op_set_deadline_at(rio_op *op, uint64_t when_ns);

/* In deadline_ns: the rest is a time on CLOCK_MONOTONIC, not a length. */
#define RIO_DEADLINE_ABS (1ull << 63)

/* Now on CLOCK_MONOTONIC, in nanoseconds: the clock of deadlines. */
RIO_API uint64_t rio_now_ns(void);

/* True while an op is submitted and its final completion has not run. */
RIO_API int rio_op_in_flight(const rio_op *op);

/*
 * Accept a connection on listening socket `fd`. One-shot: res is the new fd
 * (non-blocking, close-on-exec), and `addr`/`addrlen` (both may be NULL) are
 * filled in as accept4(2) does; they must stay valid until completion.
 * With RIO_MULTISHOT (`addr` and `addrlen` must be NULL): one completion per
 * accepted fd with RIO_OP_F_MORE set, re-armed transparently when the kernel
 * stops the stream, until an error, cancel or close ends it (final
 * completion, res < 0). Errors are accept4's.
 */
RIO_API int rio_accept(rio_loop *loop, rio_op *op, int fd,
		       struct sockaddr *addr, socklen_t *addrlen,
		       unsigned flags, rio_cb *cb);

/*
 * Connect socket `fd` (non-blocking) to `addr`, which must stay valid until
 * completion. res 0 on success; -ECONNREFUSED, -ETIMEDOUT, -ENETUNREACH, ...
 * -EAGAIN is a result, not retried, on every backend: an AF_UNIX listener
 * whose backlog is full (connect(2) does not wait there), or no local port
 * left; as nginx and haproxy do, try another address or later.
 */
RIO_API int rio_connect(rio_loop *loop, rio_op *op, int fd,
			const struct sockaddr *addr, socklen_t addrlen,
			rio_cb *cb);

/*
 * Receive up to `len` bytes into `buf` (valid until completion). res: bytes
 * received, 0 at end of stream, or -errno (-ECONNRESET, ...). `msg_flags`
 * are recv(2) flags. With MSG_WAITALL the op completes only when `len`
 * bytes have arrived, or with the bytes received so far at end of stream
 * or on an error (every backend; io_uring does this natively).
 */
RIO_API int rio_recv(rio_loop *loop, rio_op *op, int fd, void *buf,
		     size_t len, int msg_flags, rio_cb *cb);

/*
 * Send up to `len` bytes from `buf` (valid until completion). res: bytes
 * sent, which may be fewer than `len` — resubmit the rest, or pass
 * MSG_WAITALL to have the op complete only when all are sent (or with the
 * count sent before an error). MSG_NOSIGNAL is always added: a closed peer
 * gives -EPIPE, never SIGPIPE.
 */
RIO_API int rio_send(rio_loop *loop, rio_op *op, int fd, const void *buf,
		     size_t len, int msg_flags, rio_cb *cb);

/* sendmsg(2)/recvmsg(2); `msg` and what it points to stay valid until
 * completion. Results as for rio_send / rio_recv; MSG_NOSIGNAL is added to
 * sends. */
RIO_API int rio_sendmsg(rio_loop *loop, rio_op *op, int fd,
			const struct msghdr *msg, int msg_flags, rio_cb *cb);
RIO_API int rio_recvmsg(rio_loop *loop, rio_op *op, int fd,
			struct msghdr *msg, int msg_flags, rio_cb *cb);

/*
 * read(2) / write(2) through the loop, on any fd: pipes and FIFOs, ttys and
 * ptys, eventfd, character devices, sockets, and regular files (at and
 * past the file's offset; their reads and writes never wait). `buf`
 * (`len` bytes) stays valid until completion. res: bytes moved (a write
 * may move fewer: resubmit the rest), 0 at end of file, or -errno. Not
 * ready (an empty pipe, a full one) waits, never -EAGAIN; a deadline, a
 * cancel or a close through the loop ends the wait as for any op. A write
 * to a pipe whose reader is gone ends with -EPIPE and no SIGPIPE reaches
 * the process: the first rio_write on a thread blocks SIGPIPE there, and
 * one that fails with -EPIPE takes back the SIGPIPE it raised (as
 * rio_splice_out does). io_uring: IORING_OP_READ / IORING_OP_WRITE at the
 * file position; the fallback: the syscall, waiting on the poller.
 */
RIO_API int rio_read(rio_loop *loop, rio_op *op, int fd, void *buf,
		     size_t len, rio_cb *cb);
RIO_API int rio_write(rio_loop *loop, rio_op *op, int fd, const void *buf,
		      size_t len, rio_cb *cb);

/*
 * Multishot receive into buffers from `pool`. Each completion with res > 0
 * has RIO_OP_F_BUF set: op->buf holds res bytes and op->buf_id names the
 * buffer, which is the caller's until given back with rio_bufpool_put().
 * When the pool runs dry the receive pauses and resumes by itself once a
 * buffer is given back (counted in enobufs_rearms); -ENOBUFS never reaches
 * the callback. Final completion: res 0 (end of stream), -ECANCELED, or
 * another -errno. On a datagram socket (SOCK_DGRAM, SOCK_SEQPACKET) 0 is an
 * empty datagram, delivered with RIO_OP_F_MORE and no buffer (RIO_OP_F_BUF
 * clear): the receive goes on.
 * Results already received when a cancel is asked for
 * still arrive first: on io_uring the loop arms the recv for 4 buffers'
 * worth of bytes at a time and re-arms it itself (Linux 6.17+; older
 * kernels fill up to 32 buffers in one pass), so a cancel for
 * backpressure lands within a few buffers.
 */
RIO_API int rio_recv_multishot(rio_loop *loop, rio_op *op, int fd,
			       rio_bufpool *pool, rio_cb *cb);

/* ------------------------------------------------------------------ */
/* Datagrams                                                           */
/* ------------------------------------------------------------------ */

#define RIO_OP_F_TRUNC 0x4u /* op->flags: the datagram did not fit the
			       buffer and was cut (rio_dgram.full_len) */

/*
 * Bytes a datagram receive keeps at the start of each pool buffer, before
 * the control data and the payload: a header (the real lengths, recvmsg's
 * flags) and the sender's address. The layout is io_uring's
 * (struct io_uring_recvmsg_out), on every backend.
 */
#define RIO_DGRAM_HEADROOM 144

/*
 * Multishot receive of datagrams on a datagram socket (SOCK_DGRAM or
 * SOCK_SEQPACKET: UDP, unix datagram) into buffers from `pool`, each with
 * its sender's address and up to `control_len` bytes of control data
 * (ancillary messages the socket was asked for: IP_PKTINFO, timestamps,
 * SCM_RIGHTS; 0 for none). No msghdr to build: one completion per
 * datagram, with RIO_OP_F_MORE and RIO_OP_F_BUF set; res is the payload's
 * bytes in op->buf (0: an empty datagram, which is a datagram too), and
 * op->buf_id the buffer, the caller's until rio_bufpool_put(). From the
 * callback rio_dgram_get() gives the sender and the control data, which
 * live in the same buffer. A datagram longer than a buffer's room for
 * payload (rio_bufpool_size() - RIO_DGRAM_HEADROOM - control_len rounded
 * up to 8) is cut to it, with RIO_OP_F_TRUNC set and its real length in
 * rio_dgram.full_len. A dry pool parks the receive until a buffer is given
 * back, as for rio_recv_multishot(); datagrams wait in the socket's
 * receive buffer meanwhile (past its size the kernel drops them, as for
 * any datagram socket). Several may be pending on one socket: each
 * datagram goes to exactly one. Final completion: -ECANCELED (a cancel, a
 * close through the loop) or another -errno. -EINVAL at submit: no pool,
 * another loop's pool, buffers with no room for payload, control_len over
 * 64 KiB, a deadline, or a stream socket. io_uring: IORING_OP_RECVMSG with
 * IORING_RECV_MULTISHOT; the fallback: recvmmsg(2), up to 32 datagrams a
 * call.
 */
RIO_API int rio_recvmsg_multishot(rio_loop *loop, rio_op *op, int fd,
				  rio_bufpool *pool, size_t control_len,
				  rio_cb *cb);

/* One received datagram, as rio_dgram_get() describes it. The pointers are
 * into its pool buffer: valid until the buffer is given back. */
typedef struct rio_dgram {
	void *data;                  /* the payload (op->buf) */
	size_t len;                  /* its bytes in the buffer (res) */
	size_t full_len;             /* the datagram's length: > len when
					it was cut (MSG_TRUNC) */
	const struct sockaddr *peer; /* the sender; NULL when it has no
					address (an unbound unix socket) */
	socklen_t peer_len;
	void *control;               /* control data: walk it with
					CMSG_FIRSTHDR on a msghdr whose
					msg_control, msg_controllen are these */
	size_t control_len;
	int msg_flags;               /* recvmsg(2)'s: MSG_TRUNC, MSG_CTRUNC
					(control data cut to control_len) */
} rio_dgram;

/* In a rio_recvmsg_multishot() callback with RIO_OP_F_BUF set: what
 * arrived. Returns 0, or -EINVAL when op's current completion holds no
 * datagram. */
RIO_API int rio_dgram_get(const rio_op *op, rio_dgram *out);

/*
 * Send `len` bytes from `buf` as one datagram to `to` (`tolen` bytes; NULL
 * and 0 on a connected socket). `buf` and `to` stay valid until completion:
 * a received datagram's payload and sender may be passed as they are while
 * its buffer is held. res: `len` (a datagram goes whole or not at all), or
 * -errno: -EMSGSIZE, -ECONNREFUSED (on a connected socket, an ICMP error
 * of an earlier datagram), -EDESTADDRREQ, ... A full send buffer is waited
 * out, never -EAGAIN. MSG_NOSIGNAL is added; MSG_WAITALL is -EINVAL.
 * Sends are batched: io_uring takes a turn's SQEs in one io_uring_enter;
 * the fallback sends what a turn queued on one socket with sendmmsg(2).
 */
RIO_API int rio_sendto(rio_loop *loop, rio_op *op, int fd, const void *buf,
		       size_t len, int msg_flags, const struct sockaddr *to,
		       socklen_t tolen, rio_cb *cb);

/*
 * Zero-copy relay through a pipe (Linux splice(2)): bytes go from one
 * socket into a pipe and from the pipe to another socket without being
 * copied through user memory. Use the pipe as a relay: rio_splice_in into
 * an empty pipe, then rio_splice_out until it is empty again.
 *
 * rio_splice_in moves up to `len` bytes from socket `sock` into the write
 * end `pipe_w`, waiting (as a recv does) until `sock` has data. res: bytes
 * moved, 0 at end of stream, or -errno (-ECONNRESET, ...).
 * rio_splice_out moves up to `len` bytes from the read end `pipe_r` to
 * socket `sock`, waiting (as a send does) for room in `sock`. res: bytes
 * moved, which may be fewer than `len`, or -errno (-EPIPE, ...).
 *
 * Both pipe ends must be non-blocking. A pipe that is not ready when the
 * socket is (splice_in into a pipe that holds data, splice_out from an
 * empty pipe) completes the op with -ENOBUFS / -ENODATA instead of
 * waiting for ever. `len` must be > 0 (at most INT_MAX is moved). A
 * splice into a socket cannot say MSG_NOSIGNAL: the first rio_splice_out
 * on a thread blocks SIGPIPE on that thread, and a splice that fails with
 * -EPIPE takes back the SIGPIPE it raised. The op
 * belongs to `sock`: a close of `sock` through the loop cancels it, and a
 * deadline applies. On io_uring the splice itself runs on the loop's
 * thread once the ring reports the socket ready: IORING_OP_SPLICE always
 * hands the work to an io-wq worker thread, which costs a thread switch
 * per call. Not on kqueue: the op completes with -EOPNOTSUPP.
 */
RIO_API int rio_splice_in(rio_loop *loop, rio_op *op, int sock, int pipe_w,
			  size_t len, rio_cb *cb);
RIO_API int rio_splice_out(rio_loop *loop, rio_op *op, int pipe_r, int sock,
			   size_t len, rio_cb *cb);

/*
 * Wait until `fd` is ready for any of `events` (POLLIN, POLLOUT, POLLPRI;
 * POLLERR, POLLHUP and POLLRDHUP are always reported: poll(2) reports the
 * first two, and io_uring reports a peer's FIN to any poll). One
 * completion: res is the ready mask (> 0, only those bits), or -errno
 * (-EBADF: fd not open; -EINVAL: another bit in `events`). A deadline, a
 * cancel or a close ends it as any op. Readiness is a hint on every
 * backend: the next op may still find nothing to do. With `events` 0 it
 * watches for errors and hang-ups only, which data does not end: a reset
 * (POLLERR; SO_ERROR says which) or a FIN (POLLRDHUP) noticed while no
 * read is pending.
 */
RIO_API int rio_poll(rio_loop *loop, rio_op *op, int fd, unsigned events,
		     rio_cb *cb);

/*
 * shutdown(2) of socket `fd` through the loop: `how` is SHUT_RD, SHUT_WR or
 * SHUT_RDWR. One completion: 0, or -errno (-ENOTCONN: not connected,
 * -ENOTSOCK, -EBADF). It runs in submission order after the ops submitted
 * before it that the kernel has already started; a send still waiting for
 * room when it runs fails with -EPIPE. So to send a FIN after the data,
 * submit it once the last send has completed (from its callback). It
 * takes no deadline (it never waits). Calling shutdown(2) yourself on a
 * socket the loop has ops on is allowed too, and has the same effect; the
 * op keeps it in order with the loop's other ops on io_uring, where
 * submissions reach the kernel in batches. -EINVAL: `how` is none of the
 * three.
 */
RIO_API int rio_shutdown(rio_loop *loop, rio_op *op, int fd, int how,
			 rio_cb *cb);

/* A signal's bit in rio_signal()'s mask: RIO_SIG(SIGINT) | RIO_SIG(SIGTERM). */
#define RIO_SIG(signo) (1ull << ((signo) - 1))

/*
 * Signals as completions, in place of a handler: a multishot op with one
 * completion per delivered signal of `sigs` (RIO_SIG bits: signals 1..64),
 * RIO_OP_F_MORE set and res the signal's number, until rio_cancel() ends
 * it (final completion, -ECANCELED) or an error does. The signals must be
 * blocked in every thread, or the kernel hands them to a thread that has
 * them unblocked (a handler, or the default action: SIGINT ends the
 * process) instead: rio_signal blocks them in the calling thread, so call
 * it (or block them with pthread_sigmask) before creating threads, which
 * inherit the mask. It never unblocks them. Standard signals sent while
 * one is pending arrive as one, as ever; real-time signals (SIGRTMIN..)
 * each arrive. Several loops may watch one signal: each delivery goes to
 * one of them. Linux: a signalfd(2) of the op's own (watched by a
 * multishot poll on io_uring, by the poller on the fallback); native
 * kqueue: EVFILT_SIGNAL, in a kqueue of the op's own; either is closed at
 * its final completion. -EINVAL at submit: no signal in `sigs`, a bit
 * past the system's last signal, a deadline.
 */
RIO_API int rio_signal(rio_loop *loop, rio_op *op, uint64_t sigs,
		       rio_cb *cb);

/*
 * Close `fd` through the loop. Every op of this loop still pending on `fd`
 * first completes with -ECANCELED (or its real result if it finished
 * first); then this op completes with close(2)'s result. Do not reuse `fd`
 * for anything until this op completes.
 */
RIO_API int rio_close(rio_loop *loop, rio_op *op, int fd, rio_cb *cb);

/*
 * A timer: completes with 0 after `timeout_ns` (relative), or -ECANCELED
 * when cancelled first.
 */
RIO_API int rio_timeout(rio_loop *loop, rio_op *op, uint64_t timeout_ns,
			rio_cb *cb);

/*
 * Cancel `target`. This op completes with 0 if the target was found and
 * cancelled, -ENOENT if the target was not in flight when the cancel was
 * submitted (its final callback had run, or it was never submitted), or
 * -EALREADY if it was in flight but could not be stopped (the kernel had
 * finished or was running it; the same on every backend). The target
 * completes exactly once either way: with
 * -ECANCELED, or with its real result if it finished first.
 */
RIO_API int rio_cancel(rio_loop *loop, rio_op *op, rio_op *target,
		       rio_cb *cb);

/* ------------------------------------------------------------------ */
/* Provided-buffer pools (multishot receive)                           */
/* ------------------------------------------------------------------ */

/*
 * Create a pool of `count` buffers (a power of two, 1..32768) of `size`
 * bytes each (1 .. 1 GiB) for use by ops of `loop`. Returns 0 and stores it
 * in *out, or -EINVAL, -ENOMEM, or the kernel's error for the buffer ring
 * (-EINVAL on kernels before 5.19).
 */
RIO_API int rio_bufpool_create(rio_loop *loop, unsigned count, size_t size,
			       rio_bufpool **out);

/*
 * Destroy a pool. Returns -EBUSY while an op that uses it is in flight.
 */
RIO_API int rio_bufpool_destroy(rio_bufpool *pool);

/* Give buffer `id` back to the pool (loop thread only). Returns 0, or
 * -EINVAL for an id that is out of range or not lent out. */
RIO_API int rio_bufpool_put(rio_bufpool *pool, uint16_t id);

/* The address of buffer `id`, and the size of every buffer. */
RIO_API void *rio_bufpool_buf(const rio_bufpool *pool, uint16_t id);
RIO_API size_t rio_bufpool_size(const rio_bufpool *pool);

/* ------------------------------------------------------------------ */
/* Listener: the accept policy                                         */
/* ------------------------------------------------------------------ */

/*
 * A listener accepts on a listening socket for as long as that socket
 * exists (multishot accept on io_uring) and applies one policy to accept's
 * errors, the same on every backend:
 *
 *   client's fault  ECONNABORTED EPROTO ECONNRESET EPERM EINTR, and
 *                   ENOTCONN (reset before its address could be read)
 *                   -> counted, accept again at once (after 256 of these
 *                   and network errors in a row with no accept between,
 *                   a pause as for load: an error that does not use up
 *                   its connection must not spin)
 *   network         ENETDOWN ENETUNREACH EHOSTDOWN EHOSTUNREACH ENONET
 *                   ENOPROTOOPT EOPNOTSUPP ETIMEDOUT (Linux passes a new
 *                   connection's pending error through accept)
 *                   -> counted, accept again at once
 *   load            EMFILE ENFILE ENOBUFS ENOMEM (and any error not named
 *                   here) -> accepting pauses; it resumes after a backoff
 *                   timer (backoff_ms_min, doubling per consecutive load
 *                   error up to backoff_ms_max) or as soon as the owner
 *                   releases a connection (rio_listener_release); never a
 *                   busy loop
 *   fatal           EBADF ENOTSOCK EINVAL EFAULT, or the accept cancelled
 *                   by someone else (-ECANCELED: the socket was closed
 *                   through the loop) -> the listener stops and reports
 *                   the error to on_stop; the loop and every other op go on
 *
 * Nothing the listener does blocks, and it does no per-connection work: the
 * owner runs each connection's first read or handshake as its own ops,
 * with its own deadline (rio_op_set_deadline), so a slow or silent client
 * holds up nobody.
 *
 * The listener counts as in flight on its loop (rio_loop_run keeps running)
 * from rio_listener_start until on_stop has run. It never closes `fd`.
 */
typedef struct rio_listener rio_listener;

/* A new connection on `loop`: `fd` is non-blocking and close-on-exec, and
 * the owner's; `peer` (`peer_len` bytes, valid during the call) is the
 * client's address, as getpeername(2) gives it. Call
 * rio_listener_release() when it is closed. A connection the client reset
 * before it could be handed out is closed by the listener and counted as
 * a client error (ENOTCONN); on_accept never sees it. */
typedef void rio_listener_accept_cb(rio_listener *l, rio_loop *loop, int fd,
				    const struct sockaddr *peer,
				    socklen_t peer_len, void *data);

/* The listener has stopped: `err` is 0 after rio_listener_stop(), or the
 * fatal -errno that stopped it. Runs exactly once, never from inside
 * rio_listener_start or rio_listener_stop. The listener may be destroyed
 * from here on (also from inside this callback). */
typedef void rio_listener_stop_cb(rio_listener *l, int err, void *data);

typedef struct rio_listener_opts {
	rio_listener_accept_cb *on_accept; /* required */
	rio_listener_stop_cb *on_stop;     /* may be NULL */
	void *data;                        /* passed to both callbacks */
	uint32_t max_conns;      /* pause at this many unreleased connections;
				    0 = no limit */
	uint32_t backoff_ms_min; /* first pause after a load error; 0 = 10 */
	uint32_t backoff_ms_max; /* longest pause; 0 = 1000 */
} rio_listener_opts;

typedef struct rio_accept_counters {
	uint64_t accepted;       /* connections handed to on_accept */
	uint64_t client_errors;  /* client's-fault errors, accepted again */
	uint64_t network_errors; /* network errors, accepted again */
	uint64_t load_errors;    /* load errors (each started a pause) */
	uint64_t error_pauses;   /* pauses after 256 client/network errors
				    in a row with no accept between */
	uint64_t early_resumes;  /* pauses ended early by a release */
	uint64_t limit_pauses;   /* pauses at max_conns */
	uint64_t shed;           /* accepted while stopping or over the limit
				    (a race with the kernel): closed at once */
	uint64_t fatal_errors;   /* 0 or 1 */
	uint32_t live;           /* connections not yet released */
	int last_error;          /* the latest accept error, 0 if none */
} rio_accept_counters;

/*
 * Start accepting on listening socket `fd` on `loop`. On success stores the
 * listener in *out and returns 0. Errors: -EINVAL (NULL loop, out, opts or
 * on_accept; fd < 0; backoff_ms_min > backoff_ms_max once defaults are
 * applied), -ENOMEM. An error of the socket itself (not listening, closed)
 * arrives through on_stop.
 */
RIO_API int rio_listener_start(rio_loop *loop, int fd,
			       const rio_listener_opts *opts,
			       rio_listener **out);

/*
 * Stop accepting: the pending accept and any backoff timer are cancelled,
 * and on_stop(l, 0) runs on a later turn. Connections already handed out
 * are the owner's and untouched. Returns 0, or -EALREADY when the listener
 * is already stopping or stopped.
 */
RIO_API int rio_listener_stop(rio_listener *l);

/*
 * The owner closed a connection this listener handed out. If accepting is
 * paused for load or at max_conns, it resumes now. Returns 0, or -EINVAL
 * when no connection is outstanding.
 */
RIO_API int rio_listener_release(rio_listener *l);

/* Copy the listener's counters into *out. */
RIO_API void rio_listener_counters(const rio_listener *l,
				   rio_accept_counters *out);

/* The listening fd the listener was started on. */
RIO_API int rio_listener_fd(const rio_listener *l);

/*
 * Free a stopped listener (after on_stop ran, or from inside on_stop).
 * Returns -EBUSY, freeing nothing, while it still runs; stop it first.
 * Connections it accepted may still be out: then the owner still calls
 * rio_listener_release() once for each as it closes it (the only call
 * allowed on a destroyed listener), and the last release frees it.
 */
RIO_API int rio_listener_destroy(rio_listener *l);

/* ------------------------------------------------------------------ */
/* Relay: bytes between two connected sockets, both ways              */
/* ------------------------------------------------------------------ */

/*
 * A relay moves bytes from socket `a` to socket `b` and from `b` to `a`
 * until both directions have ended, on every backend. It is a composite
 * op: the caller owns the struct (embed it; ringio allocates nothing), and
 * r->op gets exactly one completion, when every op the relay had in
 * flight has completed:
 *
 *   0             both directions reached end of stream, each FIN carried
 *                 through as shutdown(SHUT_WR) on the other socket
 *   -ETIMEDOUT    no byte moved either way for opts.idle_ns
 *   -ECANCELED    rio_cancel() on r->op, rio_relay_drain() finished, or
 *                 either socket closed through the loop (rio_close)
 *   other -errno  the first error of either socket (-ECONNRESET, -EPIPE,
 *                 ...); a reset is noticed even while reads are paused
 *
 * The relay never closes `a` or `b`: close them in the callback (or later).
 * With a == b it echoes: one direction, from the socket back to itself.
 *
 * Each direction copies through opts.pool (a multishot recv; each buffer
 * is sent on as it arrives, then given back) or splices through a pipe of
 * its own (RIO_SPLICE_*). Backpressure: while a direction holds
 * RIO_RELAY_Q_HIGH received buffers not yet sent (RIO_RELAY_Q_TIGHT while
 * three quarters of the pool are lent out) it stops reading, and reads
 * again once it is down to RIO_RELAY_Q_LOW: the bytes wait in the kernel
 * and TCP's window stops the sender. Memory is bounded by the pool, not
 * by the number of relays; a quiet relay holds no buffer.
 */
typedef enum rio_splice_mode {
	RIO_SPLICE_AUTO = 0, /* copy; splice from the first recv that fills a
				whole buffer on (bulk), for good */
	RIO_SPLICE_ON,       /* splice from the first byte (copy if no pipe) */
	RIO_SPLICE_OFF,      /* always copy */
} rio_splice_mode;

enum { RIO_RELAY_Q_HIGH = 4, RIO_RELAY_Q_TIGHT = 2, RIO_RELAY_Q_LOW = 1 };

typedef struct rio_relay_opts {
	rio_bufpool *pool;      /* required: a pool of the relay's loop */
	rio_splice_mode splice;
	uint64_t idle_ns;       /* end with -ETIMEDOUT after this long with no
				   byte moved; 0 = never */
} rio_relay_opts;

typedef struct rio_relay_counters {
	uint64_t bytes[2];   /* sent on: [0] from a to b, [1] from b to a */
	uint64_t copies;     /* sends from pool buffers */
	uint64_t splices;    /* splices out of a pipe */
	uint8_t spliced[2];  /* the direction moved to a pipe */
	uint8_t eof[2];      /* the direction's end of stream was carried */
	int8_t failed;       /* which socket failed first: 0 (a), 1 (b), or
				-1 (none, or not a socket's error) */
} rio_relay_counters;

typedef struct rio_relay {
	rio_op op;  /* the relay's one completion; rio_cancel() ends it */
	/* ringio's: state, queues and the relay's own ops */
	union {
		uint64_t u64[192];
		void *p;
	} priv;
} rio_relay;

/*
 * Start relaying between connected sockets `a` and `b` (a == b: echo).
 * `opts` is copied. Returns 0, or -EINVAL (NULL loop, r, opts, pool or
 * cb; a pool of another loop; fd < 0; a deadline on r->op: use idle_ns),
 * -EBUSY (r->op in flight). Errors of the sockets arrive through cb.
 */
RIO_API int rio_relay_start(rio_loop *loop, rio_relay *r, int a, int b,
			    const rio_relay_opts *opts, rio_cb *cb);

/*
 * Stop reading; send on what was already received; then complete with
 * -ECANCELED (a graceful stop). Returns 0, -EALREADY when the relay is
 * already ending, or -ENOENT when it is not running.
 */
RIO_API int rio_relay_drain(rio_relay *r);

/* Bytes received and not yet sent (queued buffers, a pipe's content). */
RIO_API size_t rio_relay_pending(const rio_relay *r);

/* What the relay moved so far (valid in and after its completion). */
RIO_API void rio_relay_get_counters(const rio_relay *r,
				    rio_relay_counters *out);

/* ------------------------------------------------------------------ */
/* Upstreams: connect to the first of a list that answers             */
/* ------------------------------------------------------------------ */

/* An address, as rio_addr_parse() makes it. */
typedef struct rio_addr {
	struct sockaddr_storage ss;
	socklen_t len;
} rio_addr;

/*
 * Parse "1.2.3.4:80" or "[::1]:80" (numeric; no DNS), "unix:PATH" (a
 * unix-domain socket's file) or "unix:@NAME" (Linux's abstract namespace:
 * no file; the name is the bytes after '@') into *out. Returns 0, or
 * -EINVAL (no port, port > 65535, IPv6 without brackets, an empty unix
 * name, ...) or -ENAMETOOLONG (a unix path of 108 bytes or more, a name
 * of more than 107).
 */
RIO_API int rio_addr_parse(const char *text, rio_addr *out);

/*
 * Format `a` as rio_addr_parse() reads it ("1.2.3.4:80", "[::1]:80",
 * "unix:/run/x.sock", "unix:@name") into buf. Returns the length, or
 * -EINVAL (another family, a length that does not fit it, an abstract
 * name with a NUL byte inside) / -ENOSPC.
 */
RIO_API int rio_addr_format(const rio_addr *a, char *buf, size_t len);

/*
 * A list of upstream addresses and what the loop learnt of them: where the
 * round robin stands, which failed lately. One set per loop (not shared
 * between threads).
 */
typedef struct rio_upstreams rio_upstreams;

typedef struct rio_upstreams_opts {
	uint64_t try_ns;   /* each connect's deadline; 0 = 3 s */
	uint64_t retry_ns; /* a failed address is tried only after the
			      others for this long; 0 = 10 s */
	unsigned first;    /* where the round robin starts (mod n): loops
			      with their own sets of the same list start
			      on different addresses */
} rio_upstreams_opts;

typedef struct rio_upstream_counters {
	uint64_t connected;   /* connects that succeeded */
	uint64_t refused;     /* -ECONNREFUSED */
	uint64_t timeouts;    /* -ETIMEDOUT (try_ns passed) */
	uint64_t other;       /* any other error of a try */
	uint64_t exhausted;   /* rio_connect_any that found none answering */
} rio_upstream_counters;

/* Copies `addrs` (1..64 of them). `opts` may be NULL. Returns 0 or -EINVAL,
 * -ENOMEM. */
RIO_API int rio_upstreams_create(const rio_addr *addrs, unsigned n,
				 const rio_upstreams_opts *opts,
				 rio_upstreams **out);
/* -EBUSY while a rio_connect_any() on it is in flight. */
RIO_API int rio_upstreams_destroy(rio_upstreams *u);
/* Totals over the set, or for address `i` (i < 0: the whole set; one
 * address's `exhausted` is 0; an `i` past the set gives zeros). */
RIO_API void rio_upstreams_counters(const rio_upstreams *u, int i,
				    rio_upstream_counters *out);

typedef struct rio_connector {
	rio_op op;    /* the one completion: res is the connected fd
			 (non-blocking, close-on-exec, the caller's) or the
			 last try's -errno; rio_cancel() ends it */
	int upstream; /* in the completion: the index tried last (-1:
			 none was) */
	/* ringio's: its two inner ops (a try, a cancel's close) and state */
	union {
		uint64_t u64[48];
		void *p;
	} priv;
} rio_connector;

/*
 * Connect to one of `u`'s addresses: each call starts one on from the last
 * (round robin); an address that failed within retry_ns is tried only after
 * every other; each try has try_ns and is verified as rio_connect() is, on
 * every backend. The first that connects completes c->op with its fd; when
 * all have failed, with the last error (u's `exhausted` counts it). A
 * socket that cannot be made for want of resources (-EMFILE, -ENFILE,
 * -ENOBUFS, -ENOMEM) ends it at once with that error, marking no address
 * down. A cancel closes the socket being tried (through the loop) and ends
 * it with -ECANCELED, counting no try. `u` must outlive the call. Returns
 * 0, -EINVAL (NULL argument; a deadline on c->op: try_ns bounds each try),
 * or -EBUSY (c->op in flight).
 */
RIO_API int rio_connect_any(rio_loop *loop, rio_connector *c,
			    rio_upstreams *u, rio_cb *cb);

/* ------------------------------------------------------------------ */
/* Socket helpers                                                      */
/* ------------------------------------------------------------------ */

#define RIO_SOCK_REUSEPORT 0x1u /* SO_REUSEPORT, for one loop per thread */
#define RIO_SOCK_V6ONLY 0x2u    /* IPV6_V6ONLY on an IPv6 listener */
#define RIO_SOCK_UNLINK 0x4u    /* unix path: remove a stale socket file */

/*
 * Fill `*ss` and `*len` from a numeric IPv4 or IPv6 address (no DNS) and a
 * port. `host` NULL means 127.0.0.1. Returns 0 or -EINVAL.
 */
RIO_API int rio_sockaddr(const char *host, uint16_t port,
			 struct sockaddr_storage *ss, socklen_t *len);

/*
 * Create a non-blocking, close-on-exec TCP listener on host:port with
 * SO_REUSEADDR (and SO_REUSEPORT / IPV6_V6ONLY per `flags`). port 0 picks a
 * free port (see rio_local_port). backlog <= 0 means SOMAXCONN. Returns the
 * fd, or -errno (-EINVAL for a bad address, -EADDRINUSE, ...).
 */
RIO_API int rio_listen_tcp(const char *host, uint16_t port, int backlog,
			   unsigned flags);

/*
 * The same on an address rio_addr_parse() made: IPv4 or IPv6 (flags
 * RIO_SOCK_REUSEPORT, RIO_SOCK_V6ONLY), or a unix-domain stream listener
 * (flag RIO_SOCK_UNLINK; no SO_REUSEADDR there). A unix path is a file:
 * bind() makes it and fails with -EADDRINUSE while it exists; ringio never
 * removes one on its own. RIO_SOCK_UNLINK first removes a socket file that
 * no one listens on (a connect to it is refused: left by a process that is
 * gone), never anything else; removing the file after closing the listener
 * is the caller's. An abstract name ("unix:@name") has no file and
 * vanishes with its last socket. Other flags: -EINVAL.
 */
RIO_API int rio_listen_addr(const rio_addr *a, int backlog, unsigned flags);

/*
 * A non-blocking, close-on-exec datagram socket of `family`, unbound:
 * AF_INET or AF_INET6 (UDP; the first send picks its port; an IPv6 one
 * also reaches IPv4 peers, as ::ffff:a.b.c.d), or AF_UNIX, bound at once
 * to an abstract name the kernel picks, so that replies can reach it.
 * Returns the fd or -errno (-EINVAL for another family).
 */
RIO_API int rio_socket_dgram(int family);

/*
 * A non-blocking, close-on-exec UDP socket bound to host:port (host NULL:
 * 127.0.0.1; port 0 picks one, see rio_local_port). On "::" it takes IPv4
 * too (senders appear as ::ffff:a.b.c.d) unless RIO_SOCK_V6ONLY. Flags
 * RIO_SOCK_REUSEPORT (one socket per thread on one port: the kernel
 * spreads senders by address), RIO_SOCK_V6ONLY. Returns the fd or -errno.
 */
RIO_API int rio_bind_udp(const char *host, uint16_t port, unsigned flags);

/* The same on an address rio_addr_parse() made: UDP, or a unix datagram
 * socket on a path (RIO_SOCK_UNLINK as for rio_listen_addr) or an
 * abstract name. Other flags: -EINVAL. */
RIO_API int rio_bind_dgram(const rio_addr *a, unsigned flags);

/* Create a non-blocking, close-on-exec TCP socket of `family` (AF_INET or
 * AF_INET6). Returns the fd or -errno. */
RIO_API int rio_socket_tcp(int family);

/* The local port a socket is bound to, or -errno. */
RIO_API int rio_local_port(int fd);

/* Set or clear O_NONBLOCK / TCP_NODELAY. Return 0 or -errno. */
RIO_API int rio_set_nonblock(int fd, int on);
RIO_API int rio_set_nodelay(int fd, int on);

/* strerror for a -errno value; never NULL. */
RIO_API const char *rio_strerror(int res);

#ifdef __cplusplus
}
#endif
#endif /* RINGIO_H */

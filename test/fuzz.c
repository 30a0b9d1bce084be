/*
 * fuzz — the differential backend fuzzer.
 *
 * A seed makes a random program of ops, on the public API only, over a
 * handful of sockets: TCP pairs on loopback, AF_UNIX stream and datagram
 * pairs, a TCP listener (one-shot and multishot accept) and connects (to a
 * listener, to a port nobody listens on). Ops: recv, recvmsg, send,
 * sendmsg, multishot recv on small pools that run dry, poll, splice
 * through a pipe, close, cancel, timeouts, deadlines (short ones that fire,
 * long ones that do not), rio_post from another thread. Several ops pend
 * on one fd; a close's callback opens the next socket at once, so it gets
 * the number just closed; peers stall, half-close, close or reset.
 * Relays (rio_relay, see "Relays" below) between two of these sockets,
 * from a random stream of their own: started, fed and starved by their
 * peers, cancelled, drained, or cut by a close of one of their sockets.
 * Cancel-all steps (rio_loop_cancel_all, see "Cancel-all" below), from a
 * third stream: a step of their own, with no other action and no peer
 * activity, that ends everything in flight (ops, relays, the listener)
 * at once, and must not touch the ops submitted right after it; the
 * program goes on after it, and in some seeds the last step before the
 * teardown is one.
 * Datagram multishot receives (rio_recvmsg_multishot, see "Datagram
 * multishot" below), from a fourth stream: on the unix datagram sockets
 * of the other actions and on UDP pairs of their own, into the same pools
 * the stream multishot recvs use (so some were lent to the kernel by one,
 * some never were); each datagram checked whole, cut where the buffer's
 * room says, with its sender; buffers held a while; cancels, closes and
 * cancel-alls end them as any multishot op.
 *
 * The program runs in steps. A step does a few actions (submits, and the
 * peers' plain syscalls), then runs the loop until it is quiet: nothing
 * completes for a few turns and every short deadline has passed. On
 * loopback the kernel does its part synchronously, so what completes in a
 * step does not depend on timing, only on the program; the generator
 * never puts a cancel or a close in the same step as peer activity on
 * that socket, where "-ECANCELED or the real result" would be a race.
 *
 * The same seed runs on every backend this build has (io_uring, epoll,
 * kqueue), and the fuzzer checks:
 *   - the contract on each backend: every op completes exactly once, never
 *     from inside a submit call; a close completes after every op that was
 *     pending on its fd, and -ECANCELED reaches only ops a cancel, a
 *     close or a cancel-all ended; no result the contract does not list
 *     (a stray -EAGAIN, -EINTR, -ENOBUFS); bytes arrive whole and in
 *     order in both directions; nothing stays pending that could complete
 *     (a recv with data waiting, an accept with a connection queued);
 *     a cancel-all's step ends every op and relay it found in flight,
 *     and the listener's on_stop gets -ECANCELED; at the end every
 *     op drains, the loop's counters balance and no fd is left open;
 *     a relay completes once, with a result its program allows (0 only
 *     after both FINs were carried, -ECANCELED only when asked), and its
 *     peers get exactly the bytes its counters say it sent on, in order,
 *     then the FIN where it carried one; no pool buffer stays lent;
 *   - the same canonical trace on every backend: per op, its kind, the
 *     step it was submitted and completed in, its result class and byte
 *     count; per socket, what its peer saw. Where the contract leaves a
 *     choice (several reads pending on one socket: which gets the bytes
 *     and which the EOF), the trace keeps per-socket totals instead;
 *     per relay, its result and the bytes each peer got (less where
 *     timing decides: see rl_trace()).
 *
 * With --faults PLAN (a RINGIO_FAULTS plan: the loop's fault hooks make
 * the backends misbehave as the kernel can) the per-backend checks run;
 * traces are not compared, as each backend draws its faults differently.
 *
 * A failure prints the one command that replays it. Seeds that found
 * bugs are kept in test/fuzz_seeds.txt and replayed by ctest.
 *
 *   fuzz [--seed N | --seeds N [--first S] | --seconds S [--first S]]
 *        [--seed-file F] [--backends uring,epoll,kqueue|all]
 *        [--faults PLAN] [--steps N] [--no-relay] [--no-cancel-all]
 *        [--no-dgram-multi] [--relay-no-close-after-fin] [-v]
 *
 * --no-relay runs the programs as they were before relays (a quarter of
 * the seeds have none anyway: those are the old programs exactly).
 * --no-cancel-all runs them as they were before cancel-all steps (which
 * only add steps: a seed that draws none runs its old program exactly).
 * --no-dgram-multi runs them as they were before datagram multishot steps
 * (the same: only added, a seed that draws none runs its old program).
 *
 * Exit status: 0 all passed, 1 a check failed, 2 bad usage.
 */
#define _GNU_SOURCE
#include <ringio.h>

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#define MAXCH_MAIN 40  /* channels the other actions may have */
#define MAXCH_RL 24    /* and the relay steps' own (rlown), beyond those */
#define MAXCH_DM 4     /* and the datagram multishot steps' own UDP pairs */
#define MAXCH (MAXCH_MAIN + MAXCH_RL + MAXCH_DM) /* channel table */
#define MAXOPS 96      /* op slots */
#define MAXREC 16384   /* op records per program */
#define MAXCONN 16     /* connections queued on the listeners */
#define NPOOLS 3
#define TXQ (64 * 1024)
#define TX_LIMIT (16 * 1024) /* unread bytes per direction: sends never block */
#define DGRAM_LIMIT 8        /* unread datagrams (net.unix.max_dgram_qlen 10) */
#define DGRAM_MAX 512
#define IOBUF 4096
#define SHORT_NS (2 * 1000000ull)
#define LONG_NS (30 * 1000000000ull)
#define MAXRL 8          /* relays per program */
#define RL_POOLS 4       /* the relays' pools: a small one, a larger one;
			    and two such for tight relays, whose blocked
			    sends hold buffers as long as timing says */
#define RL_ID0 3000000   /* ids of the channels relays open */
#define RL_TIGHT_BUF 4096 /* a tight relay's socket buffers */
#define RL_KEY0 500000   /* trace names of the relay steps' ops */
#define DM_ID0 8000000   /* ids of the UDP pairs the dgram steps open */
#define DM_KEY0 800000   /* trace names of the dgram steps' ops */

/* ------------------------------------------------------------------ */
/* The program's state                                                 */
/* ------------------------------------------------------------------ */

enum kind {
	K_RECV, K_RECVMSG, K_SEND, K_SENDMSG, K_MULTI, K_POLL, K_SPLICE_IN,
	K_SPLICE_OUT, K_ACCEPT, K_ACCEPT_MULTI, K_CONNECT, K_CLOSE, K_CANCEL,
	K_TIMEOUT, K_POST, K_RELAY, K_DMULTI, K_COUNT
};
static const char *const kind_name[K_COUNT] = {
	"recv", "recvmsg", "send", "sendmsg", "multi", "poll", "splice_in",
	"splice_out", "accept", "accept_multi", "connect", "close", "cancel",
	"timeout", "post", "relay", "dmulti",
};

enum ctype { CH_TCP, CH_USTREAM, CH_UDGRAM, CH_LISTEN, CH_CONNECTING };
static const char *const ctype_name[] = {"tcp", "unix", "dgram", "listen",
					 "connecting"};

struct chan {
	int used;
	int id;          /* canonical number: creation order in the program */
	int type;
	int fd, peer;    /* ringio's end (the loop's), the peer's plain end */
	int closing;     /* rio_close submitted */
	int peer_wr_shut, peer_gone; /* peer half-closed / closed or reset */
	int stall;       /* the peer does not read */
	int touched;     /* peer activity this step */
	int gone_now;    /* the peer closed or reset this step */
	int waitall;     /* a MSG_WAITALL recv in flight */
	int sub_step;    /* the last step an op was submitted on it */
	int born;        /* the step it was opened in */
	int lis;         /* handed out by the rio_listener: release on close */
	int pump;        /* each read that gets data is resubmitted at once */
	int burst_step;  /* the step another thread writes to it in */
	int refused;     /* a connect that is meant to fail */
	int rl;          /* relayed: its relay's slot + 1 (for good) */
	int polled;      /* a poll was submitted on it: whether one is still
			    in flight may be open (a shared poll) */
	int rlown;       /* the relay steps' (a pair they opened, or one a
			    close of theirs opened): other actions never
			    pick it, so their programs stay what they were */
	int fin;         /* the peer sent its FIN (shut down, or closed) */
	int dmown;       /* a UDP pair the dgram steps opened: only they use
			    it (a unix datagram pair is the other actions') */
	struct sockaddr_storage peer_sa; /* a UDP pair: the peer's address */
	socklen_t peer_salen;
	/* peer -> ringio */
	uint64_t p2r_off;    /* bytes the peer wrote */
	uint64_t r_got;      /* bytes the ringio side received, checked */
	int dq[64], dq_h, dq_t; /* datagrams the peer sent: sizes */
	uint64_t dqo[64];       /* and their offsets in the pattern */
	int r_eof;           /* the ringio side saw its end of stream */
	/* ringio -> peer */
	uint8_t *txq;        /* bytes sent, not yet read by the peer */
	size_t txq_len;
	int tdq[64], tdq_h, tdq_t; /* datagrams sent: sizes */
	uint64_t peer_got;
	int peer_saw;        /* 0, 1 = EOF, or an errno */
	int wbusy;           /* a write-side op in flight */
	int wstep;           /* the step it was submitted in */
	/* aggregates of ops whose result the contract leaves open */
	uint64_t shared_bytes;
	int shared_eof, shared_err[8], shared_nerr;
};

struct fop;
struct rec {
	int kind, chid, step_sub, step_done, res, mflags, done;
	char note[160]; /* what the completion did, order-free */
	/* The op's name in the trace: (action number, 0) for an op an
	 * action submitted, (parent's, n) for the n-th a callback of the
	 * parent submitted; submission numbers (rid) depend on the order
	 * callbacks run in, which backends may differ in. */
	int key1, key2, children;
	unsigned completions;
	uint64_t bytes;
	int shared, loose;
	unsigned aux;
	/* Of the relay steps (theirs, on their sockets, or a callback's of
	 * theirs), and the number that seeds a callback's RNG: the other
	 * ops count apart, so their callbacks draw what they drew before
	 * relays. */
	int rlside, mrid;
	int ca_step; /* the cancel-all step it was in flight at, or 0 */
	/* Of the dgram steps' (or on their sockets): counted apart, as the
	 * relay steps' are, so the other ops keep their callbacks' RNG. */
	int dmside;
};

struct fop {
	rio_op op;
	int used, rid, kind, ch, pool;
	int cancel_expected, deadline, closed_by;
	uint64_t bytes;
	size_t len;
	int flags;
	unsigned events;
	unsigned ndg, ntrunc; /* a dmulti's datagrams, and those cut */
	int put_now;          /* its pool was shared by a stream multishot and
				 a dmulti: every buffer goes back at once */
	struct fop *target;
	int target_rid;
	int pend_rids[MAXOPS], npend; /* close: ops pending on its fd */
	struct sockaddr_storage sa;
	socklen_t salen;
	struct iovec iov[2];
	struct msghdr msg;
	uint8_t buf[IOBUF];
};

struct pool {
	rio_bufpool *p;
	unsigned count;
	size_t size;
	int busy;            /* a multishot uses it */
	int lent;            /* a stream multishot recv was armed on it: on
			    io_uring its buffers are the kernel's to pick */
	int dmbusy;          /* a dmulti uses it (beside a stream's, maybe) */
	uint16_t held[64];
	int nheld;
};

/* A relay between channels a (ch[0]) and b (ch[1]); a == b: an echo.
 * Direction d: 0 from a to b, 1 from b to a (an echo has only 0). */
enum { RL_ACTIVE, RL_DRAINING, RL_ENDING, RL_REAPED };
struct rl {
	rio_relay r;
	int rid;             /* its record */
	int ch[2], chid[2];  /* its channels: table slot and id */
	int echo, mode, pool, tight;
	uint64_t idle_ns;
	int short_idle;      /* it times out in the step it starts in */
	int phase;           /* what the program asked of it (RL_*) */
	int start_step, ctl_step;
	int cancel_asked, drain_asked, close_asked;
	uint64_t base[2];    /* where the relay took the source's stream up */
	uint64_t unread[2];  /* written since the destination peer last read
				everything (the generator's count) */
	uint64_t got[2];     /* bytes the destination peer read */
	int dst_eof[2], dst_err[2];
	int dst_lossy[2];    /* the destination socket closed while bytes may
				have been on their way: got <= bytes only */
	int gone_step[2];    /* the step side s's peer closed or reset in */
	int write_step[2];   /* the last step side s's peer wrote in */
	int racy;            /* a peer went in a step bytes flowed toward it
				(or both went in one): whether the relay saw
				the reset its own send drew is timing */
	int checked[2];      /* got == bytes was checked, bytes final */
	/* the completion */
	int done, res, step_done;
	rio_relay_counters k;
	size_t pending;
};

struct prog {
	uint64_t seed, rng, *cur; /* cur: the action RNG, or a callback's */
	uint64_t rrng;            /* the relay steps' RNG (their own stream) */
	int relay_on;
	uint64_t carng;           /* the cancel-all steps' RNG (another) */
	int ca_on, ca_last;       /* cancel-all steps drawn; one at the end */
	uint64_t dmrng;           /* the dgram multishot steps' RNG (a fourth) */
	int dm_on, in_dm;         /* dgram steps drawn; one runs now */
	int ndmrec, ndmkey, ndmch; /* their records, trace names, UDP pairs */
	int ndm, ndm_lent;        /* dmulti ops submitted (on a lent pool) */
	uint64_t ndg, ndg_trunc;  /* datagrams they got (cut) */
	int ndm_refused;          /* submits refused as the contract says */
	int nshare;               /* pools a stream multishot and a dmulti
				     came to share */
	int nca;                  /* cancel-all steps run */
	int lis_ca;               /* the step a cancel-all stopped the
				     listener in, or 0 */
	struct rl rls[MAXRL];
	int nrl, nrlch;
	rio_bufpool *rlpool[RL_POOLS];
	unsigned rlpool_count[RL_POOLS];
	size_t rlpool_size[RL_POOLS];
	struct rec *cb_parent;    /* the op whose callback runs, if any */
	size_t force_len;         /* do_recv_on: this length, if set */
	int nkey;
	int nrkey, in_rl;         /* relay steps name their ops apart, so the
				     other ops keep their names */
	int nrlrec;               /* records of the relay steps' (rlside) */
	int rl_mixed;             /* relays may take the other actions'
				     sockets (their programs change) */
	int reuse_own;            /* a relay step's close opens a socket */
	int tearing;
	rio_backend_kind be;
	const char *bename;
	int faults, verbose;
	rio_loop *loop;
	struct chan ch[MAXCH];
	int nchid;
	struct fop ops[MAXOPS];
	struct rec recs[MAXREC];
	int nrec;
	struct pool pools[NPOOLS];
	int step;
	uint64_t quiet_until;    /* a short deadline or timer is due */
	int in_submit;
	uint64_t callbacks;
	/* listeners: L1 for ringio's accepts, L2 the harness accepts from */
	int l1, l1_ch, l2, l3; /* l3: the harness's own TCP pairs */
	struct sockaddr_in l1_addr, l2_addr, l3_addr, dead_addr;
	int dead_fd;
	int conn_q[MAXCONN], conn_id[MAXCONN], nconn; /* peers queued on L1 */
	int l2_fd[MAXCONN], l2_port[MAXCONN], nl2; /* accepted from L2 */
	int nconnects;
	/* L4: a rio_listener (the accept policy) with a small max_conns */
	rio_listener *lis;
	int l4, lis_stopped, lis_err;
	uint32_t l4_max;
	struct sockaddr_in l4_addr;
	int q4[64], q4_id[64], nq4;
	int accept_multi;            /* rid of the multishot accept, or -1 */
	/* the pipe of the splice relay */
	int pipe_r, pipe_w;
	uint8_t pipe_data[IOBUF];
	size_t pipe_len;
	int splice_busy;
	/* post thread */
	pthread_t th;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct fop *post_req;
	int post_done, th_stop;
	/* a burst of datagrams the same thread sends while the loop runs */
	int burst_fd, burst_n, burst_len[48];
	uint8_t burst_data[48][DGRAM_MAX];
	atomic_int burst_busy;
	/* watchdog */
	rio_op wd;
	/* result */
	char fail[512];
	char *trace;
	size_t trace_len, trace_cap;
	int baseline_fds;
};

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static uint64_t mix(uint64_t z)
{
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

/*
 * The program's choices come from one RNG in action order. A callback
 * draws from its own stream, seeded by the op and its completion number:
 * callbacks of one step may run in another order on another backend, and
 * the program must not change with that order.
 */
static uint64_t rnd(struct prog *p)
{
	uint64_t z = (*p->cur += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static unsigned below(struct prog *p, unsigned n)
{
	return n ? (unsigned)(rnd(p) % n) : 0;
}

static int chance(struct prog *p, unsigned pct)
{
	return below(p, 100) < pct;
}

/* The byte at offset `off` of channel `id`'s stream in direction `dir`. */
static uint8_t pat(int id, int dir, uint64_t off)
{
	uint64_t x = (off + 1) * 0x9e3779b97f4a7c15ull ^
		     ((uint64_t)id << 40) ^ ((uint64_t)dir << 48);
	x ^= x >> 29;
	return (uint8_t)(x >> 11);
}

static void fail(struct prog *p, const char *fmt, ...)
{
	if (p->fail[0])
		return; /* the first failure is the one to read */
	va_list ap;
	va_start(ap, fmt);
	int n = snprintf(p->fail, sizeof p->fail, "step %d: ", p->step);
	vsnprintf(p->fail + n, sizeof p->fail - (size_t)n, fmt, ap);
	va_end(ap);
}

static void tracef(struct prog *p, const char *fmt, ...)
{
	char line[256];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(line, sizeof line, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if ((size_t)n >= sizeof line)
		n = sizeof line - 1;
	if (p->trace_len + (size_t)n + 2 > p->trace_cap) {
		size_t cap = p->trace_cap ? p->trace_cap * 2 : 1 << 16;
		while (cap < p->trace_len + (size_t)n + 2)
			cap *= 2;
		char *t = realloc(p->trace, cap);
		if (!t) {
			fprintf(stderr, "fuzz: out of memory\n");
			exit(1);
		}
		p->trace = t;
		p->trace_cap = cap;
	}
	memcpy(p->trace + p->trace_len, line, (size_t)n);
	p->trace_len += (size_t)n;
	p->trace[p->trace_len++] = '\n';
	p->trace[p->trace_len] = '\0';
}

/* Sockets and pipes open: what a program or a loop (the reactor's wakeup
 * pipe) may leak. Other fds are left out: libkqueue keeps helper fds of
 * its own across kqueue()/close(). */
static int no_splice;
static int opt_norelay; /* --no-relay: the programs as before relays */
static int opt_noca;    /* --no-cancel-all: as before cancel-all steps */
static int opt_nodm;    /* --no-dgram-multi: as before dgram multishot steps */
/* --relay-no-close-after-fin: no relay step closes a relayed socket
 * whose peer has sent its FIN. For runs that look past a relay that
 * misses such a close (its direction from that socket done, nothing to
 * send into it: no op of the relay is on the fd, so rio_close() does not
 * end it, and it keeps the fd number the close freed). */
static int opt_avoid_close_fin;

static int count_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	if (!d)
		return -1;
	int n = 0;
	struct dirent *e;
	while ((e = readdir(d))) {
		char path[300], to[64];
		snprintf(path, sizeof path, "/proc/self/fd/%s", e->d_name);
		ssize_t l = readlink(path, to, sizeof to - 1);
		if (l <= 0)
			continue;
		to[l] = '\0';
		n += !strncmp(to, "socket:", 7) || !strncmp(to, "pipe:", 5);
	}
	closedir(d);
	return n;
}

/* ------------------------------------------------------------------ */
/* Channels                                                            */
/* ------------------------------------------------------------------ */

static struct chan *chan_at(struct prog *p, int i)
{
	return i >= 0 && i < MAXCH && p->ch[i].used ? &p->ch[i] : NULL;
}

/* Channels free. Actions open one only with room to spare: callbacks
 * (accepts, a close's reuse) may open several in one step. */
static int chans_free(const struct prog *p)
{
	int n = 0, mine = 0;
	for (int i = 0; i < MAXCH; i++) {
		n += !p->ch[i].used;
		mine += p->ch[i].used && !p->ch[i].rlown && !p->ch[i].dmown;
	}
	/* the relay steps' own channels take none of the others' room */
	return n < MAXCH_MAIN - mine ? n : MAXCH_MAIN - mine;
}

/* Room for the relay steps' own channels. */
static int rl_chans_free(const struct prog *p)
{
	int n = 0, theirs = 0;
	for (int i = 0; i < MAXCH; i++) {
		n += !p->ch[i].used;
		theirs += p->ch[i].used && p->ch[i].rlown;
	}
	return n < MAXCH_RL - theirs ? n : MAXCH_RL - theirs;
}

/* TCP_NODELAY on both ends: Nagle holding a small send until an earlier
 * segment is acknowledged (and the peer's delayed ACK) is timing, not
 * the program's to say. */
static void nodelay(int fd)
{
	int one = 1;
	if (fd >= 0)
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

static int chan_new(struct prog *p, int type, int fd, int peer, int id)
{
	for (int i = 0; i < MAXCH; i++) {
		struct chan *c = &p->ch[i];
		if (c->used)
			continue;
		uint8_t *txq = c->txq;
		memset(c, 0, sizeof *c);
		c->txq = txq;
		c->used = 1;
		c->id = id >= 0 ? id : p->nchid++;
		c->type = type;
		c->fd = fd;
		c->peer = peer;
		c->born = p->step;
		if (type == CH_TCP || type == CH_CONNECTING) {
			nodelay(fd);
			nodelay(peer);
		}
		return i;
	}
	return -1;
}

/* The channel an op was submitted on, if it is still open (its table slot
 * may hold a newer channel). */
static struct chan *op_chan(struct prog *p, const struct fop *f)
{
	struct chan *c = chan_at(p, f->ch);
	return c && c->id == p->recs[f->rid].chid ? c : NULL;
}

static int stream(const struct chan *c)
{
	return c->type == CH_TCP || c->type == CH_USTREAM;
}

static int data_chan(const struct chan *c)
{
	return c->type == CH_TCP || c->type == CH_USTREAM ||
	       c->type == CH_UDGRAM;
}

/* A socket pair of `type`: ringio's end in *fd, the peer's in *peer. */
static int make_pair(struct prog *p, int type, int *fd, int *peer)
{
	if (type == CH_TCP) {
		int c = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK |
						SOCK_CLOEXEC, 0);
		if (c < 0)
			return -errno;
		if (connect(c, (struct sockaddr *)&p->l3_addr,
			    sizeof p->l3_addr) < 0 && errno != EINPROGRESS) {
			close(c);
			return -errno;
		}
		int a = -1;
		for (int i = 0; i < 1000 && a < 0; i++) {
			a = accept4(p->l3, NULL, NULL,
				    SOCK_NONBLOCK | SOCK_CLOEXEC);
			if (a < 0 && errno != EAGAIN)
				break;
			if (a < 0)
				usleep(100);
		}
		if (a < 0) {
			close(c);
			return -EIO;
		}
		*fd = c; /* the connecting end is ringio's */
		*peer = a;
		return 0;
	}
	int sv[2];
	int st = type == CH_UDGRAM ? SOCK_DGRAM : SOCK_STREAM;
	if (socketpair(AF_UNIX, st | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) < 0)
		return -errno;
	*fd = sv[0];
	*peer = sv[1];
	return 0;
}

/* ------------------------------------------------------------------ */
/* Ops and their records                                               */
/* ------------------------------------------------------------------ */

static struct fop *slot(struct prog *p)
{
	for (int i = 0; i < MAXOPS; i++)
		if (!p->ops[i].used) {
			struct fop *f = &p->ops[i];
			rio_op_init(&f->op);
			f->used = 1;
			f->ch = -1;
			f->pool = -1;
			f->cancel_expected = 0;
			f->deadline = 0;
			f->closed_by = -1;
			f->bytes = 0;
			f->ndg = f->ntrunc = 0;
			f->put_now = 0;
			f->target = NULL;
			f->npend = 0;
			return f;
		}
	return NULL;
}

static struct rec *rec_of(struct prog *p, const struct fop *f)
{
	return &p->recs[f->rid];
}

static int rd_side(int k)
{
	return k == K_RECV || k == K_RECVMSG || k == K_MULTI ||
	       k == K_SPLICE_IN || k == K_DMULTI;
}

static int wr_side(int k)
{
	return k == K_SEND || k == K_SENDMSG || k == K_SPLICE_OUT;
}

/* Ops in flight on channel i. */
static int each_on(struct prog *p, int i, struct fop **out)
{
	/* by channel id: a channel opened in a close's callback takes the
	 * table slot of the one closed, whose ops may still complete */
	int n = 0;
	struct chan *c = chan_at(p, i);
	if (!c)
		return 0;
	for (int k = 0; k < MAXOPS; k++) {
		struct fop *f = &p->ops[k];
		if (f->used && f->ch == i && p->recs[f->rid].chid == c->id &&
		    f->kind != K_CLOSE && f->kind != K_CANCEL)
			out[n++] = f;
	}
	return n;
}

/*
 * A socket whose peer is gone holds an error (or an end of stream) for
 * the first op that runs: with another data op in flight, which one runs
 * first is not the program's to say (io_uring's multishot recv yields
 * after a short read, the fallback's reads on). One at a time there.
 */
static int each_on(struct prog *p, int i, struct fop **out);
static int gone_busy(struct prog *p, int i)
{
	struct chan *c = chan_at(p, i);
	if (!c || !c->peer_gone)
		return 0;
	struct fop *on[MAXOPS];
	int n = each_on(p, i, on);
	for (int k = 0; k < n; k++)
		if (rd_side(on[k]->kind) || wr_side(on[k]->kind) ||
		    on[k]->kind == K_POLL)
			return 1;
	return 0;
}

static int reads_on(struct prog *p, int i)
{
	struct fop *on[MAXOPS];
	int n = each_on(p, i, on), r = 0;
	for (int k = 0; k < n; k++)
		r += rd_side(on[k]->kind);
	return r;
}

/*
 * Two ops on one socket whose outcome the contract leaves open between
 * them: reads that share the stream (which gets the bytes, which the EOF),
 * and a poll beside a data op (readiness is a hint: the read may take what
 * the poll saw).
 */
static int conflict(const struct fop *a, const struct fop *b)
{
	if (rd_side(a->kind) && rd_side(b->kind))
		return 1;
	if (a->kind == K_POLL && b->kind == K_POLL)
		return 0; /* the same readiness for both */
	if (a->kind == K_POLL || b->kind == K_POLL)
		return 1;
	/* which accept gets which connection */
	return (a->kind == K_ACCEPT || a->kind == K_ACCEPT_MULTI) &&
	       (b->kind == K_ACCEPT || b->kind == K_ACCEPT_MULTI);
}

static void mark_shared(struct prog *p, struct fop *f)
{
	if (f->ch < 0 || f->kind == K_CLOSE || f->kind == K_CANCEL)
		return;
	struct fop *on[MAXOPS];
	int n = each_on(p, f->ch, on);
	/* a poll beside a data op is the ambiguous one, never the data op:
	 * whether the poll is still in flight is itself left open */
	for (int k = 0; k < n; k++)
		if (on[k] != f && conflict(on[k], f) &&
		    /* whether a shared poll is still in flight is itself
		     * open: it makes nothing else shared */
		    !(on[k]->kind == K_POLL && rec_of(p, on[k])->shared)) {
			if (f->kind != K_POLL || on[k]->kind == K_POLL)
				rec_of(p, on[k])->shared = 1;
			if (on[k]->kind != K_POLL || f->kind == K_POLL)
				rec_of(p, f)->shared = 1;
		}
}

static void op_cb(rio_loop *loop, rio_op *op, int res);

/* Take back the record new_rec() just made for f (f not submitted). */
static void drop_rec(struct prog *p, struct fop *f)
{
	f->used = 0;
	p->nrlrec -= p->recs[f->rid].rlside;
	p->ndmrec -= p->recs[f->rid].dmside;
	p->nrec--;
}

static int new_rec(struct prog *p, struct fop *f, int kind, int ch)
{
	if (p->nrec >= MAXREC)
		return -1;
	f->rid = p->nrec++;
	f->kind = kind;
	f->ch = ch;
	struct rec *r = &p->recs[f->rid];
	memset(r, 0, sizeof *r);
	r->kind = kind;
	struct chan *c = chan_at(p, ch);
	r->rlside = p->in_rl || (p->cb_parent && p->cb_parent->rlside) ||
		    (c && (c->rl || c->rlown));
	r->dmside = !r->rlside &&
		    (p->in_dm || (p->cb_parent && p->cb_parent->dmside) ||
		     (c && c->dmown));
	r->mrid = r->rlside   ? 1000000 + p->nrlrec++
		  : r->dmside ? 2000000 + p->ndmrec++
			      : f->rid - p->nrlrec - p->ndmrec;
	r->chid = c ? c->id : -1;
	if (c)
		c->sub_step = p->step;
	r->step_sub = p->step;
	r->step_done = -1;
	if (p->cb_parent) {
		r->key1 = p->cb_parent->key1;
		r->key2 = ++p->cb_parent->children;
	} else {
		r->key1 = p->in_rl   ? RL_KEY0 + p->nrkey++
			  : p->in_dm ? DM_KEY0 + p->ndmkey++
				     : p->nkey++;
	}
	return 0;
}

/* An op slot with its record, ready to submit; NULL when out of room. */
static struct fop *new_op(struct prog *p, int kind, int ch)
{
	struct fop *f = slot(p);
	if (!f)
		return NULL;
	if (new_rec(p, f, kind, ch)) {
		f->used = 0;
		return NULL;
	}
	f->op.data = p;
	return f;
}

static void set_deadline(struct prog *p, struct fop *f, int allowed)
{
	f->deadline = 0;
	if (allowed) {
		unsigned d = below(p, 10);
		f->deadline = d == 0 ? 1 : d == 1 ? 2 : 0;
	}
	rio_op_set_deadline(&f->op, f->deadline == 1 ? SHORT_NS
				    : f->deadline == 2 ? LONG_NS : 0);
	if (f->deadline == 1) {
		uint64_t due = now_ns() + SHORT_NS;
		if (due > p->quiet_until)
			p->quiet_until = due;
	}
}

/* Submit through `fn`, checking the API's promise: no callback inside. */
#define SUBMIT(p, f, call)                                                  \
	({                                                                  \
		(p)->in_submit = 1;                                         \
		if ((p)->verbose > 1)                                       \
			fprintf(stderr, "  step %d: submit #%d %s ch%d%s\n", \
				(p)->step, (f)->rid, kind_name[(f)->kind],  \
				rec_of((p), (f))->chid,                     \
				rec_of((p), (f))->rlside ? " (relay)" : ""); \
		int r_ = (call);                                            \
		(p)->in_submit = 0;                                         \
		if (r_ < 0) {                                               \
			fail((p), "%s submit refused: %s", kind_name[(f)->kind], \
			     rio_strerror(r_));                             \
			(f)->used = 0;                                      \
			rec_of((p), (f))->done = -1;                        \
		} else {                                                    \
			mark_shared((p), (f));                              \
		}                                                           \
		r_;                                                         \
	})

/* ------------------------------------------------------------------ */
/* The post thread                                                     */
/* ------------------------------------------------------------------ */

static void *post_main(void *arg)
{
	struct prog *p = arg;
	pthread_mutex_lock(&p->mu);
	for (;;) {
		while (!p->post_req && !p->th_stop && !p->burst_n)
			pthread_cond_wait(&p->cv, &p->mu);
		if (p->th_stop)
			break;
		if (p->burst_n) {
			/* 30 us apart, while the loop thread runs: the data
			 * arrives as the ring works, not before */
			int n = p->burst_n;
			p->burst_n = 0;
			pthread_mutex_unlock(&p->mu);
			for (int k = 0; k < n; k++) {
				usleep(30);
				ssize_t w = -1;
				/* a full queue (the reads lag): retry, 100 ms */
				for (int t = 0; t < 1000; t++) {
					w = send(p->burst_fd, p->burst_data[k],
						 (size_t)p->burst_len[k],
						 MSG_NOSIGNAL);
					if (w >= 0 || errno != EAGAIN)
						break;
					usleep(100);
				}
				if (w != p->burst_len[k])
					atomic_store(&p->burst_busy, -1);
			}
			pthread_mutex_lock(&p->mu);
			if (atomic_load(&p->burst_busy) > 0)
				atomic_store(&p->burst_busy, 0);
			continue;
		}
		struct fop *f = p->post_req;
		p->post_req = NULL;
		int r = rio_post(p->loop, &f->op, op_cb);
		p->post_done = r == 0 ? 1 : r;
		pthread_cond_broadcast(&p->cv);
	}
	pthread_mutex_unlock(&p->mu);
	return NULL;
}

/* ------------------------------------------------------------------ */
/* Checking data                                                       */
/* ------------------------------------------------------------------ */

/* n bytes the ringio side received on channel c: in order, the peer's. */
static void check_rx(struct prog *p, struct chan *c, const uint8_t *b,
		     size_t n, const char *what)
{
	for (size_t i = 0; i < n; i++)
		if (b[i] != pat(c->id, 0, c->r_got + i)) {
			fail(p, "ch%d %s: byte %" PRIu64 " wrong (got %u, want %u)",
			     c->id, what, c->r_got + i, b[i],
			     pat(c->id, 0, c->r_got + i));
			return;
		}
	c->r_got += n;
}

/* A datagram's receive: `n` bytes of a datagram of `full` bytes. */
static void check_dgram(struct prog *p, struct chan *c, const uint8_t *b,
			size_t n, size_t cap, const char *what)
{
	if (c->dq_h == c->dq_t) {
		fail(p, "ch%d %s: a datagram of %zu nobody sent", c->id, what, n);
		return;
	}
	/*
	 * The next datagram, in order; but while datagrams arrive during the
	 * loop's run (a burst) into several reads, io_uring may complete
	 * those reads out of the order they took the datagrams (DESIGN.md
	 * §9): then any one still queued, matched by size and content.
	 */
	int k = c->dq_h, end = c->burst_step == p->step ? c->dq_t : c->dq_h + 1;
	for (; k < end; k++) {
		size_t full = (size_t)c->dq[k % 64];
		size_t want = full < cap ? full : cap;
		uint64_t off = c->dqo[k % 64];
		size_t i = 0;
		if (n == want)
			while (i < n && b[i] == pat(c->id, 0, off + i))
				i++;
		if (n == want && i == n)
			break;
	}
	if (k == end) {
		size_t full = (size_t)c->dq[c->dq_h % 64];
		fail(p, "ch%d %s: datagram of %zu bytes into %zu gave %zu%s",
		     c->id, what, full, cap, n,
		     n == (full < cap ? full : cap) ? " wrong bytes" : "");
		return;
	}
	/* take entry k out, keeping the others in order */
	size_t full = (size_t)c->dq[k % 64];
	for (int j = k; j > c->dq_h; j--) {
		c->dq[j % 64] = c->dq[(j - 1) % 64];
		c->dqo[j % 64] = c->dqo[(j - 1) % 64];
	}
	c->dq_h++;
	c->r_got += full; /* the datagrams' offsets count all of them */
}

static void tx_append(struct prog *p, struct chan *c, const uint8_t *b,
		      size_t n)
{
	if (c->txq_len + n > TXQ) {
		fail(p, "ch%d: harness tx queue overflow", c->id);
		return;
	}
	memcpy(c->txq + c->txq_len, b, n);
	c->txq_len += n;
	if (c->type == CH_UDGRAM)
		c->tdq[c->tdq_t++ % 64] = (int)n;
}

/* The peer reads what is there and checks it against what was sent. */
static void peer_drain(struct prog *p, struct chan *c)
{
	if (c->peer < 0 || c->peer_gone)
		return;
	uint8_t b[IOBUF + 1];
	for (int i = 0; i < 256; i++) {
		ssize_t n = recv(c->peer, b, sizeof b, MSG_DONTWAIT);
		if (p->verbose > 1)
			fprintf(stderr, "  step %d: ch%d peer read %zd%s%s\n",
				p->step, c->id, n, n < 0 ? " " : "",
				n < 0 ? strerror(errno) : "");
		if (n < 0) {
			if (errno == EAGAIN)
				return;
			if (!c->peer_saw)
				c->peer_saw = errno;
			return;
		}
		if (n == 0 && c->type != CH_UDGRAM) {
			if (c->txq_len)
				fail(p, "ch%d: peer saw EOF with %zu bytes sent "
				     "and not arrived", c->id, c->txq_len);
			if (!c->peer_saw)
				c->peer_saw = 1;
			return;
		}
		if (c->type == CH_UDGRAM) {
			if (c->tdq_h == c->tdq_t) {
				fail(p, "ch%d: peer got a datagram nobody sent",
				     c->id);
				return;
			}
			int want = c->tdq[c->tdq_h++ % 64];
			if (n != want) {
				fail(p, "ch%d: peer got a datagram of %zd, sent %d",
				     c->id, n, want);
				return;
			}
		}
		if ((size_t)n > c->txq_len ||
		    memcmp(b, c->txq, (size_t)n) != 0) {
			size_t d = 0;
			while ((ssize_t)d < n && d < c->txq_len && b[d] == c->txq[d])
				d++;
			fail(p, "ch%d: peer got %zd bytes that were not sent "
			     "next (offset %" PRIu64 ", %zu queued, first "
			     "difference at %zu)", c->id, n, c->peer_got,
			     c->txq_len, d);
			return;
		}
		memmove(c->txq, c->txq + n, c->txq_len - (size_t)n);
		c->txq_len -= (size_t)n;
		c->peer_got += (uint64_t)n;
	}
}

/* ------------------------------------------------------------------ */
/* Completions                                                         */
/* ------------------------------------------------------------------ */

static int queue_take(int *fds, int *ids, int *n, int k, int *id);

static int port_of(int fd, int peer)
{
	struct sockaddr_in a;
	socklen_t l = sizeof a;
	int r = peer ? getpeername(fd, (struct sockaddr *)&a, &l)
		     : getsockname(fd, (struct sockaddr *)&a, &l);
	return r < 0 ? -1 : ntohs(a.sin_port);
}

/* The peer of a connect to L2: connects complete in any order, so match
 * the accepted sockets by port. */
static int l2_peer(struct prog *p, int fd)
{
	int port = port_of(fd, 0);
	for (int tries = 0; tries < 100; tries++) {
		for (int k = 0; k < p->nl2; k++)
			if (p->l2_port[k] == port) {
				int a = p->l2_fd[k];
				p->nl2--;
				p->l2_fd[k] = p->l2_fd[p->nl2];
				p->l2_port[k] = p->l2_port[p->nl2];
				return a;
			}
		int a = accept4(p->l2, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (a < 0) {
			usleep(100);
			continue;
		}
		if (p->nl2 == MAXCONN) {
			close(a);
			return -1;
		}
		p->l2_fd[p->nl2] = a;
		p->l2_port[p->nl2++] = port_of(a, 1);
	}
	return -1;
}

static int allowed(const struct prog *p, const struct fop *f, int res)
{
	if (res == -ECANCELED)
		return f->cancel_expected;
	if (res == -ETIMEDOUT)
		return f->deadline != 0;
	switch (f->kind) {
	case K_RECV: case K_RECVMSG: case K_SPLICE_IN:
		return res >= 0 || res == -ECONNRESET;
	case K_MULTI:
		return res >= 0 || res == -ECONNRESET;
	case K_DMULTI: /* a datagram (F_MORE), or it ends: -ECANCELED only */
		return res >= 0;
	case K_SEND: case K_SENDMSG: case K_SPLICE_OUT:
		return res > 0 || res == -EPIPE || res == -ECONNRESET ||
		       res == -ECONNREFUSED || /* unix datagram, peer gone */
		       res == -ENOTCONN ||     /* after a reset */
		       (res == 0 && f->len == 0);
	case K_POLL:
		return res > 0 &&
		       !(res & ~(int)(f->events | POLLERR | POLLHUP | POLLRDHUP));
	case K_ACCEPT: case K_ACCEPT_MULTI:
		return res >= 0 || (p->faults && (res == -ECONNABORTED ||
						  res == -EPROTO));
	case K_CONNECT:
		return res == 0 || res == -ECONNREFUSED;
	case K_CLOSE: case K_TIMEOUT: case K_POST:
		return res == 0;
	case K_CANCEL:
		return res == 0 || res == -ENOENT || res == -EALREADY;
	}
	return 0;
}

static void reuse_at_once(struct prog *p, struct rec *r, int id);
static void do_recv_on(struct prog *p, int kind, int i);
static void rl_close_done(struct prog *p, struct chan *c, struct rec *r);
static void rl_closing(struct prog *p, struct chan *c);
static void new_accepted(struct prog *p, struct rec *r, int fd);

static void pool_put(struct prog *p, int pi, uint16_t id, int now)
{
	struct pool *pl = &p->pools[pi];
	if (now || pl->nheld >= 64) {
		int r = rio_bufpool_put(pl->p, id);
		if (r)
			fail(p, "rio_bufpool_put(%u): %s", id, rio_strerror(r));
	} else {
		pl->held[pl->nheld++] = id;
	}
}

static void on_data(struct prog *p, struct fop *f, struct chan *c,
		    const uint8_t *b, size_t n, size_t cap, const char *what)
{
	if (!c)
		return;
	if (c->type == CH_UDGRAM)
		check_dgram(p, c, b, n, cap, what);
	else
		check_rx(p, c, b, n, what);
	f->bytes += n;
}

static void op_result(struct prog *p, struct fop *f, struct rec *r, int res,
		      int more);
static void dm_share(struct prog *p, int pi);
static void dm_datagram(struct prog *p, struct fop *f, struct chan *c,
			int res);

static void op_cb(rio_loop *loop, rio_op *op, int res)
{
	struct fop *f = RIO_CONTAINER_OF(op, struct fop, op);
	struct prog *p = op->data;
	(void)loop;
	p->callbacks++;
	if (p->in_submit)
		fail(p, "%s completed inside a submit call", kind_name[f->kind]);
	if (!f->used) {
		fail(p, "a completion for an op not in flight (%s, res %d)",
		     kind_name[f->kind], res);
		return;
	}
	struct rec *r = rec_of(p, f);
	int more = (op->flags & RIO_OP_F_MORE) != 0;
	r->completions++;
	if (p->verbose > 1)
		fprintf(stderr, "  step %d: #%d %s ch%d res %d%s\n", p->step,
			f->rid, kind_name[f->kind], r->chid, res,
			more ? " F_MORE" : "");
	uint64_t local = mix(p->seed ^ ((uint64_t)r->mrid << 20) ^
			     r->completions);
	uint64_t *saved = p->cur;
	struct rec *parent = p->cb_parent;
	p->cur = &local;
	p->cb_parent = r;
	op_result(p, f, r, res, more);
	p->cur = saved;
	p->cb_parent = parent;
}

static void op_result(struct prog *p, struct fop *f, struct rec *r, int res,
		      int more)
{
	rio_op *op = &f->op;
	if (r->done) {
		fail(p, "op #%d (%s) completed twice", f->rid, kind_name[f->kind]);
		return;
	}
	struct chan *c = op_chan(p, f);
	if (more && f->kind != K_MULTI && f->kind != K_ACCEPT_MULTI &&
	    f->kind != K_DMULTI)
		fail(p, "op #%d (%s) got F_MORE", f->rid, kind_name[f->kind]);
	if (!allowed(p, f, res))
		fail(p, "op #%d %s on ch%d: result %d (%s) is not one the "
		     "contract lists here%s", f->rid, kind_name[f->kind],
		     r->chid, res, rio_strerror(res),
		     res == -ECANCELED ? " (nothing cancelled it)" : "");

	switch (f->kind) {
	case K_RECV:
		if (c && (f->flags & MSG_WAITALL))
			c->waitall = 0;
		if (res > 0)
			on_data(p, f, c, f->buf, (size_t)res, f->len, "recv");
		else if (res == 0 && c && c->type == CH_UDGRAM)
			on_data(p, f, c, f->buf, 0, f->len, "recv");
		else if (res == 0 && c)
			c->r_eof = 1;
		break;
	case K_RECVMSG:
		if (c && (f->flags & MSG_WAITALL))
			c->waitall = 0;
		if (res >= 0 && c) {
			uint8_t tmp[IOBUF];
			size_t a = f->iov[0].iov_len;
			size_t got = (size_t)res;
			memcpy(tmp, f->iov[0].iov_base, got < a ? got : a);
			if (got > a)
				memcpy(tmp + a, f->iov[1].iov_base, got - a);
			r->aux = (f->msg.msg_flags & MSG_TRUNC) ? 1 : 0;
			if (res > 0 || c->type == CH_UDGRAM)
				on_data(p, f, c, tmp, got, f->len, "recvmsg");
			else
				c->r_eof = 1;
		}
		break;
	case K_MULTI:
		if (res > 0 || (res == 0 && more)) {
			if (res > 0 && !(op->flags & RIO_OP_F_BUF)) {
				fail(p, "multi: data without RIO_OP_F_BUF");
				break;
			}
			struct pool *pl = &p->pools[f->pool];
			size_t cap = pl->size;
			if (res > 0) {
				on_data(p, f, c, op->buf, (size_t)res, cap, "multi");
				pool_put(p, f->pool, op->buf_id,
					 chance(p, 50) || f->put_now);
			} else {
				if (!c || c->type != CH_UDGRAM)
					fail(p, "multi: res 0 with F_MORE on a stream");
				on_data(p, f, c, NULL, 0, cap, "multi");
			}
		} else if (res == 0 && c) {
			c->r_eof = 1;
		}
		if (!more)
			p->pools[f->pool].busy = 0;
		break;
	case K_DMULTI:
		if (more)
			dm_datagram(p, f, c, res);
		else if (res >= 0)
			fail(p, "dmulti #%d on ch%d ended with %d: a datagram "
			     "receive ends only with an error", f->rid, r->chid,
			     res);
		if (!more) {
			p->pools[f->pool].dmbusy = 0;
			size_t l = strlen(r->note);
			snprintf(r->note + l, sizeof r->note - l,
				 " dgrams %u cut %u", f->ndg, f->ntrunc);
		}
		break;
	case K_SPLICE_IN:
		p->splice_busy = 0;
		if (res > 0 && c) {
			size_t n = (size_t)res;
			if (p->pipe_len + n > sizeof p->pipe_data) {
				fail(p, "splice_in moved more than asked");
				break;
			}
			ssize_t got = 0;
			/* read back via the pattern: the pipe holds c's stream */
			for (size_t i = 0; i < n; i++)
				p->pipe_data[p->pipe_len + i] =
					pat(c->id, 0, c->r_got + i);
			c->r_got += n;
			p->pipe_len += n;
			f->bytes = n;
			(void)got;
		} else if (res == 0 && c) {
			c->r_eof = 1;
		}
		break;
	case K_SEND: case K_SENDMSG:
		if (c)
			c->wbusy = 0;
		if (c && c->type == CH_UDGRAM && res == -ECONNREFUSED) {
			/* Linux drops what a dead peer had sent us when a
			 * send finds it gone (unix_dgram_disconnected) */
			while (c->dq_h != c->dq_t)
				c->r_got += (uint64_t)c->dq[c->dq_h++ % 64];
		}
		if (c && (res > 0 || (res == 0 && c->type == CH_UDGRAM))) {
			tx_append(p, c, f->buf, (size_t)res);
			f->bytes = (uint64_t)res;
		}
		break;
	case K_SPLICE_OUT:
		p->splice_busy = 0;
		if (c)
			c->wbusy = 0;
		if (res > 0 && c) {
			size_t n = (size_t)res;
			if (n > p->pipe_len) {
				fail(p, "splice_out moved more than the pipe held");
				break;
			}
			tx_append(p, c, p->pipe_data, n);
			memmove(p->pipe_data, p->pipe_data + n, p->pipe_len - n);
			p->pipe_len -= n;
			f->bytes = n;
		}
		break;
	case K_ACCEPT: case K_ACCEPT_MULTI:
		if (res >= 0) {
			new_accepted(p, r, res);
		} else if ((res == -ECONNABORTED || res == -EPROTO) &&
			   p->nconn) {
			/* a fault consumed a connection (closed it): the one
			 * whose client sees its end */
			for (int k = 0; k < p->nconn; k++) {
				char b;
				if (recv(p->conn_q[k], &b, 1,
					 MSG_PEEK | MSG_DONTWAIT) == 0) {
					int id;
					close(queue_take(p->conn_q, p->conn_id,
							 &p->nconn, k, &id));
					break;
				}
			}
		}
		break;
	case K_CONNECT:
		if (c && res == 0 && c->type == CH_CONNECTING && !c->refused) {
			int a = l2_peer(p, c->fd);
			if (a < 0)
				fail(p, "connect gave 0 but nothing to accept");
			else {
				c->peer = a;
				c->type = CH_TCP;
				nodelay(a);
			}
		}
		break;
	case K_CLOSE:
		for (int k = 0; k < f->npend; k++)
			if (!p->recs[f->pend_rids[k]].done)
				fail(p, "close of ch%d completed before op #%d "
				     "(%s) that was pending on its fd", r->chid,
				     f->pend_rids[k],
				     kind_name[p->recs[f->pend_rids[k]].kind]);
		if (c && c->rl) {
			rl_close_done(p, c, r);
		} else if (c) {
			if (c->peer >= 0 && !c->peer_gone) {
				peer_drain(p, c);
				if (!c->peer_saw)
					peer_drain(p, c);
			}
			const char *saw = c->peer_saw == 1 ? "eof"
					  : c->peer_saw ? strerrorname_np(c->peer_saw)
							: "-";
			snprintf(r->note, sizeof r->note, "%s born @%d in %"
				 PRIu64 " out %" PRIu64 " unread %zu eof %d peer "
				 "%s shared %" PRIu64 "/%d",
				 c->dmown ? "udp" : ctype_name[c->type],
				 c->born, c->r_got, c->peer_got, c->txq_len,
				 c->r_eof, saw ? saw : "?", c->shared_bytes,
				 c->shared_eof);
		}
		if (c) {
			if (c->lis) {
				int rr = rio_listener_release(p->lis);
				if (rr)
					fail(p, "rio_listener_release: %s",
					     rio_strerror(rr));
			}
			if (c->peer >= 0)
				close(c->peer);
			if (c->type == CH_LISTEN) {
				p->l1 = -1;
				for (int k = 0; k < p->nconn; k++)
					close(p->conn_q[k]);
				p->nconn = 0;
			}
			c->used = 0;
			p->reuse_own = c->rl || c->rlown;
			/* (not after a dgram step's UDP pair: what it would
			 * open is the other actions') */
			if (!p->tearing && !c->dmown && chance(p, 60))
				reuse_at_once(p, r, 100000 + r->key1 * 8 + r->key2);
			p->reuse_own = 0;
		}
		break;
	default:
		break;
	}
	if (more)
		return;

	if (!more && (f->kind == K_RECV || f->kind == K_RECVMSG) && c &&
	    c->pump && !c->closing && !p->tearing && p->nrec < MAXREC - 512 &&
	    (res > 0 || (res == 0 && c->type == CH_UDGRAM)))
		do_recv_on(p, f->kind, f->ch);

	/* A timer's or a post's callback opens a socket at once: with a
	 * close reaped in the same batch, it gets that close's number while
	 * the close may still wait for its ops. */
	if (!more && (f->kind == K_TIMEOUT || f->kind == K_POST) &&
	    !p->tearing && chance(p, 40))
		reuse_at_once(p, r, 100000 + r->key1 * 8 + r->key2);

	/* final completion */
	r->done = 1;
	r->res = res;
	r->step_done = p->step;
	r->bytes = f->bytes;
	if (r->shared && c) {
		c->shared_bytes += f->bytes;
		if (res == 0 && rd_side(f->kind))
			c->shared_eof++;
	}
	f->used = 0;
}

/* ------------------------------------------------------------------ */
/* Actions                                                             */
/* ------------------------------------------------------------------ */

/* Add channel slot i to cand[0..*n), kept in channel id order. */
static void add_by_id(const struct prog *p, int *cand, int *n, int i)
{
	int k = (*n)++;
	while (k > 0 && p->ch[cand[k - 1]].id > p->ch[i].id) {
		cand[k] = cand[k - 1];
		k--;
	}
	cand[k] = i;
}

/* A channel, chosen by its id (table slots depend on callback order). */
static int pick_chan(struct prog *p, int want_data, int open_only)
{
	int cand[MAXCH], n = 0;
	for (int i = 0; i < MAXCH; i++) {
		struct chan *c = &p->ch[i];
		if (!c->used || (open_only && (c->closing || c->gone_now)))
			continue;
		if (c->rl || c->rlown || c->dmown)
			continue; /* the relay steps', the dgram steps' */
		if (want_data && !data_chan(c))
			continue;
		add_by_id(p, cand, &n, i);
	}
	return n ? cand[below(p, (unsigned)n)] : -1;
}

static int tx_room(const struct chan *c, size_t len)
{
	if (c->peer < 0 || c->peer_gone)
		return 1; /* the send fails or is dropped, never blocks */
	if (c->type == CH_UDGRAM)
		return c->tdq_t - c->tdq_h < DGRAM_LIMIT;
	return c->txq_len + len <= TX_LIMIT;
}

static void fill_tx(struct prog *p, struct chan *c, uint8_t *b, size_t n)
{
	/* distinct bytes per send: a duplicated or lost send shows */
	uint64_t s = rnd(p);
	for (size_t i = 0; i < n; i++)
		b[i] = (uint8_t)((s >> ((i % 8) * 8)) + i);
	(void)c;
}

static void do_recv_on(struct prog *p, int kind, int i)
{
	struct chan *c = chan_at(p, i);
	if (!c || c->waitall || gone_busy(p, i))
		return;
	struct fop *f = slot(p);
	if (!f)
		return;
	if (new_rec(p, f, kind, i)) {
		f->used = 0;
		return;
	}
	f->op.data = p;
	f->len = c->type == CH_UDGRAM ? (chance(p, 20) ? 1 + below(p, 64)
				      : DGRAM_MAX)
				      : 1 + below(p, chance(p, 50) ? 64 : IOBUF);
	if (p->force_len)
		f->len = p->force_len;
	int flags = 0;
	struct fop *on[MAXOPS], *twin = NULL;
	int n = each_on(p, i, on);
	for (int k = 0; k < n; k++)
		if (on[k] != f && rd_side(on[k]->kind))
			twin = on[k];
	/*
	 * Reads sharing a socket are twins: recv or recvmsg of one length,
	 * no short deadline. Which twin gets which bytes is the kernel's
	 * choice; with twins alike the program does not depend on it.
	 * WAITALL, multishot and splice reads stay alone: the bytes a
	 * WAITALL recv holds while it waits would come out of order.
	 */
	if (twin && (twin->kind != K_RECV && twin->kind != K_RECVMSG)) {
		drop_rec(p, f);
		return;
	}
	if (twin && (twin->deadline == 1 || (twin->flags & MSG_WAITALL))) {
		drop_rec(p, f);
		return;
	}
	if (twin) {
		f->len = twin->len;
		kind = twin->kind;
		p->recs[f->rid].kind = f->kind = kind;
	}
	if (!twin && stream(c) && chance(p, 10) && f->len < 512) {
		flags = MSG_WAITALL;
		c->waitall = 1;
	}
	f->flags = flags;
	set_deadline(p, f, !twin && !c->pump);
	/* which read of a pumped socket gets what is open, and so is which
	 * one's callback submits the next: all count as shared */
	if (c->pump)
		p->recs[f->rid].shared = 1;
	if (twin && chance(p, 10))
		rio_op_set_deadline(&f->op, LONG_NS);
	if (kind == K_RECV) {
		SUBMIT(p, f, rio_recv(p->loop, &f->op, c->fd, f->buf, f->len,
				      flags, op_cb));
	} else {
		size_t a = f->len / 2;
		f->iov[0] = (struct iovec){f->buf, a};
		f->iov[1] = (struct iovec){f->buf + 2048, f->len - a};
		memset(&f->msg, 0, sizeof f->msg);
		f->msg.msg_iov = f->iov;
		f->msg.msg_iovlen = 2;
		SUBMIT(p, f, rio_recvmsg(p->loop, &f->op, c->fd, &f->msg, flags,
					 op_cb));
	}
	if (!f->used)
		c->waitall = 0;
}

/* Datagrams that arrive while the loop runs, from another thread, into
 * a pumped socket: the order and the count of what arrives are fixed (a
 * datagram socket keeps them whole), only the timing is not. */
static void do_burst(struct prog *p)
{
	/* a pumped datagram socket, by id */
	int i = -1;
	for (int k = 0; k < MAXCH; k++) {
		struct chan *q = chan_at(p, k);
		if (q && q->type == CH_UDGRAM && q->pump && !q->closing &&
		    (i < 0 || q->id < p->ch[i].id))
			i = k;
	}
	struct chan *c = chan_at(p, i);
	if (!c || c->type != CH_UDGRAM || !c->pump || c->peer < 0 ||
	    c->peer_gone || c->sub_step == p->step ||
	    atomic_load(&p->burst_busy))
		return;
	/* the pumped reads keep up: more than the queue holds at once */
	if (c->dq_t - c->dq_h >= DGRAM_LIMIT)
		return;
	int n = 2 + (int)below(p, 47);
	int small = chance(p, 70);
	c->touched = 1;
	c->burst_step = p->step;
	pthread_mutex_lock(&p->mu);
	for (int k = 0; k < n; k++) {
		int len = (int)below(p, small ? 65 : DGRAM_MAX + 1);
		for (int b = 0; b < len; b++)
			p->burst_data[k][b] = pat(c->id, 0, c->p2r_off + (uint64_t)b);
		p->burst_len[k] = len;
		c->dqo[c->dq_t % 64] = c->p2r_off;
		c->dq[c->dq_t++ % 64] = len;
		c->p2r_off += (uint64_t)len;
	}
	p->burst_fd = c->peer;
	p->burst_n = n;
	atomic_store(&p->burst_busy, 1);
	pthread_cond_broadcast(&p->cv);
	pthread_mutex_unlock(&p->mu);
	tracef(p, "ch%d peer burst %d", c->id, n);
}

/* A socket read the way servers read: two to four reads pending, each
 * resubmitted from its callback when it gets data (the pattern that drew
 * a stray -EAGAIN out of io_uring). */
static void do_pump(struct prog *p)
{
	int i = pick_chan(p, 1, 1);
	struct chan *c = chan_at(p, i);
	if (!c || c->pump || c->waitall || reads_on(p, i))
		return;
	c->pump = 1;
	int kind = chance(p, c->type == CH_UDGRAM ? 25 : 50) ? K_RECV : K_RECVMSG;
	int n = 2 + (int)below(p, 5); /* the stray -EAGAIN took 3 or more */
	/* whole datagrams; 256+ bytes of a stream (a record per read) */
	p->force_len = c->type == CH_UDGRAM ? DGRAM_MAX : 256 + below(p, 3841);
	for (int k = 0; k < n; k++)
		do_recv_on(p, kind, i);
	p->force_len = 0;
}

static void do_recv(struct prog *p, int kind)
{
	/* half the time beside reads already pending: several reads on one
	 * socket are where a backend hands out a stray -EAGAIN */
	int cand[MAXCH], n = 0;
	for (int i = 0; i < MAXCH; i++) {
		struct chan *c = chan_at(p, i);
		if (c && data_chan(c) && !c->closing && !c->gone_now &&
		    !c->rlown && !c->dmown && reads_on(p, i))
			add_by_id(p, cand, &n, i);
	}
	if (n && chance(p, 50))
		do_recv_on(p, kind, cand[below(p, (unsigned)n)]);
	else
		do_recv_on(p, kind, pick_chan(p, 1, 1));
}

static void do_send(struct prog *p, int kind)
{
	int i = pick_chan(p, 1, 1);
	struct chan *c = chan_at(p, i);
	if (!c || c->wbusy)
		return;
	/* A send to a unix datagram peer that is gone purges what it had
	 * sent us (unix_dgram_disconnected): beside a read submitted just
	 * before it, which goes first is a backend's choice (io_uring runs
	 * SQEs in order; the fallback tries a send at submit, a multishot
	 * read only once the loop polls). */
	if ((c->type == CH_UDGRAM && c->peer_gone) || gone_busy(p, i))
		return;
	size_t len = c->type == CH_UDGRAM ? below(p, DGRAM_MAX + 1)
					  : 1 + below(p, chance(p, 70) ? 256
								     : 4096);
	if (!tx_room(c, len))
		return;
	struct fop *f = slot(p);
	if (!f)
		return;
	if (new_rec(p, f, kind, i)) {
		f->used = 0;
		return;
	}
	f->op.data = p;
	f->len = len;
	fill_tx(p, c, f->buf, len);
	set_deadline(p, f, 1);
	c->wbusy = 1;
	c->wstep = p->step;
	if (kind == K_SEND) {
		SUBMIT(p, f, rio_send(p->loop, &f->op, c->fd, f->buf, len, 0,
				      op_cb));
	} else {
		size_t a = len / 3;
		f->iov[0] = (struct iovec){f->buf, a};
		f->iov[1] = (struct iovec){f->buf + a, len - a};
		memset(&f->msg, 0, sizeof f->msg);
		f->msg.msg_iov = f->iov;
		f->msg.msg_iovlen = 2;
		SUBMIT(p, f, rio_sendmsg(p->loop, &f->op, c->fd, &f->msg, 0,
					 op_cb));
	}
	if (!f->used)
		c->wbusy = 0;
}

static void do_multi(struct prog *p)
{
	int i = pick_chan(p, 1, 1);
	struct chan *c = chan_at(p, i);
	int pi = (int)below(p, NPOOLS);
	if (!c || p->pools[pi].busy || reads_on(p, i) || gone_busy(p, i))
		return;
	struct fop *f = slot(p);
	if (!f)
		return;
	if (new_rec(p, f, K_MULTI, i)) {
		f->used = 0;
		return;
	}
	f->op.data = p;
	f->pool = pi;
	rio_op_set_deadline(&f->op, 0);
	p->pools[pi].busy = 1;
	SUBMIT(p, f, rio_recv_multishot(p->loop, &f->op, c->fd,
					p->pools[pi].p, op_cb));
	if (!f->used)
		p->pools[pi].busy = 0;
	else
		p->pools[pi].lent = 1;
	dm_share(p, pi);
}

static void do_poll(struct prog *p)
{
	int i = pick_chan(p, 1, 1);
	struct chan *c = chan_at(p, i);
	struct fop *f = slot(p);
	if (!c || !f) {
		if (f)
			f->used = 0;
		return;
	}
	if (new_rec(p, f, K_POLL, i)) {
		f->used = 0;
		return;
	}
	f->op.data = p;
	static const unsigned ev[] = {POLLIN, POLLOUT, 0, POLLIN | POLLOUT};
	f->events = ev[below(p, 4)];
	p->recs[f->rid].aux = f->events;
	c->polled = 1;
	set_deadline(p, f, 1);
	SUBMIT(p, f, rio_poll(p->loop, &f->op, c->fd, f->events, op_cb));
}

static void do_splice(struct prog *p)
{
	/* kqueue has no splice (-EOPNOTSUPP): a run with it leaves splice
	 * out on every backend, so that all run the same program */
	if (p->splice_busy || no_splice)
		return;
	int i = pick_chan(p, 1, 1);
	struct chan *c = chan_at(p, i);
	if (!c || !stream(c) || gone_busy(p, i))
		return;
	int out = p->pipe_len > 0;
	if (!out && reads_on(p, i))
		return;
	if (out && (c->wbusy || !tx_room(c, p->pipe_len)))
		return;
	struct fop *f = slot(p);
	if (!f)
		return;
	if (new_rec(p, f, out ? K_SPLICE_OUT : K_SPLICE_IN, i)) {
		f->used = 0;
		return;
	}
	f->op.data = p;
	set_deadline(p, f, 1);
	p->splice_busy = 1;
	if (out) {
		c->wbusy = 1;
		c->wstep = p->step;
		f->len = p->pipe_len;
		SUBMIT(p, f, rio_splice_out(p->loop, &f->op, p->pipe_r, c->fd,
					    f->len, op_cb));
	} else {
		f->len = 1 + below(p, IOBUF);
		SUBMIT(p, f, rio_splice_in(p->loop, &f->op, c->fd, p->pipe_w,
					   f->len, op_cb));
	}
	if (!f->used) {
		p->splice_busy = 0;
		c->wbusy = 0;
	}
}

static void do_timeout(struct prog *p)
{
	struct fop *f = slot(p);
	if (!f)
		return;
	if (new_rec(p, f, K_TIMEOUT, -1)) {
		f->used = 0;
		return;
	}
	f->op.data = p;
	int shortt = chance(p, 60);
	uint64_t ns = shortt ? 1000000ull : LONG_NS;
	f->deadline = shortt; /* a short one completes in its step */
	if (shortt && now_ns() + ns > p->quiet_until)
		p->quiet_until = now_ns() + ns;
	rio_op_set_deadline(&f->op, 0);
	SUBMIT(p, f, rio_timeout(p->loop, &f->op, ns, op_cb));
}

static void do_post(struct prog *p)
{
	struct fop *f = slot(p);
	if (!f)
		return;
	if (new_rec(p, f, K_POST, -1)) {
		f->used = 0;
		return;
	}
	f->op.data = p;
	pthread_mutex_lock(&p->mu);
	p->post_req = f;
	p->post_done = 0;
	pthread_cond_broadcast(&p->cv);
	uint64_t end = now_ns() + 2000000000ull;
	while (!p->post_done && now_ns() < end) {
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += 10000000;
		if (ts.tv_nsec >= 1000000000) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000;
		}
		pthread_cond_timedwait(&p->cv, &p->mu, &ts);
	}
	int r = p->post_done;
	pthread_mutex_unlock(&p->mu);
	if (r != 1) {
		fail(p, "rio_post from another thread: %s",
		     r ? rio_strerror(r) : "thread did not answer");
		f->used = 0;
		p->recs[f->rid].done = -1;
	}
}

static int key_cmp(const struct rec *x, const struct rec *y)
{
	return x->key1 != y->key1 ? (x->key1 > y->key1) - (x->key1 < y->key1)
				  : (x->key2 > y->key2) - (x->key2 < y->key2);
}

static void do_cancel(struct prog *p)
{
	/* a target in flight (not touched by its peer this step), or done */
	struct fop *cand[MAXOPS];
	int n = 0;
	for (int k = 0; k < MAXOPS; k++) {
		struct fop *t = &p->ops[k];
		if (!t->used || t->kind == K_CLOSE || t->kind == K_CANCEL ||
		    t->kind == K_POST || t->cancel_expected ||
		    p->recs[t->rid].shared || p->recs[t->rid].rlside)
			continue;
		struct chan *c = op_chan(p, t);
		if (c && (c->touched || c->closing))
			continue;
		/* not an op of this step: it may or may not have run yet
		 * (a connect the reactor tried at submit, io_uring not
		 * yet), or a short deadline may be due any moment */
		if (p->recs[t->rid].step_sub == p->step)
			continue;
		int j = n++; /* by trace key: slots and submission numbers
			      * depend on the order callbacks ran in */
		while (j > 0 && key_cmp(&p->recs[cand[j - 1]->rid],
					&p->recs[t->rid]) > 0) {
			cand[j] = cand[j - 1];
			j--;
		}
		cand[j] = t;
	}
	struct fop *f = slot(p);
	if (!f)
		return;
	struct fop *t = n && chance(p, 85) ? cand[below(p, (unsigned)n)] : NULL;
	if (new_rec(p, f, K_CANCEL, -1)) {
		f->used = 0;
		return;
	}
	f->op.data = p;
	if (t) {
		f->target = t;
		f->target_rid = t->rid;
		t->cancel_expected = 1;
		p->recs[f->rid].aux = (unsigned)(p->recs[t->rid].key1 * 8 +
						 p->recs[t->rid].key2);
	} else {
		/* a completed op: a free slot that ran before, or an op never
		 * submitted */
		static rio_op idle;
		f->target = NULL;
		f->target_rid = -1;
		SUBMIT(p, f, rio_cancel(p->loop, &f->op, &idle, op_cb));
		return;
	}
	SUBMIT(p, f, rio_cancel(p->loop, &f->op, &t->op, op_cb));
}

static void do_close(struct prog *p, int i)
{
	struct chan *c = chan_at(p, i);
	/* not in the step of its peer's activity or of an op submitted on
	 * it: "-ECANCELED or the real result" would be a race */
	if (!c || c->closing || c->touched ||
	    (c->sub_step == p->step && !p->tearing))
		return;
	struct fop *f = slot(p);
	if (!f)
		return;
	if (new_rec(p, f, K_CLOSE, i)) {
		f->used = 0;
		return;
	}
	f->op.data = p;
	struct fop *on[MAXOPS];
	int n = each_on(p, i, on);
	for (int k = 0; k < n; k++) {
		if (on[k] == f)
			continue;
		on[k]->cancel_expected = 1;
		f->pend_rids[f->npend++] = on[k]->rid;
	}
	/* a splice's other end is the pipe: the pipe's data stays */
	c->closing = 1;
	if (c->rl)
		rl_closing(p, c);
	rio_op_set_deadline(&f->op, 0);
	SUBMIT(p, f, rio_close(p->loop, &f->op, c->fd, op_cb));
}

/* A close's callback opens the next socket at once: it gets the number
 * just closed, while the old fd's completions may still be in the
 * kernel's queues. Then ops on it at once. */
static void reuse_at_once(struct prog *p, struct rec *r, int id)
{
	int type = chance(p, 50) ? CH_USTREAM : chance(p, 50) ? CH_TCP
								: CH_UDGRAM;
	int fd, peer;
	if (make_pair(p, type, &fd, &peer))
		return;
	int i = chan_new(p, type, fd, peer, id);
	if (i < 0) {
		close(fd);
		close(peer);
		return;
	}
	p->ch[i].rlown = p->reuse_own;
	size_t l = strlen(r->note);
	snprintf(r->note + l, sizeof r->note - l, "; ch%d %s opened", id,
		 ctype_name[type]);
	do_recv_on(p, K_RECV, i);
}

/* Take client k off a queue of clients (fds, ids, *n): its fd, and its
 * id in *id. */
static int queue_take(int *fds, int *ids, int *n, int k, int *id)
{
	int fd = fds[k];
	*id = ids[k];
	(*n)--;
	memmove(fds + k, fds + k + 1, (size_t)(*n - k) * sizeof *fds);
	memmove(ids + k, ids + k + 1, (size_t)(*n - k) * sizeof *ids);
	return fd;
}

/* A connection accepted (by an accept op, or handed out by the listener)
 * becomes a channel with the client whose port it has: in queue order on
 * every backend, but a fault plan's aborts are reported later. Returns
 * the channel's slot, or -1 (failed). */
static int claim_accepted(struct prog *p, int *fds, int *ids, int *n, int fd,
			  const char *who)
{
	int port = port_of(fd, 1), k = 0;
	while (k < *n && port_of(fds[k], 0) != port)
		k++;
	if (k == *n) {
		fail(p, "%s gave a connection nobody made", who);
		close(fd);
		return -1;
	}
	if (k != 0 && !p->faults)
		fail(p, "%s gave connection %d of the queue, not the first",
		     who, k);
	int id, peer = queue_take(fds, ids, n, k, &id);
	int i = chan_new(p, CH_TCP, fd, peer, id);
	if (i < 0) {
		close(fd);
		close(peer);
		fail(p, "channel table full");
	}
	return i;
}

static void new_accepted(struct prog *p, struct rec *r, int fd)
{
	(void)r;
	claim_accepted(p, p->conn_q, p->conn_id, &p->nconn, fd, "accept");
}

/* A nonblocking client connecting to `a` (on loopback it is queued on
 * the listener when connect returns). Returns the fd, or -1. */
static int client_to(const struct sockaddr_in *a)
{
	int s = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (s < 0)
		return -1;
	if (connect(s, (const struct sockaddr *)a, sizeof *a) < 0 &&
	    errno != EINPROGRESS) {
		close(s);
		return -1;
	}
	return s;
}

static int l1_open(struct prog *p)
{
	return p->l1 >= 0 && !p->ch[p->l1_ch].closing;
}

static void do_accept(struct prog *p, int multi)
{
	if (!l1_open(p))
		return;
	if (multi && p->accept_multi >= 0 && !p->recs[p->accept_multi].done)
		return;
	/* accepts sharing the listener are twins as reads are: which one
	 * gets a connection is the kernel's choice (io_uring wakes the
	 * newest first, the fallback the oldest), so none has a short
	 * deadline beside another */
	struct fop *on[MAXOPS];
	int others = each_on(p, p->l1_ch, on);
	for (int k = 0; k < others; k++)
		if (on[k]->deadline == 1)
			return;
	struct fop *f = slot(p);
	if (!f)
		return;
	if (new_rec(p, f, multi ? K_ACCEPT_MULTI : K_ACCEPT, p->l1_ch)) {
		f->used = 0;
		return;
	}
	f->op.data = p;
	if (multi) {
		rio_op_set_deadline(&f->op, 0);
		p->accept_multi = f->rid;
		SUBMIT(p, f, rio_accept(p->loop, &f->op, p->l1, NULL, NULL,
					RIO_MULTISHOT, op_cb));
	} else {
		set_deadline(p, f, others == 0);
		f->salen = sizeof f->sa;
		SUBMIT(p, f, rio_accept(p->loop, &f->op, p->l1,
					(struct sockaddr *)&f->sa, &f->salen, 0,
					op_cb));
	}
}

static void peer_connect(struct prog *p)
{
	if (!l1_open(p) || p->nconn >= 8 || chans_free(p) < 20)
		return;
	int s = client_to(&p->l1_addr);
	if (s < 0)
		return;
	p->conn_id[p->nconn] = 1000000 + p->nconnects++;
	p->conn_q[p->nconn++] = s;
	p->ch[p->l1_ch].touched = 1;
}

/* ---- the rio_listener on L4 ---- */

static void lis_accept(rio_listener *l, rio_loop *loop, int fd,
			const struct sockaddr *peer, socklen_t peer_len,
			void *data)
{
	struct prog *p = data;
	rio_accept_counters k;
	rio_listener_counters(l, &k);
	if (p->l4_max && k.live > p->l4_max)
		fail(p, "listener: %u connections live, max_conns %u", k.live,
		     p->l4_max);
	int c = claim_accepted(p, p->q4, p->q4_id, &p->nq4, fd, "listener");
	if (c >= 0)
		p->ch[c].lis = 1;
}

static void lis_stop(rio_listener *l, int err, void *data)
{
	struct prog *p = data;
	(void)l;
	p->lis_stopped = 1;
	p->lis_err = err;
}

static int lis_start(struct prog *p)
{
	struct sockaddr_in a = {.sin_family = AF_INET,
				.sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t al = sizeof a;
	p->l4 = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (p->l4 < 0 || bind(p->l4, (struct sockaddr *)&a, sizeof a) < 0 ||
	    listen(p->l4, 64) < 0 ||
	    getsockname(p->l4, (struct sockaddr *)&p->l4_addr, &al) < 0)
		return -errno;
	p->l4_max = 1 + below(p, 4);
	rio_listener_opts o = {.on_accept = lis_accept, .on_stop = lis_stop,
			       .data = p, .max_conns = p->l4_max,
			       .backoff_ms_min = 1, .backoff_ms_max = 4};
	return rio_listener_start(p->loop, p->l4, &o, &p->lis);
}

static void lis_connect(struct prog *p)
{
	if (!p->lis || p->nq4 >= 12 || chans_free(p) < 20)
		return;
	int s = client_to(&p->l4_addr);
	if (s < 0)
		return;
	p->q4_id[p->nq4] = 2000000 + p->nconnects++;
	p->q4[p->nq4++] = s;
}

/* After a quiet step: a listener with room takes a waiting client, and a
 * client it has not taken is still connected (never shed or reset). */
static void lis_check(struct prog *p)
{
	if (!p->lis || p->lis_stopped)
		return;
	rio_accept_counters k;
	rio_listener_counters(p->lis, &k);
	if (!p->faults && k.shed)
		fail(p, "listener shed %" PRIu64 " connections", k.shed);
	if (!p->faults && p->nq4 && k.live < p->l4_max)
		fail(p, "listener: %u of %u live and %d clients waiting after "
		     "a quiet step", k.live, p->l4_max, p->nq4);
	for (int i = 0; i < p->nq4 && !p->faults; i++) {
		char b;
		ssize_t n = recv(p->q4[i], &b, 1, MSG_PEEK | MSG_DONTWAIT);
		if (n == 0 || (n < 0 && errno != EAGAIN))
			fail(p, "listener: a waiting client was closed (%s)",
			     n == 0 ? "EOF" : strerror(errno));
	}
}

static void do_connect(struct prog *p)
{
	if (chans_free(p) < 20)
		return;
	int s = rio_socket_tcp(AF_INET);
	if (s < 0)
		return;
	int refused = chance(p, 30);
	int i = chan_new(p, CH_CONNECTING, s, -1, -1);
	struct fop *f = slot(p);
	if (i < 0 || !f) {
		if (f)
			f->used = 0;
		if (i >= 0)
			p->ch[i].used = 0;
		close(s);
		return;
	}
	p->ch[i].refused = refused;
	if (new_rec(p, f, K_CONNECT, i)) {
		f->used = 0;
		return;
	}
	f->op.data = p;
	p->recs[f->rid].aux = (unsigned)refused;
	set_deadline(p, f, 0);
	if (chance(p, 20))
		rio_op_set_deadline(&f->op, LONG_NS);
	const struct sockaddr_in *to = refused ? &p->dead_addr : &p->l2_addr;
	f->sa = (struct sockaddr_storage){0};
	memcpy(&f->sa, to, sizeof *to);
	SUBMIT(p, f, rio_connect(p->loop, &f->op, s, (struct sockaddr *)&f->sa,
				 sizeof *to, op_cb));
}

static void peer_act(struct prog *p)
{
	int i = pick_chan(p, 1, 1);
	struct chan *c = chan_at(p, i);
	if (!c || c->peer < 0 || c->peer_gone)
		return;
	/* an op submitted this step may or may not have reached the kernel
	 * yet (the reactor tries a send or a poll at submit, io_uring at
	 * the next enter): what either side would see is not the
	 * program's to say. Peers act first in a step. */
	if (c->sub_step == p->step || c->burst_step == p->step)
		return; /* (and a burst's datagrams are being sent now) */
	unsigned a = below(p, 100);
	c->touched = 1;
	int burst = chance(p, 30) ? 2 + (int)below(p, 5) : 1;
	for (; a < 55 && !c->peer_wr_shut && burst > 0; burst--) {
		/* write (a burst: several datagrams for several reads) */
		uint8_t b[IOBUF];
		size_t n;
		if (c->type == CH_UDGRAM) {
			if (c->dq_t - c->dq_h >= DGRAM_LIMIT)
				return;
			n = chance(p, 10) ? 0 : below(p, DGRAM_MAX + 1);
		} else {
			if (c->p2r_off - c->r_got > TX_LIMIT)
				return;
			n = 1 + below(p, chance(p, 60) ? 200 : IOBUF);
		}
		uint64_t base = c->type == CH_UDGRAM ? c->p2r_off : c->p2r_off;
		for (size_t k = 0; k < n; k++)
			b[k] = pat(c->id, 0, base + k);
		ssize_t w = send(c->peer, b, n, MSG_DONTWAIT | MSG_NOSIGNAL);
		if (w < 0) {
			if (errno != EAGAIN && errno != EPIPE &&
			    errno != ECONNRESET)
				fail(p, "peer send on ch%d: %s", c->id,
				     strerror(errno));
			return;
		}
		if (c->type == CH_UDGRAM) {
			c->dqo[c->dq_t % 64] = c->p2r_off;
			c->dq[c->dq_t++ % 64] = (int)w;
		}
		c->p2r_off += (uint64_t)w;
		tracef(p, "ch%d peer wrote %zd", c->id, w);
	}
	if (a < 55) {
		;
	} else if (a < 65) {
		c->stall = !c->stall;
	} else if (a < 75 && stream(c) && !c->peer_wr_shut) {
		shutdown(c->peer, SHUT_WR);
		c->peer_wr_shut = 1;
		tracef(p, "ch%d peer shut down writing", c->id);
	} else if (a < 83) {
		peer_drain(p, c);
		/* a close with unread bytes resets a TCP or unix stream */
		close(c->peer);
		c->peer = -1;
		c->peer_gone = c->gone_now = 1;
		tracef(p, "ch%d peer closed", c->id);
	} else if (a < 90 && c->type == CH_TCP) {
		struct linger lg = {1, 0};
		setsockopt(c->peer, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
		close(c->peer);
		c->peer = -1;
		c->peer_gone = c->gone_now = 1;
		tracef(p, "ch%d peer reset", c->id);
	} else {
		c->touched = 0;
	}
}

static void return_held(struct prog *p)
{
	for (int k = 0; k < NPOOLS; k++) {
		struct pool *pl = &p->pools[k];
		while (pl->nheld)
			pool_put(p, k, pl->held[--pl->nheld], 1);
	}
}

/* ------------------------------------------------------------------ */
/* Relays                                                              */
/* ------------------------------------------------------------------ */

/*
 * rio_relay between two fuzz sockets: TCP or AF_UNIX stream, fresh pairs
 * or sockets the program used before (with the bytes their peers wrote
 * and ringio never read: the relay passes those on first), and a == b (an
 * echo) sometimes; a splice mode, one of two pools (a small one that runs
 * dry), sometimes an idle timeout. The relay steps draw from their own RNG
 * stream after a step's other actions, so the rest of a seed's program
 * stays what it was; the other actions only no longer pick a relayed
 * socket. The peers of the relayed sockets write pattern bytes, stall,
 * half-close, close or reset; the relay is cancelled, drained, or has one
 * of its sockets closed through the loop.
 *
 * A relay that is not tight never has more written into a direction,
 * since its destination peer last read everything, than the kernel holds
 * for certain whatever the pool's buffer size (rl_safe()): on loopback all
 * of it arrives within the step on every backend, so its result, its
 * counters and what each peer got are the program's and go into the
 * trace. A tight relay (4 KiB socket buffers) is pushed past that: the
 * kernel stops the writers where timing says, so its trace keeps only
 * that it ran; the contract checks hold for it all the same.
 */

static struct rl *rl_of(struct prog *p, const struct chan *c)
{
	return c && c->rl ? &p->rls[c->rl - 1] : NULL;
}

/* The relay's socket on side s (0: a, 1: b), while its channel is open. */
static struct chan *rl_chan(struct prog *p, const struct rl *rl, int s)
{
	struct chan *c = chan_at(p, rl->ch[s]);
	return c && c->id == rl->chid[s] ? c : NULL;
}

static int rl_ndirs(const struct rl *rl)
{
	return rl->echo ? 1 : 2;
}

/* Direction d's source side and destination side. */
static int rl_src(const struct rl *rl, int d)
{
	return rl->echo ? 0 : d;
}

static int rl_dst(const struct rl *rl, int d)
{
	return rl->echo ? 0 : !d;
}

/* The direction c's peer reads (the relay writes into c), and the one it
 * writes into. */
static int rl_dir_into(const struct rl *rl, const struct chan *c)
{
	return rl->echo ? 0 : c->id == rl->chid[0];
}

static int rl_dir_from(const struct rl *rl, const struct chan *c)
{
	return rl->echo ? 0 : c->id == rl->chid[1];
}

static int rl_key(const struct prog *p, const struct rl *rl)
{
	return p->recs[rl->rid].key1;
}

/* Bytes in flight a direction may have for certain without the kernel
 * stopping anyone: a relay sends a buffer at a time, and a unix stream
 * socket charges each send's whole skb (~1 KiB for a few bytes) against
 * a 208 KiB send buffer. */
static uint64_t rl_safe(const struct prog *p, const struct rl *rl)
{
	if (rl->tight)
		return 32768; /* past it, on purpose; bounded for time */
	uint64_t n = 64 * (uint64_t)p->rlpool_size[rl->pool];
	return n < 8192 ? n : 8192;
}

/* c's peer reads what the relay sent it: the source's pattern, in order.
 * With `wait_end`, until the end arrives (EOF, or an error: c's socket is
 * closed), 600 ms at most. Returns the bytes read. */
static uint64_t rl_peer_read(struct prog *p, struct chan *c, int wait_end)
{
	struct rl *rl = rl_of(p, c);
	if (!rl || c->peer < 0 || c->peer_gone)
		return 0;
	int d = rl_dir_into(rl, c), src = rl->chid[rl_src(rl, d)];
	uint64_t total = 0;
	uint8_t b[IOBUF];
	for (int tries = 0; !rl->dst_eof[d] && !rl->dst_err[d];) {
		ssize_t n = recv(c->peer, b, sizeof b, MSG_DONTWAIT);
		if (n > 0) {
			uint64_t at = rl->base[d] + rl->got[d];
			ssize_t i = 0;
			while (i < n && b[i] == pat(src, 0, at + (uint64_t)i))
				i++;
			if (i < n)
				fail(p, "relay #%d: ch%d's peer got a wrong byte "
				     "%" PRIu64 " of ch%d's stream (%" PRIu64
				     " relayed before it)", rl_key(p, rl), c->id,
				     at + (uint64_t)i, src,
				     rl->got[d] + (uint64_t)i);
			rl->got[d] += (uint64_t)n;
			total += (uint64_t)n;
			if (rl->checked[d] && rl->got[d] > rl->k.bytes[d])
				fail(p, "relay #%d: ch%d's peer got %" PRIu64
				     " bytes, more than the %" PRIu64 " its "
				     "counters say were sent on", rl_key(p, rl),
				     c->id, rl->got[d], rl->k.bytes[d]);
			continue;
		}
		if (n == 0) {
			rl->dst_eof[d] = 1;
			break;
		}
		if (errno != EAGAIN) {
			rl->dst_err[d] = errno;
			break;
		}
		if (!wait_end || ++tries > 6000)
			break;
		usleep(100);
	}
	return total;
}

/* A relay pool, created at its first use (by the relay RNG). */
static int rl_pool(struct prog *p, int k)
{
	if (p->rlpool[k])
		return 0;
	static const unsigned count[2][3] = {{1, 2, 4}, {8, 16, 32}};
	static const size_t size[2][3] = {{16, 64, 256}, {1024, 4096, 16384}};
	unsigned n = count[k % 2][below(p, 3)];
	size_t sz = size[k % 2][below(p, 3)];
	int r = rio_bufpool_create(p->loop, n, sz, &p->rlpool[k]);
	if (r) {
		p->rlpool[k] = NULL;
		fail(p, "rio_bufpool_create (relay): %s", rio_strerror(r));
		return -1;
	}
	p->rlpool_count[k] = n;
	p->rlpool_size[k] = sz;
	return 0;
}

/* No buffer of relay pool k is lent out: giving any back is refused. */
static void rl_pool_check(struct prog *p, int k, const char *when)
{
	for (unsigned id = 0; p->rlpool[k] && id < p->rlpool_count[k]; id++)
		if (rio_bufpool_put(p->rlpool[k], (uint16_t)id) == 0) {
			fail(p, "relay pool %d: buffer %u was still lent out %s",
			     k, id, when);
			return;
		}
}

/* A socket for a relay: a stream channel whose peer is there, with no op
 * in flight, nothing of ringio's its peer has not read, and at most
 * `unread` bytes its peer wrote that ringio did not read; or a fresh pair
 * (ids from RL_ID0). Returns its table slot, or -1. */
static int rl_sock(struct prog *p, int other, uint64_t unread)
{
	int fresh = chance(p, 50), tcp = chance(p, 50);
	uint64_t pick = rnd(p);
	int cand[MAXCH], n = 0;
	for (int i = 0; i < MAXCH && !fresh; i++) {
		struct chan *c = chan_at(p, i);
		struct fop *on[MAXOPS];
		if (!c || i == other || !stream(c) || c->rl || c->closing ||
		    (!c->rlown && !p->rl_mixed) ||
		    c->polled ||
		    c->gone_now || c->peer < 0 || c->peer_gone || c->waitall ||
		    c->pump || c->wbusy || c->txq_len ||
		    c->sub_step == p->step || c->p2r_off - c->r_got > unread ||
		    each_on(p, i, on))
			continue;
		add_by_id(p, cand, &n, i);
	}
	if (n)
		return cand[pick % (uint64_t)n];
	if (rl_chans_free(p) < 6)
		return -1;
	int type = tcp ? CH_TCP : CH_USTREAM, fd, peer;
	if (make_pair(p, type, &fd, &peer))
		return -1;
	int i = chan_new(p, type, fd, peer, RL_ID0 + p->nrlch++);
	if (i < 0) {
		close(fd);
		close(peer);
		return -1;
	}
	p->ch[i].rlown = 1;
	tracef(p, "ch%d %s opened for a relay", p->ch[i].id, ctype_name[type]);
	return i;
}

static void rl_cb(rio_loop *loop, rio_op *op, int res);

static void rl_start(struct prog *p)
{
	int echo = chance(p, 20), mode = (int)below(p, 3);
	int tight = chance(p, 20), pk = (int)below(p, 2) + 2 * tight;
	unsigned idle = below(p, 10);
	uint64_t short_ns = (1 + below(p, 3)) * 1000000ull;
	int running = 0;
	for (int k = 0; k < p->nrl; k++)
		running += p->rls[k].phase < RL_ENDING;
	if (p->nrl >= MAXRL || running >= 2 || p->nrec >= MAXREC - 64 ||
	    rl_pool(p, pk))
		return;
	struct rl *rl = &p->rls[p->nrl];
	memset(rl, 0, sizeof *rl);
	rl->pool = pk;
	rl->tight = tight;
	uint64_t unread = rl_safe(p, rl) / 2;
	int ia = rl_sock(p, -1, unread), ib = echo ? ia : rl_sock(p, ia, unread);
	if (ia < 0 || ib < 0)
		return; /* a fresh pair stays, as any channel */
	struct chan *ca = &p->ch[ia], *cb = &p->ch[ib];
	rl->echo = echo;
	rl->mode = no_splice ? RIO_SPLICE_OFF : mode;
	rl->idle_ns = idle < 6 ? 0 : idle < 8 ? LONG_NS : short_ns;
	rl->short_idle = idle >= 8;
	rl->ch[0] = ia;
	rl->ch[1] = ib;
	rl->chid[0] = ca->id;
	rl->chid[1] = cb->id;
	rl->start_step = p->step;
	rl->phase = rl->short_idle ? RL_ENDING : RL_ACTIVE;
	rl->ctl_step = rl->short_idle ? p->step : 0;
	for (int d = 0; d < rl_ndirs(rl); d++) {
		struct chan *s = &p->ch[rl->ch[rl_src(rl, d)]];
		rl->base[d] = s->r_got; /* the relay reads on from here */
		rl->unread[d] = s->p2r_off - s->r_got;
		if (rl->unread[d])
			rl->write_step[rl_src(rl, d)] = p->step;
	}
	rl->rid = p->nrec++;
	struct rec *r = &p->recs[rl->rid];
	memset(r, 0, sizeof *r);
	r->kind = K_RELAY;
	r->rlside = 1;
	r->mrid = 1000000 + p->nrlrec++;
	r->chid = ca->id;
	r->aux = (unsigned)cb->id;
	r->step_sub = p->step;
	r->step_done = -1;
	r->key1 = RL_KEY0 + p->nrkey++;
	int slotno = p->nrl + 1;
	struct chan *both[2] = {ca, cb};
	for (int s = 0; s < 2; s++) {
		struct chan *c = both[s];
		c->rl = slotno;
		c->fin = c->peer_wr_shut;
		c->sub_step = p->step;
		if (tight) {
			int sz = RL_TIGHT_BUF;
			int fds[2] = {c->fd, c->peer};
			for (int k = 0; k < 2; k++) {
				setsockopt(fds[k], SOL_SOCKET, SO_SNDBUF, &sz,
					   sizeof sz);
				setsockopt(fds[k], SOL_SOCKET, SO_RCVBUF, &sz,
					   sizeof sz);
			}
		}
	}
	if (rl->short_idle && now_ns() + rl->idle_ns > p->quiet_until)
		p->quiet_until = now_ns() + rl->idle_ns;
	rio_relay_opts o = {.pool = p->rlpool[pk],
			    .splice = (rio_splice_mode)rl->mode,
			    .idle_ns = rl->idle_ns};
	rio_op_init(&rl->r.op);
	rl->r.op.data = p;
	p->nrl++;
	tracef(p, "relay #%d ch%d-ch%d start mode %d pool %d (%ux%zu) idle %s%s",
	       r->key1, ca->id, cb->id, rl->mode, pk, p->rlpool_count[pk],
	       p->rlpool_size[pk], !rl->idle_ns ? "none"
				    : rl->short_idle ? "short" : "long",
	       tight ? " tight" : "");
	p->in_submit = 1;
	int e = rio_relay_start(p->loop, &rl->r, ca->fd, cb->fd, &o, rl_cb);
	p->in_submit = 0;
	if (e) {
		fail(p, "rio_relay_start refused: %s", rio_strerror(e));
		r->done = -1;
		rl->done = 1;
	}
}

/* The relay's result, against the contract: NULL, or why not. */
static const char *rl_wrong(struct prog *p, struct rl *rl, int res)
{
	const rio_relay_counters *k = &rl->k;
	if (k->failed < -1 || k->failed > (rl->echo ? 0 : 1))
		return "counters.failed names no socket";
	if (res == 0 || res == -ECANCELED || res == -ETIMEDOUT) {
		if (k->failed != -1)
			return "counters.failed names a socket, though no "
			       "socket failed";
	} else if (k->failed < 0) {
		return "a socket's error, but counters.failed names none";
	}
	if (res == 0) {
		for (int d = 0; d < rl_ndirs(rl); d++) {
			struct chan *s = rl_chan(p, rl, rl_src(rl, d));
			if (s && !s->fin)
				return "0 (both ends done), though a source "
				       "peer never sent its FIN";
			if (!k->eof[d])
				return "0, though counters.eof[] says a FIN "
				       "was not carried";
		}
		if (rl->pending)
			return "0, with bytes still held (pending)";
		return NULL;
	}
	if (res == -ECANCELED) {
		if (!rl->cancel_asked && !rl->drain_asked && !rl->close_asked)
			return "-ECANCELED, though no cancel, drain or close "
			       "was asked";
		if (!rl->cancel_asked && !rl->close_asked && rl->pending)
			return "a drain finished with bytes still held";
		return NULL;
	}
	if (res == -ETIMEDOUT)
		return rl->idle_ns ? NULL : "-ETIMEDOUT without an idle timeout";
	if (res != -ECONNRESET && res != -EPIPE && res != -ENOTCONN)
		return "not a result the contract lists for a relay";
	struct chan *c = rl_chan(p, rl, k->failed);
	if (c && !c->peer_gone)
		return "an error of a socket whose peer is still there";
	return NULL;
}

static void rl_cb(rio_loop *loop, rio_op *op, int res)
{
	struct rl *rl = RIO_CONTAINER_OF(op, struct rl, r.op);
	struct prog *p = op->data;
	(void)loop;
	p->callbacks++;
	struct rec *r = &p->recs[rl->rid];
	r->completions++;
	if (p->verbose > 1)
		fprintf(stderr, "  step %d: relay #%d res %d\n", p->step,
			r->key1, res);
	if (p->in_submit)
		fail(p, "relay #%d completed inside a submit call", r->key1);
	if (op->flags & RIO_OP_F_MORE)
		fail(p, "relay #%d got F_MORE", r->key1);
	if (rl->done) {
		fail(p, "relay #%d completed twice", r->key1);
		return;
	}
	rl->done = 1;
	rl->res = r->res = res;
	rl->step_done = r->step_done = p->step;
	r->done = 1;
	rio_relay_get_counters(&rl->r, &rl->k);
	rl->pending = rio_relay_pending(&rl->r);
	const char *why = rl_wrong(p, rl, res);
	if (why)
		fail(p, "relay #%d (ch%d-ch%d) ended with %d (%s): %s (failed "
		     "%d, eof %d%d, bytes %" PRIu64 "/%" PRIu64 ", pending %zu)",
		     r->key1, rl->chid[0], rl->chid[1], res, rio_strerror(res),
		     why, rl->k.failed, rl->k.eof[0], rl->k.eof[1],
		     rl->k.bytes[0], rl->k.bytes[1], rl->pending);
	int others = 0;
	for (int k = 0; k < p->nrl; k++)
		others += !p->rls[k].done && p->rls[k].pool == rl->pool;
	if (!others)
		rl_pool_check(p, rl->pool, "when no relay used it");
}

/* Everything the relay sent on (counters k) arrived at the destination
 * peers still there, whole and in order, and the FIN after it where the
 * relay carried one (and only then): read until it did, 600 ms at most
 * (a tight TCP path may wait for its zero window probe). */
static void rl_check(struct prog *p, struct rl *rl, const rio_relay_counters *k)
{
	for (int d = 0; d < rl_ndirs(rl); d++) {
		struct chan *c = rl_chan(p, rl, rl_dst(rl, d));
		if (!c || c->peer < 0 || c->peer_gone || c->closing ||
		    rl->dst_lossy[d])
			continue;
		for (int t = 0; t < 6000 && !rl->dst_err[d] &&
				(rl->got[d] < k->bytes[d] ||
				 (k->eof[d] && !rl->dst_eof[d]));
		     t++)
			if (!rl_peer_read(p, c, 0))
				usleep(100);
		if (rl->got[d] != k->bytes[d])
			fail(p, "relay #%d: ch%d's peer got %" PRIu64 " bytes, "
			     "its counters say %" PRIu64 " were sent on",
			     rl_key(p, rl), c->id, rl->got[d], k->bytes[d]);
		else if (k->eof[d] && !rl->dst_eof[d])
			fail(p, "relay #%d carried ch%d's FIN, ch%d's peer "
			     "never saw it", rl_key(p, rl),
			     rl->chid[rl_src(rl, d)], c->id);
		else if (!k->eof[d] && rl->dst_eof[d])
			fail(p, "relay #%d: ch%d's peer saw an EOF the relay "
			     "did not carry", rl_key(p, rl), c->id);
		else if (rl->dst_err[d])
			fail(p, "relay #%d: ch%d's peer read %s from an open "
			     "socket", rl_key(p, rl), c->id,
			     strerror(rl->dst_err[d]));
		rl->checked[d] = 1;
	}
}

/* do_close() of a relayed socket (an action, a reap, the teardown). */
static void rl_closing(struct prog *p, struct chan *c)
{
	struct rl *rl = rl_of(p, c);
	if (!rl->done)
		rl->close_asked = 1;
	if (rl->phase < RL_ENDING) {
		rl->phase = RL_ENDING;
		rl->ctl_step = p->step;
	}
	/* a close with bytes the relay did not read is a reset, which drops
	 * what is still in the socket's send queue: a tight relay's may */
	int d = rl_dir_into(rl, c);
	if (rl->tight && !rl->checked[d])
		rl->dst_lossy[d] = 1;
}

/* A relayed socket's close completed: its peer reads what is still on
 * its way, then the end. */
static void rl_close_done(struct prog *p, struct chan *c, struct rec *r)
{
	struct rl *rl = rl_of(p, c);
	rl_peer_read(p, c, 1);
	snprintf(r->note, sizeof r->note, "%s relayed by #%d",
		 ctype_name[c->type], rl_key(p, rl));
}

/* Side s's peer closed or reset, in `step`: bytes the other side's peer
 * wrote in this step go into a socket that answers with a reset, or both
 * peers went at once; which the relay sees first is timing. */
static void rl_gone(struct rl *rl, int s, int o, int step)
{
	if (rl->write_step[o] == step || rl->gone_step[o] == step)
		rl->racy = 1;
	rl->gone_step[s] = step;
}

/* The peer of a relayed socket acts (before the relay's own actions in a
 * step: they never share one). */
static void rl_peer_act(struct prog *p)
{
	int cand[MAXRL], n = 0;
	for (int k = 0; k < p->nrl; k++)
		if (p->rls[k].phase <= RL_DRAINING &&
		    p->rls[k].ctl_step != p->step)
			cand[n++] = k;
	if (!n)
		return;
	struct rl *rl = &p->rls[cand[below(p, (unsigned)n)]];
	int s = rl->echo ? 0 : (int)below(p, 2);
	unsigned a = below(p, 100);
	struct chan *c = rl_chan(p, rl, s);
	if (!c || c->peer < 0 || c->peer_gone || c->closing)
		return;
	int d = rl_dir_from(rl, c), key = rl_key(p, rl);
	int o = rl->echo ? 0 : !s; /* the other side: where c's bytes go */
	c->touched = 1;
	if (a < 50) {
		if (rl->phase != RL_ACTIVE || c->peer_wr_shut)
			return;
		int burst = chance(p, 30) ? 2 + (int)below(p, 3) : 1;
		/* a peer of this relay is gone: the relay may have ended, and
		 * nothing reads what is written now */
		struct chan *oc = rl_chan(p, rl, !s);
		int dead = c->peer_gone || (oc && oc->peer_gone) ||
			   (!rl->echo && !oc);
		for (; burst > 0; burst--) {
			size_t len = rl->tight && chance(p, 30)
					     ? 1 + below(p, 16384)
					     : 1 + below(p, chance(p, 60) ? 200
								       : IOBUF);
			if (rl->unread[d] + len > rl_safe(p, rl))
				continue;
			rl->unread[d] += len;
			if (dead)
				rl->unread[d] = rl_safe(p, rl); /* no more */
			uint8_t b[16384];
			for (size_t k = 0; k < len; k++)
				b[k] = pat(c->id, 0, c->p2r_off + k);
			ssize_t w = send(c->peer, b, len,
					 MSG_DONTWAIT | MSG_NOSIGNAL);
			if (w < 0 && errno == EAGAIN)
				w = 0;
			if (w < 0)
				fail(p, "relay #%d: ch%d's peer write: %s", key,
				     c->id, strerror(errno));
			else if ((size_t)w < len && !rl->tight)
				fail(p, "relay #%d: ch%d's peer could write only "
				     "%zd of %zu bytes, though the relay keeps "
				     "up", key, c->id, w, len);
			if (w > 0)
				c->p2r_off += (uint64_t)w;
			rl->write_step[s] = p->step;
			if (rl->gone_step[o] == p->step)
				rl->racy = 1;
			tracef(p, "relay #%d ch%d peer wrote %zd", key, c->id,
			       rl->tight ? (ssize_t)len : w);
		}
	} else if (a < 62) {
		c->stall = !c->stall;
		tracef(p, "relay #%d ch%d peer %s", key, c->id,
		       c->stall ? "stalls" : "reads again");
	} else if (a < 74) {
		if (c->peer_wr_shut)
			return;
		shutdown(c->peer, SHUT_WR);
		c->peer_wr_shut = c->fin = 1;
		tracef(p, "relay #%d ch%d peer shut down writing", key, c->id);
	} else if (a < 84 || (a < 92 && c->type != CH_TCP)) {
		rl_peer_read(p, c, 0);
		close(c->peer);
		c->peer = -1;
		c->peer_gone = c->gone_now = c->fin = 1;
		rl_gone(rl, s, o, p->step);
		tracef(p, "relay #%d ch%d peer closed", key, c->id);
	} else if (a < 92) {
		struct linger lg = {1, 0};
		setsockopt(c->peer, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
		close(c->peer);
		c->peer = -1;
		c->peer_gone = c->gone_now = 1;
		rl_gone(rl, s, o, p->step);
		tracef(p, "relay #%d ch%d peer reset", key, c->id);
	} else {
		c->touched = 0;
	}
}

/* Cancel it, drain it, or close one of its sockets through the loop: in
 * a step after it started, and not one its peers act in. */
static void rl_ctl(struct prog *p)
{
	int cand[MAXRL], n = 0;
	for (int k = 0; k < p->nrl; k++) {
		struct rl *rl = &p->rls[k];
		struct chan *a = rl_chan(p, rl, 0), *b = rl_chan(p, rl, 1);
		if (rl->phase <= RL_DRAINING && rl->start_step != p->step &&
		    rl->ctl_step != p->step && !(a && a->touched) &&
		    !(b && b->touched))
			cand[n++] = k;
	}
	if (!n)
		return;
	struct rl *rl = &p->rls[cand[below(p, (unsigned)n)]];
	unsigned what = below(p, 100);
	int s = rl->echo ? 0 : (int)below(p, 2), key = rl_key(p, rl);
	if (what < 40 || (what < 65 && rl->phase == RL_DRAINING)) {
		struct fop *f = new_op(p, K_CANCEL, -1);
		if (!f)
			return;
		f->target_rid = rl->rid;
		struct rec *r = rec_of(p, f);
		r->aux = (unsigned)key * 8;
		/* a tight or racy relay may or may not have ended by itself */
		r->shared = rl->tight || rl->racy;
		rl->cancel_asked = 1;
		rl->phase = RL_ENDING;
		rl->ctl_step = p->step;
		SUBMIT(p, f, rio_cancel(p->loop, &f->op, &rl->r.op, op_cb));
	} else if (what < 65) {
		p->in_submit = 1;
		int r = rio_relay_drain(&rl->r);
		p->in_submit = 0;
		if (r && r != -EALREADY && r != -ENOENT)
			fail(p, "rio_relay_drain: %s", rio_strerror(r));
		rl->drain_asked = 1;
		rl->phase = RL_DRAINING;
		rl->ctl_step = p->step;
		tracef(p, "relay #%d drain: %s", key,
		       rl->tight || rl->racy ? "?"
		       : r		      ? strerrorname_np(-r)
					      : "0");
	} else {
		struct chan *c = rl_chan(p, rl, s);
		if (c && !c->closing && !(c->fin && opt_avoid_close_fin))
			do_close(p, rl->ch[s]);
	}
}

/* A relay that ended at the program's word (cancelled, one of its
 * sockets closed, timed out; drained and not tight), in an earlier step:
 * what it sent has arrived; then its sockets close through the loop. */
static void rl_reap(struct prog *p)
{
	for (int k = 0; k < p->nrl; k++) {
		struct rl *rl = &p->rls[k];
		if (!rl->done || rl->ctl_step >= p->step ||
		    !(rl->phase == RL_ENDING ||
		      (rl->phase == RL_DRAINING && !rl->tight)))
			continue;
		rl_check(p, rl, &rl->k);
		rl->phase = RL_REAPED;
		for (int s = 0; s < rl_ndirs(rl); s++) {
			struct chan *c = rl_chan(p, rl, s);
			if (c && !c->closing)
				do_close(p, rl->ch[s]);
		}
	}
}

/* A step's relay actions, from the relay RNG. */
static void rl_step(struct prog *p)
{
	if (!p->relay_on)
		return;
	uint64_t *saved = p->cur;
	p->cur = &p->rrng;
	p->in_rl = 1;
	rl_reap(p);
	int n = (int)below(p, 4);
	for (int k = 0; k < n && !p->fail[0]; k++) {
		unsigned a = below(p, 100);
		if (a < 20)
			rl_start(p);
		else if (a < 85)
			rl_peer_act(p);
		else
			rl_ctl(p);
	}
	p->in_rl = 0;
	p->cur = saved;
}

/* At the end of a step, a relayed socket's peer that does not stall
 * reads what the relay sent it. */
static void rl_step_end(struct prog *p, struct chan *c)
{
	struct rl *rl = rl_of(p, c);
	if (c->stall || c->peer < 0 || c->peer_gone)
		return;
	rl_peer_read(p, c, 0);
	rl->unread[rl_dir_into(rl, c)] = 0;
}

/* After a quiet step: a relay that must have ended has. */
static int rl_stuck(struct prog *p, int report)
{
	for (int k = 0; k < p->nrl; k++) {
		struct rl *rl = &p->rls[k];
		const char *why = NULL;
		if (rl->done)
			continue;
		if (rl->short_idle)
			why = "its short idle timeout passed";
		else if (rl->phase == RL_ENDING)
			why = rl->cancel_asked
				      ? "it was cancelled"
				      : "one of its sockets was closed "
					"through the loop";
		else if (rl->phase == RL_DRAINING && !rl->tight)
			why = "it was drained and its peers keep up";
		if (why) {
			if (report)
				fail(p, "relay #%d (ch%d-ch%d) still in flight "
				     "after a quiet step, though %s",
				     rl_key(p, rl), rl->chid[0], rl->chid[1],
				     why);
			return 1;
		}
	}
	return 0;
}

static int run_quiet(struct prog *p, unsigned limit_ms);

/* Bytes a running relay holds whose peers are all still there (toward a
 * peer that went, the kernel may take its time to say so: a tight TCP
 * path waits for its zero window probe). */
static size_t rl_held(struct prog *p, struct rl *rl)
{
	if (rl->done || rl->gone_step[0] || rl->gone_step[1])
		return 0;
	return rio_relay_pending(&rl->r);
}

/* A relay's TCP socket, or its peer's, has bytes out that TCP is sending
 * again: a tight receive buffer dropped them (loopback drops what a full
 * receive buffer cannot take), and the retransmission timer backs off,
 * 0.2 s, 0.4 s, 0.8 s..., past any bound a step can wait (seed
 * 93903156). The bytes the relay holds then are TCP's to move, later. */
static int rl_tcp_backoff(struct prog *p, struct rl *rl)
{
	for (int s = 0; s < 2; s++) {
		struct chan *c = rl_chan(p, rl, s);
		if (!c || c->type != CH_TCP)
			continue;
		int fds[2] = { c->fd, c->peer };
		for (int i = 0; i < 2; i++) {
			struct tcp_info ti;
			socklen_t len = sizeof ti;
			if (fds[i] >= 0 &&
			    getsockopt(fds[i], IPPROTO_TCP, TCP_INFO, &ti,
				       &len) == 0 &&
			    (ti.tcpi_backoff || ti.tcpi_retransmits))
				return 1;
		}
	}
	return 0;
}

/* Teardown, first: the relays' peers read again until nothing moves;
 * then each relay sent on exactly what arrived, and one still running
 * holds nothing. */
static void rl_settle(struct prog *p)
{
	if (!p->nrl)
		return;
	for (int i = 0; i < MAXCH; i++)
		if (p->ch[i].used && p->ch[i].rl)
			p->ch[i].stall = 0;
	/* a tight relay through a pool of one small buffer moves ~10 skbs'
	 * worth a round: as many rounds as it takes, while bytes move; and
	 * a tight TCP path can wait for the zero window probe (200 ms+) */
	uint64_t still_since = 0;
	for (int round = 0; round < 20000 && !p->fail[0]; round++) {
		uint64_t moved = 0;
		for (int i = 0; i < MAXCH; i++)
			if (p->ch[i].used && p->ch[i].rl)
				moved += rl_peer_read(p, &p->ch[i], 0);
		if (run_quiet(p, 3000))
			fail(p, "teardown: the relays did not go quiet in 3 s");
		size_t held = 0;
		for (int k = 0; k < p->nrl; k++)
			held += rl_held(p, &p->rls[k]);
		if (moved)
			still_since = 0;
		else if (!still_since)
			still_since = now_ns();
		if (still_since && round &&
		    (!held || now_ns() - still_since > 600000000ull))
			break;
	}
	for (int k = 0; k < p->nrl; k++) {
		struct rl *rl = &p->rls[k];
		if (rl->phase == RL_REAPED)
			continue;
		rio_relay_counters now = rl->k;
		if (!rl->done)
			rio_relay_get_counters(&rl->r, &now);
		rl_check(p, rl, &now);
		size_t held = rl_held(p, rl);
		if (held && rl_tcp_backoff(p, rl))
			tracef(p, "relay #%d holds %zu bytes: TCP is "
			       "retransmitting, backing off", rl_key(p, rl), held);
		else if (held)
			fail(p, "relay #%d holds %zu bytes after its peers read "
			     "everything and the loop went quiet",
			     rl_key(p, rl), held);
	}
}

/* Teardown, last (every op done): what arrived is what the counters say
 * was sent on; no pool buffer is lent; the pools go. */
static void rl_final(struct prog *p)
{
	for (int k = 0; k < p->nrl; k++) {
		struct rl *rl = &p->rls[k];
		if (!rl->done)
			continue; /* "never completed", from its record */
		for (int d = 0; d < rl_ndirs(rl); d++)
			if (rl->got[d] > rl->k.bytes[d] ||
			    (rl->checked[d] && rl->got[d] != rl->k.bytes[d]))
				fail(p, "relay #%d: direction %d's peer got %"
				     PRIu64 " bytes in all, its counters say %"
				     PRIu64 " were sent on", rl_key(p, rl), d,
				     rl->got[d], rl->k.bytes[d]);
	}
	for (int k = 0; k < RL_POOLS; k++) {
		if (!p->rlpool[k])
			continue;
		rl_pool_check(p, k, "at the end");
		int r = rio_bufpool_destroy(p->rlpool[k]);
		if (r)
			fail(p, "rio_bufpool_destroy (relay pool %d): %s", k,
			     rio_strerror(r));
		p->rlpool[k] = NULL;
	}
}

/* The relay's line in the canonical trace. */
static void rl_trace(struct prog *p, const struct rec *r)
{
	const struct rl *rl = NULL;
	for (int k = 0; k < p->nrl && !rl; k++)
		if (p->rls[k].rid == (int)(r - p->recs))
			rl = &p->rls[k];
	if (!rl)
		return;
	if (rl->tight || rl->racy) {
		tracef(p, "#%d.%d relay ch%d-ch%d @%d %s", r->key1, r->key2,
		       rl->chid[0], rl->chid[1], r->step_sub,
		       rl->tight ? "tight" : "racy");
		return;
	}
	char res[32];
	if (r->res >= 0)
		snprintf(res, sizeof res, "%d", r->res);
	else
		snprintf(res, sizeof res, "-%s", strerrorname_np(-r->res)
			 ? strerrorname_np(-r->res) : "?");
	/* A socket's error (a reset, a peer gone) races what else happens
	 * in its step: bytes read before it may or may not still be sent
	 * on, a FIN the other way may or may not be carried first, the first
	 * send into a reset socket says ECONNRESET and the next EPIPE. What
	 * is the program's: that a socket failed, and which, where only one
	 * peer went. */
	if (r->res < 0 && r->res != -ECANCELED && r->res != -ETIMEDOUT) {
		int g0 = rl->gone_step[0], g1 = rl->echo ? 0 : rl->gone_step[1];
		int side = g0 && !g1 ? 0 : g1 && !g0 ? 1 : -1;
		tracef(p, "#%d.%d relay ch%d-ch%d @%d..%d socket error, "
		       "failed %d", r->key1, r->key2, rl->chid[0], rl->chid[1],
		       r->step_sub, r->step_done, side < 0 ? -1 : rl->k.failed);
		return;
	}
	tracef(p, "#%d.%d relay ch%d-ch%d @%d..%d %s sent %" PRIu64 "/%" PRIu64
	       " got %" PRIu64 "/%" PRIu64 " eof %d%d failed %d", r->key1,
	       r->key2, rl->chid[0], rl->chid[1], r->step_sub, r->step_done,
	       res, rl->k.bytes[0], rl->k.bytes[1], rl->got[0], rl->got[1],
	       rl->k.eof[0], rl->k.eof[1], rl->k.failed);
}

/* ------------------------------------------------------------------ */
/* Cancel-all                                                          */
/* ------------------------------------------------------------------ */

/*
 * rio_loop_cancel_all() in a step of its own: no other action, no peer
 * activity, and the step before it ran until quiet (nothing left that
 * could complete: stuck() says so), so nothing is ready when it is
 * called. Every op in flight then is one a cancel stops, as do_cancel()
 * models it: it ends in this step with -ECANCELED, or with what it
 * already holds (a MSG_WAITALL recv's bytes), and a multishot op with
 * its final completion; closes, cancels and posts would end alone
 * (after a quiet step none is in flight). A relay ends as rl_ctl()'s
 * cancel ends it; the listener stops, its on_stop getting -ECANCELED.
 * Ops the callbacks submit afterwards (a close's or a timer's reuse) are
 * not touched: they have no cancel_expected, so a -ECANCELED fails them.
 * In a cancel at submit's turn io_uring may deliver first what is
 * already waiting for a multishot op, the fallback not (DESIGN gap 16):
 * why nothing may be waiting here. The steps come from a stream of their
 * own (p->carng): a seed that draws none runs the program it ran before.
 */

/* Ops submitted right after the call, in its turn (before the loop
 * runs, with the cancels it asked for not yet sent or settled): a recv or
 * a multishot recv on a socket nothing else is on, a timer. The
 * cancel-all must not reach them (they have no cancel_expected). */
static void ca_after(struct prog *p)
{
	/* a stream of the step's own: which steps are cancel-all steps
	 * stays a function of the seed alone */
	uint64_t *saved = p->cur, local = mix(p->seed ^ 0x6166746572ull ^
					      ((uint64_t)p->step << 40));
	p->cur = &local;
	int n = (int)below(p, 3);
	for (int k = 0; k < n && !p->fail[0]; k++) {
		if (chance(p, 30)) {
			do_timeout(p);
			continue;
		}
		int cand[MAXCH], nc = 0;
		struct fop *on[MAXOPS];
		for (int i = 0; i < MAXCH; i++) {
			struct chan *c = chan_at(p, i);
			/* polled: whether a shared poll is still on it is
			 * open, and so is whether anything is */
			if (c && data_chan(c) && !c->rl && !c->rlown &&
			    !c->dmown &&
			    !c->closing && !c->polled && !each_on(p, i, on))
				add_by_id(p, cand, &nc, i);
		}
		if (!nc)
			continue;
		int i = cand[below(p, (unsigned)nc)], pi = (int)below(p, NPOOLS);
		struct fop *f;
		if (!chance(p, 30) || p->pools[pi].busy) {
			do_recv_on(p, chance(p, 50) ? K_RECV : K_RECVMSG, i);
		} else if ((f = new_op(p, K_MULTI, i))) {
			/* a multishot recv, beside the multishot ops the
			 * cancel-all is ending */
			f->pool = pi;
			rio_op_set_deadline(&f->op, 0);
			p->pools[pi].busy = 1;
			SUBMIT(p, f, rio_recv_multishot(p->loop, &f->op,
							p->ch[i].fd,
							p->pools[pi].p, op_cb));
			if (!f->used)
				p->pools[pi].busy = 0;
			else
				p->pools[pi].lent = 1;
			dm_share(p, pi);
		}
	}
	p->cur = saved;
}

/* The cancel-all step's action: every op and relay in flight is now one
 * a cancel asked to end; then the call, and ca_after(). */
static void do_cancel_all(struct prog *p)
{
	int nops = 0, nshared = 0, nrl = 0;
	for (int k = 0; k < MAXOPS; k++) {
		struct fop *f = &p->ops[k];
		if (!f->used || f->kind == K_CLOSE || f->kind == K_CANCEL ||
		    f->kind == K_POST)
			continue;
		f->cancel_expected = 1;
		rec_of(p, f)->ca_step = p->step;
		/* whether a shared op (a poll beside a read) is still in
		 * flight is open: counted apart, not in the trace */
		if (rec_of(p, f)->shared)
			nshared++;
		else
			nops++;
	}
	/* as rl_ctl()'s cancel: whether a tight relay already ended by
	 * itself is timing, so every relay not yet told to end is */
	for (int k = 0; k < p->nrl; k++) {
		struct rl *rl = &p->rls[k];
		if (rl->phase > RL_DRAINING)
			continue;
		rl->cancel_asked = 1;
		rl->phase = RL_ENDING;
		rl->ctl_step = p->step;
		nrl++;
	}
	/* a pumped socket's reads all end: nothing reads it on (a burst
	 * into it would find no reads keeping up) */
	for (int i = 0; i < MAXCH; i++)
		p->ch[i].pump = 0;
	int lis = p->lis && !p->lis_stopped;
	if (lis)
		p->lis_ca = p->step;
	p->nca++;
	if (p->verbose > 1)
		fprintf(stderr, "  step %d: cancel-all (%d ops, %d shared, %d "
			"relays%s)\n", p->step, nops, nshared, nrl,
			lis ? ", the listener" : "");
	p->in_submit = 1; /* nothing completes inside the call */
	int r = rio_loop_cancel_all(p->loop);
	p->in_submit = 0;
	if (r)
		fail(p, "rio_loop_cancel_all: %s", rio_strerror(r));
	tracef(p, "cancel-all: %d ops, %d relays%s", nops, nrl,
	       lis ? ", the listener" : "");
	ca_after(p);
}

/* After a cancel-all step: what it found in flight has ended. */
static void ca_check(struct prog *p)
{
	for (int k = 0; k < p->nrec; k++) {
		struct rec *r = &p->recs[k];
		if (r->ca_step == p->step && !r->done)
			fail(p, "op #%d (%s) on ch%d still in flight after the "
			     "cancel-all step", k, kind_name[r->kind], r->chid);
	}
	/* relays: rl_stuck() (each was cancelled) */
	if (p->lis_ca == p->step) {
		if (!p->lis_stopped)
			fail(p, "listener: on_stop never ran after a cancel-all");
		else if (p->lis_err != -ECANCELED)
			fail(p, "listener: on_stop got %s after a cancel-all, "
			     "not -ECANCELED", rio_strerror(p->lis_err));
	}
}

/* Whether a cancel-all step goes before the next step of actions: from
 * the cancel-all stream, so the other draws stay what they were. */
static int ca_draw(struct prog *p)
{
	if (!p->ca_on)
		return 0;
	uint64_t *saved = p->cur;
	p->cur = &p->carng;
	int r = chance(p, 3);
	p->cur = saved;
	return r;
}

/* ------------------------------------------------------------------ */
/* Datagram multishot                                                  */
/* ------------------------------------------------------------------ */

/*
 * rio_recvmsg_multishot on datagram sockets: the other actions' unix
 * datagram pairs (their senders have no address: rio_dgram.peer is NULL)
 * and UDP pairs of the dgram steps' own (the sender is the peer's bound
 * address), into the program's pools: one multishot at a time a pool, as
 * for the stream multishot recvs, which lend a pool to the kernel on
 * io_uring (the datagram receive then takes a kernel multishot recvmsg
 * instead of a poll and recvmmsg batches; pools[].lent says which). A
 * pool whose buffers have no room for a payload after the headroom and
 * the control data is refused at submit (-EINVAL), as is a deadline.
 * Alone on its socket (no read beside it: which would get a datagram is
 * the kernel's choice), so its datagrams are the program's, in order.
 * The steps draw from their own RNG stream (p->dmrng) after the step's
 * other actions and the relay steps': a seed that draws none runs the
 * program it ran before; their ops are named and counted apart
 * (DM_KEY0, dmside), so the other ops' names and callbacks stay.
 */
#define DM_KEY 0x64676d756c74f9d9ull /* "dgmult", and 16 bits: see
					  run_prog() */

/* A pool buffer's room for payload with `control` bytes of control data,
 * or 0 (the pool is refused). */
static size_t dm_room(size_t size, size_t control)
{
	size_t take = RIO_DGRAM_HEADROOM + ((control + 7) & ~(size_t)7);
	return size > take ? size - take : 0;
}

/* One datagram (an F_MORE completion): its buffer, its length against the
 * room and its real length, its sender, its bytes; then the buffer goes
 * back, or is held a while. */
static void dm_datagram(struct prog *p, struct fop *f, struct chan *c,
			int res)
{
	rio_op *op = &f->op;
	struct rec *r = rec_of(p, f);
	if (res < 0) {
		fail(p, "dmulti #%d on ch%d: %d (%s) with F_MORE", f->rid,
		     r->chid, res, rio_strerror(res));
		return;
	}
	if (!(op->flags & RIO_OP_F_BUF)) {
		fail(p, "dmulti #%d on ch%d: a datagram of %d without "
		     "RIO_OP_F_BUF", f->rid, r->chid, res);
		return;
	}
	rio_dgram d;
	int g = rio_dgram_get(op, &d);
	size_t room = f->len; /* set at submit */
	int cut = (op->flags & RIO_OP_F_TRUNC) != 0;
	f->ndg++;
	f->ntrunc += (unsigned)cut;
	p->ndg++;
	p->ndg_trunc += (uint64_t)cut;
	if (g)
		fail(p, "dmulti #%d: rio_dgram_get: %s", f->rid, rio_strerror(g));
	else if (d.data != op->buf || d.len != (size_t)res)
		fail(p, "dmulti #%d: rio_dgram_get says %zu bytes at %p, the "
		     "completion %d at %p", f->rid, d.len, d.data, res,
		     (void *)op->buf);
	else if ((size_t)res > room)
		fail(p, "dmulti #%d: %d bytes into a buffer with room for %zu",
		     f->rid, res, room);
	else if (cut != (d.full_len > d.len) || (cut && (size_t)res != room) ||
		 cut != ((d.msg_flags & MSG_TRUNC) != 0))
		fail(p, "dmulti #%d: %d bytes of %zu (room %zu), F_TRUNC %d, "
		     "msg_flags %#x", f->rid, res, d.full_len, room, cut,
		     (unsigned)d.msg_flags);
	else if (d.control_len || d.control)
		fail(p, "dmulti #%d: %zu bytes of control data nobody asked "
		     "for", f->rid, d.control_len);
	else if (c && c->dmown &&
		 !(d.peer && d.peer_len == c->peer_salen &&
		   !memcmp(d.peer, &c->peer_sa, c->peer_salen)))
		fail(p, "dmulti #%d on ch%d: the sender is not the UDP peer "
		     "(%s, %u bytes)", f->rid, c->id, d.peer ? "an address"
		     : "none", (unsigned)d.peer_len);
	else if (c && !c->dmown && (d.peer || d.peer_len))
		fail(p, "dmulti #%d on ch%d: a sender address (%u bytes, "
		     "family %d) from an unbound unix socket", f->rid, c->id,
		     (unsigned)d.peer_len, d.peer ? d.peer->sa_family : -1);
	/* the real length: of the next one sent (in a burst, any queued) */
	else if (c && c->burst_step != p->step && c->dq_h != c->dq_t &&
		 d.full_len != (size_t)c->dq[c->dq_h % 64])
		fail(p, "dmulti #%d on ch%d: full_len %zu, the datagram sent "
		     "was %d", f->rid, c->id, d.full_len, c->dq[c->dq_h % 64]);
	if (!p->fail[0])
		on_data(p, f, c, op->buf, (size_t)res, room, "dmulti");
	pool_put(p, f->pool, op->buf_id, chance(p, 50) || f->put_now);
}

/* A dmulti on a datagram socket nothing reads, into a pool no multishot
 * uses; or one the contract refuses at submit. */
static void dm_submit(struct prog *p)
{
	int cand[MAXCH], n = 0;
	for (int i = 0; i < MAXCH; i++) {
		struct chan *c = chan_at(p, i);
		/* a pumped socket takes bursts its reads keep up with */
		if (c && c->type == CH_UDGRAM && !c->rl && !c->rlown &&
		    !c->closing && !c->gone_now && !c->pump &&
		    !reads_on(p, i) && !gone_busy(p, i))
			add_by_id(p, cand, &n, i);
	}
	static const size_t ctl[] = {0, 0, 16, 40};
	size_t control = ctl[below(p, 4)];
	/* now and then one the contract refuses: a pool with no room, or a
	 * deadline; else a pool with room (of those no multishot uses) */
	int refuse = chance(p, 8), dl = refuse && chance(p, 50);
	int pools[NPOOLS], np = 0;
	for (int k = 0; k < NPOOLS; k++)
		if (!p->pools[k].dmbusy &&
		    (dm_room(p->pools[k].size, control) != 0) == (!refuse || dl))
			pools[np++] = k;
	if (!n || !np)
		return;
	int i = cand[below(p, (unsigned)n)], pi = pools[below(p, (unsigned)np)];
	struct pool *pl = &p->pools[pi];
	size_t room = dm_room(pl->size, control);
	struct fop *f = new_op(p, K_DMULTI, i);
	if (!f)
		return;
	f->pool = pi;
	f->len = room;
	rio_op_set_deadline(&f->op, dl ? LONG_NS : 0);
	if (!room || dl) {
		/* refused: no callback, nothing in flight, no record */
		p->in_submit = 1;
		int r = rio_recvmsg_multishot(p->loop, &f->op, p->ch[i].fd,
					      pl->p, control, op_cb);
		p->in_submit = 0;
		if (r != -EINVAL) {
			fail(p, "dmulti with %s: submit gave %d (%s), not "
			     "-EINVAL", dl ? "a deadline" : "no room in the "
			     "pool's buffers", r, rio_strerror(r));
			if (r == 0) { /* in flight after all: let it run */
				pl->dmbusy = 1;
				return;
			}
		}
		p->ndm_refused++;
		drop_rec(p, f);
		return;
	}
	rec_of(p, f)->aux = (unsigned)pi;
	pl->dmbusy = 1;
	p->ndm++;
	p->ndm_lent += pl->lent || pl->busy;
	snprintf(rec_of(p, f)->note, sizeof rec_of(p, f)->note, "%s",
		 pl->lent ? "lent" : "user");
	SUBMIT(p, f, rio_recvmsg_multishot(p->loop, &f->op, p->ch[i].fd, pl->p,
					   control, op_cb));
	if (!f->used)
		pl->dmbusy = 0;
	dm_share(p, pi);
}

/*
 * A pool a stream multishot and a dmulti both use (on io_uring a stream's
 * recv lends it to the kernel under a dmulti that took its datagrams in
 * batches: the next one's arm is a kernel recvmsg). Which of the two gets
 * a buffer of a short pool is timing: from now on both give every buffer
 * back at once, so each takes all that is its own within the step. Set
 * when the second is submitted, for the rest of both ops' lives.
 */
static void dm_share(struct prog *p, int pi)
{
	if (!p->pools[pi].busy || !p->pools[pi].dmbusy)
		return;
	for (int k = 0; k < MAXOPS; k++) {
		struct fop *f = &p->ops[k];
		if (f->used && f->pool == pi &&
		    (f->kind == K_MULTI || f->kind == K_DMULTI))
			f->put_now = 1;
	}
	p->nshare++;
}

/* A UDP pair of the dgram steps': both ends bound on loopback and
 * connected to each other (ringio's end takes only its peer's). */
static void dm_open(struct prog *p)
{
	int mine = 0;
	for (int i = 0; i < MAXCH; i++)
		mine += p->ch[i].used && p->ch[i].dmown;
	if (mine >= MAXCH_DM)
		return;
	int fd[2] = {-1, -1};
	struct sockaddr_in a[2];
	for (int k = 0; k < 2; k++) {
		socklen_t al = sizeof a[k];
		a[k] = (struct sockaddr_in){.sin_family = AF_INET,
					    .sin_addr.s_addr =
						    htonl(INADDR_LOOPBACK)};
		fd[k] = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK |
					       SOCK_CLOEXEC, 0);
		if (fd[k] < 0 ||
		    bind(fd[k], (struct sockaddr *)&a[k], sizeof a[k]) < 0 ||
		    getsockname(fd[k], (struct sockaddr *)&a[k], &al) < 0)
			goto bad;
	}
	if (connect(fd[0], (struct sockaddr *)&a[1], sizeof a[1]) < 0 ||
	    connect(fd[1], (struct sockaddr *)&a[0], sizeof a[0]) < 0)
		goto bad;
	int i = chan_new(p, CH_UDGRAM, fd[0], fd[1], DM_ID0 + p->ndmch++);
	if (i < 0)
		goto bad;
	struct chan *c = &p->ch[i];
	c->dmown = 1;
	memcpy(&c->peer_sa, &a[1], sizeof a[1]);
	c->peer_salen = sizeof a[1];
	tracef(p, "ch%d udp opened", c->id);
	return;
bad:
	for (int k = 0; k < 2; k++)
		if (fd[k] >= 0)
			close(fd[k]);
}

/* A dgram step's open UDP pair, by id, or -1. */
static int dm_pick(struct prog *p)
{
	int cand[MAXCH], n = 0;
	for (int i = 0; i < MAXCH; i++) {
		struct chan *c = chan_at(p, i);
		if (c && c->dmown && !c->closing)
			add_by_id(p, cand, &n, i);
	}
	return n ? cand[below(p, (unsigned)n)] : -1;
}

/* The peer of a UDP pair sends a few datagrams (not in a step an op was
 * submitted on it: that may not have reached the kernel yet). */
static void dm_peer_write(struct prog *p)
{
	struct chan *c = chan_at(p, dm_pick(p));
	int burst = 1 + (int)below(p, 4);
	if (!c || c->peer < 0 || c->sub_step == p->step)
		return;
	c->touched = 1;
	for (; burst > 0 && c->dq_t - c->dq_h < DGRAM_LIMIT; burst--) {
		uint8_t b[DGRAM_MAX];
		size_t n = chance(p, 10) ? 0 : below(p, DGRAM_MAX + 1);
		for (size_t k = 0; k < n; k++)
			b[k] = pat(c->id, 0, c->p2r_off + k);
		ssize_t w = send(c->peer, b, n, MSG_DONTWAIT | MSG_NOSIGNAL);
		if (w != (ssize_t)n) {
			fail(p, "udp peer send on ch%d: %zd (%s)", c->id, w,
			     w < 0 ? strerror(errno) : "short");
			return;
		}
		c->dqo[c->dq_t % 64] = c->p2r_off;
		c->dq[c->dq_t++ % 64] = (int)w;
		c->p2r_off += (uint64_t)w;
		tracef(p, "ch%d peer wrote %zd", c->id, w);
	}
}

/* Cancel a dmulti in flight (not one of this step, nor on a socket its
 * peer touched or a close is on), by trace key. */
static void dm_cancel(struct prog *p)
{
	struct fop *cand[MAXOPS];
	int n = 0;
	for (int k = 0; k < MAXOPS; k++) {
		struct fop *t = &p->ops[k];
		struct chan *c = t->used ? op_chan(p, t) : NULL;
		if (!t->used || t->kind != K_DMULTI || t->cancel_expected ||
		    rec_of(p, t)->shared || rec_of(p, t)->step_sub == p->step ||
		    (c && (c->touched || c->closing)))
			continue;
		int j = n++;
		while (j > 0 && key_cmp(&p->recs[cand[j - 1]->rid],
					&p->recs[t->rid]) > 0) {
			cand[j] = cand[j - 1];
			j--;
		}
		cand[j] = t;
	}
	if (!n)
		return;
	struct fop *t = cand[below(p, (unsigned)n)];
	struct fop *f = new_op(p, K_CANCEL, -1);
	if (!f)
		return;
	f->target = t;
	f->target_rid = t->rid;
	t->cancel_expected = 1;
	rec_of(p, f)->aux = (unsigned)(p->recs[t->rid].key1 * 8 +
				       p->recs[t->rid].key2);
	SUBMIT(p, f, rio_cancel(p->loop, &f->op, &t->op, op_cb));
}

/* A step's dgram actions, from their RNG, in some steps. */
static void dm_step(struct prog *p)
{
	if (!p->dm_on || p->fail[0])
		return;
	uint64_t *saved = p->cur;
	p->cur = &p->dmrng;
	p->in_dm = 1;
	int n = chance(p, 50) ? 1 + (int)below(p, 3) : 0;
	for (int k = 0; k < n && !p->fail[0]; k++) {
		unsigned a = below(p, 100);
		if (a < 40)
			dm_submit(p);
		else if (a < 65)
			dm_peer_write(p);
		else if (a < 75)
			dm_open(p);
		else if (a < 82) {
			int i = dm_pick(p);
			if (i >= 0)
				do_close(p, i);
		} else if (a < 90)
			dm_cancel(p);
		else
			return_held(p); /* what the held buffers parked */
	}
	p->in_dm = 0;
	p->cur = saved;
}

/* ------------------------------------------------------------------ */
/* Running a step until the loop is quiet                              */
/* ------------------------------------------------------------------ */

static void wd_cb(rio_loop *loop, rio_op *op, int res)
{
	(void)loop;
	(void)op;
	(void)res;
}

/* An op with a short deadline, or a short timer, still in flight: it
 * completes within its step, however late the machine runs it. */
static int short_pending(const struct prog *p)
{
	for (int k = 0; k < MAXOPS; k++)
		if (p->ops[k].used && p->ops[k].deadline == 1)
			return 1;
	for (int k = 0; k < p->nrl; k++)
		if (!p->rls[k].done && p->rls[k].short_idle)
			return 1; /* a relay's short idle timeout */
	return 0;
}

/* Completions so far: ours, and while a relay runs, those of the ops it
 * runs inside ringio (bytes it moves), which the loop counts (with the
 * watchdog's: not without a relay, where ours say it all). */
static uint64_t progress(const struct prog *p)
{
	int relaying = 0;
	for (int k = 0; k < p->nrl && !relaying; k++)
		relaying = !p->rls[k].done;
	if (!relaying)
		return p->callbacks;
	rio_counters cn;
	rio_loop_counters(p->loop, &cn);
	return p->callbacks + cn.completions;
}

/*
 * Run the loop until it is quiet: a step's first turn is RIO_RUN_ONCE
 * (it blocks, a watchdog timer bounding it), the rest RIO_RUN_NOWAIT with
 * 100 us between quiet turns. On loopback the kernel does its part
 * synchronously; three quiet turns in a row and every short deadline
 * past (plus 3 ms) end the step.
 */
static int run_quiet(struct prog *p, unsigned limit_ms)
{
	uint64_t start = now_ns(), end = start + (uint64_t)limit_ms * 1000000ull;
	int quiet = 0;
	for (unsigned it = 0; it < 1000000; it++) {
		uint64_t before = progress(p);
		/* block in the kernel while a burst arrives, as a server does:
		 * the data lands while the ring works */
		rio_run_mode mode = it == 0 || atomic_load(&p->burst_busy) > 0
					    ? RIO_RUN_ONCE : RIO_RUN_NOWAIT;
		if (mode == RIO_RUN_ONCE && !rio_op_in_flight(&p->wd)) {
			rio_op_init(&p->wd);
			int r = rio_timeout(p->loop, &p->wd, 300000, wd_cb);
			if (r) {
				fail(p, "watchdog timeout: %s", rio_strerror(r));
				return -1;
			}
		}
		int r = rio_loop_run(p->loop, mode);
		if (r < 0) {
			fail(p, "rio_loop_run: %s", rio_strerror(r));
			return -1;
		}
		quiet = progress(p) == before ? quiet + 1 : 0;
		uint64_t t = now_ns();
		/* a fault plan can put off a result for a few turns in a
		 * row (a faked dry pool re-arms next turn) */
		if (quiet >= (p->faults ? 12 : 3) &&
		    t >= p->quiet_until + 3000000ull && !short_pending(p) &&
		    atomic_load(&p->burst_busy) <= 0)
			return 0;
		if (t > end)
			return 1;
		if (quiet && mode == RIO_RUN_NOWAIT)
			usleep(100); /* never while a burst arrives: the loop
				      * waits in the kernel then */
	}
	return 1;
}

/* After a quiet step: nothing may be left pending that could complete. */
static int stuck(struct prog *p, int report)
{
	for (int k = 0; k < MAXOPS; k++) {
		struct fop *f = &p->ops[k];
		if (!f->used)
			continue;
		struct chan *c = op_chan(p, f);
		const char *why = NULL;
		if (f->deadline == 1)
			why = "its short deadline passed";
		else if (f->kind == K_POST)
			why = "a post";
		else if (c && c->waitall && f->kind != K_POLL &&
			 !wr_side(f->kind))
			; /* a WAITALL recv holds bytes it has not reported */
		else if (c && (f->kind == K_RECV || f->kind == K_RECVMSG ||
			       f->kind == K_SPLICE_IN)) {
			if (c->type == CH_UDGRAM ? c->dq_h != c->dq_t
						 : c->p2r_off > c->r_got)
				why = "data is waiting";
			else if (stream(c) && (c->peer_wr_shut || c->peer_gone))
				why = "the peer has gone";
		} else if (c && f->kind == K_DMULTI) {
			struct pool *pl = &p->pools[f->pool];
			if (c->dq_h != c->dq_t && pl->nheld < (int)pl->count)
				why = "datagrams are waiting and the pool has "
				      "buffers";
		} else if (c && f->kind == K_MULTI) {
			struct pool *pl = &p->pools[f->pool];
			int data = c->type == CH_UDGRAM ? c->dq_h != c->dq_t
							: c->p2r_off > c->r_got;
			if (data && pl->nheld < (int)pl->count)
				why = "data is waiting and the pool has buffers";
			/* EOF needs no buffer only on io_uring's word; skip */
		} else if (c && (f->kind == K_SEND || f->kind == K_SENDMSG ||
				 f->kind == K_SPLICE_OUT)) {
			why = "a send with room";
		} else if (f->kind == K_ACCEPT && p->nconn)
			why = "a connection is queued";
		else if (f->kind == K_CLOSE)
			why = "a close waits only for its own fd's ops, all done";
		else if (f->kind == K_CONNECT)
			why = "a loopback connect";
		if (why) {
			if (report)
				fail(p, "op #%d %s on ch%d still pending after a "
				     "quiet step, though %s", f->rid,
				     kind_name[f->kind], c ? c->id : -1, why);
			return 1;
		}
	}
	return rl_stuck(p, report);
}

/* ------------------------------------------------------------------ */
/* One program on one backend                                          */
/* ------------------------------------------------------------------ */

static int setup(struct prog *p)
{
	rio_loop_opts o = {.backend = p->be};
	int r = rio_loop_create(&p->loop, &o);
	if (r)
		return r;
	p->l1 = p->l2 = p->l3 = p->l4 = p->dead_fd = p->pipe_r = p->pipe_w = -1;
	p->accept_multi = -1;
	struct sockaddr_in a = {.sin_family = AF_INET,
				.sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t al = sizeof a;
	int *fds[4] = {&p->l1, &p->l2, &p->l3, &p->dead_fd};
	struct sockaddr_in *addrs[4] = {&p->l1_addr, &p->l2_addr, &p->l3_addr,
					&p->dead_addr};
	for (int k = 0; k < 4; k++) {
		int s = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK |
						SOCK_CLOEXEC, 0);
		if (s < 0 || bind(s, (struct sockaddr *)&a, sizeof a) < 0 ||
		    (k < 3 && listen(s, 64) < 0) ||
		    getsockname(s, (struct sockaddr *)addrs[k], &al) < 0) {
			fail(p, "listener setup: %s", strerror(errno));
			return -EIO;
		}
		*fds[k] = s;
	}
	p->l1_ch = chan_new(p, CH_LISTEN, p->l1, -1, -1);
	int pp[2];
	if (pipe2(pp, O_NONBLOCK | O_CLOEXEC) < 0)
		return -errno;
	p->pipe_r = pp[0];
	p->pipe_w = pp[1];
	for (int k = 0; k < NPOOLS; k++) {
		struct pool *pl = &p->pools[k];
		static const unsigned counts[] = {1, 2, 4, 8};
		static const size_t sizes[] = {16, 64, 256, 1024};
		pl->count = counts[below(p, 4)];
		pl->size = sizes[below(p, 4)];
		r = rio_bufpool_create(p->loop, pl->count, pl->size, &pl->p);
		if (r) {
			fail(p, "rio_bufpool_create: %s", rio_strerror(r));
			return r;
		}
	}
	r = lis_start(p);
	if (r) {
		fail(p, "rio_listener_start: %s", rio_strerror(r));
		return r;
	}
	int ninit = 2 + (int)below(p, 4);
	for (int k = 0; k < ninit; k++) {
		int type = (int)below(p, 3);
		int fd, peer;
		if (make_pair(p, type, &fd, &peer) == 0 &&
		    chan_new(p, type, fd, peer, -1) < 0) {
			close(fd);
			close(peer);
		}
	}
	pthread_mutex_init(&p->mu, NULL);
	pthread_cond_init(&p->cv, NULL);
	if (pthread_create(&p->th, NULL, post_main, p))
		return -EAGAIN;
	return 0;
}

static void act(struct prog *p)
{
	unsigned a = below(p, 100);
	if (a < 9)
		do_recv(p, chance(p, 70) ? K_RECV : K_RECVMSG);
	else if (a < 14)
		do_pump(p);
	else if (a < 26)
		do_send(p, chance(p, 70) ? K_SEND : K_SENDMSG);
	else if (a < 32)
		do_multi(p);
	else if (a < 36)
		do_poll(p);
	else if (a < 40)
		do_splice(p);
	else if (a < 54)
		peer_act(p);
	else if (a < 60)
		do_burst(p);
	else if (a < 64)
		do_accept(p, chance(p, 40));
	else if (a < 67)
		peer_connect(p);
	else if (a < 70)
		lis_connect(p);
	else if (a < 73)
		do_connect(p);
	else if (a < 78) {
		int i = pick_chan(p, 0, 1);
		/* the listener rarely: its queue holds the peers' connects */
		if (i >= 0 && (p->ch[i].type != CH_LISTEN || chance(p, 15)))
			do_close(p, i);
	} else if (a < 84)
		do_cancel(p);
	else if (a < 88)
		do_timeout(p);
	else if (a < 91)
		do_post(p);
	else if (a < 96)
		return_held(p);
	else {
		/* a new pair */
		int type = (int)below(p, 3);
		if (chans_free(p) < 20)
			return;
		int fd, peer;
		if (make_pair(p, type, &fd, &peer) == 0) {
			int i = chan_new(p, type, fd, peer, -1);
			if (i < 0) {
				close(fd);
				close(peer);
			} else {
				tracef(p, "ch%d %s opened", p->ch[i].id,
				       ctype_name[type]);
			}
		}
	}
}

/* Teardown: a close of every channel still open, a cancel of every
 * timer, multishot accept and the like. Each needs an op slot and a
 * record: with none free (a program ending with many ops in flight: seed
 * 93965323), what is left waits for the next round, after the loop ran. */
static void end_everything(struct prog *p)
{
	/* in id order: table slots depend on callback order */
	for (int last = -1;;) {
		int best = -1;
		for (int i = 0; i < MAXCH; i++) {
			struct chan *c = &p->ch[i];
			if (c->used && !c->closing && c->id > last &&
			    (best < 0 || c->id < p->ch[best].id))
				best = i;
		}
		if (best < 0)
			break;
		last = p->ch[best].id;
		do_close(p, best);
	}
	for (int k = 0; k < MAXOPS; k++) {
		struct fop *f = &p->ops[k];
		if (f->used && (f->kind == K_TIMEOUT || f->kind == K_ACCEPT_MULTI ||
				f->kind == K_POST)) {
			if (f->cancel_expected || f->kind == K_POST)
				continue;
			struct fop *cx = slot(p);
			if (!cx || new_rec(p, cx, K_CANCEL, -1))
				break;
			cx->op.data = p;
			cx->target = f;
			cx->target_rid = f->rid;
			f->cancel_expected = 1;
			SUBMIT(p, cx, rio_cancel(p->loop, &cx->op, &f->op, op_cb));
		}
	}
}

static void teardown(struct prog *p)
{
	p->step++;
	p->tearing = 1;
	tracef(p, "teardown");
	rl_settle(p);
	if (p->lis) { /* first: it would accept what the closes make room for */
		lis_check(p);
		int r = rio_listener_stop(p->lis);
		if (r && !(p->lis_ca && r == -EALREADY))
			fail(p, "rio_listener_stop: %s", rio_strerror(r));
	}
	for (int i = 0; i < MAXCH; i++)
		p->ch[i].touched = p->ch[i].gone_now = 0;
	/* the peers go, buffers go back, every fd is closed by the loop */
	return_held(p);
	end_everything(p);
	for (int round = 0; round < 50; round++) {
		/* what found no op slot (or record) free last time: again */
		if (round)
			end_everything(p);
		return_held(p);
		if (run_quiet(p, 3000)) {
			fail(p, "teardown: the loop did not go quiet in 3 s");
			break;
		}
		int busy = 0;
		for (int k = 0; k < MAXOPS; k++)
			busy += p->ops[k].used;
		if (!busy)
			break;
		if (round == 49)
			fail(p, "teardown: ops still in flight after every "
			     "fd was closed");
	}
	if (p->lis) {
		rio_accept_counters k;
		rio_listener_counters(p->lis, &k);
		if (k.live)
			fail(p, "listener: %u connections live after every "
			     "one was released", k.live);
		for (int k2 = 0; k2 < 100 && !p->lis_stopped; k2++)
			run_quiet(p, 1000);
		if (!p->lis_stopped)
			fail(p, "listener: on_stop never ran");
		else if (p->lis_err != (p->lis_ca ? -ECANCELED : 0))
			fail(p, "listener stopped with %s", rio_strerror(p->lis_err));
		int r = rio_listener_destroy(p->lis);
		if (r)
			fail(p, "rio_listener_destroy: %s", rio_strerror(r));
		tracef(p, "listener max %u accepted %" PRIu64 " shed %" PRIu64
		       " waiting %d", p->l4_max, k.accepted, k.shed, p->nq4);
		p->lis = NULL;
	}
	for (int k = 0; k < p->nq4; k++)
		close(p->q4[k]);
	if (p->l4 >= 0)
		close(p->l4);
	if (rio_op_in_flight(&p->wd)) {
		rio_op c;
		rio_op_init(&c);
		rio_cancel(p->loop, &c, &p->wd, wd_cb);
		for (int k = 0; k < 1000 && rio_loop_run(p->loop, RIO_RUN_ONCE) > 0;
		     k++)
			;
	}
	for (int k = 0; k < p->nrec; k++)
		if (p->recs[k].done == 0)
			fail(p, "op #%d (%s) never completed", k,
			     kind_name[p->recs[k].kind]);
	rio_counters cn;
	rio_loop_counters(p->loop, &cn);
	if (cn.ops_submitted != cn.ops_completed)
		fail(p, "counters: %" PRIu64 " ops submitted, %" PRIu64
		     " completed", cn.ops_submitted, cn.ops_completed);
	for (int k = 0; k < NPOOLS; k++) {
		int r = rio_bufpool_destroy(p->pools[k].p);
		if (r)
			fail(p, "rio_bufpool_destroy: %s", rio_strerror(r));
	}
	rl_final(p);
	pthread_mutex_lock(&p->mu);
	p->th_stop = 1;
	pthread_cond_broadcast(&p->cv);
	pthread_mutex_unlock(&p->mu);
	pthread_join(p->th, NULL);
	pthread_mutex_destroy(&p->mu);
	pthread_cond_destroy(&p->cv);
	int r = rio_loop_destroy(p->loop);
	if (r)
		fail(p, "rio_loop_destroy: %s", rio_strerror(r));
	for (int k = 0; k < p->nconn; k++)
		close(p->conn_q[k]);
	for (int k = 0; k < p->nl2; k++)
		close(p->l2_fd[k]);
	close(p->l2);
	close(p->l3);
	close(p->dead_fd);
	close(p->pipe_r);
	close(p->pipe_w);
	/* not on kqueue, and only fds added: libkqueue (Linux) opens and
	 * closes helper sockets and pipes of its own, on its own schedule */
	int after = count_fds();
	if (after > p->baseline_fds && !p->fail[0] &&
	    p->be != RIO_BACKEND_KQUEUE)
		fail(p, "%d fds open after the program, %d before", after,
		     p->baseline_fds);
	for (int i = 0; i < MAXCH; i++)
		free(p->ch[i].txq);
}

static int by_key(const void *a, const void *b)
{
	return key_cmp(*(const struct rec *const *)a,
		       *(const struct rec *const *)b);
}

static int by_shared(const void *a, const void *b)
{
	const struct rec *x = *(const struct rec *const *)a;
	const struct rec *y = *(const struct rec *const *)b;
	if (x->chid != y->chid)
		return (x->chid > y->chid) - (x->chid < y->chid);
	if (x->step_sub != y->step_sub)
		return (x->step_sub > y->step_sub) - (x->step_sub < y->step_sub);
	return (x->kind > y->kind) - (x->kind < y->kind);
}

static void canonical(struct prog *p)
{
	static struct rec *order[MAXREC];
	for (int k = 0; k < p->nrec; k++)
		order[k] = &p->recs[k];
	qsort(order, (size_t)p->nrec, sizeof *order, by_key);
	for (int k = 0; k < p->nrec; k++) {
		struct rec *r = order[k];
		char res[64], name[32];
		snprintf(name, sizeof name, "#%d.%d", r->key1, r->key2);
		if (r->res >= 0 && (r->kind == K_ACCEPT || r->kind == K_ACCEPT_MULTI))
			snprintf(res, sizeof res, "fd");
		else if (r->res >= 0)
			snprintf(res, sizeof res, "%d", r->res);
		else
			snprintf(res, sizeof res, "-%s", strerrorname_np(-r->res)
				 ? strerrorname_np(-r->res) : "?");
		if (r->shared)
			continue; /* counted below */
		else if (r->kind == K_RELAY)
			rl_trace(p, r);
		else if (r->kind == K_DMULTI)
			tracef(p, "%s %s ch%d @%d..%d %s bytes %" PRIu64
			       " pool %u %s", name, kind_name[r->kind], r->chid,
			       r->step_sub, r->step_done, res, r->bytes, r->aux,
			       r->note);
		else if (r->kind == K_MULTI || r->kind == K_ACCEPT_MULTI)
			tracef(p, "%s %s ch%d @%d..%d %s bytes %" PRIu64, name,
			       kind_name[r->kind], r->chid, r->step_sub,
			       r->step_done, res, r->bytes);
		else
			tracef(p, "%s %s ch%d @%d..%d %s aux %u %s", name,
			       kind_name[r->kind], r->chid, r->step_sub,
			       r->step_done, res, r->aux, r->note);
	}
	/* Shared ops: which of them got what is open, and so is which one
	 * submitted which (a pumped read's callback): per socket, how many
	 * of each kind were submitted in each step. */
	static struct rec *sh[MAXREC];
	int ns = 0;
	for (int k = 0; k < p->nrec; k++)
		if (p->recs[k].shared && p->recs[k].done >= 0)
			sh[ns++] = &p->recs[k];
	qsort(sh, (size_t)ns, sizeof *sh, by_shared);
	for (int k = 0; k < ns;) {
		int j = k;
		while (j < ns && !by_shared(&sh[k], &sh[j]))
			j++;
		tracef(p, "shared %s ch%d @%d x%d", kind_name[sh[k]->kind],
		       sh[k]->chid, sh[k]->step_sub, j - k);
		k = j;
	}
}

/* One step: a few actions and the relay steps', or a cancel-all alone;
 * then the loop runs until it is quiet, and the checks of a quiet step. */
static void run_step(struct prog *p, int cancel_all)
{
	for (int i = 0; i < MAXCH; i++)
		p->ch[i].touched = p->ch[i].gone_now = 0;
	p->quiet_until = 0;
	if (cancel_all) {
		do_cancel_all(p);
	} else {
		int nact = 1 + (int)below(p, 4);
		for (int k = 0; k < nact; k++)
			act(p);
		rl_step(p);
		dm_step(p);
	}
	if (run_quiet(p, 3000))
		fail(p, "the loop did not go quiet in 3 s");
	if (atomic_load(&p->burst_busy) < 0)
		fail(p, "the burst thread's send failed");
	for (int i = 0; i < MAXCH; i++) {
		struct chan *c = &p->ch[i];
		if (c->used && c->rl)
			rl_step_end(p, c);
		else if (c->used && !c->stall && data_chan(c))
			peer_drain(p, c);
	}
	/* a loaded machine can put a timer's or the kernel's work off
	 * past the quiet window: look again a few times before calling
	 * anything stuck */
	for (int t = 0; t < 5 && stuck(p, 0); t++) {
		p->quiet_until = now_ns() + 20000000ull;
		run_quiet(p, 3000);
	}
	stuck(p, 1);
	if (cancel_all)
		ca_check(p);
	lis_check(p);
}

static int run_prog(struct prog *p, uint64_t seed, rio_backend_kind be,
		    int steps)
{
	memset(p, 0, sizeof *p);
	p->seed = seed;
	p->rng = seed * 0x2545f4914f6cdd1dull + 1;
	p->rrng = mix(seed ^ 0x72656c6179ull); /* "relay" */
	p->relay_on = !opt_norelay && mix(p->rrng) % 4 != 0;
	/* a third of those: relays take the other actions' sockets too */
	p->rl_mixed = mix(p->rrng + 1) % 3 == 0;
	/* cancel-all steps in half the seeds; in a quarter of those, one
	 * after the last step too. The stream's key is "cancel" and 16 bits
	 * picked so that no seed of test/fuzz_seeds.txt has any: those
	 * replay the programs they did before cancel-all steps. */
	p->carng = mix(seed ^ 0x63616e63656c0b15ull);
	p->ca_on = !opt_noca && mix(p->carng) % 2 == 0;
	p->ca_last = p->ca_on && mix(p->carng + 1) % 4 == 0;
	/* dgram multishot steps in half the seeds, their key "dgmulti" with
	 * 16 bits picked as the cancel-all's were: no seed of
	 * test/fuzz_seeds.txt (nor 93903156, named above) has any */
	p->dmrng = mix(seed ^ DM_KEY);
	p->dm_on = !opt_nodm && mix(p->dmrng) % 2 == 0;
	p->cur = &p->rng;
	p->be = be;
	p->bename = rio_backend_name(be);
	p->verbose = getenv("FUZZ_DEBUG") ? 2 : 0;
	p->faults = getenv("RINGIO_FAULTS") != NULL;
	p->baseline_fds = count_fds();
	for (int i = 0; i < MAXCH; i++) {
		p->ch[i].txq = malloc(TXQ);
		if (!p->ch[i].txq)
			return -ENOMEM;
	}
	int r = setup(p);
	if (r) {
		if (!p->fail[0])
			fail(p, "setup: %s", rio_strerror(r));
		return r;
	}
	int nsteps = steps ? steps : 20 + (int)below(p, 41);
	/* cancel-all steps go between these (ca_draw), and after the last
	 * in a quarter of the seeds that have them */
	p->step = 1;
	for (int k = 1; k <= nsteps && !p->fail[0]; k++, p->step++) {
		if (ca_draw(p)) {
			run_step(p, 1);
			if (p->fail[0])
				break;
			p->step++;
		}
		run_step(p, 0);
	}
	if (p->ca_last && !p->fail[0]) {
		run_step(p, 1);
		p->step++;
	}
	teardown(p);
	canonical(p);
	return p->fail[0] ? -1 : 0;
}

/* ------------------------------------------------------------------ */
/* Driver                                                              */
/* ------------------------------------------------------------------ */

static rio_backend_kind avail[3];
static int navail;
static char plan[256];
static int opt_steps, opt_verbose;

static void replay_cmd(uint64_t seed)
{
	/* --faults, not RINGIO_FAULTS: main() sets that from --faults */
	fprintf(stderr, "  replay: test/fuzz --seed %" PRIu64 " --backends ",
		seed);
	for (int b = 0; b < navail; b++)
		fprintf(stderr, "%s%s", b ? "," : "", rio_backend_name(avail[b]));
	if (plan[0])
		fprintf(stderr, " --faults '%s'", plan);
	if (opt_steps)
		fprintf(stderr, " --steps %d", opt_steps);
	if (opt_norelay)
		fprintf(stderr, " --no-relay");
	if (opt_noca)
		fprintf(stderr, " --no-cancel-all");
	if (opt_nodm)
		fprintf(stderr, " --no-dgram-multi");
	if (opt_avoid_close_fin)
		fprintf(stderr, " --relay-no-close-after-fin");
	fprintf(stderr, " -v\n");
}

static void first_diff(const char *a, const char *b, const char *na,
		       const char *nb)
{
	int line = 1;
	const char *la = a, *lb = b;
	while (*a && *a == *b) {
		if (*a == '\n') {
			line++;
			la = a + 1;
			lb = b + 1;
		}
		a++;
		b++;
	}
	a = la;
	b = lb;
	const char *ea = strchr(a, '\n'), *eb = strchr(b, '\n');
	fprintf(stderr, "  first difference at trace line %d:\n", line);
	fprintf(stderr, "    %-7s %.*s\n", na, ea ? (int)(ea - a) : 80, a);
	fprintf(stderr, "    %-7s %.*s\n", nb, eb ? (int)(eb - b) : 80, b);
}

static uint64_t ca_seeds, ca_steps; /* seeds with cancel-all steps, steps */
/* seeds with dmulti ops; the ops (on a lent pool), datagrams (cut),
 * refused submits */
static uint64_t dm_seeds, dm_ops, dm_lent, dm_dgrams, dm_trunc, dm_refused,
	dm_shared;

/* Run one seed on every backend; 0 if all agree and pass. */
static int one_seed(uint64_t seed)
{
	static struct prog progs[3];
	int bad = 0;
	for (int b = 0; b < navail; b++) {
		struct prog *p = &progs[b];
		free(p->trace);
		run_prog(p, seed, avail[b], opt_steps);
		if (b == 0) {
			ca_seeds += p->nca > 0;
			ca_steps += (uint64_t)p->nca;
			dm_seeds += p->ndm > 0;
			dm_ops += (uint64_t)p->ndm;
			dm_lent += (uint64_t)p->ndm_lent;
			dm_dgrams += p->ndg;
			dm_trunc += p->ndg_trunc;
			dm_refused += (uint64_t)p->ndm_refused;
			dm_shared += (uint64_t)p->nshare;
		}
		if (opt_verbose) {
			fprintf(stderr, "=== seed %" PRIu64 " on %s\n%s", seed,
				p->bename, p->trace ? p->trace : "");
		}
		if (p->fail[0]) {
			fprintf(stderr, "fuzz: seed %" PRIu64 " on %s: %s\n", seed,
				p->bename, p->fail);
			bad = 1;
		}
	}
	if (!bad && !plan[0])
		for (int b = 1; b < navail; b++) {
			const char *t0 = progs[0].trace ? progs[0].trace : "";
			const char *tb = progs[b].trace ? progs[b].trace : "";
			if (strcmp(t0, tb)) {
				fprintf(stderr, "fuzz: seed %" PRIu64 ": %s and %s "
					"diverge\n", seed, progs[0].bename,
					progs[b].bename);
				first_diff(t0, tb, progs[0].bename, progs[b].bename);
				bad = 1;
				break;
			}
		}
	if (bad)
		replay_cmd(seed);
	return bad;
}

static int usage(const char *why)
{
	fprintf(stderr, "fuzz: %s\nusage: fuzz [--seed N | --seeds N [--first S]"
		" | --seconds S [--first S]] [--seed-file F]\n"
		"            [--backends uring,epoll,kqueue|all] [--faults PLAN]"
		" [--steps N] [--no-relay]\n"
		"            [--no-cancel-all] [--no-dgram-multi]"
		" [--relay-no-close-after-fin] [-v]\n",
		why);
	return 2;
}

static int parse_u64(const char *s, uint64_t *out)
{
	char *end;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno || end == s || *end)
		return -1;
	*out = v;
	return 0;
}

int main(int argc, char **argv)
{
	uint64_t seed = 0, nseeds = 0, first = 1, seconds = 0, v;
	int have_seed = 0;
	const char *seed_file = NULL, *backends = "all";
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		const char *val = i + 1 < argc ? argv[i + 1] : NULL;
		if (!strcmp(a, "-v")) {
			opt_verbose = 1;
			continue;
		}
		if (!strcmp(a, "--no-relay")) {
			opt_norelay = 1;
			continue;
		}
		if (!strcmp(a, "--no-cancel-all")) {
			opt_noca = 1;
			continue;
		}
		if (!strcmp(a, "--no-dgram-multi")) {
			opt_nodm = 1;
			continue;
		}
		if (!strcmp(a, "--relay-no-close-after-fin")) {
			opt_avoid_close_fin = 1;
			continue;
		}
		if (!val)
			return usage("a flag without its value, or an unknown flag");
		i++;
		if (!strcmp(a, "--seed") && !parse_u64(val, &seed))
			have_seed = 1;
		else if (!strcmp(a, "--seeds") && !parse_u64(val, &nseeds))
			;
		else if (!strcmp(a, "--first") && !parse_u64(val, &first))
			;
		else if (!strcmp(a, "--seconds") && !parse_u64(val, &seconds))
			;
		else if (!strcmp(a, "--steps") && !parse_u64(val, &v) && v > 0 &&
			 v < 1000)
			opt_steps = (int)v;
		else if (!strcmp(a, "--seed-file"))
			seed_file = val;
		else if (!strcmp(a, "--backends"))
			backends = val;
		else if (!strcmp(a, "--faults"))
			snprintf(plan, sizeof plan, "%s", val);
		else
			return usage("bad flag or value");
	}
	if (!have_seed && !nseeds && !seconds && !seed_file)
		return usage("say --seed, --seeds, --seconds or --seed-file");
	unsetenv("RINGIO_BACKEND");
	if (plan[0])
		setenv("RINGIO_FAULTS", plan, 1);
	else
		unsetenv("RINGIO_FAULTS");
	static const rio_backend_kind all[] = {RIO_BACKEND_URING,
					       RIO_BACKEND_EPOLL,
					       RIO_BACKEND_KQUEUE};
	for (int k = 0; k < 3; k++) {
		const char *n = rio_backend_name(all[k]);
		if (strcmp(backends, "all") != 0) {
			const char *s = strstr(backends, n);
			size_t l = strlen(n);
			if (!s || (s != backends && s[-1] != ',') ||
			    (s[l] && s[l] != ','))
				continue;
		}
		rio_loop *l;
		rio_loop_opts o = {.backend = all[k]};
		int r = rio_loop_create(&l, &o);
		if (r == 0) {
			rio_loop_destroy(l);
			avail[navail++] = all[k];
		} else if (strcmp(backends, "all") != 0) {
			fprintf(stderr, "fuzz: backend %s: %s\n", n, rio_strerror(r));
			return 2;
		} else {
			fprintf(stderr, "fuzz: skipping %s: %s\n", n,
				rio_strerror(r));
		}
	}
	if (!navail)
		return usage("no backend to run");
	for (int b = 0; b < navail; b++)
		no_splice |= avail[b] == RIO_BACKEND_KQUEUE;

	uint64_t t0 = now_ns(), ran = 0, failed = 0;
	if (seed_file) {
		FILE *fp = fopen(seed_file, "r");
		if (!fp) {
			fprintf(stderr, "fuzz: %s: %s\n", seed_file, strerror(errno));
			return 2;
		}
		char line[512];
		while (fgets(line, sizeof line, fp)) {
			char *e;
			unsigned long long s = strtoull(line, &e, 10);
			if (e == line)
				continue; /* comment or blank */
			ran++;
			failed += (uint64_t)one_seed(s);
		}
		fclose(fp);
	}
	if (have_seed) {
		ran++;
		failed += (uint64_t)one_seed(seed);
	}
	if (nseeds || seconds) {
		uint64_t end = t0 + seconds * 1000000000ull;
		for (uint64_t s = first; ; s++) {
			if (nseeds && s - first >= nseeds)
				break;
			if (seconds && now_ns() > end)
				break;
			ran++;
			failed += (uint64_t)one_seed(s);
		}
	}
	double secs = (double)(now_ns() - t0) / 1e9;
	printf("fuzz: %" PRIu64 " seeds x %d backends (", ran, navail);
	for (int b = 0; b < navail; b++)
		printf("%s%s", b ? "," : "", rio_backend_name(avail[b]));
	printf(")%s%s%s in %.1f s: %.1f seeds/s, %" PRIu64 " failed\n",
	       plan[0] ? " faults " : "", plan, "", secs,
	       secs > 0 ? (double)ran / secs : 0.0, failed);
	printf("fuzz: %" PRIu64 " seeds ran cancel-all steps (%" PRIu64
	       " in all)\n", ca_seeds, ca_steps);
	printf("fuzz: %" PRIu64 " seeds ran dmulti ops (%" PRIu64 " in all, %"
	       PRIu64 " on a pool a stream multishot had used; %" PRIu64
	       " datagrams, %" PRIu64 " cut; %" PRIu64 " refused at submit; "
	       "%" PRIu64 " times a pool came to be shared with one)\n",
	       dm_seeds, dm_ops, dm_lent, dm_dgrams, dm_trunc, dm_refused,
	       dm_shared);
	return failed ? 1 : 0;
}

/*
 * rio_signal: signals as completions, on every backend. Delivered while
 * other ops are in flight (and left to finish), one completion per
 * signal; real-time signals one per send; a signal pending before the op
 * is armed; one sent from another thread while the loop waits; the op's
 * own file gone after its final completion; what is refused.
 */
#include "common.h"

#include <dirent.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

typedef struct t_sig {
	rio_op op;
	int n, finals, final_res;
	int got[256];
	unsigned flags;
} t_sig;

static void sig_cb(rio_loop *loop, rio_op *op, int res)
{
	(void)loop;
	t_sig *s = RIO_CONTAINER_OF(op, t_sig, op);
	if (!(op->flags & RIO_OP_F_MORE)) {
		s->finals++;
		s->final_res = res;
		return;
	}
	cr_assert_lt(s->n, 256);
	s->got[s->n++] = res;
}


static void sig_end(rio_loop *loop, t_sig *s)
{
	t_rec c = {.calls = 0};
	cr_assert_eq(rio_cancel(loop, &c.op, &s->op, t_rec_cb), 0);
	T_RUN_UNTIL(loop, s->finals == 1 && c.calls == 1, 5000);
	cr_assert_eq(s->final_res, -ECANCELED);
	cr_assert_eq(c.res, 0);
}

/* signalfds this process has open */
static int signalfds(void)
{
	DIR *d = opendir("/proc/self/fd");
	int n = 0;
	cr_assert_not_null(d);
	for (struct dirent *e; (e = readdir(d));) {
		char path[300], link[64];
		snprintf(path, sizeof path, "/proc/self/fd/%s", e->d_name);
		ssize_t k = readlink(path, link, sizeof link - 1);
		if (k > 0) {
			link[k] = '\0';
			n += strcmp(link, "anon_inode:[signalfd]") == 0;
		}
	}
	closedir(d);
	return n;
}

/* files this process has open */
static int open_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	int n = -1; /* the directory's own */
	cr_assert_not_null(d);
	for (struct dirent *e; (e = readdir(d));)
		n += e->d_name[0] != '.';
	closedir(d);
	return n;
}

#define SIGS (RIO_SIG(SIGUSR1) | RIO_SIG(SIGUSR2))

Test(signal, delivered_while_other_ops_are_in_flight, .timeout = 20)
{
	rio_loop *loop = t_loop();
	static t_sig s;
	memset(&s, 0, sizeof s);
	/* a signalfd of its own, but on kqueue (EVFILT_SIGNAL) a kqueue of
	 * its own, and libkqueue keeps a signalfd of its own */
	int kq = rio_loop_backend(loop, NULL, 0) == RIO_BACKEND_KQUEUE;
	int sfds = signalfds(), fds = open_fds();
	cr_assert_eq(rio_signal(loop, &s.op, SIGS, sig_cb), 0);
	cr_assert_gt(open_fds(), fds, "the op has no file of its own");
	if (!kq)
		cr_assert_eq(signalfds(), sfds + 1);
	int a, b;
	t_pair(&a, &b);
	char buf[8];
	t_rec r = {.calls = 0}, t = {.calls = 0};
	cr_assert_eq(rio_recv(loop, &r.op, a, buf, sizeof buf, 0, t_rec_cb), 0);
	cr_assert_eq(rio_timeout(loop, &t.op, 10000 * T_MS, t_rec_cb), 0);
	t_loop_sleep(loop, 20);
	cr_assert_eq(s.n, 0);
	cr_assert_eq(kill(getpid(), SIGUSR1), 0);
	T_RUN_UNTIL(loop, s.n == 1, 5000);
	cr_assert_eq(s.got[0], SIGUSR1);
	cr_assert_eq(r.calls + t.calls, 0, "the signal ended another op");
#ifdef RINGIO_KQ_EVFILT_SIGNAL
	if (kq) /* the machine cannot: see RINGIO_KQ_EVFILT_SIGNAL */
		cr_log_info("kqueue by libkqueue's EVFILT_SIGNAL sees no "
			    "signal sent to one thread: this one goes to the "
			    "process");
	cr_assert_eq(kq ? kill(getpid(), SIGUSR2)
			: pthread_kill(pthread_self(), SIGUSR2), 0);
#else
	cr_assert_eq(pthread_kill(pthread_self(), SIGUSR2), 0);
#endif
	T_RUN_UNTIL(loop, s.n == 2, 5000);
	cr_assert_eq(s.got[1], SIGUSR2);
	/* the other ops go on */
	cr_assert_eq(send(b, "hi", 2, 0), 2);
	T_RUN_UNTIL(loop, r.calls == 1, 5000);
	cr_assert_eq(r.res, 2);
	cr_assert_eq(s.finals, 0);
	t_rec c = {.calls = 0};
	cr_assert_eq(rio_cancel(loop, &c.op, &t.op, t_rec_cb), 0);
	fds = open_fds();
	sig_end(loop, &s);
	/* its file went at its final completion */
	cr_assert_lt(open_fds(), fds, "the op's file outlived it");
	T_RUN_UNTIL(loop, t.calls == 1 && c.calls == 1, 5000);
	close(a);
	close(b);
	t_loop_done(loop);
	if (!kq)
		cr_assert_eq(signalfds(), sfds);
	/* the signals stay blocked (ringio never unblocks them) */
	sigset_t now;
	pthread_sigmask(SIG_BLOCK, NULL, &now);
	cr_assert(sigismember(&now, SIGUSR1));
}

Test(signal, each_real_time_signal_is_a_completion, .timeout = 20)
{
	rio_loop *loop = t_loop();
	static t_sig s;
	memset(&s, 0, sizeof s);
	cr_assert_eq(rio_signal(loop, &s.op, RIO_SIG(SIGRTMIN + 1), sig_cb),
		     0);
	/* queued, not merged: 50 sent while the loop is not running */
	for (int i = 0; i < 50; i++)
		cr_assert_eq(sigqueue(getpid(), SIGRTMIN + 1,
				      (union sigval){.sival_int = i}), 0);
	T_RUN_UNTIL(loop, s.n == 50, 5000);
	t_loop_sleep(loop, 20);
	cr_assert_eq(s.n, 50);
	for (int i = 0; i < 50; i++)
		cr_assert_eq(s.got[i], SIGRTMIN + 1);
	sig_end(loop, &s);
	t_loop_done(loop);
}

Test(signal, one_pending_before_the_op_is_armed_arrives, .timeout = 20)
{
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGUSR1);
	cr_assert_eq(pthread_sigmask(SIG_BLOCK, &set, NULL), 0);
	cr_assert_eq(kill(getpid(), SIGUSR1), 0);
	rio_loop *loop = t_loop();
	static t_sig s;
	memset(&s, 0, sizeof s);
	cr_assert_eq(rio_signal(loop, &s.op, RIO_SIG(SIGUSR1), sig_cb), 0);
	T_RUN_UNTIL(loop, s.n == 1, 5000);
	cr_assert_eq(s.got[0], SIGUSR1);
	sig_end(loop, &s);
	t_loop_done(loop);
}

static void *raise_later(void *arg)
{
	usleep(50000);
	kill(getpid(), *(int *)arg);
	return NULL;
}

/* The loop blocks in RIO_RUN_DEFAULT with nothing but the signal op in
 * flight: a signal from another thread wakes it. */
Test(signal, a_signal_wakes_a_waiting_loop, .timeout = 20)
{
	rio_loop *loop = t_loop();
	static t_sig s;
	memset(&s, 0, sizeof s);
	static int sig = SIGUSR2;
	cr_assert_eq(rio_signal(loop, &s.op, RIO_SIG(SIGUSR2), sig_cb), 0);
	pthread_t th;
	uint64_t t0 = t_now_ns();
	cr_assert_eq(pthread_create(&th, NULL, raise_later, &sig), 0);
	/* a turn may end with nothing (the fallback tries the new op's file
	 * first): turns until the signal, bounded */
	for (int k = 0; k < 20 && s.n == 0; k++)
		cr_assert_eq(rio_loop_run(loop, RIO_RUN_ONCE), 1);
	uint64_t took = t_now_ns() - t0;
	cr_assert_eq(s.n, 1, "no signal after 20 turns");
	cr_assert_geq(took, 40 * T_MS, "the loop did not wait for it");
	cr_assert_eq(s.got[0], SIGUSR2);
	pthread_join(th, NULL);
	sig_end(loop, &s);
	t_loop_done(loop);
}

/* Two ops watching one signal, on one loop: each delivery goes to one of
 * them (a signalfd read takes it; on kqueue the op that takes it). */
Test(signal, two_ops_on_one_signal_share_its_deliveries, .timeout = 20)
{
	rio_loop *loop = t_loop();
#ifdef RINGIO_KQ_EVFILT_SIGNAL
	if (rio_loop_backend(loop, NULL, 0) == RIO_BACKEND_KQUEUE) {
		t_loop_done(loop);
		cr_skip_test("libkqueue's EVFILT_SIGNAL hands a signal to every "
			     "kqueue that watches it, and takes it itself");
	}
#endif
	static t_sig s1, s2;
	memset(&s1, 0, sizeof s1);
	memset(&s2, 0, sizeof s2);
	cr_assert_eq(rio_signal(loop, &s1.op, RIO_SIG(SIGUSR1), sig_cb), 0);
	cr_assert_eq(rio_signal(loop, &s2.op, RIO_SIG(SIGUSR1), sig_cb), 0);
	for (int i = 0; i < 3; i++) {
		cr_assert_eq(kill(getpid(), SIGUSR1), 0);
		T_RUN_UNTIL(loop, s1.n + s2.n == i + 1, 5000);
		t_loop_sleep(loop, 20); /* a second delivery would come now */
		cr_assert_eq(s1.n + s2.n, i + 1, "signal %d: %d + %d deliveries",
			     i, s1.n, s2.n);
	}
	sig_end(loop, &s1);
	sig_end(loop, &s2);
	t_loop_done(loop);
}

Test(signal, what_is_refused, .timeout = 20)
{
	rio_loop *loop = t_loop();
	rio_op op;
	rio_op_init(&op);
	cr_assert_eq(rio_signal(loop, &op, 0, t_nop_cb), -EINVAL);
	/* SIGRTMAX is the last (64 on Linux): no bit past it */
	if (SIGRTMAX < 64)
		cr_assert_eq(rio_signal(loop, &op, RIO_SIG(SIGRTMAX + 1), t_nop_cb),
			     -EINVAL);
	cr_assert_eq(rio_signal(loop, &op, RIO_SIG(SIGUSR1), NULL), -EINVAL);
	rio_op_set_deadline(&op, 100 * T_MS);
	cr_assert_eq(rio_signal(loop, &op, RIO_SIG(SIGUSR1), t_nop_cb), -EINVAL);
	cr_assert_eq(rio_op_in_flight(&op), 0);
	t_loop_done(loop);
}

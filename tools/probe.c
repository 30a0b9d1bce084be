/*
 * ringio-probe: what this machine offers ringio. The backend `auto` picks
 * and why, the kernel, io_uring's features and the opcodes ringio uses,
 * kernel.io_uring_disabled, and the fd and memlock limits.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <liburing.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/utsname.h>

#include <ringio.h>

static void print_limit(const char *name, int res)
{
	struct rlimit rl;
	if (getrlimit(res, &rl) < 0) {
		printf("%-22s unknown (%s)\n", name, strerror(errno));
		return;
	}
	char cur[32], max[32];
	if (rl.rlim_cur == RLIM_INFINITY)
		snprintf(cur, sizeof cur, "unlimited");
	else
		snprintf(cur, sizeof cur, "%llu", (unsigned long long)rl.rlim_cur);
	if (rl.rlim_max == RLIM_INFINITY)
		snprintf(max, sizeof max, "unlimited");
	else
		snprintf(max, sizeof max, "%llu", (unsigned long long)rl.rlim_max);
	printf("%-22s %s (hard %s)\n", name, cur, max);
}

static void print_backend(void)
{
	rio_loop *loop;
	const char *env = getenv("RINGIO_BACKEND");
	if (env && *env)
		printf("%-22s %s (ignored below: this shows what auto picks)\n",
		       "RINGIO_BACKEND", env);
	unsetenv("RINGIO_BACKEND");
	int r = rio_loop_create(&loop, NULL);
	if (r < 0) {
		printf("%-22s none: rio_loop_create: %s\n", "backend (auto)",
		       rio_strerror(r));
		return;
	}
	rio_backend_reason why;
	const char *msg;
	rio_backend_kind k = rio_loop_backend(loop, &why, &msg);
	printf("%-22s %s (%s): %s\n", "backend (auto)", rio_backend_name(k),
	       rio_backend_reason_name(why), msg);
	rio_loop_destroy(loop);
}

static const struct { unsigned bit; const char *name; } features[] = {
	{IORING_FEAT_SINGLE_MMAP, "SINGLE_MMAP"}, {IORING_FEAT_NODROP, "NODROP"},
	{IORING_FEAT_SUBMIT_STABLE, "SUBMIT_STABLE"},
	{IORING_FEAT_FAST_POLL, "FAST_POLL"}, {IORING_FEAT_EXT_ARG, "EXT_ARG"},
	{IORING_FEAT_NATIVE_WORKERS, "NATIVE_WORKERS"},
	{IORING_FEAT_CQE_SKIP, "CQE_SKIP"}, {IORING_FEAT_LINKED_FILE, "LINKED_FILE"},
};

static const struct { int op; const char *name; } opcodes[] = {
	{IORING_OP_ACCEPT, "ACCEPT"}, {IORING_OP_CONNECT, "CONNECT"},
	{IORING_OP_RECV, "RECV"}, {IORING_OP_SEND, "SEND"},
	{IORING_OP_RECVMSG, "RECVMSG"}, {IORING_OP_SENDMSG, "SENDMSG"},
	{IORING_OP_CLOSE, "CLOSE"}, {IORING_OP_TIMEOUT, "TIMEOUT"},
	{IORING_OP_LINK_TIMEOUT, "LINK_TIMEOUT"},
	{IORING_OP_ASYNC_CANCEL, "ASYNC_CANCEL"}, {IORING_OP_READ, "READ"},
	{IORING_OP_PROVIDE_BUFFERS, "PROVIDE_BUFFERS"},
	{IORING_OP_SPLICE, "SPLICE"}, {IORING_OP_SEND_ZC, "SEND_ZC"},
};

static void print_uring(void)
{
	struct io_uring ring;
	struct io_uring_params p;
	memset(&p, 0, sizeof p);
	int r = io_uring_queue_init_params(8, &ring, &p);
	if (r < 0) {
		printf("%-22s unavailable: io_uring_setup: %s\n", "io_uring",
		       strerror(-r));
		return;
	}
	printf("%-22s", "io_uring features");
	for (size_t i = 0; i < sizeof features / sizeof *features; i++)
		if (p.features & features[i].bit)
			printf(" %s", features[i].name);
	printf("\n");
	struct io_uring_probe *pr = io_uring_get_probe_ring(&ring);
	for (size_t i = 0; i < sizeof opcodes / sizeof *opcodes; i++)
		printf("  IORING_OP_%-16s %s\n", opcodes[i].name,
		       !pr ? "unknown (no probe)"
		       : io_uring_opcode_supported(pr, opcodes[i].op) ? "yes" : "NO");
	if (pr)
		io_uring_free_probe(pr);
	io_uring_queue_exit(&ring);
}

int main(int argc, char **argv)
{
	if (argc == 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
		printf("usage: ringio-probe (takes no arguments): prints what this "
		       "machine offers ringio\n");
		return 0;
	}
	if (argc > 1) {
		fprintf(stderr, "ringio-probe: unexpected argument '%s' "
				"(takes no arguments)\n", argv[1]);
		return 2;
	}
	struct utsname u;
	if (uname(&u) == 0)
		printf("%-22s %s %s %s\n", "kernel", u.sysname, u.release,
		       u.machine);
	print_backend();
	print_uring();
	FILE *f = fopen("/proc/sys/kernel/io_uring_disabled", "r");
	int v;
	if (f && fscanf(f, "%d", &v) == 1)
		printf("%-22s %d\n", "io_uring_disabled", v);
	else
		printf("%-22s absent (kernel before 6.6)\n", "io_uring_disabled");
	if (f)
		fclose(f);
	print_limit("RLIMIT_NOFILE", RLIMIT_NOFILE);
	print_limit("RLIMIT_MEMLOCK", RLIMIT_MEMLOCK);
	return 0;
}

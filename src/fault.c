/* The fault-injection plan, and the rewrites both backends make under it;
 * see fault.h. Test builds only. */
#ifdef RINGIO_FAULT_HOOKS
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"

static const char *const names[RIO__F_COUNT] = {
	"spurious", "errhup", "eagain", "short_write",
	"accept_abort", "accept_eproto", "enobufs", "nocap",
	"old_send",
};

static int parse_errno(const char *v)
{
	static const struct { const char *n; int e; } map[] = {
		{"EPERM", EPERM}, {"ENOSYS", ENOSYS}, {"EINVAL", EINVAL},
		{"ENOMEM", ENOMEM}, {"EACCES", EACCES},
	};
	for (size_t i = 0; i < sizeof map / sizeof *map; i++)
		if (strcmp(v, map[i].n) == 0)
			return map[i].e;
	return -1;
}

static int parse_item(struct rio__faults *f, char *item)
{
	char *eq = strchr(item, '=');
	if (!eq)
		return -EINVAL;
	*eq = '\0';
	const char *v = eq + 1;
	if (strcmp(item, "uring_setup") == 0) {
		f->setup_err = parse_errno(v);
		return f->setup_err < 0 ? -EINVAL : 0;
	}
	char *end;
	unsigned long n = strtoul(v, &end, 10);
	if (*end || end == v)
		return -EINVAL;
	if (strcmp(item, "seed") == 0) {
		f->rng = n ? n : 1;
		return 0;
	}
	for (int k = 0; k < RIO__F_COUNT; k++)
		if (strcmp(item, names[k]) == 0 && n <= 1000) {
			f->rate[k] = (uint16_t)n;
			return 0;
		}
	return -EINVAL;
}

int rio__faults_init(struct rio__faults *f)
{
	memset(f, 0, sizeof *f);
	f->rng = 0x9e3779b97f4a7c15ull;
	const char *env = getenv("RINGIO_FAULTS");
	if (!env || !*env)
		return 0;
	char buf[512];
	if (strlen(env) >= sizeof buf)
		return -EINVAL;
	strcpy(buf, env);
	char *save = NULL;
	for (char *it = strtok_r(buf, ",", &save); it;
	     it = strtok_r(NULL, ",", &save))
		if (parse_item(f, it) < 0)
			return -EINVAL;
	return 0;
}

uint32_t rio__fault_rand(rio_loop *loop)
{
	uint64_t x = loop->faults.rng; /* xorshift64* */
	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	loop->faults.rng = x;
	return (uint32_t)((x * 0x2545f4914f6cdd1dull) >> 32);
}

int rio__fault(rio_loop *loop, enum rio__fault_kind k)
{
	if (loop->faults.rate[k] == 0)
		return 0;
	if (rio__fault_rand(loop) % 1000 >= loop->faults.rate[k])
		return 0;
	loop->ctr.faults_injected++;
	return 1;
}

size_t rio__fault_send_len(rio_loop *loop, size_t len)
{
	if (len > 1 && rio__fault(loop, RIO__F_SHORT_WRITE))
		len = 1 + rio__fault_rand(loop) % (len - 1);
	return len;
}

int rio__fault_accept(rio_loop *loop, int fd)
{
	int err = rio__fault(loop, RIO__F_ACCEPT_ABORT) ? -ECONNABORTED
		: rio__fault(loop, RIO__F_ACCEPT_EPROTO) ? -EPROTO : 0;
	if (!err)
		return fd;
	close(fd);
	return err;
}
#endif

/* A tiny program using the installed ringio: one loop, one timer. */
#include <ringio.h>

#include <stdio.h>

static int fired;
static int result = 1;

static void on_timer(rio_loop *loop, rio_op *op, int res)
{
	(void)loop;
	(void)op;
	fired++;
	result = res;
}

int main(void)
{
	rio_loop *loop = NULL;
	rio_op timer = { 0 };
	const char *msg = NULL;
	rio_backend_kind kind;
	int rc = rio_loop_create(&loop, NULL);

	if (rc != 0) {
		fprintf(stderr, "rio_loop_create: %s\n", rio_strerror(rc));
		return 1;
	}
	rc = rio_timeout(loop, &timer, 1000000, on_timer);
	if (rc == 0)
		rc = rio_loop_run(loop, RIO_RUN_DEFAULT);
	if (rc != 0 || fired != 1 || result != 0) {
		fprintf(stderr, "timer: rc %d fired %d res %d\n", rc, fired,
			result);
		return 1;
	}
	kind = rio_loop_backend(loop, NULL, &msg);
	printf("ringio consumer ok: backend=%s (%s)\n", rio_backend_name(kind),
	       msg ? msg : "?");
	return rio_loop_destroy(loop) == 0 ? 0 : 1;
}

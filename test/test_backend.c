/* Backend selection and reporting: RINGIO_BACKEND, options, reasons,
 * names. */
#include "common.h"

#include <stdlib.h>

Test(backend, backend_is_the_one_the_environment_forced, .timeout = 20)
{
	const char *env = getenv("RINGIO_BACKEND");
	rio_backend_reason reason = RIO_REASON_FAULT;
	const char *msg = NULL;
	rio_loop *loop;
	int want;

	if (!env || !*env)
		cr_skip_test("RINGIO_BACKEND is not set (ctest sets it)");
	want = rio_backend_parse(env);
	cr_assert_geq(want, 0, "ctest passed an unknown backend '%s'", env);
	loop = t_loop();
	cr_assert_eq(rio_loop_backend(loop, &reason, &msg), (rio_backend_kind)want,
		     "asked for %s, runs %s", env,
		     rio_backend_name(rio_loop_backend(loop, NULL, NULL)));
	cr_assert_eq(reason, RIO_REASON_ENV, "reason %d, want RIO_REASON_ENV",
		     (int)reason);
	cr_assert_not_null(msg);
	cr_assert_gt(strlen(msg), 0, "empty backend message");
	cr_log_info("backend: %s (%s)", rio_backend_name(want), msg);
	/* NULL out-parameters are allowed. */
	cr_assert_eq(rio_loop_backend(loop, NULL, NULL), (rio_backend_kind)want);
	t_loop_done(loop);
}

Test(backend, backend_names_round_trip, .timeout = 10)
{
	const rio_backend_kind kinds[] = { RIO_BACKEND_AUTO, RIO_BACKEND_URING,
					   RIO_BACKEND_EPOLL,
					   RIO_BACKEND_KQUEUE };
	const char *names[] = { "auto", "uring", "epoll", "kqueue" };

	for (size_t i = 0; i < 4; i++) {
		cr_assert_str_eq(rio_backend_name(kinds[i]), names[i]);
		cr_assert_eq(rio_backend_parse(names[i]), (int)kinds[i]);
		cr_assert_eq(rio_backend_parse(rio_backend_name(kinds[i])),
			     (int)kinds[i]);
	}
	cr_assert_null(rio_backend_name((rio_backend_kind)42));
	cr_assert_eq(rio_backend_parse("io_uring_please"), -EINVAL);
	cr_assert_eq(rio_backend_parse(""), -EINVAL);
	cr_assert_eq(rio_backend_parse("URINGX"), -EINVAL);
}

Test(backend, unknown_env_backend_is_einval, .timeout = 10)
{
	rio_loop *loop = (rio_loop *)0x1;

	/* Criterion forks every test: this setenv dies with the test. */
	cr_assert_eq(setenv("RINGIO_BACKEND", "no-such-backend", 1), 0);
	cr_assert_eq(rio_loop_create(&loop, NULL), -EINVAL);
	cr_assert_eq(setenv("RINGIO_BACKEND", "", 1), 0);
	loop = NULL;
	{
		int rc = rio_loop_create(&loop, NULL);

		/* An empty value is either ignored or refused, never a crash. */
		cr_assert(rc == 0 || rc == -EINVAL, "got %d", rc);
		if (rc == 0)
			t_loop_done(loop);
	}
}

Test(backend, forced_backend_this_build_lacks_is_enosys, .timeout = 10)
{
	rio_loop *loop = NULL;

	cr_assert_eq(setenv("RINGIO_BACKEND", "kqueue", 1), 0);
#ifdef RIO_TEST_HAVE_KQUEUE
	/* Built with kqueue (libkqueue, on Linux): forcing it works. */
	int rc = rio_loop_create(&loop, NULL);
	cr_assert_eq(rc, 0, "kqueue is built in: %s", rio_strerror(rc));
	cr_assert_eq(rio_loop_backend(loop, NULL, NULL), RIO_BACKEND_KQUEUE);
	t_loop_done(loop);
#else
	cr_assert_eq(rio_loop_create(&loop, NULL), -ENOSYS,
		     "kqueue is not built in: forcing it is ENOSYS");
#endif
}

Test(backend, options_and_reasons_without_env, .timeout = 10)
{
	rio_loop_opts opts = { .backend = RIO_BACKEND_AUTO };
	rio_backend_reason reason;
	rio_backend_kind kind;
	rio_loop *loop = NULL;
	int rc;

	cr_assert_eq(unsetenv("RINGIO_BACKEND"), 0);
	cr_assert_eq(rio_loop_create(NULL, NULL), -EINVAL, "out NULL");
	opts.flags = 1;
	cr_assert_eq(rio_loop_create(&loop, &opts), -EINVAL, "reserved flags");
	opts.flags = 0;
	opts.backend = (rio_backend_kind)42;
	cr_assert_eq(rio_loop_create(&loop, &opts), -EINVAL, "bad backend");

	/* auto: io_uring when it works here, else the fallback with why. */
	opts.backend = RIO_BACKEND_AUTO;
	cr_assert_eq(rio_loop_create(&loop, &opts), 0);
	kind = rio_loop_backend(loop, &reason, NULL);
	cr_assert(kind == RIO_BACKEND_URING || kind == RIO_BACKEND_EPOLL);
	if (kind == RIO_BACKEND_URING)
		cr_assert_eq(reason, RIO_REASON_DEFAULT);
	else
		cr_assert(reason >= RIO_REASON_URING_ENOSYS, "reason %d", reason);
	t_loop_done(loop);

	/* Asked for by the options: reason REQUESTED. */
	opts.backend = kind;
	rc = rio_loop_create(&loop, &opts);
	cr_assert_eq(rc, 0, "forcing the backend auto chose: %s",
		     rio_strerror(rc));
	cr_assert_eq(rio_loop_backend(loop, &reason, NULL), kind);
	cr_assert_eq(reason, RIO_REASON_REQUESTED);
	t_loop_done(loop);
}

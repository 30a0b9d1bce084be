/* Fault suite 7: 10,000 concurrent connections carrying echo traffic, all
 * open at once on the server, every one served, none lost. The clients
 * live in a child process (each side needs its own 10,000 fds). */
#include "tload.h"
#include "tserver.h"

#include <unistd.h>

enum { CONNS = 10000, ROUNDS = 2, SIZE = 512 };

Test(serve_10k, ten_thousand_concurrent_connections, .timeout = 300)
{
	rio_loop *loop;
	tload_result res;
	tsrv s;

	if (!t_raise_nofile(CONNS + 256))
		cr_skip_test("RLIMIT_NOFILE hard limit below %d", CONNS + 256);
	loop = t_loop();
	tsrv_start(&s, loop, NULL, 0);
	tload_opts o = { .port = s.port, .conns = CONNS, .rounds = ROUNDS,
			 .size = SIZE, .max_connecting = 512, .limit_ms = 200000,
			 .seed = 7, .nofile = CONNS + 256 };
	tload_all_at_once(loop, &s, &o, &res);
	T_RUN_UNTIL(loop, s.live == 0, 30000);
	cr_assert_eq(s.accepted, CONNS);
	cr_assert_eq(s.eofs, CONNS, "connections ended otherwise than by EOF "
		     "(last error %s)", rio_strerror(s.last_error));
	tsrv_finish(&s);
	t_loop_done(loop);
}

/* Fault suite 6: half-close. A client sends 64 MiB and shuts down its
 * write side; the echo returns every byte, identical (FNV-1a over the
 * stream), and then closes. Blocking client threads, the server on the
 * test's loop. */
#include "tserver.h"

#include <unistd.h>

#define TOTAL (64u << 20)

Test(serve_halfclose, echo_returns_every_byte_then_closes, .timeout = 120)
{
	rio_loop *loop = t_loop();
	t_stream c = { .total = TOTAL };
	tsrv s;

	tsrv_start(&s, loop, NULL, 0);
	c.fd = t_connect(AF_INET, s.port);
	t_timeouts(c.fd, 30);
	t_stream_run(loop, &c, 90000);
	T_RUN_UNTIL(loop, s.closed == 1, 5000);
	cr_assert_eq(s.eofs, 1, "the server did not close on end of stream");
	cr_assert_eq(s.bytes, TOTAL);
	close(c.fd);
	tsrv_finish(&s);
	t_loop_done(loop);
}

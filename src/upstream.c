/* Upstreams: connect to the first of a list that answers (rio_connect_any),
 * round robin, skipping what failed lately. Being written. */
#include <errno.h>

#include "internal.h"

int rio__connect_any_cancel(rio_loop *loop, rio_op *op)
{
	(void)loop;
	(void)op;
	return -EALREADY;
}

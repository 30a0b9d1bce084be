/* The relay. Being written. */
#include <errno.h>

#include "internal.h"

int rio__relay_cancel(rio_loop *loop, rio_op *op)
{
	(void)loop;
	(void)op;
	return -EALREADY;
}

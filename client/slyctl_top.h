/* slyctl_top.h — the top command of slyctl (client/, internal to slyctl). */
#ifndef CLIENT_SLYCTL_TOP_H
#define CLIENT_SLYCTL_TOP_H

#include "slyce.h"

#define SLY__CTL_TOP_ARGS "[--interval MS] [--count N]"

/* Checks the arguments: 0, or SLY__CTL_USAGE after printing what is wrong. */
int sly__ctl_top_check(int argc, char **argv);
/* Shows frames every --interval ms (default 1000, 100..60000), --count of
 * them or until interrupted. 0, a negative sly_code (err filled), or
 * SLY__CTL_USAGE. */
int sly__ctl_top(sly_conn *c, int argc, char **argv, sly_error *err);

#endif

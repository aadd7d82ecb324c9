/* slyctl_forward.h — the forward command of slyctl (client/, internal).
 *
 * Owns: `slyctl forward`: reading .npy inputs into a shared-memory arena,
 * running the forward, writing one .npy per output, and the summary it
 * prints. It lives outside slyctl.c to keep that file readable; the Makefile
 * builds every client/ file but slyctl.c into libslyce, where this one's
 * symbol stays private (libslyce.so exports sly_[a-z]* only).
 */
#ifndef CLIENT_SLYCTL_FORWARD_H
#define CLIENT_SLYCTL_FORWARD_H

#include <stdbool.h>

#include "slyce.h"

/* What a command returns for a usage error it has already printed. */
#define SLY__CTL_USAGE 1

#define SLY__CTL_FORWARD_ARGS                                                  \
  "NAME|--pipeline P --in X.npy... --out Y.npy... [--cast bfloat16]"

/* Checks the arguments without running anything: 0, or SLY__CTL_USAGE
 * after printing what is wrong. */
int sly__ctl_forward_check(int argc, char **argv);
/* Runs `forward` with the arguments after the command name. Returns 0, a
 * negative sly_code with `err` filled, or SLY__CTL_USAGE. */
int sly__ctl_forward(sly_conn *c, bool json, int argc, char **argv,
                     sly_error *err);

#endif

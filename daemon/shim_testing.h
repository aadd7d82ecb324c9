/* shim_testing.h — test-only windows into a shim_module (daemon/).
 *
 * For tests/unit/test_shim.c only: they let a test prove that a module's
 * forward reads its weight blob. The daemon never calls them.
 */
#ifndef DAEMON_SHIM_TESTING_H
#define DAEMON_SHIM_TESTING_H

#include "torch_shim.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The host weight blob (shim_module_blob_bytes() bytes), or NULL when the
 * module has no weights. Writing it changes what the forward computes on
 * the CPU. */
void *shim_testing_blob(const shim_module *m);
/* 1 when every tensor of the module, enumerated afresh from the module,
 * lies inside the current blob at a SHIM_BLOB_ALIGN boundary, else 0. */
int shim_testing_views_in_blob(const shim_module *m);

#ifdef __cplusplus
}
#endif
#endif

/* shim_testing.h — test-only windows into a shim_module (daemon/).
 *
 * For tests/unit/test_shim*.c only: they let a test prove that a module's
 * forward reads its weight blob, and that binding frees the shim's own. The daemon never calls them.
 */
#ifndef DAEMON_SHIM_TESTING_H
#define DAEMON_SHIM_TESTING_H

#include "torch_shim.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The host weight blob (shim_module_blob_bytes() bytes), or NULL when the
 * module has no weights or is bound. Writing it changes what the forward computes on
 * the CPU. */
void *shim_testing_blob(const shim_module *m);
/* 1 once the memory of the shim's own host blob is freed (by the first
 * shim_module_bind), or when the module never had one. */
int shim_testing_own_blob_freed(const shim_module *m);
/* 1 when every tensor of the module, enumerated afresh from the module,
 * lies inside the current blob (the bound memory once bound) at a
 * SHIM_BLOB_ALIGN boundary, else 0. */
int shim_testing_views_in_blob(const shim_module *m);
/* Bytes of the distinct storages the module's tensors (its blob's slots)
 * hold now: about the blob's size while they have their own values. */
uint64_t shim_testing_value_bytes(const shim_module *m);

#ifdef __cplusplus
}
#endif
#endif

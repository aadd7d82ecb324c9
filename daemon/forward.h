/* forward.h — the forward job: from a validated request to outputs in shared
 * memory (daemon/).
 *
 * Owns: one forward in flight — references to its connection, slices,
 * regions and output pool, taken on the loop thread by forward_submit();
 * the run on the executor (load the slices if needed, wrap the inputs in
 * place, run the slices in order keeping activations in the daemon, copy
 * the outputs once into a server region or the client's `out` range); and
 * the reply, built back on the loop thread.
 */
#ifndef DAEMON_FORWARD_H
#define DAEMON_FORWARD_H

#include <stdbool.h>
#include <stdint.h>

#include "conn.h"
#include "request.h"
#include "slices.h"

/* Checks the request against the connection's regions, takes references and
 * queues the job. On success the reply comes later, in order; on failure
 * nothing was queued and err says why (BAD_REGION, BUSY, NO_MEMORY). The
 * slices (n, in pipeline order) are borrowed from the registry; `retired`
 * lists server regions the request's "release" freed, for the reply. */
int forward_submit(conn *c, const proto_request *req, slice *const *slices,
                   size_t n, const uint64_t *retired, size_t n_retired,
                   uint64_t start_us, proto_error *err);

/* Queues a load of `s`. With want_reply, the reply {"slice", "tier"} ({}
 * for add_slice), or the failure, comes when the load ends; `remove_on_failure` takes a slice that failed to load
 * out of the registry (add_slice). Returns 0, or BUSY / NO_MEMORY. */
int forward_submit_load(conn *c, slice *s, bool want_reply, int op,
                        uint64_t req_id, bool remove_on_failure,
                        const uint64_t *retired, size_t n_retired,
                        uint64_t start_us, proto_error *err);

/* Queues load, evict, pin or unpin of `s` at `tier` (TIER_GPU, TIER_CPU,
 * TIER_DISK); the reply comes when it is done. */
int forward_submit_tier_op(conn *c, slice *s, int op, int tier,
                           uint64_t req_id, const uint64_t *retired,
                           size_t n_retired, uint64_t start_us,
                           proto_error *err);

#endif

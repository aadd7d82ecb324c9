/* outpool.h — the server regions and leases of one connection (daemon/).
 *
 * Owns: the memfds the daemon writes a connection's outputs into, the leases
 * that keep output bytes alive until the client releases them, and the
 * connection's region-id counter (client and server regions share one id
 * space). Allocation happens on the executor thread, leases are committed and
 * released on the loop thread: one mutex guards it all. Reference counted:
 * the connection holds one reference and every job in flight another.
 *
 * Allocation is a bump pointer per region; a region's space is reused once
 * every allocation in it has been released, and a region other than the
 * newest is retired (unmapped, its id reported in retired_regions) when it
 * empties. Simple, and the cap on live bytes bounds what a client can pin.
 */
#ifndef DAEMON_OUTPOOL_H
#define DAEMON_OUTPOOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "errors.h"

/* A new server region is at least this big, so small outputs share one. */
#define OUTPOOL_MIN_REGION (16u << 20)
/* Server regions per connection; past this a forward gets BUSY. */
#define OUTPOOL_MAX_REGIONS 16

typedef struct outpool outpool;
typedef struct outpool_lease outpool_lease;

outpool *outpool_new(void);
void outpool_ref(outpool *p);
void outpool_unref(outpool *p); /* accepts NULL */

/* The next region id of the connection (client and server regions). */
uint64_t outpool_next_region_id(outpool *p);

/* An open lease collects the allocations of one forward. */
outpool_lease *outpool_lease_open(outpool *p);

/* Allocates `bytes` aligned to `align` (a power of two ≤ 4096) for the lease.
 * Fails with SLY_E_BUSY when the connection's live output
 * bytes would pass `cap`, or when it already has OUTPOOL_MAX_REGIONS regions;
 * with SLY_E_NO_MEMORY when a memfd cannot be made. */
int outpool_alloc(outpool *p, outpool_lease *l, uint64_t bytes,
                  uint64_t align, uint64_t cap, uint64_t *region,
                  uint64_t *offset, void **ptr, proto_error *err);

/* Drops an open lease and its allocations (the forward failed). */
void outpool_lease_abort(outpool *p, outpool_lease *l);
/* Makes the lease live and gives it its id. */
uint64_t outpool_lease_commit(outpool *p, outpool_lease *l);

/* Server regions that have not yet been sent to the client, among `ids`:
 * for each (in the given order, each once), a dup of its fd goes into fds.
 * Returns how many (≤ max). */
size_t outpool_take_new_fds(outpool *p, const uint64_t *ids, size_t n_ids,
                            int *fds, size_t max);

/* Releases a committed lease. Regions that became empty and are not the
 * newest are unmapped; their ids are appended to retired (≤ max, the rest
 * are retired on a later release). Returns 0 or SLY_E_NOT_FOUND. */
int outpool_release(outpool *p, uint64_t lease, uint64_t *retired,
                    size_t *n_retired, size_t max, proto_error *err);
bool outpool_has_lease(outpool *p, uint64_t lease);
/* Whether `id` is one of the pool's live server regions. */
bool outpool_has_region(outpool *p, uint64_t id);

/* Live (unreleased) output bytes. */
uint64_t outpool_live_bytes(outpool *p);

#endif

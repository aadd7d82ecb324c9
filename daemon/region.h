/* region.h — shared-memory regions (daemon/).
 *
 * Owns: region, one mapping of a memfd shared with a client. A client region
 * is accepted only when it cannot make the daemon fault: a memfd (shmem) with
 * F_SEAL_SHRINK, not on hugetlbfs, its size read with fstat. Regions are
 * reference counted (atomically: executor threads hold them while they read
 * tensors); the mapping goes away with the last reference.
 */
#ifndef DAEMON_REGION_H
#define DAEMON_REGION_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "errors.h"

typedef struct region {
  uint64_t id; /* unique within its connection, never reused */
  void *base;
  uint64_t bytes;
  bool writable; /* false when the client sealed it against writes */
  bool registered; /* with CUDA (hostmem_register_region) */
  atomic_int refs;
} region;

/* Validates `fd` as a client region of at most `max_bytes` and maps it. The
 * fd stays the caller's (it may be closed right after). On success *out holds
 * one reference, dropped with region_unref(). Returns 0 or SLY_E_BAD_REGION
 * (or SLY_E_NO_MEMORY) with the reason in err. */
int region_map_client(int fd, uint64_t max_bytes, region **out,
                      proto_error *err);

void region_ref(region *r);
/* Drops one reference; the last unmaps and frees. Accepts NULL. */
void region_unref(region *r);

#endif

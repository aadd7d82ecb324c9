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
  atomic_int pin;  /* REGION_PIN_*: registered with CUDA yet? */
  atomic_int refs;
} region;

enum { REGION_PIN_NOT_TRIED, REGION_PIN_TRYING, REGION_PIN_YES, REGION_PIN_NO };

/* Validates `fd` as a client region of at most `max_bytes` and maps it. The
 * fd stays the caller's (it may be closed right after). On success *out holds
 * one reference, dropped with region_unref(). Returns 0 or SLY_E_BAD_REGION
 * (or SLY_E_NO_MEMORY) with the reason in err. */
int region_map_client(int fd, uint64_t max_bytes, region **out,
                      proto_error *err);

/* Registers the region with CUDA (hostmem_register_region) the first time a
 * forward uses it, so that its copies run at pinned speed; a region that
 * cannot be registered is used as it is. On the executor thread, not in
 * map_region: cudaHostRegister takes about 40 ms a GiB, which the loop
 * thread must never wait for. */
void region_pin(region *r);

void region_ref(region *r);
/* Drops one reference; the last unmaps and frees. Accepts NULL. */
void region_unref(region *r);

#endif

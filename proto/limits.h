/* limits.h — every limit a client can run into (proto/).
 *
 * Owns: the table of configurable limits (config key, default, smallest and
 * largest value a config may set), the fixed limits of protocol v1, and
 * proto_limits, the struct the daemon fills from its config and reports in
 * hello. The same table drives the config loader, the hello reply and the
 * tests, so a limit cannot be added in one place only.
 */
#ifndef PROTO_LIMITS_H
#define PROTO_LIMITS_H

#include <stdint.h>

/* X(key, default, min, max). max_frame_bytes stops at 16 MiB: cJSON spends
 * about 30 bytes of heap per byte of a frame full of tiny values. */
#define PROTO_LIMIT_MAP(X)                                                     \
  X(max_frame_bytes, 1048576, 4096, 16777216)                                  \
  X(frame_timeout_ms, 10000, 10, 3600000)                                      \
  X(max_conns_per_uid, 64, 1, 65536)                                           \
  X(max_regions_per_conn, 16, 1, 1024)                                         \
  X(max_region_mb, 4096, 1, 1048576)                                           \
  X(max_registered_mb, 8192, 0, 1048576)                                       \
  X(max_inflight_per_conn, 64, 1, 65536)                                       \
  X(queue_depth, 256, 1, 1048576)                                              \
  X(max_output_mb, 1024, 1, 1048576)                                           \
  X(drain_timeout_ms, 30000, 0, 3600000)

typedef struct {
#define PROTO__LIMIT_FIELD(key, def, lo, hi) uint64_t key;
  PROTO_LIMIT_MAP(PROTO__LIMIT_FIELD)
#undef PROTO__LIMIT_FIELD
} proto_limits;

/* Fixed by protocol v1. */
#define PROTO_HEADER_BYTES 4
#define PROTO_MAX_DIMS 8
#define PROTO_MAX_TENSORS 16
#define PROTO_MAX_FDS 1       /* per frame, and only on map_region */
#define PROTO_NAME_MAX 128    /* slice, pipeline, constructor names (bytes) */
#define PROTO_CLIENT_MAX 128  /* hello.client */
#define PROTO_MAX_IDS 64      /* ids in "release" / "leases" */
#define PROTO_MAX_INT 9007199254740991ULL /* 2^53 - 1: exact in JSON */

void proto_limits_default(proto_limits *l);

#endif

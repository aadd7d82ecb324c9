/* request.h — parsing and validating requests of protocol v1 (proto/).
 *
 * Owns: the op table and proto_request, the typed form of one request frame.
 * proto_request_parse() checks everything that can be checked without the
 * daemon's state: JSON shape, the id, unknown and duplicate fields, types,
 * integer ranges (0..2^53-1), name lengths, dtypes, dims, tensor counts and
 * tensor sizes. Region ids and bounds are checked later, against the
 * connection's regions (proto_tensor_check). No I/O, no logging.
 */
#ifndef PROTO_REQUEST_H
#define PROTO_REQUEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cJSON.h>

#include "errors.h"
#include "limits.h"
#include "tensor.h"

/* X(enum suffix, wire name, needs admin) */
#define PROTO_OP_MAP(X)                                                        \
  X(HELLO, "hello", 0)                                                         \
  X(MAP_REGION, "map_region", 0)                                               \
  X(UNMAP_REGION, "unmap_region", 0)                                           \
  X(FORWARD, "forward", 0)                                                     \
  X(RELEASE, "release", 0)                                                     \
  X(SET_ACTIVE_SLICE, "set_active_slice", 0)                                   \
  X(LIST, "list", 0)                                                           \
  X(STATS, "stats", 0)                                                         \
  X(LOAD, "load", 0)                                                           \
  X(EVICT, "evict", 0)                                                         \
  X(PIN, "pin", 1)                                                             \
  X(UNPIN, "unpin", 1)                                                         \
  X(ADD_SLICE, "add_slice", 1)                                                 \
  X(REMOVE_SLICE, "remove_slice", 1)                                           \
  X(RELOAD, "reload", 1)                                                       \
  X(SHUTDOWN, "shutdown", 1)

typedef enum {
#define PROTO__OP_ENUM(e, name, admin) PROTO_OP_##e,
  PROTO_OP_MAP(PROTO__OP_ENUM)
#undef PROTO__OP_ENUM
  PROTO_OP_COUNT
} proto_op;

const char *proto_op_name(proto_op op);
bool proto_op_is_admin(proto_op op);

typedef enum { PROTO_TIER_GPU, PROTO_TIER_CPU, PROTO_TIER_DISK } proto_tier;
const char *proto_tier_name(proto_tier t);

typedef struct {
  bool has_id; /* false when the id was missing or invalid: reply with null */
  uint64_t id;
  proto_op op;

  /* "release": lease ids to release before this request runs (any op). */
  uint32_t n_release;
  uint64_t release[PROTO_MAX_IDS];

  /* hello */
  bool has_version;
  uint64_t version;
  char client[PROTO_CLIENT_MAX + 1];

  /* forward, set_active_slice, load, evict, pin, unpin: "slice";
   * add_slice, remove_slice: "name". Empty when absent. */
  char slice[PROTO_NAME_MAX + 1];
  /* forward: "pipeline" (never together with "slice"). */
  char pipeline[PROTO_NAME_MAX + 1];
  uint32_t n_inputs;
  proto_tensor inputs[PROTO_MAX_TENSORS];
  bool has_out;
  proto_range out;

  /* set_active_slice */
  bool wait; /* default true */

  /* load, evict, pin, unpin */
  bool has_tier;
  proto_tier tier;

  /* release: "leases" */
  uint32_t n_leases;
  uint64_t leases[PROTO_MAX_IDS];

  /* unmap_region */
  uint64_t region;

  /* add_slice: "constructor" and "config" (owned; freed by
   * proto_request_free). */
  char constructor[PROTO_NAME_MAX + 1];
  cJSON *config;
} proto_request;

/* Parses one frame body. Always initialises *req (so proto_request_free is
 * safe), even on failure. Returns 0, SLY_E_BAD_FRAME when the body is not
 * UTF-8 JSON holding one object (the connection must close), SLY_E_UNKNOWN_OP,
 * or SLY_E_BAD_REQUEST / SLY_E_BAD_TENSOR naming the field at fault (or
 * SLY_E_NO_MEMORY). On failure req->has_id says whether the id could be read
 * for the reply, and req->op is PROTO_OP_COUNT when the op could not be. */
int proto_request_parse(const char *body, size_t len, proto_request *req,
                        proto_error *err);

/* Frees what the request owns (not the struct). Accepts NULL. */
void proto_request_free(proto_request *req);

/* True when `s` (len bytes) is valid UTF-8 without NUL bytes. */
bool proto_utf8_valid(const char *s, size_t len);

#endif

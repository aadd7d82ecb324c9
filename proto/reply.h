/* reply.h — building and reading replies of protocol v1 (proto/).
 *
 * Owns: the reply shapes {"id", "ok": true, ...} and
 * {"id", "ok": false, "error": {"code", "message", "needed"?}}. The daemon
 * builds replies with cJSON and encodes them into frames here; libslyce
 * decodes them here. No I/O, no logging.
 */
#ifndef PROTO_REPLY_H
#define PROTO_REPLY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cJSON.h>

#include "errors.h"
#include "limits.h"

/* Replies are bounded too, so a client can refuse a runaway frame. */
#define PROTO_MAX_REPLY_BYTES (64u << 20)

/* {"id": id, "ok": true}; NULL when out of memory. The caller owns it. */
cJSON *proto_reply_ok(uint64_t id);
/* The error reply; id null when !has_id. The caller owns it. */
cJSON *proto_reply_error(bool has_id, uint64_t id, const proto_error *e);

/* Adds "limits": {every key of PROTO_LIMIT_MAP}. Returns 0 or NO_MEMORY. */
int proto_reply_add_limits(cJSON *obj, const proto_limits *l);

/* Serialises the reply into one frame (header + body). The caller frees
 * *frame with free(). Returns 0, SLY_E_NO_MEMORY, or SLY_E_INTERNAL when the
 * reply exceeds PROTO_MAX_REPLY_BYTES. */
int proto_reply_encode(const cJSON *reply, uint8_t **frame, size_t *len,
                       proto_error *err);

/* Serialises any JSON value into one frame (header + body) with a body of at
 * most `max` bytes. Integral numbers print exactly (cJSON's own printer
 * rounds those above 10^15), so ids and sizes up to 2^53-1 cross intact;
 * libslyce encodes its requests with it too. The caller frees *frame with
 * free(). Returns 0, SLY_E_NO_MEMORY, or SLY_E_BAD_FRAME when over `max`. */
int proto_json_frame(const cJSON *obj, size_t max, uint8_t **frame,
                     size_t *len, proto_error *err);

/* Parses a reply body. On success *out is the reply object (caller frees with
 * cJSON_Delete), *id_null tells whether the id was null, and *id the id. When
 * the reply has ok:false, `remote` receives its code, message and needed and
 * the return value is that code, and *out, *id_null and *id are set as for a
 * success (the caller frees *out then too). A malformed reply returns
 * SLY_E_PROTOCOL with the reason in `remote`, and leaves the outputs alone. */
int proto_reply_decode(const char *body, size_t len, cJSON **out,
                       bool *id_null, uint64_t *id, proto_error *remote);

/* Reads an integer field 0..2^53-1 of a decoded object. Returns 0 or -1. */
int proto_json_u64(const cJSON *obj, const char *key, uint64_t *out);

#endif

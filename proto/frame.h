/* frame.h — the frame codec of protocol v1 (proto/).
 *
 * A frame is a 4-byte little-endian length N, then N bytes of UTF-8 JSON
 * holding one object, 1 <= N <= max_frame_bytes. No I/O: callers read and
 * write the bytes; this module only encodes and checks.
 */
#ifndef PROTO_FRAME_H
#define PROTO_FRAME_H

#include <stddef.h>
#include <stdint.h>

#include "errors.h"
#include "limits.h"

/* Decodes a header. Returns 0 and sets *len, or SLY_E_BAD_FRAME when the
 * length is 0 or over `max_frame_bytes`. */
int proto_frame_header_decode(const uint8_t hdr[PROTO_HEADER_BYTES],
                              uint64_t max_frame_bytes, uint32_t *len,
                              proto_error *err);

void proto_frame_header_encode(uint32_t len, uint8_t hdr[PROTO_HEADER_BYTES]);

/* Builds header + body in one malloc'd buffer. The caller frees *out with
 * free(). Returns SLY_E_BAD_FRAME when `body_len` is 0 or over `max`, or
 * SLY_E_NO_MEMORY. */
int proto_frame_build(const char *body, size_t body_len, uint64_t max,
                      uint8_t **out, size_t *out_len, proto_error *err);

#endif

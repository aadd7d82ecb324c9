/* frame.c — the frame codec of protocol v1 (proto/). */
#include "frame.h"

#include <stdlib.h>
#include <string.h>

int proto_frame_header_decode(const uint8_t hdr[PROTO_HEADER_BYTES],
                              uint64_t max_frame_bytes, uint32_t *len,
                              proto_error *err) {
  uint32_t n = (uint32_t)hdr[0] | (uint32_t)hdr[1] << 8 |
               (uint32_t)hdr[2] << 16 | (uint32_t)hdr[3] << 24;
  if (n == 0)
    return proto_fail(err, SLY_E_BAD_FRAME, "frame length is 0");
  if (n > max_frame_bytes)
    return proto_fail(err, SLY_E_BAD_FRAME,
                      "frame length %u exceeds max_frame_bytes %llu", n,
                      (unsigned long long)max_frame_bytes);
  *len = n;
  return 0;
}

void proto_frame_header_encode(uint32_t len, uint8_t hdr[PROTO_HEADER_BYTES]) {
  hdr[0] = (uint8_t)len;
  hdr[1] = (uint8_t)(len >> 8);
  hdr[2] = (uint8_t)(len >> 16);
  hdr[3] = (uint8_t)(len >> 24);
}

/* The caller frees *out with free(). */
int proto_frame_build(const char *body, size_t body_len, uint64_t max,
                      uint8_t **out, size_t *out_len, proto_error *err) {
  if (body_len == 0)
    return proto_fail(err, SLY_E_BAD_FRAME, "frame body is empty");
  /* The header holds 32 bits, whatever `max` says. */
  if (body_len > max || body_len > UINT32_MAX)
    return proto_fail(err, SLY_E_BAD_FRAME,
                      "frame body of %zu bytes exceeds the limit of %llu",
                      body_len,
                      (unsigned long long)(max < UINT32_MAX ? max : UINT32_MAX));
  uint8_t *buf = malloc(PROTO_HEADER_BYTES + body_len);
  if (buf == NULL)
    return proto_fail(err, SLY_E_NO_MEMORY, "out of memory building a frame");
  proto_frame_header_encode((uint32_t)body_len, buf);
  memcpy(buf + PROTO_HEADER_BYTES, body, body_len);
  *out = buf;
  *out_len = PROTO_HEADER_BYTES + body_len;
  return 0;
}

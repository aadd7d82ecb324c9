/* test_proto_frame.c — frames of protocol v1: a 4-byte little-endian length
 * N, then N bytes of body, 1 <= N <= max_frame_bytes. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "frame.h"

#define MAX 1048576u /* the default max_frame_bytes */

static void le(uint32_t v, uint8_t h[4]) {
  h[0] = v & 0xff;
  h[1] = (v >> 8) & 0xff;
  h[2] = (v >> 16) & 0xff;
  h[3] = v >> 24;
}

Test(frame_header, the_length_is_little_endian) {
  uint8_t h[4] = {0x04, 0x03, 0x02, 0x00};
  uint32_t len = 0;
  proto_error e;
  cr_assert_eq(proto_frame_header_decode(h, 1u << 30, &len, &e), 0);
  cr_assert_eq(len, 0x020304);
}

Test(frame_header, a_length_of_one_is_the_smallest_frame) {
  uint8_t h[4];
  le(1, h);
  uint32_t len = 0;
  cr_assert_eq(proto_frame_header_decode(h, MAX, &len, NULL), 0);
  cr_assert_eq(len, 1);
}

Test(frame_header, a_length_of_zero_is_bad_frame) {
  uint8_t h[4] = {0, 0, 0, 0};
  uint32_t len = 77;
  proto_error e;
  cr_assert_eq(proto_frame_header_decode(h, MAX, &len, &e), SLY_E_BAD_FRAME);
  cr_assert_eq(e.code, SLY_E_BAD_FRAME);
  cr_assert_eq(len, 77, "the output is untouched on failure");
  cr_assert(strstr(e.message, "0") != NULL);
}

Test(frame_header, exactly_max_frame_bytes_is_accepted) {
  uint8_t h[4];
  le(MAX, h);
  uint32_t len = 0;
  cr_assert_eq(proto_frame_header_decode(h, MAX, &len, NULL), 0);
  cr_assert_eq(len, MAX);
}

Test(frame_header, one_byte_over_max_frame_bytes_is_bad_frame) {
  uint8_t h[4];
  le(MAX + 1, h);
  uint32_t len = 77;
  proto_error e;
  cr_assert_eq(proto_frame_header_decode(h, MAX, &len, &e), SLY_E_BAD_FRAME);
  cr_assert_eq(len, 77);
  cr_assert(strstr(e.message, "1048577") != NULL, "%s", e.message);
  cr_assert(strstr(e.message, "max_frame_bytes") != NULL, "%s", e.message);
}

Test(frame_header, the_largest_header_is_bad_frame_under_any_config) {
  uint8_t h[4] = {0xff, 0xff, 0xff, 0xff};
  uint32_t len = 0;
  cr_assert_eq(proto_frame_header_decode(h, 67108864, &len, NULL),
               SLY_E_BAD_FRAME);
  cr_assert_eq(proto_frame_header_decode(h, UINT32_MAX, &len, NULL), 0);
  cr_assert_eq(len, UINT32_MAX);
}

Test(frame_header, encode_and_decode_agree) {
  const uint32_t values[] = {1, 255, 256, 65535, 65536, 0x01020304, MAX};
  for (size_t i = 0; i < sizeof(values) / sizeof(values[0]); i++) {
    uint8_t h[4];
    proto_frame_header_encode(values[i], h);
    uint8_t want[4];
    le(values[i], want);
    cr_assert_arr_eq(h, want, 4);
    uint32_t len = 0;
    cr_assert_eq(proto_frame_header_decode(h, UINT32_MAX, &len, NULL), 0);
    cr_assert_eq(len, values[i]);
  }
}

Test(frame_build, header_then_body) {
  const char *body = "{\"id\":1,\"op\":\"list\"}";
  uint8_t *f = NULL;
  size_t n = 0;
  cr_assert_eq(proto_frame_build(body, strlen(body), MAX, &f, &n, NULL), 0);
  cr_assert_eq(n, 4 + strlen(body));
  uint32_t len = 0;
  cr_assert_eq(proto_frame_header_decode(f, MAX, &len, NULL), 0);
  cr_assert_eq(len, strlen(body));
  cr_assert_arr_eq(f + 4, body, strlen(body));
  free(f);
}

Test(frame_build, an_empty_body_is_bad_frame) {
  uint8_t *f = (uint8_t *)"untouched";
  size_t n = 99;
  proto_error e;
  cr_assert_eq(proto_frame_build("", 0, MAX, &f, &n, &e), SLY_E_BAD_FRAME);
  cr_assert_str_eq((char *)f, "untouched");
  cr_assert_eq(n, 99);
}

Test(frame_build, a_body_of_exactly_max_is_built_and_max_plus_one_is_not) {
  char *body = malloc(4097);
  memset(body, ' ', 4097);
  uint8_t *f = NULL;
  size_t n = 0;
  cr_assert_eq(proto_frame_build(body, 4096, 4096, &f, &n, NULL), 0);
  cr_assert_eq(n, 4100);
  free(f);
  f = NULL;
  proto_error e;
  cr_assert_eq(proto_frame_build(body, 4097, 4096, &f, &n, &e),
               SLY_E_BAD_FRAME);
  cr_assert_null(f);
  cr_assert(strstr(e.message, "4097") != NULL, "%s", e.message);
  free(body);
}

Test(frame_build, a_body_over_32_bits_is_bad_frame_whatever_the_limit) {
  uint8_t *f = NULL;
  size_t n = 0;
  /* Not read: the length is refused before the body is touched. */
  static const char body[1] = "x";
  cr_assert_eq(proto_frame_build(body, (size_t)UINT32_MAX + 1, UINT64_MAX, &f,
                                 &n, NULL),
               SLY_E_BAD_FRAME);
  cr_assert_null(f);
}

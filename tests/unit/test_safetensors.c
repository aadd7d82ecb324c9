/* test_safetensors.c — the safetensors header validator: what it accepts,
 * and every way a torn or hostile header is turned away with one line that
 * says why.
 *
 * Headers are parsed from exact-size heap copies, so under AddressSanitizer
 * any read past the header's end fails the test.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "safetensors.h"

static char err[ST_ERROR_MAX];

/* Parses `json` as the header of a file with `data` bytes of tensor data.
 * Returns st_header_parse's result; on failure checks that err says why and
 * that *h stayed untouched. */
static int parse_data(const char *json, uint64_t data, st_header *h) {
  size_t len = strlen(json);
  char *copy = malloc(len ? len : 1); /* exact size: no NUL after it */
  cr_assert_not_null(copy);
  memcpy(copy, json, len);
  memset(h, 0xAB, sizeof(*h));
  st_header before;
  memcpy(&before, h, sizeof(before));
  memset(err, 0, sizeof(err));
  int r = st_header_parse(copy, len, 8 + len + data, h, err);
  free(copy);
  if (r != 0) {
    cr_assert_eq(r, -1);
    cr_assert_neq(err[0], '\0', "a rejection must say why");
    cr_assert_null(strchr(err, '\n'), "one line: %s", err);
    cr_assert_eq(memcmp(&before, h, sizeof(before)), 0,
                 "output must stay untouched on failure");
  }
  return r;
}

/* Expects `json` (with `data` bytes of data) to be rejected with a message
 * containing `why`. */
static void rejects(const char *json, uint64_t data, const char *why) {
  st_header h;
  cr_assert_eq(parse_data(json, data, &h), -1, "accepted: %s", json);
  cr_assert_not_null(strstr(err, why), "for %s\n  got '%s', want '%s'", json,
                     err, why);
}

Test(st_len, reads_the_little_endian_prefix) {
  const uint8_t p[8] = {0x10, 0x01, 0, 0, 0, 0, 0, 0};
  uint64_t n = 0;
  cr_assert_eq(st_header_len(p, 8 + 0x110, &n, err), 0, "%s", err);
  cr_assert_eq(n, 0x110);
}

Test(st_len, rejects_a_length_past_the_file) {
  const uint8_t p[8] = {100, 0, 0, 0, 0, 0, 0, 0};
  uint64_t n = 7;
  cr_assert_eq(st_header_len(p, 107, &n, err), -1);
  cr_assert_not_null(strstr(err, "past the end"), "%s", err);
  cr_assert_eq(n, 7, "output untouched on failure");
  cr_assert_eq(st_header_len(p, 108, &n, err), 0);
}

Test(st_len, rejects_a_length_over_the_limit_and_zero) {
  uint8_t p[8];
  uint64_t big = (uint64_t)ST_MAX_HEADER_BYTES + 1, n;
  for (int i = 0; i < 8; i++)
    p[i] = (uint8_t)(big >> (8 * i));
  cr_assert_eq(st_header_len(p, UINT64_MAX, &n, err), -1);
  cr_assert_not_null(strstr(err, "limit"), "%s", err);
  memset(p, 0xff, sizeof(p)); /* 2^64-1: must not wrap around */
  cr_assert_eq(st_header_len(p, UINT64_MAX, &n, err), -1);
  memset(p, 0, sizeof(p));
  cr_assert_eq(st_header_len(p, 100, &n, err), -1);
  cr_assert_not_null(strstr(err, "is 0"), "%s", err);
}

Test(st_len, rejects_a_file_shorter_than_the_prefix) {
  const uint8_t p[8] = {2, 0, 0, 0, 0, 0, 0, 0};
  uint64_t n;
  cr_assert_eq(st_header_len(p, 7, &n, err), -1);
  cr_assert_not_null(strstr(err, "shorter"), "%s", err);
}

Test(st_parse, accepts_tensors_metadata_and_padding) {
  st_header h;
  /* JSON order differs from data order; trailing spaces are padding. */
  const char *json =
      "{\"b\":{\"dtype\":\"BF16\",\"shape\":[2,3],\"data_offsets\":[16,28]},"
      "\"__metadata__\":{\"format\":\"pt\",\"k\":\"v\"},"
      "\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}    ";
  cr_assert_eq(parse_data(json, 28, &h), 0, "%s", err);
  cr_assert_eq(h.header_len, strlen(json));
  cr_assert_eq(h.data_offset, 8 + strlen(json));
  cr_assert_eq(h.data_bytes, 28);
  cr_assert_eq(h.n_tensors, 2);
  cr_assert_str_eq(h.tensors[0].name, "a", "tensors come in data order");
  cr_assert_str_eq(h.tensors[1].name, "b");
  const st_tensor *b = st_header_find(&h, "b");
  cr_assert_not_null(b);
  cr_assert_eq(b->dtype, PROTO_DTYPE_BFLOAT16);
  cr_assert_eq(b->ndim, 2);
  cr_assert_eq(b->shape[0], 2);
  cr_assert_eq(b->shape[1], 3);
  cr_assert_eq(b->begin, 16);
  cr_assert_eq(b->end, 28);
  cr_assert_null(st_header_find(&h, "c"));
  cr_assert_null(st_header_find(&h, "__metadata__"));
  cr_assert_str_eq(st_header_meta(&h, "format"), "pt");
  cr_assert_str_eq(st_header_meta(&h, "k"), "v");
  cr_assert_null(st_header_meta(&h, "missing"));
  st_header_free(&h);
  st_header_free(&h); /* freed headers are zeroed: a second free is a no-op */
  st_header_free(NULL);
}

Test(st_parse, accepts_every_dtype_by_name) {
  static const struct {
    const char *name;
    proto_dtype d;
  } all[] = {{"F32", PROTO_DTYPE_FLOAT32}, {"F64", PROTO_DTYPE_FLOAT64},
             {"F16", PROTO_DTYPE_FLOAT16}, {"BF16", PROTO_DTYPE_BFLOAT16},
             {"I64", PROTO_DTYPE_INT64},   {"I32", PROTO_DTYPE_INT32},
             {"I16", PROTO_DTYPE_INT16},   {"I8", PROTO_DTYPE_INT8},
             {"U8", PROTO_DTYPE_UINT8},    {"BOOL", PROTO_DTYPE_BOOL}};
  for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++) {
    char json[128];
    unsigned sz = proto_dtype_size(all[i].d);
    snprintf(json, sizeof(json),
             "{\"t\":{\"dtype\":\"%s\",\"shape\":[3],\"data_offsets\":[0,%u]}}",
             all[i].name, 3 * sz);
    st_header h;
    cr_assert_eq(parse_data(json, 3 * sz, &h), 0, "%s: %s", all[i].name, err);
    cr_assert_eq(h.tensors[0].dtype, all[i].d);
    cr_assert_str_eq(st_dtype_name(all[i].d), all[i].name);
    st_header_free(&h);
  }
}

Test(st_parse, accepts_scalars_empty_tensors_and_no_tensors) {
  st_header h;
  cr_assert_eq(parse_data("{}", 0, &h), 0, "%s", err);
  cr_assert_eq(h.n_tensors, 0);
  st_header_free(&h);
  cr_assert_eq(parse_data("{\"__metadata__\":{}}", 0, &h), 0, "%s", err);
  st_header_free(&h);
  const char *json =
      "{\"s\":{\"dtype\":\"I64\",\"shape\":[],\"data_offsets\":[0,8]},"
      "\"e\":{\"dtype\":\"F32\",\"shape\":[0,5],\"data_offsets\":[8,8]},"
      "\"z\":{\"dtype\":\"F32\",\"shape\":[2,0],\"data_offsets\":[0,0]}}";
  cr_assert_eq(parse_data(json, 8, &h), 0, "%s", err);
  cr_assert_eq(h.n_tensors, 3);
  cr_assert_eq(st_header_find(&h, "s")->ndim, 0);
  st_header_free(&h);
}

Test(st_parse, rejects_a_header_that_is_not_a_json_object) {
  rejects("[1,2]", 0, "not a JSON object");
  rejects("\"x\"", 0, "not a JSON object");
  rejects("42", 0, "not a JSON object");
  rejects("null", 0, "not a JSON object");
  rejects("{\"a\":", 0, "not valid JSON");
  rejects("{} x", 0, "after the JSON object");
  rejects("{}{}", 0, "after the JSON object");
  rejects("   ", 0, "not valid JSON");
}

Test(st_parse, rejects_bytes_json_does_not_allow) {
  rejects("{\"a\x01\":{}}", 0, "control byte");
  rejects("{\"\xff\":{}}", 0, "not UTF-8");
  rejects("{\"\xc3\":{}}", 0, "not UTF-8");
  rejects("{\"\xed\xa0\x80\":{}}", 0, "not UTF-8"); /* a surrogate */
  rejects("{\"\xc0\xaf\":{}}", 0, "not UTF-8");     /* overlong */
  /* \u0000 would cut the name short: "a\u0000b" must not become "a". */
  rejects("{\"a\\u0000b\":{\"dtype\":\"U8\",\"shape\":[],"
          "\"data_offsets\":[0,1]}}", 1, "\\u0000");
  /* A NUL inside the buffer. */
  st_header h;
  const char json[] = "{}\0  ";
  cr_assert_eq(st_header_parse(json, sizeof(json) - 1, 8 + sizeof(json) - 1,
                               &h, err), -1);
}

Test(st_parse, accepts_escapes_and_utf8_names) {
  st_header h;
  const char *json = "{\"\\\\u0000\\\"\xc3\xa9\":{\"dtype\":\"U8\",\"shape\":[1],"
                     "\"data_offsets\":[0,1]}}";
  cr_assert_eq(parse_data(json, 1, &h), 0, "%s", err);
  cr_assert_str_eq(h.tensors[0].name, "\\u0000\"\xc3\xa9");
  st_header_free(&h);
}

Test(st_parse, rejects_unknown_and_malformed_dtypes) {
  rejects("{\"t\":{\"dtype\":\"F8\",\"shape\":[1],\"data_offsets\":[0,1]}}", 1,
          "unknown dtype 'F8'");
  rejects("{\"t\":{\"dtype\":\"f32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4,
          "unknown dtype");
  rejects("{\"t\":{\"dtype\":\"C64\",\"shape\":[1],\"data_offsets\":[0,8]}}", 8,
          "unknown dtype");
  rejects("{\"t\":{\"dtype\":4,\"shape\":[1],\"data_offsets\":[0,4]}}", 4,
          "dtype: expected a string");
  rejects("{\"t\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4,
          "dtype: expected a string");
}

Test(st_parse, rejects_malformed_entries) {
  rejects("{\"t\":[1]}", 0, "tensor 't': expected an object");
  rejects("{\"t\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1],"
          "\"x\":1}}", 1, "unknown field 'x'");
  rejects("{\"t\":{\"dtype\":\"U8\",\"dtype\":\"U8\",\"shape\":[1],"
          "\"data_offsets\":[0,1]}}", 1, "duplicate field 'dtype'");
  rejects("{\"t\":{\"dtype\":\"U8\",\"shape\":1,\"data_offsets\":[0,1]}}", 1,
          "shape: expected an array");
  rejects("{\"t\":{\"dtype\":\"U8\",\"shape\":[-1],\"data_offsets\":[0,1]}}", 1,
          "shape[0]");
  rejects("{\"t\":{\"dtype\":\"U8\",\"shape\":[1.5],\"data_offsets\":[0,1]}}",
          1, "shape[0]");
  rejects("{\"t\":{\"dtype\":\"U8\",\"shape\":[\"1\"],\"data_offsets\":[0,1]}}",
          1, "shape[0]");
  rejects("{\"t\":{\"dtype\":\"U8\",\"shape\":[1]}}", 1, "data_offsets");
  rejects("{\"t\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0]}}", 1,
          "data_offsets");
  rejects("{\"t\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1,2]}}",
          1, "data_offsets");
  rejects("{\"t\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,-1]}}", 1,
          "data_offsets");
  rejects("{\"t\":{\"dtype\":\"U8\",\"shape\":[1],"
          "\"data_offsets\":[0,18446744073709551616]}}", 1, "data_offsets");
  rejects("{\"t\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[2,1]}}", 2,
          "end before");
}

Test(st_parse, rejects_names_that_are_empty_too_long_or_duplicated) {
  rejects("{\"\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}", 1,
          "empty tensor name");
  char *json = malloc(ST_MAX_NAME + 128);
  cr_assert_not_null(json);
  strcpy(json, "{\"");
  memset(json + 2, 'n', ST_MAX_NAME + 1);
  strcpy(json + 3 + ST_MAX_NAME,
         "\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}");
  rejects(json, 1, "name of 1025 bytes");
  json[2 + ST_MAX_NAME] = '"'; /* exactly ST_MAX_NAME bytes is fine */
  strcpy(json + 3 + ST_MAX_NAME,
         ":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}");
  st_header h;
  cr_assert_eq(parse_data(json, 1, &h), 0, "%s", err);
  st_header_free(&h);
  free(json);
  rejects("{\"t\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},"
          "\"t\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[1,2]}}", 2,
          "duplicate tensor name 't'");
}

/* Found by tests/fuzz (corpus/safetensors/crash-name-control-char): names,
 * keys and dtypes from the file went into messages as they were, so a "\n"
 * escape or a control byte broke the message's one line, and a long name was
 * cut inside a character. */
Test(st_parse, shows_names_from_the_file_on_one_line_of_utf8) {
  rejects("{\"a\\nb\x7f\":{\"dtype\":\"U8\",\"shape\":[1],"
          "\"data_offsets\":[0,1],\"x\\t\":1}}",
          1, "tensor 'a?b?': unknown field 'x?'");
  rejects("{\"t\":{\"dtype\":\"U8\\r\",\"shape\":[1],"
          "\"data_offsets\":[0,1]}}",
          1, "unknown dtype 'U8?'");
  rejects("{\"__metadata__\":{\"k\\n\":1}}", 0, "__metadata__.k?: expected");

  /* "a" and 40 two-byte characters: the cut at 64 bytes falls inside the
   * 32nd, which is left out whole. */
  char json[256] = "{\"a", want[128] = "tensor 'a";
  for (int i = 0; i < 40; i++)
    strcat(json, "\xc3\xa9");
  for (int i = 0; i < 31; i++)
    strcat(want, "\xc3\xa9");
  strcat(json, "\":[1]}");
  strcat(want, "...': expected an object");
  rejects(json, 0, want);
}

Test(st_parse, rejects_a_size_that_disagrees_with_dtype_and_shape) {
  rejects("{\"t\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,12]}}",
          12, "span 12 bytes, dtype and shape need 16");
  rejects("{\"t\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,0]}}", 0,
          "need 4");
}

Test(st_parse, rejects_a_shape_whose_size_overflows) {
  /* 2^32 * 2^32 * 4 bytes wraps to 0 in 64 bits, which would "match" an
   * empty range. */
  rejects("{\"t\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296],"
          "\"data_offsets\":[0,0]}}", 0, "overflows");
  rejects("{\"t\":{\"dtype\":\"U8\",\"shape\":[65536,65536,65536,65536,1],"
          "\"data_offsets\":[0,0]}}", 0, "overflows");
  /* Beyond 2^53 a JSON number is not an exact integer. */
  rejects("{\"t\":{\"dtype\":\"U8\",\"shape\":[9007199254740993],"
          "\"data_offsets\":[0,0]}}", 0, "shape[0]");
}

Test(st_parse, rejects_too_many_dims) {
  rejects("{\"t\":{\"dtype\":\"U8\",\"shape\":[1,1,1,1,1,1,1,1,1],"
          "\"data_offsets\":[0,1]}}", 1, "9 dims, at most 8");
  st_header h;
  cr_assert_eq(parse_data("{\"t\":{\"dtype\":\"U8\",\"shape\":[1,1,1,1,1,1,1,1],"
                          "\"data_offsets\":[0,1]}}", 1, &h), 0, "%s", err);
  cr_assert_eq(h.tensors[0].ndim, 8);
  st_header_free(&h);
}

Test(st_parse, rejects_overlapping_ranges) {
  rejects("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
          "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 12,
          "overlaps");
  rejects("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
          "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8,
          "overlaps");
}

Test(st_parse, rejects_gaps_in_the_data) {
  rejects("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
          "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]}}", 12,
          "gap of 4 bytes");
  rejects("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8,
          "gap of 4 bytes");
  rejects("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 6,
          "2 bytes of data after the last tensor");
  rejects("{}", 3, "no tensors but 3 bytes");
}

Test(st_parse, rejects_ranges_out_of_bounds) {
  rejects("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 4,
          "past the 4 bytes of data");
  rejects("{\"a\":{\"dtype\":\"U8\",\"shape\":[1],"
          "\"data_offsets\":[9007199254740990,9007199254740991]}}", 4,
          "past the");
  /* A header that claims more bytes than the file has. */
  st_header h;
  cr_assert_eq(st_header_parse("{}", 2, 9, &h, err), -1);
  cr_assert_eq(st_header_parse("{}", 2, 3, &h, err), -1);
  cr_assert_eq(st_header_parse("{}", 0, 8, &h, err), -1);
}

Test(st_parse, rejects_bad_metadata) {
  rejects("{\"__metadata__\":{\"k\":1}}", 0, "__metadata__.k: expected a string");
  rejects("{\"__metadata__\":{\"k\":{}}}", 0, "expected a string");
  rejects("{\"__metadata__\":[\"k\"]}", 0, "__metadata__: expected an object");
  rejects("{\"__metadata__\":\"k\"}", 0, "__metadata__: expected an object");
  rejects("{\"__metadata__\":{\"k\":\"a\",\"k\":\"b\"}}", 0,
          "duplicate key 'k'");
  rejects("{\"__metadata__\":{},\"__metadata__\":{}}", 0,
          "duplicate __metadata__");
}

Test(st_parse, rejects_more_than_the_tensor_limit) {
  /* ST_MAX_TENSORS + 1 empty tensors: each "tNNNNN":{...} entry. */
  size_t n = ST_MAX_TENSORS + 1, cap = n * 64 + 16, len = 0;
  char *json = malloc(cap);
  cr_assert_not_null(json);
  json[len++] = '{';
  for (size_t i = 0; i < n; i++)
    len += (size_t)snprintf(json + len, cap - len,
                            "%s\"t%zu\":{\"dtype\":\"U8\",\"shape\":[0],"
                            "\"data_offsets\":[0,0]}", i ? "," : "", i);
  json[len++] = '}';
  json[len] = '\0';
  rejects(json, 0, "65537 tensors, at most 65536");
  free(json);
}

/* A fuzzer's first moves, cheaply: every prefix of a valid header and every
 * single-byte change is either a valid header or a clean rejection. */
Test(st_parse, survives_truncation_and_byte_flips) {
  const char *json =
      "{\"a\":{\"dtype\":\"F32\",\"shape\":[2,1],\"data_offsets\":[0,8]},"
      "\"__metadata__\":{\"m\":\"\\u00e9\"},"
      "\"b\":{\"dtype\":\"I8\",\"shape\":[3],\"data_offsets\":[8,11]}}";
  size_t len = strlen(json);
  const char flips[] = {'\0', '"', '{', '}', '[', ']', ',', ':', '\\', '9',
                        '-', 'e', '\x80', ' '};
  for (size_t cut = 0; cut <= len; cut++) {
    char *b = malloc(cut ? cut : 1);
    cr_assert_not_null(b);
    memcpy(b, json, cut);
    st_header h;
    if (st_header_parse(b, cut, 8 + cut + 11, &h, err) == 0)
      st_header_free(&h);
    free(b);
  }
  for (size_t at = 0; at < len; at++)
    for (size_t f = 0; f < sizeof(flips); f++) {
      char *b = malloc(len);
      cr_assert_not_null(b);
      memcpy(b, json, len);
      b[at] = flips[f];
      st_header h;
      if (st_header_parse(b, len, 8 + len + 11, &h, err) == 0) {
        /* Anything accepted is consistent. */
        uint64_t end = 0;
        for (size_t i = 0; i < h.n_tensors; i++) {
          cr_assert_eq(h.tensors[i].begin, end);
          end = h.tensors[i].end;
        }
        cr_assert_eq(end, h.data_bytes);
        st_header_free(&h);
      }
      free(b);
    }
}

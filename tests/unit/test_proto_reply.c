/* test_proto_reply.c — replies of protocol v1: {"id", "ok": true, ...} and
 * {"id", "ok": false, "error": {"code", "message", "needed"?}}, built by the
 * daemon and read back the way libslyce reads them. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "frame.h"
#include "reply.h"

#define MAX53 9007199254740991ULL

/* Encodes `reply` into a frame, checks the header, returns the body. */
static char *encode(const cJSON *reply, size_t *body_len) {
  uint8_t *frame = NULL;
  size_t len = 0;
  proto_error e = {0};
  cr_assert_eq(proto_reply_encode(reply, &frame, &len, &e), 0, "%s", e.message);
  uint32_t n = 0;
  cr_assert_eq(proto_frame_header_decode(frame, PROTO_MAX_REPLY_BYTES, &n, NULL),
               0);
  cr_assert_eq(n + 4u, len);
  char *body = malloc(n + 1);
  memcpy(body, frame + 4, n);
  body[n] = '\0';
  free(frame);
  *body_len = n;
  return body;
}

Test(reply_ok, carries_the_id_and_ok_true) {
  cJSON *r = proto_reply_ok(42);
  cr_assert_not_null(r);
  size_t n;
  char *body = encode(r, &n);
  cr_assert_str_eq(body, "{\"id\":42,\"ok\":true}");
  cJSON_Delete(r);
  free(body);
}

Test(reply_ok, round_trips_the_largest_id_exactly) {
  cJSON *r = proto_reply_ok(MAX53);
  cJSON_AddStringToObject(r, "slice", "enc");
  size_t n;
  char *body = encode(r, &n);
  cr_assert(strstr(body, "9007199254740991") != NULL, "%s", body);
  cJSON *out = NULL;
  bool id_null = true;
  uint64_t id = 0;
  proto_error remote = {.code = 99};
  cr_assert_eq(proto_reply_decode(body, n, &out, &id_null, &id, &remote), 0);
  cr_assert(!id_null);
  cr_assert_eq(id, MAX53);
  cr_assert_eq(remote.code, 99, "remote is untouched by an ok reply");
  cr_assert_str_eq(cJSON_GetObjectItem(out, "slice")->valuestring, "enc");
  cJSON_Delete(out);
  cJSON_Delete(r);
  free(body);
}

Test(reply_error, has_code_message_and_needed) {
  proto_error e;
  proto_fail(&e, SLY_E_NO_MEMORY, "slice enc needs %d bytes", 8192);
  e.has_needed = true;
  e.needed = 8192;
  cJSON *r = proto_reply_error(true, 7, &e);
  size_t n;
  char *body = encode(r, &n);
  cr_assert_str_eq(body, "{\"id\":7,\"ok\":false,\"error\":{\"code\":"
                         "\"NO_MEMORY\",\"message\":\"slice enc needs 8192 "
                         "bytes\",\"needed\":8192}}");
  cJSON_Delete(r);
  free(body);
}

Test(reply_error, round_trips_with_id_null_and_needed) {
  proto_error e;
  proto_fail(&e, SLY_E_BAD_TENSOR, "out: %d bytes needed", 4096);
  e.has_needed = true;
  e.needed = MAX53;
  cJSON *r = proto_reply_error(false, 0, &e);
  size_t n;
  char *body = encode(r, &n);
  cr_assert(strstr(body, "\"id\":null") != NULL, "%s", body);
  cJSON *out = NULL;
  bool id_null = false;
  uint64_t id = 99;
  proto_error remote;
  cr_assert_eq(proto_reply_decode(body, n, &out, &id_null, &id, &remote),
               SLY_E_BAD_TENSOR);
  cr_assert(id_null);
  cr_assert_eq(id, 0);
  cr_assert_not_null(out, "the client gets the whole error reply too");
  cr_assert_eq(remote.code, SLY_E_BAD_TENSOR);
  cr_assert_str_eq(remote.message, "out: 4096 bytes needed");
  cr_assert(remote.has_needed);
  cr_assert_eq(remote.needed, MAX53);
  cJSON_Delete(out);
  cJSON_Delete(r);
  free(body);
}

Test(reply_error, every_wire_code_round_trips) {
  static const int codes[] = {
#define ROW(name, value, msg) value,
      SLY_WIRE_CODE_MAP(ROW)
#undef ROW
  };
  for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++) {
    proto_error e;
    proto_fail(&e, codes[i], "because %zu", i);
    cJSON *r = proto_reply_error(true, i, &e);
    size_t n;
    char *body = encode(r, &n);
    cJSON *out = NULL;
    bool id_null;
    uint64_t id;
    proto_error remote;
    cr_assert_eq(proto_reply_decode(body, n, &out, &id_null, &id, &remote),
                 codes[i], "%s", body);
    cr_assert(!remote.has_needed);
    cr_assert_eq(id, i);
    cJSON_Delete(out);
    cJSON_Delete(r);
    free(body);
  }
}

Test(reply_error, a_code_with_no_wire_name_goes_out_as_internal) {
  proto_error e;
  proto_fail(&e, SLY_E_IO, "socket gone");
  cJSON *r = proto_reply_error(true, 1, &e);
  cJSON *err = cJSON_GetObjectItem(r, "error");
  cr_assert_str_eq(cJSON_GetObjectItem(err, "code")->valuestring, "INTERNAL");
  cr_assert_str_eq(cJSON_GetObjectItem(err, "message")->valuestring,
                   "socket gone");
  cJSON_Delete(r);
}

Test(reply_error, an_empty_message_gets_the_generic_one) {
  proto_error e = {.code = SLY_E_BUSY, .message = ""};
  cJSON *r = proto_reply_error(true, 1, &e);
  cJSON *err = cJSON_GetObjectItem(r, "error");
  cr_assert_str_eq(cJSON_GetObjectItem(err, "message")->valuestring,
                   sly_code_message(SLY_E_BUSY));
  cJSON_Delete(r);
}

Test(reply_error, invalid_utf8_in_a_message_is_repaired) {
  proto_error e = {.code = SLY_E_BAD_TENSOR};
  strcpy(e.message, "libtorch: bad \xff\xfe byte, ok \xc3\xa9");
  cJSON *r = proto_reply_error(true, 1, &e);
  size_t n;
  char *body = encode(r, &n);
  cJSON *out = NULL;
  bool id_null;
  uint64_t id;
  proto_error remote;
  cr_assert_eq(proto_reply_decode(body, n, &out, &id_null, &id, &remote),
               SLY_E_BAD_TENSOR, "%s", remote.message);
  cr_assert_str_eq(remote.message, "libtorch: bad ?? byte, ok \xc3\xa9");
  cJSON_Delete(out);
  cJSON_Delete(r);
  free(body);
}

Test(reply_limits, hello_carries_every_limit) {
  proto_limits l;
  proto_limits_default(&l);
  l.max_frame_bytes = 4096;
  cJSON *r = proto_reply_ok(1);
  cr_assert_eq(proto_reply_add_limits(r, &l), 0);
  size_t n;
  char *body = encode(r, &n);
  cJSON *out = NULL;
  bool id_null;
  uint64_t id, v = 0;
  cr_assert_eq(proto_reply_decode(body, n, &out, &id_null, &id, NULL), 0);
  cJSON *limits = cJSON_GetObjectItem(out, "limits");
  cr_assert(cJSON_IsObject(limits));
  int keys = 0;
#define CHECK(key, def, lo, hi)                                                \
  cr_assert_eq(proto_json_u64(limits, #key, &v), 0, #key);                     \
  cr_assert_eq(v, l.key, #key);                                                \
  keys++;
  PROTO_LIMIT_MAP(CHECK)
#undef CHECK
  cr_assert_eq(cJSON_GetArraySize(limits), keys, "nothing else in limits");
  cr_assert_eq(v, 30000, "drain_timeout_ms comes last");
  proto_json_u64(limits, "max_frame_bytes", &v);
  cr_assert_eq(v, 4096);
  cJSON_Delete(out);
  cJSON_Delete(r);
  free(body);
}

Test(reply_encode, a_reply_over_the_limit_is_internal) {
  size_t big = PROTO_MAX_REPLY_BYTES;
  char *s = malloc(big + 1);
  memset(s, 'a', big);
  s[big] = '\0';
  cJSON *r = proto_reply_ok(1);
  cJSON_AddStringToObject(r, "blob", s);
  free(s);
  uint8_t *frame = NULL;
  size_t len = 0;
  proto_error e;
  cr_assert_eq(proto_reply_encode(r, &frame, &len, &e), SLY_E_INTERNAL);
  cr_assert_null(frame);
  cr_assert(strstr(e.message, "exceeds") != NULL, "%s", e.message);
  cJSON_Delete(r);
}

/* ---- malformed replies: SLY_E_PROTOCOL, outputs untouched ---- */

static void decode_bad(const char *body, const char *msg) {
  cJSON *out = (cJSON *)0x1;
  bool id_null = true;
  uint64_t id = 77;
  proto_error remote = {0};
  cr_assert_eq(proto_reply_decode(body, strlen(body), &out, &id_null, &id,
                                  &remote),
               SLY_E_PROTOCOL, "%s", body);
  cr_assert_eq(remote.code, SLY_E_PROTOCOL);
  cr_assert(strstr(remote.message, msg) != NULL, "\"%s\" lacks \"%s\"",
            remote.message, msg);
  cr_assert_eq(out, (cJSON *)0x1);
  cr_assert(id_null);
  cr_assert_eq(id, 77);
}

Test(reply_decode, malformed_replies_are_protocol_errors) {
  decode_bad("{\"id\":1,\"ok\":true", "not JSON");
  decode_bad("[1]", "not an object");
  decode_bad("{\"id\":1,\"ok\":true}junk", "after");
  decode_bad("{\"id\":1,\"ok\":true,\"s\":\"\xff\"}", "UTF-8");
  decode_bad("{\"ok\":true}", "\"id\"");
  decode_bad("{\"id\":-1,\"ok\":true}", "\"id\"");
  decode_bad("{\"id\":\"1\",\"ok\":true}", "\"id\"");
  decode_bad("{\"id\":1}", "\"ok\"");
  decode_bad("{\"id\":1,\"ok\":1}", "\"ok\"");
  decode_bad("{\"id\":1,\"ok\":true,\"id\":2}", "id: duplicate key");
  decode_bad("{\"id\":1,\"ok\":false}", "\"error\"");
  decode_bad("{\"id\":1,\"ok\":false,\"error\":\"BUSY\"}", "\"error\"");
  decode_bad("{\"id\":1,\"ok\":false,\"error\":{\"message\":\"m\"}}",
             "error.code");
  decode_bad("{\"id\":1,\"ok\":false,\"error\":{\"code\":\"BUSY\"}}",
             "error.message");
  decode_bad("{\"id\":1,\"ok\":false,\"error\":{\"code\":\"TEAPOT\","
             "\"message\":\"m\"}}",
             "unknown error code \"TEAPOT\"");
  decode_bad("{\"id\":1,\"ok\":false,\"error\":{\"code\":\"IO\","
             "\"message\":\"m\"}}",
             "unknown error code \"IO\"");
  decode_bad("{\"id\":1,\"ok\":false,\"error\":{\"code\":\"NO_MEMORY\","
             "\"message\":\"m\",\"needed\":-5}}",
             "error.needed");
}

Test(reply_decode, extra_fields_are_the_callers_business) {
  const char *body = "{\"id\":3,\"ok\":true,\"lease\":9,\"outputs\":[]}";
  cJSON *out = NULL;
  bool id_null;
  uint64_t id, lease = 0;
  cr_assert_eq(proto_reply_decode(body, strlen(body), &out, &id_null, &id,
                                  NULL),
               0);
  cr_assert_eq(proto_json_u64(out, "lease", &lease), 0);
  cr_assert_eq(lease, 9);
  cJSON_Delete(out);
}

Test(json_u64, reads_integers_in_zero_to_two_to_the_53_minus_one) {
  cJSON *o = cJSON_Parse("{\"a\":0,\"b\":9007199254740991,\"c\":"
                         "9007199254740992,\"d\":1.5,\"e\":-1,\"f\":\"1\","
                         "\"g\":null,\"h\":2e3}");
  uint64_t v = 5;
  cr_assert_eq(proto_json_u64(o, "a", &v), 0);
  cr_assert_eq(v, 0);
  cr_assert_eq(proto_json_u64(o, "b", &v), 0);
  cr_assert_eq(v, MAX53);
  cr_assert_eq(proto_json_u64(o, "h", &v), 0);
  cr_assert_eq(v, 2000);
  v = 5;
  const char *bad[] = {"c", "d", "e", "f", "g", "missing"};
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
    cr_assert_eq(proto_json_u64(o, bad[i], &v), -1, "%s", bad[i]);
  cr_assert_eq(v, 5, "untouched on failure");
  cJSON_Delete(o);
}

/* ---- proto_json_frame: the printer behind every reply ---- */

static char *print(const cJSON *v, size_t max) {
  uint8_t *frame = NULL;
  size_t len = 0;
  proto_error e = {0};
  cr_assert_eq(proto_json_frame(v, max, &frame, &len, &e), 0, "%s", e.message);
  char *s = malloc(len - 4 + 1);
  memcpy(s, frame + 4, len - 4);
  s[len - 4] = '\0';
  uint32_t n = 0;
  cr_assert_eq(proto_frame_header_decode(frame, UINT32_MAX, &n, NULL), 0);
  cr_assert_eq(n, len - 4);
  free(frame);
  return s;
}

Test(json_frame, integers_print_exactly_up_to_two_to_the_53) {
  cJSON *o = cJSON_CreateObject();
  cJSON_AddNumberToObject(o, "a", 9007199254740991.0);
  cJSON_AddNumberToObject(o, "b", 1e15);
  cJSON_AddNumberToObject(o, "c", 4294967296.0);
  cJSON_AddNumberToObject(o, "d", -12);
  cJSON_AddNumberToObject(o, "e", 0);
  char *s = print(o, 1 << 20);
  cr_assert_str_eq(s, "{\"a\":9007199254740991,\"b\":1000000000000000,"
                      "\"c\":4294967296,\"d\":-12,\"e\":0}");
  free(s);
  cJSON_Delete(o);
}

Test(json_frame, fractions_read_back_to_the_same_double) {
  const double values[] = {0.1, 1.5, 2.0 / 3.0, 1e-300, 123456.789, 1e300};
  for (size_t i = 0; i < sizeof(values) / sizeof(values[0]); i++) {
    cJSON *n = cJSON_CreateNumber(values[i]);
    char *s = print(n, 1 << 20);
    cr_assert_eq(strtod(s, NULL), values[i], "%s", s);
    cr_assert_lt(strlen(s), 25);
    free(s);
    cJSON_Delete(n);
  }
  cJSON *n = cJSON_CreateNumber(0.1);
  char *s = print(n, 100);
  cr_assert_str_eq(s, "0.1", "the shortest form, not 0.10000000000000001");
  free(s);
  cJSON_Delete(n);
}

Test(json_frame, non_finite_numbers_become_null) {
  cJSON *a = cJSON_CreateArray();
  cJSON_AddItemToArray(a, cJSON_CreateNumber(NAN));
  cJSON_AddItemToArray(a, cJSON_CreateNumber(INFINITY));
  char *s = print(a, 100);
  cr_assert_str_eq(s, "[null,null]");
  free(s);
  cJSON_Delete(a);
}

Test(json_frame, strings_are_escaped_and_utf8_kept) {
  cJSON *o = cJSON_CreateObject();
  cJSON_AddStringToObject(o, "k\"ey", "q\" b\\ n\n t\t c\x01 \xc3\xa9");
  cJSON_AddItemToObject(o, "raw", cJSON_CreateRaw("[1,2]"));
  cJSON_AddItemToObject(o, "l", cJSON_CreateArray());
  cJSON_AddItemToObject(o, "o", cJSON_CreateObject());
  cJSON_AddBoolToObject(o, "t", 1);
  cJSON_AddBoolToObject(o, "f", 0);
  cJSON_AddNullToObject(o, "z");
  char *s = print(o, 1 << 20);
  cr_assert_str_eq(s, "{\"k\\\"ey\":\"q\\\" b\\\\ n\\n t\\t c\\u0001 \xc3\xa9\","
                      "\"raw\":[1,2],\"l\":[],\"o\":{},\"t\":true,\"f\":false,"
                      "\"z\":null}");
  /* And what it prints, cJSON reads back to the same tree. */
  cJSON *back = cJSON_Parse(s);
  cr_assert(cJSON_IsArray(cJSON_GetObjectItem(back, "raw")));
  cr_assert_str_eq(cJSON_GetObjectItem(back, "k\"ey")->valuestring,
                   "q\" b\\ n\n t\t c\x01 \xc3\xa9");
  cJSON_Delete(back);
  free(s);
  cJSON_Delete(o);
}

Test(json_frame, a_body_of_exactly_max_is_printed_and_one_more_is_bad_frame) {
  cJSON *s = cJSON_CreateString("abcdefgh"); /* 10 bytes with quotes */
  char *out = print(s, 10);
  cr_assert_str_eq(out, "\"abcdefgh\"");
  free(out);
  uint8_t *frame = NULL;
  size_t len = 0;
  proto_error e;
  cr_assert_eq(proto_json_frame(s, 9, &frame, &len, &e), SLY_E_BAD_FRAME);
  cr_assert_null(frame);
  cr_assert_eq(len, 0);
  cJSON_Delete(s);
}

/* test_proto_request.c — requests of protocol v1: the frame body, the id, the
 * op, every op's fields, and the error each kind of mistake gets. Tensor
 * descriptors are in test_proto_tensor.c. */
#include <criterion/criterion.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "request.h"

static char buf[1 << 16];

/* printf into a shared buffer: requests are built from parts in many tests. */
static const char *J(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(buf, sizeof(buf), fmt, ap);
  va_end(ap);
  cr_assert(n > 0 && (size_t)n < sizeof(buf));
  return buf;
}

static void parse_ok(const char *json, proto_request *req) {
  proto_error e = {0};
  int r = proto_request_parse(json, strlen(json), req, &e);
  cr_assert_eq(r, 0, "%s\n  -> %s: %s", json, sly_code_name(r), e.message);
  cr_assert(req->has_id);
}

/* Parses `len` bytes expecting `code` with a message containing `msg`. */
static proto_request parse_fail_n(const char *json, size_t len, int code,
                                  const char *msg) {
  proto_request req;
  proto_error e = {0};
  int r = proto_request_parse(json, len, &req, &e);
  cr_assert_eq(r, code, "%.*s\n  -> %s (%s), want %s", (int)len, json,
               sly_code_name(r), r ? e.message : "", sly_code_name(code));
  cr_assert_eq(e.code, code);
  cr_assert(strstr(e.message, msg) != NULL, "message \"%s\" lacks \"%s\"",
            e.message, msg);
  proto_request_free(&req);
  return req;
}

static proto_request parse_fail(const char *json, int code, const char *msg) {
  return parse_fail_n(json, strlen(json), code, msg);
}

/* ---- the frame body: BAD_FRAME, reply id null, connection closes ---- */

Test(body, invalid_utf8_is_bad_frame) {
  const char *bodies[] = {
      "{\"id\":1,\"op\":\"hello\",\"client\":\"\xff\"}",
      "{\"id\":1,\"op\":\"hello\",\"client\":\"\xc0\xaf\"}",     /* overlong */
      "{\"id\":1,\"op\":\"hello\",\"client\":\"\xed\xa0\x80\"}", /* surrogate */
      "{\"id\":1,\"op\":\"hello\",\"client\":\"\xf4\x90\x80\x80\"}", /* >10FFFF */
      "{\"id\":1,\"op\":\"hello\",\"client\":\"\xe2\x82\"}", /* cut short */
      "{\"id\":1,\"op\":\"hello\",\"client\":\"\xc3", /* cut at the end */
  };
  for (size_t i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++) {
    proto_request r = parse_fail(bodies[i], SLY_E_BAD_FRAME, "UTF-8");
    cr_assert(!r.has_id, "a bad frame is answered with id null");
  }
}

Test(body, valid_multibyte_utf8_is_accepted) {
  proto_request r;
  parse_ok("{\"id\":1,\"op\":\"hello\",\"client\":\"caf\xc3\xa9 \xe2\x82\xac "
           "\xf0\x9f\x98\x80\"}",
           &r);
  cr_assert_str_eq(r.client, "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80");
}

Test(body, a_nul_byte_is_bad_frame) {
  const char body[] = "{\"id\":1,\"op\":\"list\"}\0";
  parse_fail_n(body, sizeof(body) - 1, SLY_E_BAD_FRAME, "NUL");
  const char inner[] = "{\"id\":1,\"op\":\"hello\",\"client\":\"a\0b\"}";
  parse_fail_n(inner, sizeof(inner) - 1, SLY_E_BAD_FRAME, "NUL");
}

Test(body, an_escaped_nul_is_bad_frame_so_no_name_is_cut_short) {
  parse_fail("{\"id\":1,\"op\":\"load\",\"slice\":\"enc\\u0000oder\","
             "\"tier\":\"gpu\"}",
             SLY_E_BAD_FRAME, "\\u0000");
}

Test(body, an_escaped_backslash_before_u0000_is_text) {
  proto_request r;
  parse_ok("{\"id\":1,\"op\":\"hello\",\"client\":\"a\\\\u0000\"}", &r);
  cr_assert_str_eq(r.client, "a\\u0000");
}

Test(body, a_raw_control_character_is_bad_frame) {
  parse_fail("\x01{\"id\":1,\"op\":\"list\"}", SLY_E_BAD_FRAME,
             "control character");
  parse_fail("{\"id\":1,\"op\":\"hello\",\"client\":\"a\x1b[31m\"}",
             SLY_E_BAD_FRAME, "control character");
}

Test(body, surrounding_json_whitespace_is_allowed) {
  proto_request r;
  parse_ok(" \t\r\n{\"id\":1,\"op\":\"list\"}\n \t\r", &r);
  cr_assert_eq(r.op, PROTO_OP_LIST);
}

Test(body, text_that_is_not_json_is_bad_frame) {
  parse_fail("{\"id\":1,\"op\":\"list\"", SLY_E_BAD_FRAME, "not JSON");
  parse_fail("{id:1}", SLY_E_BAD_FRAME, "not JSON");
  parse_fail("hello", SLY_E_BAD_FRAME, "not JSON");
  parse_fail("{\"id\":1,\"op\":\"list\",}", SLY_E_BAD_FRAME, "not JSON");
  parse_fail("{\"id\":NaN,\"op\":\"list\"}", SLY_E_BAD_FRAME, "not JSON");
  parse_fail("{\"id\":1,\"op\":\"hello\",\"client\":\"\\ud800\"}",
             SLY_E_BAD_FRAME, "not JSON");
}

Test(body, an_empty_body_is_bad_frame) {
  parse_fail_n("", 0, SLY_E_BAD_FRAME, "empty");
  parse_fail("   ", SLY_E_BAD_FRAME, "not JSON");
}

Test(body, json_that_is_not_an_object_is_bad_frame) {
  parse_fail("[{\"id\":1,\"op\":\"list\"}]", SLY_E_BAD_FRAME, "not an object");
  parse_fail("\"list\"", SLY_E_BAD_FRAME, "not an object");
  parse_fail("42", SLY_E_BAD_FRAME, "not an object");
  parse_fail("null", SLY_E_BAD_FRAME, "not an object");
}

Test(body, bytes_after_the_object_are_bad_frame) {
  parse_fail("{\"id\":1,\"op\":\"list\"}x", SLY_E_BAD_FRAME, "after");
  parse_fail("{\"id\":1,\"op\":\"list\"}{\"id\":2,\"op\":\"list\"}",
             SLY_E_BAD_FRAME, "after");
}

Test(body, nesting_deeper_than_the_parser_allows_is_bad_frame) {
  static char deep[4096];
  size_t n = 0;
  n += (size_t)sprintf(deep, "{\"id\":1,\"op\":\"add_slice\",\"name\":\"a\","
                             "\"constructor\":\"b\",\"config\":{\"x\":");
  for (int i = 0; i < 1200; i++)
    deep[n++] = '[';
  for (int i = 0; i < 1200; i++)
    deep[n++] = ']';
  strcpy(deep + n, "}}");
  parse_fail(deep, SLY_E_BAD_FRAME, "not JSON");
}

Test(body, the_request_is_zeroed_even_when_the_frame_is_bad) {
  proto_request req;
  memset(&req, 0xa5, sizeof(req));
  proto_request_parse("nope", 4, &req, NULL);
  cr_assert(!req.has_id);
  cr_assert_null(req.config);
  cr_assert_eq(req.op, PROTO_OP_COUNT);
  proto_request_free(&req);
  proto_request_free(NULL);
}

/* ---- the id ---- */

Test(id, zero_and_two_to_the_53_minus_one_are_ids) {
  proto_request r;
  parse_ok("{\"id\":0,\"op\":\"list\"}", &r);
  cr_assert_eq(r.id, 0);
  parse_ok("{\"op\":\"list\",\"id\":9007199254740991}", &r);
  cr_assert_eq(r.id, 9007199254740991ULL);
}

Test(id, integral_numbers_in_any_json_notation_are_ids) {
  proto_request r;
  parse_ok("{\"id\":7.0,\"op\":\"list\"}", &r);
  cr_assert_eq(r.id, 7);
  parse_ok("{\"id\":1e3,\"op\":\"list\"}", &r);
  cr_assert_eq(r.id, 1000);
}

Test(id, a_missing_id_is_bad_request_with_id_null) {
  proto_request r = parse_fail("{\"op\":\"list\"}", SLY_E_BAD_REQUEST,
                               "id: missing");
  cr_assert(!r.has_id);
}

Test(id, a_bad_id_is_bad_request_with_id_null) {
  const char *ids[] = {"-1", "1.5", "\"1\"", "null", "true", "[1]",
                       "9007199254740992", "1e300", "-0.5"};
  for (size_t i = 0; i < sizeof(ids) / sizeof(ids[0]); i++) {
    proto_request r = parse_fail(J("{\"id\":%s,\"op\":\"list\"}", ids[i]),
                                 SLY_E_BAD_REQUEST,
                                 "id: expected an integer in 0..2^53-1");
    cr_assert(!r.has_id, "id %s", ids[i]);
  }
}

Test(id, a_bad_id_wins_over_an_unknown_op) {
  proto_request r =
      parse_fail("{\"id\":-1,\"op\":\"fly\"}", SLY_E_BAD_REQUEST, "id:");
  cr_assert(!r.has_id);
}

Test(id, a_later_error_keeps_the_id_for_the_reply) {
  proto_request r = parse_fail("{\"id\":42,\"op\":\"list\",\"x\":1}",
                               SLY_E_BAD_REQUEST, "x: unknown field");
  cr_assert(r.has_id);
  cr_assert_eq(r.id, 42);
}

/* ---- duplicate keys ---- */

Test(duplicates, a_duplicate_id_is_bad_request_with_id_null) {
  proto_request r = parse_fail("{\"id\":1,\"op\":\"list\",\"id\":2}",
                               SLY_E_BAD_REQUEST, "id: duplicate key");
  cr_assert(!r.has_id, "which id would the reply carry?");
}

Test(duplicates, a_duplicate_field_is_bad_request_naming_it) {
  proto_request r = parse_fail("{\"id\":3,\"op\":\"list\",\"op\":\"stats\"}",
                               SLY_E_BAD_REQUEST, "op: duplicate key");
  cr_assert(r.has_id);
  cr_assert_eq(r.id, 3);
}

Test(duplicates, nested_duplicates_are_named_by_path) {
  parse_fail("{\"id\":1,\"op\":\"forward\",\"inputs\":[{\"dtype\":\"int8\","
             "\"shape\":[],\"region\":1,\"offset\":0},{\"dtype\":\"int8\","
             "\"dtype\":\"int8\",\"shape\":[],\"region\":1,\"offset\":0}]}",
             SLY_E_BAD_REQUEST, "inputs[1].dtype: duplicate key");
  parse_fail("{\"id\":1,\"op\":\"add_slice\",\"name\":\"a\",\"constructor\":"
             "\"linear\",\"config\":{\"w\":{\"a\":1,\"a\":2}}}",
             SLY_E_BAD_REQUEST, "config.w.a: duplicate key");
}

Test(duplicates, a_duplicate_among_many_keys_is_found) {
  char *p = buf;
  p += sprintf(p, "{\"id\":1,\"op\":\"add_slice\",\"name\":\"a\","
                  "\"constructor\":\"b\",\"config\":{");
  for (int i = 0; i < 500; i++)
    p += sprintf(p, "\"k%d\":%d,", i, i);
  sprintf(p, "\"k250\":0}}");
  parse_fail(buf, SLY_E_BAD_REQUEST, "config.k250: duplicate key");
  /* And the same object without the duplicate is fine. */
  strcpy(strstr(buf, ",\"k250\":0}}"), "}}");
  proto_request r;
  parse_ok(buf, &r);
  cr_assert_eq(cJSON_GetArraySize(r.config), 500);
  proto_request_free(&r);
}

/* ---- the op ---- */

Test(op, a_missing_op_is_bad_request) {
  proto_request r = parse_fail("{\"id\":5}", SLY_E_BAD_REQUEST, "op: missing");
  cr_assert(r.has_id);
  cr_assert_eq(r.op, PROTO_OP_COUNT);
}

Test(op, an_op_that_is_not_a_string_is_bad_request) {
  parse_fail("{\"id\":5,\"op\":3}", SLY_E_BAD_REQUEST, "op: expected a string");
}

Test(op, an_unknown_op_is_unknown_op_with_the_id) {
  proto_request r =
      parse_fail("{\"id\":5,\"op\":\"fly\"}", SLY_E_UNKNOWN_OP, "\"fly\"");
  cr_assert(r.has_id);
  cr_assert_eq(r.id, 5);
  cr_assert_eq(r.op, PROTO_OP_COUNT);
  parse_fail("{\"id\":5,\"op\":\"LIST\"}", SLY_E_UNKNOWN_OP, "LIST");
  parse_fail("{\"id\":5,\"op\":\"\"}", SLY_E_UNKNOWN_OP, "unknown op");
}

Test(op, client_text_in_a_message_is_cut_and_kept_on_one_line) {
  char op[400];
  memset(op, 'x', sizeof(op) - 1);
  op[sizeof(op) - 1] = '\0';
  proto_error e;
  proto_request r;
  const char *json = J("{\"id\":1,\"op\":\"a\\nb%s\"}", op);
  cr_assert_eq(proto_request_parse(json, strlen(json), &r, &e),
               SLY_E_UNKNOWN_OP);
  cr_assert_null(strchr(e.message, '\n'));
  cr_assert(strstr(e.message, "a?b") != NULL, "%s", e.message);
  cr_assert(strstr(e.message, "...") != NULL, "%s", e.message);
  cr_assert_lt(strlen(e.message), 100);
}

Test(op, names_and_admin_flags) {
  cr_assert_str_eq(proto_op_name(PROTO_OP_SET_ACTIVE_SLICE), "set_active_slice");
  cr_assert_str_eq(proto_op_name(PROTO_OP_COUNT), "unknown");
  const proto_op admin[] = {PROTO_OP_PIN,          PROTO_OP_UNPIN,
                            PROTO_OP_ADD_SLICE,    PROTO_OP_REMOVE_SLICE,
                            PROTO_OP_RELOAD,       PROTO_OP_SHUTDOWN};
  unsigned n_admin = 0;
  for (unsigned op = 0; op < PROTO_OP_COUNT; op++)
    n_admin += proto_op_is_admin((proto_op)op);
  cr_assert_eq(n_admin, 6);
  for (size_t i = 0; i < 6; i++)
    cr_assert(proto_op_is_admin(admin[i]), "%s", proto_op_name(admin[i]));
  cr_assert(!proto_op_is_admin(PROTO_OP_COUNT));
  cr_assert_str_eq(proto_tier_name(PROTO_TIER_GPU), "gpu");
  cr_assert_str_eq(proto_tier_name(PROTO_TIER_CPU), "cpu");
  cr_assert_str_eq(proto_tier_name(PROTO_TIER_DISK), "disk");
}

/* ---- every op with every field, then with an unknown one ---- */

static const struct {
  proto_op op;
  const char *fields; /* every field the op takes, after id and op */
} full[] = {
    {PROTO_OP_HELLO, "\"version\":1,\"client\":\"slyctl\""},
    {PROTO_OP_MAP_REGION, ""},
    {PROTO_OP_UNMAP_REGION, "\"region\":3"},
    {PROTO_OP_FORWARD,
     "\"slice\":\"enc\",\"inputs\":[{\"dtype\":\"float32\",\"shape\":[2,3],"
     "\"region\":1,\"offset\":64}],\"out\":{\"region\":2,\"offset\":0,"
     "\"bytes\":4096}"},
    {PROTO_OP_RELEASE, "\"leases\":[1,2]"},
    {PROTO_OP_SET_ACTIVE_SLICE, "\"slice\":\"enc\",\"wait\":false"},
    {PROTO_OP_LIST, ""},
    {PROTO_OP_STATS, ""},
    {PROTO_OP_LOAD, "\"slice\":\"enc\",\"tier\":\"gpu\""},
    {PROTO_OP_EVICT, "\"slice\":\"enc\",\"tier\":\"disk\""},
    {PROTO_OP_PIN, "\"slice\":\"enc\",\"tier\":\"cpu\""},
    {PROTO_OP_UNPIN, "\"slice\":\"enc\",\"tier\":\"cpu\""},
    {PROTO_OP_ADD_SLICE,
     "\"name\":\"dec\",\"constructor\":\"linear\",\"config\":{"
     "\"in_features\":4,\"out_features\":2}"},
    {PROTO_OP_REMOVE_SLICE, "\"name\":\"dec\""},
    {PROTO_OP_RELOAD, ""},
    {PROTO_OP_SHUTDOWN, ""},
};

static const char *request(proto_op op, const char *fields,
                           const char *extra) {
  return J("{\"id\":11,\"op\":\"%s\"%s%s%s}", proto_op_name(op),
           *fields ? "," : "", fields, extra);
}

Test(ops, the_table_covers_every_op) {
  cr_assert_eq(sizeof(full) / sizeof(full[0]), PROTO_OP_COUNT);
  for (unsigned i = 0; i < PROTO_OP_COUNT; i++)
    cr_assert_eq(full[i].op, (proto_op)i);
}

Test(ops, every_op_parses_with_every_field) {
  for (unsigned i = 0; i < PROTO_OP_COUNT; i++) {
    proto_request r;
    parse_ok(request(full[i].op, full[i].fields, ""), &r);
    cr_assert_eq(r.op, full[i].op);
    cr_assert_eq(r.id, 11);
    proto_request_free(&r);
  }
}

Test(ops, every_op_takes_release) {
  for (unsigned i = 0; i < PROTO_OP_COUNT; i++) {
    proto_request r;
    parse_ok(request(full[i].op, full[i].fields, ",\"release\":[7,8,9]"), &r);
    cr_assert_eq(r.n_release, 3);
    cr_assert_eq(r.release[0], 7);
    cr_assert_eq(r.release[2], 9);
    proto_request_free(&r);
  }
}

Test(ops, every_op_rejects_an_unknown_field_naming_it) {
  for (unsigned i = 0; i < PROTO_OP_COUNT; i++) {
    proto_request r = parse_fail(request(full[i].op, full[i].fields,
                                         ",\"colour\":\"red\""),
                                 SLY_E_BAD_REQUEST, "colour: unknown field");
    cr_assert(r.has_id);
  }
}

Test(ops, a_field_of_another_op_is_bad_request) {
  parse_fail("{\"id\":1,\"op\":\"list\",\"slice\":\"enc\"}", SLY_E_BAD_REQUEST,
             "slice: not a field of op list");
  parse_fail("{\"id\":1,\"op\":\"hello\",\"inputs\":[]}", SLY_E_BAD_REQUEST,
             "inputs: not a field of op hello");
  parse_fail("{\"id\":1,\"op\":\"forward\",\"inputs\":[],\"tier\":\"gpu\"}",
             SLY_E_BAD_REQUEST, "tier: not a field of op forward");
  parse_fail("{\"id\":1,\"op\":\"remove_slice\",\"name\":\"a\","
             "\"constructor\":\"b\"}",
             SLY_E_BAD_REQUEST, "constructor: not a field of op remove_slice");
}

Test(ops, field_names_are_case_sensitive) {
  parse_fail("{\"id\":1,\"op\":\"list\",\"Release\":[]}", SLY_E_BAD_REQUEST,
             "Release: unknown field");
}

/* ---- hello ---- */

Test(hello, all_fields_are_optional) {
  proto_request r;
  parse_ok("{\"id\":1,\"op\":\"hello\"}", &r);
  cr_assert(!r.has_version);
  cr_assert_str_eq(r.client, "");
  parse_ok("{\"id\":1,\"op\":\"hello\",\"version\":1,\"client\":\"slyctl\"}",
           &r);
  cr_assert(r.has_version);
  cr_assert_eq(r.version, 1);
  cr_assert_str_eq(r.client, "slyctl");
}

Test(hello, another_version_is_bad_request) {
  parse_fail("{\"id\":1,\"op\":\"hello\",\"version\":2}", SLY_E_BAD_REQUEST,
             "unsupported protocol version 2");
  parse_fail("{\"id\":1,\"op\":\"hello\",\"version\":0}", SLY_E_BAD_REQUEST,
             "unsupported protocol version 0");
  parse_fail("{\"id\":1,\"op\":\"hello\",\"version\":\"1\"}",
             SLY_E_BAD_REQUEST, "version: expected an integer in 0..2^53-1");
  parse_fail("{\"id\":1,\"op\":\"hello\",\"version\":1.5}", SLY_E_BAD_REQUEST,
             "version: expected an integer");
}

static const char *repeat(char c, size_t n) {
  static char s[1024];
  cr_assert_lt(n, sizeof(s));
  memset(s, c, n);
  s[n] = '\0';
  return s;
}

Test(hello, client_is_at_most_128_bytes) {
  proto_request r;
  parse_ok(J("{\"id\":1,\"op\":\"hello\",\"client\":\"%s\"}", repeat('c', 128)),
           &r);
  cr_assert_eq(strlen(r.client), 128);
  parse_fail(J("{\"id\":1,\"op\":\"hello\",\"client\":\"%s\"}",
               repeat('c', 129)),
             SLY_E_BAD_REQUEST, "client: expected a string of 0..128 bytes");
  parse_fail("{\"id\":1,\"op\":\"hello\",\"client\":7}", SLY_E_BAD_REQUEST,
             "client:");
}

/* ---- names: slice, pipeline, name, constructor ---- */

Test(names, a_name_of_128_bytes_is_accepted_and_129_is_not) {
  const char *keys[] = {"slice", "name"};
  const char *ops[] = {"load\",\"tier\":\"gpu", "remove_slice"};
  for (int i = 0; i < 2; i++) {
    proto_request r;
    parse_ok(J("{\"id\":1,\"op\":\"%s\",\"%s\":\"%s\"}", ops[i], keys[i],
               repeat('n', 128)),
             &r);
    cr_assert_eq(strlen(r.slice), 128);
    parse_fail(J("{\"id\":1,\"op\":\"%s\",\"%s\":\"%s\"}", ops[i], keys[i],
                 repeat('n', 129)),
               SLY_E_BAD_REQUEST, "expected a string of 1..128 bytes");
  }
  proto_request r;
  parse_ok(J("{\"id\":1,\"op\":\"forward\",\"pipeline\":\"%s\",\"inputs\":[]}",
             repeat('p', 128)),
           &r);
  cr_assert_eq(strlen(r.pipeline), 128);
  parse_fail(J("{\"id\":1,\"op\":\"forward\",\"pipeline\":\"%s\","
               "\"inputs\":[]}",
               repeat('p', 129)),
             SLY_E_BAD_REQUEST, "pipeline: expected a string of 1..128");
  parse_ok(J("{\"id\":1,\"op\":\"add_slice\",\"name\":\"a\","
             "\"constructor\":\"%s\"}",
             repeat('k', 128)),
           &r);
  cr_assert_eq(strlen(r.constructor), 128);
  parse_fail(J("{\"id\":1,\"op\":\"add_slice\",\"name\":\"a\","
               "\"constructor\":\"%s\"}",
               repeat('k', 129)),
             SLY_E_BAD_REQUEST, "constructor: expected a string of 1..128");
}

Test(names, an_empty_or_non_string_name_is_bad_request) {
  parse_fail("{\"id\":1,\"op\":\"set_active_slice\",\"slice\":\"\"}",
             SLY_E_BAD_REQUEST, "slice: expected a string of 1..128 bytes");
  parse_fail("{\"id\":1,\"op\":\"set_active_slice\",\"slice\":null}",
             SLY_E_BAD_REQUEST, "slice: expected a string");
  parse_fail("{\"id\":1,\"op\":\"remove_slice\",\"name\":[\"a\"]}",
             SLY_E_BAD_REQUEST, "name: expected a string");
}

Test(names, escaped_control_characters_are_bad_request) {
  parse_fail("{\"id\":1,\"op\":\"set_active_slice\",\"slice\":\"a\\nb\"}",
             SLY_E_BAD_REQUEST, "slice: control characters are not allowed");
  parse_fail("{\"id\":1,\"op\":\"hello\",\"client\":\"x\\u001b[2J\"}",
             SLY_E_BAD_REQUEST, "client: control characters");
  parse_fail("{\"id\":1,\"op\":\"add_slice\",\"name\":\"a\",\"constructor\":"
             "\"lin\\u007fear\"}",
             SLY_E_BAD_REQUEST, "constructor: control characters");
}

Test(names, a_name_counts_bytes_not_characters) {
  /* 43 three-byte characters are 129 bytes. */
  char name[43 * 3 + 1] = "";
  for (int i = 0; i < 43; i++)
    strcat(name, "\xe2\x82\xac");
  parse_fail(J("{\"id\":1,\"op\":\"set_active_slice\",\"slice\":\"%s\"}", name),
             SLY_E_BAD_REQUEST, "slice: expected a string of 1..128 bytes");
}

Test(names, add_slice_names_use_the_config_alphabet) {
  proto_request r;
  parse_ok("{\"id\":1,\"op\":\"add_slice\",\"name\":\"enc-1.v_2\","
           "\"constructor\":\"linear\"}",
           &r);
  cr_assert_str_eq(r.slice, "enc-1.v_2");
  parse_fail("{\"id\":1,\"op\":\"add_slice\",\"name\":\"../etc\","
             "\"constructor\":\"linear\"}",
             SLY_E_BAD_REQUEST, "name: only A-Z a-z 0-9 _ . - are allowed");
  parse_fail("{\"id\":1,\"op\":\"add_slice\",\"name\":\"a b\","
             "\"constructor\":\"linear\"}",
             SLY_E_BAD_REQUEST, "name: only");
}

/* ---- ids in release and leases: at most 64 ---- */

static const char *ids(const char *key, int n, const char *op) {
  char *p = buf;
  p += sprintf(p, "{\"id\":1,\"op\":\"%s\",\"%s\":[", op, key);
  for (int i = 0; i < n; i++)
    p += sprintf(p, "%s%d", i ? "," : "", i + 1);
  sprintf(p, "]}");
  return buf;
}

Test(release, sixty_four_ids_are_accepted_and_sixty_five_are_not) {
  proto_request r;
  parse_ok(ids("release", 64, "list"), &r);
  cr_assert_eq(r.n_release, 64);
  cr_assert_eq(r.release[63], 64);
  parse_fail(ids("release", 65, "list"), SLY_E_BAD_REQUEST,
             "release: 65 ids exceed the limit of 64");
  parse_ok(ids("leases", 64, "release"), &r);
  cr_assert_eq(r.n_leases, 64);
  cr_assert_eq(r.leases[0], 1);
  parse_fail(ids("leases", 65, "release"), SLY_E_BAD_REQUEST,
             "leases: 65 ids exceed the limit of 64");
}

Test(release, an_empty_list_is_accepted) {
  proto_request r;
  parse_ok(ids("leases", 0, "release"), &r);
  cr_assert_eq(r.n_leases, 0);
  parse_ok(ids("release", 0, "stats"), &r);
  cr_assert_eq(r.n_release, 0);
}

Test(release, each_id_is_checked_and_named) {
  parse_fail("{\"id\":1,\"op\":\"list\",\"release\":[1,2,3,-4]}",
             SLY_E_BAD_REQUEST,
             "release[3]: expected an integer in 0..2^53-1");
  parse_fail("{\"id\":1,\"op\":\"release\",\"leases\":[9007199254740992]}",
             SLY_E_BAD_REQUEST, "leases[0]: expected an integer");
  parse_fail("{\"id\":1,\"op\":\"list\",\"release\":5}", SLY_E_BAD_REQUEST,
             "release: expected an array of at most 64 ids");
  parse_fail("{\"id\":1,\"op\":\"release\"}", SLY_E_BAD_REQUEST,
             "leases: missing");
  proto_request r;
  parse_ok("{\"id\":1,\"op\":\"release\",\"leases\":[9007199254740991]}", &r);
  cr_assert_eq(r.leases[0], 9007199254740991ULL);
}

/* ---- unmap_region, set_active_slice, load/evict/pin/unpin ---- */

Test(unmap_region, region_is_required_and_an_integer) {
  proto_request r;
  parse_ok("{\"id\":1,\"op\":\"unmap_region\",\"region\":9007199254740991}",
           &r);
  cr_assert_eq(r.region, 9007199254740991ULL);
  parse_fail("{\"id\":1,\"op\":\"unmap_region\"}", SLY_E_BAD_REQUEST,
             "region: missing");
  parse_fail("{\"id\":1,\"op\":\"unmap_region\",\"region\":9007199254740992}",
             SLY_E_BAD_REQUEST, "region: expected an integer in 0..2^53-1");
}

Test(set_active_slice, wait_defaults_to_true) {
  proto_request r;
  parse_ok("{\"id\":1,\"op\":\"set_active_slice\",\"slice\":\"enc\"}", &r);
  cr_assert(r.wait);
  cr_assert_str_eq(r.slice, "enc");
  parse_ok("{\"id\":1,\"op\":\"set_active_slice\",\"slice\":\"enc\","
           "\"wait\":false}",
           &r);
  cr_assert(!r.wait);
  parse_fail("{\"id\":1,\"op\":\"set_active_slice\",\"slice\":\"enc\","
             "\"wait\":1}",
             SLY_E_BAD_REQUEST, "wait: expected true or false");
  parse_fail("{\"id\":1,\"op\":\"set_active_slice\"}", SLY_E_BAD_REQUEST,
             "slice: missing");
}

Test(tiers, load_evict_and_pin_need_slice_and_tier) {
  const char *ops[] = {"load", "evict", "pin"};
  for (int i = 0; i < 3; i++) {
    parse_fail(J("{\"id\":1,\"op\":\"%s\",\"slice\":\"enc\"}", ops[i]),
               SLY_E_BAD_REQUEST, "tier: missing");
    parse_fail(J("{\"id\":1,\"op\":\"%s\",\"tier\":\"gpu\"}", ops[i]),
               SLY_E_BAD_REQUEST, "slice: missing");
  }
}

Test(tiers, each_tier_name_is_read_and_others_are_bad_request) {
  const char *names[] = {"gpu", "cpu", "disk"};
  const proto_tier want[] = {PROTO_TIER_GPU, PROTO_TIER_CPU, PROTO_TIER_DISK};
  for (int i = 0; i < 3; i++) {
    proto_request r;
    parse_ok(J("{\"id\":1,\"op\":\"load\",\"slice\":\"a\",\"tier\":\"%s\"}",
               names[i]),
             &r);
    cr_assert(r.has_tier);
    cr_assert_eq(r.tier, want[i]);
  }
  parse_fail("{\"id\":1,\"op\":\"load\",\"slice\":\"a\",\"tier\":\"GPU\"}",
             SLY_E_BAD_REQUEST, "tier: expected \"gpu\", \"cpu\" or \"disk\"");
  parse_fail("{\"id\":1,\"op\":\"evict\",\"slice\":\"a\",\"tier\":\"none\"}",
             SLY_E_BAD_REQUEST, "tier:");
  parse_fail("{\"id\":1,\"op\":\"pin\",\"slice\":\"a\",\"tier\":2}",
             SLY_E_BAD_REQUEST, "tier:");
}

Test(tiers, unpin_takes_an_optional_tier) {
  proto_request r;
  parse_ok("{\"id\":1,\"op\":\"unpin\",\"slice\":\"a\"}", &r);
  cr_assert(!r.has_tier);
  parse_ok("{\"id\":1,\"op\":\"unpin\",\"slice\":\"a\",\"tier\":\"gpu\"}", &r);
  cr_assert(r.has_tier);
  cr_assert_eq(r.tier, PROTO_TIER_GPU);
}

/* ---- add_slice / remove_slice ---- */

Test(add_slice, the_config_object_is_handed_to_the_caller) {
  proto_request r;
  parse_ok("{\"id\":1,\"op\":\"add_slice\",\"name\":\"dec\",\"constructor\":"
           "\"linear\",\"config\":{\"in_features\":4,\"bias\":true}}",
           &r);
  cr_assert_str_eq(r.slice, "dec");
  cr_assert_str_eq(r.constructor, "linear");
  cr_assert(cJSON_IsObject(r.config));
  cr_assert_eq(cJSON_GetObjectItem(r.config, "in_features")->valuedouble, 4);
  cr_assert(cJSON_IsTrue(cJSON_GetObjectItem(r.config, "bias")));
  proto_request_free(&r);
  cr_assert_null(r.config);
  proto_request_free(&r); /* twice is harmless */
}

Test(add_slice, config_is_optional_and_must_be_an_object) {
  proto_request r;
  parse_ok("{\"id\":1,\"op\":\"add_slice\",\"name\":\"d\",\"constructor\":"
           "\"torchscript\"}",
           &r);
  cr_assert_null(r.config);
  parse_fail("{\"id\":1,\"op\":\"add_slice\",\"name\":\"d\",\"constructor\":"
             "\"linear\",\"config\":[1]}",
             SLY_E_BAD_REQUEST, "config: expected an object");
  parse_fail("{\"id\":1,\"op\":\"add_slice\",\"name\":\"d\"}",
             SLY_E_BAD_REQUEST, "constructor: missing");
  parse_fail("{\"id\":1,\"op\":\"add_slice\",\"constructor\":\"linear\"}",
             SLY_E_BAD_REQUEST, "name: missing");
  parse_fail("{\"id\":1,\"op\":\"remove_slice\"}", SLY_E_BAD_REQUEST,
             "name: missing");
}

Test(add_slice, a_failed_request_owns_no_config) {
  proto_request r = parse_fail(
      "{\"id\":1,\"op\":\"add_slice\",\"config\":{\"a\":1},\"name\":\"x y\","
      "\"constructor\":\"linear\"}",
      SLY_E_BAD_REQUEST, "name:");
  cr_assert_null(r.config);
}

/* ---- forward: slice, pipeline, out (inputs: test_proto_tensor.c) ---- */

Test(forward, neither_slice_nor_pipeline_means_the_active_slice) {
  proto_request r;
  parse_ok("{\"id\":1,\"op\":\"forward\",\"inputs\":[]}", &r);
  cr_assert_str_eq(r.slice, "");
  cr_assert_str_eq(r.pipeline, "");
  cr_assert(!r.has_out);
  cr_assert_eq(r.n_inputs, 0);
}

Test(forward, slice_and_pipeline_together_are_bad_request) {
  parse_fail("{\"id\":1,\"op\":\"forward\",\"slice\":\"a\",\"pipeline\":\"m\","
             "\"inputs\":[]}",
             SLY_E_BAD_REQUEST, "pipeline: not allowed together with slice");
}

Test(forward, inputs_are_required) {
  parse_fail("{\"id\":1,\"op\":\"forward\",\"slice\":\"a\"}",
             SLY_E_BAD_REQUEST, "inputs: missing");
}

Test(forward, out_names_region_offset_and_bytes) {
  proto_request r;
  parse_ok("{\"id\":1,\"op\":\"forward\",\"pipeline\":\"m\",\"inputs\":[],"
           "\"out\":{\"bytes\":9007199254740991,\"offset\":8,\"region\":2}}",
           &r);
  cr_assert(r.has_out);
  cr_assert_eq(r.out.region, 2);
  cr_assert_eq(r.out.offset, 8);
  cr_assert_eq(r.out.bytes, 9007199254740991ULL);
  cr_assert_str_eq(r.pipeline, "m");
}

Test(forward, a_bad_out_is_bad_request_naming_the_field) {
  parse_fail("{\"id\":1,\"op\":\"forward\",\"inputs\":[],\"out\":{\"region\":"
             "2,\"offset\":0}}",
             SLY_E_BAD_REQUEST, "out.bytes: missing");
  parse_fail("{\"id\":1,\"op\":\"forward\",\"inputs\":[],\"out\":{\"region\":"
             "2,\"offset\":0,\"bytes\":1,\"align\":64}}",
             SLY_E_BAD_REQUEST, "out.align: unknown field");
  parse_fail("{\"id\":1,\"op\":\"forward\",\"inputs\":[],\"out\":{\"region\":"
             "2,\"offset\":9007199254740992,\"bytes\":1}}",
             SLY_E_BAD_REQUEST, "out.offset: expected an integer in 0..2^53-1");
  parse_fail("{\"id\":1,\"op\":\"forward\",\"inputs\":[],\"out\":[2,0,1]}",
             SLY_E_BAD_REQUEST, "out: expected an object");
}

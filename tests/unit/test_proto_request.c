/* test_proto_request.c — requests of protocol v1: the frame body, the id,
 * duplicate keys and the op, and the error each kind of mistake gets. Every
 * op's fields are in test_proto_ops.c, tensor descriptors in
 * test_proto_tensor.c. */
#include <criterion/criterion.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "request.h"

#include "unit/proto_request_util.h"

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

/* The body is scanned eight bytes at a time before anything else: a bad
 * byte or an escape must be found in every lane of a word, and a byte just
 * above a bad one (where a borrow can mark it) must not hide it. */
Test(body, every_position_of_a_word_is_checked) {
  const char head[] = "{\"id\":1,\"op\":\"hello\",\"client\":\"";
  for (size_t k = 0; k < 16; k++) {
    char body[128], want[32];
    /* A raw control character, then 0x20 above it. */
    snprintf(body, sizeof(body), "%s%.*s\x01 abc\"}", head, (int)k,
             "xxxxxxxxxxxxxxxx");
    parse_fail(body, SLY_E_BAD_FRAME, "control character");
    snprintf(body, sizeof(body), "%s%.*s\xff\"}", head, (int)k,
             "xxxxxxxxxxxxxxxx");
    parse_fail(body, SLY_E_BAD_FRAME, "UTF-8");
    snprintf(body, sizeof(body), "%s%.*s\\u0000\"}", head, (int)k,
             "xxxxxxxxxxxxxxxx");
    parse_fail(body, SLY_E_BAD_FRAME, "\\u0000");
    /* An escape that is fine, then the highest plain byte. */
    snprintf(body, sizeof(body), "%s%.*s\\u0041~\"}", head, (int)k,
             "xxxxxxxxxxxxxxxx");
    snprintf(want, sizeof(want), "%.*sA~", (int)k, "xxxxxxxxxxxxxxxx");
    proto_request r;
    parse_ok(body, &r);
    cr_assert_str_eq(r.client, want, "at %zu", k);
    proto_request_free(&r);
  }
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

/* An add_slice whose config holds `opens` nested arrays, after a string
 * full of brackets and an escaped quote that must not count as nesting. */
static void deep_request(char *out, int opens) {
  size_t n = (size_t)sprintf(
      out, "{\"id\":1,\"op\":\"add_slice\",\"name\":\"a\","
           "\"constructor\":\"b\",\"config\":{\"s\":\"\\\"]]}}[[[{{\",\"x\":");
  for (int i = 0; i < opens; i++)
    out[n++] = '[';
  for (int i = 0; i < opens; i++)
    out[n++] = ']';
  strcpy(out + n, "}}");
}

Test(body, nesting_deeper_than_the_parser_allows_is_bad_frame) {
  static char deep[4096];
  /* The body and config objects are two levels, so 998 arrays is 1000. */
  deep_request(deep, 1200);
  parse_fail(deep, SLY_E_BAD_FRAME, "deeper than 1000 levels");
  deep_request(deep, 999);
  parse_fail(deep, SLY_E_BAD_FRAME, "deeper than 1000 levels");
  deep_request(deep, 998);
  proto_request ok;
  parse_ok(deep, &ok);
  proto_request_free(&ok);
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

/* test_proto_ops.c — the fields of every op of protocol v1 and the error each
 * kind of mistake gets; a mangled request of any op gets a code, never a
 * crash. The frame body, id and op are in test_proto_request.c, tensor
 * descriptors in test_proto_tensor.c. */
#include <criterion/criterion.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "request.h"

#include "unit/proto_request_util.h"

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

/* ---- robustness: any bytes get a code, never a crash ---- */

Test(robustness, mangled_requests_always_get_a_request_level_code) {
  uint64_t seed = 0x9e3779b97f4a7c15ULL;
  static char body[4096];
  int seen[5] = {0}; /* ok, BAD_FRAME, BAD_REQUEST, UNKNOWN_OP, BAD_TENSOR */
  for (int iter = 0; iter < 20000; iter++) {
    seed ^= seed << 13, seed ^= seed >> 7, seed ^= seed << 17;
    const char *base = request(full[seed % PROTO_OP_COUNT].op,
                               full[seed % PROTO_OP_COUNT].fields, "");
    size_t len = strlen(base);
    memcpy(body, base, len);
    /* Flip, drop or cut a few bytes. */
    for (int k = 0; k < 1 + (int)(seed >> 60) && len > 1; k++) {
      seed ^= seed << 13, seed ^= seed >> 7, seed ^= seed << 17;
      size_t at = (size_t)(seed >> 8) % len;
      switch (seed & 3) {
      case 0: body[at] = (char)(seed >> 40); break;
      case 1: memmove(body + at, body + at + 1, len - at - 1), len--; break;
      case 2: len = at + 1; break;
      case 3: body[at] = "{}[]\":,0-e\\"[(seed >> 32) % 11]; break;
      }
    }
    proto_request req;
    proto_error e = {0};
    int r = proto_request_parse(body, len, &req, &e);
    cr_assert(r == 0 || r == SLY_E_BAD_FRAME || r == SLY_E_BAD_REQUEST ||
                  r == SLY_E_UNKNOWN_OP || r == SLY_E_BAD_TENSOR,
              "code %d for %.*s", r, (int)len, body);
    if (r < 0) {
      cr_assert_eq(e.code, r);
      cr_assert(proto_utf8_valid(e.message, strlen(e.message)),
                "the message goes into a reply as it is");
    }
    if (r == SLY_E_BAD_FRAME)
      cr_assert(!req.has_id);
    seen[r == 0 ? 0 : r == SLY_E_BAD_FRAME ? 1 : r == SLY_E_BAD_REQUEST ? 2
         : r == SLY_E_UNKNOWN_OP ? 3 : 4]++;
    proto_request_free(&req);
  }
  for (int i = 0; i < 5; i++)
    cr_assert_gt(seen[i], 0, "outcome %d never happened: a weak mangler", i);
}

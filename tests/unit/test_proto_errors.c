/* test_proto_errors.c — the code table and the limits table of protocol v1.
 *
 * One list (SLY_CODE_MAP) yields the enum, the wire name and the message;
 * these tests walk that list so that a code added to it is checked too.
 */
#include <criterion/criterion.h>
#include <string.h>

#include "errors.h"
#include "limits.h"

static const struct {
  int code;
  const char *name;
} wire_codes[] = {
#define ROW(name, value, msg) {value, #name},
    SLY_WIRE_CODE_MAP(ROW)
#undef ROW
};

static const struct {
  int code;
  const char *name;
} client_codes[] = {
#define ROW(name, value, msg) {value, #name},
    SLY_CLIENT_CODE_MAP(ROW)
#undef ROW
};

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

Test(codes, the_wire_has_the_thirteen_codes_of_design_md) {
  const char *design[] = {"BAD_FRAME",  "BAD_REQUEST", "UNKNOWN_OP",
                          "NOT_FOUND",  "EXISTS",      "BAD_TENSOR",
                          "BAD_REGION", "PERMISSION_DENIED", "BUSY",
                          "NO_MEMORY",  "UNAVAILABLE", "INTERNAL",
                          "SHUTTING_DOWN"};
  cr_assert_eq(COUNT(wire_codes), COUNT(design));
  for (size_t i = 0; i < COUNT(design); i++)
    cr_assert_neq(proto_code_from_wire_name(design[i]), 0, "%s", design[i]);
}

Test(codes, every_wire_code_round_trips_through_its_wire_name) {
  for (size_t i = 0; i < COUNT(wire_codes); i++) {
    int code = wire_codes[i].code;
    cr_assert_lt(code, 0, "codes are negative values");
    const char *name = proto_code_wire_name(code);
    cr_assert_not_null(name, "code %d has no wire name", code);
    cr_assert_str_eq(name, wire_codes[i].name);
    cr_assert_eq(proto_code_from_wire_name(name), code, "%s", name);
    cr_assert_str_eq(sly_code_name(code), name);
    cr_assert_gt(strlen(sly_code_message(code)), 0);
  }
}

Test(codes, client_only_codes_have_no_wire_name) {
  for (size_t i = 0; i < COUNT(client_codes); i++) {
    int code = client_codes[i].code;
    cr_assert_null(proto_code_wire_name(code), "%s", client_codes[i].name);
    cr_assert_eq(proto_code_from_wire_name(client_codes[i].name), 0,
                 "a server cannot send %s", client_codes[i].name);
    cr_assert_str_eq(sly_code_name(code), client_codes[i].name);
    cr_assert_gt(strlen(sly_code_message(code)), 0);
  }
}

Test(codes, codes_are_distinct) {
  for (size_t i = 0; i < COUNT(wire_codes); i++)
    for (size_t j = 0; j < COUNT(client_codes); j++)
      cr_assert_neq(wire_codes[i].code, client_codes[j].code);
  for (size_t i = 0; i < COUNT(wire_codes); i++)
    for (size_t j = i + 1; j < COUNT(wire_codes); j++)
      cr_assert_neq(wire_codes[i].code, wire_codes[j].code);
}

Test(codes, ok_and_unknown_values_have_names_but_no_wire_name) {
  cr_assert_str_eq(sly_code_name(0), "OK");
  cr_assert_str_eq(sly_code_name(-999), "UNKNOWN");
  cr_assert_str_eq(sly_code_name(7), "UNKNOWN");
  cr_assert_null(proto_code_wire_name(0));
  cr_assert_null(proto_code_wire_name(-999));
  cr_assert_gt(strlen(sly_code_message(0)), 0);
  cr_assert_gt(strlen(sly_code_message(-999)), 0);
}

Test(codes, unknown_and_differently_cased_names_map_to_zero) {
  cr_assert_eq(proto_code_from_wire_name("not_found"), 0);
  cr_assert_eq(proto_code_from_wire_name("NOT_FOUND "), 0);
  cr_assert_eq(proto_code_from_wire_name(""), 0);
  cr_assert_eq(proto_code_from_wire_name("OK"), 0);
  cr_assert_eq(proto_code_from_wire_name(NULL), 0);
}

Test(proto_fail, fills_the_error_and_returns_the_code) {
  proto_error e = {.has_needed = true, .needed = 5};
  int r = proto_fail(&e, SLY_E_NOT_FOUND, "slice \"%s\" not found", "enc");
  cr_assert_eq(r, SLY_E_NOT_FOUND);
  cr_assert_eq(e.code, SLY_E_NOT_FOUND);
  cr_assert_str_eq(e.message, "slice \"enc\" not found");
  cr_assert(!e.has_needed, "a new failure forgets an old needed");
  cr_assert_eq(proto_fail(NULL, SLY_E_BUSY, "x"), SLY_E_BUSY);
}

Test(proto_fail, an_empty_message_becomes_the_generic_one) {
  proto_error e;
  proto_fail(&e, SLY_E_BUSY, "%s", "");
  cr_assert_str_eq(e.message, sly_code_message(SLY_E_BUSY));
}

Test(proto_fail, a_cut_message_does_not_end_inside_a_character) {
  char arg[PROTO_MESSAGE_MAX * 2] = "";
  /* "é" is two bytes; an odd prefix shifts it across the cut. */
  for (size_t odd = 0; odd < 2; odd++) {
    memset(arg, 0, sizeof(arg));
    memset(arg, 'a', odd);
    for (size_t i = odd; i + 2 < sizeof(arg); i += 2)
      memcpy(arg + i, "\xc3\xa9", 2);
    proto_error e;
    proto_fail(&e, SLY_E_BAD_REQUEST, "%s", arg);
    size_t n = strlen(e.message);
    cr_assert_leq(n, PROTO_MESSAGE_MAX - 1);
    cr_assert_geq(n, PROTO_MESSAGE_MAX - 2);
    unsigned char last = (unsigned char)e.message[n - 1];
    cr_assert(last == 0xa9 || last == 'a', "ends in a lead byte: %x", last);
  }
}

/* The limits table. */
static const struct {
  const char *key;
  uint64_t def, lo, hi;
} limits[] = {
#define ROW(key, def, lo, hi) {#key, def, lo, hi},
    PROTO_LIMIT_MAP(ROW)
#undef ROW
};

Test(limits, every_default_lies_inside_its_config_range) {
  for (size_t i = 0; i < COUNT(limits); i++) {
    cr_assert_leq(limits[i].lo, limits[i].def, "%s", limits[i].key);
    cr_assert_leq(limits[i].def, limits[i].hi, "%s", limits[i].key);
  }
}

Test(limits, defaults_are_those_of_design_md) {
  proto_limits l;
  memset(&l, 0xff, sizeof(l));
  proto_limits_default(&l);
  cr_assert_eq(l.max_frame_bytes, 1048576);
  cr_assert_eq(l.frame_timeout_ms, 10000);
  cr_assert_eq(l.max_conns_per_uid, 64);
  cr_assert_eq(l.max_regions_per_conn, 16);
  cr_assert_eq(l.max_region_mb, 4096);
  cr_assert_eq(l.max_registered_mb, 8192);
  cr_assert_eq(l.max_inflight_per_conn, 64);
  cr_assert_eq(l.queue_depth, 256);
  cr_assert_eq(l.max_output_mb, 1024);
  cr_assert_eq(l.drain_timeout_ms, 30000);
  cr_assert_eq(COUNT(limits), 10, "a new limit needs a line above");
}

Test(limits, the_smallest_frame_limit_still_fits_a_hello) {
  /* A config may lower max_frame_bytes; the fixed-size requests must fit. */
  cr_assert_geq(limits[0].lo, 4096);
  cr_assert_str_eq(limits[0].key, "max_frame_bytes");
}

/* test_hostile_numbers.c — hostile numbers and fixed limits against a real
 * slyced: offsets, sizes, region, lease and request ids at and past 2^53-1
 * and 2^64 (products that would wrap included), `out` ranges at the end of
 * their region and one byte past it, names of 128 and 129 bytes, 8 and 9
 * dims, 17 inputs, 65 leases, JSON nested 1000 and 1001 levels deep, and
 * messages cut to their limits. Each case gets its code on a connection that
 * stays open; afterwards the daemon serves a good forward and is back to its
 * baseline. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <criterion/criterion.h>

#include "fixtures.h"
#include "harness.h"
#include "rawconn.h"

TestSuite(hostile_numbers, .timeout = 60, .fini = td_cleanup);

/* As in test_hostile_frames.c: what glibc may keep of what it freed. */
#define RSS_SLACK_KIB (8 * 1024)
#define REGION_BYTES 4096
/* error.message: 255 bytes; quoted client text: 48 bytes (PROTOCOL.md). */
#define MESSAGE_MAX 255
#define QUOTE_MAX 48

#define P53 "9007199254740991"       /* 2^53 - 1 */
#define P53_1 "9007199254740992"     /* 2^53 */
#define P64_1 "18446744073709551615" /* 2^64 - 1 (a double: 2^64) */
#define P64 "18446744073709551616"   /* 2^64 */
#define P32 "4294967296"             /* 2^32 */

#define A16 "aaaaaaaaaaaaaaaa"
#define A128 A16 A16 A16 A16 A16 A16 A16 A16
#define A129 A128 "a"
#define A300 A128 A128 A16 A16 A16 "aaaaaaaaaaaa"

/* Region 1: writable, lin's input at 0. Region 2: sealed against writes. */
#define FWD(id, tensor)                                                        \
  "{\"id\": " #id ", \"op\": \"forward\", \"slice\": \"lin\", "                \
  "\"inputs\": [" tensor "]}"
#define T(dtype, shape, region, offset)                                        \
  "{\"dtype\": \"" dtype "\", \"shape\": " shape ", \"region\": " region       \
  ", \"offset\": " offset "}"
#define LIN_IN T("float32", "[4, 16]", "1", "0")
#define FWD_OUT(id, out)                                                       \
  "{\"id\": " #id ", \"op\": \"forward\", \"slice\": \"lin\", "                \
  "\"inputs\": [" LIN_IN "], \"out\": " out "}"
#define OUT(region, offset, bytes)                                             \
  "{\"region\": " region ", \"offset\": " offset ", \"bytes\": " bytes "}"

typedef struct {
  const char *json;
  long long id;       /* RC_ID_NULL or the id */
  const char *code;   /* "ok" or an error code */
  const char *needle; /* in error.message, or in an ok reply's text; NULL */
} num_case;

typedef struct {
  td *d;
  td_baseline b;
  int c;
} rig;

/* A daemon with lin, and a connection holding regions 1 and 2. */
static void rig_start(rig *g) {
  char *cfg = fx_config(NULL, NULL);
  g->d = td_start(cfg);
  free(cfg);
  for (int i = 0; i < 3; i++)
    td_assert_forward_ok(g->d, "warm-up");
  td_baseline_take(g->d, &g->b);
  g->c = rc_connect(g->d->sock);
  fx_array x;
  fx_read("linear_w.in0.npy", &x);
  cr_assert_eq(rc_map_data(g->c, x.data, x.nbytes, 1), 1);
  fx_array_free(&x);
  int m = rc_memfd("integ-ro", REGION_BYTES,
                   F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE);
  cr_assert_eq(rc_map_region(g->c, m, 2), 2);
  close(m);
}

static void rig_stop(rig *g, const char *what) {
  close(g->c);
  td_assert_forward_ok(g->d, what);
  td_baseline_assert(g->d, &g->b, RSS_SLACK_KIB, what);
  td_stop_clean(g->d);
}

static void run_cases(int c, const num_case *k, size_t n) {
  for (size_t i = 0; i < n; i++) {
    cr_log_info("case: %.300s", k[i].json);
    cJSON *r = rc_call(c, k[i].json);
    char *text = cJSON_PrintUnformatted(r);
    if (strcmp(k[i].code, "ok") == 0) {
      rc_assert_ok(r, (uint64_t)k[i].id);
      if (k[i].needle)
        cr_assert(strstr(text, k[i].needle), "%.200s: %s lacks %s", k[i].json,
                  text, k[i].needle);
    } else {
      rc_assert_error_msg(r, k[i].id, k[i].code, k[i].needle);
      const cJSON *e = cJSON_GetObjectItemCaseSensitive(r, "error");
      const cJSON *m = cJSON_GetObjectItemCaseSensitive(e, "message");
      cr_assert_leq(strlen(m->valuestring), MESSAGE_MAX,
                    "a message of %zu bytes: %s", strlen(m->valuestring),
                    m->valuestring);
    }
    free(text);
    cJSON_Delete(r);
  }
  rc_assert_hello(c, 999);
}

#define RUN(c, cases) run_cases(c, cases, sizeof(cases) / sizeof(cases[0]))

Test(hostile_numbers, offsets_and_sizes_at_and_past_2_53_and_2_64) {
  static const num_case cases[] = {
      /* Offsets. */
      {FWD(1, T("uint8", "[1]", "1", P53)), 1, "BAD_REGION", NULL},
      {FWD(2, T("float32", "[1]", "1", P53)), 2, "BAD_TENSOR", "multiple"},
      {FWD(3, T("float32", "[4, 16]", "1", "9007199254740988")), 3,
       "BAD_REGION", NULL},
      {FWD(4, T("float32", "[4, 16]", "1", P53_1)), 4, "BAD_REQUEST",
       "inputs[0].offset"},
      {FWD(5, T("float32", "[4, 16]", "1", P64_1)), 5, "BAD_REQUEST",
       "inputs[0].offset"},
      {FWD(6, T("float32", "[4, 16]", "1", P64)), 6, "BAD_REQUEST",
       "inputs[0].offset"},
      {FWD(7, T("float32", "[4, 16]", "1", "1e300")), 7, "BAD_REQUEST",
       "inputs[0].offset"},
      {FWD(8, T("float32", "[4, 16]", "1", "-1")), 8, "BAD_REQUEST",
       "inputs[0].offset"},
      /* An empty tensor may sit at the very end, not past it. */
      {FWD(9, T("float32", "[0, 16]", "1", "4096")), 9, "ok",
       "\"shape\":[0,8]"},
      {FWD(10, T("float32", "[0, 16]", "1", "4100")), 10, "BAD_REGION", NULL},
      /* Sizes: nbytes exactly 2^53-1 is a size, just not in this region. */
      {FWD(11, T("uint8", "[" P53 "]", "1", "0")), 11, "BAD_REGION", NULL},
      {FWD(12, T("float32", "[" P53 "]", "1", "0")), 12, "BAD_TENSOR",
       "2^53-1"},
      {FWD(13, T("uint8", "[" P53_1 "]", "1", "0")), 13, "BAD_TENSOR",
       "shape[0]"},
      {FWD(14, T("uint8", "[" P64 "]", "1", "0")), 14, "BAD_TENSOR",
       "shape[0]"},
      /* 2^32 * 2^32 is 0 in 64 bits: caught, never wrapped. */
      {FWD(15, T("uint8", "[" P32 ", " P32 "]", "1", "0")), 15, "BAD_TENSOR",
       "2^53-1"},
      {FWD(16, T("uint8", "[" P32 ", " P32 ", 0]", "1", "0")), 16, "BAD_TENSOR",
       "2^53-1"},
      {FWD(17, T("float32", "[0, " P53 "]", "1", "0")), 17, "BAD_TENSOR",
       "2^53-1"},
      {FWD(18, T("float32", "[-1, 16]", "1", "0")), 18, "BAD_TENSOR",
       "shape[0]"},
      {FWD(19, T("float32", "[4.5, 16]", "1", "0")), 19, "BAD_TENSOR",
       "shape[0]"},
      {FWD(20, T("float32", "[\"4\", 16]", "1", "0")), 20, "BAD_TENSOR",
       "shape[0]"},
  };
  rig g;
  rig_start(&g);
  RUN(g.c, cases);
  rig_stop(&g, "offsets and sizes");
}

#define L8 "1, 2, 3, 4, 5, 6, 7, 8"
#define L64 L8 ", " L8 ", " L8 ", " L8 ", " L8 ", " L8 ", " L8 ", " L8

/* A server region's id names no client region: not as an input, not as
 * `out`, not for unmap_region. A lease named twice in one list is released
 * once. */
static void server_region_ids(int c) {
  cJSON *r = rc_call(c, FWD(40, LIN_IN));
  rc_assert_ok(r, 40);
  uint64_t lease = rc_u64(r, "lease");
  const cJSON *o =
      cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(r, "outputs"), 0);
  uint64_t srv = rc_u64(o, "region");
  cJSON_Delete(r);
  char json[512], tensor[160], out[128];
  snprintf(tensor, sizeof tensor,
           "{\"dtype\": \"float32\", \"shape\": [4, 8], \"region\": %llu, "
           "\"offset\": 0}",
           (unsigned long long)srv);
  snprintf(json, sizeof json,
           "{\"id\": 41, \"op\": \"forward\", \"slice\": \"lin\", "
           "\"inputs\": [%s]}",
           tensor);
  /* Each error says the id is a server region's, not that it is unknown. */
  static const char say[] = "is a server region";
  r = rc_call(c, json);
  rc_assert_error_msg(r, 41, "BAD_REGION", say);
  cJSON_Delete(r);
  snprintf(out, sizeof out, OUT("%llu", "0", "128"), (unsigned long long)srv);
  snprintf(json, sizeof json, FWD_OUT(42, "%s"), out);
  r = rc_call(c, json);
  rc_assert_error_msg(r, 42, "BAD_REGION", say);
  cJSON_Delete(r);
  snprintf(json, sizeof json,
           "{\"id\": 43, \"op\": \"unmap_region\", \"region\": %llu}",
           (unsigned long long)srv);
  r = rc_call(c, json);
  rc_assert_error_msg(r, 43, "BAD_REGION", say);
  cJSON_Delete(r);
  snprintf(json, sizeof json,
           "{\"id\": 44, \"op\": \"release\", \"leases\": [%llu, %llu]}",
           (unsigned long long)lease, (unsigned long long)lease);
  r = rc_call(c, json);
  rc_assert_ok(r, 44);
  cJSON_Delete(r);
  snprintf(json, sizeof json,
           "{\"id\": 45, \"op\": \"release\", \"leases\": [%llu]}",
           (unsigned long long)lease);
  rc_call_error(c, json, 45, "NOT_FOUND");
}

Test(hostile_numbers, region_lease_and_request_ids_and_out_ranges) {
  static const num_case cases[] = {
      {FWD(1, T("float32", "[4, 16]", P53, "0")), 1, "BAD_REGION", NULL},
      {FWD(2, T("float32", "[4, 16]", P53_1, "0")), 2, "BAD_REQUEST",
       "inputs[0].region"},
      {FWD(3, T("float32", "[4, 16]", "0", "0")), 3, "BAD_REGION", NULL},
      /* out: no sum that wraps, the end of the region is in, past it not. */
      {FWD_OUT(4, OUT("1", P53, P53)), 4, "BAD_REGION", NULL},
      {FWD_OUT(5, OUT("1", "4096", "0")), 5, "BAD_TENSOR", NULL},
      {FWD_OUT(6, OUT("1", "3968", "128")), 6, "ok",
       "\"region\":1,\"offset\":3968"},
      {FWD_OUT(7, OUT("1", "3969", "128")), 7, "BAD_REGION", NULL},
      {FWD_OUT(8, OUT("1", "0", P53_1)), 8, "BAD_REQUEST", "out.bytes"},
      {FWD_OUT(9, OUT("1", P64, "128")), 9, "BAD_REQUEST", "out.offset"},
      {FWD_OUT(10, OUT("2", "0", "128")), 10, "BAD_REGION", "sealed"},
      {FWD_OUT(11, OUT(P53, "0", "128")), 11, "BAD_REGION", NULL},
      /* Leases. */
      {"{\"id\": 12, \"op\": \"hello\", \"release\": [" P53 "]}", 12,
       "NOT_FOUND", NULL},
      {"{\"id\": 13, \"op\": \"hello\", \"release\": [" P53_1 "]}", 13,
       "BAD_REQUEST", "release"},
      {"{\"id\": 14, \"op\": \"hello\", \"release\": [0]}", 14, "NOT_FOUND",
       NULL},
      {"{\"id\": 15, \"op\": \"release\", \"leases\": [" P53 "]}", 15,
       "NOT_FOUND", NULL},
      {"{\"id\": 16, \"op\": \"release\", \"leases\": [" L64 ", 1]}", 16,
       "BAD_REQUEST", "leases"},
      {"{\"id\": 17, \"op\": \"release\", \"leases\": []}", 17, "ok",
       "\"retired_regions\":[]"},
      /* Region ids of unmap_region, request ids, versions. */
      {"{\"id\": 18, \"op\": \"unmap_region\", \"region\": " P53 "}", 18,
       "BAD_REGION", NULL},
      {"{\"id\": 19, \"op\": \"unmap_region\", \"region\": " P64 "}", 19,
       "BAD_REQUEST", "region"},
      {"{\"id\": " P64 ", \"op\": \"hello\"}", RC_ID_NULL, "BAD_REQUEST", "id"},
      {"{\"id\": " P53 ", \"op\": \"nope\"}", 9007199254740991LL, "UNKNOWN_OP",
       NULL},
      {"{\"id\": 22, \"op\": \"hello\", \"version\": " P53 "}", 22,
       "BAD_REQUEST", "unsupported protocol version " P53},
      {"{\"id\": 23, \"op\": \"hello\", \"version\": " P64 "}", 23,
       "BAD_REQUEST", "version"},
  };
  rig g;
  rig_start(&g);
  RUN(g.c, cases);
  server_region_ids(g.c);
  rig_stop(&g, "ids and out ranges");
}

#define IN4 LIN_IN ", " LIN_IN ", " LIN_IN ", " LIN_IN
#define IN16 IN4 ", " IN4 ", " IN4 ", " IN4

Test(hostile_numbers, names_dims_inputs_and_messages_at_their_limits) {
  static const num_case cases[] = {
      {FWD(1, T("float32", "[1, 1, 1, 1, 1, 1, 4, 16]", "1", "0")), 1, "ok",
       "\"shape\":[1,1,1,1,1,1,4,8]"},
      {FWD(2, T("float32", "[1, 1, 1, 1, 1, 1, 1, 4, 16]", "1", "0")), 2,
       "BAD_TENSOR", "dims"},
      {FWD(3, IN16 ", " LIN_IN), 3, "BAD_TENSOR", NULL},
      {"{\"id\": 4, \"op\": \"forward\", \"slice\": \"" A128
       "\", \"inputs\": []}",
       4, "NOT_FOUND", NULL},
      {"{\"id\": 5, \"op\": \"forward\", \"slice\": \"" A129
       "\", \"inputs\": []}",
       5, "BAD_REQUEST", "slice"},
      {"{\"id\": 6, \"op\": \"forward\", \"pipeline\": \"" A128
       "\", \"inputs\": []}",
       6, "NOT_FOUND", NULL},
      {"{\"id\": 7, \"op\": \"forward\", \"pipeline\": \"" A129
       "\", \"inputs\": []}",
       7, "BAD_REQUEST", "pipeline"},
      {"{\"id\": 8, \"op\": \"set_active_slice\", \"slice\": \"\"}", 8,
       "BAD_REQUEST", "slice"},
      {"{\"id\": 9, \"op\": \"load\", \"slice\": \"a\\u0001b\", "
       "\"tier\": \"cpu\"}",
       9, "BAD_REQUEST", "control"},
      {"{\"id\": 10, \"op\": \"load\", \"slice\": \"\\u007f\", "
       "\"tier\": \"cpu\"}",
       10, "BAD_REQUEST", "control"},
      {"{\"id\": 11, \"op\": \"load\", \"slice\": \"lin\", \"tier\": \"GPU\"}",
       11, "BAD_REQUEST", "tier"},
      {"{\"id\": 12, \"op\": \"set_active_slice\", \"slice\": \"lin\", "
       "\"wait\": 1}",
       12, "BAD_REQUEST", "wait"},
      {"{\"id\": 13, \"op\": \"add_slice\", \"name\": \"" A129
       "\", \"constructor\": \"linear\"}",
       13, "BAD_REQUEST", "name"},
      {"{\"id\": 14, \"op\": \"add_slice\", \"name\": \"a b\", "
       "\"constructor\": \"linear\"}",
       14, "BAD_REQUEST", "name"},
      {"{\"id\": 15, \"op\": \"add_slice\", \"name\": \"../x\", "
       "\"constructor\": \"linear\"}",
       15, "BAD_REQUEST", "name"},
      {"{\"id\": 16, \"op\": \"add_slice\", \"name\": \"x\", "
       "\"constructor\": \"" A129 "\"}",
       16, "BAD_REQUEST", "constructor"},
      {"{\"id\": 17, \"op\": \"add_slice\", \"name\": \"x\", "
       "\"constructor\": \"linear\", \"config\": []}",
       17, "BAD_REQUEST", "config"},
      {"{\"id\": 18, \"op\": \"remove_slice\", \"name\": \"" A129 "\"}", 18,
       "BAD_REQUEST", "name"},
      /* Long client text is quoted cut, the message stays one short line. */
      {"{\"id\": 19, \"op\": \"" A300 "\"}", 19, "UNKNOWN_OP", NULL},
      {"{\"id\": 20, \"op\": \"hello\", \"" A300 "\": 1}", 20, "BAD_REQUEST",
       "unknown field"},
  };
  rig g;
  rig_start(&g);
  RUN(g.c, cases);
  /* The quoted op was cut to at most 48 bytes. */
  cJSON *r = rc_call(g.c, "{\"id\": 30, \"op\": \"" A300 "\"}");
  const cJSON *m = cJSON_GetObjectItemCaseSensitive(
      cJSON_GetObjectItemCaseSensitive(r, "error"), "message");
  cr_assert(cJSON_IsString(m));
  size_t run = 0, longest = 0;
  for (const char *p = m->valuestring; *p; p++) {
    run = *p == 'a' ? run + 1 : 0;
    longest = run > longest ? run : longest;
  }
  cr_assert_leq(longest, QUOTE_MAX, "the message quotes %zu bytes: %s", longest,
                m->valuestring);
  cr_assert_geq(longest, QUOTE_MAX - 4, "the op is not quoted: %s",
                m->valuestring);
  cJSON_Delete(r);
  rig_stop(&g, "names and fixed limits");
}

/* {"id": 1, "op": "hello", "x": [[...]]} with `levels` levels in all. */
static char *nested(int levels) {
  const char head[] = "{\"id\": 1, \"op\": \"hello\", \"x\": ";
  int arrays = levels - 1;
  char *s = malloc(sizeof head + 2 * (size_t)arrays + 2);
  cr_assert(s);
  size_t n = sizeof head - 1;
  memcpy(s, head, n);
  memset(s + n, '[', (size_t)arrays);
  n += (size_t)arrays;
  memset(s + n, ']', (size_t)arrays);
  n += (size_t)arrays;
  s[n++] = '}';
  s[n] = '\0';
  return s;
}

Test(hostile_numbers, json_nested_1000_levels_is_read_1001_is_a_bad_frame) {
  rig g;
  rig_start(&g);
  char *ok = nested(1000), *deep = nested(1001);
  /* Read, then refused for its unknown field: the connection stays. */
  rc_call_error(g.c, ok, 1, "BAD_REQUEST");
  rc_assert_hello(g.c, 2);
  int c = rc_connect(g.d->sock);
  cr_assert_eq(rc_send_json(c, deep), 0);
  cJSON *r = rc_read_reply(c);
  rc_assert_error(r, RC_ID_NULL, "BAD_FRAME");
  cJSON_Delete(r);
  rc_assert_closed(c);
  close(c);
  free(ok);
  free(deep);
  rig_stop(&g, "deep JSON");
}

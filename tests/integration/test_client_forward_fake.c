/* test_client_forward_fake.c — sly_forward and its results against a
 * scripted fake server (fakeserver.h): inputs sent as region and offset of
 * their arena, outputs read from the server regions whose fds ride on the
 * reply, leases released on the next request (or at once when 64 wait, or
 * settled when the request they rode on failed), outputs written into an
 * `out` range, set_active_slice / add_slice / remove_slice, and the dtype
 * helpers. Replies that break the rules are in test_client_regions_fake.c.
 */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cJSON.h>

#include "fakeserver.h"
#include "limits.h"
#include "slyce.h"

#define TIMING                                                                 \
  "\"timing\":{\"queue_us\":1,\"load_us\":2,\"compute_us\":3,\"total_us\":7}"

/* `key` of a request printed compactly, "-" when absent. Caller frees. */
static char *field(const cJSON *req, const char *key) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(req, key);
  return v != NULL ? cJSON_PrintUnformatted(v) : strdup("-");
}

/* Checks that field `key` of `req` prints as `want`; records a failure. */
static bool field_is(fake *f, const cJSON *req, const char *key,
                     const char *want) {
  char *got = field(req, key);
  bool ok = strcmp(got, want) == 0;
  if (!ok)
    fake_failf(f, "%s is %s, expected %s", key, got, want);
  free(got);
  return ok;
}

/* Sends a reply with the fd of server region `r` attached, then closes the
 * fake's copy so that only the client's could stay open. */
static void reply_with_region(fake *f, fake_region *r, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  char *body = NULL;
  int n = vasprintf(&body, fmt, ap);
  va_end(ap);
  if (n < 0) {
    fake_failf(f, "vasprintf");
    return;
  }
  fake_reply_fds(f, &r->fd, 1, "%s", body);
  free(body);
  close(r->fd);
  r->fd = -1;
}

static sly_arena *arena(sly_conn *c, size_t bytes) {
  sly_arena *a = NULL;
  sly_error err = {0};
  cr_assert(eq(int, sly_arena_create(c, bytes, &a, &err), 0), "%s",
            err.message);
  return a;
}

/* ---- a forward, its views and its lease ---- */

static void script_forward(fake *f) {
  FCHECK(f, fake_accept_region(f) != NULL, "no arena");
  uint64_t id;
  cJSON *req = fake_expect_json(f, "forward", &id);
  FCHECK(f, req != NULL, "no forward");
  const cJSON *in = cJSON_GetObjectItemCaseSensitive(req, "inputs");
  bool good = field_is(f, req, "slice", "\"enc\"") &&
              field_is(f, req, "pipeline", "-") &&
              field_is(f, req, "out", "-") &&
              field_is(f, req, "release", "-") &&
              field_is(f, req, "inputs",
                       "[{\"dtype\":\"float32\",\"shape\":[2,3],\"region\":1,"
                       "\"offset\":0},{\"dtype\":\"int64\",\"shape\":[4],"
                       "\"region\":1,\"offset\":64}]");
  float *x = good ? fake_tensor_data(f, cJSON_GetArrayItem(in, 0), NULL) : 0;
  int64_t *k = good ? fake_tensor_data(f, cJSON_GetArrayItem(in, 1), NULL) : 0;
  cJSON_Delete(req);
  FCHECK(f, x != NULL && k != NULL, "bad forward request");
  FCHECK(f, x[5] == 5.0f && k[3] == 13, "inputs not where they were said");
  fake_region *out = fake_server_region(f, 4096);
  FCHECK(f, out != NULL, "no server region");
  for (int i = 0; i < 6; i++)
    ((float *)out->base)[i] = x[i] * 2;
  for (int i = 0; i < 4; i++)
    ((int64_t *)((char *)out->base + 64))[i] = k[i] + 1;
  reply_with_region(
      f, out,
      "{\"id\":%llu,\"ok\":true,\"lease\":5,\"outputs\":[{\"dtype\":"
      "\"float32\",\"shape\":[2,3],\"region\":2,\"offset\":0},{\"dtype\":"
      "\"int64\",\"shape\":[4],\"region\":2,\"offset\":64}]," TIMING "}",
      (unsigned long long)id);
  /* The freed result's lease rides on the next request, whatever it is. */
  req = fake_expect_json(f, "list", &id);
  FCHECK(f, req != NULL, "no list");
  good = field_is(f, req, "release", "[5]");
  cJSON_Delete(req);
  FCHECK(f, good, "lease not released");
  fake_reply(f,
             "{\"id\":%llu,\"ok\":true,\"slices\":[],\"pipelines\":[],"
             "\"retired_regions\":[2]}",
             (unsigned long long)id);
  fake_expect_eof(f);
}

Test(client_forward, inputs_go_as_region_and_offset_outputs_come_as_views,
     .timeout = 20) {
  fake *f = fake_start(script_forward, 0);
  sly_conn *c = fake_connect(f);
  sly_arena *a = arena(c, 8192);
  float *x = sly_arena_alloc(a, 6 * sizeof(float), 64);
  int64_t *k = sly_arena_alloc(a, 4 * sizeof(int64_t), 64);
  for (int i = 0; i < 6; i++)
    x[i] = (float)i;
  for (int i = 0; i < 4; i++)
    k[i] = 10 + i;
  sly_tensor in[2] = {{SLY_FLOAT32, 2, {2, 3}, x}, {SLY_INT64, 1, {4}, k}};
  sly_result *r = NULL;
  sly_error err = {0};
  cr_assert(eq(int, sly_forward(c, "enc", in, 2, &r, &err), 0), "%s",
            err.message);
  cr_assert(eq(sz, sly_result_count(r), 2));
  const sly_tensor *o0 = sly_result_output(r, 0), *o1 = sly_result_output(r, 1);
  cr_assert(sly_result_output(r, 2) == NULL);
  cr_assert(eq(int, o0->dtype, SLY_FLOAT32));
  cr_assert(eq(u32, o0->ndim, 2));
  cr_assert(eq(u64, o0->shape[0], 2));
  cr_assert(eq(u64, o0->shape[1], 3));
  cr_assert(eq(u64, sly_tensor_nbytes(o0), 24));
  for (int i = 0; i < 6; i++)
    cr_assert(eq(flt, ((const float *)o0->data)[i], 2.0f * (float)i));
  cr_assert(eq(int, o1->dtype, SLY_INT64));
  cr_assert(eq(i64, ((const int64_t *)o1->data)[3], 14));
  cr_assert(eq(sz, (size_t)((char *)o1->data - (char *)o0->data), 64));
  sly_timing t = sly_result_timing(r);
  cr_assert(t.queue_us == 1 && t.load_us == 2 && t.compute_us == 3 &&
            t.total_us == 7);
  cr_assert(eq(u64, sly_result_lease(r), 5));
  /* The server region is mapped read-only here. */
  cr_assert(eq(int, fake_count_maps("memfd:fake-out", "r--s"), 1));

  sly_result_free(r);
  sly_slice_list *l = NULL;
  cr_assert(eq(int, sly_list(c, &l, &err), 0), "%s", err.message);
  sly_slice_list_free(l);
  /* Retired: unmapped, and its fd was never kept. */
  cr_assert(eq(int, fake_count_maps("memfd:fake-out", "r--s"), 0));
  cr_assert(eq(int, fake_count_fds("memfd:fake-out"), 0));
  sly_close(c);
  fake_finish(f);
}

/* ---- pipeline, the active slice, out, empty tensors ---- */

static void script_variants(fake *f) {
  fake_region *cr = fake_accept_region(f);
  FCHECK(f, cr != NULL, "no arena");
  uint64_t id;
  cJSON *req = fake_expect_json(f, "forward", &id);
  FCHECK(f, req != NULL, "no forward");
  bool good = field_is(f, req, "slice", "-") &&
              field_is(f, req, "pipeline", "\"pipe\"") &&
              field_is(f, req, "inputs",
                       "[{\"dtype\":\"uint8\",\"shape\":[3],\"region\":1,"
                       "\"offset\":0},{\"dtype\":\"float32\",\"shape\":[0,4],"
                       "\"region\":1,\"offset\":8192}]");
  cJSON_Delete(req);
  FCHECK(f, good, "bad pipeline forward");
  fake_region *sr = fake_server_region(f, 4096);
  FCHECK(f, sr != NULL, "no server region");
  strcpy(sr->base, "abc");
  reply_with_region(f, sr,
                    "{\"id\":%llu,\"ok\":true,\"lease\":1,\"outputs\":[{"
                    "\"dtype\":\"uint8\",\"shape\":[3],\"region\":2,"
                    "\"offset\":0}]," TIMING "}",
                    (unsigned long long)id);

  /* No slice, no pipeline, no inputs: the active slice runs. A region the
   * client knows comes without an fd. */
  req = fake_expect_json(f, "forward", &id);
  FCHECK(f, req != NULL, "no second forward");
  good = field_is(f, req, "slice", "-") && field_is(f, req, "pipeline", "-") &&
         field_is(f, req, "inputs", "[]");
  cJSON_Delete(req);
  FCHECK(f, good, "bad forward to the active slice");
  ((int32_t *)sr->base)[32] = 42;
  fake_reply(f,
             "{\"id\":%llu,\"ok\":true,\"lease\":2,\"outputs\":[{\"dtype\":"
             "\"int32\",\"shape\":[],\"region\":2,\"offset\":128}]," TIMING "}",
             (unsigned long long)id);

  /* out: outputs written into the client's own arena. */
  req = fake_expect_json(f, "forward", &id);
  FCHECK(f, req != NULL, "no third forward");
  good =
      field_is(f, req, "slice", "\"enc\"") &&
      field_is(f, req, "out", "{\"region\":1,\"offset\":4096,\"bytes\":4000}");
  cJSON_Delete(req);
  FCHECK(f, good, "bad forward with out");
  ((double *)((char *)cr->base + 4096))[1] = 2.5;
  fake_reply(f,
             "{\"id\":%llu,\"ok\":true,\"lease\":3,\"outputs\":[{\"dtype\":"
             "\"float64\",\"shape\":[2],\"region\":1,\"offset\":4096}]," TIMING
             "}",
             (unsigned long long)id);

  req = fake_expect_json(f, "stats", &id);
  FCHECK(f, req != NULL, "no stats");
  good = field_is(f, req, "release", "[2,1,3]");
  cJSON_Delete(req);
  FCHECK(f, good, "leases not released in the order freed");
  /* The request failed after parsing, so its releases took effect (and a
   * region retired): the client sends nothing more for them. */
  fake_reply(f,
             "{\"id\":%llu,\"ok\":false,\"error\":{\"code\":\"INTERNAL\","
             "\"message\":\"no stats today\"},\"retired_regions\":[2]}",
             (unsigned long long)id);
  fake_expect_eof(f);
}

Test(client_forward, pipeline_active_slice_and_out_each_say_where_to_run,
     .timeout = 20) {
  fake *f = fake_start(script_variants, 0);
  sly_conn *c = fake_connect(f);
  sly_arena *a = arena(c, 8192);
  char *base = sly_arena_base(a);
  uint8_t *u = sly_arena_alloc(a, 3, 1);
  memcpy(u, "xyz", 3);
  /* An empty tensor may sit at the arena's very end. */
  sly_tensor in[2] = {{SLY_UINT8, 1, {3}, u},
                      {SLY_FLOAT32, 2, {0, 4}, base + 8192}};
  sly_result *r1 = NULL, *r2 = NULL, *r3 = NULL;
  sly_error err = {0};
  cr_assert(eq(int, sly_forward_pipeline(c, "pipe", in, 2, &r1, &err), 0), "%s",
            err.message);
  cr_assert(memcmp(sly_result_output(r1, 0)->data, "abc", 3) == 0);
  cr_assert(eq(int, sly_forward(c, NULL, NULL, 0, &r2, &err), 0), "%s",
            err.message);
  const sly_tensor *s = sly_result_output(r2, 0);
  cr_assert(eq(u32, s->ndim, 0));
  cr_assert(eq(i32, *(const int32_t *)s->data, 42));

  sly_forward_opts o = {.slice = "enc", .out = base + 4096, .out_bytes = 4000};
  cr_assert(eq(int, sly_forward_ex(c, &o, NULL, 0, &r3, &err), 0), "%s",
            err.message);
  cr_assert(eq(ptr, sly_result_output(r3, 0)->data, base + 4096));
  cr_assert(eq(dbl, ((const double *)sly_result_output(r3, 0)->data)[1], 2.5));

  sly_result_free(r2);
  sly_result_free(r1);
  sly_result_free(r3);
  sly_stats st;
  cr_assert(eq(int, sly_stats_get(c, &st, &err), SLY_E_INTERNAL));
  /* The settling release did not overwrite the caller's error. */
  cr_assert(eq(str, err.message, "no stats today"));
  cr_assert(eq(int, fake_count_maps("memfd:fake-out", "r--s"), 0));
  sly_close(c);
  fake_finish(f);
}

/* ---- 64 leases waiting: the op release at once ---- */

static void script_many_leases(fake *f) {
  FCHECK(f, fake_accept_region(f) != NULL, "no arena");
  fake_region *sr = NULL;
  for (int i = 1; i <= PROTO_MAX_IDS; i++) {
    uint64_t id;
    cJSON *req = fake_expect_json(f, "forward", &id);
    FCHECK(f, req != NULL, "no forward %d", i);
    cJSON_Delete(req);
    const char *fmt = "{\"id\":%llu,\"ok\":true,\"lease\":%d,\"outputs\":[{"
                      "\"dtype\":\"bool\",\"shape\":[1],\"region\":2,"
                      "\"offset\":%d}]," TIMING "}";
    if (sr == NULL) {
      FCHECK(f, (sr = fake_server_region(f, 4096)) != NULL, "no region");
      reply_with_region(f, sr, fmt, (unsigned long long)id, i, i);
    } else {
      fake_reply(f, fmt, (unsigned long long)id, i, i);
    }
  }
  uint64_t id;
  cJSON *req = fake_expect_json(f, "release", &id);
  FCHECK(f, req != NULL, "no release when 64 leases waited");
  const cJSON *l = cJSON_GetObjectItemCaseSensitive(req, "leases");
  bool good = cJSON_GetArraySize(l) == PROTO_MAX_IDS &&
              cJSON_GetArrayItem(l, 0)->valueint == 1 &&
              cJSON_GetArrayItem(l, 63)->valueint == 64 &&
              field_is(f, req, "release", "-");
  cJSON_Delete(req);
  FCHECK(f, good, "release does not hold leases 1..64");
  fake_reply(f, "{\"id\":%llu,\"ok\":true,\"retired_regions\":[2]}",
             (unsigned long long)id);
  req = fake_expect_json(f, "list", &id);
  FCHECK(f, req != NULL, "no list");
  good = field_is(f, req, "release", "-");
  cJSON_Delete(req);
  FCHECK(f, good, "a released lease was sent again");
  fake_reply(f, "{\"id\":%llu,\"ok\":true,\"slices\":[],\"pipelines\":[]}",
             (unsigned long long)id);
  fake_expect_eof(f);
}

Test(client_forward, the_64th_freed_result_releases_all_at_once,
     .timeout = 30) {
  fake *f = fake_start(script_many_leases, 0);
  sly_conn *c = fake_connect(f);
  arena(c, 4096);
  sly_result *r[PROTO_MAX_IDS];
  sly_error err = {0};
  for (int i = 0; i < PROTO_MAX_IDS; i++)
    cr_assert(eq(int, sly_forward(c, "enc", NULL, 0, &r[i], &err), 0),
              "forward %d: %s", i, err.message);
  for (int i = 0; i < PROTO_MAX_IDS; i++)
    sly_result_free(r[i]);
  cr_assert(eq(int, fake_count_maps("memfd:fake-out", "r--s"), 0));
  sly_slice_list *l = NULL;
  cr_assert(eq(int, sly_list(c, &l, &err), 0), "%s", err.message);
  sly_slice_list_free(l);
  sly_close(c);
  fake_finish(f);
}

/* ---- releases on a request the server refused ---- */

static void forward_reply(fake *f, fake_region **sr, int lease) {
  uint64_t id;
  cJSON *req = fake_expect_json(f, "forward", &id);
  FCHECK(f, req != NULL, "no forward");
  cJSON_Delete(req);
  const char *fmt = "{\"id\":%llu,\"ok\":true,\"lease\":%d,\"outputs\":[{"
                    "\"dtype\":\"int8\",\"shape\":[1],\"region\":%llu,"
                    "\"offset\":0}]," TIMING "}";
  if (*sr == NULL) {
    FCHECK(f, (*sr = fake_server_region(f, 4096)) != NULL, "no region");
    reply_with_region(f, *sr, fmt, (unsigned long long)id, lease,
                      (unsigned long long)(*sr)->id);
  } else {
    fake_reply(f, fmt, (unsigned long long)id, lease,
               (unsigned long long)(*sr)->id);
  }
}

/* Expects `op` carrying `key` == want, answers `reply` (printf with id). */
static bool step(fake *f, const char *op, const char *key, const char *want,
                 const char *reply) {
  uint64_t id;
  cJSON *req = fake_expect_json(f, op, &id);
  bool good = req != NULL && field_is(f, req, key, want);
  cJSON_Delete(req);
  if (good)
    fake_reply(f, reply, (unsigned long long)id);
  return good;
}

static const char NOT_HELD[] =
    "{\"id\":%llu,\"ok\":false,\"error\":{\"code\":\"NOT_FOUND\","
    "\"message\":\"lease 2 is not held\"}}";

static void script_settle(fake *f) {
  FCHECK(f, fake_accept_region(f) != NULL, "no arena");
  fake_region *sr = NULL;
  forward_reply(f, &sr, 1);
  /* A request that did not parse: its releases were never looked at. */
  FCHECK(f,
         step(f, "add_slice", "release", "[1]",
              "{\"id\":%llu,\"ok\":false,\"error\":{\"code\":"
              "\"BAD_REQUEST\",\"message\":\"add_slice needs "
              "admin\"}}"),
         "add_slice");
  FCHECK(f,
         step(f, "release", "leases", "[1]",
              "{\"id\":%llu,\"ok\":true,\"retired_regions\":[2]}"),
         "release [1]");
  sr = NULL;
  forward_reply(f, &sr, 2);
  forward_reply(f, &sr, 3);
  /* The list did not parse, so its releases are settled; lease 2 is not
   * held (whatever the reason), so each lease alone tells which are. */
  FCHECK(f,
         step(f, "list", "release", "[2,3]",
              "{\"id\":%llu,\"ok\":false,\"error\":{\"code\":"
              "\"BAD_REQUEST\",\"message\":\"bad list\"}}"),
         "list");
  FCHECK(f, step(f, "release", "leases", "[2,3]", NOT_HELD), "release [2,3]");
  FCHECK(f, step(f, "release", "leases", "[2]", NOT_HELD), "release [2]");
  FCHECK(f,
         step(f, "release", "leases", "[3]",
              "{\"id\":%llu,\"ok\":true,\"retired_regions\":[3]}"),
         "release [3]");
  FCHECK(f,
         step(f, "list", "release", "-",
              "{\"id\":%llu,\"ok\":true,\"slices\":[],\"pipelines\":[]}"),
         "last list");
  fake_expect_eof(f);
}

Test(client_forward, releases_on_a_refused_request_are_settled_at_once,
     .timeout = 20) {
  fake *f = fake_start(script_settle, 0);
  sly_conn *c = fake_connect(f);
  arena(c, 4096);
  sly_result *r = NULL, *r2 = NULL;
  sly_error err = {0};
  cr_assert(eq(int, sly_forward(c, "enc", NULL, 0, &r, &err), 0), "%s",
            err.message);
  sly_result_free(r);
  cr_assert(eq(int, sly_add_slice(c, "x", "linear", NULL, &err),
               SLY_E_BAD_REQUEST));
  cr_assert(eq(str, err.message, "add_slice needs admin"));
  cr_assert(eq(int, sly_forward(c, "enc", NULL, 0, &r, &err), 0), "%s",
            err.message);
  cr_assert(eq(int, sly_forward(c, "enc", NULL, 0, &r2, &err), 0), "%s",
            err.message);
  sly_result_free(r);
  sly_result_free(r2);
  sly_slice_list *l = NULL;
  cr_assert(eq(int, sly_list(c, &l, &err), SLY_E_BAD_REQUEST));
  cr_assert(eq(int, fake_count_maps("memfd:fake-out", "r--s"), 0));
  cr_assert(eq(int, sly_list(c, &l, &err), 0), "%s", err.message);
  sly_slice_list_free(l);
  sly_close(c);
  fake_finish(f);
}

/* ---- errors of a forward ---- */

static void script_too_small(fake *f) {
  FCHECK(f, fake_accept_region(f) != NULL, "no arena");
  FCHECK(f,
         step(f, "forward", "out", "{\"region\":1,\"offset\":0,\"bytes\":16}",
              "{\"id\":%llu,\"ok\":false,\"error\":{\"code\":\"BAD_TENSOR\","
              "\"message\":\"outputs need 8192 bytes, out has 16\","
              "\"needed\":8192}}"),
         "forward");
  FCHECK(f,
         step(f, "list", "release", "-",
              "{\"id\":%llu,\"ok\":true,\"slices\":[],\"pipelines\":[]}"),
         "list");
  fake_expect_eof(f);
}

Test(client_forward, an_out_too_small_gives_bad_tensor_and_needed,
     .timeout = 20) {
  fake *f = fake_start(script_too_small, 0);
  sly_conn *c = fake_connect(f);
  sly_arena *a = arena(c, 4096);
  sly_forward_opts o = {.out = sly_arena_base(a), .out_bytes = 16};
  sly_result *r = (sly_result *)0x1;
  sly_error err = {0};
  cr_assert(
      eq(int, sly_forward_ex(c, &o, NULL, 0, &r, &err), SLY_E_BAD_TENSOR));
  cr_assert(eq(u64, err.needed, 8192));
  cr_assert(eq(ptr, r, (sly_result *)0x1), "output written on failure");
  sly_slice_list *l = NULL;
  cr_assert(eq(int, sly_list(c, &l, &err), 0), "%s", err.message);
  sly_slice_list_free(l);
  sly_close(c);
  fake_finish(f);
}

static void script_close_with_result(fake *f) {
  FCHECK(f, fake_accept_region(f) != NULL, "no arena");
  fake_region *sr = NULL;
  forward_reply(f, &sr, 1);
  fake_expect_eof(f);
}

Test(client_forward, a_result_freed_after_close_only_frees_memory,
     .timeout = 20) {
  fake *f = fake_start(script_close_with_result, 0);
  sly_conn *c = fake_connect(f);
  arena(c, 4096);
  sly_result *r = NULL;
  sly_error err = {0};
  cr_assert(eq(int, sly_forward(c, "enc", NULL, 0, &r, &err), 0), "%s",
            err.message);
  cr_assert(eq(int, fake_count_maps("memfd:fake-out", "r--s"), 1));
  sly_close(c); /* unmaps the server region; nothing more is sent */
  cr_assert(eq(int, fake_count_maps("memfd:fake-out", "r--s"), 0));
  sly_result_free(r); /* ASan: no use of the closed connection */
  fake_finish(f);
}

/* ---- set_active_slice, add_slice, remove_slice ---- */

static void script_slices(fake *f) {
  FCHECK(f,
         step(f, "set_active_slice", "wait", "false",
              "{\"id\":%llu,\"ok\":true,\"slice\":\"enc\",\"tier\":"
              "\"cpu\"}"),
         "set_active_slice no wait");
  FCHECK(f,
         step(f, "set_active_slice", "wait", "true",
              "{\"id\":%llu,\"ok\":true,\"slice\":\"enc\",\"tier\":"
              "\"gpu\"}"),
         "set_active_slice wait");
  FCHECK(f,
         step(f, "add_slice", "config",
              "{\"in_features\":4,\"out_features\":2}",
              "{\"id\":%llu,\"ok\":true}"),
         "add_slice");
  FCHECK(f,
         step(f, "add_slice", "config", "{}",
              "{\"id\":%llu,\"ok\":false,\"error\":{\"code\":\"EXISTS\","
              "\"message\":\"slice head exists\"}}"),
         "add_slice without config");
  FCHECK(
      f,
      step(f, "remove_slice", "name", "\"head\"", "{\"id\":%llu,\"ok\":true}"),
      "remove_slice");
  FCHECK(f,
         step(f, "set_active_slice", "slice", "\"enc\"",
              "{\"id\":%llu,\"ok\":true,\"slice\":\"enc\",\"tier\":"
              "\"somewhere\"}"),
         "set_active_slice with a bad tier");
  fake_expect_eof(f);
}

Test(client_forward, slice_ops_send_their_fields_and_read_the_tier,
     .timeout = 20) {
  fake *f = fake_start(script_slices, 0);
  sly_conn *c = fake_connect(f);
  sly_error err = {0};
  char tier[8] = "";
  cr_assert(eq(int, sly_set_active_slice(c, "enc", 0, tier, &err), 0), "%s",
            err.message);
  cr_assert(eq(str, tier, "cpu"));
  cr_assert(eq(int, sly_set_active_slice(c, "enc", 1, NULL, &err), 0), "%s",
            err.message);
  /* Refused before sending: the fake sees none of these. */
  cr_assert(
      eq(int, sly_set_active_slice(c, "", 1, tier, &err), SLY_E_INVALID_ARG));
  cr_assert(
      eq(int, sly_set_active_slice(c, NULL, 1, tier, &err), SLY_E_INVALID_ARG));
  cr_assert(eq(int, sly_add_slice(c, "head", "linear", "[1]", &err),
               SLY_E_INVALID_ARG));
  cr_assert(eq(str, err.message, "config is not a JSON object"));
  cr_assert(eq(int, sly_add_slice(c, "head", "linear", "{} x", &err),
               SLY_E_INVALID_ARG));
  cr_assert(eq(int, sly_add_slice(c, "he\nad", "linear", NULL, &err),
               SLY_E_INVALID_ARG));
  cr_assert(
      eq(int, sly_add_slice(c, "head", NULL, NULL, &err), SLY_E_INVALID_ARG));
  cr_assert(eq(int, sly_remove_slice(c, NULL, &err), SLY_E_INVALID_ARG));

  cr_assert(eq(int,
               sly_add_slice(c, "head", "linear",
                             "{\"in_features\": 4, \"out_features\": 2}", &err),
               0),
            "%s", err.message);
  cr_assert(
      eq(int, sly_add_slice(c, "head", "linear", NULL, &err), SLY_E_EXISTS));
  cr_assert(eq(int, sly_remove_slice(c, "head", &err), 0), "%s", err.message);
  strcpy(tier, "old");
  cr_assert(
      eq(int, sly_set_active_slice(c, "enc", 1, tier, &err), SLY_E_PROTOCOL));
  cr_assert(eq(str, tier, "old"), "output written on failure");
  sly_close(c);
  fake_finish(f);
}

/* ---- dtypes ---- */

Test(client_forward, dtype_names_sizes_and_tensor_bytes) {
  static const char *names[] = {"float32", "float64", "float16", "bfloat16",
                                "int64",   "int32",   "int16",   "int8",
                                "uint8",   "bool"};
  static const size_t sizes[] = {4, 8, 2, 2, 8, 4, 2, 1, 1, 1};
  for (int d = SLY_FLOAT32; d <= SLY_BOOL; d++) {
    sly_dtype back = SLY_BOOL;
    cr_assert(eq(str, (char *)sly_dtype_name((sly_dtype)d), (char *)names[d]));
    cr_assert(eq(sz, sly_dtype_size((sly_dtype)d), sizes[d]));
    cr_assert(eq(int, sly_dtype_from_name(names[d], &back), 0));
    cr_assert(eq(int, back, d));
  }
  sly_dtype keep = SLY_INT8;
  cr_assert(eq(int, sly_dtype_from_name("float", &keep), SLY_E_INVALID_ARG));
  cr_assert(eq(int, sly_dtype_from_name(NULL, &keep), SLY_E_INVALID_ARG));
  cr_assert(eq(int, keep, SLY_INT8));
  cr_assert(sly_dtype_name((sly_dtype)10) == NULL);
  cr_assert(eq(sz, sly_dtype_size((sly_dtype)-1), 0));

  sly_tensor t = {SLY_FLOAT32, 3, {2, 3, 4}, NULL};
  cr_assert(eq(u64, sly_tensor_nbytes(&t), 96));
  t.ndim = 0; /* a scalar */
  cr_assert(eq(u64, sly_tensor_nbytes(&t), 4));
  t = (sly_tensor){SLY_INT64, 2, {0, 5}, NULL}; /* empty */
  cr_assert(eq(u64, sly_tensor_nbytes(&t), 0));
  /* 2^32 * 2^32 elements would wrap to 0 in 64 bits: refused, as past the
   * protocol's 2^53-1 bytes. */
  t = (sly_tensor){SLY_UINT8, 2, {1ull << 32, 1ull << 32}, NULL};
  cr_assert(eq(u64, sly_tensor_nbytes(&t), 0));
  t = (sly_tensor){SLY_UINT8, 1, {PROTO_MAX_INT}, NULL};
  cr_assert(eq(u64, sly_tensor_nbytes(&t), PROTO_MAX_INT));
  t.dtype = SLY_INT16;
  cr_assert(eq(u64, sly_tensor_nbytes(&t), 0));
  t = (sly_tensor){SLY_UINT8, 9, {1, 1, 1, 1, 1, 1, 1, 1}, NULL};
  cr_assert(eq(u64, sly_tensor_nbytes(&t), 0));
  t = (sly_tensor){(sly_dtype)99, 1, {1}, NULL};
  cr_assert(eq(u64, sly_tensor_nbytes(&t), 0));
  cr_assert(eq(u64, sly_tensor_nbytes(NULL), 0));
}

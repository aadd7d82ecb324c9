/* test_forward_errors.c — every bad forward gets its error code, and the
 * same connection then runs a good forward: the daemon keeps serving. Inputs
 * libslyce would refuse itself (a foreign region, an offset past the end, a
 * misaligned offset) are sent as hand-written JSON. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>

#include "fixtures.h"
#include "harness.h"

TestSuite(forward_errors, .timeout = 30, .fini = td_cleanup);

#define ARENA_BYTES (64u << 10)
#define GHOST_PATH FX_DIR "/no-such-module.pt"

/* A connection with an arena holding ts_one's input, and its reference. */
typedef struct {
  td *d;
  sly_conn *c;
  sly_arena *a;
  fx_array x, ref;
  sly_tensor in;
} fixture;

static void setup(fixture *f) {
  char *cfg = fx_config("{\"name\": \"ghost\", \"constructor\": "
                        "\"torchscript\", \"config\": {\"path\": \"" GHOST_PATH
                        "\"}}",
                        NULL);
  f->d = td_start(cfg);
  free(cfg);
  f->c = td_connect(f->d);
  sly_error err;
  cr_assert_eq(sly_arena_create(f->c, ARENA_BYTES, &f->a, &err), 0, "%s",
               err.message);
  fx_read("ts_one.in0.npy", &f->x);
  fx_read("ts_one.out0.npy", &f->ref);
  f->in = fx_put(f->a, &f->x);
}

static void teardown(fixture *f) {
  fx_array_free(&f->x);
  fx_array_free(&f->ref);
  sly_close(f->c);
  td_stop(f->d);
}

/* A good forward on the same connection: the daemon still serves it. */
static void good_forward(fixture *f) {
  sly_result *r = NULL;
  sly_error err;
  cr_assert_eq(sly_forward(f->c, "ts_one", &f->in, 1, &r, &err), 0,
               "good forward after an error: %s: %s", sly_code_name(err.code),
               err.message);
  fx_assert_match(sly_result_output(r, 0), &f->ref, FX_TOL_F32,
                  "ts_one after an error");
  sly_result_free(r);
}

/* sly_forward fails with `code` and a message holding `needle`. */
static void expect_forward(fixture *f, const char *slice, const sly_tensor *in,
                           size_t n, int code, const char *needle) {
  sly_result *r = NULL;
  sly_error err;
  int rc = sly_forward(f->c, slice, in, n, &r, &err);
  cr_assert_eq(rc, code, "forward %s: got %s (%s), want %s",
               slice ? slice : "(active)", sly_code_name(rc),
               rc < 0 ? err.message : "ok", sly_code_name(code));
  cr_assert_null(r, "a failed forward returned a result");
  if (needle)
    cr_assert(strstr(err.message, needle), "forward %s: \"%s\" lacks \"%s\"",
              slice ? slice : "(active)", err.message, needle);
  good_forward(f);
}

/* A hand-written request fails with `code` and a message holding `needle`. */
static void expect_json(fixture *f, const char *json, int code,
                        const char *needle) {
  char *reply = NULL;
  sly_error err;
  int rc = sly_request_json(f->c, json, &reply, &err);
  cr_assert_eq(rc, code, "%s: got %s, want %s: %s", json, sly_code_name(rc),
               sly_code_name(code), reply ? reply : err.message);
  if (needle)
    cr_assert(strstr(err.message, needle), "%s: \"%s\" lacks \"%s\"", json,
              err.message, needle);
  free(reply);
  good_forward(f);
}

/* A float tensor of `shape` at the arena's next free place. */
static sly_tensor tensor_in(fixture *f, sly_dtype dt, uint32_t ndim,
                            const uint64_t *shape) {
  sly_tensor t = {.dtype = dt, .ndim = ndim};
  memcpy(t.shape, shape, ndim * sizeof *shape);
  t.data = sly_arena_alloc(f->a, sly_tensor_nbytes(&t), 64);
  cr_assert(t.data, "arena full");
  memset(t.data, 0, sly_tensor_nbytes(&t));
  return t;
}

Test(forward_errors, wrong_dtype_is_bad_tensor_with_libtorchs_message) {
  fixture f;
  setup(&f);
  const uint64_t shape[] = {4, 16};
  sly_tensor dbl = tensor_in(&f, SLY_FLOAT64, 2, shape);
  sly_tensor i64 = tensor_in(&f, SLY_INT64, 2, shape);
  expect_forward(&f, "ts_one", &dbl, 1, SLY_E_BAD_TENSOR,
                 "must have the same dtype");
  expect_forward(&f, "lin", &dbl, 1, SLY_E_BAD_TENSOR,
                 "must have the same dtype");
  expect_forward(&f, "ts_one", &i64, 1, SLY_E_BAD_TENSOR, "Long");
  /* An embedding wants integer indices. */
  expect_forward(&f, "ts_embed", &f.in, 1, SLY_E_BAD_TENSOR, "indices");
  teardown(&f);
}

Test(forward_errors, wrong_shape_is_bad_tensor_with_libtorchs_message) {
  fixture f;
  setup(&f);
  const uint64_t s15[] = {4, 15}, s3[] = {2, 5, 31};
  sly_tensor narrow = tensor_in(&f, SLY_FLOAT32, 2, s15);
  sly_tensor odd = tensor_in(&f, SLY_FLOAT32, 3, s3);
  expect_forward(&f, "ts_one", &narrow, 1, SLY_E_BAD_TENSOR,
                 "shapes cannot be multiplied (4x15 and 16x8)");
  expect_forward(&f, "lin", &narrow, 1, SLY_E_BAD_TENSOR,
                 "shapes cannot be multiplied (4x15 and 16x8)");
  expect_forward(&f, "tel", &odd, 1, SLY_E_BAD_TENSOR, "tel");
  /* Too few inputs for a two-input module, too many for a one-input one. */
  expect_forward(&f, "ts_multi", &f.in, 1, SLY_E_BAD_TENSOR, NULL);
  sly_tensor two[2] = {f.in, f.in};
  expect_forward(&f, "ts_one", two, 2, SLY_E_BAD_TENSOR, NULL);
  teardown(&f);
}

Test(forward_errors, unknown_slice_or_pipeline_is_not_found) {
  fixture f;
  setup(&f);
  expect_forward(&f, "nope", &f.in, 1, SLY_E_NOT_FOUND, "nope");
  sly_result *r = NULL;
  sly_error err;
  cr_assert_eq(sly_forward_pipeline(f.c, "nope_p", &f.in, 1, &r, &err),
               SLY_E_NOT_FOUND, "unknown pipeline: %s", err.message);
  cr_assert(strstr(err.message, "nope_p"), "%s", err.message);
  good_forward(&f);
  /* A slice name is not a pipeline name, nor the other way round. */
  cr_assert_eq(sly_forward_pipeline(f.c, "lin", &f.in, 1, &r, &err),
               SLY_E_NOT_FOUND, "slice as pipeline: %s", err.message);
  expect_forward(&f, "p", &f.in, 1, SLY_E_NOT_FOUND, NULL);
  teardown(&f);
}

Test(forward_errors, inputs_outside_their_region_are_bad_region) {
  fixture f;
  setup(&f);
  unsigned long long reg = sly_arena_region(f.a);
  size_t size = sly_arena_size(f.a);
  char json[512];
  /* 256 bytes starting 128 before the end. */
  snprintf(json, sizeof json,
           "{\"op\": \"forward\", \"slice\": \"ts_one\", \"inputs\": "
           "[{\"dtype\": \"float32\", \"shape\": [4, 16], \"region\": %llu, "
           "\"offset\": %zu}]}",
           reg, size - 128);
  expect_json(&f, json, SLY_E_BAD_REGION, NULL);
  snprintf(json, sizeof json,
           "{\"op\": \"forward\", \"slice\": \"ts_one\", \"inputs\": "
           "[{\"dtype\": \"float32\", \"shape\": [4, 16], \"region\": %llu, "
           "\"offset\": %zu}]}",
           reg, (size_t)9007199254740988ull);
  expect_json(&f, json, SLY_E_BAD_REGION, NULL);
  /* A region id this connection never had. */
  snprintf(json, sizeof json,
           "{\"op\": \"forward\", \"slice\": \"ts_one\", \"inputs\": "
           "[{\"dtype\": \"float32\", \"shape\": [4, 16], \"region\": %llu, "
           "\"offset\": 0}]}",
           reg + 999);
  expect_json(&f, json, SLY_E_BAD_REGION, NULL);
  /* Ending exactly at the region's end is fine. */
  float *end = (float *)((char *)sly_arena_base(f.a) + size - 256);
  memcpy(end, f.x.data, 256);
  sly_tensor at_end = f.in;
  at_end.data = end;
  sly_result *r = NULL;
  sly_error err;
  cr_assert_eq(sly_forward(f.c, "ts_one", &at_end, 1, &r, &err), 0,
               "tensor ending at the region's end: %s", err.message);
  fx_assert_match(sly_result_output(r, 0), &f.ref, FX_TOL_F32, "at the end");
  sly_result_free(r);
  teardown(&f);
}

Test(forward_errors, misaligned_offset_is_bad_tensor) {
  fixture f;
  setup(&f);
  char json[512];
  snprintf(json, sizeof json,
           "{\"op\": \"forward\", \"slice\": \"ts_one\", \"inputs\": "
           "[{\"dtype\": \"float32\", \"shape\": [4, 16], \"region\": %llu, "
           "\"offset\": 2}]}",
           (unsigned long long)sly_arena_region(f.a));
  expect_json(&f, json, SLY_E_BAD_TENSOR, "offset");
  teardown(&f);
}

Test(forward_errors, no_slice_and_no_active_slice_is_bad_request) {
  fixture f;
  setup(&f);
  expect_forward(&f, NULL, &f.in, 1, SLY_E_BAD_REQUEST, NULL);
  expect_json(&f, "{\"op\": \"forward\", \"inputs\": []}", SLY_E_BAD_REQUEST,
              NULL);
  teardown(&f);
}

Test(forward_errors, out_too_small_is_bad_tensor_with_needed) {
  fixture f;
  setup(&f);
  fx_array tx, t0, t1;
  fx_read("ts_tuple.in0.npy", &tx);
  fx_read("ts_tuple.out0.npy", &t0);
  fx_read("ts_tuple.out1.npy", &t1);
  sly_tensor in = fx_put(f.a, &tx);
  /* [3, 8] and [3] float32: 96 + 12 bytes. */
  char *out = sly_arena_alloc(f.a, 4096, 64);
  cr_assert(out);
  sly_forward_opts o = {.slice = "ts_tuple", .out = out, .out_bytes = 107};
  sly_result *r = NULL;
  sly_error err;
  cr_assert_eq(sly_forward_ex(f.c, &o, &in, 1, &r, &err), SLY_E_BAD_TENSOR,
               "107 bytes for 108: %s", err.message);
  cr_assert_eq(err.needed, 108, "needed %llu, want 108",
               (unsigned long long)err.needed);

  /* Exactly enough: the outputs land in the range, one after another (the
   * good forward after the error, and the first to succeed here). */
  memset(out, 0xff, 4096);
  o.out_bytes = 108;
  cr_assert_eq(sly_forward_ex(f.c, &o, &in, 1, &r, &err), 0, "%s",
               err.message);
  cr_assert_eq(sly_result_count(r), 2);
  const sly_tensor *o0 = sly_result_output(r, 0), *o1 = sly_result_output(r, 1);
  cr_assert_eq(o0->data, (void *)out, "output 0 not at the start of out");
  cr_assert_eq(o1->data, (void *)(out + 96), "output 1 not right after 0");
  fx_assert_match(o0, &t0, FX_TOL_F32, "ts_tuple out 0 in out");
  fx_assert_match(o1, &t1, FX_TOL_F32, "ts_tuple out 1 in out");
  cr_assert_eq((unsigned char)out[108], 0xff, "wrote past out");
  cr_assert_gt(sly_result_lease(r), 0, "a forward with out has a lease too");
  sly_result_free(r);
  /* Outputs written to the client cost the daemon no server region. */
  cr_assert_eq(td_maps_files(f.d->pid, "slyced-out", NULL, 0), 0,
               "the daemon made a server region for outputs given an out");

  /* An `out` that starts off alignment: each output is aligned in the
   * region (2 bytes of padding first), and `needed` counts the padding. */
  o.out = out + 2;
  o.out_bytes = 108;
  cr_assert_eq(sly_forward_ex(f.c, &o, &in, 1, &r, &err), SLY_E_BAD_TENSOR,
               "108 bytes at offset 2: %s", err.message);
  cr_assert_eq(err.needed, 110, "needed %llu, want 110",
               (unsigned long long)err.needed);
  o.out_bytes = 110;
  cr_assert_eq(sly_forward_ex(f.c, &o, &in, 1, &r, &err), 0, "%s",
               err.message);
  o0 = sly_result_output(r, 0);
  o1 = sly_result_output(r, 1);
  cr_assert_eq(o0->data, (void *)(out + 4), "output 0 not at out + 4");
  cr_assert_eq(o1->data, (void *)(out + 100), "output 1 not right after 0");
  fx_assert_match(o0, &t0, FX_TOL_F32, "ts_tuple out 0 at an odd out");
  fx_assert_match(o1, &t1, FX_TOL_F32, "ts_tuple out 1 at an odd out");
  sly_result_free(r);
  good_forward(&f);
  fx_array_free(&tx);
  fx_array_free(&t0);
  fx_array_free(&t1);
  teardown(&f);
}

Test(forward_errors, missing_torchscript_file_is_unavailable_and_others_serve) {
  fixture f;
  setup(&f);
  for (int i = 0; i < 2; i++)
    expect_forward(&f, "ghost", &f.in, 1, SLY_E_UNAVAILABLE,
                   "no-such-module.pt");
  sly_slice_list *l = NULL;
  sly_error err;
  cr_assert_eq(sly_list(f.c, &l, &err), 0, "%s", err.message);
  bool seen = false;
  for (size_t i = 0; i < l->count; i++) {
    if (strcmp(l->slices[i].name, "ghost") != 0)
      continue;
    seen = true;
    cr_assert_str_eq(l->slices[i].state, "failed");
  }
  sly_slice_list_free(l);
  cr_assert(seen, "ghost missing from list");
  /* Other slices, and other connections, are unaffected. */
  sly_conn *c2 = td_connect(f.d);
  sly_arena *a2 = NULL;
  cr_assert_eq(sly_arena_create(c2, 4096, &a2, &err), 0, "%s", err.message);
  fx_array lx, lref;
  fx_read("linear_w.in0.npy", &lx);
  fx_read("linear_w.out0.npy", &lref);
  sly_tensor in2 = fx_put(a2, &lx);
  sly_result *r = NULL;
  cr_assert_eq(sly_forward(c2, "lin", &in2, 1, &r, &err), 0, "%s",
               err.message);
  fx_assert_match(sly_result_output(r, 0), &lref, FX_TOL_F32, "lin");
  sly_result_free(r);
  sly_close(c2);
  fx_array_free(&lx);
  fx_array_free(&lref);
  teardown(&f);
}

Test(forward_errors, add_and_remove_slice_errors) {
  fixture f;
  setup(&f);
  sly_error err;
  cr_assert_eq(sly_add_slice(f.c, "y", "linear",
                             "{\"in_features\": 4, \"out_features\": 2, "
                             "\"colour\": 1}",
                             &err),
               SLY_E_BAD_REQUEST, "unknown key: %s", err.message);
  cr_assert(strstr(err.message, "colour"), "%s", err.message);
  good_forward(&f);
  cr_assert_eq(sly_add_slice(f.c, "y", "linear",
                             "{\"in_features\": \"4\", \"out_features\": 2}",
                             &err),
               SLY_E_BAD_REQUEST, "wrong type: %s", err.message);
  cr_assert(strstr(err.message, "in_features"), "%s", err.message);
  good_forward(&f);
  cr_assert_eq(sly_add_slice(f.c, "y", "no_such_constructor", NULL, &err),
               SLY_E_BAD_REQUEST, "unknown constructor: %s", err.message);
  good_forward(&f);
  /* The refused slices were not added. */
  cr_assert_eq(sly_remove_slice(f.c, "y", &err), SLY_E_NOT_FOUND,
               "a refused slice exists: %s", err.message);
  good_forward(&f);
  const char *cfg = "{\"in_features\": 16, \"out_features\": 8, \"seed\": 1}";
  cr_assert_eq(sly_add_slice(f.c, "lin", "linear", cfg, &err), SLY_E_EXISTS,
               "existing slice: %s", err.message);
  good_forward(&f);
  cr_assert_eq(sly_add_slice(f.c, "p", "linear", cfg, &err), SLY_E_EXISTS,
               "existing pipeline name: %s", err.message);
  good_forward(&f);
  cr_assert_eq(sly_remove_slice(f.c, "nope", &err), SLY_E_NOT_FOUND, "%s",
               err.message);
  good_forward(&f);
  teardown(&f);
}

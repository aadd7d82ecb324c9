/* test_forward_correct.c — slices run through slyced from libslyce give
 * PyTorch's outputs: every fixture (TorchScript modules and built-ins with
 * safetensors weights), pipelines, the connection's active slice, and eight
 * clients forwarding at once. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>

#include "fixtures.h"
#include "harness.h"
#include "tierkit.h"

TestSuite(forward_correct, .timeout = 30, .fini = td_cleanup);

#define ARENA_BYTES (1u << 20)

/* One fixture: the slice that serves it and the stem of its .npy files. */
typedef struct {
  const char *slice;
  const char *stem; /* "<stem>.in0.npy", "<stem>.out0.npy", ... */
  int n_in, n_out;
  bool bf16; /* inputs narrowed to bfloat16, outputs come as bfloat16 */
} fwd_case;

static const fwd_case case_ts_one = {"ts_one", "ts_one", 1, 1, false};
static const fwd_case case_ts_multi = {"ts_multi", "ts_multi", 2, 1, false};
static const fwd_case case_ts_tuple = {"ts_tuple", "ts_tuple", 1, 2, false};
static const fwd_case case_ts_embed = {"ts_embed", "ts_embed", 1, 1, false};
static const fwd_case case_lin = {"lin", "linear_w", 1, 1, false};
static const fwd_case case_tel = {"tel", "tel_w", 1, 1, false};
static const fwd_case case_tel_bf16 = {"tel_bf16", "tel_bf16", 1, 1, true};
static const fwd_case case_ts_frozen = {"ts_frozen", "ts_frozen", 1, 1, false};
static const fwd_case case_ts_traced = {"ts_traced", "ts_traced", 1, 1, false};

/* A fixture's inputs and reference outputs, read once. */
typedef struct {
  const fwd_case *k;
  fx_array in[2], out[2];
} fwd_data;

static void data_read(const fwd_case *k, fwd_data *d) {
  d->k = k;
  char name[128];
  for (int i = 0; i < k->n_in; i++) {
    snprintf(name, sizeof name, "%s.in%d.npy", k->stem, i);
    fx_read(name, &d->in[i]);
  }
  for (int i = 0; i < k->n_out; i++) {
    snprintf(name, sizeof name, "%s.out%d.npy", k->stem, i);
    fx_read(name, &d->out[i]);
  }
}

static void data_free(fwd_data *d) {
  for (int i = 0; i < d->k->n_in; i++)
    fx_array_free(&d->in[i]);
  for (int i = 0; i < d->k->n_out; i++)
    fx_array_free(&d->out[i]);
}

static double tol_of(const fwd_case *k) {
  return k->bf16 ? FX_TOL_BF16 : FX_TOL_F32;
}

static td *start_fixtures(void) {
  char *cfg = fx_config(NULL, NULL);
  td *d = td_start(cfg);
  free(cfg);
  return d;
}

/* Runs one fixture through slyced on `c` and compares every output. */
static void run_case(sly_conn *c, sly_arena *a, const fwd_case *k) {
  fwd_data d;
  data_read(k, &d);
  sly_tensor in[2];
  for (int i = 0; i < k->n_in; i++)
    in[i] = k->bf16 ? fx_put_bf16(a, &d.in[i]) : fx_put(a, &d.in[i]);
  sly_result *r = NULL;
  sly_error err;
  int rc = sly_forward(c, k->slice, in, (size_t)k->n_in, &r, &err);
  cr_assert_eq(rc, 0, "forward %s: %s", k->slice, err.message);
  cr_assert_eq(sly_result_count(r), (size_t)k->n_out,
               "%s: %zu outputs, want %d", k->slice, sly_result_count(r),
               k->n_out);
  for (int i = 0; i < k->n_out; i++) {
    const sly_tensor *t = sly_result_output(r, (size_t)i);
    sly_dtype want = k->bf16 ? SLY_BFLOAT16 : SLY_FLOAT32;
    cr_assert_eq(t->dtype, want, "%s output %d: dtype %s, want %s", k->slice,
                 i, sly_dtype_name(t->dtype), sly_dtype_name(want));
    char what[64];
    snprintf(what, sizeof what, "%s output %d", k->slice, i);
    fx_assert_match(t, &d.out[i], tol_of(k), what);
  }
  sly_timing tm = sly_result_timing(r);
  cr_assert_gt(tm.total_us, 0, "%s: timing.total_us is 0", k->slice);
  cr_assert_geq(tm.total_us, tm.compute_us, "%s: compute_us %llu > total_us %llu",
                k->slice, (unsigned long long)tm.compute_us,
                (unsigned long long)tm.total_us);
  cr_assert_gt(sly_result_lease(r), 0, "%s: lease 0", k->slice);
  sly_result_free(r);
  data_free(&d);
  sly_arena_reset(a);
}

/* Starts a daemon with every fixture, runs `cases` twice each (the second
 * time the slice is already loaded), and stops it. */
static void run_cases(const fwd_case *const *cases, size_t n) {
  td *d = start_fixtures();
  sly_conn *c = td_connect(d);
  sly_arena *a = NULL;
  sly_error err;
  cr_assert_eq(sly_arena_create(c, ARENA_BYTES, &a, &err), 0, "%s",
               err.message);
  for (int round = 0; round < 2; round++)
    for (size_t i = 0; i < n; i++)
      run_case(c, a, cases[i]);
  sly_close(c);
  td_stop(d);
}

Test(forward_correct, torchscript_one_input_matches_pytorch) {
  const fwd_case *k[] = {&case_ts_one};
  run_cases(k, 1);
}

Test(forward_correct, torchscript_two_inputs_and_tuple_outputs_match_pytorch) {
  const fwd_case *k[] = {&case_ts_multi, &case_ts_tuple};
  run_cases(k, 2);
}

Test(forward_correct, torchscript_int64_embedding_matches_pytorch) {
  const fwd_case *k[] = {&case_ts_embed};
  run_cases(k, 1);
}

/* The bytes slyced holds for a slice, from `list`. */
static uint64_t slice_bytes(sly_conn *c, const char *name) {
  tk_entry e;
  tk_where(c, name, &e);
  return e.bytes;
}

/* A frozen module's weights are tensor constants of its code, and a traced
 * one holds a tensor it captured as one: both are weights to slyced. They
 * count in the slice's bytes, go to the disk cache and come back from it,
 * and the outputs stay PyTorch's throughout. Before, ts_frozen counted 0
 * bytes and no tier ever held its weights. */
Test(forward_correct, torchscript_constants_are_weights_that_move) {
  char dir[TD_PATH_MAX];
  tk_cache_new(dir);
  char keys[TD_PATH_MAX + 64];
  snprintf(keys, sizeof keys, "\"disk_cache_path\": \"%s\"", dir);
  char *cfg = fx_config(
      "{\"name\": \"ts_frozen\", \"constructor\": \"torchscript\", "
      "\"config\": {\"path\": \"" FX_DIR "/ts_frozen.pt\"}},\n"
      "  {\"name\": \"ts_traced\", \"constructor\": \"torchscript\", "
      "\"config\": {\"path\": \"" FX_DIR "/ts_traced.pt\"}}",
      keys);
  td *d = td_start(cfg);
  sly_conn *c = td_connect(d);
  sly_arena *a = NULL;
  sly_error err;
  cr_assert_eq(sly_arena_create(c, ARENA_BYTES, &a, &err), 0, "%s",
               err.message);
  const fwd_case *cases[] = {&case_ts_frozen, &case_ts_traced};
  for (size_t i = 0; i < 2; i++) {
    const char *name = cases[i]->slice;
    run_case(c, a, cases[i]);
    /* Three tensors each, each in a 4 KiB step of the blob: frozen's W.t()
     * [16, 8], b and s [8]; traced's Linear(16, 8) and c [8]. */
    uint64_t bytes = slice_bytes(c, name);
    cr_assert_eq(bytes, 3 * 4096, "%s holds %llu bytes, want 3 * 4096", name,
                 (unsigned long long)bytes);
    for (int round = 0; round < 2; round++) {
      char where[8] = "";
      cr_assert_eq(sly_evict(c, name, "disk", where, &err), 0, "evict %s: %s",
                   name, err.message);
      cr_assert_str_eq(where, "disk", "%s went to %s", name, where);
      run_case(c, a, cases[i]);
    }
  }
  sly_close(c);
  td_stop(d);
  /* After a restart the module is loaded again but its values are dropped
   * (shim_module_drop_values): the cache file's bytes are what it runs on. */
  d = td_start(cfg);
  free(cfg);
  c = td_connect(d);
  cr_assert_eq(sly_arena_create(c, ARENA_BYTES, &a, &err), 0, "%s",
               err.message);
  for (size_t i = 0; i < 2; i++)
    run_case(c, a, cases[i]);
  char *log = tk_log(d);
  cr_assert_eq(tk_count_lines(log, ": built", "its weights come from there"),
               2, "the restart did not serve both from their files:\n%s",
               log);
  free(log);
  sly_close(c);
  td_stop(d);
  tk_cache_remove(dir);
}

Test(forward_correct, builtin_linear_with_safetensors_matches_pytorch) {
  const fwd_case *k[] = {&case_lin};
  run_cases(k, 1);
}

Test(forward_correct, builtin_transformer_layer_float32_matches_pytorch) {
  const fwd_case *k[] = {&case_tel};
  run_cases(k, 1);
}

Test(forward_correct, builtin_transformer_layer_bfloat16_within_2e_2) {
  const fwd_case *k[] = {&case_tel_bf16};
  run_cases(k, 1);
}

Test(forward_correct, pipeline_equals_its_slices_run_one_after_another) {
  td *d = start_fixtures();
  sly_conn *c = td_connect(d);
  sly_arena *a = NULL;
  sly_error err;
  cr_assert_eq(sly_arena_create(c, ARENA_BYTES, &a, &err), 0, "%s",
               err.message);
  fx_array x, ref;
  fx_read("linear_w.in0.npy", &x);
  fx_read("linear_w.out0.npy", &ref);
  sly_tensor in = fx_put(a, &x);

  /* lin, then lin8 on lin's output copied back into the arena. */
  sly_result *r1 = NULL, *r2 = NULL, *rp = NULL;
  cr_assert_eq(sly_forward(c, "lin", &in, 1, &r1, &err), 0, "lin: %s",
               err.message);
  const sly_tensor *h = sly_result_output(r1, 0);
  fx_assert_match(h, &ref, FX_TOL_F32, "lin output");
  sly_tensor mid = *h;
  mid.data = sly_arena_alloc(a, sly_tensor_nbytes(h), 64);
  cr_assert(mid.data);
  memcpy(mid.data, h->data, sly_tensor_nbytes(h));
  cr_assert_eq(sly_forward(c, "lin8", &mid, 1, &r2, &err), 0, "lin8: %s",
               err.message);

  cr_assert_eq(sly_forward_pipeline(c, "p", &in, 1, &rp, &err), 0,
               "pipeline p: %s", err.message);
  cr_assert_eq(sly_result_count(rp), 1);
  const sly_tensor *step = sly_result_output(r2, 0);
  const sly_tensor *pipe = sly_result_output(rp, 0);
  cr_assert_eq(pipe->ndim, 2);
  cr_assert(pipe->shape[0] == 4 && pipe->shape[1] == 8,
            "pipeline output shape [%llu, %llu], want [4, 8]",
            (unsigned long long)pipe->shape[0],
            (unsigned long long)pipe->shape[1]);
  /* The pipeline keeps lin's output in the daemon; the arithmetic is the
   * same, so the results are too. */
  fx_array step_arr = {.dtype = step->dtype, .ndim = step->ndim,
                       .nbytes = sly_tensor_nbytes(step), .data = step->data};
  memcpy(step_arr.shape, step->shape, sizeof step_arr.shape);
  fx_assert_match(pipe, &step_arr, FX_TOL_F32, "pipeline p against lin, lin8");
  /* And lin8 did something: its output is not lin's. */
  cr_assert(memcmp(pipe->data, h->data, sly_tensor_nbytes(h)) != 0,
            "pipeline output equals lin's output");

  sly_result_free(r1);
  sly_result_free(r2);
  sly_result_free(rp);
  fx_array_free(&x);
  fx_array_free(&ref);
  sly_close(c);
  td_stop(d);
}

Test(forward_correct, active_slice_is_the_default_of_a_forward) {
  td *d = start_fixtures();
  sly_conn *c = td_connect(d);
  sly_arena *a = NULL;
  sly_error err;
  cr_assert_eq(sly_arena_create(c, ARENA_BYTES, &a, &err), 0, "%s",
               err.message);
  fx_array x1, ref1, xl, refl;
  fx_read("ts_one.in0.npy", &x1);
  fx_read("ts_one.out0.npy", &ref1);
  fx_read("linear_w.in0.npy", &xl);
  fx_read("linear_w.out0.npy", &refl);
  sly_tensor in1 = fx_put(a, &x1), inl = fx_put(a, &xl);

  char tier[8] = "";
  cr_assert_eq(sly_set_active_slice(c, "ts_one", 1, tier, &err), 0, "%s",
               err.message);
  /* Waiting means loaded: on a CPU daemon the weights are in host memory. */
  cr_assert_str_eq(tier, td_compute_tier());
  sly_result *r = NULL;
  cr_assert_eq(sly_forward(c, NULL, &in1, 1, &r, &err), 0, "%s", err.message);
  fx_assert_match(sly_result_output(r, 0), &ref1, FX_TOL_F32,
                  "active ts_one");
  sly_result_free(r);

  /* A named slice does not change the default. */
  cr_assert_eq(sly_forward(c, "lin", &inl, 1, &r, &err), 0, "%s", err.message);
  sly_result_free(r);
  cr_assert_eq(sly_forward(c, NULL, &in1, 1, &r, &err), 0, "%s", err.message);
  fx_assert_match(sly_result_output(r, 0), &ref1, FX_TOL_F32,
                  "still ts_one");
  sly_result_free(r);

  cr_assert_eq(sly_set_active_slice(c, "lin", 0, NULL, &err), 0, "%s",
               err.message);
  cr_assert_eq(sly_forward(c, NULL, &inl, 1, &r, &err), 0, "%s", err.message);
  fx_assert_match(sly_result_output(r, 0), &refl, FX_TOL_F32, "active lin");
  sly_result_free(r);

  cr_assert_eq(sly_set_active_slice(c, "nope", 1, NULL, &err),
               SLY_E_NOT_FOUND, "unknown slice: %s", err.message);
  /* The failed switch left lin active. */
  cr_assert_eq(sly_forward(c, NULL, &inl, 1, &r, &err), 0, "%s", err.message);
  fx_assert_match(sly_result_output(r, 0), &refl, FX_TOL_F32,
                  "lin after a refused switch");
  sly_result_free(r);

  /* The active slice belongs to its connection. */
  sly_conn *c2 = td_connect(d);
  sly_arena *a2 = NULL;
  cr_assert_eq(sly_arena_create(c2, 4096, &a2, &err), 0, "%s", err.message);
  sly_tensor in2 = fx_put(a2, &xl);
  cr_assert_eq(sly_forward(c2, NULL, &in2, 1, &r, &err), SLY_E_BAD_REQUEST,
               "no active slice on a new connection: %s", err.message);
  sly_close(c2);

  fx_array_free(&x1);
  fx_array_free(&ref1);
  fx_array_free(&xl);
  fx_array_free(&refl);
  sly_close(c);
  td_stop(d);
}

/* ---- Eight clients at once ------------------------------------------------ */

#define N_CLIENTS 8
#define N_ROUNDS 25

typedef struct {
  const td *d;
  fwd_data *data;
  size_t n_data;
  pthread_barrier_t *start;
  size_t first;    /* the fixture this client starts with */
  int done;        /* forwards that matched */
  char fail[SLY_ERROR_MESSAGE_MAX + 256]; /* empty while all is well */
} client_ctx;

/* One client on its own connection and arena: no asserts off the main
 * thread, so failures are written into ctx->fail. */
static void *client_main(void *arg) {
  client_ctx *x = arg;
  sly_conn *c = NULL;
  sly_arena *a = NULL;
  sly_error err;
  sly_tensor in[8][2];
  pthread_barrier_wait(x->start);
  if (sly_connect(x->d->sock, &c, &err) < 0 ||
      sly_arena_create(c, ARENA_BYTES, &a, &err) < 0) {
    snprintf(x->fail, sizeof x->fail, "setup: %s", err.message);
    goto out;
  }
  for (size_t k = 0; k < x->n_data; k++)
    for (int i = 0; i < x->data[k].k->n_in; i++)
      if (!fx_try_put(a, &x->data[k].in[i], x->data[k].k->bf16, &in[k][i])) {
        snprintf(x->fail, sizeof x->fail, "arena full");
        goto out;
      }
  for (int round = 0; round < N_ROUNDS; round++) {
    for (size_t j = 0; j < x->n_data; j++) {
      size_t k = (x->first + j) % x->n_data;
      const fwd_case *fc = x->data[k].k;
      sly_result *r = NULL;
      if (sly_forward(c, fc->slice, in[k], (size_t)fc->n_in, &r, &err) < 0) {
        snprintf(x->fail, sizeof x->fail, "round %d %s: %s: %s", round,
                 fc->slice, sly_code_name(err.code), err.message);
        goto out;
      }
      char why[256] = "";
      bool ok = sly_result_count(r) == (size_t)fc->n_out;
      for (int i = 0; ok && i < fc->n_out; i++)
        ok = fx_try_match(sly_result_output(r, (size_t)i), &x->data[k].out[i],
                          tol_of(fc), why, sizeof why);
      sly_result_free(r);
      if (!ok) {
        snprintf(x->fail, sizeof x->fail, "round %d %s: %s", round,
                 fc->slice, why[0] ? why : "wrong output count");
        goto out;
      }
      x->done++;
    }
  }
out:
  sly_close(c);
  return NULL;
}

Test(forward_correct, eight_clients_at_once_all_get_correct_results) {
  td *d = start_fixtures();
  const fwd_case *cases[] = {&case_ts_one, &case_ts_multi, &case_ts_tuple,
                             &case_ts_embed, &case_lin, &case_tel,
                             &case_tel_bf16};
  enum { N_CASES = sizeof cases / sizeof cases[0] };
  fwd_data data[N_CASES];
  for (size_t k = 0; k < N_CASES; k++)
    data_read(cases[k], &data[k]);
  pthread_barrier_t start;
  pthread_barrier_init(&start, NULL, N_CLIENTS);
  client_ctx ctx[N_CLIENTS];
  pthread_t th[N_CLIENTS];
  for (int i = 0; i < N_CLIENTS; i++) {
    /* Each client starts on a different fixture, so that every slice is
     * asked for by several connections at the same moment. */
    ctx[i] = (client_ctx){.d = d, .data = data, .n_data = N_CASES,
                          .start = &start, .first = (size_t)i % N_CASES};
    cr_assert_eq(pthread_create(&th[i], NULL, client_main, &ctx[i]), 0);
  }
  for (int i = 0; i < N_CLIENTS; i++)
    pthread_join(th[i], NULL);
  pthread_barrier_destroy(&start);
  for (int i = 0; i < N_CLIENTS; i++)
    cr_expect_str_empty(ctx[i].fail, "client %d: %s", i, ctx[i].fail);
  for (int i = 0; i < N_CLIENTS; i++)
    cr_assert_eq(ctx[i].done, N_ROUNDS * N_CASES,
                 "client %d finished %d of %d forwards", i, ctx[i].done,
                 N_ROUNDS * N_CASES);

  /* Every forward was counted against its slice. */
  sly_conn *c = td_connect(d);
  sly_slice_list *l = NULL;
  sly_error err;
  cr_assert_eq(sly_list(c, &l, &err), 0, "%s", err.message);
  for (size_t k = 0; k < N_CASES; k++) {
    const sly_slice_info *s = NULL;
    for (size_t i = 0; i < l->count; i++)
      if (strcmp(l->slices[i].name, cases[k]->slice) == 0)
        s = &l->slices[i];
    cr_assert(s, "%s missing from list", cases[k]->slice);
    cr_assert_eq(s->hits, (uint64_t)N_CLIENTS * N_ROUNDS,
                 "%s: %llu hits, want %d", s->name,
                 (unsigned long long)s->hits, N_CLIENTS * N_ROUNDS);
    cr_assert_eq(s->loads, 1, "%s loaded %llu times", s->name,
                 (unsigned long long)s->loads);
  }
  sly_slice_list_free(l);
  sly_close(c);
  for (size_t k = 0; k < N_CASES; k++)
    data_free(&data[k]);
  td_stop(d);
}

/* test_shim_bind.c — the weight blob as the tiers see it, and binding.
 *
 * Entries: in blob order they tile the blob exactly (aligned offsets, no
 * gaps beyond alignment, nbytes = product(shape) * element size), under
 * PyTorch's state_dict names, with the bytes a weights file saved from
 * PyTorch holds. Binding: a module bound to a copy of its blob gives the
 * same outputs, bound to zeros it gives zeros (the views read the caller's
 * memory live), it can move between buffers back and forth, the shim's own
 * blob is freed by the first bind, outputs never point into bound memory,
 * and bad arguments are refused without changing anything. cuda:0 where a
 * GPU is (tests/gpu).
 */
#include <time.h>

#include "shim_util.h"

#ifdef SLY_HAVE_CUDA
#include <cuda_runtime.h>
#endif

char err[SHIM_ERROR_MAX];
char tmp[64];
int releases;

TestSuite(shim_bind, .init = shim_setup, .fini = shim_teardown, .timeout = 120);

#define TEL16 "\"d_model\": 16, \"nhead\": 4, \"dim_feedforward\": 32"
#define MLP_FIX                                                                \
  "\"in_features\": 6, \"hidden_features\": [5, 4], \"out_features\": 3, "     \
  "\"activation\": \"gelu\", \"weights\": \"mlp.safetensors\""

static shim_module *ts(const char *name) {
  return make("torchscript", "{\"path\": \"ts_%s.pt\"}", name);
}

/* Fresh SHIM_BLOB_ALIGN-aligned memory holding a copy of the module's own
 * blob; the caller frees it. */
static void *blob_copy(const shim_module *m) {
  uint64_t n = shim_module_blob_bytes(m);
  void *p = NULL;
  cr_assert_gt(n, 0);
  cr_assert_eq(posix_memalign(&p, SHIM_BLOB_ALIGN, n), 0);
  const void *own = shim_module_blob_data(m);
  cr_assert_not_null(own, "the shim's blob, before any bind");
  memcpy(p, own, n);
  return p;
}

static void bind_ok(shim_module *m, void *base, const char *device) {
  memset(err, 0, sizeof(err));
  int r = shim_module_bind(m, base, device, err);
  cr_assert_eq(r, 0, "bind to %s: %s: %s", device, sly_code_name(r), err);
  cr_assert_null(shim_module_blob_data(m), "no own blob once bound");
  cr_assert(shim_testing_views_in_blob(m), "every tensor a view of %p", base);
}

static void bind_fails(shim_module *m, void *base, const char *device,
                       const char *why) {
  memset(err, 0, sizeof(err));
  int r = shim_module_bind(m, base, device, err);
  cr_assert_eq(r, SLY_E_INVALID_ARG, "bind to %s: got %s (%s)",
               device ? device : "NULL", sly_code_name(r), err);
  cr_assert_not_null(strstr(err, why), "'%s' lacks '%s'", err, why);
  cr_assert_null(strchr(err, '\n'), "one line: %s", err);
}

static shim_blob_entry entry(const shim_module *m, size_t i) {
  shim_blob_entry e;
  cr_assert_eq(shim_module_blob_entry(m, i, &e), 0, "entry %zu", i);
  return e;
}

/* The entries, in order, tile [0, blob_bytes): each starts where the one
 * before ends, rounded up to SHIM_BLOB_ALIGN, and names are unique. */
static void entries_tile_the_blob(const shim_module *m) {
  size_t n = shim_module_blob_tensors(m);
  uint64_t end = 0;
  for (size_t i = 0; i < n; i++) {
    shim_blob_entry e = entry(m, i);
    cr_assert_not_null(e.name);
    cr_assert_gt(strlen(e.name), 0);
    cr_assert_lt((unsigned)e.dtype, PROTO_DTYPE_COUNT);
    cr_assert_leq(e.ndim, PROTO_MAX_DIMS);
    cr_assert_eq(e.offset % SHIM_BLOB_ALIGN, 0, "%s at %llu", e.name,
                 (unsigned long long)e.offset);
    cr_assert_eq(e.offset, end, "%s starts at %llu, want %llu", e.name,
                 (unsigned long long)e.offset, (unsigned long long)end);
    uint64_t want = proto_dtype_size(e.dtype);
    for (uint32_t d = 0; d < e.ndim; d++)
      want *= e.shape[d];
    cr_assert_eq(e.nbytes, want, "%s: %llu bytes, shape says %llu", e.name,
                 (unsigned long long)e.nbytes, (unsigned long long)want);
    end = e.offset + aligned(e.nbytes);
    for (size_t k = 0; k < i; k++)
      cr_assert_str_neq(entry(m, k).name, e.name, "names are unique");
  }
  cr_assert_eq(end, shim_module_blob_bytes(m), "the entries cover the blob");
  /* Past the end: refused, and the output is untouched. */
  shim_blob_entry e, before;
  memset(&e, 0xab, sizeof(e));
  before = e;
  cr_assert_eq(shim_module_blob_entry(m, n, &e), SLY_E_INVALID_ARG);
  cr_assert_eq(memcmp(&e, &before, sizeof(e)), 0, "untouched on failure");
}

/* How many tensors a safetensors file holds. */
static size_t st_count(const char *path) {
  FILE *f = fopen(path, "rb");
  cr_assert_not_null(f, "%s", path);
  uint8_t prefix[8];
  cr_assert_eq(fread(prefix, 1, 8, f), 8);
  fseek(f, 0, SEEK_END);
  uint64_t size = (uint64_t)ftell(f), hl;
  char e[ST_ERROR_MAX];
  cr_assert_eq(st_header_len(prefix, size, &hl, e), 0, "%s", e);
  char *json = malloc(hl);
  fseek(f, 8, SEEK_SET);
  cr_assert_eq(fread(json, 1, hl, f), hl);
  fclose(f);
  st_header h;
  cr_assert_eq(st_header_parse(json, hl, size, &h, e), 0, "%s", e);
  size_t n = h.n_tensors;
  st_header_free(&h);
  free(json);
  return n;
}

/* The blob holds exactly the tensors of `path` (a state_dict saved from
 * PyTorch): every entry's name is in the file with its dtype and shape, the
 * bytes at its offset are the file's, and the counts agree. */
static void entries_are_the_file(const shim_module *m, const char *path) {
  size_t n = shim_module_blob_tensors(m);
  cr_assert_eq(n, st_count(path), "%s", path);
  const uint8_t *blob = shim_module_blob_data(m);
  cr_assert_not_null(blob);
  for (size_t i = 0; i < n; i++) {
    shim_blob_entry e = entry(m, i);
    tensor t = st_read(path, e.name); /* fails the test if absent */
    cr_assert_eq(e.dtype, t.dtype, "%s", e.name);
    cr_assert_eq(e.ndim, t.ndim, "%s", e.name);
    for (uint32_t d = 0; d < e.ndim; d++)
      cr_assert_eq(e.shape[d], t.shape[d], "%s dim %u", e.name, d);
    cr_assert_eq(e.nbytes, t.nbytes, "%s", e.name);
    cr_assert_eq(memcmp(blob + e.offset, t.data, t.nbytes), 0,
                 "%s: the blob's bytes are the file's", e.name);
    tensor_free(&t);
  }
}

/* The module's entry names, in blob order, are `want`. */
static void names_are(const shim_module *m, const char *const *want,
                      size_t n) {
  cr_assert_eq(shim_module_blob_tensors(m), n);
  for (size_t i = 0; i < n; i++)
    cr_assert_str_eq(entry(m, i).name, want[i], "entry %zu", i);
}

Test(shim_bind, entries_tile_the_blob_in_aligned_steps) {
  /* weight 65x64 floats = 16640 bytes: 5 pages; then bias, 260 bytes. */
  shim_module *m = make("linear", "{\"in_features\": 64, \"out_features\": 65}");
  entries_tile_the_blob(m);
  shim_blob_entry w = entry(m, 0), b = entry(m, 1);
  cr_assert_eq(w.dtype, PROTO_DTYPE_FLOAT32);
  cr_assert_eq(w.ndim, 2);
  cr_assert_eq(w.shape[0], 65);
  cr_assert_eq(w.shape[1], 64);
  cr_assert_eq(w.offset, 0);
  cr_assert_eq(w.nbytes, 16640);
  cr_assert_eq(b.ndim, 1);
  cr_assert_eq(b.shape[0], 65);
  cr_assert_eq(b.offset, 5 * 4096);
  cr_assert_eq(b.nbytes, 260);
  shim_module_free(m);

  m = make("mlp", "{\"in_features\": 100, \"hidden_features\": [300, 7], "
                  "\"out_features\": 2, \"dtype\": \"float16\"}");
  entries_tile_the_blob(m);
  cr_assert_eq(entry(m, 0).dtype, PROTO_DTYPE_FLOAT16);
  shim_module_free(m);
  m = make("transformer_encoder_layer", "{" TEL16 ", \"dtype\": \"bfloat16\"}");
  entries_tile_the_blob(m);
  cr_assert_eq(entry(m, 0).dtype, PROTO_DTYPE_BFLOAT16);
  shim_module_free(m);
  static const char *const scripts[] = {"one",    "embed",  "weight", "multi",
                                        "frozen", "traced", "forked"};
  for (size_t i = 0; i < sizeof(scripts) / sizeof(scripts[0]); i++) {
    m = ts(scripts[i]);
    entries_tile_the_blob(m);
    shim_module_free(m);
  }
  /* No weights, no entries. */
  m = ts("identity");
  cr_assert_eq(shim_module_blob_tensors(m), 0);
  entries_tile_the_blob(m);
  shim_module_free(m);
  shim_blob_entry e;
  cr_assert_eq(shim_module_blob_entry(NULL, 0, &e), SLY_E_INVALID_ARG);
  m = make("linear", "{\"in_features\": 2, \"out_features\": 2}");
  cr_assert_eq(shim_module_blob_entry(m, 0, NULL), SLY_E_INVALID_ARG);
  shim_module_free(m);
}

Test(shim_bind, entry_names_are_pytorchs_state_dict_names) {
  /* What nn.Linear(4, 3).state_dict() and nn.TransformerEncoderLayer(16, 4,
   * 32).state_dict() list, in that order. */
  shim_module *m = make("linear", "{\"in_features\": 4, \"out_features\": 3}");
  names_are(m, (const char *const[]){"weight", "bias"}, 2);
  shim_module_free(m);
  m = make("transformer_encoder_layer", "{" TEL16 "}");
  names_are(m, (const char *const[]){
      "self_attn.in_proj_weight", "self_attn.in_proj_bias",
      "self_attn.out_proj.weight", "self_attn.out_proj.bias",
      "linear1.weight", "linear1.bias", "linear2.weight", "linear2.bias",
      "norm1.weight", "norm1.bias", "norm2.weight", "norm2.bias"}, 12);
  shim_module_free(m);
  /* Loaded from state_dicts PyTorch saved: the blob is the file. */
  m = make("transformer_encoder_layer",
           "{" TEL16 ", \"weights\": \"tel.safetensors\"}");
  entries_are_the_file(m, FIX "/tel.safetensors");
  shim_module_free(m);
  m = make("transformer_encoder_layer",
           "{" TEL16 ", \"dtype\": \"bfloat16\", \"weights\": "
           "\"tel_bf16.safetensors\"}");
  entries_are_the_file(m, FIX "/tel_bf16.safetensors");
  shim_module_free(m);
  m = make("mlp", "{" MLP_FIX "}");
  entries_are_the_file(m, FIX "/mlp.safetensors");
  names_are(m, (const char *const[]){"layers.0.weight", "layers.0.bias",
                                     "layers.2.weight", "layers.2.bias",
                                     "layers.4.weight", "layers.4.bias"}, 6);
  shim_module_free(m);
  /* TorchScript: named_parameters and named_buffers, '.'-joined: ts_one is
   * lin = Linear(4, 3) and a buffer scale = [1, 2, 3]; its state_dict is
   * scale, lin.weight, lin.bias. */
  m = ts("one");
  int seen[3] = {0};
  static const char *const one[] = {"scale", "lin.weight", "lin.bias"};
  for (size_t i = 0; i < shim_module_blob_tensors(m); i++) {
    shim_blob_entry e = entry(m, i);
    for (int k = 0; k < 3; k++)
      seen[k] += strcmp(e.name, one[k]) == 0;
    if (strcmp(e.name, "scale") == 0) {
      const float *s = (const float *)((const uint8_t *)shim_module_blob_data(m) +
                                       e.offset);
      cr_assert(s[0] == 1 && s[1] == 2 && s[2] == 3);
      cr_assert_eq(e.ndim, 1);
      cr_assert_eq(e.shape[0], 3);
    }
  }
  cr_assert_eq(shim_module_blob_tensors(m), 3);
  cr_assert(seen[0] == 1 && seen[1] == 1 && seen[2] == 1);
  shim_module_free(m);
  m = ts("embed");
  names_are(m, (const char *const[]){"emb.weight"}, 1);
  shim_module_free(m);
  /* Constants of the code are named by their order in it: frozen's are
   * s, b and W.t() (a [4, 3] view of W [3, 4]), in some order; traced's one
   * follows its attributes. */
  m = ts("frozen");
  names_are(m, (const char *const[]){"(constant 0)", "(constant 1)",
                                     "(constant 2)"}, 3);
  uint64_t floats = 0;
  for (size_t i = 0; i < 3; i++)
    floats += entry(m, i).nbytes / 4;
  cr_assert_eq(floats, 3 + 3 + 12);
  shim_module_free(m);
  m = ts("traced");
  names_are(m, (const char *const[]){"lin.weight", "lin.bias", "(constant 0)"},
            3);
  shim_module_free(m);
  m = ts("forked");
  names_are(m, (const char *const[]){"(constant 0)", "(constant 1)"}, 2);
  shim_module_free(m);
}

/* A module, the input it is run on, and its output before any bind. */
typedef struct {
  const char *what;
  shim_module *m;
  tensor x, ref;
} subject;

/* The module and its input, never run (no ref yet). */
static subject subject_unrun(const char *what) {
  subject s = {.what = what};
  if (strcmp(what, "linear") == 0) {
    s.m = make("linear", "{\"in_features\": 4, \"out_features\": 3, "
                         "\"seed\": 5}");
    s.x = TENSOR(PROTO_DTYPE_FLOAT32, 2, 4);
    fill_float(&s.x, 0.1f, 0.2f);
  } else if (strcmp(what, "mlp") == 0) {
    s.m = make("mlp", "{" MLP_FIX "}");
    s.x = st_read(FIX "/mlp_io.safetensors", "in0");
  } else if (strcmp(what, "tel") == 0) {
    s.m = make("transformer_encoder_layer",
               "{" TEL16 ", \"weights\": \"tel.safetensors\"}");
    s.x = st_read(FIX "/tel_io.safetensors", "in0");
  } else {
    s.m = ts(what);
    s.x = st_read(FIX "/ts_one_io.safetensors", "in0");
  }
  return s;
}

static subject subject_new(const char *what) {
  subject s = subject_unrun(what);
  s.ref = run1(s.m, &s.x, 1);
  return s;
}

static void subject_free(subject *s) {
  shim_module_free(s->m);
  tensor_free(&s->x), tensor_free(&s->ref);
}

/* The forward gives exactly the output from before the bind. */
static void same_as_before(subject *s) {
  tensor y = run1(s->m, &s->x, 1);
  same_shape(&y, &s->ref);
  cr_assert_eq(memcmp(y.data, s->ref.data, y.nbytes), 0, "%s", s->what);
  tensor_free(&y);
}

/* Every float of the forward's output is 0: what zeroed weights give for
 * linear (x·0 + 0), mlp, tel (layer norms of weight and bias 0) and ts_one
 * (relu(0) * 0). */
static void all_zero(subject *s) {
  tensor y = run1(s->m, &s->x, 1);
  const float *f = y.data;
  for (uint64_t i = 0; i < y.nbytes / 4; i++)
    cr_assert_eq(f[i], 0.0f, "%s: output %llu is %g", s->what,
                 (unsigned long long)i, f[i]);
  tensor_free(&y);
}

/* frozen's weights are all constants of its code, traced holds one beside
 * its parameters, and forked's are in the body of a torch.jit.fork: their
 * blobs must hold those too. */
static const char *const subjects[] = {"linear", "mlp",    "tel",   "one",
                                       "frozen", "traced", "forked"};
#define N_SUBJECTS (sizeof(subjects) / sizeof(subjects[0]))

Test(shim_bind, binding_to_a_copy_gives_identical_outputs) {
  for (size_t k = 0; k < N_SUBJECTS; k++) {
    subject s = subject_new(subjects[k]);
    void *copy = blob_copy(s.m);
    bind_ok(s.m, copy, k % 2 ? "sim" : "cpu");
    cr_assert_null(shim_testing_blob(s.m));
    same_as_before(&s);
    subject_free(&s);
    free(copy);
  }
}

Test(shim_bind, the_forward_reads_the_bound_memory_live) {
  for (size_t k = 0; k < N_SUBJECTS; k++) {
    subject s = subject_new(subjects[k]);
    uint64_t n = shim_module_blob_bytes(s.m);
    void *weights = blob_copy(s.m), *mem = blob_copy(s.m);
    memset(mem, 0, n);
    bind_ok(s.m, mem, "cpu");
    all_zero(&s);
    /* No copy was taken at bind: writing the memory is seen at once. */
    memcpy(mem, weights, n);
    same_as_before(&s);
    subject_free(&s);
    free(weights), free(mem);
  }
}

Test(shim_bind, rebinding_moves_between_buffers_back_and_forth) {
  subject s = subject_new("tel");
  uint64_t n = shim_module_blob_bytes(s.m);
  void *a = blob_copy(s.m), *b = blob_copy(s.m);
  memset(b, 0, n);
  for (int round = 0; round < 3; round++) {
    bind_ok(s.m, a, "cpu");
    same_as_before(&s);
    bind_ok(s.m, b, "cpu");
    all_zero(&s);
  }
  /* Bound to a, the module no longer reads b: poison it, then free it
   * (AddressSanitizer reports any read after the free). */
  bind_ok(s.m, a, "cpu");
  memset(b, 0x7f, n);
  same_as_before(&s);
  free(b);
  same_as_before(&s);
  subject_free(&s);
  free(a);
}

/* Moved after TorchScript has made its plan (in its first forwards, which
 * in slyced run bound to the tiers' memory), a module reads only the memory
 * it is bound to now: the memory it left is poisoned, then freed
 * (AddressSanitizer reports a read after the free). traced's code makes a
 * view of a constant from that constant alone, which an optimizing executor
 * would fold into a constant of its own, pointing into the first buffer for
 * good. */
Test(shim_bind, a_module_moved_after_its_plan_reads_no_memory_it_left) {
  for (size_t k = 0; k < N_SUBJECTS; k++) {
    subject s = subject_unrun(subjects[k]);
    uint64_t n = shim_module_blob_bytes(s.m);
    void *a = blob_copy(s.m), *b = blob_copy(s.m);
    bind_ok(s.m, a, "cpu");
    s.ref = run1(s.m, &s.x, 1);
    for (int i = 0; i < 3; i++)
      same_as_before(&s);
    bind_ok(s.m, b, "cpu");
    memset(a, 0x7f, n);
    same_as_before(&s);
    free(a);
    same_as_before(&s);
    subject_free(&s);
    free(b);
  }
}

Test(shim_bind, the_first_bind_frees_the_shims_blob) {
  shim_module *m = make("mlp", "{\"in_features\": 256, \"hidden_features\": "
                               "[512], \"out_features\": 64, \"seed\": 9}");
  tensor x = TENSOR(PROTO_DTYPE_FLOAT32, 3, 256);
  fill_float(&x, -1, 0.003f);
  tensor ref = run1(m, &x, 1);
  cr_assert_eq(shim_testing_own_blob_freed(m), 0);
  void *copy = blob_copy(m);
  bind_ok(m, copy, "cpu");
  cr_assert_eq(shim_testing_own_blob_freed(m), 1,
               "nothing holds the shim's blob once bound");
  /* The forward runs on the bound memory alone (AddressSanitizer would
   * report a read of the freed blob). */
  tensor y = run1(m, &x, 1);
  cr_assert_eq(memcmp(y.data, ref.data, ref.nbytes), 0);
  shim_module_free(m);
  free(copy);
  tensor_free(&x), tensor_free(&ref), tensor_free(&y);
}

Test(shim_bind, an_output_from_before_the_bind_keeps_its_values) {
  /* ts_weight returns its parameter w = arange(6).reshape(2, 3) itself: the
   * output is a copy, which neither follows the bind nor holds the old
   * blob. */
  shim_module *m = ts("weight");
  tensor x = TENSOR(PROTO_DTYPE_FLOAT32, 1);
  shim_values *old = NULL;
  cr_assert_eq(forward(m, &x, 1, &old), 0, "%s", err);
  /* Not even the shim's own blob: writing it leaves the output alone. */
  memset(shim_testing_blob(m), 0, shim_module_blob_bytes(m));
  void *mem = blob_copy(m);
  bind_ok(m, mem, "cpu");
  cr_assert_eq(shim_testing_own_blob_freed(m), 1, "no output holds it");
  tensor y = output(old, 0);
  for (int i = 0; i < 6; i++)
    cr_assert_eq(((float *)y.data)[i], (float)i, "the old weights");
  shim_values_free(old);
  tensor z = run1(m, &x, 1);
  for (int i = 0; i < 6; i++)
    cr_assert_eq(((float *)z.data)[i], 0.0f, "the bound weights");
  shim_module_free(m);
  free(mem);
  tensor_free(&x), tensor_free(&y), tensor_free(&z);
}

Test(shim_bind, an_output_aliasing_bound_memory_is_a_copy) {
  shim_module *m = ts("weight");
  tensor x = TENSOR(PROTO_DTYPE_FLOAT32, 1);
  void *mem = blob_copy(m);
  bind_ok(m, mem, "cpu");
  shim_values *out = NULL;
  cr_assert_eq(forward(m, &x, 1, &out), 0, "%s", err);
  /* The tiers may rewrite or free the memory once the forward is done. */
  memset(mem, 0, shim_module_blob_bytes(m));
  shim_module_free(m);
  free(mem);
  tensor y = output(out, 0);
  cr_assert_eq(y.nbytes, 6 * 4);
  for (int i = 0; i < 6; i++)
    cr_assert_eq(((float *)y.data)[i], (float)i);
  shim_values_free(out);
  tensor_free(&x), tensor_free(&y);
}

Test(shim_bind, bad_arguments_are_refused_and_change_nothing) {
  subject s = subject_new("linear");
  void *mem = blob_copy(s.m);
  const void *own = shim_module_blob_data(s.m);
  static const char *const devices[] = {"tpu", "cuda:x", "cuda:", "", "cpu0",
                                        "cuda:1234"};
  for (size_t i = 0; i < sizeof(devices) / sizeof(devices[0]); i++)
    bind_fails(s.m, mem, devices[i], "expected cpu, sim or cuda:N");
  bind_fails(s.m, mem, NULL, "device ''");
  bind_fails(s.m, mem, "cuda:99", "CUDA devices");
  if (!shim_cuda_available())
    bind_fails(s.m, mem, "cuda:0", "libtorch sees 0 CUDA devices");
  else /* host memory is no device's */
    bind_fails(s.m, mem, "cuda:0", "is not memory of cuda:0");
  bind_fails(s.m, NULL, "cpu", "aligned to 64 bytes");
  bind_fails(s.m, (char *)mem + 8, "cpu", "aligned to 64 bytes");
  cr_assert_eq(shim_module_bind(NULL, mem, "cpu", err), SLY_E_INVALID_ARG);
  cr_assert_eq(shim_module_bind(NULL, mem, "cpu", NULL), SLY_E_INVALID_ARG,
               "err may be NULL");
  /* Nothing changed: the module still reads its own blob. */
  cr_assert_eq(shim_module_blob_data(s.m), own);
  cr_assert_eq(shim_testing_own_blob_freed(s.m), 0);
  same_as_before(&s);
  memset(shim_testing_blob(s.m), 0, shim_module_blob_bytes(s.m));
  all_zero(&s);
  /* A bound module refuses the same way and stays bound. */
  memset(mem, 0, shim_module_blob_bytes(s.m));
  bind_ok(s.m, mem, "cpu");
  bind_fails(s.m, mem, "gpu", "expected cpu, sim or cuda:N");
  all_zero(&s);
  cr_assert_null(shim_module_blob_data(NULL));
  subject_free(&s);
  free(mem);
}

Test(shim_bind, a_module_without_weights_binds_to_nothing) {
  shim_module *m = ts("identity");
  cr_assert_eq(shim_module_blob_bytes(m), 0);
  cr_assert_null(shim_module_blob_data(m));
  cr_assert_eq(shim_testing_own_blob_freed(m), 1);
  bind_ok(m, NULL, "cpu");
  tensor x = TENSOR(PROTO_DTYPE_FLOAT32, 3);
  fill_float(&x, 1, 1);
  tensor y = run1(m, &x, 1);
  cr_assert_eq(memcmp(y.data, x.data, x.nbytes), 0);
  shim_module_free(m);
  tensor_free(&x), tensor_free(&y);
}

static double now_ms(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec * 1e3 + (double)t.tv_nsec / 1e6;
}

Test(shim_bind, binding_costs_no_copy) {
  /* A 33 MB layer: copying its blob would take milliseconds; re-pointing
   * its twelve tensors takes microseconds (GPU.md: 0.085 ms on the GPU). */
  shim_module *m = make("transformer_encoder_layer",
                        "{\"d_model\": 1024, \"nhead\": 8, "
                        "\"dim_feedforward\": 2048}");
  uint64_t n = shim_module_blob_bytes(m);
  cr_assert_gt(n, 32u << 20);
  void *a = blob_copy(m), *b = blob_copy(m);
  bind_ok(m, a, "cpu");
  enum { ROUNDS = 200 };
  double t0 = now_ms();
  for (int i = 0; i < ROUNDS; i++)
    cr_assert_eq(shim_module_bind(m, i % 2 ? a : b, "cpu", err), 0, "%s", err);
  double per = (now_ms() - t0) / ROUNDS;
  cr_log_info("bind of a %llu-byte, 12-tensor blob: %.4f ms",
              (unsigned long long)n, per);
  cr_assert_lt(per, 1.0, "%.3f ms per bind: that is a copy, not a re-point",
               per);
  shim_module_free(m);
  free(a), free(b);
}

#ifdef SLY_HAVE_CUDA
static void *cuda_copy(const void *host, uint64_t n) {
  void *d = NULL;
  cr_assert_eq(cudaMalloc(&d, n), cudaSuccess);
  cr_assert_eq(cudaMemcpy(d, host, n, cudaMemcpyHostToDevice), cudaSuccess);
  return d;
}
#endif

/* Runs only where libtorch sees a CUDA device (tests/gpu). */
Test(shim_bind, binding_to_cuda_memory_and_back) {
  if (!shim_cuda_available())
    SHIM_SKIP("no CUDA device");
#ifndef SLY_HAVE_CUDA
  SHIM_SKIP("built without the CUDA runtime (CUDA=no)");
#else
  for (size_t k = 0; k < N_SUBJECTS; k++) {
    subject s = subject_new(subjects[k]);
    uint64_t n = shim_module_blob_bytes(s.m);
    void *host = blob_copy(s.m);
    void *d1 = cuda_copy(host, n), *d2 = cuda_copy(host, n);
    bind_ok(s.m, d1, "cuda:0");
    tensor y = run1(s.m, &s.x, 1);
    double e = rel_err(&y, &s.ref);
    cr_assert_lt(e, 1e-5, "%s on cuda:0: relative error %g", s.what, e);
    tensor_free(&y);
    /* Device to device, then zeroed device memory: the views read it. */
    bind_ok(s.m, d2, "cuda:0");
    cr_assert_eq(cudaMemset(d2, 0, n), cudaSuccess);
    cr_assert_eq(cudaDeviceSynchronize(), cudaSuccess);
    all_zero(&s);
    /* Back to the host: exactly the CPU's output again. */
    bind_ok(s.m, host, "cpu");
    same_as_before(&s);
    bind_fails(s.m, host, "cuda:0", "is not memory of cuda:0");
    subject_free(&s);
    cr_assert_eq(cudaFree(d1), cudaSuccess);
    cr_assert_eq(cudaFree(d2), cudaSuccess);
    free(host);
  }
  /* Created on cuda:0 (packed, then copied there by the shim): the host
   * blob is still there for the tiers, and binding frees both. */
  subject s = subject_new("one");
  cJSON *c = cJSON_Parse("{\"path\": \"ts_one.pt\"}");
  shim_module *g = NULL;
  cr_assert_eq(shim_module_create("torchscript", c, FIX, "cuda:0", &g, err), 0,
               "%s", err);
  cJSON_Delete(c);
  void *host = blob_copy(g);
  bind_ok(g, host, "cpu");
  cr_assert_eq(shim_testing_own_blob_freed(g), 1);
  tensor y = run1(g, &s.x, 1);
  cr_assert_eq(memcmp(y.data, s.ref.data, y.nbytes), 0);
  shim_module_free(g);
  free(host);
  tensor_free(&y);
  subject_free(&s);
#endif
}

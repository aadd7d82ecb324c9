/* test_shim_io.c — what goes into and comes out of the torch shim:
 * TorchScript modules (one input, several, tuple and list outputs, an int64
 * embedding input) against PyTorch's outputs; inputs a module rejects
 * (BAD_TENSOR with libtorch's message); outputs the protocol cannot carry;
 * the input release contract (exactly once, and late when an output aliases
 * an input); pipelines of modules; and the weight blob every module's
 * tensors are views of.
 */
#include "shim_util.h"

char err[SHIM_ERROR_MAX];
char tmp[64];
int releases;

TestSuite(shim_io, .init = shim_setup, .fini = shim_teardown, .timeout = 120);

static shim_module *ts(const char *name) {
  return make("torchscript", "{\"path\": \"ts_%s.pt\"}", name);
}

/* Runs ts_<name>.pt on its saved inputs and compares every output with
 * PyTorch's. */
static void ts_matches(const char *name, size_t n_in, size_t n_out) {
  char io[256];
  snprintf(io, sizeof(io), FIX "/ts_%s_io.safetensors", name);
  tensor in[4], ref;
  char key[24]; /* "out" and any size_t */
  for (size_t i = 0; i < n_in; i++) {
    snprintf(key, sizeof(key), "in%zu", i);
    in[i] = st_read(io, key);
  }
  shim_module *m = ts(name);
  shim_values *out = NULL;
  int r = forward(m, in, n_in, &out);
  cr_assert_eq(r, 0, "%s: %s: %s", name, sly_code_name(r), err);
  cr_assert_eq(shim_values_count(out), n_out, "%s", name);
  for (size_t i = 0; i < n_out; i++) {
    snprintf(key, sizeof(key), "out%zu", i);
    ref = st_read(io, key);
    tensor y = output(out, i);
    double e = rel_err(&y, &ref);
    cr_assert_lt(e, 1e-5, "%s output %zu: relative error %g", name, i, e);
    tensor_free(&y), tensor_free(&ref);
  }
  shim_values_free(out);
  shim_module_free(m);
  for (size_t i = 0; i < n_in; i++)
    tensor_free(&in[i]);
}

Test(shim_io, torchscript_outputs_equal_pytorchs) {
  ts_matches("one", 1, 1);      /* Linear + a buffer */
  ts_matches("multi", 2, 1);    /* forward(x, y) */
  ts_matches("tuple", 1, 2);    /* (x + 1, x.sum(-1)) */
  ts_matches("list", 1, 2);     /* [x * 2, x - 1] */
  ts_matches("embed", 1, 1);    /* int64 indices into an Embedding */
  ts_matches("frozen", 1, 1);   /* weights as constants of the code */
  ts_matches("traced", 1, 1);   /* a captured tensor as a constant */
  ts_matches("forked", 1, 1);   /* constants in a torch.jit.fork body */
}

Test(shim_io, torchscript_file_errors) {
  make_fails("torchscript", "{\"path\": \"missing.pt\"}", "cpu",
             SLY_E_NOT_FOUND, "config.path: " FIX "/missing.pt: No such file");
  make_fails("torchscript", "{\"path\": \"mlp.safetensors\"}", "cpu",
             SLY_E_BAD_REQUEST, "config.path: " FIX "/mlp.safetensors: not a "
                                "TorchScript file");
  make_fails("torchscript", "{\"path\": \"/\"}", "cpu", SLY_E_BAD_REQUEST,
             "config.path: /: not a regular file");
}

/* Expects a forward of `n` inputs to fail with BAD_TENSOR saying `why`. */
static void rejects(shim_module *m, const tensor *x, size_t n, const char *why) {
  shim_values *out = (shim_values *)0x1;
  int r = forward(m, x, n, &out);
  cr_assert_eq(r, SLY_E_BAD_TENSOR, "got %s: %s", sly_code_name(r), err);
  cr_assert_eq(out, (shim_values *)0x1, "output untouched on failure");
  cr_assert_not_null(strstr(err, why), "'%s' lacks '%s'", err, why);
  cr_assert_null(strchr(err, '\n'), "one line: %s", err);
}

Test(shim_io, inputs_a_module_rejects_give_bad_tensor) {
  shim_module *m = make("linear", "{\"in_features\": 4, \"out_features\": 3}");
  tensor x = TENSOR(PROTO_DTYPE_FLOAT32, 2, 4), x5 = TENSOR(PROTO_DTYPE_FLOAT32, 2, 5);
  tensor xd = TENSOR(PROTO_DTYPE_FLOAT64, 2, 4);
  rejects(m, &x5, 1, "mat1 and mat2 shapes cannot be multiplied (2x5 and 4x3)");
  rejects(m, &xd, 1, "must have the same dtype");
  rejects(m, (tensor[]){x, x}, 2, "linear expects 1 input, got 2");
  rejects(m, NULL, 0, "linear expects 1 input, got 0");
  tensor ok = run1(m, &x, 1); /* the module still serves */
  shim_module_free(m);
  m = make("transformer_encoder_layer", "{\"d_model\": 8, \"nhead\": 2}");
  tensor x4 = TENSOR(PROTO_DTYPE_FLOAT32, 1, 2, 3, 8);
  rejects(m, &x4, 1, "expects a 3-D input (batch, seq, d_model)");
  rejects(m, &x, 1, "expects d_model = 8 features in the last dim, got [2, 4]");
  shim_module_free(m);
  /* TorchScript: the interpreter's own error line, not its traceback. */
  m = ts("one");
  rejects(m, &x5, 1, "mat1 and mat2 shapes cannot be multiplied");
  rejects(m, (tensor[]){x, x}, 2, "forward");
  rejects(m, NULL, 0, "forward");
  shim_module_free(m);
  tensor_free(&x), tensor_free(&x5), tensor_free(&xd), tensor_free(&ok);
  tensor_free(&x4);
}

Test(shim_io, outputs_the_protocol_cannot_carry_give_bad_tensor) {
  tensor x = TENSOR(PROTO_DTYPE_FLOAT32, 2, 3);
  shim_module *m = ts("int");
  rejects(m, &x, 1, "the module returned Int, expected a tensor");
  shim_module_free(m);
  static const char *const names[] = {"complex", "ninedims"};
  static const char *const whys[] = {"dtype ComplexFloat", "9 dims, at most 8"};
  for (int k = 0; k < 2; k++) {
    m = ts(names[k]);
    shim_values *out = NULL;
    cr_assert_eq(forward(m, &x, 1, &out), 0, "%s", err);
    proto_dtype d = PROTO_DTYPE_COUNT;
    uint64_t nbytes = 0;
    cr_assert_eq(shim_values_describe(out, 0, &d, NULL, NULL, &nbytes, err),
                 SLY_E_BAD_TENSOR);
    cr_assert_not_null(strstr(err, whys[k]), "%s", err);
    cr_assert_eq(d, PROTO_DTYPE_COUNT, "untouched on failure");
    char dst[64];
    cr_assert_eq(shim_values_copy_out(out, 0, dst, err), SLY_E_BAD_TENSOR);
    shim_values_free(out);
    shim_module_free(m);
  }
  tensor_free(&x);
}

Test(shim_io, floating_inputs_are_released_once_after_their_last_use) {
  shim_module *m = make("linear", "{\"in_features\": 4, \"out_features\": 3}");
  tensor x = TENSOR(PROTO_DTYPE_FLOAT32, 2, 4);
  releases = 0;
  shim_values *in = wrap(&x, 1), *out = NULL;
  cr_assert_eq(releases, 0, "a float input is read in place");
  shim_values *out2 = NULL;
  cr_assert_eq(shim_forward(m, in, &out, err), 0, "%s", err);
  cr_assert_eq(shim_forward(m, in, &out2, err), 0, "inputs are not consumed");
  cr_assert_eq(releases, 0);
  shim_values_free(in);
  cr_assert_eq(releases, 1);
  shim_values_free(out);
  shim_values_free(out2);
  cr_assert_eq(releases, 1);
  shim_module_free(m);
  tensor_free(&x);
}

Test(shim_io, an_output_aliasing_an_input_holds_its_release) {
  shim_module *m = ts("identity");
  tensor x = TENSOR(PROTO_DTYPE_FLOAT32, 2, 3);
  fill_float(&x, 1, 1);
  releases = 0;
  shim_values *in = wrap(&x, 1), *out = NULL;
  cr_assert_eq(shim_forward(m, in, &out, err), 0, "%s", err);
  shim_values_free(in);
  cr_assert_eq(releases, 0, "the output still reads the client's memory");
  tensor y = output(out, 0);
  cr_assert_eq(memcmp(y.data, x.data, x.nbytes), 0);
  shim_values_free(out);
  cr_assert_eq(releases, 1);
  shim_module_free(m);
  tensor_free(&x), tensor_free(&y);
}

Test(shim_io, integer_and_bool_inputs_are_copied_at_once) {
  shim_module *m = ts("identity");
  static const proto_dtype kinds[] = {PROTO_DTYPE_INT64, PROTO_DTYPE_INT32,
                                      PROTO_DTYPE_INT16, PROTO_DTYPE_INT8,
                                      PROTO_DTYPE_UINT8, PROTO_DTYPE_BOOL};
  for (size_t k = 0; k < sizeof(kinds) / sizeof(kinds[0]); k++) {
    tensor x = TENSOR(kinds[k], 2, 3);
    for (uint64_t i = 0; i < x.nbytes; i++)
      ((uint8_t *)x.data)[i] = kinds[k] == PROTO_DTYPE_BOOL ? (uint8_t)(i & 1)
                                                             : (uint8_t)(i * 7);
    releases = 0;
    shim_values *in = wrap(&x, 1), *out = NULL;
    cr_assert_eq(releases, 1, "%s: copied and released at once",
                 proto_dtype_name(kinds[k]));
    tensor before = {.data = malloc(x.nbytes)};
    memcpy(before.data, x.data, x.nbytes);
    memset(x.data, kinds[k] == PROTO_DTYPE_BOOL ? 0 : 0x5a, x.nbytes);
    cr_assert_eq(shim_forward(m, in, &out, err), 0, "%s", err);
    tensor y = output(out, 0);
    cr_assert_eq(y.dtype, kinds[k]);
    cr_assert_eq(memcmp(y.data, before.data, x.nbytes), 0,
                 "%s: the client's later writes are not seen",
                 proto_dtype_name(kinds[k]));
    shim_values_free(in);
    shim_values_free(out);
    cr_assert_eq(releases, 1);
    tensor_free(&x), tensor_free(&y), tensor_free(&before);
  }
  shim_module_free(m);
}

Test(shim_io, every_dtype_round_trips) {
  shim_module *m = ts("identity");
  for (int d = 0; d < PROTO_DTYPE_COUNT; d++) {
    tensor x = TENSOR((proto_dtype)d, 3, 1, 2);
    for (uint64_t i = 0; i < x.nbytes; i++)
      ((uint8_t *)x.data)[i] = d == PROTO_DTYPE_BOOL ? 1 : (uint8_t)(i + 1);
    tensor y = run1(m, &x, 1);
    same_shape(&y, &x);
    cr_assert_eq(y.nbytes, x.nbytes);
    cr_assert_eq(memcmp(y.data, x.data, x.nbytes), 0, "%s",
                 proto_dtype_name((proto_dtype)d));
    tensor_free(&x), tensor_free(&y);
  }
  /* A scalar and an empty tensor. */
  tensor s = tensor_new(PROTO_DTYPE_FLOAT64, 0, NULL), e = TENSOR(PROTO_DTYPE_FLOAT32, 0, 4);
  tensor ys = run1(m, &s, 1), ye = run1(m, &e, 1);
  cr_assert_eq(ys.ndim, 0);
  cr_assert_eq(ys.nbytes, 8);
  cr_assert_eq(ye.nbytes, 0);
  cr_assert_eq(ye.shape[1], 4);
  shim_module_free(m);
  tensor_free(&s), tensor_free(&e), tensor_free(&ys), tensor_free(&ye);
}

Test(shim_io, bad_inputs_are_all_released) {
  tensor a = TENSOR(PROTO_DTYPE_FLOAT32, 2), b = TENSOR(PROTO_DTYPE_INT64, 2);
  shim_input in[3] = {
      {.dtype = PROTO_DTYPE_FLOAT32, .ndim = 1, .shape = {2}, .data = a.data,
       .release = count_release},
      {.dtype = PROTO_DTYPE_INT64, .ndim = PROTO_MAX_DIMS + 1, .data = b.data,
       .release = count_release},
      {.dtype = PROTO_DTYPE_FLOAT32, .ndim = 1, .shape = {2}, .data = a.data,
       .release = count_release},
  };
  shim_values *v = (shim_values *)0x1;
  releases = 0;
  cr_assert_eq(shim_values_from_inputs(in, 3, &v, err), SLY_E_BAD_TENSOR);
  cr_assert_eq(releases, 3, "every release() ran once, got %d", releases);
  cr_assert_eq(v, (shim_values *)0x1);
  in[1].ndim = 1;
  in[1].shape[0] = 2;
  in[1].dtype = PROTO_DTYPE_COUNT;
  releases = 0;
  cr_assert_eq(shim_values_from_inputs(in, 3, &v, err), SLY_E_BAD_TENSOR);
  cr_assert_eq(releases, 3);
  in[1].dtype = PROTO_DTYPE_INT64;
  in[1].data = NULL;
  releases = 0;
  cr_assert_eq(shim_values_from_inputs(in, 3, &v, err), SLY_E_BAD_TENSOR);
  cr_assert_eq(releases, 3);
  /* release may be NULL. */
  in[1].data = b.data;
  in[0].release = in[1].release = in[2].release = NULL;
  cr_assert_eq(shim_values_from_inputs(in, 3, &v, err), 0, "%s", err);
  cr_assert_eq(shim_values_count(v), 3);
  shim_values_free(v);
  shim_values_free(NULL);
  tensor_free(&a), tensor_free(&b);
}

Test(shim_io, a_pipeline_passes_values_between_modules) {
  shim_module *m1 = make("linear", "{\"in_features\": 4, \"out_features\": 6}");
  shim_module *m2 = make("mlp", "{\"in_features\": 6, \"hidden_features\": "
                                "[5], \"out_features\": 3, \"seed\": 4}");
  tensor x = TENSOR(PROTO_DTYPE_FLOAT32, 2, 4);
  fill_float(&x, -2, 0.5f);
  shim_values *in = wrap(&x, 1), *mid = NULL, *out = NULL;
  cr_assert_eq(shim_forward(m1, in, &mid, err), 0, "%s", err);
  cr_assert_eq(shim_forward(m2, mid, &out, err), 0, "%s", err);
  /* The same through the host. */
  tensor h = output(mid, 0);
  tensor want = run1(m2, &h, 1), got = output(out, 0);
  cr_assert_eq(memcmp(got.data, want.data, want.nbytes), 0);
  cr_assert_eq(got.shape[1], 3);
  shim_values_free(in), shim_values_free(mid), shim_values_free(out);
  shim_module_free(m1), shim_module_free(m2);
  tensor_free(&x), tensor_free(&h), tensor_free(&want), tensor_free(&got);
}

Test(shim_io, weights_are_one_aligned_blob) {
  /* weight 65x64 floats = 16640 bytes = 4 pages + 256: 5 pages; bias 1. */
  shim_module *m = make("linear", "{\"in_features\": 64, \"out_features\": 65}");
  cr_assert_eq(shim_module_blob_tensors(m), 2);
  cr_assert_eq(shim_module_blob_bytes(m), aligned(65 * 64 * 4) + aligned(65 * 4));
  cr_assert_eq(shim_module_blob_bytes(m), 6 * 4096);
  cr_assert_eq((uintptr_t)shim_testing_blob(m) % SHIM_BLOB_ALIGN, 0);
  cr_assert(shim_testing_views_in_blob(m));
  shim_module_free(m);
  /* nn.TransformerEncoderLayer(16, 4, 32): twelve tensors, each under a
   * page. */
  m = make("transformer_encoder_layer",
           "{\"d_model\": 16, \"nhead\": 4, \"dim_feedforward\": 32}");
  cr_assert_eq(shim_module_blob_bytes(m), 12 * 4096);
  cr_assert(shim_testing_views_in_blob(m));
  shim_module_free(m);
  /* TorchScript: parameters and buffers alike. */
  m = ts("one");
  cr_assert_eq(shim_module_blob_tensors(m), 3, "weight, bias, scale");
  cr_assert_eq(shim_module_blob_bytes(m), 3 * 4096);
  cr_assert(shim_testing_views_in_blob(m));
  shim_module_free(m);
  m = ts("identity");
  cr_assert_eq(shim_module_blob_bytes(m), 0);
  cr_assert_null(shim_testing_blob(m));
  shim_module_free(m);
}

/* Zeroes the blob behind the module's back: if the forward reads the blob,
 * every output becomes 0 (linear: x·0 + 0; ts_one: relu(0) * 0). */
static void forward_reads_blob(shim_module *m, tensor *x) {
  tensor before = run1(m, x, 1);
  float *b = before.data;
  int nonzero = 0;
  for (uint64_t i = 0; i < before.nbytes / 4; i++)
    nonzero += b[i] != 0;
  cr_assert_gt(nonzero, 0);
  memset(shim_testing_blob(m), 0, shim_module_blob_bytes(m));
  tensor after = run1(m, x, 1);
  for (uint64_t i = 0; i < after.nbytes / 4; i++)
    cr_assert_eq(((float *)after.data)[i], 0.0f);
  tensor_free(&before), tensor_free(&after);
}

Test(shim_io, the_forward_reads_the_blob) {
  tensor x = TENSOR(PROTO_DTYPE_FLOAT32, 2, 4);
  fill_float(&x, 0.1f, 0.2f);
  shim_module *m = make("linear", "{\"in_features\": 4, \"out_features\": 3}");
  forward_reads_blob(m, &x);
  shim_module_free(m);
  m = ts("one");
  forward_reads_blob(m, &x);
  shim_module_free(m);
  tensor_free(&x);
}

Test(shim_io, an_output_aliasing_a_weight_outlives_the_module) {
  /* ts_weight returns its parameter itself: the output is copied out of the
   * blob (a bound blob is the tiers' memory, and the parameter would follow
   * the next bind), so it outlives the module (AddressSanitizer would see a
   * use after free otherwise). */
  shim_module *m = ts("weight");
  tensor x = TENSOR(PROTO_DTYPE_FLOAT32, 1);
  shim_values *out = NULL;
  cr_assert_eq(forward(m, &x, 1, &out), 0, "%s", err);
  shim_module_free(m);
  tensor y = output(out, 0);
  cr_assert_eq(y.nbytes, 6 * 4);
  for (int i = 0; i < 6; i++)
    cr_assert_eq(((float *)y.data)[i], (float)i);
  shim_values_free(out);
  tensor_free(&x), tensor_free(&y);
}

/* test_shim.c — the torch shim's constructors: each built-in with a good
 * config runs and gives the right shape; every bad config key is refused
 * naming the key; seeds are deterministic; weights from safetensors files
 * give PyTorch's outputs (float32 within 1e-5, bfloat16 within 2e-2) and
 * are checked tensor by tensor.
 *
 * Fixtures come from tests/fixtures/gen_shim.py. test_shim_io.c covers
 * inputs, outputs, TorchScript and the weight blob.
 */
#include <sys/stat.h>

#include "shim_util.h"

char err[SHIM_ERROR_MAX];
char tmp[64];
int releases;

TestSuite(shim, .init = shim_setup, .fini = shim_teardown, .timeout = 120);

Test(shim, reports_libtorch_and_its_constructors) {
  cr_assert_eq(strncmp(shim_torch_version(), "2.", 2), 0, "%s",
               shim_torch_version());
  const char *const *c = shim_constructors();
  const char *want[] = {"torchscript", "linear", "mlp",
                        "transformer_encoder_layer"};
  for (size_t i = 0; i < 4; i++)
    cr_assert_str_eq(c[i], want[i]);
  cr_assert_null(c[4]);
  int cuda = shim_cuda_available();
  cr_assert(cuda == 0 || cuda == 1);
}

Test(shim, linear_gives_batch_by_out_features) {
  shim_module *m = make("linear", "{\"in_features\": 4, \"out_features\": 3}");
  tensor x = TENSOR(PROTO_DTYPE_FLOAT32, 2, 4);
  fill_float(&x, -1, 0.25f);
  tensor y = run1(m, &x, 1);
  cr_assert_eq(y.dtype, PROTO_DTYPE_FLOAT32);
  cr_assert_eq(y.ndim, 2);
  cr_assert_eq(y.shape[0], 2);
  cr_assert_eq(y.shape[1], 3);
  cr_assert_eq(y.nbytes, 24);
  cr_assert_eq(shim_module_blob_tensors(m), 2, "weight and bias");
  tensor_free(&x);
  tensor_free(&y);
  shim_module_free(m);
  m = make("linear", "{\"in_features\": 4, \"out_features\": 3, "
                     "\"bias\": false}");
  cr_assert_eq(shim_module_blob_tensors(m), 1, "weight only");
  shim_module_free(m);
  shim_module_free(NULL);
}

Test(shim, linear_with_weights_computes_x_wt_plus_b_exactly) {
  /* Small integers: every product and sum is exact in float32. */
  tensor w = TENSOR(PROTO_DTYPE_FLOAT32, 3, 4), b = TENSOR(PROTO_DTYPE_FLOAT32, 3);
  tensor x = TENSOR(PROTO_DTYPE_FLOAT32, 2, 4);
  float *W = w.data, *B = b.data, *X = x.data;
  for (int i = 0; i < 12; i++)
    W[i] = (float)(i % 5 - 2);
  for (int i = 0; i < 3; i++)
    B[i] = (float)(10 * i - 7);
  for (int i = 0; i < 8; i++)
    X[i] = (float)(3 - i);
  char path[128];
  snprintf(path, sizeof(path), "%s/lin.safetensors", tmp);
  st_write(path, 2, (const char *const[]){"weight", "bias"},
           (tensor[]){w, b});
  shim_module *m = make("linear", "{\"in_features\": 4, \"out_features\": 3, "
                                  "\"weights\": \"%s\"}", path);
  tensor y = run1(m, &x, 1);
  const float *Y = y.data;
  for (int r = 0; r < 2; r++)
    for (int o = 0; o < 3; o++) {
      float want = B[o];
      for (int k = 0; k < 4; k++)
        want += X[r * 4 + k] * W[o * 4 + k];
      cr_assert_eq(Y[r * 3 + o], want, "y[%d][%d] = %g, want %g", r, o,
                   Y[r * 3 + o], want);
    }
  shim_module_free(m);
  /* Without bias the file holds the weight alone. */
  st_write(path, 1, (const char *const[]){"weight"}, &w);
  m = make("linear", "{\"in_features\": 4, \"out_features\": 3, \"bias\": "
                     "false, \"weights\": \"%s\"}", path);
  tensor y2 = run1(m, &x, 1);
  for (int o = 0; o < 3; o++)
    cr_assert_eq(((float *)y2.data)[o], Y[o] - B[o]);
  shim_module_free(m);
  tensor_free(&w), tensor_free(&b), tensor_free(&x), tensor_free(&y);
  tensor_free(&y2);
}

Test(shim, mlp_gives_its_shapes_and_layers) {
  shim_module *m = make("mlp", "{\"in_features\": 6, \"hidden_features\": [8, "
                               "5], \"out_features\": 2, \"activation\": "
                               "\"silu\"}");
  cr_assert_eq(shim_module_blob_tensors(m), 6);
  tensor x = TENSOR(PROTO_DTYPE_FLOAT32, 3, 6);
  fill_float(&x, 0.5f, -0.1f);
  tensor y = run1(m, &x, 1);
  cr_assert_eq(y.ndim, 2);
  cr_assert_eq(y.shape[0], 3);
  cr_assert_eq(y.shape[1], 2);
  shim_module_free(m);
  tensor_free(&y);
  m = make("mlp", "{\"in_features\": 6, \"hidden_features\": [], "
                  "\"out_features\": 4, \"bias\": false}");
  cr_assert_eq(shim_module_blob_tensors(m), 1, "one Linear, no bias");
  y = run1(m, &x, 1);
  cr_assert_eq(y.shape[1], 4);
  shim_module_free(m);
  tensor_free(&x), tensor_free(&y);
}

Test(shim, mlp_loads_pytorchs_state_dict_names) {
  /* layers.0 Linear(6,5), layers.1 GELU, layers.2 Linear(5,4), layers.3
   * GELU, layers.4 Linear(4,3): what nn.Sequential names them. */
  shim_module *m = make("mlp", "{\"in_features\": 6, \"hidden_features\": [5, "
                               "4], \"out_features\": 3, \"activation\": "
                               "\"gelu\", \"weights\": \"mlp.safetensors\"}");
  tensor x = st_read(FIX "/mlp_io.safetensors", "in0");
  tensor ref = st_read(FIX "/mlp_io.safetensors", "out0");
  tensor y = run1(m, &x, 1);
  double e = rel_err(&y, &ref);
  cr_assert_lt(e, 1e-5, "relative error %g", e);
  shim_module_free(m);
  tensor_free(&x), tensor_free(&ref), tensor_free(&y);
}

Test(shim, transformer_layer_takes_batch_first_seq_first_and_unbatched) {
  shim_module *m = make("transformer_encoder_layer",
                        "{\"d_model\": 16, \"nhead\": 4, \"dim_feedforward\": 32}");
  cr_assert_eq(shim_module_blob_tensors(m), 12);
  tensor x = TENSOR(PROTO_DTYPE_FLOAT32, 2, 5, 16);
  fill_float(&x, -1, 0.01f);
  tensor y = run1(m, &x, 1);
  same_shape(&y, &x);
  /* Unbatched (seq, d_model) is one batch of the batch-first layer. */
  tensor x1 = TENSOR(PROTO_DTYPE_FLOAT32, 5, 16);
  memcpy(x1.data, x.data, x1.nbytes);
  tensor y1 = run1(m, &x1, 1);
  same_shape(&y1, &x1);
  tensor y0 = {.dtype = y.dtype, .ndim = 2, .shape = {5, 16}, .data = y.data,
               .nbytes = y1.nbytes}; /* y[0] */
  cr_assert_lt(rel_err(&y1, &y0), 1e-6);
  shim_module_free(m);
  tensor_free(&y);
  /* Sequence-first: the same numbers laid out (seq, batch, d_model). */
  m = make("transformer_encoder_layer", "{\"d_model\": 16, \"nhead\": 4, "
                                        "\"dim_feedforward\": 32, "
                                        "\"batch_first\": false}");
  tensor xs = TENSOR(PROTO_DTYPE_FLOAT32, 5, 2, 16);
  y = run1(m, &xs, 1);
  same_shape(&y, &xs);
  shim_module_free(m);
  tensor_free(&x), tensor_free(&x1), tensor_free(&y1), tensor_free(&xs);
  tensor_free(&y);
}

/* Loads a PyTorch nn.TransformerEncoderLayer's state_dict and compares the
 * output with PyTorch's (its inference fast path, batch_first=True). */
static void tel_matches(const char *name, const char *extra, double tol) {
  char io[256];
  shim_module *m = make("transformer_encoder_layer",
                        "{\"d_model\": 16, \"nhead\": 4, \"dim_feedforward\": "
                        "32, \"weights\": \"%s.safetensors\"%s}", name, extra);
  snprintf(io, sizeof(io), FIX "/%s_io.safetensors", name);
  tensor x = st_read(io, "in0"), ref = st_read(io, "out0");
  tensor y = run1(m, &x, 1);
  double e = rel_err(&y, &ref);
  cr_assert_lt(e, tol, "%s: relative error %g, at most %g", name, e, tol);
  shim_module_free(m);
  tensor_free(&x), tensor_free(&ref), tensor_free(&y);
}

Test(shim, transformer_layer_matches_pytorch) {
  tel_matches("tel", "", 1e-5);
  tel_matches("tel_nf", ", \"activation\": \"gelu\", \"norm_first\": true, "
                        "\"layer_norm_eps\": 1e-6, \"dropout\": 0.1", 1e-5);
  tel_matches("tel_bf16", ", \"dtype\": \"bfloat16\"", 2e-2);
}

/* The output of a seeded linear(8, 8) on a fixed input. */
static tensor seeded(const char *seed) {
  shim_module *m = make("linear", "{\"in_features\": 8, \"out_features\": 8%s}",
                        seed);
  tensor x = TENSOR(PROTO_DTYPE_FLOAT32, 1, 8);
  fill_float(&x, 1, 1);
  tensor y = run1(m, &x, 1);
  shim_module_free(m);
  tensor_free(&x);
  return y;
}

Test(shim, seeds_are_deterministic) {
  tensor a = seeded(", \"seed\": 1"), b = seeded(", \"seed\": 1");
  tensor c = seeded(", \"seed\": 2"), d = seeded(""), e = seeded(", \"seed\": 0");
  cr_assert_eq(memcmp(a.data, b.data, a.nbytes), 0, "same seed, same output");
  cr_assert_neq(memcmp(a.data, c.data, a.nbytes), 0, "another seed differs");
  cr_assert_eq(memcmp(d.data, e.data, d.nbytes), 0, "the default seed is 0");
  tensor_free(&a), tensor_free(&b), tensor_free(&c), tensor_free(&d);
  tensor_free(&e);
}

Test(shim, dtypes_bfloat16_and_float16) {
  shim_module *m = make("linear", "{\"in_features\": 4, \"out_features\": 2, "
                                  "\"dtype\": \"bfloat16\"}");
  tensor x = TENSOR(PROTO_DTYPE_BFLOAT16, 1, 4);
  tensor y = run1(m, &x, 1);
  cr_assert_eq(y.dtype, PROTO_DTYPE_BFLOAT16);
  cr_assert_eq(shim_module_blob_bytes(m), 2 * SHIM_BLOB_ALIGN);
  shim_module_free(m);
  tensor_free(&x), tensor_free(&y);
  m = make("mlp", "{\"in_features\": 4, \"hidden_features\": [3], "
                  "\"out_features\": 2, \"dtype\": \"float16\"}");
  x = TENSOR(PROTO_DTYPE_FLOAT16, 1, 4);
  y = run1(m, &x, 1);
  cr_assert_eq(y.dtype, PROTO_DTYPE_FLOAT16);
  shim_module_free(m);
  tensor_free(&x), tensor_free(&y);
}

Test(shim, bad_configs_name_the_key) {
  static const struct {
    const char *ctor, *json, *why;
  } cases[] = {
      {"linear", "{}", "config.in_features: required"},
      {"linear", "{\"in_features\": 4}", "config.out_features: required"},
      {"linear", "{\"in_features\": 0, \"out_features\": 3}", "config.in_features: expected a positive integer"},
      {"linear", "{\"in_features\": -4, \"out_features\": 3}", "config.in_features"},
      {"linear", "{\"in_features\": 4.5, \"out_features\": 3}", "config.in_features"},
      {"linear", "{\"in_features\": \"4\", \"out_features\": 3}", "config.in_features"},
      {"linear", "{\"in_features\": 16777217, \"out_features\": 3}", "config.in_features"},
      {"linear", "{\"in_features\": 4, \"out_features\": 3, \"bias\": 1}", "config.bias: expected true or false"},
      {"linear", "{\"in_features\": 4, \"out_features\": 3, \"dtype\": \"int8\"}", "config.dtype: expected one of"},
      {"linear", "{\"in_features\": 4, \"out_features\": 3, \"dtype\": 4}", "config.dtype"},
      {"linear", "{\"in_features\": 4, \"out_features\": 3, \"seed\": -1}", "config.seed: expected a non-negative integer"},
      {"linear", "{\"in_features\": 4, \"out_features\": 3, \"seed\": 1.5}", "config.seed"},
      {"linear", "{\"in_features\": 4, \"out_features\": 3, \"seed\": \"1\"}", "config.seed"},
      {"linear", "{\"in_features\": 4, \"out_features\": 3, \"seed\": 1, \"weights\": \"w\"}", "config.seed: give config.seed or config.weights, not both"},
      {"linear", "{\"in_features\": 4, \"out_features\": 3, \"weights\": \"\"}", "config.weights"},
      {"linear", "{\"in_features\": 4, \"out_features\": 3, \"weights\": 7}", "config.weights"},
      {"linear", "{\"in_features\": 4, \"out_features\": 3, \"colour\": 1}", "config.colour: unknown key"},
      {"linear", "{\"in_features\": 4, \"in_features\": 4, \"out_features\": 3}", "config.in_features: duplicate key"},
      {"linear", "[4, 3]", "config: expected an object"},
      {"mlp", "{\"in_features\": 4, \"out_features\": 3}", "config.hidden_features: required"},
      {"mlp", "{\"in_features\": 4, \"hidden_features\": 5, \"out_features\": 3}", "config.hidden_features: expected an array"},
      {"mlp", "{\"in_features\": 4, \"hidden_features\": [5, 0], \"out_features\": 3}", "config.hidden_features[1]: expected a positive integer"},
      {"mlp", "{\"in_features\": 4, \"hidden_features\": [\"5\"], \"out_features\": 3}", "config.hidden_features[0]"},
      {"mlp", "{\"in_features\": 4, \"hidden_features\": [], \"out_features\": 3, \"activation\": \"swish\"}", "config.activation: expected one of \"relu\", \"gelu\", \"tanh\", \"silu\""},
      {"mlp", "{\"in_features\": 4, \"hidden_features\": [], \"out_features\": 3, \"nhead\": 2}", "config.nhead: unknown key"},
      {"transformer_encoder_layer", "{\"d_model\": 16}", "config.nhead: required"},
      {"transformer_encoder_layer", "{\"nhead\": 4}", "config.d_model: required"},
      {"transformer_encoder_layer", "{\"d_model\": 16, \"nhead\": 5}", "config.nhead: 5 does not divide config.d_model (16)"},
      {"transformer_encoder_layer", "{\"d_model\": 16, \"nhead\": 4, \"dim_feedforward\": 0}", "config.dim_feedforward"},
      {"transformer_encoder_layer", "{\"d_model\": 16, \"nhead\": 4, \"activation\": \"tanh\"}", "config.activation: expected one of \"relu\", \"gelu\""},
      {"transformer_encoder_layer", "{\"d_model\": 16, \"nhead\": 4, \"norm_first\": \"yes\"}", "config.norm_first"},
      {"transformer_encoder_layer", "{\"d_model\": 16, \"nhead\": 4, \"batch_first\": 1}", "config.batch_first"},
      {"transformer_encoder_layer", "{\"d_model\": 16, \"nhead\": 4, \"layer_norm_eps\": 0}", "config.layer_norm_eps"},
      {"transformer_encoder_layer", "{\"d_model\": 16, \"nhead\": 4, \"layer_norm_eps\": \"1e-5\"}", "config.layer_norm_eps"},
      {"transformer_encoder_layer", "{\"d_model\": 16, \"nhead\": 4, \"dropout\": 2}", "config.dropout"},
      {"transformer_encoder_layer", "{\"d_model\": 16, \"nhead\": 4, \"bias\": true}", "config.bias: unknown key"},
      {"torchscript", "{}", "config.path: required"},
      {"torchscript", "{\"path\": 5}", "config.path: expected the path"},
      {"torchscript", "{\"path\": \"ts_one.pt\", \"seed\": 1}", "config.seed: unknown key"},
      {"conv2d", "{}", "constructor 'conv2d': unknown"},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
    make_fails(cases[i].ctor, cases[i].json, "cpu", SLY_E_BAD_REQUEST,
               cases[i].why);
}

Test(shim, devices_are_cpu_sim_or_cuda) {
  make_fails("linear", "{\"in_features\": 4, \"out_features\": 3}", "tpu",
             SLY_E_BAD_REQUEST, "device 'tpu': expected cpu, sim or cuda:N");
  make_fails("linear", "{\"in_features\": 4, \"out_features\": 3}", "cuda:x",
             SLY_E_BAD_REQUEST, "device 'cuda:x'");
  make_fails("linear", "{\"in_features\": 4, \"out_features\": 3}", "cuda:",
             SLY_E_BAD_REQUEST, "device 'cuda:'");
  make_fails("linear", "{\"in_features\": 4, \"out_features\": 3}", "cuda:99",
             SLY_E_UNAVAILABLE, "CUDA devices");
  cJSON *c = cJSON_Parse("{\"in_features\": 4, \"out_features\": 3}");
  shim_module *m = NULL;
  cr_assert_eq(shim_module_create("linear", c, NULL, "sim", &m, err), 0, "%s",
               err);
  shim_module_free(m);
  if (!shim_cuda_available())
    make_fails("linear", "{\"in_features\": 4, \"out_features\": 3}", "cuda:0",
               SLY_E_UNAVAILABLE, "libtorch sees 0 CUDA devices");
  cJSON_Delete(c);
}

/* The same module on "cpu" and on "cuda:0" (blob copied once, views
 * re-pointed); the forward's output must agree. */
static void cuda_matches(const char *ctor, const char *json, const tensor *x,
                         double tol) {
  cJSON *c = cJSON_Parse(json);
  shim_module *cpu = NULL, *gpu = NULL;
  cr_assert_eq(shim_module_create(ctor, c, FIX, "cpu", &cpu, err), 0, "%s", err);
  cr_assert_eq(shim_module_create(ctor, c, FIX, "cuda:0", &gpu, err), 0, "%s",
               err);
  cJSON_Delete(c);
  cr_assert(shim_testing_views_in_blob(gpu), "%s: views of the device blob",
            ctor);
  cr_assert_eq(shim_module_blob_bytes(gpu), shim_module_blob_bytes(cpu));
  tensor a = run1(cpu, x, 1), b = run1(gpu, x, 1);
  double e = rel_err(&b, &a);
  cr_assert_lt(e, tol, "%s: relative error %g", ctor, e);
  /* Values stay on the device from one module to the next. */
  shim_values *in = wrap(x, 1), *mid = NULL, *out = NULL;
  cr_assert_eq(shim_forward(gpu, in, &mid, err), 0, "%s", err);
  if (a.ndim == x->ndim && a.shape[a.ndim - 1] == x->shape[x->ndim - 1]) {
    cr_assert_eq(shim_forward(gpu, mid, &out, err), 0, "%s", err);
    shim_values_free(out);
  }
  shim_values_free(in), shim_values_free(mid);
  shim_module_free(cpu);
  shim_module_free(gpu);
  tensor_free(&a), tensor_free(&b);
}

/* Runs only where libtorch sees a CUDA device (tests/gpu). */
Test(shim, cuda_forward_matches_the_cpu) {
  if (!shim_cuda_available())
    SHIM_SKIP("no CUDA device");
  tensor x = TENSOR(PROTO_DTYPE_FLOAT32, 2, 4);
  fill_float(&x, -1, 0.3f);
  cuda_matches("mlp", "{\"in_features\": 4, \"hidden_features\": [8], "
                      "\"out_features\": 4, \"seed\": 3}", &x, 1e-5);
  cuda_matches("torchscript", "{\"path\": \"ts_one.pt\"}", &x, 1e-5);
  tensor t = st_read(FIX "/tel_io.safetensors", "in0");
  cuda_matches("transformer_encoder_layer",
               "{\"d_model\": 16, \"nhead\": 4, \"dim_feedforward\": 32, "
               "\"weights\": \"tel.safetensors\"}", &t, 1e-5);
  tensor_free(&x), tensor_free(&t);
}

Test(shim, weights_must_match_the_module_exactly) {
  /* Missing file: NOT_FOUND naming the path. */
  make_fails("linear", "{\"in_features\": 4, \"out_features\": 3, \"weights\": "
                       "\"nope.safetensors\"}", "cpu", SLY_E_NOT_FOUND,
             "config.weights: " FIX "/nope.safetensors: No such file");
  /* The file's dtype must be the module's. */
  make_fails("transformer_encoder_layer",
             "{\"d_model\": 16, \"nhead\": 4, \"dim_feedforward\": 32, "
             "\"dtype\": \"bfloat16\", \"weights\": \"tel.safetensors\"}",
             "cpu", SLY_E_BAD_REQUEST, "is F32, the module's is BFloat16");
  /* Shapes: the fixture's last layer is Linear(4, 3). */
  make_fails("mlp", "{\"in_features\": 6, \"hidden_features\": [5, 4], "
                    "\"out_features\": 2, \"weights\": \"mlp.safetensors\"}",
             "cpu", SLY_E_BAD_REQUEST,
             "tensor 'layers.4.weight' has shape [3, 4], the module's is [2, 4]");
  /* One layer fewer: the file holds tensors the module lacks. */
  make_fails("mlp", "{\"in_features\": 6, \"hidden_features\": [5], "
                    "\"out_features\": 4, \"weights\": \"mlp.safetensors\"}",
             "cpu", SLY_E_BAD_REQUEST, "is not in the module");
  /* Not a safetensors file at all, and a folder. */
  make_fails("linear", "{\"in_features\": 4, \"out_features\": 3, \"weights\": "
                       "\"ts_one.pt\"}", "cpu", SLY_E_BAD_REQUEST,
             "not a safetensors file");
  make_fails("linear", "{\"in_features\": 4, \"out_features\": 3, \"weights\": "
                       "\".\"}", "cpu", SLY_E_BAD_REQUEST, "not a regular file");

  char path[128], json[256];
  snprintf(path, sizeof(path), "%s/w.safetensors", tmp);
  tensor w = TENSOR(PROTO_DTYPE_FLOAT32, 3, 4), b = TENSOR(PROTO_DTYPE_FLOAT32, 3);
  tensor extra = TENSOR(PROTO_DTYPE_FLOAT32, 1);
  snprintf(json, sizeof(json), "{\"in_features\": 4, \"out_features\": 3, "
                               "\"weights\": \"%s\"}", path);
  st_write(path, 1, (const char *const[]){"weight"}, &w);
  make_fails("linear", json, "cpu", SLY_E_BAD_REQUEST,
             "tensor 'bias' is missing");
  st_write(path, 3, (const char *const[]){"weight", "bias", "extra"},
           (tensor[]){w, b, extra});
  make_fails("linear", json, "cpu", SLY_E_BAD_REQUEST,
             "tensor 'extra' is not in the module");
  /* Truncated: the header promises more data than the file has. */
  st_write(path, 2, (const char *const[]){"weight", "bias"}, (tensor[]){w, b});
  struct stat st;
  cr_assert_eq(stat(path, &st), 0);
  cr_assert_eq(truncate(path, st.st_size - 4), 0);
  make_fails("linear", json, "cpu", SLY_E_BAD_REQUEST, "not a safetensors file");
  tensor_free(&w), tensor_free(&b), tensor_free(&extra);
}

/* A deferred build declares the weights and nothing more: no blob, no read
 * of the weights file, forwards refused, until shim_module_fill reads the
 * file, or a bind points the module at values read elsewhere. */
Test(shim, a_deferred_build_gets_its_weights_only_when_filled_or_bound) {
  tensor w = TENSOR(PROTO_DTYPE_FLOAT32, 3, 4), b = TENSOR(PROTO_DTYPE_FLOAT32, 3);
  float *W = w.data, *B = b.data;
  for (int i = 0; i < 12; i++)
    W[i] = 100.0f + (float)i; /* far from any initialiser's range */
  for (int i = 0; i < 3; i++)
    B[i] = -100.0f;
  char path[128], cfg[256];
  snprintf(path, sizeof(path), "%s/lin.safetensors", tmp);
  st_write(path, 2, (const char *const[]){"weight", "bias"},
           (tensor[]){w, b});
  snprintf(cfg, sizeof(cfg), "{\"in_features\": 4, \"out_features\": 3, "
           "\"weights\": \"%s\"}", path);
  shim_module *full = make("linear", "%s", cfg);
  shim_module *def = make_from("linear", cfg, true);
  cr_assert(shim_module_filled(full));
  cr_assert_not(shim_module_filled(def));
  cr_assert_null(shim_module_blob_data(def), "a deferred build has no blob");
  uint64_t n = shim_module_blob_bytes(full);
  cr_assert_eq(shim_module_blob_bytes(def), n, "the layouts differ");
  cr_assert_eq(shim_module_blob_tensors(def), shim_module_blob_tensors(full));
  for (size_t i = 0; i < shim_module_blob_tensors(full); i++) {
    shim_blob_entry e1, e2;
    cr_assert_eq(shim_module_blob_entry(full, i, &e1), 0);
    cr_assert_eq(shim_module_blob_entry(def, i, &e2), 0);
    cr_assert_str_eq(e1.name, e2.name);
    cr_assert(e1.offset == e2.offset && e1.nbytes == e2.nbytes &&
              e1.dtype == e2.dtype && e1.ndim == e2.ndim &&
              memcmp(e1.shape, e2.shape, sizeof(e1.shape)) == 0,
              "entry %zu (%s) differs", i, e1.name);
  }
  tensor x = TENSOR(PROTO_DTYPE_FLOAT32, 2, 4);
  fill_float(&x, 1, 0.5f);
  shim_values *out = NULL;
  cr_assert_eq(forward(def, &x, 1, &out), SLY_E_INTERNAL,
               "a module without weights ran");
  cr_assert_not_null(strstr(err, "no weights yet"), "%s", err);
  cr_assert_eq(shim_module_fill(def, err), 0, "%s", err);
  cr_assert(shim_module_filled(def));
  cr_assert_eq(memcmp(shim_module_blob_data(full), shim_module_blob_data(def),
                      n), 0, "filled, the blob differs from a full build");
  tensor want = run1(full, &x, 1), got = run1(def, &x, 1);
  cr_assert_eq(memcmp(want.data, got.data, want.nbytes), 0);
  tensor_free(&got);
  shim_module_free(def);

  /* Bound to values read elsewhere (as from a cache file): no fill. */
  def = make_from("linear", cfg, true);
  void *mem = aligned_alloc(64, aligned(n));
  cr_assert_not_null(mem);
  memcpy(mem, shim_module_blob_data(full), n);
  cr_assert_eq(shim_module_bind(def, mem, "cpu", err), 0, "%s", err);
  cr_assert(shim_module_filled(def));
  got = run1(def, &x, 1);
  cr_assert_eq(memcmp(want.data, got.data, want.nbytes), 0,
               "bound, the deferred build computes otherwise");
  tensor_free(&got);
  shim_module_free(def);
  free(mem);
  tensor_free(&want), tensor_free(&x);

  /* A missing file is found at fill time, with create's code. */
  cr_assert_eq(unlink(path), 0);
  def = make_from("linear", cfg, true);
  cr_assert_eq(shim_module_fill(def, err), SLY_E_NOT_FOUND, "%s", err);
  cr_assert_not(shim_module_filled(def), "a failed fill left a blob");
  shim_module_free(def);
  shim_module_free(full);
  tensor_free(&w), tensor_free(&b);
}

/* TorchScript, deferred: loaded whole, but copied into a blob only when
 * filled (a restart binds it to its cache file's bytes instead). */
Test(shim, a_deferred_torchscript_gets_its_blob_only_when_filled) {
  const char *cfg = "{\"path\": \"ts_embed.pt\"}";
  shim_module *full = make_from("torchscript", cfg, false);
  shim_module *def = make_from("torchscript", cfg, true);
  uint64_t n = shim_module_blob_bytes(full);
  cr_assert_gt(n, 0, "ts_embed has weights");
  cr_assert_eq(shim_module_blob_bytes(def), n);
  cr_assert_not(shim_module_filled(def));
  cr_assert_null(shim_module_blob_data(def));
  cr_assert_eq(shim_module_fill(def, err), 0, "%s", err);
  cr_assert(shim_testing_views_in_blob(def), "not re-pointed into its blob");
  cr_assert_eq(memcmp(shim_module_blob_data(full), shim_module_blob_data(def),
                      n), 0, "filled, the blob differs from a full build");
  shim_module_free(def);
  shim_module_free(full);
}

/* A deferred TorchScript module whose values will come from a cache file
 * drops those it was loaded with (shapes and dtypes stay), so that they are
 * not held beside the tier's copy until the bind; bound to the bytes of a
 * full build, it computes what that build does, and it cannot be filled. */
Test(shim, a_deferred_torchscript_drops_its_loaded_values) {
  static const char *const files[] = {"ts_embed.pt", "ts_frozen.pt"};
  static const char *const ios[] = {FIX "/ts_embed_io.safetensors",
                                    FIX "/ts_frozen_io.safetensors"};
  for (size_t i = 0; i < 2; i++) {
    char cfg[64];
    snprintf(cfg, sizeof cfg, "{\"path\": \"%s\"}", files[i]);
    tensor x = st_read(ios[i], "in0");
    shim_module *full = make_from("torchscript", cfg, false);
    shim_module *def = make_from("torchscript", cfg, true);
    uint64_t n = shim_module_blob_bytes(def), held = 0;
    for (size_t k = 0; k < shim_module_blob_tensors(def); k++) {
      shim_blob_entry e;
      cr_assert_eq(shim_module_blob_entry(def, k, &e), 0);
      held += e.nbytes;
    }
    cr_assert_geq(shim_testing_value_bytes(def), held,
                  "%s: loaded, its values are there", files[i]);
    shim_module_drop_values(def);
    cr_assert_lt(shim_testing_value_bytes(def), 64, "%s: %llu bytes left",
                 files[i], (unsigned long long)shim_testing_value_bytes(def));
    cr_assert_eq(shim_module_blob_bytes(def), n, "the layout changed");
    cr_assert_eq(shim_module_fill(def, err), SLY_E_INTERNAL);
    void *copy = aligned_alloc(4096, n);
    cr_assert_not_null(copy);
    memcpy(copy, shim_module_blob_data(full), n);
    cr_assert_eq(shim_module_bind(def, copy, "cpu", err), 0, "%s", err);
    cr_assert(shim_testing_views_in_blob(def));
    tensor want = run1(full, &x, 1), got = run1(def, &x, 1);
    cr_assert_eq(want.nbytes, got.nbytes);
    cr_assert_eq(memcmp(want.data, got.data, got.nbytes), 0,
                 "%s: bound to the full build's bytes, it computes otherwise",
                 files[i]);
    tensor_free(&want), tensor_free(&got), tensor_free(&x);
    shim_module_free(def);
    shim_module_free(full);
    free(copy);
  }
}

/* A seeded built-in, deferred, draws its seed's values when filled: the
 * same bytes as a full build (so the same cache file), for every built-in. */
Test(shim, a_deferred_seeded_build_fills_with_its_seeds_values) {
  static const char *const cases[][2] = {
      {"linear", "{\"in_features\": 8, \"out_features\": 5, \"seed\": 3}"},
      {"linear", "{\"in_features\": 8, \"out_features\": 5, \"bias\": false}"},
      {"mlp", "{\"in_features\": 6, \"hidden_features\": [7, 9], "
              "\"out_features\": 4, \"activation\": \"gelu\", \"seed\": 4}"},
      {"transformer_encoder_layer",
       "{\"d_model\": 16, \"nhead\": 4, \"dim_feedforward\": 24, "
       "\"dtype\": \"bfloat16\", \"seed\": 5}"},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    shim_module *full = make_from(cases[i][0], cases[i][1], false);
    shim_module *def = make_from(cases[i][0], cases[i][1], true);
    uint64_t n = shim_module_blob_bytes(full);
    cr_assert_eq(shim_module_blob_bytes(def), n, "%s", cases[i][1]);
    cr_assert_null(shim_module_blob_data(def));
    cr_assert_eq(shim_module_fill(def, err), 0, "%s: %s", cases[i][1], err);
    cr_assert_eq(memcmp(shim_module_blob_data(full),
                        shim_module_blob_data(def), n), 0,
                 "%s: the filled blob differs from a full build", cases[i][1]);
    shim_module_free(def);
    shim_module_free(full);
  }
}

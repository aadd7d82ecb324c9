/* fixtures.c — PyTorch fixtures in, slyced outputs checked against them. */
#include "fixtures.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>

#include "npy.h"

#define FX_ALIGN 64

char *fx_config(const char *more_slices, const char *more_keys) {
  char *s = NULL;
  int n = asprintf(
      &s,
      "\"slices\": [\n"
      "  {\"name\": \"ts_one\", \"constructor\": \"torchscript\", "
      "\"config\": {\"path\": \"" FX_DIR "/ts_one.pt\"}},\n"
      "  {\"name\": \"ts_multi\", \"constructor\": \"torchscript\", "
      "\"config\": {\"path\": \"" FX_DIR "/ts_multi.pt\"}},\n"
      "  {\"name\": \"ts_tuple\", \"constructor\": \"torchscript\", "
      "\"config\": {\"path\": \"" FX_DIR "/ts_tuple.pt\"}},\n"
      "  {\"name\": \"ts_embed\", \"constructor\": \"torchscript\", "
      "\"config\": {\"path\": \"" FX_DIR "/ts_embed.pt\"}},\n"
      "  {\"name\": \"lin\", \"constructor\": \"linear\", \"config\": "
      "{\"in_features\": 16, \"out_features\": 8, \"bias\": true, "
      "\"dtype\": \"float32\", \"weights\": \"" FX_DIR
      "/linear_w.safetensors\"}},\n"
      "  {\"name\": \"lin8\", \"constructor\": \"linear\", \"config\": "
      "{\"in_features\": 8, \"out_features\": 8, \"bias\": true, "
      "\"dtype\": \"float32\", \"seed\": 3}},\n"
      "  {\"name\": \"tel\", \"constructor\": \"transformer_encoder_layer\", "
      "\"config\": {\"d_model\": 32, \"nhead\": 4, \"dim_feedforward\": 64, "
      "\"activation\": \"relu\", \"norm_first\": false, "
      "\"layer_norm_eps\": 1e-5, \"batch_first\": true, "
      "\"dtype\": \"float32\", \"weights\": \"" FX_DIR
      "/tel_w.safetensors\"}},\n"
      "  {\"name\": \"tel_bf16\", \"constructor\": "
      "\"transformer_encoder_layer\", \"config\": {\"d_model\": 32, "
      "\"nhead\": 4, \"dim_feedforward\": 64, \"dtype\": \"bfloat16\", "
      "\"weights\": \"" FX_DIR "/tel_bf16.safetensors\"}}%s%s\n"
      "],\n"
      "\"pipelines\": {\"p\": [\"lin\", \"lin8\"]}%s%s",
      more_slices ? ",\n  " : "", more_slices ? more_slices : "",
      more_keys ? ",\n" : "", more_keys ? more_keys : "");
  cr_assert(n > 0, "out of memory");
  return s;
}

void fx_read_path(const char *path, fx_array *out) {
  npy_file f;
  sly_error err;
  int rc = npy_open(path, &f, &err);
  cr_assert_eq(rc, 0, "%s", err.message);
  void *data = malloc(f.h.nbytes > 0 ? f.h.nbytes : 1);
  cr_assert(data, "out of memory");
  rc = npy_read_into(&f, data, &err);
  npy_close(&f);
  cr_assert_eq(rc, 0, "%s", err.message);
  *out = (fx_array){.dtype = f.h.dtype,
                    .ndim = f.h.ndim,
                    .nbytes = f.h.nbytes,
                    .data = data};
  memcpy(out->shape, f.h.shape, sizeof out->shape);
}

void fx_read(const char *name, fx_array *out) {
  char path[512];
  int n = snprintf(path, sizeof path, "%s/%s", FX_DIR, name);
  cr_assert(n > 0 && (size_t)n < sizeof path, "path too long");
  fx_read_path(path, out);
}

void fx_array_free(fx_array *a) {
  free(a->data);
  a->data = NULL;
}

bool fx_try_put(sly_arena *arena, const fx_array *a, bool bf16,
                sly_tensor *t) {
  bool narrow = bf16 && a->dtype == SLY_FLOAT32;
  uint64_t bytes = narrow ? a->nbytes / 2 : a->nbytes;
  void *dst = sly_arena_alloc(arena, bytes > 0 ? (size_t)bytes : 1, FX_ALIGN);
  if (dst == NULL)
    return false;
  if (narrow) {
    const float *src = a->data;
    uint16_t *d = dst;
    for (uint64_t i = 0; i < a->nbytes / 4; i++)
      d[i] = npy_bf16_from_f32(src[i]);
  } else {
    memcpy(dst, a->data, a->nbytes);
  }
  *t = (sly_tensor){.dtype = narrow ? SLY_BFLOAT16 : a->dtype,
                    .ndim = a->ndim,
                    .data = dst};
  memcpy(t->shape, a->shape, sizeof t->shape);
  return true;
}

sly_tensor fx_put(sly_arena *arena, const fx_array *a) {
  sly_tensor t;
  cr_assert(fx_try_put(arena, a, false, &t), "arena full (%llu bytes more)",
            (unsigned long long)a->nbytes);
  return t;
}

sly_tensor fx_put_bf16(sly_arena *arena, const fx_array *a) {
  sly_tensor t;
  cr_assert(fx_try_put(arena, a, true, &t), "arena full (%llu bytes more)",
            (unsigned long long)a->nbytes);
  return t;
}

/* Element i of a floating tensor as a double; false for other dtypes. */
static bool fx_float_at(sly_dtype dt, const void *data, uint64_t i,
                        double *v) {
  switch (dt) {
  case SLY_FLOAT32:
    *v = ((const float *)data)[i];
    return true;
  case SLY_FLOAT64:
    *v = ((const double *)data)[i];
    return true;
  case SLY_BFLOAT16:
    *v = npy_f32_from_bf16(((const uint16_t *)data)[i]);
    return true;
  default:
    return false;
  }
}

static bool fx_is_float(sly_dtype dt) {
  return dt == SLY_FLOAT32 || dt == SLY_FLOAT64 || dt == SLY_BFLOAT16;
}

static uint64_t fx_count(uint32_t ndim, const uint64_t *shape) {
  uint64_t n = 1;
  for (uint32_t k = 0; k < ndim; k++)
    n *= shape[k];
  return n;
}

bool fx_try_match(const sly_tensor *out, const fx_array *ref, double tol,
                  char *why, size_t why_len) {
  if (!fx_is_float(out->dtype) || !fx_is_float(ref->dtype)) {
    snprintf(why, why_len, "dtype %s against a reference of %s",
             sly_dtype_name(out->dtype), sly_dtype_name(ref->dtype));
    return false;
  }
  bool same = out->ndim == ref->ndim;
  for (uint32_t k = 0; same && k < out->ndim; k++)
    same = out->shape[k] == ref->shape[k];
  if (!same) {
    snprintf(why, why_len, "shape has %u dims [%llu, ...], reference %u [%llu, ...]",
             out->ndim, (unsigned long long)(out->ndim ? out->shape[0] : 0),
             ref->ndim, (unsigned long long)(ref->ndim ? ref->shape[0] : 0));
    return false;
  }
  uint64_t n = fx_count(ref->ndim, ref->shape);
  double max_diff = 0, max_ref = 0;
  uint64_t worst = 0;
  for (uint64_t i = 0; i < n; i++) {
    double a, b;
    fx_float_at(out->dtype, out->data, i, &a);
    fx_float_at(ref->dtype, ref->data, i, &b);
    double d = fabs(a - b);
    if (!(d <= max_diff)) { /* also catches NaN */
      max_diff = isnan(d) ? INFINITY : d;
      worst = i;
    }
    if (fabs(b) > max_ref)
      max_ref = fabs(b);
  }
  double rel = max_ref > 0 ? max_diff / max_ref : max_diff;
  if (!(rel <= tol)) {
    snprintf(why, why_len,
             "relative error %.3g > %.3g (element %llu differs by %.3g, "
             "largest |reference| %.3g)",
             rel, tol, (unsigned long long)worst, max_diff, max_ref);
    return false;
  }
  return true;
}

void fx_assert_match(const sly_tensor *out, const fx_array *ref, double tol,
                     const char *what) {
  char why[256];
  cr_assert(out != NULL, "%s: no such output", what);
  cr_assert(fx_try_match(out, ref, tol, why, sizeof why), "%s: %s", what, why);
}

void fx_assert_same(const sly_tensor *out, const sly_tensor *ref,
                    const char *what) {
  cr_assert(out != NULL && ref != NULL, "%s: missing tensor", what);
  cr_assert_eq(out->dtype, ref->dtype, "%s: dtype %s, want %s", what,
               sly_dtype_name(out->dtype), sly_dtype_name(ref->dtype));
  cr_assert_eq(out->ndim, ref->ndim, "%s: %u dims, want %u", what, out->ndim,
               ref->ndim);
  for (uint32_t k = 0; k < out->ndim; k++)
    cr_assert_eq(out->shape[k], ref->shape[k], "%s: shape[%u] %llu, want %llu",
                 what, k, (unsigned long long)out->shape[k],
                 (unsigned long long)ref->shape[k]);
  cr_assert(memcmp(out->data, ref->data, sly_tensor_nbytes(ref)) == 0,
            "%s: bytes differ", what);
}

sly_tensor fx_put_pattern(sly_arena *arena, uint32_t ndim,
                          const uint64_t *shape) {
  sly_tensor t = {.dtype = SLY_FLOAT32, .ndim = ndim};
  memcpy(t.shape, shape, ndim * sizeof *shape);
  uint64_t n = fx_count(ndim, shape);
  float *p = sly_arena_alloc(arena, (size_t)(n * 4), FX_ALIGN);
  cr_assert(p, "arena full (%llu bytes more)", (unsigned long long)(n * 4));
  for (uint64_t i = 0; i < n; i++)
    p[i] = (float)sin((double)i * 0.01);
  t.data = p;
  return t;
}

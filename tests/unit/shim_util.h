/* shim_util.h — helpers shared by the torch shim's tests (tests/unit/).
 *
 * Host tensors, safetensors files read and written in C, module creation
 * that fails the test (or expects a given failure), forwards, and relative
 * error. Each test file defines `err`, `tmp` and `releases`, then includes
 * this header.
 */
#ifndef TESTS_UNIT_SHIM_UTIL_H
#define TESTS_UNIT_SHIM_UTIL_H

#include <criterion/criterion.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "safetensors.h"
#include "shim_testing.h"
#include "torch_shim.h"

extern char err[SHIM_ERROR_MAX];
extern char tmp[64];
extern int releases;

/* gen_shim.py's output, relative to the repository root. */
#define FIX "tests/fixtures/shim"

/* Each test gets a fresh folder in `tmp` for the files it writes. */
static inline void shim_setup(void) {
  strcpy(tmp, "/tmp/slyced-shim-XXXXXX");
  cr_assert_not_null(mkdtemp(tmp));
}

static inline void shim_teardown(void) {
  char cmd[128];
  snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmp);
  cr_assert_eq(system(cmd), 0);
}

/* Criterion runs no .fini after a skip: the folder goes first. */
#define SHIM_SKIP(why)                                                         \
  do {                                                                         \
    shim_teardown();                                                           \
    cr_skip_test(why);                                                         \
  } while (0)

/* A host tensor: what the tests feed in and read back. */
typedef struct {
  proto_dtype dtype;
  uint32_t ndim;
  uint64_t shape[PROTO_MAX_DIMS];
  void *data;
  uint64_t nbytes;
} tensor;

/* A zeroed tensor of the given dims. */
static inline tensor tensor_new(proto_dtype d, uint32_t ndim,
                                const uint64_t *shape) {
  tensor t = {.dtype = d, .ndim = ndim};
  t.nbytes = proto_dtype_size(d);
  for (uint32_t i = 0; i < ndim; i++) {
    t.shape[i] = shape[i];
    t.nbytes *= shape[i];
  }
  t.data = calloc(1, t.nbytes ? t.nbytes : 1);
  cr_assert_not_null(t.data);
  return t;
}
#define TENSOR(d, ...)                                                         \
  tensor_new(d, sizeof((uint64_t[]){__VA_ARGS__}) / sizeof(uint64_t),          \
             (uint64_t[]){__VA_ARGS__})

static inline void fill_float(tensor *t, float start, float step) {
  float *p = t->data;
  for (uint64_t i = 0; i < t->nbytes / 4; i++)
    p[i] = start + step * (float)i;
}

/* Reads tensor `name` of a safetensors file. */
static inline tensor st_read(const char *path, const char *name) {
  FILE *f = fopen(path, "rb");
  cr_assert_not_null(f, "%s", path);
  fseek(f, 0, SEEK_END);
  long size = ftell(f);
  fseek(f, 0, SEEK_SET);
  uint8_t *buf = malloc((size_t)size);
  cr_assert_eq(fread(buf, 1, (size_t)size, f), (size_t)size);
  fclose(f);
  char e[ST_ERROR_MAX];
  uint64_t hl;
  st_header h;
  cr_assert_eq(st_header_len(buf, (uint64_t)size, &hl, e), 0, "%s", e);
  cr_assert_eq(st_header_parse((char *)buf + 8, hl, (uint64_t)size, &h, e), 0,
               "%s: %s", path, e);
  const st_tensor *s = st_header_find(&h, name);
  cr_assert_not_null(s, "%s has no %s", path, name);
  tensor t = {.dtype = s->dtype, .ndim = s->ndim, .nbytes = s->end - s->begin};
  memcpy(t.shape, s->shape, sizeof(t.shape));
  t.data = malloc(t.nbytes ? t.nbytes : 1);
  memcpy(t.data, buf + h.data_offset + s->begin, t.nbytes);
  st_header_free(&h);
  free(buf);
  return t;
}

/* Writes a safetensors file of float32 tensors named names[i]. */
static inline void st_write(const char *path, size_t n,
                            const char *const *names, const tensor *ts) {
  char json[4096];
  size_t len = 0;
  uint64_t off = 0;
  len += (size_t)snprintf(json + len, sizeof(json) - len, "{");
  for (size_t i = 0; i < n; i++) {
    len += (size_t)snprintf(json + len, sizeof(json) - len,
                            "%s\"%s\":{\"dtype\":\"%s\",\"shape\":[", i ? "," : "",
                            names[i], st_dtype_name(ts[i].dtype));
    for (uint32_t d = 0; d < ts[i].ndim; d++)
      len += (size_t)snprintf(json + len, sizeof(json) - len, "%s%llu",
                              d ? "," : "", (unsigned long long)ts[i].shape[d]);
    len += (size_t)snprintf(json + len, sizeof(json) - len,
                            "],\"data_offsets\":[%llu,%llu]}",
                            (unsigned long long)off,
                            (unsigned long long)(off + ts[i].nbytes));
    off += ts[i].nbytes;
  }
  len += (size_t)snprintf(json + len, sizeof(json) - len, "}");
  FILE *f = fopen(path, "wb");
  cr_assert_not_null(f);
  uint8_t prefix[8];
  for (int i = 0; i < 8; i++)
    prefix[i] = (uint8_t)((uint64_t)len >> (8 * i));
  fwrite(prefix, 1, 8, f);
  fwrite(json, 1, len, f);
  for (size_t i = 0; i < n; i++)
    fwrite(ts[i].data, 1, ts[i].nbytes, f);
  cr_assert_eq(fclose(f), 0);
}

/* Creates a module on the CPU from a JSON config, deferred or not; the test
 * fails unless it works. Relative paths resolve against the fixture folder. */
static inline shim_module *make_from(const char *ctor, const char *json,
                                     bool deferred) {
  cJSON *c = cJSON_Parse(json);
  cr_assert_not_null(c, "bad test JSON %s", json);
  shim_module *m = NULL;
  int r = deferred ? shim_module_create_deferred(ctor, c, FIX, "cpu", &m, err)
                   : shim_module_create(ctor, c, FIX, "cpu", &m, err);
  cJSON_Delete(c);
  cr_assert_eq(r, 0, "%s %s: %s: %s", ctor, json, sly_code_name(r), err);
  cr_assert_not_null(m);
  return m;
}

/* make_from, not deferred, with a printf-style config. */
static inline shim_module *make(const char *ctor, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static inline shim_module *make(const char *ctor, const char *fmt, ...) {
  char json[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(json, sizeof(json), fmt, ap);
  va_end(ap);
  return make_from(ctor, json, false);
}

/* Expects creating the module to fail with `code` and a message holding
 * `why`. */
static inline void make_fails(const char *ctor, const char *json,
                              const char *device, int code, const char *why) {
  cJSON *c = cJSON_Parse(json);
  cr_assert_not_null(c, "bad test JSON %s", json);
  shim_module *m = (shim_module *)0x1;
  memset(err, 0, sizeof(err));
  int r = shim_module_create(ctor, c, FIX, device, &m, err);
  cJSON_Delete(c);
  cr_assert_eq(r, code, "%s %s: got %s (%s), want %s", ctor, json,
               sly_code_name(r), err, sly_code_name(code));
  cr_assert_eq(m, (shim_module *)0x1, "output untouched on failure");
  cr_assert_not_null(strstr(err, why), "%s %s: '%s' lacks '%s'", ctor, json,
                     err, why);
  cr_assert_null(strchr(err, '\n'), "one line: %s", err);
}

static inline void count_release(void *ctx) {
  (void)ctx;
  releases++;
}

static inline shim_values *wrap(const tensor *ts, size_t n) {
  shim_input in[PROTO_MAX_TENSORS];
  cr_assert(n <= PROTO_MAX_TENSORS);
  for (size_t i = 0; i < n; i++) {
    in[i] = (shim_input){.dtype = ts[i].dtype, .ndim = ts[i].ndim,
                         .data = ts[i].data, .release = count_release};
    memcpy(in[i].shape, ts[i].shape, sizeof(in[i].shape));
  }
  shim_values *v = NULL;
  cr_assert_eq(shim_values_from_inputs(in, n, &v, err), 0, "%s", err);
  return v;
}

/* Runs a forward and returns its result code; *out set on success. */
static inline int forward(shim_module *m, const tensor *ts, size_t n,
                          shim_values **out) {
  shim_values *in = wrap(ts, n);
  memset(err, 0, sizeof(err));
  int r = shim_forward(m, in, out, err);
  shim_values_free(in);
  return r;
}

static inline tensor output(const shim_values *v, size_t i) {
  tensor t = {0};
  cr_assert_eq(shim_values_describe(v, i, &t.dtype, &t.ndim, t.shape,
                                    &t.nbytes, err), 0, "%s", err);
  t.data = malloc(t.nbytes ? t.nbytes : 1);
  cr_assert_eq(shim_values_copy_out(v, i, t.data, err), 0, "%s", err);
  return t;
}

/* The one output of a forward that must work. */
static inline tensor run1(shim_module *m, const tensor *ts, size_t n) {
  shim_values *out = NULL;
  int r = forward(m, ts, n, &out);
  cr_assert_eq(r, 0, "%s: %s", sly_code_name(r), err);
  cr_assert_eq(shim_values_count(out), 1);
  tensor t = output(out, 0);
  shim_values_free(out);
  return t;
}

static inline double value(const tensor *t, uint64_t i) {
  switch (t->dtype) {
  case PROTO_DTYPE_FLOAT32:
    return ((const float *)t->data)[i];
  case PROTO_DTYPE_FLOAT64:
    return ((const double *)t->data)[i];
  case PROTO_DTYPE_BFLOAT16: {
    uint32_t bits = (uint32_t)((const uint16_t *)t->data)[i] << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
  }
  default:
    cr_assert_fail("value() of dtype %s", proto_dtype_name(t->dtype));
  }
  return 0;
}

static inline void same_shape(const tensor *a, const tensor *b) {
  cr_assert_eq(a->dtype, b->dtype, "dtype %s vs %s", proto_dtype_name(a->dtype),
               proto_dtype_name(b->dtype));
  cr_assert_eq(a->ndim, b->ndim);
  for (uint32_t d = 0; d < a->ndim; d++)
    cr_assert_eq(a->shape[d], b->shape[d], "dim %u", d);
}

/* max |a - ref| / max |ref|, after checking dtype and shape. */
static inline double rel_err(const tensor *a, const tensor *ref) {
  same_shape(a, ref);
  uint64_t n = ref->nbytes / proto_dtype_size(ref->dtype);
  cr_assert_eq(a->nbytes, ref->nbytes);
  cr_assert_gt(n, 0, "relative error of an empty tensor");
  double diff = 0, scale = 0;
  for (uint64_t i = 0; i < n; i++) {
    diff = fmax(diff, fabs(value(a, i) - value(ref, i)));
    scale = fmax(scale, fabs(value(ref, i)));
  }
  cr_assert_gt(scale, 0, "relative error against all zeros");
  return diff / scale;
}

static inline void tensor_free(tensor *t) {
  free(t->data);
  t->data = NULL;
}

static inline uint64_t aligned(uint64_t n) {
  return (n + SHIM_BLOB_ALIGN - 1) / SHIM_BLOB_ALIGN * SHIM_BLOB_ALIGN;
}

#endif

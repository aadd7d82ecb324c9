/* slyctl_forward.c — `slyctl forward` (client/, internal to slyctl).
 *
 * Inputs are read straight into one arena sized to hold them all (each at a
 * 64-byte boundary), so the forward itself copies nothing. bfloat16 has no
 * NumPy dtype: outputs in bfloat16 are written as float32 (exact), and
 * `--cast bfloat16` narrows every float32 input to bfloat16 (round to nearest
 * even) for slices that want it.
 */
#include "slyctl_forward.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cJSON.h>

#include "npy.h"

#define ALIGN 64

typedef struct {
  const char *slice, *pipeline;
  const char *in[SLY_MAX_TENSORS];
  int n_in;
  const char **out; /* argv entries */
  int n_out;
  bool cast_bf16;
  bool json_out;
} fwd_args;

static int usage(const char *fmt, const char *arg) {
  fprintf(stderr, "slyctl: forward: ");
  fprintf(stderr, fmt, arg);
  fprintf(stderr,
          "\nusage: slyctl [options] forward " SLY__CTL_FORWARD_ARGS "\n");
  return SLY__CTL_USAGE;
}

/* "--in X" or "--in=X": the value, advancing *i past it; NULL when absent. */
static const char *opt_value(int argc, char **argv, int *i, const char *name) {
  size_t n = strlen(name);
  if (strncmp(argv[*i], name, n) != 0)
    return NULL;
  if (argv[*i][n] == '=')
    return argv[*i] + n + 1;
  if (argv[*i][n] != '\0' || *i + 1 >= argc)
    return NULL;
  return argv[++*i];
}

static bool is_opt(const char *arg, const char *name) {
  size_t n = strlen(name);
  return strncmp(arg, name, n) == 0 && (arg[n] == '\0' || arg[n] == '=');
}

static int parse_args(int argc, char **argv, fwd_args *a) {
  a->out = calloc((size_t)argc + 1, sizeof(*a->out));
  if (a->out == NULL)
    return usage("%s", "out of memory");
  for (int i = 0; i < argc; i++) {
    const char *arg = argv[i], *v;
    if (is_opt(arg, "--in")) {
      if ((v = opt_value(argc, argv, &i, "--in")) == NULL)
        return usage("%s needs a file", "--in");
      if (a->n_in == SLY_MAX_TENSORS)
        return usage("more than %s inputs", "16");
      a->in[a->n_in++] = v;
    } else if (is_opt(arg, "--out")) {
      if ((v = opt_value(argc, argv, &i, "--out")) == NULL)
        return usage("%s needs a file", "--out");
      a->out[a->n_out++] = v;
    } else if (is_opt(arg, "--pipeline")) {
      if ((v = opt_value(argc, argv, &i, "--pipeline")) == NULL)
        return usage("%s needs a name", "--pipeline");
      a->pipeline = v;
    } else if (is_opt(arg, "--cast")) {
      if ((v = opt_value(argc, argv, &i, "--cast")) == NULL ||
          strcmp(v, "bfloat16") != 0)
        return usage("%s takes bfloat16 only", "--cast");
      a->cast_bf16 = true;
    } else if (arg[0] == '-' && arg[1] != '\0') {
      return usage("unknown option '%s'", arg);
    } else if (a->slice != NULL) {
      return usage("a second slice name '%s'", arg);
    } else {
      a->slice = arg;
    }
  }
  if (a->slice != NULL && a->pipeline != NULL)
    return usage("slice %s and --pipeline together", a->slice);
  if (a->slice == NULL && a->pipeline == NULL)
    return usage("%s", "no slice name and no --pipeline");
  /* Every module returns at least one tensor: without a file for it the
   * forward would run for nothing. */
  if (a->n_out == 0)
    return usage("%s", "no --out: give one file for each output");
  return 0;
}

static uint64_t round_up(uint64_t n) { return (n + ALIGN - 1) / ALIGN * ALIGN; }

/* Whether input i is sent as bfloat16 although its file holds float32. */
static bool narrowed(const fwd_args *a, const npy_file *f) {
  return a->cast_bf16 && f->h.dtype == SLY_FLOAT32;
}

/* Reads input i into `dst` (in the arena) as tensor `t`. */
static int load_input(const fwd_args *a, npy_file *f, void *dst, sly_tensor *t,
                      sly_error *err) {
  *t = (sly_tensor){.dtype = f->h.dtype, .ndim = f->h.ndim, .data = dst};
  memcpy(t->shape, f->h.shape, sizeof(t->shape));
  if (!narrowed(a, f))
    return npy_read_into(f, dst, err);
  float *wide = malloc(f->h.nbytes > 0 ? f->h.nbytes : 1);
  if (wide == NULL) {
    snprintf(err->message, sizeof(err->message), "out of memory");
    return err->code = SLY_E_NO_MEMORY;
  }
  int rc = npy_read_into(f, wide, err);
  uint16_t *narrow = dst;
  for (uint64_t i = 0; rc == 0 && i < f->h.nbytes / 4; i++)
    narrow[i] = npy_bf16_from_f32(wide[i]);
  free(wide);
  t->dtype = SLY_BFLOAT16;
  return rc;
}

/* Writes output t to `path`; bfloat16 widens to float32. */
static int save_output(const char *path, const sly_tensor *t, sly_error *err) {
  if (t->dtype != SLY_BFLOAT16)
    return npy_write(path, t->dtype, t->ndim, t->shape, t->data, err);
  uint64_t n = sly_tensor_nbytes(t) / 2;
  float *wide = malloc(n > 0 ? n * sizeof(float) : 1);
  if (wide == NULL) {
    snprintf(err->message, sizeof(err->message), "out of memory");
    return err->code = SLY_E_NO_MEMORY;
  }
  for (uint64_t i = 0; i < n; i++)
    wide[i] = npy_f32_from_bf16(((const uint16_t *)t->data)[i]);
  int rc = npy_write(path, SLY_FLOAT32, t->ndim, t->shape, wide, err);
  free(wide);
  return rc;
}

static void print_shape(const sly_tensor *t) {
  printf("[");
  for (uint32_t k = 0; k < t->ndim; k++)
    printf("%s%llu", k > 0 ? ", " : "", (unsigned long long)t->shape[k]);
  printf("]");
}

static int print_summary(const fwd_args *a, const sly_result *r) {
  sly_timing tm = sly_result_timing(r);
  size_t n = sly_result_count(r);
  if (!a->json_out) {
    for (size_t i = 0; i < n; i++) {
      const sly_tensor *t = sly_result_output(r, i);
      printf("output %zu  %s ", i, sly_dtype_name(t->dtype));
      print_shape(t);
      printf(" -> %s\n", a->out[i]);
    }
    printf("timing    queue %llu us, load %llu us, compute %llu us, total "
           "%llu us\n",
           (unsigned long long)tm.queue_us, (unsigned long long)tm.load_us,
           (unsigned long long)tm.compute_us, (unsigned long long)tm.total_us);
    return 0;
  }
  cJSON *j = cJSON_CreateObject();
  cJSON_AddStringToObject(j, a->slice ? "slice" : "pipeline",
                          a->slice ? a->slice : a->pipeline);
  cJSON *outs = cJSON_AddArrayToObject(j, "outputs");
  for (size_t i = 0; i < n; i++) {
    const sly_tensor *t = sly_result_output(r, i);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "dtype", sly_dtype_name(t->dtype));
    cJSON *shape = cJSON_AddArrayToObject(o, "shape");
    for (uint32_t k = 0; k < t->ndim; k++)
      cJSON_AddItemToArray(shape, cJSON_CreateNumber((double)t->shape[k]));
    cJSON_AddStringToObject(o, "file", a->out[i]);
    cJSON_AddItemToArray(outs, o);
  }
  cJSON_AddNumberToObject(j, "lease", (double)sly_result_lease(r));
  cJSON *tj = cJSON_AddObjectToObject(j, "timing");
  cJSON_AddNumberToObject(tj, "queue_us", (double)tm.queue_us);
  cJSON_AddNumberToObject(tj, "load_us", (double)tm.load_us);
  cJSON_AddNumberToObject(tj, "compute_us", (double)tm.compute_us);
  cJSON_AddNumberToObject(tj, "total_us", (double)tm.total_us);
  char *s = cJSON_Print(j);
  cJSON_Delete(j);
  if (s == NULL)
    return SLY_E_NO_MEMORY;
  printf("%s\n", s);
  free(s);
  return 0;
}

/* The arena: every input at a 64-byte boundary, the size in whole pages. */
static uint64_t arena_bytes(const fwd_args *a, const npy_file *files) {
  uint64_t total = 0;
  for (int i = 0; i < a->n_in; i++) {
    uint64_t n = files[i].h.nbytes;
    total += round_up(narrowed(a, &files[i]) ? n / 2 : n);
  }
  return (total + 4095) / 4096 * 4096 + (total == 0 ? 4096 : 0);
}

static int run(sly_conn *c, const fwd_args *a, npy_file *files,
               sly_error *err) {
  int rc;
  for (int i = 0; i < a->n_in; i++)
    if ((rc = npy_open(a->in[i], &files[i], err)) < 0)
      return rc;
  sly_arena *arena = NULL;
  sly_result *r = NULL;
  sly_tensor in[SLY_MAX_TENSORS];
  /* Each input is at most 2^53-1 bytes, so 16 of them cannot overflow. */
  uint64_t bytes = arena_bytes(a, files);
  if (bytes > SIZE_MAX) {
    snprintf(err->message, sizeof(err->message), "inputs too large");
    return err->code = SLY_E_INVALID_ARG;
  }
  if (a->n_in > 0 && (rc = sly_arena_create(c, (size_t)bytes, &arena, err)) < 0)
    return rc;
  for (int i = 0; i < a->n_in; i++) {
    uint64_t n =
        narrowed(a, &files[i]) ? files[i].h.nbytes / 2 : files[i].h.nbytes;
    /* Cannot fail: the arena was sized for exactly these. */
    void *dst = sly_arena_alloc(arena, (size_t)n, ALIGN);
    if ((rc = load_input(a, &files[i], dst, &in[i], err)) < 0)
      goto done;
  }
  sly_forward_opts o = {.slice = a->slice, .pipeline = a->pipeline};
  if ((rc = sly_forward_ex(c, &o, in, (size_t)a->n_in, &r, err)) < 0)
    goto done;
  size_t n = sly_result_count(r);
  if (n != (size_t)a->n_out) {
    snprintf(err->message, sizeof(err->message),
             "%s %s returned %zu output%s but %d --out %s given",
             a->slice ? "slice" : "pipeline", a->slice ? a->slice : a->pipeline,
             n, n == 1 ? "" : "s", a->n_out, a->n_out == 1 ? "was" : "were");
    rc = err->code = SLY_E_INVALID_ARG;
    goto done;
  }
  for (size_t i = 0; i < n; i++)
    if ((rc = save_output(a->out[i], sly_result_output(r, i), err)) < 0)
      goto done;
  if ((rc = print_summary(a, r)) < 0) {
    snprintf(err->message, sizeof(err->message), "out of memory");
    err->code = rc;
  }
done:
  /* The lease and the arena go with the connection, which slyctl closes
   * next: no round trip is spent on them. */
  sly_result_free(r);
  return rc;
}

int sly__ctl_forward_check(int argc, char **argv) {
  fwd_args a = {0};
  int rc = parse_args(argc, argv, &a);
  free(a.out);
  return rc;
}

int sly__ctl_forward(sly_conn *c, bool json, int argc, char **argv,
                     sly_error *err) {
  fwd_args a = {.json_out = json};
  npy_file files[SLY_MAX_TENSORS];
  for (int i = 0; i < SLY_MAX_TENSORS; i++)
    files[i].fd = -1;
  int rc = parse_args(argc, argv, &a);
  if (rc == 0)
    rc = run(c, &a, files, err);
  for (int i = 0; i < SLY_MAX_TENSORS; i++)
    npy_close(&files[i]);
  free(a.out);
  return rc;
}

/* shm.c — bench 2: a 64 MiB tensor in and out through shared memory, on a
 * slice that doubles its input (ts_double.pt), against the floor of one
 * memcpy in, the same slice run in this process, and one memcpy out.
 *
 * Both sides start from the same 64 MiB in private memory and end with the
 * doubled tensor where the caller can read it. Through slyced: memcpy into
 * the client's arena, then sly_forward (the daemon reads the input in place
 * and copies the output once into shared memory: the client's arena with
 * `out`, or a server region without). In process: memcpy into a buffer, the
 * shim's forward on it (daemon/torch_shim.h, what the executor calls), and
 * shim_values_copy_out into another buffer. Every buffer is touched before
 * timing; libtorch allocates its output on both sides alike.
 */
#include "bench.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cJSON.h>

#include "torch_shim.h"

#define SHM_BYTES (64u << 20)
#define SHM_FLOATS (SHM_BYTES / sizeof(float))

typedef struct {
  double in, fwd, out, total;
} shm_split;

/* The doubled tensor is where it should be: a few places checked, outside
 * the timed part. */
static void shm_check(const float *src, const float *y, const char *who) {
  static const size_t at[] = {0, 1, 4095, SHM_FLOATS / 2, SHM_FLOATS - 1};
  for (size_t i = 0; i < sizeof(at) / sizeof(at[0]); i++)
    if (y[at[i]] != 2.0f * src[at[i]])
      bk_die("%s: output[%zu] is %g, expected %g", who, at[i],
             (double)y[at[i]], 2.0 * (double)src[at[i]]);
}

static shim_module *shm_module(void) {
  char path[BK_PATH_MAX + 64], err[SHIM_ERROR_MAX];
  snprintf(path, sizeof(path), "%s/tests/fixtures/ts_double.pt",
           bk_env_now.source_dir);
  cJSON *cfg = cJSON_CreateObject();
  if (cfg == NULL || cJSON_AddStringToObject(cfg, "path", path) == NULL)
    bk_die("out of memory");
  shim_module *m = NULL;
  int r = shim_module_create("torchscript", cfg, bk_env_now.source_dir, "cpu",
                             &m, err);
  cJSON_Delete(cfg);
  if (r < 0)
    bk_die("shim_module_create %s: %s", path, err);
  return m;
}

/* The floor: what the executor does, minus everything around it. */
static shm_split shm_in_process(shim_module *m, const float *src, float *a,
                                float *b) {
  char err[SHIM_ERROR_MAX];
  shm_split s;
  double t0 = bk_now();
  memcpy(a, src, SHM_BYTES);
  double t1 = bk_now();
  shim_input in = {.dtype = PROTO_DTYPE_FLOAT32, .ndim = 1, .shape = {SHM_FLOATS},
                   .data = a};
  shim_values *x = NULL, *y = NULL;
  if (shim_values_from_inputs(&in, 1, &x, err) < 0 ||
      shim_forward(m, x, &y, err) < 0)
    bk_die("in-process forward: %s", err);
  double t2 = bk_now();
  proto_dtype dt;
  uint32_t nd;
  uint64_t shape[PROTO_MAX_DIMS], nbytes;
  if (shim_values_describe(y, 0, &dt, &nd, shape, &nbytes, err) < 0 ||
      nbytes != SHM_BYTES || shim_values_copy_out(y, 0, b, err) < 0)
    bk_die("in-process output: %s", err);
  double t3 = bk_now();
  shim_values_free(y);
  shim_values_free(x);
  s.in = t1 - t0;
  s.fwd = t2 - t1;
  s.out = t3 - t2;
  s.total = t3 - t0;
  shm_check(src, b, "in process");
  return s;
}

/* Through slyced; `out` NULL: outputs in a server region. Returns the time
 * and the daemon's compute_us in *compute. */
static double shm_slyced(sly_conn *c, float *in_shm, float *out,
                         const float *src, double *compute) {
  sly_tensor in = {.dtype = SLY_FLOAT32, .ndim = 1, .shape = {SHM_FLOATS},
                   .data = in_shm};
  sly_forward_opts o = {.slice = "dbl", .out = out,
                        .out_bytes = out ? SHM_BYTES : 0};
  sly_result *r;
  sly_error err;
  double t0 = bk_now();
  memcpy(in_shm, src, SHM_BYTES);
  int rc = sly_forward_ex(c, &o, &in, 1, &r, &err);
  double t = bk_now() - t0;
  if (rc < 0)
    bk_die("forward 64 MiB: %s: %s", sly_code_name(rc), err.message);
  const sly_tensor *y = sly_result_output(r, 0);
  if (y == NULL || sly_tensor_nbytes(y) != SHM_BYTES)
    bk_die("forward 64 MiB: wrong output");
  shm_check(src, y->data, out ? "slyced (out)" : "slyced (server region)");
  *compute = (double)sly_result_timing(r).compute_us * 1e-6;
  sly_result_free(r);
  return t;
}

static void shm_row(const char *what, double t, double floor) {
  char m[40], f[40];
  snprintf(m, sizeof(m), "%.2f ms", t * 1e3);
  snprintf(f, sizeof(f), "%.2f ms", floor * 1e3);
  bk_row("2", what, m, f, t / floor, BK_AT_MOST, 1.5);
}

void bench_shm(void) {
  const int reps = bk_env_now.quick ? 3 : 9;
  printf("== 2. Large tensors: 64 MiB x2 through shared memory vs memcpy in "
         "+ in-process forward + memcpy out\n");
  bk_daemon d;
  bk_prepare(&d);
  char extra[512];
  snprintf(extra, sizeof(extra),
           "\"device\": \"cpu\", \"slices\": [{\"name\": \"dbl\", "
           "\"constructor\": \"torchscript\", \"config\": {\"path\": "
           "\"%s/tests/fixtures/ts_double.pt\"}}]",
           bk_env_now.source_dir);
  bk_launch(&d, extra);
  sly_conn *c = bk_connect(&d);
  sly_arena *arena;
  sly_error err;
  int rc = sly_arena_create(c, 2 * SHM_BYTES, &arena, &err);
  if (rc < 0)
    bk_die("arena: %s: %s", sly_code_name(rc), err.message);
  float *in_shm = sly_arena_alloc(arena, SHM_BYTES, 4096);
  float *out_shm = sly_arena_alloc(arena, SHM_BYTES, 4096);
  memset(in_shm, 0, SHM_BYTES);
  memset(out_shm, 0, SHM_BYTES);

  float *src = bk_alloc_touched(SHM_BYTES);
  float *a = bk_alloc_touched(SHM_BYTES), *b = bk_alloc_touched(SHM_BYTES);
  for (size_t i = 0; i < SHM_FLOATS; i++)
    src[i] = (float)(i % 4093) - 2000.0f;
  shim_module *m = shm_module();

  double compute;
  shm_in_process(m, src, a, b); /* warm-up: first runs allocate and plan */
  shm_slyced(c, in_shm, out_shm, src, &compute);
  shm_slyced(c, in_shm, NULL, src, &compute);

  double t_out[16], t_srv[16], t_floor[16], t_in[16], t_fwd[16], t_cp[16],
      t_dc[16];
  for (int i = 0; i < reps; i++) {
    shm_split s = shm_in_process(m, src, a, b);
    t_floor[i] = s.total, t_in[i] = s.in, t_fwd[i] = s.fwd, t_cp[i] = s.out;
    t_out[i] = shm_slyced(c, in_shm, out_shm, src, &t_dc[i]);
    t_srv[i] = shm_slyced(c, in_shm, NULL, src, &compute);
  }
  double floor = bk_median(t_floor, (size_t)reps);
  double via_out = bk_median(t_out, (size_t)reps);
  double via_srv = bk_median(t_srv, (size_t)reps);
  printf("   floor, median of %d: memcpy in %.2f ms + forward %.2f ms + "
         "memcpy out %.2f ms = %.2f ms\n",
         reps, bk_median(t_in, (size_t)reps) * 1e3,
         bk_median(t_fwd, (size_t)reps) * 1e3,
         bk_median(t_cp, (size_t)reps) * 1e3, floor * 1e3);
  printf("   slyced, median of %d: out in the client's arena %.2f ms (the "
         "daemon's compute_us %.2f ms), out in a server region %.2f ms\n",
         reps, via_out * 1e3, bk_median(t_dc, (size_t)reps) * 1e3,
         via_srv * 1e3);
  shm_row("64 MiB x2, out in client arena", via_out, floor);
  shm_row("64 MiB x2, out in server region", via_srv, floor);

  shim_module_free(m);
  free(src);
  free(a);
  free(b);
  sly_arena_destroy(arena);
  sly_close(c);
  bk_stop(&d);
}

/* sim.c — bench 4: streaming a pipeline through the `sim` device at a set
 * copy bandwidth, against the copy floor that bandwidth implies, and the
 * bytes moved per forward with limit_gpu holding half the pipeline, against
 * plain LRU replayed on the same access trace.
 *
 * Eight `linear` slices of 1024 x 1024 float32 (4 MiB each, no bias), all
 * in host memory, with a sim GPU tier of 18 MiB: room for four, not five.
 * The sim device really copies each blob and then waits out what
 * sim_copy_gbps implies, so a forward can take no less than the bytes it
 * moved (stats: transfers.cpu_to_gpu) over that bandwidth; with copies that
 * overlap compute it need take no more. The input is a batch of rows sized
 * so that computing a slice takes a fair part of copying one (the bench
 * prints both), which is what overlap has to hide.
 *
 * Beside the stream: a second client's forward of a small slice pinned on
 * the device, timed while the first client streams the pipeline back to
 * back and then alone (informational). The executor runs it while the
 * pipeline waits for its next copy; it used to wait for the whole pass.
 *
 * LRU: the same pipeline passes replayed against a cache of the same byte
 * budget that evicts the least recently used slice, sparing, as the daemon
 * does, the slice being loaded and the next one of the running pipeline
 * (forward.c marks it needed_next). Both count only the timed passes, after
 * the same warm-up.
 */
#include "bench.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define SIM_SLICES 8
#define SIM_FEATURES 1024
#define SIM_SLICE_BYTES ((uint64_t)SIM_FEATURES * SIM_FEATURES * 4)
#define SIM_GPU_MB 18 /* 4 slices of 4 MiB fit, 5 do not */
/* Well below what the sim's own memcpy into a fresh blob reaches here
 * (about 0.7 GB/s: page faults), so that the wait, not the memcpy, sets
 * the copy time, as the bandwidth says. */
#define SIM_GBPS 0.3
#define SIM_BATCH 32
#define SIM_WARMUP 2

/* Bytes moved in passes [warm, warm + timed) by LRU with `cap` bytes. */
static uint64_t sim_lru(int warm, int timed, uint64_t cap) {
  uint64_t last_use[SIM_SLICES] = {0};
  bool resident[SIM_SLICES] = {false};
  uint64_t used = 0, tick = 0, moved = 0;
  for (int pass = 0; pass < warm + timed; pass++) {
    for (int s = 0; s < SIM_SLICES; s++) {
      tick++;
      if (!resident[s]) {
        int next = s + 1 < SIM_SLICES ? s + 1 : -1;
        while (used + SIM_SLICE_BYTES > cap) {
          int victim = -1;
          for (int v = 0; v < SIM_SLICES; v++)
            if (resident[v] && v != s && v != next &&
                (victim < 0 || last_use[v] < last_use[victim]))
              victim = v;
          if (victim < 0)
            bk_die("LRU replay: nothing to evict");
          resident[victim] = false;
          used -= SIM_SLICE_BYTES;
        }
        resident[s] = true;
        used += SIM_SLICE_BYTES;
        if (pass >= warm)
          moved += SIM_SLICE_BYTES;
      }
      last_use[s] = tick;
    }
  }
  return moved;
}

static void sim_config(char *out, size_t n) {
  int k = snprintf(out, n,
                   "\"device\": \"sim\", \"gpu_strategy\": \"limit_gpu\", "
                   "\"max_gpu_mem_mb\": %d, \"gpu_reserve_mb\": 0, "
                   "\"sim_copy_gbps\": %g, \"max_cpu_mem_mb\": 1024, "
                   "\"slices\": [",
                   SIM_GPU_MB, SIM_GBPS);
  for (int i = 0; i < SIM_SLICES; i++)
    k += snprintf(out + k, n - (size_t)k,
                  "%s{\"name\": \"s%d\", \"constructor\": \"linear\", "
                  "\"config\": {\"in_features\": %d, \"out_features\": %d, "
                  "\"bias\": false, \"seed\": %d}}",
                  i ? ", " : "", i, SIM_FEATURES, SIM_FEATURES, i + 1);
  k += snprintf(out + k, n - (size_t)k, "], \"pipelines\": {\"sim\": [");
  for (int i = 0; i < SIM_SLICES; i++)
    k += snprintf(out + k, n - (size_t)k, "%s\"s%d\"", i ? ", " : "", i);
  snprintf(out + k, n - (size_t)k, "]}");
}

typedef struct {
  double compute, load; /* the daemon's timing, summed */
} sim_pass;

static void sim_forward(sly_conn *c, const sly_tensor *x, sim_pass *sum) {
  sly_result *r;
  sly_error err;
  int rc = sly_forward_pipeline(c, "sim", x, 1, &r, &err);
  if (rc < 0)
    bk_die("forward on pipeline sim: %s: %s", sly_code_name(rc),
           err.message);
  sly_timing tm = sly_result_timing(r);
  sum->compute += (double)tm.compute_us * 1e-6;
  sum->load += (double)tm.load_us * 1e-6;
  sly_result_free(r);
}

#define SIM_SMALL 64      /* the small slice: 64 x 64 float32 */
#define SIM_SMALL_RUNS 40 /* its forwards timed beside, and alone */

typedef struct {
  const bk_daemon *d;
  atomic_bool stop;
  int passes;
} sim_streamer;

/* Streams the pipeline on its own connection until told to stop. */
static void *sim_stream(void *arg) {
  sim_streamer *st = arg;
  sly_conn *c = bk_connect(st->d);
  sly_arena *a;
  sly_error err;
  if (sly_arena_create(c, 4 << 20, &a, &err) < 0)
    bk_die("arena: %s", err.message);
  size_t n = (size_t)SIM_BATCH * SIM_FEATURES;
  float *xs = sly_arena_alloc(a, n * sizeof(float), 64);
  memset(xs, 0, n * sizeof(float));
  sly_tensor x = {.dtype = SLY_FLOAT32, .ndim = 2,
                  .shape = {SIM_BATCH, SIM_FEATURES}, .data = xs};
  sim_pass ignored = {0};
  while (!atomic_load(&st->stop)) {
    sim_forward(c, &x, &ignored);
    st->passes++;
  }
  sly_arena_destroy(a);
  sly_close(c);
  return NULL;
}

/* The median time of SIM_SMALL_RUNS forwards of "small", 2 ms apart. */
static double small_median(sly_conn *c, const sly_tensor *x) {
  double v[SIM_SMALL_RUNS];
  for (int i = 0; i < SIM_SMALL_RUNS; i++) {
    sly_result *r;
    sly_error err;
    double t0 = bk_now();
    int rc = sly_forward(c, "small", x, 1, &r, &err);
    v[i] = bk_now() - t0;
    if (rc < 0)
      bk_die("forward on small: %s: %s", sly_code_name(rc), err.message);
    sly_result_free(r);
    usleep(2000);
  }
  return bk_median(v, SIM_SMALL_RUNS);
}

/* A small slice's forward from a second client while the pipeline streams,
 * against the same forward alone (the row is informational). */
static void sim_beside(bk_daemon *d, sly_conn *c, sly_arena *a) {
  sly_error err;
  char cfg[128];
  snprintf(cfg, sizeof(cfg),
           "{\"in_features\": %d, \"out_features\": %d, \"seed\": 9}",
           SIM_SMALL, SIM_SMALL);
  if (sly_add_slice(c, "small", "linear", cfg, &err) < 0 ||
      sly_pin(c, "small", "gpu", &err) < 0)
    bk_die("small slice: %s", err.message);
  float *xs = sly_arena_alloc(a, SIM_SMALL * sizeof(float), 64);
  for (int i = 0; i < SIM_SMALL; i++)
    xs[i] = (float)i * 0.01f;
  sly_tensor x = {.dtype = SLY_FLOAT32, .ndim = 2, .shape = {1, SIM_SMALL},
                  .data = xs};
  small_median(c, &x); /* warm-up */
  sim_streamer st = {.d = d};
  pthread_t th;
  if (pthread_create(&th, NULL, sim_stream, &st) != 0)
    bk_die("pthread_create");
  usleep(200000);
  double i0 = bk_stat(c, "interleaved");
  double beside = small_median(c, &x);
  double run = bk_stat(c, "interleaved") - i0;
  atomic_store(&st.stop, true);
  pthread_join(th, NULL);
  double alone = small_median(c, &x);
  printf("   a second client's forward of a %dx%d slice pinned on the "
         "device: median %.2f ms beside the stream (%d passes; %.0f of "
         "them run while the pipeline waited), %.2f ms alone\n",
         SIM_SMALL, SIM_SMALL, beside * 1e3, st.passes, run, alone * 1e3);
  char m[40], f[40];
  snprintf(m, sizeof(m), "%.2f ms", beside * 1e3);
  snprintf(f, sizeof(f), "%.2f ms alone", alone * 1e3);
  bk_row("4", "small forward beside the stream", m, f, beside / alone,
         BK_NONE, 0);
}

void bench_sim(void) {
  const int timed = bk_env_now.quick ? 2 : 6;
  printf("== 4. sim device streaming at %.2f GB/s vs its copy floor; bytes "
         "moved with limit_gpu holding half the pipeline vs LRU\n",
         SIM_GBPS);
  bk_daemon d;
  bk_prepare(&d);
  char extra[4096];
  sim_config(extra, sizeof(extra));
  bk_launch(&d, extra);
  sly_conn *c = bk_connect(&d);
  sly_arena *a;
  sly_error err;
  int rc = sly_arena_create(c, 4 << 20, &a, &err);
  if (rc < 0)
    bk_die("arena: %s: %s", sly_code_name(rc), err.message);
  size_t n = (size_t)SIM_BATCH * SIM_FEATURES;
  float *xs = sly_arena_alloc(a, n * sizeof(float), 64);
  for (size_t i = 0; i < n; i++)
    xs[i] = (float)((int)(i % 11) - 5) * 0.01f;
  sly_tensor x = {.dtype = SLY_FLOAT32, .ndim = 2,
                  .shape = {SIM_BATCH, SIM_FEATURES}, .data = xs};

  sim_pass sum = {0}, warm = {0};
  for (int i = 0; i < SIM_WARMUP; i++)
    sim_forward(c, &x, &warm);
  /* One stretch of back-to-back forwards, as a client streaming would run
   * them: copies the daemon starts between two forwards (prefetch) count
   * in the time as in the bytes. */
  double b0 = bk_stat(c, "transfers.cpu_to_gpu.bytes");
  double s0 = bk_stat(c, "transfers.cpu_to_gpu.seconds");
  double t0 = bk_now();
  for (int i = 0; i < timed; i++)
    sim_forward(c, &x, &sum);
  double wall = bk_now() - t0;
  double bytes = bk_stat(c, "transfers.cpu_to_gpu.bytes") - b0;
  double copy_gbps =
      bytes / (bk_stat(c, "transfers.cpu_to_gpu.seconds") - s0) / 1e9;
  double floor = bytes / (SIM_GBPS * 1e9);
  double per_fwd = bytes / timed / BK_MIB;
  double lru = (double)sim_lru(SIM_WARMUP, timed,
                               (uint64_t)SIM_GPU_MB << 20) /
               timed / BK_MIB;
  printf("   %d forwards after %d of warm-up: %.1f ms each, of which load "
         "%.1f ms and compute %.1f ms; moved %.0f MiB each (copy floor "
         "%.1f ms)\n",
         timed, SIM_WARMUP, wall / timed * 1e3, sum.load / timed * 1e3,
         sum.compute / timed * 1e3, per_fwd, floor / timed * 1e3);
  printf("   the daemon's copies ran at %.3f GB/s (stats), against %.3f "
         "GB/s set\n",
         copy_gbps, SIM_GBPS);
  bk_print_prefetch(c);
  printf("   LRU on the same trace and budget: %.0f MiB per forward\n", lru);
  char m[40], f[40];
  if (bytes > 0) {
    snprintf(m, sizeof(m), "%.1f ms/fwd", wall / timed * 1e3);
    snprintf(f, sizeof(f), "%.1f ms copy", floor / timed * 1e3);
    bk_row("4", "sim stream vs copy floor", m, f, wall / floor,
           BK_AT_MOST, 1.1);
  } else {
    bk_row("4", "sim stream: nothing moved (no floor)", "-", "-", 0, BK_NONE,
           0);
  }
  snprintf(m, sizeof(m), "%.0f MiB/fwd", per_fwd);
  snprintf(f, sizeof(f), "%.0f MiB LRU", lru);
  bk_row("4", "bytes moved, limit_gpu half vs LRU", m, f,
         lru > 0 ? per_fwd / lru : 0, BK_NONE, 0);
  sim_beside(&d, c, a);
  sly_arena_destroy(a);
  sly_close(c);
  bk_stop(&d);
}

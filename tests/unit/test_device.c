/* test_device.c — the GPU tier's devices: the `sim` stand-in (budget,
 * alignment, poison, copies that take the time the bandwidth implies,
 * high-water mark, injected failures, misuse that stops the process) and
 * `cuda:N` (names, and failing with a reason where there is no GPU; the real
 * GPU tests skip themselves here and run where one is).
 */
#include <criterion/criterion.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifdef SLY_HAVE_CUDA
#include <cuda_runtime_api.h>
#endif

#include "device.h"
#include "log.h"
#include "slyce.h"

#define MiB (UINT64_C(1) << 20)

static char err[DEVICE_ERROR_MAX];

static device *open_sim(uint64_t budget, double gbps) {
  device *d = NULL;
  int r = device_open("sim", budget, gbps, &d, err);
  cr_assert_eq(r, 0, "%s", err);
  cr_assert_not_null(d);
  return d;
}

static void *alloc_ok(device *d, uint64_t bytes) {
  void *p = NULL;
  int r = device_alloc(d, bytes, &p, err);
  cr_assert_eq(r, 0, "alloc %llu: %s", (unsigned long long)bytes, err);
  cr_assert_not_null(p);
  return p;
}

static device_stats stats_of(device *d) {
  device_stats s;
  device_get_stats(d, &s);
  return s;
}

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static bool contains(const char *hay, const char *needle) {
  return strstr(hay, needle) != NULL;
}

/* ---- sim ---- */

Test(sim, binds_modules_to_cpu_and_reports_its_budget) {
  device *d = open_sim(8 * MiB, 0);
  cr_assert(device_is_sim(d));
  cr_assert_str_eq(device_bind_name(d), "cpu");
  device_stats s = stats_of(d);
  cr_assert_eq(s.budget, 8 * MiB);
  cr_assert_eq(s.used, 0);
  cr_assert_eq(s.high_water, 0);
  cr_assert_eq(s.total_bytes, 8 * MiB);
  cr_assert_eq(s.free_bytes, 8 * MiB);
  device_close(d);
}

Test(sim, allocates_aligned_writable_memory_up_to_exactly_the_budget) {
  device *d = open_sim(MiB, 0);
  uint8_t *a = alloc_ok(d, MiB / 2);
  uint8_t *b = alloc_ok(d, MiB / 2);
  cr_assert_eq((uintptr_t)a % 4096, 0);
  cr_assert_eq((uintptr_t)b % 4096, 0);
  /* Every byte is the caller's (AddressSanitizer checks the ends). */
  memset(a, 1, MiB / 2);
  memset(b, 2, MiB / 2);
  cr_assert_eq(stats_of(d).used, MiB);
  cr_assert_eq(stats_of(d).free_bytes, 0);
  device_free(d, a, MiB / 2);
  device_free(d, b, MiB / 2);
  device_close(d);
}

Test(sim, an_alloc_beyond_the_budget_is_no_memory_with_the_numbers) {
  device *d = open_sim(MiB, 0);
  void *a = alloc_ok(d, 768 * 1024);
  void *p = (void *)0x1234;
  int r = device_alloc(d, 512 * 1024, &p, err);
  cr_assert_eq(r, SLY_E_NO_MEMORY);
  cr_assert_eq(p, (void *)0x1234, "output untouched on failure");
  cr_assert(contains(err, "524288"), "asked: %s", err);
  cr_assert(contains(err, "786432"), "used: %s", err);
  cr_assert(contains(err, "1048576"), "budget: %s", err);
  cr_assert_eq(stats_of(d).used, 768 * 1024, "a refusal holds nothing");
  device_free(d, a, 768 * 1024);
  device_close(d);
}

Test(sim, a_zero_budget_refuses_everything_but_empty_blobs) {
  device *d = open_sim(0, 0);
  void *p = NULL;
  cr_assert_eq(device_alloc(d, 1, &p, err), SLY_E_NO_MEMORY);
  void *z = alloc_ok(d, 0);
  device_free(d, z, 0);
  device_close(d);
}

Test(sim, free_gives_the_budget_back) {
  device *d = open_sim(MiB, 0);
  for (int i = 0; i < 8; i++) {
    void *p = alloc_ok(d, MiB);
    cr_assert_eq(stats_of(d).used, MiB);
    device_free(d, p, MiB);
    cr_assert_eq(stats_of(d).used, 0);
  }
  device_close(d);
}

Test(sim, empty_blobs_get_distinct_addresses_and_cost_nothing) {
  device *d = open_sim(MiB, 0);
  void *a = alloc_ok(d, 0);
  void *b = alloc_ok(d, 0);
  cr_assert_neq(a, b);
  cr_assert_eq(stats_of(d).used, 0);
  device_free(d, a, 0);
  device_free(d, b, 0);
  device_free(d, NULL, 123); /* NULL is accepted and changes nothing */
  cr_assert_eq(stats_of(d).used, 0);
  device_close(d);
  device_close(NULL);
}

Test(sim, a_freed_blob_is_poisoned) {
  device *d = open_sim(MiB, 0);
  device_sim_keep_freed(d, true);
  const uint64_t n = 5000; /* not a whole number of pages */
  uint8_t *p = alloc_ok(d, n);
  memset(p, 0x11, n);
  device_free(d, p, n);
  cr_assert_eq(stats_of(d).used, 0, "a kept block is not in use");
  for (uint64_t i = 0; i < n; i++)
    cr_assert_eq(p[i], 0xDB, "byte %llu is 0x%02x", (unsigned long long)i,
                 p[i]);
  device_close(d); /* releases the kept block (LeakSanitizer checks) */
}

Test(sim, copy_in_copies_every_byte) {
  device *d = open_sim(4 * MiB, 0);
  const uint64_t n = 3 * MiB + 17;
  uint8_t *src = malloc(n);
  cr_assert_not_null(src);
  for (uint64_t i = 0; i < n; i++)
    src[i] = (uint8_t)(i * 131 + 7);
  uint8_t *dst = alloc_ok(d, n);
  cr_assert_eq(device_copy_in(d, dst, src, n, err), 0, "%s", err);
  cr_assert_eq(memcmp(dst, src, n), 0);
  /* Into the middle of a blob, as chunked reads do. */
  memset(dst, 0, n);
  cr_assert_eq(device_copy_in(d, dst + 4096, src, 8192, err), 0, "%s", err);
  cr_assert_eq(memcmp(dst + 4096, src, 8192), 0);
  cr_assert_eq(dst[4095], 0);
  cr_assert_eq(dst[4096 + 8192], 0);
  cr_assert_eq(device_copy_in(d, dst, src, 0, err), 0, "nothing to copy");
  cr_assert_eq(device_copy_in(d, NULL, src, 1, err), SLY_E_INTERNAL);
  cr_assert(contains(err, "NULL"), "%s", err);
  device_free(d, dst, n);
  device_close(d);
  free(src);
}

/* Times one copy of `n` bytes at `gbps` into a blob whose pages are already
 * touched, so that the figure is the copy and the wait. */
static double timed_copy_ms(double gbps, uint64_t n) {
  device *d = open_sim(n, gbps);
  uint8_t *src = malloc(n);
  cr_assert_not_null(src);
  memset(src, 0x5A, n);
  uint8_t *dst = alloc_ok(d, n);
  memset(dst, 0, n);
  double t0 = now_ms();
  cr_assert_eq(device_copy_in(d, dst, src, n, err), 0, "%s", err);
  double ms = now_ms() - t0;
  cr_assert_eq(memcmp(dst, src, n), 0);
  device_free(d, dst, n);
  device_close(d);
  free(src);
  return ms;
}

Test(sim, a_copy_takes_the_time_the_bandwidth_implies) {
  /* 64 MiB at 1 GB/s: 67.1 ms. */
  double ms = timed_copy_ms(1.0, 64 * MiB);
  cr_assert_geq(ms, 64 * MiB / 1e6, "%.1f ms", ms);
  cr_assert_lt(ms, 200, "%.1f ms", ms);
  /* 16 MiB at 0.25 GB/s: 67.1 ms too. */
  ms = timed_copy_ms(0.25, 16 * MiB);
  cr_assert_geq(ms, 16 * MiB / 0.25e6, "%.1f ms", ms);
  cr_assert_lt(ms, 200, "%.1f ms", ms);
}

/* A batch is one copy engine: its copies take the time the bandwidth
 * implies one after another, and the caller goes on while they run (as it
 * reads the next chunk of a file); device_copy_finish waits out the rest. */
Test(sim, a_batch_of_copies_runs_behind_the_caller) {
  const uint64_t chunk = 4 * MiB, n = 4 * chunk;
  /* 16 MiB at 0.0625 GB/s: 268 ms in all. */
  device *d = open_sim(n, 0.0625);
  uint8_t *src = malloc(n);
  cr_assert_not_null(src);
  for (uint64_t i = 0; i < n; i++)
    src[i] = (uint8_t)(i * 29 + 3);
  uint8_t *dst = alloc_ok(d, n);
  memset(dst, 0, n);
  device_copy_batch b = {0};
  double t0 = now_ms();
  for (uint64_t off = 0; off < n; off += chunk)
    cr_assert_eq(device_copy_start(d, &b, dst + off, src + off, chunk, err), 0,
                 "%s", err);
  double started = now_ms() - t0;
  cr_assert_eq(device_copy_finish(d, &b, err), 0, "%s", err);
  double done = now_ms() - t0;
  cr_assert_lt(started, n / 0.0625e6 / 2, "the starts took %.1f ms", started);
  cr_assert_geq(done, n / 0.0625e6, "%.1f ms", done);
  cr_assert_eq(memcmp(dst, src, n), 0);
  cr_assert_eq(device_copy_finish(d, &b, err), 0, "a second finish: nothing");
  device_free(d, dst, n);
  device_close(d);
  free(src);
}

typedef struct {
  device *d;
  uint8_t *dst;
  const uint8_t *src;
  uint64_t n;
  double ms; /* the copy, start to end */
} copier_arg;

static void *copier(void *arg) {
  copier_arg *c = arg;
  double t0 = now_ms();
  if (device_copy_in(c->d, c->dst, c->src, c->n, err) == 0)
    c->ms = now_ms() - t0;
  return NULL;
}

/* The device has one copy engine, as a GPU has one copy stream: two threads
 * that copy at once take turns, and the second is done only after both
 * copies' time (a slice the executor moves beside the mover's does not
 * come in any sooner than behind it). */
Test(sim, copies_from_two_threads_share_the_bandwidth) {
  const uint64_t n = 8 * MiB;
  /* 8 MiB at 0.0625 GB/s: 134 ms each, 268 ms for both. */
  device *d = open_sim(2 * n, 0.0625);
  uint8_t *src = malloc(n);
  cr_assert_not_null(src);
  memset(src, 0x3C, n);
  copier_arg c[2];
  pthread_t t[2];
  double t0 = now_ms();
  for (int i = 0; i < 2; i++) {
    c[i] = (copier_arg){.d = d, .dst = alloc_ok(d, n), .src = src, .n = n};
    memset(c[i].dst, 0, n);
  }
  for (int i = 0; i < 2; i++)
    cr_assert_eq(pthread_create(&t[i], NULL, copier, &c[i]), 0);
  for (int i = 0; i < 2; i++)
    cr_assert_eq(pthread_join(t[i], NULL), 0);
  double both = now_ms() - t0, one = n / 0.0625e6;
  double last = c[0].ms > c[1].ms ? c[0].ms : c[1].ms;
  cr_assert_gt(c[0].ms, 0, "%s", err);
  cr_assert_gt(c[1].ms, 0, "%s", err);
  cr_assert_geq(last, 2 * one * 0.95,
                "the later copy took %.1f ms, less than two copies' %.1f",
                last, 2 * one);
  cr_assert_lt(both, 4 * one, "%.1f ms for both", both);
  for (int i = 0; i < 2; i++) {
    cr_assert_eq(memcmp(c[i].dst, src, n), 0);
    device_free(d, c[i].dst, n);
  }
  device_close(d);
  free(src);
}

Test(sim, a_copy_without_a_bandwidth_does_not_wait) {
  /* 4 MiB: at 0.1 GB/s this would be 42 ms; memcpy takes about 1. */
  double ms = timed_copy_ms(0, 4 * MiB);
  cr_assert_lt(ms, 30, "%.1f ms", ms);
}

Test(sim, the_high_water_mark_is_the_most_ever_held) {
  device *d = open_sim(10 * MiB, 0);
  void *a = alloc_ok(d, 4 * MiB);
  void *b = alloc_ok(d, 3 * MiB);
  device_free(d, a, 4 * MiB);
  void *c = alloc_ok(d, 2 * MiB);
  device_stats s = stats_of(d);
  cr_assert_eq(s.used, 5 * MiB);
  cr_assert_eq(s.high_water, 7 * MiB);
  device_free(d, b, 3 * MiB);
  device_free(d, c, 2 * MiB);
  s = stats_of(d);
  cr_assert_eq(s.used, 0);
  cr_assert_eq(s.high_water, 7 * MiB, "freeing never lowers it");
  device_close(d);
}

Test(sim, injected_failures_come_first_and_hold_nothing) {
  device *d = open_sim(MiB, 0);
  device_sim_fail_next_allocs(d, 2);
  for (int i = 0; i < 2; i++) {
    void *p = (void *)0x1234;
    cr_assert_eq(device_alloc(d, 4096, &p, err), SLY_E_NO_MEMORY);
    cr_assert_eq(p, (void *)0x1234);
    cr_assert(contains(err, "injected"), "%s", err);
  }
  cr_assert_eq(stats_of(d).used, 0);
  cr_assert_eq(stats_of(d).high_water, 0);
  void *p = alloc_ok(d, 4096);
  device_free(d, p, 4096);

  device_sim_fail_next_allocs(d, 3);
  device_sim_fail_next_allocs(d, 0); /* clears */
  p = alloc_ok(d, 4096);
  device_free(d, p, 4096);
  device_close(d);
}

typedef struct {
  device *d;
  int over_budget;
  int injected_seen;
} worker_arg;

static void *worker(void *arg) {
  worker_arg *w = arg;
  char e[DEVICE_ERROR_MAX];
  for (int i = 0; i < 2000; i++) {
    void *p = NULL;
    if (device_alloc(w->d, 64 * 1024, &p, e) < 0) {
      w->injected_seen += strstr(e, "injected") != NULL;
      continue;
    }
    device_stats s;
    device_get_stats(w->d, &s);
    w->over_budget += s.used > s.budget;
    device_free(w->d, p, 64 * 1024);
  }
  return NULL;
}

Test(sim, the_budget_holds_with_concurrent_callers) {
  device *d = open_sim(256 * 1024, 0); /* room for 4 of 8 threads' blobs */
  device_sim_fail_next_allocs(d, 50);
  pthread_t t[8];
  worker_arg w[8];
  for (int i = 0; i < 8; i++) {
    w[i] = (worker_arg){.d = d};
    cr_assert_eq(pthread_create(&t[i], NULL, worker, &w[i]), 0);
  }
  int injected = 0;
  for (int i = 0; i < 8; i++) {
    pthread_join(t[i], NULL);
    cr_assert_eq(w[i].over_budget, 0);
    injected += w[i].injected_seen;
  }
  cr_assert_eq(injected, 50, "exactly n injected failures, however many callers");
  device_stats s = stats_of(d);
  cr_assert_eq(s.used, 0);
  cr_assert_leq(s.high_water, 256 * 1024);
  device_close(d);
}

static void quiet(void) { log_configure(LOG_LEVEL_ERROR, false, NULL); }

Test(sim, freeing_with_the_wrong_size_stops_the_process, .init = quiet,
     .signal = SIGABRT) {
  device *d = open_sim(MiB, 0);
  void *p = alloc_ok(d, 8192);
  device_free(d, p, 4096);
}

Test(sim, a_double_free_stops_the_process, .init = quiet, .signal = SIGABRT) {
  device *d = open_sim(MiB, 0);
  device_sim_keep_freed(d, true); /* so the second free reads a live header */
  void *a = alloc_ok(d, 8192);
  void *b = alloc_ok(d, 8192);
  device_free(d, a, 8192);
  device_free(d, a, 8192);
  (void)b;
}

/* ---- cuda ---- */

/* Whether this machine has a GPU the runtime can use; asked of CUDA itself,
 * not of the code under test. */
static bool gpu_present(void) {
#ifdef SLY_HAVE_CUDA
  int n = 0;
  bool ok = cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
  (void)cudaGetLastError();
  return ok;
#else
  return false;
#endif
}

Test(cuda, names_that_are_not_devices_are_refused) {
  const char *bad[] = {"cuda:x", "cuda:", "cuda:-1", "cuda:07", "cuda:1x",
                       "cuda: 1", "cuda:12345", "CUDA:0", "gpu", "cpu", "",
                       "sim0", "cuda"};
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    device *d = (device *)0x1234;
    memset(err, 0, sizeof(err));
    cr_assert_eq(device_open(bad[i], MiB, 0, &d, err), SLY_E_UNAVAILABLE,
                 "\"%s\"", bad[i]);
    cr_assert_eq(d, (device *)0x1234, "output untouched on failure");
    cr_assert(contains(err, "no such device"), "%s", err);
    char quoted[64];
    snprintf(quoted, sizeof(quoted), "\"%s\"", bad[i]);
    cr_assert(contains(err, quoted), "names the device: %s", err);
  }
  device *d = (device *)0x1234;
  cr_assert_eq(device_open(NULL, MiB, 0, &d, err), SLY_E_UNAVAILABLE);
  cr_assert_eq(d, (device *)0x1234);
}

Test(cuda, built_is_what_the_build_says) {
#ifdef SLY_HAVE_CUDA
  cr_assert(device_cuda_built());
#else
  cr_assert_not(device_cuda_built());
#endif
}

Test(cuda, opening_without_a_gpu_is_unavailable_and_says_why) {
  if (gpu_present())
    cr_skip_test("a GPU is present: the cuda_gpu tests run instead");
  device *d = (device *)0x1234;
  cr_assert_eq(device_open("cuda:0", MiB, 0, &d, err), SLY_E_UNAVAILABLE);
  cr_assert_eq(d, (device *)0x1234, "output untouched on failure");
  cr_assert(contains(err, "cuda:0"), "%s", err);
#ifdef SLY_HAVE_CUDA
  int n = 0;
  cudaError_t e = cudaGetDeviceCount(&n);
  (void)cudaGetLastError();
  cr_assert(contains(err, cudaGetErrorString(e)), "gives CUDA's reason: %s",
            err);
#else
  cr_assert(contains(err, "without CUDA"), "%s", err);
#endif
}

/* The rest needs a GPU: each test skips itself, with the reason, without one. */
#define NEED_GPU()                                                             \
  do {                                                                         \
    if (!gpu_present())                                                        \
      cr_skip_test("no GPU here: the cuda:N path is checked on a GPU machine"); \
  } while (0)

#ifdef SLY_HAVE_CUDA
static device *open_gpu(uint64_t budget) {
  device *d = NULL;
  cr_assert_eq(device_open("cuda:0", budget, 0, &d, err), 0, "%s", err);
  return d;
}
#endif

Test(cuda_gpu, copies_in_within_the_budget_and_reports_device_memory) {
  NEED_GPU();
#ifdef SLY_HAVE_CUDA
  device *d = open_gpu(64 * MiB);
  cr_assert_not(device_is_sim(d));
  cr_assert_str_eq(device_bind_name(d), "cuda:0");
  const uint64_t n = 48 * MiB + 4096;
  uint8_t *src = malloc(n), *back = malloc(n);
  cr_assert(src && back);
  for (uint64_t i = 0; i < n; i++)
    src[i] = (uint8_t)(i * 131 + 7);
  void *p = alloc_ok(d, n);
  cr_assert_eq(device_copy_in(d, p, src, n, err), 0, "%s", err);
  cr_assert_eq(cudaMemcpy(back, p, n, cudaMemcpyDeviceToHost), cudaSuccess);
  cr_assert_eq(memcmp(back, src, n), 0);

  void *q = NULL;
  cr_assert_eq(device_alloc(d, 32 * MiB, &q, err), SLY_E_NO_MEMORY, "budget");
  device_stats s = stats_of(d);
  cr_assert_eq(s.used, n);
  cr_assert_eq(s.high_water, n);
  cr_assert_gt(s.total_bytes, 0);
  cr_assert_gt(s.free_bytes, 0);
  cr_assert_leq(s.free_bytes, s.total_bytes);
  device_free(d, p, n);
  cr_assert_eq(stats_of(d).used, 0);
  device_close(d);
  free(src);
  free(back);
#endif
}

/* Chunks started into one block as a disk read would, from pinned memory,
 * land where they belong once the batch is finished. */
Test(cuda_gpu, a_batch_of_chunk_copies_fills_the_block) {
  NEED_GPU();
#ifdef SLY_HAVE_CUDA
  device *d = open_gpu(64 * MiB);
  const uint64_t chunk = 1 * MiB, n = 16 * chunk + 4096;
  uint8_t *src = NULL, *back = malloc(n);
  cr_assert_eq(cudaMallocHost((void **)&src, n), cudaSuccess);
  cr_assert_not_null(back);
  for (uint64_t i = 0; i < n; i++)
    src[i] = (uint8_t)(i * 29 + 3);
  uint8_t *p = alloc_ok(d, n);
  device_copy_batch b = {0};
  for (uint64_t off = 0; off < n; off += chunk) {
    uint64_t len = n - off < chunk ? n - off : chunk;
    cr_assert_eq(device_copy_start(d, &b, p + off, src + off, len, err), 0,
                 "%s", err);
  }
  cr_assert_eq(device_copy_finish(d, &b, err), 0, "%s", err);
  cr_assert_eq(cudaMemcpy(back, p, n, cudaMemcpyDeviceToHost), cudaSuccess);
  cr_assert_eq(memcmp(back, src, n), 0);
  device_free(d, p, n);
  device_close(d);
  cudaFreeHost(src);
  free(back);
#endif
}

#ifdef SLY_HAVE_CUDA
/* A pinned buffer of `n` bytes and a device block, and a copy between them
 * started on the legacy default stream (libtorch's): about 5 ms at PCIe
 * speed, long enough to be still running when the test looks. */
static void *pinned(uint64_t n) {
  void *p = NULL;
  cr_assert_eq(cudaMallocHost(&p, n), cudaSuccess);
  memset(p, 0x5a, n);
  return p;
}

static void start_long_copy(device *d, uint64_t n, void **host, void **dev) {
  *host = pinned(n);
  *dev = alloc_ok(d, n);
  cr_assert_eq(cudaMemcpyAsync(*dev, *host, n, cudaMemcpyHostToDevice, 0),
               cudaSuccess);
}
#endif

/* A probe while a copy runs on the copy stream: cudaStreamQuery answers
 * "not ready", which must not stay behind as the thread's last error, where
 * libtorch's next kernel launch check would find it. */
Test(cuda_gpu, a_probe_during_a_copy_leaves_no_error_behind) {
  NEED_GPU();
#ifdef SLY_HAVE_CUDA
  const uint64_t n = 256 * MiB;
  device *d = open_gpu(2 * n);
  void *src = pinned(n), *p = alloc_ok(d, n);
  device_copy_batch b = {0};
  cr_assert_eq(device_copy_start(d, &b, p, src, n, err), 0, "%s", err);
  cr_assert_not(device_lost(d, true), "a copy in flight is not a lost device");
  cr_assert_eq(cudaGetLastError(), cudaSuccess,
               "the probe left an error behind");
  cr_assert_eq(device_copy_finish(d, &b, err), 0, "%s", err);
  device_free(d, p, n);
  device_close(d);
  cudaFreeHost(src);
#endif
}

/* device_fence_sync returns once the work before the fence is done. */
Test(cuda_gpu, a_fence_sync_waits_for_the_work_before_the_fence) {
  NEED_GPU();
#ifdef SLY_HAVE_CUDA
  const uint64_t n = 256 * MiB;
  device *d = open_gpu(2 * n);
  void *host, *dev, *fence = NULL;
  cr_assert_eq(device_fence_sync(d, NULL, err), 0, "a NULL fence: %s", err);
  start_long_copy(d, n, &host, &dev);
  cr_assert_eq(device_fence_mark(d, &fence, err), 0, "%s", err);
  cr_assert_eq(device_fence_sync(d, fence, err), 0, "%s", err);
  cr_assert_eq(cudaEventQuery((cudaEvent_t)fence), cudaSuccess,
               "the fence is passed once the sync returns");
  cr_assert_eq(cudaStreamQuery(0), cudaSuccess, "the copy is done");
  device_fence_free(d, fence);
  device_free(d, dev, n);
  device_close(d);
  cudaFreeHost(host);
#endif
}

Test(cuda_gpu, a_device_out_of_memory_is_no_memory_and_the_device_lives_on) {
  NEED_GPU();
#ifdef SLY_HAVE_CUDA
  device *d = open_gpu(UINT64_MAX);
  void *p = NULL;
  cr_assert_eq(device_alloc(d, UINT64_C(1) << 50, &p, err), SLY_E_NO_MEMORY,
               "%s", err);
  cr_assert_eq(stats_of(d).used, 0);
  p = alloc_ok(d, MiB);
  uint8_t src[4096] = {1, 2, 3};
  cr_assert_eq(device_copy_in(d, p, src, sizeof(src), err), 0, "%s", err);
  device_free(d, p, MiB);
  device_sim_fail_next_allocs(d, 1);
  cr_assert_eq(device_alloc(d, MiB, &p, err), SLY_E_NO_MEMORY);
  device_close(d);
#endif
}

Test(cuda_gpu, a_device_index_past_the_last_gpu_is_unavailable) {
  NEED_GPU();
  device *d = (device *)0x1234;
  cr_assert_eq(device_open("cuda:9999", MiB, 0, &d, err), SLY_E_UNAVAILABLE);
  cr_assert(contains(err, "no such device"), "%s", err);
  cr_assert_eq(d, (device *)0x1234);
}

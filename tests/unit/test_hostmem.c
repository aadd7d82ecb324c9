/* test_hostmem.c — host buffers for the CPU tier: 4096-aligned, rounded up
 * to whole pages, pageable with exactly one logged warning when there is no
 * GPU to pin for (or no CUDA in the build), quiet when pinning was not
 * wanted, safe from many threads; pinning itself (both methods) and its
 * measurement run where a GPU is and skip themselves here.
 *
 * Criterion runs each test in its own process, so the process-wide method
 * and warn-once flags start fresh in every test.
 */
#include <criterion/criterion.h>
#include <linux/limits.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#ifdef SLY_HAVE_CUDA
#include <cuda_runtime_api.h>
#endif

#include "hostmem.h"
#include "log.h"
#include "region.h"

static char tmp[PATH_MAX];
static char logfile[PATH_MAX + 16];

/* Every test logs into its own file, so warnings can be counted. */
static void setup(void) {
  char t[] = "/tmp/slyced-hostmem-XXXXXX";
  cr_assert_not_null(mkdtemp(t));
  snprintf(tmp, sizeof(tmp), "%s", t);
  snprintf(logfile, sizeof(logfile), "%s/d.log", tmp);
  cr_assert_eq(log_configure(LOG_LEVEL_DEBUG, false, logfile), 0);
}

static void teardown(void) {
  log_shutdown();
  unlink(logfile);
  rmdir(tmp);
}

TestSuite(hostmem, .init = setup, .fini = teardown);

/* The whole log; the caller frees it. */
static char *slurp_log(void) {
  FILE *f = fopen(logfile, "r");
  cr_assert_not_null(f, "%s", logfile);
  static const size_t cap = 1 << 16;
  char *buf = calloc(1, cap + 1);
  cr_assert_not_null(buf);
  size_t n = fread(buf, 1, cap, f);
  fclose(f);
  buf[n] = '\0';
  return buf;
}

static size_t count_of(const char *hay, const char *needle) {
  size_t n = 0;
  for (const char *p = hay; (p = strstr(p, needle)); p += strlen(needle))
    n++;
  return n;
}

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

/* Criterion runs no .fini after a skip: the test's folder goes first. */
#define NEED_NO_GPU()                                                          \
  do {                                                                         \
    if (gpu_present()) {                                                       \
      teardown();                                                              \
      cr_skip_test("a GPU is present: the pinned tests run instead");          \
    }                                                                          \
  } while (0)

#define NEED_GPU()                                                             \
  do {                                                                         \
    if (!gpu_present()) {                                                      \
      teardown();                                                              \
      cr_skip_test("no GPU here: pinning is checked on a GPU machine");        \
    }                                                                          \
  } while (0)

/* Allocates `bytes`, checks alignment, and writes every byte of the rounded
 * size (AddressSanitizer checks the end). */
static void *alloc_checked(uint64_t bytes, bool *pinned) {
  void *p = hostmem_alloc(bytes, pinned);
  cr_assert_not_null(p, "%llu bytes", (unsigned long long)bytes);
  cr_assert_eq((uintptr_t)p % 4096, 0);
  uint64_t rounded = bytes == 0 ? 4096 : (bytes + 4095) / 4096 * 4096;
  memset(p, 0x5A, rounded);
  return p;
}

Test(hostmem, before_init_buffers_are_pageable) {
  bool pinned = true;
  void *p = alloc_checked(10000, &pinned);
  cr_assert_not(pinned);
  hostmem_free(p, 10000, pinned);
}

Test(hostmem, sizes_round_up_to_whole_pages) {
  hostmem_init(false, HOSTMEM_REGISTER);
  bool pinned;
  const uint64_t sizes[] = {0, 1, 4095, 4096, 4097, 3 * 1024 * 1024 + 5};
  for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
    void *p = alloc_checked(sizes[i], &pinned);
    cr_assert_not(pinned);
    hostmem_free(p, sizes[i], pinned);
  }
  hostmem_free(NULL, 0, false); /* accepted */
  hostmem_free(NULL, 0, true);
}

Test(hostmem, a_size_no_allocator_can_meet_is_null) {
  bool pinned = true;
  cr_assert_null(hostmem_alloc(UINT64_MAX, &pinned));
  cr_assert_null(hostmem_alloc(UINT64_MAX - 4095, &pinned));
  cr_assert(pinned, "output untouched on failure");
}

Test(hostmem, not_wanting_pinned_memory_is_pageable_and_quiet) {
  hostmem_init(false, HOSTMEM_REGISTER);
  hostmem_init(false, HOSTMEM_HOSTALLOC);
  hostmem_init(true, HOSTMEM_PAGEABLE);
  bool pinned = true;
  void *p = alloc_checked(8192, &pinned);
  cr_assert_not(pinned);
  hostmem_free(p, 8192, pinned);
  char *log = slurp_log();
  cr_assert_eq(count_of(log, "hostmem"), 0, "nothing to warn about:\n%s", log);
  free(log);
}

Test(hostmem, without_a_gpu_memory_is_pageable_with_one_warning_saying_why) {
  NEED_NO_GPU();
  hostmem_init(true, HOSTMEM_REGISTER);
  hostmem_init(true, HOSTMEM_HOSTALLOC);
  bool pinned = true;
  void *p = alloc_checked(1 << 20, &pinned);
  cr_assert_not(pinned);
  hostmem_free(p, 1 << 20, pinned);

  char *log = slurp_log();
  cr_assert_eq(count_of(log, "\n"), 1, "one line:\n%s", log);
  cr_assert_eq(count_of(log, " warn "), 1, "%s", log);
  cr_assert_eq(count_of(log, "pageable"), 1, "%s", log);
#ifdef SLY_HAVE_CUDA
  int n = 0;
  cudaError_t e = cudaGetDeviceCount(&n);
  (void)cudaGetLastError();
  cr_assert_eq(count_of(log, cudaGetErrorString(e)), 1, "says why:\n%s", log);
#else
  cr_assert_eq(count_of(log, "without CUDA"), 1, "says why:\n%s", log);
#endif
  free(log);
}

Test(hostmem, measuring_without_a_gpu_gives_minus_one_for_both) {
  NEED_NO_GPU();
  double reg = 0, ha = 0;
  hostmem_measure(64 << 20, &reg, &ha);
  cr_assert_eq(reg, -1);
  cr_assert_eq(ha, -1);
}

static void *init_and_churn(void *arg) {
  (void)arg;
  hostmem_init(true, HOSTMEM_REGISTER);
  for (int i = 0; i < 200; i++) {
    bool pinned;
    uint64_t n = 4096 * (uint64_t)(1 + i % 7);
    char *p = hostmem_alloc(n, &pinned);
    if (p == NULL)
      return (void *)1;
    memset(p, i, n);
    hostmem_free(p, n, pinned);
  }
  return NULL;
}

Test(hostmem, many_threads_share_one_warning_and_the_allocator) {
  pthread_t t[8];
  for (int i = 0; i < 8; i++)
    cr_assert_eq(pthread_create(&t[i], NULL, init_and_churn, NULL), 0);
  for (int i = 0; i < 8; i++) {
    void *r;
    pthread_join(t[i], &r);
    cr_assert_null(r, "an allocation failed");
  }
  char *log = slurp_log();
  /* One warning without a GPU; none with one (everything pinned). */
  size_t want = gpu_present() ? 0 : 1;
  cr_assert_eq(count_of(log, "pageable"), want, "%s", log);
  free(log);
}

/* ---- with a GPU ---- */

#ifdef SLY_HAVE_CUDA
/* Whether CUDA itself sees `p` as pinned host memory. */
static bool cuda_sees_pinned(void *p) {
  struct cudaPointerAttributes a;
  cudaError_t e = cudaPointerGetAttributes(&a, p);
  (void)cudaGetLastError();
  return e == cudaSuccess && a.type == cudaMemoryTypeHost;
}

static void pins_with(hostmem_method m) {
  hostmem_init(true, m);
  bool pinned = false;
  void *p = alloc_checked(16 << 20, &pinned);
  cr_assert(pinned);
  cr_assert(cuda_sees_pinned(p));
  hostmem_free(p, 16 << 20, pinned);
  char *log = slurp_log();
  cr_assert_eq(count_of(log, "hostmem"), 0, "no warning:\n%s", log);
  free(log);
}
#endif

Test(hostmem, with_a_gpu_register_pins) {
  NEED_GPU();
#ifdef SLY_HAVE_CUDA
  pins_with(HOSTMEM_REGISTER);
#endif
}

Test(hostmem, with_a_gpu_hostalloc_pins) {
  NEED_GPU();
#ifdef SLY_HAVE_CUDA
  pins_with(HOSTMEM_HOSTALLOC);
#endif
}

Test(hostmem, with_a_gpu_the_method_stays_while_pinned_buffers_live) {
  NEED_GPU();
#ifdef SLY_HAVE_CUDA
  hostmem_init(true, HOSTMEM_HOSTALLOC);
  bool pinned = false;
  void *p = alloc_checked(1 << 20, &pinned);
  cr_assert(pinned);
  hostmem_init(true, HOSTMEM_REGISTER); /* refused: p must go to cudaFreeHost */
  hostmem_free(p, 1 << 20, pinned);
  char *log = slurp_log();
  cr_assert_eq(count_of(log, "method kept"), 1, "%s", log);
  free(log);
#endif
}

Test(hostmem, with_a_gpu_both_methods_measure) {
  NEED_GPU();
  double reg = -1, ha = -1;
  hostmem_measure(64 << 20, &reg, &ha);
  cr_assert_gt(reg, 0);
  cr_assert_gt(ha, 0);
  cr_assert_lt(reg, 10);
  cr_assert_lt(ha, 10);
}

/* Regions register with CUDA when there is a GPU, within the limit; past it,
 * or without a GPU, they stay unregistered and nothing is counted. */
Test(hostmem, regions_register_within_the_limit_or_not_at_all) {
  hostmem_init(true, HOSTMEM_REGISTER);
  size_t n = 1 << 20;
  void *a = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
                 -1, 0);
  void *b = mmap(NULL, n, PROT_READ, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  cr_assert(a != MAP_FAILED && b != MAP_FAILED);
  hostmem_set_region_limit(n + n / 2);
  bool ra = hostmem_register_region(a, n, false);
  cr_assert_eq(ra, gpu_present(), "registered %d with a GPU %d", ra,
               gpu_present());
  cr_assert_eq(hostmem_registered_bytes(), ra ? n : 0);
  cr_assert_not(hostmem_register_region(b, n, true) && ra,
                "a second region passed the limit");
  hostmem_unregister_region(a, n, ra);
  cr_assert_eq(hostmem_registered_bytes(), 0, "bytes still counted");
  /* With room again, the read-only one registers (on a GPU). */
  bool rb = hostmem_register_region(b, n, true);
  cr_assert_eq(rb, gpu_present());
  hostmem_unregister_region(b, n, rb);
  hostmem_set_region_limit(0);
  cr_assert_not(hostmem_register_region(a, n, false), "a limit of 0 allows "
                "nothing");
  munmap(a, n);
  munmap(b, n);
}

/* A client region is registered by the forward that first uses it (on the
 * executor), never by map_region on the loop thread, and only once. */
Test(hostmem, a_client_region_registers_at_its_first_use_not_when_mapped) {
  hostmem_init(true, HOSTMEM_REGISTER);
  hostmem_set_region_limit(UINT64_C(1) << 30);
  const uint64_t n = 1 << 20, want = gpu_present() ? n : 0;
  int fd = memfd_create("region", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  cr_assert(fd >= 0 && ftruncate(fd, (off_t)n) == 0 &&
            fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK) == 0);
  region *r = NULL;
  proto_error e;
  cr_assert_eq(region_map_client(fd, UINT64_C(1) << 30, &r, &e), 0, "%s",
               e.message);
  close(fd);
  cr_assert_eq(hostmem_registered_bytes(), 0, "map_region registered it");
  cr_assert_eq(atomic_load(&r->pin), REGION_PIN_NOT_TRIED);
  region_pin(r);
  cr_assert_eq(atomic_load(&r->pin),
               gpu_present() ? REGION_PIN_YES : REGION_PIN_NO);
  cr_assert_eq(hostmem_registered_bytes(), want);
  region_pin(r);
  cr_assert_eq(hostmem_registered_bytes(), want, "registered twice");
  region_unref(r);
  cr_assert_eq(hostmem_registered_bytes(), 0, "the last reference keeps it");
}

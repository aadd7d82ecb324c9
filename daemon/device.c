/* device.c — the GPU tier's front: names, budget, accounting (see device.h).
 *
 * The budget is checked and reserved here, before the backend allocates, so
 * that `sim` and `cuda:N` hold it the same way and the high-water mark is the
 * most that was ever reserved. The memory itself comes from device_sim.c or
 * device_cuda.c.
 */
#include "device.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "device_internal.h"
#include "faults.h"
#include "log.h"
#include "slyce.h"

int device__fail(char err[DEVICE_ERROR_MAX], int code, const char *fmt, ...) {
  if (err != NULL) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, DEVICE_ERROR_MAX, fmt, ap);
    va_end(ap);
  }
  return code;
}

/* "cuda:N", N canonical decimal (no sign, no leading zero): the same device
 * must not go by two names. Returns N, or -1. */
static int device__cuda_index(const char *name) {
  if (strncmp(name, "cuda:", 5) != 0)
    return -1;
  const char *s = name + 5;
  size_t n = strlen(s);
  if (n < 1 || n > 4 || strspn(s, "0123456789") != n || (n > 1 && s[0] == '0'))
    return -1;
  return atoi(s);
}

int device_open(const char *name, uint64_t budget, double sim_gbps,
                device **out, char err[DEVICE_ERROR_MAX]) {
  bool sim = name != NULL && strcmp(name, "sim") == 0;
  int index = sim || name == NULL ? -1 : device__cuda_index(name);
  if (!sim && index < 0)
    return device__fail(err, SLY_E_UNAVAILABLE,
                        "no such device \"%.64s\": expected \"sim\" or "
                        "\"cuda:N\"",
                        name != NULL ? name : "(null)");

  device *d = calloc(1, sizeof(*d));
  if (d == NULL)
    return device__fail(err, SLY_E_NO_MEMORY, "%s: out of host memory",
                        name);
  d->sim = sim;
  d->index = index;
  d->budget = budget;
  /* NaN and negatives mean "no wait", like 0. */
  d->sim_gbps = sim_gbps > 0 ? sim_gbps : 0;
  if (sim)
    snprintf(d->bind_name, sizeof(d->bind_name), "cpu");
  else
    snprintf(d->bind_name, sizeof(d->bind_name), "cuda:%d", index);

  int r = sim ? device__sim_open(d, err) : device__cuda_open(d, err);
  if (r < 0) {
    free(d);
    return r;
  }
  *out = d;
  return 0;
}

void device_close(device *d) {
  if (d == NULL)
    return;
  if (d->sim)
    device__sim_close(d);
  else
    device__cuda_close(d);
  free(d);
}

const char *device_bind_name(const device *d) { return d->bind_name; }

bool device_is_sim(const device *d) { return d->sim; }

int device_cuda_index(const device *d) { return d->sim ? -1 : d->index; }

static const char *device__name(const device *d) {
  return d->sim ? "sim" : d->bind_name;
}

/* Reserves `bytes` of the budget, or says who holds it. */
static int device__reserve(device *d, uint64_t bytes,
                           char err[DEVICE_ERROR_MAX]) {
  uint64_t used = atomic_load(&d->used);
  do {
    if (bytes > d->budget - used)
      return device__fail(err, SLY_E_NO_MEMORY,
                          "%s: out of device memory: asked %" PRIu64
                          " bytes, %" PRIu64 " of the %" PRIu64
                          "-byte budget used",
                          device__name(d), bytes, used, d->budget);
  } while (!atomic_compare_exchange_weak(&d->used, &used, used + bytes));

  uint64_t now = used + bytes;
  uint64_t hw = atomic_load(&d->high_water);
  while (now > hw && !atomic_compare_exchange_weak(&d->high_water, &hw, now))
    ;
  return 0;
}

/* Returns `bytes` to the budget. Freeing more than is held is a bug in the
 * caller that would make every later budget check a lie, so it stops the
 * process. */
static void device__release(device *d, uint64_t bytes) {
  uint64_t used = atomic_load(&d->used);
  do {
    if (bytes > used) {
      log_error("%s: %" PRIu64 " bytes freed but only %" PRIu64
                " held: the accounting is broken",
                device__name(d), bytes, used);
      abort();
    }
  } while (!atomic_compare_exchange_weak(&d->used, &used, used - bytes));
}

/* A device lost to an injected fault (SLYCED_FAULTS device_lost); CUDA's
 * own losses keep their cudaError_t in d->lost. */
#define DEVICE__INJECTED_LOST (-1)

static int device__lost_injected(device *d, char err[DEVICE_ERROR_MAX]) {
  return device__fail(err, SLY_E_UNAVAILABLE,
                      "%s is lost (injected by SLYCED_FAULTS device_lost)",
                      device__name(d));
}

int device_alloc(device *d, uint64_t bytes, void **out,
                 char err[DEVICE_ERROR_MAX]) {
  if (atomic_load(&d->lost) == DEVICE__INJECTED_LOST)
    return device__lost_injected(d, err);
  /* Fault injection: decrement only while positive, so that concurrent
   * callers consume exactly n failures. */
  int n = atomic_load(&d->fail_next);
  while (n > 0 && !atomic_compare_exchange_weak(&d->fail_next, &n, n - 1))
    ;
  if (n > 0 || faults_take(FAULT_DEVICE_ALLOC))
    return device__fail(err, SLY_E_NO_MEMORY,
                        "%s: out of device memory: asked %" PRIu64
                        " bytes (injected failure)",
                        device__name(d), bytes);

  int r = device__reserve(d, bytes, err);
  if (r < 0)
    return r;
  void *p = NULL;
  /* A zero-byte blob still gets a distinct, non-NULL address. */
  uint64_t real = bytes > 0 ? bytes : 1;
  r = d->sim ? device__sim_alloc(d, real, &p, err)
             : device__cuda_alloc(d, real, &p, err);
  if (r < 0) {
    device__release(d, bytes);
    return r;
  }
  *out = p;
  return 0;
}

void device_free(device *d, void *p, uint64_t bytes) {
  if (p == NULL)
    return;
  if (d->sim)
    device__sim_free(d, p, bytes > 0 ? bytes : 1);
  else
    device__cuda_free(d, p);
  device__release(d, bytes);
}

int device_fence_mark(device *d, void **fence, char err[DEVICE_ERROR_MAX]) {
  return d->sim ? 0 : device__cuda_fence_mark(d, fence, err);
}

int device_fence_wait(device *d, void *fence, char err[DEVICE_ERROR_MAX]) {
  return d->sim || fence == NULL ? 0 : device__cuda_fence_wait(d, fence, err);
}

/* A span is the CUDA backend's pair of events; sim has none (NULL). */
device_span *device_span_begin(device *d) {
  return d->sim ? NULL : (device_span *)device__cuda_span_begin(d);
}

void device_span_end(device *d, device_span *s) {
  if (s != NULL)
    device__cuda_span_end(d, s);
}

uint64_t device_span_take_us(device *d, device_span *s) {
  return s != NULL ? device__cuda_span_take_us(d, s) : 0;
}

int device_fence_sync(device *d, void *fence, char err[DEVICE_ERROR_MAX]) {
  return d->sim || fence == NULL ? 0 : device__cuda_fence_sync(d, fence, err);
}

void device_fence_free(device *d, void *fence) {
  if (!d->sim && fence != NULL)
    device__cuda_fence_free(d, fence);
}

int device_copy_start(device *d, device_copy_batch *b, void *dst,
                      const void *src, uint64_t bytes,
                      char err[DEVICE_ERROR_MAX]) {
  if (bytes == 0)
    return 0;
  if (dst == NULL || src == NULL)
    return device__fail(err, SLY_E_INTERNAL, "%s: copy of %" PRIu64
                        " bytes with a NULL %s", device__name(d), bytes,
                        dst == NULL ? "destination" : "source");
  if (atomic_load(&d->lost) == DEVICE__INJECTED_LOST)
    return device__lost_injected(d, err);
  if (faults_take(FAULT_DEVICE_LOST)) {
    atomic_store(&d->lost, DEVICE__INJECTED_LOST);
    log_error("%s: injected fault: the device is lost",
              device__name(d));
    return device__lost_injected(d, err);
  }
  b->started++;
  if (d->sim) {
    device__sim_copy_start(d, b, dst, src, bytes);
    return 0;
  }
  return device__cuda_copy_start(d, dst, src, bytes, err);
}

int device_copy_finish(device *d, device_copy_batch *b,
                       char err[DEVICE_ERROR_MAX]) {
  if (b->started == 0)
    return 0;
  b->started = 0;
  if (d->sim) {
    device__sim_copy_finish(b);
    return 0;
  }
  return device__cuda_copy_finish(d, err);
}

int device_copy_in(device *d, void *dst, const void *src, uint64_t bytes,
                   char err[DEVICE_ERROR_MAX]) {
  device_copy_batch b = {0};
  int rc = device_copy_start(d, &b, dst, src, bytes, err);
  /* A failed start may have left earlier copies running: waits for them. */
  char ignored[DEVICE_ERROR_MAX];
  int done = device_copy_finish(d, &b, rc < 0 ? ignored : err);
  return rc < 0 ? rc : done;
}

void device_get_stats(device *d, device_stats *out) {
  device_stats s = {
      .budget = d->budget,
      .used = atomic_load(&d->used),
      .high_water = atomic_load(&d->high_water),
  };
  if (d->sim) {
    /* The sim's whole memory is its budget. */
    s.total_bytes = d->budget;
    s.free_bytes = d->budget - s.used;
  } else {
    device__cuda_mem_info(d, &s.free_bytes, &s.total_bytes);
  }
  *out = s;
}

bool device_lost(device *d, bool probe) {
  if (d == NULL)
    return false;
  if (probe && atomic_load(&d->lost) == 0 && !d->sim)
    device__cuda_probe(d);
  return atomic_load(&d->lost) != 0;
}

void device_sim_fail_next_allocs(device *d, int n) {
  atomic_store(&d->fail_next, n > 0 ? n : 0);
}

void device_sim_keep_freed(device *d, bool on) { d->keep_freed = on; }

bool device_cuda_built(void) {
#ifdef SLY_HAVE_CUDA
  return true;
#else
  return false;
#endif
}

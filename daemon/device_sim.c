/* device_sim.c — the `sim` device: a stand-in GPU in host memory.
 *
 * Each blob is 4096-aligned host memory preceded by one page that holds a
 * header (magic and size), so that a free with the wrong size or a double
 * free stops the process instead of quietly skewing the accounting the tier
 * tests check. Freed blobs are poisoned with 0xDB so that a module still
 * pointing at an evicted blob computes garbage a test can see, rather than
 * the right answer by luck. Copies wait out the configured bandwidth.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "device_internal.h"
#include "log.h"
#include "slyce.h"

#define DEVICE__SIM_ALIGN 4096u
#define DEVICE__SIM_POISON 0xDB
#define DEVICE__SIM_LIVE UINT64_C(0x534c59534d4c4956)  /* "SLYSMLIV" */
#define DEVICE__SIM_FREED UINT64_C(0x534c59534d465245) /* "SLYSMFRE" */

/* Lives in the page before each blob. */
typedef struct device__sim_block {
  uint64_t magic;
  uint64_t bytes;                  /* as asked */
  struct device__sim_block *next;  /* graveyard link, once freed */
} device__sim_block;

static device__sim_block *device__sim_header(void *p) {
  return (device__sim_block *)((char *)p - DEVICE__SIM_ALIGN);
}

/* Bytes of the blob proper, rounded to the alignment; false on overflow. */
static bool device__sim_span(uint64_t bytes, size_t *out) {
  if (bytes > SIZE_MAX - 2 * DEVICE__SIM_ALIGN)
    return false;
  *out = (size_t)((bytes + DEVICE__SIM_ALIGN - 1) &
                  ~(uint64_t)(DEVICE__SIM_ALIGN - 1));
  return true;
}

int device__sim_open(device *d, char err[DEVICE_ERROR_MAX]) {
  int r = pthread_mutex_init(&d->sim_engine_mu, NULL);
  if (r != 0)
    return device__fail(err, SLY_E_INTERNAL, "sim: mutex: %s", strerror(r));
  return 0;
}

void device__sim_close(device *d) {
  pthread_mutex_destroy(&d->sim_engine_mu);
  device__sim_block *b = d->graveyard;
  while (b != NULL) {
    device__sim_block *next = b->next;
    free(b);
    b = next;
  }
  d->graveyard = NULL;
}

int device__sim_alloc(device *d, uint64_t bytes, void **out,
                      char err[DEVICE_ERROR_MAX]) {
  (void)d;
  size_t span;
  void *base = NULL;
  if (device__sim_span(bytes, &span))
    base = aligned_alloc(DEVICE__SIM_ALIGN, DEVICE__SIM_ALIGN + span);
  if (base == NULL)
    return device__fail(err, SLY_E_NO_MEMORY,
                        "sim: out of host memory for a %" PRIu64
                        "-byte blob",
                        bytes);
  device__sim_block *b = base;
  b->magic = DEVICE__SIM_LIVE;
  b->bytes = bytes;
  b->next = NULL;
  *out = (char *)base + DEVICE__SIM_ALIGN;
  return 0;
}

void device__sim_free(device *d, void *p, uint64_t bytes) {
  device__sim_block *b = device__sim_header(p);
  if (b->magic != DEVICE__SIM_LIVE || b->bytes != bytes) {
    log_error("sim: bad free of %p: %s (%" PRIu64 " bytes given, %" PRIu64
              " allocated)",
              p, b->magic == DEVICE__SIM_FREED ? "already freed" :
                 b->magic == DEVICE__SIM_LIVE ? "wrong size" : "not a blob",
              bytes, b->bytes);
    abort();
  }
  size_t span = 0;
  device__sim_span(bytes, &span); /* cannot fail: the alloc did the same */
  memset(p, DEVICE__SIM_POISON, span);
  b->magic = DEVICE__SIM_FREED;
  if (d->keep_freed) {
    b->next = d->graveyard;
    d->graveyard = b;
    return;
  }
  free(b);
}

static double device__now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Sleeps until `deadline` on the monotonic clock (absolute, so that signals
 * and early wake-ups do not stretch the total). */
static void device__sleep_until(double deadline) {
  struct timespec ts;
  ts.tv_sec = (time_t)deadline;
  ts.tv_nsec = (long)((deadline - (double)ts.tv_sec) * 1e9);
  if (ts.tv_nsec >= 1000000000L) {
    ts.tv_sec++;
    ts.tv_nsec -= 1000000000L;
  }
  while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
    ;
}

/* One copy engine for the device, as CUDA's one copy stream: a copy starts
 * when the engine is free or now, whichever is later, and takes bytes /
 * bandwidth, memcpy's own time included; copies from two threads take
 * turns, they do not each get the whole bandwidth. The batch waits for its
 * last copy. The memcpy runs at once on the caller's thread. */
void device__sim_copy_start(device *d, device_copy_batch *b, void *dst,
                            const void *src, uint64_t bytes) {
  double start = device__now();
  memcpy(dst, src, (size_t)bytes);
  if (d->sim_gbps <= 0)
    return;
  pthread_mutex_lock(&d->sim_engine_mu);
  if (d->sim_engine_free_at > start)
    start = d->sim_engine_free_at;
  d->sim_engine_free_at = start + (double)bytes / (d->sim_gbps * 1e9);
  b->busy_until = d->sim_engine_free_at;
  pthread_mutex_unlock(&d->sim_engine_mu);
}

void device__sim_copy_finish(device_copy_batch *b) {
  if (b->busy_until > 0)
    device__sleep_until(b->busy_until);
}

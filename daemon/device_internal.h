/* device_internal.h — what device.c shares with its two backends (daemon/).
 *
 * Owns: struct device and the backend entry points. device.c parses the
 * name, keeps the budget accounting and the fault-injection hook, and calls
 * device_sim.c or device_cuda.c for the memory itself. Nothing outside
 * device*.c includes this.
 */
#ifndef DAEMON_DEVICE_INTERNAL_H
#define DAEMON_DEVICE_INTERNAL_H

#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "device.h"

struct device {
  bool sim;
  int index;          /* cuda:N */
  char bind_name[16]; /* "cpu" or "cuda:N" */
  uint64_t budget;
  /* Atomics so that stats can be read from any thread. */
  _Atomic uint64_t used;
  _Atomic uint64_t high_water;
  atomic_int fail_next; /* device_sim_fail_next_allocs */

  /* sim */
  double sim_gbps;      /* <= 0: no wait */
  pthread_mutex_t sim_engine_mu;
  double sim_engine_free_at; /* the one copy engine; monotonic seconds */
  bool keep_freed;      /* device_sim_keep_freed */
  void *graveyard;      /* freed blocks kept mapped, see device_sim.c */

  /* cuda */
  void *stream;         /* cudaStream_t: a pointer, kept opaque here */
  atomic_int lost;      /* the sticky cudaError_t that killed the device; 0 = fine */
};

/* Fills err (may be NULL) and returns code. */
/* cuda: asks the context whether a sticky error has hit it (marks lost). */
void device__cuda_probe(device *d);

int device__fail(char err[DEVICE_ERROR_MAX], int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Backends. Accounting is done by the caller in device.c; these only get and
 * release the memory. `bytes` is never 0 here. */
int device__sim_open(device *d, char err[DEVICE_ERROR_MAX]);
void device__sim_close(device *d);
int device__sim_alloc(device *d, uint64_t bytes, void **out,
                      char err[DEVICE_ERROR_MAX]);
void device__sim_free(device *d, void *p, uint64_t bytes);
void device__sim_copy_start(device *d, device_copy_batch *b, void *dst,
                            const void *src, uint64_t bytes);
void device__sim_copy_finish(device_copy_batch *b);

int device__cuda_fence_mark(device *d, void **fence,
                            char err[DEVICE_ERROR_MAX]);
int device__cuda_fence_wait(device *d, void *fence,
                            char err[DEVICE_ERROR_MAX]);
/* A pair of timing events, the first recorded on stream 0; NULL when
 * they cannot be made. */
void *device__cuda_span_begin(device *d);
void device__cuda_span_end(device *d, void *span);
/* Waits for the second event, frees both; microseconds between them. */
uint64_t device__cuda_span_take_us(device *d, void *span);
int device__cuda_fence_sync(device *d, void *fence,
                            char err[DEVICE_ERROR_MAX]);
void device__cuda_fence_free(device *d, void *fence);
int device__cuda_open(device *d, char err[DEVICE_ERROR_MAX]);
void device__cuda_close(device *d);
int device__cuda_alloc(device *d, uint64_t bytes, void **out,
                       char err[DEVICE_ERROR_MAX]);
void device__cuda_free(device *d, void *p);
int device__cuda_copy_start(device *d, void *dst, const void *src,
                            uint64_t bytes, char err[DEVICE_ERROR_MAX]);
int device__cuda_copy_finish(device *d, char err[DEVICE_ERROR_MAX]);
/* The device's own free and total bytes; both 0 when they cannot be read. */
void device__cuda_mem_info(device *d, uint64_t *free_bytes,
                           uint64_t *total_bytes);

#endif

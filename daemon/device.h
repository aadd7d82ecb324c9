/* device.h — the GPU tier: a CUDA device or the `sim` stand-in (daemon/).
 *
 * Owns: device memory for weight blobs under max_gpu_mem_mb and copies into
 * it. `sim` is a stand-in GPU in host memory of the same budget: it really
 * allocates and copies the bytes, poisons blobs it frees (0xDB), waits out
 * the time `sim_copy_gbps` implies for each copy, and records its
 * high-water mark, so every tier path runs without a GPU. `cuda:N` uses the
 * CUDA runtime: cudaMalloc, a dedicated non-blocking copy stream, events.
 * Used from the executor thread only (stats read the atomics).
 */
#ifndef DAEMON_DEVICE_H
#define DAEMON_DEVICE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define DEVICE_ERROR_MAX 256

typedef struct device device;

/* `name` is "sim" or "cuda:N"; budget in bytes; sim_gbps 0 = no wait.
 * Returns 0, SLY_E_UNAVAILABLE (no CUDA in this build, no such device), or
 * SLY_E_NO_MEMORY. */
int device_open(const char *name, uint64_t budget, double sim_gbps,
                device **out, char err[DEVICE_ERROR_MAX]);
void device_close(device *d);

/* The name to bind modules with: "cpu" for sim (its memory is host memory),
 * "cuda:N" for CUDA. */
const char *device_bind_name(const device *d);
bool device_is_sim(const device *d);
/* N of cuda:N; -1 for sim. */
int device_cuda_index(const device *d);

/* Allocates `bytes` of device memory. SLY_E_NO_MEMORY when the budget or the
 * device is out of room (the tiers then evict and retry). For cuda:N, here
 * and in device_copy_in: SLY_E_UNAVAILABLE when the device is lost (a sticky
 * CUDA error: every later call fails the same way, the daemon should exit),
 * SLY_E_INTERNAL for any other CUDA failure. */
int device_alloc(device *d, uint64_t bytes, void **out,
                 char err[DEVICE_ERROR_MAX]);
/* Frees (sim: poisons first). Accepts NULL. `bytes` must be what was asked
 * for: the sim checks it and aborts on a mismatch or a double free, since
 * either would make its accounting wrong. */
void device_free(device *d, void *p, uint64_t bytes);

/* Copies host -> device and waits for it (sim: memcpy plus the wait the
 * configured bandwidth implies). `src` should be pinned for full speed. */
int device_copy_in(device *d, void *dst, const void *src, uint64_t bytes,
                   char err[DEVICE_ERROR_MAX]);

/* Copies started and not yet waited for, so that the caller can go on (with
 * the next chunk of a disk read) while they run. Zeroed by the caller; on
 * the caller's stack. cuda: the copies run in order on the copy stream. sim:
 * `busy_until` is when the device's one copy engine of the configured
 * bandwidth, shared by every thread as the stream is, would be done with
 * them (monotonic seconds); the bytes are copied at once. */
typedef struct {
  double busy_until;
  uint32_t started;
} device_copy_batch;

/* Starts a host -> device copy in `b`. `src` and `dst` must stay as they are
 * until device_copy_finish returns, even after an error. Same errors as
 * device_copy_in. */
int device_copy_start(device *d, device_copy_batch *b, void *dst,
                      const void *src, uint64_t bytes,
                      char err[DEVICE_ERROR_MAX]);
/* Waits for every copy of `b` (cuda: the copy stream, so also copies another
 * thread started on it). Call once whatever device_copy_start returned. */
int device_copy_finish(device *d, device_copy_batch *b,
                       char err[DEVICE_ERROR_MAX]);

/* Stream order for memory that changes hands. libtorch's kernels run
 * after shim_forward returns; a blob they read may only be overwritten once
 * they are done. A fence marks that point (cuda: an event recorded on the
 * legacy default stream, which libtorch uses; created in *fence on first
 * use, owned by the caller, freed with device_fence_free). device_fence_wait
 * makes the copies that follow wait for it on the device, never the host.
 * sim computes synchronously: both do nothing there. */
int device_fence_mark(device *d, void **fence, char err[DEVICE_ERROR_MAX]);
int device_fence_wait(device *d, void *fence, char err[DEVICE_ERROR_MAX]);
/* Blocks the calling thread until what came before the fence is done: for a
 * block about to be freed, which CUDA does not promise to wait for (cudaFree
 * "may" synchronize). Accepts a NULL fence. */
int device_fence_sync(device *d, void *fence, char err[DEVICE_ERROR_MAX]);
void device_fence_free(device *d, void *fence);
/* The device time of the work queued between device_span_begin and
 * device_span_end on libtorch's stream: its kernels run after shim_forward
 * returns, so the host's clock counts only their launches. cuda: two timing
 * events on the legacy default stream; device_span_take_us waits for the
 * second, so call it once that work is done (after the outputs are copied
 * out), and it frees the span. begin returns NULL on sim, which computes
 * synchronously, and when it cannot time (out of memory, a CUDA error): the
 * caller times on the host then; end and take accept NULL (take: 0). */
typedef struct device_span device_span;
device_span *device_span_begin(device *d);
void device_span_end(device *d, device_span *s);
uint64_t device_span_take_us(device *d, device_span *s);

/* Whether the device is lost: a sticky error (CUDA's, after a device-side
 * assert or an Xid, or an injected one) that fails every later call. With
 * `probe`, CUDA's context is asked (a few microseconds), which also catches
 * an error libtorch met first: for after a failure; without, only what is
 * known already. The daemon must then fail what is in flight and exit. Any
 * thread; accepts NULL (false). */
bool device_lost(device *d, bool probe);

typedef struct {
  uint64_t budget, used, high_water;
  uint64_t free_bytes, total_bytes; /* the device's own figures (cudaMemGetInfo) */
} device_stats;
void device_get_stats(device *d, device_stats *out);

/* Whether this build has CUDA and can pin host memory. */
bool device_cuda_built(void);

/* Fault-injection hooks for tests. */
/* The next `n` device_alloc calls fail with SLY_E_NO_MEMORY as if the device
 * were full, leaving the budget untouched (n <= 0 clears). Works on any
 * device; the tests use it on sim to drive evict-and-retry. Thread-safe. */
void device_sim_fail_next_allocs(device *d, int n);
/* While on, blobs the sim frees are poisoned and then kept mapped (not
 * counted as used) until device_close, so a test can read the poison. No
 * effect on cuda. */
void device_sim_keep_freed(device *d, bool on);

#endif

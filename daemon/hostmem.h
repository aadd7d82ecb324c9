/* hostmem.h — host memory for weight blobs (daemon/).
 *
 * Owns: allocation of 4096-aligned host buffers for the CPU tier, pinned for
 * fast copies to a GPU when CUDA is there: each buffer is pinned once, when
 * first allocated (never per move, never all at start), with
 * cudaHostRegister on touched pages or cudaHostAlloc, whichever measured
 * cheaper (hostmem_pin_method), falling back to pageable memory with one
 * logged warning. No budget here: the tiers account.
 */
#ifndef DAEMON_HOSTMEM_H
#define DAEMON_HOSTMEM_H

#include <stdbool.h>
#include <stdint.h>

typedef enum {
  HOSTMEM_PAGEABLE,
  HOSTMEM_REGISTER, /* aligned_alloc + touch + cudaHostRegister */
  HOSTMEM_HOSTALLOC, /* cudaHostAlloc */
} hostmem_method;

/* Chooses the method once: pageable without CUDA or with `want_pinned`
 * false. */
void hostmem_init(bool want_pinned, hostmem_method method);
/* The CUDA device pinned memory is for (-1: none set). Pinning and
 * unpinning make it current on the calling thread first: a thread that has
 * made no device current would otherwise pin for device 0, creating a
 * context there, on a machine where slyced uses another GPU. */
void hostmem_set_device(int cuda_index);

/* Allocates `bytes` (rounded up to 4096). Returns NULL when out of memory.
 * *pinned tells whether it is pinned. Free with hostmem_free. */
void *hostmem_alloc(uint64_t bytes, bool *pinned);
void hostmem_free(void *p, uint64_t bytes, bool pinned);

/* Shared-memory regions (clients' and the daemon's output memfds) are
 * registered with CUDA where they are mapped, so that tensors cross to the
 * GPU at pinned speed, while the registered bytes of all regions stay
 * within the limit (max_registered_mb; 0 = none); past it, or without a
 * GPU, a region stays unregistered and the copies are slower, never wrong.
 * `readonly` for a mapping without PROT_WRITE. Returns whether it was
 * registered; pass that to hostmem_unregister_region. Thread-safe. */
void hostmem_set_region_limit(uint64_t bytes);
bool hostmem_register_region(void *p, uint64_t bytes, bool readonly);
void hostmem_unregister_region(void *p, uint64_t bytes, bool registered);
/* Bytes of regions registered now (for stats and tests). */
uint64_t hostmem_registered_bytes(void);

/* Measures both pinning methods on a buffer of `bytes`, page touching
 * included, in seconds; -1 when unavailable. For the benchmark and for
 * choosing the method at start. */
void hostmem_measure(uint64_t bytes, double *register_s, double *hostalloc_s);

#endif

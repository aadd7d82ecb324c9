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

/* Allocates `bytes` (rounded up to 4096). Returns NULL when out of memory.
 * *pinned tells whether it is pinned. Free with hostmem_free. */
void *hostmem_alloc(uint64_t bytes, bool *pinned);
void hostmem_free(void *p, uint64_t bytes, bool pinned);

/* Measures both pinning methods on a buffer of `bytes`, page touching
 * included, in seconds; -1 when unavailable. For the benchmark and for
 * choosing the method at start. */
void hostmem_measure(uint64_t bytes, double *register_s, double *hostalloc_s);

#endif

/* hostmem.c — host buffers for the CPU tier, pinned when a GPU is there
 * (see hostmem.h).
 *
 * Process-wide on purpose: the method is a property of the machine, chosen
 * once at start, and buffers are allocated and freed from any thread. The
 * state is three atomics. A pinned buffer is freed the way the current method
 * pinned it, so the method cannot change while pinned buffers are live.
 *
 * Pinning needs a CUDA context, which the runtime creates on the calling
 * thread's current device: call from a thread where the daemon's device is
 * current (the executor, after device_open), or device 0 gets a context.
 */
#include "hostmem.h"

#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#ifdef SLY_HAVE_CUDA
#include <cuda_runtime_api.h>
#endif

#include "log.h"

#define HOSTMEM__ALIGN 4096u
/* Blobs this big get 2 MiB alignment and transparent huge pages: a fresh
 * blob is filled from disk or copied into at once, and 512 times fewer page
 * faults make that fill run near the disk's speed. */
#define HOSTMEM__HUGE (2u << 20)

static atomic_int hostmem__method = HOSTMEM_PAGEABLE;
static atomic_int hostmem__device = -1;
static _Atomic uint64_t hostmem__pinned_live;
/* One warning each, however many threads get there. */
static atomic_bool hostmem__warned_pageable;
#ifdef SLY_HAVE_CUDA
static atomic_bool hostmem__warned_pin_failed;
#endif

/* `bytes` rounded up to the alignment; false when it does not fit a size_t. */
static bool hostmem__size(uint64_t bytes, size_t *out) {
  if (bytes > SIZE_MAX - HOSTMEM__ALIGN)
    return false;
  uint64_t n = (bytes + HOSTMEM__ALIGN - 1) & ~(uint64_t)(HOSTMEM__ALIGN - 1);
  *out = n > 0 ? (size_t)n : HOSTMEM__ALIGN;
  return true;
}

#ifdef SLY_HAVE_CUDA
/* Whether a GPU is there to pin for; if not, why, into `why`. */
static bool hostmem__gpu(char *why, size_t cap) {
  int n = 0;
  cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) {
    (void)cudaGetLastError();
    snprintf(why, cap, "no usable GPU: cudaGetDeviceCount: %s",
             cudaGetErrorString(e));
    return false;
  }
  if (n == 0) {
    snprintf(why, cap, "no GPU visible");
    return false;
  }
  return true;
}

/* See hostmem_set_device. cudaSetDevice is a thread-local store once the
 * device's context exists. */
static void hostmem__enter(void) {
  int d = atomic_load(&hostmem__device);
  if (d >= 0 && cudaSetDevice(d) != cudaSuccess)
    (void)cudaGetLastError(); /* the call that follows reports it */
}

/* Faults every page in, so that what is pinned (and measured) is memory the
 * process really holds. */
static void hostmem__touch(void *p, size_t n) {
  volatile char *c = p;
  for (size_t i = 0; i < n; i += HOSTMEM__ALIGN)
    c[i] = 0;
}

static void hostmem__warn_pin_failed(size_t n, const char *call,
                                     cudaError_t e) {
  if (atomic_exchange(&hostmem__warned_pin_failed, true))
    return;
  log_warn("hostmem: pinning %zu bytes failed (%s: %s): using pageable "
           "memory for it and for any later buffer that cannot be pinned; "
           "copies from those to the GPU are several times slower",
           n, call, cudaGetErrorString(e));
}
#endif

void hostmem_set_device(int cuda_index) {
  atomic_store(&hostmem__device, cuda_index);
}

void hostmem_init(bool want_pinned, hostmem_method method) {
  hostmem_method chosen = HOSTMEM_PAGEABLE;
  char why[192] = "";
  if (want_pinned && (method == HOSTMEM_REGISTER || method == HOSTMEM_HOSTALLOC)) {
#ifdef SLY_HAVE_CUDA
    if (hostmem__gpu(why, sizeof(why)))
      chosen = method;
#else
    snprintf(why, sizeof(why), "this slyced was built without CUDA");
#endif
  }
  if (chosen != (hostmem_method)atomic_load(&hostmem__method) &&
      atomic_load(&hostmem__pinned_live) > 0) {
    log_warn("hostmem: pinning method kept: %" PRIu64 " pinned buffers "
             "are live and must be freed the way they were pinned",
             atomic_load(&hostmem__pinned_live));
    return;
  }
  atomic_store(&hostmem__method, (int)chosen);
  if (why[0] != '\0' && !atomic_exchange(&hostmem__warned_pageable, true))
    log_warn("hostmem: host memory is pageable, not pinned (%s): copies to "
             "a GPU would be several times slower",
             why);
}

void *hostmem_alloc(uint64_t bytes, bool *pinned) {
  size_t n;
  if (!hostmem__size(bytes, &n))
    return NULL;
#ifdef SLY_HAVE_CUDA
  hostmem_method m = (hostmem_method)atomic_load(&hostmem__method);
  if (m != HOSTMEM_PAGEABLE)
    hostmem__enter();
  if (m == HOSTMEM_HOSTALLOC) {
    void *h = NULL;
    cudaError_t e = cudaHostAlloc(&h, n, cudaHostAllocPortable);
    if (e == cudaSuccess && ((uintptr_t)h & (HOSTMEM__ALIGN - 1)) == 0) {
      atomic_fetch_add(&hostmem__pinned_live, 1);
      *pinned = true;
      return h;
    }
    if (e == cudaSuccess) {
      /* Never seen: CUDA maps whole pages. Handled rather than assumed. */
      (void)cudaFreeHost(h);
      e = cudaErrorInvalidValue;
    }
    (void)cudaGetLastError();
    hostmem__warn_pin_failed(n, "cudaHostAlloc", e);
  }
#endif
  bool huge = n >= HOSTMEM__HUGE;
  /* posix_memalign: aligned_alloc wants sizes that are a multiple of the
   * alignment. */
  void *p = NULL;
  if (posix_memalign(&p, huge ? HOSTMEM__HUGE : HOSTMEM__ALIGN, n) != 0)
    return NULL;
  if (huge)
    (void)madvise(p, n & ~(size_t)(HOSTMEM__HUGE - 1), MADV_HUGEPAGE);
#ifdef SLY_HAVE_CUDA
  if (m == HOSTMEM_REGISTER) {
    hostmem__touch(p, n);
    cudaError_t e = cudaHostRegister(p, n, cudaHostRegisterDefault);
    if (e == cudaSuccess) {
      atomic_fetch_add(&hostmem__pinned_live, 1);
      *pinned = true;
      return p;
    }
    (void)cudaGetLastError();
    hostmem__warn_pin_failed(n, "cudaHostRegister", e);
  }
#endif
  *pinned = false;
  return p;
}

void hostmem_free(void *p, uint64_t bytes, bool pinned) {
  if (p == NULL)
    return;
  if (!pinned) {
    free(p);
    return;
  }
#ifdef SLY_HAVE_CUDA
  /* hostmem_init keeps the method while this buffer is live. */
  hostmem_method m = (hostmem_method)atomic_load(&hostmem__method);
  hostmem__enter();
  cudaError_t e = m == HOSTMEM_HOSTALLOC ? cudaFreeHost(p) : cudaHostUnregister(p);
  atomic_fetch_sub(&hostmem__pinned_live, 1);
  if (e == cudaSuccess) {
    if (m != HOSTMEM_HOSTALLOC)
      free(p);
    return;
  }
  (void)cudaGetLastError();
  /* Still registered, perhaps: the GPU could write into it after reuse. */
  log_error("hostmem: releasing a pinned %" PRIu64 "-byte buffer failed "
            "(%s): leaking it",
            bytes, cudaGetErrorString(e));
#else
  (void)bytes;
  free(p); /* nothing is ever pinned without CUDA */
#endif
}

static _Atomic uint64_t hostmem__region_limit;
static _Atomic uint64_t hostmem__region_bytes;

void hostmem_set_region_limit(uint64_t bytes) {
  atomic_store(&hostmem__region_limit, bytes);
}

uint64_t hostmem_registered_bytes(void) {
  return atomic_load(&hostmem__region_bytes);
}

bool hostmem_register_region(void *p, uint64_t bytes, bool readonly) {
#ifdef SLY_HAVE_CUDA
  if (atomic_load(&hostmem__method) == HOSTMEM_PAGEABLE || bytes == 0)
    return false;
  /* Take the bytes first, so that concurrent callers never pass the limit
   * together. */
  uint64_t limit = atomic_load(&hostmem__region_limit);
  uint64_t was = atomic_fetch_add(&hostmem__region_bytes, bytes);
  if (was + bytes > limit || was + bytes < was) {
    atomic_fetch_sub(&hostmem__region_bytes, bytes);
    return false;
  }
  unsigned flags = cudaHostRegisterDefault |
                   (readonly ? cudaHostRegisterReadOnly : 0u);
  hostmem__enter();
  cudaError_t e = cudaHostRegister(p, (size_t)bytes, flags);
  if (e == cudaSuccess)
    return true;
  (void)cudaGetLastError();
  atomic_fetch_sub(&hostmem__region_bytes, bytes);
  log_debug("hostmem: cudaHostRegister of a %" PRIu64 "-byte region: %s",
            bytes, cudaGetErrorString(e));
  return false;
#else
  (void)p, (void)bytes, (void)readonly;
  return false;
#endif
}

void hostmem_unregister_region(void *p, uint64_t bytes, bool registered) {
  if (!registered)
    return;
#ifdef SLY_HAVE_CUDA
  hostmem__enter();
  if (cudaHostUnregister(p) != cudaSuccess)
    (void)cudaGetLastError(); /* the mapping goes next anyway */
#else
  (void)p;
#endif
  atomic_fetch_sub(&hostmem__region_bytes, bytes);
}

#ifdef SLY_HAVE_CUDA
static double hostmem__now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}
#endif

void hostmem_measure(uint64_t bytes, double *register_s, double *hostalloc_s) {
  *register_s = -1;
  *hostalloc_s = -1;
#ifdef SLY_HAVE_CUDA
  size_t n;
  char why[192];
  if (!hostmem__size(bytes, &n) || !hostmem__gpu(why, sizeof(why)))
    return;
  /* The first call creates the context (hundreds of ms): in neither figure. */
  if (cudaFree(NULL) != cudaSuccess) {
    (void)cudaGetLastError();
    return;
  }

  double t0 = hostmem__now();
  void *p = aligned_alloc(HOSTMEM__ALIGN, n);
  if (p != NULL) {
    hostmem__touch(p, n);
    cudaError_t e = cudaHostRegister(p, n, cudaHostRegisterDefault);
    double t1 = hostmem__now();
    if (e == cudaSuccess) {
      *register_s = t1 - t0;
      if (cudaHostUnregister(p) != cudaSuccess) {
        (void)cudaGetLastError();
        p = NULL; /* leak rather than free what may still be registered */
      }
    } else {
      (void)cudaGetLastError();
    }
    free(p);
  }

  void *h = NULL;
  t0 = hostmem__now();
  cudaError_t e = cudaHostAlloc(&h, n, cudaHostAllocPortable);
  double t1 = hostmem__now();
  if (e == cudaSuccess) {
    *hostalloc_s = t1 - t0;
    (void)cudaFreeHost(h);
  } else {
    (void)cudaGetLastError();
  }
#else
  (void)bytes;
#endif
}

/* device_cuda.c — the `cuda:N` device through the CUDA runtime.
 *
 * Device memory from cudaMalloc, copies on one non-blocking stream of our
 * own (so they never serialize behind the legacy default stream that
 * libtorch's kernels may use). The CUDA runtime keeps the current device per
 * thread, so every entry point sets it first: the device may be opened on
 * one thread and used on another.
 *
 * Errors: cudaErrorMemoryAllocation is cleared and becomes SLY_E_NO_MEMORY
 * (the tiers evict and retry). A sticky error (the context is corrupt, every
 * later call fails the same way) marks the device lost: SLY_E_UNAVAILABLE
 * from then on, and the daemon exits so that systemd restarts it. Anything
 * else is cleared and becomes SLY_E_INTERNAL.
 *
 * Without SLY_HAVE_CUDA, opening fails with SLY_E_UNAVAILABLE and nothing
 * else can be reached.
 */
#include <inttypes.h>
#include <stdlib.h>

#include "device_internal.h"
#include "slyce.h"

#ifdef SLY_HAVE_CUDA

#include <cuda_runtime_api.h>

/* The errors CUDA documents as leaving the process in an inconsistent state
 * ("the process must be terminated and relaunched"). */
static bool device__cuda_sticky_code(cudaError_t e) {
  switch (e) {
  case cudaErrorECCUncorrectable:
  case cudaErrorNvlinkUncorrectable:
  case cudaErrorIllegalAddress:
  case cudaErrorLaunchTimeout:
  case cudaErrorAssert:
  case cudaErrorHardwareStackError:
  case cudaErrorIllegalInstruction:
  case cudaErrorMisalignedAddress:
  case cudaErrorInvalidAddressSpace:
  case cudaErrorInvalidPc:
  case cudaErrorLaunchFailure:
  case cudaErrorMpsClientTerminated:
  case cudaErrorExternalDevice:
    return true;
  default:
    return false;
  }
}

static int device__cuda_lost(device *d, char err[DEVICE_ERROR_MAX]) {
  cudaError_t e = (cudaError_t)atomic_load(&d->lost);
  return device__fail(err, SLY_E_UNAVAILABLE, "%s is lost: %s (%s)",
                      d->bind_name, cudaGetErrorString(e), cudaGetErrorName(e));
}

/* Turns the failure `e` of `what` into a code; see the top of this file. */
static int device__cuda_error(device *d, cudaError_t e, const char *what,
                              char err[DEVICE_ERROR_MAX]) {
  /* Clears a non-sticky error; a sticky one stays and shows again. */
  (void)cudaGetLastError();
  bool sticky = device__cuda_sticky_code(e) || cudaGetLastError() != cudaSuccess;
  if (sticky) {
    int none = 0;
    atomic_compare_exchange_strong(&d->lost, &none, (int)e);
    return device__fail(err, SLY_E_UNAVAILABLE, "%s is lost: %s: %s (%s)",
                        d->bind_name, what, cudaGetErrorString(e),
                        cudaGetErrorName(e));
  }
  if (e == cudaErrorMemoryAllocation)
    return device__fail(err, SLY_E_NO_MEMORY, "%s: %s: %s", d->bind_name,
                        what, cudaGetErrorString(e));
  return device__fail(err, SLY_E_INTERNAL, "%s: %s: %s (%s)", d->bind_name,
                      what, cudaGetErrorString(e), cudaGetErrorName(e));
}

/* Makes the device current on this thread; 0 or a code. */
static int device__cuda_enter(device *d, char err[DEVICE_ERROR_MAX]) {
  if (atomic_load(&d->lost) != 0)
    return device__cuda_lost(d, err);
  cudaError_t e = cudaSetDevice(d->index);
  return e == cudaSuccess ? 0 : device__cuda_error(d, e, "cudaSetDevice", err);
}

int device__cuda_open(device *d, char err[DEVICE_ERROR_MAX]) {
  int count = 0;
  cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess) {
    (void)cudaGetLastError();
    return device__fail(err, SLY_E_UNAVAILABLE,
                        "%s: no usable GPU: cudaGetDeviceCount: %s (%s)",
                        d->bind_name, cudaGetErrorString(e),
                        cudaGetErrorName(e));
  }
  if (d->index >= count)
    return device__fail(err, SLY_E_UNAVAILABLE,
                        "%s: no such device: %d GPU%s visible", d->bind_name,
                        count, count == 1 ? "" : "s");
  /* Every failure while opening means this device cannot be used. */
  e = cudaSetDevice(d->index);
  if (e == cudaSuccess) {
    cudaStream_t s = NULL;
    e = cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking);
    if (e == cudaSuccess) {
      d->stream = s;
      return 0;
    }
  }
  int code = e == cudaErrorMemoryAllocation ? SLY_E_NO_MEMORY : SLY_E_UNAVAILABLE;
  (void)cudaGetLastError();
  return device__fail(err, code, "%s: cannot open: %s (%s)", d->bind_name,
                      cudaGetErrorString(e), cudaGetErrorName(e));
}

void device__cuda_close(device *d) {
  if (d->stream == NULL || device__cuda_enter(d, NULL) < 0)
    return; /* a lost context cannot release anything */
  if (cudaStreamDestroy((cudaStream_t)d->stream) != cudaSuccess)
    (void)cudaGetLastError();
  d->stream = NULL;
}

int device__cuda_alloc(device *d, uint64_t bytes, void **out,
                       char err[DEVICE_ERROR_MAX]) {
  int r = device__cuda_enter(d, err);
  if (r < 0)
    return r;
  void *p = NULL;
  cudaError_t e = cudaMalloc(&p, (size_t)bytes);
  if (e != cudaSuccess)
    return device__cuda_error(d, e, "cudaMalloc", err);
  *out = p;
  return 0;
}

void device__cuda_free(device *d, void *p) {
  if (device__cuda_enter(d, NULL) < 0)
    return; /* lost: the memory went with the context */
  cudaError_t e = cudaFree(p);
  if (e != cudaSuccess)
    device__cuda_error(d, e, "cudaFree", NULL);
}

int device__cuda_copy_start(device *d, void *dst, const void *src,
                            uint64_t bytes, char err[DEVICE_ERROR_MAX]) {
  int r = device__cuda_enter(d, err);
  if (r < 0)
    return r;
  cudaError_t e = cudaMemcpyAsync(dst, src, (size_t)bytes,
                                  cudaMemcpyHostToDevice,
                                  (cudaStream_t)d->stream);
  if (e != cudaSuccess)
    return device__cuda_error(d, e, "cudaMemcpyAsync", err);
  return 0;
}

/* The copy stream only: never a device-wide synchronize, which would wait
 * for the compute the copies are meant to overlap. */
int device__cuda_copy_finish(device *d, char err[DEVICE_ERROR_MAX]) {
  int r = device__cuda_enter(d, err);
  if (r < 0)
    return r;
  cudaError_t e = cudaStreamSynchronize((cudaStream_t)d->stream);
  if (e != cudaSuccess)
    return device__cuda_error(d, e, "cudaStreamSynchronize", err);
  return 0;
}

int device__cuda_fence_mark(device *d, void **fence,
                            char err[DEVICE_ERROR_MAX]) {
  int r = device__cuda_enter(d, err);
  if (r < 0)
    return r;
  cudaError_t e = cudaSuccess;
  if (*fence == NULL) {
    cudaEvent_t ev = NULL;
    e = cudaEventCreateWithFlags(&ev, cudaEventDisableTiming);
    if (e != cudaSuccess)
      return device__cuda_error(d, e, "cudaEventCreate", err);
    *fence = ev;
  }
  /* Stream 0: the legacy default stream, where libtorch runs its kernels
   * unless told otherwise (the shim never sets a stream). */
  e = cudaEventRecord((cudaEvent_t)*fence, 0);
  if (e != cudaSuccess)
    return device__cuda_error(d, e, "cudaEventRecord", err);
  return 0;
}

int device__cuda_fence_wait(device *d, void *fence,
                            char err[DEVICE_ERROR_MAX]) {
  int r = device__cuda_enter(d, err);
  if (r < 0)
    return r;
  cudaError_t e =
      cudaStreamWaitEvent((cudaStream_t)d->stream, (cudaEvent_t)fence, 0);
  if (e != cudaSuccess)
    return device__cuda_error(d, e, "cudaStreamWaitEvent", err);
  return 0;
}

typedef struct {
  cudaEvent_t start, end;
} device__cuda_span;

void *device__cuda_span_begin(device *d) {
  if (device__cuda_enter(d, NULL) < 0)
    return NULL;
  device__cuda_span *s = calloc(1, sizeof(*s));
  if (s == NULL)
    return NULL;
  if (cudaEventCreate(&s->start) != cudaSuccess ||
      cudaEventCreate(&s->end) != cudaSuccess ||
      cudaEventRecord(s->start, 0) != cudaSuccess) {
    (void)cudaGetLastError(); /* a sticky error stays, for the forward */
    if (s->start != NULL)
      (void)cudaEventDestroy(s->start);
    if (s->end != NULL)
      (void)cudaEventDestroy(s->end);
    free(s);
    return NULL;
  }
  return s;
}

void device__cuda_span_end(device *d, void *span) {
  device__cuda_span *s = span;
  if (device__cuda_enter(d, NULL) < 0 ||
      cudaEventRecord(s->end, 0) != cudaSuccess) {
    (void)cudaGetLastError();
    /* Never recorded: take reads 0 instead of waiting. */
    (void)cudaEventDestroy(s->end);
    s->end = NULL;
  }
}

uint64_t device__cuda_span_take_us(device *d, void *span) {
  device__cuda_span *s = span;
  float ms = 0;
  if (s->end != NULL && device__cuda_enter(d, NULL) == 0 &&
      (cudaEventSynchronize(s->end) != cudaSuccess ||
       cudaEventElapsedTime(&ms, s->start, s->end) != cudaSuccess)) {
    (void)cudaGetLastError();
    ms = 0;
  }
  (void)cudaEventDestroy(s->start);
  if (s->end != NULL)
    (void)cudaEventDestroy(s->end);
  free(s);
  return ms > 0 ? (uint64_t)((double)ms * 1000.0) : 0;
}

int device__cuda_fence_sync(device *d, void *fence,
                            char err[DEVICE_ERROR_MAX]) {
  int r = device__cuda_enter(d, err);
  if (r < 0)
    return r;
  cudaError_t e = cudaEventSynchronize((cudaEvent_t)fence);
  if (e != cudaSuccess)
    return device__cuda_error(d, e, "cudaEventSynchronize", err);
  return 0;
}

void device__cuda_fence_free(device *d, void *fence) {
  if (device__cuda_enter(d, NULL) < 0)
    return;
  if (cudaEventDestroy((cudaEvent_t)fence) != cudaSuccess)
    (void)cudaGetLastError();
}

void device__cuda_probe(device *d) {
  if (device__cuda_enter(d, NULL) < 0)
    return;
  /* Any call returns a sticky error; a query of our own stream is cheap and
   * never waits. */
  cudaError_t e = cudaStreamQuery((cudaStream_t)d->stream);
  if (e == cudaErrorNotReady)
    /* Not an error, but the runtime keeps it as this thread's last one, and
     * libtorch checks cudaGetLastError after each kernel it launches: the
     * next forward would fail "device not ready" (PyTorch's CUDAEvent::query
     * clears it the same way). */
    (void)cudaGetLastError();
  else if (e != cudaSuccess)
    device__cuda_error(d, e, "cudaStreamQuery", NULL);
}

void device__cuda_mem_info(device *d, uint64_t *free_bytes,
                           uint64_t *total_bytes) {
  size_t f = 0, t = 0;
  *free_bytes = 0;
  *total_bytes = 0;
  if (device__cuda_enter(d, NULL) < 0)
    return;
  cudaError_t e = cudaMemGetInfo(&f, &t);
  if (e != cudaSuccess) {
    device__cuda_error(d, e, "cudaMemGetInfo", NULL);
    return;
  }
  *free_bytes = f;
  *total_bytes = t;
}

#else /* !SLY_HAVE_CUDA */

int device__cuda_open(device *d, char err[DEVICE_ERROR_MAX]) {
  return device__fail(err, SLY_E_UNAVAILABLE,
                      "%s: this slyced was built without CUDA (CUDA=no)",
                      d->bind_name);
}

/* Unreachable: no cuda device can be opened in this build. */
void device__cuda_close(device *d) { (void)d; }

int device__cuda_alloc(device *d, uint64_t bytes, void **out,
                       char err[DEVICE_ERROR_MAX]) {
  (void)bytes;
  (void)out;
  return device__cuda_open(d, err);
}

void device__cuda_free(device *d, void *p) {
  (void)d;
  (void)p;
}

int device__cuda_copy_start(device *d, void *dst, const void *src,
                            uint64_t bytes, char err[DEVICE_ERROR_MAX]) {
  (void)dst;
  (void)src;
  (void)bytes;
  return device__cuda_open(d, err);
}

int device__cuda_copy_finish(device *d, char err[DEVICE_ERROR_MAX]) {
  return device__cuda_open(d, err);
}

int device__cuda_fence_mark(device *d, void **fence,
                            char err[DEVICE_ERROR_MAX]) {
  (void)fence;
  return device__cuda_open(d, err);
}

int device__cuda_fence_wait(device *d, void *fence,
                            char err[DEVICE_ERROR_MAX]) {
  (void)fence;
  return device__cuda_open(d, err);
}

void *device__cuda_span_begin(device *d) {
  (void)d;
  return NULL;
}

void device__cuda_span_end(device *d, void *span) {
  (void)d;
  (void)span;
}

uint64_t device__cuda_span_take_us(device *d, void *span) {
  (void)d;
  (void)span;
  return 0;
}

int device__cuda_fence_sync(device *d, void *fence,
                            char err[DEVICE_ERROR_MAX]) {
  (void)fence;
  return device__cuda_open(d, err);
}

void device__cuda_fence_free(device *d, void *fence) {
  (void)d;
  (void)fence;
}

void device__cuda_probe(device *d) { (void)d; }

void device__cuda_mem_info(device *d, uint64_t *free_bytes,
                           uint64_t *total_bytes) {
  (void)d;
  *free_bytes = 0;
  *total_bytes = 0;
}

#endif

/* torch_shim.h — the daemon's only door to libtorch (daemon/).
 *
 * A pure-C header over torch_shim.cpp: opaque handles, C errors carrying
 * libtorch's message, no C++ types. Nothing else in the daemon includes a
 * C++ header. This first part reports what the build linked; the slices
 * issue adds modules and tensors.
 */
#ifndef DAEMON_TORCH_SHIM_H
#define DAEMON_TORCH_SHIM_H

#ifdef __cplusplus
extern "C" {
#endif

/* libtorch's version string, e.g. "2.11.0". Static storage. */
const char *shim_torch_version(void);
/* 1 when libtorch sees a usable CUDA device, else 0 (also on error). */
int shim_cuda_available(void);

#ifdef __cplusplus
}
#endif
#endif

// torch_shim.cpp — libtorch behind a C ABI. Every exported body runs inside
// SHIM_GUARD, so no C++ exception ever crosses into C.
#include "torch_shim.h"

#include <exception>

#include <ATen/Context.h>
#include <torch/version.h>

#define SHIM_GUARD(fallback, ...)                                              \
  try {                                                                        \
    __VA_ARGS__                                                                \
  } catch (const std::exception &) {                                           \
    return fallback;                                                           \
  } catch (...) {                                                              \
    return fallback;                                                           \
  }

extern "C" const char *shim_torch_version(void) { return TORCH_VERSION; }

extern "C" int shim_cuda_available(void) {
  SHIM_GUARD(0, return at::hasCUDA() ? 1 : 0;)
}

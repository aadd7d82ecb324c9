/* torch_shim.h — the daemon's only door to libtorch (daemon/).
 *
 * A pure-C header over torch_shim.cpp: opaque handles, errors as negative
 * sly_codes with libtorch's message copied into a caller's buffer, no C++
 * types. Nothing else in the daemon includes a C++ header. Every exported
 * body runs inside one guard that catches `const std::exception&` and `...`.
 *
 * Threads: a shim_module is used by one thread at a time (the executor of
 * its device); creating and freeing may happen on any thread.
 */
#ifndef DAEMON_TORCH_SHIM_H
#define DAEMON_TORCH_SHIM_H

#include <stddef.h>
#include <stdint.h>

#include <cJSON.h>

#include "tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

#define SHIM_ERROR_MAX 512
/* Each tensor inside a weight blob starts on this boundary, so the blob can
 * be read with O_DIRECT and copied to a GPU without re-packing. */
#define SHIM_BLOB_ALIGN 4096

typedef struct shim_module shim_module;
typedef struct shim_values shim_values;

/* libtorch's version string, e.g. "2.11.0". Static storage. */
const char *shim_torch_version(void);
/* 1 when libtorch sees a usable CUDA device, else 0 (also on error). */
int shim_cuda_available(void);

/* libtorch's CUDA caching allocator on device `index` (activations and
 * outputs; the weights are the tiers' own): bytes allocated now, at most
 * so far, and reserved from the device. Returns 0, or -1 when this build
 * has no CUDA or the device is not in use (figures then 0). Thread-safe. */
typedef struct {
  uint64_t allocated, peak_allocated, reserved;
} shim_allocator_stats;
int shim_cuda_allocator_stats(int index, shim_allocator_stats *out);
/* Gives the blocks libtorch's CUDA caching allocator holds and no tensor
 * uses back to the device, for an allocation of the tiers' own that failed.
 * Synchronizes the device; does nothing without CUDA. Thread-safe. */
void shim_cuda_release_cached(void);
/* The constructors shim_module_create knows, NULL-terminated. */
const char *const *shim_constructors(void);

/* Builds a slice's module: "torchscript" ({"path"}) or a built-in ("linear",
 * "mlp", "transformer_encoder_layer", see config/README.md) from `config`;
 * relative paths resolve against `config_dir`. The module is put in eval mode,
 * its parameters and buffers are packed into one flat blob (each tensor
 * SHIM_BLOB_ALIGN-aligned) and re-pointed as views into it, and it is moved
 * to `device` ("cpu", "sim" = cpu, "cuda:N"). Returns 0, SLY_E_BAD_REQUEST
 * (the config is wrong: the message names the key; also an unknown device
 * string), SLY_E_NOT_FOUND (a file is missing), SLY_E_UNAVAILABLE (no such
 * CUDA device), SLY_E_NO_MEMORY or SLY_E_INTERNAL. The caller frees *out with
 * shim_module_free(). */
int shim_module_create(const char *constructor, const cJSON *config,
                       const char *config_dir, const char *device,
                       shim_module **out, char err[SHIM_ERROR_MAX]);
void shim_module_free(shim_module *m);

/* The same on "cpu", but without a blob of values yet: the blob's layout is
 * known, and nothing is copied into a blob until shim_module_fill, or until
 * a bind points the tensors at values read from elsewhere (a restart that
 * finds the slice's cache file). A built-in's parameters are only declared
 * (no memory, no seed drawn, no weights file read); a TorchScript file is
 * loaded whole, its values left where the loader put them. */
int shim_module_create_deferred(const char *constructor, const cJSON *config,
                                const char *config_dir, const char *device,
                                shim_module **out, char err[SHIM_ERROR_MAX]);
/* Gives a deferred module its blob: a built-in's weights file read into it
 * or its seed's values drawn, TorchScript's loaded values copied (nothing
 * when it has one already). Not after shim_module_bind. Same codes as shim_module_create; on failure the
 * module is as it was. */
int shim_module_fill(shim_module *m, char err[SHIM_ERROR_MAX]);
/* 1 when the module's weights hold values: filled, or bound. shim_forward
 * refuses a module that is neither. */
int shim_module_filled(const shim_module *m);
/* Frees the values a deferred TorchScript module was loaded with (a file is
 * loaded whole), keeping their shapes and dtypes, for a module whose values
 * will come from elsewhere (a cache file) by shim_module_bind: they would
 * otherwise stay, outside every budget, until that bind. Nothing for other
 * modules, or once filled or bound. shim_module_fill fails afterwards. */
void shim_module_drop_values(shim_module *m);

/* Size of the weight blob (parameters and buffers, with alignment). */
uint64_t shim_module_blob_bytes(const shim_module *m);
/* How many tensors the blob holds. */
size_t shim_module_blob_tensors(const shim_module *m);

/* One tensor of the blob, in blob order: what the disk cache writes into
 * its safetensors header. `name` is the module's own (state_dict) name and
 * lives as long as the module; tied weights appear once, under their first
 * name. A tensor the protocol cannot describe (a complex buffer, more than
 * PROTO_MAX_DIMS dims) is given as its bytes: UINT8, shape [nbytes]. */
typedef struct {
  const char *name;
  proto_dtype dtype;
  uint32_t ndim;
  uint64_t shape[PROTO_MAX_DIMS];
  uint64_t offset; /* in the blob, a multiple of SHIM_BLOB_ALIGN */
  uint64_t nbytes;
} shim_blob_entry;

/* Entry i < shim_module_blob_tensors(m). Returns 0 or SLY_E_INVALID_ARG. */
int shim_module_blob_entry(const shim_module *m, size_t i,
                           shim_blob_entry *out);

/* The shim's own blob, on the host, as packed by shim_module_create or
 * shim_module_fill (for the first copy into a tier). NULL before the fill
 * of a deferred built-in and once shim_module_bind has been called. */
const void *shim_module_blob_data(const shim_module *m);

/* Re-points every parameter and buffer of the module to views into `base`,
 * which holds shim_module_blob_bytes(m) bytes in the same layout, on
 * `device` ("cpu" or "sim" for host memory, "cuda:N" for device memory), and
 * makes `device` the module's (inputs are moved there). No copy: the memory
 * stays the caller's and must outlive the binding (until the next bind or
 * shim_module_free). The first bind frees the shim's own blob. An output
 * that would alias a weight is copied by shim_forward, so no value ever
 * points into the caller's memory. The module must not run while
 * unbound memory is freed; the tiers make sure. `base` may be NULL when the
 * blob is empty. Returns 0, SLY_E_INVALID_ARG (bad or absent device, base
 * NULL or not 64-byte aligned, or not memory of a CUDA device) or
 * SLY_E_INTERNAL; on failure the module is unchanged. */
int shim_module_bind(shim_module *m, void *base, const char *device,
                     char err[SHIM_ERROR_MAX]);

/* An input in memory the shim does not own: shared memory of a client. The
 * shim wraps it with torch::from_blob; `release(ctx)` is called once when
 * libtorch drops the last reference (after the forward, or later when an
 * output aliases it). Integer and bool inputs are copied before use, since
 * the client could rewrite them after they were checked. */
typedef struct {
  proto_dtype dtype;
  uint32_t ndim;
  uint64_t shape[PROTO_MAX_DIMS];
  void *data;
  void (*release)(void *ctx); /* may be NULL */
  void *ctx;
} shim_input;

/* Wraps inputs as a value list. On failure every release() has been called.
 * The caller frees *out with shim_values_free(). */
int shim_values_from_inputs(const shim_input *in, size_t n, shim_values **out,
                            char err[SHIM_ERROR_MAX]);

/* Runs the module's forward in inference mode on `in` (inputs are moved to
 * the module's device). The outputs — one tensor, or a tuple or list of
 * tensors — become *out. A module that rejects its inputs gives
 * SLY_E_BAD_TENSOR with libtorch's message; an output that is not a tensor
 * or a tuple/list of them gives SLY_E_BAD_TENSOR too. `in` is not consumed. */
int shim_forward(shim_module *m, const shim_values *in, shim_values **out,
                 char err[SHIM_ERROR_MAX]);

size_t shim_values_count(const shim_values *v);
/* Describes value i (dtype, dims, bytes when contiguous). Returns 0, or
 * SLY_E_BAD_TENSOR when its dtype has no protocol name (e.g. complex) or it
 * has more than PROTO_MAX_DIMS dims. */
int shim_values_describe(const shim_values *v, size_t i, proto_dtype *dtype,
                         uint32_t *ndim, uint64_t shape[PROTO_MAX_DIMS],
                         uint64_t *nbytes, char err[SHIM_ERROR_MAX]);
/* Copies value i, contiguous and on the host, into dst (nbytes from
 * shim_values_describe). */
int shim_values_copy_out(const shim_values *v, size_t i, void *dst,
                         char err[SHIM_ERROR_MAX]);
void shim_values_free(shim_values *v);

#ifdef __cplusplus
}
#endif
#endif

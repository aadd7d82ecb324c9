// shim_internal.hpp — private C++ side of the torch shim (daemon/).
//
// Shared by torch_shim.cpp (the C ABI), shim_builtins.cpp (the built-in
// constructors and their config) and shim_weights.cpp (the weight blob and
// safetensors loading). Only these three files include it; nothing here
// crosses the C boundary.
#ifndef DAEMON_SHIM_INTERNAL_HPP
#define DAEMON_SHIM_INTERNAL_HPP

#include <cstdint>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include <torch/script.h>
#include <torch/torch.h>

#include "torch_shim.h"

namespace shim {

// A failure whose sly_code is decided where it is thrown; the guard turns it
// into the C error. The message is one line.
class Error : public std::runtime_error {
public:
  Error(int code, const std::string &msg) : std::runtime_error(msg), code(code) {}
  int code;
};

[[noreturn]] void fail(int code, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

// One line of an exception's message: c10::Error without its backtrace, and
// for a failure inside the TorchScript interpreter the line that names the
// error (its last), since the first only says that something failed.
std::string message_of(const std::exception &e);

// Fills err with msg (one line, truncated) and returns code.
int set_error(char *err, int code, const char *msg);
int set_error(char *err, int code, const std::string &msg);

// Maps an exception to a code and err: shim::Error keeps its code,
// allocation failures give NO_MEMORY, anything else `fallback`. Never throws.
int error_from(const std::exception &e, char *err, int fallback);

at::ScalarType scalar_type(proto_dtype d);
// Returns false when libtorch's type has no protocol name.
bool proto_type(at::ScalarType t, proto_dtype *out);
std::string shape_str(at::IntArrayRef sizes);

// One tensor of a module (parameter, buffer, tensor attribute or a tensor
// its TorchScript code holds as a constant) and its place in the weight blob.
struct Slot {
  std::string name;     // state_dict name, or "(constant N)"
  at::Tensor tensor;    // shares its TensorImpl with the module's tensor
  uint64_t offset = 0;  // SHIM_BLOB_ALIGN-aligned
  uint64_t nbytes = 0;
  // What shim_module_blob_entry says; raw bytes (UINT8, [nbytes]) for a
  // tensor the protocol cannot describe.
  proto_dtype dtype = PROTO_DTYPE_UINT8;
  uint32_t ndim = 0;
  uint64_t shape[PROTO_MAX_DIMS] = {0};
};

// A built-in module: its root (for the parameters' names), its forward, and
// for a seeded one the maker of its values.
struct Builtin {
  // Parameters declared with their shapes and dtype but no values until
  // shim_module_fill or a bind re-points them into a blob.
  std::shared_ptr<torch::nn::Module> root;
  std::function<at::Tensor(const at::Tensor &)> forward;
  // A module of libtorch's own classes initialised from config.seed, in the
  // dtype, whose parameters have root's names in root's order; empty when
  // the values come from a weights file.
  std::function<std::shared_ptr<torch::nn::Module>()> seeded;
};

// Declares a built-in from its config (shim_builtins.cpp): cheap, nothing
// is allocated or initialised. Throws shim::Error with SLY_E_BAD_REQUEST
// naming the key for a bad config. `weights` receives the resolved weights
// path, or stays empty when the module is seeded.
Builtin build_builtin(const std::string &constructor, const cJSON *config,
                      const char *config_dir, std::string *weights);
bool is_builtin(const std::string &constructor);
// Loads config.path with torch::jit::load onto the CPU, in eval mode.
torch::jit::Module build_torchscript(const cJSON *config,
                                     const char *config_dir);
// Joins a relative path to config_dir.
std::string resolve_path(const char *config_dir, const std::string &path);

} // namespace shim

struct shim_module {
  std::string constructor;
  bool is_jit = false;
  torch::jit::Module jit;
  shim::Builtin builtin;
  at::Device device = at::kCPU; // where the weights are: inputs go there
  std::vector<shim::Slot> slots;
  uint64_t blob_bytes = 0;
  // The shim's own blobs, until the first shim_module_bind: host_blob (uint8,
  // SHIM_BLOB_ALIGN-aligned) and, for a module created on "cuda:N", its copy
  // there. own_memory tells the tests when the host blob's memory is gone.
  at::Tensor host_blob;
  at::Tensor device_blob;
  std::weak_ptr<void> own_memory;
  // The caller's memory the views point into once bound (uint8, no owner);
  // undefined before the first bind.
  at::Tensor bound_blob;
  bool bound = false;
  // A built-in's `weights` file, until shim_module_fill has read it.
  std::string pending_weights;
  // shim_module_drop_values has freed a TorchScript module's loaded values.
  bool values_dropped = false;
};

struct shim_values {
  std::vector<at::Tensor> t;
};

namespace shim {

// Collects the module's unique tensors into m->slots with their places in
// the blob and sets m->blob_bytes; allocates nothing (shim_weights.cpp).
void plan_blob(shim_module *m);
// Calls add() for each tensor constant of a TorchScript module's code that
// plan_blob makes a slot of, in slot order (shim_weights.cpp).
void each_constant(const shim_module *m,
                   const std::function<void(const std::string &,
                                            const at::Tensor &)> &add);
// A fresh host blob of m->blob_bytes (uint8, SHIM_BLOB_ALIGN-aligned, its
// padding zeroed, its slots not), whose memory m->own_memory watches.
at::Tensor new_blob(shim_module *m);
// The tensors' current values copied into a new blob that they are
// re-pointed into (m->host_blob). The blob is planned already (plan_blob, at
// creation): planning again would free the slot names that the blob's
// entries (shim_module_blob_entry) point to.
void pack_blob(shim_module *m);
// Makes each slot's tensor a view of `blob` (host or device) at its offset.
void repoint(shim_module *m, const at::Tensor &blob);
// Copies the host blob to `device` in one copy and re-points the views.
void move_to_device(shim_module *m, const at::Device &device);
// Re-points the views into the caller's memory at `base` on `device` and
// drops the shim's own blobs (shim_module_bind). Throws shim::Error with
// SLY_E_INVALID_ARG when `base` is not usable memory of `device`.
void bind(shim_module *m, void *base, const at::Device &device);
// The blob the views point into now (bound, device or host); undefined when
// the module has no weights.
const at::Tensor &current_blob(const shim_module *m);
// Reads a safetensors file into `blob` (a new_blob of m): every slot must be
// in the file with its dtype and shape, and the file must hold nothing
// else. `key` names the config key in messages.
void load_weights(shim_module *m, const std::string &path, const char *key,
                  const at::Tensor &blob);
// Copies the values of a seeded built-in (Builtin::seeded) into `blob`.
void seed_weights(shim_module *m, const at::Tensor &blob);

} // namespace shim

#endif

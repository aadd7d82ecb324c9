// torch_shim.cpp — libtorch behind a C ABI (see torch_shim.h). Every exported
// body runs inside SHIM_GUARD, so no C++ exception ever crosses into C; the
// constructors live in shim_builtins.cpp, the weight blob in shim_weights.cpp.
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <cctype>
#include <exception>
#include <set>
#include <string>
#include <vector>

#include <ATen/Context.h>
#ifdef SLY_HAVE_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#endif
#include <c10/core/InferenceMode.h>
#include <torch/version.h>

#include "shim_internal.hpp"
#include "shim_testing.h"

// Catches everything a body may throw and turns it into (code, err).
// `fallback` is the code of a libtorch error the shim did not classify:
// INTERNAL when building a module, BAD_TENSOR when running one.
#define SHIM_GUARD(err, fallback, ...)                                         \
  try {                                                                        \
    __VA_ARGS__                                                                \
  } catch (const std::exception &e) {                                          \
    return shim::error_from(e, err, fallback);                                 \
  } catch (...) {                                                              \
    return shim::set_error(err, SLY_E_INTERNAL, "unknown C++ exception");      \
  }

// For functions that return nothing: an exception is dropped, never thrown.
#define SHIM_GUARD_VOID(...)                                                   \
  try {                                                                        \
    __VA_ARGS__                                                                \
  } catch (...) {                                                              \
  }

namespace shim {

void fail(int code, const char *fmt, ...) {
  char buf[SHIM_ERROR_MAX];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof(buf), fmt, ap);
  va_end(ap);
  throw Error(code, buf);
}

std::string message_of(const std::exception &e) {
  const auto *c10e = dynamic_cast<const c10::Error *>(&e);
  std::string msg = c10e ? c10e->what_without_backtrace() : e.what();
  std::vector<std::string> lines;
  size_t start = 0;
  while (start <= msg.size()) {
    size_t nl = msg.find('\n', start);
    std::string line = msg.substr(start, nl == std::string::npos ? nl : nl - start);
    while (!line.empty() && isspace((unsigned char)line.back()))
      line.pop_back();
    if (!line.empty())
      lines.push_back(line);
    if (nl == std::string::npos)
      break;
    start = nl + 1;
  }
  if (lines.empty())
    return "unknown error";
  // The interpreter's first line only says that an operation failed; the
  // error itself ("RuntimeError: ...") comes last, after a traceback.
  if (lines.size() > 1 &&
      lines[0].rfind("The following operation failed in the TorchScript", 0) == 0)
    return lines.back();
  return lines[0];
}

int set_error(char *err, int code, const std::string &msg) {
  return set_error(err, code, msg.c_str());
}

int set_error(char *err, int code, const char *msg) {
  if (err)
    snprintf(err, SHIM_ERROR_MAX, "%s", msg);
  return code;
}

int error_from(const std::exception &e, char *err, int fallback) {
  try {
    if (const auto *se = dynamic_cast<const Error *>(&e))
      return set_error(err, se->code, se->what());
    if (dynamic_cast<const std::bad_alloc *>(&e))
      return set_error(err, SLY_E_NO_MEMORY, "out of memory");
    std::string msg = message_of(e);
    // CPU allocation failures are plain c10::Errors from the allocator.
    bool oom = dynamic_cast<const c10::OutOfMemoryError *>(&e) ||
               msg.find("DefaultCPUAllocator: can't allocate memory") !=
                   std::string::npos;
    return set_error(err, oom ? SLY_E_NO_MEMORY : fallback, msg);
  } catch (...) {
    return set_error(err, SLY_E_NO_MEMORY, "out of memory reporting an error");
  }
}

#define SHIM_DTYPES(X)                                                         \
  X(FLOAT32, at::kFloat)                                                       \
  X(FLOAT64, at::kDouble)                                                      \
  X(FLOAT16, at::kHalf)                                                        \
  X(BFLOAT16, at::kBFloat16)                                                   \
  X(INT64, at::kLong)                                                          \
  X(INT32, at::kInt)                                                           \
  X(INT16, at::kShort)                                                         \
  X(INT8, at::kChar)                                                           \
  X(UINT8, at::kByte)                                                          \
  X(BOOL, at::kBool)

at::ScalarType scalar_type(proto_dtype d) {
  switch (d) {
#define SHIM__TO_AT(p, a)                                                      \
  case PROTO_DTYPE_##p:                                                        \
    return a;
    SHIM_DTYPES(SHIM__TO_AT)
#undef SHIM__TO_AT
  default:
    fail(SLY_E_BAD_TENSOR, "unknown dtype %d", (int)d);
  }
}

bool proto_type(at::ScalarType t, proto_dtype *out) {
#define SHIM__FROM_AT(p, a)                                                    \
  if (t == a) {                                                                \
    *out = PROTO_DTYPE_##p;                                                    \
    return true;                                                               \
  }
  SHIM_DTYPES(SHIM__FROM_AT)
#undef SHIM__FROM_AT
  return false;
}

std::string shape_str(at::IntArrayRef sizes) {
  std::string s = "[";
  for (size_t i = 0; i < sizes.size(); i++)
    s += (i ? ", " : "") + std::to_string(sizes[i]);
  return s + "]";
}

} // namespace shim

namespace {

// "cpu", "sim" (the CPU) or "cuda:N" of a device libtorch sees. A config
// gets BAD_REQUEST or UNAVAILABLE; the tiers' bind gets INVALID_ARG for both.
at::Device parse_device(const char *name, int bad, int missing) {
  std::string s = name ? name : "";
  if (s == "cpu" || s == "sim")
    return at::kCPU;
  size_t digits = s.rfind("cuda:", 0) == 0 ? s.size() - 5 : 0;
  if (s != "cuda" && (digits == 0 || digits > 3 ||
                      s.find_first_not_of("0123456789", 5) != std::string::npos))
    shim::fail(bad, "device '%.64s': expected cpu, sim or cuda:N", s.c_str());
  int index = s == "cuda" ? 0 : atoi(s.c_str() + 5);
  size_t count = at::hasCUDA() ? at::getNumGPUs() : 0;
  if ((size_t)index >= count)
    shim::fail(missing, "device '%s': libtorch sees %zu CUDA devices",
               s.c_str(), count);
  return at::Device(at::kCUDA, (c10::DeviceIndex)index);
}

// An output that aliases a weight (TorchScript may return a parameter
// itself, or a view of one) gets its own copy: it would otherwise read the
// tiers' memory after the forward, when that may be freed or re-bound, and
// a parameter returned as is would even follow the next bind.
void own_outputs(const shim_module *m, std::vector<at::Tensor> &ts) {
  const at::Tensor &blob = shim::current_blob(m);
  if (!blob.defined())
    return;
  const char *lo = static_cast<const char *>(blob.const_data_ptr());
  const char *hi = lo + m->blob_bytes;
  for (at::Tensor &t : ts) {
    if (!t.defined() || !t.has_storage())
      continue;
    const char *p = static_cast<const char *>(t.storage().data());
    if (p && p >= lo && p < hi)
      t = t.clone();
  }
}

// Calls a client's release() once, when the last holder lets go: the tensor
// made by from_blob, or the shim itself when it fails before making one.
struct ReleaseOnce {
  void (*fn)(void *);
  void *ctx;
  ReleaseOnce(void (*f)(void *), void *c) : fn(f), ctx(c) {}
  ReleaseOnce(const ReleaseOnce &) = delete;
  ReleaseOnce &operator=(const ReleaseOnce &) = delete;
  ~ReleaseOnce() {
    if (fn)
      fn(ctx);
  }
};

// Adds a forward's result to `out`: a tensor, or a tuple or list of them.
void flatten(const c10::IValue &r, std::vector<at::Tensor> &out) {
  auto one = [&](const c10::IValue &v, const char *where) {
    if (!v.isTensor() || !v.toTensor().defined())
      shim::fail(SLY_E_BAD_TENSOR,
                 "the module returned %s%s, expected a tensor or a tuple or "
                 "list of tensors", where, v.tagKind().c_str());
    out.push_back(v.toTensor());
  };
  if (r.isTuple()) {
    for (const auto &e : r.toTupleRef().elements())
      one(e, "a tuple holding ");
  } else if (r.isList()) {
    for (const c10::IValue &e : r.toListRef())
      one(e, "a list holding ");
  } else {
    one(r, "");
  }
}

// Checks value i and describes it; the same checks guard copy_out.
const at::Tensor &checked(const shim_values *v, size_t i, proto_dtype *dtype,
                          uint64_t *nbytes) {
  if (!v || i >= v->t.size())
    shim::fail(SLY_E_INTERNAL, "value %zu of %zu", i, v ? v->t.size() : 0);
  const at::Tensor &t = v->t[i];
  if (!shim::proto_type(t.scalar_type(), dtype))
    shim::fail(SLY_E_BAD_TENSOR, "output %zu has dtype %s, which the protocol "
               "cannot carry", i, c10::toString(t.scalar_type()));
  if (t.dim() > PROTO_MAX_DIMS)
    shim::fail(SLY_E_BAD_TENSOR, "output %zu has %lld dims, at most %d", i,
               (long long)t.dim(), PROTO_MAX_DIMS);
  if (t.layout() != at::kStrided)
    shim::fail(SLY_E_BAD_TENSOR, "output %zu is not a dense tensor", i);
  *nbytes = (uint64_t)t.numel() * (uint64_t)t.element_size();
  return t;
}

} // namespace

extern "C" const char *shim_torch_version(void) { return TORCH_VERSION; }

extern "C" int shim_cuda_available(void) {
  try {
    return at::hasCUDA() && at::getNumGPUs() > 0 ? 1 : 0;
  } catch (...) {
    return 0;
  }
}

extern "C" int shim_cuda_allocator_stats(int index, shim_allocator_stats *out) {
  *out = shim_allocator_stats{};
#ifdef SLY_HAVE_CUDA
  try {
    if (index < 0 || !at::hasCUDA() || index >= (int)at::getNumGPUs())
      return -1;
    auto st = c10::cuda::CUDACachingAllocator::getDeviceStats(
        static_cast<c10::DeviceIndex>(index));
    const auto agg =
        static_cast<size_t>(c10::CachingAllocator::StatType::AGGREGATE);
    out->allocated = (uint64_t)st.allocated_bytes[agg].current;
    out->peak_allocated = (uint64_t)st.allocated_bytes[agg].peak;
    out->reserved = (uint64_t)st.reserved_bytes[agg].current;
    return 0;
  } catch (...) {
    return -1;
  }
#else
  (void)index;
  return -1;
#endif
}

extern "C" void shim_cuda_release_cached(void) {
#ifdef SLY_HAVE_CUDA
  try {
    if (at::hasCUDA())
      c10::cuda::CUDACachingAllocator::emptyCache();
  } catch (...) {
    /* Nothing released: the caller's retry fails as before. */
  }
#endif
}

extern "C" const char *const *shim_constructors(void) {
  static const char *const names[] = {"torchscript", "linear", "mlp",
                                      "transformer_encoder_layer", nullptr};
  return names;
}

namespace shim {

// Whether the blob holds the slice's values: the shim's own, or memory they
// were read into and bound.
bool filled(const shim_module *m) {
  return m->bound || m->host_blob.defined() || m->blob_bytes == 0;
}

// Gives a module its blob: for TorchScript, a copy of the values it was
// loaded with; for a declared built-in, a new blob filled from the weights
// file or the seed. The tensors are then re-pointed into it. On failure the
// module is as it was.
void fill(shim_module *m) {
  if (filled(m))
    return;
  if (m->is_jit) {
    if (m->values_dropped)
      fail(SLY_E_INTERNAL, "shim_module_fill: the module's loaded values "
           "were dropped (shim_module_drop_values)");
    pack_blob(m); // the loaded module's own values
    return;
  }
  at::Tensor blob = new_blob(m);
  if (!m->pending_weights.empty())
    load_weights(m, m->pending_weights, "config.weights", blob);
  else
    seed_weights(m, blob);
  repoint(m, blob);
  m->host_blob = blob;
  m->pending_weights.clear();
}

} // namespace shim

static int create(const char *constructor, const cJSON *config,
                  const char *config_dir, const char *device, bool defer,
                  shim_module **out, char err[SHIM_ERROR_MAX]) {
  SHIM_GUARD(err, SLY_E_INTERNAL, {
    if (!constructor || !out)
      shim::fail(SLY_E_INTERNAL, "shim_module_create: NULL argument");
    at::Device dev = parse_device(device, SLY_E_BAD_REQUEST, SLY_E_UNAVAILABLE);
    if (defer && !dev.is_cpu())
      shim::fail(SLY_E_INTERNAL, "a deferred module is made on the CPU");
    auto m = std::make_unique<shim_module>();
    m->constructor = constructor;
    if (m->constructor == "torchscript") {
      m->is_jit = true;
      m->jit = shim::build_torchscript(config, config_dir);
      shim::plan_blob(m.get());
    } else if (shim::is_builtin(m->constructor)) {
      m->builtin = shim::build_builtin(m->constructor, config, config_dir,
                                       &m->pending_weights);
      shim::plan_blob(m.get());
    } else {
      shim::fail(SLY_E_BAD_REQUEST,
                 "constructor '%.64s': unknown (known: torchscript, linear, "
                 "mlp, transformer_encoder_layer)", constructor);
    }
    if (!defer)
      shim::fill(m.get());
    shim::move_to_device(m.get(), dev);
    *out = m.release();
    return 0;
  })
}

extern "C" int shim_module_create(const char *constructor, const cJSON *config,
                                  const char *config_dir, const char *device,
                                  shim_module **out, char err[SHIM_ERROR_MAX]) {
  return create(constructor, config, config_dir, device, false, out, err);
}

extern "C" int shim_module_create_deferred(const char *constructor,
                                           const cJSON *config,
                                           const char *config_dir,
                                           const char *device,
                                           shim_module **out,
                                           char err[SHIM_ERROR_MAX]) {
  return create(constructor, config, config_dir, device, true, out, err);
}

extern "C" int shim_module_fill(shim_module *m, char err[SHIM_ERROR_MAX]) {
  SHIM_GUARD(err, SLY_E_INTERNAL, {
    if (!m)
      shim::fail(SLY_E_INTERNAL, "shim_module_fill: NULL module");
    if (m->bound)
      shim::fail(SLY_E_INTERNAL, "shim_module_fill: the module is bound");
    shim::fill(m);
    return 0;
  })
}

extern "C" int shim_module_filled(const shim_module *m) {
  return m && shim::filled(m) ? 1 : 0;
}

extern "C" void shim_module_drop_values(shim_module *m) {
  SHIM_GUARD_VOID({
    if (!m || !m->is_jit || shim::filled(m) || m->values_dropped)
      return;
    torch::NoGradGuard no_grad;
    m->values_dropped = true; // first: a failure half-way drops some
    // One element each, expanded to the slot's shape: sizes and dtype stay
    // (the blob's views are made from them at the bind), the storage goes.
    for (shim::Slot &s : m->slots)
      s.tensor.set_data(
          at::zeros({1}, s.tensor.options()).expand(s.tensor.sizes()));
  })
}

extern "C" void shim_module_free(shim_module *m) { SHIM_GUARD_VOID(delete m;) }

extern "C" uint64_t shim_module_blob_bytes(const shim_module *m) {
  return m ? m->blob_bytes : 0;
}

extern "C" size_t shim_module_blob_tensors(const shim_module *m) {
  return m ? m->slots.size() : 0;
}

extern "C" int shim_module_blob_entry(const shim_module *m, size_t i,
                                      shim_blob_entry *out) {
  if (!m || !out || i >= m->slots.size())
    return SLY_E_INVALID_ARG;
  const shim::Slot &s = m->slots[i];
  shim_blob_entry e;
  memset(&e, 0, sizeof(e));
  e.name = s.name.c_str();
  e.dtype = s.dtype;
  e.ndim = s.ndim;
  memcpy(e.shape, s.shape, sizeof(e.shape));
  e.offset = s.offset;
  e.nbytes = s.nbytes;
  *out = e;
  return 0;
}

extern "C" const void *shim_module_blob_data(const shim_module *m) {
  return m && !m->bound && m->host_blob.defined()
             ? m->host_blob.const_data_ptr()
             : nullptr;
}

extern "C" int shim_module_bind(shim_module *m, void *base, const char *device,
                                char err[SHIM_ERROR_MAX]) {
  SHIM_GUARD(err, SLY_E_INTERNAL, {
    if (!m)
      shim::fail(SLY_E_INVALID_ARG, "shim_module_bind: NULL module");
    shim::bind(m, base,
               parse_device(device, SLY_E_INVALID_ARG, SLY_E_INVALID_ARG));
    return 0;
  })
}

extern "C" int shim_values_from_inputs(const shim_input *in, size_t n,
                                       shim_values **out,
                                       char err[SHIM_ERROR_MAX]) {
  // First every release() gets an owner, so that each runs exactly once
  // whatever fails below: the owners and the tensors holding them die on
  // every path out of this function.
  std::vector<std::shared_ptr<ReleaseOnce>> owners;
  size_t owned = 0;
  try {
    owners.reserve(n);
    for (; owned < n; owned++)
      owners.push_back(
          std::make_shared<ReleaseOnce>(in[owned].release, in[owned].ctx));
  } catch (...) {
    for (size_t i = owned; i < n; i++)
      if (in[i].release)
        in[i].release(in[i].ctx);
    return shim::set_error(err, SLY_E_NO_MEMORY, "out of memory");
  }
  SHIM_GUARD(err, SLY_E_BAD_TENSOR, {
    if (!out || (n > 0 && !in))
      shim::fail(SLY_E_INTERNAL, "shim_values_from_inputs: NULL argument");
    auto v = std::make_unique<shim_values>();
    for (size_t i = 0; i < n; i++) {
      const shim_input &x = in[i];
      if ((unsigned)x.dtype >= PROTO_DTYPE_COUNT || x.ndim > PROTO_MAX_DIMS)
        shim::fail(SLY_E_BAD_TENSOR, "input %zu: bad dtype or %u dims", i,
                   x.ndim);
      std::vector<int64_t> sizes(x.shape, x.shape + x.ndim);
      uint64_t numel = 1;
      for (uint32_t d = 0; d < x.ndim; d++)
        if (x.shape[d] > (uint64_t)INT64_MAX ||
            __builtin_mul_overflow(numel, x.shape[d], &numel))
          shim::fail(SLY_E_BAD_TENSOR, "input %zu: shape overflows", i);
      if (!x.data && numel > 0)
        shim::fail(SLY_E_BAD_TENSOR, "input %zu: no data", i);
      std::shared_ptr<ReleaseOnce> own = owners[i];
      at::Tensor t = torch::from_blob(
          x.data, sizes, [own](void *) {},
          at::TensorOptions().dtype(shim::scalar_type(x.dtype)));
      // The client may rewrite integers after they were checked: copy now,
      // and let the wrapper (and the region) go at once.
      if (!proto_dtype_is_floating(x.dtype))
        t = t.clone();
      v->t.push_back(std::move(t));
    }
    owners.clear();
    *out = v.release();
    return 0;
  })
}

extern "C" int shim_forward(shim_module *m, const shim_values *in,
                            shim_values **out, char err[SHIM_ERROR_MAX]) {
  SHIM_GUARD(err, SLY_E_BAD_TENSOR, {
    if (!m || !in || !out)
      shim::fail(SLY_E_INTERNAL, "shim_forward: NULL argument");
    if (!shim::filled(m))
      shim::fail(SLY_E_INTERNAL, "shim_forward: the module has no weights yet "
                 "(neither filled nor bound)");
    c10::InferenceMode inference;
    std::vector<at::Tensor> xs;
    xs.reserve(in->t.size());
    for (const at::Tensor &t : in->t)
      xs.push_back(t.device() == m->device ? t : t.to(m->device));
    auto v = std::make_unique<shim_values>();
    if (m->is_jit) {
      // Unoptimized, the code reads each tensor constant where its slot's
      // view is now. Optimized, it could pool constants, fold a view of one
      // into a new constant (which keeps pointing into the blob after the
      // slice has moved, freed memory then) or build a fused kernel with
      // the constant's address in it. The setting is per thread; the graph
      // executor reads it when it makes its plan, in the first forward, and
      // the caller's own setting comes back after.
      torch::jit::GraphOptimizerEnabledGuard unoptimized(false);
      std::vector<c10::IValue> args(xs.begin(), xs.end());
      flatten(m->jit.forward(std::move(args)), v->t);
    } else {
      if (xs.size() != 1)
        shim::fail(SLY_E_BAD_TENSOR, "%s expects 1 input, got %zu",
                   m->constructor.c_str(), xs.size());
      v->t.push_back(m->builtin.forward(xs[0]));
    }
    own_outputs(m, v->t);
    *out = v.release();
    return 0;
  })
}

extern "C" size_t shim_values_count(const shim_values *v) {
  return v ? v->t.size() : 0;
}

extern "C" int shim_values_describe(const shim_values *v, size_t i,
                                    proto_dtype *dtype, uint32_t *ndim,
                                    uint64_t shape[PROTO_MAX_DIMS],
                                    uint64_t *nbytes,
                                    char err[SHIM_ERROR_MAX]) {
  SHIM_GUARD(err, SLY_E_BAD_TENSOR, {
    proto_dtype d;
    uint64_t n;
    const at::Tensor &t = checked(v, i, &d, &n);
    if (dtype)
      *dtype = d;
    if (ndim)
      *ndim = (uint32_t)t.dim();
    for (int64_t k = 0; shape && k < t.dim(); k++)
      shape[k] = (uint64_t)t.size(k);
    if (nbytes)
      *nbytes = n;
    return 0;
  })
}

extern "C" int shim_values_copy_out(const shim_values *v, size_t i, void *dst,
                                    char err[SHIM_ERROR_MAX]) {
  SHIM_GUARD(err, SLY_E_BAD_TENSOR, {
    proto_dtype d;
    uint64_t n;
    at::Tensor t = checked(v, i, &d, &n);
    if (n == 0)
      return 0;
    if (!dst)
      shim::fail(SLY_E_INTERNAL, "shim_values_copy_out: NULL destination");
    c10::InferenceMode inference;
    if (!t.device().is_cpu()) {
      /* Straight into dst, one copy: at pinned speed where the region is
       * registered, where .to(kCPU) would copy into pageable memory first
       * and then once more. It returns once the copy is done. */
      at::from_blob(dst, t.sizes(), t.options().device(at::kCPU)).copy_(t);
      return 0;
    }
    t = t.contiguous();
    memcpy(dst, t.data_ptr(), n);
    return 0;
  })
}

extern "C" void shim_values_free(shim_values *v) { SHIM_GUARD_VOID(delete v;) }

// Test-only (shim_testing.h).

extern "C" void *shim_testing_blob(const shim_module *m) {
  return m && m->host_blob.defined() ? m->host_blob.data_ptr() : nullptr;
}

extern "C" int shim_testing_own_blob_freed(const shim_module *m) {
  return m && m->own_memory.expired() ? 1 : 0;
}

extern "C" uint64_t shim_testing_value_bytes(const shim_module *m) {
  try {
    std::set<const void *> seen;
    uint64_t n = 0;
    for (const shim::Slot &s : m->slots) {
      if (!s.tensor.has_storage())
        continue;
      const c10::StorageImpl *st = s.tensor.storage().unsafeGetStorageImpl();
      if (seen.insert(st).second)
        n += st->nbytes();
    }
    return n;
  } catch (...) {
    return 0;
  }
}

extern "C" int shim_testing_views_in_blob(const shim_module *m) {
  try {
    if (!m)
      return 0;
    const at::Tensor &blob = shim::current_blob(m);
    if (!blob.defined())
      return m->blob_bytes == 0;
    const char *lo = static_cast<const char *>(blob.data_ptr());
    // The module's own tensors, found afresh, must be the blob's views.
    std::vector<at::Tensor> ts;
    if (m->is_jit) {
      for (const auto &a : m->jit.named_attributes(true))
        if (a.value.isTensor())
          ts.push_back(a.value.toTensor());
      shim::each_constant(
          m, [&](const std::string &, const at::Tensor &t) { ts.push_back(t); });
    } else {
      for (const auto &p : m->builtin.root->named_parameters(true))
        ts.push_back(p.value());
      for (const auto &b : m->builtin.root->named_buffers(true))
        ts.push_back(b.value());
    }
    for (const at::Tensor &t : ts) {
      const char *p = static_cast<const char *>(t.data_ptr());
      if (p < lo || p > lo + m->blob_bytes ||
          (p - lo) % SHIM_BLOB_ALIGN != 0)
        return 0;
    }
    return 1;
  } catch (...) {
    return 0;
  }
}

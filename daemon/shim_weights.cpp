// shim_weights.cpp — a module's weights as one blob, and safetensors loading.
//
// Every parameter, buffer and tensor attribute of a module is copied into one
// flat host buffer (each at a SHIM_BLOB_ALIGN boundary) and the module's
// tensors are re-pointed with set_data() to views of it. Moving a slice is
// then one copy of the blob and a re-point, never a per-tensor .to(). Once
// bound, the views point into memory the tiers own (shim_module_bind), and
// the shim's own blob goes. Outputs never alias the blob: shim_forward
// copies one that would.
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <set>
#include <string>
#include <unordered_map>

#include "safetensors.h"
#include "shim_internal.hpp"

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "safetensors data and the blob layout are little-endian");

namespace shim {
namespace {

uint64_t align_up(uint64_t n) {
  uint64_t r;
  if (__builtin_add_overflow(n, (uint64_t)SHIM_BLOB_ALIGN - 1, &r))
    fail(SLY_E_NO_MEMORY, "weight blob size overflows");
  return r & ~((uint64_t)SHIM_BLOB_ALIGN - 1);
}

bool dense(const at::Tensor &t) {
  return t.layout() == at::kStrided && !t.is_quantized();
}

// The module's tensors, each once (tied weights share one TensorImpl).
std::vector<Slot> collect(shim_module *m) {
  std::vector<Slot> out;
  std::set<const void *> seen;
  auto add = [&](const std::string &name, const at::Tensor &t) {
    if (!t.defined() || !seen.insert(t.unsafeGetTensorImpl()).second)
      return;
    if (!dense(t))
      fail(SLY_E_BAD_REQUEST, "tensor '%s': only dense tensors can be served",
           name.c_str());
    Slot s;
    s.name = name;
    s.tensor = t;
    s.nbytes = (uint64_t)t.numel() * (uint64_t)t.element_size();
    // A complex buffer (rotary tables) or a float8 weight is served all the
    // same; the blob's entry then names its bytes, which is all a copy of the
    // blob needs.
    if (proto_type(t.scalar_type(), &s.dtype) && t.dim() <= PROTO_MAX_DIMS) {
      s.ndim = (uint32_t)t.dim();
      for (int64_t d = 0; d < t.dim(); d++)
        s.shape[d] = (uint64_t)t.size(d);
    } else {
      s.dtype = PROTO_DTYPE_UINT8;
      s.ndim = 1;
      s.shape[0] = s.nbytes;
    }
    out.push_back(std::move(s));
  };
  if (m->is_jit) {
    for (const auto &a : m->jit.named_attributes(/*recurse=*/true))
      if (a.value.isTensor())
        add(a.name, a.value.toTensor());
    each_constant(m, add);
  } else {
    for (const auto &p : m->builtin.root->named_parameters(/*recurse=*/true))
      add(p.key(), p.value());
    for (const auto &b : m->builtin.root->named_buffers(/*recurse=*/true))
      add(b.key(), b.value());
  }
  return out;
}

at::Tensor view_of(const at::Tensor &blob, const Slot &s) {
  return blob.narrow(0, (int64_t)s.offset, (int64_t)s.nbytes)
      .view(s.tensor.scalar_type())
      .view(s.tensor.sizes());
}

// Reads exactly n bytes at off, or fails naming the file.
void pread_full(int fd, void *dst, uint64_t n, uint64_t off,
                const std::string &what) {
  char *p = static_cast<char *>(dst);
  while (n > 0) {
    size_t chunk = n > (1u << 30) ? (1u << 30) : (size_t)n;
    ssize_t r = pread(fd, p, chunk, (off_t)off);
    if (r < 0 && errno == EINTR)
      continue;
    if (r < 0)
      fail(SLY_E_BAD_REQUEST, "%s: read failed: %s", what.c_str(),
           strerror(errno));
    if (r == 0)
      fail(SLY_E_BAD_REQUEST, "%s: file ends early (truncated while read?)",
           what.c_str());
    p += r;
    n -= (uint64_t)r;
    off += (uint64_t)r;
  }
}

struct Fd {
  int fd = -1;
  ~Fd() {
    if (fd >= 0)
      close(fd);
  }
};

struct Header {
  st_header h{};
  ~Header() { st_header_free(&h); }
};

std::string st_shape(const st_tensor &t) {
  std::string s = "[";
  for (uint32_t i = 0; i < t.ndim; i++)
    s += (i ? ", " : "") + std::to_string(t.shape[i]);
  return s + "]";
}

} // namespace

// Calls add() for each tensor a TorchScript module's code holds as a
// constant, in the order of its functions and their nodes, which loading one
// file always gives alike. Freezing folds a module's weights into its code,
// and tracing captures any tensor that was not a parameter or buffer; served
// as attributes are, they count in the budgets and go to the device with the
// rest of the slice instead of staying on the CPU. The walk enters nested
// blocks (if, loop) and subgraphs (the body of a torch.jit.fork). Left where
// they are: 0-dim constants, which CUDA ops take from the CPU as scalars and
// which would each cost a blob step; and packed or quantized ones, which
// only the CPU runs anyway.
void each_constant(const shim_module *m,
                   const std::function<void(const std::string &,
                                            const at::Tensor &)> &add) {
  size_t k = 0;
  auto one = [&](const at::Tensor &t) {
    if (t.defined() && t.dim() > 0 && dense(t))
      add("(constant " + std::to_string(k++) + ")", t);
  };
  std::function<void(torch::jit::Block *)> walk = [&](torch::jit::Block *b) {
    for (torch::jit::Node *n : b->nodes()) {
      for (c10::Symbol a : n->attributeNames()) {
        switch (n->kindOf(a)) {
        case torch::jit::AttributeKind::t:
          if (n->kind() == c10::prim::Constant)
            one(n->t(a));
          break;
        case torch::jit::AttributeKind::ts:
          if (n->kind() == c10::prim::Constant)
            for (const at::Tensor &t : n->ts(a))
              one(t);
          break;
        case torch::jit::AttributeKind::g:
          walk(n->g(a)->block());
          break;
        case torch::jit::AttributeKind::gs:
          for (const auto &g : n->gs(a))
            walk(g->block());
          break;
        default:
          break;
        }
      }
      for (torch::jit::Block *sub : n->blocks())
        walk(sub);
    }
  };
  auto cu = m->jit._ivalue()->compilation_unit();
  for (torch::jit::Function *fn : cu->get_functions())
    if (fn->isGraphFunction())
      walk(torch::jit::toGraphFunction(*fn).graph()->block());
}

void plan_blob(shim_module *m) {
  m->slots = collect(m);
  uint64_t total = 0;
  for (Slot &s : m->slots) {
    s.offset = total;
    if (__builtin_add_overflow(total, align_up(s.nbytes), &total))
      fail(SLY_E_NO_MEMORY, "weight blob size overflows");
  }
  m->blob_bytes = total;
}

at::Tensor new_blob(shim_module *m) {
  uint64_t total = m->blob_bytes;
  void *p = nullptr;
  if (posix_memalign(&p, SHIM_BLOB_ALIGN, total) != 0)
    fail(SLY_E_NO_MEMORY, "weight blob of %llu bytes: out of memory",
         (unsigned long long)total);
  // The storage frees the memory once the blob and its last view are gone.
  std::shared_ptr<void> owner(p, free);
  m->own_memory = owner;
  uint8_t *base = static_cast<uint8_t *>(p);
  // Zeroed padding keeps the blob's bytes a function of the weights.
  for (const Slot &s : m->slots)
    memset(base + s.offset + s.nbytes, 0, align_up(s.nbytes) - s.nbytes);
  return torch::from_blob(p, {(int64_t)total}, [owner](void *) {},
                          at::TensorOptions().dtype(at::kByte));
}

void pack_blob(shim_module *m) {
  torch::NoGradGuard no_grad;
  if (m->blob_bytes == 0)
    return;
  at::Tensor blob = new_blob(m);
  for (const Slot &s : m->slots)
    view_of(blob, s).copy_(s.tensor);
  repoint(m, blob);
  m->host_blob = blob;
}

void seed_weights(shim_module *m, const at::Tensor &blob) {
  torch::NoGradGuard no_grad;
  std::shared_ptr<torch::nn::Module> r = m->builtin.seeded();
  std::vector<std::pair<std::string, at::Tensor>> ts;
  for (const auto &p : r->named_parameters(/*recurse=*/true))
    ts.emplace_back(p.key(), p.value());
  for (const auto &b : r->named_buffers(/*recurse=*/true))
    ts.emplace_back(b.key(), b.value());
  // The two declarations of a built-in must agree, or the seed's values
  // would land under other names.
  bool same = ts.size() == m->slots.size();
  for (size_t i = 0; same && i < ts.size(); i++) {
    const Slot &s = m->slots[i];
    same = ts[i].first == s.name &&
           ts[i].second.scalar_type() == s.tensor.scalar_type() &&
           ts[i].second.sizes() == s.tensor.sizes();
  }
  if (!same)
    fail(SLY_E_INTERNAL, "%s: the seeded module's tensors differ from the "
         "declared ones", m->constructor.c_str());
  for (size_t i = 0; i < ts.size(); i++)
    view_of(blob, m->slots[i]).copy_(ts[i].second);
}

void repoint(shim_module *m, const at::Tensor &blob) {
  torch::NoGradGuard no_grad;
  for (Slot &s : m->slots)
    s.tensor.set_data(view_of(blob, s));
}

void move_to_device(shim_module *m, const at::Device &device) {
  m->device = device;
  if (device.is_cpu() || m->blob_bytes == 0)
    return;
  at::Tensor dev = at::empty({(int64_t)m->blob_bytes},
                             at::TensorOptions().dtype(at::kByte).device(device));
  dev.copy_(m->host_blob);
  repoint(m, dev);
  m->device_blob = dev;
}

void bind(shim_module *m, void *base, const at::Device &device) {
  torch::NoGradGuard no_grad;
  at::Tensor blob;
  if (m->blob_bytes > 0) {
    // libtorch's own allocations are 64-byte aligned, and its vectorised
    // kernels assume as much of a tensor's start.
    if (!base || (uintptr_t)base % 64 != 0)
      fail(SLY_E_INVALID_ARG, "shim_module_bind: base %p: expected memory "
           "aligned to 64 bytes", base);
    try {
      // No owner: the memory stays the caller's. For CUDA, libtorch checks
      // that the pointer is memory of that device.
      blob = torch::from_blob(base, {(int64_t)m->blob_bytes},
                              at::TensorOptions().dtype(at::kByte).device(device));
    } catch (const std::exception &e) {
      fail(SLY_E_INVALID_ARG, "shim_module_bind: base %p is not memory of %s: %s",
           base, device.str().c_str(), message_of(e).c_str());
    }
  }
  // Every view first, so that a failure leaves the module as it was.
  std::vector<at::Tensor> views;
  views.reserve(m->slots.size());
  for (const Slot &s : m->slots)
    views.push_back(blob.defined()
                        ? view_of(blob, s)
                        : at::empty(s.tensor.sizes(),
                                    s.tensor.options().device(device)));
  for (size_t i = 0; i < views.size(); i++)
    m->slots[i].tensor.set_data(views[i]);
  m->bound_blob = blob;
  m->bound = true;
  m->device = device;
  // The views were the last holders of the shim's own blobs: they go now.
  m->host_blob = at::Tensor();
  m->device_blob = at::Tensor();
}

const at::Tensor &current_blob(const shim_module *m) {
  return m->bound                  ? m->bound_blob
         : m->device_blob.defined() ? m->device_blob
                                    : m->host_blob;
}

void load_weights(shim_module *m, const std::string &path, const char *key,
                  const at::Tensor &blob) {
  std::string what = std::string(key) + ": " + path;
  Fd f;
  f.fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (f.fd < 0)
    fail(errno == ENOENT ? SLY_E_NOT_FOUND : SLY_E_BAD_REQUEST, "%s: %s",
         what.c_str(), strerror(errno));
  struct stat st;
  if (fstat(f.fd, &st) != 0)
    fail(SLY_E_BAD_REQUEST, "%s: %s", what.c_str(), strerror(errno));
  if (!S_ISREG(st.st_mode))
    fail(SLY_E_BAD_REQUEST, "%s: not a regular file", what.c_str());
  uint64_t size = (uint64_t)st.st_size;

  uint8_t prefix[8] = {0};
  char err[ST_ERROR_MAX];
  uint64_t header_len = 0;
  if (size >= 8)
    pread_full(f.fd, prefix, 8, 0, what);
  if (st_header_len(prefix, size, &header_len, err) != 0)
    fail(SLY_E_BAD_REQUEST, "%s: not a safetensors file: %s", what.c_str(), err);
  std::string json(header_len, '\0');
  pread_full(f.fd, &json[0], header_len, 8, what);
  Header h;
  if (st_header_parse(json.data(), json.size(), size, &h.h, err) != 0)
    fail(SLY_E_BAD_REQUEST, "%s: not a safetensors file: %s", what.c_str(), err);

  std::set<std::string> names;
  for (const Slot &s : m->slots)
    names.insert(s.name);
  std::unordered_map<std::string, const st_tensor *> in_file;
  for (size_t i = 0; i < h.h.n_tensors; i++) {
    if (!names.count(h.h.tensors[i].name))
      fail(SLY_E_BAD_REQUEST, "%s: tensor '%.128s' is not in the module",
           what.c_str(), h.h.tensors[i].name);
    in_file[h.h.tensors[i].name] = &h.h.tensors[i];
  }
  for (const Slot &s : m->slots) {
    auto it = in_file.find(s.name);
    const st_tensor *t = it == in_file.end() ? nullptr : it->second;
    if (!t)
      fail(SLY_E_BAD_REQUEST, "%s: tensor '%s' is missing", what.c_str(),
           s.name.c_str());
    proto_dtype want;
    if (!proto_type(s.tensor.scalar_type(), &want) || t->dtype != want)
      fail(SLY_E_BAD_REQUEST, "%s: tensor '%s' is %s, the module's is %s "
           "(config.dtype)", what.c_str(), s.name.c_str(),
           st_dtype_name(t->dtype), c10::toString(s.tensor.scalar_type()));
    bool same = t->ndim == (uint32_t)s.tensor.dim();
    for (uint32_t d = 0; same && d < t->ndim; d++)
      same = t->shape[d] == (uint64_t)s.tensor.size(d);
    if (!same)
      fail(SLY_E_BAD_REQUEST, "%s: tensor '%s' has shape %s, the module's is %s",
           what.c_str(), s.name.c_str(), st_shape(*t).c_str(),
           shape_str(s.tensor.sizes()).c_str());
  }
  if (m->blob_bytes == 0)
    return;
  // Straight into the blob, at the slots' places.
  uint8_t *base = static_cast<uint8_t *>(blob.data_ptr());
  for (const Slot &s : m->slots) {
    const st_tensor *t = in_file.at(s.name);
    pread_full(f.fd, base + s.offset, s.nbytes, h.h.data_offset + t->begin,
               what);
  }
}

} // namespace shim

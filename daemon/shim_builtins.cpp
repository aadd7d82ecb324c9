// shim_builtins.cpp — the built-in constructors: linear, mlp and
// transformer_encoder_layer, made with libtorch's C++ modules from a config.
//
// Parameter names are PyTorch's state_dict names of the equivalent Python
// module, so a `weights` file saved from PyTorch loads as is:
//   linear                     nn.Linear: weight, bias
//   mlp                        a module whose `layers` is an nn.Sequential of
//                              Linear, act, Linear, ..., Linear: layers.0.weight,
//                              layers.0.bias, layers.2.weight, ... (Linear at
//                              even indices, activations at odd ones)
//   transformer_encoder_layer  nn.TransformerEncoderLayer: self_attn.in_proj_weight,
//                              self_attn.in_proj_bias, self_attn.out_proj.weight,
//                              self_attn.out_proj.bias, linear1.*, linear2.*,
//                              norm1.*, norm2.* (weight and bias each)
#include <cJSON.h>
#include <errno.h>
#include <string.h>
#include <sys/stat.h>

#include <cmath>
#include <mutex>
#include <set>

#include "shim_internal.hpp"

namespace shim {
namespace {

// Features, heads and layer counts past these are configuration mistakes,
// not models: they would only reach the allocator as absurd sizes.
constexpr int64_t kMaxFeatures = 1 << 24;
constexpr int kMaxHidden = 256;
constexpr double kMaxExact = 9007199254740991.0; // 2^53 - 1

// A constructor's config object: checks that every key is known and typed,
// and names the key in every message.
class Config {
public:
  Config(const cJSON *obj, std::initializer_list<const char *> known)
      : obj_(obj) {
    if (!obj_)
      return;
    if (!cJSON_IsObject(obj_))
      fail(SLY_E_BAD_REQUEST, "config: expected an object");
    std::set<std::string> seen;
    for (const cJSON *c = obj_->child; c; c = c->next) {
      bool ok = false;
      for (const char *k : known)
        ok = ok || std::string(k) == c->string;
      if (!ok)
        fail(SLY_E_BAD_REQUEST, "config.%.64s: unknown key", c->string);
      if (!seen.insert(c->string).second)
        fail(SLY_E_BAD_REQUEST, "config.%.64s: duplicate key", c->string);
    }
  }

  const cJSON *get(const char *key) const {
    return obj_ ? cJSON_GetObjectItemCaseSensitive(obj_, key) : nullptr;
  }

  // A positive integer; `def` < 0 means required.
  int64_t positive(const char *key, int64_t def = -1) const {
    const cJSON *j = get(key);
    if (!j) {
      if (def < 0)
        fail(SLY_E_BAD_REQUEST, "config.%s: required", key);
      return def;
    }
    return positive_value(j, key);
  }

  static int64_t positive_value(const cJSON *j, const std::string &what) {
    double v = cJSON_IsNumber(j) ? j->valuedouble : 0;
    if (!cJSON_IsNumber(j) || !std::isfinite(v) || v != std::floor(v) ||
        v < 1 || v > (double)kMaxFeatures)
      fail(SLY_E_BAD_REQUEST,
           "config.%s: expected a positive integer (at most %lld)",
           what.c_str(), (long long)kMaxFeatures);
    return (int64_t)v;
  }

  bool boolean(const char *key, bool def) const {
    const cJSON *j = get(key);
    if (!j)
      return def;
    if (!cJSON_IsBool(j))
      fail(SLY_E_BAD_REQUEST, "config.%s: expected true or false", key);
    return cJSON_IsTrue(j);
  }

  std::string choice(const char *key, const char *def,
                     std::initializer_list<const char *> options) const {
    const cJSON *j = get(key);
    if (!j)
      return def;
    std::string list;
    for (const char *o : options) {
      if (cJSON_IsString(j) && std::string(o) == j->valuestring)
        return o;
      list += list.empty() ? "" : ", ";
      list += std::string("\"") + o + "\"";
    }
    fail(SLY_E_BAD_REQUEST, "config.%s: expected one of %s", key, list.c_str());
  }

  double number(const char *key, double def, double lo, double hi,
                bool lo_open) const {
    const cJSON *j = get(key);
    if (!j)
      return def;
    double v = cJSON_IsNumber(j) ? j->valuedouble : NAN;
    if (!std::isfinite(v) || v < lo || (lo_open && v == lo) || v > hi)
      fail(SLY_E_BAD_REQUEST, "config.%s: expected a number %s %g and <= %g",
           key, lo_open ? ">" : ">=", lo, hi);
    return v;
  }

private:
  const cJSON *obj_;
};

// dtype, and seed or weights: the keys every built-in shares.
struct Common {
  at::ScalarType dtype = at::kFloat;
  uint64_t seed = 0;
  std::string weights; // resolved; empty when seeded
};

Common common(const Config &c, const char *config_dir) {
  Common r;
  std::string d = c.choice("dtype", "float32", {"float32", "bfloat16", "float16"});
  r.dtype = d == "bfloat16" ? at::kBFloat16 : d == "float16" ? at::kHalf : at::kFloat;
  const cJSON *seed = c.get("seed"), *weights = c.get("weights");
  if (seed && weights)
    fail(SLY_E_BAD_REQUEST,
         "config.seed: give config.seed or config.weights, not both");
  if (seed) {
    double v = cJSON_IsNumber(seed) ? seed->valuedouble : -1;
    if (!std::isfinite(v) || v != std::floor(v) || v < 0 || v > kMaxExact)
      fail(SLY_E_BAD_REQUEST, "config.seed: expected a non-negative integer");
    r.seed = (uint64_t)v;
  }
  if (weights) {
    if (!cJSON_IsString(weights) || weights->valuestring[0] == '\0')
      fail(SLY_E_BAD_REQUEST,
           "config.weights: expected the path of a safetensors file");
    r.weights = resolve_path(config_dir, weights->valuestring);
  }
  return r;
}

// ---- the modules that run ------------------------------------------------
//
// Declared, not built: each parameter has its shape and dtype on one shared
// zero (an expanded 0-d tensor), so a skeleton costs neither memory nor
// initialisation. A restart takes the values from the cache file, and
// shim_module_fill from the weights file or the seeded module below; either
// re-points the parameters into the blob with set_data. The forwards call
// the functions libtorch's own modules call, so the results are theirs.

at::Tensor declared(at::IntArrayRef sizes, at::ScalarType dtype) {
  return at::zeros({}, at::TensorOptions().dtype(dtype)).expand(sizes);
}

// A holder of parameters and submodules under PyTorch's names.
struct Node : torch::nn::Module {
  at::Tensor param(const char *name, at::IntArrayRef sizes, at::ScalarType dt) {
    return register_parameter(name, declared(sizes, dt),
                              /*requires_grad=*/false);
  }
  std::shared_ptr<Node> child(const std::string &name) {
    return register_module(name, std::make_shared<Node>());
  }
};

struct LinearP {
  at::Tensor w, b; // b undefined without a bias

  LinearP() = default;
  LinearP(Node &n, int64_t in, int64_t out, bool bias, at::ScalarType dt)
      : w(n.param("weight", {out, in}, dt)),
        b(bias ? n.param("bias", {out}, dt) : at::Tensor()) {}
  at::Tensor operator()(const at::Tensor &x) const {
    return torch::linear(x, w, b);
  }
};

at::Tensor activation(const std::string &name, const at::Tensor &x) {
  if (name == "gelu")
    return torch::gelu(x);
  if (name == "tanh")
    return torch::tanh(x);
  if (name == "silu")
    return torch::silu(x);
  return torch::relu(x);
}

// ---- the values of a seeded module -----------------------------------------
//
// A built-in without a weights file gets the values libtorch's own modules
// draw from the seed. They are made only by shim_module_fill, on a module of
// libtorch's classes that is copied into the blob and dropped, so that a
// seed gives the same weights (and cache files) as it always did.

torch::nn::AnyModule activation_module(const std::string &name) {
  if (name == "gelu")
    return torch::nn::AnyModule(torch::nn::GELU());
  if (name == "tanh")
    return torch::nn::AnyModule(torch::nn::Tanh());
  if (name == "silu")
    return torch::nn::AnyModule(torch::nn::SiLU());
  return torch::nn::AnyModule(torch::nn::ReLU());
}

struct SeededMlp : torch::nn::Module {
  torch::nn::Sequential layers;
};

// nn.TransformerEncoderLayer's submodules, made in its order (the order the
// generator is drawn from).
struct SeededTel : torch::nn::Module {
  SeededTel(int64_t d, int64_t nhead, int64_t ff, double eps) {
    using namespace torch::nn;
    register_module("self_attn",
                    MultiheadAttention(MultiheadAttentionOptions(d, nhead)));
    register_module("linear1", Linear(d, ff));
    register_module("linear2", Linear(ff, d));
    register_module("norm1", LayerNorm(LayerNormOptions({d}).eps(eps)));
    register_module("norm2", LayerNorm(LayerNormOptions({d}).eps(eps)));
  }
};

// ---- the constructors ------------------------------------------------------

Builtin make_linear(const Config &c, const Common &com) {
  int64_t in = c.positive("in_features"), out = c.positive("out_features");
  bool bias = c.boolean("bias", true);
  auto root = std::make_shared<Node>();
  LinearP l(*root, in, out, bias, com.dtype);
  auto seeded = [=] {
    torch::nn::Linear seeded(torch::nn::LinearOptions(in, out).bias(bias));
    return seeded.ptr();
  };
  return {root, [l](const at::Tensor &x) { return l(x); }, seeded};
}

Builtin make_mlp(const Config &c, const Common &com) {
  int64_t in = c.positive("in_features"), out = c.positive("out_features");
  const cJSON *hidden = c.get("hidden_features");
  if (!hidden)
    fail(SLY_E_BAD_REQUEST, "config.hidden_features: required");
  if (!cJSON_IsArray(hidden))
    fail(SLY_E_BAD_REQUEST,
         "config.hidden_features: expected an array of positive integers");
  if (cJSON_GetArraySize(hidden) > kMaxHidden)
    fail(SLY_E_BAD_REQUEST, "config.hidden_features: at most %d layers",
         kMaxHidden);
  std::vector<int64_t> dims{in};
  int i = 0;
  for (const cJSON *h = hidden->child; h; h = h->next, i++)
    dims.push_back(Config::positive_value(
        h, "hidden_features[" + std::to_string(i) + "]"));
  dims.push_back(out);
  std::string act = c.choice("activation", "relu", {"relu", "gelu", "tanh", "silu"});
  bool bias = c.boolean("bias", true);

  // nn.Sequential's names: Linear at even indices, activations between.
  auto root = std::make_shared<Node>();
  auto seq = root->child("layers");
  std::vector<LinearP> ls;
  for (size_t k = 0; k + 1 < dims.size(); k++)
    ls.emplace_back(*seq->child(std::to_string(2 * k)), dims[k], dims[k + 1],
                    bias, com.dtype);
  auto forward = [ls, act](const at::Tensor &x) {
    at::Tensor h = x;
    for (size_t k = 0; k < ls.size(); k++)
      h = k + 1 < ls.size() ? activation(act, ls[k](h)) : ls[k](h);
    return h;
  };
  auto seeded = [dims, act, bias] {
    auto r = std::make_shared<SeededMlp>();
    torch::nn::Sequential s;
    for (size_t k = 0; k + 1 < dims.size(); k++) {
      s->push_back(torch::nn::Linear(
          torch::nn::LinearOptions(dims[k], dims[k + 1]).bias(bias)));
      if (k + 2 < dims.size())
        s->push_back(activation_module(act));
    }
    r->layers = r->register_module("layers", s);
    return std::shared_ptr<torch::nn::Module>(r);
  };
  return {root, forward, seeded};
}

// nn.TransformerEncoderLayer in eval mode, with Python's parameter names.
// MultiheadAttention is sequence-first: batch-first inputs are transposed.
struct Tel {
  int64_t d_model = 0, nhead = 0;
  double eps = 1e-5;
  bool norm_first = false, batch_first = true, gelu = false;
  at::Tensor in_w, in_b;
  LinearP out, l1, l2;
  at::Tensor n1w, n1b, n2w, n2b;

  Tel(Node &root, int64_t d, int64_t nh, int64_t ff, at::ScalarType dt)
      : d_model(d), nhead(nh) {
    auto sa = root.child("self_attn");
    in_w = sa->param("in_proj_weight", {3 * d, d}, dt);
    in_b = sa->param("in_proj_bias", {3 * d}, dt);
    out = LinearP(*sa->child("out_proj"), d, d, true, dt);
    l1 = LinearP(*root.child("linear1"), d, ff, true, dt);
    l2 = LinearP(*root.child("linear2"), ff, d, true, dt);
    auto n1 = root.child("norm1"), n2 = root.child("norm2");
    n1w = n1->param("weight", {d}, dt);
    n1b = n1->param("bias", {d}, dt);
    n2w = n2->param("weight", {d}, dt);
    n2b = n2->param("bias", {d}, dt);
  }

  at::Tensor sa(const at::Tensor &x) const {
    namespace F = torch::nn::functional;
    return std::get<0>(F::detail::multi_head_attention_forward(
        x, x, x, d_model, nhead, in_w, in_b, /*bias_k=*/{}, /*bias_v=*/{},
        /*add_zero_attn=*/false, /*dropout_p=*/0.0, out.w, out.b,
        /*training=*/false, /*key_padding_mask=*/{}, /*need_weights=*/false));
  }
  at::Tensor norm(const at::Tensor &x, const at::Tensor &w,
                  const at::Tensor &b) const {
    return torch::layer_norm(x, {d_model}, w, b, eps);
  }
  at::Tensor ff(const at::Tensor &x) const {
    at::Tensor h = l1(x);
    return l2(gelu ? torch::gelu(h) : torch::relu(h));
  }

  at::Tensor forward(const at::Tensor &src) const {
    TORCH_CHECK(src.dim() == 2 || src.dim() == 3,
                "transformer_encoder_layer expects a 3-D input ",
                batch_first ? "(batch, seq, d_model)" : "(seq, batch, d_model)",
                " or a 2-D one (seq, d_model), got ", src.dim(), "-D ",
                src.sizes());
    TORCH_CHECK(src.size(-1) == d_model,
                "transformer_encoder_layer expects d_model = ", d_model,
                " features in the last dim, got ", src.sizes());
    bool unbatched = src.dim() == 2;
    at::Tensor x = unbatched     ? src.unsqueeze(1)
                   : batch_first ? src.transpose(0, 1)
                                 : src;
    if (norm_first) {
      x = x + sa(norm(x, n1w, n1b));
      x = x + ff(norm(x, n2w, n2b));
    } else {
      x = norm(x + sa(x), n1w, n1b);
      x = norm(x + ff(x), n2w, n2b);
    }
    return unbatched ? x.squeeze(1) : batch_first ? x.transpose(0, 1) : x;
  }
};

Builtin make_tel(const Config &c, const Common &com) {
  int64_t d = c.positive("d_model"), nhead = c.positive("nhead");
  int64_t ff = c.positive("dim_feedforward", 2048);
  if (d % nhead != 0)
    fail(SLY_E_BAD_REQUEST,
         "config.nhead: %lld does not divide config.d_model (%lld)",
         (long long)nhead, (long long)d);
  std::string act = c.choice("activation", "relu", {"relu", "gelu"});
  bool norm_first = c.boolean("norm_first", false);
  bool batch_first = c.boolean("batch_first", true);
  double eps = c.number("layer_norm_eps", 1e-5, 0, 1, /*lo_open=*/true);
  c.number("dropout", 0, 0, 1, false); // accepted for PyTorch's sake; eval mode
  auto root = std::make_shared<Node>();
  auto t = std::make_shared<Tel>(*root, d, nhead, ff, com.dtype);
  t->eps = eps;
  t->norm_first = norm_first;
  t->batch_first = batch_first;
  t->gelu = act == "gelu";
  return {root, [t](const at::Tensor &x) { return t->forward(x); },
          [=] {
            return std::shared_ptr<torch::nn::Module>(
                std::make_shared<SeededTel>(d, nhead, ff, eps));
          }};
}

} // namespace

torch::jit::Module build_torchscript(const cJSON *config,
                                     const char *config_dir) {
  Config c(config, {"path"});
  const cJSON *p = c.get("path");
  if (!p)
    fail(SLY_E_BAD_REQUEST, "config.path: required");
  if (!cJSON_IsString(p) || p->valuestring[0] == '\0')
    fail(SLY_E_BAD_REQUEST,
         "config.path: expected the path of a TorchScript file");
  std::string path = resolve_path(config_dir, p->valuestring);
  struct stat st;
  if (stat(path.c_str(), &st) != 0)
    fail(errno == ENOENT ? SLY_E_NOT_FOUND : SLY_E_BAD_REQUEST,
         "config.path: %s: %s", path.c_str(), strerror(errno));
  if (!S_ISREG(st.st_mode))
    fail(SLY_E_BAD_REQUEST, "config.path: %s: not a regular file", path.c_str());
  torch::jit::Module m;
  try {
    m = torch::jit::load(path, torch::kCPU);
  } catch (const std::exception &e) {
    fail(SLY_E_BAD_REQUEST, "config.path: %s: not a TorchScript file: %s",
         path.c_str(), message_of(e).c_str());
  }
  if (!m.find_method("forward"))
    fail(SLY_E_BAD_REQUEST, "config.path: %s: the module has no forward()",
         path.c_str());
  m.eval();
  return m;
}

bool is_builtin(const std::string &constructor) {
  return constructor == "linear" || constructor == "mlp" ||
         constructor == "transformer_encoder_layer";
}

std::string resolve_path(const char *config_dir, const std::string &path) {
  if (path.empty() || path[0] == '/' || !config_dir || !config_dir[0])
    return path;
  std::string dir(config_dir);
  return dir.back() == '/' ? dir + path : dir + "/" + path;
}

Builtin build_builtin(const std::string &constructor, const cJSON *config,
                      const char *config_dir, std::string *weights) {
  Builtin (*make)(const Config &, const Common &);
  std::unique_ptr<Config> c;
  if (constructor == "linear") {
    c.reset(new Config(config, {"in_features", "out_features", "bias", "dtype",
                                "seed", "weights"}));
    make = make_linear;
  } else if (constructor == "mlp") {
    c.reset(new Config(config, {"in_features", "hidden_features",
                                "out_features", "activation", "bias", "dtype",
                                "seed", "weights"}));
    make = make_mlp;
  } else if (constructor == "transformer_encoder_layer") {
    c.reset(new Config(config, {"d_model", "nhead", "dim_feedforward",
                                "activation", "norm_first", "layer_norm_eps",
                                "batch_first", "dropout", "dtype", "seed",
                                "weights"}));
    make = make_tel;
  } else {
    fail(SLY_E_BAD_REQUEST, "constructor '%.64s': unknown", constructor.c_str());
  }
  Common com = common(*c, config_dir);
  Builtin b = make(*c, com);
  if (com.weights.empty()) {
    auto make_seeded = std::move(b.seeded);
    b.seeded = [make_seeded, com] {
      std::shared_ptr<torch::nn::Module> r;
      {
        // libtorch's initialisers draw from the global generator: one
        // construction at a time keeps a seed's weights the same on any
        // thread.
        static std::mutex mu;
        std::lock_guard<std::mutex> lock(mu);
        torch::manual_seed(com.seed);
        r = make_seeded();
      }
      r->to(com.dtype);
      return r;
    };
  } else {
    b.seeded = nullptr;
  }
  *weights = com.weights;
  return b;
}

} // namespace shim

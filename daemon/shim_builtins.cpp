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

torch::nn::AnyModule activation_module(const std::string &name) {
  if (name == "gelu")
    return torch::nn::AnyModule(torch::nn::GELU());
  if (name == "tanh")
    return torch::nn::AnyModule(torch::nn::Tanh());
  if (name == "silu")
    return torch::nn::AnyModule(torch::nn::SiLU());
  return torch::nn::AnyModule(torch::nn::ReLU());
}

struct Mlp : torch::nn::Module {
  torch::nn::Sequential layers;
};

// nn.TransformerEncoderLayer in eval mode. libtorch's own C++ layer has no
// norm_first or layer_norm_eps, so the layer is put together from libtorch's
// MultiheadAttention, Linear and LayerNorm with Python's submodule names.
// MultiheadAttention is sequence-first: batch-first inputs are transposed.
struct Tel : torch::nn::Module {
  int64_t d_model = 0;
  bool norm_first = false, batch_first = true, gelu = false;
  torch::nn::MultiheadAttention self_attn{nullptr};
  torch::nn::Linear linear1{nullptr}, linear2{nullptr};
  torch::nn::LayerNorm norm1{nullptr}, norm2{nullptr};

  Tel(int64_t d, int64_t nhead, int64_t ff, double eps)
      : d_model(d) {
    using namespace torch::nn;
    self_attn = register_module(
        "self_attn", MultiheadAttention(MultiheadAttentionOptions(d, nhead)));
    linear1 = register_module("linear1", Linear(d, ff));
    linear2 = register_module("linear2", Linear(ff, d));
    norm1 = register_module("norm1", LayerNorm(LayerNormOptions({d}).eps(eps)));
    norm2 = register_module("norm2", LayerNorm(LayerNormOptions({d}).eps(eps)));
  }

  at::Tensor sa(const at::Tensor &x) {
    return std::get<0>(self_attn->forward(x, x, x, {}, /*need_weights=*/false));
  }
  at::Tensor ff(const at::Tensor &x) {
    at::Tensor h = linear1->forward(x);
    return linear2->forward(gelu ? torch::gelu(h) : torch::relu(h));
  }

  at::Tensor forward(const at::Tensor &src) {
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
      x = x + sa(norm1->forward(x));
      x = x + ff(norm2->forward(x));
    } else {
      x = norm1->forward(x + sa(x));
      x = norm2->forward(x + ff(x));
    }
    return unbatched ? x.squeeze(1) : batch_first ? x.transpose(0, 1) : x;
  }
};

Builtin make_linear(const Config &c, const Common &) {
  int64_t in = c.positive("in_features"), out = c.positive("out_features");
  bool bias = c.boolean("bias", true);
  torch::nn::Linear l(torch::nn::LinearOptions(in, out).bias(bias));
  return {l.ptr(), [l](const at::Tensor &x) mutable { return l->forward(x); }};
}

Builtin make_mlp(const Config &c, const Common &) {
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

  auto root = std::make_shared<Mlp>();
  torch::nn::Sequential seq;
  for (size_t k = 0; k + 1 < dims.size(); k++) {
    seq->push_back(torch::nn::Linear(
        torch::nn::LinearOptions(dims[k], dims[k + 1]).bias(bias)));
    if (k + 2 < dims.size())
      seq->push_back(activation_module(act));
  }
  root->layers = root->register_module("layers", seq);
  return {root, [seq](const at::Tensor &x) mutable { return seq->forward(x); }};
}

Builtin make_tel(const Config &c, const Common &) {
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
  auto t = std::make_shared<Tel>(d, nhead, ff, eps);
  t->norm_first = norm_first;
  t->batch_first = batch_first;
  t->gelu = act == "gelu";
  return {t, [t](const at::Tensor &x) { return t->forward(x); }};
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
  Builtin b;
  {
    // libtorch's initialisers draw from the global generator: one
    // construction at a time keeps a seed's weights the same on any thread.
    static std::mutex mu;
    std::lock_guard<std::mutex> lock(mu);
    torch::manual_seed(com.seed);
    b = make(*c, com);
  }
  b.root->eval();
  b.root->to(com.dtype);
  *weights = com.weights;
  return b;
}

} // namespace shim

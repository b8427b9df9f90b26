#include "seqkv/codec/kv_model.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>

#include "seqkv/codec/dtype.h"
#include "seqkv/codec/safetensors.h"

#define XXH_INLINE_ALL
#include <xxhash.h>

namespace seqkv {

namespace {

using json = nlohmann::json;
namespace fs = std::filesystem;

static_assert(std::endian::native == std::endian::little, "the model id hashes little-endian floats");

// Output columns are padded to a multiple of this so the inner loop has a
// constant trip count the compiler vectorizes at -O2.
constexpr uint32_t kColumnBlock = 64;
// Tokens per pass over the weights (reuse of each weight row from cache).
constexpr uint32_t kTokenBlock = 16;

constexpr const char* kEmbed = "embed_tokens.weight";
constexpr const char* kNorm = "layers.0.input_layernorm.weight";
constexpr const char* kKProj = "layers.0.self_attn.k_proj.weight";
constexpr const char* kVProj = "layers.0.self_attn.v_proj.weight";
constexpr const char* kKBias = "layers.0.self_attn.k_proj.bias";
constexpr const char* kVBias = "layers.0.self_attn.v_proj.bias";
constexpr const char* kLmHead = "lm_head.weight";

struct Config {
  std::string model_type;
  uint32_t layers = 0, hidden = 0, heads = 0, kv_heads = 0, head_dim = 0, vocab = 0;
  double eps = 1e-6, rope_theta = 10000.0;
  bool tie = false, bias = false;
};

Result<uint32_t> ConfigUint(const json& j, const char* key, uint32_t max, std::optional<uint32_t> fallback) {
  if (!j.contains(key) || j[key].is_null()) {
    if (fallback) return *fallback;
    return InvalidArgument(std::string("config.json: missing '") + key + "'");
  }
  const json& v = j[key];
  if (!v.is_number_unsigned() || v.get<uint64_t>() == 0 || v.get<uint64_t>() > max) {
    return InvalidArgument(std::string("config.json: '") + key + "' must be an integer in [1, " +
                           std::to_string(max) + "]");
  }
  return static_cast<uint32_t>(v.get<uint64_t>());
}

Result<double> ConfigPositive(const json& j, const char* key, double fallback) {
  if (!j.contains(key) || j[key].is_null()) return fallback;
  const json& v = j[key];
  if (!v.is_number() || !(v.get<double>() > 0) || !std::isfinite(v.get<double>())) {
    return InvalidArgument(std::string("config.json: '") + key + "' must be a positive number");
  }
  return v.get<double>();
}

Result<Config> ParseConfig(const std::string& path) {
  SEQKV_ASSIGN_OR_RETURN(std::vector<uint8_t> bytes, ReadFileBytes(path));
  json j;
  try {
    j = json::parse(bytes.begin(), bytes.end());
  } catch (const std::exception& e) {
    return InvalidArgument(path + ": not valid JSON: " + e.what());
  }
  if (!j.is_object()) return InvalidArgument(path + ": not a JSON object");
  Config c;
  if (!j.contains("model_type") || !j["model_type"].is_string()) {
    return InvalidArgument(path + ": missing 'model_type'");
  }
  c.model_type = j["model_type"].get<std::string>();
  if (c.model_type != "llama" && c.model_type != "mistral" && c.model_type != "qwen2") {
    return Unimplemented(path + ": model_type '" + c.model_type +
                         "' is not supported (llama, mistral, qwen2: layer 0 K/V from RMSNorm and linear "
                         "projections)");
  }
  auto with_path = [&](const Status& s) { return s.WithContext(path); };
  auto layers = ConfigUint(j, "num_hidden_layers", 1u << 16, std::nullopt);
  auto hidden = ConfigUint(j, "hidden_size", 1u << 17, std::nullopt);
  auto heads = ConfigUint(j, "num_attention_heads", kMaxKvHeads, std::nullopt);
  auto vocab = ConfigUint(j, "vocab_size", 1u << 24, std::nullopt);
  for (const Status* s : {&layers.status(), &hidden.status(), &heads.status(), &vocab.status()}) {
    if (!s->ok()) return with_path(*s);
  }
  c.layers = *layers;
  c.hidden = *hidden;
  c.heads = *heads;
  c.vocab = *vocab;
  auto kv_heads = ConfigUint(j, "num_key_value_heads", kMaxKvHeads, c.heads);
  if (!kv_heads.ok()) return with_path(kv_heads.status());
  c.kv_heads = *kv_heads;
  auto head_dim = ConfigUint(j, "head_dim", kMaxHeadDim, c.hidden / c.heads);
  if (!head_dim.ok()) return with_path(head_dim.status());
  c.head_dim = *head_dim;
  if (c.head_dim == 0) return InvalidArgument(path + ": head_dim is 0");
  auto eps = ConfigPositive(j, "rms_norm_eps", 1e-6);
  if (!eps.ok()) return with_path(eps.status());
  c.eps = *eps;
  // transformers >= 5 moves rope_theta into rope_parameters.
  const json* rope_holder = &j;
  if (!j.contains("rope_theta") && j.contains("rope_parameters") && j["rope_parameters"].is_object()) {
    rope_holder = &j["rope_parameters"];
  }
  auto theta = ConfigPositive(*rope_holder, "rope_theta", 10000.0);
  if (!theta.ok()) return with_path(theta.status());
  c.rope_theta = *theta;
  c.tie = j.value("tie_word_embeddings", false);
  c.bias = c.model_type == "qwen2" || j.value("attention_bias", false);
  return c;
}

// Where each wanted tensor lives: its full name in the checkpoint and its file.
struct Located {
  std::string name;
  std::string file;
};

// The weight map: every tensor name -> file name (within dir).
Result<std::map<std::string, std::string>> WeightMap(const fs::path& dir) {
  std::map<std::string, std::string> map;
  const fs::path index = dir / "model.safetensors.index.json";
  const fs::path single = dir / "model.safetensors";
  std::error_code ec;
  if (fs::exists(index, ec)) {
    SEQKV_ASSIGN_OR_RETURN(std::vector<uint8_t> bytes, ReadFileBytes(index.string()));
    json j;
    try {
      j = json::parse(bytes.begin(), bytes.end());
    } catch (const std::exception& e) {
      return InvalidArgument(index.string() + ": not valid JSON: " + e.what());
    }
    if (!j.is_object() || !j.contains("weight_map") || !j["weight_map"].is_object()) {
      return InvalidArgument(index.string() + ": no 'weight_map' object");
    }
    for (auto it = j["weight_map"].begin(); it != j["weight_map"].end(); ++it) {
      if (!it.value().is_string())
        return InvalidArgument(index.string() + ": weight_map values must be strings");
      std::string file = it.value().get<std::string>();
      if (file.empty() || file.find('/') != std::string::npos || file.find('\\') != std::string::npos ||
          file == "." || file == "..") {
        return InvalidArgument(index.string() + ": bad shard name '" + file + "'");
      }
      map[it.key()] = std::move(file);
    }
    return map;
  }
  if (!fs::exists(single, ec)) {
    return NotFound(dir.string() + ": neither model.safetensors nor model.safetensors.index.json");
  }
  // One file: its own header names the tensors (read in LoadTensors).
  map[""] = "model.safetensors";
  return map;
}

// Finds `base` under the "model." prefix or bare.
const std::string* FindName(const std::map<std::string, std::string>& map, const std::string& base,
                            std::string* full) {
  for (const std::string& name : {"model." + base, base}) {
    if (auto it = map.find(name); it != map.end()) {
      *full = name;
      return &it->second;
    }
  }
  return nullptr;
}

Result<std::vector<float>> ToFloat32(const std::string& name, const Tensor& t) {
  DType dtype;
  if (t.dtype == "BF16") {
    dtype = DType::kBF16;
  } else if (t.dtype == "F16") {
    dtype = DType::kFP16;
  } else if (t.dtype == "F32") {
    dtype = DType::kFP32;
  } else {
    return InvalidArgument("tensor " + name + ": dtype " + t.dtype + " is not BF16, F16 or F32");
  }
  const size_t n = t.data.size() / DTypeSize(dtype);
  std::vector<float> out(n);
  ToFloat(dtype, t.data.data(), n, out.data());
  return out;
}

Status CheckShape(const std::string& name, const Tensor& t, std::vector<int64_t> want) {
  if (t.shape == want) return Status::Ok();
  auto str = [](const std::vector<int64_t>& s) {
    std::string out = "[";
    for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
    return out + "]";
  };
  return InvalidArgument("tensor " + name + " has shape " + str(t.shape) + ", config.json implies " +
                         str(want));
}

void HashU64(XXH3_state_t* state, uint64_t v) { XXH3_128bits_update(state, &v, sizeof v); }

void HashFloats(XXH3_state_t* state, const std::vector<float>& v) {
  HashU64(state, v.size());
  XXH3_128bits_update(state, v.data(), v.size() * sizeof(float));
}

}  // namespace

Result<std::shared_ptr<const KvModel>> KvModel::Load(const std::string& dir_name) {
  const fs::path dir(dir_name);
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return NotFound("model folder " + dir_name + " does not exist");
  const fs::path config_path = dir / "config.json";
  if (!fs::exists(config_path, ec)) return NotFound(config_path.string() + " does not exist");
  SEQKV_ASSIGN_OR_RETURN(Config config, ParseConfig(config_path.string()));
  SEQKV_ASSIGN_OR_RETURN(auto map, WeightMap(dir));

  // The tensors wanted, by role.
  std::vector<std::string> wanted = {kEmbed, kNorm, kKProj, kVProj};
  if (config.bias) {
    wanted.push_back(kKBias);
    wanted.push_back(kVBias);
  }
  std::map<std::string, Tensor> got;  // by base name
  if (map.count("") != 0) {
    const std::string path = (dir / "model.safetensors").string();
    SEQKV_ASSIGN_OR_RETURN(SafetensorsFile file, ReadSafetensors(path));
    std::map<std::string, std::string> names;
    for (const auto& entry : file.tensors) names[entry.first] = path;
    for (const std::string& base : wanted) {
      std::string full;
      if (!FindName(names, base, &full) && base == kEmbed && config.tie) FindName(names, kLmHead, &full);
      if (!full.empty()) got[base] = std::move(file.tensors[full]);
    }
  } else {
    std::map<std::string, std::vector<std::pair<std::string, std::string>>> by_file;  // file -> (base, full)
    for (const std::string& base : wanted) {
      std::string full;
      const std::string* file = FindName(map, base, &full);
      if (!file && base == kEmbed && config.tie) file = FindName(map, kLmHead, &full);
      if (file) by_file[*file].emplace_back(base, full);
    }
    for (auto& [file_name, entries] : by_file) {
      const fs::path path = dir / file_name;
      if (!fs::exists(path, ec)) return NotFound("shard " + path.string() + " does not exist");
      SEQKV_ASSIGN_OR_RETURN(SafetensorsFile file, ReadSafetensors(path.string()));
      for (const auto& [base, full] : entries) {
        auto it = file.tensors.find(full);
        if (it == file.tensors.end()) {
          return NotFound(path.string() + ": tensor " + full + " listed in the index is missing");
        }
        got[base] = std::move(it->second);
      }
    }
  }
  for (const std::string& base : wanted) {
    if (got.count(base) == 0)
      return NotFound(dir_name + ": no tensor " + base + " (with or without 'model.')");
  }

  const int64_t kv_out = int64_t{config.kv_heads} * config.head_dim;
  const Tensor& embed_t = got[kEmbed];
  SEQKV_RETURN_IF_ERROR(CheckShape(kEmbed, embed_t, {config.vocab, config.hidden}));
  SEQKV_RETURN_IF_ERROR(CheckShape(kNorm, got[kNorm], {config.hidden}));
  SEQKV_RETURN_IF_ERROR(CheckShape(kKProj, got[kKProj], {kv_out, config.hidden}));
  SEQKV_RETURN_IF_ERROR(CheckShape(kVProj, got[kVProj], {kv_out, config.hidden}));
  if (config.bias) {
    SEQKV_RETURN_IF_ERROR(CheckShape(kKBias, got[kKBias], {kv_out}));
    SEQKV_RETURN_IF_ERROR(CheckShape(kVBias, got[kVBias], {kv_out}));
  }

  std::shared_ptr<KvModel> model(new KvModel());
  model->layers_ = config.layers;
  model->kv_heads_ = config.kv_heads;
  model->head_dim_ = config.head_dim;
  model->hidden_ = config.hidden;
  model->vocab_ = config.vocab;
  model->rope_theta_ = config.rope_theta;
  model->eps_ = static_cast<float>(config.eps);  // torch adds eps to a float32 tensor
  model->bias_ = config.bias;

  SEQKV_ASSIGN_OR_RETURN(model->embed_, ToFloat32(kEmbed, embed_t));
  got[kEmbed] = Tensor();
  SEQKV_ASSIGN_OR_RETURN(model->norm_, ToFloat32(kNorm, got[kNorm]));
  SEQKV_ASSIGN_OR_RETURN(std::vector<float> wk, ToFloat32(kKProj, got[kKProj]));
  SEQKV_ASSIGN_OR_RETURN(std::vector<float> wv, ToFloat32(kVProj, got[kVProj]));
  std::vector<float> bk, bv;
  if (config.bias) {
    SEQKV_ASSIGN_OR_RETURN(bk, ToFloat32(kKBias, got[kKBias]));
    SEQKV_ASSIGN_OR_RETURN(bv, ToFloat32(kVBias, got[kVBias]));
  }

  XXH3_state_t state;
  XXH3_128bits_reset(&state);
  static constexpr char kTag[] = "seqkv.KvModel.layer0.v1";
  XXH3_128bits_update(&state, kTag, sizeof kTag);
  for (uint64_t v : {uint64_t{config.hidden}, uint64_t{config.kv_heads}, uint64_t{config.head_dim},
                     uint64_t{config.vocab}, uint64_t{std::bit_cast<uint32_t>(model->eps_)},
                     std::bit_cast<uint64_t>(config.rope_theta), uint64_t{config.bias}}) {
    HashU64(&state, v);
  }
  for (const std::vector<float>* t : {&model->embed_, &model->norm_, &wk, &wv, &bk, &bv})
    HashFloats(&state, *t);
  XXH128_canonical_t canonical;
  XXH128_canonicalFromHash(&canonical, XXH3_128bits_digest(&state));
  std::memcpy(model->id_.data(), canonical.digest, 16);

  // Transposed weights, K's outputs then V's, padded to whole column blocks.
  const uint32_t out = 2 * config.kv_heads * config.head_dim;
  const uint32_t padded = (out + kColumnBlock - 1) / kColumnBlock * kColumnBlock;
  const uint32_t half = out / 2;
  model->kv_t_.assign(size_t{config.hidden} * padded, 0.0f);
  for (uint32_t o = 0; o < half; ++o) {
    for (uint32_t f = 0; f < config.hidden; ++f) {
      model->kv_t_[size_t{f} * padded + o] = wk[size_t{o} * config.hidden + f];
      model->kv_t_[size_t{f} * padded + half + o] = wv[size_t{o} * config.hidden + f];
    }
  }
  if (config.bias) {
    model->kv_bias_ = bk;
    model->kv_bias_.insert(model->kv_bias_.end(), bv.begin(), bv.end());
  }
  return std::shared_ptr<const KvModel>(std::move(model));
}

std::string KvModel::IdHex() const {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (uint8_t b : id_) {
    out.push_back(kHex[b >> 4]);
    out.push_back(kHex[b & 15]);
  }
  return out;
}

uint64_t KvModel::WeightBytes() const {
  return sizeof(float) * (uint64_t{embed_.size()} + norm_.size() + kv_t_.size() + kv_bias_.size());
}

namespace {

// acc[0..kColumnBlock) += h * w[0..kColumnBlock): one float product and one
// float sum per element; the constant length lets the compiler vectorize
// without reordering anything.
inline void AxpyBlock(float h, const float* __restrict w, float* __restrict acc) {
  for (uint32_t j = 0; j < kColumnBlock; ++j) acc[j] += h * w[j];
}

}  // namespace

Status KvModel::Layer0(std::span<const int32_t> tokens, float* k, float* v) const {
  for (size_t t = 0; t < tokens.size(); ++t) {
    if (tokens[t] < 0 || static_cast<uint32_t>(tokens[t]) >= vocab_) {
      return InvalidArgument("token " + std::to_string(tokens[t]) + " at index " + std::to_string(t) +
                             " is outside the vocabulary [0, " + std::to_string(vocab_) + ")");
    }
  }
  const size_t T = tokens.size();
  const uint32_t out = 2 * kv_heads_ * head_dim_, half = out / 2;
  const uint32_t padded = static_cast<uint32_t>(kv_t_.size() / hidden_);
  std::vector<float> h(size_t{kTokenBlock} * hidden_);
  std::vector<float> acc(size_t{kTokenBlock} * padded);
  for (size_t t0 = 0; t0 < T; t0 += kTokenBlock) {
    const uint32_t nt = static_cast<uint32_t>(std::min<size_t>(kTokenBlock, T - t0));
    // RMSNorm, as Hugging Face's LlamaRMSNorm in float32.
    for (uint32_t b = 0; b < nt; ++b) {
      const float* x = &embed_[size_t(tokens[t0 + b]) * hidden_];
      float sum = 0;
      for (uint32_t f = 0; f < hidden_; ++f) sum += x[f] * x[f];
      const float mean = sum / static_cast<float>(hidden_);
      const float r = 1.0f / std::sqrt(mean + eps_);
      float* hb = &h[size_t{b} * hidden_];
      for (uint32_t f = 0; f < hidden_; ++f) hb[f] = (x[f] * r) * norm_[f];
    }
    // acc[b][j] = sum over f ascending of h[b][f] * W^T[f][j].
    // -0.0 is the identity of float addition (+0.0 would turn a sum of one
    // -0.0 product into +0.0).
    std::fill(acc.begin(), acc.end(), -0.0f);
    for (uint32_t j0 = 0; j0 < padded; j0 += kColumnBlock) {
      for (uint32_t f = 0; f < hidden_; ++f) {
        const float* w = &kv_t_[size_t{f} * padded + j0];
        for (uint32_t b = 0; b < nt; ++b)
          AxpyBlock(h[size_t{b} * hidden_ + f], w, &acc[size_t{b} * padded + j0]);
      }
    }
    for (uint32_t b = 0; b < nt; ++b) {
      const float* a = &acc[size_t{b} * padded];
      const size_t t = t0 + b;
      for (uint32_t j = 0; j < half; ++j) {
        const uint32_t head = j / head_dim_, c = j % head_dim_;
        const size_t at = (size_t{head} * T + t) * head_dim_ + c;
        k[at] = bias_ ? a[j] + kv_bias_[j] : a[j];
        v[at] = bias_ ? a[half + j] + kv_bias_[half + j] : a[half + j];
      }
    }
  }
  return Status::Ok();
}

}  // namespace seqkv

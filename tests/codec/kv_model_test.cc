// Tests of KvModel (codec/src/kv_model.cc): layer 0's K and V recomputed
// from tinyllama-12m's weights against the dev dumps, synthetic checkpoints
// for the loader's paths, and the errors.
#include "seqkv/codec/kv_model.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>

#include "../../codec/src/engine_rope.h"
#include "seqkv/codec/dtype.h"
#include "seqkv/codec/safetensors.h"
#include "util/test_util.h"

namespace seqkv {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

std::string ModelDir() {
  const std::string shared = test::SharedDir();
  return shared.empty() ? "" : shared + "/models/tinyllama-12m";
}

std::shared_ptr<const KvModel> LoadOrFail(const std::string& dir) {
  auto model = KvModel::Load(dir);
  EXPECT_TRUE(model.ok()) << model.status().ToString();
  return model.ok() ? *model : nullptr;
}

TEST(KvModelTest, LoadsTinyLlama) {
  ASSERT_FALSE(test::SharedDir().empty()) << "../shared is missing";
  auto model = LoadOrFail(ModelDir());
  ASSERT_TRUE(model);
  EXPECT_EQ(model->layers(), 6u);
  EXPECT_EQ(model->kv_heads(), 2u);
  EXPECT_EQ(model->head_dim(), 64u);
  EXPECT_EQ(model->hidden(), 384u);
  EXPECT_EQ(model->vocab(), 8192u);
  EXPECT_EQ(model->rope_theta(), 10000.0);
  EXPECT_EQ(model->rms_norm_eps(), 1e-5f);
  EXPECT_EQ(model->WeightBytes(), 4u * (8192 * 384 + 384 + 384 * 256));
  EXPECT_EQ(model->IdHex().size(), 32u);
  auto again = LoadOrFail(ModelDir());
  ASSERT_TRUE(again);
  EXPECT_EQ(model->id(), again->id());
  std::printf("tinyllama-12m KvModel id %s, %.1f MB of float32 weights\n", model->IdHex().c_str(),
              model->WeightBytes() / 1e6);
}

struct Mismatches {
  uint64_t k = 0, v = 0, elements = 0;
};

// Layer 0 K (RoPE applied as the dump says) and V, rounded to bf16, against
// the dump's layer 0 bits.
Mismatches CompareWithDump(const KvModel& model, const std::string& name, double* layer0_s) {
  Mismatches m;
  auto dump = ReadKvDump(test::DevDump(name));
  EXPECT_TRUE(dump.ok()) << dump.status().ToString();
  if (!dump.ok()) return m;
  const Chunk& c = dump->chunk;
  EXPECT_EQ(c.dtype, DType::kBF16);
  EXPECT_EQ(c.shape.kv_heads, model.kv_heads());
  EXPECT_EQ(c.shape.head_dim, model.head_dim());
  const uint32_t H = c.shape.kv_heads, T = c.shape.tokens, D = c.shape.head_dim;
  std::vector<float> k(size_t{H} * T * D), v(k.size());
  auto start = std::chrono::steady_clock::now();
  Status st = model.Layer0(c.tokens, k.data(), v.data());
  *layer0_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_TRUE(st.ok()) << st.ToString();
  const internal::RopeTable table = internal::MakeRopeTable(c.rope, D, c.first_position, T);
  for (uint32_t h = 0; h < H; ++h) internal::ApplyRope(table, c.rope.style, &k[size_t{h} * T * D]);
  // Layer 0 is the first H * T * D elements of the dump's tensors.
  const auto* dk = reinterpret_cast<const uint8_t*>(c.k.data());
  const auto* dv = reinterpret_cast<const uint8_t*>(c.v.data());
  for (size_t i = 0; i < k.size(); ++i) {
    const uint16_t want_k = static_cast<uint16_t>(dk[2 * i] | dk[2 * i + 1] << 8);
    const uint16_t want_v = static_cast<uint16_t>(dv[2 * i] | dv[2 * i + 1] << 8);
    m.k += FloatToBf16(k[i]) != want_k;
    m.v += FloatToBf16(v[i]) != want_v;
  }
  m.elements = k.size();
  return m;
}

TEST(KvModelTest, Layer0MatchesTheDevDumps) {
  ASSERT_FALSE(test::SharedDir().empty()) << "../shared is missing";
  auto model = LoadOrFail(ModelDir());
  ASSERT_TRUE(model);
  for (const char* name : {"doc00.safetensors", "doc05.safetensors"}) {
    double seconds = 0;
    const Mismatches m = CompareWithDump(*model, name, &seconds);
    std::printf(
        "%s layer 0 vs bf16 dump: K %llu / %llu differ (%.4f%%), V %llu / %llu differ (%.4f%%); "
        "Layer0 for 1024 tokens %.1f ms\n",
        name, (unsigned long long)m.k, (unsigned long long)m.elements, 100.0 * m.k / m.elements,
        (unsigned long long)m.v, (unsigned long long)m.elements, 100.0 * m.v / m.elements, seconds * 1e3);
    ASSERT_GT(m.elements, 0u);
    EXPECT_LT(m.k, m.elements / 1000) << name;
    EXPECT_LT(m.v, m.elements / 1000) << name;
  }
}

TEST(KvModelTest, Layer0ErrorsAndEmptyInput) {
  ASSERT_FALSE(test::SharedDir().empty()) << "../shared is missing";
  auto model = LoadOrFail(ModelDir());
  ASSERT_TRUE(model);
  std::vector<float> k(2 * 64 * 3), v(k.size());
  for (std::vector<int32_t> bad : {std::vector<int32_t>{1, -1, 2}, std::vector<int32_t>{1, 8192, 2}}) {
    EXPECT_EQ(model->Layer0(bad, k.data(), v.data()).code(), StatusCode::kInvalidArgument);
  }
  EXPECT_TRUE(model->Layer0({}, k.data(), v.data()).ok());
  // Layer 0 depends on each token alone: a token's rows are the same in any context.
  std::vector<int32_t> tokens = {5, 8191, 5};
  ASSERT_TRUE(model->Layer0(tokens, k.data(), v.data()).ok());
  for (uint32_t h = 0; h < 2; ++h) {
    for (uint32_t c = 0; c < 64; ++c) {
      EXPECT_EQ(k[(h * 3 + 0) * 64 + c], k[(h * 3 + 2) * 64 + c]);
      EXPECT_EQ(v[(h * 3 + 0) * 64 + c], v[(h * 3 + 2) * 64 + c]);
    }
  }
}

TEST(KvModelTest, MissingFolderFilesAndTensors) {
  EXPECT_EQ(KvModel::Load("/nonexistent/seqkv-model").status().code(), StatusCode::kNotFound);
  const std::string dir = test::TempDir("kvmodel-empty");
  EXPECT_EQ(KvModel::Load(dir).status().code(), StatusCode::kNotFound);  // no config.json
}

// A small synthetic checkpoint in one model.safetensors.
struct Synthetic {
  uint32_t vocab = 11, hidden = 12, kv_heads = 2, head_dim = 4;
  std::vector<float> embed, norm, wk, wv, bk, bv;
  json config;

  explicit Synthetic(uint32_t seed) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> dist(0.0f, 1.0f);
    // bf16-representable values so every storage dtype holds them exactly.
    auto fill = [&](std::vector<float>* out, size_t n) {
      out->resize(n);
      for (float& f : *out) f = Bf16ToFloat(FloatToBf16(dist(rng)));
    };
    fill(&embed, size_t{vocab} * hidden);
    fill(&norm, hidden);
    fill(&wk, size_t{kv_heads} * head_dim * hidden);
    fill(&wv, wk.size());
    fill(&bk, size_t{kv_heads} * head_dim);
    fill(&bv, bk.size());
    config = {{"model_type", "llama"},    {"num_hidden_layers", 3},          {"hidden_size", hidden},
              {"num_attention_heads", 3}, {"num_key_value_heads", kv_heads}, {"vocab_size", vocab},
              {"rms_norm_eps", 1e-6},     {"rope_theta", 500000.0},          {"tie_word_embeddings", false}};
  }

  static Tensor Make(const std::vector<float>& values, std::vector<int64_t> shape, DType dtype) {
    Tensor t;
    t.dtype = dtype == DType::kBF16 ? "BF16" : dtype == DType::kFP16 ? "F16" : "F32";
    t.shape = std::move(shape);
    t.data.resize(values.size() * DTypeSize(dtype));
    FromFloat(dtype, values.data(), values.size(), t.data.data());
    return t;
  }

  // Writes config.json and model.safetensors; `prefix` is "model." or "".
  std::string Write(const std::string& tag, const std::string& prefix, DType dtype, bool biases,
                    const std::string& embed_name = "embed_tokens.weight") const {
    const std::string dir = test::TempDir(tag);
    std::ofstream(dir + "/config.json") << config.dump();
    SafetensorsFile file;
    const int64_t out = int64_t{kv_heads} * head_dim;
    file.tensors[embed_name == "lm_head.weight" ? embed_name : prefix + embed_name] =
        Make(embed, {vocab, hidden}, dtype);
    file.tensors[prefix + "layers.0.input_layernorm.weight"] = Make(norm, {hidden}, dtype);
    file.tensors[prefix + "layers.0.self_attn.k_proj.weight"] = Make(wk, {out, hidden}, dtype);
    file.tensors[prefix + "layers.0.self_attn.v_proj.weight"] = Make(wv, {out, hidden}, dtype);
    file.tensors[prefix + "layers.0.self_attn.q_proj.weight"] = Make(wv, {out, hidden}, dtype);  // ignored
    if (biases) {
      file.tensors[prefix + "layers.0.self_attn.k_proj.bias"] = Make(bk, {out}, dtype);
      file.tensors[prefix + "layers.0.self_attn.v_proj.bias"] = Make(bv, {out}, dtype);
    }
    EXPECT_TRUE(WriteSafetensors(dir + "/model.safetensors", file).ok());
    return dir;
  }

  // The documented formula, written out plainly.
  void Reference(const std::vector<int32_t>& tokens, float eps, bool biases, std::vector<float>* k,
                 std::vector<float>* v) const {
    const size_t T = tokens.size();
    k->assign(size_t{kv_heads} * T * head_dim, 0);
    v->assign(k->size(), 0);
    for (size_t t = 0; t < T; ++t) {
      const float* x = &embed[size_t(tokens[t]) * hidden];
      float sum = 0;
      for (uint32_t f = 0; f < hidden; ++f) sum += x[f] * x[f];
      const float r = 1.0f / std::sqrt(sum / static_cast<float>(hidden) + eps);
      std::vector<float> h(hidden);
      for (uint32_t f = 0; f < hidden; ++f) h[f] = (x[f] * r) * norm[f];
      for (uint32_t o = 0; o < kv_heads * head_dim; ++o) {
        float ak = -0.0f, av = -0.0f;
        for (uint32_t f = 0; f < hidden; ++f) {
          ak += h[f] * wk[o * hidden + f];
          av += h[f] * wv[o * hidden + f];
        }
        if (biases) {
          ak += bk[o];
          av += bv[o];
        }
        const size_t at = ((o / head_dim) * T + t) * head_dim + o % head_dim;
        (*k)[at] = ak;
        (*v)[at] = av;
      }
    }
  }
};

void ExpectMatchesReference(const Synthetic& s, const KvModel& model, bool biases) {
  std::vector<int32_t> tokens;
  for (int i = 0; i < 37; ++i) tokens.push_back((i * 7 + 3) % s.vocab);  // > one token block
  std::vector<float> k(size_t{s.kv_heads} * tokens.size() * s.head_dim), v(k.size()), rk, rv;
  ASSERT_TRUE(model.Layer0(tokens, k.data(), v.data()).ok());
  s.Reference(tokens, model.rms_norm_eps(), biases, &rk, &rv);
  EXPECT_EQ(k, rk);
  EXPECT_EQ(v, rv);
}

TEST(KvModelTest, SyntheticCheckpointsInEveryDtypeAndNaming) {
  const Synthetic s(1);
  std::array<uint8_t, 16> first_id{};
  bool have_id = false;
  for (DType dtype : {DType::kFP32, DType::kBF16, DType::kFP16}) {
    for (const std::string prefix : {"model.", ""}) {
      SCOPED_TRACE(std::string(DTypeName(dtype)) + " prefix '" + prefix + "'");
      auto model = LoadOrFail(s.Write("kvmodel-syn", prefix, dtype, false));
      ASSERT_TRUE(model);
      EXPECT_EQ(model->layers(), 3u);
      EXPECT_EQ(model->head_dim(), 4u);  // hidden_size / num_attention_heads
      EXPECT_EQ(model->rope_theta(), 500000.0);
      EXPECT_EQ(model->rms_norm_eps(), 1e-6f);
      ExpectMatchesReference(s, *model, false);
      // The id depends on the float32 values, not on how they are stored.
      if (have_id) {
        EXPECT_EQ(model->id(), first_id);
      }
      first_id = model->id();
      have_id = true;
    }
  }
  // A different weight, a different id.
  Synthetic other = s;
  other.wv[5] = -other.wv[5];
  auto changed = LoadOrFail(other.Write("kvmodel-syn", "model.", DType::kFP32, false));
  ASSERT_TRUE(changed);
  EXPECT_NE(changed->id(), first_id);
}

TEST(KvModelTest, TiedEmbeddingsAndBiases) {
  Synthetic s(2);
  s.config["tie_word_embeddings"] = true;
  auto tied = LoadOrFail(s.Write("kvmodel-tied", "model.", DType::kBF16, false, "lm_head.weight"));
  ASSERT_TRUE(tied);
  ExpectMatchesReference(s, *tied, false);
  s.config["tie_word_embeddings"] = false;
  EXPECT_EQ(KvModel::Load(s.Write("kvmodel-untied", "model.", DType::kBF16, false, "lm_head.weight"))
                .status()
                .code(),
            StatusCode::kNotFound);

  // Qwen2 has K/V biases; so does Llama with attention_bias.
  s.config["model_type"] = "qwen2";
  auto qwen = LoadOrFail(s.Write("kvmodel-qwen", "model.", DType::kFP32, true));
  ASSERT_TRUE(qwen);
  ExpectMatchesReference(s, *qwen, true);
  EXPECT_EQ(KvModel::Load(s.Write("kvmodel-qwen-nobias", "model.", DType::kFP32, false)).status().code(),
            StatusCode::kNotFound);
  s.config["model_type"] = "llama";
  s.config["attention_bias"] = true;
  auto biased = LoadOrFail(s.Write("kvmodel-bias", "", DType::kFP32, true));
  ASSERT_TRUE(biased);
  ExpectMatchesReference(s, *biased, true);
}

TEST(KvModelTest, BadConfigsShapesAndShards) {
  const Synthetic base(3);
  auto code = [](const std::string& dir) { return KvModel::Load(dir).status().code(); };
  {
    Synthetic s = base;
    s.config["model_type"] = "gemma";
    EXPECT_EQ(code(s.Write("kvmodel-bad", "model.", DType::kFP32, false)), StatusCode::kUnimplemented);
  }
  {
    Synthetic s = base;
    s.config["hidden_size"] = 13;  // weights have 12
    EXPECT_EQ(code(s.Write("kvmodel-bad", "model.", DType::kFP32, false)), StatusCode::kInvalidArgument);
  }
  {
    Synthetic s = base;
    s.config["num_key_value_heads"] = 3;  // weights have 2 heads of 4
    EXPECT_EQ(code(s.Write("kvmodel-bad", "model.", DType::kFP32, false)), StatusCode::kInvalidArgument);
  }
  {
    Synthetic s = base;
    s.config.erase("vocab_size");
    EXPECT_EQ(code(s.Write("kvmodel-bad", "model.", DType::kFP32, false)), StatusCode::kInvalidArgument);
  }
  {
    const std::string dir = base.Write("kvmodel-badjson", "model.", DType::kFP32, false);
    std::ofstream(dir + "/config.json") << "{not json";
    EXPECT_EQ(code(dir), StatusCode::kInvalidArgument);
  }
  {
    // A tensor missing from the file.
    const std::string dir = base.Write("kvmodel-missing", "model.", DType::kFP32, false);
    auto file = ReadSafetensors(dir + "/model.safetensors");
    ASSERT_TRUE(file.ok());
    file->tensors.erase("model.layers.0.self_attn.v_proj.weight");
    ASSERT_TRUE(WriteSafetensors(dir + "/model.safetensors", *file).ok());
    EXPECT_EQ(code(dir), StatusCode::kNotFound);
    // Unsupported dtype.
    file->tensors["model.layers.0.self_attn.v_proj.weight"] =
        file->tensors["model.layers.0.self_attn.k_proj.weight"];
    file->tensors["model.layers.0.self_attn.v_proj.weight"].dtype = "I32";
    ASSERT_TRUE(WriteSafetensors(dir + "/model.safetensors", *file).ok());
    EXPECT_EQ(code(dir), StatusCode::kInvalidArgument);
    // No weights at all.
    fs::remove(dir + "/model.safetensors");
    EXPECT_EQ(code(dir), StatusCode::kNotFound);
  }
  {
    // Sharded: an index naming a missing shard, then the shard in place.
    const std::string dir = base.Write("kvmodel-shards", "model.", DType::kFP32, false);
    fs::rename(dir + "/model.safetensors", dir + "/part-1.safetensors");
    json index = {{"metadata", json::object()}, {"weight_map", json::object()}};
    for (const char* n :
         {"model.embed_tokens.weight", "model.layers.0.input_layernorm.weight",
          "model.layers.0.self_attn.k_proj.weight", "model.layers.0.self_attn.v_proj.weight"}) {
      index["weight_map"][n] = "part-2.safetensors";
    }
    std::ofstream(dir + "/model.safetensors.index.json") << index.dump();
    EXPECT_EQ(code(dir), StatusCode::kNotFound);
    fs::rename(dir + "/part-1.safetensors", dir + "/part-2.safetensors");
    auto model = LoadOrFail(dir);
    ASSERT_TRUE(model);
    ExpectMatchesReference(base, *model, false);
    index["weight_map"]["model.embed_tokens.weight"] = "../escape.safetensors";
    std::ofstream(dir + "/model.safetensors.index.json") << index.dump();
    EXPECT_EQ(code(dir), StatusCode::kInvalidArgument);
  }
}

}  // namespace
}  // namespace seqkv

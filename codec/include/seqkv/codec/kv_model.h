// KvModel: what an inference node that holds a model's weights can compute
// from token ids alone — layer 0's keys (before RoPE) and values, which
// depend on each token by itself (embedding, RMSNorm, K/V projections).
//
// Loads a Hugging Face checkpoint folder of a Llama-family decoder
// (model_type llama, mistral or qwen2): config.json plus model.safetensors,
// or model.safetensors.index.json and its shards. Only the tensors layer 0's
// K and V need are kept (embed_tokens, layers.0.input_layernorm,
// layers.0.self_attn.{k,v}_proj and their biases where the checkpoint has
// them), converted from BF16/F16/F32 to float32. Names may carry the
// "model." prefix; with tie_word_embeddings a checkpoint holding only
// lm_head.weight serves as the embedding.
//
// Determinism: Layer0's floats depend only on the weights and token ids —
// plain float32 arithmetic in a fixed order, no libm but sqrt — so every
// machine computes the same bits (the library is built with
// -ffp-contract=off). They can differ from a GPU's or torch's in the last
// bit of a few elements, since those sum dot products in other orders.
//
// Thread safety: immutable after Load; share it through the shared_ptr and
// call Layer0 from any number of threads.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "seqkv/codec/status.h"

namespace seqkv {

class KvModel {
 public:
  // Errors: NotFound for a missing folder, config.json, weights file, shard
  // or tensor; InvalidArgument for a malformed config or index, an
  // unsupported dtype or wrong tensor shapes; Unimplemented for a
  // model_type whose layer 0 differs from Llama's (e.g. gemma, qwen3).
  static Result<std::shared_ptr<const KvModel>> Load(const std::string& dir);

  uint32_t layers() const { return layers_; }
  uint32_t kv_heads() const { return kv_heads_; }
  uint32_t head_dim() const { return head_dim_; }
  uint32_t hidden() const { return hidden_; }
  uint32_t vocab() const { return vocab_; }
  double rope_theta() const { return rope_theta_; }
  float rms_norm_eps() const { return eps_; }

  // XXH3-128 (canonical big-endian bytes) of a canonical encoding of the
  // config fields used (hidden, kv_heads, head_dim, vocab, eps, rope_theta,
  // whether K/V have biases) and the float32 little-endian bytes of the
  // tensors used, so two folders that compute the same K/V share an id
  // whatever dtype they store. Layers and other tensors do not enter.
  const std::array<uint8_t, 16>& id() const { return id_; }
  std::string IdHex() const;  // 32 lower-case hex digits

  // Bytes of float32 weights held.
  uint64_t WeightBytes() const;

  // Layer 0's K (before RoPE) and V for `tokens`, written to k and v, each
  // [kv_heads][tokens.size()][head_dim] floats, computed as
  //   h = float32(x * (1 / sqrt(mean(x^2) + eps))) * w, x = embed[token],
  //   k = h . Wk^T (+ bk), v = h . Wv^T (+ bv),
  // with mean(x^2) and every dot product summed in float32 in ascending index
  // order (biases added after the sum).
  // Errors: InvalidArgument if a token id is outside [0, vocab()).
  Status Layer0(std::span<const int32_t> tokens, float* k, float* v) const;

 private:
  KvModel() = default;

  uint32_t layers_ = 0, kv_heads_ = 0, head_dim_ = 0, hidden_ = 0, vocab_ = 0;
  double rope_theta_ = 10000.0;
  float eps_ = 1e-6f;
  bool bias_ = false;
  std::array<uint8_t, 16> id_{};
  std::vector<float> embed_;    // [vocab][hidden]
  std::vector<float> norm_;     // [hidden]
  std::vector<float> kv_t_;     // [hidden][2 * kv_heads * head_dim]: Wk^T then Wv^T per row
  std::vector<float> kv_bias_;  // [2 * kv_heads * head_dim] (zeros without biases)
};

}  // namespace seqkv

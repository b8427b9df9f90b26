// Namespaces and chunk keys (docs/keys.md is normative, with test vectors).
//
// A namespace identifies whose KV it is; a chunk key is a chain hash over the
// token ids of every chunk up to and including this one, seeded by the
// namespace id. Deterministic across processes, machines and languages.
#pragma once

#include <compare>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "seqkv/codec/status.h"

namespace seqkv {

// A 128-bit hash value (namespace ids and chunk keys).
struct Key128 {
  uint64_t hi = 0;
  uint64_t lo = 0;
  auto operator<=>(const Key128&) const = default;
  bool operator==(const Key128&) const = default;

  std::string ToHex() const;  // 32 lowercase hex digits, hi first
  static Result<Key128> FromHex(std::string_view hex);
  // 16 bytes, big-endian hi then lo (sorts like the hex form).
  void ToBytes(uint8_t out[16]) const;
  static Key128 FromBytes(const uint8_t in[16]);
};

struct Key128Hash {
  size_t operator()(const Key128& k) const { return static_cast<size_t>(k.lo ^ (k.hi * 0x9E3779B97F4A7C15ull)); }
};

inline constexpr uint32_t kDefaultChunkTokens = 256;

// The fields that identify a namespace.
struct NamespaceFields {
  std::string model_name;       // e.g. "tinyllama-12m"
  std::string model_config_hash; // hex hash of the model's config.json (see ModelFingerprint)
  std::string kv_dtype = "bf16";
  std::string kv_layout = "lhtd";  // [layers, kv_heads, tokens, head_dim]
  uint32_t tp_rank = 0;
  uint32_t tp_size = 1;
  uint32_t chunk_tokens = kDefaultChunkTokens;
  std::string codec_spec = "lossless";
  std::string tenant_salt;       // optional; empty = shared across tenants
};

// The canonical byte encoding of fields that NamespaceId hashes (docs/keys.md).
std::vector<uint8_t> EncodeNamespaceFields(const NamespaceFields& fields);
// 128-bit id of a namespace: XXH3-128 (seed 0) of EncodeNamespaceFields(fields).
Key128 NamespaceId(const NamespaceFields& fields);
// model_config_hash for a model: XXH3-128 (seed 0) of the exact bytes of its
// config.json, as 32 lowercase hex digits.
std::string ModelFingerprint(std::span<const uint8_t> config_json);
// Validates fields (non-empty model, tp_rank < tp_size, chunk_tokens in [1, 1<<20], ...).
// InvalidArgument naming the first bad field.
Status ValidateNamespace(const NamespaceFields& fields);

// Chain keys of the full chunks of `tokens`: key_i = H(key_{i-1}, ids of chunk i),
// key_{-1} = namespace id. A trailing partial chunk gets no key.
std::vector<Key128> ChunkKeys(const Key128& namespace_id, std::span<const int32_t> tokens,
                              uint32_t chunk_tokens);
// One step of the chain.
Key128 NextChunkKey(const Key128& previous, std::span<const int32_t> chunk_token_ids);

}  // namespace seqkv

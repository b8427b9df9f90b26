// Test helpers for integration tests: small synthetic sequences and a
// namespace for them. Header-only.
#pragma once

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "seqkv/client/client.h"
#include "seqkv/codec/chunk.h"
#include "util/test_util.h"

namespace seqkv::test {

// 2 layers x 2 KV heads x 32 dims, bf16, 16-token chunks: 8 KiB raw per chunk.
inline constexpr uint32_t kTestChunkTokens = 16;

inline NamespaceFields TestNamespace(const std::string& codec = "lossless", const std::string& tenant = "") {
  NamespaceFields f;
  f.model_name = "integration-test-model";
  f.model_config_hash = "0123456789abcdef0123456789abcdef";
  f.chunk_tokens = kTestChunkTokens;
  f.codec_spec = codec;
  f.tenant_salt = tenant;
  Result<NamespaceFields> canonical = client::Client::Canonicalize(f);
  return canonical.ok() ? *canonical : f;
}

// A sequence of `tokens` tokens at position 0 with deterministic K/V; token
// ids are seeded, so equal seeds give equal sequences.
inline Chunk TestSequence(uint32_t tokens, uint64_t seed) {
  Chunk c = RandomChunk(KvShape{2, 2, tokens, 32}, DType::kBF16, seed);
  c.first_position = 0;
  return c;
}

// `base` with the token ids from `from` on replaced by ids derived from
// `seed` (and the K/V there re-randomised): a sequence sharing base's first
// `from` tokens.
inline Chunk Diverge(const Chunk& base, uint32_t from, uint64_t seed) {
  Chunk other = TestSequence(base.shape.tokens, seed);
  Chunk out = base;
  for (uint32_t t = from; t < base.shape.tokens; ++t) out.tokens[t] = other.tokens[t] + 40000;
  const size_t row = size_t{base.shape.head_dim} * 2;
  for (size_t h = 0; h < size_t{base.shape.layers} * base.shape.kv_heads; ++h) {
    for (uint32_t t = from; t < base.shape.tokens; ++t) {
      size_t at = (h * base.shape.tokens + t) * row;
      std::copy_n(other.k.begin() + at, row, out.k.begin() + at);
      std::copy_n(other.v.begin() + at, row, out.v.begin() + at);
    }
  }
  return out;
}

}  // namespace seqkv::test

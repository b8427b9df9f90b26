// Helpers shared by the server tests: namespaces, token sequences and the
// encoded chunks (with their chain keys) that a client would put.
#pragma once

#include <gtest/gtest.h>
#include <prometheus/registry.h>

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "seqkv/codec/codec.h"
#include "seqkv/codec/format.h"
#include "seqkv/proto/keys.h"
#include "seqkv/server/store.h"
#include "util/test_util.h"

namespace seqkv::server::test {

inline constexpr uint32_t kChunkTokens = 16;

inline NamespaceFields TestNamespace(std::string model = "test-model", std::string codec = "raw") {
  NamespaceFields f;
  f.model_name = std::move(model);
  f.model_config_hash = "0123456789abcdef";
  f.chunk_tokens = kChunkTokens;
  f.codec_spec = std::move(codec);
  return f;
}

// Small options for tests: unsynced writes (a kill -9 keeps the page cache;
// the crash test turns sync on), small RocksDB buffers.
inline StoreOptions TestOptions(const std::string& dir) {
  StoreOptions o;
  o.data_dir = dir;
  o.sync_writes = false;
  o.rocksdb_write_buffer_bytes = 4 << 20;
  o.rocksdb_block_cache_bytes = 1 << 20;
  return o;
}

// Deterministic token ids: a sequence with a shared part (same for every
// `prefix_seed`) then a private part.
inline std::vector<int32_t> Tokens(uint32_t chunks, uint64_t seed) {
  std::vector<int32_t> t(chunks * kChunkTokens);
  uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
  for (auto& v : t) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    v = static_cast<int32_t>(x % 32000);
  }
  return t;
}

struct TestChunk {
  std::optional<Key128> parent;
  Key128 key;
  std::vector<uint8_t> bytes;
};

// The encoded chunks of `tokens` (whole chunks only) in namespace `ns`.
// KV values depend on (kv_seed, chunk index) so equal prefixes give equal
// bytes, as a deterministic model would.
inline std::vector<TestChunk> MakeChain(const Key128& ns, const std::vector<int32_t>& tokens,
                                        uint64_t kv_seed = 7, std::string codec_spec = "raw",
                                        KvShape shape = {2, 2, kChunkTokens, 32}) {
  auto codec = MakeCodec(codec_spec);
  EXPECT_TRUE(codec.ok()) << codec.status().ToString();
  std::vector<TestChunk> out;
  std::optional<Key128> parent;
  for (size_t i = 0; i + kChunkTokens <= tokens.size(); i += kChunkTokens) {
    Chunk c = seqkv::test::RandomChunk(shape, DType::kBF16, kv_seed * 1000003 + tokens[i] + i);
    c.tokens.assign(tokens.begin() + i, tokens.begin() + i + kChunkTokens);
    c.first_position = i;
    auto bytes = EncodeChunk(c, **codec);
    EXPECT_TRUE(bytes.ok()) << bytes.status().ToString();
    TestChunk tc;
    tc.parent = parent;
    tc.key = NextChunkKey(parent ? *parent : ns, c.tokens);
    tc.bytes = std::move(bytes).value();
    parent = tc.key;
    out.push_back(std::move(tc));
  }
  return out;
}

inline std::vector<Key128> KeysOf(const std::vector<TestChunk>& chain) {
  std::vector<Key128> keys;
  for (const auto& c : chain) keys.push_back(c.key);
  return keys;
}

inline void PutChain(Store& store, const Key128& ns, const std::vector<TestChunk>& chain) {
  for (const auto& c : chain) {
    auto r = store.Put(ns, c.parent, c.key, c.bytes);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
  }
}

// Value of a metric (counter or gauge) with the given labels; -1 if absent.
inline double MetricValue(prometheus::Registry& registry, const std::string& name,
                          const std::map<std::string, std::string>& labels = {}) {
  for (const auto& family : registry.Collect()) {
    if (family.name != name) continue;
    for (const auto& metric : family.metric) {
      std::map<std::string, std::string> have;
      for (const auto& l : metric.label) have[l.name] = l.value;
      if (have != labels) continue;
      return family.type == prometheus::MetricType::Counter ? metric.counter.value : metric.gauge.value;
    }
  }
  return -1;
}

}  // namespace seqkv::server::test

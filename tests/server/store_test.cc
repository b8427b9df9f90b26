// Store basics: namespaces, put/get, longest-prefix lookup, dedup, inspect,
// metrics, and rejection of bad input.
#include "seqkv/server/store.h"

#include <gtest/gtest.h>
#include <prometheus/registry.h>

#include <filesystem>

#include "server/store_test_helpers.h"

namespace seqkv::server {
namespace {

using test::KeysOf;
using test::MakeChain;
using test::MetricValue;
using test::PutChain;
using test::TestNamespace;
using test::TestOptions;
using test::Tokens;

class StoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = seqkv::test::TempDir("store");
    auto store = Store::Open(TestOptions(dir_), &registry_);
    ASSERT_TRUE(store.ok()) << store.status().ToString();
    store_ = std::move(store).value();
    auto ns = store_->RegisterNamespace(TestNamespace());
    ASSERT_TRUE(ns.ok()) << ns.status().ToString();
    ns_ = *ns;
  }
  void TearDown() override {
    store_.reset();
    std::filesystem::remove_all(dir_);
  }

  std::string dir_;
  prometheus::Registry registry_;
  std::unique_ptr<Store> store_;
  Key128 ns_;
};

TEST_F(StoreTest, RegisterNamespaceIsIdempotentAndListed) {
  auto again = store_->RegisterNamespace(TestNamespace());
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(*again, ns_);
  EXPECT_EQ(*again, NamespaceId(TestNamespace()));
  auto other = store_->RegisterNamespace(TestNamespace("other-model"));
  ASSERT_TRUE(other.ok());
  auto list = store_->ListNamespaces();
  ASSERT_TRUE(list.ok());
  ASSERT_EQ(list->size(), 2u);
  auto info = store_->GetNamespace(ns_);
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->fields.model_name, "test-model");
  EXPECT_EQ(info->fields.chunk_tokens, test::kChunkTokens);

  NamespaceFields bad = TestNamespace();
  bad.model_name = "";
  EXPECT_EQ(store_->RegisterNamespace(bad).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->GetNamespace(Key128{1, 2}).status().code(), StatusCode::kNotFound);
}

TEST_F(StoreTest, PutThenGetIsBitIdentical) {
  auto chain = MakeChain(ns_, Tokens(3, 1), 1, "lossless");
  PutChain(*store_, ns_, chain);
  for (const auto& c : chain) {
    auto got = store_->Get(ns_, c.key);
    ASSERT_TRUE(got.ok()) << got.status().ToString();
    EXPECT_EQ(**got, c.bytes);
    auto decoded = DecodeChunk(**got);
    ASSERT_TRUE(decoded.ok()) << decoded.status().ToString();
  }
  EXPECT_EQ(store_->Get(ns_, Key128{5, 6}).status().code(), StatusCode::kNotFound);
}

TEST_F(StoreTest, LookupReturnsLongestUsablePrefix) {
  auto chain = MakeChain(ns_, Tokens(6, 2));
  // Put chunks 0..3 only.
  PutChain(*store_, ns_, {chain.begin(), chain.begin() + 4});
  auto r = store_->Lookup(ns_, KeysOf(chain));
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->prefix_chunks, 4u);
  ASSERT_EQ(r->chunks.size(), 6u);
  EXPECT_TRUE(r->chunks[3].present);
  EXPECT_FALSE(r->chunks[4].present);
  EXPECT_EQ(r->chunks[0].codec_spec, "raw");
  EXPECT_EQ(r->chunks[0].size_bytes, chain[0].bytes.size());
  EXPECT_EQ(r->chunks[0].tier, TierKind::kDram);
  EXPECT_EQ(r->requested_tokens, 6 * test::kChunkTokens);
  EXPECT_EQ(r->hit_tokens, 4 * test::kChunkTokens);

  // A gap: keys 0, 2 -> prefix 1 (2 is present but does not follow 0).
  std::vector<Key128> gap = {chain[0].key, chain[2].key};
  r = store_->Lookup(ns_, gap);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->prefix_chunks, 1u);
  EXPECT_TRUE(r->chunks[1].present);

  EXPECT_EQ(MetricValue(registry_, "seqkv_lookup_tokens_total"), 8 * test::kChunkTokens);
  EXPECT_EQ(MetricValue(registry_, "seqkv_hit_tokens_total"), 5 * test::kChunkTokens);
  EXPECT_EQ(store_->Lookup(Key128{9, 9}, gap).status().code(), StatusCode::kNotFound);
}

TEST_F(StoreTest, SharedPrefixIsStoredOnce) {
  constexpr int kSessions = 10;
  constexpr uint32_t kShared = 8;
  const auto shared_tokens = Tokens(kShared, 3);
  uint64_t one_copy = 0;
  uint64_t logical = 0;
  for (int s = 0; s < kSessions; ++s) {
    auto tokens = shared_tokens;
    auto own = Tokens(1, 100 + s);
    tokens.insert(tokens.end(), own.begin(), own.end());
    auto chain = MakeChain(ns_, tokens);
    for (size_t i = 0; i < chain.size(); ++i) {
      auto r = store_->Put(ns_, chain[i].parent, chain[i].key, chain[i].bytes);
      ASSERT_TRUE(r.ok()) << r.status().ToString();
      EXPECT_EQ(r->deduplicated, s > 0 && i < kShared);
      logical += chain[i].bytes.size();
      if (s == 0 && i < kShared) one_copy += chain[i].bytes.size();
    }
  }
  auto stats = store_->Stats();
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->disk.chunks, kShared + kSessions);
  EXPECT_EQ(stats->disk.logical_bytes, logical);
  // Physical: one copy of the prefix plus each session's own chunk.
  EXPECT_LT(stats->disk.physical_bytes, one_copy + kSessions * (one_copy / kShared) * 11 / 10);
  EXPECT_GT(stats->dedup_ratio, 4.0);
  EXPECT_EQ(stats->dedup_puts, (kSessions - 1) * kShared);
  EXPECT_DOUBLE_EQ(MetricValue(registry_, "seqkv_dedup_ratio"), stats->dedup_ratio);
  EXPECT_EQ(MetricValue(registry_, "seqkv_bytes", {{"tier", "disk"}, {"kind", "physical"}}),
            stats->disk.physical_bytes);
  EXPECT_EQ(MetricValue(registry_, "seqkv_bytes", {{"tier", "disk"}, {"kind", "logical"}}), logical);
  // Raw codec: stored bytes are a little more than the raw KV.
  EXPECT_GT(stats->compression_ratio, 0.8);
  EXPECT_LE(stats->compression_ratio, 1.0);

  auto info = store_->Inspect(ns_, MakeChain(ns_, shared_tokens)[kShared - 1].key);
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->children.size(), static_cast<size_t>(kSessions));
  EXPECT_EQ(info->puts, static_cast<uint64_t>(kSessions));
  EXPECT_EQ(info->depth, kShared - 1);
}

TEST_F(StoreTest, InspectDescribesTheChunk) {
  auto chain = MakeChain(ns_, Tokens(2, 4), 4, "lossless");
  PutChain(*store_, ns_, chain);
  auto info = store_->Inspect(ns_, chain[1].key);
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->parent, chain[0].key);
  EXPECT_TRUE(info->children.empty());
  EXPECT_EQ(info->depth, 1u);
  EXPECT_EQ(info->size_bytes, chain[1].bytes.size());
  EXPECT_EQ(info->raw_kv_bytes, 2u * 2 * 2 * test::kChunkTokens * 32 * 2);
  EXPECT_EQ(info->shape, (KvShape{2, 2, test::kChunkTokens, 32}));
  EXPECT_EQ(info->codec_id, static_cast<uint16_t>(CodecId::kLossless));
  EXPECT_EQ(info->first_position, test::kChunkTokens);
  EXPECT_TRUE(info->on_disk);
  EXPECT_EQ(info->tier, TierKind::kDram);
  EXPECT_EQ(store_->Inspect(ns_, Key128{1, 1}).status().code(), StatusCode::kNotFound);
}

TEST_F(StoreTest, RejectsBadInput) {
  auto chain = MakeChain(ns_, Tokens(2, 5));
  const auto& c0 = chain[0];
  // Unknown namespace.
  EXPECT_EQ(store_->Put(Key128{1, 1}, std::nullopt, c0.key, c0.bytes).status().code(), StatusCode::kNotFound);
  // Chain key mismatch (wrong key; wrong parent claim).
  auto s = store_->Put(ns_, std::nullopt, Key128{1, 2}, c0.bytes).status();
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("chain key"), std::string::npos) << s.ToString();
  // Parent absent.
  EXPECT_EQ(store_->Put(ns_, chain[1].parent, chain[1].key, chain[1].bytes).status().code(),
            StatusCode::kFailedPrecondition);
  // Corrupt section checksum (flip a byte near the end, inside the K/V data).
  auto corrupt = c0.bytes;
  corrupt[corrupt.size() - 10] ^= 0x40;
  s = store_->Put(ns_, std::nullopt, c0.key, corrupt).status();
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("checksum"), std::string::npos) << s.ToString();
  // Truncated and empty.
  std::vector<uint8_t> truncated(c0.bytes.begin(), c0.bytes.end() - 1);
  EXPECT_EQ(store_->Put(ns_, std::nullopt, c0.key, truncated).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->Put(ns_, std::nullopt, c0.key, {}).status().code(), StatusCode::kInvalidArgument);
  // Wrong token count: a chunk of 8 tokens in a 16-token namespace.
  {
    Chunk c = seqkv::test::RandomChunk({2, 2, 8, 32}, DType::kBF16, 3);
    c.first_position = 0;
    auto bytes = EncodeChunk(c, **MakeCodec("raw"));
    ASSERT_TRUE(bytes.ok());
    s = store_->Put(ns_, std::nullopt, NextChunkKey(ns_, c.tokens), *bytes).status();
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
    EXPECT_NE(s.message().find("tokens"), std::string::npos) << s.ToString();
  }
  // Wrong dtype.
  {
    Chunk c = seqkv::test::RandomChunk({2, 2, test::kChunkTokens, 32}, DType::kFP32, 3);
    c.first_position = 0;
    auto bytes = EncodeChunk(c, **MakeCodec("raw"));
    ASSERT_TRUE(bytes.ok());
    EXPECT_EQ(store_->Put(ns_, std::nullopt, NextChunkKey(ns_, c.tokens), *bytes).status().code(),
              StatusCode::kInvalidArgument);
  }
  // Wrong first_position for its depth.
  {
    Chunk c = seqkv::test::RandomChunk({2, 2, test::kChunkTokens, 32}, DType::kBF16, 3);
    c.first_position = 5;
    auto bytes = EncodeChunk(c, **MakeCodec("raw"));
    ASSERT_TRUE(bytes.ok());
    s = store_->Put(ns_, std::nullopt, NextChunkKey(ns_, c.tokens), *bytes).status();
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
    EXPECT_NE(s.message().find("first_position"), std::string::npos) << s.ToString();
  }
  // Nothing became visible.
  auto stats = store_->Stats();
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->disk.chunks, 0u);
  // And the good chunk still goes in.
  EXPECT_TRUE(store_->Put(ns_, std::nullopt, c0.key, c0.bytes).ok());
}

TEST_F(StoreTest, RejectsOversizedChunk) {
  store_.reset();
  StoreOptions options = TestOptions(dir_);
  auto chain = MakeChain(ns_, Tokens(1, 6));
  options.max_chunk_bytes = chain[0].bytes.size() - 1;
  auto store = Store::Open(options, nullptr);
  ASSERT_TRUE(store.ok());
  auto s = (*store)->Put(ns_, std::nullopt, chain[0].key, chain[0].bytes).status();
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("max_chunk_bytes"), std::string::npos);
}

TEST_F(StoreTest, DeleteRemovesDescendants) {
  auto chain = MakeChain(ns_, Tokens(4, 7));
  PutChain(*store_, ns_, chain);
  auto r = store_->Delete(ns_, chain[1].key);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->chunks, 3u);
  auto lookup = store_->Lookup(ns_, KeysOf(chain));
  ASSERT_TRUE(lookup.ok());
  EXPECT_EQ(lookup->prefix_chunks, 1u);
  EXPECT_FALSE(lookup->chunks[3].present);
  EXPECT_EQ(store_->Delete(ns_, chain[1].key).status().code(), StatusCode::kNotFound);
  // Pinned: refused without force.
  ASSERT_TRUE(store_->Pin(ns_, chain[0].key).ok());
  EXPECT_EQ(store_->Delete(ns_, chain[0].key).status().code(), StatusCode::kFailedPrecondition);
  EXPECT_TRUE(store_->Delete(ns_, chain[0].key, {.force = true}).ok());
  auto stats = store_->Stats();
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->disk.chunks, 0u);
  EXPECT_EQ(stats->dram.chunks, 0u);
  EXPECT_EQ(stats->disk.physical_bytes, 0u);
  // Re-put works after delete.
  PutChain(*store_, ns_, chain);
  auto got = store_->Get(ns_, chain[3].key);
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(**got, chain[3].bytes);
}

TEST_F(StoreTest, DeleteNamespaceRemovesEverything) {
  PutChain(*store_, ns_, MakeChain(ns_, Tokens(3, 8)));
  PutChain(*store_, ns_, MakeChain(ns_, Tokens(2, 9)));
  auto r = store_->DeleteNamespace(ns_, {});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->chunks, 5u);
  EXPECT_EQ(store_->GetNamespace(ns_).status().code(), StatusCode::kNotFound);
  auto stats = store_->Stats();
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->disk.chunks, 0u);
  EXPECT_EQ(stats->namespaces, 0u);
}

}  // namespace
}  // namespace seqkv::server

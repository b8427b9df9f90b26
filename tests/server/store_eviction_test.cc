// Eviction: DRAM and disk budgets, LRU with leaves before parents, pins and
// leases never evicted, promotions.
#include <gtest/gtest.h>
#include <prometheus/registry.h>

#include <filesystem>

#include "seqkv/server/store.h"
#include "server/store_test_helpers.h"

namespace seqkv::server {
namespace {

using test::KeysOf;
using test::MakeChain;
using test::MetricValue;
using test::PutChain;
using test::TestChunk;
using test::TestNamespace;
using test::TestOptions;
using test::Tokens;

class EvictionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = seqkv::test::TempDir("evict");
    // Every test chunk has about the same size (token ids are bit-packed,
    // so sizes differ by a few bytes): budgets are set in chunk units.
    chunk_bytes_ = MakeChain(Key128{}, Tokens(1, 1))[0].bytes.size();
  }
  void TearDown() override {
    store_.reset();
    std::filesystem::remove_all(dir_);
  }

  void Open(double dram_chunks, double disk_chunks) {
    StoreOptions options = TestOptions(dir_);
    options.dram_budget_bytes = static_cast<uint64_t>(dram_chunks * chunk_bytes_);
    options.disk_budget_bytes = static_cast<uint64_t>(disk_chunks * chunk_bytes_);
    auto store = Store::Open(options, &registry_);
    ASSERT_TRUE(store.ok()) << store.status().ToString();
    store_ = std::move(store).value();
    ns_ = *store_->RegisterNamespace(TestNamespace());
  }

  ChunkInfo Info(const TestChunk& c) {
    auto info = store_->Inspect(ns_, c.key);
    EXPECT_TRUE(info.ok()) << info.status().ToString();
    return info.ok() ? *info : ChunkInfo{};
  }
  bool Present(const TestChunk& c) { return store_->Inspect(ns_, c.key).ok(); }

  std::string dir_;
  uint64_t chunk_bytes_ = 0;
  prometheus::Registry registry_;
  std::unique_ptr<Store> store_;
  Key128 ns_;
};

TEST_F(EvictionTest, DramDropsLruLeavesFirstAndPromotesOnRead) {
  Open(/*dram=*/3.5, /*disk=*/100);
  auto a = MakeChain(ns_, Tokens(3, 10));
  auto b = MakeChain(ns_, Tokens(1, 11));
  PutChain(*store_, ns_, a);
  PutChain(*store_, ns_, b);
  // Four chunks, room for three: the oldest leaf is a2 (a0 and a1 have a
  // child in DRAM, so they stay even though they are older).
  EXPECT_TRUE(Info(a[0]).in_dram);
  EXPECT_TRUE(Info(a[1]).in_dram);
  EXPECT_FALSE(Info(a[2]).in_dram);
  EXPECT_TRUE(Info(a[2]).on_disk);
  EXPECT_TRUE(Info(b[0]).in_dram);
  EXPECT_EQ(Info(a[2]).tier, TierKind::kDisk);

  // Reading a2 promotes it; now b0 is the oldest leaf.
  auto got = store_->Get(ns_, a[2].key);
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(**got, a[2].bytes);
  EXPECT_TRUE(Info(a[2]).in_dram);
  EXPECT_FALSE(Info(b[0]).in_dram);
  auto stats = store_->Stats();
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->promotions, 1u);
  EXPECT_EQ(stats->dram.evictions, 2u);
  EXPECT_EQ(stats->disk.evictions, 0u);
  EXPECT_EQ(stats->dram.chunks, 3u);
  EXPECT_EQ(stats->disk.chunks, 4u);
  EXPECT_LE(stats->dram.physical_bytes, stats->dram.budget_bytes);
  EXPECT_EQ(MetricValue(registry_, "seqkv_promotions_total"), 1);
  EXPECT_EQ(MetricValue(registry_, "seqkv_evictions_total", {{"tier", "dram"}}), 2);
  EXPECT_EQ(MetricValue(registry_, "seqkv_chunks", {{"tier", "dram"}}), 3);
}

TEST_F(EvictionTest, DiskEvictsLeavesFirstAndNeverPinned) {
  Open(/*dram=*/100, /*disk=*/4.5);
  auto a = MakeChain(ns_, Tokens(3, 20));
  PutChain(*store_, ns_, a);
  ASSERT_TRUE(store_->Pin(ns_, a[1].key).ok());
  auto b = MakeChain(ns_, Tokens(2, 21));
  PutChain(*store_, ns_, b);
  // Putting b1 needed room: a2 was the only evictable leaf (a1 is pinned,
  // a0 has a child, b0 was getting a child).
  EXPECT_FALSE(Present(a[2]));
  EXPECT_TRUE(Present(a[1]));
  EXPECT_TRUE(Present(a[0]));
  auto lookup = store_->Lookup(ns_, KeysOf(a));
  ASSERT_TRUE(lookup.ok());
  EXPECT_EQ(lookup->prefix_chunks, 2u);

  auto c = MakeChain(ns_, Tokens(1, 22));
  PutChain(*store_, ns_, c);
  EXPECT_FALSE(Present(b[1]));  // the oldest leaf
  auto d = MakeChain(ns_, Tokens(1, 23));
  PutChain(*store_, ns_, d);
  EXPECT_FALSE(Present(b[0]));  // a leaf now, and older than c0
  EXPECT_TRUE(Present(c[0]));
  EXPECT_TRUE(Present(a[1]));
  EXPECT_TRUE(Present(a[0]));

  // Unpinned, a1 is the oldest leaf and goes next; its parent a0 follows.
  ASSERT_TRUE(store_->Unpin(ns_, a[1].key).ok());
  EXPECT_EQ(store_->Unpin(ns_, a[1].key).code(), StatusCode::kFailedPrecondition);
  PutChain(*store_, ns_, MakeChain(ns_, Tokens(1, 24)));
  EXPECT_FALSE(Present(a[1]));
  EXPECT_TRUE(Present(a[0]));
  PutChain(*store_, ns_, MakeChain(ns_, Tokens(1, 25)));
  EXPECT_FALSE(Present(a[0]));
  auto stats = store_->Stats();
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->disk.evictions, 5u);
  EXPECT_LE(stats->disk.physical_bytes, stats->disk.budget_bytes);
  EXPECT_EQ(MetricValue(registry_, "seqkv_evictions_total", {{"tier", "disk"}}), 5);
}

TEST_F(EvictionTest, FullOfPinnedChunksIsResourceExhausted) {
  Open(/*dram=*/100, /*disk=*/2.5);
  auto a = MakeChain(ns_, Tokens(1, 30));
  auto b = MakeChain(ns_, Tokens(1, 31));
  ASSERT_TRUE(store_->Put(ns_, std::nullopt, a[0].key, a[0].bytes, {.pin = true}).ok());
  ASSERT_TRUE(store_->Put(ns_, std::nullopt, b[0].key, b[0].bytes, {.pin = true}).ok());
  EXPECT_EQ(Info(a[0]).pins, 1u);
  auto c = MakeChain(ns_, Tokens(1, 32));
  auto s = store_->Put(ns_, std::nullopt, c[0].key, c[0].bytes).status();
  EXPECT_EQ(s.code(), StatusCode::kResourceExhausted) << s.ToString();
  EXPECT_TRUE(Present(a[0]));
  EXPECT_TRUE(Present(b[0]));
}

TEST_F(EvictionTest, LeasesProtectHeldPrefixes) {
  Open(/*dram=*/100, /*disk=*/100);
  auto a = MakeChain(ns_, Tokens(3, 40));
  auto b = MakeChain(ns_, Tokens(3, 41));
  PutChain(*store_, ns_, a);
  PutChain(*store_, ns_, b);
  auto lease = store_->Acquire(ns_, KeysOf(a));
  ASSERT_TRUE(lease.ok());
  EXPECT_EQ(lease->chunks, 3u);
  EXPECT_EQ(Info(a[2]).holders, 1u);
  // Evict everything evictable from disk: only b goes.
  auto evicted = store_->Evict({.ns = std::nullopt, .tier = TierKind::kDisk, .bytes = UINT64_MAX});
  ASSERT_TRUE(evicted.ok());
  EXPECT_EQ(evicted->chunks, 3u);
  EXPECT_TRUE(Present(a[2]));
  EXPECT_FALSE(Present(b[0]));
  // Held chunks cannot be deleted without force either.
  EXPECT_EQ(store_->Delete(ns_, a[0].key).status().code(), StatusCode::kFailedPrecondition);
  ASSERT_TRUE(store_->Release(lease->id).ok());
  EXPECT_EQ(store_->Release(lease->id).code(), StatusCode::kNotFound);
  EXPECT_EQ(Info(a[2]).holders, 0u);
  evicted = store_->Evict({.ns = std::nullopt, .tier = TierKind::kDisk, .bytes = 1});
  ASSERT_TRUE(evicted.ok());
  EXPECT_EQ(evicted->chunks, 1u);
  EXPECT_FALSE(Present(a[2]));  // the leaf, not the root
  EXPECT_TRUE(Present(a[0]));
  // An empty lease (nothing present) is fine to release.
  auto none = store_->Acquire(ns_, KeysOf(b));
  ASSERT_TRUE(none.ok());
  EXPECT_EQ(none->chunks, 0u);
  EXPECT_TRUE(store_->Release(none->id).ok());
}

TEST_F(EvictionTest, EvictDramOnlyDropsCachedCopies) {
  Open(/*dram=*/100, /*disk=*/100);
  auto a = MakeChain(ns_, Tokens(3, 50));
  PutChain(*store_, ns_, a);
  auto other = *store_->RegisterNamespace(TestNamespace("other"));
  auto o = MakeChain(other, Tokens(2, 51));
  PutChain(*store_, other, o);
  // Only namespace `other`, DRAM only.
  auto evicted = store_->Evict({.ns = other, .tier = TierKind::kDram, .bytes = UINT64_MAX});
  ASSERT_TRUE(evicted.ok());
  EXPECT_EQ(evicted->chunks, 2u);
  EXPECT_TRUE(Info(a[0]).in_dram);
  auto info = store_->Inspect(other, o[1].key);
  ASSERT_TRUE(info.ok());
  EXPECT_FALSE(info->in_dram);
  EXPECT_TRUE(info->on_disk);
  auto got = store_->Get(other, o[1].key, {.promote = false});
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(**got, o[1].bytes);
  EXPECT_FALSE(store_->Inspect(other, o[1].key)->in_dram);
  EXPECT_EQ(store_->Evict({.ns = std::nullopt, .tier = TierKind::kNone, .bytes = 1}).status().code(),
            StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace seqkv::server

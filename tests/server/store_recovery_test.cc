// Restart and corruption: the index is rebuilt from RocksDB; chunks come
// back bit-identical; a corrupt payload or record is a counted miss, never
// wrong data.
#include <gtest/gtest.h>
#include <prometheus/registry.h>
#include <rocksdb/db.h>

#include <filesystem>

#include "seqkv/server/store.h"
#include "seqkv/server/tier.h"
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

class RecoveryTest : public ::testing::Test {
 protected:
  void SetUp() override { dir_ = seqkv::test::TempDir("recovery"); }
  void TearDown() override {
    store_.reset();
    std::filesystem::remove_all(dir_);
  }

  void Open(StoreOptions options, prometheus::Registry* registry = nullptr) {
    store_.reset();
    auto store = Store::Open(options, registry);
    ASSERT_TRUE(store.ok()) << store.status().ToString();
    store_ = std::move(store).value();
  }
  void Open() { Open(TestOptions(dir_)); }

  // Rewrites one value of a column family with RocksDB directly, as a
  // failing disk or a stray writer would. The store must be closed.
  void Overwrite(const std::string& family, const std::string& key,
                 const std::function<void(std::string*)>& edit) {
    store_.reset();
    std::vector<rocksdb::ColumnFamilyDescriptor> families = {
        {rocksdb::kDefaultColumnFamilyName, {}}, {kMetaColumnFamily, {}}, {kChunksColumnFamily, {}}};
    std::vector<rocksdb::ColumnFamilyHandle*> handles;
    rocksdb::DB* db = nullptr;
    ASSERT_TRUE(rocksdb::DB::Open(rocksdb::DBOptions(), dir_, families, &handles, &db).ok());
    rocksdb::ColumnFamilyHandle* h = family == kMetaColumnFamily ? handles[1] : handles[2];
    std::string value;
    ASSERT_TRUE(db->Get(rocksdb::ReadOptions(), h, key, &value).ok());
    edit(&value);
    ASSERT_TRUE(db->Put(rocksdb::WriteOptions(), h, key, value).ok());
    for (auto* handle : handles) ASSERT_TRUE(db->DestroyColumnFamilyHandle(handle).ok());
    ASSERT_TRUE(db->Close().ok());
    delete db;
  }

  std::string dir_;
  std::unique_ptr<Store> store_;
};

TEST_F(RecoveryTest, ChunksSurviveRestartBitIdentical) {
  StoreOptions options = TestOptions(dir_);
  options.sync_writes = true;
  Open(options);
  Key128 ns = *store_->RegisterNamespace(TestNamespace());
  Key128 other = *store_->RegisterNamespace(TestNamespace("other", "lossless"));
  auto a = MakeChain(ns, Tokens(5, 60));
  auto b = MakeChain(other, Tokens(3, 61), 7, "lossless");
  PutChain(*store_, ns, a);
  PutChain(*store_, ns, a);  // duplicates: puts == 2
  PutChain(*store_, other, b);
  ASSERT_TRUE(store_->Pin(ns, a[2].key).ok());
  auto before = *store_->Stats();

  Open(options);
  auto list = store_->ListNamespaces();
  ASSERT_TRUE(list.ok());
  EXPECT_EQ(list->size(), 2u);
  for (const auto& [space, chain] : {std::pair{ns, &a}, std::pair{other, &b}}) {
    auto lookup = store_->Lookup(space, KeysOf(*chain));
    ASSERT_TRUE(lookup.ok());
    EXPECT_EQ(lookup->prefix_chunks, chain->size());
    for (const TestChunk& c : *chain) {
      auto got = store_->Get(space, c.key);
      ASSERT_TRUE(got.ok()) << got.status().ToString();
      EXPECT_EQ(**got, c.bytes);
      EXPECT_TRUE(DecodeChunk(**got).ok());
    }
  }
  auto info = store_->Inspect(ns, a[2].key);
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->pins, 1u);
  EXPECT_EQ(info->puts, 2u);
  EXPECT_EQ(info->parent, a[1].key);
  EXPECT_EQ(info->children, std::vector<Key128>{a[3].key});
  auto after = *store_->Stats();
  EXPECT_EQ(after.disk.chunks, before.disk.chunks);
  EXPECT_EQ(after.disk.physical_bytes, before.disk.physical_bytes);
  EXPECT_EQ(after.disk.logical_bytes, before.disk.logical_bytes);
  EXPECT_EQ(after.raw_kv_bytes, before.raw_kv_bytes);
  EXPECT_TRUE(store_->Compact().ok());
  EXPECT_TRUE(store_->Get(ns, a[4].key).ok());
  // After compaction the payloads live in blob files.
  EXPECT_GE(store_->Stats()->disk_footprint_bytes, after.disk.physical_bytes);
}

TEST_F(RecoveryTest, SmallerDiskBudgetEvictsOnOpen) {
  Open();
  Key128 ns = *store_->RegisterNamespace(TestNamespace());
  auto a = MakeChain(ns, Tokens(6, 62));
  PutChain(*store_, ns, a);
  StoreOptions options = TestOptions(dir_);
  options.disk_budget_bytes = a[0].bytes.size() * 7 / 2;  // room for 3
  Open(options);
  auto lookup = store_->Lookup(ns, KeysOf(a));
  ASSERT_TRUE(lookup.ok());
  EXPECT_EQ(lookup->prefix_chunks, 3u);  // the leaves went first
  EXPECT_FALSE(lookup->chunks[3].present);
}

TEST_F(RecoveryTest, CorruptPayloadIsACountedMiss) {
  Open();
  Key128 ns = *store_->RegisterNamespace(TestNamespace());
  auto a = MakeChain(ns, Tokens(3, 63), 7, "lossless");
  PutChain(*store_, ns, a);
  // Flip one byte of chunk 1's last section, on disk.
  Overwrite(kChunksColumnFamily, ChunkPayloadKey({ns, a[1].key}),
            [](std::string* v) { (*v)[v->size() - 3] ^= 0x01; });

  prometheus::Registry registry;
  Open(TestOptions(dir_), &registry);
  EXPECT_TRUE(store_->Get(ns, a[0].key).ok());
  auto got = store_->Get(ns, a[1].key);
  EXPECT_EQ(got.status().code(), StatusCode::kDataLoss) << got.status().ToString();
  // Dropped with its descendant: now plain misses.
  EXPECT_EQ(store_->Get(ns, a[1].key).status().code(), StatusCode::kNotFound);
  EXPECT_EQ(store_->Get(ns, a[2].key).status().code(), StatusCode::kNotFound);
  auto lookup = store_->Lookup(ns, KeysOf(a));
  ASSERT_TRUE(lookup.ok());
  EXPECT_EQ(lookup->prefix_chunks, 1u);
  EXPECT_EQ(store_->Stats()->checksum_failures, 1u);
  EXPECT_EQ(MetricValue(registry, "seqkv_checksum_failures_total"), 1);

  // The drop is persistent, and the rest still verifies.
  Open();
  lookup = store_->Lookup(ns, KeysOf(a));
  ASSERT_TRUE(lookup.ok());
  EXPECT_EQ(lookup->prefix_chunks, 1u);
  EXPECT_FALSE(lookup->chunks[2].present);
  auto first = store_->Get(ns, a[0].key);
  ASSERT_TRUE(first.ok());
  EXPECT_EQ(**first, a[0].bytes);
}

TEST_F(RecoveryTest, CorruptRecordDropsTheChunkAndItsDescendants) {
  Open();
  Key128 ns = *store_->RegisterNamespace(TestNamespace());
  auto a = MakeChain(ns, Tokens(3, 64));
  auto b = MakeChain(ns, Tokens(2, 65));
  PutChain(*store_, ns, a);
  PutChain(*store_, ns, b);
  Overwrite(kMetaColumnFamily, ChunkRecordKey({ns, a[1].key}),
            [](std::string* v) { v->resize(v->size() / 2); });
  Open();
  auto lookup = store_->Lookup(ns, KeysOf(a));
  ASSERT_TRUE(lookup.ok());
  EXPECT_EQ(lookup->prefix_chunks, 1u);
  EXPECT_FALSE(lookup->chunks[2].present);
  lookup = store_->Lookup(ns, KeysOf(b));
  ASSERT_TRUE(lookup.ok());
  EXPECT_EQ(lookup->prefix_chunks, 2u);
  EXPECT_EQ(store_->Stats()->disk.chunks, 3u);
  // The dropped chunks can be put again.
  PutChain(*store_, ns, a);
  auto got = store_->Get(ns, a[2].key);
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(**got, a[2].bytes);
}

}  // namespace
}  // namespace seqkv::server

// Eviction through the real seqkv-server under small budgets: least recently
// used leaves go first (a chunk never outlives its prefix), pinned and held
// chunks stay, budgets hold.
#include <gtest/gtest.h>

#include "kv_fixture.h"
#include "server_process.h"
#include "util/test_util.h"

namespace seqkv::test {
namespace {

using client::Client;
using client::KvView;

constexpr uint32_t kChunks = 6;
constexpr uint64_t kDiskBudget = 200 << 10;
constexpr uint64_t kDramBudget = 64 << 10;

class EvictionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ServerProcessOptions options;
    options.data_dir = TempDir("eviction") + "/data";
    options.extra_args = {"--disk-budget", std::to_string(kDiskBudget), "--dram-budget", std::to_string(kDramBudget)};
    auto started = ServerProcess::Start(options);
    ASSERT_TRUE(started.ok()) << started.status().ToString();
    server_ = std::move(started).value();
    auto connected = server_->Connect();
    ASSERT_TRUE(connected.ok());
    client_ = std::move(connected).value();
  }
  void TearDown() override {
    if (HasFailure() && server_) std::cerr << "server log:\n" << server_->LogTail() << "\n";
  }

  // Present chunks of seq, checking that they form a prefix.
  uint32_t PresentPrefix(const Chunk& seq) {
    auto lookup = client_->Lookup(NamespaceId(ns_), Client::Keys(ns_, seq.tokens));
    EXPECT_TRUE(lookup.ok()) << lookup.status().ToString();
    if (!lookup.ok()) return 0;
    uint32_t present = 0;
    for (const auto& p : lookup->chunks) present += p.present ? 1 : 0;
    EXPECT_EQ(present, lookup->prefix_chunks) << "a chunk outlived its prefix: leaves were not evicted first";
    return lookup->prefix_chunks;
  }

  uint64_t EvictAll() {
    v1::EvictRequest request;
    request.set_tier(v1::TIER_DISK);
    request.set_bytes(~uint64_t{0});
    auto evicted = client_->Evict(request);
    EXPECT_TRUE(evicted.ok()) << evicted.status().ToString();
    return evicted.ok() ? evicted->chunks() : 0;
  }

  std::unique_ptr<ServerProcess> server_;
  std::unique_ptr<Client> client_;
  NamespaceFields ns_ = TestNamespace("raw");
};

TEST_F(EvictionTest, BudgetEvictsLeastRecentLeavesAndKeepsPins) {
  Chunk pinned = TestSequence(kChunks * kTestChunkTokens, 1);
  client::PutPrefixOptions pin;
  pin.pin = true;
  ASSERT_TRUE(client_->PutPrefix(ns_, KvView::Of(pinned), pin).ok());

  std::vector<Chunk> seqs;
  for (int s = 0; s < 8; ++s) {  // ~8 KiB chunks: 54 chunks, over twice the disk budget
    seqs.push_back(TestSequence(kChunks * kTestChunkTokens, 700 + s));
    auto put = client_->PutPrefix(ns_, KvView::Of(seqs.back()));
    ASSERT_TRUE(put.ok()) << "sequence " << s << ": " << put.status().ToString();
  }

  auto stats = client_->Stats();
  ASSERT_TRUE(stats.ok());
  EXPECT_LE(stats->disk().physical_bytes(), kDiskBudget);
  EXPECT_LE(stats->dram().physical_bytes(), kDramBudget);
  EXPECT_GT(stats->disk().evictions(), 0u);
  EXPECT_LT(stats->chunks(), kChunks * 9);

  EXPECT_EQ(PresentPrefix(pinned), kChunks);          // pinned: kept whatever its age
  EXPECT_EQ(PresentPrefix(seqs.back()), kChunks);     // most recent: kept
  EXPECT_LT(PresentPrefix(seqs.front()), kChunks);    // oldest: evicted first
  for (const Chunk& seq : seqs) PresentPrefix(seq);   // every survivor still has its prefix

  // Evicting everything evictable leaves exactly the pinned chunks.
  EvictAll();
  stats = client_->Stats();
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->chunks(), kChunks);
  EXPECT_EQ(PresentPrefix(pinned), kChunks);

  auto unpinned = client_->Unpin(NamespaceId(ns_), Client::Keys(ns_, pinned.tokens));
  ASSERT_TRUE(unpinned.ok());
  for (const Status& s : *unpinned) EXPECT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(EvictAll(), kChunks);
  EXPECT_EQ(PresentPrefix(pinned), 0u);
}

TEST_F(EvictionTest, HeldPrefixesSurviveUntilReleased) {
  Chunk seq = TestSequence(kChunks * kTestChunkTokens, 42);
  ASSERT_TRUE(client_->PutPrefix(ns_, KvView::Of(seq)).ok());
  auto lease = client_->Acquire(NamespaceId(ns_), Client::Keys(ns_, seq.tokens));
  ASSERT_TRUE(lease.ok()) << lease.status().ToString();
  EXPECT_EQ(lease->chunks(), kChunks);
  EXPECT_EQ(EvictAll(), 0u);
  EXPECT_EQ(PresentPrefix(seq), kChunks);
  ASSERT_TRUE(client_->Release(lease->lease_id()).ok());
  EXPECT_EQ(EvictAll(), kChunks);
  EXPECT_EQ(PresentPrefix(seq), 0u);
  EXPECT_EQ(client_->Release(lease->lease_id()).code(), StatusCode::kNotFound);
}

TEST_F(EvictionTest, DramEvictionKeepsChunksOnDisk) {
  Chunk seq = TestSequence(4 * kTestChunkTokens, 43);
  ASSERT_TRUE(client_->PutPrefix(ns_, KvView::Of(seq)).ok());
  v1::EvictRequest request;
  request.set_tier(v1::TIER_DRAM);
  request.set_bytes(~uint64_t{0});
  auto evicted = client_->Evict(request);
  ASSERT_TRUE(evicted.ok()) << evicted.status().ToString();
  auto stats = client_->Stats();
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->dram().chunks(), 0u);
  EXPECT_EQ(stats->chunks(), 4u);
  auto got = client_->GetPrefix(ns_, seq.tokens);  // served from disk (and promoted)
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_EQ(got->chunks, 4u);
  EXPECT_EQ(got->kv.k, seq.k);
}

}  // namespace
}  // namespace seqkv::test

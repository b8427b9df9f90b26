// The store through the real seqkv-server binary: shared prefixes stored
// once, longest-prefix lookups, concurrent clients, /metrics.
#include <gtest/gtest.h>

#include <atomic>
#include <map>
#include <thread>

#include "kv_fixture.h"
#include "server_process.h"
#include "util/test_util.h"

namespace seqkv::test {
namespace {

using client::Client;
using client::KvView;

class StoreIntegrationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ServerProcessOptions options;
    options.data_dir = TempDir("integration") + "/data";
    auto started = ServerProcess::Start(options);
    ASSERT_TRUE(started.ok()) << started.status().ToString();
    server_ = std::move(started).value();
    auto connected = server_->Connect();
    ASSERT_TRUE(connected.ok()) << connected.status().ToString();
    client_ = std::move(connected).value();
  }
  void TearDown() override {
    if (HasFailure() && server_) std::cerr << "server log:\n" << server_->LogTail() << "\n";
  }

  // Encoded size of every full chunk of seq, by key.
  static std::map<Key128, uint64_t> ChunkSizes(const NamespaceFields& ns, const Chunk& seq) {
    std::map<Key128, uint64_t> sizes;
    std::vector<Key128> keys = Client::Keys(ns, seq.tokens);
    for (size_t i = 0; i < keys.size(); ++i) {
      auto slice = client::SliceKv(KvView::Of(seq), i * ns.chunk_tokens, ns.chunk_tokens);
      EXPECT_TRUE(slice.ok());
      auto encoded = Client::EncodeKv(ns, KvView::Of(*slice));
      EXPECT_TRUE(encoded.ok()) << encoded.status().ToString();
      sizes[keys[i]] = encoded->size();
    }
    return sizes;
  }

  std::unique_ptr<ServerProcess> server_;
  std::unique_ptr<Client> client_;
};

TEST_F(StoreIntegrationTest, SessionsSharingAPrefixStoreItOnce) {
  const NamespaceFields ns = TestNamespace("raw");
  const uint32_t shared_chunks = 8, session_chunks = 10, sessions = 6;
  Chunk base = TestSequence(session_chunks * kTestChunkTokens, 1);
  std::map<Key128, uint64_t> distinct;  // key -> encoded size
  uint64_t resent_bytes = 0;
  std::vector<Chunk> seqs;
  for (uint32_t s = 0; s < sessions; ++s) {
    seqs.push_back(Diverge(base, shared_chunks * kTestChunkTokens, 100 + s));
    client::PutPrefixOptions options;
    options.skip_present = s % 2 == 0;  // odd sessions send everything: the server deduplicates
    auto put = client_->PutPrefix(ns, KvView::Of(seqs.back()), options);
    ASSERT_TRUE(put.ok()) << put.status().ToString();
    EXPECT_EQ(put->chunks, session_chunks);
    EXPECT_EQ(put->stored, session_chunks - (s == 0 ? 0 : shared_chunks));
    EXPECT_EQ(put->already_present, s == 0 ? 0 : shared_chunks);
    auto sizes = ChunkSizes(ns, seqs.back());
    if (s > 0 && !options.skip_present) {
      for (const auto& [key, size] : sizes) resent_bytes += distinct.count(key) ? size : 0;
    }
    distinct.insert(sizes.begin(), sizes.end());
  }
  ASSERT_EQ(distinct.size(), shared_chunks + sessions * (session_chunks - shared_chunks));
  uint64_t physical = 0;
  for (const auto& [key, size] : distinct) physical += size;

  auto stats = client_->Stats();
  ASSERT_TRUE(stats.ok()) << stats.status().ToString();
  EXPECT_EQ(stats->chunks(), distinct.size());
  EXPECT_EQ(stats->physical_bytes(), physical);  // exactly one copy of the shared prefix
  EXPECT_EQ(stats->logical_bytes(), physical + resent_bytes);
  EXPECT_GT(stats->dedup_ratio(), 1.0);

  for (const Chunk& seq : seqs) {
    auto got = client_->GetPrefix(ns, seq.tokens);
    ASSERT_TRUE(got.ok()) << got.status().ToString();
    ASSERT_EQ(got->chunks, session_chunks);
    EXPECT_EQ(got->kv.tokens, seq.tokens);
    EXPECT_EQ(got->kv.k, seq.k);  // raw codec: bit-exact
    EXPECT_EQ(got->kv.v, seq.v);
  }
}

TEST_F(StoreIntegrationTest, LookupFindsTheLongestStoredPrefix) {
  const NamespaceFields ns = TestNamespace("lossless");
  Chunk seq = TestSequence(8 * kTestChunkTokens, 7);
  ASSERT_TRUE(client_->PutPrefix(ns, KvView::Of(seq)).ok());
  const Key128 id = NamespaceId(ns);

  // Diverging inside chunk 5: chunks 0..4 are shared.
  Chunk probe = Diverge(seq, 5 * kTestChunkTokens + 3, 99);
  auto lookup = client_->Lookup(id, Client::Keys(ns, probe.tokens));
  ASSERT_TRUE(lookup.ok()) << lookup.status().ToString();
  EXPECT_EQ(lookup->prefix_chunks, 5u);
  auto got = client_->GetPrefix(ns, probe.tokens);
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  ASSERT_EQ(got->chunks, 5u);
  auto expected = client::SliceKv(KvView::Of(seq), 0, 5 * kTestChunkTokens);
  ASSERT_TRUE(expected.ok());
  EXPECT_EQ(got->kv.k, expected->k);  // lossless: bit-exact
  EXPECT_EQ(got->kv.v, expected->v);
  EXPECT_EQ(got->kv.tokens, expected->tokens);

  // A trailing partial chunk has no key; the full ones are all there.
  std::vector<int32_t> partial(seq.tokens.begin(), seq.tokens.end() - 1);
  lookup = client_->Lookup(id, Client::Keys(ns, partial));
  ASSERT_TRUE(lookup.ok());
  EXPECT_EQ(lookup->chunks.size(), 7u);
  EXPECT_EQ(lookup->prefix_chunks, 7u);

  // A gap ends the usable prefix even if later chunks are present.
  std::vector<Key128> keys = Client::Keys(ns, seq.tokens);
  keys[2] = Key128{1, 2};
  lookup = client_->Lookup(id, keys);
  ASSERT_TRUE(lookup.ok());
  EXPECT_EQ(lookup->prefix_chunks, 2u);
  EXPECT_FALSE(lookup->chunks[2].present);
  EXPECT_TRUE(lookup->chunks[3].present);

  // Nothing shared from the first chunk on.
  got = client_->GetPrefix(ns, Diverge(seq, 0, 5).tokens);
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->chunks, 0u);
}

TEST_F(StoreIntegrationTest, ConcurrentClients) {
  const NamespaceFields ns = TestNamespace("lossless");
  const Chunk base = TestSequence(6 * kTestChunkTokens, 3);
  constexpr int kThreads = 4, kRounds = 6;
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      auto client = server_->Connect();
      if (!client.ok()) {
        ++failures;
        return;
      }
      for (int r = 0; r < kRounds; ++r) {
        // Every thread races on the same shared chunks and adds its own.
        Chunk seq = Diverge(base, static_cast<uint32_t>((2 + (t + r) % 4) * kTestChunkTokens), 1000 * t + r);
        auto put = (*client)->PutPrefix(ns, KvView::Of(seq));
        auto got = (*client)->GetPrefix(ns, seq.tokens);
        if (!put.ok() || !got.ok() || got->chunks != 6 || got->kv.k != seq.k || got->kv.v != seq.v) ++failures;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(failures.load(), 0);
  // The shared first two chunks exist once, whatever the interleaving.
  auto lookup = client_->Lookup(NamespaceId(ns), Client::Keys(ns, base.tokens));
  ASSERT_TRUE(lookup.ok());
  EXPECT_GE(lookup->prefix_chunks, 2u);
  auto namespaces = client_->ListNamespaces();
  ASSERT_TRUE(namespaces.ok());
  ASSERT_EQ(namespaces->namespaces_size(), 1);
}

TEST_F(StoreIntegrationTest, MetricsAreScrapedOverHttp) {
  const NamespaceFields ns = TestNamespace("raw");
  Chunk seq = TestSequence(3 * kTestChunkTokens, 11);
  ASSERT_TRUE(client_->PutPrefix(ns, KvView::Of(seq)).ok());
  ASSERT_TRUE(client_->GetPrefix(ns, seq.tokens).ok());
  // One client error, counted under its code.
  EXPECT_EQ(client_->Lookup(Key128{9, 9}, {}).status().code(), StatusCode::kNotFound);

  auto body = HttpGet(server_->metrics_address(), "/metrics");
  ASSERT_TRUE(body.ok()) << body.status().ToString();
  EXPECT_GE(MetricValue(*body, "seqkv_rpc_requests_total{code=\"OK\",method=\"Put\"}"), 1);
  EXPECT_GE(MetricValue(*body, "seqkv_rpc_requests_total{code=\"OK\",method=\"Get\"}"), 1);
  EXPECT_GE(MetricValue(*body, "seqkv_rpc_requests_total{code=\"NOT_FOUND\",method=\"Lookup\"}"), 1);
  EXPECT_GE(MetricValue(*body, "seqkv_rpc_latency_seconds_count{method=\"Lookup\"}"), 3);
  EXPECT_GT(MetricValue(*body, "seqkv_rpc_received_bytes_total{method=\"Put\"}"), 3 * 8192);
  EXPECT_GT(MetricValue(*body, "seqkv_lookup_tokens_total"), 0);
  EXPECT_NE(body->find("seqkv_rpc_requests_total{code=\"OK\",method=\"Compact\"} 0"), std::string::npos);
}

}  // namespace
}  // namespace seqkv::test

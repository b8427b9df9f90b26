// Concurrent puts, gets, lookups, leases and evictions from several threads
// (as many gRPC threads would do), with shared prefixes so that puts of the
// same key race, and small budgets so that eviction and promotion run too.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <thread>

#include "seqkv/server/store.h"
#include "server/store_test_helpers.h"

namespace seqkv::server {
namespace {

using test::KeysOf;
using test::MakeChain;
using test::TestChunk;
using test::TestNamespace;
using test::TestOptions;
using test::Tokens;

constexpr int kThreads = 4;
constexpr int kSessionsPerThread = 30;
constexpr uint32_t kShared = 6;
constexpr uint32_t kOwn = 3;

std::vector<TestChunk> Session(const Key128& ns, int thread, int session) {
  auto tokens = Tokens(kShared, 1 + session % 3);  // three shared prefixes
  auto own = Tokens(kOwn, 1000 + thread * 100 + session);
  tokens.insert(tokens.end(), own.begin(), own.end());
  return MakeChain(ns, tokens);
}

TEST(ConcurrencyTest, ManyThreadsPutGetLookupAndEvict) {
  const std::string dir = seqkv::test::TempDir("concurrency");
  const Key128 probe = NamespaceId(TestNamespace());
  const uint64_t chunk_bytes = Session(probe, 0, 0)[0].bytes.size();
  StoreOptions options = TestOptions(dir);
  options.dram_budget_bytes = 20 * chunk_bytes;  // forces DRAM eviction and promotion
  options.disk_budget_bytes = 40 * chunk_bytes;  // forces disk eviction
  auto opened = Store::Open(options, nullptr);
  ASSERT_TRUE(opened.ok()) << opened.status().ToString();
  Store& store = **opened;
  const Key128 ns = *store.RegisterNamespace(TestNamespace());

  std::atomic<int> wrong_bytes{0};
  std::atomic<int> errors{0};
  std::atomic<int> hits{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int s = 0; s < kSessionsPerThread; ++s) {
        auto chain = Session(ns, t, s);
        auto keys = KeysOf(chain);
        auto lease = store.Acquire(ns, keys);
        if (!lease.ok()) ++errors;
        for (const TestChunk& c : chain) {
          auto r = store.Put(ns, c.parent, c.key, c.bytes);
          // The parent may have been evicted by another thread's put: that
          // is the only acceptable failure.
          if (!r.ok() && r.status().code() != StatusCode::kFailedPrecondition) ++errors;
          if (!r.ok()) break;
        }
        auto lookup = store.Lookup(ns, keys);
        if (!lookup.ok()) ++errors;
        for (size_t i = 0; lookup.ok() && i < lookup->prefix_chunks; ++i) {
          auto got = store.Get(ns, keys[i]);
          if (got.ok()) {
            ++hits;
            if (**got != chain[i].bytes) ++wrong_bytes;
          } else if (got.status().code() != StatusCode::kNotFound) {
            ++errors;  // evicted in between is fine; anything else is not
          }
        }
        if (lease.ok() && !store.Release(lease->id).ok()) ++errors;
        if (s % 4 == 3) {
          auto evicted = store.Evict({.ns = std::nullopt, .tier = TierKind::kDram, .bytes = 2 * chunk_bytes});
          if (!evicted.ok()) ++errors;
        }
      }
    });
  }
  // A chaos thread: deletes shared prefixes (forced, so held ones too) and
  // evicts from DRAM while the others work. Puts may then find their parent
  // gone (FailedPrecondition) and gets may miss; nothing may be wrong.
  std::atomic<bool> stop{false};
  std::thread chaos([&] {
    int round = 0;
    while (!stop.load()) {
      auto prefix = Session(ns, 0, round++ % 3);
      auto r = store.Delete(ns, prefix[kShared - 2].key, {.force = true});
      if (!r.ok() && r.status().code() != StatusCode::kNotFound) ++errors;
      std::this_thread::sleep_for(std::chrono::milliseconds(3));
    }
  });
  for (auto& th : threads) th.join();
  stop = true;
  chaos.join();
  EXPECT_EQ(wrong_bytes.load(), 0);
  EXPECT_EQ(errors.load(), 0);
  EXPECT_GT(hits.load(), kThreads * kSessionsPerThread);

  auto stats = store.Stats();
  ASSERT_TRUE(stats.ok());
  EXPECT_LE(stats->dram.physical_bytes, options.dram_budget_bytes);
  EXPECT_LE(stats->disk.physical_bytes, options.disk_budget_bytes);
  EXPECT_GT(stats->dedup_puts, 0u);
  EXPECT_GT(stats->disk.evictions, 0u);
  EXPECT_EQ(stats->checksum_failures, 0u);
  // Every chunk still present is intact and has its prefix.
  uint64_t present = 0;
  for (int t = 0; t < kThreads; ++t) {
    for (int s = 0; s < kSessionsPerThread; ++s) {
      auto chain = Session(ns, t, s);
      auto lookup = store.Lookup(ns, KeysOf(chain));
      ASSERT_TRUE(lookup.ok());
      for (size_t i = 0; i < chain.size(); ++i) {
        if (!lookup->chunks[i].present) continue;
        EXPECT_LT(i, lookup->prefix_chunks);
        auto got = store.Get(ns, chain[i].key);
        ASSERT_TRUE(got.ok()) << got.status().ToString();
        EXPECT_EQ(**got, chain[i].bytes);
        if (i >= kShared) ++present;
      }
    }
  }
  EXPECT_GE(stats->disk.chunks, present);
  opened->reset();
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace seqkv::server

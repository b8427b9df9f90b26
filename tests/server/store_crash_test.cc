// Crash safety: a child process puts chunks in a loop and is killed with
// SIGKILL mid-way; the reopened store must show only whole, verified chunks
// with whole prefixes.
//
// Its own executable on purpose: fork() must happen before this process has
// started any RocksDB background threads.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <iostream>
#include <random>
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

constexpr int kMaxSessions = 300;
constexpr uint32_t kSharedChunks = 2;
constexpr uint32_t kOwnChunks = 3;
const KvShape kShape = {4, 4, test::kChunkTokens, 64};  // 64 KiB of raw KV per chunk

// Session s: 2 chunks shared by all sessions, then 3 of its own.
std::vector<TestChunk> Session(const Key128& ns, int s) {
  auto tokens = Tokens(kSharedChunks, 1);
  auto own = Tokens(kOwnChunks, 1000 + s);
  tokens.insert(tokens.end(), own.begin(), own.end());
  return MakeChain(ns, tokens, 5, "lossless", kShape);
}

// The child: puts sessions until killed; writes the index of each finished
// session to `fd`. Bounded by count and time so it always ends.
[[noreturn]] void PutForever(const std::string& dir, int fd) {
  StoreOptions options = TestOptions(dir);
  options.sync_writes = true;
  auto store = Store::Open(options, nullptr);
  if (!store.ok()) _exit(2);
  auto ns = (*store)->RegisterNamespace(TestNamespace());
  if (!ns.ok()) _exit(3);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(8);
  for (int s = 0; s < kMaxSessions && std::chrono::steady_clock::now() < deadline; ++s) {
    for (const TestChunk& c : Session(*ns, s)) {
      if (!(*store)->Put(*ns, c.parent, c.key, c.bytes).ok()) _exit(4);
    }
    if (write(fd, &s, sizeof s) != sizeof s) _exit(5);
  }
  _exit(0);
}

TEST(CrashTest, KilledWriterLeavesOnlyWholeVerifiedChunks) {
  const std::string dir = seqkv::test::TempDir("crash");
  int fds[2];
  ASSERT_EQ(pipe(fds), 0);
  pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    close(fds[0]);
    PutForever(dir, fds[1]);
  }
  close(fds[1]);
  // Let it finish a few sessions, then kill it in the middle of whatever
  // write it is doing.
  int last_done = -1;
  for (int i = 0; i < 5; ++i) {
    ASSERT_EQ(read(fds[0], &last_done, sizeof last_done), static_cast<ssize_t>(sizeof last_done))
        << "child died early";
  }
  // A varying delay, so that over runs the kill lands in every phase of a put.
  std::random_device rd;
  std::this_thread::sleep_for(std::chrono::milliseconds(50 + rd() % 300));
  kill(child, SIGKILL);
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  int s = 0;
  while (read(fds[0], &s, sizeof s) == sizeof s) last_done = s;
  close(fds[0]);
  ASSERT_GE(last_done, 4);
  std::cout << "child finished " << last_done + 1 << " sessions before SIGKILL\n";

  auto store = Store::Open(TestOptions(dir), nullptr);
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  const Key128 ns = NamespaceId(TestNamespace());
  uint64_t present = 0;
  for (int session = 0; session <= last_done + 2 && session < kMaxSessions; ++session) {
    auto chain = Session(ns, session);
    auto lookup = (*store)->Lookup(ns, KeysOf(chain));
    ASSERT_TRUE(lookup.ok()) << lookup.status().ToString();
    if (session <= last_done) {
      EXPECT_EQ(lookup->prefix_chunks, chain.size()) << "session " << session;
    }
    for (size_t i = 0; i < chain.size(); ++i) {
      // Every present chunk has its whole prefix present...
      if (lookup->chunks[i].present) {
        EXPECT_LT(i, lookup->prefix_chunks) << "orphan in session " << session;
      }
      if (!lookup->chunks[i].present) continue;
      // ...and is exactly what was put, and decodes.
      auto got = (*store)->Get(ns, chain[i].key);
      ASSERT_TRUE(got.ok()) << got.status().ToString();
      EXPECT_EQ(**got, chain[i].bytes) << "session " << session << " chunk " << i;
      EXPECT_TRUE(DecodeChunk(**got).ok());
      if (session == 0 || i >= kSharedChunks) ++present;
    }
  }
  auto stats = (*store)->Stats();
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->disk.chunks, present);
  EXPECT_EQ(stats->checksum_failures, 0u);
  store->reset();
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace seqkv::server

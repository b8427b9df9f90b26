// Durability through the real seqkv-server: a clean restart keeps every
// chunk, namespace and pin; kill -9 during puts never leaves a partial chunk
// readable, and the chunks that survive still form prefixes.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <atomic>
#include <thread>

#include "kv_fixture.h"
#include "seqkv/codec/format.h"
#include "seqkv/proto/wire.h"
#include "seqkv/v1/seqkv.grpc.pb.h"
#include "server_process.h"
#include "util/test_util.h"

namespace seqkv::test {
namespace {

using client::Client;
using client::KvView;

std::unique_ptr<ServerProcess> StartOn(const std::string& data_dir) {
  ServerProcessOptions options;
  options.data_dir = data_dir;
  auto started = ServerProcess::Start(options);
  EXPECT_TRUE(started.ok()) << started.status().ToString();
  return started.ok() ? std::move(started).value() : nullptr;
}

TEST(PersistenceTest, CleanRestartKeepsChunksNamespacesAndPins) {
  const std::string dir = TempDir("restart") + "/data";
  const NamespaceFields ns = TestNamespace("lossless");
  const NamespaceFields tenant_ns = TestNamespace("lossless", "tenant-a");
  std::vector<Chunk> seqs = {TestSequence(5 * kTestChunkTokens, 21), TestSequence(3 * kTestChunkTokens, 22)};
  uint64_t chunks_before = 0;
  {
    auto server = StartOn(dir);
    ASSERT_NE(server, nullptr);
    auto client = server->Connect();
    ASSERT_TRUE(client.ok());
    for (const Chunk& seq : seqs) ASSERT_TRUE((*client)->PutPrefix(ns, KvView::Of(seq)).ok());
    ASSERT_TRUE((*client)->PutPrefix(tenant_ns, KvView::Of(seqs[0])).ok());
    auto pins = (*client)->Pin(NamespaceId(ns), Client::Keys(ns, seqs[1].tokens));
    ASSERT_TRUE(pins.ok());
    for (const Status& s : *pins) EXPECT_TRUE(s.ok()) << s.ToString();
    auto stats = (*client)->Stats();
    ASSERT_TRUE(stats.ok());
    chunks_before = stats->chunks();
    EXPECT_EQ(chunks_before, 5u + 3u + 5u);
    auto stopped = server->Stop();
    ASSERT_TRUE(stopped.ok()) << stopped.status().ToString();
    EXPECT_EQ(*stopped, 0) << server->LogTail();
  }
  auto server = StartOn(dir);
  ASSERT_NE(server, nullptr);
  auto client = server->Connect();
  ASSERT_TRUE(client.ok());
  auto stats = (*client)->Stats();
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->chunks(), chunks_before);
  EXPECT_EQ(stats->namespaces(), 2u);
  for (const Chunk& seq : seqs) {
    auto got = (*client)->GetPrefix(ns, seq.tokens);
    ASSERT_TRUE(got.ok()) << got.status().ToString();
    EXPECT_EQ(got->chunks, seq.shape.tokens / kTestChunkTokens);
    EXPECT_EQ(got->kv.k, seq.k);
    EXPECT_EQ(got->kv.v, seq.v);
  }
  auto inspect = (*client)->Inspect(NamespaceId(ns), Client::Keys(ns, seqs[1].tokens)[2]);
  ASSERT_TRUE(inspect.ok()) << inspect.status().ToString();
  EXPECT_EQ(inspect->pins(), 1u);
  EXPECT_EQ(inspect->depth(), 2u);
}

TEST(PersistenceTest, KillDuringPutsLeavesNoPartialChunk) {
  const std::string dir = TempDir("kill9") + "/data";
  const NamespaceFields ns = TestNamespace("raw");
  constexpr int kSequences = 40;
  constexpr uint32_t kChunks = 6;
  std::vector<Chunk> seqs;
  for (int i = 0; i < kSequences; ++i) seqs.push_back(TestSequence(kChunks * kTestChunkTokens, 500 + i));

  auto server = StartOn(dir);
  ASSERT_NE(server, nullptr);
  Key128 partial_key;
  {
    client::ClientOptions options;
    options.max_retries = 0;  // the server will vanish: fail fast
    options.deadline = std::chrono::milliseconds(10'000);
    auto client = server->Connect(options);
    ASSERT_TRUE(client.ok());
    ASSERT_TRUE((*client)->RegisterNamespace(ns).ok());

    // A stream stalled in the middle of a chunk when the server dies.
    Chunk lone = TestSequence(kTestChunkTokens, 999);
    partial_key = Client::Keys(ns, lone.tokens)[0];
    auto encoded = Client::EncodeKv(ns, KvView::Of(lone));
    ASSERT_TRUE(encoded.ok());
    auto channel = grpc::CreateChannel(server->address(), grpc::InsecureChannelCredentials());
    auto stub = v1::KvStore::NewStub(channel);
    grpc::ClientContext stalled_ctx;
    v1::PutResponse stalled_response;
    auto stalled = stub->Put(&stalled_ctx, &stalled_response);
    v1::PutRequest frame;
    frame.set_namespace_id(wire::KeyToBytes(NamespaceId(ns)));
    frame.mutable_begin()->set_key(wire::KeyToBytes(partial_key));
    frame.mutable_begin()->set_total_bytes(encoded->size());
    frame.set_data(std::string(encoded->begin(), encoded->begin() + encoded->size() / 2));
    ASSERT_TRUE(stalled->Write(frame));

    std::atomic<int> put_sequences{0};
    std::atomic<bool> stop{false};
    std::thread writer([&] {
      for (int i = 0; i < kSequences && !stop; ++i) {
        if (!(*client)->PutPrefix(ns, KvView::Of(seqs[i])).ok()) break;
        ++put_sequences;
      }
    });
    // Kill once puts are flowing (bounded wait), in the middle of the stream.
    for (int i = 0; i < 500 && put_sequences < 5; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(5));
    server->Kill();
    stop = true;
    writer.join();
    stalled_ctx.TryCancel();
    (void)stalled->Finish();
    EXPECT_GE(put_sequences.load(), 1);
  }

  server = StartOn(dir);
  ASSERT_NE(server, nullptr);
  auto client = server->Connect();
  ASSERT_TRUE(client.ok());
  auto lookup = (*client)->Lookup(NamespaceId(ns), std::vector<Key128>{partial_key});
  ASSERT_TRUE(lookup.ok()) << lookup.status().ToString();
  EXPECT_FALSE(lookup->chunks[0].present);
  int complete = 0;
  for (const Chunk& seq : seqs) {
    std::vector<Key128> keys = Client::Keys(ns, seq.tokens);
    auto found = (*client)->Lookup(NamespaceId(ns), keys);
    ASSERT_TRUE(found.ok());
    uint32_t present = 0;
    for (const auto& p : found->chunks) present += p.present ? 1 : 0;
    EXPECT_EQ(present, found->prefix_chunks) << "a chunk survived without its prefix";
    // Every chunk that is visible reads back whole and verified.
    auto items = (*client)->BatchGet(NamespaceId(ns), std::span<const Key128>(keys).first(found->prefix_chunks));
    ASSERT_TRUE(items.ok()) << items.status().ToString();
    for (size_t i = 0; i < items->size(); ++i) {
      ASSERT_TRUE((*items)[i].ok()) << (*items)[i].status().ToString();
      auto decoded = Client::DecodeKv(*(*items)[i], std::span<const int32_t>(seq.tokens).subspan(
                                                         i * kTestChunkTokens, kTestChunkTokens));
      EXPECT_TRUE(decoded.ok()) << decoded.status().ToString();
    }
    complete += found->prefix_chunks == kChunks ? 1 : 0;
  }
  EXPECT_GE(complete, 1);
  auto stats = (*client)->Stats();
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->checksum_failures(), 0u);
}

}  // namespace
}  // namespace seqkv::test

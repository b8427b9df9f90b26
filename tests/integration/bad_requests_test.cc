// Bad input through the real seqkv-server: every case gets a clear gRPC
// status (code and a message naming the problem) and stores nothing.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include "kv_fixture.h"
#include "seqkv/codec/codec.h"
#include "seqkv/codec/format.h"
#include "seqkv/proto/wire.h"
#include "seqkv/v1/seqkv.grpc.pb.h"
#include "server_process.h"
#include "util/test_util.h"

namespace seqkv::test {
namespace {

using client::Client;
using client::KvView;
using client::PutItem;

class BadRequestsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    ServerProcessOptions options;
    options.data_dir = TempDir("bad-requests") + "/data";
    auto started = ServerProcess::Start(options);
    ASSERT_TRUE(started.ok()) << started.status().ToString();
    server_ = std::move(started).value().release();
  }
  static void TearDownTestSuite() {
    delete server_;
    server_ = nullptr;
  }
  void SetUp() override {
    ASSERT_NE(server_, nullptr);
    auto connected = server_->Connect();
    ASSERT_TRUE(connected.ok()) << connected.status().ToString();
    client_ = std::move(connected).value();
    grpc::ChannelArguments args;
    args.SetMaxSendMessageSize(128 << 20);
    channel_ = grpc::CreateCustomChannel(server_->address(), grpc::InsecureChannelCredentials(), args);
    stub_ = v1::KvStore::NewStub(channel_);
    ns_ = TestNamespace("raw");
    ASSERT_TRUE(client_->RegisterNamespace(ns_).ok());
  }

  // The encoded first chunk of a fresh sequence.
  std::vector<uint8_t> FirstChunk(uint64_t seed, Key128* key) {
    Chunk seq = TestSequence(kTestChunkTokens, seed);
    *key = Client::Keys(ns_, seq.tokens)[0];
    auto encoded = Client::EncodeKv(ns_, KvView::Of(seq));
    EXPECT_TRUE(encoded.ok());
    return *encoded;
  }

  // Runs a raw Put stream of `frames`.
  grpc::Status RawPut(const std::vector<v1::PutRequest>& frames, v1::PutResponse* response) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
    auto writer = stub_->Put(&ctx, response);
    for (const auto& f : frames) {
      if (!writer->Write(f)) break;
    }
    writer->WritesDone();
    return writer->Finish();
  }

  bool Present(const Key128& key) {
    auto lookup = client_->Lookup(NamespaceId(ns_), std::vector<Key128>{key});
    return lookup.ok() && lookup->chunks[0].present;
  }

  static ServerProcess* server_;
  std::unique_ptr<Client> client_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::KvStore::Stub> stub_;
  NamespaceFields ns_;
};

ServerProcess* BadRequestsTest::server_ = nullptr;

TEST_F(BadRequestsTest, MalformedKeysAreInvalidArgument) {
  grpc::ClientContext ctx;
  v1::LookupRequest request;
  request.set_namespace_id(std::string(15, 'x'));
  v1::LookupResponse response;
  grpc::Status s = stub_->Lookup(&ctx, request, &response);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(s.error_message().find("namespace_id: a key is 16 bytes, got 15"), std::string::npos)
      << s.error_message();

  grpc::ClientContext ctx2;
  request.set_namespace_id(wire::KeyToBytes(NamespaceId(ns_)));
  request.add_chunk_keys(std::string(16, 'a'));
  request.add_chunk_keys("short");
  s = stub_->Lookup(&ctx2, request, &response);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(s.error_message().find("chunk_keys[1]"), std::string::npos) << s.error_message();
}

TEST_F(BadRequestsTest, UnknownNamespaceIsNotFound) {
  const Key128 unknown{0xdead, 0xbeef};
  std::vector<Key128> keys = {Key128{1, 1}};
  EXPECT_EQ(client_->Lookup(unknown, keys).status().code(), StatusCode::kNotFound);
  auto got = client_->BatchGet(unknown, keys);
  EXPECT_EQ(got.status().code(), StatusCode::kNotFound);
  EXPECT_NE(got.status().message().find("namespace"), std::string::npos) << got.status().ToString();
  EXPECT_EQ(client_->Pin(unknown, keys).status().code(), StatusCode::kNotFound);
  Key128 key;
  std::vector<uint8_t> chunk = FirstChunk(1, &key);
  PutItem item{key, std::nullopt, chunk};
  auto put = client_->BatchPut(unknown, std::span<const PutItem>(&item, 1));
  ASSERT_TRUE(put.ok()) << put.status().ToString();
  EXPECT_EQ((*put)[0].status.code(), StatusCode::kNotFound);
}

TEST_F(BadRequestsTest, DamagedOrInconsistentChunksAreRejectedPerItem) {
  const Key128 id = NamespaceId(ns_);
  Key128 good_key, bad_key, other_key;
  std::vector<uint8_t> good = FirstChunk(2, &good_key);
  std::vector<uint8_t> corrupt = FirstChunk(3, &bad_key);
  corrupt[corrupt.size() - 100] ^= 0x40;  // inside the last section: its checksum fails
  std::vector<uint8_t> other = FirstChunk(4, &other_key);

  // 17 tokens in a 16-token namespace.
  Chunk long_seq = TestSequence(kTestChunkTokens + 1, 5);
  auto codec = MakeCodec(ns_.codec_spec);
  ASSERT_TRUE(codec.ok());
  auto too_long = EncodeChunk(long_seq, **codec);
  ASSERT_TRUE(too_long.ok());
  Key128 long_key = NextChunkKey(id, long_seq.tokens);

  std::vector<PutItem> items = {
      {good_key, std::nullopt, good},
      {bad_key, std::nullopt, corrupt},
      {Key128{7, 7}, std::nullopt, other},     // chain key mismatch
      {long_key, std::nullopt, *too_long},     // wrong token count
      {other_key, Key128{8, 8}, other},        // parent absent (and key mismatch for that parent)
  };
  auto results = client_->BatchPut(id, items);
  ASSERT_TRUE(results.ok()) << results.status().ToString();
  ASSERT_EQ(results->size(), items.size());
  EXPECT_TRUE((*results)[0].status.ok()) << (*results)[0].status.ToString();
  EXPECT_EQ((*results)[1].status.code(), StatusCode::kInvalidArgument);
  EXPECT_NE((*results)[1].status.message().find("checksum"), std::string::npos) << (*results)[1].status.ToString();
  EXPECT_EQ((*results)[2].status.code(), StatusCode::kInvalidArgument);
  EXPECT_NE((*results)[2].status.message().find("chain key"), std::string::npos) << (*results)[2].status.ToString();
  EXPECT_EQ((*results)[3].status.code(), StatusCode::kInvalidArgument);
  EXPECT_NE((*results)[3].status.message().find("tokens"), std::string::npos) << (*results)[3].status.ToString();
  EXPECT_FALSE((*results)[4].status.ok());
  EXPECT_TRUE(Present(good_key));
  EXPECT_FALSE(Present(bad_key));
  EXPECT_FALSE(Present(long_key));
  EXPECT_FALSE(Present(other_key));
}

TEST_F(BadRequestsTest, BrokenPutFramingFailsTheCall) {
  Key128 key;
  std::vector<uint8_t> chunk = FirstChunk(6, &key);
  const std::string id = wire::KeyToBytes(NamespaceId(ns_));
  auto begin = [&](uint64_t total) {
    v1::PutRequest f;
    f.set_namespace_id(id);
    f.mutable_begin()->set_key(wire::KeyToBytes(key));
    f.mutable_begin()->set_total_bytes(total);
    return f;
  };
  auto data = [&](size_t from, size_t to) {
    v1::PutRequest f;
    f.set_data(std::string(chunk.begin() + from, chunk.begin() + to));
    return f;
  };
  v1::PutResponse response;

  v1::PutRequest no_ns = begin(chunk.size());
  no_ns.clear_namespace_id();
  grpc::Status s = RawPut({no_ns}, &response);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(s.error_message().find("namespace_id"), std::string::npos) << s.error_message();

  v1::PutRequest ns_only;
  ns_only.set_namespace_id(id);
  s = RawPut({ns_only, data(0, 10)}, &response);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(s.error_message().find("without a preceding begin"), std::string::npos) << s.error_message();

  s = RawPut({begin(100), data(0, 200)}, &response);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(s.error_message().find("more data than"), std::string::npos) << s.error_message();

  // The stream ends inside the chunk: nothing becomes visible.
  s = RawPut({begin(chunk.size()), data(0, chunk.size() / 2)}, &response);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(s.error_message().find("stream ended after"), std::string::npos) << s.error_message();
  EXPECT_FALSE(Present(key));

  s = RawPut({begin(uint64_t{1} << 40)}, &response);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(s.error_message().find("exceeds the limit"), std::string::npos) << s.error_message();

  v1::PutRequest mismatched = begin(chunk.size());
  ns_.tenant_salt = "someone-else";
  wire::NamespaceToProto(ns_, mismatched.mutable_namespace_());
  s = RawPut({mismatched}, &response);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(s.error_message().find("not the id of the given namespace"), std::string::npos) << s.error_message();
  auto namespaces = client_->ListNamespaces();
  ASSERT_TRUE(namespaces.ok());
  for (const auto& info : namespaces->namespaces()) EXPECT_NE(info.fields().tenant_salt(), "someone-else");
}

TEST_F(BadRequestsTest, OversizedMessagesAreRejected) {
  v1::PutRequest frame;
  frame.set_namespace_id(wire::KeyToBytes(NamespaceId(ns_)));
  frame.mutable_begin()->set_key(std::string(16, 'k'));
  frame.mutable_begin()->set_total_bytes(70 << 20);
  frame.set_data(std::string(70 << 20, 'x'));  // over the server's 64 MiB message limit
  v1::PutResponse response;
  grpc::Status s = RawPut({frame}, &response);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << s.error_message();
}

TEST_F(BadRequestsTest, InvalidNamespaceFields) {
  NamespaceFields bad = ns_;
  bad.tp_rank = 3;
  bad.tp_size = 2;
  auto id = client_->RegisterNamespace(bad);
  EXPECT_EQ(id.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(id.status().message().find("tp_rank"), std::string::npos) << id.status().ToString();
  bad = ns_;
  bad.model_name.clear();
  EXPECT_EQ(client_->RegisterNamespace(bad).status().code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace seqkv::test

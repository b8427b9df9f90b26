// The client against an in-process server (the real services over a real
// Store in a temporary directory), plus its local helpers.
#include "seqkv/client/client.h"

#include <gtest/gtest.h>

#include <chrono>

#include "rpc/rpc_server.h"
#include "seqkv/codec/format.h"
#include "seqkv/codec/seq_profile.h"
#include "seqkv/server/store.h"
#include "util/test_util.h"

namespace seqkv::client {
namespace {

NamespaceFields TestFields(const std::string& codec = "lossless") {
  NamespaceFields f;
  f.model_name = "client-test";
  f.model_config_hash = "00";
  f.chunk_tokens = 8;
  f.codec_spec = codec;
  auto canonical = Client::Canonicalize(f);
  EXPECT_TRUE(canonical.ok());
  return *canonical;
}

Chunk Sequence(uint32_t tokens, uint64_t seed) {
  Chunk c = test::RandomChunk(KvShape{2, 2, tokens, 16}, DType::kBF16, seed);
  c.first_position = 0;
  return c;
}

class ClientTest : public ::testing::Test {
 protected:
  void SetUp() override {
    server::StoreOptions store_options;
    store_options.data_dir = test::TempDir("client") + "/data";
    store_options.sync_writes = false;
    auto store = server::Store::Open(store_options, nullptr);
    ASSERT_TRUE(store.ok()) << store.status().ToString();
    store_ = std::move(store).value();
    rpc::RpcServerOptions options;
    options.listen = "127.0.0.1:0";
    auto server = rpc::RpcServer::Start(options, store_.get(), nullptr);
    ASSERT_TRUE(server.ok()) << server.status().ToString();
    server_ = std::move(server).value();
    ClientOptions client_options;
    client_options.address = server_->address();
    auto client = Client::Connect(client_options);
    ASSERT_TRUE(client.ok()) << client.status().ToString();
    client_ = std::move(client).value();
  }
  void TearDown() override {
    client_.reset();
    server_.reset();
    store_.reset();
  }
  void SeqChunksRoundTrip(bool lanes);

  std::unique_ptr<server::Store> store_;
  std::unique_ptr<rpc::RpcServer> server_;
  std::unique_ptr<Client> client_;
};

TEST(ClientLocalTest, SliceAndConcatRoundTrip) {
  Chunk seq = Sequence(24, 1);
  std::vector<Chunk> parts;
  for (uint32_t begin : {0u, 8u, 16u}) {
    auto part = SliceKv(KvView::Of(seq), begin, 8);
    ASSERT_TRUE(part.ok()) << part.status().ToString();
    EXPECT_EQ(part->first_position, begin);
    parts.push_back(*part);
  }
  auto joined = ConcatChunks(parts);
  ASSERT_TRUE(joined.ok()) << joined.status().ToString();
  EXPECT_EQ(joined->shape, seq.shape);
  EXPECT_EQ(joined->tokens, seq.tokens);
  EXPECT_EQ(joined->k, seq.k);
  EXPECT_EQ(joined->v, seq.v);
  std::swap(parts[0], parts[1]);
  EXPECT_EQ(ConcatChunks(parts).status().code(), StatusCode::kInvalidArgument);  // not contiguous
  EXPECT_EQ(SliceKv(KvView::Of(seq), 20, 8).status().code(), StatusCode::kOutOfRange);
}

TEST(ClientLocalTest, EncodeChecksTheViewAgainstTheNamespace) {
  NamespaceFields ns = TestFields();
  Chunk chunk = Sequence(8, 2);
  auto encoded = Client::EncodeKv(ns, KvView::Of(chunk));
  ASSERT_TRUE(encoded.ok()) << encoded.status().ToString();
  auto decoded = Client::DecodeKv(*encoded, chunk.tokens);
  ASSERT_TRUE(decoded.ok()) << decoded.status().ToString();
  EXPECT_EQ(decoded->k, chunk.k);
  std::vector<int32_t> other = chunk.tokens;
  other[3] += 1;
  EXPECT_EQ(Client::DecodeKv(*encoded, other).status().code(), StatusCode::kDataLoss);

  KvView view = KvView::Of(chunk);
  view.k = view.k.first(view.k.size() - 2);
  EXPECT_EQ(Client::EncodeKv(ns, view).status().code(), StatusCode::kInvalidArgument);
  Chunk longer = Sequence(9, 3);
  EXPECT_EQ(Client::EncodeKv(ns, KvView::Of(longer)).status().code(), StatusCode::kInvalidArgument);
  ns.kv_dtype = "fp16";
  EXPECT_EQ(Client::EncodeKv(ns, KvView::Of(chunk)).status().code(), StatusCode::kInvalidArgument);
}

TEST(ClientLocalTest, RetriesOnUnavailableAreBounded) {
  ClientOptions options;
  options.address = "127.0.0.1:1";  // nothing listens there
  options.connect_timeout = std::chrono::milliseconds(0);
  options.max_retries = 3;
  options.initial_backoff = std::chrono::milliseconds(10);
  options.deadline = std::chrono::milliseconds(5000);
  auto client = Client::Connect(options);
  ASSERT_TRUE(client.ok());
  auto start = std::chrono::steady_clock::now();
  auto stats = (*client)->Stats();
  EXPECT_EQ(stats.status().code(), StatusCode::kUnavailable);
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5));
  options.connect_timeout = std::chrono::milliseconds(200);
  EXPECT_EQ(Client::Connect(options).status().code(), StatusCode::kUnavailable);
}

TEST_F(ClientTest, ASecondServerCannotTakeABusyPort) {
  rpc::RpcServerOptions options;
  options.listen = server_->address();
  auto second = rpc::RpcServer::Start(options, store_.get(), nullptr);
  EXPECT_EQ(second.status().code(), StatusCode::kUnavailable);
}

TEST_F(ClientTest, PutPrefixSkipsWhatIsStoredAndGetPrefixReassembles) {
  NamespaceFields ns = TestFields();
  Chunk seq = Sequence(8 * 5 + 3, 4);  // 5 full chunks and 3 tokens that are never stored
  auto put = client_->PutPrefix(ns, KvView::Of(seq));
  ASSERT_TRUE(put.ok()) << put.status().ToString();
  EXPECT_EQ(put->chunks, 5u);
  EXPECT_EQ(put->stored, 5u);
  EXPECT_GT(put->raw_bytes, put->sent_bytes);  // lossless compresses random bf16 a little
  put = client_->PutPrefix(ns, KvView::Of(seq));
  ASSERT_TRUE(put.ok());
  EXPECT_EQ(put->stored, 0u);
  EXPECT_EQ(put->already_present, 5u);
  EXPECT_EQ(put->sent_bytes, 0u);

  auto got = client_->GetPrefix(ns, seq.tokens);
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_EQ(got->chunks, 5u);
  auto expected = SliceKv(KvView::Of(seq), 0, 40);
  ASSERT_TRUE(expected.ok());
  EXPECT_EQ(got->kv.k, expected->k);
  EXPECT_EQ(got->kv.v, expected->v);
  EXPECT_EQ(got->kv.tokens, expected->tokens);

  NamespaceFields other = ns;
  other.tenant_salt = "elsewhere";  // a namespace nobody registered
  got = client_->GetPrefix(other, seq.tokens);
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_EQ(got->chunks, 0u);
}

// Adaptive seq streams: each chunk continues its parent. Lane streams (the
// default with a profile that has a static model): every chunk stands alone.
TEST_F(ClientTest, SeqChunksRoundTripThroughTheStoreWithAndWithoutParents) {
  for (const bool lanes : {false, true}) {
    SCOPED_TRACE(lanes ? "lanes" : "adaptive");
    SeqChunksRoundTrip(lanes);
    if (HasFatalFailure()) return;
  }
}

void ClientTest::SeqChunksRoundTrip(bool lanes) {
  // A seq profile for the test shape, fitted on synthetic KV.
  Chunk cal = Sequence(200, 21);
  auto profile = CalibrateSeqProfile({cal}, SeqCalibrateOptions{}, nullptr);
  ASSERT_TRUE(profile.ok()) << profile.status().ToString();
  ASSERT_TRUE(profile->has_static_model());
  SeqResources::Default().AddProfile(std::make_shared<const SeqProfile>(*profile));
  NamespaceFields ns =
      TestFields(std::string("seq:delta=0.3") + (lanes ? "" : ",streams=adaptive") + ",profile=" + profile->Id());
  if (lanes) ns.tenant_salt = "lanes";  // another namespace: the adaptive round stored the same tokens
  Chunk seq = Sequence(8 * 5, 22);
  auto put = client_->PutPrefix(ns, KvView::Of(seq));
  ASSERT_TRUE(put.ok()) << put.status().ToString();
  EXPECT_EQ(put->stored, 5u);

  // What the client sent: chunk 0 fresh, each later one after its parent.
  std::vector<Chunk> expected;
  ChunkContext ctx, dctx;
  auto codec = MakeCodec(ns.codec_spec);
  ASSERT_TRUE(codec.ok());
  for (uint32_t i = 0; i < 5; ++i) {
    auto part = SliceKv(KvView::Of(seq), 8 * i, 8);
    ASSERT_TRUE(part.ok());
    ChunkContext next;
    auto bytes = EncodeChunk(*part, **codec, i ? &ctx : nullptr, &next);
    ASSERT_TRUE(bytes.ok());
    EXPECT_EQ((ParseChunkHeader(*bytes)->flags & kFlagNeedsParent) != 0, !lanes && i > 0);
    ChunkContext dnext;
    auto back = DecodeChunk(*bytes, i ? &dctx : nullptr, &dnext);
    ASSERT_TRUE(back.ok()) << back.status().ToString();
    expected.push_back(*back);
    ctx = next;
    dctx = dnext;
  }
  auto got = client_->GetPrefix(ns, seq.tokens);
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  ASSERT_EQ(got->chunks, 5u);
  auto joined = ConcatChunks(expected);
  ASSERT_TRUE(joined.ok());
  EXPECT_EQ(got->kv.k, joined->k);
  EXPECT_EQ(got->kv.v, joined->v);

  // A longer sequence over the stored prefix: the new chunks start fresh after the stored ones.
  Chunk longer = Sequence(8 * 7, 22);
  for (size_t i = 0; i < seq.tokens.size(); ++i) ASSERT_EQ(longer.tokens[i], seq.tokens[i]);
  put = client_->PutPrefix(ns, KvView::Of(longer));
  ASSERT_TRUE(put.ok()) << put.status().ToString();
  EXPECT_EQ(put->already_present, 5u);
  EXPECT_EQ(put->stored, 2u);
  got = client_->GetPrefix(ns, longer.tokens);
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->chunks, 7u);
  SeqResources::Default().Clear();
}

TEST_F(ClientTest, BatchCallsReturnOneStatusPerItem) {
  NamespaceFields ns = TestFields("raw");
  const Key128 id = NamespaceId(ns);
  Chunk seq = Sequence(16, 5);
  std::vector<Key128> keys = Client::Keys(ns, seq.tokens);
  std::vector<std::vector<uint8_t>> encoded;
  for (uint32_t i = 0; i < 2; ++i) {
    auto part = SliceKv(KvView::Of(seq), i * 8, 8);
    ASSERT_TRUE(part.ok());
    auto bytes = Client::EncodeKv(ns, KvView::Of(*part));
    ASSERT_TRUE(bytes.ok()) << bytes.status().ToString();
    encoded.push_back(*bytes);
  }
  std::vector<PutItem> items = {{keys[0], std::nullopt, encoded[0]}, {keys[1], keys[0], encoded[0]},
                                {keys[1], keys[0], encoded[1]}};
  auto put = client_->BatchPut(id, items, &ns);
  ASSERT_TRUE(put.ok()) << put.status().ToString();
  EXPECT_TRUE((*put)[0].status.ok());
  EXPECT_EQ((*put)[1].status.code(), StatusCode::kInvalidArgument);  // wrong chunk for the key
  EXPECT_TRUE((*put)[2].status.ok());

  std::vector<Key128> wanted = {keys[1], Key128{3, 3}, keys[0]};
  auto got = client_->BatchGet(id, wanted);
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  ASSERT_EQ(got->size(), 3u);
  ASSERT_TRUE((*got)[0].ok());
  EXPECT_EQ(*(*got)[0], encoded[1]);
  EXPECT_EQ((*got)[1].status().code(), StatusCode::kNotFound);
  ASSERT_TRUE((*got)[2].ok());
  EXPECT_EQ(*(*got)[2], encoded[0]);

  auto pinned = client_->Pin(id, std::vector<Key128>{keys[0], Key128{4, 4}});
  ASSERT_TRUE(pinned.ok());
  EXPECT_TRUE((*pinned)[0].ok());
  EXPECT_EQ((*pinned)[1].code(), StatusCode::kNotFound);
  auto deleted = client_->Delete(id, std::vector<Key128>{keys[0]});
  ASSERT_TRUE(deleted.ok());
  EXPECT_EQ((*deleted)[0].status().code(), static_cast<int>(StatusCode::kFailedPrecondition));  // pinned
  auto unpinned = client_->Unpin(id, std::vector<Key128>{keys[0]});
  ASSERT_TRUE(unpinned.ok());
  EXPECT_TRUE((*unpinned)[0].ok());
  deleted = client_->Delete(id, std::vector<Key128>{keys[0]});
  ASSERT_TRUE(deleted.ok());
  EXPECT_EQ((*deleted)[0].status().code(), 0);
  EXPECT_EQ((*deleted)[0].chunks(), 2u);  // with its descendant
}

TEST_F(ClientTest, LargeChunksTravelInFrames) {
  NamespaceFields ns = TestFields("raw");
  ns.chunk_tokens = 256;
  Chunk big = test::RandomChunk(KvShape{8, 4, 256, 128}, DType::kBF16, 6);  // 2 x 2 MiB
  big.first_position = 0;
  ClientOptions options;
  options.address = server_->address();
  options.frame_bytes = 256 << 10;  // many frames per chunk
  auto client = Client::Connect(options);
  ASSERT_TRUE(client.ok());
  ASSERT_TRUE((*client)->PutPrefix(ns, KvView::Of(big)).ok());
  auto got = (*client)->GetPrefix(ns, big.tokens);
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_EQ(got->chunks, 1u);
  EXPECT_EQ(got->kv.k, big.k);
  EXPECT_EQ(got->kv.v, big.v);
}

}  // namespace
}  // namespace seqkv::client

// SeqEncodeGpu (the seq lossy encode on the GPU) against seqkv::EncodeChunk,
// on both backends: the CPU path always runs; the CUDA cases skip cleanly
// without a GPU (label gpu).
//
// Contract checked here (docs/gpu.md): every chunk the encoder frames is the
// same bytes as EncodeChunk(chunk, codec) (so its streams, symbols and the
// informational proxy all agree), on dev-dump chunks of several lengths and
// token offsets, with a fixed step and with rate control (bits=, kl=, both),
// and on fresh random data whose symbols need escapes; the
// layer sections also land in the caller's output buffer; specs and profiles
// outside the GPU path's scope are refused clearly; a bad item fails alone.
#include "seqkv/gpu/seq_encode.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "../../gpu/src/seq_lane_merge.h"
#include "seqkv/codec/codec.h"
#include "seqkv/codec/dtype.h"
#include "seqkv/codec/format.h"
#include "seqkv/codec/safetensors.h"
#include "seqkv/codec/seq_profile.h"
#include "seqkv/gpu/device.h"
#include "gpu/backend_buffer.h"
#include "gpu/seq_fixture.h"
#include "util/test_util.h"

namespace seqkv::gpu {
namespace {

using Buffer = test::BackendBuffer;

// The scale of the random values of LaneGroupsOfLongEscapesShareABatchWithOthers.
constexpr float kEscapeGroupScale = 8.0f;

// `chunk`'s K and V placed at token `offset` of [layers, kv_heads, in_tokens,
// head_dim] tensors (other tokens hold a fixed pattern), in backend memory.
struct Input {
  std::unique_ptr<Buffer> k, v;
  uint64_t in_tokens = 0, offset = 0;
};

Input Place(Backend backend, const Chunk& chunk, uint64_t offset, uint64_t extra) {
  const KvShape& s = chunk.shape;
  Input in;
  in.offset = offset;
  in.in_tokens = s.tokens + offset + extra;
  const uint64_t row = uint64_t{s.head_dim} * 2;
  for (int kv = 0; kv < 2; ++kv) {
    std::vector<uint8_t> host(uint64_t{s.layers} * s.kv_heads * in.in_tokens * row, 0x3F);
    const std::vector<uint8_t>& src = kv == 0 ? chunk.k : chunk.v;
    for (uint64_t lh = 0; lh < uint64_t{s.layers} * s.kv_heads; ++lh) {
      std::memcpy(&host[(lh * in.in_tokens + offset) * row], &src[lh * s.tokens * row], s.tokens * row);
    }
    (kv == 0 ? in.k : in.v) = std::make_unique<Buffer>(backend, host);
  }
  return in;
}

class SeqEncodeGpuTest : public test::SeqGpuTestBase {
 protected:
  void SetUp() override { SetUpProfile(/*sensitivities=*/true); }

  std::shared_ptr<const Codec> CodecFor(const std::string& spec) {
    auto codec = MakeCodec(spec);
    EXPECT_TRUE(codec.ok()) << codec.status().ToString();
    return codec.ok() ? std::shared_ptr<const Codec>(std::move(*codec)) : nullptr;
  }

  // Encodes `chunks` in one batch with `spec` and checks each against
  // EncodeChunk: the framed chunk byte for byte and the layer sections in the
  // output buffer; Finish on `host_threads` threads (0: the default). Returns
  // the statuses.
  std::vector<Status> EncodeAndCompare(const std::string& spec, const std::vector<Chunk>& chunks,
                                       const std::vector<bool>& expect_ok = {}, uint32_t host_threads = 0) {
    std::shared_ptr<const Codec> codec = CodecFor(spec);
    auto enc = SeqEncodeGpu::CreateFor(backend(), codec);
    EXPECT_TRUE(enc.ok()) << enc.status().ToString();
    if (!enc.ok()) return {};
    enc->SetHostThreads(host_threads);
    std::vector<Input> inputs;
    std::vector<std::unique_ptr<Buffer>> outs;
    std::vector<SeqEncodeItem> items;
    for (size_t i = 0; i < chunks.size(); ++i) {
      const Chunk& c = chunks[i];
      inputs.push_back(Place(backend(), c, i % 4, (i * 7) % 5));
      outs.push_back(std::make_unique<Buffer>(backend(), SeqEncodeMaxBytes(c.shape)));
      SeqEncodeItem item;
      item.shape = c.shape;
      item.rope = c.rope;
      item.first_position = c.first_position;
      item.tokens = c.tokens;
      item.k_in = inputs.back().k->get();
      item.v_in = inputs.back().v->get();
      item.in_tokens = inputs.back().in_tokens;
      item.token_offset = inputs.back().offset;
      item.out = outs.back()->get();
      items.push_back(item);
    }
    SeqEncodeArgs args;
    args.items = items;
    EXPECT_TRUE(enc->CanImplement(args).ok());
    Buffer workspace(backend(), enc->WorkspaceBytes(args));
    std::vector<Status> statuses;
    std::vector<std::vector<uint8_t>> got;
    EXPECT_TRUE(enc->Encode(args, workspace.get(), workspace.size(), nullptr, &statuses).ok());
    EXPECT_TRUE(enc->Finish(args, workspace.get(), nullptr, &statuses, &got).ok());
    for (size_t i = 0; i < chunks.size(); ++i) {
      if (!expect_ok.empty() && !expect_ok[i]) continue;
      EXPECT_TRUE(statuses[i].ok()) << i << ": " << statuses[i].ToString();
      if (!statuses[i].ok()) continue;
      auto want = EncodeChunk(chunks[i], *codec);
      EXPECT_TRUE(want.ok()) << want.status().ToString();
      EXPECT_EQ(got[i].size(), want->size()) << "chunk " << i;
      EXPECT_TRUE(got[i] == *want) << "chunk " << i << " differs from EncodeChunk";
      // The output buffer holds the layer sections back to back.
      auto header = ParseChunkHeader(*want);
      EXPECT_TRUE(header.ok());
      const uint64_t first = header->sections[1].offset;
      const uint64_t bytes = header->total_bytes - first;
      const std::vector<uint8_t> out = outs[i]->Download(bytes);
      EXPECT_TRUE(std::equal(out.begin(), out.end(), want->begin() + first)) << "chunk " << i;
      EXPECT_TRUE(DecodeChunk(got[i]).ok());
    }
    return statuses;
  }

  void PagedCase(const std::string& spec);
};

TEST_P(SeqEncodeGpuTest, DevChunksEqualEncodeChunk) {
  std::vector<Chunk> chunks = {test::SliceTokens(*test_, 0, 256), test::SliceTokens(*test_, 300, 256),
                               test::SliceTokens(*test_, 700, 37), test::SliceTokens(*test_, 900, 1)};
  EncodeAndCompare("seq:delta=1,streams=adaptive", chunks);
  // Per-tensor and per-layer rates and another rounding offset.
  std::string lrate;
  for (uint32_t l = 0; l < profile_->layers; ++l) lrate += (l ? "_" : "") + std::to_string(l % 3) + ".5";
  EncodeAndCompare("seq:delta=0.35,deadzone=0.4,krate=0.5,vrate=-0.25,streams=adaptive,lrate=" + lrate,
                   {chunks[1], chunks[2]});
  // Lane streams (streams=lanes): the static model, the class shift per group.
  EncodeAndCompare("seq:delta=1,streams=lanes", chunks);
  EncodeAndCompare("seq:delta=0.35,deadzone=0.4,krate=0.5,vrate=-0.25,streams=lanes,lrate=" + lrate,
                   {chunks[1], chunks[2]});
  // Signed lane streams (streams=lanes2, the default with this profile);
  // the rates and rounding above do not depend on the stream coding. (kCpu is
  // EncodeChunk itself, ~30x slower in the sanitizer build: not repeated there.)
  if (backend() == Backend::kCuda) EncodeAndCompare("seq:delta=1,streams=lanes2", {chunks[1], chunks[2], chunks[3]});
  // Split lane streams (streams=lanes3): each lane's words at their own place, no merge.
  EncodeAndCompare("seq:delta=1,streams=lanes3",
                   backend() == Backend::kCuda ? chunks : std::vector<Chunk>{chunks[2]});
  if (backend() == Backend::kCuda) EncodeAndCompare("seq:delta=1,streams=lanes3,arith=int12", chunks);
  // arith=int12 (the dense stage in exact integer sums; on kCuda int8 tensor cores).
  if (backend() == Backend::kCuda) {
    EncodeAndCompare("seq:delta=1,streams=lanes2,arith=int12", chunks);
    // Chunks of 8 and 10 int12 tiles (64 tokens) per group beside short
    // ones: one residual exponent over many CTAs of a group.
    EncodeAndCompare("seq:delta=1,streams=lanes2,arith=int12", {test::SliceTokens(*test_, 100, 512), chunks[3]});
    EncodeAndCompare("seq:delta=1,streams=lanes2,arith=int12", {test::SliceTokens(*test_, 0, 600), chunks[2]});
    EncodeAndCompare("seq:delta=0.35,deadzone=0.4,krate=0.5,streams=adaptive,arith=int12,lrate=" + lrate,
                     {chunks[1], chunks[2]});
  } else {
    EncodeAndCompare("seq:delta=1,streams=lanes2,arith=int12", {chunks[2]});
  }
  // A step fine enough for symbols outside int8 (on kCuda a second pass over their high parts).
  EncodeAndCompare("seq:delta=0.005,streams=adaptive,arith=int12", {chunks[2]});
}

// A batch of 40 chunks of 1 to 5 tokens (a CTA per group each: every
// kernel finds its chunk among many), float and arith=int12: every chunk
// equals EncodeChunk (on kCpu: the fallback's item loop, each chunk to its
// own output).
TEST_P(SeqEncodeGpuTest, ManyShortChunksInOneBatchEqualEncodeChunk) {
  std::vector<Chunk> chunks;
  for (uint32_t i = 0; i < 40; ++i) chunks.push_back(test::SliceTokens(*test_, 23 * i, 1 + i % 5));
  EncodeAndCompare("seq:delta=0.7,streams=lanes2", chunks);
  EncodeAndCompare("seq:delta=0.7,streams=lanes2,arith=int12", chunks);
  // Finish frames the chunks (kCpu: Encode encodes them) on the calling
  // thread alone, and on 3 threads (the default is up to 8): the same chunks.
  EncodeAndCompare("seq:delta=0.7,streams=lanes2", chunks, {}, 1);
  EncodeAndCompare("seq:delta=0.7,streams=lanes2", chunks, {}, 3);
}

TEST_P(SeqEncodeGpuTest, HostThreadsDefaultToAtMostEightAndZeroRestoresIt) {
  auto enc = SeqEncodeGpu::CreateFor(backend(), CodecFor("seq:delta=1,streams=lanes2"));
  ASSERT_TRUE(enc.ok()) << enc.status().ToString();
  test::ExpectHostThreadsSetting(*enc);
}

// Rate control runs the CPU encoder's search (SeqRateSearch) one round of
// trials at a time: the same trials, the same chosen step, the same bytes.
TEST_P(SeqEncodeGpuTest, RateControlEqualsEncodeChunk) {
  // Short chunks: rate control runs 3-6 trials per chunk, and the sanitizer
  // build runs this test ~25x slower.
  std::vector<Chunk> chunks = {test::SliceTokens(*test_, 0, 128), test::SliceTokens(*test_, 256, 96),
                               test::SliceTokens(*test_, 600, 64)};
  EncodeAndCompare("seq:bits=2,streams=adaptive", chunks);
  EncodeAndCompare("seq:bits=0.8,krate=0.5,streams=adaptive", {chunks[0], chunks[2]});
  EncodeAndCompare("seq:bits=1.5,streams=lanes", {chunks[0], chunks[1]});
  if (backend() == Backend::kCuda) EncodeAndCompare("seq:bits=1.5,streams=lanes2", {chunks[1], chunks[2]});
  // Split lane streams price their word counts as the CPU does: the same trials.
  if (backend() == Backend::kCuda) EncodeAndCompare("seq:bits=1.5,streams=lanes3", {chunks[0], chunks[2]});
  EncodeAndCompare("seq:bits=1.5,streams=lanes2,arith=int12", backend() == Backend::kCuda
                                                                  ? std::vector<Chunk>{chunks[0], chunks[1]}
                                                                  : std::vector<Chunk>{chunks[2]});
  // kl=: a budget near what delta=1 gives, and bits= under that budget
  // (the guardrail raises some chunks' rate).
  auto probe = MakeCodec("seq:delta=1,streams=adaptive");
  ASSERT_TRUE(probe.ok());
  ASSERT_TRUE(EncodeChunk(chunks[0], **probe).ok());
  const double proxy = SeqLastEncodeInfo().proxy;
  ASSERT_GT(proxy, 0);
  char spec[96];
  std::snprintf(spec, sizeof spec, "seq:kl=%.6g,streams=adaptive", proxy);
  EncodeAndCompare(spec, chunks);
  std::snprintf(spec, sizeof spec, "seq:bits=1,kl=%.6g,streams=adaptive", proxy * 0.5);
  EncodeAndCompare(spec, chunks);
  // A batch where the first chunk (noise: no step meets the budget below
  // maxbits=3) needs the lossless fallback and the next ones do not: each
  // answers alone and the others still equal EncodeChunk.
  {
    KvShape ns = chunks[2].shape;
    Chunk noise = test::RandomChunk(ns, DType::kBF16, 77);
    noise.rope = chunks[2].rope;
    noise.first_position = chunks[2].first_position;
    std::snprintf(spec, sizeof spec, "seq:kl=%.6g,maxbits=3,streams=adaptive", proxy);
    std::vector<Status> st = EncodeAndCompare(spec, {noise, chunks[0], chunks[2]}, {false, true, true});
    ASSERT_EQ(st.size(), 3u);
    EXPECT_EQ(st[0].code(), StatusCode::kUnimplemented) << st[0].ToString();
  }
  // A budget no step meets below maxbits: the codec would fall back to
  // seq:lossless, which the GPU path does not encode (nor does its CPU
  // backend, so that both answer alike), or fails with fallback=none.
  for (const char* fallback : {"lossless", "none"}) {
    std::snprintf(spec, sizeof spec, "seq:kl=%.6g,maxbits=1,fallback=%s,streams=adaptive", proxy * 1e-3, fallback);
    std::vector<Status> st = EncodeAndCompare(spec, {chunks[2]}, {false});
    ASSERT_EQ(st.size(), 1u);
    EXPECT_EQ(st[0].code(), std::string(fallback) == "none" ? StatusCode::kFailedPrecondition
                                                            : StatusCode::kUnimplemented)
        << st[0].ToString();
  }
}

// From vLLM's paged cache (a shuffled block table, the chunks at unaligned
// positions): the same chunks; a block table entry outside the cache:
// OUT_OF_RANGE for that chunk only.
TEST_P(SeqEncodeGpuTest, PagedSourceEqualsEncodeChunk) {
  for (const char* spec : {"seq:delta=0.7,streams=adaptive", "seq:delta=0.7,streams=lanes2,arith=int12"}) {
    SCOPED_TRACE(spec);
    PagedCase(spec);
    if (HasFatalFailure()) return;
  }
}

void SeqEncodeGpuTest::PagedCase(const std::string& spec) {
  std::shared_ptr<const Codec> codec = CodecFor(spec);
  auto enc = SeqEncodeGpu::CreateFor(backend(), codec);
  ASSERT_TRUE(enc.ok());
  const std::vector<Chunk> chunks = {test::SliceTokens(*test_, 100, 200), test::SliceTokens(*test_, 333, 45)};
  const uint32_t bs = 16;
  const uint64_t offsets[2] = {9, 40};
  const uint32_t num_blocks = test::BlocksFor(offsets[1], 200, bs) + 3;
  std::vector<test::PagedSource> sources;
  std::vector<std::unique_ptr<Buffer>> outs;
  std::vector<SeqEncodeItem> items;
  for (size_t i = 0; i < chunks.size(); ++i) {
    sources.push_back(test::MakePagedSource(backend(), chunks[i], offsets[i], bs, num_blocks, 21 + i));
    outs.push_back(std::make_unique<Buffer>(backend(), SeqEncodeMaxBytes(chunks[i].shape)));
    SeqEncodeItem item;
    item.shape = chunks[i].shape;
    item.rope = chunks[i].rope;
    item.first_position = chunks[i].first_position;
    item.tokens = chunks[i].tokens;
    item.token_offset = offsets[i];
    item.layer_caches = sources[i].layer_caches();
    item.block_table = sources[i].block_table();
    item.block_table_entries = sources[i].host_table.size();
    item.out = outs.back()->get();
    items.push_back(item);
  }
  SeqEncodeArgs args;
  args.source = KvLayout::kPaged;
  args.block_size = bs;
  args.num_blocks = num_blocks;
  args.items = items;
  ASSERT_TRUE(enc->CanImplement(args).ok());
  Buffer workspace(backend(), enc->WorkspaceBytes(args));
  std::vector<Status> statuses;
  std::vector<std::vector<uint8_t>> got;
  ASSERT_TRUE(enc->Encode(args, workspace.get(), workspace.size(), nullptr, &statuses).ok());
  ASSERT_TRUE(enc->Finish(args, workspace.get(), nullptr, &statuses, &got).ok());
  for (size_t i = 0; i < chunks.size(); ++i) {
    ASSERT_TRUE(statuses[i].ok()) << statuses[i].ToString();
    EXPECT_TRUE(got[i] == *EncodeChunk(chunks[i], *codec)) << "chunk " << i;
  }
  sources[0].SetEntry(sources[0].host_table.size() - 1, static_cast<int32_t>(num_blocks));
  ASSERT_TRUE(enc->Encode(args, workspace.get(), workspace.size(), nullptr, &statuses).ok());
  ASSERT_TRUE(enc->Finish(args, workspace.get(), nullptr, &statuses, &got).ok());
  EXPECT_EQ(statuses[0].code(), StatusCode::kOutOfRange) << statuses[0].ToString();
  ASSERT_TRUE(statuses[1].ok()) << statuses[1].ToString();
  EXPECT_TRUE(got[1] == *EncodeChunk(chunks[1], *codec));
}

TEST_P(SeqEncodeGpuTest, RandomDataWithEscapesEqualsEncodeChunk) {
  // Fresh random values (no structure for the predictor) at a small step:
  // most symbols are large and take the escape code.
  KvShape s = test_->shape;
  s.tokens = 48;
  Chunk chunk = test::RandomChunk(s, DType::kBF16, 11);
  chunk.rope = test_->rope;
  chunk.first_position = 4000;
  EncodeAndCompare("seq:delta=0.06,streams=adaptive", {chunk});
  EncodeAndCompare("seq:delta=0.06,streams=adaptive,arith=int12", {chunk});
  EncodeAndCompare("seq:delta=0.06,streams=lanes", {chunk});
  EncodeAndCompare("seq:delta=0.06,streams=lanes2", {chunk});
  EncodeAndCompare("seq:delta=0.06,streams=lanes3", {chunk});
  {
    // Over 6 bits per element: most magnitudes are past the escape threshold (15).
    auto bytes = EncodeChunk(chunk, *CodecFor("seq:delta=0.06,streams=adaptive"));
    ASSERT_TRUE(bytes.ok());
    EXPECT_GT(8.0 * bytes->size() / (2.0 * s.elements()), 6.0);
  }
  // Constant input: many groups without a coded component (lanes = 0).
  Chunk flat = chunk;
  std::fill(flat.k.begin(), flat.k.end(), 0);
  std::fill(flat.v.begin(), flat.v.end(), 0);
  EncodeAndCompare("seq:delta=4,streams=adaptive", {flat});
  EncodeAndCompare("seq:delta=4,streams=lanes", {flat});
  EncodeAndCompare("seq:delta=4,streams=lanes2", {flat});
  EncodeAndCompare("seq:delta=4,streams=lanes3", {flat});
}

// The length of group stream `stream` of layer section `layer` of a seq
// chunk (a layer section: u32 n, n u32 stream lengths, the streams).
uint32_t LayerStreamBytes(const std::vector<uint8_t>& chunk, uint32_t layer, uint32_t stream) {
  auto header = ParseChunkHeader(chunk);
  EXPECT_TRUE(header.ok());
  if (!header.ok() || header->sections.size() < layer + 2) return 0;
  uint32_t v = 0;
  std::memcpy(&v, chunk.data() + header->sections[1 + layer].offset + 4 + 4 * stream, 4);
  return v;
}

TEST_P(SeqEncodeGpuTest, LaneGroupsOfLongEscapesShareABatchWithOthers) {
  // The GPU encoder codes a lane-stream group in one pass when its lanes'
  // rANS operations fit two words per element, and in two passes (count, then
  // write with keys) when they do not, as with many long escape codes (an
  // operation per escape bit). One group here (layer 3's keys, head 0) holds
  // random values far above the dump's scale: its symbols escape with many
  // bits each, while every other group of the batch fits. Both paths, one launch.
  // (At 8 times the dump's scale the group takes 7.3-8.5 bits per element with
  // the magnitude model and 11.5-12.6 with the signed one, well under the
  // 16-bit limit; at 16 times the signed one came within 0.4 bits of it.)
  Chunk mixed = test::SliceTokens(*test_, 0, 32);
  const Chunk plain = mixed;
  const KvShape& s = mixed.shape;
  const uint64_t per_head = uint64_t{s.tokens} * s.head_dim;
  std::mt19937 rng(5);
  std::normal_distribution<float> normal(0.0f, kEscapeGroupScale);
  for (uint64_t e = 0; e < per_head; ++e) {
    const uint16_t b = FloatToBf16(normal(rng));
    const uint64_t at = (3ull * s.kv_heads * per_head + e) * 2;
    mixed.k[at] = static_cast<uint8_t>(b);
    mixed.k[at + 1] = static_cast<uint8_t>(b >> 8);
  }
  for (const char* spec : {"seq:delta=1,streams=lanes", "seq:delta=1,streams=lanes2",
                           "seq:delta=1,streams=lanes2,arith=int12", "seq:delta=1,streams=lanes3"}) {
    // The premise: that group's stream (layer section 3, stream 0) takes over
    // 6 bits per element, most of them escape bits (an operation each), and
    // under 3 before.
    auto a = EncodeChunk(plain, *CodecFor(spec));
    auto b = EncodeChunk(mixed, *CodecFor(spec));
    ASSERT_TRUE(a.ok() && b.ok()) << spec;
    EXPECT_LT(8.0 * LayerStreamBytes(*a, 3, 0) / double(per_head), 3.0) << spec;
    EXPECT_GT(8.0 * LayerStreamBytes(*b, 3, 0) / double(per_head), 6.0) << spec;
    EncodeAndCompare(spec, {mixed, test::SliceTokens(*test_, 32, 32)});
  }
}

TEST_P(SeqEncodeGpuTest, RopeStylesAndPartialRotaryEqualEncodeChunk) {
  // The keys' RoPE undone in each style the engine offers, over all of the
  // head or a part of it (the int12 kernel rotates staged rows when the
  // rotary size is a multiple of 16, else element by element).
  Chunk chunk = test::SliceTokens(*test_, 100, 24);
  chunk.first_position = 777;
  const uint32_t d = chunk.shape.head_dim;
  for (const RopeParams rope : {RopeParams{RopeStyle::kInterleaved, 10000.0, d},
                                RopeParams{RopeStyle::kRotateHalf, 500000.0, d / 2},
                                RopeParams{RopeStyle::kInterleaved, 10000.0, d / 2 + 8},
                                RopeParams{RopeStyle::kRotateHalf, 10000.0, d / 2 + 8}}) {
    chunk.rope = rope;
    for (const char* spec : {"seq:delta=1,streams=lanes2", "seq:delta=1,streams=lanes2,arith=int12"}) {
      SCOPED_TRACE(std::string(spec) + " rotary " + std::to_string(rope.dim));
      EncodeAndCompare(spec, {chunk});
    }
  }
}

TEST_P(SeqEncodeGpuTest, TooManyBitsIsResourceExhaustedAndOthersStillEncode) {
  // One group of the first chunk (layer 3's keys, head 0) holds 60000.0 everywhere:
  // its symbols are far beyond the escape threshold and its stream needs more
  // than 16 bits per element. The second chunk is ordinary.
  Chunk huge = test::SliceTokens(*test_, 0, 32);
  const KvShape& s = huge.shape;
  const uint64_t per_head = uint64_t{s.tokens} * s.head_dim;
  for (uint64_t e = 0; e < per_head; ++e) {
    const uint64_t at = (3ull * s.kv_heads * per_head + e) * 2;
    huge.k[at] = 0x6A;  // bf16 0x476A = 60000
    huge.k[at + 1] = 0x47;
  }
  for (const char* spec : {"seq:delta=1,streams=adaptive", "seq:delta=1,streams=lanes", "seq:delta=1,streams=lanes2"}) {
    std::vector<Status> st = EncodeAndCompare(spec, {huge, test::SliceTokens(*test_, 32, 32)}, {false, true});
    ASSERT_EQ(st.size(), 2u);
    EXPECT_EQ(st[0].code(), StatusCode::kResourceExhausted) << spec << ": " << st[0].ToString();
  }
}

TEST_P(SeqEncodeGpuTest, BadItemsFailAloneAndOutOfScopeSpecsAreRefused) {
  std::shared_ptr<const Codec> codec = CodecFor("seq:delta=1,streams=adaptive");
  auto enc = SeqEncodeGpu::CreateFor(backend(), codec);
  ASSERT_TRUE(enc.ok());
  const Chunk good = test::SliceTokens(*test_, 0, 32);
  Input in = Place(backend(), good, 0, 0);
  Buffer out0(backend(), SeqEncodeMaxBytes(good.shape)), out1(backend(), SeqEncodeMaxBytes(good.shape));
  SeqEncodeItem items[2];
  for (int i = 0; i < 2; ++i) {
    items[i].shape = good.shape;
    items[i].rope = good.rope;
    items[i].first_position = good.first_position;
    items[i].tokens = good.tokens;
    items[i].k_in = in.k->get();
    items[i].v_in = in.v->get();
    items[i].in_tokens = in.in_tokens;
    items[i].out = (i ? out1 : out0).get();
  }
  items[0].token_offset = 1;  // past in_tokens
  SeqEncodeArgs args;
  args.items = items;
  Buffer workspace(backend(), enc->WorkspaceBytes(args));
  std::vector<Status> statuses;
  std::vector<std::vector<uint8_t>> chunks;
  ASSERT_TRUE(enc->Encode(args, workspace.get(), workspace.size(), nullptr, &statuses).ok());
  ASSERT_TRUE(enc->Finish(args, workspace.get(), nullptr, &statuses, &chunks).ok());
  EXPECT_EQ(statuses[0].code(), StatusCode::kOutOfRange) << statuses[0].ToString();
  EXPECT_TRUE(chunks[0].empty());
  ASSERT_TRUE(statuses[1].ok()) << statuses[1].ToString();
  EXPECT_TRUE(chunks[1] == *EncodeChunk(good, *codec));
  // A workspace too small is refused before anything runs.
  EXPECT_EQ(enc->Encode(args, workspace.get(), 0, nullptr, &statuses).code(), StatusCode::kInvalidArgument);

  // Other codecs are not the GPU encoder's.
  EXPECT_EQ(SeqEncodeGpu::CreateFor(backend(), CodecFor("raw")).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(SeqEncodeGpu::CreateFor(backend(), CodecFor("seq:lossless")).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(SeqEncodeGpu::CreateFor(backend(), nullptr).status().code(), StatusCode::kInvalidArgument);

}

INSTANTIATE_TEST_SUITE_P(Backends, SeqEncodeGpuTest,
                         ::testing::Combine(::testing::Values(Backend::kCpu, Backend::kCuda),
                                            ::testing::Values("same", "all", "mean")),
                         test::SeqGpuCaseName);

// The encoder's lane-stream merge (gpu/src/seq_lane_merge.h): every word's
// rank from the operation bitmasks equals its place when all words are
// sorted by (operation, lane), the decoder's order. Plain C++, on the CPU.
TEST(SeqLaneMergeTest, RanksFromBitmasksAreTheDecodersOrder) {
  std::mt19937 rng(7);
  for (int trial = 0; trial < 200; ++trial) {
    const uint32_t lanes = 1 + rng() % 16, ops = 1 + rng() % 4000;
    const uint32_t segments = (ops + 31) / 32;
    std::vector<uint32_t> mask(size_t{segments} * gpu::internal::kSqMergeLanes, 0);
    std::vector<std::pair<uint32_t, uint32_t>> words;  // (op, lane)
    const uint32_t density = 1 + rng() % 8;            // about one word in `density` operations
    for (uint32_t l = 0; l < lanes; ++l) {
      for (uint32_t op = 0; op < ops; ++op) {
        if (rng() % density != 0) continue;
        words.push_back({op, l});
        mask[(op / 32) * gpu::internal::kSqMergeLanes + l] |= 1u << (op % 32);
      }
    }
    std::vector<uint32_t> before(segments, 0);
    for (uint32_t s = 1; s < segments; ++s) {
      before[s] = before[s - 1];
      for (uint32_t l = 0; l < lanes; ++l) {
        before[s] += static_cast<uint32_t>(
            __builtin_popcount(mask[(s - 1) * gpu::internal::kSqMergeLanes + l]));
      }
    }
    std::vector<std::pair<uint32_t, uint32_t>> sorted = words;
    std::sort(sorted.begin(), sorted.end());
    for (uint32_t r = 0; r < sorted.size(); ++r) {
      const auto [op, lane] = sorted[r];
      ASSERT_EQ(gpu::internal::SqLaneWordRank(mask.data(), before.data(), lanes, lane, op), r)
          << "trial " << trial << " op " << op << " lane " << lane;
    }
  }
}

}  // namespace
}  // namespace seqkv::gpu

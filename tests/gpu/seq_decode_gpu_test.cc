// SeqDecodeGpu (the whole seq lossy decode) against seqkv::DecodeChunk, on
// both backends: the CPU path always runs; the CUDA cases skip cleanly
// without a GPU (label gpu).
//
// Contract checked here (docs/gpu.md): the decoded bf16 K and V equal
// DecodeChunk's byte for byte, in the contiguous and the paged layouts, with
// every element outside the chunk's region untouched; chunks the GPU path does
// not take are refused by MakeSeqDecodeItem with the documented codes; a
// corrupt group stream is DATA_LOSS and a bad block table entry OUT_OF_RANGE.
// The tensor-core maths (SeqDenseMath) stay within the tolerance docs/gpu.md
// documents, on dev-dump chunks and on fresh random KV; kCpu ignores them.
#include "seqkv/gpu/seq_decode.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <numeric>
#include <optional>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "seqkv/codec/codec.h"
#include "seqkv/codec/dtype.h"
#include "seqkv/codec/format.h"
#include "seqkv/codec/safetensors.h"
#include "seqkv/codec/seq_profile.h"
#include "seqkv/gpu/device.h"
#include "gpu/backend_buffer.h"
#include "gpu/seq_fixture.h"
#include "../../codec/src/engine_rope.h"
#include "../../codec/src/seq_lossy_core.h"
#include "../../gpu/src/device_tables.h"
#include "util/test_util.h"

namespace seqkv::gpu {
namespace {

constexpr uint8_t kPoison = 0xFF;

using Buffer = test::BackendBuffer;

Chunk Slice(const Chunk& c, uint32_t t0, uint32_t n) { return test::SliceTokens(c, t0, n); }

struct Coded {
  Chunk original;
  std::vector<uint8_t> bytes;
  ChunkHeader header;
  Chunk reference;  // DecodeChunk(bytes)
};

Coded Code(const Chunk& c, const std::string& spec) {
  Coded out;
  out.original = c;
  auto codec = MakeCodec(spec);
  EXPECT_TRUE(codec.ok()) << codec.status().ToString();
  auto bytes = EncodeChunk(c, **codec);
  EXPECT_TRUE(bytes.ok()) << bytes.status().ToString();
  out.bytes = std::move(*bytes);
  auto header = ParseChunkHeader(out.bytes);
  EXPECT_TRUE(header.ok());
  out.header = *header;
  auto decoded = DecodeChunk(out.bytes);
  EXPECT_TRUE(decoded.ok()) << decoded.status().ToString();
  out.reference = std::move(*decoded);
  return out;
}

// Calls fn(stream) for every group stream of the chunk, layer by layer.
template <typename Fn>
void ForEachGroupStream(const Coded& c, Fn&& fn) {
  const KvShape& s = c.header.shape;
  for (uint32_t l = 0; l < s.layers; ++l) {
    const SectionInfo& sec = c.header.sections[1 + l];
    auto streams = seqkv::internal::UnpackSeqStreams(std::span<const uint8_t>(c.bytes).subspan(sec.offset, sec.length),
                                                     2 * s.kv_heads);
    ASSERT_TRUE(streams.ok());
    for (std::span<const uint8_t> stream : *streams) fn(stream);
  }
}

// The largest |symbol| of a chunk of adaptive group streams (the codec's own parsers).
int32_t LargestSymbol(const Coded& c) {
  const KvShape& s = c.header.shape;
  std::vector<int32_t> q(size_t{s.tokens} * s.head_dim);
  int32_t most = 0;
  ForEachGroupStream(c, [&](std::span<const uint8_t> stream) {
    EXPECT_TRUE(seqkv::internal::SeqDecodeGroup(stream, s.tokens, s.head_dim, q.data()).ok());
    for (const int32_t v : q) most = std::max(most, std::abs(v));
  });
  return most;
}

// How many of the chunk's group streams code no component (a lane stream
// whose lane count, the byte after the bitmap, is 0).
uint32_t EmptyLaneStreams(const Coded& c) {
  const size_t bitmap = (c.header.shape.head_dim + 7) / 8;
  uint32_t empty = 0;
  ForEachGroupStream(c, [&](std::span<const uint8_t> stream) {
    EXPECT_GT(stream.size(), bitmap);
    if (stream.size() > bitmap && stream[bitmap] == 0) ++empty;
  });
  return empty;
}

struct Tolerance;  // below, with the tensor-core maths' test

class SeqDecodeGpuTest : public test::SeqGpuTestBase {
 protected:
  void SetUp() override {
    SetUpProfile(/*sensitivities=*/false);
    if (IsSkipped() || HasFatalFailure()) return;
    auto dec = SeqDecodeGpu::CreateFor(backend(), profile_);
    if (!dec.ok()) GTEST_SKIP() << dec.status().ToString();
    decoder_.emplace(std::move(*dec));
  }

  std::vector<Status> Run(const SeqDecodeArgs& args) {
    EXPECT_TRUE(decoder_->CanImplement(args).ok());
    // A workspace full of garbage: the decoder must clear whatever it relies on.
    std::vector<uint8_t> ws(decoder_->WorkspaceBytes(args), 0xA5);
    Buffer workspace(backend(), ws);
    std::vector<Status> statuses;
    EXPECT_TRUE(decoder_->Decode(args, workspace.get(), workspace.size(), nullptr, &statuses).ok());
    EXPECT_TRUE(decoder_->CollectStatuses(workspace.get(), nullptr, &statuses).ok());
    return statuses;
  }

  // Pieces of the test dump coded at three steps (positions not starting at
  // 0), with adaptive, lane and signed lane streams in one batch (both lane
  // kernels); `whole` adds the whole 1024-token dump twice. The kCpu backend
  // runs the reference's own functions (~30x slower in the sanitizer build):
  // there one short case of each stream coding.
  std::vector<Coded> Cases(bool whole) {
    std::vector<Coded> cases;
    const bool all = backend() == Backend::kCuda;
    if (all) cases.push_back(Code(Slice(*test_, 0, 256), "seq:delta=1,streams=adaptive"));
    cases.push_back(Code(Slice(*test_, 300, 128), "seq:delta=0.5,streams=adaptive"));
    if (all) cases.push_back(Code(Slice(*test_, 700, 37), "seq:delta=2,streams=adaptive"));
    if (whole && all) cases.push_back(Code(*test_, "seq:delta=1,streams=adaptive"));
    if (all) cases.push_back(Code(Slice(*test_, 300, 256), "seq:delta=0.5,streams=lanes"));
    cases.push_back(Code(Slice(*test_, 700, 37), "seq:delta=2,streams=lanes"));
    if (all) cases.push_back(Code(Slice(*test_, 500, 256), "seq:delta=0.2,streams=lanes"));
    if (all) cases.push_back(Code(Slice(*test_, 200, 128), "seq:delta=0.5,streams=lanes2"));
    if (all) cases.push_back(Code(Slice(*test_, 650, 37), "seq:delta=2,streams=lanes2"));
    cases.push_back(Code(Slice(*test_, 450, 64), "seq:delta=0.15,streams=lanes2"));  // escapes
    // A step so coarse that every symbol is 0: group streams without lanes,
    // whose symbols the signed lane kernel must still clear.
    Coded coarse = Code(Slice(*test_, 600, 40), "seq:delta=1000,streams=lanes2");
    EXPECT_EQ(EmptyLaneStreams(coarse), 2 * coarse.header.shape.layers * coarse.header.shape.kv_heads);
    cases.push_back(std::move(coarse));
    if (whole && all) cases.push_back(Code(*test_, "seq:delta=1,streams=lanes2"));
    // Split lane streams (streams=lanes3): the same shapes, escapes, and
    // groups without coded components.
    if (all) cases.push_back(Code(Slice(*test_, 200, 128), "seq:delta=0.5,streams=lanes3"));
    cases.push_back(Code(Slice(*test_, 650, 37), "seq:delta=2,streams=lanes3"));
    if (all) cases.push_back(Code(Slice(*test_, 450, 64), "seq:delta=0.15,streams=lanes3"));
    if (all) cases.push_back(Code(Slice(*test_, 600, 40), "seq:delta=1000,streams=lanes3"));
    if (whole && all) cases.push_back(Code(*test_, "seq:delta=1,streams=lanes3"));
    if (all) cases.push_back(Code(Slice(*test_, 60, 100), "seq:delta=1,streams=lanes3,arith=int12"));
    // arith=int12 (exact on every path, in the same batch as the float chunks):
    // both stream codings, a tile of tokens past 64, and steps fine enough
    // for symbols outside int8 and outside 16 bits.
    cases.push_back(Code(Slice(*test_, 120, 37), "seq:delta=1,streams=lanes2,arith=int12"));
    if (all) cases.push_back(Code(Slice(*test_, 350, 200), "seq:delta=0.5,streams=adaptive,arith=int12"));
    Coded fine = Code(Slice(*test_, 800, 70), "seq:delta=0.005,streams=adaptive,arith=int12");
    EXPECT_GT(LargestSymbol(fine), 127);  // the GPU's second pass over the symbols' high parts
    if (all) cases.push_back(std::move(fine));
    Coded finest = Code(Slice(*test_, 900, 20), "seq:delta=0.00002,streams=adaptive,arith=int12");
    EXPECT_GT(LargestSymbol(finest), 32767);  // rows the GPU sums again in int64
    if (all) cases.push_back(std::move(finest));
    if (whole && all) cases.push_back(Code(*test_, "seq:delta=1,streams=lanes2,arith=int12"));
    return cases;
  }

  // An item per case decoding into its own poisoned K and V buffers
  // ([layers, kv_heads, tokens, head_dim]): (*keep)[3i] holds case i's chunk,
  // [3i + 1] its K, [3i + 2] its V.
  // `shift`: the rows start that many bytes into their buffers.
  void ItemsInto(const std::vector<Coded>& cases, std::vector<std::unique_ptr<Buffer>>* keep,
                 std::vector<SeqDecodeItem>* items, uint32_t shift = 0) {
    for (const Coded& c : cases) {
      keep->push_back(std::make_unique<Buffer>(backend(), c.bytes));
      auto item = MakeSeqDecodeItem(c.header, c.bytes, keep->back()->get(), *profile_);
      ASSERT_TRUE(item.ok()) << item.status().ToString();
      const uint64_t bytes = c.header.shape.elements() * 2 + shift;
      keep->push_back(std::make_unique<Buffer>(backend(), std::vector<uint8_t>(bytes, kPoison)));
      item->k_out = static_cast<uint8_t*>(keep->back()->get()) + shift;
      keep->push_back(std::make_unique<Buffer>(backend(), std::vector<uint8_t>(bytes, kPoison)));
      item->v_out = static_cast<uint8_t*>(keep->back()->get()) + shift;
      item->out_tokens = c.header.shape.tokens;
      items->push_back(std::move(*item));
    }
  }

  // The cases in one batch with `math`, each into its own poisoned buffers
  // (ItemsInto, kept in *keep): *statuses, one per case.
  void RunCases(const std::vector<Coded>& cases, SeqDenseMath math,
                std::vector<std::unique_ptr<Buffer>>* keep, std::vector<Status>* statuses,
                uint32_t shift = 0) {
    std::vector<SeqDecodeItem> items;
    ASSERT_NO_FATAL_FAILURE(ItemsInto(cases, keep, &items, shift));
    SeqDecodeArgs args;
    args.math = math;
    args.items = items;
    *statuses = Run(args);
    ASSERT_EQ(statuses->size(), cases.size());
  }

  // The cases in one batch with f16 math (RunCases): every chunk decodes,
  // each into bytes equal to its own batch's alone.
  void HalfBatchDecodesAsEachAlone(const std::vector<Coded>& cases) {
    std::vector<std::unique_ptr<Buffer>> keep;
    std::vector<Status> statuses;
    ASSERT_NO_FATAL_FAILURE(RunCases(cases, SeqDenseMath::kTensorF16, &keep, &statuses));
    for (size_t i = 0; i < cases.size(); ++i) {
      ASSERT_TRUE(statuses[i].ok()) << i << ": " << statuses[i].ToString();
      std::vector<std::unique_ptr<Buffer>> alone;
      std::vector<Status> alone_statuses;
      ASSERT_NO_FATAL_FAILURE(RunCases({cases[i]}, SeqDenseMath::kTensorF16, &alone, &alone_statuses));
      ASSERT_TRUE(alone_statuses[0].ok()) << i << ": " << alone_statuses[0].ToString();
      EXPECT_TRUE(keep[3 * i + 1]->Download() == alone[1]->Download()) << i;
      EXPECT_TRUE(keep[3 * i + 2]->Download() == alone[2]->Download()) << i;
    }
  }

  // A profile calibrated on `calibration` (head size 128: PairHeads), this
  // test's inputs, in place of the fixture's; the decoder made for it.
  void UseHeadSize128Profile(const Chunk& calibration) {
    SeqCalibrateOptions o;
    o.inputs = *ParseSeqInputs(std::get<1>(GetParam()));
    auto wide = CalibrateSeqProfile({calibration}, o, nullptr);
    ASSERT_TRUE(wide.ok()) << wide.status().ToString();
    ASSERT_EQ(wide->head_dim, 128u);
    profile_ = std::make_shared<const SeqProfile>(std::move(*wide));
    SeqResources::Default().Clear();
    SeqResources::Default().AddProfile(profile_);
    auto dec = SeqDecodeGpu::CreateFor(backend(), profile_);
    ASSERT_TRUE(dec.ok()) << dec.status().ToString();
    decoder_.emplace(std::move(*dec));
  }

  // The cases in one batch, each into its own buffers (ItemsInto): every
  // chunk decodes, byte for byte DecodeChunk's.
  void DecodeEachExactly(const std::vector<Coded>& cases) {
    std::vector<std::unique_ptr<Buffer>> keep;
    std::vector<SeqDecodeItem> items;
    ASSERT_NO_FATAL_FAILURE(ItemsInto(cases, &keep, &items));
    SeqDecodeArgs args;
    args.items = items;
    std::vector<Status> statuses = Run(args);
    ASSERT_EQ(statuses.size(), cases.size());
    for (size_t i = 0; i < cases.size(); ++i) {
      ASSERT_TRUE(statuses[i].ok()) << i << ": " << statuses[i].ToString();
      EXPECT_TRUE(keep[3 * i + 1]->Download() == cases[i].reference.k) << i;
      EXPECT_TRUE(keep[3 * i + 2]->Download() == cases[i].reference.v) << i;
    }
  }

  void ContiguousCase(uint32_t shift);
  void PagedCase(const std::string& spec);
  void PagedInto(const Coded& c, SeqDenseMath math, const std::vector<uint8_t>& k,
                 const std::vector<uint8_t>& v);
  void ExpectWithin(const Tolerance& tol, const Coded& c, const Buffer& k, const Buffer& v,
                    const std::string& label);
  void CorruptCase(const std::string& spec, uint32_t header_byte, uint8_t value);

  std::optional<SeqDecodeGpu> decoder_;
};

// Every case into its own poisoned contiguous K and V buffers, with token
// offsets and wider outer token counts; `shift` bytes into each buffer (2: the
// rows are not 16-byte aligned, so the GPU's output stage stores one channel
// at a time instead of eight). The bytes before and around the rows stay poison.
void SeqDecodeGpuTest::ContiguousCase(uint32_t shift) {
  std::vector<Coded> cases = Cases(/*whole=*/shift == 0);
  std::vector<std::unique_ptr<Buffer>> keep;
  std::vector<SeqDecodeItem> items;
  std::vector<uint64_t> offsets, outer;
  for (size_t i = 0; i < cases.size(); ++i) {
    const Coded& c = cases[i];
    keep.push_back(std::make_unique<Buffer>(backend(), c.bytes));
    auto item = MakeSeqDecodeItem(c.header, c.bytes, keep.back()->get(), *profile_);
    ASSERT_TRUE(item.ok()) << item.status().ToString();
    const KvShape& s = c.header.shape;
    offsets.push_back(i % 3);
    outer.push_back(s.tokens + i % 3 + 2);
    const uint64_t bytes = uint64_t{s.layers} * s.kv_heads * outer.back() * s.head_dim * 2 + shift;
    keep.push_back(std::make_unique<Buffer>(backend(), std::vector<uint8_t>(bytes, kPoison)));
    item->k_out = static_cast<uint8_t*>(keep.back()->get()) + shift;
    keep.push_back(std::make_unique<Buffer>(backend(), std::vector<uint8_t>(bytes, kPoison)));
    item->v_out = static_cast<uint8_t*>(keep.back()->get()) + shift;
    item->token_offset = offsets.back();
    item->out_tokens = outer.back();
    items.push_back(std::move(*item));
  }
  SeqDecodeArgs args;
  args.items = items;
  std::vector<Status> statuses = Run(args);
  for (size_t i = 0; i < cases.size(); ++i) {
    ASSERT_TRUE(statuses[i].ok()) << i << ": " << statuses[i].ToString();
    const KvShape& s = cases[i].header.shape;
    const uint64_t row = uint64_t{s.head_dim} * 2;
    for (int kv = 0; kv < 2; ++kv) {
      const std::vector<uint8_t>& ref = kv ? cases[i].reference.v : cases[i].reference.k;
      std::vector<uint8_t> want(uint64_t{s.layers} * s.kv_heads * outer[i] * row + shift, kPoison);
      for (uint64_t lh = 0; lh < uint64_t{s.layers} * s.kv_heads; ++lh) {
        std::memcpy(&want[shift + (lh * outer[i] + offsets[i]) * row], &ref[lh * s.tokens * row], s.tokens * row);
      }
      const std::vector<uint8_t> got = keep[3 * i + 1 + kv]->Download();
      ASSERT_EQ(got.size(), want.size());
      uint64_t differ = 0;
      for (size_t b = 0; b < got.size(); ++b) differ += got[b] != want[b];
      EXPECT_EQ(differ, 0u) << "case " << i << " tensor " << kv;
    }
  }
}

TEST_P(SeqDecodeGpuTest, ContiguousEqualsDecodeChunk) { ContiguousCase(0); }

TEST_P(SeqDecodeGpuTest, ContiguousIntoUnalignedRowsEqualsDecodeChunk) { ContiguousCase(2); }

TEST_P(SeqDecodeGpuTest, PagedEqualsDecodeChunk) {
  for (const char* spec : {"seq:delta=1,streams=adaptive", "seq:delta=1,streams=lanes", "seq:delta=1,streams=lanes2",
                           "seq:delta=1,streams=lanes2,arith=int12", "seq:delta=1,streams=lanes3"}) {
    SCOPED_TRACE(spec);
    PagedCase(spec);
    if (HasFatalFailure()) return;
  }
}

void SeqDecodeGpuTest::PagedCase(const std::string& spec) {
  const Coded c = Code(Slice(*test_, 100, 256), spec);
  PagedInto(c, SeqDenseMath::kExact, c.reference.k, c.reference.v);
}

// Chunk c with `math` into vLLM-style paged caches (a shuffled block table,
// the chunk 9 tokens into its first block): each layer's cache is k and v
// (contiguous [layers, kv_heads, tokens, head_dim] bf16) at their pages, the
// rest poison. Then a block-table entry out of range: OUT_OF_RANGE.
void SeqDecodeGpuTest::PagedInto(const Coded& c, SeqDenseMath math, const std::vector<uint8_t>& k,
                                 const std::vector<uint8_t>& v) {
  const KvShape& s = c.header.shape;
  const uint32_t bs = 16;
  const uint64_t offset = 9;
  const uint32_t num_blocks = static_cast<uint32_t>((offset + s.tokens + bs - 1) / bs + 2);
  std::vector<int32_t> table(num_blocks);
  std::iota(table.begin(), table.end(), 0);
  std::shuffle(table.begin(), table.end(), std::mt19937(3));
  const uint64_t row = uint64_t{s.head_dim} * 2;
  const uint64_t cache_bytes = uint64_t{num_blocks} * 2 * bs * s.kv_heads * row;
  std::vector<std::unique_ptr<Buffer>> caches;
  std::vector<void*> ptrs;
  for (uint32_t l = 0; l < s.layers; ++l) {
    caches.push_back(std::make_unique<Buffer>(backend(), std::vector<uint8_t>(cache_bytes, kPoison)));
    ptrs.push_back(caches.back()->get());
  }
  std::vector<uint8_t> ptr_bytes(ptrs.size() * sizeof(void*));
  std::memcpy(ptr_bytes.data(), ptrs.data(), ptr_bytes.size());
  Buffer ptrs_dev(backend(), ptr_bytes);
  std::vector<uint8_t> table_bytes(table.size() * 4);
  std::memcpy(table_bytes.data(), table.data(), table_bytes.size());
  Buffer table_dev(backend(), table_bytes);
  Buffer chunk(backend(), c.bytes);
  auto item = MakeSeqDecodeItem(c.header, c.bytes, chunk.get(), *profile_);
  ASSERT_TRUE(item.ok()) << item.status().ToString();
  item->token_offset = offset;
  item->layer_caches = reinterpret_cast<void* const*>(ptrs_dev.get());
  item->block_table = reinterpret_cast<const int32_t*>(table_dev.get());
  item->block_table_entries = table.size();
  SeqDecodeArgs args;
  args.destination = KvDestination::kPaged;
  args.math = math;
  args.block_size = bs;
  args.num_blocks = num_blocks;
  args.items = std::span<const SeqDecodeItem>(&*item, 1);
  std::vector<Status> statuses = Run(args);
  ASSERT_TRUE(statuses[0].ok()) << statuses[0].ToString();
  for (uint32_t l = 0; l < s.layers; ++l) {
    const std::vector<uint8_t> want =
        test::PagedLayerImage(s, l, k, v, offset, table, bs, num_blocks, kPoison);
    EXPECT_TRUE(caches[l]->Download() == want) << "layer " << l;
  }
  // A block table entry past num_blocks: OUT_OF_RANGE.
  table[(offset + s.tokens - 1) / bs] = -1;
  std::memcpy(table_bytes.data(), table.data(), table_bytes.size());
  ASSERT_TRUE(BackendCopyIn(backend(), table_dev.get(), table_bytes.data(), table_bytes.size()).ok());
  EXPECT_EQ(Run(args)[0].code(), StatusCode::kOutOfRange);
}

TEST_P(SeqDecodeGpuTest, CorruptStreamIsDataLossAndOthersStillDecode) {
  // The first group stream's lane count (the byte after its bitmap): off by one.
  CorruptCase("seq:delta=1,streams=adaptive", 0, 0);
  CorruptCase("seq:delta=1,streams=lanes", 0, 0);
  // A lane stream's class shift (the byte after the lane count) out of range.
  CorruptCase("seq:delta=1,streams=lanes", 1, 100);
  // A lane stream's first state below 2^16 (its high bytes zero).
  CorruptCase("seq:delta=1,streams=lanes", 5, 0);
  // The same three in signed lane streams.
  CorruptCase("seq:delta=1,streams=lanes2", 0, 0);
  CorruptCase("seq:delta=1,streams=lanes2", 1, 100);
  CorruptCase("seq:delta=1,streams=lanes2", 5, 0);
  // A bit of a lane stream's words (the 7th word: 16 states of 4 bytes come
  // first): the symbols go astray, and the stream does not end as it must.
  CorruptCase("seq:delta=1,streams=lanes", 2 + 4 * 16 + 12, 0);
  CorruptCase("seq:delta=1,streams=lanes2", 2 + 4 * 16 + 12, 0);
  // Split lane streams: the class shift (the byte after the bitmap) out of
  // range; lane 0's word count (after the 16 states) one off, which moves a
  // word between lanes; a bit of the words (past the 15 counts).
  CorruptCase("seq:delta=1,streams=lanes3", 0, 100);
  CorruptCase("seq:delta=1,streams=lanes3", 1 + 4 * 16, 0);
  CorruptCase("seq:delta=1,streams=lanes3", 1 + 4 * 16 + 2 * 15 + 12, 0);
}

// Byte `header_byte` after the first group stream's bitmap set to `value`
// (0: its lowest bit flipped instead, except for byte 5, which is set to 0).
void SeqDecodeGpuTest::CorruptCase(const std::string& spec, uint32_t header_byte, uint8_t value) {
  SCOPED_TRACE(spec + " byte " + std::to_string(header_byte));
  Coded good = Code(Slice(*test_, 0, 128), spec);
  Coded bad = good;
  const SectionInfo& layer0 = bad.header.sections[1];
  const uint32_t n = 2 * bad.header.shape.kv_heads;
  const uint64_t stream0 = layer0.offset + 4 + 4ull * n;
  const uint64_t at = stream0 + (bad.header.shape.head_dim + 7) / 8 + header_byte;
  bad.bytes[at] = value == 0 && header_byte != 5 ? static_cast<uint8_t>(bad.bytes[at] ^ 1) : value;
  if (header_byte == 5) bad.bytes[at - 1] = 0;  // bytes 4-5 after the bitmap: state 0's two high bytes
  Buffer good_dev(backend(), good.bytes), bad_dev(backend(), bad.bytes);
  const KvShape& s = good.header.shape;
  const uint64_t bytes = s.elements() * 2;
  std::vector<std::unique_ptr<Buffer>> outs;
  std::vector<SeqDecodeItem> items;
  for (int i = 0; i < 2; ++i) {
    const Coded& c = i == 0 ? bad : good;
    auto item = MakeSeqDecodeItem(c.header, c.bytes, (i == 0 ? bad_dev : good_dev).get(), *profile_);
    ASSERT_TRUE(item.ok()) << item.status().ToString();
    outs.push_back(std::make_unique<Buffer>(backend(), std::vector<uint8_t>(bytes, kPoison)));
    item->k_out = outs.back()->get();
    outs.push_back(std::make_unique<Buffer>(backend(), std::vector<uint8_t>(bytes, kPoison)));
    item->v_out = outs.back()->get();
    item->out_tokens = s.tokens;
    items.push_back(std::move(*item));
  }
  SeqDecodeArgs args;
  args.items = items;
  std::vector<Status> statuses = Run(args);
  EXPECT_EQ(statuses[0].code(), StatusCode::kDataLoss) << statuses[0].ToString();
  ASSERT_TRUE(statuses[1].ok()) << statuses[1].ToString();
  EXPECT_TRUE(outs[2]->Download() == good.reference.k);
  EXPECT_TRUE(outs[3]->Download() == good.reference.v);
}

// kCuda's lane descriptor holds a group stream's length in 32 bits: an item
// with a longer lane stream is INVALID_ARGUMENT before anything reads it (the
// length given here is not the buffer's, which only a refusal makes safe),
// its output untouched; the batch's other item decodes. (kCpu reads the
// stream as given, so this case is kCuda's.)
TEST_P(SeqDecodeGpuTest, LaneStreamOf4GiBOrMoreIsRefusedAndOthersStillDecode) {
  if (backend() != Backend::kCuda) GTEST_SKIP() << "a limit of the GPU's lane descriptors only";
  const Coded c = Code(Slice(*test_, 0, 128), "seq:delta=1,streams=lanes3");
  std::vector<std::unique_ptr<Buffer>> keep;  // per item: chunk, K, V
  std::vector<SeqDecodeItem> items;
  ASSERT_NO_FATAL_FAILURE(ItemsInto({c, c}, &keep, &items));
  items[0].stream_bytes[1] = uint64_t{1} << 32;
  SeqDecodeArgs args;
  args.items = items;
  std::vector<Status> statuses = Run(args);
  EXPECT_EQ(statuses[0].code(), StatusCode::kInvalidArgument) << statuses[0].ToString();
  ASSERT_TRUE(statuses[1].ok()) << statuses[1].ToString();
  EXPECT_TRUE(keep[1]->Download() == std::vector<uint8_t>(c.header.shape.elements() * 2, kPoison));
  EXPECT_TRUE(keep[4]->Download() == c.reference.k);
  EXPECT_TRUE(keep[5]->Download() == c.reference.v);
}

TEST_P(SeqDecodeGpuTest, ChunksTheGpuPathDoesNotTakeAreRefusedClearly) {
  const Chunk piece = Slice(*test_, 0, 64);
  // Another profile's chunk.
  SeqCalibrateOptions o;
  o.inputs = SeqInputs::kMean;
  auto other = CalibrateSeqProfile({*test_}, o, nullptr);
  ASSERT_TRUE(other.ok());
  auto other_ptr = std::make_shared<const SeqProfile>(*other);
  SeqResources::Default().AddProfile(other_ptr);
  Coded foreign = Code(piece, "seq:delta=1,streams=adaptive,profile=" + other_ptr->Id());
  EXPECT_EQ(MakeSeqDecodeItem(foreign.header, foreign.bytes, foreign.bytes.data(), *profile_).status().code(),
            StatusCode::kFailedPrecondition);
  // seq:lossless.
  Coded lossless = Code(piece, "seq:lossless");
  EXPECT_EQ(MakeSeqDecodeItem(lossless.header, lossless.bytes, lossless.bytes.data(), *profile_).status().code(),
            StatusCode::kUnimplemented);
  // A parent-conditioned chunk.
  auto codec = MakeCodec("seq:delta=1,streams=adaptive,profile=" + profile_->Id());
  ASSERT_TRUE(codec.ok());
  ChunkContext ctx;
  auto first = EncodeChunk(Slice(*test_, 0, 64), **codec, nullptr, &ctx);
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  auto second = EncodeChunk(Slice(*test_, 64, 64), **codec, &ctx, nullptr);
  ASSERT_TRUE(second.ok()) << second.status().ToString();
  auto header = ParseChunkHeader(*second);
  ASSERT_TRUE(header.ok());
  EXPECT_EQ(MakeSeqDecodeItem(*header, *second, second->data(), *profile_).status().code(),
            StatusCode::kFailedPrecondition);
  // Not a seq chunk.
  Coded raw = Code(piece, "raw");
  EXPECT_EQ(MakeSeqDecodeItem(raw.header, raw.bytes, raw.bytes.data(), *profile_).status().code(),
            StatusCode::kInvalidArgument);
}

// What a client writes by default (lane streams, each chunk encoded with its
// parent's context as the client passes it) stands alone: every chunk of a
// sequence goes through the GPU path in one batch, equal to DecodeChunk.
TEST_P(SeqDecodeGpuTest, ClientWrittenLaneChunksAllDecodeInOneBatch) {
  auto codec = MakeCodec("seq:delta=0.7,profile=" + profile_->Id());  // the default: signed lane streams
  ASSERT_TRUE(codec.ok());
  ASSERT_NE((*codec)->Spec().find("streams=lanes2"), std::string::npos);
  std::vector<Coded> chain;
  ChunkContext ctx;
  for (uint32_t i = 0; i < 4; ++i) {
    Coded c;
    c.original = Slice(*test_, 64 * i, 64);
    ChunkContext next;
    auto bytes = EncodeChunk(c.original, **codec, i == 0 ? nullptr : &ctx, &next);
    ASSERT_TRUE(bytes.ok()) << bytes.status().ToString();
    ctx = next;
    c.bytes = std::move(*bytes);
    c.header = *ParseChunkHeader(c.bytes);
    EXPECT_EQ(c.header.flags & kFlagNeedsParent, 0u) << i;
    auto decoded = DecodeChunk(c.bytes);
    ASSERT_TRUE(decoded.ok()) << decoded.status().ToString();
    c.reference = std::move(*decoded);
    chain.push_back(std::move(c));
  }
  DecodeEachExactly(chain);
}

// A batch of 40 chunks of 1 to 5 tokens (a CTA per group each: every
// kernel finds its chunk among many), float and arith=int12 alternating:
// every chunk lands in its own buffers, byte for byte DecodeChunk's (on kCpu:
// the fallback's item loop).
TEST_P(SeqDecodeGpuTest, ManyShortChunksInOneBatchEachDecodeIntoTheirOwnBuffers) {
  std::vector<Coded> cases;
  for (uint32_t i = 0; i < 40; ++i) {
    cases.push_back(Code(Slice(*test_, 23 * i, 1 + i % 5),
                         i % 2 ? "seq:delta=0.7,streams=lanes2,arith=int12" : "seq:delta=0.7,streams=lanes2"));
  }
  DecodeEachExactly(cases);
  // kCpu's item loop on the calling thread alone and on 3 threads (the
  // default is up to 8); kCuda does not use them.
  decoder_->SetHostThreads(1);
  DecodeEachExactly(cases);
  decoder_->SetHostThreads(3);
  DecodeEachExactly(cases);
}

TEST_P(SeqDecodeGpuTest, HostThreadsDefaultToAtMostEightAndZeroRestoresIt) {
  test::ExpectHostThreadsSetting(*decoder_);
}

// Random single-bit flips in the words of signed lane streams (a step with
// escapes, and one without), the chunk framed again with valid checksums
// (FrameChunk), so that only the stream decoder can tell: in one batch with
// the unflipped chunks, the backend accepts exactly the chunks DecodeChunk
// accepts, with its bytes, and rejects the others as DATA_LOSS (the GPU's
// lane kernel decodes a symbol on its own fast path, the escapes' bits with
// the reference's step function).
TEST_P(SeqDecodeGpuTest, LaneStreamBitFlipsDecodeAsTheReference) {
  const uint64_t seed = std::random_device{}();
  std::printf("seed %llu\n", static_cast<unsigned long long>(seed));
  std::mt19937_64 rng(seed);
  const int flips = backend() == Backend::kCuda ? 24 : 3;
  std::vector<Coded> cases;
  std::vector<StatusCode> want;
  for (const char* spec : {"seq:delta=0.15,streams=lanes2", "seq:delta=1,streams=lanes2",
                           "seq:delta=0.15,streams=lanes3", "seq:delta=1,streams=lanes3"}) {
    const bool split = std::string(spec).find("lanes3") != std::string::npos;
    const Coded good = Code(Slice(*test_, 100, 64), spec);
    cases.push_back(good);
    want.push_back(StatusCode::kOk);
    const KvShape& s = good.header.shape;
    const size_t bitmap = (s.head_dim + 7) / 8;
    // Every group stream's words: (offset in the chunk, length).
    struct Words {
      uint64_t at, bytes;
    };
    std::vector<Words> words;
    for (uint32_t l = 0; l < s.layers; ++l) {
      const SectionInfo& sec = good.header.sections[1 + l];
      auto streams = seqkv::internal::UnpackSeqStreams(
          std::span<const uint8_t>(good.bytes).subspan(sec.offset, sec.length), 2 * s.kv_heads);
      ASSERT_TRUE(streams.ok());
      for (std::span<const uint8_t> st : *streams) {
        if (split) {  // every byte after the bitmap: shift, states, word counts, words
          if (st.size() > bitmap)
            words.push_back({uint64_t(st.data() - good.bytes.data()) + bitmap, st.size() - bitmap});
          continue;
        }
        if (st.size() <= bitmap || st[bitmap] == 0) continue;  // no lanes
        const uint64_t head = bitmap + 2 + 4ull * st[bitmap];
        if (st.size() > head) words.push_back({uint64_t(st.data() - good.bytes.data()) + head, st.size() - head});
      }
    }
    ASSERT_FALSE(words.empty()) << spec;
    // The good chunk's sections, read from `bytes` (the same layout), framed again.
    auto frame_again = [&](const std::vector<uint8_t>& bytes) {
      std::vector<SectionView> views;
      for (const SectionInfo& sec : good.header.sections) {
        views.push_back({sec.type, std::span<const uint8_t>(bytes).subspan(sec.offset, sec.length)});
      }
      return FrameChunk(good.original, good.header.codec_id, good.header.codec_spec, good.header.flags, views);
    };
    {  // Framing the sections again gives the chunk's own bytes.
      auto framed = frame_again(good.bytes);
      ASSERT_TRUE(framed.ok()) << framed.status().ToString();
      ASSERT_TRUE(*framed == good.bytes) << spec;
    }
    for (int f = 0; f < flips; ++f) {
      const Words& w = words[rng() % words.size()];
      std::vector<uint8_t> flipped = good.bytes;
      flipped[w.at + rng() % w.bytes] ^= static_cast<uint8_t>(1u << (rng() % 8));
      auto framed = frame_again(flipped);
      ASSERT_TRUE(framed.ok()) << framed.status().ToString();
      Coded bad;
      bad.original = good.original;
      bad.bytes = std::move(*framed);
      auto header = ParseChunkHeader(bad.bytes);
      ASSERT_TRUE(header.ok()) << header.status().ToString();
      bad.header = *header;
      auto decoded = DecodeChunk(bad.bytes);
      want.push_back(decoded.ok() ? StatusCode::kOk : decoded.status().code());
      if (decoded.ok()) bad.reference = std::move(*decoded);
      cases.push_back(std::move(bad));
    }
  }
  std::vector<std::unique_ptr<Buffer>> keep;
  std::vector<SeqDecodeItem> items;
  ASSERT_NO_FATAL_FAILURE(ItemsInto(cases, &keep, &items));
  SeqDecodeArgs args;
  args.items = items;
  const std::vector<Status> statuses = Run(args);
  ASSERT_EQ(statuses.size(), cases.size());
  size_t rejected = 0;
  for (size_t i = 0; i < cases.size(); ++i) {
    EXPECT_EQ(statuses[i].code(), want[i]) << i << ": " << statuses[i].ToString();
    if (want[i] != StatusCode::kOk) {
      EXPECT_EQ(want[i], StatusCode::kDataLoss) << i;
      ++rejected;
    } else if (statuses[i].ok()) {
      EXPECT_TRUE(keep[3 * i + 1]->Download() == cases[i].reference.k) << i;
      EXPECT_TRUE(keep[3 * i + 2]->Download() == cases[i].reference.v) << i;
    }
  }
  std::printf("%zu flipped chunks, %zu rejected by DecodeChunk\n", cases.size() - 2, rejected);
  EXPECT_GT(rejected, 0u);
}

struct Agreement {
  uint64_t elements = 0, differ = 0;
  double err2 = 0, ref2 = 0, codec2 = 0;  // sums of squares: GPU - reference, reference, reference - original
  std::vector<std::pair<double, double>> pairs;  // (GPU, reference) of the differing elements
};

void Compare(const std::vector<uint8_t>& got, const std::vector<uint8_t>& ref, const std::vector<uint8_t>& orig,
             Agreement* a) {
  ASSERT_EQ(got.size(), ref.size());
  for (size_t e = 0; e < got.size() / 2; ++e) {
    uint16_t g, r, o;
    std::memcpy(&g, &got[2 * e], 2);
    std::memcpy(&r, &ref[2 * e], 2);
    std::memcpy(&o, &orig[2 * e], 2);
    const double gf = Bf16ToFloat(g), rf = Bf16ToFloat(r), of = Bf16ToFloat(o);
    ++a->elements;
    a->differ += g != r;
    if (g != r) a->pairs.emplace_back(gf, rf);
    a->err2 += (gf - rf) * (gf - rf);
    a->ref2 += rf * rf;
    a->codec2 += (rf - of) * (rf - of);
  }
}

// The tolerance (docs/gpu.md, "Sequential codec: the dense stage on tensor cores"), per math, over a
// chunk's K and V: the largest fraction of elements whose bf16 may differ
// from DecodeChunk's; the largest relative difference |GPU - reference| /
// max(|reference|, rms) (rms: the chunk's rms value, so that elements near
// zero count against the chunk's scale); and the rms difference relative to
// the codec's own rms error.
struct Tolerance {
  SeqDenseMath math;
  const char* name;
  double max_differ_fraction, max_relative, max_rms_over_codec;
};
constexpr Tolerance kTolerances[] = {
    {SeqDenseMath::kTensorTf32x3, "tf32x3", 0.02, 1.0 / 64, 0.005},
    {SeqDenseMath::kTensorTf32, "tf32", 0.6, 0.1, 0.05},
    {SeqDenseMath::kTensorF16, "f16", 0.6, 0.1, 0.05},
};

// Case `c`'s decoded K and V against DecodeChunk's within `tol` (kCpu: the
// reference itself, no element differs); the figures printed, `label`led.
void SeqDecodeGpuTest::ExpectWithin(const Tolerance& tol, const Coded& c, const Buffer& k, const Buffer& v,
                                    const std::string& label) {
  Agreement a;
  Compare(k.Download(), c.reference.k, c.original.k, &a);
  Compare(v.Download(), c.reference.v, c.original.v, &a);
  const double fraction = double(a.differ) / a.elements;
  const double value_rms = std::sqrt(a.ref2 / a.elements), rms = std::sqrt(a.err2 / a.codec2);
  double max_relative = 0;
  for (const auto& [g, r] : a.pairs) {
    max_relative = std::max(max_relative, std::abs(g - r) / std::max(std::abs(r), value_rms));
  }
  std::printf(
      "[ tolerance ] %s %s case %s: %llu of %llu elements differ (%.2e), max relative diff %.2e, "
      "rms diff / codec rms error %.2e\n",
      test::SeqGpuCaseName(::testing::TestParamInfo<ParamType>(GetParam(), 0)).c_str(), tol.name,
      label.c_str(), static_cast<unsigned long long>(a.differ), static_cast<unsigned long long>(a.elements),
      fraction, max_relative, rms);
  if (backend() == Backend::kCpu) {
    EXPECT_EQ(a.differ, 0u) << label;
    return;
  }
  EXPECT_LE(fraction, tol.max_differ_fraction) << label;
  EXPECT_LE(max_relative, tol.max_relative) << label;
  EXPECT_LE(rms, tol.max_rms_over_codec) << label;
}

TEST_P(SeqDecodeGpuTest, TensorCoreMathIsWithinTheDocumentedTolerance) {
  // Dev-dump chunks (both stream kinds, a whole 1024-token dump) and a chunk
  // of fresh random KV (the dump's positions, uniform-ish bf16 values).
  std::vector<Coded> cases;
  cases.push_back(Code(Slice(*test_, 0, 256), "seq:delta=1,streams=adaptive"));
  cases.push_back(Code(Slice(*test_, 300, 256), "seq:delta=0.5,streams=lanes"));
  // (kCpu ignores the math and runs the reference: a short piece suffices there.)
  cases.push_back(backend() == Backend::kCuda ? Code(*test_, "seq:delta=1,streams=lanes2")
                                              : Code(Slice(*test_, 600, 64), "seq:delta=1,streams=lanes2"));
  Chunk random = Slice(*test_, 100, 64);
  const Chunk noise = test::RandomChunk(random.shape, random.dtype, 11);
  random.k = noise.k;
  random.v = noise.v;
  cases.push_back(Code(random, "seq:delta=0.5,streams=lanes"));
  for (const Tolerance& tol : kTolerances) {
    // kCpu runs the same reference whatever the math: once is enough.
    if (backend() == Backend::kCpu && &tol != &kTolerances[0]) break;
    SCOPED_TRACE(tol.name);
    std::vector<std::unique_ptr<Buffer>> keep;
    std::vector<Status> statuses;
    ASSERT_NO_FATAL_FAILURE(RunCases(cases, tol.math, &keep, &statuses));
    for (size_t i = 0; i < cases.size(); ++i) {
      ASSERT_TRUE(statuses[i].ok()) << i << ": " << statuses[i].ToString();
      ExpectWithin(tol, cases[i], *keep[3 * i + 1], *keep[3 * i + 2], std::to_string(i));
    }
  }
}

// A chunk whose values are 2^16 times the dump's (bf16 holds them; FP16,
// whose largest finite value is 65504, does not): the FP16 math refuses it
// with FAILED_PRECONDITION and decodes the batch's other chunk; the other
// maths (and kCpu, the reference) decode both.
TEST_P(SeqDecodeGpuTest, HalfMathRefusesValuesOutsideItsRange) {
  Chunk big = Slice(*test_, 100, 64);
  for (std::vector<uint8_t>* t : {&big.k, &big.v}) {
    std::vector<float> x(t->size() / 2);
    ToFloat(big.dtype, t->data(), x.size(), x.data());
    for (float& v : x) v *= 65536.0f;  // exact: a power of two
    FromFloat(big.dtype, x.data(), x.size(), t->data());
  }
  std::vector<Coded> cases;
  cases.push_back(Code(big, "seq:delta=1,streams=lanes2"));
  cases.push_back(Code(Slice(*test_, 300, 64), "seq:delta=1,streams=lanes2"));
  for (const SeqDenseMath math : {SeqDenseMath::kTensorF16, SeqDenseMath::kTensorTf32}) {
    std::vector<std::unique_ptr<Buffer>> keep;
    std::vector<Status> statuses;
    ASSERT_NO_FATAL_FAILURE(RunCases(cases, math, &keep, &statuses));
    ASSERT_EQ(statuses.size(), 2u);
    if (backend() == Backend::kCuda && math == SeqDenseMath::kTensorF16) {
      EXPECT_EQ(statuses[0].code(), StatusCode::kFailedPrecondition) << statuses[0].ToString();
      EXPECT_NE(statuses[0].message().find("FP16"), std::string::npos) << statuses[0].ToString();
    } else {
      EXPECT_TRUE(statuses[0].ok()) << statuses[0].ToString();
    }
    ASSERT_TRUE(statuses[1].ok()) << statuses[1].ToString();
    Agreement a;
    Compare(keep[4]->Download(), cases[1].reference.k, cases[1].original.k, &a);
    Compare(keep[5]->Download(), cases[1].reference.v, cases[1].original.v, &a);
    EXPECT_LE(std::sqrt(a.err2 / a.codec2), 0.05);
    if (backend() == Backend::kCpu) {
      EXPECT_EQ(a.differ, 0u);
    }
  }
}

// The FP16 dense stage takes a batch of signed lane streams' symbols as FP16
// operands stored by the lane kernel (SlLaunch::half_symbols) instead of
// int32 symbols it converts itself: the same operations, so the same bytes.
// SEQKV_HALF_SYMBOLS=0 switches the FP16 operands off (kCpu: the reference
// both times). The random chunk's symbols are large enough to take escapes.
TEST_P(SeqDecodeGpuTest, HalfSymbolsDecodeTheSameBytesAsInt32Symbols) {
  std::vector<Coded> cases;
  cases.push_back(Code(*test_, "seq:delta=1,streams=lanes2"));
  Chunk random = Slice(*test_, 100, 64);
  const Chunk noise = test::RandomChunk(random.shape, random.dtype, 12);
  random.k = noise.k;
  random.v = noise.v;
  cases.push_back(Code(random, "seq:delta=0.25,streams=lanes2"));
  // Split lane streams in the same batch (both lane kernels' FP16 operands).
  cases.push_back(Code(*test_, "seq:delta=1,streams=lanes3"));
  cases.push_back(Code(random, "seq:delta=0.25,streams=lanes3"));
  std::vector<std::vector<uint8_t>> outputs[2];
  for (const bool half : {false, true}) {
    if (half) {
      ::unsetenv("SEQKV_HALF_SYMBOLS");
    } else {
      ::setenv("SEQKV_HALF_SYMBOLS", "0", 1);
    }
    std::vector<std::unique_ptr<Buffer>> keep;
    std::vector<Status> statuses;
    ASSERT_NO_FATAL_FAILURE(RunCases(cases, SeqDenseMath::kTensorF16, &keep, &statuses));
    ::unsetenv("SEQKV_HALF_SYMBOLS");
    for (size_t i = 0; i < cases.size(); ++i) {
      ASSERT_TRUE(statuses[i].ok()) << i << ": " << statuses[i].ToString();
      outputs[half].push_back(keep[3 * i + 1]->Download());
      outputs[half].push_back(keep[3 * i + 2]->Download());
    }
  }
  ASSERT_EQ(outputs[0].size(), outputs[1].size());
  for (size_t i = 0; i < outputs[0].size(); ++i) EXPECT_TRUE(outputs[0][i] == outputs[1][i]) << i;
}

// Every stream coding and both arithmetics in one batch, with an item the
// host refuses in the middle. SeqDecodeGpu::Decode counts the lane
// descriptors of each lane launch (magnitude, signed, signed into FP16
// operands, split, split into FP16 operands) before it writes each in its
// place, skipping refused items; a batch mixing them must decode every chunk
// as it decodes alone. Exact math: byte for byte DecodeChunk's, the refused
// item DATA_LOSS with its buffers untouched. f16 math (the signed and split
// streams' FP16 operands for float chunks, int32 symbols for int12 ones):
// each chunk's bytes alone.
TEST_P(SeqDecodeGpuTest, EveryStreamCodingAndArithInOneBatchDecodesAsEachAlone) {
  const std::vector<std::string> specs = {"seq:delta=0.7,streams=adaptive",
                                          "seq:delta=0.7,streams=lanes",
                                          "seq:delta=0.7,streams=lanes2",
                                          "seq:delta=0.7,streams=lanes3",
                                          "seq:delta=0.7,streams=lanes2,arith=int12",
                                          "seq:delta=0.7,streams=lanes3,arith=int12"};
  std::vector<Coded> cases;
  for (uint32_t i = 0; i < 2 * specs.size(); ++i) {
    cases.push_back(Code(Slice(*test_, 29 * i, 16 + 7 * i), specs[i % specs.size()]));
  }
  {
    std::vector<std::unique_ptr<Buffer>> keep;
    std::vector<SeqDecodeItem> items;
    ASSERT_NO_FATAL_FAILURE(ItemsInto(cases, &keep, &items));
    const size_t refused = 5;
    items[refused].delta0 = -1.0f;
    SeqDecodeArgs args;
    args.items = items;
    const std::vector<Status> statuses = Run(args);
    ASSERT_EQ(statuses.size(), cases.size());
    for (size_t i = 0; i < cases.size(); ++i) {
      if (i == refused) {
        EXPECT_EQ(statuses[i].code(), StatusCode::kDataLoss) << statuses[i].ToString();
        const std::vector<uint8_t> poison(cases[i].header.shape.elements() * 2, kPoison);
        EXPECT_TRUE(keep[3 * i + 1]->Download() == poison);
        EXPECT_TRUE(keep[3 * i + 2]->Download() == poison);
        continue;
      }
      ASSERT_TRUE(statuses[i].ok()) << i << ": " << statuses[i].ToString();
      EXPECT_TRUE(keep[3 * i + 1]->Download() == cases[i].reference.k) << i << " " << specs[i % specs.size()];
      EXPECT_TRUE(keep[3 * i + 2]->Download() == cases[i].reference.v) << i << " " << specs[i % specs.size()];
    }
  }
  std::vector<Coded> signed_cases;
  for (size_t i = 0; i < cases.size(); ++i) {
    if (specs[i % specs.size()].find("streams=lanes2") != std::string::npos ||
        specs[i % specs.size()].find("streams=lanes3") != std::string::npos) {
      signed_cases.push_back(cases[i]);
    }
  }
  ASSERT_EQ(signed_cases.size(), 8u);
  HalfBatchDecodesAsEachAlone(signed_cases);
}

// A batch of 40 chunks of 1 to 199 tokens decoded with FP16 tensor cores:
// each chunk's output equals its own decode alone, byte for byte (the same
// operations on the same operands, whatever else is in the batch). More items
// than a warp probes at once, so the FP16 kernel's warp-wide item search
// (dense::FindItemWarp) takes two rounds; one- and two-tile chunks, lanes2 and
// lanes3. (kCpu: the reference both times.)
TEST_P(SeqDecodeGpuTest, ManyChunksDecodeWithHalfMathAsEachAlone) {
  std::vector<Coded> cases;
  for (uint32_t i = 0; i < 40; ++i) {
    cases.push_back(Code(Slice(*test_, (23 * i) % 800, 1 + (37 * i) % 199),
                         i % 2 ? "seq:delta=0.7,streams=lanes3" : "seq:delta=0.7,streams=lanes2"));
  }
  HalfBatchDecodesAsEachAlone(cases);
}

// A chunk of head size 128: its kv heads side by side in pairs (K and V
// [layers][kv_heads / 2][tokens][2 * head_dim]; the RoPE parameters as they
// are, so the first head's channels are the rotated ones).
Chunk PairHeads(const Chunk& c) {
  Chunk w = c;
  const KvShape& s = c.shape;
  w.shape.kv_heads = s.kv_heads / 2;
  w.shape.head_dim = 2 * s.head_dim;
  const uint64_t row = uint64_t{s.head_dim} * 2;  // bytes of one head's vector
  for (auto [from, to] : {std::pair{&c.k, &w.k}, std::pair{&c.v, &w.v}}) {
    for (uint32_t l = 0; l < s.layers; ++l) {
      for (uint32_t h = 0; h < s.kv_heads; ++h) {
        for (uint32_t t = 0; t < s.tokens; ++t) {
          const uint64_t src = ((uint64_t{l} * s.kv_heads + h) * s.tokens + t) * row;
          const uint64_t dst =
              ((uint64_t{l} * w.shape.kv_heads + h / 2) * s.tokens + t) * 2 * row + (h % 2) * row;
          std::memcpy(to->data() + dst, from->data() + src, row);
        }
      }
    }
  }
  return w;
}

// Head size 128 (the dev dumps' two kv heads side by side, a profile
// calibrated on them): the FP16 dense stage there runs on wgmma on a compute
// capability 9.0 GPU (SdLayerWgKernel; docs/gpu.md) and on mma.sync
// elsewhere and with SEQKV_DENSE_WGMMA=0. Both stay within the f16
// tolerance of DecodeChunk and decode the same bytes, into contiguous rows,
// unaligned rows and paged caches: both signed lane streams,
// whole tiles, partial ones and escapes. (kCpu: the reference, one
// short case.)
TEST_P(SeqDecodeGpuTest, HeadSize128HalfMathIsWithinTheToleranceOnEitherKernelAndEveryLayout) {
  ASSERT_EQ(test_->shape.kv_heads % 2, 0u);
  ASSERT_NO_FATAL_FAILURE(UseHeadSize128Profile(PairHeads(*calibration_)));

  const Chunk test = PairHeads(*test_);
  const bool all = backend() == Backend::kCuda;
  std::vector<Coded> cases;
  cases.push_back(Code(Slice(test, 650, 37), "seq:delta=2,streams=lanes3"));  // a partial tile
  if (all) cases.push_back(Code(Slice(test, 0, 256), "seq:delta=1,streams=lanes3"));
  if (all) cases.push_back(Code(Slice(test, 300, 200), "seq:delta=0.5,streams=lanes2"));
  if (all) cases.push_back(Code(Slice(test, 450, 64), "seq:delta=0.15,streams=lanes3"));  // escapes
  if (all) cases.push_back(Code(test, "seq:delta=1,streams=lanes3"));
  const Tolerance& f16 = kTolerances[2];
  ASSERT_EQ(f16.math, SeqDenseMath::kTensorF16);
  // The kernels: wgmma (the default on the H200), mma.sync; then the default
  // into rows two bytes off 16-byte alignment (the output stage's one-channel
  // stores instead of 16-byte units).
  struct Variant {
    const char* label;
    const char* var;
    const char* value;
    uint32_t shift;
  };
  const Variant variants[] = {
      {"wgmma where the GPU has it", nullptr, nullptr, 0},
      {"mma.sync", "SEQKV_DENSE_WGMMA", "0", 0},
      {"wgmma where the GPU has it, rows 2 bytes off alignment", nullptr, nullptr, 2}};
  std::vector<std::vector<uint8_t>> first;  // the first variant's K and V, per case
  for (const Variant& x : variants) {
    SCOPED_TRACE(x.label);
    if (x.var != nullptr) ::setenv(x.var, x.value, 1);
    std::vector<std::unique_ptr<Buffer>> keep;
    std::vector<Status> statuses;
    RunCases(cases, f16.math, &keep, &statuses, x.shift);
    if (x.var != nullptr) ::unsetenv(x.var);
    ASSERT_FALSE(HasFatalFailure());
    for (size_t i = 0; i < cases.size(); ++i) {
      ASSERT_TRUE(statuses[i].ok()) << i << ": " << statuses[i].ToString();
      if (x.shift == 0) {
        ExpectWithin(f16, cases[i], *keep[3 * i + 1], *keep[3 * i + 2],
                     std::to_string(i) + " (d=128, " + x.label + ")");
      }
      for (int kv = 0; kv < 2; ++kv) {
        std::vector<uint8_t> got = keep[3 * i + 1 + kv]->Download();
        ASSERT_GE(got.size(), x.shift);
        for (uint32_t b = 0; b < x.shift; ++b) EXPECT_EQ(got[b], kPoison) << "case " << i << " byte " << b;
        got.erase(got.begin(), got.begin() + x.shift);
        if (first.size() < 2 * cases.size()) {
          first.push_back(std::move(got));
        } else {
          // The same bytes: the same FP16 products, summed in float32 by the
          // same tensor cores in the same k order (measured on the H200,
          // 2026-12-01: not one of 1.2 million keys differed between wgmma
          // and mma.sync), and the same output arithmetic however it stores.
          EXPECT_TRUE(got == first[2 * i + kv]) << "case " << i << " tensor " << kv;
        }
      }
    }
  }
  // Into paged caches: the same bytes at their pages (and a block-table
  // entry out of range is OUT_OF_RANGE).
  for (size_t i = 0; i < std::min<size_t>(cases.size(), 2); ++i) {
    SCOPED_TRACE("paged, case " + std::to_string(i));
    PagedInto(cases[i], f16.math, first[2 * i], first[2 * i + 1]);
    if (HasFatalFailure()) return;
  }
}

// Llama's RoPE over the whole head (rotate_half, rotary size = head size =
// 128: a mirrored table). The output stage then takes a key unit together
// with its partner 64 channels away (OutWriteHalfPairs in the FP16 kernels,
// OutWriteRowsVec's pair branch in the exact and int12 ones). The exact and
// int12 decodes must be DecodeChunk's bytes; the FP16 decode's bytes must be
// those of the one-channel output path (rows two bytes off 16-byte
// alignment), which rotates element by element. (The dev dumps' RoPE is 64
// channels; declared over the pair of heads it is simply another transform
// of the coding domain, the same for the encoder and every decoder.)
TEST_P(SeqDecodeGpuTest, HeadSize128FullRotaryDecodesTheReferenceAndTheOneChannelPathsBytes) {
  ASSERT_EQ(test_->shape.kv_heads % 2, 0u);
  ASSERT_EQ(test_->rope.style, RopeStyle::kRotateHalf);
  const auto full = [](const Chunk& c) {
    Chunk w = PairHeads(c);
    w.rope.dim = w.shape.head_dim;
    return w;
  };
  ASSERT_NO_FATAL_FAILURE(UseHeadSize128Profile(full(*calibration_)));

  const Chunk test = full(*test_);
  ASSERT_EQ(test.rope.dim, 128u);
  const bool all = backend() == Backend::kCuda;
  std::vector<Coded> cases;
  cases.push_back(Code(Slice(test, 650, 37), "seq:delta=2,streams=lanes3"));  // a partial tile
  cases.push_back(Code(Slice(test, 60, 100), "seq:delta=1,streams=lanes3,arith=int12"));
  if (all) cases.push_back(Code(Slice(test, 0, 256), "seq:delta=1,streams=lanes2"));
  if (all) cases.push_back(Code(Slice(test, 450, 64), "seq:delta=0.15,streams=lanes3"));  // escapes
  ASSERT_FALSE(HasFailure());
  ASSERT_NO_FATAL_FAILURE(DecodeEachExactly(cases));

  std::vector<std::vector<uint8_t>> aligned;  // the 16-byte path's K and V, per case
  for (const uint32_t shift : {0u, 2u}) {
    SCOPED_TRACE("f16, rows " + std::to_string(shift) + " bytes off alignment");
    std::vector<std::unique_ptr<Buffer>> keep;
    std::vector<Status> statuses;
    ASSERT_NO_FATAL_FAILURE(RunCases(cases, SeqDenseMath::kTensorF16, &keep, &statuses, shift));
    for (size_t i = 0; i < cases.size(); ++i) {
      ASSERT_TRUE(statuses[i].ok()) << i << ": " << statuses[i].ToString();
      for (int kv = 0; kv < 2; ++kv) {
        std::vector<uint8_t> got = keep[3 * i + 1 + kv]->Download();
        ASSERT_GE(got.size(), shift);
        got.erase(got.begin(), got.begin() + shift);
        if (cases[i].header.codec_spec.find("arith=int12") != std::string::npos) {  // exact on every path
          EXPECT_TRUE(got == (kv == 0 ? cases[i].reference.k : cases[i].reference.v)) << i << " " << kv;
        }
        if (shift == 0) {
          aligned.push_back(std::move(got));
        } else {
          EXPECT_TRUE(got == aligned[2 * i + kv]) << "case " << i << " tensor " << kv;
        }
      }
    }
  }
}

// The split lane kernel for any head size (SEQKV_SPLIT_GENERIC=1: its
// tables in shared memory, a loop over a lane's components) decodes what the
// head-size-64 kernel decodes, int32 and FP16 symbols, escapes included: the
// test profile has head_dim 64 only. (kCpu: the reference both times.)
TEST_P(SeqDecodeGpuTest, SplitLanesAnyHeadSizeKernelDecodesTheSameBytes) {
  std::vector<Coded> cases;
  cases.push_back(Code(Slice(*test_, 300, 256), "seq:delta=1,streams=lanes3"));
  cases.push_back(Code(Slice(*test_, 450, 64), "seq:delta=0.15,streams=lanes3"));
  cases.push_back(Code(Slice(*test_, 600, 40), "seq:delta=1000,streams=lanes3"));
  for (const SeqDenseMath math : {SeqDenseMath::kExact, SeqDenseMath::kTensorF16}) {
    std::vector<std::vector<uint8_t>> outputs[2];
    for (const bool generic : {false, true}) {
      if (generic) ::setenv("SEQKV_SPLIT_GENERIC", "1", 1);
      std::vector<std::unique_ptr<Buffer>> keep;
      std::vector<Status> statuses;
      ASSERT_NO_FATAL_FAILURE(RunCases(cases, math, &keep, &statuses));
      ::unsetenv("SEQKV_SPLIT_GENERIC");
      for (size_t i = 0; i < cases.size(); ++i) {
        ASSERT_TRUE(statuses[i].ok()) << i << ": " << statuses[i].ToString();
        outputs[generic].push_back(keep[3 * i + 1]->Download());
        outputs[generic].push_back(keep[3 * i + 2]->Download());
        if (math == SeqDenseMath::kExact) {
          EXPECT_TRUE(outputs[generic][2 * i] == cases[i].reference.k) << i;
          EXPECT_TRUE(outputs[generic][2 * i + 1] == cases[i].reference.v) << i;
        }
      }
    }
    for (size_t i = 0; i < outputs[0].size(); ++i) EXPECT_TRUE(outputs[0][i] == outputs[1][i]) << i;
  }
}

// The RoPE table the output stage reads: MakeRopeTable's cos/sin, and
// `mirrored` (the output stage then reads a rotate_half unit's cos/sin from
// the first half) exactly when both halves of every position hold the same
// bits: so for rotate_half tables, never for interleaved ones.
TEST_P(SeqDecodeGpuTest, RopeTableIsTheReferencesAndMirroredOnlyForRotateHalf) {
  for (const RopeStyle style : {RopeStyle::kRotateHalf, RopeStyle::kInterleaved}) {
    const RopeParams rope{style, 10000.0, 64};
    internal::DeviceRope table(backend());
    ASSERT_TRUE(table.Ensure(rope, 128, 300).ok());
    const seqkv::internal::RopeTable ref = seqkv::internal::MakeRopeTable(rope, 128, 0, 300);
    ASSERT_EQ(table.rotary_dim(), ref.rotary_dim);
    std::vector<float> cos(ref.cos.size()), sin(ref.sin.size());
    ASSERT_TRUE(BackendCopyOut(backend(), cos.data(), table.cos(), cos.size() * 4).ok());
    ASSERT_TRUE(BackendCopyOut(backend(), sin.data(), table.sin(), sin.size() * 4).ok());
    EXPECT_EQ(0, std::memcmp(cos.data(), ref.cos.data(), cos.size() * 4));
    EXPECT_EQ(0, std::memcmp(sin.data(), ref.sin.data(), sin.size() * 4));
    EXPECT_EQ(table.mirrored(), style == RopeStyle::kRotateHalf) << static_cast<int>(style);
    // The FP16 output stage's pairs: cos and sin of the same channels, each
    // rounded to nearest even; the first half's channels only when mirrored.
    const uint32_t cols = table.half_cols();
    EXPECT_EQ(cols, table.mirrored() ? ref.rotary_dim / 2 : ref.rotary_dim);
    std::vector<uint32_t> cs(size_t{300} * cols);
    ASSERT_TRUE(BackendCopyOut(backend(), cs.data(), table.cs_half(), cs.size() * 4).ok());
    uint64_t bad = 0;
    for (size_t pos = 0; pos < 300; ++pos) {
      for (uint32_t j = 0; j < cols; ++j) {
        const size_t at = pos * ref.rotary_dim + j;
        const uint32_t want = uint32_t{FloatToHalf(ref.cos[at])} | uint32_t{FloatToHalf(ref.sin[at])} << 16;
        bad += cs[pos * cols + j] != want;
      }
    }
    EXPECT_EQ(bad, 0u) << static_cast<int>(style);
  }
}

// arith=int12's operand tables as the int8 tensor-core kernels read them
// (Int12Tables): each int12 value is 64 hi + lo with lo in [-32, 31], at
// [row = output column][K] of its matrix, and the exponents [G][3].
TEST_P(SeqDecodeGpuTest, Int12TablesHoldTheFixedPointOperandsAsInt8Halves) {
  const SeqProfile& p = *profile_;
  const std::vector<seqkv::internal::SeqFixedGroup> fixed = seqkv::internal::SeqFixedGroups(p);
  internal::Int12Tables tables;
  ASSERT_TRUE(tables.Ensure(backend(), p, fixed).ok());
  const uint32_t d = p.head_dim, G = p.groups(), blocks = (p.features() - 1) / d;
  const size_t dd = size_t{d} * d;
  auto download = [&](const void* src, size_t bytes) {
    std::vector<int8_t> host(bytes);
    EXPECT_TRUE(BackendCopyOut(backend(), host.data(), src, bytes).ok());
    return host;
  };
  const std::vector<int8_t> w = blocks > 0 ? download(tables.w, size_t{G} * blocks * 2 * dd) : std::vector<int8_t>{};
  const std::vector<int8_t> u = download(tables.u, size_t{G} * 2 * dd), v = download(tables.v, size_t{G} * 2 * dd);
  std::vector<int32_t> exps(size_t{G} * 3);
  ASSERT_TRUE(BackendCopyOut(backend(), exps.data(), tables.exps, exps.size() * 4).ok());
  EXPECT_EQ(blocks > 0, tables.w != nullptr);
  uint64_t bad = 0;
  // hi/lo pair at `at` (hi) and `at + dd` (lo) against the int12 value n.
  auto check = [&](const std::vector<int8_t>& m, size_t at, int32_t n) {
    const int32_t hi = m[at], lo = m[at + dd];
    bad += (hi * 64 + lo != n) || lo < -32 || lo > 31;
  };
  for (uint32_t g = 0; g < G; ++g) {
    EXPECT_EQ(exps[3 * g], fixed[g].ew);
    EXPECT_EQ(exps[3 * g + 1], fixed[g].ev);
    EXPECT_EQ(exps[3 * g + 2], fixed[g].eu);
    for (uint32_t k = 0; k < d; ++k) {
      for (uint32_t n = 0; n < d; ++n) {
        for (uint32_t b = 0; b < blocks; ++b) {  // W [c][j]: rows j, K = c
          check(w, (size_t{g} * blocks + b) * 2 * dd + size_t{n} * d + k, fixed[g].w[b * dd + size_t{k} * d + n]);
        }
        check(u, size_t{g} * 2 * dd + size_t{n} * d + k, fixed[g].u[size_t{n} * d + k]);  // U [i][j]: rows i, K = j
        check(v, size_t{g} * 2 * dd + size_t{n} * d + k, fixed[g].v[size_t{k} * d + n]);  // V [i][j]: rows j, K = i
      }
    }
  }
  EXPECT_EQ(bad, 0u);
}

INSTANTIATE_TEST_SUITE_P(Backends, SeqDecodeGpuTest,
                         ::testing::Combine(::testing::Values(Backend::kCpu, Backend::kCuda),
                                            ::testing::Values("same", "all", "mean")),
                         test::SeqGpuCaseName);

}  // namespace
}  // namespace seqkv::gpu

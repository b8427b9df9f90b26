// LosslessGpu (lossless:coder=rans) against the codec's CPU reference, on both
// backends: the CPU fallback always runs; the CUDA cases skip cleanly without
// a GPU (label gpu).
//
// Contract checked here (docs/gpu.md): decode writes exactly the original
// bf16 values into the contiguous and the paged layouts, every destination
// element written and nothing else touched; encode writes exactly the
// reference's sections; a corrupted coded section is accepted or rejected
// exactly as the reference decides (and, when accepted, decodes to the same
// values); a bad block table entry is OUT_OF_RANGE.
#include "seqkv/gpu/lossless.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <memory>
#include <numeric>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "seqkv/codec/codec.h"
#include "seqkv/codec/format.h"
#include "seqkv/codec/safetensors.h"
#include "gpu/backend_buffer.h"
#include "util/test_util.h"

namespace seqkv::gpu {
namespace {

constexpr uint8_t kPoison = 0xFF;
constexpr char kSpec[] = "lossless:coder=rans";

using Buffer = test::BackendBuffer;

struct Case {
  Chunk chunk;
  std::vector<uint8_t> encoded;  // the reference's container
  ChunkHeader header;
};

Case MakeCase(Chunk chunk) {
  Case c;
  c.chunk = std::move(chunk);
  auto codec = MakeCodec(kSpec);
  EXPECT_TRUE(codec.ok());
  auto bytes = EncodeChunk(c.chunk, **codec);
  EXPECT_TRUE(bytes.ok()) << bytes.status().ToString();
  c.encoded = std::move(*bytes);
  auto header = ParseChunkHeader(c.encoded);
  EXPECT_TRUE(header.ok());
  c.header = *header;
  return c;
}

// Random chunks of several shapes (head_dim below and above a warp, partial
// rANS blocks, multi-block layers) and, when present, a dev dump.
std::vector<Case> Cases(uint64_t seed) {
  std::vector<Case> cases;
  const KvShape shapes[] = {{1, 1, 1, 8}, {2, 3, 17, 40}, {3, 2, 300, 64}, {2, 8, 256, 128}, {1, 1, 1000, 96}};
  for (const KvShape& s : shapes) cases.push_back(MakeCase(test::RandomChunk(s, DType::kBF16, seed++)));
  const std::string dump = test::DevDump("doc01.safetensors");
  if (!dump.empty()) {
    auto d = ReadKvDump(dump);
    EXPECT_TRUE(d.ok());
    if (d.ok()) cases.push_back(MakeCase(d->chunk));
  }
  return cases;
}

class LosslessGpuTest : public ::testing::TestWithParam<Backend> {
 protected:
  void SetUp() override {
    auto ll = LosslessGpu::CreateFor(GetParam());
    if (!ll.ok()) GTEST_SKIP() << ll.status().ToString();
    ll_.emplace(*ll);
  }
  const LosslessGpu& ll() const { return *ll_; }
  Backend backend() const { return GetParam(); }

  // Runs a decode batch; returns the statuses.
  std::vector<Status> RunDecode(const LosslessDecodeArgs& args) {
    EXPECT_TRUE(ll().CanImplement(args).ok());
    Buffer workspace(backend(), ll().WorkspaceBytes(args));
    std::vector<Status> statuses;
    EXPECT_TRUE(ll().Decode(args, workspace.get(), workspace.size(), nullptr, &statuses).ok());
    EXPECT_TRUE(ll().CollectStatuses(workspace.get(), nullptr, &statuses).ok());
    return statuses;
  }

  std::optional<LosslessGpu> ll_;
};

TEST_P(LosslessGpuTest, DecodesContiguousExactly) {
  std::vector<Case> cases = Cases(1);
  std::mt19937_64 rng(5);
  std::vector<std::unique_ptr<Buffer>> keep;
  std::vector<LosslessDecodeItem> items;
  struct Out {
    uint64_t offset, out_tokens;
    Buffer *k, *v;
  };
  std::vector<Out> outs;
  for (const Case& c : cases) {
    keep.push_back(std::make_unique<Buffer>(backend(), c.encoded));
    auto item = MakeLosslessDecodeItem(c.header, keep.back()->get());
    ASSERT_TRUE(item.ok()) << item.status().ToString();
    const KvShape& s = c.chunk.shape;
    Out o;
    o.offset = rng() % 7;
    o.out_tokens = o.offset + s.tokens + rng() % 5;
    const uint64_t bytes = uint64_t{s.layers} * s.kv_heads * o.out_tokens * s.head_dim * 2;
    keep.push_back(std::make_unique<Buffer>(backend(), std::vector<uint8_t>(bytes, kPoison)));
    o.k = keep.back().get();
    keep.push_back(std::make_unique<Buffer>(backend(), std::vector<uint8_t>(bytes, kPoison)));
    o.v = keep.back().get();
    item->token_offset = o.offset;
    item->k_out = o.k->get();
    item->v_out = o.v->get();
    item->out_tokens = o.out_tokens;
    items.push_back(*item);
    outs.push_back(o);
  }
  LosslessDecodeArgs args;
  args.items = items;
  std::vector<Status> statuses = RunDecode(args);
  for (size_t i = 0; i < cases.size(); ++i) {
    ASSERT_TRUE(statuses[i].ok()) << i << ": " << statuses[i].ToString();
    const KvShape& s = cases[i].chunk.shape;
    const uint64_t row = uint64_t{s.head_dim} * 2;
    for (int kv = 0; kv < 2; ++kv) {
      const std::vector<uint8_t>& ref = kv ? cases[i].chunk.v : cases[i].chunk.k;
      std::vector<uint8_t> want(uint64_t{s.layers} * s.kv_heads * outs[i].out_tokens * row, kPoison);
      for (uint64_t lh = 0; lh < uint64_t{s.layers} * s.kv_heads; ++lh) {
        std::memcpy(&want[(lh * outs[i].out_tokens + outs[i].offset) * row], &ref[lh * s.tokens * row], s.tokens * row);
      }
      EXPECT_TRUE((kv ? outs[i].v : outs[i].k)->Download() == want) << "case " << i << " tensor " << kv;
    }
  }
}

TEST_P(LosslessGpuTest, DecodesIntoThePagedCacheExactly) {
  std::vector<Case> cases = Cases(20);
  const uint32_t bs = 16;
  // One cache per layer index, shared by all chunks, each chunk in its own
  // shuffled blocks; only chunks with the cache's (heads, head_dim) share it,
  // so group by shape: one batch per case keeps the check simple.
  for (size_t i = 0; i < cases.size(); ++i) {
    const Case& c = cases[i];
    const KvShape& s = c.chunk.shape;
    const uint64_t offset = 5;
    const uint64_t blocks_needed = (offset + s.tokens + bs - 1) / bs;
    const uint32_t num_blocks = static_cast<uint32_t>(blocks_needed + 3);
    std::vector<int32_t> table(num_blocks);
    std::iota(table.begin(), table.end(), 0);
    std::shuffle(table.begin(), table.end(), std::mt19937(static_cast<uint32_t>(i)));
    const uint64_t row = uint64_t{s.head_dim} * 2;
    const uint64_t cache_bytes = uint64_t{num_blocks} * 2 * bs * s.kv_heads * row;
    std::vector<std::unique_ptr<Buffer>> caches;
    std::vector<void*> cache_ptrs;
    for (uint32_t l = 0; l < s.layers; ++l) {
      caches.push_back(std::make_unique<Buffer>(backend(), std::vector<uint8_t>(cache_bytes, kPoison)));
      cache_ptrs.push_back(caches.back()->get());
    }
    std::vector<uint8_t> ptr_bytes(cache_ptrs.size() * sizeof(void*));
    std::memcpy(ptr_bytes.data(), cache_ptrs.data(), ptr_bytes.size());
    Buffer ptrs(backend(), ptr_bytes);
    std::vector<uint8_t> table_bytes(table.size() * 4);
    std::memcpy(table_bytes.data(), table.data(), table_bytes.size());
    Buffer table_dev(backend(), table_bytes);
    Buffer chunk(backend(), c.encoded);
    auto item = MakeLosslessDecodeItem(c.header, chunk.get());
    ASSERT_TRUE(item.ok());
    item->token_offset = offset;
    item->layer_caches = reinterpret_cast<void* const*>(ptrs.get());
    item->block_table = reinterpret_cast<const int32_t*>(table_dev.get());
    item->block_table_entries = table.size();
    LosslessDecodeArgs args;
    args.destination = KvDestination::kPaged;
    args.block_size = bs;
    args.num_blocks = num_blocks;
    args.items = std::span<const LosslessDecodeItem>(&*item, 1);
    std::vector<Status> statuses = RunDecode(args);
    ASSERT_TRUE(statuses[0].ok()) << statuses[0].ToString();
    for (uint32_t l = 0; l < s.layers; ++l) {
      const std::vector<uint8_t> want =
          test::PagedLayerImage(s, l, c.chunk.k, c.chunk.v, offset, table, bs, num_blocks, kPoison);
      EXPECT_TRUE(caches[l]->Download() == want) << "case " << i << " layer " << l;
    }
    // A block table entry past num_blocks: OUT_OF_RANGE for this chunk.
    std::vector<int32_t> bad = table;
    bad[(offset + s.tokens - 1) / bs] = static_cast<int32_t>(num_blocks);
    std::memcpy(table_bytes.data(), bad.data(), table_bytes.size());
    ASSERT_TRUE(BackendCopyIn(backend(), table_dev.get(), table_bytes.data(), table_bytes.size()).ok());
    EXPECT_EQ(RunDecode(args)[0].code(), StatusCode::kOutOfRange);
  }
}

TEST_P(LosslessGpuTest, EncodeWritesTheReferenceBytes) {
  std::vector<Case> cases = Cases(40);
  std::mt19937_64 rng(9);
  std::vector<std::unique_ptr<Buffer>> keep;
  std::vector<LosslessEncodeItem> items;
  for (const Case& c : cases) {
    const KvShape& s = c.chunk.shape;
    const uint64_t row = uint64_t{s.head_dim} * 2;
    LosslessEncodeItem item;
    item.shape = s;
    item.token_offset = rng() % 4;
    item.in_tokens = item.token_offset + s.tokens + rng() % 3;
    for (int kv = 0; kv < 2; ++kv) {
      const std::vector<uint8_t>& src = kv ? c.chunk.v : c.chunk.k;
      std::vector<uint8_t> in(uint64_t{s.layers} * s.kv_heads * item.in_tokens * row, 0x5A);
      for (uint64_t lh = 0; lh < uint64_t{s.layers} * s.kv_heads; ++lh) {
        std::memcpy(&in[(lh * item.in_tokens + item.token_offset) * row], &src[lh * s.tokens * row], s.tokens * row);
      }
      keep.push_back(std::make_unique<Buffer>(backend(), in));
      (kv ? item.v_in : item.k_in) = keep.back()->get();
      keep.push_back(std::make_unique<Buffer>(backend(), std::vector<uint8_t>(LosslessMaxCodedBytes(s), kPoison)));
      item.coded[kv] = keep.back()->get();
      keep.push_back(std::make_unique<Buffer>(backend(), LosslessRawBytes(s)));
      item.raw[kv] = keep.back()->get();
    }
    items.push_back(item);
  }
  LosslessEncodeArgs args;
  args.items = items;
  ASSERT_TRUE(ll().CanImplement(args).ok());
  Buffer workspace(backend(), ll().WorkspaceBytes(args));
  std::vector<Status> statuses;
  ASSERT_TRUE(ll().Encode(args, workspace.get(), workspace.size(), nullptr, &statuses).ok());
  std::vector<uint64_t> sizes;
  ASSERT_TRUE(ll().CollectStatuses(workspace.get(), nullptr, &statuses, &sizes).ok());
  ASSERT_EQ(sizes.size(), 2 * cases.size());
  for (size_t i = 0; i < cases.size(); ++i) {
    ASSERT_TRUE(statuses[i].ok()) << statuses[i].ToString();
    const Case& c = cases[i];
    for (int kv = 0; kv < 2; ++kv) {
      const SectionInfo& coded = c.header.sections[2 * kv];
      const SectionInfo& raw = c.header.sections[2 * kv + 1];
      ASSERT_EQ(sizes[2 * i + kv], coded.length) << "case " << i << " tensor " << kv;
      std::vector<uint8_t> got(coded.length), got_raw(raw.length);
      ASSERT_TRUE(BackendCopyOut(backend(), got.data(), items[i].coded[kv], got.size()).ok());
      ASSERT_TRUE(BackendCopyOut(backend(), got_raw.data(), items[i].raw[kv], got_raw.size()).ok());
      EXPECT_TRUE(std::equal(got.begin(), got.end(), c.encoded.begin() + coded.offset)) << "case " << i;
      EXPECT_TRUE(std::equal(got_raw.begin(), got_raw.end(), c.encoded.begin() + raw.offset)) << "case " << i;
    }
  }
}

// The same sections from vLLM's paged cache (shuffled blocks, unaligned
// positions); a block table entry outside the cache: OUT_OF_RANGE alone.
TEST_P(LosslessGpuTest, EncodeFromThePagedCacheWritesTheReferenceBytes) {
  std::vector<Case> cases = Cases(6);
  const uint32_t bs = 16;
  uint32_t num_blocks = 0;
  for (size_t i = 0; i < cases.size(); ++i) {
    num_blocks = std::max(num_blocks, test::BlocksFor(i * 5, cases[i].chunk.shape.tokens, bs) + 2);
  }
  std::vector<test::PagedSource> sources;
  std::vector<std::unique_ptr<Buffer>> keep;
  std::vector<LosslessEncodeItem> items;
  for (size_t i = 0; i < cases.size(); ++i) {
    const KvShape& s = cases[i].chunk.shape;
    sources.push_back(test::MakePagedSource(backend(), cases[i].chunk, i * 5, bs, num_blocks, 50 + i));
    LosslessEncodeItem item;
    item.shape = s;
    item.token_offset = i * 5;
    item.layer_caches = sources.back().layer_caches();
    item.block_table = sources.back().block_table();
    item.block_table_entries = sources.back().host_table.size();
    for (int kv = 0; kv < 2; ++kv) {
      keep.push_back(std::make_unique<Buffer>(backend(), LosslessMaxCodedBytes(s)));
      item.coded[kv] = keep.back()->get();
      keep.push_back(std::make_unique<Buffer>(backend(), LosslessRawBytes(s)));
      item.raw[kv] = keep.back()->get();
    }
    items.push_back(item);
  }
  LosslessEncodeArgs args;
  args.source = KvLayout::kPaged;
  args.block_size = bs;
  args.num_blocks = num_blocks;
  args.items = items;
  auto run = [&](std::vector<Status>* statuses, std::vector<uint64_t>* sizes) {
    ASSERT_TRUE(ll().CanImplement(args).ok());
    Buffer workspace(backend(), ll().WorkspaceBytes(args));
    ASSERT_TRUE(ll().Encode(args, workspace.get(), workspace.size(), nullptr, statuses).ok());
    ASSERT_TRUE(ll().CollectStatuses(workspace.get(), nullptr, statuses, sizes).ok());
  };
  std::vector<Status> statuses;
  std::vector<uint64_t> sizes;
  run(&statuses, &sizes);
  for (size_t i = 0; i < cases.size(); ++i) {
    ASSERT_TRUE(statuses[i].ok()) << statuses[i].ToString();
    for (int kv = 0; kv < 2; ++kv) {
      const SectionInfo& coded = cases[i].header.sections[2 * kv];
      const SectionInfo& raw = cases[i].header.sections[2 * kv + 1];
      ASSERT_EQ(sizes[2 * i + kv], coded.length) << "case " << i << " tensor " << kv;
      std::vector<uint8_t> got(coded.length), got_raw(raw.length);
      ASSERT_TRUE(BackendCopyOut(backend(), got.data(), items[i].coded[kv], got.size()).ok());
      ASSERT_TRUE(BackendCopyOut(backend(), got_raw.data(), items[i].raw[kv], got_raw.size()).ok());
      EXPECT_TRUE(std::equal(got.begin(), got.end(), cases[i].encoded.begin() + coded.offset)) << "case " << i;
      EXPECT_TRUE(std::equal(got_raw.begin(), got_raw.end(), cases[i].encoded.begin() + raw.offset)) << "case " << i;
    }
  }
  sources[1].SetEntry(0, -1);
  run(&statuses, &sizes);
  EXPECT_EQ(statuses[1].code(), StatusCode::kOutOfRange) << statuses[1].ToString();
  for (size_t i = 0; i < cases.size(); ++i) {
    if (i != 1) {
      EXPECT_TRUE(statuses[i].ok()) << i << ": " << statuses[i].ToString();
    }
  }
}

// Corrupted coded sections: the backend accepts or rejects each exactly as
// the codec's reference does, and an accepted one decodes to the same values.
TEST_P(LosslessGpuTest, CorruptionIsJudgedLikeTheReference) {
  Case c = MakeCase(test::RandomChunk(KvShape{2, 2, 700, 64}, DType::kBF16, 77));
  auto codec = MakeCodec(kSpec);
  ASSERT_TRUE(codec.ok());
  std::mt19937 rng(13);
  const int kTrials = 64;
  std::vector<std::vector<uint8_t>> variants;
  for (int t = 0; t < kTrials; ++t) {
    std::vector<uint8_t> v = c.encoded;
    const SectionInfo& sec = c.header.sections[(t % 2) * 2];  // K or V coded section
    const int flips = 1 + t % 3;
    for (int f = 0; f < flips; ++f) {
      // Half the trials hit the table and directory area (the first 3 % of the section).
      const uint64_t span = t % 4 < 2 ? std::max<uint64_t>(sec.length / 32, 8) : sec.length;
      const uint64_t at = sec.offset + rng() % span;
      v[at] = static_cast<uint8_t>(v[at] ^ (1u << (rng() % 8)));
    }
    variants.push_back(std::move(v));
  }
  std::vector<std::unique_ptr<Buffer>> keep;
  std::vector<LosslessDecodeItem> items;
  const KvShape& s = c.chunk.shape;
  const uint64_t bytes = c.chunk.TensorBytes();
  for (const auto& v : variants) {
    keep.push_back(std::make_unique<Buffer>(backend(), v));
    auto item = MakeLosslessDecodeItem(c.header, keep.back()->get());
    ASSERT_TRUE(item.ok());
    keep.push_back(std::make_unique<Buffer>(backend(), bytes));
    item->k_out = keep.back()->get();
    keep.push_back(std::make_unique<Buffer>(backend(), bytes));
    item->v_out = keep.back()->get();
    item->out_tokens = s.tokens;
    items.push_back(*item);
  }
  LosslessDecodeArgs args;
  args.items = items;
  std::vector<Status> statuses = RunDecode(args);
  int rejected = 0;
  for (int t = 0; t < kTrials; ++t) {
    // The reference on the same sections (without the container's checksum).
    std::vector<SectionView> views;
    for (const SectionInfo& info : c.header.sections) {
      views.push_back({info.type, std::span<const uint8_t>(variants[t].data() + info.offset, info.length)});
    }
    Chunk ref;
    ref.shape = s;
    ref.dtype = DType::kBF16;
    ref.tokens.assign(s.tokens, 0);
    const Status want = (*codec)->Decode(views, &ref);
    ASSERT_EQ(statuses[t].ok(), want.ok()) << "trial " << t << ": gpu " << statuses[t].ToString() << ", reference "
                                           << want.ToString();
    if (!want.ok()) {
      EXPECT_EQ(statuses[t].code(), StatusCode::kDataLoss);
      ++rejected;
      continue;
    }
    EXPECT_TRUE(keep[3 * t + 1]->Download() == ref.k) << "trial " << t;
    EXPECT_TRUE(keep[3 * t + 2]->Download() == ref.v) << "trial " << t;
  }
  EXPECT_GT(rejected, kTrials * 3 / 4);
}

TEST_P(LosslessGpuTest, HostChecksRejectBadItems) {
  Case c = MakeCase(test::RandomChunk(KvShape{1, 1, 40, 64}, DType::kBF16, 3));
  Buffer chunk(backend(), c.encoded);
  auto item = MakeLosslessDecodeItem(c.header, chunk.get());
  ASSERT_TRUE(item.ok());
  LosslessDecodeItem short_raw = *item;
  short_raw.raw_bytes[1] -= 1;
  LosslessDecodeItem no_out = *item;  // k_out/v_out null
  LosslessDecodeItem past = *item;
  Buffer out(backend(), c.chunk.TensorBytes());
  past.k_out = past.v_out = out.get();
  past.out_tokens = c.chunk.shape.tokens - 1;
  std::vector<LosslessDecodeItem> items = {short_raw, no_out, past};
  LosslessDecodeArgs args;
  args.items = items;
  std::vector<Status> statuses = RunDecode(args);
  EXPECT_EQ(statuses[0].code(), StatusCode::kDataLoss);
  EXPECT_EQ(statuses[1].code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(statuses[2].code(), StatusCode::kOutOfRange);
  // Chunks the GPU path does not take.
  Case zstd;
  zstd.chunk = test::RandomChunk(KvShape{1, 1, 4, 64}, DType::kBF16, 1);
  auto bytes = EncodeChunk(zstd.chunk, **MakeCodec("lossless"));
  ASSERT_TRUE(bytes.ok());
  auto header = ParseChunkHeader(*bytes);
  ASSERT_TRUE(header.ok());
  EXPECT_EQ(MakeLosslessDecodeItem(*header, bytes->data()).status().code(), StatusCode::kUnimplemented);
}

INSTANTIATE_TEST_SUITE_P(Backends, LosslessGpuTest, ::testing::Values(Backend::kCpu, Backend::kCuda),
                         [](const auto& info) { return info.param == Backend::kCpu ? "Cpu" : "Cuda"; });

}  // namespace
}  // namespace seqkv::gpu

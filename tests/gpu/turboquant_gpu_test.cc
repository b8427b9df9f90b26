// TurboQuantGpu against the codec's CPU reference, on both backends: the CPU
// fallback always runs; the CUDA cases skip cleanly without a GPU (label gpu).
//
// Contract checked here (docs/gpu.md): decode within 1 bf16 ulp of the
// reference per element (the count of inexact elements is printed; it is
// expected to be 0), every destination element written and nothing else
// touched; encode byte-identical to the reference.
#include "seqkv/gpu/turboquant.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <memory>
#include <numeric>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "seqkv/codec/codec.h"
#include "seqkv/codec/format.h"
#include "seqkv/codec/safetensors.h"
#include "seqkv/gpu/device.h"
#include "gpu/backend_buffer.h"
#include "util/test_util.h"

namespace seqkv::gpu {
namespace {

constexpr uint8_t kPoison = 0xFF;  // bf16 0xFFFF: a NaN no decode produces

std::string SpecFor(int bits, uint32_t seed) {
  return "turboquant:bits=" + std::to_string(bits) + ",outliers=0,seed=" + std::to_string(seed);
}

// Backend memory freed at scope exit.
using Buffer = test::BackendBuffer;

struct Case {
  Chunk chunk;
  int bits;
  uint32_t seed;
  std::vector<uint8_t> encoded;  // the reference's container
  ChunkHeader header;
  Chunk reference;  // DecodeChunk(encoded)
};

Case MakeCase(Chunk chunk, int bits, uint32_t seed) {
  Case c;
  c.chunk = std::move(chunk);
  c.bits = bits;
  c.seed = seed;
  auto codec = MakeCodec(SpecFor(bits, seed));
  EXPECT_TRUE(codec.ok());
  auto bytes = EncodeChunk(c.chunk, **codec);
  EXPECT_TRUE(bytes.ok()) << bytes.status().ToString();
  c.encoded = std::move(*bytes);
  auto header = ParseChunkHeader(c.encoded);
  EXPECT_TRUE(header.ok());
  c.header = *header;
  auto decoded = DecodeChunk(c.encoded);
  EXPECT_TRUE(decoded.ok());
  c.reference = std::move(*decoded);
  return c;
}

int OrderedBf16(uint16_t h) { return (h & 0x8000) ? -static_cast<int>(h & 0x7FFF) : static_cast<int>(h); }

// Compares bf16 buffers: equal bytes, or both non-NaN and within `ulps`.
struct Diff {
  uint64_t inexact = 0;
  uint64_t bad = 0;
  uint64_t first_bad = UINT64_MAX;
};
Diff CompareBf16(const std::vector<uint8_t>& got, const std::vector<uint8_t>& want, int ulps = 1) {
  Diff d;
  EXPECT_EQ(got.size(), want.size());
  for (uint64_t i = 0; i + 1 < std::min(got.size(), want.size()); i += 2) {
    const uint16_t a = static_cast<uint16_t>(got[i] | (got[i + 1] << 8));
    const uint16_t b = static_cast<uint16_t>(want[i] | (want[i + 1] << 8));
    if (a == b) continue;
    const bool nan = (a & 0x7FFF) > 0x7F80 || (b & 0x7FFF) > 0x7F80;
    if (!nan && std::abs(OrderedBf16(a) - OrderedBf16(b)) <= ulps) {
      ++d.inexact;
    } else {
      ++d.bad;
      d.first_bad = std::min(d.first_bad, i / 2);
    }
  }
  return d;
}

// Uploads a case's chunk and returns its decode item. With `aligned_sections`
// each section gets its own allocation (16-byte aligned: the kernels' prefetch
// path); otherwise the sections stay where the chunk header puts them (mostly
// unaligned: the direct-load path).
TurboQuantDecodeItem UploadCase(const TurboQuantGpu& tq, const Case& c, bool aligned_sections,
                                std::vector<std::unique_ptr<Buffer>>* keep) {
  keep->push_back(std::make_unique<Buffer>(tq, c.encoded.size()));
  keep->back()->Upload(c.encoded);
  auto item = MakeDecodeItem(c.header, keep->back()->get());
  EXPECT_TRUE(item.ok()) << item.status().ToString();
  if (!item.ok() || !aligned_sections) return item.ok() ? *item : TurboQuantDecodeItem{};
  const uint8_t** ptrs[4] = {&item->k_norms, &item->k_codes, &item->v_norms, &item->v_codes};
  for (int sec = 0; sec < 4; ++sec) {
    const SectionInfo& info = c.header.sections[sec];
    keep->push_back(std::make_unique<Buffer>(tq, info.length));
    keep->back()->Upload(std::vector<uint8_t>(c.encoded.begin() + info.offset,
                                              c.encoded.begin() + info.offset + info.length));
    *ptrs[sec] = keep->back()->get();
  }
  return *item;
}

class TurboQuantGpuTest : public ::testing::TestWithParam<Backend> {
 protected:
  void SetUp() override {
    auto tq = TurboQuantGpu::CreateFor(GetParam());
    if (!tq.ok()) GTEST_SKIP() << tq.status().ToString();
    tq_.emplace(*tq);
  }
  const TurboQuantGpu& tq() const { return *tq_; }

  // Decodes `cases` into per-case contiguous outputs (with a token offset and
  // spare tokens around) and checks them against the reference.
  void CheckContiguous(const std::vector<Case>& cases, uint64_t seed, bool aligned_sections = false) {
    std::mt19937_64 rng(seed);
    std::vector<std::unique_ptr<Buffer>> keep;
    std::vector<TurboQuantDecodeItem> items;
    struct Out {
      uint64_t offset, out_tokens;
      Buffer* k;
      Buffer* v;
    };
    std::vector<Out> outs;
    for (const Case& c : cases) {
      std::optional<TurboQuantDecodeItem> item = UploadCase(tq(), c, aligned_sections, &keep);
      const KvShape& s = c.chunk.shape;
      Out o;
      o.offset = rng() % 7;
      o.out_tokens = o.offset + s.tokens + rng() % 5;
      const uint64_t bytes = uint64_t{s.layers} * s.kv_heads * o.out_tokens * s.head_dim * 2;
      keep.push_back(std::make_unique<Buffer>(tq(), bytes));
      o.k = keep.back().get();
      keep.push_back(std::make_unique<Buffer>(tq(), bytes));
      o.v = keep.back().get();
      ASSERT_TRUE(tq().Fill(o.k->get(), kPoison, bytes).ok());
      ASSERT_TRUE(tq().Fill(o.v->get(), kPoison, bytes).ok());
      item->token_offset = o.offset;
      item->k_out = o.k->get();
      item->v_out = o.v->get();
      item->out_tokens = o.out_tokens;
      items.push_back(*item);
      outs.push_back(o);
    }
    TurboQuantDecodeArgs args;
    args.destination = KvDestination::kContiguous;
    args.items = items;
    ASSERT_TRUE(tq().CanImplement(args).ok());
    Buffer workspace(tq(), tq().WorkspaceBytes(args));
    std::vector<Status> statuses;
    ASSERT_TRUE(tq().Decode(args, workspace.get(), workspace.size(), nullptr, &statuses).ok());
    ASSERT_TRUE(tq().CollectStatuses(workspace.get(), nullptr, &statuses).ok());
    for (size_t i = 0; i < cases.size(); ++i) {
      ASSERT_TRUE(statuses[i].ok()) << i << ": " << statuses[i].ToString();
      const Case& c = cases[i];
      const KvShape& s = c.chunk.shape;
      const uint64_t row = uint64_t{s.head_dim} * 2;
      for (int kv = 0; kv < 2; ++kv) {
        const std::vector<uint8_t>& ref = kv ? c.reference.v : c.reference.k;
        std::vector<uint8_t> want(uint64_t{s.layers} * s.kv_heads * outs[i].out_tokens * row, kPoison);
        for (uint64_t lh = 0; lh < uint64_t{s.layers} * s.kv_heads; ++lh) {
          std::memcpy(&want[(lh * outs[i].out_tokens + outs[i].offset) * row], &ref[lh * s.tokens * row],
                      s.tokens * row);
        }
        const Diff d = CompareBf16((kv ? outs[i].v : outs[i].k)->Download(), want);
        EXPECT_EQ(d.bad, 0u) << "case " << i << (kv ? " V" : " K") << " first bad element " << d.first_bad;
        if (d.inexact) std::printf("case %zu %s: %llu elements 1 ulp off\n", i, kv ? "V" : "K",
                                   static_cast<unsigned long long>(d.inexact));
        inexact_ += d.inexact;
      }
    }
  }

  // Decodes `cases` (one sequence, same L/H/D) into a paged cache through a
  // random block table and checks the whole cache image.
  void CheckPaged(const std::vector<Case>& cases, uint32_t block_size, uint64_t seed, bool aligned_sections = false) {
    std::mt19937_64 rng(seed);
    const KvShape& s0 = cases[0].chunk.shape;
    uint64_t total = 0;
    for (const Case& c : cases) total += c.chunk.shape.tokens;
    const uint64_t first_offset = rng() % block_size;  // the sequence starts mid-block
    const uint32_t table_len = static_cast<uint32_t>((first_offset + total + block_size - 1) / block_size);
    const uint32_t num_blocks = table_len + 3 + static_cast<uint32_t>(rng() % 5);
    std::vector<int32_t> table(num_blocks);
    std::iota(table.begin(), table.end(), 0);
    std::shuffle(table.begin(), table.end(), rng);
    table.resize(table_len);
    const uint64_t row = uint64_t{s0.head_dim} * 2;
    const uint64_t layer_bytes = uint64_t{num_blocks} * 2 * block_size * s0.kv_heads * row;

    std::vector<std::unique_ptr<Buffer>> layers;
    std::vector<void*> layer_ptrs;
    for (uint32_t l = 0; l < s0.layers; ++l) {
      layers.push_back(std::make_unique<Buffer>(tq(), layer_bytes));
      ASSERT_TRUE(tq().Fill(layers.back()->get(), kPoison, layer_bytes).ok());
      layer_ptrs.push_back(layers.back()->get());
    }
    Buffer layer_array(tq(), layer_ptrs.size() * sizeof(void*));
    ASSERT_TRUE(tq().CopyIn(layer_array.get(), layer_ptrs.data(), layer_ptrs.size() * sizeof(void*)).ok());
    Buffer table_buf(tq(), table.size() * 4);
    ASSERT_TRUE(tq().CopyIn(table_buf.get(), table.data(), table.size() * 4).ok());

    std::vector<std::unique_ptr<Buffer>> keep;
    std::vector<TurboQuantDecodeItem> items;
    uint64_t offset = first_offset;
    for (const Case& c : cases) {
      std::optional<TurboQuantDecodeItem> item = UploadCase(tq(), c, aligned_sections, &keep);
      item->token_offset = offset;
      item->layer_caches = reinterpret_cast<void* const*>(layer_array.get());
      item->block_table = reinterpret_cast<const int32_t*>(table_buf.get());
      item->block_table_entries = table.size();
      items.push_back(*item);
      offset += c.chunk.shape.tokens;
    }
    TurboQuantDecodeArgs args;
    args.destination = KvDestination::kPaged;
    args.block_size = block_size;
    args.num_blocks = num_blocks;
    args.items = items;
    ASSERT_TRUE(tq().CanImplement(args).ok());
    Buffer workspace(tq(), tq().WorkspaceBytes(args));
    std::vector<Status> statuses;
    ASSERT_TRUE(tq().Decode(args, workspace.get(), workspace.size(), nullptr, &statuses).ok());
    ASSERT_TRUE(tq().CollectStatuses(workspace.get(), nullptr, &statuses).ok());
    for (size_t i = 0; i < cases.size(); ++i) ASSERT_TRUE(statuses[i].ok()) << i << ": " << statuses[i].ToString();

    for (uint32_t l = 0; l < s0.layers; ++l) {
      std::vector<uint8_t> want(layer_bytes, kPoison);
      uint64_t pos = first_offset;
      for (const Case& c : cases) {
        const KvShape& s = c.chunk.shape;
        for (uint32_t t = 0; t < s.tokens; ++t, ++pos) {
          const uint64_t blk = static_cast<uint64_t>(table[pos / block_size]);
          for (int kv = 0; kv < 2; ++kv) {
            const std::vector<uint8_t>& ref = kv ? c.reference.v : c.reference.k;
            for (uint32_t h = 0; h < s.kv_heads; ++h) {
              std::memcpy(&want[(((blk * 2 + kv) * block_size + pos % block_size) * s.kv_heads + h) * row],
                          &ref[((uint64_t{l} * s.kv_heads + h) * s.tokens + t) * row], row);
            }
          }
        }
      }
      const Diff d = CompareBf16(layers[l]->Download(), want);
      EXPECT_EQ(d.bad, 0u) << "layer " << l << " first bad element " << d.first_bad;
      inexact_ += d.inexact;
    }
  }

  // Encodes `cases` from one contiguous buffer per case and compares bytes.
  // Encodes `cases` from the contiguous layout or from vLLM's paged cache
  // (shuffled blocks) and compares every section with the reference's.
  // `bad_block` (paged): that case's first block table entry points outside
  // the cache, and only that case must answer OUT_OF_RANGE.
  void CheckEncode(const std::vector<Case>& cases, uint64_t seed, KvLayout source = KvLayout::kContiguous,
                   int bad_block = -1) {
    std::mt19937_64 rng(seed);
    std::vector<std::unique_ptr<Buffer>> keep;
    std::vector<test::PagedSource> sources;
    std::vector<TurboQuantEncodeItem> items;
    std::vector<std::vector<Buffer*>> outs;
    const uint32_t bs = 16;
    uint32_t num_blocks = 0;
    for (const Case& c : cases) num_blocks = std::max(num_blocks, test::BlocksFor(3, c.chunk.shape.tokens, bs) + 2);
    for (const Case& c : cases) {
      const KvShape& s = c.chunk.shape;
      const uint64_t row = uint64_t{s.head_dim} * 2;
      TurboQuantEncodeItem item;
      item.params = {c.bits, c.seed};
      item.shape = s;
      item.token_offset = rng() % 4;
      item.in_tokens = item.token_offset + s.tokens + rng() % 3;
      if (source == KvLayout::kPaged) {
        sources.push_back(test::MakePagedSource(tq().backend(), c.chunk, item.token_offset, bs, num_blocks, rng()));
        if (static_cast<int>(items.size()) == bad_block) sources.back().SetEntry(0, -1);
        item.layer_caches = sources.back().layer_caches();
        item.block_table = sources.back().block_table();
        item.block_table_entries = sources.back().host_table.size();
      }
      Buffer* ins[2];
      for (int kv = 0; kv < 2 && source == KvLayout::kContiguous; ++kv) {
        std::vector<uint8_t> host(uint64_t{s.layers} * s.kv_heads * item.in_tokens * row, 0x7F);  // huge values outside the chunk
        const std::vector<uint8_t>& src = kv ? c.chunk.v : c.chunk.k;
        for (uint64_t lh = 0; lh < uint64_t{s.layers} * s.kv_heads; ++lh) {
          std::memcpy(&host[(lh * item.in_tokens + item.token_offset) * row], &src[lh * s.tokens * row],
                      s.tokens * row);
        }
        keep.push_back(std::make_unique<Buffer>(tq(), host.size()));
        keep.back()->Upload(host);
        ins[kv] = keep.back().get();
      }
      if (source == KvLayout::kContiguous) {
        item.k_in = ins[0]->get();
        item.v_in = ins[1]->get();
      }
      std::vector<Buffer*> o;
      const uint64_t sizes[4] = {TurboQuantNormBytes(s), TurboQuantCodeBytes(s, c.bits), TurboQuantNormBytes(s),
                                 TurboQuantCodeBytes(s, c.bits)};
      for (uint64_t size : sizes) {
        keep.push_back(std::make_unique<Buffer>(tq(), size));
        ASSERT_TRUE(tq().Fill(keep.back()->get(), 0xA5, size).ok());
        o.push_back(keep.back().get());
      }
      item.k_norms = o[0]->get();
      item.k_codes = o[1]->get();
      item.v_norms = o[2]->get();
      item.v_codes = o[3]->get();
      items.push_back(item);
      outs.push_back(o);
    }
    TurboQuantEncodeArgs args;
    args.source = source;
    args.block_size = bs;
    args.num_blocks = num_blocks;
    args.items = items;
    ASSERT_TRUE(tq().CanImplement(args).ok());
    Buffer workspace(tq(), tq().WorkspaceBytes(args));
    std::vector<Status> statuses;
    ASSERT_TRUE(tq().Encode(args, workspace.get(), workspace.size(), nullptr, &statuses).ok());
    ASSERT_TRUE(tq().CollectStatuses(workspace.get(), nullptr, &statuses).ok());
    for (size_t i = 0; i < cases.size(); ++i) {
      if (static_cast<int>(i) == bad_block) {
        EXPECT_EQ(statuses[i].code(), StatusCode::kOutOfRange) << statuses[i].ToString();
        continue;
      }
      ASSERT_TRUE(statuses[i].ok()) << i << ": " << statuses[i].ToString();
      for (int sec = 0; sec < 4; ++sec) {
        const SectionInfo& info = cases[i].header.sections[sec];
        std::vector<uint8_t> want(cases[i].encoded.begin() + info.offset,
                                  cases[i].encoded.begin() + info.offset + info.length);
        const std::vector<uint8_t> got = outs[i][sec]->Download();
        ASSERT_EQ(got.size(), want.size()) << "case " << i << " section " << sec + 1;
        uint64_t mismatched = 0;
        for (size_t b = 0; b < got.size(); ++b) mismatched += got[b] != want[b];
        EXPECT_EQ(mismatched, 0u) << "case " << i << " section " << sec + 1 << " of " << got.size() << " bytes";
      }
    }
  }

  std::optional<TurboQuantGpu> tq_;
  uint64_t inexact_ = 0;
};

std::vector<Case> RandomCases(uint64_t seed) {
  // Mixed shapes and widths in one batch: padded dims 32..1024 (one lane per
  // vector up to 128, 2-8 lanes above), non-power-of-two head_dims.
  const KvShape shapes[] = {{2, 3, 37, 128}, {1, 2, 16, 64}, {3, 1, 5, 96}, {2, 2, 9, 32}, {1, 1, 3, 256},
                            {1, 2, 11, 20},  {1, 1, 4, 300}, {1, 2, 3, 1024}};
  std::vector<Case> cases;
  int i = 0;
  for (const KvShape& s : shapes) {
    for (int bits = 1; bits <= 4; ++bits, ++i) {
      cases.push_back(MakeCase(test::RandomChunk(s, DType::kBF16, seed + i), bits, 0x5EED5EEDu + 977u * (i % 3)));
    }
  }
  return cases;
}

// Cuts a dump into chunks of `tokens` (at most `max_chunks`).
std::vector<Chunk> CutDump(const Chunk& dump, uint32_t tokens, int max_chunks) {
  std::vector<Chunk> out;
  const KvShape& s = dump.shape;
  const uint64_t row = uint64_t{s.head_dim} * DTypeSize(dump.dtype);
  for (uint32_t t0 = 0; t0 + tokens <= s.tokens && static_cast<int>(out.size()) < max_chunks; t0 += tokens) {
    Chunk c;
    c.shape = {s.layers, s.kv_heads, tokens, s.head_dim};
    c.dtype = dump.dtype;
    c.rope = dump.rope;
    c.first_position = dump.first_position + t0;
    c.tokens.assign(dump.tokens.begin() + t0, dump.tokens.begin() + t0 + tokens);
    for (int kv = 0; kv < 2; ++kv) {
      const std::vector<uint8_t>& src = kv ? dump.v : dump.k;
      std::vector<uint8_t>& dst = kv ? c.v : c.k;
      dst.resize(c.TensorBytes());
      for (uint64_t lh = 0; lh < uint64_t{s.layers} * s.kv_heads; ++lh) {
        std::memcpy(&dst[lh * tokens * row], &src[(lh * s.tokens + t0) * row], tokens * row);
      }
    }
    out.push_back(std::move(c));
  }
  return out;
}

std::vector<Case> DumpCases(int bits) {
  std::vector<Case> cases;
  for (const char* name : {"doc00.safetensors", "doc03.safetensors", "doc07.safetensors"}) {
    const std::string path = test::DevDump(name);
    if (path.empty() || !std::filesystem::exists(path)) continue;
    auto dump = ReadKvDump(path);
    EXPECT_TRUE(dump.ok()) << dump.status().ToString();
    if (!dump.ok() || dump->chunk.dtype != DType::kBF16) continue;
    for (Chunk& c : CutDump(dump->chunk, 256, 2)) cases.push_back(MakeCase(std::move(c), bits, 0x5EED5EEDu));
  }
  return cases;
}

TEST(TurboQuantSpecTest, ParsesIntegerWidthsAndRejectsTheSplit) {
  auto p = ParseTurboQuantSpec("turboquant:bits=3,outliers=0,seed=7");
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  EXPECT_EQ(p->bits, 3);
  EXPECT_EQ(p->seed, 7u);
  EXPECT_EQ(ParseTurboQuantSpec("turboquant:bits=2.5,outliers=half,seed=7").status().code(),
            StatusCode::kUnimplemented);
  EXPECT_EQ(ParseTurboQuantSpec("kivi:bits=2").status().code(), StatusCode::kInvalidArgument);
}

TEST(TurboQuantSpecTest, CreatePicksTheProbedBackend) {
  TurboQuantGpu tq = TurboQuantGpu::Create();
  EXPECT_EQ(tq.backend() == Backend::kCuda, ProbeDevices().available);
}

TEST_P(TurboQuantGpuTest, DecodeContiguousMatchesReferenceOnRandomChunks) {
  CheckContiguous(RandomCases(11), 1);
  std::printf("inexact elements: %llu\n", static_cast<unsigned long long>(inexact_));
}

TEST_P(TurboQuantGpuTest, DecodePagedMatchesReferenceOnRandomChunks) {
  for (int bits = 1; bits <= 4; ++bits) {
    std::vector<Case> cases;
    for (uint32_t i = 0; i < 4; ++i) {
      cases.push_back(MakeCase(test::RandomChunk({3, 2, 10 + 7 * i, 128}, DType::kBF16, 100 + bits * 10 + i), bits,
                               0x5EED5EEDu));
    }
    CheckPaged(cases, 16, bits);
  }
  std::printf("inexact elements: %llu\n", static_cast<unsigned long long>(inexact_));
}

// The prefetch path (16-byte aligned sections): odd token counts (a warp's 32
// vectors straddle K and V), padding, d' up to 1024 (several lanes per vector).
TEST_P(TurboQuantGpuTest, DecodeFromAlignedSectionsMatchesReference) {
  CheckContiguous(RandomCases(31), 9, /*aligned_sections=*/true);
  for (int bits = 1; bits <= 4; ++bits) {
    std::vector<Case> cases;
    for (uint32_t i = 0; i < 3; ++i) {
      cases.push_back(MakeCase(test::RandomChunk({2, 3, 13 + 11 * i, 256u >> i}, DType::kBF16, 500 + bits * 10 + i),
                               bits, 0x5EED5EEDu));
    }
    std::vector<Case> one_shape;
    for (uint32_t i = 0; i < 3; ++i) {
      one_shape.push_back(MakeCase(test::RandomChunk({2, 3, 13 + 11 * i, 128}, DType::kBF16, 600 + bits * 10 + i),
                                   bits, 0x5EED5EEDu));
    }
    CheckPaged(one_shape, 16, 40 + bits, /*aligned_sections=*/true);
    CheckContiguous(cases, 50 + bits, /*aligned_sections=*/true);
  }
  std::printf("inexact elements: %llu\n", static_cast<unsigned long long>(inexact_));
}

TEST_P(TurboQuantGpuTest, DecodeMatchesReferenceOnDevDumps) {
  std::vector<Case> cases = DumpCases(4);
  std::vector<Case> cases2 = DumpCases(2);
  if (cases.empty()) GTEST_SKIP() << "no dev dumps (../shared/kvdata/dev or SEQKV_SHARED_DIR)";
  CheckContiguous(cases, 3);
  CheckPaged(cases, 16, 4);
  CheckContiguous(cases2, 5);
  std::printf("dev-dump chunks: %zu, inexact elements: %llu\n", cases.size() + cases2.size(),
              static_cast<unsigned long long>(inexact_));
}

TEST_P(TurboQuantGpuTest, EncodeIsByteIdenticalToReference) {
  CheckEncode(RandomCases(21), 7);
  std::vector<Case> dump = DumpCases(3);
  if (!dump.empty()) CheckEncode(dump, 8);
}

TEST_P(TurboQuantGpuTest, EncodeFromThePagedCacheIsByteIdenticalToReference) {
  CheckEncode(RandomCases(23), 9, KvLayout::kPaged);
  CheckEncode(RandomCases(24), 10, KvLayout::kPaged, /*bad_block=*/2);
  std::vector<Case> dump = DumpCases(4);
  if (!dump.empty()) CheckEncode(dump, 11, KvLayout::kPaged);
}

TEST_P(TurboQuantGpuTest, PerChunkStatuses) {
  std::vector<Case> cases;
  for (int i = 0; i < 3; ++i) cases.push_back(MakeCase(test::RandomChunk({1, 2, 8, 64}, DType::kBF16, 300 + i), 2, 5));
  // Chunk 1: a negative stored norm (sign bit of the first K norm's high byte).
  cases[1].encoded[cases[1].header.sections[0].offset + 1] |= 0x80;
  std::vector<std::unique_ptr<Buffer>> keep;
  std::vector<TurboQuantDecodeItem> items;
  for (const Case& c : cases) {
    keep.push_back(std::make_unique<Buffer>(tq(), c.encoded.size()));
    keep.back()->Upload(c.encoded);
    auto item = MakeDecodeItem(c.header, keep.back()->get());
    ASSERT_TRUE(item.ok());
    keep.push_back(std::make_unique<Buffer>(tq(), c.chunk.TensorBytes()));
    item->k_out = keep.back()->get();
    keep.push_back(std::make_unique<Buffer>(tq(), c.chunk.TensorBytes()));
    item->v_out = keep.back()->get();
    item->out_tokens = c.chunk.shape.tokens;
    items.push_back(*item);
  }
  items[2].k_codes_bytes -= 1;  // chunk 2: a section shorter than the shape implies
  TurboQuantDecodeArgs args;
  args.items = items;
  Buffer workspace(tq(), tq().WorkspaceBytes(args));
  std::vector<Status> statuses;
  ASSERT_TRUE(tq().Decode(args, workspace.get(), workspace.size(), nullptr, &statuses).ok());
  ASSERT_TRUE(tq().CollectStatuses(workspace.get(), nullptr, &statuses).ok());
  ASSERT_EQ(statuses.size(), 3u);
  EXPECT_TRUE(statuses[0].ok()) << statuses[0].ToString();
  EXPECT_EQ(statuses[1].code(), StatusCode::kDataLoss) << statuses[1].ToString();
  EXPECT_EQ(statuses[2].code(), StatusCode::kDataLoss) << statuses[2].ToString();

  // Paged: a block id out of range is OUT_OF_RANGE for that chunk.
  std::vector<int32_t> table = {0, 99};
  Buffer table_buf(tq(), 8);
  ASSERT_TRUE(tq().CopyIn(table_buf.get(), table.data(), 8).ok());
  Buffer cache(tq(), uint64_t{2} * 2 * 8 * 2 * 64 * 2);
  void* layer_ptr = cache.get();
  Buffer layer_array(tq(), sizeof(void*));
  ASSERT_TRUE(tq().CopyIn(layer_array.get(), &layer_ptr, sizeof(void*)).ok());
  TurboQuantDecodeItem paged = items[0];
  paged.token_offset = 4;  // tokens 4..11 span blocks 0 and 1 of size 8
  paged.layer_caches = reinterpret_cast<void* const*>(layer_array.get());
  paged.block_table = reinterpret_cast<const int32_t*>(table_buf.get());
  paged.block_table_entries = 2;
  TurboQuantDecodeArgs pargs;
  pargs.destination = KvDestination::kPaged;
  pargs.block_size = 8;
  pargs.num_blocks = 2;
  pargs.items = std::span<const TurboQuantDecodeItem>(&paged, 1);
  ASSERT_TRUE(tq().Decode(pargs, workspace.get(), workspace.size(), nullptr, &statuses).ok());
  ASSERT_TRUE(tq().CollectStatuses(workspace.get(), nullptr, &statuses).ok());
  EXPECT_EQ(statuses[0].code(), StatusCode::kOutOfRange) << statuses[0].ToString();
}

std::string BackendName(const ::testing::TestParamInfo<Backend>& info) {
  return info.param == Backend::kCuda ? "Cuda" : "Cpu";
}

INSTANTIATE_TEST_SUITE_P(Backends, TurboQuantGpuTest, ::testing::Values(Backend::kCpu, Backend::kCuda), BackendName);

}  // namespace
}  // namespace seqkv::gpu

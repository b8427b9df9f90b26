// Tests of seq:lossless (codec/src/seq_lossless_codec.cc and
// seq_lossless_model.cc) and of the seq spec dispatch. Prints bits/element
// per dev file, per layer and K vs V, and the speed on one core.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <ctime>
#include <random>

#include "seqkv/codec/codec.h"
#include "seqkv/codec/format.h"
#include "seqkv/codec/safetensors.h"
#include "../../codec/src/seq_lossless_rope.h"
#include "util/test_util.h"

namespace seqkv {
namespace {

std::unique_ptr<Codec> SeqLossless() {
  auto codec = MakeCodec("seq:lossless");
  EXPECT_TRUE(codec.ok()) << codec.status().ToString();
  return codec.ok() ? std::move(codec).value() : nullptr;
}

void ExpectBitExact(const Chunk& chunk) {
  auto codec = SeqLossless();
  ASSERT_TRUE(codec);
  auto bytes = EncodeChunk(chunk, *codec);
  ASSERT_TRUE(bytes.ok()) << bytes.status().ToString();
  auto back = DecodeChunk(*bytes);
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(back->k, chunk.k);
  EXPECT_EQ(back->v, chunk.v);
  EXPECT_EQ(back->tokens, chunk.tokens);
}

TEST(SeqLosslessTest, SpecDispatch) {
  auto codec = SeqLossless();
  ASSERT_TRUE(codec);
  EXPECT_EQ(codec->Spec(), "seq:lossless=1");
  EXPECT_EQ(codec->id(), CodecId::kSeq);
  EXPECT_TRUE(MakeCodec("seq:lossless=1").ok());
  EXPECT_EQ(MakeCodec("seq:lossless=2").status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(MakeCodec("seq:lossless,bits=3").status().code(), StatusCode::kInvalidArgument);
  // Without a loaded profile the lossy modes say how to get one.
  auto lossy = MakeCodec("seq:bits=3");
  ASSERT_FALSE(lossy.ok());
  EXPECT_EQ(lossy.status().code(), StatusCode::kInvalidArgument) << lossy.status().ToString();
  EXPECT_NE(lossy.status().message().find("--profile"), std::string::npos) << lossy.status().ToString();
}

// The predictions' math must be accurate enough to predict (it need not
// match libm bit for bit: both sides use the same functions).
TEST(SeqLosslessTest, DeterministicMathIsAccurate) {
  for (double x : {-20.0, -9.2, -1.0, -0.3, 0.0, 0.5, 1.0, 3.7, 20.0}) {
    EXPECT_NEAR(internal::DetExp(x), std::exp(x), 1e-13 * std::exp(x)) << x;
  }
  for (double x : {1e-5, 0.1, 1.0, 2.0, 10000.0, 500000.0, 1e12}) {
    EXPECT_NEAR(internal::DetLog(x), std::log(x), 1e-12 * std::max(1.0, std::fabs(std::log(x)))) << x;
  }
  for (double a : {-1e6, -100.0, -3.0, 0.0, 0.5, 3.14159, 7.0, 1023.0, 1048575.0, 3e7}) {
    double s, c;
    internal::DetSinCos(a, &s, &c);
    EXPECT_NEAR(s, std::sin(a), 1e-8) << a;
    EXPECT_NEAR(c, std::cos(a), 1e-8) << a;
  }
}

TEST(SeqLosslessTest, BitExactOnRandomChunksOfEveryDtype) {
  for (DType dtype : {DType::kBF16, DType::kFP16, DType::kFP32}) {
    for (KvShape shape : {KvShape{1, 1, 1, 2}, KvShape{2, 2, 17, 8}, KvShape{3, 1, 64, 64}, KvShape{1, 3, 5, 130}}) {
      SCOPED_TRACE(std::string(DTypeName(dtype)) + " " + std::to_string(shape.layers) + "x" +
                   std::to_string(shape.kv_heads) + "x" + std::to_string(shape.tokens) + "x" +
                   std::to_string(shape.head_dim));
      ExpectBitExact(test::RandomChunk(shape, dtype, 5 + shape.tokens));
    }
  }
}

// Repeated tokens drive the re-rotated predictions: every RoPE style,
// partial rotary dims and a large first position.
TEST(SeqLosslessTest, BitExactWithRepeatedTokensInEveryRopeStyle) {
  for (RopeStyle style : {RopeStyle::kNone, RopeStyle::kRotateHalf, RopeStyle::kInterleaved}) {
    for (uint32_t dim : {16u, 8u}) {
      Chunk c = test::RandomChunk({2, 2, 40, 16}, DType::kBF16, 21 + dim);
      c.rope = {style, 500000.0, dim};
      c.first_position = uint64_t{1} << 40;
      for (uint32_t t = 0; t < c.shape.tokens; ++t) c.tokens[t] = static_cast<int32_t>(t % 7);
      SCOPED_TRACE(std::string(RopeStyleName(style)) + " dim " + std::to_string(dim));
      ExpectBitExact(c);
    }
  }
}

TEST(SeqLosslessTest, BitExactOnSpecialValues) {
  Chunk c = test::RandomChunk({2, 1, 32, 16}, DType::kBF16, 9);
  std::mt19937 rng(1);
  const uint16_t specials[] = {0x0000, 0x8000, 0x7F80, 0xFF80, 0x7FC0, 0xFFFF, 0x0001, 0x8001, 0x7F7F, 0xFF7F};
  for (size_t i = 0; i < c.k.size() / 2; i += 3) {
    uint16_t s = specials[rng() % 10];
    c.k[2 * i] = static_cast<uint8_t>(s);
    c.k[2 * i + 1] = static_cast<uint8_t>(s >> 8);
  }
  for (auto& b : c.v) b = static_cast<uint8_t>(rng());  // any bit pattern
  ExpectBitExact(c);
}

TEST(SeqLosslessTest, ManyLayersGroupSections) {
  // 200 layers: streams cover 2 layers each (at most 254 sections).
  Chunk c = test::RandomChunk({200, 1, 3, 4}, DType::kBF16, 4);
  ExpectBitExact(c);
  auto codec = SeqLossless();
  std::vector<Section> sections;
  ASSERT_TRUE(codec->Encode(c, &sections).ok());
  EXPECT_EQ(sections.size(), 200u);
}

TEST(SeqLosslessTest, Deterministic) {
  Chunk c = test::RandomChunk({2, 2, 64, 32}, DType::kBF16, 77);
  auto codec = SeqLossless();
  auto a = EncodeChunk(c, *codec);
  auto b = EncodeChunk(c, *codec);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(*a, *b);
}

TEST(SeqLosslessTest, CorruptOrTruncatedSectionsAreDataLoss) {
  Chunk c = test::RandomChunk({2, 1, 16, 16}, DType::kBF16, 3);
  auto codec = SeqLossless();
  std::vector<Section> sections;
  ASSERT_TRUE(codec->Encode(c, &sections).ok());
  ASSERT_EQ(sections.size(), 4u);
  Chunk target = c;
  auto decode = [&](const std::vector<Section>& secs) {
    std::vector<SectionView> views;
    for (const auto& s : secs) views.push_back({s.type, s.data});
    target.k.clear();
    target.v.clear();
    return codec->Decode(views, &target);
  };
  ASSERT_TRUE(decode(sections).ok());
  EXPECT_EQ(target.k, c.k);
  for (size_t s = 0; s < sections.size(); ++s) {
    for (size_t n = 0; n < sections[s].data.size(); n += 1 + sections[s].data.size() / 40) {
      auto cut = sections;
      cut[s].data.resize(n);
      Status st = decode(cut);
      EXPECT_EQ(st.code(), StatusCode::kDataLoss) << "section " << s << " cut at " << n;
    }
    int detected = 0, tried = 0;
    for (size_t i = 0; i < sections[s].data.size(); i += 7) {
      auto bad = sections;
      bad[s].data[i] ^= 0x10;
      Status st = decode(bad);
      ++tried;
      if (!st.ok()) {
        EXPECT_EQ(st.code(), StatusCode::kDataLoss);
        ++detected;
      }
    }
    EXPECT_GT(detected, tried / 2) << "section " << s;
  }
  auto missing = sections;
  missing.pop_back();
  EXPECT_EQ(decode(missing).code(), StatusCode::kDataLoss);
  auto wrong_type = sections;
  wrong_type[1].type = 9;
  EXPECT_EQ(decode(wrong_type).code(), StatusCode::kDataLoss);
}

// Bits per element of one dump, with per-layer K/V section sizes.
struct DumpResult {
  double bits = 0, encode_s = 0, decode_s = 0;
  std::vector<uint64_t> section_bytes;
  uint64_t elements = 0;
};

DumpResult MeasureDump(const std::string& name) {
  DumpResult r;
  auto dump = ReadKvDump(test::DevDump(name));
  EXPECT_TRUE(dump.ok()) << dump.status().ToString();
  if (!dump.ok()) return r;
  const Chunk& chunk = dump->chunk;
  auto codec = SeqLossless();
  std::clock_t t0 = std::clock();
  std::vector<Section> sections;
  EXPECT_TRUE(codec->Encode(chunk, &sections).ok());
  std::clock_t t1 = std::clock();
  std::vector<SectionView> views;
  for (const auto& s : sections) {
    views.push_back({s.type, s.data});
    r.section_bytes.push_back(s.data.size());
  }
  Chunk back = chunk;  // header fields: shape, dtype, rope, position, tokens
  back.k.clear();
  back.v.clear();
  Status st = codec->Decode(views, &back);
  std::clock_t t2 = std::clock();
  EXPECT_TRUE(st.ok()) << st.ToString();
  EXPECT_TRUE(back.k == chunk.k && back.v == chunk.v) << name << ": not bit-exact";
  r.encode_s = double(t1 - t0) / CLOCKS_PER_SEC;
  r.decode_s = double(t2 - t1) / CLOCKS_PER_SEC;
  r.elements = 2 * chunk.shape.elements();
  // Whole container (header, token ids, section table) counts too.
  auto bytes = EncodeChunk(chunk, *codec);
  EXPECT_TRUE(bytes.ok());
  r.bits = bytes.ok() ? 8.0 * bytes->size() / r.elements : 0;
  return r;
}

TEST(SeqLosslessTest, Doc00BelowTarget) {
  ASSERT_FALSE(test::SharedDir().empty()) << "../shared/kvdata is missing";
  DumpResult r = MeasureDump("doc00.safetensors");
  std::printf("doc00: %.3f bits/element (container), encode %.1f MB/s, decode %.1f MB/s (one core)\n", r.bits,
              r.elements * 2 / r.encode_s / 1e6, r.elements * 2 / r.decode_s / 1e6);
  EXPECT_LT(r.bits, 9.8);
}

// Tokens [t0, t0 + n) of a chunk, as the store would cut it.
Chunk Slice(const Chunk& c, uint32_t t0, uint32_t n) {
  Chunk out = c;
  out.shape.tokens = n;
  out.first_position = c.first_position + t0;
  out.tokens.assign(c.tokens.begin() + t0, c.tokens.begin() + t0 + n);
  const size_t row = size_t{c.shape.head_dim} * 2;
  for (auto [src, dst] : {std::pair{&c.k, &out.k}, std::pair{&c.v, &out.v}}) {
    dst->clear();
    for (uint64_t b = 0; b < uint64_t{c.shape.layers} * c.shape.kv_heads; ++b) {
      auto first = src->begin() + (b * c.shape.tokens + t0) * row;
      dst->insert(dst->end(), first, first + n * row);
    }
  }
  return out;
}

// All 8 dev dumps with per-layer, K-vs-V breakdown. Slow (~1 min), so it
// only runs with SEQKV_MEASURE=1 in the environment.
TEST(SeqLosslessTest, MeasuresAllDevDumps) {
  ASSERT_FALSE(test::SharedDir().empty()) << "../shared/kvdata is missing";
  if (!std::getenv("SEQKV_MEASURE")) GTEST_SKIP() << "set SEQKV_MEASURE=1";
  double sum_bits = 0, enc = 0, dec = 0;
  uint64_t elements = 0;
  std::vector<uint64_t> per_section;
  for (int d = 0; d < 8; ++d) {
    char name[32];
    std::snprintf(name, sizeof name, "doc%02d.safetensors", d);
    DumpResult r = MeasureDump(name);
    std::printf("%s  %.3f bits/element  (K %.3f, V %.3f)\n", name, r.bits, [&] {
      uint64_t k = 0;
      for (size_t i = 0; i < r.section_bytes.size(); i += 2) k += r.section_bytes[i];
      return 16.0 * k / r.elements;
    }(), [&] {
      uint64_t v = 0;
      for (size_t i = 1; i < r.section_bytes.size(); i += 2) v += r.section_bytes[i];
      return 16.0 * v / r.elements;
    }());
    sum_bits += r.bits;
    enc += r.encode_s;
    dec += r.decode_s;
    elements += r.elements;
    per_section.resize(r.section_bytes.size());
    for (size_t i = 0; i < r.section_bytes.size(); ++i) per_section[i] += r.section_bytes[i];
  }
  // The store's default chunk: 256 tokens, no context across chunks.
  auto codec = SeqLossless();
  auto planes = MakeCodec("lossless:level=19");
  ASSERT_TRUE(planes.ok());
  uint64_t seq_bytes = 0, planes_bytes = 0, sliced_elements = 0;
  for (int d = 0; d < 8; ++d) {
    char name[32];
    std::snprintf(name, sizeof name, "doc%02d.safetensors", d);
    auto dump = ReadKvDump(test::DevDump(name));
    ASSERT_TRUE(dump.ok());
    for (uint32_t t0 = 0; t0 < dump->chunk.shape.tokens; t0 += 256) {
      Chunk part = Slice(dump->chunk, t0, 256);
      auto a = EncodeChunk(part, *codec);
      auto b = EncodeChunk(part, **planes);
      ASSERT_TRUE(a.ok() && b.ok());
      auto back = DecodeChunk(*a);
      ASSERT_TRUE(back.ok());
      EXPECT_TRUE(back->k == part.k && back->v == part.v);
      seq_bytes += a->size();
      planes_bytes += b->size();
      sliced_elements += 2 * part.shape.elements();
    }
  }
  std::printf("256-token chunks: seq:lossless %.3f, lossless:level=19 %.3f bits/element\n",
              8.0 * seq_bytes / sliced_elements, 8.0 * planes_bytes / sliced_elements);
  std::printf("mean %.3f bits/element; encode %.2f MB/s, decode %.2f MB/s (one core, CPU time)\n", sum_bits / 8,
              elements * 2 / enc / 1e6, elements * 2 / dec / 1e6);
  const double per_tensor_layer = double(elements) / 2 / (per_section.size() / 2);
  for (size_t l = 0; l < per_section.size() / 2; ++l) {
    std::printf("layer %zu: K %.3f  V %.3f bits/element\n", l, 8.0 * per_section[2 * l] / per_tensor_layer,
                8.0 * per_section[2 * l + 1] / per_tensor_layer);
  }
}

}  // namespace
}  // namespace seqkv

// The container: round trips, and every kind of damaged or hostile input is a
// clear error, never a crash and never wrong data.
#include "seqkv/codec/format.h"

#include <gtest/gtest.h>

#include <random>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "seqkv/codec/codec.h"
#include "seqkv/codec/safetensors.h"
#include "util/test_util.h"

namespace seqkv {
namespace {

const KvShape kShape{2, 2, 48, 32};

std::vector<uint8_t> Encode(const Chunk& c, const std::string& spec, uint32_t flags = 0) {
  auto codec = MakeCodec(spec);
  EXPECT_TRUE(codec.ok()) << codec.status().ToString();
  auto bytes = EncodeChunk(c, **codec, flags);
  EXPECT_TRUE(bytes.ok()) << bytes.status().ToString();
  return *bytes;
}

TEST(FormatTest, RawAndLosslessRoundTripBitExactForEveryDtype) {
  for (DType dtype : {DType::kBF16, DType::kFP16, DType::kFP32}) {
    Chunk c = test::RandomChunk(kShape, dtype, 7);
    for (const char* spec : {"raw", "lossless", "lossless:level=19", "lossless:order=1"}) {
      auto out = DecodeChunk(Encode(c, spec));
      ASSERT_TRUE(out.ok()) << spec << ": " << out.status().ToString();
      EXPECT_EQ(out->k, c.k) << spec;
      EXPECT_EQ(out->v, c.v) << spec;
      EXPECT_EQ(out->tokens, c.tokens);
      EXPECT_EQ(out->first_position, c.first_position);
      EXPECT_EQ(out->shape, c.shape);
      EXPECT_EQ(out->dtype, c.dtype);
      EXPECT_EQ(out->rope.style, c.rope.style);
      EXPECT_EQ(out->rope.theta, c.rope.theta);
      EXPECT_EQ(out->rope.dim, c.rope.dim);
    }
  }
}

TEST(FormatTest, EncodingIsDeterministic) {
  Chunk c = test::RandomChunk(kShape, DType::kBF16, 11);
  for (const char* spec : {"raw", "lossless", "tokens"}) {
    EXPECT_EQ(Encode(c, spec), Encode(c, spec)) << spec;
  }
}

TEST(FormatTest, HeaderCarriesCanonicalSpecAndTokens) {
  Chunk c = test::RandomChunk(kShape, DType::kBF16, 3);
  auto bytes = Encode(c, "lossless");
  auto h = ParseChunkHeader(bytes);
  ASSERT_TRUE(h.ok()) << h.status().ToString();
  EXPECT_EQ(h->codec_spec, "lossless:level=3,order=0");
  EXPECT_EQ(h->codec_id, CodecId::kLossless);
  EXPECT_EQ(h->tokens, c.tokens);
  EXPECT_EQ(h->total_bytes, bytes.size());
  EXPECT_EQ(h->sections.size(), 4u);  // K and V, two planes each
}

TEST(FormatTest, TokenTierSaysRecomputeAndKeepsTokens) {
  Chunk c = test::RandomChunk(kShape, DType::kBF16, 5);
  auto bytes = Encode(c, "tokens");
  auto out = DecodeChunk(bytes);
  ASSERT_FALSE(out.ok());
  EXPECT_TRUE(IsRecomputeNeeded(out.status())) << out.status().ToString();
  auto tokens = DecodeTokens(bytes);
  ASSERT_TRUE(tokens.ok());
  EXPECT_EQ(tokens->tokens, c.tokens);
  EXPECT_LT(bytes.size(), 64u + 16 + 8 + c.tokens.size() * 2);  // ids coded below 16 bits each
}

// Beside KV the ids are noise in the size: they get the fast coding, so
// parsing a header stays cheap on the store's hot path. A token-only chunk's
// ids are its payload and get the smallest coding.
TEST(FormatTest, TokenCodingEffortFollowsTheCodec) {
  std::string path = test::DevDump("doc00.safetensors");
  ASSERT_FALSE(path.empty());
  auto dump = ReadKvDump(path);
  ASSERT_TRUE(dump.ok());
  auto kv = ParseChunkHeader(Encode(dump->chunk, "raw"));
  ASSERT_TRUE(kv.ok());
  EXPECT_EQ(kv->token_coding, TokenCoding::kBitPacked);
  auto tokens_only = Encode(dump->chunk, "tokens");
  auto tok = ParseChunkHeader(tokens_only);
  ASSERT_TRUE(tok.ok());
  EXPECT_EQ(tok->token_coding, TokenCoding::kCountMixed);
  EXPECT_LT(tokens_only.size() * 8.0 / 1024, 11.0);  // whole chunk, header included
}

TEST(FormatTest, EveryTruncationIsDataLoss) {
  Chunk c = test::RandomChunk(KvShape{1, 1, 8, 16}, DType::kBF16, 9);
  for (const char* spec : {"raw", "lossless", "tokens"}) {
    auto bytes = Encode(c, spec);
    for (size_t n = 0; n < bytes.size(); ++n) {
      auto out = DecodeChunk(std::span<const uint8_t>(bytes.data(), n));
      ASSERT_FALSE(out.ok()) << spec << " truncated to " << n;
      EXPECT_EQ(out.status().code(), StatusCode::kDataLoss) << out.status().ToString();
    }
    std::vector<uint8_t> longer = bytes;
    longer.push_back(0);
    EXPECT_EQ(DecodeChunk(longer).status().code(), StatusCode::kDataLoss);
  }
}

TEST(FormatTest, EverySingleBitFlipIsDetected) {
  Chunk c = test::RandomChunk(KvShape{1, 2, 8, 16}, DType::kBF16, 13);
  for (const char* spec : {"raw", "lossless", "tokens"}) {
    auto bytes = Encode(c, spec);
    for (size_t i = 0; i < bytes.size(); ++i) {
      for (int bit = 0; bit < 8; bit += 3) {
        std::vector<uint8_t> bad = bytes;
        bad[i] ^= static_cast<uint8_t>(1u << bit);
        auto out = DecodeChunk(bad);
        if (out.ok()) {
          ADD_FAILURE() << spec << ": flip at byte " << i << " bit " << bit << " decoded";
        }
      }
    }
  }
}

TEST(FormatTest, RandomGarbageIsRejected) {
  std::mt19937_64 rng(42);
  for (int trial = 0; trial < 2000; ++trial) {
    std::vector<uint8_t> junk(rng() % 512);
    for (auto& b : junk) b = static_cast<uint8_t>(rng());
    if (junk.size() >= 4 && trial % 2 == 0) {  // valid magic half of the time
      junk[0] = 'S'; junk[1] = 'Q'; junk[2] = 'K'; junk[3] = 'V';
    }
    EXPECT_FALSE(DecodeChunk(junk).ok());
  }
}

TEST(FormatTest, InvalidChunksAreRejectedAtEncode) {
  auto codec = MakeCodec("raw");
  ASSERT_TRUE(codec.ok());
  Chunk c = test::RandomChunk(kShape, DType::kBF16, 1);
  Chunk short_k = c;
  short_k.k.pop_back();
  EXPECT_EQ(EncodeChunk(short_k, **codec).status().code(), StatusCode::kInvalidArgument);
  Chunk few_tokens = c;
  few_tokens.tokens.pop_back();
  EXPECT_EQ(EncodeChunk(few_tokens, **codec).status().code(), StatusCode::kInvalidArgument);
  Chunk zero = c;
  zero.shape.layers = 0;
  EXPECT_EQ(EncodeChunk(zero, **codec).status().code(), StatusCode::kInvalidArgument);
  Chunk bad_rope = c;
  bad_rope.rope.dim = 3;
  EXPECT_EQ(EncodeChunk(bad_rope, **codec).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(EncodeChunk(c, **codec, 1u << 20).status().code(), StatusCode::kInvalidArgument);
}

TEST(FormatTest, ChunksNeedingContextAreNotDecodedWithoutIt) {
  Chunk c = test::RandomChunk(kShape, DType::kBF16, 2);
  auto bytes = Encode(c, "raw", kFlagNeedsParent);
  auto out = DecodeChunk(bytes);
  ASSERT_FALSE(out.ok());
  EXPECT_EQ(out.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_FALSE(IsRecomputeNeeded(out.status()));
}

// Rewrites header fields and re-seals the header checksum, as a hostile
// writer could: the bounds checks alone must reject it.
std::vector<uint8_t> Reseal(std::vector<uint8_t> b) {
  uint32_t hs = b[8] | (b[9] << 8) | (b[10] << 16) | (uint32_t(b[11]) << 24);
  uint64_t sum = XXH3_64bits(b.data(), hs - 8);
  for (int i = 0; i < 8; ++i) b[hs - 8 + i] = static_cast<uint8_t>(sum >> (8 * i));
  return b;
}

void Put32(std::vector<uint8_t>* b, size_t offset, uint32_t value) {
  for (int i = 0; i < 4; ++i) (*b)[offset + i] = static_cast<uint8_t>(value >> (8 * i));
}

TEST(FormatTest, HostileHeaderWithValidChecksumIsRejected) {
  Chunk c = test::RandomChunk(KvShape{1, 1, 4, 8}, DType::kBF16, 4);
  auto good = Encode(c, "raw");
  ASSERT_TRUE(DecodeChunk(Reseal(good)).ok());
  struct Case {
    size_t offset;
    uint32_t value;
    const char* what;
  };
  for (Case cs : {Case{20, 0xFFFFFFFFu, "layers"}, Case{20, 2, "layers (sections now too small)"},
                  Case{32, 0, "tokens = 0"}, Case{32, 1u << 30, "tokens huge"},
                  Case{28, 1u << 30, "head_dim huge"}, Case{36, 7, "odd rope dim"},
                  Case{12, 1u << 9, "unknown flag"}, Case{6, 99, "codec id"},
                  Case{16, 9, "dtype"}}) {
    std::vector<uint8_t> bad = good;
    if (cs.offset == 6 || cs.offset == 16) {
      bad[cs.offset] = static_cast<uint8_t>(cs.value);
    } else {
      Put32(&bad, cs.offset, cs.value);
    }
    auto out = DecodeChunk(Reseal(bad));
    EXPECT_FALSE(out.ok()) << cs.what;
    EXPECT_EQ(out.status().code(), StatusCode::kDataLoss) << cs.what << ": " << out.status().ToString();
  }
  // A section length that points past the end.
  auto h = ParseChunkHeader(good);
  ASSERT_TRUE(h.ok());
  size_t table = h->header_bytes - 8 - 24 * h->sections.size();
  std::vector<uint8_t> bad = good;
  Put32(&bad, table + 8, 0xFFFFFFF0u);
  EXPECT_EQ(DecodeChunk(Reseal(bad)).status().code(), StatusCode::kDataLoss);
}

}  // namespace
}  // namespace seqkv

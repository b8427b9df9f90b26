#include "util/test_util.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <random>

#include <gtest/gtest.h>

#include "seqkv/codec/dtype.h"
#include "seqkv/codec/format.h"

namespace seqkv::test {

Chunk SliceTokens(const Chunk& c, uint32_t t0, uint32_t n) {
  Chunk out;
  out.shape = c.shape;
  out.shape.tokens = n;
  out.dtype = c.dtype;
  out.rope = c.rope;
  out.first_position = c.first_position + t0;
  out.tokens.assign(c.tokens.begin() + t0, c.tokens.begin() + t0 + n);
  const uint64_t row = uint64_t{c.shape.head_dim} * DTypeSize(c.dtype);
  for (int kv = 0; kv < 2; ++kv) {
    const std::vector<uint8_t>& src = kv ? c.v : c.k;
    std::vector<uint8_t>& dst = kv ? out.v : out.k;
    for (uint64_t lh = 0; lh < uint64_t{c.shape.layers} * c.shape.kv_heads; ++lh) {
      const uint8_t* p = src.data() + (lh * c.shape.tokens + t0) * row;
      dst.insert(dst.end(), p, p + n * row);
    }
  }
  return out;
}

Chunk RandomChunk(const KvShape& shape, DType dtype, uint64_t seed) {
  Chunk c;
  c.shape = shape;
  c.dtype = dtype;
  c.rope = {RopeStyle::kRotateHalf, 10000.0, shape.head_dim};
  c.first_position = seed % 1000;
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  c.tokens.resize(shape.tokens);
  for (uint32_t i = 0; i < shape.tokens; ++i) c.tokens[i] = static_cast<int32_t>(rng() % 32000);
  std::vector<float> values(shape.elements());
  for (auto* tensor : {&c.k, &c.v}) {
    for (size_t i = 0; i < values.size(); ++i) {
      // Per-channel scale spread, like real KV (a few large channels).
      size_t ch = i % shape.head_dim;
      float scale = (ch % 16 == 3) ? 4.0f : 1.0f;
      values[i] = normal(rng) * scale;
    }
    tensor->resize(values.size() * DTypeSize(dtype));
    FromFloat(dtype, values.data(), values.size(), tensor->data());
  }
  return c;
}

std::vector<float> Floats(const Chunk& c, const std::vector<uint8_t>& tensor) {
  std::vector<float> out(c.shape.elements());
  ToFloat(c.dtype, tensor.data(), out.size(), out.data());
  return out;
}

double RelativeMse(const std::vector<float>& a, const std::vector<float>& b) {
  double err = 0, ref = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    err += (double{a[i]} - b[i]) * (double{a[i]} - b[i]);
    ref += double{a[i]} * a[i];
  }
  return ref > 0 ? err / ref : err;
}

std::unique_ptr<Codec> Make(const std::string& spec) {
  auto codec = MakeCodec(spec);
  EXPECT_TRUE(codec.ok()) << spec << ": " << codec.status().ToString();
  return codec.ok() ? std::move(codec).value() : nullptr;
}

RoundTrip EncodeDecode(const std::string& spec, const Chunk& chunk) {
  RoundTrip out;
  auto codec = Make(spec);
  if (!codec) return out;
  auto bytes = EncodeChunk(chunk, *codec);
  EXPECT_TRUE(bytes.ok()) << bytes.status().ToString();
  if (!bytes.ok()) return out;
  out.bytes = bytes->size();
  auto decoded = DecodeChunk(*bytes);
  EXPECT_TRUE(decoded.ok()) << decoded.status().ToString();
  if (decoded.ok()) out.decoded = std::move(decoded).value();
  return out;
}

TimedRoundTrip BestOfRuns(const Codec& codec, const Chunk& chunk, int runs) {
  TimedRoundTrip out;
  out.encode_s = out.decode_s = 1e9;
  for (int run = 0; run < runs; ++run) {
    auto t0 = std::chrono::steady_clock::now();
    auto bytes = EncodeChunk(chunk, codec);
    auto t1 = std::chrono::steady_clock::now();
    EXPECT_TRUE(bytes.ok()) << bytes.status().ToString();
    if (!bytes.ok()) return out;
    auto decoded = DecodeChunk(*bytes);
    auto t2 = std::chrono::steady_clock::now();
    EXPECT_TRUE(decoded.ok()) << decoded.status().ToString();
    if (!decoded.ok()) return out;
    out.encode_s = std::min(out.encode_s, std::chrono::duration<double>(t1 - t0).count());
    out.decode_s = std::min(out.decode_s, std::chrono::duration<double>(t2 - t1).count());
    out.bytes = std::move(bytes).value();
    out.decoded = std::move(decoded).value();
  }
  out.ok = runs > 0;
  return out;
}

std::vector<float> RandomFloats(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  std::vector<float> out(n);
  for (float& f : out) f = dist(rng);
  return out;
}

std::string SourceDir() {
  const char* env = std::getenv("SEQKV_SOURCE_DIR");
  return env ? env : ".";
}

std::string SharedDir() {
  if (const char* env = std::getenv("SEQKV_SHARED_DIR")) return env;
  std::filesystem::path p = std::filesystem::path(SourceDir()) / ".." / "shared";
  if (std::filesystem::exists(p)) return std::filesystem::weakly_canonical(p).string();
  return "";
}

std::string DevDump(const std::string& name) {
  std::string shared = SharedDir();
  if (shared.empty()) return "";
  return shared + "/kvdata/dev/" + name;
}

std::string TempDir(const std::string& tag) {
  std::filesystem::path base = std::filesystem::temp_directory_path();
  std::random_device rd;
  for (int attempt = 0; attempt < 100; ++attempt) {
    std::filesystem::path p = base / ("seqkv-" + tag + "-" + std::to_string(rd()));
    if (std::filesystem::create_directory(p)) return p.string();
  }
  return (base / ("seqkv-" + tag)).string();
}

}  // namespace seqkv::test

#include "util/test_util.h"

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <random>

#include "seqkv/codec/dtype.h"

namespace seqkv::test {

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

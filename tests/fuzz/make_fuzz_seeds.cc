// Writes valid chunks of every codec into a folder: the fuzzer's seed corpus.
#include <cstdio>
#include <string>

#include "seqkv/codec/format.h"
#include "seqkv/codec/safetensors.h"
#include "util/test_util.h"

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: make_fuzz_seeds DIR\n");
    return 2;
  }
  std::string dir = argv[1];
  int n = 0;
  const char* specs[] = {"raw", "lossless", "tokens", "turboquant:bits=2", "turboquant:bits=2.5", "kivi:bits=2"};
  for (const char* spec : specs) {
    auto codec = seqkv::MakeCodec(spec);
    if (!codec.ok()) {
      std::fprintf(stderr, "skipping %s: %s\n", spec, codec.status().ToString().c_str());
      continue;
    }
    for (auto dtype : {seqkv::DType::kBF16, seqkv::DType::kFP16, seqkv::DType::kFP32}) {
      auto chunk = seqkv::test::RandomChunk(seqkv::KvShape{1, 2, 5, 8}, dtype, 1000 + n);
      auto bytes = seqkv::EncodeChunk(chunk, **codec);
      if (!bytes.ok()) continue;
      auto s = seqkv::WriteFileBytes(dir + "/seed" + std::to_string(n++), *bytes);
      if (!s.ok()) {
        std::fprintf(stderr, "%s\n", s.ToString().c_str());
        return 1;
      }
    }
  }
  std::printf("wrote %d seeds to %s\n", n, dir.c_str());
  return n > 0 ? 0 : 1;
}

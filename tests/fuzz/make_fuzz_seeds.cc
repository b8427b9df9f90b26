// Writes valid chunks of every codec into a folder: the fuzzer's seed corpus.
#include <cstdio>
#include <string>

#include "fuzz_profile.h"
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
  // Sequential-codec chunks of the fuzzer's profile (chunk_decode_fuzzer adds
  // the same one): adaptive and both lane streams, arith=int12, rate control.
  auto profile = seqkv::fuzz::AddFuzzSeqProfile();
  if (profile == nullptr) {
    std::fprintf(stderr, "the fuzz profile did not calibrate\n");
    return 1;
  }
  const char* seq_specs[] = {"seq:delta=0.5,streams=adaptive", "seq:delta=0.5,streams=lanes", "seq:delta=0.5",
                             "seq:delta=0.5,arith=int12", "seq:bits=2,streams=adaptive,arith=int12"};
  for (const char* spec : seq_specs) {
    auto codec = seqkv::MakeCodec(spec);
    if (!codec.ok()) {
      std::fprintf(stderr, "%s: %s\n", spec, codec.status().ToString().c_str());
      return 1;
    }
    auto bytes = seqkv::EncodeChunk(seqkv::fuzz::FuzzSeqChunk(16, 100 + n), **codec);
    if (!bytes.ok()) {
      std::fprintf(stderr, "%s: %s\n", spec, bytes.status().ToString().c_str());
      return 1;
    }
    auto s = seqkv::WriteFileBytes(dir + "/seed" + std::to_string(n++), *bytes);
    if (!s.ok()) {
      std::fprintf(stderr, "%s\n", s.ToString().c_str());
      return 1;
    }
  }
  std::printf("wrote %d seeds to %s\n", n, dir.c_str());
  return n > 0 ? 0 : 1;
}

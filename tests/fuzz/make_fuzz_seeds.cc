// Writes valid chunks of every codec into a folder: chunk_decode_fuzzer's
// seed corpus. With --sections, seq_sections_fuzzer's instead: per spec of
// kFuzzSeqSpecs and per section of its chunk, [spec, section, payload].
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "fuzz_profile.h"
#include "seqkv/codec/format.h"
#include "seqkv/codec/safetensors.h"
#include "util/test_util.h"

namespace {

int WriteSectionSeeds(const std::string& dir) {
  if (seqkv::fuzz::AddFuzzSeqProfile() == nullptr) {
    std::fprintf(stderr, "the fuzz profile did not calibrate\n");
    return 1;
  }
  int n = 0;
  for (uint32_t i = 0; i < seqkv::fuzz::kFuzzSeqSpecCount; ++i) {
    auto codec = seqkv::MakeCodec(seqkv::fuzz::kFuzzSeqSpecs[i]);
    if (!codec.ok()) return 1;
    auto bytes = seqkv::EncodeChunk(seqkv::fuzz::FuzzSeqChunk(16, 100), **codec);
    if (!bytes.ok()) return 1;
    auto header = seqkv::VerifyChunk(*bytes);
    if (!header.ok()) return 1;
    for (size_t j = 0; j < header->sections.size(); ++j) {
      const auto& s = header->sections[j];
      std::vector<uint8_t> seed = {static_cast<uint8_t>(i), static_cast<uint8_t>(j)};
      seed.insert(seed.end(), bytes->begin() + s.offset, bytes->begin() + s.offset + s.length);
      auto st = seqkv::WriteFileBytes(dir + "/section" + std::to_string(n++), seed);
      if (!st.ok()) {
        std::fprintf(stderr, "%s\n", st.ToString().c_str());
        return 1;
      }
    }
  }
  std::printf("wrote %d section seeds to %s\n", n, dir.c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 3 && std::string(argv[1]) == "--sections") return WriteSectionSeeds(argv[2]);
  if (argc != 2) {
    std::fprintf(stderr, "usage: make_fuzz_seeds DIR | make_fuzz_seeds --sections DIR\n");
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

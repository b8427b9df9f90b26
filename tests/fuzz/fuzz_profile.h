// A small sequential-codec profile that the chunk fuzzer and its seed maker
// both build the same way (no randomness from the library: a fixed
// generator), so that the seeds' seq chunks name a profile the fuzzer holds
// and mutated seq chunks reach the whole seq decoder (parameters, adaptive
// and lane streams, arith=int12).
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "seqkv/codec/dtype.h"
#include "seqkv/codec/seq_profile.h"

namespace seqkv::fuzz {

inline constexpr KvShape kFuzzSeqShape{2, 2, 16, 8};  // layers, kv_heads, tokens (chunks), head_dim

// A chunk of the profile's shape with `tokens` tokens: bf16 values from a
// fixed generator (sums of uniforms, a few larger channels).
inline Chunk FuzzSeqChunk(uint32_t tokens, uint64_t seed) {
  Chunk c;
  c.shape = kFuzzSeqShape;
  c.shape.tokens = tokens;
  c.dtype = DType::kBF16;
  c.rope = {RopeStyle::kRotateHalf, 10000.0, kFuzzSeqShape.head_dim};
  c.tokens.assign(tokens, 7);
  uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
  auto uniform = [&]() {
    x = x * 6364136223846793005ull + 1442695040888963407ull;
    return static_cast<float>((x >> 40) & 0xFFFFFF) / float(1 << 24) - 0.5f;
  };
  std::vector<float> values(c.shape.elements());
  for (auto* tensor : {&c.k, &c.v}) {
    for (size_t i = 0; i < values.size(); ++i) {
      const float scale = (i % c.shape.head_dim == 3) ? 4.0f : 1.0f;
      values[i] = (uniform() + uniform() + uniform() + uniform()) * scale;
    }
    tensor->resize(values.size() * DTypeSize(c.dtype));
    FromFloat(c.dtype, values.data(), values.size(), tensor->data());
  }
  return c;
}

// Calibrates the profile (same head, static and signed models) and adds it
// to SeqResources::Default(); null if calibration fails.
inline std::shared_ptr<const SeqProfile> AddFuzzSeqProfile() {
  SeqCalibrateOptions o;
  o.inputs = SeqInputs::kSameHead;
  auto profile = CalibrateSeqProfile({FuzzSeqChunk(64, 1), FuzzSeqChunk(64, 2)}, o, nullptr);
  if (!profile.ok()) return nullptr;
  auto shared = std::make_shared<const SeqProfile>(std::move(*profile));
  SeqResources::Default().AddProfile(shared);
  return shared;
}

// The seq specs whose sections seq_sections_fuzzer mutates (and
// make_fuzz_seeds writes), in this order, each coding FuzzSeqChunk(16, 100).
inline const char* const kFuzzSeqSpecs[] = {"seq:delta=0.5,streams=adaptive", "seq:delta=0.5,streams=lanes",
                                            "seq:delta=0.5", "seq:delta=0.5,arith=int12",
                                            "seq:delta=0.5,streams=lanes3"};
inline constexpr uint32_t kFuzzSeqSpecCount = sizeof(kFuzzSeqSpecs) / sizeof(kFuzzSeqSpecs[0]);

}  // namespace seqkv::fuzz

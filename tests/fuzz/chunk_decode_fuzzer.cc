// libFuzzer target: DecodeChunk must never crash, hang or read out of bounds,
// whatever the bytes. Built with clang -fsanitize=fuzzer,address,undefined.
// It holds the seed maker's sequential-codec profile (fuzz_profile.h), so
// mutated seq chunks reach the seq decoder.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <span>

#include "fuzz_profile.h"
#include "seqkv/codec/format.h"

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  if (seqkv::fuzz::AddFuzzSeqProfile() == nullptr) std::abort();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::span<const uint8_t> bytes(data, size);
  auto chunk = seqkv::DecodeChunk(bytes);
  if (chunk.ok()) {
    // A chunk that decodes must be self-consistent.
    if (chunk->k.size() != chunk->TensorBytes() || chunk->tokens.size() != chunk->shape.tokens) __builtin_trap();
  }
  (void)seqkv::DecodeTokens(bytes);
  return 0;
}

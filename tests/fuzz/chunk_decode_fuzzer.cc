// libFuzzer target: DecodeChunk must never crash, hang or read out of bounds,
// whatever the bytes. Built with clang -fsanitize=fuzzer,address,undefined.
#include <cstddef>
#include <cstdint>
#include <span>

#include "seqkv/codec/format.h"

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

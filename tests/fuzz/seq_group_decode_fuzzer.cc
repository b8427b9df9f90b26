// libFuzzer target: the seq lossy codec's group entropy decoder
// (codec/src/seq_lossy_core.h) must never crash, hang or read out of bounds,
// whatever the bytes, and what it accepts must re-encode to the same bytes.
// The first two bytes pick the shape (tokens 1..64, dim 1..64).
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "../../codec/src/seq_lossy_core.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  const uint32_t tokens = 1 + data[0] % 64, dim = 1 + data[1] % 64;
  std::span<const uint8_t> stream(data + 2, size - 2);
  std::vector<int32_t> q(size_t{tokens} * dim);
  seqkv::internal::SeqGroupState state(dim);
  if (seqkv::internal::SeqDecodeGroup(stream, tokens, dim, q.data(), &state).ok()) {
    // The coder is a bijection on valid streams: decoding then encoding gives the input back.
    std::vector<uint8_t> again = seqkv::internal::SeqEncodeGroup(q.data(), tokens, dim);
    if (again.size() != stream.size() || !std::equal(again.begin(), again.end(), stream.begin())) __builtin_trap();
  }
  return 0;
}

// libFuzzer target: the seq lossy codec's group entropy decoders
// (codec/src/seq_lossy_core.h) — the adaptive group stream and the lane
// stream with either static model (magnitude, signed) and the split lane
// stream (streams=lanes3) — must never crash, hang or read out of bounds,
// whatever the bytes.
// What the adaptive decoder accepts must re-encode to the same bytes; what the
// lane decoder accepts must re-encode to a stream that decodes to the same
// symbols (its encoder may pick another class shift). The first two bytes
// pick the shape (tokens 1..64, dim 1..64); the lane decoder's classes come
// from the shape.
#include <algorithm>
#include <cstdlib>
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "../../codec/src/seq_lanes.h"
#include "../../codec/src/seq_lossy_core.h"
#include "seqkv/codec/seq_profile.h"

namespace {

// Tables of a made-up static model: rows geometric in the symbol, steeper for
// lower classes (every frequency >= 1, rows of 2^15).
const seqkv::internal::SeqStaticTables& Tables() {
  static const seqkv::internal::SeqStaticTables tables = [] {
    using namespace seqkv::internal;
    seqkv::SeqProfile p;
    const int rows = kSeqStaticClasses * kSeqLaneContexts;
    p.static_freq.resize(size_t(rows) * kSeqLaneSymbols);
    for (int r = 0; r < rows; ++r) {
      std::vector<uint64_t> counts(kSeqLaneSymbols);
      uint64_t c = 1u << 20;
      const uint32_t keep = 8 + (r / kSeqLaneContexts) * 7 / kSeqStaticClasses;  // c * keep / 16 per symbol
      for (int s = 0; s < kSeqLaneSymbols; ++s, c = c * keep / 16 + 1) counts[s] = c;
      SeqStaticRow(counts.data(), &p.static_freq[size_t(r) * kSeqLaneSymbols]);
    }
    p.signed_freq.resize(size_t(kSeqStaticClasses) * kSeqSignedSymbols);
    for (int r = 0; r < kSeqStaticClasses; ++r) {  // geometric in |q| around the zero symbol
      std::vector<uint64_t> counts(kSeqSignedSymbols);
      const uint32_t keep = 8 + r * 7 / kSeqStaticClasses;
      for (int s = 0; s < kSeqSignedSymbols; ++s) {
        uint64_t c = 1u << 20;
        for (int m = std::abs(s - kSeqSignedZero); m > 0; --m) c = c * keep / 16 + 1;
        counts[s] = c;
      }
      SeqStaticRow(counts.data(), &p.signed_freq[size_t(r) * kSeqSignedSymbols], kSeqSignedSymbols);
    }
    return MakeSeqStaticTables(p);
  }();
  return tables;
}

}  // namespace

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
  std::vector<int16_t> classes(dim);
  for (uint32_t i = 0; i < dim; ++i) classes[i] = static_cast<int16_t>((i * 37 + data[0]) % 200) - 120;
  const seqkv::internal::SeqStaticTables& tables = Tables();
  for (const auto model : {seqkv::internal::SeqLaneModel::kMagnitude, seqkv::internal::SeqLaneModel::kSigned,
                           seqkv::internal::SeqLaneModel::kSplit}) {
    if (seqkv::internal::SeqDecodeLaneGroup(stream, tokens, dim, tables, classes.data(), q.data(), model).ok()) {
      std::vector<uint8_t> again =
          seqkv::internal::SeqEncodeLaneGroup(q.data(), tokens, dim, tables, classes.data(), model);
      std::vector<int32_t> back(q.size(), 7);
      if (!seqkv::internal::SeqDecodeLaneGroup(again, tokens, dim, tables, classes.data(), back.data(), model).ok() ||
          back != q) {
        __builtin_trap();
      }
    }
  }
  return 0;
}

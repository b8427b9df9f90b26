// Context-mixing coder for token ids (TokenCoding::kContextMixed), with no
// language model: it learns from the ids of the chunk alone.
//
// Each id is decomposed into binary decisions: its bit length (0..31) as a
// 5-level binary tree, then the bits below the leading one, most significant
// first (BPE vocabularies put frequent tokens at small ids, so the length
// carries a useful prior). Decisions go in groups of four that share a cache
// line of counters per context. Each decision is predicted by adaptive counters
// in hashed contexts of order 0..3 (the decision node alone, then with the
// previous 1, 2 and 3 ids) and by a match model (the id that followed the
// last occurrence of the current 2-id context), mixed by a logistic mixer
// selected by decision depth and match state, refined by an APM, and coded
// with the adaptive binary rANS coder (rans.h). Table sizes follow from the
// id count, which the decoder knows. docs/format.md has the normative spec.
//
// Thread safety: free functions, no shared state.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "seqkv/codec/status.h"

namespace seqkv::internal {

// InvalidArgument if any id is negative.
Result<std::vector<uint8_t>> EncodeTokensCm(std::span<const int32_t> ids);
// Decodes exactly `count` ids; DataLoss on any inconsistency. Work and memory
// are bounded by count (at most 35 binary decisions per id).
Result<std::vector<int32_t>> DecodeTokensCm(std::span<const uint8_t> bytes, uint32_t count);

}  // namespace seqkv::internal

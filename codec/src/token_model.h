// Coders for token ids with no language model: they learn from the ids of
// the chunk alone (no state shared between chunks). docs/format.md, "Token
// coding", describes both streams; this file's .cc is their reference.
//
// Token coding 4 (EncodeTokensCountMixed). Each id is *seen* (it occurred
// earlier in the chunk) or *novel*, one decision. A seen id walks a binary
// tree over id values (bit length, then the bits below the leading one),
// skipping nodes where one side holds no seen id, and each decision mixes
// four distributions over the seen ids: interpolated Kneser-Ney over the
// previous 0..4 ids (the workhorse), Kneser-Ney over skip contexts, a Zipf
// prior 1/(id + 128) (BPE vocabularies give small ids to frequent tokens),
// and the last 48 ids; a logistic mixer adds a match model and an APM
// refines. A novel id codes its bit length from decayed counts and its
// lower bits from the Zipf prior, both over the ids not yet seen. A binary
// arithmetic coder (entropy_cm.h) takes the decisions; 16 check bits end
// the stream. All integer arithmetic.
//
// Token coding 3 (EncodeTokensCm), kept so stored chunks decode: hashed
// adaptive counters of order 0..3 over the same tree, a match model, a
// mixer and an APM, with binary rANS (rans.h).
//
// Measured on the 8 dev dumps (1024 ids each, vocabulary 8192), bits per
// id: coding 4 7.95, coding 3 8.47, zstd-19 of the raw ids 11.66. Coding 4
// takes about 6 ms per 1024 ids each way, coding 3 about 2 ms.
//
// Thread safety: free functions, no shared state.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "seqkv/codec/status.h"

namespace seqkv::internal {

// Token coding 4. InvalidArgument if an id is negative or there are more
// than 65536; ResourceExhausted if the ids need more context statistics than
// the tables hold (16 + 12 MiB; 65536 ids of text fill them to 60%; ids
// spread over 2^31 can exceed them). Callers then use another coding.
Result<std::vector<uint8_t>> EncodeTokensCountMixed(std::span<const int32_t> ids);
// Decodes exactly `count` ids; DataLoss on any inconsistency (count over
// 65536, a stream too short or too long, a failed check). Work is bounded
// by count (at most 36 decisions per id) and stops at the first overrun;
// memory grows with the ids decoded, to at most the tables' 28 MiB.
Result<std::vector<int32_t>> DecodeTokensCountMixed(std::span<const uint8_t> bytes, uint32_t count);

// Token coding 3. InvalidArgument if any id is negative.
Result<std::vector<uint8_t>> EncodeTokensCm(std::span<const int32_t> ids);
// Decodes exactly `count` ids; DataLoss on any inconsistency. Work and memory
// are bounded by count (at most 35 binary decisions per id).
Result<std::vector<int32_t>> DecodeTokensCm(std::span<const uint8_t> bytes, uint32_t count);

}  // namespace seqkv::internal

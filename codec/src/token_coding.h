// Coding of the token ids carried in every chunk header.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "seqkv/codec/format.h"

namespace seqkv::internal {

// How hard to try. kFast: raw or bit-packed only (microseconds; for chunks
// that carry KV, where the ids are a rounding error of the size). kSmallest:
// also zstd and the context-mixing model (about 0.5 ms per 256 ids to encode
// and again to parse; for the token-only tier, where the ids are the payload).
enum class TokenEffort { kFast, kSmallest };

// Encodes ids with the smallest of the allowed TokenCoding methods; sets *coding.
std::vector<uint8_t> EncodeTokenIds(std::span<const int32_t> ids, TokenEffort effort, TokenCoding* coding);
// Encodes ids with the given method (kContextMixed: empty if an id is negative).
std::vector<uint8_t> EncodeTokenIdsWith(std::span<const int32_t> ids, TokenCoding coding);
// Decodes exactly `count` ids; DataLoss on any inconsistency.
Result<std::vector<int32_t>> DecodeTokenIds(TokenCoding coding, std::span<const uint8_t> bytes, uint32_t count);

}  // namespace seqkv::internal

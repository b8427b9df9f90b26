// Coding of the token ids carried in every chunk header.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "seqkv/codec/format.h"

namespace seqkv::internal {

// Token coding 4 (token_model.h: mixed Kneser-Ney counts, arithmetic-coded).
// Its enumerator belongs in format.h (TokenCoding::kCountMixed = 4); until
// format.h names it and its parser accepts it (kLastTokenCoding >= 4),
// EncodeTokenIds does not pick it, while DecodeTokenIds already reads it.
inline constexpr TokenCoding kTokenCodingCountMixed = static_cast<TokenCoding>(4);
inline constexpr bool kTokenCodingCountMixedEnabled = static_cast<uint8_t>(kLastTokenCoding) >= 4;

// How hard to try. kFast: raw or bit-packed only (microseconds; for chunks
// that carry KV, where the ids are a rounding error of the size). kSmallest:
// also zstd and both context-mixing models (about 8 ms per 1024 ids to
// encode, 6 ms to parse coding 4; for the token-only tier, where the ids are
// the payload).
enum class TokenEffort { kFast, kSmallest };

// Encodes ids with the smallest of the allowed TokenCoding methods; sets *coding.
std::vector<uint8_t> EncodeTokenIds(std::span<const int32_t> ids, TokenEffort effort, TokenCoding* coding);
// Encodes ids with the given method. Empty when the method cannot take the
// ids: kContextMixed and coding 4 if an id is negative, coding 4 beyond
// 65536 ids or when its tables fill.
std::vector<uint8_t> EncodeTokenIdsWith(std::span<const int32_t> ids, TokenCoding coding);
// Decodes exactly `count` ids; DataLoss on any inconsistency.
Result<std::vector<int32_t>> DecodeTokenIds(TokenCoding coding, std::span<const uint8_t> bytes, uint32_t count);

}  // namespace seqkv::internal

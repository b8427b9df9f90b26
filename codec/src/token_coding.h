// Coding of the token ids carried in every chunk header.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "seqkv/codec/format.h"

namespace seqkv::internal {

// Encodes ids with the smallest of the TokenCoding methods; sets *coding.
std::vector<uint8_t> EncodeTokenIds(std::span<const int32_t> ids, TokenCoding* coding);
// Encodes ids with the given method.
std::vector<uint8_t> EncodeTokenIdsWith(std::span<const int32_t> ids, TokenCoding coding);
// Decodes exactly `count` ids; DataLoss on any inconsistency.
Result<std::vector<int32_t>> DecodeTokenIds(TokenCoding coding, std::span<const uint8_t> bytes, uint32_t count);

}  // namespace seqkv::internal

// Verification of encoded chunk bytes before they become visible or are
// served: the container header (ParseChunkHeader) and every section checksum,
// without running the codec.
#pragma once

#include <cstdint>
#include <span>

#include "seqkv/codec/format.h"
#include "seqkv/codec/status.h"

namespace seqkv::server::internal {

// The parsed header if the header and all section checksums verify;
// DataLoss naming the first failure otherwise.
Result<ChunkHeader> VerifyChunk(std::span<const uint8_t> bytes);

// Uncompressed K+V bytes the chunk stands for (0 for a token-only chunk).
uint64_t RawKvBytes(const ChunkHeader& header);

}  // namespace seqkv::server::internal

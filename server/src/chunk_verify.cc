#include "chunk_verify.h"

#include <string>

namespace seqkv::server::internal {

// One hash pass over the sections, no decompression (seqkv::VerifyChunk).
Result<ChunkHeader> VerifyChunk(std::span<const uint8_t> bytes) { return seqkv::VerifyChunk(bytes); }

uint64_t RawKvBytes(const ChunkHeader& header) {
  if (header.codec_id == CodecId::kTokens) return 0;
  return 2 * header.shape.elements() * DTypeSize(header.dtype);
}

}  // namespace seqkv::server::internal

// The encoded-chunk container (docs/format.md is the normative description).
//
// EncodeChunk frames a codec's sections behind a versioned, checksummed
// header. DecodeChunk validates every length, count and checksum before it
// reads anything, and returns a clear error (never a crash, never wrong
// data) on truncated, corrupt or hostile input: a corrupt chunk is a miss.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "seqkv/codec/chunk.h"
#include "seqkv/codec/codec.h"
#include "seqkv/codec/status.h"

namespace seqkv {

inline constexpr uint32_t kChunkMagic = 0x564B5153;  // "SQKV" little-endian
inline constexpr uint16_t kFormatVersion = 1;
inline constexpr uint32_t kMaxSections = 255;
inline constexpr uint32_t kMaxSpecBytes = 1024;

// Header flags. A decoder rejects chunks with flags it does not know.
enum ChunkFlags : uint32_t {
  kFlagNone = 0,
  kFlagNeedsParent = 1u << 0,   // decoding needs the parent chunk (sequential codec)
  kFlagNeedsModel = 1u << 1,    // decoding needs the model's weights
  kFlagNeedsProfile = 1u << 2,  // decoding needs a codec profile
};
inline constexpr uint32_t kKnownFlags = kFlagNeedsParent | kFlagNeedsModel | kFlagNeedsProfile;

// How the header stores token ids (the encoder picks the smallest).
enum class TokenCoding : uint8_t {
  kRaw32 = 0,     // uint32 little-endian each
  kBitPacked = 1, // u8 width, then ids packed LSB-first at that width
  kZstd = 2,      // zstd frame of the kRaw32 bytes
  kContextMixed = 3,  // adaptive context mixing + binary rANS (token_model.h)
  kCountMixed = 4,    // mixed Kneser-Ney counts + binary arithmetic coding (token_model.h)
};
inline constexpr TokenCoding kLastTokenCoding = TokenCoding::kCountMixed;

struct SectionInfo {
  uint32_t type = 0;
  uint64_t offset = 0;  // from the start of the chunk
  uint64_t length = 0;
  uint64_t checksum = 0;  // XXH3-64 of the payload
};

struct ChunkHeader {
  uint16_t version = 0;
  CodecId codec_id{};
  uint32_t flags = 0;
  KvShape shape;
  DType dtype = DType::kBF16;
  RopeParams rope;
  uint64_t first_position = 0;
  std::string codec_spec;
  TokenCoding token_coding = TokenCoding::kRaw32;
  std::vector<int32_t> tokens;
  std::vector<SectionInfo> sections;
  uint64_t header_bytes = 0;
  uint64_t total_bytes = 0;  // header + all sections == size of the chunk
};

// Encodes chunk with codec. InvalidArgument if the chunk is invalid.
Result<std::vector<uint8_t>> EncodeChunk(const Chunk& chunk, const Codec& codec, uint32_t flags = 0);

// Parent-conditioned encode: when `parent` (the context of the chunk this one
// continues) is given and the codec can use it, the chunk is coded in that
// context and carries kFlagNeedsParent; decoding it then needs the same
// parent context. *next (optional) receives the context for a chunk that
// continues this one. A codec that cannot continue codes a plain chunk.
Result<std::vector<uint8_t>> EncodeChunk(const Chunk& chunk, const Codec& codec, const ChunkContext* parent,
                                         ChunkContext* next);

// Frames sections that a codec produced elsewhere (a GPU encoder) into the
// bytes EncodeChunk would write for them: `meta` gives the shape, dtype, RoPE,
// first position and token ids (its K and V are not read), `flags` the
// header flags (the codec's ChunkFlags plus kFlagNeedsParent if it applies).
// InvalidArgument for a bad shape, token count, spec or section count.
Result<std::vector<uint8_t>> FrameChunk(const Chunk& meta, CodecId codec_id, const std::string& codec_spec,
                                        uint32_t flags, std::span<const SectionView> sections);

// Parses and validates the header: magic, version, header checksum, bounds,
// flags, token ids, and that the section table exactly covers `bytes`.
// Does not verify the section checksums.
Result<ChunkHeader> ParseChunkHeader(std::span<const uint8_t> bytes);

// ParseChunkHeader plus every section checksum, without running the codec:
// what a store checks before it makes a chunk visible or serves it.
Result<ChunkHeader> VerifyChunk(std::span<const uint8_t> bytes);

// Full decode: header, every section checksum, then the codec named by the
// header (from the default registry). A token-only chunk returns a status for
// which IsRecomputeNeeded() is true; use DecodeTokens for its ids.
Result<Chunk> DecodeChunk(std::span<const uint8_t> bytes);

// Decode with the parent's context (from DecodeChunk or EncodeChunk of the
// parent chunk), needed when the chunk carries kFlagNeedsParent: without it,
// FailedPrecondition; with another chunk's context, FailedPrecondition.
// *next (optional) receives this chunk's context for its child.
Result<Chunk> DecodeChunk(std::span<const uint8_t> bytes, const ChunkContext* parent, ChunkContext* next);

// Header-only decode: the chunk with tokens, shape and position, no K/V.
Result<Chunk> DecodeTokens(std::span<const uint8_t> bytes);

bool IsRecomputeNeeded(const Status& status);

}  // namespace seqkv

// The encoded-chunk container. Layout (all little-endian; docs/format.md):
//
//   0  u32 magic "SQKV"       4  u16 version          6  u16 codec id
//   8  u32 header_size       12  u32 flags
//  16  u8 dtype  17 u8 rope style  18 u16 reserved (0)
//  20  u32 layers  24 u32 kv_heads  28 u32 head_dim  32 u32 tokens
//  36  u32 rope dim          40  f64 rope theta       48 u64 first position
//  56  u16 spec length       58  u8 token coding      59 u8 section count
//  60  u32 token bytes
//  64  spec (ASCII), token ids (coded), section table: count x
//      {u32 type, u32 reserved (0), u64 length, u64 xxh3}
//      u64 xxh3 of header bytes [0, header_size - 8)
//  then the section payloads, in table order, with nothing after them.
#include "seqkv/codec/format.h"

#include <cmath>
#include <limits>

#include "bytes.h"
#include "checksum.h"
#include "token_coding.h"

namespace seqkv {

namespace {

using internal::ByteReader;
using internal::ByteWriter;

constexpr size_t kFixedHeaderBytes = 64;
constexpr size_t kSectionEntryBytes = 24;
constexpr std::string_view kRecomputePrefix = "recompute needed";

}  // namespace

namespace {

// The header and the sections; `store_kv` picks the token-id effort (ids are
// the payload of a token-only chunk: as small as we can; beside KV they are
// noise in the size, so there the fast coding wins).
Result<std::vector<uint8_t>> Frame(const Chunk& chunk, CodecId codec_id, const std::string& spec, uint32_t flags,
                                   bool store_kv, std::span<const SectionView> sections) {
  if ((flags & ~kKnownFlags) != 0) return InvalidArgument("unknown chunk flags");
  if (sections.size() > kMaxSections) return Internal("codec produced too many sections");
  if (spec.size() > kMaxSpecBytes) return InvalidArgument("codec spec longer than 1024 bytes");

  TokenCoding token_coding;
  std::vector<uint8_t> token_bytes = internal::EncodeTokenIds(
      chunk.tokens, store_kv ? internal::TokenEffort::kFast : internal::TokenEffort::kSmallest, &token_coding);

  uint64_t payload_bytes = 0;
  for (const SectionView& s : sections) payload_bytes += s.data.size();
  size_t header_size = kFixedHeaderBytes + spec.size() + token_bytes.size() +
                       sections.size() * kSectionEntryBytes + 8;

  std::vector<uint8_t> out;
  out.reserve(header_size + payload_bytes);
  ByteWriter w(&out);
  w.U32(kChunkMagic);
  w.U16(kFormatVersion);
  w.U16(static_cast<uint16_t>(codec_id));
  w.U32(static_cast<uint32_t>(header_size));
  w.U32(flags);
  w.U8(static_cast<uint8_t>(chunk.dtype));
  w.U8(static_cast<uint8_t>(chunk.rope.style));
  w.U16(0);
  w.U32(chunk.shape.layers);
  w.U32(chunk.shape.kv_heads);
  w.U32(chunk.shape.head_dim);
  w.U32(chunk.shape.tokens);
  w.U32(chunk.rope.dim);
  w.F64(chunk.rope.theta);
  w.U64(chunk.first_position);
  w.U16(static_cast<uint16_t>(spec.size()));
  w.U8(static_cast<uint8_t>(token_coding));
  w.U8(static_cast<uint8_t>(sections.size()));
  w.U32(static_cast<uint32_t>(token_bytes.size()));
  w.Str(spec);
  w.Bytes(token_bytes);
  for (const SectionView& s : sections) {
    w.U32(s.type);
    w.U32(0);
    w.U64(s.data.size());
    w.U64(internal::Xxh3(s.data));
  }
  w.U64(internal::Xxh3(std::span<const uint8_t>(out.data(), out.size())));
  if (out.size() != header_size) return Internal("chunk header size mismatch");
  for (const SectionView& s : sections) w.Bytes(s.data);
  return out;
}

Result<std::vector<uint8_t>> EncodeChunkImpl(const Chunk& chunk, const Codec& codec, uint32_t flags,
                                             const ChunkContext* parent, ChunkContext* next) {
  SEQKV_RETURN_IF_ERROR(chunk.Validate());
  if ((flags & ~kKnownFlags) != 0) return InvalidArgument("unknown chunk flags");
  flags |= codec.ChunkFlags();
  const bool continues = parent != nullptr && codec.StoresKv() && codec.CanContinue(*parent);
  if (continues) flags |= kFlagNeedsParent;
  std::vector<Section> sections;
  if (codec.StoresKv()) {
    if (parent != nullptr || next != nullptr) {
      SEQKV_RETURN_IF_ERROR(codec.EncodeContinuing(chunk, continues ? parent : nullptr, &sections, next));
    } else {
      SEQKV_RETURN_IF_ERROR(codec.Encode(chunk, &sections));
    }
  } else if (next != nullptr) {
    *next = ChunkContext{};
  }
  std::vector<SectionView> views;
  for (const Section& s : sections) views.push_back({s.type, s.data});
  SEQKV_ASSIGN_OR_RETURN(std::vector<uint8_t> out,
                         Frame(chunk, codec.id(), codec.Spec(), flags, codec.StoresKv(), views));
  if (next != nullptr) next->chunk_hash = internal::Xxh3(out);
  return out;
}

}  // namespace

Result<std::vector<uint8_t>> FrameChunk(const Chunk& meta, CodecId codec_id, const std::string& codec_spec,
                                        uint32_t flags, std::span<const SectionView> sections) {
  SEQKV_RETURN_IF_ERROR(meta.ValidateMeta());
  return Frame(meta, codec_id, codec_spec, flags, true, sections);
}

Result<std::vector<uint8_t>> EncodeChunk(const Chunk& chunk, const Codec& codec, uint32_t flags) {
  return EncodeChunkImpl(chunk, codec, flags, nullptr, nullptr);
}

Result<std::vector<uint8_t>> EncodeChunk(const Chunk& chunk, const Codec& codec, const ChunkContext* parent,
                                         ChunkContext* next) {
  return EncodeChunkImpl(chunk, codec, 0, parent, next);
}

Result<ChunkHeader> ParseChunkHeader(std::span<const uint8_t> bytes) {
  if (bytes.size() < kFixedHeaderBytes + 8) {
    return DataLoss("chunk truncated: " + std::to_string(bytes.size()) + " bytes, header needs at least " +
                    std::to_string(kFixedHeaderBytes + 8));
  }
  ByteReader r(bytes);
  ChunkHeader h;
  if (r.U32() != kChunkMagic) return DataLoss("not a seqkv chunk (bad magic)");
  h.version = r.U16();
  if (h.version != kFormatVersion) {
    return DataLoss("unsupported chunk format version " + std::to_string(h.version) + " (this build reads " +
                    std::to_string(kFormatVersion) + ")");
  }
  h.codec_id = static_cast<CodecId>(r.U16());
  uint32_t header_size = r.U32();
  if (header_size < kFixedHeaderBytes + 8 || header_size > bytes.size()) {
    return DataLoss("chunk header size " + std::to_string(header_size) + " does not fit in " +
                    std::to_string(bytes.size()) + " bytes (truncated?)");
  }
  // Verify the header checksum before trusting any variable-length field.
  {
    ByteReader cr(bytes.subspan(header_size - 8, 8));
    uint64_t stored = cr.U64();
    if (stored != internal::Xxh3(bytes.subspan(0, header_size - 8))) {
      return DataLoss("chunk header checksum mismatch");
    }
  }
  h.header_bytes = header_size;
  h.flags = r.U32();
  if ((h.flags & ~kKnownFlags) != 0) return DataLoss("chunk has unknown flags " + std::to_string(h.flags));
  uint8_t dtype = r.U8();
  uint8_t rope_style = r.U8();
  if (r.U16() != 0) return DataLoss("chunk header reserved field not zero");
  if (!IsValidDType(dtype)) return DataLoss("chunk has unknown dtype " + std::to_string(dtype));
  if (rope_style > static_cast<uint8_t>(RopeStyle::kInterleaved)) {
    return DataLoss("chunk has unknown RoPE style " + std::to_string(rope_style));
  }
  h.dtype = static_cast<DType>(dtype);
  h.rope.style = static_cast<RopeStyle>(rope_style);
  h.shape.layers = r.U32();
  h.shape.kv_heads = r.U32();
  h.shape.head_dim = r.U32();
  h.shape.tokens = r.U32();
  h.rope.dim = r.U32();
  h.rope.theta = r.F64();
  h.first_position = r.U64();
  if (Status s = ValidateShape(h.shape, h.dtype); !s.ok()) return DataLoss("chunk shape: " + s.message());
  if (h.rope.style != RopeStyle::kNone &&
      (h.rope.dim == 0 || h.rope.dim > h.shape.head_dim || h.rope.dim % 2 != 0 ||
       !std::isfinite(h.rope.theta) || !(h.rope.theta > 0.0))) {
    return DataLoss("chunk has invalid RoPE parameters");
  }
  uint16_t spec_len = r.U16();
  uint8_t token_coding = r.U8();
  uint8_t section_count = r.U8();
  uint32_t token_bytes = r.U32();
  if (spec_len == 0 || spec_len > kMaxSpecBytes) return DataLoss("chunk codec spec length invalid");
  if (token_coding > static_cast<uint8_t>(kLastTokenCoding)) return DataLoss("chunk token coding unknown");
  h.token_coding = static_cast<TokenCoding>(token_coding);
  uint64_t expected_header = kFixedHeaderBytes + uint64_t{spec_len} + token_bytes +
                             uint64_t{section_count} * kSectionEntryBytes + 8;
  if (expected_header != header_size) return DataLoss("chunk header size inconsistent with its fields");
  auto spec = r.Bytes(spec_len);
  h.codec_spec.assign(spec.begin(), spec.end());
  for (char c : h.codec_spec) {
    if (c < 0x21 || c > 0x7E) return DataLoss("chunk codec spec is not printable ASCII");
  }
  auto tokens = r.Bytes(token_bytes);
  SEQKV_ASSIGN_OR_RETURN(h.tokens, internal::DecodeTokenIds(h.token_coding, tokens, h.shape.tokens));
  uint64_t offset = header_size;
  for (uint32_t i = 0; i < section_count; ++i) {
    SectionInfo s;
    s.type = r.U32();
    if (r.U32() != 0) return DataLoss("chunk section reserved field not zero");
    s.length = r.U64();
    s.checksum = r.U64();
    s.offset = offset;
    if (s.length > bytes.size() - offset) {
      return DataLoss("chunk truncated: section " + std::to_string(i) + " runs past the end");
    }
    offset += s.length;
    h.sections.push_back(s);
  }
  if (!r.ok() || r.pos() != header_size - 8) return DataLoss("chunk header malformed");
  if (offset != bytes.size()) {
    return DataLoss("chunk size " + std::to_string(bytes.size()) + " does not match its sections (" +
                    std::to_string(offset) + " bytes)");
  }
  h.total_bytes = offset;
  return h;
}

namespace {

Chunk ChunkFromHeader(ChunkHeader& h) {
  Chunk c;
  c.shape = h.shape;
  c.dtype = h.dtype;
  c.rope = h.rope;
  c.first_position = h.first_position;
  c.tokens = std::move(h.tokens);
  return c;
}

}  // namespace

Result<Chunk> DecodeTokens(std::span<const uint8_t> bytes) {
  SEQKV_ASSIGN_OR_RETURN(ChunkHeader h, ParseChunkHeader(bytes));
  return ChunkFromHeader(h);
}

Result<ChunkHeader> VerifyChunk(std::span<const uint8_t> bytes) {
  SEQKV_ASSIGN_OR_RETURN(ChunkHeader h, ParseChunkHeader(bytes));
  for (size_t i = 0; i < h.sections.size(); ++i) {
    const SectionInfo& s = h.sections[i];
    if (internal::Xxh3(bytes.subspan(s.offset, s.length)) != s.checksum) {
      return DataLoss("chunk section " + std::to_string(i) + " checksum mismatch");
    }
  }
  return h;
}

Result<Chunk> DecodeChunk(std::span<const uint8_t> bytes) { return DecodeChunk(bytes, nullptr, nullptr); }

Result<Chunk> DecodeChunk(std::span<const uint8_t> bytes, const ChunkContext* parent, ChunkContext* next) {
  SEQKV_ASSIGN_OR_RETURN(ChunkHeader h, VerifyChunk(bytes));
  std::vector<SectionView> views;
  views.reserve(h.sections.size());
  for (const SectionInfo& s : h.sections) views.push_back({s.type, bytes.subspan(s.offset, s.length)});
  auto codec = MakeCodec(h.codec_spec);
  if (!codec.ok()) {
    // A profile or model that is not loaded is the caller's to fix, not corruption.
    if (codec.status().code() == StatusCode::kFailedPrecondition) {
      return FailedPrecondition("chunk codec '" + h.codec_spec + "': " + codec.status().message());
    }
    return DataLoss("chunk codec '" + h.codec_spec + "': " + codec.status().message());
  }
  if ((*codec)->id() != h.codec_id) return DataLoss("chunk codec id does not match its spec");
  // Profile and model are resolved by the codec (SeqResources); a parent is not.
  const bool continues = (h.flags & kFlagNeedsParent) != 0;
  if (continues && parent == nullptr) {
    return FailedPrecondition("chunk continues a parent chunk: decode it with the parent's context");
  }
  if (continues && !(*codec)->CanContinue(*parent)) {
    return FailedPrecondition("chunk continues a parent chunk, and the context given is not one this codec can use");
  }
  if (!(*codec)->StoresKv()) {
    return FailedPrecondition(std::string(kRecomputePrefix) + ": token-only chunk (" + h.codec_spec +
                              "), recompute its KV from the token ids");
  }
  Chunk chunk = ChunkFromHeader(h);
  if (continues || next != nullptr) {
    SEQKV_RETURN_IF_ERROR((*codec)->DecodeContinuing(views, continues ? parent : nullptr, &chunk, next));
    if (next != nullptr) next->chunk_hash = internal::Xxh3(bytes);
  } else {
    SEQKV_RETURN_IF_ERROR((*codec)->Decode(views, &chunk));
  }
  if (chunk.k.size() != chunk.TensorBytes() || chunk.v.size() != chunk.TensorBytes()) {
    return Internal("codec " + h.codec_spec + " decoded tensors of the wrong size");
  }
  return chunk;
}

bool IsRecomputeNeeded(const Status& status) {
  return status.code() == StatusCode::kFailedPrecondition &&
         std::string_view(status.message()).substr(0, kRecomputePrefix.size()) == kRecomputePrefix;
}

}  // namespace seqkv

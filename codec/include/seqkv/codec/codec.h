// Codecs and the codec registry.
//
// A codec turns the K and V tensors of a chunk into a list of sections and
// back. The container (format.h) frames the sections with lengths and
// checksums, and carries shape, dtype, RoPE, positions and token ids, so a
// codec only ever sees validated input on decode.
//
// Codecs are immutable after construction: Encode and Decode are const and
// safe to call from many threads at once. They are deterministic: the same
// input and spec give the same bytes on every machine.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "seqkv/codec/chunk.h"
#include "seqkv/codec/status.h"

namespace seqkv {

// Stable numeric ids written into every chunk header. Never reuse a number.
enum class CodecId : uint16_t {
  kRaw = 1,
  kLossless = 2,
  kTurboQuant = 3,
  kKivi = 4,
  kTokens = 5,
  kSeq = 6,  // seq:lossless and (later) seq's lossy modes
};

struct Section {
  uint32_t type = 0;  // codec-defined meaning
  std::vector<uint8_t> data;
};

struct SectionView {
  uint32_t type = 0;
  std::span<const uint8_t> data;
};

// A parsed spec string: "name" or "name:key=value,key=value".
struct CodecSpec {
  std::string name;
  std::map<std::string, std::string> params;

  // Canonical form: keys sorted, as "name:k=v,k=v" (just "name" if no params).
  std::string ToString() const;
};

Result<CodecSpec> ParseCodecSpec(std::string_view text);

// What a codec carries from one chunk to the chunk that continues it (the
// next chunk of the same token sequence), for parent-conditioned coding.
// Produced by EncodeChunk / DecodeChunk (format.h); opaque to callers.
struct ChunkContext {
  uint64_t chunk_hash = 0;            // XXH3-64 of the encoded chunk it came from
  std::string codec_key;              // codec-defined compatibility key
  std::shared_ptr<const void> state;  // codec-defined; null: nothing to carry
};

class Codec {
 public:
  virtual ~Codec() = default;

  virtual CodecId id() const = 0;
  // Canonical spec with every parameter explicit; MakeCodec(Spec()) rebuilds
  // an identical codec. Written into each chunk header.
  virtual std::string Spec() const = 0;
  // False for the token-only tier: chunks carry token ids only.
  virtual bool StoresKv() const { return true; }
  // Header flags (format.h ChunkFlags) every chunk of this codec carries:
  // what its decoder needs besides the chunk (a profile, the model).
  virtual uint32_t ChunkFlags() const { return 0; }

  // Encodes chunk.k and chunk.v (chunk is valid: Chunk::Validate passed).
  virtual Status Encode(const Chunk& chunk, std::vector<Section>* sections) const = 0;
  // Fills chunk->k and chunk->v. chunk's shape, dtype, rope, position and
  // tokens come from the validated header; sections' checksums have been
  // verified. Must still validate every length it reads (a checksum is not
  // an authentication) and return DataLoss on inconsistent sections.
  virtual Status Decode(std::span<const SectionView> sections, Chunk* chunk) const = 0;

  // Parent-conditioned coding (optional). CanContinue: whether this codec can
  // code a chunk in the context of `parent`. The *Continuing calls code with
  // the parent's context (null: a fresh start) and set *next (if non-null)
  // to the context a following chunk may use. The defaults ignore contexts.
  virtual bool CanContinue(const ChunkContext& parent) const {
    (void)parent;
    return false;
  }
  virtual Status EncodeContinuing(const Chunk& chunk, const ChunkContext* parent, std::vector<Section>* sections,
                                  ChunkContext* next) const {
    (void)parent;
    if (next != nullptr) *next = ChunkContext{};
    return Encode(chunk, sections);
  }
  virtual Status DecodeContinuing(std::span<const SectionView> sections, const ChunkContext* parent, Chunk* chunk,
                                  ChunkContext* next) const {
    (void)parent;
    if (next != nullptr) *next = ChunkContext{};
    return Decode(sections, chunk);
  }
};

using CodecFactory = std::function<Result<std::unique_ptr<Codec>>(const CodecSpec&)>;

// Maps spec names to factories. The default registry holds every built-in
// codec; later codecs register themselves the same way. Thread-safe.
class CodecRegistry {
 public:
  static CodecRegistry& Default();

  Status Register(std::string name, CodecId id, CodecFactory factory);
  Result<std::unique_ptr<Codec>> Create(std::string_view spec) const;
  // Registered names, sorted.
  std::vector<std::string> Names() const;
  // Name of the codec with this id, or NotFound.
  Result<std::string> NameOf(CodecId id) const;

 private:
  CodecRegistry();
  struct Impl;
  std::shared_ptr<Impl> impl_;
};

// Shorthand for CodecRegistry::Default().Create(spec).
Result<std::unique_ptr<Codec>> MakeCodec(std::string_view spec);

// Helpers for codec factories: read a typed parameter, with a clear error.
Result<int64_t> SpecInt(const CodecSpec& spec, const std::string& key, int64_t default_value,
                        int64_t min_value, int64_t max_value);
Result<double> SpecDouble(const CodecSpec& spec, const std::string& key, double default_value,
                          double min_value, double max_value);
// InvalidArgument naming the first key of spec not in `allowed`.
Status SpecCheckKeys(const CodecSpec& spec, std::initializer_list<std::string_view> allowed);

}  // namespace seqkv

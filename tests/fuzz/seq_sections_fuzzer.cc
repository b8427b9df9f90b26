// libFuzzer target: the seq codec's decoder on damaged sections. A chunk's
// checksums stop chunk_decode_fuzzer's mutations before the codec, so this
// target hands the codec valid chunks of the fuzz profile (fuzz_profile.h)
// with one section replaced by the input: byte 0 picks the spec
// (kFuzzSeqSpecs), byte 1 the section, the rest is that section's payload.
// Decode must return an error or a chunk of the right size, never crash,
// hang or read out of bounds (ASan, UBSan).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <span>
#include <vector>

#include "fuzz_profile.h"
#include "seqkv/codec/codec.h"
#include "seqkv/codec/format.h"

namespace {

struct Coded {
  std::unique_ptr<seqkv::Codec> codec;
  seqkv::Chunk shape_of;  // the chunk's metadata (K and V empty)
  std::vector<uint8_t> bytes;
  seqkv::ChunkHeader header;
};

std::vector<Coded>& Chunks() {
  static std::vector<Coded> chunks;
  return chunks;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  if (seqkv::fuzz::AddFuzzSeqProfile() == nullptr) std::abort();
  for (const char* spec : seqkv::fuzz::kFuzzSeqSpecs) {
    Coded c;
    auto codec = seqkv::MakeCodec(spec);
    if (!codec.ok()) std::abort();
    c.codec = std::move(*codec);
    c.shape_of = seqkv::fuzz::FuzzSeqChunk(16, 100);
    auto bytes = seqkv::EncodeChunk(c.shape_of, *c.codec);
    if (!bytes.ok()) std::abort();
    c.bytes = std::move(*bytes);
    auto header = seqkv::VerifyChunk(c.bytes);
    if (!header.ok()) std::abort();
    c.header = std::move(*header);
    c.shape_of.k.clear();
    c.shape_of.v.clear();
    // The unmodified sections decode (else the target would test nothing).
    std::vector<seqkv::SectionView> views;
    for (const auto& s : c.header.sections) {
      views.push_back({s.type, std::span<const uint8_t>(c.bytes).subspan(s.offset, s.length)});
    }
    seqkv::Chunk check = c.shape_of;
    if (!c.codec->Decode(views, &check).ok()) std::abort();
    Chunks().push_back(std::move(c));
  }
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  const Coded& c = Chunks()[data[0] % Chunks().size()];
  const size_t replaced = data[1] % c.header.sections.size();
  std::vector<seqkv::SectionView> views;
  for (size_t i = 0; i < c.header.sections.size(); ++i) {
    const auto& s = c.header.sections[i];
    if (i == replaced) {
      views.push_back({s.type, std::span<const uint8_t>(data + 2, size - 2)});
    } else {
      views.push_back({s.type, std::span<const uint8_t>(c.bytes).subspan(s.offset, s.length)});
    }
  }
  seqkv::Chunk out = c.shape_of;
  if (c.codec->Decode(views, &out).ok()) {
    if (out.k.size() != out.TensorBytes() || out.v.size() != out.TensorBytes()) __builtin_trap();
  }
  return 0;
}

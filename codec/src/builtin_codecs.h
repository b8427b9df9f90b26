// Factories of the built-in codecs, called by the default registry.
#pragma once

#include <memory>

#include "seqkv/codec/codec.h"

namespace seqkv::internal {

Result<std::unique_ptr<Codec>> MakeRawCodec(const CodecSpec& spec);
Result<std::unique_ptr<Codec>> MakeLosslessCodec(const CodecSpec& spec);
Result<std::unique_ptr<Codec>> MakeTurboQuantCodec(const CodecSpec& spec);
Result<std::unique_ptr<Codec>> MakeKiviCodec(const CodecSpec& spec);
Result<std::unique_ptr<Codec>> MakeTokensCodec(const CodecSpec& spec);

}  // namespace seqkv::internal

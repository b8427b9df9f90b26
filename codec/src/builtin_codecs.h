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
// seq (CodecId::kSeq): dispatches on the spec's keys to the two below.
Result<std::unique_ptr<Codec>> MakeSeqCodec(const CodecSpec& spec);
// seq:lossless (seq_lossless_codec.cc).
Result<std::unique_ptr<Codec>> MakeSeqLosslessCodec(const CodecSpec& spec);
// seq's lossy modes (bits=, kl=, delta=; seq_lossy_codec.cc).
Result<std::unique_ptr<Codec>> MakeSeqLossyCodec(const CodecSpec& spec);

}  // namespace seqkv::internal

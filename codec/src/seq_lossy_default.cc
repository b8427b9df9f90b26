// Placeholder for the lossy modes of seq (seq:bits=...,kl=...): a weak
// definition that the real one (another file) overrides. Delete this file
// when the lossy codec lands.
#include "builtin_codecs.h"

namespace seqkv::internal {

__attribute__((weak)) Result<std::unique_ptr<Codec>> MakeSeqLossyCodec(const CodecSpec& spec) {
  (void)spec;
  return Unimplemented("seq: lossy modes not built yet (use seq:lossless)");
}

}  // namespace seqkv::internal

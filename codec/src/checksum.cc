#include "checksum.h"

#define XXH_INLINE_ALL
#include <xxhash.h>

namespace seqkv::internal {

uint64_t Xxh3(std::span<const uint8_t> bytes) { return XXH3_64bits(bytes.data(), bytes.size()); }

}  // namespace seqkv::internal

// XXH3 checksums used by the container.
#pragma once

#include <cstdint>
#include <span>

namespace seqkv::internal {

uint64_t Xxh3(std::span<const uint8_t> bytes);

}  // namespace seqkv::internal

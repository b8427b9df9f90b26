// Shared helpers for tests: synthetic chunks and paths to ../shared data.
#pragma once

#include <cstdint>
#include <string>

#include "seqkv/codec/chunk.h"

namespace seqkv::test {

// A chunk of the given shape filled with Gaussian-like values (seeded, so
// deterministic), tokens 0..T-1 scaled by `seed`.
Chunk RandomChunk(const KvShape& shape, DType dtype, uint64_t seed);

// Root of the source tree (SEQKV_SOURCE_DIR, set by CTest).
std::string SourceDir();
// $SEQKV_SHARED_DIR, else ../shared next to the source tree; empty if it does not exist.
std::string SharedDir();
// A dev KV dump from ../shared/kvdata/dev (e.g. "doc00.safetensors").
std::string DevDump(const std::string& name);
// A fresh empty temporary directory, removed by the OS eventually.
std::string TempDir(const std::string& tag);

}  // namespace seqkv::test

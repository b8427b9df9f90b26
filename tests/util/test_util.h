// Shared helpers for tests: synthetic chunks and paths to ../shared data.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "seqkv/codec/chunk.h"
#include "seqkv/codec/codec.h"

namespace seqkv::test {

// A chunk of the given shape filled with Gaussian-like values (seeded, so
// deterministic), tokens 0..T-1 scaled by `seed`.
Chunk RandomChunk(const KvShape& shape, DType dtype, uint64_t seed);

// Tokens [t0, t0 + n) of a chunk (positions follow; seqkv::SliceKv does the
// same for clients, but codec-only builds have no client library).
Chunk SliceTokens(const Chunk& c, uint32_t t0, uint32_t n);

// n standard-normal floats from std::mt19937(seed) (the same on every run).
std::vector<float> RandomFloats(size_t n, uint32_t seed);

// Root of the source tree (SEQKV_SOURCE_DIR, set by CTest).
std::string SourceDir();
// $SEQKV_SHARED_DIR, else ../shared next to the source tree; empty if it does not exist.
std::string SharedDir();
// A dev KV dump from ../shared/kvdata/dev (e.g. "doc00.safetensors").
std::string DevDump(const std::string& name);
// The elements of one of c's tensors (c.k or c.v) as floats.
std::vector<float> Floats(const Chunk& c, const std::vector<uint8_t>& tensor);
// sum((a - b)^2) / sum(a^2) (plain sum of squares when a is all zero).
double RelativeMse(const std::vector<float>& a, const std::vector<float>& b);

// MakeCodec(spec), failing the test (and returning null) on error.
std::unique_ptr<Codec> Make(const std::string& spec);

struct RoundTrip {
  Chunk decoded;
  size_t bytes = 0;  // encoded size; 0 if encoding failed
};
// EncodeChunk then DecodeChunk with spec, failing the test on any error.
RoundTrip EncodeDecode(const std::string& spec, const Chunk& chunk);

// Encodes and decodes `chunk` `runs` times and keeps the fastest times, for
// a rough throughput figure printed by tests on real dumps. ok is false (and
// the test has failed) on any error.
struct TimedRoundTrip {
  bool ok = false;
  std::vector<uint8_t> bytes;
  Chunk decoded;
  double encode_s = 0, decode_s = 0;
};
TimedRoundTrip BestOfRuns(const Codec& codec, const Chunk& chunk, int runs);

// A fresh empty temporary directory, removed by the OS eventually.
std::string TempDir(const std::string& tag);

}  // namespace seqkv::test

// The coded plane of `lossless:coder=rans`: a byte plane (bf16 exponents,
// the high byte of fp16, the top byte of fp32) entropy-coded with static
// rANS in a layout a GPU decodes at memory speed (gpu/src/lossless_kernels.cu
// decodes the same bytes): one frequency table per layer, independent blocks
// of 16384 symbols, each block 32 interleaved rANS states whose word reads
// interleave in lane order, so one warp decodes a block in lockstep.
//
// Normative description: docs/format.md, "lossless (coder=rans)". This file is
// the reference; the GPU kernels must accept and reject exactly what it does.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "seqkv/codec/status.h"

namespace seqkv::internal {

inline constexpr uint32_t kLrBlockSymbols = 16384;  // symbols per block (a multiple of the lanes)
inline constexpr uint32_t kLrLanes = 32;             // interleaved states per block: one warp
inline constexpr uint32_t kLrScaleBits = 11;         // frequencies sum to 2048
inline constexpr uint32_t kLrTotal = 1u << kLrScaleBits;
inline constexpr uint32_t kLrLow = 1u << 16;         // states live in [2^16, 2^32)
inline constexpr uint32_t kLrBlockHeaderBytes = kLrLanes * 4;

// Blocks of a layer of `symbols` symbols.
inline uint64_t LrBlocksOf(uint64_t symbols) { return (symbols + kLrBlockSymbols - 1) / kLrBlockSymbols; }

// Frequencies (sum kLrTotal, >= 1 exactly where counts[s] > 0) from symbol
// counts over `total` > 0 symbols. Deterministic integer arithmetic: the GPU
// encoder runs the same steps.
void LrNormalize(const uint64_t counts[256], uint64_t total, uint32_t freq[256]);

// Encodes `layers` layers of `per_layer` symbols each (layer-major) into the
// coded-plane section.
std::vector<uint8_t> LrEncodePlane(const uint8_t* symbols, uint32_t layers, uint64_t per_layer);

// Decodes a coded-plane section into out[layers * per_layer]. DATA_LOSS for
// anything malformed (bad table, bad block directory, a block whose states
// do not end at 2^16 or whose words are not consumed exactly).
Status LrDecodePlane(std::span<const uint8_t> section, uint32_t layers, uint64_t per_layer, uint8_t* out);

// Upper bound of LrEncodePlane's output size.
uint64_t LrMaxPlaneBytes(uint32_t layers, uint64_t per_layer);

}  // namespace seqkv::internal

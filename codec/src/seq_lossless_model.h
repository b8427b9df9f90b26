// The context-mixing model of seq:lossless for bf16 KV (docs/format.md,
// "seq"). Elements are coded in decode order: layer by layer, K then V,
// each [head, token, channel]; every element's probabilities depend only on
// elements already decoded, so the decoder rebuilds them exactly.
//
// Two predictions feed the contexts: P1, the value at the previous occurrence
// of the same token id in the chunk (keys re-rotated by the position
// difference; at layer 0 this is exact for values, as K/V there depend on the
// token alone), and P2 for keys, the running mean of the de-rotated keys of
// the block rotated to this position (pre-RoPE keys have a strong per-channel
// mean). P1's bits also drive a match input while they agree.
//
// An element's 16 bits are coded as four nibbles of binary decisions:
// exponent high 4 bits, exponent low 4 bits, (sign, mantissa bits 6..4),
// mantissa bits 3..0. Each nibble's decisions are predicted by counters in
// five hashed contexts built from P1, P2 and the neighbours the decoder
// already has: the same channel at the previous token (A), the previous
// channel of the same vector (C) and, for V, the key at the same place (K).
// (The previous layer's value at the same place was tried and measured
// useless: each layer projects the residual stream anew.) The predictions
// are mixed by a logistic mixer whose weights are selected by (tensor,
// nibble, node, P1 state, layer). Integer arithmetic only, except the RoPE
// predictions, which use deterministic double math (seq_lossless_rope.h):
// the same bytes everywhere.
//
// Not thread-safe: one model per encode or decode call.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "seqkv/codec/chunk.h"
#include "seqkv/codec/status.h"

namespace seqkv::internal {

// Section layout of seq:lossless for a shape: streams cover groups of
// `layers_per_section` layers (1 when layers <= 127), K and V apart.
struct SeqLosslessLayout {
  uint32_t layers_per_section = 1;
  uint32_t groups = 0;  // sections = 2 * groups
};
SeqLosslessLayout SeqLosslessLayoutFor(const KvShape& shape);

// Encodes a valid bf16 chunk's K and V into 2 * groups streams, in order
// (group 0 K, group 0 V, group 1 K, ...). Uses the chunk's token ids (a
// repeated token predicts from its previous occurrence), RoPE parameters and
// first position.
std::vector<std::vector<uint8_t>> EncodeSeqLosslessBf16(const Chunk& chunk);
// Decodes the streams (same order) into chunk->k and chunk->v; shape, rope,
// position and tokens must be set. DataLoss on any inconsistency; work is
// bounded by the shape.
Status DecodeSeqLosslessBf16(std::span<const std::span<const uint8_t>> streams, Chunk* chunk);

}  // namespace seqkv::internal

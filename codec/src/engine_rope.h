// Rotary embeddings in float32 exactly as an inference engine applies them
// to the keys it caches (Hugging Face Llama's LlamaRotaryEmbedding and
// apply_rotary_pos_emb), so keys recomputed from a model's weights can be
// compared bit for bit with the keys of a dump, and de-rotated by encoders.
//
// Every float is fixed by IEEE-754 rounding alone (no libm; the library is
// built with -ffp-contract=off), following the engine's float32 steps:
//   e_i       = float(2i) / float(dim)                              (float32 division)
//   inv_i     = 1.0f / float(theta^e_i)  (power in double via DetExp/DetLog, rounded once)
//   angle_t,i = float(position_t) * inv_i                           (float32 product)
//   cos, sin  = float(cos/sin(double(angle)))  (DetSinCos: correctly rounded in practice)
// and the rotation out = x * cos + rotate(x) * sin as a float32 product, a
// float32 product and a float32 sum, per element, as torch does it.
// Engines whose libm cos/sin are off by an ulp (CUDA's sincosf, SLEEF) can
// disagree with these tables on a few elements; nothing else differs.
//
// Thread safety: tables are immutable values; the functions are pure.
#pragma once

#include <cstdint>
#include <vector>

#include "seqkv/codec/chunk.h"

namespace seqkv::internal {

// cos and sin of each rotated channel for a run of positions.
//   kRotateHalf: channel c < rotary_dim uses frequency c mod (rotary_dim / 2)
//                (Hugging Face's emb = cat(freqs, freqs));
//   kInterleaved: channel c uses frequency c / 2 (pairs (2i, 2i + 1)).
// Channels rotary_dim..head_dim-1 are not rotated (partial rotary).
struct RopeTable {
  uint32_t tokens = 0;
  uint32_t head_dim = 0;
  uint32_t rotary_dim = 0;      // even, <= head_dim; 0: no rotation at all
  std::vector<float> inv_freq;  // [rotary_dim / 2]
  std::vector<float> cos;       // [tokens][rotary_dim]
  std::vector<float> sin;       // [tokens][rotary_dim]
};

// The rotary dimensions of a head under `rope`: rope.dim rounded down to
// even, or 0 when the style is kNone or rope.dim < 2, rope.dim > head_dim or
// theta is not positive and finite (then nothing rotates).
uint32_t RotaryDims(const RopeParams& rope, uint32_t head_dim);

// Tables for positions first_position .. first_position + tokens - 1.
RopeTable MakeRopeTable(const RopeParams& rope, uint32_t head_dim, uint64_t first_position, uint32_t tokens);

// Rotates x ([table.tokens][table.head_dim] floats) in place as the engine
// does: out = x * cos + rotate(x) * sin, with rotate_half(x) = cat(-x2, x1)
// for kRotateHalf and (-x[2i+1], x[2i]) for kInterleaved. kNone: unchanged.
// `style` must be the style the table was made for (or kNone).
void ApplyRope(const RopeTable& table, RopeStyle style, float* x);

// The inverse rotation, out = x * cos - rotate(x) * sin (for encoders that
// want pre-RoPE keys; exact only up to float rounding).
void UndoRope(const RopeTable& table, RopeStyle style, float* x);

}  // namespace seqkv::internal

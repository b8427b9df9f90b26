#include "engine_rope.h"

#include <cmath>

#include "seq_lossless_rope.h"

namespace seqkv::internal {

uint32_t RotaryDims(const RopeParams& rope, uint32_t head_dim) {
  if (rope.style == RopeStyle::kNone || rope.dim < 2 || rope.dim > head_dim) return 0;
  if (!(rope.theta > 0) || !std::isfinite(rope.theta)) return 0;
  return rope.dim & ~1u;
}

RopeTable MakeRopeTable(const RopeParams& rope, uint32_t head_dim, uint64_t first_position, uint32_t tokens) {
  RopeTable table;
  table.tokens = tokens;
  table.head_dim = head_dim;
  table.rotary_dim = RotaryDims(rope, head_dim);
  const uint32_t rd = table.rotary_dim;
  if (rd == 0) return table;
  const uint32_t half = rd / 2;
  // torch: 1.0 / (base ** (arange(0, dim, 2).float() / dim)), all float32;
  // dim is the rotary dimension as the model's config states it.
  const double ln_theta = DetLog(rope.theta);
  const float dim_f = static_cast<float>(rope.dim);
  table.inv_freq.resize(half);
  for (uint32_t i = 0; i < half; ++i) {
    const float exponent = static_cast<float>(2 * i) / dim_f;
    const float power = static_cast<float>(DetExp(static_cast<double>(exponent) * ln_theta));
    table.inv_freq[i] = 1.0f / power;
  }
  table.cos.resize(size_t{tokens} * rd);
  table.sin.resize(size_t{tokens} * rd);
  std::vector<float> c(half), s(half);
  for (uint32_t t = 0; t < tokens; ++t) {
    // position_ids.float(): the position rounded to float32 as engines do.
    const float pos = static_cast<float>(first_position + t);
    for (uint32_t i = 0; i < half; ++i) {
      const float angle = pos * table.inv_freq[i];
      double ds, dc;
      DetSinCos(static_cast<double>(angle), &ds, &dc);
      c[i] = static_cast<float>(dc);
      s[i] = static_cast<float>(ds);
    }
    float* cr = &table.cos[size_t{t} * rd];
    float* sr = &table.sin[size_t{t} * rd];
    for (uint32_t i = 0; i < half; ++i) {
      const uint32_t a = rope.style == RopeStyle::kRotateHalf ? i : 2 * i;
      const uint32_t b = rope.style == RopeStyle::kRotateHalf ? i + half : 2 * i + 1;
      cr[a] = cr[b] = c[i];
      sr[a] = sr[b] = s[i];
    }
  }
  return table;
}

namespace {

// sign = +1: x * cos + rotate(x) * sin; sign = -1: x * cos - rotate(x) * sin.
// rotate(x) pairs (a, b) -> (-b, a); each output is a product, a product and
// a sum in float32, in that order (negation is exact).
template <int kSign>
void Rotate(const RopeTable& table, RopeStyle style, float* x) {
  const uint32_t rd = table.rotary_dim;
  if (rd == 0 || style == RopeStyle::kNone) return;
  const uint32_t half = rd / 2;
  for (uint32_t t = 0; t < table.tokens; ++t) {
    float* row = x + size_t{t} * table.head_dim;
    const float* cr = &table.cos[size_t{t} * rd];
    const float* sr = &table.sin[size_t{t} * rd];
    for (uint32_t i = 0; i < half; ++i) {
      const uint32_t ia = style == RopeStyle::kRotateHalf ? i : 2 * i;
      const uint32_t ib = style == RopeStyle::kRotateHalf ? i + half : 2 * i + 1;
      const float a = row[ia], b = row[ib];
      const float ra = kSign * -b, rb = kSign * a;  // +-rotate(x), exact
      const float pa = a * cr[ia], qa = ra * sr[ia];
      const float pb = b * cr[ib], qb = rb * sr[ib];
      row[ia] = pa + qa;
      row[ib] = pb + qb;
    }
  }
}

}  // namespace

void ApplyRope(const RopeTable& table, RopeStyle style, float* x) { Rotate<1>(table, style, x); }

void UndoRope(const RopeTable& table, RopeStyle style, float* x) { Rotate<-1>(table, style, x); }

}  // namespace seqkv::internal

// Conversions between the stored element types (bf16, fp16, fp32) and float.
// All conversions round to nearest even; NaN stays NaN, infinities stay.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "seqkv/codec/chunk.h"

namespace seqkv {

inline float Bf16ToFloat(uint16_t h) {
  uint32_t bits = uint32_t{h} << 16;
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

inline uint16_t FloatToBf16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof bits);
  if ((bits & 0x7F800000u) == 0x7F800000u && (bits & 0x007FFFFFu) != 0) {
    return static_cast<uint16_t>((bits >> 16) | 0x0040u);  // quiet NaN
  }
  uint32_t rounding = 0x7FFFu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>((bits + rounding) >> 16);
}

float HalfToFloat(uint16_t h);
uint16_t FloatToHalf(float f);

// Converts n little-endian elements of `dtype` at src to float.
void ToFloat(DType dtype, const uint8_t* src, size_t n, float* dst);
// Converts n floats to `dtype` elements at dst (n * DTypeSize(dtype) bytes).
void FromFloat(DType dtype, const float* src, size_t n, uint8_t* dst);

}  // namespace seqkv

#include "seqkv/codec/dtype.h"

#include <cmath>

namespace seqkv {

float HalfToFloat(uint16_t h) {
  uint32_t sign = uint32_t{h & 0x8000u} << 16;
  uint32_t exp = (h >> 10) & 0x1Fu;
  uint32_t mant = h & 0x3FFu;
  uint32_t bits;
  if (exp == 0x1F) {
    bits = sign | 0x7F800000u | (mant << 13);  // inf / NaN
  } else if (exp != 0) {
    bits = sign | ((exp + 112) << 23) | (mant << 13);
  } else if (mant == 0) {
    bits = sign;
  } else {
    // Subnormal half: value = mant * 2^-24.
    float f = std::ldexp(static_cast<float>(mant), -24);
    return sign ? -f : f;
  }
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

uint16_t FloatToHalf(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof bits);
  uint16_t sign = static_cast<uint16_t>((bits >> 16) & 0x8000u);
  uint32_t abs = bits & 0x7FFFFFFFu;
  if (abs >= 0x7F800000u) {  // inf or NaN
    return sign | 0x7C00u | (abs > 0x7F800000u ? 0x200u : 0u);
  }
  if (abs >= 0x477FF000u) return sign | 0x7C00u;  // rounds to >= 65520: inf
  if (abs < 0x38800000u) {                          // below the smallest normal half
    // Subnormal or zero: round abs * 2^24 to nearest even integer.
    float a;
    std::memcpy(&a, &abs, sizeof a);
    float scaled = a * 16777216.0f;  // exact (power of two)
    float r = std::nearbyint(scaled);  // default rounding mode: nearest even
    return sign | static_cast<uint16_t>(r);
  }
  uint32_t exp = (abs >> 23) - 112;
  uint32_t mant = abs & 0x7FFFFFu;
  uint32_t half = (exp << 10) | (mant >> 13);
  uint32_t rest = mant & 0x1FFFu;
  if (rest > 0x1000u || (rest == 0x1000u && (half & 1u))) ++half;  // may carry into exp: fine
  return sign | static_cast<uint16_t>(half);
}

void ToFloat(DType dtype, const uint8_t* src, size_t n, float* dst) {
  switch (dtype) {
    case DType::kBF16:
      for (size_t i = 0; i < n; ++i) {
        dst[i] = Bf16ToFloat(static_cast<uint16_t>(src[2 * i] | (src[2 * i + 1] << 8)));
      }
      break;
    case DType::kFP16:
      for (size_t i = 0; i < n; ++i) {
        dst[i] = HalfToFloat(static_cast<uint16_t>(src[2 * i] | (src[2 * i + 1] << 8)));
      }
      break;
    case DType::kFP32:
      std::memcpy(dst, src, n * 4);  // little-endian host assumed (x86-64, aarch64)
      break;
  }
}

void FromFloat(DType dtype, const float* src, size_t n, uint8_t* dst) {
  switch (dtype) {
    case DType::kBF16:
      for (size_t i = 0; i < n; ++i) {
        uint16_t h = FloatToBf16(src[i]);
        dst[2 * i] = static_cast<uint8_t>(h);
        dst[2 * i + 1] = static_cast<uint8_t>(h >> 8);
      }
      break;
    case DType::kFP16:
      for (size_t i = 0; i < n; ++i) {
        uint16_t h = FloatToHalf(src[i]);
        dst[2 * i] = static_cast<uint8_t>(h);
        dst[2 * i + 1] = static_cast<uint8_t>(h >> 8);
      }
      break;
    case DType::kFP32:
      std::memcpy(dst, src, n * 4);
      break;
  }
}

}  // namespace seqkv

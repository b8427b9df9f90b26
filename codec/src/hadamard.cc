#include "hadamard.h"

#include <cassert>
#include <cmath>

namespace seqkv::internal {

uint32_t NextPowerOfTwo(uint32_t n) {
  uint32_t p = 1;
  while (p < n) p <<= 1;
  return p;
}

uint64_t SplitMix64(uint64_t* state) {
  uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

void WalshHadamard(float* x, uint32_t n) {
  assert(n > 0 && (n & (n - 1)) == 0);
  for (uint32_t h = 1; h < n; h <<= 1) {
    for (uint32_t base = 0; base < n; base += 2 * h) {
      for (uint32_t j = base; j < base + h; ++j) {
        float a = x[j];
        float b = x[j + h];
        x[j] = a + b;
        x[j + h] = a - b;
      }
    }
  }
  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(n)));
  for (uint32_t i = 0; i < n; ++i) x[i] *= scale;
}

RandomizedHadamard::RandomizedHadamard(uint32_t n, uint64_t seed) : signs_(n) {
  assert(n > 0 && (n & (n - 1)) == 0);
  uint64_t state = seed;
  uint64_t word = 0;
  for (uint32_t i = 0; i < n; ++i) {
    if (i % 64 == 0) word = SplitMix64(&state);
    signs_[i] = ((word >> (i % 64)) & 1) ? -1.0f : 1.0f;
  }
}

void RandomizedHadamard::Forward(float* x) const {
  const uint32_t n = size();
  for (uint32_t i = 0; i < n; ++i) x[i] *= signs_[i];
  WalshHadamard(x, n);
}

void RandomizedHadamard::Inverse(float* x) const {
  const uint32_t n = size();
  WalshHadamard(x, n);
  for (uint32_t i = 0; i < n; ++i) x[i] *= signs_[i];
}

}  // namespace seqkv::internal

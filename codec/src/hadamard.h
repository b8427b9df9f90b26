// The seeded randomized Hadamard rotation of TurboQuant: x -> H D x, where D
// is a diagonal of random signs and H the normalized Walsh–Hadamard matrix
// (orthonormal and symmetric, so the inverse is D H).
//
// Exact arithmetic, fixed so a GPU port can match it bit for bit:
//   * signs: coordinate i gets -1 when bit (i % 64) of the (i / 64)-th output
//     of SplitMix64 started at state `seed` is set, +1 otherwise;
//   * H: in-place butterflies for h = 1, 2, 4, ..., n/2 (a, b) -> (a + b, a - b)
//     over pairs (j, j + h) with j & h == 0, in float; then every entry is
//     multiplied by the float nearest 1 / sqrt(n);
//   * Forward multiplies by the signs before H, Inverse after it.
//
// Thread safety: immutable after construction.
#pragma once

#include <cstdint>
#include <vector>

namespace seqkv::internal {

// Smallest power of two >= n, for 1 <= n <= 2^31.
uint32_t NextPowerOfTwo(uint32_t n);

// SplitMix64 (Steele, Lea, Flood 2014): advances *state and returns the next output.
uint64_t SplitMix64(uint64_t* state);

// Normalized Walsh–Hadamard transform of x[0..n), n a power of two.
void WalshHadamard(float* x, uint32_t n);

class RandomizedHadamard {
 public:
  // n must be a power of two.
  RandomizedHadamard(uint32_t n, uint64_t seed);

  uint32_t size() const { return static_cast<uint32_t>(signs_.size()); }
  // x[0..size()) <- H D x.
  void Forward(float* x) const;
  // x[0..size()) <- D H x (the inverse of Forward, up to float rounding).
  void Inverse(float* x) const;

 private:
  std::vector<float> signs_;  // +1 or -1
};

}  // namespace seqkv::internal

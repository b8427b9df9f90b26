// Rotary-embedding helpers for seq:lossless's key predictions, with
// deterministic math: exp, log, sin and cos built from IEEE-754 double
// additions and multiplications only (the codec is compiled with
// -ffp-contract=off), so encoder and decoder on any machine compute the same
// predictions bit for bit. libm's functions are not guaranteed to round the
// same everywhere, which would make a chunk undecodable elsewhere.
#pragma once

#include <cmath>
#include <cstdint>
#include <vector>

#include "seqkv/codec/chunk.h"

namespace seqkv::internal {

inline constexpr double kDetPi = 3.14159265358979311600;
inline constexpr double kDetLn2 = 0.693147180559945286227;

// e^x for |x| < 700.
inline double DetExp(double x) {
  const double k = std::nearbyint(x / kDetLn2);
  const double r = x - k * kDetLn2;  // |r| <= 0.35
  double term = 1, sum = 1;
  for (int i = 1; i < 24; ++i) {
    term = term * r / i;
    sum += term;
  }
  return std::ldexp(sum, static_cast<int>(k));
}

// ln x for finite x > 0.
inline double DetLog(double x) {
  int e = 0;
  double m = std::frexp(x, &e);  // m in [0.5, 1)
  const double z = (m - 1) / (m + 1), z2 = z * z;
  double term = z, sum = 0;
  for (int i = 0; i < 40; ++i) {
    sum += term / (2 * i + 1);
    term *= z2;
  }
  return 2 * sum + e * kDetLn2;
}

// sin and cos of any finite angle (reduced to [-pi, pi]).
inline void DetSinCos(double a, double* s, double* c) {
  const double k = std::nearbyint(a / (2 * kDetPi));
  const double r = a - k * (2 * kDetPi);
  const double r2 = r * r;
  double ts = r, tc = 1, ss = 0, sc = 0;
  for (int i = 0; i < 16; ++i) {
    ss += ts;
    sc += tc;
    ts = -ts * r2 / ((2 * i + 2) * (2 * i + 3));
    tc = -tc * r2 / ((2 * i + 1) * (2 * i + 2));
  }
  *s = ss;
  *c = sc;
}

// How channel d of a head takes part in the rotary embedding.
struct RotaryPairs {
  struct Channel {
    int32_t partner = -1;  // -1: not rotated
    uint32_t freq = 0;     // index i of the frequency
    bool first = true;     // first of its pair (x1 in x1' = x1 cos - x2 sin)
  };
  std::vector<Channel> channels;
  std::vector<double> inv_freq;  // theta^(-2i/dim)

  RotaryPairs(const RopeParams& rope, uint32_t head_dim) : channels(head_dim) {
    if (rope.style == RopeStyle::kNone || rope.dim < 2 || rope.dim > head_dim || !(rope.theta > 0)) return;
    const uint32_t half = rope.dim / 2;
    inv_freq.resize(half);
    const double ln_theta = DetLog(rope.theta);
    for (uint32_t i = 0; i < half; ++i) inv_freq[i] = DetExp(-(2.0 * i / rope.dim) * ln_theta);
    for (uint32_t i = 0; i < half; ++i) {
      uint32_t a = rope.style == RopeStyle::kRotateHalf ? i : 2 * i;
      uint32_t b = rope.style == RopeStyle::kRotateHalf ? i + half : 2 * i + 1;
      channels[a] = {static_cast<int32_t>(b), i, true};
      channels[b] = {static_cast<int32_t>(a), i, false};
    }
  }
  bool rotary() const { return !inv_freq.empty(); }
};

}  // namespace seqkv::internal

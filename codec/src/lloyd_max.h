// Lloyd–Max scalar quantizers of the standard normal distribution, the
// per-coordinate codebooks of TurboQuant (turboquant_codec.cc).
//
// The codebooks are hard-coded float tables (bits 1..5) so that every machine
// quantizes with bit-identical centroids and thresholds; they were produced
// once by SolveGaussianLloydMax below (in double, then rounded to float), and
// a test re-runs the solver and checks the tables against it. To use them for
// a Gaussian of variance s^2, compare v / s against the thresholds and
// reconstruct as s * centroid.
//
// Thread safety: everything here is immutable or a pure function.
#pragma once

#include <cstdint>
#include <vector>

namespace seqkv::internal {

inline constexpr int kGaussianCodebookMaxBits = 5;

// A 2^bits-level quantizer. centroids ascend; thresholds[i] is the boundary
// between cells i and i + 1 (the midpoint of the two centroids).
struct GaussianCodebook {
  int bits = 0;
  const float* centroids = nullptr;   // 2^bits entries
  const float* thresholds = nullptr;  // 2^bits - 1 entries
};

// The hard-coded table for 1 <= bits <= kGaussianCodebookMaxBits
// (precondition; other values abort in debug builds and return the 1-bit table).
const GaussianCodebook& StandardNormalCodebook(int bits);

// Index of the cell of v: the number of thresholds t with t <= v, found by a
// branch-free binary search. NaN maps to 0. Precondition: book is a table
// from StandardNormalCodebook.
inline uint32_t QuantizeToCell(const GaussianCodebook& book, float v) {
  uint32_t index = 0;
  for (uint32_t step = 1u << (book.bits - 1); step > 0; step >>= 1) {
    if (v >= book.thresholds[index + step - 1]) index += step;
  }
  return index;
}

// Result of the Lloyd iteration for N(0, 1).
struct LloydMaxSolution {
  std::vector<double> centroids;   // 2^bits, ascending
  std::vector<double> thresholds;  // 2^bits - 1 midpoints
  double mse = 0;                  // E[(x - Q(x))^2] for x ~ N(0, 1)
  int iterations = 0;
};

// Runs the Lloyd iteration (thresholds at midpoints, centroids at the
// conditional means (phi(a) - phi(b)) / (Phi(b) - Phi(a)) of each cell) from
// evenly spaced starting points until no centroid moves by more than
// `tolerance` or `max_iterations` is reached. 1 <= bits <= 8.
LloydMaxSolution SolveGaussianLloydMax(int bits, double tolerance = 1e-13,
                                       int max_iterations = 2000000);

}  // namespace seqkv::internal

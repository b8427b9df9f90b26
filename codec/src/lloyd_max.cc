#include "lloyd_max.h"

#include <algorithm>
#include <cassert>
#include <cmath>

namespace seqkv::internal {

namespace {

constexpr double kInvSqrt2 = 0.70710678118654752440;
constexpr double kInvSqrt2Pi = 0.39894228040143267794;

double NormalPdf(double x) { return std::isinf(x) ? 0.0 : kInvSqrt2Pi * std::exp(-0.5 * x * x); }

// P(a < X < b) for X ~ N(0, 1), computed on the side of zero where the
// complementary error function keeps full relative precision in the tails.
double NormalMass(double a, double b) {
  if (a >= 0) return 0.5 * (std::erfc(a * kInvSqrt2) - std::erfc(b * kInvSqrt2));
  if (b <= 0) return 0.5 * (std::erfc(-b * kInvSqrt2) - std::erfc(-a * kInvSqrt2));
  return 1.0 - 0.5 * std::erfc(-a * kInvSqrt2) - 0.5 * std::erfc(b * kInvSqrt2);
}

// Tables produced by SolveGaussianLloydMax(bits) with its default tolerance,
// each double rounded to the nearest float and printed with 9 significant
// digits (enough to round-trip a float). Do not edit by hand: rerun the solver
// (turboquant_test checks the tables against it to 1e-6).
// bits=1 MSE 0.36338 (2 iterations)
constexpr float kCentroids1[] = {
    -0.797884583f, 0.797884583f,
};

constexpr float kThresholds1[] = {
    0.0f,
};

// bits=2 MSE 0.117482 (56 iterations)
constexpr float kCentroids2[] = {
    -1.51041758f, -0.452780038f, 0.452780038f, 1.51041758f,
};

constexpr float kThresholds2[] = {
    -0.981598794f, 0.0f, 0.981598794f,
};

// bits=3 MSE 0.0345478 (205 iterations)
constexpr float kCentroids3[] = {
    -2.15194559f, -1.34390926f, -0.756005287f, -0.24509418f, 0.24509418f, 0.756005287f, 1.34390926f,
    2.15194559f,
};

constexpr float kThresholds3[] = {
    -1.74792755f, -1.04995728f, -0.500549734f, 0.0f, 0.500549734f, 1.04995728f, 1.74792755f,
};

// bits=4 MSE 0.00950101 (731 iterations)
constexpr float kCentroids4[] = {
    -2.73258948f, -2.06901717f, -1.6180464f, -1.25623119f, -0.942340434f, -0.656759143f,
    -0.388048291f, -0.128395036f, 0.128395036f, 0.388048291f, 0.656759143f, 0.942340434f,
    1.25623119f, 1.6180464f, 2.06901717f, 2.73258948f,
};

constexpr float kThresholds4[] = {
    -2.40080333f, -1.84353185f, -1.4371388f, -1.09928584f, -0.799549758f, -0.522403717f,
    -0.258221656f, 0.0f, 0.258221656f, 0.522403717f, 0.799549758f, 1.09928584f, 1.4371388f,
    1.84353185f, 2.40080333f,
};

// bits=5 MSE 0.00250467 (2651 iterations)
constexpr float kCentroids5[] = {
    -3.26073241f, -2.69111967f, -2.31773949f, -2.02872849f, -1.78723323f, -1.57622802f,
    -1.38634038f, -1.21180439f, -1.0487833f, -0.894565105f, -0.747135699f, -0.604933619f,
    -0.466699511f, -0.331378311f, -0.198051825f, -0.0658896565f, 0.0658896565f, 0.198051825f,
    0.331378311f, 0.466699511f, 0.604933619f, 0.747135699f, 0.894565105f, 1.0487833f, 1.21180439f,
    1.38634038f, 1.57622802f, 1.78723323f, 2.02872849f, 2.31773949f, 2.69111967f, 3.26073241f,
};

constexpr float kThresholds5[] = {
    -2.97592592f, -2.50442958f, -2.17323399f, -1.9079808f, -1.68173063f, -1.48128426f, -1.29907238f,
    -1.13029385f, -0.971674204f, -0.820850432f, -0.676034689f, -0.53581655f, -0.399038911f,
    -0.264715075f, -0.131970748f, 0.0f, 0.131970748f, 0.264715075f, 0.399038911f, 0.53581655f,
    0.676034689f, 0.820850432f, 0.971674204f, 1.13029385f, 1.29907238f, 1.48128426f, 1.68173063f,
    1.9079808f, 2.17323399f, 2.50442958f, 2.97592592f,
};

const GaussianCodebook kBooks[kGaussianCodebookMaxBits] = {
    {1, kCentroids1, kThresholds1}, {2, kCentroids2, kThresholds2}, {3, kCentroids3, kThresholds3},
    {4, kCentroids4, kThresholds4}, {5, kCentroids5, kThresholds5},
};

}  // namespace

const GaussianCodebook& StandardNormalCodebook(int bits) {
  assert(bits >= 1 && bits <= kGaussianCodebookMaxBits);
  if (bits < 1 || bits > kGaussianCodebookMaxBits) bits = 1;
  return kBooks[bits - 1];
}

LloydMaxSolution SolveGaussianLloydMax(int bits, double tolerance, int max_iterations) {
  assert(bits >= 1 && bits <= 8);
  const int levels = 1 << bits;
  LloydMaxSolution s;
  s.centroids.resize(levels);
  s.thresholds.resize(levels - 1);
  for (int i = 0; i < levels; ++i) s.centroids[i] = -3.0 + 6.0 * (i + 0.5) / levels;
  std::vector<double> lo(levels), hi(levels);
  for (s.iterations = 0; s.iterations < max_iterations;) {
    for (int i = 0; i + 1 < levels; ++i) s.thresholds[i] = 0.5 * (s.centroids[i] + s.centroids[i + 1]);
    double moved = 0;
    for (int i = 0; i < levels; ++i) {
      double a = i == 0 ? -INFINITY : s.thresholds[i - 1];
      double b = i + 1 == levels ? INFINITY : s.thresholds[i];
      double c = (NormalPdf(a) - NormalPdf(b)) / NormalMass(a, b);
      moved = std::max(moved, std::fabs(c - s.centroids[i]));
      s.centroids[i] = c;
    }
    ++s.iterations;
    if (moved <= tolerance) break;
  }
  for (int i = 0; i + 1 < levels; ++i) s.thresholds[i] = 0.5 * (s.centroids[i] + s.centroids[i + 1]);
  // With centroids at the conditional means, MSE = 1 - sum_i P(cell i) c_i^2.
  double explained = 0;
  for (int i = 0; i < levels; ++i) {
    double a = i == 0 ? -INFINITY : s.thresholds[i - 1];
    double b = i + 1 == levels ? INFINITY : s.thresholds[i];
    explained += NormalMass(a, b) * s.centroids[i] * s.centroids[i];
  }
  s.mse = 1.0 - explained;
  return s;
}

}  // namespace seqkv::internal

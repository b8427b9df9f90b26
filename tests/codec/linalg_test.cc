// Tests of the calibration's linear algebra (codec/src/linalg.h): ridge
// Cholesky solves, Gram/cross accumulation and the Jacobi eigensolver.
#include "../../codec/src/linalg.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include "util/test_util.h"

namespace seqkv::internal {
namespace {

using test::RandomFloats;

std::vector<double> RandomSymmetric(int n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<double> dist(-1.0, 1.0);
  std::vector<double> a(size_t(n) * n);
  for (int i = 0; i < n; ++i) {
    for (int j = i; j < n; ++j) a[i * n + j] = a[j * n + i] = dist(rng);
  }
  return a;
}

// Naive double X^T Y.
std::vector<double> NaiveCross(const std::vector<float>& x, int rows, int cols, const std::vector<float>& y,
                               int ycols) {
  std::vector<double> out(size_t(cols) * ycols, 0.0);
  for (int r = 0; r < rows; ++r) {
    for (int i = 0; i < cols; ++i) {
      for (int j = 0; j < ycols; ++j) out[i * ycols + j] += double(x[r * cols + i]) * y[r * ycols + j];
    }
  }
  return out;
}

double MaxAbsDiff(const std::vector<double>& a, const std::vector<double>& b) {
  EXPECT_EQ(a.size(), b.size());
  double m = 0;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) m = std::max(m, std::fabs(a[i] - b[i]));
  return m;
}

double Seconds(std::chrono::steady_clock::time_point since) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - since).count();
}

TEST(LinalgTest, CholeskySolvesAKnownSystem) {
  const int n = 40, m = 3, rows = 200;
  auto xs = RandomFloats(size_t(rows) * n, 1);
  std::vector<double> a;
  GramAccumulate(xs.data(), rows, n, &a);
  std::mt19937 rng(2);
  std::uniform_real_distribution<double> dist(-2.0, 2.0);
  std::vector<double> truth(size_t(n) * m), b(size_t(n) * m, 0.0);
  for (double& d : truth) d = dist(rng);
  for (int i = 0; i < n; ++i) {
    for (int c = 0; c < m; ++c) {
      for (int k = 0; k < n; ++k) b[i * m + c] += a[i * n + k] * truth[k * m + c];
    }
  }
  std::vector<double> x;
  ASSERT_TRUE(CholeskySolveRidge(n, a, m, b, 0.0, &x).ok());
  EXPECT_LT(MaxAbsDiff(x, truth), 1e-10);
  // n = 1 and m = 0 are fine too.
  ASSERT_TRUE(CholeskySolveRidge(1, {4.0}, 1, {2.0}, 0.0, &x).ok());
  EXPECT_EQ(x, std::vector<double>{0.5});
  ASSERT_TRUE(CholeskySolveRidge(1, {4.0}, 0, {}, 0.0, &x).ok());
  EXPECT_TRUE(x.empty());
}

TEST(LinalgTest, RidgeSolvesTheShiftedSystemAndShrinks) {
  const int n = 30, rows = 100;
  auto xs = RandomFloats(size_t(rows) * n, 3);
  std::vector<double> a;
  GramAccumulate(xs.data(), rows, n, &a);
  std::vector<double> b(n);
  for (int i = 0; i < n; ++i) b[i] = std::sin(i + 1.0);
  double mean_diag = 0;
  for (int i = 0; i < n; ++i) mean_diag += a[i * n + i] / n;
  double previous_norm = INFINITY;
  for (double ridge : {0.0, 0.01, 0.1, 1.0, 10.0}) {
    std::vector<double> x;
    ASSERT_TRUE(CholeskySolveRidge(n, a, 1, b, ridge, &x).ok());
    double norm = 0, residual = 0;
    for (int i = 0; i < n; ++i) {
      double r = -b[i] + ridge * mean_diag * x[i];
      for (int k = 0; k < n; ++k) r += a[i * n + k] * x[k];
      residual = std::max(residual, std::fabs(r));
      norm += x[i] * x[i];
    }
    EXPECT_LT(residual, 1e-9) << ridge;
    EXPECT_LT(norm, previous_norm) << ridge;
    previous_norm = norm;
  }
}

TEST(LinalgTest, CholeskyRejectsSingularIndefiniteAndMalformed) {
  std::vector<double> x;
  const std::vector<double> zero(16, 0.0), b(4, 1.0);
  EXPECT_EQ(CholeskySolveRidge(4, zero, 1, b, 0.0, &x).code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(CholeskySolveRidge(4, zero, 1, b, 0.5, &x).code(), StatusCode::kFailedPrecondition);
  // Rank 1 (exactly singular) without a ridge; solvable with one.
  std::vector<double> rank1(16);
  for (int i = 0; i < 4; ++i) {
    for (int j = 0; j < 4; ++j) rank1[i * 4 + j] = (i + 1.0) * (j + 1.0);
  }
  EXPECT_EQ(CholeskySolveRidge(4, rank1, 1, b, 0.0, &x).code(), StatusCode::kFailedPrecondition);
  EXPECT_TRUE(CholeskySolveRidge(4, rank1, 1, b, 1e-3, &x).ok());
  EXPECT_EQ(CholeskySolveRidge(2, {1.0, 2.0, 2.0, 1.0}, 1, {1.0, 1.0}, 0.0, &x).code(),
            StatusCode::kFailedPrecondition);  // eigenvalues 3 and -1
  EXPECT_EQ(CholeskySolveRidge(0, {}, 1, {}, 0.0, &x).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(CholeskySolveRidge(2, {1.0, 0.0, 0.0}, 1, {1.0, 1.0}, 0.0, &x).code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(CholeskySolveRidge(2, {1.0, 0.0, 0.0, 1.0}, 2, {1.0, 1.0}, 0.0, &x).code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(CholeskySolveRidge(2, {1.0, 0.0, 0.0, 1.0}, 1, {1.0, 1.0}, -1.0, &x).code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(CholeskySolveRidge(2, {NAN, 0.0, 0.0, 1.0}, 1, {1.0, 1.0}, 0.0, &x).code(),
            StatusCode::kInvalidArgument);
}

TEST(LinalgTest, GramAndCrossMatchNaiveSums) {
  const int rows = 103, cols = 17, ycols = 5;  // rows not a multiple of the 4-row blocks
  auto xs = RandomFloats(size_t(rows) * cols, 4);
  auto ys = RandomFloats(size_t(rows) * ycols, 5);
  std::vector<double> g, c;
  GramAccumulate(xs.data(), rows, cols, &g);
  CrossAccumulate(xs.data(), rows, cols, ys.data(), ycols, &c);
  EXPECT_LT(MaxAbsDiff(g, NaiveCross(xs, rows, cols, xs, cols)), 1e-11);
  EXPECT_LT(MaxAbsDiff(c, NaiveCross(xs, rows, cols, ys, ycols)), 1e-11);
  for (int i = 0; i < cols; ++i) {
    for (int j = 0; j < cols; ++j) {
      EXPECT_EQ(g[i * cols + j], g[j * cols + i]);
    }
  }
  // A second call adds.
  auto g2 = g;
  GramAccumulate(xs.data(), rows, cols, &g2);
  for (size_t i = 0; i < g.size(); ++i) EXPECT_NEAR(g2[i], 2 * g[i], 1e-11);
  auto c2 = c;
  CrossAccumulate(xs.data(), rows, cols, ys.data(), ycols, &c2);
  for (size_t i = 0; i < c.size(); ++i) EXPECT_NEAR(c2[i], 2 * c[i], 1e-11);
  // Zero rows leave a zero matrix of the right size.
  std::vector<double> empty;
  GramAccumulate(xs.data(), 0, cols, &empty);
  EXPECT_EQ(empty, std::vector<double>(size_t(cols) * cols, 0.0));
}

// Prints the time (speed goals live in bench/, not in assertions).
TEST(LinalgTest, GramAndCrossMatchARowOrderSum) {
  const int rows = 4096, cols = 257;
  auto xs = RandomFloats(size_t(rows) * cols, 6);
  std::vector<double> g;
  auto start = std::chrono::steady_clock::now();
  GramAccumulate(xs.data(), rows, cols, &g);
  const double gram_s = Seconds(start);
  start = std::chrono::steady_clock::now();
  std::vector<float> ys(size_t(rows) * 64);  // X's first 64 columns
  for (int r = 0; r < rows; ++r) {
    for (int j = 0; j < 64; ++j) ys[r * 64 + j] = xs[r * cols + j];
  }
  std::vector<double> c;
  CrossAccumulate(xs.data(), rows, cols, ys.data(), 64, &c);
  const double cross_s = Seconds(start);
  std::printf("GramAccumulate %dx%d: %.3f s; CrossAccumulate %dx%dx64: %.3f s\n", rows, cols, gram_s, rows,
              cols, cross_s);
  // Spot-check an entry against a plain sum in row order (same order: same bits).
  double s = 0;
  for (int r = 0; r < rows; ++r) s += double(xs[r * cols + 3]) * xs[r * cols + 200];
  EXPECT_EQ(g[3 * cols + 200], s);
  EXPECT_EQ(g[200 * cols + 3], s);
  EXPECT_EQ(c[200 * 64 + 3], s);
}

// Checks A V = V diag(w), V^T V = I, w descending and the sign rule.
void ExpectEigenDecomposition(int n, const std::vector<double>& a, const std::vector<double>& w,
                              const std::vector<double>& v) {
  ASSERT_EQ(w.size(), size_t(n));
  ASSERT_EQ(v.size(), size_t(n) * n);
  double scale = 0;
  for (double d : a) scale = std::max(scale, std::fabs(d));
  scale = std::max(scale, 1.0);
  double worst_residual = 0, worst_orth = 0;
  for (int k = 0; k < n; ++k) {
    for (int i = 0; i < n; ++i) {
      double av = 0;
      for (int j = 0; j < n; ++j) av += a[i * n + j] * v[j * n + k];
      worst_residual = std::max(worst_residual, std::fabs(av - w[k] * v[i * n + k]));
    }
    for (int l = k; l < n; ++l) {
      double dot = 0;
      for (int i = 0; i < n; ++i) dot += v[i * n + k] * v[i * n + l];
      worst_orth = std::max(worst_orth, std::fabs(dot - (k == l ? 1.0 : 0.0)));
    }
    if (k > 0) {
      EXPECT_GE(w[k - 1], w[k]) << k;
    }
    int arg = 0;
    for (int i = 1; i < n; ++i) {
      if (std::fabs(v[i * n + k]) > std::fabs(v[arg * n + k])) arg = i;
    }
    EXPECT_GT(v[arg * n + k], 0) << "column " << k;
  }
  EXPECT_LT(worst_residual, 1e-9 * scale) << n;
  EXPECT_LT(worst_orth, 1e-12) << n;
}

TEST(LinalgTest, EigenOfRandomSymmetricMatrices) {
  for (int n : {1, 2, 5, 31, 64, 128}) {
    auto a = RandomSymmetric(n, 10 + n);
    std::vector<double> w, v;
    auto start = std::chrono::steady_clock::now();
    SymmetricEigen(n, a, &w, &v);
    const double s = Seconds(start);
    std::printf("SymmetricEigen n=%d: %.4f s\n", n, s);
    ExpectEigenDecomposition(n, a, w, v);
    double trace = 0, sum = 0;
    for (int i = 0; i < n; ++i) trace += a[i * n + i], sum += w[i];
    EXPECT_NEAR(trace, sum, 1e-10 * n);
    if (n == 128) {
      EXPECT_LT(s, 1.0);
    }
    // Same input, same bits.
    std::vector<double> w2, v2;
    SymmetricEigen(n, a, &w2, &v2);
    EXPECT_EQ(w, w2);
    EXPECT_EQ(v, v2);
  }
}

TEST(LinalgTest, EigenOfGramMatricesAndDegenerateCases) {
  // Rank-deficient PSD (rows < cols): trailing eigenvalues ~0.
  const int n = 64, rows = 20;
  auto xs = RandomFloats(size_t(rows) * n, 7);
  std::vector<double> g, w, v;
  GramAccumulate(xs.data(), rows, n, &g);
  SymmetricEigen(n, g, &w, &v);
  ExpectEigenDecomposition(n, g, w, v);
  EXPECT_GT(w[rows - 1], 1.0);
  for (int k = rows; k < n; ++k) EXPECT_LT(std::fabs(w[k]), 1e-9 * w[0]) << k;

  // Zero matrix: zero eigenvalues, identity eigenvectors.
  std::vector<double> zero(16, 0.0);
  SymmetricEigen(4, zero, &w, &v);
  EXPECT_EQ(w, std::vector<double>(4, 0.0));
  for (int i = 0; i < 4; ++i) {
    for (int j = 0; j < 4; ++j) {
      EXPECT_EQ(v[i * 4 + j], i == j ? 1.0 : 0.0);
    }
  }

  // Repeated eigenvalues: Q diag(3, 3, 1, 1, -2) Q^T with a random orthogonal Q.
  const int m = 5;
  std::vector<double> q, ignored;
  SymmetricEigen(m, RandomSymmetric(m, 99), &ignored, &q);
  const double d[m] = {3, 3, 1, 1, -2};
  std::vector<double> a(m * m, 0.0);
  for (int i = 0; i < m; ++i) {
    for (int j = 0; j < m; ++j) {
      for (int k = 0; k < m; ++k) a[i * m + j] += q[i * m + k] * d[k] * q[j * m + k];
    }
  }
  for (int i = 0; i < m; ++i) {
    for (int j = 0; j < i; ++j) a[i * m + j] = a[j * m + i];  // exactly symmetric
  }
  SymmetricEigen(m, a, &w, &v);
  ExpectEigenDecomposition(m, a, w, v);
  for (int k = 0; k < m; ++k) EXPECT_NEAR(w[k], d[k], 1e-12);

  // Already diagonal, unsorted: values sorted, vectors a permutation.
  SymmetricEigen(3, {1, 0, 0, 0, -5, 0, 0, 0, 7}, &w, &v);
  EXPECT_EQ(w, (std::vector<double>{7, 1, -5}));
  EXPECT_EQ(v, (std::vector<double>{0, 1, 0, 0, 0, 1, 1, 0, 0}));

  // Empty.
  SymmetricEigen(0, {}, &w, &v);
  EXPECT_TRUE(w.empty());
  EXPECT_TRUE(v.empty());
}

TEST(LinalgTest, EigenOf256IsBounded) {
  const int n = 256;
  auto a = RandomSymmetric(n, 1234);
  std::vector<double> w, v;
  auto start = std::chrono::steady_clock::now();
  SymmetricEigen(n, a, &w, &v);
  std::printf("SymmetricEigen n=%d: %.4f s\n", n, Seconds(start));
  ExpectEigenDecomposition(n, a, w, v);
}

}  // namespace
}  // namespace seqkv::internal

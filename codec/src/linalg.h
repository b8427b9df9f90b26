// Small dense linear algebra in double for the codec's calibration (least
// squares fits and principal directions of KV statistics).
//
// Determinism: every result depends only on the inputs, never on the
// machine. The library is built with -ffp-contract=off and these routines
// use only +, -, *, / and sqrt (all correctly rounded in IEEE-754) in a
// fixed order, so an encoder and a decoder that calibrate from the same data
// get the same bits. In particular each accumulated sum runs over rows in
// ascending order, whatever the compiler vectorizes.
//
// Matrices are row-major std::vector<double>. Thread safety: pure functions.
#pragma once

#include <vector>

#include "seqkv/codec/status.h"

namespace seqkv::internal {

// Solves (a + r I) x = b, r = ridge_rel * mean(diag(a)), by Cholesky.
// a: n x n symmetric (only the lower triangle is read), typically X^T X;
// b: n x m; *x is resized to n x m.
// Errors: InvalidArgument for n <= 0, m < 0, sizes that do not match, a
// negative ridge_rel or non-finite entries; FailedPrecondition when a + r I
// is not numerically positive definite (a pivot <= 4 n eps max(diag)).
Status CholeskySolveRidge(int n, std::vector<double> a, int m, const std::vector<double>& b, double ridge_rel,
                          std::vector<double>* x);

// xtx (cols x cols) += X^T X for X = x[rows][cols] (row-major floats).
// An empty *xtx is first set to zeros; otherwise it must hold cols * cols
// entries. Each entry adds the rows' products in ascending row order; the
// result is exactly symmetric if *xtx was.
void GramAccumulate(const float* x, int rows, int cols, std::vector<double>* xtx);

// xty (cols x ycols) += X^T Y for X = x[rows][cols], Y = y[rows][ycols].
// An empty *xty is first set to zeros; otherwise it must hold cols * ycols
// entries. Rows are added in ascending order.
void CrossAccumulate(const float* x, int rows, int cols, const float* y, int ycols, std::vector<double>* xty);

// Eigen-decomposition of the symmetric n x n matrix a (finite entries; the
// full matrix is read and assumed symmetric) by cyclic Jacobi rotations
// (at most kMaxJacobiSweeps sweeps; stops once the off-diagonal norm is
// below 1e-15 of the Frobenius norm). Eigenvalues come out in descending
// order (ties keep the order of the diagonal); *eigenvectors is row-major
// n x n with eigenvector k in column k, each column's sign chosen so that its
// largest-magnitude entry (the first such, on ties) is positive.
// Cost: about 10 sweeps of 3 n^3 multiply-adds (n = 128: ~0.1 s).
inline constexpr int kMaxJacobiSweeps = 100;
void SymmetricEigen(int n, std::vector<double> a, std::vector<double>* eigenvalues,
                    std::vector<double>* eigenvectors);

}  // namespace seqkv::internal

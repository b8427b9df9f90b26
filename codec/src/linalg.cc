#include "linalg.h"

#include <algorithm>
#include <cassert>
#include <cfloat>
#include <cmath>
#include <cstddef>
#include <numeric>
#include <string>

namespace seqkv::internal {

namespace {

bool AllFinite(const std::vector<double>& v) {
  for (double d : v) {
    if (!std::isfinite(d)) return false;
  }
  return true;
}

// Rows are taken four at a time, but every entry still adds its products one
// row after another (g += p0; g += p1; ...), so the order of the sum is the
// row order and the result does not depend on the blocking.
void AccumulateProducts(const float* x, int rows, int cols, const float* y, int ycols, bool upper_only,
                        double* out) {
  std::vector<double> xr(4 * static_cast<size_t>(cols)), yr(4 * static_cast<size_t>(ycols));
  int r = 0;
  for (; r + 4 <= rows; r += 4) {
    for (int q = 0; q < 4; ++q) {
      const float* xs = x + static_cast<size_t>(r + q) * cols;
      const float* ys = y + static_cast<size_t>(r + q) * ycols;
      for (int i = 0; i < cols; ++i) xr[q * cols + i] = xs[i];
      for (int j = 0; j < ycols; ++j) yr[q * ycols + j] = ys[j];
    }
    const double* y0 = yr.data();
    const double* y1 = y0 + ycols;
    const double* y2 = y1 + ycols;
    const double* y3 = y2 + ycols;
    for (int i = 0; i < cols; ++i) {
      const double a0 = xr[i], a1 = xr[cols + i], a2 = xr[2 * cols + i], a3 = xr[3 * cols + i];
      double* __restrict row = out + static_cast<size_t>(i) * ycols;
      for (int j = upper_only ? i : 0; j < ycols; ++j) {
        double g = row[j];
        g += a0 * y0[j];
        g += a1 * y1[j];
        g += a2 * y2[j];
        g += a3 * y3[j];
        row[j] = g;
      }
    }
  }
  for (; r < rows; ++r) {
    const float* xs = x + static_cast<size_t>(r) * cols;
    const float* ys = y + static_cast<size_t>(r) * ycols;
    for (int j = 0; j < ycols; ++j) yr[j] = ys[j];
    for (int i = 0; i < cols; ++i) {
      const double a = xs[i];
      double* __restrict row = out + static_cast<size_t>(i) * ycols;
      for (int j = upper_only ? i : 0; j < ycols; ++j) row[j] += a * yr[j];
    }
  }
}

// Rows p and q of a Jacobi rotation: (x, y) <- (c x - s y, s x + c y), per entry.
void RotatePair(double* __restrict x, double* __restrict y, size_t n, double c, double s) {
  for (size_t k = 0; k < n; ++k) {
    const double xk = x[k], yk = y[k];
    x[k] = c * xk - s * yk;
    y[k] = s * xk + c * yk;
  }
}

}  // namespace

Status CholeskySolveRidge(int n, std::vector<double> a, int m, const std::vector<double>& b, double ridge_rel,
                          std::vector<double>* x) {
  if (n <= 0 || m < 0)
    return InvalidArgument("CholeskySolveRidge: bad sizes n=" + std::to_string(n) +
                           " m=" + std::to_string(m));
  const size_t nn = static_cast<size_t>(n);
  const size_t mm = static_cast<size_t>(m);
  if (a.size() != nn * nn || b.size() != nn * mm) {
    return InvalidArgument("CholeskySolveRidge: a must be n x n and b n x m");
  }
  if (!(ridge_rel >= 0) || !std::isfinite(ridge_rel)) {
    return InvalidArgument("CholeskySolveRidge: ridge_rel must be finite and >= 0");
  }
  if (!AllFinite(a) || !AllFinite(b)) return InvalidArgument("CholeskySolveRidge: non-finite input");

  double trace = 0;
  for (size_t i = 0; i < nn; ++i) trace += a[i * nn + i];
  const double ridge = ridge_rel * (trace / n);
  double max_diag = 0;
  for (size_t i = 0; i < nn; ++i) {
    a[i * nn + i] += ridge;
    max_diag = std::max(max_diag, a[i * nn + i]);
  }
  const double min_pivot = 4.0 * n * DBL_EPSILON * max_diag;

  // a's lower triangle becomes L (a + r I = L L^T), column by column.
  for (size_t j = 0; j < nn; ++j) {
    double* rj = &a[j * nn];
    double d = rj[j];
    for (size_t k = 0; k < j; ++k) d -= rj[k] * rj[k];
    if (!(d > min_pivot)) {
      return FailedPrecondition("CholeskySolveRidge: matrix is not positive definite (pivot " +
                                std::to_string(j) + " = " + std::to_string(d) + ")");
    }
    const double ljj = std::sqrt(d);
    rj[j] = ljj;
    for (size_t i = j + 1; i < nn; ++i) {
      double* ri = &a[i * nn];
      double s = ri[j];
      for (size_t k = 0; k < j; ++k) s -= ri[k] * rj[k];
      ri[j] = s / ljj;
    }
  }

  // Forward substitution L y = b, then back substitution L^T x = y, all m
  // right-hand sides at once (each entry's sum in ascending k).
  std::vector<double> out = b;
  if (mm == 0) {  // no right-hand sides (and no elements to index)
    *x = std::move(out);
    return Status::Ok();
  }
  for (size_t i = 0; i < nn; ++i) {
    double* __restrict row = &out[i * mm];
    for (size_t k = 0; k < i; ++k) {
      const double l = a[i * nn + k];
      const double* __restrict yk = &out[k * mm];
      for (size_t c = 0; c < mm; ++c) row[c] -= l * yk[c];
    }
    const double lii = a[i * nn + i];
    for (size_t c = 0; c < mm; ++c) row[c] /= lii;
  }
  for (size_t i = nn; i-- > 0;) {
    double* __restrict row = &out[i * mm];
    for (size_t k = i + 1; k < nn; ++k) {
      const double l = a[k * nn + i];
      const double* __restrict xk = &out[k * mm];
      for (size_t c = 0; c < mm; ++c) row[c] -= l * xk[c];
    }
    const double lii = a[i * nn + i];
    for (size_t c = 0; c < mm; ++c) row[c] /= lii;
  }
  *x = std::move(out);
  return Status::Ok();
}

void GramAccumulate(const float* x, int rows, int cols, std::vector<double>* xtx) {
  assert(rows >= 0 && cols >= 0);
  const size_t cc = static_cast<size_t>(cols);
  if (xtx->empty()) xtx->assign(cc * cc, 0.0);
  assert(xtx->size() == cc * cc);
  if (rows == 0 || cols == 0) return;
  // The upper triangle of the increment, then added to both halves.
  std::vector<double> g(cc * cc, 0.0);
  AccumulateProducts(x, rows, cols, x, cols, /*upper_only=*/true, g.data());
  double* out = xtx->data();
  for (size_t i = 0; i < cc; ++i) {
    out[i * cc + i] += g[i * cc + i];
    for (size_t j = i + 1; j < cc; ++j) {
      out[i * cc + j] += g[i * cc + j];
      out[j * cc + i] += g[i * cc + j];
    }
  }
}

void CrossAccumulate(const float* x, int rows, int cols, const float* y, int ycols,
                     std::vector<double>* xty) {
  assert(rows >= 0 && cols >= 0 && ycols >= 0);
  const size_t size = static_cast<size_t>(cols) * static_cast<size_t>(ycols);
  if (xty->empty()) xty->assign(size, 0.0);
  assert(xty->size() == size);
  if (rows == 0 || size == 0) return;
  AccumulateProducts(x, rows, cols, y, ycols, /*upper_only=*/false, xty->data());
}

void SymmetricEigen(int n, std::vector<double> a, std::vector<double>* eigenvalues,
                    std::vector<double>* eigenvectors) {
  assert(n >= 0 && a.size() == static_cast<size_t>(n) * static_cast<size_t>(n));
  const size_t nn = static_cast<size_t>(n);
  // The working copy m has an odd row stride: with n a power of two, the
  // column writes below would otherwise all land in the same cache sets
  // (n = 256 ran 10x slower). m is kept exactly symmetric, so rows p and q
  // are also its columns p and q. vt holds V transposed (eigenvector k in row
  // k) so each rotation updates two contiguous rows.
  const size_t ld = nn | 1;
  std::vector<double> m(nn * ld, 0.0);
  for (size_t i = 0; i < nn; ++i) {
    for (size_t j = 0; j < nn; ++j) m[i * ld + j] = a[i * nn + j];
  }
  std::vector<double> vt(nn * nn, 0.0);
  for (size_t i = 0; i < nn; ++i) vt[i * nn + i] = 1.0;

  double norm2 = 0;
  for (double d : a) norm2 += d * d;
  const double tol2 = 1e-30 * norm2;  // (1e-15 * ||A||_F)^2

  for (int sweep = 0; sweep < kMaxJacobiSweeps && norm2 > 0; ++sweep) {
    double off2 = 0;
    for (size_t p = 0; p < nn; ++p) {
      for (size_t q = p + 1; q < nn; ++q) off2 += m[p * ld + q] * m[p * ld + q];
    }
    if (2 * off2 <= tol2) break;
    for (size_t p = 0; p + 1 < nn; ++p) {
      for (size_t q = p + 1; q < nn; ++q) {
        const double apq = m[p * ld + q];
        if (apq == 0) continue;
        const double app = m[p * ld + p], aqq = m[q * ld + q];
        // Numerical Recipes' rule: an entry below the rounding of both
        // diagonal entries is dropped rather than rotated away.
        const double g = 100 * std::fabs(apq);
        if (std::fabs(app) + g == std::fabs(app) && std::fabs(aqq) + g == std::fabs(aqq)) {
          m[p * ld + q] = m[q * ld + p] = 0;
          continue;
        }
        // Rotation by angle phi with t = tan(phi) the smaller root of
        // t^2 + 2 theta t - 1 = 0, which zeroes m[p][q] (Golub & Van Loan 8.5).
        const double theta = (aqq - app) / (2 * apq);
        double t;
        if (std::fabs(theta) > 1e150) {
          t = 0.5 / theta;
        } else {
          t = 1.0 / (std::fabs(theta) + std::sqrt(theta * theta + 1));
          if (theta < 0) t = -t;
        }
        const double c = 1.0 / std::sqrt(t * t + 1), s = t * c;
        double* __restrict rp = &m[p * ld];
        double* __restrict rq = &m[q * ld];
        RotatePair(rp, rq, nn, c, s);
        rp[p] = app - t * apq;
        rq[q] = aqq + t * apq;
        rp[q] = rq[p] = 0;
        for (size_t k = 0; k < nn; ++k) {
          if (k == p || k == q) continue;
          m[k * ld + p] = rp[k];
          m[k * ld + q] = rq[k];
        }
        RotatePair(&vt[p * nn], &vt[q * nn], nn, c, s);
      }
    }
  }

  std::vector<size_t> order(nn);
  std::iota(order.begin(), order.end(), size_t{0});
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t i, size_t j) { return m[i * ld + i] > m[j * ld + j]; });
  eigenvalues->resize(nn);
  eigenvectors->assign(nn * nn, 0.0);
  for (size_t k = 0; k < nn; ++k) {
    const size_t src = order[k];
    (*eigenvalues)[k] = m[src * ld + src];
    size_t arg = 0;
    const double* vec = &vt[src * nn];
    for (size_t i = 1; i < nn; ++i) {
      if (std::fabs(vec[i]) > std::fabs(vec[arg])) arg = i;
    }
    const double sign = vec[arg] < 0 ? -1.0 : 1.0;
    for (size_t i = 0; i < nn; ++i) (*eigenvectors)[i * nn + k] = sign * vec[i];
  }
}

}  // namespace seqkv::internal

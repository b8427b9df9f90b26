// Synthetic seq-codec symbols for the benches (bench/seq_lanes_bench.cc,
// bench/gpu/seq_decode_bench.cc, bench/gpu/seq_entropy_bench.cc): [tokens][dim]
// with the real codec's statistics at ~1.2-1.5 bits per element: mostly
// |q| <= 2, a Laplacian magnitude whose scale falls with the component index,
// a rare escape (|q| >= 15). Options: the scale times `prev_boost` where the
// same component of the previous token had |q| > 1 (a little correlation
// along the tokens; 1: none), escapes up to 14 + `escape_span`.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <random>
#include <vector>

namespace seqkv::bench {

struct SeqSymbolOptions {
  double prev_boost = 1.0;
  double escape_span = 100;
};

inline std::vector<int32_t> SyntheticSeqSymbols(uint32_t tokens, uint32_t dim, uint64_t seed,
                                                const SeqSymbolOptions& o = {}) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> u(0, 1);
  std::vector<int32_t> q(size_t{tokens} * dim);
  for (uint32_t t = 0; t < tokens; ++t) {
    for (uint32_t i = 0; i < dim; ++i) {
      const double scale = 1.6 * std::exp(-double(i) / (dim / 3.0)) + 0.05;
      const int32_t prev = t > 0 ? std::abs(q[size_t{t - 1} * dim + i]) : 0;
      double m = std::floor(-std::log(1 - u(rng)) * scale * (prev > 1 ? o.prev_boost : 1.0) + 0.25);
      if (u(rng) < 0.0005) m = 15 + std::floor(u(rng) * o.escape_span);
      q[size_t{t} * dim + i] = static_cast<int32_t>(u(rng) < 0.5 ? -m : m);
    }
  }
  return q;
}

}  // namespace seqkv::bench

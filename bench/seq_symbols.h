// Synthetic seq-codec symbols for the benches (bench/seq_lanes_bench.cc,
// bench/gpu/seq_decode_bench.cc): [tokens][dim] with the real codec's
// statistics at ~1.2-1.4 bits per element: mostly |q| <= 2, a Laplacian
// magnitude whose scale falls with the component index, a rare escape
// (|q| >= 15).
#pragma once

#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

namespace seqkv::bench {

inline std::vector<int32_t> SyntheticSeqSymbols(uint32_t tokens, uint32_t dim, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> u(0, 1);
  std::vector<int32_t> q(size_t{tokens} * dim);
  for (uint32_t t = 0; t < tokens; ++t) {
    for (uint32_t i = 0; i < dim; ++i) {
      const double scale = 1.6 * std::exp(-double(i) / (dim / 3.0)) + 0.05;
      double m = std::floor(-std::log(1 - u(rng)) * scale + 0.25);
      if (u(rng) < 0.0005) m = 15 + std::floor(u(rng) * 100);
      q[size_t{t} * dim + i] = static_cast<int32_t>(u(rng) < 0.5 ? -m : m);
    }
  }
  return q;
}

}  // namespace seqkv::bench

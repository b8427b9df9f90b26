// Building blocks of the context-mixing models (token ids, seq:lossless):
// adaptive bit counters, a logistic mixer, and the integer squash/stretch
// pair. Everything is integer arithmetic, so encoder and decoder compute the
// same probabilities on every machine (a float here would make the
// bitstream depend on the compiler).
//
// Probabilities are 12-bit (P(1) * 4096) between the pieces and 16-bit at the
// coder (rans.h BinaryRansEncoder/Decoder).
#pragma once

#include <array>
#include <cstdint>
#include <vector>

#include "rans.h"

namespace seqkv::internal {

// squash(d) = 4096 / (1 + e^(-d/256)), for d in [-2047, 2047], by linear
// interpolation of 33 knots (computed once offline, rounded to nearest).
inline int Squash(int d) {
  static constexpr int kKnots[33] = {1,    2,    4,    6,    10,   17,   27,   45,   74,   120,  194,
                                     311,  488,  747,  1102, 1546, 2048, 2550, 2994, 3349, 3608, 3785,
                                     3902, 3976, 4022, 4051, 4069, 4079, 4086, 4090, 4092, 4094, 4095};
  if (d > 2047) d = 2047;
  if (d < -2047) d = -2047;
  const int w = d & 127;
  const int i = (d >> 7) + 16;
  return (kKnots[i] * (128 - w) + kKnots[i + 1] * w + 64) >> 7;
}

// stretch(p) = squash^-1(p): the d with the smallest squash(d) >= p, from a
// table built by scanning squash (deterministic integers).
class StretchTable {
 public:
  StretchTable() {
    int pi = 0;
    for (int d = -2047; d <= 2047; ++d) {
      const int v = Squash(d);
      for (int j = pi; j <= v; ++j) table_[j] = static_cast<int16_t>(d);
      pi = v + 1;
    }
    for (int j = pi; j < 4096; ++j) table_[j] = 2047;
  }
  int operator()(int p) const { return table_[p]; }

 private:
  std::array<int16_t, 4096> table_{};
};

inline const StretchTable& Stretch() {
  static const StretchTable table;
  return table;
}

// An adaptive probability with a confidence count: the update rate starts at
// 1/1.5 and falls to 1/(limit + 1.5), so fresh contexts learn fast.
struct BitCounter {
  uint16_t p = 32768;  // P(1) * 65536
  uint16_t n = 0;

  int P12() const { return p >> 4; }
  void Update(int bit, int limit) {
    static const std::array<int32_t, 1024> kRate = [] {
      std::array<int32_t, 1024> r{};
      for (int i = 0; i < 1024; ++i) r[i] = static_cast<int32_t>(65536 * 2 / (2 * i + 3));
      return r;
    }();
    const int32_t target = bit ? 65535 : 0;
    p = static_cast<uint16_t>(p + ((int64_t{target - int32_t{p}} * kRate[n]) >> 16));
    if (n < limit) ++n;
  }
};

// 16 counters in one cache line: the 15 nodes of a 4-decision binary tree
// (slot 0 unused). Coding 4 decisions from one line costs one cache miss.
struct alignas(64) CounterLine {
  BitCounter c[16];
};

// A hashed table of 2^bits lines.
class LineTable {
 public:
  explicit LineTable(int bits) : mask_((uint64_t{1} << bits) - 1), lines_(size_t{1} << bits) {}
  CounterLine& At(uint64_t h) { return lines_[(h ^ (h >> 29)) & mask_]; }

 private:
  uint64_t mask_;
  std::vector<CounterLine> lines_;
};

inline uint64_t HashMix(uint64_t a, uint64_t b) {
  uint64_t h = (a ^ (b + 0x9E3779B97F4A7C15ull + (a << 6) + (a >> 2))) * 0xD6E8FEB86659FD93ull;
  return h ^ (h >> 32);
}

// Logistic mixing of up to kMaxInputs stretched predictions with one weight
// vector per selector value. Weights are 16.16 fixed point.
class Mixer {
 public:
  static constexpr int kMaxInputs = 8;

  Mixer(int inputs, int selectors, int learning_rate, int initial_weight)
      : n_(inputs), lr_(learning_rate), weights_(size_t(selectors) * inputs, initial_weight) {}

  void Add(int x) { x_[k_++] = x; }
  // Mixes the added inputs with weight set `selector`; returns 12-bit P(1).
  int Mix(int selector) {
    w_ = &weights_[size_t(selector) * n_];
    int64_t dot = 0;
    for (int i = 0; i < n_; ++i) dot += int64_t{x_[i]} * w_[i];
    int d = static_cast<int>(dot >> 16);
    pr_ = Squash(d);
    if (pr_ < 1) pr_ = 1;
    if (pr_ > 4095) pr_ = 4095;
    return pr_;
  }
  void Update(int bit) {
    const int err = ((bit << 12) - pr_) * lr_;
    for (int i = 0; i < n_; ++i) w_[i] += (x_[i] * err + (1 << 9)) >> 10;
    k_ = 0;
  }

 private:
  int n_;
  int lr_;
  std::vector<int32_t> weights_;
  int32_t* w_ = nullptr;
  int x_[kMaxInputs] = {};
  int k_ = 0;
  int pr_ = 2048;
};

// An adaptive probability map (secondary estimation): refines a probability
// given a small context by interpolating between 33 buckets of stretch(p).
class Apm {
 public:
  Apm(int contexts, int rate) : rate_(rate), t_(size_t(contexts) * 33) {
    for (int c = 0; c < contexts; ++c) {
      for (int j = 0; j < 33; ++j) t_[size_t(c) * 33 + j] = static_cast<uint16_t>(Squash((j - 16) * 128) * 16);
    }
  }
  int Refine(int p12, int context) {
    const int s = Stretch()(p12) + 2048;  // 1..4095
    const int lo = s >> 7, w = s & 127;
    idx_ = size_t(context) * 33 + lo;
    w_ = w;
    int p = (t_[idx_] * (128 - w) + t_[idx_ + 1] * w) >> 11;
    return p < 1 ? 1 : (p > 4095 ? 4095 : p);
  }
  void Update(int bit) {
    const int target = bit ? 65535 : 0;
    t_[idx_] = static_cast<uint16_t>(t_[idx_] + (((target - t_[idx_]) * (128 - w_)) >> (rate_ + 7)));
    t_[idx_ + 1] = static_cast<uint16_t>(t_[idx_ + 1] + (((target - t_[idx_ + 1]) * w_) >> (rate_ + 7)));
  }

 private:
  int rate_;
  std::vector<uint16_t> t_;
  size_t idx_ = 0;
  int w_ = 0;
};

// Adapters that let one model template drive both directions: Bit(bit, p12)
// codes a decision with 12-bit P(1) and returns it (the decoder ignores the
// bit it is given).
struct CmEncodeSide {
  BinaryRansEncoder enc;
  int Bit(int bit, int p12) {
    enc.Put(bit, static_cast<uint32_t>(p12) << 4);
    return bit;
  }
};

struct CmDecodeSide {
  explicit CmDecodeSide(std::span<const uint8_t> bytes) : dec(bytes) {}
  BinaryRansDecoder dec;
  int Bit(int, int p12) { return dec.Get(static_cast<uint32_t>(p12) << 4); }
};

}  // namespace seqkv::internal

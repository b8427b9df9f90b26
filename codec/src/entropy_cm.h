// Building blocks of the context-mixing models (token ids, seq:lossless):
// adaptive bit counters, a logistic mixer, the integer squash/stretch pair,
// a bounded hash table for sparse statistics, and a binary arithmetic coder
// for streams too short to amortize rANS's 32-bit final state. Everything is
// integer arithmetic, so encoder and decoder compute the
// same probabilities on every machine (a float here would make the
// bitstream depend on the compiler).
//
// Probabilities are 12-bit (P(1) * 4096) between the pieces and 16-bit at the
// coder (rans.h BinaryRansEncoder/Decoder).
#pragma once

#include <array>
#include <cstdint>
#include <span>
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

// The splitmix64 finalizer: a bijective 64-bit mix.
inline uint64_t Mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// A map from 64-bit keys (hashes; 0 is stored as 1) to small values, by open
// addressing: at most half full while it can grow to max_slots, then filled
// to 3/4, after which it refuses new keys (FindOrInsert answers nullptr and
// full() turns true). Memory is bounded by max_slots whatever the input.
template <class Value>
class KeyTable {
 public:
  explicit KeyTable(size_t max_slots) : max_slots_(max_slots), slots_(256) {}
  const Value* Find(uint64_t key) const {
    key |= key == 0;
    for (size_t i = key & (slots_.size() - 1);; i = (i + 1) & (slots_.size() - 1)) {
      if (slots_[i].key == key) return &slots_[i].value;
      if (slots_[i].key == 0) return nullptr;
    }
  }
  Value* FindOrInsert(uint64_t key) {
    key |= key == 0;
    if ((used_ + 1) * 2 > slots_.size() && slots_.size() < max_slots_) Grow();
    if ((used_ + 1) * 4 > slots_.size() * 3) {
      Value* v = const_cast<Value*>(Find(key));
      full_ |= v == nullptr;
      return v;
    }
    size_t i = key & (slots_.size() - 1);
    while (slots_[i].key != 0 && slots_[i].key != key) i = (i + 1) & (slots_.size() - 1);
    if (slots_[i].key == 0) {
      slots_[i].key = key;
      ++used_;
    }
    return &slots_[i].value;
  }
  bool full() const { return full_; }

 private:
  struct Slot {
    uint64_t key = 0;
    Value value{};
  };
  void Grow() {
    std::vector<Slot> old(slots_.size() * 2);
    old.swap(slots_);
    for (const Slot& s : old) {
      if (s.key == 0) continue;
      size_t i = s.key & (slots_.size() - 1);
      while (slots_[i].key != 0) i = (i + 1) & (slots_.size() - 1);
      slots_[i] = s;
    }
  }
  size_t max_slots_;
  size_t used_ = 0;
  bool full_ = false;
  std::vector<Slot> slots_;
};

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

// Binary arithmetic coding (carry-less, 32-bit range, byte output), used by
// token coding 4. Against BinaryRansEncoder it saves the final state (about
// 40 bits a stream) and codes 16-bit probabilities at full precision; a
// 1024-id chunk is about 1,000 bytes, so that is 0.04 bits per id.
//
// Stream: the bytes the encoder shifted out, then one flush byte. The decoder
// reads 4 bytes ahead (zeros past the end). A valid stream leaves the
// decoder having read exactly size + 3 bytes, with its code value equal to
// the flush value (the flush byte then three zeros); anything else is
// DataLoss. docs/format.md, "Token coding 4", is normative.
class BinaryArithEncoder {
 public:
  // Codes `bit` with P(1) = p1 / 2^16 (clamped to [1, 2^16 - 1]).
  void Put(int bit, uint32_t p1) {
    const uint32_t xmid = Mid(x1_, x2_, p1);
    if (bit) {
      x2_ = xmid;
    } else {
      x1_ = xmid + 1;
    }
    while (((x1_ ^ x2_) & 0xFF000000u) == 0) {
      out_.push_back(static_cast<uint8_t>(x2_ >> 24));
      x1_ <<= 8;
      x2_ = (x2_ << 8) | 255;
    }
  }
  std::vector<uint8_t> Finish() {
    out_.push_back(static_cast<uint8_t>(FlushByte(x1_)));
    return std::move(out_);
  }

  // The split point: P(1) of the range [x1, x2] goes to [x1, xmid].
  static uint32_t Mid(uint32_t x1, uint32_t x2, uint32_t p1) {
    p1 = p1 < 1 ? 1 : (p1 > 65535 ? 65535 : p1);
    return x1 + static_cast<uint32_t>((uint64_t{x2 - x1} * p1) >> 16);
  }
  // The top byte of the smallest value in [x1, x2] whose low 24 bits are 0
  // (it exists: x1 and x2 differ in their top byte after every Put).
  static uint32_t FlushByte(uint32_t x1) { return (x1 >> 24) + ((x1 & 0xFFFFFFu) != 0); }

 private:
  uint32_t x1_ = 0, x2_ = 0xFFFFFFFFu;
  std::vector<uint8_t> out_;
};

class BinaryArithDecoder {
 public:
  explicit BinaryArithDecoder(std::span<const uint8_t> bytes) : bytes_(bytes) {
    for (int i = 0; i < 4; ++i) x_ = (x_ << 8) | Next();
  }
  // Decodes one bit with P(1) = p1 / 2^16. Once the stream is overrun it
  // returns 0 (bounded work) and ok() is false.
  int Get(uint32_t p1) {
    if (!ok_) return 0;
    const uint32_t xmid = BinaryArithEncoder::Mid(x1_, x2_, p1);
    const int bit = x_ <= xmid;
    if (bit) {
      x2_ = xmid;
    } else {
      x1_ = xmid + 1;
    }
    while (((x1_ ^ x2_) & 0xFF000000u) == 0) {
      x1_ <<= 8;
      x2_ = (x2_ << 8) | 255;
      x_ = (x_ << 8) | Next();
    }
    if (read_ > bytes_.size() + 3) ok_ = false;
    return ok_ ? bit : 0;
  }
  bool ok() const { return ok_; }
  // OK if the stream was consumed exactly and ends with the encoder's flush.
  bool Finished() const {
    return ok_ && read_ == bytes_.size() + 3 && x_ == BinaryArithEncoder::FlushByte(x1_) << 24;
  }

 private:
  uint32_t Next() {
    const size_t i = read_++;
    return i < bytes_.size() ? bytes_[i] : 0;
  }
  std::span<const uint8_t> bytes_;
  size_t read_ = 0;
  uint32_t x1_ = 0, x2_ = 0xFFFFFFFFu, x_ = 0;
  bool ok_ = true;
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

// The same with 16-bit P(1) and the arithmetic coder.
struct ArithEncodeSide {
  BinaryArithEncoder enc;
  int Bit(int bit, uint32_t p16) {
    enc.Put(bit, p16);
    return bit;
  }
};

struct ArithDecodeSide {
  explicit ArithDecodeSide(std::span<const uint8_t> bytes) : dec(bytes) {}
  BinaryArithDecoder dec;
  int Bit(int, uint32_t p16) { return dec.Get(p16); }
};

}  // namespace seqkv::internal

#include "seq_lossless_model.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <unordered_map>

#include "seqkv/codec/dtype.h"
#include "seq_lossless_rope.h"

#include "entropy_cm.h"
#include "rans.h"

namespace seqkv::internal {

namespace {

constexpr int kInputs = 5;
constexpr uint32_t kNone = 0x10000;  // a neighbour outside the tensor
constexpr int kLayerClasses = 8;
constexpr int kMatchClasses = 6;  // how much preceding context P1's occurrence shares
constexpr int kMaxLineBits = 17;
constexpr int kMinLineBits = 10;

using Line = CounterLine;

inline uint64_t H(uint64_t a, uint64_t b) { return HashMix(a, b); }
inline uint64_t H(uint64_t a, uint64_t b, uint64_t c) { return HashMix(HashMix(a, b), c); }
inline uint64_t H(uint64_t a, uint64_t b, uint64_t c, uint64_t d) { return HashMix(H(a, b, c), d); }
inline uint64_t H(uint64_t a, uint64_t b, uint64_t c, uint64_t d, uint64_t e) { return HashMix(H(a, b, c, d), e); }

inline uint32_t Exp(uint32_t x) { return x >= kNone ? 256 : (x >> 7) & 0xFF; }
inline uint32_t Sign(uint32_t x) { return x >= kNone ? 2 : x >> 15; }
inline uint32_t Mant(uint32_t x) { return x & 0x7F; }

// Where neighbour x lies relative to the binade e being coded (coarse).
inline uint32_t Rel(uint32_t x, uint32_t e) {
  if (x >= kNone) return 0xFFFF;
  const int diff = std::clamp(static_cast<int>(Exp(x)) - static_cast<int>(e), -3, 3) + 3;
  return (Sign(x) << 12) | (uint32_t(diff) << 8) | (Exp(x) == e ? Mant(x) >> 4 : 8);
}
// Fine: x's mantissa when it shares sign s and binade e, else a coarse class.
inline uint32_t RelFine(uint32_t x, uint32_t s, uint32_t e) {
  if (x >= kNone) return 0xFFFF;
  if (Sign(x) != s) return 0x1000;
  if (Exp(x) == e) return Mant(x);
  return 0x2000 + static_cast<uint32_t>(std::clamp(static_cast<int>(Exp(x)) - static_cast<int>(e), -2, 2) + 2);
}

struct Neighbours {
  uint32_t a, c, k;  // previous token, previous channel, key at the same place (V); kNone when absent
  uint32_t p1;       // the same token's previous occurrence (keys re-rotated), or kNone
  uint32_t p2;       // keys: running mean of de-rotated keys, rotated to this position; or kNone
  uint32_t mclass;   // 0: no P1; else 1 + class of the preceding ids P1's occurrence shares
};

// Bits of u in coding order: exponent (8), sign, mantissa (7).
inline uint32_t CodeWord(uint32_t u) { return ((u >> 7 & 0xFF) << 8) | ((u >> 15) << 7) | (u & 0x7F); }

class Bf16Model {
 public:
  static constexpr int kMixInputs = kInputs + 2;  // + match + bias
  static constexpr int kSelectors = 2 * 4 * 16 * 3;

  explicit Bf16Model(const KvShape& shape)
      : mixer_(kMixInputs, kSelectors * kMatchClasses * kLayerClasses, 5, 18000), apm_(kSelectors, 7) {
    const uint64_t n = shape.elements();
    const int bits = std::clamp(static_cast<int>(std::bit_width(n)) - 3, kMinLineBits, kMaxLineBits);
    for (int i = 0; i < kInputs; ++i) tables_.emplace_back(bits);
  }

  // Codes element u of tensor kv (0 = K, 1 = V) at layer l, channel id ch.
  template <class Coder>
  uint16_t Code(Coder& coder, uint32_t u, uint32_t kv, uint32_t l, uint64_t ch, const Neighbours& nb) {
    lc_ = std::min<uint32_t>(l, kLayerClasses - 1);
    kv_ = kv;
    mclass_ = nb.mclass;
    match_base_ = ((kv * 4 + std::min<uint32_t>(l, 3)) * kMatchClasses + nb.mclass) * 16;
    expected_ = nb.p1 < kNone ? CodeWord(nb.p1) : 0;
    p1_state_ = nb.p1 < kNone ? 1 : 0;
    decision_ = 0;
    const uint64_t kvl = (uint64_t{kv} << 32) | l;
    const uint32_t ea = Exp(nb.a), ec = Exp(nb.c), e1 = Exp(nb.p1), e2 = Exp(nb.p2);
    const uint32_t other = kv ? nb.k : nb.c;
    uint64_t h[kInputs];
    // Exponent, high then low nibble.
    h[0] = H(1, ch);
    h[1] = H(2, kvl, e1, nb.mclass);
    h[2] = H(3, ch, kv ? Exp(nb.k) : e2);
    h[3] = H(4, kvl, e1, e2);
    h[4] = H(5, kvl, ea, ec);
    const uint32_t e = u >> 7 & 0xFF;
    const uint32_t n0 = CodeNibble(coder, e >> 4, h, 0);
    for (auto& x : h) x = HashMix(x, n0 + 1);
    const uint32_t e_dec = (n0 << 4) | CodeNibble(coder, e & 15, h, 1);
    // Sign and mantissa bits 6..4.
    h[0] = H(6, ch, e_dec);
    h[1] = H(7, kvl, e_dec, Rel(nb.p1, e_dec), nb.mclass);
    h[2] = H(8, kvl, e_dec, Rel(nb.p2, e_dec));
    h[3] = H(9, kvl, e_dec, Rel(other, e_dec));
    h[4] = H(10, ch, e_dec, Rel(nb.a, e_dec) >> 8);
    const uint32_t n2 = CodeNibble(coder, ((u >> 15) << 3) | ((u >> 4) & 7), h, 2);
    // Mantissa bits 3..0.
    const uint32_t s = n2 >> 3;
    h[0] = H(11, kv, e_dec, n2);
    h[1] = H(12, ch, e_dec, n2);
    h[2] = H(13, kvl, e_dec, HashMix(n2, nb.mclass), RelFine(nb.p1, s, e_dec));
    h[3] = H(14, kvl, e_dec, n2, RelFine(nb.p2, s, e_dec));
    h[4] = H(15, kvl, e_dec, n2, RelFine(nb.a, s, e_dec));
    const uint32_t n3 = CodeNibble(coder, u & 15, h, 3);
    return static_cast<uint16_t>((s << 15) | (e_dec << 7) | ((n2 & 7) << 4) | n3);
  }

 private:
  template <class Coder>
  uint32_t CodeNibble(Coder& coder, uint32_t value, const uint64_t* h, int nibble) {
    static constexpr int kLimits[kInputs] = {255, 127, 127, 127, 127};
    const StretchTable& st = Stretch();
    Line* lines[kInputs];
    for (int i = 0; i < kInputs; ++i) lines[i] = &tables_[i].At(h[i]);
    const int base = (int(kv_) * 4 + nibble) * 16;
    uint32_t node = 1;
    for (int b = 3; b >= 0; --b) {
      int bit = (value >> b) & 1;
      for (int i = 0; i < kInputs; ++i) mixer_.Add(st(lines[i]->c[node].P12()));
      BitCounter* mc = nullptr;
      int expected = 0;
      if (p1_state_ == 1) {
        expected = (expected_ >> (15 - decision_)) & 1;
        mc = &match_[match_base_ + decision_];
        const int sm = st(mc->P12());
        mixer_.Add(expected ? sm : -sm);
      } else {
        mixer_.Add(0);
      }
      mixer_.Add(256);
      const int sel = (base + int(node)) * 3 + p1_state_;
      const int p_mix = mixer_.Mix((sel * kMatchClasses + int(mclass_)) * kLayerClasses + int(lc_));
      const int p_apm = apm_.Refine(p_mix, sel);
      const int p = std::clamp((p_mix + 3 * p_apm + 2) >> 2, 1, 4095);
      bit = coder.Bit(bit, p);
      mixer_.Update(bit);
      apm_.Update(bit);
      for (int i = 0; i < kInputs; ++i) lines[i]->c[node].Update(bit, kLimits[i]);
      if (mc) {
        mc->Update(bit == expected, 255);
        if (bit != expected) p1_state_ = 2;
      }
      ++decision_;
      node = (node << 1) | uint32_t(bit);
    }
    return node - 16;
  }

  std::vector<LineTable> tables_;
  Mixer mixer_;
  Apm apm_;
  BitCounter match_[2 * 4 * kMatchClasses * 16];
  uint32_t lc_ = 0, kv_ = 0, mclass_ = 0, match_base_ = 0, expected_ = 0, decision_ = 0;
  int p1_state_ = 0;
};

inline uint32_t ToBf16OrNone(double x) {
  const float f = static_cast<float>(x);
  if (!std::isfinite(f)) return kNone;
  return FloatToBf16(f);
}

// The predictions of one row (one head vector) from rows already coded.
class RowPredictor {
 public:
  RowPredictor(const Chunk& chunk)
      : shape_(chunk.shape), pairs_(chunk.rope, chunk.shape.head_dim), first_position_(chunk.first_position),
        prev_(chunk.shape.tokens, -1), mclass_(chunk.shape.tokens, 0), sum_(chunk.shape.head_dim), sin_(pairs_.inv_freq.size()),
        cos_(pairs_.inv_freq.size()), p1_(chunk.shape.head_dim), p2_(chunk.shape.head_dim) {
    // P1's source: among the last kMaxCandidates occurrences of the same id,
    // the one whose preceding ids agree longest with this token's (deeper
    // layers see the context, so a repeated phrase predicts much better
    // than a repeated word); the most recent wins ties.
    constexpr int kMaxCandidates = 16;
    constexpr int kMaxContext = 32;
    const uint32_t T = std::min<uint32_t>(shape_.tokens, static_cast<uint32_t>(chunk.tokens.size()));
    const int32_t* ids = chunk.tokens.data();
    std::vector<int64_t> chain(T, -1);
    std::unordered_map<int32_t, int64_t> last;
    for (uint32_t t = 0; t < T; ++t) {
      auto [it, inserted] = last.try_emplace(ids[t], t);
      if (!inserted) {
        chain[t] = it->second;
        it->second = t;
      }
      int best_len = -1;
      int64_t cand = chain[t];
      for (int n = 0; n < kMaxCandidates && cand >= 0; ++n, cand = chain[cand]) {
        int len = 0;
        while (len < kMaxContext && cand - 1 - len >= 0 && ids[cand - 1 - len] == ids[t - 1 - len]) ++len;
        if (len > best_len) {
          best_len = len;
          prev_[t] = cand;
        }
      }
      if (best_len >= 0) {
        const int bucket = best_len == 0 ? 0 : best_len == 1 ? 1 : best_len < 4 ? 2 : best_len < 8 ? 3 : 4;
        mclass_[t] = static_cast<uint8_t>(1 + bucket);
      }
    }
  }

  // Start of a [layer, head] block of tensor kv.
  void BeginBlock() {
    std::fill(sum_.begin(), sum_.end(), 0.0);
  }

  // Predictions for row t of the block whose row 0 is at `block` (tensor kv).
  void Predict(const uint16_t* block, uint32_t kv, uint64_t t) {
    const uint64_t D = shape_.head_dim;
    const bool rotate = kv == 0 && pairs_.rotary();
    if (rotate) {
      const double pos = static_cast<double>(first_position_ + t);
      for (size_t i = 0; i < pairs_.inv_freq.size(); ++i) DetSinCos(pos * pairs_.inv_freq[i], &sin_[i], &cos_[i]);
    }
    const int64_t tp = prev_[t];
    if (tp < 0) {
      std::fill(p1_.begin(), p1_.end(), kNone);
    } else if (!rotate) {
      for (uint64_t d = 0; d < D; ++d) p1_[d] = block[tp * D + d];
    } else {
      const uint16_t* src = block + tp * D;
      std::vector<double> ds(pairs_.inv_freq.size()), dc(pairs_.inv_freq.size());
      for (size_t i = 0; i < ds.size(); ++i) DetSinCos(double(t - tp) * pairs_.inv_freq[i], &ds[i], &dc[i]);
      for (uint64_t d = 0; d < D; ++d) {
        const auto& c = pairs_.channels[d];
        if (c.partner < 0) {
          p1_[d] = src[d];
          continue;
        }
        const double x = Bf16ToFloat(src[d]), y = Bf16ToFloat(src[c.partner]);
        const double co = dc[c.freq], si = ds[c.freq];
        p1_[d] = ToBf16OrNone(c.first ? x * co - y * si : x * co + y * si);
      }
    }
    if (kv != 0 || t == 0) {
      std::fill(p2_.begin(), p2_.end(), kNone);
      return;
    }
    const double inv_t = 1.0 / static_cast<double>(t);
    for (uint64_t d = 0; d < D; ++d) {
      const auto& c = pairs_.channels[d];
      if (!rotate || c.partner < 0) {
        p2_[d] = ToBf16OrNone(sum_[d] * inv_t);
        continue;
      }
      const double x = sum_[d] * inv_t, y = sum_[c.partner] * inv_t;
      const double co = cos_[c.freq], si = sin_[c.freq];
      p2_[d] = ToBf16OrNone(c.first ? x * co - y * si : x * co + y * si);
    }
  }

  // After row t (keys) is coded: accumulate its de-rotated values.
  void Update(const uint16_t* row, uint32_t kv) {
    if (kv != 0) return;
    const bool rotate = pairs_.rotary();
    for (uint64_t d = 0; d < shape_.head_dim; ++d) {
      const auto& c = pairs_.channels[d];
      const double x = Bf16ToFloat(row[d]);
      if (!rotate || c.partner < 0) {
        sum_[d] += x;
        continue;
      }
      const double y = Bf16ToFloat(row[c.partner]);
      const double co = cos_[c.freq], si = sin_[c.freq];
      sum_[d] += c.first ? x * co + y * si : x * co - y * si;
    }
  }

  uint32_t p1(uint64_t d) const { return p1_[d]; }
  uint32_t mclass(uint64_t t) const { return mclass_[t]; }
  uint32_t p2(uint64_t d) const { return p2_[d]; }

 private:
  KvShape shape_;
  RotaryPairs pairs_;
  uint64_t first_position_;
  std::vector<int64_t> prev_;    // P1's source position for each token, or -1
  std::vector<uint8_t> mclass_;  // Neighbours::mclass for each token
  std::vector<double> sum_;
  std::vector<double> sin_, cos_;
  std::vector<uint32_t> p1_, p2_;
};

// Runs the model over the tensors in decode order. On encode k/v hold the
// input; on decode they start zeroed and are filled. next_side(stream) gives
// the coder of each stream in turn; done(stream, last) checks it (false stops).
template <class Side, class NextSide, class Done>
bool Run(const Chunk& chunk, uint16_t* k, uint16_t* v, NextSide next_side, Done done) {
  const KvShape& s = chunk.shape;
  Bf16Model model(s);
  RowPredictor predictor(chunk);
  const SeqLosslessLayout layout = SeqLosslessLayoutFor(s);
  const uint64_t D = s.head_dim, T = s.tokens, H = s.kv_heads;
  for (uint32_t g = 0; g < layout.groups; ++g) {
    const uint32_t l0 = g * layout.layers_per_section;
    const uint32_t l1 = std::min(s.layers, l0 + layout.layers_per_section);
    for (uint32_t kv = 0; kv < 2; ++kv) {
      const uint32_t stream = 2 * g + kv;
      Side& side = next_side(stream);
      uint16_t* cur = kv ? v : k;
      for (uint32_t l = l0; l < l1; ++l) {
        for (uint64_t h = 0; h < H; ++h) {
          const uint64_t ch_base = ((uint64_t{kv} * s.layers + l) * H + h) * D;
          const uint64_t block = (uint64_t{l} * H + h) * T * D;
          predictor.BeginBlock();
          for (uint64_t t = 0; t < T; ++t) {
            const uint64_t row = block + t * D;
            predictor.Predict(cur + block, kv, t);
            for (uint64_t d = 0; d < D; ++d) {
              const uint64_t i = row + d;
              Neighbours nb;
              nb.a = t > 0 ? cur[i - D] : kNone;
              nb.c = d > 0 ? cur[i - 1] : kNone;
              nb.k = kv ? k[i] : kNone;
              nb.p1 = predictor.p1(d);
              nb.p2 = predictor.p2(d);
              nb.mclass = predictor.mclass(t);
              cur[i] = model.Code(side, cur[i], kv, l, ch_base + d, nb);
            }
            predictor.Update(cur + row, kv);
            if (!done(stream, false)) return false;  // stop early on a corrupt stream
          }
        }
      }
      if (!done(stream, true)) return false;
    }
  }
  return true;
}

void ToU16(std::span<const uint8_t> bytes, std::vector<uint16_t>* out) {
  out->resize(bytes.size() / 2);
  for (size_t i = 0; i < out->size(); ++i) (*out)[i] = static_cast<uint16_t>(bytes[2 * i] | (bytes[2 * i + 1] << 8));
}

void FromU16(const std::vector<uint16_t>& in, std::vector<uint8_t>* out) {
  out->resize(in.size() * 2);
  for (size_t i = 0; i < in.size(); ++i) {
    (*out)[2 * i] = static_cast<uint8_t>(in[i]);
    (*out)[2 * i + 1] = static_cast<uint8_t>(in[i] >> 8);
  }
}

}  // namespace

SeqLosslessLayout SeqLosslessLayoutFor(const KvShape& shape) {
  SeqLosslessLayout layout;
  layout.layers_per_section = std::max<uint32_t>(1, (shape.layers + 126) / 127);
  layout.groups = (shape.layers + layout.layers_per_section - 1) / layout.layers_per_section;
  return layout;
}

std::vector<std::vector<uint8_t>> EncodeSeqLosslessBf16(const Chunk& chunk) {
  std::vector<uint16_t> k16, v16;
  ToU16(chunk.k, &k16);
  ToU16(chunk.v, &v16);
  const SeqLosslessLayout layout = SeqLosslessLayoutFor(chunk.shape);
  std::vector<std::vector<uint8_t>> streams(2 * layout.groups);
  CmEncodeSide side;
  Run<CmEncodeSide>(
      chunk, k16.data(), v16.data(), [&](uint32_t) -> CmEncodeSide& { return side; },
      [&](uint32_t stream, bool last) {
        if (last) streams[stream] = side.enc.Finish();
        return true;
      });
  return streams;
}

Status DecodeSeqLosslessBf16(std::span<const std::span<const uint8_t>> streams, Chunk* chunk) {
  const KvShape& shape = chunk->shape;
  const SeqLosslessLayout layout = SeqLosslessLayoutFor(shape);
  if (streams.size() != 2 * layout.groups) return DataLoss("seq: wrong number of streams");
  std::vector<uint16_t> k16(shape.elements()), v16(shape.elements());
  std::unique_ptr<CmDecodeSide> side;
  Status status;
  const bool ok = Run<CmDecodeSide>(
      *chunk, k16.data(), v16.data(),
      [&](uint32_t stream) -> CmDecodeSide& {
        side = std::make_unique<CmDecodeSide>(streams[stream]);
        return *side;
      },
      [&](uint32_t stream, bool last) {
        if (!side->dec.ok()) {
          status = DataLoss("seq: stream " + std::to_string(stream) + " truncated or corrupt");
          return false;
        }
        if (last) {
          status = side->dec.Finish().WithContext("seq: stream " + std::to_string(stream));
          return status.ok();
        }
        return true;
      });
  if (!ok) return status.ok() ? DataLoss("seq: corrupt stream") : status;
  FromU16(k16, &chunk->k);
  FromU16(v16, &chunk->v);
  return Status::Ok();
}

}  // namespace seqkv::internal

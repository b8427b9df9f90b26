#include "seq_lossy_core.h"

#include <algorithm>
#include <array>
#include <bit>
#include <cmath>
#include <cstdio>
#include <cstring>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#endif

#include "bytes.h"
#include "engine_rope.h"
#include "rans.h"
#include "seq_lanes.h"
#include "seq_lossless_rope.h"
#include "seqkv/codec/dtype.h"

namespace seqkv::internal {

std::string ModelIdHex(const std::array<uint8_t, 16>& id) {
  std::string s;
  char buf[3];
  for (uint8_t b : id) {
    std::snprintf(buf, sizeof(buf), "%02x", b);
    s += buf;
  }
  return s;
}

namespace {

// One layer of the coding domain into out [2][H][T][d]; table is null when no
// rotation is to be undone.
void FillCodingDomainLayer(const Chunk& chunk, uint32_t layer, const RopeTable* table, float* out) {
  const KvShape& s = chunk.shape;
  const size_t per_head = size_t{s.tokens} * s.head_dim;
  const size_t per_layer = s.kv_heads * per_head;
  const size_t esize = DTypeSize(chunk.dtype);
  ToFloat(chunk.dtype, chunk.k.data() + layer * per_layer * esize, per_layer, out);
  ToFloat(chunk.dtype, chunk.v.data() + layer * per_layer * esize, per_layer, out + per_layer);
  if (table != nullptr) {
    for (uint32_t h = 0; h < s.kv_heads; ++h) UndoRope(*table, chunk.rope.style, out + h * per_head);
  }
}

bool UndoesRope(const Chunk& chunk, bool pre_rope) { return pre_rope && chunk.rope.style != RopeStyle::kNone; }

}  // namespace

std::vector<float> SeqCodingDomainLayer(const Chunk& chunk, uint32_t layer, bool pre_rope) {
  const KvShape& s = chunk.shape;
  RopeTable table;
  if (UndoesRope(chunk, pre_rope)) table = MakeRopeTable(chunk.rope, s.head_dim, chunk.first_position, s.tokens);
  return SeqCodingDomainLayer(chunk, layer, UndoesRope(chunk, pre_rope) ? &table : nullptr);
}

std::vector<float> SeqCodingDomainLayer(const Chunk& chunk, uint32_t layer, const RopeTable* table) {
  const KvShape& s = chunk.shape;
  std::vector<float> out(2 * size_t{s.kv_heads} * s.tokens * s.head_dim);
  FillCodingDomainLayer(chunk, layer, table, out.data());
  return out;
}

std::vector<float> SeqCodingDomain(const Chunk& chunk, bool pre_rope) {
  const KvShape& s = chunk.shape;
  RopeTable table;  // the same positions for every layer: made once
  if (UndoesRope(chunk, pre_rope)) table = MakeRopeTable(chunk.rope, s.head_dim, chunk.first_position, s.tokens);
  return SeqCodingDomain(chunk, UndoesRope(chunk, pre_rope) ? &table : nullptr);
}

std::vector<float> SeqCodingDomain(const Chunk& chunk, const RopeTable* table) {
  const KvShape& s = chunk.shape;
  const size_t per_layer2 = 2 * size_t{s.kv_heads} * s.tokens * s.head_dim;
  std::vector<float> out(s.layers * per_layer2);
  for (uint32_t l = 0; l < s.layers; ++l) FillCodingDomainLayer(chunk, l, table, out.data() + l * per_layer2);
  return out;
}

// ============================================================ entropy coding

SeqAdaptiveModel::SeqAdaptiveModel() {
  const uint32_t budget = (1u << 15) - kSeqSymbols;
  for (int s = 0; s < kSeqSymbols; ++s) p[s] = static_cast<uint16_t>(budget / kSeqSymbols);
  p[0] = static_cast<uint16_t>(p[0] + budget % kSeqSymbols);
}

void SeqAdaptiveModel::Update(int s) {
  const int rate = Rate();
  uint32_t moved = 0;
  for (int k = 0; k < kSeqSymbols; ++k) {
    const uint16_t d = static_cast<uint16_t>(p[k] >> rate);
    p[k] = static_cast<uint16_t>(p[k] - d);
    moved += d;
  }
  p[s] = static_cast<uint16_t>(p[s] + moved);
  ++n;
}

namespace {

constexpr int kScaleBits = 15;
constexpr uint32_t kTotal = 1u << kScaleBits;
constexpr int kSymbols = kSeqSymbols;
constexpr int kEscape = kSymbols - 1;
constexpr int kContexts = kSeqContexts;
constexpr uint32_t kHalf = kTotal / 2;
using AdaptiveModel = SeqAdaptiveModel;

struct Op {
  uint32_t start;
  uint32_t freq;
  uint8_t lane;
};

// One rANS encode step of a 32-bit state with 16-bit words: a word leaves
// first when the state would overflow.
void RansPut(uint32_t& x, const Op& op, std::vector<uint16_t>* words) {
  if (x >= (uint64_t{op.freq} << (32 - kScaleBits))) {
    words->push_back(static_cast<uint16_t>(x));
    x >>= 16;
  }
  x = ((x / op.freq) << kScaleBits) + (x % op.freq) + op.start;
}

// The lanes' final states, then the words in decode order (coded backwards).
void PutStates(const uint32_t* states, uint32_t lanes, const std::vector<uint16_t>& words, std::vector<uint8_t>* out) {
  ByteWriter w(out);
  for (uint32_t l = 0; l < lanes; ++l) w.U32(states[l]);
  for (size_t i = words.size(); i-- > 0;) w.U16(words[i]);
}

int Context(int32_t prev) { return prev == 0 ? 0 : ((prev == 1 || prev == -1) ? 1 : 2); }

// The uniform-bit operations after a symbol v of magnitude mag on `lane`:
// for the escape class the Exp-Golomb-0 code of mag - 15 (zeros, a one, the
// low bits), then the sign when v != 0. Both stream kinds code them alike.
template <typename Emit>
void EmitUniformBits(uint8_t lane, int32_t v, uint32_t mag, Emit&& emit, bool sign = true) {
  if (mag >= kEscape) {
    const uint32_t e = mag - kEscape + 1;
    const int k = std::bit_width(e) - 1;
    for (int b = 0; b < k; ++b) emit(lane, 0, kHalf);
    emit(lane, kHalf, kHalf);
    for (int b = k - 1; b >= 0; --b) emit(lane, ((e >> b) & 1) ? kHalf : 0, kHalf);
  }
  if (sign && mag != 0) emit(lane, v < 0 ? kHalf : 0, kHalf);
}

// Runs the models over the coded components in decode order; emit(lane,
// start, freq) for every rANS symbol. The models and last symbols of every
// component live in *st (components that are all zero in this chunk end with
// prev = 0 and untouched models).
template <typename Emit>
void ModelSymbols(const int32_t* q, uint32_t tokens, uint32_t dim, const std::vector<uint32_t>& coded,
                  uint32_t lanes, SeqGroupState* st, Emit&& emit) {
  const size_t nc = coded.size();
  for (uint32_t t = 0; t < tokens; ++t) {
    const int32_t* row = q + size_t{t} * dim;
    for (size_t c = 0; c < nc; ++c) {
      const uint32_t i = coded[c];
      const uint8_t lane = static_cast<uint8_t>(c % lanes);
      const int32_t v = row[i];
      const uint32_t mag = static_cast<uint32_t>(v < 0 ? -int64_t{v} : v);
      AdaptiveModel& m = st->models[size_t{i} * kContexts + Context(st->prev[i])];
      const int s = mag >= kEscape ? kEscape : static_cast<int>(mag);
      emit(lane, m.Start(s), m.Freq(s));
      m.Update(s);
      EmitUniformBits(lane, v, mag, emit);
      st->prev[i] = v;
    }
  }
  if (tokens > 0) {
    std::vector<uint8_t> is_coded(dim, 0);
    for (uint32_t i : coded) is_coded[i] = 1;
    for (uint32_t i = 0; i < dim; ++i) {
      if (!is_coded[i]) st->prev[i] = 0;
    }
  }
}

SeqGroupState StartState(const SeqGroupState* state, uint32_t dim) {
  if (state != nullptr && state->prev.size() == dim) return *state;
  return SeqGroupState(dim);
}

std::vector<uint32_t> CodedComponents(const int32_t* q, uint32_t tokens, uint32_t dim, std::vector<uint8_t>* bitmap) {
  std::vector<uint8_t> any(dim, 0);
  for (size_t i = 0; i < size_t{tokens} * dim; ++i) {
    if (q[i] != 0) any[i % dim] = 1;
  }
  std::vector<uint32_t> coded;
  if (bitmap) bitmap->assign((dim + 7) / 8, 0);
  for (uint32_t i = 0; i < dim; ++i) {
    if (!any[i]) continue;
    coded.push_back(i);
    if (bitmap) (*bitmap)[i / 8] |= static_cast<uint8_t>(1u << (i % 8));
  }
  return coded;
}

}  // namespace

std::vector<uint8_t> SeqEncodeGroup(const int32_t* q, uint32_t tokens, uint32_t dim, SeqGroupState* state) {
  std::vector<uint8_t> out;
  std::vector<uint32_t> coded = CodedComponents(q, tokens, dim, &out);
  const uint32_t lanes = std::min<uint32_t>(kSeqMaxLanes, static_cast<uint32_t>(coded.size()));
  out.push_back(static_cast<uint8_t>(lanes));
  SeqGroupState st = StartState(state, dim);
  std::vector<Op> ops;
  ops.reserve(size_t{tokens} * coded.size() * 2);
  ModelSymbols(q, tokens, dim, coded, std::max<uint32_t>(lanes, 1), &st,
               [&](uint8_t lane, uint32_t start, uint32_t freq) { ops.push_back({start, freq, lane}); });
  if (state != nullptr) *state = std::move(st);
  if (lanes == 0) return out;
  uint32_t x_state[kSeqMaxLanes];
  for (uint32_t l = 0; l < lanes; ++l) x_state[l] = kRansLow;
  std::vector<uint16_t> words;
  words.reserve(ops.size() / 4 + 16);
  for (size_t i = ops.size(); i-- > 0;) RansPut(x_state[ops[i].lane], ops[i], &words);
  PutStates(x_state, lanes, words, &out);
  return out;
}

const std::vector<uint32_t>& SeqCostTable() {
  static const std::vector<uint32_t> table = [] {
    std::vector<uint32_t> t(kTotal + 1, 0);
    for (uint32_t f = 1; f <= kTotal; ++f) {
      t[f] = static_cast<uint32_t>(std::nearbyint(std::log2(double(kTotal) / f) * double(1u << kSeqCostFracBits)));
    }
    return t;
  }();
  return table;
}

uint64_t SeqEstimateGroupCost(const int32_t* q, uint32_t tokens, uint32_t dim, const SeqGroupState* state) {
  std::vector<uint32_t> coded = CodedComponents(q, tokens, dim, nullptr);
  constexpr uint64_t kBit = uint64_t{1} << kSeqCostFracBits;
  uint64_t cost = 8 * kBit * ((dim + 7) / 8 + 1);
  if (coded.empty()) return cost;
  const uint32_t lanes = std::min<uint32_t>(kSeqMaxLanes, static_cast<uint32_t>(coded.size()));
  cost += 32 * kBit * lanes;
  const std::vector<uint32_t>& table = SeqCostTable();
  SeqGroupState st = StartState(state, dim);
  ModelSymbols(q, tokens, dim, coded, lanes, &st, [&](uint8_t, uint32_t, uint32_t freq) { cost += table[freq]; });
  return cost;
}

double SeqEstimateGroupBits(const int32_t* q, uint32_t tokens, uint32_t dim, const SeqGroupState* state) {
  return double(SeqEstimateGroupCost(q, tokens, dim, state)) / double(1u << kSeqCostFracBits);
}

namespace {

// The zero-flag bitmap that starts every group stream: its coded components,
// ascending; DATA_LOSS for a stream shorter than the bitmap or a bit past dim.
Status ReadComponentBitmap(std::span<const uint8_t> stream, uint32_t dim, std::vector<uint32_t>* coded) {
  const size_t bitmap_bytes = (dim + 7) / 8;
  if (stream.size() < bitmap_bytes) return DataLoss("seq: group stream truncated");
  for (uint32_t i = 0; i < dim; ++i) {
    if (stream[i / 8] & (1u << (i % 8))) coded->push_back(i);
  }
  for (uint32_t i = dim; i < bitmap_bytes * 8; ++i) {
    if (stream[i / 8] & (1u << (i % 8))) return DataLoss("seq: bad component bitmap");
  }
  return Status::Ok();
}

// The start of the adaptive and the lane group streams: the bitmap and the
// lane count, which must be min(max_lanes, coded components); DATA_LOSS
// otherwise.
Status ReadGroupHeader(std::span<const uint8_t> stream, uint32_t dim, uint32_t max_lanes,
                       std::vector<uint32_t>* coded, uint32_t* lanes) {
  const size_t bitmap_bytes = (dim + 7) / 8;
  if (stream.size() < bitmap_bytes + 1) return DataLoss("seq: group stream truncated");
  SEQKV_RETURN_IF_ERROR(ReadComponentBitmap(stream, dim, coded));
  *lanes = stream[bitmap_bytes];
  if (*lanes != std::min<uint32_t>(max_lanes, static_cast<uint32_t>(coded->size()))) {
    return DataLoss("seq: bad lane count");
  }
  return Status::Ok();
}

}  // namespace

Status SeqDecodeGroup(std::span<const uint8_t> stream, uint32_t tokens, uint32_t dim, int32_t* q,
                      SeqGroupState* state) {
  std::fill(q, q + size_t{tokens} * dim, 0);
  const size_t bitmap_bytes = (dim + 7) / 8;
  std::vector<uint32_t> coded;
  uint32_t lanes = 0;
  SEQKV_RETURN_IF_ERROR(ReadGroupHeader(stream, dim, kSeqMaxLanes, &coded, &lanes));
  SeqGroupState st = StartState(state, dim);
  if (lanes == 0) {
    if (stream.size() != bitmap_bytes + 1) return DataLoss("seq: trailing bytes in group stream");
    if (state != nullptr && tokens > 0) {
      std::fill(st.prev.begin(), st.prev.end(), 0);
      *state = std::move(st);
    }
    return Status::Ok();
  }
  ByteReader r(stream.subspan(bitmap_bytes + 1));
  uint32_t x_state[kSeqMaxLanes];
  for (uint32_t l = 0; l < lanes; ++l) {
    x_state[l] = r.U32();
    if (!r.ok() || x_state[l] < kRansLow) return DataLoss("seq: bad rANS state");
  }
  if (r.remaining() % 2 != 0) return DataLoss("seq: odd rANS word bytes");
  bool ok = true;
  // Pops one symbol: returns the slot; the caller finds the symbol and calls
  // Advance with its start and frequency.
  auto advance = [&](uint32_t lane, uint32_t start, uint32_t freq) {
    uint32_t& x = x_state[lane];
    const uint32_t slot = x & (kTotal - 1);
    x = freq * (x >> kScaleBits) + slot - start;
    if (x < kRansLow) {
      const uint16_t word = r.U16();
      if (!r.ok()) {
        ok = false;
        x = kRansLow;
        return;
      }
      x = (x << 16) | word;
    }
  };
  auto bit = [&](uint32_t lane) {
    const int b = (x_state[lane] & (kTotal - 1)) >= kHalf ? 1 : 0;
    advance(lane, b ? kHalf : 0, kHalf);
    return b;
  };
  const size_t nc = coded.size();
  for (uint32_t t = 0; t < tokens && ok; ++t) {
    int32_t* row = q + size_t{t} * dim;
    for (size_t c = 0; c < nc && ok; ++c) {
      const uint32_t i = coded[c];
      const uint32_t lane = static_cast<uint32_t>(c % lanes);
      AdaptiveModel& m = st.models[size_t{i} * kContexts + Context(st.prev[i])];
      const uint32_t slot = x_state[lane] & (kTotal - 1);
      int s = 0;
      uint32_t start = 0;
      for (; s < kEscape; ++s) {
        const uint32_t f = m.Freq(s);
        if (slot < start + f) break;
        start += f;
      }
      advance(lane, start, m.Freq(s));
      m.Update(s);
      uint32_t mag = static_cast<uint32_t>(s);
      if (s == kEscape) {
        int k = 0;
        while (ok && bit(lane) == 0) {
          if (++k > 24) {
            ok = false;
            break;
          }
        }
        uint32_t e = 1;
        for (int b = 0; b < k && ok; ++b) e = (e << 1) | static_cast<uint32_t>(bit(lane));
        mag = e - 1 + kEscape;
        if (mag > static_cast<uint32_t>(kSeqMaxMagnitude)) ok = false;
      }
      int32_t v = static_cast<int32_t>(mag);
      if (mag != 0 && ok && bit(lane)) v = -v;
      row[i] = v;
      st.prev[i] = v;
    }
  }
  if (!ok) return DataLoss("seq: group stream truncated or corrupt");
  if (r.remaining() != 0) return DataLoss("seq: trailing bytes in group stream");
  // The encoder codes exactly the components with a non-zero symbol.
  std::vector<uint8_t> nonzero(dim, 0);
  for (size_t i = 0; i < size_t{tokens} * dim; ++i) nonzero[i % dim] |= q[i] != 0;
  for (uint32_t i : coded) {
    if (!nonzero[i]) return DataLoss("seq: a coded component has no non-zero symbol");
  }
  for (uint32_t l = 0; l < lanes; ++l) {
    if (x_state[l] != kRansLow) return DataLoss("seq: rANS final state mismatch (corrupt stream)");
  }
  if (state != nullptr) {
    std::vector<uint8_t> is_coded(dim, 0);
    for (uint32_t i : coded) is_coded[i] = 1;
    for (uint32_t i = 0; i < dim; ++i) {
      if (!is_coded[i] && tokens > 0) st.prev[i] = 0;
    }
    *state = std::move(st);
  }
  return Status::Ok();
}

// ============================================================ lane streams

namespace {

// Rows of `symbols` frequencies into cumulative rows of `stride` entries
// (cum[symbols] = 2^15, Validate checks) and code lengths.
void StaticRows(const std::vector<uint16_t>& freq, int symbols, uint32_t stride, std::vector<uint16_t>* cum,
                std::vector<uint32_t>* cost) {
  const size_t rows = freq.size() / size_t(symbols);
  cum->assign(rows * stride, 0);
  cost->assign(freq.size(), 0);
  const std::vector<uint32_t>& table = SeqCostTable();
  for (size_t r = 0; r < rows; ++r) {
    uint32_t c = 0;
    for (int s = 0; s < symbols; ++s) {
      const uint16_t f = freq[r * symbols + s];
      (*cum)[r * stride + s] = static_cast<uint16_t>(c);
      (*cost)[r * symbols + s] = table[f];
      c += f;
    }
    (*cum)[r * stride + symbols] = static_cast<uint16_t>(c);
  }
}

}  // namespace

SeqStaticTables MakeSeqStaticTables(const SeqProfile& profile) {
  SeqStaticTables t;
  if (!profile.has_static_model()) return t;
  StaticRows(profile.static_freq, kSeqSymbols, kSeqLaneRowStride, &t.cum, &t.cost);
  if (profile.has_signed_model()) {
    StaticRows(profile.signed_freq, kSeqSignedSymbols, kSeqSignedRowStride, &t.signed_cum, &t.signed_cost);
  }
  return t;
}

std::vector<uint8_t> SeqSignedBuckets(const SeqStaticTables& t) {
  std::vector<uint8_t> buckets(size_t{kSeqStaticClasses} * kSeqSignedBuckets, 0);
  if (t.signed_cum.empty()) return buckets;
  constexpr uint32_t kWidth = 1u << (kSeqLaneScaleBits - kSeqSignedBucketBits);
  for (size_t c = 0; c < size_t{kSeqStaticClasses}; ++c) {
    const uint16_t* row = t.signed_cum.data() + c * kSeqSignedRowStride;
    for (uint32_t b = 0; b < kSeqSignedBuckets; ++b) {
      uint32_t start, freq;
      buckets[c * kSeqSignedBuckets + b] =
          static_cast<uint8_t>(SeqSignedFind(row, b * kWidth + kWidth / 2, &start, &freq));
    }
  }
  return buckets;
}

std::vector<uint8_t> SeqSignedSearchBytes(const SeqStaticTables& t) {
  if (t.signed_cum.empty()) return {};
  std::vector<uint8_t> bytes(t.signed_cum.size() * sizeof(uint16_t));
  std::memcpy(bytes.data(), t.signed_cum.data(), bytes.size());
  const std::vector<uint8_t> buckets = SeqSignedBuckets(t);
  bytes.insert(bytes.end(), buckets.begin(), buckets.end());
  return bytes;
}

void SeqStaticRow(const uint64_t* counts, uint16_t* freq, int kN) {
  constexpr int64_t kScale = int64_t{1} << kSeqLaneScaleBits;
  uint64_t total = 0;
  for (int s = 0; s < kN; ++s) total += counts[s];
  int64_t f[kSeqSignedSymbols], sum = 0;
  for (int s = 0; s < kN; ++s) {
    f[s] = std::max<int64_t>(1, static_cast<int64_t>(counts[s] * uint64_t(kScale) / total));
    sum += f[s];
  }
  auto largest = [&]() { return static_cast<int>(std::max_element(f, f + kN) - f); };
  if (sum < kScale) f[largest()] += kScale - sum;
  while (sum > kScale) {
    const int s = largest();
    const int64_t take = std::min(sum - kScale, f[s] / 2);
    f[s] -= take;
    sum -= take;
  }
  for (int s = 0; s < kN; ++s) freq[s] = static_cast<uint16_t>(f[s]);
}

std::vector<uint16_t> SeqStaticFreqs(const std::vector<uint64_t>& counts, int symbols) {
  std::vector<uint16_t> freq(counts.size(), 0);
  for (size_t row = 0; row + size_t(symbols) <= counts.size(); row += size_t(symbols)) {
    SeqStaticRow(counts.data() + row, freq.data() + row, symbols);
  }
  return freq;
}

void SeqAddStaticCounts(const int32_t* q, uint32_t tokens, uint32_t dim, const int16_t* scale, int16_t step_class,
                        uint8_t code, uint64_t* counts, uint64_t* signed_counts) {
  for (uint32_t i = 0; i < dim; ++i) {
    const size_t table = size_t(SeqStaticClass(scale[i], step_class, code));
    int32_t prev = 0;
    for (uint32_t t = 0; t < tokens; ++t) {
      const int32_t v = q[size_t{t} * dim + i];
      const uint32_t mag = static_cast<uint32_t>(v < 0 ? -int64_t{v} : v);
      const int s = mag >= kEscape ? kEscape : static_cast<int>(mag);
      counts[(table * kContexts + Context(prev)) * kSymbols + s] += 2;
      if (signed_counts != nullptr) signed_counts[table * kSeqSignedSymbols + size_t(SeqSignedSymbol(v))] += 2;
      prev = v;
    }
  }
}

int16_t SeqLog2Sixteenths(double x) {
  return static_cast<int16_t>(std::clamp(std::nearbyint(16.0 * std::log2(x)), -32767.0, 32767.0));
}

void SeqLaneClasses(const SeqProfile& profile, uint32_t g, int16_t step_class, uint8_t code, int16_t* k) {
  const uint32_t d = profile.head_dim;
  for (uint32_t i = 0; i < d; ++i) {
    const int c = SeqLaneClass(profile.static_scale[size_t{g} * d + i], step_class, code);
    k[i] = static_cast<int16_t>(std::clamp(c, -32768, 32767));
  }
}

namespace {

// The rANS operations of every lane in decode order: emit(lane, start, freq).
template <typename Emit>
void LaneSymbols(const int32_t* q, uint32_t tokens, uint32_t dim, const std::vector<uint32_t>& coded,
                 uint32_t lanes, const SeqStaticTables& tables, const uint16_t* table_of, SeqLaneModel model,
                 Emit&& emit) {
  std::vector<int32_t> prev(dim, 0);
  const uint32_t n = static_cast<uint32_t>(coded.size());
  for (uint32_t lane = 0; lane < lanes; ++lane) {
    for (uint32_t t = 0; t < tokens; ++t) {
      for (uint32_t c = lane; c < n; c += lanes) {
        const uint32_t i = coded[c];
        const int32_t v = q[size_t{t} * dim + i];
        const uint32_t mag = static_cast<uint32_t>(v < 0 ? -int64_t{v} : v);
        if (model == SeqLaneModel::kSigned) {
          const int s = SeqSignedSymbol(v);
          const uint16_t* cum = tables.signed_cum.data() + size_t{table_of[i]} * kSeqSignedRowStride;
          emit(static_cast<uint8_t>(lane), cum[s], uint32_t{cum[s + 1]} - cum[s]);
          EmitUniformBits(static_cast<uint8_t>(lane), v, mag, emit, /*sign=*/false);
          continue;
        }
        const int s = mag >= kEscape ? kEscape : static_cast<int>(mag);
        const uint16_t* cum =
            tables.cum.data() + (size_t{table_of[i]} * kContexts + Context(prev[i])) * kSeqLaneRowStride;
        emit(static_cast<uint8_t>(lane), cum[s], uint32_t{cum[s + 1]} - cum[s]);
        EmitUniformBits(static_cast<uint8_t>(lane), v, mag, emit);
        prev[i] = v;
      }
    }
  }
}

// Per coded component the counts of (context, magnitude class), and the
// number of uniform bits (escapes, signs): enough to price every shift.
struct LaneCensus {
  std::vector<uint32_t> coded;
  SeqLaneModel model = SeqLaneModel::kMagnitude;
  uint32_t bins = 0;             // per coded component: kContexts * kSymbols, or kSeqSignedSymbols
  std::vector<uint32_t> counts;  // [coded][bins]
  uint64_t uniform_bits = 0;
};

LaneCensus Census(const int32_t* q, uint32_t tokens, uint32_t dim, std::vector<uint32_t> coded, SeqLaneModel model) {
  LaneCensus c;
  c.coded = std::move(coded);
  c.model = model;
  const bool is_signed = model != SeqLaneModel::kMagnitude;
  c.bins = is_signed ? kSeqSignedSymbols : kContexts * kSymbols;
  c.counts.assign(c.coded.size() * c.bins, 0);
  for (size_t n = 0; n < c.coded.size(); ++n) {
    const uint32_t i = c.coded[n];
    int32_t prev = 0;
    for (uint32_t t = 0; t < tokens; ++t) {
      const int32_t v = q[size_t{t} * dim + i];
      const uint32_t mag = static_cast<uint32_t>(v < 0 ? -int64_t{v} : v);
      const int s = mag >= kEscape ? kEscape : static_cast<int>(mag);
      ++c.counts[n * c.bins + (is_signed ? SeqSignedSymbol(v) : Context(prev) * kSymbols + s)];
      if (mag >= kEscape) c.uniform_bits += 2 * std::bit_width(mag - kEscape + 1) - 1;
      if (!is_signed && mag != 0) ++c.uniform_bits;
      prev = v;
    }
  }
  return c;
}

// The cheapest shift and its code length (SeqCostTable units).
uint64_t PlanShift(const LaneCensus& c, uint32_t dim, const SeqStaticTables& tables, const int16_t* k, int* shift) {
  const std::vector<uint32_t>& prices = c.model != SeqLaneModel::kMagnitude ? tables.signed_cost : tables.cost;
  constexpr uint64_t kBit = uint64_t{1} << kSeqCostFracBits;
  const bool split = c.model == SeqLaneModel::kSplit;
  // Split streams: no lane byte; after the shift a state per lane and a word
  // count per lane but the last (SeqSplitCountBits).
  uint64_t header = 8 * kBit * ((dim + 7) / 8 + (split ? 0 : 1));
  *shift = 0;
  if (c.coded.empty()) return header;
  const uint32_t lanes =
      split ? SeqSplitLanes(dim) : std::min<uint32_t>(kSeqLaneMax, static_cast<uint32_t>(c.coded.size()));
  header += 8 * kBit + 32 * kBit * lanes + kBit * c.uniform_bits;
  uint64_t best = UINT64_MAX;
  for (int step = 0; step <= 2 * kSeqLaneMaxShift; ++step) {  // 0, -1, +1, -2, +2, ...
    const int s = (step % 2 == 1) ? -(step + 1) / 2 : step / 2;
    uint64_t cost = 0;
    for (size_t n = 0; n < c.coded.size(); ++n) {
      const size_t table = size_t(SeqLaneTable(k[c.coded[n]], s));
      const uint32_t* counts = c.counts.data() + n * c.bins;
      const uint32_t* price = prices.data() + table * c.bins;
      for (uint32_t j = 0; j < c.bins; ++j) cost += uint64_t{counts[j]} * price[j];
    }
    if (cost < best) {
      best = cost;
      *shift = s;
    }
  }
  if (split) header += kBit * SeqSplitCountBits(best / kBit + c.uniform_bits, lanes);
  return header + best;
}

// Split lane streams (streams=lanes3): lane j codes the coded components
// c = j, j + L, ... (L = SeqSplitLanes(dim)), token-major, with lanes2's
// operations (the signed symbol, an escape's Exp-Golomb-0 bits), each lane
// into its own words. `out` holds the bitmap.
std::vector<uint8_t> EncodeSplitLanes(const int32_t* q, uint32_t tokens, uint32_t dim, const SeqStaticTables& tables,
                                      const int16_t* k, const std::vector<uint32_t>& coded, int shift,
                                      std::vector<uint8_t> out) {
  if (coded.empty()) return out;
  const uint32_t lanes = SeqSplitLanes(dim);
  std::vector<uint8_t> is_coded(dim, 0);
  for (uint32_t i : coded) is_coded[i] = 1;
  out.push_back(static_cast<uint8_t>(static_cast<int8_t>(shift)));
  std::vector<std::vector<uint16_t>> words(lanes);  // each lane's, backwards
  std::vector<uint32_t> states(lanes, kSeqLaneRansLow);
  std::vector<Op> ops;
  for (uint32_t lane = 0; lane < lanes; ++lane) {
    ops.clear();
    for (uint32_t t = 0; t < tokens; ++t) {
      for (uint32_t i = lane; i < dim; i += lanes) {
        if (!is_coded[i]) continue;
        const int32_t v = q[size_t{t} * dim + i];
        const uint32_t mag = static_cast<uint32_t>(v < 0 ? -int64_t{v} : v);
        const int sym = SeqSignedSymbol(v);
        const uint16_t* cum = tables.signed_cum.data() + size_t(SeqLaneTable(k[i], shift)) * kSeqSignedRowStride;
        ops.push_back({cum[sym], uint32_t{cum[sym + 1]} - cum[sym], static_cast<uint8_t>(lane)});
        EmitUniformBits(static_cast<uint8_t>(lane), v, mag,
                        [&](uint8_t l, uint32_t start, uint32_t freq) { ops.push_back({start, freq, l}); },
                        /*sign=*/false);
      }
    }
    for (size_t i = ops.size(); i-- > 0;) RansPut(states[lane], ops[i], &words[lane]);
  }
  ByteWriter w(&out);
  for (uint32_t l = 0; l < lanes; ++l) w.U32(states[l]);
  for (uint32_t l = 0; l + 1 < lanes; ++l) PutVarint(words[l].size(), &out);
  for (uint32_t l = 0; l < lanes; ++l) {
    for (size_t i = words[l].size(); i-- > 0;) w.U16(words[l][i]);
  }
  return out;
}

Status DecodeSplitLanes(std::span<const uint8_t> stream, uint32_t tokens, uint32_t dim, const SeqStaticTables& tables,
                        const int16_t* k, int32_t* q) {
  const size_t bitmap_bytes = (dim + 7) / 8;
  std::vector<uint32_t> coded;
  SEQKV_RETURN_IF_ERROR(ReadComponentBitmap(stream, dim, &coded));
  if (coded.empty()) {
    if (stream.size() != bitmap_bytes) return DataLoss("seq: trailing bytes in group stream");
    return Status::Ok();
  }
  if (tokens == 0) return DataLoss("seq: coded components in an empty chunk");
  const uint32_t lanes = SeqSplitLanes(dim);
  ByteReader r(stream.subspan(bitmap_bytes));
  const int shift = static_cast<int8_t>(r.U8());
  if (!r.ok() || shift < -kSeqLaneMaxShift || shift > kSeqLaneMaxShift) return DataLoss("seq: bad class shift");
  uint32_t x[kSeqLaneMax];
  for (uint32_t l = 0; l < lanes; ++l) {
    x[l] = r.U32();
    if (!r.ok() || x[l] < kSeqLaneRansLow) return DataLoss("seq: bad rANS state");
  }
  uint64_t count[kSeqLaneMax], sum = 0;
  for (uint32_t l = 0; l + 1 < lanes; ++l) {
    const size_t before = r.remaining();
    count[l] = GetVarint(&r);
    // At most 5 bytes, as the GPU decoder reads them.
    if (!r.ok() || before - r.remaining() > 5) return DataLoss("seq: bad lane word count");
    sum += count[l];
  }
  if (r.remaining() % 2 != 0) return DataLoss("seq: odd rANS word bytes");
  const uint64_t total = r.remaining() / 2;
  if (sum > total) return DataLoss("seq: lane word counts past the stream");
  count[lanes - 1] = total - sum;
  const std::span<const uint8_t> words = stream.subspan(stream.size() - 2 * total);
  // Each lane's words: [at[l], end[l]).
  uint64_t at[kSeqLaneMax], end[kSeqLaneMax];
  for (uint64_t l = 0, first = 0; l < lanes; first += count[l], ++l) {
    at[l] = first;
    end[l] = first + count[l];
  }
  std::vector<const uint16_t*> rows(dim, nullptr);  // a coded component's row
  for (uint32_t i : coded) rows[i] = tables.signed_cum.data() + size_t(SeqLaneTable(k[i], shift)) * kSeqSignedRowStride;
  // The lanes interleaved, component by component (each lane's own order is
  // token, then its components ascending): independent states, so the CPU
  // overlaps their steps as the lanes2 decoder's lock-step order lets it.
  std::vector<uint8_t> nonzero(dim, 0);
  for (uint32_t t = 0; t < tokens; ++t) {
    for (uint32_t i = 0; i < dim; ++i) {
      const uint16_t* row = rows[i];
      if (row == nullptr) continue;
      const uint32_t l = i % lanes;
      const int32_t v = SeqSplitLaneSymbol(
          &x[l], [&](uint32_t slot, uint32_t* start, uint32_t* freq) { return SeqSignedFind(row, slot, start, freq); },
          [&](uint32_t* word) {
            if (at[l] >= end[l]) return false;
            *word = uint32_t{words[2 * at[l]]} | (uint32_t{words[2 * at[l] + 1]} << 8);
            ++at[l];
            return true;
          });
      if (v == kSeqSplitCorrupt) return DataLoss("seq: bad split lane stream");
      q[size_t{t} * dim + i] = v;
      if (v != 0) nonzero[i] = 1;
    }
  }
  for (uint32_t l = 0; l < lanes; ++l) {
    if (at[l] != end[l] || x[l] != kSeqLaneRansLow) return DataLoss("seq: group stream does not end exactly");
  }
  for (uint32_t i : coded) {
    if (!nonzero[i]) return DataLoss("seq: a coded component has no non-zero symbol");
  }
  return Status::Ok();
}

}  // namespace

std::vector<uint8_t> SeqEncodeLaneGroup(const int32_t* q, uint32_t tokens, uint32_t dim,
                                        const SeqStaticTables& tables, const int16_t* k, SeqLaneModel model) {
  std::vector<uint8_t> out;
  const std::vector<uint32_t> coded = CodedComponents(q, tokens, dim, &out);
  int shift = 0;
  PlanShift(Census(q, tokens, dim, coded, model), dim, tables, k, &shift);
  if (model == SeqLaneModel::kSplit) return EncodeSplitLanes(q, tokens, dim, tables, k, coded, shift, std::move(out));
  const uint32_t lanes = std::min<uint32_t>(kSeqLaneMax, static_cast<uint32_t>(coded.size()));
  out.push_back(static_cast<uint8_t>(lanes));
  if (lanes == 0) return out;
  out.push_back(static_cast<uint8_t>(static_cast<int8_t>(shift)));
  std::vector<uint16_t> table_of(dim, 0);
  for (uint32_t i : coded) table_of[i] = static_cast<uint16_t>(SeqLaneTable(k[i], shift));
  std::vector<std::vector<Op>> ops(lanes);
  LaneSymbols(q, tokens, dim, coded, lanes, tables, table_of.data(), model,
              [&](uint8_t lane, uint32_t start, uint32_t freq) { ops[lane].push_back({start, freq, lane}); });
  size_t steps = 0;
  for (const auto& o : ops) steps = std::max(steps, o.size());
  uint32_t x_state[kSeqLaneMax];
  for (uint32_t l = 0; l < lanes; ++l) x_state[l] = kSeqLaneRansLow;
  std::vector<uint16_t> words;
  // The decoder's order is (step ascending, lane ascending): code it backwards.
  for (size_t s = steps; s-- > 0;) {
    for (uint32_t l = lanes; l-- > 0;) {
      if (s < ops[l].size()) RansPut(x_state[l], ops[l][s], &words);
    }
  }
  PutStates(x_state, lanes, words, &out);
  return out;
}

uint64_t SeqEstimateLaneGroupCost(const int32_t* q, uint32_t tokens, uint32_t dim, const SeqStaticTables& tables,
                                  const int16_t* k, int* shift, SeqLaneModel model) {
  int s = 0;
  const uint64_t cost =
      PlanShift(Census(q, tokens, dim, CodedComponents(q, tokens, dim, nullptr), model), dim, tables, k, &s);
  if (shift != nullptr) *shift = s;
  return cost;
}

Status SeqDecodeLaneGroup(std::span<const uint8_t> stream, uint32_t tokens, uint32_t dim,
                          const SeqStaticTables& tables, const int16_t* k, int32_t* q, SeqLaneModel model) {
  const bool is_signed = model == SeqLaneModel::kSigned;
  std::fill(q, q + size_t{tokens} * dim, 0);
  if (model == SeqLaneModel::kSplit) return DecodeSplitLanes(stream, tokens, dim, tables, k, q);
  const size_t bitmap_bytes = (dim + 7) / 8;
  std::vector<uint32_t> coded;
  uint32_t lanes = 0;
  SEQKV_RETURN_IF_ERROR(ReadGroupHeader(stream, dim, kSeqLaneMax, &coded, &lanes));
  if (lanes == 0) {
    if (stream.size() != bitmap_bytes + 1) return DataLoss("seq: trailing bytes in group stream");
    return Status::Ok();
  }
  if (tokens == 0) return DataLoss("seq: coded components in an empty chunk");
  ByteReader r(stream.subspan(bitmap_bytes + 1));
  const int shift = static_cast<int8_t>(r.U8());
  if (!r.ok() || shift < -kSeqLaneMaxShift || shift > kSeqLaneMaxShift) return DataLoss("seq: bad class shift");
  SeqLaneCursor cur[kSeqLaneMax];
  for (uint32_t l = 0; l < lanes; ++l) {
    cur[l].idx = l;
    cur[l].x = r.U32();
    if (!r.ok() || cur[l].x < kSeqLaneRansLow) return DataLoss("seq: bad rANS state");
  }
  if (r.remaining() % 2 != 0) return DataLoss("seq: odd rANS word bytes");
  const uint32_t n = static_cast<uint32_t>(coded.size());
  std::vector<uint32_t> info(n);
  for (uint32_t c = 0; c < n; ++c) info[c] = SeqLaneInfo(coded[c], static_cast<uint32_t>(SeqLaneTable(k[coded[c]], shift)));
  std::vector<int32_t> prev(n, 0);
  std::vector<uint8_t> nonzero(n, 0);
  const SeqLaneGroupView view{is_signed ? tables.signed_cum.data() : tables.cum.data(),
                              info.data(), prev.data(), nonzero.data(), q, n, lanes, tokens, dim};
  uint32_t active = lanes;
  while (active > 0) {  // every step finishes one operation of each active lane: bounded by the stream
    for (uint32_t l = 0; l < lanes; ++l) {
      if (cur[l].phase == 4) continue;
      const int rc =
          is_signed ? SeqSignedLaneStep(&cur[l], view, l,
                                        [&](uint32_t table, uint32_t slot, uint32_t* start, uint32_t* freq) {
                                          return SeqSignedFind(view.cum + table * kSeqSignedRowStride, slot,
                                                               start, freq);
                                        })
                    : SeqLaneStep(&cur[l], view, l);
      if (rc == kSeqLaneCorrupt) return DataLoss("seq: bad escape in group stream");
      if (cur[l].x < kSeqLaneRansLow) {
        const uint16_t word = r.U16();
        if (!r.ok()) return DataLoss("seq: group stream truncated");
        cur[l].x = (cur[l].x << 16) | word;
      }
      if (rc == kSeqLaneDone) --active;
    }
  }
  for (uint32_t l = 0; l < lanes; ++l) {
    if (cur[l].x != kSeqLaneRansLow) return DataLoss("seq: group stream does not end exactly");
  }
  if (r.remaining() != 0) return DataLoss("seq: trailing bytes in group stream");
  for (uint32_t c = 0; c < n; ++c) {
    if (!nonzero[c]) return DataLoss("seq: a coded component has no non-zero symbol");
  }
  return Status::Ok();
}

// ============================================================ closed loop

const std::array<double, 256>& SeqMultipliers() {
  // Made once for the 256 codes: the loop below per group stream was part of
  // the GPU decoder's descriptor loop that was half of its call's host time
  // (docs/BENCHMARKS.md, 2026-12-03; its share was not measured apart).
  static const std::array<double, 256> kTable = [] {
    const double root = std::sqrt(std::sqrt(std::sqrt(std::sqrt(2.0))));
    std::array<double, 256> t{};
    for (int c = 0; c < 256; ++c) {
      const int e = c - 128;
      const int whole = e >= 0 ? e / 16 : -((-e + 15) / 16);
      const int frac = e - 16 * whole;  // 0..15
      double m = 1;
      for (int i = 0; i < frac; ++i) m *= root;
      t[c] = std::ldexp(m, whole);
    }
    return t;
  }();
  return kTable;
}

double SeqMultiplier(uint8_t code) { return SeqMultipliers()[code]; }

uint8_t SeqRateCode(double bits) {
  const double c = std::nearbyint(128.0 - 16.0 * bits);
  return static_cast<uint8_t>(std::clamp(c, 0.0, 255.0));
}

std::vector<uint8_t> SeqStepCodes(const SeqProfile& p, double krate, double vrate, const std::vector<double>& lrate) {
  std::vector<uint8_t> codes(p.groups(), 128);
  for (uint32_t l = 0; l < p.layers; ++l) {
    const double lr = lrate.empty() ? 0.0 : lrate[l];
    for (uint32_t h = 0; h < p.kv_heads; ++h) {
      codes[SeqGroup(l, 0, h, p.kv_heads)] = SeqRateCode(krate + lr);
      codes[SeqGroup(l, 1, h, p.kv_heads)] = SeqRateCode(vrate + lr);
    }
  }
  return codes;
}

double SeqGroupSse(const float* x, const float* xhat, uint32_t tokens, uint32_t d) {
  double sse = 0;
  for (uint32_t t0 = 0; t0 < tokens; t0 += kSeqSseTile) {
    const uint32_t t1 = std::min(tokens, t0 + kSeqSseTile);
    for (uint32_t j = 0; j < d; ++j) {
      double part = 0;
      for (uint32_t t = t0; t < t1; ++t) {
        const double e = double{x[size_t{t} * d + j]} - double{xhat[size_t{t} * d + j]};
        part += e * e;
      }
      sse += part;
    }
  }
  return sse;
}

double SeqStepBase(const SeqLoopParams& params, uint32_t g) {
  const double mult = params.mult_code.empty() ? 1.0 : SeqMultiplier(params.mult_code[g]);
  return double{params.delta0} * mult;
}

std::vector<float> SeqSteps(const SeqProfile& p, const SeqLoopParams& params) {
  const uint32_t g_count = p.groups(), d = p.head_dim;
  std::vector<float> steps(size_t{g_count} * d);
  for (uint32_t g = 0; g < g_count; ++g) {
    const double base = SeqStepBase(params, g);
    for (uint32_t i = 0; i < d; ++i) {
      steps[size_t{g} * d + i] = static_cast<float>(base * double{p.step_scale[size_t{g} * d + i]});
    }
  }
  return steps;
}

namespace {

// The dense loops below vectorize over the output index, which leaves every
// element's arithmetic (and so the result) unchanged; on x86-64 an AVX2
// clone is picked at load time when the CPU has it (no FMA: -ffp-contract=off).
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define SEQKV_VECTOR_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define SEQKV_VECTOR_CLONES
#endif

// Features of the previous layer for every token: [T][F], F = profile.features().
// For same-head inputs, one block per head: [H][T][2d+1].
std::vector<float> Features(const SeqProfile& p, uint32_t tokens, const float* prev /*[2][H][T][d]*/) {
  const uint32_t H = p.kv_heads, d = p.head_dim, F = p.features();
  if (p.inputs == SeqInputs::kAllHeads) {
    std::vector<float> f(size_t{tokens} * F);
    for (uint32_t t = 0; t < tokens; ++t) {
      float* row = f.data() + size_t{t} * F;
      for (uint32_t kv = 0; kv < 2; ++kv) {
        for (uint32_t h = 0; h < H; ++h) {
          const float* src = prev + ((size_t{kv} * H + h) * tokens + t) * d;
          std::copy(src, src + d, row + (kv * H + h) * d);
        }
      }
      row[F - 1] = 1.0f;
    }
    return f;
  }
  if (p.inputs == SeqInputs::kSameHead) {
    std::vector<float> f(size_t{H} * tokens * F);
    for (uint32_t h = 0; h < H; ++h) {
      for (uint32_t t = 0; t < tokens; ++t) {
        float* row = f.data() + (size_t{h} * tokens + t) * F;
        for (uint32_t kv = 0; kv < 2; ++kv) {
          const float* src = prev + ((size_t{kv} * H + h) * tokens + t) * d;
          std::copy(src, src + d, row + kv * d);
        }
        row[F - 1] = 1.0f;
      }
    }
    return f;
  }
  return {};
}

// pred[T][d] = features . W (f ascending; bias row last), or the bias alone
// when there is no previous layer or the inputs are the mean.
SEQKV_VECTOR_CLONES void Predict(const SeqProfile& p, uint32_t g, uint32_t head, uint32_t tokens,
                                 const std::vector<float>& feats, float* pred) {
  const uint32_t d = p.head_dim, F = p.features();
  const float* w = p.predictor.data() + size_t{g} * F * d;
  const float* bias = w + size_t{F - 1} * d;
  if (feats.empty()) {
    for (uint32_t t = 0; t < tokens; ++t) {
      float* out = pred + size_t{t} * d;
      for (uint32_t j = 0; j < d; ++j) out[j] = 0.0f + 1.0f * bias[j];
    }
    return;
  }
  const float* base = p.inputs == SeqInputs::kSameHead ? feats.data() + size_t{head} * tokens * F : feats.data();
  for (uint32_t t = 0; t < tokens; ++t) {
    const float* x = base + size_t{t} * F;
    float* __restrict out = pred + size_t{t} * d;
    for (uint32_t j = 0; j < d; ++j) out[j] = 0.0f;
    for (uint32_t f = 0; f < F; ++f) {
      const float a = x[f];
      const float* __restrict wr = w + size_t{f} * d;
      for (uint32_t j = 0; j < d; ++j) out[j] += a * wr[j];
    }
  }
}

// xhat[t][j] = pred[t][j] + sum over i with q != 0, ascending, of (q * step_i) * U[i][j].
SEQKV_VECTOR_CLONES void Reconstruct(const float* basis, const float* steps, uint32_t tokens, uint32_t d,
                                     const int32_t* q, const float* pred, float* xhat, float* acc) {
  for (uint32_t t = 0; t < tokens; ++t) {
    const int32_t* qr = q + size_t{t} * d;
    float* __restrict a = acc;
    for (uint32_t j = 0; j < d; ++j) a[j] = 0.0f;
    for (uint32_t i = 0; i < d; ++i) {
      if (qr[i] == 0) continue;
      const float y = static_cast<float>(qr[i]) * steps[i];
      const float* __restrict u = basis + size_t{i} * d;
      for (uint32_t j = 0; j < d; ++j) a[j] += y * u[j];
    }
    const float* __restrict pr = pred + size_t{t} * d;
    float* __restrict xr = xhat + size_t{t} * d;
    for (uint32_t j = 0; j < d; ++j) xr[j] = pr[j] + acc[j];
  }
}

// ---- arith=int12: the dense stage on 12-bit fixed point with exact integer sums.

// Group g's reconstruction weights float(step_scale[i] * basis[i][j]) into out [d][d].
void StepScaledBasis(const SeqProfile& p, uint32_t g, float* out) {
  const uint32_t d = p.head_dim;
  const float* basis = p.basis.data() + size_t{g} * d * d;
  const float* scale = p.step_scale.data() + size_t{g} * d;
  for (uint32_t i = 0; i < d; ++i) {
    for (uint32_t j = 0; j < d; ++j) out[size_t{i} * d + j] = scale[i] * basis[size_t{i} * d + j];
  }
}

#if defined(__x86_64__) && defined(__GNUC__)
// a[j] = sum over c of x[c] * w[c][j] (exact int32) for one d-column block,
// two rows at a time with AVX2's pairwise 16-bit products (vpmaddwd): w_pairs
// holds rows (c, c + 1) interleaved per column (SeqFixedGroup::w_pairs). d % 8 == 0.
__attribute__((target("avx2"))) void BlockSumsAvx2(const int16_t* x, const int16_t* w_pairs, uint32_t d,
                                                   int32_t* a) {
  for (uint32_t j = 0; j < d; j += 8) _mm256_storeu_si256(reinterpret_cast<__m256i*>(a + j), _mm256_setzero_si256());
  for (uint32_t c = 0; c < d; c += 2) {
    const uint32_t pair = uint32_t{static_cast<uint16_t>(x[c])} | uint32_t{static_cast<uint16_t>(x[c + 1])} << 16;
    if (pair == 0) continue;
    const __m256i xp = _mm256_set1_epi32(static_cast<int32_t>(pair));
    const int16_t* row = w_pairs + size_t{c} * d;
    for (uint32_t j = 0; j < d; j += 8) {
      const __m256i w = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + 2 * j));
      __m256i* at = reinterpret_cast<__m256i*>(a + j);
      _mm256_storeu_si256(at, _mm256_add_epi32(_mm256_loadu_si256(at), _mm256_madd_epi16(w, xp)));
    }
  }
}
bool HasAvx2() {
  static const bool has = __builtin_cpu_supports("avx2");
  return has;
}
#endif

// pred[t][j] = float(sum over feature blocks b, ascending, of 2^(e_b + ew) *
// S_b[t][j]) + bias[j], S_b the exact int32 sum over the block's d columns of
// feature * weight. Blocks: the previous layer's [T][d] reconstruction of
// (kv', h'), feats [2][H][T][d] with exponents e [2][H]; same head: (0, h),
// (1, h); all heads: every (kv', h') in order.
SEQKV_VECTOR_CLONES void PredictFixed(const SeqProfile& p, uint32_t g, uint32_t h, uint32_t tokens,
                                      const std::vector<int16_t>& feats, const std::vector<int>& e,
                                      const SeqFixedGroup& fg, float* pred, std::vector<int32_t>* acc,
                                      std::vector<double>* sum) {
  const uint32_t H = p.kv_heads, d = p.head_dim, F = p.features();
  const float* bias = p.predictor.data() + (size_t{g} * F + (F - 1)) * d;
  const bool same = p.inputs == SeqInputs::kSameHead;
  const uint32_t blocks = same ? 2 : 2 * H;
  for (uint32_t t = 0; t < tokens; ++t) {
    std::fill(sum->begin(), sum->end(), 0.0);
    for (uint32_t b = 0; b < blocks; ++b) {
      const uint32_t block = same ? b * H + h : b;  // (kv', h') = (b, h) or (b / H, b % H)
      const int16_t* x = feats.data() + (size_t{block} * tokens + t) * d;
      const int16_t* w = fg.w.data() + size_t{b} * d * d;
      int32_t* __restrict a = acc->data();
#if defined(__x86_64__) && defined(__GNUC__)
      if (d % 8 == 0 && !fg.w_pairs.empty() && HasAvx2()) {
        BlockSumsAvx2(x, fg.w_pairs.data() + size_t{b} * d * d, d, a);
      } else
#endif
      {
        std::fill(a, a + d, 0);
        for (uint32_t c = 0; c < d; ++c) {
          const int32_t xc = x[c];
          if (xc == 0) continue;
          const int16_t* __restrict wr = w + size_t{c} * d;
          for (uint32_t j = 0; j < d; ++j) a[j] += xc * int32_t{wr[j]};
        }
      }
      const double scale = std::ldexp(1.0, e[block] + fg.ew);  // a * scale is exact (a power of two)
      for (uint32_t j = 0; j < d; ++j) (*sum)[j] += double(a[j]) * scale;
    }
    for (uint32_t j = 0; j < d; ++j) pred[size_t{t} * d + j] = static_cast<float>((*sum)[j]) + bias[j];
  }
}

// xhat[t][j] = pred[t][j] + float(2^ev * A[t][j] * base), A the exact sum
// over i of q[t][i] * v[i][j] (int64), base = delta0 * multiplier (double).
// (A row whose symbols are all below 2^31 / (2047 d) in magnitude, nearly every row, sums in int32:
// the same integers, in vector registers.)
SEQKV_VECTOR_CLONES void ReconstructInt(const SeqFixedGroup& fg, double base, uint32_t tokens, uint32_t d,
                                        const int32_t* q, const float* pred, float* xhat, std::vector<int64_t>* acc,
                                        std::vector<int32_t>* acc32) {
  const int64_t small = (int64_t{1} << 31) / (int64_t{kSeqFixedMax} * d);
  const double scale = std::ldexp(1.0, fg.ev);  // a * scale is exact (a power of two)
  for (uint32_t t = 0; t < tokens; ++t) {
    const int32_t* qr = q + size_t{t} * d;
    int64_t* __restrict a = acc->data();
    int64_t most = 0;
    for (uint32_t i = 0; i < d; ++i) most = std::max<int64_t>(most, std::abs(int64_t{qr[i]}));
    if (most < small) {
      int32_t* __restrict a32 = acc32->data();
      std::fill(a32, a32 + d, 0);
      for (uint32_t i = 0; i < d; ++i) {
        if (qr[i] == 0) continue;
        const int32_t y = qr[i];
        const int16_t* __restrict vr = fg.v.data() + size_t{i} * d;
        for (uint32_t j = 0; j < d; ++j) a32[j] += y * int32_t{vr[j]};
      }
      for (uint32_t j = 0; j < d; ++j) a[j] = a32[j];
    } else {
      std::fill(a, a + d, 0);
      for (uint32_t i = 0; i < d; ++i) {
        if (qr[i] == 0) continue;
        const int64_t y = qr[i];
        const int16_t* __restrict vr = fg.v.data() + size_t{i} * d;
        for (uint32_t j = 0; j < d; ++j) a[j] += y * vr[j];
      }
    }
    for (uint32_t j = 0; j < d; ++j) {
      xhat[size_t{t} * d + j] = pred[size_t{t} * d + j] + static_cast<float>(double(a[j]) * scale * base);
    }
  }
}

// c[t][i] = float(2^e * sum_j r[t][j] * u[i][j]) (exact int32 sums), quantized.
SEQKV_VECTOR_CLONES void ForwardFixed(const SeqFixedGroup& fg, const int16_t* r, int e, uint32_t tokens, uint32_t d,
                                      const float* steps, float rho, int32_t* q) {
  const double scale = std::ldexp(1.0, e + fg.eu);  // s * scale is exact (a power of two)
  for (uint32_t t = 0; t < tokens; ++t) {
    const int16_t* rr = r + size_t{t} * d;
    int32_t* qr = q + size_t{t} * d;
    for (uint32_t i = 0; i < d; ++i) {
      const int16_t* __restrict ur = fg.u.data() + size_t{i} * d;
      int32_t s = 0;
      for (uint32_t j = 0; j < d; ++j) s += int32_t{rr[j]} * ur[j];
      qr[i] = SeqQuantize(static_cast<float>(double(s) * scale), steps[i], rho);
    }
  }
}

// SeqLoopParams::transform_bits: xhat[t][j] = pred[t][j] + base * sum_i q[t][i] * v[i][j],
// v = step_scale * U in fixed point (the sum exact in double: integer products below 2^53).
void ReconstructFixed(const float* v, double base, uint32_t tokens, uint32_t d, const int32_t* q, const float* pred,
                      float* xhat, std::vector<double>* acc) {
  for (uint32_t t = 0; t < tokens; ++t) {
    const int32_t* qr = q + size_t{t} * d;
    std::fill(acc->begin(), acc->end(), 0.0);
    for (uint32_t i = 0; i < d; ++i) {
      if (qr[i] == 0) continue;
      const double y = qr[i];
      const float* u = v + size_t{i} * d;
      for (uint32_t j = 0; j < d; ++j) (*acc)[j] += y * u[j];
    }
    for (uint32_t j = 0; j < d; ++j) {
      xhat[size_t{t} * d + j] = pred[size_t{t} * d + j] + static_cast<float>(base * (*acc)[j]);
    }
  }
}

// SeqLoopParams::feature_bits: every column block of d features (not the bias
// column) in fixed point, one scale per block.
void RoundFeatures(std::vector<float>* feats, uint32_t F, uint32_t d, int bits) {
  const size_t rows = feats->size() / F;
  for (uint32_t b0 = 0; b0 + 1 < F; b0 += d) SeqRoundFixedPoint(feats->data() + b0, rows, F, d, bits);
}

void Loop(const SeqProfile& p, uint32_t tokens, const float* x, const float* layer0, const SeqLoopParams& params,
          bool encode, SeqLoopResult* out) {
  const uint32_t L = p.layers, H = p.kv_heads, d = p.head_dim;
  const size_t per_group = size_t{tokens} * d;
  const size_t per_layer = 2 * H * per_group;
  const std::vector<float> steps = SeqSteps(p, params);
  out->xhat.assign(L * per_layer, 0.0f);
  if (encode) {
    out->q.assign(size_t{p.groups()} * per_group, 0);
    out->sse.assign(p.groups(), 0.0);
  }
  std::vector<float> pred(per_group), acc(d), c(d), basis_t(size_t{d} * d);
  std::vector<float> resid, fixed_v;  // transform_bits
  std::vector<double> acc_fixed(d);
  // arith=int12: the profile's operands and the previous layer's reconstruction in fixed point.
  const bool fixed = params.arith == SeqArith::kInt12;
  std::vector<SeqFixedGroup> own_groups;
  const std::vector<SeqFixedGroup>* fixed_groups = params.fixed_groups;
  if (fixed && fixed_groups == nullptr) {
    own_groups = SeqFixedGroups(p);
    fixed_groups = &own_groups;
  }
  std::vector<int16_t> fixed_feats, fixed_resid;
  std::vector<int> feat_exp(2 * H);
  std::vector<int32_t> acc32(d);
  std::vector<int64_t> acc64(d);
  std::vector<double> pred_sum(d);
  uint32_t first = 0;
  if (params.layer0_exact) {
    std::copy(layer0, layer0 + per_layer, out->xhat.begin());
    first = 1;
  }
  for (uint32_t l = first; l < L; ++l) {
    std::vector<float> feats;
    const bool has_feats = l > 0 && p.inputs != SeqInputs::kMean;
    if (has_feats && fixed) {
      fixed_feats.resize(per_layer);
      const float* prev = out->xhat.data() + (l - 1) * per_layer;
      for (uint32_t b = 0; b < 2 * H; ++b) {
        feat_exp[b] = SeqToFixed(prev + b * per_group, tokens, d, d, fixed_feats.data() + b * per_group);
      }
    } else if (has_feats) {
      feats = Features(p, tokens, out->xhat.data() + (l - 1) * per_layer);
    }
    if (params.feature_bits > 0 && !feats.empty()) RoundFeatures(&feats, p.features(), d, params.feature_bits);
    for (uint32_t kv = 0; kv < 2; ++kv) {
      for (uint32_t h = 0; h < H; ++h) {
        const uint32_t g = SeqGroup(l, kv, h, H);
        if (fixed && has_feats) {
          PredictFixed(p, g, h, tokens, fixed_feats, feat_exp, (*fixed_groups)[g], pred.data(), &acc32, &pred_sum);
        } else {
          Predict(p, g, h, tokens, feats, pred.data());
        }
        const float* basis = p.basis.data() + size_t{g} * d * d;
        const float* st = steps.data() + size_t{g} * d;
        int32_t* q = out->q.data() + size_t{g} * per_group;
        float* xhat = out->xhat.data() + l * per_layer + (size_t{kv} * H + h) * per_group;
        const float* xs = encode ? x + l * per_layer + (size_t{kv} * H + h) * per_group : nullptr;
        if (encode && (fixed || params.transform_bits > 0)) {  // the residual rows, to be put in fixed point
          resid.resize(per_group);
          for (size_t e = 0; e < per_group; ++e) resid[e] = xs[e] - pred[e];
        }
        if (encode && fixed) {
          // c[t][i] = float(2^(er + eu) * sum_j r[t][j] * u[i][j]), r = x - pred in fixed point (one
          // exponent er for the group's block), the sum exact in int32.
          fixed_resid.resize(per_group);
          const int er = SeqToFixed(resid.data(), tokens, d, d, fixed_resid.data());
          ForwardFixed((*fixed_groups)[g], fixed_resid.data(), er, tokens, d, st, params.rho, q);
        } else if (encode) {
          for (uint32_t i = 0; i < d; ++i) {
            for (uint32_t j = 0; j < d; ++j) basis_t[size_t{j} * d + i] = basis[size_t{i} * d + j];
          }
          if (params.transform_bits > 0) SeqRoundFixedPoint(resid.data(), tokens, d, d, params.transform_bits);
          for (uint32_t t = 0; t < tokens; ++t) {
            const float* xr = xs + size_t{t} * d;
            const float* pr = pred.data() + size_t{t} * d;
            // c = U r, accumulated over j ascending (vectorizes over i).
            for (uint32_t i = 0; i < d; ++i) c[i] = 0.0f;
            for (uint32_t j = 0; j < d; ++j) {
              const float rj = params.transform_bits > 0 ? resid[size_t{t} * d + j] : xr[j] - pr[j];
              const float* ut = basis_t.data() + size_t{j} * d;
              for (uint32_t i = 0; i < d; ++i) c[i] += rj * ut[i];
            }
            int32_t* qr = q + size_t{t} * d;
            for (uint32_t i = 0; i < d; ++i) qr[i] = SeqQuantize(c[i], st[i], params.rho);
          }
        }
        if (fixed) {
          ReconstructInt((*fixed_groups)[g], SeqStepBase(params, g), tokens, d, q, pred.data(), xhat, &acc64,
                         &acc32);
        } else if (params.transform_bits > 0) {
          fixed_v.resize(size_t{d} * d);
          StepScaledBasis(p, g, fixed_v.data());
          SeqRoundFixedPoint(fixed_v.data(), 1, size_t{d} * d, size_t{d} * d, params.transform_bits);
          ReconstructFixed(fixed_v.data(), SeqStepBase(params, g), tokens, d, q, pred.data(), xhat, &acc_fixed);
        } else {
          Reconstruct(basis, st, tokens, d, q, pred.data(), xhat, acc.data());
        }
        if (encode) {
          out->sse[g] = SeqGroupSse(x + l * per_layer + (size_t{kv} * H + h) * per_group, xhat, tokens, d);
        }
      }
    }
  }
}

}  // namespace

void SeqEncodeLoop(const SeqProfile& profile, uint32_t tokens, const float* x, const float* layer0,
                   const SeqLoopParams& params, SeqLoopResult* out) {
  Loop(profile, tokens, x, layer0, params, true, out);
}

void SeqDecodeLoop(const SeqProfile& profile, uint32_t tokens, const float* layer0, const SeqLoopParams& params,
                   SeqLoopResult* out) {
  Loop(profile, tokens, nullptr, layer0, params, false, out);
}

void SeqRoundFixedPoint(float* v, size_t rows, size_t stride, size_t cols, int bits) {
  double m = 0;
  for (size_t r = 0; r < rows; ++r) {
    for (size_t c = 0; c < cols; ++c) m = std::max(m, std::abs(double(v[r * stride + c])));
  }
  if (m == 0) return;
  const double top = std::ldexp(1.0, bits - 1) - 1;
  const double scale = std::ldexp(1.0, static_cast<int>(std::ceil(std::log2(m / top))));
  for (size_t r = 0; r < rows; ++r) {
    for (size_t c = 0; c < cols; ++c) {
      float& x = v[r * stride + c];
      x = static_cast<float>(std::nearbyint(x / scale) * scale);
    }
  }
}

int SeqFixedExponent(double m) {
  if (!(m > 0) || !std::isfinite(m)) return 0;
  const double top = kSeqFixedMax;
  int e = 0;
  std::frexp(m / top, &e);  // a first guess; the checks below are exact
  while (m > std::ldexp(top, e)) ++e;
  while (m <= std::ldexp(top, e - 1)) --e;
  return e;
}

namespace {
// nearbyint(y) in the default rounding mode (to nearest, ties to even) for
// |y| < 2^51, without a library call: adding 1.5 * 2^52 leaves no fraction bits.
inline double RoundHalfEven(double y) {
  constexpr double kShift = 6755399441055744.0;  // 1.5 * 2^52
  return (y + kShift) - kShift;
}
}  // namespace

int SeqToFixed(const float* v, size_t rows, size_t stride, size_t cols, int16_t* out) {
  double m = 0;
  for (size_t r = 0; r < rows; ++r) {
    for (size_t c = 0; c < cols; ++c) {
      const double x = v[r * stride + c];
      if (std::isfinite(x)) m = std::max(m, std::abs(x));
    }
  }
  const int e = SeqFixedExponent(m);
  const double inv = std::ldexp(1.0, -e);  // x * inv is exact (a power of two)
  for (size_t r = 0; r < rows; ++r) {
    for (size_t c = 0; c < cols; ++c) {
      const double x = v[r * stride + c];
      out[r * cols + c] = std::isfinite(x) ? static_cast<int16_t>(RoundHalfEven(x * inv)) : 0;  // |x * inv| <= 2047
    }
  }
  return e;
}

std::vector<SeqFixedGroup> SeqFixedGroups(const SeqProfile& p) {
  const uint32_t d = p.head_dim, F = p.features();
  std::vector<SeqFixedGroup> out(p.groups());
  std::vector<float> sv(size_t{d} * d);
  for (uint32_t g = 0; g < p.groups(); ++g) {
    SeqFixedGroup& fg = out[g];
    if (F > 1) {
      fg.w.resize(size_t{F - 1} * d);
      fg.ew = SeqToFixed(p.predictor.data() + size_t{g} * F * d, F - 1, d, d, fg.w.data());
      if (d % 2 == 0) {
        fg.w_pairs.resize(fg.w.size());
        for (uint32_t c = 0; c + 1 < F - 1; c += 2) {
          for (uint32_t j = 0; j < d; ++j) {
            fg.w_pairs[(size_t{c} * d + 2 * j)] = fg.w[size_t{c} * d + j];
            fg.w_pairs[(size_t{c} * d + 2 * j) + 1] = fg.w[size_t{c + 1} * d + j];
          }
        }
      }
    }
    fg.u.resize(size_t{d} * d);
    fg.eu = SeqToFixed(p.basis.data() + size_t{g} * d * d, d, d, d, fg.u.data());
    StepScaledBasis(p, g, sv.data());
    fg.v.resize(size_t{d} * d);
    fg.ev = SeqToFixed(sv.data(), d, d, d, fg.v.data());
  }
  return out;
}

// ============================================================ container tables

Result<SeqLossyParams> ParseSeqLossyParams(std::span<const uint8_t> after_mode, const SeqProfile& profile) {
  const uint32_t groups = profile.groups();
  ByteReader r(after_mode);
  SeqLossyParams out;
  const uint8_t layer0_mode = r.U8();
  const uint16_t streams = r.U16();
  out.streams = static_cast<SeqStreamCoding>(streams);
  const uint32_t dbits = r.U32();
  r.U32();  // the encoder's proxy (information)
  out.parent_hash = r.U64();
  std::memcpy(&out.loop.delta0, &dbits, 4);
  const uint32_t g = r.U32();
  if (!r.ok() || g != groups) return DataLoss("seq: bad parameters");
  auto codes = r.Bytes(groups);
  if (streams > static_cast<uint16_t>(SeqStreamCoding::kSplitLanes)) return DataLoss("seq: bad parameters");
  const bool lanes = IsLaneCoding(out.streams);
  if (lanes) out.step_class = static_cast<int16_t>(r.U16());
  if (!r.ok() || r.remaining() != 0) return DataLoss("seq: bad parameters");
  out.loop.mult_code.assign(codes.begin(), codes.end());
  if (layer0_mode > 3 || !(out.loop.delta0 > 0) || !std::isfinite(out.loop.delta0)) {
    return DataLoss("seq: bad parameters");
  }
  out.loop.layer0_exact = (layer0_mode & 1) != 0;
  out.loop.arith = (layer0_mode & 2) != 0 ? SeqArith::kInt12 : SeqArith::kFloat;
  if (out.loop.arith == SeqArith::kInt12 && profile.head_dim > kSeqFixedMaxDim) {
    return DataLoss("seq: arith=int12 with a head_dim above 512");
  }
  if (out.streams == SeqStreamCoding::kLanes && !profile.has_static_model()) {
    return DataLoss("seq: lane streams with a profile that has no static model");
  }
  if (IsSignedLaneCoding(out.streams) && !profile.has_signed_model()) {
    return DataLoss("seq: signed lane streams with a profile that has no signed model");
  }
  if (lanes && out.parent_hash != 0) return DataLoss("seq: lane streams never continue a parent");
  return out;
}

std::vector<uint8_t> PackSeqLossyParams(const SeqLossyParams& params, float proxy) {
  std::vector<uint8_t> out;
  ByteWriter w(&out);
  w.U8(kSeqModeLossy);
  // Bit 0: layer 0 from the model; bit 1: arith=int12.
  w.U8(static_cast<uint8_t>((params.loop.layer0_exact ? 1 : 0) | (params.loop.arith == SeqArith::kInt12 ? 2 : 0)));
  w.U16(static_cast<uint16_t>(params.streams));
  uint32_t dbits, pbits;
  std::memcpy(&dbits, &params.loop.delta0, 4);
  std::memcpy(&pbits, &proxy, 4);
  w.U32(dbits);
  w.U32(pbits);
  w.U64(params.parent_hash);
  w.U32(static_cast<uint32_t>(params.loop.mult_code.size()));
  w.Bytes(params.loop.mult_code);
  if (IsLaneCoding(params.streams)) {
    w.U16(static_cast<uint16_t>(params.step_class));
  }
  return out;
}

// Length-prefixed list of streams: u32 n, n x u32 length, the streams.
std::vector<uint8_t> PackSeqStreams(const std::vector<std::vector<uint8_t>>& streams) {
  std::vector<uint8_t> out;
  ByteWriter w(&out);
  w.U32(static_cast<uint32_t>(streams.size()));
  for (const auto& s : streams) w.U32(static_cast<uint32_t>(s.size()));
  for (const auto& s : streams) w.Bytes(s);
  return out;
}

Result<std::vector<std::span<const uint8_t>>> UnpackSeqStreams(std::span<const uint8_t> data, uint32_t expected) {
  ByteReader r(data);
  const uint32_t n = r.U32();
  if (!r.ok() || n != expected) return DataLoss("seq: wrong number of group streams");
  std::vector<uint32_t> lengths(n);
  for (auto& len : lengths) len = r.U32();
  if (!r.ok()) return DataLoss("seq: truncated stream table");
  std::vector<std::span<const uint8_t>> out;
  for (uint32_t len : lengths) {
    auto s = r.Bytes(len);
    if (!r.ok()) return DataLoss("seq: group stream exceeds its section");
    out.push_back(s);
  }
  if (r.remaining() != 0) return DataLoss("seq: trailing bytes in layer section");
  return out;
}

// ============================================================ rate control

namespace {
constexpr double kMinDelta = 1e-5, kMaxDelta = 1e3;
}  // namespace

double SeqRateSearch::Secant::Next(double x, double f, double target, bool root_above) {
  (root_above ? lo : hi) = x;
  if (!std::isnan(prev_x) && x != prev_x) {
    const double sl = (f - prev_f) / (x - prev_x);
    if (sl > min_slope && sl < max_slope) slope = sl;
  }
  prev_x = x;
  prev_f = f;
  const double nx = x + (target - f) / slope;
  return nx > lo && nx < hi ? nx : 0.5 * (lo + hi);
}

double SeqRateFirstSlope(SeqStreamCoding coding, double bits) {
  return IsLaneCoding(coding) ? -(1.019 + 0.103 * bits) : -1.44;
}

SeqRateSearch::SeqRateSearch(double bits, double kl, double delta, double maxbits, SeqStreamCoding coding)
    : opt_bits_(bits), opt_kl_(kl), opt_delta_(delta), opt_maxbits_(maxbits), chosen_delta_(delta) {
  if (opt_bits_ > 0) {
    phase_ = Phase::kBits;
    const double slope = std::clamp(SeqRateFirstSlope(coding, opt_bits_), -20.0, -0.05);
    search_ = {std::log(kMinDelta), std::log(kMaxDelta), slope, -20, -0.05, NAN, NAN};
    x_ = std::log(0.3);
    best_ = INFINITY;  // the best |bits - target| so far
    it_ = 0;
    next_ = std::exp(x_);
    return;
  }
  AfterBits();
}

void SeqRateSearch::Keep(double delta, double bits, double proxy) {
  chosen_delta_ = delta;
  bits_ = bits;
  proxy_ = proxy;
}

void SeqRateSearch::AfterBits() {
  if (opt_kl_ > 0 && (opt_bits_ == 0 || proxy_ > opt_kl_)) {
    StartKl();
  } else {
    StartFixed();
  }
}

void SeqRateSearch::StartKl() {
  phase_ = Phase::kKl;
  aim_ = std::log(0.985 * opt_kl_);
  search_ = {std::log(kMinDelta), std::log(kMaxDelta), 2.0, 0.1, 20, NAN, NAN};
  x_ = std::log(0.3);
  if (opt_bits_ > 0) {
    search_.hi = std::log(chosen_delta_);
    x_ = search_.hi + (aim_ - std::log(std::max(proxy_, 1e-300))) / search_.slope;
  }
  best_ = -INFINITY;  // the largest log step within the budget so far
  found_ = false;
  it_ = 0;
  x_ = std::clamp(x_, search_.lo, search_.hi);
  next_ = std::exp(x_);
}

void SeqRateSearch::EndKl() {
  if (!found_) {
    lossless_ = true;
  } else {
    if (opt_bits_ > 0) raised_ = true;
    if (bits_ > opt_maxbits_) lossless_ = true;
  }
  StartFixed();
}

void SeqRateSearch::StartFixed() {
  if (opt_delta_ > 0) {
    phase_ = Phase::kFixed;
    next_ = opt_delta_;
  } else {
    phase_ = Phase::kDone;
  }
}

bool SeqRateSearch::Report(double b, double pr) {
  bool kept = false;
  switch (phase_) {
    case Phase::kBits: {
      const double target = opt_bits_;
      const double err = std::fabs(b - target);
      if (err < best_) {
        best_ = err;
        Keep(std::exp(x_), b, pr);
        kept = true;
      }
      if (err <= 0.005 * target) {
        AfterBits();
        break;
      }
      const double nx = search_.Next(x_, b, target, b > target);
      if (search_.hi - search_.lo < 1e-6 || ++it_ >= 30) {
        AfterBits();
        break;
      }
      x_ = nx;
      next_ = std::exp(x_);
      break;
    }
    case Phase::kKl: {
      const bool ok = pr <= opt_kl_;
      if (ok && x_ > best_) {
        best_ = x_;
        found_ = true;
        Keep(std::exp(x_), b, pr);
        kept = true;
      }
      if (ok && pr >= 0.97 * opt_kl_) {
        EndKl();
        break;
      }
      const double nx = search_.Next(x_, std::log(std::max(pr, 1e-300)), aim_, ok);
      if (search_.hi - search_.lo < 1e-4 || ++it_ >= 30) {
        EndKl();
        break;
      }
      x_ = std::clamp(nx, search_.lo, search_.hi);
      next_ = std::exp(x_);
      break;
    }
    case Phase::kFixed:
      Keep(opt_delta_, b, pr);
      kept = true;
      phase_ = Phase::kDone;
      break;
    case Phase::kDone:
      break;
  }
  return kept;
}

double SeqProxy(const SeqProfile& p, const std::vector<double>& sse, uint32_t tokens) {
  double sum = 0;
  for (uint32_t g = 0; g < p.groups(); ++g) sum += double{p.sensitivity[g]} * sse[g];
  return double{p.proxy_scale} * sum / std::max<uint32_t>(tokens, 1);
}

}  // namespace seqkv::internal

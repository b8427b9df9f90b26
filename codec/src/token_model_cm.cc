// Token-id coding 3 (docs/format.md, "Token coding 3: context mixing"): an
// adaptive context-mixing model over the ids' bits, coded with the binary
// rANS coder. Kept so that chunks written with it still decode; new chunks
// take coding 4 (token_model.cc) when it is smaller.
#include <algorithm>
#include <bit>

#include "entropy_cm.h"
#include "rans.h"
#include "token_model.h"

namespace seqkv::internal {

namespace {

// ---------------------------------------------------------------- coding 3

constexpr int kOrders = 4;              // contexts of order 0..3
constexpr int kInputs = kOrders + 2;    // + match model + bias
constexpr int kStages = 32;             // mixer selector: decision depth
constexpr int kMinTableBits = 6;   // lines of 16 counters
constexpr int kMaxTableBits = 16;  // 4 MiB per order at most (hostile counts too)
constexpr int kMatchMin = 2;            // ids of context that start a match
constexpr int kMaxMatch = 15;

int TableBits(uint32_t count) {
  // 8 to 16 lines (128 to 256 counters) per id: hashed contexts collide
  // little, which measured worth 0.3 bits/token over a table half the size.
  int bits = static_cast<int>(std::bit_width(uint64_t{count} * 4));
  return std::clamp(bits, kMinTableBits, kMaxTableBits);
}

class TokenModel {
 public:
  explicit TokenModel(uint32_t count)
      : mixer_(kInputs, kStages * 2, 6, 22000),
        apm_(kStages * 4, 7),
        match_table_(size_t{1} << std::clamp(static_cast<int>(std::bit_width(uint64_t{count})) + 1, 8, 22), 0) {
    const int bits = TableBits(count);
    for (int i = 0; i < kOrders; ++i) tables_.emplace_back(bits);
    history_.reserve(count);
  }

  // Codes one id. The encoder passes the id; the decoder passes 0 and gets
  // the decoded id back. `coder.Bit(bit, p12)` codes one decision.
  template <class Coder>
  uint32_t Code(Coder& coder, uint32_t id) {
    BeginToken();
    // Bit length (0..31), a 5-level tree.
    const int nbits = std::bit_width(id);
    uint32_t node = 1;
    for (int level = 0; level < 5; ++level) {
      const int bit = (nbits >> (4 - level)) & 1;
      node = (node << 1) | static_cast<uint32_t>(CodeBit(coder, bit, level));
    }
    // The bits below the leading one, most significant first.
    const int length = static_cast<int>(node - 32);
    uint32_t value = length == 0 ? 0 : 1;
    for (int pos = length - 2, depth = 0; pos >= 0; --pos, ++depth) {
      const int bit = (id >> pos) & 1;
      value = (value << 1) | static_cast<uint32_t>(CodeBit(coder, bit, 5 + std::min(depth, kStages - 6)));
    }
    EndToken(value);
    return value;
  }

 private:
  void BeginToken() {
    const size_t t = history_.size();
    auto prev = [&](size_t back) -> uint64_t { return t >= back ? history_[t - back] + 1 : 0; };
    ctx_[0] = 0;
    ctx_[1] = HashMix(1, prev(1));
    ctx_[2] = HashMix(ctx_[1] + 2, prev(2));
    ctx_[3] = HashMix(ctx_[2] + 3, prev(3));
    // The predicted id's decisions (as Code makes them), if a match is active.
    match_ok_ = match_len_ > 0;
    expected_bits_ = 0;
    if (match_ok_) {
      const uint32_t p = history_[match_ptr_];
      const int nb = std::bit_width(p);
      expected_bits_ = uint64_t(nb) << (nb > 0 ? nb - 1 : 0) | (nb > 1 ? (p & ((1u << (nb - 1)) - 1)) : 0);
      expected_count_ = 5 + (nb > 1 ? nb - 1 : 0);
    }
    decision_ = 0;
    prefix_ = 1;
  }

  template <class Coder>
  int CodeBit(Coder& coder, int bit, int stage) {
    const StretchTable& st = Stretch();
    // Decisions are grouped by four: one line per group and order, keyed
    // by the context and every decision before the group.
    if ((decision_ & 3) == 0) {
      for (int i = 0; i < kOrders; ++i) lines_[i] = &tables_[i].At(HashMix(ctx_[i], prefix_));
      node_ = 1;
    }
    BitCounter* c[kOrders];
    for (int i = 0; i < kOrders; ++i) {
      c[i] = &lines_[i]->c[node_];
      mixer_.Add(st(c[i]->P12()));
    }
    int expected = -1;
    BitCounter* mc = nullptr;
    if (match_ok_ && decision_ < expected_count_) {
      expected = static_cast<int>((expected_bits_ >> (expected_count_ - 1 - decision_)) & 1);
      mc = &match_counters_[std::min(match_len_, kMaxMatch)];
      const int s = st(mc->P12());
      mixer_.Add(expected ? s : -s);
    } else {
      mixer_.Add(0);
    }
    mixer_.Add(256);
    const int p_mix = mixer_.Mix(stage * 2 + (mc != nullptr));
    const int apm_ctx = stage * 4 + (mc ? 2 + expected : 0) + (c[1]->n > 2);
    const int p_apm = apm_.Refine(p_mix, apm_ctx);
    int p = (p_mix + 3 * p_apm + 2) >> 2;
    p = std::clamp(p, 1, 4095);
    bit = coder.Bit(bit, p);
    mixer_.Update(bit);
    apm_.Update(bit);
    static constexpr int kLimits[kOrders] = {250, 60, 30, 20};
    for (int i = 0; i < kOrders; ++i) c[i]->Update(bit, kLimits[i]);
    if (mc) {
      mc->Update(bit == expected, 255);
      if (bit != expected) match_ok_ = false;
    }
    ++decision_;
    node_ = (node_ << 1) | bit;
    prefix_ = (prefix_ << 1) | bit;
    return bit;
  }

  void EndToken(uint32_t id) {
    history_.push_back(id);
    const size_t t = history_.size();
    if (match_len_ > 0 && history_[match_ptr_] == id) {
      ++match_ptr_;
      match_len_ = std::min(match_len_ + 1, 65535);
    } else {
      match_len_ = 0;
    }
    if (t < kMatchMin) return;
    uint64_t h = 0;
    for (int i = 1; i <= kMatchMin; ++i) h = HashMix(h + i, history_[t - i]);
    uint32_t& slot = match_table_[h & (match_table_.size() - 1)];
    if (match_len_ == 0 && slot > 0) {
      match_ptr_ = slot;
      // Length of the actual agreement behind the candidate (0 on a hash collision).
      int len = 0;
      while (len < 32 && static_cast<size_t>(len) < match_ptr_ && history_[match_ptr_ - 1 - len] == history_[t - 1 - len]) {
        ++len;
      }
      match_len_ = len;
    }
    slot = static_cast<uint32_t>(t);
  }

  std::vector<LineTable> tables_;
  CounterLine* lines_[kOrders] = {};
  uint32_t node_ = 1;
  uint64_t prefix_ = 1;
  Mixer mixer_;
  Apm apm_;
  BitCounter match_counters_[kMaxMatch + 1];
  std::vector<uint32_t> match_table_;  // context hash -> position after it
  std::vector<uint32_t> history_;
  uint64_t ctx_[kOrders] = {};
  uint64_t expected_bits_ = 0;  // the predicted id's decisions, first in the top bit
  int expected_count_ = 0;
  int decision_ = 0;
  bool match_ok_ = false;
  size_t match_ptr_ = 0;
  int match_len_ = 0;
};

}  // namespace

Result<std::vector<uint8_t>> EncodeTokensCm(std::span<const int32_t> ids) {
  for (int32_t id : ids) {
    if (id < 0) return InvalidArgument("token ids: negative id cannot be context-coded");
  }
  TokenModel model(static_cast<uint32_t>(ids.size()));
  CmEncodeSide side;
  for (int32_t id : ids) model.Code(side, static_cast<uint32_t>(id));
  return side.enc.Finish();
}

Result<std::vector<int32_t>> DecodeTokensCm(std::span<const uint8_t> bytes, uint32_t count) {
  TokenModel model(count);
  CmDecodeSide side(bytes);
  std::vector<int32_t> ids(count);
  for (uint32_t i = 0; i < count; ++i) {
    ids[i] = static_cast<int32_t>(model.Code(side, 0));
    if (!side.dec.ok()) break;
  }
  SEQKV_RETURN_IF_ERROR(side.dec.Finish().WithContext("token ids"));
  return ids;
}

}  // namespace seqkv::internal

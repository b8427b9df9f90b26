#include "token_model.h"

#include <algorithm>
#include <bit>
#include <deque>

#include "entropy_cm.h"

namespace seqkv::internal {

namespace {

// ---------------------------------------------------------------- coding 4
//
// An id is a path in a binary tree: a 1 followed by the decisions made so
// far. The first five decisions give the id's bit length (0..31), most
// significant first; then come the bits below its leading one, most
// significant first. Every subtree is a contiguous range of ids.
//
// The constants are the textbook Kneser-Ney discount (3/4) and round values
// for the rest, chosen on the 8 dev dumps as a whole (never per file).

constexpr int kStdOrders = 5;   // contexts: the previous 0..4 ids
constexpr int kSkipOrders = 3;  // contexts: none, the id two back, the ids two and three back
constexpr int kMaxOrders = 5;
constexpr uint32_t kListMax = 4;      // followers kept inline before a context spills to node stats
constexpr uint64_t kKnDiscount = 12;  // Kneser-Ney discount 12/16
constexpr uint64_t kKnStrength = 4;   // Kneser-Ney strength 4/16
constexpr uint64_t kAlphaStd = 218, kAlphaSkip = 20, kAlphaZipf = 20, kAlphaRecent = 20;
constexpr uint64_t kZipfOffset = 128;    // Zipf prior weight 2^32 / (id + 128)
constexpr int kRecent = 48;              // positions behind the recent-ids distribution
constexpr uint64_t kLengthPrior = 6554;  // 0.1 count for every bit length
constexpr int kLengthDecay = 7;          // length counts decay by 1/128 per novel id
constexpr int kMixerRate = 10;
constexpr int kMatchCap = 15;
constexpr uint32_t kMaxCountMixedIds = 1u << 16;      // longer chunks use another coding
constexpr size_t kMaxNodeSlots = size_t{1} << 20;     // 16 MiB; 65536 ids of text fill 60%
constexpr size_t kMaxContextSlots = size_t{1} << 18;  // 12 MiB; 65536 ids of text fill 55%
constexpr int kCheckBits = 16;                        // a hash of the ids ends the stream
constexpr uint64_t kCheckSeed = 0x70CE45;

uint64_t LeafPath(uint32_t id) {
  const int len = std::bit_width(id);
  const uint64_t head = 32 + static_cast<uint64_t>(len);
  return len <= 1 ? head : (head << (len - 1)) | (id & ((1u << (len - 1)) - 1));
}
int PathBits(uint64_t path) { return std::bit_width(path) - 1; }
// The smallest id below `path` (of `bits` >= 5 decisions), for an id of bit length `len`.
uint64_t FirstId(uint64_t path, int bits, int len) {
  if (len <= 1) return static_cast<uint64_t>(len);
  const int below = len - 1 - (bits - 5);
  return (uint64_t{1} << (len - 1)) | ((path << below) & ((uint64_t{1} << (len - 1)) - 1));
}
// Whether the complete path `leaf` passes through `node` (of `node_bits` decisions).
bool IsBelow(uint64_t leaf, uint64_t node, int node_bits) {
  const int bits = PathBits(leaf);
  return bits >= node_bits && (leaf >> (bits - node_bits)) == node;
}

// Hashes of contexts (a seed extended by ids) and of (context, tree node).
uint64_t Extend(uint64_t context, uint32_t id) { return Mix64(context + Mix64(uint64_t{id} + 1)); }
uint64_t NodeKey(uint64_t context, uint64_t path) {
  return Mix64(context + Mix64(path + 0x9E3779B97F4A7C15ull));
}

// num / den as P(1) in 1/2^16, clamped to [1, 2^16 - 1]; 1/2 when den is 0.
uint32_t Ratio16(uint64_t num, uint64_t den) {
  if (den == 0) return 32768;
  while (den >= (uint64_t{1} << 47)) {
    num >>= 1;
    den >>= 1;
  }
  return static_cast<uint32_t>(std::clamp<uint64_t>((num << 16) / std::max<uint64_t>(den, 1), 1, 65535));
}
// m * 2^30 / root (0 when root is 0): a component's mass, normalized.
uint64_t Normalized(uint64_t m, uint64_t root) {
  if (root == 0) return 0;
  while (root >= (uint64_t{1} << 32)) {
    root >>= 1;
    m >>= 1;
  }
  return (std::min(m, root) << 30) / root;
}

// log2(y) in 1/2^16 units by repeated squaring, for y >= 1.
uint64_t Log2Q16(uint64_t y) {
  const int e = std::bit_width(y) - 1;
  uint64_t m = e >= 31 ? y >> (e - 31) : y << (31 - e);  // y / 2^e in Q31
  uint64_t r = static_cast<uint64_t>(e) << 16;
  for (int i = 15; i >= 0; --i) {
    m = (m * m) >> 31;
    if (m >= (uint64_t{1} << 32)) {
      m >>= 1;
      r |= uint64_t{1} << i;
    }
  }
  return r;
}
uint64_t ZipfWeight(uint64_t id) { return (uint64_t{1} << 32) / (id + kZipfOffset); }
// ZipfWeight summed over [a, b): exactly for short ranges, else as 2^32 ln((b + c) / (a + c)).
uint64_t ZipfRange(uint64_t a, uint64_t b) {
  if (b - a <= 16) {
    uint64_t s = 0;
    for (uint64_t x = a; x < b; ++x) s += ZipfWeight(x);
    return s;
  }
  return (Log2Q16(b + kZipfOffset) - Log2Q16(a + kZipfOffset)) * 45426;  // 45426 = 2^16 ln 2
}

// Occurrences and distinct ids below a tree node, in one context.
struct NodeStats {
  uint64_t sum = 0;
  uint64_t distinct = 0;
};
struct NodeValue {
  uint32_t sum = 0;
  uint32_t distinct = 0;
};
// A context's followers: inline while there are at most kListMax distinct
// ones, then as node stats in the node table, keyed by context and path.
struct ContextValue {
  uint32_t sum = 0;
  uint32_t distinct = 0;
  uint32_t ids[kListMax] = {};
  uint32_t counts[kListMax] = {};
};

// All counts of one chunk: followers per context, and the Zipf weight of
// the distinct ids below every node.
class TokenStats {
 public:
  TokenStats() : nodes_(kMaxNodeSlots), contexts_(kMaxContextSlots) {}

  const ContextValue* Context(uint64_t context) const { return contexts_.Find(context); }
  NodeStats Below(uint64_t context, const ContextValue& c, uint64_t path, int bits) const {
    NodeStats s;
    if (c.distinct <= kListMax) {
      for (uint32_t i = 0; i < c.distinct; ++i) {
        if (IsBelow(LeafPath(c.ids[i]), path, bits)) {
          s.sum += c.counts[i];
          s.distinct += 1;
        }
      }
    } else if (const NodeValue* v = nodes_.Find(NodeKey(context, path))) {
      s = {v->sum, v->distinct};
    }
    return s;
  }
  bool Contains(uint64_t context, uint32_t id) const {
    const ContextValue* c = contexts_.Find(context);
    if (c == nullptr) return false;
    if (c->distinct <= kListMax) return std::find(c->ids, c->ids + c->distinct, id) != c->ids + c->distinct;
    return nodes_.Find(NodeKey(context, LeafPath(id))) != nullptr;
  }
  // Counts one occurrence of id after context; returns whether it is new there.
  bool Add(uint64_t context, uint32_t id) {
    ContextValue* c = contexts_.FindOrInsert(context);
    if (c == nullptr) return true;
    if (c->distinct <= kListMax) {
      for (uint32_t i = 0; i < c->distinct; ++i) {
        if (c->ids[i] == id) {
          ++c->sum;
          ++c->counts[i];
          return false;
        }
      }
      if (c->distinct < kListMax) {
        c->ids[c->distinct] = id;
        c->counts[c->distinct] = 1;
        ++c->sum;
        ++c->distinct;
        return true;
      }
      for (uint32_t i = 0; i < kListMax; ++i) AddPath(context, c->ids[i], c->counts[i], 1);
    }
    const bool is_new = nodes_.Find(NodeKey(context, LeafPath(id))) == nullptr;
    AddPath(context, id, 1, is_new);
    ++c->sum;
    c->distinct += is_new;
    return is_new;
  }
  // Zipf weights live in the node table too, as 64-bit sums split over the two fields.
  uint64_t Weight(uint64_t context, uint64_t path) const {
    const NodeValue* v = nodes_.Find(NodeKey(context, path));
    return v ? (uint64_t{v->distinct} << 32 | v->sum) : 0;
  }
  void AddWeight(uint64_t context, uint32_t id) {
    const uint64_t w = ZipfWeight(id), leaf = LeafPath(id);
    const int bits = PathBits(leaf);
    for (int d = 0; d <= bits; ++d) {
      NodeValue* v = nodes_.FindOrInsert(NodeKey(context, leaf >> (bits - d)));
      if (v == nullptr) return;
      const uint64_t total = (uint64_t{v->distinct} << 32 | v->sum) + w;
      *v = {static_cast<uint32_t>(total), static_cast<uint32_t>(total >> 32)};
    }
  }
  bool full() const { return nodes_.full() || contexts_.full(); }

 private:
  // Adds to the stats of every node below the root on id's path.
  void AddPath(uint64_t context, uint32_t id, uint32_t count, uint32_t is_new) {
    const uint64_t leaf = LeafPath(id);
    const int bits = PathBits(leaf);
    for (int d = 1; d <= bits; ++d) {
      NodeValue* v = nodes_.FindOrInsert(NodeKey(context, leaf >> (bits - d)));
      if (v == nullptr) return;
      v->sum += count;
      v->distinct += is_new;
    }
  }

  KeyTable<NodeValue> nodes_;
  KeyTable<ContextValue> contexts_;
};

// Interpolated Kneser-Ney over nested contexts (shortest first), for one id:
// weights from the context roots, then the stats followed down the path.
// P(id) = sum over orders o of weight_o (16 c_o(id) - 12) / (4 + 16 C_o),
// weight of the top order 1, each lower order's weight the one above times
// (4 + 12 T) / (4 + 16 C) of that order (C occurrences, T distinct ids);
// what the lowest order leaves is P(novel).
class KneserNey {
 public:
  explicit KneserNey(int orders) : n_(orders) {}

  // `usable` contexts exist yet (the rest reach before the chunk).
  void Begin(const TokenStats& stats, const uint64_t* contexts, int usable) {
    uint64_t b = uint64_t{1} << 32;
    root_mass_ = 0;
    for (int o = n_ - 1; o >= 0; --o) {
      ctx_[o] = contexts[o];
      live_[o] = nullptr;
      if (o >= usable) continue;
      const ContextValue* c = stats.Context(ctx_[o]);
      if (c == nullptr || c->sum == 0) continue;
      live_[o] = c;
      node_[o] = {c->sum, c->distinct};
      den_[o] = kKnStrength + 16 * uint64_t{c->sum};
      weight_[o] = b;
      b = b * (kKnStrength + kKnDiscount * c->distinct) / den_[o];
      root_mass_ += Mass(o, node_[o]);
    }
    novel_ = b;
  }
  uint64_t novel() const { return novel_; }  // P(novel) * 2^32
  uint64_t root_mass() const { return root_mass_; }
  // Order 0 below the current node: the distinct ids seen in the chunk.
  NodeStats Order0() const { return live_[0] ? node_[0] : NodeStats{}; }
  NodeStats Order0Below(const TokenStats& stats, uint64_t path, int bits) const {
    return live_[0] ? stats.Below(ctx_[0], *live_[0], path, bits) : NodeStats{};
  }
  // Masses below the two children of the current node; `order0` is order 0's
  // stats below child 1.
  void Children(const TokenStats& stats, uint64_t child1, int bits, NodeStats order0, uint64_t* m0,
                uint64_t* m1) {
    *m0 = *m1 = 0;
    for (int o = 0; o < n_; ++o) {
      child1_[o] = {};
      if (!live_[o] || node_[o].sum == 0) continue;
      child1_[o] = o == 0 ? order0 : stats.Below(ctx_[o], *live_[o], child1, bits);
      *m0 += Mass(o, Minus(node_[o], child1_[o]));
      *m1 += Mass(o, child1_[o]);
    }
  }
  // Moves to the child taken, after Children.
  void Take(int bit) {
    for (int o = 0; o < n_; ++o) node_[o] = bit ? child1_[o] : Minus(node_[o], child1_[o]);
  }
  // Counts id in the usable contexts, highest first; a lower order counts
  // only ids new to the order above (Kneser-Ney continuation counts).
  void Update(TokenStats& stats, int usable, uint32_t id) const {
    for (int o = std::min(n_, usable) - 1; o >= 0; --o) {
      if (!stats.Add(ctx_[o], id)) break;
    }
  }

 private:
  static NodeStats Minus(NodeStats a, NodeStats b) {
    return {a.sum - std::min(a.sum, b.sum), a.distinct - std::min(a.distinct, b.distinct)};
  }
  uint64_t Mass(int o, NodeStats s) const {
    const uint64_t scaled = 16 * s.sum, discount = kKnDiscount * s.distinct;
    return scaled > discount ? weight_[o] * (scaled - discount) / den_[o] : 0;
  }

  int n_;
  uint64_t ctx_[kMaxOrders] = {};
  const ContextValue* live_[kMaxOrders] = {};
  NodeStats node_[kMaxOrders], child1_[kMaxOrders];
  uint64_t weight_[kMaxOrders] = {}, den_[kMaxOrders] = {};
  uint64_t novel_ = 0, root_mass_ = 0;
};

// The id that followed the last occurrence of the previous id, with the
// number of ids before both positions that agree (1..32; 0 when none).
class FollowerMatch {
 public:
  explicit FollowerMatch(uint32_t count)
      : last_(size_t{1} << std::clamp(static_cast<int>(std::bit_width(uint64_t{count})) + 1, 8, 18), 0) {}
  int len() const { return len_; }
  uint32_t predicted(const std::vector<uint32_t>& h) const { return h[ptr_]; }
  void Update(const std::vector<uint32_t>& h) {
    const size_t t = h.size();
    if (len_ > 0 && h[ptr_] == h[t - 1]) {
      ++ptr_;
      len_ = std::min(len_ + 1, 65535);
    } else {
      len_ = 0;
    }
    uint32_t& slot = last_[Mix64(h[t - 1]) & (last_.size() - 1)];
    if (len_ == 0 && slot > 0) {
      ptr_ = slot;
      int len = 0;
      while (len < 32 && static_cast<size_t>(len) < ptr_ && h[ptr_ - 1 - len] == h[t - 1 - len]) ++len;
      len_ = len;
    }
    slot = static_cast<uint32_t>(t);
  }

 private:
  std::vector<uint32_t> last_;  // hash of an id -> the position after its last occurrence
  size_t ptr_ = 0;
  int len_ = 0;
};

// Logistic mixing as in Mixer (entropy_cm.h), with a finer learning rate and
// the first input's weight starting at 1.
class TokenMixer {
 public:
  static constexpr int kInputs = 4;
  explicit TokenMixer(int selectors) : w_(size_t(selectors) * kInputs, 0) {
    for (size_t i = 0; i < w_.size(); i += kInputs) w_[i] = 65536;
  }
  void Add(int x) { x_[k_++] = x; }
  int Mix(int selector) {
    while (k_ < kInputs) x_[k_++] = 0;
    cur_ = &w_[size_t(selector) * kInputs];
    int64_t dot = 0;
    for (int i = 0; i < kInputs; ++i) dot += int64_t{x_[i]} * cur_[i];
    pr_ = std::clamp(Squash(static_cast<int>(std::clamp<int64_t>(dot >> 16, -2047, 2047))), 1, 4095);
    return pr_;
  }
  void Update(int bit) {
    const int64_t err = int64_t{(bit << 12) - pr_} * kMixerRate;
    for (int i = 0; i < kInputs; ++i) {
      const int64_t w = cur_[i] + ((x_[i] * err + (1 << 13)) >> 14);
      cur_[i] = static_cast<int32_t>(std::clamp<int64_t>(w, -(1 << 24), 1 << 24));
    }
    k_ = 0;
  }

 private:
  std::vector<int32_t> w_;
  int32_t* cur_ = nullptr;
  int x_[kInputs] = {};
  int k_ = 0;
  int pr_ = 2048;
};

// Coding 4's model for one chunk; the encoder and the decoder each run one
// in lockstep, so every statistic is updated only after its id is coded.
class CountMixedTokenModel {
 public:
  explicit CountMixedTokenModel(uint32_t count)
      : std_(kStdOrders), skip_(kSkipOrders), match_(count), flag_mixer_(4), seen_mixer_(3), apm_(20, 7) {
    history_.reserve(std::min(count, kMaxCountMixedIds));
  }
  bool full() const { return stats_.full(); }

  // Codes one id; the decoder passes 0 and gets the id back.
  template <class Coder>
  uint32_t Code(Coder& coder, uint32_t id) {
    Begin();
    int novel = 1;
    if (!history_.empty()) novel = CodeFlag(coder, stats_.Contains(std_ctx_[0], id) ? 0 : 1);
    const uint32_t value = novel ? CodeNovel(coder, id) : CodeSeen(coder, id);
    End(value, novel);
    return value;
  }

 private:
  static constexpr uint64_t kStdSeed = 0x57D0, kSkipSeed = 0x5C1F, kZipfContext = 0x21BF;

  void Begin() {
    const size_t t = history_.size();
    std_ctx_[0] = kStdSeed;
    for (int o = 1; o < kStdOrders; ++o) {
      std_ctx_[o] = static_cast<size_t>(o) <= t ? Extend(std_ctx_[o - 1], history_[t - o]) : 0;
    }
    skip_ctx_[0] = kSkipSeed;
    skip_ctx_[1] = t >= 2 ? Extend(kSkipSeed, history_[t - 2]) : 0;
    skip_ctx_[2] = t >= 3 ? Extend(skip_ctx_[1], history_[t - 3]) : 0;
    std_usable_ = static_cast<int>(std::min<size_t>(t, kStdOrders - 1)) + 1;
    skip_usable_ = static_cast<int>(std::clamp<size_t>(t, 1, kSkipOrders));
    std_.Begin(stats_, std_ctx_, std_usable_);
    skip_.Begin(stats_, skip_ctx_, skip_usable_);
  }

  template <class Coder>
  int CodeFlag(Coder& coder, int bit) {
    const StretchTable& st = Stretch();
    const uint64_t novel = (kAlphaStd * std_.novel() + kAlphaSkip * skip_.novel()) / (kAlphaStd + kAlphaSkip);
    flag_mixer_.Add(st(static_cast<int>(std::clamp<uint64_t>(novel >> 20, 1, 4095))));
    BitCounter& history = flag_history_[flags_ & 15];
    flag_mixer_.Add(st(history.P12()));
    const int ml = std::min(match_.len(), kMatchCap);
    BitCounter& match = flag_match_[ml];
    flag_mixer_.Add(st(match.P12()));
    flag_mixer_.Add(256);
    const int p_mix = flag_mixer_.Mix((ml > 0) * 2 + (flags_ & 1));
    const int p_apm = apm_.Refine(p_mix, flags_ & 15);
    bit = coder.Bit(bit, static_cast<uint32_t>(std::clamp((p_mix + 3 * p_apm + 2) >> 2, 1, 4095)) << 4);
    flag_mixer_.Update(bit);
    apm_.Update(bit);
    history.Update(bit, 60);
    match.Update(bit, 60);
    return bit;
  }

  template <class Coder>
  uint32_t CodeSeen(Coder& coder, uint32_t id) {
    const StretchTable& st = Stretch();
    const uint64_t leaf = LeafPath(id);
    const int leaf_bits = PathBits(leaf);
    const uint64_t expected_leaf = match_.len() > 0 ? LeafPath(match_.predicted(history_)) : 1;
    const int expected_bits = PathBits(expected_leaf);
    bool match_ok = match_.len() > 0;
    uint64_t recent[kRecent];  // recent ids still below the current node
    int n_recent = 0;
    for (size_t i = 0; i < recent_.size(); ++i) recent[n_recent++] = recent_[i];
    const uint64_t recent_root = static_cast<uint64_t>(n_recent);
    const uint64_t std_root = std_.root_mass(), skip_root = skip_.root_mass();
    const uint64_t zipf_root = stats_.Weight(kZipfContext, 1);
    uint64_t zipf_node = zipf_root;
    uint64_t path = 1;
    int coded = 0;
    for (int bits = 0;; ++bits) {
      if (bits >= 5) {
        const int len = static_cast<int>((path >> (bits - 5)) - 32);
        if (bits - 5 >= std::max(len - 1, 0)) break;
      }
      const uint64_t child1 = (path << 1) | 1;
      int bit = leaf_bits > bits ? static_cast<int>((leaf >> (leaf_bits - bits - 1)) & 1) : 0;
      int expected = -1;
      if (match_ok && expected_bits > bits)
        expected = static_cast<int>((expected_leaf >> (expected_bits - bits - 1)) & 1);
      const NodeStats seen = std_.Order0(), seen1 = std_.Order0Below(stats_, child1, bits + 1);
      if (seen1.distinct == 0 || seen1.distinct >= seen.distinct) {
        bit = seen1.distinct == 0 ? 0 : 1;  // seen ids only on one side
      } else {
        uint64_t k0, k1, s0, s1;
        std_.Children(stats_, child1, bits + 1, seen1, &k0, &k1);
        skip_.Children(stats_, child1, bits + 1, skip_.Order0Below(stats_, child1, bits + 1), &s0, &s1);
        const uint64_t z1 = stats_.Weight(kZipfContext, child1), z0 = zipf_node - std::min(zipf_node, z1);
        uint64_t r1 = 0;
        for (int i = 0; i < n_recent; ++i) r1 += IsBelow(recent[i], child1, bits + 1);
        const uint64_t r0 = static_cast<uint64_t>(n_recent) - r1;
        const uint64_t m0 = kAlphaStd * Normalized(k0, std_root) + kAlphaSkip * Normalized(s0, skip_root) +
                            kAlphaZipf * Normalized(z0, zipf_root) +
                            kAlphaRecent * Normalized(r0, recent_root);
        const uint64_t m1 = kAlphaStd * Normalized(k1, std_root) + kAlphaSkip * Normalized(s1, skip_root) +
                            kAlphaZipf * Normalized(z1, zipf_root) +
                            kAlphaRecent * Normalized(r1, recent_root);
        seen_mixer_.Add(st(static_cast<int>(Ratio16(m1, m0 + m1) >> 4)));
        BitCounter* hits = expected >= 0 ? &match_hits_[std::min(match_.len(), kMatchCap)] : nullptr;
        seen_mixer_.Add(hits ? (expected ? st(hits->P12()) : -st(hits->P12())) : 0);
        seen_mixer_.Add(256);
        const int m = hits ? 1 + expected : 0;
        const int p_mix = seen_mixer_.Mix(m);
        const int p_apm = apm_.Refine(p_mix, 16 + std::min(coded, 3));
        bit = coder.Bit(bit, static_cast<uint32_t>(std::clamp((p_mix + 3 * p_apm + 2) >> 2, 1, 4095)) << 4);
        seen_mixer_.Update(bit);
        apm_.Update(bit);
        if (hits) hits->Update(bit == expected, 255);
        std_.Take(bit);
        skip_.Take(bit);
        zipf_node = bit ? z1 : z0;
        ++coded;
      }
      if (expected != bit) match_ok = false;
      path = (path << 1) | static_cast<uint64_t>(bit);
      int kept = 0;
      for (int i = 0; i < n_recent; ++i) {
        if (IsBelow(recent[i], path, bits + 1)) recent[kept++] = recent[i];
      }
      n_recent = kept;
    }
    return PathId(path);
  }

  template <class Coder>
  uint32_t CodeNovel(Coder& coder, uint32_t id) {
    // Unseen ids of each bit length.
    uint64_t unseen[32];
    for (int len = 0; len < 32; ++len) {
      const uint64_t size = len == 0 ? 1 : uint64_t{1} << (len - 1);
      unseen[len] =
          size - std::min(size, std_.Order0Below(stats_, 32 + static_cast<uint64_t>(len), 5).distinct);
    }
    // The bit length: decayed counts of earlier novel lengths plus a prior,
    // times the unseen fraction of each length.
    auto length_mass = [&](int lo, int hi) {
      uint64_t m = 0;
      for (int len = lo; len < hi; ++len) {
        if (unseen[len] == 0) continue;
        const uint64_t c = length_counts_[len] + kLengthPrior;
        m += len <= 1 ? c : std::max<uint64_t>((c * unseen[len]) >> (len - 1), 1);
      }
      return m;
    };
    const int nbits = std::bit_width(id);
    int lo = 0;
    for (int level = 0; level < 5; ++level) {
      const int half = 16 >> level;
      const uint64_t m0 = length_mass(lo, lo + half), m1 = length_mass(lo + half, lo + 2 * half);
      int bit = (nbits >> (4 - level)) & 1;
      if (m0 == 0 || m1 == 0) {
        bit = m0 == 0 ? 1 : 0;
      } else {
        bit = coder.Bit(bit, Ratio16(m1, m0 + m1));
      }
      lo += bit ? half : 0;
    }
    const int len = lo;
    for (uint64_t& c : length_counts_) c -= c >> kLengthDecay;
    length_counts_[len] += 65536;
    // The bits below the leading one: a Zipf prior over the unseen ids.
    uint64_t path = 32 + static_cast<uint64_t>(len);
    uint64_t seen_node = (len == 0 ? 1 : uint64_t{1} << (len - 1)) - unseen[len];
    uint64_t zipf_node = stats_.Weight(kZipfContext, path);
    for (int bits = 5; bits < 5 + len - 1; ++bits) {
      const uint64_t child1 = (path << 1) | 1, size = uint64_t{1} << (len - 2 - (bits - 5));
      const uint64_t seen1 = std::min(seen_node, std_.Order0Below(stats_, child1, bits + 1).distinct);
      const uint64_t seen0 = seen_node - seen1;
      const uint64_t u0 = size - std::min(size, seen0), u1 = size - std::min(size, seen1);
      int bit = (id >> (len - 2 - (bits - 5))) & 1;
      const uint64_t z1_seen = stats_.Weight(kZipfContext, child1);
      const uint64_t z0_seen = zipf_node - std::min(zipf_node, z1_seen);
      if (u0 == 0 || u1 == 0) {
        bit = u0 == 0 ? 1 : 0;
      } else {
        const uint64_t a = FirstId(path << 1, bits + 1, len), b = a + size, c = b + size;
        const uint64_t all0 = ZipfRange(a, b), all1 = ZipfRange(b, c);
        // The unseen ids' weight, at least that of u ids at the range's end.
        const uint64_t z0 = std::max(all0 - std::min(all0, z0_seen), u0 * ZipfWeight(b - 1));
        const uint64_t z1 = std::max(all1 - std::min(all1, z1_seen), u1 * ZipfWeight(c - 1));
        bit = coder.Bit(bit, Ratio16(z1, z0 + z1));
      }
      path = (path << 1) | static_cast<uint64_t>(bit);
      seen_node = bit ? seen1 : seen0;
      zipf_node = bit ? z1_seen : z0_seen;
    }
    return PathId(path);
  }

  static uint32_t PathId(uint64_t leaf) {
    const int bits = PathBits(leaf);
    const int len = static_cast<int>((leaf >> (bits - 5)) - 32);
    return static_cast<uint32_t>(FirstId(leaf, bits, len));
  }

  void End(uint32_t id, int novel) {
    std_.Update(stats_, std_usable_, id);
    skip_.Update(stats_, skip_usable_, id);
    if (novel) stats_.AddWeight(kZipfContext, id);
    recent_.push_back(LeafPath(id));
    if (recent_.size() > kRecent) recent_.pop_front();
    history_.push_back(id);
    flags_ = (flags_ << 1) | static_cast<uint32_t>(novel);
    match_.Update(history_);
  }

  TokenStats stats_;
  KneserNey std_, skip_;
  uint64_t std_ctx_[kStdOrders] = {}, skip_ctx_[kSkipOrders] = {};
  int std_usable_ = 0, skip_usable_ = 0;
  FollowerMatch match_;
  TokenMixer flag_mixer_, seen_mixer_;
  Apm apm_;
  BitCounter flag_history_[16];
  BitCounter flag_match_[kMatchCap + 1];
  BitCounter match_hits_[kMatchCap + 1];
  uint64_t length_counts_[32] = {};
  std::deque<uint64_t> recent_;
  std::vector<uint32_t> history_;
  uint32_t flags_ = 0;
};

}  // namespace

Result<std::vector<uint8_t>> EncodeTokensCountMixed(std::span<const int32_t> ids) {
  if (ids.size() > kMaxCountMixedIds) return InvalidArgument("token ids: coding 4 takes at most 65536 ids");
  for (int32_t id : ids) {
    if (id < 0) return InvalidArgument("token ids: negative id cannot be context-coded");
  }
  CountMixedTokenModel model(static_cast<uint32_t>(ids.size()));
  ArithEncodeSide side;
  uint64_t check = kCheckSeed;
  for (int32_t id : ids) {
    model.Code(side, static_cast<uint32_t>(id));
    if (model.full()) return ResourceExhausted("token ids: too many distinct contexts for coding 4");
    check = Mix64(check + static_cast<uint32_t>(id));
  }
  for (int i = 0; i < kCheckBits; ++i) side.Bit(static_cast<int>((check >> i) & 1), 32768);
  return side.enc.Finish();
}

Result<std::vector<int32_t>> DecodeTokensCountMixed(std::span<const uint8_t> bytes, uint32_t count) {
  if (count > kMaxCountMixedIds) return DataLoss("token ids: coding 4 holds at most 65536 ids");
  CountMixedTokenModel model(count);
  ArithDecodeSide side(bytes);
  std::vector<int32_t> ids;
  ids.reserve(count);
  uint64_t check = kCheckSeed;
  for (uint32_t i = 0; i < count && side.dec.ok(); ++i) {
    ids.push_back(static_cast<int32_t>(model.Code(side, 0)));
    check = Mix64(check + static_cast<uint32_t>(ids.back()));
  }
  bool check_ok = true;
  for (int i = 0; i < kCheckBits; ++i) check_ok &= side.Bit(0, 32768) == static_cast<int>((check >> i) & 1);
  if (!check_ok || !side.dec.Finished() || ids.size() != count) {
    return DataLoss("token ids: coding 4 stream is corrupt or truncated");
  }
  return ids;
}

}  // namespace seqkv::internal

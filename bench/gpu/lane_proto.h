// Bench-only prototype of a GPU-first lane format (not a codec format; nothing
// outside bench/gpu uses it). It codes a group's symbols with the same signed
// static model as `streams=lanes2` (codec/src/seq_lanes.h: a table per scale
// class, s = q + 15, s = 0 / 30 escapes) and changes what makes the lanes2
// kernel's step long:
//   * lane j owns the components c with c % 16 == j, all of them (a
//     component without symbols is marked kUncoded and stores 0 without a
//     rANS operation), so the 16 lanes of a group store 16 consecutive
//     symbols of a token together: every symbol stored, coalesced, no clear;
//   * each lane has its own word stream (a word count per lane), so a step
//     needs no ballot, rank or shuffle: a lane whose state falls below 2^16
//     takes its next word from a 4-word register buffer;
//   * an escape is one rANS operation (its symbol) and its magnitude comes
//     from a per-lane side list (u32 |q| here; a format would pack the
//     Exp-Golomb bits), so there is no phase state;
//   * a lane's table ids live in registers.
// Decoding checks what a format would: exactly its words and escapes read,
// the final state 2^16, every coded component non-zero somewhere.
//
// Host encoder and host decoder here; the GPU decoder in lane_proto_kernels.cu
// runs the same per-lane loop (LaneProtoDecodeLane).
#pragma once

#include <cstdint>
#include <algorithm>
#include <cstring>
#include <vector>

#include <vector_types.h>

#include "seq_lanes.h"

#if defined(__CUDACC__)
#define LANE_PROTO_HD __host__ __device__
#else
#define LANE_PROTO_HD
#endif

namespace seqkv::bench::lane_proto {

inline constexpr uint32_t kLanes = 16;
inline constexpr uint32_t kMaxDim = 128;
inline constexpr uint8_t kUncoded = 0xFF;

// A group's blob: this header, then each lane's words (u16, each lane's run
// padded to 8 bytes), then each lane's escapes (u32 |q|). Offsets in bytes
// from the blob's start.
struct Header {
  uint32_t state[kLanes];
  uint32_t words_at[kLanes];
  uint32_t word_count[kLanes];
  uint32_t escapes_at[kLanes];
  uint32_t escape_count[kLanes];
  uint8_t table[kMaxDim];  // per component: the signed model's table, or kUncoded
};
static_assert(sizeof(Header) % 16 == 0);

// Reads one lane's words through a 64-bit buffer with the next 8 bytes
// loaded ahead; loads never pass the lane's padded run.
struct WordReader {
  const uint2* at;  // the lane's run as 8-byte units
  uint32_t units;   // 8-byte units in the run
  uint32_t next;    // the unit to load next
  uint32_t read;    // words taken
  uint64_t buf, ahead;
};

template <typename Load>
LANE_PROTO_HD inline void ReaderStart(WordReader* r, const uint2* at, uint32_t words, Load&& load) {
  r->at = at;
  r->units = (words + 3) / 4;
  r->read = 0;
  r->buf = r->units > 0 ? load(at, 0) : 0;
  r->ahead = r->units > 1 ? load(at, 1) : 0;
  r->next = 2;
}

template <typename Load>
LANE_PROTO_HD inline uint32_t ReaderTake(WordReader* r, Load&& load) {
  const uint32_t w = static_cast<uint32_t>(r->buf) & 0xFFFFu;
  r->buf >>= 16;
  if ((++r->read & 3u) == 0) {
    r->buf = r->ahead;
    r->ahead = r->next < r->units ? load(r->at, r->next) : 0;
    ++r->next;
  }
  return w;
}

// One lane's decode: tokens x (dim / 16) symbols into q [tokens][dim] at its
// components. search(table, slot, &start, &freq) returns the symbol. Returns
// true when the lane's stream is valid.
template <uint32_t kPer, typename Search, typename Load, typename Store>
LANE_PROTO_HD inline bool DecodeLane(const Header& h, const uint8_t* blob, uint32_t lane, uint32_t tokens,
                                     const uint32_t* escapes, Search&& search, Load&& load, Store&& store) {
  using seqkv::internal::kSeqLaneRansLow;
  using seqkv::internal::kSeqLaneScaleBits;
  // The lane's tables, four u8 per register.
  uint32_t tabs[(kPer + 3) / 4] = {};
  for (uint32_t p = 0; p < kPer; ++p) tabs[p / 4] |= uint32_t{h.table[p * kLanes + lane]} << (8 * (p % 4));
  auto tab = [&](uint32_t p) { return (tabs[p / 4] >> (8 * (p % 4))) & 0xFFu; };
  uint32_t x = h.state[lane];
  const uint32_t nwords = h.word_count[lane], nesc = h.escape_count[lane];
  WordReader r;
  ReaderStart(&r, reinterpret_cast<const uint2*>(blob + h.words_at[lane]), nwords, load);
  uint32_t e = 0, nonzero = 0, bad = x < kSeqLaneRansLow ? 1u : 0u;
  for (uint32_t t = 0; t < tokens; ++t) {
#if defined(__CUDA_ARCH__)
#pragma unroll
#endif
    for (uint32_t p = 0; p < kPer; ++p) {
      int32_t v = 0;
      if (tab(p) != kUncoded) {
        const uint32_t slot = x & ((1u << kSeqLaneScaleBits) - 1);
        uint32_t start, freq;
        const int s = search(tab(p), slot, &start, &freq);
        x = freq * (x >> kSeqLaneScaleBits) + slot - start;
        if (x < kSeqLaneRansLow) x = (x << 16) | ReaderTake(&r, load);
        v = s - seqkv::internal::kSeqSignedZero;
        if (s == seqkv::internal::kSeqSignedEscapeNeg || s == seqkv::internal::kSeqSignedEscapePos) {
          uint32_t m = 0;
          if (e < nesc) m = escapes[e];
          ++e;
          if (m < uint32_t(seqkv::internal::kSeqSignedZero) || m > seqkv::internal::kSeqLaneMaxMagnitude) bad = 1;
          v = s == seqkv::internal::kSeqSignedEscapeNeg ? -static_cast<int32_t>(m) : static_cast<int32_t>(m);
        }
        nonzero |= v != 0 ? 1u << p : 0u;
      }
      store(t, p * kLanes + lane, v);
    }
  }
  for (uint32_t p = 0; p < kPer; ++p) {
    if (tab(p) != kUncoded && !(nonzero & (1u << p))) bad = 1;
  }
  return !bad && x == kSeqLaneRansLow && r.read == nwords && e == nesc;
}

// Encodes a group's symbols q [tokens][dim] (dim = 16 kPer <= 128): table[c]
// is the signed model's table of component c (used only when the component
// has a non-zero symbol), cum the model's rows [classes][kSeqSignedRowStride].
inline std::vector<uint8_t> Encode(const int32_t* q, uint32_t tokens, uint32_t dim, const uint8_t* table,
                                   const uint16_t* cum) {
  using namespace seqkv::internal;
  Header h{};
  std::memset(h.table, kUncoded, sizeof h.table);
  for (uint32_t c = 0; c < dim; ++c) {
    for (uint32_t t = 0; t < tokens; ++t) {
      if (q[size_t{t} * dim + c] != 0) {
        h.table[c] = table[c];
        break;
      }
    }
  }
  std::vector<std::vector<uint16_t>> words(kLanes);
  std::vector<std::vector<uint32_t>> esc(kLanes);
  const uint32_t per = dim / kLanes;
  for (uint32_t j = 0; j < kLanes; ++j) {
    uint32_t x = kSeqLaneRansLow;
    for (uint32_t t = tokens; t-- > 0;) {
      for (uint32_t p = per; p-- > 0;) {
        const uint32_t c = p * kLanes + j;
        if (h.table[c] == kUncoded) continue;
        const int32_t v = q[size_t{t} * dim + c];
        const int s = SeqSignedSymbol(v);
        if (s == kSeqSignedEscapeNeg || s == kSeqSignedEscapePos) esc[j].push_back(static_cast<uint32_t>(v < 0 ? -v : v));
        const uint16_t* row = cum + size_t{h.table[c]} * kSeqSignedRowStride;
        const uint32_t start = row[s], freq = uint32_t{row[s + 1]} - row[s];
        if (x >= (freq << (32 - kSeqLaneScaleBits))) {  // 2^17 freq: one word out keeps x < 2^17 freq
          words[j].push_back(static_cast<uint16_t>(x));
          x >>= 16;
        }
        x = ((x / freq) << kSeqLaneScaleBits) + x % freq + start;
      }
    }
    h.state[j] = x;
    std::reverse(words[j].begin(), words[j].end());
    std::reverse(esc[j].begin(), esc[j].end());
  }
  std::vector<uint8_t> blob(sizeof(Header));
  for (uint32_t j = 0; j < kLanes; ++j) {
    h.words_at[j] = static_cast<uint32_t>(blob.size());
    h.word_count[j] = static_cast<uint32_t>(words[j].size());
    const size_t bytes = (words[j].size() * 2 + 7) / 8 * 8;
    blob.resize(blob.size() + bytes, 0);
    if (!words[j].empty()) std::memcpy(blob.data() + h.words_at[j], words[j].data(), words[j].size() * 2);
  }
  for (uint32_t j = 0; j < kLanes; ++j) {
    h.escapes_at[j] = static_cast<uint32_t>(blob.size());
    h.escape_count[j] = static_cast<uint32_t>(esc[j].size());
    blob.resize(blob.size() + esc[j].size() * 4);
    if (!esc[j].empty()) std::memcpy(blob.data() + h.escapes_at[j], esc[j].data(), esc[j].size() * 4);
  }
  blob.resize((blob.size() + 15) / 16 * 16, 0);
  std::memcpy(blob.data(), &h, sizeof h);
  return blob;
}

// The host decode of a whole group (the same lane loop as the kernel).
template <uint32_t kPer>
inline bool Decode(const std::vector<uint8_t>& blob, uint32_t tokens, const uint16_t* cum, int32_t* q) {
  Header h;
  std::memcpy(&h, blob.data(), sizeof h);
  constexpr uint32_t dim = kPer * kLanes;
  bool ok = true;
  for (uint32_t j = 0; j < kLanes; ++j) {
    // The runs inside the blob (a format's reader would check this once per group).
    if (uint64_t{h.words_at[j]} + (uint64_t{h.word_count[j]} + 3) / 4 * 8 > blob.size() ||
        uint64_t{h.escapes_at[j]} + uint64_t{h.escape_count[j]} * 4 > blob.size()) {
      return false;
    }
    std::vector<uint32_t> esc(h.escape_count[j] + 1);
    if (h.escape_count[j] > 0) std::memcpy(esc.data(), blob.data() + h.escapes_at[j], h.escape_count[j] * 4);
    ok &= DecodeLane<kPer>(
        h, blob.data(), j, tokens, esc.data(),
        [&](uint32_t table, uint32_t slot, uint32_t* start, uint32_t* freq) {
          return seqkv::internal::SeqSignedFind(cum + size_t{table} * seqkv::internal::kSeqSignedRowStride, slot,
                                               start, freq);
        },
        [](const uint2* at, uint32_t i) {
          uint64_t v;
          std::memcpy(&v, at + i, 8);
          return v;
        },
        [&](uint32_t t, uint32_t c, int32_t v) { q[size_t{t} * dim + c] = v; });
  }
  return ok;
}

}  // namespace seqkv::bench::lane_proto

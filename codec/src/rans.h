// rANS entropy coding: a static multi-symbol coder with interleaved lanes and
// an adaptive binary coder, both on 32-bit states renormalized in 16-bit words.
//
// Word-wise renormalization (state in [2^16, 2^32), one u16 word in or out)
// means every symbol moves at most one word, so a GPU warp can decode 32
// lanes in lock-step: a ballot of the lanes that need a word and a prefix
// count give each lane its read offset (docs/format.md, "rANS streams").
//
// Streams, little-endian:
//   [lane states: lanes x u32][words: u16 each]
// The decoder reads the states, then for symbol i (lane i mod lanes) decodes
// and, if its state fell below 2^16, reads the next word. A valid stream
// ends with every lane back at the initial state 2^16 and every word read;
// anything else is DataLoss. Decoding never reads out of bounds and does a
// fixed amount of work per symbol, whatever the input.
//
// Thread safety: tables are immutable values; encoders/decoders are
// single-threaded objects.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "bytes.h"
#include "seqkv/codec/status.h"

namespace seqkv::internal {

inline constexpr uint32_t kRansLow = 1u << 16;  // states live in [kRansLow, 2^32)
inline constexpr int kRansMaxScaleBits = 16;
inline constexpr int kRansMaxLanes = 64;
inline constexpr uint32_t kRansMaxSymbols = 1u << 16;

// A static frequency table: freq[s] / 2^scale_bits is symbol s's probability.
// Present symbols have freq >= 1; the frequencies sum to exactly 2^scale_bits.
struct RansTable {
  int scale_bits = 12;
  std::vector<uint32_t> freq;            // per symbol
  std::vector<uint32_t> cum;             // prefix sums, size freq.size() + 1
  std::vector<uint16_t> slot_to_symbol;  // 2^scale_bits entries (decode lookup)

  uint32_t alphabet() const { return static_cast<uint32_t>(freq.size()); }
};

// Quantizes counts (any scale) to a table with total 2^scale_bits (1..16).
// Deterministic. InvalidArgument if no symbol is present, more symbols are
// present than slots, or the alphabet exceeds kRansMaxSymbols.
Result<RansTable> BuildRansTable(std::span<const uint64_t> counts, int scale_bits);

// Compact form: u8 scale_bits, varint alphabet size, then per symbol a
// varint frequency, where a 0 is followed by a varint (run length - 1) of
// zero-frequency symbols.
void SerializeRansTable(const RansTable& table, std::vector<uint8_t>* out);
// Reads a table written by SerializeRansTable; DataLoss on anything
// inconsistent (bad scale, alphabet over max_alphabet, sum != 2^scale_bits).
Result<RansTable> ParseRansTable(ByteReader* reader, uint32_t max_alphabet);

// Encodes symbols (each < table.alphabet() with freq > 0; InvalidArgument
// otherwise) over `lanes` (1..kRansMaxLanes) interleaved states.
Result<std::vector<uint8_t>> RansEncode(std::span<const uint32_t> symbols, const RansTable& table,
                                        int lanes);
// Decodes exactly out.size() symbols from bytes (the whole stream).
Status RansDecode(std::span<const uint8_t> bytes, const RansTable& table, int lanes,
                  std::span<uint32_t> out);

// Adaptive binary coding. The model (the caller) gives P(bit = 1) in 1/2^16
// units before each bit; the encoder records (bit, p) and encodes in reverse
// at Finish, so the decoder can run forward with the same model.
// p is clamped to [1, 2^16 - 1].
class BinaryRansEncoder {
 public:
  void Put(int bit, uint32_t p1) { bits_.push_back((Clamp(p1) << 1) | (bit & 1)); }
  size_t size() const { return bits_.size(); }
  // One lane: [u32 state][u16 words].
  std::vector<uint8_t> Finish();

  static uint32_t Clamp(uint32_t p1) { return p1 < 1 ? 1 : (p1 > 65535 ? 65535 : p1); }

 private:
  std::vector<uint32_t> bits_;
};

class BinaryRansDecoder {
 public:
  explicit BinaryRansDecoder(std::span<const uint8_t> bytes);
  // Decodes one bit with P(1) = p1 / 2^16. After an error it keeps returning
  // 0 (bounded work) and ok() is false.
  int Get(uint32_t p1) {
    p1 = BinaryRansEncoder::Clamp(p1);
    const uint32_t p0 = 65536 - p1;
    const uint32_t slot = x_ & 0xFFFF;
    int bit;
    if (slot < p0) {
      bit = 0;
      x_ = p0 * (x_ >> 16) + slot;
    } else {
      bit = 1;
      x_ = p1 * (x_ >> 16) + slot - p0;
    }
    if (x_ < kRansLow) {
      if (pos_ + 2 <= bytes_.size()) {
        x_ = (x_ << 16) | bytes_[pos_] | (uint32_t{bytes_[pos_ + 1]} << 8);
        pos_ += 2;
      } else {
        ok_ = false;
        x_ = kRansLow;
      }
    }
    return ok_ ? bit : 0;
  }
  bool ok() const { return ok_; }
  // OK if every bit so far decoded from a consistent stream that is fully
  // consumed (state back at its initial value); DataLoss otherwise.
  Status Finish() const;

 private:
  std::span<const uint8_t> bytes_;
  size_t pos_ = 0;
  uint32_t x_ = kRansLow;
  bool ok_ = true;
};

// LEB128 varint helpers (u64), bounded to 10 bytes.
void PutVarint(uint64_t v, std::vector<uint8_t>* out);
uint64_t GetVarint(ByteReader* reader);  // sets reader not-ok on overrun / overlong

}  // namespace seqkv::internal

// Little bit-level writer and reader (LSB-first within each byte), used by
// the quantizing codecs and the token coder. The reader never reads past its
// buffer: it reports exhaustion through ok().
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

namespace seqkv {

class BitWriter {
 public:
  // Appends the low `bits` (0..32) of value.
  void Put(uint32_t value, int bits) {
    acc_ |= uint64_t{value & Mask(bits)} << fill_;
    fill_ += bits;
    while (fill_ >= 8) {
      out_.push_back(static_cast<uint8_t>(acc_));
      acc_ >>= 8;
      fill_ -= 8;
    }
  }
  // Flushes the partial byte (zero padded) and returns the bytes.
  std::vector<uint8_t> Finish() {
    if (fill_ > 0) out_.push_back(static_cast<uint8_t>(acc_));
    acc_ = 0;
    fill_ = 0;
    return std::move(out_);
  }

 private:
  static uint32_t Mask(int bits) { return bits >= 32 ? 0xFFFFFFFFu : ((1u << bits) - 1u); }
  std::vector<uint8_t> out_;
  uint64_t acc_ = 0;
  int fill_ = 0;
};

class BitReader {
 public:
  explicit BitReader(std::span<const uint8_t> data) : data_(data) {}

  // Reads `bits` (0..32). Past the end it returns 0 and ok() becomes false.
  uint32_t Get(int bits) {
    while (fill_ < bits) {
      if (pos_ >= data_.size()) {
        ok_ = false;
        return 0;
      }
      acc_ |= uint64_t{data_[pos_++]} << fill_;
      fill_ += 8;
    }
    uint32_t value = static_cast<uint32_t>(acc_ & (bits >= 32 ? 0xFFFFFFFFull : ((1ull << bits) - 1)));
    acc_ >>= bits;
    fill_ -= bits;
    return value;
  }
  bool ok() const { return ok_; }
  // Bytes consumed so far (including a partially read byte).
  size_t bytes_consumed() const { return pos_; }

 private:
  std::span<const uint8_t> data_;
  size_t pos_ = 0;
  uint64_t acc_ = 0;
  int fill_ = 0;
  bool ok_ = true;
};

// Bytes needed for n values of `bits` each.
inline size_t PackedBytes(uint64_t n, int bits) { return static_cast<size_t>((n * bits + 7) / 8); }

}  // namespace seqkv

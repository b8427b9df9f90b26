#include "rans.h"

#include <algorithm>
#include <queue>

namespace seqkv::internal {

void PutVarint(uint64_t v, std::vector<uint8_t>* out) {
  while (v >= 0x80) {
    out->push_back(static_cast<uint8_t>(v | 0x80));
    v >>= 7;
  }
  out->push_back(static_cast<uint8_t>(v));
}

uint64_t GetVarint(ByteReader* reader) {
  uint64_t v = 0;
  for (int i = 0; i < 10; ++i) {
    uint8_t b = reader->U8();
    if (!reader->ok()) return 0;
    v |= uint64_t{b & 0x7Fu} << (7 * i);
    if ((b & 0x80) == 0) return v;
  }
  (void)reader->Bytes(reader->remaining() + 1);  // overlong: poison the reader
  return 0;
}

namespace {

Status FinishTable(RansTable* t) {
  const uint32_t total = 1u << t->scale_bits;
  t->cum.assign(t->freq.size() + 1, 0);
  for (size_t s = 0; s < t->freq.size(); ++s) t->cum[s + 1] = t->cum[s] + t->freq[s];
  if (t->cum.back() != total) return DataLoss("rans table: frequencies do not sum to 2^scale");
  t->slot_to_symbol.assign(total, 0);
  for (size_t s = 0; s < t->freq.size(); ++s) {
    std::fill(t->slot_to_symbol.begin() + t->cum[s], t->slot_to_symbol.begin() + t->cum[s + 1],
              static_cast<uint16_t>(s));
  }
  return Status::Ok();
}

}  // namespace

Result<RansTable> BuildRansTable(std::span<const uint64_t> counts, int scale_bits) {
  if (scale_bits < 1 || scale_bits > kRansMaxScaleBits) return InvalidArgument("rans: bad scale_bits");
  if (counts.size() > kRansMaxSymbols) return InvalidArgument("rans: alphabet too large");
  const uint64_t total = 1ull << scale_bits;
  uint64_t sum = 0, present = 0;
  for (uint64_t c : counts) {
    sum += c;
    present += c > 0;
  }
  if (present == 0) return InvalidArgument("rans: no symbol present");
  if (present > total) return InvalidArgument("rans: more symbols than slots");
  RansTable t;
  t.scale_bits = scale_bits;
  t.freq.assign(counts.size(), 0);
  int64_t assigned = 0;
  for (size_t s = 0; s < counts.size(); ++s) {
    if (counts[s] == 0) continue;
    // Round to nearest in 128-bit-safe arithmetic (counts * 2^16 fits u64 for sane inputs).
    unsigned __int128 scaled = (static_cast<unsigned __int128>(counts[s]) * total * 2 + sum) / (2 * sum);
    uint64_t f = std::max<uint64_t>(1, static_cast<uint64_t>(scaled));
    t.freq[s] = static_cast<uint32_t>(std::min<uint64_t>(f, total));
    assigned += t.freq[s];
  }
  int64_t excess = assigned - static_cast<int64_t>(total);
  if (excess > 0) {
    // Take from the largest frequencies (ties: lowest symbol), never below 1.
    auto cmp = [&](uint32_t a, uint32_t b) {
      return t.freq[a] != t.freq[b] ? t.freq[a] < t.freq[b] : a > b;
    };
    std::priority_queue<uint32_t, std::vector<uint32_t>, decltype(cmp)> heap(cmp);
    for (uint32_t s = 0; s < t.freq.size(); ++s) {
      if (t.freq[s] > 1) heap.push(s);
    }
    while (excess > 0) {
      uint32_t s = heap.top();
      heap.pop();
      --t.freq[s];
      --excess;
      if (t.freq[s] > 1) heap.push(s);
    }
  } else if (excess < 0) {
    // Give the deficit to the most frequent symbol (lowest on ties).
    uint32_t best = 0;
    for (uint32_t s = 1; s < t.freq.size(); ++s) {
      if (counts[s] > counts[best]) best = s;
    }
    t.freq[best] += static_cast<uint32_t>(-excess);
  }
  Status st = FinishTable(&t);
  if (!st.ok()) return Internal(st.message());
  return t;
}

void SerializeRansTable(const RansTable& table, std::vector<uint8_t>* out) {
  out->push_back(static_cast<uint8_t>(table.scale_bits));
  PutVarint(table.freq.size(), out);
  for (size_t s = 0; s < table.freq.size();) {
    if (table.freq[s] != 0) {
      PutVarint(table.freq[s], out);
      ++s;
      continue;
    }
    size_t run = 0;
    while (s + run < table.freq.size() && table.freq[s + run] == 0) ++run;
    PutVarint(0, out);
    PutVarint(run - 1, out);
    s += run;
  }
}

Result<RansTable> ParseRansTable(ByteReader* r, uint32_t max_alphabet) {
  RansTable t;
  t.scale_bits = r->U8();
  if (!r->ok() || t.scale_bits < 1 || t.scale_bits > kRansMaxScaleBits) {
    return DataLoss("rans table: bad scale");
  }
  const uint64_t total = 1ull << t.scale_bits;
  uint64_t n = GetVarint(r);
  if (!r->ok() || n == 0 || n > max_alphabet || n > kRansMaxSymbols) {
    return DataLoss("rans table: bad alphabet size");
  }
  t.freq.assign(n, 0);
  uint64_t sum = 0;
  for (uint64_t s = 0; s < n;) {
    uint64_t f = GetVarint(r);
    if (!r->ok()) return DataLoss("rans table: truncated");
    if (f != 0) {
      if (f > total) return DataLoss("rans table: frequency too large");
      t.freq[s++] = static_cast<uint32_t>(f);
      sum += f;
      if (sum > total) return DataLoss("rans table: frequencies exceed 2^scale");
      continue;
    }
    uint64_t run = GetVarint(r);
    if (!r->ok() || run >= n - s) return DataLoss("rans table: bad zero run");
    s += run + 1;
  }
  if (sum != total) return DataLoss("rans table: frequencies do not sum to 2^scale");
  SEQKV_RETURN_IF_ERROR(FinishTable(&t));
  return t;
}

Result<std::vector<uint8_t>> RansEncode(std::span<const uint32_t> symbols, const RansTable& table,
                                        int lanes) {
  if (lanes < 1 || lanes > kRansMaxLanes) return InvalidArgument("rans: bad lane count");
  const int scale = table.scale_bits;
  std::vector<uint32_t> state(lanes, kRansLow);
  std::vector<uint16_t> words;  // in encode order (reverse of decode order)
  words.reserve(symbols.size() / 2 + 16);
  for (size_t i = symbols.size(); i-- > 0;) {
    const uint32_t s = symbols[i];
    if (s >= table.alphabet() || table.freq[s] == 0) {
      return InvalidArgument("rans: symbol " + std::to_string(s) + " not in the table");
    }
    const uint32_t f = table.freq[s];
    uint32_t& x = state[i % lanes];
    const uint64_t x_max = uint64_t{f} << (32 - scale);
    if (x >= x_max) {
      words.push_back(static_cast<uint16_t>(x));
      x >>= 16;
    }
    x = ((x / f) << scale) + (x % f) + table.cum[s];
  }
  std::vector<uint8_t> out;
  out.reserve(4 * lanes + 2 * words.size());
  for (int l = 0; l < lanes; ++l) {
    for (int b = 0; b < 4; ++b) out.push_back(static_cast<uint8_t>(state[l] >> (8 * b)));
  }
  for (size_t i = words.size(); i-- > 0;) {
    out.push_back(static_cast<uint8_t>(words[i]));
    out.push_back(static_cast<uint8_t>(words[i] >> 8));
  }
  return out;
}

Status RansDecode(std::span<const uint8_t> bytes, const RansTable& table, int lanes,
                  std::span<uint32_t> out) {
  if (lanes < 1 || lanes > kRansMaxLanes) return InvalidArgument("rans: bad lane count");
  if (table.slot_to_symbol.size() != (size_t{1} << table.scale_bits)) {
    return InvalidArgument("rans: table not finished");
  }
  const size_t header = 4 * static_cast<size_t>(lanes);
  if (bytes.size() < header || (bytes.size() - header) % 2 != 0) {
    return DataLoss("rans: stream has a bad length");
  }
  uint32_t state[kRansMaxLanes];
  for (int l = 0; l < lanes; ++l) {
    uint32_t x = 0;
    for (int b = 0; b < 4; ++b) x |= uint32_t{bytes[4 * l + b]} << (8 * b);
    if (x < kRansLow) return DataLoss("rans: bad initial state");
    state[l] = x;
  }
  const int scale = table.scale_bits;
  const uint32_t mask = (1u << scale) - 1;
  size_t pos = header;
  const size_t end = bytes.size();
  int lane = 0;
  for (size_t i = 0; i < out.size(); ++i) {
    uint32_t x = state[lane];
    const uint32_t slot = x & mask;
    const uint32_t s = table.slot_to_symbol[slot];
    x = table.freq[s] * (x >> scale) + slot - table.cum[s];
    if (x < kRansLow) {
      if (pos + 2 > end) return DataLoss("rans: stream truncated");
      x = (x << 16) | bytes[pos] | (uint32_t{bytes[pos + 1]} << 8);
      pos += 2;
    }
    state[lane] = x;
    out[i] = s;
    if (++lane == lanes) lane = 0;
  }
  if (pos != end) return DataLoss("rans: trailing bytes in stream");
  for (int l = 0; l < lanes; ++l) {
    if (state[l] != kRansLow) return DataLoss("rans: final state mismatch (corrupt stream)");
  }
  return Status::Ok();
}

std::vector<uint8_t> BinaryRansEncoder::Finish() {
  uint32_t x = kRansLow;
  std::vector<uint16_t> words;
  words.reserve(bits_.size() / 8 + 8);
  for (size_t i = bits_.size(); i-- > 0;) {
    const uint32_t p1 = bits_[i] >> 1;
    const int bit = bits_[i] & 1;
    const uint32_t f = bit ? p1 : 65536 - p1;
    const uint32_t start = bit ? 65536 - p1 : 0;
    const uint64_t x_max = uint64_t{f} << 16;
    if (x >= x_max) {
      words.push_back(static_cast<uint16_t>(x));
      x >>= 16;
    }
    x = ((x / f) << 16) + (x % f) + start;
  }
  bits_.clear();
  std::vector<uint8_t> out;
  out.reserve(4 + 2 * words.size());
  for (int b = 0; b < 4; ++b) out.push_back(static_cast<uint8_t>(x >> (8 * b)));
  for (size_t i = words.size(); i-- > 0;) {
    out.push_back(static_cast<uint8_t>(words[i]));
    out.push_back(static_cast<uint8_t>(words[i] >> 8));
  }
  return out;
}

BinaryRansDecoder::BinaryRansDecoder(std::span<const uint8_t> bytes) : bytes_(bytes) {
  if (bytes.size() < 4 || bytes.size() % 2 != 0) {
    ok_ = false;
    return;
  }
  uint32_t x = 0;
  for (int b = 0; b < 4; ++b) x |= uint32_t{bytes[b]} << (8 * b);
  if (x < kRansLow) {
    ok_ = false;
    return;
  }
  x_ = x;
  pos_ = 4;
}

Status BinaryRansDecoder::Finish() const {
  if (!ok_) return DataLoss("binary rans: stream truncated or malformed");
  if (pos_ != bytes_.size()) return DataLoss("binary rans: trailing bytes in stream");
  if (x_ != kRansLow) return DataLoss("binary rans: final state mismatch (corrupt stream)");
  return Status::Ok();
}

}  // namespace seqkv::internal

#include "lossless_rans.h"

#include <algorithm>

#include "bytes.h"
#include "lossless_rans_normalize.h"

namespace seqkv::internal {

void LrNormalize(const uint64_t counts[256], uint64_t total, uint32_t freq[256]) {
  LrNormalizeCounts(counts, total, kLrTotal, freq);
}

namespace {

struct Table {
  uint32_t freq[256];
  uint32_t cum[256];
};

// Table area of one layer: u16 n, n x u8 symbol (ascending), n x u16 frequency.
void WriteTable(ByteWriter* w, const uint32_t freq[256]) {
  uint16_t n = 0;
  for (int s = 0; s < 256; ++s) n = static_cast<uint16_t>(n + (freq[s] != 0));
  w->U16(n);
  for (int s = 0; s < 256; ++s) {
    if (freq[s]) w->U8(static_cast<uint8_t>(s));
  }
  for (int s = 0; s < 256; ++s) {
    if (freq[s]) w->U16(static_cast<uint16_t>(freq[s]));
  }
}

void Cumulate(Table* t) {
  uint32_t c = 0;
  for (int s = 0; s < 256; ++s) {
    t->cum[s] = c;
    c += t->freq[s];
  }
}

// Encodes one block into `out` (32 u32 states, then the words, padded to an
// even count with a zero word).
void EncodeBlock(const uint8_t* sym, uint32_t n, const Table& t, ByteWriter* w) {
  uint32_t x[kLrLanes];
  for (uint32_t l = 0; l < kLrLanes; ++l) x[l] = kLrLow;
  // The decoder reads, at each step, the words of the lanes that renormalize
  // in lane order, steps ascending; encoding runs backwards, so collect them
  // reversed (lanes descending within a step, steps descending) and flip.
  std::vector<uint16_t> rev;
  rev.reserve(n / 2 + 16);
  const uint32_t steps = (n + kLrLanes - 1) / kLrLanes;
  for (uint32_t step = steps; step-- > 0;) {
    for (uint32_t lane = kLrLanes; lane-- > 0;) {
      const uint32_t i = step * kLrLanes + lane;
      if (i >= n) continue;
      const uint32_t f = t.freq[sym[i]];
      uint32_t& s = x[lane];
      if (uint64_t{s} >= (uint64_t{kLrLow >> kLrScaleBits} << 16) * f) {
        rev.push_back(static_cast<uint16_t>(s));
        s >>= 16;
      }
      s = ((s / f) << kLrScaleBits) + (s % f) + t.cum[sym[i]];
    }
  }
  for (uint32_t l = 0; l < kLrLanes; ++l) w->U32(x[l]);
  for (size_t i = rev.size(); i-- > 0;) w->U16(rev[i]);
  if (rev.size() % 2) w->U16(0);
}

}  // namespace

uint64_t LrMaxPlaneBytes(uint32_t layers, uint64_t per_layer) {
  const uint64_t blocks = layers * LrBlocksOf(per_layer);
  // Tables, padding, directory, states, at most one word per symbol plus a pad word per block.
  return uint64_t{layers} * (2 + 3 * 256) + 4 + blocks * (4 + kLrBlockHeaderBytes + 2) + 2 * per_layer * layers;
}

std::vector<uint8_t> LrEncodePlane(const uint8_t* symbols, uint32_t layers, uint64_t per_layer) {
  std::vector<uint8_t> out;
  ByteWriter w(&out);
  std::vector<Table> tables(layers);
  for (uint32_t l = 0; l < layers; ++l) {
    uint64_t counts[256] = {};
    const uint8_t* p = symbols + l * per_layer;
    for (uint64_t i = 0; i < per_layer; ++i) ++counts[p[i]];
    if (per_layer == 0) {
      std::fill(tables[l].freq, tables[l].freq + 256, 0u);
    } else {
      LrNormalize(counts, per_layer, tables[l].freq);
    }
    Cumulate(&tables[l]);
    WriteTable(&w, tables[l].freq);
  }
  while (out.size() % 4) w.U8(0);
  const uint64_t per_layer_blocks = LrBlocksOf(per_layer);
  const size_t directory = out.size();
  out.resize(out.size() + 4 * layers * per_layer_blocks);
  std::vector<uint8_t> data;
  ByteWriter dw(&data);
  size_t b = 0;
  for (uint32_t l = 0; l < layers; ++l) {
    for (uint64_t k = 0; k < per_layer_blocks; ++k, ++b) {
      const uint64_t begin = k * kLrBlockSymbols;
      const uint32_t n = static_cast<uint32_t>(std::min<uint64_t>(kLrBlockSymbols, per_layer - begin));
      EncodeBlock(symbols + l * per_layer + begin, n, tables[l], &dw);
      const uint32_t end = static_cast<uint32_t>(data.size());
      for (int i = 0; i < 4; ++i) out[directory + 4 * b + i] = static_cast<uint8_t>(end >> (8 * i));
    }
  }
  out.insert(out.end(), data.begin(), data.end());
  return out;
}

Status LrDecodePlane(std::span<const uint8_t> section, uint32_t layers, uint64_t per_layer, uint8_t* out) {
  ByteReader r(section);
  std::vector<Table> tables(layers);
  for (uint32_t l = 0; l < layers; ++l) {
    Table& t = tables[l];
    std::fill(t.freq, t.freq + 256, 0u);
    const uint16_t n = r.U16();
    if (!r.ok() || n > 256 || (n == 0) != (per_layer == 0)) return DataLoss("lossless: bad rANS table size");
    std::span<const uint8_t> syms = r.Bytes(n);
    uint32_t sum = 0;
    for (uint32_t i = 0; i < n && r.ok(); ++i) {
      const uint16_t f = r.U16();
      if (f == 0 || (i > 0 && syms[i] <= syms[i - 1])) return DataLoss("lossless: bad rANS table");
      t.freq[syms[i]] = f;
      sum += f;
    }
    if (!r.ok() || (n > 0 && sum != kLrTotal)) return DataLoss("lossless: bad rANS table");
    Cumulate(&t);
  }
  while (r.pos() % 4) {
    if (r.U8() != 0 || !r.ok()) return DataLoss("lossless: bad rANS table padding");
  }
  const uint64_t per_layer_blocks = LrBlocksOf(per_layer);
  const uint64_t blocks = uint64_t{layers} * per_layer_blocks;
  if (r.remaining() / 4 < blocks) return DataLoss("lossless: rANS block directory truncated");
  std::vector<uint32_t> ends(blocks);
  for (uint64_t b = 0; b < blocks; ++b) ends[b] = r.U32();
  std::span<const uint8_t> data = section.subspan(r.pos());
  if (blocks > 0 && ends.back() != data.size()) return DataLoss("lossless: rANS data size mismatch");
  if (blocks == 0 && !data.empty()) return DataLoss("lossless: trailing bytes in coded plane");
  uint64_t b = 0;
  uint32_t begin = 0;
  for (uint32_t l = 0; l < layers; ++l) {
    const Table& t = tables[l];
    // slot -> symbol
    std::vector<uint8_t> lookup(kLrTotal);
    for (int s = 0; s < 256; ++s) {
      for (uint32_t k = 0; k < t.freq[s]; ++k) lookup[t.cum[s] + k] = static_cast<uint8_t>(s);
    }
    for (uint64_t k = 0; k < per_layer_blocks; ++k, ++b) {
      const uint32_t end = ends[b];
      if (end < begin || end - begin < kLrBlockHeaderBytes || (end - begin) % 4 != 0) {
        return DataLoss("lossless: bad rANS block directory");
      }
      ByteReader br(data.subspan(begin, end - begin));
      const uint32_t words = (end - begin - kLrBlockHeaderBytes) / 2;
      uint32_t x[kLrLanes];
      for (uint32_t lane = 0; lane < kLrLanes; ++lane) {
        x[lane] = br.U32();
        if (x[lane] < kLrLow) return DataLoss("lossless: bad rANS state");
      }
      const uint8_t* w = data.data() + begin + kLrBlockHeaderBytes;
      uint32_t pos = 0;
      const uint64_t first = k * kLrBlockSymbols;
      const uint32_t n = static_cast<uint32_t>(std::min<uint64_t>(kLrBlockSymbols, per_layer - first));
      uint8_t* dst = out + l * per_layer + first;
      for (uint32_t i = 0; i < n; ++i) {
        uint32_t& s = x[i % kLrLanes];
        const uint32_t slot = s & (kLrTotal - 1);
        const uint8_t sym = lookup[slot];
        s = t.freq[sym] * (s >> kLrScaleBits) + slot - t.cum[sym];
        if (s < kLrLow) {
          if (pos >= words) return DataLoss("lossless: rANS block truncated");
          s = (s << 16) | (w[2 * pos] | (uint32_t{w[2 * pos + 1]} << 8));
          ++pos;
        }
        dst[i] = sym;
      }
      for (uint32_t lane = 0; lane < kLrLanes; ++lane) {
        if (x[lane] != kLrLow) return DataLoss("lossless: rANS final state mismatch (corrupt block)");
      }
      // Exactly the encoder's words, plus one zero pad word when their count is odd.
      const bool padded = pos % 2 == 1;
      if (words != pos + (padded ? 1 : 0) || (padded && (w[2 * pos] | w[2 * pos + 1]) != 0)) {
        return DataLoss("lossless: rANS block has trailing words");
      }
      begin = end;
    }
  }
  return Status::Ok();
}

}  // namespace seqkv::internal

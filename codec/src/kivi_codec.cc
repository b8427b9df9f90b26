// kivi: KIVI asymmetric integer quantization (Liu et al., arXiv 2402.02750),
// as the baseline of the reference table in shared/kvdata/README.md (no
// full-precision residual window: every token is quantized).
//
// What: keys are quantized per channel over groups of `group` tokens (the
// key outliers live in fixed channels, so a channel shares one range), values
// per token over groups of `vgroup` channels. Each group stores its minimum
// and step as fp16 and every element a B-bit integer:
//   x_hat = min + q * scale,  q = clamp(floor((x - min) / scale + 0.5), 0, 2^B - 1)
// (float arithmetic; q = 0 when scale == 0). For B = 4, d = 64, group = 32:
// K costs 4 + 32/32 bits, V 4 + 32/64, 4.75 bits per element on average.
//
// Stats, chosen so the stored fp16 values cover the group's [lo, hi]:
//   min   = lo rounded to fp16, stepped down one fp16 ulp if that exceeds lo;
//   scale = (hi - min) / (2^B - 1) rounded to fp16, stepped up one ulp at a
//           time while min + (2^B - 1) * scale < hi (in float).
// So no element clamps and |x - x_hat| <= scale / 2 (plus float rounding);
// a constant group exactly representable in fp16 gets scale 0 and is exact.
// A last partial group (tokens not a multiple of `group`, head_dim not a
// multiple of `vgroup`) is quantized with its own stats.
//
// Parameters (canonical spec "kivi:bits=B,group=G,vgroup=V"):
//   bits    1..8, default 4
//   group   key group length in tokens, 1..2^20, default 32
//   vgroup  value group length in channels, 0..4096, default 0 = the whole
//           head (a value >= head_dim means the same)
//
// Sections (in this order):
//   1 K stats  (fp16 min, fp16 scale) little-endian pairs in [layer, head,
//              token group, channel] order: L*H*ceil(T/G)*d*4 bytes
//   2 K codes  B-bit q of every element in [layer, head, token, channel]
//              order, bit-packed LSB-first (BitWriter), zero-padded to a byte:
//              ceil(L*H*T*d*B / 8) bytes
//   3 V stats  (min, scale) pairs in [layer, head, token, channel group]
//              order: L*H*T*ceil(d/V)*4 bytes
//   4 V codes  as K codes.
// Decode checks every length exactly, zero padding bits, and that each min is
// finite and each scale finite and non-negative, and returns DataLoss
// otherwise. Encode rejects NaN/Inf inputs and groups whose min or scale do
// not fit fp16 (|x| beyond ~65504) with InvalidArgument.
//
// Thread safety: the codec is immutable; Encode and Decode are const.
#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "builtin_codecs.h"
#include "seqkv/codec/bitpack.h"
#include "seqkv/codec/dtype.h"

namespace seqkv::internal {

namespace {

enum KiviSection : uint32_t { kKStats = 1, kKCodes = 2, kVStats = 3, kVCodes = 4 };

bool IsFiniteHalf(uint16_t h) { return (h & 0x7C00u) != 0x7C00u; }

// The largest fp16 <= x, or an infinity when there is none.
uint16_t HalfAtOrBelow(float x) {
  uint16_t h = FloatToHalf(x);
  if (HalfToFloat(h) <= x) return h;
  if (h == 0x0000u || h == 0x8000u) return 0x8001u;  // +-0 above x < 0: the smallest negative
  return (h & 0x8000u) ? static_cast<uint16_t>(h + 1) : static_cast<uint16_t>(h - 1);
}

struct Stats {
  float min = 0;
  float scale = 0;
};

// Stats of a group with range [lo, hi]; false if they do not fit fp16.
bool MakeStats(float lo, float hi, int bits, uint16_t* min16, uint16_t* scale16) {
  const float max_q = static_cast<float>((1u << bits) - 1);
  *min16 = HalfAtOrBelow(lo);
  if (!IsFiniteHalf(*min16)) return false;
  const float min = HalfToFloat(*min16);
  *scale16 = FloatToHalf((hi - min) / max_q);
  while (IsFiniteHalf(*scale16) && min + max_q * HalfToFloat(*scale16) < hi) ++*scale16;
  return IsFiniteHalf(*scale16);
}

uint32_t QuantizeOne(float x, const Stats& s, uint32_t max_q) {
  if (s.scale == 0) return 0;
  const float q = std::floor((x - s.min) / s.scale + 0.5f);
  if (!(q > 0)) return 0;
  return q >= static_cast<float>(max_q) ? max_q : static_cast<uint32_t>(q);
}

void PutStats(std::vector<uint8_t>* out, uint16_t min16, uint16_t scale16) {
  out->push_back(static_cast<uint8_t>(min16));
  out->push_back(static_cast<uint8_t>(min16 >> 8));
  out->push_back(static_cast<uint8_t>(scale16));
  out->push_back(static_cast<uint8_t>(scale16 >> 8));
}

// Reads the pair at `index` (bounds checked by the caller); false if invalid.
bool GetStats(std::span<const uint8_t> data, uint64_t index, Stats* s) {
  const uint8_t* p = data.data() + index * 4;
  const uint16_t min16 = static_cast<uint16_t>(p[0] | (p[1] << 8));
  const uint16_t scale16 = static_cast<uint16_t>(p[2] | (p[3] << 8));
  if (!IsFiniteHalf(min16) || !IsFiniteHalf(scale16) || (scale16 & 0x8000u)) return false;
  s->min = HalfToFloat(min16);
  s->scale = HalfToFloat(scale16);
  return true;
}

bool PaddingBitsZero(std::span<const uint8_t> data, uint64_t bits) {
  if (bits % 8 == 0 || data.empty()) return true;
  return (data.back() >> (bits % 8)) == 0;
}

uint64_t CeilDiv(uint64_t a, uint64_t b) { return (a + b - 1) / b; }

class KiviCodec final : public Codec {
 public:
  KiviCodec(int bits, uint32_t group, uint32_t vgroup) : bits_(bits), group_(group), vgroup_(vgroup) {}

  CodecId id() const override { return CodecId::kKivi; }

  std::string Spec() const override {
    return "kivi:bits=" + std::to_string(bits_) + ",group=" + std::to_string(group_) +
           ",vgroup=" + std::to_string(vgroup_);
  }

  Status Encode(const Chunk& chunk, std::vector<Section>* sections) const override {
    Section k_stats{kKStats, {}}, k_codes{kKCodes, {}}, v_stats{kVStats, {}}, v_codes{kVCodes, {}};
    SEQKV_RETURN_IF_ERROR(EncodeKeys(chunk, &k_stats, &k_codes).WithContext("kivi: K"));
    SEQKV_RETURN_IF_ERROR(EncodeValues(chunk, &v_stats, &v_codes).WithContext("kivi: V"));
    sections->clear();
    sections->push_back(std::move(k_stats));
    sections->push_back(std::move(k_codes));
    sections->push_back(std::move(v_stats));
    sections->push_back(std::move(v_codes));
    return Status::Ok();
  }

  Status Decode(std::span<const SectionView> sections, Chunk* chunk) const override {
    const KvShape& shape = chunk->shape;
    if (sections.size() != 4) {
      return DataLoss("kivi: " + std::to_string(sections.size()) + " sections, expected 4");
    }
    for (size_t i = 0; i < 4; ++i) {
      if (sections[i].type != i + 1) {
        return DataLoss("kivi: section " + std::to_string(i) + " has type " +
                        std::to_string(sections[i].type) + ", expected " + std::to_string(i + 1));
      }
    }
    const uint64_t slabs = uint64_t{shape.layers} * shape.kv_heads;
    const uint64_t k_stat_bytes = slabs * CeilDiv(shape.tokens, group_) * shape.head_dim * 4;
    const uint64_t v_stat_bytes = slabs * shape.tokens * CeilDiv(shape.head_dim, ValueGroup(shape)) * 4;
    const uint64_t code_bits = shape.elements() * bits_;
    const uint64_t expected[4] = {k_stat_bytes, PackedBytes(code_bits, 1), v_stat_bytes,
                                  PackedBytes(code_bits, 1)};
    for (size_t i = 0; i < 4; ++i) {
      if (sections[i].data.size() != expected[i]) {
        return DataLoss("kivi: section " + std::to_string(i + 1) + " is " +
                        std::to_string(sections[i].data.size()) + " bytes, expected " +
                        std::to_string(expected[i]));
      }
    }
    if (!PaddingBitsZero(sections[1].data, code_bits) || !PaddingBitsZero(sections[3].data, code_bits)) {
      return DataLoss("kivi: nonzero padding bits after the codes");
    }
    chunk->k.assign(chunk->TensorBytes(), 0);
    chunk->v.assign(chunk->TensorBytes(), 0);
    SEQKV_RETURN_IF_ERROR(DecodeTensor(sections[0].data, sections[1].data, /*keys=*/true, chunk, &chunk->k)
                              .WithContext("kivi: K"));
    SEQKV_RETURN_IF_ERROR(DecodeTensor(sections[2].data, sections[3].data, /*keys=*/false, chunk, &chunk->v)
                              .WithContext("kivi: V"));
    return Status::Ok();
  }

 private:
  uint32_t ValueGroup(const KvShape& shape) const {
    return vgroup_ == 0 ? shape.head_dim : std::min(vgroup_, shape.head_dim);
  }
  uint32_t MaxQ() const { return (1u << bits_) - 1; }

  static Status CheckFinite(const std::vector<float>& slab) {
    for (float x : slab) {
      if (!std::isfinite(x)) return InvalidArgument("non-finite value (NaN or Inf) in the input");
    }
    return Status::Ok();
  }

  Status EncodeKeys(const Chunk& chunk, Section* stats_out, Section* codes_out) const {
    const KvShape& shape = chunk.shape;
    const uint32_t d = shape.head_dim;
    const uint64_t slab_elements = uint64_t{shape.tokens} * d;
    const uint64_t groups = CeilDiv(shape.tokens, group_);
    std::vector<float> slab(slab_elements);
    std::vector<Stats> stats(groups * d);
    BitWriter codes;
    for (uint64_t s = 0; s < uint64_t{shape.layers} * shape.kv_heads; ++s) {
      ToFloat(chunk.dtype, chunk.k.data() + s * slab_elements * DTypeSize(chunk.dtype), slab_elements,
              slab.data());
      SEQKV_RETURN_IF_ERROR(CheckFinite(slab));
      for (uint64_t g = 0; g < groups; ++g) {
        const uint64_t t0 = g * group_;
        const uint64_t t1 = std::min<uint64_t>(shape.tokens, t0 + group_);
        for (uint32_t c = 0; c < d; ++c) {
          float lo = slab[t0 * d + c], hi = lo;
          for (uint64_t t = t0 + 1; t < t1; ++t) {
            lo = std::min(lo, slab[t * d + c]);
            hi = std::max(hi, slab[t * d + c]);
          }
          uint16_t min16, scale16;
          if (!MakeStats(lo, hi, bits_, &min16, &scale16)) {
            return InvalidArgument("group range [" + std::to_string(lo) + ", " + std::to_string(hi) +
                                   "] does not fit fp16 stats");
          }
          PutStats(&stats_out->data, min16, scale16);
          stats[g * d + c] = {HalfToFloat(min16), HalfToFloat(scale16)};
        }
      }
      for (uint64_t t = 0; t < shape.tokens; ++t) {
        const Stats* row_stats = &stats[(t / group_) * d];
        for (uint32_t c = 0; c < d; ++c) codes.Put(QuantizeOne(slab[t * d + c], row_stats[c], MaxQ()), bits_);
      }
    }
    codes_out->data = codes.Finish();
    return Status::Ok();
  }

  Status EncodeValues(const Chunk& chunk, Section* stats_out, Section* codes_out) const {
    const KvShape& shape = chunk.shape;
    const uint32_t d = shape.head_dim;
    const uint32_t vg = ValueGroup(shape);
    const uint64_t slab_elements = uint64_t{shape.tokens} * d;
    std::vector<float> slab(slab_elements);
    BitWriter codes;
    for (uint64_t s = 0; s < uint64_t{shape.layers} * shape.kv_heads; ++s) {
      ToFloat(chunk.dtype, chunk.v.data() + s * slab_elements * DTypeSize(chunk.dtype), slab_elements,
              slab.data());
      SEQKV_RETURN_IF_ERROR(CheckFinite(slab));
      for (uint64_t t = 0; t < shape.tokens; ++t) {
        const float* row = &slab[t * d];
        for (uint32_t c0 = 0; c0 < d; c0 += vg) {
          const uint32_t c1 = std::min(d, c0 + vg);
          const auto [lo, hi] = std::minmax_element(row + c0, row + c1);
          uint16_t min16, scale16;
          if (!MakeStats(*lo, *hi, bits_, &min16, &scale16)) {
            return InvalidArgument("group range [" + std::to_string(*lo) + ", " + std::to_string(*hi) +
                                   "] does not fit fp16 stats");
          }
          PutStats(&stats_out->data, min16, scale16);
          const Stats st{HalfToFloat(min16), HalfToFloat(scale16)};
          for (uint32_t c = c0; c < c1; ++c) codes.Put(QuantizeOne(row[c], st, MaxQ()), bits_);
        }
      }
    }
    codes_out->data = codes.Finish();
    return Status::Ok();
  }

  // Section lengths were checked against the shape, so every read is in bounds.
  Status DecodeTensor(std::span<const uint8_t> stats_data, std::span<const uint8_t> codes_data, bool keys,
                      const Chunk* chunk, std::vector<uint8_t>* tensor) const {
    const KvShape& shape = chunk->shape;
    const uint32_t d = shape.head_dim;
    const uint32_t vg = ValueGroup(shape);
    const uint64_t slab_elements = uint64_t{shape.tokens} * d;
    const uint64_t k_groups = CeilDiv(shape.tokens, group_);
    const uint64_t v_groups = CeilDiv(d, vg);
    std::vector<float> slab(slab_elements);
    std::vector<Stats> stats(keys ? k_groups * d : v_groups);
    BitReader codes(codes_data);
    uint64_t stat_index = 0;
    for (uint64_t s = 0; s < uint64_t{shape.layers} * shape.kv_heads; ++s) {
      if (keys) {
        for (Stats& st : stats) {
          if (!GetStats(stats_data, stat_index++, &st)) return DataLoss("invalid group stats");
        }
      }
      for (uint64_t t = 0; t < shape.tokens; ++t) {
        const Stats* row_stats;
        if (keys) {
          row_stats = &stats[(t / group_) * d];
        } else {
          for (Stats& st : stats) {
            if (!GetStats(stats_data, stat_index++, &st)) return DataLoss("invalid group stats");
          }
          row_stats = stats.data();
        }
        float* row = &slab[t * d];
        for (uint32_t c = 0; c < d; ++c) {
          const Stats& st = keys ? row_stats[c] : row_stats[c / vg];
          row[c] = st.min + static_cast<float>(codes.Get(bits_)) * st.scale;
        }
      }
      FromFloat(chunk->dtype, slab.data(), slab_elements,
                tensor->data() + s * slab_elements * DTypeSize(chunk->dtype));
    }
    if (!codes.ok()) return DataLoss("codes shorter than the shape implies");
    return Status::Ok();
  }

  int bits_;
  uint32_t group_;
  uint32_t vgroup_;
};

}  // namespace

Result<std::unique_ptr<Codec>> MakeKiviCodec(const CodecSpec& spec) {
  SEQKV_RETURN_IF_ERROR(SpecCheckKeys(spec, {"bits", "group", "vgroup"}));
  SEQKV_ASSIGN_OR_RETURN(int64_t bits, SpecInt(spec, "bits", 4, 1, 8));
  SEQKV_ASSIGN_OR_RETURN(int64_t group, SpecInt(spec, "group", 32, 1, kMaxTokens));
  SEQKV_ASSIGN_OR_RETURN(int64_t vgroup, SpecInt(spec, "vgroup", 0, 0, kMaxHeadDim));
  return std::unique_ptr<Codec>(
      new KiviCodec(static_cast<int>(bits), static_cast<uint32_t>(group), static_cast<uint32_t>(vgroup)));
}

}  // namespace seqkv::internal

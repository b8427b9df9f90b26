// turboquant: TurboQuant, MSE variant (Zandieh et al., arXiv 2504.19874).
//
// What: every head vector x (one [layer, head, token] row of K or of V,
// head_dim d) is stored as its L2 norm (fp16) and the B-bit Lloyd–Max indices
// of its randomly rotated direction. A random rotation makes each coordinate
// of a unit vector nearly N(0, 1/d') (d' = padded dimension) whatever the
// data, so one fixed scalar codebook is near-optimal for every vector: no
// calibration, no per-group statistics, B + 16/d bits per element.
// Why here: the data-oblivious baseline of the KV quantizers (see the
// reference table in shared/kvdata/README.md).
//
// Encode, per vector part (see the outlier split below; without it the part
// is the whole vector):
//   1. g = the part's channels (ascending channel order), zero-padded to
//      d' = next power of two; norm = sqrt(sum g_j^2) summed in double in j
//      order, rounded to float, stored as fp16 (round to nearest even).
//   2. If the fp16 norm is 0 every index is 0. Otherwise
//      w = g * (float(sqrt(d')) / norm) (float), w <- H D w (hadamard.h, the
//      signs seeded with seed + 2^32 * part), and index_j = the cell of w_j in
//      the standard-normal Lloyd–Max table of the part's width (lloyd_max.h).
//      Comparing w_j = sqrt(d') * (rotated unit vector)_j against the N(0, 1)
//      thresholds is the same as comparing the rotated unit vector against
//      the N(0, 1/d') thresholds; all d' coordinates, padding included, are
//      coded.
// Decode: y_j = centroid[index_j] (float), y <- D H y, and channel j of the
// part = y_j * (half_to_float(norm) / float(sqrt(d'))); then the chunk dtype
// (FromFloat). All float arithmetic is IEEE single, round to nearest, no
// contraction into FMA (x86-64 default; other targets need -ffp-contract=off
// for bit-identical encodings).
//
// Outlier split (the paper's 2.5/3.5-bit setups): with N = outliers
// (0 < N < d), for each (layer, head, K/V) of the chunk the N channels with
// the largest sum of squares over the chunk's tokens (computed in double,
// ties to the lower channel index) form part 0, coded at B + 1 bits; the
// other d - N channels form part 1, coded at B bits; each part has its own
// norm and rotation. N = 0 gives one part at B bits, N >= d one part at
// B + 1 bits, and neither stores masks.
//
// Parameters (canonical spec "turboquant:bits=B[.5],outliers=N|half,seed=S"):
//   bits      1, 2, 3, 4 (default 4), or 1.5 .. 4.5: "B.5" means bits=B with
//             outliers=half by default. Spec() writes B.5 exactly when
//             outliers=half, so "bits=2,outliers=half" and "bits=2.5" are the
//             same codec ("turboquant:bits=2.5,outliers=half,seed=1592614637").
//   outliers  channels coded at B + 1 bits: an integer 0..4096 (clamped to
//             head_dim) or "half" (head_dim / 2, rounded down). Default 0, or
//             half for B.5.
//   seed      0..2^32-1, default 1592614637 (0x5EED5EED). The rotation does
//             not depend on layer, head or K/V, only on (seed, part, d').
//
// Sections (in this order; vectors in [layer, head, token] order):
//   1 K norms  per vector, one fp16 little-endian per part (part 0 first):
//              vectors * parts * 2 bytes.
//   2 K codes  per vector, part 0's d'0 indices at its width then part 1's,
//              bit-packed LSB-first (BitWriter) continuously over the whole
//              tensor, zero-padded to a byte: ceil(vectors * bits_per_vector / 8).
//   3 V norms, 4 V codes: the same for V.
//   5 K masks, 6 V masks (only with a split): per (layer, head) d bits, bit c
//              set when channel c is in part 0, packed continuously:
//              ceil(layers * heads * d / 8) bytes; each mask has exactly N bits set.
// Decode checks every length exactly, zero padding bits, mask popcounts, and
// that norms are finite and non-negative, and returns DataLoss otherwise.
// Encode rejects non-finite inputs and norms beyond the fp16 range
// (InvalidArgument).
//
// Thread safety: the codec is immutable; Encode and Decode are const and
// keep all scratch on the stack of the call.
#include <algorithm>
#include <span>
#include <cmath>
#include <numeric>
#include <string>
#include <vector>

#include "builtin_codecs.h"
#include "hadamard.h"
#include "lloyd_max.h"
#include "seqkv/codec/bitpack.h"
#include "seqkv/codec/dtype.h"

namespace seqkv::internal {

namespace {

constexpr uint32_t kDefaultSeed = 0x5EED5EEDu;
constexpr uint32_t kOutliersHalf = UINT32_MAX;  // "half": head_dim / 2

enum TqSection : uint32_t {
  kKNorms = 1,
  kKCodes = 2,
  kVNorms = 3,
  kVCodes = 4,
  kKMasks = 5,
  kVMasks = 6,
};

struct Part {
  uint32_t channels = 0;  // real channels of the part
  uint32_t padded = 0;    // next power of two
  int bits = 0;
};

// Everything the shape and the parameters imply about one tensor's encoding.
struct Layout {
  uint32_t head_dim = 0;
  uint32_t outliers = 0;  // size of part 0 when split
  bool split = false;
  int num_parts = 0;
  Part parts[2];
  uint64_t code_bits_per_vector = 0;
};

// A chunk's rotations, one per part (built per call: they depend on d').
struct Rotations {
  std::vector<RandomizedHadamard> per_part;
};

bool PaddingBitsZero(std::span<const uint8_t> data, uint64_t bits) {
  if (bits % 8 == 0 || data.empty()) return true;
  return (data.back() >> (bits % 8)) == 0;
}

void PutU16(std::vector<uint8_t>* out, uint16_t v) {
  out->push_back(static_cast<uint8_t>(v));
  out->push_back(static_cast<uint8_t>(v >> 8));
}

// sqrt(n) in double, rounded to float (fixed so a GPU port can match it).
float SqrtOf(uint32_t n) { return static_cast<float>(std::sqrt(static_cast<double>(n))); }

// A stored norm must be a finite, non-negative fp16 (sign bit clear, exponent not all ones).
bool IsValidNorm(uint16_t h) { return (h & 0x8000u) == 0 && (h & 0x7C00u) != 0x7C00u; }

class TurboQuantCodec final : public Codec {
 public:
  TurboQuantCodec(int bits, uint32_t outliers, uint32_t seed)
      : bits_(bits), outliers_(outliers), seed_(seed) {}

  CodecId id() const override { return CodecId::kTurboQuant; }

  std::string Spec() const override {
    std::string s = "turboquant:bits=" + std::to_string(bits_);
    if (outliers_ == kOutliersHalf) s += ".5";
    s += ",outliers=" + (outliers_ == kOutliersHalf ? std::string("half") : std::to_string(outliers_));
    s += ",seed=" + std::to_string(seed_);
    return s;
  }

  Status Encode(const Chunk& chunk, std::vector<Section>* sections) const override {
    const Layout layout = MakeLayout(chunk.shape.head_dim);
    const Rotations rotations = MakeRotations(layout);
    Section k_norms{kKNorms, {}}, k_codes{kKCodes, {}}, k_masks{kKMasks, {}};
    Section v_norms{kVNorms, {}}, v_codes{kVCodes, {}}, v_masks{kVMasks, {}};
    SEQKV_RETURN_IF_ERROR(EncodeTensor(chunk, chunk.k, layout, rotations, &k_norms, &k_codes, &k_masks)
                              .WithContext("turboquant: K"));
    SEQKV_RETURN_IF_ERROR(EncodeTensor(chunk, chunk.v, layout, rotations, &v_norms, &v_codes, &v_masks)
                              .WithContext("turboquant: V"));
    sections->clear();
    sections->push_back(std::move(k_norms));
    sections->push_back(std::move(k_codes));
    sections->push_back(std::move(v_norms));
    sections->push_back(std::move(v_codes));
    if (layout.split) {
      sections->push_back(std::move(k_masks));
      sections->push_back(std::move(v_masks));
    }
    return Status::Ok();
  }

  Status Decode(std::span<const SectionView> sections, Chunk* chunk) const override {
    const KvShape& shape = chunk->shape;
    const Layout layout = MakeLayout(shape.head_dim);
    const size_t expected_count = layout.split ? 6 : 4;
    if (sections.size() != expected_count) {
      return DataLoss("turboquant: " + std::to_string(sections.size()) + " sections, expected " +
                      std::to_string(expected_count));
    }
    for (size_t i = 0; i < expected_count; ++i) {
      if (sections[i].type != i + 1) {
        return DataLoss("turboquant: section " + std::to_string(i) + " has type " +
                        std::to_string(sections[i].type) + ", expected " + std::to_string(i + 1));
      }
    }
    const uint64_t vectors = shape.vectors();
    const uint64_t norm_bytes = vectors * layout.num_parts * 2;
    const uint64_t code_bits = vectors * layout.code_bits_per_vector;
    const uint64_t mask_bits = layout.split ? uint64_t{shape.layers} * shape.kv_heads * shape.head_dim : 0;
    for (int kv = 0; kv < 2; ++kv) {
      const SectionView& norms = sections[2 * kv];
      const SectionView& codes = sections[2 * kv + 1];
      if (norms.data.size() != norm_bytes || codes.data.size() != PackedBytes(code_bits, 1) ||
          !PaddingBitsZero(codes.data, code_bits)) {
        return DataLoss(std::string("turboquant: ") + (kv ? "V" : "K") + " norms/codes are " +
                        std::to_string(norms.data.size()) + "/" + std::to_string(codes.data.size()) +
                        " bytes, expected " + std::to_string(norm_bytes) + "/" +
                        std::to_string(PackedBytes(code_bits, 1)));
      }
      if (layout.split) {
        const SectionView& masks = sections[4 + kv];
        if (masks.data.size() != PackedBytes(mask_bits, 1) || !PaddingBitsZero(masks.data, mask_bits)) {
          return DataLoss(std::string("turboquant: ") + (kv ? "V" : "K") + " masks are " +
                          std::to_string(masks.data.size()) + " bytes, expected " +
                          std::to_string(PackedBytes(mask_bits, 1)));
        }
      }
    }
    const Rotations rotations = MakeRotations(layout);
    static const std::span<const uint8_t> kNoMasks;
    chunk->k.assign(chunk->TensorBytes(), 0);
    chunk->v.assign(chunk->TensorBytes(), 0);
    SEQKV_RETURN_IF_ERROR(DecodeTensor(sections[0].data, sections[1].data,
                                       layout.split ? sections[4].data : kNoMasks, layout, rotations,
                                       chunk, &chunk->k)
                              .WithContext("turboquant: K"));
    SEQKV_RETURN_IF_ERROR(DecodeTensor(sections[2].data, sections[3].data,
                                       layout.split ? sections[5].data : kNoMasks, layout, rotations,
                                       chunk, &chunk->v)
                              .WithContext("turboquant: V"));
    return Status::Ok();
  }

 private:
  Layout MakeLayout(uint32_t head_dim) const {
    Layout l;
    l.head_dim = head_dim;
    const uint32_t n = outliers_ == kOutliersHalf ? head_dim / 2 : std::min(outliers_, head_dim);
    auto part = [](uint32_t channels, int bits) {
      return Part{channels, NextPowerOfTwo(channels), bits};
    };
    if (n == 0) {
      l.num_parts = 1;
      l.parts[0] = part(head_dim, bits_);
    } else if (n >= head_dim) {
      l.num_parts = 1;
      l.parts[0] = part(head_dim, bits_ + 1);
    } else {
      l.split = true;
      l.outliers = n;
      l.num_parts = 2;
      l.parts[0] = part(n, bits_ + 1);
      l.parts[1] = part(head_dim - n, bits_);
    }
    for (int p = 0; p < l.num_parts; ++p) {
      l.code_bits_per_vector += uint64_t{l.parts[p].padded} * l.parts[p].bits;
    }
    return l;
  }

  Rotations MakeRotations(const Layout& layout) const {
    Rotations r;
    for (int p = 0; p < layout.num_parts; ++p) {
      r.per_part.emplace_back(layout.parts[p].padded, uint64_t{seed_} + (uint64_t{uint32_t(p)} << 32));
    }
    return r;
  }

  // Channels of each part for one (layer, head): from the mask when split.
  static void PartChannels(const Layout& layout, const std::vector<uint8_t>& in_part0,
                           std::vector<uint32_t> channels[2]) {
    channels[0].clear();
    channels[1].clear();
    for (uint32_t c = 0; c < layout.head_dim; ++c) {
      channels[layout.split && !in_part0[c] ? 1 : 0].push_back(c);
    }
  }

  Status EncodeTensor(const Chunk& chunk, const std::vector<uint8_t>& tensor, const Layout& layout,
                      const Rotations& rotations, Section* norms, Section* codes, Section* masks) const {
    const KvShape& shape = chunk.shape;
    const uint32_t d = shape.head_dim;
    const uint64_t slab_elements = uint64_t{shape.tokens} * d;
    const size_t elem_size = DTypeSize(chunk.dtype);
    norms->data.reserve(shape.vectors() * layout.num_parts * 2);
    BitWriter code_writer;
    BitWriter mask_writer;
    std::vector<float> slab(slab_elements);
    std::vector<uint8_t> in_part0(d, 1);
    std::vector<uint32_t> channels[2];
    std::vector<double> energy(d);
    std::vector<uint32_t> order(d);
    std::vector<float> work(std::max(layout.parts[0].padded, layout.parts[1].padded));
    const uint32_t padded_max = static_cast<uint32_t>(work.size());
    std::vector<uint32_t> cells(padded_max);

    for (uint64_t slab_index = 0; slab_index < uint64_t{shape.layers} * shape.kv_heads; ++slab_index) {
      ToFloat(chunk.dtype, tensor.data() + slab_index * slab_elements * elem_size, slab_elements,
              slab.data());
      for (float x : slab) {
        if (!std::isfinite(x)) return InvalidArgument("non-finite value (NaN or Inf) in the input");
      }
      if (layout.split) {
        std::fill(energy.begin(), energy.end(), 0.0);
        for (uint32_t t = 0; t < shape.tokens; ++t) {
          const float* row = &slab[uint64_t{t} * d];
          for (uint32_t c = 0; c < d; ++c) energy[c] += double{row[c]} * row[c];
        }
        std::iota(order.begin(), order.end(), 0u);
        std::stable_sort(order.begin(), order.end(),
                         [&](uint32_t a, uint32_t b) { return energy[a] > energy[b]; });
        std::fill(in_part0.begin(), in_part0.end(), 0);
        for (uint32_t i = 0; i < layout.outliers; ++i) in_part0[order[i]] = 1;
        for (uint32_t c = 0; c < d; ++c) mask_writer.Put(in_part0[c], 1);
      }
      PartChannels(layout, in_part0, channels);

      for (uint32_t t = 0; t < shape.tokens; ++t) {
        const float* row = &slab[uint64_t{t} * d];
        for (int p = 0; p < layout.num_parts; ++p) {
          const Part& part = layout.parts[p];
          double sum_sq = 0;
          for (uint32_t j = 0; j < part.channels; ++j) {
            work[j] = row[channels[p][j]];
            sum_sq += double{work[j]} * work[j];
          }
          std::fill(work.begin() + part.channels, work.begin() + part.padded, 0.0f);
          const float norm = static_cast<float>(std::sqrt(sum_sq));
          const uint16_t norm16 = FloatToHalf(norm);
          if (!IsValidNorm(norm16)) {
            return InvalidArgument("vector norm " + std::to_string(norm) + " exceeds the fp16 range");
          }
          PutU16(&norms->data, norm16);
          if (norm16 == 0) {
            for (uint32_t j = 0; j < part.padded; ++j) code_writer.Put(0, part.bits);
            continue;
          }
          const float scale = SqrtOf(part.padded) / norm;
          for (uint32_t j = 0; j < part.channels; ++j) work[j] *= scale;
          rotations.per_part[p].Forward(work.data());
          const GaussianCodebook& book = StandardNormalCodebook(part.bits);
          for (uint32_t j = 0; j < part.padded; ++j) code_writer.Put(QuantizeToCell(book, work[j]), part.bits);
        }
      }
    }
    codes->data = code_writer.Finish();
    if (layout.split) masks->data = mask_writer.Finish();
    return Status::Ok();
  }

  Status DecodeTensor(std::span<const uint8_t> norms, std::span<const uint8_t> codes,
                      std::span<const uint8_t> masks, const Layout& layout, const Rotations& rotations,
                      const Chunk* chunk, std::vector<uint8_t>* tensor) const {
    const KvShape& shape = chunk->shape;
    const uint32_t d = shape.head_dim;
    const uint64_t slab_elements = uint64_t{shape.tokens} * d;
    const size_t elem_size = DTypeSize(chunk->dtype);
    BitReader code_reader(codes);
    BitReader mask_reader(masks);
    size_t norm_pos = 0;
    std::vector<float> slab(slab_elements);
    std::vector<uint8_t> in_part0(d, 1);
    std::vector<uint32_t> channels[2];
    std::vector<float> work(std::max(layout.parts[0].padded, layout.parts[1].padded));
    float sqrt_padded[2];
    for (int p = 0; p < layout.num_parts; ++p) {
      sqrt_padded[p] = SqrtOf(layout.parts[p].padded);
    }

    for (uint64_t slab_index = 0; slab_index < uint64_t{shape.layers} * shape.kv_heads; ++slab_index) {
      if (layout.split) {
        uint32_t set = 0;
        for (uint32_t c = 0; c < d; ++c) {
          in_part0[c] = static_cast<uint8_t>(mask_reader.Get(1));
          set += in_part0[c];
        }
        if (set != layout.outliers || !mask_reader.ok()) {
          return DataLoss("outlier mask " + std::to_string(slab_index) + " has " + std::to_string(set) +
                          " channels set, expected " + std::to_string(layout.outliers));
        }
      }
      PartChannels(layout, in_part0, channels);
      for (uint32_t t = 0; t < shape.tokens; ++t) {
        float* row = &slab[uint64_t{t} * d];
        for (int p = 0; p < layout.num_parts; ++p) {
          const Part& part = layout.parts[p];
          // Lengths were checked against the shape, so these reads stay in bounds.
          const uint16_t norm16 = static_cast<uint16_t>(norms[norm_pos] | (norms[norm_pos + 1] << 8));
          norm_pos += 2;
          if (!IsValidNorm(norm16)) return DataLoss("invalid stored norm");
          const GaussianCodebook& book = StandardNormalCodebook(part.bits);
          for (uint32_t j = 0; j < part.padded; ++j) work[j] = book.centroids[code_reader.Get(part.bits)];
          rotations.per_part[p].Inverse(work.data());
          const float factor = HalfToFloat(norm16) / sqrt_padded[p];
          for (uint32_t j = 0; j < part.channels; ++j) row[channels[p][j]] = work[j] * factor;
        }
      }
      FromFloat(chunk->dtype, slab.data(), slab_elements, tensor->data() + slab_index * slab_elements * elem_size);
    }
    if (!code_reader.ok() || !mask_reader.ok()) return DataLoss("codes shorter than the shape implies");
    return Status::Ok();
  }

  int bits_;           // width of the regular part, 1..4
  uint32_t outliers_;  // part-0 channels, or kOutliersHalf
  uint32_t seed_;
};

// "half" or an integer count.
Result<uint32_t> ParseOutliers(const CodecSpec& spec, uint32_t default_value) {
  auto it = spec.params.find("outliers");
  if (it == spec.params.end()) return default_value;
  if (it->second == "half") return kOutliersHalf;
  SEQKV_ASSIGN_OR_RETURN(int64_t n, SpecInt(spec, "outliers", 0, 0, kMaxHeadDim));
  return static_cast<uint32_t>(n);
}

}  // namespace

Result<std::unique_ptr<Codec>> MakeTurboQuantCodec(const CodecSpec& spec) {
  SEQKV_RETURN_IF_ERROR(SpecCheckKeys(spec, {"bits", "outliers", "seed"}));
  SEQKV_ASSIGN_OR_RETURN(double bits, SpecDouble(spec, "bits", 4.0, 1.0, 4.5));
  const double twice = bits * 2;
  if (twice != std::floor(twice)) {
    return InvalidArgument("codec turboquant: bits=" + spec.params.at("bits") +
                           " (want 1, 2, 3, 4 or 1.5, 2.5, 3.5, 4.5)");
  }
  const int b = static_cast<int>(std::floor(bits));
  const bool half_step = static_cast<int>(twice) % 2 == 1;
  SEQKV_ASSIGN_OR_RETURN(uint32_t outliers, ParseOutliers(spec, half_step ? kOutliersHalf : 0));
  SEQKV_ASSIGN_OR_RETURN(int64_t seed, SpecInt(spec, "seed", kDefaultSeed, 0, UINT32_MAX));
  return std::unique_ptr<Codec>(new TurboQuantCodec(b, outliers, static_cast<uint32_t>(seed)));
}

}  // namespace seqkv::internal

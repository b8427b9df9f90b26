// lossless: bit-exact. Each tensor's elements are split into bit planes that
// compress differently, optionally reordered channel-major (the same channel
// over consecutive tokens is contiguous, where exponents vary slowly), and
// each plane is a zstd frame.
//
//   bf16: plane 0 = the 8 exponent bits, plane 1 = sign bit and 7 mantissa bits
//   fp16: plane 0 = sign + 5 exponent bits + 2 high mantissa bits (high byte),
//         plane 1 = low byte
//   fp32: plane p = byte 3-p of each element (sign/exponent first)
//
// Sections: type = tensor * 16 + plane (tensor 0 = K, 1 = V), each a zstd
// frame whose content size must equal the plane size exactly.
// Parameters: level (zstd level, 1..22, default 3: 19 saves ~0.5 bits/element
// at 1/50 of the speed), order (0 = token-major as stored, the default, which
// measured better on real KV than
// 1 = channel-major within each [layer, head]).
//
// coder=rans (spec "lossless:coder=rans") is the variant a GPU decodes at
// memory speed: plane 0 (the exponents) coded with static rANS in 32-lane
// blocks (lossless_rans.h), the other planes stored as they are (the bf16
// sign-mantissa byte measured 7.97 bits of entropy: nothing to gain).
#include <zstd.h>

#include "builtin_codecs.h"
#include "lossless_rans.h"

namespace seqkv::internal {

namespace {

class LosslessCodec final : public Codec {
 public:
  // level 0 = coder=rans.
  LosslessCodec(int level, int order) : level_(level), order_(order) {}

  CodecId id() const override { return CodecId::kLossless; }
  std::string Spec() const override {
    if (rans()) return "lossless:coder=rans";
    return "lossless:level=" + std::to_string(level_) + ",order=" + std::to_string(order_);
  }

  Status Encode(const Chunk& chunk, std::vector<Section>* sections) const override {
    size_t esize = DTypeSize(chunk.dtype);
    uint64_t n = chunk.shape.elements();
    if (rans() && n / chunk.shape.layers > (uint64_t{1} << 31)) {
      return InvalidArgument("lossless:coder=rans: a layer of one tensor must hold at most 2^31 elements");
    }
    std::vector<uint8_t> planes(n * esize);
    for (uint32_t t = 0; t < 2; ++t) {
      const std::vector<uint8_t>& src = t == 0 ? chunk.k : chunk.v;
      Split(chunk, src.data(), planes.data());
      for (size_t p = 0; p < esize; ++p) {
        const uint8_t* plane = planes.data() + p * n;
        if (rans()) {
          std::vector<uint8_t> out = p == 0 ? LrEncodePlane(plane, chunk.shape.layers, n / chunk.shape.layers)
                                            : std::vector<uint8_t>(plane, plane + n);
          sections->push_back({static_cast<uint32_t>(t * 16 + p), std::move(out)});
          continue;
        }
        std::vector<uint8_t> out(ZSTD_compressBound(n));
        size_t z = ZSTD_compress(out.data(), out.size(), plane, n, level_);
        if (ZSTD_isError(z)) return Internal(std::string("lossless: zstd: ") + ZSTD_getErrorName(z));
        out.resize(z);
        sections->push_back({static_cast<uint32_t>(t * 16 + p), std::move(out)});
      }
    }
    return Status::Ok();
  }

  Status Decode(std::span<const SectionView> sections, Chunk* chunk) const override {
    size_t esize = DTypeSize(chunk->dtype);
    uint64_t n = chunk->shape.elements();
    if (sections.size() != 2 * esize) return DataLoss("lossless: wrong number of sections");
    std::vector<uint8_t> planes(n * esize);
    for (uint32_t t = 0; t < 2; ++t) {
      for (size_t p = 0; p < esize; ++p) {
        const SectionView& s = sections[t * esize + p];
        if (s.type != t * 16 + p) return DataLoss("lossless: unexpected section type");
        if (rans()) {
          if (p == 0) {
            SEQKV_RETURN_IF_ERROR(LrDecodePlane(s.data, chunk->shape.layers, n / chunk->shape.layers, planes.data()));
          } else {
            if (s.data.size() != n) return DataLoss("lossless: stored plane has the wrong size");
            std::copy(s.data.begin(), s.data.end(), planes.begin() + p * n);
          }
          continue;
        }
        unsigned long long size = ZSTD_getFrameContentSize(s.data.data(), s.data.size());
        if (size != n) return DataLoss("lossless: plane has the wrong size");
        size_t z = ZSTD_decompress(planes.data() + p * n, n, s.data.data(), s.data.size());
        if (ZSTD_isError(z) || z != n) return DataLoss("lossless: corrupt zstd frame");
      }
      std::vector<uint8_t>& dst = t == 0 ? chunk->k : chunk->v;
      dst.resize(n * esize);
      Merge(*chunk, planes.data(), dst.data());
    }
    return Status::Ok();
  }

 private:
  bool rans() const { return level_ == 0; }

  // Index of element i (stored order) in the plane order.
  static void PlaneOrder(const Chunk& c, int order, std::vector<uint64_t>* map) {
    uint64_t n = c.shape.elements();
    map->resize(n);
    uint64_t T = c.shape.tokens, D = c.shape.head_dim;
    for (uint64_t i = 0; i < n; ++i) {
      if (order == 0) {
        (*map)[i] = i;
      } else {
        uint64_t block = i / (T * D), within = i % (T * D);
        uint64_t t = within / D, d = within % D;
        (*map)[i] = block * T * D + d * T + t;
      }
    }
  }

  void Split(const Chunk& c, const uint8_t* src, uint8_t* planes) const {
    uint64_t n = c.shape.elements();
    std::vector<uint64_t> map;
    PlaneOrder(c, order_, &map);
    for (uint64_t i = 0; i < n; ++i) {
      uint64_t j = map[i];
      switch (c.dtype) {
        case DType::kBF16: {
          uint16_t h = static_cast<uint16_t>(src[2 * i] | (src[2 * i + 1] << 8));
          planes[j] = static_cast<uint8_t>((h >> 7) & 0xFF);
          planes[n + j] = static_cast<uint8_t>(((h >> 8) & 0x80) | (h & 0x7F));
          break;
        }
        case DType::kFP16:
          planes[j] = src[2 * i + 1];
          planes[n + j] = src[2 * i];
          break;
        case DType::kFP32:
          for (int p = 0; p < 4; ++p) planes[p * n + j] = src[4 * i + 3 - p];
          break;
      }
    }
  }

  void Merge(const Chunk& c, const uint8_t* planes, uint8_t* dst) const {
    uint64_t n = c.shape.elements();
    std::vector<uint64_t> map;
    PlaneOrder(c, order_, &map);
    for (uint64_t i = 0; i < n; ++i) {
      uint64_t j = map[i];
      switch (c.dtype) {
        case DType::kBF16: {
          uint16_t e = planes[j], sm = planes[n + j];
          uint16_t h = static_cast<uint16_t>(((sm & 0x80) << 8) | (e << 7) | (sm & 0x7F));
          dst[2 * i] = static_cast<uint8_t>(h);
          dst[2 * i + 1] = static_cast<uint8_t>(h >> 8);
          break;
        }
        case DType::kFP16:
          dst[2 * i + 1] = planes[j];
          dst[2 * i] = planes[n + j];
          break;
        case DType::kFP32:
          for (int p = 0; p < 4; ++p) dst[4 * i + 3 - p] = planes[p * n + j];
          break;
      }
    }
  }

  int level_;
  int order_;
};

}  // namespace

Result<std::unique_ptr<Codec>> MakeLosslessCodec(const CodecSpec& spec) {
  SEQKV_RETURN_IF_ERROR(SpecCheckKeys(spec, {"level", "order", "coder"}));
  auto coder = spec.params.find("coder");
  if (coder != spec.params.end()) {
    if (coder->second == "rans") {
      if (spec.params.count("level") || spec.params.count("order")) {
        return InvalidArgument("lossless: coder=rans takes no level or order");
      }
      return std::unique_ptr<Codec>(new LosslessCodec(0, 0));
    }
    if (coder->second != "zstd") return InvalidArgument("lossless: coder must be zstd or rans, not " + coder->second);
  }
  SEQKV_ASSIGN_OR_RETURN(int64_t level, SpecInt(spec, "level", 3, 1, 22));
  SEQKV_ASSIGN_OR_RETURN(int64_t order, SpecInt(spec, "order", 0, 0, 1));
  return std::unique_ptr<Codec>(new LosslessCodec(static_cast<int>(level), static_cast<int>(order)));
}

}  // namespace seqkv::internal

#include "token_coding.h"

#include <zstd.h>

#include <algorithm>
#include <bit>

#include "seqkv/codec/bitpack.h"
#include "token_model.h"

namespace seqkv::internal {

namespace {

constexpr int kTokenZstdLevel = 19;

std::vector<uint8_t> Raw32(std::span<const int32_t> ids) {
  std::vector<uint8_t> out(ids.size() * 4);
  for (size_t i = 0; i < ids.size(); ++i) {
    uint32_t v = static_cast<uint32_t>(ids[i]);
    for (int b = 0; b < 4; ++b) out[4 * i + b] = static_cast<uint8_t>(v >> (8 * b));
  }
  return out;
}

}  // namespace

std::vector<uint8_t> EncodeTokenIdsWith(std::span<const int32_t> ids, TokenCoding coding) {
  switch (coding) {
    case TokenCoding::kRaw32:
      return Raw32(ids);
    case TokenCoding::kBitPacked: {
      uint32_t max = 0;
      for (int32_t id : ids) max = std::max(max, static_cast<uint32_t>(id));
      int width = max == 0 ? 1 : std::bit_width(max);
      BitWriter w;
      w.Put(static_cast<uint32_t>(width), 8);
      for (int32_t id : ids) w.Put(static_cast<uint32_t>(id), width);
      return w.Finish();
    }
    case TokenCoding::kZstd: {
      std::vector<uint8_t> raw = Raw32(ids);
      std::vector<uint8_t> out(ZSTD_compressBound(raw.size()));
      size_t n = ZSTD_compress(out.data(), out.size(), raw.data(), raw.size(), kTokenZstdLevel);
      if (ZSTD_isError(n)) return Raw32(ids);  // cannot happen with a bound-sized buffer
      out.resize(n);
      return out;
    }
    case TokenCoding::kContextMixed: {
      auto cm = EncodeTokensCm(ids);
      return cm.ok() ? std::move(cm).value() : std::vector<uint8_t>();
    }
    default:  // coding 4 (format.h may not name it yet)
      if (coding == kTokenCodingCountMixed) {
        auto mixed = EncodeTokensCountMixed(ids);
        return mixed.ok() ? std::move(mixed).value() : std::vector<uint8_t>();
      }
      break;
  }
  return Raw32(ids);
}

std::vector<uint8_t> EncodeTokenIds(std::span<const int32_t> ids, TokenEffort effort, TokenCoding* coding) {
  TokenCoding best = TokenCoding::kRaw32;
  std::vector<uint8_t> best_bytes = EncodeTokenIdsWith(ids, best);
  const bool any_negative = std::any_of(ids.begin(), ids.end(), [](int32_t id) { return id < 0; });
  for (TokenCoding c :
       {TokenCoding::kBitPacked, TokenCoding::kZstd, TokenCoding::kContextMixed, kTokenCodingCountMixed}) {
    const bool context_coded = c == TokenCoding::kContextMixed || c == kTokenCodingCountMixed;
    if (context_coded && any_negative) continue;  // cannot code negative ids
    if (c == kTokenCodingCountMixed && !kTokenCodingCountMixedEnabled) continue;
    if (effort == TokenEffort::kFast && c != TokenCoding::kBitPacked) continue;
    std::vector<uint8_t> bytes = EncodeTokenIdsWith(ids, c);
    if (context_coded && bytes.empty()) continue;  // the model declined these ids
    if (bytes.size() < best_bytes.size()) {
      best = c;
      best_bytes = std::move(bytes);
    }
  }
  *coding = best;
  return best_bytes;
}

Result<std::vector<int32_t>> DecodeTokenIds(TokenCoding coding, std::span<const uint8_t> bytes,
                                            uint32_t count) {
  // The context-mixing decoders size their own buffers.
  if (coding == TokenCoding::kContextMixed) return DecodeTokensCm(bytes, count);
  if (coding == kTokenCodingCountMixed) return DecodeTokensCountMixed(bytes, count);
  std::vector<int32_t> ids(count);
  auto from_raw = [&](std::span<const uint8_t> raw) -> Status {
    if (raw.size() != size_t{count} * 4) {
      return DataLoss("token ids: " + std::to_string(raw.size()) + " bytes for " + std::to_string(count) + " ids");
    }
    for (uint32_t i = 0; i < count; ++i) {
      uint32_t v = 0;
      for (int b = 0; b < 4; ++b) v |= uint32_t{raw[4 * i + b]} << (8 * b);
      ids[i] = static_cast<int32_t>(v);
    }
    return Status::Ok();
  };
  switch (coding) {
    case TokenCoding::kRaw32:
      SEQKV_RETURN_IF_ERROR(from_raw(bytes));
      return ids;
    case TokenCoding::kBitPacked: {
      if (bytes.empty()) return DataLoss("token ids: empty bit-packed block");
      int width = bytes[0];
      if (width < 1 || width > 32) return DataLoss("token ids: bad bit width " + std::to_string(width));
      if (bytes.size() != 1 + PackedBytes(count, width)) {
        return DataLoss("token ids: bit-packed block has the wrong length");
      }
      BitReader r(bytes.subspan(1));
      for (uint32_t i = 0; i < count; ++i) ids[i] = static_cast<int32_t>(r.Get(width));
      if (!r.ok()) return DataLoss("token ids: bit-packed block truncated");
      return ids;
    }
    case TokenCoding::kZstd: {
      unsigned long long size = ZSTD_getFrameContentSize(bytes.data(), bytes.size());
      if (size != uint64_t{count} * 4) return DataLoss("token ids: zstd frame has the wrong size");
      std::vector<uint8_t> raw(size);
      size_t n = ZSTD_decompress(raw.data(), raw.size(), bytes.data(), bytes.size());
      if (ZSTD_isError(n) || n != raw.size()) return DataLoss("token ids: zstd frame corrupt");
      SEQKV_RETURN_IF_ERROR(from_raw(raw));
      return ids;
    }
    default:
      break;
  }
  return DataLoss("token ids: unknown coding " + std::to_string(int(coding)));
}

}  // namespace seqkv::internal

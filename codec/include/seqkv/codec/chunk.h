// The in-memory chunk: K and V of a run of tokens for one model.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "seqkv/codec/status.h"

namespace seqkv {

enum class DType : uint8_t { kBF16 = 1, kFP16 = 2, kFP32 = 3 };

size_t DTypeSize(DType dtype);
std::string_view DTypeName(DType dtype);  // "bf16", "fp16", "fp32"
Result<DType> ParseDType(std::string_view name);
bool IsValidDType(uint8_t raw);

enum class RopeStyle : uint8_t {
  kNone = 0,        // no rotary embedding applied (or unknown)
  kRotateHalf = 1,  // pairs (i, i + dim/2), the Hugging Face Llama convention
  kInterleaved = 2, // pairs (2i, 2i + 1), GPT-J / original RoFormer
};
std::string_view RopeStyleName(RopeStyle style);  // "none", "rotate_half", "interleaved"
Result<RopeStyle> ParseRopeStyle(std::string_view name);

struct RopeParams {
  RopeStyle style = RopeStyle::kNone;
  double theta = 10000.0;
  uint32_t dim = 0;  // rotary dimensions of each head (== head_dim for full rotary)
};

// Shape of K (and of V): [layers, kv_heads, tokens, head_dim].
struct KvShape {
  uint32_t layers = 0;
  uint32_t kv_heads = 0;
  uint32_t tokens = 0;
  uint32_t head_dim = 0;

  // Head vectors per tensor: layers * kv_heads * tokens.
  uint64_t vectors() const { return uint64_t{layers} * kv_heads * tokens; }
  // Elements per tensor (K or V).
  uint64_t elements() const { return vectors() * head_dim; }
  bool operator==(const KvShape&) const = default;
};

// Hard bounds every chunk must respect. They keep hostile headers from
// asking for absurd allocations; all are well above production shapes
// (80 layers, 8-128 KV heads, head_dim 128-256, chunks of 16-4096 tokens).
inline constexpr uint32_t kMaxLayers = 1024;
inline constexpr uint32_t kMaxKvHeads = 1024;
inline constexpr uint32_t kMaxHeadDim = 4096;
inline constexpr uint32_t kMaxTokens = 1u << 20;
inline constexpr uint64_t kMaxTensorBytes = uint64_t{16} << 30;  // per K or V

// A chunk owns its data. K and V hold raw little-endian elements of `dtype`
// in [layers, kv_heads, tokens, head_dim] order. Plain value type: copyable,
// not synchronised.
struct Chunk {
  KvShape shape;
  DType dtype = DType::kBF16;
  RopeParams rope;
  uint64_t first_position = 0;  // absolute position of tokens[0]
  std::vector<int32_t> tokens;  // shape.tokens ids
  std::vector<uint8_t> k;
  std::vector<uint8_t> v;

  // Bytes of one tensor (K or V).
  uint64_t TensorBytes() const { return shape.elements() * DTypeSize(dtype); }
  // Checks shape bounds, dtype, token count and tensor sizes.
  Status Validate() const;
  // The same without the tensor sizes (K and V not read).
  Status ValidateMeta() const;
};

// Validates only the shape and dtype (used before any allocation).
Status ValidateShape(const KvShape& shape, DType dtype);

}  // namespace seqkv

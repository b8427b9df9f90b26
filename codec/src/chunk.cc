#include "seqkv/codec/chunk.h"

namespace seqkv {

size_t DTypeSize(DType dtype) {
  switch (dtype) {
    case DType::kBF16:
    case DType::kFP16: return 2;
    case DType::kFP32: return 4;
  }
  return 0;
}

std::string_view DTypeName(DType dtype) {
  switch (dtype) {
    case DType::kBF16: return "bf16";
    case DType::kFP16: return "fp16";
    case DType::kFP32: return "fp32";
  }
  return "invalid";
}

Result<DType> ParseDType(std::string_view name) {
  if (name == "bf16" || name == "BF16" || name == "bfloat16") return DType::kBF16;
  if (name == "fp16" || name == "F16" || name == "float16") return DType::kFP16;
  if (name == "fp32" || name == "F32" || name == "float32") return DType::kFP32;
  return InvalidArgument("unknown dtype '" + std::string(name) + "' (want bf16, fp16 or fp32)");
}

bool IsValidDType(uint8_t raw) { return raw >= 1 && raw <= 3; }

std::string_view RopeStyleName(RopeStyle style) {
  switch (style) {
    case RopeStyle::kNone: return "none";
    case RopeStyle::kRotateHalf: return "rotate_half";
    case RopeStyle::kInterleaved: return "interleaved";
  }
  return "invalid";
}

Result<RopeStyle> ParseRopeStyle(std::string_view name) {
  if (name == "none" || name.empty()) return RopeStyle::kNone;
  if (name == "rotate_half" || name == "neox") return RopeStyle::kRotateHalf;
  if (name == "interleaved" || name == "gptj") return RopeStyle::kInterleaved;
  return InvalidArgument("unknown RoPE style '" + std::string(name) +
                         "' (want none, rotate_half or interleaved)");
}

Status ValidateShape(const KvShape& s, DType dtype) {
  if (!IsValidDType(static_cast<uint8_t>(dtype))) return InvalidArgument("invalid dtype");
  if (s.layers == 0 || s.layers > kMaxLayers) {
    return InvalidArgument("layers " + std::to_string(s.layers) + " outside [1, " + std::to_string(kMaxLayers) + "]");
  }
  if (s.kv_heads == 0 || s.kv_heads > kMaxKvHeads) {
    return InvalidArgument("kv_heads " + std::to_string(s.kv_heads) + " outside [1, " + std::to_string(kMaxKvHeads) + "]");
  }
  if (s.head_dim == 0 || s.head_dim > kMaxHeadDim) {
    return InvalidArgument("head_dim " + std::to_string(s.head_dim) + " outside [1, " + std::to_string(kMaxHeadDim) + "]");
  }
  if (s.tokens == 0 || s.tokens > kMaxTokens) {
    return InvalidArgument("tokens " + std::to_string(s.tokens) + " outside [1, " + std::to_string(kMaxTokens) + "]");
  }
  if (s.elements() * DTypeSize(dtype) > kMaxTensorBytes) {
    return InvalidArgument("tensor of " + std::to_string(s.elements()) + " elements exceeds the size limit");
  }
  return Status::Ok();
}

Status Chunk::ValidateMeta() const {
  SEQKV_RETURN_IF_ERROR(ValidateShape(shape, dtype));
  if (tokens.size() != shape.tokens) {
    return InvalidArgument("chunk has " + std::to_string(tokens.size()) + " token ids for " +
                           std::to_string(shape.tokens) + " tokens");
  }
  if (rope.style != RopeStyle::kNone) {
    if (rope.dim == 0 || rope.dim > shape.head_dim || rope.dim % 2 != 0) {
      return InvalidArgument("RoPE dim " + std::to_string(rope.dim) + " must be even and in [2, head_dim]");
    }
    if (!(rope.theta > 0.0)) return InvalidArgument("RoPE theta must be positive");
  }
  return Status::Ok();
}

Status Chunk::Validate() const {
  SEQKV_RETURN_IF_ERROR(ValidateMeta());
  if (k.size() != TensorBytes() || v.size() != TensorBytes()) {
    return InvalidArgument("K/V sizes " + std::to_string(k.size()) + "/" + std::to_string(v.size()) +
                           " bytes, expected " + std::to_string(TensorBytes()));
  }
  return Status::Ok();
}

}  // namespace seqkv

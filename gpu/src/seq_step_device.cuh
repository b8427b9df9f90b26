// Private to gpu/: the seq codec's per-component quantization step and the
// FP16 range test, shared by the dense kernels (decode and encode) and the
// lane kernel, which stores FP16 symbol operands (SlLaunch::half_symbols):
// one definition, so every kernel computes the same bits.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace seqkv::gpu::internal {

// steps[g][i] = float(double(δ₀) · mult(code_g) · double(step_scale[g][i]))
// (docs/format.md), from base = double(δ₀) · mult(code_g).
__device__ __forceinline__ float SeqStep(double base, float scale) {
  return __double2float_rn(__dmul_rn(base, static_cast<double>(scale)));
}

// Whether x is outside what an FP16 operand holds (|x| >= 65520 rounds to
// infinity) or not a number.
__device__ __forceinline__ bool OutsideHalfRange(float x) { return !(fabsf(x) < 65520.0f); }

}  // namespace seqkv::gpu::internal

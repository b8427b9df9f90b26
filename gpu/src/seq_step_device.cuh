// Private to gpu/: the seq codec's per-component quantization step and the
// FP16 range test, shared by the dense kernels (decode and encode) and the
// lane kernel, which stores FP16 symbol operands (SlLaunch::half_symbols):
// one definition, so every kernel computes the same bits.
#pragma once

#include <cuda_fp16.h>
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

// The step of HalfOperand: float(step_base), the chunk's and group's step
// base, the same for every component (the components' step scales are in
// the FP16 basis, SdLaunch::basis_h). One definition for the lane kernels
// and SdLayerH16Kernel, so FP16 and int32 symbols give the same operands.
__device__ __forceinline__ float HalfOperandStep(double step_base) { return __double2float_rn(step_base); }

// The f16 dense stage's FP16 operand of symbol q as the lane kernels store it
// (SlLaunch::half_symbols) and SdLayerH16Kernel converts it: the bits of
// float(q) * step rounded to nearest even, step = HalfOperandStep(step_base);
// *over is set when the product is outside FP16's range.
__device__ __forceinline__ uint16_t HalfOperand(int32_t q, float step, uint32_t* over) {
  const float v = __fmul_rn(static_cast<float>(q), step);
  *over |= OutsideHalfRange(v) ? 1u : 0u;
  return __half_as_ushort(__float2half_rn(v));
}

}  // namespace seqkv::gpu::internal

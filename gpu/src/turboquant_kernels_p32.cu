// TurboQuant's kernels for the padded size d' = 32 (turboquant_device.cuh).
#include "turboquant_device.cuh"

SEQKV_TQ_INSTANTIATE(32)

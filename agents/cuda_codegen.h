// Source pieces the library-backed CUDA templates (cuda_gemm_lt, cuda_conv_dnn) render in common:
// the element type and its conversions, the stream-ordered scratch pool, and the vector loads,
// stores and math of a generated f32 epilogue kernel.
#pragma once

#include <string>
#include <string_view>

#include "planner/graph.h"

namespace kfleet::agents {

// How one element type is spelled in CUDA source and to the libraries.
struct CudaElementType {
  std::string_view cpp;         // "__nv_bfloat16"
  std::string_view kf_dtype;    // "KF_BF16"
  std::string_view cuda_type;   // "CUDA_R_16BF"
  std::string_view cudnn_type;  // "CUDNN_DATA_BFLOAT16"
  std::string_view from_float;  // converts float `x`
};

// f16 and bf16 as themselves; f32 for every other dtype.
CudaElementType CudaElementTypeOf(planner::DType dtype);

// `typedef ... Elem;`, device ToFloat() for float / __half / __nv_bfloat16 and FromFloat(float)
// to Elem. Needs <cuda_fp16.h> and <cuda_bf16.h>.
std::string RenderCudaElementConversions(const CudaElementType& type);

// KF_CHECK_CUDA(call) (returns KF_ERR_DEVICE) and `static int PoolAlloc(void** p, size_t bytes,
// cudaStream_t stream)`: stream-ordered memory from a pool per device that keeps its memory for
// the process (freed with cudaFreeAsync). Needs <cuda_runtime.h>, <map>, <mutex>.
std::string RenderCudaPoolAlloc();

// What a generated epilogue kernel uses: device kf_exp / kf_tanh / kf_erf, LoadVector<V>(p, v)
// and StoreVector<V>(Elem* p, v) by 16-byte words when V elements fill whole words,
// `Lanes<V>{values, j0}` (an operand's vector indexed by column j), Aligned16(p). Needs
// RenderCudaElementConversions before it.
std::string RenderCudaEpilogueHelpers();

// The rest of a launcher whose first lines computed `total` (elements) and `vector` (whether
// whole 16-byte vectors apply): the grid over `total / kVector` or `total` items (at most 8192
// blocks of 256 threads), `kernel_vector` or `kernel_scalar` launched with `args` (which end in
// `vectors`) on `stream`, and the launch checked. kVector is 16 / sizeof(Elem).
std::string RenderCudaEpilogueLaunchTail(std::string_view kernel_vector,
                                         std::string_view kernel_scalar, std::string_view args);

// The epilogue statements of an analysis (C++ over floats) as device code: std::sqrt and
// std::pow become sqrtf and powf.
std::string CudaStatement(std::string statement);

}  // namespace kfleet::agents

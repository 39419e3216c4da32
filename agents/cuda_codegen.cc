#include "agents/cuda_codegen.h"

#include <fmt/format.h>

namespace kfleet::agents {

CudaElementType CudaElementTypeOf(planner::DType dtype) {
  switch (dtype) {
    case planner::DType::kF16:
      return {"__half", "KF_F16", "CUDA_R_16F", "CUDNN_DATA_HALF", "__float2half_rn(x)"};
    case planner::DType::kBF16:
      return {"__nv_bfloat16", "KF_BF16", "CUDA_R_16BF", "CUDNN_DATA_BFLOAT16",
              "__float2bfloat16_rn(x)"};
    default:
      return {"float", "KF_F32", "CUDA_R_32F", "CUDNN_DATA_FLOAT", "x"};
  }
}

std::string RenderCudaElementConversions(const CudaElementType& type) {
  return fmt::format(
      R"(
typedef {} Elem;

__device__ __forceinline__ float ToFloat(float x) {{ return x; }}
__device__ __forceinline__ float ToFloat(__half x) {{ return __half2float(x); }}
__device__ __forceinline__ float ToFloat(__nv_bfloat16 x) {{ return __bfloat162float(x); }}
__device__ __forceinline__ Elem FromFloat(float x) {{ return {}; }}
)",
      type.cpp, type.from_float);
}

std::string RenderCudaPoolAlloc() {
  return R"(
#define KF_CHECK_CUDA(call) \
  do {                      \
    if ((call) != cudaSuccess) return KF_ERR_DEVICE; \
  } while (0)

// Workspace and scratch come stream-ordered from a pool per device that keeps its memory between
// calls (the default pool may hand it back at every synchronization), so calls after the first
// allocate without the driver.
static std::mutex g_pool_mutex;                // guards g_pools
static std::map<int, cudaMemPool_t> g_pools;  // device -> pool, kept for the process

static int PoolAlloc(void** p, size_t bytes, cudaStream_t stream) {
  int device = 0;
  KF_CHECK_CUDA(cudaGetDevice(&device));
  cudaMemPool_t pool = nullptr;
  {
    std::lock_guard<std::mutex> lock(g_pool_mutex);
    auto it = g_pools.find(device);
    if (it == g_pools.end()) {
      cudaMemPoolProps props = {};
      props.allocType = cudaMemAllocationTypePinned;
      props.location.type = cudaMemLocationTypeDevice;
      props.location.id = device;
      KF_CHECK_CUDA(cudaMemPoolCreate(&pool, &props));
      uint64_t keep = UINT64_MAX;
      if (cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &keep) != cudaSuccess) {
        static_cast<void>(cudaMemPoolDestroy(pool));
        return KF_ERR_DEVICE;
      }
      it = g_pools.emplace(device, pool).first;
    }
    pool = it->second;
  }
  return cudaMallocFromPoolAsync(p, bytes, pool, stream) == cudaSuccess ? KF_OK
                                                                        : KF_ERR_OUT_OF_MEMORY;
}
)";
}

std::string RenderCudaEpilogueHelpers() {
  return R"(
__device__ __forceinline__ float kf_exp(float x) { return expf(x); }
__device__ __forceinline__ float kf_tanh(float x) { return tanhf(x); }
__device__ __forceinline__ float kf_erf(float x) { return erff(x); }

// v = p[0, V) in f32, by 16-byte words when V elements fill whole words (p is then aligned).
template <int V, typename T>
__device__ __forceinline__ void LoadVector(const T* p, float (&v)[V]) {
  if constexpr (V * sizeof(T) % 16 == 0) {
    alignas(16) T e[V];
#pragma unroll
    for (int w = 0; w < static_cast<int>(V * sizeof(T) / 16); ++w) {
      reinterpret_cast<uint4*>(e)[w] = reinterpret_cast<const uint4*>(p)[w];
    }
#pragma unroll
    for (int t = 0; t < V; ++t) v[t] = ToFloat(e[t]);
  } else {
#pragma unroll
    for (int t = 0; t < V; ++t) v[t] = ToFloat(p[t]);
  }
}

template <int V>
__device__ __forceinline__ void StoreVector(Elem* p, const float (&v)[V]) {
  if constexpr (V * sizeof(Elem) % 16 == 0) {
    alignas(16) Elem e[V];
#pragma unroll
    for (int t = 0; t < V; ++t) e[t] = FromFloat(v[t]);
#pragma unroll
    for (int w = 0; w < static_cast<int>(V * sizeof(Elem) / 16); ++w) {
      reinterpret_cast<uint4*>(p)[w] = reinterpret_cast<const uint4*>(e)[w];
    }
  } else {
#pragma unroll
    for (int t = 0; t < V; ++t) p[t] = FromFloat(v[t]);
  }
}

// An operand's values for one vector, indexed by column as the epilogue statements read them.
template <int V>
struct Lanes {
  const float* v;
  int64_t j0;
  __device__ __forceinline__ float operator[](int64_t j) const { return v[j - j0]; }
};

static bool Aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }
)";
}

std::string RenderCudaEpilogueLaunchTail(std::string_view kernel_vector,
                                         std::string_view kernel_scalar, std::string_view args) {
  return fmt::format(
      R"(;
  const int64_t vectors = vector ? total / kVector : total;
  int64_t blocks = (vectors + 255) / 256;
  blocks = blocks < 8192 ? blocks : 8192;
  if (vector) {{
    {0}<<<static_cast<unsigned>(blocks), 256, 0, stream>>>({2});
  }} else {{
    {1}<<<static_cast<unsigned>(blocks), 256, 0, stream>>>({2});
  }}
  return cudaGetLastError() == cudaSuccess ? KF_OK : KF_ERR_DEVICE;
}}
)",
      kernel_vector, kernel_scalar, args);
}

std::string CudaStatement(std::string statement) {
  for (const auto& [from, to] :
       {std::pair<std::string_view, std::string_view>{"std::sqrt(", "sqrtf("},
        {"std::pow(", "powf("}}) {
    for (size_t at = statement.find(from); at != std::string::npos;
         at = statement.find(from, at + to.size())) {
      statement.replace(at, from.size(), to);
    }
  }
  return statement;
}

}  // namespace kfleet::agents

#include "agents/kernel_math.h"

namespace kfleet::agents {
namespace {

// Ternaries (not std::min / std::max), the 1.5 * 2^23 shifter (not std::floor) and
// __builtin_bit_cast (not memcpy) are what keep these vectorizable.
constexpr std::string_view kExp = R"(static inline float kf_exp(float x) {
  x = x < -104.0f ? -104.0f : x;
  x = x > 89.0f ? 89.0f : x;
  const float shifter = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
  const float n = (x * 1.44269504088896341f + shifter) - shifter;
  const float r = (x - n * 0.693359375f) + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const int32_t k = static_cast<int32_t>(n);
  const int32_t k1 = k >> 1;
  const float s1 = __builtin_bit_cast(float, (k1 + 127) << 23);
  const float s2 = __builtin_bit_cast(float, (k - k1 + 127) << 23);
  return p * s1 * s2;
}
)";

// Coefficients of the rational fits Eigen uses for float tanh and erf.
constexpr std::string_view kTanh = R"(static inline float kf_tanh(float x) {
  const float c = x < -9.0f ? -9.0f : (x > 9.0f ? 9.0f : x);
  const float x2 = c * c;
  float p = -2.76076847742355e-16f;
  p = p * x2 + 2.00018790482477e-13f;
  p = p * x2 - 8.60467152213735e-11f;
  p = p * x2 + 5.12229709037114e-08f;
  p = p * x2 + 1.48572235717979e-05f;
  p = p * x2 + 6.37261928875436e-04f;
  p = p * x2 + 4.89352455891786e-03f;
  float q = 1.19825839466702e-06f;
  q = q * x2 + 1.18534705686654e-04f;
  q = q * x2 + 2.26843463243900e-03f;
  q = q * x2 + 4.89352518554385e-03f;
  const float t = c * p / q;
  return t > 1.0f ? 1.0f : (t < -1.0f ? -1.0f : t);
}
)";

constexpr std::string_view kErf = R"(static inline float kf_erf(float x) {
  const float c = x < -4.0f ? -4.0f : (x > 4.0f ? 4.0f : x);
  const float x2 = c * c;
  float p = -2.72614225801306e-10f;
  p = p * x2 + 2.77068142495902e-08f;
  p = p * x2 - 2.10102402082508e-06f;
  p = p * x2 - 5.69250639462346e-05f;
  p = p * x2 - 7.34990630326855e-04f;
  p = p * x2 - 2.95459980854025e-03f;
  p = p * x2 - 1.60960333262415e-02f;
  float q = -1.45660718464996e-05f;
  q = q * x2 - 2.13374055278905e-04f;
  q = q * x2 - 1.68282697438203e-03f;
  q = q * x2 - 7.37332916720468e-03f;
  q = q * x2 - 1.42647390514189e-02f;
  const float e = c * p / q;
  return e > 1.0f ? 1.0f : (e < -1.0f ? -1.0f : e);
}
)";

constexpr std::string_view kCudaStorage =
    R"(__device__ __forceinline__ float kf_ld(float v) { return v; }
__device__ __forceinline__ float kf_ld(__half v) { return __half2float(v); }
__device__ __forceinline__ float kf_ld(__nv_bfloat16 v) { return __bfloat162float(v); }
__device__ __forceinline__ bool kf_ld(uint8_t v) { return v != 0; }
__device__ __forceinline__ int64_t kf_ld(int64_t v) { return v; }
__device__ __forceinline__ void kf_st(float& d, float v) { d = v; }
__device__ __forceinline__ void kf_st(__half& d, float v) { d = __float2half_rn(v); }
__device__ __forceinline__ void kf_st(__nv_bfloat16& d, float v) { d = __float2bfloat16_rn(v); }
__device__ __forceinline__ void kf_st(uint8_t& d, bool v) { d = v ? 1 : 0; }

template <typename T, int V>
struct alignas(sizeof(T) * V) kf_pack {
  T v[V];
};

template <int V, typename T>
__device__ __forceinline__ kf_pack<T, V> kf_load(const T* p) {
  return *reinterpret_cast<const kf_pack<T, V>*>(p);
}

template <int V, typename T>
static bool kf_aligned(const T* p) {
  return reinterpret_cast<uintptr_t>(p) % (sizeof(T) * V) == 0;
}
)";

}  // namespace

std::string_view KernelExpSource() { return kExp; }

std::string CpuKernelHead(bool uses_exp, bool uses_tanh, bool uses_erf) {
  std::string s =
      "#include <omp.h>\n\n#include <cmath>\n#include <cstdint>\n#include <cstdlib>\n\n"
      "#include \"kfleet/kernel.h\"\n";
  if (uses_exp) s += KernelExpSource();
  if (uses_tanh) s += KernelTanhSource();
  if (uses_erf) s += KernelErfSource();
  return s;
}
std::string_view KernelTanhSource() { return kTanh; }
std::string_view KernelErfSource() { return kErf; }
std::string_view CudaStorageSource() { return kCudaStorage; }

std::string_view KernelStorageType(planner::DType dtype) {
  switch (dtype) {
    case planner::DType::kF32:
      return "float";
    case planner::DType::kF16:
      return "__half";
    case planner::DType::kBF16:
      return "__nv_bfloat16";
    case planner::DType::kF64:
      return "double";
    case planner::DType::kI64:
      return "int64_t";
    case planner::DType::kI32:
      return "int32_t";
    case planner::DType::kI16:
      return "int16_t";
    case planner::DType::kI8:
      return "int8_t";
    case planner::DType::kU8:
    case planner::DType::kBool:
      return "uint8_t";
  }
  return "float";
}

std::string_view KernelAbiDType(planner::DType dtype) {
  switch (dtype) {
    case planner::DType::kF32:
      return "KF_F32";
    case planner::DType::kF16:
      return "KF_F16";
    case planner::DType::kBF16:
      return "KF_BF16";
    case planner::DType::kF64:
      return "KF_F64";
    case planner::DType::kI64:
      return "KF_I64";
    case planner::DType::kI32:
      return "KF_I32";
    case planner::DType::kI16:
      return "KF_I16";
    case planner::DType::kI8:
      return "KF_I8";
    case planner::DType::kU8:
      return "KF_U8";
    case planner::DType::kBool:
      return "KF_BOOL";
  }
  return "KF_F32";
}

}  // namespace kfleet::agents

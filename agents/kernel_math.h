// Source text every template pastes into the kernels it renders. Single-precision math: libm's
// expf / tanhf / erff are calls GCC will not vectorize, these are plain arithmetic it does (each
// defines a `static inline float kf_<name>(float)`). And what CUDA kernels share: storage
// conversions and vector packs, and the spelling of element types.
#pragma once

#include <string>
#include <string_view>

#include "planner/graph.h"

namespace kfleet::agents {

// e^x to about 2 ulp (x = n ln2 + r, a degree-6 polynomial for e^r); results underflow to
// denormals and overflow to Inf as expf does.
std::string_view KernelExpSource();
// tanh as an odd rational on [-9, 9], relative error about 3e-7, also near 0.
std::string_view KernelTanhSource();
// erf as an odd rational on [-4, 4] (+-1 beyond), relative error about 4e-7.
std::string_view KernelErfSource();

// The head of a rendered CPU kernel: the headers it needs (OpenMP, cmath, cstdint, cstdlib,
// kfleet/kernel.h) and the math helpers above that it uses.
std::string CpuKernelHead(bool uses_exp, bool uses_tanh, bool uses_erf);

// For CUDA kernels (after cuda_fp16.h, cuda_bf16.h and cstdint): kf_ld(x) reads a stored element
// as kernels compute with it (f32 for float types, bool for a uint8_t bool, i64), kf_st(dst, v)
// stores one (half types rounded once); kf_pack<T, V> is V elements moved in one vector access
// by kf_load<V>(p), for p that the host found kf_aligned<V>.
std::string_view CudaStorageSource();

// How rendered kernels spell a tensor's element type in memory: "float", "__half" and
// "__nv_bfloat16" (CUDA's headers), "uint8_t" for bool, "int64_t", ...
std::string_view KernelStorageType(planner::DType dtype);
// The kf_dtype code of a dtype, as kfleet/kernel.h spells it: "KF_F32", "KF_BOOL", ...
std::string_view KernelAbiDType(planner::DType dtype);

}  // namespace kfleet::agents

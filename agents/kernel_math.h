// Single-precision math for rendered kernels, as C++ source text every template pastes in:
// libm's expf / tanhf / erff are calls GCC will not vectorize, these are plain arithmetic it
// does. Each defines a `static inline float kf_<name>(float)`.
#pragma once

#include <string_view>

namespace kfleet::agents {

// e^x to about 2 ulp (x = n ln2 + r, a degree-6 polynomial for e^r); results underflow to
// denormals and overflow to Inf as expf does.
std::string_view KernelExpSource();
// tanh as an odd rational on [-9, 9], relative error about 3e-7, also near 0.
std::string_view KernelTanhSource();
// erf as an odd rational on [-4, 4] (+-1 beyond), relative error about 4e-7.
std::string_view KernelErfSource();

}  // namespace kfleet::agents

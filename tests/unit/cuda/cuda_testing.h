// Shared by the GPU tests: skip cleanly without a usable CUDA device, and run a small ONNX-text
// graph on the CUDA baseline against the float64 reference.
#pragma once

#include <gtest/gtest.h>

#include <map>
#include <string>
#include <string_view>

#include "cuda/device.h"
#include "planner/graph.h"
#include "runtime/tensor.h"

// Skips the test, saying why, when no CUDA device is usable here (CI has none).
#define KF_REQUIRE_GPU()                                                    \
  do {                                                                      \
    const ::kfleet::Status kf_gpu_status = ::kfleet::cuda::Available();     \
    if (!kf_gpu_status.ok()) {                                              \
      GTEST_SKIP() << "no usable CUDA device: " << kf_gpu_status.message(); \
    }                                                                       \
  } while (false)

namespace kfleet::cuda::testing {

// "<ir_version: 8, opset_import: ["" : 17]>" + body.
std::string Model(std::string_view body, int opset = 17);

// How far the CUDA result may be from the float64 reference: max |out - ref| over
// (rms(ref) + 1e-30), per output; NaN fails. Defaults suit f32 arithmetic.
struct Tolerance {
  double f32 = 1e-5;
  double f16 = 2e-3;
  double bf16 = 1.6e-2;
};

struct Checked {
  planner::Graph graph;
  std::map<std::string, runtime::Tensor> outputs;  // the CUDA baseline's, by name
  std::map<std::string, double> errors;            // scaled error per output, as above
};

// Imports `model` (ONNX text), draws random feeds (runtime::MakeRandomFeeds, seed `seed`,
// weights included), runs the CUDA baseline and the float64 reference on them, and adds a
// gtest failure for every output further from the reference than `tolerance` allows for its
// dtype. An error Status when the graph cannot be imported or run (the test decides whether
// that is expected).
Result<Checked> RunAndCompare(std::string_view model, const Tolerance& tolerance = {},
                              uint64_t seed = 7);

}  // namespace kfleet::cuda::testing

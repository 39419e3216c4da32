#include "cuda_testing.h"

#include <fmt/format.h>

#include <cmath>

#include "cuda/baseline.h"
#include "planner/onnx_import.h"
#include "runtime/feeds.h"
#include "runtime/reference.h"

namespace kfleet::cuda::testing {

std::string Model(std::string_view body, int opset) {
  return fmt::format("<ir_version: 8, opset_import: [\"\" : {}]>\n{}", opset, body);
}

namespace {

double Allowed(const Tolerance& tolerance, planner::DType dtype) {
  switch (dtype) {
    case planner::DType::kF16:
      return tolerance.f16;
    case planner::DType::kBF16:
      return tolerance.bf16;
    case planner::DType::kF32:
    case planner::DType::kF64:
      return tolerance.f32;
    default:
      return 0.0;  // integers and bool: exact
  }
}

}  // namespace

Result<Checked> RunAndCompare(std::string_view model, const Tolerance& tolerance, uint64_t seed) {
  Checked checked;
  KF_ASSIGN_OR_RETURN(checked.graph, planner::ImportOnnxText(model, {}));
  runtime::FeedOptions feed;
  feed.seed = seed;
  KF_ASSIGN_OR_RETURN(runtime::TensorMap feeds, runtime::MakeRandomFeeds(checked.graph, feed));
  KF_ASSIGN_OR_RETURN(runtime::TensorMap reference, runtime::RunReference(checked.graph, feeds));
  KF_RETURN_IF_ERROR(UseDevice(0));
  KF_ASSIGN_OR_RETURN(auto executor, CudaBaseline::Create(checked.graph));
  runtime::TensorMap outputs;
  KF_RETURN_IF_ERROR(executor->Run(feeds, &outputs));
  for (int id : checked.graph.outputs) {
    const planner::Value& value = checked.graph.values[id];
    const runtime::Tensor& out = outputs.at(id);
    const runtime::Tensor& ref = reference.at(id);
    EXPECT_EQ(out.dtype(), value.dtype) << value.name;
    EXPECT_EQ(out.shape(), ref.shape()) << value.name;
    double sum_sq = 0;
    for (int64_t i = 0; i < ref.elements(); ++i) sum_sq += ref.GetDouble(i) * ref.GetDouble(i);
    const double rms =
        ref.elements() > 0 ? std::sqrt(sum_sq / static_cast<double>(ref.elements())) : 0.0;
    double worst = 0;
    int64_t worst_at = -1;
    for (int64_t i = 0; i < ref.elements() && i < out.elements(); ++i) {
      const double r = ref.GetDouble(i);
      const double o = out.GetDouble(i);
      // Infinities in the reference (a mask's -inf) must match exactly.
      const double e = std::isinf(r)
                           ? (o == r ? 0.0 : INFINITY)
                           : (std::isnan(o) ? INFINITY : std::fabs(o - r) / (rms + 1e-30));
      if (!(e <= worst)) {
        worst = e;
        worst_at = i;
      }
    }
    checked.errors[value.name] = worst;
    const double allowed = Allowed(tolerance, value.dtype);
    EXPECT_LE(worst, allowed) << fmt::format(
        "{} {}: element {} is {} on the GPU, {} in the reference (error {:.3g} of rms {:.3g})",
        value.name, planner::DTypeName(value.dtype), worst_at,
        worst_at >= 0 ? out.GetDouble(worst_at) : 0.0,
        worst_at >= 0 ? ref.GetDouble(worst_at) : 0.0, worst, rms);
    checked.outputs.emplace(value.name, out);
  }
  return checked;
}

}  // namespace kfleet::cuda::testing

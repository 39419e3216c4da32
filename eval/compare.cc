#include "eval/compare.h"

#include <fmt/format.h>

#include <cmath>
#include <cstring>
#include <limits>

namespace kfleet::eval {
namespace {

using runtime::DType;
using runtime::Tensor;

// Signaling NaNs with payloads arithmetic never creates (it would set the quiet bit).
constexpr uint32_t kPoisonF32 = 0x7fa5dead;
constexpr uint64_t kPoisonF64 = 0x7ff4deadbeef5a5aull;
constexpr uint16_t kPoisonF16 = 0x7d5a;
constexpr uint16_t kPoisonBF16 = 0x7fa5;
constexpr uint8_t kPoisonByte = 0xa5;

double LargestFinite(DType dtype) {
  switch (dtype) {
    case DType::kF16:
      return 65504.0;
    case DType::kBF16:
      return 3.3895313892515355e38;
    case DType::kF32:
      return std::numeric_limits<float>::max();
    default:
      return std::numeric_limits<double>::max();
  }
}

// The reference value as the output dtype holds it.
double RoundTo(DType dtype, double value) {
  switch (dtype) {
    case DType::kF32:
      return static_cast<float>(value);
    case DType::kF16:
      return runtime::HalfToFloat(runtime::FloatToHalf(static_cast<float>(value)));
    case DType::kBF16:
      return runtime::BFloat16ToFloat(runtime::FloatToBFloat16(static_cast<float>(value)));
    default:
      return value;
  }
}

}  // namespace

Tolerance ToleranceTable::For(DType dtype) const {
  switch (dtype) {
    case DType::kF32:
      return f32;
    case DType::kF64:
      return f64;
    case DType::kF16:
      return f16;
    case DType::kBF16:
      return bf16;
    default:
      return {0.0, 1.0};
  }
}

void Poison(Tensor& tensor) {
  const int64_t n = tensor.elements();
  switch (tensor.dtype()) {
    case DType::kF32:
      for (int64_t i = 0; i < n; ++i) std::memcpy(tensor.as<float>() + i, &kPoisonF32, 4);
      return;
    case DType::kF64:
      for (int64_t i = 0; i < n; ++i) std::memcpy(tensor.as<double>() + i, &kPoisonF64, 8);
      return;
    case DType::kF16:
      std::fill_n(tensor.as<uint16_t>(), n, kPoisonF16);
      return;
    case DType::kBF16:
      std::fill_n(tensor.as<uint16_t>(), n, kPoisonBF16);
      return;
    default:
      std::memset(tensor.data(), kPoisonByte, tensor.bytes());
      return;
  }
}

bool IsPoison(const Tensor& tensor, int64_t index) {
  switch (tensor.dtype()) {
    case DType::kF32: {
      uint32_t bits;
      std::memcpy(&bits, tensor.as<float>() + index, 4);
      return bits == kPoisonF32;
    }
    case DType::kF64: {
      uint64_t bits;
      std::memcpy(&bits, tensor.as<double>() + index, 8);
      return bits == kPoisonF64;
    }
    case DType::kF16:
      return tensor.as<uint16_t>()[index] == kPoisonF16;
    case DType::kBF16:
      return tensor.as<uint16_t>()[index] == kPoisonBF16;
    default: {
      const auto width = static_cast<size_t>(planner::DTypeBytes(tensor.dtype()));
      const auto* bytes = static_cast<const uint8_t*>(tensor.data()) + index * width;
      for (size_t b = 0; b < width; ++b) {
        if (bytes[b] != kPoisonByte) return false;
      }
      return true;
    }
  }
}

std::string ElementName(const std::string& tensor_name, const runtime::Shape& shape,
                        int64_t index) {
  std::vector<int64_t> coords(shape.size());
  for (size_t d = shape.size(); d-- > 0;) {
    coords[d] = shape[d] == 0 ? 0 : index % shape[d];
    if (shape[d] != 0) index /= shape[d];
  }
  return fmt::format("{}[{}]", tensor_name, fmt::join(coords, ","));
}

CompareResult CompareOutput(const std::string& name, const Tensor& actual, const Tensor& reference,
                            const Tolerance& tolerance) {
  CompareResult r;
  r.elements = actual.elements();
  if (actual.shape() != reference.shape()) {
    r.passed = false;
    r.message = fmt::format("{} has shape {}, the reference {}", name,
                            planner::ShapeToString(actual.shape()),
                            planner::ShapeToString(reference.shape()));
    return r;
  }
  const DType dtype = actual.dtype();
  const bool floating = planner::IsFloat(dtype);
  std::string first_hard;
  auto hard = [&](int64_t i, std::string what) {
    ++r.mismatched;
    if (first_hard.empty()) {
      first_hard = std::move(what);
      r.worst_index = i;
    }
  };

  if (!floating) {
    for (int64_t i = 0; i < r.elements; ++i) {
      if (IsPoison(actual, i) && reference.GetInt(i) != actual.GetInt(i)) {
        ++r.unwritten;
        hard(i, "was never written");
      } else if (actual.GetInt(i) != reference.GetInt(i)) {
        hard(i, fmt::format("is {}, expected {}", actual.GetInt(i), reference.GetInt(i)));
      }
    }
  } else {
    // Typical magnitude of the finite reference values, the scale for near-zero elements.
    double sum_sq = 0;
    int64_t finite = 0;
    for (int64_t i = 0; i < r.elements; ++i) {
      double ref = RoundTo(dtype, reference.GetDouble(i));
      if (std::isfinite(ref)) {
        sum_sq += ref * ref;
        ++finite;
      }
    }
    const double rms = finite > 0 ? std::sqrt(sum_sq / static_cast<double>(finite)) : 0.0;
    const double scale_floor = std::max(rms, std::numeric_limits<double>::min());
    const double largest = LargestFinite(dtype);
    double worst_rel = -1;
    for (int64_t i = 0; i < r.elements; ++i) {
      const double exact = reference.GetDouble(i);
      const double ref = RoundTo(dtype, exact);
      const double got = actual.GetDouble(i);
      if (IsPoison(actual, i)) {
        ++r.unwritten;
        hard(i, "never written (still holds the poison NaN)");
        continue;
      }
      if (std::isnan(ref)) {
        if (!std::isnan(got)) {
          ++r.wrong_special;
          hard(i, fmt::format("is {} where the reference is NaN", got));
        }
        continue;
      }
      if (std::isnan(got)) {
        ++r.unexpected_nan;
        hard(i, fmt::format("is NaN where the reference is {:.6g}", exact));
        continue;
      }
      if (std::isinf(ref) || std::isinf(got)) {
        // An overflow right at the dtype's edge may go either way; anything else must agree.
        const bool same_sign = std::signbit(ref) == std::signbit(got);
        const bool edge = std::fabs(exact) >= 0.5 * largest && same_sign;
        if (!(std::isinf(ref) && std::isinf(got) && same_sign) && !edge) {
          ++r.wrong_special;
          hard(i, fmt::format("is {} where the reference is {:.6g}", got, exact));
        }
        continue;
      }
      const double abs_err = std::fabs(got - ref);
      const double rel_err = abs_err / (std::fabs(ref) + scale_floor);
      r.max_abs_error = std::max(r.max_abs_error, abs_err);
      if (rel_err > worst_rel) {
        worst_rel = rel_err;
        if (first_hard.empty()) r.worst_index = i;
      }
      if (rel_err > tolerance.rtol) ++r.mismatched;
    }
    r.max_rel_error = std::max(worst_rel, 0.0);
  }

  r.matched_ratio = r.elements == 0
                        ? 1.0
                        : 1.0 - static_cast<double>(r.mismatched) / static_cast<double>(r.elements);
  const bool ratio_ok = r.matched_ratio >= tolerance.min_matched_ratio;
  r.passed = first_hard.empty() && ratio_ok;
  if (!first_hard.empty()) {
    std::string extra;
    if (r.unwritten > 1) extra = fmt::format(" ({} elements never written)", r.unwritten);
    r.message =
        fmt::format("{} {}{}", ElementName(name, actual.shape(), r.worst_index), first_hard, extra);
  } else if (!ratio_ok) {
    r.message = fmt::format(
        "{} of {} elements outside tolerance (rtol {:g}; matched {:.4f}% < required {:.4f}%); "
        "worst {}: got {:.8g}, reference {:.8g} (relative error {:.3g})",
        r.mismatched, r.elements, tolerance.rtol, 100 * r.matched_ratio,
        100 * tolerance.min_matched_ratio, ElementName(name, actual.shape(), r.worst_index),
        actual.GetDouble(r.worst_index), reference.GetDouble(r.worst_index), r.max_rel_error);
  }
  return r;
}

}  // namespace kfleet::eval

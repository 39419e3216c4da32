// Deciding whether a kernel's output matches the float64 reference, and the poison that shows
// which output elements a kernel never wrote.
#pragma once

#include <cstdint>
#include <string>

#include "runtime/tensor.h"

namespace kfleet::eval {

// An element matches when |actual - ref| <= rtol * (|ref| + rms(ref)): relative to the element
// and, for elements near zero (cancellation), to the tensor's typical magnitude. The output passes
// when at least min_matched_ratio of its elements match and no element breaks a hard rule (see
// CompareOutput).
struct Tolerance {
  double rtol = 1e-4;
  double min_matched_ratio = 1.0;
};

struct ToleranceTable {
  Tolerance f32{1e-4, 1.0};
  Tolerance f64{1e-9, 1.0};
  Tolerance f16{1e-2, 0.999};
  Tolerance bf16{2e-2, 0.999};
  // The numerical stability stage feeds inputs a thousand times larger or smaller than usual;
  // rounding grows with them, so its tolerance is rtol times this factor.
  double stability_factor = 10.0;

  // Integer and bool outputs always match exactly.
  Tolerance For(runtime::DType dtype) const;
};

struct CompareResult {
  bool passed = true;
  int64_t elements = 0;
  int64_t mismatched = 0;      // outside tolerance (including the hard failures below)
  int64_t unwritten = 0;       // still holding the poison pattern
  int64_t unexpected_nan = 0;  // NaN where the reference has a number
  int64_t wrong_special = 0;   // reference NaN / Inf not matched
  double matched_ratio = 1.0;
  double max_abs_error = 0;
  double max_rel_error = 0;  // |actual - ref| / (|ref| + rms(ref))
  int64_t worst_index = -1;  // element with the largest relative error, or first hard failure
  std::string message;       // empty when passed; else one line a person can act on
};

// `actual` is in the output's dtype; `reference` is the reference's kF64 (or kI64 / kBool)
// result. The reference is rounded to the output dtype first, so a value too large for f16 is
// expected to be Inf. Hard failures, whatever the ratio: an element left unwritten (poison), a
// NaN the reference does not have, a reference NaN or Inf not reproduced, an integer that
// differs.
// `name` ("out0") prefixes the message.
CompareResult CompareOutput(const std::string& name, const runtime::Tensor& actual,
                            const runtime::Tensor& reference, const Tolerance& tolerance);

// Fills a floating tensor with a NaN whose payload no arithmetic produces (integer tensors with
// a fixed byte pattern); CompareOutput counts elements still holding it as unwritten.
void Poison(runtime::Tensor& tensor);
bool IsPoison(const runtime::Tensor& tensor, int64_t index);

// "out0[1,37,5]" for a row-major element index.
std::string ElementName(const std::string& tensor_name, const runtime::Shape& shape, int64_t index);

}  // namespace kfleet::eval

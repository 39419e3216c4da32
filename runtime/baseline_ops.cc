// Baseline kernels for elementwise ops, Cast, Softmax, reductions and normalizations: one pass
// over contiguous memory wherever the shapes allow, vectorizable inner loops, OpenMP across rows.
#include "runtime/baseline_ops.h"

#include <fmt/format.h>

#include <bit>
#include <cmath>
#include <limits>
#include <numeric>
#include <set>
#include <utility>

#include "planner/import_internal.h"
#include "runtime/tensor.h"

namespace kfleet::runtime::baseline {
namespace {

using planner::ShapeToString;

// Transcendental functions cost tens of cycles per element, so fewer elements fill a thread.
constexpr int64_t kMathGrainElements = kParallelGrainElements / 8;

// ---- Unary ----

template <typename In, typename Out, typename F>
Kernel UnaryKernel(F f, int64_t grain) {
  return [f, grain](const OpArgs& a) {
    const In* x = a.inputs[0]->as<const In>();
    Out* y = a.outputs[0]->as<Out>();
    ParallelFor(a.outputs[0]->elements, grain, [&](int64_t begin, int64_t end) {
#pragma omp simd
      for (int64_t i = begin; i < end; ++i) y[i] = f(x[i]);
    });
    return Status::Ok();
  };
}

float Erf(float x) { return std::erf(x); }

// e^x in float, vectorizable (Cephes expf: 2^n times a degree-6 polynomial on [-ln2/2, ln2/2],
// about 1 ulp). Results below FLT_MIN flush to zero; above FLT_MAX they are Inf; NaN stays NaN.
inline float ExpApprox(float x) {
  const float clamped = std::min(std::max(x, -87.33654f), 88.37626f);
  // Round to nearest by the 1.5 * 2^23 shifter: plain adds, so the loop vectorizes.
  constexpr float kShifter = 12582912.0f;
  const float n = (clamped * 1.44269504088896341f + kShifter) - kShifter;
  const float r = clamped - n * 0.693359375f - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const float scale = std::bit_cast<float>((static_cast<int32_t>(n) + 127) << 23);
  float result = p * scale;
  result = x > 88.72283f ? std::numeric_limits<float>::infinity() : result;
  result = x < -87.33654f ? 0.0f : result;
  return x != x ? x : result;
}

// tanh in float, vectorizable (Cephes tanhf): an odd polynomial near zero, 1 - 2 / (e^2|x| + 1)
// beyond.
inline float TanhApprox(float x) {
  const float z = x * x;
  const float small = ((((-5.70498872745e-3f * z + 2.06390887954e-2f) * z - 5.37397155531e-2f) * z +
                        1.33314422036e-1f) *
                           z -
                       3.33332819422e-1f) *
                          z * x +
                      x;
  const float a = std::fabs(x);
  const float large = std::copysign(1.0f - 2.0f / (ExpApprox(2.0f * a) + 1.0f), x);
  return a < 0.625f ? small : large;
}

KF_SIMD_CLONES void ExpFloats(const float* x, float* y, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) y[i] = ExpApprox(x[i]);
}

KF_SIMD_CLONES void TanhFloats(const float* x, float* y, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) y[i] = TanhApprox(x[i]);
}

KF_SIMD_CLONES void SigmoidFloats(const float* x, float* y, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) y[i] = 1.0f / (1.0f + ExpApprox(-x[i]));
}

KF_SIMD_CLONES void GeluTanhFloats(const float* x, float* y, int64_t n) {
  constexpr float kSqrt2OverPi = 0.7978845608028654f;
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    const float v = x[i];
    y[i] = 0.5f * v * (1.0f + TanhApprox(kSqrt2OverPi * (v + 0.044715f * v * v * v)));
  }
}

// An elementwise op over whole arrays, split across the team.
PreparedOp FloatArrayOp(void (*fn)(const float*, float*, int64_t)) {
  Kernel run = [fn](const OpArgs& a) {
    const float* x = a.inputs[0]->as<const float>();
    float* y = a.outputs[0]->as<float>();
    ParallelFor(a.outputs[0]->elements, kMathGrainElements,
                [&](int64_t begin, int64_t end) { fn(x + begin, y + begin, end - begin); });
    return Status::Ok();
  };
  return {std::move(run), 0, false};
}

template <typename F>
PreparedOp FloatUnary(F f, int64_t grain = kParallelGrainElements) {
  return {UnaryKernel<float, float>(f, grain), 0, false};
}

// Clip's bounds are inputs since opset 11 (possibly computed at run time), attributes before.
template <typename T>
PreparedOp ClipOp(const NodeContext& c) {
  const bool has_min = c.HasInput(1);
  const bool has_max = c.HasInput(2);
  const T attr_min = c.node().HasAttr("min") ? static_cast<T>(c.node().FloatAttr("min", 0))
                                             : std::numeric_limits<T>::lowest();
  const T attr_max = c.node().HasAttr("max") ? static_cast<T>(c.node().FloatAttr("max", 0))
                                             : std::numeric_limits<T>::max();
  Kernel run = [=](const OpArgs& a) {
    const T lo = has_min ? a.inputs[1]->as<const T>()[0] : attr_min;
    const T hi = has_max ? a.inputs[2]->as<const T>()[0] : attr_max;
    const T* x = a.inputs[0]->as<const T>();
    T* y = a.outputs[0]->as<T>();
    ParallelFor(a.outputs[0]->elements, kParallelGrainElements, [&](int64_t begin, int64_t end) {
#pragma omp simd
      for (int64_t i = begin; i < end; ++i) y[i] = std::min(std::max(x[i], lo), hi);
    });
    return Status::Ok();
  };
  return {std::move(run), 0, false};
}

Result<PreparedOp> PrepareUnary(const NodeContext& c) {
  KF_RETURN_IF_ERROR(c.RequireInputs(1));
  const std::string& op = c.node().op_type;
  const Storage storage = c.InStorage(0);
  if (op == "Not") {
    if (storage != Storage::kBool) return InvalidArgument("Not needs a bool input");
    return PreparedOp{UnaryKernel<uint8_t, uint8_t>([](uint8_t v) -> uint8_t { return v == 0; },
                                                    kParallelGrainElements),
                      0, false};
  }
  if (op == "IsNaN") {
    if (storage != Storage::kFloat) return InvalidArgument("IsNaN needs a floating input");
    return PreparedOp{
        UnaryKernel<float, uint8_t>([](float v) -> uint8_t { return std::isnan(v) ? 1 : 0; },
                                    kParallelGrainElements),
        0, false};
  }
  if (storage == Storage::kInt) {
    if (op == "Neg") {
      return PreparedOp{
          UnaryKernel<int64_t, int64_t>(
              [](int64_t v) { return static_cast<int64_t>(0 - static_cast<uint64_t>(v)); },
              kParallelGrainElements),
          0, false};
    }
    if (op == "Abs") {
      return PreparedOp{UnaryKernel<int64_t, int64_t>([](int64_t v) { return v < 0 ? -v : v; },
                                                      kParallelGrainElements),
                        0, false};
    }
    if (op == "Relu") {
      return PreparedOp{
          UnaryKernel<int64_t, int64_t>([](int64_t v) { return std::max<int64_t>(v, 0); },
                                        kParallelGrainElements),
          0, false};
    }
    if (op == "Clip") return ClipOp<int64_t>(c);
  }
  if (storage != Storage::kFloat) {
    return InvalidArgument(
        fmt::format("{} of {} is not supported", op, planner::DTypeName(c.Input(0).dtype)));
  }
  if (op == "Sqrt") return FloatUnary([](float v) { return std::sqrt(v); });
  if (op == "Reciprocal") return FloatUnary([](float v) { return 1.0f / v; });
  if (op == "Neg") return FloatUnary([](float v) { return -v; });
  if (op == "Abs") return FloatUnary([](float v) { return std::fabs(v); });
  if (op == "Relu") return FloatUnary([](float v) { return v > 0.0f ? v : 0.0f; });
  if (op == "Exp") return FloatArrayOp(ExpFloats);
  if (op == "Log") return FloatUnary([](float v) { return std::log(v); }, kMathGrainElements);
  if (op == "Erf") return FloatUnary(Erf, kMathGrainElements);
  if (op == "Tanh") return FloatArrayOp(TanhFloats);
  if (op == "Cos") return FloatUnary([](float v) { return std::cos(v); }, kMathGrainElements);
  if (op == "Sin") return FloatUnary([](float v) { return std::sin(v); }, kMathGrainElements);
  if (op == "Sigmoid") return FloatArrayOp(SigmoidFloats);
  if (op == "Softplus") {
    // log(1 + e^x) without overflow for large x.
    return FloatUnary(
        [](float v) { return std::max(v, 0.0f) + std::log1p(std::exp(-std::fabs(v))); },
        kMathGrainElements);
  }
  if (op == "LeakyRelu") {
    const auto alpha = static_cast<float>(c.node().FloatAttr("alpha", 0.01));
    return FloatUnary([alpha](float v) { return v >= 0.0f ? v : alpha * v; });
  }
  if (op == "HardSigmoid") {
    const auto alpha = static_cast<float>(c.node().FloatAttr("alpha", 0.2));
    const auto beta = static_cast<float>(c.node().FloatAttr("beta", 0.5));
    return FloatUnary(
        [alpha, beta](float v) { return std::min(1.0f, std::max(0.0f, alpha * v + beta)); });
  }
  if (op == "HardSwish") {
    return FloatUnary([](float v) { return v * std::min(1.0f, std::max(0.0f, v / 6.0f + 0.5f)); });
  }
  if (op == "Gelu") {
    const std::string approximate = c.node().StringAttr("approximate", "none");
    if (approximate == "tanh") return FloatArrayOp(GeluTanhFloats);
    if (approximate != "none") {
      return InvalidArgument(fmt::format("unknown approximate '{}'", approximate));
    }
    return FloatUnary([](float v) { return 0.5f * v * (1.0f + std::erf(v * 0.7071067811865476f)); },
                      kMathGrainElements);
  }
  if (op == "Clip") return ClipOp<float>(c);
  return InvalidArgument(fmt::format("no baseline kernel for {}", op));
}

// ---- Binary and variadic ----

template <typename A, typename B, typename O, typename F>
void RunBinary(const BroadcastPlan<2>& plan, const A* x, const B* y, O* out, const F& f) {
  const int64_t sx = plan.inner_stride(0);
  const int64_t sy = plan.inner_stride(1);
  ForEachRun(plan, [&](int64_t o, const std::array<int64_t, 2>& off, int64_t n) {
    O* dst = out + o;
    const A* px = x + off[0];
    const B* py = y + off[1];
    if (sx == 1 && sy == 1) {
#pragma omp simd
      for (int64_t i = 0; i < n; ++i) dst[i] = f(px[i], py[i]);
    } else if (sx == 1) {
      const B yv = *py;
#pragma omp simd
      for (int64_t i = 0; i < n; ++i) dst[i] = f(px[i], yv);
    } else if (sy == 1) {
      const A xv = *px;
#pragma omp simd
      for (int64_t i = 0; i < n; ++i) dst[i] = f(xv, py[i]);
    } else {
      std::fill(dst, dst + n, static_cast<O>(f(*px, *py)));
    }
  });
}

template <typename A, typename B, typename O, typename F>
PreparedOp BinaryOp(const NodeContext& c, F f) {
  auto plan = BroadcastPlan<2>::Make(c.OutShape(0), {c.InShape(0), c.InShape(1)});
  Kernel run = [plan = std::move(plan), f](const OpArgs& a) {
    RunBinary(plan, a.inputs[0]->as<const A>(), a.inputs[1]->as<const B>(), a.outputs[0]->as<O>(),
              f);
    return Status::Ok();
  };
  return {std::move(run), 0, false};
}

// Max and Min take any number of inputs: the first is broadcast into the output, which then
// absorbs the others one at a time.
template <typename T, typename F>
PreparedOp VariadicOp(const NodeContext& c, F f) {
  std::vector<std::pair<size_t, BroadcastPlan<2>>> steps;
  size_t first = c.node().inputs.size();
  for (size_t i = 0; i < c.node().inputs.size(); ++i) {
    if (!c.HasInput(i)) continue;
    if (first == c.node().inputs.size()) {
      first = i;
      continue;
    }
    steps.emplace_back(i, BroadcastPlan<2>::Make(c.OutShape(0), {c.OutShape(0), c.InShape(i)}));
  }
  const Shape first_shape = c.InShape(first);
  const Shape out_shape = c.OutShape(0);
  Kernel run = [=](const OpArgs& a) {
    T* out = a.outputs[0]->as<T>();
    BroadcastCopy(a.inputs[first]->as<const T>(), first_shape, out, out_shape);
    for (const auto& step : steps) {
      RunBinary(step.second, out, a.inputs[step.first]->as<const T>(), out, f);
    }
    return Status::Ok();
  };
  return {std::move(run), 0, false};
}

template <typename T>
T DivideInt(T a, T b) {
  // C++ leaves these undefined; ONNX does not define them either.
  if (b == 0 || (a == std::numeric_limits<T>::min() && b == -1)) return 0;
  return a / b;
}

int64_t PowInt(int64_t base, int64_t exponent) {
  if (exponent < 0) return base == 1 ? 1 : (base == -1 ? (exponent % 2 == 0 ? 1 : -1) : 0);
  uint64_t result = 1;
  auto b = static_cast<uint64_t>(base);
  while (exponent > 0) {
    if ((exponent & 1) != 0) result *= b;
    b *= b;
    exponent >>= 1;
  }
  return static_cast<int64_t>(result);
}

// The exponent when Pow's second input is a plan-time scalar.
std::optional<double> ScalarExponent(const NodeContext& c) {
  if (!c.IsConstant(1) || planner::NumElements(c.InShape(1)) != 1) return std::nullopt;
  Result<std::vector<double>> value = c.ConstFloats(1, "exponent");
  if (!value.ok()) return std::nullopt;
  return (*value)[0];
}

Result<PreparedOp> PreparePow(const NodeContext& c) {
  const Storage base = c.InStorage(0);
  const Storage exponent = c.InStorage(1);
  if (base == Storage::kFloat) {
    // Squares and square roots from exporters' decompositions (variance, GELU) skip std::pow.
    std::optional<double> e = ScalarExponent(c);
    if (e && c.OutShape(0) == c.InShape(0)) {
      if (*e == 1.0) return FloatUnary([](float v) { return v; });
      if (*e == 2.0) return FloatUnary([](float v) { return v * v; });
      if (*e == 3.0) return FloatUnary([](float v) { return v * v * v; });
      if (*e == 0.5) return FloatUnary([](float v) { return std::sqrt(v); });
    }
    if (exponent == Storage::kFloat) {
      return BinaryOp<float, float, float>(c, [](float x, float y) { return std::pow(x, y); });
    }
    if (exponent == Storage::kInt) {
      return BinaryOp<float, int64_t, float>(
          c, [](float x, int64_t y) { return std::pow(x, static_cast<float>(y)); });
    }
  }
  if (base == Storage::kInt) {
    if (exponent == Storage::kInt) return BinaryOp<int64_t, int64_t, int64_t>(c, PowInt);
    if (exponent == Storage::kFloat) {
      return BinaryOp<int64_t, float, int64_t>(c, [](int64_t x, float y) {
        return static_cast<int64_t>(std::pow(static_cast<double>(x), static_cast<double>(y)));
      });
    }
  }
  return InvalidArgument(fmt::format("Pow of {} by {} is not supported",
                                     planner::DTypeName(c.Input(0).dtype),
                                     planner::DTypeName(c.Input(1).dtype)));
}

template <typename T>
Result<PreparedOp> ArithmeticFor(const NodeContext& c) {
  const std::string& op = c.node().op_type;
  if (op == "Max" || op == "Min") {
    const bool is_max = op == "Max";
    size_t present = 0;
    for (size_t i = 0; i < c.node().inputs.size(); ++i) present += c.HasInput(i) ? 1 : 0;
    auto f = [is_max](T x, T y) { return is_max ? std::max(x, y) : std::min(x, y); };
    if (present == 2 && c.HasInput(0) && c.HasInput(1)) return BinaryOp<T, T, T>(c, f);
    return VariadicOp<T>(c, f);
  }
  KF_RETURN_IF_ERROR(c.RequireInputs(2));
  if (c.InStorage(1) != c.InStorage(0)) {
    return InvalidArgument(fmt::format("inputs are {} and {}", planner::DTypeName(c.Input(0).dtype),
                                       planner::DTypeName(c.Input(1).dtype)));
  }
  if (op == "Add") return BinaryOp<T, T, T>(c, [](T x, T y) { return x + y; });
  if (op == "Sub") return BinaryOp<T, T, T>(c, [](T x, T y) { return x - y; });
  if (op == "Mul") return BinaryOp<T, T, T>(c, [](T x, T y) { return x * y; });
  if constexpr (std::is_floating_point_v<T>) {
    if (op == "Div") return BinaryOp<T, T, T>(c, [](T x, T y) { return x / y; });
  } else {
    if (op == "Div") return BinaryOp<T, T, T>(c, DivideInt<T>);
  }
  return InvalidArgument(fmt::format("no baseline kernel for {}", op));
}

Result<PreparedOp> PrepareArithmetic(const NodeContext& c) {
  if (c.node().op_type == "Pow") {
    KF_RETURN_IF_ERROR(c.RequireInputs(2));
    return PreparePow(c);
  }
  if (!c.HasInput(0)) return InvalidArgument("input 0 is missing");
  switch (c.InStorage(0)) {
    case Storage::kFloat:
      return ArithmeticFor<float>(c);
    case Storage::kInt:
      return ArithmeticFor<int64_t>(c);
    case Storage::kBool:
      break;
  }
  return InvalidArgument(fmt::format("{} of bool is not supported", c.node().op_type));
}

template <typename T>
Result<PreparedOp> ComparisonFor(const NodeContext& c) {
  const std::string& op = c.node().op_type;
  using B = uint8_t;
  if (op == "Equal") return BinaryOp<T, T, B>(c, [](T x, T y) -> B { return x == y; });
  if (op == "Less") return BinaryOp<T, T, B>(c, [](T x, T y) -> B { return x < y; });
  if (op == "Greater") return BinaryOp<T, T, B>(c, [](T x, T y) -> B { return x > y; });
  if (op == "LessOrEqual") return BinaryOp<T, T, B>(c, [](T x, T y) -> B { return x <= y; });
  if (op == "GreaterOrEqual") return BinaryOp<T, T, B>(c, [](T x, T y) -> B { return x >= y; });
  return InvalidArgument(
      fmt::format("{} of {} is not supported", op, planner::DTypeName(c.Input(0).dtype)));
}

Result<PreparedOp> PrepareComparison(const NodeContext& c) {
  KF_RETURN_IF_ERROR(c.RequireInputs(2));
  if (c.InStorage(0) != c.InStorage(1)) {
    return InvalidArgument(fmt::format("inputs are {} and {}", planner::DTypeName(c.Input(0).dtype),
                                       planner::DTypeName(c.Input(1).dtype)));
  }
  const std::string& op = c.node().op_type;
  if (op == "And" || op == "Or") {
    if (c.InStorage(0) != Storage::kBool) return InvalidArgument(op + " needs bool inputs");
    if (op == "And") {
      return BinaryOp<uint8_t, uint8_t, uint8_t>(
          c, [](uint8_t x, uint8_t y) -> uint8_t { return (x & y) != 0; });
    }
    return BinaryOp<uint8_t, uint8_t, uint8_t>(
        c, [](uint8_t x, uint8_t y) -> uint8_t { return (x | y) != 0; });
  }
  switch (c.InStorage(0)) {
    case Storage::kFloat:
      return ComparisonFor<float>(c);
    case Storage::kInt:
      return ComparisonFor<int64_t>(c);
    case Storage::kBool:
      return ComparisonFor<uint8_t>(c);
  }
  return InvalidArgument("unreachable storage");
}

template <typename T>
PreparedOp WhereOp(const NodeContext& c) {
  auto plan = BroadcastPlan<3>::Make(c.OutShape(0), {c.InShape(0), c.InShape(1), c.InShape(2)});
  Kernel run = [plan = std::move(plan)](const OpArgs& a) {
    const uint8_t* cond = a.inputs[0]->as<const uint8_t>();
    const T* x = a.inputs[1]->as<const T>();
    const T* y = a.inputs[2]->as<const T>();
    T* out = a.outputs[0]->as<T>();
    const int64_t sc = plan.inner_stride(0);
    const int64_t sx = plan.inner_stride(1);
    const int64_t sy = plan.inner_stride(2);
    ForEachRun(plan, [&](int64_t o, const std::array<int64_t, 3>& off, int64_t n) {
      for (int64_t i = 0; i < n; ++i) {
        out[o + i] = cond[off[0] + i * sc] != 0 ? x[off[1] + i * sx] : y[off[2] + i * sy];
      }
    });
    return Status::Ok();
  };
  return {std::move(run), 0, false};
}

Result<PreparedOp> PrepareWhere(const NodeContext& c) {
  KF_RETURN_IF_ERROR(c.RequireInputs(3));
  if (c.InStorage(0) != Storage::kBool) return InvalidArgument("the condition must be bool");
  if (c.InStorage(1) != c.InStorage(2)) return InvalidArgument("x and y differ in dtype");
  switch (c.InStorage(1)) {
    case Storage::kFloat:
      return WhereOp<float>(c);
    case Storage::kInt:
      return WhereOp<int64_t>(c);
    case Storage::kBool:
      return WhereOp<uint8_t>(c);
  }
  return InvalidArgument("unreachable storage");
}

// ---- Cast ----

// An integer of `dtype` held in i64: wraps to the dtype's width as a C cast does.
int64_t WrapInt(int64_t v, DType dtype) {
  switch (dtype) {
    case DType::kI32:
      return static_cast<int32_t>(v);
    case DType::kI16:
      return static_cast<int16_t>(v);
    case DType::kI8:
      return static_cast<int8_t>(v);
    case DType::kU8:
      return static_cast<uint8_t>(v);
    default:
      return v;
  }
}

// Floating values are held in f32; a Cast to f16 / bf16 still loses what the narrow type loses.
float RoundToDtype(float v, DType dtype) {
  if (dtype == DType::kF16) return HalfToFloat(FloatToHalf(v));
  if (dtype == DType::kBF16) return BFloat16ToFloat(FloatToBFloat16(v));
  return v;
}

int64_t FloatToInt(float v) {
  if (std::isnan(v)) return 0;
  if (v >= 9.2e18f) return std::numeric_limits<int64_t>::max();
  if (v <= -9.2e18f) return std::numeric_limits<int64_t>::min();
  return static_cast<int64_t>(v);
}

Result<PreparedOp> PrepareCast(const NodeContext& c) {
  KF_RETURN_IF_ERROR(c.RequireInputs(1));
  const Storage from = c.InStorage(0);
  const Storage to = c.OutStorage(0);
  const DType dtype = c.Output(0).dtype;
  const int64_t grain = kParallelGrainElements;
  switch (from) {
    case Storage::kFloat:
      if (to == Storage::kFloat) {
        return PreparedOp{
            UnaryKernel<float, float>([dtype](float v) { return RoundToDtype(v, dtype); }, grain),
            0, false};
      }
      if (to == Storage::kInt) {
        return PreparedOp{UnaryKernel<float, int64_t>(
                              [dtype](float v) { return WrapInt(FloatToInt(v), dtype); }, grain),
                          0, false};
      }
      return PreparedOp{
          UnaryKernel<float, uint8_t>([](float v) -> uint8_t { return v != 0.0f; }, grain), 0,
          false};
    case Storage::kInt:
      if (to == Storage::kFloat) {
        return PreparedOp{
            UnaryKernel<int64_t, float>(
                [dtype](int64_t v) { return RoundToDtype(static_cast<float>(v), dtype); }, grain),
            0, false};
      }
      if (to == Storage::kInt) {
        return PreparedOp{
            UnaryKernel<int64_t, int64_t>([dtype](int64_t v) { return WrapInt(v, dtype); }, grain),
            0, false};
      }
      return PreparedOp{
          UnaryKernel<int64_t, uint8_t>([](int64_t v) -> uint8_t { return v != 0; }, grain), 0,
          false};
    case Storage::kBool:
      if (to == Storage::kFloat) {
        return PreparedOp{
            UnaryKernel<uint8_t, float>([](uint8_t v) { return v != 0 ? 1.0f : 0.0f; }, grain), 0,
            false};
      }
      if (to == Storage::kInt) {
        return PreparedOp{UnaryKernel<uint8_t, int64_t>(
                              [](uint8_t v) -> int64_t { return v != 0 ? 1 : 0; }, grain),
                          0, false};
      }
      return PreparedOp{
          UnaryKernel<uint8_t, uint8_t>([](uint8_t v) -> uint8_t { return v != 0; }, grain), 0,
          false};
  }
  return InvalidArgument("unreachable storage");
}

// ---- Softmax ----

// One row: max, then exponentials and their sum in one pass, then the scale.
KF_SIMD_CLONES void SoftmaxRow(const float* x, float* y, int64_t n, bool log) {
  float max = -std::numeric_limits<float>::infinity();
#pragma omp simd reduction(max : max)
  for (int64_t i = 0; i < n; ++i) max = std::max(max, x[i]);
  float sum = 0;
  if (log) {
#pragma omp simd reduction(+ : sum)
    for (int64_t i = 0; i < n; ++i) sum += ExpApprox(x[i] - max);
    // (x - max) first: x - (max + log sum) would cancel catastrophically for large x.
    const float log_sum = std::log(sum);
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) y[i] = (x[i] - max) - log_sum;
    return;
  }
#pragma omp simd reduction(+ : sum)
  for (int64_t i = 0; i < n; ++i) {
    const float e = ExpApprox(x[i] - max);
    y[i] = e;
    sum += e;
  }
  const float scale = 1.0f / sum;
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) y[i] *= scale;
}

// Softmax over the middle dim of [n, inner] for a block of columns, vectorized across columns.
constexpr int64_t kColumnBlock = 64;
KF_SIMD_CLONES void SoftmaxColumns(const float* x, float* y, int64_t n, int64_t inner,
                                   int64_t width, bool log) {
  float max[kColumnBlock];
  float sum[kColumnBlock];
  std::fill(max, max + width, -std::numeric_limits<float>::infinity());
  std::fill(sum, sum + width, 0.0f);
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = 0; j < width; ++j) max[j] = std::max(max[j], x[i * inner + j]);
  }
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = 0; j < width; ++j) {
      const float e = ExpApprox(x[i * inner + j] - max[j]);
      if (!log) y[i * inner + j] = e;
      sum[j] += e;
    }
  }
  for (int64_t j = 0; j < width; ++j) sum[j] = log ? std::log(sum[j]) : 1.0f / sum[j];
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = 0; j < width; ++j) {
      y[i * inner + j] = log ? (x[i * inner + j] - max[j]) - sum[j] : y[i * inner + j] * sum[j];
    }
  }
}

Result<PreparedOp> PrepareSoftmax(const NodeContext& c) {
  KF_RETURN_IF_ERROR(c.RequireInputs(1));
  if (c.InStorage(0) != Storage::kFloat) return InvalidArgument("needs a floating input");
  const bool log = c.node().op_type == "LogSoftmax";
  const Shape& shape = c.InShape(0);
  const int64_t rank = c.Rank(0);
  KF_ASSIGN_OR_RETURN(int64_t axis, c.NormalizeAxis(c.node().IntAttr("axis", -1), rank));
  const int64_t outer = planner::NumElements(Shape(shape.begin(), shape.begin() + axis));
  const int64_t n = shape[static_cast<size_t>(axis)];
  const int64_t inner = planner::NumElements(Shape(shape.begin() + axis + 1, shape.end()));
  Kernel run = [=](const OpArgs& a) {
    const float* x = a.inputs[0]->as<const float>();
    float* y = a.outputs[0]->as<float>();
    if (inner == 1) {
      ParallelFor(outer, std::max<int64_t>(1, kMathGrainElements / std::max<int64_t>(n, 1)),
                  [&](int64_t begin, int64_t end) {
                    for (int64_t r = begin; r < end; ++r) SoftmaxRow(x + r * n, y + r * n, n, log);
                  });
      return Status::Ok();
    }
    const int64_t blocks = (inner + kColumnBlock - 1) / kColumnBlock;
    const int64_t work = std::max<int64_t>(1, n * kColumnBlock);
    ParallelFor(outer * blocks, std::max<int64_t>(1, kMathGrainElements / work),
                [&](int64_t begin, int64_t end) {
                  for (int64_t b = begin; b < end; ++b) {
                    const int64_t o = b / blocks;
                    const int64_t j0 = (b % blocks) * kColumnBlock;
                    const int64_t offset = o * n * inner + j0;
                    SoftmaxColumns(x + offset, y + offset, n, inner,
                                   std::min(kColumnBlock, inner - j0), log);
                  }
                });
    return Status::Ok();
  };
  return PreparedOp{std::move(run), 0, false};
}

// ---- Reductions ----

enum class ReduceKind { kSum, kMean, kMax };

template <typename T>
T ReduceIdentity(ReduceKind kind) {
  if (kind == ReduceKind::kMax) {
    return std::numeric_limits<T>::has_infinity ? -std::numeric_limits<T>::infinity()
                                                : std::numeric_limits<T>::lowest();
  }
  return T{0};
}

template <typename T>
T ReduceRow(const T* x, int64_t n, ReduceKind kind) {
  if (kind == ReduceKind::kMax) {
    T acc = ReduceIdentity<T>(kind);
#pragma omp simd reduction(max : acc)
    for (int64_t i = 0; i < n; ++i) acc = std::max(acc, x[i]);
    return acc;
  }
  T acc = 0;
#pragma omp simd reduction(+ : acc)
  for (int64_t i = 0; i < n; ++i) acc += x[i];
  return acc;
}

template <typename T>
T FinishMean(T sum, int64_t n) {
  if constexpr (std::is_floating_point_v<T>) {
    return sum / static_cast<T>(n);
  } else {
    return n == 0 ? 0 : sum / n;
  }
}

// The input's dims reduced to alternating kept / reduced runs.
struct ReduceLayout {
  enum class Kind { kRows, kColumns, kPermuted };
  Kind kind = Kind::kRows;
  int64_t outer = 1;          // kept elements before the reduced run
  int64_t n = 1;              // reduced elements
  int64_t inner = 1;          // kept elements after it (kColumns)
  std::vector<int64_t> perm;  // kPermuted: kept dims, then reduced dims
};

ReduceLayout PlanReduce(const Shape& x, const std::vector<int64_t>& axes) {
  std::vector<std::pair<int64_t, bool>> runs;  // (elements, reduced)
  for (size_t d = 0; d < x.size(); ++d) {
    if (x[d] == 1) continue;
    const bool reduced = std::binary_search(axes.begin(), axes.end(), static_cast<int64_t>(d));
    if (!runs.empty() && runs.back().second == reduced) {
      runs.back().first *= x[d];
    } else {
      runs.emplace_back(x[d], reduced);
    }
  }
  ReduceLayout layout;
  const auto reduced_runs =
      std::count_if(runs.begin(), runs.end(), [](const auto& r) { return r.second; });
  if (reduced_runs == 0) {
    layout.outer = planner::NumElements(x);
    return layout;
  }
  if (reduced_runs == 1) {
    size_t r = 0;
    while (!runs[r].second) ++r;
    layout.n = runs[r].first;
    layout.outer = r > 0 ? runs[0].first : 1;
    layout.inner = r + 1 < runs.size() ? runs[r + 1].first : 1;
    layout.kind = layout.inner == 1 ? ReduceLayout::Kind::kRows : ReduceLayout::Kind::kColumns;
    return layout;
  }
  layout.kind = ReduceLayout::Kind::kPermuted;
  for (size_t d = 0; d < x.size(); ++d) {
    const bool reduced = std::binary_search(axes.begin(), axes.end(), static_cast<int64_t>(d));
    if (reduced) {
      layout.n *= x[d];
    } else {
      layout.outer *= x[d];
      layout.perm.push_back(static_cast<int64_t>(d));
    }
  }
  for (int64_t a : axes) layout.perm.push_back(a);
  return layout;
}

template <typename T>
PreparedOp ReduceOp(const Shape& x_shape, ReduceLayout layout, ReduceKind kind) {
  const size_t scratch = layout.kind == ReduceLayout::Kind::kPermuted
                             ? static_cast<size_t>(planner::NumElements(x_shape)) * sizeof(T)
                             : 0;
  Kernel run = [=](const OpArgs& a) {
    const T* x = a.inputs[0]->as<const T>();
    T* y = a.outputs[0]->as<T>();
    const int64_t n = layout.n;
    if (layout.kind == ReduceLayout::Kind::kPermuted) {
      PermuteCopy(x, a.scratch, sizeof(T), x_shape, layout.perm);
      x = reinterpret_cast<const T*>(a.scratch);
    }
    if (layout.kind != ReduceLayout::Kind::kColumns) {
      ParallelFor(layout.outer,
                  std::max<int64_t>(1, kParallelGrainElements / std::max<int64_t>(n, 1)),
                  [&](int64_t begin, int64_t end) {
                    for (int64_t r = begin; r < end; ++r) {
                      const T acc = ReduceRow(x + r * n, n, kind);
                      y[r] = kind == ReduceKind::kMean ? FinishMean(acc, n) : acc;
                    }
                  });
      return Status::Ok();
    }
    const int64_t inner = layout.inner;
    const int64_t blocks = (inner + 255) / 256;
    ParallelFor(layout.outer * blocks,
                std::max<int64_t>(1, kParallelGrainElements / std::max<int64_t>(n * 256, 1)),
                [&](int64_t begin, int64_t end) {
                  for (int64_t b = begin; b < end; ++b) {
                    const int64_t o = b / blocks;
                    const int64_t j0 = (b % blocks) * 256;
                    const int64_t width = std::min<int64_t>(256, inner - j0);
                    T* out = y + o * inner + j0;
                    std::fill(out, out + width, ReduceIdentity<T>(kind));
                    for (int64_t i = 0; i < n; ++i) {
                      const T* row = x + (o * n + i) * inner + j0;
                      if (kind == ReduceKind::kMax) {
#pragma omp simd
                        for (int64_t j = 0; j < width; ++j) out[j] = std::max(out[j], row[j]);
                      } else {
#pragma omp simd
                        for (int64_t j = 0; j < width; ++j) out[j] += row[j];
                      }
                    }
                    if (kind == ReduceKind::kMean) {
                      for (int64_t j = 0; j < width; ++j) out[j] = FinishMean(out[j], n);
                    }
                  }
                });
    return Status::Ok();
  };
  return {std::move(run), scratch, false};
}

Result<PreparedOp> PrepareReduce(const NodeContext& c) {
  KF_RETURN_IF_ERROR(c.RequireInputs(1));
  const std::string& op = c.node().op_type;
  const ReduceKind kind = op == "ReduceSum"    ? ReduceKind::kSum
                          : op == "ReduceMean" ? ReduceKind::kMean
                                               : ReduceKind::kMax;
  KF_ASSIGN_OR_RETURN(std::optional<std::vector<int64_t>> given, c.IntsFromInputOrAttr(1, "axes"));
  const Shape& x = c.InShape(0);
  std::vector<int64_t> axes = given.value_or(std::vector<int64_t>{});
  if (axes.empty()) {
    if (c.node().IntAttr("noop_with_empty_axes", 0) != 0) return PreparedOp{{}, 0, true};
    axes.resize(x.size());
    std::iota(axes.begin(), axes.end(), 0);
  }
  for (int64_t& axis : axes) {
    KF_ASSIGN_OR_RETURN(axis, c.NormalizeAxis(axis, c.Rank(0)));
  }
  std::sort(axes.begin(), axes.end());
  axes.erase(std::unique(axes.begin(), axes.end()), axes.end());
  const int64_t out_elements = planner::NumElements(c.OutShape(0));
  if (planner::NumElements(x) == 0) {
    // Every output element reduces nothing: the identity (NaN for a mean of nothing).
    const Storage storage = c.InStorage(0);
    Kernel run = [kind, storage, out_elements](const OpArgs& a) {
      if (storage == Storage::kFloat) {
        const float fill = kind == ReduceKind::kMean ? std::numeric_limits<float>::quiet_NaN()
                                                     : ReduceIdentity<float>(kind);
        std::fill(a.outputs[0]->as<float>(), a.outputs[0]->as<float>() + out_elements, fill);
      } else {
        std::fill(a.outputs[0]->as<int64_t>(), a.outputs[0]->as<int64_t>() + out_elements,
                  ReduceIdentity<int64_t>(kind));
      }
      return Status::Ok();
    };
    return PreparedOp{std::move(run), 0, false};
  }
  const ReduceLayout layout = PlanReduce(x, axes);
  switch (c.InStorage(0)) {
    case Storage::kFloat:
      return ReduceOp<float>(x, layout, kind);
    case Storage::kInt:
      return ReduceOp<int64_t>(x, layout, kind);
    case Storage::kBool:
      break;
  }
  return InvalidArgument(fmt::format("{} of bool is not supported", op));
}

// ---- Normalizations ----

// Mean and 1/sqrt(variance + epsilon) of one row, two passes over data that is in L1 by then.
std::pair<float, float> RowMoments(const float* x, int64_t n, float epsilon) {
  float sum = 0;
#pragma omp simd reduction(+ : sum)
  for (int64_t i = 0; i < n; ++i) sum += x[i];
  const float mean = sum / static_cast<float>(n);
  float sq = 0;
#pragma omp simd reduction(+ : sq)
  for (int64_t i = 0; i < n; ++i) sq += (x[i] - mean) * (x[i] - mean);
  return {mean, 1.0f / std::sqrt(sq / static_cast<float>(n) + epsilon)};
}

// Scale or bias of a normalization, broadcast to `n` elements when it is not given in full.
const float* FullOperand(const View* v, const Shape& target, float* scratch) {
  if (v->elements == planner::NumElements(target)) return v->as<const float>();
  BroadcastCopy(v->as<const float>(), v->shape, scratch, target);
  return scratch;
}

Result<PreparedOp> PrepareLayerNormalization(const NodeContext& c) {
  KF_RETURN_IF_ERROR(c.RequireInputs(2));
  if (c.InStorage(0) != Storage::kFloat) return InvalidArgument("needs a floating input");
  const Shape& x = c.InShape(0);
  KF_ASSIGN_OR_RETURN(int64_t axis, c.NormalizeAxis(c.node().IntAttr("axis", -1), c.Rank(0)));
  const Shape normalized(x.begin() + axis, x.end());
  const int64_t outer = planner::NumElements(Shape(x.begin(), x.begin() + axis));
  const int64_t n = planner::NumElements(normalized);
  const auto epsilon = static_cast<float>(c.node().FloatAttr("epsilon", 1e-5));
  const bool has_bias = c.HasInput(2);
  Kernel run = [=](const OpArgs& a) {
    if (n == 0) return Status::Ok();
    auto* scratch = reinterpret_cast<float*>(a.scratch);
    const float* scale = FullOperand(a.inputs[1], normalized, scratch);
    const float* bias = has_bias ? FullOperand(a.inputs[2], normalized, scratch + n) : nullptr;
    const float* in = a.inputs[0]->as<const float>();
    float* out = a.outputs[0]->as<float>();
    float* mean_out = a.HasOutput(1) ? a.outputs[1]->as<float>() : nullptr;
    float* inv_out = a.HasOutput(2) ? a.outputs[2]->as<float>() : nullptr;
    ParallelFor(outer, std::max<int64_t>(1, kParallelGrainElements / n),
                [&](int64_t begin, int64_t end) {
                  for (int64_t r = begin; r < end; ++r) {
                    const float* xr = in + r * n;
                    float* yr = out + r * n;
                    const auto [mean, inv] = RowMoments(xr, n, epsilon);
                    if (bias != nullptr) {
#pragma omp simd
                      for (int64_t i = 0; i < n; ++i) {
                        yr[i] = (xr[i] - mean) * inv * scale[i] + bias[i];
                      }
                    } else {
#pragma omp simd
                      for (int64_t i = 0; i < n; ++i) yr[i] = (xr[i] - mean) * inv * scale[i];
                    }
                    if (mean_out != nullptr) mean_out[r] = mean;
                    if (inv_out != nullptr) inv_out[r] = inv;
                  }
                });
    return Status::Ok();
  };
  return PreparedOp{std::move(run), static_cast<size_t>(2 * n) * sizeof(float), false};
}

Result<PreparedOp> PrepareBatchNormalization(const NodeContext& c) {
  KF_RETURN_IF_ERROR(c.RequireInputs(5));
  if (c.InStorage(0) != Storage::kFloat) return InvalidArgument("needs a floating input");
  const Shape& x = c.InShape(0);
  if (x.size() < 2) return InvalidArgument("needs input [N,C,...]");
  const int64_t batch = x[0];
  const int64_t channels = x[1];
  const int64_t spatial = planner::NumElements(Shape(x.begin() + 2, x.end()));
  const auto epsilon = static_cast<float>(c.node().FloatAttr("epsilon", 1e-5));
  const auto momentum = static_cast<float>(c.node().FloatAttr("momentum", 0.9));
  const bool training = c.node().IntAttr("training_mode", 0) != 0;
  Kernel run = [=](const OpArgs& a) {
    const float* in = a.inputs[0]->as<const float>();
    const float* scale = a.inputs[1]->as<const float>();
    const float* bias = a.inputs[2]->as<const float>();
    const float* mean = a.inputs[3]->as<const float>();
    const float* var = a.inputs[4]->as<const float>();
    auto* mul = reinterpret_cast<float*>(a.scratch);
    float* add = mul + channels;
    float* batch_mean = add + channels;
    float* batch_var = batch_mean + channels;
    if (training) {
      // Statistics of this batch (population variance), as training mode normalizes with them.
      const double count = static_cast<double>(batch * spatial);
      ParallelFor(channels, 1, [&](int64_t begin, int64_t end) {
        for (int64_t ch = begin; ch < end; ++ch) {
          double sum = 0;
          double sq = 0;
          for (int64_t b = 0; b < batch; ++b) {
            const float* p = in + (b * channels + ch) * spatial;
            for (int64_t i = 0; i < spatial; ++i) {
              sum += p[i];
              sq += static_cast<double>(p[i]) * p[i];
            }
          }
          const double m = count > 0 ? sum / count : 0;
          batch_mean[ch] = static_cast<float>(m);
          batch_var[ch] = static_cast<float>(count > 0 ? std::max(0.0, sq / count - m * m) : 0);
        }
      });
    }
    for (int64_t ch = 0; ch < channels; ++ch) {
      const float m = training ? batch_mean[ch] : mean[ch];
      const float v = training ? batch_var[ch] : var[ch];
      mul[ch] = scale[ch] / std::sqrt(v + epsilon);
      add[ch] = bias[ch] - m * mul[ch];
    }
    float* out = a.outputs[0]->as<float>();
    ParallelFor(batch * channels,
                std::max<int64_t>(1, kParallelGrainElements / std::max<int64_t>(spatial, 1)),
                [&](int64_t begin, int64_t end) {
                  for (int64_t p = begin; p < end; ++p) {
                    const int64_t ch = p % channels;
                    const float m = mul[ch];
                    const float s = add[ch];
                    const float* xp = in + p * spatial;
                    float* yp = out + p * spatial;
#pragma omp simd
                    for (int64_t i = 0; i < spatial; ++i) yp[i] = xp[i] * m + s;
                  }
                });
    if (training) {
      for (int64_t ch = 0; ch < channels; ++ch) {
        if (a.HasOutput(1)) {
          a.outputs[1]->as<float>()[ch] = mean[ch] * momentum + batch_mean[ch] * (1 - momentum);
        }
        if (a.HasOutput(2)) {
          a.outputs[2]->as<float>()[ch] = var[ch] * momentum + batch_var[ch] * (1 - momentum);
        }
      }
    }
    return Status::Ok();
  };
  return PreparedOp{std::move(run), static_cast<size_t>(4 * channels) * sizeof(float), false};
}

Result<PreparedOp> PrepareInstanceNormalization(const NodeContext& c) {
  KF_RETURN_IF_ERROR(c.RequireInputs(3));
  if (c.InStorage(0) != Storage::kFloat) return InvalidArgument("needs a floating input");
  const Shape& x = c.InShape(0);
  if (x.size() < 2) return InvalidArgument("needs input [N,C,...]");
  const int64_t planes = x[0] * x[1];
  const int64_t channels = x[1];
  const int64_t spatial = planner::NumElements(Shape(x.begin() + 2, x.end()));
  const auto epsilon = static_cast<float>(c.node().FloatAttr("epsilon", 1e-5));
  Kernel run = [=](const OpArgs& a) {
    if (spatial == 0) return Status::Ok();
    const float* in = a.inputs[0]->as<const float>();
    const float* scale = a.inputs[1]->as<const float>();
    const float* bias = a.inputs[2]->as<const float>();
    float* out = a.outputs[0]->as<float>();
    ParallelFor(planes, std::max<int64_t>(1, kParallelGrainElements / spatial),
                [&](int64_t begin, int64_t end) {
                  for (int64_t p = begin; p < end; ++p) {
                    const int64_t ch = p % channels;
                    const float* xp = in + p * spatial;
                    float* yp = out + p * spatial;
                    const auto [mean, inv] = RowMoments(xp, spatial, epsilon);
                    const float m = inv * scale[ch];
                    const float s = bias[ch] - mean * m;
#pragma omp simd
                    for (int64_t i = 0; i < spatial; ++i) yp[i] = xp[i] * m + s;
                  }
                });
    return Status::Ok();
  };
  return PreparedOp{std::move(run), 0, false};
}

}  // namespace

Storage StorageOf(DType dtype) {
  if (planner::IsFloat(dtype)) return Storage::kFloat;
  if (dtype == DType::kBool) return Storage::kBool;
  return Storage::kInt;
}

int64_t StorageBytes(Storage storage) {
  switch (storage) {
    case Storage::kFloat:
      return 4;
    case Storage::kInt:
      return 8;
    case Storage::kBool:
      return 1;
  }
  return 1;
}

Status NodeContext::RequireInputs(size_t count) const {
  for (size_t i = 0; i < count; ++i) {
    if (!HasInput(i))
      return InvalidArgument(fmt::format("needs {} inputs, input {} is missing", count, i));
  }
  return Status::Ok();
}

bool NodeContext::IsConstant(size_t i) const {
  return HasInput(i) && Input(i).kind == planner::ValueKind::kConstant &&
         Input(i).constant.has_value();
}

Result<std::vector<int64_t>> NodeContext::ConstInts(size_t i, std::string_view role) const {
  if (!HasInput(i)) return InvalidArgument(fmt::format("input {} ({}) is missing", i, role));
  if (!IsConstant(i)) {
    return InvalidArgument(
        fmt::format("input '{}' ({}) must be known before the run", Input(i).name, role));
  }
  const planner::ConstantData& data = *Input(i).constant;
  std::vector<int64_t> out(planner::import_internal::ConstantSize(data));
  for (size_t k = 0; k < out.size(); ++k) out[k] = planner::import_internal::ConstantAsInt(data, k);
  return out;
}

Result<std::vector<double>> NodeContext::ConstFloats(size_t i, std::string_view role) const {
  if (!HasInput(i)) return InvalidArgument(fmt::format("input {} ({}) is missing", i, role));
  if (!IsConstant(i)) {
    return InvalidArgument(
        fmt::format("input '{}' ({}) must be known before the run", Input(i).name, role));
  }
  const planner::ConstantData& data = *Input(i).constant;
  std::vector<double> out(planner::import_internal::ConstantSize(data));
  for (size_t k = 0; k < out.size(); ++k) {
    out[k] = planner::import_internal::ConstantAsDouble(data, k);
  }
  return out;
}

Result<std::optional<std::vector<int64_t>>> NodeContext::IntsFromInputOrAttr(
    size_t i, std::string_view attr) const {
  if (HasInput(i)) {
    KF_ASSIGN_OR_RETURN(std::vector<int64_t> values, ConstInts(i, attr));
    return std::optional<std::vector<int64_t>>(std::move(values));
  }
  if (node_.HasAttr(attr)) return std::optional<std::vector<int64_t>>(node_.IntsAttr(attr));
  return std::optional<std::vector<int64_t>>();
}

Result<int64_t> NodeContext::NormalizeAxis(int64_t axis, int64_t rank) const {
  if (axis < -rank || axis >= rank) {
    return InvalidArgument(fmt::format("axis {} is out of range for rank {}", axis, rank));
  }
  return axis < 0 ? axis + rank : axis;
}

bool IsElementwiseOp(std::string_view op) {
  static const std::set<std::string_view> kOps = {"Add",
                                                  "Sub",
                                                  "Mul",
                                                  "Div",
                                                  "Pow",
                                                  "Max",
                                                  "Min",
                                                  "Equal",
                                                  "Less",
                                                  "Greater",
                                                  "LessOrEqual",
                                                  "GreaterOrEqual",
                                                  "And",
                                                  "Or",
                                                  "Where",
                                                  "Sqrt",
                                                  "Reciprocal",
                                                  "Neg",
                                                  "Exp",
                                                  "Log",
                                                  "Erf",
                                                  "Tanh",
                                                  "Sigmoid",
                                                  "Relu",
                                                  "LeakyRelu",
                                                  "Clip",
                                                  "Gelu",
                                                  "HardSigmoid",
                                                  "HardSwish",
                                                  "Softplus",
                                                  "Abs",
                                                  "Cos",
                                                  "Sin",
                                                  "Not",
                                                  "IsNaN",
                                                  "Cast",
                                                  "Softmax",
                                                  "LogSoftmax",
                                                  "ReduceMean",
                                                  "ReduceSum",
                                                  "ReduceMax",
                                                  "LayerNormalization",
                                                  "BatchNormalization",
                                                  "InstanceNormalization"};
  return kOps.count(op) != 0;
}

Result<PreparedOp> PrepareElementwiseOp(const NodeContext& c) {
  const std::string& op = c.node().op_type;
  if (op == "Add" || op == "Sub" || op == "Mul" || op == "Div" || op == "Pow" || op == "Max" ||
      op == "Min") {
    return PrepareArithmetic(c);
  }
  if (op == "Equal" || op == "Less" || op == "Greater" || op == "LessOrEqual" ||
      op == "GreaterOrEqual" || op == "And" || op == "Or") {
    return PrepareComparison(c);
  }
  if (op == "Where") return PrepareWhere(c);
  if (op == "Cast") return PrepareCast(c);
  if (op == "Softmax" || op == "LogSoftmax") return PrepareSoftmax(c);
  if (op == "ReduceMean" || op == "ReduceSum" || op == "ReduceMax") return PrepareReduce(c);
  if (op == "LayerNormalization") return PrepareLayerNormalization(c);
  if (op == "BatchNormalization") return PrepareBatchNormalization(c);
  if (op == "InstanceNormalization") return PrepareInstanceNormalization(c);
  return PrepareUnary(c);
}

}  // namespace kfleet::runtime::baseline

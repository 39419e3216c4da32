// The float64 reference's contractions (MatMul, Gemm), windowed ops (Conv, ConvTranspose, pools)
// and Resize. The heavy loops run over independent output rows or channel planes in parallel;
// every output element is summed by one thread in a fixed order, so results are bitwise
// deterministic whatever the thread count.
#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <limits>
#include <string>

#include "runtime/reference_ops.h"

namespace kfleet::runtime::reference_internal {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

// Columns of B per pass: a K x 256 block of B stays in cache while every row of A passes over
// it. Each output element still sums over k in ascending order.
constexpr int64_t kColumnBlock = 256;

// c[r] = a[r] x b[r] for `batches` products of [m, k] x [k, n]; a_at / b_at give the matrix index
// of each batch in a and b (broadcasting). T is double, or uint64_t for int64 data (wrapping).
template <typename T>
void BatchedMatMul(const T* a, const T* b, T* c, const std::vector<int64_t>& a_at,
                   const std::vector<int64_t>& b_at, int64_t m, int64_t k, int64_t n) {
  const auto rows = static_cast<int64_t>(a_at.size()) * m;
  for (int64_t j0 = 0; j0 < n; j0 += kColumnBlock) {
    const int64_t j1 = std::min(n, j0 + kColumnBlock);
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
      const auto batch = static_cast<size_t>(r / m);
      const T* a_row = a + a_at[batch] * m * k + (r % m) * k;
      const T* b_mat = b + b_at[batch] * k * n;
      T* c_row = c + r * n;
      for (int64_t j = j0; j < j1; ++j) c_row[j] = 0;
      for (int64_t kk = 0; kk < k; ++kk) {
        const T av = a_row[kk];
        const T* b_row = b_mat + kk * n;
#pragma omp simd
        for (int64_t j = j0; j < j1; ++j) c_row[j] += av * b_row[j];
      }
    }
  }
}

// A [rows, cols] matrix, transposed when asked, as a row-major vector.
std::vector<double> MaybeTransposed(const Tensor& t, bool transpose) {
  const int64_t rows = t.shape()[0];
  const int64_t cols = t.shape()[1];
  std::vector<double> out(t.as<double>(), t.as<double>() + t.elements());
  if (!transpose) return out;
  for (int64_t i = 0; i < rows; ++i) {
    for (int64_t j = 0; j < cols; ++j) out[j * rows + i] = t.as<double>()[i * cols + j];
  }
  return out;
}

// Spatial geometry of a Conv, ConvTranspose or pool, padded in front to three dims (D, H, W) so
// that one loop nest serves 1-D, 2-D and 3-D windows.
struct Window {
  std::array<int64_t, 3> in = {1, 1, 1};
  std::array<int64_t, 3> out = {1, 1, 1};
  std::array<int64_t, 3> kernel = {1, 1, 1};
  std::array<int64_t, 3> stride = {1, 1, 1};
  std::array<int64_t, 3> dilation = {1, 1, 1};
  std::array<int64_t, 3> pad = {0, 0, 0};  // at the beginning; the end follows from out
  std::array<int64_t, 3> pad_end = {0, 0, 0};

  int64_t InSize() const { return in[0] * in[1] * in[2]; }
  int64_t OutSize() const { return out[0] * out[1] * out[2]; }
  int64_t KernelSize() const { return kernel[0] * kernel[1] * kernel[2]; }
};

// kernel_shape, strides, dilations and pads of `spatial` dims (attributes, with ONNX defaults).
struct WindowAttrs {
  std::vector<int64_t> kernel;
  std::vector<int64_t> strides;
  std::vector<int64_t> dilations;
  std::vector<int64_t> pads;
  std::string auto_pad;
};

Result<WindowAttrs> ReadWindowAttrs(const NodeRun& run, size_t spatial,
                                    std::vector<int64_t> kernel) {
  if (spatial < 1 || spatial > 3) {
    return run.Error(fmt::format("supports 1 to 3 spatial dims, got {}", spatial));
  }
  const planner::Node& node = run.node();
  WindowAttrs w;
  w.kernel = std::move(kernel);
  w.strides = node.IntsAttr("strides");
  w.dilations = node.IntsAttr("dilations");
  w.pads = node.IntsAttr("pads");
  w.auto_pad = node.StringAttr("auto_pad", "NOTSET");
  if (w.strides.empty()) w.strides.assign(spatial, 1);
  if (w.dilations.empty()) w.dilations.assign(spatial, 1);
  if (w.pads.empty()) w.pads.assign(2 * spatial, 0);
  if (w.kernel.size() != spatial || w.strides.size() != spatial || w.dilations.size() != spatial ||
      w.pads.size() != 2 * spatial) {
    return run.Error(
        fmt::format("kernel_shape, strides, dilations or pads do not match {} dims", spatial));
  }
  for (size_t i = 0; i < spatial; ++i) {
    if (w.kernel[i] < 1 || w.strides[i] < 1 || w.dilations[i] < 1) {
      return run.Error("kernel_shape, strides and dilations must be positive");
    }
  }
  if (w.auto_pad != "NOTSET" && w.auto_pad != "SAME_UPPER" && w.auto_pad != "SAME_LOWER" &&
      w.auto_pad != "VALID") {
    return run.Error(fmt::format("unknown auto_pad '{}'", w.auto_pad));
  }
  return w;
}

// The window of a Conv or pool over input `x` ([N, C, spatial...]): output sizes and pads from
// the attributes, auto_pad and ceil_mode as ONNX defines them.
Result<Window> ForwardWindow(const NodeRun& run, const Shape& x, std::vector<int64_t> kernel,
                             bool ceil_mode) {
  const size_t spatial = x.size() - 2;
  KF_ASSIGN_OR_RETURN(WindowAttrs attrs, ReadWindowAttrs(run, spatial, std::move(kernel)));
  Window w;
  for (size_t i = 0; i < spatial; ++i) {
    const size_t d = 3 - spatial + i;
    const int64_t in = x[i + 2];
    const int64_t stride = attrs.strides[i];
    const int64_t extent = (attrs.kernel[i] - 1) * attrs.dilations[i] + 1;
    int64_t out = 0;
    int64_t begin = 0;
    int64_t end = 0;
    if (attrs.auto_pad == "SAME_UPPER" || attrs.auto_pad == "SAME_LOWER") {
      // Pad so that out = ceil(in / stride); an odd total puts the extra at the end for UPPER.
      out = CeilDiv(in, stride);
      const int64_t total = std::max<int64_t>(0, (out - 1) * stride + extent - in);
      begin = attrs.auto_pad == "SAME_UPPER" ? total / 2 : total - total / 2;
      end = total - begin;
    } else if (attrs.auto_pad == "VALID") {
      out = in < extent ? 0 : (in - extent) / stride + 1;
    } else {
      begin = attrs.pads[i];
      end = attrs.pads[i + spatial];
      const int64_t padded = in + begin + end;
      if (padded < extent) {
        out = 0;
      } else if (!ceil_mode) {
        out = (padded - extent) / stride + 1;
      } else {
        out = CeilDiv(padded - extent, stride) + 1;
        // The last window must start inside the input or the left padding.
        if ((out - 1) * stride >= in + begin) --out;
      }
    }
    w.in[d] = in;
    w.out[d] = out;
    w.kernel[d] = attrs.kernel[i];
    w.stride[d] = stride;
    w.dilation[d] = attrs.dilations[i];
    w.pad[d] = begin;
    w.pad_end[d] = end;
  }
  return w;
}

// [N, C] followed by the window's real spatial output dims.
Shape WindowOutputShape(const Shape& x, int64_t channels, const Window& w) {
  Shape out = {x[0], channels};
  for (size_t d = 3 - (x.size() - 2); d < 3; ++d) out.push_back(w.out[d]);
  return out;
}

// The t in [0, count) with 0 <= t * stride + offset < limit, as [first, last).
std::pair<int64_t, int64_t> ValidRange(int64_t count, int64_t limit, int64_t stride,
                                       int64_t offset) {
  const int64_t first = offset >= 0 ? 0 : CeilDiv(-offset, stride);
  const int64_t last = limit - 1 - offset < 0 ? 0 : (limit - 1 - offset) / stride + 1;
  const int64_t lo = std::min(first, count);
  return {lo, std::clamp(last, lo, count)};
}

// Conv and ConvTranspose operands: floating X [N, C, spatial...] and W of the same rank; the
// kernel is W's spatial dims, which kernel_shape must match when given.
Result<std::vector<int64_t>> ConvKernel(const NodeRun& run) {
  KF_RETURN_IF_ERROR(run.Require(2));
  KF_RETURN_IF_ERROR(run.RequireFloat(0));
  KF_RETURN_IF_ERROR(run.RequireFloat(1));
  const Shape& x = run.In(0).shape();
  const Shape& w = run.In(1).shape();
  if (x.size() < 3 || w.size() != x.size()) {
    return run.Error(
        fmt::format("needs input [N,C,spatial...] and weight of the same rank, got {} and {}",
                    planner::ShapeToString(x), planner::ShapeToString(w)));
  }
  std::vector<int64_t> kernel(w.begin() + 2, w.end());
  const std::vector<int64_t> attr = run.node().IntsAttr("kernel_shape");
  if (!attr.empty() && attr != kernel) {
    return run.Error(fmt::format("kernel_shape [{}] does not match weight {}", fmt::join(attr, ","),
                                 planner::ShapeToString(w)));
  }
  return kernel;
}

// Adds B[c] to every element of channel c; B is [channels] when present.
Status AddBias(const NodeRun& run, Tensor& y, int64_t channels) {
  if (!run.Has(2)) return Status::Ok();
  if (run.In(2).shape() != Shape{channels}) {
    return run.Error(fmt::format("bias shape {} is not [{}]",
                                 planner::ShapeToString(run.In(2).shape()), channels));
  }
  const int64_t plane = y.elements() / std::max<int64_t>(1, y.shape()[0] * channels);
  for (int64_t i = 0; i < y.elements(); ++i) {
    y.as<double>()[i] += run.In(2).GetDouble((i / plane) % channels);
  }
  return Status::Ok();
}

// Python's floor division, which the ONNX ConvTranspose formulas are written in.
int64_t FloorDiv2(int64_t v) { return v >= 0 ? v / 2 : -((-v + 1) / 2); }

Status Pool(NodeRun& run, bool max) {
  KF_RETURN_IF_ERROR(run.Require(1));
  if (run.In(0).dtype() == DType::kBool) return run.Error("does not take bool inputs");
  // Integer MaxPool (int8 / uint8 images) is computed in double, which holds those exactly.
  const Tensor x = ConvertTensor(run.In(0), DType::kF64);
  const Shape& shape = x.shape();
  if (shape.size() < 3) {
    return run.Error(
        fmt::format("needs input [N,C,spatial...], got {}", planner::ShapeToString(shape)));
  }
  std::vector<int64_t> kernel = run.node().IntsAttr("kernel_shape");
  if (kernel.empty()) return run.Error("has no kernel_shape");
  const bool ceil_mode = run.node().IntAttr("ceil_mode", 0) != 0;
  KF_ASSIGN_OR_RETURN(Window win, ForwardWindow(run, shape, std::move(kernel), ceil_mode));
  if (max && run.Wants(1) && run.node().IntAttr("storage_order", 0) != 0) {
    return run.Error("column-major Indices (storage_order=1) are not supported");
  }
  const bool count_include_pad = run.node().IntAttr("count_include_pad", 0) != 0;
  const Shape out_shape = WindowOutputShape(shape, shape[1], win);
  Tensor y(DType::kF64, out_shape);
  Tensor indices(DType::kI64, out_shape);
  const int64_t planes = shape[0] * shape[1];
#pragma omp parallel for schedule(static)
  for (int64_t p = 0; p < planes; ++p) {
    const double* in = x.as<double>() + p * win.InSize();
    int64_t o = p * win.OutSize();
    for (int64_t od = 0; od < win.out[0]; ++od) {
      for (int64_t oh = 0; oh < win.out[1]; ++oh) {
        for (int64_t ow = 0; ow < win.out[2]; ++ow, ++o) {
          const std::array<int64_t, 3> at = {od, oh, ow};
          double best = -kInf;
          int64_t best_at = -1;
          double sum = 0;
          int64_t valid = 0;
          int64_t padded = 0;  // taps inside the input or its explicit padding
          for (int64_t kd = 0; kd < win.kernel[0]; ++kd) {
            for (int64_t kh = 0; kh < win.kernel[1]; ++kh) {
              for (int64_t kw = 0; kw < win.kernel[2]; ++kw) {
                const std::array<int64_t, 3> k = {kd, kh, kw};
                bool inside = true;
                bool in_padding = true;
                std::array<int64_t, 3> pos{};
                for (size_t d = 0; d < 3; ++d) {
                  pos[d] = at[d] * win.stride[d] - win.pad[d] + k[d] * win.dilation[d];
                  inside = inside && pos[d] >= 0 && pos[d] < win.in[d];
                  in_padding =
                      in_padding && pos[d] >= -win.pad[d] && pos[d] < win.in[d] + win.pad_end[d];
                }
                if (in_padding) ++padded;
                if (!inside) continue;
                const int64_t flat = (pos[0] * win.in[1] + pos[1]) * win.in[2] + pos[2];
                const double v = in[flat];
                // NaN wins, as in PyTorch; the first maximum gives the index.
                if (std::isnan(v) ? !std::isnan(best) : v > best) {
                  best = v;
                  best_at = p * win.InSize() + flat;
                }
                sum += v;
                ++valid;
              }
            }
          }
          if (max) {
            y.as<double>()[o] = best;
            indices.as<int64_t>()[o] = best_at;
          } else {
            y.as<double>()[o] = sum / static_cast<double>(count_include_pad ? padded : valid);
          }
        }
      }
    }
  }
  run.SetOutput(0, ConvertTensor(y, run.OutDType(0)));
  if (max) run.SetOutput(1, std::move(indices));
  return Status::Ok();
}

// One input element an output coordinate reads along one axis, and its weight.
struct Tap {
  int64_t index;
  double weight;
};

struct ResizeMode {
  std::string mode;
  std::string coordinate;
  std::string nearest;
  double cubic_a;
  bool exclude_outside;
};

// The input coordinate of output coordinate `o` (ONNX coordinate_transformation_mode).
double SourceCoordinate(const std::string& mode, int64_t o, double scale, int64_t in_len,
                        int64_t out_len) {
  const auto x = static_cast<double>(o);
  if (mode == "align_corners") {
    return out_len == 1 ? 0
                        : x * static_cast<double>(in_len - 1) / static_cast<double>(out_len - 1);
  }
  if (mode == "asymmetric") return x / scale;
  if (mode == "pytorch_half_pixel") return out_len > 1 ? (x + 0.5) / scale - 0.5 : 0;
  if (mode == "half_pixel_symmetric") {
    const double adjustment = static_cast<double>(out_len) / (scale * static_cast<double>(in_len));
    const double center = static_cast<double>(in_len) / 2;
    return center * (1 - adjustment) + (x + 0.5) / scale - 0.5;
  }
  return (x + 0.5) / scale - 0.5;  // half_pixel
}

int64_t NearestIndex(const std::string& mode, double x) {
  const double lower = std::floor(x);
  const bool half = x - lower == 0.5;
  if (mode == "floor") return static_cast<int64_t>(lower);
  if (mode == "ceil") return static_cast<int64_t>(std::ceil(x));
  if (mode == "round_prefer_ceil") return static_cast<int64_t>(half ? lower + 1 : std::round(x));
  return static_cast<int64_t>(half ? lower : std::round(x));  // round_prefer_floor
}

// The taps of output coordinate `o` along an axis of `in_len` elements. Out-of-range taps read
// the edge element, as the ONNX reference implementation's edge padding does.
std::vector<Tap> AxisTaps(const ResizeMode& m, int64_t o, double scale, int64_t in_len,
                          int64_t out_len) {
  const double x = SourceCoordinate(m.coordinate, o, scale, in_len, out_len);
  auto clamp = [in_len](int64_t i) { return std::clamp<int64_t>(i, 0, in_len - 1); };
  std::vector<Tap> taps;
  if (m.mode == "nearest") {
    taps.push_back({clamp(NearestIndex(m.nearest, x)), 1});
  } else if (m.mode == "linear") {
    const double c = std::clamp(x, 0.0, static_cast<double>(in_len - 1));
    const auto i0 = static_cast<int64_t>(std::floor(c));
    const double f = c - static_cast<double>(i0);
    taps.push_back({i0, 1 - f});
    taps.push_back({clamp(i0 + 1), f});
  } else {
    const double a = m.cubic_a;
    const double i0 = std::floor(x);
    const double r = x - i0;
    const double s = 1 - r;
    const std::array<double, 4> coeffs = {
        ((a * (r + 1) - 5 * a) * (r + 1) + 8 * a) * (r + 1) - 4 * a,
        ((a + 2) * r - (a + 3)) * r * r + 1,
        ((a + 2) * s - (a + 3)) * s * s + 1,
        ((a * (s + 1) - 5 * a) * (s + 1) + 8 * a) * (s + 1) - 4 * a,
    };
    double kept = 0;
    for (int64_t t = 0; t < 4; ++t) {
      const int64_t i = static_cast<int64_t>(i0) - 1 + t;
      const bool outside = i < 0 || i >= in_len;
      if (m.exclude_outside && outside) continue;
      taps.push_back({clamp(i), coeffs[static_cast<size_t>(t)]});
      kept += coeffs[static_cast<size_t>(t)];
    }
    if (m.exclude_outside) {
      for (Tap& tap : taps) tap.weight /= kept;
    }
  }
  // A zero weight contributes nothing; dropping it keeps unscaled axes to a single tap.
  std::erase_if(taps, [](const Tap& t) { return t.weight == 0; });
  return taps;
}

// Sum over the taps of axes d.. of weight * x: separable interpolation.
double Interpolate(const double* in, const Shape& strides,
                   const std::vector<const std::vector<Tap>*>& taps, size_t d, int64_t offset,
                   double weight) {
  if (d == taps.size()) return weight * in[offset];
  double sum = 0;
  for (const Tap& t : *taps[d]) {
    sum += Interpolate(in, strides, taps, d + 1, offset + t.index * strides[d], weight * t.weight);
  }
  return sum;
}

}  // namespace

Status MatMul(NodeRun& run) {
  KF_RETURN_IF_ERROR(run.Require(2));
  const Tensor& a = run.In(0);
  const Tensor& b = run.In(1);
  if (a.dtype() != b.dtype() || a.dtype() == DType::kBool) {
    return run.Error("needs two floating or two integer inputs");
  }
  Shape as = a.shape();
  Shape bs = b.shape();
  if (as.empty() || bs.empty()) return run.Error("needs inputs of rank >= 1");
  // Numpy matmul: a vector operand gains a unit dim that the output then drops.
  const bool a_vector = as.size() == 1;
  const bool b_vector = bs.size() == 1;
  if (a_vector) as.insert(as.begin(), 1);
  if (b_vector) bs.push_back(1);
  const int64_t m = as[as.size() - 2];
  const int64_t k = as.back();
  const int64_t n = bs.back();
  if (bs[bs.size() - 2] != k) {
    return run.Error(fmt::format("inner dimensions differ: {} x {}",
                                 planner::ShapeToString(a.shape()),
                                 planner::ShapeToString(b.shape())));
  }
  const Shape a_batch(as.begin(), as.end() - 2);
  const Shape b_batch(bs.begin(), bs.end() - 2);
  std::optional<Shape> batch = BroadcastShapes(a_batch, b_batch);
  if (!batch) {
    return run.Error(fmt::format("batch dimensions of {} and {} do not broadcast",
                                 planner::ShapeToString(a.shape()),
                                 planner::ShapeToString(b.shape())));
  }
  Shape out_shape = *batch;
  if (!a_vector) out_shape.push_back(m);
  if (!b_vector) out_shape.push_back(n);
  Tensor y(a.dtype(), out_shape);
  const std::vector<int64_t> a_at = BroadcastOffsets(a_batch, *batch);
  const std::vector<int64_t> b_at = BroadcastOffsets(b_batch, *batch);
  if (a.dtype() == DType::kF64) {
    BatchedMatMul(a.as<double>(), b.as<double>(), y.as<double>(), a_at, b_at, m, k, n);
  } else {
    BatchedMatMul(reinterpret_cast<const uint64_t*>(a.as<int64_t>()),
                  reinterpret_cast<const uint64_t*>(b.as<int64_t>()),
                  reinterpret_cast<uint64_t*>(y.as<int64_t>()), a_at, b_at, m, k, n);
  }
  run.SetOutput(0, std::move(y));
  return Status::Ok();
}

Status Gemm(NodeRun& run) {
  KF_RETURN_IF_ERROR(run.Require(2));
  KF_RETURN_IF_ERROR(run.RequireFloat(0));
  KF_RETURN_IF_ERROR(run.RequireFloat(1));
  const Tensor& a = run.In(0);
  const Tensor& b = run.In(1);
  if (a.shape().size() != 2 || b.shape().size() != 2) {
    return run.Error(fmt::format("needs rank 2 inputs, got {} and {}",
                                 planner::ShapeToString(a.shape()),
                                 planner::ShapeToString(b.shape())));
  }
  const bool trans_a = run.node().IntAttr("transA", 0) != 0;
  const bool trans_b = run.node().IntAttr("transB", 0) != 0;
  const double alpha = run.node().FloatAttr("alpha", 1.0);
  const double beta = run.node().FloatAttr("beta", 1.0);
  const int64_t m = trans_a ? a.shape()[1] : a.shape()[0];
  const int64_t k = trans_a ? a.shape()[0] : a.shape()[1];
  const int64_t n = trans_b ? b.shape()[0] : b.shape()[1];
  if ((trans_b ? b.shape()[1] : b.shape()[0]) != k) {
    return run.Error(fmt::format("inner dimensions differ: {} x {} (transA={}, transB={})",
                                 planner::ShapeToString(a.shape()),
                                 planner::ShapeToString(b.shape()), trans_a ? 1 : 0,
                                 trans_b ? 1 : 0));
  }
  const Shape out_shape = {m, n};
  std::vector<int64_t> c_at;
  if (run.Has(2)) {
    const Shape& cs = run.In(2).shape();
    std::optional<Shape> bc = BroadcastShapes(cs, out_shape);
    if (!bc || *bc != out_shape) {
      return run.Error(fmt::format("C shape {} does not broadcast to {}",
                                   planner::ShapeToString(cs), planner::ShapeToString(out_shape)));
    }
    c_at = BroadcastOffsets(cs, out_shape);
  }
  const std::vector<double> a2 = MaybeTransposed(a, trans_a);
  const std::vector<double> b2 = MaybeTransposed(b, trans_b);
  Tensor y(DType::kF64, out_shape);
  BatchedMatMul(a2.data(), b2.data(), y.as<double>(), {0}, {0}, m, k, n);
  for (int64_t i = 0; i < y.elements(); ++i) {
    const double c = c_at.empty() ? 0 : beta * run.In(2).GetDouble(c_at[static_cast<size_t>(i)]);
    y.as<double>()[i] = alpha * y.as<double>()[i] + c;
  }
  run.SetOutput(0, std::move(y));
  return Status::Ok();
}

Status Conv(NodeRun& run) {
  KF_ASSIGN_OR_RETURN(std::vector<int64_t> kernel, ConvKernel(run));
  const Tensor& x = run.In(0);
  const Tensor& w = run.In(1);
  const int64_t group = run.node().IntAttr("group", 1);
  const int64_t channels = x.shape()[1];
  const int64_t out_channels = w.shape()[0];
  const int64_t group_in = w.shape()[1];
  if (group < 1 || channels != group_in * group || out_channels % group != 0) {
    return run.Error(fmt::format("input channels {} do not match weight {} with group {}", channels,
                                 planner::ShapeToString(w.shape()), group));
  }
  KF_ASSIGN_OR_RETURN(Window win, ForwardWindow(run, x.shape(), std::move(kernel), false));
  Tensor y(DType::kF64, WindowOutputShape(x.shape(), out_channels, win));
  const int64_t group_out = out_channels / group;
  const int64_t planes = x.shape()[0] * out_channels;
  const double* in_data = x.as<double>();
  const double* w_data = w.as<double>();
  double* out_data = y.as<double>();
#pragma omp parallel for schedule(static)
  for (int64_t p = 0; p < planes; ++p) {
    const int64_t n = p / out_channels;
    const int64_t oc = p % out_channels;
    const int64_t g = oc / group_out;
    double* out = out_data + p * win.OutSize();
    std::fill_n(out, win.OutSize(), 0.0);
    for (int64_t icg = 0; icg < group_in; ++icg) {
      const double* in = in_data + (n * channels + g * group_in + icg) * win.InSize();
      const double* wk = w_data + (oc * group_in + icg) * win.KernelSize();
      for (int64_t kd = 0; kd < win.kernel[0]; ++kd) {
        for (int64_t kh = 0; kh < win.kernel[1]; ++kh) {
          for (int64_t kw = 0; kw < win.kernel[2]; ++kw) {
            const double wv = wk[(kd * win.kernel[1] + kh) * win.kernel[2] + kw];
            const int64_t w_off = kw * win.dilation[2] - win.pad[2];
            const auto [ow0, ow1] = ValidRange(win.out[2], win.in[2], win.stride[2], w_off);
            for (int64_t od = 0; od < win.out[0]; ++od) {
              const int64_t id = od * win.stride[0] - win.pad[0] + kd * win.dilation[0];
              if (id < 0 || id >= win.in[0]) continue;
              for (int64_t oh = 0; oh < win.out[1]; ++oh) {
                const int64_t ih = oh * win.stride[1] - win.pad[1] + kh * win.dilation[1];
                if (ih < 0 || ih >= win.in[1]) continue;
                double* out_row = out + (od * win.out[1] + oh) * win.out[2];
                const double* in_row = in + (id * win.in[1] + ih) * win.in[2];
#pragma omp simd
                for (int64_t ow = ow0; ow < ow1; ++ow) {
                  out_row[ow] += wv * in_row[ow * win.stride[2] + w_off];
                }
              }
            }
          }
        }
      }
    }
  }
  KF_RETURN_IF_ERROR(AddBias(run, y, out_channels));
  run.SetOutput(0, std::move(y));
  return Status::Ok();
}

Status ConvTranspose(NodeRun& run) {
  KF_ASSIGN_OR_RETURN(std::vector<int64_t> kernel, ConvKernel(run));
  const Tensor& x = run.In(0);
  const Tensor& w = run.In(1);
  const int64_t group = run.node().IntAttr("group", 1);
  const int64_t channels = x.shape()[1];
  if (group < 1 || channels != w.shape()[0] || channels % group != 0) {
    return run.Error(fmt::format("input channels {} do not match weight {} with group {}", channels,
                                 planner::ShapeToString(w.shape()), group));
  }
  const size_t spatial = x.shape().size() - 2;
  KF_ASSIGN_OR_RETURN(WindowAttrs attrs, ReadWindowAttrs(run, spatial, std::move(kernel)));
  std::vector<int64_t> output_padding = run.node().IntsAttr("output_padding");
  if (output_padding.empty()) output_padding.assign(spatial, 0);
  const std::vector<int64_t> output_shape = run.node().IntsAttr("output_shape");
  if (output_padding.size() != spatial ||
      (!output_shape.empty() && output_shape.size() < spatial)) {
    return run.Error("output_padding or output_shape does not match the spatial dims");
  }
  Window win;
  for (size_t i = 0; i < spatial; ++i) {
    const size_t d = 3 - spatial + i;
    const int64_t in = x.shape()[i + 2];
    const int64_t stride = attrs.strides[i];
    const int64_t extent = (attrs.kernel[i] - 1) * attrs.dilations[i] + 1;
    // The output every input position and kernel tap reaches, before any padding is removed.
    const int64_t full = stride * (in - 1) + output_padding[i] + extent;
    int64_t out = 0;
    int64_t begin = 0;
    const bool same = attrs.auto_pad == "SAME_UPPER" || attrs.auto_pad == "SAME_LOWER";
    if (!output_shape.empty() || same) {
      // ONNX: total_padding = full - output_shape; SAME_UPPER pads total/2 at the beginning,
      // everything else total - total/2.
      out = output_shape.empty() ? in * stride : output_shape[output_shape.size() - spatial + i];
      const int64_t total = full - out;
      begin = attrs.auto_pad == "SAME_UPPER" ? FloorDiv2(total) : total - FloorDiv2(total);
    } else if (attrs.auto_pad == "VALID") {
      out = full;
    } else {
      begin = attrs.pads[i];
      out = full - attrs.pads[i] - attrs.pads[i + spatial];
    }
    win.in[d] = in;
    win.out[d] = std::max<int64_t>(0, out);
    win.kernel[d] = attrs.kernel[i];
    win.stride[d] = stride;
    win.dilation[d] = attrs.dilations[i];
    win.pad[d] = begin;
  }
  const int64_t group_in = channels / group;
  const int64_t group_out = w.shape()[1];
  const int64_t out_channels = group_out * group;
  Tensor y(DType::kF64, WindowOutputShape(x.shape(), out_channels, win));
  const int64_t planes = x.shape()[0] * out_channels;
  const double* in_data = x.as<double>();
  const double* w_data = w.as<double>();
  double* out_data = y.as<double>();
  // Each output plane gathers from the input channels of its group: out[i * stride + k *
  // dilation - pad] += x[i] * w[k].
#pragma omp parallel for schedule(static)
  for (int64_t p = 0; p < planes; ++p) {
    const int64_t n = p / out_channels;
    const int64_t oc = p % out_channels;
    const int64_t g = oc / group_out;
    double* out = out_data + p * win.OutSize();
    std::fill_n(out, win.OutSize(), 0.0);
    for (int64_t icg = 0; icg < group_in; ++icg) {
      const int64_t ic = g * group_in + icg;
      const double* in = in_data + (n * channels + ic) * win.InSize();
      const double* wk = w_data + (ic * group_out + oc % group_out) * win.KernelSize();
      for (int64_t kd = 0; kd < win.kernel[0]; ++kd) {
        for (int64_t kh = 0; kh < win.kernel[1]; ++kh) {
          for (int64_t kw = 0; kw < win.kernel[2]; ++kw) {
            const double wv = wk[(kd * win.kernel[1] + kh) * win.kernel[2] + kw];
            const int64_t w_off = kw * win.dilation[2] - win.pad[2];
            const auto [iw0, iw1] = ValidRange(win.in[2], win.out[2], win.stride[2], w_off);
            for (int64_t id = 0; id < win.in[0]; ++id) {
              const int64_t od = id * win.stride[0] + kd * win.dilation[0] - win.pad[0];
              if (od < 0 || od >= win.out[0]) continue;
              for (int64_t ih = 0; ih < win.in[1]; ++ih) {
                const int64_t oh = ih * win.stride[1] + kh * win.dilation[1] - win.pad[1];
                if (oh < 0 || oh >= win.out[1]) continue;
                double* out_row = out + (od * win.out[1] + oh) * win.out[2];
                const double* in_row = in + (id * win.in[1] + ih) * win.in[2];
                for (int64_t iw = iw0; iw < iw1; ++iw) {
                  out_row[iw * win.stride[2] + w_off] += wv * in_row[iw];
                }
              }
            }
          }
        }
      }
    }
  }
  KF_RETURN_IF_ERROR(AddBias(run, y, out_channels));
  run.SetOutput(0, std::move(y));
  return Status::Ok();
}

Status MaxPool(NodeRun& run) { return Pool(run, true); }

Status AveragePool(NodeRun& run) { return Pool(run, false); }

Status GlobalAveragePool(NodeRun& run) {
  KF_RETURN_IF_ERROR(run.Require(1));
  KF_RETURN_IF_ERROR(run.RequireFloat(0));
  const Tensor& x = run.In(0);
  const Shape& shape = x.shape();
  if (shape.size() < 3) {
    return run.Error(
        fmt::format("needs input [N,C,spatial...], got {}", planner::ShapeToString(shape)));
  }
  Shape out_shape(shape.size(), 1);
  out_shape[0] = shape[0];
  out_shape[1] = shape[1];
  Tensor y(DType::kF64, out_shape);
  const int64_t inner = planner::NumElements(Shape(shape.begin() + 2, shape.end()));
  for (int64_t p = 0; p < y.elements(); ++p) {
    double sum = 0;
    for (int64_t i = 0; i < inner; ++i) sum += x.as<double>()[p * inner + i];
    y.as<double>()[p] = sum / static_cast<double>(inner);
  }
  run.SetOutput(0, std::move(y));
  return Status::Ok();
}

Status Resize(NodeRun& run) {
  KF_RETURN_IF_ERROR(run.Require(1));
  if (run.In(0).dtype() == DType::kBool) return run.Error("does not take bool inputs");
  const Tensor x = ConvertTensor(run.In(0), DType::kF64);
  const Shape& shape = x.shape();
  const auto rank = static_cast<int64_t>(shape.size());
  const planner::Node& node = run.node();
  ResizeMode m{node.StringAttr("mode", "nearest"),
               node.StringAttr("coordinate_transformation_mode", "half_pixel"),
               node.StringAttr("nearest_mode", "round_prefer_floor"),
               node.FloatAttr("cubic_coeff_a", -0.75), node.IntAttr("exclude_outside", 0) != 0};
  if (m.mode != "nearest" && m.mode != "linear" && m.mode != "cubic") {
    return run.Error(fmt::format("unknown mode '{}'", m.mode));
  }
  if (m.coordinate != "half_pixel" && m.coordinate != "half_pixel_symmetric" &&
      m.coordinate != "pytorch_half_pixel" && m.coordinate != "align_corners" &&
      m.coordinate != "asymmetric") {
    return run.Error(
        fmt::format("coordinate_transformation_mode '{}' is not supported", m.coordinate));
  }
  if (m.nearest != "round_prefer_floor" && m.nearest != "round_prefer_ceil" &&
      m.nearest != "floor" && m.nearest != "ceil") {
    return run.Error(fmt::format("unknown nearest_mode '{}'", m.nearest));
  }
  if (node.IntAttr("antialias", 0) != 0) return run.Error("antialias is not supported");
  std::vector<int64_t> axes = node.IntsAttr("axes");
  if (axes.empty()) {
    for (int64_t d = 0; d < rank; ++d) axes.push_back(d);
  }
  for (int64_t& a : axes) {
    KF_ASSIGN_OR_RETURN(a, run.NormalizeAxis(a, rank));
  }
  // Exporters pass an empty tensor for whichever of scales / sizes is not used.
  std::vector<double> given_scales;
  if (run.Has(2)) {
    for (int64_t i = 0; i < run.In(2).elements(); ++i) {
      given_scales.push_back(run.In(2).GetDouble(i));
    }
  }
  std::vector<int64_t> sizes;
  if (run.Has(3)) {
    KF_ASSIGN_OR_RETURN(sizes, run.Ints(3, "sizes"));
  }
  if (given_scales.empty() == sizes.empty()) {
    return run.Error("needs exactly one of scales and sizes");
  }
  if (given_scales.size() + sizes.size() != axes.size()) {
    return run.Error(fmt::format("{} scales or sizes for {} axes",
                                 given_scales.size() + sizes.size(), axes.size()));
  }
  Shape out_shape = shape;
  std::vector<double> scales(shape.size(), 1.0);
  const std::string policy = node.StringAttr("keep_aspect_ratio_policy", "stretch");
  if (!given_scales.empty()) {
    for (size_t i = 0; i < axes.size(); ++i) {
      if (given_scales[i] <= 0) return run.Error("scales must be positive");
      scales[axes[i]] = given_scales[i];
      out_shape[axes[i]] =
          static_cast<int64_t>(std::floor(static_cast<double>(shape[axes[i]]) * given_scales[i]));
    }
  } else if (std::any_of(sizes.begin(), sizes.end(), [](int64_t s) { return s < 0; })) {
    return run.Error(fmt::format("sizes [{}] have a negative entry", fmt::join(sizes, ",")));
  } else if (policy == "stretch") {
    for (size_t i = 0; i < axes.size(); ++i) {
      out_shape[axes[i]] = sizes[i];
      scales[axes[i]] = static_cast<double>(sizes[i]) / static_cast<double>(shape[axes[i]]);
    }
  } else if (policy == "not_larger" || policy == "not_smaller") {
    // One scale for every axis: the smallest (or largest) the requested sizes allow.
    double scale = policy == "not_larger" ? std::numeric_limits<double>::max() : 0.0;
    for (size_t i = 0; i < axes.size(); ++i) {
      const double s = static_cast<double>(sizes[i]) / static_cast<double>(shape[axes[i]]);
      scale = policy == "not_larger" ? std::min(scale, s) : std::max(scale, s);
    }
    for (int64_t a : axes) {
      scales[a] = scale;
      out_shape[a] = static_cast<int64_t>(std::nearbyint(scale * static_cast<double>(shape[a])));
    }
  } else {
    return run.Error(fmt::format("unknown keep_aspect_ratio_policy '{}'", policy));
  }
  for (size_t d = 0; d < shape.size(); ++d) {
    if (shape[d] == 0 && out_shape[d] > 0) return run.Error("cannot resize an empty dim");
  }
  // Taps per axis and output coordinate, then every output element sums over their product.
  std::vector<std::vector<std::vector<Tap>>> taps(shape.size());
  for (size_t d = 0; d < shape.size(); ++d) {
    for (int64_t o = 0; o < out_shape[d]; ++o) {
      taps[d].push_back(AxisTaps(m, o, scales[d], shape[d], out_shape[d]));
    }
  }
  const Shape strides = ContiguousStrides(shape);
  Tensor y(DType::kF64, out_shape);
  std::vector<const std::vector<Tap>*> element_taps(shape.size());
  ForEachIndex(out_shape, [&](int64_t n, const std::vector<int64_t>& index) {
    for (size_t d = 0; d < index.size(); ++d) element_taps[d] = &taps[d][index[d]];
    y.as<double>()[n] = Interpolate(x.as<double>(), strides, element_taps, 0, 0, 1.0);
  });
  run.SetOutput(0, ConvertTensor(y, run.OutDType(0)));
  return Status::Ok();
}

}  // namespace kfleet::runtime::reference_internal

// Baseline kernels for MatMul, Gemm, Conv, ConvTranspose and pooling: OpenBLAS sgemm for every
// matrix product (im2col + sgemm for Conv, sgemm + col2im for ConvTranspose), direct loops for
// depthwise convolution and pooling.
#include <cblas.h>
#include <fmt/format.h>
#include <omp.h>

#include <climits>
#include <cmath>
#include <cstring>
#include <limits>
#include <set>
#include <utility>

#include "runtime/baseline_ops.h"

namespace kfleet::runtime::baseline {
namespace {

using planner::NumElements;
using planner::ShapeToString;

Status CheckBlasDims(std::initializer_list<int64_t> dims) {
  for (int64_t d : dims) {
    if (d > INT_MAX) {
      return InvalidArgument(fmt::format("a matrix dim of {} exceeds what sgemm indexes", d));
    }
  }
  return Status::Ok();
}

void Sgemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
           int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
              trans_b ? CblasTrans : CblasNoTrans, static_cast<blasint>(m), static_cast<blasint>(n),
              static_cast<blasint>(k), alpha, a, static_cast<blasint>(lda), b,
              static_cast<blasint>(ldb), beta, c, static_cast<blasint>(ldc));
}

// Below this much work per thread a matrix product is not split.
constexpr double kMinFlopsPerThread = 4e6;

// Threads worth giving a product of `flops` (1 inside a parallel region: the caller splits).
int GemmTeam(double flops) {
  if (omp_in_parallel()) return 1;
  const double useful = std::max(1.0, flops / kMinFlopsPerThread);
  return static_cast<int>(std::min<double>(omp_get_max_threads(), useful));
}

// sgemm on the OpenMP team: OpenBLAS runs single-threaded (see baseline.cc) and each thread
// computes one block of C's columns (or rows, when C is taller than wide).
void ParallelSgemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha,
                   const float* a, int64_t lda, const float* b, int64_t ldb, float beta, float* c,
                   int64_t ldc) {
  const int team =
      GemmTeam(2.0 * static_cast<double>(m) * static_cast<double>(n) * static_cast<double>(k));
  if (team <= 1) {
    Sgemm(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    return;
  }
  const bool split_columns = n >= m;
  const int64_t extent = split_columns ? n : m;
  // Blocks in multiples of the BLAS micro-kernel's tile so no thread gets a ragged edge.
  const int64_t align = split_columns ? 16 : 8;
  // The whole team with the extra threads idle, as in ParallelFor: regions of changing size
  // make libgomp re-dock its pool.
#pragma omp parallel
  {
    const int64_t t = omp_get_thread_num();
    const int64_t threads = std::min<int64_t>(team, omp_get_num_threads());
    const int64_t chunk = ((extent + threads - 1) / threads + align - 1) / align * align;
    const int64_t begin = std::min(extent, t * chunk);
    const int64_t end = std::min(extent, begin + chunk);
    if (begin < end && split_columns) {
      Sgemm(trans_a, trans_b, m, end - begin, k, alpha, a, lda,
            trans_b ? b + begin * ldb : b + begin, ldb, beta, c + begin, ldc);
    } else if (begin < end) {
      Sgemm(trans_a, trans_b, end - begin, n, k, alpha, trans_a ? a + begin : a + begin * lda, lda,
            b, ldb, beta, c + begin * ldc, ldc);
    }
  }
}

// ---- MatMul / Gemm ----

// Integer MatMul has no BLAS; exporters only emit it for small index arithmetic.
void IntMatMul(const int64_t* a, const int64_t* b, int64_t* c, int64_t m, int64_t n, int64_t k) {
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t j = 0; j < n; ++j) {
      uint64_t acc = 0;
      for (int64_t p = 0; p < k; ++p) {
        acc += static_cast<uint64_t>(a[i * k + p]) * static_cast<uint64_t>(b[p * n + j]);
      }
      c[i * n + j] = static_cast<int64_t>(acc);
    }
  }
}

Result<PreparedOp> PrepareMatMul(const NodeContext& c) {
  KF_RETURN_IF_ERROR(c.RequireInputs(2));
  Shape a = c.InShape(0);
  Shape b = c.InShape(1);
  if (a.empty() || b.empty()) return InvalidArgument("needs inputs of rank >= 1");
  if (c.InStorage(0) != c.InStorage(1) || c.InStorage(0) == Storage::kBool) {
    return InvalidArgument(fmt::format("MatMul of {} by {} is not supported",
                                       planner::DTypeName(c.Input(0).dtype),
                                       planner::DTypeName(c.Input(1).dtype)));
  }
  if (a.size() == 1) a.insert(a.begin(), 1);
  if (b.size() == 1) b.push_back(1);
  const int64_t m = a[a.size() - 2];
  const int64_t k = a.back();
  const int64_t n = b.back();
  const Shape batch_a(a.begin(), a.end() - 2);
  const Shape batch_b(b.begin(), b.end() - 2);
  Shape batch_out = batch_a.size() >= batch_b.size() ? batch_a : batch_b;
  for (size_t i = 0; i < batch_out.size(); ++i) {
    const int64_t da = i < batch_a.size() ? batch_a[batch_a.size() - 1 - i] : 1;
    const int64_t db = i < batch_b.size() ? batch_b[batch_b.size() - 1 - i] : 1;
    batch_out[batch_out.size() - 1 - i] = std::max(da, db);
  }
  const int64_t batches = NumElements(batch_out);
  // B shared by every batch and A not broadcast: one sgemm over all of A's rows (Linear layers).
  const bool one_gemm = NumElements(batch_b) == 1 && NumElements(batch_a) == batches;
  KF_RETURN_IF_ERROR(CheckBlasDims({one_gemm ? batches * m : m, n, k}));
  const auto plan = BroadcastPlan<2>::Make(batch_out, {batch_a, batch_b});
  const bool is_float = c.InStorage(0) == Storage::kFloat;
  Kernel run = [=](const OpArgs& args) {
    if (batches == 0 || m == 0 || n == 0) return Status::Ok();
    if (is_float) {
      const float* pa = args.inputs[0]->as<const float>();
      const float* pb = args.inputs[1]->as<const float>();
      float* pc = args.outputs[0]->as<float>();
      if (k == 0) {
        std::fill(pc, pc + batches * m * n, 0.0f);
        return Status::Ok();
      }
      if (one_gemm) {
        ParallelSgemm(false, false, batches * m, n, k, 1.0f, pa, k, pb, n, 0.0f, pc, n);
        return Status::Ok();
      }
      // Enough batches (attention heads) to go round: one thread per batch; else each product
      // is split.
      const double flops =
          2.0 * static_cast<double>(m) * static_cast<double>(n) * static_cast<double>(k);
      const bool per_batch = batches >= omp_get_max_threads() || GemmTeam(flops) == 1;
      auto run_batches = [&](int64_t begin, int64_t end) {
        Odometer<2> it{&plan.dims, {&plan.strides[0], &plan.strides[1]}, {}, {}};
        it.Seek(begin);
        for (int64_t batch = begin; batch < end; ++batch) {
          const float* a_batch = pa + it.offset[0] * m * k;
          const float* b_batch = pb + it.offset[1] * k * n;
          if (per_batch) {
            Sgemm(false, false, m, n, k, 1.0f, a_batch, k, b_batch, n, 0.0f, pc + batch * m * n, n);
          } else {
            ParallelSgemm(false, false, m, n, k, 1.0f, a_batch, k, b_batch, n, 0.0f,
                          pc + batch * m * n, n);
          }
          it.Next();
        }
      };
      if (per_batch) {
        ParallelFor(batches, std::max<int64_t>(1, static_cast<int64_t>(kMinFlopsPerThread / flops)),
                    run_batches);
      } else {
        run_batches(0, batches);
      }
      return Status::Ok();
    }
    const int64_t* pa = args.inputs[0]->as<const int64_t>();
    const int64_t* pb = args.inputs[1]->as<const int64_t>();
    int64_t* pc = args.outputs[0]->as<int64_t>();
    Odometer<2> it{&plan.dims, {&plan.strides[0], &plan.strides[1]}, {}, {}};
    it.Seek(0);
    for (int64_t batch = 0; batch < batches; ++batch) {
      IntMatMul(pa + it.offset[0] * m * k, pb + it.offset[1] * k * n, pc + batch * m * n, m, n, k);
      it.Next();
    }
    return Status::Ok();
  };
  return PreparedOp{std::move(run), 0, false};
}

Result<PreparedOp> PrepareGemm(const NodeContext& c) {
  KF_RETURN_IF_ERROR(c.RequireInputs(2));
  if (c.InStorage(0) != Storage::kFloat || c.InStorage(1) != Storage::kFloat) {
    return InvalidArgument("Gemm needs floating inputs");
  }
  const Shape& a = c.InShape(0);
  const Shape& b = c.InShape(1);
  if (a.size() != 2 || b.size() != 2) return InvalidArgument("needs rank 2 inputs");
  const bool trans_a = c.node().IntAttr("transA", 0) != 0;
  const bool trans_b = c.node().IntAttr("transB", 0) != 0;
  const auto alpha = static_cast<float>(c.node().FloatAttr("alpha", 1.0));
  const auto beta = static_cast<float>(c.node().FloatAttr("beta", 1.0));
  const int64_t m = trans_a ? a[1] : a[0];
  const int64_t k = trans_a ? a[0] : a[1];
  const int64_t n = trans_b ? b[0] : b[1];
  KF_RETURN_IF_ERROR(CheckBlasDims({m, n, k}));
  const bool has_c = c.HasInput(2) && beta != 0.0f;
  const Shape c_shape = c.HasInput(2) ? c.InShape(2) : Shape{};
  const Shape out_shape = c.OutShape(0);
  const int64_t lda = a[1];
  const int64_t ldb = b[1];
  Kernel run = [=](const OpArgs& args) {
    float* out = args.outputs[0]->as<float>();
    if (m == 0 || n == 0) return Status::Ok();
    if (has_c) {
      // The bias goes in first and sgemm accumulates onto it (beta = 1): one pass over C.
      BroadcastCopy(args.inputs[2]->as<const float>(), c_shape, out, out_shape);
      if (beta != 1.0f) {
        ParallelFor(m * n, kParallelGrainElements, [&](int64_t begin, int64_t end) {
          for (int64_t i = begin; i < end; ++i) out[i] *= beta;
        });
      }
    }
    if (k == 0) {
      if (!has_c) std::fill(out, out + m * n, 0.0f);
      return Status::Ok();
    }
    ParallelSgemm(trans_a, trans_b, m, n, k, alpha, args.inputs[0]->as<const float>(), lda,
                  args.inputs[1]->as<const float>(), ldb, has_c ? 1.0f : 0.0f, out, n);
    return Status::Ok();
  };
  return PreparedOp{std::move(run), 0, false};
}

// ---- Windows: Conv, ConvTranspose, pools ----

// Up to three spatial dims, padded to three (depth, height, width) with unit dims in front so one
// loop nest serves 1-D, 2-D and 3-D.
constexpr size_t kMaxSpatial = 3;

struct Window {
  std::array<int64_t, kMaxSpatial> in{1, 1, 1};
  std::array<int64_t, kMaxSpatial> out{1, 1, 1};
  std::array<int64_t, kMaxSpatial> kernel{1, 1, 1};
  std::array<int64_t, kMaxSpatial> stride{1, 1, 1};
  std::array<int64_t, kMaxSpatial> dilation{1, 1, 1};
  std::array<int64_t, kMaxSpatial> pad_begin{0, 0, 0};
  std::array<int64_t, kMaxSpatial> pad_end{0, 0, 0};

  int64_t in_size() const { return in[0] * in[1] * in[2]; }
  int64_t out_size() const { return out[0] * out[1] * out[2]; }
  int64_t kernel_size() const { return kernel[0] * kernel[1] * kernel[2]; }
};

// Reads kernel, strides, dilations and pads (auto_pad resolved against the known output size)
// the way the planner's shape rules do.
Result<Window> ReadWindow(const NodeContext& c, const Shape& in, const Shape& out,
                          std::vector<int64_t> kernel, bool transposed) {
  const size_t spatial = in.size() - 2;
  if (spatial == 0 || spatial > kMaxSpatial) {
    return InvalidArgument(fmt::format("{} spatial dims; the baseline handles 1 to 3", spatial));
  }
  std::vector<int64_t> strides = c.node().IntsAttr("strides");
  std::vector<int64_t> dilations = c.node().IntsAttr("dilations");
  std::vector<int64_t> pads = c.node().IntsAttr("pads");
  std::vector<int64_t> output_padding = c.node().IntsAttr("output_padding");
  const std::string auto_pad = c.node().StringAttr("auto_pad", "NOTSET");
  if (strides.empty()) strides.assign(spatial, 1);
  if (dilations.empty()) dilations.assign(spatial, 1);
  if (pads.empty()) pads.assign(2 * spatial, 0);
  if (output_padding.empty()) output_padding.assign(spatial, 0);
  if (kernel.size() != spatial || strides.size() != spatial || dilations.size() != spatial ||
      pads.size() != 2 * spatial || output_padding.size() != spatial) {
    return InvalidArgument("kernel_shape, strides, dilations and pads do not match the input");
  }
  const bool explicit_output = transposed && !c.node().IntsAttr("output_shape").empty();
  Window w;
  const size_t shift = kMaxSpatial - spatial;
  for (size_t i = 0; i < spatial; ++i) {
    const size_t d = shift + i;
    w.in[d] = in[i + 2];
    w.out[d] = out[i + 2];
    w.kernel[d] = kernel[i];
    w.stride[d] = strides[i];
    w.dilation[d] = dilations[i];
    const int64_t extent = (kernel[i] - 1) * dilations[i] + 1;
    if (auto_pad == "VALID") continue;
    if (transposed && (auto_pad != "NOTSET" || explicit_output)) {
      // ONNX ConvTranspose: the padding that yields the requested output, split as the spec says.
      const int64_t total = strides[i] * (w.in[d] - 1) + output_padding[i] + extent - w.out[d];
      w.pad_begin[d] = auto_pad == "SAME_UPPER" ? total / 2 : total - total / 2;
      w.pad_end[d] = total - w.pad_begin[d];
    } else if (!transposed && (auto_pad == "SAME_UPPER" || auto_pad == "SAME_LOWER")) {
      const int64_t total = std::max<int64_t>(0, (w.out[d] - 1) * strides[i] + extent - w.in[d]);
      w.pad_begin[d] = auto_pad == "SAME_UPPER" ? total / 2 : total - total / 2;
      w.pad_end[d] = total - w.pad_begin[d];
    } else {
      w.pad_begin[d] = pads[i];
      w.pad_end[d] = pads[i + spatial];
    }
  }
  return w;
}

// Output positions o in [0, out) whose input position o * stride + offset lies in [0, in).
std::pair<int64_t, int64_t> ValidRange(int64_t offset, int64_t stride, int64_t in, int64_t out) {
  // First o with o * stride + offset >= 0, and one past the last with o * stride + offset < in.
  int64_t begin = offset >= 0 ? 0 : (-offset + stride - 1) / stride;
  int64_t end = in - offset <= 0 ? 0 : (in - offset - 1) / stride + 1;
  begin = std::min(begin, out);
  end = std::clamp(end, begin, out);
  return {begin, end};
}

// col[(c, kd, kh, kw), (od, oh, ow)] = x[c, od*s - p + kd*d, ...], zero outside the input.
void Im2Col(const float* x, int64_t channels, const Window& w, float* col) {
  const int64_t kernel = w.kernel_size();
  const int64_t out_size = w.out_size();
  const int64_t in_size = w.in_size();
  ParallelFor(channels * kernel, std::max<int64_t>(1, kParallelGrainElements / out_size),
              [&](int64_t begin, int64_t end) {
                for (int64_t r = begin; r < end; ++r) {
                  const int64_t ch = r / kernel;
                  const int64_t kw = r % w.kernel[2];
                  const int64_t kh = (r / w.kernel[2]) % w.kernel[1];
                  const int64_t kd = (r / (w.kernel[2] * w.kernel[1])) % w.kernel[0];
                  const float* xc = x + ch * in_size;
                  float* dst = col + r * out_size;
                  const int64_t w_offset = kw * w.dilation[2] - w.pad_begin[2];
                  const auto [ow0, ow1] = ValidRange(w_offset, w.stride[2], w.in[2], w.out[2]);
                  for (int64_t od = 0; od < w.out[0]; ++od) {
                    const int64_t id = od * w.stride[0] - w.pad_begin[0] + kd * w.dilation[0];
                    for (int64_t oh = 0; oh < w.out[1]; ++oh) {
                      const int64_t ih = oh * w.stride[1] - w.pad_begin[1] + kh * w.dilation[1];
                      float* drow = dst + (od * w.out[1] + oh) * w.out[2];
                      if (id < 0 || id >= w.in[0] || ih < 0 || ih >= w.in[1]) {
                        std::fill(drow, drow + w.out[2], 0.0f);
                        continue;
                      }
                      const float* srow = xc + (id * w.in[1] + ih) * w.in[2];
                      std::fill(drow, drow + ow0, 0.0f);
                      if (w.stride[2] == 1) {
                        std::memcpy(drow + ow0, srow + ow0 + w_offset,
                                    static_cast<size_t>(ow1 - ow0) * sizeof(float));
                      } else {
                        for (int64_t ow = ow0; ow < ow1; ++ow) {
                          drow[ow] = srow[ow * w.stride[2] + w_offset];
                        }
                      }
                      std::fill(drow + ow1, drow + w.out[2], 0.0f);
                    }
                  }
                }
              });
}

// out[m] += weight * x[c] over one kernel tap, for every output position (depthwise Conv).
void AccumulateTap(const float* xc, float weight, const Window& w, int64_t kd, int64_t kh,
                   int64_t kw, float* out) {
  const int64_t w_offset = kw * w.dilation[2] - w.pad_begin[2];
  const auto [ow0, ow1] = ValidRange(w_offset, w.stride[2], w.in[2], w.out[2]);
  const int64_t sw = w.stride[2];
  for (int64_t od = 0; od < w.out[0]; ++od) {
    const int64_t id = od * w.stride[0] - w.pad_begin[0] + kd * w.dilation[0];
    if (id < 0 || id >= w.in[0]) continue;
    for (int64_t oh = 0; oh < w.out[1]; ++oh) {
      const int64_t ih = oh * w.stride[1] - w.pad_begin[1] + kh * w.dilation[1];
      if (ih < 0 || ih >= w.in[1]) continue;
      const float* srow = xc + (id * w.in[1] + ih) * w.in[2] + w_offset;
      float* drow = out + (od * w.out[1] + oh) * w.out[2];
      if (sw == 1) {
#pragma omp simd
        for (int64_t ow = ow0; ow < ow1; ++ow) drow[ow] += weight * srow[ow];
      } else {
        for (int64_t ow = ow0; ow < ow1; ++ow) drow[ow] += weight * srow[ow * sw];
      }
    }
  }
}

Result<PreparedOp> PrepareConv(const NodeContext& c) {
  KF_RETURN_IF_ERROR(c.RequireInputs(2));
  if (c.InStorage(0) != Storage::kFloat) return InvalidArgument("Conv needs floating inputs");
  const Shape& x = c.InShape(0);
  const Shape& wshape = c.InShape(1);
  if (x.size() < 3 || wshape.size() != x.size()) {
    return InvalidArgument(
        fmt::format("input {} and weight {} do not fit", ShapeToString(x), ShapeToString(wshape)));
  }
  const int64_t group = c.node().IntAttr("group", 1);
  const int64_t batch = x[0];
  const int64_t channels = x[1];
  const int64_t filters = wshape[0];
  if (group < 1 || channels != wshape[1] * group || filters % group != 0) {
    return InvalidArgument(fmt::format("input channels {} do not match weight {} with group {}",
                                       channels, ShapeToString(wshape), group));
  }
  std::vector<int64_t> kernel = c.node().IntsAttr("kernel_shape");
  if (kernel.empty()) kernel.assign(wshape.begin() + 2, wshape.end());
  KF_ASSIGN_OR_RETURN(Window w, ReadWindow(c, x, c.OutShape(0), kernel, false));
  const int64_t cg = channels / group;
  const int64_t mg = filters / group;
  const int64_t taps = cg * w.kernel_size();
  const int64_t in_size = w.in_size();
  const int64_t out_size = w.out_size();
  KF_RETURN_IF_ERROR(CheckBlasDims({mg, out_size, taps}));
  const bool depthwise = cg == 1 && group > 1;
  bool pointwise = true;
  for (size_t d = 0; d < kMaxSpatial; ++d) {
    pointwise = pointwise && w.kernel[d] == 1 && w.stride[d] == 1 && w.pad_begin[d] == 0 &&
                w.in[d] == w.out[d];
  }
  const bool has_bias = c.HasInput(2);
  // Images (and groups) go to threads whole when there are enough of them, each thread with its
  // own im2col buffer; otherwise one image at a time with im2col and sgemm split.
  const int64_t pairs = batch * group;
  const bool per_image = pairs >= c.threads();
  const int64_t col_floats = depthwise || pointwise ? 0 : taps * out_size;
  const int64_t col_buffers = per_image ? c.threads() : 1;
  const size_t scratch = static_cast<size_t>(col_floats * col_buffers) * sizeof(float);
  Kernel run = [=](const OpArgs& args) {
    const float* in = args.inputs[0]->as<const float>();
    const float* weight = args.inputs[1]->as<const float>();
    const float* bias = has_bias ? args.inputs[2]->as<const float>() : nullptr;
    float* out = args.outputs[0]->as<float>();
    if (out_size == 0) return Status::Ok();
    if (depthwise) {
      const int64_t kernel_size = w.kernel_size();
      ParallelFor(batch * filters, 1, [&](int64_t begin, int64_t end) {
        for (int64_t p = begin; p < end; ++p) {
          const int64_t m = p % filters;
          const int64_t n = p / filters;
          const float* xc = in + (n * channels + m / mg) * in_size;
          float* plane = out + p * out_size;
          std::fill(plane, plane + out_size, bias != nullptr ? bias[m] : 0.0f);
          const float* wm = weight + m * kernel_size;
          for (int64_t kd = 0; kd < w.kernel[0]; ++kd) {
            for (int64_t kh = 0; kh < w.kernel[1]; ++kh) {
              for (int64_t kw = 0; kw < w.kernel[2]; ++kw) {
                AccumulateTap(xc, wm[(kd * w.kernel[1] + kh) * w.kernel[2] + kw], w, kd, kh, kw,
                              plane);
              }
            }
          }
        }
      });
      return Status::Ok();
    }
    auto* scratch_floats = reinterpret_cast<float*>(args.scratch);
    // One (image, group): im2col, the bias as sgemm's starting C, then the product.
    auto convolve = [&](int64_t pair, float* col, bool split) {
      const int64_t n = pair / group;
      const int64_t g = pair % group;
      const float* xg = in + (n * channels + g * cg) * in_size;
      if (!pointwise) Im2Col(xg, cg, w, col);
      float* og = out + (n * filters + g * mg) * out_size;
      if (bias != nullptr) {
        for (int64_t m = 0; m < mg; ++m) {
          std::fill(og + m * out_size, og + (m + 1) * out_size, bias[g * mg + m]);
        }
      }
      const float beta = bias != nullptr ? 1.0f : 0.0f;
      const float* b = pointwise ? xg : col;
      if (split) {
        ParallelSgemm(false, false, mg, out_size, taps, 1.0f, weight + g * mg * taps, taps, b,
                      out_size, beta, og, out_size);
      } else {
        Sgemm(false, false, mg, out_size, taps, 1.0f, weight + g * mg * taps, taps, b, out_size,
              beta, og, out_size);
      }
    };
    if (per_image) {
#pragma omp parallel for schedule(dynamic, 1)
      for (int64_t pair = 0; pair < pairs; ++pair) {
        convolve(pair, scratch_floats + omp_get_thread_num() * col_floats, false);
      }
    } else {
      for (int64_t pair = 0; pair < pairs; ++pair) convolve(pair, scratch_floats, true);
    }
    return Status::Ok();
  };
  return PreparedOp{std::move(run), scratch, false};
}

// out[m, o] += col[(m, tap), i] where o = i * stride - pad + tap * dilation (ConvTranspose).
void Col2Im(const float* col, int64_t filters, const Window& w, float* out) {
  const int64_t kernel = w.kernel_size();
  const int64_t in_size = w.in_size();
  const int64_t out_size = w.out_size();
  ParallelFor(filters, 1, [&](int64_t begin, int64_t end) {
    for (int64_t m = begin; m < end; ++m) {
      float* plane = out + m * out_size;
      for (int64_t tap = 0; tap < kernel; ++tap) {
        const int64_t kw = tap % w.kernel[2];
        const int64_t kh = (tap / w.kernel[2]) % w.kernel[1];
        const int64_t kd = tap / (w.kernel[2] * w.kernel[1]);
        const float* src = col + (m * kernel + tap) * in_size;
        for (int64_t id = 0; id < w.in[0]; ++id) {
          const int64_t od = id * w.stride[0] - w.pad_begin[0] + kd * w.dilation[0];
          if (od < 0 || od >= w.out[0]) continue;
          for (int64_t ih = 0; ih < w.in[1]; ++ih) {
            const int64_t oh = ih * w.stride[1] - w.pad_begin[1] + kh * w.dilation[1];
            if (oh < 0 || oh >= w.out[1]) continue;
            const float* srow = src + (id * w.in[1] + ih) * w.in[2];
            float* drow = plane + (od * w.out[1] + oh) * w.out[2];
            for (int64_t iw = 0; iw < w.in[2]; ++iw) {
              const int64_t ow = iw * w.stride[2] - w.pad_begin[2] + kw * w.dilation[2];
              if (ow >= 0 && ow < w.out[2]) drow[ow] += srow[iw];
            }
          }
        }
      }
    }
  });
}

Result<PreparedOp> PrepareConvTranspose(const NodeContext& c) {
  KF_RETURN_IF_ERROR(c.RequireInputs(2));
  if (c.InStorage(0) != Storage::kFloat) return InvalidArgument("needs floating inputs");
  const Shape& x = c.InShape(0);
  const Shape& wshape = c.InShape(1);
  if (x.size() < 3 || wshape.size() != x.size()) {
    return InvalidArgument(
        fmt::format("input {} and weight {} do not fit", ShapeToString(x), ShapeToString(wshape)));
  }
  const int64_t group = c.node().IntAttr("group", 1);
  const int64_t batch = x[0];
  const int64_t channels = x[1];
  if (group < 1 || channels != wshape[0] || channels % group != 0) {
    return InvalidArgument(fmt::format("input channels {} do not match weight {} with group {}",
                                       channels, ShapeToString(wshape), group));
  }
  std::vector<int64_t> kernel = c.node().IntsAttr("kernel_shape");
  if (kernel.empty()) kernel.assign(wshape.begin() + 2, wshape.end());
  KF_ASSIGN_OR_RETURN(Window w, ReadWindow(c, x, c.OutShape(0), kernel, true));
  const int64_t cg = channels / group;
  const int64_t mg = wshape[1];
  const int64_t filters = mg * group;
  const int64_t rows = mg * w.kernel_size();
  const int64_t in_size = w.in_size();
  const int64_t out_size = w.out_size();
  KF_RETURN_IF_ERROR(CheckBlasDims({rows, in_size, cg}));
  const bool has_bias = c.HasInput(2);
  const int64_t pairs = batch * group;
  const bool per_image = pairs >= c.threads();
  const int64_t col_floats = rows * in_size;
  const int64_t col_buffers = per_image ? c.threads() : 1;
  Kernel run = [=](const OpArgs& args) {
    const float* in = args.inputs[0]->as<const float>();
    const float* weight = args.inputs[1]->as<const float>();
    float* out = args.outputs[0]->as<float>();
    auto* scratch_floats = reinterpret_cast<float*>(args.scratch);
    std::fill(out, out + batch * filters * out_size, 0.0f);
    // One (image, group): the product into columns, then scattered into the output.
    auto deconvolve = [&](int64_t pair, float* col, bool split) {
      const int64_t n = pair / group;
      const int64_t g = pair % group;
      if (in_size == 0 || rows == 0) return;
      if (cg == 0) {
        std::fill(col, col + rows * in_size, 0.0f);
      } else if (split) {
        ParallelSgemm(true, false, rows, in_size, cg, 1.0f, weight + g * cg * rows, rows,
                      in + (n * channels + g * cg) * in_size, in_size, 0.0f, col, in_size);
      } else {
        Sgemm(true, false, rows, in_size, cg, 1.0f, weight + g * cg * rows, rows,
              in + (n * channels + g * cg) * in_size, in_size, 0.0f, col, in_size);
      }
      Col2Im(col, mg, w, out + (n * filters + g * mg) * out_size);
    };
    if (per_image) {
#pragma omp parallel for schedule(dynamic, 1)
      for (int64_t pair = 0; pair < pairs; ++pair) {
        deconvolve(pair, scratch_floats + omp_get_thread_num() * col_floats, false);
      }
    } else {
      for (int64_t pair = 0; pair < pairs; ++pair) deconvolve(pair, scratch_floats, true);
    }
    if (has_bias) {
      const float* bias = args.inputs[2]->as<const float>();
      ParallelFor(batch * filters, 1, [&](int64_t begin, int64_t end) {
        for (int64_t p = begin; p < end; ++p) {
          const float b = bias[p % filters];
          float* plane = out + p * out_size;
          for (int64_t i = 0; i < out_size; ++i) plane[i] += b;
        }
      });
    }
    return Status::Ok();
  };
  return PreparedOp{std::move(run), static_cast<size_t>(col_floats * col_buffers) * sizeof(float),
                    false};
}

// ---- Pooling ----

// The taps of one window along one dim: [begin, end) are inside the input; `padded` counts the
// taps inside the input or its explicit padding (count_include_pad's divisor).
struct PoolSpan {
  int64_t begin = 0;
  int64_t end = 0;
  int64_t padded = 0;
};

std::vector<PoolSpan> PoolSpans(const Window& w, size_t d) {
  std::vector<PoolSpan> spans;
  for (int64_t o = 0; o < w.out[d]; ++o) {
    const int64_t start = o * w.stride[d] - w.pad_begin[d];
    PoolSpan span{w.kernel[d], 0, 0};
    for (int64_t k = 0; k < w.kernel[d]; ++k) {
      const int64_t i = start + k * w.dilation[d];
      if (i < w.in[d] + w.pad_end[d]) ++span.padded;
      if (i < 0 || i >= w.in[d]) continue;
      span.begin = std::min(span.begin, k);
      span.end = k + 1;
    }
    if (span.end == 0) span.begin = 0;
    spans.push_back(span);
  }
  return spans;
}

// 1-D and 2-D pooling as two separable passes per output row: the window's input rows are
// combined first (contiguous, vectorized), then each output takes its columns from that row.
// Windows are rectangles, so the valid-tap count is the product of the per-dim counts.
KF_SIMD_CLONES void PoolPlane(const float* x, float* y, float* row, const Window& w,
                              const std::vector<PoolSpan>& rows, const std::vector<PoolSpan>& cols,
                              bool is_max, bool count_pad) {
  const int64_t width = w.in[2];
  const float empty = is_max ? -std::numeric_limits<float>::infinity() : 0.0f;
  for (int64_t oh = 0; oh < w.out[1]; ++oh) {
    const PoolSpan& rs = rows[static_cast<size_t>(oh)];
    const int64_t ih0 = oh * w.stride[1] - w.pad_begin[1];
    std::fill(row, row + width, empty);
    for (int64_t kh = rs.begin; kh < rs.end; ++kh) {
      const float* src = x + (ih0 + kh * w.dilation[1]) * width;
      if (is_max) {
#pragma omp simd
        for (int64_t i = 0; i < width; ++i) row[i] = std::max(row[i], src[i]);
      } else {
#pragma omp simd
        for (int64_t i = 0; i < width; ++i) row[i] += src[i];
      }
    }
    float* out = y + oh * w.out[2];
    for (int64_t ow = 0; ow < w.out[2]; ++ow) {
      const PoolSpan& cs = cols[static_cast<size_t>(ow)];
      const float* taps = row + ow * w.stride[2] - w.pad_begin[2];
      float acc = empty;
      for (int64_t kw = cs.begin; kw < cs.end; ++kw) {
        const float v = taps[kw * w.dilation[2]];
        acc = is_max ? std::max(acc, v) : acc + v;
      }
      if (!is_max) {
        const int64_t divisor =
            count_pad ? rs.padded * cs.padded : (rs.end - rs.begin) * (cs.end - cs.begin);
        acc = divisor > 0 ? acc / static_cast<float>(divisor) : 0.0f;
      }
      out[ow] = acc;
    }
  }
}

Result<PreparedOp> PreparePool(const NodeContext& c) {
  KF_RETURN_IF_ERROR(c.RequireInputs(1));
  if (c.InStorage(0) != Storage::kFloat) return InvalidArgument("needs a floating input");
  const Shape& x = c.InShape(0);
  if (x.size() < 3) return InvalidArgument("needs input [N,C,spatial...]");
  const std::vector<int64_t> kernel = c.node().IntsAttr("kernel_shape");
  if (kernel.empty()) return InvalidArgument("has no kernel_shape");
  KF_ASSIGN_OR_RETURN(Window w, ReadWindow(c, x, c.OutShape(0), kernel, false));
  const bool is_max = c.node().op_type == "MaxPool";
  const bool count_pad = c.node().IntAttr("count_include_pad", 0) != 0;
  const bool column_major = c.node().IntAttr("storage_order", 0) != 0;
  const int64_t planes = x[0] * x[1];
  if (w.in[0] == 1 && w.out[0] == 1 && w.kernel[0] == 1 && !c.HasOutput(1)) {
    const std::vector<PoolSpan> rows = PoolSpans(w, 1);
    const std::vector<PoolSpan> cols = PoolSpans(w, 2);
    const int64_t row_floats = std::max<int64_t>(w.in[2], 1);
    Kernel run = [=](const OpArgs& args) {
      const float* in = args.inputs[0]->as<const float>();
      float* out = args.outputs[0]->as<float>();
      auto* rows_scratch = reinterpret_cast<float*>(args.scratch);
      ParallelFor(planes, 1, [&](int64_t begin, int64_t end) {
        float* row = rows_scratch + (omp_in_parallel() ? omp_get_thread_num() : 0) * row_floats;
        for (int64_t p = begin; p < end; ++p) {
          PoolPlane(in + p * w.in_size(), out + p * w.out_size(), row, w, rows, cols, is_max,
                    count_pad);
        }
      });
      return Status::Ok();
    };
    return PreparedOp{std::move(run), static_cast<size_t>(row_floats * c.threads()) * sizeof(float),
                      false};
  }
  Kernel run = [=](const OpArgs& args) {
    const float* in = args.inputs[0]->as<const float>();
    float* out = args.outputs[0]->as<float>();
    int64_t* indices = args.HasOutput(1) ? args.outputs[1]->as<int64_t>() : nullptr;
    const int64_t in_size = w.in_size();
    const int64_t out_size = w.out_size();
    ParallelFor(planes, 1, [&](int64_t begin, int64_t end) {
      for (int64_t p = begin; p < end; ++p) {
        const float* xp = in + p * in_size;
        float* yp = out + p * out_size;
        for (int64_t od = 0; od < w.out[0]; ++od) {
          for (int64_t oh = 0; oh < w.out[1]; ++oh) {
            for (int64_t ow = 0; ow < w.out[2]; ++ow) {
              const std::array<int64_t, 3> start = {od * w.stride[0] - w.pad_begin[0],
                                                    oh * w.stride[1] - w.pad_begin[1],
                                                    ow * w.stride[2] - w.pad_begin[2]};
              float acc = is_max ? -std::numeric_limits<float>::infinity() : 0.0f;
              int64_t best = -1;
              int64_t valid = 0;
              int64_t padded = 0;
              for (int64_t kd = 0; kd < w.kernel[0]; ++kd) {
                const int64_t id = start[0] + kd * w.dilation[0];
                for (int64_t kh = 0; kh < w.kernel[1]; ++kh) {
                  const int64_t ih = start[1] + kh * w.dilation[1];
                  for (int64_t kw = 0; kw < w.kernel[2]; ++kw) {
                    const int64_t iw = start[2] + kw * w.dilation[2];
                    // Taps in the explicit padding count for count_include_pad; taps that ceil
                    // mode pushed past it never do.
                    if (id < w.in[0] + w.pad_end[0] && ih < w.in[1] + w.pad_end[1] &&
                        iw < w.in[2] + w.pad_end[2]) {
                      ++padded;
                    }
                    if (id < 0 || id >= w.in[0] || ih < 0 || ih >= w.in[1] || iw < 0 ||
                        iw >= w.in[2]) {
                      continue;
                    }
                    const int64_t offset = (id * w.in[1] + ih) * w.in[2] + iw;
                    const float v = xp[offset];
                    ++valid;
                    if (!is_max) {
                      acc += v;
                    } else if (v > acc || best < 0) {
                      acc = v;
                      best = column_major ? (iw * w.in[1] + ih) * w.in[0] + id : offset;
                    }
                  }
                }
              }
              const int64_t o = (od * w.out[1] + oh) * w.out[2] + ow;
              if (is_max) {
                yp[o] = acc;
                if (indices != nullptr) indices[p * out_size + o] = p * in_size + best;
              } else {
                const int64_t divisor = count_pad ? padded : valid;
                yp[o] = divisor > 0 ? acc / static_cast<float>(divisor) : 0.0f;
              }
            }
          }
        }
      }
    });
    return Status::Ok();
  };
  return PreparedOp{std::move(run), 0, false};
}

Result<PreparedOp> PrepareGlobalAveragePool(const NodeContext& c) {
  KF_RETURN_IF_ERROR(c.RequireInputs(1));
  if (c.InStorage(0) != Storage::kFloat) return InvalidArgument("needs a floating input");
  const Shape& x = c.InShape(0);
  if (x.size() < 3) return InvalidArgument("needs input [N,C,spatial...]");
  const int64_t planes = x[0] * x[1];
  const int64_t spatial = NumElements(Shape(x.begin() + 2, x.end()));
  Kernel run = [=](const OpArgs& args) {
    const float* in = args.inputs[0]->as<const float>();
    float* out = args.outputs[0]->as<float>();
    ParallelFor(planes,
                std::max<int64_t>(1, kParallelGrainElements / std::max<int64_t>(spatial, 1)),
                [&](int64_t begin, int64_t end) {
                  for (int64_t p = begin; p < end; ++p) {
                    const float* xp = in + p * spatial;
                    float sum = 0;
#pragma omp simd reduction(+ : sum)
                    for (int64_t i = 0; i < spatial; ++i) sum += xp[i];
                    out[p] = sum / static_cast<float>(spatial);
                  }
                });
    return Status::Ok();
  };
  return PreparedOp{std::move(run), 0, false};
}

}  // namespace

bool IsLinearOp(std::string_view op) {
  static const std::set<std::string_view> kOps = {
      "MatMul", "Gemm", "Conv", "ConvTranspose", "MaxPool", "AveragePool", "GlobalAveragePool"};
  return kOps.count(op) != 0;
}

Result<PreparedOp> PrepareLinearOp(const NodeContext& c) {
  const std::string& op = c.node().op_type;
  if (op == "MatMul") return PrepareMatMul(c);
  if (op == "Gemm") return PrepareGemm(c);
  if (op == "Conv") return PrepareConv(c);
  if (op == "ConvTranspose") return PrepareConvTranspose(c);
  if (op == "MaxPool" || op == "AveragePool") return PreparePool(c);
  if (op == "GlobalAveragePool") return PrepareGlobalAveragePool(c);
  return InvalidArgument(fmt::format("no baseline kernel for {}", op));
}

}  // namespace kfleet::runtime::baseline

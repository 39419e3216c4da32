// "cuda_conv_dnn": the convolution through cuDNN (f32 accumulation; f32 data stays off TF32),
// the epilogue either inside cuDNN's fused convolution (bias, residual, ReLU) or in one generated
// f32 kernel right after it, over NCHW as the spec has it or over NHWC copies (tensor-core
// friendly for f16 / bf16) with the epilogue kernel transposing the result back.
#include <fmt/format.h>

#include <string>
#include <string_view>
#include <vector>

#include "agents/conv_analysis.h"
#include "agents/cuda_codegen.h"
#include "agents/cuda_templates.h"

namespace kfleet::agents {
namespace {

// cuDNN's workspace limit for every algorithm choice.
constexpr int kWorkspaceMiB = 256;

// The plan, when cuDNN can take every shape the spec's sizes may take: it pads both sides
// alike, so the pads must be symmetric whatever the input size.
Result<ConvPlan> Analyze(const SpecView& spec) {
  KF_ASSIGN_OR_RETURN(ConvPlan plan, AnalyzeConv(spec, {.half_types = true}));
  if (plan.auto_pad == "NOTSET" && (plan.pads[0] != plan.pads[2] || plan.pads[1] != plan.pads[3])) {
    return InvalidArgument(fmt::format(
        "{}: pads [{}] differ before and after, which cuDNN does not do (it pads both sides "
        "alike)",
        DescribeConv(plan), fmt::join(plan.pads, ",")));
  }
  if (plan.auto_pad == "SAME_UPPER" || plan.auto_pad == "SAME_LOWER") {
    for (int d = 0; d < 2; ++d) {
      // With stride 1 the total pad is the window's extent less one, even for an odd extent;
      // other strides make it depend on the input size.
      const int64_t extent = (plan.w_shape[2 + d] - 1) * plan.dilations[d] + 1;
      if (plan.strides[d] != 1 || extent % 2 == 0) {
        return InvalidArgument(fmt::format(
            "{}: {} with stride {} and a window of {} pads unevenly for some sizes, which cuDNN "
            "does not do",
            DescribeConv(plan), plan.auto_pad, plan.strides[d], extent));
      }
    }
  }
  return plan;
}

// The `path` values that make sense for the plan.
std::vector<std::string> Paths(const ConvPlan& plan) {
  std::vector<std::string> paths;
  // The fused call with the identity activation was seen applying ReLU all the same (cuDNN 9,
  // H200): it is used only where the epilogue ends in ReLU.
  if (plan.fused.has_value() && plan.fused->relu) paths.push_back("fused");
  // cuDNN's tensor-core kernels want NHWC: for f16 / bf16 the transposes usually pay.
  if (plan.dtype == planner::DType::kF32) {
    paths.insert(paths.end(), {"nchw", "nhwc"});
  } else {
    paths.insert(paths.end(), {"nhwc", "nchw"});
  }
  return paths;
}

// Includes, parameters, ConvArgs, the scratch pool, and the cuDNN handle and plan cache.
std::string RenderHeader(const ConvPlan& plan, const Params& params, const CudaElementType& type) {
  std::string s = R"(#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <cudnn.h>

#include <array>
#include <climits>
#include <cmath>
#include <cstdint>
#include <map>
#include <mutex>
#include <type_traits>
#include <vector>

#include "kfleet/kernel.h"
)";
  s += RenderCudaElementConversions(type);
  const std::string& path = params.at("path");
  s += fmt::format(
      R"(
static const cudnnDataType_t kDnnType = {};
static const bool kHalf = {};   // tensor-op math; f32 keeps to FMA (no TF32)
static const bool kFind = {};   // cuDNN measures the algorithms, else its heuristic ranks them
static const bool kGraph = {};  // each call replays a CUDA graph of its work
static const bool kNhwc = {};   // the convolution runs over NHWC copies
static const bool kRelu = {};   // the fused call's activation
static const uint64_t kMaxWorkspaceBytes = uint64_t{{{}}} << 20;
)",
      type.cudnn_type, plan.dtype == planner::DType::kF32 ? "false" : "true",
      params.at("algo") == "find" ? "true" : "false",
      params.at("launch") == "graph" ? "true" : "false", path == "nhwc" ? "true" : "false",
      path == "fused" && plan.fused->relu ? "true" : "false", kWorkspaceMiB);
  s += RenderConvArgs(plan, "Elem", type.kf_dtype);
  s += RenderCudaPoolAlloc();
  s += R"(
#define KF_CHECK_DNN(call) \
  do {                     \
    if ((call) != CUDNN_STATUS_SUCCESS) return KF_ERR_DEVICE; \
  } while (0)

// cuDNN declines the problem (an unsupported configuration or parameter combination), as
// opposed to failing at it. cuDNN 9 numbers its statuses by category.
static bool Declined(cudnnStatus_t status) {
#if CUDNN_MAJOR >= 9
  return status >= 2000 && status < 4000;
#else
  return status == CUDNN_STATUS_NOT_SUPPORTED || status == CUDNN_STATUS_BAD_PARAM;
#endif
}

static size_t RoundUp(size_t bytes) { return (bytes + 255) / 256 * 256; }

// One cuDNN handle per device for the process (creating one costs more than a small conv). The
// mutex covers every cache below and a handle's stream from lookup until the work is enqueued.
static std::mutex g_dnn_mutex;
static std::map<int, cudnnHandle_t> g_handles;

static cudnnHandle_t DnnHandle(int device) {
  auto it = g_handles.find(device);
  if (it != g_handles.end()) return it->second;
  cudnnHandle_t handle = nullptr;
  if (cudnnCreate(&handle) != CUDNN_STATUS_SUCCESS) return nullptr;
  g_handles.emplace(device, handle);
  return handle;
}

// The descriptors of one convolution and the algorithm chosen for them.
struct DnnPlan {
  cudnnTensorDescriptor_t x = nullptr;
  cudnnFilterDescriptor_t w = nullptr;
  cudnnConvolutionDescriptor_t conv = nullptr;
  cudnnTensorDescriptor_t y = nullptr;
  cudnnTensorDescriptor_t bias = nullptr;
  cudnnActivationDescriptor_t act = nullptr;
  cudnnConvolutionFwdAlgo_t algo = CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM;
  size_t workspace_bytes = 0;
  bool found = false;  // cuDNN takes the shape and offered an algorithm
  // The fused call: its algorithm (it supports fewer), whether it was tried and refused, and
  // the zero bias it adds when the Conv has none.
  cudnnConvolutionFwdAlgo_t fused_algo = CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM;
  size_t fused_workspace_bytes = 0;
  bool fused_checked = false;
  bool fused_refused = false;
  void* zeros = nullptr;
  bool graph_refused = false;  // capturing the work failed: calls launch it directly
};

// Device, n, c, h, w, m, kh, kw, oh, ow, pad_h, pad_w.
typedef std::array<int64_t, 12> DnnKey;
static std::map<DnnKey, DnnPlan> g_plans;  // kept for the process

static DnnKey PlanKey(int device, const ConvArgs& g) {
  return {device, g.n, g.m, g.c, g.h, g.w, g.kh, g.kw, g.oh, g.ow, g.pad_h, g.pad_w};
}

static bool FitsInt(const ConvArgs& g) {
  const int64_t sizes[] = {g.n, g.c, g.h, g.w, g.m, g.kh, g.kw, g.oh, g.ow, g.pad_h, g.pad_w};
  for (int64_t v : sizes) {
    if (v > INT_MAX) return false;
  }
  // cuDNN indexes a tensor with 32-bit offsets in many of its kernels.
  return g.n * g.c * g.h * g.w < INT_MAX && g.n * g.m * g.oh * g.ow < INT_MAX;
}

// f32 keeps to the algorithms that sum products as a GEMM does: FFT and Winograd round
// differently, by more than the f32 tolerance on some shapes.
static bool ExactEnough(cudnnConvolutionFwdAlgo_t algo) {
  return kHalf || algo == CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM ||
         algo == CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM ||
         algo == CUDNN_CONVOLUTION_FWD_ALGO_GEMM || algo == CUDNN_CONVOLUTION_FWD_ALGO_DIRECT;
}

// Picks the fastest measured (or the best ranked) algorithm that runs within the workspace.
static int ChooseAlgorithm(cudnnHandle_t handle, DnnPlan* p) {
  cudnnConvolutionFwdAlgoPerf_t perf[CUDNN_CONVOLUTION_FWD_ALGO_COUNT] = {};
  int returned = 0;
  const cudnnStatus_t ranked =
      kFind ? cudnnFindConvolutionForwardAlgorithm(handle, p->x, p->w, p->conv, p->y,
                                                   CUDNN_CONVOLUTION_FWD_ALGO_COUNT, &returned,
                                                   perf)
            : cudnnGetConvolutionForwardAlgorithm_v7(handle, p->x, p->w, p->conv, p->y,
                                                     CUDNN_CONVOLUTION_FWD_ALGO_COUNT, &returned,
                                                     perf);
  if (Declined(ranked)) return KF_OK;  // found stays false
  if (ranked != CUDNN_STATUS_SUCCESS) return KF_ERR_DEVICE;
  for (int i = 0; i < returned && i < CUDNN_CONVOLUTION_FWD_ALGO_COUNT; ++i) {
    if (perf[i].status != CUDNN_STATUS_SUCCESS || perf[i].memory > kMaxWorkspaceBytes ||
        !ExactEnough(perf[i].algo)) {
      continue;
    }
    if (!kHalf && perf[i].mathType != CUDNN_FMA_MATH && perf[i].mathType != CUDNN_DEFAULT_MATH) {
      continue;
    }
    if (kHalf) KF_CHECK_DNN(cudnnSetConvolutionMathType(p->conv, perf[i].mathType));
    size_t bytes = 0;
    if (cudnnGetConvolutionForwardWorkspaceSize(handle, p->x, p->w, p->conv, p->y, perf[i].algo,
                                                &bytes) != CUDNN_STATUS_SUCCESS ||
        bytes > kMaxWorkspaceBytes) {
      continue;
    }
    p->algo = perf[i].algo;
    p->workspace_bytes = bytes;
    p->found = true;
    return KF_OK;
  }
  return KF_OK;
}

static int BuildPlan(cudnnHandle_t handle, const ConvArgs& g, DnnPlan* p) {
  const cudnnTensorFormat_t format = kNhwc ? CUDNN_TENSOR_NHWC : CUDNN_TENSOR_NCHW;
  KF_CHECK_DNN(cudnnCreateTensorDescriptor(&p->x));
  KF_CHECK_DNN(cudnnCreateFilterDescriptor(&p->w));
  KF_CHECK_DNN(cudnnCreateConvolutionDescriptor(&p->conv));
  KF_CHECK_DNN(cudnnCreateTensorDescriptor(&p->y));
  KF_CHECK_DNN(cudnnCreateTensorDescriptor(&p->bias));
  KF_CHECK_DNN(cudnnCreateActivationDescriptor(&p->act));
  KF_CHECK_DNN(cudnnSetTensor4dDescriptor(p->x, format, kDnnType, static_cast<int>(g.n),
                                          static_cast<int>(g.c), static_cast<int>(g.h),
                                          static_cast<int>(g.w)));
  KF_CHECK_DNN(cudnnSetFilter4dDescriptor(p->w, kDnnType, format, static_cast<int>(g.m),
                                          static_cast<int>(g.cg), static_cast<int>(g.kh),
                                          static_cast<int>(g.kw)));
  KF_CHECK_DNN(cudnnSetConvolution2dDescriptor(
      p->conv, static_cast<int>(g.pad_h), static_cast<int>(g.pad_w), kStrideH, kStrideW,
      kDilationH, kDilationW, CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT));
  KF_CHECK_DNN(cudnnSetConvolutionGroupCount(p->conv, static_cast<int>(kGroups)));
  KF_CHECK_DNN(cudnnSetConvolutionMathType(p->conv, kHalf ? CUDNN_TENSOR_OP_MATH : CUDNN_FMA_MATH));
  int dims[4] = {0, 0, 0, 0};
  KF_CHECK_DNN(cudnnGetConvolution2dForwardOutputDim(p->conv, p->x, p->w, &dims[0], &dims[1],
                                                     &dims[2], &dims[3]));
  // cuDNN pads both sides by the leading pad: a different size means the pads are asymmetric
  // in a way that matters.
  if (dims[0] != g.n || dims[1] != g.m || dims[2] != g.oh || dims[3] != g.ow) return KF_OK;
  KF_CHECK_DNN(
      cudnnSetTensor4dDescriptor(p->y, format, kDnnType, dims[0], dims[1], dims[2], dims[3]));
  KF_CHECK_DNN(cudnnSetTensor4dDescriptor(p->bias, CUDNN_TENSOR_NCHW, kDnnType, 1, dims[1], 1, 1));
  KF_CHECK_DNN(cudnnSetActivationDescriptor(
      p->act, kRelu ? CUDNN_ACTIVATION_RELU : CUDNN_ACTIVATION_IDENTITY, CUDNN_NOT_PROPAGATE_NAN,
      0.0));
  return ChooseAlgorithm(handle, p);
}

static void DestroyPlan(DnnPlan& p) {
  if (p.act != nullptr) static_cast<void>(cudnnDestroyActivationDescriptor(p.act));
  if (p.bias != nullptr) static_cast<void>(cudnnDestroyTensorDescriptor(p.bias));
  if (p.y != nullptr) static_cast<void>(cudnnDestroyTensorDescriptor(p.y));
  if (p.conv != nullptr) static_cast<void>(cudnnDestroyConvolutionDescriptor(p.conv));
  if (p.w != nullptr) static_cast<void>(cudnnDestroyFilterDescriptor(p.w));
  if (p.x != nullptr) static_cast<void>(cudnnDestroyTensorDescriptor(p.x));
}

// The plan for `g` (built on first use) and the device's handle, set to `stream`.
// KF_ERR_UNSUPPORTED_SHAPE when cuDNN cannot take the shape.
static int Lookup(const ConvArgs& g, cudaStream_t stream, int* device, cudnnHandle_t* handle,
                  DnnPlan** plan) {
  if (!FitsInt(g)) return KF_ERR_UNSUPPORTED_SHAPE;
  KF_CHECK_CUDA(cudaGetDevice(device));
  *handle = DnnHandle(*device);
  if (*handle == nullptr) return KF_ERR_DEVICE;
  KF_CHECK_DNN(cudnnSetStream(*handle, stream));
  const DnnKey key = PlanKey(*device, g);
  auto it = g_plans.find(key);
  if (it == g_plans.end()) {
    DnnPlan built;
    const int status = BuildPlan(*handle, g, &built);
    if (status != KF_OK) {
      DestroyPlan(built);
      return status;
    }
    it = g_plans.emplace(key, built).first;
  }
  *plan = &it->second;
  return (*plan)->found ? KF_OK : KF_ERR_UNSUPPORTED_SHAPE;
}

// y = conv(x, w) by `plan` into `y` (of the plan's layout).
static int Convolve(cudnnHandle_t handle, const DnnPlan& plan, const void* x, const void* w,
                    void* y, void* workspace) {
  const float one = 1.0f;
  const float zero = 0.0f;
  return cudnnConvolutionForward(handle, &one, plan.x, x, plan.w, w, plan.conv, plan.algo,
                                 workspace, plan.workspace_bytes, &zero, plan.y,
                                 y) == CUDNN_STATUS_SUCCESS
             ? KF_OK
             : KF_ERR_DEVICE;
}
)";
  return s;
}

// The statements' per-row operand reads for output row `row` (image * m + channel): s<k>.
std::string RenderOperandScalars(const ConvPlan& plan) {
  std::string s;
  for (size_t k = 0; k < plan.operands.size(); ++k) {
    switch (plan.operands[k].broadcast) {
      case ConvBroadcast::kScalar:
        s += fmt::format("    const float s{0} = ToFloat(g.op[{0}][0]);\n", k);
        break;
      case ConvBroadcast::kChannel:
        s += fmt::format("    const float s{0} = ToFloat(g.op[{0}][row % g.m]);\n", k);
        break;
      case ConvBroadcast::kImageChannel:
        s += fmt::format("    const float s{0} = ToFloat(g.op[{0}][row]);\n", k);
        break;
      case ConvBroadcast::kFull:
        break;
    }
  }
  return s;
}

std::string RenderStatements(const ConvPlan& plan, std::string_view indent) {
  std::string s;
  for (const std::string& statement : plan.statements) {
    s += fmt::format("{}{}\n", indent, CudaStatement(statement));
  }
  return s;
}

// The epilogue in place over the NCHW result, V elements of one plane per thread and step.
std::string RenderPlaneEpilogue(const ConvPlan& plan) {
  std::string s = R"(
// V elements of one output plane per thread and step (V > 1 only when the plane is a multiple).
template <int V>
__global__ void __launch_bounds__(256) PlaneEpilogue(ConvArgs g, int64_t vectors) {
  const int64_t plane = g.oh * g.ow;
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t q = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; q < vectors;
       q += step) {
    const int64_t e = q * V;
    const int64_t row = e / plane;  // image * m + channel
    const int64_t j0 = e - row * plane;
    float accs[V];
    LoadVector<V>(g.y + e, accs);
)";
  s += RenderOperandScalars(plan);
  for (size_t k = 0; k < plan.operands.size(); ++k) {
    if (plan.operands[k].broadcast != ConvBroadcast::kFull) continue;
    s += fmt::format(
        "    float p{0}_v[V];\n    LoadVector<V>(g.op[{0}] + e, p{0}_v);\n"
        "    const Lanes<V> p{0} = {{p{0}_v, j0}};\n",
        k);
  }
  s += R"(    float ys[V];
#pragma unroll
    for (int t = 0; t < V; ++t) {
      const int64_t j = j0 + t;
      static_cast<void>(j);
      const float acc = accs[t];
)";
  s += RenderStatements(plan, "      ");
  s += fmt::format("      ys[t] = {};\n", plan.result);
  s += R"(    }
    StoreVector<V>(g.y + e, ys);
  }
}

static int LaunchPlaneEpilogue(const ConvArgs& g, cudaStream_t stream) {
  constexpr int kVector = 16 / sizeof(Elem);
  const int64_t total = g.n * g.m * g.oh * g.ow;
  const bool vector = (g.oh * g.ow) % kVector == 0 && Aligned16(g.y))";
  for (size_t k = 0; k < plan.operands.size(); ++k) {
    if (plan.operands[k].broadcast == ConvBroadcast::kFull) {
      s += fmt::format(" &&\n      Aligned16(g.op[{}])", k);
    }
  }
  s += RenderCudaEpilogueLaunchTail("PlaneEpilogue<kVector>", "PlaneEpilogue<1>", "g, vectors");
  return s;
}

// The NHWC path's transposes: X and W into NHWC scratch, and the result back to NCHW with the
// epilogue applied on the way.
std::string RenderNhwcKernels(const ConvPlan& plan) {
  std::string s = R"(
// Elements moved as bits by the transposes.
typedef std::conditional<sizeof(Elem) == 2, unsigned short, unsigned int>::type Word;

// out[b][c][r] = in[b][r][c] for `batches` matrices of rows x cols, through a 32x32 tile.
__global__ void __launch_bounds__(256) Transpose(const Word* in, Word* out, int64_t rows,
                                                 int64_t cols) {
  __shared__ Word tile[32][33];
  const int64_t base = static_cast<int64_t>(blockIdx.z) * rows * cols;
  const int64_t r0 = static_cast<int64_t>(blockIdx.y) * 32;
  const int64_t c0 = static_cast<int64_t>(blockIdx.x) * 32;
  for (int i = threadIdx.y; i < 32; i += 8) {
    const int64_t r = r0 + i;
    const int64_t c = c0 + threadIdx.x;
    if (r < rows && c < cols) tile[i][threadIdx.x] = in[base + r * cols + c];
  }
  __syncthreads();
  for (int i = threadIdx.y; i < 32; i += 8) {
    const int64_t c = c0 + i;
    const int64_t r = r0 + threadIdx.x;
    if (r < rows && c < cols) out[base + c * rows + r] = tile[threadIdx.x][i];
  }
}

static bool GridFits(int64_t batches, int64_t rows, int64_t cols) {
  return batches <= 65535 && (rows + 31) / 32 <= 65535 && (cols + 31) / 32 <= INT_MAX;
}

static int LaunchTranspose(const void* in, void* out, int64_t batches, int64_t rows,
                           int64_t cols, cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>((cols + 31) / 32), static_cast<unsigned>((rows + 31) / 32),
                  static_cast<unsigned>(batches));
  Transpose<<<grid, dim3(32, 8), 0, stream>>>(static_cast<const Word*>(in),
                                               static_cast<Word*>(out), rows, cols);
  return cudaGetLastError() == cudaSuccess ? KF_OK : KF_ERR_DEVICE;
}

// A per-element operand on one output plane, read by column.
struct PlaneOperand {
  const Elem* p;
  __device__ __forceinline__ float operator[](int64_t j) const { return ToFloat(p[j]); }
};

// g.y (NCHW) = epilogue(yt (NHWC)), one 32x32 tile of (positions, channels) of one image per
// block: read along the channels, written along the positions.
__global__ void __launch_bounds__(256) TransposeEpilogue(ConvArgs g, const Elem* yt) {
  __shared__ float tile[32][33];
  const int64_t plane = g.oh * g.ow;
  const int64_t image = blockIdx.z;
  const int64_t p0 = static_cast<int64_t>(blockIdx.x) * 32;
  const int64_t m0 = static_cast<int64_t>(blockIdx.y) * 32;
  for (int i = threadIdx.y; i < 32; i += 8) {
    const int64_t p = p0 + i;
    const int64_t m = m0 + threadIdx.x;
    if (p < plane && m < g.m) tile[i][threadIdx.x] = ToFloat(yt[(image * plane + p) * g.m + m]);
  }
  __syncthreads();
  for (int i = threadIdx.y; i < 32; i += 8) {
    const int64_t m = m0 + i;
    const int64_t j = p0 + threadIdx.x;
    if (j >= plane || m >= g.m) continue;
    const int64_t row = image * g.m + m;
    const float acc = tile[threadIdx.x][i];
)";
  s += RenderOperandScalars(plan);
  for (size_t k = 0; k < plan.operands.size(); ++k) {
    if (plan.operands[k].broadcast != ConvBroadcast::kFull) continue;
    s += fmt::format("    const PlaneOperand p{0} = {{g.op[{0}] + row * plane}};\n", k);
  }
  s += RenderStatements(plan, "    ");
  s += fmt::format("    g.y[row * plane + j] = FromFloat({});\n", plan.result);
  s += R"(  }
}

static bool ShapeFits(const ConvArgs& g) {
  return GridFits(g.n, g.c, g.h * g.w) && GridFits(g.m, g.cg, g.kh * g.kw) &&
         GridFits(g.n, g.m, g.oh * g.ow);
}

// Workspace, then X, W and the result in NHWC.
static size_t ScratchBytes(const ConvArgs& g, const DnnPlan& p) {
  return RoundUp(p.workspace_bytes) + RoundUp(g.n * g.c * g.h * g.w * sizeof(Elem)) +
         RoundUp(g.m * g.cg * g.kh * g.kw * sizeof(Elem)) + g.n * g.m * g.oh * g.ow * sizeof(Elem);
}

static int Enqueue(cudnnHandle_t handle, const DnnPlan& p, const ConvArgs& g, char* scratch,
                   cudaStream_t stream) {
  char* xt = scratch + RoundUp(p.workspace_bytes);
  char* wt = xt + RoundUp(g.n * g.c * g.h * g.w * sizeof(Elem));
  char* yt = wt + RoundUp(g.m * g.cg * g.kh * g.kw * sizeof(Elem));
  int status = LaunchTranspose(g.x, xt, g.n, g.c, g.h * g.w, stream);
  if (status == KF_OK) status = LaunchTranspose(g.wt, wt, g.m, g.cg, g.kh * g.kw, stream);
  if (status == KF_OK) status = Convolve(handle, p, xt, wt, yt, scratch);
  if (status != KF_OK) return status;
  const dim3 grid(static_cast<unsigned>((g.oh * g.ow + 31) / 32),
                  static_cast<unsigned>((g.m + 31) / 32), static_cast<unsigned>(g.n));
  TransposeEpilogue<<<grid, dim3(32, 8), 0, stream>>>(g, reinterpret_cast<const Elem*>(yt));
  return cudaGetLastError() == cudaSuccess ? KF_OK : KF_ERR_DEVICE;
}
)";
  return s;
}

// The NCHW path: cuDNN into the output, then the epilogue in place (none without one); with
// `fused`, cuDNN's fused call instead where it takes the shape.
std::string RenderNchw(const ConvPlan& plan, bool fused) {
  std::string s;
  if (plan.has_epilogue()) s += RenderPlaneEpilogue(plan);
  s += R"(
static bool ShapeFits(const ConvArgs&) { return true; }
)";
  if (!fused) {
    s += R"(
static size_t ScratchBytes(const ConvArgs&, const DnnPlan& p) { return p.workspace_bytes; }

static int Enqueue(cudnnHandle_t handle, const DnnPlan& p, const ConvArgs& g, char* scratch,
                   cudaStream_t stream) {
  const int status = Convolve(handle, p, g.x, g.wt, g.y, scratch);
  if (status != KF_OK) return status;
)";
    s += plan.has_epilogue() ? "  return LaunchPlaneEpilogue(g, stream);\n}\n"
                             : "  static_cast<void>(stream);\n  return KF_OK;\n}\n";
    return s;
  }
  const ConvFusedForm& form = *plan.fused;
  const std::string z = form.residual >= 0 ? fmt::format("g.op[{}]", form.residual) : "g.y";
  s += fmt::format(
      R"(
// The fused call: y = act(conv(x, w) + alpha2 z + bias).
static cudnnStatus_t FusedCall(cudnnHandle_t handle, const DnnPlan& p, const ConvArgs& g,
                               cudnnConvolutionFwdAlgo_t algo, void* workspace, size_t bytes) {{
  const float alpha1 = 1.0f;
  const float alpha2 = {};
  const void* bias = {};
  return cudnnConvolutionBiasActivationForward(handle, &alpha1, p.x, g.x, p.w, g.wt, p.conv, algo,
                                               workspace, bytes, &alpha2, p.y, {}, p.bias,
                                               bias != nullptr ? bias : p.zeros, p.act, p.y, g.y);
}}
)",
      form.residual >= 0 ? "1.0f" : "0.0f",
      form.bias >= 0 ? fmt::format("g.op[{}]", form.bias) : "nullptr", z);
  s += R"(
// Whether the fused call takes the plan's algorithm, else the one it supports for every
// activation, found by running it (the first call's result comes from here); the answer is kept
// with the plan. Runs outside any capture.
static int PrepareFused(cudnnHandle_t handle, const ConvArgs& g, DnnPlan* p,
                        cudaStream_t stream) {
  if (p->fused_checked) return KF_OK;
  if (p->zeros == nullptr) {
    // The fused call always adds a bias: zeros where the Conv has none.
    KF_CHECK_CUDA(cudaMalloc(&p->zeros, g.m * sizeof(Elem)));
    KF_CHECK_CUDA(cudaMemsetAsync(p->zeros, 0, g.m * sizeof(Elem), stream));
  }
  const cudnnConvolutionFwdAlgo_t algos[2] = {p->algo,
                                              CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM};
  for (cudnnConvolutionFwdAlgo_t algo : algos) {
    size_t bytes = 0;
    if (!ExactEnough(algo) ||
        cudnnGetConvolutionForwardWorkspaceSize(handle, p->x, p->w, p->conv, p->y, algo,
                                                &bytes) != CUDNN_STATUS_SUCCESS ||
        bytes > kMaxWorkspaceBytes) {
      continue;
    }
    void* workspace = nullptr;
    if (bytes > 0) {
      const int status = PoolAlloc(&workspace, bytes, stream);
      if (status != KF_OK) return status;
    }
    const cudnnStatus_t run = FusedCall(handle, *p, g, algo, workspace, bytes);
    if (workspace != nullptr) KF_CHECK_CUDA(cudaFreeAsync(workspace, stream));
    if (run == CUDNN_STATUS_SUCCESS) {
      p->fused_algo = algo;
      p->fused_workspace_bytes = bytes;
      p->fused_checked = true;
      return KF_OK;
    }
    if (!Declined(run)) return KF_ERR_DEVICE;
  }
  p->fused_checked = true;
  p->fused_refused = true;
  return KF_OK;
}

static size_t ScratchBytes(const ConvArgs&, const DnnPlan& p) {
  return p.fused_refused ? p.workspace_bytes : p.fused_workspace_bytes;
}

static int Enqueue(cudnnHandle_t handle, const DnnPlan& p, const ConvArgs& g, char* scratch,
                   cudaStream_t stream) {
  if (!p.fused_refused) {
    return FusedCall(handle, p, g, p.fused_algo, scratch, p.fused_workspace_bytes) ==
                   CUDNN_STATUS_SUCCESS
               ? KF_OK
               : KF_ERR_DEVICE;
  }
  // Where cuDNN does not fuse the shape: the convolution, then the epilogue kernel.
  const int status = Convolve(handle, p, g.x, g.wt, g.y, scratch);
  if (status != KF_OK) return status;
  return LaunchPlaneEpilogue(g, stream);
}
)";
  return s;
}

// kf_kernel_run: the plan, then the work replayed from a CUDA graph per set of tensor addresses
// (captured on first use with scratch of its own), or enqueued directly with pooled scratch.
constexpr std::string_view kRun = R"(
// A captured call: the graph and the scratch its work uses.
struct GraphEntry {
  cudaGraphExec_t exec = nullptr;
  void* scratch = nullptr;
};
static const size_t kMaxGraphs = 32;
static std::map<std::vector<int64_t>, GraphEntry> g_graphs;  // plan key + addresses -> graph
static std::map<int, cudaStream_t> g_capture_streams;        // device -> stream to capture on

static void DropGraphs() {
  for (auto& [key, entry] : g_graphs) {
    static_cast<void>(cudaGraphExecDestroy(entry.exec));
    if (entry.scratch != nullptr) static_cast<void>(cudaFree(entry.scratch));
  }
  g_graphs.clear();
}

// Captures the call's work into a graph with scratch of its own; false (and nothing kept) when
// the work cannot be captured.
static bool Capture(cudnnHandle_t handle, int device, const DnnPlan& p, const ConvArgs& g,
                    GraphEntry* entry) {
  auto it = g_capture_streams.find(device);
  if (it == g_capture_streams.end()) {
    cudaStream_t created = nullptr;
    if (cudaStreamCreateWithFlags(&created, cudaStreamNonBlocking) != cudaSuccess) return false;
    it = g_capture_streams.emplace(device, created).first;
  }
  const cudaStream_t capture = it->second;
  const size_t bytes = ScratchBytes(g, p);
  if (bytes > 0 && cudaMalloc(&entry->scratch, bytes) != cudaSuccess) return false;
  bool captured = cudnnSetStream(handle, capture) == CUDNN_STATUS_SUCCESS &&
                  cudaStreamBeginCapture(capture, cudaStreamCaptureModeThreadLocal) == cudaSuccess;
  if (captured) {
    const int status = Enqueue(handle, p, g, static_cast<char*>(entry->scratch), capture);
    cudaGraph_t graph = nullptr;
    const cudaError_t ended = cudaStreamEndCapture(capture, &graph);
    captured = status == KF_OK && ended == cudaSuccess && graph != nullptr &&
               cudaGraphInstantiate(&entry->exec, graph, 0) == cudaSuccess;
    if (graph != nullptr) static_cast<void>(cudaGraphDestroy(graph));
  }
  if (!captured) {
    static_cast<void>(cudaGetLastError());  // the failed capture's error is not the caller's
    if (entry->scratch != nullptr) static_cast<void>(cudaFree(entry->scratch));
    *entry = GraphEntry();
  }
  return captured;
}

extern "C" int kf_kernel_run(const kf_tensor* in, int32_t n_in, kf_tensor* out, int32_t n_out,
                             void* stream_ptr) {
  ConvArgs g;
  int status = ReadConvArgs(in, n_in, out, n_out, &g);
  if (status != KF_OK) return status;
  const cudaStream_t stream = static_cast<cudaStream_t>(stream_ptr);
  if (g.n * g.m * g.oh * g.ow == 0) return KF_OK;
  if (!ShapeFits(g)) return KF_ERR_UNSUPPORTED_SHAPE;
  std::lock_guard<std::mutex> lock(g_dnn_mutex);
  int device = 0;
  cudnnHandle_t handle = nullptr;
  DnnPlan* plan = nullptr;
  status = Lookup(g, stream, &device, &handle, &plan);
  if (status != KF_OK) return status;
$PREPARE_FUSED  if (kGraph && !plan->graph_refused) {
    const DnnKey plan_key = PlanKey(device, g);
    std::vector<int64_t> key(plan_key.begin(), plan_key.end());
    key.push_back(reinterpret_cast<int64_t>(g.x));
    key.push_back(reinterpret_cast<int64_t>(g.wt));
    key.push_back(reinterpret_cast<int64_t>(g.y));
$OPERAND_KEYS    auto it = g_graphs.find(key);
    if (it == g_graphs.end()) {
      if (g_graphs.size() >= kMaxGraphs) DropGraphs();
      GraphEntry entry;
      if (Capture(handle, device, *plan, g, &entry)) {
        it = g_graphs.emplace(key, entry).first;
      } else {
        plan->graph_refused = true;
      }
      KF_CHECK_DNN(cudnnSetStream(handle, stream));
    }
    if (it != g_graphs.end()) {
      return cudaGraphLaunch(it->second.exec, stream) == cudaSuccess ? KF_OK : KF_ERR_DEVICE;
    }
  }
  void* scratch = nullptr;
  const size_t bytes = ScratchBytes(g, *plan);
  if (bytes > 0) {
    status = PoolAlloc(&scratch, bytes, stream);
    if (status != KF_OK) return status;
  }
  status = Enqueue(handle, *plan, g, static_cast<char*>(scratch), stream);
  if (scratch != nullptr && cudaFreeAsync(scratch, stream) != cudaSuccess && status == KF_OK) {
    status = KF_ERR_DEVICE;
  }
  return status;
}
)";

std::string RenderSource(const ConvPlan& plan, const Params& params) {
  const CudaElementType type = CudaElementTypeOf(plan.dtype);
  const std::string& path = params.at("path");
  std::string s = RenderHeader(plan, params, type);
  if (plan.has_epilogue()) s += RenderCudaEpilogueHelpers();
  s += path == "nhwc" ? RenderNhwcKernels(plan) : RenderNchw(plan, path == "fused");
  std::string operand_keys;
  for (size_t k = 0; k < plan.operands.size(); ++k) {
    operand_keys += fmt::format("    key.push_back(reinterpret_cast<int64_t>(g.op[{}]));\n", k);
  }
  const std::string prepare_fused = path != "fused" ? "" : R"(  if (!plan->fused_checked) {
    // The check runs the fused call: this call's result, if cuDNN takes it.
    status = PrepareFused(handle, g, plan, stream);
    if (status != KF_OK || !plan->fused_refused) return status;
  }
)";
  std::string run(kRun);
  run.replace(run.find("$OPERAND_KEYS"), std::string_view("$OPERAND_KEYS").size(), operand_keys);
  run.replace(run.find("$PREPARE_FUSED"), std::string_view("$PREPARE_FUSED").size(), prepare_fused);
  return s + run;
}

std::string DescribePath(const ConvPlan& plan, const std::string& path) {
  if (path == "fused") {
    const ConvFusedForm& form = *plan.fused;
    std::vector<std::string> parts;
    if (form.bias >= 0) parts.push_back("bias");
    if (form.residual >= 0) parts.push_back("residual");
    if (form.relu) parts.push_back("ReLU");
    return fmt::format("cuDNN's fused convolution ({}) over NCHW", fmt::join(parts, ", "));
  }
  const std::string epilogue =
      plan.has_epilogue() ? ", the epilogue in one f32 kernel after it" : "";
  if (path == "nhwc") {
    return "over NHWC copies of X and W, the result transposed back to NCHW" +
           (plan.has_epilogue() ? " with the epilogue applied" : std::string());
  }
  return "over NCHW in place" + epilogue;
}

class CudaConvDnnTemplate final : public TemplateFamily {
 public:
  std::string_view name() const override { return "cuda_conv_dnn"; }

  Status Supports(const SpecView& spec) const override { return Analyze(spec).status(); }

  std::vector<ParamSpace> Space(const SpecView& spec) const override {
    Result<ConvPlan> plan = Analyze(spec);
    return {{"path", plan.ok() ? Paths(*plan) : std::vector<std::string>{"nchw", "nhwc"}},
            {"algo", {"find", "heuristic"}},
            // A graph per set of tensor addresses takes cuDNN's host-side cost out of every
            // call after the first.
            {"launch", {"graph", "direct"}}};
  }

  Result<RenderedKernel> Render(const SpecView& spec, const Params& params) const override {
    KF_RETURN_IF_ERROR(CheckParams(Space(spec), params));
    KF_ASSIGN_OR_RETURN(ConvPlan plan, Analyze(spec));
    RenderedKernel kernel;
    kernel.source = RenderSource(plan, params);
    kernel.explanation = fmt::format(
        "{}: {} cuDNN convolution with f32 accumulation{}, {} algorithm within {} MiB of "
        "workspace, {}, {}.",
        DescribeConv(plan), planner::DTypeName(plan.dtype),
        plan.dtype == planner::DType::kF32 ? " (no TF32)" : " on tensor cores",
        params.at("algo") == "find" ? "the fastest measured" : "the heuristic's first",
        kWorkspaceMiB, DescribePath(plan, params.at("path")),
        params.at("launch") == "graph" ? "replayed from a CUDA graph per set of tensor addresses"
                                       : "launched directly");
    return kernel;
  }
};

}  // namespace

std::unique_ptr<TemplateFamily> MakeCudaConvDnnTemplate() {
  return std::make_unique<CudaConvDnnTemplate>();
}

}  // namespace kfleet::agents

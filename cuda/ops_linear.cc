// MatMul and Gemm through cuBLASLt, Conv and pooling through cuDNN's legacy API, called the way
// PyTorch eager calls them, and the library handles and workspace they share (Libraries).
//
// Descriptors are built when a node is prepared. What needs a library handle (cuBLASLt's
// heuristic, cuDNN's algorithm and workspace size) runs on the node's first run, when the
// executor's Libraries are at hand, and is cached in the closure.
#include <cublasLt.h>
#include <cuda_runtime.h>
#include <cudnn.h>
#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <climits>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "cuda/baseline.h"
#include "cuda/device.h"
#include "cuda/kernels_linear.h"
#include "cuda/ops.h"

namespace kfleet::cuda::ops {
namespace {

using planner::DTypeName;
using planner::NumElements;
using planner::ShapeToString;
using runtime::baseline::BroadcastPlan;
using runtime::baseline::Odometer;

// The cuBLASLt workspace PyTorch offers on Hopper; the heuristic picks among algorithms that need
// at most this much.
constexpr uint64_t kMatmulWorkspaceBytes = uint64_t{32} << 20;
constexpr size_t kWorkspaceGrainBytes = size_t{1} << 20;
constexpr size_t kWorkspaceAlignBytes = 256;

// "cublasLtMatmul(handle, ...)" -> "cublasLtMatmul".
std::string_view CallName(std::string_view call) { return call.substr(0, call.find('(')); }

Status CublasStatus(cublasStatus_t status, std::string_view call) {
  if (status == CUBLAS_STATUS_SUCCESS) return Status::Ok();
  return Internal(fmt::format("{}: {}: {}", CallName(call), cublasLtGetStatusName(status),
                              cublasLtGetStatusString(status)));
}

Status CudnnStatus(cudnnStatus_t status, std::string_view call) {
  if (status == CUDNN_STATUS_SUCCESS) return Status::Ok();
  std::array<char, 512> message{};
  cudnnGetLastErrorString(message.data(), message.size());
  return Internal(fmt::format("{}: {}{}{}", CallName(call), cudnnGetErrorString(status),
                              message[0] != '\0' ? ": " : "", message.data()));
}

// Each names the library call that failed.
#define KF_CUBLAS_RETURN(call) KF_RETURN_IF_ERROR(CublasStatus((call), #call))
#define KF_CUDNN_RETURN(call) KF_RETURN_IF_ERROR(CudnnStatus((call), #call))

// How one floating storage dtype is spelled to each library.
struct FloatFormat {
  cudaDataType_t blas = CUDA_R_32F;
  cudnnDataType_t dnn = CUDNN_DATA_FLOAT;
  detail::FloatType kernel = detail::FloatType::kF32;
  int64_t bytes = 4;
};

Result<FloatFormat> FloatFormatOf(DType storage, std::string_view op) {
  switch (storage) {
    case DType::kF32:
      return FloatFormat{CUDA_R_32F, CUDNN_DATA_FLOAT, detail::FloatType::kF32, 4};
    case DType::kF16:
      return FloatFormat{CUDA_R_16F, CUDNN_DATA_HALF, detail::FloatType::kF16, 2};
    case DType::kBF16:
      return FloatFormat{CUDA_R_16BF, CUDNN_DATA_BFLOAT16, detail::FloatType::kBF16, 2};
    default:
      return InvalidArgument(
          fmt::format("{} of {} has no CUDA baseline kernel", op, DTypeName(storage)));
  }
}

// Every input and output holds the storage dtype of input 0.
Result<DType> CommonStorage(const NodeContext& c, std::string_view op) {
  const DType type = StorageDtype(c.Input(0).dtype);
  for (size_t i = 1; i < c.node().inputs.size(); ++i) {
    if (c.HasInput(i) && StorageDtype(c.Input(i).dtype) != type) {
      return InvalidArgument(fmt::format("{} of {} by {} is not supported", op,
                                         DTypeName(c.Input(0).dtype), DTypeName(c.Input(i).dtype)));
    }
  }
  if (StorageDtype(c.Output(0).dtype) != type) {
    return InvalidArgument(fmt::format("{} from {} to {} is not supported", op,
                                       DTypeName(c.Input(0).dtype), DTypeName(c.Output(0).dtype)));
  }
  return type;
}

Result<int> ToInt(int64_t value, std::string_view what) {
  if (value < 0 || value > INT_MAX) {
    return InvalidArgument(fmt::format("{} of {} is outside what cuDNN indexes", what, value));
  }
  return static_cast<int>(value);
}

Result<std::vector<int>> ToInts(const std::vector<int64_t>& values, std::string_view what) {
  std::vector<int> out;
  for (int64_t v : values) {
    KF_ASSIGN_OR_RETURN(int i, ToInt(v, what));
    out.push_back(i);
  }
  return out;
}

const std::byte* Bytes(const View* view) { return static_cast<const std::byte*>(view->data); }
std::byte* Bytes(View* view) { return static_cast<std::byte*>(view->data); }

Kernel NoWork() {
  return [](const OpArgs&) { return Status::Ok(); };
}

// Zeroes output 0 (a product over an empty K).
Kernel ZeroOutput(size_t bytes) {
  return [bytes](const OpArgs& args) {
    return CudaStatus(static_cast<int>(cudaMemsetAsync(args.outputs[0]->data, 0, bytes, nullptr)),
                      "cudaMemsetAsync of an empty product");
  };
}

Result<cublasLtHandle_t> LtHandle(const OpArgs& args) {
  if (args.libraries == nullptr) return Internal("the executor passed no Libraries");
  KF_ASSIGN_OR_RETURN(void* handle, args.libraries->CublasLt());
  return static_cast<cublasLtHandle_t>(handle);
}

Result<cudnnHandle_t> DnnHandle(const OpArgs& args) {
  if (args.libraries == nullptr) return Internal("the executor passed no Libraries");
  KF_ASSIGN_OR_RETURN(void* handle, args.libraries->Cudnn());
  return static_cast<cudnnHandle_t>(handle);
}

// ---- MatMul / Gemm (cuBLASLt) ----

// The largest power of two up to 256 dividing `p`: what the cuBLASLt heuristic may assume.
uint32_t AlignmentOf(const void* p) {
  const auto address = reinterpret_cast<uintptr_t>(p);
  uint32_t alignment = 256;
  while (alignment > 1 && address % alignment != 0) alignment /= 2;
  return alignment;
}

// Y[M, N] = alpha * op(A)[M, K] op(B)[K, N] + beta * C, row-major as the graph stores them, over
// `batch` products whose matrices lie `stride_*` elements apart.
struct RowMajorProduct {
  DType dtype = DType::kF32;
  cudaDataType_t type = CUDA_R_32F;
  bool trans_a = false;  // A is stored [K, M]
  bool trans_b = false;  // B is stored [N, K]
  int64_t m = 0;
  int64_t n = 0;
  int64_t k = 0;
  int64_t batch = 1;
  int64_t stride_a = 0;  // 0 reuses one matrix for every product
  int64_t stride_b = 0;
  bool bias_epilogue = false;  // adds a vector of N to every row (CUBLASLT_EPILOGUE_BIAS)
};

// Pointer alignments (bytes) an algorithm was chosen for.
struct Alignments {
  uint32_t a = 256;
  uint32_t b = 256;
  uint32_t c = 256;
  uint32_t y = 256;
  uint32_t bias = 256;
  bool operator==(const Alignments&) const = default;
};

// One cuBLASLt product. cuBLASLt is column-major, so row-major Y = A B runs as Y^T = B^T A^T: the
// graph's B is cuBLASLt's A and the graph's A its B, each read in place as its transpose.
class LtMatmul {
 public:
  static Result<std::shared_ptr<LtMatmul>> Create(const RowMajorProduct& p);
  ~LtMatmul();
  LtMatmul(const LtMatmul&) = delete;
  LtMatmul& operator=(const LtMatmul&) = delete;

  bool bias_epilogue() const { return bias_epilogue_; }
  size_t workspace_bytes() const { return workspace_bytes_; }
  // Points the bias epilogue at `bias` and picks the algorithm, unless one was picked for these
  // alignments already. An error when the heuristic offers none.
  Status Select(cublasLtHandle_t handle, const Alignments& alignments, const void* bias);
  // Turns the bias epilogue off (the caller adds the bias itself): some shapes have no epilogue
  // algorithm.
  Status DropBiasEpilogue();
  Status Launch(cublasLtHandle_t handle, void* workspace, float alpha, const void* a, const void* b,
                float beta, const void* c, void* y) const;

 private:
  LtMatmul() = default;

  std::string what_;  // "[4,768]x[768,3072] f32" for errors
  cublasLtMatmulDesc_t desc_ = nullptr;
  cublasLtMatrixLayout_t a_layout_ = nullptr;  // the graph's A: cuBLASLt's B
  cublasLtMatrixLayout_t b_layout_ = nullptr;  // the graph's B: cuBLASLt's A
  cublasLtMatrixLayout_t y_layout_ = nullptr;  // Y, and C (same shape)
  bool bias_epilogue_ = false;
  bool selected_ = false;
  Alignments selected_for_;
  cublasLtMatmulAlgo_t algo_{};
  size_t workspace_bytes_ = 0;
};

Status SetBatch(cublasLtMatrixLayout_t layout, int32_t batch, int64_t stride) {
  KF_CUBLAS_RETURN(cublasLtMatrixLayoutSetAttribute(layout, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT,
                                                    &batch, sizeof(batch)));
  KF_CUBLAS_RETURN(cublasLtMatrixLayoutSetAttribute(
      layout, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &stride, sizeof(stride)));
  return Status::Ok();
}

Result<std::shared_ptr<LtMatmul>> LtMatmul::Create(const RowMajorProduct& p) {
  for (int64_t d : {p.m, p.n, p.k, p.batch}) {
    if (d <= 0 || d > INT32_MAX) {
      return InvalidArgument(fmt::format("a matrix dim of {} is outside what cuBLASLt takes", d));
    }
  }
  std::shared_ptr<LtMatmul> lt(new LtMatmul());
  lt->what_ = fmt::format("{}[{},{}]x[{},{}] {}", p.batch > 1 ? fmt::format("{} x ", p.batch) : "",
                          p.m, p.k, p.k, p.n, DTypeName(p.dtype));
  // PyTorch's defaults: f32 accumulates in f32 without TF32; f16 / bf16 accumulate in f32.
  KF_CUBLAS_RETURN(cublasLtMatmulDescCreate(&lt->desc_, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  const int32_t op_a = p.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;  // cuBLASLt's A is the graph's B
  const int32_t op_b = p.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
  KF_CUBLAS_RETURN(
      cublasLtMatmulDescSetAttribute(lt->desc_, CUBLASLT_MATMUL_DESC_TRANSA, &op_a, sizeof(op_a)));
  KF_CUBLAS_RETURN(
      cublasLtMatmulDescSetAttribute(lt->desc_, CUBLASLT_MATMUL_DESC_TRANSB, &op_b, sizeof(op_b)));
  // A row-major [R, C] matrix is a column-major [C, R] one with leading dimension C.
  const uint64_t m = static_cast<uint64_t>(p.m);
  const uint64_t n = static_cast<uint64_t>(p.n);
  const uint64_t k = static_cast<uint64_t>(p.k);
  KF_CUBLAS_RETURN(cublasLtMatrixLayoutCreate(&lt->b_layout_, p.type, p.trans_b ? k : n,
                                              p.trans_b ? n : k, p.trans_b ? p.k : p.n));
  KF_CUBLAS_RETURN(cublasLtMatrixLayoutCreate(&lt->a_layout_, p.type, p.trans_a ? m : k,
                                              p.trans_a ? k : m, p.trans_a ? p.m : p.k));
  KF_CUBLAS_RETURN(cublasLtMatrixLayoutCreate(&lt->y_layout_, p.type, n, m, p.n));
  if (p.batch > 1) {
    const auto batch = static_cast<int32_t>(p.batch);
    KF_RETURN_IF_ERROR(SetBatch(lt->a_layout_, batch, p.stride_a));
    KF_RETURN_IF_ERROR(SetBatch(lt->b_layout_, batch, p.stride_b));
    KF_RETURN_IF_ERROR(SetBatch(lt->y_layout_, batch, p.m * p.n));
  }
  if (p.bias_epilogue) {
    // The bias is in Y's dtype, cuBLASLt's default for it.
    const uint32_t epilogue = CUBLASLT_EPILOGUE_BIAS;
    KF_CUBLAS_RETURN(cublasLtMatmulDescSetAttribute(lt->desc_, CUBLASLT_MATMUL_DESC_EPILOGUE,
                                                    &epilogue, sizeof(epilogue)));
    lt->bias_epilogue_ = true;
  }
  return lt;
}

LtMatmul::~LtMatmul() {
  if (y_layout_ != nullptr) static_cast<void>(cublasLtMatrixLayoutDestroy(y_layout_));
  if (a_layout_ != nullptr) static_cast<void>(cublasLtMatrixLayoutDestroy(a_layout_));
  if (b_layout_ != nullptr) static_cast<void>(cublasLtMatrixLayoutDestroy(b_layout_));
  if (desc_ != nullptr) static_cast<void>(cublasLtMatmulDescDestroy(desc_));
}

struct PreferenceDeleter {
  void operator()(cublasLtMatmulPreferenceOpaque_t* p) const {
    static_cast<void>(cublasLtMatmulPreferenceDestroy(p));
  }
};

Status LtMatmul::Select(cublasLtHandle_t handle, const Alignments& alignments, const void* bias) {
  if (bias_epilogue_) {
    // The heuristic reads the bias pointer's alignment from here too.
    KF_CUBLAS_RETURN(cublasLtMatmulDescSetAttribute(desc_, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias,
                                                    sizeof(bias)));
  }
  if (selected_ && selected_for_ == alignments) return Status::Ok();
  cublasLtMatmulPreference_t raw = nullptr;
  KF_CUBLAS_RETURN(cublasLtMatmulPreferenceCreate(&raw));
  const std::unique_ptr<cublasLtMatmulPreferenceOpaque_t, PreferenceDeleter> preference(raw);
  const uint64_t max_workspace = kMatmulWorkspaceBytes;
  KF_CUBLAS_RETURN(cublasLtMatmulPreferenceSetAttribute(
      raw, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &max_workspace, sizeof(max_workspace)));
  // cuBLASLt's A and B are the graph's B and A.
  const std::array<std::pair<cublasLtMatmulPreferenceAttributes_t, uint32_t>, 4> minimums = {{
      {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, alignments.b},
      {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, alignments.a},
      {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, alignments.c},
      {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, alignments.y},
  }};
  for (const auto& [attribute, bytes] : minimums) {
    KF_CUBLAS_RETURN(cublasLtMatmulPreferenceSetAttribute(raw, attribute, &bytes, sizeof(bytes)));
  }
  cublasLtMatmulHeuristicResult_t result{};
  int found = 0;
  KF_CUBLAS_RETURN(cublasLtMatmulAlgoGetHeuristic(handle, desc_, b_layout_, a_layout_, y_layout_,
                                                  y_layout_, raw, 1, &result, &found));
  if (found < 1 || result.state != CUBLAS_STATUS_SUCCESS) {
    return Internal(fmt::format("cublasLtMatmulAlgoGetHeuristic found no algorithm for {}{}", what_,
                                bias_epilogue_ ? " with a bias epilogue" : ""));
  }
  algo_ = result.algo;
  workspace_bytes_ = result.workspaceSize;
  selected_ = true;
  selected_for_ = alignments;
  return Status::Ok();
}

Status LtMatmul::DropBiasEpilogue() {
  const uint32_t epilogue = CUBLASLT_EPILOGUE_DEFAULT;
  KF_CUBLAS_RETURN(cublasLtMatmulDescSetAttribute(desc_, CUBLASLT_MATMUL_DESC_EPILOGUE, &epilogue,
                                                  sizeof(epilogue)));
  bias_epilogue_ = false;
  selected_ = false;
  return Status::Ok();
}

Status LtMatmul::Launch(cublasLtHandle_t handle, void* workspace, float alpha, const void* a,
                        const void* b, float beta, const void* c, void* y) const {
  KF_CUBLAS_RETURN(cublasLtMatmul(handle, desc_, &alpha, b, b_layout_, a, a_layout_, &beta, c,
                                  y_layout_, y, y_layout_, &algo_, workspace, workspace_bytes_,
                                  nullptr));
  return Status::Ok();
}

// Element offsets of one call's operands.
struct ProductCall {
  int64_t a = 0;
  int64_t b = 0;
  int64_t y = 0;
};

Result<PreparedOp> PrepareMatMul(const NodeContext& c) {
  KF_RETURN_IF_ERROR(c.RequireInputs(2));
  Shape a = c.InShape(0);
  Shape b = c.InShape(1);
  if (a.empty() || b.empty()) return InvalidArgument("MatMul needs inputs of rank >= 1");
  KF_ASSIGN_OR_RETURN(const DType type, CommonStorage(c, "MatMul"));
  if (type == DType::kBool) return InvalidArgument("MatMul of bool is not supported");
  if (a.size() == 1) a.insert(a.begin(), 1);
  if (b.size() == 1) b.push_back(1);
  const int64_t m = a[a.size() - 2];
  const int64_t k = a.back();
  const int64_t n = b.back();
  if (b[b.size() - 2] != k) {
    return InvalidArgument(fmt::format("MatMul of {} by {}: inner dims differ",
                                       ShapeToString(c.InShape(0)), ShapeToString(c.InShape(1))));
  }
  const Shape batch_a(a.begin(), a.end() - 2);
  const Shape batch_b(b.begin(), b.end() - 2);
  Shape batch_out = batch_a.size() >= batch_b.size() ? batch_a : batch_b;
  for (size_t i = 0; i < batch_out.size(); ++i) {
    const int64_t da = i < batch_a.size() ? batch_a[batch_a.size() - 1 - i] : 1;
    const int64_t db = i < batch_b.size() ? batch_b[batch_b.size() - 1 - i] : 1;
    if (da != db && da != 1 && db != 1) {
      return InvalidArgument(fmt::format("MatMul batch dims of {} and {} do not broadcast",
                                         ShapeToString(c.InShape(0)), ShapeToString(c.InShape(1))));
    }
    batch_out[batch_out.size() - 1 - i] = std::max(da, db);
  }
  const int64_t batches = NumElements(batch_out);
  if (NumElements(c.OutShape(0)) != batches * m * n) {
    return InvalidArgument(
        fmt::format("MatMul output {} does not hold the product", ShapeToString(c.OutShape(0))));
  }
  const int64_t elem = planner::DTypeBytes(type);
  if (batches == 0 || m == 0 || n == 0) return PreparedOp{NoWork(), 0, false};
  if (k == 0) return PreparedOp{ZeroOutput(static_cast<size_t>(batches * m * n * elem)), 0, false};

  const auto plan = BroadcastPlan<2>::Make(batch_out, {batch_a, batch_b});
  if (type == DType::kI64) {
    // No library multiplies integers; exporters emit these only for small index arithmetic.
    std::vector<ProductCall> calls;
    Odometer<2> it{&plan.dims, {&plan.strides[0], &plan.strides[1]}, {}, {}};
    it.Seek(0);
    for (int64_t batch = 0; batch < batches; ++batch) {
      calls.push_back({it.offset[0] * m * k, it.offset[1] * k * n, batch * m * n});
      it.Next();
    }
    Kernel run = [calls, m, n, k](const OpArgs& args) {
      const auto* pa = args.inputs[0]->as<const int64_t>();
      const auto* pb = args.inputs[1]->as<const int64_t>();
      auto* py = args.outputs[0]->as<int64_t>();
      for (const ProductCall& call : calls) {
        KF_RETURN_IF_ERROR(
            CudaStatus(detail::LaunchIntMatMul(pa + call.a, pb + call.b, py + call.y, m, n, k),
                       "integer MatMul kernel"));
      }
      return Status::Ok();
    };
    return PreparedOp{std::move(run), 0, false};
  }

  KF_ASSIGN_OR_RETURN(const FloatFormat format, FloatFormatOf(type, "MatMul"));
  RowMajorProduct product;
  product.dtype = type;
  product.type = format.blas;
  product.n = n;
  product.k = k;
  std::vector<ProductCall> calls;
  if (NumElements(batch_b) == 1 && NumElements(batch_a) == batches) {
    // B shared by every batch and A not broadcast: one product over all of A's rows, as PyTorch
    // does for Linear layers.
    product.m = batches * m;
    calls.push_back({});
  } else {
    // The innermost collapsed batch dim is one strided-batched call (stride 0 where an operand is
    // broadcast); the outer dims, if any, loop.
    product.m = m;
    product.batch = plan.dims.back();
    product.stride_a = plan.strides[0].back() * m * k;
    product.stride_b = plan.strides[1].back() * k * n;
    const std::vector<int64_t> outer(plan.dims.begin(), plan.dims.end() - 1);
    const std::vector<int64_t> outer_a(plan.strides[0].begin(), plan.strides[0].end() - 1);
    const std::vector<int64_t> outer_b(plan.strides[1].begin(), plan.strides[1].end() - 1);
    const int64_t outer_count = NumElements(outer);
    Odometer<2> it{&outer, {&outer_a, &outer_b}, {}, {}};
    it.Seek(0);
    for (int64_t i = 0; i < outer_count; ++i) {
      calls.push_back({it.offset[0] * m * k, it.offset[1] * k * n, i * product.batch * m * n});
      it.Next();
    }
  }
  KF_ASSIGN_OR_RETURN(std::shared_ptr<LtMatmul> lt, LtMatmul::Create(product));
  Kernel run = [lt, calls, elem](const OpArgs& args) -> Status {
    KF_ASSIGN_OR_RETURN(cublasLtHandle_t handle, LtHandle(args));
    const std::byte* pa = Bytes(args.inputs[0]);
    const std::byte* pb = Bytes(args.inputs[1]);
    std::byte* py = Bytes(args.outputs[0]);
    Alignments alignments;
    for (const ProductCall& call : calls) {
      alignments.a = std::min(alignments.a, AlignmentOf(pa + call.a * elem));
      alignments.b = std::min(alignments.b, AlignmentOf(pb + call.b * elem));
      alignments.y = std::min(alignments.y, AlignmentOf(py + call.y * elem));
    }
    alignments.c = alignments.y;
    KF_RETURN_IF_ERROR(lt->Select(handle, alignments, nullptr));
    KF_ASSIGN_OR_RETURN(void* workspace, args.libraries->Workspace(lt->workspace_bytes()));
    for (const ProductCall& call : calls) {
      KF_RETURN_IF_ERROR(lt->Launch(handle, workspace, 1.0f, pa + call.a * elem, pb + call.b * elem,
                                    0.0f, py + call.y * elem, py + call.y * elem));
    }
    return Status::Ok();
  };
  return PreparedOp{std::move(run), 0, false};
}

// How Gemm's C reaches the output.
enum class GemmBias {
  kNone,      // no C, or beta == 0
  kEpilogue,  // a row of N with beta == 1: cuBLASLt's bias epilogue, as PyTorch's addmm
  kFull,      // C is [M, N]: read in place as the product's C
  kBroadcast  // anything else: broadcast into Y first, then the product accumulates with beta
};

Result<PreparedOp> PrepareGemm(const NodeContext& c) {
  KF_RETURN_IF_ERROR(c.RequireInputs(2));
  KF_ASSIGN_OR_RETURN(const DType type, CommonStorage(c, "Gemm"));
  KF_ASSIGN_OR_RETURN(const FloatFormat format, FloatFormatOf(type, "Gemm"));
  const Shape& a = c.InShape(0);
  const Shape& b = c.InShape(1);
  if (a.size() != 2 || b.size() != 2) {
    return InvalidArgument(
        fmt::format("Gemm needs rank 2 inputs, got {} and {}", ShapeToString(a), ShapeToString(b)));
  }
  const bool trans_a = c.node().IntAttr("transA", 0) != 0;
  const bool trans_b = c.node().IntAttr("transB", 0) != 0;
  const auto alpha = static_cast<float>(c.node().FloatAttr("alpha", 1.0));
  const auto beta = static_cast<float>(c.node().FloatAttr("beta", 1.0));
  const int64_t m = trans_a ? a[1] : a[0];
  const int64_t k = trans_a ? a[0] : a[1];
  const int64_t n = trans_b ? b[0] : b[1];
  if ((trans_b ? b[1] : b[0]) != k) {
    return InvalidArgument(fmt::format("Gemm of {} by {} (transA={}, transB={}): inner dims differ",
                                       ShapeToString(a), ShapeToString(b), trans_a, trans_b));
  }
  if (c.OutShape(0) != Shape{m, n}) {
    return InvalidArgument(
        fmt::format("Gemm output {} is not [{},{}]", ShapeToString(c.OutShape(0)), m, n));
  }
  GemmBias bias = GemmBias::kNone;
  int64_t c_row_stride = 0;
  int64_t c_col_stride = 0;
  if (c.HasInput(2) && beta != 0.0f) {
    const Shape& cs = c.InShape(2);
    const int64_t c_rows = cs.size() == 2 ? cs[0] : 1;
    const int64_t c_cols = cs.empty() ? 1 : cs.back();
    if (cs.size() > 2 || (c_rows != 1 && c_rows != m) || (c_cols != 1 && c_cols != n)) {
      return InvalidArgument(
          fmt::format("Gemm's C {} does not broadcast to [{},{}]", ShapeToString(cs), m, n));
    }
    c_row_stride = c_rows == 1 ? 0 : c_cols;
    c_col_stride = c_cols == 1 ? 0 : 1;
    if (beta == 1.0f && c_rows == 1 && c_cols == n) {
      bias = GemmBias::kEpilogue;
    } else if (c_rows == m && c_cols == n) {
      bias = GemmBias::kFull;
    } else {
      bias = GemmBias::kBroadcast;
    }
  }
  const int64_t elem = format.bytes;
  if (m == 0 || n == 0) return PreparedOp{NoWork(), 0, false};
  if (k == 0) {
    if (bias == GemmBias::kNone) {
      return PreparedOp{ZeroOutput(static_cast<size_t>(m * n * elem)), 0, false};
    }
    Kernel run = [=](const OpArgs& args) {
      return CudaStatus(
          detail::LaunchBroadcastRows(args.inputs[2]->data, c_row_stride, c_col_stride,
                                      args.outputs[0]->data, m, n, beta, format.kernel),
          "Gemm's C broadcast kernel");
    };
    return PreparedOp{std::move(run), 0, false};
  }
  RowMajorProduct product;
  product.dtype = type;
  product.type = format.blas;
  product.trans_a = trans_a;
  product.trans_b = trans_b;
  product.m = m;
  product.n = n;
  product.k = k;
  product.bias_epilogue = bias == GemmBias::kEpilogue;
  KF_ASSIGN_OR_RETURN(std::shared_ptr<LtMatmul> lt, LtMatmul::Create(product));
  const detail::FloatType kernel_type = format.kernel;
  Kernel run = [=](const OpArgs& args) -> Status {
    KF_ASSIGN_OR_RETURN(cublasLtHandle_t handle, LtHandle(args));
    const void* pa = args.inputs[0]->data;
    const void* pb = args.inputs[1]->data;
    const void* pc = bias == GemmBias::kNone ? nullptr : args.inputs[2]->data;
    void* py = args.outputs[0]->data;
    Alignments alignments;
    alignments.a = AlignmentOf(pa);
    alignments.b = AlignmentOf(pb);
    alignments.y = AlignmentOf(py);
    alignments.c = alignments.y;
    if (lt->bias_epilogue()) {
      alignments.bias = AlignmentOf(pc);
      if (!lt->Select(handle, alignments, pc).ok()) {
        // cuBLASLt has no epilogue kernel for some shapes (PyTorch meets the same): add the row
        // the general way from now on.
        KF_RETURN_IF_ERROR(lt->DropBiasEpilogue());
      }
    }
    const void* product_c = py;
    float product_beta = 0.0f;
    if (!lt->bias_epilogue()) {
      alignments.bias = 256;
      if (bias == GemmBias::kFull) {
        product_c = pc;
        product_beta = beta;
        alignments.c = AlignmentOf(pc);
      } else if (bias != GemmBias::kNone) {
        KF_RETURN_IF_ERROR(CudaStatus(detail::LaunchBroadcastRows(pc, c_row_stride, c_col_stride,
                                                                  py, m, n, 1.0f, kernel_type),
                                      "Gemm's C broadcast kernel"));
        product_beta = beta;
      }
      KF_RETURN_IF_ERROR(lt->Select(handle, alignments, nullptr));
    }
    KF_ASSIGN_OR_RETURN(void* workspace, args.libraries->Workspace(lt->workspace_bytes()));
    return lt->Launch(handle, workspace, alpha, pa, pb, product_beta, product_c, py);
  };
  return PreparedOp{std::move(run), 0, false};
}

// ---- Windows: Conv and pooling ----

// Kernel, strides, dilations and pads over the spatial dims, with auto_pad resolved against the
// output size the graph has (the planner's shape rules).
struct Window {
  std::vector<int64_t> in;
  std::vector<int64_t> out;
  std::vector<int64_t> kernel;
  std::vector<int64_t> stride;
  std::vector<int64_t> dilation;
  std::vector<int64_t> pad_begin;
  std::vector<int64_t> pad_end;

  size_t spatial() const { return in.size(); }
};

Result<Window> ReadWindow(const NodeContext& c, const Shape& in, const Shape& out,
                          std::vector<int64_t> kernel) {
  const size_t spatial = in.size() - 2;
  if (spatial < 1 || spatial > 3 || out.size() != in.size()) {
    return InvalidArgument(
        fmt::format("input {} and output {}: the CUDA baseline handles 1 to 3 spatial dims",
                    ShapeToString(in), ShapeToString(out)));
  }
  std::vector<int64_t> strides = c.node().IntsAttr("strides");
  std::vector<int64_t> dilations = c.node().IntsAttr("dilations");
  std::vector<int64_t> pads = c.node().IntsAttr("pads");
  const std::string auto_pad = c.node().StringAttr("auto_pad", "NOTSET");
  if (strides.empty()) strides.assign(spatial, 1);
  if (dilations.empty()) dilations.assign(spatial, 1);
  if (pads.empty()) pads.assign(2 * spatial, 0);
  if (kernel.size() != spatial || strides.size() != spatial || dilations.size() != spatial ||
      pads.size() != 2 * spatial) {
    return InvalidArgument("kernel_shape, strides, dilations and pads do not match the input");
  }
  Window w;
  for (size_t i = 0; i < spatial; ++i) {
    if (kernel[i] < 1 || strides[i] < 1 || dilations[i] < 1 || pads[i] < 0 ||
        pads[i + spatial] < 0) {
      return InvalidArgument("kernel_shape, strides and dilations must be positive, pads >= 0");
    }
    w.in.push_back(in[i + 2]);
    w.out.push_back(out[i + 2]);
    w.kernel.push_back(kernel[i]);
    w.stride.push_back(strides[i]);
    w.dilation.push_back(dilations[i]);
    int64_t begin = pads[i];
    int64_t end = pads[i + spatial];
    if (auto_pad == "VALID") {
      begin = end = 0;
    } else if (auto_pad == "SAME_UPPER" || auto_pad == "SAME_LOWER") {
      const int64_t extent = (kernel[i] - 1) * dilations[i] + 1;
      const int64_t total =
          std::max<int64_t>(0, (out[i + 2] - 1) * strides[i] + extent - in[i + 2]);
      begin = auto_pad == "SAME_UPPER" ? total / 2 : total - total / 2;
      end = total - begin;
    }
    w.pad_begin.push_back(begin);
    w.pad_end.push_back(end);
  }
  return w;
}

// cuDNN's smallest descriptors are 4-D: a 1-D window gains a unit height in front.
Window AtLeast2d(Window w) {
  if (w.spatial() == 1) {
    w.in.insert(w.in.begin(), 1);
    w.out.insert(w.out.begin(), 1);
    w.kernel.insert(w.kernel.begin(), 1);
    w.stride.insert(w.stride.begin(), 1);
    w.dilation.insert(w.dilation.begin(), 1);
    w.pad_begin.insert(w.pad_begin.begin(), 0);
    w.pad_end.insert(w.pad_end.begin(), 0);
  }
  return w;
}

// `v` right-aligned in three dims, `fill` in front (the kernels' depth, height, width).
void Fill3(const std::vector<int64_t>& v, int64_t fill, int64_t (&out)[3]) {
  const size_t shift = 3 - v.size();
  for (size_t d = 0; d < 3; ++d) out[d] = d < shift ? fill : v[d - shift];
}

// Output size cuDNN computes: floor((in + 2 pad - extent) / stride) + 1, or -1 when none fits.
int64_t FloorOutput(int64_t in, int64_t pad, int64_t kernel, int64_t dilation, int64_t stride) {
  const int64_t span = in + 2 * pad - ((kernel - 1) * dilation + 1);
  return span < 0 ? -1 : span / stride + 1;
}

Status SetPackedTensor(cudnnTensorDescriptor_t desc, cudnnDataType_t type,
                       const std::vector<int64_t>& dims, std::string_view what) {
  KF_ASSIGN_OR_RETURN(const std::vector<int> ints, ToInts(dims, what));
  KF_CUDNN_RETURN(cudnnSetTensorNdDescriptorEx(desc, CUDNN_TENSOR_NCHW, type,
                                               static_cast<int>(ints.size()), ints.data()));
  return Status::Ok();
}

// The descriptors of one Conv, built at prepare; the algorithm is chosen on first run.
struct CudnnConv {
  cudnnTensorDescriptor_t x = nullptr;
  cudnnFilterDescriptor_t w = nullptr;
  cudnnConvolutionDescriptor_t conv = nullptr;
  cudnnTensorDescriptor_t y = nullptr;
  cudnnTensorDescriptor_t bias = nullptr;
  bool half = false;  // f16 / bf16 data: tensor-op math
  bool selected = false;
  cudnnConvolutionFwdAlgo_t algo = CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM;
  size_t workspace_bytes = 0;

  CudnnConv() = default;
  CudnnConv(const CudnnConv&) = delete;
  CudnnConv& operator=(const CudnnConv&) = delete;
  ~CudnnConv() {
    if (bias != nullptr) static_cast<void>(cudnnDestroyTensorDescriptor(bias));
    if (y != nullptr) static_cast<void>(cudnnDestroyTensorDescriptor(y));
    if (conv != nullptr) static_cast<void>(cudnnDestroyConvolutionDescriptor(conv));
    if (w != nullptr) static_cast<void>(cudnnDestroyFilterDescriptor(w));
    if (x != nullptr) static_cast<void>(cudnnDestroyTensorDescriptor(x));
  }

  // The fastest algorithm cuDNN measures for this shape (cudnnFindConvolutionForwardAlgorithm,
  // what PyTorch does with cudnn.benchmark) that works and whose workspace can be had. The
  // legacy API's heuristic ranking (cudnnGetConvolutionForwardAlgorithm_v7) picked algorithms
  // up to 1.7x slower than PyTorch eager on ResNet-50's f32 1x1 convs (docs/benchmarks.md).
  Status Select(cudnnHandle_t handle, Libraries& libraries) {
    std::array<cudnnConvolutionFwdAlgoPerf_t, CUDNN_CONVOLUTION_FWD_ALGO_COUNT> perf{};
    int returned = 0;
    KF_CUDNN_RETURN(cudnnFindConvolutionForwardAlgorithm(
        handle, x, w, conv, y, static_cast<int>(perf.size()), &returned, perf.data()));
    for (size_t i = 0; i < static_cast<size_t>(std::max(returned, 0)) && i < perf.size(); ++i) {
      const cudnnConvolutionFwdAlgoPerf_t& p = perf[i];
      if (p.status != CUDNN_STATUS_SUCCESS) continue;
      // f32 stays off TF32 tensor cores.
      if (!half && p.mathType != CUDNN_FMA_MATH && p.mathType != CUDNN_DEFAULT_MATH) continue;
      if (half) KF_CUDNN_RETURN(cudnnSetConvolutionMathType(conv, p.mathType));
      size_t bytes = 0;
      if (cudnnGetConvolutionForwardWorkspaceSize(handle, x, w, conv, y, p.algo, &bytes) !=
          CUDNN_STATUS_SUCCESS) {
        continue;
      }
      if (!libraries.Workspace(bytes).ok()) continue;
      algo = p.algo;
      workspace_bytes = bytes;
      selected = true;
      return Status::Ok();
    }
    return Internal(fmt::format(
        "cudnnFindConvolutionForwardAlgorithm offered no usable algorithm ({} considered)",
        returned));
  }
};

Result<PreparedOp> PrepareConv(const NodeContext& c) {
  KF_RETURN_IF_ERROR(c.RequireInputs(2));
  KF_ASSIGN_OR_RETURN(const DType type, CommonStorage(c, "Conv"));
  KF_ASSIGN_OR_RETURN(const FloatFormat format, FloatFormatOf(type, "Conv"));
  const Shape& x = c.InShape(0);
  const Shape& wshape = c.InShape(1);
  const Shape& out = c.OutShape(0);
  if (x.size() < 3 || x.size() > 5 || wshape.size() != x.size()) {
    return InvalidArgument(
        fmt::format("Conv of input {} by weight {}: the CUDA baseline handles 1 to 3 spatial dims",
                    ShapeToString(x), ShapeToString(wshape)));
  }
  const int64_t group = c.node().IntAttr("group", 1);
  const int64_t batch = x[0];
  const int64_t channels = x[1];
  const int64_t filters = wshape[0];
  if (group < 1 || channels != wshape[1] * group || filters % group != 0) {
    return InvalidArgument(fmt::format("input channels {} do not match weight {} with group {}",
                                       channels, ShapeToString(wshape), group));
  }
  const bool has_bias = c.HasInput(2);
  if (has_bias && NumElements(c.InShape(2)) != filters) {
    return InvalidArgument(
        fmt::format("Conv bias {} does not have {} values", ShapeToString(c.InShape(2)), filters));
  }
  const std::vector<int64_t> weight_kernel(wshape.begin() + 2, wshape.end());
  std::vector<int64_t> kernel = c.node().IntsAttr("kernel_shape");
  if (kernel.empty()) kernel = weight_kernel;
  if (kernel != weight_kernel) {
    return InvalidArgument(
        fmt::format("kernel_shape does not match weight {}", ShapeToString(wshape)));
  }
  KF_ASSIGN_OR_RETURN(const Window window, ReadWindow(c, x, out, kernel));
  if (NumElements(out) == 0) return PreparedOp{NoWork(), 0, false};

  // cuDNN pads symmetrically: it takes the smaller side of each dim, and the rest is copied in
  // with the input (zeros are exact for a convolution).
  const Window w = AtLeast2d(window);
  std::vector<int64_t> x_dims = {batch, channels};
  std::vector<int64_t> y_dims = {batch, filters};
  std::vector<int64_t> w_dims = {filters, channels / group};
  std::vector<int64_t> bias_dims = {1, filters};
  std::vector<int64_t> pads;
  std::vector<int64_t> extra_begin;
  bool needs_pad = false;
  for (size_t d = 0; d < w.spatial(); ++d) {
    const int64_t symmetric = std::min(w.pad_begin[d], w.pad_end[d]);
    const int64_t grown = w.in[d] + w.pad_begin[d] + w.pad_end[d] - 2 * symmetric;
    needs_pad = needs_pad || grown != w.in[d];
    pads.push_back(symmetric);
    extra_begin.push_back(w.pad_begin[d] - symmetric);
    if (FloorOutput(grown, symmetric, w.kernel[d], w.dilation[d], w.stride[d]) != w.out[d]) {
      return InvalidArgument(
          fmt::format("Conv output {} does not follow from input {} and the window",
                      ShapeToString(out), ShapeToString(x)));
    }
    x_dims.push_back(grown);
    y_dims.push_back(w.out[d]);
    w_dims.push_back(w.kernel[d]);
    bias_dims.push_back(1);
  }

  auto conv = std::make_shared<CudnnConv>();
  conv->half = type != DType::kF32;
  KF_CUDNN_RETURN(cudnnCreateTensorDescriptor(&conv->x));
  KF_CUDNN_RETURN(cudnnCreateFilterDescriptor(&conv->w));
  KF_CUDNN_RETURN(cudnnCreateConvolutionDescriptor(&conv->conv));
  KF_CUDNN_RETURN(cudnnCreateTensorDescriptor(&conv->y));
  KF_RETURN_IF_ERROR(SetPackedTensor(conv->x, format.dnn, x_dims, "a Conv input dim"));
  KF_RETURN_IF_ERROR(SetPackedTensor(conv->y, format.dnn, y_dims, "a Conv output dim"));
  KF_ASSIGN_OR_RETURN(const std::vector<int> filter, ToInts(w_dims, "a Conv weight dim"));
  KF_CUDNN_RETURN(cudnnSetFilterNdDescriptor(conv->w, format.dnn, CUDNN_TENSOR_NCHW,
                                             static_cast<int>(filter.size()), filter.data()));
  KF_ASSIGN_OR_RETURN(const std::vector<int> pad_ints, ToInts(pads, "a Conv pad"));
  KF_ASSIGN_OR_RETURN(const std::vector<int> stride_ints, ToInts(w.stride, "a Conv stride"));
  KF_ASSIGN_OR_RETURN(const std::vector<int> dilation_ints, ToInts(w.dilation, "a Conv dilation"));
  // f32 accumulation for every dtype (f16 / bf16 as PyTorch's pseudo-half configurations).
  KF_CUDNN_RETURN(cudnnSetConvolutionNdDescriptor(
      conv->conv, static_cast<int>(pad_ints.size()), pad_ints.data(), stride_ints.data(),
      dilation_ints.data(), CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT));
  KF_ASSIGN_OR_RETURN(const int groups, ToInt(group, "Conv's group"));
  KF_CUDNN_RETURN(cudnnSetConvolutionGroupCount(conv->conv, groups));
  // FMA math keeps f32 off TF32 (cuDNN's default math allows it on Ampere and later).
  KF_CUDNN_RETURN(
      cudnnSetConvolutionMathType(conv->conv, conv->half ? CUDNN_TENSOR_OP_MATH : CUDNN_FMA_MATH));
  std::vector<int> cudnn_out(y_dims.size());
  KF_CUDNN_RETURN(cudnnGetConvolutionNdForwardOutputDim(
      conv->conv, conv->x, conv->w, static_cast<int>(cudnn_out.size()), cudnn_out.data()));
  if (std::vector<int64_t>(cudnn_out.begin(), cudnn_out.end()) != y_dims) {
    return InvalidArgument(fmt::format("cuDNN computes a Conv output of {}, the graph has {}",
                                       ShapeToString(Shape(cudnn_out.begin(), cudnn_out.end())),
                                       ShapeToString(out)));
  }
  if (has_bias) {
    KF_CUDNN_RETURN(cudnnCreateTensorDescriptor(&conv->bias));
    KF_RETURN_IF_ERROR(SetPackedTensor(conv->bias, format.dnn, bias_dims, "a Conv bias dim"));
  }

  detail::PadGeometry pad{};
  Fill3(window.in, 1, pad.in);
  Fill3(std::vector<int64_t>(x_dims.begin() + 2, x_dims.end()), 1, pad.out);
  Fill3(extra_begin, 0, pad.begin);
  const int64_t planes = batch * channels;
  const size_t scratch =
      needs_pad
          ? static_cast<size_t>(NumElements(Shape(x_dims.begin(), x_dims.end())) * format.bytes)
          : 0;
  const detail::FloatType kernel_type = format.kernel;
  Kernel run = [conv, needs_pad, pad, planes, kernel_type, has_bias](const OpArgs& args) -> Status {
    KF_ASSIGN_OR_RETURN(cudnnHandle_t handle, DnnHandle(args));
    if (!conv->selected) KF_RETURN_IF_ERROR(conv->Select(handle, *args.libraries));
    KF_ASSIGN_OR_RETURN(void* workspace, args.libraries->Workspace(conv->workspace_bytes));
    const void* input = args.inputs[0]->data;
    if (needs_pad) {
      KF_RETURN_IF_ERROR(
          CudaStatus(detail::LaunchZeroPad(input, args.scratch, planes, pad, kernel_type),
                     "Conv's padding kernel"));
      input = args.scratch;
    }
    void* output = args.outputs[0]->data;
    const float one = 1.0f;
    const float zero = 0.0f;
    KF_CUDNN_RETURN(cudnnConvolutionForward(handle, &one, conv->x, input, conv->w,
                                            args.inputs[1]->data, conv->conv, conv->algo, workspace,
                                            conv->workspace_bytes, &zero, conv->y, output));
    if (has_bias) {
      KF_CUDNN_RETURN(
          cudnnAddTensor(handle, &one, conv->bias, args.inputs[2]->data, &one, conv->y, output));
    }
    return Status::Ok();
  };
  return PreparedOp{std::move(run), scratch, false};
}

// The descriptors of one cuDNN pooling.
struct CudnnPool {
  cudnnTensorDescriptor_t x = nullptr;
  cudnnTensorDescriptor_t y = nullptr;
  cudnnPoolingDescriptor_t pool = nullptr;

  CudnnPool() = default;
  CudnnPool(const CudnnPool&) = delete;
  CudnnPool& operator=(const CudnnPool&) = delete;
  ~CudnnPool() {
    if (pool != nullptr) static_cast<void>(cudnnDestroyPoolingDescriptor(pool));
    if (y != nullptr) static_cast<void>(cudnnDestroyTensorDescriptor(y));
    if (x != nullptr) static_cast<void>(cudnnDestroyTensorDescriptor(x));
  }
};

Result<PreparedOp> PreparePool(const NodeContext& c) {
  KF_RETURN_IF_ERROR(c.RequireInputs(1));
  const std::string& op = c.node().op_type;
  const bool is_max = op == "MaxPool";
  if (is_max && c.HasOutput(1)) {
    return InvalidArgument("MaxPool's Indices output has no CUDA baseline kernel");
  }
  KF_ASSIGN_OR_RETURN(const DType type, CommonStorage(c, op));
  KF_ASSIGN_OR_RETURN(const FloatFormat format, FloatFormatOf(type, op));
  const Shape& x = c.InShape(0);
  const Shape& out = c.OutShape(0);
  if (x.size() < 3 || x.size() > 5) {
    return InvalidArgument(fmt::format("{} of {}: the CUDA baseline handles 1 to 3 spatial dims",
                                       op, ShapeToString(x)));
  }
  const std::vector<int64_t> kernel = c.node().IntsAttr("kernel_shape");
  if (kernel.empty()) return InvalidArgument(fmt::format("{} has no kernel_shape", op));
  KF_ASSIGN_OR_RETURN(const Window window, ReadWindow(c, x, out, kernel));
  if (out[0] != x[0] || out[1] != x[1]) {
    return InvalidArgument(fmt::format("{} output {} does not keep input {}'s batch and channels",
                                       op, ShapeToString(out), ShapeToString(x)));
  }
  if (NumElements(out) == 0) return PreparedOp{NoWork(), 0, false};
  const bool count_include_pad = c.node().IntAttr("count_include_pad", 0) != 0;
  const int64_t planes = x[0] * x[1];

  // cuDNN pools without dilation, with symmetric pads and floor rounding: anything else (ceil_mode
  // adding a window, SAME padding with an odd total) runs on the direct kernel.
  const Window w = AtLeast2d(window);
  bool cudnn_fits = true;
  for (size_t d = 0; d < w.spatial(); ++d) {
    cudnn_fits = cudnn_fits && w.dilation[d] == 1 && w.pad_begin[d] == w.pad_end[d] &&
                 w.pad_begin[d] < w.kernel[d] &&
                 FloorOutput(w.in[d], w.pad_begin[d], w.kernel[d], 1, w.stride[d]) == w.out[d];
  }
  const detail::FloatType kernel_type = format.kernel;
  if (!cudnn_fits) {
    detail::PoolGeometry g{};
    Fill3(window.in, 1, g.in);
    Fill3(window.out, 1, g.out);
    Fill3(window.kernel, 1, g.kernel);
    Fill3(window.stride, 1, g.stride);
    Fill3(window.dilation, 1, g.dilation);
    Fill3(window.pad_begin, 0, g.pad_begin);
    Fill3(window.pad_end, 0, g.pad_end);
    Kernel run = [g, planes, is_max, count_include_pad, kernel_type](const OpArgs& args) {
      return CudaStatus(detail::LaunchPool(args.inputs[0]->data, args.outputs[0]->data, planes, g,
                                           is_max, count_include_pad, kernel_type),
                        "pooling kernel");
    };
    return PreparedOp{std::move(run), 0, false};
  }

  std::vector<int64_t> x_dims = {x[0], x[1]};
  std::vector<int64_t> y_dims = {x[0], x[1]};
  x_dims.insert(x_dims.end(), w.in.begin(), w.in.end());
  y_dims.insert(y_dims.end(), w.out.begin(), w.out.end());
  auto pool = std::make_shared<CudnnPool>();
  KF_CUDNN_RETURN(cudnnCreateTensorDescriptor(&pool->x));
  KF_CUDNN_RETURN(cudnnCreateTensorDescriptor(&pool->y));
  KF_CUDNN_RETURN(cudnnCreatePoolingDescriptor(&pool->pool));
  KF_RETURN_IF_ERROR(SetPackedTensor(pool->x, format.dnn, x_dims, "a pooling input dim"));
  KF_RETURN_IF_ERROR(SetPackedTensor(pool->y, format.dnn, y_dims, "a pooling output dim"));
  KF_ASSIGN_OR_RETURN(const std::vector<int> window_ints, ToInts(w.kernel, "a pooling window"));
  KF_ASSIGN_OR_RETURN(const std::vector<int> pad_ints, ToInts(w.pad_begin, "a pooling pad"));
  KF_ASSIGN_OR_RETURN(const std::vector<int> stride_ints, ToInts(w.stride, "a pooling stride"));
  const cudnnPoolingMode_t mode = is_max              ? CUDNN_POOLING_MAX
                                  : count_include_pad ? CUDNN_POOLING_AVERAGE_COUNT_INCLUDE_PADDING
                                                      : CUDNN_POOLING_AVERAGE_COUNT_EXCLUDE_PADDING;
  // NaN propagates through max pooling, as in PyTorch.
  KF_CUDNN_RETURN(cudnnSetPoolingNdDescriptor(
      pool->pool, mode, CUDNN_PROPAGATE_NAN, static_cast<int>(window_ints.size()),
      window_ints.data(), pad_ints.data(), stride_ints.data()));
  std::vector<int> cudnn_out(y_dims.size());
  KF_CUDNN_RETURN(cudnnGetPoolingNdForwardOutputDim(
      pool->pool, pool->x, static_cast<int>(cudnn_out.size()), cudnn_out.data()));
  if (std::vector<int64_t>(cudnn_out.begin(), cudnn_out.end()) != y_dims) {
    return InvalidArgument(fmt::format("cuDNN computes a {} output of {}, the graph has {}", op,
                                       ShapeToString(Shape(cudnn_out.begin(), cudnn_out.end())),
                                       ShapeToString(out)));
  }
  Kernel run = [pool](const OpArgs& args) -> Status {
    KF_ASSIGN_OR_RETURN(cudnnHandle_t handle, DnnHandle(args));
    const float one = 1.0f;
    const float zero = 0.0f;
    KF_CUDNN_RETURN(cudnnPoolingForward(handle, pool->pool, &one, pool->x, args.inputs[0]->data,
                                        &zero, pool->y, args.outputs[0]->data));
    return Status::Ok();
  };
  return PreparedOp{std::move(run), 0, false};
}

}  // namespace

// ---- Libraries ----

struct Libraries::State {
  cublasLtHandle_t cublas_lt = nullptr;
  cudnnHandle_t cudnn = nullptr;
  void* workspace_allocation = nullptr;  // from cudaMallocAsync on the default stream
  void* workspace = nullptr;             // workspace_allocation rounded up to 256 bytes
  size_t workspace_bytes = 0;
};

Libraries::Libraries() : state_(std::make_unique<State>()) {}

Libraries::~Libraries() {
  if (state_->workspace_allocation != nullptr) {
    static_cast<void>(cudaFreeAsync(state_->workspace_allocation, nullptr));
  }
  if (state_->cudnn != nullptr) static_cast<void>(cudnnDestroy(state_->cudnn));
  if (state_->cublas_lt != nullptr) static_cast<void>(cublasLtDestroy(state_->cublas_lt));
}

Result<void*> Libraries::CublasLt() {
  if (state_->cublas_lt == nullptr) {
    cublasLtHandle_t handle = nullptr;
    KF_CUBLAS_RETURN(cublasLtCreate(&handle));
    state_->cublas_lt = handle;
  }
  return static_cast<void*>(state_->cublas_lt);
}

Result<void*> Libraries::Cudnn() {
  if (state_->cudnn == nullptr) {
    cudnnHandle_t handle = nullptr;
    KF_CUDNN_RETURN(cudnnCreate(&handle));
    if (const Status bound = CudnnStatus(cudnnSetStream(handle, nullptr), "cudnnSetStream");
        !bound.ok()) {
      static_cast<void>(cudnnDestroy(handle));
      return bound;
    }
    state_->cudnn = handle;
  }
  return static_cast<void*>(state_->cudnn);
}

Result<void*> Libraries::Workspace(size_t bytes) {
  if (bytes <= state_->workspace_bytes) return state_->workspace;
  const size_t rounded =
      (bytes + kWorkspaceGrainBytes - 1) / kWorkspaceGrainBytes * kWorkspaceGrainBytes;
  // Stream-ordered on the default stream: the old buffer is released once the work already
  // queued on it is done, so growing never waits for the device.
  if (state_->workspace_allocation != nullptr) {
    const cudaError_t freed = cudaFreeAsync(state_->workspace_allocation, nullptr);
    state_->workspace_allocation = nullptr;
    state_->workspace = nullptr;
    state_->workspace_bytes = 0;
    KF_RETURN_IF_ERROR(CudaStatus(static_cast<int>(freed), "cudaFreeAsync of the workspace"));
  }
  void* allocation = nullptr;
  if (const cudaError_t rc = cudaMallocAsync(&allocation, rounded + kWorkspaceAlignBytes, nullptr);
      rc != cudaSuccess) {
    // A failed allocation is not sticky; clear it so the next launch check does not report it.
    static_cast<void>(cudaGetLastError());
    return ResourceExhausted(fmt::format("cudaMallocAsync of a {}-byte library workspace: {}",
                                         rounded, ErrorText(static_cast<int>(rc))));
  }
  const auto address = reinterpret_cast<uintptr_t>(allocation);
  const uintptr_t aligned =
      (address + kWorkspaceAlignBytes - 1) / kWorkspaceAlignBytes * kWorkspaceAlignBytes;
  state_->workspace_allocation = allocation;
  state_->workspace = static_cast<std::byte*>(allocation) + (aligned - address);
  state_->workspace_bytes = rounded;
  return state_->workspace;
}

// ---- Dispatch ----

bool IsLinearOp(std::string_view op) {
  return op == "MatMul" || op == "Gemm" || op == "Conv" || op == "MaxPool" || op == "AveragePool";
}

Result<PreparedOp> PrepareLinearOp(const NodeContext& c) {
  const std::string& op = c.node().op_type;
  if (op == "MatMul") return PrepareMatMul(c);
  if (op == "Gemm") return PrepareGemm(c);
  if (op == "Conv") return PrepareConv(c);
  if (op == "MaxPool" || op == "AveragePool") return PreparePool(c);
  return InvalidArgument(fmt::format("no CUDA baseline kernel for {}", op));
}

}  // namespace kfleet::cuda::ops

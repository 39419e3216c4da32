// What the GEMM templates need to know about a "gemm*" spec: where A and B come from (through
// views), whether each is transposed, how M, N, K and the batch are read from the runtime shapes,
// and the fused epilogue as per-element C++ over the spec's other inputs and constants. Both
// gemm_blas and gemm_tiled render the pieces this file emits around their own main loop.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "agents/template_family.h"
#include "common/status.h"

namespace kfleet::agents {

// How an epilogue operand broadcasts to the [batch, M, N] result.
enum class OperandBroadcast {
  kScalar,     // one element
  kRow,        // [N]: one value per column (a bias)
  kFull,       // [batch, M, N]: one value per element (a residual)
  kMatrix,     // [M, N] shared by every batch
  kColumn,     // [batch, M, 1]: one value per row
  kColumnAll,  // [M, 1] shared by every batch
};

struct EpilogueOperand {
  int input = -1;  // position in the spec's inputs (in<input>)
  OperandBroadcast broadcast = OperandBroadcast::kScalar;
};

// A spec input seen as a row-major matrix: its dims split at `split` into outer x inner.
struct MatrixOperand {
  int input = -1;
  int rank = 0;
  int split = 0;            // dims [0, split) are the outer (row) dims, [split, rank) the inner
  bool transposed = false;  // the anchor multiplies with its transpose
};

// An activation a BLAS library applies in its epilogue.
enum class GemmActivation {
  kNone,
  kRelu,
  kGeluTanh,  // 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
};

// The epilogue in the form cuBLASLt fuses: activation(alpha * acc + bias[j] + residual).
struct BlasEpilogue {
  double alpha = 1.0;
  int bias = -1;      // index into GemmPlan::operands of a kRow operand, or -1
  int residual = -1;  // index into GemmPlan::operands of a kFull operand, or -1
  GemmActivation activation = GemmActivation::kNone;
};

struct GemmPlan {
  planner::DType dtype = planner::DType::kF32;  // of every input and the output
  MatrixOperand a;                              // stored [M, K], or [K, M] when transposed
  MatrixOperand b;                              // stored [K, N], or [N, K] when transposed
  // Batched MatMul: A and B keep their rank, the last two dims are the matrix and the leading
  // ones the batch (one side may have none, or all ones, and is broadcast). Otherwise every
  // leading dim of A folds into M.
  bool batched = false;
  std::vector<int> input_ranks;
  int output_rank = 0;
  std::vector<EpilogueOperand> operands;
  // Statements over `acc` (the product) and operands p<i>[j] (per-element) or s<i> (per-row
  // scalar), ending with the value in `result`; empty when the output is the product itself.
  std::vector<std::string> statements;
  std::string result;
  bool uses_exp = false;
  bool uses_tanh = false;
  bool uses_erf = false;
  // Set when the whole epilogue (nothing, too) has BlasEpilogue's form, the activation matched
  // as closely as the element type resolves (in bf16 an erf GELU passes for the tanh one); the
  // statements above describe the epilogue either way.
  std::optional<BlasEpilogue> blas_epilogue;
};

struct GemmAnalysisOptions {
  // Accept f16 and bf16 specs besides f32 (every input and the output of one type); the CPU
  // templates compute in f32 only.
  bool half_types = false;
};

// Ok with the plan, or why the GEMM templates cannot implement the spec.
Result<GemmPlan> AnalyzeGemm(const SpecView& spec, const GemmAnalysisOptions& options = {});

// Includes, the math helpers the epilogue needs, `struct GemmArgs` and
// `static int ReadGemmArgs(in, n_in, out, n_out, GemmArgs*)`, which validates the tensors and
// fills batch, m, n, k, lda, ldb, the A / B / C pointers and per-batch strides, and
// `ApplyEpilogue(const GemmArgs&, batch, i0, i1, j0, j1)` when the plan has an epilogue.
std::string RenderGemmPrelude(const GemmPlan& plan);

// `struct GemmArgs` with A, B, C and the operands as pointers to `element` ("float", "__half"),
// DimProduct, and ReadGemmArgs checking that every tensor has kf_dtype `dtype_code` ("KF_F32"):
// the part of RenderGemmPrelude that does not depend on where the kernel runs.
std::string RenderGemmArgs(const GemmPlan& plan, std::string_view element,
                           std::string_view dtype_code);

// The problem in a few words for explanations: "A x B^T + a 9-op epilogue over 1 operand(s)".
std::string DescribeGemm(const GemmPlan& plan);

}  // namespace kfleet::agents

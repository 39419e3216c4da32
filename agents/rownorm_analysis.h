// Reads a rownorm kernel spec (a normalization, softmax or reduction over the trailing axes, with
// the elementwise prologue and epilogue the partitioner fused into it) into a RowPlan: what the
// row kernel computes, and C expressions for what it reads and writes per element.
#pragma once

#include <string>
#include <vector>

#include "agents/template_family.h"
#include "common/status.h"

namespace kfleet::agents {

enum class RowKind {
  kLayerNorm,
  kRmsNorm,
  kSoftmax,
  kLogSoftmax,
  kReduceSum,
  kReduceMean,
  kReduceMax,
  kReduceMin,
};

// How the kernel reads a spec input while it works on element c of row r, the tensor viewed as
// [rows, cols] with the normalized (reduced) trailing axes as cols.
enum class OperandIndex {
  kScalar,   // one element for all: in{k}[0], read into s{k}
  kColumn,   // [cols] broadcast over rows (gamma, beta, a bias): in{k}[c]
  kRow,      // [rows] broadcast over a row (a reduction's shape): in{k}[r], read into s{k}
  kElement,  // [rows, cols]: e{k}[c] with e{k} = in{k} + r * cols
};

struct RowPlan {
  RowKind kind = RowKind::kLayerNorm;
  double epsilon = 0;  // norms only
  std::vector<int> input_ranks;
  int output_rank = 0;
  std::vector<OperandIndex> inputs;  // per spec input
  int shape_input = -1;              // the kElement input whose runtime shape gives rows and cols
  int reduced_axes = 0;              // trailing axes of shape_input that form a row
  // The row element the core works on, as a float expression of column `c`.
  std::string x_expr;
  // The output element, as a float expression of the core's result `v` (and of `c` for norms).
  std::string epilogue_expr;
  std::string description;  // "LayerNorm (decomposed, eps 1e-05) + Mul + Add", for people
};

// The tensor dtypes a row kernel takes: f32 (the CPU kernel), or also f16 and bf16, which the
// CUDA kernel loads into f32 and rounds once on store.
enum class RowDTypes { kF32, kF32AndHalf };

// Ok when the whole spec is one row pattern this analyzer knows; otherwise why not.
Result<RowPlan> AnalyzeRowSpec(const SpecView& spec, RowDTypes dtypes = RowDTypes::kF32);

// True for kinds that write one element per row (reductions) rather than a whole row.
bool WritesOnePerRow(RowKind kind);

}  // namespace kfleet::agents

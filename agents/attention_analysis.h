// Reads an "attention" kernel spec, softmax(Q K^T * scale + mask) V, into an AttentionPlan: where
// Q, K and V come from (a fused QKV input sliced along its last axis, or separate inputs, seen as
// [batch, heads, seq, head_dim] through Reshape / Transpose views), the score ops between the two
// MatMuls as C statements, and the output layout, all in terms the kernel reads from the runtime
// shapes of its tensors.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "agents/template_family.h"
#include "common/status.h"
#include "planner/graph.h"

namespace kfleet::agents {

// Q, K or V: a spec input viewed as [batch, heads, seq, head_dim].
struct HeadOperand {
  int input = -1;  // position in the spec's inputs
  int rank = 0;
  // Packed: the input is [batch, seq, parts * heads * head_dim] ([seq, ...] when batch is 1) and
  // the operand is the part-th of `parts` equal slices of its last axis, split into heads by a
  // Reshape whose constant fixes the head dim or the head count (0: derived from the other).
  bool packed = false;
  int part = 0;
  int parts = 1;
  int64_t fixed_heads = 0;
  int64_t fixed_head_dim = 0;
  // The input axis of batch, heads, seq and head_dim; packed: batch (-1 without) and seq only.
  std::array<int, 4> axis = {-1, -1, -1, -1};
};

// A spec input read per score element: broadcast (numpy rules) to [batch, heads, seq_q, seq_kv].
struct ScoreOperand {
  int input = -1;
  planner::DType dtype = planner::DType::kF32;
  int rank = 0;
};

struct AttentionPlan {
  planner::DType dtype = planner::DType::kF32;  // of Q, K and V
  planner::DType out_dtype = planner::DType::kF32;
  HeadOperand q, k, v;
  // The output holds [batch, heads, seq_q, head_dim] densely; otherwise [batch, seq_q, heads,
  // head_dim] (the heads merged back into the hidden axis).
  bool out_heads_major = false;
  int output_rank = 0;
  std::vector<int> input_ranks;
  std::vector<planner::DType> input_dtypes;
  std::vector<ScoreOperand> operands;
  // Statements over the float score `s`, in graph order, reading operand i as `x<i>` (float) or
  // `c<i>` (bool) and scalar constants as literals: "s = s * 0.125f;", "s = s + x0;".
  std::vector<std::string> score_steps;
  double out_scale = 1.0;         // a constant scaling of V, applied to the output
  bool zero_masked_rows = false;  // Where(IsNaN(P), 0, P): rows masked everywhere give 0, not NaN
  // The sizes at the spec's shapes.
  int64_t batch = 0, heads = 0, seq_q = 0, seq_kv = 0, head_dim = 0;
  // The head dim cannot change at run time (every operand's layout fixes it).
  bool head_dim_fixed = false;
  std::string description;  // "attention 1x12x128x64 bf16, fused QKV, scale 0.125, mask", ...
};

// Ok with the plan when the spec is one attention pattern this analysis knows; otherwise why not.
Result<AttentionPlan> AnalyzeAttention(const SpecView& spec);

}  // namespace kfleet::agents

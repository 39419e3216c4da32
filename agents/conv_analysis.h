// What the Conv templates need to know about a "conv*" spec: which inputs are X, W and the bias,
// the window attributes (strides, dilations, pads or auto_pad, group) that stay fixed, and the
// fused epilogue as per-element C++ over the spec's other inputs. Sizes (batch, channels, kernel,
// spatial) are read at run time: the shape sweep changes them. conv_im2col and conv_direct render
// the pieces this file emits around their own main loops.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "agents/template_family.h"
#include "common/status.h"

namespace kfleet::agents {

// How an epilogue operand broadcasts to the [N, M, OH, OW] convolution result.
enum class ConvBroadcast {
  kScalar,        // one element
  kChannel,       // one value per output channel: the Conv's bias [M], [M,1,1], [1,M,1,1]
  kImageChannel,  // [N, M, 1, 1]: one value per image and channel (a squeeze-excite scale)
  kFull,          // [N, M, OH, OW]: one value per element (a residual)
};

struct ConvOperand {
  int input = -1;  // position in the spec's inputs (in<input>)
  ConvBroadcast broadcast = ConvBroadcast::kScalar;
};

// An epilogue cuDNN's fused convolution computes, y = relu?(conv + bias + residual): indices into
// ConvPlan::operands, -1 for a part the spec does not have.
struct ConvFusedForm {
  int bias = -1;      // the Conv's own bias, per channel
  int residual = -1;  // one Add of a full-size operand, after the bias
  bool relu = false;  // one Relu, last
};

struct ConvPlan {
  planner::DType dtype = planner::DType::kF32;  // of every input and the output
  int x_input = -1;                             // [N, C, H, W]
  int w_input = -1;                             // [M, C / group, KH, KW]
  int64_t group = 1;
  std::array<int64_t, 2> strides = {1, 1};
  std::array<int64_t, 2> dilations = {1, 1};
  std::array<int64_t, 4> pads = {0, 0, 0, 0};  // top, left, bottom, right (NOTSET only)
  std::string auto_pad = "NOTSET";             // or SAME_UPPER, SAME_LOWER, VALID
  // The profiled shapes, for Supports() decisions and explanations only.
  std::vector<int64_t> x_shape;
  std::vector<int64_t> w_shape;
  std::vector<int64_t> y_shape;  // the Conv's result [N, M, OH, OW]
  std::vector<int> input_ranks;
  int output_rank = 0;
  std::vector<ConvOperand> operands;  // the bias (when the Conv has one) comes first
  // Statements over `acc` (the convolution) and operands p<i>[j] (per element) or s<i> (one value
  // per output row), ending with the value in `result`; "acc" alone when there is no epilogue.
  std::vector<std::string> statements;
  std::string result = "acc";
  bool uses_exp = false;
  bool uses_tanh = false;
  bool uses_erf = false;
  // The epilogue bounds the output (Clip, Sigmoid, Tanh, ...): an output near zero may then come
  // from a large cancelling sum, and f32 accumulation can miss it by more than the tolerance.
  bool saturates = false;
  // Set when the whole epilogue (none included) is of the form cuDNN fuses.
  std::optional<ConvFusedForm> fused;

  bool depthwise() const { return w_shape.size() == 4 && w_shape[1] == 1 && group > 1; }
  bool pointwise() const { return w_shape.size() == 4 && w_shape[2] == 1 && w_shape[3] == 1; }
  bool has_epilogue() const { return !(statements.empty() && result == "acc"); }
};

struct ConvAnalysisOptions {
  // Accept f16 and bf16 specs besides f32 (every input and the output of one type); the CPU
  // templates compute in f32 only.
  bool half_types = false;
};

// Ok with the plan, or why the Conv templates cannot implement the spec.
Result<ConvPlan> AnalyzeConv(const SpecView& spec, ConvAnalysisOptions options = {});

// The window constants (kGroups, kStrideH, ...), `struct ConvArgs` with `element` pointers (x,
// wt, y and the epilogue operands op[]) and `static int ReadConvArgs(in, n_in, out, n_out,
// ConvArgs*)`, which checks every tensor is `kf_dtype` of the spec's rank and fills the sizes,
// the resolved pads and the pointers. Needs "kfleet/kernel.h" and <cstdint> included before.
std::string RenderConvArgs(const ConvPlan& plan, std::string_view element,
                           std::string_view kf_dtype);

// Includes, the math helpers the epilogue needs, RenderConvArgs over float, and
// `ApplyEpilogue(const ConvArgs&, image, channel, p0, p1)` on output positions [p0, p1) of one
// channel plane (a no-op when the plan has no epilogue).
std::string RenderConvPrelude(const ConvPlan& plan);

// The problem in a few words for explanations: "3x3 conv s2 group 32 + a 3-op epilogue".
std::string DescribeConv(const ConvPlan& plan);

}  // namespace kfleet::agents

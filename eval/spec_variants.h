// Other shapes of a kernel spec for the shape sweep: the profiled shape halved, doubled and made
// odd (127, 767, 3071...), so a kernel that only works on the profiled sizes or on powers of two
// is caught.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "planner/graph.h"

namespace kfleet::eval {

struct ShapeVariant {
  std::string label;  // "768->767", "all odd: 128->127 768->767"
  planner::Graph graph;
};

// A dimension size d of the spec's inputs is replaced by another size everywhere it occurs (every
// input dim equal to d, and d inside the integer shape constants, initializers or Constant nodes,
// of Reshape / Expand), and the
// spec is imported again: when shape inference accepts the result, it is a variant. Sizes 1 are
// never changed (they broadcast). Variants whose inputs and outputs together hold more than
// `max_elements_factor` times the profiled spec's elements are left out, and at most
// `max_variants` are returned: the all-odd variant first, then per size odd, half, double.
Result<std::vector<ShapeVariant>> MakeShapeVariants(std::string_view spec_onnx,
                                                    const planner::Graph& spec,
                                                    int max_variants = 8,
                                                    double max_elements_factor = 4.0);

}  // namespace kfleet::eval

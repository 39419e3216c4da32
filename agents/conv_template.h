// 2-D convolution (NCHW, f32) with a fused epilogue (bias, residual, activation): im2col per
// image and group followed by a GEMM, OpenBLAS or a register-tiled loop, with the epilogue
// applied to each block while it is in cache (conv_im2col), and direct loops for depthwise and
// 1x1 convolutions that need no im2col buffer at all (conv_direct).
#pragma once

#include <memory>

#include "agents/template_family.h"

namespace kfleet::agents {

std::unique_ptr<TemplateFamily> MakeConvIm2colTemplate();
std::unique_ptr<TemplateFamily> MakeConvDirectTemplate();

}  // namespace kfleet::agents

// GEMM / MatMul / batched MatMul with a fused epilogue (bias, activation, residual): an OpenBLAS
// call split over OpenMP threads with the epilogue applied to each block while it is in cache
// (gemm_blas), and a register-blocked micro-kernel with cache tiling (gemm_tiled).
#pragma once

#include <memory>

#include "agents/template_family.h"

namespace kfleet::agents {

std::unique_ptr<TemplateFamily> MakeGemmBlasTemplate();
std::unique_ptr<TemplateFamily> MakeGemmTiledTemplate();

}  // namespace kfleet::agents

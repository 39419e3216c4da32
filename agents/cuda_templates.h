// The template agent's CUDA families: each renders one .cu file under the kernel ABI
// (include/kfleet/kernel.h; device pointers, `stream` is the cudaStream_t to launch on), built by
// eval's nvcc toolchain for the target's arch. They reuse the CPU families' spec analyses
// (elementwise_codegen.h, rownorm_analysis.h, gemm_analysis.h), so a spec a CPU template reads
// is read the same way here.
#pragma once

#include <memory>

#include "agents/template_family.h"

namespace kfleet::agents {

// "cuda_elementwise": a fused elementwise chain, one pass (cuda_elementwise_template.cc).
std::unique_ptr<TemplateFamily> MakeCudaElementwiseTemplate();
// "cuda_rownorm": LayerNorm / RMSNorm / softmax / row reductions with their fused prologue and
// epilogue (cuda_rownorm_template.cc).
std::unique_ptr<TemplateFamily> MakeCudaRowNormTemplate();
// "cuda_gemm_lt": GEMM through cuBLASLt with the epilogue fused (cuda_gemm_template.cc).
std::unique_ptr<TemplateFamily> MakeCudaGemmLtTemplate();
// "cuda_conv_dnn": Conv through cuDNN with the epilogue fused, over NCHW or NHWC
// (cuda_conv_template.cc).
std::unique_ptr<TemplateFamily> MakeCudaConvDnnTemplate();
// "cuda_attention": softmax(Q K^T * scale + mask) V in one kernel (cuda_attention_template.cc).
std::unique_ptr<TemplateFamily> MakeCudaAttentionTemplate();

}  // namespace kfleet::agents

// The kernel search's tasks on the worker side, run inside the `kfleet-worker run-task` child:
//  - plan:    agents::ProposeCandidates over the spec's template families (PlanRequest).
//  - code:    renders one proposal into a source file (CodeRequest).
//  - test:    compile + the harness's correctness stages, sandboxed (EvalRequest, profile false).
//  - profile: a candidate (compile + smoke + timing), the whole model's baseline per node, or the
//             model with the winners swapped in (ProfileRequest union).
// Payloads and outputs are kernel.capnp messages (flat arrays). A kernel that fails is a normal
// output (a report with passed = false); an error Status means the task itself could not run
// (payload unreadable, spec invalid, harness missing, a GPU that no longer works) and fails the
// attempt.
//
// Requests name their backend ("cpu", "cuda"; empty = cpu): plan and code use its template
// families, the others run on the CPU or on GPU `KernelTaskContext::device`.
//
// Kind -> payload -> output:
//   "plan"    PlanRequest    -> PlanReply
//   "code"    CodeRequest    -> CodeReply
//   "test"    EvalRequest    -> EvalReply
//   "profile" ProfileRequest -> EvalReply (candidate), ModelProfileReply (model),
//                               VerifyReply (verify)
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>

#include "agents/template_family.h"
#include "common/status.h"
#include "common/subprocess.h"
#include "eval/report.h"
#include "messages/kernel.capnp.h"
#include "messages/payload.h"

namespace kfleet::worker {

bool IsKernelTaskKind(std::string_view kind);

struct KernelTaskContext {
  std::filesystem::path scratch_dir;  // a private directory for this attempt (verify builds here)
  int threads = 0;                    // kernels and baseline; 0 = every core
  int64_t timeout_ms = 0;             // the task's own limit; evaluations stay under it
  int device = 0;                     // the GPU index the worker assigned (CUDA tasks)
};

// Returns TaskResult.output bytes for `payload` of a task of `kind`.
Result<std::string> RunKernelTask(std::string_view kind, std::string_view payload,
                                  const KernelTaskContext& context);

// After a CUDA evaluation whose kernel lost the device context (the report says so), checks GPU
// `device` in a fresh process (`kfleet-harness --check-device`): Unavailable, saying the GPU is
// unusable, when that fails, so the coordinator retries the task elsewhere. Ok otherwise, and
// for any other report.
Status CheckGpuAfterEvaluation(const eval::EvalReport& report, int device,
                               ProcessRunner& runner = SystemProcessRunner());

// Param lists <-> the templates' parameter maps. Reading fails (InvalidArgument) on a name given
// twice, since a map would silently keep one of them. Writing fills `out`, which the caller
// sized: WriteParams(params, proposal.initParams(params.size())).
Result<agents::Params> ReadParams(capnp::List<msg::Param>::Reader params);
void WriteParams(const agents::Params& params, capnp::List<msg::Param>::Builder out);

}  // namespace kfleet::worker

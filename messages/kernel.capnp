# Kernel search payloads: specs, candidates and their test / profile reports. They travel inside
# Assign.payload and TaskResult.output and are stored as blobs.
@0x8e463feb0a294746;

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("kfleet::msg");

using Protocol = import "protocol.capnp";

# Element type of a tensor (same codes as the kernel ABI's kf_tensor.dtype).
enum DType {
  f32 @0;
  f16 @1;
  bf16 @2;
  f64 @3;
  i64 @4;
  i32 @5;
  i16 @6;
  i8 @7;
  u8 @8;
  boolean @9;
}

struct TensorDesc {
  name @0 :Text;          # graph value name
  dtype @1 :DType;
  shape @2 :List(Int64);  # concrete dimensions, outermost first
}

# An ONNX node attribute.
struct Attribute {
  name @0 :Text;
  union {
    int @1 :Int64;
    float @2 :Float64;
    text @3 :Text;
    ints @4 :List(Int64);
    floats @5 :List(Float64);
  }
}

# One operator of a kernel's subgraph.
struct OpNode {
  opType @0 :Text;               # ONNX op type: "MatMul", "Softmax"
  name @1 :Text;                 # node name in the model
  inputs @2 :List(Text);         # value names
  outputs @3 :List(Text);        # value names
  attributes @4 :List(Attribute);
}

# A self-contained subgraph with concrete shapes: the unit the search optimizes.
struct KernelSpec {
  name @0 :Text;                  # readable name ("layernorm_768")
  family @1 :Text;                # template family: "elementwise", "reduction", "matmul", ...
  ops @2 :List(OpNode);           # in topological order
  inputs @3 :List(TensorDesc);
  outputs @4 :List(TensorDesc);
  flops @5 :Float64;              # floating-point operations per call
  bytesMoved @6 :Float64;         # minimum bytes read + written per call
  count @7 :UInt32;               # occurrences in the model
  specHash @8 :Text;              # hex digest of the canonical spec; equal specs share a job
}

# One tunable parameter of a candidate ("tile_m" = "64").
struct Param {
  name @0 :Text;
  value @1 :Text;
}

# A kernel implementation proposed by an agent.
struct Candidate {
  id @0 :UInt64;
  kernelJobId @1 :UInt64;
  backend @2 :Protocol.Backend;
  source @3 :Text;            # source file implementing the kernel ABI
  plan @4 :Text;              # the strategy that explains the code, for people and later rounds
  params @5 :List(Param);
  parents @6 :List(UInt64);   # candidate ids this one was derived from
  island @7 :UInt32;          # search island it belongs to
  agent @8 :Text;             # "template", "llm:<model>"
}

# Correctness stages, in the order the harness runs them.
enum TestStage {
  compile @0;
  smoke @1;
  shapeSweep @2;
  stability @3;
  determinism @4;
}

struct TestFailure {
  stage @0 :TestStage;
  shape @1 :List(Int64);       # input shape that failed; empty when not shape-specific
  message @2 :Text;
  maxAbsError @3 :Float64;     # against the float64 reference
  maxRelError @4 :Float64;     # against the float64 reference
}

# Output of a test task.
struct TestReport {
  candidateId @0 :UInt64;
  passed @1 :Bool;
  lastStage @2 :TestStage;          # the last stage that ran
  failures @3 :List(TestFailure);
  compileLog @4 :Text;              # compiler output, fed back to the code agent on failure
}

# Output of a profile task; times are microseconds per call.
struct ProfileReport {
  candidateId @0 :UInt64;
  device @1 :Text;                # device name and arch it ran on
  medianUs @2 :Float64;
  minUs @3 :Float64;
  maxUs @4 :Float64;
  stddevUs @5 :Float64;
  reps @6 :UInt32;                # timed repetitions
  baselineMedianUs @7 :Float64;   # baseline timed in the same process
  speedup @8 :Float64;            # baselineMedianUs / medianUs
  solFraction @9 :Float64;        # speed-of-light time / medianUs, 0..1
  flagged @10 :Bool;              # speedup too good to be true; needs a second look
  note @11 :Text;                 # why it was flagged, or other remarks
}

# ---------------------------------------------------------------------------------------------
# Task payloads of the kernel search (Assign.payload in, TaskResult.output out). Reports that the
# harness already writes as JSON (eval/report.h EvalReport, eval/model_verify.h) travel as that
# JSON text: one definition of each report, readable in the store with sqlite3.

# What the search knows about one earlier candidate of the kernel job, for `plan`.
struct CandidateOutcome {
  id @0 :UInt64;
  island @1 :UInt32;
  template @2 :Text;          # template family that rendered it ("gemm_blas")
  params @3 :List(Param);
  state @4 :Text;             # "pending", "failed", "passed", "profiled"
  failedStage @5 :Text;       # when failed: "compile", "smoke", "shape_sweep", ... or "duplicate"
  speedup @6 :Float64;        # when profiled: baseline / candidate
  agent @7 :Text;             # "template" or "llm:<model>"
  plan @8 :Text;              # its sketch (llm) or how it was made (template)
  medianUs @9 :Float64;       # when profiled
  failure @10 :Text;          # when failed: the one-line reason
}

# What the LLM agent's prompts say about a kernel job besides its spec.
struct LlmBrief {
  kernelName @0 :Text;        # "gemm+gelu_tanh 128x768x3072 f32"
  baselineUs @1 :Float64;     # one occurrence, as the model runs it today
  solUs @2 :Float64;          # speed-of-light floor on the target
  target @3 :Text;            # the device in words, as the model profile measured it
}

# One request to a language model, reported with the task's output and stored in llm_calls.
struct LlmCallRecord {
  role @0 :Text;              # "designer", "coder"
  model @1 :Text;
  promptTokens @2 :Int64;
  completionTokens @3 :Int64;
  costUsd @4 :Float64;
  latencyMs @5 :Int64;
  ok @6 :Bool;                # an answer came back
  outcome @7 :Text;           # "ok", "replayed", "truncated", "no_code", "unavailable", ...
  error @8 :Text;
}

# Input of a `plan` task: propose `count` new parameter points for one island.
struct PlanRequest {
  specOnnx @0 :Data;          # the kernel job's standalone ONNX spec
  island @1 :UInt32;
  round @2 :UInt32;           # 0 = the first round of this island
  count @3 :UInt32;           # proposals wanted
  seed @4 :UInt64;            # with island and round, makes the proposals reproducible
  migrate @5 :Bool;           # this round may take elites of other islands as parents
  history @6 :List(CandidateOutcome);   # every candidate of the kernel job so far
  templates @7 :List(Text);   # only these template families; empty = every one that fits
  backend @8 :Text;          # "cpu" or "cuda": which template families; empty = cpu
  # The LLM agent (agent = "llm"): `count` sketches from the Designer instead of template points.
  agent @9 :Text;            # "template" (or empty) or "llm"
  llm @10 :Text;             # agents::LlmConfig as JSON (llm_config.h); never the key itself
  brief @11 :LlmBrief;
  advice @12 :Text;          # the Conductor's, when this redesigns a failed candidate
  redesignOf @13 :UInt64;    # that candidate (in history); 0 = none
  islands @14 :UInt32;       # islands of the search, for the Designer's prompt
}

# One proposed candidate.
struct Proposal {
  template @0 :Text;
  params @1 :List(Param);
  parents @2 :List(UInt64);   # candidate ids it was derived from
  note @3 :Text;              # how it was made ("mutated threads of #12"), for people
}

struct PlanReply {
  proposals @0 :List(Proposal);   # fewer than asked when the space is exhausted
  llmCalls @1 :List(LlmCallRecord);
}

# Input of a `code` task: render one proposal into a source file under the kernel ABI.
struct CodeRequest {
  specOnnx @0 :Data;
  template @1 :Text;
  params @2 :List(Param);
  backend @3 :Text;          # "cpu" or "cuda"; empty = cpu
  # The LLM agent (agent = "llm"): the Coder writes the file from the sketch.
  agent @4 :Text;            # "template" (or empty) or "llm"
  llm @5 :Text;              # agents::LlmConfig as JSON
  brief @6 :LlmBrief;
  sketch @7 :Text;           # the Designer's plan
  examples @8 :List(Text);   # 1-3 working kernels of the same family, best first
  previousSource @9 :Text;   # a retry: the file that failed
  feedback @10 :Text;        # a retry: the Conductor's advice and the evidence
}

struct CodeReply {
  source @0 :Text;
  explanation @1 :Text;   # the strategy in a line or two
  # The LLM agent: an answer without usable code is a reply, not a failed task.
  failedStage @2 :Text;   # "" (usable), "llm" (no answer), "extract" (no code), "static_check"
  failure @3 :Text;       # why, for the Conductor
  llmCalls @4 :List(LlmCallRecord);
}

# Input of a `test` task (correctness stages) and of a candidate `profile` (smoke + timing).
struct EvalRequest {
  specOnnx @0 :Data;
  source @1 :Text;
  candidateId @2 :UInt64;
  seed @3 :UInt64;
  solUs @4 :Float64;       # speed-of-light floor of the spec on the target; 0 = unknown
  profile @5 :Bool;        # false: compile + test stages; true: compile + smoke + profile
  backend @6 :Text;        # where the candidate runs: "cpu" or "cuda"; empty = cpu
}

struct EvalReply {
  passed @0 :Bool;
  reportJson @1 :Text;     # eval::EvalReport as JSON (eval/report.h ToJson)
}

# Input of a model `profile` task: the baseline of the whole model, per node.
struct ModelProfileRequest {
  model @0 :Data;          # ONNX bytes
  reps @1 :UInt32;         # timed runs; the median per node is reported
  seed @2 :UInt64;         # random inputs and weights
  backend @3 :Text;        # the baseline executor: "cpu" or "cuda"; empty = cpu
  dtype @4 :Text;          # import the model in this precision: "fp32", "fp16", "bf16"; empty = as exported
}

struct NodeTime {
  name @0 :Text;           # ONNX node name
  us @1 :Float64;          # median microseconds per run
}

struct ModelProfileReply {
  nodes @0 :List(NodeTime);
  totalUs @1 :Float64;           # median end-to-end time of one run
  device @2 :Text;               # "cpu: <model>, N cores"
  cpuModel @3 :Text;             # the worker's calibration, for the coordinator's cost model
  logicalCores @4 :UInt32;
  copyBytesPerS @5 :Float64;
  matmulFlopsPerS @6 :Float64;
}

# One winning kernel to swap into the model.
struct VerifyKernel {
  specHash @0 :Text;       # every fusion group of the model with this spec hash runs it
  name @1 :Text;           # kernel job name, for messages
  source @2 :Text;
  symbol @3 :Text;         # exported name in the combined library ("kf_k3_run")
}

# Input of a verify `profile` task: the model with the winners swapped in, against the baseline.
struct VerifyRequest {
  model @0 :Data;
  kernels @1 :List(VerifyKernel);
  reps @2 :UInt32;
  seed @3 :UInt64;
  backend @4 :Text;        # "cpu" or "cuda"; empty = cpu
  dtype @5 :Text;          # as ModelProfileRequest.dtype
}

struct VerifyReply {
  reportJson @0 :Text;     # eval::ModelVerifyReport as JSON (eval/model_verify.h)
  library @1 :Data;        # the shared library with every kept kernel (empty when none kept)
  header @2 :Text;         # its C header
}

# Assign.payload of a `profile` task: one of three timing jobs.
struct ProfileRequest {
  union {
    candidate @0 :EvalRequest;
    model @1 :ModelProfileRequest;
    verify @2 :VerifyRequest;
  }
}

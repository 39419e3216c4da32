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

# CLI <-> coordinator API. Each request gets its reply, or an ApiError, on the same socket.
@0xaafb91a6a2e55dab;

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("kfleet::msg");

using Protocol = import "protocol.capnp";
using Backend = Protocol.Backend;

# Sent instead of the reply when a request fails.
struct ApiError {
  code @0 :Text;      # stable machine-readable code: "not_found", "invalid_argument", ...
  message @1 :Text;   # what was wrong and what to do, for people
}

# Synthetic workload that exercises the fleet without a model (tests, demos).
struct EchoSpec {
  tasks @0 :UInt32;          # number of echo tasks
  delayMs @1 :UInt32;        # time each task sleeps
  failRate @2 :Float32;      # 0..1 chance a task reports failure
  crashRate @3 :Float32;     # 0..1 chance a task crashes its process
  hangRate @4 :Float32;      # 0..1 chance a task hangs until its timeout
  payloadBytes @5 :UInt32;   # size of each task's payload and output
  timeoutMs @6 :UInt32;      # wall-clock limit per attempt; 0 = delayMs + 30 s
  seed @7 :UInt64;           # makes the fail / crash / hang draws reproducible
}

# Starts a job.
struct SubmitRequest {
  name @0 :Text;          # label for listings; defaults to the model file name
  target @1 :Backend;
  budgetMs @2 :UInt64;    # search time budget for the whole job
  priority @3 :Float64;   # higher runs first among jobs
  union {
    model :group {
      fileName @4 :Text;  # the model's file name, for messages
      bytes @5 :Data;     # the ONNX file contents
    }
    echo @6 :EchoSpec;
  }
  top @7 :UInt32;         # model jobs: kernel jobs to search, best expected saving first; 0 = 5
  dtype @8 :Text;         # model jobs: run it in fp32, fp16 or bf16; empty = as exported
  agent @9 :Text;         # model jobs: "template" (default), "llm" or "hybrid"
  llm @10 :Text;          # agents::LlmConfig as JSON (llm_config.h), for llm / hybrid
  budgetUsd @11 :Float64; # model jobs: the most the LLM may cost; 0 = no limit
}

struct SubmitReply {
  jobId @0 :UInt64;
}

# Task counters of one job.
struct JobProgress {
  tasksTotal @0 :UInt32;
  tasksDone @1 :UInt32;
  tasksFailed @2 :UInt32;
  retries @3 :UInt32;   # attempts beyond the first, summed over tasks
}

# One line of `kfleet status`.
struct JobSummary {
  id @0 :UInt64;
  name @1 :Text;
  kind @2 :Text;        # "model", "echo"
  state @3 :Text;       # "queued", "running", "done", "failed", "cancelled"
  target @4 :Backend;
  progress @5 :JobProgress;
  createdUs @6 :Int64;  # microseconds since the Unix epoch
  updatedUs @7 :Int64;  # microseconds since the Unix epoch
  error @8 :Text;       # why the job failed, when it did
  phase @9 :Text;       # model jobs: "profiling", "searching", "verifying", "finished"
  agent @10 :Text;      # model jobs: "template", "llm", "hybrid"
  llm @11 :LlmUsage;    # what the LLM agent spent so far
}

# The language model's use by one job, from llm_calls.
struct LlmUsage {
  model @0 :Text;             # empty for the template agent
  calls @1 :UInt32;
  failedCalls @2 :UInt32;     # no answer came back
  promptTokens @3 :UInt64;
  completionTokens @4 :UInt64;
  costUsd @5 :Float64;
  budgetUsd @6 :Float64;      # 0 = no limit
}

struct StatusRequest {}

struct StatusReply {
  jobs @0 :List(JobSummary);
  coordinator @1 :CoordinatorCounters;
}

# Counters since kfleetd started, for operators (and tests) to see what it dropped.
struct CoordinatorCounters {
  workerMessages @0 :UInt64;     # messages received on the worker socket
  clientMessages @1 :UInt64;     # requests received on the client socket
  malformedDropped @2 :UInt64;   # messages that failed to decode or came from the wrong side
  versionMismatches @3 :UInt64;  # frames of another protocol version (answered with Reject)
  sendFailures @4 :UInt64;       # messages ZeroMQ would not take (peer gone, queue full)
  failedBatches @5 :UInt64;      # transactions that rolled back (store errors)
  nodesConnected @6 :UInt32;
  leases @7 :UInt32;             # task attempts currently leased
  startedUs @8 :Int64;           # microseconds since the Unix epoch
}

# Long poll for a job's events after afterEventId.
struct WatchRequest {
  jobId @0 :UInt64;
  afterEventId @1 :UInt64;   # 0 = from the start
  waitMs @2 :UInt32;         # how long the coordinator may hold the request when nothing is new
}

# One entry of a job's event log.
struct Event {
  id @0 :UInt64;      # increasing per coordinator; the watch cursor
  jobId @1 :UInt64;
  tsUs @2 :Int64;     # microseconds since the Unix epoch
  kind @3 :Text;      # "task.done", "kernel.best", ...
  data @4 :Text;      # event details as a JSON object
}

struct WatchReply {
  job @0 :JobSummary;
  events @1 :List(Event);   # empty when waitMs passed without news
}

# One line of `kfleet nodes`.
struct NodeInfo {
  name @0 :Text;
  state @1 :Text;                   # "online", "draining", "lost", "revoked"
  capabilities @2 :Protocol.Capabilities;
  slotsUsed @3 :Protocol.Slots;     # slots taken by running tasks
  lastHeartbeatUs @4 :Int64;        # microseconds since the Unix epoch
  address @5 :Text;                 # the node's hostname, as its worker reported it
}

struct NodesRequest {}

struct NodesReply {
  nodes @0 :List(NodeInfo);
}

enum NodeAction {
  drain @0;    # stop assigning new tasks
  remove @1;   # forget the node; it may register again
  revoke @2;   # forget the node and refuse its key
}

struct NodeActionRequest {
  action @0 :NodeAction;
  name @1 :Text;   # node name
}

struct NodeActionReply {
  message @0 :Text;   # what happened, for people
}

# Mints a key for a new node.
struct InviteRequest {
  name @0 :Text;   # node name to invite
}

struct InviteReply {
  command @0 :Text;     # the one command that joins the node
  keyPath @1 :Text;     # where the coordinator wrote the node's secret key
  publicKey @2 :Text;   # the node's CurveZMQ public key (Z85)
}

struct CancelRequest {
  jobId @0 :UInt64;
}

struct CancelReply {
  cancelledTasks @0 :UInt32;   # running or queued tasks that were cancelled
}

struct ShowRequest {
  jobId @0 :UInt64;
}

# One ranked row of `kfleet show`.
struct KernelJobSummary {
  id @0 :UInt64;
  name @1 :Text;
  count @2 :UInt32;               # how many times the kernel occurs in the model
  baselineUs @3 :Float64;         # baseline time of one occurrence, microseconds
  solUs @4 :Float64;              # speed-of-light (roofline) time, microseconds
  expectedSavingUs @5 :Float64;   # Amdahl ranking key, microseconds per model run
  bestUs @6 :Float64;             # best candidate's time, microseconds; 0 = none yet
  state @7 :Text;                 # "pending", "searching", "done", "failed"
  family @8 :Text;                # planner family ("gemm+gelu_tanh")
  share @9 :Float64;              # of the baseline model time, 0..1
  speedup @10 :Float64;           # best candidate's profiled speedup; 0 = none yet
  candidates @11 :UInt32;         # tried so far
  failedCandidates @12 :UInt32;   # rejected by compile or a test stage (duplicates included)
  note @13 :Text;                 # why the search stopped or never started
  template @14 :Text;             # the best candidate's template family
  verified @15 :Bool;             # kept by the end-to-end check
  budgetMs @16 :UInt64;           # task time the search may spend on it
  spentMs @17 :UInt64;            # task time spent so far
}

struct ShowReply {
  job @0 :JobSummary;
  kernels @1 :List(KernelJobSummary);   # ranked by expected saving
  attemptFailures @2 :List(Text);       # recent task failures, for diagnosis
  # Model jobs (0 / empty until known).
  device @3 :Text;                      # where the baseline was measured
  baselineModelUs @4 :Float64;          # whole model, baseline executor
  projectedSpeedup @5 :Float64;         # Amdahl, with each kernel's profiled speedup
  measuredSpeedup @6 :Float64;          # end-to-end check with the kept kernels swapped in
  verifyNote @7 :Text;
  budgetMs @8 :UInt64;                  # search wall time
  searchElapsedMs @9 :UInt64;
}

struct ExportRequest {
  jobId @0 :UInt64;
}

# One file of an export; the CLI writes it under the target directory.
struct ExportFile {
  path @0 :Text;   # relative path; the CLI refuses absolute paths and ".."
  data @1 :Data;
}

struct ExportReply {
  files @0 :List(ExportFile);
}

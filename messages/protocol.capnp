# Coordinator <-> worker protocol, and the message types named in every frame header.
# Evolve schemas the Cap'n Proto way: add fields and enumerants at the end, never renumber.
@0xcbd14273e5c2b375;

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("kfleet::msg");

# The type carried in every frame header (messages/framing.h), for both the worker and the API
# sockets. Ordinals are wire values: new types are appended only, never reordered or removed.
enum MessageType {
  # Worker protocol.
  register @0;        # worker -> coordinator: Register
  welcome @1;         # coordinator -> worker: Welcome
  reject @2;          # coordinator -> worker: Reject
  heartbeat @3;       # both ways: Heartbeat
  assign @4;          # coordinator -> worker: Assign
  progress @5;        # worker -> coordinator: Progress
  result @6;          # worker -> coordinator: TaskResult
  ack @7;             # coordinator -> worker: Ack
  cancel @8;          # coordinator -> worker: Cancel
  drain @9;           # coordinator -> worker: Drain
  bye @10;            # both ways: Bye
  # Client API (api.capnp).
  apiError @11;       # coordinator -> client, in place of any reply
  submitRequest @12;
  submitReply @13;
  statusRequest @14;
  statusReply @15;
  watchRequest @16;
  watchReply @17;
  nodesRequest @18;
  nodesReply @19;
  nodeActionRequest @20;
  nodeActionReply @21;
  inviteRequest @22;
  inviteReply @23;
  cancelRequest @24;
  cancelReply @25;
  showRequest @26;
  showReply @27;
  exportRequest @28;
  exportReply @29;
}

# Kind of compute device a worker offers and a task needs.
enum Backend {
  cpu @0;
  cuda @1;
  hip @2;
}

# One accelerator (or the CPU as a device) found by the worker's probe.
struct Device {
  backend @0 :Backend;
  index @1 :UInt32;          # ordinal in the backend's own enumeration (CUDA/HIP device id)
  name @2 :Text;             # vendor marketing name, for people
  arch @3 :Text;             # compiler target: "sm_90", "gfx90a", "x86-64-v3"
  memoryBytes @4 :UInt64;    # total device memory
  computeUnits @5 :UInt32;   # SMs (CUDA) or CUs (HIP) or cores (CPU)
  clockMhz @6 :UInt32;       # peak core clock, for the roofline model
  memoryClockMhz @7 :UInt32; # peak memory clock, for the roofline model
  driverVersion @8 :Text;    # driver / runtime version string as reported
}

# The host CPU, which runs compiles and CPU-backend kernels.
struct CpuInfo {
  model @0 :Text;             # /proc/cpuinfo model name
  cores @1 :UInt32;           # physical cores
  threads @2 :UInt32;         # hardware threads
  features @3 :List(Text);    # ISA extensions the kernels may use: "avx2", "avx512f", "neon"
  memoryBytes @4 :UInt64;     # host memory
}

# A compiler the worker can run, so the scheduler only sends code it can build.
struct Toolchain {
  name @0 :Text;     # "g++", "nvcc", "hipcc"
  version @1 :Text;  # as printed by `--version`
  path @2 :Text;     # absolute path on the worker
}

# How many tasks of each kind a worker runs at once.
struct Slots {
  cpu @0 :UInt32;           # CPU-bound tasks (plan, CPU tests)
  gpuExclusive @1 :UInt32;  # tasks that need a device to themselves (profile)
  compile @2 :UInt32;       # concurrent compiler processes
}

# Everything the scheduler needs to match tasks to a worker.
struct Capabilities {
  nodeName @0 :Text;        # name the node was invited under ("gpu-7")
  hostname @1 :Text;        # the machine's hostname, for people
  workerVersion @2 :Text;   # kfleet-worker version string
  cpu @3 :CpuInfo;
  gpus @4 :List(Device);
  toolchains @5 :List(Toolchain);
  slots @6 :Slots;
}

# Identifies one execution of a task; a retry has a higher attempt.
struct TaskRef {
  taskId @0 :UInt64;
  attempt @1 :UInt32;
}

# What a task needs from the worker that runs it.
struct Requirements {
  backend @0 :Backend;
  arch @1 :Text;               # device arch the code targets; empty = any
  exclusiveDevice @2 :Bool;    # true for timing runs that must own the device
  minMemoryBytes @3 :UInt64;   # device memory the task needs
}

# Worker -> coordinator, first message on every (re)connect.
struct Register {
  protocolVersion @0 :UInt16;        # the worker's kProtocolVersion, repeated for the log
  capabilities @1 :Capabilities;
  runningTasks @2 :List(TaskRef);    # tasks still running, so their leases survive a restart
  finishedTasks @3 :List(TaskRef);   # results kept on disk awaiting ack
  instanceId @4 :Text;               # random per worker process: a reconnect of the same process
                                     # replaces its session, another process of the name is refused
}

# Coordinator -> worker, accepts a Register.
struct Welcome {
  nodeId @0 :UInt64;               # the coordinator's id for this node
  heartbeatIntervalMs @1 :UInt32;  # how often each side sends Heartbeat
  liveness @2 :UInt32;             # missed intervals before the peer counts as lost
  coordinatorEpoch @3 :UInt64;     # changes on every coordinator start; lets a worker see restarts
}

# Why a Register was refused.
enum RejectReason {
  versionMismatch @0;
  unknownKey @1;
  duplicateName @2;
  revoked @3;
  removed @4;
  malformed @5;
}

# Coordinator -> worker, refuses a Register; the worker logs it and exits.
struct Reject {
  reason @0 :RejectReason;
  message @1 :Text;   # what the operator should do
}

# Both ways, every heartbeatIntervalMs; extends the leases of the listed tasks.
struct Heartbeat {
  sequence @0 :UInt64;              # increments per sender, to spot gaps in logs
  sentUs @1 :Int64;                 # sender's wall clock, microseconds since the Unix epoch
  runningTasks @2 :List(TaskRef);   # worker -> coordinator only
}

# Coordinator -> worker, leases one task attempt.
struct Assign {
  taskId @0 :UInt64;
  attempt @1 :UInt32;
  jobId @2 :UInt64;
  kind @3 :Text;                   # "echo", "plan", "code", "test", "profile"
  requirements @4 :Requirements;
  leaseMs @5 :UInt32;              # lease length; heartbeats extend it
  timeoutMs @6 :UInt32;            # wall-clock limit for the task itself
  payload @7 :Data;                # kind-specific input (a kernel.capnp message for kernel work)
}

# Worker -> coordinator, optional progress of a running task.
struct Progress {
  taskId @0 :UInt64;
  attempt @1 :UInt32;
  fraction @2 :Float32;   # 0..1
  message @3 :Text;       # short human-readable stage
}

# How a task attempt ended.
enum Outcome {
  ok @0;
  failed @1;      # the task reported an error
  crashed @2;     # the process died on a signal
  timedOut @3;    # killed at timeoutMs
  cancelled @4;   # killed on Cancel
}

# Worker -> coordinator, the end of a task attempt; kept on disk until Ack.
struct TaskResult {
  taskId @0 :UInt64;
  attempt @1 :UInt32;
  outcome @2 :Outcome;
  output @3 :Data;        # kind-specific output (a kernel.capnp message for kernel work)
  error @4 :Text;         # what went wrong, when outcome != ok
  startedUs @5 :Int64;    # wall clock, microseconds since the Unix epoch
  finishedUs @6 :Int64;   # wall clock, microseconds since the Unix epoch
  exitCode @7 :Int32;     # process exit status, when it exited
  signal @8 :Int32;       # terminating signal, when it crashed
}

# Coordinator -> worker, the result is stored; the worker may delete its copy.
struct Ack {
  taskId @0 :UInt64;
  attempt @1 :UInt32;
}

# Coordinator -> worker, stop a running attempt and report it as cancelled.
struct Cancel {
  taskId @0 :UInt64;
  attempt @1 :UInt32;
  reason @2 :Text;
}

# Coordinator -> worker, finish running tasks but take no new ones.
struct Drain {
  reason @0 :Text;
}

# Both ways, the sender is going away on purpose (not a failure).
struct Bye {
  reason @0 :Text;
}

# Payload of an `echo` task (diagnostics and benchmarks): the worker sleeps delayMs, then, by a
# draw seeded from (seed, taskId, attempt), fails, crashes, hangs or answers SHA-256(data) in hex.
struct EchoPayload {
  delayMs @0 :UInt32;
  failRate @1 :Float32;
  crashRate @2 :Float32;
  hangRate @3 :Float32;
  seed @4 :UInt64;
  data @5 :Data;
}

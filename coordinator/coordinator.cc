#include "coordinator/coordinator.h"

#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <optional>
#include <zmq.hpp>

#include "common/files.h"
#include "common/log.h"
#include "coordinator/api_service.h"
#include "coordinator/conductor.h"
#include "coordinator/key_store.h"
#include "coordinator/outbox.h"
#include "coordinator/scheduler.h"
#include "coordinator/zap_authenticator.h"
#include "messages/curve.h"
#include "messages/transport.h"
#include "storage/store.h"

namespace kfleet::coordinator {
namespace {

constexpr int kMaxWorkerMessagesPerTurn = 4096;
constexpr int kMaxClientMessagesPerTurn = 64;
constexpr uint64_t kLoggedMalformedFirst = 20;

// Invites and revokes through the key store, keeping the ZAP handler's view current.
class StoreBackedNodeKeys final : public NodeKeys {
 public:
  StoreBackedNodeKeys(KeyStore* keys, ZapAuthenticator* zap, std::string advertise)
      : keys_(keys), zap_(zap), advertise_(std::move(advertise)) {}

  Result<NodeInvitation> Invite(const std::string& name) override {
    KF_RETURN_IF_ERROR(RequireKeys());
    KF_ASSIGN_OR_RETURN(Invitation invitation, keys_->InviteWorker(name, advertise_));
    zap_->SetAuthorized(keys_->Snapshot());
    return NodeInvitation{
        "kfleet-worker --join " + advertise_ + " --key " + invitation.file.string(),
        invitation.file.string(), invitation.credentials.keys.public_key};
  }

  Status Revoke(const std::string& name) override {
    KF_RETURN_IF_ERROR(RequireKeys());
    KF_RETURN_IF_ERROR(keys_->RevokeWorker(name));
    zap_->SetAuthorized(keys_->Snapshot());
    return Status::Ok();
  }

 private:
  Status RequireKeys() const {
    if (keys_ != nullptr) return Status::Ok();
    return FailedPrecondition(
        "this coordinator runs with --insecure and uses no keys: start a worker with "
        "`kfleet-worker --join " +
        advertise_ + " --insecure --name NAME`");
  }

  KeyStore* keys_;
  ZapAuthenticator* zap_;
  std::string advertise_;
};

// `tcp://0.0.0.0:7600` is where kfleetd listens, not where a worker should connect.
std::string AdvertisedEndpoint(const CoordinatorOptions& options, const std::string& bound) {
  if (!options.advertise.empty()) return options.advertise;
  for (std::string_view wildcard : {"tcp://0.0.0.0:", "tcp://*:", "tcp://[::]:"}) {
    if (bound.starts_with(wildcard)) {
      char host[256] = {};
      if (gethostname(host, sizeof(host) - 1) != 0) return bound;
      return "tcp://" + std::string(host) + ":" + bound.substr(wildcard.size());
    }
  }
  return bound;
}

// The CLI finds the coordinator through this file: STATE/cli.yaml always, and
// ~/.config/kfleet/cli.yaml when the user has none yet.
Status WriteCliConfig(const std::filesystem::path& state_dir, const std::string& api_endpoint,
                      const std::string& credentials_path, bool write_user_config) {
  const std::string text =
      "# Written by kfleetd: how the kfleet CLI reaches this coordinator.\n"
      "coordinator: " +
      api_endpoint + "\n" + "credentials: \"" + credentials_path + "\"\n";
  KF_RETURN_IF_ERROR(WriteFileAtomic(state_dir / "cli.yaml", text, 0600));
  if (!write_user_config) return Status::Ok();
  const char* home = std::getenv("HOME");
  if (home == nullptr || *home == '\0') return Status::Ok();
  const std::filesystem::path user_config = std::filesystem::path(home) / ".config/kfleet/cli.yaml";
  std::error_code ec;
  if (std::filesystem::exists(user_config, ec)) return Status::Ok();
  KF_RETURN_IF_ERROR(MakeDirs(user_config.parent_path()));
  KF_RETURN_IF_ERROR(WriteFileAtomic(user_config, text, 0600));
  log::Info("coordinator.cli_config_written").Kv("path", user_config.string());
  return Status::Ok();
}

Result<std::string> BindRouter(zmq::socket_t& socket, const std::string& endpoint,
                               std::string_view what) {
  try {
    socket.bind(endpoint);
    return socket.get(zmq::sockopt::last_endpoint);
  } catch (const zmq::error_t& e) {
    return IoError("cannot listen for " + std::string(what) + " on " + endpoint + ": " + e.what() +
                   " (is another kfleetd running? choose another endpoint)");
  }
}

bool IsCallerError(ErrorCode code) {
  return code == ErrorCode::kInvalidArgument || code == ErrorCode::kNotFound ||
         code == ErrorCode::kAlreadyExists || code == ErrorCode::kFailedPrecondition ||
         code == ErrorCode::kPermissionDenied;
}

}  // namespace

struct Coordinator::State {
  State(const CoordinatorOptions& opts, Clock& clk, std::unique_ptr<storage::Store> st)
      : options(opts),
        clock(clk),
        store(std::move(st)),
        workers(context, zmq::socket_type::router),
        clients(context, zmq::socket_type::router),
        scheduler(*store, clock, outbox,
                  SchedulerOptions{opts.heartbeat_interval_ms, opts.liveness, opts.LeaseMs(),
                                   opts.RecoveryGraceMs(), opts.aging_ms, 512}),
        conductor(*store, scheduler, clock, opts.conductor) {
    scheduler.SetTaskEndObserver(&conductor);
  }

  Status Setup();
  Status HandleWorker(msg::PeerMessage& in);
  bool IsAuthorizedWorker(const std::string& name) const;
  void HandleClient(msg::PeerMessage& in);
  void NoteMalformed(const Status& error);
  void Flush();
  Status RunTurn();

  CoordinatorOptions options;
  Clock& clock;
  std::unique_ptr<storage::Store> store;
  std::optional<KeyStore> keys;
  // Declared before the sockets and the ZAP handler so it is destroyed after them.
  zmq::context_t context;
  std::unique_ptr<ZapAuthenticator> zap;
  zmq::socket_t workers;
  zmq::socket_t clients;
  Outbox outbox;
  Scheduler scheduler;
  Conductor conductor;
  std::unique_ptr<StoreBackedNodeKeys> node_keys;
  std::unique_ptr<ApiService> api;
  msg::DecodeLimits limits;
  std::string worker_endpoint;
  std::string api_endpoint;
  CoordinatorStats stats;
};

Status Coordinator::State::Setup() {
  limits.max_body_bytes = static_cast<size_t>(options.max_message_bytes);
  const bool secure = !options.insecure;
  if (secure) {
    KF_ASSIGN_OR_RETURN(KeyStore opened, KeyStore::Open(options.state_dir));
    keys.emplace(std::move(opened));
    // ZAP must answer before any CURVE socket binds: without a handler libzmq admits everyone.
    zap = std::make_unique<ZapAuthenticator>(context);
    zap->SetAuthorized(keys->Snapshot());
    KF_RETURN_IF_ERROR(zap->Start());
  }
  for (zmq::socket_t* socket : {&workers, &clients}) {
    KF_RETURN_IF_ERROR(msg::ConfigureSocket(*socket, limits));
    socket->set(zmq::sockopt::router_mandatory, 1);
    // A fleet reconnecting at once (after a restart) overflows ZeroMQ's default backlog of 100,
    // and each refused connection waits a TCP retry (1 s).
    socket->set(zmq::sockopt::backlog, 4096);
  }
  if (secure) {
    KF_RETURN_IF_ERROR(msg::UseCurveServer(workers, keys->ServerSecretKey(), kWorkersZapDomain));
    KF_RETURN_IF_ERROR(msg::UseCurveServer(clients, keys->ServerSecretKey(), kClientsZapDomain));
  }
  KF_ASSIGN_OR_RETURN(worker_endpoint, BindRouter(workers, options.listen, "workers"));
  KF_ASSIGN_OR_RETURN(api_endpoint, BindRouter(clients, options.api, "clients"));

  std::string credentials_path;
  if (secure) {
    KF_RETURN_IF_ERROR(keys->EnsureLocalClient(api_endpoint).status());
    zap->SetAuthorized(keys->Snapshot());  // admit the local CLI key made just now
    credentials_path = KeyStore::LocalClientFile(options.state_dir).string();
  }
  KF_RETURN_IF_ERROR(WriteCliConfig(options.state_dir, api_endpoint, credentials_path,
                                    options.write_user_cli_config));

  node_keys = std::make_unique<StoreBackedNodeKeys>(keys ? &*keys : nullptr, zap.get(),
                                                    AdvertisedEndpoint(options, worker_endpoint));
  stats.started_us = clock.NowUs();
  api = std::make_unique<ApiService>(*store, scheduler, conductor, outbox, *node_keys, clock, stats,
                                     ApiOptions{options.max_attempts, 30'000});
  return store->Batch([&]() -> Status {
    KF_RETURN_IF_ERROR(scheduler.Recover());
    return conductor.Recover();
  });
}

bool Coordinator::State::IsAuthorizedWorker(const std::string& name) const {
  const std::vector<std::string> names = keys->WorkerNames();
  return std::binary_search(names.begin(), names.end(), name);
}

void Coordinator::State::NoteMalformed(const Status& error) {
  ++stats.malformed_dropped;
  if (stats.malformed_dropped <= kLoggedMalformedFirst || stats.malformed_dropped % 1000 == 0) {
    log::Warn("coordinator.malformed_dropped")
        .Kv("count", static_cast<int64_t>(stats.malformed_dropped))
        .Kv("error", error.message());
  }
}

Status Coordinator::State::HandleWorker(msg::PeerMessage& in) {
  ++stats.worker_messages;
  if (!in.message.ok()) {
    NoteMalformed(in.message.status());
    if (in.version_mismatch) {
      ++stats.version_mismatches;
      msg::Reject::Builder reject = outbox.Add<msg::Reject>(Channel::kWorkers, in.routing_id);
      reject.setReason(msg::RejectReason::VERSION_MISMATCH);
      reject.setMessage(in.message.status().message());
    }
    return Status::Ok();
  }
  const msg::DecodedMessage& message = *in.message;
  scheduler.Heard(in.routing_id);
  switch (message.type()) {
    case msg::MessageType::REGISTER: {
      KF_ASSIGN_OR_RETURN(auto request, message.Root<msg::Register>());
      // A connection made before its key was revoked stays open (libzmq cannot close one peer),
      // so the key is checked again here, not only at the handshake.
      if (keys.has_value() && !IsAuthorizedWorker(in.user_id)) {
        msg::Reject::Builder reject = outbox.Add<msg::Reject>(Channel::kWorkers, in.routing_id);
        reject.setReason(msg::RejectReason::REVOKED);
        reject.setMessage("the key of '" + in.user_id + "' is no longer authorized");
        return Status::Ok();
      }
      return scheduler.OnRegister(in.routing_id, in.user_id, request);
    }
    case msg::MessageType::HEARTBEAT: {
      KF_ASSIGN_OR_RETURN(auto beat, message.Root<msg::Heartbeat>());
      return scheduler.OnHeartbeat(in.routing_id, beat);
    }
    case msg::MessageType::RESULT: {
      KF_ASSIGN_OR_RETURN(auto result, message.Root<msg::TaskResult>());
      return scheduler.OnResult(in.routing_id, result);
    }
    case msg::MessageType::BYE: {
      KF_ASSIGN_OR_RETURN(auto bye, message.Root<msg::Bye>());
      return scheduler.OnBye(in.routing_id, bye.getReason().cStr());
    }
    case msg::MessageType::PROGRESS:
      return Status::Ok();
    default:
      NoteMalformed(InvalidArgument(std::string(msg::MessageTypeName(message.type())) +
                                    " is not a message a worker sends"));
      return Status::Ok();
  }
}

void Coordinator::State::HandleClient(msg::PeerMessage& in) {
  ++stats.client_messages;
  if (!in.message.ok()) {
    NoteMalformed(in.message.status());
    api->ReplyError(in.routing_id, in.message.status());
    return;
  }
  const size_t mark = outbox.size();
  Status status = store->Batch([&] { return api->Handle(in.routing_id, *in.message); });
  if (status.ok()) return;
  outbox.Truncate(mark);
  api->ReplyError(in.routing_id, status);
  if (IsCallerError(status.code())) return;
  ++stats.failed_batches;
  log::Error("coordinator.request_failed").Kv("error", status);
  Status resynced = scheduler.Resync();
  if (resynced.ok()) resynced = store->Batch([&] { return conductor.Resync(); });
  if (!resynced.ok()) log::Error("coordinator.resync_failed").Kv("error", resynced);
}

void Coordinator::State::Flush() {
  for (OutgoingMessage& message : outbox.Take()) {
    zmq::socket_t& socket = message.channel == Channel::kWorkers ? workers : clients;
    Status sent = msg::Send(socket, message.type, *message.body, message.routing_id);
    if (!sent.ok()) {
      ++stats.send_failures;
      log::Debug("coordinator.send_failed").Kv("error", sent);
    }
  }
}

Status Coordinator::State::RunTurn() {
  Status status = store->Batch([&]() -> Status {
    for (int i = 0; i < kMaxWorkerMessagesPerTurn; ++i) {
      KF_ASSIGN_OR_RETURN(std::optional<msg::PeerMessage> in,
                          msg::ReceiveFromPeer(workers, limits));
      if (!in.has_value()) break;
      KF_RETURN_IF_ERROR(HandleWorker(*in));
    }
    KF_RETURN_IF_ERROR(scheduler.Tick());
    KF_RETURN_IF_ERROR(conductor.Advance());
    KF_RETURN_IF_ERROR(scheduler.Dispatch());
    return scheduler.SettleJobs();
  });
  if (!status.ok()) {
    if (status.code() == ErrorCode::kIoError) return status;  // the socket itself failed
    // Nothing of this turn happened: unacknowledged results will be sent again.
    ++stats.failed_batches;
    outbox.Clear();
    log::Error("coordinator.turn_failed").Kv("error", status);
    Status resynced = scheduler.Resync();
    if (resynced.ok()) resynced = store->Batch([&] { return conductor.Resync(); });
    if (!resynced.ok()) log::Error("coordinator.resync_failed").Kv("error", resynced);
  }
  Flush();

  for (int i = 0; i < kMaxClientMessagesPerTurn; ++i) {
    KF_ASSIGN_OR_RETURN(std::optional<msg::PeerMessage> in, msg::ReceiveFromPeer(clients, limits));
    if (!in.has_value()) break;
    HandleClient(*in);
    Flush();
  }
  if (api->has_watches()) {
    Status served = store->Batch([&] { return api->ServeWatches(); });
    if (!served.ok()) {
      outbox.Clear();
      log::Error("coordinator.watch_failed").Kv("error", served);
    }
    Flush();
  }
  return Status::Ok();
}

Result<std::unique_ptr<Coordinator>> Coordinator::Start(const CoordinatorOptions& given,
                                                        Clock& clock) {
  KF_RETURN_IF_ERROR(ValidateCoordinatorOptions(given));
  // Paths written into cli.yaml and credentials must work from any directory.
  CoordinatorOptions options = given;
  std::error_code ec;
  options.state_dir = std::filesystem::absolute(given.state_dir, ec);
  if (ec) return IoError("resolving " + given.state_dir.string() + ": " + ec.message());
  KF_RETURN_IF_ERROR(MakeDirs(options.state_dir, /*private_dir=*/true));
  storage::StoreOptions store_options;
  store_options.database.synchronous = options.synchronous;
  KF_ASSIGN_OR_RETURN(std::unique_ptr<storage::Store> store,
                      storage::Store::Open(options.state_dir, store_options, clock));
  auto state = std::make_unique<State>(options, clock, std::move(store));
  try {
    KF_RETURN_IF_ERROR(state->Setup());
  } catch (const zmq::error_t& e) {
    return IoError(std::string("setting up sockets: ") + e.what());
  }
  log::Info("coordinator.started")
      .Kv("state", options.state_dir.string())
      .Kv("workers", state->worker_endpoint)
      .Kv("clients", state->api_endpoint)
      .Kv("secure", !options.insecure);
  return std::unique_ptr<Coordinator>(new Coordinator(std::move(state)));
}

Coordinator::Coordinator(std::unique_ptr<State> state) : state_(std::move(state)) {}

Coordinator::~Coordinator() {
  if (state_ && state_->zap) state_->zap->Stop();
}

Status Coordinator::Run(const std::atomic<bool>& stop) {
  State& s = *state_;
  while (!stop.load()) {
    if (s.zap && !s.zap->healthy()) {
      return Internal("the ZAP authentication handler stopped; refusing to serve without it");
    }
    zmq::pollitem_t items[] = {{s.workers.handle(), 0, ZMQ_POLLIN, 0},
                               {s.clients.handle(), 0, ZMQ_POLLIN, 0}};
    int64_t timeout_ms = std::min<int64_t>(s.scheduler.NextTimerUs() / 1000 + 1, 100);
    if (s.api->has_watches()) timeout_ms = std::min<int64_t>(timeout_ms, 50);
    try {
      zmq::poll(items, 2, std::chrono::milliseconds(timeout_ms));
    } catch (const zmq::error_t& e) {
      if (e.num() != EINTR) return IoError(std::string("polling sockets: ") + e.what());
    }
    KF_RETURN_IF_ERROR(s.RunTurn());
  }
  log::Info("coordinator.stopped")
      .Kv("worker_messages", static_cast<int64_t>(s.stats.worker_messages))
      .Kv("client_messages", static_cast<int64_t>(s.stats.client_messages))
      .Kv("malformed_dropped", static_cast<int64_t>(s.stats.malformed_dropped))
      .Kv("send_failures", static_cast<int64_t>(s.stats.send_failures));
  return Status::Ok();
}

const std::string& Coordinator::worker_endpoint() const { return state_->worker_endpoint; }
const std::string& Coordinator::api_endpoint() const { return state_->api_endpoint; }
CoordinatorStats Coordinator::stats() const { return state_->stats; }

}  // namespace kfleet::coordinator

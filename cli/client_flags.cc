#include "cli/commands.h"
#include "cli/output.h"

namespace kfleet::cli {

std::shared_ptr<const ClientFlags> AddClientFlags(CLI::App& app) {
  auto flags = std::make_shared<ClientFlags>();
  app.add_option("--coordinator", flags->coordinator,
                 "kfleetd's API endpoint (default: from the CLI config, else " +
                     std::string(kDefaultCoordinator) + ")")
      ->type_name("ENDPOINT");
  app.add_option("--credentials", flags->credentials,
                 "CurveZMQ credential file for the coordinator (default: from the CLI config; "
                 "none means the coordinator runs with --insecure)")
      ->type_name("FILE");
  app.add_option("--cli-config", flags->cli_config,
                 "CLI config naming coordinator and credentials (default: $KFLEET_CLI_CONFIG, "
                 "else ~/.config/kfleet/cli.yaml, which kfleetd writes)")
      ->type_name("FILE");
  app.add_option("--timeout-ms", flags->timeout_ms,
                 "How long to wait for each answer from the coordinator")
      ->type_name("MS")
      ->check(CLI::Range(int64_t{1}, int64_t{3'600'000}))
      ->capture_default_str();
  return flags;
}

Client ConnectOrExit(const ClientFlags& flags) {
  Result<Connection> connection = ResolveConnection(flags, ClientEnvironment::FromProcess());
  ExitOnError(connection.status());
  Result<Client> client = Client::Open(*connection, flags.timeout_ms);
  ExitOnError(client.status());
  return std::move(client).value();
}

}  // namespace kfleet::cli

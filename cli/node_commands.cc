// `kfleet nodes ...`: the worker pool as the coordinator sees it, and the operator's actions on it.
#include <iostream>
#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "cli/format.h"
#include "cli/output.h"
#include "common/clock.h"

namespace kfleet::cli {
namespace {

std::string Text(capnp::Text::Reader text) { return std::string(text.cStr(), text.size()); }

void ListNodes(const ClientFlags& flags, bool as_json) {
  Client client = ConnectOrExit(flags);
  capnp::MallocMessageBuilder request;
  request.initRoot<msg::NodesRequest>();
  Result<Answer<msg::NodesReply>> reply = client.Call<msg::NodesRequest, msg::NodesReply>(request);
  ExitOnError(reply.status());
  auto nodes = reply->root.getNodes();

  if (as_json) {
    nlohmann::json out = nlohmann::json::array();
    for (msg::NodeInfo::Reader node : nodes) out.push_back(NodeJson(node));
    std::cout << nlohmann::json{{"nodes", std::move(out)}}.dump(2) << "\n";
    return;
  }
  if (nodes.size() == 0) {
    std::cout << "no nodes yet: add one with `kfleet nodes invite NAME`\n";
    return;
  }
  const int64_t now_us = SystemClock().NowUs();
  std::vector<std::vector<std::string>> rows = {
      {"name", "state", "devices", "cpu", "toolchains", "slots cpu gpu compile", "heartbeat"}};
  for (msg::NodeInfo::Reader node : nodes) {
    msg::Capabilities::Reader capabilities = node.getCapabilities();
    rows.push_back({Text(node.getName()), Text(node.getState()), DeviceSummary(capabilities),
                    CpuSummary(capabilities.getCpu()),
                    ToolchainSummary(capabilities.getToolchains()),
                    SlotsSummary(node.getSlotsUsed(), capabilities.getSlots()),
                    FormatAge(now_us, node.getLastHeartbeatUs())});
  }
  std::cout << FormatTable(rows);
}

void InviteNode(const ClientFlags& flags, const std::string& name, bool as_json) {
  Client client = ConnectOrExit(flags);
  capnp::MallocMessageBuilder request;
  request.initRoot<msg::InviteRequest>().setName(name);
  Result<Answer<msg::InviteReply>> reply =
      client.Call<msg::InviteRequest, msg::InviteReply>(request);
  ExitOnError(reply.status());
  const std::string command = Text(reply->root.getCommand());
  const std::string key_path = Text(reply->root.getKeyPath());
  const std::string public_key = Text(reply->root.getPublicKey());
  if (as_json) {
    std::cout << nlohmann::json{{"node", name},
                                {"command", command},
                                {"key_path", key_path},
                                {"public_key", public_key}}
                     .dump(2)
              << "\n";
    return;
  }
  const std::string key_dir = std::filesystem::path(key_path).parent_path().string();
  std::cout << "invited node " << name << ". Its key file is on the coordinator's machine:\n"
            << "  " << key_path << "\n"
            << "Copy it to the same path on " << name
            << " over a secure channel and keep it private, for example:\n"
            << "  ssh " << name << " mkdir -p " << key_dir << " && scp -p " << key_path << " "
            << name << ":" << key_dir << "/\n"
            << "then run on " << name << ":\n"
            << "  " << command << "\n"
            << "The key (public part " << public_key << ") lets its holder join as " << name
            << "; `kfleet nodes revoke " << name << "` withdraws it.\n";
}

void ActOnNode(const ClientFlags& flags, msg::NodeAction action, const std::string& name) {
  Client client = ConnectOrExit(flags);
  capnp::MallocMessageBuilder request;
  msg::NodeActionRequest::Builder body = request.initRoot<msg::NodeActionRequest>();
  body.setAction(action);
  body.setName(name);
  Result<Answer<msg::NodeActionReply>> reply =
      client.Call<msg::NodeActionRequest, msg::NodeActionReply>(request);
  ExitOnError(reply.status());
  std::cout << Text(reply->root.getMessage()) << "\n";
}

struct NodeFlags {
  bool json = false;
  bool invite_json = false;
  std::string name;
};

}  // namespace

void RegisterNodeCommands(CLI::App& app, std::shared_ptr<const ClientFlags> client_flags) {
  auto flags = std::make_shared<NodeFlags>();
  CLI::App* nodes = app.add_subcommand(
      "nodes", "List the worker nodes: devices, CPU, compilers, busy slots, last heartbeat");
  nodes->require_subcommand(0, 1);
  nodes->add_flag("--json", flags->json, "Print JSON instead of a table");
  nodes->callback([nodes, flags, client_flags] {
    // Also runs for `kfleet nodes invite ...`; the listing is for `kfleet nodes` alone.
    if (nodes->get_subcommands().empty()) ListNodes(*client_flags, flags->json);
  });

  CLI::App* invite = nodes->add_subcommand(
      "invite", "Mint a key for a new node and print the command that joins it");
  invite->add_option("name", flags->name, "Name of the new node, e.g. gpu-7")
      ->required()
      ->type_name("NAME");
  invite->add_flag("--json", flags->invite_json, "Print JSON instead of instructions");
  invite->callback(
      [flags, client_flags] { InviteNode(*client_flags, flags->name, flags->invite_json); });

  struct Action {
    const char* name;
    const char* help;
    msg::NodeAction action;
  };
  static constexpr Action kActions[] = {
      {"drain", "Let a node finish its tasks but give it no new ones", msg::NodeAction::DRAIN},
      {"remove", "Requeue a node's tasks and disconnect it; starting its worker re-adds it",
       msg::NodeAction::REMOVE},
      {"revoke", "Remove a node and refuse its key from now on", msg::NodeAction::REVOKE},
  };
  for (const Action& action : kActions) {
    CLI::App* command = nodes->add_subcommand(action.name, action.help);
    command->add_option("name", flags->name, "Node name, as `kfleet nodes` lists it")
        ->required()
        ->type_name("NAME");
    command->callback([flags, client_flags, verb = action.action] {
      ActOnNode(*client_flags, verb, flags->name);
    });
  }
}

}  // namespace kfleet::cli

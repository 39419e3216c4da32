// The template agent's search step (`plan`): given what a kernel job has tried so far, propose new
// parameter points for one island. Deterministic for a given request (the seed, island and round
// seed every draw), offline, and never proposes a (template, params) pair that history already
// holds or that it proposed earlier in the same reply.
//
// Island model: each island evolves its own population. Round 0 of an island starts from each
// fitting template's default parameters, then random points. Later rounds sample parents
// stratified from the island's profiled candidates (mostly from the top, some from the bottom,
// so a weak-but-different point keeps a chance), then mutate one or two parameters to a
// neighbouring value, cross two parents of the same template, or switch to another template that
// fits the spec. With `migrate`, the best candidates of other islands join the parent pool.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "agents/template_family.h"
#include "common/status.h"

namespace kfleet::agents {

enum class TriedState { kPending, kFailed, kPassed, kProfiled };

// One earlier candidate of the kernel job.
struct TriedCandidate {
  int64_t id = 0;
  int island = 0;
  std::string template_name;
  Params params;
  TriedState state = TriedState::kPending;
  std::string failed_stage;  // when kFailed: "compile", "smoke", ..., "duplicate"
  double speedup = 0;        // when kProfiled
};

struct ProposalRequest {
  int island = 0;
  int round = 0;
  int count = 4;
  uint64_t seed = 1;
  bool migrate = false;
  std::vector<TriedCandidate> history;
  std::vector<std::string> templates;  // empty: every family in `families` that supports the spec
};

struct Proposal {
  std::string template_name;
  Params params;
  std::vector<int64_t> parents;
  std::string note;  // "default parameters", "mutated threads 2->4 of #12", "crossed #3 x #7"
};

// FailedPrecondition when no family supports the spec (the message lists each family's reason).
// Fewer than request.count proposals when the spaces are exhausted.
Result<std::vector<Proposal>> ProposeCandidates(
    const SpecView& spec, const std::vector<std::unique_ptr<TemplateFamily>>& families,
    const ProposalRequest& request);

// Names of the families that support the spec, in `families` order; FailedPrecondition as above
// when none does.
Result<std::vector<std::string>> SupportingTemplates(
    const SpecView& spec, const std::vector<std::unique_ptr<TemplateFamily>>& families);

// A stable text key of (template, params): equal keys render the same source.
std::string CandidateKey(const std::string& template_name, const Params& params);

}  // namespace kfleet::agents

#include "agents/search.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "agents/gemm_template.h"
#include "common/files.h"
#include "tests/unit/agents/template_testing.h"

namespace kfleet::agents {
namespace {

using testing::Spec;
using testing::SpecFromText;

std::unique_ptr<Spec> SpecFromFile(const std::string& file) {
  const char* root = std::getenv("KFLEET_TEST_DATA");
  const std::string path = std::string(root != nullptr ? root : "tests/data") + "/specs/" + file;
  Result<std::string> text = ReadFile(path);
  EXPECT_TRUE(text.ok()) << text.status().ToString();
  return text.ok() ? SpecFromText(file, *text) : nullptr;
}

// A family with a fixed space that ignores the spec, so tests know every point.
class FakeFamily : public TemplateFamily {
 public:
  FakeFamily(std::string name, std::vector<ParamSpace> space, Status supports = Status::Ok())
      : name_(std::move(name)), space_(std::move(space)), supports_(std::move(supports)) {}

  std::string_view name() const override { return name_; }
  Status Supports(const SpecView&) const override { return supports_; }
  std::vector<ParamSpace> Space(const SpecView&) const override { return space_; }
  Result<RenderedKernel> Render(const SpecView&, const Params& params) const override {
    KF_RETURN_IF_ERROR(CheckParams(space_, params));
    return RenderedKernel{CandidateKey(name_, params), ""};
  }

 private:
  std::string name_;
  std::vector<ParamSpace> space_;
  Status supports_;
};

// "small": 3 x 2 points, "tiny": 2 points; 8 in all.
std::vector<std::unique_ptr<TemplateFamily>> SmallFamilies() {
  std::vector<std::unique_ptr<TemplateFamily>> families;
  families.push_back(std::make_unique<FakeFamily>(
      "small", std::vector<ParamSpace>{{"a", {"x", "y", "z"}}, {"b", {"1", "2"}}}));
  families.push_back(
      std::make_unique<FakeFamily>("tiny", std::vector<ParamSpace>{{"c", {"p", "q"}}}));
  return families;
}

// One family of 4^4 points with ordered values, so mutations can be measured.
std::vector<std::unique_ptr<TemplateFamily>> WideFamily() {
  std::vector<std::unique_ptr<TemplateFamily>> families;
  std::vector<ParamSpace> space;
  for (const char* name : {"p", "q", "r", "s"}) space.push_back({name, {"0", "1", "2", "3"}});
  families.push_back(std::make_unique<FakeFamily>("wide", space));
  return families;
}

size_t SpaceSize(const std::vector<ParamSpace>& space) {
  size_t points = 1;
  for (const ParamSpace& p : space) points *= p.values.size();
  return points;
}

const TemplateFamily& Family(const std::vector<std::unique_ptr<TemplateFamily>>& families,
                             const std::string& name) {
  for (const auto& family : families) {
    if (family->name() == name) return *family;
  }
  ADD_FAILURE() << "no family " << name;
  return *families.front();
}

TriedCandidate Tried(int64_t id, int island, std::string template_name, Params params,
                     TriedState state, double speedup = 0) {
  TriedCandidate c;
  c.id = id;
  c.island = island;
  c.template_name = std::move(template_name);
  c.params = std::move(params);
  c.state = state;
  c.speedup = speedup;
  if (state == TriedState::kFailed) c.failed_stage = "compile";
  return c;
}

Params WideParams(const std::string& digits) {
  return {{"p", digits.substr(0, 1)},
          {"q", digits.substr(1, 1)},
          {"r", digits.substr(2, 1)},
          {"s", digits.substr(3, 1)}};
}

std::vector<Proposal> Propose(const SpecView& spec,
                              const std::vector<std::unique_ptr<TemplateFamily>>& families,
                              const ProposalRequest& request) {
  Result<std::vector<Proposal>> proposals = ProposeCandidates(spec, families, request);
  EXPECT_TRUE(proposals.ok()) << proposals.status().ToString();
  return proposals.ok() ? *proposals : std::vector<Proposal>{};
}

void ExpectValid(const SpecView& spec, const std::vector<std::unique_ptr<TemplateFamily>>& families,
                 const std::vector<Proposal>& proposals) {
  for (const Proposal& p : proposals) {
    Status check = CheckParams(Family(families, p.template_name).Space(spec), p.params);
    EXPECT_TRUE(check.ok()) << CandidateKey(p.template_name, p.params) << ": " << check.ToString();
  }
}

// Runs rounds over islands 0..islands-1, feeding every proposal back as history (profiled,
// failed at compile, or passed, in turn), until a reply comes back empty. Returns every key.
std::vector<std::string> ExhaustSearch(const SpecView& spec,
                                       const std::vector<std::unique_ptr<TemplateFamily>>& families,
                                       int islands, int count, bool migrate) {
  ProposalRequest request;
  request.count = count;
  request.migrate = migrate;
  std::vector<std::string> keys;
  int64_t next_id = 1;
  for (int step = 0; step < 1000; ++step) {
    request.island = step % islands;
    request.round = step / islands;
    std::vector<Proposal> proposals = Propose(spec, families, request);
    ExpectValid(spec, families, proposals);
    if (proposals.empty()) break;
    for (const Proposal& p : proposals) {
      keys.push_back(CandidateKey(p.template_name, p.params));
      const int64_t id = next_id++;
      const TriedState state = id % 3 == 0   ? TriedState::kFailed
                               : id % 3 == 1 ? TriedState::kProfiled
                                             : TriedState::kPassed;
      request.history.push_back(Tried(id, request.island, p.template_name, p.params, state,
                                      static_cast<double>((id * 7) % 11)));
    }
  }
  return keys;
}

TEST(Search, CandidateKeyIsStable) {
  EXPECT_EQ(CandidateKey("gemm_blas", {{"threads", "2"}, {"split", "rows"}, {"epilogue", "fused"}}),
            "gemm_blas{epilogue=fused,split=rows,threads=2}");
  EXPECT_EQ(CandidateKey("plain", {}), "plain{}");
}

TEST(Search, RoundZeroStartsWithEachTemplatesDefaults) {
  auto spec = SpecFromFile("gemm_bias_gelu_128x768x3072.onnxtxt");
  ASSERT_NE(spec, nullptr);
  auto families = CpuTemplateFamilies();
  Result<std::vector<std::string>> supporting = SupportingTemplates(spec->view, families);
  ASSERT_TRUE(supporting.ok()) << supporting.status().ToString();
  ASSERT_EQ(*supporting, (std::vector<std::string>{"gemm_blas", "gemm_tiled"}));

  ProposalRequest request;
  request.count = 4;
  std::vector<Proposal> island0 = Propose(spec->view, families, request);
  ASSERT_EQ(island0.size(), 4u);
  ExpectValid(spec->view, families, island0);
  EXPECT_EQ(island0[0].template_name, "gemm_blas");
  EXPECT_EQ(island0[0].params, DefaultParams(Family(families, "gemm_blas").Space(spec->view)));
  EXPECT_EQ(island0[0].note, "default parameters of gemm_blas");
  EXPECT_TRUE(island0[0].parents.empty());
  EXPECT_EQ(island0[1].template_name, "gemm_tiled");
  EXPECT_EQ(island0[1].params, DefaultParams(Family(families, "gemm_tiled").Space(spec->view)));
  for (size_t i = 2; i < island0.size(); ++i) {
    EXPECT_EQ(island0[i].note.rfind("random point of ", 0), 0u) << island0[i].note;
  }

  request.island = 1;
  std::vector<Proposal> island1 = Propose(spec->view, families, request);
  ASSERT_GE(island1.size(), 2u);
  EXPECT_EQ(island1[0].note, "default parameters of gemm_tiled");
  EXPECT_EQ(island1[1].note, "default parameters of gemm_blas");
}

TEST(Search, SkipsDefaultsAlreadyInHistory) {
  auto spec = SpecFromFile("gemm_bias_gelu_128x768x3072.onnxtxt");
  ASSERT_NE(spec, nullptr);
  auto families = CpuTemplateFamilies();
  const Params blas_default = DefaultParams(Family(families, "gemm_blas").Space(spec->view));
  ProposalRequest request;
  request.count = 6;
  // Another island already tried it, and it failed: still not proposed again.
  request.history.push_back(Tried(1, 3, "gemm_blas", blas_default, TriedState::kFailed));
  std::vector<Proposal> proposals = Propose(spec->view, families, request);
  ASSERT_EQ(proposals.size(), 6u);
  EXPECT_EQ(proposals[0].note, "default parameters of gemm_tiled");
  for (const Proposal& p : proposals) {
    EXPECT_NE(CandidateKey(p.template_name, p.params), CandidateKey("gemm_blas", blas_default));
  }
}

TEST(Search, NeverRepeatsAndExhaustsASmallSpace) {
  auto families = SmallFamilies();
  const SpecView spec;
  for (bool migrate : {false, true}) {
    std::vector<std::string> keys = ExhaustSearch(spec, families, 3, 3, migrate);
    EXPECT_EQ(keys.size(), 8u);
    EXPECT_EQ(std::set<std::string>(keys.begin(), keys.end()).size(), keys.size());
  }
}

TEST(Search, ExhaustsTheRealGemmSpacesWithoutRepeats) {
  auto spec = SpecFromFile("gemm_bias_gelu_128x768x3072.onnxtxt");
  ASSERT_NE(spec, nullptr);
  auto families = CpuTemplateFamilies();
  const size_t points = SpaceSize(Family(families, "gemm_blas").Space(spec->view)) +
                        SpaceSize(Family(families, "gemm_tiled").Space(spec->view));
  std::vector<std::string> keys = ExhaustSearch(spec->view, families, 4, 8, true);
  EXPECT_EQ(keys.size(), points);
  EXPECT_EQ(std::set<std::string>(keys.begin(), keys.end()).size(), keys.size());
}

TEST(Search, ReturnsFewerWhenTheSpaceRunsOut) {
  auto families = SmallFamilies();
  const SpecView spec;
  ProposalRequest request;
  request.round = 2;
  request.count = 5;
  int64_t id = 1;
  for (const char* a : {"x", "y", "z"}) {
    for (const char* b : {"1", "2"}) {
      request.history.push_back(Tried(id, 0, "small", {{"a", a}, {"b", b}}, TriedState::kProfiled,
                                      static_cast<double>(id)));
      ++id;
    }
  }
  std::vector<Proposal> proposals = Propose(spec, families, request);
  ASSERT_EQ(proposals.size(), 2u);
  std::set<std::string> keys;
  for (const Proposal& p : proposals) keys.insert(CandidateKey(p.template_name, p.params));
  EXPECT_EQ(keys, (std::set<std::string>{"tiny{c=p}", "tiny{c=q}"}));
}

// History shared by the parent tests: island 0 has four profiled candidates and some that may
// not breed; islands 1 and 2 have their own.
std::vector<TriedCandidate> IslandHistory() {
  return {
      Tried(1, 0, "wide", WideParams("0000"), TriedState::kProfiled, 1.5),
      Tried(2, 0, "wide", WideParams("1111"), TriedState::kProfiled, 2.5),
      Tried(3, 0, "wide", WideParams("2222"), TriedState::kProfiled, 0.7),
      Tried(4, 0, "wide", WideParams("3333"), TriedState::kProfiled, 1.1),
      Tried(5, 0, "wide", WideParams("0123"), TriedState::kFailed),
      Tried(6, 0, "wide", WideParams("3210"), TriedState::kPassed),
      Tried(7, 0, "wide", WideParams("1212"), TriedState::kPending),
      Tried(10, 1, "wide", WideParams("3000"), TriedState::kProfiled, 9.0),
      Tried(11, 1, "wide", WideParams("0300"), TriedState::kProfiled, 8.0),
      Tried(12, 1, "wide", WideParams("0030"), TriedState::kProfiled, 0.1),
      Tried(20, 2, "wide", WideParams("0003"), TriedState::kProfiled, 3.0),
  };
}

// Parent id -> how often it was used, over many seeds.
std::map<int64_t, int> ParentUse(const std::vector<std::unique_ptr<TemplateFamily>>& families,
                                 ProposalRequest request, std::vector<Proposal>* all = nullptr) {
  std::map<int64_t, int> use;
  for (uint64_t seed = 1; seed <= 40; ++seed) {
    request.seed = seed;
    std::vector<Proposal> proposals = Propose(SpecView{}, families, request);
    EXPECT_EQ(proposals.size(), static_cast<size_t>(request.count));
    for (const Proposal& p : proposals) {
      for (int64_t id : p.parents) ++use[id];
    }
    if (all != nullptr) all->insert(all->end(), proposals.begin(), proposals.end());
  }
  return use;
}

TEST(Search, ParentsAreThisIslandsProfiledCandidates) {
  auto families = WideFamily();
  ProposalRequest request;
  request.round = 1;
  request.count = 6;
  request.history = IslandHistory();
  std::vector<Proposal> all;
  std::map<int64_t, int> use = ParentUse(families, request, &all);
  for (const auto& [id, n] : use) EXPECT_TRUE(id >= 1 && id <= 4) << "parent #" << id;
  EXPECT_EQ(use.size(), 4u);

  std::map<int64_t, Params> by_id;
  for (const TriedCandidate& c : request.history) by_id[c.id] = c.params;
  int mutated = 0, crossed = 0, neighbour_steps = 0, steps = 0;
  for (const Proposal& p : all) {
    if (p.note.rfind("mutated ", 0) == 0) {
      ++mutated;
      ASSERT_EQ(p.parents.size(), 1u);
      int changed = 0;
      for (const auto& [name, value] : p.params) {
        const std::string& before = by_id[p.parents[0]].at(name);
        if (value == before) continue;
        ++changed;
        ++steps;
        if (std::abs(std::stoi(value) - std::stoi(before)) == 1) ++neighbour_steps;
      }
      EXPECT_TRUE(changed == 1 || changed == 2) << p.note;
      EXPECT_NE(p.note.find(" of #" + std::to_string(p.parents[0])), std::string::npos);
    } else if (p.note.rfind("crossed ", 0) == 0) {
      ++crossed;
      ASSERT_EQ(p.parents.size(), 2u);
      for (const auto& [name, value] : p.params) {
        EXPECT_TRUE(value == by_id[p.parents[0]].at(name) || value == by_id[p.parents[1]].at(name))
            << p.note;
      }
    } else {
      EXPECT_TRUE(p.parents.empty()) << p.note;
    }
  }
  EXPECT_GT(mutated, 0);
  EXPECT_GT(crossed, 0);
  // Mostly one step along the value list; some jumps.
  EXPECT_GT(neighbour_steps * 10, steps * 7);
  EXPECT_LT(neighbour_steps, steps);
}

TEST(Search, ParentsComeMostlyFromTheTop) {
  auto families = WideFamily();
  ProposalRequest request;
  request.round = 1;
  request.count = 4;
  const char* points[] = {"0000", "1111", "2222", "3333", "0011", "1100", "2233", "3322"};
  for (int i = 0; i < 8; ++i) {
    request.history.push_back(
        Tried(i + 1, 0, "wide", WideParams(points[i]), TriedState::kProfiled, 10.0 - i));
  }
  std::map<int64_t, int> use = ParentUse(families, request);
  int top = 0, bottom = 0;
  for (const auto& [id, n] : use) (id <= 4 ? top : bottom) += n;
  EXPECT_GT(top, 2 * bottom);
  EXPECT_GT(bottom, 0);
}

TEST(Search, MigrationAddsOnlyOtherIslandsElites) {
  auto families = WideFamily();
  ProposalRequest request;
  request.round = 1;
  request.count = 6;
  request.history = IslandHistory();
  request.migrate = true;
  std::map<int64_t, int> use = ParentUse(families, request);
  const std::set<int64_t> allowed = {1, 2, 3, 4, 10, 11, 20};
  for (const auto& [id, n] : use) EXPECT_TRUE(allowed.count(id)) << "parent #" << id;
  EXPECT_TRUE(use.count(10) || use.count(11));
  EXPECT_TRUE(use.count(20));

  // An island with nothing profiled evolves from the migrants alone: two per island.
  request.island = 3;
  use = ParentUse(families, request);
  EXPECT_FALSE(use.empty());
  const std::set<int64_t> migrants = {1, 2, 10, 11, 20};
  for (const auto& [id, n] : use) EXPECT_TRUE(migrants.count(id)) << "parent #" << id;
  request.migrate = false;
  EXPECT_TRUE(ParentUse(families, request).empty());
}

TEST(Search, SwitchesToAnotherTemplate) {
  auto families = SmallFamilies();
  ProposalRequest request;
  request.round = 1;
  request.count = 2;
  request.history.push_back(
      Tried(1, 0, "small", {{"a", "x"}, {"b", "1"}}, TriedState::kProfiled, 1.0));
  int switched = 0;
  for (uint64_t seed = 1; seed <= 40; ++seed) {
    request.seed = seed;
    for (const Proposal& p : Propose(SpecView{}, families, request)) {
      if (p.note.rfind("switched to ", 0) != 0) continue;
      ++switched;
      EXPECT_EQ(p.template_name, "tiny");
      EXPECT_TRUE(p.parents.empty());
    }
  }
  EXPECT_GT(switched, 0);
}

TEST(Search, IsDeterministic) {
  auto families = WideFamily();
  ProposalRequest request;
  request.round = 3;
  request.count = 8;
  request.migrate = true;
  request.history = IslandHistory();
  auto render = [](const std::vector<Proposal>& proposals) {
    std::string text;
    for (const Proposal& p : proposals) {
      text += CandidateKey(p.template_name, p.params) + " " + p.note + ";";
      for (int64_t id : p.parents) text += std::to_string(id) + ",";
      text += "\n";
    }
    return text;
  };
  const std::string first = render(Propose(SpecView{}, families, request));
  EXPECT_EQ(render(Propose(SpecView{}, families, request)), first);
  request.seed = 2;
  EXPECT_NE(render(Propose(SpecView{}, families, request)), first);
  request.seed = 1;
  request.round = 4;
  EXPECT_NE(render(Propose(SpecView{}, families, request)), first);
}

TEST(Search, ExplicitTemplatesRestrictTheSearch) {
  auto spec = SpecFromFile("gemm_bias_gelu_128x768x3072.onnxtxt");
  ASSERT_NE(spec, nullptr);
  auto families = CpuTemplateFamilies();
  ProposalRequest request;
  request.count = 5;
  request.templates = {"gemm_tiled"};
  std::vector<Proposal> proposals = Propose(spec->view, families, request);
  ASSERT_EQ(proposals.size(), 5u);
  EXPECT_EQ(proposals[0].note, "default parameters of gemm_tiled");
  for (const Proposal& p : proposals) EXPECT_EQ(p.template_name, "gemm_tiled");

  request.templates = {"gemm_tiled", "rownorm"};
  Result<std::vector<Proposal>> unsupported = ProposeCandidates(spec->view, families, request);
  ASSERT_FALSE(unsupported.ok());
  EXPECT_EQ(unsupported.status().code(), ErrorCode::kFailedPrecondition);
  EXPECT_NE(unsupported.status().message().find("template 'rownorm' does not support"),
            std::string::npos)
      << unsupported.status().ToString();

  request.templates = {"gemm_cuda"};
  Result<std::vector<Proposal>> unknown = ProposeCandidates(spec->view, families, request);
  ASSERT_FALSE(unknown.ok());
  EXPECT_EQ(unknown.status().code(), ErrorCode::kInvalidArgument);
  EXPECT_NE(unknown.status().message().find("unknown template 'gemm_cuda'"), std::string::npos)
      << unknown.status().ToString();
}

TEST(Search, UnsupportedSpecIsFailedPrecondition) {
  auto spec = SpecFromFile("layernorm_128x1024.onnxtxt");
  ASSERT_NE(spec, nullptr);
  std::vector<std::unique_ptr<TemplateFamily>> families;
  families.push_back(MakeGemmBlasTemplate());
  families.push_back(MakeGemmTiledTemplate());
  families.push_back(std::make_unique<FakeFamily>("picky", std::vector<ParamSpace>{},
                                                  InvalidArgument("wants a convolution")));
  Result<std::vector<Proposal>> proposals = ProposeCandidates(spec->view, families, {});
  ASSERT_FALSE(proposals.ok());
  EXPECT_EQ(proposals.status().code(), ErrorCode::kFailedPrecondition);
  const std::string& message = proposals.status().message();
  EXPECT_NE(message.find("gemm_blas: "), std::string::npos) << message;
  EXPECT_NE(message.find("gemm_tiled: "), std::string::npos) << message;
  EXPECT_NE(message.find("picky: wants a convolution"), std::string::npos) << message;

  Result<std::vector<std::string>> supporting = SupportingTemplates(spec->view, families);
  ASSERT_FALSE(supporting.ok());
  EXPECT_EQ(supporting.status(), proposals.status());
}

}  // namespace
}  // namespace kfleet::agents

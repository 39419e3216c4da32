#include "agents/search.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>
#include <map>
#include <set>
#include <utility>

namespace kfleet::agents {
namespace {

// Operator odds in later rounds; mutation takes the rest.
constexpr double kSwitchProbability = 0.15;
constexpr double kCrossoverProbability = 0.25;
// Share of parents drawn from the better half of the pool; the rest keep weak-but-different
// points alive.
constexpr double kTopParentShare = 0.75;
// A mutation that jumps to any value lets a parameter leave a local optimum.
constexpr double kRandomJumpProbability = 0.2;
constexpr double kTwoParamMutationProbability = 0.5;
// Every other island's best profiled candidates that join the pool with `migrate`.
constexpr size_t kMigrantsPerIsland = 2;
// Spaces up to this many points are walked point by point once random draws stop finding new
// ones, so a small space is proposed to its last point; larger ones rarely run dry.
constexpr uint64_t kEnumerationLimit = uint64_t{1} << 14;

// splitmix64: tiny, fast, and the same on every platform (std:: distributions are not).
class Rng {
 public:
  explicit Rng(uint64_t seed) : state_(seed) {}

  uint64_t Next() {
    state_ += 0x9E3779B97F4A7C15ULL;
    uint64_t z = state_;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
  }
  // Uniform in [0, n) for n > 0; the modulo bias is negligible for the small n used here.
  size_t Below(size_t n) { return static_cast<size_t>(Next() % n); }
  bool Chance(double p) { return static_cast<double>(Next() >> 11) * 0x1.0p-53 < p; }

 private:
  uint64_t state_;
};

uint64_t Mix(uint64_t x) { return Rng(x).Next(); }

uint64_t StreamSeed(uint64_t seed, int island, int round) {
  uint64_t s = Mix(seed);
  s = Mix(s ^ static_cast<uint64_t>(static_cast<uint32_t>(island)));
  return Mix(s ^ static_cast<uint64_t>(static_cast<uint32_t>(round)));
}

// A candidate family with its space for this spec.
struct FamilySpace {
  std::string name;
  std::vector<ParamSpace> space;
  uint64_t points = 0;  // distinct parameter points, kEnumerationLimit + 1 when larger
};

FamilySpace MakeFamilySpace(const TemplateFamily& family, const SpecView& spec) {
  FamilySpace f;
  f.name = std::string(family.name());
  f.space = family.Space(spec);
  f.points = 1;
  for (const ParamSpace& p : f.space) {
    f.points = std::min<uint64_t>(f.points * p.values.size(), kEnumerationLimit + 1);
  }
  return f;
}

// NaN ranks last so the sort stays a strict weak order.
double Score(const TriedCandidate& c) {
  return std::isnan(c.speedup) ? -std::numeric_limits<double>::infinity() : c.speedup;
}

struct Parent {
  const TriedCandidate* tried = nullptr;
  size_t family = 0;  // index into the candidate families
};

// Best first; the id breaks ties so the order does not depend on the history's order.
void SortByRank(std::vector<Parent>& parents) {
  std::sort(parents.begin(), parents.end(), [](const Parent& a, const Parent& b) {
    if (Score(*a.tried) != Score(*b.tried)) return Score(*a.tried) > Score(*b.tried);
    return a.tried->id < b.tried->id;
  });
}

Result<std::vector<const TemplateFamily*>> SupportingFamilies(
    const SpecView& spec, const std::vector<std::unique_ptr<TemplateFamily>>& families) {
  std::vector<const TemplateFamily*> supporting;
  std::vector<std::string> reasons;
  for (const auto& family : families) {
    if (family == nullptr) continue;
    Status supports = family->Supports(spec);
    if (supports.ok()) {
      supporting.push_back(family.get());
    } else {
      reasons.push_back(fmt::format("{}: {}", family->name(), supports.message()));
    }
  }
  if (supporting.empty()) {
    if (reasons.empty()) reasons.push_back("no templates were given");
    return FailedPrecondition(fmt::format("no template supports this '{}' spec: {}", spec.family,
                                          fmt::join(reasons, "; ")));
  }
  return supporting;
}

Result<std::vector<FamilySpace>> CandidateFamilies(
    const SpecView& spec, const std::vector<std::unique_ptr<TemplateFamily>>& families,
    const std::vector<std::string>& requested) {
  std::vector<FamilySpace> out;
  if (requested.empty()) {
    KF_ASSIGN_OR_RETURN(std::vector<const TemplateFamily*> supporting,
                        SupportingFamilies(spec, families));
    for (const TemplateFamily* family : supporting) out.push_back(MakeFamilySpace(*family, spec));
    return out;
  }
  std::set<std::string> taken;
  for (const std::string& name : requested) {
    if (!taken.insert(name).second) continue;
    auto it = std::find_if(families.begin(), families.end(), [&](const auto& family) {
      return family != nullptr && family->name() == name;
    });
    if (it == families.end()) {
      std::vector<std::string> known;
      for (const auto& family : families) {
        if (family != nullptr) known.emplace_back(family->name());
      }
      return InvalidArgument(
          fmt::format("unknown template '{}' (known: {})", name, fmt::join(known, ", ")));
    }
    Status supports = (*it)->Supports(spec);
    if (!supports.ok()) {
      return FailedPrecondition(fmt::format("template '{}' does not support this '{}' spec: {}",
                                            name, spec.family, supports.message()));
    }
    out.push_back(MakeFamilySpace(**it, spec));
  }
  return out;
}

// One reply for one island: the proposals so far and every key they may not repeat.
class IslandSearch {
 public:
  IslandSearch(const ProposalRequest& request, std::vector<FamilySpace> families)
      : request_(request),
        families_(std::move(families)),
        rng_(StreamSeed(request.seed, request.island, request.round)) {
    for (const TriedCandidate& tried : request.history) {
      seen_.insert(CandidateKey(tried.template_name, tried.params));
    }
  }

  std::vector<Proposal> Run() {
    std::vector<Parent> pool = ParentPool();
    if (request_.round == 0 || pool.empty()) {
      ProposeDefaults();
    } else {
      Evolve(pool);
    }
    ProposeRandom();
    ProposeUntried();
    return std::move(proposals_);
  }

 private:
  bool Full() const { return proposals_.size() >= static_cast<size_t>(request_.count); }

  bool Offer(size_t family, Params params, std::vector<int64_t> parents, std::string note) {
    const FamilySpace& f = families_[family];
    if (!CheckParams(f.space, params).ok()) return false;
    if (!seen_.insert(CandidateKey(f.name, params)).second) return false;
    proposals_.push_back({f.name, std::move(params), std::move(parents), std::move(note)});
    return true;
  }

  // This island's profiled candidates (plus the other islands' best with `migrate`) whose
  // template is a candidate and whose params still fit its space; failed ones never breed.
  std::vector<Parent> ParentPool() const {
    std::map<int, std::vector<Parent>> by_island;
    for (const TriedCandidate& tried : request_.history) {
      if (tried.state != TriedState::kProfiled) continue;
      if (tried.island != request_.island && !request_.migrate) continue;
      for (size_t f = 0; f < families_.size(); ++f) {
        if (families_[f].name != tried.template_name) continue;
        if (CheckParams(families_[f].space, tried.params).ok()) {
          by_island[tried.island].push_back({&tried, f});
        }
        break;
      }
    }
    std::vector<Parent> pool;
    for (auto& [island, parents] : by_island) {
      SortByRank(parents);
      if (island != request_.island && parents.size() > kMigrantsPerIsland) {
        parents.resize(kMigrantsPerIsland);
      }
      pool.insert(pool.end(), parents.begin(), parents.end());
    }
    SortByRank(pool);
    return pool;
  }

  // Island i starts with family i mod n, so concurrent islands with a small count seed
  // different families first.
  void ProposeDefaults() {
    const size_t n = families_.size();
    for (size_t k = 0; k < n && !Full(); ++k) {
      const size_t f = (static_cast<size_t>(request_.island) + k) % n;
      Offer(f, DefaultParams(families_[f].space), {},
            fmt::format("default parameters of {}", families_[f].name));
    }
  }

  void Evolve(const std::vector<Parent>& pool) {
    const size_t max_attempts = 16 * static_cast<size_t>(request_.count) + 32;
    for (size_t attempt = 0; attempt < max_attempts && !Full(); ++attempt) {
      const Parent& parent = pool[PickRank(pool.size())];
      if (families_.size() > 1 && rng_.Chance(kSwitchProbability)) {
        Switch(parent.family);
        continue;
      }
      if (rng_.Chance(kCrossoverProbability) && Cross(parent, pool)) continue;
      Mutate(parent);
    }
  }

  // An index into n > 0 ranked parents: mostly from the better half, sometimes from the worse.
  size_t PickRank(size_t n) {
    const size_t top = (n + 1) / 2;
    if (top == n || rng_.Chance(kTopParentShare)) return rng_.Below(top);
    return top + rng_.Below(n - top);
  }

  void Mutate(const Parent& parent) {
    const FamilySpace& f = families_[parent.family];
    std::vector<size_t> mutable_params;
    for (size_t i = 0; i < f.space.size(); ++i) {
      if (f.space[i].values.size() >= 2) mutable_params.push_back(i);
    }
    if (mutable_params.empty()) return;
    const size_t changes =
        mutable_params.size() >= 2 && rng_.Chance(kTwoParamMutationProbability) ? 2 : 1;
    Params params = parent.tried->params;
    std::vector<std::string> described;
    for (size_t c = 0; c < changes; ++c) {
      const size_t pick = rng_.Below(mutable_params.size());
      const ParamSpace& p = f.space[mutable_params[pick]];
      mutable_params.erase(mutable_params.begin() + static_cast<std::ptrdiff_t>(pick));
      std::string& value = params[p.name];
      const size_t size = p.values.size();
      const size_t from = static_cast<size_t>(std::find(p.values.begin(), p.values.end(), value) -
                                              p.values.begin());
      size_t to;
      if (rng_.Chance(kRandomJumpProbability)) {
        to = rng_.Below(size - 1);
        if (to >= from) ++to;
      } else if (from == 0) {
        to = 1;
      } else if (from + 1 == size) {
        to = from - 1;
      } else {
        to = rng_.Chance(0.5) ? from - 1 : from + 1;
      }
      described.push_back(fmt::format("{} {}->{}", p.name, value, p.values[to]));
      value = p.values[to];
    }
    const int64_t id = parent.tried->id;
    Offer(parent.family, std::move(params), {id},
          fmt::format("mutated {} of #{}", fmt::join(described, ", "), id));
  }

  // False when the pool holds no other parent of the same template.
  bool Cross(const Parent& a, const std::vector<Parent>& pool) {
    std::vector<const Parent*> mates;
    for (const Parent& p : pool) {
      if (p.family == a.family && p.tried != a.tried) mates.push_back(&p);
    }
    if (mates.empty()) return false;
    const Parent& b = *mates[PickRank(mates.size())];
    Params params;
    for (const ParamSpace& p : families_[a.family].space) {
      params[p.name] = (rng_.Chance(0.5) ? a : b).tried->params.at(p.name);
    }
    Offer(a.family, std::move(params), {a.tried->id, b.tried->id},
          fmt::format("crossed #{} x #{}", a.tried->id, b.tried->id));
    return true;
  }

  void Switch(size_t from) {
    size_t to = rng_.Below(families_.size() - 1);
    if (to >= from) ++to;
    const FamilySpace& f = families_[to];
    if (Offer(to, DefaultParams(f.space), {},
              fmt::format("switched to {} (default parameters)", f.name))) {
      return;
    }
    Offer(to, RandomParams(f), {}, fmt::format("switched to {} (random)", f.name));
  }

  Params RandomParams(const FamilySpace& f) {
    Params params;
    for (const ParamSpace& p : f.space) {
      if (!p.values.empty()) params[p.name] = p.values[rng_.Below(p.values.size())];
    }
    return params;
  }

  void ProposeRandom() {
    const size_t max_attempts = 8 * static_cast<size_t>(request_.count) + 64;
    for (size_t attempt = 0; attempt < max_attempts && !Full(); ++attempt) {
      const size_t f = rng_.Below(families_.size());
      if (families_[f].points == 0) continue;
      Offer(f, RandomParams(families_[f]), {},
            fmt::format("random point of {}", families_[f].name));
    }
  }

  // Walks each small space from a random point; only reached when random draws keep repeating,
  // i.e. when the spaces are nearly exhausted.
  void ProposeUntried() {
    const size_t n = families_.size();
    const size_t first = Full() ? 0 : rng_.Below(n);
    for (size_t k = 0; k < n && !Full(); ++k) {
      const size_t f = (first + k) % n;
      const uint64_t points = families_[f].points;
      if (points == 0 || points > kEnumerationLimit) continue;
      const uint64_t start = rng_.Next() % points;
      for (uint64_t i = 0; i < points && !Full(); ++i) {
        Offer(f, PointAt(families_[f], (start + i) % points), {},
              fmt::format("untried point of {}", families_[f].name));
      }
    }
  }

  // The index-th point of the space in mixed radix, the last parameter varying fastest.
  static Params PointAt(const FamilySpace& f, uint64_t index) {
    Params params;
    for (auto p = f.space.rbegin(); p != f.space.rend(); ++p) {
      params[p->name] = p->values[index % p->values.size()];
      index /= p->values.size();
    }
    return params;
  }

  const ProposalRequest& request_;
  const std::vector<FamilySpace> families_;
  Rng rng_;
  std::set<std::string> seen_;
  std::vector<Proposal> proposals_;
};

}  // namespace

Result<std::vector<Proposal>> ProposeCandidates(
    const SpecView& spec, const std::vector<std::unique_ptr<TemplateFamily>>& families,
    const ProposalRequest& request) {
  if (request.island < 0) {
    return InvalidArgument(fmt::format("island must be >= 0, got {}", request.island));
  }
  if (request.count < 0) {
    return InvalidArgument(fmt::format("count must be >= 0, got {}", request.count));
  }
  KF_ASSIGN_OR_RETURN(std::vector<FamilySpace> candidates,
                      CandidateFamilies(spec, families, request.templates));
  if (request.count == 0) return std::vector<Proposal>{};
  return IslandSearch(request, std::move(candidates)).Run();
}

Result<std::vector<std::string>> SupportingTemplates(
    const SpecView& spec, const std::vector<std::unique_ptr<TemplateFamily>>& families) {
  KF_ASSIGN_OR_RETURN(std::vector<const TemplateFamily*> supporting,
                      SupportingFamilies(spec, families));
  std::vector<std::string> names;
  for (const TemplateFamily* family : supporting) names.emplace_back(family->name());
  return names;
}

std::string CandidateKey(const std::string& template_name, const Params& params) {
  std::string key = template_name + "{";
  bool first = true;
  for (const auto& [name, value] : params) {
    if (!first) key += ",";
    key += name + "=" + value;
    first = false;
  }
  return key + "}";
}

}  // namespace kfleet::agents

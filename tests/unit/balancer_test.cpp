#include "upstream/balancer.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <random>
#include <set>
#include <string>

namespace {

using sluice::upstream::Algorithm;
using sluice::upstream::algorithm_name;
using sluice::upstream::Balancer;
using sluice::upstream::hash_key;
using sluice::upstream::make_balancer;
using sluice::upstream::parse_algorithm;
using sluice::upstream::pick_split;
using sluice::upstream::PickContext;

constexpr Algorithm k_all[] = {Algorithm::RoundRobin, Algorithm::LeastConn, Algorithm::P2C,
                               Algorithm::RingHash,   Algorithm::Maglev,    Algorithm::Random};

std::string address(size_t i) { return "10.0.0." + std::to_string(i + 1) + ":8080"; }

std::vector<std::string> addresses(size_t n) {
  std::vector<std::string> out;
  for (size_t i = 0; i < n; ++i) out.push_back(address(i));
  return out;
}

std::unique_ptr<Balancer> make(Algorithm a, const std::vector<uint32_t>& weights) {
  return make_balancer(a, weights, addresses(weights.size()));
}

// Picks with a fresh random number and a fresh random key each time, loads all 0.
std::vector<double> shares(Balancer& lb, size_t n, int picks, uint64_t seed = 1) {
  std::mt19937_64 rng(seed);
  std::vector<bool> none(n, false);
  std::vector<int> counts(n, 0);
  for (int i = 0; i < picks; ++i) {
    PickContext ctx{.hash = hash_key(std::to_string(rng())), .random = rng()};
    ++counts[*lb.pick(ctx, none)];
  }
  std::vector<double> out;
  for (int c : counts) out.push_back(double(c) / picks);
  return out;
}

// Every target's share within `tolerance` (relative) of weight / sum(weights).
void expect_shares_match_weights(const std::vector<double>& got,
                                 const std::vector<uint32_t>& weights, double tolerance) {
  double total = 0;
  for (uint32_t w : weights) total += w;
  for (size_t i = 0; i < weights.size(); ++i) {
    const double want = weights[i] / total;
    EXPECT_NEAR(got[i], want, want * tolerance) << "target " << i;
  }
}

// The target of each of `keys` keys ("key-0", "key-1" ...), as a name.
std::vector<std::string> mapping(Algorithm a, const std::vector<std::string>& names, int keys) {
  auto lb = make_balancer(a, std::vector<uint32_t>(names.size(), 1), names);
  std::vector<bool> none(names.size(), false);
  std::vector<std::string> out;
  for (int k = 0; k < keys; ++k) {
    out.push_back(names[*lb->pick({.hash = hash_key("key-" + std::to_string(k))}, none)]);
  }
  return out;
}

std::string sequence(Balancer& lb, size_t n, int picks, const std::vector<uint32_t>* load) {
  std::vector<bool> none(n, false);
  std::string seq;
  for (int i = 0; i < picks; ++i) seq += char('0' + *lb.pick({.load = load}, none));
  return seq;
}

// --- names and hashing -------------------------------------------------------------------------

TEST(Algorithm, NamesRoundTripAndUnknownNamesAreRejected) {
  for (Algorithm a : k_all) EXPECT_EQ(parse_algorithm(algorithm_name(a)), a);
  EXPECT_EQ(parse_algorithm("least_conn"), Algorithm::LeastConn);
  EXPECT_FALSE(parse_algorithm("roundrobin").has_value());
  EXPECT_FALSE(parse_algorithm("").has_value());
}

TEST(HashKey, IsStableAcrossRunsAndHosts) {
  // Golden values: every sluice instance must map a key to the same target, so changing the
  // hash function is a breaking change (every hash-balanced key moves at once).
  EXPECT_NE(hash_key(""), 0u);
  EXPECT_EQ(hash_key("192.168.1.10"), 0x685b3ebb9b39fe31ULL);
  EXPECT_EQ(hash_key("a longer key that spans several words"), 0x45f530a9feea2c26ULL);
}

TEST(HashKey, NoCollisionsAndUniformLowBitsWithin3PercentOver100kSimilarKeys) {
  std::set<uint64_t> seen;
  std::vector<int> buckets(10, 0);
  for (int i = 0; i < 100'000; ++i) {
    const uint64_t h = hash_key("10.0." + std::to_string(i / 256) + "." + std::to_string(i % 256));
    seen.insert(h);
    ++buckets[h % 10];
  }
  EXPECT_EQ(seen.size(), 100'000u);
  for (int b : buckets) EXPECT_NEAR(b, 10'000, 300);
  EXPECT_NE(hash_key("a"), hash_key(std::string("a\0", 2)));  // trailing zero bytes count
}

// --- round_robin -------------------------------------------------------------------------------

TEST(RoundRobin, EachWindowOfTotalWeightPicksEachTargetExactlyItsWeight) {
  auto lb = make(Algorithm::RoundRobin, {5, 1, 3});
  std::vector<bool> none(3, false);
  for (int window = 0; window < 20; ++window) {
    std::vector<int> counts(3, 0);
    for (int i = 0; i < 9; ++i) ++counts[*lb->pick({}, none)];
    EXPECT_EQ(counts, (std::vector<int>{5, 1, 3})) << "window " << window;
  }
}

TEST(RoundRobin, InterleavesInsteadOfBursting) {
  auto lb = make(Algorithm::RoundRobin, {5, 1, 1});
  std::string seq;
  std::vector<bool> none(3, false);
  for (int i = 0; i < 7; ++i) seq += char('a' + *lb->pick({}, none));
  EXPECT_EQ(seq, "aabacaa");  // the sequence NGINX documents for weights 5,1,1
}

TEST(RoundRobin, EqualWeightsRotate) {
  auto lb = make(Algorithm::RoundRobin, {1, 1, 1});
  EXPECT_EQ(sequence(*lb, 3, 6, nullptr), "012012");
}

TEST(RoundRobin, SkipsExcludedTargetsAndKeepsRatioAmongTheRest) {
  auto lb = make(Algorithm::RoundRobin, {2, 1, 1});
  std::vector<bool> excluded{true, false, false};
  std::map<size_t, int> counts;
  for (int i = 0; i < 100; ++i) ++counts[*lb->pick({}, excluded)];
  EXPECT_EQ(counts[0], 0);
  EXPECT_EQ(counts[1], 50);
  EXPECT_EQ(counts[2], 50);
}

// --- least_conn --------------------------------------------------------------------------------

TEST(LeastConn, PicksTheLeastLoadedTarget) {
  auto lb = make(Algorithm::LeastConn, {1, 1, 1});
  std::vector<uint32_t> load{10, 0, 10};
  EXPECT_EQ(sequence(*lb, 3, 5, &load), "11111");
}

TEST(LeastConn, ComparesLoadRelativeToWeight) {
  auto lb = make(Algorithm::LeastConn, {4, 1});
  std::vector<uint32_t> load{3, 1};  // 3/4 < 1/1
  EXPECT_EQ(sequence(*lb, 2, 3, &load), "000");
  load = {5, 1};  // 5/4 > 1/1
  EXPECT_EQ(sequence(*lb, 2, 3, &load), "111");
}

TEST(LeastConn, EqualLoadsRotateOverAllTargets) {
  auto lb = make(Algorithm::LeastConn, {1, 1, 1, 1});
  std::vector<uint32_t> load{3, 3, 3, 3};
  EXPECT_EQ(sequence(*lb, 4, 8, &load), "01230123");
  EXPECT_EQ(sequence(*lb, 4, 4, nullptr), "0123");  // no load vector: all 0
}

TEST(LeastConn, TiesAmongSomeTargetsRotateAmongThoseOnly) {
  auto lb = make(Algorithm::LeastConn, {1, 1, 1});
  std::vector<uint32_t> load{5, 2, 2};
  EXPECT_EQ(sequence(*lb, 3, 4, &load), "1212");
}

TEST(LeastConn, WithNothingInFlightFollowsWeightsExactlyPerWindow) {
  auto lb = make(Algorithm::LeastConn, {3, 1});
  std::vector<uint32_t> load{0, 0};
  EXPECT_EQ(sequence(*lb, 2, 8, &load), "00100010");
}

// --- p2c ---------------------------------------------------------------------------------------

TEST(P2C, WithNoLoadFollowsWeightsWithin5PercentOver100kPicks) {
  const std::vector<uint32_t> weights{1, 2, 3, 4};
  auto lb = make(Algorithm::P2C, weights);
  expect_shares_match_weights(shares(*lb, 4, 100'000), weights, 0.05);
}

TEST(P2C, OfTwoTargetsAlwaysTakesTheLighter) {
  auto lb = make(Algorithm::P2C, {1, 1});
  std::vector<uint32_t> load{100, 0};
  std::mt19937_64 rng(7);
  std::vector<bool> none(2, false);
  for (int i = 0; i < 1000; ++i) EXPECT_EQ(lb->pick({.load = &load, .random = rng()}, none), 1u);
}

TEST(P2C, HeaviestTargetIsNeverChosenAndOthersByChanceOfBeingACandidateWithin5Percent) {
  // Candidates are two distinct targets out of three, each pair with probability 1/3: target 0
  // always loses, target 1 wins only against 0 (1/3), target 2 wins every pair it is in (2/3).
  auto lb = make(Algorithm::P2C, {1, 1, 1});
  std::vector<uint32_t> load{10, 5, 0};
  std::mt19937_64 rng(3);
  std::vector<bool> none(3, false);
  std::vector<int> counts(3, 0);
  for (int i = 0; i < 30'000; ++i) ++counts[*lb->pick({.load = &load, .random = rng()}, none)];
  EXPECT_EQ(counts[0], 0);
  EXPECT_NEAR(counts[1], 10'000, 500);
  EXPECT_NEAR(counts[2], 20'000, 1'000);
}

TEST(P2C, LoadedTargetAmongManyIsChosenClearlyLessOften) {
  // Target 0 is chosen only when drawn with a target that is even busier: never, here.
  auto lb = make(Algorithm::P2C, {1, 1, 1, 1, 1});
  std::vector<uint32_t> load{50, 1, 2, 1, 0};
  std::mt19937_64 rng(5);
  std::vector<bool> none(5, false);
  std::vector<int> counts(5, 0);
  for (int i = 0; i < 10'000; ++i) ++counts[*lb->pick({.load = &load, .random = rng()}, none)];
  EXPECT_EQ(counts[0], 0);
  EXPECT_GT(counts[4], counts[1]);
}

TEST(P2C, TakesTheOnlyCandidateLeft) {
  auto lb = make(Algorithm::P2C, {1, 1, 1});
  std::vector<uint32_t> load{0, 100, 0};
  for (uint64_t r = 0; r < 100; ++r) {
    EXPECT_EQ(lb->pick({.load = &load, .random = r}, {true, false, true}), 1u);
  }
}

// --- random ------------------------------------------------------------------------------------

TEST(Random, FollowsWeightsWithin5PercentOver100kPicks) {
  const std::vector<uint32_t> weights{1, 2, 3, 4};
  auto lb = make(Algorithm::Random, weights);
  expect_shares_match_weights(shares(*lb, 4, 100'000), weights, 0.05);
}

// --- ring_hash and maglev ----------------------------------------------------------------------

TEST(RingHash, KeysFollowWeightsWithin10PercentOver100kRandomKeys) {
  const std::vector<uint32_t> weights{1, 2, 3, 4};
  expect_shares_match_weights(shares(*make(Algorithm::RingHash, weights), 4, 100'000), weights,
                              0.10);
  const std::vector<uint32_t> equal(10, 1);
  expect_shares_match_weights(shares(*make(Algorithm::RingHash, equal), 10, 100'000), equal, 0.10);
}

TEST(Maglev, KeysFollowWeightsWithin3PercentOver100kRandomKeys) {
  const std::vector<uint32_t> weights{1, 2, 3, 4};
  expect_shares_match_weights(shares(*make(Algorithm::Maglev, weights), 4, 100'000), weights, 0.03);
  const std::vector<uint32_t> equal(10, 1);
  // 10% shares over 100k keys: sampling alone varies by ±1% (one sigma), so ±4% here.
  expect_shares_match_weights(shares(*make(Algorithm::Maglev, equal), 10, 100'000), equal, 0.04);
}

struct Consistency {
  Algorithm algorithm;
  size_t targets;
  double extra_moved;   // keys moved beyond the removed target's own, as a share of all
  double others_moved;  // keys not on the removed target that moved, as a share of those
};

class HashConsistency : public testing::TestWithParam<Consistency> {};

TEST_P(HashConsistency, RemovingATargetMovesLittleMoreThanItsKeysAndAddingItBackRestoresAll) {
  const auto [algorithm, n, extra_moved, others_moved] = GetParam();
  constexpr int k_keys = 100'000;
  const std::vector<std::string> names = addresses(n);
  const std::vector<std::string> before = mapping(algorithm, names, k_keys);
  for (size_t removed = 0; removed < n; ++removed) {
    std::vector<std::string> without = names;
    without.erase(without.begin() + long(removed));
    const std::vector<std::string> after = mapping(algorithm, without, k_keys);
    int moved = 0, others = 0, others_that_moved = 0;
    for (int k = 0; k < k_keys; ++k) {
      moved += before[k] != after[k];
      if (before[k] == names[removed]) continue;
      ++others;
      others_that_moved += before[k] != after[k];
    }
    EXPECT_LE(double(moved) / k_keys, 1.0 / double(n) + extra_moved) << "removed " << removed;
    EXPECT_LE(double(others_that_moved) / others, others_moved) << "removed " << removed;

    // Back in, at the end of the list rather than in its old place: the mapping is by name.
    without.push_back(names[removed]);
    EXPECT_EQ(mapping(algorithm, without, k_keys), before) << "re-added " << removed;
  }
}

// Ring hash: only the removed target's keys move (a sample's share varies by a few points, so
// +5 points); Maglev: the table reshuffles a little (+3 points, and at most 3% of the others).
INSTANTIATE_TEST_SUITE_P(Hashes, HashConsistency,
                         testing::Values(Consistency{Algorithm::RingHash, 5, 0.05, 0.0},
                                         Consistency{Algorithm::RingHash, 10, 0.05, 0.0},
                                         Consistency{Algorithm::Maglev, 5, 0.03, 0.03},
                                         Consistency{Algorithm::Maglev, 10, 0.03, 0.03}),
                         [](const auto& info) {
                           return std::string(algorithm_name(info.param.algorithm)) + "_" +
                                  std::to_string(info.param.targets);
                         });

class HashBalancer : public testing::TestWithParam<Algorithm> {};

TEST_P(HashBalancer, SameKeyAlwaysMapsToSameTargetOnEveryWorker) {
  auto a = make(GetParam(), {1, 2, 3, 1, 1});
  auto b = make(GetParam(), {1, 2, 3, 1, 1});  // another worker's copy
  std::vector<bool> none(5, false);
  std::mt19937_64 rng(11);
  for (int k = 0; k < 1000; ++k) {
    const uint64_t h = hash_key("user-" + std::to_string(k));
    const auto first = a->pick({.hash = h, .random = rng()}, none);
    for (int i = 0; i < 3; ++i) EXPECT_EQ(a->pick({.hash = h, .random = rng()}, none), first);
    EXPECT_EQ(b->pick({.hash = h}, none), first);
  }
}

TEST_P(HashBalancer, ExcludingOtherTargetsDoesNotMoveAKey) {
  auto lb = make(GetParam(), std::vector<uint32_t>(6, 1));
  std::mt19937_64 rng(13);
  for (int k = 0; k < 1000; ++k) {
    const uint64_t h = hash_key("key-" + std::to_string(k));
    const size_t home = *lb->pick({.hash = h}, std::vector<bool>(6, false));
    std::vector<bool> excluded(6);
    for (size_t i = 0; i < 6; ++i) excluded[i] = i != home && rng() % 2 == 0;
    EXPECT_EQ(lb->pick({.hash = h}, excluded), home);
  }
}

TEST_P(HashBalancer, RetriesOfAKeyFallBackToTheSameTargetsInTheSameOrder) {
  auto a = make(GetParam(), std::vector<uint32_t>(8, 1));
  auto b = make(GetParam(), std::vector<uint32_t>(8, 1));
  for (int k = 0; k < 200; ++k) {
    const uint64_t h = hash_key("key-" + std::to_string(k));
    std::vector<bool> excluded(8, false);
    for (int attempt = 0; attempt < 8; ++attempt) {
      const auto pick = a->pick({.hash = h}, excluded);
      ASSERT_TRUE(pick.has_value());
      EXPECT_EQ(b->pick({.hash = h}, excluded), pick);
      excluded[*pick] = true;
    }
  }
}

TEST_P(HashBalancer, KeysOfAnExcludedTargetSpreadOverTheOthers) {
  auto lb = make(GetParam(), std::vector<uint32_t>(5, 1));
  std::vector<bool> excluded{false, false, true, false, false};
  std::vector<int> counts(5, 0);
  for (int k = 0; k < 20'000; ++k)
    ++counts[*lb->pick({.hash = hash_key(std::to_string(k))}, excluded)];
  EXPECT_EQ(counts[2], 0);
  for (size_t i : {0, 1, 3, 4}) EXPECT_GT(counts[i], 20'000 / 4 / 2) << "target " << i;
}

INSTANTIATE_TEST_SUITE_P(Hashes, HashBalancer,
                         testing::Values(Algorithm::RingHash, Algorithm::Maglev),
                         [](const auto& info) { return std::string(algorithm_name(info.param)); });

// --- every algorithm ---------------------------------------------------------------------------

class AnyBalancer : public testing::TestWithParam<Algorithm> {};

TEST_P(AnyBalancer, NeverPicksAnExcludedTargetUnderRandomMasksAndLoads) {
  const size_t n = 7;
  auto lb = make(GetParam(), {1, 3, 2, 1, 5, 1, 2});
  std::mt19937_64 rng(17);
  for (int i = 0; i < 5000; ++i) {
    std::vector<bool> excluded(n);
    bool all = true;
    for (size_t t = 0; t < n; ++t) all &= excluded[t] = rng() % 3 == 0;
    std::vector<uint32_t> load(n);
    for (auto& l : load) l = uint32_t(rng() % 4);
    const auto pick = lb->pick({.hash = rng(), .load = &load, .random = rng()}, excluded);
    if (all) {
      EXPECT_FALSE(pick.has_value());
    } else {
      ASSERT_TRUE(pick.has_value());
      ASSERT_LT(*pick, n);
      EXPECT_FALSE(excluded[*pick]) << "picked excluded target " << *pick;
    }
  }
}

TEST_P(AnyBalancer, RetriesWalkEveryTargetOnceThenGiveNothing) {
  auto lb = make(GetParam(), {2, 1, 1, 3, 1});
  std::vector<uint32_t> load{1, 0, 2, 0, 1};
  std::mt19937_64 rng(19);
  for (int exchange = 0; exchange < 200; ++exchange) {
    const uint64_t h = rng();
    std::vector<bool> excluded(5, false);
    for (int attempt = 0; attempt < 5; ++attempt) {
      const auto pick = lb->pick({.hash = h, .load = &load, .random = rng()}, excluded);
      ASSERT_TRUE(pick.has_value());
      ASSERT_FALSE(excluded[*pick]);
      excluded[*pick] = true;
    }
    EXPECT_FALSE(lb->pick({.hash = h, .load = &load, .random = rng()}, excluded).has_value());
  }
}

TEST_P(AnyBalancer, EverythingExcludedGivesNothing) {
  auto lb = make(GetParam(), {1, 1});
  EXPECT_FALSE(lb->pick({}, {true, true}).has_value());
}

TEST_P(AnyBalancer, NoTargetsGivesNothing) {
  auto lb = make_balancer(GetParam(), {}, {});
  EXPECT_FALSE(lb->pick({}, {}).has_value());
}

TEST_P(AnyBalancer, AShortExclusionListLeavesTheRestEligible) {
  auto lb = make(GetParam(), {1, 1, 1});
  for (uint64_t r = 0; r < 50; ++r) {
    const auto pick = lb->pick({.hash = r * 0x9e3779b97f4a7c15ULL, .random = r}, {true});
    ASSERT_TRUE(pick.has_value());
    EXPECT_NE(*pick, 0u);
  }
}

TEST_P(AnyBalancer, ZeroWeightCountsAsOneAndMissingNamesFallBackToIndexes) {
  auto lb = make_balancer(GetParam(), {0, 1}, {});
  std::set<size_t> seen;
  for (uint64_t r = 0; r < 200; ++r) {
    seen.insert(*lb->pick({.hash = hash_key(std::to_string(r)), .random = r * 7919}, {}));
  }
  EXPECT_EQ(seen, (std::set<size_t>{0, 1}));
}

INSTANTIATE_TEST_SUITE_P(All, AnyBalancer, testing::ValuesIn(k_all),
                         [](const auto& info) { return std::string(algorithm_name(info.param)); });

// --- split -------------------------------------------------------------------------------------

TEST(PickSplit, MapsRandomNumbersProportionallyToWeights) {
  std::vector<uint32_t> weights{10, 90};
  std::vector<int> counts(2, 0);
  for (uint64_t r = 0; r < 1000; ++r) ++counts[pick_split(weights, r)];
  EXPECT_EQ(counts[0], 100);
  EXPECT_EQ(counts[1], 900);
}

}  // namespace

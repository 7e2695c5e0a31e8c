#include "upstream/balancer.h"

#include <gtest/gtest.h>

#include <map>
#include <string>

using sluice::upstream::pick_split;
using sluice::upstream::WeightedRoundRobin;

TEST(WeightedRoundRobin, EachWindowOfTotalWeightPicksEachTargetExactlyItsWeight) {
  WeightedRoundRobin lb({5, 1, 3});
  std::vector<bool> none(3, false);
  for (int window = 0; window < 20; ++window) {
    std::vector<int> counts(3, 0);
    for (int i = 0; i < 9; ++i) ++counts[*lb.pick(none)];
    EXPECT_EQ(counts, (std::vector<int>{5, 1, 3})) << "window " << window;
  }
}

TEST(WeightedRoundRobin, InterleavesInsteadOfBursting) {
  WeightedRoundRobin lb({5, 1, 1});
  std::vector<bool> none(3, false);
  std::string seq;
  for (int i = 0; i < 7; ++i) seq += static_cast<char>('a' + *lb.pick(none));
  EXPECT_EQ(seq, "aabacaa");  // the sequence NGINX documents for weights 5,1,1
}

TEST(WeightedRoundRobin, EqualWeightsRotate) {
  WeightedRoundRobin lb({1, 1, 1});
  std::vector<bool> none(3, false);
  std::string seq;
  for (int i = 0; i < 6; ++i) seq += static_cast<char>('0' + *lb.pick(none));
  EXPECT_EQ(seq, "012012");
}

TEST(WeightedRoundRobin, SkipsExcludedTargetsAndKeepsRatioAmongTheRest) {
  WeightedRoundRobin lb({2, 1, 1});
  std::vector<bool> excluded{true, false, false};
  std::map<size_t, int> counts;
  for (int i = 0; i < 100; ++i) ++counts[*lb.pick(excluded)];
  EXPECT_EQ(counts[0], 0);
  EXPECT_EQ(counts[1], 50);
  EXPECT_EQ(counts[2], 50);
}

TEST(WeightedRoundRobin, AllExcludedGivesNothing) {
  WeightedRoundRobin lb({1, 1});
  EXPECT_FALSE(lb.pick({true, true}).has_value());
}

TEST(PickSplit, MapsRandomNumbersProportionallyToWeights) {
  std::vector<uint32_t> weights{10, 90};
  std::vector<int> counts(2, 0);
  for (uint64_t r = 0; r < 1000; ++r) ++counts[pick_split(weights, r)];
  EXPECT_EQ(counts[0], 100);
  EXPECT_EQ(counts[1], 900);
}

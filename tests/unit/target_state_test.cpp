#include "upstream/target_state.h"

#include <gtest/gtest.h>

using namespace sluice::upstream;

namespace {
OutlierPolicy policy(int failures, int64_t ejection_ms, int max_percent) {
  OutlierPolicy p;
  p.consecutive_failures = failures;
  p.ejection_time_ms = ejection_ms;
  p.max_ejected_percent = max_percent;
  return p;
}
}  // namespace

TEST(Outlier, EjectsAfterConsecutiveFailuresOnly) {
  TargetState a, b;
  std::vector<TargetState*> all{&a, &b};
  auto p = policy(3, 1000, 50);
  EXPECT_FALSE(record_outcome(a, all, p, true, 0));
  EXPECT_FALSE(record_outcome(a, all, p, true, 0));
  EXPECT_FALSE(record_outcome(a, all, p, false, 0));  // a success resets the streak
  EXPECT_FALSE(record_outcome(a, all, p, true, 0));
  EXPECT_FALSE(record_outcome(a, all, p, true, 0));
  EXPECT_TRUE(record_outcome(a, all, p, true, 10));
  EXPECT_TRUE(a.ejected(10));
  EXPECT_FALSE(a.available(10));
  EXPECT_TRUE(a.ejected(1009));
  EXPECT_FALSE(a.ejected(1010));
  EXPECT_TRUE(a.available(1010));
}

TEST(Outlier, EjectionTimeDoublesOnRepeatAndDecaysWhenQuiet) {
  TargetState a, b, c, d;
  std::vector<TargetState*> all{&a, &b, &c, &d};
  auto p = policy(1, 1000, 50);
  ASSERT_TRUE(record_outcome(a, all, p, true, 0));
  EXPECT_EQ(a.ejected_until_ms.load(), 1000);
  ASSERT_TRUE(record_outcome(a, all, p, true, 1000));  // fails again right after coming back
  EXPECT_EQ(a.ejected_until_ms.load(), 1000 + 2000);
  ASSERT_TRUE(record_outcome(a, all, p, true, 3000));
  EXPECT_EQ(a.ejected_until_ms.load(), 3000 + 4000);
  // Quiet for two ejection periods after the last one ended: the multiplier drops by two.
  ASSERT_TRUE(record_outcome(a, all, p, true, 7000 + 2000));
  EXPECT_EQ(a.ejected_until_ms.load(), 9000 + 2000);
}

TEST(Outlier, MaxEjectedPercentIsRespectedButOneTargetMayAlwaysGo) {
  TargetState a, b, c;
  std::vector<TargetState*> all{&a, &b, &c};
  auto p = policy(1, 1000, 50);  // 50% of 3 = 1
  EXPECT_TRUE(record_outcome(a, all, p, true, 0));
  EXPECT_FALSE(record_outcome(b, all, p, true, 0));
  EXPECT_FALSE(b.ejected(0));
  EXPECT_TRUE(record_outcome(b, all, p, true, 1000));  // a is back: b may go now
}

TEST(Outlier, DisabledWhenThresholdIsZero) {
  TargetState a;
  std::vector<TargetState*> all{&a};
  auto p = policy(0, 1000, 100);
  for (int i = 0; i < 100; ++i) EXPECT_FALSE(record_outcome(a, all, p, true, 0));
  EXPECT_TRUE(a.available(0));
}

TEST(StateRegistry, KeepsStateAcrossLookupsAndDrainsByAddress) {
  StateRegistry r;
  auto s1 = r.target("api", "127.0.0.1:9001");
  s1->healthy = false;
  auto s2 = r.target("api", "127.0.0.1:9001");
  EXPECT_EQ(s1, s2);
  EXPECT_FALSE(s2->healthy);
  EXPECT_NE(r.target("other", "127.0.0.1:9001"), s1);
  EXPECT_TRUE(r.set_drained("api", "127.0.0.1:9001", true));
  EXPECT_FALSE(s1->available(0));
  EXPECT_TRUE(r.set_drained("api", "127.0.0.1:9001", false));
  EXPECT_FALSE(r.set_drained("api", "127.0.0.1:9999", true));
}

TEST(StateRegistry, CollectDropsUnreferencedState) {
  StateRegistry r;
  {
    auto s = r.target("api", "a:1");
    s->healthy = false;
  }
  auto keep = r.target("api", "b:1");
  r.collect();
  EXPECT_TRUE(r.target("api", "a:1")->healthy);  // fresh state: the old one was dropped
  EXPECT_EQ(r.target("api", "b:1"), keep);
}

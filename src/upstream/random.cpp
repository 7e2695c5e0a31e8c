// random: each pick an independent weighted random choice among the targets not excluded.
#include "upstream/algorithms.h"

namespace sluice::upstream::detail {

namespace {

class Random final : public Balancer {
 public:
  explicit Random(const std::vector<uint32_t>& weights) : weights_(weights) {}

  std::optional<size_t> pick(const PickContext& ctx, const std::vector<bool>& excluded) override {
    uint64_t total = 0;
    for (size_t i = 0; i < weights_.size(); ++i) {
      if (!is_excluded(excluded, i)) total += weights_[i];
    }
    if (total == 0) return std::nullopt;
    return weighted_choice(weights_, excluded, SIZE_MAX, total, ctx.random);
  }

 private:
  std::vector<uint32_t> weights_;
};

}  // namespace

std::unique_ptr<Balancer> make_random(const std::vector<uint32_t>& weights) {
  return std::make_unique<Random>(weights);
}

}  // namespace sluice::upstream::detail

// p2c: power of two choices (Mitzenmacher). Two distinct candidates are drawn at random in
// proportion to weight, and the one with the lower load / weight wins (the first drawn on a tie,
// so with no load the choice is plain weighted random). Nearly as good as least_conn at avoiding
// a slow target, without herding every worker onto the same momentarily idle one.
#include <cstdint>

#include "upstream/algorithms.h"

namespace sluice::upstream::detail {

namespace {

class PowerOfTwoChoices final : public Balancer {
 public:
  explicit PowerOfTwoChoices(const std::vector<uint32_t>& weights) : weights_(weights) {}

  std::optional<size_t> pick(const PickContext& ctx, const std::vector<bool>& excluded) override {
    uint64_t total = 0;
    for (size_t i = 0; i < weights_.size(); ++i) {
      if (!is_excluded(excluded, i)) total += weights_[i];
    }
    if (total == 0) return std::nullopt;
    const size_t a = weighted_choice(weights_, excluded, SIZE_MAX, total, ctx.random);
    if (total == weights_[a]) return a;  // the only candidate left
    // The second draw needs bits independent of the first: remix the same random number.
    const size_t b = weighted_choice(weights_, excluded, a, total - weights_[a], mix64(ctx.random));
    return lighter(load_of(ctx, b), weights_[b], load_of(ctx, a), weights_[a]) ? b : a;
  }

 private:
  std::vector<uint32_t> weights_;
};

}  // namespace

std::unique_ptr<Balancer> make_p2c(const std::vector<uint32_t>& weights) {
  return std::make_unique<PowerOfTwoChoices>(weights);
}

}  // namespace sluice::upstream::detail

// Cost of one pick for each balancing algorithm, 10 targets with weights 1..3, nothing excluded
// (and, for the hashes, one excluded: a retry). Loads are fixed, small and uneven; the key hash
// and the random number change every pick as they do in the proxy. hash_key is measured apart.
//
//   g++ -std=c++20 -O2 -DNDEBUG -Isrc bench/balancer_bench.cpp src/upstream/*.cpp
//       -lbenchmark -pthread -o /tmp/balancer_bench
#include <string>
#include <vector>

#include <benchmark/benchmark.h>

#include "upstream/balancer.h"

namespace {

using sluice::upstream::Algorithm;
using sluice::upstream::algorithm_name;
using sluice::upstream::hash_key;
using sluice::upstream::make_balancer;
using sluice::upstream::PickContext;

constexpr size_t k_targets = 10;

uint64_t next_random(uint64_t& state) {  // splitmix64: cheap enough not to dominate a pick
  uint64_t z = (state += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

void bm_pick(benchmark::State& state, Algorithm algorithm, bool retry) {
  std::vector<uint32_t> weights;
  std::vector<std::string> names;
  std::vector<uint32_t> load;
  for (size_t i = 0; i < k_targets; ++i) {
    weights.push_back(uint32_t(1 + i % 3));
    names.push_back("10.0.0." + std::to_string(i + 1) + ":8080");
    load.push_back(uint32_t(i * 7 % 5));
  }
  auto lb = make_balancer(algorithm, weights, names);
  std::vector<bool> excluded(k_targets, false);
  uint64_t rng = 42;
  for (auto _ : state) {
    PickContext ctx{.hash = next_random(rng), .load = &load, .random = next_random(rng)};
    if (retry) {
      excluded.assign(k_targets, false);
      excluded[*lb->pick(ctx, excluded)] = true;
    }
    benchmark::DoNotOptimize(lb->pick(ctx, excluded));
  }
  state.SetLabel(std::string(algorithm_name(algorithm)) + (retry ? " retry (2 picks)" : ""));
}

void bm_hash_key(benchmark::State& state) {
  const std::string key = "203.0.113.195";
  for (auto _ : state) {
    benchmark::DoNotOptimize(key.data());
    benchmark::DoNotOptimize(hash_key(key));
  }
}

BENCHMARK_CAPTURE(bm_pick, round_robin, Algorithm::RoundRobin, false);
BENCHMARK_CAPTURE(bm_pick, least_conn, Algorithm::LeastConn, false);
BENCHMARK_CAPTURE(bm_pick, p2c, Algorithm::P2C, false);
BENCHMARK_CAPTURE(bm_pick, ring_hash, Algorithm::RingHash, false);
BENCHMARK_CAPTURE(bm_pick, maglev, Algorithm::Maglev, false);
BENCHMARK_CAPTURE(bm_pick, random, Algorithm::Random, false);
BENCHMARK_CAPTURE(bm_pick, ring_hash_retry, Algorithm::RingHash, true);
BENCHMARK_CAPTURE(bm_pick, maglev_retry, Algorithm::Maglev, true);
BENCHMARK(bm_hash_key);

}  // namespace

BENCHMARK_MAIN();

// The compiled, immutable configuration every worker reads.
//
//   auto snap = compile_snapshot(std::move(cfg), errors);   // on the main thread
//   if (snap) server.publish(snap);                          // workers swap it in
//
// A request holds a shared_ptr<const Snapshot> for its whole life, so a reload never changes
// anything under an in-flight exchange. Nothing here is mutated after compile; per-worker state
// (balancers, pools) lives in the worker, keyed by the names and addresses found here.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "config/config.h"
#include "filters/filter.h"
#include "router/router.h"

namespace sluice::server {

struct CompiledTarget {
  std::string address;  // as written in the config ("127.0.0.1:9001"): the admin/log name
  std::string ip;       // resolved IP literal
  uint16_t port = 0;
  uint32_t weight = 1;
  std::string key;  // "ip:port": connection pools are keyed by this, so they survive reloads
};

struct CompiledUpstream {
  const config::Upstream* config = nullptr;
  std::vector<CompiledTarget> targets;
};

struct CompiledRoute {
  const config::Route* config = nullptr;
  int upstream = -1;                 // index into Snapshot::upstreams for Action::Upstream
  std::vector<int> split_upstreams;  // for Action::Split
  std::vector<uint32_t> split_weights;
  filters::FilterChain filters;  // in policy order
};

struct Snapshot {
  uint64_t generation = 0;
  config::Config config;
  std::unique_ptr<const router::Router> router;
  std::vector<CompiledUpstream> upstreams;
  std::vector<CompiledRoute> routes;
  std::string checksum;  // hex FNV-1a of the config file text
  std::chrono::system_clock::time_point loaded_at;
};

// Compiles a validated config. Resolves hostname targets (blocking getaddrinfo: call it on the
// main thread, never on a worker). Returns nullptr and fills `errors` when a target cannot be
// resolved.
std::shared_ptr<const Snapshot> compile_snapshot(config::Config cfg, const std::string& source_text,
                                                 std::vector<std::string>& errors);

}  // namespace sluice::server

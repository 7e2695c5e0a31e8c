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

#include "cache/policy.h"
#include "cache/store.h"
#include "config/config.h"
#include "filters/filter.h"
#include "mqtt/topic.h"
#include "router/router.h"
#include "stats/metrics.h"
#include "tls/tls.h"
#include "upstream/balancer.h"
#include "upstream/target_state.h"

namespace sluice::filters {
class AuthRegistry;
}

namespace sluice::server {

struct CompiledTarget {
  std::string address;  // as written in the config ("127.0.0.1:9001"): the admin/log name
  std::string host;     // as written: an IP literal or a hostname
  std::string ip;       // the IP literal; empty for a hostname (see `dynamic`)
  uint16_t port = 0;
  uint32_t weight = 1;
  bool dynamic = false;  // a hostname: the current address is state->ip(), re-resolved by DNS
  std::string key;  // pool key for IP targets ("ip:port", "tls:UPSTREAM|ip:port"); pools survive
                    // reloads by it
  std::string sticky_value;  // opaque cookie value naming this target (never the raw address)
  std::shared_ptr<upstream::TargetState> state;  // shared by all workers, kept across reloads
};

struct CompiledUpstream {
  const config::Upstream* config = nullptr;
  std::vector<CompiledTarget> targets;
  std::vector<upstream::TargetState*> states;  // targets[i].state.get(), for outlier bookkeeping
  std::shared_ptr<upstream::UpstreamCounters> counters;
  upstream::Algorithm algorithm = upstream::Algorithm::RoundRobin;
  upstream::OutlierPolicy outlier;
  // Upstream `tls:`; null = cleartext to the targets.
  std::shared_ptr<const tls::ClientContext> tls;
  // ring_hash and maglev: built once here (milliseconds of work, off the workers) and shared
  // read-only by every worker; their pick() does not mutate. Null for stateful algorithms.
  std::shared_ptr<upstream::Balancer> shared_balancer;
};

struct CompiledRoute {
  const config::Route* config = nullptr;
  int upstream = -1;                 // index into Snapshot::upstreams for Action::Upstream
  std::vector<int> split_upstreams;  // for Action::Split
  std::vector<uint32_t> split_weights;
  filters::FilterChain filters;            // in policy order
  std::optional<cache::RouteCache> cache;  // route `cache:`
};

// One `mqtt.routes` entry: PUBLISH topics it takes and the HTTP request each becomes.
struct CompiledMqttRoute {
  const config::MqttRoute* config = nullptr;
  mqtt::TopicFilter filter;
  size_t upstream = 0;        // index into Snapshot::upstreams
  std::string path_template;  // "/ingest/{1}"; "/{1}" with the whole topic as the one capture
  bool whole_topic = false;   // no `path` in the config: the path is "/" + the topic
};

struct Snapshot {
  uint64_t generation = 0;
  config::Config config;
  std::unique_ptr<const router::Router> router;
  std::vector<CompiledUpstream> upstreams;
  std::vector<CompiledRoute> routes;
  std::vector<CompiledMqttRoute> mqtt_routes;  // `mqtt.routes`, in order: the first match wins
  // TLS listeners by name (certificates loaded, contexts shared by every worker).
  std::unordered_map<std::string, std::shared_ptr<const tls::ServerContext>> listener_tls;
  uint16_t https_port = 0;  // the first TLS listener's port: where redirect_to_https points
  std::shared_ptr<const filters::AuthRegistry> auth;  // consumers and authenticators (may be null)
  // The response cache and its coalescing table: process-wide, kept across reloads (a new one only
  // when `cache.max_size` changes). Null when no route caches.
  std::shared_ptr<cache::Store> cache;
  std::shared_ptr<cache::Inflight> inflight;
  // The metric label names behind route/upstream/listener/target indexes of this snapshot.
  std::shared_ptr<const stats::Layout> layout;
  std::string checksum;  // hex FNV-1a of the config file text
  std::chrono::system_clock::time_point loaded_at;
};

bool is_ip_literal(const std::string& host);
// Blocking getaddrinfo: the first address of `host`, or "" with `error` set.
std::string resolve(const std::string& host, std::string& error);

// The process-wide registry of target health/ejection/drain state (kept across reloads).
upstream::StateRegistry& state_registry();
// The process-wide metrics registry (per-worker blocks, scraped by the admin API).
stats::Registry& metrics_registry();

// Compiles a validated config. Hostname targets get their first address with a blocking
// getaddrinfo (so call this on the main thread, never on a worker); one that does not resolve
// yet is logged and takes no traffic until the DNS refresher (control thread) resolves it.
// Returns nullptr and fills `errors` on failure.
std::shared_ptr<const Snapshot> compile_snapshot(config::Config cfg, const std::string& source_text,
                                                 std::vector<std::string>& errors,
                                                 std::vector<std::string>& warnings);

}  // namespace sluice::server

#include "server/snapshot.h"

#include <arpa/inet.h>
#include <netdb.h>

#include <algorithm>
#include <atomic>
#include <mutex>
#include <tuple>

#include <fmt/format.h>

#include "filters/auth.h"
#include "filters/headers.h"
#include "filters/ip_access.h"
#include "filters/rate_limit.h"

namespace sluice::server {
namespace {

std::atomic<uint64_t> g_generation{0};

}  // namespace

bool is_ip_literal(const std::string& host) {
  in6_addr a6{};
  in_addr a4{};
  return inet_pton(AF_INET, host.c_str(), &a4) == 1 || inet_pton(AF_INET6, host.c_str(), &a6) == 1;
}

std::string resolve(const std::string& host, std::string& error) {
  if (is_ip_literal(host)) return host;
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  int rc = getaddrinfo(host.c_str(), nullptr, &hints, &res);
  if (rc != 0 || res == nullptr) {
    error = gai_strerror(rc);
    return {};
  }
  char buf[INET6_ADDRSTRLEN] = {};
  if (res->ai_family == AF_INET) {
    inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(res->ai_addr)->sin_addr, buf, sizeof buf);
  } else {
    inet_ntop(AF_INET6, &reinterpret_cast<sockaddr_in6*>(res->ai_addr)->sin6_addr, buf, sizeof buf);
  }
  freeaddrinfo(res);
  return buf;
}

namespace {
std::string fnv1a_hex(const std::string& text) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : text) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return fmt::format("{:016x}", h);
}
}  // namespace

namespace {
// The response cache outlives snapshots: a reload keeps what is cached unless max_size changed.
std::pair<std::shared_ptr<cache::Store>, std::shared_ptr<cache::Inflight>> shared_cache(
    uint64_t max_size) {
  static std::mutex mu;
  static std::shared_ptr<cache::Store> store;
  static std::shared_ptr<cache::Inflight> inflight = std::make_shared<cache::Inflight>();
  static uint64_t size = 0;
  std::lock_guard lock(mu);
  if (!store || size != max_size) {
    store = std::make_shared<cache::Store>(static_cast<size_t>(max_size));
    size = max_size;
  }
  return {store, inflight};
}
}  // namespace

stats::Registry& metrics_registry() {
  static auto* registry = new stats::Registry();  // process lifetime
  return *registry;
}

upstream::StateRegistry& state_registry() {
  static upstream::StateRegistry* registry = new upstream::StateRegistry();  // process lifetime
  return *registry;
}

std::shared_ptr<const Snapshot> compile_snapshot(config::Config cfg, const std::string& source_text,
                                                 std::vector<std::string>& errors,
                                                 std::vector<std::string>& warnings) {
  auto snap = std::make_shared<Snapshot>();
  snap->config = std::move(cfg);
  const config::Config& c = snap->config;

  for (const auto& l : c.listeners) {
    if (!l.tls) continue;
    if (auto ctx = tls::ServerContext::build(l, c.file, errors, warnings)) {
      snap->listener_tls.emplace(l.name, std::move(ctx));
      if (snap->https_port == 0) snap->https_port = l.port;
    }
  }
  std::shared_ptr<const filters::AuthRegistry> auth_registry;
  if (!c.authenticators.empty() || !c.consumers.empty()) {
    auto built = filters::build_auth_registry(c);
    if (auto* errs = std::get_if<std::vector<std::string>>(&built)) {
      errors.insert(errors.end(), errs->begin(), errs->end());
    } else {
      auth_registry = std::get<std::shared_ptr<const filters::AuthRegistry>>(std::move(built));
    }
  }
  if (!errors.empty()) return nullptr;
  snap->auth = auth_registry;
  snap->generation = ++g_generation;
  snap->checksum = fnv1a_hex(source_text);
  snap->loaded_at = std::chrono::system_clock::now();

  std::unordered_map<std::string, int> upstream_index;
  upstream::StateRegistry& registry = state_registry();
  for (const auto& u : c.upstreams) {
    CompiledUpstream cu;
    cu.config = &u;
    cu.counters = registry.counters(u.name);
    cu.algorithm = upstream::parse_algorithm(u.balance).value_or(upstream::Algorithm::RoundRobin);
    cu.outlier.consecutive_failures = u.outlier.consecutive_failures;
    cu.outlier.ejection_time_ms = u.outlier.ejection_time.count();
    cu.outlier.max_ejected_percent = u.outlier.max_ejected_percent;
    if (u.tls) cu.tls = tls::ClientContext::build(u, c.file, errors);
    for (const auto& t : u.targets) {
      CompiledTarget ct;
      ct.address = t.address;
      ct.host = t.host;
      ct.port = t.port;
      ct.weight = t.weight;
      ct.state = registry.target(u.name, t.address);
      ct.sticky_value =
          fmt::format("{:016x}", upstream::hash_key(fmt::format("{}/{}", u.name, t.address)));
      if (is_ip_literal(t.host)) {
        ct.ip = t.host;
        ct.key = ct.ip.find(':') != std::string::npos ? fmt::format("[{}]:{}", ct.ip, t.port)
                                                      : fmt::format("{}:{}", ct.ip, t.port);
        // A TLS connection is only reusable by the upstream whose TLS settings made it.
        if (u.tls) ct.key = fmt::format("tls:{}|{}", u.name, ct.key);
      } else {
        ct.dynamic = true;
        if (ct.state->ip().empty()) {  // first sight: resolve now; the refresher keeps it fresh
          std::string err;
          std::string ip = resolve(t.host, err);
          if (ip.empty()) {
            warnings.push_back(
                fmt::format("{}:{}:{}: target '{}' does not resolve yet ({}); it "
                            "takes no traffic until it does",
                            c.file, t.mark.line, t.mark.col, t.address, err));
          }
          ct.state->set_ip(ip);
        }
      }
      cu.states.push_back(ct.state.get());
      cu.targets.push_back(std::move(ct));
    }
    if (cu.algorithm == upstream::Algorithm::RingHash ||
        cu.algorithm == upstream::Algorithm::Maglev) {
      std::vector<uint32_t> weights;
      std::vector<std::string> names;
      for (const auto& t : cu.targets) {
        weights.push_back(t.weight);
        names.push_back(t.address);
      }
      cu.shared_balancer = upstream::make_balancer(cu.algorithm, weights, names);
    }
    upstream_index.emplace(u.name, static_cast<int>(snap->upstreams.size()));
    snap->upstreams.push_back(std::move(cu));
  }
  if (!errors.empty()) return nullptr;

  for (const auto& r : c.routes) {
    CompiledRoute cr;
    cr.config = &r;
    if (r.action == config::Route::Action::Upstream) {
      cr.upstream = upstream_index.at(r.upstream);
    } else if (r.action == config::Route::Action::Split) {
      for (const auto& s : r.split) {
        cr.split_upstreams.push_back(upstream_index.at(s.upstream));
        cr.split_weights.push_back(s.weight);
      }
    }
    // Policy order: who may come in (ips), who they are (auth), what they may do (allow), how
    // often (rate_limit), then what to change (headers).
    std::string ip_error;
    if (auto f = filters::make_ip_access_filter(r.allow, r.deny, ip_error)) {
      cr.filters.push_back(std::move(f));
    } else if (!ip_error.empty()) {
      errors.push_back(fmt::format("{}:{}:{}: route '{}': {}", c.file, r.mark.line, r.mark.col,
                                   r.name, ip_error));
    }
    if (auto f = filters::make_auth_filter(auth_registry, r)) cr.filters.push_back(std::move(f));
    if (auto f = filters::make_allow_filter(r)) cr.filters.push_back(std::move(f));
    // After auth, so that `key: consumer` sees who the client is.
    if (auto f = filters::make_rate_limit_filter(r, c.rate_limits)) {
      cr.filters.push_back(std::move(f));
    }
    if (r.cache) {
      cache::RouteCache rc;
      rc.ttl = std::chrono::duration_cast<std::chrono::seconds>(r.cache->ttl);
      rc.vary = r.cache->vary;
      rc.stale_if_error = std::chrono::duration_cast<std::chrono::seconds>(r.cache->stale_if_error);
      rc.per_consumer = r.cache->per_consumer;
      cr.cache = std::move(rc);
      if (!snap->cache) std::tie(snap->cache, snap->inflight) = shared_cache(c.cache_max_size);
    }
    if (auto f = filters::make_headers_filter(r.request_headers, r.response_headers)) {
      cr.filters.push_back(std::move(f));
    }
    snap->routes.push_back(std::move(cr));
  }
  if (c.mqtt) {
    for (const auto& r : c.mqtt->routes) {
      auto compiled = mqtt::TopicFilter::compile(r.topic);
      auto where = [&] {
        return fmt::format("{}:{}:{}: mqtt route", c.file, r.mark.line, r.mark.col);
      };
      if (auto* e = std::get_if<std::string>(&compiled)) {
        errors.push_back(fmt::format("{}: {}", where(), *e));
        continue;
      }
      CompiledMqttRoute cr{.config = &r,
                           .filter = std::get<mqtt::TopicFilter>(std::move(compiled)),
                           .upstream = static_cast<size_t>(upstream_index.at(r.upstream)),
                           .path_template = r.path.empty() ? "/{1}" : r.path,
                           .whole_topic = r.path.empty()};
      if (!cr.whole_topic) {
        if (auto e = mqtt::validate_path_template(r.path, cr.filter.wildcards())) {
          errors.push_back(fmt::format("{}: {}", where(), *e));
          continue;
        }
        // It goes into the request line as written: visible ASCII only.
        if (std::any_of(r.path.begin(), r.path.end(),
                        [](char ch) { return ch <= ' ' || ch == '\x7f' || ch == '#'; })) {
          errors.push_back(fmt::format(
              "{}: path '{}' holds a space, '#' or a byte that is not visible ASCII (encode it)",
              where(), r.path));
          continue;
        }
      }
      snap->mqtt_routes.push_back(std::move(cr));
    }
  }
  if (!errors.empty()) return nullptr;
  snap->router = router::Router::compile(c.routes);
  auto layout = std::make_shared<stats::Layout>();
  for (const auto& r : c.routes) layout->routes.push_back(r.name);
  for (const auto& l : c.listeners) layout->listeners.push_back(l.name);
  for (const auto& u : snap->upstreams) {
    layout->upstreams.push_back(u.config->name);
    auto& targets = layout->targets.emplace_back();
    for (const auto& t : u.targets) targets.push_back(t.address);
  }
  snap->layout = std::move(layout);
  return snap;
}

}  // namespace sluice::server

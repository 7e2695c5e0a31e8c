#include "server/snapshot.h"

#include <arpa/inet.h>
#include <netdb.h>

#include <atomic>

#include <fmt/format.h>

#include "filters/headers.h"

namespace sluice::server {
namespace {

std::atomic<uint64_t> g_generation{0};

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

std::string fnv1a_hex(const std::string& text) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : text) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return fmt::format("{:016x}", h);
}

}  // namespace

std::shared_ptr<const Snapshot> compile_snapshot(config::Config cfg, const std::string& source_text,
                                                 std::vector<std::string>& errors) {
  auto snap = std::make_shared<Snapshot>();
  snap->config = std::move(cfg);
  const config::Config& c = snap->config;
  snap->generation = ++g_generation;
  snap->checksum = fnv1a_hex(source_text);
  snap->loaded_at = std::chrono::system_clock::now();

  std::unordered_map<std::string, int> upstream_index;
  for (const auto& u : c.upstreams) {
    CompiledUpstream cu;
    cu.config = &u;
    for (const auto& t : u.targets) {
      std::string err;
      std::string ip = resolve(t.host, err);
      if (ip.empty()) {
        errors.push_back(fmt::format("{}:{}:{}: cannot resolve target '{}': {}", c.file,
                                     t.mark.line, t.mark.col, t.address, err));
        continue;
      }
      CompiledTarget ct{t.address, ip, t.port, t.weight, {}};
      ct.key = ip.find(':') != std::string::npos ? fmt::format("[{}]:{}", ip, t.port)
                                                 : fmt::format("{}:{}", ip, t.port);
      cu.targets.push_back(std::move(ct));
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
    // Policy order; later issues add auth, allow/deny, rate limit, cache... here.
    if (auto f = filters::make_headers_filter(r.request_headers, r.response_headers)) {
      cr.filters.push_back(std::move(f));
    }
    snap->routes.push_back(std::move(cr));
  }
  snap->router = router::Router::compile(c.routes);
  return snap;
}

}  // namespace sluice::server

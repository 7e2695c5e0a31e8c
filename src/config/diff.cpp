#include "config/diff.h"

#include <map>

#include <fmt/format.h>

namespace sluice::config {
namespace {

std::string ms(Duration d) { return fmt::format("{}ms", d.count()); }

std::string describe(const Limits& l) {
  return fmt::format(
      "header_timeout={} idle_timeout={} request_body_timeout={} "
      "max_request_line={} max_header_bytes={} max_headers={} max_body={}",
      ms(l.header_timeout), ms(l.idle_timeout), ms(l.request_body_timeout), l.max_request_line,
      l.max_header_bytes, l.max_headers, l.max_body);
}

std::string describe(const Listener& l) {
  std::string s =
      fmt::format("listen={}:{} protocol={} {}", l.host, l.port, l.protocol, describe(l.limits));
  if (l.http2) s += " http2";
  if (l.proxy_protocol) s += " proxy_protocol=true";
  if (!l.upstream.empty()) s += " upstream=" + l.upstream;
  return s;
}

// Everything about an upstream except its target list (targets are diffed one by one).
std::string describe_policy(const Upstream& u) {
  std::string s = fmt::format(
      "balance={} protocol={} dns_ttl={} timeouts={}/{}/{} max_connections={} max_pending={}",
      u.balance, u.protocol, ms(u.dns_ttl), ms(u.timeouts.connect), ms(u.timeouts.request),
      ms(u.timeouts.idle), u.max_connections, u.max_pending);
  s += fmt::format(" hash_on={}:{}", static_cast<int>(u.hash_on.kind), u.hash_on.name);
  if (u.proxy_protocol != 0) s += fmt::format(" proxy_protocol=v{}", u.proxy_protocol);
  if (u.sticky.enabled) s += fmt::format(" sticky={}/{}", u.sticky.cookie, ms(u.sticky.ttl));
  if (u.health_check.enabled) {
    const auto& h = u.health_check;
    s += fmt::format(" health_check={}/{}/{}/{}/{}/{}",
                     h.type == HealthCheck::Type::Http ? "http" : "tcp", h.path, ms(h.interval),
                     ms(h.timeout), h.healthy, h.unhealthy);
    for (auto [lo, hi] : h.expect) s += fmt::format(",{}-{}", lo, hi);
  }
  s += fmt::format(" outlier={}/{}/{}%", u.outlier.consecutive_failures,
                   ms(u.outlier.ejection_time), u.outlier.max_ejected_percent);
  s += fmt::format(" retries={}/{}/{}/{}%", u.retries.attempts,
                   u.retries.all_methods ? "all" : "idempotent", u.retries.on_reset ? "reset" : "",
                   u.retries.budget_percent);
  for (int code : u.retries.on_status) s += fmt::format(",{}", code);
  return s;
}

std::string describe(const Match& m) {
  std::string s = "hosts=";
  for (const auto& h : m.hosts) s += h + ",";
  s += fmt::format(" path={}:{} methods=", static_cast<int>(m.path_kind), m.path);
  for (const auto& x : m.methods) s += x + ",";
  for (const auto& h : m.headers) {
    s += fmt::format(" header:{}={}:{}", h.name, static_cast<int>(h.kind), h.value);
  }
  for (const auto& q : m.query) {
    s += fmt::format(" query:{}={}:{}", q.name, static_cast<int>(q.kind), q.value);
  }
  return s;
}

// Where a route sends requests.
std::string describe_action(const Route& r) {
  switch (r.action) {
    case Route::Action::Upstream:
      return "upstream " + r.upstream;
    case Route::Action::Split: {
      std::string s = "split";
      for (const auto& e : r.split) s += fmt::format(" {}:{}", e.upstream, e.weight);
      return s;
    }
    case Route::Action::Respond: {
      std::string s = fmt::format("respond {} {:?}", r.respond.status, r.respond.body);
      for (const auto& [k, v] : r.respond.headers) s += fmt::format(" {}={}", k, v);
      return s;
    }
    case Route::Action::Redirect:
      return fmt::format("redirect {} {}", r.redirect.status, r.redirect.to);
  }
  return "";
}

// Rewrite, header operations and timeout.
std::string describe_policies(const Route& r) {
  std::string s = fmt::format("rewrite={}:{}:{}:{}", static_cast<int>(r.rewrite.kind),
                              r.rewrite.prefix, r.rewrite.regex, r.rewrite.replace);
  for (const auto* ops : {&r.request_headers, &r.response_headers}) {
    s += " headers=";
    for (const auto& [k, v] : ops->set) s += fmt::format("{}={},", k, v);
    for (const auto& k : ops->remove) s += "-" + k + ",";
  }
  if (r.timeout) s += " timeout=" + ms(*r.timeout);
  return s;
}

// A short summary of what differs between two routes of the same name; empty = nothing.
std::string route_change(const Route& a, const Route& b) {
  std::vector<std::string> parts;
  if (describe_action(a) != describe_action(b)) {
    parts.push_back(describe_action(a) + " -> " + describe_action(b));
  }
  if (describe(a.match) != describe(b.match)) parts.push_back("match changed");
  if (describe_policies(a) != describe_policies(b))
    parts.push_back("rewrite/headers/timeout changed");
  std::string out;
  for (size_t i = 0; i < parts.size(); ++i) out += (i ? "; " : "") + parts[i];
  return out;
}

}  // namespace

std::vector<std::string> diff(const Config& a, const Config& b) {
  std::vector<std::string> out;

  // Process-wide settings.
  if (a.workers != b.workers) {
    out.push_back(fmt::format("~ workers: {} -> {} (takes effect on restart only)",
                              a.workers ? std::to_string(a.workers) : "auto",
                              b.workers ? std::to_string(b.workers) : "auto"));
  }
  if (a.shutdown_timeout != b.shutdown_timeout) {
    out.push_back(fmt::format("~ shutdown_timeout: {} -> {}", ms(a.shutdown_timeout),
                              ms(b.shutdown_timeout)));
  }
  if (a.log.access != b.log.access || a.log.access_format != b.log.access_format ||
      a.log.error != b.log.error || a.log.level != b.log.level || a.log.buffer != b.log.buffer) {
    out.push_back("~ log settings (take effect on restart only)");
  }

  // Listeners by name.
  std::map<std::string, const Listener*> la, lb;
  for (const auto& l : a.listeners) la[l.name] = &l;
  for (const auto& l : b.listeners) lb[l.name] = &l;
  for (const auto& [name, l] : la) {
    if (!lb.count(name))
      out.push_back(fmt::format("- listener {} ({}:{})", name, l->host, l->port));
  }
  for (const auto& [name, l] : lb) {
    auto it = la.find(name);
    if (it == la.end()) {
      out.push_back(fmt::format("+ listener {} ({}:{})", name, l->host, l->port));
    } else if (describe(*it->second) != describe(*l)) {
      out.push_back(
          fmt::format("~ listener {}: {} -> {}", name, describe(*it->second), describe(*l)));
    }
  }

  // Upstreams by name, then their targets by address.
  std::map<std::string, const Upstream*> ua, ub;
  for (const auto& u : a.upstreams) ua[u.name] = &u;
  for (const auto& u : b.upstreams) ub[u.name] = &u;
  for (const auto& [name, u] : ua) {
    if (!ub.count(name))
      out.push_back(fmt::format("- upstream {} ({} targets)", name, u->targets.size()));
  }
  for (const auto& [name, u] : ub) {
    auto it = ua.find(name);
    if (it == ua.end()) {
      out.push_back(fmt::format("+ upstream {} ({} targets)", name, u->targets.size()));
      continue;
    }
    const Upstream& old = *it->second;
    if (describe_policy(old) != describe_policy(*u)) {
      out.push_back(
          fmt::format("~ upstream {}: {} -> {}", name, describe_policy(old), describe_policy(*u)));
    }
    std::map<std::string, uint32_t> ta, tb;
    for (const auto& t : old.targets) ta[t.address] = t.weight;
    for (const auto& t : u->targets) tb[t.address] = t.weight;
    for (const auto& [addr, w] : ta) {
      if (!tb.count(addr)) out.push_back(fmt::format("- upstream {} target {}", name, addr));
    }
    for (const auto& [addr, w] : tb) {
      auto t = ta.find(addr);
      if (t == ta.end()) {
        out.push_back(fmt::format("+ upstream {} target {} (weight {})", name, addr, w));
      } else if (t->second != w) {
        out.push_back(
            fmt::format("~ upstream {} target {}: weight {} -> {}", name, addr, t->second, w));
      }
    }
  }

  // Routes by name, and where they stand (first match wins, so order is behaviour).
  std::map<std::string, std::pair<size_t, const Route*>> ra, rb;
  for (size_t i = 0; i < a.routes.size(); ++i) ra[a.routes[i].name] = {i, &a.routes[i]};
  for (size_t i = 0; i < b.routes.size(); ++i) rb[b.routes[i].name] = {i, &b.routes[i]};
  for (const auto& r : a.routes) {
    if (!rb.count(r.name))
      out.push_back(fmt::format("- route {} (was #{})", r.name, ra[r.name].first + 1));
  }
  for (size_t i = 0; i < b.routes.size(); ++i) {
    const Route& r = b.routes[i];
    auto it = ra.find(r.name);
    if (it == ra.end()) {
      out.push_back(fmt::format("+ route {} (#{})", r.name, i + 1));
      continue;
    }
    if (std::string change = route_change(*it->second.second, r); !change.empty()) {
      out.push_back(fmt::format("~ route {}: {}", r.name, change));
    }
    if (it->second.first != i) {
      out.push_back(
          fmt::format("~ route {}: position #{} -> #{}", r.name, it->second.first + 1, i + 1));
    }
  }
  return out;
}

}  // namespace sluice::config

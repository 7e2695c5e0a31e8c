#include "config/lint.h"

#include <algorithm>
#include <set>
#include <string>
#include <string_view>

namespace sluice::config {

namespace {

// Whether prefix `prefix` (matched on a segment boundary, SPEC.md: "/products" matches
// "/products/1", not "/productsX") matches every path that starts with `path`.
bool segment_prefix(std::string_view prefix, std::string_view path) {
  if (!path.starts_with(prefix)) return false;
  return path.size() == prefix.size() || prefix.ends_with('/') || path[prefix.size()] == '/';
}

// An empty list means "any". The earlier list covers the later one when every value the later
// route accepts is literally listed by the earlier one.
bool covers_values(const std::vector<std::string>& earlier, const std::vector<std::string>& later) {
  if (earlier.empty()) return true;
  if (later.empty()) return false;
  return std::all_of(later.begin(), later.end(), [&](const std::string& value) {
    return std::find(earlier.begin(), earlier.end(), value) != earlier.end();
  });
}

// Header/query predicates are ANDed: the earlier route accepts everything the later one does when
// each earlier predicate is also a predicate of the later route.
bool covers_predicates(const std::vector<ValueMatch>& earlier,
                       const std::vector<ValueMatch>& later) {
  return std::all_of(earlier.begin(), earlier.end(), [&](const ValueMatch& e) {
    return std::any_of(later.begin(), later.end(), [&](const ValueMatch& l) {
      return e.name == l.name && e.kind == l.kind && e.value == l.value;
    });
  });
}

bool covers_path(const Match& earlier, const Match& later) {
  using Kind = Match::PathKind;
  switch (earlier.path_kind) {
    case Kind::Any:
      return true;
    case Kind::Prefix:
      if (later.path_kind == Kind::Prefix || later.path_kind == Kind::Exact) {
        return segment_prefix(earlier.path, later.path);
      }
      if (later.path_kind == Kind::Template) {
        return segment_prefix(earlier.path, template_literal_start(later.path));
      }
      return false;  // a regex can match anything: stay silent
    case Kind::Exact:
      return later.path_kind == Kind::Exact && later.path == earlier.path;
    case Kind::Regex:
    case Kind::Template:
      return false;
  }
  return false;
}

// Conservative: true only when every request `later` matches is certainly matched by `earlier`.
bool covers(const Match& earlier, const Match& later) {
  return covers_values(earlier.hosts, later.hosts) &&
         covers_values(earlier.methods, later.methods) &&
         covers_predicates(earlier.headers, later.headers) &&
         covers_predicates(earlier.query, later.query) && covers_path(earlier, later);
}

Diagnostic warning(const Config& config, Mark mark, std::string message) {
  return Diagnostic{Diagnostic::Severity::Warning, config.file, mark, std::move(message)};
}

// In the largest unit that divides it exactly: "2s", "1500ms", "5m".
std::string duration_text(Duration d) {
  auto ms = d.count();
  if (ms != 0 && ms % 3'600'000 == 0) return std::to_string(ms / 3'600'000) + "h";
  if (ms != 0 && ms % 60'000 == 0) return std::to_string(ms / 60'000) + "m";
  if (ms != 0 && ms % 1000 == 0) return std::to_string(ms / 1000) + "s";
  return std::to_string(ms) + "ms";
}

void lint_upstream(const Config& config, const Upstream& upstream, std::vector<Diagnostic>& out) {
  bool hashes = upstream.balance == "ring_hash" || upstream.balance == "maglev";
  if (upstream.hash_on.mark.line > 0 && !hashes) {
    out.push_back(warning(config, upstream.hash_on.mark,
                          "'hash_on' has no effect with balance '" + upstream.balance +
                              "' (only ring_hash and maglev hash requests)"));
  }
  const HealthCheck& check = upstream.health_check;
  if (check.enabled && check.timeout >= check.interval) {
    out.push_back(warning(config, check.mark,
                          "health check 'timeout' (" + duration_text(check.timeout) +
                              ") is not shorter than its 'interval' (" +
                              duration_text(check.interval) +
                              "): a check may still be waiting when the next one is due"));
  }
}

void lint_listener(const Config& config, const Listener& listener, std::vector<Diagnostic>& out) {
  if (!listener.tls) return;
  const std::vector<TlsCertificate>& certificates = listener.tls->certificates;
  for (size_t later = 0; later < certificates.size(); ++later) {
    for (size_t earlier = 0; earlier < later; ++earlier) {
      const TlsCertificate& a = certificates[earlier];
      const TlsCertificate& b = certificates[later];
      if (a.cert != b.cert || a.key != b.key) continue;
      out.push_back(warning(config, b.mark,
                            "certificate '" + b.cert + "' with key '" + b.key +
                                "' is listed twice in listener '" + listener.name +
                                "' (first at line " + std::to_string(a.mark.line) + ")"));
      break;
    }
  }
}

void lint_route_access(const Config& config, const Route& route, std::vector<Diagnostic>& out) {
  if (route.allow.scopes.empty()) return;
  bool any_jwt = std::any_of(route.auth.begin(), route.auth.end(), [&](const std::string& name) {
    const Authenticator* auth = config.find_authenticator(name);
    return auth != nullptr && auth->kind == Authenticator::Kind::Jwt;
  });
  if (!any_jwt) {
    out.push_back(warning(config, route.allow.scopes_mark,
                          "route '" + route.name +
                              "' allows by scopes, but none of its authenticators is jwt: scopes "
                              "come from a JWT, so no request can pass"));
  }
}

}  // namespace

std::string template_literal_start(const std::string& path_template) {
  size_t brace = path_template.find('{');
  if (brace == std::string::npos) return path_template;
  size_t slash = path_template.rfind('/', brace);
  return path_template.substr(0, slash == std::string::npos ? 0 : slash + 1);
}

std::vector<Diagnostic> lint(const Config& config) {
  std::vector<Diagnostic> out;

  for (const Listener& listener : config.listeners) lint_listener(config, listener, out);

  for (const Consumer& consumer : config.consumers) {
    for (const ApiKey& key : consumer.api_keys) {
      if (key.kind != ApiKey::Kind::Plain) continue;
      out.push_back(warning(
          config, key.mark,
          "plain api key for consumer '" + consumer.name + "': store sha256:<hex> instead"));
    }
  }

  std::set<std::string_view> used_auth;
  for (const Route& route : config.routes) {
    used_auth.insert(route.auth.begin(), route.auth.end());
    lint_route_access(config, route, out);
  }
  if (config.mqtt && !config.mqtt->auth.empty()) used_auth.insert(config.mqtt->auth);
  for (const Authenticator& auth : config.authenticators) {
    if (!used_auth.contains(auth.name)) {
      out.push_back(
          warning(config, auth.mark, "authenticator '" + auth.name + "' is not used by any route"));
    }
  }

  std::set<std::string_view> used;
  for (const Route& route : config.routes) {
    if (!route.upstream.empty()) used.insert(route.upstream);
    for (const SplitEntry& entry : route.split) used.insert(entry.upstream);
  }
  if (config.mqtt) {
    for (const MqttRoute& route : config.mqtt->routes) used.insert(route.upstream);
  }
  for (const Listener& listener : config.listeners) {
    if (!listener.upstream.empty()) used.insert(listener.upstream);
  }
  for (const Upstream& upstream : config.upstreams) {
    if (!used.contains(upstream.name)) {
      out.push_back(
          warning(config, upstream.mark,
                  "upstream '" + upstream.name + "' is not used by any route or listener"));
    }
    lint_upstream(config, upstream, out);
  }

  for (size_t later = 0; later < config.routes.size(); ++later) {
    for (size_t earlier = 0; earlier < later; ++earlier) {
      if (!covers(config.routes[earlier].match, config.routes[later].match)) continue;
      const Route& shadow = config.routes[earlier];
      out.push_back(warning(config, config.routes[later].mark,
                            "route '" + config.routes[later].name + "' can never match: route '" +
                                shadow.name + "' (line " + std::to_string(shadow.mark.line) +
                                ") matches every request it would"));
      break;
    }
  }
  return out;
}

}  // namespace sluice::config

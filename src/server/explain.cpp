#include "server/explain.h"

#include <fmt/format.h>
#include <boost/json.hpp>

#include "filters/exchange.h"
#include "filters/rate_limit.h"
#include "http/normalise.h"

namespace sluice::server {
namespace {

namespace json = boost::json;

std::string_view action_name(config::Route::Action a) {
  switch (a) {
    case config::Route::Action::Upstream:
      return "upstream";
    case config::Route::Action::Split:
      return "split";
    case config::Route::Action::Respond:
      return "respond";
    case config::Route::Action::Redirect:
      return "redirect";
  }
  return "?";
}

}  // namespace

ExplainResult explain(const Snapshot& snap, std::string_view body) {
  json::value in;
  try {
    in = json::parse(body);
  } catch (const std::exception& e) {
    return {400,
            json::serialize(json::object{{"error", fmt::format("invalid JSON: {}", e.what())}})};
  }
  if (!in.is_object()) return {400, R"({"error":"expected a JSON object"})"};
  const json::object& o = in.as_object();
  auto str = [&](std::string_view key, std::string_view fallback) -> std::string {
    auto it = o.find(key);
    return it != o.end() && it->value().is_string() ? std::string(it->value().as_string())
                                                    : std::string(fallback);
  };
  // The request as the gateway would see it.
  std::string method = str("method", "GET");
  std::string url = str("url", "/");
  std::string client_ip = str("client_ip", "127.0.0.1");
  std::vector<std::pair<std::string, std::string>> owned;  // the header strings
  if (auto it = o.find("headers"); it != o.end() && it->value().is_object()) {
    for (const auto& [k, v] : it->value().as_object()) {
      if (v.is_string()) owned.emplace_back(std::string(k), std::string(v.as_string()));
    }
  }
  std::string host;
  if (url.starts_with("http://") || url.starts_with("https://")) {  // absolute form
    size_t start = url.find("//") + 2;
    size_t slash = url.find('/', start);
    host = url.substr(start, slash == std::string::npos ? std::string::npos : slash - start);
    url = slash == std::string::npos ? "/" : url.substr(slash);
  }
  for (const auto& [k, v] : owned) {
    if (http::iequals(k, "host")) host = v;
  }
  if (host.empty()) owned.emplace_back("host", host = "localhost");
  size_t q = url.find('?');
  std::string path = url.substr(0, q);
  std::string query = q == std::string::npos ? std::string() : url.substr(q + 1);

  http::RequestHead head;
  head.method = method;
  head.path = path;
  head.query = query;
  head.host = host;
  for (const auto& [k, v] : owned) head.headers.push_back({k, v});

  json::object out;
  out["request"] = json::object{{"method", method},
                                {"host", host},
                                {"path", path},
                                {"query", query},
                                {"client_ip", client_ip}};
  auto norm = http::normalise_path(path);
  if (!norm.ok) {
    out["outcome"] = "bad_request";
    out["why"] = norm.error;
    return {200, json::serialize(out)};
  }
  out["normalised_path"] = norm.path;

  router::RequestView rv{method, host, norm.path, query, &head.headers};
  router::MatchResult m = snap.router->match(rv);
  json::array routes;
  for (const auto& v : snap.router->explain(rv)) {
    const config::Route& r = snap.config.routes[v.route_index];
    json::object entry{{"route", r.name}, {"matches", v.matched}};
    if (!v.matched) entry["failed"] = v.failed;
    routes.push_back(std::move(entry));
    if (m.outcome == router::MatchResult::Outcome::Matched && v.route_index == m.route_index) {
      break;  // later routes are never looked at
    }
  }
  out["routes"] = std::move(routes);
  if (m.outcome != router::MatchResult::Outcome::Matched) {
    const bool method_not_allowed = m.outcome == router::MatchResult::Outcome::MethodNotAllowed;
    out["outcome"] = method_not_allowed ? "method_not_allowed" : "not_found";
    out["status"] = method_not_allowed ? 405 : 404;
    if (method_not_allowed) out["allow"] = m.allow;
    return {200, json::serialize(out)};
  }
  const CompiledRoute& route = snap.routes[m.route_index];
  const config::Route& rc = *route.config;
  out["outcome"] = "matched";
  out["route"] = rc.name;
  out["action"] = action_name(rc.action);

  // Policies, in the order the data plane runs them; the first refusal ends the chain there.
  filters::Exchange x;
  x.request = &head;
  x.client_ip = client_ip;
  x.upstream_headers = head.headers;
  json::array policies;
  bool refused = false;
  for (const auto& f : route.filters) {
    json::object p{{"policy", f->name()}};
    if (f->name() == "rate_limit") {
      json::array limits;
      bool all_allow = true;
      for (const auto& v : filters::explain_rate_limits(*f, x)) {
        all_allow = all_allow && (!v.applies || v.allowed);
        json::object l{
            {"key", v.key}, {"rate", v.rate}, {"scope", v.scope}, {"applies", v.applies}};
        if (v.applies) l["bucket"] = v.value;
        if (v.applies && v.scope != "global strict") {
          l["allowed"] = v.allowed;
          l["remaining"] = v.remaining;
        } else if (v.applies) {
          l["note"] = "decided by Redis at request time";
        }
        limits.push_back(std::move(l));
      }
      p["limits"] = std::move(limits);
      p["verdict"] = all_allow ? "pass" : "429";
      policies.push_back(std::move(p));
      if (!all_allow) {
        refused = true;
        break;
      }
      continue;
    }
    filters::Step step = f->on_request(x);
    while (step.kind() == filters::Step::Kind::Offload) step = step.take_work()();
    if (step.kind() == filters::Step::Kind::Respond) {
      p["verdict"] = step.status();
      p["why"] = step.log_detail().empty() ? step.reason() : step.log_detail();
      policies.push_back(std::move(p));
      refused = true;
      break;
    }
    p["verdict"] = "pass";
    if (f->name() == "auth") p["consumer"] = x.consumer();
    policies.push_back(std::move(p));
  }
  out["policies"] = std::move(policies);
  out["consumer"] = x.consumer().empty() ? json::value(nullptr) : json::value(x.consumer());
  if (refused) return {200, json::serialize(out)};

  if (route.cache) {
    json::object c{{"enabled", true}, {"ttl_s", route.cache->ttl.count()}};
    if (method == "GET" || method == "HEAD") {
      std::string key = cache::Store::make_key(host, norm.path, query,
                                               route.cache->per_consumer ? x.consumer() : "");
      auto header = [&](std::string_view name) -> std::optional<std::string_view> {
        auto h = head.header(name);
        return h.found ? std::optional<std::string_view>(h.value) : std::nullopt;
      };
      auto entry = snap.cache ? snap.cache->lookup(key, header) : nullptr;
      const int64_t now = std::chrono::duration_cast<std::chrono::nanoseconds>(
                              std::chrono::steady_clock::now().time_since_epoch())
                              .count();
      c["entry"] = !entry                        ? "none"
                   : entry->fresh(now)           ? "fresh (HIT)"
                   : entry->usable_if_error(now) ? "stale (usable on errors)"
                                                 : "expired";
      if (entry) c["age_s"] = entry->age_s(now);
    } else {
      c["entry"] = "not cacheable: method";
    }
    out["cache"] = std::move(c);
  }

  // Protocol handling on this route: what the gateway does with an upgrade and with bodies.
  if (rc.websocket || rc.websocket_bridge) {
    json::object ws{{"mode", rc.websocket ? "passthrough" : "bridge"},
                    {"upgrade_requested", http::is_websocket_upgrade(head)}};
    if (rc.websocket_bridge) {
      ws["method"] = rc.websocket_bridge->method;
      ws["max_in_flight"] = rc.websocket_bridge->max_in_flight;
    }
    out["websocket"] = std::move(ws);
  }
  if (rc.transform) {
    out["transform"] = json::object{
        {"request",
         rc.transform->request.empty() ? json::value(nullptr) : json::value(rc.transform->request)},
        {"response", rc.transform->response.empty() ? json::value(nullptr)
                                                    : json::value(rc.transform->response)}};
  }

  if (rc.action == config::Route::Action::Respond) {
    out["status"] = rc.respond.status;
    return {200, json::serialize(out)};
  }
  if (rc.action == config::Route::Action::Redirect) {
    out["status"] = rc.redirect.status;
    out["location"] = rc.redirect.to;
    return {200, json::serialize(out)};
  }
  // The upstream (a split: its first entry's weight decides at request time) and the target the
  // balancer would pick now: the hash balancers exactly, the stateful ones as a fresh balancer
  // over the available targets would (each worker has its own position).
  int up_index = route.upstream;
  if (rc.action == config::Route::Action::Split) {
    json::array split;
    for (size_t i = 0; i < route.split_upstreams.size(); ++i) {
      split.push_back(json::object{
          {"upstream", snap.upstreams[static_cast<size_t>(route.split_upstreams[i])].config->name},
          {"weight", route.split_weights[i]}});
    }
    out["split"] = std::move(split);
    up_index = route.split_upstreams.front();
  }
  const CompiledUpstream& up = snap.upstreams[static_cast<size_t>(up_index)];
  out["upstream"] = up.config->name;
  out["balance"] = upstream::algorithm_name(up.algorithm);
  const int64_t now_ms = upstream::steady_now_ms();
  std::vector<bool> excluded(up.targets.size());
  json::array unavailable;
  for (size_t i = 0; i < up.targets.size(); ++i) {
    const auto& st = *up.targets[i].state;
    excluded[i] = !st.available(now_ms);
    if (excluded[i]) {
      unavailable.push_back(json::object{{"target", up.targets[i].address},
                                         {"why", !st.healthy.load()   ? "unhealthy"
                                                 : st.drained.load()  ? "drained"
                                                 : st.ejected(now_ms) ? "ejected"
                                                                      : "unresolved"}});
    }
  }
  out["unavailable"] = std::move(unavailable);
  const config::Upstream& uc = *up.config;
  std::optional<size_t> pick;
  if (uc.sticky.enabled) {
    std::string_view v = http::cookie_value(head.headers, uc.sticky.cookie);
    for (size_t i = 0; i < up.targets.size() && !v.empty(); ++i) {
      if (up.targets[i].sticky_value == v && !excluded[i]) pick = i;
    }
    if (pick) out["sticky"] = "the sticky cookie pins the target";
  }
  if (!pick) {
    upstream::PickContext ctx;
    ctx.random = 0;
    if (up.shared_balancer) {
      std::string_view key;
      switch (uc.hash_on.kind) {
        case config::HashOn::Kind::Ip:
          key = client_ip;
          break;
        case config::HashOn::Kind::Header:
          key = head.header(uc.hash_on.name).value;
          break;
        case config::HashOn::Kind::Cookie:
          key = http::cookie_value(head.headers, uc.hash_on.name);
          break;
        case config::HashOn::Kind::Consumer:
          key = x.consumer().empty() ? std::string_view(client_ip) : x.consumer();
          break;
        case config::HashOn::Kind::Path:
          key = norm.path;
          break;
      }
      ctx.hash = upstream::hash_key(key);
      if (key.empty()) {
        out["hash_key"] = nullptr;
        out["note"] = "no hash key in this request: the data plane spreads it at random";
      } else {
        out["hash_key"] = key;
      }
      pick = up.shared_balancer->pick(ctx, excluded);
    } else {
      std::vector<uint32_t> weights;
      std::vector<std::string> names;
      std::vector<uint32_t> load;
      for (const auto& t : up.targets) {
        weights.push_back(t.weight);
        names.push_back(t.address);
        load.push_back(t.state->in_flight.load(std::memory_order_relaxed));
      }
      ctx.load = &load;
      auto lb = upstream::make_balancer(up.algorithm, weights, names);
      pick = lb->pick(ctx, excluded);
    }
  }
  if (pick) {
    out["target"] = up.targets[*pick].address;
  } else {
    out["target"] = nullptr;
    out["status"] = 503;
    out["why"] = "no healthy upstream";
  }
  return {200, json::serialize(out)};
}

}  // namespace sluice::server

#include "stats/metrics.h"

#include <atomic>
#include <charconv>
#include <initializer_list>
#include <string_view>
#include <utility>

namespace sluice::stats {

namespace {

template <size_t N>
void add_array(std::array<uint64_t, N>& into, const std::array<uint64_t, N>& from) {
  for (size_t i = 0; i < N; ++i) into[i] += from[i];
}

template <size_t N>
bool all_zero(const std::array<uint64_t, N>& a) {
  for (uint64_t v : a) {
    if (v != 0) return false;
  }
  return true;
}

const std::string& name_at(const std::vector<std::string>& names, size_t i) {
  static const std::string kNone;
  return i < names.size() ? names[i] : kNone;
}

// Drops every row whose counts are all 0 (what a retired block adds to the carry-over).
void prune(Totals& t) {
  std::erase_if(t.routes, [](const auto& kv) { return kv.second.empty(); });
  for (auto& [name, up] : t.upstreams) {
    std::erase_if(up.targets, [](const auto& kv) { return all_zero(kv.second); });
  }
  std::erase_if(t.upstreams, [](const auto& kv) { return kv.second.empty(); });
  std::erase_if(t.listeners, [](const auto& kv) { return kv.second.empty(); });
}

// --- Text exposition --------------------------------------------------------------------------

using Label = std::pair<std::string_view, std::string_view>;

class Exposition {
 public:
  void family(std::string_view name, std::string_view type, std::string_view help) {
    out_ += "# HELP ";
    out_ += name;
    out_ += ' ';
    out_ += help;
    out_ += "\n# TYPE ";
    out_ += name;
    out_ += ' ';
    out_ += type;
    out_ += '\n';
  }

  void sample(std::string_view name, std::string_view suffix, std::initializer_list<Label> labels,
              uint64_t value) {
    head(name, suffix, labels);
    char buf[24];
    out_.append(buf, std::to_chars(buf, buf + sizeof buf, value).ptr);
    out_ += '\n';
  }
  void sample(std::string_view name, std::string_view suffix, std::initializer_list<Label> labels,
              double value) {
    head(name, suffix, labels);
    char buf[32];
    out_.append(buf, std::to_chars(buf, buf + sizeof buf, value).ptr);
    out_ += '\n';
  }

  // `_bucket` (cumulative, one per `le`), `_sum` and `_count` of one series.
  void histogram(std::string_view name, Label label, const HistogramCounts& h) {
    const std::array<uint64_t, kBuckets> cumulative = h.cumulative();
    for (size_t i = 0; i < kBuckets; ++i) {
      sample(name, "_bucket", {label, {"le", kBucketLabels[i]}}, cumulative[i]);
    }
    sample(name, "_sum", {label}, h.sum_seconds());
    sample(name, "_count", {label}, cumulative.back());
  }

  std::string take() { return std::move(out_); }

 private:
  void head(std::string_view name, std::string_view suffix, std::initializer_list<Label> labels) {
    out_ += name;
    out_ += suffix;
    char sep = '{';
    for (const auto& [key, value] : labels) {
      out_ += sep;
      out_ += key;
      out_ += "=\"";
      append_label_value(out_, value);
      out_ += '"';
      sep = ',';
    }
    if (sep == ',') out_ += '}';
    out_ += ' ';
  }

  std::string out_;
};

}  // namespace

void append_label_value(std::string& out, std::string_view value) {
  for (char c : value) {
    switch (c) {
      case '\\':
        out += "\\\\";
        break;
      case '"':
        out += "\\\"";
        break;
      case '\n':
        out += "\\n";
        break;
      default:
        out += c;
    }
  }
}

// --- Totals -----------------------------------------------------------------------------------

void RouteTotals::add(const RouteTotals& other) {
  add_array(requests, other.requests);
  duration.add(other.duration);
  add_array(auth_failures, other.auth_failures);
  rate_limited += other.rate_limited;
  add_array(cache, other.cache);
  websocket_messages += other.websocket_messages;
}

bool RouteTotals::empty() const {
  return all_zero(requests) && duration.count() == 0 && duration.sum_ns == 0 &&
         all_zero(auth_failures) && rate_limited == 0 && all_zero(cache) && websocket_messages == 0;
}

void UpstreamTotals::add(const UpstreamTotals& other) {
  duration.add(other.duration);
  add_array(retries, other.retries);
  for (const auto& [name, counts] : other.targets) add_array(targets[name], counts);
}

bool UpstreamTotals::empty() const {
  if (duration.count() != 0 || duration.sum_ns != 0 || !all_zero(retries)) return false;
  for (const auto& [name, counts] : targets) {
    if (!all_zero(counts)) return false;
  }
  return true;
}

uint64_t ListenerTotals::connections_active() const {
  return connections_opened > connections_closed ? connections_opened - connections_closed : 0;
}

void ListenerTotals::add(const ListenerTotals& other) {
  bytes_received += other.bytes_received;
  bytes_sent += other.bytes_sent;
  connections_opened += other.connections_opened;
  connections_closed += other.connections_closed;
  add_array(mqtt_messages, other.mqtt_messages);
  udp_dropped += other.udp_dropped;
}

bool ListenerTotals::empty() const {
  return bytes_received == 0 && bytes_sent == 0 && connections_opened == 0 &&
         connections_closed == 0 && all_zero(mqtt_messages) && udp_dropped == 0;
}

void Totals::add(const Totals& other) {
  for (const auto& [name, r] : other.routes) routes[name].add(r);
  for (const auto& [name, u] : other.upstreams) upstreams[name].add(u);
  for (const auto& [name, l] : other.listeners) listeners[name].add(l);
  add_array(config_reloads, other.config_reloads);
}

// --- WorkerMetrics ----------------------------------------------------------------------------

WorkerMetrics::WorkerMetrics(std::shared_ptr<const Layout> layout)
    : layout_(layout ? std::move(layout) : std::make_shared<const Layout>()),
      routes_(layout_->routes.size()),
      upstreams_(layout_->upstreams.size()),
      listeners_(layout_->listeners.size()) {
  size_t n = (routes_ + 1) * kPerRoute;
  listener_base_ = n;
  n += (listeners_ + 1) * kPerListener;
  upstream_base_ = n;
  n += (upstreams_ + 1) * kPerUpstream;
  target_base_ = n;
  target_rows_.resize(upstreams_ + 1);
  for (size_t u = 0; u <= upstreams_; ++u) {
    const size_t count =
        u < layout_->targets.size() && u < upstreams_ ? layout_->targets[u].size() : 0;
    target_rows_[u] = TargetRows{.base = n, .count = count};
    n += (count + 1) * kStatusClasses;
  }
  counters_ = n;
  lines_ = std::make_unique<CounterLine[]>((counters_ + 7) / 8);
  route_duration_ = std::make_unique<Histogram[]>(routes_ + 1);
  upstream_duration_ = std::make_unique<Histogram[]>(upstreams_ + 1);
}

WorkerMetrics::~WorkerMetrics() = default;

size_t WorkerMetrics::memory_bytes() const {
  return (counters_ + 7) / 8 * sizeof(CounterLine) +
         (routes_ + 1 + upstreams_ + 1) * sizeof(Histogram);
}

Totals WorkerMetrics::totals() const {
  Totals t;
  for (size_t r = 0; r <= routes_; ++r) {
    RouteTotals rt;
    const size_t base = r * kPerRoute;
    for (size_t c = 0; c < kStatusClasses; ++c)
      rt.requests[c] = counter(base + kRouteRequests + c).get();
    rt.duration = route_duration_[r].read();
    for (size_t i = 0; i < kAuthFailures; ++i)
      rt.auth_failures[i] = counter(base + kRouteAuth + i).get();
    rt.rate_limited = counter(base + kRouteRateLimited).get();
    for (size_t i = 0; i < kCacheResults; ++i) rt.cache[i] = counter(base + kRouteCache + i).get();
    rt.websocket_messages = counter(base + kRouteWebsocket).get();
    if (r == routes_ && rt.empty()) continue;
    t.routes[name_at(layout_->routes, r)].add(rt);
  }
  for (size_t l = 0; l <= listeners_; ++l) {
    ListenerTotals lt;
    const size_t base = listener_base_ + l * kPerListener;
    lt.bytes_received = counter(base + kBytesIn).get();
    lt.bytes_sent = counter(base + kBytesOut).get();
    // Closes first (acquire, pairing with connection_closed()'s release): then every open that
    // preceded a close seen here is seen too.
    lt.connections_closed = counter(base + kClosed).get_acquire();
    lt.connections_opened = counter(base + kOpened).get();
    for (size_t i = 0; i < kMqttResults; ++i) lt.mqtt_messages[i] = counter(base + kMqtt + i).get();
    lt.udp_dropped = counter(base + kUdpDropped).get();
    if (l == listeners_ && lt.empty()) continue;
    t.listeners[name_at(layout_->listeners, l)].add(lt);
  }
  for (size_t u = 0; u <= upstreams_; ++u) {
    UpstreamTotals ut;
    ut.duration = upstream_duration_[u].read();
    const size_t base = upstream_base_ + u * kPerUpstream;
    for (size_t i = 0; i < kRetryReasons; ++i) ut.retries[i] = counter(base + i).get();
    const TargetRows& rows = target_rows_[u];
    for (size_t ti = 0; ti <= rows.count; ++ti) {
      std::array<uint64_t, kStatusClasses> counts{};
      for (size_t c = 0; c < kStatusClasses; ++c) {
        counts[c] = counter(rows.base + ti * kStatusClasses + c).get();
      }
      if (ti == rows.count && all_zero(counts)) continue;
      static const std::vector<std::string> kNoTargets;
      const auto& names = u < layout_->targets.size() ? layout_->targets[u] : kNoTargets;
      add_array(ut.targets[ti < rows.count ? name_at(names, ti) : std::string()], counts);
    }
    if (u == upstreams_ && ut.empty()) continue;
    t.upstreams[name_at(layout_->upstreams, u)].add(ut);
  }
  return t;
}

// --- Registry ---------------------------------------------------------------------------------

Registry::Registry() = default;
Registry::~Registry() = default;

std::shared_ptr<WorkerMetrics> Registry::add_worker(std::shared_ptr<const Layout> layout) {
  auto block = std::make_shared<WorkerMetrics>(std::move(layout));
  std::lock_guard lock(mu_);
  fold_retired();
  blocks_.push_back(block);
  return block;
}

std::shared_ptr<RateRing> Registry::add_rate_ring() {
  auto ring = std::make_shared<RateRing>();
  std::lock_guard lock(mu_);
  std::erase_if(rings_, [](const auto& r) { return r.use_count() == 1; });
  rings_.push_back(ring);
  return ring;
}

void Registry::set_target_health(std::function<std::vector<TargetHealth>()> source) {
  std::lock_guard lock(mu_);
  health_ = std::move(source);
}

void Registry::config_reload(ReloadResult result) {
  std::lock_guard lock(mu_);
  ++reloads_[static_cast<size_t>(result)];
}

void Registry::fold_retired() {
  for (auto it = blocks_.begin(); it != blocks_.end();) {
    // Only the registry owns it, and the registry never hands out a second copy: nobody can
    // write to it any more. The last other owner released its reference with release ordering;
    // this fence pairs with it so that its last counts are seen.
    if (it->use_count() == 1) {
      std::atomic_thread_fence(std::memory_order_acquire);
      Totals t = (*it)->totals();
      prune(t);
      carry_.add(t);
      it = blocks_.erase(it);
    } else {
      ++it;
    }
  }
}

size_t Registry::blocks() {
  std::lock_guard lock(mu_);
  return blocks_.size();
}

Totals Registry::totals() {
  Totals t;
  std::vector<std::shared_ptr<WorkerMetrics>> live;
  {
    std::lock_guard lock(mu_);
    fold_retired();
    t = carry_;
    t.config_reloads = reloads_;
    live = blocks_;  // read below without the lock; our copies keep them from being folded
  }
  for (const auto& block : live) t.add(block->totals());
  return t;
}

RateSeries Registry::rate_series(int64_t now_s) {
  std::vector<std::shared_ptr<RateRing>> live;
  {
    std::lock_guard lock(mu_);
    std::erase_if(rings_, [](const auto& r) { return r.use_count() == 1; });
    live = rings_;
  }
  RateSeries sum = RateSeries::at(now_s);
  for (const auto& ring : live) sum.add(ring->series(now_s));
  return sum;
}

std::string Registry::prometheus() {
  const Totals t = totals();
  std::function<std::vector<TargetHealth>()> health;
  {
    std::lock_guard lock(mu_);
    health = health_;
  }
  const std::vector<TargetHealth> healthy = health ? health() : std::vector<TargetHealth>();

  Exposition e;
  constexpr std::string_view kRequests = "sluice_requests_total";
  e.family(kRequests, "counter",
           "Requests answered, by route (\"\": none matched) and status class (none: no status).");
  for (const auto& [route, r] : t.routes) {
    for (size_t c = 0; c < kStatusClasses; ++c) {
      if (r.requests[c] != 0) {
        e.sample(kRequests, "", {{"route", route}, {"code", kStatusLabels[c]}}, r.requests[c]);
      }
    }
  }

  constexpr std::string_view kDuration = "sluice_request_duration_seconds";
  e.family(kDuration, "histogram", "Time from the request head to the end of the response.");
  for (const auto& [route, r] : t.routes) {
    if (r.duration.count() != 0) e.histogram(kDuration, {"route", route}, r.duration);
  }

  constexpr std::string_view kUpstreamRequests = "sluice_upstream_requests_total";
  e.family(kUpstreamRequests, "counter",
           "Attempts sent to a target, by status class (none: no response).");
  for (const auto& [upstream, u] : t.upstreams) {
    for (const auto& [target, counts] : u.targets) {
      for (size_t c = 0; c < kStatusClasses; ++c) {
        if (counts[c] == 0) continue;
        e.sample(kUpstreamRequests, "",
                 {{"upstream", upstream}, {"target", target}, {"code", kStatusLabels[c]}},
                 counts[c]);
      }
    }
  }

  constexpr std::string_view kUpstreamDuration = "sluice_upstream_duration_seconds";
  e.family(kUpstreamDuration, "histogram", "Time of one attempt at a target.");
  for (const auto& [upstream, u] : t.upstreams) {
    if (u.duration.count() != 0) e.histogram(kUpstreamDuration, {"upstream", upstream}, u.duration);
  }

  constexpr std::string_view kHealthy = "sluice_upstream_target_healthy";
  e.family(kHealthy, "gauge", "1 when the target may receive traffic by its health checks.");
  for (const TargetHealth& h : healthy) {
    e.sample(kHealthy, "", {{"upstream", h.upstream}, {"target", h.target}},
             uint64_t{h.healthy ? 1u : 0u});
  }

  constexpr std::string_view kActive = "sluice_connections_active";
  e.family(kActive, "gauge", "Client connections open now.");
  for (const auto& [listener, l] : t.listeners) {
    e.sample(kActive, "", {{"listener", listener}}, l.connections_active());
  }
  constexpr std::string_view kConnections = "sluice_connections_total";
  e.family(kConnections, "counter", "Client connections accepted.");
  for (const auto& [listener, l] : t.listeners) {
    e.sample(kConnections, "", {{"listener", listener}}, l.connections_opened);
  }
  constexpr std::string_view kReceived = "sluice_bytes_received_total";
  e.family(kReceived, "counter", "Bytes received from clients.");
  for (const auto& [listener, l] : t.listeners) {
    e.sample(kReceived, "", {{"listener", listener}}, l.bytes_received);
  }
  constexpr std::string_view kSent = "sluice_bytes_sent_total";
  e.family(kSent, "counter", "Bytes sent to clients.");
  for (const auto& [listener, l] : t.listeners) {
    e.sample(kSent, "", {{"listener", listener}}, l.bytes_sent);
  }

  constexpr std::string_view kAuth = "sluice_auth_failures_total";
  e.family(kAuth, "counter",
           "Requests refused by auth: missing or invalid credentials (401), forbidden (403).");
  for (const auto& [route, r] : t.routes) {
    for (size_t i = 0; i < kAuthFailures; ++i) {
      if (r.auth_failures[i] == 0) continue;
      e.sample(kAuth, "", {{"route", route}, {"reason", label(static_cast<AuthFailure>(i))}},
               r.auth_failures[i]);
    }
  }

  constexpr std::string_view kRateLimited = "sluice_rate_limited_total";
  e.family(kRateLimited, "counter", "Requests refused with 429 by a rate limit.");
  for (const auto& [route, r] : t.routes) {
    if (r.rate_limited != 0) e.sample(kRateLimited, "", {{"route", route}}, r.rate_limited);
  }

  constexpr std::string_view kCache = "sluice_cache_requests_total";
  e.family(kCache, "counter", "Cache lookups on caching routes, by result.");
  for (const auto& [route, r] : t.routes) {
    for (size_t i = 0; i < kCacheResults; ++i) {
      if (r.cache[i] == 0) continue;
      e.sample(kCache, "", {{"route", route}, {"result", label(static_cast<CacheResult>(i))}},
               r.cache[i]);
    }
  }

  constexpr std::string_view kRetries = "sluice_retries_total";
  e.family(kRetries, "counter", "Attempts made again at another target, by reason.");
  for (const auto& [upstream, u] : t.upstreams) {
    for (size_t i = 0; i < kRetryReasons; ++i) {
      if (u.retries[i] == 0) continue;
      e.sample(kRetries, "",
               {{"upstream", upstream}, {"reason", label(static_cast<RetryReason>(i))}},
               u.retries[i]);
    }
  }

  constexpr std::string_view kReloads = "sluice_config_reloads_total";
  e.family(kReloads, "counter", "Configuration reloads, by result.");
  for (size_t i = 0; i < kReloadResults; ++i) {
    e.sample(kReloads, "", {{"result", label(static_cast<ReloadResult>(i))}}, t.config_reloads[i]);
  }

  constexpr std::string_view kMqtt = "sluice_mqtt_messages_total";
  e.family(kMqtt, "counter", "MQTT messages from clients, by what became of them.");
  for (const auto& [listener, l] : t.listeners) {
    for (size_t i = 0; i < kMqttResults; ++i) {
      if (l.mqtt_messages[i] == 0) continue;
      e.sample(kMqtt, "", {{"listener", listener}, {"result", label(static_cast<MqttResult>(i))}},
               l.mqtt_messages[i]);
    }
  }

  constexpr std::string_view kUdpDrops = "sluice_udp_datagrams_dropped_total";
  e.family(kUdpDrops, "counter",
           "Datagrams a udp listener dropped (session table full, no target, buffers full).");
  for (const auto& [listener, l] : t.listeners) {
    if (l.udp_dropped != 0) e.sample(kUdpDrops, "", {{"listener", listener}}, l.udp_dropped);
  }

  constexpr std::string_view kWebsocket = "sluice_websocket_messages_total";
  e.family(kWebsocket, "counter", "WebSocket messages relayed.");
  for (const auto& [route, r] : t.routes) {
    if (r.websocket_messages != 0) {
      e.sample(kWebsocket, "", {{"route", route}}, r.websocket_messages);
    }
  }
  return e.take();
}

}  // namespace sluice::stats

// The metrics of SPEC.md section 5: per-worker counters on the request path, summed by name on
// scrape, and the Prometheus text exposition.
//
//   // Once per process:
//   stats::Registry registry;
//   registry.set_target_health([&] { return ...; });   // polled on scrape
//
//   // Per config generation (compile_snapshot): the names behind the integer ids.
//   auto layout = std::make_shared<const stats::Layout>(stats::Layout{
//       .routes = {"api", "static"}, .upstreams = {"backend"}, .listeners = {"web"},
//       .targets = {{"127.0.0.1:9001", "127.0.0.1:9002"}}});
//   // Per worker and generation (kept next to the worker's snapshot):
//   std::shared_ptr<stats::WorkerMetrics> m = registry.add_worker(layout);
//
//   // On that worker's thread, with the indexes of that generation's snapshot:
//   m->connection_opened(listener);
//   m->upstream_request(up, target, 200, upstream_elapsed);
//   m->request(route, 200, elapsed, bytes_in, bytes_out, listener);
//   m->connection_closed(listener);
//
//   // Any thread (the admin API):
//   std::string text = registry.prometheus();   // GET /metrics
//   stats::Totals t = registry.totals();        // GET /api/stats (percentiles: histogram.h)
//
// Series are identified by small integers assigned when the config is compiled: route, upstream,
// listener index, target index within its upstream; -1 (no route matched, no upstream, ...) counts
// under the label value "" (config names are never empty, so it cannot collide). The remaining
// labels are the small enums of labels.h.
//
// Hot path: a WorkerMetrics is written only by its worker thread (single-writer counters,
// counter.h: no locked instruction, no lock), and lives in cache lines of its own, so workers never
// share a written line. One request() is five such adds (its status class, its duration's bucket
// and the duration sum, bytes in and out) and a four-compare bucket search: about 3 ns at -O2.
// memory_bytes() gives the size: about 33 KB for 100 routes, 20 upstreams of 5 targets.
//
// Reloads: a new snapshot brings a new Layout (indexes may change meaning), so each worker takes
// a new block for it. An exchange or connection that started on the old snapshot keeps recording
// into the old block with the old indexes, which is why blocks are shared_ptrs: the block stays
// registered, and summed into every scrape *by label names*, until its last user lets go. The
// registry then folds its totals into a carry-over (also keyed by names) and frees it. A block's
// counts are thus always counted exactly once, and counters never go backwards across reloads.
// Record connection_opened() and connection_closed() of one connection on the same block, or on
// blocks whose layouts give its listener the same name: connections_active is opened - closed,
// summed by name.
//
// Exposition rules: series labelled by route, upstream or target appear at their first count (as
// a client library's labelled vectors do; zero rows are not written); per-listener series and
// config_reloads are written from the start. Once written, a series stays until the process ends.
#pragma once

#include <array>
#include <cassert>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "stats/counter.h"
#include "stats/histogram.h"
#include "stats/labels.h"
#include "stats/rates.h"

namespace sluice::stats {

// The label values behind a generation's integer ids. Immutable once shared.
struct Layout {
  std::vector<std::string> routes;                // by route index
  std::vector<std::string> upstreams;             // by upstream index
  std::vector<std::string> listeners;             // by listener index
  std::vector<std::vector<std::string>> targets;  // targets[u][t]: upstream u's target addresses
};

// --- Sums by label names (what a scrape sees) -------------------------------------------------

struct RouteTotals {
  std::array<uint64_t, kStatusClasses> requests{};  // by status_index()
  HistogramCounts duration;                         // of requests, whatever their status
  std::array<uint64_t, kAuthFailures> auth_failures{};
  uint64_t rate_limited = 0;
  std::array<uint64_t, kCacheResults> cache{};
  uint64_t websocket_messages = 0;

  void add(const RouteTotals& other);
  bool empty() const;  // every count is 0
};

struct UpstreamTotals {
  HistogramCounts duration;  // of attempts
  std::array<uint64_t, kRetryReasons> retries{};
  // Attempts by target address ("" = no target) and status class.
  std::map<std::string, std::array<uint64_t, kStatusClasses>, std::less<>> targets;

  void add(const UpstreamTotals& other);
  bool empty() const;
};

struct ListenerTotals {
  uint64_t bytes_received = 0;
  uint64_t bytes_sent = 0;
  uint64_t connections_opened = 0;
  uint64_t connections_closed = 0;
  std::array<uint64_t, kMqttResults> mqtt_messages{};  // by MqttResult
  uint64_t udp_dropped = 0;  // datagrams a udp listener could not relay (table full, no target)

  // opened - closed, or 0 while a close recorded on another block is seen before its open.
  uint64_t connections_active() const;
  void add(const ListenerTotals& other);
  bool empty() const;
};

struct Totals {
  // Keyed by name; "" = no route / upstream / listener.
  std::map<std::string, RouteTotals, std::less<>> routes;
  std::map<std::string, UpstreamTotals, std::less<>> upstreams;
  std::map<std::string, ListenerTotals, std::less<>> listeners;
  std::array<uint64_t, kReloadResults> config_reloads{};

  void add(const Totals& other);
};

// --- One worker's counters for one generation ---------------------------------------------------

class WorkerMetrics {
 public:
  // A null layout is an empty one (every id then counts under "").
  explicit WorkerMetrics(std::shared_ptr<const Layout> layout);
  ~WorkerMetrics();
  WorkerMetrics(const WorkerMetrics&) = delete;
  WorkerMetrics& operator=(const WorkerMetrics&) = delete;

  const Layout& layout() const { return *layout_; }

  // --- The owning worker's thread only (one writer at a time) ---
  // Indexes are this layout's, or -1 (counted under ""). `status` 0, or anything outside
  // 100..599, is class "none".

  // One exchange answered to the client (or abandoned: status 0): sluice_requests_total,
  // sluice_request_duration_seconds, and the bytes it received from / sent to the client.
  void request(int route, int status, std::chrono::nanoseconds duration, uint64_t bytes_in,
               uint64_t bytes_out, int listener) {
    const size_t r = row(route, routes_);
    counter(r * kPerRoute + kRouteRequests + status_index(status)).add(1);
    route_duration_[r].record(duration);
    bytes(listener, bytes_in, bytes_out);
  }
  // One attempt at a target: sluice_upstream_requests_total (status 0 = no response: connect
  // failure, reset, timeout), sluice_upstream_duration_seconds.
  void upstream_request(int upstream, int target, int status, std::chrono::nanoseconds duration) {
    const size_t u = row(upstream, upstreams_);
    const TargetRows& t = target_rows_[u];
    counter(t.base + row(target, t.count) * kStatusClasses + status_index(status)).add(1);
    upstream_duration_[u].record(duration);
  }
  // Bytes of a long-lived stream (WebSocket, MQTT, TCP) as it goes, outside request().
  void bytes(int listener, uint64_t in, uint64_t out) {
    const size_t base = listener_base_ + row(listener, listeners_) * kPerListener;
    counter(base + kBytesIn).add(in);
    counter(base + kBytesOut).add(out);
  }
  void connection_opened(int listener) {
    counter(listener_base_ + row(listener, listeners_) * kPerListener + kOpened).add(1);
  }
  // Published with release ordering: a scrape reads `closed` (acquire) before `opened`, so on one
  // block it never sees more closes than opens.
  void connection_closed(int listener) {
    counter(listener_base_ + row(listener, listeners_) * kPerListener + kClosed).add_release(1);
  }
  void auth_failure(int route, AuthFailure reason) {
    counter(row(route, routes_) * kPerRoute + kRouteAuth + static_cast<size_t>(reason)).add(1);
  }
  void rate_limited(int route) {
    counter(row(route, routes_) * kPerRoute + kRouteRateLimited).add(1);
  }
  void cache(int route, CacheResult result) {
    counter(row(route, routes_) * kPerRoute + kRouteCache + static_cast<size_t>(result)).add(1);
  }
  void retry(int upstream, RetryReason reason) {
    counter(upstream_base_ + row(upstream, upstreams_) * kPerUpstream + static_cast<size_t>(reason))
        .add(1);
  }
  void websocket_message(int route) {
    counter(row(route, routes_) * kPerRoute + kRouteWebsocket).add(1);
  }
  // One PUBLISH (or will message) from an MQTT client: sluice_mqtt_messages_total.
  void mqtt_message(int listener, MqttResult result) {
    counter(listener_base_ + row(listener, listeners_) * kPerListener + kMqtt +
            static_cast<size_t>(result))
        .add(1);
  }

  // A datagram a udp listener dropped: sluice_udp_datagrams_dropped_total.
  void udp_dropped(int listener) {
    counter(listener_base_ + row(listener, listeners_) * kPerListener + kUdpDropped).add(1);
  }

  // --- Any thread ---
  // Every named row of the layout (zeros included), and the "" rows that are not all 0.
  Totals totals() const;
  // Bytes of counters and histograms: 240 per route, 72 per listener, 160 per upstream, 48 per
  // target, plus one of each for "" and up to a cache line of rounding.
  size_t memory_bytes() const;

 private:
  struct alignas(64) CounterLine {
    std::array<Counter, 8> c;
  };

  // Counters per route row: requests by class, auth failures by reason, rate limited, cache
  // results, websocket messages.
  static constexpr size_t kRouteRequests = 0;
  static constexpr size_t kRouteAuth = kRouteRequests + kStatusClasses;
  static constexpr size_t kRouteRateLimited = kRouteAuth + kAuthFailures;
  static constexpr size_t kRouteCache = kRouteRateLimited + 1;
  static constexpr size_t kRouteWebsocket = kRouteCache + kCacheResults;
  static constexpr size_t kPerRoute = kRouteWebsocket + 1;
  // Per listener row: bytes, connections, MQTT messages by result, UDP datagrams dropped.
  static constexpr size_t kBytesIn = 0, kBytesOut = 1, kOpened = 2, kClosed = 3, kMqtt = 4;
  static constexpr size_t kUdpDropped = kMqtt + kMqttResults;
  static constexpr size_t kPerListener = kUdpDropped + 1;
  // Per upstream row: retries by reason.
  static constexpr size_t kPerUpstream = kRetryReasons;

  // `index` if it is one of n rows, else n: the "" row. Anything but -1 outside [0, n) is a bug
  // of the caller (asserted in debug builds, counted under "" otherwise).
  static size_t row(int index, size_t n) {
    assert(index >= -1 && (index < 0 || static_cast<size_t>(index) < n));
    const auto i = static_cast<size_t>(index);  // -1 wraps to SIZE_MAX
    return i < n ? i : n;
  }
  Counter& counter(size_t i) const { return lines_[i / 8].c[i % 8]; }

  std::shared_ptr<const Layout> layout_;
  size_t routes_ = 0, upstreams_ = 0, listeners_ = 0;
  size_t listener_base_ = 0, upstream_base_ = 0, target_base_ = 0, counters_ = 0;
  // Upstream row u's targets: `count` named ones, then the "" one, kStatusClasses counters each
  // from counter `base` on.
  struct TargetRows {
    size_t base = 0;
    size_t count = 0;
  };
  std::vector<TargetRows> target_rows_;  // upstreams_ + 1
  std::unique_ptr<CounterLine[]> lines_;
  std::unique_ptr<Histogram[]> route_duration_;     // routes_ + 1
  std::unique_ptr<Histogram[]> upstream_duration_;  // upstreams_ + 1
};

// --- The process's registry -------------------------------------------------------------------

struct TargetHealth {
  std::string upstream;
  std::string target;  // address as written in the config
  bool healthy = false;
};

// Thread safety: every member may be called from any thread. One mutex guards the block and ring
// lists, the carry-over and the reload counts. It is held for a vector push (add_worker(),
// add_rate_ring()), and by a scrape to fold retired blocks and copy the carry-over and the list;
// the live blocks are read, the text formatted and the health source called after unlocking.
// Workers never take it on the request path.
class Registry {
 public:
  Registry();
  ~Registry();
  Registry(const Registry&) = delete;
  Registry& operator=(const Registry&) = delete;

  // A new block for `layout`, summed into every scrape until the last shared_ptr to it other
  // than the registry's is gone, then folded into the carry-over (at the next scrape or
  // add_worker()). Shared ownership of a mutable object on purpose: the worker (and its exchanges
  // still on that generation) write it, the registry reads it, and neither knows when the other
  // is done.
  std::shared_ptr<WorkerMetrics> add_worker(std::shared_ptr<const Layout> layout);
  // A worker's rate ring (rates.h), summed into rate_series() while its owner keeps it. Keep one
  // per worker across reloads: a ring is about time, not about a layout.
  std::shared_ptr<RateRing> add_rate_ring();

  // sluice_upstream_target_healthy: called on each prometheus(), on the scraping thread, without
  // the registry's lock held. Unset: no such series.
  void set_target_health(std::function<std::vector<TargetHealth>()> source);
  // sluice_config_reloads_total{result}: the main thread, once per reload attempt.
  void config_reload(ReloadResult result);

  // The sums over every block, live and retired, by label names.
  Totals totals();
  // The sum of every live ring's last 60 complete seconds before now_s.
  RateSeries rate_series(int64_t now_s);
  // The Prometheus text exposition format (version 0.0.4) of everything above.
  std::string prometheus();

  // Blocks still registered (live, or retired and not folded yet); for tests and diagnostics.
  size_t blocks();

 private:
  // mu_ held: folds every block whose only owner is the registry into carry_.
  void fold_retired();

  std::mutex mu_;
  std::vector<std::shared_ptr<WorkerMetrics>> blocks_;
  std::vector<std::shared_ptr<RateRing>> rings_;
  Totals carry_;
  std::array<uint64_t, kReloadResults> reloads_{};
  std::function<std::vector<TargetHealth>()> health_;
};

// Appends `value` to `out` escaped for a label value of the text format: \ " and newline.
void append_label_value(std::string& out, std::string_view value);

}  // namespace sluice::stats

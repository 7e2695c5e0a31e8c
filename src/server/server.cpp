#include "server/server.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <csignal>
#include <cstring>
#include <fstream>
#include <iostream>
#include <map>
#include <set>
#include <sstream>
#include <thread>
#include <tuple>

#include <fmt/format.h>
#include <boost/json.hpp>

#include "config/config.h"
#include "core/file.h"
#include "core/log.h"
#include "server/admin.h"
#include "server/asio.h"
#include "server/control.h"
#include "server/snapshot.h"
#include "server/worker.h"

namespace sluice::server {
namespace {

std::string listener_address(const config::Listener& l) {
  return l.host.find(':') != std::string::npos ? fmt::format("[{}]:{}", l.host, l.port)
                                               : fmt::format("{}:{}", l.host, l.port);
}

// "host:port", "udp:host:port" for udp listeners (a udp and a tcp listener may share a port).
std::string listener_key(const config::Listener& l) {
  return l.protocol == "udp" ? "udp:" + listener_address(l) : listener_address(l);
}

// One SO_REUSEPORT listening socket (a bound datagram socket for udp listeners: one per worker,
// the kernel spreads clients over them by address hash); -1 and `error` set on failure.
int bind_listener(const config::Listener& l, std::string& error) {
  bool v6 = l.host.find(':') != std::string::npos;
  const bool udp = l.protocol == "udp";
  int fd = ::socket(v6 ? AF_INET6 : AF_INET,
                    (udp ? SOCK_DGRAM : SOCK_STREAM) | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    error = std::strerror(errno);
    return -1;
  }
  int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
  sockaddr_storage ss{};
  socklen_t len = 0;
  if (v6) {
    auto* a = reinterpret_cast<sockaddr_in6*>(&ss);
    a->sin6_family = AF_INET6;
    a->sin6_port = htons(l.port);
    inet_pton(AF_INET6, l.host.c_str(), &a->sin6_addr);
    len = sizeof *a;
  } else {
    auto* a = reinterpret_cast<sockaddr_in*>(&ss);
    a->sin_family = AF_INET;
    a->sin_port = htons(l.port);
    inet_pton(AF_INET, l.host.c_str(), &a->sin_addr);
    len = sizeof *a;
  }
  if (::bind(fd, reinterpret_cast<sockaddr*>(&ss), len) != 0 || (!udp && ::listen(fd, 4096) != 0)) {
    error = std::strerror(errno);
    ::close(fd);
    return -1;
  }
  return fd;
}

class Gateway {
 public:
  explicit Gateway(const GatewayOptions& options) : options_(options) {}

  int run() {
    std::signal(SIGPIPE, SIG_IGN);
    // Signal handlers first, so a SIGHUP/SIGTERM during start-up is queued, not fatal.
    asio::io_context main_io{1};
    asio::signal_set signals(main_io, SIGINT, SIGTERM, SIGHUP);
    signals.add(SIGUSR1);
    std::vector<std::string> errors;
    auto snap = load(errors);
    if (!snap) {
      for (const auto& e : errors) std::cerr << e << "\n";
      return 2;
    }
    const config::Config& cfg = snap->config;
    log::Options lo;
    lo.access = cfg.log.access;
    lo.error = cfg.log.error;
    lo.max_queue_bytes = cfg.log.buffer;
    log::parse_level(cfg.log.level, lo.level);
    log::start(lo);

    int n = options_.workers_override > 0 ? options_.workers_override : cfg.workers;
    if (n <= 0) n = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
    workers_count_ = n;

    // Bind everything before starting anything: a port in use fails the start cleanly.
    std::vector<std::vector<ListenerSocket>> per_worker(n);
    std::string err;
    for (const auto& l : cfg.listeners) {
      for (int i = 0; i < n; ++i) {
        int fd = bind_listener(l, err);
        if (fd < 0) {
          log::error("cannot listen on {} ({}): {}", listener_key(l), l.name, err);
          std::cerr << "sluice: cannot listen on " << listener_key(l) << ": " << err << "\n";
          for (auto& v : per_worker) {
            for (auto& s : v) ::close(s.fd);
          }
          log::stop();
          return 1;
        }
        per_worker[i].push_back({listener_key(l), l.name, fd});
      }
      keys_.insert(listener_key(l));
    }
    for (int i = 0; i < n; ++i) {
      workers_.push_back(std::make_unique<Worker>(i));
      workers_.back()->start(snap, std::move(per_worker[i]));
    }
    current_ = snap;
    control_.start(snap);
    AdminHooks hooks;
    hooks.snapshot = [this] { return current_; };
    hooks.reload = [this] { return reload(); };
    hooks.metrics = [] {
      return metrics_registry().prometheus() +
             fmt::format(
                 "# HELP sluice_log_dropped_lines_total Log lines dropped because the log "
                 "could not keep up.\n# TYPE sluice_log_dropped_lines_total counter\n"
                 "sluice_log_dropped_lines_total {}\n",
                 log::dropped_lines());
    };
    hooks.stats = [this] { return stats_json(); };
    metrics_registry().set_target_health([this] {
      std::vector<stats::TargetHealth> out;
      auto snap = current_;  // (scrapes run on this thread too)
      const int64_t now = upstream::steady_now_ms();
      for (const auto& u : snap->upstreams) {
        for (const auto& t : u.targets) {
          out.push_back(
              {u.config->name, t.address,
               t.state->healthy.load(std::memory_order_relaxed) && !t.state->ejected(now)});
        }
      }
      return out;
    });
    admin_ = std::make_unique<AdminServer>(main_io, std::move(hooks));
    if (cfg.admin) {
      if (!admin_->start(*cfg.admin, err)) {
        log::error("cannot listen on {}:{} (admin): {}", cfg.admin->host, cfg.admin->port, err);
        std::cerr << "sluice: cannot listen on admin " << cfg.admin->host << ":" << cfg.admin->port
                  << ": " << err << "\n";
        control_.stop();
        for (auto& w : workers_) w->stop();
        log::stop();
        return 1;
      }
      log::info("admin API on http://{}{}", admin_->address(),
                cfg.admin->token.empty() ? " (no token)" : "");
    }
    for (const auto& l : cfg.listeners) {
      log::info("listening on {}{}://{} ({}), {} worker(s)", l.protocol, l.tls ? "s" : "",
                listener_address(l), l.name, n);
    }
    log::info("config {} loaded, checksum {}", cfg.file, snap->checksum);
    if (options_.on_ready) options_.on_ready();

    bool stopping = false;
    std::function<void(const error_code&, int)> on_signal = [&](const error_code& ec, int sig) {
      if (ec) return;
      if (sig == SIGHUP) {
        (void)reload();
      } else if (sig == SIGUSR1) {
        log::info("SIGUSR1: reopening log files");
        log::reopen();
      } else if (!stopping) {
        stopping = true;
        log::info("{}: draining (shutdown_timeout {} ms)", sig == SIGTERM ? "SIGTERM" : "SIGINT",
                  current_->config.shutdown_timeout.count());
        if (admin_) admin_->stop();
        for (auto& w : workers_) w->drain();
        deadline_ = std::chrono::steady_clock::now() + current_->config.shutdown_timeout;
        poll_drain(main_io);
        return;
      }
      signals.async_wait(on_signal);
    };
    signals.async_wait(on_signal);
    watch_log_drops(main_io);
    main_io.run();

    admin_.reset();
    control_.stop();
    for (auto& w : workers_) w->stop();
    workers_.clear();
    log::info("stopped");
    log::stop();
    return 0;
  }

 private:
  std::shared_ptr<const Snapshot> load(std::vector<std::string>& errors) {
    std::string text;
    config::LoadResult loaded;
    if (!options_.config_text.empty()) {
      text = options_.config_text;
      loaded = config::load_string(text, options_.config_path, ".");
    } else {
      if (!read_file(options_.config_path, text)) {
        errors.push_back(
            fmt::format("{}: cannot read: {}", options_.config_path, std::strerror(errno)));
        return nullptr;
      }
      loaded = config::load_file(options_.config_path);
    }
    for (const auto& d : loaded.diagnostics) {
      if (d.severity == config::Diagnostic::Severity::Error) {
        errors.push_back(d.str());
      } else if (log_started_) {
        log::warn("{}", d.str());
      } else {
        std::cerr << d.str() << "\n";
      }
    }
    if (!loaded.ok()) return nullptr;
    log_started_ = true;
    std::vector<std::string> warnings;
    auto snap = compile_snapshot(std::move(*loaded.config), text, errors, warnings);
    for (const auto& w : warnings) {
      if (log_started_) {
        log::warn("{}", w);
      } else {
        std::cerr << w << "\n";
      }
    }
    return snap;
  }

  ReloadOutcome reload() {
    ReloadOutcome out;
    std::vector<std::string> errors;
    auto snap = load(errors);
    if (!snap) {
      log::error("reload rejected: {} error(s); the previous config keeps serving", errors.size());
      for (const auto& e : errors) log::error("{}", e);
      out.errors = std::move(errors);
      metrics_registry().config_reload(stats::ReloadResult::Failure);
      return out;
    }
    // New listeners are bound here first, so a port in use rejects the whole reload.
    std::set<std::string> new_keys;
    std::vector<std::vector<ListenerSocket>> added(workers_.size());
    for (const auto& l : snap->config.listeners) {
      std::string key = listener_key(l);
      new_keys.insert(key);
      if (keys_.count(key)) continue;
      for (size_t i = 0; i < workers_.size(); ++i) {
        std::string err;
        int fd = bind_listener(l, err);
        if (fd < 0) {
          log::error("reload rejected: cannot listen on {}: {}", key, err);
          for (auto& v : added) {
            for (auto& s : v) ::close(s.fd);
          }
          out.errors.push_back(fmt::format("cannot listen on {}: {}", key, err));
          metrics_registry().config_reload(stats::ReloadResult::Failure);
          return out;
        }
        added[i].push_back({key, l.name, fd});
      }
    }
    std::vector<std::string> removed;
    for (const auto& k : keys_) {
      if (!new_keys.count(k)) removed.push_back(k);
    }
    for (size_t i = 0; i < workers_.size(); ++i) {
      workers_[i]->apply(snap, std::move(added[i]), removed);
    }
    keys_ = std::move(new_keys);
    auto previous = current_;
    current_ = snap;
    control_.apply(snap);
    update_admin(previous ? previous->config.admin : std::nullopt, snap->config.admin);
    log::info("config reloaded, checksum {}, generation {}", snap->checksum, snap->generation);
    out.ok = true;
    out.checksum = snap->checksum;
    metrics_registry().config_reload(stats::ReloadResult::Success);
    return out;
  }

  // GET /api/stats: rates over 1/10/60 s, status classes per second, per-route and per-upstream
  // counters and latency percentiles, upstream health, top clients (merged from the workers'
  // heavy-hitter sketches).
  std::string stats_json() {
    namespace json = boost::json;
    stats::Registry& reg = metrics_registry();
    const int64_t now_s = std::chrono::duration_cast<std::chrono::seconds>(
                              std::chrono::steady_clock::now().time_since_epoch())
                              .count();
    stats::RateSeries series = reg.rate_series(now_s);
    stats::Rates rates = series.rates();
    stats::Totals totals = reg.totals();
    auto classes = [](const std::array<uint64_t, stats::kStatusClasses>& a) {
      json::object o;
      for (size_t i = 0; i < stats::kStatusClasses; ++i) {
        o[std::string(stats::kStatusLabels[i])] = a[i];
      }
      return o;
    };
    auto ms = [](double seconds) { return std::round(seconds * 1e6) / 1e3; };
    json::array per_second;
    for (const auto& sec : series.seconds) {
      json::object o = classes(sec.by_class);
      o["ago_s"] = now_s - sec.second;
      per_second.push_back(std::move(o));
    }
    json::array routes;
    std::array<uint64_t, stats::kStatusClasses> all{};
    stats::HistogramCounts all_duration;
    for (const auto& [name, r] : totals.routes) {
      for (size_t i = 0; i < all.size(); ++i) all[i] += r.requests[i];
      all_duration.add(r.duration);
      uint64_t n = 0;
      for (auto c : r.requests) n += c;
      routes.push_back(json::object{
          {"route", name.empty() ? json::value(nullptr) : json::value(name)},
          {"requests", n},
          {"status", classes(r.requests)},
          {"p50_ms", ms(r.duration.quantile(0.5))},
          {"p90_ms", ms(r.duration.quantile(0.9))},
          {"p99_ms", ms(r.duration.quantile(0.99))},
          {"rate_limited", r.rate_limited},
          {"cache", json::object{{"hit", r.cache[0]}, {"miss", r.cache[1]}, {"stale", r.cache[2]}}},
          {"auth_failures", r.auth_failures[0] + r.auth_failures[1] + r.auth_failures[2]}});
    }
    auto snap = current_;
    const int64_t now_ms = upstream::steady_now_ms();
    json::array upstreams;
    for (const auto& u : snap->upstreams) {
      const std::string& name = u.config->name;
      auto it = totals.upstreams.find(name);
      json::array targets;
      for (const auto& t : u.targets) {
        json::object o{{"address", t.address},
                       {"healthy", t.state->healthy.load(std::memory_order_relaxed)},
                       {"ejected", t.state->ejected(now_ms)},
                       {"drained", t.state->drained.load(std::memory_order_relaxed)},
                       {"in_flight", t.state->in_flight.load(std::memory_order_relaxed)}};
        if (it != totals.upstreams.end()) {
          auto tt = it->second.targets.find(t.address);
          if (tt != it->second.targets.end()) o["status"] = classes(tt->second);
        }
        targets.push_back(std::move(o));
      }
      json::object o{{"upstream", name}, {"targets", std::move(targets)}};
      if (it != totals.upstreams.end()) {
        o["p50_ms"] = ms(it->second.duration.quantile(0.5));
        o["p99_ms"] = ms(it->second.duration.quantile(0.99));
        uint64_t retries = 0;
        for (auto r : it->second.retries) retries += r;
        o["retries"] = retries;
      }
      upstreams.push_back(std::move(o));
    }
    // Top clients: each worker keeps a Space-Saving sketch; a client's counts are added up.
    auto top = [&](bool by_bytes) {
      std::map<std::string, std::pair<uint64_t, uint64_t>> merged;  // client -> (count, error)
      for (auto& w : workers_) {
        for (const auto& item : (by_bytes ? w->top_bytes() : w->top_requests()).top(64)) {
          auto& [count, error] = merged[item.key];
          count += item.count;
          error += item.error;
        }
      }
      std::vector<std::tuple<uint64_t, uint64_t, std::string>> sorted;
      for (auto& [k, v] : merged) sorted.emplace_back(v.first, v.second, k);
      std::sort(sorted.rbegin(), sorted.rend());
      json::array out;
      for (size_t i = 0; i < sorted.size() && i < 10; ++i) {
        auto& [count, error, client] = sorted[i];
        out.push_back(json::object{
            {"client", client}, {by_bytes ? "bytes" : "requests", count}, {"error", error}});
      }
      return out;
    };
    uint64_t total = 0;
    for (auto c : all) total += c;
    json::object out{
        {"generation", snap->generation},
        {"checksum", snap->checksum},
        {"rps", json::object{{"1s", rates.rps_1s}, {"10s", rates.rps_10s}, {"60s", rates.rps_60s}}},
        {"requests", total},
        {"status", classes(all)},
        {"p50_ms", ms(all_duration.quantile(0.5))},
        {"p99_ms", ms(all_duration.quantile(0.99))},
        {"per_second", std::move(per_second)},
        {"routes", std::move(routes)},
        {"upstreams", std::move(upstreams)},
        {"top_clients", json::object{{"by_requests", top(false)}, {"by_bytes", top(true)}}}};
    return json::serialize(out) + "\n";
  }

  // A reload may move, add or remove the admin listener (its token applies per request).
  void update_admin(const std::optional<config::Admin>& before,
                    const std::optional<config::Admin>& after) {
    auto where = [](const std::optional<config::Admin>& a) {
      return a ? fmt::format("{}:{}", a->host, a->port) : std::string();
    };
    if (where(before) == where(after)) return;
    admin_->stop();
    if (!after) return;
    std::string err;
    if (admin_->start(*after, err)) {
      log::info("admin API on http://{}", admin_->address());
    } else {
      log::error("cannot listen on {} (admin): {}", where(after), err);
    }
  }

  // Once a second: say so in the error log when log lines had to be dropped.
  void watch_log_drops(asio::io_context& io) {
    auto t = std::make_shared<asio::steady_timer>(io, std::chrono::seconds(1));
    t->async_wait([this, t, &io](const error_code& ec) {
      if (ec) return;
      uint64_t now = log::dropped_lines();
      if (now > reported_drops_) {
        log::warn("{} log line(s) dropped in the last second: the log destination cannot keep up",
                  now - reported_drops_);
        reported_drops_ = now;
      }
      if (!io.stopped()) watch_log_drops(io);
    });
  }

  void poll_drain(asio::io_context& io) {
    int active = 0;
    for (auto& w : workers_) active += w->active_connections();
    if (active == 0 || std::chrono::steady_clock::now() >= deadline_) {
      if (active > 0) log::warn("shutdown_timeout reached with {} connection(s) open", active);
      io.stop();
      return;
    }
    auto t = std::make_shared<asio::steady_timer>(io, std::chrono::milliseconds(20));
    t->async_wait([this, t, &io](const error_code&) { poll_drain(io); });
  }

  const GatewayOptions& options_;
  int workers_count_ = 0;
  bool log_started_ = false;
  std::vector<std::unique_ptr<Worker>> workers_;
  std::set<std::string> keys_;
  std::shared_ptr<const Snapshot> current_;
  Control control_;
  std::unique_ptr<AdminServer> admin_;
  uint64_t reported_drops_ = 0;
  std::chrono::steady_clock::time_point deadline_;
};

}  // namespace

int run_gateway(const GatewayOptions& options) {
  Gateway g(options);
  return g.run();
}

}  // namespace sluice::server

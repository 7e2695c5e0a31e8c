#include "server/server.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstring>
#include <fstream>
#include <iostream>
#include <set>
#include <sstream>
#include <thread>

#include <fmt/format.h>

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

std::string listener_key(const config::Listener& l) {
  return l.host.find(':') != std::string::npos ? fmt::format("[{}]:{}", l.host, l.port)
                                               : fmt::format("{}:{}", l.host, l.port);
}

// One SO_REUSEPORT listening socket; -1 and `error` set on failure.
int bind_listener(const config::Listener& l, std::string& error) {
  bool v6 = l.host.find(':') != std::string::npos;
  int fd = ::socket(v6 ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
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
  if (::bind(fd, reinterpret_cast<sockaddr*>(&ss), len) != 0 || ::listen(fd, 4096) != 0) {
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
      log::info("listening on http://{} ({}), {} worker(s)", listener_key(l), l.name, n);
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
    return out;
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
  std::chrono::steady_clock::time_point deadline_;
};

}  // namespace

int run_gateway(const GatewayOptions& options) {
  Gateway g(options);
  return g.run();
}

}  // namespace sluice::server

#include "server/control.h"

#include <random>
#include <thread>

#include <boost/asio/ip/tcp.hpp>

#include "core/log.h"
#include "net/proxy_protocol.h"
#include "server/asio.h"
#include "server/snapshot.h"
#include "server/tls_stream.h"
#include "server/watchdog.h"

namespace sluice::server {
namespace {

bool status_expected(int status, const config::HealthCheck& hc) {
  for (auto [lo, hi] : hc.expect) {
    if (status >= lo && status <= hi) return true;
  }
  return false;
}

// "HTTP/1.1 200 OK\r\n..." -> 200, or 0 when it is not a status line.
int parse_status_line(std::string_view s) {
  if (s.size() < 12 || s.substr(0, 7) != "HTTP/1." || s[8] != ' ') return 0;
  int code = 0;
  for (size_t i = 9; i < 12; ++i) {
    if (s[i] < '0' || s[i] > '9') return 0;
    code = code * 10 + (s[i] - '0');
  }
  return code;
}

}  // namespace

struct Control::Impl {
  asio::io_context io{1};
  std::thread thread;
  uint64_t epoch = 0;  // bumped on apply/stop: loops of an older epoch end at their next wake-up
  std::mt19937_64 rng{std::random_device{}()};

  void launch(const std::shared_ptr<const Snapshot>& snap) {
    ++epoch;
    auto& registry = state_registry();
    registry.collect();
    for (size_t u = 0; u < snap->upstreams.size(); ++u) {
      const CompiledUpstream& up = snap->upstreams[u];
      bool has_dynamic = false;
      for (size_t t = 0; t < up.targets.size(); ++t) {
        has_dynamic = has_dynamic || up.targets[t].dynamic;
        if (up.config->health_check.enabled) {
          asio::co_spawn(io, check_loop(snap, u, t, epoch), asio::detached);
        } else {
          // No active checks (any more): the target is judged by traffic alone.
          up.targets[t].state->healthy.store(true, std::memory_order_relaxed);
        }
      }
      if (has_dynamic) asio::co_spawn(io, dns_loop(snap, u, epoch), asio::detached);
    }
  }

  asio::awaitable<void> check_loop(std::shared_ptr<const Snapshot> snap, size_t u, size_t t,
                                   uint64_t my_epoch) {
    const CompiledUpstream& up = snap->upstreams[u];
    const CompiledTarget& target = up.targets[t];
    const config::HealthCheck& hc = up.config->health_check;
    asio::steady_timer timer(io);
    // Spread the first checks over one interval, then jitter each interval by +-10%, so checks of
    // many targets (and many instances) do not arrive in bursts.
    auto interval_ms = std::max<int64_t>(1, hc.interval.count());
    auto delay = std::chrono::milliseconds(rng() % static_cast<uint64_t>(interval_ms));
    for (;;) {
      timer.expires_after(delay);
      co_await timer.async_wait(use_nothrow);
      if (my_epoch != epoch) co_return;
      bool ok = co_await probe(up, target, hc);
      if (my_epoch != epoch) co_return;
      record(up, target, hc, ok);
      delay = std::chrono::milliseconds(interval_ms * 9 / 10 +
                                        static_cast<int64_t>(rng() % (interval_ms / 5 + 1)));
    }
  }

  // One check: connect (and the TLS handshake for an upstream with `tls:`), then for http checks
  // a GET whose status line must be expected.
  asio::awaitable<bool> probe(const CompiledUpstream& up, const CompiledTarget& target,
                              const config::HealthCheck& hc) {
    std::string ip = target.dynamic ? target.state->ip() : target.ip;
    error_code ec;
    auto addr = asio::ip::make_address(ip, ec);
    if (ec) co_return false;
    tcp::socket sock(io);
    Watchdog wd(io.get_executor());
    wd.arm(hc.timeout, &sock);  // one deadline for connect + request + status line
    auto [cec] = co_await sock.async_connect(tcp::endpoint(addr, target.port), use_nothrow);
    if (cec) co_return false;
    if (up.config->proxy_protocol != 0) {
      // A target that expects a PROXY header gets one saying "no client here" (v2 LOCAL, v1
      // UNKNOWN): it then uses the connection's own addresses, as for any health check.
      std::string header = net::encode_proxy_local(up.config->proxy_protocol);
      auto [pec, pn] = co_await asio::async_write(sock, asio::buffer(header), use_nothrow);
      if (pec) co_return false;
    }
    std::unique_ptr<TlsStream> tls;
    if (up.tls) {
      SSL* ssl = up.tls->new_ssl(target.host, target.key);
      if (ssl == nullptr) co_return false;
      tls = std::make_unique<TlsStream>(sock, ssl);
      if (co_await tls->handshake()) {
        tls::clear_errors();
        co_return false;
      }
    }
    if (hc.type == config::HealthCheck::Type::Tcp) co_return true;
    Io io{&sock, tls.get()};
    std::string req = "GET " + hc.path + " HTTP/1.1\r\nHost: " + target.address +
                      "\r\nUser-Agent: sluice-health-check\r\nConnection: close\r\n\r\n";
    auto [wec, wn] = co_await io.write(asio::buffer(req));
    if (wec) co_return false;
    char buf[256];
    size_t have = 0;
    while (have < 12) {
      auto [rec, n] = co_await io.read_some(asio::buffer(buf + have, sizeof buf - have));
      if (rec) co_return false;
      have += n;
    }
    int status = parse_status_line(std::string_view(buf, have));
    co_return status != 0 && status_expected(status, hc);
  }

  static void record(const CompiledUpstream& up, const CompiledTarget& target,
                     const config::HealthCheck& hc, bool ok) {
    upstream::TargetState& st = *target.state;
    st.last_check_ms.store(upstream::steady_now_ms(), std::memory_order_relaxed);
    if (ok) {
      st.check_failures.store(0, std::memory_order_relaxed);
      int n = st.check_successes.fetch_add(1, std::memory_order_relaxed) + 1;
      if (!st.healthy.load(std::memory_order_relaxed) && n >= hc.healthy) {
        st.healthy.store(true, std::memory_order_relaxed);
        log::info("upstream {} target {} is healthy again ({} checks passed)", up.config->name,
                  target.address, n);
      }
    } else {
      st.check_successes.store(0, std::memory_order_relaxed);
      int n = st.check_failures.fetch_add(1, std::memory_order_relaxed) + 1;
      if (st.healthy.load(std::memory_order_relaxed) && n >= hc.unhealthy) {
        st.healthy.store(false, std::memory_order_relaxed);
        log::warn("upstream {} target {} is down ({} checks failed)", up.config->name,
                  target.address, n);
      }
    }
  }

  asio::awaitable<void> dns_loop(std::shared_ptr<const Snapshot> snap, size_t u,
                                 uint64_t my_epoch) {
    const CompiledUpstream& up = snap->upstreams[u];
    asio::steady_timer timer(io);
    tcp::resolver resolver(io);  // getaddrinfo runs on Asio's resolver thread, not here
    for (;;) {
      for (const CompiledTarget& t : up.targets) {
        if (!t.dynamic) continue;
        auto [ec, results] =
            co_await resolver.async_resolve(t.host, std::to_string(t.port), use_nothrow);
        if (my_epoch != epoch) co_return;
        if (ec || results.empty()) {
          log::warn("upstream {} target {}: DNS lookup failed ({}); keeping {}", up.config->name,
                    t.address, ec.message(), t.state->ip().empty() ? "no address" : t.state->ip());
          continue;
        }
        std::string ip = results.begin()->endpoint().address().to_string();
        if (ip != t.state->ip()) {
          log::info("upstream {} target {} now resolves to {}", up.config->name, t.address, ip);
          t.state->set_ip(ip);
        }
      }
      timer.expires_after(up.config->dns_ttl);
      co_await timer.async_wait(use_nothrow);
      if (my_epoch != epoch) co_return;
    }
  }
};

Control::Control() : impl_(std::make_unique<Impl>()) {}
Control::~Control() { stop(); }

void Control::start(std::shared_ptr<const Snapshot> snapshot) {
  asio::post(impl_->io, [this, snapshot] { impl_->launch(snapshot); });
  impl_->thread = std::thread([this] {
    for (;;) {
      try {
        impl_->io.run();
        break;
      } catch (const std::exception& e) {
        log::error("control thread: unexpected exception: {}", e.what());
      }
    }
  });
}

void Control::apply(std::shared_ptr<const Snapshot> snapshot) {
  asio::post(impl_->io, [this, snapshot] { impl_->launch(snapshot); });
}

void Control::stop() {
  if (!impl_ || !impl_->thread.joinable()) return;
  impl_->io.stop();
  impl_->thread.join();
}

}  // namespace sluice::server

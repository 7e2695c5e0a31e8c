#include "proxy/udp_session.h"

#include <algorithm>
#include <chrono>
#include <map>
#include <optional>
#include <vector>

#include "core/log.h"
#include "proxy/access_log.h"
#include "proxy/hold.h"
#include "proxy/upstream_call.h"
#include "server/snapshot.h"
#include "server/worker.h"
#include "stats/metrics.h"
#include "upstream/balancer.h"
#include "upstream/target_state.h"

namespace sluice::proxy {
namespace {

using udp = asio::ip::udp;
using server::CompiledTarget;
using server::CompiledUpstream;
using server::Snapshot;
using server::Worker;
using Clock = std::chrono::steady_clock;

constexpr size_t kMaxDatagram = 65536;

// One client address's session.
struct UdpSession {
  explicit UdpSession(asio::io_context& io) : upstream(io) {}
  udp::endpoint client;
  std::string client_ip;
  udp::socket upstream;  // connected to the target
  std::shared_ptr<const Snapshot> snap;
  int upstream_index = -1;
  const CompiledTarget* target = nullptr;
  Hold<int64_t> slot;                             // the upstream's max_connections
  Hold<uint32_t> target_load;                     // the target's in-flight count
  std::shared_ptr<stats::WorkerMetrics> metrics;  // the block the session was opened on
  int metrics_listener = -1;
  Clock::time_point start = Clock::now();
  Clock::time_point last_activity = start;
  uint64_t bytes_in = 0, bytes_out = 0;  // from / to the client
  bool ended = false;
};

// Shared by the receive loop, the idle sweeper and each session's reply reader.
struct UdpListener {
  UdpListener(Worker& w, std::shared_ptr<udp::socket> s, std::string n)
      : worker(w), socket(std::move(s)), name(std::move(n)), sweep_timer(socket->get_executor()) {}
  Worker& worker;
  std::shared_ptr<udp::socket> socket;
  std::string name;
  std::map<udp::endpoint, std::shared_ptr<UdpSession>> sessions;
  std::vector<char> reply_buf = std::vector<char>(kMaxDatagram);  // replies are relayed at once
  asio::steady_timer sweep_timer;
  bool closed = false;
  Clock::time_point last_drop_log{};
  uint64_t drops_unlogged = 0;
};

std::string ip_of(const udp::endpoint& ep) {
  auto addr = ep.address();
  if (addr.is_v6() && addr.to_v6().is_v4_mapped()) {
    addr = asio::ip::make_address_v4(asio::ip::v4_mapped, addr.to_v6());
  }
  return addr.to_string();
}

// The listener and upstream of `snap` for `name`: (listener index, upstream index), -1 if gone.
std::pair<int, int> find_indexes(const Snapshot& snap, const std::string& name) {
  int li = -1, ui = -1;
  for (size_t i = 0; i < snap.config.listeners.size(); ++i) {
    if (snap.config.listeners[i].name == name) li = static_cast<int>(i);
  }
  if (li < 0) return {li, ui};
  const std::string& up = snap.config.listeners[li].upstream;
  for (size_t i = 0; i < snap.upstreams.size(); ++i) {
    if (snap.upstreams[i].config->name == up) ui = static_cast<int>(i);
  }
  return {li, ui};
}

void drop(UdpListener& l, std::string_view why) {
  const auto& snap = l.worker.snapshot();
  if (snap->config.admin) l.worker.metrics()->udp_dropped(find_indexes(*snap, l.name).first);
  // Said at most once a second: a flood must not become a flood of log lines.
  ++l.drops_unlogged;
  const auto now = Clock::now();
  if (now - l.last_drop_log >= std::chrono::seconds(1)) {
    log::warn("udp listener {}: {} datagram(s) dropped ({})", l.name, l.drops_unlogged, why);
    l.drops_unlogged = 0;
    l.last_drop_log = now;
  }
}

// One line per session (SPEC.md section 6): protocol "udp", status 200 (502 when the target
// refused), bytes each way, the target, error = why the gateway ended it other than idleness.
void write_log(const UdpListener& l, const UdpSession& s, std::string_view error) {
  l.worker.top_requests().add(s.client_ip, 1);
  l.worker.top_bytes().add(s.client_ip, s.bytes_in + s.bytes_out);
  if (!log::access_enabled()) return;
  AccessRecord r;
  r.client_ip = s.client_ip;
  r.listener = l.name;
  r.protocol = "udp";
  r.status = error.empty() || error == "listener closed" ? 200 : 502;
  r.bytes_in = s.bytes_in;
  r.bytes_out = s.bytes_out;
  r.duration_us =
      std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - s.start).count();
  r.upstream = s.snap->upstreams[s.upstream_index].config->name;
  r.target = s.target->address;
  r.attempts = 1;
  r.error = error;
  write_access(r, s.snap->config.log.access_format == "combined");
}

void end_session(UdpListener& l, const std::shared_ptr<UdpSession>& s, std::string_view why) {
  if (s->ended) return;
  s->ended = true;
  write_log(l, *s, why);
  if (s->metrics) s->metrics->connection_closed(s->metrics_listener);
  error_code ignored;
  s->upstream.close(ignored);  // ends its reply reader
  s->slot.reset();
  s->target_load.reset();
  l.sessions.erase(s->client);
}

// A new session for `client`, or null (the datagram is then dropped: `why` says why).
std::shared_ptr<UdpSession> open_session(UdpListener& l, const udp::endpoint& client,
                                         std::string_view& why) {
  Worker& worker = l.worker;
  std::shared_ptr<const Snapshot> snap = worker.snapshot();
  auto [li, ui] = find_indexes(*snap, l.name);
  if (li < 0 || ui < 0) {
    why = "listener removed";
    return nullptr;
  }
  if (l.sessions.size() >= kMaxUdpSessions) {
    why = "session table full";
    return nullptr;
  }
  const CompiledUpstream& up = snap->upstreams[ui];
  upstream::UpstreamCounters& counters = *up.counters;
  if (!take_slot(counters.active, up.config->max_connections)) {
    why = "upstream max_connections reached";
    return nullptr;
  }
  auto s = std::make_shared<UdpSession>(worker.io());
  s->slot = Hold<int64_t>::adopt(counters.active);
  s->client = client;
  s->client_ip = ip_of(client);

  upstream::PickContext ctx;
  ctx.random = worker.random();
  ctx.hash = upstream::hash_key(s->client_ip);
  std::vector<uint32_t> load;
  fill_load(up, ctx, load);
  std::vector<bool> excluded;
  exclude_unavailable(up, upstream::steady_now_ms(), excluded);
  std::optional<size_t> pick = worker.balancer(*snap, static_cast<size_t>(ui)).pick(ctx, excluded);
  if (!pick) {
    why = "no available target";
    return nullptr;
  }
  const CompiledTarget& target = up.targets[*pick];
  error_code ec;
  auto addr = asio::ip::make_address(target.dynamic ? target.state->ip() : target.ip, ec);
  if (!ec) {
    udp::endpoint ep(addr, target.port);
    s->upstream.open(ep.protocol(), ec);
    if (!ec) s->upstream.non_blocking(true, ec);
    if (!ec) s->upstream.connect(ep, ec);
  }
  if (ec) {
    log::warn("udp listener {}: cannot open a socket to {}: {}", l.name, target.address,
              ec.message());
    why = "socket to the target failed";
    return nullptr;
  }
  s->snap = std::move(snap);
  s->upstream_index = ui;
  s->target = &target;
  s->target_load = Hold(target.state->in_flight);
  if (s->snap->config.admin) {
    s->metrics = worker.metrics();
    s->metrics_listener = li;
    s->metrics->connection_opened(li);
  }
  return s;
}

// Datagrams from the target, relayed to the client as they come (no buffer per session).
asio::awaitable<void> reply_loop(std::shared_ptr<UdpListener> l, std::shared_ptr<UdpSession> s) {
  while (!s->ended) {
    auto [ec] = co_await s->upstream.async_wait(udp::socket::wait_read, use_nothrow);
    if (ec || s->ended) co_return;
    for (;;) {
      error_code rec;
      size_t n = s->upstream.receive(asio::buffer(l->reply_buf), 0, rec);
      if (rec == asio::error::would_block || rec == asio::error::try_again) break;
      if (rec) {
        // ICMP port unreachable from the target (or another error): a failure it is blamed for.
        const auto& up = s->snap->upstreams[s->upstream_index];
        upstream::record_outcome(*s->target->state, up.states, up.outlier, true,
                                 upstream::steady_now_ms());
        log::warn("upstream {} target {}: {} (udp listener {})", up.config->name,
                  s->target->address, rec.message(), l->name);
        end_session(*l, s,
                    rec == asio::error::connection_refused ? "upstream refused"
                                                           : "upstream receive failed");
        co_return;
      }
      s->last_activity = Clock::now();
      error_code sec;
      l->socket->send_to(asio::buffer(l->reply_buf.data(), n), s->client, 0, sec);
      if (sec) {
        drop(*l, "client send buffer full");
        continue;
      }
      s->bytes_out += n;
      if (s->metrics) s->metrics->bytes(s->metrics_listener, 0, n);
    }
  }
}

// Ends sessions idle for longer than their upstream's timeouts.idle.
asio::awaitable<void> sweep_loop(std::shared_ptr<UdpListener> l) {
  while (!l->closed) {
    Duration idle = std::chrono::seconds(60);
    if (auto [li, ui] = find_indexes(*l->worker.snapshot(), l->name); ui >= 0) {
      idle = l->worker.snapshot()->upstreams[ui].config->timeouts.idle;
    }
    auto interval =
        std::clamp<Duration>(idle / 4, std::chrono::milliseconds(10), std::chrono::seconds(1));
    l->sweep_timer.expires_after(interval);
    co_await l->sweep_timer.async_wait(use_nothrow);
    if (l->closed) co_return;
    const auto now = Clock::now();
    std::vector<std::shared_ptr<UdpSession>> expired;
    for (const auto& [ep, s] : l->sessions) {
      if (now - s->last_activity >= s->snap->upstreams[s->upstream_index].config->timeouts.idle) {
        expired.push_back(s);
      }
    }
    for (const auto& s : expired) end_session(*l, s, "");
  }
}

}  // namespace

asio::awaitable<void> serve_udp(server::Worker& worker, std::shared_ptr<udp::socket> socket,
                                std::string listener_name) {
  auto l = std::make_shared<UdpListener>(worker, std::move(socket), std::move(listener_name));
  error_code ec;
  l->socket->non_blocking(true, ec);  // replies are sent without waiting (dropped when full)
  asio::co_spawn(worker.io(), sweep_loop(l), asio::detached);
  std::vector<char> buf(kMaxDatagram);
  for (;;) {
    udp::endpoint from;
    auto [rec, n] = co_await l->socket->async_receive_from(asio::buffer(buf), from, use_nothrow);
    if (rec) {
      if (rec == asio::error::operation_aborted || !l->socket->is_open()) break;
      continue;  // (an ICMP error queued on the listening socket, ...)
    }
    auto it = l->sessions.find(from);
    std::shared_ptr<UdpSession> s;
    if (it != l->sessions.end()) {
      s = it->second;
    } else {
      std::string_view why;
      s = open_session(*l, from, why);
      if (!s) {
        drop(*l, why);
        continue;
      }
      l->sessions.emplace(from, s);
      asio::co_spawn(worker.io(), reply_loop(l, s), asio::detached);
    }
    s->last_activity = Clock::now();
    error_code sec;
    s->upstream.send(asio::buffer(buf.data(), n), 0, sec);
    if (sec == asio::error::would_block || sec == asio::error::try_again) {
      drop(*l, "upstream send buffer full");
      continue;
    }
    if (sec) {
      const auto& up = s->snap->upstreams[s->upstream_index];
      upstream::record_outcome(*s->target->state, up.states, up.outlier, true,
                               upstream::steady_now_ms());
      end_session(
          *l, s,
          sec == asio::error::connection_refused ? "upstream refused" : "upstream send failed");
      continue;
    }
    s->bytes_in += n;
    if (s->metrics) s->metrics->bytes(s->metrics_listener, n, 0);
  }
  l->closed = true;
  l->sweep_timer.cancel();
  std::vector<std::shared_ptr<UdpSession>> all;
  for (const auto& [ep, s] : l->sessions) all.push_back(s);
  for (const auto& s : all) end_session(*l, s, "listener closed");
}

}  // namespace sluice::proxy

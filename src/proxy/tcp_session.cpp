#include "proxy/tcp_session.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <optional>
#include <vector>

#include <boost/asio/experimental/awaitable_operators.hpp>

#include "core/log.h"
#include "proxy/access_log.h"
#include "proxy/hold.h"
#include "proxy/proxy_header.h"
#include "proxy/upstream_call.h"
#include "server/snapshot.h"
#include "server/watchdog.h"
#include "server/worker.h"
#include "stats/metrics.h"
#include "upstream/balancer.h"
#include "upstream/target_state.h"

namespace sluice::proxy {
namespace {

using server::CompiledTarget;
using server::CompiledUpstream;
using server::Snapshot;
using server::Watchdog;
using server::Worker;
using Clock = std::chrono::steady_clock;

constexpr size_t kSmallBuffer = 16 * 1024;
constexpr size_t kLargeBuffer = 256 * 1024;
// splice(2) relay of a bulk direction: the bytes move socket -> pipe -> socket inside the kernel.
constexpr size_t kPipeSize = 1024 * 1024;

// A pipe for splice(2), closed with the direction that made it.
struct Pipe {
  int r = -1, w = -1;
  Pipe() {
    int fds[2];
    if (::pipe2(fds, O_NONBLOCK | O_CLOEXEC) != 0) return;
    r = fds[0];
    w = fds[1];
    ::fcntl(w, F_SETPIPE_SZ, static_cast<int>(kPipeSize));  // best effort: 64 KiB otherwise
  }
  ~Pipe() {
    if (r >= 0) ::close(r);
    if (w >= 0) ::close(w);
  }
  Pipe(const Pipe&) = delete;
  Pipe& operator=(const Pipe&) = delete;
  bool ok() const { return r >= 0; }
};

// Where the session stands, for draining: only a connection being set up is closed by a drain.
enum class Phase { Setup, Relaying };

class TcpSession final : public server::Session {
 public:
  TcpSession(Worker& worker, tcp::socket socket, std::string listener)
      : worker_(worker),
        client_(std::move(socket)),
        upstream_(client_.get_executor()),
        listener_name_(std::move(listener)),
        wd_(client_.get_executor()),
        idle_timer_(client_.get_executor()) {
    worker_.add_session(this);
  }
  ~TcpSession() override {
    if (conn_metrics_) conn_metrics_->connection_closed(conn_listener_);
    worker_.remove_session(this);
  }

  void on_drain() override {
    if (phase_ != Phase::Setup) return;
    error_code ignored;
    client_.cancel(ignored);
    upstream_.cancel(ignored);
  }

  asio::awaitable<void> run();

 private:
  asio::awaitable<Error> connect_upstream(const CompiledUpstream& up);
  // Relays `from` -> `to` until EOF (then half-closes `to`) or an error (then ends both ways).
  asio::awaitable<void> pump(tcp::socket& from, tcp::socket& to, uint64_t& count, bool inbound);
  // The rest of a bulk direction through a pipe (splice(2)); false when no pipe could be made
  // (the caller keeps copying).
  asio::awaitable<bool> splice_rest(tcp::socket& from, tcp::socket& to, uint64_t& count,
                                    bool inbound);
  // `from` reached EOF: pass the half-close on (unless the other direction is already done:
  // both sockets are closed next anyway).
  void half_close(tcp::socket& to);
  void read_failed(const error_code& ec, bool inbound);
  asio::awaitable<void> idle_watch(Duration idle);
  // Ends both directions now. `reset`: the other side gets a reset too (SO_LINGER 0).
  void abort(std::string_view why, bool reset);
  void write_log(const Error& error);

  Worker& worker_;
  tcp::socket client_;
  tcp::socket upstream_;
  std::string listener_name_;
  Addresses addrs_;
  Watchdog wd_;
  asio::steady_timer idle_timer_;
  Phase phase_ = Phase::Setup;

  std::shared_ptr<const Snapshot> snap_;
  const config::Listener* listener_ = nullptr;
  int listener_index_ = -1;
  int upstream_index_ = -1;
  std::shared_ptr<stats::WorkerMetrics> conn_metrics_;
  int conn_listener_ = -1;

  Hold<int64_t> slot_;          // counts in the upstream's max_connections
  Hold<uint32_t> target_load_;  // the target's in-flight count (least_conn, p2c)
  const CompiledTarget* target_ = nullptr;
  int attempts_ = 0;
  Clock::time_point start_ = Clock::now();
  std::optional<Clock::duration> connect_time_;
  uint64_t bytes_in_ = 0, bytes_out_ = 0;  // from / to the client
  Clock::time_point last_activity_ = Clock::now();
  int pumps_done_ = 0;
  bool aborted_ = false;
  std::string_view end_reason_;  // why the relay ended early ("" = both sides closed)
};

asio::awaitable<void> TcpSession::run() {
  snap_ = worker_.snapshot();
  const auto& listeners = snap_->config.listeners;
  for (size_t i = 0; i < listeners.size(); ++i) {
    if (listeners[i].name == listener_name_) {
      listener_ = &listeners[i];
      listener_index_ = static_cast<int>(i);
    }
  }
  for (size_t i = 0; listener_ != nullptr && i < snap_->upstreams.size(); ++i) {
    if (snap_->upstreams[i].config->name == listener_->upstream) {
      upstream_index_ = static_cast<int>(i);
    }
  }
  if (listener_ == nullptr || upstream_index_ < 0) co_return;  // (a reload removed it meanwhile)
  const CompiledUpstream& up = snap_->upstreams[upstream_index_];
  // The local address only matters for a PROXY header (a syscall saved per connection).
  addrs_ = connection_addresses(client_, listener_->proxy_protocol || up.config->proxy_protocol);
  if (snap_->config.admin) {
    conn_metrics_ = worker_.metrics();
    conn_listener_ = listener_index_;
    conn_metrics_->connection_opened(conn_listener_);
  }

  error_code ignored;
  if (listener_->proxy_protocol) {
    std::string_view why =
        co_await accept_proxy_header(client_, wd_, listener_->limits.header_timeout, addrs_);
    if (!why.empty()) {
      log::warn("tcp listener {}: PROXY header from {} refused: {}", listener_name_,
                addrs_.client.ip, why);
      write_log(Error{Source::Downstream, ErrorKind::BadRequest});
      client_.close(ignored);
      co_return;
    }
  }
  if (worker_.draining()) {
    write_log(Error{Source::Internal, ErrorKind::Draining});
    client_.close(ignored);
    co_return;
  }

  Error error = co_await connect_upstream(up);
  if (error) {
    write_log(error);
    client_.close(ignored);
    co_return;
  }

  // (TCP_NODELAY is set: on client_ by accept_loop, on upstream_ by connect_target)
  phase_ = Phase::Relaying;
  last_activity_ = Clock::now();
  using namespace asio::experimental::awaitable_operators;
  co_await (pump(client_, upstream_, bytes_in_, true) &&
            pump(upstream_, client_, bytes_out_, false) && idle_watch(up.config->timeouts.idle));
  write_log(Error{});
  client_.close(ignored);
  upstream_.close(ignored);
}

asio::awaitable<Error> TcpSession::connect_upstream(const CompiledUpstream& up) {
  const config::Upstream& uc = *up.config;
  upstream::UpstreamCounters& counters = *up.counters;
  // Circuit breaker: one slot per connection under max_connections, or refused at once.
  if (!take_slot(counters.active, uc.max_connections)) {
    co_return Error{Source::Upstream, ErrorKind::CircuitOpen};
  }
  slot_ = Hold<int64_t>::adopt(counters.active);

  const std::shared_ptr<stats::WorkerMetrics> metrics =
      snap_->config.admin && worker_.snapshot() == snap_ ? worker_.metrics() : nullptr;
  upstream::PickContext ctx;
  ctx.random = worker_.random();
  ctx.hash = upstream::hash_key(addrs_.client.ip);  // the one key an L4 connection has
  std::vector<uint32_t> load;
  fill_load(up, ctx, load);
  const int max_tries = 1 + (uc.retries.on_connect_failure ? std::max(0, uc.retries.attempts) : 0);
  std::vector<bool> tried(up.targets.size(), false), excluded, fresh;
  Error last{Source::Upstream, ErrorKind::NoTarget};
  const auto connect_started = Clock::now();
  for (int attempt = 0; attempt < max_tries && !worker_.draining(); ++attempt) {
    if (!exclude_unavailable(up, upstream::steady_now_ms(), excluded)) break;
    fresh.assign(excluded.begin(), excluded.end());
    for (size_t i = 0; i < tried.size(); ++i) fresh[i] = fresh[i] || tried[i];
    upstream::Balancer& balancer = worker_.balancer(*snap_, static_cast<size_t>(upstream_index_));
    std::optional<size_t> pick = balancer.pick(ctx, fresh);
    if (!pick) pick = balancer.pick(ctx, excluded);  // every target tried: one again
    if (!pick) break;
    if (attempt > 0 && metrics) {
      metrics->retry(upstream_index_, stats::RetryReason::ConnectFailure);
    }
    const CompiledTarget& target = up.targets[*pick];
    tried[*pick] = true;
    ++attempts_;
    target_ = &target;
    target_load_ = Hold(target.state->in_flight);
    const std::string ip = target.dynamic ? target.state->ip() : target.ip;
    error_code ignored;
    upstream_.close(ignored);  // (a failed attempt's socket)
    const auto attempt_started = Clock::now();
    last = co_await connect_target(upstream_, ip, target.port, uc.timeouts.connect, wd_);
    if (!last && uc.proxy_protocol != 0) {
      last = co_await send_proxy_header(upstream_, uc.proxy_protocol, addrs_, wd_,
                                        uc.timeouts.connect);
    }
    if (last && worker_.draining()) break;  // cancelled by the drain: not the target's fault
    upstream::record_outcome(*target.state, up.states, up.outlier, static_cast<bool>(last),
                             upstream::steady_now_ms());
    if (!last) {
      connect_time_ = Clock::now() - connect_started;
      co_return Error{};
    }
    if (metrics) {
      metrics->upstream_request(upstream_index_, static_cast<int>(*pick), 0,
                                Clock::now() - attempt_started);
    }
    log::warn("upstream {} target {}: {} (tcp listener {})", uc.name, target.address, last.reason(),
              listener_name_);
    target_load_.reset();
  }
  error_code ignored;
  upstream_.close(ignored);
  if (worker_.draining()) co_return Error{Source::Internal, ErrorKind::Draining};
  co_return last;
}

asio::awaitable<void> TcpSession::pump(tcp::socket& from, tcp::socket& to, uint64_t& count,
                                       bool inbound) {
  server::IoBuffer buf = worker_.buffers().take(kSmallBuffer);
  for (;;) {
    auto [ec, n] = co_await from.async_read_some(asio::buffer(buf.data(), buf.size()), use_nothrow);
    if (ec) {
      if (ec == asio::error::eof && !aborted_) {
        half_close(to);
      } else {
        read_failed(ec, inbound);
      }
      break;
    }
    last_activity_ = Clock::now();
    count += n;
    if (conn_metrics_) conn_metrics_->bytes(conn_listener_, inbound ? n : 0, inbound ? 0 : n);
    auto [wec, written] = co_await asio::async_write(to, asio::buffer(buf.data(), n), use_nothrow);
    if (wec) {
      if (!aborted_) abort(inbound ? "upstream write failed" : "client write failed", true);
      break;
    }
    last_activity_ = Clock::now();
    if (n == buf.size()) {
      // A bulk transfer: the kernel moves the rest (no copy through this process); short
      // exchanges never pay for the pipe.
      worker_.buffers().give(std::move(buf));
      if (co_await splice_rest(from, to, count, inbound)) break;
      buf = worker_.buffers().take(kLargeBuffer);  // no pipe (fd limit): bigger reads instead
    }
  }
  worker_.buffers().give(std::move(buf));
  if (++pumps_done_ == 2) idle_timer_.cancel();
}

asio::awaitable<bool> TcpSession::splice_rest(tcp::socket& from, tcp::socket& to, uint64_t& count,
                                              bool inbound) {
  Pipe pipe;
  if (!pipe.ok()) co_return false;
  error_code ignored;
  from.non_blocking(true, ignored);  // splice() must never block the loop
  to.non_blocking(true, ignored);
  const int in = from.native_handle(), out = to.native_handle();
  constexpr unsigned kFlags = SPLICE_F_MOVE | SPLICE_F_NONBLOCK;
  for (;;) {
    ssize_t n = ::splice(in, nullptr, pipe.w, nullptr, kPipeSize, kFlags);
    if (n == 0) {
      if (!aborted_) half_close(to);
      co_return true;
    }
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK) {
        read_failed(error_code(errno, boost::system::system_category()), inbound);
        co_return true;
      }
      auto [ec] = co_await from.async_wait(tcp::socket::wait_read, use_nothrow);
      if (ec || aborted_) {
        read_failed(ec, inbound);
        co_return true;
      }
      continue;
    }
    last_activity_ = Clock::now();
    count += static_cast<uint64_t>(n);
    if (conn_metrics_) conn_metrics_->bytes(conn_listener_, inbound ? n : 0, inbound ? 0 : n);
    for (size_t pending = static_cast<size_t>(n); pending > 0;) {
      ssize_t m = ::splice(pipe.r, nullptr, out, nullptr, pending, kFlags);
      if (m > 0) {
        pending -= static_cast<size_t>(m);
        last_activity_ = Clock::now();
        continue;
      }
      if (m < 0 && errno == EINTR) continue;
      if (m < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        auto [ec] = co_await to.async_wait(tcp::socket::wait_write, use_nothrow);
        if (!ec && !aborted_) continue;
      }
      if (!aborted_) abort(inbound ? "upstream write failed" : "client write failed", true);
      co_return true;
    }
  }
}

void TcpSession::half_close(tcp::socket& to) {
  // This side will send no more: say so to the other one and keep the reverse direction going.
  if (pumps_done_ > 0) return;
  error_code ignored;
  to.shutdown(tcp::socket::shutdown_send, ignored);
}

void TcpSession::read_failed(const error_code& ec, bool inbound) {
  if (aborted_) return;
  log::debug("tcp listener {}: {} read failed: {}", listener_name_, inbound ? "client" : "upstream",
             ec.message());
  const bool reset = ec == asio::error::connection_reset;
  abort(inbound ? (reset ? "client reset" : "client read failed")
                : (reset ? "upstream reset" : "upstream read failed"),
        reset);
}

asio::awaitable<void> TcpSession::idle_watch(Duration idle) {
  while (pumps_done_ < 2) {
    const auto deadline = last_activity_ + idle;
    if (Clock::now() >= deadline) {
      abort("idle timeout", false);
      co_return;
    }
    idle_timer_.expires_at(deadline);
    co_await idle_timer_.async_wait(use_nothrow);
  }
}

void TcpSession::abort(std::string_view why, bool reset) {
  aborted_ = true;
  if (end_reason_.empty()) end_reason_ = why;
  error_code ignored;
  if (reset) {
    // Pass the reset on rather than a clean close the peer could take for a complete stream.
    client_.set_option(asio::socket_base::linger(true, 0), ignored);
    upstream_.set_option(asio::socket_base::linger(true, 0), ignored);
  }
  client_.cancel(ignored);
  upstream_.cancel(ignored);
  idle_timer_.cancel();
}

// One line per connection (SPEC.md section 6): protocol "tcp", status 200 once a target was
// connected (else the status an HTTP client would have had: 400 bad PROXY header, 502/504 connect
// failed / timed out, 503 no target or circuit open), bytes each way, the target, upstream_ms =
// the time to connect, error = why the gateway ended it early (idle timeout, a reset), if it did.
void TcpSession::write_log(const Error& error) {
  worker_.top_requests().add(addrs_.client.ip, 1);
  worker_.top_bytes().add(addrs_.client.ip, bytes_in_ + bytes_out_);
  if (!log::access_enabled()) return;
  AccessRecord r;
  r.client_ip = addrs_.client.ip;
  r.listener = listener_name_;
  r.protocol = "tcp";
  r.status = error.status();
  r.bytes_in = bytes_in_;
  r.bytes_out = bytes_out_;
  r.duration_us =
      std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - start_).count();
  if (upstream_index_ >= 0) r.upstream = snap_->upstreams[upstream_index_].config->name;
  if (target_ != nullptr) r.target = target_->address;
  if (connect_time_) {
    r.upstream_us = std::chrono::duration_cast<std::chrono::microseconds>(*connect_time_).count();
  }
  r.attempts = attempts_;
  r.error = error ? error.reason() : end_reason_;
  if (error.kind == ErrorKind::BadRequest) r.error = "bad PROXY protocol header";
  write_access(r, snap_->config.log.access_format == "combined");
}

}  // namespace

asio::awaitable<void> serve_tcp(server::Worker& worker, tcp::socket socket,
                                std::string listener_name) {
  TcpSession session(worker, std::move(socket), std::move(listener_name));
  co_await session.run();
}

}  // namespace sluice::proxy

#include "proxy/upstream_call.h"
#include "proxy/h2_proxy.h"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <string_view>

#include <fmt/format.h>

#include "core/log.h"
#include "http/message.h"
#include "http/parser.h"
#include "proxy/hold.h"
#include "server/snapshot.h"
#include "server/tls_stream.h"
#include "server/watchdog.h"
#include "server/worker.h"
#include "stats/metrics.h"
#include "tls/tls.h"
#include "upstream/balancer.h"
#include "upstream/target_state.h"

namespace sluice::proxy {

using namespace std::literals;
using server::CompiledTarget;
using server::CompiledUpstream;
using server::UpstreamConnection;
using server::Watchdog;
using Clock = std::chrono::steady_clock;

void fill_load(const CompiledUpstream& up, upstream::PickContext& ctx,
               std::vector<uint32_t>& load) {
  if (up.algorithm != upstream::Algorithm::LeastConn && up.algorithm != upstream::Algorithm::P2C) {
    return;
  }
  load.resize(up.targets.size());
  for (size_t i = 0; i < up.targets.size(); ++i) {
    load[i] = up.targets[i].state->in_flight.load(std::memory_order_relaxed);
  }
  ctx.load = &load;
}

bool exclude_unavailable(const CompiledUpstream& up, int64_t now_ms, std::vector<bool>& excluded) {
  excluded.assign(up.targets.size(), false);
  bool any = false;
  for (size_t i = 0; i < up.targets.size(); ++i) {
    excluded[i] = !up.targets[i].state->available(now_ms);
    any = any || !excluded[i];
  }
  return any;
}

bool take_slot(std::atomic<int64_t>& active, uint32_t max) {
  int64_t v = active.load(std::memory_order_relaxed);
  while (v < static_cast<int64_t>(max)) {
    if (active.compare_exchange_weak(v, v + 1, std::memory_order_relaxed)) return true;
  }
  return false;
}

asio::awaitable<Error> connect_target(tcp::socket& sock, const std::string& ip, uint16_t port,
                                      Duration timeout, Watchdog& wd) {
  error_code ec;
  auto addr = asio::ip::make_address(ip, ec);
  if (ec) co_return Error{Source::Upstream, ErrorKind::ConnectFailed};
  tcp::endpoint ep(addr, port);
  sock.open(ep.protocol(), ec);
  if (ec) co_return Error{Source::Internal, ErrorKind::ConnectFailed};
  wd.arm(timeout, &sock);
  auto [cec] = co_await sock.async_connect(ep, use_nothrow);
  wd.disarm();
  if (cec) {
    if (wd.expired()) co_return Error{Source::Upstream, ErrorKind::ConnectTimeout};
    if (cec == asio::error::connection_refused) {
      co_return Error{Source::Upstream, ErrorKind::ConnectRefused};
    }
    co_return Error{Source::Upstream, ErrorKind::ConnectFailed};
  }
  sock.set_option(tcp::no_delay(true), ec);
  co_return Error{};
}

asio::awaitable<Error> upstream_handshake(UpstreamConnection& conn, const CompiledUpstream& up,
                                          const CompiledTarget& target, const std::string& key,
                                          Watchdog& wd, Duration timeout) {
  SSL* ssl = up.tls->new_ssl(target.host, key);
  if (ssl == nullptr) co_return Error{Source::Internal, ErrorKind::TlsFailed};
  conn.tls = std::make_unique<server::TlsStream>(conn.socket, ssl);
  wd.arm(timeout, &conn.socket);
  error_code ec = co_await conn.tls->handshake();
  wd.disarm();
  if (!ec) co_return Error{};
  if (wd.expired()) co_return Error{Source::Upstream, ErrorKind::ConnectTimeout};
  std::string why = tls::verify_error(ssl);
  log::warn("upstream {} target {}: TLS handshake failed: {}", up.config->name, target.address,
            why.empty() ? ec.message() : why);
  tls::clear_errors();
  co_return Error{Source::Upstream, ErrorKind::TlsFailed};
}

namespace {

constexpr size_t kResponseBufferSize = 64 * 1024;

bool is_hex(std::string_view s) {
  return std::all_of(s.begin(), s.end(),
                     [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

void append_hex(std::string& out, uint64_t v, int digits) {
  static constexpr char kHex[] = "0123456789abcdef";
  for (int i = digits - 1; i >= 0; --i) out += kHex[(v >> (4 * i)) & 15];
}

// A random (version 4) UUID.
std::string uuid(uint64_t a, uint64_t b) {
  std::string out;
  out.reserve(36);
  append_hex(out, a >> 32, 8);
  out += '-';
  append_hex(out, a >> 16, 4);
  out += "-4"sv;
  append_hex(out, a, 3);
  out += '-';
  append_hex(out, ((b >> 48) & 0x3fff) | 0x8000, 4);
  out += '-';
  append_hex(out, b, 12);
  return out;
}

bool header_safe(std::string_view v) {
  return v.find_first_of("\r\n"sv) == std::string_view::npos &&
         v.find('\0') == std::string_view::npos;
}

// The gateway's own headers, never taken from CallRequest::headers.
bool reserved_header(std::string_view name) {
  return http::iequals(name, "host") || http::iequals(name, "content-length") ||
         http::iequals(name, "transfer-encoding") || http::iequals(name, "connection") ||
         http::iequals(name, "x-request-id") || http::iequals(name, "traceparent");
}

// The response buffer goes back to the worker's pool on every path out.
struct PooledBuffer {
  server::Worker& worker;
  server::IoBuffer buf;
  ~PooledBuffer() {
    if (!buf.empty()) worker.buffers().give(std::move(buf));
  }
};

enum class BodyRead { Complete, Truncated, Failed };

}  // namespace

asio::awaitable<CallResult> call_upstream(server::Worker& worker, const server::Snapshot& snap,
                                          size_t upstream_index, CallRequest req) {
  CallResult out;
  const CompiledUpstream& up = snap.upstreams[upstream_index];
  const config::Upstream& uc = *up.config;
  const config::Retries& rc = uc.retries;
  upstream::UpstreamCounters& counters = *up.counters;
  const Duration request_timeout = req.timeout.value_or(uc.timeouts.request);
  const bool method_retryable = rc.all_methods || idempotent(req.method);
  // (a shared_ptr: a reload during the call may replace the worker's block)
  const std::shared_ptr<stats::WorkerMetrics> metrics =
      snap.config.admin && worker.snapshot().get() == &snap ? worker.metrics() : nullptr;

  // Correlation: the caller's request id, its trace continued with a span of ours, or new ones.
  out.request_id =
      req.request_id.empty() ? uuid(worker.random(), worker.random()) : std::move(req.request_id);
  std::string_view tp = req.traceparent, flags = "01";
  if (tp.size() == 55 && tp[2] == '-' && tp[35] == '-' && tp[52] == '-' &&
      is_hex(tp.substr(0, 2)) && tp.substr(0, 2) != "ff" && is_hex(tp.substr(3, 32)) &&
      tp.substr(3, 32) != "00000000000000000000000000000000" && is_hex(tp.substr(36, 16)) &&
      is_hex(tp.substr(53, 2))) {
    out.trace_id = tp.substr(3, 32);
    flags = tp.substr(53, 2);
  } else {
    append_hex(out.trace_id, worker.random(), 16);
    append_hex(out.trace_id, worker.random(), 16);
  }
  std::string traceparent = "00-" + out.trace_id + "-";
  append_hex(traceparent, worker.random() | 1, 16);
  traceparent += '-';
  traceparent += flags;

  // Circuit breaker, as for client requests: a slot under max_connections, else wait (at most
  // max_pending callers, at most the connect timeout).
  auto try_take_slot = [&] { return take_slot(counters.active, uc.max_connections); };
  if (counters.pending.load(std::memory_order_relaxed) > 0 || !try_take_slot()) {
    if (counters.pending.load(std::memory_order_relaxed) >= uc.max_pending) {
      out.error = {Source::Upstream, ErrorKind::CircuitOpen};
      co_return out;
    }
    Hold pending(counters.pending);
    asio::steady_timer wait(worker.io());
    const auto give_up = Clock::now() + uc.timeouts.connect;
    while (!try_take_slot()) {
      if (Clock::now() >= give_up || worker.draining()) {
        out.error = {Source::Upstream, ErrorKind::CircuitOpen};
        co_return out;
      }
      wait.expires_after(std::chrono::milliseconds(2));
      co_await wait.async_wait(use_nothrow);
    }
  }
  Hold active = Hold<int64_t>::adopt(counters.active);
  Hold in_request(counters.requests);

  upstream::PickContext ctx;
  ctx.random = worker.random();
  ctx.hash = req.hash.value_or(ctx.random);
  std::vector<uint32_t> load;
  fill_load(up, ctx, load);

  const int max_tries = 1 + std::max(0, rc.attempts);
  std::vector<bool> tried(up.targets.size(), false), excluded, fresh;
  const int64_t now_ms = upstream::steady_now_ms();
  const auto started = Clock::now();
  Error last{Source::Upstream, ErrorKind::NoTarget};
  Watchdog wd(worker.io().get_executor());
  std::unique_ptr<UpstreamConnection> conn;
  // `wd` points at conn's socket while armed: disarmed before the socket goes, on every path.
  struct DisarmOnExit {
    Watchdog& wd;
    ~DisarmOnExit() { wd.disarm(); }
  } disarm_on_exit{wd};
  auto drop_conn = [&] {
    wd.disarm();
    conn.reset();
  };
  Hold<uint32_t> target_load;
  Hold<int64_t> retry_hold;
  bool budget_exempt = false;
  PooledBuffer rbuf{worker, {}};
  http::ResponseParser parser;
  http::ResponseHead head;
  size_t rbegin = 0, rend = 0, head_len = 0;
  bool got_head = false;
  std::string request_head;
  const CompiledTarget* target = nullptr;

  for (int attempt = 0; attempt < max_tries && !got_head; ++attempt) {
    if (!exclude_unavailable(up, now_ms, excluded)) break;
    fresh.assign(excluded.begin(), excluded.end());
    for (size_t i = 0; i < tried.size(); ++i) fresh[i] = fresh[i] || tried[i];
    upstream::Balancer& balancer = worker.balancer(snap, upstream_index);
    std::optional<size_t> pick = balancer.pick(ctx, fresh);
    if (!pick) pick = balancer.pick(ctx, excluded);  // every target tried: one again
    if (!pick) break;
    if (attempt > 0 && !budget_exempt) {
      // Retry budget: retries in flight <= max(3, budget% of requests in flight); a retry after a
      // failed connect is exempt (nothing reached an application).
      int64_t allowed = std::max<int64_t>(
          3, counters.requests.load(std::memory_order_relaxed) * rc.budget_percent / 100);
      if (counters.retries.load(std::memory_order_relaxed) >= allowed) break;
      retry_hold = Hold(counters.retries);
    }
    if (attempt > 0 && metrics != nullptr) {
      stats::RetryReason why = stats::RetryReason::Status;
      if (last.retryable_any_method()) {
        why = stats::RetryReason::ConnectFailure;
      } else if (last.kind == ErrorKind::UpstreamTimeout) {
        why = stats::RetryReason::Timeout;
      } else if (last.kind == ErrorKind::UpstreamReset) {
        why = stats::RetryReason::Reset;
      }
      metrics->retry(static_cast<int>(upstream_index), why);
    }
    budget_exempt = false;
    target = &up.targets[*pick];
    tried[*pick] = true;
    ++out.attempts;
    out.target = target->address;
    target_load = Hold(target->state->in_flight);
    const auto attempt_started = Clock::now();
    const int target_index = static_cast<int>(*pick);
    auto attempt_done = [&](int status) {
      if (metrics != nullptr) {
        metrics->upstream_request(static_cast<int>(upstream_index), target_index, status,
                                  Clock::now() - attempt_started);
      }
    };
    auto record = [&](bool failure) {
      upstream::record_outcome(*target->state, up.states, up.outlier, failure,
                               upstream::steady_now_ms());
    };

    // Connect, or reuse a pooled connection.
    std::string dynamic_ip, dynamic_key;
    if (target->dynamic) {
      dynamic_ip = target->state->ip();
      dynamic_key = fmt::format("{}|{}", target->address, dynamic_ip);
    }
    const std::string& ip = target->dynamic ? dynamic_ip : target->ip;
    const std::string& key = target->dynamic ? dynamic_key : target->key;
    const bool h2_upstream = uc.protocol != "http1";
    const std::string pp_key = uc.proxy_protocol != 0 && !h2_upstream
                                   ? proxy_pool_key(key, req.source.client)
                                   : std::string();
    const std::string& pool_key = pp_key.empty() ? key : pp_key;
    conn =
        h2_upstream ? nullptr : worker.pool().acquire(pool_key, uc.timeouts.idle, method_retryable);
    const bool reused = conn != nullptr;
    if (!conn) {
      conn = std::make_unique<UpstreamConnection>(worker.io());
      conn->key = pool_key;
      if (h2_upstream) {  // a stream of a shared HTTP/2 connection (h2_proxy.cpp)
        last =
            co_await open_h2_stream(worker, *conn, up, *target, ip, key, wd, uc.timeouts.connect);
      } else {
        last = co_await connect_target(conn->socket, ip, target->port, uc.timeouts.connect, wd);
      }
      if (!last && uc.proxy_protocol != 0 && !h2_upstream) {
        last = co_await send_proxy_header(conn->socket, uc.proxy_protocol, req.source, wd,
                                          uc.timeouts.connect);
      }
      if (!last && up.tls && !h2_upstream) {
        last = co_await upstream_handshake(*conn, up, *target, key, wd, uc.timeouts.connect);
      }
      if (last) {
        attempt_done(0);
        if (last.kind != ErrorKind::TlsFailed) {  // (the handshake logged its own reason)
          log::warn("upstream {} target {}: {}", uc.name, target->address, last.reason());
        }
        record(true);
        drop_conn();
        if (rc.on_connect_failure) {
          budget_exempt = true;
          continue;
        }
        break;
      }
    }

    // The request, head and body in one write.
    request_head.clear();
    request_head += req.method;
    request_head += ' ';
    request_head += req.path;
    request_head += " HTTP/1.1\r\nhost: "sv;
    request_head += req.host.empty() ? std::string_view(target->address) : req.host;
    request_head += "\r\n"sv;
    for (const auto& [name, value] : req.headers) {
      if (!header_safe(name) || !header_safe(value) || reserved_header(name)) continue;
      request_head += name;
      request_head += ": "sv;
      request_head += value;
      request_head += "\r\n"sv;
    }
    request_head += "x-request-id: "sv;
    request_head += out.request_id;
    request_head += "\r\ntraceparent: "sv;
    request_head += traceparent;
    request_head += "\r\ncontent-length: "sv;
    request_head += std::to_string(req.body.size());
    request_head += "\r\n\r\n"sv;
    server::Io uio = conn->io();
    uio.arm(wd, request_timeout);
    std::array<asio::const_buffer, 2> bufs{asio::buffer(request_head), asio::buffer(req.body)};
    auto [wec, written] = co_await uio.write(bufs);
    if (wec) {
      attempt_done(0);
      last = wd.expired() ? Error{Source::Upstream, ErrorKind::UpstreamTimeout}
                          : Error{Source::Upstream, ErrorKind::UpstreamReset};
      drop_conn();
      // A write failing on a pooled connection is the connection's fault, not the target's.
      if (!reused) record(true);
      if (method_retryable && rc.on_reset) {
        if (reused) {  // a stale pooled connection: not a try
          --attempt;
          --out.attempts;
          tried[*pick] = false;
        }
        continue;
      }
      break;
    }

    // The response head; 1xx interim answers are skipped.
    if (rbuf.buf.empty()) rbuf.buf = worker.buffers().take(kResponseBufferSize);
    rbegin = rend = 0;
    parser.reset();
    bool got_bytes = false;
    for (;;) {
      if (rbegin < rend) {
        head.headers.clear();
        auto r = parser.parse(std::string_view(rbuf.buf.data() + rbegin, rend - rbegin), head,
                              req.method);
        if (r.status == http::ParseStatus::Error) {
          last = {Source::Upstream, ErrorKind::BadResponse};
          break;
        }
        if (r.status == http::ParseStatus::Done) {
          if (head.status >= 100 && head.status < 200) {
            rbegin += r.consumed;
            parser.reset();
            continue;
          }
          head_len = r.consumed;
          got_head = true;
          break;
        }
      }
      if (rend == rbuf.buf.size()) {
        if (rbegin == 0) {
          last = {Source::Upstream, ErrorKind::BadResponse};  // a head larger than the buffer
          break;
        }
        std::memmove(rbuf.buf.data(), rbuf.buf.data() + rbegin, rend - rbegin);
        rend -= rbegin;
        rbegin = 0;
      }
      auto [ec, n] =
          co_await uio.read_some(asio::buffer(rbuf.buf.data() + rend, rbuf.buf.size() - rend));
      if (ec) {
        last = wd.expired() ? Error{Source::Upstream, ErrorKind::UpstreamTimeout}
                            : Error{Source::Upstream, ErrorKind::UpstreamReset};
        break;
      }
      got_bytes = true;
      rend += n;
    }
    attempt_done(got_head ? head.status : 0);
    if (!got_head) {
      drop_conn();
      // A pooled connection the upstream closed before answering: not the target's fault, and
      // for a retryable method it is retried on a fresh connection without counting as a try.
      const bool stale = reused && !got_bytes && last.kind == ErrorKind::UpstreamReset;
      if (!stale) record(true);
      if (stale && method_retryable && rc.on_reset) {
        --attempt;
        --out.attempts;
        tried[*pick] = false;
        continue;
      }
      // The request timeout is the whole budget: a timeout is not retried.
      if (last.kind == ErrorKind::UpstreamReset && rc.on_reset && method_retryable) continue;
      break;
    }
    const bool failure = head.status >= 500;
    const int64_t after_ms = upstream::steady_now_ms();
    upstream::record_outcome(*target->state, up.states, up.outlier, failure, after_ms);
    if (failure && attempt + 1 < max_tries && method_retryable &&
        std::find(rc.on_status.begin(), rc.on_status.end(), head.status) != rc.on_status.end() &&
        counters.retries.load(std::memory_order_relaxed) <
            std::max<int64_t>(
                3, counters.requests.load(std::memory_order_relaxed) * rc.budget_percent / 100) &&
        std::any_of(up.targets.begin(), up.targets.end(),
                    [&](const CompiledTarget& t) { return t.state->available(after_ms); })) {
      drop_conn();
      got_head = false;
      last = {Source::Upstream, ErrorKind::UpstreamReset};
      continue;
    }
  }
  if (!got_head) {
    out.error = last;
    out.upstream_time =
        std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - started);
    co_return out;
  }

  out.status = head.status;
  out.headers.reserve(head.headers.size());
  for (const auto& h : head.headers) out.headers.emplace_back(h.name, h.value);

  // The body, kept up to max_response_body; a longer one is cut and its connection closed.
  rbegin += head_len;
  server::Io uio = conn->io();
  http::ChunkedDecoder chunked;
  std::vector<std::string_view> pieces;
  uint64_t remaining = head.content_length;
  BodyRead state = BodyRead::Complete;
  auto keep = [&](std::string_view piece) {
    const size_t room = req.max_response_body - out.body.size();
    out.body.append(piece.substr(0, room));
    if (piece.size() > room) {
      out.body_truncated = true;
      return false;
    }
    return true;
  };
  bool done = head.body_kind == http::BodyKind::None ||
              (head.body_kind == http::BodyKind::Length && remaining == 0);
  while (!done) {
    std::string_view avail(rbuf.buf.data() + rbegin, rend - rbegin);
    if (!avail.empty()) {
      if (head.body_kind == http::BodyKind::Length) {
        const size_t n = static_cast<size_t>(std::min<uint64_t>(avail.size(), remaining));
        if (!keep(avail.substr(0, n))) {
          state = BodyRead::Truncated;
          break;
        }
        rbegin += n;
        remaining -= n;
        done = remaining == 0;
      } else if (head.body_kind == http::BodyKind::Chunked) {
        pieces.clear();
        auto r = chunked.feed(avail, pieces);
        if (r.error) {
          state = BodyRead::Failed;
          out.error = {Source::Upstream, ErrorKind::BadResponse};
          break;
        }
        rbegin += r.consumed;
        if (!std::all_of(pieces.begin(), pieces.end(), keep)) {
          state = BodyRead::Truncated;
          break;
        }
        done = chunked.done();
      } else {  // UntilClose
        rbegin = rend;
        if (!keep(avail)) {
          state = BodyRead::Truncated;
          break;
        }
      }
      if (done) break;
    }
    if (rbegin == rend) {
      rbegin = rend = 0;
    } else if (rend == rbuf.buf.size()) {  // a partial chunk line at the end: move it forward
      std::memmove(rbuf.buf.data(), rbuf.buf.data() + rbegin, rend - rbegin);
      rend -= rbegin;
      rbegin = 0;
    }
    auto [ec, n] =
        co_await uio.read_some(asio::buffer(rbuf.buf.data() + rend, rbuf.buf.size() - rend));
    if (ec) {
      if (head.body_kind == http::BodyKind::UntilClose &&
          (ec == asio::error::eof || ec == asio::ssl::error::stream_truncated)) {
        break;  // the end of a close-delimited body
      }
      state = BodyRead::Failed;
      out.error = wd.expired() ? Error{Source::Upstream, ErrorKind::UpstreamTimeout}
                               : Error{Source::Upstream, ErrorKind::UpstreamReset};
      break;
    }
    rend += n;
  }
  wd.disarm();
  if (state == BodyRead::Complete && head.keep_alive &&
      head.body_kind != http::BodyKind::UntilClose && rbegin == rend) {
    ++conn->requests;
    worker.pool().release(std::move(conn));
  }
  out.upstream_time = std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - started);
  co_return out;
}

}  // namespace sluice::proxy

#include "proxy/websocket_bridge.h"

#include <algorithm>
#include <deque>
#include <optional>

#include <fmt/format.h>
#include <boost/beast/core/buffers_to_string.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/message.hpp>
#include <boost/beast/websocket/stream.hpp>

#include "core/log.h"
#include "proxy/upstream_call.h"
#include "server/snapshot.h"
#include "server/tls_stream.h"
#include "server/worker.h"
#include "stats/metrics.h"

namespace sluice::proxy {

namespace beast = boost::beast;
namespace websocket = beast::websocket;

// Beast's AsyncStream over the client connection: the socket itself, or the TlsStream over it
// (the same choice as server::Io, one branch per operation). Partial reads and writes are fine
// for Beast, so each operation uses the first buffer of the sequence.
class IoStream {
 public:
  using executor_type = asio::any_io_executor;
  IoStream(tcp::socket& socket, server::TlsStream* tls, server::Lane* lane)
      : socket_(socket), tls_(tls), lane_(lane) {}
  executor_type get_executor() { return socket_.get_executor(); }
  tcp::socket& socket() { return socket_; }
  server::TlsStream* tls() { return tls_; }
  server::Lane* lane() { return lane_; }

  template <typename MutableBufferSequence, typename Token>
  auto async_read_some(const MutableBufferSequence& buffers, Token&& token) {
    return asio::async_initiate<Token, void(error_code, size_t)>(
        [this](auto handler, asio::mutable_buffer b) {
          if (lane_ != nullptr) {  // an HTTP/2 stream (RFC 8441)
            asio::co_spawn(socket_.get_executor(), lane_->in.read_some(b),
                           [h = std::move(handler)](std::exception_ptr e,
                                                    std::tuple<error_code, size_t> r) mutable {
                             if (e) std::get<0>(r) = asio::error::connection_aborted;
                             std::move(h)(std::get<0>(r), std::get<1>(r));
                           });
            return;
          }
          if (tls_ == nullptr) {
            socket_.async_read_some(b, std::move(handler));
            return;
          }
          asio::co_spawn(socket_.get_executor(), tls_->read_some(b),
                         [h = std::move(handler)](std::exception_ptr e,
                                                  std::tuple<error_code, size_t> r) mutable {
                           if (e) std::get<0>(r) = asio::error::connection_aborted;
                           std::move(h)(std::get<0>(r), std::get<1>(r));
                         });
        },
        token, first(buffers));
  }

  template <typename ConstBufferSequence, typename Token>
  auto async_write_some(const ConstBufferSequence& buffers, Token&& token) {
    return asio::async_initiate<Token, void(error_code, size_t)>(
        [this](auto handler, asio::const_buffer b) {
          if (tls_ == nullptr && lane_ == nullptr) {
            socket_.async_write_some(b, std::move(handler));
            return;
          }
          asio::co_spawn(socket_.get_executor(),
                         lane_ != nullptr ? write_lane(lane_, b) : write_tls(tls_, b),
                         [h = std::move(handler)](std::exception_ptr e,
                                                  std::tuple<error_code, size_t> r) mutable {
                           if (e) std::get<0>(r) = asio::error::connection_aborted;
                           std::move(h)(std::get<0>(r), std::get<1>(r));
                         });
        },
        token, first(buffers));
  }

 private:
  template <typename Buffers>
  static auto first(const Buffers& buffers) {
    for (auto it = asio::buffer_sequence_begin(buffers); it != asio::buffer_sequence_end(buffers);
         ++it) {
      if ((*it).size() != 0) return *it;
    }
    return *asio::buffer_sequence_begin(buffers);
  }
  static asio::awaitable<std::tuple<error_code, size_t>> write_tls(server::TlsStream* tls,
                                                                   asio::const_buffer b) {
    co_return co_await tls->write(std::span<const asio::const_buffer>(&b, 1));
  }

  static asio::awaitable<std::tuple<error_code, size_t>> write_lane(server::Lane* lane,
                                                                    asio::const_buffer b) {
    co_return co_await lane->out.write(std::span<const asio::const_buffer>(&b, 1));
  }

  tcp::socket& socket_;
  server::TlsStream* tls_;
  server::Lane* lane_;
};

// Beast's customisation points for closing IoStream (found by argument-dependent lookup).
// (Beast's timeouts call this.) The descriptor is not released here: the session's TLS stream is
// bound to its number until the session ends, and a number closed early could be reused by
// another connection before that TLS stream's last write. Shutting down and cancelling ends
// every pending operation just as well.
void beast_close_socket(IoStream& s) {
  error_code ignored;
  if (s.lane() != nullptr) {
    s.lane()->cancel(ignored);
    s.lane()->close();
    return;
  }
  s.socket().shutdown(tcp::socket::shutdown_both, ignored);
  s.socket().cancel(ignored);
}
void teardown(beast::role_type, IoStream& s, error_code& ec) {
  if (s.lane() != nullptr) {
    s.lane()->out.finish();
    return;
  }
  if (s.tls() != nullptr) s.tls()->shutdown();
  s.socket().shutdown(tcp::socket::shutdown_both, ec);
}
template <typename TeardownHandler>
void async_teardown(beast::role_type role, IoStream& s, TeardownHandler&& handler) {
  error_code ec;
  teardown(role, s, ec);
  asio::post(s.get_executor(),
             [h = std::forward<TeardownHandler>(handler), ec]() mutable { std::move(h)(ec); });
}

namespace {

// RFC 3629 UTF-8 (no overlong forms, no surrogates, at most U+10FFFF): what a text frame must hold.
bool valid_utf8(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x80) {
      ++i;
      continue;
    }
    size_t n = 0;
    uint32_t cp = 0, min = 0;
    if ((c & 0xE0) == 0xC0) {
      n = 1;
      cp = c & 0x1F;
      min = 0x80;
    } else if ((c & 0xF0) == 0xE0) {
      n = 2;
      cp = c & 0x0F;
      min = 0x800;
    } else if ((c & 0xF8) == 0xF0) {
      n = 3;
      cp = c & 0x07;
      min = 0x10000;
    } else {
      return false;
    }
    for (size_t k = 1; k <= n; ++k) {
      if (i + k >= s.size()) return false;
      const auto cc = static_cast<unsigned char>(s[i + k]);
      if ((cc & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (cc & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
    i += n + 1;
  }
  return true;
}

// One message on its way: sent upstream, and its answer once there.
struct Pending {
  bool binary = false;
  std::optional<std::string> reply;  // the message to send back, once known
};

// Shared by the connection's reader (bridge_websocket), its writer and the upstream calls it
// started, which may outlive it (they only touch `signal`, `queue` entries and counters).
struct State {
  State(tcp::socket& socket, server::TlsStream* tls, server::Lane* lane,
        const asio::any_io_executor& ex)
      : ws(socket, tls, lane), signal(ex, asio::steady_timer::time_point::max()) {}
  websocket::stream<IoStream> ws;
  asio::steady_timer signal;  // cancelled whenever a reply arrives or the reader changes state
  std::deque<std::shared_ptr<Pending>> queue;  // in message order
  bool reading_done = false;
  bool writer_done = false;
  uint64_t upstream_errors = 0;
  uint64_t messages_out = 0, bytes_out = 0;
  void notify() { signal.cancel(); }
};

asio::awaitable<void> call(server::Worker& worker, std::shared_ptr<const server::Snapshot> snap,
                           size_t upstream_index, CallRequest req, std::shared_ptr<Pending> p,
                           std::shared_ptr<State> st) {
  CallResult r = co_await call_upstream(worker, *snap, upstream_index, std::move(req));
  if (r.error && r.status == 0) {
    // No answer from the upstream: the client still gets one message for this one, saying so.
    ++st->upstream_errors;
    p->reply = fmt::format(R"({{"error":"{}","status":{},"request_id":"{}"}})", r.error.reason(),
                           r.error.status(), r.request_id);
  } else {
    p->reply = std::move(r.body);
  }
  st->notify();
}

// Sends replies in message order as they become ready; ends when the reader is done and nothing
// is left to send, or the WebSocket fails.
asio::awaitable<void> write_loop(std::shared_ptr<State> st) {
  for (;;) {
    while (!st->queue.empty() && st->queue.front()->reply) {
      std::shared_ptr<Pending> p = st->queue.front();
      st->queue.pop_front();
      st->notify();  // the reader may be waiting for room
      // A text message's reply goes back as text when it is UTF-8 (a text frame must be), else
      // as binary.
      st->ws.binary(p->binary || !valid_utf8(*p->reply));
      auto [ec, n] = co_await st->ws.async_write(asio::buffer(*p->reply), use_nothrow);
      if (ec) {
        st->writer_done = true;
        st->notify();
        co_return;
      }
      ++st->messages_out;
      st->bytes_out += n;
    }
    if (st->reading_done && (st->queue.empty() || !st->ws.is_open())) break;
    co_await st->signal.async_wait(use_nothrow);
  }
  st->writer_done = true;
  st->notify();
}

}  // namespace

asio::awaitable<BridgeStats> bridge_websocket(server::Worker& worker, tcp::socket& socket,
                                              server::TlsStream* tls, server::Lane* lane,
                                              std::shared_ptr<const server::Snapshot> snap,
                                              size_t upstream_index, BridgeRequest b) {
  BridgeStats stats;
  const auto ex = co_await asio::this_coro::executor;
  auto st = std::make_shared<State>(socket, tls, lane, ex);
  websocket::stream<IoStream>& ws = st->ws;
  websocket::stream_base::timeout t{};
  t.handshake_timeout = std::chrono::seconds(10);
  t.idle_timeout = std::chrono::duration_cast<std::chrono::steady_clock::duration>(b.idle);
  t.keep_alive_pings = true;  // a ping at half the idle time: a live client answers it
  ws.set_option(t);
  ws.read_message_max(static_cast<size_t>(std::max<uint64_t>(1, b.max_message)));  // 0 = none
  ws.auto_fragment(false);

  beast::http::request<beast::http::empty_body> req;
  req.method(beast::http::verb::get);
  req.target(b.target);
  req.version(11);
  for (const auto& [name, value] : b.headers) req.insert(name, value);
  auto [aec] = co_await ws.async_accept(req, use_nothrow);
  if (aec) co_return stats;
  stats.accepted = true;

  asio::co_spawn(ex, write_loop(st), asio::detached);
  beast::flat_buffer buf;
  uint64_t index = 0;
  for (;;) {
    if (st->writer_done) break;
    if (st->queue.size() >= b.max_in_flight) {
      co_await st->signal.async_wait(use_nothrow);
      continue;
    }
    auto [ec, n] = co_await ws.async_read(buf, use_nothrow);
    if (ec) break;  // closed by the client (websocket::error::closed), idle, or an error
    ++stats.messages_in;
    stats.bytes_in += n;
    if (b.metrics) b.metrics->websocket_message(b.route);
    auto p = std::make_shared<Pending>();
    p->binary = ws.got_binary();
    st->queue.push_back(p);
    CallRequest cr;
    cr.method = b.method;
    cr.path = b.path;
    cr.host = b.host;
    cr.headers = b.extra_headers;
    cr.headers.emplace_back("x-websocket-connection-id", b.connection_id);
    cr.headers.emplace_back("x-websocket-message", std::to_string(index++));
    cr.headers.emplace_back("content-type",
                            p->binary ? "application/octet-stream" : "text/plain; charset=utf-8");
    cr.body = beast::buffers_to_string(buf.data());
    buf.consume(buf.size());
    cr.timeout = b.timeout;
    cr.max_response_body = static_cast<size_t>(b.max_message);
    cr.source = b.source;
    asio::co_spawn(ex, call(worker, snap, upstream_index, std::move(cr), p, st), asio::detached);
  }
  // The writer still sends what gets answered (a client that only half-closed still reads); it
  // ends once the queue is empty or the WebSocket is gone. It uses the socket: wait for it.
  st->reading_done = true;
  st->notify();
  while (!st->writer_done) co_await st->signal.async_wait(use_nothrow);
  if (ws.is_open()) co_await ws.async_close(websocket::close_code::normal, use_nothrow);
  stats.messages_out = st->messages_out;
  stats.bytes_out = st->bytes_out;
  stats.upstream_errors = st->upstream_errors;
  co_return stats;
}

}  // namespace sluice::proxy

#include "proxy/h2_proxy.h"

#include <array>
#include <unordered_map>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include <boost/asio/experimental/awaitable_operators.hpp>

#include "core/log.h"
#include "http/h2.h"
#include "http/message.h"
#include "http/parser.h"
#include "proxy/upstream_call.h"
#include "server/lane.h"
#include "server/snapshot.h"
#include "server/tls_stream.h"
#include "server/watchdog.h"
#include "server/worker.h"
#include "tls/tls.h"

namespace sluice::proxy {

namespace h2 = http::h2;
using namespace std::literals;
using namespace asio::experimental::awaitable_operators;
using server::Lane;
using server::Watchdog;

namespace {

constexpr size_t kReadBuffer = 16 * 1024;
// Bytes of a response (or request) body taken from a lane per DATA submission.
constexpr size_t kMaxPiece = 64 * 1024;

void append_hex(std::string& out, uint64_t v) {
  char buf[16];
  int n = 0;
  do {
    buf[n++] = "0123456789abcdef"[v & 15];
    v >>= 4;
  } while (v != 0);
  while (n > 0) out += buf[--n];
}

// A piece of a stream's body into the lane: as it is, or as one chunk of a chunked body.
void push_body(server::Pipe& in, std::string_view data, bool chunked) {
  if (!chunked) {
    in.push(data);
    return;
  }
  std::string chunk;
  chunk.reserve(data.size() + 20);
  append_hex(chunk, data.size());
  chunk += "\r\n"sv;
  chunk += data;
  chunk += "\r\n"sv;
  in.push(chunk);
}

// The last chunk of a chunked body, with `fields` as its trailer section.
void push_last_chunk(server::Pipe& in, std::span<const http::Header> fields) {
  std::string last = "0\r\n";
  for (const auto& f : fields) {
    last += f.name;
    last += ": "sv;
    last += f.value;
    last += "\r\n"sv;
  }
  last += "\r\n"sv;
  in.push(last);
}

// Flow control for a body going into `pipe`: as the lane's reader takes bytes, the stream's
// window is reopened (owner->credit) for the body bytes that have left the pipe. Body bytes still
// in it are at most what is unread there (framing included), so window is never reopened for
// bytes that are still buffered.
template <class Owner, class StreamT>
void credit_on_read(server::Pipe& pipe, std::weak_ptr<Owner> owner, std::weak_ptr<StreamT> stream) {
  server::Pipe* p = &pipe;
  pipe.on_consumed = [p, owner = std::move(owner), stream = std::move(stream)](size_t) {
    auto o = owner.lock();
    auto st = stream.lock();
    if (!o || !st || st->closed || st->unconsumed == 0) return;
    const uint64_t k = st->unconsumed - std::min<uint64_t>(st->unconsumed, p->unread());
    if (k == 0) return;
    st->unconsumed -= k;
    o->credit(st->id, static_cast<size_t>(k));
  };
}

// Trailer field lines ("name: value\r\n"...) as headers pointing into `lines`.
std::vector<http::Header> parse_trailer_lines(std::string_view lines) {
  std::vector<http::Header> out;
  while (!lines.empty()) {
    size_t eol = lines.find("\r\n");
    std::string_view line = lines.substr(0, eol);
    lines = eol == std::string_view::npos ? std::string_view() : lines.substr(eol + 2);
    size_t colon = line.find(':');
    if (colon == std::string_view::npos) continue;
    std::string_view value = line.substr(colon + 1);
    while (!value.empty() && (value.front() == ' ' || value.front() == '\t'))
      value.remove_prefix(1);
    while (!value.empty() && (value.back() == ' ' || value.back() == '\t')) value.remove_suffix(1);
    out.push_back({line.substr(0, colon), value});
  }
  return out;
}

// An event one coroutine waits on and others signal (single-threaded).
class Signal {
 public:
  explicit Signal(const asio::any_io_executor& ex) : timer_(ex) {}
  void notify() {
    notified_ = true;
    if (waiting_) timer_.cancel();
  }
  asio::awaitable<void> wait() {
    if (!notified_) {
      waiting_ = true;
      timer_.expires_at(std::chrono::steady_clock::time_point::max());
      co_await timer_.async_wait(use_nothrow);
      waiting_ = false;
    }
    notified_ = false;
  }
  // As wait(), for at most `d`. False: the time passed without a notify().
  asio::awaitable<bool> wait_for(Duration d) {
    if (!notified_) {
      waiting_ = true;
      timer_.expires_after(d);
      co_await timer_.async_wait(use_nothrow);
      waiting_ = false;
    }
    const bool was = notified_;
    notified_ = false;
    co_return was;
  }

 private:
  asio::steady_timer timer_;
  bool waiting_ = false;
  bool notified_ = false;
};

// Sends an HTTP/1 body arriving in `pipe` (its first bytes already in `buf`) as a stream's DATA:
// `send(data, end)` submits (an awaitable: it waits while the stream's buffer is full; false: the
// stream is gone), `trailers(fields)` ends the body with trailers (false: the stream is gone).
// Content-length, close-delimited and chunked bodies; a chunked trailer section becomes HTTP/2
// trailers. False: the body broke off or the stream is gone.
template <class Send, class Trailers>
asio::awaitable<bool> relay_body(server::Pipe& pipe, std::string& buf, http::BodyKind kind,
                                 uint64_t length, Send send, Trailers trailers) {
  if (kind == http::BodyKind::Length || kind == http::BodyKind::UntilClose) {
    uint64_t remaining = length;
    for (;;) {
      if (kind == http::BodyKind::Length && remaining == 0) co_return co_await send({}, true);
      if (buf.empty()) {
        error_code ec = co_await pipe.take(buf);
        if (ec == asio::error::eof && kind == http::BodyKind::UntilClose) {
          co_return co_await send({}, true);
        }
        if (ec) co_return false;
      }
      size_t n = buf.size();
      if (kind == http::BodyKind::Length) n = static_cast<size_t>(std::min<uint64_t>(n, remaining));
      n = std::min(n, kMaxPiece);
      remaining -= std::min<uint64_t>(remaining, n);
      const bool end = kind == http::BodyKind::Length && remaining == 0;
      const bool ok = co_await send(std::string_view(buf).substr(0, n), end);
      buf.erase(0, n);
      if (!ok || end) co_return ok;
    }
  }
  if (kind != http::BodyKind::Chunked) co_return true;  // no body
  http::ChunkedDecoder decoder;
  decoder.keep_trailers(true);
  std::vector<std::string_view> pieces;
  for (;;) {
    if (!buf.empty()) {
      pieces.clear();
      auto r = decoder.feed(buf, pieces);
      if (r.error) co_return false;
      for (auto p : pieces) {
        if (!p.empty() && !co_await send(p, false)) co_return false;
      }
      buf.erase(0, r.consumed);
      if (decoder.done()) {
        std::string lines = http::permitted_trailers(decoder.trailers());
        if (lines.empty()) co_return co_await send({}, true);
        co_return trailers(parse_trailer_lines(lines));
      }
    }
    if (co_await pipe.take(buf)) co_return false;
  }
}

// The byte-moving half shared by both roles: a reader feeding receive(), a writer draining
// pending_output() whenever something was submitted.
template <class Session>
class Connection {
 public:
  Connection(const server::Io& io, const asio::any_io_executor& ex)
      : io_(io), wake_(ex), read_wd_(ex), write_wd_(ex) {}

  void wake() { wake_.notify(); }

 protected:
  // `receive` feeds the session; false: stop reading (the session failed or wants no more).
  template <class Receive, class Idle>
  asio::awaitable<void> read_loop(Session& session, Receive receive, Idle is_idle, Duration idle) {
    std::vector<char> buf(kReadBuffer);
    for (;;) {
      if (session.open_streams() == 0 && is_idle()) {
        io_.arm(read_wd_, idle);
      } else {
        read_wd_.disarm();
      }
      auto [ec, n] = co_await io_.read_some(asio::buffer(buf));
      if (ec || n == 0) break;
      bool more = receive(std::span<const char>(buf.data(), n));
      wake();
      if (!more) break;
    }
    reader_done_ = true;
    wake();
  }

  asio::awaitable<void> write_loop(Session& session, Duration write_timeout) {
    std::string out;
    for (;;) {
      out.clear();
      session.pending_output(out);
      if (!out.empty()) {
        io_.arm(write_wd_, write_timeout);
        auto [ec, n] = co_await io_.write(asio::buffer(out));
        write_wd_.disarm();
        if (ec) break;
        continue;
      }
      if (reader_done_ || (!session.want_read() && !session.want_write())) break;
      co_await wake_.wait();
    }
    writer_done_ = true;
    if (!reader_done_) {  // stop the reader too: the connection is over
      error_code ignored;
      io_.sock->cancel(ignored);
    }
  }

  server::Io io_;
  Signal wake_;
  Watchdog read_wd_;
  Watchdog write_wd_;
  bool reader_done_ = false;
  bool writer_done_ = false;
};

// ================================ downstream ================================

class Downstream final : public Connection<h2::ServerSession>,
                         public h2::ServerEvents,
                         public server::Session,
                         public std::enable_shared_from_this<Downstream> {
 public:
  Downstream(server::Worker& worker, const server::Io& io, std::string listener,
             DownstreamInfo info, const h2::Limits& limits, const config::Limits& cfg)
      : Connection(io, worker.io().get_executor()),
        worker_(worker),
        listener_(std::move(listener)),
        info_(std::move(info)),
        limits_(cfg),
        session_(limits, *this) {
    worker_.add_session(this);
  }
  ~Downstream() override { worker_.remove_session(this); }

  // credit_on_read: the lane's reader took `n` body bytes of `stream`.
  void credit(h2::StreamId stream, size_t n) {
    session_.consume(stream, n);
    wake();
  }

  void on_drain() override {
    session_.shutdown();
    wake();
    // A client gets one second to acknowledge the notice's PING (so requests already on the
    // wire are still taken); then the final GOAWAY goes anyway.
    asio::co_spawn(
        worker_.io(),
        [](std::weak_ptr<Downstream> weak) -> asio::awaitable<void> {
          asio::steady_timer t(co_await asio::this_coro::executor, std::chrono::seconds(1));
          co_await t.async_wait(use_nothrow);
          if (auto self = weak.lock(); self && !self->ended_) {
            self->session_.complete_shutdown();
            self->wake();
          }
        }(weak_from_this()),
        asio::detached);
  }

  asio::awaitable<void> run(std::string_view initial) {
    auto self = shared_from_this();
    bool ok = initial.empty() || receive(std::span<const char>(initial.data(), initial.size()));
    if (ok) {
      co_await (read_loop(
                    session_, [this](std::span<const char> b) { return receive(b); },
                    [] { return true; }, limits_.idle_timeout) &&
                write_loop(session_, limits_.idle_timeout));
    } else {
      co_await write_loop(session_, limits_.idle_timeout);  // the GOAWAY
    }
    // The connection is over: every stream still open ends now (their lanes fail). The socket
    // belongs to the caller, which closes it after this returns: no watchdog may touch it.
    ended_ = true;
    session_.terminate(h2::ErrorCode::NoError);
    for (auto& [id, s] : streams_) fail_stream(*s);
    streams_.clear();
    for (auto& lane : idle_lanes_) lane->in.finish();
    idle_lanes_.clear();
    read_wd_.disarm();
    write_wd_.disarm();
  }

 private:
  static constexpr size_t kIdleLanes = 32;  // sessions kept for the next streams

  struct Stream {
    explicit Stream(const asio::any_io_executor& ex) : ready(ex) {}
    h2::StreamId id = 0;
    std::shared_ptr<Lane> lane;
    std::string method;
    bool chunked = false;       // the request body goes into the lane chunked
    bool request_done = false;  // the client finished its side
    bool response_done = false;
    bool closed = false;
    bool tunnel = false;      // RFC 8441 WebSocket: bytes both ways after the upgrade
    uint64_t unconsumed = 0;  // body bytes in the lane not yet read by the session
    uint64_t discarded = 0;   // body bytes dropped after the session stopped reading
    Signal ready;             // send buffer has room again / the stream closed
  };

  bool receive(std::span<const char> bytes) {
    auto st = session_.receive(bytes);
    if (!st.ok()) {
      if (st.failure != h2::Failure::Protocol || st.reason != "peer closed"sv) {
        log::warn("HTTP/2 connection from {} closed: {} ({})", info_.client_ip, st.reason,
                  session_.last_error());
      }
      return false;
    }
    return session_.want_read() || session_.want_write();
  }

  void fail_stream(Stream& s) {
    if (s.lane) {
      s.lane->in.fail(true);
      s.lane->out.close_reader();
    }
    s.closed = true;
    s.ready.notify();
  }

  void on_request(h2::StreamId id, const h2::Request& req, h2::Body body) override {
    auto s = std::make_shared<Stream>(worker_.io().get_executor());
    s->id = id;
    s->method = std::string(req.method);
    // RFC 8441: an extended CONNECT with :protocol websocket becomes the HTTP/1.1 upgrade it
    // stands for (h2.cpp refused any other CONNECT); its DATA are the WebSocket's bytes. It
    // always gets a fresh lane (it is never kept either).
    s->tunnel = req.method == "CONNECT"sv;
    if (s->tunnel) s->method = "GET";
    // A lane whose session finished a clean exchange waits for the next request (keep-alive);
    // one that its session closed (idle timeout, drain) is dropped.
    while (!s->tunnel && !idle_lanes_.empty() && !s->lane) {
      auto lane = std::move(idle_lanes_.back());
      idle_lanes_.pop_back();
      if (!lane->out.finished() && !lane->in.reader_closed()) s->lane = std::move(lane);
    }
    const bool fresh = !s->lane;
    if (fresh) s->lane = std::make_shared<Lane>(worker_.io().get_executor());
    std::string head;
    head.reserve(256);
    head += s->method;
    head += ' ';
    head += req.path;
    head += " HTTP/1.1\r\nhost: "sv;
    head += req.authority;
    head += "\r\n"sv;
    if (s->tunnel) {
      head += "connection: upgrade\r\nupgrade: websocket\r\nsec-websocket-key: "sv;
      head += websocket_key();
      head += "\r\n"sv;
    }
    bool has_length = false;
    for (const auto& h : req.headers) {
      if (h.name == "host"sv) continue;  // carried as :authority (h2.cpp checked they agree)
      if (s->tunnel && h.name == "sec-websocket-key"sv) continue;
      if (h.name == "content-length"sv) has_length = true;
      head += h.name;
      head += ": "sv;
      head += h.value;
      head += "\r\n"sv;
    }
    if (body == h2::Body::Follows && !has_length && !s->tunnel) {
      head += "transfer-encoding: chunked\r\n"sv;
      s->chunked = true;
    }
    head += "\r\n"sv;
    s->request_done = body == h2::Body::None;
    s->lane->in.push(head);
    // Flow control: body bytes are consumed as the session reads them from the lane.
    credit_on_read(s->lane->in, weak_from_this(), std::weak_ptr<Stream>(s));
    streams_[id] = s;
    if (fresh) {
      DownstreamInfo info = info_;
      asio::co_spawn(worker_.io(), serve_http_lane(worker_, s->lane, listener_, std::move(info)),
                     asio::detached);
    }
    asio::co_spawn(worker_.io(), relay_response(shared_from_this(), s), asio::detached);
  }

  void on_data(h2::StreamId id, std::string_view data) override {
    auto it = streams_.find(id);
    if (it == streams_.end()) return;
    Stream& s = *it->second;
    if (data.empty()) return;
    if (s.lane->in.reader_closed() || s.response_done) {  // nobody reads the request any more
      session_.consume(id, data.size());
      s.discarded += data.size();
      if (s.discarded > limits_.max_body) session_.reset_stream(id, h2::ErrorCode::NoError);
      return;
    }
    s.unconsumed += data.size();
    push_body(s.lane->in, data, s.chunked);
  }

  void on_trailers(h2::StreamId id, std::span<const http::Header> fields) override {
    auto it = streams_.find(id);
    if (it == streams_.end()) return;
    Stream& s = *it->second;
    if (!s.chunked) return;  // a body with content-length: no place for trailers in HTTP/1
    push_last_chunk(s.lane->in, fields);
    s.chunked = false;  // the last chunk is out
  }

  void on_end_stream(h2::StreamId id) override {
    auto it = streams_.find(id);
    if (it == streams_.end()) return;
    Stream& s = *it->second;
    if (s.chunked) s.lane->in.push("0\r\n\r\n"sv);
    s.chunked = false;
    s.request_done = true;
    if (s.tunnel) s.lane->in.finish();  // the client's half of the WebSocket ended
  }

  void on_send_ready(h2::StreamId id) override {
    auto it = streams_.find(id);
    if (it != streams_.end()) it->second->ready.notify();
  }

  void on_stream_close(h2::StreamId id, h2::StreamEnd /*how*/, h2::ErrorCode /*code*/) override {
    auto it = streams_.find(id);
    if (it == streams_.end()) return;
    auto s = it->second;
    streams_.erase(it);
    if (!s->response_done || !s->request_done) {
      fail_stream(*s);  // the client reset it, or the connection ended: stop the exchange
    } else {
      s->closed = true;
      s->ready.notify();
    }
    // (the closing stream is no longer counted)
    if (session_.open_streams() == 0 && !ended_) io_.arm(read_wd_, limits_.idle_timeout);
  }

  // Submits body bytes, waiting while the stream's buffer is full. False: the stream is gone.
  asio::awaitable<bool> send(Stream& s, std::string_view data, bool end) {
    for (;;) {
      if (s.closed) co_return false;
      auto r = session_.submit_data(s.id, data, end ? h2::EndStream::Yes : h2::EndStream::No);
      wake();
      if (r == h2::Send::Ready) co_return true;
      if (r == h2::Send::Closed) co_return false;
      // Full (queued, wait before more) or Blocked (retry). A client that opens no window for
      // idle_timeout loses the stream (it would pin the stream and its buffers).
      if (!co_await s.ready.wait_for(limits_.idle_timeout) && !s.closed) {
        session_.reset_stream(s.id, h2::ErrorCode::Cancel);
        wake();
        co_return false;
      }
      if (r == h2::Send::Full) co_return !s.closed;
    }
  }

  // Reads the session's HTTP/1 answer from the lane and sends it as the stream's response.
  static asio::awaitable<void> relay_response(std::shared_ptr<Downstream> self,
                                              std::shared_ptr<Stream> sp) {
    Downstream& d = *self;
    Stream& s = *sp;
    Lane& lane = *s.lane;
    std::string buf;
    http::ParserLimits pl;  // the gateway's own head: the upstream's (already limited) and ours
    pl.max_header_bytes = 1 << 20;
    pl.max_headers = 10000;
    http::ResponseParser parser(pl);
    http::ResponseHead head;
    size_t head_len = 0;
    for (;;) {  // the head (1xx interim answers are dropped: HTTP/2 clients do without)
      if (!buf.empty()) {
        head.headers.clear();
        auto r = parser.parse(buf, head, s.method);
        if (r.status == http::ParseStatus::Error) {
          log::error("HTTP/2 stream {}: the exchange produced an invalid head: {}", s.id, r.error);
          d.session_.reset_stream(s.id, h2::ErrorCode::InternalError);
          d.wake();
          co_return;
        }
        if (r.status == http::ParseStatus::Done) {
          if (s.tunnel && head.status == 101) {
            head_len = r.consumed;
            break;
          }
          if (head.status >= 100 && head.status < 200) {
            buf.erase(0, r.consumed);
            parser.reset();
            continue;
          }
          head_len = r.consumed;
          break;
        }
      }
      if (error_code ec = co_await lane.out.take(buf)) {
        if (!s.closed) {  // no answer: refused while draining (the client may retry), else a bug
          d.session_.reset_stream(s.id, d.worker_.draining() ? h2::ErrorCode::RefusedStream
                                                             : h2::ErrorCode::InternalError);
          d.wake();
        }
        co_return;
      }
    }
    if (s.closed) co_return;
    if (s.tunnel && head.status < 300) {  // 101: the WebSocket is open; a 2xx is not one
      co_await relay_tunnel(d, s, head, buf, head_len);
      co_return;
    }
    // An empty body ends the stream with the head: a gRPC error is a "Trailers-Only" HEADERS
    // frame with END_STREAM, and a client expects it so.
    const bool has_body = head.body_kind != http::BodyKind::None &&
                          !(head.body_kind == http::BodyKind::Length && head.content_length == 0);
    std::vector<http::Header> fields;
    fields.reserve(head.headers.size());
    for (const auto& h : head.headers) {
      if (http::iequals(h.name, "transfer-encoding"sv) || http::iequals(h.name, "connection"sv) ||
          http::iequals(h.name, "keep-alive"sv)) {
        continue;
      }
      fields.push_back(h);
    }
    auto sub = d.session_.submit_response(s.id, head.status, fields,
                                          has_body ? h2::Body::Follows : h2::Body::None);
    d.wake();
    if (sub != h2::Submit::Ok) {
      lane.out.close_reader();
      co_return;
    }
    const http::BodyKind kind = has_body ? head.body_kind : http::BodyKind::None;
    buf.erase(0, head_len);
    const bool ok = co_await relay_body(
        lane.out, buf, kind, head.content_length,
        [&](std::string_view data, bool end) { return d.send(s, data, end); },
        [&](std::span<const http::Header> fields) {
          const bool sent = !s.closed && d.session_.submit_trailers(s.id, fields) == h2::Submit::Ok;
          d.wake();
          return sent;
        });
    if (!ok) {
      if (!s.closed) {
        d.session_.reset_stream(s.id, h2::ErrorCode::InternalError);
        d.wake();
      }
      lane.out.close_reader();
      co_return;
    }
    s.response_done = true;
    // The lane serves the connection's next stream when this exchange ended cleanly: the whole
    // request went in and was read, the answer kept the connection (no "connection: close").
    if (s.request_done && !s.closed && !s.tunnel && head.keep_alive && lane.in.unread() == 0 &&
        !lane.out.finished() && !lane.in.reader_closed() && d.idle_lanes_.size() < kIdleLanes &&
        !d.ended_) {
      lane.in.on_consumed = nullptr;
      d.idle_lanes_.push_back(s.lane);
    } else {
      lane.in.finish();  // the session reads EOF next and ends
    }
    // Answered before the client finished its body (e.g. 413): the rest is read and dropped
    // (on_data), up to max_body more, then the stream is reset with NO_ERROR (RFC 9113 8.1). Not
    // at once: a RST_STREAM would overtake the answer's DATA still queued in nghttp2.
  }

  // A random Sec-WebSocket-Key (the client's HTTP/2 request has none; RFC 8441 5).
  std::string websocket_key() {
    static constexpr char kB64[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    uint64_t a = worker_.random(), b = worker_.random();
    std::string key;
    for (int i = 0; i < 21; ++i) {  // 16 bytes = 21 base64 digits and one of 2 bits, then "=="
      key += kB64[(i < 10 ? a >> (6 * i) : b >> (6 * (i - 10))) & 63];
    }
    key += kB64[(b >> 60) & 0x30];
    key += "=="sv;
    return key;
  }

  // After the upstream's 101: the stream's 200, then the WebSocket's bytes as DATA until the
  // session half-closes the lane (END_STREAM). A final answer other than 101 is relayed as it is,
  // except a 2xx, which would tell the client the tunnel is open: 502 then.
  // `head` points into `buf`, whose first `head_len` bytes are the head.
  static asio::awaitable<void> relay_tunnel(Downstream& d, Stream& s,
                                            const http::ResponseHead& head, std::string& buf,
                                            size_t head_len) {
    std::vector<http::Header> fields;
    for (const auto& h : head.headers) {
      if (http::iequals(h.name, "connection"sv) || http::iequals(h.name, "upgrade"sv) ||
          http::iequals(h.name, "sec-websocket-accept"sv) ||
          http::iequals(h.name, "keep-alive"sv) || http::iequals(h.name, "transfer-encoding"sv) ||
          http::iequals(h.name, "content-length"sv)) {
        continue;
      }
      fields.push_back(h);
    }
    if (head.status != 101) {  // (3xx-5xx are relayed by relay_response as they are)
      d.session_.submit_response(s.id, 502, {}, h2::Body::None);
      d.wake();
      s.lane->in.fail(true);
      s.lane->out.close_reader();
      co_return;
    }
    if (d.session_.submit_response(s.id, 200, fields, h2::Body::Follows) != h2::Submit::Ok) {
      s.lane->out.close_reader();
      co_return;
    }
    d.wake();
    buf.erase(0, head_len);  // (the views into it are no longer needed)
    Lane& lane = *s.lane;
    bool ok = true;
    for (;;) {
      while (ok && !buf.empty()) {
        size_t n = std::min(buf.size(), kMaxPiece);
        ok = co_await d.send(s, std::string_view(buf).substr(0, n), false);
        buf.erase(0, n);
      }
      if (!ok) break;
      error_code ec = co_await lane.out.take(buf);
      if (ec == asio::error::eof) {
        ok = co_await d.send(s, {}, true);
        break;
      }
      if (ec) {
        ok = false;
        break;
      }
    }
    s.response_done = true;
    if (!ok && !s.closed) {
      d.session_.reset_stream(s.id, h2::ErrorCode::Cancel);
      d.wake();
    }
  }

  server::Worker& worker_;
  std::string listener_;
  DownstreamInfo info_;
  config::Limits limits_;
  h2::ServerSession session_;
  std::unordered_map<h2::StreamId, std::shared_ptr<Stream>> streams_;
  std::vector<std::shared_ptr<Lane>> idle_lanes_;
  bool ended_ = false;
};

// ================================ upstream ================================

class Upstream;
thread_local std::unordered_map<std::string, std::vector<std::shared_ptr<Upstream>>> t_upstreams;

class Upstream final : public Connection<h2::ClientSession>,
                       public h2::ClientEvents,
                       public std::enable_shared_from_this<Upstream> {
 public:
  Upstream(server::Worker& worker, std::unique_ptr<server::UpstreamConnection> conn,
           std::string key, std::string authority, bool https, Duration idle)
      : Connection(conn->io(), worker.io().get_executor()),
        worker_(worker),
        conn_(std::move(conn)),
        key_(std::move(key)),
        authority_(std::move(authority)),
        https_(https),
        idle_(idle),
        session_(h2::Limits{}, *this) {}

  bool usable() const {
    return !reader_done_ && !writer_done_ && session_.accepting_streams() &&
           session_.open_streams() + opening_ <
               std::max<uint32_t>(1, session_.peer_max_concurrent_streams());
  }

  void close_if_idle() {
    if (session_.open_streams() == 0 && opening_ == 0) {
      session_.terminate(h2::ErrorCode::NoError);
      wake();
    }
  }

  asio::awaitable<void> run() {
    auto self = shared_from_this();
    co_await (read_loop(
                  session_,
                  [this](std::span<const char> b) {
                    auto st = session_.receive(b);
                    if (!st.ok()) {
                      log::warn("upstream HTTP/2 connection {} failed: {} ({})", key_, st.reason,
                                session_.last_error());
                      return false;
                    }
                    return session_.want_read() || session_.want_write();
                  },
                  [this] { return opening_ == 0; }, idle_) &&
              write_loop(session_, idle_));
    ended_ = true;
    session_.terminate(h2::ErrorCode::NoError);
    for (auto& [id, s] : streams_) fail(*s);
    streams_.clear();
    read_wd_.disarm();
    write_wd_.disarm();
    auto& list = t_upstreams[key_];
    std::erase_if(list, [this](const std::shared_ptr<Upstream>& u) { return u.get() == this; });
    if (list.empty()) t_upstreams.erase(key_);
  }

  // credit_on_read: forward() took `n` body bytes of `stream`'s answer.
  void credit(h2::StreamId stream, size_t n) {
    session_.consume(stream, n);
    wake();
  }

  // A new stream for the HTTP/1 request forward() writes into `lane`.
  void start_stream(std::shared_ptr<Lane> lane) {
    ++opening_;
    read_wd_.disarm();  // busy: no idle deadline
    asio::co_spawn(worker_.io(), relay_request(shared_from_this(), std::move(lane)),
                   asio::detached);
  }

 private:
  struct Stream {
    explicit Stream(const asio::any_io_executor& ex) : ready(ex) {}
    h2::StreamId id = 0;
    std::shared_ptr<Lane> lane;
    bool chunked = false;        // the response goes into the lane chunked
    bool trailers_sent = false;  // the last chunk is out
    bool head_request = false;   // HEAD: a content-length says nothing about a body
    bool answered = false;       // the response head arrived
    bool done = false;           // the response ended
    bool closed = false;
    uint64_t unconsumed = 0;
    Signal ready;
  };

  void fail(Stream& s) {
    s.lane->in.fail(false);  // bytes already delivered stay readable; then a reset
    s.lane->out.close_reader();
    s.closed = true;
    s.ready.notify();
  }

  void on_response(h2::StreamId id, const h2::Response& resp, h2::Body body) override {
    auto it = streams_.find(id);
    if (it == streams_.end()) return;
    Stream& s = *it->second;
    s.answered = true;
    std::string head;
    head.reserve(256);
    head += "HTTP/1.1 "sv;
    head += std::to_string(resp.status);
    head += " \r\n"sv;
    bool has_length = false;
    for (const auto& h : resp.headers) {
      if (h.name == "content-length"sv) has_length = true;
      head += h.name;
      head += ": "sv;
      head += h.value;
      head += "\r\n"sv;
    }
    if (body == h2::Body::None) {
      if (!has_length && resp.status != 204 && resp.status != 304 && !s.head_request) {
        head += "content-length: 0\r\n"sv;
      }
    } else if (!has_length) {
      head += "transfer-encoding: chunked\r\n"sv;
      s.chunked = true;
    }
    head += "\r\n"sv;
    s.lane->in.push(head);
  }

  void on_data(h2::StreamId id, std::string_view data) override {
    auto it = streams_.find(id);
    if (it == streams_.end() || data.empty()) return;
    Stream& s = *it->second;
    if (s.lane->in.reader_closed()) {  // nobody reads the answer any more
      session_.reset_stream(id, h2::ErrorCode::Cancel);
      return;
    }
    s.unconsumed += data.size();
    push_body(s.lane->in, data, s.chunked);
  }

  void on_trailers(h2::StreamId id, std::span<const http::Header> fields) override {
    auto it = streams_.find(id);
    if (it == streams_.end()) return;
    Stream& s = *it->second;
    if (!s.chunked) return;
    push_last_chunk(s.lane->in, fields);
    s.trailers_sent = true;
  }

  void on_end_stream(h2::StreamId id) override {
    auto it = streams_.find(id);
    if (it == streams_.end()) return;
    Stream& s = *it->second;
    if (s.chunked && !s.trailers_sent) s.lane->in.push("0\r\n\r\n"sv);
    s.trailers_sent = true;
    s.done = true;
  }

  void on_send_ready(h2::StreamId id) override {
    auto it = streams_.find(id);
    if (it != streams_.end()) it->second->ready.notify();
  }

  void on_stream_close(h2::StreamId id, h2::StreamEnd how, h2::ErrorCode code) override {
    auto it = streams_.find(id);
    if (it == streams_.end()) return;
    auto s = it->second;
    streams_.erase(it);
    if (!s->done && !s->answered && how == h2::StreamEnd::PeerReset &&
        code == h2::ErrorCode::RefusedStream) {
      // Not processed: forward() may retry it elsewhere, like a refused connect.
      s->lane->in.fail(true, asio::error::connection_refused);
      s->lane->out.close_reader();
      s->closed = true;
      s->ready.notify();
    } else if (!s->done) {
      fail(*s);
    } else {
      s->closed = true;
      s->ready.notify();
    }
    if (session_.open_streams() == 0 && opening_ == 0 && !ended_) io_.arm(read_wd_, idle_);
  }

  asio::awaitable<bool> send(Stream& s, std::string_view data, bool end) {
    for (;;) {
      if (s.closed) co_return false;
      auto r = session_.submit_data(s.id, data, end ? h2::EndStream::Yes : h2::EndStream::No);
      wake();
      if (r == h2::Send::Ready) co_return true;
      if (r == h2::Send::Closed) co_return false;
      if (!co_await s.ready.wait_for(idle_) && !s.closed) {  // the server opens no window
        session_.reset_stream(s.id, h2::ErrorCode::Cancel);
        wake();
        co_return false;
      }
      if (r == h2::Send::Full) co_return !s.closed;
    }
  }

  // Reads the HTTP/1 request forward() writes into the lane and sends it as a stream.
  static asio::awaitable<void> relay_request(std::shared_ptr<Upstream> self,
                                             std::shared_ptr<Lane> lane) {
    Upstream& u = *self;
    std::string buf;
    http::ParserLimits pl;
    pl.max_request_line = 1 << 20;
    pl.max_header_bytes = 1 << 20;
    pl.max_headers = 10000;
    http::RequestParser parser(pl);
    http::RequestHead head;
    size_t head_len = 0;
    for (;;) {
      if (!buf.empty()) {
        auto r = parser.parse(buf, head);
        if (r.status == http::ParseStatus::Error) {
          log::error("upstream HTTP/2: cannot read the request to send: {}", r.error);
          --u.opening_;
          lane->in.fail(true);
          co_return;
        }
        if (r.status == http::ParseStatus::Done) {
          head_len = r.consumed;
          break;
        }
      }
      if (error_code ec = co_await lane->out.take(buf)) {
        --u.opening_;
        lane->in.fail(true);
        co_return;
      }
    }
    std::vector<http::Header> fields(head.headers.begin(), head.headers.end());
    fields.push_back({"te"sv, "trailers"sv});  // (gRPC servers insist on it)
    h2::Request req;
    req.method = head.method;
    req.scheme = u.https_ ? "https"sv : "http"sv;
    req.authority = head.host.empty() ? std::string_view(u.authority_) : head.host;
    req.path = head.target;
    req.headers = fields;
    const bool has_body = head.body_kind != http::BodyKind::None &&
                          !(head.body_kind == http::BodyKind::Length && head.content_length == 0);
    auto opened = u.session_.submit_request(req, has_body ? h2::Body::Follows : h2::Body::None);
    --u.opening_;
    u.wake();
    if (opened.result != h2::Submit::Ok) {  // GOAWAY received, or the session is gone
      lane->in.fail(true, asio::error::connection_refused);
      co_return;
    }
    auto sp = std::make_shared<Stream>(u.worker_.io().get_executor());
    Stream& s = *sp;
    s.id = opened.stream;
    s.lane = lane;
    s.head_request = head.method == "HEAD"sv;
    u.streams_[s.id] = sp;
    std::weak_ptr<Stream> weak = sp;
    std::weak_ptr<Upstream> weak_up = self;
    // forward() let go of the exchange (done, or its client went away) before the answer ended:
    // the stream is cancelled, so its window and the connection's come back.
    lane->in.on_close = [weak_up, weak] {
      auto up = weak_up.lock();
      auto st = weak.lock();
      if (!up || !st || st->closed || st->done) return;
      up->session_.reset_stream(st->id, h2::ErrorCode::Cancel);
      up->wake();
    };
    credit_on_read(lane->in, weak_up, weak);
    if (!has_body) co_return;
    buf.erase(0, head_len);
    const bool ok = co_await relay_body(
        lane->out, buf, head.body_kind, head.content_length,
        [&](std::string_view data, bool end) { return u.send(s, data, end); },
        [&](std::span<const http::Header> fields) {
          const bool sent = !s.closed && u.session_.submit_trailers(s.id, fields) == h2::Submit::Ok;
          u.wake();
          return sent;
        });
    if (!ok && !s.closed) {
      u.session_.reset_stream(s.id, h2::ErrorCode::Cancel);
      u.wake();
    }
    if (!ok) {
      // The stream ended before the request did (an early answer): take and drop the rest of
      // what forward() writes, so it gets to read that answer instead of waiting on the pipe.
      std::string discard;
      while (!co_await lane->out.take(discard)) discard.clear();
    }
  }

  server::Worker& worker_;
  std::unique_ptr<server::UpstreamConnection> conn_;
  std::string key_;
  std::string authority_;
  bool https_;
  Duration idle_;
  h2::ClientSession session_;
  std::unordered_map<h2::StreamId, std::shared_ptr<Stream>> streams_;
  int opening_ = 0;  // streams started whose request head is not submitted yet
  bool ended_ = false;
};

}  // namespace

asio::awaitable<void> serve_h2(server::Worker& worker, const server::Io& io,
                               std::string_view initial, std::string listener_name,
                               DownstreamInfo info) {
  const config::Limits* cfg = &worker.snapshot()->config.limits;
  for (const auto& l : worker.snapshot()->config.listeners) {
    if (l.name == listener_name) cfg = &l.limits;
  }
  h2::Limits limits;
  limits.enable_connect_protocol = true;  // RFC 8441 WebSocket over HTTP/2
  limits.max_header_list_size = static_cast<uint32_t>(
      std::min<size_t>(cfg->max_header_bytes + cfg->max_headers * 32, 1 << 24));
  auto conn = std::make_shared<Downstream>(worker, io, std::move(listener_name), std::move(info),
                                           limits, *cfg);
  std::string copy(initial);  // `initial` points into the caller's buffer
  co_await conn->run(copy);
}

asio::awaitable<Error> open_h2_stream(server::Worker& worker, server::UpstreamConnection& conn,
                                      const server::CompiledUpstream& up,
                                      const server::CompiledTarget& target, const std::string& ip,
                                      const std::string& key, server::Watchdog& wd,
                                      Duration connect_timeout) {
  std::shared_ptr<Upstream> u;
  if (auto it = t_upstreams.find(key); it != t_upstreams.end()) {
    for (auto& c : it->second) {
      if (c->usable()) {
        u = c;
        break;
      }
    }
  }
  if (!u) {
    auto c = std::make_unique<server::UpstreamConnection>(worker.io());
    c->key = key;
    Error e = co_await connect_target(c->socket, ip, target.port, connect_timeout, wd);
    if (!e && up.tls) {
      e = co_await upstream_handshake(*c, up, target, key, wd, connect_timeout);
      if (!e && tls::alpn_protocol(c->tls->native_handle()) != "h2"sv) {
        log::warn("upstream {} target {}: TLS handshake did not agree on h2 (ALPN)",
                  up.config->name, target.address);
        e = Error{Source::Upstream, ErrorKind::TlsFailed};
      }
    }
    if (e) co_return e;
    // Another request may have opened one meanwhile; two are fine (both are used).
    std::string authority = target.host;
    if (target.port != (up.tls ? 443 : 80)) authority += fmt::format(":{}", target.port);
    u = std::make_shared<Upstream>(worker, std::move(c), key, std::move(authority),
                                   up.tls != nullptr, up.config->timeouts.idle);
    t_upstreams[key].push_back(u);
    asio::co_spawn(worker.io(), u->run(), asio::detached);
  }
  conn.lane = std::make_shared<Lane>(worker.io().get_executor());
  conn.key = key;
  u->start_stream(conn.lane);
  co_return Error{};
}

void close_h2_upstreams() {
  for (auto& [key, list] : t_upstreams) {
    for (auto& u : list) u->close_if_idle();
  }
}

}  // namespace sluice::proxy

#include "proxy/http_session.h"
#include "proxy/access_log.h"
#include "proxy/h2_proxy.h"
#include "proxy/hold.h"
#include "proxy/proxy_header.h"
#include "proxy/upstream_call.h"
#include "proxy/websocket_bridge.h"

#include <array>
#include <charconv>
#include <chrono>
#include <functional>
#include <optional>
#include <span>
#include <utility>

#include <openssl/crypto.h>

#include <fmt/format.h>

#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/thread_pool.hpp>

#include "cache/policy.h"
#include "cache/store.h"
#include "core/error.h"
#include "core/log.h"
#include "filters/auth.h"
#include "filters/exchange.h"
#include "filters/rate_limit.h"
#include "http/h2.h"
#include "http/normalise.h"
#include "http/parser.h"
#include "server/tls_stream.h"
#include "server/watchdog.h"
#include "server/worker.h"
#include "stats/metrics.h"
#include "tls/tls.h"
#include "transform/xml_json.h"

namespace sluice::proxy {
namespace {

using namespace std::literals;

using server::CompiledRoute;
using server::CompiledTarget;
using server::CompiledUpstream;
using server::Snapshot;
using server::UpstreamConnection;
using server::Watchdog;
using server::Worker;
using Clock = std::chrono::steady_clock;

constexpr size_t kResponseBufferSize = 64 * 1024;
constexpr size_t kMaxResponseHead = 64 * 1024;
constexpr size_t kReplayLimit = 64 * 1024;  // request bodies up to this size can be retried

bool is_hop_by_hop(std::string_view name) {
  // Dispatch on length first: most header names match no candidate length at all.
  switch (name.size()) {
    case 2:
      return http::iequals(name, "te");
    case 6:
      return http::iequals(name, "expect");
    case 7:
      return http::iequals(name, "trailer") || http::iequals(name, "upgrade");
    case 10:
      return http::iequals(name, "connection") || http::iequals(name, "keep-alive");
    case 14:
      return http::iequals(name, "content-length");
    case 16:
      return http::iequals(name, "proxy-connection");
    case 17:
      return http::iequals(name, "transfer-encoding");
    case 19:
      return http::iequals(name, "proxy-authorization");
    default:
      return false;
  }
}

// Header names listed in a Connection header are hop-by-hop too (RFC 9110 7.6.1). Collects
// those names once per message (usually none: "keep-alive"/"close" are hop-by-hop already).
void connection_listed(const std::vector<http::Header>& headers,
                       std::vector<std::string_view>& out) {
  out.clear();
  for (const auto& h : headers) {
    if (h.name.size() != 10 || !http::iequals(h.name, "connection")) continue;
    std::string_view v = h.value;
    while (!v.empty()) {
      size_t comma = v.find(',');
      std::string_view tok = v.substr(0, comma);
      while (!tok.empty() && (tok.front() == ' ' || tok.front() == '\t')) tok.remove_prefix(1);
      while (!tok.empty() && (tok.back() == ' ' || tok.back() == '\t')) tok.remove_suffix(1);
      if (!tok.empty() && !http::iequals(tok, "close") && !http::iequals(tok, "keep-alive")) {
        out.push_back(tok);
      }
      if (comma == std::string_view::npos) break;
      v.remove_prefix(comma + 1);
    }
  }
}

bool listed(const std::vector<std::string_view>& names, std::string_view name) {
  for (auto n : names) {
    if (http::iequals(n, name)) return true;
  }
  return false;
}

std::string to_lower_ascii(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

// The media type of a content-type value, lower-cased, without parameters.
std::string media_type(std::string_view ct) {
  ct = ct.substr(0, ct.find(';'));
  while (!ct.empty() && (ct.back() == ' ' || ct.back() == '\t')) ct.remove_suffix(1);
  while (!ct.empty() && (ct.front() == ' ' || ct.front() == '\t')) ct.remove_prefix(1);
  std::string out(ct);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}
bool is_json_type(std::string_view mt) {
  return mt == "application/json" || (mt.size() > 5 && mt.ends_with("+json"));
}
bool is_xml_type(std::string_view mt) {
  return mt == "application/xml" || mt == "text/xml" || (mt.size() > 4 && mt.ends_with("+xml"));
}

// Route `transform`: what to do with a body of content-type `ct` (empty = none given).
enum class TransformAction { Convert, PassThrough, Refuse };
TransformAction transform_action(std::string_view conversion, std::string_view ct) {
  if (ct.empty()) return TransformAction::Convert;
  const std::string mt = media_type(ct);
  const bool from_xml = conversion == "xml_to_json";
  if (from_xml ? is_xml_type(mt) : is_json_type(mt)) return TransformAction::Convert;
  if (from_xml ? is_json_type(mt) : is_xml_type(mt)) return TransformAction::PassThrough;
  return TransformAction::Refuse;
}

transform::Result convert_body(std::string_view conversion, std::string_view body,
                               uint64_t max_body) {
  transform::Limits limits;
  limits.max_output = static_cast<size_t>(max_body);
  return conversion == "xml_to_json" ? transform::xml_to_json(body, limits)
                                     : transform::json_to_xml(body, limits);
}

std::string_view converted_type(std::string_view conversion) {
  return conversion == "xml_to_json" ? "application/json" : "application/xml; charset=utf-8";
}

bool is_hex(std::string_view s) {
  for (char c : s) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

// A client-supplied x-request-id is kept when it is short and made of safe characters.
bool valid_request_id(std::string_view id) {
  if (id.empty() || id.size() > 128) return false;
  for (char c : id) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_' || c == '.' || c == ':';
    if (!ok) return false;
  }
  return true;
}

// W3C traceparent "00-<32 hex trace-id>-<16 hex parent-id>-<2 hex flags>".
bool parse_traceparent(std::string_view v, std::string_view& trace_id, std::string_view& flags) {
  if (v.size() != 55 || v[2] != '-' || v[35] != '-' || v[52] != '-') return false;
  std::string_view version = v.substr(0, 2), tid = v.substr(3, 32), pid = v.substr(36, 16);
  flags = v.substr(53, 2);
  if (!is_hex(version) || version == "ff" || !is_hex(tid) || !is_hex(pid) || !is_hex(flags)) {
    return false;
  }
  if (tid == std::string_view("00000000000000000000000000000000") ||
      pid == std::string_view("0000000000000000")) {
    return false;
  }
  trace_id = tid;
  return true;
}

// `digits` lower-case hex digits of the low bits of v (ids are formatted per request: no fmt).
void append_hex(std::string& out, uint64_t v, int digits) {
  static constexpr char kHex[] = "0123456789abcdef";
  char buf[16];
  for (int i = digits - 1; i >= 0; --i) {
    buf[i] = kHex[v & 15];
    v >>= 4;
  }
  out.append(buf, static_cast<size_t>(digits));
}

// Hex without leading zeros (chunk sizes).
void append_hex_min(std::string& out, uint64_t v) {
  int digits = 1;
  while (digits < 16 && (v >> (4 * digits)) != 0) ++digits;
  append_hex(out, v, digits);
}

// A random (version 4) UUID from two random numbers, e.g. "3ee5839b-c81d-4cf6-984e-6d8afd46237b".
void append_uuid(std::string& out, uint64_t a, uint64_t b) {
  append_hex(out, a >> 32, 8);
  out += '-';
  append_hex(out, a >> 16, 4);
  out += "-4"sv;
  append_hex(out, a, 3);
  out += '-';
  append_hex(out, ((b >> 48) & 0x3fff) | 0x8000, 4);
  out += '-';
  append_hex(out, b, 12);
}

int64_t steady_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch())
      .count();
}

// How long a request waits for another one filling the same cache entry before it goes
// upstream itself.
constexpr auto kCoalesceWait = std::chrono::seconds(5);

// A cache miss that leads a fill: the waiters are released however the exchange ends.
struct CacheFill {
  std::shared_ptr<cache::Inflight> inflight;
  std::string key;
  CacheFill() = default;
  CacheFill(const CacheFill&) = delete;
  CacheFill& operator=(const CacheFill&) = delete;
  ~CacheFill() {
    if (inflight) inflight->complete(key);
  }
};

// Microseconds as milliseconds with three decimals ("12.345"), without a float or fmt.

// Per-exchange facts for the access log.
struct ExchangeLog {
  Clock::time_point start;
  std::string method, host, path, query, user_agent, referer, route, upstream, target, error,
      consumer;
  std::string_view protocol = "HTTP/1.1";
  std::string_view cache = "-";  // hit | miss | stale | - (route without cache)
  int status = 0;
  uint64_t bytes_in = 0, bytes_out = 0;
  int64_t upstream_us = -1;
  int attempts = 0;

  // Clears for the next exchange, keeping the strings' capacity.
  void reset() {
    start = Clock::now();
    for (std::string* s : {&method, &host, &path, &query, &user_agent, &referer, &route, &upstream,
                           &target, &error, &consumer}) {
      s->clear();
    }
    protocol = "HTTP/1.1";
    cache = "-";
    status = 0;
    bytes_in = bytes_out = 0;
    upstream_us = -1;
    attempts = 0;
  }
};

// Pulls a request or response body through a buffer, decoding chunked framing.
// The views it returns stay valid until the next call.
class BodySource {
 public:
  BodySource(server::Io io, server::IoBuffer& buf, size_t& begin, size_t& end, Watchdog& wd,
             Duration gap)
      : io_(io), buf_(buf), begin_(begin), end_(end), wd_(wd), gap_(gap) {}

  enum class Status { Data, End, Error, Timeout };

  void start(http::BodyKind kind, uint64_t length) {
    kind_ = kind;
    remaining_ = length;
    done_ = kind == http::BodyKind::None || (kind == http::BodyKind::Length && length == 0);
    decoder_.keep_trailers(true);
    decoder_.reset();
  }
  // A chunked body's trailer fields that may be passed on (after done()), CRLF-terminated lines.
  std::string trailers() const {
    return decoder_.trailers().empty() ? std::string()
                                       : http::permitted_trailers(decoder_.trailers());
  }
  bool done() const { return done_; }
  // Body bytes taken from the buffer so far, framing included (what the access log counts).
  uint64_t raw_bytes() const { return raw_bytes_; }

  // The next pieces when they can be had without I/O (the common case: the body, or the rest
  // of it, already sits in the buffer). False: call next(), which reads. Views stay valid until
  // the next call.
  bool take_buffered(std::vector<std::string_view>& pieces, Status& st) {
    pieces.clear();
    if (done_) {
      st = Status::End;
      return true;
    }
    if (begin_ == end_) return false;
    std::string_view avail(buf_.data() + begin_, end_ - begin_);
    switch (kind_) {
      case http::BodyKind::Length: {
        size_t n = static_cast<size_t>(std::min<uint64_t>(avail.size(), remaining_));
        pieces.push_back(avail.substr(0, n));
        begin_ += n;
        raw_bytes_ += n;
        remaining_ -= n;
        if (remaining_ == 0) done_ = true;
        st = Status::Data;
        return true;
      }
      case http::BodyKind::UntilClose:
        pieces.push_back(avail);
        begin_ = end_;
        raw_bytes_ += avail.size();
        st = Status::Data;
        return true;
      case http::BodyKind::Chunked: {
        auto r = decoder_.feed(avail, pieces);
        if (r.error) {
          error_ = r.reason;
          st = Status::Error;
          return true;
        }
        begin_ += r.consumed;
        raw_bytes_ += r.consumed;
        if (decoder_.done()) done_ = true;
        if (!pieces.empty() || done_) {
          st = Status::Data;
          return true;
        }
        return false;  // a partial chunk line: need more bytes
      }
      case http::BodyKind::None:
        done_ = true;
        st = Status::End;
        return true;
    }
    return false;
  }

  asio::awaitable<Status> next(std::vector<std::string_view>& pieces) {
    for (;;) {
      Status st;
      if (take_buffered(pieces, st)) co_return st;
      // Make room: move the unconsumed tail (a partial chunk line) to the front.
      if (begin_ > 0) {
        std::memmove(buf_.data(), buf_.data() + begin_, end_ - begin_);
        end_ -= begin_;
        begin_ = 0;
      }
      if (end_ == buf_.size()) {
        error_ = "chunk framing too long";
        co_return Status::Error;
      }
      io_.arm(wd_, gap_);
      auto [ec, n] = co_await io_.read_some(asio::buffer(buf_.data() + end_, buf_.size() - end_));
      if (ec) {
        // (a TLS peer that closes without close_notify ends a close-delimited body too)
        if ((ec == asio::error::eof || ec == asio::ssl::error::stream_truncated) &&
            kind_ == http::BodyKind::UntilClose) {
          done_ = true;
          co_return Status::End;
        }
        error_ = ec == asio::error::eof || ec == asio::ssl::error::stream_truncated
                     ? "connection closed mid-body"
                     : "read error";
        co_return wd_.expired() ? Status::Timeout : Status::Error;
      }
      end_ += n;
    }
  }
  std::string_view error() const { return error_; }

 private:
  server::Io io_;
  server::IoBuffer& buf_;
  size_t& begin_;
  size_t& end_;
  Watchdog& wd_;
  Duration gap_;
  http::BodyKind kind_ = http::BodyKind::None;
  uint64_t remaining_ = 0;
  bool done_ = true;
  http::ChunkedDecoder decoder_;
  uint64_t raw_bytes_ = 0;
  std::string_view error_;
};

// Writes body pieces with the framing chosen for the receiving side.
class BodySink {
 public:
  enum class Framing { Raw, Chunked };
  // `iov` is scratch space owned by the session (reused across exchanges).
  BodySink(server::Io io, Watchdog& wd, Duration gap, Framing framing,
           std::vector<asio::const_buffer>& iov)
      : io_(io), wd_(wd), gap_(gap), framing_(framing), bufs_(iov) {}

  // The buffers of one write: `prefix` (a head not yet written) goes out with the pieces, framed
  // as this sink frames them. Valid until the next call. Callers on the hot path co_await
  // the stream's write on it directly (one coroutine frame fewer than write()).
  std::span<const asio::const_buffer> prepare(std::string_view prefix,
                                              const std::vector<std::string_view>& pieces,
                                              bool last) {
    bufs_.clear();
    if (!prefix.empty()) bufs_.emplace_back(prefix.data(), prefix.size());
    size_t total = 0;
    for (auto p : pieces) total += p.size();
    if (framing_ == Framing::Chunked && total > 0) {
      chunk_line_.clear();
      append_hex_min(chunk_line_, total);
      chunk_line_ += "\r\n";
      bufs_.emplace_back(chunk_line_.data(), chunk_line_.size());
    }
    for (auto p : pieces) {
      if (!p.empty()) bufs_.emplace_back(p.data(), p.size());
    }
    if (framing_ == Framing::Chunked) {
      if (total > 0) bufs_.emplace_back("\r\n", 2);
      if (last && trailers_.empty()) {
        bufs_.emplace_back("0\r\n\r\n", 5);
      } else if (last) {
        bufs_.emplace_back("0\r\n", 3);
        bufs_.emplace_back(trailers_.data(), trailers_.size());
        bufs_.emplace_back("\r\n", 2);
      }
    }
    io_.arm(wd_, gap_);
    return bufs_;
  }
  void count(size_t n) { bytes_ += n; }
  // Trailer field lines (CRLF-terminated) for the last chunk of a chunked body.
  void set_trailers(std::string t) { trailers_ = std::move(t); }

  asio::awaitable<bool> write(std::string_view prefix, const std::vector<std::string_view>& pieces,
                              bool last) {
    auto iov = prepare(prefix, pieces, last);
    if (iov.empty()) co_return true;
    auto [ec, n] = co_await io_.write(iov);
    bytes_ += n;
    co_return !ec;
  }
  uint64_t bytes() const { return bytes_; }

 private:
  server::Io io_;
  Watchdog& wd_;
  Duration gap_;
  Framing framing_;
  std::vector<asio::const_buffer>& bufs_;
  std::string chunk_line_;
  std::string trailers_;
  uint64_t bytes_ = 0;
};

// Everything one exchange needs beyond the connection itself. Taken from a per-worker free list
// when a request starts and given back when the connection goes idle, so an idle keep-alive
// connection holds only its socket, timers and a small read buffer.
struct ExchangeScratch {
  http::RequestHead head;
  http::ResponseHead rhead;
  filters::Exchange exchange;
  ExchangeLog log;
  std::string request_id, trace_id, traceparent_out;
  std::string out;    // heads written downstream
  std::string uhead;  // head written upstream
  std::vector<std::string_view> pieces;
  std::vector<asio::const_buffer> iov;
  std::string replay;         // the request body, kept for retries (up to kReplayLimit)
  std::string converted;      // a response body converted by the route's transform
  std::string sticky_cookie;  // Set-Cookie value when the exchange (re-)pins a sticky client
  std::vector<uint32_t> load;
  std::vector<bool> excluded, tried, fresh;
  std::vector<std::string_view> listed;  // names a Connection header lists (hop-by-hop)

  // Route `cache:` state of this exchange.
  struct Cache {
    bool active = false;   // a GET on a caching route that may store its response
    bool capture = false;  // storing: the response body is being copied into `pending`
    std::string key;
    cache::CacheControl request_cc;
    bool has_credentials = false;
    std::shared_ptr<const cache::Entry> stale;  // usable on errors (stale_if_error)
    std::shared_ptr<cache::Entry> pending;      // the response being stored
    void reset() {
      active = capture = has_credentials = false;
      key.clear();
      request_cc = {};
      stale.reset();
      pending.reset();
    }
  } cache;
};

// Per-worker free list of ExchangeScratch (thread_local: one per worker thread).
class ScratchPool {
 public:
  static constexpr size_t kMaxFree = 1024;
  std::unique_ptr<ExchangeScratch> take() {
    if (free_.empty()) return std::make_unique<ExchangeScratch>();
    auto x = std::move(free_.back());
    free_.pop_back();
    return x;
  }
  void give(std::unique_ptr<ExchangeScratch> x) {
    if (x && free_.size() < kMaxFree) free_.push_back(std::move(x));
  }

 private:
  std::vector<std::unique_ptr<ExchangeScratch>> free_;
};
thread_local ScratchPool t_scratch_pool;

asio::awaitable<filters::Step> run_blocking(std::function<filters::Step()> work);
asio::awaitable<filters::Step> run_async(filters::Step::Start start);

class HttpSession final : public server::Session {
 public:
  HttpSession(Worker& worker, tcp::socket socket, std::string listener)
      : worker_(worker),
        socket_(std::move(socket)),
        listener_name_(std::move(listener)),
        down_wd_(socket_.get_executor()),
        up_wd_(socket_.get_executor()) {
    error_code ec;
    auto ep = socket_.remote_endpoint(ec);
    if (!ec) {
      auto addr = ep.address();
      if (addr.is_v6() && addr.to_v6().is_v4_mapped()) {  // a dual-stack listener's IPv4 client
        addr = asio::ip::make_address_v4(asio::ip::v4_mapped, addr.to_v6());
      }
      client_ip_ = addr.to_string();
      addrs_.client = {client_ip_, ep.port()};  // (the local address: only for a PROXY header)
    }
    worker_.add_session(this);
  }
  // One HTTP/2 stream after another, carried over `lane` (h2_proxy.cpp): the connection's
  // client address, TLS and identity come from the HTTP/2 connection.
  HttpSession(Worker& worker, std::shared_ptr<server::Lane> lane, std::string listener,
              const DownstreamInfo& info)
      : worker_(worker),
        socket_(worker.io()),
        lane_(std::move(lane)),
        https_(info.https),
        tls_cn_(info.tls_cn),
        listener_name_(std::move(listener)),
        client_ip_(info.client_ip),
        down_wd_(socket_.get_executor()),
        up_wd_(socket_.get_executor()) {
    io_ = server::Io{nullptr, nullptr, lane_.get()};
    addrs_ = info.addrs;
    worker_.add_session(this);
  }
  ~HttpSession() override {
    if (lane_) lane_->close();  // (also when run() ended by an exception)
    if (conn_metrics_) conn_metrics_->connection_closed(conn_listener_);
    worker_.remove_session(this);
    if (!buf_.empty()) worker_.buffers().give(std::move(buf_));
    t_scratch_pool.give(std::move(xs_));
  }

  void on_drain() override {
    if (idle_) {
      error_code ignored;
      if (lane_) {
        lane_->cancel(ignored);
      } else {
        socket_.cancel(ignored);
      }
    }
  }

  asio::awaitable<void> run();

 private:
  enum class Next { KeepAlive, Close };

  // TLS listeners: the handshake, within the header timeout. False: close the connection.
  asio::awaitable<bool> handshake(std::shared_ptr<const tls::ServerContext> ctx);
  // The identity of a verified client certificate (mutual TLS), resolved against the current
  // snapshot's consumers; null without one.
  const std::shared_ptr<const filters::Exchange::Identity>& tls_identity() {
    if (tls_cn_.empty()) return tls_identity_;
    if (!tls_identity_ || tls_identity_generation_ != snap_->generation) {
      tls_identity_ = filters::consumer_identity(snap_->auth, tls_cn_);
      tls_identity_generation_ = snap_->generation;
    }
    return tls_identity_;
  }

  const config::Listener* listener() const {
    for (const auto& l : snap_->config.listeners) {
      if (l.name == listener_name_) return &l;
    }
    return nullptr;
  }

  void refresh_snapshot() {
    if (snap_ == worker_.snapshot()) return;
    snap_ = worker_.snapshot();
    const config::Listener* l = listener();
    limits_ = l != nullptr ? l->limits : snap_->config.limits;
    metrics_ = worker_.metrics();
    listener_index_ = l != nullptr ? static_cast<int>(l - snap_->config.listeners.data()) : -1;
    redirect_to_https_ = l != nullptr && l->redirect_to_https;
    http::ParserLimits pl;
    pl.max_request_line = limits_.max_request_line;
    pl.max_header_bytes = limits_.max_header_bytes;
    pl.max_headers = limits_.max_headers;
    parser_ = http::RequestParser(pl);
    buffer_size_ =
        std::max<size_t>(16 * 1024, limits_.max_request_line + limits_.max_header_bytes + 4096);
  }
  asio::awaitable<bool> read_head();
  asio::awaitable<Next> handle();
  asio::awaitable<Next> forward(const CompiledUpstream& up, size_t up_index,
                                std::string_view upstream_path, filters::Exchange& x);
  asio::awaitable<void> send_local(int status, std::string_view body, std::string_view content_type,
                                   const std::vector<std::pair<std::string, std::string>>& extra,
                                   bool close);
  asio::awaitable<void> send_error(const Error& e, std::string_view detail, bool close,
                                   std::string_view allow = {});
  asio::awaitable<void> send_parse_error(int status, std::string_view reason);
  // The client's body could not be read (bad framing, timeout) or exceeds max_body: counts what
  // was read and answers (400/408/413); the caller closes the connection.
  asio::awaitable<void> refuse_body(const BodySource& src, ErrorKind kind) {
    xs_->log.bytes_in += src.raw_bytes();
    co_await send_error({Source::Downstream, kind},
                        kind == ErrorKind::BodyTooLarge ? std::string_view() : src.error(), true);
  }
  // redirect_to_https: 308 to the same host and request target on the first TLS listener.
  asio::awaitable<void> redirect_https(bool close);
  // Route `cache:`: answers from the cache (true), or prepares the exchange to store its
  // response, leading or waiting for a concurrent fill of the same key.
  asio::awaitable<bool> try_cache(const CompiledRoute& route, filters::Exchange& x, bool close,
                                  CacheFill& fill);
  // Writes a cached response (`state`: "HIT" or "STALE").
  asio::awaitable<void> serve_cached(std::shared_ptr<const cache::Entry> entry,
                                     std::string_view state, bool close);
  // Writes the head sent upstream into `h` (the scratch string keeps its capacity).
  void build_upstream_head(const filters::Exchange& x, std::string_view path,
                           const CompiledTarget& target, http::BodyKind body_kind, std::string& h);
  // The route's upstream (a split picks one by weight), recorded for the log and metrics.
  int pick_upstream(const CompiledRoute& route) {
    int up_index = route.upstream;
    if (route.config->action == config::Route::Action::Split) {
      up_index = route.split_upstreams[upstream::pick_split(route.split_weights, worker_.random())];
    }
    xs_->log.upstream = snap_->upstreams[static_cast<size_t>(up_index)].config->name;
    upstream_index_ = up_index;
    return up_index;
  }
  // Route `websocket_bridge`: the WebSocket ends here; its messages become upstream requests.
  asio::awaitable<Next> bridge(const CompiledRoute& route, const router::MatchResult& m,
                               std::string_view path, filters::Exchange& x);
  // Route `websocket`: after the upstream's 101, relays bytes both ways until both sides are
  // done (a half-close is passed on), either fails, or nothing moved for `idle`.
  asio::awaitable<void> tunnel(UpstreamConnection& conn, std::string_view to_client, Duration idle);
  asio::awaitable<void> pump(server::Io from, server::Io to, bool to_upstream, Duration idle,
                             uint64_t& bytes);
  // Full duplex to an HTTP/2 upstream: the client's body, streamed while forward() reads the
  // answer.
  struct BodyPump {
    explicit BodyPump(const asio::any_io_executor& ex) : timer(ex) {}
    asio::steady_timer timer;  // cancelled when done
    bool done = false;
    bool complete = false;  // the whole body was read and sent
    uint64_t raw_bytes = 0;
    std::vector<asio::const_buffer> iov;
  };
  asio::awaitable<void> pump_body(std::shared_ptr<BodyPump> st, std::shared_ptr<server::Lane> up,
                                  Duration timeout);
  // After an exchange: stops and waits for its body pump, if any.
  asio::awaitable<void> join_pump();
  void write_access_log();
  void record_metrics();
  // The `sluice-trace` response header value: phase decisions and times so far.
  std::string trace_value() const {
    auto ms = std::chrono::duration<double, std::milli>(Clock::now() - xs_->log.start).count();
    std::string v = trace_;
    if (!xs_->log.target.empty()) {
      v += fmt::format("; target={}; attempts={}", xs_->log.target, xs_->log.attempts);
    }
    if (xs_->log.upstream_us >= 0)
      v += fmt::format("; upstream_ms={:.3f}", xs_->log.upstream_us / 1e3);
    if (xs_->log.cache != "-"sv) v += fmt::format("; cache={}", xs_->log.cache);
    v += fmt::format("; total_ms={:.3f}", ms);
    return v;
  }
  // The read buffer and the exchange scratch are held only while a request is in progress.
  void ensure_buffer() {
    if (buf_.empty()) buf_ = worker_.buffers().take(buffer_size_);
    if (!xs_) xs_ = t_scratch_pool.take();
  }
  void release_buffer_if_idle() {
    if (begin_ == end_ && !buf_.empty()) {
      worker_.buffers().give(std::move(buf_));
      buf_.clear();
      begin_ = end_ = 0;
      t_scratch_pool.give(std::move(xs_));
    }
  }

  Worker& worker_;
  tcp::socket socket_;                      // not open when the session runs over a lane
  std::unique_ptr<server::TlsStream> tls_;  // over socket_ on a TLS listener
  server::Io io_{&socket_, nullptr};        // socket_, or tls_ once the handshake is done
  std::shared_ptr<server::Lane> lane_;      // an HTTP/2 connection's streams, instead of socket_
  bool https_ = false;                      // the client connection is TLS
  std::string tls_cn_;                      // a verified client certificate's CN
  std::shared_ptr<const filters::Exchange::Identity> tls_identity_;
  uint64_t tls_identity_generation_ = 0;
  bool redirect_to_https_ = false;
  std::string listener_name_;
  std::string client_ip_;
  Addresses addrs_;  // client and local address (from a PROXY header on such a listener)
  const Addresses& proxy_addresses() {  // for an upstream PROXY header: with the local address
    if (addrs_.local.ip.empty()) addrs_.local = connection_addresses(socket_).local;
    return addrs_;
  }
  Watchdog down_wd_;
  Watchdog up_wd_;
  std::shared_ptr<const Snapshot> snap_;
  config::Limits limits_;
  size_t buffer_size_ = 0;

  server::IoBuffer buf_;
  size_t begin_ = 0, end_ = 0;  // unconsumed bytes of buf_
  size_t head_len_ = 0;
  http::RequestParser parser_;
  std::unique_ptr<ExchangeScratch> xs_;  // only while an exchange is in progress
  bool idle_ = false;
  bool served_any_ = false;
  std::array<char, 512> idle_buf_;
  bool close_after_ = false;  // set when the request body was not fully consumed, or draining

  const CompiledRoute* route_ = nullptr;
  std::optional<Duration> route_timeout_;

  // Metrics: the worker's block for snap_ (indexes of snap_), and the block and listener the
  // connection was counted open on (closed on the same one).
  std::shared_ptr<stats::WorkerMetrics> metrics_;
  std::shared_ptr<stats::WorkerMetrics> conn_metrics_;
  int listener_index_ = -1;
  int conn_listener_ = -1;
  int route_index_ = -1;     // this exchange's route in snap_, -1 = none matched
  int upstream_index_ = -1;  // this exchange's upstream in snap_
  bool auth_refused_ = false;
  bool transform_request_ = false;  // this exchange's request body is converted (route transform)
  bool ws_upgrade_ = false;  // this exchange asks the upstream for a WebSocket (route `websocket`)
  // `x-sluice-trace: <admin token>`: the decisions of this exchange, for a `sluice-trace` header.
  bool tracing_ = false;
  std::string trace_;
  std::shared_ptr<BodyPump> pump_;  // this exchange's full-duplex body, if any
};

asio::awaitable<void> HttpSession::run() {
  refresh_snapshot();
  if (snap_->config.admin) conn_metrics_ = metrics_;
  conn_listener_ = listener_index_;
  if (lane_) conn_metrics_ = nullptr;  // the HTTP/2 connection counts itself
  if (conn_metrics_) conn_metrics_->connection_opened(conn_listener_);
  if (const config::Listener* l = listener(); !lane_ && l != nullptr && l->proxy_protocol) {
    // The L4 balancer in front names the client first (before TLS, as the spec orders).
    std::string_view why =
        co_await accept_proxy_header(socket_, down_wd_, limits_.header_timeout, addrs_);
    if (!why.empty()) {
      log::warn("listener {}: PROXY header from {} refused: {}", listener_name_, client_ip_, why);
      error_code ignored;
      socket_.close(ignored);
      co_return;
    }
    client_ip_ = addrs_.client.ip;
  }
  if (lane_) {
    // Served on an HTTP/2 connection: no handshake, no socket to close.
  } else if (auto it = snap_->listener_tls.find(listener_name_); it != snap_->listener_tls.end()) {
    if (!co_await handshake(it->second)) {
      error_code ignored;
      socket_.close(ignored);
      co_return;
    }
  }
  if (const config::Listener* l = listener(); !lane_ && l != nullptr && l->http2) {
    // HTTP/2: negotiated by ALPN on TLS, or the h2c preface on cleartext (prior knowledge).
    bool h2 = false;
    if (tls_) {
      h2 = tls::alpn_protocol(tls_->native_handle()) == "h2"sv;
    } else {
      ensure_buffer();
      io_.arm(down_wd_, limits_.header_timeout);
      for (;;) {
        auto [ec, n] = co_await io_.read_some(asio::buffer(buf_.data() + end_, buf_.size() - end_));
        if (ec || n == 0) {
          error_code ignored;
          socket_.close(ignored);
          co_return;
        }
        end_ += n;
        auto p = http::h2::detect_preface(std::string_view(buf_.data(), end_));
        if (p == http::h2::Preface::NeedMore) continue;
        h2 = p == http::h2::Preface::H2;
        break;
      }
    }
    if (h2) {
      down_wd_.disarm();
      DownstreamInfo info{client_ip_, https_, tls_cn_, proxy_addresses()};
      std::string_view initial(buf_.empty() ? nullptr : buf_.data(), end_);
      co_await serve_h2(worker_, io_, initial, listener_name_, std::move(info));
      begin_ = end_ = 0;
      release_buffer_if_idle();
      error_code ignored;
      if (tls_ && socket_.is_open()) tls_->shutdown();
      socket_.shutdown(tcp::socket::shutdown_send, ignored);
      socket_.close(ignored);
      co_return;
    }
  }
  for (;;) {
    // A new snapshot applies from the next request on: before reading a head (for the limits)
    // and again once it arrived (a reload may have happened while the connection was idle), so
    // the route, upstream and balancer of one exchange all come from one snapshot.
    refresh_snapshot();
    if (!co_await read_head()) break;
    refresh_snapshot();
    Next next = co_await handle();
    if (pump_) co_await join_pump();  // (no coroutine frame per request otherwise)
    if (next == Next::Close || close_after_ || worker_.draining()) break;
    release_buffer_if_idle();
  }
  if (lane_) {
    lane_->close();
    co_return;
  }
  error_code ignored;
  if (tls_ && socket_.is_open())
    tls_->shutdown();  // close_notify, without waiting for the client's
  socket_.shutdown(tcp::socket::shutdown_send, ignored);
  socket_.close(ignored);
}

asio::awaitable<bool> HttpSession::handshake(std::shared_ptr<const tls::ServerContext> ctx) {
  SSL* ssl = ctx->new_ssl();
  if (ssl == nullptr) co_return false;
  tls_ = std::make_unique<server::TlsStream>(socket_, ssl);  // owns ssl from here
  io_.arm(down_wd_, limits_.header_timeout);
  error_code ec = co_await tls_->handshake();
  down_wd_.disarm();
  if (ec) {
    // Scanners and clients with no common protocol do this all day: debug, not warn.
    log::debug("TLS handshake from {} failed: {}", client_ip_,
               down_wd_.expired() ? std::string("timeout") : ec.message());
    tls::clear_errors();
    co_return false;
  }
  tls_cn_ = tls::peer_common_name(ssl);
  io_.tls = tls_.get();
  https_ = true;
  co_return true;
}

asio::awaitable<bool> HttpSession::read_head() {
  parser_.reset();
  if (begin_ == end_) {
    // Idle keep-alive: read into a small inline buffer so an idle connection holds no I/O
    // buffer. (An async_wait for readability would cost an epoll_ctl per request in Asio.)
    idle_ = true;
    // The first request must come within header_timeout; later ones within idle_timeout.
    io_.arm(down_wd_, served_any_ ? limits_.idle_timeout : limits_.header_timeout);
    if (worker_.draining()) co_return false;
    auto [ec, n] = co_await io_.read_some(asio::buffer(idle_buf_));
    idle_ = false;
    if (ec || n == 0 || worker_.draining()) co_return false;
    ensure_buffer();
    std::memcpy(buf_.data() + end_, idle_buf_.data(), n);
    end_ += n;
  }
  ensure_buffer();
  xs_->head.headers.clear();  // keeps its capacity
  {
    std::vector<http::Header> keep = std::move(xs_->head.headers);
    xs_->head = {};
    xs_->head.headers = std::move(keep);
  }
  io_.arm(down_wd_, limits_.header_timeout);
  for (;;) {
    if (begin_ < end_) {
      auto r = parser_.parse(std::string_view(buf_.data() + begin_, end_ - begin_), xs_->head);
      if (r.status == http::ParseStatus::Done) {
        head_len_ = r.consumed;
        co_return true;
      }
      if (r.status == http::ParseStatus::Error) {
        co_await send_parse_error(r.error_status, r.error);
        co_return false;
      }
    }
    if (end_ == buf_.size()) {
      if (begin_ > 0) {
        std::memmove(buf_.data(), buf_.data() + begin_, end_ - begin_);
        end_ -= begin_;
        begin_ = 0;
      } else {
        co_await send_parse_error(431, "request head too large");
        co_return false;
      }
    }
    auto [ec, n] = co_await io_.read_some(asio::buffer(buf_.data() + end_, buf_.size() - end_));
    if (ec) {
      if (down_wd_.expired() && begin_ < end_) {
        co_await send_parse_error(408, "request head timeout");
      }
      co_return false;
    }
    end_ += n;
  }
}

asio::awaitable<void> HttpSession::send_parse_error(int status, std::string_view reason) {
  xs_->log.reset();
  if (lane_) xs_->log.protocol = "HTTP/2";
  xs_->request_id.clear();
  append_uuid(xs_->request_id, worker_.random(), worker_.random());
  xs_->log.error = reason;
  log::info("{}: {} from {} ({})", status, reason, client_ip_, listener_name_);
  std::string body = fmt::format(R"({{"error":"{}","status":{},"request_id":"{}"}})", reason,
                                 status, xs_->request_id);
  co_await send_local(status, body, "application/json", {}, true);
  write_access_log();
}

asio::awaitable<void> HttpSession::send_local(
    int status, std::string_view body, std::string_view content_type,
    const std::vector<std::pair<std::string, std::string>>& extra, bool close) {
  xs_->out.clear();
  xs_->out += "HTTP/1.1 "sv;
  append_decimal(xs_->out, static_cast<uint64_t>(status));
  xs_->out += ' ';
  xs_->out += status_text(status);
  xs_->out += "\r\nserver: sluice\r\ndate: "sv;
  xs_->out += worker_.http_date();
  if (!content_type.empty()) {
    xs_->out += "\r\ncontent-type: "sv;
    xs_->out += content_type;
  }
  xs_->out += "\r\ncontent-length: "sv;
  append_decimal(xs_->out, body.size());
  if (!xs_->request_id.empty()) {
    xs_->out += "\r\nx-request-id: "sv;
    xs_->out += xs_->request_id;
  }
  for (const auto& [k, v] : extra) {
    xs_->out += "\r\n"sv;
    xs_->out += k;
    xs_->out += ": "sv;
    xs_->out += v;
  }
  if (close) xs_->out += "\r\nconnection: close"sv;
  xs_->out += "\r\n\r\n"sv;
  // (log.method, not head.method: the head's views may be stale once a body was read)
  bool head_only = xs_->log.method == "HEAD";
  std::array<asio::const_buffer, 2> bufs{asio::buffer(xs_->out),
                                         asio::buffer(body.data(), head_only ? 0 : body.size())};
  io_.arm(down_wd_, std::chrono::seconds(5));
  auto [ec, n] = co_await io_.write(bufs);
  xs_->log.status = status;
  xs_->log.bytes_out += n;
  if (close) close_after_ = true;
}

asio::awaitable<void> HttpSession::send_error(const Error& e, std::string_view detail, bool close,
                                              std::string_view allow) {
  xs_->log.error = detail.empty() ? std::string(e.reason()) : std::string(detail);
  // The cause of every gateway-made error in the error log (a 404/405 is routine: not logged).
  if (e.kind != ErrorKind::NoRoute && e.kind != ErrorKind::MethodNotAllowed) {
    auto line =
        fmt::format("{} {} {}: {} {}{}{} (request {})", client_ip_, xs_->log.method, xs_->log.path,
                    e.status(), e.reason(), xs_->log.upstream.empty() ? "" : " upstream ",
                    xs_->log.upstream, xs_->request_id);
    if (!detail.empty() && detail != e.reason()) line += fmt::format(": {}", detail);
    if (e.status() >= 500) {
      log::warn("{}", line);
    } else {
      log::info("{}", line);
    }
  }
  std::string body = fmt::format(R"({{"error":"{}","status":{},"request_id":"{}"}})", e.reason(),
                                 e.status(), xs_->request_id);
  std::vector<std::pair<std::string, std::string>> extra;
  if (!allow.empty()) extra.emplace_back("allow", std::string(allow));
  co_await send_local(e.status(), body, "application/json", extra, close);
}

asio::awaitable<void> HttpSession::redirect_https(bool close) {
  std::string_view host = xs_->head.host;
  if (host.empty()) {
    co_await send_error({Source::Downstream, ErrorKind::BadRequest}, "no host to redirect to",
                        close);
    co_return;
  }
  // Drop the port the client used for cleartext ("[v6]:80" keeps its brackets).
  if (size_t colon = host.rfind(':');
      colon != std::string_view::npos && host.find(']', colon) == std::string_view::npos) {
    host = host.substr(0, colon);
  }
  std::string location = "https://";
  location += host;
  if (snap_->https_port != 0 && snap_->https_port != 443) {
    location += ':';
    append_decimal(location, snap_->https_port);
  }
  location += xs_->head.path;  // the request target as sent, not the normalised path
  if (!xs_->head.query.empty()) {
    location += '?';
    location += xs_->head.query;
  }
  std::vector<std::pair<std::string, std::string>> extra;
  extra.emplace_back(std::string("location"), std::move(location));
  co_await send_local(308, {}, {}, extra, close);
}

asio::awaitable<bool> HttpSession::try_cache(const CompiledRoute& route, filters::Exchange& x,
                                             bool close, CacheFill& fill) {
  auto& cs = xs_->cache;
  const cache::RouteCache& rc = *route.cache;
  const bool get = xs_->log.method == "GET";
  if (!get && xs_->log.method != "HEAD") co_return false;
  xs_->log.cache = "miss";
  // (a GET with a body is unusual enough not to cache: its head's views end with the body read)
  if (xs_->head.body_kind != http::BodyKind::None) co_return false;
  for (const auto& h : xs_->head.headers) {
    if (http::iequals(h.name, "cache-control")) {
      cs.request_cc.merge(h.value);
    } else if (http::iequals(h.name, "pragma")) {
      cs.request_cc.merge_pragma(h.value);
    }
  }
  cs.has_credentials = !x.consumer().empty() || xs_->head.header("authorization").found;
  const cache::LookupRules rules = cache::lookup_rules(cs.request_cc, cs.has_credentials, rc);
  if (rules.bypass) co_return false;
  cs.key = cache::Store::make_key(xs_->head.host, xs_->log.path, xs_->head.query,
                                  rc.per_consumer ? x.consumer() : std::string_view());
  auto header = [this](std::string_view name) -> std::optional<std::string_view> {
    auto h = xs_->head.header(name);
    return h.found ? std::optional<std::string_view>(h.value) : std::nullopt;
  };
  auto usable = [&](const cache::Entry& e, int64_t now) {
    if (!e.fresh(now)) return false;
    const int64_t age = e.age_s(now);
    if (rules.max_age && age > *rules.max_age) return false;
    return !rules.min_fresh || e.ttl_s - age >= *rules.min_fresh;
  };
  int64_t now = steady_ns();
  auto entry = snap_->cache->lookup(cs.key, header);
  if (entry && !rules.revalidate && usable(*entry, now)) {
    co_await serve_cached(std::move(entry), "HIT", close);
    co_return true;
  }
  if (entry && entry->usable_if_error(now)) cs.stale = entry;
  cs.active = get;
  if (!get || rules.revalidate) co_return false;

  // Coalescing: the first miss fills, the others wait for it (woken from its worker).
  struct Wait {
    explicit Wait(const asio::any_io_executor& ex) : signal(ex) {}
    asio::steady_timer signal;
  };
  auto wait = std::make_shared<Wait>(socket_.get_executor());
  wait->signal.expires_after(kCoalesceWait);
  auto ex = socket_.get_executor();
  if (snap_->inflight->join(cs.key,
                            [wait, ex] { asio::post(ex, [wait] { wait->signal.cancel(); }); })) {
    fill.inflight = snap_->inflight;
    fill.key = cs.key;
    co_return false;
  }
  co_await wait->signal.async_wait(use_nothrow);  // woken (cancelled) or timed out
  now = steady_ns();
  entry = snap_->cache->lookup(cs.key, header);
  if (entry && usable(*entry, now)) {
    co_await serve_cached(std::move(entry), "HIT", close);
    co_return true;
  }
  co_return false;  // nothing usable: go upstream (and store what comes back)
}

asio::awaitable<void> HttpSession::serve_cached(std::shared_ptr<const cache::Entry> entry,
                                                std::string_view state, bool close) {
  const cache::Entry& e = *entry;
  filters::Exchange& x = xs_->exchange;
  x.response_status = e.status;
  x.response_headers.clear();
  for (const auto& [k, v] : e.headers) x.response_headers.push_back({k, v});
  for (auto it = route_->filters.rbegin(); it != route_->filters.rend(); ++it) {
    (*it)->on_response(x);
  }
  if (tracing_) {
    x.response_headers.push_back(
        {"sluice-trace", x.own(trace_value() + fmt::format("; served={}", state))});
  }
  const bool head_only = xs_->log.method == "HEAD";
  std::string& out = xs_->out;
  out.clear();
  out += "HTTP/1.1 "sv;
  append_decimal(out, static_cast<uint64_t>(e.status));
  out += ' ';
  out += e.reason.empty() ? status_text(e.status) : std::string_view(e.reason);
  out += "\r\n"sv;
  bool has_request_id = false;
  for (const auto& h : x.response_headers) {
    if (!has_request_id && http::iequals(h.name, "x-request-id")) has_request_id = true;
    out += h.name;
    out += ": "sv;
    out += h.value;
    out += "\r\n"sv;
  }
  if (!has_request_id) {
    out += "x-request-id: "sv;
    out += xs_->request_id;
    out += "\r\n"sv;
  }
  out += "age: "sv;
  append_decimal(out, static_cast<uint64_t>(e.age_s(steady_ns())));
  out += "\r\nx-cache: "sv;
  out += state;
  out += "\r\ncontent-length: "sv;
  append_decimal(out, e.body.size());
  out += close ? "\r\nconnection: close\r\n\r\n"sv : "\r\n\r\n"sv;
  std::array<asio::const_buffer, 2> bufs{
      asio::buffer(out), asio::buffer(e.body.data(), head_only ? 0 : e.body.size())};
  io_.arm(down_wd_, limits_.idle_timeout);
  auto [ec, n] = co_await io_.write(bufs);
  xs_->log.status = e.status;
  xs_->log.bytes_out += n;
  xs_->log.cache = state == "HIT" ? "hit"sv : "stale"sv;
  if (close || ec) close_after_ = true;
}

asio::awaitable<HttpSession::Next> HttpSession::handle() {
  served_any_ = true;
  route_index_ = -1;
  upstream_index_ = -1;
  auth_refused_ = false;
  ws_upgrade_ = false;
  tracing_ = false;
  xs_->log.reset();
  xs_->exchange.rate_limited = false;  // (logged even when the exchange ends before the filters)
  xs_->log.method = xs_->head.method;
  xs_->log.host = xs_->head.host;
  xs_->log.path = xs_->head.path;
  xs_->log.query = xs_->head.query;
  xs_->log.protocol = lane_                                        ? "HTTP/2"
                      : xs_->head.version == http::Version::Http10 ? "HTTP/1.0"
                                                                   : "HTTP/1.1";
  xs_->log.bytes_in = head_len_;
  if (auto ua = xs_->head.header("user-agent"); ua.found) xs_->log.user_agent = ua.value;
  if (auto ref = xs_->head.header("referer"); ref.found) xs_->log.referer = ref.value;

  // Correlation ids: keep the client's when valid, continue its trace.
  auto rid = xs_->head.header("x-request-id");
  if (rid.found && valid_request_id(rid.value)) {
    xs_->request_id = rid.value;
  } else {
    xs_->request_id.clear();
    append_uuid(xs_->request_id, worker_.random(), worker_.random());
  }
  std::string_view parent_trace, flags = "01";
  auto tp = xs_->head.header("traceparent");
  if (tp.found && parse_traceparent(tp.value, parent_trace, flags)) {
    xs_->trace_id = parent_trace;
  } else {
    xs_->trace_id.clear();
    append_hex(xs_->trace_id, worker_.random(), 16);
    append_hex(xs_->trace_id, worker_.random(), 16);
    flags = "01";
  }
  std::string& tpo = xs_->traceparent_out;  // "00-<trace-id>-<our span id>-<flags>"
  tpo.clear();
  tpo += "00-"sv;
  tpo += xs_->trace_id;
  tpo += '-';
  append_hex(tpo, worker_.random() | 1, 16);
  tpo += '-';
  tpo += flags;

  // The body (if any) starts right after the head.
  begin_ += head_len_;
  const bool has_body = xs_->head.body_kind != http::BodyKind::None;
  Next after_local = has_body ? Next::Close : Next::KeepAlive;
  bool keep = xs_->head.keep_alive && !worker_.draining();

  auto norm = http::normalise_path(xs_->head.path);
  if (!norm.ok) {
    co_await send_error({Source::Downstream, ErrorKind::BadRequest}, norm.error, true);
    write_access_log();
    co_return Next::Close;
  }
  xs_->log.path = norm.path;

  if (redirect_to_https_) {
    co_await redirect_https(!keep || has_body);
    write_access_log();
    co_return (!keep || has_body) ? Next::Close : Next::KeepAlive;
  }

  router::RequestView rv{xs_->head.method, xs_->head.host, norm.path, xs_->head.query,
                         &xs_->head.headers};
  router::MatchResult m = snap_->router->match(rv);
  if (m.outcome != router::MatchResult::Outcome::Matched) {
    bool not_allowed = m.outcome == router::MatchResult::Outcome::MethodNotAllowed;
    Error e{Source::Downstream, not_allowed ? ErrorKind::MethodNotAllowed : ErrorKind::NoRoute};
    co_await send_error(e, {}, !keep || has_body, m.allow);
    write_access_log();
    co_return keep ? after_local : Next::Close;
  }
  route_index_ = static_cast<int>(m.route_index);
  tracing_ = false;
  if (auto t = xs_->head.header("x-sluice-trace");
      t.found && snap_->config.admin && !snap_->config.admin->token.empty()) {
    const std::string& token = snap_->config.admin->token;
    tracing_ = t.value.size() == token.size() &&
               CRYPTO_memcmp(t.value.data(), token.data(), token.size()) == 0;
    if (tracing_) {
      trace_ = fmt::format(
          "route={} ({:.3f}ms)", snap_->routes[m.route_index].config->name,
          std::chrono::duration<double, std::milli>(Clock::now() - xs_->log.start).count());
    }
  }
  const CompiledRoute& route = snap_->routes[m.route_index];
  const config::Route& rc = *route.config;
  xs_->log.route = rc.name;

  route_ = &route;
  route_timeout_ = rc.timeout;
  filters::Exchange& x = xs_->exchange;
  x.reset();
  x.request = &xs_->head;
  x.client_ip = client_ip_;
  x.request_id = xs_->request_id;
  x.upstream_headers = xs_->head.headers;
  x.identity = tls_identity();  // mutual TLS; an authenticator may replace it
  for (const auto& f : route.filters) {
    filters::Step step = f->on_request(x);
    for (;;) {
      if (step.kind() == filters::Step::Kind::Offload) {
        step = co_await run_blocking(step.take_work());
      } else if (step.kind() == filters::Step::Kind::Async) {
        step = co_await run_async(step.take_start());
      } else {
        break;
      }
    }
    if (tracing_) {
      trace_ +=
          fmt::format("; {}={}", f->name(),
                      step.kind() == filters::Step::Kind::Respond ? std::to_string(step.status())
                                                                  : std::string("pass"));
    }
    if (step.kind() == filters::Step::Kind::Respond) {
      std::string body = fmt::format(R"({{"error":"{}","status":{},"request_id":"{}"}})",
                                     step.reason(), step.status(), xs_->request_id);
      xs_->log.error = step.log_detail().empty() ? step.reason() : step.log_detail();
      xs_->log.consumer = x.consumer();
      // sluice_auth_failures_total: refusals by authentication (401) or authorisation (403),
      // not by ip_access or rate limits.
      auth_refused_ = f->name() == "auth" || f->name() == "allow";
      // Every gateway-made answer names its cause in the error log (never a credential).
      log::info("{} {} {}: {} by {}: {} (request {})", client_ip_, xs_->log.method, xs_->log.path,
                step.status(), f->name(), xs_->log.error, xs_->request_id);
      std::vector<std::pair<std::string, std::string>> headers = step.headers();
      if (tracing_) headers.emplace_back("sluice-trace", trace_value());
      co_await send_local(step.status(), body, "application/json", headers, !keep || has_body);
      write_access_log();
      co_return (!keep || has_body) ? Next::Close : Next::KeepAlive;
    }
  }
  xs_->log.consumer = x.consumer();

  // The gateway's own answers come after the policy filters: a `respond` route with `auth` or
  // `allow` is protected like any other.
  if (rc.action == config::Route::Action::Respond || rc.action == config::Route::Action::Redirect) {
    bool close = !keep || has_body;
    if (rc.action == config::Route::Action::Respond) {
      std::string_view ctype;
      std::vector<std::pair<std::string, std::string>> extra;
      for (const auto& [k, v] : rc.respond.headers) {
        if (k == "content-type") {
          ctype = v;
        } else {
          extra.emplace_back(k, v);
        }
      }
      if (ctype.empty() && !rc.respond.body.empty()) ctype = "text/plain";
      for (const auto& [k, v] : rc.response_headers.set) extra.emplace_back(k, v);
      filters::append_rate_limit_headers(x, extra);
      if (tracing_) extra.emplace_back("sluice-trace", trace_value());
      co_await send_local(rc.respond.status, rc.respond.body, ctype, extra, close);
    } else {
      // (a named vector: GCC 12 miscompiles a braced temporary holding a string literal across
      // co_await: "array used as initializer")
      std::vector<std::pair<std::string, std::string>> extra;
      extra.emplace_back(std::string("location"), rc.redirect.to);
      co_await send_local(rc.redirect.status, {}, {}, extra, close);
    }
    write_access_log();
    co_return close ? Next::Close : Next::KeepAlive;
  }

  if (xs_->head.body_kind == http::BodyKind::Length &&
      xs_->head.content_length > limits_.max_body) {
    co_await send_error({Source::Downstream, ErrorKind::BodyTooLarge}, {}, true);
    write_access_log();
    co_return Next::Close;
  }

  CacheFill fill;  // (declared before any co_await below that could end the exchange)
  xs_->cache.reset();
  ws_upgrade_ = rc.websocket && http::is_websocket_upgrade(xs_->head);
  if (rc.websocket_bridge && http::is_websocket_upgrade(xs_->head)) {
    co_return co_await bridge(route, m, norm.path, x);
  }
  transform_request_ = false;
  if (rc.transform && !rc.transform->response.empty()) {  // a body we can read, not compressed
    std::erase_if(x.upstream_headers,
                  [](const http::Header& h) { return http::iequals(h.name, "accept-encoding"); });
  }
  if (rc.transform && !rc.transform->request.empty() && has_body &&
      !(xs_->head.body_kind == http::BodyKind::Length && xs_->head.content_length == 0)) {
    auto ct = xs_->head.header("content-type");
    switch (transform_action(rc.transform->request, ct.found ? ct.value : std::string_view())) {
      case TransformAction::Convert:
        transform_request_ = true;
        std::erase_if(x.upstream_headers, [](const http::Header& h) {
          return http::iequals(h.name, "content-type") || http::iequals(h.name, "content-md5");
        });
        break;
      case TransformAction::PassThrough:
        break;
      case TransformAction::Refuse:
        co_await send_error(
            {Source::Downstream, ErrorKind::UnsupportedMediaType},
            fmt::format("route {} converts {} bodies, not {}", rc.name,
                        rc.transform->request == "xml_to_json" ? "XML" : "JSON", ct.value),
            true);
        write_access_log();
        co_return Next::Close;
    }
  }
  if (route.cache && snap_->cache && !ws_upgrade_) {
    if (co_await try_cache(route, x, !keep || has_body, fill)) {
      write_access_log();
      co_return (!keep || has_body) ? Next::Close : Next::KeepAlive;
    }
  }

  const int up_index = pick_upstream(route);
  const CompiledUpstream& up = snap_->upstreams[static_cast<size_t>(up_index)];

  const std::string upstream_path = snap_->router->rewrite_path(m, norm.path);
  Next n = co_await forward(up, static_cast<size_t>(up_index), upstream_path, x);
  write_access_log();
  if (!keep) co_return Next::Close;
  co_return n;
}

void HttpSession::build_upstream_head(const filters::Exchange& x, std::string_view path,
                                      const CompiledTarget& target, http::BodyKind body_kind,
                                      std::string& h) {
  h.clear();
  h.reserve(512 + head_len_);
  h += xs_->head.method;
  h += ' ';
  h += path;
  std::string_view query =
      x.query_overridden ? std::string_view(x.upstream_query) : xs_->head.query;
  if (!query.empty()) {
    h += '?';
    h += query;
  }
  h += " HTTP/1.1\r\nhost: "sv;
  h += xs_->head.host.empty() ? std::string_view(target.address) : xs_->head.host;
  h += "\r\n"sv;
  std::string_view xff, fwd, via;
  connection_listed(xs_->head.headers, xs_->listed);
  for (const auto& hd : x.upstream_headers) {
    if (http::iequals(hd.name, "host") || is_hop_by_hop(hd.name) ||
        (!xs_->listed.empty() && listed(xs_->listed, hd.name))) {
      continue;
    }
    if (http::iequals(hd.name, "x-forwarded-for")) {
      xff = hd.value;
      continue;
    }
    if (http::iequals(hd.name, "forwarded")) {
      fwd = hd.value;
      continue;
    }
    if (http::iequals(hd.name, "via")) {
      via = hd.value;
      continue;
    }
    if (http::iequals(hd.name, "x-forwarded-proto") || http::iequals(hd.name, "x-forwarded-host") ||
        http::iequals(hd.name, "x-request-id") || http::iequals(hd.name, "traceparent") ||
        http::iequals(hd.name, "x-sluice-trace")) {  // (it may carry the admin token)
      continue;
    }
    h += hd.name;
    h += ": "sv;
    h += hd.value;
    h += "\r\n"sv;
  }
  h += "x-forwarded-for: "sv;
  if (!xff.empty()) {
    h += xff;
    h += ", "sv;
  }
  h += client_ip_;
  h += https_ ? "\r\nx-forwarded-proto: https\r\nx-forwarded-host: "sv
              : "\r\nx-forwarded-proto: http\r\nx-forwarded-host: "sv;
  h += xs_->head.host;
  h += "\r\nforwarded: "sv;
  if (!fwd.empty()) {
    h += fwd;
    h += ", "sv;
  }
  bool v6 = client_ip_.find(':') != std::string::npos;
  h += v6 ? "for=\"[" : "for=";
  h += client_ip_;
  h += v6 ? "]\"" : "";
  if (!xs_->head.host.empty()) {
    h += ";host=\""sv;
    h += xs_->head.host;
    h += "\""sv;
  }
  h += https_ ? ";proto=https\r\nvia: "sv : ";proto=http\r\nvia: "sv;
  if (!via.empty()) {
    h += via;
    h += ", "sv;
  }
  h += xs_->head.version == http::Version::Http10 ? "1.0 sluice" : "1.1 sluice";
  h += "\r\nx-request-id: "sv;
  h += xs_->request_id;
  h += "\r\ntraceparent: "sv;
  h += xs_->traceparent_out;
  h += "\r\n"sv;
  if (ws_upgrade_) h += "connection: upgrade\r\nupgrade: websocket\r\n"sv;
  if (body_kind == http::BodyKind::Length) {
    h += "content-length: "sv;
    append_decimal(h, xs_->head.content_length);
    h += "\r\n"sv;
  } else if (body_kind == http::BodyKind::Chunked) {
    h += "transfer-encoding: chunked\r\n"sv;
  }
  h += "\r\n"sv;
}

// Runs `work` on the process-wide blocking pool (two threads: password hashing and the like) and
// resumes the exchange on its worker with the result.
asio::awaitable<filters::Step> invoke(std::function<filters::Step()> work) { co_return work(); }

asio::awaitable<filters::Step> run_blocking(std::function<filters::Step()> work) {
  static asio::thread_pool* pool = new asio::thread_pool(2);  // process lifetime
  // (a plain coroutine function, not a capturing lambda coroutine: its frame owns `work`)
  co_return co_await asio::co_spawn(pool->get_executor(), invoke(std::move(work)),
                                    asio::use_awaitable);
}

// Starts a filter's asynchronous operation (a Redis call on this worker's loop) and resumes the
// exchange with the Step it ends with.
asio::awaitable<filters::Step> run_async(filters::Step::Start start) {
  // The operation completes on this loop, exactly once; a timer that never expires is the
  // signal (cancelled by the completion), so no handler outlives what it refers to.
  struct State {
    explicit State(const asio::any_io_executor& ex)
        : signal(ex, asio::steady_timer::time_point::max()) {}
    asio::steady_timer signal;
    std::optional<filters::Step> result;
  };
  auto st = std::make_shared<State>(co_await asio::this_coro::executor);
  start([st](filters::Step step) {
    st->result = std::move(step);
    st->signal.cancel();
  });
  while (!st->result) co_await st->signal.async_wait(use_nothrow);
  co_return std::move(*st->result);
}

asio::awaitable<HttpSession::Next> HttpSession::forward(const CompiledUpstream& up, size_t up_index,
                                                        std::string_view upstream_path,
                                                        filters::Exchange& x) {
  const config::Upstream& uc = *up.config;
  const config::Retries& rc = uc.retries;
  upstream::UpstreamCounters& counters = *up.counters;
  const Duration request_timeout = route_timeout_.value_or(uc.timeouts.request);
  const bool has_body = xs_->head.body_kind != http::BodyKind::None;
  const bool method_retryable = rc.all_methods || idempotent(xs_->head.method);
  const Next on_error = has_body ? Next::Close : Next::KeepAlive;
  const bool transform_request = has_body && route_->config->transform &&
                                 !route_->config->transform->request.empty() && transform_request_;
  const auto started = Clock::now();

  // Circuit breaker: a slot under max_connections is taken atomically (so workers together
  // never exceed it); without one, a request waits (at most max_pending of them, at most the
  // connect timeout), and a newcomer queues behind requests already waiting.
  auto try_take_slot = [&] {
    int64_t v = counters.active.load(std::memory_order_relaxed);
    while (v < static_cast<int64_t>(uc.max_connections)) {
      if (counters.active.compare_exchange_weak(v, v + 1, std::memory_order_relaxed)) return true;
    }
    return false;
  };
  const bool client_keep = xs_->head.keep_alive && !worker_.draining();
  const bool close_on_error = has_body || !client_keep;
  if (counters.pending.load(std::memory_order_relaxed) > 0 || !try_take_slot()) {
    if (counters.pending.load(std::memory_order_relaxed) >= uc.max_pending) {
      co_await send_error({Source::Upstream, ErrorKind::CircuitOpen}, {}, close_on_error);
      co_return on_error;
    }
    Hold pending(counters.pending);
    asio::steady_timer wait(worker_.io());
    const auto give_up = Clock::now() + uc.timeouts.connect;
    while (!try_take_slot()) {
      if (Clock::now() >= give_up || worker_.draining()) {
        co_await send_error({Source::Upstream, ErrorKind::CircuitOpen}, {}, close_on_error);
        co_return on_error;
      }
      wait.expires_after(std::chrono::milliseconds(2));
      co_await wait.async_wait(use_nothrow);
    }
  }
  Hold active = Hold<int64_t>::adopt(counters.active);  // the slot taken above
  Hold in_request(counters.requests);

  // Balancer inputs: the hash key, sticky preference, and (least_conn, p2c) the live loads.
  upstream::PickContext ctx;
  ctx.random = worker_.random();
  if (up.algorithm == upstream::Algorithm::RingHash ||
      up.algorithm == upstream::Algorithm::Maglev) {
    std::string_view key;
    switch (uc.hash_on.kind) {
      case config::HashOn::Kind::Ip:
        key = client_ip_;
        break;
      case config::HashOn::Kind::Header:
        key = xs_->head.header(uc.hash_on.name).value;
        break;
      case config::HashOn::Kind::Cookie:
        key = http::cookie_value(xs_->head.headers, uc.hash_on.name);
        break;
      case config::HashOn::Kind::Consumer:  // the authenticated consumer, else the client ip
        key = x.consumer().empty() ? std::string_view(client_ip_) : x.consumer();
        break;
      case config::HashOn::Kind::Path:
        key = xs_->log.path;
        break;
    }
    ctx.hash = key.empty() ? ctx.random : upstream::hash_key(key);  // no key: spread randomly
  }
  std::vector<uint32_t>& load = xs_->load;
  if (up.algorithm == upstream::Algorithm::LeastConn || up.algorithm == upstream::Algorithm::P2C) {
    load.resize(up.targets.size());
    for (size_t i = 0; i < up.targets.size(); ++i) {
      load[i] = up.targets[i].state->in_flight.load(std::memory_order_relaxed);
    }
    ctx.load = &load;
  }
  std::optional<size_t> sticky_pick;
  bool set_sticky = false;
  if (uc.sticky.enabled) {
    std::string_view v = http::cookie_value(xs_->head.headers, uc.sticky.cookie);
    for (size_t i = 0; i < up.targets.size() && !v.empty(); ++i) {
      if (up.targets[i].sticky_value == v) sticky_pick = i;
    }
    set_sticky = true;  // decided after the attempts: re-pin unless the pinned target served
  }

  // Attempts walk the balancer's preference order: a tried target is excluded from the next
  // pick where another is available. A connect failure may be retried for any method (nothing
  // was sent); a reset, a timeout or a listed 5xx only for retryable methods whose body could be
  // replayed, and only while the retry budget allows.
  const int max_tries = 1 + std::max(0, rc.attempts);
  std::vector<bool>& tried = xs_->tried;
  tried.assign(up.targets.size(), false);
  std::vector<bool>& excluded = xs_->excluded;
  const int64_t now_ms = upstream::steady_now_ms();
  Error last{Source::Upstream, ErrorKind::NoTarget};
  std::unique_ptr<UpstreamConnection> conn;
  // up_wd_ points at conn's socket while armed: disarm before the socket goes, on every path
  // (drop_conn for resets in the loop; the guard, destroyed before `conn`, for every exit).
  struct DisarmOnExit {
    Watchdog& wd;
    ~DisarmOnExit() { wd.disarm(); }
  } disarm_on_exit{up_wd_};
  auto drop_conn = [&] {
    up_wd_.disarm();
    conn.reset();
  };
  const CompiledTarget* target = nullptr;
  Hold<uint32_t> target_load;
  Hold<int64_t> retry_hold;
  bool continue_sent = false;
  bool budget_exempt = false;  // the previous attempt failed to connect
  bool body_read = false;      // the client's body has been consumed
  bool replay_ok = !has_body;  // the body is in xs_->replay and can be sent again
  xs_->replay.clear();
  xs_->uhead.clear();
  server::IoBuffer rbuf;
  size_t rbegin = 0, rend = 0;
  http::ResponseParser rparser;
  http::ResponseHead& rhead = xs_->rhead;
  size_t rhead_len = 0;
  bool got_head = false;

  for (int attempt = 0; attempt < max_tries && !got_head; ++attempt) {
    // Pick.
    excluded.assign(up.targets.size(), false);
    bool any = false;
    for (size_t i = 0; i < up.targets.size(); ++i) {
      excluded[i] = !up.targets[i].state->available(now_ms);
      any = any || !excluded[i];
    }
    if (!any) {
      if (attempt == 0) last = {Source::Upstream, ErrorKind::NoTarget};
      break;
    }
    std::optional<size_t> pick;
    if (attempt == 0 && sticky_pick && !excluded[*sticky_pick]) {
      pick = sticky_pick;
    } else {
      std::vector<bool>& fresh = xs_->fresh;
      fresh.assign(excluded.begin(), excluded.end());
      for (size_t i = 0; i < tried.size(); ++i) fresh[i] = fresh[i] || tried[i];
      pick = worker_.balancer(*snap_, up_index).pick(ctx, fresh);
      if (!pick)
        pick = worker_.balancer(*snap_, up_index).pick(ctx, excluded);  // all tried: reuse one
    }
    if (!pick) break;
    if (attempt > 0 && !budget_exempt) {
      // Retry budget: retries in flight <= max(3, budget% of requests in flight). A retry after
      // a refused/failed connect is exempt: it cannot add load to a struggling target (nothing
      // reached any application), and it is still bounded by `attempts`.
      int64_t allowed = std::max<int64_t>(
          3, counters.requests.load(std::memory_order_relaxed) * rc.budget_percent / 100);
      if (counters.retries.load(std::memory_order_relaxed) >= allowed) break;
      retry_hold = Hold(counters.retries);
    }
    budget_exempt = false;
    target = &up.targets[*pick];
    tried[*pick] = true;
    ++xs_->log.attempts;
    const auto attempt_started = Clock::now();
    const int target_index = static_cast<int>(*pick);
    auto attempt_done = [&](int status) {
      if (metrics_ && snap_->config.admin) {
        metrics_->upstream_request(static_cast<int>(up_index), target_index, status,
                                   Clock::now() - attempt_started);
      }
    };
    if (attempt > 0 && metrics_ && snap_->config.admin) {
      stats::RetryReason why = stats::RetryReason::Status;
      if (last.retryable_any_method()) {
        why = stats::RetryReason::ConnectFailure;
      } else if (last.kind == ErrorKind::UpstreamTimeout) {
        why = stats::RetryReason::Timeout;
      } else if (last.kind == ErrorKind::UpstreamReset && !got_head) {
        why = stats::RetryReason::Reset;
      }
      metrics_->retry(static_cast<int>(up_index), why);
    }
    xs_->log.target = target->address;
    target_load = Hold(target->state->in_flight);

    // Connect (or reuse).
    std::string dynamic_ip, dynamic_key;
    if (target->dynamic) {
      dynamic_ip = target->state->ip();
      dynamic_key = fmt::format("{}|{}", target->address, dynamic_ip);
    }
    const std::string& ip = target->dynamic ? dynamic_ip : target->ip;
    const std::string& key = target->dynamic ? dynamic_key : target->key;
    const bool replayable = replay_ok && method_retryable;
    // A connection that began with a PROXY header speaks for one client: pooled for it alone.
    // (HTTP/2 upstreams multiplex many clients on a connection: no PROXY header there.)
    const bool h2_upstream = uc.protocol != "http1"sv;
    const std::string pp_key =
        uc.proxy_protocol != 0 && !h2_upstream ? proxy_pool_key(key, addrs_.client) : std::string();
    const std::string& pool_key = pp_key.empty() ? key : pp_key;
    conn = h2_upstream ? nullptr : worker_.pool().acquire(pool_key, uc.timeouts.idle, replayable);
    bool reused = conn != nullptr;
    if (!conn) {
      conn = std::make_unique<UpstreamConnection>(worker_.io());
      conn->key = pool_key;
      if (h2_upstream) {  // a stream of a shared HTTP/2 connection (h2_proxy.cpp)
        last = co_await open_h2_stream(worker_, *conn, up, *target, ip, key, up_wd_,
                                       uc.timeouts.connect);
      } else {
        last = co_await connect_target(conn->socket, ip, target->port, uc.timeouts.connect, up_wd_);
      }
      if (!last && uc.proxy_protocol != 0 && !h2_upstream) {
        last = co_await send_proxy_header(conn->socket, uc.proxy_protocol, proxy_addresses(),
                                          up_wd_, uc.timeouts.connect);
      }
      if (!last && up.tls && !h2_upstream) {
        last = co_await upstream_handshake(*conn, up, *target, key, up_wd_, uc.timeouts.connect);
      }
      if (last) {
        attempt_done(0);
        if (last.kind != ErrorKind::TlsFailed) {  // (the handshake logged its own reason)
          log::warn("upstream {} target {}: {}", uc.name, target->address, last.reason());
        }
        upstream::record_outcome(*target->state, up.states, up.outlier, true,
                                 upstream::steady_now_ms());
        drop_conn();
        if (rc.on_connect_failure) {
          budget_exempt = true;
          continue;
        }
        break;
      }
    }

    // Send the head and the body (streamed from the client the first time, replayed after).
    std::string& uhead = xs_->uhead;
    // Built once: the head's views point into the client read buffer, which reading the body
    // overwrites, so a retry must reuse the bytes built before the body was read.
    if (uhead.empty()) {
      build_upstream_head(x, upstream_path, *target,
                          transform_request ? http::BodyKind::None : xs_->head.body_kind, uhead);
    }
    if (has_body && xs_->head.expect_continue && !continue_sent) {
      continue_sent = true;
      static constexpr std::string_view k100 = "HTTP/1.1 100 Continue\r\n\r\n";
      io_.arm(down_wd_, limits_.idle_timeout);
      auto [ec, n] = co_await io_.write(asio::buffer(k100));
      if (ec) co_return Next::Close;
    }
    if (transform_request && !body_read) {
      // Route `transform.request`: the whole body (up to max_body) is read and converted; the
      // converted body goes upstream with its own content-type and length.
      BodySource src(io_, buf_, begin_, end_, down_wd_, limits_.request_body_timeout);
      src.start(xs_->head.body_kind, xs_->head.content_length);
      std::vector<std::string_view>& pieces = xs_->pieces;
      std::string body;
      for (;;) {
        auto st = co_await src.next(pieces);
        if (st == BodySource::Status::Error || st == BodySource::Status::Timeout) {
          co_await refuse_body(src, st == BodySource::Status::Timeout ? ErrorKind::RequestTimeout
                                                                      : ErrorKind::BadRequest);
          co_return Next::Close;
        }
        for (auto p : pieces) body.append(p);
        if (body.size() > limits_.max_body) {
          co_await refuse_body(src, ErrorKind::BodyTooLarge);
          co_return Next::Close;
        }
        if (st == BodySource::Status::End || src.done()) break;
      }
      xs_->log.bytes_in += src.raw_bytes();
      body_read = true;
      const std::string& conversion = route_->config->transform->request;
      transform::Result r;  // an empty (chunked) body stays empty: nothing to convert
      if (!body.empty()) r = convert_body(conversion, body, limits_.max_body);
      if (!r.ok()) {
        drop_conn();
        co_await send_error(
            {Source::Downstream, r.failure == transform::Failure::TooLarge ? ErrorKind::BodyTooLarge
                                                                           : ErrorKind::BadRequest},
            fmt::format("request body is not convertible ({}): {}",
                        transform::failure_name(r.failure), r.error),
            !client_keep);
        co_return client_keep ? Next::KeepAlive : Next::Close;
      }
      xs_->replay = std::move(r.body);
      replay_ok = true;
      uhead.resize(uhead.size() - 2);  // reopen the head for the new body's fields
      if (!xs_->replay.empty()) {
        uhead += "content-type: "sv;
        uhead += converted_type(conversion);
        uhead += "\r\n"sv;
      }
      uhead += "content-length: "sv;
      append_decimal(uhead, xs_->replay.size());
      uhead += "\r\n\r\n"sv;
    }
    const bool chunked = xs_->head.body_kind == http::BodyKind::Chunked && !transform_request;
    conn->io().arm(up_wd_, request_timeout);
    bool sent = true;
    if (!has_body || body_read) {
      // No body, or a replay of a body kept in memory.
      std::vector<std::string_view>& pieces = xs_->pieces;
      pieces.clear();
      if (has_body) pieces.push_back(xs_->replay);
      server::Io uio = conn->io();
      BodySink sink(uio, up_wd_, request_timeout,
                    chunked ? BodySink::Framing::Chunked : BodySink::Framing::Raw, xs_->iov);
      auto [ec, n] = co_await uio.write(sink.prepare(uhead, pieces, true));
      sent = !ec;
    } else if (chunked && h2_upstream && conn->lane) {
      // Full duplex (gRPC bidirectional streams): the head goes now, the body streams from a
      // coroutine of its own while the answer is read (run() joins it before the next request).
      // No retry from here: the body is not kept.
      server::Io uio = conn->io();
      auto [ec, n] = co_await uio.write(asio::buffer(uhead));
      sent = !ec;
      replay_ok = false;
      if (sent) {
        body_read = true;  // (the pump's from here)
        pump_ = std::make_shared<BodyPump>(worker_.io().get_executor());
        asio::co_spawn(worker_.io(), pump_body(pump_, conn->lane, request_timeout), asio::detached);
      }
    } else {
      BodySource src(io_, buf_, begin_, end_, down_wd_, limits_.request_body_timeout);
      src.start(xs_->head.body_kind, xs_->head.content_length);
      BodySink sink(conn->io(), up_wd_, request_timeout,
                    chunked ? BodySink::Framing::Chunked : BodySink::Framing::Raw, xs_->iov);
      std::vector<std::string_view>& pieces = xs_->pieces;
      std::string_view prefix = uhead;
      uint64_t body_bytes = 0;
      replay_ok = true;
      for (;;) {
        auto st = co_await src.next(pieces);
        if (st == BodySource::Status::Error || st == BodySource::Status::Timeout) {
          co_await refuse_body(src, st == BodySource::Status::Timeout ? ErrorKind::RequestTimeout
                                                                      : ErrorKind::BadRequest);
          co_return Next::Close;
        }
        for (auto p : pieces) {
          body_bytes += p.size();
          if (replay_ok && body_bytes <= kReplayLimit) {
            xs_->replay.append(p);
          } else {
            replay_ok = false;
          }
        }
        if (body_bytes > limits_.max_body) {
          co_await refuse_body(src, ErrorKind::BodyTooLarge);
          co_return Next::Close;
        }
        bool last_piece = st == BodySource::Status::End || src.done();
        if (last_piece && chunked) sink.set_trailers(src.trailers());
        if (sent && !co_await sink.write(prefix, pieces, last_piece)) {
          sent = false;  // keep reading the client's body so it can be replayed elsewhere
          if (!replay_ok) break;
        }
        prefix = {};
        if (last_piece) break;
      }
      xs_->log.bytes_in += src.raw_bytes();
      body_read = src.done();
      if (!body_read) close_after_ = true;  // the rest of the body is still on the wire
    }
    if (!sent) {
      attempt_done(0);
      last = up_wd_.expired() ? Error{Source::Upstream, ErrorKind::UpstreamTimeout}
                              : Error{Source::Upstream, ErrorKind::UpstreamReset};
      drop_conn();
      // A write failing on a pooled connection is the connection's fault, not the target's.
      if (!reused) {
        upstream::record_outcome(*target->state, up.states, up.outlier, true,
                                 upstream::steady_now_ms());
      }
      if (replay_ok && method_retryable && rc.on_reset) {
        if (reused) {  // a stale pooled connection: not a try
          --attempt;
          --xs_->log.attempts;
        }
        continue;
      }
      break;
    }

    // Response head; 1xx interim responses are skipped.
    if (rbuf.empty()) rbuf = worker_.buffers().take(kResponseBufferSize);
    rbegin = rend = 0;
    rparser.reset();
    bool got_bytes = false;
    for (;;) {
      if (rbegin < rend) {
        rhead.headers.clear();
        auto r = rparser.parse(std::string_view(rbuf.data() + rbegin, rend - rbegin), rhead,
                               xs_->log.method);
        if (r.status == http::ParseStatus::Error) {
          last = {Source::Upstream, ErrorKind::BadResponse};
          break;
        }
        if (r.status == http::ParseStatus::Done) {
          if (rhead.status >= 100 && rhead.status < 200 && !(ws_upgrade_ && rhead.status == 101)) {
            rbegin += r.consumed;
            rparser.reset();
            continue;
          }
          rhead_len = r.consumed;
          got_head = true;
          break;
        }
      }
      if (rend == rbuf.size()) {
        if (rbegin == 0 || rend - rbegin > kMaxResponseHead) {
          last = {Source::Upstream, ErrorKind::BadResponse};
          break;
        }
        std::memmove(rbuf.data(), rbuf.data() + rbegin, rend - rbegin);
        rend -= rbegin;
        rbegin = 0;
      }
      auto [ec, n] =
          co_await conn->io().read_some(asio::buffer(rbuf.data() + rend, rbuf.size() - rend));
      if (ec) {
        last = up_wd_.expired() ? Error{Source::Upstream, ErrorKind::UpstreamTimeout}
                                : Error{Source::Upstream, ErrorKind::UpstreamReset};
        // An HTTP/2 stream the upstream refused unprocessed (REFUSED_STREAM, a GOAWAY race):
        // nothing reached the application, as with a refused connect.
        if (ec == asio::error::connection_refused && !got_bytes) {
          last = Error{Source::Upstream, ErrorKind::ConnectRefused};
        }
        break;
      }
      got_bytes = true;
      rend += n;
    }
    const bool replayable_now = replay_ok && method_retryable;
    attempt_done(got_head ? rhead.status : 0);
    if (!got_head) {
      drop_conn();
      // A pooled connection the upstream closed before answering: not the target's fault, and
      // for a retryable method it is retried on a fresh connection without counting as a try.
      bool stale = reused && !got_bytes && last.kind == ErrorKind::UpstreamReset;
      if (!stale) {
        upstream::record_outcome(*target->state, up.states, up.outlier, true,
                                 upstream::steady_now_ms());
      }
      if (stale && replayable_now && rc.on_reset) {
        --attempt;
        --xs_->log.attempts;
        tried[*pick] = false;
        continue;
      }
      // The request timeout is the whole budget of the exchange: a timeout is not retried
      // (a 504 *answered by* the upstream is, when listed in `on`).
      bool on = last.kind == ErrorKind::UpstreamReset && rc.on_reset;
      if (on && replayable_now) continue;
      if (last.kind == ErrorKind::ConnectRefused && rc.on_connect_failure && replay_ok) {
        continue;  // (any method: the refused stream was not processed)
      }
      break;
    }
    // A listed 5xx with tries left: drop this answer and try another target, but only when a
    // retry can really happen (budget, an available target); otherwise the client gets the
    // upstream's own answer.
    bool failure = rhead.status >= 500;
    const int64_t after_ms = upstream::steady_now_ms();
    upstream::record_outcome(*target->state, up.states, up.outlier, failure, after_ms);
    if (failure && attempt + 1 < max_tries && replayable_now &&
        std::find(rc.on_status.begin(), rc.on_status.end(), rhead.status) != rc.on_status.end() &&
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
  if (!got_head && xs_->cache.stale) {  // stale_if_error: the cached answer beats an error
    xs_->log.error = fmt::format("{} (served stale)", last.reason());
    co_await serve_cached(xs_->cache.stale, "STALE", (has_body && !body_read) || !client_keep);
    if (!rbuf.empty()) worker_.buffers().give(std::move(rbuf));
    co_return has_body && !body_read ? Next::Close : Next::KeepAlive;
  }
  if (!got_head) {
    co_await send_error(last, {}, (has_body && !body_read) || !client_keep);
    if (!rbuf.empty()) worker_.buffers().give(std::move(rbuf));
    co_return has_body && !body_read ? Next::Close : Next::KeepAlive;
  }
  xs_->log.upstream_us =
      std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - started).count();
  xs_->log.status = rhead.status;
  xs_->sticky_cookie.clear();
  if (set_sticky && sticky_pick && target == &up.targets[*sticky_pick]) set_sticky = false;
  if (set_sticky) {  // no valid pin, or the pinned target could not serve: (re-)pin
    fmt::format_to(std::back_inserter(xs_->sticky_cookie),
                   "{}={}; Path=/; Max-Age={}; HttpOnly; SameSite=Lax", uc.sticky.cookie,
                   target->sticky_value,
                   std::chrono::duration_cast<std::chrono::seconds>(uc.sticky.ttl).count());
  }

  if (ws_upgrade_ && rhead.status == 101) {
    // The upstream accepted the WebSocket: pass its 101 on, then relay bytes.
    x.response_status = 101;
    x.response_headers.clear();
    for (const auto& h : rhead.headers) {
      if (!is_hop_by_hop(h.name)) x.response_headers.push_back(h);
    }
    for (auto it = route_->filters.rbegin(); it != route_->filters.rend(); ++it) {
      (*it)->on_response(x);
    }
    std::string head = "HTTP/1.1 101 Switching Protocols\r\n";
    for (const auto& h : x.response_headers) {
      head += h.name;
      head += ": "sv;
      head += h.value;
      head += "\r\n"sv;
    }
    head += "connection: upgrade\r\nupgrade: websocket\r\nx-request-id: "sv;
    head += xs_->request_id;
    head += "\r\n\r\n"sv;
    xs_->log.bytes_out += head.size();
    rbegin += rhead_len;
    head.append(rbuf.data() + rbegin, rend - rbegin);  // frames the upstream sent right away
    worker_.buffers().give(std::move(rbuf));
    up_wd_.disarm();
    xs_->log.protocol = "websocket";
    co_await tunnel(*conn, head, route_timeout_.value_or(uc.timeouts.idle));
    drop_conn();
    co_return Next::Close;
  }

  auto& cs = xs_->cache;
  if (cs.stale &&
      (rhead.status == 500 || rhead.status == 502 || rhead.status == 503 || rhead.status == 504)) {
    // stale_if_error: the upstream failed, a recent enough answer is cached.
    drop_conn();
    worker_.buffers().give(std::move(rbuf));
    xs_->log.error = fmt::format("upstream answered {} (served stale)", rhead.status);
    co_await serve_cached(cs.stale, "STALE", !client_keep);
    co_return Next::KeepAlive;
  }

  // Response head for the client.
  x.response_status = rhead.status;
  x.response_headers.clear();
  connection_listed(rhead.headers, xs_->listed);
  for (const auto& h : rhead.headers) {
    if (is_hop_by_hop(h.name) || (!xs_->listed.empty() && listed(xs_->listed, h.name))) continue;
    x.response_headers.push_back(h);
  }
  // Route `transform.response`: the whole body (up to max_body) is read and converted before
  // anything reaches the client, so a body that cannot be converted is still a clean 502.
  std::string& converted = xs_->converted;
  converted.clear();
  bool have_converted = false;
  if (route_->config->transform && !route_->config->transform->response.empty() &&
      xs_->log.method != "HEAD" && rhead.body_kind != http::BodyKind::None &&
      !(rhead.body_kind == http::BodyKind::Length && rhead.content_length == 0) &&
      rhead.status != 204 && rhead.status != 304) {
    const std::string& conversion = route_->config->transform->response;
    auto ct = rhead.header("content-type");
    auto ce = rhead.header("content-encoding");
    if ((!ce.found || http::iequals(ce.value, "identity")) &&
        transform_action(conversion, ct.found ? ct.value : std::string_view()) ==
            TransformAction::Convert) {
      // Reading the body may move bytes within rbuf, where the head's views point: keep copies.
      for (auto& h : x.response_headers) {
        h.name = x.own(std::string(h.name));
        h.value = x.own(std::string(h.value));
      }
      rhead.reason = x.own(std::string(rhead.reason));
      size_t body_begin = rbegin + rhead_len;
      BodySource src(conn->io(), rbuf, body_begin, rend, up_wd_, request_timeout);
      src.start(rhead.body_kind, rhead.content_length);
      std::vector<std::string_view>& pieces = xs_->pieces;
      std::string body;
      Error failed;
      std::string detail;
      for (;;) {
        BodySource::Status st;
        if (!src.take_buffered(pieces, st)) st = co_await src.next(pieces);
        if (st == BodySource::Status::Error || st == BodySource::Status::Timeout) {
          failed = {Source::Upstream, st == BodySource::Status::Timeout ? ErrorKind::UpstreamTimeout
                                                                        : ErrorKind::UpstreamReset};
          detail = "upstream response body incomplete";
          break;
        }
        for (auto p : pieces) body.append(p);
        if (body.size() > limits_.max_body) {
          failed = {Source::Upstream, ErrorKind::BadResponse};
          detail = "upstream response body larger than max_body: cannot transform it";
          break;
        }
        if (st == BodySource::Status::End || src.done()) break;
      }
      transform::Result r;
      if (!failed && body.empty()) {
        // an empty (chunked) body is passed on as it is: nothing to convert
      } else if (!failed) {
        r = convert_body(conversion, body, limits_.max_body);
        if (!r.ok()) {
          failed = {Source::Upstream, ErrorKind::BadResponse};
          detail = fmt::format("upstream response body is not convertible ({}): {}",
                               transform::failure_name(r.failure), r.error);
        }
      }
      up_wd_.disarm();
      if (failed) {
        drop_conn();
        worker_.buffers().give(std::move(rbuf));
        co_await send_error(failed, detail, !client_keep || (has_body && !body_read));
        co_return client_keep && (!has_body || body_read) ? Next::KeepAlive : Next::Close;
      }
      if (rhead.keep_alive && body_begin == rend) {  // the upstream connection can be reused
        ++conn->requests;
        worker_.pool().release(std::move(conn));
      } else {
        drop_conn();
      }
      converted = std::move(r.body);
      have_converted = true;
      std::erase_if(x.response_headers, [](const http::Header& h) {
        return http::iequals(h.name, "content-type") || http::iequals(h.name, "content-md5") ||
               http::iequals(h.name, "etag");  // a different representation now
      });
      if (!converted.empty())
        x.response_headers.push_back({"content-type", converted_type(conversion)});
    }
  }
  if (cs.active) {
    cache::CacheControl response_cc;
    std::string vary;
    bool set_cookie = false;
    int64_t initial_age = 0;
    std::string_view expires, date;
    bool has_expires = false;
    for (const auto& h : x.response_headers) {
      if (http::iequals(h.name, "cache-control")) {
        response_cc.merge(h.value);
      } else if (http::iequals(h.name, "vary")) {
        if (!vary.empty()) vary += ',';
        vary += h.value;
      } else if (http::iequals(h.name, "set-cookie")) {
        set_cookie = true;
      } else if (http::iequals(h.name, "age")) {
        std::from_chars(h.value.data(), h.value.data() + h.value.size(), initial_age);
      } else if (http::iequals(h.name, "expires")) {
        expires = h.value;
        has_expires = true;
      } else if (http::iequals(h.name, "date")) {
        date = h.value;
      }
    }
    if (has_expires) {
      response_cc.apply_expires(expires, date,
                                std::chrono::duration_cast<std::chrono::seconds>(
                                    std::chrono::system_clock::now().time_since_epoch())
                                    .count());
    }
    cache::StoreDecision d =
        cache::decide_store("GET", rhead.status, cs.request_cc, response_cc, vary, set_cookie,
                            cs.has_credentials, *route_->cache);
    if (d.store && (rhead.body_kind != http::BodyKind::Length ||
                    rhead.content_length <= snap_->cache->max_object())) {
      auto e = std::make_shared<cache::Entry>();
      e->status = rhead.status;
      e->reason = rhead.reason;
      for (const auto& h : x.response_headers) {
        if (http::iequals(h.name, "age")) continue;
        e->headers.emplace_back(std::string(h.name), std::string(h.value));
      }
      for (const auto& name : d.vary) {
        auto h = xs_->head.header(name);  // (views into the client buffer: valid, no body read)
        e->vary_values.emplace_back(name, h.found ? std::string(h.value) : std::string());
      }
      e->stored_at_ns = steady_ns();
      e->initial_age_s = std::max<int64_t>(0, initial_age);
      e->ttl_s = d.ttl_s;
      e->stale_if_error_s = d.stale_if_error_s;
      if (rhead.body_kind == http::BodyKind::Length) {
        e->body.reserve(static_cast<size_t>(rhead.content_length));
      }
      cs.pending = std::move(e);
      cs.capture = true;
    }
  }
  for (auto it = route_->filters.rbegin(); it != route_->filters.rend(); ++it) {
    (*it)->on_response(x);
  }
  if (route_->cache && xs_->log.cache != "-"sv) x.response_headers.push_back({"x-cache", "MISS"});
  if (tracing_) {
    xs_->log.upstream_us =
        std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - started).count();
    x.response_headers.push_back({"sluice-trace", x.own(trace_value())});
  }
  if (!xs_->sticky_cookie.empty()) x.response_headers.push_back({"set-cookie", xs_->sticky_cookie});
  const bool http10 = xs_->head.version == http::Version::Http10;
  bool keep = xs_->head.keep_alive && !worker_.draining() && !close_after_;
  BodySink::Framing framing = BodySink::Framing::Raw;
  xs_->out.clear();
  xs_->out += "HTTP/1.1 "sv;
  append_decimal(xs_->out, static_cast<uint64_t>(rhead.status));
  xs_->out += ' ';
  xs_->out += rhead.reason.empty() ? status_text(rhead.status) : rhead.reason;
  xs_->out += "\r\n"sv;
  bool has_request_id = false;
  for (const auto& h : x.response_headers) {
    if (!has_request_id && http::iequals(h.name, "x-request-id")) has_request_id = true;
    xs_->out += h.name;
    xs_->out += ": "sv;
    xs_->out += h.value;
    xs_->out += "\r\n"sv;
  }
  if (!has_request_id) {
    xs_->out += "x-request-id: "sv;
    xs_->out += xs_->request_id;
    xs_->out += "\r\n"sv;
  }
  switch (have_converted ? http::BodyKind::Length : rhead.body_kind) {
    case http::BodyKind::None:
      if (auto cl = rhead.header("content-length"); cl.found && rhead.status != 204) {
        xs_->out += "content-length: "sv;
        xs_->out += cl.value;
        xs_->out += "\r\n"sv;
      }
      break;
    case http::BodyKind::Length:
      xs_->out += "content-length: "sv;
      append_decimal(xs_->out, have_converted ? converted.size() : rhead.content_length);
      xs_->out += "\r\n"sv;
      break;
    case http::BodyKind::Chunked:
    case http::BodyKind::UntilClose:
      if (http10) {
        keep = false;  // close-delimited for an HTTP/1.0 client
      } else {
        xs_->out += "transfer-encoding: chunked\r\n"sv;
        framing = BodySink::Framing::Chunked;
      }
      break;
  }
  if (!keep) {
    xs_->out += "connection: close\r\n"sv;
  } else if (http10) {
    xs_->out += "connection: keep-alive\r\n"sv;
  }
  xs_->out += "\r\n"sv;

  if (have_converted) {  // the converted body, in one write with the head
    BodySink sink(io_, down_wd_, limits_.idle_timeout, BodySink::Framing::Raw, xs_->iov);
    std::vector<std::string_view>& pieces = xs_->pieces;
    pieces.assign(1, converted);
    auto iov = sink.prepare(xs_->out, pieces, true);
    auto [ec, n] = co_await io_.write(iov);
    sink.count(n);
    xs_->log.bytes_out += sink.bytes();
    if (cs.capture && !ec) {
      cs.pending->body = converted;
      if (cs.pending->body.size() <= snap_->cache->max_object()) {
        snap_->cache->insert(cs.key, std::move(cs.pending));
      }
    }
    cs.capture = false;
    if (!rbuf.empty()) worker_.buffers().give(std::move(rbuf));
    co_return ec || !keep ? Next::Close : Next::KeepAlive;
  }

  // Stream the body; the head goes out with its first piece.
  rbegin += rhead_len;
  BodySource src(conn->io(), rbuf, rbegin, rend, up_wd_, request_timeout);
  src.start(rhead.body_kind, rhead.content_length);
  BodySink sink(io_, down_wd_, limits_.idle_timeout, framing, xs_->iov);
  std::vector<std::string_view>& pieces = xs_->pieces;
  std::string_view prefix = xs_->out;
  bool upstream_ok = true;
  bool client_ok = true;
  for (;;) {
    BodySource::Status st;
    if (!src.take_buffered(pieces, st)) st = co_await src.next(pieces);  // I/O only when needed
    if (st == BodySource::Status::Error || st == BodySource::Status::Timeout) {
      upstream_ok = false;
      xs_->log.error =
          st == BodySource::Status::Timeout ? "upstream timeout mid-body" : "upstream body error";
      // Send what we have (the head) so the client sees a truncated response, then close.
      if (!prefix.empty()) co_await sink.write(prefix, {}, false);
      break;
    }
    bool last_piece = st == BodySource::Status::End || src.done();
    if (cs.capture) {
      for (auto p : pieces) cs.pending->body.append(p);
      if (cs.pending->body.size() > snap_->cache->max_object()) {  // too big: stream only
        cs.capture = false;
        cs.pending.reset();
      }
    }
    if (last_piece && framing == BodySink::Framing::Chunked) sink.set_trailers(src.trailers());
    auto iov = sink.prepare(prefix, pieces, last_piece);
    if (!iov.empty()) {
      auto [ec, n] = co_await io_.write(iov);
      sink.count(n);
      if (ec) {
        client_ok = false;
        break;
      }
    }
    prefix = {};
    if (last_piece) break;
  }
  xs_->log.bytes_out += sink.bytes();
  if (cs.capture && upstream_ok && src.done()) {
    snap_->cache->insert(cs.key, std::move(cs.pending));
  }
  cs.capture = false;
  up_wd_.disarm();
  if (upstream_ok && client_ok && src.done() && rhead.keep_alive && rbegin == rend) {
    ++conn->requests;
    worker_.pool().release(std::move(conn));
  }
  worker_.buffers().give(std::move(rbuf));
  if (!upstream_ok || !client_ok || !keep) co_return Next::Close;
  co_return Next::KeepAlive;
}

asio::awaitable<HttpSession::Next> HttpSession::bridge(const CompiledRoute& route,
                                                       const router::MatchResult& m,
                                                       std::string_view path,
                                                       filters::Exchange& x) {
  const config::Route& rc = *route.config;
  const int up_index = pick_upstream(route);

  proxy::BridgeRequest b;
  b.target = std::string(xs_->head.path);
  if (!xs_->head.query.empty()) b.target += "?" + std::string(xs_->head.query);
  for (const auto& h : xs_->head.headers) b.headers.emplace_back(h.name, h.value);
  b.method = rc.websocket_bridge->method;
  b.path = snap_->router->rewrite_path(m, path);
  // (the query as the filters left it: an api_key filter strips the key from it)
  const std::string_view query =
      x.query_overridden ? std::string_view(x.upstream_query) : xs_->head.query;
  if (!query.empty()) b.path += "?" + std::string(query);
  b.host = std::string(xs_->head.host);
  // What the route's filters added or kept for the upstream (forwarded JWT claims, header ops),
  // minus the handshake's own fields.
  // Never a client's own value for what the gateway asserts (identity, forwarding, the bridge's
  // own headers): the same exclusions as build_upstream_head, plus the bridge's names.
  connection_listed(xs_->head.headers, xs_->listed);
  auto starts = [](std::string_view name, std::string_view prefix) {
    return name.size() > prefix.size() && http::iequals(name.substr(0, prefix.size()), prefix);
  };
  for (const auto& h : x.upstream_headers) {
    if (is_hop_by_hop(h.name) || (!xs_->listed.empty() && listed(xs_->listed, h.name)) ||
        http::iequals(h.name, "host") || starts(h.name, "sec-websocket-") ||
        starts(h.name, "x-websocket-") || http::iequals(h.name, "x-consumer") ||
        http::iequals(h.name, "x-request-id") || http::iequals(h.name, "traceparent") ||
        http::iequals(h.name, "x-sluice-trace") || http::iequals(h.name, "x-forwarded-for") ||
        http::iequals(h.name, "x-forwarded-proto") || http::iequals(h.name, "x-forwarded-host") ||
        http::iequals(h.name, "forwarded") || http::iequals(h.name, "via") ||
        http::iequals(h.name, "content-type")) {
      continue;
    }
    b.extra_headers.emplace_back(to_lower_ascii(h.name), std::string(h.value));
  }
  b.source = proxy_addresses();
  b.extra_headers.emplace_back("x-forwarded-for", client_ip_);
  b.extra_headers.emplace_back("x-forwarded-proto", https_ ? "https" : "http");
  if (!x.consumer().empty()) b.extra_headers.emplace_back("x-consumer", std::string(x.consumer()));
  b.connection_id = xs_->request_id;
  b.max_in_flight = rc.websocket_bridge->max_in_flight;
  b.max_message = limits_.max_body;
  b.idle = limits_.idle_timeout;
  b.timeout = route_timeout_;
  if (snap_->config.admin) {
    b.metrics = metrics_;
    b.route = route_index_;
  }
  down_wd_.disarm();
  xs_->log.protocol = "websocket";
  proxy::BridgeStats stats =
      co_await proxy::bridge_websocket(worker_, socket_, tls_.get(), lane_.get(), snap_,
                                       static_cast<size_t>(up_index), std::move(b));
  xs_->log.status = stats.accepted ? 101 : 400;
  xs_->log.bytes_in += stats.bytes_in;
  xs_->log.bytes_out += stats.bytes_out;
  xs_->log.attempts = static_cast<int>(stats.messages_in);
  if (stats.upstream_errors > 0) {
    xs_->log.error = fmt::format("{} of {} messages got no upstream answer", stats.upstream_errors,
                                 stats.messages_in);
  }
  write_access_log();
  co_return Next::Close;
}

asio::awaitable<void> HttpSession::tunnel(UpstreamConnection& conn, std::string_view to_client,
                                          Duration idle) {
  using namespace asio::experimental::awaitable_operators;
  server::Io up{&conn.socket, conn.tls.get()};
  // What each side sent before the other could read it: the 101 and early frames for the
  // client, bytes the client pipelined behind its upgrade request for the upstream.
  io_.arm(down_wd_, idle);
  auto [ec, n] = co_await io_.write(asio::buffer(to_client));
  if (ec) co_return;
  if (begin_ < end_) {
    up_wd_.arm(idle, &conn.socket);
    auto [uec, un] = co_await up.write(asio::buffer(buf_.data() + begin_, end_ - begin_));
    if (uec) co_return;
    xs_->log.bytes_in += un;
    begin_ = end_ = 0;
  }
  uint64_t in = 0, out = 0;
  co_await (pump(io_, up, true, idle, in) && pump(up, io_, false, idle, out));
  xs_->log.bytes_in += in;
  xs_->log.bytes_out += out;
  down_wd_.disarm();
  up_wd_.disarm();
}

// One direction of a tunnel. Any transfer re-arms both watchdogs (the tunnel is idle only when
// neither direction moves). A clean end of stream is passed on as a half-close (TCP shutdown;
// close_notify on TLS); an error or a timeout ends both directions.
asio::awaitable<void> HttpSession::pump_body(std::shared_ptr<BodyPump> st,
                                             std::shared_ptr<server::Lane> up, Duration timeout) {
  BodySource src(io_, buf_, begin_, end_, down_wd_, limits_.request_body_timeout);
  src.start(xs_->head.body_kind, xs_->head.content_length);
  BodySink sink(server::Io{nullptr, nullptr, up.get()}, up_wd_, timeout, BodySink::Framing::Chunked,
                st->iov);
  std::vector<std::string_view> pieces;
  uint64_t body_bytes = 0;
  bool failed = false;
  for (;;) {
    auto s = co_await src.next(pieces);
    if (s == BodySource::Status::Error || s == BodySource::Status::Timeout) {
      failed = true;
      break;
    }
    for (auto p : pieces) body_bytes += p.size();
    if (body_bytes > limits_.max_body) {
      failed = true;
      break;
    }
    const bool last = s == BodySource::Status::End || src.done();
    if (last) sink.set_trailers(src.trailers());
    if (!co_await sink.write({}, pieces, last)) break;  // the upstream stream is gone
    if (last) {
      st->complete = true;
      break;
    }
  }
  st->raw_bytes = src.raw_bytes();
  if (failed) up->out.fail(true);  // the upstream stream is reset: the answer ends too
  st->done = true;
  st->timer.cancel();
}

asio::awaitable<void> HttpSession::join_pump() {
  if (!pump_) co_return;
  std::shared_ptr<BodyPump> p = std::move(pump_);
  if (!p->done) {  // the answer is over before the body: stop reading it
    error_code ignored;
    if (lane_) {
      lane_->in.cancel_reader();
    } else {
      socket_.cancel(ignored);
    }
  }
  while (!p->done) {
    p->timer.expires_at(asio::steady_timer::time_point::max());
    co_await p->timer.async_wait(use_nothrow);
  }
  if (xs_) xs_->log.bytes_in += p->raw_bytes;
  if (!p->complete) close_after_ = true;  // the rest of the body is still on the wire
}

// A clean end of one direction: shutdown(SHUT_WR), close_notify, or END_STREAM on a lane.
void half_close(const server::Io& io) {
  error_code ignored;
  if (io.lane != nullptr) {
    io.lane->out.finish();
  } else if (io.tls != nullptr) {
    io.tls->shutdown();
  } else {
    io.sock->shutdown(tcp::socket::shutdown_send, ignored);
  }
}

// Ends both directions of `io` at once: pending operations fail.
void abort_io(const server::Io& io) {
  error_code ignored;
  if (io.lane != nullptr) {
    io.lane->cancel(ignored);
    io.lane->in.close_reader();
    io.lane->out.fail(true);
  } else {
    io.sock->cancel(ignored);
    io.sock->shutdown(tcp::socket::shutdown_both, ignored);
  }
}

asio::awaitable<void> HttpSession::pump(server::Io from, server::Io to, bool to_upstream,
                                        Duration idle, uint64_t& bytes) {
  server::IoBuffer buf = worker_.buffers().take(16 * 1024);
  const server::Io& up = to_upstream ? to : from;
  for (;;) {
    auto [ec, n] = co_await from.read_some(asio::buffer(buf.data(), buf.size()));
    if (ec) {
      if (ec == asio::error::eof && !down_wd_.expired() && !up_wd_.expired()) {
        half_close(to);
      } else {
        abort_io(from);
        abort_io(to);
      }
      break;
    }
    io_.arm(down_wd_, idle);
    up.arm(up_wd_, idle);
    auto [wec, wn] = co_await to.write(asio::buffer(buf.data(), n));
    bytes += wn;
    if (wec) {
      abort_io(from);
      abort_io(to);
      break;
    }
  }
  worker_.buffers().give(std::move(buf));
}

// Once per exchange (from write_access_log): counters, the rate ring, top clients.
void HttpSession::record_metrics() {
  if (!snap_->config.admin) return;  // nobody can read them: not collected
  const int status = xs_->log.status;
  const auto elapsed = Clock::now() - xs_->log.start;
  if (metrics_) {
    metrics_->request(route_index_, status, elapsed, xs_->log.bytes_in, xs_->log.bytes_out,
                      listener_index_);
    if (xs_->exchange.rate_limited) metrics_->rate_limited(route_index_);
    if (auth_refused_) {
      metrics_->auth_failure(route_index_, status == 401 ? stats::AuthFailure::Invalid
                                                         : stats::AuthFailure::Forbidden);
    }
    const std::string_view c = xs_->log.cache;
    if (c == "hit") metrics_->cache(route_index_, stats::CacheResult::Hit);
    if (c == "miss") metrics_->cache(route_index_, stats::CacheResult::Miss);
    if (c == "stale") metrics_->cache(route_index_, stats::CacheResult::Stale);
  }
  worker_.rates().record(
      std::chrono::duration_cast<std::chrono::seconds>(Clock::now().time_since_epoch()).count(),
      status);
  worker_.top_requests().add(client_ip_, 1);
  worker_.top_bytes().add(client_ip_, xs_->log.bytes_in + xs_->log.bytes_out);
}

void HttpSession::write_access_log() {
  record_metrics();
  if (!log::access_enabled()) return;
  const ExchangeLog& l = xs_->log;
  AccessRecord r;
  r.request_id = xs_->request_id;
  r.trace_id = xs_->trace_id;
  r.client_ip = client_ip_;
  r.listener = listener_name_;
  r.method = l.method;
  r.host = l.host;
  r.path = l.path;
  r.query = l.query;
  r.protocol = l.protocol;
  r.status = l.status;
  r.bytes_in = l.bytes_in;
  r.bytes_out = l.bytes_out;
  r.duration_us =
      std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - l.start).count();
  r.route = l.route;
  r.upstream = l.upstream;
  r.target = l.target;
  r.upstream_us = l.upstream_us;
  r.attempts = l.attempts;
  r.consumer = l.consumer;
  r.cache = l.cache;
  r.rate_limited = xs_->exchange.rate_limited;
  r.user_agent = l.user_agent;
  r.referer = l.referer;
  r.error = l.error;
  write_access(r, snap_->config.log.access_format == "combined");
}

}  // namespace

asio::awaitable<void> serve_http(server::Worker& worker, tcp::socket socket,
                                 std::string listener_name) {
  HttpSession session(worker, std::move(socket), std::move(listener_name));
  co_await session.run();
}

asio::awaitable<void> serve_http_lane(server::Worker& worker, std::shared_ptr<server::Lane> lane,
                                      std::string listener_name, DownstreamInfo info) {
  HttpSession session(worker, std::move(lane), std::move(listener_name), info);
  co_await session.run();
}

}  // namespace sluice::proxy

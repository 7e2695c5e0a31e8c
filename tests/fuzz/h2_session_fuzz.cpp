// libFuzzer target for the sans-I/O HTTP/2 sessions (src/http/h2.h): whatever the peer sends must
// never crash, hang, leak, hit undefined behaviour, break the event contract or let the output
// grow past the documented bounds. Input layout:
//
//   byte 0   bit 0: 0 = the rest is a client's bytes for a ServerSession (after the preface, which
//                   is added here); 1 = a server's bytes for a ClientSession that has submitted a
//                   GET (stream 1), a POST with body and trailers (3) and a GET (5)
//            bits 1-3: Limits profile (defaults, tiny, large, limits off, extremes, ...)
//            bit 4: the owner sometimes skips pending_output() between reads (backlog bound)
//   byte 1   seed for where the bytes are split into receive() calls
//   byte 2   seed for the owner's choices (answer now / later, bodies, trailers, consume, reset)
//   rest     the peer's bytes
//
// Checked: events only for streams the owner has seen and not yet seen closed, on_stream_close
// exactly once, nothing but closes after a failure, received heads validated as documented,
// receive windows bounded, submit_* results consistent with the buffers, each pending_output()
// within max_output_backlog + output_chunk + one frame (more only after a failed receive), and
// the output a well-formed frame sequence (HPACK decodes, names lower-case, connection-specific
// fields dropped, no DATA/HEADERS after END_STREAM or RST_STREAM, no more DATA than submitted).
//
//   cmake --preset fuzz && cmake --build build/fuzz --target h2_session_fuzz
//   mkdir -p /tmp/h2corpus && build/fuzz/h2_session_fuzz -max_total_time=60 -max_len=16384 \
//     /tmp/h2corpus tests/fuzz/corpus/h2_session
//
// (libFuzzer writes new inputs into the first directory it is given: keep the seeds second.)
#include <nghttp2/nghttp2.h>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <map>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "http/h2.h"

namespace {

using namespace sluice::http;
using namespace sluice::http::h2;
using namespace std::string_view_literals;

void check(bool ok) {
  if (!ok) __builtin_trap();
}

// Deterministic choices (splitmix64) seeded from input bytes.
class Rng {
 public:
  explicit Rng(uint64_t seed) : s_(seed) {}
  uint32_t next() {
    uint64_t z = (s_ += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return static_cast<uint32_t>((z ^ (z >> 31)) >> 32);
  }
  uint32_t below(uint32_t n) { return n == 0 ? 0 : next() % n; }
  bool one_in(uint32_t n) { return below(n) == 0; }

 private:
  uint64_t s_;
};

// Reads every byte of views handed to events, so a dangling view shows up under ASan.
volatile uint8_t g_sink;
void touch(std::string_view s) {
  uint8_t x = 0;
  for (char c : s) x ^= static_cast<uint8_t>(c);
  g_sink = g_sink ^ x;
}

bool has_upper(std::string_view s) {
  return std::any_of(s.begin(), s.end(), [](char c) { return c >= 'A' && c <= 'Z'; });
}
bool connection_specific(std::string_view name) {
  return name == "connection"sv || name == "keep-alive"sv || name == "proxy-connection"sv ||
         name == "transfer-encoding"sv || name == "upgrade"sv;
}

Limits make_limits(unsigned profile, Rng& rng) {
  Limits l;
  switch (profile) {
    case 0:  // defaults
      break;
    case 1:  // everything small
      l.max_concurrent_streams = 4;
      l.max_header_list_size = 256;
      l.initial_window = 1024;
      l.connection_window = 4096;
      l.max_resets_per_second = 5;
      l.max_empty_frames = 2;
      l.max_continuations = 2;
      l.max_settings_entries = 4;
      l.max_outbound_acks = 8;
      l.max_output_backlog = 512;
      l.stream_buffer = 100;
      l.session_buffer = 300;
      l.output_chunk = 64;
      break;
    case 2:  // large windows and frames, extended CONNECT
      l.initial_window = 1 << 20;
      l.connection_window = 4 << 20;
      l.max_frame_size = 1 << 20;
      l.enable_connect_protocol = true;
      l.output_chunk = 1 << 20;
      l.stream_buffer = 1 << 20;
      break;
    case 3:  // the limits of this file off
      l.max_resets_per_second = 0;
      l.max_empty_frames = 0;
      l.max_output_backlog = 1 << 16;
      l.enable_connect_protocol = true;
      break;
    case 4:  // degenerate buffers
      l.stream_buffer = 0;
      l.session_buffer = 0;
      l.output_chunk = 0;
      l.max_output_backlog = 64;
      break;
    case 5:  // zero windows, nothing admitted
      l.max_concurrent_streams = rng.below(2);
      l.max_header_list_size = rng.below(64);
      l.initial_window = 0;
      l.connection_window = 0;
      l.max_resets_per_second = 1;
      l.max_empty_frames = 1;
      break;
    case 6:  // the other extreme
      l.max_concurrent_streams = UINT32_MAX;
      l.initial_window = UINT32_MAX;
      l.connection_window = UINT32_MAX;
      l.max_frame_size = UINT32_MAX;
      l.max_header_list_size = 1 << 20;
      l.max_outbound_acks = 1;
      l.max_settings_entries = 1;
      l.max_continuations = 0;
      break;
    default: {  // drawn from the seed, log scale
      auto pick = [&rng](uint32_t max_bits) {
        const uint32_t bits = rng.below(max_bits + 1);
        return bits == 0 ? 0u : (1u << (bits - 1)) + rng.below(1u << (bits - 1));
      };
      l.max_concurrent_streams = pick(8);
      l.max_header_list_size = pick(17);
      l.initial_window = pick(21);
      l.connection_window = pick(22);
      l.max_frame_size = pick(24);
      l.enable_connect_protocol = rng.one_in(2);
      l.max_resets_per_second = pick(8);
      l.max_empty_frames = pick(5);
      l.max_continuations = pick(5);
      l.max_settings_entries = pick(6);
      l.max_outbound_acks = pick(11);
      l.max_output_backlog = 1 + pick(20);
      l.stream_buffer = pick(17);
      l.session_buffer = pick(20);
      l.output_chunk = pick(17);
      break;
    }
  }
  return l;
}

// ---------------------------------------------------------------------------------------------
// What the session writes, parsed as HTTP/2 frames.

class OutputChecker {
 public:
  struct StreamOut {
    bool head = false;
    bool ended = false;
    bool reset = false;
    uint64_t data = 0;  // DATA payload bytes (no padding)
  };

  explicit OutputChecker(bool server) : server_(server) {
    check(nghttp2_hd_inflate_new(&inflater_) == 0);
    if (!server) preface_ = std::string(k_client_preface);
  }
  ~OutputChecker() { nghttp2_hd_inflate_del(inflater_); }
  OutputChecker(const OutputChecker&) = delete;
  OutputChecker& operator=(const OutputChecker&) = delete;

  void feed(std::string_view bytes) {
    if (!preface_.empty()) {  // a ClientSession starts with the connection preface
      const size_t n = std::min(bytes.size(), preface_.size());
      check(bytes.substr(0, n) == std::string_view(preface_).substr(0, n));
      preface_.erase(0, n);
      bytes.remove_prefix(n);
    }
    buf_ += bytes;
    size_t pos = 0;
    while (buf_.size() - pos >= 9) {
      const auto* p = reinterpret_cast<const uint8_t*>(buf_.data() + pos);
      const uint32_t len = (uint32_t{p[0]} << 16) | (uint32_t{p[1]} << 8) | p[2];
      if (buf_.size() - pos < 9 + len) break;
      const uint32_t sid =
          ((uint32_t{p[5]} << 24) | (uint32_t{p[6]} << 16) | (uint32_t{p[7]} << 8) | p[8]);
      check((sid & 0x80000000u) == 0);
      frame(p[3], p[4], static_cast<int32_t>(sid), std::string_view(buf_).substr(pos + 9, len));
      pos += 9 + len;
    }
    buf_.erase(0, pos);
  }
  bool at_frame_boundary() const { return buf_.empty() && preface_.empty(); }
  const std::map<int32_t, StreamOut>& streams() const { return streams_; }

 private:
  void frame(uint8_t type, uint8_t flags, int32_t sid, std::string_view payload) {
    check(payload.size() <= 16384);  // nghttp2 never sends more than the initial maximum
    if (continuation_ != 0) check(type == NGHTTP2_CONTINUATION && sid == continuation_);
    const bool end_stream = (flags & NGHTTP2_FLAG_END_STREAM) != 0;
    switch (type) {
      case NGHTTP2_DATA: {
        check(sid != 0 && sid % 2 == 1);
        StreamOut& s = streams_[sid];
        check(s.head && !s.ended && !s.reset);
        s.data += unpad(flags, payload).size();
        s.ended = end_stream;
        break;
      }
      case NGHTTP2_HEADERS: {
        check(sid != 0 && sid % 2 == 1);
        StreamOut& s = streams_[sid];
        check(!s.ended && !s.reset);
        if (s.head) check(end_stream);  // trailers (no 1xx here)
        trailers_ = s.head;
        s.head = true;
        s.ended = end_stream;
        std::string_view block = unpad(flags, payload);
        if ((flags & NGHTTP2_FLAG_PRIORITY) != 0) {
          check(block.size() >= 5);
          block.remove_prefix(5);
        }
        block_.assign(block);
        if ((flags & NGHTTP2_FLAG_END_HEADERS) != 0) {
          header_block();
        } else {
          continuation_ = sid;
        }
        break;
      }
      case NGHTTP2_PRIORITY:
        check(payload.size() == 5 && sid != 0);
        break;
      case NGHTTP2_RST_STREAM:
        check(payload.size() == 4 && sid != 0);
        streams_[sid].reset = true;
        break;
      case NGHTTP2_SETTINGS:
        check(sid == 0 && payload.size() % 6 == 0);
        if ((flags & NGHTTP2_FLAG_ACK) != 0) check(payload.empty());
        break;
      case NGHTTP2_PUSH_PROMISE:
        check(false);  // neither side pushes
        break;
      case NGHTTP2_PING:
        check(sid == 0 && payload.size() == 8);
        break;
      case NGHTTP2_GOAWAY:
        check(sid == 0 && payload.size() >= 8);
        break;
      case NGHTTP2_WINDOW_UPDATE: {
        check(payload.size() == 4);
        const auto* p = reinterpret_cast<const uint8_t*>(payload.data());
        const uint32_t inc =
            ((uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | p[3]);
        check(inc > 0 && inc <= 0x7fffffffu);
        break;
      }
      case NGHTTP2_CONTINUATION:
        check(continuation_ == sid && sid != 0);
        block_ += payload;
        if ((flags & NGHTTP2_FLAG_END_HEADERS) != 0) {
          continuation_ = 0;
          header_block();
        }
        break;
      default:
        check(false);  // nothing else is ever submitted
    }
  }

  static std::string_view unpad(uint8_t flags, std::string_view payload) {
    if ((flags & NGHTTP2_FLAG_PADDED) == 0) return payload;
    check(!payload.empty());
    const size_t pad = static_cast<uint8_t>(payload[0]);
    check(pad + 1 <= payload.size());
    return payload.substr(1, payload.size() - 1 - pad);
  }

  void header_block() {
    const auto* in = reinterpret_cast<const uint8_t*>(block_.data());
    size_t left = block_.size();
    bool status = false, method = false;
    for (;;) {
      nghttp2_nv nv;
      int flags = 0;
      const ssize_t rv = nghttp2_hd_inflate_hd2(inflater_, &nv, &flags, in, left, 1);
      check(rv >= 0);
      in += rv;
      left -= static_cast<size_t>(rv);
      if ((flags & NGHTTP2_HD_INFLATE_EMIT) != 0) {
        const std::string_view name(reinterpret_cast<const char*>(nv.name), nv.namelen);
        const std::string_view value(reinterpret_cast<const char*>(nv.value), nv.valuelen);
        check(!name.empty() && !has_upper(name) && !connection_specific(name));
        check(name != "x-drop"sv);  // named in our Connection field
        if (name == "te"sv) check(value == "trailers"sv);
        if (!server_) check(name != "host"sv);  // carried as :authority
        if (trailers_) check(name.front() != ':');
        status = status || name == ":status"sv;
        method = method || name == ":method"sv;
      }
      if ((flags & NGHTTP2_HD_INFLATE_FINAL) != 0) {
        nghttp2_hd_inflate_end_headers(inflater_);
        break;
      }
      check(rv > 0 || (flags & NGHTTP2_HD_INFLATE_EMIT) != 0);
    }
    check(left == 0);
    if (!trailers_) check(server_ ? status : method);
  }

  bool server_;
  nghttp2_hd_inflater* inflater_ = nullptr;
  std::string preface_;
  std::string buf_;
  std::string block_;
  int32_t continuation_ = 0;
  bool trailers_ = false;
  std::map<int32_t, StreamOut> streams_;
};

// ---------------------------------------------------------------------------------------------
// The owner: one class for both roles, events checked against what it has seen.

const std::vector<Header> k_response_headers = {
    {"Content-Type", "text/plain"},
    {"Connection", "close, X-Drop"},
    {"X-Drop", "1"},
    {"Keep-Alive", "5"},
    {"TE", "trailers"},
    {"Cache-Control", "no-store"},
};
const std::vector<Header> k_request_headers = {
    {"Host", "example.com"}, {"Accept", "*/*"},  {"Transfer-Encoding", "chunked"},
    {"te", "gzip"},          {"Upgrade", "h2c"}, {"X-Request-Id", "abc"},
};
const std::vector<Header> k_trailers = {
    {"Grpc-Status", "0"}, {"grpc-message", "ok"}, {"Connection", "x"}};
const std::string k_payload(70000, 'b');

class Owner final : public ServerEvents, public ClientEvents {
 public:
  struct Stream {
    bool head = false;          // request (server) / response (client) head received
    bool body_follows = false;  // of that head
    bool got_trailers = false;  // on_trailers
    bool ended = false;         // on_end_stream
    bool answered = false;      // server: response head submitted
    bool body_open = false;     // we submitted Body::Follows and have not ended it
    bool trailers = false;      // end our body with trailers
    bool waiting = false;       // got Full or Blocked: owed on_send_ready
    bool reset = false;         // reset_stream() called
    size_t to_send = 0;         // body bytes we still mean to submit
    uint64_t unconsumed = 0;    // on_data bytes not yet consume()d
  };

  Owner(const Limits& limits, Rng& rng, bool server)
      : limits_(limits), rng_(rng), server_(server) {}

  void attach(SessionBase* base, ServerSession* server, ClientSession* client) {
    base_ = base;
    server_session_ = server;
    client_session_ = client;
  }

  // --- events ---

  void on_request(StreamId id, const Request& r, Body body) override {
    check(server_ && !quiet());
    check(id > 0 && id % 2 == 1 && id > last_request_);
    last_request_ = id;
    check(!seen_.count(id));
    seen_.insert(id);
    check_request(r);
    Stream& s = open_[id];
    s.head = true;
    s.body_follows = body == Body::Follows;
    reentrant_calls();
    switch (rng_.below(16)) {
      case 0:
      case 1:
      case 2:
      case 3:
        respond(id, Body::None);
        check(base_->submit_data(id, "x", EndStream::Yes) == Send::Closed);  // no body
        break;
      case 4:
      case 5:
      case 6:
      case 7:
        respond(id, Body::Follows);
        break;
      case 8:
      case 9:
        break;  // answered later
      case 10:
        reset(id);
        break;
      case 11: {  // invalid status first
        static constexpr int k_bad[] = {0, 100, 199, 600, 1000, -200};
        check(server_session_->submit_response(id, k_bad[rng_.below(6)], k_response_headers,
                                               Body::None) == Submit::Invalid);
        respond(id, Body::None);
        break;
      }
      case 12:  // answering twice
        respond(id, rng_.one_in(2) ? Body::None : Body::Follows);
        check(server_session_->submit_response(id, 200, {}, Body::None) == Submit::Closed);
        break;
      case 13:  // trailers before the head
        check(base_->submit_trailers(id, k_trailers) == Submit::Invalid);
        break;
      case 14:
        if (rng_.one_in(4)) {
          server_session_->shutdown();
        }
        respond(id, Body::Follows);
        break;
      default:
        if (rng_.one_in(8)) {
          terminate();
        } else {
          respond(id, Body::None);
        }
        break;
    }
  }

  void on_response(StreamId id, const Response& r, Body body) override {
    check(!server_ && !quiet());
    Stream& s = known(id);
    check(!s.head);
    check(r.status >= 200 && r.status <= 999);
    check_fields(r.headers, true);
    s.head = true;
    s.body_follows = body == Body::Follows;
    reentrant_calls();
    if (maybe_terminate()) return;
    if (rng_.one_in(16)) reset(id);
  }

  void on_data(StreamId id, std::string_view data) override {
    check(!quiet());
    Stream& s = known(id);
    check(s.head && s.body_follows && !s.ended && !s.reset && !s.got_trailers);
    check(data.size() <= std::max<uint32_t>(limits_.max_frame_size, 16384));
    touch(data);
    s.unconsumed += data.size();
    // Receive windows: what was delivered and not consumed fits in the windows (the peer may use
    // the RFC defaults until it has acknowledged our SETTINGS).
    check(s.unconsumed <= std::max<uint64_t>(limits_.initial_window, 65535));
    uint64_t total = 0;
    for (const auto& [sid, st] : open_) total += st.unconsumed;
    check(total <= std::max<uint64_t>(limits_.connection_window, 65535));
    if (maybe_terminate()) return;
    switch (rng_.below(4)) {
      case 0:
        break;  // later (or never: backpressure)
      case 1:
        consume(id, 1 + rng_.below(static_cast<uint32_t>(data.size())));
        break;
      default:
        consume(id, data.size());
        break;
    }
    if (rng_.one_in(64)) reset(id);
  }

  void on_trailers(StreamId id, std::span<const Header> fields) override {
    check(!quiet());
    Stream& s = known(id);
    check(s.head && s.body_follows && !s.ended && !s.reset && !s.got_trailers);
    check_fields(fields, true);
    s.got_trailers = true;
    maybe_terminate();
  }

  void on_end_stream(StreamId id) override {
    check(!quiet());
    Stream& s = known(id);
    check(s.head && !s.ended && !s.reset);
    s.ended = true;
    if (maybe_terminate()) return;
    if (server_ && !s.answered && rng_.one_in(2)) respond(id, Body::Follows);
  }

  void on_send_ready(StreamId id) override {
    check(!quiet());
    Stream& s = known(id);
    check(s.waiting && !s.reset);
    s.waiting = false;
    check(base_->buffered(id) < std::max<size_t>(limits_.stream_buffer, 1));
    check(buffered_total() < std::max<size_t>(limits_.session_buffer, 1));
    if (maybe_terminate()) return;
    if (rng_.one_in(2)) send_body(id);
  }

  void on_stream_close(StreamId id, StreamEnd how, ErrorCode code) override {
    auto it = open_.find(id);
    check(it != open_.end());  // seen, and not closed before
    const Stream s = it->second;
    open_.erase(it);
    closed_[id] = how;
    if (s.reset) check(how == StreamEnd::LocalReset || how == StreamEnd::SessionEnded);
    if (how == StreamEnd::Complete) {
      check(code == ErrorCode::NoError);
      check(s.head && s.ended && !s.body_open && s.to_send == 0);
      if (server_) check(s.answered);
    }
    if (rng_.one_in(8)) {  // later calls on it are no-ops
      check(base_->submit_data(id, "x", EndStream::No) == Send::Closed);
      check(base_->submit_trailers(id, k_trailers) != Submit::Ok);
      base_->consume(id, 10);
      base_->reset_stream(id, ErrorCode::Cancel);
      if (server_) check(server_session_->submit_response(id, 200, {}, Body::None) != Submit::Ok);
    }
    if (!quiet()) maybe_terminate();
  }

  void on_goaway(StreamId last, ErrorCode) override {
    check(!quiet() && last >= 0);
    goaway_ = true;
    maybe_terminate();
  }

  // --- the owner's own work between reads ---

  // Client: the requests the seeds answer (streams 1, 3, 5), and a few invalid ones.
  void open_requests() {
    Request bad{.method = "", .scheme = "https", .authority = "a", .path = "/"};
    check(client_session_->submit_request(bad, Body::None).result == Submit::Invalid);
    bad = {.method = "CONNECT", .scheme = "https", .authority = "a", .path = "/"};
    check(client_session_->submit_request(bad, Body::None).result == Submit::Invalid);
    check(request("GET", "/", Body::None, 0, false) == 1);
    check(request("POST", "/upload", Body::Follows, 3000, true) == 3);
    check(request("GET", "/stream", Body::None, 0, false) == 5);
  }

  void act() {
    if (quiet()) return;
    std::vector<StreamId> ids;
    for (const auto& [id, s] : open_) ids.push_back(id);
    for (StreamId id : ids) {
      auto it = open_.find(id);
      if (it == open_.end() || quiet()) continue;
      Stream& s = it->second;
      if (s.unconsumed > 0 && rng_.one_in(2)) {
        consume(id, rng_.one_in(4) ? s.unconsumed + 5
                                   : 1 + rng_.below(static_cast<uint32_t>(s.unconsumed)));
      }
      if (server_ && !s.answered && !s.reset && rng_.one_in(2)) {
        respond(id, rng_.one_in(3) ? Body::None : Body::Follows);
      } else if (s.body_open && !s.waiting && rng_.one_in(2)) {
        send_body(id);
      } else if (rng_.one_in(40)) {
        reset(id);
      }
    }
    if (!server_ && requests_ < 8 && rng_.one_in(4)) {
      request("GET", "/more", rng_.one_in(2) ? Body::None : Body::Follows, rng_.below(40000),
              rng_.one_in(2));
    }
    // Calls on streams that do not exist are no-ops.
    const StreamId nobody = static_cast<StreamId>(2 * rng_.below(64) + 1001);
    if (!open_.count(nobody)) {
      check(base_->submit_data(nobody, "x", EndStream::Yes) == Send::Closed);
      base_->consume(nobody, 100);
      base_->reset_stream(nobody, ErrorCode::Cancel);
      check(base_->buffered(nobody) == 0);
    }
    if (server_ && rng_.one_in(32)) server_session_->shutdown();  // graceful, any number of times
    if (rng_.one_in(256)) terminate();
  }

  // After receive() / pending_output() returned: a dead session has closed everything.
  void after_call() {
    if (!base_->status().ok() || terminated_) {
      check(open_.empty());
      check(!base_->want_read());
    }
    size_t total = 0;
    for (const auto& [id, s] : open_) total += base_->buffered(id);
    // has_room() is checked before each append: one chunk over at most.
    check(total < std::max<size_t>(limits_.session_buffer, 1) + k_max_chunk);
    check(base_->open_streams() >= open_.size());  // and those not shown (yet)
    const Stats& stats = base_->stats();
    check(stats.streams == seen_.size());
    check(stats.resets_received + stats.refused + stats.rejected < (uint64_t{1} << 40));
    if (!base_->status().ok()) touch(base_->last_error());
    if (client_session_ != nullptr) (void)client_session_->peer_max_concurrent_streams();
  }

  // Closed Complete: every byte we submitted went out.
  void check_sent(const OutputChecker& out) const {
    for (const auto& [id, n] : submitted_) {
      auto st = out.streams().find(id);
      const uint64_t sent = st == out.streams().end() ? 0 : st->second.data;
      check(sent <= n);
      auto c = closed_.find(id);
      if (c != closed_.end() && c->second == StreamEnd::Complete) check(sent == n);
    }
  }

  void terminate() {
    terminated_ = true;
    base_->terminate(rng_.one_in(2) ? ErrorCode::NoError : ErrorCode::InternalError);
  }
  bool terminated() const { return terminated_; }
  // From inside an event, now and then.
  bool maybe_terminate() {
    if (!rng_.one_in(64)) return false;
    terminate();
    return true;
  }

  static constexpr size_t k_max_chunk = 20000;

 private:
  // No events but on_stream_close once the session failed or was terminated.
  bool quiet() const { return terminated_ || !base_->status().ok(); }

  Stream& known(StreamId id) {
    auto it = open_.find(id);
    check(it != open_.end());
    return it->second;
  }
  size_t buffered_total() const {
    size_t total = 0;
    for (const auto& [id, s] : open_) total += base_->buffered(id);
    return total;
  }

  static void check_fields(std::span<const Header> fields, bool lower) {
    for (const Header& h : fields) {
      touch(h.name);
      touch(h.value);
      check(!h.name.empty() && h.name.front() != ':');
      if (lower) check(!has_upper(h.name));
    }
  }

  void check_request(const Request& r) {
    touch(r.method);
    touch(r.scheme);
    touch(r.authority);
    touch(r.path);
    touch(r.protocol);
    check(!r.method.empty() && !r.authority.empty() && !r.scheme.empty() && !r.path.empty());
    if (r.method == "CONNECT"sv) {
      check(r.protocol == "websocket"sv && limits_.enable_connect_protocol);
    } else {
      check(r.protocol.empty());
    }
    check_fields(r.headers, true);
    int cookies = 0;
    for (const Header& h : r.headers) {
      check(!connection_specific(h.name));
      if (h.name == "te"sv) check(h.value == "trailers"sv);
      if (h.name == "host"sv) check(iequals(h.value, r.authority));
      if (h.name == "cookie"sv) ++cookies;
    }
    check(cookies <= 1);  // crumbs joined
  }

  // Several methods must do nothing from inside an event.
  void reentrant_calls() {
    if (!rng_.one_in(4)) return;
    std::string out;
    base_->pending_output(out);
    check(out.empty());
    const Status before = base_->status();
    const char junk[] = "\0\0\0\x07\0\0\0\0\0garbage";
    const Status st = server_ ? server_session_->receive(std::span(junk, sizeof junk - 1))
                              : client_session_->receive(std::span(junk, sizeof junk - 1));
    check(st.failure == before.failure && st.code == before.code);
  }

  void respond(StreamId id, Body body) {
    Stream& s = known(id);
    const int status = 200 + static_cast<int>(rng_.below(400));
    const size_t fields = rng_.below(static_cast<uint32_t>(k_response_headers.size() + 1));
    const Submit r = server_session_->submit_response(
        id, status, std::span(k_response_headers).first(fields), body);
    if (s.answered || s.reset) {
      check(r == Submit::Closed);
      return;
    }
    check(r == Submit::Ok);
    s.answered = true;
    if (body == Body::Follows) {
      s.body_open = true;
      s.trailers = rng_.one_in(3);
      s.to_send = sizes();
      send_body(id);
    }
  }

  size_t sizes() {
    switch (rng_.below(5)) {
      case 0:
        return 0;
      case 1:
        return 1 + rng_.below(100);
      case 2:
        return rng_.below(static_cast<uint32_t>(std::min<size_t>(limits_.stream_buffer, 1 << 20)) *
                          3);
      default:
        return rng_.below(70000);
    }
  }

  StreamId request(std::string_view method, std::string_view path, Body body, size_t size,
                   bool trailers) {
    const size_t fields = rng_.below(static_cast<uint32_t>(k_request_headers.size() + 1));
    const Request req{.method = method,
                      .scheme = "https",
                      .authority = "example.com",
                      .path = path,
                      .headers = std::span(k_request_headers).first(fields)};
    const bool accepting = client_session_->accepting_streams();
    const ClientSession::Opened o = client_session_->submit_request(req, body);
    if (!accepting) check(o.result == Submit::Closed);
    if (o.result != Submit::Ok) {
      check(o.stream == 0);
      return 0;
    }
    ++requests_;
    check(o.stream > last_request_ && o.stream % 2 == 1 && !seen_.count(o.stream));
    last_request_ = o.stream;
    seen_.insert(o.stream);
    Stream& s = open_[o.stream];
    if (body == Body::Follows) {
      s.body_open = true;
      s.to_send = size;
      s.trailers = trailers;
      send_body(o.stream);
    }
    return o.stream;
  }

  void send_body(StreamId id) {
    Stream& s = known(id);
    for (int round = 0; round < 8 && s.body_open && !s.waiting && !s.reset; ++round) {
      if (s.to_send == 0) {
        if (s.trailers) {
          const size_t n = rng_.below(static_cast<uint32_t>(k_trailers.size() + 1));
          check(base_->submit_trailers(id, std::span(k_trailers).first(n)) == Submit::Ok);
        } else {
          check(base_->submit_data(id, "", EndStream::Yes) == Send::Ready);
        }
        s.body_open = false;
        return;
      }
      const size_t chunk =
          std::min(s.to_send, size_t{1} + rng_.below(rng_.one_in(4) ? k_max_chunk : 512));
      const EndStream end = chunk == s.to_send && !s.trailers ? EndStream::Yes : EndStream::No;
      const size_t before = base_->buffered(id);
      const Send r = base_->submit_data(id, std::string_view(k_payload).substr(0, chunk), end);
      switch (r) {
        case Send::Ready:
          if (end == EndStream::No) {
            check(base_->buffered(id) < std::max<size_t>(limits_.stream_buffer, 1));
          }
          break;
        case Send::Full:
          check(end == EndStream::No);
          s.waiting = true;
          break;
        case Send::Blocked:
          check(base_->buffered(id) == before);
          s.waiting = true;
          continue;
        case Send::Closed:
          check(false);  // the body is open and the stream not reset
      }
      check(base_->buffered(id) == before + chunk);
      submitted_[id] += chunk;
      s.to_send -= chunk;
      if (end == EndStream::Yes) s.body_open = false;
    }
  }

  void consume(StreamId id, uint64_t n) {
    Stream& s = known(id);
    base_->consume(id, n);
    s.unconsumed -= std::min(n, s.unconsumed);
  }

  void reset(StreamId id) {
    Stream& s = known(id);
    static constexpr ErrorCode k_codes[] = {ErrorCode::Cancel, ErrorCode::InternalError,
                                            ErrorCode::NoError, ErrorCode::RefusedStream};
    base_->reset_stream(id, k_codes[rng_.below(4)]);
    s.reset = true;
    s.body_open = false;
    s.waiting = false;
    s.unconsumed = 0;  // given back by the session
    s.to_send = 0;
  }

  Limits limits_;
  Rng& rng_;
  bool server_;
  SessionBase* base_ = nullptr;
  ServerSession* server_session_ = nullptr;
  ClientSession* client_session_ = nullptr;
  std::map<StreamId, Stream> open_;
  std::set<StreamId> seen_;
  std::map<StreamId, StreamEnd> closed_;
  std::map<StreamId, uint64_t> submitted_;
  StreamId last_request_ = 0;
  int requests_ = 0;
  bool goaway_ = false;
  bool terminated_ = false;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 3) return 0;
  const bool server = (data[0] & 1) == 0;
  const unsigned profile = (data[0] >> 1) & 7;
  const bool lazy_drain = (data[0] & 0x10) != 0;
  Rng split(data[1] + 0x100 * size);
  Rng rng(uint64_t{data[2]} | (static_cast<uint64_t>(data[0] >> 5) << 8));
  const std::string_view input(reinterpret_cast<const char*>(data + 3), size - 3);

  const Limits limits = make_limits(profile, rng);
  Owner owner(limits, rng, server);
  std::unique_ptr<ServerSession> server_session;
  std::unique_ptr<ClientSession> client_session;
  SessionBase* session = nullptr;
  if (server) {
    server_session = std::make_unique<ServerSession>(limits, owner);
    session = server_session.get();
  } else {
    client_session = std::make_unique<ClientSession>(limits, owner);
    session = client_session.get();
  }
  owner.attach(session, server_session.get(), client_session.get());
  if (!server) owner.open_requests();

  OutputChecker checker(server);
  // Documented bounds of one pending_output(): what receive() left (at most max_output_backlog
  // while it succeeded), plus about output_chunk, finishing the frame it started.
  const size_t chunk = std::max<size_t>(limits.output_chunk, 1);
  const size_t frame_slack = 9 + 16384;
  size_t received_since_drain = 0;
  bool failed_since_drain = false;
  auto drain = [&](int calls) {
    for (int i = 0; i < calls; ++i) {
      std::string out;
      session->pending_output(out);
      size_t bound = limits.max_output_backlog + chunk + frame_slack;
      // A receive() that failed may have serialised its whole read before noticing.
      if (failed_since_drain) bound += 16 * received_since_drain + 4096;
      check(out.size() <= bound);
      received_since_drain = 0;
      failed_since_drain = false;
      checker.feed(out);
      owner.after_call();
      if (out.empty() || !session->want_write()) break;
    }
  };
  drain(1);

  auto now = Clock::time_point(std::chrono::hours(1000));
  std::string pending = server ? std::string(k_client_preface) : std::string();
  size_t pos = 0;
  for (int reads = 0; pos < input.size() || !pending.empty(); ++reads) {
    size_t n = input.size() - pos;
    if (reads < 64) {
      switch (split.below(8)) {
        case 0:
          n = 1;
          break;
        case 1:
        case 2:
          n = 1 + split.below(16);
          break;
        case 3:
        case 4:
        case 5:
          n = 1 + split.below(256);
          break;
        case 6:
          n = 1 + split.below(4096);
          break;
        default:
          break;  // the rest
      }
    }
    n = std::min(n, input.size() - pos);
    pending.append(input.substr(pos, n));
    pos += n;
    const std::string bytes = std::move(pending);
    pending.clear();

    const Status before = session->status();
    Status st;
    if (server) {
      now += std::chrono::milliseconds(split.one_in(2) ? 0 : split.below(1500));
      st = server_session->receive(bytes, now);
    } else {
      st = client_session->receive(bytes);
    }
    const Status after = session->status();
    check(st.failure == after.failure && st.code == after.code);
    if (!before.ok()) check(st.failure == before.failure && st.code == before.code);
    if (!st.ok()) {
      check(!st.reason.empty() && st.code != ErrorCode::NoError);
      failed_since_drain = true;
    }
    received_since_drain += bytes.size();
    owner.after_call();
    owner.act();
    owner.after_call();
    if (!lazy_drain || split.one_in(4) || !st.ok()) drain(4);
  }

  // The peer stops sending; the owner finishes writing what the windows let out.
  owner.act();
  drain(64);
  if (!session->want_write()) check(checker.at_frame_boundary());
  owner.check_sent(checker);
  if (!owner.terminated() && rng.one_in(2)) {
    owner.terminate();
    owner.after_call();
    drain(4);
  }
  return 0;
}

#include "http/h2.h"

#include <nghttp2/nghttp2.h>

#include <algorithm>
#include <cassert>
#include <charconv>
#include <cstring>
#include <unordered_map>
#include <utility>
#include <vector>

// How this file uses nghttp2:
//  - One nghttp2_session per SessionBase, fed with nghttp2_session_mem_recv and drained with
//    nghttp2_session_mem_send, so no I/O callbacks are registered.
//  - Automatic WINDOW_UPDATE is off: received DATA is returned to the windows only by
//    consume() (or when its stream closes), which is what makes request bodies backpressured.
//  - Bodies we send use one data provider per stream that reads from the stream's buffer and
//    answers NGHTTP2_ERR_DEFERRED when it is empty; submit_data() resumes it.
//  - receive() serialises control frames (ACKs, RST_STREAM, GOAWAY, heads submitted from
//    events) into out_ right away, with DATA held back. That lets receive() see a GOAWAY
//    nghttp2 decided to send (it reports protocol errors only that way), keeps nghttp2's queues
//    short, and gives the bytes not yet taken by the owner a bound (max_output_backlog).
//  - Events may call back into the session, even terminate() it, so code after an event looks
//    its stream up again by id instead of keeping a reference.

namespace sluice::http::h2 {

std::string_view to_string(ErrorCode code) {
  switch (code) {
    case ErrorCode::NoError:
      return "NO_ERROR";
    case ErrorCode::ProtocolError:
      return "PROTOCOL_ERROR";
    case ErrorCode::InternalError:
      return "INTERNAL_ERROR";
    case ErrorCode::FlowControlError:
      return "FLOW_CONTROL_ERROR";
    case ErrorCode::SettingsTimeout:
      return "SETTINGS_TIMEOUT";
    case ErrorCode::StreamClosed:
      return "STREAM_CLOSED";
    case ErrorCode::FrameSizeError:
      return "FRAME_SIZE_ERROR";
    case ErrorCode::RefusedStream:
      return "REFUSED_STREAM";
    case ErrorCode::Cancel:
      return "CANCEL";
    case ErrorCode::CompressionError:
      return "COMPRESSION_ERROR";
    case ErrorCode::ConnectError:
      return "CONNECT_ERROR";
    case ErrorCode::EnhanceYourCalm:
      return "ENHANCE_YOUR_CALM";
    case ErrorCode::InadequateSecurity:
      return "INADEQUATE_SECURITY";
    case ErrorCode::Http11Required:
      return "HTTP_1_1_REQUIRED";
  }
  return "UNKNOWN";
}

Preface detect_preface(std::string_view first_bytes) {
  const size_t n = std::min(first_bytes.size(), k_client_preface.size());
  if (first_bytes.substr(0, n) != k_client_preface.substr(0, n)) return Preface::Http1;
  return n == k_client_preface.size() ? Preface::H2 : Preface::NeedMore;
}

namespace {

using namespace std::string_view_literals;

// The opaque data of the PING that paces a graceful shutdown.
constexpr uint8_t k_shutdown_ping[8] = {'s', 'l', 'u', 'i', 'c', 'e', 'g', 'o'};

std::string_view view(const uint8_t* p, size_t n) { return {reinterpret_cast<const char*>(p), n}; }

char lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c + 32) : c; }

// RFC 9113 8.2.2: fields that only make sense on an HTTP/1 connection.
bool is_connection_specific(std::string_view lower_name) {
  return lower_name == "connection"sv || lower_name == "keep-alive"sv ||
         lower_name == "proxy-connection"sv || lower_name == "transfer-encoding"sv ||
         lower_name == "upgrade"sv || lower_name == "http2-settings"sv;
}

// Whether `name` is one of the comma-separated tokens of the Connection field values.
bool named_in_connection(std::span<const Header> headers, std::string_view name) {
  for (const Header& h : headers) {
    if (!iequals(h.name, "connection")) continue;
    std::string_view list = h.value;
    while (!list.empty()) {
      size_t comma = list.find(',');
      std::string_view token = list.substr(0, comma);
      while (!token.empty() && (token.front() == ' ' || token.front() == '\t')) {
        token.remove_prefix(1);
      }
      while (!token.empty() && (token.back() == ' ' || token.back() == '\t')) {
        token.remove_suffix(1);
      }
      if (iequals(token, name)) return true;
      if (comma == std::string_view::npos) break;
      list.remove_prefix(comma + 1);
    }
  }
  return false;
}

// A header block to submit: fields copied (names lower-cased) into one buffer that outlives the
// nghttp2_nv array pointing into it (nghttp2 copies the block on submission).
class OutFields {
 public:
  void add(std::string_view name, std::string_view value) {
    refs_.push_back({bytes_.size(), name.size(), value.size()});
    for (char c : name) bytes_ += lower(c);
    bytes_ += value;
  }

  // Regular fields from an HTTP/1 head, made fit for HTTP/2.
  void add_regular(std::span<const Header> headers, bool request) {
    for (const Header& h : headers) {
      if (h.name.empty() || h.name.front() == ':') continue;
      std::string lname(h.name);
      for (char& c : lname) c = lower(c);
      if (is_connection_specific(lname)) continue;
      if (request && lname == "host"sv) continue;  // carried as :authority
      if (lname == "te"sv) {
        if (iequals(h.value, "trailers")) add("te", "trailers");
        continue;
      }
      if (named_in_connection(headers, lname)) continue;
      add(lname, h.value);
    }
  }

  std::vector<nghttp2_nv>& nvs() {
    nv_.clear();
    for (const Ref& r : refs_) {
      auto* base = reinterpret_cast<uint8_t*>(bytes_.data()) + r.offset;
      nv_.push_back({base, base + r.name_len, r.name_len, r.value_len, NGHTTP2_NV_FLAG_NONE});
    }
    return nv_;
  }

 private:
  struct Ref {
    size_t offset, name_len, value_len;
  };
  std::string bytes_;
  std::vector<Ref> refs_;
  std::vector<nghttp2_nv> nv_;
};

}  // namespace

namespace detail {

enum class Role : uint8_t { Server, Client };

// One stream as this file tracks it (nghttp2 keeps its own protocol state).
struct Stream {
  explicit Stream(StreamId i) : id(i) {}

  StreamId id;
  bool announced = false;  // the owner knows it: on_request delivered / submit_request returned it

  // Received header block being collected (one at a time per stream).
  std::string field_bytes;
  struct FieldRef {
    uint32_t offset, name_len, value_len;
  };
  std::vector<FieldRef> fields;
  size_t list_size = 0;    // RFC 9113 6.5.2 size of the block so far
  bool oversized = false;  // over max_header_list_size: fields dropped
  bool head_done = false;  // request / final response delivered: later HEADERS are trailers
  bool peer_ended = false;
  uint64_t unconsumed = 0;  // delivered DATA bytes not yet consume()d

  bool owner_reset = false;  // reset_stream() was called
  bool peer_reset = false;   // RST_STREAM received
  bool rejected = false;     // the session reset it or answered it itself
  bool stop_peer = false;    // answered early: RST_STREAM(NO_ERROR) once that answer is out
  bool send_failed = false;  // a head we submitted could not be sent

  // Sending.
  bool head_submitted = false;
  bool body_open = false;  // head sent with Body::Follows and the body not ended yet
  std::string out;         // body bytes not yet handed to nghttp2, from out_pos
  size_t out_pos = 0;
  bool out_ended = false;
  bool has_trailers = false;
  OutFields trailers;
  bool deferred = false;  // our data provider answered DEFERRED: needs resume_data
  bool waiting = false;   // the owner got Full/Blocked and is owed on_send_ready

  size_t queued() const { return out.size() - out_pos; }

  void begin_block() {
    field_bytes.clear();
    fields.clear();
    list_size = 0;
    oversized = false;
  }
  std::string_view name(const FieldRef& f) const {
    return std::string_view(field_bytes).substr(f.offset, f.name_len);
  }
  std::string_view value(const FieldRef& f) const {
    return std::string_view(field_bytes).substr(f.offset + f.name_len, f.value_len);
  }
};

class Session {
 public:
  Session(Role role, const Limits& limits, Events& events, ServerEvents* server,
          ClientEvents* client);
  ~Session() { nghttp2_session_del(s_); }

  Status receive(std::span<const char> bytes, Clock::time_point now);
  void pending_output(std::string& out);
  bool want_write() const {
    return !out_.empty() || (s_ != nullptr && nghttp2_session_want_write(s_) != 0);
  }
  bool want_read() const { return !dead_ && nghttp2_session_want_read(s_) != 0; }

  Submit submit_response(StreamId id, int status, std::span<const Header> headers, Body body);
  ClientSession::Opened submit_request(const Request& request, Body body);
  Send submit_data(StreamId id, std::string_view data, EndStream end);
  Submit submit_trailers(StreamId id, std::span<const Header> fields);
  size_t buffered(StreamId id) const {
    auto it = streams_.find(id);
    return it == streams_.end() ? 0 : it->second->queued();
  }
  void consume(StreamId id, size_t n);
  void reset_stream(StreamId id, ErrorCode code);
  void terminate(ErrorCode code);
  void shutdown();
  void complete_shutdown();

  Status status() const { return status_; }
  const Stats& stats() const { return stats_; }
  std::string_view last_error() const { return last_error_; }
  size_t open_streams() const { return streams_.size(); }
  bool accepting_streams() const { return !dead_ && !goaway_received_; }
  uint32_t peer_max_concurrent_streams() const {
    if (s_ == nullptr) return 0;
    return nghttp2_session_get_remote_settings(s_, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS);
  }

 private:
  // nghttp2 callbacks (user_data is the Session).
  static int on_begin_headers(nghttp2_session*, const nghttp2_frame* frame, void* user);
  static int on_header(nghttp2_session*, const nghttp2_frame* frame, const uint8_t* name,
                       size_t namelen, const uint8_t* value, size_t valuelen, uint8_t flags,
                       void* user);
  // A field nghttp2 finds invalid (upper-case name, forbidden characters): by default it would
  // drop just that field; RFC 9113 8.2.1 says the message is malformed, so the stream is reset
  // (PROTOCOL_ERROR) and never reaches the owner.
  static int on_invalid_header(nghttp2_session*, const nghttp2_frame*, const uint8_t*, size_t,
                               const uint8_t*, size_t, uint8_t, void*) {
    return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
  }
  static int on_frame_recv(nghttp2_session*, const nghttp2_frame* frame, void* user);
  static int on_data_chunk(nghttp2_session*, uint8_t flags, int32_t id, const uint8_t* data,
                           size_t len, void* user);
  static int on_stream_close(nghttp2_session*, int32_t id, uint32_t code, void* user);
  static int on_frame_send(nghttp2_session*, const nghttp2_frame* frame, void* user);
  static int on_frame_not_send(nghttp2_session*, const nghttp2_frame* frame, int lib_error,
                               void* user);
  static int on_error(nghttp2_session*, int lib_error, const char* msg, size_t len, void* user);
  static ssize_t read_body(nghttp2_session*, int32_t id, uint8_t* buf, size_t length,
                           uint32_t* flags, nghttp2_data_source*, void* user);

  Stream* find(StreamId id) {
    auto it = streams_.find(id);
    return it == streams_.end() ? nullptr : it->second.get();
  }
  bool has_room(const Stream& st) const {
    return st.queued() < limits_.stream_buffer && buffered_ < limits_.session_buffer;
  }

  void headers_done(Stream& st, const nghttp2_frame* frame);
  void request_done(Stream& st, bool end_stream);
  void response_done(Stream& st, bool end_stream);
  void trailers_done(Stream& st);
  void peer_end(Stream& st);
  // Answers a request head the session will not pass on (431, 501) itself.
  void answer_locally(Stream& st, int status, bool end_stream);
  // Resets a stream the peer sent something invalid or oversized on.
  void reject(Stream& st, ErrorCode code);

  // Takes one token of the reset budget; false (and the session failed) when it is spent.
  bool take_reset_token();
  void fail(Failure failure, ErrorCode code, std::string_view reason);
  void fail_from_library(int lib_error);
  // Closes every stream the owner knows with SessionEnded.
  void end_streams(ErrorCode code);

  // Appends up to `budget` bytes of frames. With suppress_data_, DATA is held back.
  void serialise(std::string& dst, size_t budget);
  void serialise_control();
  // Work that must not run inside nghttp2 callbacks: returns the connection window of closed
  // streams, and tells waiting streams they have room. True when it may have produced frames.
  bool settle();
  // Once nghttp2 has returned: if the session failed or was terminated meanwhile, close the
  // owner's streams (not earlier: an event may still hold views into a stream).
  void after_failure();
  // No more events once the session failed or was terminated.
  bool ended() const { return dead_ || !status_.ok(); }

  Role role_;
  Limits limits_;
  Events& events_;
  ServerEvents* server_;
  ClientEvents* client_;
  nghttp2_session* s_ = nullptr;

  std::unordered_map<StreamId, std::unique_ptr<Stream>> streams_;
  size_t buffered_ = 0;               // queued body bytes of all streams
  size_t connection_unconsumed_ = 0;  // of closed streams: to return to the session window
  size_t waiting_ = 0;  // streams owed on_send_ready (may count closed ones until settle())
  std::vector<StreamId> suppressed_;  // streams whose DATA serialise_control() held back
  bool suppress_data_ = false;
  std::string out_;  // serialised by receive(), not yet taken by pending_output()

  Clock::time_point now_{};
  double reset_tokens_ = 0;
  Clock::time_point reset_refill_{};
  uint32_t empty_frames_ = 0;

  bool shutdown_pending_ = false;  // graceful: waiting for the PING ACK to send the last GOAWAY
  bool goaway_received_ = false;
  bool owner_terminated_ = false;
  bool dead_ = false;  // failed or terminated: streams ended, no more input
  bool busy_ = false;  // inside receive() / pending_output(): nghttp2 may be on the stack
  bool ending_streams_ = false;
  ErrorCode end_code_ = ErrorCode::NoError;  // terminate() inside an event: for after_failure
  Status status_;
  Stats stats_;
  std::string last_error_;
};

Session::Session(Role role, const Limits& limits, Events& events, ServerEvents* server,
                 ClientEvents* client)
    : role_(role), limits_(limits), events_(events), server_(server), client_(client) {
  // RFC 9113 limits on the values we advertise.
  limits_.max_frame_size = std::clamp<uint32_t>(limits_.max_frame_size, 16384, (1u << 24) - 1);
  limits_.initial_window = std::min<uint32_t>(limits_.initial_window, (1u << 31) - 1);
  limits_.connection_window = std::min<uint32_t>(limits_.connection_window, (1u << 31) - 1);
  limits_.stream_buffer = std::max<size_t>(limits_.stream_buffer, 1);
  limits_.session_buffer = std::max<size_t>(limits_.session_buffer, 1);
  limits_.output_chunk = std::max<size_t>(limits_.output_chunk, 1);
  reset_tokens_ = limits_.max_resets_per_second;

  nghttp2_session_callbacks* cbs = nullptr;
  nghttp2_option* opt = nullptr;
  if (nghttp2_session_callbacks_new(&cbs) != 0 || nghttp2_option_new(&opt) != 0) {
    nghttp2_session_callbacks_del(cbs);
    nghttp2_option_del(opt);
    fail(Failure::Internal, ErrorCode::InternalError, "out of memory");
    dead_ = true;
    return;
  }
  nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, on_begin_headers);
  nghttp2_session_callbacks_set_on_header_callback(cbs, on_header);
  nghttp2_session_callbacks_set_on_invalid_header_callback(cbs, on_invalid_header);
  nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, on_frame_recv);
  nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data_chunk);
  nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_stream_close);
  nghttp2_session_callbacks_set_on_frame_send_callback(cbs, on_frame_send);
  nghttp2_session_callbacks_set_on_frame_not_send_callback(cbs, on_frame_not_send);
  nghttp2_session_callbacks_set_error_callback2(cbs, on_error);

  nghttp2_option_set_no_auto_window_update(opt, 1);
  nghttp2_option_set_no_closed_streams(opt, 1);
  nghttp2_option_set_max_outbound_ack(opt, limits_.max_outbound_acks);
  nghttp2_option_set_max_settings(opt, limits_.max_settings_entries);
  // Debian's security backports of nghttp2 1.57 / 1.61 (1.52.0-1+deb12u1, +deb12u2).
  nghttp2_option_set_max_continuations(opt, limits_.max_continuations);
  if (role_ == Role::Server && limits_.max_resets_per_second > 0) {
    // nghttp2's own reset limiter (GOAWAY INTERNAL_ERROR) stays as a backstop, looser than
    // ours so that ours (ENHANCE_YOUR_CALM, test-driven time) is the one that acts.
    const uint64_t rate = uint64_t{limits_.max_resets_per_second} * 2;
    nghttp2_option_set_stream_reset_rate_limit(opt, std::max<uint64_t>(1000, rate * 2),
                                               std::max<uint64_t>(33, rate));
  }

  int rv = role_ == Role::Server ? nghttp2_session_server_new2(&s_, cbs, this, opt)
                                 : nghttp2_session_client_new2(&s_, cbs, this, opt);
  nghttp2_session_callbacks_del(cbs);
  nghttp2_option_del(opt);
  if (rv != 0) {
    s_ = nullptr;
    fail(Failure::Internal, ErrorCode::InternalError, "out of memory");
    dead_ = true;
    return;
  }

  std::vector<nghttp2_settings_entry> iv;
  if (role_ == Role::Server) {
    iv.push_back({NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, limits_.max_concurrent_streams});
    if (limits_.enable_connect_protocol)
      iv.push_back({NGHTTP2_SETTINGS_ENABLE_CONNECT_PROTOCOL, 1});
  } else {
    iv.push_back({NGHTTP2_SETTINGS_ENABLE_PUSH, 0});
  }
  iv.push_back({NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, limits_.initial_window});
  iv.push_back({NGHTTP2_SETTINGS_MAX_FRAME_SIZE, limits_.max_frame_size});
  iv.push_back({NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, limits_.max_header_list_size});
  // RFC 9218: no RFC 7540 priority tree (less state, no PRIORITY-driven work for the peer).
  iv.push_back({NGHTTP2_SETTINGS_NO_RFC7540_PRIORITIES, 1});
  rv = nghttp2_submit_settings(s_, NGHTTP2_FLAG_NONE, iv.data(), iv.size());
  if (rv == 0 && limits_.connection_window > NGHTTP2_INITIAL_CONNECTION_WINDOW_SIZE) {
    rv = nghttp2_session_set_local_window_size(s_, NGHTTP2_FLAG_NONE, 0,
                                               static_cast<int32_t>(limits_.connection_window));
  }
  if (rv != 0) {
    fail(Failure::Internal, ErrorCode::InternalError, "cannot submit SETTINGS");
    dead_ = true;
  }
}

// --- receiving ---

Status Session::receive(std::span<const char> bytes, Clock::time_point now) {
  if (dead_ || busy_ || s_ == nullptr) return status_;
  now_ = now;
  busy_ = true;
  const ssize_t rv =
      nghttp2_session_mem_recv(s_, reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
  if (rv < 0 && status_.ok()) fail_from_library(static_cast<int>(rv));
  serialise_control();
  settle();
  if (status_.ok() && limits_.max_output_backlog != 0 && out_.size() > limits_.max_output_backlog) {
    fail(Failure::Flood, ErrorCode::EnhanceYourCalm, "output not drained");
    serialise_control();
  }
  busy_ = false;
  after_failure();
  return status_;
}

int Session::on_begin_headers(nghttp2_session*, const nghttp2_frame* frame, void* user) {
  auto& self = *static_cast<Session*>(user);
  if (frame->hd.type != NGHTTP2_HEADERS) return 0;
  const StreamId id = frame->hd.stream_id;
  if (self.role_ == Role::Server && frame->headers.cat == NGHTTP2_HCAT_REQUEST) {
    self.streams_.emplace(id, std::make_unique<Stream>(id));
  }
  if (Stream* st = self.find(id)) st->begin_block();
  return 0;
}

int Session::on_header(nghttp2_session*, const nghttp2_frame* frame, const uint8_t* name,
                       size_t namelen, const uint8_t* value, size_t valuelen, uint8_t, void* user) {
  auto& self = *static_cast<Session*>(user);
  Stream* st = self.find(frame->hd.stream_id);
  if (st == nullptr || st->oversized) return 0;
  // The block is still decoded to the end (HPACK state is shared), but no longer kept.
  st->list_size += namelen + valuelen + 32;
  if (st->list_size > self.limits_.max_header_list_size) {
    st->oversized = true;
    st->field_bytes.clear();
    st->fields.clear();
    return 0;
  }
  st->fields.push_back({static_cast<uint32_t>(st->field_bytes.size()),
                        static_cast<uint32_t>(namelen), static_cast<uint32_t>(valuelen)});
  st->field_bytes.append(view(name, namelen));
  st->field_bytes.append(view(value, valuelen));
  return 0;
}

int Session::on_frame_recv(nghttp2_session*, const nghttp2_frame* frame, void* user) {
  auto& self = *static_cast<Session*>(user);
  const bool end_stream = (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0;
  switch (frame->hd.type) {
    case NGHTTP2_DATA: {
      // Empty DATA frames cost us work and the peer nothing (CVE-2019-9518).
      const bool empty = frame->hd.length == frame->data.padlen && !end_stream;
      if (!empty) {
        self.empty_frames_ = 0;
      } else if (self.limits_.max_empty_frames > 0 &&
                 ++self.empty_frames_ > self.limits_.max_empty_frames) {
        self.fail(Failure::Flood, ErrorCode::EnhanceYourCalm, "empty frame flood");
        return NGHTTP2_ERR_CALLBACK_FAILURE;
      }
      if (Stream* st = self.find(frame->hd.stream_id); st != nullptr && end_stream) {
        self.peer_end(*st);
      }
      break;
    }
    case NGHTTP2_HEADERS:
      if (Stream* st = self.find(frame->hd.stream_id)) self.headers_done(*st, frame);
      break;
    case NGHTTP2_RST_STREAM:
      ++self.stats_.resets_received;
      if (Stream* st = self.find(frame->hd.stream_id)) st->peer_reset = true;
      // Rapid reset (CVE-2023-44487): opening streams and cancelling them at once costs the
      // client nothing and the gateway an upstream exchange each.
      if (self.role_ == Role::Server && !self.take_reset_token()) {
        return NGHTTP2_ERR_CALLBACK_FAILURE;
      }
      break;
    case NGHTTP2_GOAWAY:
      self.goaway_received_ = true;
      if (self.ended()) break;
      self.events_.on_goaway(frame->goaway.last_stream_id,
                             static_cast<ErrorCode>(frame->goaway.error_code));
      break;
    case NGHTTP2_PING:
      if ((frame->hd.flags & NGHTTP2_FLAG_ACK) != 0 && self.shutdown_pending_ &&
          std::memcmp(frame->ping.opaque_data, k_shutdown_ping, 8) == 0) {
        // One round trip after the shutdown notice: every stream the client opened before it
        // saw the notice has arrived, so the last stream id is final.
        self.shutdown_pending_ = false;
        nghttp2_submit_goaway(self.s_, NGHTTP2_FLAG_NONE,
                              nghttp2_session_get_last_proc_stream_id(self.s_), NGHTTP2_NO_ERROR,
                              nullptr, 0);
      }
      break;
    default:
      break;
  }
  return 0;
}

void Session::headers_done(Stream& st, const nghttp2_frame* frame) {
  const bool end_stream = (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0;
  if (st.rejected || st.owner_reset || ended()) return;
  if (st.head_done) {
    trailers_done(st);  // nghttp2 lets trailers through only with END_STREAM
  } else if (role_ == Role::Server) {
    request_done(st, end_stream);
  } else {
    response_done(st, end_stream);
  }
}

void Session::request_done(Stream& st, bool end_stream) {
  if (st.oversized) {
    answer_locally(st, 431, end_stream);
    return;
  }
  Request req;
  std::string_view host;
  bool has_host = false;
  for (const Stream::FieldRef& f : st.fields) {
    const std::string_view name = st.name(f);
    const std::string_view value = st.value(f);
    if (name == ":method"sv) {
      req.method = value;
    } else if (name == ":scheme"sv) {
      req.scheme = value;
    } else if (name == ":authority"sv) {
      req.authority = value;
    } else if (name == ":path"sv) {
      req.path = value;
    } else if (name == ":protocol"sv) {
      req.protocol = value;
    } else if (name == "host"sv) {
      host = value;
      has_host = true;
    }
  }
  // nghttp2 has checked presence and syntax of the pseudo-header fields; policy is ours.
  if (req.method == "CONNECT"sv && req.protocol != "websocket"sv) {
    // Plain CONNECT (a tunnel to anywhere) is never proxied, as on HTTP/1; extended CONNECT only
    // for WebSocket (RFC 8441), and only when enabled (else nghttp2 refused :protocol already).
    answer_locally(st, 501, end_stream);
    return;
  }
  // RFC 9113 8.3.1: an authority is required for http(s), and host must not contradict it.
  if (req.authority.empty()) req.authority = host;
  if (req.authority.empty() || (has_host && !iequals(host, req.authority))) {
    reject(st, ErrorCode::ProtocolError);
    return;
  }

  // Regular fields as views into the stream's storage; cookie crumbs joined (RFC 9113 8.2.3).
  std::vector<Header> headers;
  headers.reserve(st.fields.size());
  size_t cookies = 0;
  for (const Stream::FieldRef& f : st.fields) {
    const std::string_view name = st.name(f);
    if (name.front() == ':') continue;
    if (name == "cookie"sv) ++cookies;
    headers.push_back({name, st.value(f)});
  }
  std::string joined;
  if (cookies > 1) {
    auto first = headers.end();
    for (auto it = headers.begin(); it != headers.end();) {
      if (it->name != "cookie"sv) {
        ++it;
        continue;
      }
      if (!joined.empty()) joined += "; "sv;
      joined += it->value;
      if (first == headers.end()) {
        first = it++;
      } else {
        it = headers.erase(it);
      }
    }
    first->value = joined;
  }
  req.headers = headers;

  const StreamId id = st.id;
  st.head_done = true;
  st.announced = true;
  ++stats_.streams;
  server_->on_request(id, req, end_stream ? Body::None : Body::Follows);
  if (end_stream) {
    if (Stream* again = find(id)) peer_end(*again);
  }
}

void Session::response_done(Stream& st, bool end_stream) {
  if (st.oversized) {
    reject(st, ErrorCode::InternalError);
    return;
  }
  Response resp;
  std::vector<Header> headers;
  headers.reserve(st.fields.size());
  for (const Stream::FieldRef& f : st.fields) {
    const std::string_view name = st.name(f);
    const std::string_view value = st.value(f);
    if (name == ":status"sv) {
      std::from_chars(value.data(), value.data() + value.size(), resp.status);
    } else if (name.front() != ':') {
      headers.push_back({name, value});
    }
  }
  if (resp.status < 200) return;  // interim (nghttp2 checked the syntax): wait for the final
  resp.headers = headers;
  const StreamId id = st.id;
  st.head_done = true;
  client_->on_response(id, resp, end_stream ? Body::None : Body::Follows);
  if (end_stream) {
    if (Stream* again = find(id)) peer_end(*again);
  }
}

void Session::trailers_done(Stream& st) {
  if (st.oversized) {
    reject(st, ErrorCode::InternalError);
    return;
  }
  std::vector<Header> fields;
  fields.reserve(st.fields.size());
  for (const Stream::FieldRef& f : st.fields) fields.push_back({st.name(f), st.value(f)});
  const StreamId id = st.id;
  if (ended()) return;
  events_.on_trailers(id, fields);
  if (Stream* again = find(id)) peer_end(*again);
}

void Session::peer_end(Stream& st) {
  if (st.peer_ended) return;
  st.peer_ended = true;
  if (st.announced && !st.owner_reset && !st.rejected && !ended()) events_.on_end_stream(st.id);
}

void Session::answer_locally(Stream& st, int status, bool end_stream) {
  st.rejected = true;
  ++stats_.rejected;
  char digits[4];
  auto [end, ec] = std::to_chars(digits, digits + sizeof digits, status);
  (void)ec;
  nghttp2_nv nv = {reinterpret_cast<uint8_t*>(const_cast<char*>(":status")),
                   reinterpret_cast<uint8_t*>(digits), 7, static_cast<size_t>(end - digits),
                   NGHTTP2_NV_FLAG_NONE};
  nghttp2_submit_response(s_, st.id, &nv, 1, nullptr);
  // RFC 9113 8.1: after a complete response, NO_ERROR asks the client to stop sending the body
  // (submitted from on_frame_send: nghttp2 would send a RST_STREAM queued now first).
  st.stop_peer = !end_stream;
}

void Session::reject(Stream& st, ErrorCode code) {
  if (st.rejected) return;
  st.rejected = true;  // counted in stats_ when the RST_STREAM goes out
  nghttp2_submit_rst_stream(s_, NGHTTP2_FLAG_NONE, st.id, static_cast<uint32_t>(code));
}

int Session::on_data_chunk(nghttp2_session* session, uint8_t, int32_t id, const uint8_t* data,
                           size_t len, void* user) {
  auto& self = *static_cast<Session*>(user);
  Stream* st = self.find(id);
  if (st == nullptr || !st->announced || st->owner_reset || st->rejected || self.ended()) {
    nghttp2_session_consume(session, id, len);  // nobody reads it: give the window back
    return 0;
  }
  st->unconsumed += len;
  self.events_.on_data(id, view(data, len));
  return 0;
}

int Session::on_stream_close(nghttp2_session*, int32_t id, uint32_t code, void* user) {
  auto& self = *static_cast<Session*>(user);
  auto it = self.streams_.find(id);
  if (it == self.streams_.end()) return 0;
  std::unique_ptr<Stream> st = std::move(it->second);
  self.streams_.erase(it);
  self.buffered_ -= st->queued();
  self.connection_unconsumed_ += st->unconsumed;
  if (!st->announced) return 0;

  auto error = static_cast<ErrorCode>(code);
  StreamEnd how = StreamEnd::Complete;
  if (self.ended()) {
    // Terminated or failed earlier in this call: closed like the rest by after_failure()
    // (nghttp2 may still close a stream whose last frame it was processing).
    how = StreamEnd::SessionEnded;
    error = self.dead_ ? self.end_code_ : self.status_.code;
  } else if (st->owner_reset || st->send_failed) {
    how = StreamEnd::LocalReset;
  } else if (st->peer_reset || (self.goaway_received_ && error == ErrorCode::RefusedStream)) {
    how = StreamEnd::PeerReset;
  } else if (st->rejected || error != ErrorCode::NoError) {
    how = StreamEnd::Rejected;
    // A stream the owner is working on, reset because of something the peer sent (a DATA
    // frame beyond content-length, a window overflow ...): as costly as a rapid reset
    // ("MadeYouReset"), so it spends the same budget.
    if (self.role_ == Role::Server) self.take_reset_token();
  }
  self.events_.on_stream_close(id, how, error);
  return 0;
}

// --- sending ---

void Session::pending_output(std::string& out) {
  // From inside an event: nothing (out_ may be the very buffer the outer call is filling).
  if (busy_) return;
  if (!out_.empty()) {
    if (out.empty()) {
      out.swap(out_);
    } else {
      out += out_;
      out_.clear();
    }
  }
  if (s_ == nullptr) return;
  busy_ = true;
  const size_t start = out.size();
  do {
    serialise(out, limits_.output_chunk - std::min(limits_.output_chunk, out.size() - start));
  } while (settle() && out.size() - start < limits_.output_chunk);
  busy_ = false;
  after_failure();
}

void Session::serialise(std::string& dst, size_t budget) {
  const size_t start = dst.size();
  while (dst.size() - start < budget) {
    const uint8_t* data = nullptr;
    const ssize_t n = nghttp2_session_mem_send(s_, &data);
    if (n < 0) {
      if (status_.ok()) fail_from_library(static_cast<int>(n));
      break;
    }
    if (n == 0) break;
    dst.append(reinterpret_cast<const char*>(data), static_cast<size_t>(n));
  }
}

void Session::serialise_control() {
  suppress_data_ = true;
  serialise(out_, SIZE_MAX);
  suppress_data_ = false;
  for (StreamId id : suppressed_) {
    Stream* st = find(id);
    if (st != nullptr && st->deferred && (st->queued() > 0 || st->out_ended)) {
      st->deferred = false;
      nghttp2_session_resume_data(s_, id);
    }
  }
  suppressed_.clear();
}

bool Session::settle() {
  bool worked = false;
  if (connection_unconsumed_ > 0 && !dead_) {
    nghttp2_session_consume_connection(s_, connection_unconsumed_);
    connection_unconsumed_ = 0;
    worked = true;
  }
  if (waiting_ > 0 && !ended()) {
    std::vector<StreamId> ready;
    for (auto& [id, st] : streams_) {
      if (st->waiting && has_room(*st)) ready.push_back(id);
    }
    for (StreamId id : ready) {
      if (ended()) break;  // an event terminated the session: no more events
      Stream* st = find(id);
      // An earlier stream's event may have filled the session buffer again: wait for room.
      if (st == nullptr || !st->waiting || !has_room(*st)) continue;
      st->waiting = false;
      events_.on_send_ready(id);
      worked = true;
    }
    waiting_ = static_cast<size_t>(std::count_if(
        streams_.begin(), streams_.end(), [](const auto& kv) { return kv.second->waiting; }));
  }
  return worked;
}

ssize_t Session::read_body(nghttp2_session* session, int32_t id, uint8_t* buf, size_t length,
                           uint32_t* flags, nghttp2_data_source*, void* user) {
  auto& self = *static_cast<Session*>(user);
  Stream* st = self.find(id);
  if (st == nullptr) return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;  // resets the stream
  if (self.suppress_data_) {
    st->deferred = true;
    self.suppressed_.push_back(id);
    return NGHTTP2_ERR_DEFERRED;
  }
  const size_t n = std::min(length, st->queued());
  std::memcpy(buf, st->out.data() + st->out_pos, n);
  st->out_pos += n;
  self.buffered_ -= n;
  if (st->out_pos == st->out.size()) {
    st->out.clear();
    st->out_pos = 0;
  } else if (st->out_pos >= 16384 && st->out_pos * 2 >= st->out.size()) {
    st->out.erase(0, st->out_pos);
    st->out_pos = 0;
  }
  if (st->queued() == 0 && st->out_ended) {
    *flags |= NGHTTP2_DATA_FLAG_EOF;
    if (st->has_trailers) {
      auto& nv = st->trailers.nvs();
      if (nghttp2_submit_trailer(session, id, nv.data(), nv.size()) == 0) {
        *flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
      }
    }
  } else if (n == 0) {
    st->deferred = true;
    return NGHTTP2_ERR_DEFERRED;
  }
  return static_cast<ssize_t>(n);
}

int Session::on_frame_send(nghttp2_session*, const nghttp2_frame* frame, void* user) {
  auto& self = *static_cast<Session*>(user);
  if (frame->hd.type == NGHTTP2_HEADERS) {
    Stream* st = self.find(frame->hd.stream_id);
    if (st != nullptr && st->stop_peer && (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0) {
      st->stop_peer = false;
      nghttp2_submit_rst_stream(self.s_, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_NO_ERROR);
    }
  } else if (frame->hd.type == NGHTTP2_RST_STREAM) {
    const Stream* st = self.find(frame->hd.stream_id);
    const uint32_t code = frame->rst_stream.error_code;
    if (st == nullptr && code == NGHTTP2_REFUSED_STREAM) {
      ++self.stats_.refused;  // nghttp2 refused it: over max_concurrent_streams
    } else if (code != NGHTTP2_NO_ERROR && (st == nullptr || !st->owner_reset)) {
      ++self.stats_.rejected;  // malformed (nghttp2's checks or ours) or over a limit
    }
  } else if (frame->hd.type == NGHTTP2_GOAWAY && frame->goaway.error_code != NGHTTP2_NO_ERROR &&
             self.status_.ok() && !self.owner_terminated_) {
    // nghttp2 found a connection error itself (it tells only by sending GOAWAY).
    const auto code = static_cast<ErrorCode>(frame->goaway.error_code);
    self.status_ = {code == ErrorCode::EnhanceYourCalm ? Failure::Flood : Failure::Protocol, code,
                    "protocol error"};
  }
  return 0;
}

int Session::on_frame_not_send(nghttp2_session*, const nghttp2_frame* frame, int, void* user) {
  auto& self = *static_cast<Session*>(user);
  if (frame->hd.type != NGHTTP2_HEADERS) return 0;
  // A head we submitted cannot go out (e.g. a header block over 64 KiB): the stream is dead.
  if (Stream* st = self.find(frame->hd.stream_id); st != nullptr && !st->send_failed) {
    st->send_failed = true;
    nghttp2_submit_rst_stream(self.s_, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_INTERNAL_ERROR);
  }
  return 0;
}

int Session::on_error(nghttp2_session*, int, const char* msg, size_t len, void* user) {
  static_cast<Session*>(user)->last_error_.assign(msg, len);
  return 0;
}

Submit Session::submit_response(StreamId id, int status, std::span<const Header> headers,
                                Body body) {
  Stream* st = find(id);
  if (dead_ || st == nullptr || !st->announced || st->head_submitted || st->owner_reset) {
    return Submit::Closed;
  }
  if (status < 200 || status > 599) return Submit::Invalid;
  char digits[4];
  auto [end, ec] = std::to_chars(digits, digits + sizeof digits, status);
  (void)ec;
  OutFields fields;
  fields.add(":status", std::string_view(digits, static_cast<size_t>(end - digits)));
  fields.add_regular(headers, false);
  auto& nv = fields.nvs();
  nghttp2_data_provider provider{};
  provider.read_callback = read_body;
  if (nghttp2_submit_response(s_, id, nv.data(), nv.size(),
                              body == Body::Follows ? &provider : nullptr) != 0) {
    return Submit::Closed;
  }
  st->head_submitted = true;
  st->body_open = body == Body::Follows;
  return Submit::Ok;
}

ClientSession::Opened Session::submit_request(const Request& request, Body body) {
  if (dead_ || goaway_received_) return {0, Submit::Closed};
  const bool connect = request.method == "CONNECT"sv;
  if (request.method.empty() || request.authority.empty() || request.scheme.empty() ||
      request.path.empty() || connect != !request.protocol.empty()) {
    return {0, Submit::Invalid};  // plain CONNECT is not offered; extended needs :protocol
  }
  OutFields fields;
  fields.add(":method", request.method);
  fields.add(":scheme", request.scheme);
  fields.add(":authority", request.authority);
  fields.add(":path", request.path);
  if (connect) fields.add(":protocol", request.protocol);
  fields.add_regular(request.headers, true);
  auto& nv = fields.nvs();
  nghttp2_data_provider provider{};
  provider.read_callback = read_body;
  const int32_t id = nghttp2_submit_request(s_, nullptr, nv.data(), nv.size(),
                                            body == Body::Follows ? &provider : nullptr, nullptr);
  if (id < 0) return {0, Submit::Closed};  // stream ids exhausted
  auto st = std::make_unique<Stream>(id);
  st->announced = true;
  st->head_submitted = true;
  st->body_open = body == Body::Follows;
  streams_.emplace(id, std::move(st));
  ++stats_.streams;
  return {id, Submit::Ok};
}

Send Session::submit_data(StreamId id, std::string_view data, EndStream end) {
  Stream* st = find(id);
  if (dead_ || st == nullptr || !st->body_open || st->owner_reset) return Send::Closed;
  if (!data.empty() && !has_room(*st)) {
    if (!st->waiting) st->waiting = true, ++waiting_;
    return Send::Blocked;
  }
  st->out.append(data);
  buffered_ += data.size();
  if (end == EndStream::Yes) {
    st->out_ended = true;
    st->body_open = false;
  }
  if (st->deferred && (st->queued() > 0 || st->out_ended)) {
    st->deferred = false;
    nghttp2_session_resume_data(s_, id);
  }
  if (!st->out_ended && !has_room(*st)) {
    if (!st->waiting) st->waiting = true, ++waiting_;
    return Send::Full;
  }
  return Send::Ready;
}

Submit Session::submit_trailers(StreamId id, std::span<const Header> fields) {
  Stream* st = find(id);
  if (dead_ || st == nullptr || st->owner_reset) return Submit::Closed;
  // Before the head: out of order. After a head without body, or after the body ended: done.
  if (!st->body_open) return st->head_submitted ? Submit::Closed : Submit::Invalid;
  st->trailers.add_regular(fields, false);
  st->has_trailers = true;
  st->out_ended = true;
  st->body_open = false;
  if (st->deferred) {
    st->deferred = false;
    nghttp2_session_resume_data(s_, id);
  }
  return Submit::Ok;
}

void Session::consume(StreamId id, size_t n) {
  Stream* st = find(id);
  if (dead_ || st == nullptr) return;
  n = std::min<size_t>(n, st->unconsumed);
  if (n == 0) return;
  st->unconsumed -= n;
  nghttp2_session_consume(s_, id, n);
}

void Session::reset_stream(StreamId id, ErrorCode code) {
  Stream* st = find(id);
  if (dead_ || st == nullptr || st->owner_reset) return;
  st->owner_reset = true;
  st->body_open = false;
  st->waiting = false;
  buffered_ -= st->queued();
  st->out.clear();
  st->out_pos = 0;
  // Nothing reads the rest of its body: its unconsumed bytes go back to the windows.
  if (st->unconsumed > 0) nghttp2_session_consume(s_, id, st->unconsumed);
  st->unconsumed = 0;
  nghttp2_submit_rst_stream(s_, NGHTTP2_FLAG_NONE, id, static_cast<uint32_t>(code));
}

void Session::terminate(ErrorCode code) {
  if (dead_) return;
  owner_terminated_ = true;
  nghttp2_session_terminate_session(s_, static_cast<uint32_t>(code));
  dead_ = true;
  end_code_ = code;
  after_failure();  // now, or when the receive() / pending_output() we are inside returns
}

void Session::shutdown() {
  if (dead_ || role_ != Role::Server || shutdown_pending_) return;
  if (nghttp2_submit_shutdown_notice(s_) != 0) return;  // a GOAWAY went out already
  shutdown_pending_ = true;
  nghttp2_submit_ping(s_, NGHTTP2_FLAG_NONE, k_shutdown_ping);
}

void Session::complete_shutdown() {
  if (dead_ || !shutdown_pending_) return;
  shutdown_pending_ = false;
  nghttp2_submit_goaway(s_, NGHTTP2_FLAG_NONE, nghttp2_session_get_last_proc_stream_id(s_),
                        NGHTTP2_NO_ERROR, nullptr, 0);
}

// --- failures ---

bool Session::take_reset_token() {
  const uint32_t rate = limits_.max_resets_per_second;
  if (rate == 0) return true;
  if (reset_refill_ != Clock::time_point{}) {
    const double elapsed = std::chrono::duration<double>(now_ - reset_refill_).count();
    if (elapsed > 0) reset_tokens_ = std::min<double>(rate, reset_tokens_ + elapsed * rate);
  }
  reset_refill_ = now_;
  if (reset_tokens_ >= 1) {
    reset_tokens_ -= 1;
    return true;
  }
  fail(Failure::Flood, ErrorCode::EnhanceYourCalm, "rapid reset");
  return false;
}

void Session::fail(Failure failure, ErrorCode code, std::string_view reason) {
  if (!status_.ok()) return;
  status_ = {failure, code, reason};
  if (s_ != nullptr) nghttp2_session_terminate_session(s_, static_cast<uint32_t>(code));
}

void Session::fail_from_library(int lib_error) {
  if (last_error_.empty()) last_error_ = nghttp2_strerror(lib_error);
  switch (lib_error) {
    case NGHTTP2_ERR_FLOODED:
      fail(Failure::Flood, ErrorCode::EnhanceYourCalm, "control frame flood");
      break;
    case NGHTTP2_ERR_TOO_MANY_CONTINUATIONS:
      fail(Failure::Flood, ErrorCode::EnhanceYourCalm, "CONTINUATION flood");
      break;
    case NGHTTP2_ERR_BAD_CLIENT_MAGIC:
      fail(Failure::Protocol, ErrorCode::ProtocolError, "bad connection preface");
      break;
    case NGHTTP2_ERR_NOMEM:
      fail(Failure::Internal, ErrorCode::InternalError, "out of memory");
      break;
    default:
      fail(Failure::Internal, ErrorCode::InternalError, "nghttp2 failure");
      break;
  }
}

void Session::after_failure() {
  if (busy_) return;
  if (!status_.ok() && !dead_) {
    dead_ = true;
    end_code_ = status_.code;
  }
  if (dead_) end_streams(end_code_);
}

void Session::end_streams(ErrorCode code) {
  if (ending_streams_ || streams_.empty()) return;
  ending_streams_ = true;
  std::vector<StreamId> ids;
  for (auto& [id, st] : streams_) {
    if (st->announced) ids.push_back(id);
  }
  std::sort(ids.begin(), ids.end());
  for (StreamId id : ids) {
    auto it = streams_.find(id);
    if (it == streams_.end()) continue;
    std::unique_ptr<Stream> st = std::move(it->second);
    streams_.erase(it);
    buffered_ -= st->queued();
    events_.on_stream_close(id, StreamEnd::SessionEnded, code);
  }
  ending_streams_ = false;
}

}  // namespace detail

// --- public classes ---

SessionBase::SessionBase(std::unique_ptr<detail::Session> impl) : impl_(std::move(impl)) {}
SessionBase::~SessionBase() = default;

void SessionBase::pending_output(std::string& out) { impl_->pending_output(out); }
bool SessionBase::want_write() const { return impl_->want_write(); }
bool SessionBase::want_read() const { return impl_->want_read(); }
Send SessionBase::submit_data(StreamId stream, std::string_view data, EndStream end) {
  return impl_->submit_data(stream, data, end);
}
Submit SessionBase::submit_trailers(StreamId stream, std::span<const Header> fields) {
  return impl_->submit_trailers(stream, fields);
}
size_t SessionBase::buffered(StreamId stream) const { return impl_->buffered(stream); }
void SessionBase::consume(StreamId stream, size_t n) { impl_->consume(stream, n); }
void SessionBase::reset_stream(StreamId stream, ErrorCode code) {
  impl_->reset_stream(stream, code);
}
void SessionBase::terminate(ErrorCode code) { impl_->terminate(code); }
Status SessionBase::status() const { return impl_->status(); }
const Stats& SessionBase::stats() const { return impl_->stats(); }
std::string_view SessionBase::last_error() const { return impl_->last_error(); }
size_t SessionBase::open_streams() const { return impl_->open_streams(); }

ServerSession::ServerSession(const Limits& limits, ServerEvents& events)
    : SessionBase(std::make_unique<detail::Session>(detail::Role::Server, limits, events, &events,
                                                    nullptr)) {}

Status ServerSession::receive(std::span<const char> bytes, Clock::time_point now) {
  return impl_->receive(bytes, now);
}
Submit ServerSession::submit_response(StreamId stream, int status, std::span<const Header> headers,
                                      Body body) {
  return impl_->submit_response(stream, status, headers, body);
}
void ServerSession::shutdown() { impl_->shutdown(); }
void ServerSession::complete_shutdown() { impl_->complete_shutdown(); }

ClientSession::ClientSession(const Limits& limits, ClientEvents& events)
    : SessionBase(std::make_unique<detail::Session>(detail::Role::Client, limits, events, nullptr,
                                                    &events)) {}

Status ClientSession::receive(std::span<const char> bytes) {
  return impl_->receive(bytes, Clock::now());
}
ClientSession::Opened ClientSession::submit_request(const Request& request, Body body) {
  return impl_->submit_request(request, body);
}
bool ClientSession::accepting_streams() const { return impl_->accepting_streams(); }
uint32_t ClientSession::peer_max_concurrent_streams() const {
  return impl_->peer_max_concurrent_streams();
}

}  // namespace sluice::http::h2

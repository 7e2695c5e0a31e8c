// HTTP/2 sessions without I/O: nghttp2 framing, HPACK and flow control behind a bytes-in /
// bytes-out interface, plus the request validation and abuse limits a gateway needs on top.
// No sockets, no timers, no Asio: the owner (a coroutine per connection) moves bytes and
// decides about time; the session only says what happened and what to write.
//
//   struct Handler : h2::ServerEvents { ... };      // on_request, on_data, on_stream_close ...
//   Handler handler;
//   h2::ServerSession session(limits, handler);     // queues our SETTINGS
//   std::string out;
//   for (;;) {
//     session.pending_output(out);                  // frames to send (SETTINGS, responses ...)
//     if (!out.empty()) co_await write(socket, out), out.clear();
//     if (!session.want_read() && !session.want_write()) break;     // done: close
//     size_t n = co_await read_some(socket, buf);
//     if (n == 0) break;                                            // peer closed
//     if (auto st = session.receive({buf, n}); !st.ok()) {          // GOAWAY already queued:
//       session.pending_output(out), co_await write(socket, out);   //   flush it and close
//       break;
//     }
//   }
//   // In the events: session.submit_response(id, 200, headers, h2::Body::Follows),
//   // session.submit_data(id, bytes, h2::EndStream::Yes), session.consume(id, n) ...
//
// A real loop reads and writes concurrently (a reader that calls receive(), a writer woken when
// want_write() turns true), because a peer may stop reading until it gets WINDOW_UPDATEs.
//
// Threading and re-entrancy: a session belongs to one connection on one worker; nothing here is
// thread-safe. Events are called only from inside receive(), pending_output() and terminate().
// An event may call any method of the session (on any stream) except receive() and
// pending_output(), which do nothing there; it must not destroy the session.
// Destroying a session drops its streams without events.
//
// Vocabulary (STYLE.md): a *session* is the HTTP/2 state of one connection; a *stream* carries
// one request and its response. The *peer* is the other end of this connection: the downstream
// client for a ServerSession, the upstream server for a ClientSession.
//
// Bodies in both directions have backpressure:
//  - receiving: every on_data byte stays counted against the stream's and the session's receive
//    windows until the owner calls consume(stream, n) - call it as bytes are forwarded, and a slow
//    upstream slows the downstream client down. A stream that closes returns its unconsumed bytes
//    to the session window by itself.
//  - sending: submit_data() copies into a per-stream buffer that drains as the peer's flow-control
//    windows allow. It answers Full when the stream (or the whole session) holds its bound; stop
//    producing until on_send_ready(stream).
//
// Abuse limits and where each comes from (see Limits for the values):
//  - concurrent streams: nghttp2 (our SETTINGS_MAX_CONCURRENT_STREAMS; more -> RST_STREAM
//    REFUSED_STREAM while the peer has not acknowledged the setting, a connection error -
//    GOAWAY PROTOCOL_ERROR - once it has; the owner never sees them).
//  - header list size: this file (SETTINGS_MAX_HEADER_LIST_SIZE is advisory to nghttp2; we count
//    name + value + 32 per field, RFC 9113 6.5.2): a request head over it is answered 431 here,
//    trailers / a response head over it reset the stream.
//  - CONTINUATION flood: nghttp2 max_continuations (CVE-2024-28182) -> connection error.
//  - rapid reset (CVE-2023-44487) and provoked resets ("MadeYouReset"): this file, a token bucket
//    of max_resets_per_second fed by RST_STREAM from the peer and by stream errors the peer
//    caused -> GOAWAY ENHANCE_YOUR_CALM. nghttp2's own limiter is kept as a looser backstop.
//  - SETTINGS / PING flood: nghttp2 max_outbound_ack (ACKs owed within one receive() call) and
//    max_settings (entries per SETTINGS frame); across calls, max_output_backlog below.
//  - empty DATA frames: this file, max_empty_frames in a row -> GOAWAY ENHANCE_YOUR_CALM.
//  - buffered output: this file, stream_buffer / session_buffer for bodies (backpressure) and
//    max_output_backlog for the other frames (ACKs, RST_STREAM, heads) that pile up while the
//    owner does not drain pending_output() -> GOAWAY ENHANCE_YOUR_CALM.
//  - HTTP messaging (pseudo-headers present and well-formed, lower-case names, no
//    connection-specific fields, te only "trailers", content-length matches DATA): nghttp2;
//    :authority/host agreement, CONNECT policy: this file. A malformed stream is reset with
//    PROTOCOL_ERROR and never reaches the owner.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>

#include "http/message.h"

namespace sluice::http::h2 {

using StreamId = int32_t;
using Clock = std::chrono::steady_clock;

// RFC 9113 section 7 error codes (RST_STREAM, GOAWAY).
enum class ErrorCode : uint32_t {
  NoError = 0x0,
  ProtocolError = 0x1,
  InternalError = 0x2,
  FlowControlError = 0x3,
  SettingsTimeout = 0x4,
  StreamClosed = 0x5,
  FrameSizeError = 0x6,
  RefusedStream = 0x7,  // nothing of the stream was processed: safe to retry elsewhere
  Cancel = 0x8,
  CompressionError = 0x9,
  ConnectError = 0xa,
  EnhanceYourCalm = 0xb,
  InadequateSecurity = 0xc,
  Http11Required = 0xd,
};
std::string_view to_string(ErrorCode code);

// The client connection preface (RFC 9113 3.4). On a cleartext listener with http2 enabled, the
// first bytes tell h2c prior knowledge ("PRI * HTTP/2.0...") from HTTP/1.
inline constexpr std::string_view k_client_preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
enum class Preface : uint8_t {
  H2,       // all 24 bytes are the preface: hand everything (preface included) to a ServerSession
  Http1,    // not the preface: an HTTP/1 connection
  NeedMore  // a proper prefix of the preface so far: read more before deciding
};
Preface detect_preface(std::string_view first_bytes);
inline bool is_h2_preface(std::string_view first_bytes) {
  return detect_preface(first_bytes) == Preface::H2;
}

struct Limits {
  // Advertised in our SETTINGS and enforced.
  uint32_t max_concurrent_streams = 100;     // server: peer-opened streams; more are REFUSED_STREAM
  uint32_t max_header_list_size = 64 << 10;  // per header block, RFC 9113 6.5.2 accounting
  uint32_t initial_window = 256 << 10;       // receive window per stream (request/response body)
  uint32_t connection_window = 1 << 20;      // receive window of the whole session
  uint32_t max_frame_size = 16384;           // largest frame the peer may send us
  bool enable_connect_protocol = false;  // server: RFC 8441 extended CONNECT (:protocol websocket)

  // Abuse limits (0 turns off the ones kept in this file).
  uint32_t max_resets_per_second = 100;  // server: peer-caused stream resets, burst = 1 s worth
  uint32_t max_empty_frames = 10;        // consecutive DATA frames without payload or END_STREAM
  uint32_t max_continuations = 8;        // CONTINUATION frames per header block (nghttp2)
  uint32_t max_settings_entries = 32;    // entries per SETTINGS frame (nghttp2)
  uint32_t max_outbound_acks = 1000;     // SETTINGS/PING ACKs queued and not yet output (nghttp2)
  size_t max_output_backlog = 1 << 20;   // bytes of frames other than DATA that receive()
                                         // produced and pending_output() has not taken yet
                                         // (keep it well above max_concurrent_streams x the
                                         // size of a response head; 0 = no bound)

  // Output buffering.
  size_t stream_buffer = 64 << 10;  // body bytes queued per stream before submit_data says Full
  size_t session_buffer = 1 << 20;  // the same for all streams of the session together
  size_t output_chunk = 64 << 10;   // pending_output() appends about this much per call
};

// Whether a body (DATA and/or trailers) follows a head.
enum class Body : uint8_t { None, Follows };
enum class EndStream : uint8_t { No, Yes };

// A request head. Received (ServerEvents::on_request): validated, every view valid only during
// the call - copy what must outlive it. Submitted (ClientSession::submit_request): the views
// need to live only during the call.
struct Request {
  std::string_view method;
  std::string_view scheme;     // "http" / "https" (nghttp2 checked its syntax, not its value)
  std::string_view authority;  // received: :authority, or the host header when absent
  std::string_view path;       // :path as sent: origin-form with query, or "*" for OPTIONS
  std::string_view protocol;   // :protocol of an extended CONNECT (RFC 8441), else empty
  // Regular fields. Received: lower-case names, no connection-specific fields, several cookie
  // fields joined into one with "; " (RFC 9113 8.2.3). Submitted: any case (lower-cased here);
  // connection-specific fields, those named in `connection`, and host (carried as :authority)
  // are dropped, so an HTTP/1 head can be passed as it is.
  std::span<const Header> headers;
};

// A final response head (1xx interim responses are not reported). Same lifetimes as Request.
struct Response {
  int status = 0;
  std::span<const Header> headers;
};

// How a stream ended, as told by on_stream_close.
enum class StreamEnd : uint8_t {
  Complete,      // both sides finished normally
  PeerReset,     // the peer reset it (RST_STREAM), or a GOAWAY excluded it (client side:
                 // code RefusedStream = never processed, safe to retry on another connection)
  Rejected,      // the session reset it: the peer's message was malformed or over a limit
  LocalReset,    // the owner called reset_stream(), or a head it submitted could not be sent
  SessionEnded,  // the session failed or was torn down before the stream finished
};

// What submit_data() did with the bytes.
enum class Send : uint8_t {
  Ready,    // queued; the stream can take more
  Full,     // queued; the stream's (or the session's) buffer is at its bound: wait for
            // on_send_ready(stream) before the next submit_data()
  Blocked,  // nothing queued: the buffer was already at its bound (Full was ignored)
  Closed,   // nothing queued: no such stream, no body announced, body already ended, or reset
};

// What submit_response/submit_request/submit_trailers did.
enum class Submit : uint8_t {
  Ok,
  Closed,   // the stream is gone, already answered, or the session no longer takes streams
  Invalid,  // bad arguments: status out of 200..599, trailers without Body::Follows, ...
};

// Why a session failed. The session is dead afterwards: flush pending_output() (the GOAWAY) and
// close the connection.
enum class Failure : uint8_t {
  None,
  Protocol,  // the peer broke HTTP/2 (framing, HPACK, flow control, bad preface ...)
  Flood,     // the peer exceeded an abuse limit: GOAWAY ENHANCE_YOUR_CALM
  Internal,  // out of memory, or a bug
};

struct Status {
  Failure failure = Failure::None;
  ErrorCode code = ErrorCode::NoError;  // the code of our GOAWAY
  std::string_view reason;              // short static text for logs, e.g. "rapid reset"
  bool ok() const { return failure == Failure::None; }
};

// Counters for metrics and the access log ("count, don't crash").
struct Stats {
  uint64_t streams = 0;          // streams shown to the owner (requests received / submitted)
  uint64_t refused = 0;          // RST_STREAM REFUSED_STREAM sent: over max_concurrent_streams
  uint64_t resets_received = 0;  // RST_STREAM frames from the peer
  uint64_t rejected = 0;         // streams the session reset (malformed, over a limit) or
                                 // answered itself (431, 501 for CONNECT)
};

// Events shared by both roles. Defaults do nothing. `stream` is always one the owner has seen
// (on_request, or a submit_request result).
class Events {
 public:
  virtual ~Events() = default;
  // A chunk of the peer's body. `data` is valid only during the call. Its bytes stay counted
  // against the receive windows until consume(stream, n).
  virtual void on_data(StreamId /*stream*/, std::string_view /*data*/) {}
  // Trailer fields; on_end_stream follows. Views valid only during the call.
  virtual void on_trailers(StreamId /*stream*/, std::span<const Header> /*fields*/) {}
  // The peer finished its side of the stream (after its last on_data / on_trailers). At most
  // once per stream; also after a head that came with Body::None.
  virtual void on_end_stream(StreamId /*stream*/) {}
  // A stream that got Full or Blocked from submit_data() can take more.
  virtual void on_send_ready(StreamId /*stream*/) {}
  // The stream is gone: exactly once per stream the owner has seen, last of its events. Later
  // submissions on it answer Closed.
  virtual void on_stream_close(StreamId /*stream*/, StreamEnd /*how*/, ErrorCode /*code*/) {}
  // The peer sent GOAWAY: no new streams on this session; streams above `last_stream` were not
  // processed (client side: they are closed with PeerReset / RefusedStream right after this).
  virtual void on_goaway(StreamId /*last_stream*/, ErrorCode /*code*/) {}
};

class ServerEvents : public Events {
 public:
  // A new request passed validation. `body` says whether DATA/trailers follow. Answer with
  // submit_response() (now or later), or reset_stream().
  virtual void on_request(StreamId /*stream*/, const Request& /*request*/, Body /*body*/) {}
};

class ClientEvents : public Events {
 public:
  // The final response head for a stream from submit_request().
  virtual void on_response(StreamId /*stream*/, const Response& /*response*/, Body /*body*/) {}
};

namespace detail {
class Session;
}

// The methods below are shared by ServerSession and ClientSession.
class SessionBase {
 public:
  SessionBase(const SessionBase&) = delete;
  SessionBase& operator=(const SessionBase&) = delete;

  // Bytes to write to the connection are appended to `out` (about Limits::output_chunk per call;
  // call again while want_write()). Serialising frames drains body buffers, so on_send_ready
  // and on_stream_close may be called from here - and a stream reset found here can spend the
  // last of the reset budget: check status() if it matters, or just follow want_read/write.
  void pending_output(std::string& out);
  // nghttp2 has frames to send (not counting bodies waiting for a flow-control window).
  bool want_write() const;
  // The session expects more input. When neither want_read() nor want_write(): close.
  bool want_read() const;

  // Queues body bytes (copied) for a stream whose head was submitted with Body::Follows.
  // EndStream::Yes ends the body (an empty `data` is fine for that).
  Send submit_data(StreamId stream, std::string_view data, EndStream end);
  // Trailer fields ending a body (gRPC's grpc-status). Same rules as submit_data: the head was
  // submitted with Body::Follows and the body is not ended yet; queued body bytes go first.
  Submit submit_trailers(StreamId stream, std::span<const Header> fields);
  // Body bytes queued for `stream` and not yet handed to nghttp2.
  size_t buffered(StreamId stream) const;

  // The owner forwarded `n` bytes of the stream's received body: reopen that much window.
  void consume(StreamId stream, size_t n);
  // Resets a stream (RST_STREAM). Its on_stream_close(LocalReset) follows.
  void reset_stream(StreamId stream, ErrorCode code);

  // Ends the session at once: GOAWAY with `code`, every open stream is closed (SessionEnded).
  void terminate(ErrorCode code);

  // Sticky: the first failure, or ok.
  Status status() const;
  const Stats& stats() const;
  // nghttp2's description of the last error it reported, for the error log.
  std::string_view last_error() const;

  // Streams open now (not yet closed).
  size_t open_streams() const;

 protected:
  explicit SessionBase(std::unique_ptr<detail::Session> impl);
  ~SessionBase();
  std::unique_ptr<detail::Session> impl_;
};

// The server side of one downstream connection (h2 over TLS, or h2c prior knowledge).
class ServerSession : public SessionBase {
 public:
  // Queues our SETTINGS (and the session WINDOW_UPDATE). `events` must outlive the session.
  ServerSession(const Limits& limits, ServerEvents& events);

  // Feeds received bytes (the client preface first). `now` drives the reset-rate limit. Events
  // are called from here. Not ok: GOAWAY is queued (flush pending_output) and every open stream
  // got on_stream_close(SessionEnded); later calls return the same status.
  Status receive(std::span<const char> bytes, Clock::time_point now = Clock::now());

  // A response head. Body::None ends the stream; Body::Follows: submit_data / submit_trailers.
  // Header names may be in any case (lower-cased here); connection-specific fields are dropped.
  Submit submit_response(StreamId stream, int status, std::span<const Header> headers, Body body);

  // Graceful shutdown (RFC 9113 6.8): GOAWAY(2^31-1) and a PING now; when the PING is
  // acknowledged, the final GOAWAY names the last stream we received, so requests in flight in
  // the meantime still complete. Open streams finish normally; then want_read() and
  // want_write() turn false. The owner bounds the wait (shutdown_timeout) and terminate()s.
  void shutdown();
  // The final GOAWAY of a shutdown() now, without waiting for the PING's acknowledgement (a
  // client that never answers it must not hold the connection open). No-op otherwise.
  void complete_shutdown();
};

// The client side of one upstream connection (h2 over TLS, or h2c prior knowledge).
class ClientSession : public SessionBase {
 public:
  // Queues the client preface and our SETTINGS (push disabled). `events` must outlive it.
  ClientSession(const Limits& limits, ClientEvents& events);

  Status receive(std::span<const char> bytes);

  // Opens a stream. Body::Follows: send the body with submit_data / submit_trailers. The request
  // needs method, scheme, authority and path; CONNECT only as extended CONNECT (with protocol).
  struct Opened {
    StreamId stream = 0;         // 0 unless result is Ok
    Submit result = Submit::Ok;  // Closed: GOAWAY received or session dead, use another
                                 // connection; Invalid: bad head
  };
  Opened submit_request(const Request& request, Body body);

  // No GOAWAY received and not failed: new requests may go on this session.
  bool accepting_streams() const;
  // The peer's SETTINGS_MAX_CONCURRENT_STREAMS (requests beyond it wait in nghttp2's queue).
  uint32_t peer_max_concurrent_streams() const;
};

}  // namespace sluice::http::h2

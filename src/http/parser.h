// Strict RFC 9112 HTTP/1 parsing: request heads from clients, response heads from upstreams, and
// chunked bodies from either.
//
//   http::RequestParser parser;                      // one per connection
//   http::RequestHead head;
//   auto r = parser.parse(read_buffer, head);        // call again as bytes arrive
//   if (r.status == ParseStatus::Error) reply(r.error_status, r.error), close();
//   if (r.status == ParseStatus::Done) body starts at read_buffer[r.consumed]; parser.reset();
//
// The parsers never allocate beyond the headers vector and never copy: every string_view in a
// head points into the caller's buffer (one exception: an absolute-form target without a path
// yields path "/", a static string). A message that could be read two ways is an error, never
// guessed at: that is what keeps request smuggling out (SPEC.md section 3).
//
// All classes are single-connection state machines: not thread-safe, cheap to reset and reuse.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "http/message.h"

namespace sluice::http {

struct ParserLimits {
  size_t max_request_line = 8192;   // start line without its CRLF (414 for requests)
  size_t max_header_bytes = 32768;  // whole head incl. start line and final CRLFCRLF (431)
  size_t max_headers = 100;         // header field lines (431)
};

enum class ParseStatus { Incomplete, Done, Error };

struct ParseResult {
  ParseStatus status = ParseStatus::Incomplete;
  size_t consumed = 0;     // when Done: bytes of the head including the final CRLFCRLF (and any
                           // leading empty lines)
  int error_status = 0;    // when Error: 400, 414, 431, 417, 501 or 505 (requests); 502 (responses)
  std::string_view error;  // when Error: short static reason, e.g. "obs-fold in header"
};

namespace detail {
// Progress of the incremental search for the end of a head. Shared by both parsers so that a
// head arriving a few bytes at a time is scanned once, not once per arrival.
struct HeadScan {
  size_t pos = 0;             // next byte to examine
  size_t line_start = 0;      // first byte of the line being scanned
  size_t head_start = 0;      // first byte of the start line (after leading empty lines)
  size_t start_line_end = 0;  // index of the start line's CR, valid once start_line_done
  size_t head_end = 0;        // one past the final CRLFCRLF; non-zero once the head is complete
  size_t header_lines = 0;    // header field lines seen so far
  size_t leading_empty = 0;   // empty lines skipped before the start line
  bool start_line_done = false;
};
}  // namespace detail

// Parses one request head at a time from a downstream connection.
class RequestParser {
 public:
  explicit RequestParser(ParserLimits limits = {});

  // `buf` holds everything received so far for this request, starting at its first byte. Call
  // again with the grown buffer after more bytes arrive (same starting point); scanning for the end
  // of the head resumes where it stopped, so a slowly arriving head costs O(n) overall. Limits are
  // enforced while Incomplete too, so an endless head fails as soon as it is too long. On Done,
  // `out` is filled (all its fields are overwritten). An Error is sticky until reset().
  ParseResult parse(std::string_view buf, RequestHead& out);

  // Before the next request on the connection (the next buffer starts at that request).
  void reset();

 private:
  ParserLimits limits_;
  detail::HeadScan scan_;
  ParseResult failed_;  // status Error once parsing failed
};

// Parses upstream response heads. Every error has error_status 502: whatever the upstream did
// wrong, the client gets a Bad Gateway and the upstream connection is closed.
class ResponseParser {
 public:
  explicit ResponseParser(ParserLimits limits = {});

  // Same calling convention as RequestParser::parse. `request_method` decides whether a body can
  // follow (none after HEAD). A 1xx head is Done like any other; reset() and parse the final one.
  ParseResult parse(std::string_view buf, ResponseHead& out, std::string_view request_method);
  void reset();

 private:
  ParserLimits limits_;
  detail::HeadScan scan_;
  ParseResult failed_;
};

// Incremental decoder of a chunked body (RFC 9112 section 7.1). Chunk extensions and trailer
// fields are validated and dropped; only payload bytes come out.
class ChunkedDecoder {
 public:
  explicit ChunkedDecoder(size_t max_trailer_bytes = 32768);

  struct Result {
    size_t consumed = 0;
    bool error = false;
    std::string_view reason;  // when error: short static reason
  };

  // Decodes as much of `in` as possible; appends views (into `in`) of decoded payload to `data`.
  // Returns how much of `in` was consumed; unconsumed bytes must be presented again with more bytes
  // appended. (This implementation keeps partial framing lines in its own state and so consumes
  // all of `in` until the body ends, but callers must rely only on `consumed`.) After the last
  // chunk and trailer section, done() is true and consumed stops at the end of the body
  // (pipelined bytes after it are not consumed). An error is sticky until reset().
  Result feed(std::string_view in, std::vector<std::string_view>& data);

  bool done() const;
  void reset();

  // Keep the trailer section (HTTP/2 and gRPC need trailers carried through): after done(),
  // trailers() holds its field lines as received, each ending in CRLF, without the final empty
  // line. Off by default (trailers are validated and dropped). Survives reset().
  void keep_trailers(bool on) { keep_trailers_ = on; }
  std::string_view trailers() const { return trailers_; }

 private:
  enum class State : uint8_t {
    Size,         // chunk-size hex digits
    SizeWs,       // BWS between chunk-size and ';'
    Ext,          // chunk-ext, up to CR
    SizeLf,       // LF ending the chunk-size line
    Data,         // chunk payload
    DataCr,       // CR after payload
    DataLf,       // LF after payload
    TrailerLine,  // start of a trailer field line, or CR of the final empty line
    TrailerName,
    TrailerValue,
    TrailerLf,
    EndLf,  // LF of the final empty line
    Done,
    Error,
  };

  size_t max_trailer_bytes_;
  State state_ = State::Size;
  uint64_t chunk_size_ = 0;  // of the chunk being read; then the bytes still to come in Data
  size_t size_digits_ = 0;
  size_t ext_bytes_ = 0;
  size_t trailer_bytes_ = 0;
  std::string_view error_;
  bool keep_trailers_ = false;
  std::string trailers_;
};

// The trailer field lines of `raw` (CRLF-terminated lines, as ChunkedDecoder::trailers() gives)
// without the fields a trailer must not carry (framing, routing, connection-specific: RFC 9110
// 6.5.1), re-joined the same way.
std::string permitted_trailers(std::string_view raw);

}  // namespace sluice::http

#include "http/parser.h"

#include <cstring>

#include <algorithm>
#include <array>
#include <limits>
#include <utility>

namespace sluice::http {

namespace {

// RFC 9112 2.2 says a server SHOULD ignore at least one empty line before the request-line
// (clients sometimes send an extra CRLF after a POST body). A few are tolerated; more are noise.
constexpr size_t kMaxLeadingEmptyLines = 4;
constexpr size_t kMaxChunkSizeDigits = 16;  // 16 hex digits fill a uint64_t exactly
constexpr size_t kMaxChunkExtBytes = 4096;
constexpr std::string_view kRootPath = "/";

// tchar from RFC 9110 5.6.2.
constexpr std::array<bool, 256> make_token_table() {
  std::array<bool, 256> t{};
  for (int c = '0'; c <= '9'; ++c) t[c] = true;
  for (int c = 'a'; c <= 'z'; ++c) t[c] = true;
  for (int c = 'A'; c <= 'Z'; ++c) t[c] = true;
  for (char c : std::string_view("!#$%&'*+-.^_`|~")) t[static_cast<unsigned char>(c)] = true;
  return t;
}
constexpr std::array<bool, 256> kTokenChar = make_token_table();

constexpr bool is_tchar(char c) { return kTokenChar[static_cast<unsigned char>(c)]; }

// field-value bytes (RFC 9110 5.5): VCHAR, SP, HTAB and obs-text. Excludes NUL, other controls
// and DEL.
constexpr bool is_field_char(char c) {
  const auto u = static_cast<unsigned char>(c);
  return u == '\t' || (u >= 0x20 && u != 0x7f);
}

constexpr bool is_digit(char c) { return c >= '0' && c <= '9'; }

constexpr int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

bool is_token(std::string_view s) {
  if (s.empty()) return false;
  for (char c : s) {
    if (!is_tchar(c)) return false;
  }
  return true;
}

std::string_view trim_ows(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

bool istarts_with(std::string_view s, std::string_view prefix) {
  return s.size() >= prefix.size() && iequals(s.substr(0, prefix.size()), prefix);
}

// Calls fn(element) for each element of a comma-separated list (RFC 9110 5.6.1), OWS trimmed.
// Empty elements are passed on too; each caller decides whether they are tolerable.
template <typename Fn>
bool for_each_element(std::string_view list, Fn&& fn) {
  while (true) {
    const size_t comma = list.find(',');
    if (!fn(trim_ows(list.substr(0, comma)))) return false;
    if (comma == std::string_view::npos) return true;
    list.remove_prefix(comma + 1);
  }
}

ParseResult fail(int status, std::string_view reason) {
  return ParseResult{ParseStatus::Error, 0, status, reason};
}

ParseResult done(size_t consumed) { return ParseResult{ParseStatus::Done, consumed, 0, {}}; }

// Bytes allowed in the request-target: visible ASCII except '#' (a fragment is never sent).
bool valid_target_chars(std::string_view s) {
  for (char c : s) {
    const auto u = static_cast<unsigned char>(c);
    if (u <= 0x20 || u >= 0x7f || c == '#') return false;
  }
  return true;
}

constexpr bool is_unreserved_or_sub_delim(char c) {
  if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || is_digit(c)) return true;
  return std::string_view("-._~!$&'()*+,;=").find(c) != std::string_view::npos;
}

// uri-host [ ":" port ] (RFC 3986 3.2.2): reg-name or IP-literal, then 1-5 port digits. An empty
// port ("host:") is legal in RFC 3986 but refused here: it is never what a client meant.
bool valid_host(std::string_view h) {
  if (h.empty()) return false;
  size_t i = 0;
  if (h[0] == '[') {
    const size_t close = h.find(']');
    if (close == std::string_view::npos || close == 1) return false;
    for (i = 1; i < close; ++i) {
      if (h[i] != ':' && !is_unreserved_or_sub_delim(h[i])) return false;
    }
    i = close + 1;
  } else {
    for (; i < h.size() && h[i] != ':'; ++i) {
      if (h[i] == '%') {
        if (i + 2 >= h.size() || hex_value(h[i + 1]) < 0 || hex_value(h[i + 2]) < 0) return false;
        i += 2;
      } else if (!is_unreserved_or_sub_delim(h[i])) {
        return false;
      }
    }
    if (i == 0) return false;
  }
  if (i == h.size()) return true;
  if (h[i] != ':') return false;
  const std::string_view port = h.substr(i + 1);
  if (port.empty() || port.size() > 5) return false;
  for (char c : port) {
    if (!is_digit(c)) return false;
  }
  return true;
}

// 1*DIGIT that fits a uint64_t.
bool parse_content_length(std::string_view s, uint64_t& out) {
  if (s.empty()) return false;
  uint64_t v = 0;
  for (char c : s) {
    if (!is_digit(c)) return false;
    const uint64_t d = static_cast<uint64_t>(c - '0');
    if (v > (std::numeric_limits<uint64_t>::max() - d) / 10) return false;
    v = v * 10 + d;
  }
  out = v;
  return true;
}

// Looks for the end of the head, resuming at s.pos. Enforces line endings (CRLF only) and the
// size limits as bytes arrive, so a hostile peer cannot make us buffer or rescan an endless head.
// Returns Incomplete (more bytes needed), Done (s.head_end set) or Error (request-side statuses).
ParseResult scan_head(detail::HeadScan& s, std::string_view buf, const ParserLimits& limits) {
  const size_t n = buf.size();
  const char* const data = buf.data();
  size_t i = s.pos;
  while (i < n) {
    // Jump to the next CR with memchr (the hot path: a line's ordinary bytes), then check the
    // skipped bytes for a bare LF and the limits, in the order a byte-by-byte scan would.
    const void* cr = std::memchr(data + i, '\r', n - i);
    const size_t seg_end =
        cr != nullptr ? static_cast<size_t>(static_cast<const char*>(cr) - data) : n;
    const void* lf = std::memchr(data + i, '\n', seg_end - i);
    const size_t stop =
        lf != nullptr ? static_cast<size_t>(static_cast<const char*>(lf) - data) : seg_end;
    if (stop > i) {  // ordinary bytes [i, stop): byte j is over a limit when j + 1 - head_start is
      if (!s.start_line_done && stop - s.head_start > limits.max_request_line) {
        return fail(414, "request line too long");
      }
      if (stop - s.head_start > limits.max_header_bytes) {
        return fail(431, "header section too large");
      }
    }
    if (lf != nullptr) return fail(400, "bare LF in head");
    i = seg_end;
    if (i == n) break;
    if (i + 1 == n) break;  // the byte after CR decides; wait for it
    if (buf[i + 1] != '\n') return fail(400, "bare CR in head");
    const size_t next = i + 2;
    if (i == s.line_start && !s.start_line_done) {
      if (++s.leading_empty > kMaxLeadingEmptyLines) return fail(400, "too many empty lines");
      s.head_start = next;
    } else {
      if (next - s.head_start > limits.max_header_bytes) {
        return fail(431, "header section too large");
      }
      if (i == s.line_start) {
        s.head_end = next;
        s.pos = next;
        return done(next);
      }
      if (!s.start_line_done) {
        s.start_line_done = true;
        s.start_line_end = i;
      } else if (++s.header_lines > limits.max_headers) {
        return fail(431, "too many headers");
      }
    }
    s.line_start = next;
    i = next;
  }
  s.pos = i;
  return ParseResult{};
}

// Splits the header lines of a complete head (between the start line and the final empty line)
// into `out`. scan_head has already guaranteed that every line ends in CRLF and holds no other
// CR or LF.
ParseResult parse_header_lines(const detail::HeadScan& s, std::string_view buf,
                               std::vector<Header>& out) {
  out.clear();
  out.reserve(s.header_lines);
  size_t p = s.start_line_end + 2;
  const size_t end = s.head_end - 2;
  while (p < end) {
    const size_t cr = buf.find('\r', p);
    const std::string_view line = buf.substr(p, cr - p);
    p = cr + 2;
    if (line[0] == ' ' || line[0] == '\t') return fail(400, "obs-fold in header");
    size_t colon = 0;
    while (colon < line.size() && is_tchar(line[colon])) ++colon;
    if (colon == line.size() || line[colon] != ':') {
      // Whitespace before ':' is rejected too (RFC 9112 5.1): proxies disagree on its meaning.
      return fail(400, "invalid header name");
    }
    if (colon == 0) return fail(400, "empty header name");
    const std::string_view value = line.substr(colon + 1);
    for (char c : value) {
      if (!is_field_char(c)) return fail(400, "invalid character in header value");
    }
    out.push_back(Header{line.substr(0, colon), trim_ows(value)});
  }
  return done(s.head_end);
}

// What the framing and connection-management headers say, gathered in one pass. Both parsers
// apply their own rules to it.
struct HeaderFacts {
  bool has_content_length = false;
  uint64_t content_length = 0;
  bool has_transfer_encoding = false;
  size_t te_chunked = 0;         // "chunked" elements over all Transfer-Encoding headers
  bool te_other = false;         // some other (well-formed) coding
  bool te_malformed = false;     // an empty or non-token element, or chunked with parameters
  bool te_last_chunked = false;  // the final coding is chunked
  size_t host_count = 0;
  std::string_view host;
  bool conn_close = false;
  bool conn_keep_alive = false;
  bool conn_upgrade = false;
  bool has_upgrade = false;
  bool has_expect = false;
  bool expect_continue_only = true;
};

// Returns an empty view, or the reason the Content-Length headers are unusable.
std::string_view gather_facts(const std::vector<Header>& headers, HeaderFacts& f) {
  std::string_view error;
  for (const Header& h : headers) {
    // Only six names matter here; their lengths differ, so most headers cost one switch.
    switch (h.name.size()) {
      case 14:  // content-length
      case 17:  // transfer-encoding
      case 4:   // host
      case 10:  // connection
      case 7:   // upgrade
      case 6:   // expect
        break;
      default:
        continue;
    }
    if (iequals(h.name, "content-length")) {
      // Repeats and lists are fine only when every value agrees (RFC 9110 8.6).
      const bool ok = for_each_element(h.value, [&](std::string_view e) {
        uint64_t v = 0;
        if (!parse_content_length(e, v)) {
          error = "invalid content-length";
          return false;
        }
        if (f.has_content_length && v != f.content_length) {
          error = "conflicting content-length";
          return false;
        }
        f.has_content_length = true;
        f.content_length = v;
        return true;
      });
      if (!ok) return error;
    } else if (iequals(h.name, "transfer-encoding")) {
      f.has_transfer_encoding = true;
      for_each_element(h.value, [&](std::string_view e) {
        const size_t semi = e.find(';');
        const std::string_view coding = trim_ows(e.substr(0, semi));
        f.te_last_chunked = false;
        if (!is_token(coding)) {
          f.te_malformed = true;
        } else if (iequals(coding, "chunked")) {
          if (semi != std::string_view::npos) f.te_malformed = true;  // chunked takes no params
          ++f.te_chunked;
          f.te_last_chunked = true;
        } else {
          f.te_other = true;
        }
        return true;
      });
    } else if (iequals(h.name, "host")) {
      ++f.host_count;
      f.host = h.value;
    } else if (iequals(h.name, "connection")) {
      for_each_element(h.value, [&](std::string_view e) {
        if (iequals(e, "close")) f.conn_close = true;
        if (iequals(e, "keep-alive")) f.conn_keep_alive = true;
        if (iequals(e, "upgrade")) f.conn_upgrade = true;
        return true;
      });
    } else if (iequals(h.name, "upgrade")) {
      f.has_upgrade = true;
    } else if (iequals(h.name, "expect")) {
      f.has_expect = true;
      if (!iequals(h.value, "100-continue")) f.expect_continue_only = false;
    }
  }
  return {};
}

// Sets target, path, query and (for absolute-form) host. Method and version are already known.
ParseResult parse_target(std::string_view target, RequestHead& out) {
  if (!valid_target_chars(target)) return fail(400, "invalid character in request target");
  out.target = target;
  std::string_view path_and_query;
  if (target[0] == '/') {
    path_and_query = target;
  } else if (target == "*") {
    if (out.method != "OPTIONS") return fail(400, "asterisk target needs OPTIONS");
    out.path = target;
    return done(0);
  } else {
    std::string_view rest;
    if (istarts_with(target, "http://")) {
      rest = target.substr(7);
    } else if (istarts_with(target, "https://")) {
      rest = target.substr(8);
    } else {
      return fail(400, "invalid request target");
    }
    const size_t auth_end = rest.find_first_of("/?");
    const std::string_view authority = rest.substr(0, auth_end);
    if (authority.find('@') != std::string_view::npos) return fail(400, "userinfo in target");
    if (!valid_host(authority)) return fail(400, "invalid host in target");
    out.host = authority;
    path_and_query =
        auth_end == std::string_view::npos ? std::string_view() : rest.substr(auth_end);
  }
  const size_t q = path_and_query.find('?');
  out.path = path_and_query.substr(0, q);
  if (out.path.empty()) out.path = kRootPath;  // "http://host" and "http://host?x" mean "/"
  if (q != std::string_view::npos) out.query = path_and_query.substr(q + 1);
  return done(0);
}

ParseResult parse_request_head(const detail::HeadScan& s, std::string_view buf, RequestHead& out) {
  std::vector<Header> headers = std::move(out.headers);  // keep the vector's capacity
  out = RequestHead{};
  out.headers = std::move(headers);
  const std::string_view line = buf.substr(s.head_start, s.start_line_end - s.head_start);

  const size_t sp1 = line.find(' ');
  if (sp1 == std::string_view::npos) return fail(400, "malformed request line");
  out.method = line.substr(0, sp1);
  if (!is_token(out.method)) return fail(400, "invalid method");
  const size_t sp2 = line.find(' ', sp1 + 1);
  if (sp2 == std::string_view::npos) return fail(400, "malformed request line");
  const std::string_view target = line.substr(sp1 + 1, sp2 - sp1 - 1);
  if (target.empty()) return fail(400, "malformed request line");

  const std::string_view version = line.substr(sp2 + 1);
  if (version == "HTTP/1.1") {
    out.version = Version::Http11;
  } else if (version == "HTTP/1.0") {
    out.version = Version::Http10;
  } else if (version.size() == 8 && version.starts_with("HTTP/") && is_digit(version[5]) &&
             version[6] == '.' && is_digit(version[7])) {
    return fail(505, "unsupported HTTP version");
  } else {
    return fail(400, "malformed HTTP version");
  }

  if (out.method == "CONNECT") return fail(501, "CONNECT not supported");
  if (ParseResult r = parse_target(target, out); r.status == ParseStatus::Error) return r;
  if (ParseResult r = parse_header_lines(s, buf, out.headers); r.status == ParseStatus::Error) {
    return r;
  }

  HeaderFacts f;
  if (std::string_view e = gather_facts(out.headers, f); !e.empty()) return fail(400, e);

  if (f.host_count > 1) return fail(400, "multiple host headers");
  if (f.host_count == 0 && out.version == Version::Http11) return fail(400, "missing host header");
  if (f.host_count == 1 && !valid_host(f.host)) {
    // An empty Host is legal alongside an absolute-form target, which overrides it anyway.
    if (!(f.host.empty() && !out.host.empty())) return fail(400, "invalid host header");
  }
  if (out.host.empty()) out.host = f.host;  // absolute-form authority wins (RFC 9112 3.2.2)

  if (f.has_transfer_encoding) {
    if (f.has_content_length) return fail(400, "both transfer-encoding and content-length");
    if (out.version == Version::Http10) return fail(400, "transfer-encoding in HTTP/1.0");
    if (f.te_malformed) return fail(400, "invalid transfer-encoding");
    // RFC 9112 6.3: chunked present but not final makes the length unknowable: 400 + close.
    if (f.te_chunked > 0 && !f.te_last_chunked) return fail(400, "chunked is not the final coding");
    if (f.te_other) return fail(501, "unsupported transfer-coding");
    if (f.te_chunked != 1) return fail(400, "invalid transfer-encoding");
    out.body_kind = BodyKind::Chunked;
  } else if (f.has_content_length) {
    out.body_kind = BodyKind::Length;
    out.content_length = f.content_length;
  }

  if (f.has_expect) {
    if (!f.expect_continue_only) return fail(417, "unsupported expectation");
    out.expect_continue = true;
  }
  out.keep_alive =
      out.version == Version::Http11 ? !f.conn_close : f.conn_keep_alive && !f.conn_close;
  out.upgrade = f.conn_upgrade && f.has_upgrade;
  return done(s.head_end);
}

ParseResult parse_response_head(const detail::HeadScan& s, std::string_view buf, ResponseHead& out,
                                std::string_view request_method) {
  std::vector<Header> headers = std::move(out.headers);
  out = ResponseHead{};
  out.headers = std::move(headers);
  const std::string_view line = buf.substr(s.head_start, s.start_line_end - s.head_start);

  // "HTTP/1.x SP 3DIGIT [SP reason]"; a higher minor version is read as 1.1 (RFC 9110 2.5).
  if (line.size() < 12 || !line.starts_with("HTTP/1.") || !is_digit(line[7]) || line[8] != ' ' ||
      !is_digit(line[9]) || !is_digit(line[10]) || !is_digit(line[11])) {
    return fail(502, "malformed status line");
  }
  out.version = line[7] == '0' ? Version::Http10 : Version::Http11;
  out.status = (line[9] - '0') * 100 + (line[10] - '0') * 10 + (line[11] - '0');
  if (out.status < 100 || out.status > 599) return fail(502, "invalid status code");
  if (line.size() > 12) {
    if (line[12] != ' ') return fail(502, "malformed status line");
    out.reason = line.substr(13);
    for (char c : out.reason) {
      if (!is_field_char(c)) return fail(502, "invalid character in reason phrase");
    }
  }

  if (ParseResult r = parse_header_lines(s, buf, out.headers); r.status == ParseStatus::Error) {
    return r;
  }
  HeaderFacts f;
  if (std::string_view e = gather_facts(out.headers, f); !e.empty()) return fail(502, e);

  const bool no_body =
      out.status < 200 || out.status == 204 || out.status == 304 || request_method == "HEAD";
  bool close = out.version == Version::Http11 ? f.conn_close : !f.conn_keep_alive || f.conn_close;
  if (f.has_transfer_encoding) {
    if (out.version == Version::Http10) return fail(502, "transfer-encoding in HTTP/1.0");
    if (f.te_malformed || f.te_chunked > 1) return fail(502, "invalid transfer-encoding");
    // Transfer-Encoding overrides Content-Length, but such a response may be an attack on a
    // downstream; do not reuse the connection after it (RFC 9112 6.3).
    if (f.has_content_length) close = true;
  }
  if (f.has_content_length) out.content_length = f.content_length;

  if (no_body) {
    out.body_kind = BodyKind::None;
  } else if (f.has_transfer_encoding) {
    // Chunked not being final means the length is "until close" (RFC 9112 6.3).
    out.body_kind = f.te_last_chunked ? BodyKind::Chunked : BodyKind::UntilClose;
  } else if (f.has_content_length) {
    out.body_kind = BodyKind::Length;
  } else {
    out.body_kind = BodyKind::UntilClose;
  }
  if (out.body_kind == BodyKind::UntilClose) close = true;
  out.keep_alive = !close;
  return done(s.head_end);
}

}  // namespace

// --- RequestParser ---

RequestParser::RequestParser(ParserLimits limits) : limits_(limits) {}

void RequestParser::reset() {
  scan_ = {};
  failed_ = {};
}

ParseResult RequestParser::parse(std::string_view buf, RequestHead& out) {
  if (failed_.status == ParseStatus::Error) return failed_;
  if (buf.size() < scan_.pos) scan_ = {};  // not the contract, but never read past the buffer
  if (scan_.head_end == 0) {
    ParseResult r = scan_head(scan_, buf, limits_);
    if (r.status == ParseStatus::Error) return failed_ = r;
    if (r.status == ParseStatus::Incomplete) return r;
  }
  ParseResult r = parse_request_head(scan_, buf, out);
  if (r.status == ParseStatus::Error) failed_ = r;
  return r;
}

// --- ResponseParser ---

ResponseParser::ResponseParser(ParserLimits limits) : limits_(limits) {}

void ResponseParser::reset() {
  scan_ = {};
  failed_ = {};
}

ParseResult ResponseParser::parse(std::string_view buf, ResponseHead& out,
                                  std::string_view request_method) {
  if (failed_.status == ParseStatus::Error) return failed_;
  if (buf.size() < scan_.pos) scan_ = {};
  if (scan_.head_end == 0) {
    ParseResult r = scan_head(scan_, buf, limits_);
    if (r.status == ParseStatus::Error) {
      r.error_status = 502;
      return failed_ = r;
    }
    if (r.status == ParseStatus::Incomplete) return r;
  }
  ParseResult r = parse_response_head(scan_, buf, out, request_method);
  if (r.status == ParseStatus::Error) {
    r.error_status = 502;
    failed_ = r;
  }
  return r;
}

// --- ChunkedDecoder ---

ChunkedDecoder::ChunkedDecoder(size_t max_trailer_bytes) : max_trailer_bytes_(max_trailer_bytes) {}

bool ChunkedDecoder::done() const { return state_ == State::Done; }

void ChunkedDecoder::reset() {
  const bool keep = keep_trailers_;
  std::string kept = std::move(trailers_);
  *this = ChunkedDecoder(max_trailer_bytes_);
  keep_trailers_ = keep;
  trailers_ = std::move(kept);
  trailers_.clear();  // (keeps the capacity)
}

std::string permitted_trailers(std::string_view raw) {
  static constexpr std::string_view kForbidden[] = {
      "content-length", "transfer-encoding", "host", "connection", "keep-alive", "te", "trailer",
      "upgrade", "proxy-connection", "content-type", "content-encoding", "content-range",
      "authorization", "set-cookie", "cache-control",
      // what the gateway asserts in heads (build_upstream_head): never a peer's word for it
      "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "forwarded", "via",
      "x-request-id", "traceparent", "x-sluice-trace", "x-consumer"};
  std::string out;
  while (!raw.empty()) {
    size_t eol = raw.find("\r\n");
    std::string_view line = raw.substr(0, eol);
    raw = eol == std::string_view::npos ? std::string_view() : raw.substr(eol + 2);
    size_t colon = line.find(':');
    if (colon == std::string_view::npos || colon == 0) continue;
    std::string_view name = line.substr(0, colon);
    bool forbidden = false;
    for (auto f : kForbidden) {
      if (f.size() != name.size()) continue;
      bool same = true;
      for (size_t i = 0; i < f.size() && same; ++i) {
        same = (name[i] | 0x20) == f[i] || (f[i] == '-' && name[i] == '-');
      }
      forbidden = forbidden || same;
    }
    if (forbidden) continue;
    out.append(line);
    out += "\r\n";
  }
  return out;
}

ChunkedDecoder::Result ChunkedDecoder::feed(std::string_view in,
                                            std::vector<std::string_view>& data) {
  if (state_ == State::Error) return Result{0, true, error_};
  if (state_ == State::Done) return Result{};

  auto fail_at = [this](size_t i, std::string_view reason) {
    state_ = State::Error;
    error_ = reason;
    return Result{i, true, reason};
  };

  size_t i = 0;
  while (i < in.size()) {
    if (state_ == State::Data) {
      const size_t take = static_cast<size_t>(
          std::min<uint64_t>(chunk_size_, static_cast<uint64_t>(in.size() - i)));
      data.push_back(in.substr(i, take));
      i += take;
      chunk_size_ -= take;
      if (chunk_size_ == 0) state_ = State::DataCr;
      continue;
    }

    const char c = in[i];
    if (state_ >= State::TrailerLine && state_ <= State::EndLf &&
        ++trailer_bytes_ > max_trailer_bytes_) {
      return fail_at(i, "trailer section too large");
    }
    if (keep_trailers_ && state_ >= State::TrailerLine && state_ <= State::TrailerLf &&
        !(state_ == State::TrailerLine && c == '\r')) {
      trailers_.push_back(c);
    }
    switch (state_) {
      case State::Size: {
        const int h = hex_value(c);
        if (h >= 0) {
          if (++size_digits_ > kMaxChunkSizeDigits) return fail_at(i, "chunk size too long");
          chunk_size_ = chunk_size_ * 16 + static_cast<uint64_t>(h);
        } else if (size_digits_ == 0) {
          return fail_at(i, "invalid chunk size");
        } else if (c == '\r') {
          state_ = State::SizeLf;
        } else if (c == ';') {
          state_ = State::Ext;
        } else if (c == ' ' || c == '\t') {
          state_ = State::SizeWs;
        } else {
          return fail_at(i, "invalid chunk size");
        }
        break;
      }
      case State::SizeWs:
        if (c == ';') {
          state_ = State::Ext;
        } else if (c != ' ' && c != '\t') {
          return fail_at(i, "invalid chunk size");
        }
        break;
      case State::Ext:
        if (c == '\r') {
          state_ = State::SizeLf;
        } else if (!is_field_char(c)) {
          return fail_at(i, "invalid chunk extension");
        } else if (++ext_bytes_ > kMaxChunkExtBytes) {
          return fail_at(i, "chunk extension too long");
        }
        break;
      case State::SizeLf:
        if (c != '\n') return fail_at(i, "bare CR in chunk size line");
        state_ = chunk_size_ == 0 ? State::TrailerLine : State::Data;
        break;
      case State::DataCr:
        if (c != '\r') return fail_at(i, "missing CRLF after chunk data");
        state_ = State::DataLf;
        break;
      case State::DataLf:
        if (c != '\n') return fail_at(i, "missing CRLF after chunk data");
        state_ = State::Size;
        size_digits_ = 0;
        ext_bytes_ = 0;
        break;
      case State::TrailerLine:
        if (c == '\r') {
          state_ = State::EndLf;
        } else if (c == ' ' || c == '\t') {
          return fail_at(i, "obs-fold in trailer");
        } else if (is_tchar(c)) {
          state_ = State::TrailerName;
        } else {
          return fail_at(i, "invalid trailer field name");
        }
        break;
      case State::TrailerName:
        if (c == ':') {
          state_ = State::TrailerValue;
        } else if (!is_tchar(c)) {
          return fail_at(i, "invalid trailer field name");
        }
        break;
      case State::TrailerValue:
        if (c == '\r') {
          state_ = State::TrailerLf;
        } else if (!is_field_char(c)) {
          return fail_at(i, "invalid character in trailer");
        }
        break;
      case State::TrailerLf:
        if (c != '\n') return fail_at(i, "bare CR in trailer");
        state_ = State::TrailerLine;
        break;
      case State::EndLf:
        if (c != '\n') return fail_at(i, "bare CR in trailer");
        state_ = State::Done;
        return Result{i + 1, false, {}};
      case State::Data:
      case State::Done:
      case State::Error:
        break;  // handled above
    }
    ++i;
  }
  return Result{i, false, {}};
}

}  // namespace sluice::http

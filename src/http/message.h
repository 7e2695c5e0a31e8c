// HTTP/1 message heads as the parser hands them out.
//
//   http::RequestHead head;
//   auto r = parser.parse(buffer, head);          // see parser.h
//   if (r.status == ParseStatus::Done) route(head.method, head.host, head.path);
//
// Every std::string_view points into the connection's read buffer: a head is valid only until
// that buffer is compacted or reused. Copy what must outlive it (the proxy does, before it
// forwards). Header names keep their original case; look them up case-insensitively.
#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

namespace sluice::http {

struct Header {
  std::string_view name;
  std::string_view value;  // leading/trailing whitespace already stripped
};

enum class Version : uint8_t { Http10, Http11 };

enum class BodyKind : uint8_t {
  None,        // no body: no Content-Length/Transfer-Encoding, or a response that cannot have one
  Length,      // exactly content_length bytes
  Chunked,     // Transfer-Encoding: chunked
  UntilClose,  // responses only: read until the upstream closes
};

// ASCII case-insensitive equality (header names, tokens). Inline: it is on every hot path.
inline bool iequals(std::string_view a, std::string_view b) noexcept {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    unsigned char x = static_cast<unsigned char>(a[i]) ^ static_cast<unsigned char>(b[i]);
    if (x == 0) continue;
    // Equal ignoring case only if they differ in bit 0x20 and are letters.
    if (x != 0x20) return false;
    unsigned char c = static_cast<unsigned char>(a[i]) | 0x20;
    if (c < 'a' || c > 'z') return false;
  }
  return true;
}

// First value of a header by case-insensitive name, or an empty view with found=false.
struct HeaderLookup {
  std::string_view value;
  bool found = false;
};
HeaderLookup find_header(const std::vector<Header>& headers, std::string_view name) noexcept;

// The value of cookie `name` in the request's Cookie header(s), "" when absent.
std::string_view cookie_value(const std::vector<Header>& headers, std::string_view name) noexcept;

struct RequestHead {
  std::string_view method;
  std::string_view target;  // request-target as sent (origin-form or absolute-form)
  std::string_view path;    // path part of the target, not yet normalised
  std::string_view query;   // after '?', without it; empty when absent
  Version version = Version::Http11;
  std::vector<Header> headers;

  // Derived by the parser.
  std::string_view
      host;  // Host header (or the authority of an absolute-form target), no port strip
  BodyKind body_kind = BodyKind::None;
  uint64_t content_length = 0;
  bool keep_alive = true;        // HTTP/1.1 default, "Connection: close" / 1.0 rules applied
  bool expect_continue = false;  // "Expect: 100-continue"
  bool upgrade = false;          // "Connection: upgrade" + "Upgrade:" present

  HeaderLookup header(std::string_view name) const noexcept { return find_header(headers, name); }
};

// True when the comma-separated header value `list` holds `token` (case-insensitive, OWS trimmed).
bool has_token(std::string_view list, std::string_view token) noexcept;

// RFC 6455 section 4.1: an HTTP/1.1 GET with `Upgrade: websocket` and `Connection: upgrade`.
bool is_websocket_upgrade(const RequestHead& head) noexcept;

struct ResponseHead {
  int status = 0;
  std::string_view reason;
  Version version = Version::Http11;
  std::vector<Header> headers;

  BodyKind body_kind = BodyKind::None;
  uint64_t content_length = 0;
  bool keep_alive = true;  // may the upstream connection be reused after this response

  HeaderLookup header(std::string_view name) const noexcept { return find_header(headers, name); }
};

}  // namespace sluice::http

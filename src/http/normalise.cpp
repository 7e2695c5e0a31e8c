#include "http/normalise.h"

#include <utility>

namespace sluice::http {

namespace {

constexpr int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

constexpr bool is_unreserved(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
         c == '.' || c == '_' || c == '~';
}

NormalisedPath failure(std::string_view reason) { return NormalisedPath{false, {}, reason}; }

}  // namespace

NormalisedPath normalise_path(std::string_view raw_path) {
  if (raw_path.empty() || raw_path[0] != '/') return failure("path must start with '/'");

  // Pass 1: canonical percent-encoding, so that "%2e%2E" is seen as ".." below.
  std::string decoded;
  decoded.reserve(raw_path.size());
  for (size_t i = 0; i < raw_path.size(); ++i) {
    const char c = raw_path[i];
    const auto u = static_cast<unsigned char>(c);
    if (u <= 0x20 || u >= 0x7f) return failure("invalid character in path");
    if (c != '%') {
      decoded.push_back(c);
      continue;
    }
    if (i + 2 >= raw_path.size()) return failure("truncated percent-encoding");
    const int hi = hex_value(raw_path[i + 1]);
    const int lo = hex_value(raw_path[i + 2]);
    if (hi < 0 || lo < 0) return failure("invalid percent-encoding");
    const char byte = static_cast<char>(hi * 16 + lo);
    if (byte == '\0') return failure("encoded NUL in path");
    if (is_unreserved(byte)) {
      decoded.push_back(byte);
    } else {
      constexpr std::string_view kHex = "0123456789ABCDEF";
      decoded.push_back('%');
      decoded.push_back(kHex[hi]);
      decoded.push_back(kHex[lo]);
    }
    i += 2;
  }

  // Pass 2: walk the segments, merging empty ones (runs of '/') and resolving dot-segments. The
  // output only ever shrinks relative to `decoded`, so it is built in a second string whose
  // length doubles as the segment stack: popping a segment truncates back to its '/'.
  std::string out;
  out.reserve(decoded.size());
  bool trailing_slash = false;
  size_t pos = 1;  // past the leading '/'
  while (true) {
    const size_t slash = decoded.find('/', pos);
    const std::string_view segment =
        std::string_view(decoded).substr(pos, slash == std::string::npos ? slash : slash - pos);
    const bool last = slash == std::string::npos;
    if (segment == "..") {
      if (out.empty()) return failure("path climbs above the root");
      out.resize(out.rfind('/'));
    } else if (!segment.empty() && segment != ".") {
      out.push_back('/');
      out.append(segment);
    }
    if (last) {
      // "/a/", "/a/." and "/a/b/.." all name a directory: keep the trailing '/'.
      trailing_slash = segment.empty() || segment == "." || segment == "..";
      break;
    }
    pos = slash + 1;
  }
  if (out.empty() || trailing_slash) out.push_back('/');
  return NormalisedPath{true, std::move(out), {}};
}

}  // namespace sluice::http

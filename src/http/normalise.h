// Path normalisation for routing: one canonical spelling per resource, so that a route or a
// policy cannot be bypassed with "/admin/../admin", "/%61dmin" or "//admin".
//
//   auto n = http::normalise_path(head.path);
//   if (!n.ok) reply(400, n.error);
//   router.match(..., n.path, ...);
//
// Pure function, thread-safe.
#pragma once

#include <string>
#include <string_view>

namespace sluice::http {

struct NormalisedPath {
  bool ok = false;
  std::string path;        // when ok: the canonical path, always starting with '/'
  std::string_view error;  // when !ok: short static reason
};

// For routing: the path (no query) must start with '/'; every %XX must be two hex digits (else
// error); %XX of unreserved characters (ALPHA DIGIT - . _ ~) is decoded, other escapes keep their
// bytes but get upper-case hex; %00 is an error; dot-segments ("." and "..", also when encoded as
// %2e) are removed per RFC 3986 5.2.4, and a ".." that would climb above the root is an error;
// runs of '/' are merged to one. A trailing '/' is kept (also the one a final "." or ".." leaves).
// Bytes the request parser would never pass (controls, space, DEL, >= 0x80) are an error.
// Escaped reserved characters such as %2F stay escaped: they never split or join segments.
// The result is a fixed point: normalising it again returns it unchanged.
NormalisedPath normalise_path(std::string_view raw_path);

}  // namespace sluice::http

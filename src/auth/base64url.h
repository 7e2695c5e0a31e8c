// Base64url (RFC 4648 section 5) without padding, the encoding JOSE uses (RFC 7515 section 2).
//
//   std::optional<std::string> header = base64url_decode("eyJhbGciOiJIUzI1NiJ9");
//   // *header == R"({"alg":"HS256"})"
//   std::string text = base64url_encode(*header);   // "eyJhbGciOiJIUzI1NiJ9" again
//
// Decoding is strict, because these bytes come from peers: only A-Z a-z 0-9 '-' '_', no '='
// padding, no whitespace, no length of 1 mod 4, and the unused low bits of the last character must
// be zero. So every byte string has exactly one accepted encoding. Pure functions, any thread.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace sluice::auth {

// The decoded bytes, or nullopt when `text` is not canonical unpadded base64url.
std::optional<std::string> base64url_decode(std::string_view text);

// Unpadded base64url of `bytes`.
std::string base64url_encode(std::string_view bytes);

}  // namespace sluice::auth

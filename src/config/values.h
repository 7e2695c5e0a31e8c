// Lexical checks on single config values, shared by the loader (private to src/config/).
//
// Everything here is pure: no YAML, no diagnostics. The loader turns a nullopt or an error string
// into a Diagnostic at the right position.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>

namespace sluice::config {

// Decimal digits only (no sign, no spaces); nullopt when empty, malformed or above UINT64_MAX.
std::optional<uint64_t> parse_uint(std::string_view text);

std::string to_lower(std::string_view text);
std::string to_upper(std::string_view text);

// RFC 9110 token (header names, methods).
bool is_token(std::string_view text);

// A name of a listener, upstream or route: it appears in metrics labels, log fields and admin API
// paths, so it is kept to [A-Za-z0-9_.-]+.
bool is_object_name(std::string_view text);

// A consumer or group name: it appears in log fields and in `allow` lists, and is often a user
// name or an e-mail address, so '@' is allowed too: [A-Za-z0-9_.@-]+.
bool is_consumer_name(std::string_view text);

// Hex digits only (either case), and at least one.
bool is_hex(std::string_view text);

// The candidate closest to `word` for a "did you mean" hint: edit distance at most 2, or one is a
// prefix of the other (for words of 3+ characters). nullopt when nothing is close.
std::optional<std::string_view> closest(std::string_view word,
                                        std::span<const std::string_view> candidates);
std::optional<std::string> closest(std::string_view word, std::span<const std::string> candidates);

// " (did you mean 'x'?)" or "" — ready to append to a message.
std::string did_you_mean(const std::optional<std::string_view>& hint);

struct HostPort {
  std::string host;  // without the brackets of "[v6]:port"
  uint16_t port = 0;
  bool bracketed = false;
};
// "host:port" or "[v6]:port" with port 1..65535. On failure returns nullopt and sets `error`.
std::optional<HostPort> split_host_port(std::string_view text, std::string& error);

// The canonical text of an IPv4/IPv6 literal ("::0" -> "::"), or nullopt when it is not one.
std::optional<std::string> canonical_ip(std::string_view host);

// The canonical text of the network `address`/`prefix_length` (every bit after the first
// `prefix_length` cleared): ("10.1.2.3", 8) -> "10.0.0.0". nullopt when `address` is not an IP
// literal or `prefix_length` is above its family's 32 or 128 bits.
std::optional<std::string> network_address(std::string_view address, unsigned prefix_length);

// A DNS name: dot-separated labels of [A-Za-z0-9_-], each 1..63, at most 253 in total.
bool is_hostname(std::string_view host);

// Replaces every ${NAME} (NAME = [A-Za-z_][A-Za-z0-9_]*) by the environment variable's value. Text
// that is not of that form ("$x", "${", "${1}") is kept as written. Returns nullopt and sets
// `unset_name` at the first variable that is not set. Values are not substituted again.
std::optional<std::string> substitute_env(std::string_view text, std::string& unset_name);

}  // namespace sluice::config

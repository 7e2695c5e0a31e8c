// The PROXY protocol (HAProxy, versions 1 and 2): the header an L4 balancer puts in front of a
// connection so that the next hop learns the client's address.
// Spec: https://www.haproxy.org/download/2.8/doc/proxy-protocol.txt
//
//   net::ProxyHeader h;
//   auto r = net::parse_proxy_header(bytes, h);
//   if (r.status == net::ParseStatus::NeedMore) ...      // every byte so far is header: read more
//   if (r.status == net::ParseStatus::Error) close(r.error);
//   if (r.status == net::ParseStatus::Done && !h.local) client = h.source;   // r.size bytes used
//
//   std::string out = net::encode_proxy_header(2, {"192.0.2.7", 51000}, {"10.0.0.1", 443});
//
// Strict and bounded: a v1 line is at most 107 bytes and must match the spec's grammar exactly
// (single spaces, canonical addresses, ports without leading zeros, CRLF); a v2 header is at most
// kMaxV2Size bytes, its TLVs must tile its address block exactly (their contents are not
// interpreted). A NeedMore answer guarantees that every byte given belongs to the header, so a
// reader that peeks can consume them and never reads past the header. No Asio, no allocation
// beyond the address strings; safe on any bytes (fuzzed: tests/fuzz/proxy_protocol_fuzz.cpp).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace sluice::net {

// The largest header accepted: v1's limit from the spec, and for v2 the 16-byte preamble plus an
// address block of at most 2 KiB (addresses and TLVs; real balancers send well under 300 bytes).
constexpr size_t kMaxV1Size = 107;
constexpr size_t kMaxV2Size = 16 + 2048;

struct ProxyEndpoint {
  std::string ip;  // canonical text ("192.0.2.7", "2001:db8::1")
  uint16_t port = 0;
};

struct ProxyHeader {
  int version = 0;        // 1 or 2
  bool local = false;     // v2 LOCAL, v1 UNKNOWN, or an address family we do not carry (unix,
                          // unspecified): use the connection's own addresses
  bool datagram = false;  // v2 over UDP (accepted, reported; sluice relays TCP only)
  ProxyEndpoint source;   // the client (set when !local)
  ProxyEndpoint destination;
};

enum class ParseStatus { Done, NeedMore, Error };

struct ParseResult {
  ParseStatus status = ParseStatus::NeedMore;
  size_t size = 0;         // Done: the header's length in bytes
  std::string_view error;  // Error: why, for the log (a static string)
};

// Parses the header at the start of `data`. Done fills `out`.
ParseResult parse_proxy_header(std::string_view data, ProxyHeader& out);

// The header a sender puts first on a connection from `source` to `destination`. Version 1 or 2.
// Addresses of different families, or one that is not an IP literal, give the "unknown" form
// (v1 "PROXY UNKNOWN", v2 LOCAL).
std::string encode_proxy_header(int version, const ProxyEndpoint& source,
                                const ProxyEndpoint& destination);
// The header of a connection that carries no client (health checks): v1 "PROXY UNKNOWN\r\n",
// v2 LOCAL.
std::string encode_proxy_local(int version);

}  // namespace sluice::net

// The PROXY protocol on live connections: reading one from a downstream (listener
// `proxy_protocol: true`) and sending one to a target (upstream `proxy_protocol: v1|v2`). The
// wire format itself is net/proxy_protocol.h.
//
//   proxy::Addresses a = proxy::connection_addresses(socket);   // what the kernel says
//   if (listener.proxy_protocol) {
//     std::string_view why = co_await proxy::accept_proxy_header(socket, wd, header_timeout, a);
//     if (!why.empty()) { log(why); close(); }    // a.client is now the original client
//   }
//   ...connect to a target...
//   Error e = co_await proxy::send_proxy_header(target_socket, 2, a, wd, connect_timeout);
//
// Runs on the worker that owns the sockets.
#pragma once

#include <string>
#include <string_view>

#include "core/duration.h"
#include "core/error.h"
#include "net/proxy_protocol.h"
#include "server/asio.h"

namespace sluice::server {
class Watchdog;
}

namespace sluice::proxy {

// Both ends of a downstream connection as the next hop should see them: `client` is the peer
// (the original client once a PROXY header said so), `local` the address it connected to. An
// IPv4 client of a dual-stack listener is given as IPv4.
struct Addresses {
  net::ProxyEndpoint client;
  net::ProxyEndpoint local;
};

// `with_local`: also ask the kernel for the local address (one more syscall).
Addresses connection_addresses(const tcp::socket& socket, bool with_local = true);

// Reads the PROXY header (v1 or v2) that must open `socket`, within `timeout`, without reading
// a byte past it (it peeks, then consumes exactly the header), so TLS or HTTP can follow on the
// same socket. "" on success, with `addrs` updated unless the header was LOCAL / UNKNOWN; else
// why it failed (malformed, too large, closed or timed out first).
asio::awaitable<std::string_view> accept_proxy_header(tcp::socket& socket, server::Watchdog& wd,
                                                      Duration timeout, Addresses& addrs);

// The keep-alive pool key of a connection to a target that began with a PROXY header for
// `client`: such a connection may only carry that client's requests again.
std::string proxy_pool_key(const std::string& key, const net::ProxyEndpoint& client);

// Writes the version 1 or 2 header for `addrs` first on a fresh connection to a target.
asio::awaitable<Error> send_proxy_header(tcp::socket& socket, int version, const Addresses& addrs,
                                         server::Watchdog& wd, Duration timeout);

}  // namespace sluice::proxy

// A `protocol: udp` listener on one worker: datagrams relayed to a target of the listener's
// upstream, with a session per client address (L4 load balancing for UDP).
//
// What happens (docs/architecture.md "Life of a UDP datagram"):
//   a datagram from a client address with no session opens one: a slot under the upstream's
//   max_connections, the balancer picks (ring_hash / maglev hash the client IP) among available
//   targets, and a UDP socket connected to that target is opened for the session -> the datagram
//   and every later one from that client go out on it -> datagrams the target sends back on it
//   go to the client from the listener's address -> the session ends after the upstream's
//   timeouts.idle without a datagram either way, when the target answers with ICMP port
//   unreachable (recorded for outlier detection; the client's next datagram opens a new session,
//   perhaps to another target), or when the listener closes (reload, drain) -> one access-log
//   line per session (protocol "udp").
//
// Bounds: at most kMaxSessions sessions per listener per worker, and the upstream's
// max_connections across all workers; a datagram that would open a session beyond them, that
// finds no available target, or that meets a full socket buffer is dropped and counted in
// sluice_udp_datagrams_dropped_total{listener}. Each worker has its own SO_REUSEPORT socket; the
// kernel hashes a client's address to one of them, so a client's session lives on one worker.
// Datagrams are at most 64 KiB; one receive buffer per listener, none per session.
#pragma once

#include <cstddef>
#include <memory>
#include <string>

#include <boost/asio/ip/udp.hpp>

#include "server/asio.h"

namespace sluice::server {
class Worker;
}

namespace sluice::proxy {

inline constexpr size_t kMaxUdpSessions = 16384;

// Runs on the worker that owns `socket` (bound, SO_REUSEPORT) until the socket is closed; then
// every session ends.
asio::awaitable<void> serve_udp(server::Worker& worker,
                                std::shared_ptr<asio::ip::udp::socket> socket,
                                std::string listener_name);

}  // namespace sluice::proxy

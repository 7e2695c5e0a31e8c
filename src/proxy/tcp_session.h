// One downstream connection on a `protocol: tcp` listener: bytes relayed, unchanged, to a target
// of the listener's upstream (L4 load balancing).
//
// The connection, in order (docs/architecture.md "Life of a TCP connection"):
//   PROXY header within limits.header_timeout (listener `proxy_protocol: true`) -> a slot under
//   the upstream's max_connections (else closed at once: circuit open) -> the balancer picks
//   (ring_hash / maglev hash the client IP) among available targets -> connect within
//   timeouts.connect; a failed connect is recorded for outlier detection and retried on another
//   target (`retries.attempts`, `on: connect_failure`) - nothing was relayed yet -> the upstream's
//   PROXY header (upstream `proxy_protocol: v1|v2`) -> relay both ways until both directions
//   ended: an EOF from one side becomes shutdown(SHUT_WR) towards the other (half-close), a reset
//   or a failed write ends both (the other side gets a reset too), and no byte either way for
//   the upstream's timeouts.idle ends both -> one access-log line (protocol "tcp").
//
// Relay buffers start at 16 KiB per direction and grow to 256 KiB once a read fills one (a bulk
// transfer), so an idle or chatty connection holds little and a bulk one moves big chunks.
//
// Draining: a connection still being set up is closed; an established one relays until it ends,
// or until shutdown_timeout when the process exits.
#pragma once

#include <string>

#include "server/asio.h"

namespace sluice::server {
class Worker;
}

namespace sluice::proxy {

// Runs on the worker that accepted `socket` until the connection closes.
asio::awaitable<void> serve_tcp(server::Worker& worker, tcp::socket socket,
                                std::string listener_name);

}  // namespace sluice::proxy

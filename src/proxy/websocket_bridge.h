// Route `websocket_bridge`: the gateway terminates the WebSocket (Boost.Beast) and turns each
// message into one HTTP request to the route's upstream; each response body goes back as one
// message, in the order the messages came, whatever order the responses finish in.
//
//   BridgeStats s = co_await bridge_websocket(worker, socket, snap, upstream_index, std::move(b));
//
// Called by the HTTP session once the upgrade request has passed the route's filters (auth,
// allow, rate limits); it answers the handshake itself and returns when the WebSocket is closed
// (by either side, an error, or `idle` without a message or a pong). Runs on the worker's thread.
// Upstream calls in flight when the client goes away finish on their own and are discarded.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "core/duration.h"
#include "proxy/proxy_header.h"
#include "server/asio.h"

namespace sluice::server {
class TlsStream;
struct Lane;
class Worker;
struct Snapshot;
}  // namespace sluice::server
namespace sluice::stats {
class WorkerMetrics;
}

namespace sluice::proxy {

struct BridgeRequest {
  // The client's upgrade request, for the handshake.
  std::string target;  // as received (path and query)
  std::vector<std::pair<std::string, std::string>> headers;
  // What each message becomes.
  std::string method = "POST";
  std::string path;  // origin-form, after the route's rewrite (query included)
  std::string host;  // the client's Host
  std::vector<std::pair<std::string, std::string>> extra_headers;  // x-forwarded-for, ...
  std::string connection_id;  // x-websocket-connection-id: the upgrade request's x-request-id
  uint32_t max_in_flight = 16;
  uint64_t max_message = 10 * 1024 * 1024;
  Duration idle = std::chrono::seconds(75);
  std::optional<Duration> timeout;  // per upstream request; default the upstream's
  // sluice_websocket_messages_total{route}: each client message is counted in `metrics` (the
  // worker's block for the session's snapshot) under `route`; null = not collected.
  std::shared_ptr<stats::WorkerMetrics> metrics;
  int route = -1;
  Addresses source;  // the client's connection, for an upstream with `proxy_protocol`
};

struct BridgeStats {
  bool accepted = false;  // the handshake succeeded
  uint64_t messages_in = 0, messages_out = 0, bytes_in = 0, bytes_out = 0;
  uint64_t upstream_errors = 0;  // messages answered by the gateway (no upstream answer)
};

// `tls`: the TLS stream over `socket` on a TLS listener, else null. `lane`: an HTTP/2 stream's
// lane (RFC 8441 WebSocket over HTTP/2; `socket` then only provides the executor), else null.
asio::awaitable<BridgeStats> bridge_websocket(server::Worker& worker, tcp::socket& socket,
                                              server::TlsStream* tls, server::Lane* lane,
                                              std::shared_ptr<const server::Snapshot> snap,
                                              size_t upstream_index, BridgeRequest request);

}  // namespace sluice::proxy

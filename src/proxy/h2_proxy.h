// HTTP/2 on both sides of the gateway, over the sans-I/O sessions of http/h2.h.
//
// Downstream (serve_h2): a client connection that negotiated h2 (ALPN) or sent the h2c preface.
// Each stream's request is written as HTTP/1 bytes into its own Lane (server/lane.h), where an
// HttpSession runs the exchange pipeline exactly as for an HTTP/1 client - routing, filters,
// cache, transforms, upstream choice, retries, logs and metrics are one code path for both
// protocols. The session's HTTP/1 answer is parsed back into HEADERS, DATA and trailers.
//
// Upstream (open_h2_stream): forward() asks for an upstream connection; for `protocol: h2c` or
// `http2` it gets one whose Io is a Lane into a stream of a shared, multiplexed HTTP/2 connection
// to the target (one or more per target and worker, opened on demand). The HTTP/1 request bytes
// forward() writes become a HEADERS/DATA stream; the HTTP/2 response comes back as HTTP/1 bytes,
// with trailers in the chunked trailer section - so gRPC's grpc-status survives both hops.
//
// Both directions keep flow control end to end: received DATA is consumed (WINDOW_UPDATE) only
// as the other side reads it from the lane, and a lane's writer waits while the HTTP/2 stream's
// send buffer is full.
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include "core/duration.h"
#include "core/error.h"
#include "proxy/http_session.h"
#include "server/asio.h"

namespace sluice::server {
class Worker;
struct Io;
struct UpstreamConnection;
struct CompiledUpstream;
struct CompiledTarget;
class Watchdog;
}  // namespace sluice::server

namespace sluice::proxy {

// Serves one client connection as HTTP/2 until it closes. `initial` holds bytes already read
// (the h2c preface and whatever followed it). `io` is owned by the caller and outlives the call.
asio::awaitable<void> serve_h2(server::Worker& worker, const server::Io& io,
                               std::string_view initial, std::string listener_name,
                               DownstreamInfo info);

// Attaches to `conn` (fresh, unconnected) a lane into a new stream of an HTTP/2 connection to
// `target` (reused, or opened within `connect_timeout`: TCP, TLS with ALPN h2 for `http2`).
// A failure is a connect failure (or TLS failure) for retries and outlier detection.
asio::awaitable<Error> open_h2_stream(server::Worker& worker, server::UpstreamConnection& conn,
                                      const server::CompiledUpstream& up,
                                      const server::CompiledTarget& target, const std::string& ip,
                                      const std::string& key, server::Watchdog& wd,
                                      Duration connect_timeout);

// Closes this worker's idle upstream HTTP/2 connections (drain) - streams in flight finish.
void close_h2_upstreams();

}  // namespace sluice::proxy

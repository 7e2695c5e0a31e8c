// One downstream HTTP/1 connection: the phase pipeline of SPEC/DESIGN
//   read head -> normalise -> route -> request filters -> pick target -> forward ->
//   response filters -> write -> log
// repeated for each request on the connection (keep-alive, pipelining answered in order).
#pragma once

#include <memory>
#include <string>

#include "proxy/proxy_header.h"
#include "server/asio.h"

namespace sluice::server {
class Worker;
struct Lane;
}  // namespace sluice::server

namespace sluice::proxy {

// Runs on the worker that accepted `socket` until the connection closes.
asio::awaitable<void> serve_http(server::Worker& worker, tcp::socket socket,
                                 std::string listener_name);

// What an exchange needs to know about a client connection it does not own (HTTP/2).
struct DownstreamInfo {
  std::string client_ip;
  bool https = false;  // the connection is TLS
  std::string tls_cn;  // a verified client certificate's CN
  Addresses addrs;     // client and local address, for an upstream PROXY header
};

// HTTP/2 streams, one after another, carried as HTTP/1 bytes over `lane` (server/lane.h): the
// same pipeline as serve_http. Returns when the lane closes.
asio::awaitable<void> serve_http_lane(server::Worker& worker, std::shared_ptr<server::Lane> lane,
                                      std::string listener_name, DownstreamInfo info);

}  // namespace sluice::proxy

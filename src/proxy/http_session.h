// One downstream HTTP/1 connection: the phase pipeline of SPEC/DESIGN
//   read head -> normalise -> route -> request filters -> pick target -> forward ->
//   response filters -> write -> log
// repeated for each request on the connection (keep-alive, pipelining answered in order).
#pragma once

#include <string>

#include "server/asio.h"

namespace sluice::server {
class Worker;
}

namespace sluice::proxy {

// Runs on the worker that accepted `socket` until the connection closes.
asio::awaitable<void> serve_http(server::Worker& worker, tcp::socket socket,
                                 std::string listener_name);

}  // namespace sluice::proxy

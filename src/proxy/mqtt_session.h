// One downstream MQTT 3.1.1 / 5.0 connection on a `protocol: mqtt` listener: the MQTT -> HTTP
// bridge (SPEC.md `mqtt:`). Each PUBLISH whose topic matches an `mqtt.routes` filter becomes one
// HTTP request to that route's upstream (proxy/upstream_call.h); a QoS 1 PUBLISH is acknowledged
// only once the upstream answered 2xx. docs/configuration.md#mqtt has the user-visible contract
// (headers sent upstream, reason codes, 3.1.1 / 5.0 differences).
//
// The session, in order:
//   TLS handshake (TLS listeners) -> CONNECT within limits.header_timeout -> credentials checked
//   against `mqtt.auth` -> CONNACK -> packets until DISCONNECT, keep-alive expiry (1.5 x keep
//   alive), a protocol error, an upstream failure on a QoS 1 message, or the worker draining.
// A reader decodes packets strictly (mqtt/codec.h) and answers PINGREQ, SUBSCRIBE, UNSUBSCRIBE at
// once; PUBLISHes go through a short queue to a forwarder that sends them upstream one at a
// time, in order, so that PUBACKs leave in the order their PUBLISHes arrived.
#pragma once

#include <string>

#include "server/asio.h"

namespace sluice::server {
class Worker;
}

namespace sluice::proxy {

// Runs on the worker that accepted `socket` until the connection closes.
asio::awaitable<void> serve_mqtt(server::Worker& worker, tcp::socket socket,
                                 std::string listener_name);

}  // namespace sluice::proxy

// One HTTP/1.1 request that the gateway itself makes to an upstream, with a body held in memory
// and the answer read whole: what a protocol bridge needs (MQTT PUBLISH -> HTTP request, later
// WebSocket message -> HTTP request). Client HTTP exchanges stream instead (http_session.cpp).
//
//   proxy::CallRequest req;
//   req.method = "POST";
//   req.path = "/ingest/d-7";                       // origin-form, already encoded
//   req.headers.emplace_back("x-mqtt-topic", topic);
//   req.body = std::move(payload);
//   proxy::CallResult r = co_await proxy::call_upstream(worker, snap, upstream_index,
//   std::move(req)); if (r.error) log(r.error.reason());             // no (complete) answer:
//   502/503/504 material else if (r.status / 100 == 2) ...               // r.body holds at most
//   max_response_body bytes
//
// What it does, as forward() does for client requests: the circuit breaker (max_connections,
// max_pending), targets that are unhealthy, ejected, drained or unresolved are skipped, the
// upstream's balancer picks (hash algorithms use CallRequest::hash), a pooled keep-alive connection
// is reused or a new one opened within timeouts.connect (TLS for an upstream with `tls:`), a
// connect failure moves to another target, `retries` applies (a reset or a listed 5xx only for
// the methods `retries.methods` allows, within the retry budget), every attempt's outcome feeds
// passive outlier detection, and the whole request gets timeouts.request (or CallRequest::timeout).
// Attempts and retries are counted in the upstream metrics when `snap` is the worker's current
// snapshot and the admin API is on (nobody can read them otherwise).
//
// Runs on `worker`'s thread; `snap` must outlive the call (callers hold its shared_ptr).
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "core/duration.h"
#include "core/error.h"
#include "proxy/proxy_header.h"
#include "server/asio.h"
#include "upstream/balancer.h"

namespace sluice::server {
class Worker;
struct Snapshot;
struct CompiledUpstream;
struct CompiledTarget;
struct UpstreamConnection;
class Watchdog;
}  // namespace sluice::server

namespace sluice::proxy {

struct CallRequest {
  std::string method = "POST";
  std::string path = "/";  // origin-form ("/a/b?x=1"): the caller encodes it
  std::string host;        // the Host header; empty = the target's address as configured
  // Sent after Host, in order. Names lower-case. A value holding CR, LF or NUL is not sent (the
  // caller should not produce one; this is the last line of defence against header injection).
  // x-request-id, traceparent, content-length, transfer-encoding and connection are the
  // gateway's: set them through the fields below, not here.
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;  // sent with Content-Length (also `0` when empty)
  // ring_hash / maglev: upstream::hash_key() of the key; nullopt spreads randomly.
  std::optional<uint64_t> hash;
  std::optional<Duration> timeout;  // the whole request; default the upstream's timeouts.request
  std::string request_id;           // x-request-id; empty = a new random UUID
  std::string traceparent;          // a W3C traceparent to continue; empty or invalid = a new trace
  size_t max_response_body = 1024 * 1024;  // beyond this the body is cut (body_truncated)
  // The client's connection, named in the PROXY header to an upstream with `proxy_protocol`
  // (empty addresses: the header says LOCAL / UNKNOWN).
  Addresses source;
};

struct CallResult {
  // Set when there is no complete answer: no target, circuit open, connect failure or timeout,
  // reset, invalid response, timeout. `status` may still be set when the head arrived and the body
  // did not.
  Error error;
  int status = 0;
  std::vector<std::pair<std::string, std::string>> headers;  // as received
  std::string body;
  bool body_truncated = false;  // the upstream sent more than max_response_body
  std::string target;           // address (as configured) of the last target tried; "" = none
  int attempts = 0;             // targets tried
  std::chrono::microseconds upstream_time{0};  // from the first attempt to the end of the answer
  std::string request_id;                      // the x-request-id sent
  std::string trace_id;                        // the trace the traceparent sent belongs to

  bool ok() const { return !error && status >= 200 && status < 300; }
};

asio::awaitable<CallResult> call_upstream(server::Worker& worker, const server::Snapshot& snap,
                                          size_t upstream_index, CallRequest request);

// Building blocks shared with client exchanges.

// Target choice, shared by client exchanges, bridges and L4 sessions (tcp/udp listeners).
// least_conn / p2c: `load` gets every target's in-flight count (all workers) and ctx.load points
// at it (`load` must outlive ctx); other algorithms leave both alone.
void fill_load(const server::CompiledUpstream& up, upstream::PickContext& ctx,
               std::vector<uint32_t>& load);
// excluded[i] = target i takes no new traffic now (unhealthy, ejected, drained, unresolved).
// False when every target is excluded.
bool exclude_unavailable(const server::CompiledUpstream& up, int64_t now_ms,
                         std::vector<bool>& excluded);
// The circuit breaker: one of `max` slots of `active`, or false when all are taken (the caller
// releases it with Hold<int64_t>::adopt(active)).
bool take_slot(std::atomic<int64_t>& active, uint32_t max);

// Opens `sock` to ip:port within `timeout` (the watchdog cancels a connect that takes longer).
asio::awaitable<Error> connect_target(tcp::socket& sock, const std::string& ip, uint16_t port,
                                      Duration timeout, server::Watchdog& wd);
// Upstream `tls:`: the client handshake on a fresh connection, within `timeout`. `key` is the
// pool key the TLS session cache resumes by.
asio::awaitable<Error> upstream_handshake(server::UpstreamConnection& conn,
                                          const server::CompiledUpstream& up,
                                          const server::CompiledTarget& target,
                                          const std::string& key, server::Watchdog& wd,
                                          Duration timeout);

}  // namespace sluice::proxy

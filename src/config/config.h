// The configuration as the user wrote it, after loading and validation (SPEC.md section 2).
//
//   auto loaded = config::load_file("sluice.yaml");
//   for (auto& d : loaded.diagnostics) std::cerr << d.str() << "\n";   // FILE:LINE:COL: message
//   if (!loaded.ok()) return 2;
//   const config::Config& cfg = *loaded.config;
//
// Plain data with defaults filled in; nothing here touches the network. The compiled, immutable
// form the workers use is config::Snapshot (snapshot.h).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/duration.h"

namespace sluice::config {

struct Mark {
  int line = 0;  // 1-based; 0 = unknown
  int col = 0;   // 1-based
};

struct Diagnostic {
  enum class Severity { Error, Warning };
  Severity severity = Severity::Error;
  std::string file;
  Mark mark;
  std::string message;

  // "FILE:LINE:COL: message" for errors, "FILE:LINE:COL: warning: message" for warnings.
  std::string str() const;
};

struct Limits {
  Duration header_timeout = std::chrono::seconds(10);
  Duration idle_timeout = std::chrono::seconds(75);
  Duration request_body_timeout = std::chrono::seconds(60);
  uint64_t max_request_line = 8 * 1024;
  uint64_t max_header_bytes = 32 * 1024;
  uint64_t max_headers = 100;
  uint64_t max_body = 10 * 1024 * 1024;
};

struct Log {
  std::string access = "stdout";       // stdout | stderr | off | a file path (made absolute)
  std::string access_format = "json";  // json | combined
  std::string error = "stderr";        // stdout | stderr | off | a file path
  std::string level = "info";          // debug | info | warn | error
  uint64_t buffer =
      16 * 1024 * 1024;  // per worker thread: lines waiting for the disk, then dropped
};

// One certificate chain and its private key. The loader checks that both files can be read; the
// PEM inside is parsed when the TLS context is built.
struct TlsCertificate {
  std::string cert;  // absolute path
  std::string key;   // absolute path
  Mark mark;         // the list item
};

enum class TlsVersion { Tls1_2, Tls1_3 };

struct ListenerTls {
  std::vector<TlsCertificate> certificates;  // at least one; chosen by SNI
  TlsVersion min_version = TlsVersion::Tls1_2;
  std::string client_ca;  // absolute path; empty = no mutual TLS
  // None exactly when there is no client_ca; Optional is the default with one.
  enum class ClientCert { None, Optional, Required };
  ClientCert client_cert = ClientCert::None;
  // Session-ticket keys are replaced this often; a ticket stays valid for two periods.
  Duration ticket_rotation = std::chrono::hours(12);
};

struct Listener {
  std::string name;  // defaults to "listener<N>" / "default" for the top-level `listen:`
  std::string host;  // IP literal ("0.0.0.0", "127.0.0.1", "::")
  uint16_t port = 0;
  std::string protocol = "http";
  Limits limits;                   // top-level limits with this listener's overrides applied
  std::optional<ListenerTls> tls;  // nullopt = cleartext
  bool redirect_to_https = false;  // only on a cleartext listener: answer 308 to https
  bool http2 = false;              // h2 via ALPN on TLS, h2c prior knowledge on cleartext
  // Accept a PROXY protocol v1/v2 header first (http, mqtt and tcp listeners): the address in it
  // is the client's (net/proxy_protocol.h).
  bool proxy_protocol = false;
  std::string upstream;  // tcp and udp listeners: the upstream their bytes go to (required there)
  Mark upstream_mark;    // the `upstream` value; line 0 when not written
  Mark mark;
};

// An identity that authentication resolves to (SPEC.md `consumers:`).
struct ApiKey {
  enum class Kind { Sha256, Plain };
  Kind kind = Kind::Sha256;
  std::string value;  // Sha256: 64 lower-case hex digits of the key's digest; Plain: the key
  Mark mark;
};

struct Consumer {
  std::string name;                 // [A-Za-z0-9_.@-]+, unique
  std::vector<std::string> groups;  // without duplicates
  std::vector<ApiKey> api_keys;     // unique across all consumers
  std::string password;             // crypt(3) hash ($2a$/$2b$/$2y$, $5$, $6$, $y$); empty = none
  Mark mark;
};

// A named authenticator (SPEC.md `auth:`); routes refer to it by name.
struct JwtAuth {
  std::string issuer;                  // empty = not checked
  std::vector<std::string> audiences;  // empty = not checked
  std::string keys;    // absolute path of a JWKS or PEM public key file; empty when `secret`
  std::string secret;  // HMAC secret (at least 32 bytes); empty when `keys`
  // The allow-list, never "none". Default: HS256/384/512 with a secret, every asymmetric one
  // (RS*, PS256, ES256/384, EdDSA) with keys.
  std::vector<std::string> algorithms;
  Duration leeway = Duration::zero();
  std::string consumer_claim = "sub";
  std::vector<std::pair<std::string, std::string>> forward_claims;  // claim -> header (lower-case)
};

struct ApiKeyAuth {
  std::string header;  // lower-case; empty = keys are not read from a header
  std::string query;   // empty = keys are not read from the query string
};

struct BasicAuth {
  std::string realm = "sluice";
};

struct Authenticator {
  std::string name;
  enum class Kind { Jwt, ApiKey, Basic };
  Kind kind = Kind::Jwt;
  JwtAuth jwt;  // the one of these three that `kind` names is set
  ApiKeyAuth api_key;
  BasicAuth basic;
  Mark mark;  // the name
};

struct Target {
  std::string address;  // as written, e.g. "127.0.0.1:9001" (the admin API names targets by it)
  std::string host;     // IP literal or hostname
  uint16_t port = 0;
  uint32_t weight = 1;
  Mark mark;
};

struct Timeouts {
  Duration connect = std::chrono::seconds(1);
  Duration request = std::chrono::seconds(30);
  Duration idle = std::chrono::seconds(60);
};

struct HashOn {
  enum class Kind { Ip, Header, Cookie, Consumer, Path };
  Kind kind = Kind::Ip;
  std::string name;  // header name (lower-case) or cookie name
  Mark mark;         // the `hash_on` key; line 0 when not written (ring_hash/maglev then use ip)
};

struct Sticky {
  bool enabled = false;
  std::string cookie = "sluice_affinity";
  Duration ttl = std::chrono::hours(1);
};

struct HealthCheck {
  bool enabled = false;
  enum class Type { Http, Tcp };
  Type type = Type::Http;
  std::string path = "/healthz";  // for http
  Duration interval = std::chrono::seconds(2);
  Duration timeout = std::chrono::seconds(1);
  int healthy = 2;                                      // consecutive successes to mark up
  int unhealthy = 3;                                    // consecutive failures to mark down
  std::vector<std::pair<int, int>> expect{{200, 399}};  // inclusive status ranges
  Mark mark;                                            // the `health_check` key, for diagnostics
};

struct Outlier {
  int consecutive_failures = 5;  // 0 = off
  Duration ejection_time = std::chrono::seconds(30);
  int max_ejected_percent = 50;
};

struct Retries {
  int attempts = 1;  // extra tries; 0 = off
  bool on_connect_failure = true;
  bool on_reset = true;
  std::vector<int> on_status{502, 503, 504};  // upstream answers (and our own 504 timeout)
  bool all_methods = false;                   // false = idempotent methods only
  int budget_percent = 20;                    // retries in flight <= this share (min 3)
};

struct UpstreamTls {
  std::string sni;     // empty = the target's host name (none for an IP target)
  bool verify = true;  // verify the target's certificate chain and name
  std::string ca;      // absolute path of a PEM bundle; empty = the system store
};

struct Upstream {
  std::string name;
  std::vector<Target> targets;
  std::string balance =
      "round_robin";  // round_robin | least_conn | p2c | ring_hash | maglev | random
  HashOn hash_on;
  Sticky sticky;
  HealthCheck health_check;
  Outlier outlier;
  Retries retries;
  uint32_t max_connections = 1024;
  uint32_t max_pending = 256;
  std::string protocol = "http1";
  Duration dns_ttl = std::chrono::seconds(30);
  Timeouts timeouts;
  std::optional<UpstreamTls> tls;  // nullopt = cleartext to the targets
  // `proxy_protocol: v1 | v2`: each new connection to a target starts with a PROXY protocol
  // header naming the client (tcp listeners and http exchanges); 0 = none.
  int proxy_protocol = 0;
  Mark mark;
};

// A header or query predicate of a route's `match:`.
struct ValueMatch {
  enum class Kind { Exact, Present, Regex };
  std::string name;  // header names are stored lower-case
  Kind kind = Kind::Exact;
  std::string value;  // exact text, or the RE2 pattern without the leading "~"
};

struct Match {
  std::vector<std::string> hosts;  // lower-case; "*.example.org" wildcards; empty = any host
  enum class PathKind { Any, Prefix, Exact, Regex, Template };
  PathKind path_kind = PathKind::Any;  // no path key, or `path: /`, loads as Any
  std::string path;                    // prefix, exact path, RE2 pattern or template "/u/{id}"
  std::vector<std::string> methods;    // upper-case; empty = any
  std::vector<ValueMatch> headers;
  std::vector<ValueMatch> query;
};

struct Respond {
  int status = 200;
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;
};

struct Redirect {
  std::string to;
  int status = 301;
};

struct SplitEntry {
  std::string upstream;
  uint32_t weight = 1;
};

struct Rewrite {
  enum class Kind { None, StripPrefix, Prefix, Regex };
  Kind kind = Kind::None;
  std::string prefix;   // for Prefix: prepended to the path
  std::string regex;    // for Regex: RE2 pattern applied to the path
  std::string replace;  // for Regex: replacement, \1..\9 for groups
};

struct HeaderOps {
  std::vector<std::pair<std::string, std::string>> set;  // names lower-case
  std::vector<std::string> remove;                       // names lower-case
};

// An address or a CIDR block of `allow.ips` / `deny.ips`.
struct IpRange {
  enum class Family { V4, V6 };
  Family family = Family::V4;
  std::string address;    // canonical text of the network address, host bits zero
  int prefix_length = 0;  // 0..32 or 0..128; a bare address is a /32 or /128
};

// Authorization after authentication: every kind that is listed must pass.
struct Allow {
  std::vector<std::string> consumers;  // each one defined in `consumers:`
  std::vector<std::string> groups;
  std::vector<std::string> scopes;  // from the JWT "scope"/"scp" claim
  std::vector<IpRange> ips;
  Mark scopes_mark;  // the `scopes` key, for lint; line 0 when not written
};

struct Deny {
  std::vector<IpRange> ips;
};

// One entry of a route's `rate_limit:` list (SPEC.md section 2).
struct RateLimit {
  enum class Key { Ip, Consumer, Header, Route };
  Key key = Key::Ip;
  std::string header;                         // Key::Header: the header name, lower-case
  uint64_t rate = 1;                          // requests per `period`
  Duration period = std::chrono::seconds(1);  // 1s, 1min or 1h
  uint64_t burst = 1;                         // requests at once; default = rate
  enum class Scope { Local, Global };
  Scope scope = Scope::Local;
  // Global only: 0 = strict (one atomic Redis call per decision), else the batch interval.
  Duration sync{0};
  Mark mark;
};

// Top-level `rate_limits:` (the Redis behind `scope: global` limits).
struct RateLimits {
  struct Redis {
    std::string host;
    uint16_t port = 6379;
    Duration timeout = std::chrono::milliseconds(50);
    bool allow_on_failure = true;  // on_failure: allow | deny
    Mark mark;
  };
  std::optional<Redis> redis;
};

// A route's `cache:` (SPEC.md section 2).
struct RouteCache {
  Duration ttl = std::chrono::seconds(60);  // freshness when the upstream gives none
  std::vector<std::string> vary;            // lower-case request header names keying variants
  Duration stale_if_error{0};               // serve a stale entry this long past its ttl on errors
  bool per_consumer = false;  // cache requests with credentials, keyed by the consumer
  Mark mark;
};

// Route `transform`: body conversions (src/transform/xml_json.h), empty = none.
struct RouteTransform {
  std::string request;   // "" | xml_to_json | json_to_xml
  std::string response;  // "" | xml_to_json | json_to_xml
  Mark mark;
};

// Route `websocket_bridge`: the gateway terminates the WebSocket; each message becomes one HTTP
// request to the route's upstream and its response body one message back, in order.
struct WebSocketBridge {
  std::string method = "POST";
  uint32_t max_in_flight = 16;  // messages sent upstream and not answered yet, per connection
  Mark mark;
};

struct Route {
  std::string name;  // defaults to "route<N>" (0-based index)
  Match match;
  enum class Action { Upstream, Split, Respond, Redirect };
  Action action = Action::Upstream;
  std::string upstream;
  std::vector<SplitEntry> split;
  Respond respond;
  Redirect redirect;
  Rewrite rewrite;
  HeaderOps request_headers;
  HeaderOps response_headers;
  std::optional<Duration> timeout;  // overrides the upstream's request timeout
  std::vector<std::string> auth;    // authenticator names, any one suffices; empty = none
  Allow allow;
  Deny deny;
  std::vector<RateLimit> rate_limits;  // all apply, in order
  std::optional<RouteCache> cache;
  std::optional<RouteTransform> transform;
  bool websocket = false;  // Upgrade: websocket passed through to the upstream
  std::optional<WebSocketBridge> websocket_bridge;
  Mark mark;
};

// `mqtt.routes[]`: PUBLISH topics matched by an MQTT topic filter, forwarded as HTTP requests.
struct MqttRoute {
  std::string topic;     // a topic filter: `+` one level, `#` the rest
  std::string upstream;  // an upstream name
  std::string method = "POST";
  std::string path;  // "/ingest/{1}": {n} = the text the n-th wildcard matched; default "/" + topic
  Mark mark;
};

// Top-level `mqtt:` for `protocol: mqtt` listeners.
struct Mqtt {
  std::string auth;  // a basic or api_key authenticator checking CONNECT; empty = anonymous
  std::vector<MqttRoute> routes;  // first match wins
  Mark mark;
};

// Top-level `admin:` (SPEC.md section 4): the admin API and dashboard listener.
struct Admin {
  std::string host;  // IP literal
  uint16_t port = 0;
  std::string token;  // empty = no token required
  Mark mark;
};

struct Config {
  std::string file;  // path it was loaded from ("<string>" for load_string)
  int workers = 0;   // 0 = auto (CPU cores)
  Duration shutdown_timeout = std::chrono::seconds(30);
  Log log;
  Limits limits;
  std::vector<Listener> listeners;
  std::vector<Consumer> consumers;            // in file order
  std::vector<Authenticator> authenticators;  // `auth:`, in file order
  std::vector<Upstream> upstreams;            // in file order
  std::vector<Route> routes;                  // in file order: first match wins
  RateLimits rate_limits;
  std::optional<Admin> admin;                      // off when absent
  uint64_t cache_max_size = 256ull * 1024 * 1024;  // `cache: { max_size }`: the whole process
  std::optional<Mqtt> mqtt;                        // for `protocol: mqtt` listeners

  const Upstream* find_upstream(std::string_view name) const;
  const Consumer* find_consumer(std::string_view name) const;
  const Authenticator* find_authenticator(std::string_view name) const;
};

struct LoadResult {
  std::optional<Config> config;  // set only when there is no error (warnings allowed)
  std::vector<Diagnostic> diagnostics;
  bool ok() const { return config.has_value(); }
};

// Loads, substitutes ${ENV}, validates every key and reference; reports every error at once.
LoadResult load_file(const std::string& path);
// `file_name` is used in diagnostics; relative paths resolve against `base_dir`.
LoadResult load_string(const std::string& yaml, const std::string& file_name,
                       const std::string& base_dir = ".");

// "250ms" "10s" "5m" "1h" -> Duration; "512" "64KiB" "10MiB" -> bytes. nullopt when malformed.
std::optional<Duration> parse_duration(std::string_view text);
std::optional<uint64_t> parse_size(std::string_view text);

}  // namespace sluice::config

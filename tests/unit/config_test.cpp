// config::load_string / load_file: what the user's YAML becomes, and the exact file:line:col
// diagnostics `sluice validate` prints for mistakes (SPEC.md section 2).
#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "config/config.h"

namespace sluice::config {
namespace {

using namespace std::chrono_literals;

LoadResult load(const std::string& yaml, const std::string& base_dir = "/etc/sluice") {
  return load_string(yaml, "sluice.yaml", base_dir);
}

std::vector<std::string> messages(const LoadResult& result) {
  std::vector<std::string> out;
  for (const Diagnostic& d : result.diagnostics) out.push_back(d.str());
  return out;
}

// The one diagnostic a broken file produces, as `sluice validate` prints it.
std::string only_diagnostic(const std::string& yaml, const std::string& base_dir = "/etc/sluice") {
  LoadResult result = load(yaml, base_dir);
  EXPECT_FALSE(result.ok());
  EXPECT_EQ(result.diagnostics.size(), 1u) << ::testing::PrintToString(messages(result));
  return result.diagnostics.empty() ? "" : result.diagnostics[0].str();
}

// A valid preamble so each test only adds the part it is about.
const std::string k_base = R"(listen: 0.0.0.0:8080
upstreams:
  api: [127.0.0.1:9001]
)";

TEST(ConfigTest, SmallestFileFromTheSpecLoads) {
  LoadResult result = load(R"(listen: 0.0.0.0:8080
upstreams:
  api: [127.0.0.1:9001, 127.0.0.1:9002]
routes:
  - { match: { path: / }, upstream: api }
)");
  ASSERT_TRUE(result.ok()) << ::testing::PrintToString(messages(result));
  EXPECT_TRUE(result.diagnostics.empty());
  const Config& cfg = *result.config;
  EXPECT_EQ(cfg.file, "sluice.yaml");
  EXPECT_EQ(cfg.workers, 0);
  ASSERT_EQ(cfg.listeners.size(), 1u);
  EXPECT_EQ(cfg.listeners[0].name, "default");
  EXPECT_EQ(cfg.listeners[0].host, "0.0.0.0");
  EXPECT_EQ(cfg.listeners[0].port, 8080);
  EXPECT_EQ(cfg.listeners[0].protocol, "http");
  EXPECT_EQ(cfg.listeners[0].mark.line, 1);
  ASSERT_EQ(cfg.upstreams.size(), 1u);
  const Upstream* api = cfg.find_upstream("api");
  ASSERT_NE(api, nullptr);
  ASSERT_EQ(api->targets.size(), 2u);
  EXPECT_EQ(api->targets[1].address, "127.0.0.1:9002");
  EXPECT_EQ(api->targets[1].host, "127.0.0.1");
  EXPECT_EQ(api->targets[1].port, 9002);
  EXPECT_EQ(api->targets[1].weight, 1u);
  EXPECT_EQ(api->balance, "round_robin");
  EXPECT_EQ(cfg.find_upstream("nope"), nullptr);
  ASSERT_EQ(cfg.routes.size(), 1u);
  EXPECT_EQ(cfg.routes[0].name, "route0");
  EXPECT_EQ(cfg.routes[0].match.path_kind, Match::PathKind::Any);
  EXPECT_EQ(cfg.routes[0].action, Route::Action::Upstream);
  EXPECT_EQ(cfg.routes[0].upstream, "api");
  EXPECT_EQ(cfg.routes[0].mark.line, 5);
  EXPECT_EQ(cfg.routes[0].mark.col, 5);
}

TEST(ConfigTest, FullFileWithEveryAcceptedKeyLoads) {
  LoadResult result = load(R"(workers: 4
shutdown_timeout: 1m30s
log:
  access: logs/access.log
  access_format: combined
  error: /var/log/sluice/error.log
  level: debug
limits:
  header_timeout: 5s
  idle_timeout: 2m
  request_body_timeout: 30s
  max_request_line: 4KiB
  max_header_bytes: 16k
  max_headers: 50
  max_body: 1MiB
listen: 127.0.0.1:8000
listeners:
  - name: web
    listen: "[::]:8443"
    protocol: http
    limits: { max_body: 2GiB, idle_timeout: 10s }
  - listen: 10.0.0.1:80
upstreams:
  products:
    targets:
      - 127.0.0.1:9001
      - { address: 127.0.0.1:9002, weight: 3 }
      - { address: Backend.internal:80 }
      - "[::1]:9003"
    dns_ttl: 10s
    protocol: http1
    balance: round_robin
    timeouts: { connect: 250ms, request: 10s, idle: 1h }
  v2: [10.1.0.1:80]
routes:
  - name: products-read
    match:
      host: [API.example.com, "*.example.org"]
      path: /products
      methods: [get, HEAD]
      headers: { X-Version: "2", x-beta: present, x-tenant: "~^acme-" }
      query: { preview: "1" }
    upstream: products
    rewrite: { strip_prefix: true }
    headers:
      request: { set: { X-Gateway: sluice }, remove: [Cookie] }
      response: { set: { x-frame-options: DENY }, remove: server }
    timeout: 10s
  - name: canary
    match: { host: canary.example.com, path: "/users/{id}/orders" }
    split: [{ upstream: v2, weight: 10 }, { upstream: products, weight: 90 }]
    rewrite: { prefix: /v1 }
  - match: { path_exact: /health }
    respond: { status: 204, body: "ok", headers: { Content-Type: text/plain } }
  - match: { path_regex: "^/v[0-9]+/items$" }
    upstream: products
    rewrite: { regex: "^/v([0-9]+)/items$", replace: "/items?v=\\1" }
  - match: { path: /old }
    redirect: { to: "https://example.com/new", status: 308 }
  - match: { path: /moved }
    redirect: { to: /new }
)");
  ASSERT_TRUE(result.ok()) << ::testing::PrintToString(messages(result));
  EXPECT_TRUE(result.diagnostics.empty()) << ::testing::PrintToString(messages(result));
  const Config& cfg = *result.config;
  EXPECT_EQ(cfg.workers, 4);
  EXPECT_EQ(cfg.shutdown_timeout, 90s);
  EXPECT_EQ(cfg.log.access, "/etc/sluice/logs/access.log");
  EXPECT_EQ(cfg.log.access_format, "combined");
  EXPECT_EQ(cfg.log.error, "/var/log/sluice/error.log");
  EXPECT_EQ(cfg.log.level, "debug");
  EXPECT_EQ(cfg.limits.header_timeout, 5s);
  EXPECT_EQ(cfg.limits.idle_timeout, 2min);
  EXPECT_EQ(cfg.limits.request_body_timeout, 30s);
  EXPECT_EQ(cfg.limits.max_request_line, 4096u);
  EXPECT_EQ(cfg.limits.max_header_bytes, 16384u);
  EXPECT_EQ(cfg.limits.max_headers, 50u);
  EXPECT_EQ(cfg.limits.max_body, 1024u * 1024u);

  ASSERT_EQ(cfg.listeners.size(), 3u);
  EXPECT_EQ(cfg.listeners[0].name, "default");
  EXPECT_EQ(cfg.listeners[0].host, "127.0.0.1");
  EXPECT_EQ(cfg.listeners[0].limits.max_body, 1024u * 1024u);  // inherits top-level limits
  EXPECT_EQ(cfg.listeners[1].name, "web");
  EXPECT_EQ(cfg.listeners[1].host, "::");
  EXPECT_EQ(cfg.listeners[1].port, 8443);
  EXPECT_EQ(cfg.listeners[1].limits.max_body, uint64_t{2} << 30);  // its own override
  EXPECT_EQ(cfg.listeners[1].limits.idle_timeout, 10s);
  EXPECT_EQ(cfg.listeners[1].limits.header_timeout, 5s);  // the rest inherited
  EXPECT_EQ(cfg.listeners[2].name, "listener1");
  EXPECT_EQ(cfg.listeners[2].port, 80);

  ASSERT_EQ(cfg.upstreams.size(), 2u);
  const Upstream& products = cfg.upstreams[0];
  EXPECT_EQ(products.name, "products");
  ASSERT_EQ(products.targets.size(), 4u);
  EXPECT_EQ(products.targets[1].weight, 3u);
  EXPECT_EQ(products.targets[2].host, "Backend.internal");
  EXPECT_EQ(products.targets[2].port, 80);
  EXPECT_EQ(products.targets[3].address, "[::1]:9003");
  EXPECT_EQ(products.targets[3].host, "::1");
  EXPECT_EQ(products.dns_ttl, 10s);
  EXPECT_EQ(products.protocol, "http1");
  EXPECT_EQ(products.timeouts.connect, 250ms);
  EXPECT_EQ(products.timeouts.request, 10s);
  EXPECT_EQ(products.timeouts.idle, 1h);
  EXPECT_EQ(cfg.upstreams[1].timeouts.connect, 1s);  // defaults

  ASSERT_EQ(cfg.routes.size(), 6u);
  const Route& read = cfg.routes[0];
  EXPECT_EQ(read.name, "products-read");
  EXPECT_EQ(read.match.hosts, (std::vector<std::string>{"api.example.com", "*.example.org"}));
  EXPECT_EQ(read.match.path_kind, Match::PathKind::Prefix);
  EXPECT_EQ(read.match.path, "/products");
  EXPECT_EQ(read.match.methods, (std::vector<std::string>{"GET", "HEAD"}));
  ASSERT_EQ(read.match.headers.size(), 3u);
  EXPECT_EQ(read.match.headers[0].name, "x-version");
  EXPECT_EQ(read.match.headers[0].kind, ValueMatch::Kind::Exact);
  EXPECT_EQ(read.match.headers[0].value, "2");
  EXPECT_EQ(read.match.headers[1].kind, ValueMatch::Kind::Present);
  EXPECT_EQ(read.match.headers[2].kind, ValueMatch::Kind::Regex);
  EXPECT_EQ(read.match.headers[2].value, "^acme-");
  ASSERT_EQ(read.match.query.size(), 1u);
  EXPECT_EQ(read.match.query[0].name, "preview");
  EXPECT_EQ(read.rewrite.kind, Rewrite::Kind::StripPrefix);
  EXPECT_EQ(read.request_headers.set,
            (std::vector<std::pair<std::string, std::string>>{{"x-gateway", "sluice"}}));
  EXPECT_EQ(read.request_headers.remove, (std::vector<std::string>{"cookie"}));
  EXPECT_EQ(read.response_headers.remove, (std::vector<std::string>{"server"}));
  EXPECT_EQ(read.timeout, Duration(10s));

  const Route& canary = cfg.routes[1];
  EXPECT_EQ(canary.match.path_kind, Match::PathKind::Template);
  EXPECT_EQ(canary.action, Route::Action::Split);
  ASSERT_EQ(canary.split.size(), 2u);
  EXPECT_EQ(canary.split[0].upstream, "v2");
  EXPECT_EQ(canary.split[1].weight, 90u);
  EXPECT_EQ(canary.rewrite.kind, Rewrite::Kind::Prefix);
  EXPECT_EQ(canary.rewrite.prefix, "/v1");
  EXPECT_FALSE(canary.timeout.has_value());

  const Route& health = cfg.routes[2];
  EXPECT_EQ(health.name, "route2");
  EXPECT_EQ(health.match.path_kind, Match::PathKind::Exact);
  EXPECT_EQ(health.action, Route::Action::Respond);
  EXPECT_EQ(health.respond.status, 204);
  EXPECT_EQ(health.respond.body, "ok");
  EXPECT_EQ(health.respond.headers,
            (std::vector<std::pair<std::string, std::string>>{{"content-type", "text/plain"}}));

  EXPECT_EQ(cfg.routes[3].match.path_kind, Match::PathKind::Regex);
  EXPECT_EQ(cfg.routes[3].rewrite.kind, Rewrite::Kind::Regex);
  EXPECT_EQ(cfg.routes[3].rewrite.replace, "/items?v=\\1");
  EXPECT_EQ(cfg.routes[4].action, Route::Action::Redirect);
  EXPECT_EQ(cfg.routes[4].redirect.status, 308);
  EXPECT_EQ(cfg.routes[5].redirect.to, "/new");
  EXPECT_EQ(cfg.routes[5].redirect.status, 301);
}

// ---- One exact diagnostic per kind of mistake ---------------------------------------------

TEST(ConfigTest, UnknownKeyGetsDidYouMeanHint) {
  EXPECT_EQ(only_diagnostic(k_base + "upstream: {}\n"),
            "sluice.yaml:4:1: unknown key 'upstream' at the top level (did you mean 'upstreams'?)");
  EXPECT_EQ(only_diagnostic(k_base + "routes:\n  - { upstream: api, timout: 5s }\n"),
            "sluice.yaml:5:22: unknown key 'timout' in a route (did you mean 'timeout'?)");
  EXPECT_EQ(
      only_diagnostic(k_base + "limits: { max_req: 1 }\n"),
      "sluice.yaml:4:11: unknown key 'max_req' in 'limits' (did you mean 'max_request_line'?)");
  EXPECT_EQ(only_diagnostic(k_base + "colour: blue\n"),
            "sluice.yaml:4:1: unknown key 'colour' at the top level");
}

TEST(ConfigTest, DocumentedButUnimplementedKeyIsNotSupportedYet) {
  EXPECT_EQ(only_diagnostic(k_base + "routes:\n  - upstream: api\n    cors: {}\n"),
            "sluice.yaml:6:5: 'cors' is not supported in this version yet");
}

// ---- L4: tcp / udp listeners and the PROXY protocol ------------------------------------------

TEST(ConfigTest, TcpAndUdpListenersLoadTheirUpstreamAndProxyProtocol) {
  LoadResult result = load(R"(listeners:
  - { name: db, listen: 127.0.0.1:6380, protocol: tcp, upstream: redis, proxy_protocol: true }
  - { name: dns, listen: 127.0.0.1:6380, protocol: udp, upstream: resolvers }
  - { name: web, listen: 127.0.0.1:8080, proxy_protocol: true }
upstreams:
  redis: { targets: [127.0.0.1:6379], proxy_protocol: v1 }
  resolvers: [127.0.0.1:53]
  app: { targets: [127.0.0.1:9000], proxy_protocol: v2 }
routes: [{ upstream: app }]
)");
  ASSERT_TRUE(result.ok()) << (result.diagnostics.empty() ? "" : result.diagnostics[0].str());
  EXPECT_TRUE(result.diagnostics.empty()) << result.diagnostics[0].str();
  const Config& c = *result.config;
  ASSERT_EQ(c.listeners.size(), 3u);
  EXPECT_EQ(c.listeners[0].protocol, "tcp");
  EXPECT_EQ(c.listeners[0].upstream, "redis");
  EXPECT_TRUE(c.listeners[0].proxy_protocol);
  EXPECT_EQ(c.listeners[1].protocol, "udp");
  EXPECT_EQ(c.listeners[1].upstream, "resolvers");
  EXPECT_FALSE(c.listeners[1].proxy_protocol);
  EXPECT_TRUE(c.listeners[2].proxy_protocol);
  EXPECT_EQ(c.listeners[2].upstream, "");
  EXPECT_EQ(c.upstreams[0].proxy_protocol, 1);
  EXPECT_EQ(c.upstreams[1].proxy_protocol, 0);
  EXPECT_EQ(c.upstreams[2].proxy_protocol, 2);
}

TEST(ConfigTest, L4ListenerMistakesAreReportedWithTheirPlace) {
  const std::string ups = "upstreams:\n  db: [127.0.0.1:5432]\n";
  EXPECT_EQ(only_diagnostic("listeners:\n  - { listen: 0.0.0.0:5432, protocol: tcp }\n" + ups),
            "sluice.yaml:2:5: listener 'listener0' has 'protocol: tcp' but no 'upstream' (the "
            "upstream its connections go to)");
  EXPECT_EQ(only_diagnostic("listeners:\n  - { listen: 0.0.0.0:53, protocol: udp }\n" + ups),
            "sluice.yaml:2:5: listener 'listener0' has 'protocol: udp' but no 'upstream' (the "
            "upstream its datagrams go to)");
  EXPECT_EQ(only_diagnostic(
                "listeners:\n  - { listen: 0.0.0.0:5432, protocol: tcp, upstream: dv }\n" + ups),
            "sluice.yaml:2:54: unknown upstream 'dv' (did you mean 'db'?)");
  EXPECT_EQ(only_diagnostic("listeners:\n  - { listen: 0.0.0.0:80, upstream: db }\n" + ups +
                            "routes: [{ upstream: db }]\n"),
            "sluice.yaml:2:27: 'upstream' is for tcp and udp listeners (an http listener forwards "
            "by its routes)");
  EXPECT_EQ(only_diagnostic("listeners:\n  - { listen: 0.0.0.0:53, protocol: udp, upstream: db, "
                            "proxy_protocol: true }\n" +
                            ups),
            "sluice.yaml:2:56: 'proxy_protocol' is for tcp, http and mqtt listeners (a udp "
            "listener has no connection to carry the header)");
  EXPECT_EQ(only_diagnostic("listeners:\n  - { listen: 0.0.0.0:53, protocol: udp, upstream: db }\n"
                            "upstreams:\n  db: { targets: [127.0.0.1:53], proxy_protocol: v2 }\n"),
            "sluice.yaml:2:52: listener 'listener0': upstream 'db' sends 'proxy_protocol', which "
            "a udp listener cannot carry");
  EXPECT_EQ(only_diagnostic("listen: 0.0.0.0:80\nupstreams:\n  a: { targets: [1.2.3.4:80], "
                            "proxy_protocol: v3 }\nroutes: [{upstream: a}]\n"),
            "sluice.yaml:3:47: unknown proxy_protocol version 'v3' (did you mean 'v1'?)");
  EXPECT_EQ(only_diagnostic("listeners:\n  - { listen: 0.0.0.0:80, proxy_protocol: maybe }\n"),
            "sluice.yaml:2:43: 'proxy_protocol' must be true or false, got 'maybe'");
}

// ---- Protocol translation: mqtt, transform, websocket, HTTP/2 --------------------------------

TEST(ConfigTest, Http2ListenersAndUpstreamsLoadAndBadCombinationsAreErrors) {
  LoadResult ok = load(R"(listeners:
  - { name: web, listen: 127.0.0.1:8080, http2: true }
upstreams:
  grpc: { targets: [127.0.0.1:50051], protocol: h2c, health_check: { type: tcp } }
  web: { targets: [127.0.0.1:8443], protocol: http2, tls: { verify: false } }
routes: [{ match: { path: /a }, upstream: grpc }, { upstream: web }]
)");
  ASSERT_TRUE(ok.ok()) << ::testing::PrintToString(messages(ok));
  EXPECT_TRUE(ok.config->listeners[0].http2);
  EXPECT_EQ(ok.config->upstreams[0].protocol, "h2c");
  EXPECT_EQ(ok.config->upstreams[1].protocol, "http2");

  EXPECT_EQ(only_diagnostic("listen: 0.0.0.0:80\nupstreams:\n  a: { targets: [1.2.3.4:80], "
                            "protocol: http2 }\nroutes: [{upstream: a}]\n"),
            "sluice.yaml:3:41: upstream 'a': 'protocol: http2' is HTTP/2 over TLS and needs a "
            "'tls' block (use 'h2c' for cleartext HTTP/2)");
  EXPECT_EQ(only_diagnostic("listen: 0.0.0.0:80\nupstreams:\n  a: { targets: [1.2.3.4:80], "
                            "protocol: h2c, tls: {} }\nroutes: [{upstream: a}]\n"),
            "sluice.yaml:3:41: upstream 'a': 'protocol: h2c' is cleartext HTTP/2; with 'tls' use "
            "'http2'");
  EXPECT_NE(only_diagnostic("listen: 0.0.0.0:80\nupstreams:\n  a: { targets: [1.2.3.4:80], "
                            "protocol: h2c, health_check: { path: /h } }\n"
                            "routes: [{upstream: a}]\n")
                .find("active health checks of type http speak HTTP/1.1"),
            std::string::npos);
  EXPECT_EQ(only_diagnostic("listen: 0.0.0.0:80\nupstreams:\n  a: { targets: [1.2.3.4:80], "
                            "protocol: h3 }\nroutes: [{upstream: a}]\n"),
            "sluice.yaml:3:41: unknown upstream protocol 'h3' (did you mean 'h2c'?)");
  EXPECT_EQ(only_diagnostic("listeners:\n  - { listen: 0.0.0.0:443, http2: maybe }\n"),
            "sluice.yaml:2:35: 'http2' must be true or false, got 'maybe'");
}

TEST(ConfigTest, MqttSectionLoadsRoutesAndChecksThem) {
  LoadResult result = load(R"(listeners:
  - { name: iot, listen: 127.0.0.1:1883, protocol: mqtt }
consumers: [{ name: dev1, password: "$2b$04$abcdefghijklmnopqrstuu5Ek0xw9ct1bAnkhfgeMmnM5SxEmmpZS" }]
auth: { devices: { basic: {} } }
upstreams:
  telemetry: [127.0.0.1:9001]
mqtt:
  auth: devices
  routes:
    - { topic: devices/+/telemetry, upstream: telemetry, path: "/ingest/{1}" }
    - { topic: "#", upstream: telemetry, method: PUT }
)");
  ASSERT_TRUE(result.ok()) << (result.diagnostics.empty() ? "" : result.diagnostics[0].message);
  // An upstream or authenticator that only mqtt uses is used (no lint warning).
  EXPECT_EQ(messages(result), std::vector<std::string>{});
  ASSERT_TRUE(result.config->mqtt);
  const auto& m = *result.config->mqtt;
  EXPECT_EQ(m.auth, "devices");
  ASSERT_EQ(m.routes.size(), 2u);
  EXPECT_EQ(m.routes[0].path, "/ingest/{1}");
  EXPECT_EQ(m.routes[0].method, "POST");
  EXPECT_EQ(m.routes[1].method, "PUT");

  const std::string up = "listen: 0.0.0.0:80\nupstreams: { t: [127.0.0.1:1] }\n";
  EXPECT_EQ(only_diagnostic(up + "mqtt: { routes: [{ topic: a/#/b, upstream: t }] }\n"),
            "sluice.yaml:3:27: invalid topic filter 'a/#/b': '#' must be a whole level and the "
            "last one");
  EXPECT_EQ(only_diagnostic(up + "mqtt: { routes: [{ topic: a+/b, upstream: t }] }\n"),
            "sluice.yaml:3:27: invalid topic filter 'a+/b': '+' must be a whole level");
  EXPECT_EQ(
      only_diagnostic(up + "mqtt: { routes: [{ topic: a/+, upstream: t, path: \"/x/{2}\" }] }\n"),
      "sluice.yaml:3:51: mqtt route 'path' '/x/{2}': {n} must name a wildcard of the topic "
      "filter (1 to 1)");
  EXPECT_EQ(only_diagnostic(up + "mqtt: { routes: [{ topic: a, upstream: nope }] }\n"),
            "sluice.yaml:3:40: unknown upstream 'nope'");
  EXPECT_EQ(
      only_diagnostic(up + "auth: { j: { jwt: { secret: 0123456789abcdef0123456789abcdef } } }\n"
                           "mqtt: { auth: j, routes: [{ topic: a, upstream: t }] }\n"),
      "sluice.yaml:4:15: mqtt 'auth' must be a basic or api_key authenticator (CONNECT "
      "carries a username and password), not jwt");
  EXPECT_EQ(only_diagnostic("listeners: [{ name: m, listen: 0.0.0.0:1883, protocol: mqtt }]\n"),
            "sluice.yaml:1:13: listener 'm' has 'protocol: mqtt' but there is no top-level 'mqtt' "
            "section with its routes");
}

TEST(ConfigTest, RouteTransformAndWebSocketOptions) {
  LoadResult result = load(k_base + R"(routes:
  - { match: { path: /x }, upstream: api, transform: { request: xml_to_json, response: json_to_xml } }
  - { match: { path: /ws }, upstream: api, websocket: true }
  - { match: { path: /bridge }, upstream: api, websocket_bridge: { method: PUT, max_in_flight: 4 } }
)");
  ASSERT_TRUE(result.ok()) << (result.diagnostics.empty() ? "" : result.diagnostics[0].message);
  const auto& r = result.config->routes;
  ASSERT_TRUE(r[0].transform);
  EXPECT_EQ(r[0].transform->request, "xml_to_json");
  EXPECT_EQ(r[0].transform->response, "json_to_xml");
  EXPECT_TRUE(r[1].websocket);
  ASSERT_TRUE(r[2].websocket_bridge);
  EXPECT_EQ(r[2].websocket_bridge->method, "PUT");
  EXPECT_EQ(r[2].websocket_bridge->max_in_flight, 4u);

  EXPECT_EQ(only_diagnostic(k_base + "routes: [{ upstream: api, transform: { request: yaml } }]\n"),
            "sluice.yaml:4:49: unknown request transform 'yaml' (expected xml_to_json or "
            "json_to_xml)");
  EXPECT_EQ(
      only_diagnostic(k_base +
                      "routes: [{ upstream: api, websocket: true, websocket_bridge: {} }]\n"),
      "sluice.yaml:4:44: route 'route0' has both 'websocket' (passthrough) and 'websocket_bridge' "
      "(terminated here): choose one");
  EXPECT_EQ(only_diagnostic(k_base + "routes: [{ respond: { status: 200 }, websocket: true }]\n"),
            "sluice.yaml:4:10: route 'route0': WebSocket needs an 'upstream' (or 'split') to send "
            "to");
}

// ---- Upstream policies: balance, hash_on, sticky, health_check, outlier, retries, limits ------

TEST(ConfigTest, UpstreamWithEveryPolicyKeyLoads) {
  LoadResult result = load(R"(listen: 0.0.0.0:8080
upstreams:
  products:
    targets: [127.0.0.1:9001, 127.0.0.1:9002]
    balance: ring_hash
    hash_on: header:X-User
    sticky: { cookie: route_id, ttl: 30m }
    health_check:
      type: http
      path: /ready
      interval: 5s
      timeout: 500ms
      healthy: 3
      unhealthy: 4
      expect: [200-299, 304]
    outlier:
      consecutive_failures: 7
      ejection_time: 1m
      max_ejected: 25%
    retries:
      attempts: 3
      on: [connect_failure, 503, 500, 503]
      methods: all
      budget: 10%
    max_connections: 500
    max_pending: 0
  by-cookie: { targets: [127.0.0.1:9003], balance: maglev, hash_on: "cookie:Session" }
  by-consumer: { targets: [127.0.0.1:9004], balance: ring_hash, hash_on: consumer }
  by-path: { targets: [127.0.0.1:9005], balance: maglev, hash_on: path }
routes:
  - { match: { path: /a }, upstream: products }
  - { match: { path: /b }, upstream: by-cookie }
  - { match: { path: /c }, upstream: by-consumer }
  - { match: { path: /d }, upstream: by-path }
)");
  ASSERT_TRUE(result.ok()) << ::testing::PrintToString(messages(result));
  EXPECT_TRUE(result.diagnostics.empty()) << ::testing::PrintToString(messages(result));
  const Upstream& u = result.config->upstreams[0];
  EXPECT_EQ(u.balance, "ring_hash");
  EXPECT_EQ(u.hash_on.kind, HashOn::Kind::Header);
  EXPECT_EQ(u.hash_on.name, "x-user");
  EXPECT_EQ(u.hash_on.mark.line, 6);
  EXPECT_TRUE(u.sticky.enabled);
  EXPECT_EQ(u.sticky.cookie, "route_id");
  EXPECT_EQ(u.sticky.ttl, 30min);
  EXPECT_TRUE(u.health_check.enabled);
  EXPECT_EQ(u.health_check.type, HealthCheck::Type::Http);
  EXPECT_EQ(u.health_check.path, "/ready");
  EXPECT_EQ(u.health_check.interval, 5s);
  EXPECT_EQ(u.health_check.timeout, 500ms);
  EXPECT_EQ(u.health_check.healthy, 3);
  EXPECT_EQ(u.health_check.unhealthy, 4);
  EXPECT_EQ(u.health_check.expect, (std::vector<std::pair<int, int>>{{200, 299}, {304, 304}}));
  EXPECT_EQ(u.outlier.consecutive_failures, 7);
  EXPECT_EQ(u.outlier.ejection_time, 1min);
  EXPECT_EQ(u.outlier.max_ejected_percent, 25);
  EXPECT_EQ(u.retries.attempts, 3);
  EXPECT_TRUE(u.retries.on_connect_failure);
  EXPECT_FALSE(u.retries.on_reset);
  EXPECT_EQ(u.retries.on_status, (std::vector<int>{503, 500}));
  EXPECT_TRUE(u.retries.all_methods);
  EXPECT_EQ(u.retries.budget_percent, 10);
  EXPECT_EQ(u.max_connections, 500u);
  EXPECT_EQ(u.max_pending, 0u);

  const Upstream& by_cookie = result.config->upstreams[1];
  EXPECT_EQ(by_cookie.balance, "maglev");
  EXPECT_EQ(by_cookie.hash_on.kind, HashOn::Kind::Cookie);
  EXPECT_EQ(by_cookie.hash_on.name, "Session");  // cookie names keep their case
  EXPECT_EQ(result.config->upstreams[2].hash_on.kind, HashOn::Kind::Consumer);
  EXPECT_EQ(result.config->upstreams[3].hash_on.kind, HashOn::Kind::Path);
}

TEST(ConfigTest, UpstreamPoliciesDefaultToTheSpec) {
  LoadResult result = load(R"(listen: 0.0.0.0:8080
upstreams:
  a: [127.0.0.1:9001]
  hashed: { targets: [127.0.0.1:9002], balance: maglev }
  b: { targets: [127.0.0.1:9003], balance: least_conn }
  c: { targets: [127.0.0.1:9004], balance: p2c }
  d: { targets: [127.0.0.1:9005], balance: random }
  e: { targets: [127.0.0.1:9006], balance: round_robin }
routes:
  - split: [{ upstream: a }, { upstream: hashed }, { upstream: b }, { upstream: c },
            { upstream: d }, { upstream: e }]
)");
  ASSERT_TRUE(result.ok()) << ::testing::PrintToString(messages(result));
  EXPECT_TRUE(result.diagnostics.empty()) << ::testing::PrintToString(messages(result));
  const Upstream& u = result.config->upstreams[0];
  EXPECT_EQ(u.balance, "round_robin");
  EXPECT_FALSE(u.sticky.enabled);
  EXPECT_FALSE(u.health_check.enabled);
  EXPECT_EQ(u.health_check.expect, (std::vector<std::pair<int, int>>{{200, 399}}));
  EXPECT_EQ(u.outlier.consecutive_failures, 5);
  EXPECT_EQ(u.outlier.ejection_time, 30s);
  EXPECT_EQ(u.outlier.max_ejected_percent, 50);
  EXPECT_EQ(u.retries.attempts, 1);
  EXPECT_TRUE(u.retries.on_connect_failure);
  EXPECT_TRUE(u.retries.on_reset);
  EXPECT_EQ(u.retries.on_status, (std::vector<int>{502, 503, 504}));
  EXPECT_FALSE(u.retries.all_methods);
  EXPECT_EQ(u.retries.budget_percent, 20);
  EXPECT_EQ(u.max_connections, 1024u);
  EXPECT_EQ(u.max_pending, 256u);
  // ring_hash / maglev without hash_on hash the client address, and that is no warning.
  const Upstream& hashed = result.config->upstreams[1];
  EXPECT_EQ(hashed.hash_on.kind, HashOn::Kind::Ip);
  EXPECT_EQ(hashed.hash_on.mark.line, 0);
  EXPECT_EQ(result.config->upstreams[2].balance, "least_conn");
  EXPECT_EQ(result.config->upstreams[3].balance, "p2c");
  EXPECT_EQ(result.config->upstreams[4].balance, "random");
}

TEST(ConfigTest, UpstreamPolicyShorthands) {
  LoadResult result = load(R"(listen: 0.0.0.0:8080
upstreams:
  a:
    targets: [127.0.0.1:9001]
    sticky: true
    outlier: off
    health_check: { type: tcp }
  b: { targets: [127.0.0.1:9002], sticky: {}, outlier: false, retries: { attempts: 0 } }
  c: { targets: [127.0.0.1:9003], sticky: false, outlier: on, retries: { on: 502 } }
routes:
  - split: [{ upstream: a }, { upstream: b }, { upstream: c }]
)");
  ASSERT_TRUE(result.ok()) << ::testing::PrintToString(messages(result));
  EXPECT_TRUE(result.diagnostics.empty()) << ::testing::PrintToString(messages(result));
  const Upstream& a = result.config->upstreams[0];
  EXPECT_TRUE(a.sticky.enabled);
  EXPECT_EQ(a.sticky.cookie, "sluice_affinity");
  EXPECT_EQ(a.sticky.ttl, 1h);
  EXPECT_EQ(a.outlier.consecutive_failures, 0);
  EXPECT_TRUE(a.health_check.enabled);
  EXPECT_EQ(a.health_check.type, HealthCheck::Type::Tcp);
  EXPECT_EQ(a.health_check.interval, 2s);
  EXPECT_EQ(a.health_check.healthy, 2);
  EXPECT_EQ(a.health_check.unhealthy, 3);
  const Upstream& b = result.config->upstreams[1];
  EXPECT_TRUE(b.sticky.enabled);
  EXPECT_EQ(b.sticky.cookie, "sluice_affinity");
  EXPECT_EQ(b.outlier.consecutive_failures, 0);
  EXPECT_EQ(b.retries.attempts, 0);
  const Upstream& c = result.config->upstreams[2];
  EXPECT_FALSE(c.sticky.enabled);
  EXPECT_EQ(c.outlier.consecutive_failures, 5);
  EXPECT_FALSE(c.retries.on_connect_failure);  // an `on` list replaces the default one
  EXPECT_FALSE(c.retries.on_reset);
  EXPECT_EQ(c.retries.on_status, (std::vector<int>{502}));
}

// An upstream `a` with its targets on line 4; `body` (indented by 4) starts on line 5.
std::string upstream_with(const std::string& body) {
  return "listen: 0.0.0.0:80\nupstreams:\n  a:\n    targets: [1.2.3.4:80]\n" + body +
         "routes: [{ upstream: a }]\n";
}

TEST(ConfigTest, BadBalance) {
  EXPECT_EQ(only_diagnostic(upstream_with("    balance: least_con\n")),
            "sluice.yaml:5:14: unknown balance 'least_con' (did you mean 'least_conn'?)");
  EXPECT_EQ(only_diagnostic(upstream_with("    balance: fastest\n")),
            "sluice.yaml:5:14: unknown balance 'fastest' (expected round_robin, least_conn, p2c, "
            "ring_hash, maglev or random)");
}

TEST(ConfigTest, BadHashOn) {
  EXPECT_EQ(only_diagnostic(upstream_with("    balance: ring_hash\n    hash_on: hedaer:x-user\n")),
            "sluice.yaml:6:14: unknown hash_on 'hedaer:x-user' (did you mean 'header:x-user'?)");
  EXPECT_EQ(only_diagnostic(upstream_with("    balance: maglev\n    hash_on: source\n")),
            "sluice.yaml:6:14: unknown hash_on 'source' (expected ip, header:NAME, cookie:NAME, "
            "consumer or path)");
  EXPECT_EQ(only_diagnostic(upstream_with("    balance: maglev\n    hash_on: header\n")),
            "sluice.yaml:6:14: hash_on 'header' needs a name: header:NAME");
  EXPECT_EQ(only_diagnostic(upstream_with("    balance: maglev\n    hash_on: \"cookie:a b\"\n")),
            "sluice.yaml:6:14: invalid cookie name 'a b' in 'hash_on'");
  EXPECT_EQ(only_diagnostic(upstream_with("    balance: maglev\n    hash_on: ip:v4\n")),
            "sluice.yaml:6:14: hash_on 'ip' takes no name, got 'ip:v4'");
}

TEST(ConfigTest, HashOnWithABalanceThatDoesNotHashIsAWarning) {
  LoadResult result = load(upstream_with("    balance: least_conn\n    hash_on: consumer\n"));
  ASSERT_TRUE(result.ok()) << ::testing::PrintToString(messages(result));
  EXPECT_EQ(messages(result),
            (std::vector<std::string>{"sluice.yaml:6:5: warning: 'hash_on' has no effect with "
                                      "balance 'least_conn' (only ring_hash and maglev hash "
                                      "requests)"}));
  EXPECT_EQ(result.diagnostics[0].severity, Diagnostic::Severity::Warning);
  // The default balance (round_robin) does not hash either.
  result = load(upstream_with("    hash_on: ip\n"));
  ASSERT_TRUE(result.ok());
  EXPECT_EQ(messages(result),
            (std::vector<std::string>{"sluice.yaml:5:5: warning: 'hash_on' has no effect with "
                                      "balance 'round_robin' (only ring_hash and maglev hash "
                                      "requests)"}));
}

TEST(ConfigTest, BadSticky) {
  EXPECT_EQ(only_diagnostic(upstream_with("    sticky: { cookie: \"a;b\" }\n")),
            "sluice.yaml:5:23: invalid cookie name 'a;b'");
  EXPECT_EQ(only_diagnostic(upstream_with("    sticky: { ttl: 0s }\n")),
            "sluice.yaml:5:20: 'ttl' must be longer than 0");
  EXPECT_EQ(only_diagnostic(upstream_with("    sticky: yes\n")),
            "sluice.yaml:5:13: 'sticky' must be a map, true/on or false/off, got 'yes'");
  EXPECT_EQ(only_diagnostic(upstream_with("    sticky: { cokie: x }\n")),
            "sluice.yaml:5:15: unknown key 'cokie' in 'sticky' (did you mean 'cookie'?)");
}

TEST(ConfigTest, BadHealthCheck) {
  EXPECT_EQ(only_diagnostic(upstream_with("    health_check:\n      type: tcp\n"
                                          "      path: /healthz\n")),
            "sluice.yaml:7:7: 'path' is only for type http: a tcp health check only connects");
  EXPECT_EQ(only_diagnostic(upstream_with("    health_check: { path: healthz }\n")),
            "sluice.yaml:5:27: 'path' must start with '/', got 'healthz'");
  EXPECT_EQ(only_diagnostic(upstream_with("    health_check: { type: udp }\n")),
            "sluice.yaml:5:27: unknown health check type 'udp' (did you mean 'tcp'?)");
  EXPECT_EQ(only_diagnostic(upstream_with("    health_check: { unhealthy: 0 }\n")),
            "sluice.yaml:5:32: 'unhealthy' must be an integer from 1 to 100, got '0'");
  EXPECT_EQ(only_diagnostic(upstream_with("    health_check: { interval: 0ms }\n")),
            "sluice.yaml:5:31: 'interval' must be longer than 0");
  EXPECT_EQ(only_diagnostic(upstream_with("    health_check: { expect: [200, 399-200] }\n")),
            "sluice.yaml:5:35: invalid status range '399-200' in 'expect': 399 is greater than "
            "200");
  EXPECT_EQ(only_diagnostic(upstream_with("    health_check: { expect: [200-600] }\n")),
            "sluice.yaml:5:30: invalid status '200-600' in 'expect': codes are from 100 to 599");
  EXPECT_EQ(only_diagnostic(upstream_with("    health_check: { expect: 2xx }\n")),
            "sluice.yaml:5:29: invalid status '2xx' in 'expect' (expected a code like 204 or a "
            "range like 200-399)");
  EXPECT_EQ(only_diagnostic(upstream_with("    health_check: { expect: [] }\n")),
            "sluice.yaml:5:29: 'expect' needs at least one status");
}

TEST(ConfigTest, HealthCheckTimeoutNotShorterThanIntervalIsAWarning) {
  LoadResult result =
      load(upstream_with("    health_check:\n      interval: 1s\n      timeout: 1500ms\n"));
  ASSERT_TRUE(result.ok()) << ::testing::PrintToString(messages(result));
  EXPECT_EQ(messages(result),
            (std::vector<std::string>{
                "sluice.yaml:5:5: warning: health check 'timeout' (1500ms) is not shorter than "
                "its 'interval' (1s): a check may still be waiting when the next one is due"}));
}

TEST(ConfigTest, BadOutlier) {
  EXPECT_EQ(only_diagnostic(upstream_with("    outlier: { max_ejected: 150% }\n")),
            "sluice.yaml:5:29: 'max_ejected' must be a percentage from 0% to 100%, got '150%'");
  EXPECT_EQ(only_diagnostic(upstream_with("    outlier: { max_ejected: 50 }\n")),
            "sluice.yaml:5:29: 'max_ejected' must be a percentage from 0% to 100%, got '50'");
  EXPECT_EQ(only_diagnostic(upstream_with("    outlier: { consecutive_failures: 1001 }\n")),
            "sluice.yaml:5:38: 'consecutive_failures' must be an integer from 0 to 1000, got "
            "'1001'");
  EXPECT_EQ(only_diagnostic(upstream_with("    outlier: disabled\n")),
            "sluice.yaml:5:14: 'outlier' must be a map, true/on or false/off, got 'disabled'");
}

TEST(ConfigTest, BadRetries) {
  EXPECT_EQ(only_diagnostic(upstream_with("    retries: { attempts: 11 }\n")),
            "sluice.yaml:5:26: 'attempts' must be an integer from 0 to 10, got '11'");
  EXPECT_EQ(only_diagnostic(upstream_with("    retries: { on: [reset, timeout] }\n")),
            "sluice.yaml:5:28: unknown retry condition 'timeout' (expected connect_failure, "
            "reset or a 5xx status code)");
  EXPECT_EQ(only_diagnostic(upstream_with("    retries: { on: [connect_fail] }\n")),
            "sluice.yaml:5:21: unknown retry condition 'connect_fail' (did you mean "
            "'connect_failure'?)");
  EXPECT_EQ(only_diagnostic(upstream_with("    retries: { on: [502, 404] }\n")),
            "sluice.yaml:5:26: retry condition '404' is not a 5xx status code");
  EXPECT_EQ(only_diagnostic(upstream_with("    retries: { on: [] }\n")),
            "sluice.yaml:5:20: 'on' needs at least one condition ('attempts: 0' turns retries "
            "off)");
  EXPECT_EQ(only_diagnostic(upstream_with("    retries: { methods: safe }\n")),
            "sluice.yaml:5:25: unknown retry methods 'safe' (expected idempotent or all)");
  EXPECT_EQ(only_diagnostic(upstream_with("    retries: { budget: 101% }\n")),
            "sluice.yaml:5:24: 'budget' must be a percentage from 0% to 100%, got '101%'");
}

TEST(ConfigTest, BadConnectionLimits) {
  EXPECT_EQ(only_diagnostic(upstream_with("    max_connections: 0\n")),
            "sluice.yaml:5:22: 'max_connections' must be an integer from 1 to 1000000, got '0'");
  EXPECT_EQ(only_diagnostic(upstream_with("    max_pending: 1000001\n")),
            "sluice.yaml:5:18: 'max_pending' must be an integer from 0 to 1000000, got "
            "'1000001'");
}

TEST(ConfigTest, BadDuration) {
  EXPECT_EQ(only_diagnostic(k_base + "limits:\n  header_timeout: 10\n"),
            "sluice.yaml:5:19: invalid duration '10' for 'header_timeout' (expected a number with "
            "a unit: 250ms, 10s, 5m, 1h)");
}

TEST(ConfigTest, BadSize) {
  EXPECT_EQ(only_diagnostic(k_base + "limits:\n  max_body: 10MB\n"),
            "sluice.yaml:5:13: invalid size '10MB' for 'max_body' (expected bytes, or a number "
            "with KiB, MiB or GiB)");
}

TEST(ConfigTest, UnknownUpstreamReference) {
  EXPECT_EQ(only_diagnostic(k_base + "routes:\n  - upstream: apj\n"),
            "sluice.yaml:5:15: unknown upstream 'apj' (did you mean 'api'?)");
  EXPECT_EQ(
      only_diagnostic(k_base + "routes:\n  - split: [{ upstream: api }, { upstream: zzz }]\n"),
      "sluice.yaml:5:44: unknown upstream 'zzz'");
}

TEST(ConfigTest, TwoActionsOnOneRoute) {
  EXPECT_EQ(only_diagnostic(k_base + "routes:\n  - upstream: api\n    respond: { status: 200 }\n"),
            "sluice.yaml:6:5: route 'route0' has both 'upstream' and 'respond': give exactly one "
            "of upstream, split, respond or redirect");
  EXPECT_EQ(only_diagnostic(k_base + "routes:\n  - name: r\n    match: { path: / }\n"),
            "sluice.yaml:5:5: route 'r' needs one of upstream, split, respond or redirect");
}

TEST(ConfigTest, BadRegexReportsRe2Error) {
  EXPECT_EQ(
      only_diagnostic(k_base + "routes:\n  - { match: { path_regex: \"^/(a\" }, upstream: api }\n"),
      "sluice.yaml:5:28: invalid path_regex '^/(a': missing ): ^/(a");
  EXPECT_EQ(only_diagnostic(
                k_base + "routes:\n  - { match: { headers: { x-t: \"~[z\" } }, upstream: api }\n"),
            "sluice.yaml:5:32: invalid regex '[z' for header 'x-t': missing ]: [z");
  EXPECT_EQ(only_diagnostic(
                k_base + "routes:\n  - { upstream: api, rewrite: { regex: \"(\", replace: x } }\n"),
            "sluice.yaml:5:40: invalid rewrite regex '(': missing ): (");
}

TEST(ConfigTest, BadListenAddress) {
  EXPECT_EQ(only_diagnostic("listen: localhost:8080\n"),
            "sluice.yaml:1:9: invalid listen address 'localhost:8080': the host must be an IP "
            "address (a listener cannot bind a hostname)");
  EXPECT_EQ(only_diagnostic("listen: 0.0.0.0:70000\n"),
            "sluice.yaml:1:9: invalid listen address '0.0.0.0:70000': port must be 1..65535");
  EXPECT_EQ(only_diagnostic("listen: 0.0.0.0\n"),
            "sluice.yaml:1:9: invalid listen address '0.0.0.0': missing ':port'");
  EXPECT_EQ(only_diagnostic("listen: ::1:80\n"),
            "sluice.yaml:1:9: invalid listen address '::1:80': an IPv6 address must be written in "
            "brackets, e.g. [::1]:8080");
}

TEST(ConfigTest, UnsetEnvironmentVariable) {
  unsetenv("SLUICE_TEST_UNSET");
  EXPECT_EQ(only_diagnostic(k_base + "routes:\n  - upstream: ${SLUICE_TEST_UNSET}\n"),
            "sluice.yaml:5:15: environment variable 'SLUICE_TEST_UNSET' is not set");
}

TEST(ConfigTest, DuplicateRouteName) {
  EXPECT_EQ(
      only_diagnostic(k_base + "routes:\n  - { name: a, match: { path: /a }, upstream: api }\n"
                               "  - { name: a, match: { path: /b }, upstream: api }\n"),
      "sluice.yaml:6:13: duplicate route name 'a' (first used at line 5)");
}

TEST(ConfigTest, YamlSyntaxErrorHasPosition) {
  EXPECT_EQ(only_diagnostic("listen: 0.0.0.0:80\nlog: { level: info\n"),
            "sluice.yaml:3:1: YAML syntax error: end of map flow not found");
  EXPECT_EQ(only_diagnostic("listen: a: b\n"),
            "sluice.yaml:1:10: YAML syntax error: illegal map value");
}

TEST(ConfigTest, SecondYamlDocumentIsRefused) {
  EXPECT_EQ(only_diagnostic(k_base + "---\nlisten: 0.0.0.0:81\n"),
            "sluice.yaml:5:1: only one YAML document is allowed in a config file");
}

// yaml-cpp reads a NUL byte as an endless stream of empty documents (found by the fuzzer).
TEST(ConfigTest, NulByteIsRefusedAtItsPosition) {
  EXPECT_EQ(only_diagnostic(std::string("listen: 0.0.0.0:80\nlog: \0\n", 25)),
            "sluice.yaml:2:6: the file contains a NUL byte: a config must be UTF-8 text");
}

TEST(ConfigTest, WrongTypesAreReportedAtTheNode) {
  EXPECT_EQ(only_diagnostic(k_base + "routes: { a: 1 }\n"),
            "sluice.yaml:4:9: 'routes' must be a list, got a map");
  EXPECT_EQ(
      only_diagnostic("listen: 0.0.0.0:80\nupstreams:\n  a:\n    targets:\n"
                      "      - { address: 1.2.3.4:80, weight: heavy }\nroutes: [{upstream: a}]\n"),
      "sluice.yaml:5:40: 'weight' must be an integer from 1 to 1000000, got 'heavy'");
  EXPECT_EQ(only_diagnostic("[1, 2]\n"),
            "sluice.yaml:1:1: the configuration must be a map, got a list");
}

TEST(ConfigTest, OtherValueChecks) {
  EXPECT_EQ(only_diagnostic(
                "listeners:\n  - { listen: 0.0.0.0:80 }\n  - { name: b, listen: 0.0.0.0:80 }\n"),
            "sluice.yaml:3:24: listener 'b' uses the address of listener 'listener0' (line 2)");
  EXPECT_EQ(
      only_diagnostic("listen: 0.0.0.0:80\nlisteners: [{ name: default, listen: \"[::]:80\" }]\n"),
      "sluice.yaml:2:21: duplicate listener name 'default' (first used at line 1)");
  EXPECT_EQ(only_diagnostic("workers: auto\n"),
            "sluice.yaml:1:1: no listener: add 'listen: HOST:PORT' or a 'listeners' list");
  EXPECT_EQ(only_diagnostic(k_base + "workers: 2000\n"),
            "sluice.yaml:4:10: 'workers' must be 'auto' or a number from 1 to 1024, got '2000'");
  EXPECT_EQ(only_diagnostic(k_base +
                            "routes:\n  - { match: { path: \"/u/{id}/{id}\" }, upstream: api }\n"),
            "sluice.yaml:5:22: invalid path template '/u/{id}/{id}': parameter 'id' appears twice");
  EXPECT_EQ(
      only_diagnostic(k_base + "routes:\n  - { match: { path: \"/u/x{id}\" }, upstream: api }\n"),
      "sluice.yaml:5:22: invalid path template '/u/x{id}': a parameter must be a whole "
      "segment, like /{id}/");
  EXPECT_EQ(only_diagnostic(
                k_base + "routes:\n  - { match: { path: /a, path_exact: /b }, upstream: api }\n"),
            "sluice.yaml:5:26: 'match' has both 'path' and 'path_exact': give at most one of path, "
            "path_exact or path_regex");
  EXPECT_EQ(only_diagnostic(k_base +
                            "routes:\n  - { match: { methods: [get, \"p t\"] }, upstream: api }\n"),
            "sluice.yaml:5:31: invalid method 'p t'");
  EXPECT_EQ(only_diagnostic(k_base + "routes:\n  - respond: { status: 600 }\n"),
            "sluice.yaml:5:24: 'status' must be an integer from 100 to 599, got '600'");
  EXPECT_EQ(only_diagnostic(k_base + "routes:\n  - redirect: { to: /x, status: 200 }\n"),
            "sluice.yaml:5:33: redirect 'status' must be 301, 302, 303, 307 or 308, got '200'");
  EXPECT_EQ(only_diagnostic(k_base + "routes:\n  - redirect: { status: 301 }\n"),
            "sluice.yaml:5:15: 'redirect' needs 'to'");
  EXPECT_EQ(only_diagnostic(k_base + "routes:\n  - split: []\n"),
            "sluice.yaml:5:12: 'split' needs at least one entry");
  EXPECT_EQ(only_diagnostic(k_base + "routes:\n  - split: [{ upstream: api, weight: 0 }]\n"),
            "sluice.yaml:5:38: 'weight' must be an integer from 1 to 1000000, got '0'");
  EXPECT_EQ(only_diagnostic(
                "listen: 0.0.0.0:80\nupstreams:\n  a: [\"no port\"]\nroutes: [{upstream: a}]\n"),
            "sluice.yaml:3:7: invalid target address 'no port': missing ':port'");
  EXPECT_EQ(only_diagnostic("listen: 0.0.0.0:80\nupstreams:\n  a: []\nroutes: [{upstream: a}]\n"),
            "sluice.yaml:3:6: upstream 'a' has no targets");
  EXPECT_EQ(only_diagnostic(k_base + "log: { level: warning }\n"),
            "sluice.yaml:4:15: unknown log level 'warning' (did you mean 'warn'?)");
  EXPECT_EQ(
      only_diagnostic(k_base + "routes:\n  - { match: { path: /a }, upstream: api }\n"
                               "  - { match: { path: /a }, upstream: api }\n  - name: route1\n"
                               "    upstream: api\n"),
      "sluice.yaml:7:11: duplicate route name 'route1' (first used at line 6)");
}

TEST(ConfigTest, ReportsEveryErrorAtOnceSortedByPosition) {
  LoadResult result = load(R"(listen: 0.0.0.0:8080
workers: many
limits: { max_body: lots, idle_timeout: 1d }
upstreams:
  api: [127.0.0.1:9001]
routes:
  - upstream: nope
    cors: {}
  - match: { path_regex: "(" }
    upstream: api
    timeout: soon
)");
  EXPECT_FALSE(result.ok());
  EXPECT_EQ(
      messages(result),
      (std::vector<std::string>{
          "sluice.yaml:2:10: 'workers' must be 'auto' or a number from 1 to 1024, got 'many'",
          "sluice.yaml:3:21: invalid size 'lots' for 'max_body' (expected bytes, or a number "
          "with KiB, MiB or GiB)",
          "sluice.yaml:3:41: invalid duration '1d' for 'idle_timeout' (expected a number with "
          "a unit: 250ms, 10s, 5m, 1h)",
          "sluice.yaml:7:15: unknown upstream 'nope'",
          "sluice.yaml:8:5: 'cors' is not supported in this version yet",
          "sluice.yaml:9:26: invalid path_regex '(': missing ): (",
          "sluice.yaml:11:14: invalid duration 'soon' for 'timeout' (expected a number with a "
          "unit: 250ms, 10s, 5m, 1h)",
      }));
}

TEST(ConfigTest, EnvironmentVariablesAreSubstitutedInsideScalars) {
  setenv("SLUICE_TEST_PORT", "9443", 1);
  setenv("SLUICE_TEST_HOST", "backend.internal", 1);
  setenv("SLUICE_TEST_EMPTY", "", 1);
  LoadResult result = load(R"(listen: 0.0.0.0:${SLUICE_TEST_PORT}
upstreams:
  api: ["${SLUICE_TEST_HOST}:80"]
routes:
  - match: { path: "/${SLUICE_TEST_EMPTY}x" }
    respond: { body: "cost: $5 ${not a var} ${SLUICE_TEST_PORT}${SLUICE_TEST_PORT}" }
  - upstream: api
)");
  ASSERT_TRUE(result.ok()) << ::testing::PrintToString(messages(result));
  const Config& cfg = *result.config;
  EXPECT_EQ(cfg.listeners[0].port, 9443);
  EXPECT_EQ(cfg.upstreams[0].targets[0].host, "backend.internal");
  EXPECT_EQ(cfg.routes[0].match.path, "/x");
  EXPECT_EQ(cfg.routes[0].respond.body, "cost: $5 ${not a var} 94439443");
}

TEST(ConfigTest, WarnsAboutUnusedUpstreamAndShadowedRouteButStillLoads) {
  LoadResult result = load(R"(listen: 0.0.0.0:8080
upstreams:
  api: [127.0.0.1:9001]
  spare: [127.0.0.1:9002]
routes:
  - name: all-products
    match: { path: /products, methods: [GET] }
    upstream: api
  - name: one-product
    match: { path: /products/special, methods: [GET] }
    upstream: api
  - name: similar-prefix
    match: { path: /productsX }
    upstream: api
  - name: other-method
    match: { path: /products/x, methods: [POST] }
    upstream: api
  - name: with-host
    match: { host: a.example.com, path: /products/x, methods: [GET] }
    upstream: api
  - name: template
    match: { path: "/products/{id}/reviews", methods: [GET] }
    upstream: api
)");
  ASSERT_TRUE(result.ok());
  EXPECT_EQ(messages(result),
            (std::vector<std::string>{
                "sluice.yaml:4:3: warning: upstream 'spare' is not used by any route or listener",
                "sluice.yaml:9:5: warning: route 'one-product' can never match: route "
                "'all-products' (line 6) matches every request it would",
                "sluice.yaml:18:5: warning: route 'with-host' can never match: route "
                "'all-products' (line 6) matches every request it would",
                "sluice.yaml:21:5: warning: route 'template' can never match: route "
                "'all-products' (line 6) matches every request it would",
            }));
  EXPECT_EQ(result.diagnostics[0].severity, Diagnostic::Severity::Warning);
}

TEST(ConfigTest, CatchAllRouteShadowsEverythingAfterIt) {
  LoadResult result = load(k_base + R"(routes:
  - { match: { path: / }, upstream: api }
  - { match: { path_regex: "^/x$" }, upstream: api }
)");
  ASSERT_TRUE(result.ok());
  EXPECT_EQ(messages(result),
            (std::vector<std::string>{"sluice.yaml:6:5: warning: route 'route1' can never match: "
                                      "route 'route0' (line 5) matches every request it would"}));
}

TEST(ConfigTest, LoadFileResolvesPathsAgainstItsDirectory) {
  auto dir = std::filesystem::temp_directory_path() / "sluice_config_test";
  std::filesystem::create_directories(dir);
  auto file = dir / "sluice.yaml";
  std::ofstream(file) << k_base << "log: { access: access.log }\n";
  LoadResult result = load_file(file.string());
  std::filesystem::remove_all(dir);
  ASSERT_TRUE(result.ok()) << ::testing::PrintToString(messages(result));
  EXPECT_EQ(result.config->file, file.string());
  EXPECT_EQ(result.config->log.access, (dir / "access.log").string());
}

TEST(ConfigTest, LoadFileReportsAnUnreadableFile) {
  LoadResult result = load_file("/nonexistent/sluice.yaml");
  EXPECT_FALSE(result.ok());
  EXPECT_EQ(messages(result),
            (std::vector<std::string>{
                "/nonexistent/sluice.yaml: cannot read: No such file or directory"}));
}

TEST(ConfigTest, DiagnosticFormat) {
  Diagnostic d{Diagnostic::Severity::Warning, "f.yaml", Mark{3, 7}, "careful"};
  EXPECT_EQ(d.str(), "f.yaml:3:7: warning: careful");
  d.severity = Diagnostic::Severity::Error;
  EXPECT_EQ(d.str(), "f.yaml:3:7: careful");
}

// ---- TLS, consumers, authenticators, route access ------------------------------------------

// The loader checks that every file a config names (certificates, keys, CA bundles, a JWKS) can
// be read, so these tests load against a directory with real (placeholder) files.
class ConfigFilesTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = std::filesystem::temp_directory_path() /
           ("sluice_config_files_test_" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir_ / "certs");
    std::filesystem::create_directories(dir_ / "keys");
    for (const char* name : {"certs/api.pem", "certs/api.key", "certs/other.pem", "certs/other.key",
                             "certs/clients.pem", "certs/ca.pem", "keys/jwks.json"}) {
      std::ofstream(dir_ / name) << "placeholder: the loader does not parse PEM or JWKS\n";
    }
  }
  static void TearDownTestSuite() { std::filesystem::remove_all(dir_); }

  static std::string path(const std::string& relative) { return (dir_ / relative).string(); }
  static LoadResult load_here(const std::string& yaml) { return load(yaml, dir_.string()); }
  static std::string only_diagnostic_here(const std::string& yaml) {
    return only_diagnostic(yaml, dir_.string());
  }

  static inline std::filesystem::path dir_;
};

TEST_F(ConfigFilesTest, FullAccessConfigLoadsWithEveryValue) {
  setenv("SLUICE_TEST_JWT_SECRET", "0123456789abcdef0123456789abcdef", 1);
  LoadResult result = load_here(R"(listeners:
  - name: web
    listen: 0.0.0.0:8443
    tls:
      certificates:
        - { cert: certs/api.pem, key: certs/api.key }
        - { cert: )" + path("certs/other.pem") +
                                R"(, key: certs/other.key }
      min_version: "1.3"
      client_ca: certs/clients.pem
      client_cert: required
  - name: cleartext
    listen: 0.0.0.0:8080
    redirect_to_https: true
  - name: mtls
    listen: 0.0.0.0:8444
    tls: { certificates: [{ cert: certs/api.pem, key: certs/api.key }], client_ca: certs/ca.pem }
consumers:
  - name: alice
    groups: [staff, ops, staff]
    api_keys: [sha256:9F86D081884C7D659A2FEAA0C55AD015A3BF4F1B2B0B822CD15D6C15B0F00A08]
    password: "$2b$12$R9h/cIPz0gi.URNNX3kh2OPST9/PgBkqquzi.Ss7KIUgO2t0jWMUW"
  - name: bob@example.com
    groups: staff
    password: "$6$rounds=5000$salt$hash"
  - { name: carol, password: "$y$j9T$salt$hash" }
auth:
  staff-jwt:
    jwt:
      issuer: https://auth.example.com
      audiences: [api, admin]
      keys: keys/jwks.json
      algorithms: [RS256, ES256, EdDSA]
      leeway: 30s
      consumer_claim: email
      forward_claims: { sub: X-User-Id, scope: x-scopes }
  hmac-jwt:
    jwt:
      secret: ${SLUICE_TEST_JWT_SECRET}
      leeway: 0s
  keys-jwt:
    jwt: { keys: keys/jwks.json }
  partner-key:
    api_key: { header: X-API-Key, query: api_key }
  header-key:
    api_key: { header: x-key }
  ops-basic:
    basic: { realm: ops }
  default-basic:
    basic: {}
upstreams:
  products:
    targets: [127.0.0.1:9001]
    tls: { sni: Products.Internal, verify: true, ca: certs/ca.pem }
  insecure: { targets: [127.0.0.1:9002], tls: { verify: false } }
  plain: [127.0.0.1:9003]
routes:
  - name: products-read
    match: { path: /products }
    upstream: products
    auth: staff-jwt
    allow:
      consumers: [alice, bob@example.com]
      groups: [staff]
      scopes: [products:read, products:read]
      ips: [10.0.0.0/8, "::1", 192.168.1.7, "2001:db8::/32", 0.0.0.0/0]
    deny: { ips: [203.0.113.0/24] }
  - name: partners
    match: { path: /partners }
    upstream: insecure
    auth: [partner-key, header-key, ops-basic, hmac-jwt, keys-jwt, default-basic, ops-basic]
  - name: office
    match: { path: /office }
    upstream: plain
    allow: { ips: 10.1.0.0/16 }
    deny: { ips: "10.1.2.3" }
)");
  ASSERT_TRUE(result.ok()) << ::testing::PrintToString(messages(result));
  EXPECT_TRUE(result.diagnostics.empty()) << ::testing::PrintToString(messages(result));
  const Config& cfg = *result.config;

  ASSERT_EQ(cfg.listeners.size(), 3u);
  const Listener& web = cfg.listeners[0];
  ASSERT_TRUE(web.tls.has_value());
  ASSERT_EQ(web.tls->certificates.size(), 2u);
  EXPECT_EQ(web.tls->certificates[0].cert, path("certs/api.pem"));
  EXPECT_EQ(web.tls->certificates[0].key, path("certs/api.key"));
  EXPECT_EQ(web.tls->certificates[0].mark.line, 6);
  EXPECT_EQ(web.tls->certificates[1].cert, path("certs/other.pem"));
  EXPECT_EQ(web.tls->certificates[1].key, path("certs/other.key"));
  EXPECT_EQ(web.tls->min_version, TlsVersion::Tls1_3);
  EXPECT_EQ(web.tls->client_ca, path("certs/clients.pem"));
  EXPECT_EQ(web.tls->client_cert, ListenerTls::ClientCert::Required);
  EXPECT_FALSE(web.redirect_to_https);
  EXPECT_FALSE(cfg.listeners[1].tls.has_value());
  EXPECT_TRUE(cfg.listeners[1].redirect_to_https);
  const Listener& mtls = cfg.listeners[2];
  ASSERT_TRUE(mtls.tls.has_value());
  EXPECT_EQ(mtls.tls->min_version, TlsVersion::Tls1_2);
  EXPECT_EQ(mtls.tls->client_ca, path("certs/ca.pem"));
  EXPECT_EQ(mtls.tls->client_cert, ListenerTls::ClientCert::Optional);

  ASSERT_EQ(cfg.consumers.size(), 3u);
  const Consumer* alice = cfg.find_consumer("alice");
  ASSERT_NE(alice, nullptr);
  EXPECT_EQ(alice->groups, (std::vector<std::string>{"staff", "ops"}));
  ASSERT_EQ(alice->api_keys.size(), 1u);
  EXPECT_EQ(alice->api_keys[0].kind, ApiKey::Kind::Sha256);
  EXPECT_EQ(alice->api_keys[0].value,
            "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08");
  EXPECT_EQ(alice->password, "$2b$12$R9h/cIPz0gi.URNNX3kh2OPST9/PgBkqquzi.Ss7KIUgO2t0jWMUW");
  EXPECT_EQ(alice->mark.line, 18);
  EXPECT_EQ(cfg.consumers[1].name, "bob@example.com");
  EXPECT_EQ(cfg.consumers[1].groups, (std::vector<std::string>{"staff"}));
  EXPECT_TRUE(cfg.consumers[1].api_keys.empty());
  EXPECT_EQ(cfg.consumers[2].password, "$y$j9T$salt$hash");
  EXPECT_EQ(cfg.find_consumer("mallory"), nullptr);

  ASSERT_EQ(cfg.authenticators.size(), 7u);
  const Authenticator* staff = cfg.find_authenticator("staff-jwt");
  ASSERT_NE(staff, nullptr);
  EXPECT_EQ(staff->kind, Authenticator::Kind::Jwt);
  EXPECT_EQ(staff->mark.line, 27);
  EXPECT_EQ(staff->jwt.issuer, "https://auth.example.com");
  EXPECT_EQ(staff->jwt.audiences, (std::vector<std::string>{"api", "admin"}));
  EXPECT_EQ(staff->jwt.keys, path("keys/jwks.json"));
  EXPECT_EQ(staff->jwt.secret, "");
  EXPECT_EQ(staff->jwt.algorithms, (std::vector<std::string>{"RS256", "ES256", "EdDSA"}));
  EXPECT_EQ(staff->jwt.leeway, 30s);
  EXPECT_EQ(staff->jwt.consumer_claim, "email");
  EXPECT_EQ(staff->jwt.forward_claims, (std::vector<std::pair<std::string, std::string>>{
                                           {"sub", "x-user-id"}, {"scope", "x-scopes"}}));
  const Authenticator* hmac = cfg.find_authenticator("hmac-jwt");
  ASSERT_NE(hmac, nullptr);
  EXPECT_EQ(hmac->jwt.secret, "0123456789abcdef0123456789abcdef");
  EXPECT_EQ(hmac->jwt.keys, "");
  EXPECT_EQ(hmac->jwt.algorithms, (std::vector<std::string>{"HS256", "HS384", "HS512"}));
  EXPECT_EQ(hmac->jwt.leeway, 0s);
  EXPECT_EQ(hmac->jwt.consumer_claim, "sub");
  EXPECT_TRUE(hmac->jwt.issuer.empty());
  EXPECT_TRUE(hmac->jwt.audiences.empty());
  EXPECT_EQ(
      cfg.find_authenticator("keys-jwt")->jwt.algorithms,
      (std::vector<std::string>{"RS256", "RS384", "RS512", "PS256", "ES256", "ES384", "EdDSA"}));
  const Authenticator* partner = cfg.find_authenticator("partner-key");
  ASSERT_NE(partner, nullptr);
  EXPECT_EQ(partner->kind, Authenticator::Kind::ApiKey);
  EXPECT_EQ(partner->api_key.header, "x-api-key");
  EXPECT_EQ(partner->api_key.query, "api_key");
  EXPECT_EQ(cfg.find_authenticator("header-key")->api_key.query, "");
  const Authenticator* ops = cfg.find_authenticator("ops-basic");
  ASSERT_NE(ops, nullptr);
  EXPECT_EQ(ops->kind, Authenticator::Kind::Basic);
  EXPECT_EQ(ops->basic.realm, "ops");
  EXPECT_EQ(cfg.find_authenticator("default-basic")->basic.realm, "sluice");
  EXPECT_EQ(cfg.find_authenticator("nope"), nullptr);

  const Upstream* products = cfg.find_upstream("products");
  ASSERT_TRUE(products->tls.has_value());
  EXPECT_EQ(products->tls->sni, "products.internal");
  EXPECT_TRUE(products->tls->verify);
  EXPECT_EQ(products->tls->ca, path("certs/ca.pem"));
  const Upstream* insecure = cfg.find_upstream("insecure");
  ASSERT_TRUE(insecure->tls.has_value());
  EXPECT_FALSE(insecure->tls->verify);
  EXPECT_EQ(insecure->tls->sni, "");
  EXPECT_EQ(insecure->tls->ca, "");
  EXPECT_FALSE(cfg.find_upstream("plain")->tls.has_value());

  ASSERT_EQ(cfg.routes.size(), 3u);
  const Route& read = cfg.routes[0];
  EXPECT_EQ(read.auth, (std::vector<std::string>{"staff-jwt"}));
  EXPECT_EQ(read.allow.consumers, (std::vector<std::string>{"alice", "bob@example.com"}));
  EXPECT_EQ(read.allow.groups, (std::vector<std::string>{"staff"}));
  EXPECT_EQ(read.allow.scopes, (std::vector<std::string>{"products:read"}));
  ASSERT_EQ(read.allow.ips.size(), 5u);
  EXPECT_EQ(read.allow.ips[0].family, IpRange::Family::V4);
  EXPECT_EQ(read.allow.ips[0].address, "10.0.0.0");
  EXPECT_EQ(read.allow.ips[0].prefix_length, 8);
  EXPECT_EQ(read.allow.ips[1].family, IpRange::Family::V6);
  EXPECT_EQ(read.allow.ips[1].address, "::1");
  EXPECT_EQ(read.allow.ips[1].prefix_length, 128);
  EXPECT_EQ(read.allow.ips[2].address, "192.168.1.7");
  EXPECT_EQ(read.allow.ips[2].prefix_length, 32);
  EXPECT_EQ(read.allow.ips[3].family, IpRange::Family::V6);
  EXPECT_EQ(read.allow.ips[3].address, "2001:db8::");
  EXPECT_EQ(read.allow.ips[3].prefix_length, 32);
  EXPECT_EQ(read.allow.ips[4].address, "0.0.0.0");
  EXPECT_EQ(read.allow.ips[4].prefix_length, 0);
  ASSERT_EQ(read.deny.ips.size(), 1u);
  EXPECT_EQ(read.deny.ips[0].address, "203.0.113.0");
  EXPECT_EQ(read.deny.ips[0].prefix_length, 24);
  EXPECT_EQ(cfg.routes[1].auth,
            (std::vector<std::string>{"partner-key", "header-key", "ops-basic", "hmac-jwt",
                                      "keys-jwt", "default-basic"}));
  EXPECT_TRUE(cfg.routes[1].allow.ips.empty());
  const Route& office = cfg.routes[2];
  EXPECT_TRUE(office.auth.empty());
  ASSERT_EQ(office.allow.ips.size(), 1u);
  EXPECT_EQ(office.allow.ips[0].address, "10.1.0.0");
  EXPECT_EQ(office.allow.ips[0].prefix_length, 16);
  ASSERT_EQ(office.deny.ips.size(), 1u);
  EXPECT_EQ(office.deny.ips[0].prefix_length, 32);
}

TEST_F(ConfigFilesTest, MissingOrUnreadableFilesAreReportedAtTheirPath) {
  EXPECT_EQ(only_diagnostic_here("listeners:\n  - listen: 0.0.0.0:443\n    tls:\n"
                                 "      certificates: [{ cert: certs/missing.pem, key: "
                                 "certs/api.key }]\n"),
            "sluice.yaml:4:30: cannot read 'cert' file '" + path("certs/missing.pem") +
                "': No such file or directory");
  EXPECT_EQ(only_diagnostic_here("listeners:\n  - listen: 0.0.0.0:443\n    tls:\n"
                                 "      certificates: [{ cert: certs/api.pem, key: certs }]\n"),
            "sluice.yaml:4:50: cannot read 'key' file '" + path("certs") + "': Is a directory");
  EXPECT_EQ(only_diagnostic_here("listeners:\n  - listen: 0.0.0.0:443\n    tls:\n"
                                 "      certificates: [{ cert: certs/api.pem, key: certs/api.key "
                                 "}]\n      client_ca: clients.pem\n"),
            "sluice.yaml:5:18: cannot read 'client_ca' file '" + path("clients.pem") +
                "': No such file or directory");
  EXPECT_EQ(only_diagnostic_here(k_base + "auth:\n  j: { jwt: { keys: jwks.json } }\n"
                                          "routes: [{ upstream: api, auth: j }]\n"),
            "sluice.yaml:5:21: cannot read 'keys' file '" + path("jwks.json") +
                "': No such file or directory");
  EXPECT_EQ(only_diagnostic_here(upstream_with("    tls: { ca: /nonexistent/ca.pem }\n")),
            "sluice.yaml:5:16: cannot read 'ca' file '/nonexistent/ca.pem': No such file or "
            "directory");
}

TEST_F(ConfigFilesTest, BadListenerTls) {
  const std::string listener = "listeners:\n  - listen: 0.0.0.0:443\n";
  const std::string cert = "{ cert: certs/api.pem, key: certs/api.key }";
  EXPECT_EQ(only_diagnostic_here(listener + "    tls: { min_version: \"1.3\" }\n"),
            "sluice.yaml:3:5: 'tls' needs 'certificates' (a list of { cert, key })");
  EXPECT_EQ(only_diagnostic_here(listener + "    tls: { certificates: [] }\n"),
            "sluice.yaml:3:26: 'certificates' needs at least one { cert, key }");
  EXPECT_EQ(
      only_diagnostic_here(listener + "    tls: { certificates: [{ cert: certs/api.pem }] }\n"),
      "sluice.yaml:3:27: a certificate needs 'key' (the PEM private key)");
  EXPECT_EQ(only_diagnostic_here(listener + "    tls: { certificates: [" + cert +
                                 "], min_version: 1.1 }\n"),
            "sluice.yaml:3:86: 'min_version' must be \"1.2\" or \"1.3\", got '1.1'");
  EXPECT_EQ(only_diagnostic_here(listener + "    tls: { certificates: [" + cert +
                                 "], client_cert: required }\n"),
            "sluice.yaml:3:73: 'client_cert' needs 'client_ca' (the CA that signs the client "
            "certificates)");
  EXPECT_EQ(only_diagnostic_here(listener + "    tls: { certificates: [" + cert +
                                 "], client_ca: certs/ca.pem, client_cert: always }\n"),
            "sluice.yaml:3:111: unknown client_cert mode 'always' (expected optional or required)");
  EXPECT_EQ(only_diagnostic_here(listener + "    tls: { certificates: [" + cert +
                                 "] }\n    redirect_to_https: true\n"),
            "sluice.yaml:4:5: 'redirect_to_https' is only for a listener without 'tls' (it "
            "answers cleartext requests with a redirect to https)");
  EXPECT_EQ(only_diagnostic_here(listener + "    tls: { certificats: [] }\n"),
            "sluice.yaml:3:12: unknown key 'certificats' in a listener's 'tls' (did you mean "
            "'certificates'?)");
  EXPECT_EQ(only_diagnostic_here(listener + "    redirect_to_https: yes\n"),
            "sluice.yaml:3:24: 'redirect_to_https' must be true or false, got 'yes'");
}

TEST_F(ConfigFilesTest, SameCertificateTwiceIsAWarning) {
  LoadResult result = load_here(
      "listeners:\n  - name: web\n    listen: 0.0.0.0:443\n    tls:\n      certificates:\n"
      "        - { cert: certs/api.pem, key: certs/api.key }\n"
      "        - { cert: certs/other.pem, key: certs/other.key }\n"
      "        - { cert: ./certs/../certs/api.pem, key: " +
      path("certs/api.key") +
      " }\n"
      "upstreams:\n  api: [127.0.0.1:9001]\nroutes: [{ upstream: api }]\n");
  ASSERT_TRUE(result.ok()) << ::testing::PrintToString(messages(result));
  EXPECT_EQ(
      messages(result),
      (std::vector<std::string>{"sluice.yaml:8:11: warning: certificate '" + path("certs/api.pem") +
                                "' with key '" + path("certs/api.key") +
                                "' is listed twice in listener 'web' (first at line 6)"}));
}

TEST(ConfigTest, BadConsumers) {
  const std::string route = "routes: [{ upstream: api }]\n";
  EXPECT_EQ(only_diagnostic(k_base + route + "consumers:\n  - groups: [a]\n"),
            "sluice.yaml:6:5: a consumer needs 'name'");
  EXPECT_EQ(only_diagnostic(k_base + route + "consumers:\n  - name: al ice\n"),
            "sluice.yaml:6:11: invalid consumer name 'al ice' (use letters, digits, '_', '.', '-' "
            "and '@')");
  EXPECT_EQ(only_diagnostic(k_base + route + "consumers:\n  - name: a\n  - name: a\n"),
            "sluice.yaml:7:11: duplicate consumer name 'a' (first used at line 6)");
  EXPECT_EQ(
      only_diagnostic(k_base + route + "consumers:\n  - { name: a, groups: [ok, \"no!\"] }\n"),
      "sluice.yaml:6:29: invalid group name 'no!' (use letters, digits, '_', '.', '-' and "
      "'@')");
  EXPECT_EQ(
      only_diagnostic(k_base + route + "consumers:\n  - { name: a, api_keys: [sha256:abc] }\n"),
      "sluice.yaml:6:27: invalid api key for consumer 'a': 'sha256:' must be followed by 64 "
      "hex digits");
  EXPECT_EQ(only_diagnostic(k_base + route + "consumers:\n  - { name: a, api_keys: [s3cr3t] }\n"),
            "sluice.yaml:6:27: invalid api key for consumer 'a': expected sha256:<64 hex digits> "
            "or key:<key>");
  EXPECT_EQ(only_diagnostic(k_base + route + "consumers:\n  - { name: a, api_keys: [\"key:\"] }\n"),
            "sluice.yaml:6:27: invalid api key for consumer 'a': 'key:' must be followed by the "
            "key, without spaces or control characters");
  const std::string digest = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
  EXPECT_EQ(
      only_diagnostic(k_base + route + "consumers:\n  - { name: a, api_keys: [sha256:" + digest +
                      "] }\n  - { name: b, api_keys: "
                      "[sha256:9F86D081884C7D659A2FEAA0C55AD015A3BF4F1B2B0B822CD15D6C15B0F00A08] "
                      "}\n"),
      "sluice.yaml:7:27: duplicate api key for consumer 'b' (consumer 'a' has it at line 6)");
  EXPECT_EQ(only_diagnostic(k_base + route + "consumers:\n  - { name: a, password: hunter2 }\n"),
            "sluice.yaml:6:26: invalid password for consumer 'a': expected a crypt(3) hash "
            "starting with $2a$, $2b$ or $2y$ (bcrypt), $6$ (sha512-crypt), $5$ (sha256-crypt) "
            "or $y$ (yescrypt)");
  EXPECT_EQ(
      only_diagnostic(k_base + route + "consumers:\n  - { name: a, password: \"$1$md5$x\" }\n"),
      "sluice.yaml:6:26: invalid password for consumer 'a': expected a crypt(3) hash "
      "starting with $2a$, $2b$ or $2y$ (bcrypt), $6$ (sha512-crypt), $5$ (sha256-crypt) "
      "or $y$ (yescrypt)");
  EXPECT_EQ(
      only_diagnostic(k_base + route + "consumers:\n  - { name: a, password: \"$5$s$h x\" }\n"),
      "sluice.yaml:6:26: invalid password for consumer 'a': a crypt(3) hash has no spaces or "
      "control characters");
}

TEST(ConfigTest, PlainApiKeyIsAWarning) {
  LoadResult result = load(k_base +
                           "consumers:\n  - name: partner\n    api_keys: [\"key:abc123\"]\n"
                           "routes: [{ upstream: api }]\n");
  ASSERT_TRUE(result.ok()) << ::testing::PrintToString(messages(result));
  EXPECT_EQ(messages(result),
            (std::vector<std::string>{"sluice.yaml:6:16: warning: plain api key for consumer "
                                      "'partner': store sha256:<hex> instead"}));
  const ApiKey& key = result.config->consumers[0].api_keys[0];
  EXPECT_EQ(key.kind, ApiKey::Kind::Plain);
  EXPECT_EQ(key.value, "abc123");
}

// An authenticator `a` defined by `body` (on line 5) and used by the one route on line 6.
std::string auth_with(const std::string& body) {
  return k_base + "auth:\n  a: " + body + "\nroutes: [{ upstream: api, auth: a }]\n";
}

TEST(ConfigTest, JwtAlgNoneIsNeverAllowed) {
  setenv("SLUICE_TEST_JWT_SECRET", "0123456789abcdef0123456789abcdef", 1);
  EXPECT_EQ(only_diagnostic(auth_with(
                "{ jwt: { secret: \"${SLUICE_TEST_JWT_SECRET}\", algorithms: [HS256, none] } }")),
            "sluice.yaml:5:72: JWT algorithm 'none' is never allowed: it accepts tokens without a "
            "signature");
  EXPECT_EQ(only_diagnostic(
                auth_with("{ jwt: { secret: \"${SLUICE_TEST_JWT_SECRET}\", algorithms: None } }")),
            "sluice.yaml:5:64: JWT algorithm 'None' is never allowed: it accepts tokens without a "
            "signature");
}

TEST_F(ConfigFilesTest, JwtKeyMaterialMustMatchItsAlgorithms) {
  setenv("SLUICE_TEST_JWT_SECRET", "0123456789abcdef0123456789abcdef", 1);
  EXPECT_EQ(only_diagnostic_here(auth_with(
                "{ jwt: { secret: \"${SLUICE_TEST_JWT_SECRET}\", algorithms: [HS256, RS256] } }")),
            "sluice.yaml:5:72: JWT algorithm 'RS256' needs 'keys', but authenticator 'a' has a "
            "'secret' (use HS256, HS384 or HS512)");
  EXPECT_EQ(only_diagnostic_here(
                auth_with("{ jwt: { keys: keys/jwks.json, algorithms: [ES256, HS512] } }")),
            "sluice.yaml:5:57: JWT algorithm 'HS512' needs a 'secret', but authenticator 'a' has "
            "'keys' (use RS*, PS256, ES* or EdDSA)");
  EXPECT_EQ(only_diagnostic_here(auth_with(
                "{ jwt: { keys: keys/jwks.json, secret: \"${SLUICE_TEST_JWT_SECRET}\" } }")),
            "sluice.yaml:5:37: 'jwt' has both 'keys' and 'secret': give exactly one (keys for "
            "RS*, PS256, ES* and EdDSA, secret for HS*)");
  EXPECT_EQ(only_diagnostic_here(auth_with("{ jwt: { issuer: https://auth.example.com } }")),
            "sluice.yaml:5:8: 'jwt' needs 'keys' (a JWKS or PEM public key file) or 'secret' (an "
            "HMAC secret)");
}

TEST(ConfigTest, BadJwt) {
  setenv("SLUICE_TEST_SHORT_SECRET", "too-short-secret", 1);
  setenv("SLUICE_TEST_JWT_SECRET", "0123456789abcdef0123456789abcdef", 1);
  const std::string secret = "secret: \"${SLUICE_TEST_JWT_SECRET}\"";
  EXPECT_EQ(only_diagnostic(auth_with("{ jwt: { secret: \"${SLUICE_TEST_SHORT_SECRET}\" } }")),
            "sluice.yaml:5:23: 'secret' must be at least 32 bytes, got 16: a short HMAC secret can "
            "be guessed offline");
  EXPECT_EQ(only_diagnostic(auth_with("{ jwt: { " + secret + ", algorithms: [HS265] } }")),
            "sluice.yaml:5:65: unknown JWT algorithm 'HS265' (did you mean 'HS256'?)");
  EXPECT_EQ(only_diagnostic(auth_with("{ jwt: { " + secret + ", algorithms: [] } }")),
            "sluice.yaml:5:64: 'algorithms' needs at least one algorithm");
  EXPECT_EQ(only_diagnostic(auth_with("{ jwt: { " + secret + ", leeway: soon } }")),
            "sluice.yaml:5:60: invalid duration 'soon' for 'leeway' (expected a number with a "
            "unit: 250ms, 10s, 5m, 1h)");
  EXPECT_EQ(only_diagnostic(auth_with("{ jwt: { " + secret + ", consumer_claim: \"\" } }")),
            "sluice.yaml:5:68: 'consumer_claim' must not be empty");
  EXPECT_EQ(only_diagnostic(auth_with("{ jwt: { " + secret +
                                      ", forward_claims: { sub: x-user, email: X-User } } }")),
            "sluice.yaml:5:90: header 'x-user' already carries claim 'sub'");
  EXPECT_EQ(
      only_diagnostic(auth_with("{ jwt: { " + secret + ", forward_claims: { sub: \"a b\" } } }")),
      "sluice.yaml:5:75: invalid header name 'a b'");
  EXPECT_EQ(only_diagnostic(auth_with("{ jwt: { " + secret + ", audience: api } }")),
            "sluice.yaml:5:52: unknown key 'audience' in 'jwt' (did you mean 'audiences'?)");
}

TEST(ConfigTest, BadAuthenticators) {
  EXPECT_EQ(only_diagnostic(auth_with("{}")),
            "sluice.yaml:5:3: authenticator 'a' needs one of jwt, api_key or basic");
  EXPECT_EQ(only_diagnostic(auth_with("{ basic: {}, api_key: { header: x-key } }")),
            "sluice.yaml:5:19: authenticator 'a' has both 'basic' and 'api_key': give exactly one "
            "of jwt, api_key or basic");
  EXPECT_EQ(only_diagnostic(auth_with("{ api_key: {} }")),
            "sluice.yaml:5:8: 'api_key' needs 'header', 'query' or both");
  EXPECT_EQ(only_diagnostic(auth_with("{ api_key: { header: \"x key\" } }")),
            "sluice.yaml:5:27: invalid header name 'x key'");
  EXPECT_EQ(only_diagnostic(auth_with("{ api_key: { query: \"a=b\" } }")),
            "sluice.yaml:5:26: invalid query parameter name 'a=b'");
  EXPECT_EQ(only_diagnostic(auth_with("{ basic: { realm: 'say \"hi\"' } }")),
            "sluice.yaml:5:24: 'realm' must be non-empty text without quotes, backslashes or "
            "control characters, got 'say \"hi\"'");
  EXPECT_EQ(only_diagnostic(auth_with("{ oauth: {} }")),
            "sluice.yaml:5:8: unknown key 'oauth' in an authenticator");
  EXPECT_EQ(only_diagnostic(k_base + "auth:\n  \"a b\": { basic: {} }\n"
                                     "routes: [{ upstream: api, auth: \"a b\" }]\n"),
            "sluice.yaml:5:3: invalid authenticator name 'a b' (use letters, digits, '_', '.' and "
            "'-')");
}

TEST(ConfigTest, UnknownAuthenticatorGetsDidYouMeanHint) {
  const std::string auth = "auth:\n  staff-jwt: { basic: {} }\n  ops: { basic: {} }\n";
  EXPECT_EQ(only_diagnostic(k_base + auth +
                            "routes:\n  - { upstream: api, auth: staf-jwt }\n"
                            "  - { upstream: api, auth: ops }\n"),
            "sluice.yaml:8:28: unknown authenticator 'staf-jwt' (did you mean 'staff-jwt'?)");
  EXPECT_EQ(only_diagnostic(k_base + auth +
                            "routes:\n  - { upstream: api, auth: [ops, zzz] }\n"
                            "  - { upstream: api, auth: staff-jwt }\n"),
            "sluice.yaml:8:34: unknown authenticator 'zzz'");
  EXPECT_EQ(only_diagnostic(k_base + auth +
                            "routes:\n  - { upstream: api, auth: [] }\n"
                            "  - { upstream: api, auth: [staff-jwt, ops] }\n"),
            "sluice.yaml:8:28: 'auth' needs at least one authenticator");
}

TEST(ConfigTest, AllowByIdentityNeedsAuthOnTheRoute) {
  const std::string consumers = "consumers:\n  - name: alice\n";
  EXPECT_EQ(only_diagnostic(k_base + consumers +
                            "routes:\n  - { upstream: api, allow: { consumers: [alice] } }\n"),
            "sluice.yaml:7:31: 'allow' by consumers needs 'auth' on the route (or a listener with "
            "'client_ca')");
  EXPECT_EQ(
      only_diagnostic(k_base + "routes:\n  - { upstream: api, allow: { groups: [staff] } }\n"),
      "sluice.yaml:5:31: 'allow' by groups needs 'auth' on the route (or a listener with "
      "'client_ca')");
  EXPECT_EQ(only_diagnostic(k_base + "routes:\n  - { upstream: api, allow: { scopes: [read] } }\n"),
            "sluice.yaml:5:31: 'allow' by scopes needs 'auth' on the route");
  EXPECT_EQ(only_diagnostic(k_base + "routes:\n  - { upstream: api, allow: {} }\n"),
            "sluice.yaml:5:22: 'allow' needs at least one of consumers, groups, scopes or ips");
  EXPECT_EQ(only_diagnostic(k_base + "routes:\n  - { upstream: api, deny: { consumers: [a] } }\n"),
            "sluice.yaml:5:30: unknown key 'consumers' in 'deny'");
}

TEST(ConfigTest, AllowedConsumerMustExist) {
  EXPECT_EQ(only_diagnostic(k_base +
                            "consumers:\n  - name: alice\nauth:\n  b: { basic: {} }\n"
                            "routes:\n  - { upstream: api, auth: b, allow: { consumers: [alcie] } "
                            "}\n"),
            "sluice.yaml:9:52: unknown consumer 'alcie' (did you mean 'alice'?)");
  EXPECT_EQ(only_diagnostic(k_base + "auth:\n  b: { basic: {} }\n"
                                     "routes:\n  - { upstream: api, auth: b, allow: { consumers: "
                                     "[] } }\n"),
            "sluice.yaml:7:51: 'consumers' in 'allow' needs at least one entry");
  EXPECT_EQ(only_diagnostic(k_base + "auth:\n  j: { basic: {} }\n"
                                     "routes:\n  - { upstream: api, auth: j, allow: { scopes: "
                                     "[\"a b\"] } }\n"),
            "sluice.yaml:7:49: invalid scope 'a b' (a scope is printable ASCII without spaces, "
            "'\"' or '\\')");
}

TEST(ConfigTest, BadIpsInAllowAndDeny) {
  auto ips = [](const std::string& list) {
    return only_diagnostic(k_base + "routes:\n  - { upstream: api, allow: { ips: [" + list +
                           "] } }\n");
  };
  EXPECT_EQ(ips("10.0.0.0/33"),
            "sluice.yaml:5:37: invalid CIDR '10.0.0.0/33' in 'ips': the prefix length of an IPv4 "
            "block is 0 to 32");
  EXPECT_EQ(ips("\"2001:db8::/129\""),
            "sluice.yaml:5:37: invalid CIDR '2001:db8::/129' in 'ips': the prefix length of an "
            "IPv6 block is 0 to 128");
  EXPECT_EQ(ips("10.0.0.0/"),
            "sluice.yaml:5:37: invalid CIDR '10.0.0.0/' in 'ips': the prefix length of an IPv4 "
            "block is 0 to 32");
  EXPECT_EQ(ips("10.0.0/8"),
            "sluice.yaml:5:37: invalid CIDR '10.0.0/8' in 'ips': '10.0.0' is not an IP address");
  EXPECT_EQ(ips("10.1.2.3/8"),
            "sluice.yaml:5:37: invalid CIDR '10.1.2.3/8' in 'ips': host bits are set (did you "
            "mean '10.0.0.0/8'?)");
  EXPECT_EQ(ips("\"2001:db8::1/32\""),
            "sluice.yaml:5:37: invalid CIDR '2001:db8::1/32' in 'ips': host bits are set (did "
            "you mean '2001:db8::/32'?)");
  EXPECT_EQ(ips("10.0.0.1, localhost"),
            "sluice.yaml:5:47: invalid address 'localhost' in 'ips' (expected an IPv4 or IPv6 "
            "address, or a CIDR block like 10.0.0.0/8)");
  EXPECT_EQ(
      only_diagnostic(k_base + "routes:\n  - { upstream: api, deny: { ips: [300.0.0.0/8] } }\n"),
      "sluice.yaml:5:36: invalid CIDR '300.0.0.0/8' in 'ips': '300.0.0.0' is not an IP "
      "address");
  EXPECT_EQ(only_diagnostic(k_base + "routes:\n  - { upstream: api, deny: {} }\n"),
            "sluice.yaml:5:22: 'deny' needs 'ips'");
  EXPECT_EQ(only_diagnostic(k_base + "routes:\n  - { upstream: api, deny: { ips: [] } }\n"),
            "sluice.yaml:5:35: 'ips' needs at least one address or CIDR block");
}

TEST(ConfigTest, BadUpstreamTls) {
  EXPECT_EQ(only_diagnostic(upstream_with("    tls: { sni: 10.0.0.1 }\n")),
            "sluice.yaml:5:17: invalid 'sni' '10.0.0.1': expected a host name (SNI cannot carry "
            "an IP address)");
  EXPECT_EQ(only_diagnostic(upstream_with("    tls: { verify: maybe }\n")),
            "sluice.yaml:5:20: 'verify' must be true or false, got 'maybe'");
  EXPECT_EQ(only_diagnostic(upstream_with("    tls: { snl: a.internal }\n")),
            "sluice.yaml:5:12: unknown key 'snl' in an upstream's 'tls' (did you mean 'sni'?)");
}

TEST(ConfigTest, WarnsAboutUnusedAuthenticatorAndScopesWithoutJwt) {
  LoadResult result = load(k_base + R"(auth:
  ops: { basic: {} }
  spare: { api_key: { header: x-api-key } }
routes:
  - { upstream: api, auth: ops, allow: { scopes: [read] } }
)");
  ASSERT_TRUE(result.ok()) << ::testing::PrintToString(messages(result));
  EXPECT_EQ(messages(result),
            (std::vector<std::string>{
                "sluice.yaml:6:3: warning: authenticator 'spare' is not used by any route",
                "sluice.yaml:8:42: warning: route 'route0' allows by scopes, but none of its "
                "authenticators is jwt: scopes come from a JWT, so no request can pass",
            }));
}

TEST(ParseDurationTest, Table) {
  struct Case {
    const char* text;
    std::optional<Duration> expected;
  };
  const Case cases[] = {
      {"250ms", 250ms},
      {"10s", 10s},
      {"5m", 5min},
      {"1h", 1h},
      {"0s", 0ms},
      {"1m30s", 90s},
      {"1h0m1ms", 3600001ms},
      {"", std::nullopt},
      {"0", std::nullopt},
      {"10", std::nullopt},
      {"1.5s", std::nullopt},
      {"10 s", std::nullopt},
      {"-1s", std::nullopt},
      {"s", std::nullopt},
      {"10sec", std::nullopt},
      {"1d", std::nullopt},
      {"5M", std::nullopt},
      {"99999999999999999999h", std::nullopt},
      {"1000000h", std::nullopt},
  };
  for (const Case& c : cases) EXPECT_EQ(parse_duration(c.text), c.expected) << c.text;
}

TEST(ParseSizeTest, Table) {
  struct Case {
    const char* text;
    std::optional<uint64_t> expected;
  };
  const Case cases[] = {
      {"0", 0},
      {"512", 512},
      {"64KiB", 64 * 1024},
      {"10MiB", 10 * 1024 * 1024},
      {"1GiB", uint64_t{1} << 30},
      {"64k", 64 * 1024},
      {"64K", 64 * 1024},
      {"2m", 2 * 1024 * 1024},
      {"2M", 2 * 1024 * 1024},
      {"3g", uint64_t{3} << 30},
      {"18446744073709551615", UINT64_MAX},
      {"", std::nullopt},
      {"10MB", std::nullopt},
      {"1KB", std::nullopt},
      {"1kib", std::nullopt},
      {"KiB", std::nullopt},
      {"-1", std::nullopt},
      {"1.5KiB", std::nullopt},
      {"1 KiB", std::nullopt},
      {"18446744073709551616", std::nullopt},
      {"17179869184GiB", std::nullopt},
  };
  for (const Case& c : cases) EXPECT_EQ(parse_size(c.text), c.expected) << c.text;
}

TEST(ConfigTest, Admin) {
  auto result = load_string(k_base +
                                "admin: { listen: 127.0.0.1:9901, token: s3cret }\n"
                                "routes:\n  - upstream: api\n",
                            "sluice.yaml");
  ASSERT_TRUE(result.ok());
  ASSERT_TRUE(result.config->admin.has_value());
  EXPECT_EQ(result.config->admin->host, "127.0.0.1");
  EXPECT_EQ(result.config->admin->port, 9901);
  EXPECT_EQ(result.config->admin->token, "s3cret");
  auto open = load_string(k_base + "admin: { listen: 0.0.0.0:9901 }\nroutes:\n  - upstream: api\n",
                          "sluice.yaml");
  ASSERT_TRUE(open.ok());
  ASSERT_EQ(open.diagnostics.size(), 1u);
  EXPECT_EQ(open.diagnostics[0].message,
            "the admin API listens on 0.0.0.0 without a 'token': anyone who can reach it can "
            "reload, drain and purge");
  EXPECT_EQ(only_diagnostic(k_base + "admin: { token: x }\nroutes:\n  - upstream: api\n"),
            "sluice.yaml:4:8: 'admin' needs 'listen' (e.g. 127.0.0.1:9901)");
}

TEST(ConfigTest, RateLimits) {
  auto result =
      load_string(k_base +
                      "rate_limits:\n  redis: { address: 127.0.0.1:6380, timeout: 20ms, "
                      "on_failure: deny }\n"
                      "routes:\n  - upstream: api\n    rate_limit:\n"
                      "      - { key: consumer, rate: 100/s, burst: 200 }\n"
                      "      - { key: ip, rate: 6000/min, scope: global }\n"
                      "      - { key: header:X-Tenant, rate: 10/h, scope: global, sync: 50ms }\n"
                      "      - { key: route, rate: 5/s, scope: global, sync: strict }\n",
                  "sluice.yaml");
  ASSERT_TRUE(result.ok()) << (result.diagnostics.empty() ? "" : result.diagnostics[0].message);
  const Config& cfg = *result.config;
  ASSERT_TRUE(cfg.rate_limits.redis.has_value());
  EXPECT_EQ(cfg.rate_limits.redis->host, "127.0.0.1");
  EXPECT_EQ(cfg.rate_limits.redis->port, 6380);
  EXPECT_EQ(cfg.rate_limits.redis->timeout, std::chrono::milliseconds(20));
  EXPECT_FALSE(cfg.rate_limits.redis->allow_on_failure);
  const auto& rl = cfg.routes[0].rate_limits;
  ASSERT_EQ(rl.size(), 4u);
  EXPECT_EQ(rl[0].key, RateLimit::Key::Consumer);
  EXPECT_EQ(rl[0].rate, 100u);
  EXPECT_EQ(rl[0].period, std::chrono::seconds(1));
  EXPECT_EQ(rl[0].burst, 200u);
  EXPECT_EQ(rl[0].scope, RateLimit::Scope::Local);
  EXPECT_EQ(rl[1].key, RateLimit::Key::Ip);
  EXPECT_EQ(rl[1].period, std::chrono::minutes(1));
  EXPECT_EQ(rl[1].burst, 6000u);  // default burst = rate
  EXPECT_EQ(rl[1].scope, RateLimit::Scope::Global);
  EXPECT_EQ(rl[1].sync.count(), 0);  // strict
  EXPECT_EQ(rl[2].key, RateLimit::Key::Header);
  EXPECT_EQ(rl[2].header, "x-tenant");
  EXPECT_EQ(rl[2].period, std::chrono::hours(1));
  EXPECT_EQ(rl[2].sync, std::chrono::milliseconds(50));
  EXPECT_EQ(rl[3].key, RateLimit::Key::Route);
  EXPECT_EQ(rl[3].sync.count(), 0);
}
}  // namespace
}  // namespace sluice::config

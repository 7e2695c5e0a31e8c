#include "demo/demo.h"

#include <iostream>
#include <thread>

#include <fmt/format.h>

#include "core/log.h"
#include "http/parser.h"
#include "server/asio.h"
#include "server/server.h"

namespace sluice::demo {
namespace {

// A tiny HTTP/1.1 origin: answers every request with JSON naming itself and echoing the request.
asio::awaitable<void> serve_backend(tcp::socket socket, std::string name) {
  std::vector<char> buf(64 * 1024);
  size_t begin = 0, end = 0;
  http::RequestParser parser;
  for (;;) {
    http::RequestHead head;
    parser.reset();
    http::ParseResult r;
    for (;;) {
      r = parser.parse(std::string_view(buf.data() + begin, end - begin), head);
      if (r.status != http::ParseStatus::Incomplete) break;
      if (begin > 0) {
        std::memmove(buf.data(), buf.data() + begin, end - begin);
        end -= begin;
        begin = 0;
      }
      if (end == buf.size()) co_return;
      auto [ec, n] = co_await socket.async_read_some(
          asio::buffer(buf.data() + end, buf.size() - end), use_nothrow);
      if (ec) co_return;
      end += n;
    }
    if (r.status == http::ParseStatus::Error) co_return;
    begin += r.consumed;
    // Skip a Content-Length body (the demo does not read chunked bodies).
    uint64_t skip = head.body_kind == http::BodyKind::Length ? head.content_length : 0;
    std::string body = fmt::format(
        "{{\"backend\":\"{}\",\"method\":\"{}\",\"path\":\"{}\",\"query\":\"{}\","
        "\"x_request_id\":\"{}\",\"x_forwarded_for\":\"{}\",\"body_bytes\":{}}}\n",
        name, head.method, head.path, head.query, head.header("x-request-id").value,
        head.header("x-forwarded-for").value, skip);
    bool keep = head.keep_alive && head.body_kind != http::BodyKind::Chunked;
    while (skip > 0) {
      if (begin < end) {
        size_t n = static_cast<size_t>(std::min<uint64_t>(skip, end - begin));
        begin += n;
        skip -= n;
        continue;
      }
      begin = end = 0;
      auto [ec, n] = co_await socket.async_read_some(asio::buffer(buf), use_nothrow);
      if (ec) co_return;
      end = n;
    }
    std::string resp = fmt::format(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n"
        "x-backend: {}\r\n{}\r\n{}",
        body.size(), name, keep ? "" : "connection: close\r\n", body);
    auto [ec, n] = co_await asio::async_write(socket, asio::buffer(resp), use_nothrow);
    if (ec || !keep) co_return;
  }
}

asio::awaitable<void> accept_backend(tcp::acceptor& acceptor, std::string name) {
  for (;;) {
    auto [ec, socket] = co_await acceptor.async_accept(use_nothrow);
    if (ec) co_return;
    asio::co_spawn(acceptor.get_executor(), serve_backend(std::move(socket), name), asio::detached);
  }
}

}  // namespace

int run_demo(int port, int workers, int mqtt_port) {
  asio::io_context io{1};
  std::vector<std::unique_ptr<tcp::acceptor>> acceptors;
  std::vector<uint16_t> ports;
  for (int i = 1; i <= 3; ++i) {
    auto acc =
        std::make_unique<tcp::acceptor>(io, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
    ports.push_back(acc->local_endpoint().port());
    asio::co_spawn(io, accept_backend(*acc, fmt::format("demo-{}", i)), asio::detached);
    acceptors.push_back(std::move(acc));
  }
  std::thread backends([&io] { io.run(); });

  std::string mqtt_listener, mqtt_section;
  if (mqtt_port > 0) {
    mqtt_listener =
        fmt::format("  - {{ name: iot, listen: 127.0.0.1:{}, protocol: mqtt }}\n", mqtt_port);
    mqtt_section = R"(mqtt:
  routes:
    - { topic: devices/+/telemetry, upstream: demo, path: "/ingest/{1}" }
)";
  }
  std::string yaml = fmt::format(R"(# sluice demo: built-in config
listeners:
  - {{ name: web, listen: 127.0.0.1:{0}, http2: true }}
{4}log: {{ access: stdout, access_format: json, error: stderr, level: info }}
upstreams:
  demo:
    targets:
      - 127.0.0.1:{1}
      - 127.0.0.1:{2}
      - {{ address: 127.0.0.1:{3}, weight: 2 }}
routes:
  - name: hello
    match: {{ path_exact: /hello }}
    respond: {{ status: 200, body: "hello from sluice\n" }}
  - name: old-docs
    match: {{ path: /docs }}
    redirect: {{ to: "https://example.com/sluice", status: 302 }}
  - name: xml
    match: {{ path: /xml }}
    upstream: demo
    rewrite: {{ strip_prefix: true }}
    transform: {{ response: json_to_xml }}
  - name: ws
    match: {{ path: /ws }}
    upstream: demo
    websocket_bridge: {{ method: POST }}
  - name: demo
    match: {{ path: / }}
    upstream: demo
    headers: {{ response: {{ set: {{ x-served-by: sluice-demo }} }} }}
{5})",
                                 port, ports[0], ports[1], ports[2], mqtt_listener, mqtt_section);
  server::GatewayOptions opts;
  opts.config_path = "<demo>";
  opts.config_text = yaml;
  opts.workers_override = workers;
  opts.on_ready = [port, mqtt_port, &ports] {
    std::cout << fmt::format(
                     "\nsluice demo is running on http://127.0.0.1:{0}\n"
                     "  three demo backends on 127.0.0.1:{1}, :{2} and :{3} (weights 1, 1, 2)\n\n"
                     "try:\n"
                     "  curl -s http://127.0.0.1:{0}/           # run it 4 times: demo-1, demo-2, "
                     "demo-3 twice\n"
                     "  curl -si http://127.0.0.1:{0}/hello     # answered by the gateway itself\n"
                     "  curl -si http://127.0.0.1:{0}/docs      # a redirect\n"
                     "  curl -si --path-as-is http://127.0.0.1:{0}/a/../../x  # a 400, JSON body\n"
                     "  curl -s http://127.0.0.1:{0}/xml/orders  # the backend's JSON, as XML\n"
                     "  python3 -m websockets ws://127.0.0.1:{0}/ws   # each message -> one POST\n"
                     "{4}\n"
                     "access log lines follow; Ctrl-C stops.\n\n",
                     port, ports[0], ports[1], ports[2],
                     mqtt_port > 0
                         ? fmt::format("  mosquitto_pub -p {} -t devices/d1/telemetry -m 21.5 -q 1"
                                       "   # MQTT -> POST /ingest/d1\n",
                                       mqtt_port)
                         : std::string())
              << std::flush;
  };
  int rc = server::run_gateway(opts);
  io.stop();
  backends.join();
  return rc;
}

}  // namespace sluice::demo

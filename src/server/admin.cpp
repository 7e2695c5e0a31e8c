#include "server/admin.h"

#include <openssl/crypto.h>

#include <array>
#include <chrono>

#include <fmt/format.h>
#include <boost/json.hpp>

#include "core/error.h"
#include "core/log.h"
#include "http/parser.h"
#include "server/asio.h"
#include "server/dashboard.h"
#include "server/explain.h"
#include "server/snapshot.h"
#include "server/watchdog.h"

namespace sluice::server {
namespace {

namespace json = boost::json;
using namespace std::literals;

constexpr size_t kMaxHead = 64 * 1024;
constexpr uint64_t kMaxBody = 1024 * 1024;
constexpr auto kIoTimeout = std::chrono::seconds(10);

struct Response {
  int status = 200;
  std::string content_type = "application/json";
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;
};

Response json_response(int status, const json::value& v) {
  Response r;
  r.status = status;
  r.body = json::serialize(v);
  r.body += '\n';
  return r;
}

Response error_response(int status, std::string_view error) {
  return json_response(status, json::object{{"error", error}, {"status", status}});
}

std::string percent_decode(std::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    auto hex = [](char c) -> int {
      if (c >= '0' && c <= '9') return c - '0';
      if (c >= 'a' && c <= 'f') return c - 'a' + 10;
      if (c >= 'A' && c <= 'F') return c - 'A' + 10;
      return -1;
    };
    if (s[i] == '%' && i + 2 < s.size() && hex(s[i + 1]) >= 0 && hex(s[i + 2]) >= 0) {
      out += static_cast<char>(hex(s[i + 1]) * 16 + hex(s[i + 2]));
      i += 2;
    } else {
      out += s[i];
    }
  }
  return out;
}

// The value of `name` in a query string ("" when absent), percent-decoded.
std::string query_param(std::string_view query, std::string_view name) {
  while (!query.empty()) {
    size_t amp = query.find('&');
    std::string_view pair = query.substr(0, amp);
    size_t eq = pair.find('=');
    if (pair.substr(0, eq) == name) {
      return eq == std::string_view::npos ? std::string() : percent_decode(pair.substr(eq + 1));
    }
    if (amp == std::string_view::npos) break;
    query.remove_prefix(amp + 1);
  }
  return {};
}

std::vector<std::string_view> split_path(std::string_view path) {
  std::vector<std::string_view> parts;
  while (!path.empty()) {
    while (!path.empty() && path.front() == '/') path.remove_prefix(1);
    size_t slash = path.find('/');
    if (!path.empty()) parts.push_back(path.substr(0, slash));
    if (slash == std::string_view::npos) break;
    path.remove_prefix(slash);
  }
  return parts;
}

}  // namespace

struct AdminServer::Impl : std::enable_shared_from_this<Impl> {
  Impl(asio::io_context& io_, AdminHooks h) : io(io_), hooks(std::move(h)) {}

  asio::io_context& io;
  AdminHooks hooks;
  std::shared_ptr<tcp::acceptor> acceptor;
  std::string address;

  bool start(const config::Admin& admin, std::string& error) {
    error_code ec;
    auto addr = asio::ip::make_address(admin.host, ec);
    if (ec) {
      error = ec.message();
      return false;
    }
    tcp::endpoint ep(addr, admin.port);
    auto acc = std::make_shared<tcp::acceptor>(io);
    acc->open(ep.protocol(), ec);
    if (!ec) acc->set_option(asio::socket_base::reuse_address(true), ec);
    if (!ec) acc->bind(ep, ec);
    if (!ec) acc->listen(128, ec);
    if (ec) {
      error = ec.message();
      return false;
    }
    acceptor = std::move(acc);
    address = admin.host.find(':') != std::string::npos
                  ? fmt::format("[{}]:{}", admin.host, admin.port)
                  : fmt::format("{}:{}", admin.host, admin.port);
    asio::co_spawn(io, accept_loop(shared_from_this(), acceptor), asio::detached);
    return true;
  }

  void stop() {
    if (acceptor) {
      error_code ignored;
      acceptor->close(ignored);
    }
    address.clear();
  }

  static asio::awaitable<void> accept_loop(std::shared_ptr<Impl> self,
                                           std::shared_ptr<tcp::acceptor> acc) {
    for (;;) {
      auto [ec, sock] = co_await acc->async_accept(use_nothrow);
      if (ec) {
        if (!acc->is_open() || ec == asio::error::operation_aborted) co_return;
        continue;
      }
      asio::co_spawn(self->io, serve(self, std::move(sock)), asio::detached);
    }
  }

  static asio::awaitable<void> serve(std::shared_ptr<Impl> self, tcp::socket sock) {
    Watchdog wd(sock.get_executor());
    std::string buf;
    buf.resize(kMaxHead + kMaxBody);
    size_t have = 0;
    http::RequestParser parser;
    for (;;) {
      http::RequestHead head;
      parser.reset();
      size_t consumed = 0;
      for (;;) {
        if (have > 0) {
          auto r = parser.parse(std::string_view(buf.data(), have), head);
          if (r.status == http::ParseStatus::Done) {
            consumed = r.consumed;
            break;
          }
          if (r.status == http::ParseStatus::Error) {
            co_await write(sock, wd, error_response(400, "bad request"), false);
            co_return;
          }
        }
        if (have >= kMaxHead) {
          co_await write(sock, wd, error_response(431, "request head too large"), false);
          co_return;
        }
        wd.arm(kIoTimeout, &sock);
        auto [ec, n] = co_await sock.async_read_some(
            asio::buffer(buf.data() + have, kMaxHead - have), use_nothrow);
        if (ec) co_return;
        have += n;
      }
      if (head.body_kind == http::BodyKind::Chunked || head.content_length > kMaxBody) {
        co_await write(sock, wd, error_response(413, "request body too large or chunked"), false);
        co_return;
      }
      const size_t total = consumed + static_cast<size_t>(head.content_length);
      while (have < total) {
        wd.arm(kIoTimeout, &sock);
        auto [ec, n] = co_await sock.async_read_some(
            asio::buffer(buf.data() + have, buf.size() - have), use_nothrow);
        if (ec) co_return;
        have += n;
      }
      std::string body(buf.data() + consumed, static_cast<size_t>(head.content_length));
      Response resp = self->handle(head, body);
      const bool head_only = head.method == "HEAD";
      const bool keep = head.keep_alive;
      // (the head's views point into `buf`: done with them before it moves)
      std::memmove(buf.data(), buf.data() + total, have - total);
      have -= total;
      if (!co_await write(sock, wd, resp, keep, head_only) || !keep) co_return;
    }
  }

  static asio::awaitable<bool> write(tcp::socket& sock, Watchdog& wd, const Response& r, bool keep,
                                     bool head_only = false) {
    std::string out = fmt::format(
        "HTTP/1.1 {} {}\r\nserver: sluice-admin\r\ncontent-type: {}\r\n"
        "content-length: {}\r\ncache-control: no-store\r\n",
        r.status, status_text(r.status), r.content_type, r.body.size());
    for (const auto& [k, v] : r.headers) out += fmt::format("{}: {}\r\n", k, v);
    if (!keep) out += "connection: close\r\n";
    out += "\r\n";
    std::array<asio::const_buffer, 2> bufs{
        asio::buffer(out), asio::buffer(r.body.data(), head_only ? 0 : r.body.size())};
    wd.arm(kIoTimeout, &sock);
    auto [ec, n] = co_await asio::async_write(sock, bufs, use_nothrow);
    wd.disarm();
    co_return !ec;
  }

  // ---- routing ----

  Response handle(const http::RequestHead& head, const std::string& body) {
    // The dashboard holds no data, so it is served before the token check (a browser cannot
    // send a bearer token when it navigates); its script sends the token on every /api call.
    if (head.path == "/") {
      if (head.method != "GET" && head.method != "HEAD") {
        Response r = error_response(405, "method not allowed");
        r.headers.emplace_back("allow", "GET");
        return r;
      }
      Response r;
      r.content_type = "text/html; charset=utf-8";
      r.body = kDashboardPage;
      r.headers.emplace_back("content-security-policy",
                             "default-src 'none'; script-src 'unsafe-inline'; "
                             "style-src 'unsafe-inline'; connect-src 'self'; img-src data:; "
                             "base-uri 'none'; form-action 'none'; frame-ancestors 'none'");
      return r;
    }
    auto snap = hooks.snapshot();
    const std::string& token = snap && snap->config.admin ? snap->config.admin->token : empty_;
    if (!token.empty()) {
      auto auth = head.header("authorization");
      std::string expected = "Bearer " + token;
      bool ok = auth.found && auth.value.size() == expected.size() &&
                CRYPTO_memcmp(auth.value.data(), expected.data(), expected.size()) == 0;
      if (!ok) {
        log::info("admin: {} {} refused: {}", head.method, head.path,
                  auth.found ? "wrong token" : "no token");
        Response r = error_response(401, "unauthorized");
        r.headers.emplace_back("www-authenticate", "Bearer realm=\"sluice-admin\"");
        return r;
      }
    }
    const std::string_view method = head.method;
    const std::string_view path = head.path;
    auto only = [&](std::string_view allowed) -> std::optional<Response> {
      if (method == allowed || (allowed == "GET" && method == "HEAD")) return std::nullopt;
      Response r = error_response(405, "method not allowed");
      r.headers.emplace_back("allow", std::string(allowed));
      return r;
    };
    if (path == "/healthz") {
      if (auto r = only("GET")) return *r;
      Response r;
      r.content_type = "text/plain";
      r.body = "ok\n";
      return r;
    }
    if (path == "/ready") {
      if (auto r = only("GET")) return *r;
      return json_response(200, json::object{{"ready", snap != nullptr},
                                             {"generation", snap ? snap->generation : 0}});
    }
    if (path == "/metrics") {
      if (auto r = only("GET")) return *r;
      if (!hooks.metrics) return error_response(404, "not found");
      Response r;
      r.content_type = "text/plain; version=0.0.4; charset=utf-8";
      r.body = hooks.metrics();
      return r;
    }
    if (path == "/api/stats") {
      if (auto r = only("GET")) return *r;
      if (!hooks.stats) return error_response(404, "not found");
      Response r;
      r.body = hooks.stats();
      return r;
    }
    if (path == "/api/config") {
      if (auto r = only("GET")) return *r;
      return config_json(*snap);
    }
    if (path == "/api/reload") {
      if (auto r = only("POST")) return *r;
      ReloadOutcome out = hooks.reload();
      if (out.ok) return json_response(200, json::object{{"ok", true}, {"checksum", out.checksum}});
      json::array errors;
      for (const auto& e : out.errors) errors.push_back(json::string(e));
      return json_response(400, json::object{{"ok", false}, {"errors", std::move(errors)}});
    }
    if (path == "/api/upstreams") {
      if (auto r = only("GET")) return *r;
      return upstreams_json(*snap);
    }
    if (path == "/api/cache") {
      if (auto r = only("DELETE")) return *r;
      std::string prefix = query_param(head.query, "prefix");
      if (prefix.empty() || prefix.front() != '/') {
        return error_response(400, "give ?prefix=/path (and optionally &host=...)");
      }
      size_t purged =
          snap->cache ? snap->cache->purge_prefix(query_param(head.query, "host"), prefix) : 0;
      log::info("admin: purged {} cached response(s) under {}", purged, prefix);
      return json_response(200, json::object{{"purged", purged}, {"prefix", prefix}});
    }
    if (path == "/api/explain") {
      if (auto r = only("POST")) return *r;
      ExplainResult e = explain(*snap, body);
      Response r;
      r.status = e.status;
      r.body = std::move(e.json);
      r.body += '\n';
      return r;
    }
    // POST /api/upstreams/{name}/targets/{address}/drain | undrain
    auto parts = split_path(path);
    if (parts.size() == 6 && parts[0] == "api" && parts[1] == "upstreams" &&
        parts[3] == "targets" && (parts[5] == "drain" || parts[5] == "undrain")) {
      if (auto r = only("POST")) return *r;
      std::string upstream = percent_decode(parts[2]);
      std::string address = percent_decode(parts[4]);
      const bool drain = parts[5] == "drain";
      bool known = false;
      for (const auto& u : snap->upstreams) {
        if (u.config->name != upstream) continue;
        for (const auto& t : u.targets) known = known || t.address == address;
      }
      if (!known) return error_response(404, "no such upstream target");
      state_registry().set_drained(upstream, address, drain);
      log::info("admin: target {} of upstream {} {}", address, upstream,
                drain ? "drained" : "undrained");
      return json_response(
          200, json::object{{"upstream", upstream}, {"target", address}, {"drained", drain}});
    }
    (void)body;
    return error_response(404, "not found");
  }

  static Response config_json(const Snapshot& snap) {
    const config::Config& c = snap.config;
    json::array listeners, upstreams, routes;
    for (const auto& l : c.listeners) {
      listeners.push_back(json::object{{"name", l.name},
                                       {"listen", fmt::format("{}:{}", l.host, l.port)},
                                       {"protocol", l.protocol},
                                       {"tls", l.tls.has_value()}});
    }
    for (const auto& u : c.upstreams) {
      json::array targets;
      for (const auto& t : u.targets) targets.push_back(json::string(t.address));
      upstreams.push_back(
          json::object{{"name", u.name}, {"balance", u.balance}, {"targets", std::move(targets)}});
    }
    for (const auto& r : c.routes) routes.push_back(json::string(r.name));
    auto loaded =
        std::chrono::duration_cast<std::chrono::seconds>(snap.loaded_at.time_since_epoch()).count();
    // Secrets (tokens, JWT secrets, password hashes, API keys) are never part of this view.
    return json_response(200, json::object{{"file", c.file},
                                           {"checksum", snap.checksum},
                                           {"generation", snap.generation},
                                           {"loaded_at_unix", loaded},
                                           {"listeners", std::move(listeners)},
                                           {"upstreams", std::move(upstreams)},
                                           {"routes", std::move(routes)}});
  }

  static Response upstreams_json(const Snapshot& snap) {
    const int64_t now = upstream::steady_now_ms();
    json::array out;
    for (const auto& u : snap.upstreams) {
      json::array targets;
      for (const auto& t : u.targets) {
        const upstream::TargetState& st = *t.state;
        int64_t last = st.last_check_ms.load(std::memory_order_relaxed);
        targets.push_back(json::object{
            {"address", t.address},
            {"healthy", st.healthy.load(std::memory_order_relaxed)},
            {"ejected", st.ejected(now)},
            {"drained", st.drained.load(std::memory_order_relaxed)},
            {"available", st.available(now)},
            {"in_flight", st.in_flight.load(std::memory_order_relaxed)},
            {"ejections", st.ejections.load(std::memory_order_relaxed)},
            {"last_check_ms_ago", last == 0 ? json::value(nullptr) : json::value(now - last)}});
      }
      out.push_back(json::object{{"name", u.config->name},
                                 {"balance", u.config->balance},
                                 {"targets", std::move(targets)}});
    }
    return json_response(200, json::object{{"upstreams", std::move(out)}});
  }

  static inline const std::string empty_;
};

AdminServer::AdminServer(asio::io_context& io, AdminHooks hooks)
    : impl_(std::make_shared<Impl>(io, std::move(hooks))) {}

AdminServer::~AdminServer() { impl_->stop(); }

bool AdminServer::start(const config::Admin& admin, std::string& error) {
  return impl_->start(admin, error);
}

void AdminServer::stop() { impl_->stop(); }

const std::string& AdminServer::address() const { return impl_->address; }

}  // namespace sluice::server

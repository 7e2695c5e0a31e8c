// Router: which route a request goes to (SPEC.md section 2 `routes:`), 404 vs 405 (section 3),
// rewrites and the explain verdicts. The property test at the end checks the compiled router
// against a naive linear scan written here from the spec.
#include "router/router.h"

#include <algorithm>
#include <cstdio>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <re2/re2.h>

namespace sluice::router {
namespace {

using Outcome = MatchResult::Outcome;
using PathKind = config::Match::PathKind;
using ValueKind = config::ValueMatch::Kind;

// Builds a config::Route the way config validation would hand it over.
struct RouteBuilder {
  config::Route r;
  RouteBuilder& host(std::string h) {
    r.match.hosts.push_back(std::move(h));
    return *this;
  }
  RouteBuilder& path(PathKind kind, std::string p) {
    r.match.path_kind = kind;
    r.match.path = std::move(p);
    return *this;
  }
  RouteBuilder& prefix(std::string p) { return path(PathKind::Prefix, std::move(p)); }
  RouteBuilder& exact(std::string p) { return path(PathKind::Exact, std::move(p)); }
  RouteBuilder& templ(std::string p) { return path(PathKind::Template, std::move(p)); }
  RouteBuilder& regex(std::string p) { return path(PathKind::Regex, std::move(p)); }
  RouteBuilder& methods(std::vector<std::string> m) {
    r.match.methods = std::move(m);
    return *this;
  }
  RouteBuilder& header(std::string name, ValueKind kind, std::string value = "") {
    r.match.headers.push_back({std::move(name), kind, std::move(value)});
    return *this;
  }
  RouteBuilder& query(std::string name, ValueKind kind, std::string value = "") {
    r.match.query.push_back({std::move(name), kind, std::move(value)});
    return *this;
  }
  RouteBuilder& rewrite(config::Rewrite::Kind kind, std::string a = "", std::string b = "") {
    r.rewrite.kind = kind;
    if (kind == config::Rewrite::Kind::Prefix) r.rewrite.prefix = std::move(a);
    if (kind == config::Rewrite::Kind::Regex) {
      r.rewrite.regex = std::move(a);
      r.rewrite.replace = std::move(b);
    }
    return *this;
  }
};
RouteBuilder route() { return {}; }

// Owns the strings a RequestView points at.
struct Req {
  std::string method = "GET";
  std::string host;
  std::string path = "/";
  std::string query;
  std::vector<std::pair<std::string, std::string>> header_store;
  std::vector<http::Header> headers;

  RequestView view() {
    headers.clear();
    for (auto& [n, v] : header_store) headers.push_back({n, v});
    return {method, host, path, query, &headers};
  }
};
Req req(std::string method, std::string host, std::string path, std::string query = "",
        std::vector<std::pair<std::string, std::string>> headers = {}) {
  return {std::move(method), std::move(host),    std::move(path),
          std::move(query),  std::move(headers), {}};
}

std::unique_ptr<const Router> compile(const std::vector<RouteBuilder>& builders) {
  std::vector<config::Route> routes;
  for (const RouteBuilder& b : builders) routes.push_back(b.r);
  return Router::compile(routes);
}

// ---------------------------------------------------------------------------------------------
// The routing table.

std::vector<RouteBuilder> table_routes() {
  return {
      /* 0 */ route().host("api.example.com").prefix("/products").methods({"GET", "HEAD"}),
      /* 1 */ route().host("*.example.org").exact("/health"),
      /* 2 */ route().host("api.example.com").templ("/users/{id}/orders/{order}"),
      /* 3 */ route().regex("^/v[0-9]+/items$"),
      /* 4 */ route().prefix("/api/"),
      /* 5 */
      route().host("api.example.com").prefix("/hdr").header("x-version", ValueKind::Exact, "2"),
      /* 6 */
      route().host("api.example.com").prefix("/hdr").header("x-tenant", ValueKind::Regex, "^acme-"),
      /* 7 */ route().host("api.example.com").prefix("/hdr").header("x-beta", ValueKind::Present),
      /* 8 */ route().prefix("/q").query("preview", ValueKind::Exact, "1"),
      /* 9 */ route().prefix("/q").query("name", ValueKind::Regex, "^a b"),
      /* 10 */ route().prefix("/q").query("tag", ValueKind::Present),
      // First match wins across host buckets: wildcard before exact, any-host before exact.
      /* 11 */ route().host("*.example.org").prefix("/shared"),
      /* 12 */ route().host("b.example.org").prefix("/shared"),
      /* 13 */ route().prefix("/shared2"),
      /* 14 */ route().host("b.example.org").prefix("/shared2"),
      // 405: the Allow header is the union of methods of routes that failed only on method.
      /* 15 */ route().host("api.example.com").exact("/m").methods({"POST"}),
      /* 16 */ route().host("api.example.com").exact("/m").methods({"PUT", "DELETE", "PUT"}),
      /* 17 */
      route()
          .host("api.example.com")
          .exact("/m2")
          .methods({"POST"})
          .header("x-a", ValueKind::Exact, "1"),
      /* 18 */ route().host("[::1]").prefix("/v6"),
      /* 19 */ route().host("root.test").exact("/"),
      /* 20 */ route().host("t.test").templ("/files/{name}"),
      /* 21 */ route().host("t.test").exact("/files/{name}"),
      /* 22 */ route().host("catch.test").prefix("/"),
      /* 23 */ route().host("api.example.com").host("*.example.org").exact("/multi"),
      /* 24 */ route().host("api.example.com").prefix("/products/special"),
      /* 25 */ route().host("any.test").methods({"GET"}),
  };
}

struct Case {
  const char* what;
  Req request;
  Outcome outcome;
  size_t index = 0;
  std::vector<std::pair<std::string, std::string>> params = {};
  std::string allow = "";
  std::optional<size_t> prefix_len = std::nullopt;  // checked when given
};

TEST(Router, TableOfRequestsRoutesAsSpecified) {
  auto router = compile(table_routes());
  ASSERT_EQ(router->size(), 26u);
  std::vector<Case> cases = {
      // Hosts: exact, case, port, wildcard depth, the wildcard's own apex, IPv6 literal.
      {"exact host", req("GET", "api.example.com", "/products"), Outcome::Matched, 0, {}, "", 9},
      {"host is case-insensitive", req("GET", "API.Example.COM", "/products"), Outcome::Matched, 0},
      {"host port is ignored", req("GET", "api.example.com:8443", "/products"), Outcome::Matched,
       0},
      {"trailing dot host", req("GET", "api.example.com.", "/products"), Outcome::Matched, 0},
      {"other host", req("GET", "web.example.com", "/products"), Outcome::NotFound},
      {"wildcard one level", req("GET", "a.example.org", "/health"), Outcome::Matched, 1},
      {"wildcard two levels", req("GET", "x.y.example.org:80", "/health"), Outcome::Matched, 1},
      {"wildcard excludes apex", req("GET", "example.org", "/health"), Outcome::NotFound},
      {"wildcard suffix on label boundary", req("GET", "aexample.org", "/health"),
       Outcome::NotFound},
      {"ipv6 host with port", req("GET", "[::1]:8080", "/v6/x"), Outcome::Matched, 18},
      {"ipv6 host without port", req("GET", "[::1]", "/v6"), Outcome::Matched, 18},
      {"no host header", req("GET", "", "/api/x"), Outcome::Matched, 4},
      // Prefix paths on segment boundaries.
      {"prefix with slash",
       req("GET", "api.example.com", "/products/"),
       Outcome::Matched,
       0,
       {},
       "",
       9},
      {"prefix deeper", req("GET", "api.example.com", "/products/1"), Outcome::Matched, 0},
      {"prefix is not a string prefix", req("GET", "api.example.com", "/productsX"),
       Outcome::NotFound},
      {"earlier shorter prefix wins", req("GET", "api.example.com", "/products/special/1"),
       Outcome::Matched, 0},
      {"trailing-slash prefix needs the slash", req("GET", "h", "/api"), Outcome::NotFound},
      {"trailing-slash prefix itself", req("GET", "h", "/api/"), Outcome::Matched, 4, {}, "", 5},
      {"trailing-slash prefix below", req("GET", "h", "/api/x/y"), Outcome::Matched, 4, {}, "", 5},
      {"root prefix matches all",
       req("GET", "catch.test", "/anything/at/all"),
       Outcome::Matched,
       22,
       {},
       "",
       1},
      {"root prefix matches root", req("GET", "catch.test", "/"), Outcome::Matched, 22},
      {"no path predicate", req("GET", "any.test", "/whatever"), Outcome::Matched, 25, {}, "", 0},
      // Exact paths.
      {"exact", req("GET", "a.example.org", "/health"), Outcome::Matched, 1, {}, "", 7},
      {"exact rejects trailing slash", req("GET", "a.example.org", "/health/"), Outcome::NotFound},
      {"exact root", req("GET", "root.test", "/"), Outcome::Matched, 19},
      {"exact root only", req("GET", "root.test", "/x"), Outcome::NotFound},
      // Templates.
      {"template captures",
       req("GET", "api.example.com", "/users/42/orders/abc"),
       Outcome::Matched,
       2,
       {{"id", "42"}, {"order", "abc"}},
       "",
       20},
      {"template needs every segment", req("GET", "api.example.com", "/users/42/orders"),
       Outcome::NotFound},
      {"template matches the whole path", req("GET", "api.example.com", "/users/42/orders/a/b"),
       Outcome::NotFound},
      {"template param is one segment", req("GET", "t.test", "/files/a/b"), Outcome::NotFound},
      {"template param is non-empty", req("GET", "t.test", "/files/"), Outcome::NotFound},
      {"template param",
       req("GET", "t.test", "/files/x.txt"),
       Outcome::Matched,
       20,
       {{"name", "x.txt"}}},
      {"template before literal braces",
       req("GET", "t.test", "/files/{name}"),
       Outcome::Matched,
       20,
       {{"name", "{name}"}}},
      // Regex paths (PartialMatch; users anchor).
      {"regex", req("GET", "h", "/v2/items"), Outcome::Matched, 3, {}, "", 9},
      {"regex anchored end", req("GET", "h", "/v2/items/1"), Outcome::NotFound},
      {"regex anchored start", req("GET", "h", "/x/v2/items"), Outcome::NotFound},
      // Headers.
      {"header exact", req("GET", "api.example.com", "/hdr", "", {{"X-Version", "2"}}),
       Outcome::Matched, 5},
      {"header regex is case-sensitive",
       req("GET", "api.example.com", "/hdr", "", {{"x-tenant", "ACME-1"}}), Outcome::NotFound},
      {"header first occurrence",
       req("GET", "api.example.com", "/hdr", "", {{"x-version", "3"}, {"x-version", "2"}}),
       Outcome::NotFound},
      {"header regex", req("GET", "api.example.com", "/hdr", "", {{"x-tenant", "acme-7"}}),
       Outcome::Matched, 6},
      {"header present even empty", req("GET", "api.example.com", "/hdr", "", {{"x-beta", ""}}),
       Outcome::Matched, 7},
      {"header missing", req("GET", "api.example.com", "/hdr"), Outcome::NotFound},
      // Query.
      {"query exact", req("GET", "h", "/q", "a=1&preview=1"), Outcome::Matched, 8},
      {"query decoded key", req("GET", "h", "/q", "pre%76iew=%31"), Outcome::Matched, 8},
      {"query regex on decoded value", req("GET", "h", "/q", "name=a+b"), Outcome::Matched, 9},
      {"query regex percent space", req("GET", "h", "/q", "name=a%20bc"), Outcome::Matched, 9},
      {"query present without value", req("GET", "h", "/q", "tag"), Outcome::Matched, 10},
      {"query first occurrence", req("GET", "h", "/q", "preview=0&preview=1"), Outcome::NotFound},
      {"query absent", req("GET", "h", "/q"), Outcome::NotFound},
      // First match wins across host buckets.
      {"wildcard bucket before exact", req("GET", "b.example.org", "/shared"), Outcome::Matched,
       11},
      {"any-host bucket before exact", req("GET", "b.example.org", "/shared2"), Outcome::Matched,
       13},
      {"route in two buckets", req("GET", "z.example.org", "/multi"), Outcome::Matched, 23},
      {"route in two buckets exact", req("GET", "api.example.com", "/multi"), Outcome::Matched, 23},
      // Methods, 405 and 404.
      {"method allowed", req("HEAD", "api.example.com", "/products"), Outcome::Matched, 0},
      {"405 single route",
       req("POST", "api.example.com", "/products"),
       Outcome::MethodNotAllowed,
       0,
       {},
       "GET, HEAD"},
      {"405 union sorted unique",
       req("GET", "api.example.com", "/m"),
       Outcome::MethodNotAllowed,
       0,
       {},
       "DELETE, POST, PUT"},
      {"method matches second route", req("DELETE", "api.example.com", "/m"), Outcome::Matched, 16},
      {"404 when another predicate fails too", req("GET", "api.example.com", "/m2"),
       Outcome::NotFound},
      {"405 when only method fails",
       req("GET", "api.example.com", "/m2", "", {{"x-a", "1"}}),
       Outcome::MethodNotAllowed,
       0,
       {},
       "POST"},
      {"404", req("GET", "nowhere.test", "/nothing"), Outcome::NotFound},
  };
  for (Case& c : cases) {
    SCOPED_TRACE(c.what);
    MatchResult m = router->match(c.request.view());
    EXPECT_EQ(int(m.outcome), int(c.outcome));
    if (c.outcome == Outcome::Matched) {
      EXPECT_EQ(m.route_index, c.index);
      std::vector<std::pair<std::string, std::string>> params;
      for (const Param& p : m.params) params.emplace_back(p.name, p.value);
      EXPECT_EQ(params, c.params);
      if (c.prefix_len) {
        EXPECT_EQ(m.prefix_len, *c.prefix_len);
      }
    }
    EXPECT_EQ(m.allow, c.allow);
  }
}

TEST(Router, NullHeadersMeansNoHeaders) {
  auto router = compile({route().header("x-a", ValueKind::Present), route().prefix("/")});
  RequestView v{"GET", "h", "/", "", nullptr};
  EXPECT_EQ(router->match(v).route_index, 1u);
}

TEST(Router, EmptyTableIsNotFound) {
  auto router = Router::compile({});
  Req r = req("GET", "h", "/");
  EXPECT_EQ(router->match(r.view()).outcome, Outcome::NotFound);
  EXPECT_EQ(router->size(), 0u);
}

TEST(Router, RegexRouteAfterAWinnerIsNeverNeeded) {
  // The lowest full match wins even when a later regex route also matches.
  auto router = compile({route().prefix("/a"), route().regex("^/a")});
  Req r = req("GET", "h", "/a/b");
  EXPECT_EQ(router->match(r.view()).route_index, 0u);
  auto router2 = compile({route().regex("^/a"), route().prefix("/a")});
  EXPECT_EQ(router2->match(r.view()).route_index, 0u);
}

TEST(Router, NormaliseHostStripsPortAndCase) {
  EXPECT_EQ(Router::normalise_host("API.Example.com:8080"), "api.example.com");
  EXPECT_EQ(Router::normalise_host("[::1]:8080"), "[::1]");
  EXPECT_EQ(Router::normalise_host("[::1]"), "[::1]");
  EXPECT_EQ(Router::normalise_host("::1"), "::1");
  EXPECT_EQ(Router::normalise_host("example.com."), "example.com");
  EXPECT_EQ(Router::normalise_host(""), "");
}

// ---------------------------------------------------------------------------------------------
// Rewrites.

std::string rewritten(const Router& router, std::string path) {
  Req r = req("GET", "h", path);
  MatchResult m = router.match(r.view());
  EXPECT_EQ(m.outcome, Outcome::Matched) << path;
  return router.rewrite_path(m, path);
}

TEST(Router, RewriteStripPrefixAlwaysLeavesASlash) {
  auto router = compile({
      route().prefix("/products").rewrite(config::Rewrite::Kind::StripPrefix),
      route().prefix("/api/").rewrite(config::Rewrite::Kind::StripPrefix),
      route().exact("/exact").rewrite(config::Rewrite::Kind::StripPrefix),
      route().regex("^/v[0-9]+").rewrite(config::Rewrite::Kind::StripPrefix),
      route().prefix("/").rewrite(config::Rewrite::Kind::StripPrefix),
  });
  EXPECT_EQ(rewritten(*router, "/products"), "/");
  EXPECT_EQ(rewritten(*router, "/products/"), "/");
  EXPECT_EQ(rewritten(*router, "/products/1/2"), "/1/2");
  EXPECT_EQ(rewritten(*router, "/api/"), "/");
  EXPECT_EQ(rewritten(*router, "/api/x"), "/x");
  EXPECT_EQ(rewritten(*router, "/exact"), "/");
  EXPECT_EQ(rewritten(*router, "/v12/items"), "/items");
  EXPECT_EQ(rewritten(*router, "/other/x"), "/other/x");
}

TEST(Router, RewritePrefixAndRegexAndNone) {
  auto router = compile({
      route().prefix("/a").rewrite(config::Rewrite::Kind::Prefix, "/v1"),
      route().prefix("/b").rewrite(config::Rewrite::Kind::Prefix, "/v2/"),
      route().prefix("/c").rewrite(config::Rewrite::Kind::Regex, "^/c/([^/]+)/(.*)$",
                                   "/items/\\2?id=\\1"),
      route().prefix("/d").rewrite(config::Rewrite::Kind::Regex, "x", "y"),
      route().prefix("/e"),
  });
  EXPECT_EQ(rewritten(*router, "/a/x"), "/v1/a/x");
  EXPECT_EQ(rewritten(*router, "/b/x"), "/v2/b/x");
  EXPECT_EQ(rewritten(*router, "/c/42/rest/of"), "/items/rest/of?id=42");
  EXPECT_EQ(rewritten(*router, "/d/xax"), "/d/yay");
  EXPECT_EQ(rewritten(*router, "/e/unchanged"), "/e/unchanged");

  MatchResult not_found;
  EXPECT_EQ(router->rewrite_path(not_found, "/a/x"), "/a/x");
}

// ---------------------------------------------------------------------------------------------
// Explain.

TEST(Router, ExplainGivesTheFirstFailingPredicatePerRoute) {
  auto router = compile({
      route().host("other.test").prefix("/x"),
      route().prefix("/y"),
      route().prefix("/x").methods({"POST"}).header("x-a", ValueKind::Present),
      route().prefix("/x").header("x-a", ValueKind::Present).header("x-b", ValueKind::Exact, "1"),
      route().prefix("/x").query("debug", ValueKind::Present),
      route()
          .prefix("/x")
          .header("x-a", ValueKind::Present)
          .query("preview", ValueKind::Exact, "1"),
      route().prefix("/x"),
  });
  Req r = req("GET", "h", "/x", "debug", {{"x-a", "1"}, {"x-b", "2"}});
  std::vector<Router::Verdict> v = router->explain(r.view());
  ASSERT_EQ(v.size(), 7u);
  std::vector<std::string> failed;
  for (size_t i = 0; i < v.size(); ++i) {
    EXPECT_EQ(v[i].route_index, i);
    EXPECT_EQ(v[i].matched, v[i].failed.empty());
    failed.push_back(v[i].failed);
  }
  EXPECT_EQ(failed, (std::vector<std::string>{"host", "path", "method", "header x-b", "",
                                              "query preview", ""}));
  EXPECT_EQ(router->match(r.view()).route_index, 4u);
}

// ---------------------------------------------------------------------------------------------
// Property: the compiled router answers like a linear scan written straight from the spec.

namespace reference {

std::string lower(std::string_view s) {
  std::string out;
  for (char c : s) out.push_back(char(std::tolower(static_cast<unsigned char>(c))));
  return out;
}

std::string host_key(std::string_view h) {
  if (!h.empty() && h[0] == '[') {
    h = h.substr(0, h.find(']') == std::string_view::npos ? h.size() : h.find(']') + 1);
  } else if (std::count(h.begin(), h.end(), ':') == 1) {
    h = h.substr(0, h.find(':'));
  }
  if (!h.empty() && h.back() == '.') h.remove_suffix(1);
  return lower(h);
}

bool host_ok(const config::Match& m, const std::string& host) {
  if (m.hosts.empty()) return true;
  for (const std::string& h : m.hosts) {
    if (h == "*" || h == host) return true;
    if (h.rfind("*.", 0) == 0) {
      std::string base = h.substr(2);  // "example.org"
      if (host.size() > base.size() + 1 &&
          host.compare(host.size() - base.size() - 1, std::string::npos, "." + base) == 0) {
        return true;
      }
    }
  }
  return false;
}

std::vector<std::string> segments(const std::string& p) {
  std::vector<std::string> out;
  std::string cur;
  for (size_t i = 1; i <= p.size(); ++i) {
    if (i == p.size() || p[i] == '/') {
      out.push_back(cur);
      cur.clear();
    } else {
      cur.push_back(p[i]);
    }
  }
  return out;
}

struct PathResult {
  bool ok = false;
  size_t prefix_len = 0;
  std::vector<std::pair<std::string, std::string>> params;
};

PathResult path_ok(const config::Match& m, const std::string& path) {
  PathResult r;
  switch (m.path_kind) {
    case PathKind::Any:
      r.ok = true;
      break;
    case PathKind::Prefix:
      if (m.path == "/") {
        r.ok = path.rfind("/", 0) == 0;
      } else if (m.path.back() == '/') {
        r.ok = path.rfind(m.path, 0) == 0;
      } else {
        r.ok = path == m.path || path.rfind(m.path + "/", 0) == 0;
      }
      r.prefix_len = m.path.size();
      break;
    case PathKind::Exact:
      r.ok = path == m.path;
      r.prefix_len = path.size();
      break;
    case PathKind::Template: {
      std::vector<std::string> want = segments(m.path), got = segments(path);
      r.ok = want.size() == got.size();
      for (size_t i = 0; r.ok && i < want.size(); ++i) {
        const std::string& w = want[i];
        if (w.size() > 2 && w.front() == '{' && w.back() == '}') {
          r.ok = !got[i].empty();
          r.params.emplace_back(w.substr(1, w.size() - 2), got[i]);
        } else {
          r.ok = w == got[i];
        }
      }
      if (!r.ok) r.params.clear();
      r.prefix_len = path.size();
      break;
    }
    case PathKind::Regex: {
      RE2 re(m.path);
      re2::StringPiece whole(path), hit;
      r.ok = re.Match(whole, 0, whole.size(), RE2::UNANCHORED, &hit, 1);
      r.prefix_len = (r.ok && hit.data() == whole.data()) ? hit.size() : 0;
      break;
    }
  }
  return r;
}

std::string decode(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '+') {
      out += ' ';
    } else if (s[i] == '%' && i + 2 < s.size() && std::isxdigit(s[i + 1]) &&
               std::isxdigit(s[i + 2])) {
      out += char(std::stoi(s.substr(i + 1, 2), nullptr, 16));
      i += 2;
    } else {
      out += s[i];
    }
  }
  return out;
}

bool value_ok(const config::ValueMatch& vm, const std::optional<std::string>& v) {
  if (!v) return false;
  if (vm.kind == ValueKind::Present) return true;
  if (vm.kind == ValueKind::Exact) return *v == vm.value;
  return RE2::PartialMatch(*v, RE2(vm.value));
}

std::optional<std::string> query_value(const std::string& query, const std::string& name) {
  size_t pos = 0;
  while (pos <= query.size()) {
    size_t amp = std::min(query.find('&', pos), query.size());
    std::string item = query.substr(pos, amp - pos);
    if (!item.empty()) {
      size_t eq = item.find('=');
      std::string k = decode(item.substr(0, eq));
      std::string v = eq == std::string::npos ? "" : decode(item.substr(eq + 1));
      if (k == name) return v;
    }
    pos = amp + 1;
  }
  return std::nullopt;
}

std::optional<std::string> header_value(const Req& r, const std::string& name) {
  for (const auto& [n, v] : r.header_store) {
    if (lower(n) == name) return v;
  }
  return std::nullopt;
}

MatchResult match(const std::vector<config::Route>& routes, const Req& r) {
  MatchResult out;
  std::string host = host_key(r.host);
  std::vector<std::string> allow;
  for (size_t i = 0; i < routes.size(); ++i) {
    const config::Match& m = routes[i].match;
    if (!host_ok(m, host)) continue;
    PathResult p = path_ok(m, r.path);
    if (!p.ok) continue;
    bool rest = true;
    for (const auto& h : m.headers) rest = rest && value_ok(h, header_value(r, h.name));
    for (const auto& q : m.query) rest = rest && value_ok(q, query_value(r.query, q.name));
    if (!rest) continue;
    bool method = m.methods.empty() ||
                  std::find(m.methods.begin(), m.methods.end(), r.method) != m.methods.end();
    if (!method) {
      allow.insert(allow.end(), m.methods.begin(), m.methods.end());
      continue;
    }
    out.outcome = Outcome::Matched;
    out.route_index = i;
    out.prefix_len = p.prefix_len;
    for (auto& [n, v] : p.params) out.params.push_back({n, v});
    return out;
  }
  std::sort(allow.begin(), allow.end());
  allow.erase(std::unique(allow.begin(), allow.end()), allow.end());
  for (const std::string& a : allow) out.allow += (out.allow.empty() ? "" : ", ") + a;
  if (!allow.empty()) out.outcome = Outcome::MethodNotAllowed;
  return out;
}

}  // namespace reference

template <typename T>
const T& pick(std::mt19937& rng, const std::vector<T>& v) {
  return v[std::uniform_int_distribution<size_t>(0, v.size() - 1)(rng)];
}
bool chance(std::mt19937& rng, double p) { return std::bernoulli_distribution(p)(rng); }

std::string random_path(std::mt19937& rng, const std::vector<std::string>& alphabet, int max) {
  int n = std::uniform_int_distribution<int>(1, max)(rng);
  std::string p;
  for (int i = 0; i < n; ++i) p += "/" + pick(rng, alphabet);
  return p;
}

config::Route random_route(std::mt19937& rng) {
  static const std::vector<std::string> hosts = {
      "a.test", "b.test",   "c.test",   "d.test",     "e.test", "f.test", "g.test",
      "h.test", "x.a.test", "*.a.test", "*.x.a.test", "[::1]",  "*.test", "*"};
  static const std::vector<std::string> segs = {"a", "b", "c", "d", "e", "f"};
  static const std::vector<std::string> regexes = {"^/a/b$",   "^/[ab]/c$", "^/a/[^/]+$", "^/$",
                                                   "(b|c)/a$", "^/d/e",     "f/$",        "/e/f/"};
  static const std::vector<std::string> methods = {"GET", "POST", "PUT"};
  config::Route r;
  config::Match& m = r.match;
  if (chance(rng, 0.9)) {
    int n = std::uniform_int_distribution<int>(1, 2)(rng);
    for (int i = 0; i < n; ++i) m.hosts.push_back(pick(rng, hosts));
  }
  // Catch-alls (no path, prefix "/") are rare and narrowed, or the first few would answer
  // every request and the comparison would prove little.
  switch (std::uniform_int_distribution<int>(0, 19)(rng)) {
    case 0:
      m.path_kind = PathKind::Any;
      m.hosts = {pick(rng, hosts)};
      m.methods = {pick(rng, methods)};
      break;
    case 1:
    case 2:
    case 3:
    case 4:
    case 5:
      m.path_kind = PathKind::Prefix;
      m.path = chance(rng, 0.05) ? "/" : random_path(rng, segs, 3);
      if (chance(rng, 0.25) && m.path != "/") m.path += "/";
      break;
    case 6:
    case 7:
    case 8:
    case 9:
    case 10:
      m.path_kind = PathKind::Exact;
      m.path = chance(rng, 0.05) ? "/" : random_path(rng, segs, 3);
      if (chance(rng, 0.2)) m.path += "/";
      break;
    case 11:
    case 12:
    case 13:
    case 14:
    case 15:
    case 16: {
      m.path_kind = PathKind::Template;
      int n = std::uniform_int_distribution<int>(1, 3)(rng);
      for (int i = 0; i < n; ++i) {
        m.path += "/" + (chance(rng, 0.4) ? "{p" + std::to_string(i) + "}" : pick(rng, segs));
      }
      break;
    }
    default:
      m.path_kind = PathKind::Regex;
      m.path = pick(rng, regexes);
  }
  if (chance(rng, 0.6)) {
    for (const std::string& meth : methods) {
      if (chance(rng, 0.4)) m.methods.push_back(meth);
    }
  }
  auto value_match = [&](std::string name) {
    config::ValueMatch vm;
    vm.name = std::move(name);
    switch (std::uniform_int_distribution<int>(0, 2)(rng)) {
      case 0:
        vm.kind = ValueKind::Exact;
        vm.value = pick(rng, std::vector<std::string>{"1", "a b"});
        break;
      case 1:
        vm.kind = ValueKind::Present;
        break;
      default:
        vm.kind = ValueKind::Regex;
        vm.value = pick(rng, std::vector<std::string>{"^1", "b$"});
    }
    return vm;
  };
  if (chance(rng, 0.2))
    m.headers.push_back(value_match(pick(rng, std::vector<std::string>{"x-h", "x-k"})));
  if (chance(rng, 0.2))
    m.query.push_back(value_match(pick(rng, std::vector<std::string>{"q", "k"})));
  return r;
}

Req random_request(std::mt19937& rng) {
  static const std::vector<std::string> methods = {"GET", "POST", "PUT", "DELETE"};
  static const std::vector<std::string> hosts = {
      "a.test", "A.TEST:8080", "b.test", "x.a.test", "y.x.a.test", "a.test.", "c.test",
      "test",   "[::1]:80",    "[::1]",  "",         "Y.A.test",   ".a.test", "D.test:1",
      "e.test", "F.test",      "g.test", "h.test",   "i.test",     "j.test",  "k.test"};
  // Segments no route names literally reach only templates and regexes.
  static const std::vector<std::string> segs = {"a", "b",  "c", "d", "e", "f",
                                                "",  "ab", "x", "y", "z", "w"};
  static const std::vector<std::string> queries = {"",  "q=a+b",   "q=a%20b", "q=1",
                                                   "q", "x=1&q=1", "k=%31",   "q=b&q=1"};
  static const std::vector<std::pair<std::string, std::string>> headers = {
      {"x-h", "1"}, {"X-H", "a b"}, {"x-h", "12"}, {"x-k", ""}, {"X-K", "b"}};
  Req r;
  r.method = pick(rng, methods);
  r.host = pick(rng, hosts);
  r.path = chance(rng, 0.05) ? "/" : random_path(rng, segs, 4);
  r.query = pick(rng, queries);
  for (const auto& h : headers) {
    if (chance(rng, 0.3)) r.header_store.push_back(h);
  }
  return r;
}

TEST(Router, CompiledRouterAgreesWithLinearScanOnRandomTables) {
  std::mt19937 rng(20240611);
  int matched = 0, not_allowed = 0, not_found = 0, deep = 0;
  for (int table = 0; table < 4; ++table) {
    std::vector<config::Route> routes;
    for (int i = 0; i < 300; ++i) routes.push_back(random_route(rng));
    auto router = Router::compile(routes);
    for (int i = 0; i < 2000; ++i) {
      Req r = random_request(rng);
      MatchResult want = reference::match(routes, r);
      MatchResult got = router->match(r.view());
      SCOPED_TRACE(r.method + " " + r.host + " " + r.path + "?" + r.query);
      ASSERT_EQ(int(got.outcome), int(want.outcome));
      ASSERT_EQ(got.allow, want.allow);
      if (want.outcome == Outcome::Matched) {
        ASSERT_EQ(got.route_index, want.route_index);
        ASSERT_EQ(got.prefix_len, want.prefix_len);
        ASSERT_EQ(got.params.size(), want.params.size());
        for (size_t p = 0; p < want.params.size(); ++p) {
          EXPECT_EQ(got.params[p].name, want.params[p].name);
          EXPECT_EQ(got.params[p].value, want.params[p].value);
        }
        ++matched;
        if (want.route_index >= 100) ++deep;
      } else if (want.outcome == Outcome::MethodNotAllowed) {
        ++not_allowed;
      } else {
        ++not_found;
      }
      if (i % 50 == 0) {  // explain's first matching route is match()'s answer
        std::vector<Router::Verdict> v = router->explain(r.view());
        auto first = std::find_if(v.begin(), v.end(), [](const auto& x) { return x.matched; });
        if (got.outcome == Outcome::Matched) {
          ASSERT_NE(first, v.end());
          EXPECT_EQ(first->route_index, got.route_index);
        } else {
          EXPECT_EQ(first, v.end());
        }
      }
    }
  }
  // The generator must exercise all three outcomes for the comparison to mean anything.
  EXPECT_GT(matched, 2000);
  EXPECT_GT(not_allowed, 100);
  EXPECT_GT(not_found, 150);
  EXPECT_GT(deep, 1000);
  std::printf("random requests: %d matched (%d by route 100 or later), %d 405, %d 404\n", matched,
              deep, not_allowed, not_found);
}

}  // namespace
}  // namespace sluice::router

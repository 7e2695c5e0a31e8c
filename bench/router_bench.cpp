// Match latency of the compiled router with 10 and with 10,000 routes, for a request that hits a
// route near the end of the table and for one that matches nothing. The table mixes exact hosts,
// wildcard hosts, any-host routes, prefix / exact / template paths, methods, a header predicate
// and a few regex paths, in config order.
//
//   g++ -std=c++20 -O2 -DNDEBUG -Isrc bench/router_bench.cpp src/router/*.cpp
//       src/http/message.cpp $(pkg-config --cflags --libs re2) -lbenchmark -pthread
//       -o /tmp/router_bench
// (or the router_bench target of a release build, where Google Benchmark is installed).
#include <string>
#include <vector>

#include <benchmark/benchmark.h>

#include "router/router.h"

namespace {

using sluice::config::Match;
using sluice::config::Route;
using sluice::config::ValueMatch;
using sluice::router::MatchResult;
using sluice::router::RequestView;
using sluice::router::Router;

std::vector<Route> make_routes(int n) {
  std::vector<Route> routes;
  routes.reserve(size_t(n));
  for (int i = 0; i < n; ++i) {
    std::string id = std::to_string(i);
    Route r;
    Match& m = r.match;
    if (i % 500 == 7) {  // a few regexes: 1 in 10 routes, 20 in 10,000
      m.path_kind = Match::PathKind::Regex;
      m.path = "^/r" + id + "/[0-9]+$";
      routes.push_back(std::move(r));
      continue;
    }
    switch (i % 10) {
      case 0:
      case 1:
      case 2:
        m.hosts = {"svc" + id + ".example.com"};
        m.path_kind = Match::PathKind::Prefix;
        m.path = "/api/v1/svc" + id;
        break;
      case 3:
        m.hosts = {"*.tenant" + id + ".example.org"};
        m.path_kind = Match::PathKind::Prefix;
        m.path = "/t";
        break;
      case 4:
        m.path_kind = Match::PathKind::Template;
        m.path = "/users" + id + "/{id}/orders/{order}";
        break;
      case 5:
        m.hosts = {"svc" + id + ".example.com", "*.svc" + id + ".example.net"};
        m.path_kind = Match::PathKind::Exact;
        m.path = "/health";
        break;
      case 6:
        m.path_kind = Match::PathKind::Prefix;
        m.path = "/static" + id + "/";
        m.methods = {"GET", "HEAD"};
        break;
      case 7:
        m.hosts = {"svc" + id + ".example.com"};
        m.path_kind = Match::PathKind::Template;
        m.path = "/items/{id}";
        m.headers.push_back({"x-version", ValueMatch::Kind::Exact, "2"});
        break;
      case 8:
        m.path_kind = Match::PathKind::Exact;
        m.path = "/exact" + id + "/a/b";
        break;
      default:
        m.hosts = {"*.example.com"};
        m.path_kind = Match::PathKind::Prefix;
        m.path = "/wild" + id;
        break;
    }
    routes.push_back(std::move(r));
  }
  return routes;
}

// A request for route n - 6 (an any-host template route, i % 10 == 4), so every lower-index
// candidate in reach is passed over first.
void match_hit(benchmark::State& state) {
  int n = int(state.range(0));
  auto router = Router::compile(make_routes(n));
  std::string path = "/users" + std::to_string(n - 6) + "/42/orders/7";
  std::vector<sluice::http::Header> headers = {{"user-agent", "bench"}, {"accept", "*/*"}};
  RequestView req{"GET", "svc3.example.com:8080", path, "a=1", &headers};
  MatchResult check = router->match(req);
  if (check.outcome != MatchResult::Outcome::Matched || check.route_index != size_t(n - 6)) {
    state.SkipWithError("hit request did not match the expected route");
    return;
  }
  for (auto _ : state) benchmark::DoNotOptimize(router->match(req));
}

void match_miss(benchmark::State& state) {
  int n = int(state.range(0));
  auto router = Router::compile(make_routes(n));
  std::vector<sluice::http::Header> headers = {{"user-agent", "bench"}, {"accept", "*/*"}};
  RequestView req{"GET", "unknown.example.net", "/nothing/here/at/all", "", &headers};
  if (router->match(req).outcome != MatchResult::Outcome::NotFound) {
    state.SkipWithError("miss request matched");
    return;
  }
  for (auto _ : state) benchmark::DoNotOptimize(router->match(req));
}

BENCHMARK(match_hit)->Arg(10)->Arg(10000);
BENCHMARK(match_miss)->Arg(10)->Arg(10000);

}  // namespace

BENCHMARK_MAIN();

// Route matching: which `routes:` entry (SPEC.md section 2) a request goes to, or why none does.
//
//   auto router = router::Router::compile(cfg.routes);      // once per config load
//   router::RequestView req{head.method, head.host, normalised_path, head.query, &head.headers};
//   router::MatchResult m = router->match(req);              // on the worker, per request
//   switch (m.outcome) {
//     case MatchResult::Outcome::Matched:          use cfg.routes[m.route_index],
//                                                  router->rewrite_path(m, normalised_path)
//     case MatchResult::Outcome::MethodNotAllowed: 405 with "Allow: " + m.allow
//     case MatchResult::Outcome::NotFound:         404
//   }
//
// Semantics are those of a linear scan in config order where the first route whose every
// predicate holds wins; the compiled form only avoids looking at routes that cannot match:
//  - host: exact names in a hash map, "*.example.org" by suffix (any depth of subdomain, never
//    "example.org" itself), routes without hosts in an any-host bucket. The request's Host is
//    compared case-insensitively without its ":port" ("[::1]:8080" -> "[::1]") or a trailing dot.
//  - path: a segment trie per host bucket for prefix, exact and template paths. Regex paths (RE2,
//    unanchored PartialMatch, so users anchor with ^ and $) are filtered by one RE2::Set pass per
//    bucket that has several; a route's own regex runs only when the scan in index order reaches
//    it, so regexes after the winner cost nothing.
//  - method, headers, query: checked on the surviving candidates in ascending route index.
//
// A Router is immutable after compile(): match(), rewrite_path() and explain() may run on any
// number of worker threads at once. It keeps no pointer into the routes it was compiled from.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "config/config.h"
#include "http/message.h"

namespace sluice::router {

// What the router looks at. Views only; they need to live for the duration of one call.
struct RequestView {
  std::string_view method;  // upper-case token as sent
  std::string_view host;    // Host header as sent: may carry ":port", any case
  std::string_view path;    // already normalised, no query
  std::string_view query;   // raw query string without '?', may be empty
  const std::vector<http::Header>* headers = nullptr;  // may be null = no headers
};

// One `{name}` capture of a template path, as it appears in the path (not percent-decoded).
struct Param {
  std::string name;
  std::string value;
};

struct MatchResult {
  enum class Outcome { Matched, NotFound, MethodNotAllowed };
  Outcome outcome = Outcome::NotFound;
  size_t route_index = 0;     // index into the routes vector given to compile, when Matched
  std::vector<Param> params;  // {name} template captures in template order, when Matched
  std::string allow;          // "GET, HEAD, POST" when MethodNotAllowed (sorted, unique)
  // Length of the path prefix the route matched, used by rewrite strip_prefix: the prefix as
  // written for prefix paths ("/api/" -> 5), the whole path for exact and template paths, the end
  // of the regex match when it starts at offset 0 for regex paths (else 0), 0 for routes with no
  // path.
  size_t prefix_len = 0;
};

class Router {
 public:
  // Compiles validated routes (config::load_* has checked regexes, upper-cased methods and
  // lower-cased hosts and header names). A regex that fails to compile anyway makes its predicate
  // never hold rather than failing the whole table.
  static std::unique_ptr<const Router> compile(const std::vector<config::Route>& routes);

  ~Router();
  Router(const Router&) = delete;
  Router& operator=(const Router&) = delete;

  // First route in config order that matches every predicate. When none does, MethodNotAllowed
  // if some route failed only on `methods` (allow = the union of those routes' methods), else
  // NotFound. Never throws.
  MatchResult match(const RequestView& req) const;

  // The path to send upstream after the matched route's `rewrite`: strip_prefix drops
  // m.prefix_len bytes and the result always starts with '/'; prefix prepends (without doubling
  // a '/' at the join); regex is RE2::GlobalReplace with \1..\9; none leaves the path unchanged.
  // `m` must come from match() on this router with the same path; anything but Matched returns the
  // path unchanged.
  std::string rewrite_path(const MatchResult& m, std::string_view path) const;

  // For the admin "explain" call: every route in config order, whether it matched on its own
  // (ignoring earlier routes) and if not the first predicate that failed, checked in the order
  // "host", "path", "method", "header <name>", "query <name>". Slow path: a linear scan.
  struct Verdict {
    size_t route_index;
    bool matched;
    std::string failed;  // empty when matched
  };
  std::vector<Verdict> explain(const RequestView& req) const;

  // Number of routes compiled (the size of the vector given to compile).
  size_t size() const;

  // The Host header without ":port" or a trailing dot, lower-cased: what host predicates compare.
  static std::string normalise_host(std::string_view host);

 private:
  struct Impl;
  explicit Router(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace sluice::router

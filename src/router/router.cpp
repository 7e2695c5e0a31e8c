#include "router/router.h"

#include <algorithm>
#include <cstdint>
#include <functional>
#include <optional>
#include <unordered_map>
#include <utility>

#include <re2/re2.h>
#include <re2/set.h>

namespace sluice::router {

namespace {

using PathKind = config::Match::PathKind;
using ValueKind = config::ValueMatch::Kind;

constexpr uint32_t kNone = UINT32_MAX;

constexpr char ascii_lower(char c) noexcept { return (c >= 'A' && c <= 'Z') ? char(c + 32) : c; }

std::string lower_copy(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = ascii_lower(c);
  return out;
}

// Validation compiled these already; a pattern that still fails yields nullptr, and a predicate
// without its regex never holds (the data plane does not throw).
std::unique_ptr<RE2> compile_regex(const std::string& pattern) {
  RE2::Options options;
  options.set_log_errors(false);
  auto re = std::make_unique<RE2>(pattern, options);
  if (!re->ok()) return nullptr;
  return re;
}

// "/a/b/" -> {"a", "b", ""}; "/" -> {""}. The caller guarantees the leading '/'. Config paths and
// request paths are split the same way, which is what keeps the trie equal to a linear scan.
std::vector<std::string_view> split_segments(std::string_view path) {
  std::vector<std::string_view> out;
  size_t pos = 0;
  while (pos < path.size()) {
    size_t start = pos + 1;
    size_t end = path.find('/', start);
    if (end == std::string_view::npos) end = path.size();
    out.push_back(path.substr(start, end - start));
    pos = end;
  }
  return out;
}

int hex_value(char c) noexcept {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// application/x-www-form-urlencoded decoding; a malformed escape is kept as written.
std::string form_decode(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    char c = s[i];
    if (c == '+') {
      out.push_back(' ');
    } else if (c == '%' && i + 2 < s.size() && hex_value(s[i + 1]) >= 0 &&
               hex_value(s[i + 2]) >= 0) {
      out.push_back(char(hex_value(s[i + 1]) * 16 + hex_value(s[i + 2])));
      i += 2;
    } else {
      out.push_back(c);
    }
  }
  return out;
}

using QueryPairs = std::vector<std::pair<std::string, std::string>>;

QueryPairs parse_query(std::string_view query) {
  QueryPairs out;
  size_t pos = 0;
  while (pos <= query.size()) {
    size_t end = query.find('&', pos);
    if (end == std::string_view::npos) end = query.size();
    std::string_view item = query.substr(pos, end - pos);
    if (!item.empty()) {
      size_t eq = item.find('=');
      if (eq == std::string_view::npos) {
        out.emplace_back(form_decode(item), std::string());
      } else {
        out.emplace_back(form_decode(item.substr(0, eq)), form_decode(item.substr(eq + 1)));
      }
    }
    pos = end + 1;
  }
  return out;
}

struct Predicate {
  std::string name;
  ValueKind kind = ValueKind::Exact;
  std::string value;
  std::unique_ptr<RE2> re;  // Regex only; null if it failed to compile

  // `found` = the header / query key is present; `value` is its first occurrence.
  bool holds(bool found, std::string_view v) const {
    if (!found) return false;
    switch (kind) {
      case ValueKind::Present:
        return true;
      case ValueKind::Exact:
        return v == value;
      case ValueKind::Regex:
        return re != nullptr && RE2::PartialMatch(v, *re);
    }
    return false;
  }
};

struct Segment {
  std::string text;  // literal text, or the parameter name
  bool is_param = false;
};

struct CompiledRoute {
  std::vector<std::string> hosts;  // lower-case, as configured; empty = any
  PathKind path_kind = PathKind::Any;
  std::string path;
  std::vector<Segment> segments;     // Template only
  std::unique_ptr<RE2> path_re;      // Regex only
  std::vector<std::string> methods;  // sorted, unique; empty = any
  std::vector<Predicate> headers;
  std::vector<Predicate> query;

  config::Rewrite::Kind rewrite_kind = config::Rewrite::Kind::None;
  std::string rewrite_prefix;
  std::unique_ptr<RE2> rewrite_re;
  std::string rewrite_replace;
};

bool is_param_segment(std::string_view seg) {
  return seg.size() >= 3 && seg.front() == '{' && seg.back() == '}';
}

Predicate compile_predicate(const config::ValueMatch& vm) {
  Predicate p;
  p.name = vm.name;
  p.kind = vm.kind;
  p.value = vm.value;
  if (vm.kind == ValueKind::Regex) p.re = compile_regex(vm.value);
  return p;
}

bool host_holds(const CompiledRoute& r, std::string_view host) {
  if (r.hosts.empty()) return true;
  for (const std::string& h : r.hosts) {
    if (h == "*") return true;
    if (h.size() >= 2 && h[0] == '*' && h[1] == '.') {
      std::string_view suffix = std::string_view(h).substr(1);  // ".example.org"
      if (host.size() > suffix.size() && host.ends_with(suffix)) return true;
    } else if (h == host) {
      return true;
    }
  }
  return false;
}

// The route's path predicate on its own: the matched prefix length, or nullopt.
std::optional<size_t> path_holds(const CompiledRoute& r, std::string_view path) {
  switch (r.path_kind) {
    case PathKind::Any:
      return 0;
    case PathKind::Prefix: {
      std::string_view p = r.path;
      if (!path.starts_with(p)) return std::nullopt;
      if (p.ends_with('/') || path.size() == p.size() || path[p.size()] == '/') return p.size();
      return std::nullopt;
    }
    case PathKind::Exact:
      if (path == r.path) return path.size();
      return std::nullopt;
    case PathKind::Template: {
      if (!path.starts_with('/')) return std::nullopt;
      std::vector<std::string_view> segs = split_segments(path);
      if (segs.size() != r.segments.size()) return std::nullopt;
      for (size_t i = 0; i < segs.size(); ++i) {
        const Segment& s = r.segments[i];
        if (s.is_param ? segs[i].empty() : segs[i] != s.text) return std::nullopt;
      }
      return path.size();
    }
    case PathKind::Regex: {
      if (r.path_re == nullptr) return std::nullopt;
      re2::StringPiece whole(path.data(), path.size());
      re2::StringPiece m;
      if (!r.path_re->Match(whole, 0, whole.size(), RE2::UNANCHORED, &m, 1)) return std::nullopt;
      return m.data() == whole.data() ? m.size() : 0;
    }
  }
  return std::nullopt;
}

bool method_holds(const CompiledRoute& r, std::string_view method) {
  if (r.methods.empty()) return true;
  for (const std::string& m : r.methods) {
    if (m == method) return true;
  }
  return false;
}

// The first header predicate that fails, or nullptr.
const Predicate* failing_header(const CompiledRoute& r, const std::vector<http::Header>* headers) {
  for (const Predicate& p : r.headers) {
    http::HeaderLookup h;
    if (headers != nullptr) h = http::find_header(*headers, p.name);
    if (!p.holds(h.found, h.value)) return &p;
  }
  return nullptr;
}

const Predicate* failing_query(const CompiledRoute& r, const QueryPairs& pairs) {
  for (const Predicate& p : r.query) {
    auto it = std::find_if(pairs.begin(), pairs.end(),
                           [&](const auto& kv) { return kv.first == p.name; });
    bool found = it != pairs.end();
    if (!p.holds(found, found ? std::string_view(it->second) : std::string_view())) return &p;
  }
  return nullptr;
}

// Transparent string hashing so lookups by std::string_view do not allocate.
struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const noexcept { return std::hash<std::string_view>{}(s); }
};
using HostMap = std::unordered_map<std::string, uint32_t, StringHash, std::equal_to<>>;

// Trie edges of every bucket live in one hash map keyed by (parent node, segment): cheaper than a
// map per node when most nodes have one or two children, and O(1) at a root with thousands.
struct EdgeKey {
  uint32_t parent;
  std::string segment;
};
struct EdgeView {
  uint32_t parent;
  std::string_view segment;
};
struct EdgeHash {
  using is_transparent = void;
  size_t operator()(const EdgeView& e) const noexcept {
    return std::hash<std::string_view>{}(e.segment) ^ (size_t(e.parent) * 0x9E3779B97F4A7C15ull);
  }
  size_t operator()(const EdgeKey& e) const noexcept {
    return (*this)(EdgeView{e.parent, e.segment});
  }
};
struct EdgeEq {
  using is_transparent = void;
  static EdgeView view(const EdgeKey& e) { return {e.parent, e.segment}; }
  static EdgeView view(const EdgeView& e) { return e; }
  template <typename A, typename B>
  bool operator()(const A& a, const B& b) const noexcept {
    EdgeView x = view(a), y = view(b);
    return x.parent == y.parent && x.segment == y.segment;
  }
};

struct PrefixEntry {
  uint32_t route;
  uint32_t len;     // the prefix as written, = bytes of the path it consumed
  bool needs_more;  // prefix ended in '/': the path must continue past this node
};

struct Node {
  uint32_t param_child = kNone;       // the `{name}` edge of template paths
  std::vector<PrefixEntry> prefixes;  // prefix routes that end here
  std::vector<uint32_t> terminals;    // exact and template routes that end here
};

// The routes reachable under one host key (an exact host, a wildcard suffix or any host).
struct Bucket {
  uint32_t root = kNone;
  std::vector<uint32_t> any_path;  // routes without a path predicate
  std::vector<uint32_t> scan;      // paths checked one by one, lazily (see Impl::finish)
  // With several regex paths in one bucket, one RE2::Set pass over the path says which of them
  // can match, instead of running each regex; regex_routes[i] is the route of set pattern i.
  std::unique_ptr<RE2::Set> regex_set;
  std::vector<uint32_t> regex_routes;
};

struct Candidate {
  uint32_t route;
  uint32_t prefix_len;
  bool lazy;  // path predicate not evaluated yet
};

}  // namespace

struct Router::Impl {
  std::vector<CompiledRoute> routes;
  std::vector<Node> nodes;
  std::unordered_map<EdgeKey, uint32_t, EdgeHash, EdgeEq> edges;
  std::vector<Bucket> buckets;
  HostMap exact_hosts;        // "api.example.com" -> bucket
  HostMap wildcard_suffixes;  // ".example.org" -> bucket (from "*.example.org")
  uint32_t any_bucket = kNone;

  uint32_t new_node() {
    nodes.emplace_back();
    return uint32_t(nodes.size() - 1);
  }

  uint32_t bucket_for(HostMap* map, const std::string& key) {
    if (map == nullptr) {
      if (any_bucket == kNone) any_bucket = new_bucket();
      return any_bucket;
    }
    auto [it, inserted] = map->try_emplace(key, kNone);
    if (inserted) it->second = new_bucket();
    return it->second;
  }

  uint32_t new_bucket() {
    buckets.emplace_back();
    buckets.back().root = new_node();
    return uint32_t(buckets.size() - 1);
  }

  uint32_t literal_child(uint32_t parent, std::string_view segment) {
    auto it = edges.find(EdgeView{parent, segment});
    if (it != edges.end()) return it->second;
    uint32_t child = new_node();
    edges.emplace(EdgeKey{parent, std::string(segment)}, child);
    return child;
  }

  void insert(uint32_t bucket_index, uint32_t route_index) {
    const CompiledRoute& r = routes[route_index];
    Bucket& b = buckets[bucket_index];
    bool trie_path = (r.path_kind == PathKind::Prefix || r.path_kind == PathKind::Exact ||
                      r.path_kind == PathKind::Template) &&
                     r.path.starts_with('/');
    if (r.path_kind == PathKind::Any) {
      b.any_path.push_back(route_index);
      return;
    }
    if (!trie_path) {
      b.scan.push_back(route_index);
      return;
    }
    uint32_t node = b.root;
    if (r.path_kind == PathKind::Template) {
      for (const Segment& s : r.segments) {
        if (s.is_param) {
          if (nodes[node].param_child == kNone) {
            uint32_t child = new_node();  // may reallocate `nodes`: index again below
            nodes[node].param_child = child;
          }
          node = nodes[node].param_child;
        } else {
          node = literal_child(node, s.text);
        }
      }
      nodes[node].terminals.push_back(route_index);
      return;
    }
    std::vector<std::string_view> segs = split_segments(r.path);
    bool needs_more = false;
    if (r.path_kind == PathKind::Prefix && !segs.empty() && segs.back().empty()) {
      segs.pop_back();  // "/api/" = the "api" node plus at least one more byte ('/')
      needs_more = true;
    }
    for (std::string_view s : segs) node = literal_child(node, s);
    if (r.path_kind == PathKind::Prefix) {
      nodes[node].prefixes.push_back({route_index, uint32_t(r.path.size()), needs_more});
    } else {
      nodes[node].terminals.push_back(route_index);
    }
  }

  // Depth-first along the request path. Each trie node is visited at most once, because a node
  // fixes how many segments were consumed, so a template-heavy table cannot blow up.
  void walk(uint32_t node_index, size_t pos, std::string_view path,
            std::vector<Candidate>& out) const {
    const Node& node = nodes[node_index];
    bool more = pos < path.size();  // then path[pos] == '/'
    for (const PrefixEntry& e : node.prefixes) {
      if (!e.needs_more || more) out.push_back({e.route, e.len, false});
    }
    if (!more) {
      for (uint32_t r : node.terminals) out.push_back({r, uint32_t(path.size()), false});
      return;
    }
    size_t start = pos + 1;
    size_t end = path.find('/', start);
    if (end == std::string_view::npos) end = path.size();
    std::string_view segment = path.substr(start, end - start);
    auto it = edges.find(EdgeView{node_index, segment});
    if (it != edges.end()) walk(it->second, end, path, out);
    if (node.param_child != kNone && !segment.empty()) walk(node.param_child, end, path, out);
  }

  // Moves the regex paths of buckets that have several into an RE2::Set. A pattern the set
  // rejects, or a set that fails to compile, stays on the one-by-one scan list.
  void finish() {
    constexpr size_t kMinSet = 2;  // a single regex is cheaper to run directly, and lazily
    for (Bucket& b : buckets) {
      size_t regexes = std::count_if(b.scan.begin(), b.scan.end(), [&](uint32_t r) {
        return routes[r].path_kind == PathKind::Regex;
      });
      if (regexes < kMinSet) continue;
      RE2::Options options;
      options.set_log_errors(false);
      auto set = std::make_unique<RE2::Set>(options, RE2::UNANCHORED);
      std::vector<uint32_t> in_set, rest;
      for (uint32_t r : b.scan) {
        if (routes[r].path_kind == PathKind::Regex && routes[r].path_re != nullptr &&
            set->Add(routes[r].path, nullptr) >= 0) {
          in_set.push_back(r);
        } else {
          rest.push_back(r);
        }
      }
      if (in_set.size() < kMinSet || !set->Compile()) continue;
      b.regex_set = std::move(set);
      b.regex_routes = std::move(in_set);
      b.scan = std::move(rest);
    }
  }

  void collect(uint32_t bucket_index, std::string_view path, std::vector<Candidate>& out) const {
    const Bucket& b = buckets[bucket_index];
    for (uint32_t r : b.any_path) out.push_back({r, 0, false});
    for (uint32_t r : b.scan) out.push_back({r, 0, true});
    if (b.regex_set != nullptr) {
      thread_local std::vector<int> hits;
      hits.clear();
      RE2::Set::ErrorInfo error{};
      if (b.regex_set->Match(re2::StringPiece(path.data(), path.size()), &hits, &error)) {
        // Still lazy: the route's own regex gives prefix_len, for the few candidates reached.
        for (int i : hits) out.push_back({b.regex_routes[size_t(i)], 0, true});
      } else if (error.kind != RE2::Set::kNoError) {
        // The set's DFA ran out of memory on this input: fall back to every regex, one by one.
        for (uint32_t r : b.regex_routes) out.push_back({r, 0, true});
      }
    }
    if (path.starts_with('/')) walk(b.root, 0, path, out);
  }
};

Router::Router(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Router::~Router() = default;

size_t Router::size() const { return impl_->routes.size(); }

std::string Router::normalise_host(std::string_view host) {
  std::string_view h = host;
  if (h.starts_with('[')) {
    size_t close = h.find(']');
    if (close != std::string_view::npos) h = h.substr(0, close + 1);
  } else {
    size_t colon = h.find(':');
    // More than one ':' is a bare IPv6 literal, which has no port to strip.
    if (colon != std::string_view::npos && h.find(':', colon + 1) == std::string_view::npos) {
      h = h.substr(0, colon);
    }
  }
  if (h.ends_with('.')) h.remove_suffix(1);  // "example.com." is the same name
  return lower_copy(h);
}

std::unique_ptr<const Router> Router::compile(const std::vector<config::Route>& routes) {
  auto impl = std::make_unique<Impl>();
  impl->routes.reserve(routes.size());
  for (const config::Route& route : routes) {
    const config::Match& m = route.match;
    CompiledRoute r;
    for (const std::string& h : m.hosts) r.hosts.push_back(lower_copy(h));
    r.path_kind = m.path_kind;
    r.path = m.path;
    if (m.path_kind == PathKind::Template && m.path.starts_with('/')) {
      for (std::string_view s : split_segments(m.path)) {
        if (is_param_segment(s)) {
          r.segments.push_back({std::string(s.substr(1, s.size() - 2)), true});
        } else {
          r.segments.push_back({std::string(s), false});
        }
      }
    }
    if (m.path_kind == PathKind::Regex) r.path_re = compile_regex(m.path);
    r.methods = m.methods;
    std::sort(r.methods.begin(), r.methods.end());
    r.methods.erase(std::unique(r.methods.begin(), r.methods.end()), r.methods.end());
    for (const config::ValueMatch& vm : m.headers) r.headers.push_back(compile_predicate(vm));
    for (const config::ValueMatch& vm : m.query) r.query.push_back(compile_predicate(vm));
    r.rewrite_kind = route.rewrite.kind;
    r.rewrite_prefix = route.rewrite.prefix;
    if (route.rewrite.kind == config::Rewrite::Kind::Regex) {
      r.rewrite_re = compile_regex(route.rewrite.regex);
      r.rewrite_replace = route.rewrite.replace;
    }
    impl->routes.push_back(std::move(r));
  }

  for (uint32_t i = 0; i < impl->routes.size(); ++i) {
    const std::vector<std::string>& hosts = impl->routes[i].hosts;
    if (hosts.empty()) impl->insert(impl->bucket_for(nullptr, {}), i);
    for (const std::string& h : hosts) {
      uint32_t bucket;
      if (h == "*") {
        bucket = impl->bucket_for(nullptr, {});
      } else if (h.starts_with("*.")) {
        bucket = impl->bucket_for(&impl->wildcard_suffixes, h.substr(1));
      } else {
        bucket = impl->bucket_for(&impl->exact_hosts, h);
      }
      impl->insert(bucket, i);
    }
  }
  impl->finish();
  return std::unique_ptr<const Router>(new Router(std::move(impl)));
}

MatchResult Router::match(const RequestView& req) const {
  const Impl& im = *impl_;
  // Per-thread scratch: match() runs once per request on a worker, and this keeps the candidate
  // list from allocating on every call. Nothing in the loop below re-enters match().
  thread_local std::vector<Candidate> candidates;
  candidates.clear();

  std::string host = normalise_host(req.host);
  if (im.any_bucket != kNone) im.collect(im.any_bucket, req.path, candidates);
  if (!im.exact_hosts.empty()) {
    auto it = im.exact_hosts.find(std::string_view(host));
    if (it != im.exact_hosts.end()) im.collect(it->second, req.path, candidates);
  }
  if (!im.wildcard_suffixes.empty()) {
    // Every ".suffix" of the host that leaves a non-empty label in front: "a.b.example.org" tries
    // ".b.example.org", ".example.org", ".org", so "*.example.org" covers any depth.
    for (size_t i = 1; i < host.size(); ++i) {
      if (host[i] != '.') continue;
      auto it = im.wildcard_suffixes.find(std::string_view(host).substr(i));
      if (it != im.wildcard_suffixes.end()) im.collect(it->second, req.path, candidates);
    }
  }

  // A route listed under several matching host keys shows up more than once, always with the same
  // path verdict, so keeping any one copy is enough.
  std::sort(candidates.begin(), candidates.end(),
            [](const Candidate& a, const Candidate& b) { return a.route < b.route; });
  candidates.erase(
      std::unique(candidates.begin(), candidates.end(),
                  [](const Candidate& a, const Candidate& b) { return a.route == b.route; }),
      candidates.end());

  MatchResult result;
  std::optional<QueryPairs> query;  // parsed on first need
  std::vector<std::string_view> allow;
  for (const Candidate& c : candidates) {
    const CompiledRoute& r = im.routes[c.route];
    size_t prefix_len = c.prefix_len;
    if (c.lazy) {
      std::optional<size_t> p = path_holds(r, req.path);
      if (!p) continue;
      prefix_len = *p;
    }
    if (failing_header(r, req.headers) != nullptr) continue;
    if (!r.query.empty()) {
      if (!query) query = parse_query(req.query);
      if (failing_query(r, *query) != nullptr) continue;
    }
    if (!method_holds(r, req.method)) {
      allow.insert(allow.end(), r.methods.begin(), r.methods.end());
      continue;
    }
    result.outcome = MatchResult::Outcome::Matched;
    result.route_index = c.route;
    result.prefix_len = prefix_len;
    if (r.path_kind == PathKind::Template) {
      size_t pos = 0;
      for (const Segment& s : r.segments) {
        size_t start = pos + 1;
        size_t end = std::min(req.path.find('/', start), req.path.size());
        if (s.is_param)
          result.params.push_back({s.text, std::string(req.path.substr(start, end - start))});
        pos = end;
      }
    }
    return result;
  }

  if (!allow.empty()) {
    std::sort(allow.begin(), allow.end());
    allow.erase(std::unique(allow.begin(), allow.end()), allow.end());
    result.outcome = MatchResult::Outcome::MethodNotAllowed;
    for (std::string_view m : allow) {
      if (!result.allow.empty()) result.allow += ", ";
      result.allow += m;
    }
  }
  return result;
}

std::string Router::rewrite_path(const MatchResult& m, std::string_view path) const {
  if (m.outcome != MatchResult::Outcome::Matched || m.route_index >= impl_->routes.size()) {
    return std::string(path);
  }
  const CompiledRoute& r = impl_->routes[m.route_index];
  switch (r.rewrite_kind) {
    case config::Rewrite::Kind::None:
      return std::string(path);
    case config::Rewrite::Kind::StripPrefix: {
      std::string_view rest = path.substr(std::min(m.prefix_len, path.size()));
      if (rest.starts_with('/')) return std::string(rest);
      std::string out = "/";
      out += rest;
      return out;
    }
    case config::Rewrite::Kind::Prefix: {
      std::string out = r.rewrite_prefix;
      if (out.ends_with('/') && path.starts_with('/')) path.remove_prefix(1);
      out += path;
      return out;
    }
    case config::Rewrite::Kind::Regex: {
      std::string out(path);
      if (r.rewrite_re != nullptr) RE2::GlobalReplace(&out, *r.rewrite_re, r.rewrite_replace);
      return out;
    }
  }
  return std::string(path);
}

std::vector<Router::Verdict> Router::explain(const RequestView& req) const {
  std::vector<Verdict> out;
  out.reserve(impl_->routes.size());
  std::string host = normalise_host(req.host);
  std::optional<QueryPairs> query;
  for (size_t i = 0; i < impl_->routes.size(); ++i) {
    const CompiledRoute& r = impl_->routes[i];
    Verdict v{i, false, {}};
    if (!host_holds(r, host)) {
      v.failed = "host";
    } else if (!path_holds(r, req.path)) {
      v.failed = "path";
    } else if (!method_holds(r, req.method)) {
      v.failed = "method";
    } else if (const Predicate* h = failing_header(r, req.headers)) {
      v.failed = "header " + h->name;
    } else {
      const Predicate* q = nullptr;
      if (!r.query.empty()) {
        if (!query) query = parse_query(req.query);
        q = failing_query(r, *query);
      }
      if (q != nullptr) {
        v.failed = "query " + q->name;
      } else {
        v.matched = true;
      }
    }
    out.push_back(std::move(v));
  }
  return out;
}

}  // namespace sluice::router

// HTTP caching rules (RFC 9111) for the gateway's shared response cache: what may be stored, for
// how long, and how a request may be answered from the cache. Pure functions of the messages'
// headers and the route's `cache:` config; no clock, no I/O.
//
//   // Request side, before routing upstream:
//   cache::CacheControl req = cache::CacheControl::parse(cache_control_line_1);
//   req.merge(cache_control_line_2);                    // one call per further header line
//   req.merge_pragma(pragma);                           // Pragma: no-cache
//   cache::LookupRules rules = cache::lookup_rules(req, has_credentials, route.cache);
//   if (!rules.bypass && !rules.revalidate) {
//     auto hit = store.lookup(key, request_header);     // store.h
//     if (hit && hit->satisfies(rules, now_ns)) ...     // answer from the cache
//   }
//   if (rules.only_if_cached) ...                       // nothing usable: 504
//
//   // Response side, when the upstream's head has arrived:
//   cache::CacheControl resp = cache::CacheControl::parse(response_cache_control);
//   resp.apply_expires(expires, date, now_unix_s);      // only if there is an Expires header
//   cache::StoreDecision d = cache::decide_store("GET", status, req, resp, vary, has_set_cookie,
//                                                has_credentials, route.cache);
//   if (d.store) ...  // build an Entry (store.h) with d.ttl_s, d.stale_if_error_s and d.vary
//
// Deliberate simplifications, all on the safe side: a response with no-cache or private
// (qualified or not) is not stored, since this cache never revalidates; responses to requests with
// credentials are stored only on `per_consumer` routes (the cache key then holds the consumer);
// max-stale is parsed but never used to serve stale content. Only stale-if-error serves stale.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace sluice::cache {

// Cache-Control of one message (request or response). Numeric values are seconds (RFC 9111
// delta-seconds), clamped to kMaxDeltaSeconds.
struct CacheControl {
  // RFC 9111 1.2.2: a delta-seconds value too large to represent counts as 2^31.
  static constexpr int64_t kMaxDeltaSeconds = int64_t{1} << 31;
  // max-stale with no value: any staleness is acceptable.
  static constexpr int64_t kAnyStaleness = INT64_MAX;

  bool no_store = false;
  bool no_cache = false;  // also set by Pragma: no-cache (merge_pragma)
  bool is_private = false;
  bool is_public = false;
  bool must_revalidate = false;
  bool proxy_revalidate = false;
  bool only_if_cached = false;
  std::optional<int64_t> max_age;
  std::optional<int64_t> s_maxage;
  std::optional<int64_t> stale_if_error;  // RFC 5861
  std::optional<int64_t> min_fresh;
  std::optional<int64_t> max_stale;  // kAnyStaleness when given without a value
  // Freshness lifetime from the Expires header (Expires - Date, may be <= 0), set by
  // apply_expires(). Used only when there is neither s-maxage nor max-age.
  std::optional<int64_t> expires;

  // Tolerant parse of one header line, e.g. `no-cache, max-age=60, private="x, y"`. Directive
  // names are case-insensitive; arguments may be tokens or quoted strings (commas inside quotes
  // do not split); whitespace around elements and `=` is skipped. Unknown directives, and
  // numeric directives whose argument is not 1*DIGIT, are ignored; flag directives count with or
  // without an argument (`no-cache="Set-Cookie"` is no-cache). A repeated numeric directive keeps
  // its first value (RFC 9111 4.2.1).
  static CacheControl parse(std::string_view value);
  // Adds another Cache-Control header line of the same message (same rules as parse()).
  void merge(std::string_view value);
  // A Pragma header line: `no-cache` among its elements sets no_cache. (RFC 9111 deprecates
  // Pragma; honouring it can only send a request upstream, never serve anything it would not.)
  void merge_pragma(std::string_view value);
  // A response's Expires header (RFC 9111 5.3). `date` is its Date header; when that is empty or
  // not a valid HTTP-date, `now_unix_s` (the time the response was received) stands in for it.
  // An Expires that is not a valid HTTP-date (e.g. "0") means "already expired".
  void apply_expires(std::string_view expires_value, std::string_view date, int64_t now_unix_s);
};

// An HTTP-date (IMF-fixdate, RFC 850 or asctime form; RFC 9110 5.6.7) in seconds since the Unix
// epoch, or nullopt when it is not one. Tolerant of extra whitespace and case.
std::optional<int64_t> parse_http_date(std::string_view value);

// A route's `cache:` config, validated by the config loader.
struct RouteCache {
  std::chrono::seconds ttl{60};   // freshness lifetime when the response gives none
  std::vector<std::string> vary;  // lower-case request header names, added to the response's Vary
  std::chrono::seconds stale_if_error{0};  // when the response has no stale-if-error directive
  bool per_consumer = false;  // requests with credentials may be cached, keyed by consumer
};

struct StoreDecision {
  bool store = false;
  // Why not, for the log and the tests: "method", "request no-store", "status", "credentials",
  // "no-store", "private", "no-cache", "vary *", "set-cookie", "ttl". Empty when stored.
  std::string reason;
  int64_t ttl_s = 0;  // freshness lifetime: s-maxage, else max-age, else Expires, else route ttl
  int64_t stale_if_error_s = 0;   // see decide_store()
  std::vector<std::string> vary;  // route vary + response Vary names: lower-case, sorted, unique
};

// Whether the upstream's response to a request may be stored, and how. `method` is the request
// method (case-sensitive, RFC 9110 9.1): only "GET" responses are stored (never HEAD's, which
// have no body to replay). Storable statuses are those RFC 9110 15.1 calls heuristically
// cacheable: 200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501. Not stored, checked in this
// order (the first one found is the reason): a method other than GET; request no-store; another
// status; has_credentials on a route without per_consumer; response no-store, private,
// no-cache; `Vary: *`; a Set-Cookie header; a freshness lifetime <= 0 (max-age=0, an expired
// Expires).
//
// stale_if_error_s: 0 when the response has must-revalidate or proxy-revalidate (RFC 9111
// 5.2.2.2 forbids serving it stale); else the response's stale-if-error; else 0 when it has
// s-maxage (which implies proxy-revalidate for a shared cache); else the route's stale_if_error.
StoreDecision decide_store(std::string_view method, int status, const CacheControl& request,
                           const CacheControl& response, std::string_view response_vary_header,
                           bool has_set_cookie, bool has_credentials, const RouteCache& route);

// How a request may use the cache.
struct LookupRules {
  bool bypass = false;      // request no-store, or credentials without per_consumer: neither
                            // answered from nor stored in the cache
  bool revalidate = false;  // request no-cache (or Pragma: no-cache): go upstream, store the result
  bool only_if_cached = false;       // answer from the cache or with 504, never go upstream
  std::optional<int64_t> max_age;    // the entry's age must be <= this
  std::optional<int64_t> min_fresh;  // the entry must stay fresh for at least this long
};

LookupRules lookup_rules(const CacheControl& request, bool has_credentials,
                         const RouteCache& route);

// The lower-case, sorted, de-duplicated field names of a Vary header value; {"*"} when it
// contains "*".
std::vector<std::string> parse_vary(std::string_view value);

}  // namespace sluice::cache

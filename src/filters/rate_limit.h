// Route `rate_limit:` (SPEC.md section 2): every listed limit applies, in order; the first that
// refuses answers 429 with Retry-After, and the limits after it are not charged. Allowed answers
// carry RateLimit-Limit / -Remaining / -Reset of the most constraining limit.
//
//   chain.push_back(make_rate_limit_filter(route, errors));   // after auth: `key: consumer`
//
// `scope: local` limits count in one Limiter per limit (src/ratelimit/), shared by every worker
// of the process and kept across reloads (by route name and position), so the budget is exact
// for the instance.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "config/config.h"
#include "filters/filter.h"

namespace sluice::server {
class RedisClient;
}

namespace sluice::filters {

// nullptr when the route has no rate limits.
std::unique_ptr<const Filter> make_rate_limit_filter(const config::Route& route,
                                                     const config::RateLimits& settings);

// The Lua scripts global limits call (the worker's Redis client loads them on connect).
std::vector<std::string> rate_limit_scripts();

// `scope: global` with `sync: <interval>`: sends what this worker admitted since each limit's
// last flush, when its interval is due, and raises the local buckets to the global state when
// Redis answers. Called on the worker's thread every few milliseconds.
void flush_rate_limit_deltas(server::RedisClient& redis);

// The admin's explain: what each limit of a route's rate_limit filter would answer now, as JSON
// objects' fields, without charging anything (global strict limits are not asked: no Redis call).
struct LimitVerdict {
  std::string key;    // "ip" / "consumer" / "header:x" / "route"
  std::string value;  // the bucket key of this request ("" = the limit does not apply)
  std::string scope;  // "local" | "global strict" | "global sync"
  bool applies = false;
  bool allowed = true;
  uint64_t remaining = 0;
  std::string rate;  // "10/s"
};
std::vector<LimitVerdict> explain_rate_limits(const Filter& rate_limit_filter, const Exchange& x);

// The RateLimit-* headers for an answer of the exchange (none when no limit applied).
void append_rate_limit_headers(const Exchange& x,
                               std::vector<std::pair<std::string, std::string>>& out);

}  // namespace sluice::filters

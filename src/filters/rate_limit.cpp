#include "filters/rate_limit.h"

#include <chrono>
#include <map>
#include <mutex>
#include <unordered_map>

#include <fmt/format.h>

#include "core/log.h"
#include "ratelimit/limiter.h"
#include "server/redis.h"

namespace sluice::filters {
namespace {

// Keys one limit may track at once (its memory bound: kMaxKeys x Limiter::kBytesPerKey).
constexpr size_t kMaxKeys = 1'000'000;

int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

ratelimit::Limit to_limit(const config::RateLimit& rl) {
  ratelimit::Limit l;
  l.rate = rl.rate;
  l.period = std::chrono::duration_cast<std::chrono::nanoseconds>(rl.period);
  l.burst = rl.burst;
  return l;
}

// Limiters by "route/position/key", for the life of the process: a reload keeps the counts of a
// limit that stays (with its new rate and burst), and drops those no snapshot uses any more.
std::shared_ptr<ratelimit::Limiter> limiter_for(const std::string& id,
                                                const config::RateLimit& rl) {
  static std::mutex mu;
  static auto* registry = new std::map<std::string, std::shared_ptr<ratelimit::Limiter>>();
  std::lock_guard lock(mu);
  for (auto it = registry->begin(); it != registry->end();) {  // unused by every snapshot
    it = it->second.use_count() == 1 ? registry->erase(it) : std::next(it);
  }
  auto& slot = (*registry)[id];
  if (!slot) {
    slot = std::make_shared<ratelimit::Limiter>(to_limit(rl), kMaxKeys);
  } else {
    slot->set_limit(to_limit(rl));
  }
  return slot;
}

std::string_view key_name(const config::RateLimit& rl) {
  switch (rl.key) {
    case config::RateLimit::Key::Ip:
      return "ip";
    case config::RateLimit::Key::Consumer:
      return "consumer";
    case config::RateLimit::Key::Header:
      return "header";
    case config::RateLimit::Key::Route:
      return "route";
  }
  return "?";
}

int64_t ceil_seconds(int64_t ns) { return (ns + 999'999'999) / 1'000'000'000; }

// ---- scope: global ----
// GCRA in Redis, in microseconds of Redis's own clock (TIME), so instances need no clock sync.
// KEYS[1] the bucket; ARGV[1] the emission interval T, ARGV[2] burst x T.
// Returns {allowed, remaining, reset_us, retry_after_us}.
const std::string kStrictScript = R"lua(
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local T = tonumber(ARGV[1])
local cap = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]))
if not tat or tat < now then tat = now end
local new_tat = tat + T
if new_tat - now > cap then
  return {0, 0, tat - now, new_tat - now - cap}
end
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1000)
return {1, math.floor((cap - (new_tat - now)) / T), new_tat - now, 0}
)lua";
// Charges ARGV[2] requests admitted locally (ARGV[1] = T) and returns how far ahead of Redis's
// clock the bucket's TAT now is, in microseconds.
const std::string kSyncScript = R"lua(
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local T = tonumber(ARGV[1])
local tat = tonumber(redis.call('GET', KEYS[1]))
if not tat or tat < now then tat = now end
tat = tat + tonumber(ARGV[2]) * T
redis.call('SET', KEYS[1], string.format('%.0f', tat), 'PX', math.ceil((tat - now) / 1000) + 1000)
return tat - now
)lua";
const std::string& strict_sha() {
  static const std::string sha = server::RedisClient::script_sha(kStrictScript);
  return sha;
}
const std::string& sync_sha() {
  static const std::string sha = server::RedisClient::script_sha(kSyncScript);
  return sha;
}

std::string format_us(double us) { return fmt::format("{:.3f}", us); }

// What this worker admitted per key since the last flush, for `sync: <interval>` limits.
struct SyncState {
  std::shared_ptr<ratelimit::Limiter> limiter;
  std::string prefix;  // Redis key prefix
  double interval_us = 0;
  Duration every{};
  int64_t last_flush_ns = 0;
  std::unordered_map<std::string, uint64_t> deltas;
};
constexpr size_t kMaxDeltaKeys = 100'000;  // per limit and worker between two flushes
thread_local std::unordered_map<const ratelimit::Limiter*, SyncState> t_sync;

class RateLimitFilter final : public Filter {
 public:
  struct Entry {
    const config::RateLimit* config;
    std::shared_ptr<ratelimit::Limiter> limiter;  // local and sync limits
    std::string redis_prefix;                     // global limits: "sluice:rl:<id>:"
    double interval_us = 0;                       // global: T in microseconds
    bool allow_on_failure = true;
  };
  RateLimitFilter(std::string route, std::vector<Entry> limits)
      : route_(std::move(route)), limits_(std::move(limits)) {}
  std::string_view name() const override { return "rate_limit"; }

  Step on_request(Exchange& x) const override { return evaluate(x, 0); }

  // Limits from `first` on; a global strict limit suspends the chain for one Redis call.
  Step evaluate(Exchange& x, size_t first) const {
    const int64_t now = now_ns();
    std::string key;
    for (size_t i = first; i < limits_.size(); ++i) {
      const Entry& e = limits_[i];
      const config::RateLimit& rl = *e.config;
      if (!key_of(x, rl, key)) continue;
      if (rl.scope == config::RateLimit::Scope::Global && rl.sync.count() == 0) {
        return strict(x, i, std::move(key));
      }
      ratelimit::Decision d = e.limiter->decide(key, now);
      if (d.allowed && rl.scope == config::RateLimit::Scope::Global) record_delta(e, key);
      if (Step refused = apply(x, rl, d); refused.kind() == Step::Kind::Respond) return refused;
    }
    return Step::next();
  }

  void on_response(Exchange& x) const override {
    if (!x.rate_limit.set) return;
    std::vector<std::pair<std::string, std::string>> headers;
    append_rate_limit_headers(x, headers);
    for (auto& [name, value] : headers) {
      x.response_headers.push_back({x.own(std::move(name)), x.own(std::move(value))});
    }
  }

 private:
  friend std::vector<LimitVerdict> filters::explain_rate_limits(const Filter&, const Exchange&);

  // The bucket key of this request for `rl`; false when the limit does not apply to it.
  static bool key_of(const Exchange& x, const config::RateLimit& rl, std::string& key) {
    key.clear();
    switch (rl.key) {
      case config::RateLimit::Key::Ip:
        key = x.client_ip;
        return true;
      case config::RateLimit::Key::Consumer:
        // An anonymous request is limited by its address, in a key space of its own.
        key = x.consumer().empty() ? "ip:" : "c:";
        key += x.consumer().empty() ? x.client_ip : x.consumer();
        return true;
      case config::RateLimit::Key::Header: {
        auto h = x.request->header(rl.header);
        if (!h.found) return false;  // no value: this limit does not apply
        key = h.value;
        return true;
      }
      case config::RateLimit::Key::Route:
        return true;  // one bucket for the whole route
    }
    return false;
  }

  // Records the decision for the RateLimit headers; a refusal becomes the 429.
  static Step apply(Exchange& x, const config::RateLimit& rl, const ratelimit::Decision& d) {
    if (!x.rate_limit.set || d.remaining < x.rate_limit.remaining) {
      x.rate_limit = {true, d.limit, d.remaining, ceil_seconds(d.reset_ns)};
    }
    if (d.allowed) return Step::next();
    x.rate_limited = true;
    x.rate_limit = {true, d.limit, 0, ceil_seconds(d.reset_ns)};
    std::vector<std::pair<std::string, std::string>> headers;
    headers.emplace_back("retry-after",
                         std::to_string(std::max<int64_t>(1, ceil_seconds(d.retry_after_ns))));
    append_rate_limit_headers(x, headers);
    return Step::respond(
        429, "too many requests", std::move(headers),
        fmt::format("rate limited: {} per {}s by {}{}", rl.rate,
                    std::chrono::duration_cast<std::chrono::seconds>(rl.period).count(),
                    key_name(rl), rl.scope == config::RateLimit::Scope::Global ? " (global)" : ""));
  }

  // `scope: global, sync: strict`: one atomic script call per decision.
  Step strict(Exchange& x, size_t i, std::string key) const {
    const Entry& e = limits_[i];
    server::RedisClient* redis = server::current_redis();
    if (redis == nullptr) return redis_failed(x, i, "no redis client");
    std::vector<std::string> args{"EVALSHA",
                                  strict_sha(),
                                  "1",
                                  e.redis_prefix + key,
                                  format_us(e.interval_us),
                                  format_us(e.interval_us * static_cast<double>(e.config->burst))};
    return Step::async([this, &x, i, redis, args = std::move(args)](Step::Continue done) mutable {
      redis->command(
          std::move(args), [this, &x, i, done = std::move(done)](const server::RedisReply& r) {
            if (r.type != server::RedisReply::Type::Array || r.elements.size() != 4) {
              done(redis_failed(x, i, r.ok() ? "unexpected script reply" : r.str));
              return;
            }
            const Entry& e = limits_[i];
            ratelimit::Decision d;
            d.allowed = r.elements[0].integer == 1;
            d.limit = e.config->burst;
            d.remaining = static_cast<uint64_t>(std::max<int64_t>(0, r.elements[1].integer));
            d.reset_ns = r.elements[2].integer * 1000;
            d.retry_after_ns = r.elements[3].integer * 1000;
            Step refused = apply(x, *e.config, d);
            done(refused.kind() == Step::Kind::Respond ? std::move(refused) : evaluate(x, i + 1));
          });
    });
  }

  // Redis down, slow or confused: `on_failure` decides.
  Step redis_failed(Exchange& x, size_t i, std::string_view why) const {
    const Entry& e = limits_[i];
    log::debug("rate limit on route {}: redis failed ({}): {}", route_, why,
               e.allow_on_failure ? "allowing" : "denying");
    if (e.allow_on_failure) return evaluate(x, i + 1);
    x.rate_limited = true;
    std::vector<std::pair<std::string, std::string>> headers;
    headers.emplace_back("retry-after", "1");
    return Step::respond(429, "too many requests", std::move(headers),
                         fmt::format("rate limit store unavailable ({}); on_failure: deny", why));
  }

  static void record_delta(const Entry& e, const std::string& key) {
    SyncState& st = t_sync[e.limiter.get()];
    if (!st.limiter) {
      st.limiter = e.limiter;
      st.prefix = e.redis_prefix;
      st.interval_us = e.interval_us;
      st.every = e.config->sync;
      st.last_flush_ns = now_ns();
    }
    if (st.deltas.size() >= kMaxDeltaKeys && !st.deltas.contains(key)) return;
    ++st.deltas[key];
  }

 private:
  std::string route_;
  std::vector<Entry> limits_;
};

}  // namespace

void append_rate_limit_headers(const Exchange& x,
                               std::vector<std::pair<std::string, std::string>>& out) {
  if (!x.rate_limit.set) return;
  out.emplace_back("ratelimit-limit", std::to_string(x.rate_limit.limit));
  out.emplace_back("ratelimit-remaining", std::to_string(x.rate_limit.remaining));
  out.emplace_back("ratelimit-reset", std::to_string(x.rate_limit.reset_s));
}

std::unique_ptr<const Filter> make_rate_limit_filter(const config::Route& route,
                                                     const config::RateLimits& settings) {
  std::vector<RateLimitFilter::Entry> entries;
  for (size_t i = 0; i < route.rate_limits.size(); ++i) {
    const config::RateLimit& rl = route.rate_limits[i];
    std::string id = fmt::format("{}/{}/{}:{}", route.name, i, key_name(rl), rl.header);
    RateLimitFilter::Entry e{&rl, nullptr, {}, 0, true};
    const bool strict = rl.scope == config::RateLimit::Scope::Global && rl.sync.count() == 0;
    if (!strict) e.limiter = limiter_for(id, rl);
    if (rl.scope == config::RateLimit::Scope::Global) {
      e.redis_prefix = fmt::format("sluice:rl:{}:", id);
      e.interval_us = std::chrono::duration<double, std::micro>(rl.period).count() /
                      static_cast<double>(rl.rate);
      e.allow_on_failure = !settings.redis || settings.redis->allow_on_failure;
    }
    entries.push_back(std::move(e));
  }
  if (entries.empty()) return nullptr;
  return std::make_unique<RateLimitFilter>(route.name, std::move(entries));
}

std::vector<LimitVerdict> explain_rate_limits(const Filter& filter, const Exchange& x) {
  std::vector<LimitVerdict> out;
  const auto* f = dynamic_cast<const RateLimitFilter*>(&filter);
  if (f == nullptr) return out;
  const int64_t now = now_ns();
  for (const auto& e : f->limits_) {
    const config::RateLimit& rl = *e.config;
    LimitVerdict v;
    v.key = rl.key == config::RateLimit::Key::Header ? "header:" + rl.header
                                                     : std::string(key_name(rl));
    const bool global = rl.scope == config::RateLimit::Scope::Global;
    v.scope = !global ? "local" : (rl.sync.count() == 0 ? "global strict" : "global sync");
    const char* unit = rl.period == std::chrono::hours(1)     ? "h"
                       : rl.period == std::chrono::minutes(1) ? "min"
                                                              : "s";
    v.rate = fmt::format("{}/{}", rl.rate, unit);
    std::string key;
    v.applies = RateLimitFilter::key_of(x, rl, key);
    v.value = key;
    if (v.applies && e.limiter) {
      ratelimit::Decision d = e.limiter->peek(key, now);
      v.allowed = d.allowed;
      v.remaining = d.remaining;
    }
    out.push_back(std::move(v));
  }
  return out;
}

std::vector<std::string> rate_limit_scripts() { return {kStrictScript, kSyncScript}; }

void flush_rate_limit_deltas(server::RedisClient& redis) {
  const int64_t now = now_ns();
  for (auto it = t_sync.begin(); it != t_sync.end();) {
    SyncState& st = it->second;
    if (st.limiter.use_count() == 1) {  // the limit is gone (reload): nothing to reconcile
      it = t_sync.erase(it);
      continue;
    }
    if (now - st.last_flush_ns <
        std::chrono::duration_cast<std::chrono::nanoseconds>(st.every).count()) {
      ++it;
      continue;
    }
    st.last_flush_ns = now;
    std::unordered_map<std::string, uint64_t> deltas;
    deltas.swap(st.deltas);
    for (auto& [key, n] : deltas) {
      std::weak_ptr<ratelimit::Limiter> weak = st.limiter;
      redis.command({"EVALSHA", sync_sha(), "1", st.prefix + key, format_us(st.interval_us),
                     std::to_string(n)},
                    [weak, key, sent_ns = now](const server::RedisReply& r) {
                      auto limiter = weak.lock();
                      if (!limiter || r.type != server::RedisReply::Type::Integer) return;
                      // Everyone's admissions so far: this instance's bucket is at least as
                      // full as the global one.
                      limiter->raise(key, sent_ns + r.integer * 1000, now_ns());
                    });
    }
    ++it;
  }
}

}  // namespace sluice::filters

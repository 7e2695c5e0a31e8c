#include "cache/policy.h"

#include <algorithm>
#include <array>

namespace sluice::cache {
namespace {

bool is_ows(char c) { return c == ' ' || c == '\t'; }

char lower(char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c + ('a' - 'A')) : c; }

std::string to_lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = lower(c);
  return out;
}

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (lower(a[i]) != lower(b[i])) return false;
  }
  return true;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && is_ows(s.front())) s.remove_prefix(1);
  while (!s.empty() && is_ows(s.back())) s.remove_suffix(1);
  return s;
}

// One `name[=argument]` element of a comma-separated header value.
struct Directive {
  std::string_view name;
  std::string argument;  // unquoted; empty when absent
  bool has_argument = false;
};

// Reads the next element at `pos` (advanced past it and its comma); false at the end. Quoted
// strings may hold commas and backslash escapes; anything between a closing quote and the next
// comma is ignored, and so is an unterminated quote's missing end.
bool next_directive(std::string_view s, size_t& pos, Directive& d) {
  while (pos < s.size()) {
    size_t start = pos;
    while (pos < s.size() && s[pos] != ',' && s[pos] != '=') ++pos;
    d.name = trim(s.substr(start, pos - start));
    d.argument.clear();
    d.has_argument = false;
    if (pos < s.size() && s[pos] == '=') {
      d.has_argument = true;
      ++pos;
      while (pos < s.size() && is_ows(s[pos])) ++pos;
      if (pos < s.size() && s[pos] == '"') {
        for (++pos; pos < s.size() && s[pos] != '"'; ++pos) {
          if (s[pos] == '\\' && pos + 1 < s.size()) ++pos;
          d.argument.push_back(s[pos]);
        }
        while (pos < s.size() && s[pos] != ',') ++pos;
      } else {
        start = pos;
        while (pos < s.size() && s[pos] != ',') ++pos;
        d.argument = trim(s.substr(start, pos - start));
      }
    }
    if (pos < s.size()) ++pos;         // the comma
    if (!d.name.empty()) return true;  // skips empty elements (",,") like RFC 9110 5.6.1 lists
  }
  return false;
}

// delta-seconds (1*DIGIT), clamped to 2^31; nullopt when it is anything else.
std::optional<int64_t> delta_seconds(const Directive& d) {
  if (!d.has_argument || d.argument.empty()) return std::nullopt;
  int64_t v = 0;
  for (char c : d.argument) {
    if (c < '0' || c > '9') return std::nullopt;
    v = std::min(v * 10 + (c - '0'), CacheControl::kMaxDeltaSeconds);
  }
  return v;
}

void set_first(std::optional<int64_t>& field, std::optional<int64_t> value) {
  if (!field && value) field = value;
}

int64_t days_from_civil(int64_t y, int64_t m, int64_t d) {  // H. Hinnant's algorithm
  y -= m <= 2 ? 1 : 0;
  const int64_t era = (y >= 0 ? y : y - 399) / 400;
  const int64_t yoe = y - era * 400;
  const int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
  const int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + doe - 719468;
}

std::optional<int64_t> parse_digits(std::string_view s) {
  if (s.empty() || s.size() > 4) return std::nullopt;
  int64_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return std::nullopt;
    v = v * 10 + (c - '0');
  }
  return v;
}

}  // namespace

CacheControl CacheControl::parse(std::string_view value) {
  CacheControl cc;
  cc.merge(value);
  return cc;
}

void CacheControl::merge(std::string_view value) {
  size_t pos = 0;
  Directive d;
  while (next_directive(value, pos, d)) {
    const std::string name = to_lower(d.name);
    if (name == "no-store") {
      no_store = true;
    } else if (name == "no-cache") {
      no_cache = true;
    } else if (name == "private") {
      is_private = true;
    } else if (name == "public") {
      is_public = true;
    } else if (name == "must-revalidate") {
      must_revalidate = true;
    } else if (name == "proxy-revalidate") {
      proxy_revalidate = true;
    } else if (name == "only-if-cached") {
      only_if_cached = true;
    } else if (name == "max-age") {
      set_first(max_age, delta_seconds(d));
    } else if (name == "s-maxage") {
      set_first(s_maxage, delta_seconds(d));
    } else if (name == "stale-if-error") {
      set_first(stale_if_error, delta_seconds(d));
    } else if (name == "min-fresh") {
      set_first(min_fresh, delta_seconds(d));
    } else if (name == "max-stale") {
      set_first(max_stale, d.has_argument ? delta_seconds(d) : std::optional(kAnyStaleness));
    }
  }
}

void CacheControl::merge_pragma(std::string_view value) {
  size_t pos = 0;
  Directive d;
  while (next_directive(value, pos, d)) {
    if (iequals(d.name, "no-cache")) no_cache = true;
  }
}

void CacheControl::apply_expires(std::string_view expires_value, std::string_view date,
                                 int64_t now_unix_s) {
  const std::optional<int64_t> expires_at = parse_http_date(expires_value);
  if (!expires_at) {
    expires = 0;
    return;
  }
  const int64_t base = parse_http_date(date).value_or(now_unix_s);
  // Dates are within +-2^40 s (4 digit years), so the difference cannot overflow.
  expires = std::clamp<int64_t>(*expires_at - base, -kMaxDeltaSeconds, kMaxDeltaSeconds);
}

std::optional<int64_t> parse_http_date(std::string_view value) {
  // Tokens split at spaces, commas and dashes cover all three forms:
  //   IMF-fixdate  Sun, 06 Nov 1994 08:49:37 GMT
  //   RFC 850      Sunday, 06-Nov-94 08:49:37 GMT
  //   asctime      Sun Nov  6 08:49:37 1994
  // The time has ':'; the month is a name; of the numbers, the first is the day and the second
  // the year. Weekday names and "GMT" are skipped.
  static constexpr std::array<std::string_view, 12> kMonths = {
      "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"};
  std::optional<int64_t> day, month, year, hour, minute, second;
  size_t pos = 0;
  while (pos < value.size()) {
    auto separator = [](char c) { return c == ' ' || c == '\t' || c == ',' || c == '-'; };
    while (pos < value.size() && separator(value[pos])) ++pos;
    const size_t start = pos;
    while (pos < value.size() && !separator(value[pos])) ++pos;
    const std::string_view token = value.substr(start, pos - start);
    if (token.empty()) break;
    if (token.find(':') != std::string_view::npos) {
      if (hour || token.size() != 8 || token[2] != ':' || token[5] != ':') return std::nullopt;
      hour = parse_digits(token.substr(0, 2));
      minute = parse_digits(token.substr(3, 2));
      second = parse_digits(token.substr(6, 2));
      if (!hour || !minute || !second) return std::nullopt;
    } else if (token[0] >= '0' && token[0] <= '9') {
      const std::optional<int64_t> n = parse_digits(token);
      if (!n) return std::nullopt;
      if (!day) {
        if (token.size() > 2) return std::nullopt;
        day = n;
      } else if (!year) {
        if (token.size() == 2) {
          year = *n < 70 ? 2000 + *n : 1900 + *n;  // RFC 850's two-digit years
        } else if (token.size() == 4) {
          year = n;
        } else {
          return std::nullopt;
        }
      } else {
        return std::nullopt;
      }
    } else if (!month && token.size() >= 3) {
      for (size_t m = 0; m < kMonths.size(); ++m) {
        if (iequals(token, kMonths[m])) month = static_cast<int64_t>(m) + 1;
      }
      // Anything else that is not a number (weekday, GMT) is skipped.
    }
  }
  if (!day || !month || !year || !hour) return std::nullopt;
  if (*day < 1 || *day > 31 || *hour > 23 || *minute > 59 || *second > 60) return std::nullopt;
  return days_from_civil(*year, *month, *day) * 86400 + *hour * 3600 + *minute * 60 + *second;
}

std::vector<std::string> parse_vary(std::string_view value) {
  std::vector<std::string> names;
  size_t pos = 0;
  Directive d;
  while (next_directive(value, pos, d)) {
    if (d.name == "*") return {"*"};
    names.push_back(to_lower(d.name));
  }
  std::sort(names.begin(), names.end());
  names.erase(std::unique(names.begin(), names.end()), names.end());
  return names;
}

StoreDecision decide_store(std::string_view method, int status, const CacheControl& request,
                           const CacheControl& response, std::string_view response_vary_header,
                           bool has_set_cookie, bool has_credentials, const RouteCache& route) {
  static constexpr std::array kStorableStatuses = {200, 203, 204, 300, 301, 308,
                                                   404, 405, 410, 414, 501};
  auto refuse = [](std::string_view reason) {
    StoreDecision no;
    no.reason = reason;
    return no;
  };
  if (method != "GET") return refuse("method");
  if (request.no_store) return refuse("request no-store");
  if (std::find(kStorableStatuses.begin(), kStorableStatuses.end(), status) ==
      kStorableStatuses.end()) {
    return refuse("status");
  }
  if (has_credentials && !route.per_consumer) return refuse("credentials");
  if (response.no_store) return refuse("no-store");
  if (response.is_private) return refuse("private");
  if (response.no_cache) return refuse("no-cache");

  StoreDecision d;
  d.vary = parse_vary(response_vary_header);
  if (d.vary.size() == 1 && d.vary[0] == "*") return refuse("vary *");
  if (has_set_cookie) return refuse("set-cookie");

  if (response.s_maxage) {
    d.ttl_s = *response.s_maxage;
  } else if (response.max_age) {
    d.ttl_s = *response.max_age;
  } else if (response.expires) {
    d.ttl_s = *response.expires;
  } else {
    d.ttl_s = route.ttl.count();
  }
  if (d.ttl_s <= 0) return refuse("ttl");

  if (response.must_revalidate || response.proxy_revalidate) {
    d.stale_if_error_s = 0;
  } else if (response.stale_if_error) {
    d.stale_if_error_s = *response.stale_if_error;
  } else if (response.s_maxage) {
    d.stale_if_error_s = 0;
  } else {
    d.stale_if_error_s = std::max<int64_t>(route.stale_if_error.count(), 0);
  }

  for (const std::string& name : route.vary) d.vary.push_back(to_lower(name));
  std::sort(d.vary.begin(), d.vary.end());
  d.vary.erase(std::unique(d.vary.begin(), d.vary.end()), d.vary.end());
  d.store = true;
  return d;
}

LookupRules lookup_rules(const CacheControl& request, bool has_credentials,
                         const RouteCache& route) {
  LookupRules rules;
  rules.bypass = request.no_store || (has_credentials && !route.per_consumer);
  rules.revalidate = request.no_cache;
  rules.only_if_cached = request.only_if_cached;
  rules.max_age = request.max_age;
  rules.min_fresh = request.min_fresh;
  return rules;
}

}  // namespace sluice::cache

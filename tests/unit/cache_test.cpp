// Proves the response-cache core: the RFC 9111 store/lookup rules (policy.h) as a table of
// Cache-Control / Vary cases, the tolerant Cache-Control and HTTP-date parsers, entry ages under
// an injected clock, the byte-bounded LRU store with its variants and purges, and request
// coalescing (store.h), including from several threads at once.
#include <gtest/gtest.h>

#include <atomic>
#include <barrier>
#include <latch>
#include <map>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "cache/policy.h"
#include "cache/store.h"

namespace sluice::cache {
namespace {

using namespace std::chrono_literals;

constexpr int64_t kSec = 1'000'000'000;
constexpr int64_t kMs = 1'000'000;

// ---------------------------------------------------------------------------------------------
// decide_store + lookup_rules: one table

constexpr int64_t kNowUnix = 784111777;  // Sun, 06 Nov 1994 08:49:37 GMT

struct PolicyCase {
  const char* name;
  // The exchange (defaults: a plain GET answered 200 on a route with ttl 60 s).
  std::string_view method = "GET";
  int status = 200;
  std::string_view request_cc = "";
  std::string_view pragma = "";
  std::string_view response_cc = "";
  std::string_view expires = "";  // with Date: Sun, 06 Nov 1994 08:49:37 GMT when set
  std::string_view vary = "";
  bool set_cookie = false;
  bool credentials = false;
  bool per_consumer = false;
  int64_t route_stale_if_error = 0;
  std::vector<std::string> route_vary = {};
  // Expected.
  bool stored = true;
  std::string_view reason = "";
  int64_t ttl = 60;
  int64_t stale_if_error = 0;
  std::vector<std::string> vary_out = {};
  bool bypass = false;
  bool revalidate = false;
  std::optional<int64_t> max_age = std::nullopt;
  std::optional<int64_t> min_fresh = std::nullopt;
  bool only_if_cached = false;
};

const PolicyCase kPolicyCases[] = {
    {.name = "Plain200IsStoredWithTheRouteTtl"},
    {.name = "MaxAgeSetsTheTtl", .response_cc = "max-age=30", .ttl = 30},
    {.name = "SMaxAgeWinsOverMaxAge", .response_cc = "s-maxage=10, max-age=30", .ttl = 10},
    {.name = "PublicMaxAgeIsStored", .response_cc = "public, max-age=30", .ttl = 30},
    {.name = "ResponseNoStoreIsNotStored",
     .response_cc = "no-store",
     .stored = false,
     .reason = "no-store"},
    {.name = "PrivateIsNotStored",
     .response_cc = "private, max-age=30",
     .stored = false,
     .reason = "private"},
    {.name = "QualifiedPrivateIsNotStored",
     .response_cc = "private=\"x-user, x-tenant\", max-age=30",
     .stored = false,
     .reason = "private"},
    {.name = "NoCacheIsNotStoredSinceWeDoNotRevalidate",
     .response_cc = "no-cache",
     .stored = false,
     .reason = "no-cache"},
    {.name = "QualifiedNoCacheIsNotStored",
     .response_cc = "no-cache=\"Set-Cookie\"",
     .stored = false,
     .reason = "no-cache"},
    {.name = "MaxAgeZeroIsNotStored", .response_cc = "max-age=0", .stored = false, .reason = "ttl"},
    {.name = "SMaxAgeZeroIsNotStoredEvenWithMaxAge",
     .response_cc = "max-age=60, s-maxage=0",
     .stored = false,
     .reason = "ttl"},
    {.name = "GarbageMaxAgeFallsBackToTheRouteTtl", .response_cc = "max-age=soon"},
    {.name = "ExpiresInThePastIsNotStored",
     .expires = "Sun, 06 Nov 1994 08:00:00 GMT",
     .stored = false,
     .reason = "ttl"},
    {.name = "InvalidExpiresMeansExpired", .expires = "0", .stored = false, .reason = "ttl"},
    {.name = "ExpiresInTheFutureSetsTheTtlFromDate",
     .expires = "Sun, 06 Nov 1994 08:51:37 GMT",
     .ttl = 120},
    {.name = "MaxAgeWinsOverExpires",
     .response_cc = "max-age=30",
     .expires = "Sun, 06 Nov 1994 08:00:00 GMT",
     .ttl = 30},
    {.name = "VaryNamesAreLowerCasedSortedAndUnique",
     .vary = "Accept-Encoding, accept ,ACCEPT-ENCODING",
     .vary_out = {"accept", "accept-encoding"}},
    {.name = "RouteVaryJoinsResponseVary",
     .vary = "Accept",
     .route_vary = {"x-tenant", "accept"},
     .vary_out = {"accept", "x-tenant"}},
    {.name = "VaryStarIsNotStored", .vary = "*", .stored = false, .reason = "vary *"},
    {.name = "VaryStarAmongNamesIsNotStored",
     .vary = "Accept, *",
     .stored = false,
     .reason = "vary *"},
    {.name = "SetCookieIsNotStored", .set_cookie = true, .stored = false, .reason = "set-cookie"},
    {.name = "Status204IsStored", .status = 204},
    {.name = "Status301IsStored", .status = 301},
    {.name = "Status404IsStored", .status = 404},
    {.name = "Status410IsStored", .status = 410},
    {.name = "Status500IsNotStored", .status = 500, .stored = false, .reason = "status"},
    {.name = "Status302IsNotStored", .status = 302, .stored = false, .reason = "status"},
    {.name = "Status206IsNotStored", .status = 206, .stored = false, .reason = "status"},
    {.name = "Status503IsNotStoredEvenWithMaxAge",
     .status = 503,
     .response_cc = "max-age=30",
     .stored = false,
     .reason = "status"},
    {.name = "HeadIsNotStored", .method = "HEAD", .stored = false, .reason = "method"},
    {.name = "PostIsNotStored", .method = "POST", .stored = false, .reason = "method"},
    {.name = "RequestNoStoreBypassesTheCache",
     .request_cc = "no-store",
     .stored = false,
     .reason = "request no-store",
     .bypass = true},
    {.name = "RequestNoCacheRevalidatesAndStores", .request_cc = "no-cache", .revalidate = true},
    {.name = "PragmaNoCacheRevalidates", .pragma = "no-cache", .revalidate = true},
    {.name = "RequestMaxAgeLimitsTheEntryAge", .request_cc = "max-age=5", .max_age = 5},
    {.name = "RequestMinFreshIsPassedOn", .request_cc = "min-fresh=10", .min_fresh = 10},
    {.name = "OnlyIfCachedIsPassedOn", .request_cc = "only-if-cached", .only_if_cached = true},
    {.name = "CredentialsWithoutPerConsumerAreNeitherStoredNorServed",
     .credentials = true,
     .stored = false,
     .reason = "credentials",
     .bypass = true},
    {.name = "CredentialsWithPerConsumerAreStored", .credentials = true, .per_consumer = true},
    {.name = "ResponseStaleIfErrorOverridesTheRoute",
     .response_cc = "max-age=30, stale-if-error=100",
     .route_stale_if_error = 20,
     .ttl = 30,
     .stale_if_error = 100},
    {.name = "RouteStaleIfErrorAppliesByDefault", .route_stale_if_error = 20, .stale_if_error = 20},
    {.name = "MustRevalidateForbidsStaleIfError",
     .response_cc = "max-age=30, must-revalidate, stale-if-error=100",
     .route_stale_if_error = 20,
     .ttl = 30},
    {.name = "ProxyRevalidateForbidsStaleIfError",
     .response_cc = "proxy-revalidate",
     .route_stale_if_error = 20},
    {.name = "SMaxAgeForbidsTheRouteStaleIfError",
     .response_cc = "s-maxage=30",
     .route_stale_if_error = 20,
     .ttl = 30},
    {.name = "SMaxAgeKeepsAnExplicitStaleIfError",
     .response_cc = "s-maxage=30, stale-if-error=5",
     .route_stale_if_error = 20,
     .ttl = 30,
     .stale_if_error = 5},
};

class Policy : public testing::TestWithParam<PolicyCase> {};

TEST_P(Policy, DecideStoreAndLookupRulesFollowTheTable) {
  const PolicyCase& c = GetParam();
  RouteCache route;
  route.vary = c.route_vary;
  route.stale_if_error = std::chrono::seconds(c.route_stale_if_error);
  route.per_consumer = c.per_consumer;

  CacheControl request = CacheControl::parse(c.request_cc);
  request.merge_pragma(c.pragma);
  CacheControl response = CacheControl::parse(c.response_cc);
  if (!c.expires.empty()) {
    response.apply_expires(c.expires, "Sun, 06 Nov 1994 08:49:37 GMT", kNowUnix + 1000);
  }

  StoreDecision d = decide_store(c.method, c.status, request, response, c.vary, c.set_cookie,
                                 c.credentials, route);
  EXPECT_EQ(d.store, c.stored);
  EXPECT_EQ(d.reason, c.reason);
  if (c.stored) {
    EXPECT_EQ(d.ttl_s, c.ttl);
    EXPECT_EQ(d.stale_if_error_s, c.stale_if_error);
    EXPECT_EQ(d.vary, c.vary_out);
  }

  LookupRules rules = lookup_rules(request, c.credentials, route);
  EXPECT_EQ(rules.bypass, c.bypass);
  EXPECT_EQ(rules.revalidate, c.revalidate);
  EXPECT_EQ(rules.max_age, c.max_age);
  EXPECT_EQ(rules.min_fresh, c.min_fresh);
  EXPECT_EQ(rules.only_if_cached, c.only_if_cached);
}

INSTANTIATE_TEST_SUITE_P(Cases, Policy, testing::ValuesIn(kPolicyCases),
                         [](const testing::TestParamInfo<PolicyCase>& info) {
                           return std::string(info.param.name);
                         });

// ---------------------------------------------------------------------------------------------
// Cache-Control parsing

TEST(CacheControlParse, DirectiveNamesAreCaseInsensitive) {
  CacheControl cc = CacheControl::parse("MAX-AGE=5, No-Store, PRIVATE, Public, Must-Revalidate");
  EXPECT_EQ(cc.max_age, 5);
  EXPECT_TRUE(cc.no_store);
  EXPECT_TRUE(cc.is_private);
  EXPECT_TRUE(cc.is_public);
  EXPECT_TRUE(cc.must_revalidate);
  EXPECT_FALSE(cc.no_cache);
}

TEST(CacheControlParse, WhitespaceAroundElementsAndEqualsIsSkipped) {
  CacheControl cc = CacheControl::parse("  max-age = 5 ,\tno-cache\t,s-maxage=\t7  ");
  EXPECT_EQ(cc.max_age, 5);
  EXPECT_EQ(cc.s_maxage, 7);
  EXPECT_TRUE(cc.no_cache);
}

TEST(CacheControlParse, QuotedArgumentsAreUnquotedAndMayHoldCommas) {
  CacheControl cc = CacheControl::parse(R"(private="set-cookie, x-user", max-age="7")");
  EXPECT_TRUE(cc.is_private);
  EXPECT_EQ(cc.max_age, 7);  // RFC 9111 5.2: recipients accept the quoted form too

  CacheControl escaped = CacheControl::parse(R"(no-cache="a\"b, c", s-maxage=4)");
  EXPECT_TRUE(escaped.no_cache);
  EXPECT_EQ(escaped.s_maxage, 4);
}

TEST(CacheControlParse, AnUnterminatedQuoteSwallowsTheRestOfTheLine) {
  CacheControl cc = CacheControl::parse(R"(private="abc, max-age=4)");
  EXPECT_TRUE(cc.is_private);
  EXPECT_FALSE(cc.max_age);
}

TEST(CacheControlParse, GarbageNumbersAreIgnored) {
  for (std::string_view bad : {"max-age=-1", "max-age=1.5", "max-age=", "max-age", "max-age=abc",
                               "max-age=5x", "max-age=\"\"", "max-age=+5", "max-age=0x10"}) {
    EXPECT_FALSE(CacheControl::parse(bad).max_age) << bad;
  }
  EXPECT_EQ(CacheControl::parse("max-age=007").max_age, 7);
}

TEST(CacheControlParse, HugeNumbersAreClampedTo2Pow31) {
  EXPECT_EQ(CacheControl::parse("max-age=99999999999999999999999").max_age,
            CacheControl::kMaxDeltaSeconds);
  EXPECT_EQ(CacheControl::parse("max-age=2147483647").max_age, 2147483647);
}

TEST(CacheControlParse, UnknownDirectivesAndEmptyElementsAreIgnored) {
  CacheControl cc = CacheControl::parse(",, foo=bar, immutable ,max-age=2,,baz=\"q,x\",");
  EXPECT_EQ(cc.max_age, 2);
  EXPECT_FALSE(cc.no_store || cc.no_cache || cc.is_private || cc.is_public);
  CacheControl empty = CacheControl::parse("");
  EXPECT_FALSE(empty.max_age || empty.no_store || empty.no_cache);
}

TEST(CacheControlParse, ARepeatedNumberKeepsItsFirstValueAcrossLines) {
  CacheControl cc = CacheControl::parse("max-age=5, max-age=10");
  EXPECT_EQ(cc.max_age, 5);
  cc.merge("max-age=1, no-store, stale-if-error=9");
  EXPECT_EQ(cc.max_age, 5);
  EXPECT_TRUE(cc.no_store);
  EXPECT_EQ(cc.stale_if_error, 9);
}

TEST(CacheControlParse, MaxStaleWithoutValueAcceptsAnyStaleness) {
  EXPECT_EQ(CacheControl::parse("max-stale").max_stale, CacheControl::kAnyStaleness);
  EXPECT_EQ(CacheControl::parse("max-stale=5").max_stale, 5);
  EXPECT_FALSE(CacheControl::parse("max-stale=x").max_stale);
}

TEST(CacheControlParse, PragmaNoCacheSetsNoCacheAndNothingElse) {
  CacheControl cc;
  cc.merge_pragma("x-foo=1, No-Cache");
  EXPECT_TRUE(cc.no_cache);
  CacheControl other;
  other.merge_pragma("no-store, max-age=5");
  EXPECT_FALSE(other.no_cache || other.no_store || other.max_age);
}

TEST(ParseVary, NamesAreLowerCasedSortedAndUniqueAndStarWins) {
  EXPECT_EQ(parse_vary(" User-Agent,accept, ACCEPT ,, "),
            (std::vector<std::string>{"accept", "user-agent"}));
  EXPECT_EQ(parse_vary("accept, *"), (std::vector<std::string>{"*"}));
  EXPECT_TRUE(parse_vary("").empty());
}

// ---------------------------------------------------------------------------------------------
// HTTP-date parsing (Expires)

TEST(HttpDate, AllThreeFormsGiveTheSameInstant) {
  EXPECT_EQ(parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"), kNowUnix);
  EXPECT_EQ(parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT"), kNowUnix);
  EXPECT_EQ(parse_http_date("Sun Nov  6 08:49:37 1994"), kNowUnix);
  EXPECT_EQ(parse_http_date("Thu, 01 Jan 1970 00:00:00 GMT"), 0);
  EXPECT_EQ(parse_http_date("Tue, 29 Feb 2028 23:59:59 GMT"), 1835481599);
  EXPECT_EQ(parse_http_date("wed, 05-jan-22 01:02:03 gmt"), 1641344523);  // two-digit year 20xx
}

TEST(HttpDate, InvalidDatesAreRejected) {
  for (std::string_view bad :
       {"", "0", "-1", "Sun, 06 Nov 1994", "Sun, 06 Nov 1994 25:00:00 GMT",
        "Sun, 06 Foo 1994 08:49:37 GMT", "Sun, 32 Nov 1994 08:49:37 GMT", "1994-11-06T08:49:37Z",
        "Sun, 06 Nov 1994 8:49:37 GMT", "Sun, 06 Nov 19945 08:49:37 GMT"}) {
    EXPECT_FALSE(parse_http_date(bad)) << bad;
  }
}

TEST(HttpDate, ExpiresWithoutDateCountsFromTheReceiveTime) {
  CacheControl cc;
  cc.apply_expires("Sun, 06 Nov 1994 08:49:37 GMT", "", kNowUnix - 30);
  EXPECT_EQ(cc.expires, 30);
  cc.apply_expires("Sun, 06 Nov 1994 08:49:37 GMT", "garbage", kNowUnix + 30);
  EXPECT_EQ(cc.expires, -30);
}

// ---------------------------------------------------------------------------------------------
// Entry: age, freshness and stale-if-error under an injected clock

Entry timed_entry(int64_t stored_at_ns, int64_t initial_age_s, int64_t ttl_s,
                  int64_t stale_if_error_s) {
  Entry e;
  e.stored_at_ns = stored_at_ns;
  e.initial_age_s = initial_age_s;
  e.ttl_s = ttl_s;
  e.stale_if_error_s = stale_if_error_s;
  return e;
}

TEST(EntryAge, CountsTheUpstreamAgePlusWholeSecondsSinceStored) {
  const int64_t t0 = 1000 * kSec;
  Entry e = timed_entry(t0, 5, 10, 20);
  EXPECT_EQ(e.age_s(t0), 5);
  EXPECT_EQ(e.age_s(t0 + kSec - 1), 5);
  EXPECT_EQ(e.age_s(t0 + kSec), 6);
  EXPECT_EQ(e.age_s(t0 - 3 * kSec), 5);  // a clock before stored_at adds nothing
  EXPECT_EQ(timed_entry(t0, -7, 10, 0).age_s(t0 + 2 * kSec), 2);  // a negative Age is 0
  EXPECT_EQ(timed_entry(INT64_MIN, 0, 10, 0).age_s(INT64_MAX), INT64_MAX / kSec);  // saturates
}

TEST(EntryAge, FreshUntilAgeReachesTtlThenUsableOnErrorForStaleIfError) {
  const int64_t t0 = 1000 * kSec;
  Entry e = timed_entry(t0, 5, 10, 20);  // fresh while age < 10, usable on error while < 30
  EXPECT_TRUE(e.fresh(t0));
  EXPECT_TRUE(e.fresh(t0 + 5 * kSec - 1));
  EXPECT_FALSE(e.fresh(t0 + 5 * kSec));
  EXPECT_TRUE(e.usable_if_error(t0 + 5 * kSec));
  EXPECT_TRUE(e.usable_if_error(t0 + 25 * kSec - 1));
  EXPECT_FALSE(e.usable_if_error(t0 + 25 * kSec));

  Entry no_grace = timed_entry(t0, 0, 10, 0);
  EXPECT_TRUE(no_grace.usable_if_error(t0 + 10 * kSec - 1));
  EXPECT_FALSE(no_grace.usable_if_error(t0 + 10 * kSec));
  EXPECT_FALSE(timed_entry(t0, 10, 10, 0).fresh(t0));  // arrived already stale
}

TEST(EntryAge, SatisfiesHonoursRequestMaxAgeAndMinFresh) {
  const int64_t t0 = 1000 * kSec;
  Entry e = timed_entry(t0, 0, 10, 100);
  LookupRules plain;
  EXPECT_TRUE(e.satisfies(plain, t0 + 9 * kSec));
  EXPECT_FALSE(e.satisfies(plain, t0 + 10 * kSec));  // stale: only usable on error

  LookupRules max_age;
  max_age.max_age = 7;
  EXPECT_TRUE(e.satisfies(max_age, t0 + 7 * kSec));
  EXPECT_FALSE(e.satisfies(max_age, t0 + 8 * kSec));

  LookupRules min_fresh;
  min_fresh.min_fresh = 3;  // must stay fresh 3 more seconds: age <= 7
  EXPECT_TRUE(e.satisfies(min_fresh, t0 + 7 * kSec));
  EXPECT_FALSE(e.satisfies(min_fresh, t0 + 8 * kSec));
}

TEST(EntrySize, ChargesStringsPlusFixedOverhead) {
  Entry e;
  e.reason = "OK";
  e.body = std::string(1000, 'x');
  e.headers = {{"content-type", "text/plain"}, {"etag", "\"v1\""}};
  e.vary_values = {{"accept", "text/plain"}};
  const size_t strings = 2 + 1000 + (12 + 10) + (4 + 4) + (6 + 10);
  EXPECT_EQ(e.size(), sizeof(Entry) + strings + 3 * Entry::kPairOverhead);
  EXPECT_EQ(Store::charge("key", e), e.size() + 3 + Store::kSlotOverhead);
}

// ---------------------------------------------------------------------------------------------
// Store: keys, LRU by bytes, variants, purges

// A request's headers for Store::lookup(), by lower-case name.
RequestHeader request_headers(std::map<std::string, std::string> headers) {
  return [headers = std::move(headers)](std::string_view name) -> std::optional<std::string_view> {
    auto it = headers.find(std::string(name));
    if (it == headers.end()) return std::nullopt;
    return std::string_view(it->second);
  };
}

const RequestHeader kNoHeaders = request_headers({});

// "k000", "k001" ...: keys of equal length, so equal entries cost the same.
std::string numbered(int i) {
  std::string digits = std::to_string(i);
  return "k" + std::string(3 - digits.size(), '0') + digits;
}

std::shared_ptr<const Entry> body_entry(std::string body, HeaderPairs vary_values = {},
                                        int64_t stored_at_ns = 0) {
  auto e = std::make_shared<Entry>();
  e->body = std::move(body);
  e->vary_values = std::move(vary_values);
  e->stored_at_ns = stored_at_ns;
  e->ttl_s = 60;
  return e;
}

TEST(StoreKey, HostIsLowerCasedWithoutPortAndFieldsCannotBleedIntoEachOther) {
  EXPECT_EQ(Store::make_key("Example.COM:8080", "/a/b", "x=1", ""), "11:example.com4:/a/b3:x=10:");
  EXPECT_EQ(Store::make_key("example.com", "/a/b", "x=1", ""),
            Store::make_key("EXAMPLE.com:443", "/a/b", "x=1", ""));
  EXPECT_EQ(Store::make_key("[::1]:8080", "/", "", ""), Store::make_key("[::1]", "/", "", ""));
  EXPECT_EQ(Store::make_key("[::1]", "/", "", ""), "5:[::1]1:/0:0:");
  EXPECT_NE(Store::make_key("h", "/a", "", "alice"), Store::make_key("h", "/a", "", "bob"));
  EXPECT_NE(Store::make_key("h", "/a", "", "alice"), Store::make_key("h", "/a", "", ""));
  EXPECT_NE(Store::make_key("h", "/a", "b", ""), Store::make_key("h", "/a", "", "b"));
  EXPECT_NE(Store::make_key("h", "/a1:b", "", ""), Store::make_key("h", "/a", "b", ""));
}

TEST(StoreLru, InsertBeyondMaxBytesEvictsTheLeastRecentlyUsed) {
  // Ten equal entries fill the store exactly (each costs max_bytes / 10 <= max_object()).
  const size_t cost = Store::charge(numbered(0), *body_entry(std::string(100, 'x')));
  Store store(10 * cost);
  for (int i = 0; i < 10; ++i) {
    ASSERT_TRUE(store.insert(numbered(i), body_entry(std::string(100, 'x'))));
  }
  EXPECT_EQ(store.entries(), 10u);
  EXPECT_EQ(store.bytes(), 10 * cost);
  EXPECT_EQ(store.evictions(), 0u);

  ASSERT_TRUE(store.insert(numbered(10), body_entry(std::string(100, 'x'))));
  EXPECT_EQ(store.entries(), 10u);
  EXPECT_EQ(store.bytes(), 10 * cost);
  EXPECT_EQ(store.lookup(numbered(0), kNoHeaders), nullptr);  // the oldest went
  EXPECT_NE(store.lookup(numbered(1), kNoHeaders), nullptr);
  EXPECT_NE(store.lookup(numbered(10), kNoHeaders), nullptr);
  EXPECT_EQ(store.evictions(), 1u);
}

TEST(StoreLru, LookupRefreshesRecency) {
  const size_t cost = Store::charge(numbered(0), *body_entry(std::string(100, 'x')));
  Store store(10 * cost);
  for (int i = 0; i < 10; ++i) store.insert(numbered(i), body_entry(std::string(100, 'x')));
  ASSERT_NE(store.lookup(numbered(0), kNoHeaders), nullptr);  // now the most recent; k001 the least

  store.insert(numbered(100), body_entry(std::string(100, 'x')));
  EXPECT_NE(store.lookup(numbered(0), kNoHeaders), nullptr);
  EXPECT_EQ(store.lookup(numbered(1), kNoHeaders), nullptr);
  EXPECT_NE(store.lookup(numbered(2), kNoHeaders), nullptr);
}

TEST(StoreLru, ALargeEntryEvictsAsManyAsItNeeds) {
  const size_t small = Store::charge(numbered(0), *body_entry(std::string(100, 'x')));
  Store store(40 * small);  // max_object() is 5 small entries
  for (int i = 0; i < 38; ++i) store.insert(numbered(i), body_entry(std::string(100, 'x')));
  // Costs exactly 4 small entries (the body is 3 small + 100 bytes): with 2 free, 2 must go.
  auto big = body_entry(std::string(3 * small + 100, 'y'));
  ASSERT_EQ(Store::charge(numbered(999), *big), 4 * small);
  ASSERT_TRUE(store.insert(numbered(999), big));
  EXPECT_EQ(store.bytes(), store.max_bytes());
  EXPECT_EQ(store.entries(), 37u);
  EXPECT_EQ(store.evictions(), 2u);
  EXPECT_EQ(store.lookup(numbered(0), kNoHeaders), nullptr);
  EXPECT_EQ(store.lookup(numbered(1), kNoHeaders), nullptr);
  EXPECT_NE(store.lookup(numbered(2), kNoHeaders), nullptr);
  EXPECT_EQ(store.lookup(numbered(999), kNoHeaders), big);
}

TEST(StoreLru, AnEntryLargerThanMaxObjectIsRefusedAndDropsTheVariantItWouldReplace) {
  Store store(80'000);
  EXPECT_EQ(store.max_object(), 10'000u);
  ASSERT_TRUE(store.insert("k", body_entry("old")));
  EXPECT_FALSE(store.insert("k", body_entry(std::string(10'000, 'x'))));
  EXPECT_EQ(store.lookup("k", kNoHeaders), nullptr);  // the old one is outdated now
  EXPECT_EQ(store.entries(), 0u);
  EXPECT_EQ(store.bytes(), 0u);
  EXPECT_FALSE(store.insert("k", nullptr));
  EXPECT_EQ(Store(size_t{1} << 40).max_object(), size_t{64} << 20);
}

TEST(StoreLru, ReplacingAVariantKeepsOneEntryAndRechargesIt) {
  Store store(1 << 20);
  store.insert("k", body_entry("first"));
  auto second = body_entry("second, longer");
  store.insert("k", second);
  EXPECT_EQ(store.entries(), 1u);
  EXPECT_EQ(store.bytes(), Store::charge("k", *second));
  EXPECT_EQ(store.lookup("k", kNoHeaders), second);
  store.erase("k");
  EXPECT_EQ(store.entries(), 0u);
  EXPECT_EQ(store.bytes(), 0u);
}

TEST(StoreLru, AReaderKeepsItsEntryAfterItIsEvicted) {
  Store store(1 << 20);
  store.insert("k", body_entry("payload"));
  std::shared_ptr<const Entry> held = store.lookup("k", kNoHeaders);
  store.erase("k");
  ASSERT_NE(held, nullptr);
  EXPECT_EQ(held->body, "payload");
}

TEST(StoreVariants, TheRequestsVaryValuesSelectTheVariant) {
  Store store(1 << 20);
  auto json = body_entry("{}", {{"accept", "application/json"}});
  auto xml = body_entry("<x/>", {{"accept", "application/xml"}});
  auto none = body_entry("plain", {{"accept", ""}});
  store.insert("k", json);
  store.insert("k", xml);
  store.insert("k", none);
  EXPECT_EQ(store.entries(), 3u);

  EXPECT_EQ(store.lookup("k", request_headers({{"accept", "application/json"}})), json);
  EXPECT_EQ(store.lookup("k", request_headers({{"accept", "application/xml"}})), xml);
  EXPECT_EQ(store.lookup("k", kNoHeaders), none);  // absent matches a stored ""
  EXPECT_EQ(store.lookup("k", request_headers({{"accept", ""}})), none);
  EXPECT_EQ(store.lookup("k", request_headers({{"accept", "text/html"}})), nullptr);
  EXPECT_EQ(store.lookup("other", request_headers({{"accept", "application/json"}})), nullptr);
}

TEST(StoreVariants, EveryVaryValueMustMatch) {
  Store store(1 << 20);
  auto gz = body_entry("gz", {{"accept", "a"}, {"accept-encoding", "gzip"}});
  auto br = body_entry("br", {{"accept", "a"}, {"accept-encoding", "br"}});
  store.insert("k", gz);
  store.insert("k", br);
  EXPECT_EQ(store.lookup("k", request_headers({{"accept", "a"}, {"accept-encoding", "br"}})), br);
  EXPECT_EQ(store.lookup("k", request_headers({{"accept", "b"}, {"accept-encoding", "br"}})),
            nullptr);
  EXPECT_EQ(store.lookup("k", request_headers({{"accept", "a"}})), nullptr);
}

TEST(StoreVariants, WhenSeveralMatchTheLastStoredWins) {
  // The upstream added `Vary: Accept` later: the old entry (no vary) still matches everything.
  Store store(1 << 20);
  auto old_any = body_entry("old", {}, 1 * kSec);
  auto new_json = body_entry("new", {{"accept", "json"}}, 2 * kSec);
  store.insert("k", old_any);
  store.insert("k", new_json);
  EXPECT_EQ(store.lookup("k", request_headers({{"accept", "json"}})), new_json);
  EXPECT_EQ(store.lookup("k", request_headers({{"accept", "xml"}})), old_any);
}

TEST(StoreVariants, AKeyKeepsAtMostMaxVariantsDroppingItsLeastRecentlyUsed) {
  Store store(1 << 24);
  auto variant = [](size_t i) { return HeaderPairs{{"user-agent", "ua" + std::to_string(i)}}; };
  for (size_t i = 0; i < Store::kMaxVariants; ++i) store.insert("k", body_entry("b", variant(i)));
  ASSERT_NE(store.lookup("k", request_headers({{"user-agent", "ua0"}})), nullptr);  // keep ua0
  store.insert("k", body_entry("b", variant(Store::kMaxVariants)));
  EXPECT_EQ(store.entries(), Store::kMaxVariants);
  EXPECT_NE(store.lookup("k", request_headers({{"user-agent", "ua0"}})), nullptr);
  EXPECT_EQ(store.lookup("k", request_headers({{"user-agent", "ua1"}})), nullptr);
}

TEST(StoreVariants, SelectVaryValuesRecordsAbsentHeadersAsEmpty) {
  EXPECT_EQ(select_vary_values({"accept", "x-tenant"}, request_headers({{"accept", "json"}})),
            (HeaderPairs{{"accept", "json"}, {"x-tenant", ""}}));
}

TEST(StorePurge, PrefixMatchesOnSegmentBoundariesAndQueriesGoToo) {
  Store store(1 << 20);
  for (std::string_view path : {"/a", "/a/b", "/a/b/c", "/ab", "/b", "/"}) {
    store.insert(Store::make_key("a.com", path, "", ""), body_entry("x"));
  }
  store.insert(Store::make_key("a.com", "/a", "x=1", ""), body_entry("x"));
  store.insert(Store::make_key("a.com", "/a", "", "alice"), body_entry("x"));
  store.insert(Store::make_key("a.com", "/a/b", "", ""), body_entry("x", {{"accept", "j"}}));

  // "/a", "/a?x=1", alice's "/a", "/a/b" (two variants), "/a/b/c"
  EXPECT_EQ(store.purge_prefix("a.com", "/a"), 6u);
  EXPECT_EQ(store.entries(), 3u);
  EXPECT_NE(store.lookup(Store::make_key("a.com", "/ab", "", ""), kNoHeaders), nullptr);
  EXPECT_NE(store.lookup(Store::make_key("a.com", "/b", "", ""), kNoHeaders), nullptr);
  EXPECT_NE(store.lookup(Store::make_key("a.com", "/", "", ""), kNoHeaders), nullptr);
  EXPECT_EQ(store.purge_prefix("a.com", "/a"), 0u);
}

TEST(StorePurge, ATrailingSlashPurgesOnlyBelowIt) {
  Store store(1 << 20);
  store.insert(Store::make_key("a.com", "/a", "", ""), body_entry("x"));
  store.insert(Store::make_key("a.com", "/a/b", "", ""), body_entry("x"));
  EXPECT_EQ(store.purge_prefix("a.com", "/a/"), 1u);
  EXPECT_NE(store.lookup(Store::make_key("a.com", "/a", "", ""), kNoHeaders), nullptr);
}

TEST(StorePurge, HostIsNormalisedAndEmptyHostMeansAny) {
  Store store(1 << 20);
  store.insert(Store::make_key("a.com", "/p", "", ""), body_entry("x"));
  store.insert(Store::make_key("b.com", "/p", "", ""), body_entry("x"));
  store.insert(Store::make_key("b.com", "/q", "", ""), body_entry("x"));
  EXPECT_EQ(store.purge_prefix("c.com", "/"), 0u);
  EXPECT_EQ(store.purge_prefix("B.COM:443", "/p"), 1u);
  EXPECT_EQ(store.purge_prefix("", "/p"), 1u);  // a.com's
  EXPECT_EQ(store.purge_prefix("", ""), 1u);    // everything left
  EXPECT_EQ(store.entries(), 0u);
  EXPECT_EQ(store.bytes(), 0u);
}

// ---------------------------------------------------------------------------------------------
// Inflight: request coalescing

TEST(Inflight, FirstCallerLeadsAndEachWaiterIsWokenOnceAfterComplete) {
  Inflight inflight;
  std::vector<int> woken;
  EXPECT_TRUE(inflight.join("k", [&] { woken.push_back(0); }));  // a leader's wake is not kept
  EXPECT_FALSE(inflight.join("k", [&] { woken.push_back(1); }));
  EXPECT_FALSE(inflight.join("k", [&] { woken.push_back(2); }));
  EXPECT_TRUE(inflight.join("j", [] {}));  // another key has its own leader
  EXPECT_EQ(inflight.waiting("k"), 2u);
  EXPECT_EQ(inflight.waiting("j"), 0u);
  EXPECT_TRUE(woken.empty());

  inflight.complete("k");
  EXPECT_EQ(woken, (std::vector<int>{1, 2}));
  EXPECT_EQ(inflight.waiting("k"), 0u);
  inflight.complete("k");  // no round: nothing happens
  EXPECT_EQ(woken.size(), 2u);

  // A second round after complete makes a new leader.
  EXPECT_TRUE(inflight.join("k", [] {}));
  EXPECT_FALSE(inflight.join("k", [&] { woken.push_back(3); }));
  inflight.complete("k");
  EXPECT_EQ(woken, (std::vector<int>{1, 2, 3}));
  inflight.complete("j");
  EXPECT_EQ(inflight.keys(), 0u);
}

TEST(Inflight, WakeRunsOutsideTheLockSoAWokenWaiterMayJoinAgain) {
  Inflight inflight;
  bool rejoined_as_leader = false;
  ASSERT_TRUE(inflight.join("k", [] {}));
  ASSERT_FALSE(inflight.join("k", [&] { rejoined_as_leader = inflight.join("k", [] {}); }));
  inflight.complete("k");  // would deadlock if wake ran under the mutex
  EXPECT_TRUE(rejoined_as_leader);
  EXPECT_EQ(inflight.keys(), 1u);
  inflight.complete("k");
}

TEST(Inflight, WakeIsCalledOnTheThreadThatCompletes) {
  Inflight inflight;
  ASSERT_TRUE(inflight.join("k", [] {}));
  std::atomic<int> calls{0};
  std::thread::id woken_on;
  ASSERT_FALSE(inflight.join("k", [&] {
    woken_on = std::this_thread::get_id();
    calls.fetch_add(1);
  }));
  std::thread leader([&] { inflight.complete("k"); });
  const std::thread::id leader_id = leader.get_id();
  leader.join();
  EXPECT_EQ(calls.load(), 1);
  EXPECT_EQ(woken_on, leader_id);
}

TEST(Inflight, ConcurrentJoinsMakeExactlyOneLeaderAndWakeEveryOtherOnce) {
  constexpr int kThreads = 8;
  constexpr int kRounds = 200;
  Inflight inflight;
  for (int round = 0; round < kRounds; ++round) {
    std::atomic<int> leaders{0};
    std::atomic<int> wakes{0};
    std::barrier all_joined(kThreads);
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([&] {
        const bool leader = inflight.join("k", [&] { wakes.fetch_add(1); });
        if (leader) leaders.fetch_add(1);
        all_joined.arrive_and_wait();
        if (leader) inflight.complete("k");
      });
    }
    for (auto& t : threads) t.join();
    ASSERT_EQ(leaders.load(), 1) << round;
    ASSERT_EQ(wakes.load(), kThreads - 1) << round;
    ASSERT_EQ(inflight.keys(), 0u);
  }
}

// ---------------------------------------------------------------------------------------------
// Concurrency smoke test (meaningful under ASan/UBSan; TSan would check the locking itself)

TEST(StoreConcurrency, FourThreadsInsertLookUpEraseAndPurgeOneStore) {
  constexpr int kThreads = 4;
  constexpr int kOps = 20'000;
  Store store(64 * 1024);  // small: inserts keep evicting
  std::latch start(kThreads);
  std::vector<std::thread> threads;
  std::atomic<int> hits{0};
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937 rng(static_cast<uint32_t>(t));
      start.arrive_and_wait();
      for (int i = 0; i < kOps; ++i) {
        const int n = static_cast<int>(rng() % 64);
        const std::string path = "/p" + std::to_string(n % 8) + "/" + std::to_string(n);
        const std::string key = Store::make_key("h.com", path, "", "");
        const std::string accept = (rng() & 1) != 0 ? "json" : "xml";
        switch (rng() % 16) {
          case 0:
            store.purge_prefix("h.com", "/p" + std::to_string(n % 8));
            break;
          case 1:
            store.erase(key);
            break;
          case 2:
          case 3:
          case 4:
          case 5: {
            std::string body(64 + rng() % 2048, static_cast<char>('a' + n % 26));
            store.insert(key, body_entry(std::move(body), {{"accept", accept}}, i * kMs));
            break;
          }
          default:
            if (auto e = store.lookup(key, request_headers({{"accept", accept}}))) {
              ASSERT_FALSE(e->body.empty());
              ASSERT_EQ(e->body.back(), static_cast<char>('a' + n % 26));  // never another key's
              ASSERT_EQ(e->vary_values[0].second, accept);
              hits.fetch_add(1);
            }
        }
        ASSERT_LE(store.bytes(), store.max_bytes());
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_GT(hits.load(), 0);
  EXPECT_LE(store.bytes(), store.max_bytes());
  store.purge_prefix("", "");  // the byte count must come back to exactly 0
  EXPECT_EQ(store.entries(), 0u);
  EXPECT_EQ(store.bytes(), 0u);
}

}  // namespace
}  // namespace sluice::cache

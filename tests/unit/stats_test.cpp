#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstring>
#include <map>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "stats/histogram.h"
#include "stats/metrics.h"
#include "stats/rates.h"
#include "stats/topk.h"

using namespace sluice::stats;
using namespace std::chrono_literals;

namespace {

constexpr int64_t kMs = 1'000'000;  // ns

// --- A tiny parser of the text exposition -----------------------------------------------------

struct Sample {
  std::string name;
  std::map<std::string, std::string> labels;
  double value = 0;
};

struct Parsed {
  std::vector<Sample> samples;
  std::map<std::string, int> help, type;  // family -> how many lines
  std::map<std::string, std::string> type_of;
  std::vector<std::string> errors;

  // The value of the one sample `name` with exactly `labels`; NaN when absent.
  double value(const std::string& name, const std::map<std::string, std::string>& labels) const {
    for (const Sample& s : samples) {
      if (s.name == name && s.labels == labels) return s.value;
    }
    return std::nan("");
  }
  size_t count(const std::string& name) const {
    return static_cast<size_t>(std::count_if(samples.begin(), samples.end(),
                                             [&](const Sample& s) { return s.name == name; }));
  }
};

// The family of a sample name: the histogram suffixes are stripped when the base is a histogram.
std::string family_of(const std::string& name, const Parsed& p) {
  for (std::string_view suffix : {"_bucket", "_sum", "_count"}) {
    if (name.size() > suffix.size() && name.ends_with(suffix)) {
      std::string base = name.substr(0, name.size() - suffix.size());
      auto it = p.type_of.find(base);
      if (it != p.type_of.end() && it->second == "histogram") return base;
    }
  }
  return name;
}

bool is_name_char(char c, bool first) {
  return std::isalpha(static_cast<unsigned char>(c)) || c == '_' || c == ':' ||
         (!first && std::isdigit(static_cast<unsigned char>(c)));
}

// Every line is "# HELP name text", "# TYPE name type" or "name{k="v",...} value".
Parsed parse(const std::string& text) {
  Parsed p;
  size_t pos = 0;
  int line_no = 0;
  if (!text.empty() && text.back() != '\n') p.errors.push_back("no final newline");
  while (pos < text.size()) {
    const size_t end = text.find('\n', pos);
    const std::string line = text.substr(pos, end - pos);
    pos = end == std::string::npos ? text.size() : end + 1;
    ++line_no;
    const auto error = [&](const std::string& why) {
      p.errors.push_back("line " + std::to_string(line_no) + ": " + why + ": " + line);
    };
    if (line.starts_with("# HELP ") || line.starts_with("# TYPE ")) {
      const std::string rest = line.substr(7);
      const size_t space = rest.find(' ');
      if (space == std::string::npos) {
        error("no text");
        continue;
      }
      const std::string name = rest.substr(0, space);
      if (line[2] == 'H') {
        ++p.help[name];
      } else {
        ++p.type[name];
        p.type_of[name] = rest.substr(space + 1);
        if (p.help[name] != 1) error("TYPE before its HELP");
      }
      continue;
    }
    Sample s;
    size_t i = 0;
    while (i < line.size() && is_name_char(line[i], i == 0)) ++i;
    s.name = line.substr(0, i);
    if (s.name.empty()) {
      error("no metric name");
      continue;
    }
    bool ok = true;
    if (i < line.size() && line[i] == '{') {
      ++i;
      while (ok && i < line.size() && line[i] != '}') {
        size_t k = i;
        while (k < line.size() && is_name_char(line[k], k == i)) ++k;
        const std::string key = line.substr(i, k - i);
        if (key.empty() || k + 1 >= line.size() || line[k] != '=' || line[k + 1] != '"') {
          ok = false;
          break;
        }
        std::string value;
        for (k += 2; k < line.size() && line[k] != '"'; ++k) {
          if (line[k] == '\\') {
            if (++k >= line.size()) break;
            if (line[k] == 'n') {
              value += '\n';
            } else if (line[k] == '\\' || line[k] == '"') {
              value += line[k];
            } else {
              ok = false;
            }
          } else {
            value += line[k];
          }
        }
        if (k >= line.size()) ok = false;
        if (!ok) break;
        if (!s.labels.emplace(key, value).second) ok = false;
        i = k + 1;
        if (i < line.size() && line[i] == ',') ++i;
      }
      if (i >= line.size() || line[i] != '}') ok = false;
      ++i;
    }
    if (!ok || i >= line.size() || line[i] != ' ') {
      error("bad labels");
      continue;
    }
    const std::string value = line.substr(i + 1);
    const auto [ptr, ec] = std::from_chars(value.data(), value.data() + value.size(), s.value);
    if (ec != std::errc() || ptr != value.data() + value.size()) {
      error("bad value");
      continue;
    }
    const std::string family = family_of(s.name, p);
    if (p.type[family] != 1) error("sample before its family's TYPE");
    p.samples.push_back(std::move(s));
  }
  for (const auto& [name, n] : p.help) {
    if (n != 1) p.errors.push_back("HELP of " + name + " " + std::to_string(n) + " times");
  }
  for (const auto& [name, n] : p.type) {
    if (n != 1) p.errors.push_back("TYPE of " + name + " " + std::to_string(n) + " times");
  }
  return p;
}

std::shared_ptr<const Layout> make_layout(std::vector<std::string> routes,
                                          std::vector<std::string> upstreams,
                                          std::vector<std::vector<std::string>> targets,
                                          std::vector<std::string> listeners) {
  return std::make_shared<const Layout>(Layout{.routes = std::move(routes),
                                               .upstreams = std::move(upstreams),
                                               .listeners = std::move(listeners),
                                               .targets = std::move(targets)});
}

// The exact q-quantile of sorted samples: the ceil(q * n)-th smallest (the first for q = 0).
double exact_quantile(const std::vector<int64_t>& sorted_ns, double q) {
  const double rank = q * static_cast<double>(sorted_ns.size());
  size_t k = static_cast<size_t>(std::ceil(rank));
  if (k == 0) k = 1;
  return static_cast<double>(sorted_ns[k - 1]) / 1e9;
}

// The width in seconds of the bucket that holds `seconds`.
double bucket_width(double seconds) {
  const auto ns = static_cast<int64_t>(std::llround(seconds * 1e9));
  const size_t i = bucket_index(ns);
  if (i == kFiniteBuckets) return INFINITY;
  const int64_t lo = i == 0 ? 0 : kBucketBoundsNs[i - 1];
  return static_cast<double>(kBucketBoundsNs[i] - lo) / 1e9;
}

// Checks the documented bound on every quantile from 0.01 to 0.999 of `samples_ns`.
void expect_quantiles_within_one_bucket(std::vector<int64_t> samples_ns) {
  HistogramCounts h;
  for (int64_t ns : samples_ns) h.record(std::chrono::nanoseconds(ns));
  std::sort(samples_ns.begin(), samples_ns.end());
  std::vector<double> qs = {0.5, 0.9, 0.99, 0.999};
  for (int i = 1; i < 100; ++i) qs.push_back(i / 100.0);
  for (double q : qs) {
    const double exact = exact_quantile(samples_ns, q);
    const double estimate = h.quantile(q);
    EXPECT_LE(std::abs(estimate - exact), bucket_width(exact) + 1e-12)
        << "q=" << q << " exact=" << exact << " estimate=" << estimate;
  }
}

}  // namespace

// --- Histogram --------------------------------------------------------------------------------

TEST(Histogram, BoundsAreInclusiveLikePrometheusLe) {
  EXPECT_EQ(bucket_index(0), 0u);
  EXPECT_EQ(bucket_index(500'000), 0u);  // exactly 0.0005 s is le="0.0005"
  EXPECT_EQ(bucket_index(500'001), 1u);
  EXPECT_EQ(bucket_index(1'000'000), 1u);
  EXPECT_EQ(bucket_index(7 * kMs), 4u);  // (5 ms, 10 ms]
  EXPECT_EQ(bucket_index(1'000'000'000), 10u);
  EXPECT_EQ(bucket_index(10'000'000'000), 13u);
  EXPECT_EQ(bucket_index(10'000'000'001), 14u);  // +Inf
  EXPECT_EQ(bucket_index(INT64_MAX), 14u);
  for (size_t i = 0; i < kFiniteBuckets; ++i) {
    EXPECT_EQ(bucket_index(kBucketBoundsNs[i]), i);
    EXPECT_EQ(bucket_index(kBucketBoundsNs[i] + 1), i + 1);
    double parsed = 0;
    std::from_chars(kBucketLabels[i].data(), kBucketLabels[i].data() + kBucketLabels[i].size(),
                    parsed);
    EXPECT_EQ(parsed, static_cast<double>(kBucketBoundsNs[i]) / 1e9) << kBucketLabels[i];
  }
  EXPECT_EQ(kBucketLabels.back(), "+Inf");
}

TEST(Histogram, RecordKeepsExactCountsAndIntegerSum) {
  Histogram h;
  h.record(300us);  // bucket 0
  h.record(3ms);    // (2.5, 5] ms: bucket 3
  h.record(3ms);
  h.record(20s);   // +Inf
  h.record(-5ms);  // a negative duration counts as 0
  const HistogramCounts c = h.read();
  EXPECT_EQ(c.buckets[0], 2u);
  EXPECT_EQ(c.buckets[3], 2u);
  EXPECT_EQ(c.buckets[14], 1u);
  EXPECT_EQ(c.count(), 5u);
  EXPECT_EQ(c.sum_ns, 300'000u + 6'000'000u + 20'000'000'000u);
  EXPECT_DOUBLE_EQ(c.sum_seconds(), 20.0063);
  const auto cumulative = c.cumulative();
  EXPECT_EQ(cumulative[0], 2u);
  EXPECT_EQ(cumulative[2], 2u);
  EXPECT_EQ(cumulative[3], 4u);
  EXPECT_EQ(cumulative[13], 4u);
  EXPECT_EQ(cumulative[14], 5u);
}

TEST(Histogram, QuantileInterpolatesLinearlyInsideTheBucket) {
  HistogramCounts h;
  EXPECT_EQ(h.quantile(0.5), 0.0);              // empty
  for (int i = 0; i < 10; ++i) h.record(12ms);  // all in (10 ms, 25 ms]
  EXPECT_DOUBLE_EQ(h.quantile(0.5), 0.0175);    // 10 + 15 * 5/10 ms
  EXPECT_DOUBLE_EQ(h.quantile(1.0), 0.025);
  EXPECT_DOUBLE_EQ(h.quantile(0.0), 0.010);
  EXPECT_DOUBLE_EQ(h.quantile(7.0), 0.025);  // clamped
  EXPECT_DOUBLE_EQ(h.quantile(std::nan("")), 0.010);
  for (int i = 0; i < 10; ++i) h.record(200us);  // half now in [0, 0.5 ms]
  EXPECT_DOUBLE_EQ(h.quantile(0.25), 0.00025);
  EXPECT_DOUBLE_EQ(h.quantile(0.5), 0.0005);
  EXPECT_DOUBLE_EQ(h.quantile(0.9), 0.022);  // rank 18: 8 of the 10 in (10, 25] ms
}

TEST(Histogram, QuantileInTheInfBucketIsTheLastFiniteBound) {
  HistogramCounts h;
  h.record(1ms);
  for (int i = 0; i < 99; ++i) h.record(30s);
  EXPECT_DOUBLE_EQ(h.quantile(0.99), 10.0);
  EXPECT_DOUBLE_EQ(h.quantile(0.01), 0.001);
}

TEST(Histogram, QuantilesOfUniformDurationsAreWithinOneBucketWidth) {
  std::mt19937_64 rng(1);
  std::uniform_int_distribution<int64_t> d(0, 5'000 * kMs);
  std::vector<int64_t> samples(200'000);
  for (int64_t& s : samples) s = d(rng);
  expect_quantiles_within_one_bucket(samples);

  // Uniform inside each bucket is the case interpolation is made for: far below the bound.
  HistogramCounts h;
  for (int64_t s : samples) h.record(std::chrono::nanoseconds(s));
  EXPECT_NEAR(h.quantile(0.5), 2.5, 0.02);
  EXPECT_NEAR(h.quantile(0.9), 4.5, 0.02);
  EXPECT_NEAR(h.quantile(0.99), 4.95, 0.02);
}

TEST(Histogram, QuantilesOfExponentialDurationsAreWithinOneBucketWidth) {
  std::mt19937_64 rng(2);
  std::exponential_distribution<double> d(1.0 / 0.050);  // mean 50 ms
  std::vector<int64_t> samples(200'000);
  for (int64_t& s : samples) s = static_cast<int64_t>(d(rng) * 1e9);
  expect_quantiles_within_one_bucket(samples);
}

TEST(Histogram, QuantilesOfASmallSkewedSampleAreWithinOneBucketWidth) {
  expect_quantiles_within_one_bucket({1 * kMs, 1 * kMs, 2 * kMs, 40 * kMs, 400 * kMs, 4000 * kMs});
  expect_quantiles_within_one_bucket({7 * kMs});
}

// --- WorkerMetrics and the exposition ---------------------------------------------------------

TEST(Metrics, ExpositionParsesBackWithEveryFamilyOnce) {
  Registry registry;
  registry.set_target_health([] {
    return std::vector<TargetHealth>{{"backend", "127.0.0.1:9001", true},
                                     {"backend", "127.0.0.1:9002", false}};
  });
  auto m = registry.add_worker(
      make_layout({"api", "static"}, {"backend"}, {{"127.0.0.1:9001", "127.0.0.1:9002"}}, {"web"}));
  m->connection_opened(0);
  m->connection_opened(0);
  m->connection_closed(0);
  m->upstream_request(0, 1, 200, 3ms);
  m->upstream_request(0, 1, 0, 1s);  // connect timeout: no status
  m->retry(0, RetryReason::Timeout);
  m->request(0, 200, 4ms, 100, 2000, 0);
  m->request(0, 201, 30ms, 100, 20, 0);
  m->request(0, 503, 2s, 10, 5, 0);
  m->request(-1, 404, 100us, 50, 60, 0);  // no route matched
  m->auth_failure(1, AuthFailure::Missing);
  m->rate_limited(1);
  m->cache(1, CacheResult::Stale);
  m->websocket_message(0);
  m->mqtt_message(0, MqttResult::Forwarded);
  m->mqtt_message(0, MqttResult::Forwarded);
  m->mqtt_message(0, MqttResult::Unrouted);
  m->udp_dropped(0);
  m->udp_dropped(0);
  registry.config_reload(ReloadResult::Success);
  registry.config_reload(ReloadResult::Failure);
  registry.config_reload(ReloadResult::Failure);

  const std::string text = registry.prometheus();
  const Parsed p = parse(text);
  EXPECT_TRUE(p.errors.empty()) << ::testing::PrintToString(p.errors) << "\n" << text;

  const std::map<std::string, std::string> kTypes = {
      {"sluice_requests_total", "counter"},
      {"sluice_request_duration_seconds", "histogram"},
      {"sluice_upstream_requests_total", "counter"},
      {"sluice_upstream_duration_seconds", "histogram"},
      {"sluice_upstream_target_healthy", "gauge"},
      {"sluice_connections_active", "gauge"},
      {"sluice_connections_total", "counter"},
      {"sluice_bytes_received_total", "counter"},
      {"sluice_bytes_sent_total", "counter"},
      {"sluice_auth_failures_total", "counter"},
      {"sluice_rate_limited_total", "counter"},
      {"sluice_cache_requests_total", "counter"},
      {"sluice_retries_total", "counter"},
      {"sluice_config_reloads_total", "counter"},
      {"sluice_mqtt_messages_total", "counter"},
      {"sluice_udp_datagrams_dropped_total", "counter"},
      {"sluice_websocket_messages_total", "counter"}};
  EXPECT_EQ(p.type_of, kTypes);

  EXPECT_EQ(p.value("sluice_requests_total", {{"route", "api"}, {"code", "2xx"}}), 2);
  EXPECT_EQ(p.value("sluice_requests_total", {{"route", "api"}, {"code", "5xx"}}), 1);
  EXPECT_EQ(p.value("sluice_requests_total", {{"route", ""}, {"code", "4xx"}}), 1);
  EXPECT_EQ(p.count("sluice_requests_total"), 3u);  // zero rows are not written

  // The histogram: cumulative buckets, +Inf == _count, _sum in seconds.
  const std::map<std::string, double> kApiBuckets = {
      {"0.0005", 0}, {"0.001", 0}, {"0.0025", 0}, {"0.005", 1}, {"0.01", 1},
      {"0.025", 1},  {"0.05", 2},  {"0.1", 2},    {"0.25", 2},  {"0.5", 2},
      {"1", 2},      {"2.5", 3},   {"5", 3},      {"10", 3},    {"+Inf", 3}};
  for (const auto& [le, n] : kApiBuckets) {
    EXPECT_EQ(p.value("sluice_request_duration_seconds_bucket", {{"route", "api"}, {"le", le}}), n)
        << le;
  }
  EXPECT_EQ(p.value("sluice_request_duration_seconds_count", {{"route", "api"}}), 3);
  EXPECT_DOUBLE_EQ(p.value("sluice_request_duration_seconds_sum", {{"route", "api"}}), 2.034);
  EXPECT_EQ(p.value("sluice_request_duration_seconds_count", {{"route", ""}}), 1);
  EXPECT_TRUE(std::isnan(p.value("sluice_request_duration_seconds_count", {{"route", "static"}})));

  EXPECT_EQ(p.value("sluice_upstream_requests_total",
                    {{"upstream", "backend"}, {"target", "127.0.0.1:9002"}, {"code", "2xx"}}),
            1);
  EXPECT_EQ(p.value("sluice_upstream_requests_total",
                    {{"upstream", "backend"}, {"target", "127.0.0.1:9002"}, {"code", "none"}}),
            1);
  EXPECT_EQ(p.value("sluice_upstream_duration_seconds_bucket",
                    {{"upstream", "backend"}, {"le", "0.005"}}),
            1);
  EXPECT_EQ(
      p.value("sluice_upstream_duration_seconds_bucket", {{"upstream", "backend"}, {"le", "1"}}),
      2);
  EXPECT_EQ(p.value("sluice_upstream_target_healthy",
                    {{"upstream", "backend"}, {"target", "127.0.0.1:9001"}}),
            1);
  EXPECT_EQ(p.value("sluice_upstream_target_healthy",
                    {{"upstream", "backend"}, {"target", "127.0.0.1:9002"}}),
            0);
  EXPECT_EQ(p.value("sluice_connections_active", {{"listener", "web"}}), 1);
  EXPECT_EQ(p.value("sluice_connections_total", {{"listener", "web"}}), 2);
  EXPECT_EQ(p.value("sluice_bytes_received_total", {{"listener", "web"}}), 260);
  EXPECT_EQ(p.value("sluice_bytes_sent_total", {{"listener", "web"}}), 2085);
  EXPECT_EQ(p.value("sluice_auth_failures_total", {{"route", "static"}, {"reason", "missing"}}), 1);
  EXPECT_EQ(p.value("sluice_rate_limited_total", {{"route", "static"}}), 1);
  EXPECT_EQ(p.value("sluice_cache_requests_total", {{"route", "static"}, {"result", "stale"}}), 1);
  EXPECT_EQ(p.value("sluice_retries_total", {{"upstream", "backend"}, {"reason", "timeout"}}), 1);
  EXPECT_EQ(p.value("sluice_config_reloads_total", {{"result", "success"}}), 1);
  EXPECT_EQ(p.value("sluice_config_reloads_total", {{"result", "failure"}}), 2);
  EXPECT_EQ(p.value("sluice_mqtt_messages_total", {{"listener", "web"}, {"result", "forwarded"}}),
            2);
  EXPECT_EQ(p.value("sluice_mqtt_messages_total", {{"listener", "web"}, {"result", "unrouted"}}),
            1);
  EXPECT_EQ(p.count("sluice_mqtt_messages_total"), 2u);  // zero rows are not written
  EXPECT_EQ(p.value("sluice_udp_datagrams_dropped_total", {{"listener", "web"}}), 2);
  EXPECT_EQ(p.count("sluice_udp_datagrams_dropped_total"), 1u);
  EXPECT_EQ(p.value("sluice_websocket_messages_total", {{"route", "api"}}), 1);
}

TEST(Metrics, EmptyRegistryWritesEveryFamilyHeaderAndValidText) {
  Registry registry;
  const Parsed p = parse(registry.prometheus());
  EXPECT_TRUE(p.errors.empty()) << ::testing::PrintToString(p.errors);
  EXPECT_EQ(p.type.size(), 17u);
  EXPECT_EQ(p.value("sluice_config_reloads_total", {{"result", "success"}}), 0);
}

TEST(Metrics, LabelValuesAreEscaped) {
  std::string out;
  append_label_value(out, "a\\b\"c\nd");
  EXPECT_EQ(out, "a\\\\b\\\"c\\nd");

  Registry registry;
  const std::string weird = "we\"ird\\route\nname";
  auto m = registry.add_worker(make_layout({weird}, {}, {}, {"l"}));
  m->request(0, 200, 1ms, 1, 1, 0);
  const std::string text = registry.prometheus();
  EXPECT_NE(text.find(R"(route="we\"ird\\route\nname")"), std::string::npos) << text;
  const Parsed p = parse(text);
  EXPECT_TRUE(p.errors.empty()) << ::testing::PrintToString(p.errors);
  EXPECT_EQ(p.value("sluice_requests_total", {{"route", weird}, {"code", "2xx"}}), 1);
}

TEST(Metrics, OutOfLayoutIdsCountUnderTheEmptyName) {
  WorkerMetrics m(make_layout({"r"}, {"u"}, {{"t"}}, {"l"}));
  m.request(-1, 200, 1ms, 1, 1, -1);
  m.upstream_request(-1, -1, 502, 1ms);
  m.upstream_request(0, -1, 200, 1ms);
  m.retry(-1, RetryReason::Reset);
  const Totals t = m.totals();
  EXPECT_EQ(t.routes.at("").requests[1], 1u);
  EXPECT_EQ(t.routes.at("r").requests[1], 0u);  // named rows are listed even at 0
  EXPECT_EQ(t.upstreams.at("").targets.at("")[4], 1u);
  EXPECT_EQ(t.upstreams.at("").retries[1], 1u);
  EXPECT_EQ(t.upstreams.at("u").targets.at("")[1], 1u);
  EXPECT_EQ(t.upstreams.at("u").targets.at("t")[1], 0u);
  EXPECT_EQ(t.listeners.count(""), 1u);

  WorkerMetrics quiet(make_layout({"r"}, {"u"}, {{"t"}}, {"l"}));
  const Totals q = quiet.totals();
  EXPECT_EQ(q.routes.count(""), 0u);  // "" rows only once used
  EXPECT_EQ(q.upstreams.count(""), 0u);
  EXPECT_EQ(q.upstreams.at("u").targets.count(""), 0u);
  EXPECT_EQ(q.listeners.count(""), 0u);

  // A null layout is an empty one.
  WorkerMetrics empty(nullptr);
  empty.request(-1, 200, 1ms, 1, 1, -1);
  EXPECT_EQ(empty.totals().routes.at("").requests[1], 1u);
}

TEST(Metrics, StatusClasses) {
  EXPECT_EQ(status_index(100), 0u);
  EXPECT_EQ(status_index(199), 0u);
  EXPECT_EQ(status_index(200), 1u);
  EXPECT_EQ(status_index(308), 2u);
  EXPECT_EQ(status_index(429), 3u);
  EXPECT_EQ(status_index(599), 4u);
  EXPECT_EQ(status_index(600), 5u);
  EXPECT_EQ(status_index(0), 5u);
  EXPECT_EQ(status_index(99), 5u);
  EXPECT_EQ(status_index(-1), 5u);
  EXPECT_EQ(kStatusLabels[status_index(0)], "none");
}

TEST(Metrics, MemoryPerWorkerFollowsTheLayout) {
  // 100 routes, 20 upstreams of 5 targets, 4 listeners: a large config.
  std::vector<std::string> routes, upstreams, listeners;
  std::vector<std::vector<std::string>> targets;
  for (int i = 0; i < 100; ++i) routes.push_back("route" + std::to_string(i));
  for (int i = 0; i < 20; ++i) {
    upstreams.push_back("up" + std::to_string(i));
    targets.push_back({"a:1", "b:1", "c:1", "d:1", "e:1"});
  }
  for (int i = 0; i < 4; ++i) listeners.push_back("l" + std::to_string(i));
  WorkerMetrics m(make_layout(routes, upstreams, targets, listeners));
  const size_t counters = 101 * 14 + 5 * 9 + 21 * 4 + (20 * 6 + 1) * 6;
  const size_t expected = (counters + 7) / 8 * 64 + size_t{101 + 21} * 128;
  EXPECT_EQ(m.memory_bytes(), expected);
  EXPECT_EQ(sizeof(Histogram), 128u);
  std::printf("[ info ] memory per worker, 100 routes / 20x5 targets / 4 listeners: %zu bytes\n",
              m.memory_bytes());
}

TEST(Metrics, CountersOfTwoWorkersOnThreadsAreSummedAndNeverGoBackwards) {
  Registry registry;
  auto layout = make_layout({"a", "b"}, {"u"}, {{"t1", "t2"}}, {"web"});
  auto w1 = registry.add_worker(layout);
  auto w2 = registry.add_worker(layout);
  constexpr int kPerWorker = 100'000;
  std::atomic<bool> done{false};
  std::atomic<int> scrapes{0};
  std::thread scraper([&] {
    uint64_t last = 0;
    while (!done.load()) {
      const Totals t = registry.totals();
      const uint64_t now = t.routes.at("a").requests[1] + t.routes.at("b").requests[1];
      EXPECT_GE(now, last);
      EXPECT_LE(t.listeners.at("web").connections_closed, t.listeners.at("web").connections_opened);
      last = now;
      scrapes.fetch_add(1);
    }
  });
  const auto work = [](WorkerMetrics& m, int salt) {
    for (int i = 0; i < kPerWorker; ++i) {
      m.connection_opened(0);
      m.upstream_request(0, (i + salt) % 2, 200, 2ms);
      m.request(i % 2, 200, 5ms, 10, 20, 0);
      m.connection_closed(0);
    }
  };
  std::thread t1(work, std::ref(*w1), 0);
  std::thread t2(work, std::ref(*w2), 1);
  t1.join();
  t2.join();
  while (scrapes.load() < 3) std::this_thread::yield();
  done = true;
  scraper.join();

  const Totals t = registry.totals();
  EXPECT_EQ(t.routes.at("a").requests[1], uint64_t{kPerWorker});
  EXPECT_EQ(t.routes.at("b").requests[1], uint64_t{kPerWorker});
  EXPECT_EQ(t.routes.at("a").duration.count(), uint64_t{kPerWorker});
  EXPECT_EQ(t.routes.at("a").duration.sum_ns, uint64_t{kPerWorker} * 5'000'000);
  EXPECT_EQ(t.upstreams.at("u").targets.at("t1")[1], uint64_t{kPerWorker});
  EXPECT_EQ(t.upstreams.at("u").targets.at("t2")[1], uint64_t{kPerWorker});
  EXPECT_EQ(t.listeners.at("web").bytes_received, 2u * kPerWorker * 10);
  EXPECT_EQ(t.listeners.at("web").connections_opened, 2u * kPerWorker);
  EXPECT_EQ(t.listeners.at("web").connections_active(), 0u);
}

TEST(Metrics, ReloadWithANewLayoutKeepsTotalsByNameAndMonotonic) {
  Registry registry;
  // Generation 1: routes a, b. Generation 2: b moved to index 0, a removed, c added.
  auto gen1 = registry.add_worker(make_layout({"a", "b"}, {"u"}, {{"t"}}, {"web"}));
  gen1->connection_opened(0);  // a connection accepted under generation 1 ...
  for (int i = 0; i < 3; ++i) gen1->request(0, 200, 1ms, 1, 1, 0);
  for (int i = 0; i < 5; ++i) gen1->request(1, 200, 1ms, 1, 1, 0);
  gen1->upstream_request(0, 0, 200, 1ms);

  const Parsed before = parse(registry.prometheus());
  EXPECT_EQ(before.value("sluice_requests_total", {{"route", "b"}, {"code", "2xx"}}), 5);

  auto gen2 = registry.add_worker(make_layout({"b", "c"}, {"u"}, {{"t"}}, {"web"}));
  for (int i = 0; i < 2; ++i) gen2->request(0, 200, 1ms, 1, 1, 0);  // "b" again
  gen2->request(1, 500, 1ms, 1, 1, 0);                              // "c"
  gen2->upstream_request(0, 0, 200, 1ms);

  // Both generations live (an exchange of generation 1 still in flight): summed by name.
  Totals t = registry.totals();
  EXPECT_EQ(t.routes.at("a").requests[1], 3u);
  EXPECT_EQ(t.routes.at("b").requests[1], 7u);
  EXPECT_EQ(t.routes.at("c").requests[4], 1u);
  EXPECT_EQ(t.upstreams.at("u").targets.at("t")[1], 2u);
  EXPECT_EQ(registry.blocks(), 2u);

  // ... which ends, and closes its connection on generation 1's block: the block is retired.
  gen1->request(1, 200, 1ms, 1, 1, 0);
  gen1->connection_closed(0);
  gen1.reset();
  t = registry.totals();
  EXPECT_EQ(registry.blocks(), 1u);  // folded into the carry-over
  EXPECT_EQ(t.routes.at("a").requests[1], 3u);
  EXPECT_EQ(t.routes.at("b").requests[1], 8u);
  EXPECT_EQ(t.routes.at("b").duration.count(), 8u);
  EXPECT_EQ(t.upstreams.at("u").targets.at("t")[1], 2u);
  EXPECT_EQ(t.listeners.at("web").connections_active(), 0u);
  EXPECT_EQ(t.listeners.at("web").connections_opened, 1u);

  // Every series of the first scrape is still there, none smaller.
  const Parsed after = parse(registry.prometheus());
  EXPECT_TRUE(after.errors.empty()) << ::testing::PrintToString(after.errors);
  for (const Sample& s : before.samples) {
    if (s.name == "sluice_connections_active") continue;  // a gauge
    const double now = after.value(s.name, s.labels);
    EXPECT_GE(now, s.value) << s.name << ::testing::PrintToString(s.labels);
  }

  // A connection opened on one generation and closed on the next, same listener name.
  auto gen3 = registry.add_worker(make_layout({"c"}, {}, {}, {"admin", "web"}));
  gen2->connection_opened(0);
  gen3->connection_closed(1);
  gen2.reset();
  t = registry.totals();
  EXPECT_EQ(registry.blocks(), 1u);
  EXPECT_EQ(t.listeners.at("web").connections_active(), 0u);
  EXPECT_EQ(t.listeners.at("web").connections_opened, 2u);
  EXPECT_EQ(t.routes.at("b").requests[1], 8u);
  EXPECT_EQ(t.routes.at("c").requests[4], 1u);
}

TEST(Metrics, RetiredBlocksWithoutCountsLeaveNoRows) {
  Registry registry;
  auto gen1 = registry.add_worker(make_layout({"old"}, {"u"}, {{"t"}}, {"l"}));
  gen1.reset();
  auto gen2 = registry.add_worker(make_layout({"new"}, {}, {}, {}));
  const Totals t = registry.totals();
  EXPECT_EQ(t.routes.count("old"), 0u);
  EXPECT_EQ(t.upstreams.count("u"), 0u);
  EXPECT_EQ(t.listeners.count("l"), 0u);
  EXPECT_EQ(t.routes.count("new"), 1u);
}

// --- Rates ------------------------------------------------------------------------------------

TEST(Rates, WindowsAreCompleteSecondsBeforeNow) {
  RateRing ring;
  for (int i = 0; i < 6; ++i) ring.record(1000, 200);   // 60 s before 1060: inside rps_60s
  for (int i = 0; i < 20; ++i) ring.record(1049, 200);  // just outside rps_10s at 1060
  for (int i = 0; i < 30; ++i) ring.record(1050, 404);
  for (int i = 0; i < 7; ++i) ring.record(1059, 503);
  for (int i = 0; i < 99; ++i) ring.record(1060, 200);  // the second in progress: never counted

  Rates r = ring.rates(1060);
  EXPECT_EQ(r.rps_1s, 7.0);
  EXPECT_EQ(r.rps_10s, 3.7);                       // (30 + 7) / 10
  EXPECT_EQ(r.rps_60s, (6 + 20 + 30 + 7) / 60.0);  // 1000 .. 1059

  r = ring.rates(1061);  // 1000 left the 60 s window, 1060 is complete now
  EXPECT_EQ(r.rps_1s, 99.0);
  EXPECT_EQ(r.rps_10s, (7 + 99) / 10.0);
  EXPECT_EQ(r.rps_60s, (20 + 30 + 7 + 99) / 60.0);

  const RateSeries s = ring.series(1060);
  EXPECT_EQ(s.seconds.front().second, 1000);
  EXPECT_EQ(s.seconds.back().second, 1059);
  EXPECT_EQ(s.seconds[50].second, 1050);
  EXPECT_EQ(s.seconds[50].by_class[3], 30u);
  EXPECT_EQ(s.seconds[59].by_class[4], 7u);
  EXPECT_EQ(s.seconds[59].total(), 7u);
  EXPECT_EQ(s.seconds[1].total(), 0u);

  EXPECT_EQ(ring.rates(2000).rps_60s, 0.0);  // all of it long gone
}

TEST(Rates, SlotsAreReusedAfterSixtyOneSecondsAndLateRecordsDropped) {
  RateRing ring;
  ring.record(100, 200);
  ring.record(161, 200);  // the same slot as 100
  ring.record(161, 200);
  ring.record(100, 200);  // over 60 s late: dropped, and 161 keeps its counts
  EXPECT_EQ(ring.series(162).seconds.back().total(), 2u);
  EXPECT_EQ(ring.rates(162).rps_60s, 2 / 60.0);
  ring.record(-5, 200);  // negative seconds are seconds too
  EXPECT_EQ(ring.rates(-4).rps_1s, 1.0);
}

TEST(Rates, RecordWithoutStatusCountsAsNone) {
  RateRing ring;
  ring.record(7);
  EXPECT_EQ(ring.series(8).seconds.back().by_class[5], 1u);
}

TEST(Rates, RegistrySumsTheRingsOfEveryWorker) {
  Registry registry;
  auto a = registry.add_rate_ring();
  auto b = registry.add_rate_ring();
  for (int i = 0; i < 3; ++i) a->record(50, 200);
  for (int i = 0; i < 4; ++i) b->record(50, 500);
  RateSeries s = registry.rate_series(51);
  EXPECT_EQ(s.seconds.back().second, 50);
  EXPECT_EQ(s.seconds.back().by_class[1], 3u);
  EXPECT_EQ(s.seconds.back().by_class[4], 4u);
  EXPECT_EQ(s.rates().rps_1s, 7.0);
  b.reset();  // a worker gone: its ring no longer counts
  EXPECT_EQ(registry.rate_series(51).rates().rps_1s, 3.0);
}

TEST(Rates, ConcurrentReadsNeverMixTwoSeconds) {
  RateRing ring;
  std::atomic<int64_t> written_up_to{-1};  // every second < this is complete
  std::atomic<bool> done{false};
  std::thread writer([&] {
    // Second s gets exactly s % 7 + 1 records, over 400 simulated seconds (the ring wraps).
    for (int64_t s = 0; s < 400; ++s) {
      for (int64_t i = 0; i <= s % 7; ++i) ring.record(s, 200);
      written_up_to.store(s);
    }
    done = true;
  });
  while (!done.load()) {
    const int64_t now = written_up_to.load();
    const RateSeries series = ring.series(now);
    for (const SecondCounts& sc : series.seconds) {
      if (sc.second < 0) continue;
      const uint64_t n = sc.total();
      // A complete second: exactly its count, or 0 if the writer already reused its slot.
      EXPECT_TRUE(n == 0 || n == static_cast<uint64_t>(sc.second % 7 + 1))
          << sc.second << ": " << n;
    }
  }
  writer.join();
}

// --- Space-Saving -----------------------------------------------------------------------------

namespace {

// Checks every Space-Saving guarantee of `sketch` against the exact weights.
void expect_guarantees(const TopK& sketch, const std::unordered_map<std::string, uint64_t>& exact) {
  uint64_t n = 0;
  for (const auto& [key, w] : exact) n += w;
  ASSERT_EQ(sketch.total(), n);
  const double bound = static_cast<double>(n) / static_cast<double>(sketch.capacity());
  const std::vector<TopK::Item> items = sketch.top(sketch.capacity());
  EXPECT_LE(items.size(), sketch.capacity());
  std::set<std::string> monitored;
  for (const TopK::Item& i : items) {
    const auto it = exact.find(i.key);
    const uint64_t truth = it == exact.end() ? 0 : it->second;
    EXPECT_LE(truth, i.count) << i.key;
    EXPECT_LE(i.count - i.error, truth) << i.key;
    EXPECT_LE(static_cast<double>(i.error), bound) << i.key;
    monitored.insert(i.key);
  }
  for (const auto& [key, w] : exact) {
    if (static_cast<double>(w) > bound) {
      EXPECT_TRUE(monitored.contains(key)) << key << " " << w;
    }
  }
}

}  // namespace

TEST(TopK, ExactWhileTheKeysFit) {
  TopK t(4);
  t.add("a", 5);
  t.add("b", 1);
  t.add("a", 2);
  t.add("c", 9);
  t.add("d", 0);  // no weight: nothing
  const auto top = t.top(10);
  ASSERT_EQ(top.size(), 3u);
  EXPECT_EQ(top[0].key, "c");
  EXPECT_EQ(top[0].count, 9u);
  EXPECT_EQ(top[1].key, "a");
  EXPECT_EQ(top[1].count, 7u);
  EXPECT_EQ(top[1].error, 0u);
  EXPECT_EQ(top[2].key, "b");
  EXPECT_EQ(t.top(1).size(), 1u);
  EXPECT_EQ(t.total(), 17u);
  t.clear();
  EXPECT_EQ(t.size(), 0u);
  EXPECT_EQ(t.total(), 0u);
  EXPECT_TRUE(t.top(3).empty());
}

TEST(TopK, ReplacingTheMinimumInheritsItsCountAsError) {
  TopK t(2);
  t.add("a", 10);
  t.add("b", 3);
  t.add("c", 1);  // replaces b (3): count 4, error 3
  const auto top = t.top(2);
  ASSERT_EQ(top.size(), 2u);
  EXPECT_EQ(top[0].key, "a");
  EXPECT_EQ(top[1].key, "c");
  EXPECT_EQ(top[1].count, 4u);
  EXPECT_EQ(top[1].error, 3u);
}

TEST(TopK, AHeavyKeyIsFoundWhateverTheOrder) {
  // k = 16; the heavy key has 1/10 of the weight (> N/k) and arrives first, last or spread out,
  // among 20'000 distinct light keys.
  for (int order = 0; order < 3; ++order) {
    TopK t(16);
    std::unordered_map<std::string, uint64_t> exact;
    const auto add = [&](const std::string& k, uint64_t w) {
      t.add(k, w);
      exact[k] += w;
    };
    constexpr int kLight = 20'000;
    constexpr int kHeavy = kLight / 9 + 1;
    if (order == 0) {
      for (int i = 0; i < kHeavy; ++i) add("heavy", 1);
    }
    for (int i = 0; i < kLight; ++i) {
      add("light" + std::to_string(i), 1);
      if (order == 2 && i % 9 == 0) add("heavy", 1);
    }
    if (order == 1) {
      for (int i = 0; i < kHeavy; ++i) add("heavy", 1);
    }
    ASSERT_GT(exact["heavy"] * 16, t.total()) << order;
    expect_guarantees(t, exact);
    EXPECT_EQ(t.top(1).at(0).key, "heavy") << order;
  }
}

TEST(TopK, ErrorBoundsHoldOnRandomZipfStreams) {
  std::mt19937_64 rng(7);
  for (size_t k : {8u, 64u}) {
    // Zipf(1.1) over 5000 keys, by inverse CDF.
    std::vector<double> cdf;
    double sum = 0;
    for (int i = 1; i <= 5000; ++i) cdf.push_back(sum += 1.0 / std::pow(i, 1.1));
    std::uniform_real_distribution<double> u(0, sum);
    TopK t(k);
    std::unordered_map<std::string, uint64_t> exact;
    for (int i = 0; i < 200'000; ++i) {
      const size_t rank =
          static_cast<size_t>(std::lower_bound(cdf.begin(), cdf.end(), u(rng)) - cdf.begin());
      const std::string key =
          "10.0." + std::to_string(rank / 256) + "." + std::to_string(rank % 256);
      t.add(key, 1);
      ++exact[key];
    }
    expect_guarantees(t, exact);
    // With k = 8 the other counts are near N/k, as large as the top key's: only k = 64 ranks it.
    if (k == 64) {
      EXPECT_EQ(t.top(1).at(0).key, "10.0.0.0");
    }
  }
}

TEST(TopK, ErrorBoundsHoldWithWeights) {
  // Top clients by bytes: random sizes, a few big downloaders among many small clients.
  std::mt19937_64 rng(11);
  std::uniform_int_distribution<int> client(0, 2999);
  std::uniform_int_distribution<uint64_t> small(100, 5'000), big(100'000, 1'000'000);
  TopK t(32);
  std::unordered_map<std::string, uint64_t> exact;
  for (int i = 0; i < 100'000; ++i) {
    const int c = client(rng);
    const uint64_t w = c < 5 ? big(rng) : small(rng);
    const std::string key = "client" + std::to_string(c);
    t.add(key, w);
    exact[key] += w;
  }
  expect_guarantees(t, exact);
  std::set<std::string> top5;
  for (const auto& i : t.top(5)) top5.insert(i.key);
  EXPECT_EQ(top5, (std::set<std::string>{"client0", "client1", "client2", "client3", "client4"}));
}

TEST(TopK, MemoryStaysBoundedWithAMillionDistinctKeys) {
  TopK t(64);
  char buf[32];
  std::memcpy(buf, "192.0.", 6);
  for (uint64_t i = 0; i < 1'000'000; ++i) {
    char* end = std::to_chars(buf + 6, buf + sizeof buf, i).ptr;
    t.add(std::string_view(buf, static_cast<size_t>(end - buf)), 1);
    if (i % 10 == 0) t.add("attacker", 1);  // 1/11 of the stream
  }
  EXPECT_EQ(t.size(), 64u);
  EXPECT_EQ(t.total(), 1'100'000u);
  const auto top = t.top(64);
  EXPECT_EQ(top.size(), 64u);
  EXPECT_EQ(top[0].key, "attacker");
  EXPECT_GE(top[0].count - top[0].error, 100'000u - t.total() / 64);
  EXPECT_LE(top[0].error, t.total() / 64);
}

TEST(TopK, ConcurrentAddsLoseNothing) {
  TopK t(16);
  constexpr int kThreads = 4, kPerThread = 50'000;
  std::vector<std::thread> threads;
  for (int id = 0; id < kThreads; ++id) {
    threads.emplace_back([&t, id] {
      for (int i = 0; i < kPerThread; ++i) {
        t.add(i % 2 == 0 ? "shared" : "t" + std::to_string(id) + "-" + std::to_string(i), 1);
        if (i % 1000 == 0) (void)t.top(3);
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(t.total(), uint64_t{kThreads} * kPerThread);
  const auto top = t.top(1);
  ASSERT_EQ(top.size(), 1u);
  EXPECT_EQ(top[0].key, "shared");
  EXPECT_LE(top[0].count - top[0].error, uint64_t{kThreads} * kPerThread / 2);
  EXPECT_GE(top[0].count, uint64_t{kThreads} * kPerThread / 2);
}

TEST(TopK, CapacityZeroIsOne) {
  TopK t(0);
  EXPECT_EQ(t.capacity(), 1u);
  t.add("a", 1);
  t.add("b", 1);
  EXPECT_EQ(t.top(5).size(), 1u);
  EXPECT_EQ(t.top(5)[0].key, "b");
  EXPECT_EQ(t.top(5)[0].count, 2u);
}

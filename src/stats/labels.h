// The small closed label sets of the metrics (SPEC.md section 5): status class, cache result,
// auth failure, retry and reload reasons, MQTT message results. Each is an enum whose value indexes
// a counter array, and whose label text is what /metrics and /api/stats show.
//
//   size_t c = stats::status_index(504);          // 4, shown as code="5xx"
//   stats::label(stats::CacheResult::Stale);      // "stale"
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string_view>

namespace sluice::stats {

// Status classes 1xx..5xx, then "none": the exchange (or upstream attempt) ended without a
// status (client gone, connect failure, reset, timeout before the head), or with one outside
// 100..599.
inline constexpr size_t kStatusClasses = 6;
inline constexpr std::array<std::string_view, kStatusClasses> kStatusLabels = {
    "1xx", "2xx", "3xx", "4xx", "5xx", "none"};

// 100..599 -> 0..4; anything else -> 5 ("none"). One subtraction, one compare, one division.
constexpr size_t status_index(int status) {
  const auto offset = static_cast<unsigned>(status) - 100u;  // wraps for status < 100
  return offset < 500u ? offset / 100u : kStatusClasses - 1;
}

// sluice_cache_requests_total{result}: what a caching route did (x-cache: HIT | MISS | STALE).
enum class CacheResult : uint8_t { Hit, Miss, Stale };
inline constexpr size_t kCacheResults = 3;

// sluice_auth_failures_total{reason}: 401 without credentials, 401 with credentials that were
// refused (bad signature, expired, wrong password ...), 403 (allow lists, ip_access).
enum class AuthFailure : uint8_t { Missing, Invalid, Forbidden };
inline constexpr size_t kAuthFailures = 3;

// sluice_retries_total{reason}: why another attempt was made.
enum class RetryReason : uint8_t { ConnectFailure, Reset, Timeout, Status };
inline constexpr size_t kRetryReasons = 4;

// sluice_config_reloads_total{result}.
enum class ReloadResult : uint8_t { Success, Failure };
inline constexpr size_t kReloadResults = 2;

// sluice_mqtt_messages_total{result}: what became of a PUBLISH (or will message) from a client.
// forwarded: the upstream answered 2xx. failed: it did not answer, or answered 5xx / 408 / 429
// (a QoS 1 message is then not acknowledged). rejected: refused for good (an upstream 4xx, a topic
// that expands to a bad path, an invalid UTF-8 payload). unrouted: no `mqtt.routes` filter matched.
enum class MqttResult : uint8_t { Forwarded, Failed, Rejected, Unrouted };
inline constexpr size_t kMqttResults = 4;

constexpr std::string_view label(CacheResult r) {
  constexpr std::array<std::string_view, kCacheResults> k = {"hit", "miss", "stale"};
  return k[static_cast<size_t>(r)];
}
constexpr std::string_view label(AuthFailure r) {
  constexpr std::array<std::string_view, kAuthFailures> k = {"missing", "invalid", "forbidden"};
  return k[static_cast<size_t>(r)];
}
constexpr std::string_view label(RetryReason r) {
  constexpr std::array<std::string_view, kRetryReasons> k = {"connect_failure", "reset", "timeout",
                                                             "status"};
  return k[static_cast<size_t>(r)];
}
constexpr std::string_view label(MqttResult r) {
  constexpr std::array<std::string_view, kMqttResults> k = {"forwarded", "failed", "rejected",
                                                            "unrouted"};
  return k[static_cast<size_t>(r)];
}
constexpr std::string_view label(ReloadResult r) {
  constexpr std::array<std::string_view, kReloadResults> k = {"success", "failure"};
  return k[static_cast<size_t>(r)];
}

}  // namespace sluice::stats

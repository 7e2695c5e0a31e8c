// Durations and sizes as written in the config file (SPEC.md section 2).
#include <cstdint>
#include <limits>
#include <optional>
#include <string_view>

#include "config/config.h"
#include "config/values.h"

namespace sluice::config {

namespace {

// Longest accepted duration. Keeps every Duration convertible to std::chrono::nanoseconds (the
// unit timers use) without overflow: 10^12 ms is about 31 years.
constexpr int64_t k_max_duration_ms = 1'000'000'000'000;

// Splits the leading decimal digits off `text`; nullopt when there are none or they overflow.
std::optional<uint64_t> take_number(std::string_view& text) {
  size_t digits = 0;
  while (digits < text.size() && text[digits] >= '0' && text[digits] <= '9') ++digits;
  auto value = parse_uint(text.substr(0, digits));
  text.remove_prefix(digits);
  return value;
}

}  // namespace

// A sequence of <digits><unit> terms, unit one of ms, s, m, h: "250ms", "10s", "1m30s". A unit is
// required (a bare "0" is rejected so that "timeout: 30" cannot silently mean 30 ms), fractions
// are not accepted ("1.5s" is "1500ms").
std::optional<Duration> parse_duration(std::string_view text) {
  if (text.empty()) return std::nullopt;
  int64_t total_ms = 0;
  while (!text.empty()) {
    auto number = take_number(text);
    if (!number) return std::nullopt;
    uint64_t unit_ms = 0;
    if (text.starts_with("ms")) {
      unit_ms = 1;
      text.remove_prefix(2);
    } else if (text.starts_with("s")) {
      unit_ms = 1000;
      text.remove_prefix(1);
    } else if (text.starts_with("m")) {
      unit_ms = 60 * 1000;
      text.remove_prefix(1);
    } else if (text.starts_with("h")) {
      unit_ms = 60 * 60 * 1000;
      text.remove_prefix(1);
    } else {
      return std::nullopt;
    }
    if (*number > static_cast<uint64_t>(k_max_duration_ms) / unit_ms) return std::nullopt;
    total_ms += static_cast<int64_t>(*number * unit_ms);
    if (total_ms > k_max_duration_ms) return std::nullopt;
  }
  return Duration(total_ms);
}

// Bytes, optionally with a binary unit: "512", "64KiB", "10MiB", "1GiB". The one-letter forms
// k/K, m/M, g/G are accepted as the same binary multiples (64k = 64KiB). Decimal "KB"/"MB" are
// rejected on purpose: whether they mean 1000 or 1024 is exactly the ambiguity we want to avoid.
std::optional<uint64_t> parse_size(std::string_view text) {
  auto number = take_number(text);
  if (!number) return std::nullopt;
  uint64_t multiplier = 1;
  if (text.empty()) {
    multiplier = 1;
  } else if (text == "KiB" || text == "k" || text == "K") {
    multiplier = uint64_t{1} << 10;
  } else if (text == "MiB" || text == "m" || text == "M") {
    multiplier = uint64_t{1} << 20;
  } else if (text == "GiB" || text == "g" || text == "G") {
    multiplier = uint64_t{1} << 30;
  } else {
    return std::nullopt;
  }
  if (*number > std::numeric_limits<uint64_t>::max() / multiplier) return std::nullopt;
  return *number * multiplier;
}

}  // namespace sluice::config

// MQTT topic names and filters, and the routing of a PUBLISH topic to an HTTP path.
//
//   // At config load, once per `mqtt.routes` entry:
//   auto compiled = mqtt::TopicFilter::compile("devices/+/telemetry");
//   if (auto* error = std::get_if<std::string>(&compiled)) return config_error(*error);
//   mqtt::TopicFilter filter = std::get<mqtt::TopicFilter>(std::move(compiled));
//   if (auto error = mqtt::validate_path_template("/ingest/{1}", filter.wildcards())) ...
//
//   // Per PUBLISH, on the connection's worker:
//   if (auto captures = filter.match(publish.topic)) {      // "devices/d-7/telemetry" -> {"d-7"}
//     std::optional<std::string> path = mqtt::expand("/ingest/{1}", *captures);  // "/ingest/d-7"
//     if (!path) ...  // a capture would have made a "." or ".." path segment: refuse the message
//   }
//
// Matching follows MQTT 5.0 section 4.7 (the same in 3.1.1): levels are split at '/', a level
// may be empty; '+' matches exactly one level, '#' the parent level and any number of levels
// below it ("sport/#" matches "sport", "sport/" and "sport/a/b"); a topic starting with '$' is not
// matched by a filter whose first level is a wildcard. Comparison is byte-exact (case-sensitive,
// no Unicode normalisation). Shared subscriptions ("$share/...") have no special meaning here.
//
// Everything here is immutable after compile() or a pure function: thread-safe.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace sluice::mqtt {

// A PUBLISH topic: 1 .. 65'535 bytes of valid MQTT UTF-8 (codec.h) without '+' or '#'.
bool valid_topic_name(std::string_view topic);

// A SUBSCRIBE / UNSUBSCRIBE / route filter: 1 .. 65'535 bytes of valid MQTT UTF-8 in which '+'
// is alone in its level and '#' is alone in the last level.
bool valid_topic_filter(std::string_view filter);

class TopicFilter {
 public:
  // The filter compiled, or a one-line error for the config validator ("'#' must be the last
  // level of topic filter \"a/#/b\"").
  static std::variant<TopicFilter, std::string> compile(std::string_view filter);

  // nullopt if `topic` does not match; otherwise the text each wildcard matched, in filter order:
  // one level for '+', the rest of the topic for '#' (possibly empty, and with its '/' inside).
  // Captures point into `topic`. `topic` is expected to be a valid topic name (decode() checked
  // it); anything else simply fails to match or matches as bytes.
  std::optional<std::vector<std::string_view>> match(std::string_view topic) const;
  bool matches(std::string_view topic) const;  // the same, without collecting captures

  std::string_view text() const { return text_; }
  size_t wildcards() const { return wildcards_; }  // how many '+' and '#': captures per match

 private:
  enum class LevelKind : uint8_t { Literal, SingleLevel, MultiLevel };
  struct Level {
    LevelKind kind;
    uint32_t offset;  // of a literal level in text_ (offsets survive moves, views would not)
    uint32_t length;
  };

  TopicFilter() = default;
  bool match_into(std::string_view topic, std::vector<std::string_view>* captures) const;

  std::string text_;
  std::vector<Level> levels_;
  size_t wildcards_ = 0;
};

// Config time: nullopt if every '{' and '}' of `path_template` belongs to a placeholder {N} with
// 1 <= N <= wildcards (N in decimal, no leading zero), and the template itself has no "." or ".."
// path segment; else a one-line error. Other characters are the config validator's business.
std::optional<std::string> validate_path_template(std::string_view path_template, size_t wildcards);

// Per message: `path_template` with each {N} replaced by captures[N - 1], percent-encoded. A
// capture may contain any bytes; all but the RFC 3986 unreserved characters (ALPHA DIGIT - . _ ~)
// and '/' become %XX (upper-case hex). '/' is kept so that a '#' capture maps topic levels to
// path segments ("sensors/#" on "sensors/a/b" into "/in/{1}" gives "/in/a/b"); a '+' capture
// never contains one. Everything else is encoded, even sub-delims and ':' '@' which RFC 3986
// allows in a segment, because upstream frameworks treat '+', ';', '=' ... specially.
// Returns nullopt when the expanded path (before any '?' the template has) holds a "." or ".."
// segment, e.g. from a topic "devices/../telemetry": '.' is unreserved, so encoding it would not
// help (normalisers decode %2E), and such a path could climb out of the template's prefix.
// Placeholders beyond `captures` expand to nothing; stray braces are copied (validate first).
std::optional<std::string> expand(std::string_view path_template,
                                  std::span<const std::string_view> captures);

}  // namespace sluice::mqtt

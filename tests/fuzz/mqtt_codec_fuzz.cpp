// libFuzzer target for the MQTT codec and topic filters: any bytes must yield packets or an error,
// never a crash, a hang, a leak or undefined behaviour. Each input is used two ways:
//   1. as the byte stream of one client connection, decoded packet after packet in each starting
//      state (before CONNECT, 3.1.1, 5.0) and with two packet-size limits. Every decoded packet is
//      re-encoded, decoded again and must come back equal, and encode to the same bytes again;
//   2. split at the first '\n' into a topic filter and a topic: compile() must agree with
//      valid_topic_filter(), match() with a naive split-based matcher, and expand() must yield
//      only safe path bytes, refusing exactly the captures that hold a "." or ".." level.
//
//   clang++ -std=c++20 -fsanitize=fuzzer,address,undefined -Isrc tests/fuzz/mqtt_codec_fuzz.cpp \
//     src/mqtt/*.cpp -lfmt -o /tmp/mqttfuzz
//   mkdir -p /tmp/mqttcorpus && /tmp/mqttfuzz -max_total_time=60 /tmp/mqttcorpus \
//     tests/fuzz/corpus/mqtt_codec
//
// (libFuzzer writes new inputs into the first directory it is given: keep the seeds second.)
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "mqtt/codec.h"
#include "mqtt/topic.h"

namespace {

using namespace sluice::mqtt;

void check(bool ok) {
  if (!ok) __builtin_trap();
}

// encode -> decode must give `packet` back; encoding that must give the same bytes again.
void round_trip(const Packet& packet, std::optional<Version> state, size_t original_size) {
  const auto* connect = std::get_if<Connect>(&packet);
  const Version version = connect != nullptr ? connect->version : *state;
  std::string wire;
  check(encode(packet, version, wire) == EncodeError::None);  // all that decodes can be encoded
  check(wire.size() <= original_size);  // the encoders choose the shortest forms
  std::vector<uint8_t> bytes;
  check(encode(packet, version, bytes) == EncodeError::None);
  check(std::string_view(reinterpret_cast<const char*>(bytes.data()), bytes.size()) == wire);

  const DecodeResult again =
      decode(wire, DecodeOptions{.version = state, .max_packet_size = 268'435'460});
  check(again.status == DecodeStatus::Done);
  check(again.consumed == wire.size());
  check(again.packet == packet);
  std::string wire2;
  check(encode(again.packet, version, wire2) == EncodeError::None);
  check(wire2 == wire);
}

void decode_stream(std::string_view input, std::optional<Version> version, uint32_t max_size) {
  DecodeOptions options{.version = version, .max_packet_size = max_size};
  std::string_view rest = input;
  while (true) {
    const DecodeResult r = decode(rest, options);
    const FixedHeaderResult h = decode_fixed_header(rest, options);
    switch (r.status) {
      case DecodeStatus::NeedMore:
        check(r.error == DecodeError::None && r.consumed == 0);
        check(h.status != DecodeStatus::Error);
        if (r.needed != 0) {
          check(h.status == DecodeStatus::Done);
          check(rest.size() + r.needed == h.header.packet_size());
        }
        return;
      case DecodeStatus::Error:
        check(r.error != DecodeError::None && r.consumed == 0);
        check(!describe(r.error).empty() && r.reason() != ReasonCode::Success);
        return;
      case DecodeStatus::Done:
        break;
    }
    check(r.error == DecodeError::None);
    check(h.status == DecodeStatus::Done && h.header.packet_size() == r.consumed);
    check(r.consumed >= 2 && r.consumed <= rest.size() && r.consumed <= max_size);
    // Any strict prefix of a whole packet is incomplete, not wrong.
    check(decode(rest.substr(0, r.consumed - 1), options).status == DecodeStatus::NeedMore);
    round_trip(r.packet, options.version, r.consumed);
    if (const auto* connect = std::get_if<Connect>(&r.packet)) options.version = connect->version;
    rest.remove_prefix(r.consumed);
  }
}

std::vector<std::string_view> split_levels(std::string_view s) {
  std::vector<std::string_view> levels;
  size_t start = 0;
  while (true) {
    const size_t slash = s.find('/', start);
    levels.push_back(s.substr(start, slash == std::string_view::npos ? slash : slash - start));
    if (slash == std::string_view::npos) return levels;
    start = slash + 1;
  }
}

// The matching rules written the obvious way, as an oracle.
std::optional<std::vector<std::string>> naive_match(std::string_view filter,
                                                    std::string_view topic) {
  const std::vector<std::string_view> f = split_levels(filter);
  const std::vector<std::string_view> t = split_levels(topic);
  if (topic.starts_with('$') && (f[0] == "+" || f[0] == "#")) return std::nullopt;
  std::vector<std::string> captures;
  for (size_t i = 0; i < f.size(); ++i) {
    if (f[i] == "#") {
      std::string rest;
      for (size_t j = i; j < t.size(); ++j) {
        if (j > i) rest += '/';
        rest += t[j];
      }
      captures.push_back(rest);
      return captures;
    }
    if (i >= t.size()) return std::nullopt;
    if (f[i] == "+") {
      captures.emplace_back(t[i]);
    } else if (f[i] != t[i]) {
      return std::nullopt;
    }
  }
  if (f.size() != t.size()) return std::nullopt;
  return captures;
}

bool is_hex_upper(char c) { return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'F'); }

void check_topics(std::string_view filter_text, std::string_view topic) {
  const auto compiled = TopicFilter::compile(filter_text);
  const auto* filter = std::get_if<TopicFilter>(&compiled);
  check((filter != nullptr) == valid_topic_filter(filter_text));
  if (filter == nullptr) {
    check(!std::get<std::string>(compiled).empty());
    return;
  }
  check(filter->text() == filter_text);
  const auto captures = filter->match(topic);
  check(captures.has_value() == filter->matches(topic));
  const auto expected = naive_match(filter_text, topic);
  check(captures.has_value() == expected.has_value());
  if (!captures) return;
  check(captures->size() == filter->wildcards() && captures->size() == expected->size());
  for (size_t i = 0; i < captures->size(); ++i) {
    const std::string_view c = (*captures)[i];
    check(c == (*expected)[i]);
    check(c.data() >= topic.data() && c.data() + c.size() <= topic.data() + topic.size());
  }

  // "/t/{1}/{2}/...": each capture is whole path segments, so a dot segment can only come from
  // a capture level "." or "..".
  std::string path_template = "/t";
  bool dot_level = false;
  const size_t used = std::min<size_t>(captures->size(), 9);
  for (size_t i = 0; i < used; ++i) {
    path_template += "/{" + std::to_string(i + 1) + "}";
    for (std::string_view level : split_levels((*captures)[i])) {
      dot_level = dot_level || level == "." || level == "..";
    }
  }
  check(!validate_path_template(path_template, captures->size()).has_value());
  const std::optional<std::string> path = expand(path_template, *captures);
  check(path.has_value() == !dot_level);
  if (!path) return;
  check(path->starts_with("/t"));
  for (size_t i = 0; i < path->size(); ++i) {
    const char c = (*path)[i];
    const bool plain = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                       c == '-' || c == '.' || c == '_' || c == '~' || c == '/';
    if (plain) continue;
    check(c == '%' && i + 2 < path->size() && is_hex_upper((*path)[i + 1]) &&
          is_hex_upper((*path)[i + 2]));
    i += 2;
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);

  // 1. A client's byte stream.
  for (const std::optional<Version> version :
       {std::optional<Version>(), std::optional(Version::V311), std::optional(Version::V5)}) {
    decode_stream(input, version, 1024 * 1024);
    decode_stream(input, version, 40);
  }

  // 2. filter '\n' topic.
  if (const size_t newline = input.find('\n'); newline != std::string_view::npos) {
    check_topics(input.substr(0, newline), input.substr(newline + 1));
  }
  return 0;
}

// libFuzzer target for the XML <-> JSON body transforms: any bytes, read both as XML and as JSON,
// must yield a Result, never a crash, a hang, a leak or an escaped exception. What converts must
// also round-trip (docs/transform.md):
//   1. as XML: the JSON parses, holds one key, and json_to_xml takes it back; that XML converts
//      to the same JSON text again and writes the same XML again (xml -> json -> xml -> json);
//   2. as JSON: the XML starts with the declaration and converts back to JSON, which writes the
//      very same XML (json_to_xml's output is a fixpoint).
// Small limits (depth 16, 256 KB of output) so that the limit paths are reached too.
//
//   cmake --preset fuzz && cmake --build build/fuzz --target xml_json_fuzz
//   mkdir -p /tmp/xmljsoncorpus
//   build/fuzz/xml_json_fuzz -max_total_time=60 /tmp/xmljsoncorpus tests/fuzz/corpus/xml_json
//
// (libFuzzer writes new inputs into the first directory it is given: keep the seeds second.)
#include <boost/json.hpp>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "transform/xml_json.h"

namespace {

using namespace sluice::transform;

constexpr Limits k_limits{.max_output = 256 << 10, .max_depth = 16};
// For the way back: the same depth, room for any output.
constexpr Limits k_roomy{.max_output = 64 << 20, .max_depth = 16};

// A Result is either a body or a failure with a message, never both or neither.
Result check(Result r) {
  if (r.ok() != r.error.empty()) __builtin_trap();
  if (r.ok() == r.body.empty()) __builtin_trap();
  if (!r.ok() && failure_name(r.failure).empty()) __builtin_trap();
  return r;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);

  // 1. The bytes as XML.
  if (const Result json = check(xml_to_json(input, k_limits)); json.ok()) {
    if (json.body.size() > k_limits.max_output) __builtin_trap();
    boost::json::error_code ec;
    const boost::json::value parsed = boost::json::parse(json.body, ec);
    if (ec || !parsed.is_object() || parsed.get_object().size() != 1) __builtin_trap();
    const Result xml = check(json_to_xml(json.body, k_roomy));
    if (!xml.ok()) __builtin_trap();
    const Result json2 = check(xml_to_json(xml.body, k_roomy));
    if (!json2.ok() || json2.body != json.body) __builtin_trap();
    if (check(json_to_xml(json2.body, k_roomy)).body != xml.body) __builtin_trap();
  }

  // 2. The bytes as JSON.
  if (const Result xml = check(json_to_xml(input, k_limits)); xml.ok()) {
    if (xml.body.size() > k_limits.max_output) __builtin_trap();
    if (!xml.body.starts_with(R"(<?xml version="1.0" encoding="UTF-8"?><)")) __builtin_trap();
    const Result json = check(xml_to_json(xml.body, k_roomy));
    if (!json.ok()) __builtin_trap();
    if (check(json_to_xml(json.body, k_roomy)).body != xml.body) __builtin_trap();
  }
  return 0;
}

// XML <-> JSON body conversion for a route's `transform: {request: ..., response: ...}` option.
//
//   // Per exchange, on the worker thread that holds the (complete, buffered) body:
//   transform::Result r = transform::xml_to_json(body, transform::Limits{});
//   if (!r.ok()) {
//     log("transform failed: {} ({})", r.error, transform::failure_name(r.failure));
//     return reply(request_side ? 400 : 502);  // 413 for a request's Failure::TooLarge
//   }
//   headers.set("content-type", "application/json");   // content_type(Conversion::XmlToJson)
//   body = std::move(r.body);
//
// The convention ("BadgerFish-lite": "@" attributes, "#text" text, repeated elements as arrays,
// every leaf a string) is written down with examples in docs/transform.md; in short:
//
//   <order id="7"><item>a</item><item>b</item></order>  <->  {"order":{"@id":"7","item":["a","b"]}}
//
// Round trips: xml_to_json's output is always accepted by json_to_xml, which gives it back
// unchanged (xml -> json -> xml -> json yields the same JSON text); a JSON document in the
// canonical form described in docs/transform.md (string leaves, arrays of two or more entries,
// no empty "#text") survives json -> xml -> json as the same JSON value.
//
// Security and resources:
// - No DTDs: any DOCTYPE is refused, so there are no entity declarations, no external entities
//   (XXE) and no entity expansion (billion laughs). Only UTF-8 (or US-ASCII) XML is accepted.
// - Limits::max_depth bounds element nesting on either side, before any recursion goes deeper;
//   Limits::max_output bounds the converted body: conversion stops as soon as it is exceeded.
// - Memory and time are linear in the input: the parsed document (pugixml's tree or a Boost.JSON
//   value), for xml_to_json also the JSON value, and the output.
// - Never throws (both parsers run with error codes), std::bad_alloc aside. Stateless: any
//   number of threads may convert at once.
// - Result::error names the problem and where it is (XML: line and column; JSON: line and
//   column of a syntax error, or the JSON Pointer of the offending value). Names and values from
//   the body appear in it at most 40 bytes long with control bytes escaped: safe to log.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

namespace sluice::transform {

struct Limits {
  size_t max_output = 10 << 20;  // bytes of converted body
  // Element nesting, the root element being depth 1, in the XML read or written; capped at
  // kMaxDepthCap, 0 is treated as 1. A JSON body may nest objects and arrays up to
  // 2 * max_depth + 2 deep (an array of repeated elements is one more level than XML shows).
  size_t max_depth = 64;
};

// Recursion bound whatever the configuration says: ~100 bytes of stack per level.
inline constexpr size_t kMaxDepthCap = 1000;

enum class Failure {
  None,
  Malformed,         // not well-formed XML / not valid JSON / not UTF-8
  Refused,           // well-formed but refused on principle: a DOCTYPE, a non-UTF-8 encoding
  NotRepresentable,  // valid JSON with no XML form: a key that is no XML name, an object as an
                     // attribute value, a character XML 1.0 cannot hold (U+0000 ...)
  TooDeep,           // nested deeper than Limits::max_depth
  TooLarge,          // the output would exceed Limits::max_output
};

// "malformed", "refused", "not_representable", "too_deep", "too_large" ("" for None): a metric
// label.
std::string_view failure_name(Failure failure);

struct Result {
  std::string body;  // the converted document when ok(), else empty
  Failure failure = Failure::None;
  std::string error;  // what and where, when !ok()

  bool ok() const { return failure == Failure::None; }
};

// XML (UTF-8, one root element) -> compact JSON text, `{"<root name>": ...}`.
Result xml_to_json(std::string_view xml, const Limits& limits);

// JSON (RFC 8259) -> `<?xml version="1.0" encoding="UTF-8"?>` + one compact element.
Result json_to_xml(std::string_view json, const Limits& limits);

// The values of the route option, `xml_to_json` and `json_to_xml`.
enum class Conversion { XmlToJson, JsonToXml };

std::optional<Conversion> parse_conversion(std::string_view name);
std::string_view conversion_name(Conversion conversion);
// The content-type of the converted body: "application/json" or "application/xml".
std::string_view content_type(Conversion conversion);
Result convert(Conversion conversion, std::string_view body, const Limits& limits);

}  // namespace sluice::transform

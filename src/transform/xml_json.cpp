// xml_to_json() reads with pugixml into a Boost.JSON value (in a monotonic arena) and serialises
// it in chunks; json_to_xml() parses with Boost.JSON and writes XML text straight into a string.
// The convention, the limits and the round-trip guarantees are in docs/transform.md.
#include "transform/xml_json.h"

#include <algorithm>
#include <array>
#include <boost/json.hpp>
#include <cctype>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <optional>
#include <pugixml.hpp>
#include <string>
#include <vector>

namespace sluice::transform {

namespace {

constexpr std::string_view kTextKey = "#text";
constexpr std::string_view kWrapElement = "root";  // a JSON top level that names no root element
constexpr std::string_view kItemElement = "item";  // an entry of an array directly in an array
constexpr std::string_view kDeclaration = R"(<?xml version="1.0" encoding="UTF-8"?>)";
constexpr std::string_view kUtf8Bom = "\xEF\xBB\xBF";
constexpr size_t kQuoteMax = 40;  // bytes of a body's name or value quoted in an error

size_t depth_limit(const Limits& limits) {
  return std::clamp<size_t>(limits.max_depth, 1, kMaxDepthCap);
}

// --- Characters and names ----------------------------------------------------------------------

constexpr uint32_t kBadUtf8 = 0xFFFFFFFF;

// Decodes the UTF-8 sequence at s[i] and moves i past it; kBadUtf8 (and i moved by one) for a
// malformed, truncated, overlong or surrogate sequence, or one beyond U+10FFFF.
uint32_t decode_utf8(std::string_view s, size_t& i) {
  const auto byte = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
  const unsigned char b0 = byte(i);
  if (b0 < 0x80) {
    ++i;
    return b0;
  }
  size_t len = 0;
  uint32_t c = 0;
  uint32_t min = 0;
  if ((b0 & 0xE0) == 0xC0) {
    len = 2, c = b0 & 0x1F, min = 0x80;
  } else if ((b0 & 0xF0) == 0xE0) {
    len = 3, c = b0 & 0x0F, min = 0x800;
  } else if ((b0 & 0xF8) == 0xF0) {
    len = 4, c = b0 & 0x07, min = 0x10000;
  } else {
    ++i;
    return kBadUtf8;
  }
  if (s.size() - i < len) {
    ++i;
    return kBadUtf8;
  }
  for (size_t k = 1; k < len; ++k) {
    if ((byte(i + k) & 0xC0) != 0x80) {
      ++i;
      return kBadUtf8;
    }
    c = (c << 6) | (byte(i + k) & 0x3F);
  }
  if (c < min || c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF)) {
    ++i;
    return kBadUtf8;
  }
  i += len;
  return c;
}

// XML 1.0 `Char`: what a document may contain at all, literally or as a character reference.
bool is_xml_char(uint32_t c) {
  return c == 0x9 || c == 0xA || c == 0xD || (c >= 0x20 && c <= 0xD7FF) ||
         (c >= 0xE000 && c <= 0xFFFD) || (c >= 0x10000 && c <= 0x10FFFF);
}

// XML 1.0 (fifth edition) `NameStartChar` and `NameChar`.
bool is_name_start(uint32_t c) {
  if (c < 0x80) return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':';
  return (c >= 0xC0 && c <= 0xD6) || (c >= 0xD8 && c <= 0xF6) || (c >= 0xF8 && c <= 0x2FF) ||
         (c >= 0x370 && c <= 0x37D) || (c >= 0x37F && c <= 0x1FFF) ||
         (c >= 0x200C && c <= 0x200D) || (c >= 0x2070 && c <= 0x218F) ||
         (c >= 0x2C00 && c <= 0x2FEF) || (c >= 0x3001 && c <= 0xD7FF) ||
         (c >= 0xF900 && c <= 0xFDCF) || (c >= 0xFDF0 && c <= 0xFFFD) ||
         (c >= 0x10000 && c <= 0xEFFFF);
}

bool is_name_char(uint32_t c) {
  return is_name_start(c) || c == '-' || c == '.' || (c >= '0' && c <= '9') || c == 0xB7 ||
         (c >= 0x300 && c <= 0x36F) || (c >= 0x203F && c <= 0x2040);
}

// The same rule both ways, so every name xml_to_json lets through, json_to_xml writes back.
bool is_xml_name(std::string_view s) {
  size_t i = 0;
  bool first = true;
  while (i < s.size()) {
    const uint32_t c = decode_utf8(s, i);
    if (c == kBadUtf8 || !(first ? is_name_start(c) : is_name_char(c))) return false;
    first = false;
  }
  return !first;
}

// 1 for the ASCII bytes that are XML characters (tab, LF, CR, 0x20-0x7F).
constexpr auto kAsciiXmlChar = [] {
  std::array<bool, 128> t{};
  for (size_t c = 0x20; c < 0x80; ++c) t[c] = true;
  t['\t'] = t['\n'] = t['\r'] = true;
  return t;
}();

struct BadChar {
  size_t offset = std::string_view::npos;  // npos: none
  uint32_t code_point = kBadUtf8;          // kBadUtf8: not UTF-8
};

// The first byte of `s` that starts no valid UTF-8 sequence or starts a character XML 1.0 does
// not allow.
BadChar find_bad_char(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    const auto b = static_cast<unsigned char>(s[i]);
    if (b < 0x80) {
      if (!kAsciiXmlChar[b]) return {i, b};
      ++i;
      continue;
    }
    const size_t at = i;
    const uint32_t c = decode_utf8(s, i);
    if (c == kBadUtf8 || !is_xml_char(c)) return {at, c};
  }
  return {};
}

std::string code_point_name(uint32_t c) {
  char buf[16];
  const int n = std::snprintf(buf, sizeof buf, "U+%04X", static_cast<unsigned>(c));
  return std::string(buf, static_cast<size_t>(n));
}

// A name or value from the body, for an error message: quoted, at most kQuoteMax bytes (cut at a
// character boundary), quotes, backslashes and control bytes escaped as \xNN.
std::string quoted(std::string_view s) {
  std::string q = "\"";
  for (size_t i = 0; i < s.size(); ++i) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (i >= kQuoteMax && (c & 0xC0) != 0x80) {
      q += "...";
      break;
    }
    if (c < 0x20 || c == 0x7F || c == '"' || c == '\\') {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02X", c);
      q += buf;
    } else {
      q += static_cast<char>(c);
    }
  }
  q += '"';
  return q;
}

// "line 3, column 7" (1-based, columns in characters) of byte `offset` of `text`.
std::string position(std::string_view text, size_t offset) {
  offset = std::min(offset, text.size());
  size_t line = 1;
  size_t column = 1;
  for (size_t i = 0; i < offset; ++i) {
    const auto c = static_cast<unsigned char>(text[i]);
    if (c == '\n') {
      ++line;
      column = 1;
    } else if ((c & 0xC0) != 0x80) {
      ++column;
    }
  }
  return "line " + std::to_string(line) + ", column " + std::to_string(column);
}

// --- XML -> JSON -------------------------------------------------------------------------------

// pugixml decodes character references without any check (&#0; would even cut a string short),
// so every "&#" must start a well-formed reference to an XML character. Checked everywhere,
// without regard to context: a literal "&#0;" inside a comment or a CDATA section is refused
// too, which only costs documents that are very odd already. Returns the offset of the first bad
// reference, or npos.
size_t find_bad_char_reference(std::string_view xml) {
  for (size_t at = xml.find("&#"); at != std::string_view::npos; at = xml.find("&#", at + 2)) {
    size_t i = at + 2;
    const bool hex = i < xml.size() && (xml[i] == 'x' || xml[i] == 'X');
    if (hex) ++i;
    uint32_t value = 0;
    size_t digits = 0;
    for (; i < xml.size(); ++i, ++digits) {
      const char c = xml[i];
      uint32_t d = 0;
      if (c >= '0' && c <= '9') {
        d = static_cast<uint32_t>(c - '0');
      } else if (hex && c >= 'a' && c <= 'f') {
        d = static_cast<uint32_t>(c - 'a' + 10);
      } else if (hex && c >= 'A' && c <= 'F') {
        d = static_cast<uint32_t>(c - 'A' + 10);
      } else {
        break;
      }
      value = std::min<uint32_t>(value * (hex ? 16 : 10) + d, 0x110000);  // saturates
    }
    if (digits == 0 || i == xml.size() || xml[i] != ';' || !is_xml_char(value)) return at;
  }
  return std::string_view::npos;
}

// Whether a declared encoding is one whose bytes we read correctly as UTF-8.
bool is_utf8_label(std::string_view label) {
  const auto equals = [&](std::string_view name) {
    return label.size() == name.size() &&
           std::equal(label.begin(), label.end(), name.begin(), [](char a, char b) {
             return std::tolower(static_cast<unsigned char>(a)) == b;
           });
  };
  return equals("utf-8") || equals("utf8") || equals("us-ascii") || equals("ascii");
}

class XmlReader {
 public:
  XmlReader(std::string_view xml, size_t max_depth, boost::json::storage_ptr sp)
      : xml_(xml), max_depth_(max_depth), sp_(std::move(sp)) {}

  // The JSON value of element `e` at nesting `depth` (the root is 1); nullopt after a fail().
  std::optional<boost::json::value> element_value(pugi::xml_node e, size_t depth) {
    const std::string_view name = e.name();
    if (depth > max_depth_) {
      return fail(Failure::TooDeep, "element " + quoted(name) + " is nested deeper than " +
                                        std::to_string(max_depth_) + " elements" + at(e));
    }
    if (!is_xml_name(name)) {
      return fail(Failure::Malformed, "invalid element name " + quoted(name) + at(e));
    }

    // Text (all text and CDATA children, concatenated) and whether there are child elements.
    std::string_view text;
    std::string joined;  // used when there are several text nodes
    size_t text_nodes = 0;
    bool has_children = false;
    for (pugi::xml_node child = e.first_child(); child; child = child.next_sibling()) {
      const pugi::xml_node_type type = child.type();
      if (type == pugi::node_element) {
        has_children = true;
      } else if (type == pugi::node_pcdata || type == pugi::node_cdata) {
        const std::string_view value = child.value();
        if (++text_nodes == 1) {
          text = value;
        } else {
          if (text_nodes == 2) joined.assign(text);
          joined.append(value);
        }
      }
    }
    if (text_nodes > 1) text = joined;

    if (!has_children && !e.first_attribute()) return boost::json::string(text, sp_);

    boost::json::object object(sp_);
    for (pugi::xml_attribute a = e.first_attribute(); a; a = a.next_attribute()) {
      const std::string_view attribute = a.name();
      if (!is_xml_name(attribute)) {
        return fail(Failure::Malformed, "invalid attribute name " + quoted(attribute) + at(e));
      }
      key_.assign("@").append(attribute);
      if (!object.emplace(key_, boost::json::string(a.value(), sp_)).second) {
        return fail(Failure::Malformed, "duplicate attribute " + quoted(attribute) + at(e));
      }
    }
    if (!text.empty()) object.emplace(kTextKey, boost::json::string(text, sp_));
    for (pugi::xml_node child = e.first_child(); child; child = child.next_sibling()) {
      if (child.type() != pugi::node_element) continue;
      std::optional<boost::json::value> value = element_value(child, depth + 1);
      if (!value) return std::nullopt;
      // Repeated names collect into an array. An element's own value is never an array, so an
      // array found here is one made for an earlier sibling.
      const std::string_view child_name = child.name();
      const auto it = object.find(child_name);
      if (it == object.end()) {
        object.emplace(child_name, std::move(*value));
      } else if (boost::json::array* siblings = it->value().if_array()) {
        siblings->push_back(std::move(*value));
      } else {
        boost::json::array pair(sp_);
        pair.reserve(2);
        pair.push_back(std::move(it->value()));
        pair.push_back(std::move(*value));
        it->value() = std::move(pair);
      }
    }
    return object;
  }

  std::string at(pugi::xml_node node) const {
    const ptrdiff_t offset = node.offset_debug();
    if (offset < 0) return "";
    auto o = static_cast<size_t>(offset);
    // From the name back to the tag's start.
    if (node.type() == pugi::node_element && o >= 1 && xml_[o - 1] == '<') o -= 1;
    if (node.type() == pugi::node_declaration && o >= 2 && xml_.substr(o - 2, 2) == "<?") o -= 2;
    return " at " + position(xml_, o);
  }

  Result take_failure() {
    Result r;
    r.failure = failure_;
    r.error = std::move(error_);
    return r;
  }

 private:
  std::nullopt_t fail(Failure failure, std::string error) {
    failure_ = failure;
    error_ = std::move(error);
    return std::nullopt;
  }

  std::string_view xml_;
  size_t max_depth_;
  boost::json::storage_ptr sp_;
  std::string key_;  // scratch for "@" + attribute name
  Failure failure_ = Failure::None;
  std::string error_;
};

Result failed(Failure failure, std::string error) {
  Result r;
  r.failure = failure;
  r.error = std::move(error);
  return r;
}

// --- JSON -> XML -------------------------------------------------------------------------------

// Bytes that text (element content) copies as they are: ASCII XML characters but & < > and CR
// (a literal CR would come back as LF: XML normalises line ends).
constexpr auto kTextPlain = [] {
  std::array<bool, 128> t = kAsciiXmlChar;
  t['&'] = t['<'] = t['>'] = t['\r'] = false;
  return t;
}();

// In attribute values also " and tab and LF (which a parser would turn into spaces).
constexpr auto kAttributePlain = [] {
  std::array<bool, 128> t = kTextPlain;
  t['"'] = t['\t'] = t['\n'] = false;
  return t;
}();

std::string_view escape_of(char c) {
  switch (c) {
    case '&':
      return "&amp;";
    case '<':
      return "&lt;";
    case '>':
      return "&gt;";
    case '"':
      return "&quot;";
    case '\t':
      return "&#9;";
    case '\n':
      return "&#10;";
    case '\r':
      return "&#13;";
    case ' ':
      return "&#32;";
    default:
      return {};
  }
}

bool is_xml_space(std::string_view s) {
  return std::all_of(s.begin(), s.end(),
                     [](char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; });
}

// Appends XML to `out`. A failing step records the failure, and each level it returns through
// adds its key or index, which take_failure() turns into the JSON Pointer of the culprit.
class XmlWriter {
 public:
  XmlWriter(std::string& out, const Limits& limits)
      : out_(out), max_depth_(depth_limit(limits)), max_output_(limits.max_output) {}

  // <name>...</name> for `value`, `name` being a valid XML name, at nesting `depth`.
  bool element(std::string_view name, const boost::json::value& value, size_t depth) {
    if (depth > max_depth_) {
      return fail(Failure::TooDeep,
                  "nested deeper than " + std::to_string(max_depth_) + " XML elements");
    }
    if (out_.size() > max_output_) return too_large();
    out_ += '<';
    out_ += name;
    switch (value.kind()) {
      case boost::json::kind::null:
        out_ += "/>";
        return true;
      case boost::json::kind::string: {
        const boost::json::string& s = value.get_string();
        if (s.empty()) {
          out_ += "/>";
          return true;
        }
        out_ += '>';
        if (!append_escaped(s, kTextPlain)) return false;
        break;
      }
      case boost::json::kind::bool_:
      case boost::json::kind::int64:
      case boost::json::kind::uint64:
      case boost::json::kind::double_:
        out_ += '>';
        if (!append_number(value)) return false;
        break;
      case boost::json::kind::array: {
        const boost::json::array& items = value.get_array();
        if (items.empty()) {
          out_ += "/>";
          return true;
        }
        out_ += '>';
        for (size_t i = 0; i < items.size(); ++i) {
          if (!element(kItemElement, items[i], depth + 1)) return unwind(i);
        }
        break;
      }
      case boost::json::kind::object:
        switch (object_content(value.get_object(), depth)) {
          case Content::Failed:
            return false;
          case Content::Empty:
            return out_.size() <= max_output_ || too_large();
          case Content::Open:
            break;
        }
        break;
    }
    out_ += "</";
    out_ += name;
    out_ += '>';
    return out_.size() <= max_output_ || too_large();
  }

  enum class Content { Failed, Empty, Open };

  // After the element's name: attributes, then "/>" (Empty) or ">", text and children (Open,
  // the end tag still to write).
  Content object_content(const boost::json::object& object, size_t depth) {
    const boost::json::value* text = nullptr;
    bool has_children = false;
    for (const auto& [key, value] : object) {
      if (key == kTextKey) {
        if (!value.is_null()) text = &value;
        continue;
      }
      if (!key.starts_with('@')) {
        // An empty array writes no element.
        has_children = has_children || !value.is_array() || !value.get_array().empty();
        continue;
      }
      const std::string_view name = std::string_view(key).substr(1);
      if (!is_xml_name(name)) {
        return failed_at(key, Failure::NotRepresentable,
                         quoted(name) + " is not a valid XML attribute name");
      }
      if (value.is_structured()) {
        return failed_at(key, Failure::NotRepresentable,
                         "attribute " + quoted(key) + " must be a string, number, boolean or null");
      }
      out_ += ' ';
      out_ += name;
      out_ += "=\"";
      if (value.is_string() ? !append_escaped(value.get_string(), kAttributePlain)
                            : !append_number(value)) {
        return failed_step(key);
      }
      out_ += '"';
    }
    if (text != nullptr && text->is_structured()) {
      return failed_at(kTextKey, Failure::NotRepresentable,
                       "\"#text\" must be a string, number, boolean or null");
    }
    const bool has_text = text != nullptr && !(text->is_string() && text->get_string().empty());
    if (!has_text && !has_children) {
      out_ += "/>";
      return Content::Empty;
    }
    out_ += '>';
    if (has_text) {
      if (!text->is_string()) {
        if (!append_number(*text)) return failed_step(kTextKey);
      } else if (has_children && is_xml_space(text->get_string())) {
        // A parser drops whitespace-only text beside elements: write it as references.
        for (char c : text->get_string()) out_ += escape_of(c);
      } else if (!append_escaped(text->get_string(), kTextPlain)) {
        return failed_step(kTextKey);
      }
    }
    if (!has_children) return Content::Open;
    for (const auto& [key, value] : object) {
      if (key == kTextKey || key.starts_with('@')) continue;
      if (!is_xml_name(key)) {
        return failed_at(key, Failure::NotRepresentable,
                         quoted(key) + " is not a valid XML element name");
      }
      if (const boost::json::array* siblings = value.if_array()) {
        for (size_t i = 0; i < siblings->size(); ++i) {
          if (!element(key, (*siblings)[i], depth + 1)) {
            unwind(i);
            return failed_step(key);
          }
        }
      } else if (!element(key, value, depth + 1)) {
        return failed_step(key);
      }
    }
    return Content::Open;
  }

  Content failed_at(std::string_view key, Failure failure, std::string error) {
    fail_at(key, failure, std::move(error));
    return Content::Failed;
  }
  Content failed_step(std::string_view key) {
    unwind(key);
    return Content::Failed;
  }

  bool append_escaped(std::string_view s, const std::array<bool, 128>& plain) {
    size_t run = 0;  // start of the bytes not yet copied
    size_t i = 0;
    while (i < s.size()) {
      const auto b = static_cast<unsigned char>(s[i]);
      if (b < 0x80 && plain[b]) {
        ++i;
        continue;
      }
      if (b >= 0x80) {
        const size_t at = i;
        const uint32_t c = decode_utf8(s, i);
        if (c == kBadUtf8 || !is_xml_char(c)) return bad_char(c, s, at);
        continue;
      }
      const std::string_view escape = escape_of(static_cast<char>(b));
      if (escape.empty()) return bad_char(b, s, i);
      out_.append(s.data() + run, i - run);
      out_ += escape;
      run = ++i;
    }
    out_.append(s.data() + run, s.size() - run);
    return true;
  }

  bool append_number(const boost::json::value& value) {
    char buf[64];
    std::to_chars_result r{buf, std::errc()};
    switch (value.kind()) {
      case boost::json::kind::bool_:
        out_ += value.get_bool() ? "true" : "false";
        return true;
      case boost::json::kind::int64:
        r = std::to_chars(buf, buf + sizeof buf, value.get_int64());
        break;
      case boost::json::kind::uint64:
        r = std::to_chars(buf, buf + sizeof buf, value.get_uint64());
        break;
      case boost::json::kind::double_:
        // The shortest text that reads back as the same double: 1.50 -> 1.5, 1e2 -> 100.
        if (!std::isfinite(value.get_double())) {
          return fail(Failure::NotRepresentable, "number out of range");
        }
        r = std::to_chars(buf, buf + sizeof buf, value.get_double());
        break;
      default:  // null
        return true;
    }
    out_.append(buf, static_cast<size_t>(r.ptr - buf));
    return true;
  }

  bool bad_char(uint32_t c, std::string_view s, size_t at) {
    size_t from = at > 10 ? at - 10 : 0;  // some context, from a character boundary
    while (from > 0 && (static_cast<unsigned char>(s[from]) & 0xC0) == 0x80) --from;
    std::string error = c == kBadUtf8 ? std::string("invalid UTF-8")
                                      : code_point_name(c) + " (which XML 1.0 cannot represent)";
    error += " in string " + quoted(s.substr(from));
    return fail(Failure::NotRepresentable, std::move(error));
  }

  bool too_large() {
    return fail(Failure::TooLarge,
                "XML output exceeds max_output (" + std::to_string(max_output_) + " bytes)");
  }

  bool fail(Failure failure, std::string error) {
    failure_ = failure;
    error_ = std::move(error);
    return false;
  }

  bool fail_at(std::string_view key, Failure failure, std::string error) {
    fail(failure, std::move(error));
    return unwind(key);
  }

  // Records one step of the failed value's location while the recursion unwinds.
  bool unwind(std::string_view key) {
    path_.emplace_back(key);
    return false;
  }
  bool unwind(size_t index) {
    path_.push_back(std::to_string(index));
    return false;
  }
  Result take_failure() {
    Result r;
    r.failure = failure_;
    r.error = std::move(error_);
    if (!path_.empty() && failure_ != Failure::TooLarge) {  // where the output ran out: moot
      std::string pointer;                                  // RFC 6901, ~ and / escaped
      for (auto it = path_.rbegin(); it != path_.rend(); ++it) {
        pointer += '/';
        for (char c : *it) {
          if (c == '~') {
            pointer += "~0";
          } else if (c == '/') {
            pointer += "~1";
          } else {
            pointer += c;
          }
        }
      }
      r.error += " at " + quoted(pointer);
    }
    return r;
  }

 private:
  std::string& out_;
  size_t max_depth_;
  size_t max_output_;
  Failure failure_ = Failure::None;
  std::string error_;
  std::vector<std::string> path_;  // innermost first
};

}  // namespace

std::string_view failure_name(Failure failure) {
  switch (failure) {
    case Failure::None:
      return "";
    case Failure::Malformed:
      return "malformed";
    case Failure::Refused:
      return "refused";
    case Failure::NotRepresentable:
      return "not_representable";
    case Failure::TooDeep:
      return "too_deep";
    case Failure::TooLarge:
      return "too_large";
  }
  return "unknown";
}

Result xml_to_json(std::string_view xml, const Limits& limits) {
  if (xml.starts_with(kUtf8Bom)) xml.remove_prefix(kUtf8Bom.size());
  if (const BadChar bad = find_bad_char(xml); bad.offset != std::string_view::npos) {
    return failed(
        Failure::Malformed,
        (bad.code_point == kBadUtf8 ? std::string("invalid UTF-8 (only UTF-8 XML is supported)")
                                    : code_point_name(bad.code_point) + " is not allowed in XML") +
            " at " + position(xml, bad.offset));
  }
  if (const size_t at = find_bad_char_reference(xml); at != std::string_view::npos) {
    const size_t end = xml.find_first_of(";<", at);
    return failed(Failure::Malformed,
                  "character reference " + quoted(xml.substr(at, end - at + 1)) +
                      " is malformed or not an XML character at " + position(xml, at));
  }

  // Fragment mode so that text outside the root element is seen (and refused) rather than
  // skipped; comments and processing instructions are not kept.
  constexpr unsigned kOptions = pugi::parse_cdata | pugi::parse_escapes |
                                pugi::parse_wconv_attribute | pugi::parse_eol |
                                pugi::parse_ws_pcdata_single | pugi::parse_declaration |
                                pugi::parse_doctype | pugi::parse_fragment;
  pugi::xml_document doc;
  const pugi::xml_parse_result parsed =
      doc.load_buffer(xml.data(), xml.size(), kOptions, pugi::encoding_utf8);
  if (!parsed) {
    std::string what = parsed.description();
    if (!what.empty())
      what[0] = static_cast<char>(std::tolower(static_cast<unsigned char>(what[0])));
    return failed(Failure::Malformed, "malformed XML (" + what + ") at " +
                                          position(xml, static_cast<size_t>(parsed.offset)));
  }

  boost::json::monotonic_resource memory;
  XmlReader reader(xml, depth_limit(limits), &memory);
  pugi::xml_node root;
  for (pugi::xml_node node = doc.first_child(); node; node = node.next_sibling()) {
    switch (node.type()) {
      case pugi::node_declaration:
        if (const pugi::xml_attribute encoding = node.attribute("encoding");
            encoding && !is_utf8_label(encoding.value())) {
          return failed(Failure::Refused, "encoding " + quoted(encoding.value()) +
                                              " is not supported (only UTF-8)" + reader.at(node));
        }
        break;
      case pugi::node_doctype: {
        const auto offset = static_cast<size_t>(std::max<ptrdiff_t>(node.offset_debug(), 0));
        const size_t start = xml.rfind("<!DOCTYPE", offset);
        return failed(Failure::Refused,
                      "DOCTYPE is not allowed (no DTDs, no entity declarations) at " +
                          position(xml, start == std::string_view::npos ? offset : start));
      }
      case pugi::node_element:
        if (root) {
          return failed(Failure::Malformed, "more than one root element" + reader.at(node));
        }
        root = node;
        break;
      case pugi::node_pcdata:
      case pugi::node_cdata:
        return failed(Failure::Malformed, "text outside the root element" + reader.at(node));
      default:
        break;
    }
  }
  if (!root) return failed(Failure::Malformed, "no root element");

  boost::json::object top(&memory);
  {
    std::optional<boost::json::value> value = reader.element_value(root, 1);
    if (!value) return reader.take_failure();
    top.emplace(root.name(), std::move(*value));
  }
  const boost::json::value document(std::move(top), &memory);

  // Serialised in chunks so that an oversized output stops at max_output.
  Result r;
  std::string& out = r.body;
  out.reserve(std::min(limits.max_output, xml.size() + xml.size() / 4) + 64);
  boost::json::serializer serializer;
  serializer.reset(&document);
  constexpr size_t kChunk = 32 << 10;
  while (!serializer.done()) {
    const size_t used = out.size();
    out.resize(used + kChunk);
    const std::string_view written = serializer.read(out.data() + used, kChunk);
    out.resize(used + written.size());
    if (out.size() > limits.max_output) {
      return failed(Failure::TooLarge, "JSON output exceeds max_output (" +
                                           std::to_string(limits.max_output) + " bytes)");
    }
  }
  return r;
}

Result json_to_xml(std::string_view json, const Limits& limits) {
  const size_t max_depth = depth_limit(limits);
  boost::json::monotonic_resource memory;
  boost::json::parse_options options;
  options.max_depth = 2 * max_depth + 2;  // an array of repeated elements is a level of its own
  boost::json::parser parser(boost::json::storage_ptr(), options);
  parser.reset(&memory);
  boost::json::error_code ec;
  const size_t consumed = parser.write(json.data(), json.size(), ec);
  if (ec) {
    const bool too_deep = ec == boost::json::error::too_deep;
    return failed(too_deep ? Failure::TooDeep : Failure::Malformed,
                  "invalid JSON (" + ec.message() +
                      (too_deep ? ", limit " + std::to_string(options.max_depth) : "") + ") at " +
                      position(json, consumed));
  }
  const boost::json::value document = parser.release();

  Result r;
  std::string& out = r.body;
  out.reserve(std::min(limits.max_output, json.size() + json.size() / 2) + 64);
  out += kDeclaration;
  XmlWriter writer(out, limits);

  // {"name": <not an array>} names the root element; anything else is the content of <root>.
  const boost::json::object* object = document.if_object();
  bool ok = false;
  if (object != nullptr && object->size() == 1 && !object->begin()->value().is_array() &&
      !object->begin()->key().starts_with('@') && object->begin()->key() != kTextKey) {
    const std::string_view name = object->begin()->key();
    if (!is_xml_name(name)) {
      ok = writer.fail_at(name, Failure::NotRepresentable,
                          quoted(name) + " is not a valid XML element name");
    } else {
      ok = writer.element(name, object->begin()->value(), 1) || writer.unwind(name);
    }
  } else {
    ok = writer.element(kWrapElement, document, 1);
  }
  if (!ok) return writer.take_failure();
  return r;
}

std::optional<Conversion> parse_conversion(std::string_view name) {
  if (name == "xml_to_json") return Conversion::XmlToJson;
  if (name == "json_to_xml") return Conversion::JsonToXml;
  return std::nullopt;
}

std::string_view conversion_name(Conversion conversion) {
  return conversion == Conversion::XmlToJson ? "xml_to_json" : "json_to_xml";
}

std::string_view content_type(Conversion conversion) {
  return conversion == Conversion::XmlToJson ? "application/json" : "application/xml";
}

Result convert(Conversion conversion, std::string_view body, const Limits& limits) {
  return conversion == Conversion::XmlToJson ? xml_to_json(body, limits)
                                             : json_to_xml(body, limits);
}

}  // namespace sluice::transform

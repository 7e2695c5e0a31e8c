// Topic validation, TopicFilter matching and path templates.
#include "mqtt/topic.h"

#include <algorithm>

#include <fmt/format.h>

#include "mqtt/codec.h"

namespace sluice::mqtt {
namespace {

constexpr size_t k_max_topic = 65'535;

// Why `filter` is not a valid topic filter, or an empty view if it is.
std::string_view filter_problem(std::string_view filter) {
  if (filter.empty()) return "is empty";
  if (filter.size() > k_max_topic) return "is longer than 65535 bytes";
  if (!valid_utf8(filter)) return "is not valid UTF-8 (or holds U+0000)";
  size_t level_start = 0;
  for (size_t i = 0; i <= filter.size(); ++i) {
    if (i < filter.size() && filter[i] != '/') continue;
    const std::string_view level = filter.substr(level_start, i - level_start);
    if (level.size() > 1 && level.find('+') != std::string_view::npos) {
      return "has a '+' that is not alone in its level";
    }
    if (level.size() > 1 && level.find('#') != std::string_view::npos) {
      return "has a '#' that is not alone in its level";
    }
    if (level == "#" && i != filter.size()) return "has a '#' that is not its last level";
    level_start = i + 1;
  }
  return {};
}

bool unreserved(unsigned char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
         c == '.' || c == '_' || c == '~';
}

// A "{N}" placeholder at text[pos] ('{'): N (digits, so possibly 0 or huge: the callers judge)
// and the placeholder's length, or nullopt if text[pos] does not start one.
struct Placeholder {
  size_t index;
  size_t length;
  bool leading_zero;
};
std::optional<Placeholder> placeholder_at(std::string_view text, size_t pos) {
  size_t i = pos + 1;
  size_t index = 0;
  while (i < text.size() && text[i] >= '0' && text[i] <= '9') {
    // Saturate: anything this large is out of range for any filter.
    index = index > 1'000'000 ? index : index * 10 + static_cast<size_t>(text[i] - '0');
    ++i;
  }
  if (i == pos + 1 || i >= text.size() || text[i] != '}') return std::nullopt;
  return Placeholder{index, i + 1 - pos, text[pos + 1] == '0'};
}

// Whether the path part (before any '?') of `path` has a "." or ".." segment.
bool has_dot_segment(std::string_view path) {
  path = path.substr(0, path.find('?'));
  size_t start = 0;
  while (start <= path.size()) {
    size_t end = path.find('/', start);
    if (end == std::string_view::npos) end = path.size();
    const std::string_view segment = path.substr(start, end - start);
    if (segment == "." || segment == "..") return true;
    start = end + 1;
  }
  return false;
}

}  // namespace

bool valid_topic_name(std::string_view topic) {
  return !topic.empty() && topic.size() <= k_max_topic &&
         topic.find_first_of("+#") == std::string_view::npos && valid_utf8(topic);
}

bool valid_topic_filter(std::string_view filter) { return filter_problem(filter).empty(); }

std::variant<TopicFilter, std::string> TopicFilter::compile(std::string_view filter) {
  if (const std::string_view problem = filter_problem(filter); !problem.empty()) {
    return fmt::format("topic filter \"{}\" {}", filter, problem);
  }
  TopicFilter compiled;
  compiled.text_ = std::string(filter);
  size_t level_start = 0;
  for (size_t i = 0; i <= filter.size(); ++i) {
    if (i < filter.size() && filter[i] != '/') continue;
    const std::string_view level = filter.substr(level_start, i - level_start);
    Level l{LevelKind::Literal, static_cast<uint32_t>(level_start),
            static_cast<uint32_t>(level.size())};
    if (level == "+") l.kind = LevelKind::SingleLevel;
    if (level == "#") l.kind = LevelKind::MultiLevel;
    if (l.kind != LevelKind::Literal) ++compiled.wildcards_;
    compiled.levels_.push_back(l);
    level_start = i + 1;
  }
  return compiled;
}

bool TopicFilter::match_into(std::string_view topic,
                             std::vector<std::string_view>* captures) const {
  if (levels_.empty()) return false;  // only a moved-from filter
  // [MQTT-4.7.2-1]: "$SYS/..." and the like are not matched by "#" or "+/...".
  if (topic.starts_with('$') && levels_.front().kind != LevelKind::Literal) return false;
  // `pos` is where the topic's next level starts; pos > topic.size() once every level is used.
  size_t pos = 0;
  for (const Level& level : levels_) {
    if (level.kind == LevelKind::MultiLevel) {
      // Also matches the parent level alone: "sport/#" matches "sport" (capture "").
      if (captures) captures->push_back(topic.substr(std::min(pos, topic.size())));
      return true;
    }
    if (pos > topic.size()) return false;
    size_t end = topic.find('/', pos);
    if (end == std::string_view::npos) end = topic.size();
    const std::string_view segment = topic.substr(pos, end - pos);
    if (level.kind == LevelKind::SingleLevel) {
      if (captures) captures->push_back(segment);
    } else if (segment != std::string_view(text_).substr(level.offset, level.length)) {
      return false;
    }
    pos = end + 1;
  }
  return pos > topic.size();
}

std::optional<std::vector<std::string_view>> TopicFilter::match(std::string_view topic) const {
  std::vector<std::string_view> captures;
  captures.reserve(wildcards_);
  if (!match_into(topic, &captures)) return std::nullopt;
  return captures;
}

bool TopicFilter::matches(std::string_view topic) const { return match_into(topic, nullptr); }

std::optional<std::string> validate_path_template(std::string_view path_template,
                                                  size_t wildcards) {
  for (size_t i = 0; i < path_template.size(); ++i) {
    if (path_template[i] == '}') {
      return fmt::format("path template \"{}\" has a '}}' without its '{{'", path_template);
    }
    if (path_template[i] != '{') continue;
    const std::optional<Placeholder> p = placeholder_at(path_template, i);
    if (!p) {
      return fmt::format(
          "path template \"{}\" has a '{{' that does not start a placeholder {{N}} (N = 1, 2 ...)",
          path_template);
    }
    if (p->index == 0 || p->leading_zero || p->index > wildcards) {
      return fmt::format("path template \"{}\" uses {} but its topic filter has {} wildcard(s)",
                         path_template, path_template.substr(i, p->length), wildcards);
    }
    i += p->length - 1;
  }
  if (has_dot_segment(path_template)) {
    return fmt::format("path template \"{}\" has a \".\" or \"..\" segment", path_template);
  }
  return std::nullopt;
}

std::optional<std::string> expand(std::string_view path_template,
                                  std::span<const std::string_view> captures) {
  static constexpr char k_hex[] = "0123456789ABCDEF";
  std::string out;
  size_t capture_bytes = 0;
  for (std::string_view c : captures) capture_bytes += c.size();
  out.reserve(path_template.size() + capture_bytes);
  for (size_t i = 0; i < path_template.size(); ++i) {
    const std::optional<Placeholder> p =
        path_template[i] == '{' ? placeholder_at(path_template, i) : std::nullopt;
    if (!p) {
      out.push_back(path_template[i]);
      continue;
    }
    if (p->index >= 1 && p->index <= captures.size()) {
      for (char ch : captures[p->index - 1]) {
        const auto c = static_cast<unsigned char>(ch);
        if (unreserved(c) || c == '/') {
          out.push_back(ch);
        } else {
          out.push_back('%');
          out.push_back(k_hex[c >> 4]);
          out.push_back(k_hex[c & 0x0F]);
        }
      }
    }
    i += p->length - 1;
  }
  if (has_dot_segment(out)) return std::nullopt;
  return out;
}

}  // namespace sluice::mqtt

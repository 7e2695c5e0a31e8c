#include "config/values.h"

#include <arpa/inet.h>

#include <algorithm>
#include <cstdlib>
#include <limits>
#include <vector>

namespace sluice::config {

std::optional<uint64_t> parse_uint(std::string_view text) {
  if (text.empty()) return std::nullopt;
  uint64_t value = 0;
  for (char c : text) {
    if (c < '0' || c > '9') return std::nullopt;
    auto digit = static_cast<uint64_t>(c - '0');
    if (value > (std::numeric_limits<uint64_t>::max() - digit) / 10) return std::nullopt;
    value = value * 10 + digit;
  }
  return value;
}

std::string to_lower(std::string_view text) {
  std::string out(text);
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return out;
}

std::string to_upper(std::string_view text) {
  std::string out(text);
  for (char& c : out) {
    if (c >= 'a' && c <= 'z') c = static_cast<char>(c - 'a' + 'A');
  }
  return out;
}

namespace {

bool is_alnum(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

bool is_tchar(char c) {
  if (is_alnum(c)) return true;
  switch (c) {
    case '!':
    case '#':
    case '$':
    case '%':
    case '&':
    case '\'':
    case '*':
    case '+':
    case '-':
    case '.':
    case '^':
    case '_':
    case '`':
    case '|':
    case '~':
      return true;
    default:
      return false;
  }
}

// Levenshtein distance; words longer than a key ever is are simply "far".
size_t edit_distance(std::string_view a, std::string_view b) {
  constexpr size_t k_max_len = 64;
  if (a.size() > k_max_len || b.size() > k_max_len) return k_max_len;
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diagonal = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      size_t above = row[j];
      size_t substitute = diagonal + (a[i - 1] == b[j - 1] ? 0 : 1);
      row[j] = std::min({above + 1, row[j - 1] + 1, substitute});
      diagonal = above;
    }
  }
  return row[b.size()];
}

// Lower is closer; nullopt when not close enough for a hint.
std::optional<size_t> closeness(std::string_view word, std::string_view candidate) {
  std::string lower_word = to_lower(word);
  std::string lower_candidate = to_lower(candidate);
  size_t distance = edit_distance(lower_word, lower_candidate);
  if (distance <= 2) return distance;
  std::string_view shorter =
      lower_word.size() < lower_candidate.size() ? lower_word : lower_candidate;
  std::string_view longer =
      lower_word.size() < lower_candidate.size() ? lower_candidate : lower_word;
  if (shorter.size() >= 3 && longer.starts_with(shorter)) return 3;
  return std::nullopt;
}

template <typename Candidates>
std::optional<size_t> closest_index(std::string_view word, const Candidates& candidates) {
  std::optional<size_t> best;
  size_t best_score = 0;
  for (size_t i = 0; i < candidates.size(); ++i) {
    if (candidates[i] == word) continue;
    auto score = closeness(word, candidates[i]);
    if (score && (!best || *score < best_score)) {
      best = i;
      best_score = *score;
    }
  }
  return best;
}

}  // namespace

bool is_token(std::string_view text) {
  return !text.empty() && std::all_of(text.begin(), text.end(), is_tchar);
}

bool is_object_name(std::string_view text) {
  return !text.empty() && std::all_of(text.begin(), text.end(), [](char c) {
    return is_alnum(c) || c == '_' || c == '.' || c == '-';
  });
}

bool is_consumer_name(std::string_view text) {
  return !text.empty() && std::all_of(text.begin(), text.end(), [](char c) {
    return is_alnum(c) || c == '_' || c == '.' || c == '-' || c == '@';
  });
}

bool is_hex(std::string_view text) {
  return !text.empty() && std::all_of(text.begin(), text.end(), [](char c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
  });
}

std::optional<std::string_view> closest(std::string_view word,
                                        std::span<const std::string_view> candidates) {
  auto index = closest_index(word, candidates);
  if (!index) return std::nullopt;
  return candidates[*index];
}

std::optional<std::string> closest(std::string_view word, std::span<const std::string> candidates) {
  auto index = closest_index(word, candidates);
  if (!index) return std::nullopt;
  return candidates[*index];
}

std::string did_you_mean(const std::optional<std::string_view>& hint) {
  if (!hint) return "";
  return " (did you mean '" + std::string(*hint) + "'?)";
}

std::optional<HostPort> split_host_port(std::string_view text, std::string& error) {
  HostPort result;
  std::string_view port_text;
  if (text.starts_with('[')) {
    size_t close = text.find(']');
    if (close == std::string_view::npos) {
      error = "missing ']' after the IPv6 address";
      return std::nullopt;
    }
    result.host = std::string(text.substr(1, close - 1));
    result.bracketed = true;
    std::string_view rest = text.substr(close + 1);
    if (!rest.starts_with(':')) {
      error = "missing ':port'";
      return std::nullopt;
    }
    port_text = rest.substr(1);
  } else {
    size_t colon = text.rfind(':');
    if (colon == std::string_view::npos) {
      error = "missing ':port'";
      return std::nullopt;
    }
    result.host = std::string(text.substr(0, colon));
    if (result.host.find(':') != std::string::npos) {
      error = "an IPv6 address must be written in brackets, e.g. [::1]:8080";
      return std::nullopt;
    }
    port_text = text.substr(colon + 1);
  }
  if (result.host.empty()) {
    error = "missing host";
    return std::nullopt;
  }
  auto port = parse_uint(port_text);
  if (!port || *port < 1 || *port > 65535) {
    error = "port must be 1..65535";
    return std::nullopt;
  }
  result.port = static_cast<uint16_t>(*port);
  return result;
}

std::optional<std::string> canonical_ip(std::string_view host) {
  std::string text(host);
  char buffer[INET6_ADDRSTRLEN] = {};
  in_addr v4{};
  if (inet_pton(AF_INET, text.c_str(), &v4) == 1) {
    if (inet_ntop(AF_INET, &v4, buffer, sizeof buffer) == nullptr) return std::nullopt;
    return std::string(buffer);
  }
  in6_addr v6{};
  if (inet_pton(AF_INET6, text.c_str(), &v6) == 1) {
    if (inet_ntop(AF_INET6, &v6, buffer, sizeof buffer) == nullptr) return std::nullopt;
    return std::string(buffer);
  }
  return std::nullopt;
}

std::optional<std::string> network_address(std::string_view address, unsigned prefix_length) {
  std::string text(address);
  unsigned char bytes[sizeof(in6_addr)] = {};
  int family = AF_INET;
  size_t size = sizeof(in_addr);
  if (inet_pton(AF_INET, text.c_str(), bytes) != 1) {
    if (inet_pton(AF_INET6, text.c_str(), bytes) != 1) return std::nullopt;
    family = AF_INET6;
    size = sizeof(in6_addr);
  }
  if (prefix_length > size * 8) return std::nullopt;
  for (size_t i = 0; i < size; ++i) {
    size_t bit = i * 8;
    if (bit >= prefix_length) {
      bytes[i] = 0;
    } else if (prefix_length - bit < 8) {
      bytes[i] &= static_cast<unsigned char>(0xff << (8 - (prefix_length - bit)));
    }
  }
  char buffer[INET6_ADDRSTRLEN] = {};
  if (inet_ntop(family, bytes, buffer, sizeof buffer) == nullptr) return std::nullopt;
  return std::string(buffer);
}

bool is_hostname(std::string_view host) {
  if (host.empty() || host.size() > 253) return false;
  size_t label = 0;
  for (char c : host) {
    if (c == '.') {
      if (label == 0) return false;
      label = 0;
    } else if (is_alnum(c) || c == '-' || c == '_') {
      if (++label > 63) return false;
    } else {
      return false;
    }
  }
  return label > 0 || host.size() > 1;  // a trailing dot ("example.com.") is fine
}

std::optional<std::string> substitute_env(std::string_view text, std::string& unset_name) {
  std::string out;
  size_t i = 0;
  while (i < text.size()) {
    if (text[i] == '$' && i + 1 < text.size() && text[i + 1] == '{') {
      size_t end = text.find('}', i + 2);
      if (end != std::string_view::npos) {
        std::string_view name = text.substr(i + 2, end - i - 2);
        bool valid =
            !name.empty() && !(name[0] >= '0' && name[0] <= '9') &&
            std::all_of(name.begin(), name.end(), [](char c) { return is_alnum(c) || c == '_'; });
        if (valid) {
          std::string name_text(name);
          const char* value = std::getenv(name_text.c_str());
          if (value == nullptr) {
            unset_name = std::move(name_text);
            return std::nullopt;
          }
          out += value;
          i = end + 1;
          continue;
        }
      }
    }
    out += text[i];
    ++i;
  }
  return out;
}

}  // namespace sluice::config

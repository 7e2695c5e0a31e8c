#include "http/message.h"

namespace sluice::http {

HeaderLookup find_header(const std::vector<Header>& headers, std::string_view name) noexcept {
  for (const Header& h : headers) {
    if (iequals(h.name, name)) return {h.value, true};
  }
  return {};
}

std::string_view cookie_value(const std::vector<Header>& headers, std::string_view name) noexcept {
  for (const auto& h : headers) {
    if (!iequals(h.name, "cookie")) continue;
    std::string_view v = h.value;
    while (!v.empty()) {
      size_t semi = v.find(';');
      std::string_view pair = v.substr(0, semi);
      while (!pair.empty() && pair.front() == ' ') pair.remove_prefix(1);
      size_t eq = pair.find('=');
      if (eq != std::string_view::npos && pair.substr(0, eq) == name) return pair.substr(eq + 1);
      if (semi == std::string_view::npos) break;
      v.remove_prefix(semi + 1);
    }
  }
  return {};
}

bool has_token(std::string_view list, std::string_view token) noexcept {
  while (!list.empty()) {
    size_t comma = list.find(',');
    std::string_view item = list.substr(0, comma);
    while (!item.empty() && (item.front() == ' ' || item.front() == '\t')) item.remove_prefix(1);
    while (!item.empty() && (item.back() == ' ' || item.back() == '\t')) item.remove_suffix(1);
    if (iequals(item, token)) return true;
    if (comma == std::string_view::npos) break;
    list.remove_prefix(comma + 1);
  }
  return false;
}

bool is_websocket_upgrade(const RequestHead& head) noexcept {
  if (head.version != Version::Http11 || head.method != "GET") return false;
  bool upgrade = false, connection = false;
  for (const auto& h : head.headers) {
    if (iequals(h.name, "upgrade")) upgrade = upgrade || has_token(h.value, "websocket");
    if (iequals(h.name, "connection")) connection = connection || has_token(h.value, "upgrade");
  }
  return upgrade && connection;
}

}  // namespace sluice::http

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

}  // namespace sluice::http

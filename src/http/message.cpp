#include "http/message.h"

namespace sluice::http {

HeaderLookup find_header(const std::vector<Header>& headers, std::string_view name) noexcept {
  for (const Header& h : headers) {
    if (iequals(h.name, name)) return {h.value, true};
  }
  return {};
}

}  // namespace sluice::http

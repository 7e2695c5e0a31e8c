#include "filters/ip_access.h"

#include <variant>

#include <fmt/format.h>

#include "auth/cidr.h"

namespace sluice::filters {
namespace {

std::variant<auth::IpSet, std::string> to_set(const std::vector<config::IpRange>& ranges) {
  std::vector<std::string> texts;
  texts.reserve(ranges.size());
  for (const auto& r : ranges) texts.push_back(fmt::format("{}/{}", r.address, r.prefix_length));
  return auth::IpSet::parse(texts);
}

class IpAccessFilter final : public Filter {
 public:
  IpAccessFilter(auth::IpSet allow, auth::IpSet deny)
      : allow_(std::move(allow)), deny_(std::move(deny)) {}
  std::string_view name() const override { return "ip_access"; }

  Step on_request(Exchange& x) const override {
    auto ip = auth::IpAddress::parse(x.client_ip);
    if (!ip) return Step::respond(403, "forbidden");  // no usable client address: fail closed
    if (!deny_.empty() && deny_.contains(*ip)) return Step::respond(403, "forbidden");
    if (!allow_.empty() && !allow_.contains(*ip)) return Step::respond(403, "forbidden");
    return Step::next();
  }

 private:
  auth::IpSet allow_;
  auth::IpSet deny_;
};

}  // namespace

std::unique_ptr<const Filter> make_ip_access_filter(const config::Allow& allow,
                                                    const config::Deny& deny, std::string& error) {
  if (allow.ips.empty() && deny.ips.empty()) return nullptr;
  auto a = to_set(allow.ips);
  auto d = to_set(deny.ips);
  if (auto* e = std::get_if<std::string>(&a)) {
    error = "allow: " + *e;
    return nullptr;
  }
  if (auto* e = std::get_if<std::string>(&d)) {
    error = "deny: " + *e;
    return nullptr;
  }
  return std::make_unique<IpAccessFilter>(std::get<auth::IpSet>(std::move(a)),
                                          std::get<auth::IpSet>(std::move(d)));
}

}  // namespace sluice::filters

// Route `allow: { ips }` and `deny: { ips }` (SPEC.md section 2): client addresses by CIDR,
// IPv4 and IPv6 (an IPv4-mapped IPv6 client counts as IPv4). Deny wins; with an allow list, a
// client outside it is refused. Both answer 403.
//
//   if (auto f = make_ip_access_filter(route.allow, route.deny, error)) chain.push_back(...);
#pragma once

#include <memory>
#include <string>

#include "config/config.h"
#include "filters/filter.h"

namespace sluice::filters {

// nullptr when the route lists no ips (and `error` stays empty); nullptr with `error` set when a
// range does not parse (the loader validated them, so that is a bug).
std::unique_ptr<const Filter> make_ip_access_filter(const config::Allow& allow,
                                                    const config::Deny& deny, std::string& error);

}  // namespace sluice::filters

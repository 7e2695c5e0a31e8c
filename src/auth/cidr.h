// IP address ranges for a route's `allow: { ips: [...] }` and `deny: { ips: [...] }`
// (SPEC.md section 2).
//
//   // Once per config load, on the control thread:
//   auto allow = auth::IpSet::parse({"10.0.0.0/8", "::1", "2001:db8::/32"});
//   if (auto* error = std::get_if<std::string>(&allow)) report(*error);
//
//   // Once per connection (or per request), on the worker:
//   std::optional<auth::IpAddress> client = auth::IpAddress::parse(peer_ip);  // "::ffff:10.1.2.3"
//   bool ok = client && allow_set.contains(*client) && !deny_set.contains(*client);
//
// Address families are kept apart, as NGINX's allow/deny do: IPv4 ranges match IPv4 clients, IPv6
// ranges match IPv6 clients. An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`, what a dual-stack
// socket reports for an IPv4 peer) is an IPv4 address everywhere: as a client it matches IPv4
// ranges, and a range written as `::ffff:10.0.0.0/104` is the IPv4 range 10.0.0.0/8. As a
// consequence `::/0` matches every IPv6 client but no IPv4 one; list `0.0.0.0/0` for those.
//
// IpRange, IpAddress and IpSet are immutable values: any number of threads may read them at once.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace sluice::auth {

// One parsed IPv4 or IPv6 address. IPv4-mapped IPv6 addresses are stored as IPv4.
struct IpAddress {
  bool v4 = true;
  // v4: the address in the low 32 bits of `lo`, host order, `hi` = 0.
  // v6: the 128-bit address as two host-order halves.
  uint64_t hi = 0;
  uint64_t lo = 0;

  // Textual address via inet_pton: dotted-quad IPv4 (no leading zeros, no shorthand) or any RFC
  // 4291 IPv6 text form. A trailing `%zone` on an IPv6 address (as sockets report link-local peers)
  // is ignored. No brackets, no port. nullopt when malformed. Cheap: no allocation.
  static std::optional<IpAddress> parse(std::string_view text);

  std::string to_string() const;  // canonical text (IPv4 dotted-quad, RFC 5952 IPv6)

  friend bool operator==(const IpAddress&, const IpAddress&) = default;
};

// An address and a prefix length: `10.0.0.0/8`, `2001:db8::/32`, or a single address (`::1` is
// `::1/128`, `192.0.2.7` is `/32`).
class IpRange {
 public:
  // Accepts `ADDRESS` or `ADDRESS/PREFIX` with PREFIX in 0..32 (IPv4) or 0..128 (IPv6), decimal
  // without sign or leading zeros. An address with bits set after the prefix (`10.1.2.3/8`) is
  // REJECTED rather than masked: it is almost always a typo for a narrower range, and silently
  // widening an allow-list is the wrong failure. The error names the intended network
  // (`did you mean 10.0.0.0/8?`).
  static std::variant<IpRange, std::string> parse(std::string_view text);

  bool contains(const IpAddress& ip) const;

  bool v4() const { return network_.v4; }
  int prefix() const { return prefix_; }  // in the range's own family: 0..32 or 0..128
  std::string to_string() const;          // canonical `network/prefix`

 private:
  IpRange(IpAddress network, int prefix);

  IpAddress network_;
  int prefix_ = 0;
  uint64_t mask_hi_ = 0;  // bits of the prefix, aligned like IpAddress
  uint64_t mask_lo_ = 0;
};

// A list of ranges, e.g. one `ips:` list. contains() is a linear scan split by family: these lists
// are short in practice (a handful of networks), where a scan over a few contiguous entries beats
// any tree. Sort-and-merge would be the next step for lists in the thousands.
class IpSet {
 public:
  IpSet() = default;  // empty: contains nothing
  explicit IpSet(const std::vector<IpRange>& ranges);

  // Parses every entry; the error names the first bad one (`ips[2]: ...`).
  static std::variant<IpSet, std::string> parse(const std::vector<std::string>& texts);

  bool contains(const IpAddress& ip) const;
  // Parses `ip` first (see IpAddress::parse); a malformed address is in no set. To test one
  // client against several sets, parse once and use the overload above.
  bool contains(std::string_view ip) const;

  bool empty() const { return v4_.empty() && v6_.empty(); }
  size_t size() const { return v4_.size() + v6_.size(); }

 private:
  std::vector<IpRange> v4_;
  std::vector<IpRange> v6_;
};

}  // namespace sluice::auth

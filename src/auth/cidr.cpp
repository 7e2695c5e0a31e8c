#include "auth/cidr.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <cstring>

namespace sluice::auth {
namespace {

constexpr size_t k_max_address_text = INET6_ADDRSTRLEN;  // 46, includes room for the NUL

uint64_t load_be64(const unsigned char* p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v = (v << 8) | p[i];
  return v;
}

void store_be64(uint64_t v, unsigned char* p) {
  for (int i = 7; i >= 0; --i) {
    p[i] = static_cast<unsigned char>(v & 0xff);
    v >>= 8;
  }
}

// Mask with the top `bits` bits of a 64-bit half set; bits may be outside 0..64.
uint64_t top_bits(int bits) {
  if (bits <= 0) return 0;
  if (bits >= 64) return ~uint64_t{0};
  return ~uint64_t{0} << (64 - bits);
}

// Parses a decimal prefix length: digits only, no leading zeros, at most `max`.
std::optional<int> parse_prefix(std::string_view text, int max) {
  if (text.empty() || text.size() > 3) return std::nullopt;
  if (text.size() > 1 && text[0] == '0') return std::nullopt;
  int value = 0;
  for (char c : text) {
    if (c < '0' || c > '9') return std::nullopt;
    value = value * 10 + (c - '0');
  }
  if (value > max) return std::nullopt;
  return value;
}

}  // namespace

std::optional<IpAddress> IpAddress::parse(std::string_view text) {
  // Drop an IPv6 zone: it names an interface and says nothing about which range a peer is in.
  if (size_t pct = text.find('%'); pct != std::string_view::npos) {
    if (text.find(':') == std::string_view::npos || pct + 1 == text.size()) return std::nullopt;
    text = text.substr(0, pct);
  }
  if (text.empty() || text.size() >= k_max_address_text) return std::nullopt;
  char buf[k_max_address_text];  // inet_pton wants a NUL-terminated string
  std::memcpy(buf, text.data(), text.size());
  buf[text.size()] = '\0';

  IpAddress ip;
  if (text.find(':') == std::string_view::npos) {
    in_addr a4;
    if (inet_pton(AF_INET, buf, &a4) != 1) return std::nullopt;
    ip.v4 = true;
    ip.lo = ntohl(a4.s_addr);
    return ip;
  }
  in6_addr a6;
  if (inet_pton(AF_INET6, buf, &a6) != 1) return std::nullopt;
  ip.hi = load_be64(a6.s6_addr);
  ip.lo = load_be64(a6.s6_addr + 8);
  if (ip.hi == 0 && (ip.lo >> 32) == 0xffff) {  // ::ffff:a.b.c.d
    ip.v4 = true;
    ip.lo &= 0xffffffff;
    return ip;
  }
  ip.v4 = false;
  return ip;
}

std::string IpAddress::to_string() const {
  char buf[k_max_address_text];
  if (v4) {
    in_addr a4;
    a4.s_addr = htonl(static_cast<uint32_t>(lo));
    if (inet_ntop(AF_INET, &a4, buf, sizeof buf) == nullptr) return {};
  } else {
    in6_addr a6;
    store_be64(hi, a6.s6_addr);
    store_be64(lo, a6.s6_addr + 8);
    if (inet_ntop(AF_INET6, &a6, buf, sizeof buf) == nullptr) return {};
  }
  return buf;
}

IpRange::IpRange(IpAddress network, int prefix) : network_(network), prefix_(prefix) {
  if (network_.v4) {
    mask_hi_ = 0;
    mask_lo_ = top_bits(prefix) >> 32;  // IPv4 lives in the low 32 bits of `lo`
  } else {
    mask_hi_ = top_bits(prefix);
    mask_lo_ = top_bits(prefix - 64);
  }
}

std::variant<IpRange, std::string> IpRange::parse(std::string_view text) {
  auto fail = [&](std::string_view why) {
    return std::string("invalid IP range \"").append(text).append("\": ").append(why);
  };
  std::string_view address = text;
  std::string_view prefix_text;
  bool has_prefix = false;
  if (size_t slash = text.find('/'); slash != std::string_view::npos) {
    address = text.substr(0, slash);
    prefix_text = text.substr(slash + 1);
    has_prefix = true;
  }
  if (address.find('%') != std::string_view::npos) return fail("zone index not allowed");
  std::optional<IpAddress> ip = IpAddress::parse(address);
  if (!ip) return fail("not an IPv4 or IPv6 address");

  // A mapped IPv6 address became IPv4 above; its prefix is counted in IPv6 bits as written.
  const bool written_v6 = address.find(':') != std::string_view::npos;
  int prefix = ip->v4 ? 32 : 128;
  if (has_prefix) {
    std::optional<int> p = parse_prefix(prefix_text, written_v6 ? 128 : 32);
    if (!p) return fail(written_v6 ? "prefix must be 0..128" : "prefix must be 0..32");
    prefix = *p;
    if (written_v6 && ip->v4) {
      if (prefix < 96) {
        return fail("prefix of an IPv4-mapped range must be at least 96; write the IPv4 form");
      }
      prefix -= 96;
    }
  }

  IpRange range(*ip, prefix);
  IpAddress network = *ip;
  network.hi &= range.mask_hi_;
  network.lo &= range.mask_lo_;
  if (network != *ip) {
    std::string hint = network.to_string() + "/" + std::to_string(prefix);
    return fail("address has bits set after the prefix; did you mean " + hint + "?");
  }
  return range;
}

bool IpRange::contains(const IpAddress& ip) const {
  return ip.v4 == network_.v4 && (ip.hi & mask_hi_) == network_.hi &&
         (ip.lo & mask_lo_) == network_.lo;
}

std::string IpRange::to_string() const {
  return network_.to_string() + "/" + std::to_string(prefix_);
}

IpSet::IpSet(const std::vector<IpRange>& ranges) {
  for (const IpRange& r : ranges) (r.v4() ? v4_ : v6_).push_back(r);
}

std::variant<IpSet, std::string> IpSet::parse(const std::vector<std::string>& texts) {
  std::vector<IpRange> ranges;
  ranges.reserve(texts.size());
  for (size_t i = 0; i < texts.size(); ++i) {
    auto parsed = IpRange::parse(texts[i]);
    if (auto* error = std::get_if<std::string>(&parsed)) {
      return "ips[" + std::to_string(i) + "]: " + *error;
    }
    ranges.push_back(std::get<IpRange>(parsed));
  }
  return IpSet(ranges);
}

bool IpSet::contains(const IpAddress& ip) const {
  for (const IpRange& r : ip.v4 ? v4_ : v6_) {
    if (r.contains(ip)) return true;
  }
  return false;
}

bool IpSet::contains(std::string_view ip) const {
  std::optional<IpAddress> parsed = IpAddress::parse(ip);
  return parsed && contains(*parsed);
}

}  // namespace sluice::auth

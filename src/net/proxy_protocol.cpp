#include "net/proxy_protocol.h"

#include <arpa/inet.h>

#include <algorithm>
#include <array>
#include <cstring>

namespace sluice::net {
namespace {

using namespace std::literals;

constexpr std::string_view kV1Prefix = "PROXY "sv;
constexpr std::string_view kV2Signature = "\r\n\r\n\0\r\nQUIT\n"sv;
constexpr size_t kV2Preamble = 16;

ParseResult error(std::string_view why) { return {ParseStatus::Error, 0, why}; }

bool is_prefix(std::string_view data, std::string_view of) {
  return of.substr(0, data.size()) == data.substr(0, of.size());
}

// A port as the spec writes it: decimal, no leading zero (except "0" itself), at most 65535.
bool parse_port(std::string_view s, uint16_t& out) {
  if (s.empty() || s.size() > 5 || (s.size() > 1 && s[0] == '0')) return false;
  uint32_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
    v = v * 10 + static_cast<uint32_t>(c - '0');
  }
  if (v > 65535) return false;
  out = static_cast<uint16_t>(v);
  return true;
}

// An address of `family` in text form; v4 must be canonical dotted decimal (what inet_ntop
// writes), v6 any valid form. Canonical text goes to `out`.
bool parse_ip(std::string_view s, int family, std::string& out) {
  if (s.empty() || s.size() >= INET6_ADDRSTRLEN) return false;
  char text[INET6_ADDRSTRLEN];
  std::memcpy(text, s.data(), s.size());
  text[s.size()] = '\0';
  unsigned char bin[16];
  if (inet_pton(family, text, bin) != 1) return false;
  char canon[INET6_ADDRSTRLEN];
  if (inet_ntop(family, bin, canon, sizeof canon) == nullptr) return false;
  if (family == AF_INET && s != canon) return false;
  out = canon;
  return true;
}

std::string ip_text(int family, const unsigned char* bin) {
  char canon[INET6_ADDRSTRLEN];
  if (inet_ntop(family, bin, canon, sizeof canon) == nullptr) return {};
  return canon;
}

uint16_t be16(const unsigned char* p) { return static_cast<uint16_t>((p[0] << 8) | p[1]); }

ParseResult parse_v1(std::string_view data, ProxyHeader& out) {
  // CRLF included, the line is at most 107 bytes: its CR is at index 105 at the latest.
  const size_t limit = std::min(data.size(), kMaxV1Size - 1);
  size_t end = std::string_view::npos;
  bool cr_last = false;  // the last byte given is a CR: its LF may still come
  for (size_t i = 0; i < limit; ++i) {
    const char c = data[i];
    if (c == '\r') {
      if (i + 1 == data.size()) {
        cr_last = true;
        break;
      }
      if (data[i + 1] != '\n') return error("PROXY v1: CR without LF");
      end = i;
      break;
    }
    if (c == '\n') return error("PROXY v1: LF without CR");
  }
  if (end == std::string_view::npos) {
    if (!cr_last && data.size() >= kMaxV1Size - 1) {
      return error("PROXY v1: no CRLF within 107 bytes");
    }
    return {ParseStatus::NeedMore, 0, {}};
  }
  std::string_view line = data.substr(kV1Prefix.size(), end - kV1Prefix.size());
  const size_t size = end + 2;
  ProxyHeader h;
  h.version = 1;
  if (line.starts_with("UNKNOWN"sv)) {
    // "PROXY UNKNOWN" and anything after it up to CRLF, which the receiver ignores.
    if (line.size() > 7 && line[7] != ' ') return error("PROXY v1: unknown protocol");
    h.local = true;
    out = std::move(h);
    return {ParseStatus::Done, size, {}};
  }
  int family = 0;
  if (line.starts_with("TCP4 "sv)) {
    family = AF_INET;
  } else if (line.starts_with("TCP6 "sv)) {
    family = AF_INET6;
  } else {
    return error("PROXY v1: protocol is not TCP4, TCP6 or UNKNOWN");
  }
  line.remove_prefix(5);
  std::array<std::string_view, 4> fields;
  for (size_t i = 0; i < fields.size(); ++i) {
    const size_t sp = line.find(' ');
    if (i + 1 < fields.size()) {
      if (sp == std::string_view::npos) return error("PROXY v1: missing fields");
      fields[i] = line.substr(0, sp);
      line.remove_prefix(sp + 1);
    } else {
      if (sp != std::string_view::npos) return error("PROXY v1: extra fields");
      fields[i] = line;
    }
  }
  if (!parse_ip(fields[0], family, h.source.ip) || !parse_ip(fields[1], family, h.destination.ip)) {
    return error("PROXY v1: invalid address");
  }
  if (!parse_port(fields[2], h.source.port) || !parse_port(fields[3], h.destination.port)) {
    return error("PROXY v1: invalid port");
  }
  out = std::move(h);
  return {ParseStatus::Done, size, {}};
}

ParseResult parse_v2(std::string_view data, ProxyHeader& out) {
  if (data.size() < kV2Preamble) return {ParseStatus::NeedMore, 0, {}};
  const auto* p = reinterpret_cast<const unsigned char*>(data.data());
  const unsigned char ver_cmd = p[12], fam = p[13];
  const size_t len = be16(p + 14);
  if ((ver_cmd >> 4) != 2) return error("PROXY v2: unsupported version");
  const int command = ver_cmd & 0x0f;
  if (command > 1) return error("PROXY v2: unknown command");
  const int af = fam >> 4, transport = fam & 0x0f;
  if (af > 3 || transport > 2 || (af == 0) != (transport == 0)) {
    return error("PROXY v2: unknown address family or transport");
  }
  if (kV2Preamble + len > kMaxV2Size) return error("PROXY v2: header too large");
  if (data.size() < kV2Preamble + len) return {ParseStatus::NeedMore, 0, {}};
  const size_t size = kV2Preamble + len;
  ProxyHeader h;
  h.version = 2;
  h.datagram = transport == 2;
  const unsigned char* block = p + kV2Preamble;
  size_t addr_len = 0;
  if (af == 1) addr_len = 12;
  if (af == 2) addr_len = 36;
  if (af == 3) addr_len = 216;
  if (len < addr_len) return error("PROXY v2: address block too short");
  if (command == 0 || af == 0 || af == 3) {
    // LOCAL (a health check of the balancer itself), or an address we cannot use: the
    // connection's own addresses stand. The block is skipped as the spec asks.
    h.local = true;
    out = std::move(h);
    return {ParseStatus::Done, size, {}};
  }
  if (af == 1) {
    h.source.ip = ip_text(AF_INET, block);
    h.destination.ip = ip_text(AF_INET, block + 4);
    h.source.port = be16(block + 8);
    h.destination.port = be16(block + 10);
  } else {
    h.source.ip = ip_text(AF_INET6, block);
    h.destination.ip = ip_text(AF_INET6, block + 16);
    h.source.port = be16(block + 32);
    h.destination.port = be16(block + 34);
  }
  // TLVs (type, 16-bit length, value) must fill the rest exactly; their values are not used.
  size_t at = addr_len;
  while (at < len) {
    if (len - at < 3) return error("PROXY v2: truncated TLV");
    const size_t tlv_len = be16(block + at + 1);
    if (len - at - 3 < tlv_len) return error("PROXY v2: TLV longer than the header");
    at += 3 + tlv_len;
  }
  out = std::move(h);
  return {ParseStatus::Done, size, {}};
}

}  // namespace

ParseResult parse_proxy_header(std::string_view data, ProxyHeader& out) {
  if (data.empty()) return {ParseStatus::NeedMore, 0, {}};
  if (data[0] == 'P') {
    if (!is_prefix(data, kV1Prefix)) return error("not a PROXY protocol header");
    if (data.size() <= kV1Prefix.size()) return {ParseStatus::NeedMore, 0, {}};
    return parse_v1(data, out);
  }
  if (!is_prefix(data, kV2Signature)) return error("not a PROXY protocol header");
  if (data.size() < kV2Signature.size()) return {ParseStatus::NeedMore, 0, {}};
  return parse_v2(data, out);
}

std::string encode_proxy_local(int version) {
  if (version == 1) return "PROXY UNKNOWN\r\n";
  std::string out(kV2Signature);
  out += '\x20';  // version 2, LOCAL
  out += '\x00';  // UNSPEC
  out += '\x00';
  out += '\x00';
  return out;
}

std::string encode_proxy_header(int version, const ProxyEndpoint& source,
                                const ProxyEndpoint& destination) {
  unsigned char src[16], dst[16];
  int family = AF_INET;
  if (inet_pton(AF_INET, source.ip.c_str(), src) != 1 ||
      inet_pton(AF_INET, destination.ip.c_str(), dst) != 1) {
    family = AF_INET6;
    if (inet_pton(AF_INET6, source.ip.c_str(), src) != 1 ||
        inet_pton(AF_INET6, destination.ip.c_str(), dst) != 1) {
      return encode_proxy_local(version);
    }
  }
  const size_t n = family == AF_INET ? 4 : 16;
  if (version == 1) {
    std::string out = family == AF_INET ? "PROXY TCP4 " : "PROXY TCP6 ";
    out += ip_text(family, src);
    out += ' ';
    out += ip_text(family, dst);
    out += ' ';
    out += std::to_string(source.port);
    out += ' ';
    out += std::to_string(destination.port);
    out += "\r\n";
    return out;
  }
  std::string out(kV2Signature);
  out += '\x21';                               // version 2, PROXY
  out += family == AF_INET ? '\x11' : '\x21';  // TCP over IPv4 / IPv6
  const size_t len = 2 * n + 4;
  out += static_cast<char>(len >> 8);
  out += static_cast<char>(len & 0xff);
  out.append(reinterpret_cast<const char*>(src), n);
  out.append(reinterpret_cast<const char*>(dst), n);
  out += static_cast<char>(source.port >> 8);
  out += static_cast<char>(source.port & 0xff);
  out += static_cast<char>(destination.port >> 8);
  out += static_cast<char>(destination.port & 0xff);
  return out;
}

}  // namespace sluice::net

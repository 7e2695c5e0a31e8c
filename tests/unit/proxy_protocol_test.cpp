// The PROXY protocol parser and encoder (net/proxy_protocol.h), against the examples and rules of
// https://www.haproxy.org/download/2.8/doc/proxy-protocol.txt
#include "net/proxy_protocol.h"

#include <string>
#include <string_view>

#include <gtest/gtest.h>

namespace {

using namespace sluice::net;
using namespace std::literals;

const std::string kSig("\r\n\r\n\0\r\nQUIT\n", 12);

ParseResult parse(std::string_view in, ProxyHeader& h) { return parse_proxy_header(in, h); }

std::string v2(char ver_cmd, char fam, std::string block) {
  std::string out = kSig;
  out += ver_cmd;
  out += fam;
  out += static_cast<char>(block.size() >> 8);
  out += static_cast<char>(block.size() & 0xff);
  return out + block;
}

TEST(ProxyProtocolTest, V1Tcp4IsParsedAndItsLengthExcludesWhatFollows) {
  ProxyHeader h;
  std::string in = "PROXY TCP4 192.0.2.7 10.0.0.1 51000 443\r\nGET / HTTP/1.1\r\n";
  auto r = parse(in, h);
  ASSERT_EQ(r.status, ParseStatus::Done) << r.error;
  EXPECT_EQ(r.size, in.find("GET"));
  EXPECT_EQ(h.version, 1);
  EXPECT_FALSE(h.local);
  EXPECT_EQ(h.source.ip, "192.0.2.7");
  EXPECT_EQ(h.source.port, 51000);
  EXPECT_EQ(h.destination.ip, "10.0.0.1");
  EXPECT_EQ(h.destination.port, 443);
}

TEST(ProxyProtocolTest, V1Tcp6AndUnknown) {
  ProxyHeader h;
  auto r = parse("PROXY TCP6 2001:DB8:0::1 ::1 1 65535\r\n", h);
  ASSERT_EQ(r.status, ParseStatus::Done) << r.error;
  EXPECT_EQ(h.source.ip, "2001:db8::1");  // canonical form
  EXPECT_EQ(h.destination.ip, "::1");
  EXPECT_EQ(h.destination.port, 65535);
  r = parse("PROXY UNKNOWN\r\n", h);
  ASSERT_EQ(r.status, ParseStatus::Done);
  EXPECT_TRUE(h.local);
  r = parse("PROXY UNKNOWN anything the sender likes\r\nrest", h);
  ASSERT_EQ(r.status, ParseStatus::Done);
  EXPECT_EQ(r.size, 41u);
  EXPECT_TRUE(h.local);
}

TEST(ProxyProtocolTest, EveryPrefixOfAHeaderNeedsMore) {
  for (std::string in : {"PROXY TCP4 192.0.2.7 10.0.0.1 51000 443\r\n"s,
                         v2('\x21', '\x11', "\xc0\x00\x02\x07\x0a\x00\x00\x01\xc7\x38\x01\xbb"s)}) {
    for (size_t n = 0; n < in.size(); ++n) {
      ProxyHeader h;
      EXPECT_EQ(parse(in.substr(0, n), h).status, ParseStatus::NeedMore) << n;
    }
  }
}

TEST(ProxyProtocolTest, V1RejectsEverythingTheGrammarDoesNotAllow) {
  for (std::string_view in : {
           "GET / HTTP/1.1\r\n"sv,
           "PROXY  TCP4 1.2.3.4 5.6.7.8 1 2\r\n"sv,     // double space
           "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n"sv,        // LF alone
           "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX"sv,       // CR alone
           "PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n"sv,      // protocol
           "PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n"sv,        // missing port
           "PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n"sv,    // extra field
           "PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n"sv,     // leading zero
           "PROXY TCP4 1.2.3.4 5.6.7.8 1 65536\r\n"sv,  // port range
           "PROXY TCP4 1.2.3.04 5.6.7.8 1 2\r\n"sv,     // not canonical
           "PROXY TCP4 ::1 5.6.7.8 1 2\r\n"sv,          // family mismatch
           "PROXY TCP6 1.2.3.4 ::1 1 2\r\n"sv,
           "PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n"sv,  // trailing space
           "PROXY UNKNOWNX\r\n"sv,
       }) {
    ProxyHeader h;
    EXPECT_EQ(parse(in, h).status, ParseStatus::Error) << in;
  }
}

TEST(ProxyProtocolTest, V1IsBoundedTo107Bytes) {
  ProxyHeader h;
  std::string in = "PROXY UNKNOWN " + std::string(200, 'x');
  EXPECT_EQ(parse(in.substr(0, 105), h).status, ParseStatus::NeedMore);
  // 106 bytes without a CR: a CRLF now could only end beyond 107 bytes.
  EXPECT_EQ(parse(in.substr(0, 106), h).status, ParseStatus::Error);
  auto r = parse(in, h);
  EXPECT_EQ(r.status, ParseStatus::Error);
  EXPECT_EQ(r.error, "PROXY v1: no CRLF within 107 bytes");
  std::string max = "PROXY UNKNOWN " + std::string(107 - 16, 'x') + "\r\n";
  ASSERT_EQ(max.size(), 107u);
  EXPECT_EQ(parse(max, h).status, ParseStatus::Done);
  EXPECT_EQ(parse(max.substr(0, 106), h).status, ParseStatus::NeedMore);  // ends with the CR
  // Found by the fuzzer: a CRLF at bytes 107-108 is one byte too late.
  std::string late = "PROXY UNKNOWN " + std::string(108 - 16, 'x') + "\r\n";
  ASSERT_EQ(late.size(), 108u);
  r = parse(late, h);
  EXPECT_EQ(r.status, ParseStatus::Error);
  EXPECT_EQ(r.error, "PROXY v1: no CRLF within 107 bytes");
}

TEST(ProxyProtocolTest, V2AddressesTlvsAndLocal) {
  ProxyHeader h;
  std::string in = v2('\x21', '\x11',
                      "\xc0\x00\x02\x07\x0a\x00\x00\x01\xc7\x38\x01\xbb"s + "\x01\x00\x02h2"s +
                          "\x04\x00\x00"s) +
                   "after";
  auto r = parse(in, h);
  ASSERT_EQ(r.status, ParseStatus::Done) << r.error;
  EXPECT_EQ(r.size, in.size() - 5);
  EXPECT_EQ(h.version, 2);
  EXPECT_EQ(h.source.ip, "192.0.2.7");
  EXPECT_EQ(h.source.port, 51000);
  EXPECT_EQ(h.destination.ip, "10.0.0.1");
  EXPECT_EQ(h.destination.port, 443);

  std::string block6(36, '\0');
  block6[15] = 1;  // ::1
  block6[16] = '\x20';
  block6[17] = '\x01';  // 2001::
  block6[33] = 7;
  r = parse(v2('\x21', '\x21', block6), h);
  ASSERT_EQ(r.status, ParseStatus::Done) << r.error;
  EXPECT_EQ(h.source.ip, "::1");
  EXPECT_EQ(h.source.port, 7);
  EXPECT_EQ(h.destination.ip, "2001::");

  r = parse(v2('\x20', '\x00', ""), h);
  ASSERT_EQ(r.status, ParseStatus::Done);
  EXPECT_TRUE(h.local);
  // LOCAL with an address block: the block is skipped.
  r = parse(v2('\x20', '\x11', std::string(12, '\x01')), h);
  ASSERT_EQ(r.status, ParseStatus::Done);
  EXPECT_TRUE(h.local);
  EXPECT_EQ(r.size, 28u);
}

TEST(ProxyProtocolTest, V2RejectsBadVersionsFamiliesLengthsAndTlvs) {
  const std::string addr4 = "\xc0\x00\x02\x07\x0a\x00\x00\x01\xc7\x38\x01\xbb"s;
  struct Case {
    std::string in;
    std::string_view why;
  };
  for (const Case& c : {
           Case{v2('\x11', '\x11', addr4), "PROXY v2: unsupported version"},
           Case{v2('\x22', '\x11', addr4), "PROXY v2: unknown command"},
           Case{v2('\x21', '\x41', addr4), "PROXY v2: unknown address family or transport"},
           Case{v2('\x21', '\x13', addr4), "PROXY v2: unknown address family or transport"},
           Case{v2('\x21', '\x11', addr4.substr(0, 8)), "PROXY v2: address block too short"},
           Case{v2('\x21', '\x11', addr4 + "\x01\x00"s), "PROXY v2: truncated TLV"},
           Case{v2('\x21', '\x11', addr4 + "\x01\x00\x05xy"s),
                "PROXY v2: TLV longer than the header"},
           Case{v2('\x21', '\x11', addr4 + std::string(2100, '\0')), "PROXY v2: header too large"},
           Case{kSig.substr(0, 11) + "X", "not a PROXY protocol header"},
       }) {
    ProxyHeader h;
    auto r = parse(c.in, h);
    EXPECT_EQ(r.status, ParseStatus::Error);
    EXPECT_EQ(r.error, c.why);
  }
}

TEST(ProxyProtocolTest, V2TooLargeIsRefusedBeforeItsBytesArrive) {
  ProxyHeader h;
  std::string head = kSig + "\x21\x11\xff\xff"s;  // announces 64 KiB
  EXPECT_EQ(parse(head, h).status, ParseStatus::Error);
}

TEST(ProxyProtocolTest, EncodedHeadersParseBack) {
  for (int version : {1, 2}) {
    for (auto [src, dst] :
         {std::pair{"192.0.2.7"s, "10.0.0.1"s}, std::pair{"2001:db8::7"s, "::1"s}}) {
      std::string out = encode_proxy_header(version, {src, 40000}, {dst, 8080});
      ProxyHeader h;
      auto r = parse(out, h);
      ASSERT_EQ(r.status, ParseStatus::Done) << r.error;
      EXPECT_EQ(r.size, out.size());
      EXPECT_EQ(h.version, version);
      EXPECT_EQ(h.source.ip, src);
      EXPECT_EQ(h.source.port, 40000);
      EXPECT_EQ(h.destination.ip, dst);
      EXPECT_EQ(h.destination.port, 8080);
    }
    // Mixed families cannot be expressed: the unknown form.
    ProxyHeader h;
    std::string out = encode_proxy_header(version, {"192.0.2.7", 1}, {"::1", 2});
    ASSERT_EQ(parse(out, h).status, ParseStatus::Done);
    EXPECT_TRUE(h.local);
    out = encode_proxy_local(version);
    ASSERT_EQ(parse(out, h).status, ParseStatus::Done);
    EXPECT_TRUE(h.local);
  }
  EXPECT_EQ(encode_proxy_header(1, {"192.0.2.7", 1}, {"10.0.0.1", 2}),
            "PROXY TCP4 192.0.2.7 10.0.0.1 1 2\r\n");
  EXPECT_EQ(encode_proxy_local(1), "PROXY UNKNOWN\r\n");
}

}  // namespace

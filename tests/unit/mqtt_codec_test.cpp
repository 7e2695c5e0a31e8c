#include "mqtt/codec.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <initializer_list>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "mqtt/topic.h"

namespace sluice::mqtt {
namespace {

using namespace std::string_literals;
using namespace std::string_view_literals;

// --- helpers ----------------------------------------------------------------------------------

// Bytes from octets, written as the specs print them.
std::string bytes(std::initializer_list<int> octets) {
  std::string s;
  for (int o : octets) s.push_back(static_cast<char>(o));
  return s;
}

std::string hex(std::string_view s) {
  static constexpr char k_digits[] = "0123456789abcdef";
  std::string out;
  for (char c : s) {
    const auto b = static_cast<unsigned char>(c);
    if (!out.empty()) out.push_back(' ');
    out.push_back(k_digits[b >> 4]);
    out.push_back(k_digits[b & 0x0F]);
  }
  return out;
}

// A UTF-8 string or binary field: 2-byte big-endian length, then the bytes.
std::string str(std::string_view s) {
  return bytes({static_cast<int>(s.size() >> 8), static_cast<int>(s.size() & 0xFF)}) +
         std::string(s);
}

std::string varint(size_t v) {
  std::string out;
  do {
    int b = static_cast<int>(v & 0x7F);
    v >>= 7;
    out += bytes({v > 0 ? (b | 0x80) : b});
  } while (v > 0);
  return out;
}

// A whole packet from its first byte and body (the Remaining Length is computed).
std::string packet(int first, std::string_view body) {
  return bytes({first}) + varint(body.size()) + std::string(body);
}

// A v5 property block: its length, then `content`.
std::string props(std::string_view content) {
  return varint(content.size()) + std::string(content);
}

std::string connect311(int flags, std::string_view payload) {
  return packet(0x10, str("MQTT") + bytes({4, flags, 0, 60}) + std::string(payload));
}
std::string connect5(int flags, std::string_view properties, std::string_view payload) {
  return packet(0x10,
                str("MQTT") + bytes({5, flags, 0, 60}) + props(properties) + std::string(payload));
}

DecodeOptions state(std::optional<Version> version, uint32_t max = 1024 * 1024) {
  return DecodeOptions{.version = version, .max_packet_size = max};
}

// Decodes the whole of `wire` as one packet of type T. The result borrows from `wire`.
template <typename T>
T decode_as(const std::string& wire, std::optional<Version> version) {
  const DecodeResult r = decode(wire, state(version));
  EXPECT_EQ(r.status, DecodeStatus::Done) << hex(wire) << " -> " << describe(r.error);
  EXPECT_EQ(r.consumed, wire.size()) << hex(wire);
  const T* p = std::get_if<T>(&r.packet);
  EXPECT_NE(p, nullptr) << hex(wire) << " decoded as alternative " << r.packet.index();
  return p != nullptr ? *p : T{};
}

// Encodes into both buffer types (which must agree) and returns the bytes.
template <typename P>
std::string encoded(const P& p, Version version) {
  std::string out = "prefix";  // encoders append
  EXPECT_EQ(encode(p, version, out), EncodeError::None);
  std::vector<uint8_t> vec;
  EXPECT_EQ(encode(p, version, vec), EncodeError::None);
  EXPECT_EQ(std::string(vec.begin(), vec.end()), out.substr(6));
  return out.substr(6);
}

// encode -> decode gives `p` back, and encoding that gives the same bytes.
template <typename P>
void expect_round_trip(const P& p, Version version) {
  const std::string wire = encoded(p, version);
  const std::optional<Version> v =
      std::is_same_v<P, Connect> ? std::nullopt : std::optional<Version>(version);
  const DecodeResult r = decode(wire, state(v));
  ASSERT_EQ(r.status, DecodeStatus::Done) << hex(wire) << " -> " << describe(r.error);
  EXPECT_EQ(r.consumed, wire.size());
  const P* back = std::get_if<P>(&r.packet);
  ASSERT_NE(back, nullptr) << hex(wire);
  EXPECT_TRUE(*back == p) << hex(wire);
  EXPECT_EQ(hex(encoded(*back, version)), hex(wire));
}

bool points_into(std::string_view view, std::string_view buf) {
  return view.data() >= buf.data() && view.data() + view.size() <= buf.data() + buf.size();
}

// --- fixed header -----------------------------------------------------------------------------

// MQTT 3.1.1 table 2.4 / 5.0 section 1.5.5: the Remaining Length encodings at each size boundary.
TEST(MqttFixedHeader, RemainingLengthBoundariesFromTheSpec) {
  const struct {
    std::string length_bytes;
    uint32_t value;
  } cases[] = {
      {bytes({0x00}), 0},
      {bytes({0x7F}), 127},
      {bytes({0x80, 0x01}), 128},
      {bytes({0xFF, 0x7F}), 16'383},
      {bytes({0x80, 0x80, 0x01}), 16'384},
      {bytes({0xFF, 0xFF, 0x7F}), 2'097'151},
      {bytes({0x80, 0x80, 0x80, 0x01}), 2'097'152},
      {bytes({0xFF, 0xFF, 0xFF, 0x7F}), 268'435'455},
  };
  for (const auto& c : cases) {
    const std::string wire = bytes({0x30}) + c.length_bytes;
    const FixedHeaderResult r = decode_fixed_header(wire, state(Version::V311, 0xFFFFFFFF));
    ASSERT_EQ(r.status, DecodeStatus::Done) << hex(wire);
    EXPECT_EQ(r.header.type, PacketType::Publish);
    EXPECT_EQ(r.header.remaining_length, c.value);
    EXPECT_EQ(r.header.size, 1 + c.length_bytes.size());
    EXPECT_EQ(varint(c.value), c.length_bytes);  // the test's own encoder agrees
  }
}

TEST(MqttFixedHeader, EncodersUseTheMinimalRemainingLength) {
  // A QoS 0 PUBLISH to "a" has 3 bytes before the payload.
  for (const auto& [payload_size, header] : std::vector<std::pair<size_t, std::string>>{
           {124, bytes({0x30, 0x7F})},
           {125, bytes({0x30, 0x80, 0x01})},
           {16'381, bytes({0x30, 0x80, 0x80, 0x01})},
           {2'097'149, bytes({0x30, 0x80, 0x80, 0x80, 0x01})}}) {
    const std::string payload(payload_size, 'x');
    const std::string wire = encoded(Publish{.topic = "a", .payload = payload}, Version::V311);
    EXPECT_EQ(hex(wire.substr(0, header.size())), hex(header));
    const DecodeResult r = decode(wire, state(Version::V311, 4'000'000));
    ASSERT_EQ(r.status, DecodeStatus::Done);
    EXPECT_EQ(std::get<Publish>(r.packet).payload.size(), payload_size);
  }
}

TEST(MqttFixedHeader, WrongTypeOrFlagsFailOnTheFirstByte) {
  EXPECT_EQ(decode("\x20"sv, state(Version::V5)).error, DecodeError::ServerOnlyPacket);
  EXPECT_EQ(decode("\x36"sv, state(Version::V5)).error, DecodeError::InvalidQos);
  EXPECT_EQ(decode("\x80"sv, state(Version::V5)).error, DecodeError::InvalidFlags);
  EXPECT_EQ(decode("\xC0"sv, state(std::nullopt)).error, DecodeError::ExpectedConnect);
  EXPECT_EQ(decode(""sv, state(Version::V5)).status, DecodeStatus::NeedMore);
}

TEST(MqttFixedHeader, OversizedPacketFailsBeforeItsBodyArrives) {
  const std::string head = bytes({0x30, 0xFF, 0xFF, 0xFF, 0x7F});
  const DecodeResult r = decode(head, state(Version::V5));
  EXPECT_EQ(r.status, DecodeStatus::Error);
  EXPECT_EQ(r.error, DecodeError::PacketTooLarge);
  EXPECT_EQ(r.reason(), ReasonCode::PacketTooLarge);
  // The limit counts the whole packet: 2 + 10 bytes is over 11 and within 12.
  const std::string wire = packet(0x30, str("a/b") + "12345");
  EXPECT_EQ(decode(wire, state(Version::V311, 11)).error, DecodeError::PacketTooLarge);
  EXPECT_EQ(decode(wire, state(Version::V311, 12)).status, DecodeStatus::Done);
}

// --- decoding each packet type ----------------------------------------------------------------

// MQTT 3.1.1 section 3.1.2.10, figure 3.6: variable header 00 04 'MQTT' 04 CE 00 0A.
TEST(MqttDecode, Connect311FromTheSpecExample) {
  const std::string wire =
      packet(0x10, bytes({0x00, 0x04, 'M', 'Q', 'T', 'T', 0x04, 0xCE, 0x00, 0x0A}) + str("client") +
                       str("w/t") + str("bye") + str("user") + str("pass"));
  const Connect c = decode_as<Connect>(wire, std::nullopt);
  EXPECT_EQ(c.version, Version::V311);
  EXPECT_TRUE(c.clean_start);
  EXPECT_EQ(c.keep_alive, 10);
  EXPECT_EQ(c.client_id, "client");
  EXPECT_EQ(c.username, "user");
  EXPECT_EQ(c.password, "pass");
  ASSERT_TRUE(c.will.has_value());
  EXPECT_EQ(c.will->topic, "w/t");
  EXPECT_EQ(c.will->payload, "bye");
  EXPECT_EQ(c.will->qos, Qos::AtLeastOnce);
  EXPECT_FALSE(c.will->retain);
  EXPECT_TRUE(points_into(c.client_id, wire));
  EXPECT_TRUE(points_into(*c.password, wire));

  const Connect expected{.version = Version::V311,
                         .clean_start = true,
                         .keep_alive = 10,
                         .client_id = "client",
                         .username = "user",
                         .password = "pass",
                         .will = Will{.topic = "w/t", .payload = "bye", .qos = Qos::AtLeastOnce}};
  EXPECT_TRUE(c == expected);
  EXPECT_EQ(hex(encoded(expected, Version::V311)), hex(wire));
}

// MQTT 5.0 section 3.1.2.11, figure 3-8: 00 04 'MQTT' 05 C2 00 0A 05 11 00 00 00 0A.
TEST(MqttDecode, Connect5FromTheSpecExample) {
  const std::string wire = packet(0x10, bytes({0x00, 0x04, 'M', 'Q', 'T', 'T', 0x05, 0xC2, 0x00,
                                               0x0A, 0x05, 0x11, 0x00, 0x00, 0x00, 0x0A}) +
                                            str("c1") + str("u") + str("p"));
  const Connect c = decode_as<Connect>(wire, std::nullopt);
  EXPECT_EQ(c.version, Version::V5);
  EXPECT_TRUE(c.clean_start);
  EXPECT_EQ(c.keep_alive, 10);
  EXPECT_EQ(c.session_expiry, 10u);
  EXPECT_EQ(c.client_id, "c1");
  EXPECT_EQ(c.username, "u");
  EXPECT_EQ(c.password, "p");
  EXPECT_FALSE(c.will.has_value());
  EXPECT_EQ(c.receive_maximum, 65535);
  EXPECT_TRUE(c.request_problem_information);
  EXPECT_EQ(hex(encoded(c, Version::V5)), hex(wire));
}

TEST(MqttDecode, Connect5WithEveryPropertyAndWillProperties) {
  const std::string connect_props =
      bytes({0x11, 0, 0, 0, 120}) + bytes({0x21, 0, 10}) + bytes({0x27, 0, 0, 0x10, 0}) +
      bytes({0x22, 0, 5}) + bytes({0x19, 1}) + bytes({0x17, 0}) + bytes({0x26}) + str("k") +
      str("v") + bytes({0x15}) + str("SCRAM") + bytes({0x16}) + str("\x01\x00"s);
  const std::string will_props = bytes({0x18, 0, 0, 0, 5}) + bytes({0x01, 1}) +
                                 bytes({0x02, 0, 0, 0, 60}) + bytes({0x03}) + str("text/plain") +
                                 bytes({0x08}) + str("r/t") + bytes({0x09}) + str("cid") +
                                 bytes({0x26}) + str("a") + str("b");
  const std::string wire = connect5(
      0xEE, connect_props,
      str("dev-1") + props(will_props) + str("will/t") + str("gone") + str("u") + str("p"));
  const Connect c = decode_as<Connect>(wire, std::nullopt);
  const Connect expected{.version = Version::V5,
                         .clean_start = true,
                         .keep_alive = 60,
                         .client_id = "dev-1",
                         .username = "u",
                         .password = "p",
                         .will = Will{.topic = "will/t",
                                      .payload = "gone",
                                      .qos = Qos::AtLeastOnce,
                                      .retain = true,
                                      .delay_interval = 5,
                                      .properties = {.payload_format = PayloadFormat::Utf8,
                                                     .message_expiry = 60,
                                                     .content_type = "text/plain",
                                                     .response_topic = "r/t",
                                                     .correlation_data = "cid",
                                                     .user_properties = {{"a", "b"}}}},
                         .session_expiry = 120,
                         .receive_maximum = 10,
                         .maximum_packet_size = 4096,
                         .topic_alias_maximum = 5,
                         .request_response_information = true,
                         .request_problem_information = false,
                         .authentication_method = "SCRAM",
                         .authentication_data = "\x01\x00"sv,
                         .user_properties = {{"k", "v"}}};
  EXPECT_TRUE(c == expected);
  EXPECT_EQ(c.will->properties.content_type, "text/plain");
  EXPECT_EQ(c.authentication_data->size(), 2u);
  EXPECT_EQ(hex(encoded(expected, Version::V5)), hex(wire));  // same property order
}

TEST(MqttDecode, Connect5AllowsWhat311Forbids) {
  // v5: a password without a username, and an empty client id without clean start.
  const std::string wire = connect5(0x40, "", str("") + str("secret"));
  const Connect c = decode_as<Connect>(wire, std::nullopt);
  EXPECT_EQ(c.client_id, "");
  EXPECT_FALSE(c.clean_start);
  EXPECT_FALSE(c.username.has_value());
  EXPECT_EQ(c.password, "secret");
  // 3.1.1: an empty client id is fine with clean session (the server assigns one).
  const std::string v311 = connect311(0x02, str(""));
  EXPECT_EQ(decode_as<Connect>(v311, std::nullopt).client_id, "");
}

TEST(MqttDecode, Publish311AllQosLevelsAndFlags) {
  // MQTT 3.1.1 section 3.3.2.3, figure 3.11: topic "a/b", packet identifier 10.
  const std::string qos1 = bytes({0x32, 0x09, 0x00, 0x03, 'a', '/', 'b', 0x00, 0x0A, 'h', 'i'});
  const Publish p1 = decode_as<Publish>(qos1, Version::V311);
  EXPECT_EQ(p1.topic, "a/b");
  EXPECT_EQ(p1.qos, Qos::AtLeastOnce);
  EXPECT_EQ(p1.packet_id, 10);
  EXPECT_EQ(p1.payload, "hi");
  EXPECT_FALSE(p1.dup);
  EXPECT_FALSE(p1.retain);
  EXPECT_TRUE(points_into(p1.payload, qos1));

  const std::string qos0_retain = bytes({0x31, 0x05, 0x00, 0x03, 'a', '/', 'b'});
  const Publish p0 = decode_as<Publish>(qos0_retain, Version::V311);
  EXPECT_EQ(p0.qos, Qos::AtMostOnce);
  EXPECT_TRUE(p0.retain);
  EXPECT_EQ(p0.packet_id, 0);
  EXPECT_EQ(p0.payload, "");

  // QoS 2 decodes (the caller refuses it); DUP is kept.
  const std::string qos2_dup = bytes({0x3C, 0x08, 0x00, 0x01, 't', 0xFF, 0xFF, 0x00, 0x00, 0x01});
  const Publish p2 = decode_as<Publish>(qos2_dup, Version::V311);
  EXPECT_EQ(p2.qos, Qos::ExactlyOnce);
  EXPECT_TRUE(p2.dup);
  EXPECT_EQ(p2.packet_id, 0xFFFF);
  EXPECT_EQ(p2.payload, "\x00\x00\x01"sv);

  // MQTT 3.1.1 section 1.5.3, figure 1.1: "A" U+2A6D4 is 00 05 41 F0 AA 9B 94.
  const std::string utf8 = bytes({0x30, 0x07, 0x00, 0x05, 0x41, 0xF0, 0xAA, 0x9B, 0x94});
  EXPECT_EQ(decode_as<Publish>(utf8, Version::V311).topic, "A\xF0\xAA\x9B\x94");
}

TEST(MqttDecode, Publish5WithProperties) {
  const std::string wire =
      bytes({0x32, 0x18, 0x00, 0x03, 'a',  '/',  'b',  0x00, 0x0A, 0x0E, 0x01, 0x01, 0x02,
             0x00, 0x00, 0x00, 0x3C, 0x03, 0x00, 0x04, 'j',  's',  'o',  'n',  '{',  '}'});
  const Publish p = decode_as<Publish>(wire, Version::V5);
  const Publish expected{
      .topic = "a/b",
      .payload = "{}",
      .qos = Qos::AtLeastOnce,
      .packet_id = 10,
      .properties = {
          .payload_format = PayloadFormat::Utf8, .message_expiry = 60, .content_type = "json"}};
  EXPECT_TRUE(p == expected);
  EXPECT_EQ(hex(encoded(expected, Version::V5)), hex(wire));
}

TEST(MqttDecode, Publish5TopicAliasStandsForAnEmptyTopic) {
  const std::string wire = packet(0x30, str("") + props(bytes({0x23, 0x00, 0x07})) + "x");
  const Publish p = decode_as<Publish>(wire, Version::V5);
  EXPECT_EQ(p.topic, "");
  EXPECT_EQ(p.topic_alias, 7);
  EXPECT_EQ(p.payload, "x");
}

TEST(MqttDecode, Publish5KeepsRepeatedUserPropertiesInOrder) {
  const std::string user = bytes({0x26}) + str("k") + str("1") + bytes({0x26}) + str("k") +
                           str("2") + bytes({0x09}) + str("\x00\xFF"s);
  const std::string wire = packet(0x30, str("t") + props(user) + "payload");
  const Publish p = decode_as<Publish>(wire, Version::V5);
  ASSERT_EQ(p.properties.user_properties.size(), 2u);
  EXPECT_EQ(p.properties.user_properties[0].value, "1");
  EXPECT_EQ(p.properties.user_properties[1].value, "2");
  EXPECT_EQ(p.properties.correlation_data, "\x00\xFF"sv);
  EXPECT_EQ(p.payload, "payload");
}

TEST(MqttDecode, PubAckInEveryLength) {
  EXPECT_EQ(decode_as<PubAck>(bytes({0x40, 0x02, 0x00, 0x01}), Version::V311).packet_id, 1);
  const PubAck v5_short = decode_as<PubAck>(bytes({0x40, 0x02, 0x12, 0x34}), Version::V5);
  EXPECT_EQ(v5_short.packet_id, 0x1234);
  EXPECT_EQ(v5_short.reason, ReasonCode::Success);
  const PubAck v5_reason = decode_as<PubAck>(bytes({0x40, 0x03, 0x00, 0x01, 0x10}), Version::V5);
  EXPECT_EQ(v5_reason.reason, ReasonCode::NoMatchingSubscribers);
  const PubAck v5_empty_props =
      decode_as<PubAck>(bytes({0x40, 0x04, 0x00, 0x01, 0x80, 0x00}), Version::V5);
  EXPECT_EQ(v5_empty_props.reason, ReasonCode::UnspecifiedError);
  const std::string full = bytes({0x40, 0x09, 0x00, 0x01, 0x87, 0x05, 0x1F, 0x00, 0x02, 'n', 'o'});
  const PubAck a = decode_as<PubAck>(full, Version::V5);
  EXPECT_EQ(a.reason, ReasonCode::NotAuthorized);
  EXPECT_EQ(a.reason_string, "no");
}

TEST(MqttDecode, Subscribe311) {
  const std::string wire =
      packet(0x82, bytes({0x00, 0x0A}) + str("a/+") + bytes({0x01}) + str("b/#") + bytes({0x00}));
  const Subscribe s = decode_as<Subscribe>(wire, Version::V311);
  EXPECT_EQ(s.packet_id, 10);
  ASSERT_EQ(s.subscriptions.size(), 2u);
  EXPECT_EQ(s.subscriptions[0].filter, "a/+");
  EXPECT_EQ(s.subscriptions[0].max_qos, Qos::AtLeastOnce);
  EXPECT_EQ(s.subscriptions[1].filter, "b/#");
  EXPECT_EQ(s.subscriptions[1].max_qos, Qos::AtMostOnce);
  EXPECT_EQ(hex(encoded(s, Version::V311)), hex(wire));
}

TEST(MqttDecode, Subscribe5WithOptionsAndProperties) {
  // Subscription Identifier 128 (80 01), options QoS 1 | No Local | RAP | Retain Handling 2.
  const std::string wire = packet(
      0x82, bytes({0x00, 0x0B}) + props(bytes({0x0B, 0x80, 0x01, 0x26}) + str("n") + str("v")) +
                str("a/b") + bytes({0x2D}) + str("$share/grp/x/+") + bytes({0x00}));
  const Subscribe s = decode_as<Subscribe>(wire, Version::V5);
  const Subscribe expected{.packet_id = 11,
                           .subscriptions = {{.filter = "a/b",
                                              .max_qos = Qos::AtLeastOnce,
                                              .no_local = true,
                                              .retain_as_published = true,
                                              .retain_handling = RetainHandling::DoNotSend},
                                             {.filter = "$share/grp/x/+"}},
                           .subscription_id = 128,
                           .user_properties = {{"n", "v"}}};
  EXPECT_TRUE(s == expected);
  EXPECT_EQ(hex(encoded(expected, Version::V5)), hex(wire));
}

TEST(MqttDecode, UnsubscribeInBothVersions) {
  const std::string v311 = packet(0xA2, bytes({0x00, 0x05}) + str("a/+") + str("#"));
  const Unsubscribe u = decode_as<Unsubscribe>(v311, Version::V311);
  EXPECT_EQ(u.packet_id, 5);
  EXPECT_EQ(u.filters, (std::vector<std::string_view>{"a/+", "#"}));
  EXPECT_EQ(hex(encoded(u, Version::V311)), hex(v311));

  const std::string v5 =
      packet(0xA2, bytes({0x00, 0x05}) + props(bytes({0x26}) + str("a") + str("b")) + str("x"));
  const Unsubscribe u5 = decode_as<Unsubscribe>(v5, Version::V5);
  EXPECT_EQ(u5.filters, (std::vector<std::string_view>{"x"}));
  EXPECT_EQ(u5.user_properties, (std::vector<UserProperty>{{"a", "b"}}));
  EXPECT_EQ(hex(encoded(u5, Version::V5)), hex(v5));
}

TEST(MqttDecode, PingReqInBothVersions) {
  for (Version v : {Version::V311, Version::V5}) {
    decode_as<PingReq>(bytes({0xC0, 0x00}), v);
    EXPECT_EQ(hex(encoded(PingReq{}, v)), "c0 00");
  }
}

TEST(MqttDecode, DisconnectInEveryForm) {
  decode_as<Disconnect>(bytes({0xE0, 0x00}), Version::V311);
  EXPECT_EQ(decode_as<Disconnect>(bytes({0xE0, 0x00}), Version::V5).reason, ReasonCode::Success);
  EXPECT_EQ(decode_as<Disconnect>(bytes({0xE0, 0x01, 0x04}), Version::V5).reason,
            ReasonCode::DisconnectWithWill);
  const std::string full =
      packet(0xE0, bytes({0x00}) + props(bytes({0x11, 0, 0, 0, 0, 0x1F}) + str("bye")));
  const Disconnect d = decode_as<Disconnect>(full, Version::V5);
  EXPECT_EQ(d.reason, ReasonCode::Success);
  EXPECT_EQ(d.session_expiry, 0u);
  EXPECT_EQ(d.reason_string, "bye");
}

TEST(MqttDecode, AuthSoThatItCanBeRefused) {
  EXPECT_EQ(decode_as<Auth>(bytes({0xF0, 0x00}), Version::V5).reason, ReasonCode::Success);
  const std::string wire =
      packet(0xF0, bytes({0x18}) + props(bytes({0x15}) + str("SCRAM") + bytes({0x16}) + str("x")));
  const Auth a = decode_as<Auth>(wire, Version::V5);
  EXPECT_EQ(a.reason, ReasonCode::ContinueAuthentication);
  EXPECT_EQ(a.authentication_method, "SCRAM");
  EXPECT_EQ(a.authentication_data, "x");
  EXPECT_EQ(hex(encoded(a, Version::V5)), hex(wire));
}

// --- streaming --------------------------------------------------------------------------------

TEST(MqttStream, EveryStrictPrefixNeedsMore) {
  const std::string big_payload(300, 'p');  // a 2-byte Remaining Length
  const std::vector<std::pair<std::string, std::optional<Version>>> wires = {
      {connect311(0xC2, str("c") + str("u") + str("p")), std::nullopt},
      {connect5(0x02, bytes({0x11, 0, 0, 0, 9}), str("c")), std::nullopt},
      {packet(0x32, str("a/b") + bytes({0, 1}) + big_payload), Version::V311},
      {packet(0x30, str("t") + props(bytes({0x23, 0, 1})) + big_payload), Version::V5},
      {bytes({0x40, 0x03, 0x00, 0x01, 0x10}), Version::V5},
      {packet(0x82, bytes({0, 1}) + str("a/#") + bytes({1})), Version::V311},
      {packet(0xA2, bytes({0, 1}) + props("") + str("a")), Version::V5},
      {bytes({0xC0, 0x00}), Version::V5},
      {bytes({0xE0, 0x01, 0x04}), Version::V5},
  };
  for (const auto& [wire, version] : wires) {
    for (size_t n = 0; n < wire.size(); ++n) {
      const DecodeResult r = decode(std::string_view(wire).substr(0, n), state(version));
      ASSERT_EQ(r.status, DecodeStatus::NeedMore) << hex(wire) << " cut at " << n;
      const size_t header = wire.size() > 129 ? 3 : 2;
      EXPECT_EQ(r.needed, n >= header ? wire.size() - n : 0) << hex(wire) << " cut at " << n;
    }
    const DecodeResult r = decode(wire, state(version));
    EXPECT_EQ(r.status, DecodeStatus::Done) << hex(wire);
    EXPECT_EQ(r.consumed, wire.size());
  }
}

TEST(MqttStream, PacketsFollowEachOtherInOneBuffer) {
  const std::string buf = connect5(0x02, "", str("c")) + packet(0x30, str("t") + props("") + "1") +
                          bytes({0xC0, 0x00}) + bytes({0xE0});
  DecodeOptions options;
  std::string_view rest = buf;
  std::vector<size_t> kinds;
  while (true) {
    const DecodeResult r = decode(rest, options);
    if (r.status != DecodeStatus::Done) {
      EXPECT_EQ(r.status, DecodeStatus::NeedMore);
      break;
    }
    if (const auto* c = std::get_if<Connect>(&r.packet)) options.version = c->version;
    kinds.push_back(r.packet.index());
    rest.remove_prefix(r.consumed);
  }
  EXPECT_EQ(kinds, (std::vector<size_t>{0, 1, 5}));  // Connect, Publish, PingReq
  EXPECT_EQ(rest, "\xE0"sv);
}

// --- malformed input --------------------------------------------------------------------------

struct Malformed {
  std::string name;
  std::string wire;
  std::optional<Version> version;  // connection state; nullopt = before CONNECT
  DecodeError error;
  uint32_t max_packet_size = 1024 * 1024;
};

std::vector<Malformed> malformed_packets() {
  const auto V3 = std::optional<Version>(Version::V311);
  const auto V5 = std::optional<Version>(Version::V5);
  const auto none = std::optional<Version>();
  const auto publish5 = [](std::string_view properties) {
    return packet(0x30, str("a/b") + props(properties) + "payload");
  };
  const auto subscribe3 = [](std::string_view filter, int options) {
    return packet(0x82, bytes({0, 1}) + str(filter) + bytes({options}));
  };
  const auto subscribe5 = [](std::string_view filter, int options) {
    return packet(0x82, bytes({0, 1, 0}) + str(filter) + bytes({options}));
  };
  using E = DecodeError;
  return {
      // fixed header
      {"remaining length of 5 bytes", bytes({0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01}), V3,
       E::BadRemainingLength},
      {"5th length byte announced", bytes({0x30, 0x80, 0x80, 0x80, 0x80}), V3,
       E::BadRemainingLength},
      {"non-minimal remaining length", bytes({0xC0, 0x80, 0x00}), V5, E::BadRemainingLength},
      {"packet type 0", bytes({0x00, 0x00}), V3, E::ReservedPacketType},
      {"AUTH on a 3.1.1 connection", bytes({0xF0, 0x00}), V3, E::ReservedPacketType},
      {"CONNACK from a client", bytes({0x20, 0x02, 0x00, 0x00}), V5, E::ServerOnlyPacket},
      {"SUBACK from a client", bytes({0x90, 0x03, 0x00, 0x01, 0x00}), V3, E::ServerOnlyPacket},
      {"UNSUBACK from a client", bytes({0xB0, 0x02, 0x00, 0x01}), V3, E::ServerOnlyPacket},
      {"PINGRESP from a client", bytes({0xD0, 0x00}), V5, E::ServerOnlyPacket},
      {"PUBREC", bytes({0x50, 0x02, 0x00, 0x01}), V5, E::Qos2Handshake},
      {"PUBREL", bytes({0x62, 0x02, 0x00, 0x01}), V3, E::Qos2Handshake},
      {"PUBCOMP", bytes({0x70, 0x02, 0x00, 0x01}), V5, E::Qos2Handshake},
      {"PINGREQ before CONNECT", bytes({0xC0, 0x00}), none, E::ExpectedConnect},
      {"PUBLISH before CONNECT", packet(0x30, str("a")), none, E::ExpectedConnect},
      {"second CONNECT", connect311(0x02, str("c")), V3, E::SecondConnect},
      {"CONNECT fixed-header flags", bytes({0x11}) + connect311(0x02, str("c")).substr(1), none,
       E::InvalidFlags},
      {"SUBSCRIBE flags 0000", bytes({0x80}) + subscribe3("a", 0).substr(1), V3, E::InvalidFlags},
      {"UNSUBSCRIBE flags 0000", packet(0xA0, bytes({0, 1}) + str("a")), V3, E::InvalidFlags},
      {"PUBACK flags 0010", bytes({0x42, 0x02, 0x00, 0x01}), V3, E::InvalidFlags},
      {"PINGREQ flags", bytes({0xC1, 0x00}), V5, E::InvalidFlags},
      {"DISCONNECT flags", bytes({0xE2, 0x00}), V5, E::InvalidFlags},
      {"PUBLISH QoS 3", packet(0x36, str("a") + bytes({0, 1})), V3, E::InvalidQos},
      {"DUP on QoS 0", packet(0x38, str("a")), V3, E::DupOnQos0},
      {"over max_packet_size", packet(0x30, str("a/b") + "12345"), V3, E::PacketTooLarge, 11},
      {"huge remaining length", bytes({0x30, 0xFF, 0xFF, 0xFF, 0x7F}), V3, E::PacketTooLarge},
      // framing of the body
      {"topic longer than the packet", packet(0x30, bytes({0, 5}) + "a"), V3, E::Truncated},
      {"packet id missing", packet(0x32, str("a")), V3, E::Truncated},
      {"subscription options missing", packet(0x82, bytes({0, 1}) + str("a")), V3, E::Truncated},
      {"CONNECT cut after the flags", packet(0x10, str("MQTT") + bytes({4, 2})), none,
       E::Truncated},
      {"CONNECT without client id", connect311(0x02, ""), none, E::Truncated},
      {"PINGREQ with a body", bytes({0xC0, 0x01, 0x00}), V3, E::TrailingBytes},
      {"3.1.1 PUBACK with a reason code", bytes({0x40, 0x03, 0x00, 0x01, 0x00}), V3,
       E::TrailingBytes},
      {"3.1.1 DISCONNECT with a body", bytes({0xE0, 0x01, 0x00}), V3, E::TrailingBytes},
      {"CONNECT with trailing bytes", connect311(0x02, str("c") + "x"), none, E::TrailingBytes},
      {"UNSUBSCRIBE with half a filter", packet(0xA2, bytes({0, 1}) + str("a") + "\x00"s), V3,
       E::Truncated},
      // UTF-8
      {"ill-formed UTF-8 topic", packet(0x30, str("\xC3\x28")), V3, E::InvalidUtf8},
      {"U+0000 in a topic", packet(0x30, str("a\0b"s)), V3, E::InvalidUtf8},
      {"surrogate in a topic", packet(0x30, str("\xED\xA0\x80")), V3, E::InvalidUtf8},
      {"overlong '/' in a topic", packet(0x30, str("\xC0\xAF")), V3, E::InvalidUtf8},
      {"code point over U+10FFFF", packet(0x30, str("\xF4\x90\x80\x80")), V3, E::InvalidUtf8},
      {"cut UTF-8 sequence", packet(0x30, str("a\xE2\x82")), V3, E::InvalidUtf8},
      {"ill-formed client id", connect311(0x02, str("\xFF")), none, E::InvalidUtf8},
      {"ill-formed username", connect311(0x82, str("c") + str("\x80")), none, E::InvalidUtf8},
      {"ill-formed reason string", packet(0x40, bytes({0, 1, 0x80}) + props("\x1F" + str("\xFE"))),
       V5, E::InvalidUtf8},
      // topics
      {"'+' in a PUBLISH topic", packet(0x30, str("a/+/c")), V3, E::InvalidTopicName},
      {"'#' in a PUBLISH topic", packet(0x30, str("a/#") + props("")), V5, E::InvalidTopicName},
      {"empty PUBLISH topic on 3.1.1", packet(0x30, str("") + "x"), V3, E::InvalidTopicName},
      {"empty topic without alias", packet(0x30, str("") + props("")), V5, E::InvalidTopicName},
      {"Will topic with '#'", connect311(0x06, str("c") + str("w/#") + str("x")), none,
       E::InvalidTopicName},
      {"empty Will topic", connect311(0x06, str("c") + str("") + str("x")), none,
       E::InvalidTopicName},
      {"filter a/#/b", subscribe3("a/#/b", 0), V3, E::InvalidTopicFilter},
      {"filter a+", subscribe3("a+", 0), V3, E::InvalidTopicFilter},
      {"empty filter", subscribe5("", 0), V5, E::InvalidTopicFilter},
      {"empty share name", subscribe5("$share//a", 0), V5, E::InvalidTopicFilter},
      {"share name without filter", subscribe5("$share/g", 0), V5, E::InvalidTopicFilter},
      {"share name with '+'", subscribe5("$share/g+/a", 0), V5, E::InvalidTopicFilter},
      {"UNSUBSCRIBE filter #/a", packet(0xA2, bytes({0, 1}) + str("#/a")), V3,
       E::InvalidTopicFilter},
      // packet identifiers and lists
      {"QoS 1 PUBLISH with packet id 0", packet(0x32, str("a") + bytes({0, 0})), V3,
       E::ZeroPacketId},
      {"PUBACK packet id 0", bytes({0x40, 0x02, 0x00, 0x00}), V5, E::ZeroPacketId},
      {"SUBSCRIBE packet id 0", packet(0x82, bytes({0, 0}) + str("a") + bytes({0})), V3,
       E::ZeroPacketId},
      {"UNSUBSCRIBE packet id 0", packet(0xA2, bytes({0, 0}) + str("a")), V3, E::ZeroPacketId},
      {"SUBSCRIBE without filters", packet(0x82, bytes({0, 1})), V3, E::NoTopicFilters},
      {"v5 SUBSCRIBE without filters", packet(0x82, bytes({0, 1, 0})), V5, E::NoTopicFilters},
      {"UNSUBSCRIBE without filters", packet(0xA2, bytes({0, 1})), V3, E::NoTopicFilters},
      // subscription options
      {"subscription QoS 3", subscribe3("a", 3), V3, E::InvalidQos},
      {"3.1.1 option bit 2", subscribe3("a", 0x04), V3, E::InvalidSubscriptionOptions},
      {"v5 option bit 6", subscribe5("a", 0x40), V5, E::InvalidSubscriptionOptions},
      {"Retain Handling 3", subscribe5("a", 0x30), V5, E::InvalidSubscriptionOptions},
      {"No Local on a shared subscription", subscribe5("$share/g/a", 0x04), V5,
       E::NoLocalOnSharedSubscription},
      // CONNECT
      {"password without username on 3.1.1", connect311(0x42, str("c") + str("p")), none,
       E::PasswordWithoutUsername},
      {"protocol name MQTX", packet(0x10, str("MQTX") + bytes({4, 2, 0, 60}) + str("c")), none,
       E::InvalidProtocolName},
      {"MQTT 3.1 (MQIsdp, level 3)", packet(0x10, str("MQIsdp") + bytes({3, 2, 0, 60}) + str("c")),
       none, E::UnsupportedProtocol},
      {"MQTT level 3", packet(0x10, str("MQTT") + bytes({3, 2, 0, 60}) + str("c")), none,
       E::UnsupportedProtocol},
      {"MQTT level 6", packet(0x10, str("MQTT") + bytes({6, 2, 0, 60}) + str("c")), none,
       E::UnsupportedProtocol},
      {"CONNECT reserved flag", connect311(0x03, str("c")), none, E::InvalidConnectFlags},
      {"Will QoS without Will", connect311(0x0A, str("c")), none, E::InvalidConnectFlags},
      {"Will Retain without Will", connect311(0x22, str("c")), none, E::InvalidConnectFlags},
      {"Will QoS 3", connect311(0x1E, str("c") + str("w") + str("x")), none, E::InvalidQos},
      {"empty client id without clean session", connect311(0x00, str("")), none,
       E::ClientIdRejected},
      // v5 properties
      {"duplicated property", publish5(bytes({0x02, 0, 0, 0, 1, 0x02, 0, 0, 0, 2})), V5,
       E::DuplicateProperty},
      {"duplicated CONNECT property", connect5(0x02, bytes({0x21, 0, 1, 0x21, 0, 2}), str("c")),
       none, E::DuplicateProperty},
      {"property length past the packet",
       packet(0x30, str("a/b") + bytes({0x05}) + bytes({0x01, 0x00})), V5, E::BadPropertyLength},
      {"property past its block", packet(0x30, str("a/b") + bytes({0x03, 0x02, 0, 0}) + "xxxx"), V5,
       E::BadPropertyLength},
      {"property string past its block",
       packet(0x30, str("a/b") + bytes({0x03, 0x03, 0x00, 0x05}) + "abcde"), V5,
       E::BadPropertyLength},
      {"property length not minimal", packet(0x30, str("a/b") + bytes({0x80, 0x00})), V5,
       E::BadPropertyLength},
      {"missing property length", packet(0x30, str("a/b")), V5, E::Truncated},
      {"undefined property 0x05", publish5(bytes({0x05, 0x00})), V5, E::UnknownProperty},
      {"property 0x7F", publish5(bytes({0x7F, 0x00})), V5, E::UnknownProperty},
      {"two-byte property identifier", publish5(bytes({0x81, 0x01, 0x00})), V5, E::UnknownProperty},
      {"Session Expiry in PUBLISH", publish5(bytes({0x11, 0, 0, 0, 1})), V5, E::UnknownProperty},
      {"Subscription Identifier from a client", publish5(bytes({0x0B, 0x01})), V5,
       E::UnknownProperty},
      {"Topic Alias in a Will",
       connect5(0x06, "", str("c") + props(bytes({0x23, 0, 1})) + str("w") + str("x")), none,
       E::UnknownProperty},
      {"Receive Maximum 0", connect5(0x02, bytes({0x21, 0, 0}), str("c")), none,
       E::InvalidPropertyValue},
      {"Maximum Packet Size 0", connect5(0x02, bytes({0x27, 0, 0, 0, 0}), str("c")), none,
       E::InvalidPropertyValue},
      {"Request Problem Information 2", connect5(0x02, bytes({0x17, 2}), str("c")), none,
       E::InvalidPropertyValue},
      {"Authentication Data without Method", connect5(0x02, "\x16" + str("x"), str("c")), none,
       E::InvalidPropertyValue},
      {"Payload Format Indicator 2", publish5(bytes({0x01, 0x02})), V5, E::InvalidPropertyValue},
      {"Response Topic with '#'", publish5("\x08" + str("r/#")), V5, E::InvalidPropertyValue},
      {"Subscription Identifier 0", packet(0x82, bytes({0, 1, 2, 0x0B, 0}) + str("a") + "\x00"s),
       V5, E::InvalidPropertyValue},
      {"Topic Alias 0", publish5(bytes({0x23, 0, 0})), V5, E::InvalidTopicAlias},
      // reason codes
      {"PUBACK reason 0x05", bytes({0x40, 0x03, 0x00, 0x01, 0x05}), V5, E::InvalidReasonCode},
      {"DISCONNECT reason 0x01", bytes({0xE0, 0x01, 0x01}), V5, E::InvalidReasonCode},
      {"AUTH reason 0x87", bytes({0xF0, 0x02, 0x87, 0x00}), V5, E::InvalidReasonCode},
      {"AUTH reason without properties", bytes({0xF0, 0x01, 0x18}), V5, E::Truncated},
  };
}

TEST(MqttMalformed, EachPacketGivesItsError) {
  for (const Malformed& m : malformed_packets()) {
    SCOPED_TRACE(m.name + ": " + hex(m.wire));
    const DecodeResult r = decode(m.wire, state(m.version, m.max_packet_size));
    EXPECT_EQ(r.status, DecodeStatus::Error);
    EXPECT_EQ(describe(r.error), describe(m.error));
    EXPECT_EQ(r.consumed, 0u);
    EXPECT_NE(r.reason(), ReasonCode::Success);
  }
}

TEST(MqttMalformed, ReasonCodesForTheCaller) {
  EXPECT_EQ(reason_code(DecodeError::Truncated), ReasonCode::MalformedPacket);
  EXPECT_EQ(reason_code(DecodeError::InvalidUtf8), ReasonCode::MalformedPacket);
  EXPECT_EQ(reason_code(DecodeError::DuplicateProperty), ReasonCode::ProtocolError);
  EXPECT_EQ(reason_code(DecodeError::ServerOnlyPacket), ReasonCode::ProtocolError);
  EXPECT_EQ(reason_code(DecodeError::PacketTooLarge), ReasonCode::PacketTooLarge);
  EXPECT_EQ(reason_code(DecodeError::UnsupportedProtocol), ReasonCode::UnsupportedProtocolVersion);
  EXPECT_EQ(reason_code(DecodeError::ClientIdRejected), ReasonCode::ClientIdentifierNotValid);
  EXPECT_EQ(reason_code(DecodeError::InvalidTopicName), ReasonCode::TopicNameInvalid);
  EXPECT_EQ(reason_code(DecodeError::InvalidTopicAlias), ReasonCode::TopicAliasInvalid);
  // The 3.1.1 answers to the two CONNECT errors it has a return code for.
  std::string out;
  ASSERT_EQ(
      encode(ConnAck{.reason = reason_code(DecodeError::UnsupportedProtocol)}, Version::V311, out),
      EncodeError::None);
  ASSERT_EQ(
      encode(ConnAck{.reason = reason_code(DecodeError::ClientIdRejected)}, Version::V311, out),
      EncodeError::None);
  EXPECT_EQ(hex(out), "20 02 00 01 20 02 00 02");
}

TEST(MqttMalformed, Utf8Validation) {
  EXPECT_TRUE(valid_utf8(""));
  EXPECT_TRUE(valid_utf8("plain ascii text longer than eight bytes"));
  EXPECT_TRUE(valid_utf8("\xC2\x80 \xDF\xBF \xE0\xA0\x80 \xED\x9F\xBF \xEE\x80\x80 \xEF\xBF\xBF"));
  EXPECT_TRUE(valid_utf8("\xF0\x90\x80\x80 \xF4\x8F\xBF\xBF"));  // U+10000, U+10FFFF
  EXPECT_TRUE(valid_utf8("\x01\x1F\x7F\xC2\x9F"));  // controls: a "SHOULD NOT", accepted
  EXPECT_FALSE(valid_utf8("12345678\0"s));
  EXPECT_FALSE(valid_utf8("\xC1\xBF"));
  EXPECT_FALSE(valid_utf8("\xE0\x9F\xBF"));
  EXPECT_FALSE(valid_utf8("\xED\xBF\xBF"));
  EXPECT_FALSE(valid_utf8("\xF0\x8F\xBF\xBF"));
  EXPECT_FALSE(valid_utf8("\xF5\x80\x80\x80"));
  EXPECT_FALSE(valid_utf8("\xFF"));
  EXPECT_FALSE(valid_utf8("abc\x80"));
  EXPECT_FALSE(valid_utf8("\xE2\x82"));
}

// --- encoding: byte-exact vectors -------------------------------------------------------------

TEST(MqttEncode, ConnAck311) {
  EXPECT_EQ(hex(encoded(ConnAck{}, Version::V311)), "20 02 00 00");
  EXPECT_EQ(hex(encoded(ConnAck{.session_present = true}, Version::V311)), "20 02 01 00");
  const std::pair<ReasonCode, std::string> codes[] = {
      {ReasonCode::UnsupportedProtocolVersion, "20 02 00 01"},
      {ReasonCode::ClientIdentifierNotValid, "20 02 00 02"},
      {ReasonCode::ServerUnavailable, "20 02 00 03"},
      {ReasonCode::UnspecifiedError, "20 02 00 03"},
      {ReasonCode::BadUserNameOrPassword, "20 02 00 04"},
      {ReasonCode::NotAuthorized, "20 02 00 05"},
  };
  for (const auto& [reason, wire] : codes) {
    // session present is cleared on failure [MQTT-3.2.2-4]
    EXPECT_EQ(hex(encoded(ConnAck{.session_present = true, .reason = reason}, Version::V311)),
              wire);
  }
}

TEST(MqttEncode, ConnAck5WithTheGatewaysProperties) {
  const ConnAck ack{.maximum_qos = Qos::AtLeastOnce,
                    .retain_available = false,
                    .assigned_client_id = "abc",
                    .topic_alias_maximum = 0,
                    .wildcard_subscription_available = false,
                    .subscription_ids_available = false,
                    .shared_subscription_available = false,
                    .server_keep_alive = 60};
  EXPECT_EQ(
      hex(encoded(ack, Version::V5)),
      hex(bytes({0x20, 0x19, 0x00, 0x00, 0x16, 0x24, 0x01, 0x25, 0x00, 0x12, 0x00, 0x03, 'a', 'b',
                 'c',  0x22, 0x00, 0x00, 0x28, 0x00, 0x29, 0x00, 0x2A, 0x00, 0x13, 0x00, 0x3C})));
  EXPECT_EQ(hex(encoded(ConnAck{}, Version::V5)), "20 03 00 00 00");
  EXPECT_EQ(hex(encoded(ConnAck{.reason = ReasonCode::BadUserNameOrPassword, .reason_string = "no"},
                        Version::V5)),
            "20 08 00 86 05 1f 00 02 6e 6f");
}

TEST(MqttEncode, PubAck) {
  EXPECT_EQ(hex(encoded(PubAck{.packet_id = 1}, Version::V311)), "40 02 00 01");
  // v5 omits a Success reason code when there are no properties [MQTT-3.4.2.1].
  EXPECT_EQ(hex(encoded(PubAck{.packet_id = 1}, Version::V5)), "40 02 00 01");
  EXPECT_EQ(hex(encoded(PubAck{.packet_id = 1, .reason = ReasonCode::NotAuthorized}, Version::V5)),
            "40 03 00 01 87");
  EXPECT_EQ(hex(encoded(PubAck{.packet_id = 0x1234, .reason = ReasonCode::PayloadFormatInvalid},
                        Version::V5)),
            "40 03 12 34 99");
  EXPECT_EQ(hex(encoded(
                PubAck{.packet_id = 1, .reason = ReasonCode::NotAuthorized, .reason_string = "no"},
                Version::V5)),
            "40 09 00 01 87 05 1f 00 02 6e 6f");
  EXPECT_EQ(hex(encoded(PubAck{.packet_id = 1, .user_properties = {{"a", "b"}}}, Version::V5)),
            "40 0b 00 01 00 07 26 00 01 61 00 01 62");
  // 3.1.1 has no negative PUBACK; 0x10 is a success code, so it is a plain PUBACK there.
  EXPECT_EQ(hex(encoded(PubAck{.packet_id = 1, .reason = ReasonCode::NoMatchingSubscribers},
                        Version::V311)),
            "40 02 00 01");
}

TEST(MqttEncode, SubAck) {
  EXPECT_EQ(
      hex(encoded(SubAck{.packet_id = 10, .reasons = {ReasonCode::GrantedQos1}}, Version::V311)),
      "90 03 00 0a 01");
  EXPECT_EQ(hex(encoded(SubAck{.packet_id = 10,
                               .reasons = {ReasonCode::Success, ReasonCode::NotAuthorized,
                                           ReasonCode::WildcardSubscriptionsNotSupported}},
                        Version::V311)),
            "90 05 00 0a 00 80 80");
  EXPECT_EQ(hex(encoded(SubAck{.packet_id = 10,
                               .reasons = {ReasonCode::NotAuthorized,
                                           ReasonCode::WildcardSubscriptionsNotSupported}},
                        Version::V5)),
            "90 05 00 0a 00 87 a2");
}

TEST(MqttEncode, UnsubAck) {
  const UnsubAck ack{.packet_id = 11,
                     .reasons = {ReasonCode::Success, ReasonCode::NoSubscriptionExisted}};
  EXPECT_EQ(hex(encoded(ack, Version::V311)), "b0 02 00 0b");
  EXPECT_EQ(hex(encoded(ack, Version::V5)), "b0 05 00 0b 00 00 11");
}

TEST(MqttEncode, PingRespAndDisconnect) {
  EXPECT_EQ(hex(encoded(PingResp{}, Version::V311)), "d0 00");
  EXPECT_EQ(hex(encoded(PingResp{}, Version::V5)), "d0 00");
  EXPECT_EQ(hex(encoded(Disconnect{}, Version::V311)), "e0 00");
  EXPECT_EQ(hex(encoded(Disconnect{}, Version::V5)), "e0 00");
  EXPECT_EQ(hex(encoded(Disconnect{.reason = ReasonCode::ServerShuttingDown}, Version::V5)),
            "e0 01 8b");
  EXPECT_EQ(
      hex(encoded(Disconnect{.reason = ReasonCode::ServerShuttingDown, .reason_string = "bye"},
                  Version::V5)),
      "e0 08 8b 06 1f 00 03 62 79 65");
}

TEST(MqttEncode, ClientPackets) {
  EXPECT_EQ(hex(encoded(Connect{.version = Version::V311, .keep_alive = 60, .client_id = "c"},
                        Version::V311)),
            "10 0d 00 04 4d 51 54 54 04 02 00 3c 00 01 63");
  EXPECT_EQ(hex(encoded(Connect{.version = Version::V5, .keep_alive = 60, .client_id = "c"},
                        Version::V5)),
            "10 0e 00 04 4d 51 54 54 05 02 00 3c 00 00 01 63");
  EXPECT_EQ(hex(encoded(Publish{.topic = "a/b", .payload = "hi", .retain = true}, Version::V5)),
            "31 08 00 03 61 2f 62 00 68 69");
  EXPECT_EQ(
      hex(encoded(Subscribe{.packet_id = 1, .subscriptions = {{.filter = "a/#"}}}, Version::V5)),
      "82 09 00 01 00 00 03 61 2f 23 00");
  EXPECT_EQ(hex(encoded(Auth{}, Version::V5)), "f0 00");
  EXPECT_EQ(hex(encoded(Auth{.reason = ReasonCode::ReAuthenticate}, Version::V5)), "f0 02 19 00");
}

TEST(MqttEncode, RefusesWhatItCannotSayAndAppendsNothing) {
  std::string out = "keep";
  const std::string long_topic(70'000, 't');
  EXPECT_EQ(encode(Publish{.topic = long_topic}, Version::V311, out), EncodeError::StringTooLong);
  EXPECT_EQ(encode(Connect{.version = Version::V5}, Version::V311, out),
            EncodeError::VersionMismatch);
  EXPECT_EQ(encode(Auth{}, Version::V311, out), EncodeError::NotInVersion);
  EXPECT_EQ(encode(PubAck{.packet_id = 1, .reason = ReasonCode::NotAuthorized}, Version::V311, out),
            EncodeError::NotInVersion);
  EXPECT_EQ(encode(Disconnect{.reason = ReasonCode::ServerShuttingDown}, Version::V311, out),
            EncodeError::NotInVersion);
  EXPECT_EQ(encode(Publish{.topic = "a", .qos = Qos::AtLeastOnce}, Version::V5, out),
            EncodeError::InvalidField);
  EXPECT_EQ(encode(PubAck{.packet_id = 1, .reason = ReasonCode::GrantedQos2}, Version::V5, out),
            EncodeError::InvalidField);
  EXPECT_EQ(encode(ConnAck{.maximum_qos = Qos::ExactlyOnce}, Version::V5, out),
            EncodeError::InvalidField);
  EXPECT_EQ(encode(Subscribe{.packet_id = 1}, Version::V5, out), EncodeError::InvalidField);
  EXPECT_EQ(encode(PubAck{.packet_id = 1, .reason_string = long_topic}, Version::V5, out),
            EncodeError::StringTooLong);
  EXPECT_EQ(out, "keep");
}

// --- round trips ------------------------------------------------------------------------------

TEST(MqttRoundTrip, EveryClientPacketInBothVersions) {
  const std::string binary = "\x00\x01\xFF"s;
  for (Version v : {Version::V311, Version::V5}) {
    SCOPED_TRACE(static_cast<int>(v));
    const bool v5 = v == Version::V5;
    Connect c{.version = v,
              .clean_start = false,
              .keep_alive = 0xFFFF,
              .client_id = "client-\xC3\xA9",
              .username = "user",
              .password = binary,
              .will = Will{.topic = "last/will", .payload = binary, .qos = Qos::ExactlyOnce}};
    if (v5) {
      c.session_expiry = 0xFFFFFFFF;
      c.receive_maximum = 1;
      c.maximum_packet_size = 1;
      c.topic_alias_maximum = 0xFFFF;
      c.request_response_information = true;
      c.request_problem_information = false;
      c.authentication_method = "m";
      c.authentication_data = binary;
      c.user_properties = {{"", ""}, {"k", "v"}, {"k", "v"}};
      c.will->delay_interval = 1;
      c.will->properties = {.payload_format = PayloadFormat::Utf8,
                            .message_expiry = 0,
                            .content_type = "",
                            .response_topic = "r",
                            .correlation_data = "",
                            .user_properties = {{"x", "y"}}};
    }
    expect_round_trip(c, v);
    expect_round_trip(Connect{.version = v, .client_id = "c"}, v);

    Publish p{.topic = "t/\xE2\x82\xAC",
              .payload = binary,
              .qos = Qos::AtLeastOnce,
              .dup = true,
              .retain = true,
              .packet_id = 65535};
    if (v5) {
      p.topic_alias = 3;
      p.properties = {.payload_format = PayloadFormat::Unspecified,
                      .message_expiry = 1,
                      .content_type = "ct",
                      .response_topic = "resp/topic",
                      .correlation_data = binary,
                      .user_properties = {{"a", "1"}, {"a", "2"}}};
    }
    expect_round_trip(p, v);
    expect_round_trip(Publish{.topic = "q", .payload = "", .qos = Qos::ExactlyOnce, .packet_id = 2},
                      v);
    if (v5) expect_round_trip(Publish{.payload = "aliased", .topic_alias = 9}, v);

    expect_round_trip(PubAck{.packet_id = 7}, v);
    if (v5) {
      expect_round_trip(PubAck{.packet_id = 7, .reason = ReasonCode::QuotaExceeded}, v);
      expect_round_trip(PubAck{.packet_id = 7,
                               .reason = ReasonCode::ImplementationSpecificError,
                               .reason_string = "r",
                               .user_properties = {{"u", "p"}}},
                        v);
    }

    Subscribe s{
        .packet_id = 9,
        .subscriptions = {{.filter = "#", .max_qos = Qos::ExactlyOnce}, {.filter = "+/x/+"}}};
    if (v5) {
      s.subscriptions[1].no_local = true;
      s.subscriptions[1].retain_handling = RetainHandling::SendIfNewSubscription;
      s.subscription_id = 268'435'455;
      s.user_properties = {{"k", "v"}};
    }
    expect_round_trip(s, v);

    Unsubscribe u{.packet_id = 3, .filters = {"a/b", "+", "#"}};
    if (v5) u.user_properties = {{"k", "v"}};
    expect_round_trip(u, v);

    expect_round_trip(PingReq{}, v);
    expect_round_trip(Disconnect{}, v);
    if (v5) {
      expect_round_trip(Disconnect{.reason = ReasonCode::DisconnectWithWill}, v);
      expect_round_trip(Disconnect{.reason = ReasonCode::AdministrativeAction,
                                   .session_expiry = 30,
                                   .reason_string = "admin",
                                   .server_reference = "other:1883",
                                   .user_properties = {{"a", "b"}}},
                        v);
      expect_round_trip(Auth{}, v);
      expect_round_trip(Auth{.reason = ReasonCode::ContinueAuthentication,
                             .authentication_method = "SCRAM-SHA-1",
                             .authentication_data = binary,
                             .reason_string = "more",
                             .user_properties = {{"a", "b"}}},
                        v);
    }
  }
}

TEST(MqttRoundTrip, PacketVariantEncoderMatchesTheTypedOnes) {
  const Packet packet = Publish{.topic = "a", .payload = "b"};
  std::string via_variant;
  ASSERT_EQ(encode(packet, Version::V5, via_variant), EncodeError::None);
  EXPECT_EQ(via_variant, encoded(std::get<Publish>(packet), Version::V5));
}

// --- topics -----------------------------------------------------------------------------------

TEST(MqttTopic, NamesAndFilters) {
  for (std::string_view ok : {"a", "/", "a/b", "//", " ", "$SYS/x", "\xC3\xA9"}) {
    EXPECT_TRUE(valid_topic_name(ok)) << ok;
  }
  for (std::string_view bad : {""sv, "a/+"sv, "#"sv, "a+b"sv, "\xFF"sv, "a\0"sv}) {
    EXPECT_FALSE(valid_topic_name(bad)) << hex(bad);
  }
  for (std::string_view ok : {"#", "+", "/", "//", "+/+", "a/+/#", "/#", "+/#", "$share/g/a"}) {
    EXPECT_TRUE(valid_topic_filter(ok)) << ok;
    EXPECT_TRUE(std::holds_alternative<TopicFilter>(TopicFilter::compile(ok))) << ok;
  }
  for (std::string_view bad :
       {""sv, "a/#/b"sv, "#/"sv, "a#"sv, "a/b+"sv, "+a"sv, "##"sv, "a/++"sv, "\xC0\x80"sv}) {
    EXPECT_FALSE(valid_topic_filter(bad)) << hex(bad);
    const auto compiled = TopicFilter::compile(bad);
    ASSERT_TRUE(std::holds_alternative<std::string>(compiled)) << hex(bad);
    EXPECT_NE(std::get<std::string>(compiled).find("topic filter"), std::string::npos);
  }
  EXPECT_EQ(std::get<std::string>(TopicFilter::compile("a/#/b")),
            "topic filter \"a/#/b\" has a '#' that is not its last level");
}

struct MatchCase {
  std::string_view filter;
  std::string_view topic;
  bool matches;
  std::vector<std::string_view> captures;
};

TEST(MqttTopic, FilterMatchTable) {
  const MatchCase cases[] = {
      // MQTT 5.0 section 4.7.1.2 (multi-level wildcard) examples
      {"sport/tennis/player1/#", "sport/tennis/player1", true, {""}},
      {"sport/tennis/player1/#", "sport/tennis/player1/ranking", true, {"ranking"}},
      {"sport/tennis/player1/#", "sport/tennis/player1/score/wimbledon", true, {"score/wimbledon"}},
      {"sport/#", "sport", true, {""}},
      {"sport/#", "sport/", true, {""}},
      {"sport/#", "sports", false, {}},
      {"#", "a/b/c", true, {"a/b/c"}},
      {"#", "/", true, {"/"}},
      // section 4.7.1.3 (single-level wildcard) examples
      {"sport/tennis/+", "sport/tennis/player1", true, {"player1"}},
      {"sport/tennis/+", "sport/tennis/player2", true, {"player2"}},
      {"sport/tennis/+", "sport/tennis/player1/ranking", false, {}},
      {"sport/+", "sport", false, {}},
      {"sport/+", "sport/", true, {""}},
      {"+/+", "/finance", true, {"", "finance"}},
      {"/+", "/finance", true, {"finance"}},
      {"+", "/finance", false, {}},
      // section 4.7.2: topics beginning with '$'
      {"#", "$SYS/broker", false, {}},
      {"+/monitor/Clients", "$SYS/monitor/Clients", false, {}},
      {"$SYS/#", "$SYS/monitor/Clients", true, {"monitor/Clients"}},
      {"$SYS/monitor/+", "$SYS/monitor/Clients", true, {"Clients"}},
      {"a/#", "a/$b", true, {"$b"}},
      // the gateway's routes
      {"devices/+/telemetry", "devices/d-7/telemetry", true, {"d-7"}},
      {"devices/+/telemetry", "devices/d-7/status", false, {}},
      {"devices/+/telemetry", "devices/d-7/telemetry/x", false, {}},
      {"devices/+/telemetry", "devices/telemetry", false, {}},
      {"+/+/#", "a/b", true, {"a", "b", ""}},
      {"+/+/#", "a/b/c/d", true, {"a", "b", "c/d"}},
      {"a/+/+", "a//", true, {"", ""}},
      {"a/b", "a/b", true, {}},
      {"a/b", "a/B", false, {}},
      {"a/b", "a/b/", false, {}},
      {"a/b", "a", false, {}},
      {"a/b/#", "a", false, {}},
      {"a//b", "a//b", true, {}},
      {"\xC3\xA9/+", "\xC3\xA9/\xE2\x82\xAC", true, {"\xE2\x82\xAC"}},
  };
  for (const MatchCase& c : cases) {
    SCOPED_TRACE(std::string(c.filter) + " ~ " + std::string(c.topic));
    const TopicFilter filter = std::get<TopicFilter>(TopicFilter::compile(c.filter));
    const auto captures = filter.match(c.topic);
    EXPECT_EQ(captures.has_value(), c.matches);
    EXPECT_EQ(filter.matches(c.topic), c.matches);
    if (captures) {
      EXPECT_EQ(*captures, c.captures);
      EXPECT_EQ(captures->size(), filter.wildcards());
      for (std::string_view capture : *captures) EXPECT_TRUE(points_into(capture, c.topic));
    }
  }
}

TEST(MqttTopic, CompiledFilterSurvivesMoves) {
  std::vector<TopicFilter> filters;
  // No reserve(): the reallocations are the point, they move the short (SSO) texts.
  for (int i = 0; i < 20; ++i) {
    filters.push_back(  // NOLINT(performance-inefficient-vector-operation)
        std::get<TopicFilter>(TopicFilter::compile("s/" + std::to_string(i) + "/+")));
  }
  EXPECT_EQ(filters[3].text(), "s/3/+");
  EXPECT_TRUE(filters[3].matches("s/3/x"));
  EXPECT_FALSE(filters[3].matches("s/4/x"));
}

TEST(MqttTopic, PathTemplates) {
  EXPECT_EQ(validate_path_template("/ingest/{1}", 1), std::nullopt);
  EXPECT_EQ(validate_path_template("/x/{2}/{1}/{1}?q={2}", 2), std::nullopt);
  EXPECT_EQ(validate_path_template("/static", 0), std::nullopt);
  for (std::string_view bad :
       {"/ingest/{2}", "/{0}", "/{01}", "/a/{x}", "/a/{}", "/a}", "/a/{1", "/a/../{1}", "./{1}"}) {
    EXPECT_NE(validate_path_template(bad, 1), std::nullopt) << bad;
  }
  EXPECT_EQ(*validate_path_template("/ingest/{2}", 1),
            "path template \"/ingest/{2}\" uses {2} but its topic filter has 1 wildcard(s)");

  const auto expand1 = [](std::string_view tmpl, std::string_view capture) {
    const std::string_view captures[] = {capture};
    return expand(tmpl, captures);
  };
  EXPECT_EQ(expand1("/ingest/{1}", "d-7"), "/ingest/d-7");
  EXPECT_EQ(expand1("/ingest/{1}", "a b&c=d+e%f;g:h@i?j#k"),
            "/ingest/a%20b%26c%3Dd%2Be%25f%3Bg%3Ah%40i%3Fj%23k");
  EXPECT_EQ(expand1("/in/{1}", "a/b/c"), "/in/a/b/c");  // a '#' capture keeps its levels
  EXPECT_EQ(expand1("/in/{1}", "\xC3\xA9~_.-"), "/in/%C3%A9~_.-");
  EXPECT_EQ(expand1("/in/{1}", ""), "/in/");
  EXPECT_EQ(expand1("/in/{1}.json", ".."), "/in/...json");
  EXPECT_EQ(expand1("/in/{1}", "..."), "/in/...");
  EXPECT_EQ(expand1("/in?x={1}", ".."), "/in?x=..");
  // Dot segments could climb out of the template's prefix: refused.
  EXPECT_EQ(expand1("/in/{1}", ".."), std::nullopt);
  EXPECT_EQ(expand1("/in/{1}", "."), std::nullopt);
  EXPECT_EQ(expand1("/in/{1}", "a/../../admin"), std::nullopt);
  EXPECT_EQ(expand1("/in/{1}/x", "a/.."), std::nullopt);

  const std::string_view two[] = {"a", "b"};
  EXPECT_EQ(expand("/x/{2}/{1}", two), "/x/b/a");
  EXPECT_EQ(expand("/x/{3}/{a}/}", two), "/x//{a}/}");  // lenient: validate first

  // The documented end-to-end use.
  const TopicFilter route = std::get<TopicFilter>(TopicFilter::compile("sensors/#"));
  const auto captures = route.match("sensors/floor 1/temp");
  ASSERT_TRUE(captures.has_value());
  EXPECT_EQ(expand("/ingest/{1}", *captures), "/ingest/floor%201/temp");
}

}  // namespace
}  // namespace sluice::mqtt

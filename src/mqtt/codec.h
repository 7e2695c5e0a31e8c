// Strict MQTT 3.1.1 / 5.0 codec: control packets from clients in, packets to clients out. No I/O.
//
//   // Per connection: the version is unknown until CONNECT has been decoded.
//   mqtt::DecodeOptions options{.max_packet_size = 256 * 1024};
//   mqtt::DecodeResult r = mqtt::decode(read_buffer, options);   // call again as bytes arrive
//   switch (r.status) {
//     case DecodeStatus::NeedMore: read more (r.needed bytes, when non-zero); break;
//     case DecodeStatus::Error:    // v5: DISCONNECT (or CONNACK) with r.reason(); 3.1.1: close
//       log("mqtt: {}", describe(r.error)); close(); break;
//     case DecodeStatus::Done:
//       if (auto* c = std::get_if<mqtt::Connect>(&r.packet)) options.version = c->version;
//       handle(r.packet);                  // views into read_buffer: use before it is compacted
//       read_buffer.erase(0, r.consumed);  // the next packet starts at read_buffer[r.consumed]
//   }
//
//   std::string out;                  // appends: several packets may go out in one write
//   EncodeError e = mqtt::encode(mqtt::PubAck{.packet_id = p.packet_id}, *options.version, out);
//   // e == EncodeError::None, out ends in 40 02 <packet id>
//
// Decoding never allocates for CONNECT (user properties aside), PUBLISH, PUBACK, PINGREQ,
// DISCONNECT and AUTH: a Packet borrows its strings and payload from the buffer given to decode(),
// which must outlive it. Only lists (user properties, SUBSCRIBE/UNSUBSCRIBE filters) allocate.
//
// Strictness (every rule is a "MUST" of the spec unless noted; all are checked, none assumed):
// - The first packet must be CONNECT and no other CONNECT may follow (DecodeOptions::version).
// - Fixed-header flags are exactly those the spec fixes; PUBLISH QoS 3 and DUP on QoS 0 fail.
// - Remaining Length: at most 4 bytes and minimally encoded (5.0 1.5.5; applied to 3.1.1 too, no
//   real client encodes it otherwise). A packet over max_packet_size fails as soon as its fixed
//   header is complete, before its body has to be buffered.
// - Every field must end exactly at the end of the packet: a short packet or trailing bytes fail.
// - UTF-8 strings: well-formed (RFC 3629: no overlong forms, no surrogates, <= U+10FFFF) and
//   without U+0000. Other control characters and non-characters are accepted (a "SHOULD NOT").
// - Topic names are non-empty (unless a v5 Topic Alias stands for one) and hold no '+' or '#';
//   topic filters follow topic.h (and v5 "$share/{name}/{filter}" needs a name without '+', '#',
//   and No Local 0); packet identifiers are non-zero.
// - v5 properties: only those defined for the packet (a Subscription Identifier in a PUBLISH from a
//   client counts as undefined), each at most once except User Property, with the values the spec
//   allows (e.g. Receive Maximum > 0, Topic Alias > 0); reason codes only from the packet's table.
// - 3.1.1 CONNECT: a password needs a username; an empty client id needs clean session.
// - Packets only servers send (CONNACK, SUBACK, UNSUBACK, PINGRESP) and the QoS 2 handshake
//   (PUBREC, PUBREL, PUBCOMP: this server never takes part in one) are errors. A QoS 2 PUBLISH
//   decodes, so that the caller can refuse it (v5: DISCONNECT 0x9B QoS not supported).
//
// Not checked here (session state, the caller's policy): Topic Alias against the advertised
// maximum, Receive Maximum, a DISCONNECT's Session Expiry against CONNECT's, AUTH sequencing,
// payload UTF-8 when Payload Format Indicator is 1 (see valid_utf8(): PUBACK 0x99 is the answer).
//
// Pure functions: thread-safe, no state between calls.
#pragma once

#include <concepts>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace sluice::mqtt {

enum class Version : uint8_t { V311 = 4, V5 = 5 };  // the CONNECT protocol level

enum class PacketType : uint8_t {
  Connect = 1,
  ConnAck = 2,
  Publish = 3,
  PubAck = 4,
  PubRec = 5,
  PubRel = 6,
  PubComp = 7,
  Subscribe = 8,
  SubAck = 9,
  Unsubscribe = 10,
  UnsubAck = 11,
  PingReq = 12,
  PingResp = 13,
  Disconnect = 14,
  Auth = 15,  // 5.0 only; reserved in 3.1.1
};

enum class Qos : uint8_t { AtMostOnce = 0, AtLeastOnce = 1, ExactlyOnce = 2 };

// MQTT 5.0 reason codes (section 2.4). Encoders map them to 3.1.1 return codes where one exists.
enum class ReasonCode : uint8_t {
  Success = 0x00,  // also Normal disconnection, Granted QoS 0
  GrantedQos1 = 0x01,
  GrantedQos2 = 0x02,
  DisconnectWithWill = 0x04,
  NoMatchingSubscribers = 0x10,
  NoSubscriptionExisted = 0x11,
  ContinueAuthentication = 0x18,
  ReAuthenticate = 0x19,
  UnspecifiedError = 0x80,
  MalformedPacket = 0x81,
  ProtocolError = 0x82,
  ImplementationSpecificError = 0x83,
  UnsupportedProtocolVersion = 0x84,
  ClientIdentifierNotValid = 0x85,
  BadUserNameOrPassword = 0x86,
  NotAuthorized = 0x87,
  ServerUnavailable = 0x88,
  ServerBusy = 0x89,
  Banned = 0x8A,
  ServerShuttingDown = 0x8B,
  BadAuthenticationMethod = 0x8C,
  KeepAliveTimeout = 0x8D,
  SessionTakenOver = 0x8E,
  TopicFilterInvalid = 0x8F,
  TopicNameInvalid = 0x90,
  PacketIdentifierInUse = 0x91,
  PacketIdentifierNotFound = 0x92,
  ReceiveMaximumExceeded = 0x93,
  TopicAliasInvalid = 0x94,
  PacketTooLarge = 0x95,
  MessageRateTooHigh = 0x96,
  QuotaExceeded = 0x97,
  AdministrativeAction = 0x98,
  PayloadFormatInvalid = 0x99,
  RetainNotSupported = 0x9A,
  QosNotSupported = 0x9B,
  UseAnotherServer = 0x9C,
  ServerMoved = 0x9D,
  SharedSubscriptionsNotSupported = 0x9E,
  ConnectionRateExceeded = 0x9F,
  MaximumConnectTime = 0xA0,
  SubscriptionIdentifiersNotSupported = 0xA1,
  WildcardSubscriptionsNotSupported = 0xA2,
};

// What is wrong with the bytes a client sent. Every error ends the connection. After a v5
// CONNECT, reason_code() is the reason for the DISCONNECT the server may send before closing; a
// 3.1.1 connection is simply closed. A CONNECT that fails is closed without a CONNACK (the server
// cannot know which version a broken CONNECT meant), except for the two errors marked "CONNACK":
// answer those in the 3.1.1 format, encode(ConnAck{.reason = reason_code(error)}, V311, out),
// which is what a 3.1 or 3.1.1 client expects.
enum class DecodeError : uint8_t {
  None,
  // fixed header
  ReservedPacketType,  // type 0, or 15 (AUTH) on a 3.1.1 connection
  ServerOnlyPacket,    // CONNACK, SUBACK, UNSUBACK or PINGRESP from a client
  Qos2Handshake,       // PUBREC, PUBREL or PUBCOMP: this server never starts a QoS 2 flow
  ExpectedConnect,     // the first packet is not CONNECT
  SecondConnect,       // CONNECT after CONNECT
  InvalidFlags,        // fixed-header flags other than the spec's fixed value
  InvalidQos,          // PUBLISH or Will QoS 3, subscription maximum QoS 3
  DupOnQos0,           // PUBLISH with DUP set and QoS 0
  BadRemainingLength,  // more than 4 bytes, or not minimally encoded
  PacketTooLarge,      // fixed header + Remaining Length over DecodeOptions::max_packet_size
  // body
  Truncated,                // a field runs past the end of the packet
  TrailingBytes,            // bytes left after the packet's last field
  InvalidUtf8,              // a UTF-8 string that is ill-formed or holds U+0000
  UnsupportedProtocol,      // CONNACK 0x01: "MQIsdp" (3.1), or "MQTT" with a level other than 4, 5
  InvalidProtocolName,      // neither "MQTT" nor "MQIsdp": not an MQTT client, close
  InvalidConnectFlags,      // reserved bit set; Will QoS/Retain without Will
  PasswordWithoutUsername,  // 3.1.1 only
  ClientIdRejected,         // CONNACK 0x02: 3.1.1, empty client id without clean session
  InvalidTopicName,         // empty (and no Topic Alias), or holding '+' or '#'
  InvalidTopicFilter,       // wildcard misplaced, empty, or a bad v5 shared-subscription name
  ZeroPacketId,             // packet identifier 0
  NoTopicFilters,           // SUBSCRIBE / UNSUBSCRIBE without any
  InvalidSubscriptionOptions,  // reserved option bits, Retain Handling 3
  NoLocalOnSharedSubscription,
  InvalidReasonCode,     // not in the packet's reason-code table
  BadPropertyLength,     // property length past the packet, or a property past the block
  UnknownProperty,       // identifier undefined, or not allowed in this packet
  DuplicateProperty,     // a property that may appear once appears twice
  InvalidPropertyValue,  // a value the spec forbids (0 Receive Maximum, a flag byte of 2 ...)
  InvalidTopicAlias,     // Topic Alias 0
};

ReasonCode reason_code(DecodeError error);
std::string_view describe(DecodeError error);  // short static text for logs, e.g. "QoS 3"

// MQTT's UTF-8 Encoded String rules (see above) over any bytes, e.g. a PUBLISH payload whose
// Payload Format Indicator is 1.
bool valid_utf8(std::string_view text);

// --- packets ---------------------------------------------------------------------------------
// One struct per packet, shared by the decoder and the encoders. Every string_view and payload
// points into the decoded buffer (or, when encoding, into storage the caller keeps alive).
// Fields marked v5 are ignored by 3.1.1 and absent (defaults) when a 3.1.1 packet is decoded.
// Absent v5 properties have their default value or nullopt, so "absent" and "sent with the
// default value" decode alike.

struct UserProperty {
  std::string_view name{};
  std::string_view value{};
  bool operator==(const UserProperty&) const = default;
};

enum class PayloadFormat : uint8_t { Unspecified = 0, Utf8 = 1 };

// The v5 properties a PUBLISH and a Will message have in common.
struct MessageProperties {
  PayloadFormat payload_format = PayloadFormat::Unspecified;
  std::optional<uint32_t> message_expiry{};  // seconds; nullopt: never expires
  std::optional<std::string_view> content_type{};
  std::optional<std::string_view> response_topic{};    // a valid topic name
  std::optional<std::string_view> correlation_data{};  // binary
  std::vector<UserProperty> user_properties{};
  bool operator==(const MessageProperties&) const = default;
};

struct Will {
  std::string_view topic{};    // a valid topic name
  std::string_view payload{};  // binary
  Qos qos = Qos::AtMostOnce;
  bool retain = false;
  uint32_t delay_interval = 0;     // v5, seconds
  MessageProperties properties{};  // v5
  bool operator==(const Will&) const = default;
};

struct Connect {
  Version version = Version::V5;
  bool clean_start = true;       // "clean session" in 3.1.1
  uint16_t keep_alive = 0;       // seconds; 0 = none
  std::string_view client_id{};  // may be empty: the server assigns one (3.1.1: clean session only)
  std::optional<std::string_view> username{};
  std::optional<std::string_view> password{};  // binary
  std::optional<Will> will{};
  // v5
  uint32_t session_expiry = 0;                    // seconds; 0xFFFFFFFF = never
  uint16_t receive_maximum = 65535;               // never 0
  std::optional<uint32_t> maximum_packet_size{};  // never 0
  uint16_t topic_alias_maximum = 0;
  bool request_response_information = false;
  bool request_problem_information = true;
  std::optional<std::string_view> authentication_method{};
  std::optional<std::string_view> authentication_data{};  // binary; only with a method
  std::vector<UserProperty> user_properties{};
  bool operator==(const Connect&) const = default;
};

struct Publish {
  std::string_view topic{};  // v5: empty when topic_alias stands for the topic
  std::string_view payload{};
  Qos qos = Qos::AtMostOnce;
  bool dup = false;
  bool retain = false;
  uint16_t packet_id = 0;          // non-zero for QoS 1 and 2, 0 for QoS 0
  uint16_t topic_alias = 0;        // v5; 0 = none
  MessageProperties properties{};  // v5
  bool operator==(const Publish&) const = default;
};

// PUBACK, either way (clients ack the QoS 1 messages a server sends them).
struct PubAck {
  uint16_t packet_id = 0;
  // v5: 0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97 or 0x99
  ReasonCode reason = ReasonCode::Success;
  std::optional<std::string_view> reason_string{};  // v5
  std::vector<UserProperty> user_properties{};      // v5
  bool operator==(const PubAck&) const = default;
};

enum class RetainHandling : uint8_t {
  SendOnSubscribe = 0,
  SendIfNewSubscription = 1,
  DoNotSend = 2
};

struct Subscription {
  std::string_view filter{};  // a valid topic filter (v5: possibly "$share/{name}/{filter}")
  Qos max_qos = Qos::AtMostOnce;
  bool no_local = false;                                             // v5
  bool retain_as_published = false;                                  // v5
  RetainHandling retain_handling = RetainHandling::SendOnSubscribe;  // v5
  bool operator==(const Subscription&) const = default;
};

struct Subscribe {
  uint16_t packet_id = 0;
  std::vector<Subscription> subscriptions{};    // at least one
  std::optional<uint32_t> subscription_id{};    // v5; 1 .. 268435455
  std::vector<UserProperty> user_properties{};  // v5
  bool operator==(const Subscribe&) const = default;
};

struct Unsubscribe {
  uint16_t packet_id = 0;
  std::vector<std::string_view> filters{};      // at least one
  std::vector<UserProperty> user_properties{};  // v5
  bool operator==(const Unsubscribe&) const = default;
};

struct PingReq {
  bool operator==(const PingReq&) const = default;
};

// DISCONNECT, either way. 3.1.1 has only the client's, without any field.
struct Disconnect {
  ReasonCode reason = ReasonCode::Success;             // v5
  std::optional<uint32_t> session_expiry{};            // v5, client only
  std::optional<std::string_view> reason_string{};     // v5
  std::optional<std::string_view> server_reference{};  // v5, server only (with 0x9C / 0x9D)
  std::vector<UserProperty> user_properties{};         // v5
  bool operator==(const Disconnect&) const = default;
};

// AUTH (v5 enhanced authentication), decoded so that it can be refused.
struct Auth {
  ReasonCode reason = ReasonCode::Success;  // 0x00, 0x18 or 0x19
  std::optional<std::string_view> authentication_method{};
  std::optional<std::string_view> authentication_data{};  // binary
  std::optional<std::string_view> reason_string{};
  std::vector<UserProperty> user_properties{};
  bool operator==(const Auth&) const = default;
};

// What decode() yields: the packets a server accepts from a client.
using Packet =
    std::variant<Connect, Publish, PubAck, Subscribe, Unsubscribe, PingReq, Disconnect, Auth>;

// Server -> client only (encoded, never decoded).

struct ConnAck {
  bool session_present = false;  // sent only with Success
  ReasonCode reason = ReasonCode::Success;
  // v5 properties, each sent only when set.
  std::optional<uint32_t> session_expiry{};
  std::optional<uint16_t> receive_maximum{};
  std::optional<Qos> maximum_qos{};  // 0 or 1 (absent means 2)
  std::optional<bool> retain_available{};
  std::optional<uint32_t> maximum_packet_size{};
  std::optional<std::string_view> assigned_client_id{};
  std::optional<uint16_t> topic_alias_maximum{};
  std::optional<std::string_view> reason_string{};
  std::optional<bool> wildcard_subscription_available{};
  std::optional<bool> subscription_ids_available{};
  std::optional<bool> shared_subscription_available{};
  std::optional<uint16_t> server_keep_alive{};
  std::optional<std::string_view> response_information{};
  std::optional<std::string_view> server_reference{};
  std::optional<std::string_view> authentication_method{};
  std::optional<std::string_view> authentication_data{};
  std::vector<UserProperty> user_properties{};
};

struct SubAck {
  uint16_t packet_id = 0;
  std::vector<ReasonCode> reasons{};                // one per subscription, in order
  std::optional<std::string_view> reason_string{};  // v5
  std::vector<UserProperty> user_properties{};      // v5
};

struct UnsubAck {
  uint16_t packet_id = 0;
  // v5: one per filter, in order (0x00, 0x11, 0x80, 0x83, 0x87, 0x8F or 0x91)
  std::vector<ReasonCode> reasons{};
  std::optional<std::string_view> reason_string{};  // v5
  std::vector<UserProperty> user_properties{};      // v5
};

struct PingResp {};

// --- decoding ---------------------------------------------------------------------------------

struct DecodeOptions {
  // nullopt until the connection's CONNECT has been decoded: then only CONNECT is accepted;
  // afterwards its version, and CONNECT is an error.
  std::optional<Version> version{};
  // Largest whole packet accepted (fixed header included), as in v5's Maximum Packet Size. The
  // protocol's own bound is 268'435'460.
  uint32_t max_packet_size = 1024 * 1024;
};

enum class DecodeStatus : uint8_t { NeedMore, Done, Error };

struct FixedHeader {
  PacketType type = PacketType::Connect;
  uint8_t flags = 0;              // the low nibble of the first byte
  uint8_t size = 0;               // bytes of the fixed header: 2 .. 5
  uint32_t remaining_length = 0;  // bytes after the fixed header
  size_t packet_size() const { return size + size_t{remaining_length}; }
};

struct FixedHeaderResult {
  DecodeStatus status = DecodeStatus::NeedMore;
  FixedHeader header{};                   // when Done
  DecodeError error = DecodeError::None;  // when Error
};

// Reads and checks only the fixed header at the start of `buf`: packet type against the
// connection state, flags, Remaining Length and size. Fails on the first byte already when the
// type or flags are wrong. Done does not mean the packet's body is in `buf`.
FixedHeaderResult decode_fixed_header(std::string_view buf, const DecodeOptions& options);

struct DecodeResult {
  DecodeStatus status = DecodeStatus::NeedMore;
  size_t consumed = 0;  // when Done: the packet's size; the next packet starts at buf[consumed]
  size_t needed = 0;    // when NeedMore: bytes still missing, or 0 while the fixed header is
                        // incomplete (not known yet)
  DecodeError error = DecodeError::None;  // when Error
  Packet packet{};                        // when Done; borrows from `buf`
  ReasonCode reason() const { return reason_code(error); }
};

// Decodes the packet at the start of `buf`, which holds everything received and not consumed
// yet. Bytes after the first packet are left alone. NeedMore until the whole packet is there
// (each call re-reads only the fixed header, so a slowly arriving packet costs O(n) overall);
// Error as soon as the bytes seen prove the packet wrong. An Error is final for the connection.
DecodeResult decode(std::string_view buf, const DecodeOptions& options);

// --- encoding ---------------------------------------------------------------------------------

enum class EncodeError : uint8_t {
  None,
  StringTooLong,    // a string or binary field over 65'535 bytes
  PacketTooLarge,   // Remaining Length (or a property block) over 268'435'455 bytes
  VersionMismatch,  // Connect::version differs from the version asked for
  NotInVersion,     // 3.1.1 cannot say it: AUTH, a failure reason in a PUBACK or DISCONNECT
  InvalidField,     // a value the packet cannot carry: QoS 1/2 PUBLISH with packet id 0, a
                    // SUBACK reason no version has, Maximum QoS 2 ...
};

template <typename Out>
concept ByteBuffer = std::same_as<Out, std::string> || std::same_as<Out, std::vector<uint8_t>>;

// Each encoder appends one packet to `out` in `version`'s format and returns None, or appends
// nothing and returns why not. Optional parts are written only when needed (a v5 PUBACK with
// Success and no properties is the 4-byte form). Fields 3.1.1 cannot carry are dropped, except
// where that would change the meaning (NotInVersion). 3.1.1 CONNACK return codes: Success 0x00,
// UnsupportedProtocolVersion 0x01, ClientIdentifierNotValid 0x02, BadUserNameOrPassword and
// BadAuthenticationMethod 0x04, NotAuthorized and Banned 0x05, any other failure 0x03 (server
// unavailable). 3.1.1 SUBACK: 0x00 .. 0x02 as they are, any failure 0x80.
//
// Server -> client:
template <ByteBuffer Out>
[[nodiscard]] EncodeError encode(const ConnAck& packet, Version version, Out& out);
template <ByteBuffer Out>
[[nodiscard]] EncodeError encode(const PubAck& packet, Version version, Out& out);
template <ByteBuffer Out>
[[nodiscard]] EncodeError encode(const SubAck& packet, Version version, Out& out);
template <ByteBuffer Out>
[[nodiscard]] EncodeError encode(const UnsubAck& packet, Version version, Out& out);
template <ByteBuffer Out>
[[nodiscard]] EncodeError encode(const PingResp& packet, Version version, Out& out);
template <ByteBuffer Out>  // v5 only for a server (3.1.1 servers just close)
[[nodiscard]] EncodeError encode(const Disconnect& packet, Version version, Out& out);
// Client -> server (tests, fuzzing, and any future MQTT upstream):
template <ByteBuffer Out>
[[nodiscard]] EncodeError encode(const Connect& packet, Version version, Out& out);
template <ByteBuffer Out>
[[nodiscard]] EncodeError encode(const Publish& packet, Version version, Out& out);
template <ByteBuffer Out>
[[nodiscard]] EncodeError encode(const Subscribe& packet, Version version, Out& out);
template <ByteBuffer Out>
[[nodiscard]] EncodeError encode(const Unsubscribe& packet, Version version, Out& out);
template <ByteBuffer Out>
[[nodiscard]] EncodeError encode(const PingReq& packet, Version version, Out& out);
template <ByteBuffer Out>
[[nodiscard]] EncodeError encode(const Auth& packet, Version version, Out& out);
// Any decoded packet (for a round trip).
template <ByteBuffer Out>
[[nodiscard]] EncodeError encode(const Packet& packet, Version version, Out& out);

}  // namespace sluice::mqtt

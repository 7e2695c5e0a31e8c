// The MQTT codec: fixed header, one decoder per packet the server accepts, the v5 property block,
// and the encoders (a counting pass, then an appending pass over the same code).
#include "mqtt/codec.h"

#include <array>
#include <cstring>
#include <initializer_list>
#include <type_traits>

#include "mqtt/topic.h"

namespace sluice::mqtt {
namespace {

constexpr uint32_t k_max_remaining_length = 268'435'455;  // the largest 4-byte varint
constexpr size_t k_max_string = 65'535;

// --- v5 properties (section 2.2.2.2) -----------------------------------------------------------

enum PropertyId : uint8_t {
  k_payload_format = 0x01,
  k_message_expiry = 0x02,
  k_content_type = 0x03,
  k_response_topic = 0x08,
  k_correlation_data = 0x09,
  k_subscription_id = 0x0B,
  k_session_expiry = 0x11,
  k_assigned_client_id = 0x12,
  k_server_keep_alive = 0x13,
  k_authentication_method = 0x15,
  k_authentication_data = 0x16,
  k_request_problem_information = 0x17,
  k_will_delay = 0x18,
  k_request_response_information = 0x19,
  k_response_information = 0x1A,
  k_server_reference = 0x1C,
  k_reason_string = 0x1F,
  k_receive_maximum = 0x21,
  k_topic_alias_maximum = 0x22,
  k_topic_alias = 0x23,
  k_maximum_qos = 0x24,
  k_retain_available = 0x25,
  k_user_property = 0x26,
  k_maximum_packet_size = 0x27,
  k_wildcard_subscription_available = 0x28,
  k_subscription_ids_available = 0x29,
  k_shared_subscription_available = 0x2A,
};

enum class PropertyType : uint8_t { Byte, TwoByte, FourByte, Varint, Utf8, Binary, Pair };

constexpr PropertyType property_type(uint8_t id) {
  switch (id) {
    case k_payload_format:
    case k_request_problem_information:
    case k_request_response_information:
    case k_maximum_qos:
    case k_retain_available:
    case k_wildcard_subscription_available:
    case k_subscription_ids_available:
    case k_shared_subscription_available:
      return PropertyType::Byte;
    case k_server_keep_alive:
    case k_receive_maximum:
    case k_topic_alias_maximum:
    case k_topic_alias:
      return PropertyType::TwoByte;
    case k_message_expiry:
    case k_session_expiry:
    case k_will_delay:
    case k_maximum_packet_size:
      return PropertyType::FourByte;
    case k_subscription_id:
      return PropertyType::Varint;
    case k_correlation_data:
    case k_authentication_data:
      return PropertyType::Binary;
    case k_user_property:
      return PropertyType::Pair;
    default:
      return PropertyType::Utf8;
  }
}

constexpr uint64_t props(std::initializer_list<uint8_t> ids) {
  uint64_t mask = 0;
  for (uint8_t id : ids) mask |= uint64_t{1} << id;
  return mask;
}

// Which properties each packet may carry (from a client; see codec.h for the Subscription
// Identifier of a PUBLISH).
constexpr uint64_t k_connect_properties =
    props({k_session_expiry, k_receive_maximum, k_maximum_packet_size, k_topic_alias_maximum,
           k_request_response_information, k_request_problem_information, k_user_property,
           k_authentication_method, k_authentication_data});
constexpr uint64_t k_will_properties =
    props({k_will_delay, k_payload_format, k_message_expiry, k_content_type, k_response_topic,
           k_correlation_data, k_user_property});
constexpr uint64_t k_publish_properties =
    props({k_payload_format, k_message_expiry, k_topic_alias, k_response_topic, k_correlation_data,
           k_user_property, k_content_type});
constexpr uint64_t k_ack_properties = props({k_reason_string, k_user_property});
constexpr uint64_t k_subscribe_properties = props({k_subscription_id, k_user_property});
constexpr uint64_t k_unsubscribe_properties = props({k_user_property});
constexpr uint64_t k_disconnect_properties =
    props({k_session_expiry, k_reason_string, k_user_property, k_server_reference});
constexpr uint64_t k_auth_properties =
    props({k_authentication_method, k_authentication_data, k_reason_string, k_user_property});

// The reason codes a packet may carry (section 2.4 and each packet's table), as a 256-bit set.
class ReasonSet {
 public:
  constexpr ReasonSet(std::initializer_list<uint8_t> codes) {
    for (uint8_t c : codes) bits_[c / 64] |= uint64_t{1} << (c % 64);
  }
  constexpr bool contains(ReasonCode code) const {
    const auto c = static_cast<uint8_t>(code);
    return (bits_[c / 64] >> (c % 64)) & 1;
  }

 private:
  std::array<uint64_t, 4> bits_{};
};

constexpr ReasonSet k_connack_reasons{0x00, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86,
                                      0x87, 0x88, 0x89, 0x8A, 0x8C, 0x90, 0x95, 0x97,
                                      0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9F};
constexpr ReasonSet k_puback_reasons{0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99};
constexpr ReasonSet k_suback_reasons{0x00, 0x01, 0x02, 0x80, 0x83, 0x87,
                                     0x8F, 0x91, 0x97, 0x9E, 0xA1, 0xA2};
constexpr ReasonSet k_unsuback_reasons{0x00, 0x11, 0x80, 0x83, 0x87, 0x8F, 0x91};
constexpr ReasonSet k_disconnect_reasons{0x00, 0x04, 0x80, 0x81, 0x82, 0x83, 0x87, 0x89, 0x8B, 0x8D,
                                         0x8E, 0x8F, 0x90, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99,
                                         0x9A, 0x9B, 0x9C, 0x9D, 0x9E, 0x9F, 0xA0, 0xA1, 0xA2};
constexpr ReasonSet k_auth_reasons{0x00, 0x18, 0x19};

bool is_failure(ReasonCode code) { return static_cast<uint8_t>(code) >= 0x80; }

// --- reading -------------------------------------------------------------------------------

// Sequential reads over a packet body or a property block. The first failure sticks: later reads
// return zeros and empty views, so decoders check ok() once at the end (and before decisions a
// garbage value could misdirect); fail() after a failure keeps the first cause.
class Reader {
 public:
  Reader(std::string_view bytes, DecodeError truncated) : rest_(bytes), truncated_(truncated) {}

  bool ok() const { return error_ == DecodeError::None; }
  DecodeError error() const { return error_; }
  bool empty() const { return rest_.empty(); }
  size_t remaining() const { return rest_.size(); }

  void fail(DecodeError error) {
    if (ok()) error_ = error;
    rest_ = {};
  }

  std::string_view take(size_t n) {
    if (n > rest_.size()) {
      fail(truncated_);
      return {};
    }
    const std::string_view bytes = rest_.substr(0, n);
    rest_.remove_prefix(n);
    return bytes;
  }
  std::string_view take_rest() { return take(rest_.size()); }

  uint8_t u8() {
    const std::string_view b = take(1);
    return b.empty() ? 0 : static_cast<uint8_t>(b[0]);
  }
  uint16_t u16() {
    const std::string_view b = take(2);
    if (b.empty()) return 0;
    return static_cast<uint16_t>(static_cast<uint8_t>(b[0]) << 8 | static_cast<uint8_t>(b[1]));
  }
  uint32_t u32() {
    const std::string_view b = take(4);
    uint32_t v = 0;
    for (char c : b) v = v << 8 | static_cast<uint8_t>(c);
    return v;
  }
  // Variable Byte Integer: at most 4 bytes, minimally encoded, else `bad`.
  uint32_t varint(DecodeError bad) {
    uint32_t value = 0;
    for (int i = 0; i < 4; ++i) {
      const std::string_view b = take(1);
      if (b.empty()) return 0;
      const auto byte = static_cast<uint8_t>(b[0]);
      value |= uint32_t{byte & 0x7Fu} << (7 * i);
      if ((byte & 0x80) == 0) {
        if (byte == 0 && i > 0) break;  // a trailing zero group: not minimal
        return value;
      }
    }
    fail(bad);
    return 0;
  }
  std::string_view binary() { return take(u16()); }
  std::string_view utf8() {
    const std::string_view s = binary();
    if (!valid_utf8(s)) fail(DecodeError::InvalidUtf8);
    return s;
  }

 private:
  std::string_view rest_;
  DecodeError truncated_;
  DecodeError error_ = DecodeError::None;
};

struct Property {
  uint8_t id = 0;
  uint32_t number = 0;     // Byte, TwoByte, FourByte, Varint
  std::string_view text;   // Utf8, Binary; a Pair's name
  std::string_view value;  // a Pair's value
};

bool has_wildcard(std::string_view topic) {
  return topic.find_first_of("+#") != std::string_view::npos;
}

// Reads the property block at `r` (its Variable Byte Integer length, then the properties) and
// hands each to `store` after the checks every packet shares: allowed here, not duplicated,
// well-typed, and a value the spec allows.
template <typename Store>
void read_properties(Reader& r, uint64_t allowed, Store&& store) {
  const uint32_t length = r.varint(DecodeError::BadPropertyLength);
  if (!r.ok()) return;
  if (length > r.remaining()) return r.fail(DecodeError::BadPropertyLength);
  Reader block(r.take(length), DecodeError::BadPropertyLength);
  uint64_t seen = 0;
  while (block.ok() && !block.empty()) {
    Property p;
    p.id = block.u8();  // a Variable Byte Integer, but every defined one fits in 7 bits
    if (p.id >= 64 || ((allowed >> p.id) & 1) == 0) return r.fail(DecodeError::UnknownProperty);
    if (p.id != k_user_property) {
      if ((seen >> p.id) & 1) return r.fail(DecodeError::DuplicateProperty);
      seen |= uint64_t{1} << p.id;
    }
    switch (property_type(p.id)) {
      case PropertyType::Byte:
        p.number = block.u8();
        break;
      case PropertyType::TwoByte:
        p.number = block.u16();
        break;
      case PropertyType::FourByte:
        p.number = block.u32();
        break;
      case PropertyType::Varint:
        p.number = block.varint(DecodeError::InvalidPropertyValue);
        break;
      case PropertyType::Utf8:
        p.text = block.utf8();
        break;
      case PropertyType::Binary:
        p.text = block.binary();
        break;
      case PropertyType::Pair:
        p.text = block.utf8();
        p.value = block.utf8();
        break;
    }
    if (!block.ok()) break;
    switch (p.id) {
      case k_payload_format:
      case k_request_problem_information:
      case k_request_response_information:
        if (p.number > 1) return r.fail(DecodeError::InvalidPropertyValue);
        break;
      case k_receive_maximum:
      case k_maximum_packet_size:
      case k_subscription_id:
        if (p.number == 0) return r.fail(DecodeError::InvalidPropertyValue);
        break;
      case k_topic_alias:
        if (p.number == 0) return r.fail(DecodeError::InvalidTopicAlias);
        break;
      case k_response_topic:
        if (p.text.empty() || has_wildcard(p.text)) {
          return r.fail(DecodeError::InvalidPropertyValue);
        }
        break;
      default:
        break;
    }
    store(p);
  }
  if (!block.ok()) r.fail(block.error());
}

// The part of MessageProperties a property fills, if any (PUBLISH and Will share these).
bool store_message_property(const Property& p, MessageProperties& m) {
  switch (p.id) {
    case k_payload_format:
      m.payload_format = static_cast<PayloadFormat>(p.number);
      return true;
    case k_message_expiry:
      m.message_expiry = p.number;
      return true;
    case k_content_type:
      m.content_type = p.text;
      return true;
    case k_response_topic:
      m.response_topic = p.text;
      return true;
    case k_correlation_data:
      m.correlation_data = p.text;
      return true;
    case k_user_property:
      m.user_properties.push_back({p.text, p.value});
      return true;
    default:
      return false;
  }
}

// A SUBSCRIBE / UNSUBSCRIBE filter; in v5 "$share/{ShareName}/{filter}" also needs a ShareName
// of at least one character without '+', '#' (and '/'), and a filter after it.
bool valid_subscription_filter(std::string_view filter, Version version) {
  if (!valid_topic_filter(filter)) return false;
  constexpr std::string_view k_share = "$share/";
  if (version != Version::V5 || !filter.starts_with(k_share)) return true;
  const std::string_view rest = filter.substr(k_share.size());
  const size_t slash = rest.find('/');
  if (slash == 0 || slash == std::string_view::npos || slash + 1 == rest.size()) return false;
  return !has_wildcard(rest.substr(0, slash));
}

// --- packet decoders (body only: the fixed header has been checked) ---------------------------

Connect decode_connect(Reader& r) {
  Connect c;
  const std::string_view name = r.binary();
  const uint8_t level = r.u8();
  if (!r.ok()) return c;
  if (name == "MQTT" && level == 4) {
    c.version = Version::V311;
  } else if (name == "MQTT" && level == 5) {
    c.version = Version::V5;
  } else if (name == "MQTT" || name == "MQIsdp") {
    r.fail(DecodeError::UnsupportedProtocol);
    return c;
  } else {
    r.fail(DecodeError::InvalidProtocolName);
    return c;
  }
  const bool v5 = c.version == Version::V5;

  const uint8_t flags = r.u8();
  c.keep_alive = r.u16();
  if (!r.ok()) return c;
  const bool has_will = flags & 0x04;
  const auto will_qos = static_cast<uint8_t>((flags >> 3) & 0x03);
  const bool will_retain = flags & 0x20;
  const bool has_password = flags & 0x40;
  const bool has_username = flags & 0x80;
  c.clean_start = flags & 0x02;
  if (flags & 0x01) r.fail(DecodeError::InvalidConnectFlags);
  if (will_qos == 3) r.fail(DecodeError::InvalidQos);
  if (!has_will && (will_qos != 0 || will_retain)) r.fail(DecodeError::InvalidConnectFlags);
  if (!v5 && has_password && !has_username) r.fail(DecodeError::PasswordWithoutUsername);

  if (v5) {
    read_properties(r, k_connect_properties, [&c](const Property& p) {
      switch (p.id) {
        case k_session_expiry:
          c.session_expiry = p.number;
          break;
        case k_receive_maximum:
          c.receive_maximum = static_cast<uint16_t>(p.number);
          break;
        case k_maximum_packet_size:
          c.maximum_packet_size = p.number;
          break;
        case k_topic_alias_maximum:
          c.topic_alias_maximum = static_cast<uint16_t>(p.number);
          break;
        case k_request_response_information:
          c.request_response_information = p.number == 1;
          break;
        case k_request_problem_information:
          c.request_problem_information = p.number == 1;
          break;
        case k_authentication_method:
          c.authentication_method = p.text;
          break;
        case k_authentication_data:
          c.authentication_data = p.text;
          break;
        case k_user_property:
          c.user_properties.push_back({p.text, p.value});
          break;
      }
    });
    if (c.authentication_data && !c.authentication_method) {
      r.fail(DecodeError::InvalidPropertyValue);
    }
  }

  c.client_id = r.utf8();
  if (has_will) {
    Will& w = c.will.emplace();
    w.qos = static_cast<Qos>(will_qos);
    w.retain = will_retain;
    if (v5) {
      read_properties(r, k_will_properties, [&w](const Property& p) {
        if (p.id == k_will_delay) {
          w.delay_interval = p.number;
        } else {
          store_message_property(p, w.properties);
        }
      });
    }
    w.topic = r.utf8();
    if (w.topic.empty() || has_wildcard(w.topic)) r.fail(DecodeError::InvalidTopicName);
    w.payload = r.binary();
  }
  if (has_username) c.username = r.utf8();
  if (has_password) c.password = r.binary();
  if (!v5 && c.client_id.empty() && !c.clean_start) r.fail(DecodeError::ClientIdRejected);
  return c;
}

Publish decode_publish(Reader& r, uint8_t flags, Version version) {
  Publish p;
  p.retain = flags & 0x01;
  p.qos = static_cast<Qos>((flags >> 1) & 0x03);  // 3 was refused with the fixed header
  p.dup = flags & 0x08;
  p.topic = r.utf8();
  if (has_wildcard(p.topic)) r.fail(DecodeError::InvalidTopicName);
  if (p.qos != Qos::AtMostOnce) {
    p.packet_id = r.u16();
    if (r.ok() && p.packet_id == 0) r.fail(DecodeError::ZeroPacketId);
  }
  if (version == Version::V5) {
    read_properties(r, k_publish_properties, [&p](const Property& prop) {
      if (prop.id == k_topic_alias) {
        p.topic_alias = static_cast<uint16_t>(prop.number);
      } else {
        store_message_property(prop, p.properties);
      }
    });
  }
  if (r.ok() && p.topic.empty() && p.topic_alias == 0) r.fail(DecodeError::InvalidTopicName);
  p.payload = r.take_rest();
  return p;
}

// Packet id, then (v5) an optional reason code and optional properties: PUBACK and its kin.
PubAck decode_puback(Reader& r, Version version) {
  PubAck a;
  a.packet_id = r.u16();
  if (r.ok() && a.packet_id == 0) r.fail(DecodeError::ZeroPacketId);
  if (version == Version::V5 && !r.empty()) {
    a.reason = static_cast<ReasonCode>(r.u8());
    if (!k_puback_reasons.contains(a.reason)) r.fail(DecodeError::InvalidReasonCode);
    if (!r.empty()) {
      read_properties(r, k_ack_properties, [&a](const Property& p) {
        if (p.id == k_reason_string) {
          a.reason_string = p.text;
        } else {
          a.user_properties.push_back({p.text, p.value});
        }
      });
    }
  }
  return a;
}

Subscribe decode_subscribe(Reader& r, Version version) {
  Subscribe s;
  s.packet_id = r.u16();
  if (r.ok() && s.packet_id == 0) r.fail(DecodeError::ZeroPacketId);
  if (version == Version::V5) {
    read_properties(r, k_subscribe_properties, [&s](const Property& p) {
      if (p.id == k_subscription_id) {
        s.subscription_id = p.number;
      } else {
        s.user_properties.push_back({p.text, p.value});
      }
    });
  }
  if (r.ok() && r.empty()) r.fail(DecodeError::NoTopicFilters);
  while (r.ok() && !r.empty()) {
    Subscription sub;
    sub.filter = r.utf8();
    const uint8_t options = r.u8();
    if (!r.ok()) break;
    if (!valid_subscription_filter(sub.filter, version)) r.fail(DecodeError::InvalidTopicFilter);
    if ((options & 0x03) == 3) r.fail(DecodeError::InvalidQos);
    sub.max_qos = static_cast<Qos>(options & 0x03);
    if (version == Version::V311) {
      if (options & 0xFC) r.fail(DecodeError::InvalidSubscriptionOptions);
    } else {
      if ((options & 0xC0) || ((options >> 4) & 0x03) == 3) {
        r.fail(DecodeError::InvalidSubscriptionOptions);
      }
      sub.no_local = options & 0x04;
      sub.retain_as_published = options & 0x08;
      sub.retain_handling = static_cast<RetainHandling>((options >> 4) & 0x03);
      if (sub.no_local && sub.filter.starts_with("$share/")) {
        r.fail(DecodeError::NoLocalOnSharedSubscription);
      }
    }
    s.subscriptions.push_back(sub);
  }
  return s;
}

Unsubscribe decode_unsubscribe(Reader& r, Version version) {
  Unsubscribe u;
  u.packet_id = r.u16();
  if (r.ok() && u.packet_id == 0) r.fail(DecodeError::ZeroPacketId);
  if (version == Version::V5) {
    read_properties(r, k_unsubscribe_properties, [&u](const Property& p) {
      u.user_properties.push_back({p.text, p.value});
    });
  }
  if (r.ok() && r.empty()) r.fail(DecodeError::NoTopicFilters);
  while (r.ok() && !r.empty()) {
    const std::string_view filter = r.utf8();
    if (!r.ok()) break;
    if (!valid_subscription_filter(filter, version)) r.fail(DecodeError::InvalidTopicFilter);
    u.filters.push_back(filter);
  }
  return u;
}

// v5: nothing (Success), a reason code, or a reason code and properties. 3.1.1: nothing.
Disconnect decode_disconnect(Reader& r, Version version) {
  Disconnect d;
  if (version != Version::V5 || r.empty()) return d;
  d.reason = static_cast<ReasonCode>(r.u8());
  if (!k_disconnect_reasons.contains(d.reason)) r.fail(DecodeError::InvalidReasonCode);
  if (r.empty()) return d;
  read_properties(r, k_disconnect_properties, [&d](const Property& p) {
    switch (p.id) {
      case k_session_expiry:
        d.session_expiry = p.number;
        break;
      case k_reason_string:
        d.reason_string = p.text;
        break;
      case k_server_reference:
        d.server_reference = p.text;
        break;
      case k_user_property:
        d.user_properties.push_back({p.text, p.value});
        break;
    }
  });
  return d;
}

// Nothing (Success), or a reason code and properties: section 3.15.2.1 allows omitting both
// together, not (as DISCONNECT and PUBACK do) the properties alone.
Auth decode_auth(Reader& r) {
  Auth a;
  if (r.empty()) return a;
  a.reason = static_cast<ReasonCode>(r.u8());
  if (!k_auth_reasons.contains(a.reason)) r.fail(DecodeError::InvalidReasonCode);
  read_properties(r, k_auth_properties, [&a](const Property& p) {
    switch (p.id) {
      case k_authentication_method:
        a.authentication_method = p.text;
        break;
      case k_authentication_data:
        a.authentication_data = p.text;
        break;
      case k_reason_string:
        a.reason_string = p.text;
        break;
      case k_user_property:
        a.user_properties.push_back({p.text, p.value});
        break;
    }
  });
  if (a.authentication_data && !a.authentication_method) {
    r.fail(DecodeError::InvalidPropertyValue);
  }
  return a;
}

// What the first byte alone proves wrong (type against the connection state, then flags).
DecodeError check_first_byte(uint8_t byte, const DecodeOptions& options) {
  const auto type = static_cast<PacketType>(byte >> 4);
  const uint8_t flags = byte & 0x0F;
  switch (type) {
    case PacketType::ConnAck:
    case PacketType::SubAck:
    case PacketType::UnsubAck:
    case PacketType::PingResp:
      return DecodeError::ServerOnlyPacket;
    case PacketType::PubRec:
    case PacketType::PubRel:
    case PacketType::PubComp:
      return DecodeError::Qos2Handshake;
    default:
      break;
  }
  if (byte >> 4 == 0) return DecodeError::ReservedPacketType;
  if (!options.version) {
    if (type != PacketType::Connect) return DecodeError::ExpectedConnect;
  } else if (type == PacketType::Connect) {
    return DecodeError::SecondConnect;
  } else if (type == PacketType::Auth && *options.version == Version::V311) {
    return DecodeError::ReservedPacketType;
  }
  switch (type) {
    case PacketType::Publish: {
      const int qos = (flags >> 1) & 0x03;
      if (qos == 3) return DecodeError::InvalidQos;
      if (qos == 0 && (flags & 0x08)) return DecodeError::DupOnQos0;
      return DecodeError::None;
    }
    case PacketType::Subscribe:
    case PacketType::Unsubscribe:
      return flags == 0x02 ? DecodeError::None : DecodeError::InvalidFlags;
    default:
      return flags == 0 ? DecodeError::None : DecodeError::InvalidFlags;
  }
}

}  // namespace

bool valid_utf8(std::string_view text) {
  const auto* p = reinterpret_cast<const unsigned char*>(text.data());
  const unsigned char* const end = p + text.size();
  while (p < end) {
    // Eight ASCII bytes at a time: no high bit set and no zero byte among them.
    if (end - p >= 8) {
      uint64_t word;
      std::memcpy(&word, p, 8);
      constexpr uint64_t k_ones = 0x0101010101010101u;
      constexpr uint64_t k_highs = 0x8080808080808080u;
      if ((word & k_highs) == 0 && ((word - k_ones) & ~word & k_highs) == 0) {
        p += 8;
        continue;
      }
    }
    const unsigned c = *p;
    if (c < 0x80) {
      if (c == 0) return false;
      ++p;
      continue;
    }
    const auto continuation = [](unsigned char b) { return (b & 0xC0) == 0x80; };
    if (c < 0xC2) return false;  // a stray continuation byte, or an overlong 2-byte form
    if (c < 0xE0) {
      if (end - p < 2 || !continuation(p[1])) return false;
      p += 2;
    } else if (c < 0xF0) {
      if (end - p < 3 || !continuation(p[1]) || !continuation(p[2])) return false;
      if (c == 0xE0 && p[1] < 0xA0) return false;   // overlong
      if (c == 0xED && p[1] >= 0xA0) return false;  // U+D800 .. U+DFFF: surrogates
      p += 3;
    } else if (c < 0xF5) {
      if (end - p < 4 || !continuation(p[1]) || !continuation(p[2]) || !continuation(p[3])) {
        return false;
      }
      if (c == 0xF0 && p[1] < 0x90) return false;   // overlong
      if (c == 0xF4 && p[1] >= 0x90) return false;  // above U+10FFFF
      p += 4;
    } else {
      return false;
    }
  }
  return true;
}

ReasonCode reason_code(DecodeError error) {
  switch (error) {
    case DecodeError::None:
      return ReasonCode::Success;
    case DecodeError::PacketTooLarge:
      return ReasonCode::PacketTooLarge;
    case DecodeError::UnsupportedProtocol:
      return ReasonCode::UnsupportedProtocolVersion;
    case DecodeError::ClientIdRejected:
      return ReasonCode::ClientIdentifierNotValid;
    case DecodeError::InvalidTopicName:
      return ReasonCode::TopicNameInvalid;
    case DecodeError::InvalidTopicFilter:
      return ReasonCode::TopicFilterInvalid;
    case DecodeError::InvalidTopicAlias:
      return ReasonCode::TopicAliasInvalid;
    case DecodeError::ServerOnlyPacket:
    case DecodeError::Qos2Handshake:
    case DecodeError::ExpectedConnect:
    case DecodeError::SecondConnect:
    case DecodeError::InvalidProtocolName:
    case DecodeError::PasswordWithoutUsername:
    case DecodeError::ZeroPacketId:
    case DecodeError::NoTopicFilters:
    case DecodeError::NoLocalOnSharedSubscription:
    case DecodeError::InvalidReasonCode:
    case DecodeError::DuplicateProperty:
    case DecodeError::InvalidPropertyValue:
      return ReasonCode::ProtocolError;
    case DecodeError::ReservedPacketType:
    case DecodeError::InvalidFlags:
    case DecodeError::InvalidQos:
    case DecodeError::DupOnQos0:
    case DecodeError::BadRemainingLength:
    case DecodeError::Truncated:
    case DecodeError::TrailingBytes:
    case DecodeError::InvalidUtf8:
    case DecodeError::InvalidConnectFlags:
    case DecodeError::InvalidSubscriptionOptions:
    case DecodeError::BadPropertyLength:
    case DecodeError::UnknownProperty:
      return ReasonCode::MalformedPacket;
  }
  return ReasonCode::MalformedPacket;
}

std::string_view describe(DecodeError error) {
  switch (error) {
    case DecodeError::None:
      return "ok";
    case DecodeError::ReservedPacketType:
      return "reserved packet type";
    case DecodeError::ServerOnlyPacket:
      return "packet type only a server sends";
    case DecodeError::Qos2Handshake:
      return "QoS 2 handshake packet without a QoS 2 flow";
    case DecodeError::ExpectedConnect:
      return "first packet is not CONNECT";
    case DecodeError::SecondConnect:
      return "second CONNECT";
    case DecodeError::InvalidFlags:
      return "invalid fixed-header flags";
    case DecodeError::InvalidQos:
      return "QoS 3";
    case DecodeError::DupOnQos0:
      return "DUP set on a QoS 0 PUBLISH";
    case DecodeError::BadRemainingLength:
      return "remaining length over 4 bytes or not minimal";
    case DecodeError::PacketTooLarge:
      return "packet too large";
    case DecodeError::Truncated:
      return "field runs past the end of the packet";
    case DecodeError::TrailingBytes:
      return "bytes after the last field";
    case DecodeError::InvalidUtf8:
      return "invalid UTF-8 string";
    case DecodeError::UnsupportedProtocol:
      return "unsupported protocol version";
    case DecodeError::InvalidProtocolName:
      return "not an MQTT protocol name";
    case DecodeError::InvalidConnectFlags:
      return "invalid CONNECT flags";
    case DecodeError::PasswordWithoutUsername:
      return "password without username";
    case DecodeError::ClientIdRejected:
      return "empty client id without clean session";
    case DecodeError::InvalidTopicName:
      return "invalid topic name";
    case DecodeError::InvalidTopicFilter:
      return "invalid topic filter";
    case DecodeError::ZeroPacketId:
      return "packet identifier 0";
    case DecodeError::NoTopicFilters:
      return "no topic filters";
    case DecodeError::InvalidSubscriptionOptions:
      return "invalid subscription options";
    case DecodeError::NoLocalOnSharedSubscription:
      return "no-local on a shared subscription";
    case DecodeError::InvalidReasonCode:
      return "reason code not allowed in this packet";
    case DecodeError::BadPropertyLength:
      return "property length does not fit";
    case DecodeError::UnknownProperty:
      return "property not defined for this packet";
    case DecodeError::DuplicateProperty:
      return "duplicated property";
    case DecodeError::InvalidPropertyValue:
      return "invalid property value";
    case DecodeError::InvalidTopicAlias:
      return "topic alias 0";
  }
  return "unknown error";
}

FixedHeaderResult decode_fixed_header(std::string_view buf, const DecodeOptions& options) {
  FixedHeaderResult result;
  if (buf.empty()) return result;
  const auto first = static_cast<uint8_t>(buf[0]);
  if (const DecodeError e = check_first_byte(first, options); e != DecodeError::None) {
    result.status = DecodeStatus::Error;
    result.error = e;
    return result;
  }
  uint32_t length = 0;
  size_t i = 1;
  for (;; ++i) {
    if (i == 5) {  // the fourth length byte said "more follows"
      result.status = DecodeStatus::Error;
      result.error = DecodeError::BadRemainingLength;
      return result;
    }
    if (i >= buf.size()) return result;
    const auto byte = static_cast<uint8_t>(buf[i]);
    length |= uint32_t{byte & 0x7Fu} << (7 * (i - 1));
    if ((byte & 0x80) == 0) {
      if (byte == 0 && i > 1) {  // ends in a zero group: a shorter encoding exists
        result.status = DecodeStatus::Error;
        result.error = DecodeError::BadRemainingLength;
        return result;
      }
      break;
    }
  }
  result.header.type = static_cast<PacketType>(first >> 4);
  result.header.flags = first & 0x0F;
  result.header.size = static_cast<uint8_t>(i + 1);
  result.header.remaining_length = length;
  if (result.header.packet_size() > options.max_packet_size) {
    result.status = DecodeStatus::Error;
    result.error = DecodeError::PacketTooLarge;
    return result;
  }
  result.status = DecodeStatus::Done;
  return result;
}

DecodeResult decode(std::string_view buf, const DecodeOptions& options) {
  DecodeResult result;
  const FixedHeaderResult fixed = decode_fixed_header(buf, options);
  if (fixed.status != DecodeStatus::Done) {
    result.status = fixed.status;
    result.error = fixed.error;
    return result;
  }
  const FixedHeader& h = fixed.header;
  if (buf.size() < h.packet_size()) {
    result.needed = h.packet_size() - buf.size();
    return result;
  }
  Reader r(buf.substr(h.size, h.remaining_length), DecodeError::Truncated);
  // check_first_byte() admitted CONNECT only without a version and the rest only with one.
  const Version version = options.version.value_or(Version::V5);
  switch (h.type) {
    case PacketType::Connect:
      result.packet = decode_connect(r);
      break;
    case PacketType::Publish:
      result.packet = decode_publish(r, h.flags, version);
      break;
    case PacketType::PubAck:
      result.packet = decode_puback(r, version);
      break;
    case PacketType::Subscribe:
      result.packet = decode_subscribe(r, version);
      break;
    case PacketType::Unsubscribe:
      result.packet = decode_unsubscribe(r, version);
      break;
    case PacketType::PingReq:
      result.packet = PingReq{};
      break;
    case PacketType::Disconnect:
      result.packet = decode_disconnect(r, version);
      break;
    case PacketType::Auth:
      result.packet = decode_auth(r);
      break;
    default:  // refused by check_first_byte()
      r.fail(DecodeError::ReservedPacketType);
      break;
  }
  if (r.ok() && !r.empty()) r.fail(DecodeError::TrailingBytes);
  if (!r.ok()) {
    result.status = DecodeStatus::Error;
    result.error = r.error();
    result.packet = PingReq{};  // drop the partial packet (and any list it allocated)
    return result;
  }
  result.status = DecodeStatus::Done;
  result.consumed = h.packet_size();
  return result;
}

// --- encoding ---------------------------------------------------------------------------------
namespace {

// Every packet body is written twice by the same function: into a Counter, which measures it and
// records the first reason it cannot be encoded, then (only if it can) into an Appender.
class Counter {
 public:
  void byte(uint8_t) { ++size_; }
  void raw(std::string_view bytes) { size_ += bytes.size(); }
  void fail(EncodeError error) {
    if (error_ == EncodeError::None) error_ = error;
  }
  size_t size() const { return size_; }
  EncodeError error() const { return error_; }

 private:
  size_t size_ = 0;
  EncodeError error_ = EncodeError::None;
};

template <ByteBuffer Out>
class Appender {
 public:
  explicit Appender(Out& out) : out_(out) {}
  void byte(uint8_t b) { out_.push_back(static_cast<typename Out::value_type>(b)); }
  void raw(std::string_view bytes) { out_.insert(out_.end(), bytes.begin(), bytes.end()); }
  void fail(EncodeError) {}  // the Counter pass has already refused such a packet

 private:
  Out& out_;
};

template <typename Sink>
void put_u16(Sink& s, uint16_t v) {
  s.byte(static_cast<uint8_t>(v >> 8));
  s.byte(static_cast<uint8_t>(v));
}

template <typename Sink>
void put_u32(Sink& s, uint32_t v) {
  for (int shift = 24; shift >= 0; shift -= 8) s.byte(static_cast<uint8_t>(v >> shift));
}

template <typename Sink>
void put_varint(Sink& s, size_t v) {
  if (v > k_max_remaining_length) return s.fail(EncodeError::PacketTooLarge);
  do {
    uint8_t byte = v & 0x7F;
    v >>= 7;
    if (v > 0) byte |= 0x80;
    s.byte(byte);
  } while (v > 0);
}

// A UTF-8 string or binary data: 2-byte length, then the bytes. (Strings are not re-validated:
// they are the server's own or were decoded.)
template <typename Sink>
void put_string(Sink& s, std::string_view v) {
  if (v.size() > k_max_string) return s.fail(EncodeError::StringTooLong);
  put_u16(s, static_cast<uint16_t>(v.size()));
  s.raw(v);
}

template <typename Sink>
void put_byte_property(Sink& s, uint8_t id, uint8_t v) {
  s.byte(id);
  s.byte(v);
}
template <typename Sink>
void put_u16_property(Sink& s, uint8_t id, uint16_t v) {
  s.byte(id);
  put_u16(s, v);
}
template <typename Sink>
void put_u32_property(Sink& s, uint8_t id, uint32_t v) {
  s.byte(id);
  put_u32(s, v);
}
template <typename Sink>
void put_string_property(Sink& s, uint8_t id, const std::optional<std::string_view>& v) {
  if (!v) return;
  s.byte(id);
  put_string(s, *v);
}
template <typename Sink>
void put_user_properties(Sink& s, const std::vector<UserProperty>& properties) {
  for (const UserProperty& p : properties) {
    s.byte(k_user_property);
    put_string(s, p.name);
    put_string(s, p.value);
  }
}

// A property block: its length, then what `write(sink)` writes.
template <typename Sink, typename Write>
void put_properties(Sink& s, Write&& write) {
  Counter counter;
  write(counter);
  if (counter.error() != EncodeError::None) return s.fail(counter.error());
  put_varint(s, counter.size());
  write(s);
}

template <typename Sink>
void put_message_properties(Sink& s, const MessageProperties& m) {
  if (m.payload_format != PayloadFormat::Unspecified) {
    put_byte_property(s, k_payload_format, static_cast<uint8_t>(m.payload_format));
  }
  if (m.message_expiry) put_u32_property(s, k_message_expiry, *m.message_expiry);
  put_string_property(s, k_content_type, m.content_type);
  put_string_property(s, k_response_topic, m.response_topic);
  put_string_property(s, k_correlation_data, m.correlation_data);
  put_user_properties(s, m.user_properties);
}

// One whole packet: the first byte, the Remaining Length, then `body`.
template <ByteBuffer Out, typename Body>
EncodeError emit(Out& out, uint8_t first_byte, Body&& body) {
  Counter counter;
  body(counter);
  if (counter.error() != EncodeError::None) return counter.error();
  if (counter.size() > k_max_remaining_length) return EncodeError::PacketTooLarge;
  out.reserve(out.size() + 5 + counter.size());
  Appender<Out> appender(out);
  appender.byte(first_byte);
  put_varint(appender, counter.size());
  body(appender);
  return EncodeError::None;
}

uint8_t connack_v311_code(ReasonCode reason) {
  switch (reason) {
    case ReasonCode::Success:
      return 0x00;
    case ReasonCode::UnsupportedProtocolVersion:
      return 0x01;
    case ReasonCode::ClientIdentifierNotValid:
      return 0x02;
    case ReasonCode::BadUserNameOrPassword:
    case ReasonCode::BadAuthenticationMethod:
      return 0x04;
    case ReasonCode::NotAuthorized:
    case ReasonCode::Banned:
      return 0x05;
    default:
      return 0x03;  // server unavailable: 3.1.1 has nothing closer
  }
}

bool valid_qos(Qos qos) { return static_cast<uint8_t>(qos) <= 2; }

}  // namespace

template <ByteBuffer Out>
EncodeError encode(const ConnAck& p, Version version, Out& out) {
  return emit(out, 0x20, [&](auto& s) {
    s.byte(p.session_present && p.reason == ReasonCode::Success ? 1 : 0);
    if (version == Version::V311) return s.byte(connack_v311_code(p.reason));
    if (!k_connack_reasons.contains(p.reason)) s.fail(EncodeError::InvalidField);
    if (p.maximum_qos && *p.maximum_qos != Qos::AtMostOnce && *p.maximum_qos != Qos::AtLeastOnce) {
      s.fail(EncodeError::InvalidField);
    }
    if (p.receive_maximum == 0 || p.maximum_packet_size == 0) s.fail(EncodeError::InvalidField);
    s.byte(static_cast<uint8_t>(p.reason));
    put_properties(s, [&](auto& ps) {
      if (p.session_expiry) put_u32_property(ps, k_session_expiry, *p.session_expiry);
      if (p.receive_maximum) put_u16_property(ps, k_receive_maximum, *p.receive_maximum);
      if (p.maximum_qos) {
        put_byte_property(ps, k_maximum_qos, static_cast<uint8_t>(*p.maximum_qos));
      }
      if (p.retain_available) put_byte_property(ps, k_retain_available, *p.retain_available);
      if (p.maximum_packet_size) {
        put_u32_property(ps, k_maximum_packet_size, *p.maximum_packet_size);
      }
      put_string_property(ps, k_assigned_client_id, p.assigned_client_id);
      if (p.topic_alias_maximum) {
        put_u16_property(ps, k_topic_alias_maximum, *p.topic_alias_maximum);
      }
      put_string_property(ps, k_reason_string, p.reason_string);
      put_user_properties(ps, p.user_properties);
      if (p.wildcard_subscription_available) {
        put_byte_property(ps, k_wildcard_subscription_available,
                          *p.wildcard_subscription_available);
      }
      if (p.subscription_ids_available) {
        put_byte_property(ps, k_subscription_ids_available, *p.subscription_ids_available);
      }
      if (p.shared_subscription_available) {
        put_byte_property(ps, k_shared_subscription_available, *p.shared_subscription_available);
      }
      if (p.server_keep_alive) put_u16_property(ps, k_server_keep_alive, *p.server_keep_alive);
      put_string_property(ps, k_response_information, p.response_information);
      put_string_property(ps, k_server_reference, p.server_reference);
      put_string_property(ps, k_authentication_method, p.authentication_method);
      put_string_property(ps, k_authentication_data, p.authentication_data);
    });
  });
}

template <ByteBuffer Out>
EncodeError encode(const PubAck& p, Version version, Out& out) {
  if (version == Version::V311 && is_failure(p.reason)) return EncodeError::NotInVersion;
  const bool has_properties = p.reason_string || !p.user_properties.empty();
  return emit(out, 0x40, [&](auto& s) {
    if (p.packet_id == 0) s.fail(EncodeError::InvalidField);
    put_u16(s, p.packet_id);
    if (version == Version::V311) return;
    if (!k_puback_reasons.contains(p.reason)) s.fail(EncodeError::InvalidField);
    if (p.reason == ReasonCode::Success && !has_properties) return;
    s.byte(static_cast<uint8_t>(p.reason));
    if (!has_properties) return;
    put_properties(s, [&](auto& ps) {
      put_string_property(ps, k_reason_string, p.reason_string);
      put_user_properties(ps, p.user_properties);
    });
  });
}

template <ByteBuffer Out>
EncodeError encode(const SubAck& p, Version version, Out& out) {
  return emit(out, 0x90, [&](auto& s) {
    put_u16(s, p.packet_id);
    if (version == Version::V5) {
      put_properties(s, [&](auto& ps) {
        put_string_property(ps, k_reason_string, p.reason_string);
        put_user_properties(ps, p.user_properties);
      });
    }
    for (ReasonCode reason : p.reasons) {
      if (!k_suback_reasons.contains(reason)) s.fail(EncodeError::InvalidField);
      if (version == Version::V311 && is_failure(reason)) {
        s.byte(0x80);
      } else {
        s.byte(static_cast<uint8_t>(reason));
      }
    }
  });
}

template <ByteBuffer Out>
EncodeError encode(const UnsubAck& p, Version version, Out& out) {
  return emit(out, 0xB0, [&](auto& s) {
    put_u16(s, p.packet_id);
    if (version == Version::V311) return;
    put_properties(s, [&](auto& ps) {
      put_string_property(ps, k_reason_string, p.reason_string);
      put_user_properties(ps, p.user_properties);
    });
    for (ReasonCode reason : p.reasons) {
      if (!k_unsuback_reasons.contains(reason)) s.fail(EncodeError::InvalidField);
      s.byte(static_cast<uint8_t>(reason));
    }
  });
}

template <ByteBuffer Out>
EncodeError encode(const PingResp&, Version, Out& out) {
  return emit(out, 0xD0, [](auto&) {});
}

template <ByteBuffer Out>
EncodeError encode(const Disconnect& p, Version version, Out& out) {
  if (version == Version::V311 && p.reason != ReasonCode::Success) {
    return EncodeError::NotInVersion;
  }
  const bool has_properties =
      p.session_expiry || p.reason_string || p.server_reference || !p.user_properties.empty();
  return emit(out, 0xE0, [&](auto& s) {
    if (version == Version::V311) return;
    if (!k_disconnect_reasons.contains(p.reason)) s.fail(EncodeError::InvalidField);
    if (p.reason == ReasonCode::Success && !has_properties) return;
    s.byte(static_cast<uint8_t>(p.reason));
    if (!has_properties) return;
    put_properties(s, [&](auto& ps) {
      if (p.session_expiry) put_u32_property(ps, k_session_expiry, *p.session_expiry);
      put_string_property(ps, k_reason_string, p.reason_string);
      put_string_property(ps, k_server_reference, p.server_reference);
      put_user_properties(ps, p.user_properties);
    });
  });
}

template <ByteBuffer Out>
EncodeError encode(const Connect& p, Version version, Out& out) {
  if (p.version != version) return EncodeError::VersionMismatch;
  const bool v5 = version == Version::V5;
  uint8_t flags = p.clean_start ? 0x02 : 0x00;
  if (p.will) {
    flags |= 0x04 | static_cast<uint8_t>(static_cast<uint8_t>(p.will->qos) << 3);
    if (p.will->retain) flags |= 0x20;
  }
  if (p.password) flags |= 0x40;
  if (p.username) flags |= 0x80;
  return emit(out, 0x10, [&](auto& s) {
    if (p.will && !valid_qos(p.will->qos)) s.fail(EncodeError::InvalidField);
    if (!v5 && p.password && !p.username) s.fail(EncodeError::InvalidField);
    put_string(s, "MQTT");
    s.byte(static_cast<uint8_t>(version));
    s.byte(flags);
    put_u16(s, p.keep_alive);
    if (v5) {
      if (p.receive_maximum == 0 || p.maximum_packet_size == 0) s.fail(EncodeError::InvalidField);
      put_properties(s, [&](auto& ps) {
        if (p.session_expiry != 0) put_u32_property(ps, k_session_expiry, p.session_expiry);
        if (p.receive_maximum != 65535) {
          put_u16_property(ps, k_receive_maximum, p.receive_maximum);
        }
        if (p.maximum_packet_size) {
          put_u32_property(ps, k_maximum_packet_size, *p.maximum_packet_size);
        }
        if (p.topic_alias_maximum != 0) {
          put_u16_property(ps, k_topic_alias_maximum, p.topic_alias_maximum);
        }
        if (p.request_response_information) {
          put_byte_property(ps, k_request_response_information, 1);
        }
        if (!p.request_problem_information) {
          put_byte_property(ps, k_request_problem_information, 0);
        }
        put_user_properties(ps, p.user_properties);
        put_string_property(ps, k_authentication_method, p.authentication_method);
        put_string_property(ps, k_authentication_data, p.authentication_data);
      });
    }
    put_string(s, p.client_id);
    if (p.will) {
      if (v5) {
        put_properties(s, [&](auto& ps) {
          if (p.will->delay_interval != 0) {
            put_u32_property(ps, k_will_delay, p.will->delay_interval);
          }
          put_message_properties(ps, p.will->properties);
        });
      }
      put_string(s, p.will->topic);
      put_string(s, p.will->payload);
    }
    if (p.username) put_string(s, *p.username);
    if (p.password) put_string(s, *p.password);
  });
}

template <ByteBuffer Out>
EncodeError encode(const Publish& p, Version version, Out& out) {
  if (!valid_qos(p.qos)) return EncodeError::InvalidField;
  const bool qos0 = p.qos == Qos::AtMostOnce;
  if (qos0 ? (p.packet_id != 0 || p.dup) : p.packet_id == 0) return EncodeError::InvalidField;
  const auto first = static_cast<uint8_t>(0x30 | (p.dup ? 0x08 : 0) |
                                          static_cast<uint8_t>(p.qos) << 1 | (p.retain ? 1 : 0));
  return emit(out, first, [&](auto& s) {
    put_string(s, p.topic);
    if (!qos0) put_u16(s, p.packet_id);
    if (version == Version::V5) {
      put_properties(s, [&](auto& ps) {
        if (p.topic_alias != 0) put_u16_property(ps, k_topic_alias, p.topic_alias);
        put_message_properties(ps, p.properties);
      });
    }
    s.raw(p.payload);
  });
}

template <ByteBuffer Out>
EncodeError encode(const Subscribe& p, Version version, Out& out) {
  return emit(out, 0x82, [&](auto& s) {
    if (p.packet_id == 0 || p.subscriptions.empty()) s.fail(EncodeError::InvalidField);
    put_u16(s, p.packet_id);
    if (version == Version::V5) {
      if (p.subscription_id == 0u || p.subscription_id > k_max_remaining_length) {
        s.fail(EncodeError::InvalidField);
      }
      put_properties(s, [&](auto& ps) {
        if (p.subscription_id) {
          ps.byte(k_subscription_id);
          put_varint(ps, *p.subscription_id);
        }
        put_user_properties(ps, p.user_properties);
      });
    }
    for (const Subscription& sub : p.subscriptions) {
      if (!valid_qos(sub.max_qos) || static_cast<uint8_t>(sub.retain_handling) > 2) {
        s.fail(EncodeError::InvalidField);
      }
      put_string(s, sub.filter);
      auto options = static_cast<uint8_t>(sub.max_qos);
      if (version == Version::V5) {
        options |=
            static_cast<uint8_t>((sub.no_local ? 0x04 : 0) | (sub.retain_as_published ? 0x08 : 0) |
                                 static_cast<uint8_t>(sub.retain_handling) << 4);
      }
      s.byte(options);
    }
  });
}

template <ByteBuffer Out>
EncodeError encode(const Unsubscribe& p, Version version, Out& out) {
  return emit(out, 0xA2, [&](auto& s) {
    if (p.packet_id == 0 || p.filters.empty()) s.fail(EncodeError::InvalidField);
    put_u16(s, p.packet_id);
    if (version == Version::V5) {
      put_properties(s, [&](auto& ps) { put_user_properties(ps, p.user_properties); });
    }
    for (std::string_view filter : p.filters) put_string(s, filter);
  });
}

template <ByteBuffer Out>
EncodeError encode(const PingReq&, Version, Out& out) {
  return emit(out, 0xC0, [](auto&) {});
}

template <ByteBuffer Out>
EncodeError encode(const Auth& p, Version version, Out& out) {
  if (version == Version::V311) return EncodeError::NotInVersion;
  const bool has_properties = p.authentication_method || p.authentication_data || p.reason_string ||
                              !p.user_properties.empty();
  return emit(out, 0xF0, [&](auto& s) {
    if (!k_auth_reasons.contains(p.reason)) s.fail(EncodeError::InvalidField);
    if (p.reason == ReasonCode::Success && !has_properties) return;
    s.byte(static_cast<uint8_t>(p.reason));
    put_properties(s, [&](auto& ps) {
      put_string_property(ps, k_authentication_method, p.authentication_method);
      put_string_property(ps, k_authentication_data, p.authentication_data);
      put_string_property(ps, k_reason_string, p.reason_string);
      put_user_properties(ps, p.user_properties);
    });
  });
}

template <ByteBuffer Out>
EncodeError encode(const Packet& packet, Version version, Out& out) {
  return std::visit([&](const auto& p) { return encode(p, version, out); }, packet);
}

// The two buffer types ByteBuffer admits.
template EncodeError encode(const ConnAck&, Version, std::string&);
template EncodeError encode(const ConnAck&, Version, std::vector<uint8_t>&);
template EncodeError encode(const PubAck&, Version, std::string&);
template EncodeError encode(const PubAck&, Version, std::vector<uint8_t>&);
template EncodeError encode(const SubAck&, Version, std::string&);
template EncodeError encode(const SubAck&, Version, std::vector<uint8_t>&);
template EncodeError encode(const UnsubAck&, Version, std::string&);
template EncodeError encode(const UnsubAck&, Version, std::vector<uint8_t>&);
template EncodeError encode(const PingResp&, Version, std::string&);
template EncodeError encode(const PingResp&, Version, std::vector<uint8_t>&);
template EncodeError encode(const Disconnect&, Version, std::string&);
template EncodeError encode(const Disconnect&, Version, std::vector<uint8_t>&);
template EncodeError encode(const Connect&, Version, std::string&);
template EncodeError encode(const Connect&, Version, std::vector<uint8_t>&);
template EncodeError encode(const Publish&, Version, std::string&);
template EncodeError encode(const Publish&, Version, std::vector<uint8_t>&);
template EncodeError encode(const Subscribe&, Version, std::string&);
template EncodeError encode(const Subscribe&, Version, std::vector<uint8_t>&);
template EncodeError encode(const Unsubscribe&, Version, std::string&);
template EncodeError encode(const Unsubscribe&, Version, std::vector<uint8_t>&);
template EncodeError encode(const PingReq&, Version, std::string&);
template EncodeError encode(const PingReq&, Version, std::vector<uint8_t>&);
template EncodeError encode(const Auth&, Version, std::string&);
template EncodeError encode(const Auth&, Version, std::vector<uint8_t>&);
template EncodeError encode(const Packet&, Version, std::string&);
template EncodeError encode(const Packet&, Version, std::vector<uint8_t>&);

}  // namespace sluice::mqtt

#include "proxy/mqtt_session.h"

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <optional>
#include <span>
#include <string_view>
#include <vector>

#include <fmt/format.h>

#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/thread_pool.hpp>

#include "auth/base64url.h"
#include "core/log.h"
#include "filters/auth.h"
#include "mqtt/codec.h"
#include "mqtt/topic.h"
#include "proxy/access_log.h"
#include "proxy/proxy_header.h"
#include "proxy/upstream_call.h"
#include "server/snapshot.h"
#include "server/tls_stream.h"
#include "server/watchdog.h"
#include "server/worker.h"
#include "stats/metrics.h"
#include "tls/tls.h"
#include "upstream/balancer.h"

namespace sluice::proxy {
namespace {

using namespace std::literals;
using server::Snapshot;
using server::Watchdog;
using server::Worker;
using Clock = std::chrono::steady_clock;
using mqtt::ReasonCode;

// QoS 1 messages a client may have unacknowledged (v5 Receive Maximum, sent in CONNACK). 3.1.1
// clients have no such limit; the queue bound below holds them back instead (the session stops
// reading while the queue is full).
constexpr uint16_t kReceiveMaximum = 16;
// PUBLISHes received and not forwarded yet, and their payload bytes (one larger message is
// always taken).
constexpr size_t kMaxQueued = 32;
constexpr size_t kMaxQueuedBytes = 4 * 1024 * 1024;
// A client that does not read what the gateway writes for this long is dropped.
constexpr auto kWriteTimeout = std::chrono::seconds(30);
// The largest read at once, and the smallest free space a read gets.
constexpr size_t kReadChunk = 64 * 1024;
constexpr size_t kMinRead = 4096;

// Why the session ends; the first reason recorded wins.
enum class End {
  None,
  ClientDisconnect,          // DISCONNECT (v5: reason 0x00): the will is discarded
  ClientDisconnectWithWill,  // v5 DISCONNECT 0x04: the will is published
  ConnectionLost,            // EOF, reset or a failed write without DISCONNECT
  KeepAliveTimeout,          // nothing from the client for 1.5 x keep alive
  ProtocolError,             // malformed or forbidden packet (v5: DISCONNECT with the reason)
  UpstreamFailed,            // a QoS 1 message the upstream did not take: the client resends it
  Draining,                  // the worker shuts down
};

// The will is the client's "I vanished" message: published when the client went away without a
// DISCONNECT, broke the protocol, or asked for it (v5 0x04); not when it disconnected cleanly
// and not when the gateway itself ended the session (draining, an upstream failure).
bool publishes_will(End end) {
  return end == End::ClientDisconnectWithWill || end == End::ConnectionLost ||
         end == End::KeepAliveTimeout || end == End::ProtocolError;
}

// A PUBLISH (or the will) copied out of the read buffer, waiting for the forwarder.
struct Message {
  std::string topic;
  std::string payload;
  mqtt::Qos qos = mqtt::Qos::AtMostOnce;
  bool retain = false;
  bool dup = false;
  bool will = false;
  uint16_t packet_id = 0;
  size_t packet_bytes = 0;  // the whole PUBLISH, for bytes_in
  // v5 properties forwarded as headers.
  mqtt::PayloadFormat payload_format = mqtt::PayloadFormat::Unspecified;
  std::optional<uint32_t> message_expiry;
  std::optional<std::string> content_type, response_topic, correlation_data;
  std::vector<std::pair<std::string, std::string>> user_properties;  // v5, as received
};

Message copy_message(const mqtt::MessageProperties& p) {
  Message m;
  m.payload_format = p.payload_format;
  m.message_expiry = p.message_expiry;
  if (p.content_type) m.content_type.emplace(*p.content_type);
  if (p.response_topic) m.response_topic.emplace(*p.response_topic);
  if (p.correlation_data) m.correlation_data.emplace(*p.correlation_data);
  for (const auto& up : p.user_properties) m.user_properties.emplace_back(up.name, up.value);
  return m;
}

// Control characters (and DEL) cannot go into an HTTP header or a log line as they are; MQTT
// allows them in topics and client ids (a "SHOULD NOT"), the bridge does not.
bool has_control(std::string_view s) {
  return std::any_of(s.begin(), s.end(), [](char c) {
    auto u = static_cast<unsigned char>(c);
    return u < 0x20 || u == 0x7f;
  });
}

void append_hex(std::string& out, uint64_t v, int digits) {
  static constexpr char kHex[] = "0123456789abcdef";
  for (int i = digits - 1; i >= 0; --i) out += kHex[(v >> (4 * i)) & 15];
}

std::string uuid(uint64_t a, uint64_t b) {
  std::string out;
  append_hex(out, a >> 32, 8);
  out += '-';
  append_hex(out, a >> 16, 4);
  out += "-4"sv;
  append_hex(out, a, 3);
  out += '-';
  append_hex(out, ((b >> 48) & 0x3fff) | 0x8000, 4);
  out += '-';
  append_hex(out, b, 12);
  return out;
}

// Password hashing (bcrypt ~100 ms) runs here, never on a worker; the session resumes on its
// worker with the result.
asio::awaitable<filters::Login> invoke(std::function<filters::Login()> work) { co_return work(); }
asio::awaitable<filters::Login> on_blocking_pool(std::function<filters::Login()> work) {
  static asio::thread_pool* pool = new asio::thread_pool(2);  // process lifetime
  co_return co_await asio::co_spawn(pool->get_executor(), invoke(std::move(work)),
                                    asio::use_awaitable);
}

// What became of one message, for the client, the access log and the metrics.
struct Outcome {
  stats::MqttResult result = stats::MqttResult::Forwarded;
  ReasonCode puback = ReasonCode::Success;  // v5 PUBACK reason (3.1.1: a plain PUBACK)
  bool retry = false;  // QoS 1: no PUBACK; the client must send the message again
};

class MqttSession final : public server::Session {
 public:
  MqttSession(Worker& worker, tcp::socket socket, std::string listener)
      : worker_(worker),
        socket_(std::move(socket)),
        listener_name_(std::move(listener)),
        read_wd_(socket_.get_executor()),
        write_wd_(socket_.get_executor()),
        forward_signal_(socket_.get_executor(), Clock::time_point::max()),
        space_signal_(socket_.get_executor(), Clock::time_point::max()) {
    error_code ec;
    auto ep = socket_.remote_endpoint(ec);
    if (!ec) {
      auto addr = ep.address();
      if (addr.is_v6() && addr.to_v6().is_v4_mapped()) {
        addr = asio::ip::make_address_v4(asio::ip::v4_mapped, addr.to_v6());
      }
      client_ip_ = addr.to_string();
    }
    addrs_ = connection_addresses(socket_);
    worker_.add_session(this);
  }
  ~MqttSession() override {
    if (conn_metrics_) conn_metrics_->connection_closed(conn_listener_);
    worker_.remove_session(this);
  }

  // Stop reading; the messages already received are still forwarded (and acknowledged), then
  // a v5 client gets DISCONNECT 0x8B (server shutting down).
  void on_drain() override {
    end(End::Draining, ReasonCode::ServerShuttingDown, "server shutting down");
  }

  asio::awaitable<void> run();

 private:
  // --- connection ---
  void refresh_snapshot();
  asio::awaitable<bool> handshake(std::shared_ptr<const tls::ServerContext> ctx);
  asio::awaitable<bool> connect();
  asio::awaitable<void> refuse_connect(ReasonCode reason, mqtt::Version version,
                                       std::string_view why);
  // Reads at least one more byte into in_ (keep-alive deadline armed by the caller). False: the
  // connection is gone or the read was interrupted.
  asio::awaitable<bool> read_more(size_t needed);
  // Writes out_ (and whatever is added while writing) unless a write is already under way; that
  // write sends it too, in order.
  asio::awaitable<void> flush();
  void encode_failed(mqtt::EncodeError e, std::string_view what) const {
    log::error("mqtt: cannot encode {} for client {}: error {}", what, client_id_,
               static_cast<int>(e));
  }

  // Records why the session ends (first reason wins) and wakes the reader and the forwarder.
  void end(End why, ReasonCode reason, std::string_view detail);
  void interrupt_reader();

  // --- after CONNACK ---
  asio::awaitable<void> read_loop();
  // False: the session ends (end() was called).
  asio::awaitable<bool> on_packet(mqtt::Packet& packet, size_t size);
  asio::awaitable<bool> on_publish(const mqtt::Publish& p, size_t size);
  asio::awaitable<void> forward_loop();
  asio::awaitable<Outcome> deliver(Message& m);
  void write_access_log(const Message& m, std::string_view method, std::string_view path,
                        std::string_view route, std::string_view upstream, int status,
                        const CallResult* call, std::string_view error, uint64_t bytes_out,
                        Clock::time_point start);
  // Whether a reason string may go to the client: it asked for problem information (5.0
  // Request Problem Information), and its Maximum Packet Size leaves room for one.
  bool reason_strings() const { return request_problem_info_ && client_max_packet_ >= 512; }

  Worker& worker_;
  tcp::socket socket_;
  std::unique_ptr<server::TlsStream> tls_;
  server::Io io_{&socket_, nullptr};
  std::string listener_name_;
  std::string client_ip_;
  Addresses addrs_;  // client and local address (from a PROXY header on such a listener)
  std::string tls_cn_;
  Watchdog read_wd_;
  Watchdog write_wd_;

  std::shared_ptr<const Snapshot> snap_;
  std::shared_ptr<stats::WorkerMetrics> metrics_;  // the worker's block for snap_
  int listener_index_ = -1;
  std::shared_ptr<stats::WorkerMetrics> conn_metrics_;  // the block the connection opened on
  int conn_listener_ = -1;
  config::Limits limits_;
  uint32_t max_packet_ = 0;

  // CONNECT
  mqtt::DecodeOptions options_;
  mqtt::Version version_ = mqtt::Version::V311;
  std::string client_id_;
  std::string consumer_;  // the authenticated consumer (or a client certificate's CN)
  Duration keep_alive_{0};
  bool request_problem_info_ = true;
  uint32_t client_max_packet_ = UINT32_MAX;  // 5.0 Maximum Packet Size of the client
  std::optional<Message> will_;

  // I/O state
  std::string in_;  // received bytes not decoded yet
  std::string out_, sending_;
  bool reading_ = false;
  bool writing_ = false;
  bool interrupt_after_write_ = false;
  bool write_failed_ = false;

  // Between the reader and the forwarder (one thread: no locks; the timers are wake-up signals).
  std::deque<Message> queue_;
  size_t queued_bytes_ = 0;
  int unacked_qos1_ = 0;  // QoS 1 PUBLISHes received and not acknowledged (v5 Receive Maximum)
  bool reader_done_ = false;
  asio::steady_timer forward_signal_;
  asio::steady_timer space_signal_;
  End end_ = End::None;
  ReasonCode end_reason_ = ReasonCode::Success;
  std::string end_detail_;
};

void MqttSession::refresh_snapshot() {
  if (snap_ == worker_.snapshot()) return;
  snap_ = worker_.snapshot();
  metrics_ = snap_->config.admin ? worker_.metrics() : nullptr;
  listener_index_ = -1;
  limits_ = snap_->config.limits;
  for (size_t i = 0; i < snap_->config.listeners.size(); ++i) {
    if (snap_->config.listeners[i].name == listener_name_) {
      listener_index_ = static_cast<int>(i);
      limits_ = snap_->config.listeners[i].limits;
    }
  }
}

void MqttSession::end(End why, ReasonCode reason, std::string_view detail) {
  if (end_ == End::None) {
    end_ = why;
    end_reason_ = reason;
    end_detail_ = detail;
  }
  forward_signal_.cancel();
  space_signal_.cancel();
  interrupt_reader();
}

// Cancelling the socket would also cancel a write in progress: wait for it to finish first.
void MqttSession::interrupt_reader() {
  if (!reading_) return;  // the reader checks end_ before its next read
  if (writing_) {
    interrupt_after_write_ = true;
    return;
  }
  error_code ignored;
  socket_.cancel(ignored);
}

asio::awaitable<void> MqttSession::flush() {
  if (writing_) co_return;
  writing_ = true;
  while (!out_.empty() && !write_failed_) {
    sending_.swap(out_);
    out_.clear();
    write_wd_.arm(kWriteTimeout, &socket_);
    auto [ec, n] = co_await io_.write(asio::buffer(sending_));
    if (conn_metrics_) conn_metrics_->bytes(conn_listener_, 0, n);
    sending_.clear();
    if (ec) write_failed_ = true;
  }
  out_.clear();
  write_wd_.disarm();
  writing_ = false;
  if (write_failed_) end(End::ConnectionLost, ReasonCode::UnspecifiedError, "write failed");
  if (interrupt_after_write_) {
    interrupt_after_write_ = false;
    interrupt_reader();
  }
}

asio::awaitable<bool> MqttSession::read_more(size_t needed) {
  if (in_.capacity() > kReadChunk && in_.empty()) in_.shrink_to_fit();  // an idle session
  const size_t want = std::clamp(needed, kMinRead, kReadChunk);
  const size_t old = in_.size();
  in_.resize(old + want);
  reading_ = true;
  auto [ec, n] = co_await io_.read_some(asio::buffer(in_.data() + old, want));
  reading_ = false;
  in_.resize(old + (ec ? 0 : n));
  if (ec) co_return false;
  if (conn_metrics_) conn_metrics_->bytes(conn_listener_, n, 0);
  co_return true;
}

asio::awaitable<void> MqttSession::run() {
  refresh_snapshot();
  if (snap_->config.admin) conn_metrics_ = metrics_;
  conn_listener_ = listener_index_;
  if (conn_metrics_) conn_metrics_->connection_opened(conn_listener_);
  max_packet_ = static_cast<uint32_t>(
      std::min<uint64_t>(limits_.max_body + limits_.max_header_bytes, 268'435'460));
  options_.max_packet_size = max_packet_;

  bool connected = true;
  if (listener_index_ >= 0 && snap_->config.listeners[listener_index_].proxy_protocol) {
    std::string_view why =
        co_await accept_proxy_header(socket_, read_wd_, limits_.header_timeout, addrs_);
    if (!why.empty()) {
      log::warn("listener {}: PROXY header from {} refused: {}", listener_name_, client_ip_, why);
      connected = false;
    }
    client_ip_ = addrs_.client.ip;
  }
  // The TLS handshake and CONNECT, together within header_timeout (slowloris).
  read_wd_.arm(limits_.header_timeout, &socket_);
  if (auto it = snap_->listener_tls.find(listener_name_);
      connected && it != snap_->listener_tls.end()) {
    connected = co_await handshake(it->second);
  }
  if (connected) connected = co_await connect();
  if (connected) {
    using namespace asio::experimental::awaitable_operators;
    co_await (read_loop() && forward_loop());
    // v5: the server says why it ends the session (never after a client's DISCONNECT).
    if (version_ == mqtt::Version::V5 && !write_failed_ && end_ != End::ClientDisconnect &&
        end_ != End::ClientDisconnectWithWill && end_ != End::ConnectionLost &&
        end_reason_ != ReasonCode::Success) {
      mqtt::Disconnect d{.reason = end_reason_};
      // (DISCONNECT may carry one even without Request Problem Information)
      if (!end_detail_.empty() && client_max_packet_ >= 512) d.reason_string = end_detail_;
      if (auto e = mqtt::encode(d, version_, out_); e != mqtt::EncodeError::None) {
        encode_failed(e, "DISCONNECT");
      }
      co_await flush();
    }
    log::debug("mqtt: client {} from {} disconnected ({})", client_id_, client_ip_,
               end_detail_.empty() ? "-" : end_detail_);
  }
  error_code ignored;
  if (tls_) tls_->shutdown();
  socket_.shutdown(tcp::socket::shutdown_send, ignored);
  socket_.close(ignored);
}

asio::awaitable<bool> MqttSession::handshake(std::shared_ptr<const tls::ServerContext> ctx) {
  SSL* ssl = ctx->new_ssl();
  if (ssl == nullptr) co_return false;
  tls_ = std::make_unique<server::TlsStream>(socket_, ssl);
  error_code ec = co_await tls_->handshake();  // (read_wd_ is armed: see run())
  if (ec) {
    log::debug("TLS handshake from {} failed: {}", client_ip_,
               read_wd_.expired() ? std::string("timeout") : ec.message());
    tls::clear_errors();
    co_return false;
  }
  tls_cn_ = tls::peer_common_name(ssl);
  io_.tls = tls_.get();
  co_return true;
}

// CONNACK with a failure, in the format the client understands, then the session is over.
asio::awaitable<void> MqttSession::refuse_connect(ReasonCode reason, mqtt::Version version,
                                                  std::string_view why) {
  log::info("mqtt: refused CONNECT from {} (client id '{}', listener {}): {}", client_ip_,
            client_id_, listener_name_, why);
  mqtt::ConnAck ack{.reason = reason};
  if (auto e = mqtt::encode(ack, version, out_); e != mqtt::EncodeError::None) {
    encode_failed(e, "CONNACK");
  }
  co_await flush();
}

asio::awaitable<bool> MqttSession::connect() {
  // CONNECT, within header_timeout of the connection (read_wd_ armed by run()).
  mqtt::DecodeResult r;
  for (;;) {
    r = mqtt::decode(in_, options_);
    if (r.status != mqtt::DecodeStatus::NeedMore) break;
    if (worker_.draining() || !co_await read_more(r.needed)) {
      if (read_wd_.expired()) {
        log::info(
            "mqtt: no CONNECT from {} within {} ms", client_ip_,
            std::chrono::duration_cast<std::chrono::milliseconds>(limits_.header_timeout).count());
      }
      co_return false;
    }
  }
  read_wd_.disarm();
  if (r.status == mqtt::DecodeStatus::Error) {
    // Only these two are answered (in the 3.1.1 format: a broken CONNECT says nothing reliable
    // about the version); anything else is closed silently.
    if (r.error == mqtt::DecodeError::UnsupportedProtocol ||
        r.error == mqtt::DecodeError::ClientIdRejected) {
      co_await refuse_connect(r.reason(), mqtt::Version::V311, mqtt::describe(r.error));
    } else {
      log::info("mqtt: bad CONNECT from {}: {}", client_ip_, mqtt::describe(r.error));
    }
    co_return false;
  }
  const auto& c = std::get<mqtt::Connect>(r.packet);
  version_ = c.version;
  options_.version = c.version;
  client_id_ = c.client_id;
  request_problem_info_ = c.request_problem_information;
  client_max_packet_ = c.maximum_packet_size.value_or(UINT32_MAX);
  if (has_control(client_id_)) {
    client_id_.clear();
    co_await refuse_connect(ReasonCode::ClientIdentifierNotValid, version_,
                            "control character in the client id");
    co_return false;
  }
  if (c.authentication_method) {  // v5 enhanced authentication: not offered
    co_await refuse_connect(ReasonCode::BadAuthenticationMethod, version_,
                            "enhanced authentication is not supported");
    co_return false;
  }
  bool assigned_id = false;
  if (client_id_.empty()) {  // (3.1.1: the codec allowed it only with clean session)
    client_id_ = "sluice-";
    append_hex(client_id_, worker_.random(), 16);
    assigned_id = true;
  }

  // Credentials.
  const std::string& authenticator = snap_->config.mqtt ? snap_->config.mqtt->auth : "";
  if (!authenticator.empty()) {
    filters::Login login = filters::check_login(snap_->auth, authenticator, c.username, c.password);
    if (login.verify) {
      // (the Connect's views point into in_, which nothing touches while this waits)
      login = co_await on_blocking_pool(std::move(login.verify));
    }
    if (login.outcome != filters::Login::Outcome::Accepted) {
      co_await refuse_connect(login.outcome == filters::Login::Outcome::Missing
                                  ? ReasonCode::NotAuthorized
                                  : ReasonCode::BadUserNameOrPassword,
                              version_, fmt::format("{}: {}", authenticator, login.detail));
      co_return false;
    }
    consumer_ = login.identity ? login.identity->consumer : std::string();
  } else {
    consumer_ = tls_cn_;
  }
  if (worker_.draining()) {
    co_await refuse_connect(ReasonCode::ServerUnavailable, version_, "server shutting down");
    co_return false;
  }

  // Keep alive: the client's, or (keep alive 0) the listener's idle_timeout, which a v5 client is
  // told to use (Server Keep Alive); 3.1.1 cannot be told, its idle connection is closed then.
  keep_alive_ = std::chrono::seconds(c.keep_alive);
  std::optional<uint16_t> server_keep_alive;
  if (c.keep_alive == 0) {
    const auto idle = std::chrono::duration_cast<std::chrono::seconds>(limits_.idle_timeout);
    const auto seconds = std::clamp<int64_t>(idle.count(), 1, 65535);
    keep_alive_ = std::chrono::seconds(seconds);
    if (version_ == mqtt::Version::V5) server_keep_alive = static_cast<uint16_t>(seconds);
  }

  if (c.will) {
    Message w = copy_message(c.will->properties);
    w.topic = c.will->topic;
    w.payload = c.will->payload;
    w.qos = c.will->qos;
    w.retain = c.will->retain;
    w.will = true;
    will_ = std::move(w);
  }

  mqtt::ConnAck ack;
  if (version_ == mqtt::Version::V5) {
    ack.receive_maximum = kReceiveMaximum;
    ack.maximum_qos = mqtt::Qos::AtLeastOnce;
    ack.maximum_packet_size = max_packet_;
    ack.wildcard_subscription_available = false;
    ack.subscription_ids_available = false;
    ack.shared_subscription_available = false;
    if (c.session_expiry != 0) ack.session_expiry = 0;  // no session outlives its connection
    if (assigned_id) ack.assigned_client_id = client_id_;
    ack.server_keep_alive = server_keep_alive;
  }
  const size_t connect_size = r.consumed;
  in_.erase(0, connect_size);  // (ends the views of `c`)
  if (auto e = mqtt::encode(ack, version_, out_); e != mqtt::EncodeError::None) {
    encode_failed(e, "CONNACK");
    co_return false;
  }
  co_await flush();
  if (write_failed_) co_return false;
  log::debug("mqtt: client {} from {} connected (MQTT {}, keep alive {}s, consumer '{}')",
             client_id_, client_ip_, version_ == mqtt::Version::V5 ? "5.0" : "3.1.1", c.keep_alive,
             consumer_);
  co_return true;
}

asio::awaitable<void> MqttSession::read_loop() {
  for (;;) {
    // Every complete packet in the buffer, then read more.
    size_t needed = 0;
    while (end_ == End::None) {
      mqtt::DecodeResult r = mqtt::decode(in_, options_);
      if (r.status == mqtt::DecodeStatus::NeedMore) {
        needed = r.needed;
        break;
      }
      if (r.status == mqtt::DecodeStatus::Error) {
        log::info("mqtt: client {} from {}: {}; closing", client_id_, client_ip_,
                  mqtt::describe(r.error));
        end(End::ProtocolError, r.reason(), mqtt::describe(r.error));
        break;
      }
      const bool go_on = co_await on_packet(r.packet, r.consumed);
      in_.erase(0, r.consumed);
      if (!go_on) break;
    }
    if (end_ != End::None) break;
    // Keep alive: a packet within 1.5 times the keep-alive interval (MQTT 3.1.2.10).
    // (disarmed again after the read: while the reader waits for queue space it does not read,
    // and a client cannot be blamed for that)
    read_wd_.arm(keep_alive_ + keep_alive_ / 2, &socket_);
    const bool got = co_await read_more(needed);
    if (got) read_wd_.disarm();
    if (!got) {
      if (read_wd_.expired()) {
        log::info("mqtt: client {} from {}: keep alive expired; closing", client_id_, client_ip_);
        end(End::KeepAliveTimeout, ReasonCode::KeepAliveTimeout, "keep alive timeout");
      } else {
        end(End::ConnectionLost, ReasonCode::UnspecifiedError, "");
      }
      break;
    }
  }
  read_wd_.disarm();
  // The will goes after everything the client sent before it vanished.
  if (will_ && publishes_will(end_)) {
    queue_.push_back(std::move(*will_));
    will_.reset();
  }
  reader_done_ = true;
  forward_signal_.cancel();
}

asio::awaitable<bool> MqttSession::on_packet(mqtt::Packet& packet, size_t size) {
  if (auto* p = std::get_if<mqtt::Publish>(&packet)) co_return co_await on_publish(*p, size);
  if (auto* s = std::get_if<mqtt::Subscribe>(&packet)) {
    // This gateway forwards what clients publish; it delivers nothing to subscribers.
    mqtt::SubAck ack{.packet_id = s->packet_id};
    ack.reasons.assign(s->subscriptions.size(), ReasonCode::NotAuthorized);
    if (reason_strings()) ack.reason_string = "subscriptions are not supported by this gateway";
    if (auto e = mqtt::encode(ack, version_, out_); e != mqtt::EncodeError::None) {
      encode_failed(e, "SUBACK");
    }
    co_await flush();
    co_return true;
  }
  if (auto* u = std::get_if<mqtt::Unsubscribe>(&packet)) {
    mqtt::UnsubAck ack{.packet_id = u->packet_id};
    ack.reasons.assign(u->filters.size(), ReasonCode::NoSubscriptionExisted);
    if (auto e = mqtt::encode(ack, version_, out_); e != mqtt::EncodeError::None) {
      encode_failed(e, "UNSUBACK");
    }
    co_await flush();
    co_return true;
  }
  if (std::holds_alternative<mqtt::PingReq>(packet)) {
    if (auto e = mqtt::encode(mqtt::PingResp{}, version_, out_); e != mqtt::EncodeError::None) {
      encode_failed(e, "PINGRESP");
    }
    co_await flush();
    co_return true;
  }
  if (auto* d = std::get_if<mqtt::Disconnect>(&packet)) {
    if (d->reason == ReasonCode::DisconnectWithWill) {
      end(End::ClientDisconnectWithWill, ReasonCode::Success, "DISCONNECT with will");
    } else {
      end(End::ClientDisconnect, ReasonCode::Success, "DISCONNECT");
    }
    co_return false;
  }
  if (std::holds_alternative<mqtt::PubAck>(packet)) {
    co_return true;  // the gateway sends no QoS 1 message: nothing to acknowledge; ignored
  }
  // AUTH without an authentication method in CONNECT (v5 4.12).
  log::info("mqtt: client {} from {}: unexpected AUTH; closing", client_id_, client_ip_);
  end(End::ProtocolError, ReasonCode::ProtocolError, "AUTH without authentication method");
  co_return false;
}

asio::awaitable<bool> MqttSession::on_publish(const mqtt::Publish& p, size_t size) {
  if (p.qos == mqtt::Qos::ExactlyOnce) {
    log::info("mqtt: client {} from {}: QoS 2 PUBLISH refused; closing", client_id_, client_ip_);
    end(End::ProtocolError, ReasonCode::QosNotSupported, "QoS 2 is not supported");
    co_return false;
  }
  if (p.topic_alias != 0) {  // CONNACK offered no topic aliases (Topic Alias Maximum 0)
    end(End::ProtocolError, ReasonCode::TopicAliasInvalid, "topic aliases are not supported");
    co_return false;
  }
  if (p.qos == mqtt::Qos::AtLeastOnce) {
    if (version_ == mqtt::Version::V5 && unacked_qos1_ >= kReceiveMaximum) {
      end(End::ProtocolError, ReasonCode::ReceiveMaximumExceeded, "receive maximum exceeded");
      co_return false;
    }
    ++unacked_qos1_;
  }
  Message m = copy_message(p.properties);
  m.topic = p.topic;
  m.payload = p.payload;
  m.qos = p.qos;
  m.retain = p.retain;
  m.dup = p.dup;
  m.packet_id = p.packet_id;
  m.packet_bytes = size;
  queued_bytes_ += m.payload.size();
  queue_.push_back(std::move(m));
  forward_signal_.cancel();
  // Backpressure: while the queue is full, read nothing more (TCP flow control does the rest).
  while (end_ == End::None && (queue_.size() >= kMaxQueued || queued_bytes_ >= kMaxQueuedBytes)) {
    co_await space_signal_.async_wait(use_nothrow);
  }
  co_return end_ == End::None;
}

asio::awaitable<void> MqttSession::forward_loop() {
  for (;;) {
    if (end_ == End::UpstreamFailed) break;  // the client resends what it has not seen acked
    if (queue_.empty()) {
      if (reader_done_) break;
      co_await forward_signal_.async_wait(use_nothrow);
      continue;
    }
    Message m = std::move(queue_.front());
    queue_.pop_front();
    queued_bytes_ -= m.payload.size();
    space_signal_.cancel();
    const bool needs_ack = m.qos == mqtt::Qos::AtLeastOnce && !m.will;
    Outcome o = co_await deliver(m);
    if (!needs_ack) continue;
    --unacked_qos1_;
    if (o.retry) {
      end(End::UpstreamFailed, ReasonCode::ServerBusy, "upstream unavailable");
      break;
    }
    mqtt::PubAck ack{.packet_id = m.packet_id};
    if (version_ == mqtt::Version::V5) ack.reason = o.puback;  // 3.1.1: a plain PUBACK
    if (auto e = mqtt::encode(ack, version_, out_); e != mqtt::EncodeError::None) {
      encode_failed(e, "PUBACK");
    }
    co_await flush();
  }
}

asio::awaitable<Outcome> MqttSession::deliver(Message& m) {
  const auto start = Clock::now();
  refresh_snapshot();                                  // a reload applies from the next message on
  const std::shared_ptr<const Snapshot> snap = snap_;  // this message's snapshot throughout
  Outcome o;
  auto finish = [&](stats::MqttResult result, ReasonCode reason) {
    o.result = result;
    o.puback = reason;
    if (metrics_) metrics_->mqtt_message(listener_index_, result);
  };
  // The size of the PUBACK this message gets (v5: one more byte for a reason other than 0x00).
  auto ack_bytes = [&]() -> uint64_t {
    if (m.qos != mqtt::Qos::AtLeastOnce || m.will || o.retry) return 0;
    return version_ == mqtt::Version::V5 && o.puback != ReasonCode::Success ? 5 : 4;
  };

  // Route: the first filter that matches the topic.
  const server::CompiledMqttRoute* route = nullptr;
  std::optional<std::vector<std::string_view>> captures;
  for (const auto& r : snap->mqtt_routes) {
    captures = r.filter.match(m.topic);
    if (captures) {
      route = &r;
      break;
    }
  }
  const std::string_view what = m.will ? "will message"sv : "message"sv;
  if (route == nullptr) {
    log::info("mqtt: client {}: {} on topic '{}' matches no route; dropped", client_id_, what,
              has_control(m.topic) ? "(unprintable)"sv : std::string_view(m.topic));
    finish(stats::MqttResult::Unrouted, ReasonCode::NoMatchingSubscribers);
    write_access_log(m, {}, {}, {}, {}, 404, nullptr, "no route", ack_bytes(), start);
    co_return o;
  }
  const config::MqttRoute& rc = *route->config;
  const std::string& upstream_name = snap->upstreams[route->upstream].config->name;
  std::string_view topic = m.topic;
  auto rejected = [&](ReasonCode reason, std::string_view why) {
    log::info("mqtt: client {}: {} on topic '{}' refused: {}", client_id_, what,
              has_control(topic) ? "(unprintable)"sv : topic, why);
    finish(stats::MqttResult::Rejected, reason);
  };
  if (has_control(m.topic)) {
    rejected(ReasonCode::TopicNameInvalid, "control character in the topic");
    write_access_log(m, rc.method, {}, rc.topic, upstream_name, 400, nullptr,
                     "control character in the topic", ack_bytes(), start);
    co_return o;
  }
  std::optional<std::string> path = route->whole_topic
                                        ? mqtt::expand(route->path_template, std::span(&topic, 1))
                                        : mqtt::expand(route->path_template, *captures);
  if (!path) {
    rejected(ReasonCode::TopicNameInvalid, "the topic makes a '.' or '..' path segment");
    write_access_log(m, rc.method, {}, rc.topic, upstream_name, 400, nullptr,
                     "topic makes a dot path segment", ack_bytes(), start);
    co_return o;
  }
  if (m.payload_format == mqtt::PayloadFormat::Utf8 && !mqtt::valid_utf8(m.payload)) {
    rejected(ReasonCode::PayloadFormatInvalid, "payload is not valid UTF-8");
    write_access_log(m, rc.method, *path, rc.topic, upstream_name, 400, nullptr,
                     "payload is not valid UTF-8", ack_bytes(), start);
    co_return o;
  }

  CallRequest req;
  req.method = rc.method;
  req.path = *path;
  req.source = addrs_;
  auto& h = req.headers;
  h.emplace_back("x-mqtt-topic", m.topic);
  h.emplace_back("x-mqtt-client-id", client_id_);
  h.emplace_back("x-mqtt-qos", m.qos == mqtt::Qos::AtLeastOnce ? "1" : "0");
  h.emplace_back("x-mqtt-retain", m.retain ? "1" : "0");
  if (m.dup) h.emplace_back("x-mqtt-dup", "1");
  if (m.qos == mqtt::Qos::AtLeastOnce && !m.will) {
    h.emplace_back("x-mqtt-packet-id", std::to_string(m.packet_id));
  }
  if (m.will) h.emplace_back("x-mqtt-will", "1");
  h.emplace_back("content-type", m.content_type && !has_control(*m.content_type)
                                     ? *m.content_type
                                     : std::string("application/octet-stream"));
  if (m.payload_format == mqtt::PayloadFormat::Utf8)
    h.emplace_back("x-mqtt-payload-format", "utf-8");
  if (m.message_expiry) h.emplace_back("x-mqtt-message-expiry", std::to_string(*m.message_expiry));
  if (m.response_topic && !has_control(*m.response_topic)) {
    h.emplace_back("x-mqtt-response-topic", *m.response_topic);
  }
  if (m.correlation_data) {
    h.emplace_back("x-mqtt-correlation-data", auth::base64url_encode(*m.correlation_data));
  }
  // v5 user properties: `x-mqtt-user-<name>`, for names that make a header name (letters,
  // digits, '-', '_'; lower-cased) and values without control characters; at most 32.
  size_t user_headers = 0;
  for (const auto& [name, value] : m.user_properties) {
    if (user_headers == 32) break;
    const bool name_ok =
        !name.empty() && name.size() <= 64 && std::all_of(name.begin(), name.end(), [](char c) {
          return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_';
        });
    if (!name_ok || has_control(value)) continue;
    std::string header = "x-mqtt-user-";
    for (char c : name) header += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    h.emplace_back(std::move(header), value);
    ++user_headers;
  }
  if (!consumer_.empty()) h.emplace_back("x-mqtt-consumer", consumer_);
  h.emplace_back("x-forwarded-for", client_ip_);
  h.emplace_back("x-forwarded-proto", tls_ ? "mqtts" : "mqtt");
  h.emplace_back("via", "mqtt sluice");
  const server::CompiledUpstream& up = snap->upstreams[route->upstream];
  const config::Upstream& uc = *up.config;
  if (up.algorithm == upstream::Algorithm::RingHash ||
      up.algorithm == upstream::Algorithm::Maglev) {
    std::string_view key;
    switch (uc.hash_on.kind) {
      case config::HashOn::Kind::Ip:
        key = client_ip_;
        break;
      case config::HashOn::Kind::Header:
        for (const auto& [name, value] : h) {
          if (name == uc.hash_on.name) key = value;
        }
        break;
      case config::HashOn::Kind::Consumer:
        key = consumer_.empty() ? std::string_view(client_ip_) : std::string_view(consumer_);
        break;
      case config::HashOn::Kind::Path:
        key = req.path;
        break;
      case config::HashOn::Kind::Cookie:
        break;  // no cookies in MQTT: spread randomly
    }
    if (!key.empty()) req.hash = upstream::hash_key(key);
  }
  req.max_response_body = 64 * 1024;  // only the status matters here
  req.body = std::move(m.payload);
  CallResult r = co_await call_upstream(worker_, *snap, route->upstream, std::move(req));

  int status = r.error ? r.error.status() : r.status;
  std::string error;
  if (r.ok()) {
    finish(stats::MqttResult::Forwarded, ReasonCode::Success);
  } else if (!r.error && r.status >= 400 && r.status < 500 && r.status != 408 && r.status != 429) {
    // The upstream refused this message for good: retrying it would not help.
    error = fmt::format("upstream refused the message ({})", r.status);
    rejected(r.status == 401 || r.status == 403 ? ReasonCode::NotAuthorized
                                                : ReasonCode::ImplementationSpecificError,
             error);
  } else {
    error = r.error ? std::string(r.error.reason()) : fmt::format("upstream answered {}", r.status);
    log::warn("mqtt: client {}: {} on topic '{}' to upstream {}: {}{}", client_id_, what, topic,
              upstream_name, error,
              m.qos == mqtt::Qos::AtLeastOnce && !m.will ? "; not acknowledged" : "; dropped");
    finish(stats::MqttResult::Failed, ReasonCode::UnspecifiedError);
    o.retry = true;
  }
  write_access_log(m, rc.method, *path, rc.topic, upstream_name, status, &r, error, ack_bytes(),
                   start);
  co_return o;
}

// One line per message, in the access log's format (SPEC.md section 6): method and path of the
// upstream request, its status (or the gateway's 404 / 400 / 502 / 503 / 504 when there was none),
// protocol "mqtt", route = the matching topic filter, consumer = the authenticated consumer, else
// the client id.
void MqttSession::write_access_log(const Message& m, std::string_view method, std::string_view path,
                                   std::string_view route, std::string_view upstream, int status,
                                   const CallResult* call, std::string_view error,
                                   uint64_t bytes_out, Clock::time_point start) {
  if (!log::access_enabled()) return;
  const std::string_view consumer = consumer_.empty() ? client_id_ : consumer_;
  const std::string request_id = call ? call->request_id : uuid(worker_.random(), worker_.random());
  AccessRecord r;
  r.request_id = request_id;
  if (call) r.trace_id = call->trace_id;
  r.client_ip = client_ip_;
  r.listener = listener_name_;
  r.method = method;
  r.path = path;
  r.protocol = "mqtt";
  r.status = status;
  r.bytes_in = m.packet_bytes;
  r.bytes_out = bytes_out;
  r.duration_us =
      std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - start).count();
  r.route = route;
  r.upstream = upstream;
  if (call) {
    r.target = call->target;
    if (call->attempts > 0) r.upstream_us = call->upstream_time.count();
    r.attempts = call->attempts;
  }
  r.consumer = consumer;
  r.remote_user = consumer;
  r.error = error;
  write_access(r, snap_->config.log.access_format == "combined");
}

}  // namespace

asio::awaitable<void> serve_mqtt(server::Worker& worker, tcp::socket socket,
                                 std::string listener_name) {
  MqttSession session(worker, std::move(socket), std::move(listener_name));
  co_await session.run();
}

}  // namespace sluice::proxy

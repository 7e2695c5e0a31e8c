// TLS contexts built from the configuration (OpenSSL 3). No Asio here: the server layer hands
// the SSL objects made here to asio::ssl::stream, which owns them from then on.
//
//   auto server = tls::ServerContext::build(listener, file, errors, warnings);  // at (re)load
//   SSL* ssl = server->new_ssl();         // per accepted connection
//   ... handshake (the SNI callback switches to the certificate the client asked for) ...
//   tls::peer_common_name(ssl);           // mutual TLS: the verified client's CN
//
//   auto client = tls::ClientContext::build(upstream, file, errors);      // upstream `tls:`
//   SSL* ssl = client->new_ssl(target_host, target_key);  // verifies name, resumes sessions
//
// Contexts are immutable after build and shared by every worker (OpenSSL makes SSL_CTX safe to
// share). Session-ticket keys belong to the listener's name, not to one build, so a reload
// keeps resumption working; they rotate every `ticket_rotation` and are accepted for two periods.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "config/config.h"

typedef struct ssl_st SSL;
typedef struct ssl_ctx_st SSL_CTX;

namespace sluice::tls {

class TicketKeys;

// The TLS side of one listener: one context per certificate, chosen by SNI.
class ServerContext {
 public:
  // Loads every certificate of `listener.tls`. Problems are appended to `errors` as
  // "FILE:LINE:COL: ..." (and nullptr returned); expired certificates are warnings.
  static std::shared_ptr<const ServerContext> build(const config::Listener& listener,
                                                    const std::string& file,
                                                    std::vector<std::string>& errors,
                                                    std::vector<std::string>& warnings);
  ~ServerContext();
  ServerContext(const ServerContext&) = delete;
  ServerContext& operator=(const ServerContext&) = delete;

  // A new server-side SSL (nullptr if OpenSSL cannot allocate one). The ServerContext must
  // outlive the handshake: its SNI and ticket callbacks run during it.
  SSL* new_ssl() const;

  // The context for a requested server name: an exact name, then a one-label wildcard
  // ("*.example.com" matches "a.example.com", not "a.b.example.com"), else the first
  // certificate.
  SSL_CTX* select(std::string_view server_name) const;

  // The names each certificate answers for, in configuration order (for tests and the admin).
  std::vector<std::vector<std::string>> names() const;

 private:
  ServerContext() = default;
  struct Cert {
    SSL_CTX* ctx = nullptr;
    std::vector<std::string> names;  // lower-case DNS names (SAN, else CN); "*.x" wildcards
  };
  std::vector<Cert> certs_;
  std::unordered_map<std::string, SSL_CTX*> exact_;
  std::unordered_map<std::string, SSL_CTX*> wildcard_;  // key: the part after "*."
  std::shared_ptr<TicketKeys> tickets_;
};

// Upstream TLS of one upstream: verification against `ca` (or the system store) and the name.
class ClientContext {
 public:
  static std::shared_ptr<const ClientContext> build(const config::Upstream& upstream,
                                                    const std::string& file,
                                                    std::vector<std::string>& errors);
  ~ClientContext();
  ClientContext(const ClientContext&) = delete;
  ClientContext& operator=(const ClientContext&) = delete;

  // A client SSL for a connection to a target whose configured host is `target_host` (an IP
  // literal or a host name). SNI and the verified name are the upstream's `sni`, else the host
  // name; an IP target without `sni` is verified against its IP address. A session remembered
  // for `session_key` is offered for resumption.
  SSL* new_ssl(const std::string& target_host, const std::string& session_key) const;

 private:
  ClientContext() = default;
  SSL_CTX* ctx_ = nullptr;
  std::string sni_;
  bool verify_ = true;
  std::string cache_prefix_;  // sessions are remembered per upstream name + CA + target
};

// After a successful handshake with a verified client certificate: its subject CN ("" when the
// client sent none or it did not verify).
std::string peer_common_name(SSL* ssl);
// The negotiated ALPN protocol ("" when none).
std::string_view alpn_protocol(SSL* ssl);
// "TLSv1.3" / "TLSv1.2".
std::string_view protocol_version(SSL* ssl);
// After a failed handshake: why the peer's certificate did not verify ("" when it did, or when
// verification was not the cause).
std::string verify_error(SSL* ssl);
// Drops every OpenSSL error queued on this thread.
void clear_errors();

}  // namespace sluice::tls

#include "tls/tls.h"

#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <map>
#include <mutex>

#include <fmt/format.h>

namespace sluice::tls {
namespace {

// Mozilla "intermediate": forward-secret AEAD suites only. TLS 1.3 suites are OpenSSL's
// defaults (all AEAD).
constexpr const char* kTls12Ciphers =
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305";
constexpr const char* kTls13Ciphers =
    "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256";
constexpr const char* kGroups = "X25519:P-256:P-384";
// ALPN wire format: length-prefixed protocol names, in our order of preference.
constexpr unsigned char kAlpnHttp11[] = {8, 'h', 't', 't', 'p', '/', '1', '.', '1'};
constexpr unsigned char kAlpnH2Http11[] = {2, 'h', '2', 8, 'h', 't', 't', 'p', '/', '1', '.', '1'};
constexpr unsigned char kAlpnH2[] = {2, 'h', '2'};

std::string error_queue_text() {
  std::string out;
  while (unsigned long e = ERR_get_error()) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof buf);
    // "error:0A00018F:SSL routines::ee key too small" -> the reason after the last ':'
    std::string_view text(buf);
    size_t colon = text.rfind(':');
    std::string_view reason = colon == std::string_view::npos ? text : text.substr(colon + 1);
    if (!out.empty()) out += "; ";
    out += reason;
  }
  return out.empty() ? std::string("unknown OpenSSL error") : out;
}

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return out;
}

int64_t now_seconds() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

int ex_index_ctx_tickets() {  // SSL_CTX ex_data: the listener's TicketKeys
  static int idx = SSL_CTX_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
  return idx;
}

void free_session_key(void*, void* ptr, CRYPTO_EX_DATA*, int, long, void*) {
  delete static_cast<std::string*>(ptr);
}
int ex_index_ssl_session_key() {  // SSL ex_data: the client-session cache key (std::string*)
  static int idx = SSL_get_ex_new_index(0, nullptr, nullptr, nullptr, free_session_key);
  return idx;
}

}  // namespace

// ---- session tickets ----

// The keys that encrypt session tickets for one listener. A ticket made with the current or the
// previous key resumes (and is replaced by a fresh one under the current key); older ones fall
// back to a full handshake. Rotation happens lazily, when a ticket is issued after the period
// ends.
class TicketKeys {
 public:
  void set_rotation(Duration rotation) {
    std::lock_guard lock(mu_);
    rotation_s_ =
        std::max<int64_t>(1, std::chrono::duration_cast<std::chrono::seconds>(rotation).count());
  }
  int64_t rotation_seconds() {
    std::lock_guard lock(mu_);
    return rotation_s_;
  }

  // SSL_CTX_set_tlsext_ticket_key_evp_cb.
  static int callback(SSL* ssl, unsigned char key_name[16], unsigned char iv[EVP_MAX_IV_LENGTH],
                      EVP_CIPHER_CTX* cipher, EVP_MAC_CTX* mac, int encrypt) {
    auto* self =
        static_cast<TicketKeys*>(SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), ex_index_ctx_tickets()));
    if (self == nullptr) return -1;
    return encrypt ? self->encrypt(key_name, iv, cipher, mac)
                   : self->decrypt(key_name, iv, cipher, mac);
  }

 private:
  struct Key {
    unsigned char name[16];
    unsigned char aes[32];
    unsigned char hmac[32];
    int64_t created_s = 0;
    bool valid = false;
  };

  static bool fresh_key(Key& k) {
    k.valid = RAND_bytes(k.name, sizeof k.name) == 1 && RAND_bytes(k.aes, sizeof k.aes) == 1 &&
              RAND_bytes(k.hmac, sizeof k.hmac) == 1;
    k.created_s = now_seconds();
    return k.valid;
  }

  static bool set_mac(EVP_MAC_CTX* mac, const Key& k) {
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY, const_cast<unsigned char*>(k.hmac),
                                          sizeof k.hmac),
        OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, const_cast<char*>("SHA256"), 0),
        OSSL_PARAM_construct_end()};
    return EVP_MAC_CTX_set_params(mac, params) == 1;
  }

  int encrypt(unsigned char key_name[16], unsigned char* iv, EVP_CIPHER_CTX* cipher,
              EVP_MAC_CTX* mac) {
    Key k;
    {
      std::lock_guard lock(mu_);
      int64_t now = now_seconds();
      if (!current_.valid || now - current_.created_s >= rotation_s_) {
        Key next;
        if (!fresh_key(next)) return -1;
        previous_ = current_;
        previous_retired_s_ = now;
        current_ = next;
      }
      k = current_;
    }
    if (RAND_bytes(iv, 16) != 1) return -1;
    std::memcpy(key_name, k.name, sizeof k.name);
    if (EVP_EncryptInit_ex(cipher, EVP_aes_256_cbc(), nullptr, k.aes, iv) != 1) return -1;
    return set_mac(mac, k) ? 1 : -1;
  }

  int decrypt(const unsigned char key_name[16], const unsigned char* iv, EVP_CIPHER_CTX* cipher,
              EVP_MAC_CTX* mac) {
    Key k;
    int result = 0;
    {
      std::lock_guard lock(mu_);
      int64_t now = now_seconds();
      if (current_.valid && std::memcmp(key_name, current_.name, 16) == 0 &&
          now - current_.created_s < 2 * rotation_s_) {
        k = current_;
        result = 2;
      } else if (previous_.valid && std::memcmp(key_name, previous_.name, 16) == 0 &&
                 now - previous_retired_s_ < rotation_s_) {
        k = previous_;
        result = 2;
      }
    }
    // 2 = valid, and send a fresh ticket (under the current key) on every resumption: TLS 1.3
    // clients use a ticket once (RFC 8446 C.4), so without a new one their next connection
    // would be a full handshake.
    if (result == 0) return 0;  // unknown or expired key: full handshake
    // (the IV travels in the ticket; OpenSSL hands it over in `iv`)
    if (EVP_DecryptInit_ex(cipher, EVP_aes_256_cbc(), nullptr, k.aes, iv) != 1) return -1;
    return set_mac(mac, k) ? result : -1;
  }

  std::mutex mu_;
  int64_t rotation_s_ = 12 * 3600;
  Key current_;
  Key previous_;
  int64_t previous_retired_s_ = 0;
};

namespace {

// Ticket keys by listener name, for the life of the process (a reload keeps them).
std::shared_ptr<TicketKeys> ticket_keys_for(const std::string& listener) {
  static std::mutex mu;
  static auto* registry = new std::map<std::string, std::shared_ptr<TicketKeys>>();
  std::lock_guard lock(mu);
  auto& slot = (*registry)[listener];
  if (!slot) slot = std::make_shared<TicketKeys>();
  return slot;
}

// ---- server callbacks ----

int on_servername(SSL* ssl, int* /*alert*/, void* arg) {
  const auto* server = static_cast<const ServerContext*>(arg);
  const char* name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
  if (name == nullptr) return SSL_TLSEXT_ERR_OK;  // no SNI: the default certificate
  SSL_CTX* chosen = server->select(name);
  if (chosen != SSL_get_SSL_CTX(ssl)) SSL_set_SSL_CTX(ssl, chosen);
  return SSL_TLSEXT_ERR_OK;
}

// `arg` non-null: the listener has `http2: true` and prefers h2.
int on_alpn(SSL*, const unsigned char** out, unsigned char* outlen, const unsigned char* in,
            unsigned int inlen, void* arg) {
  unsigned char* selected = nullptr;
  const bool h2 = arg != nullptr;
  if (SSL_select_next_proto(&selected, outlen, h2 ? kAlpnH2Http11 : kAlpnHttp11,
                            h2 ? sizeof kAlpnH2Http11 : sizeof kAlpnHttp11, in,
                            inlen) == OPENSSL_NPN_NEGOTIATED) {
    *out = selected;
    return SSL_TLSEXT_ERR_OK;
  }
  return SSL_TLSEXT_ERR_NOACK;  // no common protocol: carry on without ALPN (HTTP/1.1)
}

// Lower-case DNS names of a certificate: its subjectAltName DNS entries, else its CN.
std::vector<std::string> certificate_names(X509* x) {
  std::vector<std::string> names;
  auto* sans =
      static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(x, NID_subject_alt_name, nullptr, nullptr));
  if (sans != nullptr) {
    for (int i = 0; i < sk_GENERAL_NAME_num(sans); ++i) {
      const GENERAL_NAME* gn = sk_GENERAL_NAME_value(sans, i);
      if (gn->type != GEN_DNS) continue;
      const ASN1_STRING* s = gn->d.dNSName;
      names.push_back(
          lower(std::string_view(reinterpret_cast<const char*>(ASN1_STRING_get0_data(s)),
                                 static_cast<size_t>(ASN1_STRING_length(s)))));
    }
    GENERAL_NAMES_free(sans);
  }
  if (names.empty()) {
    char cn[256];
    int n = X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_commonName, cn, sizeof cn);
    if (n > 0) names.push_back(lower(std::string_view(cn, static_cast<size_t>(n))));
  }
  return names;
}

}  // namespace

// ---- ServerContext ----

std::shared_ptr<const ServerContext> ServerContext::build(const config::Listener& listener,
                                                          const std::string& file,
                                                          std::vector<std::string>& errors,
                                                          std::vector<std::string>& warnings) {
  std::shared_ptr<ServerContext> server(new ServerContext());
  const config::ListenerTls& tls = *listener.tls;
  server->tickets_ = ticket_keys_for(listener.name);
  server->tickets_->set_rotation(tls.ticket_rotation);
  const size_t errors_before = errors.size();
  auto fail = [&](const config::Mark& m, std::string_view what) {
    errors.push_back(
        fmt::format("{}:{}:{}: listener '{}': {}", file, m.line, m.col, listener.name, what));
  };
  // Every certificate's session id context is the same, so a session resumes whichever
  // certificate SNI picks.
  const std::string sid_ctx = fmt::format("sluice/{}", listener.name).substr(0, 32);

  for (const config::TlsCertificate& c : tls.certificates) {
    ERR_clear_error();
    SSL_CTX* ctx = SSL_CTX_new(TLS_server_method());
    if (ctx == nullptr) {
      fail(c.mark, "cannot create a TLS context: " + error_queue_text());
      continue;
    }
    server->certs_.push_back({ctx, {}});
    SSL_CTX_set_min_proto_version(
        ctx, tls.min_version == config::TlsVersion::Tls1_3 ? TLS1_3_VERSION : TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION |
                                 SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_PRIORITIZE_CHACHA);
    SSL_CTX_set_cipher_list(ctx, kTls12Ciphers);
    SSL_CTX_set_ciphersuites(ctx, kTls13Ciphers);
    SSL_CTX_set1_groups_list(ctx, kGroups);
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    // Resumption by stateless tickets only: no server-side session cache to lock and bound.
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_num_tickets(ctx, 1);
    SSL_CTX_set_timeout(ctx, static_cast<long>(2 * server->tickets_->rotation_seconds()));
    SSL_CTX_set_session_id_context(ctx, reinterpret_cast<const unsigned char*>(sid_ctx.data()),
                                   static_cast<unsigned>(sid_ctx.size()));
    SSL_CTX_set_ex_data(ctx, ex_index_ctx_tickets(), server->tickets_.get());
    SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, &TicketKeys::callback);
    SSL_CTX_set_tlsext_servername_callback(ctx, on_servername);
    SSL_CTX_set_tlsext_servername_arg(ctx, server.get());
    static int h2_marker = 1;
    SSL_CTX_set_alpn_select_cb(ctx, on_alpn, listener.http2 ? &h2_marker : nullptr);

    if (SSL_CTX_use_certificate_chain_file(ctx, c.cert.c_str()) != 1) {
      fail(c.mark, fmt::format("certificate '{}': {}", c.cert, error_queue_text()));
      continue;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, c.key.c_str(), SSL_FILETYPE_PEM) != 1) {
      std::string why = error_queue_text();
      if (why.find("mismatch") != std::string::npos) {
        fail(c.mark, fmt::format("key '{}' does not match certificate '{}'", c.key, c.cert));
      } else {
        fail(c.mark, fmt::format("key '{}': {}", c.key, why));
      }
      continue;
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
      fail(c.mark, fmt::format("key '{}' does not match certificate '{}'", c.key, c.cert));
      ERR_clear_error();
      continue;
    }
    X509* leaf = SSL_CTX_get0_certificate(ctx);
    server->certs_.back().names = certificate_names(leaf);
    if (X509_cmp_current_time(X509_get0_notAfter(leaf)) < 0) {
      warnings.push_back(fmt::format("{}:{}:{}: listener '{}': certificate '{}' has expired", file,
                                     c.mark.line, c.mark.col, listener.name, c.cert));
    } else if (X509_cmp_current_time(X509_get0_notBefore(leaf)) > 0) {
      warnings.push_back(fmt::format("{}:{}:{}: listener '{}': certificate '{}' is not valid yet",
                                     file, c.mark.line, c.mark.col, listener.name, c.cert));
    }
    if (!tls.client_ca.empty()) {
      if (SSL_CTX_load_verify_locations(ctx, tls.client_ca.c_str(), nullptr) != 1) {
        fail(c.mark, fmt::format("client_ca '{}': {}", tls.client_ca, error_queue_text()));
        continue;
      }
      if (STACK_OF(X509_NAME)* cas = SSL_load_client_CA_file(tls.client_ca.c_str())) {
        SSL_CTX_set_client_CA_list(ctx, cas);  // names sent in the CertificateRequest
      }
      int mode = SSL_VERIFY_PEER;
      if (tls.client_cert == config::ListenerTls::ClientCert::Required) {
        mode |= SSL_VERIFY_FAIL_IF_NO_PEER_CERT;
      }
      SSL_CTX_set_verify(ctx, mode, nullptr);
      SSL_CTX_set_verify_depth(ctx, 5);
    }
    ERR_clear_error();
  }
  if (errors.size() != errors_before) return nullptr;

  // Name table: the first certificate listing a name wins.
  for (const Cert& cert : server->certs_) {
    for (const std::string& name : cert.names) {
      if (name.starts_with("*.")) {
        server->wildcard_.emplace(name.substr(2), cert.ctx);
      } else {
        server->exact_.emplace(name, cert.ctx);
      }
    }
  }
  return server;
}

ServerContext::~ServerContext() {
  for (Cert& c : certs_) SSL_CTX_free(c.ctx);
}

SSL* ServerContext::new_ssl() const {
  if (certs_.empty()) return nullptr;
  SSL* ssl = SSL_new(certs_.front().ctx);
  if (ssl != nullptr) SSL_set_accept_state(ssl);
  return ssl;
}

SSL_CTX* ServerContext::select(std::string_view server_name) const {
  std::string name = lower(server_name);
  if (!name.empty() && name.back() == '.') name.pop_back();
  if (auto it = exact_.find(name); it != exact_.end()) return it->second;
  if (size_t dot = name.find('.'); dot != std::string::npos) {
    if (auto it = wildcard_.find(name.substr(dot + 1)); it != wildcard_.end()) return it->second;
  }
  return certs_.front().ctx;
}

std::vector<std::vector<std::string>> ServerContext::names() const {
  std::vector<std::vector<std::string>> out;
  for (const Cert& c : certs_) out.push_back(c.names);
  return out;
}

// ---- ClientContext ----

namespace {

// Client sessions by upstream + target, for resumption when a pooled connection is replaced.
// Process-wide and bounded; entries are SSL_SESSION references.
class ClientSessionCache {
 public:
  static constexpr size_t kMaxEntries = 4096;
  static ClientSessionCache& instance() {
    static auto* cache = new ClientSessionCache();  // process lifetime
    return *cache;
  }
  void put(const std::string& key, SSL_SESSION* s) {  // takes the reference
    std::lock_guard lock(mu_);
    auto it = map_.find(key);
    if (it != map_.end()) {
      SSL_SESSION_free(it->second);
      it->second = s;
      return;
    }
    if (map_.size() >= kMaxEntries) {  // rare: evict an arbitrary entry
      SSL_SESSION_free(map_.begin()->second);
      map_.erase(map_.begin());
    }
    map_.emplace(key, s);
  }
  SSL_SESSION* get(const std::string& key) {  // a new reference, or nullptr
    std::lock_guard lock(mu_);
    auto it = map_.find(key);
    if (it == map_.end()) return nullptr;
    if (SSL_SESSION_is_resumable(it->second) != 1) {
      SSL_SESSION_free(it->second);
      map_.erase(it);
      return nullptr;
    }
    SSL_SESSION_up_ref(it->second);
    return it->second;
  }

 private:
  std::mutex mu_;
  std::unordered_map<std::string, SSL_SESSION*> map_;
};

int on_new_client_session(SSL* ssl, SSL_SESSION* session) {
  auto* key = static_cast<std::string*>(SSL_get_ex_data(ssl, ex_index_ssl_session_key()));
  if (key == nullptr) return 0;
  ClientSessionCache::instance().put(*key, session);
  return 1;  // we keep the reference
}

bool is_ip(const std::string& host) {
  return !host.empty() && (host.find(':') != std::string::npos ||
                           std::all_of(host.begin(), host.end(),
                                       [](char c) { return (c >= '0' && c <= '9') || c == '.'; }));
}

}  // namespace

std::shared_ptr<const ClientContext> ClientContext::build(const config::Upstream& upstream,
                                                          const std::string& file,
                                                          std::vector<std::string>& errors) {
  std::shared_ptr<ClientContext> client(new ClientContext());
  const config::UpstreamTls& tls = *upstream.tls;
  client->sni_ = tls.sni;
  client->verify_ = tls.verify;
  client->cache_prefix_ = fmt::format("{}|{}|{}|{}|{}|", upstream.name, upstream.protocol,
                                      tls.verify ? 1 : 0, tls.ca, tls.sni);
  auto fail = [&](std::string_view what) {
    errors.push_back(fmt::format("{}:{}:{}: upstream '{}': {}", file, upstream.mark.line,
                                 upstream.mark.col, upstream.name, what));
  };
  ERR_clear_error();
  SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
  if (ctx == nullptr) {
    fail("cannot create a TLS context: " + error_queue_text());
    return nullptr;
  }
  client->ctx_ = ctx;
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
  SSL_CTX_set_cipher_list(ctx, kTls12Ciphers);
  SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
  if (upstream.protocol == "http2") {
    SSL_CTX_set_alpn_protos(ctx, kAlpnH2, sizeof kAlpnH2);
  } else {
    SSL_CTX_set_alpn_protos(ctx, kAlpnHttp11, sizeof kAlpnHttp11);
  }
  SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
  SSL_CTX_sess_set_new_cb(ctx, on_new_client_session);
  if (tls.verify) {
    if (!tls.ca.empty()) {
      if (SSL_CTX_load_verify_locations(ctx, tls.ca.c_str(), nullptr) != 1) {
        fail(fmt::format("ca '{}': {}", tls.ca, error_queue_text()));
        return nullptr;
      }
    } else if (SSL_CTX_set_default_verify_paths(ctx) != 1) {
      fail("cannot load the system CA store: " + error_queue_text());
      return nullptr;
    }
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nullptr);
  } else {
    SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, nullptr);
  }
  ERR_clear_error();
  return client;
}

ClientContext::~ClientContext() { SSL_CTX_free(ctx_); }

SSL* ClientContext::new_ssl(const std::string& target_host, const std::string& session_key) const {
  SSL* ssl = SSL_new(ctx_);
  if (ssl == nullptr) return nullptr;
  SSL_set_connect_state(ssl);
  const std::string& name = !sni_.empty() ? sni_ : target_host;
  const bool by_ip = sni_.empty() && is_ip(target_host);
  if (!by_ip) SSL_set_tlsext_host_name(ssl, name.c_str());
  if (verify_) {
    if (by_ip) {
      X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), target_host.c_str());
    } else {
      SSL_set1_host(ssl, name.c_str());
    }
  }
  auto* key = new std::string(cache_prefix_ + session_key);
  SSL_set_ex_data(ssl, ex_index_ssl_session_key(), key);  // freed with the SSL
  if (SSL_SESSION* s = ClientSessionCache::instance().get(*key)) {
    SSL_set_session(ssl, s);
    SSL_SESSION_free(s);
  }
  return ssl;
}

// ---- helpers ----

std::string peer_common_name(SSL* ssl) {
  X509* peer = SSL_get0_peer_certificate(ssl);
  if (peer == nullptr || SSL_get_verify_result(ssl) != X509_V_OK) return {};
  char cn[256];
  int n = X509_NAME_get_text_by_NID(X509_get_subject_name(peer), NID_commonName, cn, sizeof cn);
  return n > 0 ? std::string(cn, static_cast<size_t>(n)) : std::string();
}

std::string_view alpn_protocol(SSL* ssl) {
  const unsigned char* data = nullptr;
  unsigned int len = 0;
  SSL_get0_alpn_selected(ssl, &data, &len);
  return data == nullptr ? std::string_view()
                         : std::string_view(reinterpret_cast<const char*>(data), len);
}

std::string_view protocol_version(SSL* ssl) { return SSL_get_version(ssl); }

std::string verify_error(SSL* ssl) {
  long verify = SSL_get_verify_result(ssl);
  if (verify == X509_V_OK) return {};
  return fmt::format("certificate verify failed: {}", X509_verify_cert_error_string(verify));
}

void clear_errors() { ERR_clear_error(); }

}  // namespace sluice::tls

// JwtKeySet: loading keys (secret, PEM, JWKS) and checking JWS signatures with OpenSSL 3 EVP.
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include <algorithm>
#include <climits>

#include "auth/base64url.h"
#include "auth/jwt.h"

namespace sluice::auth {
namespace {

constexpr size_t k_min_secret_bytes = 32;  // RFC 7518 3.2: at least the HS256 digest size
constexpr int k_min_rsa_bits = 2048;       // RFC 7518 3.3 / 3.5
constexpr size_t k_max_jwks_keys = 100;    // a token without kid may try each: keep it bounded

struct PkeyFree {
  void operator()(EVP_PKEY* p) const { EVP_PKEY_free(p); }
};
using PkeyPtr = std::unique_ptr<EVP_PKEY, PkeyFree>;

enum class KeyKind { Secret, Rsa, EcP256, EcP384, Ed25519 };

struct JwtKey {
  KeyKind kind = KeyKind::Secret;
  std::optional<std::string> kid;
  std::optional<JwtAlg> alg;  // JWKS "alg": the only algorithm this key verifies
  std::string secret;         // KeyKind::Secret only
  PkeyPtr pkey;               // every other kind

  JwtKey() = default;
  JwtKey(JwtKey&&) = default;
  JwtKey& operator=(JwtKey&&) = default;
  ~JwtKey() {
    if (!secret.empty()) OPENSSL_cleanse(secret.data(), secret.size());
  }
};

KeyKind kind_for(JwtAlg alg) {
  switch (alg) {
    case JwtAlg::HS256:
    case JwtAlg::HS384:
    case JwtAlg::HS512:
      return KeyKind::Secret;
    case JwtAlg::RS256:
    case JwtAlg::RS384:
    case JwtAlg::RS512:
    case JwtAlg::PS256:
      return KeyKind::Rsa;
    case JwtAlg::ES256:
      return KeyKind::EcP256;
    case JwtAlg::ES384:
      return KeyKind::EcP384;
    case JwtAlg::EdDSA:
      return KeyKind::Ed25519;
  }
  return KeyKind::Secret;
}

const EVP_MD* digest_for(JwtAlg alg) {
  switch (alg) {
    case JwtAlg::HS256:
    case JwtAlg::RS256:
    case JwtAlg::PS256:
    case JwtAlg::ES256:
      return EVP_sha256();
    case JwtAlg::HS384:
    case JwtAlg::RS384:
    case JwtAlg::ES384:
      return EVP_sha384();
    case JwtAlg::HS512:
    case JwtAlg::RS512:
      return EVP_sha512();
    case JwtAlg::EdDSA:
      return nullptr;  // Ed25519 hashes internally
  }
  return nullptr;
}

bool key_fits(const JwtKey& key, JwtAlg alg) {
  if (key.kind != kind_for(alg)) return false;
  if (key.alg && *key.alg != alg) return false;
  if (key.kind == KeyKind::Secret) {
    return key.secret.size() >= static_cast<size_t>(EVP_MD_get_size(digest_for(alg)));
  }
  return true;
}

// --- signature checks ------------------------------------------------------------------------

struct MdCtxFree {
  void operator()(EVP_MD_CTX* c) const { EVP_MD_CTX_free(c); }
};

bool verify_hmac(const JwtKey& key, JwtAlg alg, std::string_view input, std::string_view sig) {
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int mac_len = 0;
  if (HMAC(digest_for(alg), key.secret.data(), static_cast<int>(key.secret.size()),
           reinterpret_cast<const unsigned char*>(input.data()), input.size(), mac,
           &mac_len) == nullptr) {
    return false;
  }
  return sig.size() == mac_len && CRYPTO_memcmp(mac, sig.data(), mac_len) == 0;
}

// JWS carries ECDSA signatures as fixed-width R || S (RFC 7518 3.4); OpenSSL verifies DER.
std::optional<std::string> ecdsa_raw_to_der(std::string_view sig, size_t half) {
  if (sig.size() != 2 * half) return std::nullopt;
  const auto* bytes = reinterpret_cast<const unsigned char*>(sig.data());
  BIGNUM* r = BN_bin2bn(bytes, static_cast<int>(half), nullptr);
  BIGNUM* s = BN_bin2bn(bytes + half, static_cast<int>(half), nullptr);
  ECDSA_SIG* ecdsa = ECDSA_SIG_new();
  if (r == nullptr || s == nullptr || ecdsa == nullptr || ECDSA_SIG_set0(ecdsa, r, s) != 1) {
    BN_free(r);
    BN_free(s);
    ECDSA_SIG_free(ecdsa);
    return std::nullopt;
  }
  std::optional<std::string> der;
  const int len = i2d_ECDSA_SIG(ecdsa, nullptr);
  if (len > 0) {
    der.emplace(static_cast<size_t>(len), '\0');
    auto* out = reinterpret_cast<unsigned char*>(der->data());
    if (i2d_ECDSA_SIG(ecdsa, &out) != len) der.reset();
  }
  ECDSA_SIG_free(ecdsa);  // owns r and s
  return der;
}

bool verify_pkey(const JwtKey& key, JwtAlg alg, std::string_view input, std::string_view sig) {
  std::optional<std::string> der;
  if (alg == JwtAlg::ES256 || alg == JwtAlg::ES384) {
    der = ecdsa_raw_to_der(sig, alg == JwtAlg::ES256 ? 32 : 48);
    if (!der) return false;
    sig = *der;
  }
  std::unique_ptr<EVP_MD_CTX, MdCtxFree> ctx(EVP_MD_CTX_new());
  if (!ctx) return false;
  EVP_PKEY_CTX* pctx = nullptr;  // owned by ctx
  if (EVP_DigestVerifyInit(ctx.get(), &pctx, digest_for(alg), nullptr, key.pkey.get()) != 1) {
    return false;
  }
  if (key.kind == KeyKind::Rsa) {
    if (alg == JwtAlg::PS256) {
      // RFC 7518 3.5: MGF1 with the same hash, salt as long as the digest (enforced on verify).
      if (EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) != 1 ||
          EVP_PKEY_CTX_set_rsa_mgf1_md(pctx, digest_for(alg)) != 1 ||
          EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_DIGEST) != 1) {
        return false;
      }
    } else if (EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PADDING) != 1) {
      return false;
    }
  }
  return EVP_DigestVerify(ctx.get(), reinterpret_cast<const unsigned char*>(sig.data()), sig.size(),
                          reinterpret_cast<const unsigned char*>(input.data()), input.size()) == 1;
}

bool verify_with(const JwtKey& key, JwtAlg alg, std::string_view input, std::string_view sig) {
  return key.kind == KeyKind::Secret ? verify_hmac(key, alg, input, sig)
                                     : verify_pkey(key, alg, input, sig);
}

// --- loading ---------------------------------------------------------------------------------

// Classifies an OpenSSL public key; the error names what is wrong without quoting the key.
std::variant<KeyKind, std::string> classify(EVP_PKEY* pkey) {
  if (EVP_PKEY_is_a(pkey, "RSA")) {
    if (EVP_PKEY_get_bits(pkey) < k_min_rsa_bits) {
      return "RSA key of " + std::to_string(EVP_PKEY_get_bits(pkey)) + " bits: at least " +
             std::to_string(k_min_rsa_bits) + " required";
    }
    return KeyKind::Rsa;
  }
  if (EVP_PKEY_is_a(pkey, "EC")) {
    char group[64] = {};
    size_t len = 0;
    if (EVP_PKEY_get_group_name(pkey, group, sizeof group, &len) != 1) {
      return std::string("EC key without a named curve");
    }
    const std::string_view name(group, len);
    if (name == "prime256v1" || name == "P-256") return KeyKind::EcP256;
    if (name == "secp384r1" || name == "P-384") return KeyKind::EcP384;
    return "EC curve " + std::string(name) + " is not supported (P-256, P-384)";
  }
  if (EVP_PKEY_is_a(pkey, "ED25519")) return KeyKind::Ed25519;
  return std::string("unsupported key type (RSA, EC P-256/P-384, Ed25519)");
}

// Runs OpenSSL's public-key sanity checks (EC point on the curve, RSA modulus and exponent).
bool public_check(EVP_PKEY* pkey) {
  EVP_PKEY_CTX* ctx = EVP_PKEY_CTX_new_from_pkey(nullptr, pkey, nullptr);
  if (ctx == nullptr) return false;
  const bool ok = EVP_PKEY_public_check(ctx) == 1;
  EVP_PKEY_CTX_free(ctx);
  return ok;
}

struct ParamBldFree {
  void operator()(OSSL_PARAM_BLD* b) const { OSSL_PARAM_BLD_free(b); }
};
struct ParamFree {
  void operator()(OSSL_PARAM* p) const { OSSL_PARAM_free(p); }
};
struct BnFree {
  void operator()(BIGNUM* b) const { BN_free(b); }
};
using BnPtr = std::unique_ptr<BIGNUM, BnFree>;

PkeyPtr pkey_from_params(const char* type, OSSL_PARAM_BLD* bld) {
  std::unique_ptr<OSSL_PARAM, ParamFree> params(OSSL_PARAM_BLD_to_param(bld));
  if (!params) return nullptr;
  EVP_PKEY_CTX* ctx = EVP_PKEY_CTX_new_from_name(nullptr, type, nullptr);
  if (ctx == nullptr) return nullptr;
  EVP_PKEY* pkey = nullptr;
  if (EVP_PKEY_fromdata_init(ctx) != 1 ||
      EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_PUBLIC_KEY, params.get()) != 1) {
    pkey = nullptr;
  }
  EVP_PKEY_CTX_free(ctx);
  return PkeyPtr(pkey);
}

BnPtr bn_from(const std::string& bytes) {
  return BnPtr(BN_bin2bn(reinterpret_cast<const unsigned char*>(bytes.data()),
                         static_cast<int>(bytes.size()), nullptr));
}

PkeyPtr rsa_from_jwk(const std::string& n, const std::string& e) {
  BnPtr bn_n = bn_from(n), bn_e = bn_from(e);
  std::unique_ptr<OSSL_PARAM_BLD, ParamBldFree> bld(OSSL_PARAM_BLD_new());
  if (!bn_n || !bn_e || !bld ||
      OSSL_PARAM_BLD_push_BN(bld.get(), OSSL_PKEY_PARAM_RSA_N, bn_n.get()) != 1 ||
      OSSL_PARAM_BLD_push_BN(bld.get(), OSSL_PKEY_PARAM_RSA_E, bn_e.get()) != 1) {
    return nullptr;
  }
  return pkey_from_params("RSA", bld.get());
}

PkeyPtr ec_from_jwk(const char* group, const std::string& x, const std::string& y) {
  std::string point = "\x04" + x + y;  // uncompressed SEC1 point
  std::unique_ptr<OSSL_PARAM_BLD, ParamBldFree> bld(OSSL_PARAM_BLD_new());
  if (!bld ||
      OSSL_PARAM_BLD_push_utf8_string(bld.get(), OSSL_PKEY_PARAM_GROUP_NAME, group, 0) != 1 ||
      OSSL_PARAM_BLD_push_octet_string(bld.get(), OSSL_PKEY_PARAM_PUB_KEY, point.data(),
                                       point.size()) != 1) {
    return nullptr;
  }
  return pkey_from_params("EC", bld.get());
}

// Field of a JWK as a base64url-decoded byte string. Error text names the field only.
std::variant<std::string, std::string> jwk_bytes(const boost::json::object& jwk,
                                                 std::string_view field) {
  const boost::json::value* v = jwk.if_contains(field);
  if (v == nullptr || !v->is_string()) {
    return std::variant<std::string, std::string>(std::in_place_index<1>,
                                                  "missing \"" + std::string(field) + "\"");
  }
  std::optional<std::string> bytes = base64url_decode(v->get_string());
  if (!bytes || bytes->empty()) {
    return std::variant<std::string, std::string>(
        std::in_place_index<1>, "\"" + std::string(field) + "\" is not base64url");
  }
  return std::variant<std::string, std::string>(std::in_place_index<0>, std::move(*bytes));
}

// A loaded key, nothing (skipped: not for JWS verification by sluice), or an error.
using JwkOutcome = std::variant<JwtKey, std::monostate, std::string>;

JwkOutcome key_from_jwk(const boost::json::object& jwk) {
  const auto string_member = [&](std::string_view name) -> std::optional<std::string_view> {
    const boost::json::value* v = jwk.if_contains(name);
    if (v != nullptr && v->is_string()) return std::string_view(v->get_string());
    return std::nullopt;
  };
  const boost::json::value* kty_value = jwk.if_contains("kty");
  if (kty_value == nullptr || !kty_value->is_string()) return std::string("missing \"kty\"");
  const std::string_view kty = kty_value->get_string();

  if (const auto* use = jwk.if_contains("use"); use != nullptr && *use != "sig") {
    return std::monostate{};
  }
  if (const auto* ops = jwk.if_contains("key_ops"); ops != nullptr) {
    if (!ops->is_array()) return std::string("\"key_ops\" is not an array");
    const auto& arr = ops->get_array();
    if (std::find(arr.begin(), arr.end(), boost::json::value("verify")) == arr.end()) {
      return std::monostate{};
    }
  }
  JwtKey key;
  if (const auto* kid = jwk.if_contains("kid"); kid != nullptr) {
    if (!kid->is_string()) return std::string("\"kid\" is not a string");
    key.kid = std::string(kid->get_string());
  }
  if (const auto* alg = jwk.if_contains("alg"); alg != nullptr) {
    if (!alg->is_string()) return std::string("\"alg\" is not a string");
    key.alg = parse_jwt_alg(alg->get_string());
    if (!key.alg) return std::monostate{};  // e.g. RSA-OAEP, ES512: nothing sluice verifies
  }
  // A verifier needs only public keys; private material here means the file was mixed up.
  for (const char* secret_member : {"d", "p", "q", "dp", "dq", "qi", "oth"}) {
    if (kty != "oct" && jwk.contains(secret_member)) {
      return std::string("holds private key material (\"") + secret_member +
             "\"): give only the public keys";
    }
  }

  if (kty == "oct") {
    auto k = jwk_bytes(jwk, "k");
    if (k.index() == 1) return std::get<1>(std::move(k));
    key.kind = KeyKind::Secret;
    key.secret = std::get<0>(std::move(k));
    if (key.secret.size() < k_min_secret_bytes) {
      return "HMAC key shorter than " + std::to_string(k_min_secret_bytes) + " bytes";
    }
    if (key.alg && kind_for(*key.alg) != KeyKind::Secret) {
      return "\"alg\" " + std::string(jwt_alg_name(*key.alg)) + " does not fit kty oct";
    }
    return key;
  }
  if (kty == "RSA") {
    auto n = jwk_bytes(jwk, "n");
    if (n.index() == 1) return std::get<1>(std::move(n));
    auto e = jwk_bytes(jwk, "e");
    if (e.index() == 1) return std::get<1>(std::move(e));
    key.pkey = rsa_from_jwk(std::get<0>(n), std::get<0>(e));
  } else if (kty == "EC") {
    const std::optional<std::string_view> crv = string_member("crv");
    size_t size = 0;
    const char* group = nullptr;
    if (crv == "P-256") {
      size = 32;
      group = "P-256";
    } else if (crv == "P-384") {
      size = 48;
      group = "P-384";
    } else {
      return std::monostate{};  // P-521, secp256k1...: not verified by sluice
    }
    auto x = jwk_bytes(jwk, "x");
    if (x.index() == 1) return std::get<1>(std::move(x));
    auto y = jwk_bytes(jwk, "y");
    if (y.index() == 1) return std::get<1>(std::move(y));
    // RFC 7518 6.2.1.2: coordinates are full-length, leading zeros kept.
    if (std::get<0>(x).size() != size || std::get<0>(y).size() != size) {
      return std::string("\"x\"/\"y\" have the wrong length for ") + group;
    }
    key.pkey = ec_from_jwk(group, std::get<0>(x), std::get<0>(y));
  } else if (kty == "OKP") {
    if (string_member("crv") != "Ed25519") return std::monostate{};  // Ed448, X25519...
    auto x = jwk_bytes(jwk, "x");
    if (x.index() == 1) return std::get<1>(std::move(x));
    const std::string& raw = std::get<0>(x);
    if (raw.size() != 32) return std::string("\"x\" is not 32 bytes for Ed25519");
    key.pkey.reset(EVP_PKEY_new_raw_public_key(
        EVP_PKEY_ED25519, nullptr, reinterpret_cast<const unsigned char*>(raw.data()), raw.size()));
  } else {
    return std::monostate{};
  }

  if (!key.pkey || !public_check(key.pkey.get())) {
    ERR_clear_error();
    return std::string("not a valid public key");
  }
  auto kind = classify(key.pkey.get());
  if (auto* error = std::get_if<std::string>(&kind)) return std::move(*error);
  key.kind = std::get<KeyKind>(kind);
  if (key.alg && kind_for(*key.alg) != key.kind) {
    return "\"alg\" " + std::string(jwt_alg_name(*key.alg)) + " does not fit this key";
  }
  return key;
}

}  // namespace

struct JwtKeySet::Impl {
  std::vector<JwtKey> keys;
};

std::variant<JwtKeySet, std::string> JwtKeySet::from_secret(std::string_view secret) {
  if (secret.size() < k_min_secret_bytes) {
    return "jwt secret is " + std::to_string(secret.size()) + " bytes: at least " +
           std::to_string(k_min_secret_bytes) + " required (RFC 7518 3.2)";
  }
  auto impl = std::make_shared<Impl>();
  JwtKey key;
  key.kind = KeyKind::Secret;
  key.secret = std::string(secret);
  impl->keys.push_back(std::move(key));
  return JwtKeySet(std::move(impl));
}

std::variant<JwtKeySet, std::string> JwtKeySet::from_pem(std::string_view pem) {
  if (pem.find("PRIVATE KEY-----") != std::string_view::npos) {
    return std::string("PEM holds a private key: give the public key (openssl pkey -pubout)");
  }
  if (pem.size() > INT_MAX) return std::string("PEM too large");
  BIO* bio = BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size()));
  if (bio == nullptr) return std::string("out of memory");
  PkeyPtr pkey;
  if (pem.find("-----BEGIN CERTIFICATE-----") != std::string_view::npos) {
    X509* cert = PEM_read_bio_X509(bio, nullptr, nullptr, nullptr);
    if (cert != nullptr) pkey.reset(X509_get_pubkey(cert));
    X509_free(cert);
  } else {
    // No password callback: a public key is never encrypted, and OpenSSL must not prompt.
    pkey.reset(PEM_read_bio_PUBKEY(bio, nullptr, nullptr, const_cast<char*>("")));
  }
  BIO_free(bio);
  if (!pkey || !public_check(pkey.get())) {
    ERR_clear_error();
    return std::string("no PEM \"PUBLIC KEY\" or \"CERTIFICATE\" could be read");
  }
  auto kind = classify(pkey.get());
  if (auto* error = std::get_if<std::string>(&kind)) return "PEM: " + *error;
  auto impl = std::make_shared<Impl>();
  JwtKey key;
  key.kind = std::get<KeyKind>(kind);
  key.pkey = std::move(pkey);
  impl->keys.push_back(std::move(key));
  return JwtKeySet(std::move(impl));
}

std::variant<JwtKeySet, std::string> JwtKeySet::from_jwks(std::string_view json) {
  boost::system::error_code ec;
  boost::json::value doc = boost::json::parse(json, ec);
  if (ec) return "JWKS is not JSON: " + ec.message();
  if (!doc.is_object()) return std::string("JWKS is not a JSON object");
  const boost::json::object& top = doc.get_object();

  std::vector<const boost::json::object*> jwks;
  if (const auto* keys = top.if_contains("keys"); keys != nullptr) {
    if (!keys->is_array()) return std::string("JWKS \"keys\" is not an array");
    if (keys->get_array().size() > k_max_jwks_keys) {
      return "JWKS has more than " + std::to_string(k_max_jwks_keys) + " keys";
    }
    for (const auto& k : keys->get_array()) {
      if (!k.is_object()) return std::string("JWKS \"keys\" holds a non-object");
      jwks.push_back(&k.get_object());
    }
  } else if (top.contains("kty")) {
    jwks.push_back(&top);  // a single JWK
  } else {
    return std::string("JWKS has no \"keys\" array");
  }

  auto impl = std::make_shared<Impl>();
  for (size_t i = 0; i < jwks.size(); ++i) {
    JwkOutcome outcome = key_from_jwk(*jwks[i]);
    if (auto* error = std::get_if<std::string>(&outcome)) {
      std::string where = "JWKS key " + std::to_string(i);
      if (const auto* kid = jwks[i]->if_contains("kid"); kid != nullptr && kid->is_string()) {
        where += " (kid " + boost::json::serialize(*kid) + ")";
      }
      return where + ": " + *error;
    }
    if (auto* key = std::get_if<JwtKey>(&outcome)) impl->keys.push_back(std::move(*key));
  }
  if (impl->keys.empty()) {
    return std::string("JWKS has no usable signature key (oct, RSA, EC P-256/P-384, Ed25519)");
  }
  return JwtKeySet(std::move(impl));
}

size_t JwtKeySet::size() const { return impl_ ? impl_->keys.size() : 0; }

bool JwtKeySet::can_verify(JwtAlg alg) const {
  if (!impl_) return false;
  return std::any_of(impl_->keys.begin(), impl_->keys.end(),
                     [&](const JwtKey& k) { return key_fits(k, alg); });
}

JwtError JwtKeySet::verify_signature(JwtAlg alg, std::optional<std::string_view> kid,
                                     std::string_view signing_input,
                                     std::string_view signature) const {
  if (!impl_) return JwtError::KeyMismatch;
  const std::vector<JwtKey>& keys = impl_->keys;
  // Which keys the kid selects (see the header); kid-less keys answer any kid only when no key
  // claims it.
  bool kid_matches_some = false;
  if (kid) {
    kid_matches_some =
        std::any_of(keys.begin(), keys.end(), [&](const JwtKey& k) { return k.kid == *kid; });
  }
  const auto selected = [&](const JwtKey& k) {
    if (!kid) return true;
    return kid_matches_some ? k.kid == *kid : !k.kid.has_value();
  };
  bool any_selected = false;
  bool any_fit = false;
  bool verified = false;
  for (const JwtKey& key : keys) {
    if (!selected(key)) continue;
    any_selected = true;
    if (!key_fits(key, alg)) continue;
    any_fit = true;
    verified = verify_with(key, alg, signing_input, signature);
    if (verified) break;
  }
  ERR_clear_error();  // failed checks leave entries on this thread's queue (TLS reads it too)
  if (verified) return JwtError::None;
  if (!any_selected) return JwtError::UnknownKey;
  if (!any_fit) return JwtError::KeyMismatch;
  return JwtError::BadSignature;
}

}  // namespace sluice::auth

// JSON Web Token verification (RFC 7519 over compact RFC 7515 JWS) for `jwt:` authenticators.
//
//   // At config load (reading the file is the caller's job: nothing here touches the disk).
//   std::variant<JwtKeySet, std::string> loaded = JwtKeySet::from_jwks(jwks_text);
//   if (auto* error = std::get_if<std::string>(&loaded)) return config_error(*error);
//   JwtKeySet keys = std::get<JwtKeySet>(std::move(loaded));
//   JwtPolicy policy{.algorithms = {JwtAlg::RS256, JwtAlg::ES256},
//                    .issuer = "https://auth.example.com", .audiences = {"api"}, .leeway_s = 30};
//   auto cache = std::make_shared<JwtCache>(10'000, 300);   // one per authenticator
//
//   // Per request, on any worker thread.
//   std::shared_ptr<const JwtClaims> claims = cache->lookup(token, now);
//   if (!claims) {
//     JwtResult r = verify_jwt(token, keys, policy, now);
//     if (!r) {
//       log("jwt rejected: {} (kid {})", describe(r.error), r.kid);   // never the token itself
//       return reply_401();
//     }
//     claims = cache->insert(token, std::move(*r.claims), now);
//   }
//   if (auto user = claims->claim_string("sub")) headers.set("x-user-id", *user);
//
// Security by construction:
// - A key has one kind (HMAC secret, RSA, EC P-256, EC P-384, Ed25519) fixed when it is loaded,
//   and verifies only that kind's algorithms: an RSA public key is never used as an HMAC secret,
//   so the HS256-signed-with-the-public-key confusion cannot happen.
// - "none" (in any letter case) is never an algorithm; headers naming keys by value or URL
//   (jwk, jku, x5u, x5c) are ignored: only configured keys verify.
// - The data plane never throws (Boost.JSON is parsed with error codes; std::bad_alloc aside).
// - describe() and JwtResult::kid are safe to log: no token, claim value or key material.
#pragma once

#include <array>
#include <boost/json.hpp>
#include <cstddef>
#include <cstdint>
#include <list>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <variant>
#include <vector>

namespace sluice::auth {

// The JWS algorithms of RFC 7518 / RFC 8037 that sluice verifies. EdDSA means Ed25519 only.
enum class JwtAlg { HS256, HS384, HS512, RS256, RS384, RS512, PS256, ES256, ES384, EdDSA };

// Exact (case-sensitive) JOSE name -> algorithm; nullopt for anything else, and always for "none".
std::optional<JwtAlg> parse_jwt_alg(std::string_view name);
std::string_view jwt_alg_name(JwtAlg alg);

// Why a token was rejected. describe() gives a short text for logs and the 401 body.
enum class JwtError {
  None,
  TooLarge,             // longer than JwtPolicy::max_token_bytes (checked before any decoding)
  Malformed,            // not three dot-separated parts; header without a string "alg"; bad "kid"
  BadBase64,            // a part is not canonical unpadded base64url
  BadJson,              // header or payload is not a JSON object
  AlgNone,              // "alg": "none", in any letter case
  AlgNotAllowed,        // unknown algorithm, or not in JwtPolicy::algorithms
  UnsupportedCritical,  // a "crit" header: no extension is understood, so RFC 7515 4.1.11 rejects
  UnknownKey,           // the header's "kid" names no key of the set
  KeyMismatch,          // no key of the set can verify this algorithm (wrong kind, curve or pin)
  BadSignature,
  BadClaim,  // "exp"/"nbf" present but not a finite number
  Expired,
  NotYetValid,
  WrongIssuer,
  WrongAudience,
};
std::string_view describe(JwtError error);

// An immutable set of verification keys. Copies share the keys (cheap); verify_signature() and
// everything else const may run on many threads at once.
//
// A key is one of: an HMAC secret (verifies HS256/384/512, and only those whose digest is not
// longer than the secret, per RFC 7518 3.2); an RSA public key of at least 2048 bits
// (RS256/384/512, PS256); an EC P-256 key (ES256) or P-384 key (ES384); an Ed25519 key (EdDSA).
// Nothing converts one kind into another.
class JwtKeySet {
 public:
  // An empty set: verifies nothing (every token fails with KeyMismatch).
  JwtKeySet() = default;

  // `jwt.secret`: the raw bytes of an HMAC secret, at least 32 bytes. The error text never quotes
  // the secret.
  static std::variant<JwtKeySet, std::string> from_secret(std::string_view secret);

  // `jwt.keys` naming a PEM file: one "PUBLIC KEY" (SubjectPublicKeyInfo: RSA, EC P-256/P-384,
  // Ed25519) or a "CERTIFICATE" whose public key is used. A private key is refused.
  static std::variant<JwtKeySet, std::string> from_pem(std::string_view pem);

  // `jwt.keys` naming a JWKS file (RFC 7517): {"keys": [...]} or a single JWK object. Keys with
  // "use" other than "sig", "key_ops" without "verify", an "alg" sluice does not verify, or an
  // unsupported kty/crv are skipped; a malformed supported key, private key material ("d", "p",
  // ...) or an oct "k" shorter than 32 bytes is an error, as is a set with no usable key or more
  // than 100 keys. A key's "alg", when present, is the only algorithm it verifies.
  static std::variant<JwtKeySet, std::string> from_jwks(std::string_view json);

  size_t size() const;
  // True when some key could verify `alg` (for config validation: `algorithms:` vs `keys:`).
  bool can_verify(JwtAlg alg) const;

  // Checks `signature` over `signing_input` with the keys fit for `alg`:
  // - kid given: the keys with that kid; when none has it, the keys that carry no kid (a PEM key or
  //   secret has none, so a token's kid does not matter with those); neither -> UnknownKey;
  // - no kid: every key;
  // then those of `alg`'s kind (and "alg" pin) are tried in order: none -> KeyMismatch, one
  // verifies -> None, else BadSignature.
  JwtError verify_signature(JwtAlg alg, std::optional<std::string_view> kid,
                            std::string_view signing_input, std::string_view signature) const;

  struct Impl;  // defined in jwt_keys.cpp

 private:
  explicit JwtKeySet(std::shared_ptr<const Impl> impl) : impl_(std::move(impl)) {}
  std::shared_ptr<const Impl> impl_;
};

// What a `jwt:` authenticator requires of a token besides a good signature (SPEC.md section 2).
struct JwtPolicy {
  std::vector<JwtAlg> algorithms{};      // allow-list; empty = whatever the key set can verify
  std::string issuer{};                  // empty = not checked; else "iss" must equal it
  std::vector<std::string> audiences{};  // empty = not checked; else "aud" (string or array of
                                         // strings) must contain one of them
  int64_t leeway_s = 0;                  // clock skew allowed on exp and nbf (negative = 0)
  size_t max_token_bytes = 8192;
};

// The verified payload.
struct JwtClaims {
  boost::json::object payload;      // every claim
  std::string subject;              // "sub" when a string, else empty
  std::vector<std::string> scopes;  // "scope" (space-separated string) when present, else "scp"
                                    // (array of strings, or space-separated string)
  int64_t exp = 0;                  // "exp" rounded down; 0 = absent

  // A claim as a header value for `forward_claims`: a string as is; numbers, booleans, arrays and
  // objects as compact JSON text. nullopt when absent, null, or a string holding a control
  // character (CR/LF would split the header: such a claim is not forwarded at all).
  std::optional<std::string> claim_string(std::string_view name) const;
};

struct JwtResult {
  std::optional<JwtClaims> claims;  // set exactly when error == None
  JwtError error = JwtError::None;
  // The header's "kid" for the log: at most 64 characters, anything outside printable ASCII
  // replaced by '?'. Empty when absent or when the header could not be read.
  std::string kid;

  explicit operator bool() const { return error == JwtError::None; }
};

// Verifies a compact JWS token (the part after "Bearer ") against `keys` and `policy` at
// `now_unix_s`. Checks, in order: size, three parts, base64url, header JSON, alg (none ->
// AlgNone, not allowed -> AlgNotAllowed), crit, the signature (kid selection as in
// JwtKeySet::verify_signature), payload JSON object, exp/nbf types, exp (expired when
// exp <= now - leeway), nbf (not yet valid when nbf > now + leeway), iss, aud. The payload is
// parsed only once the signature holds. Pure apart from OpenSSL's thread-local error queue, which
// it leaves empty; any thread.
JwtResult verify_jwt(std::string_view token, const JwtKeySet& keys, const JwtPolicy& policy,
                     int64_t now_unix_s);

// A bounded cache of verified tokens for one authenticator, so a client reusing its token costs a
// SHA-256 and a map lookup instead of a signature check. Keyed by the SHA-256 of the token (the
// token itself is not kept). An entry is never returned at or after its token's exp (exact: the
// leeway is not applied, a later verify_jwt may still accept it) nor max_age_s after insertion;
// past max_entries the least recently used entry goes.
//
// The results depend on the key set and the policy: build a new cache whenever either changes
// (config reload). Thread-safe: one mutex guards the map and the LRU list, held only for O(1)
// work (hashing happens outside it), so all workers may share one cache per authenticator.
class JwtCache {
 public:
  JwtCache(size_t max_entries, int64_t max_age_s);

  // The claims of `token` if cached and still fresh at `now_unix_s`; else null (and a stale entry
  // is dropped).
  std::shared_ptr<const JwtClaims> lookup(std::string_view token, int64_t now_unix_s);

  // Stores claims that verify_jwt() just accepted for `token` and returns them shared. Not
  // stored when already expired at `now_unix_s`, or when max_entries is 0 or max_age_s <= 0 (a
  // disabled cache).
  std::shared_ptr<const JwtClaims> insert(std::string_view token, JwtClaims claims,
                                          int64_t now_unix_s);

  size_t size() const;

 private:
  using Digest = std::array<unsigned char, 32>;
  struct DigestHash {
    size_t operator()(const Digest& d) const;
  };
  struct Entry {
    Digest key;
    std::shared_ptr<const JwtClaims> claims;
    int64_t expires_at;  // first second at which the entry is stale
  };

  const size_t max_entries_;
  const int64_t max_age_s_;
  mutable std::mutex mutex_;
  std::list<Entry> lru_;  // most recently used first
  std::unordered_map<Digest, std::list<Entry>::iterator, DigestHash> index_;
};

}  // namespace sluice::auth

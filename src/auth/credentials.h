// Credentials a client presents to a `consumers:` entry (SPEC.md section 2): API keys for the
// `api_key` authenticator and user/password pairs for `basic`.
//
//   // Once per config load, on the control thread:
//   auto built = auth::ApiKeyStore::build({{"alice", {"sha256:9f86d0...", "key:s3cret"}}});
//   if (auto* errors = std::get_if<std::vector<std::string>>(&built)) report(*errors);
//   auto api_keys = std::get<auth::ApiKeyStore>(std::move(built));
//
//   // Per request, on the worker:
//   std::optional<std::string> key = auth::query_param(query, "api_key");  // or a header value
//   if (auto consumer = key ? api_keys.lookup(*key) : std::nullopt) ...    // "alice"
//   // else 401; forward upstream remove_query_param(query, "api_key") / drop the header
//
//   auto creds = auth::parse_basic_authorization(authorization_value);
//   auto* basic = std::get_if<auth::BasicCredentials>(&creds);  // else 401 + log the string
//   const std::string& hash = password_of(basic->username);       // "$2b$12$..."
//   if (cache.contains(basic->username, hash, basic->password)) -> authenticated
//   else, on a helper thread (never the worker, see verify_password):
//     if (auth::verify_password(hash, basic->password) == auth::PasswordCheck::Match)
//       cache.remember(basic->username, hash, basic->password);  // -> authenticated
//   401 answers carry `WWW-Authenticate: ` + auth::basic_challenge(realm).
//
// Secrets never appear in the error strings returned here, so they can go to the error log as-is.
// Nothing here throws (allocation failure aside) and nothing touches I/O.
#pragma once

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <list>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <variant>
#include <vector>

namespace sluice::auth {

// ---------------------------------------------------------------------------------------------
// SHA-256

using Sha256Digest = std::array<unsigned char, 32>;

// SHA-256 of `data` (OpenSSL EVP). Safe on any thread. All zero only if OpenSSL fails (out of
// memory), which no caller here treats as a match.
Sha256Digest sha256(std::string_view data);

// Lower-case hex of SHA-256(data): what users put after "sha256:" in `api_keys:`
// (`printf %s "$KEY" | sha256sum`).
std::string sha256_hex(std::string_view data);

// ---------------------------------------------------------------------------------------------
// API keys

// One `api_keys:` entry after validation.
struct KeySpec {
  Sha256Digest digest{};
  // Written as "key:<plain>": works, but `sluice validate` should warn that the key sits in the
  // config in clear.
  bool plain = false;
};

// Parses "sha256:<64 hex digits>" (either case of hex) or "key:<plain key>". The error says what
// is wrong without repeating the key. Rejected: any other prefix, a wrong digest length, non-hex,
// an empty plain key, control characters or spaces in a plain key, and the digest of the empty
// key (such a key could never be presented: lookup("") always fails).
std::variant<KeySpec, std::string> parse_key_spec(std::string_view spec);

// The api_keys of one consumer, as written in the config.
struct ConsumerKeys {
  std::string consumer;
  std::vector<std::string> api_keys;
};

// Maps presented API keys to consumer names. Immutable after build(): lookup() may run on any
// number of worker threads at once.
//
// Layout choice: a hash map keyed by the first 8 bytes of the SHA-256 digest, then a
// CRYPTO_memcmp of the full 32-byte digest against each candidate in the bucket. A linear scan
// comparing every stored digest in constant time would cost O(keys) per request (10 000 keys =
// 320 KB compared), and buys nothing: the map only ever sees digests of the presented key, so its
// timing reveals at most how the attacker's own digest relates to stored digests, and learning
// that a stored digest starts with some bytes does not help forge a key without a SHA-256
// preimage. The constant-time compare of the full digest is kept as defence in depth.
class ApiKeyStore {
 public:
  ApiKeyStore() = default;  // empty: every lookup fails

  // Validates every key of every consumer and reports all errors at once, e.g.
  // `consumer "alice": api_keys[1]: sha256 digest must be 64 hex digits`. A key shared by two
  // consumers is an error (the identity would be ambiguous); a key repeated within one consumer is
  // harmless and kept once.
  static std::variant<ApiKeyStore, std::vector<std::string>> build(
      const std::vector<ConsumerKeys>& consumers);

  // The consumer owning `presented_key`, or nullopt (also for an empty key). The view points into
  // this store. Cost: one SHA-256 of the key plus a hash-map probe.
  std::optional<std::string_view> lookup(std::string_view presented_key) const;

  size_t size() const { return size_; }

 private:
  struct Entry {
    Sha256Digest digest;
    size_t consumer;  // index into consumers_
  };
  std::vector<std::string> consumers_;
  std::unordered_map<uint64_t, std::vector<Entry>> by_prefix_;
  size_t size_ = 0;
};

// The first value of query parameter `name` in `query` (raw query string without '?'),
// percent-decoded ('+' is not a space here: keys are not form data). nullopt when absent or when
// the value's percent-encoding is malformed. Names are compared exactly, undecoded.
std::optional<std::string> query_param(std::string_view query, std::string_view name);

// `query` with every `name=...` parameter removed (what goes upstream once the gateway consumed
// the key). Other parameters keep their order and encoding.
std::string remove_query_param(std::string_view query, std::string_view name);

// ---------------------------------------------------------------------------------------------
// Basic authentication (RFC 7617)

struct BasicCredentials {
  std::string username;
  std::string password;
};

// Encoded credentials longer than this are rejected before decoding: it bounds the work the
// password hash does (sha512-crypt costs grow with password length).
inline constexpr size_t k_max_basic_token = 4096;

// Parses an `Authorization` header value of the form `Basic <base64(user:password)>`.
// Accepted: the scheme in any case, one or more spaces after it, surrounding spaces/tabs.
// Rejected with a reason (never containing the credentials): another scheme, a missing or
// over-long token, characters outside the base64 alphabet (including spaces inside the token),
// a length not a multiple of 4, misplaced or excess '=' padding, non-zero padding bits, no ':',
// an empty username, and control characters (0x00-0x1f, 0x7f) in the username or password.
// The username is everything before the first ':', the password everything after (it may hold ':'
// and may be empty). Bytes >= 0x80 pass through (RFC 7617 charset=UTF-8).
std::variant<BasicCredentials, std::string> parse_basic_authorization(std::string_view value);

// The `WWW-Authenticate` value for a 401 from a `basic` authenticator: `Basic realm="ops",
// charset="UTF-8"`. Quotes and backslashes in the realm are escaped.
std::string basic_challenge(std::string_view realm);

// ---------------------------------------------------------------------------------------------
// Password hashes (crypt(3) via libxcrypt)

enum class PasswordCheck {
  Match,
  Mismatch,
  BadHash,  // the stored hash is not a supported, well-formed crypt(3) string: a config error
};

// Why `hash` cannot be used as a `password:` value, or nullopt when it can. Supported families:
// bcrypt ($2b$, also $2a$ and $2y$ as written by htpasswd), sha512-crypt ($6$) and yescrypt ($y$).
// Run once per config load; it does not hash anything.
std::optional<std::string> check_password_hash(std::string_view hash);

// Whether `password` matches the crypt(3) `hash`. Pure and thread-safe (crypt_rn with its own
// heap-allocated crypt_data, wiped afterwards); the final comparison is constant-time.
//
// SLOW BY DESIGN: bcrypt at cost 12 or yescrypt take ~100 ms or more of CPU. Never call this on a
// worker (event-loop) thread per request: consult a PasswordCache first and verify misses on a
// helper thread. A password containing NUL cannot be passed to crypt(3) and never matches.
PasswordCheck verify_password(std::string_view hash, std::string_view password);

// A bounded cache of successful password verifications, so a client that sends the same Basic
// credentials on every request costs one crypt(3) call per TTL instead of one per request.
//
// Entries are keyed by SHA-256(username || 0x00 || stored hash || 0x00 || password): no plaintext
// password is kept, and including the stored hash means a consumer whose `password:` changed on
// reload no longer matches an entry made with the old one (no explicit flush needed). Only
// successes are cached: caching failures would let an attacker fill the cache, and a wrong
// password must keep costing the attacker a full verification. Callers should bound or rate-limit
// the misses they send to the helper thread, since each costs a full crypt(3).
//
// An entry expires `ttl` after it was last remembered (a hit does not extend it). When the cache
// holds `capacity` entries, remembering a new one evicts the least recently used. Capacity 0
// turns caching off.
//
// Thread-safe: one mutex guards the whole cache. The critical section is a hash-map probe and a
// list splice (the SHA-256 is computed before taking the lock), short enough for per-request use
// from all workers.
class PasswordCache {
 public:
  using Clock = std::chrono::steady_clock;

  PasswordCache(size_t capacity, Clock::duration ttl);

  // Whether this username/hash/password triple was verified within the TTL. Counts as a use for
  // LRU purposes; an expired entry found here is dropped.
  bool contains(std::string_view username, std::string_view hash, std::string_view password,
                Clock::time_point now = Clock::now());

  // Records a successful verify_password(). Call only after PasswordCheck::Match.
  void remember(std::string_view username, std::string_view hash, std::string_view password,
                Clock::time_point now = Clock::now());

  void clear();
  size_t size() const;
  size_t capacity() const { return capacity_; }

 private:
  struct Node {
    Sha256Digest key;
    Clock::time_point expires;
  };
  struct DigestHash {
    size_t operator()(const Sha256Digest& d) const;
  };
  static Sha256Digest cache_key(std::string_view username, std::string_view hash,
                                std::string_view password);

  const size_t capacity_;
  const Clock::duration ttl_;
  mutable std::mutex mu_;
  std::list<Node> lru_;  // most recently used first; guarded by mu_
  std::unordered_map<Sha256Digest, std::list<Node>::iterator, DigestHash> index_;  // guarded by mu_
};

}  // namespace sluice::auth

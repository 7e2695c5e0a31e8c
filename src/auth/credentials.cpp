#include "auth/credentials.h"

#include <crypt.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>

#include <cstring>
#include <initializer_list>
#include <memory>

namespace sluice::auth {
namespace {

// Fetched once: an implicit fetch through EVP_sha256() takes a provider lock on every call.
// Never freed (lives as long as the process), so it is never used after free either.
const EVP_MD* sha256_md() {
  static const EVP_MD* md = [] {
    const EVP_MD* fetched = EVP_MD_fetch(nullptr, "SHA256", nullptr);
    return fetched != nullptr ? fetched : EVP_sha256();
  }();
  return md;
}

struct MdCtxFree {
  void operator()(EVP_MD_CTX* ctx) const { EVP_MD_CTX_free(ctx); }
};

// SHA-256 over the concatenation of `parts`. False only when OpenSSL itself fails (out of
// memory): callers treat that as "no match", never as a match.
bool sha256_parts(std::initializer_list<std::string_view> parts, Sha256Digest& out) {
  std::unique_ptr<EVP_MD_CTX, MdCtxFree> ctx(EVP_MD_CTX_new());
  if (!ctx || EVP_DigestInit_ex(ctx.get(), sha256_md(), nullptr) != 1) return false;
  for (std::string_view p : parts) {
    if (EVP_DigestUpdate(ctx.get(), p.data(), p.size()) != 1) return false;
  }
  unsigned int len = 0;
  return EVP_DigestFinal_ex(ctx.get(), out.data(), &len) == 1 && len == out.size();
}

bool sha256_of(std::string_view data, Sha256Digest& out) {
  unsigned int len = 0;
  return EVP_Digest(data.data(), data.size(), out.data(), &len, sha256_md(), nullptr) == 1 &&
         len == out.size();
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

bool is_control(unsigned char c) { return c < 0x20 || c == 0x7f; }

bool has_control(std::string_view s) {
  for (char c : s) {
    if (is_control(static_cast<unsigned char>(c))) return true;
  }
  return false;
}

uint64_t digest_prefix(const Sha256Digest& d) {
  uint64_t v = 0;
  std::memcpy(&v, d.data(), sizeof v);  // SHA-256 output is uniform: any 8 bytes hash well
  return v;
}

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    char x = a[i] >= 'A' && a[i] <= 'Z' ? static_cast<char>(a[i] - 'A' + 'a') : a[i];
    char y = b[i] >= 'A' && b[i] <= 'Z' ? static_cast<char>(b[i] - 'A' + 'a') : b[i];
    if (x != y) return false;
  }
  return true;
}

// Value of one base64 character, or -1 outside the standard alphabet.
int base64_value(char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+') return 62;
  if (c == '/') return 63;
  return -1;
}

// The crypt(3) alphabet used by bcrypt, sha512-crypt and yescrypt for salts and hashes.
bool is_crypt64(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
         c == '/';
}

bool all_crypt64(std::string_view s) {
  for (char c : s) {
    if (!is_crypt64(c)) return false;
  }
  return true;
}

// Splits "$a$b$c" into {"a", "b", "c"}; empty when it does not start with '$'.
std::vector<std::string_view> split_dollar(std::string_view hash) {
  std::vector<std::string_view> fields;
  if (hash.empty() || hash[0] != '$') return fields;
  hash.remove_prefix(1);
  while (true) {
    size_t d = hash.find('$');
    fields.push_back(hash.substr(0, d));
    if (d == std::string_view::npos) break;
    hash.remove_prefix(d + 1);
  }
  return fields;
}

// "$2b$12$" + 22 salt + 31 hash characters.
std::optional<std::string> check_bcrypt(std::string_view hash) {
  if (hash.size() != 60 || hash[6] != '$') return "bcrypt hash must be 60 characters: $2b$NN$...";
  int cost = (hash[4] - '0') * 10 + (hash[5] - '0');
  if (hash[4] < '0' || hash[4] > '9' || hash[5] < '0' || hash[5] > '9' || cost < 4 || cost > 31) {
    return "bcrypt cost must be 04..31";
  }
  if (!all_crypt64(hash.substr(7))) return "bcrypt salt and hash use characters ./A-Za-z0-9 only";
  return std::nullopt;
}

// "$6$[rounds=N$]salt$" + 86 hash characters; the salt is up to 16 characters.
std::optional<std::string> check_sha512_crypt(std::string_view hash) {
  std::vector<std::string_view> f = split_dollar(hash);
  constexpr std::string_view k_rounds = "rounds=";
  size_t salt_at = 1;
  if (f.size() == 4 && f[1].starts_with(k_rounds)) {
    std::string_view n = f[1].substr(k_rounds.size());
    if (n.empty() || n.size() > 9) return "sha512-crypt rounds must be a number";
    for (char c : n) {
      if (c < '0' || c > '9') return "sha512-crypt rounds must be a number";
    }
    salt_at = 2;
  } else if (f.size() != 3) {
    return "sha512-crypt hash must look like $6$[rounds=N$]salt$hash";
  }
  std::string_view salt = f[salt_at];
  std::string_view digest = f[salt_at + 1];
  if (salt.empty() || salt.size() > 16 || !all_crypt64(salt)) {
    return "sha512-crypt salt must be 1..16 characters of ./A-Za-z0-9";
  }
  if (digest.size() != 86 || !all_crypt64(digest)) {
    return "sha512-crypt hash part must be 86 characters of ./A-Za-z0-9";
  }
  return std::nullopt;
}

// "$y$params$salt$" + 43 hash characters.
std::optional<std::string> check_yescrypt(std::string_view hash) {
  std::vector<std::string_view> f = split_dollar(hash);
  if (f.size() != 4) return "yescrypt hash must look like $y$params$salt$hash";
  if (f[1].empty() || !all_crypt64(f[1]) || f[2].empty() || !all_crypt64(f[2])) {
    return "yescrypt parameters and salt use characters ./A-Za-z0-9 only";
  }
  if (f[3].size() != 43 || !all_crypt64(f[3])) {
    return "yescrypt hash part must be 43 characters of ./A-Za-z0-9";
  }
  return std::nullopt;
}

struct CryptDataFree {
  void operator()(crypt_data* d) const {
    OPENSSL_cleanse(d, sizeof *d);  // holds the password and intermediate state
    delete d;
  }
};

}  // namespace

// ---------------------------------------------------------------------------------------------
// SHA-256

Sha256Digest sha256(std::string_view data) {
  Sha256Digest d{};
  if (!sha256_of(data, d)) d.fill(0);
  return d;
}

std::string sha256_hex(std::string_view data) {
  Sha256Digest d{};
  if (!sha256_of(data, d)) return {};
  static constexpr char k_hex[] = "0123456789abcdef";
  std::string out(d.size() * 2, '\0');
  for (size_t i = 0; i < d.size(); ++i) {
    out[2 * i] = k_hex[d[i] >> 4];
    out[2 * i + 1] = k_hex[d[i] & 0x0f];
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// API keys

std::variant<KeySpec, std::string> parse_key_spec(std::string_view spec) {
  constexpr std::string_view k_sha256 = "sha256:";
  constexpr std::string_view k_key = "key:";
  KeySpec out;
  if (spec.starts_with(k_sha256)) {
    std::string_view hex = spec.substr(k_sha256.size());
    if (hex.size() != 64) return std::string("sha256 digest must be 64 hex digits");
    for (size_t i = 0; i < out.digest.size(); ++i) {
      int h = hex_value(hex[2 * i]);
      int l = hex_value(hex[2 * i + 1]);
      if (h < 0 || l < 0) return std::string("sha256 digest must be 64 hex digits");
      out.digest[i] = static_cast<unsigned char>(h << 4 | l);
    }
    Sha256Digest empty{};
    if (sha256_of("", empty) && CRYPTO_memcmp(empty.data(), out.digest.data(), empty.size()) == 0) {
      return std::string("sha256 digest is that of the empty key, which is never accepted");
    }
    return out;
  }
  if (spec.starts_with(k_key)) {
    std::string_view key = spec.substr(k_key.size());
    if (key.empty()) return std::string("plain key after \"key:\" is empty");
    for (char c : key) {
      if (is_control(static_cast<unsigned char>(c)) || c == ' ') {
        return std::string("plain key contains spaces or control characters");
      }
    }
    if (!sha256_of(key, out.digest)) return std::string("cannot compute SHA-256");
    out.plain = true;
    return out;
  }
  // Do not echo the value: it may be a plain key written without its prefix.
  return std::string("api key must start with \"sha256:\" or \"key:\"");
}

std::variant<ApiKeyStore, std::vector<std::string>> ApiKeyStore::build(
    const std::vector<ConsumerKeys>& consumers) {
  ApiKeyStore store;
  std::vector<std::string> errors;
  for (const ConsumerKeys& c : consumers) {
    const size_t index = store.consumers_.size();
    store.consumers_.push_back(c.consumer);
    for (size_t k = 0; k < c.api_keys.size(); ++k) {
      auto where = [&] {
        return "consumer \"" + c.consumer + "\": api_keys[" + std::to_string(k) + "]: ";
      };
      auto spec = parse_key_spec(c.api_keys[k]);
      if (auto* error = std::get_if<std::string>(&spec)) {
        errors.push_back(where() + *error);
        continue;
      }
      const Sha256Digest& digest = std::get<KeySpec>(spec).digest;
      std::vector<Entry>& bucket = store.by_prefix_[digest_prefix(digest)];
      bool duplicate = false;
      for (const Entry& e : bucket) {
        if (e.digest != digest) continue;
        duplicate = true;
        if (e.consumer != index) {
          errors.push_back(where() + "same key as consumer \"" + store.consumers_[e.consumer] +
                           "\"");
        }
      }
      if (!duplicate) {
        bucket.push_back({digest, index});
        ++store.size_;
      }
    }
  }
  if (!errors.empty()) return errors;
  return store;
}

std::optional<std::string_view> ApiKeyStore::lookup(std::string_view presented_key) const {
  if (presented_key.empty() || size_ == 0) return std::nullopt;
  Sha256Digest digest;
  if (!sha256_of(presented_key, digest)) return std::nullopt;
  auto it = by_prefix_.find(digest_prefix(digest));
  if (it == by_prefix_.end()) return std::nullopt;
  for (const Entry& e : it->second) {
    if (CRYPTO_memcmp(e.digest.data(), digest.data(), digest.size()) == 0) {
      return std::string_view(consumers_[e.consumer]);
    }
  }
  return std::nullopt;
}

std::optional<std::string> query_param(std::string_view query, std::string_view name) {
  while (!query.empty()) {
    size_t amp = query.find('&');
    std::string_view part = query.substr(0, amp);
    query = amp == std::string_view::npos ? std::string_view() : query.substr(amp + 1);
    size_t eq = part.find('=');
    if (part.substr(0, eq) != name) continue;
    std::string_view raw = eq == std::string_view::npos ? std::string_view() : part.substr(eq + 1);
    std::string value;
    value.reserve(raw.size());
    for (size_t i = 0; i < raw.size(); ++i) {
      if (raw[i] != '%') {
        value.push_back(raw[i]);
        continue;
      }
      if (i + 2 >= raw.size()) return std::nullopt;
      int h = hex_value(raw[i + 1]);
      int l = hex_value(raw[i + 2]);
      if (h < 0 || l < 0) return std::nullopt;
      value.push_back(static_cast<char>(h << 4 | l));
      i += 2;
    }
    return value;
  }
  return std::nullopt;
}

std::string remove_query_param(std::string_view query, std::string_view name) {
  std::string out;
  out.reserve(query.size());
  bool first = true;
  while (true) {
    size_t amp = query.find('&');
    std::string_view part = query.substr(0, amp);
    if (part.substr(0, part.find('=')) != name) {
      if (!first) out.push_back('&');
      out.append(part);
      first = false;
    }
    if (amp == std::string_view::npos) break;
    query.remove_prefix(amp + 1);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Basic authentication

std::variant<BasicCredentials, std::string> parse_basic_authorization(std::string_view value) {
  auto is_ows = [](char c) { return c == ' ' || c == '\t'; };
  while (!value.empty() && is_ows(value.front())) value.remove_prefix(1);
  while (!value.empty() && is_ows(value.back())) value.remove_suffix(1);

  size_t space = value.find(' ');
  if (!iequals(value.substr(0, space), "basic")) return std::string("scheme is not Basic");
  if (space == std::string_view::npos) return std::string("Basic credentials missing");
  std::string_view token = value.substr(space);
  while (!token.empty() && token.front() == ' ') token.remove_prefix(1);

  if (token.empty()) return std::string("Basic credentials missing");
  if (token.size() > k_max_basic_token) return std::string("Basic credentials too long");
  if (token.size() % 4 != 0)
    return std::string("Basic credentials: base64 length not a multiple of 4");
  size_t padding = 0;
  while (padding < token.size() && token[token.size() - 1 - padding] == '=') ++padding;
  if (padding > 2) return std::string("Basic credentials: bad base64 padding");
  const std::string_view data = token.substr(0, token.size() - padding);
  for (char c : data) {
    if (base64_value(c) < 0) return std::string("Basic credentials: invalid base64 character");
  }
  // Canonical encoding only: the bits the padding leaves over must be zero.
  if (padding > 0) {
    int last = base64_value(data.back());
    if ((padding == 2 && (last & 0x0f) != 0) || (padding == 1 && (last & 0x03) != 0)) {
      return std::string("Basic credentials: non-canonical base64");
    }
  }

  std::string decoded(token.size() / 4 * 3, '\0');
  int n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(decoded.data()),
                          reinterpret_cast<const unsigned char*>(token.data()),
                          static_cast<int>(token.size()));
  if (n < 0 || static_cast<size_t>(n) != decoded.size()) {
    return std::string("Basic credentials: invalid base64");
  }
  decoded.resize(decoded.size() - padding);  // EVP_DecodeBlock counts padding as zero bytes

  BasicCredentials out;
  std::string error;
  size_t colon = decoded.find(':');
  if (colon == std::string::npos) {
    error = "Basic credentials: no ':' between username and password";
  } else if (colon == 0) {
    error = "Basic credentials: empty username";
  } else if (has_control(decoded)) {
    error = "Basic credentials: control characters in username or password";
  } else {
    out.username = decoded.substr(0, colon);
    out.password = decoded.substr(colon + 1);
  }
  OPENSSL_cleanse(decoded.data(), decoded.size());
  if (!error.empty()) return error;
  return out;
}

std::string basic_challenge(std::string_view realm) {
  std::string out = "Basic realm=\"";
  for (char c : realm) {
    if (c == '"' || c == '\\') out.push_back('\\');
    out.push_back(c);
  }
  out += "\", charset=\"UTF-8\"";
  return out;
}

// ---------------------------------------------------------------------------------------------
// Password hashes

std::optional<std::string> check_password_hash(std::string_view hash) {
  if (hash.empty()) return "password hash is empty";
  if (has_control(hash) || hash.find(' ') != std::string_view::npos) {
    return "password hash contains spaces or control characters";
  }
  std::optional<std::string> shape;
  if (hash.starts_with("$2b$") || hash.starts_with("$2a$") || hash.starts_with("$2y$")) {
    shape = check_bcrypt(hash);
  } else if (hash.starts_with("$6$")) {
    shape = check_sha512_crypt(hash);
  } else if (hash.starts_with("$y$")) {
    shape = check_yescrypt(hash);
  } else {
    return "unsupported password hash: expected bcrypt ($2b$), sha512-crypt ($6$) or yescrypt "
           "($y$)";
  }
  if (shape) return shape;
  const std::string setting(hash);  // NUL-terminated for libxcrypt
  if (crypt_checksalt(setting.c_str()) != CRYPT_SALT_OK) {
    return "password hash parameters are not accepted by libxcrypt";
  }
  return std::nullopt;
}

PasswordCheck verify_password(std::string_view hash, std::string_view password) {
  if (check_password_hash(hash)) return PasswordCheck::BadHash;
  if (password.find('\0') != std::string_view::npos) return PasswordCheck::Mismatch;

  // crypt_data is ~32 KiB: on the heap, so a small helper-thread or coroutine stack is safe.
  // Value-initialised (zeroed), as crypt_rn requires for a fresh crypt_data.
  std::unique_ptr<crypt_data, CryptDataFree> data(new crypt_data());
  const std::string setting(hash);
  std::string phrase(password);
  const char* result = crypt_rn(phrase.c_str(), setting.c_str(), data.get(), sizeof(crypt_data));
  OPENSSL_cleanse(phrase.data(), phrase.size());
  if (result == nullptr) return PasswordCheck::BadHash;  // crypt_rn never returns "*0"-style junk

  // Lengths are not secret (fixed by the hash format); the contents are compared in constant time.
  const size_t len = std::strlen(result);
  if (len != hash.size()) return PasswordCheck::Mismatch;
  return CRYPTO_memcmp(result, hash.data(), len) == 0 ? PasswordCheck::Match
                                                      : PasswordCheck::Mismatch;
}

// ---------------------------------------------------------------------------------------------
// PasswordCache

PasswordCache::PasswordCache(size_t capacity, Clock::duration ttl)
    : capacity_(capacity), ttl_(ttl) {}

size_t PasswordCache::DigestHash::operator()(const Sha256Digest& d) const {
  return static_cast<size_t>(digest_prefix(d));
}

Sha256Digest PasswordCache::cache_key(std::string_view username, std::string_view hash,
                                      std::string_view password) {
  Sha256Digest key{};
  // NUL separates the fields, so no field may hold one (crypt hashes and parsed usernames
  // never do); the password is last, so it may. All-zero key = "do not cache".
  constexpr auto k_npos = std::string_view::npos;
  if (username.find('\0') != k_npos || hash.find('\0') != k_npos) return key;
  static constexpr char k_nul = '\0';
  const std::string_view sep(&k_nul, 1);
  if (!sha256_parts({username, sep, hash, sep, password}, key)) key.fill(0);
  return key;
}

bool PasswordCache::contains(std::string_view username, std::string_view hash,
                             std::string_view password, Clock::time_point now) {
  const Sha256Digest key = cache_key(username, hash, password);
  if (key == Sha256Digest{}) return false;
  std::lock_guard lock(mu_);
  auto it = index_.find(key);
  if (it == index_.end()) return false;
  if (now >= it->second->expires) {
    lru_.erase(it->second);
    index_.erase(it);
    return false;
  }
  lru_.splice(lru_.begin(), lru_, it->second);
  return true;
}

void PasswordCache::remember(std::string_view username, std::string_view hash,
                             std::string_view password, Clock::time_point now) {
  if (capacity_ == 0) return;
  const Sha256Digest key = cache_key(username, hash, password);
  if (key == Sha256Digest{}) return;
  std::lock_guard lock(mu_);
  if (auto it = index_.find(key); it != index_.end()) {
    it->second->expires = now + ttl_;
    lru_.splice(lru_.begin(), lru_, it->second);
    return;
  }
  if (lru_.size() >= capacity_) {
    index_.erase(lru_.back().key);
    lru_.pop_back();
  }
  lru_.push_front(Node{key, now + ttl_});
  index_.emplace(key, lru_.begin());
}

void PasswordCache::clear() {
  std::lock_guard lock(mu_);
  index_.clear();
  lru_.clear();
}

size_t PasswordCache::size() const {
  std::lock_guard lock(mu_);
  return lru_.size();
}

}  // namespace sluice::auth

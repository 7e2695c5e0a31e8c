// JwtCache: verified tokens by SHA-256, LRU-bounded, never served past exp or max_age.
#include <openssl/evp.h>

#include <algorithm>
#include <cstring>
#include <limits>

#include "auth/jwt.h"

namespace sluice::auth {

size_t JwtCache::DigestHash::operator()(const Digest& d) const {
  // The key is already a SHA-256: its first bytes are as good as any hash. Only verified tokens
  // get in, so nobody can flood one bucket with crafted keys anyway.
  size_t h = 0;
  std::memcpy(&h, d.data(), sizeof h);
  return h;
}

namespace {

std::optional<std::array<unsigned char, 32>> token_digest(std::string_view token) {
  std::array<unsigned char, 32> out{};
  unsigned int len = 0;
  if (EVP_Digest(token.data(), token.size(), out.data(), &len, EVP_sha256(), nullptr) != 1 ||
      len != out.size()) {
    return std::nullopt;
  }
  return out;
}

}  // namespace

JwtCache::JwtCache(size_t max_entries, int64_t max_age_s)
    : max_entries_(max_entries), max_age_s_(max_age_s) {}

std::shared_ptr<const JwtClaims> JwtCache::lookup(std::string_view token, int64_t now_unix_s) {
  if (max_entries_ == 0) return nullptr;
  const auto key = token_digest(token);
  if (!key) return nullptr;
  std::lock_guard lock(mutex_);
  const auto it = index_.find(*key);
  if (it == index_.end()) return nullptr;
  if (it->second->expires_at <= now_unix_s) {
    lru_.erase(it->second);
    index_.erase(it);
    return nullptr;
  }
  lru_.splice(lru_.begin(), lru_, it->second);
  return it->second->claims;
}

std::shared_ptr<const JwtClaims> JwtCache::insert(std::string_view token, JwtClaims claims,
                                                  int64_t now_unix_s) {
  auto shared = std::make_shared<const JwtClaims>(std::move(claims));
  if (max_entries_ == 0 || max_age_s_ <= 0) return shared;
  int64_t expires_at = now_unix_s > std::numeric_limits<int64_t>::max() - max_age_s_
                           ? std::numeric_limits<int64_t>::max()
                           : now_unix_s + max_age_s_;
  if (shared->exp != 0) expires_at = std::min(expires_at, shared->exp);
  if (expires_at <= now_unix_s) return shared;
  const auto key = token_digest(token);
  if (!key) return shared;

  std::lock_guard lock(mutex_);
  if (const auto it = index_.find(*key); it != index_.end()) {
    it->second->claims = shared;
    it->second->expires_at = expires_at;
    lru_.splice(lru_.begin(), lru_, it->second);
    return shared;
  }
  while (index_.size() >= max_entries_) {
    index_.erase(lru_.back().key);
    lru_.pop_back();
  }
  lru_.push_front(Entry{*key, shared, expires_at});
  index_.emplace(*key, lru_.begin());
  return shared;
}

size_t JwtCache::size() const {
  std::lock_guard lock(mutex_);
  return index_.size();
}

}  // namespace sluice::auth

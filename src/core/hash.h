// A seeded 64-bit string hash for tables whose keys come from clients (rate-limit buckets, cache
// keys): with a random seed per table, nobody can pick keys offline that collide.
//
//   const uint64_t seed = random_seed();     // once per table
//   uint64_t h = seeded_hash(seed, key);      // never 0
#pragma once

#include <cstdint>
#include <cstring>
#include <random>
#include <string_view>

namespace sluice {

// The splitmix64 finaliser: a bijection on 64 bits with full avalanche.
constexpr uint64_t mix64(uint64_t x) {
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ULL;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebULL;
  x ^= x >> 31;
  return x;
}

inline uint64_t random_seed() {
  std::random_device rd;
  return mix64((uint64_t{rd()} << 32) ^ rd());
}

// Eight bytes at a time through mix64 from a start state made of the seed and the length.
// Never returns 0 (callers may use 0 as "empty").
inline uint64_t seeded_hash(uint64_t seed, std::string_view key) {
  uint64_t h = seed + key.size() * 0x9e3779b97f4a7c15ULL;
  size_t i = 0;
  for (; i + 8 <= key.size(); i += 8) {
    uint64_t word;
    std::memcpy(&word, key.data() + i, 8);
    h = mix64(h ^ word);
  }
  uint64_t tail = 0;
  if (i < key.size()) std::memcpy(&tail, key.data() + i, key.size() - i);
  h = mix64(h ^ tail);
  return h == 0 ? 1 : h;
}

}  // namespace sluice

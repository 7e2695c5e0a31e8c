#include "auth/base64url.h"

#include <array>
#include <cstdint>

namespace sluice::auth {
namespace {

constexpr std::string_view k_alphabet =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

// 0..63 for alphabet characters, 0xff for everything else (including '=', '+', '/', space).
constexpr std::array<uint8_t, 256> make_table() {
  std::array<uint8_t, 256> table{};
  for (auto& v : table) v = 0xff;
  for (size_t i = 0; i < k_alphabet.size(); ++i) {
    table[static_cast<unsigned char>(k_alphabet[i])] = static_cast<uint8_t>(i);
  }
  return table;
}
constexpr std::array<uint8_t, 256> k_table = make_table();

}  // namespace

std::optional<std::string> base64url_decode(std::string_view text) {
  // 4 characters carry 3 bytes; a lone trailing character carries only 6 bits: never valid.
  if (text.size() % 4 == 1) return std::nullopt;
  std::string out;
  out.reserve(text.size() / 4 * 3 + 2);
  uint32_t bits = 0;
  int bit_count = 0;
  for (char c : text) {
    const uint8_t v = k_table[static_cast<unsigned char>(c)];
    if (v == 0xff) return std::nullopt;
    bits = (bits << 6) | v;
    bit_count += 6;
    if (bit_count >= 8) {
      bit_count -= 8;
      out.push_back(static_cast<char>((bits >> bit_count) & 0xff));
    }
  }
  // Leftover bits (2 or 4) must be zero: otherwise two encodings would decode to the same bytes.
  if ((bits & ((1u << bit_count) - 1)) != 0) return std::nullopt;
  return out;
}

std::string base64url_encode(std::string_view bytes) {
  std::string out;
  out.reserve((bytes.size() + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 3 <= bytes.size(); i += 3) {
    const uint32_t n = (static_cast<uint8_t>(bytes[i]) << 16) |
                       (static_cast<uint8_t>(bytes[i + 1]) << 8) |
                       static_cast<uint8_t>(bytes[i + 2]);
    out.push_back(k_alphabet[(n >> 18) & 63]);
    out.push_back(k_alphabet[(n >> 12) & 63]);
    out.push_back(k_alphabet[(n >> 6) & 63]);
    out.push_back(k_alphabet[n & 63]);
  }
  const size_t rest = bytes.size() - i;
  if (rest == 1) {
    const uint32_t n = static_cast<uint8_t>(bytes[i]) << 16;
    out.push_back(k_alphabet[(n >> 18) & 63]);
    out.push_back(k_alphabet[(n >> 12) & 63]);
  } else if (rest == 2) {
    const uint32_t n =
        (static_cast<uint8_t>(bytes[i]) << 16) | (static_cast<uint8_t>(bytes[i + 1]) << 8);
    out.push_back(k_alphabet[(n >> 18) & 63]);
    out.push_back(k_alphabet[(n >> 12) & 63]);
    out.push_back(k_alphabet[(n >> 6) & 63]);
  }
  return out;
}

}  // namespace sluice::auth

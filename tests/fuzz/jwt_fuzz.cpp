// libFuzzer target for JWT verification: any bytes must yield a JwtResult, never a crash, a hang,
// a leak or an escaped exception. Each input is used three ways:
//   1. as a token, verified against a fixed key set (the RFC 7515 / RFC 8037 example JWKs);
//   2. split at the first '\n' into header and payload JSON, signed HS256 here with the RFC 7515
//      A.1 key and verified, so the claim checks after the signature see arbitrary JSON too;
//   3. when it starts with '{', as a JWKS document.
//
//   clang++ -std=c++20 -fsanitize=fuzzer,address,undefined -Isrc tests/fuzz/jwt_fuzz.cpp \
//     src/auth/jwt*.cpp src/auth/base64url.cpp -lcrypto -lboost_json -o /tmp/jwtfuzz
//   mkdir -p /tmp/jwtcorpus && /tmp/jwtfuzz -max_total_time=60 /tmp/jwtcorpus tests/fuzz/corpus/jwt
//
// (libFuzzer writes new inputs into the first directory it is given: keep the seeds second.)
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "auth/base64url.h"
#include "auth/jwt.h"

namespace {

using namespace sluice::auth;

constexpr std::string_view k_hmac_key_b64 =
    "AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow";

constexpr std::string_view k_jwks = R"({"keys":[
  {"kty":"oct","kid":"a1","k":"AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow"},
  {"kty":"RSA","kid":"a2","e":"AQAB","n":"ofgWCuLjybRlzo0tZWJjNiuSfb4p4fAkd_wWJcyQoTbji9k0l8W26mPddxHmfHQp-Vaw-4qPCJrcS2mJPMEzP1Pt0Bm4d4QlL-yRT-SFd2lZS-pCgNMsD1W_YpRPEwOWvG6b32690r2jZ47soMZo9wGzjb_7OMg0LOL-bSf63kpaSHSXndS5z5rexMdbBYUsLA9e-KXBdQOS-UTo7WTBEMa2R2CapHg665xsmtdVMTBQY4uDZlxvb3qCo5ZwKh9kG4LT6_I5IhlJH7aGhyxXFvUK-DWNmoudF8NAco9_h9iaGNj8q2ethFkMLs91kzk2PAcDTW9gb54h4FRWyuXpoQ"},
  {"kty":"EC","kid":"a3","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"},
  {"kty":"OKP","kid":"8037","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}
]})";

constexpr int64_t k_now = 1300819000;

void check(const JwtResult& r, const JwtPolicy& policy) {
  if (describe(r.error).empty()) __builtin_trap();
  if (r.kid.size() > 64) __builtin_trap();
  for (char c : r.kid) {
    if (c < 0x20 || c > 0x7e) __builtin_trap();
  }
  if (r.claims.has_value() != (r.error == JwtError::None)) __builtin_trap();
  if (!r.claims) return;
  if (r.claims->exp != 0 && r.claims->exp <= k_now - policy.leeway_s) __builtin_trap();
  for (const auto& [name, value] : r.claims->payload) {
    std::optional<std::string> text = r.claims->claim_string(name);
    if (text && (text->find('\r') != std::string::npos || text->find('\n') != std::string::npos)) {
      __builtin_trap();  // would split a forwarded header
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const JwtKeySet keys = [] {
    auto loaded = JwtKeySet::from_jwks(k_jwks);
    if (!std::holds_alternative<JwtKeySet>(loaded)) __builtin_trap();
    return std::get<JwtKeySet>(std::move(loaded));
  }();
  static const std::string hmac_key = base64url_decode(k_hmac_key_b64).value();
  static const JwtPolicy open_policy{};
  static const JwtPolicy strict_policy{.algorithms = {JwtAlg::HS256, JwtAlg::ES256},
                                       .issuer = "joe",
                                       .audiences = {"api"},
                                       .leeway_s = 30,
                                       .max_token_bytes = 4096};

  const std::string_view input(reinterpret_cast<const char*>(data), size);

  // 1. The bytes as a token.
  check(verify_jwt(input, keys, open_policy, k_now), open_policy);
  check(verify_jwt(input, keys, strict_policy, k_now), strict_policy);

  // 2. header '\n' payload, validly signed.
  const size_t newline = input.find('\n');
  const std::string_view header = input.substr(0, newline);
  const std::string_view payload =
      newline == std::string_view::npos ? std::string_view("{}") : input.substr(newline + 1);
  const std::string signing_input = base64url_encode(header) + "." + base64url_encode(payload);
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int mac_len = 0;
  HMAC(EVP_sha256(), hmac_key.data(), static_cast<int>(hmac_key.size()),
       reinterpret_cast<const unsigned char*>(signing_input.data()), signing_input.size(), mac,
       &mac_len);
  const std::string token =
      signing_input + "." +
      base64url_encode(std::string_view(reinterpret_cast<const char*>(mac), mac_len));
  check(verify_jwt(token, keys, open_policy, k_now), open_policy);
  check(verify_jwt(token, keys, strict_policy, k_now), strict_policy);

  // 3. A JWKS document.
  if (!input.empty() && input[0] == '{') {
    auto loaded = JwtKeySet::from_jwks(input);
    if (const auto* set = std::get_if<JwtKeySet>(&loaded)) {
      check(verify_jwt(token, *set, open_policy, k_now), open_policy);
    } else if (std::get<std::string>(loaded).empty()) {
      __builtin_trap();
    }
  }

  // The cache must hold whatever verified.
  static JwtCache cache(64, 300);
  if (JwtResult r = verify_jwt(token, keys, open_policy, k_now)) {
    cache.insert(token, std::move(*r.claims), k_now);
    // verify_jwt accepted it at k_now with no leeway, so exp (if any) is later: it must hit.
    if (cache.lookup(token, k_now) == nullptr || cache.size() > 64) __builtin_trap();
  }
  return 0;
}

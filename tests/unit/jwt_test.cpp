// JWT verification: RFC 7515 appendix A and RFC 8037 appendix A vectors, tokens minted here with
// OpenSSL EVP directly (not with sluice code) for the algorithms the RFCs lack, every rejection
// reason, key loading, claims and the cache.
#include "auth/jwt.h"

#include <gtest/gtest.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include <atomic>
#include <functional>
#include <set>
#include <thread>

#include "auth/base64url.h"

namespace sluice::auth {

// Failure messages name the error instead of printing its bytes.
void PrintTo(JwtError error, std::ostream* os) { *os << describe(error); }

namespace {

// --- independent minting helpers ---------------------------------------------------------------

// Base64url through OpenSSL's plain base64 encoder, so tokens do not depend on sluice's codec.
std::string b64(std::string_view bytes) {
  std::string out(4 * ((bytes.size() + 2) / 3) + 1, '\0');
  const int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                                reinterpret_cast<const unsigned char*>(bytes.data()),
                                static_cast<int>(bytes.size()));
  out.resize(static_cast<size_t>(n));
  while (!out.empty() && out.back() == '=') out.pop_back();
  for (char& c : out) {
    if (c == '+') c = '-';
    if (c == '/') c = '_';
  }
  return out;
}

struct PkeyFree {
  void operator()(EVP_PKEY* p) const { EVP_PKEY_free(p); }
};
using Pkey = std::unique_ptr<EVP_PKEY, PkeyFree>;

struct Keys {
  Pkey rsa = Pkey(EVP_PKEY_Q_keygen(nullptr, nullptr, "RSA", static_cast<size_t>(2048)));
  Pkey rsa2 = Pkey(EVP_PKEY_Q_keygen(nullptr, nullptr, "RSA", static_cast<size_t>(2048)));
  Pkey p256 = Pkey(EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256"));
  Pkey p384 = Pkey(EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-384"));
  Pkey ed25519 = Pkey(EVP_PKEY_Q_keygen(nullptr, nullptr, "ED25519"));
};

// Generated once: RSA key generation is the slow part of this file.
const Keys& keys() {
  static const Keys k;
  return k;
}

const EVP_MD* md_of(std::string_view alg) {
  if (alg.ends_with("384")) return EVP_sha384();
  if (alg.ends_with("512")) return EVP_sha512();
  return EVP_sha256();
}

std::string hmac(const EVP_MD* md, std::string_view key, std::string_view input) {
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  HMAC(md, key.data(), static_cast<int>(key.size()),
       reinterpret_cast<const unsigned char*>(input.data()), input.size(), out, &len);
  return std::string(reinterpret_cast<char*>(out), len);
}

// Signs with EVP_DigestSign: PKCS#1 v1.5 for RS*, PSS (salt `pss_salt`) for PS*, raw R||S for ES*,
// pure Ed25519 for EdDSA. `ecdsa_der` keeps OpenSSL's DER form (a wrong JWS encoding).
std::string sign(EVP_PKEY* pkey, std::string_view alg, std::string_view input,
                 int pss_salt = RSA_PSS_SALTLEN_DIGEST, bool ecdsa_der = false) {
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  EVP_PKEY_CTX* pctx = nullptr;
  const EVP_MD* md = alg == "EdDSA" ? nullptr : md_of(alg);
  EXPECT_EQ(EVP_DigestSignInit(ctx, &pctx, md, nullptr, pkey), 1);
  if (alg.starts_with("PS")) {
    EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING);
    EVP_PKEY_CTX_set_rsa_mgf1_md(pctx, md);
    EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, pss_salt);
  }
  size_t len = 0;
  const auto* in = reinterpret_cast<const unsigned char*>(input.data());
  EXPECT_EQ(EVP_DigestSign(ctx, nullptr, &len, in, input.size()), 1);
  std::string sig(len, '\0');
  EXPECT_EQ(
      EVP_DigestSign(ctx, reinterpret_cast<unsigned char*>(sig.data()), &len, in, input.size()), 1);
  sig.resize(len);
  EVP_MD_CTX_free(ctx);
  if (!alg.starts_with("ES") || ecdsa_der) return sig;
  const size_t half = alg == "ES256" ? 32 : 48;
  const auto* der = reinterpret_cast<const unsigned char*>(sig.data());
  ECDSA_SIG* ecdsa = d2i_ECDSA_SIG(nullptr, &der, static_cast<long>(sig.size()));
  std::string raw(2 * half, '\0');
  BN_bn2binpad(ECDSA_SIG_get0_r(ecdsa), reinterpret_cast<unsigned char*>(raw.data()),
               static_cast<int>(half));
  BN_bn2binpad(ECDSA_SIG_get0_s(ecdsa), reinterpret_cast<unsigned char*>(raw.data()) + half,
               static_cast<int>(half));
  ECDSA_SIG_free(ecdsa);
  return raw;
}

// header.payload.signature with `signer` called on the signing input.
std::string mint(std::string_view header, std::string_view payload,
                 const std::function<std::string(std::string_view)>& signer) {
  const std::string input = b64(header) + "." + b64(payload);
  return input + "." + b64(signer(input));
}

std::string mint_with(EVP_PKEY* pkey, std::string_view alg, std::string_view payload,
                      std::string_view kid = {}) {
  std::string header = R"({"alg":")" + std::string(alg) + "\"";
  if (!kid.empty()) header += R"(,"kid":")" + std::string(kid) + "\"";
  header += "}";
  return mint(header, payload, [&](std::string_view in) { return sign(pkey, alg, in); });
}

std::string public_pem(EVP_PKEY* pkey) {
  BIO* bio = BIO_new(BIO_s_mem());
  PEM_write_bio_PUBKEY(bio, pkey);
  char* data = nullptr;
  const long len = BIO_get_mem_data(bio, &data);
  std::string pem(data, static_cast<size_t>(len));
  BIO_free(bio);
  return pem;
}

std::string bn_param(EVP_PKEY* pkey, const char* name, int pad = 0) {
  BIGNUM* bn = nullptr;
  EXPECT_EQ(EVP_PKEY_get_bn_param(pkey, name, &bn), 1);
  std::string out(pad > 0 ? static_cast<size_t>(pad) : static_cast<size_t>(BN_num_bytes(bn)), '\0');
  if (pad > 0) {
    BN_bn2binpad(bn, reinterpret_cast<unsigned char*>(out.data()), pad);
  } else {
    BN_bn2bin(bn, reinterpret_cast<unsigned char*>(out.data()));
  }
  BN_free(bn);
  return out;
}

// The public JWK of `pkey`, built from its public parts; extra members appended as given.
std::string jwk(EVP_PKEY* pkey, std::string_view kid, std::string_view extra = {}) {
  std::string out = "{";
  if (EVP_PKEY_is_a(pkey, "RSA")) {
    out += R"("kty":"RSA","n":")" + b64(bn_param(pkey, OSSL_PKEY_PARAM_RSA_N)) + R"(","e":")" +
           b64(bn_param(pkey, OSSL_PKEY_PARAM_RSA_E)) + "\"";
  } else if (EVP_PKEY_is_a(pkey, "EC")) {
    const int size = EVP_PKEY_get_bits(pkey) == 256 ? 32 : 48;
    out += R"("kty":"EC","crv":")" + std::string(size == 32 ? "P-256" : "P-384") + R"(","x":")" +
           b64(bn_param(pkey, OSSL_PKEY_PARAM_EC_PUB_X, size)) + R"(","y":")" +
           b64(bn_param(pkey, OSSL_PKEY_PARAM_EC_PUB_Y, size)) + "\"";
  } else {
    unsigned char raw[32];
    size_t len = sizeof raw;
    EVP_PKEY_get_raw_public_key(pkey, raw, &len);
    out += R"("kty":"OKP","crv":"Ed25519","x":")" +
           b64(std::string_view(reinterpret_cast<char*>(raw), len)) + "\"";
  }
  if (!kid.empty()) out += R"(,"kid":")" + std::string(kid) + "\"";
  if (!extra.empty()) out += "," + std::string(extra);
  return out + "}";
}

JwtKeySet must_load(std::variant<JwtKeySet, std::string> loaded) {
  if (auto* error = std::get_if<std::string>(&loaded)) {
    ADD_FAILURE() << "key set did not load: " << *error;
    return JwtKeySet();
  }
  return std::get<JwtKeySet>(std::move(loaded));
}

std::string load_error(const std::variant<JwtKeySet, std::string>& loaded) {
  const auto* error = std::get_if<std::string>(&loaded);
  return error != nullptr ? *error : std::string();
}

constexpr int64_t k_now = 1'700'000'000;
const std::string k_secret = "0123456789abcdef0123456789abcdef";  // 32 bytes: HS256 only

std::string hs256(std::string_view payload, std::string_view header = R"({"alg":"HS256"})") {
  return mint(header, payload,
              [](std::string_view in) { return hmac(EVP_sha256(), k_secret, in); });
}

JwtResult verify_hs(std::string_view token, const JwtPolicy& policy = {}, int64_t now = k_now) {
  static const JwtKeySet secret_keys = must_load(JwtKeySet::from_secret(k_secret));
  return verify_jwt(token, secret_keys, policy, now);
}

// --- RFC vectors -------------------------------------------------------------------------------

// RFC 7515 A.1 / A.2 / A.3 share this payload: {"iss":"joe",\r\n "exp":1300819380,\r\n
// "http://example.com/is_root":true}
constexpr std::string_view k_rfc_payload =
    "eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlf"
    "Q";
constexpr int64_t k_rfc_exp = 1300819380;
constexpr int64_t k_rfc_now = 1300819000;

const std::string k_rfc_a1 = "eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9." +
                             std::string(k_rfc_payload) +
                             ".dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
const std::string k_rfc_a2 =
    "eyJhbGciOiJSUzI1NiJ9." + std::string(k_rfc_payload) +
    ".cC4hiUPoj9Eetdgtv3hF80EGrhuB__dzERat0XF9g2VtQgr9PJbu3XOiZj5RZmh7AAuHIm4Bh-0Qc_lF5YKt_O8W2Fp5"
    "jujGbds9uJdbF9CUAr7t1dnZcAcQjbKBYNX4BAynRFdiuB--f_nZLgrnbyTyWzO75vRK5h6xBArLIARNPvkSjtQBMHlb1"
    "L07Qe7K0GarZRmB_eSN9383LcOLn6_dO--xi12jzDwusC-eOkHWEsqtFZESc6BfI7noOPqvhJ1phCnvWh6IeYI2w9QOYE"
    "UipUTI8np6LbgGY9Fs98rqVt5AXLIhWkWywlVmtVrBp0igcN_IoypGlUPQGe77Rw";
const std::string k_rfc_a3 =
    "eyJhbGciOiJFUzI1NiJ9." + std::string(k_rfc_payload) +
    ".DtEhU3ljbEg8L38VWAfUAqOyKAM6-Xx-F4GawxaepmXFCgfTjDxw5djxLa8ISlSApmWQxfKTUJqPP3-Kg6NU1Q";
// RFC 8037 A.4: the payload is the text "Example of Ed25519 signing", not a JSON object.
constexpr std::string_view k_rfc8037_a4 =
    "eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc."
    "hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg";

// The public JWKs of RFC 7515 A.1 (oct), A.2 (RSA), A.3 (EC) and RFC 8037 A.1 (OKP) in one set.
constexpr std::string_view k_rfc_jwks = R"({"keys":[
  {"kty":"oct","kid":"a1",
   "k":"AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow"},
  {"kty":"RSA","kid":"a2","e":"AQAB",
   "n":"ofgWCuLjybRlzo0tZWJjNiuSfb4p4fAkd_wWJcyQoTbji9k0l8W26mPddxHmfHQp-Vaw-4qPCJrcS2mJPMEzP1Pt0Bm4d4QlL-yRT-SFd2lZS-pCgNMsD1W_YpRPEwOWvG6b32690r2jZ47soMZo9wGzjb_7OMg0LOL-bSf63kpaSHSXndS5z5rexMdbBYUsLA9e-KXBdQOS-UTo7WTBEMa2R2CapHg665xsmtdVMTBQY4uDZlxvb3qCo5ZwKh9kG4LT6_I5IhlJH7aGhyxXFvUK-DWNmoudF8NAco9_h9iaGNj8q2ethFkMLs91kzk2PAcDTW9gb54h4FRWyuXpoQ"},
  {"kty":"EC","kid":"a3","crv":"P-256",
   "x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"},
  {"kty":"OKP","kid":"8037","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}
]})";

const JwtKeySet& rfc_keys() {
  static const JwtKeySet k = must_load(JwtKeySet::from_jwks(k_rfc_jwks));
  return k;
}

void expect_rfc_claims(const JwtResult& r) {
  ASSERT_TRUE(r) << describe(r.error);
  EXPECT_EQ(r.claims->exp, k_rfc_exp);
  EXPECT_EQ(r.claims->claim_string("iss"), "joe");
  EXPECT_EQ(r.claims->claim_string("http://example.com/is_root"), "true");
}

TEST(JwtRfcVectors, Rfc7515A1Hs256Verifies) {
  expect_rfc_claims(verify_jwt(k_rfc_a1, rfc_keys(), {}, k_rfc_now));
}

TEST(JwtRfcVectors, Rfc7515A2Rs256Verifies) {
  expect_rfc_claims(verify_jwt(k_rfc_a2, rfc_keys(), {}, k_rfc_now));
}

TEST(JwtRfcVectors, Rfc7515A3Es256Verifies) {
  expect_rfc_claims(verify_jwt(k_rfc_a3, rfc_keys(), {}, k_rfc_now));
}

TEST(JwtRfcVectors, Rfc8037A4EdDsaSignatureVerifiesButPayloadIsNoClaimSet) {
  // The payload is parsed only after the signature holds: BadJson proves the signature passed.
  EXPECT_EQ(verify_jwt(k_rfc8037_a4, rfc_keys(), {}, k_rfc_now).error, JwtError::BadJson);
  std::string tampered(k_rfc8037_a4);
  tampered[tampered.size() - 3] = tampered[tampered.size() - 3] == 'A' ? 'B' : 'A';
  EXPECT_EQ(verify_jwt(tampered, rfc_keys(), {}, k_rfc_now).error, JwtError::BadSignature);
}

TEST(JwtRfcVectors, Rfc7515A1IsExpiredExactlyAtExp) {
  EXPECT_TRUE(verify_jwt(k_rfc_a1, rfc_keys(), {}, k_rfc_exp - 1));
  EXPECT_EQ(verify_jwt(k_rfc_a1, rfc_keys(), {}, k_rfc_exp).error, JwtError::Expired);
  JwtPolicy lenient{.leeway_s = 30};
  EXPECT_TRUE(verify_jwt(k_rfc_a1, rfc_keys(), lenient, k_rfc_exp + 29));
  EXPECT_EQ(verify_jwt(k_rfc_a1, rfc_keys(), lenient, k_rfc_exp + 30).error, JwtError::Expired);
}

TEST(JwtRfcVectors, RfcKeysSelectedByKidToo) {
  // The RFC tokens carry no kid: check kid selection on the signature alone. Every key here has a
  // kid, so an unknown kid does not fall back to any of them.
  EXPECT_EQ(rfc_keys().size(), 4u);
  EXPECT_EQ(rfc_keys().verify_signature(JwtAlg::ES256, "a2", "x", "y"), JwtError::KeyMismatch);
  EXPECT_EQ(rfc_keys().verify_signature(JwtAlg::ES256, "zz", "x", "y"), JwtError::UnknownKey);
  const size_t dot = k_rfc_a3.rfind('.');
  const auto sig = base64url_decode(std::string_view(k_rfc_a3).substr(dot + 1));
  ASSERT_TRUE(sig);
  EXPECT_EQ(rfc_keys().verify_signature(JwtAlg::ES256, "a3", k_rfc_a3.substr(0, dot), *sig),
            JwtError::None);
}

// --- minted tokens for every other algorithm ---------------------------------------------------

constexpr std::string_view k_payload = R"({"sub":"alice","exp":1700000600,"iss":"https://idp"})";

TEST(JwtMinted, Hs384AndHs512WithA64ByteSecret) {
  const std::string secret(64, 'k');
  const JwtKeySet set = must_load(JwtKeySet::from_secret(secret));
  for (std::string_view alg : {"HS256", "HS384", "HS512"}) {
    SCOPED_TRACE(alg);
    const std::string token =
        mint(R"({"alg":")" + std::string(alg) + R"(","typ":"JWT"})", k_payload,
             [&](std::string_view in) { return hmac(md_of(alg), secret, in); });
    const JwtResult r = verify_jwt(token, set, {}, k_now);
    ASSERT_TRUE(r) << describe(r.error);
    EXPECT_EQ(r.claims->subject, "alice");
  }
}

TEST(JwtMinted, RsaPkcs1AndPssFromJwksAndPem) {
  const JwtKeySet from_jwks =
      must_load(JwtKeySet::from_jwks(R"({"keys":[)" + jwk(keys().rsa.get(), "r1") + "]}"));
  const JwtKeySet from_pem = must_load(JwtKeySet::from_pem(public_pem(keys().rsa.get())));
  for (std::string_view alg : {"RS256", "RS384", "RS512", "PS256"}) {
    SCOPED_TRACE(alg);
    const std::string token = mint_with(keys().rsa.get(), alg, k_payload);
    EXPECT_TRUE(verify_jwt(token, from_jwks, {}, k_now));
    EXPECT_TRUE(verify_jwt(token, from_pem, {}, k_now));
    const std::string other = mint_with(keys().rsa2.get(), alg, k_payload);
    EXPECT_EQ(verify_jwt(other, from_pem, {}, k_now).error, JwtError::BadSignature);
  }
}

TEST(JwtMinted, EcdsaP256AndP384FromJwksAndPem) {
  for (auto [pkey, alg] : {std::pair{keys().p256.get(), "ES256"}, {keys().p384.get(), "ES384"}}) {
    SCOPED_TRACE(alg);
    const JwtKeySet from_jwks = must_load(JwtKeySet::from_jwks(jwk(pkey, "e1")));
    const JwtKeySet from_pem = must_load(JwtKeySet::from_pem(public_pem(pkey)));
    const std::string token = mint_with(pkey, alg, k_payload, "e1");
    EXPECT_TRUE(verify_jwt(token, from_jwks, {}, k_now));
    EXPECT_TRUE(verify_jwt(token, from_pem, {}, k_now));
  }
}

TEST(JwtMinted, Ed25519FromJwksAndPem) {
  const JwtKeySet from_jwks =
      must_load(JwtKeySet::from_jwks(R"({"keys":[)" + jwk(keys().ed25519.get(), "ed") + "]}"));
  const JwtKeySet from_pem = must_load(JwtKeySet::from_pem(public_pem(keys().ed25519.get())));
  const std::string token = mint_with(keys().ed25519.get(), "EdDSA", k_payload);
  EXPECT_TRUE(verify_jwt(token, from_jwks, {}, k_now));
  EXPECT_TRUE(verify_jwt(token, from_pem, {}, k_now));
}

TEST(JwtMinted, CertificatePemGivesItsPublicKey) {
  X509* cert = X509_new();
  X509_set_version(cert, 2);
  ASN1_INTEGER_set(X509_get_serialNumber(cert), 1);
  X509_gmtime_adj(X509_getm_notBefore(cert), 0);
  X509_gmtime_adj(X509_getm_notAfter(cert), 3600);
  X509_set_pubkey(cert, keys().p256.get());
  X509_sign(cert, keys().p256.get(), EVP_sha256());
  BIO* bio = BIO_new(BIO_s_mem());
  PEM_write_bio_X509(bio, cert);
  char* data = nullptr;
  const long len = BIO_get_mem_data(bio, &data);
  const std::string pem(data, static_cast<size_t>(len));
  BIO_free(bio);
  X509_free(cert);
  const JwtKeySet set = must_load(JwtKeySet::from_pem(pem));
  EXPECT_TRUE(verify_jwt(mint_with(keys().p256.get(), "ES256", k_payload), set, {}, k_now));
}

TEST(JwtMinted, TokenWithoutKidTriesEveryKeyOfTheKind) {
  const JwtKeySet set = must_load(JwtKeySet::from_jwks(
      R"({"keys":[)" + jwk(keys().rsa.get(), "one") + "," + jwk(keys().rsa2.get(), "two") + "]}"));
  EXPECT_TRUE(verify_jwt(mint_with(keys().rsa2.get(), "RS256", k_payload), set, {}, k_now));
  const JwtResult r =
      verify_jwt(mint_with(keys().rsa2.get(), "RS256", k_payload, "two"), set, {}, k_now);
  EXPECT_TRUE(r);
  EXPECT_EQ(r.kid, "two");
  // The kid selects one key: the right signature under the other key's kid fails.
  EXPECT_EQ(
      verify_jwt(mint_with(keys().rsa2.get(), "RS256", k_payload, "one"), set, {}, k_now).error,
      JwtError::BadSignature);
}

TEST(JwtMinted, KidIsIgnoredByAKeySetWithoutKids) {
  const JwtKeySet set = must_load(JwtKeySet::from_pem(public_pem(keys().rsa.get())));
  EXPECT_TRUE(
      verify_jwt(mint_with(keys().rsa.get(), "RS256", k_payload, "rotated-2024"), set, {}, k_now));
}

// --- rejections ----------------------------------------------------------------------------------

TEST(JwtReject, ExpiredTokenIsRejected) {
  EXPECT_EQ(verify_hs(hs256(R"({"exp":1699999999})")).error, JwtError::Expired);
  EXPECT_EQ(verify_hs(hs256(R"({"exp":1700000000})")).error, JwtError::Expired);
  EXPECT_TRUE(verify_hs(hs256(R"({"exp":1700000001})")));
  EXPECT_TRUE(verify_hs(hs256(R"({"exp":1699999999})"), {.leeway_s = 5}));
  // A fractional NumericDate is rounded toward rejection.
  EXPECT_EQ(verify_hs(hs256(R"({"exp":1700000000.5})")).error, JwtError::Expired);
  EXPECT_TRUE(verify_hs(hs256(R"({"exp":1700000001.5})")));
}

TEST(JwtReject, NotYetValidTokenIsRejected) {
  EXPECT_EQ(verify_hs(hs256(R"({"nbf":1700000001})")).error, JwtError::NotYetValid);
  EXPECT_TRUE(verify_hs(hs256(R"({"nbf":1700000000})")));
  EXPECT_TRUE(verify_hs(hs256(R"({"nbf":1700000030})"), {.leeway_s = 30}));
  EXPECT_EQ(verify_hs(hs256(R"({"nbf":1700000031})"), {.leeway_s = 30}).error,
            JwtError::NotYetValid);
}

TEST(JwtReject, NonNumericExpOrNbfIsRejected) {
  EXPECT_EQ(verify_hs(hs256(R"({"exp":"tomorrow"})")).error, JwtError::BadClaim);
  EXPECT_EQ(verify_hs(hs256(R"({"nbf":true})")).error, JwtError::BadClaim);
  EXPECT_EQ(verify_hs(hs256(R"({"exp":1e400})")).error, JwtError::BadClaim);
  EXPECT_TRUE(verify_hs(hs256(R"({"exp":18446744073709551615})")));  // saturates, far future
}

TEST(JwtReject, WrongIssuerIsRejected) {
  const JwtPolicy policy{.issuer = "https://idp"};
  EXPECT_TRUE(verify_hs(hs256(R"({"iss":"https://idp"})"), policy));
  EXPECT_EQ(verify_hs(hs256(R"({"iss":"https://evil"})"), policy).error, JwtError::WrongIssuer);
  EXPECT_EQ(verify_hs(hs256(R"({"iss":"https://idp/"})"), policy).error, JwtError::WrongIssuer);
  EXPECT_EQ(verify_hs(hs256(R"({"sub":"x"})"), policy).error, JwtError::WrongIssuer);
  EXPECT_EQ(verify_hs(hs256(R"({"iss":["https://idp"]})"), policy).error, JwtError::WrongIssuer);
}

TEST(JwtReject, WrongAudienceIsRejected) {
  const JwtPolicy policy{.audiences = {"api", "admin"}};
  EXPECT_TRUE(verify_hs(hs256(R"({"aud":"api"})"), policy));
  EXPECT_TRUE(verify_hs(hs256(R"({"aud":["web","admin"]})"), policy));
  EXPECT_EQ(verify_hs(hs256(R"({"aud":"web"})"), policy).error, JwtError::WrongAudience);
  EXPECT_EQ(verify_hs(hs256(R"({"aud":["web",1]})"), policy).error, JwtError::WrongAudience);
  EXPECT_EQ(verify_hs(hs256(R"({"aud":[]})"), policy).error, JwtError::WrongAudience);
  EXPECT_EQ(verify_hs(hs256(R"({"sub":"x"})"), policy).error, JwtError::WrongAudience);
  EXPECT_TRUE(verify_hs(hs256(R"({"aud":"anything"})")));  // not checked when none configured
}

TEST(JwtReject, BadSignatureIsRejected) {
  const std::string token = hs256(R"({"sub":"alice"})");
  // Tampered payload, same signature.
  const size_t dot1 = token.find('.'), dot2 = token.rfind('.');
  const std::string forged =
      token.substr(0, dot1 + 1) + b64(R"({"sub":"admin"})") + token.substr(dot2);
  EXPECT_EQ(verify_hs(forged).error, JwtError::BadSignature);
  // Signed with another secret.
  const std::string other =
      mint(R"({"alg":"HS256"})", R"({"sub":"alice"})", [](std::string_view in) {
        return hmac(EVP_sha256(), "another-secret-another-secret-xx", in);
      });
  EXPECT_EQ(verify_hs(other).error, JwtError::BadSignature);
  // Truncated and empty signatures.
  EXPECT_EQ(verify_hs(token.substr(0, token.size() - 3)).error, JwtError::BadSignature);
  EXPECT_EQ(verify_hs(token.substr(0, dot2 + 1)).error, JwtError::BadSignature);
}

TEST(JwtReject, EcdsaSignatureInDerFormIsRejected) {
  const JwtKeySet set = must_load(JwtKeySet::from_pem(public_pem(keys().p256.get())));
  const std::string token = mint(R"({"alg":"ES256"})", k_payload, [](std::string_view in) {
    return sign(keys().p256.get(), "ES256", in, 0, /*ecdsa_der=*/true);
  });
  EXPECT_EQ(verify_jwt(token, set, {}, k_now).error, JwtError::BadSignature);
}

TEST(JwtReject, Ps256NeedsPssWithDigestLengthSalt) {
  const JwtKeySet set = must_load(JwtKeySet::from_pem(public_pem(keys().rsa.get())));
  const std::string pkcs1 = mint(R"({"alg":"PS256"})", k_payload, [](std::string_view in) {
    return sign(keys().rsa.get(), "RS256", in);
  });
  EXPECT_EQ(verify_jwt(pkcs1, set, {}, k_now).error, JwtError::BadSignature);
  EXPECT_EQ(ERR_peek_error(), 0u);  // failed checks leave OpenSSL's thread error queue empty
  const std::string no_salt = mint(R"({"alg":"PS256"})", k_payload, [](std::string_view in) {
    return sign(keys().rsa.get(), "PS256", in, /*pss_salt=*/0);
  });
  EXPECT_EQ(verify_jwt(no_salt, set, {}, k_now).error, JwtError::BadSignature);
}

TEST(JwtReject, UnknownKidIsRejected) {
  const JwtKeySet set = must_load(JwtKeySet::from_jwks(
      R"({"keys":[)" + jwk(keys().rsa.get(), "one") + "," + jwk(keys().rsa2.get(), "two") + "]}"));
  const JwtResult r =
      verify_jwt(mint_with(keys().rsa.get(), "RS256", k_payload, "three"), set, {}, k_now);
  EXPECT_EQ(r.error, JwtError::UnknownKey);
  EXPECT_EQ(r.kid, "three");
}

TEST(JwtReject, LoggedKidIsBoundedAndPrintable) {
  const std::string long_kid(200, 'k');
  JwtResult r = verify_hs(hs256("{}", R"({"alg":"HS256","kid":")" + long_kid + "\"}"));
  EXPECT_EQ(r.kid, std::string(64, 'k'));
  r = verify_hs(hs256("{}", R"({"alg":"RS256","kid":"a\r\nb\u00e9"})"));
  EXPECT_EQ(r.error, JwtError::KeyMismatch);
  EXPECT_EQ(r.kid, "a??b??");
}

TEST(JwtReject, AlgNoneIsAlwaysRejected) {
  for (std::string_view none : {"none", "None", "NONE", "nOnE"}) {
    SCOPED_TRACE(none);
    const std::string header = R"({"alg":")" + std::string(none) + R"("})";
    const std::string unsigned_token = b64(header) + "." + b64(R"({"sub":"admin"})") + ".";
    EXPECT_EQ(verify_hs(unsigned_token).error, JwtError::AlgNone);
    // Even with a signature, and whatever the allow-list says.
    EXPECT_EQ(verify_hs(hs256(R"({"sub":"admin"})", header), {.algorithms = {JwtAlg::HS256}}).error,
              JwtError::AlgNone);
  }
  EXPECT_FALSE(parse_jwt_alg("none"));
  EXPECT_FALSE(parse_jwt_alg("NONE"));
}

TEST(JwtReject, AlgNotInAllowListIsRejected) {
  const JwtPolicy rs_only{.algorithms = {JwtAlg::RS256}};
  EXPECT_EQ(verify_hs(hs256("{}"), rs_only).error, JwtError::AlgNotAllowed);
  EXPECT_TRUE(verify_hs(hs256("{}"), {.algorithms = {JwtAlg::RS256, JwtAlg::HS256}}));
  // Unknown or differently-cased names are no algorithm at all.
  for (std::string_view alg : {"HS1", "hs256", "ES512", "PS384", ""}) {
    SCOPED_TRACE(alg);
    EXPECT_EQ(verify_hs(hs256("{}", R"({"alg":")" + std::string(alg) + R"("})")).error,
              JwtError::AlgNotAllowed);
  }
}

TEST(JwtReject, HmacSignedWithTheRsaPublicKeyNeverPasses) {
  // The classic confusion attack: the attacker knows the PEM, signs HS256 with its bytes.
  const std::string pem = public_pem(keys().rsa.get());
  const JwtKeySet set = must_load(JwtKeySet::from_pem(pem));
  const auto forge = [&](std::string_view key_bytes) {
    return mint(R"({"alg":"HS256"})", R"({"sub":"admin"})",
                [&](std::string_view in) { return hmac(EVP_sha256(), key_bytes, in); });
  };
  EXPECT_EQ(verify_jwt(forge(pem), set, {}, k_now).error, JwtError::KeyMismatch);
  EXPECT_EQ(verify_jwt(forge(pem), set, {.algorithms = {JwtAlg::RS256}}, k_now).error,
            JwtError::AlgNotAllowed);
  EXPECT_EQ(
      verify_jwt(forge(pem), set, {.algorithms = {JwtAlg::RS256, JwtAlg::HS256}}, k_now).error,
      JwtError::KeyMismatch);
  // Same with a JWKS: neither the JWK text nor the modulus becomes an HMAC key.
  const std::string jwks = R"({"keys":[)" + jwk(keys().rsa.get(), "r") + "]}";
  const JwtKeySet jwks_set = must_load(JwtKeySet::from_jwks(jwks));
  EXPECT_EQ(verify_jwt(forge(jwks), jwks_set, {}, k_now).error, JwtError::KeyMismatch);
  EXPECT_EQ(
      verify_jwt(forge(bn_param(keys().rsa.get(), OSSL_PKEY_PARAM_RSA_N)), jwks_set, {}, k_now)
          .error,
      JwtError::KeyMismatch);
  EXPECT_FALSE(set.can_verify(JwtAlg::HS256));
  EXPECT_TRUE(set.can_verify(JwtAlg::PS256));
}

TEST(JwtReject, KeyOfTheWrongKindOrCurveOrPinIsAMismatch) {
  const JwtKeySet p384 = must_load(JwtKeySet::from_pem(public_pem(keys().p384.get())));
  EXPECT_EQ(verify_jwt(mint_with(keys().p256.get(), "ES256", k_payload), p384, {}, k_now).error,
            JwtError::KeyMismatch);
  const JwtKeySet pinned = must_load(
      JwtKeySet::from_jwks(R"({"keys":[)" + jwk(keys().rsa.get(), "r", R"("alg":"RS512")") + "]}"));
  EXPECT_EQ(verify_jwt(mint_with(keys().rsa.get(), "RS256", k_payload), pinned, {}, k_now).error,
            JwtError::KeyMismatch);
  EXPECT_TRUE(verify_jwt(mint_with(keys().rsa.get(), "RS512", k_payload), pinned, {}, k_now));
  // A 32-byte secret is too short for HS512 (RFC 7518 3.2).
  const std::string hs512 = mint(R"({"alg":"HS512"})", "{}", [](std::string_view in) {
    return hmac(EVP_sha512(), k_secret, in);
  });
  EXPECT_EQ(verify_hs(hs512).error, JwtError::KeyMismatch);
  EXPECT_EQ(verify_jwt(hs256("{}"), JwtKeySet(), {}, k_now).error, JwtError::KeyMismatch);
}

TEST(JwtReject, MalformedBase64IsRejected) {
  const std::string token = hs256(R"({"sub":"alice"})");
  const size_t dot1 = token.find('.'), dot2 = token.rfind('.');
  EXPECT_EQ(verify_hs(token + "=").error, JwtError::BadBase64);
  EXPECT_EQ(verify_hs(token.substr(0, dot1) + "=" + token.substr(dot1)).error, JwtError::BadBase64);
  EXPECT_EQ(verify_hs(token.substr(0, dot2) + "+" + token.substr(dot2)).error, JwtError::BadBase64);
  EXPECT_EQ(verify_hs(token.substr(0, dot2 + 1) + "ab/c" + token.substr(dot2 + 5)).error,
            JwtError::BadBase64);
  EXPECT_EQ(verify_hs(" " + token).error, JwtError::BadBase64);
  // RFC 7515 A.1's signature ends in 'k' (low bits 00): 'l' decodes the same bytes non-canonically.
  std::string a1 = k_rfc_a1;
  a1.back() = 'l';
  EXPECT_EQ(verify_jwt(a1, rfc_keys(), {}, k_rfc_now).error, JwtError::BadBase64);
}

TEST(JwtReject, MalformedJsonIsRejected) {
  EXPECT_EQ(verify_hs(b64("not json") + "." + b64("{}") + ".").error, JwtError::BadJson);
  EXPECT_EQ(verify_hs(b64(R"(["alg","HS256"])") + "." + b64("{}") + ".").error, JwtError::BadJson);
  EXPECT_EQ(verify_hs(b64(R"({"alg":"HS256")") + "." + b64("{}") + ".").error, JwtError::BadJson);
  // A correctly signed payload that is not a JSON object.
  EXPECT_EQ(verify_hs(hs256("not json")).error, JwtError::BadJson);
  EXPECT_EQ(verify_hs(hs256(R"(["sub"])")).error, JwtError::BadJson);
  EXPECT_EQ(verify_hs(hs256(R"({"sub":"a",})")).error, JwtError::BadJson);
}

TEST(JwtReject, MalformedStructureIsRejected) {
  EXPECT_EQ(verify_hs("").error, JwtError::Malformed);
  EXPECT_EQ(verify_hs("abc").error, JwtError::Malformed);
  EXPECT_EQ(verify_hs("abc.def").error, JwtError::Malformed);
  EXPECT_EQ(verify_hs(hs256("{}") + ".e30").error, JwtError::Malformed);
  EXPECT_EQ(verify_hs(hs256("{}", R"({"typ":"JWT"})")).error, JwtError::Malformed);
  EXPECT_EQ(verify_hs(hs256("{}", R"({"alg":256})")).error, JwtError::Malformed);
  EXPECT_EQ(verify_hs(hs256("{}", R"({"alg":"HS256","kid":7})")).error, JwtError::Malformed);
  EXPECT_EQ(verify_hs(hs256("{}", R"({"alg":"HS256","crit":["exp"],"exp":1})")).error,
            JwtError::UnsupportedCritical);
}

TEST(JwtReject, OversizedTokenIsRejectedBeforeDecoding) {
  const std::string token = hs256(R"({"sub":"alice"})");
  EXPECT_EQ(verify_hs(token, {.max_token_bytes = token.size() - 1}).error, JwtError::TooLarge);
  EXPECT_TRUE(verify_hs(token, {.max_token_bytes = token.size()}));
  EXPECT_EQ(verify_hs(std::string(9000, '%')).error, JwtError::TooLarge);
}

TEST(JwtReject, DescriptionsAreShortAndDistinct) {
  std::set<std::string_view> seen;
  for (int e = static_cast<int>(JwtError::None); e <= static_cast<int>(JwtError::WrongAudience);
       ++e) {
    const std::string_view text = describe(static_cast<JwtError>(e));
    EXPECT_FALSE(text.empty());
    EXPECT_LT(text.size(), 60u);
    EXPECT_TRUE(seen.insert(text).second) << text;
  }
}

// --- key loading ---------------------------------------------------------------------------------

TEST(JwtKeys, ShortSecretIsRefusedWithoutQuotingIt) {
  const std::string error = load_error(JwtKeySet::from_secret("hunter2"));
  EXPECT_NE(error, "");
  EXPECT_EQ(error.find("hunter2"), std::string::npos);
  const std::string jwks_error =
      load_error(JwtKeySet::from_jwks(R"({"keys":[{"kty":"oct","k":")" + b64("hunter2") + "\"}]}"));
  EXPECT_NE(jwks_error, "");
  EXPECT_EQ(jwks_error.find(b64("hunter2")), std::string::npos);
}

TEST(JwtKeys, PemErrors) {
  EXPECT_NE(load_error(JwtKeySet::from_pem("not a pem")), "");
  BIO* bio = BIO_new(BIO_s_mem());
  PEM_write_bio_PrivateKey(bio, keys().p256.get(), nullptr, nullptr, 0, nullptr, nullptr);
  char* data = nullptr;
  const long len = BIO_get_mem_data(bio, &data);
  const std::string private_pem(data, static_cast<size_t>(len));
  BIO_free(bio);
  EXPECT_NE(load_error(JwtKeySet::from_pem(private_pem)).find("private"), std::string::npos);
  Pkey small(EVP_PKEY_Q_keygen(nullptr, nullptr, "RSA", static_cast<size_t>(1024)));
  EXPECT_NE(load_error(JwtKeySet::from_pem(public_pem(small.get()))).find("1024"),
            std::string::npos);
}

TEST(JwtKeys, JwksErrors) {
  EXPECT_NE(load_error(JwtKeySet::from_jwks("{")), "");
  EXPECT_NE(load_error(JwtKeySet::from_jwks("[]")), "");
  EXPECT_NE(load_error(JwtKeySet::from_jwks(R"({"keys":{}})")), "");
  EXPECT_NE(load_error(JwtKeySet::from_jwks(R"({"keys":[]})")), "");
  EXPECT_NE(load_error(JwtKeySet::from_jwks(R"({"keys":[{"kty":"RSA","e":"AQAB"}]})")), "");
  // Private key material, an off-curve point, a truncated coordinate.
  EXPECT_NE(
      load_error(JwtKeySet::from_jwks(jwk(keys().rsa.get(), "r", R"("d":"AQAB")"))).find("private"),
      std::string::npos);
  const std::string x = b64(bn_param(keys().p256.get(), OSSL_PKEY_PARAM_EC_PUB_X, 32));
  EXPECT_NE(load_error(JwtKeySet::from_jwks(R"({"kty":"EC","crv":"P-256","x":")" + x +
                                            R"(","y":")" + x + "\"}")),
            "");
  EXPECT_NE(load_error(JwtKeySet::from_jwks(R"({"kty":"EC","crv":"P-256","x":"AQAB","y":"AQAB"})")),
            "");
  // Only unusable keys: encryption use, unsupported curve, unsupported alg.
  EXPECT_NE(
      load_error(JwtKeySet::from_jwks(
          R"({"keys":[)" + jwk(keys().rsa.get(), "enc", R"("use":"enc")") + "," +
          jwk(keys().rsa.get(), "oaep", R"("alg":"RSA-OAEP")") +
          R"(,{"kty":"EC","crv":"P-521","x":"AQ","y":"AQ"},{"kty":"OKP","crv":"X25519","x":"AQ"}]})")),
      "");
}

TEST(JwtKeys, UnusableKeysAreSkippedNextToUsableOnes) {
  const JwtKeySet set = must_load(JwtKeySet::from_jwks(
      R"({"keys":[)" + jwk(keys().rsa2.get(), "enc", R"("use":"enc")") +
      R"(,{"kty":"EC","crv":"P-521","x":"AQ","y":"AQ"},)" +
      jwk(keys().rsa.get(), "sig", R"("use":"sig","key_ops":["verify"])") + "]}"));
  EXPECT_EQ(set.size(), 1u);
  EXPECT_TRUE(verify_jwt(mint_with(keys().rsa.get(), "RS256", k_payload), set, {}, k_now));
  EXPECT_EQ(
      verify_jwt(mint_with(keys().rsa2.get(), "RS256", k_payload, "enc"), set, {}, k_now).error,
      JwtError::UnknownKey);
}

// --- claims --------------------------------------------------------------------------------------

TEST(JwtClaimsTest, SubjectScopesAndForwardableStrings) {
  const JwtResult r = verify_hs(hs256(
      R"({"sub":"alice","scope":"products:read  orders:write","n":42,"b":false,"arr":["a","b"],)"
      R"("obj":{"k":1},"nul":null,"crlf":"x\r\nInjected: 1","utf8":"caf\u00e9","exp":1700000600})"));
  ASSERT_TRUE(r);
  const JwtClaims& c = *r.claims;
  EXPECT_EQ(c.subject, "alice");
  EXPECT_EQ(c.scopes, (std::vector<std::string>{"products:read", "orders:write"}));
  EXPECT_EQ(c.exp, 1700000600);
  EXPECT_EQ(c.claim_string("sub"), "alice");
  EXPECT_EQ(c.claim_string("n"), "42");
  EXPECT_EQ(c.claim_string("b"), "false");
  EXPECT_EQ(c.claim_string("arr"), R"(["a","b"])");
  EXPECT_EQ(c.claim_string("obj"), R"({"k":1})");
  EXPECT_EQ(c.claim_string("utf8"), "caf\xc3\xa9");
  EXPECT_EQ(c.claim_string("nul"), std::nullopt);
  EXPECT_EQ(c.claim_string("crlf"), std::nullopt);
  EXPECT_EQ(c.claim_string("missing"), std::nullopt);
}

TEST(JwtClaimsTest, ScpAsArrayOrString) {
  JwtResult r = verify_hs(hs256(R"({"scp":["a","","b"]})"));
  ASSERT_TRUE(r);
  EXPECT_EQ(r.claims->scopes, (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(r.claims->exp, 0);
  EXPECT_EQ(r.claims->subject, "");
  r = verify_hs(hs256(R"({"scp":"x y","sub":7})"));
  ASSERT_TRUE(r);
  EXPECT_EQ(r.claims->scopes, (std::vector<std::string>{"x", "y"}));
  EXPECT_EQ(r.claims->subject, "");
}

// --- cache ---------------------------------------------------------------------------------------

JwtClaims claims_with_exp(int64_t exp) {
  JwtClaims c;
  c.exp = exp;
  c.subject = "s" + std::to_string(exp);
  return c;
}

TEST(JwtCacheTest, HitBeforeExpMissAtAndAfterExp) {
  JwtCache cache(10, 3600);
  EXPECT_EQ(cache.lookup("t1", k_now), nullptr);
  const auto stored = cache.insert("t1", claims_with_exp(k_now + 60), k_now);
  ASSERT_NE(stored, nullptr);
  const auto hit = cache.lookup("t1", k_now + 59);
  ASSERT_NE(hit, nullptr);
  EXPECT_EQ(hit->subject, stored->subject);
  EXPECT_EQ(cache.lookup("t2", k_now), nullptr);
  EXPECT_EQ(cache.lookup("t1", k_now + 60), nullptr);
  EXPECT_EQ(cache.size(), 0u);  // the stale entry went
  cache.insert("t1", claims_with_exp(k_now + 60), k_now);
  EXPECT_EQ(cache.lookup("t1", k_now + 61), nullptr);
}

TEST(JwtCacheTest, MaxAgeBoundsTokensWithoutOrWithFarExp) {
  JwtCache cache(10, 300);
  cache.insert("no-exp", claims_with_exp(0), k_now);
  cache.insert("far", claims_with_exp(k_now + 86400), k_now);
  EXPECT_NE(cache.lookup("no-exp", k_now + 299), nullptr);
  EXPECT_NE(cache.lookup("far", k_now + 299), nullptr);
  EXPECT_EQ(cache.lookup("no-exp", k_now + 300), nullptr);
  EXPECT_EQ(cache.lookup("far", k_now + 300), nullptr);
}

TEST(JwtCacheTest, ExpiredClaimsAreNotStored) {
  JwtCache cache(10, 300);
  EXPECT_NE(cache.insert("old", claims_with_exp(k_now), k_now), nullptr);
  EXPECT_EQ(cache.size(), 0u);
  JwtCache disabled(0, 300);
  disabled.insert("t", claims_with_exp(k_now + 10), k_now);
  EXPECT_EQ(disabled.lookup("t", k_now), nullptr);
}

TEST(JwtCacheTest, LeastRecentlyUsedIsEvictedAtTheBound) {
  JwtCache cache(2, 3600);
  cache.insert("a", claims_with_exp(k_now + 100), k_now);
  cache.insert("b", claims_with_exp(k_now + 100), k_now);
  EXPECT_NE(cache.lookup("a", k_now), nullptr);  // b is now the least recently used
  cache.insert("c", claims_with_exp(k_now + 100), k_now);
  EXPECT_EQ(cache.size(), 2u);
  EXPECT_NE(cache.lookup("a", k_now), nullptr);
  EXPECT_EQ(cache.lookup("b", k_now), nullptr);
  EXPECT_NE(cache.lookup("c", k_now), nullptr);
  for (int i = 0; i < 100; ++i)
    cache.insert("t" + std::to_string(i), claims_with_exp(k_now + 100), k_now);
  EXPECT_EQ(cache.size(), 2u);
}

TEST(JwtCacheTest, SharedAcrossThreadsWithVerify) {
  const JwtKeySet set = must_load(JwtKeySet::from_pem(public_pem(keys().p256.get())));
  std::vector<std::string> tokens;
  for (int i = 0; i < 8; ++i) {
    tokens.push_back(mint_with(keys().p256.get(), "ES256",
                               R"({"sub":"u)" + std::to_string(i) + R"(","exp":1700000600})"));
  }
  JwtCache cache(4, 300);
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 50; ++i) {
        const std::string& token = tokens[static_cast<size_t>((i + t) % 8)];
        auto claims = cache.lookup(token, k_now);
        if (!claims) {
          JwtResult r = verify_jwt(token, set, {}, k_now);
          if (!r) {
            ++failures;
            continue;
          }
          claims = cache.insert(token, std::move(*r.claims), k_now);
        }
        if (claims->subject != "u" + std::to_string((i + t) % 8)) ++failures;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_LE(cache.size(), 4u);
}

// --- base64url -----------------------------------------------------------------------------------

TEST(Base64Url, RoundTripsAndRejectsNonCanonicalText) {
  for (std::string_view s : {"", "f", "fo", "foo", "foob", "fooba", "foobar", "\xff\xfe\x00"}) {
    EXPECT_EQ(base64url_decode(base64url_encode(s)), std::string(s));
    EXPECT_EQ(base64url_encode(s), b64(s));
  }
  EXPECT_EQ(base64url_decode("Zm9vYg"), "foob");
  EXPECT_FALSE(base64url_decode("Zm9vYg=="));
  EXPECT_FALSE(base64url_decode("Zm9vYh"));  // non-zero unused bits
  EXPECT_FALSE(base64url_decode("Zm9vY"));   // length 1 mod 4
  EXPECT_FALSE(base64url_decode("Zm9v Yg"));
  EXPECT_FALSE(base64url_decode("+/+/"));
  EXPECT_EQ(base64url_decode("-_-_"), "\xfb\xff\xbf");
}

}  // namespace
}  // namespace sluice::auth

// verify_jwt(): the compact-JWS parse and the RFC 7519 claim checks around the key set.
#include "auth/jwt.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <limits>
#include <utility>

#include "auth/base64url.h"

namespace sluice::auth {
namespace {

constexpr std::array<std::pair<std::string_view, JwtAlg>, 10> k_algs{{
    {"HS256", JwtAlg::HS256},
    {"HS384", JwtAlg::HS384},
    {"HS512", JwtAlg::HS512},
    {"RS256", JwtAlg::RS256},
    {"RS384", JwtAlg::RS384},
    {"RS512", JwtAlg::RS512},
    {"PS256", JwtAlg::PS256},
    {"ES256", JwtAlg::ES256},
    {"ES384", JwtAlg::ES384},
    {"EdDSA", JwtAlg::EdDSA},
}};

constexpr size_t k_max_logged_kid = 64;

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    const auto lower = [](char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c + 32) : c; };
    if (lower(a[i]) != lower(b[i])) return false;
  }
  return true;
}

// The kid as it may appear in a log line: bounded, printable ASCII only (it is attacker-chosen).
std::string loggable_kid(std::string_view kid) {
  std::string out(kid.substr(0, k_max_logged_kid));
  for (char& c : out) {
    if (c < 0x20 || c > 0x7e) c = '?';
  }
  return out;
}

std::optional<boost::json::object> parse_object(std::string_view text) {
  boost::system::error_code ec;
  boost::json::value v = boost::json::parse(text, ec);
  if (ec || !v.is_object()) return std::nullopt;
  return std::move(v.get_object());
}

// A NumericDate (RFC 7519 2) as whole seconds, rounding the way that makes the check stricter
// (`round_up` for nbf, down for exp); saturates at the int64 range. nullopt when not a number or
// not finite (Boost.JSON reads 1e400 as infinity).
std::optional<int64_t> numeric_date(const boost::json::value& v, bool round_up) {
  if (v.is_int64()) return v.get_int64();
  if (v.is_uint64()) {
    const uint64_t u = v.get_uint64();
    return u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())
               ? std::numeric_limits<int64_t>::max()
               : static_cast<int64_t>(u);
  }
  if (!v.is_double() || !std::isfinite(v.get_double())) return std::nullopt;
  const double d = round_up ? std::ceil(v.get_double()) : std::floor(v.get_double());
  if (d >= 9.2e18) return std::numeric_limits<int64_t>::max();
  if (d <= -9.2e18) return std::numeric_limits<int64_t>::min();
  return static_cast<int64_t>(d);
}

int64_t saturating_add(int64_t a, int64_t b) {
  int64_t out = 0;
  if (__builtin_add_overflow(a, b, &out)) {
    return b > 0 ? std::numeric_limits<int64_t>::max() : std::numeric_limits<int64_t>::min();
  }
  return out;
}

void add_scopes(std::string_view text, std::vector<std::string>& out) {
  size_t pos = 0;
  while (pos < text.size()) {
    const size_t end = std::min(text.find(' ', pos), text.size());
    if (end > pos) out.emplace_back(text.substr(pos, end - pos));
    pos = end + 1;
  }
}

JwtClaims make_claims(boost::json::object payload, int64_t exp) {
  JwtClaims claims;
  claims.exp = exp;
  if (const auto* sub = payload.if_contains("sub"); sub != nullptr && sub->is_string()) {
    claims.subject = std::string(sub->get_string());
  }
  if (const auto* scope = payload.if_contains("scope"); scope != nullptr && scope->is_string()) {
    add_scopes(scope->get_string(), claims.scopes);
  } else if (const auto* scp = payload.if_contains("scp"); scp != nullptr) {
    if (scp->is_string()) {
      add_scopes(scp->get_string(), claims.scopes);
    } else if (scp->is_array()) {
      for (const auto& s : scp->get_array()) {
        if (s.is_string() && !s.get_string().empty()) claims.scopes.emplace_back(s.get_string());
      }
    }
  }
  claims.payload = std::move(payload);
  return claims;
}

bool audience_matches(const boost::json::value* aud, const std::vector<std::string>& wanted) {
  if (aud == nullptr) return false;
  const auto wanted_has = [&](const boost::json::value& v) {
    return v.is_string() && std::find(wanted.begin(), wanted.end(),
                                      std::string_view(v.get_string())) != wanted.end();
  };
  if (aud->is_array()) {
    const auto& arr = aud->get_array();
    return std::any_of(arr.begin(), arr.end(), wanted_has);
  }
  return wanted_has(*aud);
}

JwtResult fail(JwtError error, std::string kid = {}) {
  JwtResult r;
  r.error = error;
  r.kid = std::move(kid);
  return r;
}

}  // namespace

std::optional<JwtAlg> parse_jwt_alg(std::string_view name) {
  for (const auto& [text, alg] : k_algs) {
    if (text == name) return alg;
  }
  return std::nullopt;
}

std::string_view jwt_alg_name(JwtAlg alg) {
  for (const auto& [text, a] : k_algs) {
    if (a == alg) return text;
  }
  return "?";
}

std::string_view describe(JwtError error) {
  switch (error) {
    case JwtError::None:
      return "ok";
    case JwtError::TooLarge:
      return "token too large";
    case JwtError::Malformed:
      return "malformed token";
    case JwtError::BadBase64:
      return "token is not base64url";
    case JwtError::BadJson:
      return "token header or payload is not a JSON object";
    case JwtError::AlgNone:
      return "unsigned token (alg none)";
    case JwtError::AlgNotAllowed:
      return "token algorithm not allowed";
    case JwtError::UnsupportedCritical:
      return "unsupported critical header";
    case JwtError::UnknownKey:
      return "unknown signing key (kid)";
    case JwtError::KeyMismatch:
      return "no key for the token algorithm";
    case JwtError::BadSignature:
      return "bad signature";
    case JwtError::BadClaim:
      return "exp or nbf is not a number";
    case JwtError::Expired:
      return "token expired";
    case JwtError::NotYetValid:
      return "token not yet valid";
    case JwtError::WrongIssuer:
      return "wrong issuer";
    case JwtError::WrongAudience:
      return "wrong audience";
  }
  return "invalid token";
}

std::optional<std::string> JwtClaims::claim_string(std::string_view name) const {
  const boost::json::value* v = payload.if_contains(name);
  if (v == nullptr || v->is_null()) return std::nullopt;
  if (v->is_string()) {
    const std::string_view s = v->get_string();
    for (char c : s) {
      if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) return std::nullopt;
    }
    return std::string(s);
  }
  return boost::json::serialize(*v);  // JSON text escapes control characters
}

JwtResult verify_jwt(std::string_view token, const JwtKeySet& keys, const JwtPolicy& policy,
                     int64_t now_unix_s) {
  if (token.size() > policy.max_token_bytes) return fail(JwtError::TooLarge);

  const size_t dot1 = token.find('.');
  const size_t dot2 = dot1 == std::string_view::npos ? dot1 : token.find('.', dot1 + 1);
  if (dot2 == std::string_view::npos || token.find('.', dot2 + 1) != std::string_view::npos) {
    return fail(JwtError::Malformed);  // JWE (five parts) lands here too
  }
  const std::string_view signing_input = token.substr(0, dot2);
  std::optional<std::string> header_text = base64url_decode(token.substr(0, dot1));
  std::optional<std::string> payload_text =
      base64url_decode(token.substr(dot1 + 1, dot2 - dot1 - 1));
  std::optional<std::string> signature = base64url_decode(token.substr(dot2 + 1));
  if (!header_text || !payload_text || !signature) return fail(JwtError::BadBase64);

  std::optional<boost::json::object> header = parse_object(*header_text);
  if (!header) return fail(JwtError::BadJson);

  std::optional<std::string_view> kid;
  std::string logged_kid;
  if (const auto* k = header->if_contains("kid"); k != nullptr) {
    if (!k->is_string()) return fail(JwtError::Malformed);
    kid = std::string_view(k->get_string());
    logged_kid = loggable_kid(*kid);
  }
  const boost::json::value* alg_value = header->if_contains("alg");
  if (alg_value == nullptr || !alg_value->is_string()) {
    return fail(JwtError::Malformed, std::move(logged_kid));
  }
  const std::string_view alg_name = alg_value->get_string();
  if (iequals(alg_name, "none")) return fail(JwtError::AlgNone, std::move(logged_kid));
  const std::optional<JwtAlg> alg = parse_jwt_alg(alg_name);
  if (!alg ||
      (!policy.algorithms.empty() && std::find(policy.algorithms.begin(), policy.algorithms.end(),
                                               *alg) == policy.algorithms.end())) {
    return fail(JwtError::AlgNotAllowed, std::move(logged_kid));
  }
  if (header->contains("crit")) return fail(JwtError::UnsupportedCritical, std::move(logged_kid));

  if (JwtError e = keys.verify_signature(*alg, kid, signing_input, *signature);
      e != JwtError::None) {
    return fail(e, std::move(logged_kid));
  }

  // Signed by a trusted key from here on: only now is the payload parsed.
  std::optional<boost::json::object> payload = parse_object(*payload_text);
  if (!payload) return fail(JwtError::BadJson, std::move(logged_kid));

  std::optional<int64_t> exp, nbf;
  if (const auto* v = payload->if_contains("exp"); v != nullptr) {
    exp = numeric_date(*v, /*round_up=*/false);
    if (!exp) return fail(JwtError::BadClaim, std::move(logged_kid));
  }
  if (const auto* v = payload->if_contains("nbf"); v != nullptr) {
    nbf = numeric_date(*v, /*round_up=*/true);
    if (!nbf) return fail(JwtError::BadClaim, std::move(logged_kid));
  }
  const int64_t leeway = std::max<int64_t>(policy.leeway_s, 0);
  if (exp && *exp <= saturating_add(now_unix_s, -leeway)) {
    return fail(JwtError::Expired, std::move(logged_kid));
  }
  if (nbf && *nbf > saturating_add(now_unix_s, leeway)) {
    return fail(JwtError::NotYetValid, std::move(logged_kid));
  }
  if (!policy.issuer.empty()) {
    const auto* iss = payload->if_contains("iss");
    if (iss == nullptr || !iss->is_string() || iss->get_string() != policy.issuer) {
      return fail(JwtError::WrongIssuer, std::move(logged_kid));
    }
  }
  if (!policy.audiences.empty() &&
      !audience_matches(payload->if_contains("aud"), policy.audiences)) {
    return fail(JwtError::WrongAudience, std::move(logged_kid));
  }

  JwtResult r;
  // exp == 0 means "absent" in JwtClaims; a real exp of 0 or less has been rejected above.
  r.claims = make_claims(std::move(*payload), exp.value_or(0));
  r.kid = std::move(logged_kid);
  return r;
}

}  // namespace sluice::auth

#include "filters/auth.h"

#include <algorithm>
#include <chrono>
#include <ctime>
#include <fstream>
#include <map>
#include <optional>
#include <sstream>
#include <unordered_map>

#include <fmt/format.h>

#include "auth/credentials.h"
#include "auth/jwt.h"
#include "core/file.h"
#include "core/log.h"

namespace sluice::filters {

namespace {

struct JwtAuthenticator {
  auth::JwtKeySet keys;
  auth::JwtPolicy policy;
  std::string consumer_claim;
  std::vector<std::pair<std::string, std::string>> forward_claims;
  // Verified tokens, shared by all workers (a mutex inside, held for O(1) work): an RS256 check
  // costs tens of microseconds, a cache hit well under one.
  std::unique_ptr<auth::JwtCache> cache;
};

struct ApiKeyAuthenticator {
  std::string header;  // lower-case, or empty
  std::string query;   // or empty
};

struct Authenticator {
  std::string name;
  config::Authenticator::Kind kind;
  std::unique_ptr<JwtAuthenticator> jwt;
  ApiKeyAuthenticator api_key;
  std::string challenge;  // WWW-Authenticate value
};

std::string_view bearer_token(const http::RequestHead& head) {
  auto h = head.header("authorization");
  if (!h.found || h.value.size() < 7 || !http::iequals(h.value.substr(0, 7), "bearer ")) return {};
  std::string_view t = h.value.substr(7);
  while (!t.empty() && t.front() == ' ') t.remove_prefix(1);
  return t;
}

// The per-worker front cache of verified tokens (see try_jwt).
struct FrontKey {
  const void* authenticator;
  std::string token;
  FrontKey(const void* a, std::string_view t) : authenticator(a), token(t) {}
  bool operator==(const FrontKey& o) const {
    return authenticator == o.authenticator && token == o.token;
  }
};
struct FrontKeyHash {
  size_t operator()(const FrontKey& k) const {
    return std::hash<std::string_view>()(k.token) ^ std::hash<const void*>()(k.authenticator);
  }
};
struct FrontEntry {
  std::shared_ptr<const Exchange::Identity> identity;
  int64_t expires_at = 0;
};
constexpr size_t kFrontCacheEntries = 4096;
thread_local std::unordered_map<FrontKey, FrontEntry, FrontKeyHash> t_front_cache;

}  // namespace

class AuthRegistry {
 public:
  std::map<std::string, Authenticator> by_name;
  auth::ApiKeyStore keys;
  std::map<std::string, std::vector<std::string>, std::less<>> groups;  // consumer -> groups
  // One shared identity per configured consumer (what an API key resolves to).
  std::map<std::string, std::shared_ptr<const Exchange::Identity>, std::less<>> identities;
  std::map<std::string, std::string, std::less<>> passwords;  // consumer -> crypt(3) hash
  // Successful Basic verifications (a mutex inside): bcrypt costs ~100 ms, so only a miss runs
  // crypt(3), and that on the blocking pool.
  std::unique_ptr<auth::PasswordCache> password_cache =
      std::make_unique<auth::PasswordCache>(10000, std::chrono::minutes(5));
};

std::variant<std::shared_ptr<const AuthRegistry>, std::vector<std::string>> build_auth_registry(
    const config::Config& c) {
  auto reg = std::make_shared<AuthRegistry>();
  std::vector<std::string> errors;
  auto where = [&](const config::Mark& m) {
    return fmt::format("{}:{}:{}", c.file, m.line, m.col);
  };

  std::vector<auth::ConsumerKeys> consumer_keys;
  for (const auto& consumer : c.consumers) {
    reg->groups[consumer.name] = consumer.groups;
    auto id = std::make_shared<Exchange::Identity>();
    id->consumer = consumer.name;
    id->groups = consumer.groups;
    reg->identities[consumer.name] = std::move(id);
    if (!consumer.password.empty()) reg->passwords[consumer.name] = consumer.password;
    auth::ConsumerKeys ck{consumer.name, {}};
    for (const auto& k : consumer.api_keys) {
      ck.api_keys.push_back(k.kind == config::ApiKey::Kind::Sha256 ? "sha256:" + k.value
                                                                   : "key:" + k.value);
    }
    consumer_keys.push_back(std::move(ck));
  }
  auto store = auth::ApiKeyStore::build(consumer_keys);
  if (auto* errs = std::get_if<std::vector<std::string>>(&store)) {
    for (const auto& e : *errs) errors.push_back(fmt::format("{}: consumers: {}", c.file, e));
  } else {
    reg->keys = std::get<auth::ApiKeyStore>(std::move(store));
  }

  for (const auto& a : c.authenticators) {
    Authenticator out;
    out.name = a.name;
    out.kind = a.kind;
    switch (a.kind) {
      case config::Authenticator::Kind::Jwt: {
        auto j = std::make_unique<JwtAuthenticator>();
        std::variant<auth::JwtKeySet, std::string> keys;
        if (!a.jwt.secret.empty()) {
          keys = auth::JwtKeySet::from_secret(a.jwt.secret);
        } else {
          std::string text;
          if (!read_file(a.jwt.keys, text)) {
            errors.push_back(
                fmt::format("{}: auth '{}': cannot read '{}'", where(a.mark), a.name, a.jwt.keys));
            continue;
          }
          keys = text.find("-----BEGIN") != std::string::npos ? auth::JwtKeySet::from_pem(text)
                                                              : auth::JwtKeySet::from_jwks(text);
        }
        if (auto* e = std::get_if<std::string>(&keys)) {
          errors.push_back(fmt::format("{}: auth '{}': {}", where(a.mark), a.name, *e));
          continue;
        }
        j->keys = std::get<auth::JwtKeySet>(std::move(keys));
        for (const auto& name : a.jwt.algorithms) {
          if (auto alg = auth::parse_jwt_alg(name)) j->policy.algorithms.push_back(*alg);
        }
        j->policy.issuer = a.jwt.issuer;
        j->policy.audiences = a.jwt.audiences;
        j->policy.leeway_s = std::chrono::duration_cast<std::chrono::seconds>(a.jwt.leeway).count();
        j->consumer_claim = a.jwt.consumer_claim;
        j->forward_claims = a.jwt.forward_claims;
        j->cache = std::make_unique<auth::JwtCache>(10000, 300);
        out.jwt = std::move(j);
        out.challenge = "Bearer realm=\"" + a.name + "\"";
        break;
      }
      case config::Authenticator::Kind::ApiKey:
        out.api_key = {a.api_key.header, a.api_key.query};
        out.challenge = "ApiKey realm=\"" + a.name + "\"";
        break;
      case config::Authenticator::Kind::Basic:
        out.challenge = auth::basic_challenge(a.basic.realm);
        break;
    }
    reg->by_name.emplace(a.name, std::move(out));
  }
  if (!errors.empty()) return errors;
  return std::shared_ptr<const AuthRegistry>(std::move(reg));
}

namespace {

class AuthFilter final : public Filter {
 public:
  AuthFilter(std::shared_ptr<const AuthRegistry> reg, std::vector<const Authenticator*> any_of)
      : reg_(std::move(reg)), any_of_(std::move(any_of)) {}
  std::string_view name() const override { return "auth"; }

  Step on_request(Exchange& x) const override {
    std::string why;
    std::optional<PendingBasic> pending;
    for (const Authenticator* a : any_of_) {
      std::string failure;
      if (a->kind == config::Authenticator::Kind::Basic) {
        if (try_basic(x, failure, pending)) return Step::next();
      } else if (try_one(*a, x, failure)) {
        return Step::next();
      }
      if (!failure.empty()) {
        if (!why.empty()) why += "; ";
        why += a->name + ": " + failure;
      }
    }
    if (pending) {
      // A Basic password not seen recently: verify it off the worker, then finish here.
      return Step::offload([this, &x, p = std::move(*pending), why]() mutable -> Step {
        if (auth::verify_password(p.hash, p.password) == auth::PasswordCheck::Match) {
          reg_->password_cache->remember(p.username, p.hash, p.password);
          accept_basic(x, p.username);
          return Step::next();
        }
        return refuse(x, why.empty() ? p.authenticator + ": wrong password"
                                     : why + "; " + p.authenticator + ": wrong password");
      });
    }
    return refuse(x, why);
  }

 private:
  struct PendingBasic {
    std::string authenticator, username, password, hash;
  };

  Step refuse(const Exchange& x, const std::string& why) const {
    std::vector<std::pair<std::string, std::string>> challenges;
    for (const Authenticator* a : any_of_)
      challenges.emplace_back("www-authenticate", a->challenge);
    (void)x;  // (the session logs every refusal with its detail)
    return Step::respond(401, "unauthorized", std::move(challenges), "auth failed: " + why);
  }

  void accept_basic(Exchange& x, std::string_view username) const {
    x.identity = identity_of(username);
    Exchange::remove(x.upstream_headers, "authorization");  // consumed: not forwarded
  }

  // True when authenticated now; `pending` set when the password must be hashed off-thread.
  bool try_basic(Exchange& x, std::string& failure, std::optional<PendingBasic>& pending) const {
    auto h = x.request->header("authorization");
    if (!h.found || h.value.size() < 6 || !http::iequals(h.value.substr(0, 6), "basic ")) {
      failure = "no basic credentials";
      return false;
    }
    auto creds = auth::parse_basic_authorization(h.value);
    if (auto* e = std::get_if<std::string>(&creds)) {
      failure = *e;
      return false;
    }
    auto& c = std::get<auth::BasicCredentials>(creds);
    auto it = reg_->passwords.find(c.username);
    if (it == reg_->passwords.end()) {
      failure = "unknown user";
      return false;
    }
    if (reg_->password_cache->contains(c.username, it->second, c.password)) {
      accept_basic(x, c.username);
      return true;
    }
    if (!pending) {
      for (const Authenticator* a : any_of_) {
        if (a->kind == config::Authenticator::Kind::Basic) {
          pending = PendingBasic{a->name, c.username, c.password, it->second};
          break;
        }
      }
    }
    return false;
  }

 private:
  bool try_one(const Authenticator& a, Exchange& x, std::string& failure) const {
    switch (a.kind) {
      case config::Authenticator::Kind::Jwt:
        return try_jwt(*a.jwt, x, failure);
      case config::Authenticator::Kind::ApiKey:
        return try_api_key(a.api_key, x, failure);
      case config::Authenticator::Kind::Basic:
        return false;  // handled by try_basic
    }
    return false;
  }

  bool try_jwt(const JwtAuthenticator& j, Exchange& x, std::string& failure) const {
    std::string_view token = bearer_token(*x.request);
    if (token.empty()) {
      failure = "no bearer token";
      return false;
    }
    const int64_t now = std::time(nullptr);
    // Per-worker front cache keyed by the token text (no lock, no SHA-256): a hit costs a hash
    // and a compare. Entries carry the finished identity and expire with the token.
    auto& front = t_front_cache;
    auto hit = front.find(FrontKey{&j, token});
    if (hit != front.end() && hit->second.expires_at > now) {
      x.identity = hit->second.identity;
    } else {
      std::shared_ptr<const auth::JwtClaims> claims = j.cache->lookup(token, now);
      if (!claims) {
        auth::JwtResult r = auth::verify_jwt(token, j.keys, j.policy, now);
        if (!r.claims) {
          failure = std::string(auth::describe(r.error));
          if (!r.kid.empty()) failure += " (kid " + r.kid + ")";
          return false;
        }
        claims = j.cache->insert(token, std::move(*r.claims), now);
        if (!claims) return false;  // expired at this very second
      }
      auto id = std::make_shared<Exchange::Identity>();
      id->consumer = claims->claim_string(j.consumer_claim).value_or("");
      if (auto it = reg_->groups.find(id->consumer); it != reg_->groups.end()) {
        id->groups = it->second;
      }
      id->scopes = claims->scopes;
      for (const auto& [claim, header] : j.forward_claims) {
        if (auto v = claims->claim_string(claim)) id->forward.emplace_back(header, *v);
      }
      if (front.size() >= kFrontCacheEntries) front.clear();  // crude bound; refills quickly
      int64_t expires = claims->exp > 0 ? claims->exp : now + 300;
      expires = std::min<int64_t>(expires, now + 300);
      x.identity = id;
      front[FrontKey{&j, std::string(token)}] = FrontEntry{std::move(id), expires};
    }
    for (const auto& [claim, header] : j.forward_claims) {
      Exchange::remove(x.upstream_headers, header);  // never let a client forge it
    }
    for (const auto& [header, value] : x.identity->forward) {
      x.upstream_headers.push_back({header, value});  // the identity outlives the exchange
    }
    return true;
  }

  bool try_api_key(const ApiKeyAuthenticator& k, Exchange& x, std::string& failure) const {
    if (!k.header.empty()) {
      auto h = x.request->header(k.header);
      if (h.found) {
        auto who = reg_->keys.lookup(h.value);
        if (!who) {
          failure = "unknown api key in header";
          return false;
        }
        x.identity = identity_of(*who);
        Exchange::remove(x.upstream_headers, k.header);  // consumed: not forwarded
        return true;
      }
    }
    if (!k.query.empty()) {
      auto v = auth::query_param(x.request->query, k.query);
      if (v) {
        auto who = reg_->keys.lookup(*v);
        if (!who) {
          failure = "unknown api key in query";
          return false;
        }
        x.identity = identity_of(*who);
        x.upstream_query = auth::remove_query_param(x.request->query, k.query);
        x.query_overridden = true;
        return true;
      }
    }
    failure = "no api key";
    return false;
  }

  std::shared_ptr<const Exchange::Identity> identity_of(std::string_view consumer) const {
    auto it = reg_->identities.find(consumer);
    return it != reg_->identities.end() ? it->second : nullptr;
  }

  std::shared_ptr<const AuthRegistry> reg_;
  std::vector<const Authenticator*> any_of_;
};

}  // namespace

std::shared_ptr<const Exchange::Identity> consumer_identity(
    const std::shared_ptr<const AuthRegistry>& registry, std::string_view name) {
  if (registry) {
    auto it = registry->identities.find(name);
    if (it != registry->identities.end()) return it->second;
  }
  auto id = std::make_shared<Exchange::Identity>();
  id->consumer = std::string(name);
  return id;
}

Login check_login(const std::shared_ptr<const AuthRegistry>& registry,
                  std::string_view authenticator, std::optional<std::string_view> username,
                  std::optional<std::string_view> password) {
  Login out;
  const Authenticator* a = nullptr;
  if (registry) {
    auto it = registry->by_name.find(std::string(authenticator));
    if (it != registry->by_name.end()) a = &it->second;
  }
  if (a == nullptr) {
    out.detail = "unknown authenticator";
    return out;
  }
  auto identity_of = [&](std::string_view consumer) {
    auto it = registry->identities.find(consumer);
    return it != registry->identities.end() ? it->second : consumer_identity(registry, consumer);
  };
  if (!password) {
    out.outcome = Login::Outcome::Missing;
    out.detail = "no password";
    return out;
  }
  switch (a->kind) {
    case config::Authenticator::Kind::ApiKey:
      if (auto who = registry->keys.lookup(*password)) {
        out.outcome = Login::Outcome::Accepted;
        out.identity = identity_of(*who);
      } else {
        out.detail = "unknown api key";
      }
      return out;
    case config::Authenticator::Kind::Basic: {
      if (!username || username->empty()) {
        out.outcome = Login::Outcome::Missing;
        out.detail = "no username";
        return out;
      }
      auto it = registry->passwords.find(*username);
      if (it == registry->passwords.end()) {
        out.detail = "unknown user";
        return out;
      }
      if (password->find('\0') == std::string_view::npos &&
          registry->password_cache->contains(*username, it->second, *password)) {
        out.outcome = Login::Outcome::Accepted;
        out.identity = identity_of(*username);
        return out;
      }
      out.detail = "wrong password";
      out.verify = [registry, user = std::string(*username), hash = it->second,
                    pass = std::string(*password), identity = identity_of(*username)] {
        Login done;
        if (auth::verify_password(hash, pass) == auth::PasswordCheck::Match) {
          registry->password_cache->remember(user, hash, pass);
          done.outcome = Login::Outcome::Accepted;
          done.identity = identity;
        } else {
          done.detail = "wrong password";
        }
        return done;
      };
      return out;
    }
    case config::Authenticator::Kind::Jwt:
      break;
  }
  out.detail = "not a basic or api_key authenticator";
  return out;
}

namespace {

bool intersects(const std::vector<std::string>& a, const std::vector<std::string>& b) {
  for (const auto& x : a) {
    for (const auto& y : b) {
      if (x == y) return true;
    }
  }
  return false;
}

class AllowFilter final : public Filter {
 public:
  explicit AllowFilter(config::Allow allow) : allow_(std::move(allow)) {}
  std::string_view name() const override { return "allow"; }

  // Every listed kind must pass (SPEC.md).
  Step on_request(Exchange& x) const override {
    static const Exchange::Identity kAnonymous;
    const Exchange::Identity& id = x.identity ? *x.identity : kAnonymous;
    if (!allow_.consumers.empty() && std::find(allow_.consumers.begin(), allow_.consumers.end(),
                                               id.consumer) == allow_.consumers.end()) {
      return deny(x, "consumer not allowed");
    }
    if (!allow_.groups.empty() && !intersects(allow_.groups, id.groups)) {
      return deny(x, "no allowed group");
    }
    if (!allow_.scopes.empty() && !intersects(allow_.scopes, id.scopes)) {
      return deny(x, "no allowed scope");
    }
    return Step::next();
  }

 private:
  static Step deny(const Exchange& x, std::string_view why) {
    return Step::respond(
        403, "forbidden", {},
        fmt::format("{} ({})", why,
                    x.consumer().empty() ? std::string_view("anonymous") : x.consumer()));
  }
  config::Allow allow_;
};

}  // namespace

std::unique_ptr<const Filter> make_auth_filter(const std::shared_ptr<const AuthRegistry>& registry,
                                               const config::Route& route) {
  if (route.auth.empty() || !registry) return nullptr;
  std::vector<const Authenticator*> any_of;
  for (const auto& name : route.auth) {
    auto it = registry->by_name.find(name);
    if (it != registry->by_name.end()) any_of.push_back(&it->second);
  }
  return std::make_unique<AuthFilter>(registry, std::move(any_of));
}

std::unique_ptr<const Filter> make_allow_filter(const config::Route& route) {
  const auto& a = route.allow;
  if (a.consumers.empty() && a.groups.empty() && a.scopes.empty()) return nullptr;
  return std::make_unique<AllowFilter>(a);
}

}  // namespace sluice::filters

// Route `auth:` (any one of the named authenticators suffices) and `allow:` by consumers, groups
// and scopes (SPEC.md section 2).
//
//   auto registry = AuthRegistry::build(config);          // once per snapshot (loads key files)
//   chain.push_back(make_auth_filter(registry, route));   // 401 + WWW-Authenticate on failure
//   chain.push_back(make_allow_filter(config, route));    // 403 when authorisation fails
//
// Authentication resolves the request to a consumer (Exchange::consumer/groups/scopes). `jwt`
// (Authorization: Bearer) and `api_key` (header or query) are enforced here; `basic` needs
// crypt(3) off the worker threads and is refused by the snapshot compiler until it is.
// Credentials the gateway consumed (an API key) are not forwarded upstream.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "config/config.h"
#include "filters/filter.h"

namespace sluice::filters {

class AuthRegistry;

// Builds every authenticator of `config` (JWT key sets and caches, the API key store).
// Returns every error (unreadable or invalid key files...).
std::variant<std::shared_ptr<const AuthRegistry>, std::vector<std::string>> build_auth_registry(
    const config::Config& config);

// nullptr when the route has no `auth`.
std::unique_ptr<const Filter> make_auth_filter(const std::shared_ptr<const AuthRegistry>& registry,
                                               const config::Route& route);

// The identity a name resolves to outside any authenticator (a verified client certificate's
// CN): the configured consumer of that name with its groups, else a bare identity of that name.
std::shared_ptr<const Exchange::Identity> consumer_identity(
    const std::shared_ptr<const AuthRegistry>& registry, std::string_view name);

// A username and password presented outside HTTP (an MQTT CONNECT), checked by the `basic` or
// `api_key` authenticator `authenticator`: basic takes the username as the consumer name and
// checks the password against its crypt(3) hash; api_key takes the password as the key (the
// username is not checked).
//
//   filters::Login login = filters::check_login(registry, "devices", username, password);
//   if (login.verify) login = co_await on_blocking_pool(std::move(login.verify));
//   if (login.outcome == filters::Login::Outcome::Accepted) use(login.identity);
//
// Runs on the worker, except `verify`, which hashes the password (bcrypt: ~100 ms) and must run on
// a helper thread; it returns the final Login and remembers a match in the registry's cache.
struct Login {
  enum class Outcome { Accepted, Missing, Refused };
  Outcome outcome = Outcome::Refused;
  std::shared_ptr<const Exchange::Identity> identity;  // when Accepted
  std::string detail;  // why not, for the error log (never a secret)
  // Set (and outcome Refused) while the answer needs a password hash computed: run it off the
  // worker for the final Login.
  std::function<Login()> verify;
};
Login check_login(const std::shared_ptr<const AuthRegistry>& registry,
                  std::string_view authenticator, std::optional<std::string_view> username,
                  std::optional<std::string_view> password);

// nullptr when the route's `allow` names no consumers, groups or scopes.
std::unique_ptr<const Filter> make_allow_filter(const config::Route& route);

}  // namespace sluice::filters

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

#include <memory>
#include <string>
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

// nullptr when the route's `allow` names no consumers, groups or scopes.
std::unique_ptr<const Filter> make_allow_filter(const config::Route& route);

}  // namespace sluice::filters

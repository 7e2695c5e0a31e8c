// Warnings about a config that loads but probably does not do what its author meant (private to
// src/config/). The loader runs it only on a config without errors.
#pragma once

#include <vector>

#include "config/config.h"

namespace sluice::config {

// - an upstream that no route (upstream or split) uses;
// - an authenticator that no route uses;
// - a consumer's plain "key:" api key (sha256:<hex> keeps the key out of the file);
// - a listener that lists the same certificate and key twice;
// - a route that allows by scopes without a jwt authenticator (scopes come from a JWT);
// - an upstream's `hash_on` with a balance that does not hash (only ring_hash and maglev do);
// - a health check whose timeout is not shorter than its interval;
// - a route that can never match because an earlier route matches every request it would
//   (conservative: only reported when that is certain from the config alone).
std::vector<Diagnostic> lint(const Config& config);

// The literal text of a path template up to and including the '/' before its first parameter
// ("/users/{id}/orders" -> "/users/"), or the whole template when it has none.
std::string template_literal_start(const std::string& path_template);

}  // namespace sluice::config

// POST /api/explain (SPEC.md section 4): what the gateway would do with a request, without
// forwarding anything. Which route matches and why each earlier one does not, every policy's
// verdict in pipeline order (ip access, auth, allow, rate limits peeked without charging, cache
// state), and the upstream target the balancer would pick.
#pragma once

#include <string>
#include <string_view>

#include "server/snapshot.h"

namespace sluice::server {

struct ExplainResult {
  int status = 200;  // 400 for a body that is not the expected JSON
  std::string json;
};

// `body`: {"method": "GET", "url": "/path?q" or "http://host/path", "headers": {...},
// "client_ip": "10.0.0.1"}. Runs on the admin thread; a Basic password check runs inline.
ExplainResult explain(const Snapshot& snap, std::string_view body);

}  // namespace sluice::server

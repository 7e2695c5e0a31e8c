// What filters see of one request/response exchange.
//
// Header lists hold views: into the downstream read buffer, into the compiled config (which the
// exchange's snapshot keeps alive), or into strings the exchange owns (own()). Filters edit the
// lists; the proxy serialises them.
#pragma once

#include <forward_list>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "http/message.h"

namespace sluice::filters {

struct Exchange {
  const http::RequestHead* request = nullptr;
  std::string_view client_ip;
  std::string_view request_id;
  std::vector<http::Header> upstream_headers;  // request headers that will be sent upstream
  std::vector<http::Header> response_headers;  // response headers that will be sent downstream
  int response_status = 0;

  // Who the request is, set by authentication (filters/auth.cpp) for authorisation and the log.
  // Immutable and shared (one per API-key consumer, one per verified token), so an
  // authenticated request allocates nothing for it.
  struct Identity {
    std::string consumer;             // empty = anonymous
    std::vector<std::string> groups;  // the consumer's groups (configured consumers only)
    std::vector<std::string> scopes;  // from a JWT's scope/scp claim
    std::vector<std::pair<std::string, std::string>> forward;  // upstream headers (forward_claims)
  };
  std::shared_ptr<const Identity> identity;
  std::string_view consumer() const {
    return identity ? std::string_view(identity->consumer) : std::string_view();
  }
  // Set by the rate_limit filter: the most constraining limit that applied (for the
  // RateLimit-Limit/-Remaining/-Reset response headers), and whether it answered 429.
  struct RateLimitState {
    bool set = false;
    uint64_t limit = 0;
    uint64_t remaining = 0;
    int64_t reset_s = 0;
  };
  RateLimitState rate_limit;
  bool rate_limited = false;
  // A filter that consumed a query parameter (an API key) rewrites the query sent upstream.
  bool query_overridden = false;
  std::string upstream_query;

  // Keeps `s` alive for the exchange and returns a view of it.
  std::string_view own(std::string s) { return owned_.emplace_front(std::move(s)); }

  // Clears for the next exchange on the same connection, keeping the lists' capacity.
  void reset() {
    request = nullptr;
    upstream_headers.clear();
    response_headers.clear();
    response_status = 0;
    identity.reset();
    rate_limit = {};
    rate_limited = false;
    query_overridden = false;
    upstream_query.clear();
    owned_.clear();
  }

  static void remove(std::vector<http::Header>& list, std::string_view name) {
    std::erase_if(list, [&](const http::Header& h) { return http::iequals(h.name, name); });
  }
  static void set(std::vector<http::Header>& list, std::string_view name, std::string_view value) {
    remove(list, name);
    list.push_back({name, value});
  }

 private:
  std::forward_list<std::string> owned_;
};

}  // namespace sluice::filters

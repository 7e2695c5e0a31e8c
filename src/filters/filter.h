// The filter interface: one compiled policy of a route (headers, later auth, rate limits,
// cache...).
//
//   class AddHeader final : public Filter {
//     Step on_request(Exchange& x) const override { x.set_upstream_header("x-a", "1"); return
//     Step::next(); }
//   };
//
// A route's policies are compiled once per config snapshot into an ordered vector of filters that
// every worker shares read-only. Hooks run on the worker thread that owns the exchange, in route
// order for requests and in reverse order for responses; they must not block. A filter that needs
// per-exchange state keeps it in the Exchange (so the fast path allocates nothing per filter).
// A filter can answer the request itself with Step::respond (a 401, a 429, a cache hit): the chain
// stops there and nothing goes upstream. Blocking work (a password hash) is handed back as
// Step::offload and runs on a small thread pool while the exchange waits.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "filters/exchange.h"

namespace sluice::filters {

class Step {
 public:
  // Offload: run `work` on the blocking pool (never the worker; e.g. crypt(3) for Basic auth),
  // then continue the chain with the Step it returns. While it runs the exchange is parked, so
  // `work` may write to the Exchange it captured.
  // Async: `start(done)` begins an asynchronous operation on the worker's own loop (a Redis
  // call) and calls `done(step)` exactly once, on that loop, with how the chain goes on.
  enum class Kind { Next, Respond, Offload, Async };
  using Continue = std::function<void(Step)>;
  using Start = std::function<void(Continue)>;
  Step() : Step(Kind::Next, 0, {}, {}) {}  // = next()
  static Step offload(std::function<Step()> work) {
    Step s(Kind::Offload, 0, {}, {});
    s.work_ = std::move(work);
    return s;
  }
  std::function<Step()> take_work() { return std::move(work_); }
  static Step async(Start start) {
    Step s(Kind::Async, 0, {}, {});
    s.start_ = std::move(start);
    return s;
  }
  Start take_start() { return std::move(start_); }
  static Step next() { return Step(Kind::Next, 0, {}, {}); }
  static Step respond(int status, std::string reason) {
    return Step(Kind::Respond, status, std::move(reason), {});
  }
  // With response headers (e.g. WWW-Authenticate) and a detail for the error log only (why the
  // request was refused; never a credential).
  static Step respond(int status, std::string reason,
                      std::vector<std::pair<std::string, std::string>> headers,
                      std::string log_detail) {
    Step s(Kind::Respond, status, std::move(reason), std::move(headers));
    s.log_detail_ = std::move(log_detail);
    return s;
  }
  Kind kind() const { return kind_; }
  int status() const { return status_; }
  const std::string& reason() const { return reason_; }
  const std::vector<std::pair<std::string, std::string>>& headers() const { return headers_; }
  const std::string& log_detail() const { return log_detail_; }

 private:
  Step(Kind k, int s, std::string r, std::vector<std::pair<std::string, std::string>> h)
      : kind_(k), status_(s), reason_(std::move(r)), headers_(std::move(h)) {}
  Kind kind_;
  int status_;
  std::string reason_;
  std::vector<std::pair<std::string, std::string>> headers_;
  std::string log_detail_;
  std::function<Step()> work_;
  Start start_;
};

class Filter {
 public:
  virtual ~Filter() = default;
  virtual std::string_view name() const = 0;
  // Before the request goes upstream (after routing). May edit the upstream request headers.
  virtual Step on_request(Exchange&) const { return Step::next(); }
  // After the upstream response head arrived, before it is written downstream.
  virtual void on_response(Exchange&) const {}
};

using FilterChain = std::vector<std::unique_ptr<const Filter>>;

}  // namespace sluice::filters

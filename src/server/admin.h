// The admin API (SPEC.md section 4) on its own listener, served on the main thread's event loop
// (the thread that also handles signals and reloads, so an API reload is the same code path as
// SIGHUP and needs no cross-thread hand-off). Admin traffic is rare and small; nothing here is on
// the request path of the data plane.
//
//   AdminServer admin(main_io, hooks);
//   admin.start(*cfg.admin, error);     // binds; false + error when the port is taken
//   admin.stop();
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "config/config.h"

namespace boost::asio {
class io_context;
}

namespace sluice::server {

struct Snapshot;

struct ReloadOutcome {
  bool ok = false;
  std::vector<std::string> errors;
  std::string checksum;
};

struct AdminHooks {
  std::function<std::shared_ptr<const Snapshot>()> snapshot;  // the active config
  std::function<ReloadOutcome()> reload;                      // same as SIGHUP
  std::function<std::string()> metrics;                       // Prometheus text (may be null)
  std::function<std::string()> stats;                         // /api/stats JSON (may be null)
};

class AdminServer {
 public:
  AdminServer(boost::asio::io_context& io, AdminHooks hooks);
  ~AdminServer();
  AdminServer(const AdminServer&) = delete;
  AdminServer& operator=(const AdminServer&) = delete;

  bool start(const config::Admin& admin, std::string& error);
  void stop();
  // The listener it serves (host:port), "" when stopped.
  const std::string& address() const;

 private:
  struct Impl;
  std::shared_ptr<Impl> impl_;
};

}  // namespace sluice::server

// The process: loads the config, binds listeners, runs the workers, and handles signals
// (SIGHUP reload, SIGTERM/SIGINT graceful drain, SIGUSR1 log reopen). SPEC.md section 1.
#pragma once

#include <functional>
#include <string>

namespace sluice::server {

struct GatewayOptions {
  std::string config_path;   // file to load (and re-load on SIGHUP)
  std::string config_text;   // when non-empty: used instead of reading config_path (demo)
  int workers_override = 0;  // >0: overrides `workers:` (tests, demo)
  // Called once the listeners are bound and workers run (the demo prints its tour here).
  std::function<void()> on_ready;
};

// Runs until SIGTERM/SIGINT. Returns the process exit code (0 ok, 1 runtime failure,
// 2 invalid config).
int run_gateway(const GatewayOptions& options);

}  // namespace sluice::server

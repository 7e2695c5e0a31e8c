// The control thread: active health checks and DNS re-resolution, off the request path.
//
//   Control control;
//   control.start(snapshot);        // after the workers start
//   control.apply(new_snapshot);    // on reload: checks restart for the new config
//   control.stop();                 // on shutdown
//
// It writes only into the shared TargetState objects (atomics), which every worker reads when
// it picks a target; it never touches a worker's loop. Everything it runs is bounded by the
// health check's timeout or the resolver's own limits.
#pragma once

#include <memory>

namespace sluice::server {

struct Snapshot;

class Control {
 public:
  Control();
  ~Control();
  Control(const Control&) = delete;
  Control& operator=(const Control&) = delete;

  void start(std::shared_ptr<const Snapshot> snapshot);  // any thread
  void apply(std::shared_ptr<const Snapshot> snapshot);  // any thread
  void stop();                                           // any thread; joins

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace sluice::server

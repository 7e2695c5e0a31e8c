// sluice command line (SPEC.md section 1). Only argument handling lives here.
#include <iostream>
#include <string>

#include <fmt/format.h>
#include <openssl/opensslv.h>
#include <CLI/CLI.hpp>
#include <boost/version.hpp>

#include "config/config.h"
#include "config/diff.h"
#include "demo/demo.h"
#include "server/server.h"
#include "server/snapshot.h"

namespace {

int validate(const std::string& path) {
  auto loaded = sluice::config::load_file(path);
  int errors = 0;
  for (const auto& d : loaded.diagnostics) {
    std::cerr << d.str() << "\n";
    if (d.severity == sluice::config::Diagnostic::Severity::Error) ++errors;
  }
  if (!loaded.ok()) {
    std::cerr << fmt::format("{}: {} error(s), configuration is invalid\n", path, errors);
    return 2;
  }
  std::vector<std::string> compile_errors, compile_warnings;
  auto snap = sluice::server::compile_snapshot(std::move(*loaded.config), "", compile_errors,
                                               compile_warnings);
  for (const auto& e : compile_errors) std::cerr << e << "\n";
  for (const auto& w : compile_warnings) std::cerr << w << "\n";
  if (!snap) {
    std::cerr << fmt::format("{}: {} error(s), configuration is invalid\n", path,
                             compile_errors.size());
    return 2;
  }
  std::cout << fmt::format(
      "{}: configuration is valid ({} listener(s), {} upstream(s), {} route(s))\n", path,
      snap->config.listeners.size(), snap->upstreams.size(), snap->routes.size());
  return 0;
}

// `sluice diff OLD NEW`: exit 0 with one line per change ("no changes" when none), 2 when
// either file is invalid.
int diff(const std::string& old_path, const std::string& new_path) {
  auto a = sluice::config::load_file(old_path);
  auto b = sluice::config::load_file(new_path);
  bool ok = true;
  for (auto* loaded : {&a, &b}) {
    for (const auto& d : loaded->diagnostics) {
      if (d.severity == sluice::config::Diagnostic::Severity::Error) std::cerr << d.str() << "\n";
    }
    ok = ok && loaded->ok();
  }
  if (!ok) return 2;
  auto lines = sluice::config::diff(*a.config, *b.config);
  if (lines.empty()) std::cout << "no changes\n";
  for (const auto& l : lines) std::cout << l << "\n";
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"sluice — API gateway and load balancer"};
  app.require_subcommand(0, 1);
  std::string config_path = "sluice.yaml";
  app.add_option("-c,--config", config_path, "config file (default ./sluice.yaml)");

  auto* run = app.add_subcommand("run", "run the gateway");
  run->add_option("-c,--config", config_path, "config file (default ./sluice.yaml)");

  auto* validate_cmd = app.add_subcommand("validate", "check a config and exit (0 = valid)");
  validate_cmd->add_option("-c,--config", config_path, "config file")->required();

  std::string diff_old, diff_new;
  auto* diff_cmd = app.add_subcommand("diff", "what reloading NEW over OLD would change");
  diff_cmd->add_option("OLD", diff_old, "the config running now")->required();
  diff_cmd->add_option("NEW", diff_new, "the config to apply")->required();

  int demo_port = 8080;
  int demo_workers = 1;
  auto* demo = app.add_subcommand("demo", "run the gateway with three built-in demo backends");
  demo->add_option("--port", demo_port, "gateway port (default 8080)");
  int demo_mqtt_port = 1883;
  demo->add_option("--mqtt-port", demo_mqtt_port, "MQTT listener port (default 1883; 0 = none)");
  demo->add_option("--workers", demo_workers,
                   "worker threads (default 1, so the round robin is easy to see)");

  auto* version = app.add_subcommand("version", "print version, build type and libraries");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int rc = app.exit(e);
    return rc == 0 ? 0 : 2;
  }

  if (*version) {
    std::cout << fmt::format("sluice {} ({})\n", SLUICE_VERSION, SLUICE_BUILD_TYPE);
    std::cout << fmt::format("  boost {}.{}.{}, {}, yaml-cpp 0.7, fmt {}.{}.{}\n",
                             BOOST_VERSION / 100000, BOOST_VERSION / 100 % 1000,
                             BOOST_VERSION % 100, OPENSSL_VERSION_TEXT, FMT_VERSION / 10000,
                             FMT_VERSION / 100 % 100, FMT_VERSION % 100);
    return 0;
  }
  if (*validate_cmd) return validate(config_path);
  if (*diff_cmd) return diff(diff_old, diff_new);
  if (*demo) return sluice::demo::run_demo(demo_port, demo_workers, demo_mqtt_port);

  sluice::server::GatewayOptions opts;
  opts.config_path = config_path;
  return sluice::server::run_gateway(opts);
}

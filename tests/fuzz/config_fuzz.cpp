// libFuzzer target for the config loader: any bytes must yield a LoadResult (a config or
// diagnostics), never a crash, a hang, a leak or an escaped exception (yaml-cpp throws freely).
//
//   clang++ -std=c++20 -fsanitize=fuzzer,address -Isrc tests/fuzz/config_fuzz.cpp \
//     src/config/*.cpp src/http/message.cpp $(pkg-config --cflags --libs re2) -lyaml-cpp
//   mkdir -p /tmp/corpus && ./a.out -max_total_time=60 /tmp/corpus tests/fuzz/corpus/config
//
// (libFuzzer writes new inputs into the first directory it is given: keep the seeds second.)
// Seeds named regression-* are inputs that once hung or crashed the loader.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "config/config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // Fixed environment so ${VAR} substitution is deterministic: one set, the rest unset.
  static const bool env_ready = [] {
    setenv("SLUICE_FUZZ_SET", "127.0.0.1:8080", 1);
    return true;
  }();
  (void)env_ready;

  std::string yaml(reinterpret_cast<const char*>(data), size);
  sluice::config::LoadResult result = sluice::config::load_string(yaml, "fuzz.yaml", "/tmp");
  if (result.ok() && result.config->listeners.empty()) __builtin_trap();  // loader invariant
  for (const auto& diagnostic : result.diagnostics) {
    if (diagnostic.str().empty()) __builtin_trap();
  }
  return 0;
}

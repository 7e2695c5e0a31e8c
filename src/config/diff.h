// `sluice diff OLD NEW`: what reloading NEW over OLD would change (a plan before apply).
//
//   for (const auto& line : config::diff(old_cfg, new_cfg)) std::cout << line << "\n";
//
// One line per change, prefixed "+" (added), "-" (removed) or "~" (modified), grouped by
// listeners, upstreams (with their targets) and routes (with their order). Empty = no change.
#pragma once

#include <string>
#include <vector>

#include "config/config.h"

namespace sluice::config {

std::vector<std::string> diff(const Config& old_config, const Config& new_config);

}  // namespace sluice::config

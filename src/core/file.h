// Whole-file reads for configuration and key material (main or control thread only: blocking).
#pragma once

#include <string>

namespace sluice {

// Reads `path` into `out`; false (errno set) when it cannot be opened.
bool read_file(const std::string& path, std::string& out);

}  // namespace sluice

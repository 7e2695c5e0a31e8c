#pragma once
#include <chrono>

namespace sluice {
using Duration = std::chrono::milliseconds;
using namespace std::chrono_literals;
}  // namespace sluice

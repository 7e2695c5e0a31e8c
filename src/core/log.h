// Logging that never blocks a worker.
//
//   log::start({.access = "stdout", .error = "stderr", .level = log::Level::Info});
//   log::error("upstream {} refused connection", addr);   // fmt-style, one JSON line
//   log::access(std::move(line));                          // a pre-formatted access-log line
//
// Each thread appends its access lines to its own bounded byte ring (lock-free, single producer,
// single consumer); error lines go to one mutex-guarded buffer. Two background threads (access,
// error) write them to the files every 20 ms (sooner when a ring fills up). When the disk cannot
// keep up and a queue is full, new lines are dropped and counted (dropped_lines()), so a slow log
// never slows a request. reopen() (SIGUSR1) makes the writer reopen file outputs.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include <fmt/format.h>

namespace sluice::log {

enum class Level { Debug = 0, Info = 1, Warn = 2, Error = 3 };

struct Options {
  std::string access = "stdout";  // stdout | stderr | off | file path
  std::string error = "stderr";
  Level level = Level::Info;
  size_t max_queue_bytes = 16 * 1024 * 1024;  // per thread's ring: beyond this, lines are dropped
};

void start(const Options& options);  // starts (or re-targets) the writer thread
void stop();                         // flushes and joins the writer
void reopen();                       // reopen file outputs at the next write (SIGUSR1)
void set_level(Level level);
bool parse_level(std::string_view text, Level& out);
uint64_t dropped_lines();
bool access_enabled();

void access(std::string&& line);     // one access-log line, without trailing newline
void access(std::string_view line);  // (copied: callers may reuse their buffer)
void write_error(Level level, std::string_view message);

inline bool enabled(Level level);
namespace detail {
extern int g_level;
}
inline bool enabled(Level level) { return static_cast<int>(level) >= detail::g_level; }

template <typename... Args>
void debug(fmt::format_string<Args...> f, Args&&... args) {
  if (enabled(Level::Debug)) write_error(Level::Debug, fmt::format(f, std::forward<Args>(args)...));
}
template <typename... Args>
void info(fmt::format_string<Args...> f, Args&&... args) {
  if (enabled(Level::Info)) write_error(Level::Info, fmt::format(f, std::forward<Args>(args)...));
}
template <typename... Args>
void warn(fmt::format_string<Args...> f, Args&&... args) {
  if (enabled(Level::Warn)) write_error(Level::Warn, fmt::format(f, std::forward<Args>(args)...));
}
template <typename... Args>
void error(fmt::format_string<Args...> f, Args&&... args) {
  if (enabled(Level::Error)) write_error(Level::Error, fmt::format(f, std::forward<Args>(args)...));
}

// Appends `s` to `out` as the inside of a JSON string (quotes not included).
void json_escape(std::string& out, std::string_view s);
// RFC 3339 UTC time with milliseconds, e.g. "2026-11-27T05:25:26.123Z".
std::string rfc3339_now();
void append_rfc3339_now(std::string& out);
// NGINX/Apache common log time, e.g. "27/Nov/2026:05:25:26 +0000" (UTC).
void append_clf_time_now(std::string& out);

}  // namespace sluice::log

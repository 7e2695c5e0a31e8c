#include "core/log.h"

#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <ctime>
#include <mutex>
#include <thread>
#include <vector>

namespace sluice::log {
namespace detail {
int g_level = static_cast<int>(Level::Info);
}

namespace {

// One output stream: a file descriptor we may own.
struct Sink {
  std::string target;  // stdout | stderr | off | path
  int fd = -1;
  bool owned = false;

  void open() {
    close();
    if (target == "off" || target.empty()) return;
    if (target == "stdout") {
      fd = 1;
    } else if (target == "stderr") {
      fd = 2;
    } else {
      fd = ::open(target.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
      owned = fd >= 0;
      if (fd < 0) {
        std::string msg =
            "sluice: cannot open log file " + target + ": " + std::strerror(errno) + "\n";
        (void)!::write(2, msg.data(), msg.size());
      }
    }
  }
  void close() {
    if (owned && fd >= 0) ::close(fd);
    fd = -1;
    owned = false;
  }
  void write_all(const std::string& data) const {
    if (fd < 0) return;
    size_t off = 0;
    while (off < data.size()) {
      ssize_t n = ::write(fd, data.data() + off, data.size() - off);
      if (n < 0) {
        if (errno == EINTR) continue;
        return;  // nowhere to report a failing log; drop
      }
      off += static_cast<size_t>(n);
    }
  }
};

struct Writer {
  std::mutex mu;  // guards everything below except the sinks, which only the writer thread touches
  std::condition_variable cv;
  std::string access_buf;
  std::string error_buf;
  size_t max_bytes = 16 * 1024 * 1024;
  bool stopping = false;
  bool reopen_requested = false;
  std::string access_target = "stdout";
  std::string error_target = "stderr";
  std::thread thread;
  std::atomic<uint64_t> dropped{0};
  std::atomic<bool> access_on{true};
  // The writer wakes every kFlushInterval, or early once kWakeBytes are waiting: never per line
  // (a wake-up per request cost the workers ~15% of their throughput on a busy 2-core box).
  static constexpr auto kFlushInterval = std::chrono::milliseconds(20);
  static constexpr size_t kWakeBytes = 256 * 1024;
  bool wake_pending = false;

  void run() {
    Sink access_sink, error_sink;
    std::string access_out, error_out;
    std::string cur_access, cur_error;
    bool first = true;
    for (;;) {
      bool reopen_now = false;
      bool stop_now = false;
      {
        std::unique_lock lock(mu);
        cv.wait_for(lock, kFlushInterval,
                    [&] { return stopping || reopen_requested || wake_pending; });
        wake_pending = false;
        access_out.swap(access_buf);
        error_out.swap(error_buf);
        reopen_now =
            reopen_requested || first || access_target != cur_access || error_target != cur_error;
        reopen_requested = false;
        cur_access = access_target;
        cur_error = error_target;
        stop_now = stopping;
      }
      if (reopen_now) {
        access_sink.target = cur_access;
        error_sink.target = cur_error;
        access_sink.open();
        error_sink.open();
        first = false;
      }
      error_sink.write_all(error_out);
      access_sink.write_all(access_out);
      access_out.clear();
      error_out.clear();
      if (stop_now) break;
    }
    access_sink.close();
    error_sink.close();
  }

  void push(std::string& buf, std::string_view line) {
    std::lock_guard lock(mu);
    if (buf.size() + line.size() > max_bytes) {
      dropped.fetch_add(1, std::memory_order_relaxed);
      return;
    }
    buf.append(line);
    buf.push_back('\n');
    if (!wake_pending && access_buf.size() + error_buf.size() >= kWakeBytes) {
      wake_pending = true;
      cv.notify_one();
    }
  }
};

Writer& writer() {
  static Writer* w = new Writer();  // intentionally leaked: usable during static destruction
  return *w;
}

constexpr std::string_view level_name(Level l) {
  switch (l) {
    case Level::Debug:
      return "debug";
    case Level::Info:
      return "info";
    case Level::Warn:
      return "warn";
    case Level::Error:
      return "error";
  }
  return "info";
}

}  // namespace

void start(const Options& options) {
  Writer& w = writer();
  {
    std::lock_guard lock(w.mu);
    w.access_target = options.access;
    w.error_target = options.error;
    w.max_bytes = options.max_queue_bytes;
    w.access_on = options.access != "off";
    w.stopping = false;
  }
  set_level(options.level);
  if (!w.thread.joinable()) w.thread = std::thread([&w] { w.run(); });
  w.cv.notify_one();
}

void stop() {
  Writer& w = writer();
  {
    std::lock_guard lock(w.mu);
    w.stopping = true;
  }
  w.cv.notify_one();
  if (w.thread.joinable()) w.thread.join();
}

void reopen() {
  Writer& w = writer();
  {
    std::lock_guard lock(w.mu);
    w.reopen_requested = true;
  }
  w.cv.notify_one();
}

void set_level(Level level) { detail::g_level = static_cast<int>(level); }

bool parse_level(std::string_view text, Level& out) {
  for (Level l : {Level::Debug, Level::Info, Level::Warn, Level::Error}) {
    if (text == level_name(l)) {
      out = l;
      return true;
    }
  }
  return false;
}

uint64_t dropped_lines() { return writer().dropped.load(std::memory_order_relaxed); }
bool access_enabled() { return writer().access_on.load(std::memory_order_relaxed); }

void access(std::string&& line) {
  Writer& w = writer();
  w.push(w.access_buf, line);
}

void access(std::string_view line) {
  Writer& w = writer();
  w.push(w.access_buf, line);
}

void write_error(Level level, std::string_view message) {
  std::string line;
  line.reserve(message.size() + 64);
  line += R"({"time":")";
  append_rfc3339_now(line);
  line += R"(","level":")";
  line += level_name(level);
  line += R"(","msg":")";
  json_escape(line, message);
  line += "\"}";
  Writer& w = writer();
  if (!w.thread.joinable()) {  // before start(): write directly so early errors are never lost
    line.push_back('\n');
    (void)!::write(2, line.data(), line.size());
    return;
  }
  w.push(w.error_buf, line);
}

void json_escape(std::string& out, std::string_view s) {
  static constexpr char kHex[] = "0123456789abcdef";
  size_t run = 0;  // start of the current run of bytes that need no escaping (appended at once)
  for (size_t i = 0; i < s.size(); ++i) {
    const auto u = static_cast<unsigned char>(s[i]);
    if (u >= 0x20 && u != 0x7f && u != '"' && u != '\\') continue;
    out.append(s.data() + run, i - run);
    run = i + 1;
    switch (u) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        out += "\\u00";
        out += kHex[u >> 4];
        out += kHex[u & 15];
    }
  }
  out.append(s.data() + run, s.size() - run);  // UTF-8 passes through verbatim
}

std::string rfc3339_now() {
  std::string out;
  append_rfc3339_now(out);
  return out;
}

void append_rfc3339_now(std::string& out) {
  using namespace std::chrono;
  // The seconds part is formatted once per second per thread; only milliseconds change.
  thread_local std::time_t cached_second = -1;
  thread_local char cached[32];
  auto now = system_clock::now();
  auto secs = time_point_cast<seconds>(now);
  auto ms = duration_cast<milliseconds>(now - secs).count();
  std::time_t t = system_clock::to_time_t(secs);
  if (t != cached_second) {
    std::tm tm{};
    gmtime_r(&t, &tm);
    std::strftime(cached, sizeof cached, "%Y-%m-%dT%H:%M:%S", &tm);
    cached_second = t;
  }
  out += cached;
  char frac[8] = {'.', char('0' + ms / 100), char('0' + ms / 10 % 10), char('0' + ms % 10), 'Z'};
  out.append(frac, 5);
}

void append_clf_time_now(std::string& out) {
  thread_local std::time_t cached_second = -1;
  thread_local char cached[40];
  std::time_t t = std::time(nullptr);
  if (t != cached_second) {
    std::tm tm{};
    gmtime_r(&t, &tm);
    std::strftime(cached, sizeof cached, "%d/%b/%Y:%H:%M:%S +0000", &tm);
    cached_second = t;
  }
  out += cached;
}

}  // namespace sluice::log

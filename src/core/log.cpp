#include "core/log.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <ctime>
#include <memory>
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
  void write_all(std::string_view data) const {
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

// One worker thread's access-log lines on their way to the writer: a single-producer,
// single-consumer byte ring. The owning thread appends lines and publishes them with one release
// store of `head`; the writer thread writes [tail, head) to the file and releases the space with
// one store of `tail`. No lock, no syscall and no shared cache line written on a worker's path
// except its own ring (a shared swap buffer under a mutex made a worker wait whenever the writer
// was descheduled holding it, which a busy 2-core box does often enough to cost ~5%).
struct Ring {
  explicit Ring(size_t capacity) : cap(capacity), data(new char[capacity]) {}
  const size_t cap;
  const std::unique_ptr<char[]> data;
  alignas(64) std::atomic<uint64_t> head{0};  // bytes ever appended (written by the owner only)
  alignas(64) std::atomic<uint64_t> tail{0};  // bytes ever written out (by the writer only)
  std::atomic<bool> orphaned{false};          // the owning thread has exited: free once drained
};

struct Writer {
  std::mutex mu;  // guards everything below except the sinks, which only the writer threads touch
  std::condition_variable access_cv;  // wakes the access writer (a ring filling up, stop, reopen)
  std::condition_variable error_cv;   // wakes the error writer (stop, reopen)
  std::string error_buf;
  std::vector<std::unique_ptr<Ring>> rings;  // one per thread that has written an access line
  size_t max_bytes = 16 * 1024 * 1024;       // per queue: the error buffer, and each ring
  bool stopping = false;
  bool reopen_access = false;
  bool reopen_error = false;
  std::string access_target = "stdout";
  std::string error_target = "stderr";
  // Two writer threads, so an access log stuck on a stalled disk (or a full pipe) never holds
  // back the error log that says lines are being dropped.
  std::thread access_thread;
  std::thread error_thread;
  std::atomic<uint64_t> dropped{0};
  std::atomic<bool> access_on{true};
  // The writers wake every kFlushInterval; the access writer also early once a ring holds a
  // quarter of its capacity (at most 1 MiB): never per line (a wake-up per request cost the
  // workers ~15% of their throughput on a busy 2-core box; every wake-up may preempt a worker).
  static constexpr auto kFlushInterval = std::chrono::milliseconds(20);
  static constexpr size_t kWakeBytes = 1024 * 1024;
  std::atomic<bool> wake_pending{false};

  void run_access() {
    Sink sink;
    std::string cur;
    std::vector<Ring*> drain;
    bool first = true;
    for (;;) {
      bool reopen_now = false;
      bool stop_now = false;
      {
        std::unique_lock lock(mu);
        access_cv.wait_for(lock, kFlushInterval, [&] {
          return stopping || reopen_access || wake_pending.load(std::memory_order_relaxed);
        });
        wake_pending.store(false, std::memory_order_relaxed);
        reopen_now = reopen_access || first || access_target != cur;
        reopen_access = false;
        cur = access_target;
        stop_now = stopping;
        drain.clear();
        for (auto& r : rings) drain.push_back(r.get());
      }
      if (reopen_now) {
        sink.target = cur;
        sink.open();
        first = false;
      }
      bool freed = false;
      for (Ring* r : drain) freed |= drain_ring(*r, sink);
      if (freed) {
        std::lock_guard lock(mu);
        std::erase_if(rings, [](const std::unique_ptr<Ring>& r) {
          return r->orphaned.load(std::memory_order_acquire) &&
                 r->tail.load(std::memory_order_relaxed) == r->head.load(std::memory_order_acquire);
        });
      }
      if (stop_now) break;
    }
    sink.close();
  }

  void run_error() {
    Sink sink;
    std::string out, cur;
    bool first = true;
    for (;;) {
      bool reopen_now = false;
      bool stop_now = false;
      {
        std::unique_lock lock(mu);
        error_cv.wait_for(lock, kFlushInterval, [&] { return stopping || reopen_error; });
        out.swap(error_buf);
        reopen_now = reopen_error || first || error_target != cur;
        reopen_error = false;
        cur = error_target;
        stop_now = stopping;
      }
      if (reopen_now) {
        sink.target = cur;
        sink.open();
        first = false;
      }
      sink.write_all(out);
      out.clear();
      if (stop_now) break;
    }
    sink.close();
  }

  // Writes out what the ring holds; true when its thread is gone and it is now empty.
  static bool drain_ring(Ring& r, const Sink& sink) {
    const bool orphaned = r.orphaned.load(std::memory_order_acquire);  // before reading head
    const uint64_t t = r.tail.load(std::memory_order_relaxed);
    const uint64_t h = r.head.load(std::memory_order_acquire);
    if (h != t) {
      const size_t from = t % r.cap;
      const size_t n = h - t;
      const size_t first = std::min(n, r.cap - from);
      sink.write_all(std::string_view(r.data.get() + from, first));
      if (n > first) sink.write_all(std::string_view(r.data.get(), n - first));
      r.tail.store(h, std::memory_order_release);
    }
    return orphaned;
  }

  // Owner thread only. Drops (and counts) the line when the ring is full.
  void push_access(Ring& r, std::string_view line) {
    const uint64_t h = r.head.load(std::memory_order_relaxed);
    const uint64_t used = h - r.tail.load(std::memory_order_acquire);
    const size_t need = line.size() + 1;
    if (used + need > r.cap) {
      dropped.fetch_add(1, std::memory_order_relaxed);
      return;
    }
    const size_t at = h % r.cap;
    const size_t first = std::min(line.size(), r.cap - at);
    std::memcpy(r.data.get() + at, line.data(), first);
    std::memcpy(r.data.get(), line.data() + first, line.size() - first);
    r.data[(h + line.size()) % r.cap] = '\n';
    r.head.store(h + need, std::memory_order_release);
    if (used + need >= std::min(kWakeBytes, r.cap / 4) &&
        !wake_pending.load(std::memory_order_relaxed) &&
        !wake_pending.exchange(true, std::memory_order_relaxed)) {
      access_cv.notify_one();  // without the mutex: a missed wake-up waits for the next interval
    }
  }

  // The calling thread's ring, created and registered on its first access line.
  Ring& thread_ring() {
    struct Owner {
      Ring* ring = nullptr;
      ~Owner() {
        if (ring) ring->orphaned.store(true, std::memory_order_release);
      }
    };
    thread_local Owner owner;
    if (!owner.ring) {
      std::lock_guard lock(mu);
      rings.push_back(std::make_unique<Ring>(max_bytes));
      owner.ring = rings.back().get();
    }
    return *owner.ring;
  }

  void push_error(std::string_view line) {
    std::lock_guard lock(mu);
    if (error_buf.size() + line.size() > max_bytes) {
      dropped.fetch_add(1, std::memory_order_relaxed);
      return;
    }
    error_buf.append(line);
    error_buf.push_back('\n');
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
  if (!w.access_thread.joinable()) w.access_thread = std::thread([&w] { w.run_access(); });
  if (!w.error_thread.joinable()) w.error_thread = std::thread([&w] { w.run_error(); });
  w.access_cv.notify_one();
  w.error_cv.notify_one();
}

void stop() {
  Writer& w = writer();
  {
    std::lock_guard lock(w.mu);
    w.stopping = true;
  }
  w.access_cv.notify_one();
  w.error_cv.notify_one();
  if (w.access_thread.joinable()) w.access_thread.join();
  if (w.error_thread.joinable()) w.error_thread.join();
}

void reopen() {
  Writer& w = writer();
  {
    std::lock_guard lock(w.mu);
    w.reopen_access = true;
    w.reopen_error = true;
  }
  w.access_cv.notify_one();
  w.error_cv.notify_one();
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

void access(std::string&& line) { access(std::string_view(line)); }

void access(std::string_view line) {
  Writer& w = writer();
  w.push_access(w.thread_ring(), line);
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
  if (!w.error_thread
           .joinable()) {  // before start(): write directly so early errors are never lost
    line.push_back('\n');
    (void)!::write(2, line.data(), line.size());
    return;
  }
  w.push_error(line);
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

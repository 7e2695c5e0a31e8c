// An asynchronous Redis client for one event loop: hiredis encodes commands and parses replies,
// Asio does the I/O. Commands are pipelined on one connection; each has a deadline.
//
//   RedisClient redis(io, {host, port, timeout});
//   redis.command({"EVALSHA", sha, "1", key, ...}, [](const RedisReply& r) { ... });
//
// Never blocks the loop. Bounded: at most kMaxInFlight commands wait for a reply; a command
// that gets no reply within `timeout` fails (its late reply is read and dropped); a connection
// that stops answering is closed. While Redis is down, commands fail at once and the client
// reconnects by itself with a growing delay (100 ms to 2 s). `scripts` are loaded (SCRIPT LOAD)
// on every new connection, so EVALSHA works after a Redis restart.
//
// One client per thread: every method runs on the loop's thread.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/duration.h"

namespace boost::asio {
class io_context;
}

namespace sluice::server {

struct RedisReply {
  enum class Type { Error, Nil, Integer, String, Status, Array };
  Type type = Type::Error;
  int64_t integer = 0;
  std::string str;  // String, Status, Error (the message, or why the command failed)
  std::vector<RedisReply> elements;
  bool ok() const { return type != Type::Error; }
};

struct RedisOptions {
  std::string host = "127.0.0.1";
  uint16_t port = 6379;
  Duration timeout = std::chrono::milliseconds(50);
  std::vector<std::string> scripts;  // loaded on every connection
};

class RedisClient {
 public:
  static constexpr size_t kMaxInFlight = 10000;
  using Callback = std::function<void(const RedisReply&)>;

  RedisClient(boost::asio::io_context& io, RedisOptions options);
  ~RedisClient();  // pending callbacks get an error reply
  RedisClient(const RedisClient&) = delete;
  RedisClient& operator=(const RedisClient&) = delete;

  // `done` runs exactly once, on the loop, never inside this call.
  void command(std::vector<std::string> args, Callback done);

  bool connected() const;
  // The SHA1 hex of a script, as EVALSHA wants it.
  static std::string script_sha(const std::string& script);

 private:
  struct Impl;
  std::shared_ptr<Impl> impl_;
};

// The calling worker thread's client for `rate_limits.redis` (null when none is configured);
// set by the worker on its own thread.
RedisClient* current_redis();
void set_current_redis(RedisClient* client);

}  // namespace sluice::server

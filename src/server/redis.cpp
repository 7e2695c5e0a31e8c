#include "server/redis.h"

#include <hiredis/hiredis.h>
#include <openssl/evp.h>

#include <fmt/format.h>

#include "core/log.h"
#include "server/asio.h"
#include "server/watchdog.h"

namespace sluice::server {
namespace {

using Clock = std::chrono::steady_clock;
constexpr Duration kMinBackoff = std::chrono::milliseconds(100);
constexpr Duration kMaxBackoff = std::chrono::seconds(2);

RedisReply convert(const redisReply* r) {
  RedisReply out;
  switch (r->type) {
    case REDIS_REPLY_STRING:
      out.type = RedisReply::Type::String;
      out.str.assign(r->str, r->len);
      break;
    case REDIS_REPLY_STATUS:
      out.type = RedisReply::Type::Status;
      out.str.assign(r->str, r->len);
      break;
    case REDIS_REPLY_ERROR:
      out.type = RedisReply::Type::Error;
      out.str.assign(r->str, r->len);
      break;
    case REDIS_REPLY_INTEGER:
      out.type = RedisReply::Type::Integer;
      out.integer = r->integer;
      break;
    case REDIS_REPLY_NIL:
      out.type = RedisReply::Type::Nil;
      break;
    case REDIS_REPLY_ARRAY:
      out.type = RedisReply::Type::Array;
      for (size_t i = 0; i < r->elements; ++i) out.elements.push_back(convert(r->element[i]));
      break;
    default:
      out.type = RedisReply::Type::Error;
      out.str = "unexpected reply type";
  }
  return out;
}

RedisReply failure(std::string why) {
  RedisReply r;
  r.type = RedisReply::Type::Error;
  r.str = std::move(why);
  return r;
}

}  // namespace

struct RedisClient::Impl : std::enable_shared_from_this<Impl> {
  struct Pending {
    Callback done;
    Clock::time_point deadline;
    bool answered = false;
  };
  enum class State { Idle, Connecting, Up, Backoff };

  Impl(asio::io_context& io_, RedisOptions o)
      : io(io_), opt(std::move(o)), sock(io_), ticker(io_), reader(redisReaderCreate()) {}
  ~Impl() { redisReaderFree(reader); }

  asio::io_context& io;
  RedisOptions opt;
  tcp::socket sock;
  asio::steady_timer ticker;
  redisReader* reader;
  State state = State::Idle;
  Clock::time_point retry_at;
  Duration backoff = kMinBackoff;
  std::deque<Pending> inflight;  // in the order their replies will come
  std::string out;               // formatted, not written yet
  bool writing = false;
  bool ticking = false;
  bool closed = false;
  uint64_t generation = 0;  // bumped per connection: coroutines of an older one stop

  void reply_later(Callback done, RedisReply r) {
    asio::post(io, [done = std::move(done), r = std::move(r)] { done(r); });
  }

  void append(const std::vector<std::string>& args) {
    std::vector<const char*> argv;
    std::vector<size_t> lens;
    for (const auto& a : args) {
      argv.push_back(a.data());
      lens.push_back(a.size());
    }
    char* cmd = nullptr;
    int n = redisFormatCommandArgv(&cmd, static_cast<int>(args.size()), argv.data(), lens.data());
    if (n > 0) out.append(cmd, static_cast<size_t>(n));
    redisFreeCommand(cmd);
  }

  void command(std::vector<std::string> args, Callback done) {
    if (closed) return reply_later(std::move(done), failure("redis client closed"));
    if (state == State::Backoff && Clock::now() < retry_at) {
      return reply_later(std::move(done), failure("redis unavailable"));
    }
    if (inflight.size() >= kMaxInFlight) {
      return reply_later(std::move(done), failure("too many redis commands in flight"));
    }
    append(args);
    inflight.push_back({std::move(done), Clock::now() + opt.timeout, false});
    start_ticker();
    if (state == State::Idle || state == State::Backoff) {
      connect();
    } else if (state == State::Up) {
      start_writer();
    }
  }

  void connect() {
    state = State::Connecting;
    ++generation;
    asio::co_spawn(io, connect_loop(shared_from_this(), generation), asio::detached);
  }

  static asio::awaitable<void> connect_loop(std::shared_ptr<Impl> self, uint64_t gen) {
    error_code ec;
    tcp::resolver resolver(self->io);
    Watchdog wd(self->io.get_executor());
    auto [rec, results] = co_await resolver.async_resolve(
        self->opt.host, std::to_string(self->opt.port), use_nothrow);
    if (self->closed || gen != self->generation) co_return;
    if (rec || results.empty()) {
      self->fail(fmt::format("cannot resolve redis host {}: {}", self->opt.host, rec.message()));
      co_return;
    }
    tcp::endpoint ep = *results.begin();
    self->sock = tcp::socket(self->io);
    self->sock.open(ep.protocol(), ec);
    wd.arm(std::max(self->opt.timeout, Duration(std::chrono::milliseconds(200))), &self->sock);
    auto [cec] = co_await self->sock.async_connect(ep, use_nothrow);
    wd.disarm();
    if (self->closed || gen != self->generation) co_return;
    if (cec) {
      self->fail(fmt::format("cannot connect to redis {}:{}: {}", self->opt.host, self->opt.port,
                             wd.expired() ? std::string("timeout") : cec.message()));
      co_return;
    }
    self->sock.set_option(tcp::no_delay(true), ec);
    // Scripts first: they go out before the commands that were queued while connecting.
    std::string queued = std::move(self->out);
    self->out.clear();
    std::deque<Pending> scripts;
    for (const auto& script : self->opt.scripts) {
      self->append({"SCRIPT", "LOAD", script});
      scripts.push_back({[](const RedisReply& r) {
                           if (!r.ok()) log::warn("redis: SCRIPT LOAD failed: {}", r.str);
                         },
                         Clock::now() + self->opt.timeout * 4, false});
    }
    self->out += queued;
    for (auto it = scripts.rbegin(); it != scripts.rend(); ++it) {
      self->inflight.push_front(std::move(*it));
    }
    if (self->backoff > kMinBackoff) {
      log::info("redis {}:{}: connected again", self->opt.host, self->opt.port);
    }
    self->backoff = kMinBackoff;
    self->state = State::Up;
    redisReaderFree(self->reader);
    self->reader = redisReaderCreate();
    asio::co_spawn(self->io, read_loop(self, gen), asio::detached);
    self->start_writer();
  }

  void start_writer() {
    if (writing || out.empty() || state != State::Up) return;
    writing = true;
    asio::co_spawn(io, write_loop(shared_from_this(), generation), asio::detached);
  }

  static asio::awaitable<void> write_loop(std::shared_ptr<Impl> self, uint64_t gen) {
    std::string buf;
    while (!self->out.empty() && !self->closed && gen == self->generation) {
      buf.swap(self->out);
      self->out.clear();
      auto [ec, n] = co_await asio::async_write(self->sock, asio::buffer(buf), use_nothrow);
      buf.clear();
      if (self->closed || gen != self->generation) break;
      if (ec) {
        self->fail("redis write failed: " + ec.message());
        break;
      }
    }
    if (gen == self->generation) self->writing = false;
  }

  static asio::awaitable<void> read_loop(std::shared_ptr<Impl> self, uint64_t gen) {
    char buf[16 * 1024];
    for (;;) {
      auto [ec, n] = co_await self->sock.async_read_some(asio::buffer(buf), use_nothrow);
      if (self->closed || gen != self->generation) co_return;
      if (ec) {
        self->fail("redis connection lost: " + ec.message());
        co_return;
      }
      if (redisReaderFeed(self->reader, buf, n) != REDIS_OK) {
        self->fail("redis protocol error");
        co_return;
      }
      for (;;) {
        void* raw = nullptr;
        if (redisReaderGetReply(self->reader, &raw) != REDIS_OK) {
          self->fail("redis protocol error");
          co_return;
        }
        if (raw == nullptr) break;
        RedisReply reply = convert(static_cast<redisReply*>(raw));
        freeReplyObject(raw);
        if (self->inflight.empty()) {
          self->fail("redis sent a reply nobody asked for");
          co_return;
        }
        Pending p = std::move(self->inflight.front());
        self->inflight.pop_front();
        if (!p.answered) p.done(reply);
        if (self->closed || gen != self->generation) co_return;
      }
    }
  }

  // The connection is unusable: every waiting command fails, and the next command after the
  // back-off delay reconnects.
  void fail(const std::string& why) {
    if (state != State::Backoff) {
      log::warn("redis {}:{}: {} (retrying in {} ms)", opt.host, opt.port, why, backoff.count());
    }
    ++generation;
    error_code ignored;
    sock.close(ignored);
    out.clear();
    writing = false;
    state = State::Backoff;
    retry_at = Clock::now() + backoff;
    backoff = std::min(backoff * 2, kMaxBackoff);
    std::deque<Pending> failed;
    failed.swap(inflight);
    for (auto& p : failed) {
      if (!p.answered) reply_later(std::move(p.done), failure("redis unavailable: " + why));
    }
  }

  // While commands wait: fail those past their deadline; a connection whose oldest command
  // waited four timeouts is treated as dead.
  void start_ticker() {
    if (ticking) return;
    ticking = true;
    asio::co_spawn(io, tick_loop(shared_from_this()), asio::detached);
  }

  static asio::awaitable<void> tick_loop(std::shared_ptr<Impl> self) {
    const auto step = std::max<Duration>(std::chrono::milliseconds(1), self->opt.timeout / 4);
    while (!self->closed && !self->inflight.empty()) {
      self->ticker.expires_after(step);
      co_await self->ticker.async_wait(use_nothrow);
      if (self->closed) break;
      auto now = Clock::now();
      for (auto& p : self->inflight) {
        if (p.answered || p.deadline > now) continue;
        p.answered = true;
        Callback done = std::move(p.done);
        done(failure("redis timeout"));
        if (self->closed) co_return;
      }
      if (!self->inflight.empty() && self->state == State::Up &&
          now - self->inflight.front().deadline > self->opt.timeout * 4) {
        self->fail("redis stopped answering");
      }
    }
    self->ticking = false;
  }

  void close() {
    closed = true;
    ++generation;
    error_code ignored;
    sock.close(ignored);
    ticker.cancel();
    std::deque<Pending> failed;
    failed.swap(inflight);
    for (auto& p : failed) {
      if (!p.answered) p.done(failure("redis client closed"));
    }
  }
};

RedisClient::RedisClient(asio::io_context& io, RedisOptions options)
    : impl_(std::make_shared<Impl>(io, std::move(options))) {}

RedisClient::~RedisClient() { impl_->close(); }

void RedisClient::command(std::vector<std::string> args, Callback done) {
  impl_->command(std::move(args), std::move(done));
}

bool RedisClient::connected() const { return impl_->state == Impl::State::Up; }

namespace {
thread_local RedisClient* t_current = nullptr;
}
RedisClient* current_redis() { return t_current; }
void set_current_redis(RedisClient* client) { t_current = client; }

std::string RedisClient::script_sha(const std::string& script) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_Digest(script.data(), script.size(), digest, &len, EVP_sha1(), nullptr);
  std::string hex;
  for (unsigned int i = 0; i < len; ++i) hex += fmt::format("{:02x}", digest[i]);
  return hex;
}

}  // namespace sluice::server

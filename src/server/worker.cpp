#include "server/worker.h"

#include <sys/socket.h>

#include <ctime>

#include <fmt/format.h>

#include "core/log.h"
#include "filters/rate_limit.h"
#include "proxy/h2_proxy.h"
#include "proxy/http_session.h"
#include "proxy/mqtt_session.h"
#include "proxy/tcp_session.h"
#include "proxy/udp_session.h"
#include "server/redis.h"
#include "server/tls_stream.h"

namespace sluice::server {

UpstreamConnection::UpstreamConnection(asio::io_context& io) : socket(io) {}
UpstreamConnection::~UpstreamConnection() {
  if (lane) lane->close();  // the HTTP/2 stream behind it ends (reset if unfinished)
}
Io UpstreamConnection::io() const {
  if (lane) return Io{nullptr, nullptr, lane.get()};
  return Io{const_cast<tcp::socket*>(&socket), tls.get()};
}

// ---- UpstreamPool ----

namespace {
// An idle pooled connection is usable when the peer has neither closed it nor sent anything.
// Over TLS, bytes may be records that are not data (a late session ticket): only a close or an
// error counts there, and a close_notify among those bytes shows up as a stale connection,
// which the proxy retries.
bool still_open(UpstreamConnection& c) {
  char ch;
  ssize_t n = ::recv(c.socket.native_handle(), &ch, 1, MSG_PEEK | MSG_DONTWAIT);
  if (n > 0) return c.tls != nullptr;
  return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
}
}  // namespace

std::unique_ptr<UpstreamConnection> UpstreamPool::acquire(const std::string& key,
                                                          Duration idle_timeout, bool replayable) {
  auto it = idle_.find(key);
  if (it == idle_.end()) return nullptr;
  auto& list = it->second;
  auto now = std::chrono::steady_clock::now();
  while (!list.empty()) {
    std::unique_ptr<UpstreamConnection> c = std::move(list.back());
    list.pop_back();
    auto idle = now - c->idle_since;
    if (idle >= idle_timeout) continue;
    // For a replayable request, a connection used moments ago is taken on trust (saves a
    // syscall per request): if the upstream closed it anyway, the request is retried on a fresh
    // connection. Anything else is probed first.
    if ((replayable && idle < std::chrono::milliseconds(200)) || still_open(*c)) return c;
  }
  return nullptr;
}

void UpstreamPool::release(std::unique_ptr<UpstreamConnection> conn) {
  if (conn->lane) return;  // an HTTP/2 stream: done (its connection is pooled by h2_proxy.cpp)
  auto& list = idle_[conn->key];
  if (list.size() >= kMaxIdlePerTarget) return;  // closes it
  conn->idle_since = std::chrono::steady_clock::now();
  list.push_back(std::move(conn));
}

void UpstreamPool::sweep(Duration idle_timeout) {
  auto now = std::chrono::steady_clock::now();
  for (auto it = idle_.begin(); it != idle_.end();) {
    std::erase_if(it->second, [&](const std::unique_ptr<UpstreamConnection>& c) {
      return now - c->idle_since >= idle_timeout || !still_open(*c);
    });
    // (keys come and go: one per client for upstreams with proxy_protocol)
    it = it->second.empty() ? idle_.erase(it) : std::next(it);
  }
}

void UpstreamPool::clear() { idle_.clear(); }

size_t UpstreamPool::idle_count() const {
  size_t n = 0;
  for (const auto& [key, list] : idle_) n += list.size();
  return n;
}

// ---- BufferPool ----

IoBuffer BufferPool::take(size_t min_size) {
  for (size_t i = free_.size(); i-- > 0;) {
    if (free_[i].size() >= min_size) {
      IoBuffer b = std::move(free_[i]);
      free_[i] = std::move(free_.back());
      free_.pop_back();
      pooled_bytes_ -= b.size();
      return b;
    }
  }
  return IoBuffer(min_size);
}

void BufferPool::give(IoBuffer&& buf) {
  if (buf.empty() || pooled_bytes_ + buf.size() > kMaxPooledBytes) return;
  pooled_bytes_ += buf.size();
  free_.push_back(std::move(buf));
}

// ---- Worker ----

Worker::Worker(int id) : id_(id), rng_(std::random_device{}() ^ (uint64_t(id) << 32)) {}

Worker::~Worker() {
  stop();
  // Order matters: sockets and timers before their io_context; the io_context (whose destructor
  // destroys the frames of connections still open after a drain timeout) before the pools and
  // the session set those frames' destructors use.
  acceptors_.clear();
  udp_sockets_.clear();
  pool_.clear();
  redis_.reset();
  io_.reset();
}

void Worker::update_redis() {
  const auto& redis = snapshot_->config.rate_limits.redis;
  bool any_global = false, any_sync = false;
  for (const auto& r : snapshot_->config.routes) {
    for (const auto& rl : r.rate_limits) {
      if (rl.scope != config::RateLimit::Scope::Global) continue;
      any_global = true;
      any_sync = any_sync || rl.sync.count() > 0;
    }
  }
  std::string settings = redis && any_global ? fmt::format("{}:{}/{}", redis->host, redis->port,
                                                           redis->timeout.count())
                                             : std::string();
  if (settings == redis_settings_) return;
  redis_settings_ = settings;
  ++redis_generation_;
  set_current_redis(nullptr);
  redis_.reset();
  if (settings.empty()) return;
  RedisOptions o;
  o.host = redis->host;
  o.port = redis->port;
  o.timeout = redis->timeout;
  o.scripts = filters::rate_limit_scripts();
  redis_ = std::make_unique<RedisClient>(*io_, std::move(o));
  set_current_redis(redis_.get());
  if (any_sync) asio::co_spawn(*io_, rate_sync_loop(redis_generation_), asio::detached);
}

// `sync: <interval>` global limits: every 10 ms, send the deltas whose interval is due.
asio::awaitable<void> Worker::rate_sync_loop(uint64_t generation) {
  asio::steady_timer timer(*io_);
  while (generation == redis_generation_ && !draining_) {
    timer.expires_after(std::chrono::milliseconds(10));
    auto [ec] = co_await timer.async_wait(use_nothrow);
    if (ec || generation != redis_generation_ || !redis_) co_return;
    filters::flush_rate_limit_deltas(*redis_);
  }
}

void Worker::start(std::shared_ptr<const Snapshot> snapshot, std::vector<ListenerSocket> sockets) {
  asio::post(*io_, [this, snapshot = std::move(snapshot), sockets = std::move(sockets)]() mutable {
    snapshot_ = std::move(snapshot);
    metrics_ = metrics_registry().add_worker(snapshot_->layout);
    update_redis();
    for (auto& s : sockets) open_listener(std::move(s));
    asio::co_spawn(*io_, housekeeping(), asio::detached);
  });
  thread_ = std::thread([this] {
    for (;;) {
      try {
        io_->run();
        break;
      } catch (const std::exception& e) {
        // A bug escaped a handler: log it and keep the worker serving.
        log::error("worker {}: unexpected exception: {}", id_, e.what());
      }
    }
  });
}

void Worker::apply(std::shared_ptr<const Snapshot> snapshot, std::vector<ListenerSocket> added,
                   std::vector<std::string> removed) {
  asio::post(*io_, [this, snapshot = std::move(snapshot), added = std::move(added),
                    removed = std::move(removed)]() mutable {
    snapshot_ = std::move(snapshot);
    metrics_ = metrics_registry().add_worker(snapshot_->layout);
    update_redis();
    for (const auto& key : removed) close_listener(key);
    for (auto& s : added) open_listener(std::move(s));
  });
}

void Worker::drain() {
  asio::post(*io_, [this] {
    draining_ = true;
    for (auto& [key, acc] : acceptors_) {
      error_code ignored;
      acc->close(ignored);
    }
    acceptors_.clear();
    for (auto& [key, sock] : udp_sockets_) {
      error_code ignored;
      sock->close(ignored);  // its loop ends every session (one log line each)
    }
    udp_sockets_.clear();
    pool_.clear();
    proxy::close_h2_upstreams();
    // on_drain may end a session, which removes itself from the set: iterate over a copy.
    std::vector<Session*> sessions(sessions_.begin(), sessions_.end());
    for (Session* s : sessions) s->on_drain();
  });
}

void Worker::stop() {
  if (!thread_.joinable()) return;
  io_->stop();
  thread_.join();
}

void Worker::close_listener(const std::string& key) {
  error_code ignored;
  if (auto it = acceptors_.find(key); it != acceptors_.end()) {
    it->second->close(ignored);
    acceptors_.erase(it);
  }
  if (auto it = udp_sockets_.find(key); it != udp_sockets_.end()) {
    it->second->close(ignored);
    udp_sockets_.erase(it);
  }
}

void Worker::open_listener(ListenerSocket ls) {
  error_code ec;
  int family = 0;
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  if (::getsockname(ls.fd, reinterpret_cast<sockaddr*>(&ss), &len) == 0) family = ss.ss_family;
  int type = 0;
  socklen_t type_len = sizeof type;
  ::getsockopt(ls.fd, SOL_SOCKET, SO_TYPE, &type, &type_len);
  if (type == SOCK_DGRAM) {
    using udp = asio::ip::udp;
    auto sock = std::make_shared<udp::socket>(*io_);
    sock->assign(family == AF_INET6 ? udp::v6() : udp::v4(), ls.fd, ec);
    if (ec) {
      log::error("worker {}: cannot adopt listener {}: {}", id_, ls.key, ec.message());
      ::close(ls.fd);
      return;
    }
    udp_sockets_[ls.key] = sock;
    connections_.fetch_add(1, std::memory_order_relaxed);  // (drain waits for its last log lines)
    asio::co_spawn(*io_, proxy::serve_udp(*this, sock, ls.name),
                   [this](std::exception_ptr e) { connection_ended(e, "udp listener"); });
    return;
  }
  auto acc = std::make_shared<tcp::acceptor>(*io_);
  acc->assign(family == AF_INET6 ? tcp::v6() : tcp::v4(), ls.fd, ec);
  if (ec) {
    log::error("worker {}: cannot adopt listener {}: {}", id_, ls.key, ec.message());
    ::close(ls.fd);
    return;
  }
  acceptors_[ls.key] = acc;
  asio::co_spawn(*io_, accept_loop(acc, ls.name), asio::detached);
}

asio::awaitable<void> Worker::accept_loop(std::shared_ptr<tcp::acceptor> acceptor,
                                          std::string name) {
  for (;;) {
    auto [ec, socket] = co_await acceptor->async_accept(use_nothrow);
    if (ec) {
      if (ec == asio::error::operation_aborted || !acceptor->is_open()) co_return;
      // EMFILE and friends: back off briefly instead of spinning.
      log::warn("accept on {} failed: {}", name, ec.message());
      asio::steady_timer t(*io_, std::chrono::milliseconds(50));
      co_await t.async_wait(use_nothrow);
      continue;
    }
    if (draining_) co_return;
    error_code ignored;
    socket.set_option(tcp::no_delay(true), ignored);
    connections_.fetch_add(1, std::memory_order_relaxed);
    const config::Listener* listener = nullptr;
    for (const auto& l : snapshot_->config.listeners) {
      if (l.name == name) listener = &l;
    }
    const std::string_view protocol =
        listener != nullptr ? std::string_view(listener->protocol) : std::string_view("http");
    auto session = protocol == "mqtt"  ? proxy::serve_mqtt(*this, std::move(socket), name)
                   : protocol == "tcp" ? proxy::serve_tcp(*this, std::move(socket), name)
                                       : proxy::serve_http(*this, std::move(socket), name);
    asio::co_spawn(*io_, std::move(session),
                   [this](std::exception_ptr e) { connection_ended(e, "connection"); });
  }
}

void Worker::connection_ended(std::exception_ptr e, std::string_view what) {
  connections_.fetch_sub(1, std::memory_order_relaxed);
  if (!e) return;
  try {
    std::rethrow_exception(e);
  } catch (const std::exception& ex) {
    log::error("{} ended by unexpected exception: {}", what, ex.what());
  }
}

asio::awaitable<void> Worker::housekeeping() {
  asio::steady_timer timer(*io_);
  for (;;) {
    timer.expires_after(std::chrono::seconds(1));
    auto [ec] = co_await timer.async_wait(use_nothrow);
    if (ec) co_return;
    Duration idle = std::chrono::seconds(60);
    if (snapshot_ != nullptr && !snapshot_->upstreams.empty()) {
      idle = snapshot_->upstreams.front().config->timeouts.idle;
      for (const auto& u : snapshot_->upstreams) idle = std::min(idle, u.config->timeouts.idle);
    }
    pool_.sweep(idle);
    if (draining_ && connections_.load() == 0) co_return;
  }
}

upstream::Balancer& Worker::balancer(const Snapshot& snap, size_t upstream_index) {
  // Built for the caller's snapshot: a session finishing an exchange on an older snapshot must
  // not index the newer one's tables (rare: the state is rebuilt back on the next new one).
  if (balancers_generation_ != snap.generation) {
    balancers_.clear();
    owned_balancers_.clear();
    for (const auto& u : snap.upstreams) {
      if (u.shared_balancer) {  // immutable (ring_hash, maglev): one table for all workers
        balancers_.push_back(u.shared_balancer.get());
        continue;
      }
      std::vector<uint32_t> weights;
      std::vector<std::string> names;
      for (const auto& t : u.targets) {
        weights.push_back(t.weight);
        names.push_back(t.address);
      }
      owned_balancers_.push_back(upstream::make_balancer(u.algorithm, weights, names));
      balancers_.push_back(owned_balancers_.back().get());
    }
    balancers_generation_ = snap.generation;
  }
  return *balancers_[upstream_index];
}

const std::string& Worker::http_date() {
  std::time_t now = std::time(nullptr);
  if (now != date_second_) {
    std::tm tm{};
    gmtime_r(&now, &tm);
    char buf[64];
    std::strftime(buf, sizeof buf, "%a, %d %b %Y %H:%M:%S GMT", &tm);
    date_ = buf;
    date_second_ = now;
  }
  return date_;
}

void Worker::add_session(Session* s) { sessions_.insert(s); }
void Worker::remove_session(Session* s) { sessions_.erase(s); }

}  // namespace sluice::server

// One event-loop thread: its own io_context, its own listening sockets (SO_REUSEPORT), its own
// upstream connection pools and balancer state. A connection lives and dies on one worker, so
// nothing on the request path takes a lock.
//
// Thread rules: the public methods marked "any thread" post to the loop; everything else is
// called on the worker's own thread.
#pragma once

#include <atomic>
#include <cstdint>
#include <exception>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include <boost/asio/ip/udp.hpp>

#include "server/asio.h"
#include "server/snapshot.h"
#include "stats/rates.h"
#include "stats/topk.h"
#include "upstream/balancer.h"

namespace sluice::server {

class TlsStream;    // server/tls_stream.h
struct Lane;        // server/lane.h
struct Io;          // server/tls_stream.h
class RedisClient;  // server/redis.h

// An idle keep-alive connection to a target.
struct UpstreamConnection {
  explicit UpstreamConnection(asio::io_context& io);
  ~UpstreamConnection();
  UpstreamConnection(const UpstreamConnection&) = delete;
  UpstreamConnection& operator=(const UpstreamConnection&) = delete;
  tcp::socket socket;
  std::unique_ptr<TlsStream> tls;  // over `socket` for an upstream with `tls:`
  // An HTTP/2 upstream: a stream of a shared connection, as HTTP/1 bytes (proxy/h2_proxy.h);
  // `socket` is not used then. Never pooled: the HTTP/2 connection is what is reused.
  std::shared_ptr<Lane> lane;
  Io io() const;    // the lane, or TLS, or the socket
  std::string key;  // CompiledTarget::key
  std::chrono::steady_clock::time_point idle_since;
  uint64_t requests = 0;
};

// Keep-alive pool per target, owned by one worker.
class UpstreamPool {
 public:
  static constexpr size_t kMaxIdlePerTarget = 256;
  // A live idle connection to `key`, or nullptr. `replayable`: the caller can retry the request
  // on a fresh connection if this one turns out dead, so a recently used one skips the probe.
  std::unique_ptr<UpstreamConnection> acquire(const std::string& key, Duration idle_timeout,
                                              bool replayable);
  void release(std::unique_ptr<UpstreamConnection> conn);
  void sweep(Duration idle_timeout);  // close connections idle for longer than idle_timeout
  void clear();
  size_t idle_count() const;

 private:
  std::unordered_map<std::string, std::vector<std::unique_ptr<UpstreamConnection>>> idle_;
};

// An I/O buffer whose bytes are not zeroed on allocation (they are always written before read).
class IoBuffer {
 public:
  IoBuffer() = default;
  explicit IoBuffer(size_t size) : data_(new char[size]), size_(size) {}
  // A moved-from buffer is empty (so giving it back to a BufferPool is a no-op).
  IoBuffer(IoBuffer&& o) noexcept : data_(std::move(o.data_)), size_(std::exchange(o.size_, 0)) {}
  IoBuffer& operator=(IoBuffer&& o) noexcept {
    data_ = std::move(o.data_);
    size_ = std::exchange(o.size_, 0);
    return *this;
  }
  char* data() { return data_.get(); }
  const char* data() const { return data_.get(); }
  size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  void clear() {
    data_.reset();
    size_ = 0;
  }

 private:
  std::unique_ptr<char[]> data_;
  size_t size_ = 0;
};

// Recycled I/O buffers, so idle connections hold none and busy ones rarely allocate.
// Keeps at most kMaxPooledBytes per worker.
class BufferPool {
 public:
  static constexpr size_t kMaxPooledBytes = 32 * 1024 * 1024;
  IoBuffer take(size_t min_size);
  void give(IoBuffer&& buf);

 private:
  std::vector<IoBuffer> free_;
  size_t pooled_bytes_ = 0;
};

// What a session exposes to the worker for draining.
class Session {
 public:
  virtual ~Session() = default;
  virtual void on_drain() = 0;  // close if idle; otherwise finish the current exchange and close
};

struct ListenerSocket {
  std::string key;   // "host:port"
  std::string name;  // listener name
  int fd = -1;       // bound (+ listening for TCP), SO_REUSEPORT; the worker takes ownership
};

class Worker {
 public:
  explicit Worker(int id);
  ~Worker();

  int id() const { return id_; }
  asio::io_context& io() { return *io_; }

  // Any thread. Starts the loop thread with its first snapshot and listening sockets.
  void start(std::shared_ptr<const Snapshot> snapshot, std::vector<ListenerSocket> sockets);
  // Any thread. Swaps in a new snapshot; opens `added` sockets and closes listeners whose key is
  // in `removed`.
  void apply(std::shared_ptr<const Snapshot> snapshot, std::vector<ListenerSocket> added,
             std::vector<std::string> removed);
  // Any thread. Stops accepting, closes idle connections, lets in-flight exchanges finish.
  void drain();
  // Any thread. Stops the loop (after drain or on timeout) and joins the thread.
  void stop();

  int active_connections() const { return connections_.load(std::memory_order_relaxed); }

  // --- worker thread only ---
  const std::shared_ptr<const Snapshot>& snapshot() const { return snapshot_; }
  bool draining() const { return draining_; }
  // The balancer of `snap`'s upstream `upstream_index` (per-worker state).
  upstream::Balancer& balancer(const Snapshot& snap, size_t upstream_index);
  UpstreamPool& pool() { return pool_; }
  BufferPool& buffers() { return buffers_; }
  uint64_t random() { return rng_(); }
  const std::string& http_date();  // IMF-fixdate, refreshed once per second
  // This worker's metrics block for snapshot() (a new one per generation), and its traffic
  // figures (requests per second, top clients).
  const std::shared_ptr<stats::WorkerMetrics>& metrics() const { return metrics_; }
  stats::RateRing& rates() { return *rates_; }
  // Any thread (internally locked; only this worker writes).
  stats::TopK& top_requests() { return top_requests_; }
  stats::TopK& top_bytes() { return top_bytes_; }
  void add_session(Session* s);
  void remove_session(Session* s);

 private:
  void open_listener(ListenerSocket ls);
  void close_listener(const std::string& key);
  asio::awaitable<void> accept_loop(std::shared_ptr<tcp::acceptor> acceptor, std::string name);
  asio::awaitable<void> housekeeping();
  // The end of a coroutine counted in connections_ (a connection, a udp listener's loop): uncounts
  // it, and logs an exception that escaped it (a bug).
  void connection_ended(std::exception_ptr e, std::string_view what);
  // (Re)creates the Redis client when `rate_limits.redis` changed; worker thread.
  void update_redis();
  asio::awaitable<void> rate_sync_loop(uint64_t generation);

  int id_;
  // Destroyed explicitly in ~Worker after the acceptors and pools that use it and before the
  // pools that coroutine frames of still-open connections give their buffers back to.
  // UNSAFE_IO: no locking in the reactor; every I/O object of this loop is used only on its
  // thread (cross-thread calls go through asio::post, which stays locked).
  std::unique_ptr<asio::io_context> io_ =
      std::make_unique<asio::io_context>(BOOST_ASIO_CONCURRENCY_HINT_UNSAFE_IO);
  std::thread thread_;
  std::shared_ptr<const Snapshot> snapshot_;
  std::map<std::string, std::shared_ptr<tcp::acceptor>> acceptors_;
  // `protocol: udp` listeners: the socket their loop (proxy/udp_session.h) receives on.
  std::map<std::string, std::shared_ptr<asio::ip::udp::socket>> udp_sockets_;
  // Per-worker balancer state (round robin positions...), rebuilt when the snapshot changes;
  // hash balancers are immutable tables shared from the snapshot.
  std::vector<upstream::Balancer*> balancers_;
  std::vector<std::unique_ptr<upstream::Balancer>> owned_balancers_;
  uint64_t balancers_generation_ = 0;
  UpstreamPool pool_;
  BufferPool buffers_;
  std::unordered_set<Session*> sessions_;
  std::atomic<int> connections_{0};
  bool draining_ = false;
  std::mt19937_64 rng_;
  std::string date_;
  std::shared_ptr<stats::WorkerMetrics> metrics_;
  std::shared_ptr<stats::RateRing> rates_ = metrics_registry().add_rate_ring();
  stats::TopK top_requests_{64};
  stats::TopK top_bytes_{64};
  // `rate_limits.redis`: this worker's client (global rate limits), and what it was made from.
  std::unique_ptr<RedisClient> redis_;
  std::string redis_settings_;
  uint64_t redis_generation_ = 0;
  int64_t date_second_ = -1;
};

}  // namespace sluice::server

// An in-memory byte stream between two coroutines of one worker: what a socketpair would be, with
// no system call. HTTP/2 uses it to run each stream through the HTTP/1 exchange pipeline
// (http_session.cpp) unchanged: the HTTP/2 side writes the stream's request as HTTP/1 bytes into
// the lane, the HTTP/1 side answers into it, and the HTTP/2 side turns the answer back into
// frames. Upstream HTTP/2 works the same way round (proxy/h2_proxy.cpp).
//
//   auto lane = std::make_shared<Lane>(executor);
//   lane->in.push("GET / HTTP/1.1\r\nhost: a\r\n\r\n");     // the HTTP/2 side
//   Io io{nullptr, nullptr, lane.get()};                     // the HTTP/1 side reads and writes
//   auto [ec, n] = co_await io.read_some(buf);               // as it would on a socket
//   co_await lane->out.take(bytes);                          // the HTTP/2 side reads the answer
//
// Each direction is a Pipe with one producer and one consumer. A producer that pushes past the
// pipe's bound waits in write() (backpressure) until the consumer took enough; push() never
// waits (the HTTP/2 side pushes from nghttp2 callbacks and bounds itself by flow control).
// Single-threaded: both ends run on the worker's thread.
#pragma once

#include <cstddef>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <tuple>

#include "server/asio.h"

namespace sluice::server {

class Pipe {
 public:
  explicit Pipe(const asio::any_io_executor& ex, size_t bound = 256 * 1024)
      : readable_(ex), writable_(ex), bound_(bound) {}

  // ---- producer ----
  // Appends bytes; never waits.
  void push(std::string_view bytes);
  // Appends every byte of `bufs`, then waits while more than the bound is unread. Fails with
  // broken_pipe once the consumer is gone, operation_aborted after cancel().
  asio::awaitable<std::tuple<error_code, size_t>> write(std::span<const asio::const_buffer> bufs);
  // No more bytes: the consumer reads what is left, then eof.
  void finish();
  // The stream broke: the consumer gets `why` (connection_reset) once the bytes are read (at once
  // when `now`), a waiting producer broken_pipe.
  void fail(bool now = false, error_code why = asio::error::connection_reset);

  // ---- consumer ----
  // At least one byte into `b`, or eof / connection_reset / operation_aborted.
  asio::awaitable<std::tuple<error_code, size_t>> read_some(asio::mutable_buffer b);
  // Appends everything unread to `out` (waiting for at least one byte), or an error as read_some.
  asio::awaitable<error_code> take(std::string& out);
  // The consumer is gone: producers fail from now on.
  void close_reader();
  // Called with the number of bytes the consumer took, after each read (flow control upstream).
  std::function<void(size_t)> on_consumed;

  // Pending read_some/take/write fail with operation_aborted (a Watchdog's deadline).
  void cancel(error_code&);
  // The same for one end only: the consumer's pending read, the producer's pending write.
  void cancel_reader();
  void cancel_writer();
  // Called once when the consumer closes (close_reader), after on_consumed has been told about
  // the unread bytes it dropped.
  std::function<void()> on_close;

  size_t unread() const { return buf_.size() - off_; }
  bool finished() const { return finished_; }
  bool failed() const { return failed_; }
  bool reader_closed() const { return reader_closed_; }

 private:
  asio::awaitable<error_code> wait_readable();
  void consumed(size_t n);

  asio::steady_timer readable_;  // a consumer waits on it; producers cancel it to wake it
  asio::steady_timer writable_;  // a producer over the bound waits on it
  std::string buf_;
  size_t off_ = 0;  // bytes of buf_ already read
  size_t bound_;
  bool reader_waiting_ = false;
  bool writer_waiting_ = false;
  bool cancel_reader_ = false;
  bool cancel_writer_ = false;
  bool finished_ = false;
  bool failed_ = false;
  error_code fail_ec_;
  bool reader_closed_ = false;
};

// Two pipes: `in` carries bytes to the HTTP/1 side (it reads them through Io), `out` carries what
// the HTTP/1 side writes.
struct Lane {
  explicit Lane(const asio::any_io_executor& ex) : in(ex), out(ex) {}
  Pipe in;
  Pipe out;

  // The HTTP/1 side's socket-like calls. cancel() touches only that side's own operations (its
  // read of `in`, its write to `out`), as cancel() on a socket would: a watchdog of the HTTP/1
  // session must not end the HTTP/2 side's wait for the answer.
  void cancel(error_code&) {
    in.cancel_reader();
    out.cancel_writer();
  }
  // The HTTP/1 side closed its "connection".
  void close() {
    in.close_reader();
    out.finish();
  }
};

}  // namespace sluice::server

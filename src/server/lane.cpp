#include "server/lane.h"

#include <algorithm>
#include <chrono>
#include <cstring>

namespace sluice::server {

void Pipe::push(std::string_view bytes) {
  if (reader_closed_ || failed_ || finished_) return;
  buf_.append(bytes);
  if (reader_waiting_) readable_.cancel();
}

asio::awaitable<std::tuple<error_code, size_t>> Pipe::write(
    std::span<const asio::const_buffer> bufs) {
  size_t total = 0;
  if (reader_closed_ || failed_ || finished_) co_return std::tuple{asio::error::broken_pipe, total};
  for (const auto& b : bufs) {
    buf_.append(static_cast<const char*>(b.data()), b.size());
    total += b.size();
  }
  if (reader_waiting_) readable_.cancel();
  while (unread() > bound_) {
    if (reader_closed_ || failed_) co_return std::tuple{asio::error::broken_pipe, total};
    writer_waiting_ = true;
    writable_.expires_at(std::chrono::steady_clock::time_point::max());
    co_await writable_.async_wait(use_nothrow);
    writer_waiting_ = false;
    if (cancel_writer_) {
      cancel_writer_ = false;
      co_return std::tuple{asio::error::operation_aborted, total};
    }
  }
  co_return std::tuple{error_code{}, total};
}

void Pipe::finish() {
  finished_ = true;
  if (reader_waiting_) readable_.cancel();
}

void Pipe::fail(bool now, error_code why) {
  failed_ = true;
  fail_ec_ = why;
  if (now) {
    const size_t dropped = unread();
    buf_.clear();
    off_ = 0;
    if (dropped > 0 && on_consumed) on_consumed(dropped);
  }
  if (reader_waiting_) readable_.cancel();
  if (writer_waiting_) writable_.cancel();
}

void Pipe::close_reader() {
  if (reader_closed_) return;
  reader_closed_ = true;
  const size_t dropped = unread();
  buf_.clear();
  off_ = 0;
  if (writer_waiting_) writable_.cancel();
  if (reader_waiting_) readable_.cancel();  // (a reader closed from elsewhere wakes to eof)
  // Bytes nobody will read count as taken: the producer's flow control must not wait for them.
  if (dropped > 0 && on_consumed) on_consumed(dropped);
  if (on_close) {
    auto f = std::move(on_close);
    on_close = nullptr;
    f();
  }
}

void Pipe::cancel_reader() {
  if (reader_waiting_) {
    cancel_reader_ = true;
    readable_.cancel();
  }
}

void Pipe::cancel_writer() {
  if (writer_waiting_) {
    cancel_writer_ = true;
    writable_.cancel();
  }
}

void Pipe::cancel(error_code&) {
  cancel_reader();
  cancel_writer();
}

asio::awaitable<error_code> Pipe::wait_readable() {
  while (unread() == 0) {
    if (failed_) co_return fail_ec_;
    if (finished_ || reader_closed_) co_return asio::error::eof;
    reader_waiting_ = true;
    readable_.expires_at(std::chrono::steady_clock::time_point::max());
    co_await readable_.async_wait(use_nothrow);
    reader_waiting_ = false;
    if (cancel_reader_) {
      cancel_reader_ = false;
      co_return asio::error::operation_aborted;
    }
  }
  co_return error_code{};
}

void Pipe::consumed(size_t n) {
  off_ += n;
  if (off_ == buf_.size()) {
    buf_.clear();
    off_ = 0;
  }
  if (writer_waiting_ && unread() <= bound_) writable_.cancel();
  if (on_consumed) on_consumed(n);
}

asio::awaitable<std::tuple<error_code, size_t>> Pipe::read_some(asio::mutable_buffer b) {
  if (error_code ec = co_await wait_readable()) co_return std::tuple{ec, size_t{0}};
  size_t n = std::min(b.size(), unread());
  std::memcpy(b.data(), buf_.data() + off_, n);
  consumed(n);
  co_return std::tuple{error_code{}, n};
}

asio::awaitable<error_code> Pipe::take(std::string& out) {
  if (error_code ec = co_await wait_readable()) co_return ec;
  size_t n = unread();
  out.append(buf_.data() + off_, n);
  consumed(n);
  co_return error_code{};
}

}  // namespace sluice::server

#include "server/tls_stream.h"

#include <openssl/err.h>
#include <openssl/ssl.h>

#include <array>
#include <cerrno>
#include <cstring>

#include <boost/asio/ssl/error.hpp>

namespace sluice::server {
namespace {

// Small buffers of one write are gathered here and sent as one record (a response head and a
// small body: one record, one send()). Per thread: a write that has to wait moves its bytes to
// the stream's own `pending_` first.
constexpr size_t kCoalesce = 16 * 1024;
constexpr size_t kSmallPiece = 4 * 1024;
thread_local std::array<char, kCoalesce> t_scratch;

}  // namespace

TlsStream::TlsStream(tcp::socket& socket, SSL* ssl) : socket_(socket), ssl_(ssl) {
  error_code ignored;
  socket_.non_blocking(true, ignored);
  SSL_set_fd(ssl_, static_cast<int>(socket_.native_handle()));
  SSL_set_mode(ssl_, SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER | SSL_MODE_RELEASE_BUFFERS);
}

TlsStream::~TlsStream() { SSL_free(ssl_); }

asio::awaitable<error_code> TlsStream::wait_for(int ssl_error) {
  auto [ec] = co_await socket_.async_wait(
      ssl_error == SSL_ERROR_WANT_WRITE ? tcp::socket::wait_write : tcp::socket::wait_read,
      use_nothrow);
  co_return ec;
}

error_code TlsStream::error_for(int err) {
  if (err == SSL_ERROR_ZERO_RETURN) return asio::error::eof;  // close_notify
  failed_ = true;
  if (err == SSL_ERROR_SYSCALL) {
    int e = errno;
    ERR_clear_error();
    if (e == 0) return asio::ssl::error::stream_truncated;  // EOF without close_notify
    return {e, boost::system::system_category()};
  }
  unsigned long code = ERR_peek_last_error();
  if (ERR_GET_LIB(code) == ERR_LIB_SSL &&
      ERR_GET_REASON(code) == SSL_R_UNEXPECTED_EOF_WHILE_READING) {
    ERR_clear_error();
    return asio::ssl::error::stream_truncated;
  }
  error_code ec(
      static_cast<int>(code != 0 ? code : ERR_PACK(ERR_LIB_SSL, 0, SSL_R_UNKNOWN_PROTOCOL)),
      asio::error::get_ssl_category());
  ERR_clear_error();
  return ec;
}

asio::awaitable<error_code> TlsStream::handshake() {
  for (;;) {
    ERR_clear_error();
    int r = SSL_do_handshake(ssl_);
    if (r == 1) co_return error_code{};
    int err = SSL_get_error(ssl_, r);
    if (err != SSL_ERROR_WANT_READ && err != SSL_ERROR_WANT_WRITE) co_return error_for(err);
    if (error_code ec = co_await wait_for(err)) co_return ec;
  }
}

asio::awaitable<std::tuple<error_code, size_t>> TlsStream::read_some(asio::mutable_buffer b) {
  for (;;) {
    ERR_clear_error();
    size_t n = 0;
    int r = SSL_read_ex(ssl_, b.data(), b.size(), &n);
    if (r == 1) co_return std::tuple<error_code, size_t>{error_code{}, n};
    int err = SSL_get_error(ssl_, r);
    if (err != SSL_ERROR_WANT_READ && err != SSL_ERROR_WANT_WRITE) {
      co_return std::tuple<error_code, size_t>{error_for(err), 0};
    }
    if (error_code ec = co_await wait_for(err)) co_return std::tuple<error_code, size_t>{ec, 0};
  }
}

asio::awaitable<std::tuple<error_code, size_t>> TlsStream::write_all(const char* data, size_t len,
                                                                     bool from_scratch) {
  size_t done = 0;
  while (done < len) {
    ERR_clear_error();
    size_t n = 0;
    int r = SSL_write_ex(ssl_, data + done, len - done, &n);
    if (r == 1) {
      done += n;
      continue;
    }
    int err = SSL_get_error(ssl_, r);
    if (err != SSL_ERROR_WANT_READ && err != SSL_ERROR_WANT_WRITE) {
      co_return std::tuple<error_code, size_t>{error_for(err), done};
    }
    // OpenSSL wants the same bytes again after the wait; the thread's scratch will not keep
    // them while another connection runs, so they move to this stream.
    if (from_scratch) {
      pending_.assign(data + done, len - done);
      data = pending_.data();
      len = pending_.size();
      done = 0;
      from_scratch = false;
    }
    if (error_code ec = co_await wait_for(err)) co_return std::tuple<error_code, size_t>{ec, done};
  }
  if (!pending_.empty()) std::string().swap(pending_);  // hold no memory while idle
  co_return std::tuple<error_code, size_t>{error_code{}, len};
}

asio::awaitable<std::tuple<error_code, size_t>> TlsStream::write(
    std::span<const asio::const_buffer> bufs) {
  size_t total = 0;
  size_t fill = 0;
  for (const asio::const_buffer& b : bufs) {
    if (b.size() == 0) continue;
    if (b.size() <= kSmallPiece && fill + b.size() <= kCoalesce) {
      std::memcpy(t_scratch.data() + fill, b.data(), b.size());
      fill += b.size();
      continue;
    }
    if (fill > 0) {
      auto [ec, n] = co_await write_all(t_scratch.data(), fill, true);
      total += n;
      fill = 0;
      if (ec) co_return std::tuple<error_code, size_t>{ec, total};
    }
    if (b.size() <= kSmallPiece) {
      std::memcpy(t_scratch.data(), b.data(), b.size());
      fill = b.size();
      continue;
    }
    auto [ec, n] = co_await write_all(static_cast<const char*>(b.data()), b.size(), false);
    total += n;
    if (ec) co_return std::tuple<error_code, size_t>{ec, total};
  }
  if (fill > 0) {
    auto [ec, n] = co_await write_all(t_scratch.data(), fill, true);
    total += n;
    if (ec) co_return std::tuple<error_code, size_t>{ec, total};
  }
  co_return std::tuple<error_code, size_t>{error_code{}, total};
}

void TlsStream::shutdown() {
  ERR_clear_error();
  if (!failed_ && SSL_is_init_finished(ssl_))
    SSL_shutdown(ssl_);  // one try: close_notify if it fits now
  ERR_clear_error();
}

}  // namespace sluice::server

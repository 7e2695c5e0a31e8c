// A connection's byte stream: the TCP socket itself, or TLS over it. Included only by the .cpp
// files that do I/O.
//
//   Io io{&socket, tls.get()};                          // tls may be null: cleartext
//   auto [ec, n] = co_await io.read_some(buffer);       // one branch; no extra coroutine frame
//                                                       // on the cleartext path
//
// TlsStream drives OpenSSL over the socket's file descriptor directly (a socket BIO, the socket
// in non-blocking mode), the way NGINX does: SSL_read/SSL_write run until OpenSSL wants the
// socket, and the coroutine then waits for readiness. No BIO pair and no stream buffers, so an
// idle TLS connection holds only OpenSSL's own state (its record buffers are released while
// idle, SSL_MODE_RELEASE_BUFFERS), and bytes are not copied twice on their way.
#pragma once

#include <array>
#include <cstddef>
#include <span>
#include <string>
#include <tuple>

#include <boost/asio/ssl/error.hpp>  // asio::ssl::error::stream_truncated

#include "core/duration.h"
#include "server/asio.h"
#include "server/lane.h"

typedef struct ssl_st SSL;

namespace sluice::server {

class TlsStream {
 public:
  // Takes ownership of `ssl` (made by tls::ServerContext / tls::ClientContext) and binds it to
  // the socket's descriptor. `socket` must outlive this object.
  TlsStream(tcp::socket& socket, SSL* ssl);
  ~TlsStream();
  TlsStream(const TlsStream&) = delete;
  TlsStream& operator=(const TlsStream&) = delete;

  SSL* native_handle() const { return ssl_; }

  // The handshake (server or client side, as the SSL was made).
  asio::awaitable<error_code> handshake();
  // Decrypted bytes into `b` (at least one, or an error: eof after close_notify,
  // asio::ssl::error::stream_truncated for a close without one).
  asio::awaitable<std::tuple<error_code, size_t>> read_some(asio::mutable_buffer b);
  // Writes every byte of `bufs`; small buffers are coalesced into one TLS record.
  asio::awaitable<std::tuple<error_code, size_t>> write(std::span<const asio::const_buffer> bufs);
  // Sends close_notify if the socket takes it now; never waits.
  void shutdown();

 private:
  // Waits until the socket is ready for what OpenSSL asked (SSL_ERROR_WANT_READ/WRITE).
  asio::awaitable<error_code> wait_for(int ssl_error);
  // The error_code for a failed SSL call (`ret`, SSL_get_error's `err`).
  error_code error_for(int err);
  asio::awaitable<std::tuple<error_code, size_t>> write_all(const char* data, size_t len,
                                                            bool from_scratch);

  tcp::socket& socket_;
  SSL* ssl_;
  std::string pending_;  // coalesced bytes a write is waiting to send (only while it waits)
  bool failed_ = false;  // a fatal error happened: no close_notify
};

struct Io {
  tcp::socket* sock = nullptr;
  TlsStream* tls = nullptr;
  Lane* lane = nullptr;  // set: an HTTP/2 stream's lane instead of the socket (lane.h)

  // Each returns the awaitable of the underlying operation itself (all paths have one type),
  // so the cleartext path costs a branch or two and nothing else.
  asio::awaitable<std::tuple<error_code, size_t>> read_some(asio::mutable_buffer b) const {
    if (lane != nullptr) return lane->in.read_some(b);
    return tls != nullptr ? tls->read_some(b) : sock->async_read_some(b, use_nothrow);
  }
  // `bufs` must live until the write completes (callers co_await in the same expression).
  asio::awaitable<std::tuple<error_code, size_t>> write(
      std::span<const asio::const_buffer> bufs) const {
    if (lane != nullptr) return lane->out.write(bufs);
    return tls != nullptr ? tls->write(bufs) : asio::async_write(*sock, bufs, use_nothrow);
  }
  // Arms `wd` to cancel this stream's pending I/O after `d`.
  template <class Wd>
  void arm(Wd& wd, Duration d) const {
    if (lane != nullptr) {
      wd.arm(d, lane);
    } else {
      wd.arm(d, sock);
    }
  }
  template <size_t N>
  asio::awaitable<std::tuple<error_code, size_t>> write(
      const std::array<asio::const_buffer, N>& bufs) const {
    return write(std::span<const asio::const_buffer>(bufs));
  }
  asio::awaitable<std::tuple<error_code, size_t>> write(const asio::const_buffer& b) const {
    return write(std::span<const asio::const_buffer>(&b, 1));
  }
};

}  // namespace sluice::server

// A connection's byte stream: the TCP socket itself, or TLS over it (asio::ssl). Included only
// by the .cpp files that do I/O, so the SSL headers stay out of everything else.
//
//   Io io{&socket, tls.get()};                          // tls may be null: cleartext
//   auto [ec, n] = co_await io.read_some(buffer);       // one branch, no extra coroutine frame
#pragma once

#include <boost/asio/ssl/stream.hpp>

#include "server/asio.h"

namespace sluice::server {

using TlsStream = asio::ssl::stream<tcp::socket&>;

struct Io {
  tcp::socket* sock = nullptr;
  TlsStream* tls = nullptr;

  // Each returns the awaitable of the underlying operation itself (both have one type), so the
  // cleartext path costs a branch and nothing else.
  template <typename MutableBuffers>
  auto read_some(const MutableBuffers& b) const {
    return tls != nullptr ? tls->async_read_some(b, use_nothrow)
                          : sock->async_read_some(b, use_nothrow);
  }
  template <typename ConstBuffers>
  auto write(const ConstBuffers& b) const {
    return tls != nullptr ? asio::async_write(*tls, b, use_nothrow)
                          : asio::async_write(*sock, b, use_nothrow);
  }
};

}  // namespace sluice::server

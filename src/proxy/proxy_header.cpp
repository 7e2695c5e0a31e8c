#include "proxy/proxy_header.h"

#include <sys/socket.h>

#include <cerrno>

#include "server/watchdog.h"

namespace sluice::proxy {

namespace {
net::ProxyEndpoint endpoint_of(const tcp::endpoint& ep) {
  auto addr = ep.address();
  if (addr.is_v6() && addr.to_v6().is_v4_mapped()) {
    addr = asio::ip::make_address_v4(asio::ip::v4_mapped, addr.to_v6());
  }
  return {addr.to_string(), ep.port()};
}
}  // namespace

Addresses connection_addresses(const tcp::socket& socket, bool with_local) {
  Addresses out;
  error_code ec;
  auto remote = socket.remote_endpoint(ec);
  if (!ec) out.client = endpoint_of(remote);
  if (!with_local) return out;
  auto local = socket.local_endpoint(ec);
  if (!ec) out.local = endpoint_of(local);
  return out;
}

asio::awaitable<std::string_view> accept_proxy_header(tcp::socket& socket, server::Watchdog& wd,
                                                      Duration timeout, Addresses& addrs) {
  std::string have;  // header bytes consumed so far (every one of them belongs to the header)
  char peek[net::kMaxV2Size];
  wd.arm(timeout, &socket);
  const int fd = socket.native_handle();
  for (;;) {
    const size_t room = net::kMaxV2Size - have.size();
    ssize_t n = ::recv(fd, peek, room, MSG_PEEK | MSG_DONTWAIT);
    if (n == 0) {
      wd.disarm();
      co_return "connection closed before the PROXY header was complete";
    }
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK) {
        wd.disarm();
        co_return "connection failed while reading the PROXY header";
      }
      auto [ec] = co_await socket.async_wait(tcp::socket::wait_read, use_nothrow);
      if (ec) {
        const bool expired = wd.expired();
        wd.disarm();
        co_return expired ? "no complete PROXY header within header_timeout"
                          : "connection failed while reading the PROXY header";
      }
      continue;
    }
    const size_t old = have.size();
    have.append(peek, static_cast<size_t>(n));
    net::ProxyHeader header;
    net::ParseResult r = net::parse_proxy_header(have, header);
    if (r.status == net::ParseStatus::Error) {
      wd.disarm();
      co_return r.error;
    }
    // Consume exactly the header's bytes: all of the peeked ones while it is incomplete.
    const size_t take = r.status == net::ParseStatus::Done ? r.size - old : static_cast<size_t>(n);
    size_t taken = 0;
    while (taken < take) {
      ssize_t m = ::recv(fd, peek, take - taken, MSG_DONTWAIT);
      if (m < 0 && errno == EINTR) continue;
      if (m <= 0) {  // (cannot happen: these bytes were just peeked)
        wd.disarm();
        co_return "connection failed while reading the PROXY header";
      }
      taken += static_cast<size_t>(m);
    }
    if (r.status == net::ParseStatus::Done) {
      wd.disarm();
      if (!header.local) {
        addrs.client = std::move(header.source);
        addrs.local = std::move(header.destination);
      }
      co_return std::string_view();
    }
    have.resize(old + take);
  }
}

std::string proxy_pool_key(const std::string& key, const net::ProxyEndpoint& client) {
  return key + "|from " + client.ip + ":" + std::to_string(client.port);
}

asio::awaitable<Error> send_proxy_header(tcp::socket& socket, int version, const Addresses& addrs,
                                         server::Watchdog& wd, Duration timeout) {
  std::string header = addrs.client.ip.empty() || addrs.local.ip.empty()
                           ? net::encode_proxy_local(version)
                           : net::encode_proxy_header(version, addrs.client, addrs.local);
  wd.arm(timeout, &socket);
  auto [ec, n] = co_await asio::async_write(socket, asio::buffer(header), use_nothrow);
  const bool expired = wd.expired();
  wd.disarm();
  if (!ec) co_return Error{};
  co_return Error{Source::Upstream, expired ? ErrorKind::ConnectTimeout : ErrorKind::ConnectFailed};
}

}  // namespace sluice::proxy

// Boost.Asio, included only by the server layer's .cpp files (keeps it out of widely included
// headers so that edits elsewhere rebuild quickly).
#pragma once

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>

namespace sluice {
namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using boost::system::error_code;
// Completion token for coroutines that inspect errors instead of catching exceptions.
inline constexpr auto use_nothrow = asio::as_tuple(asio::use_awaitable);
}  // namespace sluice

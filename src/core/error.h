// Why the gateway answered a request itself, who caused it, and whether a retry may help.
//
//   Error e{Source::Upstream, Kind::ConnectRefused};
//   reply(e.status(), e.reason());   // 502 "upstream connection refused"
//
// One value decides the status code, the access log's `error` field and whether to retry.
#pragma once

#include <string_view>

namespace sluice {

enum class Source { Downstream, Upstream, Internal };

enum class ErrorKind {
  None,
  // downstream
  BadRequest,
  NoRoute,
  MethodNotAllowed,
  RequestTimeout,
  BodyTooLarge,
  UnsupportedMediaType,  // a body the route's transform cannot take (content-type)
  // upstream
  NoTarget,
  CircuitOpen,
  ConnectRefused,
  ConnectTimeout,
  ConnectFailed,
  TlsFailed,  // the TLS handshake with the target failed (verification, protocol)
  UpstreamReset,
  UpstreamTimeout,
  BadResponse,
  // internal
  Draining,
};

struct Error {
  Source source = Source::Internal;
  ErrorKind kind = ErrorKind::None;

  explicit operator bool() const { return kind != ErrorKind::None; }

  // A retry on another target may help: nothing reached the upstream application.
  bool retryable_any_method() const {
    return kind == ErrorKind::ConnectRefused || kind == ErrorKind::ConnectTimeout ||
           kind == ErrorKind::ConnectFailed || kind == ErrorKind::TlsFailed;
  }

  int status() const {
    switch (kind) {
      case ErrorKind::None:
        return 200;
      case ErrorKind::BadRequest:
        return 400;
      case ErrorKind::NoRoute:
        return 404;
      case ErrorKind::MethodNotAllowed:
        return 405;
      case ErrorKind::RequestTimeout:
        return 408;
      case ErrorKind::BodyTooLarge:
        return 413;
      case ErrorKind::UnsupportedMediaType:
        return 415;
      case ErrorKind::NoTarget:
      case ErrorKind::CircuitOpen:
        return 503;
      case ErrorKind::ConnectRefused:
      case ErrorKind::ConnectFailed:
      case ErrorKind::TlsFailed:
      case ErrorKind::UpstreamReset:
      case ErrorKind::BadResponse:
        return 502;
      case ErrorKind::ConnectTimeout:
      case ErrorKind::UpstreamTimeout:
        return 504;
      case ErrorKind::Draining:
        return 503;
    }
    return 500;
  }

  std::string_view reason() const {
    switch (kind) {
      case ErrorKind::None:
        return "";
      case ErrorKind::BadRequest:
        return "bad request";
      case ErrorKind::NoRoute:
        return "no route";
      case ErrorKind::MethodNotAllowed:
        return "method not allowed";
      case ErrorKind::RequestTimeout:
        return "request timeout";
      case ErrorKind::BodyTooLarge:
        return "request body too large";
      case ErrorKind::UnsupportedMediaType:
        return "unsupported media type";
      case ErrorKind::NoTarget:
        return "no healthy upstream";
      case ErrorKind::CircuitOpen:
        return "upstream overloaded (circuit open)";
      case ErrorKind::ConnectRefused:
        return "upstream connection refused";
      case ErrorKind::ConnectTimeout:
        return "upstream connect timeout";
      case ErrorKind::ConnectFailed:
        return "upstream connect failed";
      case ErrorKind::TlsFailed:
        return "upstream TLS handshake failed";
      case ErrorKind::UpstreamReset:
        return "upstream connection reset";
      case ErrorKind::UpstreamTimeout:
        return "upstream timeout";
      case ErrorKind::BadResponse:
        return "invalid upstream response";
      case ErrorKind::Draining:
        return "shutting down";
    }
    return "internal error";
  }
};

std::string_view status_text(int status);

}  // namespace sluice

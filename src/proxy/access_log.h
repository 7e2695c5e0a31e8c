// One access-log line per exchange, connection or message, in the format of SPEC.md section 6
// (`json`) or NGINX/Apache `combined`, for every kind of session (HTTP, MQTT, ...).
//
//   proxy::AccessRecord r;
//   r.request_id = id; r.method = "GET"; r.path = "/x"; r.status = 200; ...
//   proxy::write_access(r, snap.config.log.access_format == "combined");
//
// The line is built in a thread-local buffer (no allocation once warm) and handed to the log
// writer (core/log.h), which never blocks. Call only when log::access_enabled().
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace sluice::proxy {

struct AccessRecord {
  std::string_view request_id, trace_id, client_ip, listener, method, host, path;
  std::string_view query;  // combined only (its $request has the query); json `path` has none
  std::string_view protocol = "HTTP/1.1";  // HTTP/1.1, HTTP/1.0, websocket, mqtt, ...
  int status = 0;
  uint64_t bytes_in = 0, bytes_out = 0;
  int64_t duration_us = 0;
  std::string_view route, upstream, target;  // empty = null
  int64_t upstream_us = -1;                  // -1 = null
  int attempts = 0;
  std::string_view consumer;     // empty = null
  std::string_view cache = "-";  // hit | miss | stale | -
  bool rate_limited = false;
  std::string_view user_agent, referer, error;  // empty = null ("-" in combined)
  std::string_view remote_user;                 // combined only: "-" when empty
};

void write_access(const AccessRecord& r, bool combined);

// Appends `v` in decimal; `us` microseconds as milliseconds with three decimals ("1.234").
void append_decimal(std::string& out, uint64_t v);
void append_ms(std::string& out, uint64_t us);

}  // namespace sluice::proxy

#include "proxy/access_log.h"

#include <algorithm>
#include <charconv>

#include "core/log.h"

namespace sluice::proxy {

using namespace std::literals;

void append_decimal(std::string& out, uint64_t v) {
  char buf[24];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v);
  out.append(buf, end);
}

void append_ms(std::string& out, uint64_t us) {
  append_decimal(out, us / 1000);
  char frac[4] = {'.', char('0' + us / 100 % 10), char('0' + us / 10 % 10), char('0' + us % 10)};
  out.append(frac, 4);
}

namespace {

// NGINX/Apache "combined": $remote_addr - $remote_user [$time_local] "$request" $status
// $body_bytes_sent "$http_referer" "$http_user_agent"
void write_combined(const AccessRecord& r, std::string& line) {
  auto or_dash = [](std::string_view v) { return v.empty() ? "-"sv : v; };
  line += r.client_ip;
  line += " - "sv;
  line += or_dash(r.remote_user);
  line += " ["sv;
  log::append_clf_time_now(line);
  line += "] \""sv;
  line += or_dash(r.method);
  line += ' ';
  line += or_dash(r.path);
  if (!r.query.empty()) {
    line += '?';
    line += r.query;
  }
  line += ' ';
  line += r.protocol;
  line += "\" "sv;
  append_decimal(line, static_cast<uint64_t>(r.status));
  line += ' ';
  append_decimal(line, r.bytes_out);
  line += " \""sv;
  line += or_dash(r.referer);
  line += "\" \""sv;
  line += or_dash(r.user_agent);
  line += '"';
  for (char& c : line) {
    if (static_cast<unsigned char>(c) < 0x20) c = '?';  // one line per record, always
  }
}

void write_json(const AccessRecord& r, std::string& line) {
  auto str = [&](std::string_view key, std::string_view v) {  // "key":"v" or "key":null
    line += ",\""sv;
    line += key;
    line += "\":"sv;
    if (v.empty()) {
      line += "null"sv;
    } else {
      line += '"';
      log::json_escape(line, v);
      line += '"';
    }
  };
  line += R"({"time":")"sv;
  log::append_rfc3339_now(line);
  line += '"';
  str("request_id", r.request_id);
  str("trace_id", r.trace_id);
  str("client_ip", r.client_ip);
  str("listener", r.listener);
  str("method", r.method);
  str("host", r.host);
  str("path", r.path);
  str("protocol", r.protocol);
  line += R"(,"status":)"sv;
  append_decimal(line, static_cast<uint64_t>(r.status));
  line += R"(,"bytes_in":)"sv;
  append_decimal(line, r.bytes_in);
  line += R"(,"bytes_out":)"sv;
  append_decimal(line, r.bytes_out);
  line += R"(,"duration_ms":)"sv;
  append_ms(line, static_cast<uint64_t>(std::max<int64_t>(0, r.duration_us)));
  str("route", r.route);
  str("upstream", r.upstream);
  str("target", r.target);
  if (r.upstream_us >= 0) {
    line += R"(,"upstream_ms":)"sv;
    append_ms(line, static_cast<uint64_t>(r.upstream_us));
  } else {
    line += R"(,"upstream_ms":null)"sv;
  }
  line += R"(,"attempts":)"sv;
  append_decimal(line, static_cast<uint64_t>(std::max(0, r.attempts)));
  str("consumer", r.consumer);
  line += R"(,"cache":")"sv;
  line += r.cache;
  line += r.rate_limited ? R"(","rate_limited":true)"sv : R"(","rate_limited":false)"sv;
  str("user_agent", r.user_agent);
  str("error", r.error);
  line += '}';
}

}  // namespace

void write_access(const AccessRecord& r, bool combined) {
  thread_local std::string line;  // reused: no allocation once warm
  line.clear();
  if (combined) {
    write_combined(r, line);
  } else {
    write_json(r, line);
  }
  log::access(std::string_view(line));
}

}  // namespace sluice::proxy

// YAML -> config::Config, with every error reported at its file:line:col (SPEC.md section 2).
//
// The loader walks the document once, section by section, and never stops at the first problem:
// a bad value is reported and skipped, and the walk continues with its siblings. Only a YAML
// syntax error ends the load early (there is no tree to walk).
//
// Keys come in three kinds per map (the tables below): supported; documented in SPEC.md but not
// implemented in this version (an error saying so, at the key); and unknown (an error with a
// "did you mean" hint). Maps whose keys are user data (upstream names, header names) are read
// with entries() instead and take any key.
#include <fcntl.h>
#include <re2/re2.h>
#include <sys/stat.h>
#include <unistd.h>
#include <yaml-cpp/eventhandler.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <map>
#include <set>
#include <span>
#include <sstream>

#include "config/config.h"
#include "config/lint.h"
#include "config/values.h"

namespace sluice::config {

namespace {

using Keys = std::span<const std::string_view>;

struct Schema {
  std::string_view context;  // completes "unknown key 'x' ...": "at the top level", "in a route"
  Keys supported;
  Keys unsupported;  // documented in SPEC.md, not implemented in this version yet
};

constexpr std::string_view k_top_keys[] = {
    "listen", "workers",   "shutdown_timeout", "log",         "limits", "listeners", "consumers",
    "auth",   "upstreams", "routes",           "rate_limits", "cache",  "admin",     "mqtt"};
constexpr std::string_view k_mqtt_keys[] = {"auth", "routes"};
constexpr Schema k_mqtt{"in 'mqtt'", k_mqtt_keys, {}};
constexpr std::string_view k_mqtt_route_keys[] = {"topic", "upstream", "method", "path"};
constexpr Schema k_mqtt_route{"in an mqtt route", k_mqtt_route_keys, {}};
constexpr std::string_view k_transform_keys[] = {"request", "response"};
constexpr Schema k_transform{"in 'transform'", k_transform_keys, {}};
constexpr std::string_view k_transforms[] = {"xml_to_json", "json_to_xml"};
constexpr std::string_view k_ws_bridge_keys[] = {"method", "max_in_flight"};
constexpr Schema k_ws_bridge{"in 'websocket_bridge'", k_ws_bridge_keys, {}};
constexpr std::string_view k_admin_keys[] = {"listen", "token"};
constexpr Schema k_admin{"in 'admin'", k_admin_keys, {}};

constexpr std::string_view k_cache_keys[] = {"max_size"};
constexpr Schema k_cache{"in 'cache'", k_cache_keys, {}};
constexpr std::string_view k_route_cache_keys[] = {"ttl", "vary", "stale_if_error", "per_consumer"};
constexpr Schema k_route_cache{"in a route's 'cache'", k_route_cache_keys, {}};

constexpr std::string_view k_rate_limits_keys[] = {"redis"};
constexpr Schema k_rate_limits{"in 'rate_limits'", k_rate_limits_keys, {}};
constexpr std::string_view k_redis_keys[] = {"address", "timeout", "on_failure"};
constexpr Schema k_redis{"in 'redis'", k_redis_keys, {}};
constexpr std::string_view k_on_failure[] = {"allow", "deny"};
constexpr std::string_view k_rate_limit_keys[] = {"key", "rate", "burst", "scope", "sync"};
constexpr Schema k_rate_limit{"in a rate limit", k_rate_limit_keys, {}};
constexpr std::string_view k_rate_limit_scopes[] = {"local", "global"};
constexpr Schema k_top{"at the top level", k_top_keys, {}};

constexpr std::string_view k_log_keys[] = {"access", "access_format", "error", "level", "buffer"};
constexpr Schema k_log{"in 'log'", k_log_keys, {}};

constexpr std::string_view k_limits_keys[] = {
    "header_timeout",   "idle_timeout",     "request_body_timeout",
    "max_request_line", "max_header_bytes", "max_headers",
    "max_body"};
constexpr Schema k_limits{"in 'limits'", k_limits_keys, {}};

constexpr std::string_view k_listener_keys[] = {
    "name",  "listen",         "protocol", "limits", "tls", "redirect_to_https",
    "http2", "proxy_protocol", "upstream"};
constexpr Schema k_listener{"in a listener", k_listener_keys, {}};

constexpr std::string_view k_listener_tls_keys[] = {"certificates", "min_version", "client_ca",
                                                    "ticket_rotation", "client_cert"};
constexpr Schema k_listener_tls{"in a listener's 'tls'", k_listener_tls_keys, {}};

constexpr std::string_view k_certificate_keys[] = {"cert", "key"};
constexpr Schema k_certificate{"in a certificate", k_certificate_keys, {}};

constexpr std::string_view k_consumer_keys[] = {"name", "groups", "api_keys", "password"};
constexpr Schema k_consumer{"in a consumer", k_consumer_keys, {}};

constexpr std::string_view k_authenticator_kinds[] = {"jwt", "api_key", "basic"};
constexpr Schema k_authenticator{"in an authenticator", k_authenticator_kinds, {}};

constexpr std::string_view k_jwt_keys[] = {"issuer",         "audiences",     "keys",
                                           "secret",         "algorithms",    "leeway",
                                           "consumer_claim", "forward_claims"};
constexpr Schema k_jwt{"in 'jwt'", k_jwt_keys, {}};

constexpr std::string_view k_api_key_auth_keys[] = {"header", "query"};
constexpr Schema k_api_key_auth{"in 'api_key'", k_api_key_auth_keys, {}};

constexpr std::string_view k_basic_keys[] = {"realm"};
constexpr Schema k_basic{"in 'basic'", k_basic_keys, {}};

constexpr std::string_view k_upstream_keys[] = {
    "targets", "balance",  "hash_on",  "sticky",          "health_check",
    "outlier", "retries",  "protocol", "max_connections", "max_pending",
    "dns_ttl", "timeouts", "tls",      "proxy_protocol"};
constexpr Schema k_upstream{"in an upstream", k_upstream_keys, {}};
constexpr std::string_view k_proxy_protocol_versions[] = {"v1", "v2"};

constexpr std::string_view k_upstream_tls_keys[] = {"sni", "verify", "ca"};
constexpr Schema k_upstream_tls{"in an upstream's 'tls'", k_upstream_tls_keys, {}};

constexpr std::string_view k_sticky_keys[] = {"cookie", "ttl"};
constexpr Schema k_sticky{"in 'sticky'", k_sticky_keys, {}};

constexpr std::string_view k_health_check_keys[] = {"type",    "path",      "interval", "timeout",
                                                    "healthy", "unhealthy", "expect"};
constexpr Schema k_health_check{"in 'health_check'", k_health_check_keys, {}};

constexpr std::string_view k_outlier_keys[] = {"consecutive_failures", "ejection_time",
                                               "max_ejected"};
constexpr Schema k_outlier{"in 'outlier'", k_outlier_keys, {}};

constexpr std::string_view k_retries_keys[] = {"attempts", "on", "methods", "budget"};
constexpr Schema k_retries{"in 'retries'", k_retries_keys, {}};

constexpr std::string_view k_target_keys[] = {"address", "weight"};
constexpr Schema k_target{"in a target", k_target_keys, {}};

constexpr std::string_view k_timeouts_keys[] = {"connect", "request", "idle"};
constexpr Schema k_timeouts{"in 'timeouts'", k_timeouts_keys, {}};

constexpr std::string_view k_route_keys[] = {
    "name",       "match",   "upstream",  "split",     "respond",         "redirect",
    "rewrite",    "headers", "timeout",   "auth",      "allow",           "deny",
    "rate_limit", "cache",   "transform", "websocket", "websocket_bridge"};
constexpr std::string_view k_route_later[] = {"cors", "compress"};
constexpr Schema k_route{"in a route", k_route_keys, k_route_later};
constexpr std::string_view k_route_actions[] = {"upstream", "split", "respond", "redirect"};

constexpr std::string_view k_match_keys[] = {"host",    "path",    "path_exact", "path_regex",
                                             "methods", "headers", "query"};
constexpr Schema k_match{"in 'match'", k_match_keys, {}};
constexpr std::string_view k_path_keys[] = {"path", "path_exact", "path_regex"};

constexpr std::string_view k_split_keys[] = {"upstream", "weight"};
constexpr Schema k_split{"in a split entry", k_split_keys, {}};

constexpr std::string_view k_respond_keys[] = {"status", "body", "headers"};
constexpr Schema k_respond{"in 'respond'", k_respond_keys, {}};

constexpr std::string_view k_redirect_keys[] = {"to", "status"};
constexpr Schema k_redirect{"in 'redirect'", k_redirect_keys, {}};

constexpr std::string_view k_rewrite_keys[] = {"strip_prefix", "prefix", "regex", "replace"};
constexpr Schema k_rewrite{"in 'rewrite'", k_rewrite_keys, {}};

constexpr std::string_view k_route_headers_keys[] = {"request", "response"};
constexpr Schema k_route_headers{"in a route's 'headers'", k_route_headers_keys, {}};

constexpr std::string_view k_header_ops_keys[] = {"set", "remove"};
constexpr Schema k_header_ops{"in a header operation", k_header_ops_keys, {}};

// `allow` by identity (consumers, groups, scopes) needs authentication on the route; by ips not.
constexpr std::string_view k_allow_keys[] = {"consumers", "groups", "scopes", "ips"};
constexpr Schema k_allow{"in 'allow'", k_allow_keys, {}};
constexpr std::string_view k_deny_keys[] = {"ips"};
constexpr Schema k_deny{"in 'deny'", k_deny_keys, {}};

// Enumerated values: accepted now / documented but not implemented yet.
constexpr std::string_view k_log_levels[] = {"debug", "info", "warn", "error"};
constexpr std::string_view k_access_formats[] = {"json", "combined"};
constexpr std::string_view k_listener_protocols[] = {"http", "mqtt", "tcp", "udp"};
constexpr std::string_view k_balances[] = {"round_robin", "least_conn", "p2c",
                                           "ring_hash",   "maglev",     "random"};
// `hash_on: KIND` or `hash_on: KIND:NAME`.
constexpr std::string_view k_hash_kinds[] = {"ip", "header", "cookie", "consumer", "path"};
constexpr std::string_view k_hash_on_forms = "ip, header:NAME, cookie:NAME, consumer or path";
constexpr std::string_view k_health_check_types[] = {"http", "tcp"};
constexpr std::string_view k_retry_conditions[] = {"connect_failure", "reset"};
constexpr std::string_view k_retry_methods[] = {"idempotent", "all"};
constexpr std::string_view k_upstream_protocols[] = {"http1", "http2", "h2c"};
constexpr std::string_view k_tls_versions[] = {"1.2", "1.3"};
constexpr std::string_view k_client_cert_modes[] = {"optional", "required"};
// "none" is not here: it is refused with its own message, whatever its case.
constexpr std::string_view k_jwt_algorithms[] = {"HS256", "HS384", "HS512", "RS256", "RS384",
                                                 "RS512", "PS256", "ES256", "ES384", "EdDSA"};
constexpr std::string_view k_jwt_hmac_algorithms[] = {"HS256", "HS384", "HS512"};
constexpr std::string_view k_jwt_key_algorithms[] = {"RS256", "RS384", "RS512", "PS256",
                                                     "ES256", "ES384", "EdDSA"};
// crypt(3) hash prefixes: bcrypt, sha512-crypt, sha256-crypt, yescrypt.
constexpr std::string_view k_password_hash_prefixes[] = {"$2a$", "$2b$", "$2y$",
                                                         "$6$",  "$5$",  "$y$"};

constexpr uint32_t k_max_weight = 1'000'000;
constexpr uint64_t k_max_connections = 1'000'000;  // also the bound of max_pending
constexpr int k_max_health_threshold = 100;        // healthy / unhealthy
constexpr int k_max_consecutive_failures = 1000;
constexpr int k_max_retry_attempts = 10;
constexpr int k_max_workers = 1024;
constexpr size_t k_min_jwt_secret = 32;  // bytes: RFC 7518 wants a key at least as long as the hash
constexpr size_t k_sha256_hex = 64;

// A user-written string inside a message: quoted, control bytes escaped, long text shortened so
// one pasted blob cannot flood the terminal.
std::string quote(std::string_view text) {
  constexpr size_t k_max = 80;
  std::string out = "'";
  for (size_t i = 0; i < text.size() && i < k_max; ++i) {
    auto c = static_cast<unsigned char>(text[i]);
    if (c < 0x20 || c == 0x7f) {
      static constexpr char k_hex[] = "0123456789abcdef";
      out += "\\x";
      out += k_hex[c >> 4];
      out += k_hex[c & 0xf];
    } else {
      out += static_cast<char>(c);
    }
  }
  if (text.size() > k_max) out += "...";
  out += "'";
  return out;
}

// "a, b or c"
std::string one_of(Keys values) {
  std::string out;
  for (size_t i = 0; i < values.size(); ++i) {
    if (i > 0) out += i + 1 == values.size() ? " or " : ", ";
    out += values[i];
  }
  return out;
}

bool contains(Keys keys, std::string_view key) {
  return std::find(keys.begin(), keys.end(), key) != keys.end();
}

Mark to_mark(const YAML::Mark& mark) {
  if (mark.is_null() || mark.line < 0 || mark.column < 0) return {};
  return {mark.line + 1, mark.column + 1};
}

std::string describe(const YAML::Node& node) {
  switch (node.Type()) {
    case YAML::NodeType::Map:
      return "a map";
    case YAML::NodeType::Sequence:
      return "a list";
    case YAML::NodeType::Scalar:
      return quote(node.Scalar());
    default:
      return "nothing";
  }
}

// A node to read plus how to point at it and name it in messages.
struct Value {
  YAML::Node node;
  Mark mark;         // the node's position; its key's for an implicit null (`key:` and nothing)
  std::string what;  // "'workers'", "a method"
};

struct Field {
  std::string key;
  Mark key_mark;
  Value value;
};

struct Fields {
  std::vector<Field> list;  // supported keys only, in file order

  const Field* get(std::string_view key) const {
    for (const Field& field : list) {
      if (field.key == key) return &field;
    }
    return nullptr;
  }
};

class Loader {
 public:
  Loader(std::string file, std::string base_dir)
      : file_(std::move(file)), base_dir_(std::move(base_dir)) {
    config_.file = file_;
  }

  LoadResult load(const std::string& yaml) {
    try {
      load_document(yaml);
    } catch (const YAML::Exception& e) {
      // Parse errors are caught in load_document; this is yaml-cpp failing on a tree it built.
      error(to_mark(e.mark), "YAML error: " + e.msg);
    } catch (const std::exception& e) {
      error(Mark{}, std::string("internal error while loading: ") + e.what());
    }
    return finish();
  }

 private:
  void warn(Mark at, std::string message) {
    diagnostics_.push_back({Diagnostic::Severity::Warning, file_, at, std::move(message)});
  }

  void error(Mark at, std::string message) {
    ++errors_;
    diagnostics_.push_back({Diagnostic::Severity::Error, file_, at, std::move(message)});
  }

  // ---- Generic readers -------------------------------------------------------------------

  Mark mark_of(const YAML::Node& node, Mark fallback) const {
    Mark mark = to_mark(node.Mark());
    if (mark.line == 0 || node.IsNull()) return fallback.line > 0 ? fallback : mark;
    return mark;
  }

  Value item(const YAML::Node& node, Mark fallback, std::string what) const {
    return Value{node, mark_of(node, fallback), std::move(what)};
  }

  void type_error(const Value& v, std::string_view expected) {
    error(v.mark, v.what + " must be " + std::string(expected) + ", got " + describe(v.node));
  }

  // The keys of a map, checked against `schema`. A null node is an empty map. nullopt (after an
  // error) when the node is not a map.
  std::optional<Fields> fields(const Value& v, const Schema& schema) {
    if (v.node.IsNull()) return Fields{};
    if (!v.node.IsMap()) {
      type_error(v, "a map");
      return std::nullopt;
    }
    Fields out;
    std::set<std::string> seen;
    for (auto it = v.node.begin(); it != v.node.end(); ++it) {
      Mark key_mark = mark_of(it->first, v.mark);
      if (!it->first.IsScalar()) {
        error(key_mark, "a key " + std::string(schema.context) + " must be a string, got " +
                            describe(it->first));
        continue;
      }
      const std::string& key = it->first.Scalar();
      if (!seen.insert(key).second) {
        error(key_mark, "duplicate key " + quote(key));
        continue;
      }
      if (contains(schema.supported, key)) {
        out.list.push_back({key, key_mark, item(it->second, key_mark, quote(key))});
      } else if (contains(schema.unsupported, key)) {
        error(key_mark, quote(key) + " is not supported in this version yet");
      } else {
        std::vector<std::string_view> candidates(schema.supported.begin(), schema.supported.end());
        candidates.insert(candidates.end(), schema.unsupported.begin(), schema.unsupported.end());
        error(key_mark, "unknown key " + quote(key) + " " + std::string(schema.context) +
                            did_you_mean(closest(key, candidates)));
      }
    }
    return out;
  }

  // fields(), for a map with required keys: `clean` tells whether reading it reported nothing. A
  // "needs 'x'" error is left out after an unknown key, which is most likely 'x' misspelt.
  std::optional<Fields> fields(const Value& v, const Schema& schema, bool& clean) {
    size_t errors_before = errors_;
    auto out = fields(v, schema);
    clean = errors_ == errors_before;
    return out;
  }

  struct Entry {
    std::string key;
    Mark key_mark;
    Value value;
  };

  // A map whose keys are user data (names), each one a string and unique.
  std::vector<Entry> entries(const Value& v, std::string_view value_what) {
    std::vector<Entry> out;
    if (v.node.IsNull()) return out;
    if (!v.node.IsMap()) {
      type_error(v, "a map");
      return out;
    }
    std::set<std::string> seen;
    for (auto it = v.node.begin(); it != v.node.end(); ++it) {
      Mark key_mark = mark_of(it->first, v.mark);
      if (!it->first.IsScalar()) {
        error(key_mark, "a key in " + v.what + " must be a string, got " + describe(it->first));
        continue;
      }
      const std::string& key = it->first.Scalar();
      if (!seen.insert(key).second) {
        error(key_mark, "duplicate key " + quote(key) + " in " + v.what);
        continue;
      }
      out.push_back(
          {key, key_mark, item(it->second, key_mark, std::string(value_what) + " " + quote(key))});
    }
    return out;
  }

  // The items of a list; a null node is an empty list.
  std::optional<std::vector<YAML::Node>> list(const Value& v) {
    if (v.node.IsNull()) return std::vector<YAML::Node>{};
    if (!v.node.IsSequence()) {
      type_error(v, "a list");
      return std::nullopt;
    }
    std::vector<YAML::Node> out;
    for (auto it = v.node.begin(); it != v.node.end(); ++it) out.push_back(*it);
    return out;
  }

  // A scalar with ${ENV} substituted.
  std::optional<std::string> scalar(const Value& v, std::string_view expected = "a string") {
    if (!v.node.IsScalar()) {
      type_error(v, expected);
      return std::nullopt;
    }
    std::string unset;
    auto text = substitute_env(v.node.Scalar(), unset);
    if (!text) error(v.mark, "environment variable " + quote(unset) + " is not set");
    return text;
  }

  // One string, or a list of them: `host: a` and `host: [a, b]` are both fine.
  std::vector<std::pair<std::string, Mark>> string_or_list(const Value& v,
                                                           const std::string& item_what) {
    std::vector<std::pair<std::string, Mark>> out;
    if (v.node.IsSequence()) {
      for (auto it = v.node.begin(); it != v.node.end(); ++it) {
        Value one = item(*it, v.mark, item_what);
        if (auto text = scalar(one)) out.emplace_back(std::move(*text), one.mark);
      }
    } else if (v.node.IsScalar()) {
      if (auto text = scalar(v)) out.emplace_back(std::move(*text), v.mark);
    } else {
      type_error(v, "a string or a list of strings");
    }
    return out;
  }

  std::optional<uint64_t> integer(const Value& v, uint64_t min, uint64_t max) {
    std::string range = "an integer from " + std::to_string(min) + " to " + std::to_string(max);
    auto text = scalar(v, range);
    if (!text) return std::nullopt;
    auto number = parse_uint(*text);
    if (!number || *number < min || *number > max) {
      error(v.mark, v.what + " must be " + range + ", got " + quote(*text));
      return std::nullopt;
    }
    return number;
  }

  std::optional<bool> boolean(const Value& v) {
    auto text = scalar(v, "true or false");
    if (!text) return std::nullopt;
    if (*text == "true" || *text == "True" || *text == "TRUE") return true;
    if (*text == "false" || *text == "False" || *text == "FALSE") return false;
    error(v.mark, v.what + " must be true or false, got " + quote(*text));
    return std::nullopt;
  }

  enum class Zero { Allowed, Rejected };

  std::optional<Duration> duration(const Value& v, Zero zero = Zero::Rejected) {
    auto text = scalar(v, "a duration");
    if (!text) return std::nullopt;
    auto parsed = parse_duration(*text);
    if (!parsed) {
      error(v.mark, "invalid duration " + quote(*text) + " for " + v.what +
                        " (expected a number with a unit: 250ms, 10s, 5m, 1h)");
      return std::nullopt;
    }
    if (zero == Zero::Rejected && parsed->count() == 0) {
      error(v.mark, v.what + " must be longer than 0");
      return std::nullopt;
    }
    return parsed;
  }

  std::optional<uint64_t> size(const Value& v, uint64_t min) {
    auto text = scalar(v, "a size");
    if (!text) return std::nullopt;
    auto parsed = parse_size(*text);
    if (!parsed) {
      error(v.mark, "invalid size " + quote(*text) + " for " + v.what +
                        " (expected bytes, or a number with KiB, MiB or GiB)");
      return std::nullopt;
    }
    if (*parsed < min) {
      error(v.mark, v.what + " must be at least " + std::to_string(min) + " bytes");
      return std::nullopt;
    }
    return parsed;
  }

  // "20%": a whole percentage from 0% to 100%.
  std::optional<int> percent(const Value& v) {
    auto text = scalar(v, "a percentage");
    if (!text) return std::nullopt;
    std::optional<uint64_t> number;
    if (text->ends_with('%'))
      number = parse_uint(std::string_view(*text).substr(0, text->size() - 1));
    if (!number || *number > 100) {
      error(v.mark, v.what + " must be a percentage from 0% to 100%, got " + quote(*text));
      return std::nullopt;
    }
    return static_cast<int>(*number);
  }

  // A section that may also be written as a bare switch: `sticky: true`, `outlier: off`.
  enum class Form { Map, On, Off, Invalid };

  // Map for anything but a scalar (null is an empty map; fields() reports other types), else
  // the switch, or Invalid after an error.
  Form map_or_switch(const Value& v) {
    if (!v.node.IsScalar()) return Form::Map;
    auto text = scalar(v);
    if (!text) return Form::Invalid;
    for (std::string_view on : {"true", "True", "TRUE", "on", "On", "ON"}) {
      if (*text == on) return Form::On;
    }
    for (std::string_view off : {"false", "False", "FALSE", "off", "Off", "OFF"}) {
      if (*text == off) return Form::Off;
    }
    error(v.mark, v.what + " must be a map, true/on or false/off, got " + quote(*text));
    return Form::Invalid;
  }

  // One of `allowed`; the documented-but-later values get the "not supported yet" error.
  std::optional<std::string> choice(const Value& v, std::string_view label, Keys allowed,
                                    Keys later = {}) {
    auto text = scalar(v);
    if (!text) return std::nullopt;
    if (contains(allowed, *text)) return text;
    if (contains(later, *text)) {
      error(v.mark,
            std::string(label) + " " + quote(*text) + " is not supported in this version yet");
      return std::nullopt;
    }
    std::vector<std::string_view> candidates(allowed.begin(), allowed.end());
    candidates.insert(candidates.end(), later.begin(), later.end());
    auto hint = closest(*text, candidates);
    error(v.mark, "unknown " + std::string(label) + " " + quote(*text) +
                      (hint ? did_you_mean(hint) : " (expected " + one_of(allowed) + ")"));
    return std::nullopt;
  }

  std::optional<std::string> object_name(const Value& v, std::string_view kind) {
    auto text = scalar(v);
    if (!text) return std::nullopt;
    if (!is_object_name(*text)) {
      error(v.mark, "invalid " + std::string(kind) + " name " + quote(*text) +
                        " (use letters, digits, '_', '.' and '-')");
      return std::nullopt;
    }
    return text;
  }

  // nullopt when RE2 accepts `pattern`, else its error text.
  static std::optional<std::string> regex_error(const std::string& pattern) {
    RE2::Options options;
    options.set_log_errors(false);
    RE2 re(pattern, options);
    if (re.ok()) return std::nullopt;
    return re.error();
  }

  // ---- Document ----------------------------------------------------------------------------

  void load_document(const std::string& yaml) {
    // YAML has no NUL character, and yaml-cpp reads one as an endless stream of empty documents.
    if (size_t nul = yaml.find('\0'); nul != std::string::npos) {
      error(position_of(yaml, nul), "the file contains a NUL byte: a config must be UTF-8 text");
      return;
    }
    YAML::Node root;
    try {
      root = YAML::Load(yaml);
    } catch (const YAML::Exception& e) {
      error(to_mark(e.mark), "YAML syntax error: " + e.msg);
      return;
    }
    check_single_document(yaml);
    Mark root_mark = mark_of(root, Mark{1, 1});
    auto top = fields(Value{root, root_mark, "the configuration"}, k_top);
    if (!top) return;

    if (const Field* f = top->get("workers")) load_workers(f->value);
    if (const Field* f = top->get("shutdown_timeout")) {
      if (auto d = duration(f->value, Zero::Allowed)) config_.shutdown_timeout = *d;
    }
    if (const Field* f = top->get("log")) load_log(f->value);
    if (const Field* f = top->get("limits")) load_limits(f->value, config_.limits);
    if (const Field* f = top->get("consumers")) load_consumers(f->value);
    if (const Field* f = top->get("auth")) load_authenticators(f->value);
    if (const Field* f = top->get("upstreams")) load_upstreams(f->value);
    size_t errors_before_listeners = errors_;
    if (const Field* f = top->get("listen")) {
      Listener listener;
      listener.name = "default";
      listener.limits = config_.limits;
      listener.mark = f->value.mark;
      if (load_listen(f->value, listener)) {
        add_listener(std::move(listener), f->value.mark, f->value.mark);
      }
    }
    if (const Field* f = top->get("listeners")) load_listeners(f->value);
    // Without listeners nothing is served; but when one failed to load, that error says enough.
    if (config_.listeners.empty() && errors_ == errors_before_listeners) {
      error(root_mark, "no listener: add 'listen: HOST:PORT' or a 'listeners' list");
    }
    if (const Field* f = top->get("rate_limits")) load_rate_limits_config(f->value);
    if (const Field* f = top->get("admin")) load_admin(f->value);
    if (const Field* f = top->get("cache")) {
      if (auto c = fields(f->value, k_cache)) {
        if (const Field* max = c->get("max_size")) {
          if (auto n = size(max->value, 1024 * 1024)) config_.cache_max_size = *n;
        }
      }
    }
    if (const Field* f = top->get("routes")) load_routes(f->value);
    if (const Field* f = top->get("mqtt")) load_mqtt(f->value);
    for (const Listener& l : config_.listeners) {
      if (l.protocol == "mqtt" && !config_.mqtt) {
        error(l.mark, "listener " + quote(l.name) +
                          " has 'protocol: mqtt' but there is no top-level 'mqtt' section with "
                          "its routes");
      }
      if (l.protocol == "mqtt" && l.redirect_to_https) {
        error(l.mark, "listener " + quote(l.name) + ": 'redirect_to_https' is for http listeners");
      }
      if (l.protocol != "http" && l.http2) {
        error(l.mark, "listener " + quote(l.name) + ": 'http2' is for http listeners");
      }
      // What an upstream behind a tcp/udp listener cannot do (yet).
      const Upstream* u = l.upstream.empty() ? nullptr : config_.find_upstream(l.upstream);
      if (u != nullptr && u->tls) {
        error(l.upstream_mark, "listener " + quote(l.name) + ": upstream " + quote(u->name) +
                                   " has 'tls', which a " + l.protocol +
                                   " listener does not support in this version yet");
      }
      if (u != nullptr && l.protocol == "udp" && u->proxy_protocol != 0) {
        error(l.upstream_mark, "listener " + quote(l.name) + ": upstream " + quote(u->name) +
                                   " sends 'proxy_protocol', which a udp listener cannot carry");
      }
    }
    // A global limit needs the Redis it shares its counts through.
    if (!config_.rate_limits.redis) {
      for (const Route& r : config_.routes) {
        for (const RateLimit& rl : r.rate_limits) {
          if (rl.scope == RateLimit::Scope::Global) {
            error(rl.mark, "route " + quote(r.name) +
                               ": a 'scope: global' rate limit needs 'rate_limits: { redis: { "
                               "address: HOST:PORT } }'");
          }
        }
      }
    }
  }

  void load_admin(const Value& v) {
    bool clean = true;
    auto f = fields(v, k_admin, clean);
    if (!f) return;
    Admin admin;
    admin.mark = v.mark;
    const Field* listen = f->get("listen");
    if (!listen) {
      if (clean) error(v.mark, "'admin' needs 'listen' (e.g. 127.0.0.1:9901)");
      return;
    }
    Listener probe;
    if (!load_listen(listen->value, probe)) return;
    admin.host = probe.host;
    admin.port = probe.port;
    if (const Field* token = f->get("token")) {
      if (auto text = scalar(token->value)) admin.token = *text;
    }
    bool loopback = admin.host == "::1" || admin.host.starts_with("127.");
    if (!loopback && admin.token.empty()) {
      warn(listen->value.mark, "the admin API listens on " + admin.host +
                                   " without a 'token': anyone who can reach it can reload, "
                                   "drain and purge");
    }
    config_.admin = std::move(admin);
  }

  void load_rate_limits_config(const Value& v) {
    auto f = fields(v, k_rate_limits);
    if (!f) return;
    const Field* redis = f->get("redis");
    if (!redis) return;
    auto r = fields(redis->value, k_redis);
    if (!r) return;
    RateLimits::Redis out;
    out.mark = redis->value.mark;
    if (const Field* address = r->get("address")) {
      if (auto text = scalar(address->value)) {
        std::string why;
        auto parts = split_host_port(*text, why);
        if (!parts) {
          error(address->value.mark, "invalid redis address " + quote(*text) + ": " + why);
        } else if (!canonical_ip(parts->host) && !is_hostname(parts->host)) {
          error(address->value.mark, "invalid redis address " + quote(*text) + ": " +
                                         quote(parts->host) +
                                         " is not an IP address or a host name");
        } else {
          out.host = parts->host;
          out.port = parts->port;
        }
      }
    } else {
      error(redis->key_mark, "'redis' needs 'address' (HOST:PORT)");
    }
    if (const Field* timeout = r->get("timeout")) {
      if (auto d = duration(timeout->value)) out.timeout = *d;
    }
    if (const Field* on_failure = r->get("on_failure")) {
      if (auto mode = choice(on_failure->value, "on_failure", k_on_failure)) {
        out.allow_on_failure = *mode == "allow";
      }
    }
    config_.rate_limits.redis = std::move(out);
  }

  void load_route_cache(const Value& v, Route& route) {
    auto f = fields(v, k_route_cache);
    if (!f) return;
    RouteCache& c = route.cache.emplace();
    c.mark = v.mark;
    if (const Field* ttl = f->get("ttl")) {
      if (auto d = duration(ttl->value)) c.ttl = *d;
    }
    if (const Field* vary = f->get("vary")) {
      for (auto& [name, mark] : string_or_list(vary->value, "a header name")) {
        if (!is_token(name)) {
          error(mark, "invalid header name " + quote(name) + " in 'vary'");
          continue;
        }
        c.vary.push_back(to_lower(name));
      }
    }
    if (const Field* stale = f->get("stale_if_error")) {
      if (auto d = duration(stale->value, Zero::Allowed)) c.stale_if_error = *d;
    }
    if (const Field* per = f->get("per_consumer")) {
      if (auto on = boolean(per->value)) c.per_consumer = *on;
    }
  }

  void load_route_transform(const Value& v, Route& route) {
    auto f = fields(v, k_transform);
    if (!f) return;
    RouteTransform& t = route.transform.emplace();
    t.mark = v.mark;
    if (const Field* req = f->get("request")) {
      if (auto c = choice(req->value, "request transform", k_transforms)) t.request = *c;
    }
    if (const Field* resp = f->get("response")) {
      if (auto c = choice(resp->value, "response transform", k_transforms)) t.response = *c;
    }
    if (!f->get("request") && !f->get("response")) {
      error(v.mark, "'transform' needs 'request' and/or 'response' (xml_to_json or json_to_xml)");
    }
  }

  void load_websocket_bridge(const Value& v, Route& route) {
    WebSocketBridge& b = route.websocket_bridge.emplace();
    b.mark = v.mark;
    if (v.node.IsScalar()) {  // `websocket_bridge: true`
      if (auto on = boolean(v); on && !*on) route.websocket_bridge.reset();
      return;
    }
    auto f = fields(v, k_ws_bridge);
    if (!f) return;
    if (const Field* m = f->get("method")) {
      if (auto text = scalar(m->value)) {
        if (!is_token(*text)) {
          error(m->value.mark, "invalid HTTP method " + quote(*text));
        } else {
          b.method = *text;
        }
      }
    }
    if (const Field* n = f->get("max_in_flight")) {
      if (auto x = integer(n->value, 1, 1024)) b.max_in_flight = static_cast<uint32_t>(*x);
    }
  }

  // Topic filter syntax (MQTT 3.1.1 section 4.7): `+` alone in a level, `#` alone in the last.
  static std::string topic_filter_problem(std::string_view filter) {
    if (filter.empty()) return "an empty topic filter";
    if (filter.find('\0') != std::string_view::npos) return "a NUL character";
    size_t start = 0;
    for (;;) {
      size_t end = filter.find('/', start);
      std::string_view level = filter.substr(
          start, end == std::string_view::npos ? std::string_view::npos : end - start);
      if (level.find('#') != std::string_view::npos &&
          (level != "#" || end != std::string_view::npos)) {
        return "'#' must be a whole level and the last one";
      }
      if (level.find('+') != std::string_view::npos && level != "+") {
        return "'+' must be a whole level";
      }
      if (end == std::string_view::npos) break;
      start = end + 1;
    }
    return {};
  }

  void load_mqtt(const Value& v) {
    auto f = fields(v, k_mqtt);
    if (!f) return;
    Mqtt& m = config_.mqtt.emplace();
    m.mark = v.mark;
    if (const Field* auth = f->get("auth")) {
      if (auto name = scalar(auth->value)) {
        m.auth = *name;
        const Authenticator* found = nullptr;
        for (const Authenticator& a : config_.authenticators) {
          if (a.name == *name) found = &a;
        }
        if (std::find(auth_names_.begin(), auth_names_.end(), *name) == auth_names_.end()) {
          error(auth->value.mark,
                "unknown authenticator " + quote(*name) +
                    did_you_mean(closest(*name, std::span<const std::string>(auth_names_))));
        } else if (found && found->kind == Authenticator::Kind::Jwt) {
          error(auth->value.mark,
                "mqtt 'auth' must be a basic or api_key authenticator (CONNECT "
                "carries a username and password), not jwt");
        }
      }
    }
    const Field* routes = f->get("routes");
    if (!routes) {
      error(v.mark, "'mqtt' needs 'routes' (topic filters and the upstreams they go to)");
      return;
    }
    auto items = list(routes->value);
    if (!items) return;
    for (const YAML::Node& node : *items) {
      Value entry = item(node, routes->value.mark, "an mqtt route");
      auto rf = fields(entry, k_mqtt_route);
      if (!rf) continue;
      MqttRoute r;
      r.mark = entry.mark;
      size_t wildcards = 0;
      if (const Field* topic = rf->get("topic")) {
        if (auto text = scalar(topic->value)) {
          r.topic = *text;
          if (auto problem = topic_filter_problem(r.topic); !problem.empty()) {
            error(topic->value.mark, "invalid topic filter " + quote(r.topic) + ": " + problem);
          }
          for (char c : r.topic) wildcards += (c == '+' || c == '#');
        }
      } else {
        error(entry.mark, "an mqtt route needs 'topic'");
      }
      if (const Field* up = rf->get("upstream")) {
        if (auto name = upstream_reference(up->value)) r.upstream = *name;
      } else {
        error(entry.mark, "an mqtt route needs 'upstream'");
      }
      if (const Field* method = rf->get("method")) {
        if (auto text = scalar(method->value)) {
          if (!is_token(*text)) {
            error(method->value.mark, "invalid HTTP method " + quote(*text));
          } else {
            r.method = *text;
          }
        }
      }
      if (const Field* path = rf->get("path")) {
        if (auto text = scalar(path->value)) {
          r.path = *text;
          if (r.path.empty() || r.path[0] != '/') {
            error(path->value.mark, "mqtt route 'path' must start with '/'");
          }
          for (size_t i = r.path.find('{'); i != std::string::npos; i = r.path.find('{', i + 1)) {
            size_t close = r.path.find('}', i);
            auto n = close == std::string::npos ? std::nullopt
                                                : parse_uint(r.path.substr(i + 1, close - i - 1));
            if (!n || *n < 1 || *n > wildcards) {
              error(path->value.mark, "mqtt route 'path' " + quote(r.path) +
                                          ": {n} must name a wildcard of the topic "
                                          "filter (1 to " +
                                          std::to_string(wildcards) + ")");
              break;
            }
          }
        }
      }
      m.routes.push_back(std::move(r));
    }
  }

  // "100/s", "6000/min", "10/h" (also "/m", "/sec", "/second", "/minute", "/hour").
  void load_rate(const Value& v, RateLimit& rl) {
    auto text = scalar(v, "a rate like 100/s");
    if (!text) return;
    size_t slash = text->find('/');
    // (plain values, not optionals: GCC 12 -O2 warns "may be used uninitialized" otherwise)
    uint64_t count = 0;
    int64_t period_s = 0;
    if (slash != std::string::npos) {
      count = parse_uint(text->substr(0, slash)).value_or(0);
      std::string unit = text->substr(slash + 1);
      if (unit == "s" || unit == "sec" || unit == "second") period_s = 1;
      if (unit == "m" || unit == "min" || unit == "minute") period_s = 60;
      if (unit == "h" || unit == "hour") period_s = 3600;
    }
    if (count == 0 || period_s == 0 || count > 1000000000) {
      error(v.mark, "invalid rate " + quote(*text) +
                        ": expected COUNT/s, COUNT/min or COUNT/h with COUNT from 1 to 1000000000");
      return;
    }
    rl.rate = count;
    rl.period = std::chrono::seconds(period_s);
  }

  void load_route_rate_limits(const Value& v, Route& route) {
    std::vector<YAML::Node> items;
    if (v.node.IsSequence()) {
      auto l = list(v);
      if (!l) return;
      items = std::move(*l);
    } else {
      items.push_back(v.node);  // a single limit without the list
    }
    if (items.empty()) error(v.mark, "'rate_limit' needs at least one limit");
    for (const YAML::Node& node : items) {
      Value entry = item(node, v.mark, "a rate limit");
      bool clean = true;
      auto f = fields(entry, k_rate_limit, clean);
      if (!f) continue;
      RateLimit rl;
      rl.mark = entry.mark;
      if (const Field* key = f->get("key")) {
        if (auto text = scalar(key->value)) {
          if (*text == "ip") {
            rl.key = RateLimit::Key::Ip;
          } else if (*text == "consumer") {
            rl.key = RateLimit::Key::Consumer;
          } else if (*text == "route") {
            rl.key = RateLimit::Key::Route;
          } else if (text->starts_with("header:") && is_token(text->substr(7))) {
            rl.key = RateLimit::Key::Header;
            rl.header = to_lower(text->substr(7));
          } else {
            error(key->value.mark, "invalid rate limit key " + quote(*text) +
                                       ": expected ip, consumer, route or header:NAME");
          }
        }
      } else if (clean) {
        error(entry.mark, "a rate limit needs 'key' (ip, consumer, route or header:NAME)");
      }
      if (const Field* rate = f->get("rate")) {
        load_rate(rate->value, rl);
      } else if (clean) {
        error(entry.mark, "a rate limit needs 'rate' (e.g. 100/s)");
      }
      rl.burst = rl.rate;
      if (const Field* burst = f->get("burst")) {
        if (auto n = integer(burst->value, 1, 1000000000)) rl.burst = *n;
      }
      if (const Field* scope = f->get("scope")) {
        if (auto mode = choice(scope->value, "scope", k_rate_limit_scopes)) {
          rl.scope = *mode == "global" ? RateLimit::Scope::Global : RateLimit::Scope::Local;
        }
      }
      if (const Field* sync = f->get("sync")) {
        if (rl.scope != RateLimit::Scope::Global) {
          error(sync->key_mark, "'sync' is only for 'scope: global' limits");
        } else if (auto text = scalar(sync->value); text && *text != "strict") {
          if (auto d = duration(sync->value)) rl.sync = *d;
        }
      }
      route.rate_limits.push_back(std::move(rl));
    }
  }

  static Mark position_of(const std::string& text, size_t offset) {
    Mark mark{1, 1};
    for (size_t i = 0; i < offset; ++i) {
      if (text[i] == '\n') {
        ++mark.line;
        mark.col = 1;
      } else {
        ++mark.col;
      }
    }
    return mark;
  }

  // Records where a document's content starts; a document of nothing but null is "empty".
  class DocumentProbe : public YAML::EventHandler {
   public:
    std::optional<YAML::Mark> content;

    void OnDocumentStart(const YAML::Mark&) override {}
    void OnDocumentEnd() override {}
    void OnNull(const YAML::Mark&, YAML::anchor_t) override {}
    void OnAlias(const YAML::Mark& mark, YAML::anchor_t) override { seen(mark); }
    void OnScalar(const YAML::Mark& mark, const std::string&, YAML::anchor_t,
                  const std::string&) override {
      seen(mark);
    }
    void OnSequenceStart(const YAML::Mark& mark, const std::string&, YAML::anchor_t,
                         YAML::EmitterStyle::value) override {
      seen(mark);
    }
    void OnSequenceEnd() override {}
    void OnMapStart(const YAML::Mark& mark, const std::string&, YAML::anchor_t,
                    YAML::EmitterStyle::value) override {
      seen(mark);
    }
    void OnMapEnd() override {}

   private:
    void seen(const YAML::Mark& mark) {
      if (!content) content = mark;
    }
  };

  // A second document ("---" and more keys) would be silently ignored by YAML::Load: refuse it.
  // The event API is used with a cap of two documents because yaml-cpp's LoadAll can loop forever
  // on some malformed streams.
  void check_single_document(const std::string& yaml) {
    std::istringstream in(yaml);
    YAML::Parser parser(in);
    try {
      DocumentProbe first;
      if (!parser.HandleNextDocument(first)) return;
      DocumentProbe second;
      if (parser.HandleNextDocument(second) && second.content) {
        error(to_mark(*second.content), "only one YAML document is allowed in a config file");
      }
    } catch (const YAML::Exception& e) {
      error(to_mark(e.mark), "YAML syntax error: " + e.msg);
    }
  }

  LoadResult finish() {
    // Warnings describe a config that loads; next to errors they are mostly echoes of them (an
    // upstream looks unused because the route naming it is broken).
    if (errors_ == 0) {
      for (Diagnostic& warning : lint(config_)) diagnostics_.push_back(std::move(warning));
    }
    std::stable_sort(diagnostics_.begin(), diagnostics_.end(),
                     [](const Diagnostic& a, const Diagnostic& b) {
                       if (a.mark.line != b.mark.line) return a.mark.line < b.mark.line;
                       return a.mark.col < b.mark.col;
                     });
    LoadResult result;
    result.diagnostics = std::move(diagnostics_);
    if (errors_ == 0) result.config = std::move(config_);
    return result;
  }

  // ---- Global sections ---------------------------------------------------------------------

  void load_workers(const Value& v) {
    auto text = scalar(v, "'auto' or a number");
    if (!text) return;
    if (*text == "auto") {
      config_.workers = 0;
      return;
    }
    auto number = parse_uint(*text);
    if (!number || *number < 1 || *number > k_max_workers) {
      error(v.mark, "'workers' must be 'auto' or a number from 1 to " +
                        std::to_string(k_max_workers) + ", got " + quote(*text));
      return;
    }
    config_.workers = static_cast<int>(*number);
  }

  void load_log(const Value& v) {
    auto f = fields(v, k_log);
    if (!f) return;
    if (const Field* access = f->get("access")) {
      if (auto out = log_destination(access->value)) config_.log.access = *out;
    }
    if (const Field* format = f->get("access_format")) {
      if (auto value = choice(format->value, "access log format", k_access_formats)) {
        config_.log.access_format = *value;
      }
    }
    if (const Field* err = f->get("error")) {
      if (auto out = log_destination(err->value)) config_.log.error = *out;
    }
    if (const Field* level = f->get("level")) {
      if (auto value = choice(level->value, "log level", k_log_levels)) config_.log.level = *value;
    }
    if (const Field* buffer = f->get("buffer")) {
      if (auto n = size(buffer->value, 4 * 1024)) config_.log.buffer = *n;
    }
  }

  // stdout | stderr | off, or a file path made absolute against the config file's directory.
  std::optional<std::string> log_destination(const Value& v) {
    auto text = scalar(v);
    if (!text) return std::nullopt;
    if (*text == "stdout" || *text == "stderr" || *text == "off") return text;
    if (text->empty() || text->find('\0') != std::string::npos) {
      error(v.mark, v.what + " must be stdout, stderr, off or a file path");
      return std::nullopt;
    }
    return absolute_path(*text);
  }

  std::string absolute_path(const std::string& path) const {
    std::filesystem::path p(path);
    if (p.is_relative()) p = std::filesystem::path(base_dir_) / p;
    std::error_code ec;
    std::filesystem::path absolute = std::filesystem::absolute(p, ec);
    return (ec ? p : absolute).lexically_normal().string();
  }

  // A file the gateway reads when it starts (a certificate, a key, a CA bundle, a JWKS): made
  // absolute against the config file's directory, and it must be readable now. Its content is
  // checked where it is used.
  std::optional<std::string> readable_file(const Value& v) {
    auto text = scalar(v, "a file path");
    if (!text) return std::nullopt;
    if (text->empty() || text->find('\0') != std::string::npos) {
      error(v.mark, v.what + " must be a file path");
      return std::nullopt;
    }
    std::string path = absolute_path(*text);
    if (auto why = unreadable(path)) {
      error(v.mark, "cannot read " + v.what + " file " + quote(path) + ": " + *why);
      return std::nullopt;
    }
    return path;
  }

  // nullopt when `path` is a file this process can open for reading, else why not.
  static std::optional<std::string> unreadable(const std::string& path) {
    struct stat info {};
    if (::stat(path.c_str(), &info) != 0) return std::strerror(errno);
    if (S_ISDIR(info.st_mode)) return std::strerror(EISDIR);
    // O_NONBLOCK: a FIFO named by mistake must not hang the load.
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) return std::strerror(errno);
    ::close(fd);
    return std::nullopt;
  }

  void load_limits(const Value& v, Limits& limits) {
    auto f = fields(v, k_limits);
    if (!f) return;
    auto set_duration = [&](std::string_view key, Duration& out) {
      if (const Field* field = f->get(key)) {
        if (auto d = duration(field->value)) out = *d;
      }
    };
    auto set_size = [&](std::string_view key, uint64_t& out, uint64_t min) {
      if (const Field* field = f->get(key)) {
        if (auto s = size(field->value, min)) out = *s;
      }
    };
    set_duration("header_timeout", limits.header_timeout);
    set_duration("idle_timeout", limits.idle_timeout);
    set_duration("request_body_timeout", limits.request_body_timeout);
    set_size("max_request_line", limits.max_request_line, 1);
    set_size("max_header_bytes", limits.max_header_bytes, 1);
    set_size("max_body", limits.max_body, 0);
    if (const Field* field = f->get("max_headers")) {
      if (auto n = integer(field->value, 1, 100'000)) limits.max_headers = *n;
    }
  }

  // ---- Listeners ---------------------------------------------------------------------------

  // "IP:port" or "[IPv6]:port"; a listener binds, so a hostname is refused.
  bool load_listen(const Value& v, Listener& listener) {
    auto text = scalar(v);
    if (!text) return false;
    std::string why;
    auto parts = split_host_port(*text, why);
    if (!parts) {
      error(v.mark, "invalid listen address " + quote(*text) + ": " + why);
      return false;
    }
    auto ip = canonical_ip(parts->host);
    bool is_v6 = parts->host.find(':') != std::string::npos;
    if (!ip || parts->bracketed != is_v6) {
      if (!ip && is_hostname(parts->host)) {
        error(v.mark, "invalid listen address " + quote(*text) +
                          ": the host must be an IP address (a listener cannot bind a hostname)");
      } else {
        error(v.mark, "invalid listen address " + quote(*text) + ": " + quote(parts->host) +
                          " is not an IP address");
      }
      return false;
    }
    listener.host = *ip;
    listener.port = parts->port;
    return true;
  }

  void load_listeners(const Value& v) {
    auto items = list(v);
    if (!items) return;
    for (size_t i = 0; i < items->size(); ++i) {
      Value entry = item((*items)[i], v.mark, "a listener");
      Listener listener;
      listener.name = "listener" + std::to_string(i);
      listener.limits = config_.limits;
      listener.mark = entry.mark;
      Mark name_mark = entry.mark;
      Mark listen_mark = entry.mark;
      bool has_address = false;
      if (auto f = fields(entry, k_listener)) {
        if (const Field* name = f->get("name")) {
          if (auto text = object_name(name->value, "listener")) listener.name = *text;
          name_mark = name->value.mark;
        }
        if (const Field* listen = f->get("listen")) {
          listen_mark = listen->value.mark;
          has_address = load_listen(listen->value, listener);
        } else {
          error(entry.mark, "listener " + quote(listener.name) + " needs 'listen: HOST:PORT'");
        }
        if (const Field* protocol = f->get("protocol")) {
          if (auto value = choice(protocol->value, "listener protocol", k_listener_protocols)) {
            listener.protocol = *value;
          }
        }
        if (const Field* limits = f->get("limits")) load_limits(limits->value, listener.limits);
        const Field* tls = f->get("tls");
        if (tls && listener.protocol != "tcp" && listener.protocol != "udp") {
          load_listener_tls(*tls, listener);
        }
        if (const Field* redirect = f->get("redirect_to_https")) {
          if (tls) {
            error(redirect->key_mark,
                  "'redirect_to_https' is only for a listener without 'tls' (it answers cleartext "
                  "requests with a redirect to https)");
          } else if (auto on = boolean(redirect->value)) {
            listener.redirect_to_https = *on;
          }
        }
        if (const Field* h2 = f->get("http2")) {
          if (auto on = boolean(h2->value)) listener.http2 = *on;
        }
        if (const Field* pp = f->get("proxy_protocol")) {
          if (auto on = boolean(pp->value)) listener.proxy_protocol = *on;
          if (listener.protocol == "udp" && listener.proxy_protocol) {
            error(pp->key_mark,
                  "'proxy_protocol' is for tcp, http and mqtt listeners (a udp "
                  "listener has no connection to carry the header)");
          }
        }
        load_listener_upstream(f->get("upstream"), f->get("tls"), entry.mark, listener);
      }
      if (has_address) add_listener(std::move(listener), name_mark, listen_mark);
    }
  }

  // `upstream` on tcp/udp listeners (required there, refused elsewhere); what such a listener
  // does not take (TLS termination, redirects).
  void load_listener_upstream(const Field* upstream, const Field* tls, Mark entry_mark,
                              Listener& listener) {
    const bool l4 = listener.protocol == "tcp" || listener.protocol == "udp";
    if (!l4) {
      if (upstream) {
        error(upstream->key_mark, "'upstream' is for tcp and udp listeners (an " +
                                      listener.protocol + " listener forwards by its routes)");
      }
      return;
    }
    if (!upstream) {
      error(entry_mark, "listener " + quote(listener.name) + " has 'protocol: " +
                            listener.protocol + "' but no 'upstream' (the upstream its " +
                            (listener.protocol == "tcp" ? "connections" : "datagrams") + " go to)");
    } else if (auto name = upstream_reference(upstream->value)) {
      listener.upstream = *name;
      listener.upstream_mark = upstream->value.mark;
    }
    if (tls) {
      error(tls->key_mark, "'tls' on a " + listener.protocol +
                               " listener is not supported in this version yet (bytes are "
                               "relayed as they are)");
    }
    if (listener.redirect_to_https) {
      error(entry_mark,
            "listener " + quote(listener.name) + ": 'redirect_to_https' is for http listeners");
      listener.redirect_to_https = false;
    }
  }

  void load_listener_tls(const Field& field, Listener& listener) {
    bool clean = true;
    auto f = fields(field.value, k_listener_tls, clean);
    if (!f) return;
    ListenerTls& tls = listener.tls.emplace();
    if (const Field* certificates = f->get("certificates")) {
      load_certificates(certificates->value, tls);
    } else if (clean) {
      error(field.key_mark, "'tls' needs 'certificates' (a list of { cert, key })");
    }
    if (const Field* version = f->get("min_version")) {
      if (auto text = scalar(version->value)) {
        if (contains(k_tls_versions, *text)) {
          tls.min_version = *text == "1.3" ? TlsVersion::Tls1_3 : TlsVersion::Tls1_2;
        } else {
          error(version->value.mark,
                "'min_version' must be \"1.2\" or \"1.3\", got " + quote(*text));
        }
      }
    }
    if (const Field* rotation = f->get("ticket_rotation")) {
      if (auto d = duration(rotation->value)) tls.ticket_rotation = *d;
    }
    const Field* client_ca = f->get("client_ca");
    if (client_ca) {
      tls.client_cert = ListenerTls::ClientCert::Optional;
      if (auto path = readable_file(client_ca->value)) tls.client_ca = *path;
    }
    if (const Field* client_cert = f->get("client_cert")) {
      if (!client_ca) {
        error(client_cert->key_mark,
              "'client_cert' needs 'client_ca' (the CA that signs the client certificates)");
      } else if (auto mode = choice(client_cert->value, "client_cert mode", k_client_cert_modes)) {
        tls.client_cert = *mode == "required" ? ListenerTls::ClientCert::Required
                                              : ListenerTls::ClientCert::Optional;
      }
    }
  }

  void load_certificates(const Value& v, ListenerTls& tls) {
    auto items = list(v);
    if (!items) return;
    if (items->empty()) {
      error(v.mark, "'certificates' needs at least one { cert, key }");
      return;
    }
    for (const YAML::Node& node : *items) {
      Value entry = item(node, v.mark, "a certificate");
      bool clean = true;
      auto f = fields(entry, k_certificate, clean);
      if (!f) continue;
      TlsCertificate certificate;
      certificate.mark = entry.mark;
      const Field* cert = f->get("cert");
      const Field* key = f->get("key");
      if (!cert && clean) {
        error(entry.mark, "a certificate needs 'cert' (the PEM certificate chain)");
      }
      if (!key && clean) error(entry.mark, "a certificate needs 'key' (the PEM private key)");
      std::optional<std::string> cert_path;
      std::optional<std::string> key_path;
      if (cert) cert_path = readable_file(cert->value);
      if (key) key_path = readable_file(key->value);
      if (!cert_path || !key_path) continue;
      certificate.cert = std::move(*cert_path);
      certificate.key = std::move(*key_path);
      tls.certificates.push_back(std::move(certificate));
    }
  }

  // Unique names and addresses across the top-level `listen` and the `listeners` list.
  void add_listener(Listener listener, Mark name_mark, Mark listen_mark) {
    for (const Listener& other : config_.listeners) {
      if (other.name == listener.name) {
        error(name_mark, "duplicate listener name " + quote(listener.name) +
                             " (first used at line " + std::to_string(other.mark.line) + ")");
      }
      // (a udp and a tcp-based listener may share an address: they are different sockets)
      if (other.host == listener.host && other.port == listener.port &&
          (other.protocol == "udp") == (listener.protocol == "udp")) {
        error(listen_mark, "listener " + quote(listener.name) + " uses the address of listener " +
                               quote(other.name) + " (line " + std::to_string(other.mark.line) +
                               ")");
      }
    }
    config_.listeners.push_back(std::move(listener));
  }

  // ---- Consumers ---------------------------------------------------------------------------

  void load_consumers(const Value& v) {
    auto items = list(v);
    if (!items) return;
    // Each api key (as "sha256:<hex>" or "key:<key>") -> where it was first given.
    std::map<std::string, std::pair<std::string, Mark>> keys_seen;
    for (const YAML::Node& node : *items) {
      Value entry = item(node, v.mark, "a consumer");
      bool clean = true;
      auto f = fields(entry, k_consumer, clean);
      if (!f) continue;
      Consumer consumer;
      consumer.mark = entry.mark;
      if (const Field* name = f->get("name")) {
        load_consumer_name(name->value, consumer);
      } else if (clean) {
        error(entry.mark, "a consumer needs 'name'");
      }
      if (const Field* groups = f->get("groups")) {
        for (auto& [text, mark] : string_or_list(groups->value, "a group")) {
          if (!is_consumer_name(text)) {
            error(mark, "invalid group name " + quote(text) +
                            " (use letters, digits, '_', '.', '-' and '@')");
          } else if (std::find(consumer.groups.begin(), consumer.groups.end(), text) ==
                     consumer.groups.end()) {
            consumer.groups.push_back(std::move(text));
          }
        }
      }
      if (const Field* api_keys = f->get("api_keys")) {
        load_api_keys(api_keys->value, consumer, keys_seen);
      }
      if (const Field* password = f->get("password")) {
        load_password(password->value, consumer);
      }
      config_.consumers.push_back(std::move(consumer));
    }
  }

  void load_consumer_name(const Value& v, Consumer& consumer) {
    auto text = scalar(v);
    if (!text) return;
    // Kept even when invalid: later messages name the consumer as written, and an `allow`
    // naming it is not also "unknown".
    consumer.name = *text;
    consumer_names_.push_back(*text);
    if (!is_consumer_name(*text)) {
      error(v.mark, "invalid consumer name " + quote(*text) +
                        " (use letters, digits, '_', '.', '-' and '@')");
      return;
    }
    for (const Consumer& other : config_.consumers) {
      if (other.name == *text) {
        error(v.mark, "duplicate consumer name " + quote(*text) + " (first used at line " +
                          std::to_string(other.mark.line) + ")");
        return;
      }
    }
  }

  // "sha256:<64 hex digits>" (stored lower-case) or "key:<the key>". Messages never repeat a key:
  // the output of `sluice validate` ends up in CI logs.
  void load_api_keys(const Value& v, Consumer& consumer,
                     std::map<std::string, std::pair<std::string, Mark>>& keys_seen) {
    std::string whose = "for consumer " + quote(consumer.name);
    for (auto& [text, mark] : string_or_list(v, "an api key")) {
      ApiKey key;
      key.mark = mark;
      if (text.starts_with("sha256:")) {
        std::string hex = to_lower(std::string_view(text).substr(7));
        if (hex.size() != k_sha256_hex || !is_hex(hex)) {
          error(mark, "invalid api key " + whose + ": 'sha256:' must be followed by 64 hex digits");
          continue;
        }
        key.kind = ApiKey::Kind::Sha256;
        key.value = std::move(hex);
      } else if (text.starts_with("key:")) {
        std::string_view plain = std::string_view(text).substr(4);
        bool printable = std::all_of(plain.begin(), plain.end(), [](char c) {
          return static_cast<unsigned char>(c) > 0x20 && c != 0x7f;
        });
        if (plain.empty() || !printable) {
          error(mark, "invalid api key " + whose +
                          ": 'key:' must be followed by the key, without spaces or control "
                          "characters");
          continue;
        }
        key.kind = ApiKey::Kind::Plain;
        key.value = std::string(plain);
      } else {
        error(mark, "invalid api key " + whose + ": expected sha256:<64 hex digits> or key:<key>");
        continue;
      }
      std::string id = (key.kind == ApiKey::Kind::Sha256 ? "sha256:" : "key:") + key.value;
      auto [it, added] = keys_seen.emplace(id, std::make_pair(consumer.name, mark));
      if (!added) {
        error(mark, "duplicate api key " + whose + " (consumer " + quote(it->second.first) +
                        " has it at line " + std::to_string(it->second.second.line) + ")");
        continue;
      }
      consumer.api_keys.push_back(std::move(key));
    }
  }

  // A crypt(3) hash; only its scheme prefix is checked here. The value is never repeated in a
  // message, in case a plain password was written by mistake.
  void load_password(const Value& v, Consumer& consumer) {
    auto text = scalar(v);
    if (!text) return;
    bool known =
        std::any_of(std::begin(k_password_hash_prefixes), std::end(k_password_hash_prefixes),
                    [&](std::string_view prefix) { return text->starts_with(prefix); });
    if (!known) {
      error(v.mark, "invalid password for consumer " + quote(consumer.name) +
                        ": expected a crypt(3) hash starting with $2a$, $2b$ or $2y$ (bcrypt), "
                        "$6$ (sha512-crypt), $5$ (sha256-crypt) or $y$ (yescrypt)");
      return;
    }
    bool spaced = std::any_of(text->begin(), text->end(), [](char c) {
      return static_cast<unsigned char>(c) <= 0x20 || c == 0x7f;
    });
    if (spaced) {
      error(v.mark, "invalid password for consumer " + quote(consumer.name) +
                        ": a crypt(3) hash has no spaces or control characters");
      return;
    }
    consumer.password = std::move(*text);
  }

  // ---- Authenticators ----------------------------------------------------------------------

  void load_authenticators(const Value& v) {
    std::vector<Entry> list = entries(v, "authenticator");
    // Names first, as for upstreams: a route naming a broken authenticator gets no echo error.
    for (const Entry& e : list) auth_names_.push_back(e.key);
    for (const Entry& e : list) load_authenticator(e);
  }

  void load_authenticator(const Entry& e) {
    Authenticator authenticator;
    authenticator.name = e.key;
    authenticator.mark = e.key_mark;
    if (!is_object_name(e.key)) {
      error(e.key_mark, "invalid authenticator name " + quote(e.key) +
                            " (use letters, digits, '_', '.' and '-')");
    }
    bool clean = true;
    auto f = fields(e.value, k_authenticator, clean);
    if (!f) return;
    if (f->list.empty()) {
      if (clean) {
        error(e.key_mark,
              "authenticator " + quote(e.key) + " needs one of " + one_of(k_authenticator_kinds));
      }
      return;
    }
    const Field& kind = f->list[0];
    for (size_t i = 1; i < f->list.size(); ++i) {
      error(f->list[i].key_mark, "authenticator " + quote(e.key) + " has both " + quote(kind.key) +
                                     " and " + quote(f->list[i].key) + ": give exactly one of " +
                                     one_of(k_authenticator_kinds));
    }
    if (kind.key == "jwt") {
      authenticator.kind = Authenticator::Kind::Jwt;
      load_jwt(kind, authenticator);
    } else if (kind.key == "api_key") {
      authenticator.kind = Authenticator::Kind::ApiKey;
      load_api_key_auth(kind, authenticator.api_key);
    } else {
      authenticator.kind = Authenticator::Kind::Basic;
      load_basic_auth(kind.value, authenticator.basic);
    }
    config_.authenticators.push_back(std::move(authenticator));
  }

  // A non-empty string; nullopt after an error.
  std::optional<std::string> non_empty(const Value& v) {
    auto text = scalar(v);
    if (text && text->empty()) {
      error(v.mark, v.what + " must not be empty");
      return std::nullopt;
    }
    return text;
  }

  void load_jwt(const Field& field, Authenticator& authenticator) {
    bool clean = true;
    auto f = fields(field.value, k_jwt, clean);
    if (!f) return;
    JwtAuth& jwt = authenticator.jwt;
    if (const Field* issuer = f->get("issuer")) {
      if (auto text = non_empty(issuer->value)) jwt.issuer = *text;
    }
    if (const Field* audiences = f->get("audiences")) {
      for (auto& [text, mark] : string_or_list(audiences->value, "an audience")) {
        if (text.empty()) {
          error(mark, "an audience must not be empty");
        } else if (std::find(jwt.audiences.begin(), jwt.audiences.end(), text) ==
                   jwt.audiences.end()) {
          jwt.audiences.push_back(std::move(text));
        }
      }
    }

    // The key material decides the algorithm family: one of `keys` or `secret`.
    enum class Material { Unknown, Keys, Secret };
    Material material = Material::Unknown;
    const Field* keys = f->get("keys");
    const Field* secret = f->get("secret");
    if (keys && secret) {
      // Both point into f->list, which is in file order: report the one written second.
      const Field* second = keys < secret ? secret : keys;
      error(second->key_mark,
            "'jwt' has both 'keys' and 'secret': give exactly one (keys for RS*, PS256, ES* and "
            "EdDSA, secret for HS*)");
    } else if (!keys && !secret) {
      if (clean) {
        error(field.key_mark,
              "'jwt' needs 'keys' (a JWKS or PEM public key file) or 'secret' (an HMAC secret)");
      }
    } else if (keys) {
      material = Material::Keys;
      if (auto path = readable_file(keys->value)) jwt.keys = *path;
    } else {
      material = Material::Secret;
      // Never repeated in a message: it is a secret.
      if (auto text = scalar(secret->value)) {
        if (text->size() < k_min_jwt_secret) {
          error(secret->value.mark,
                "'secret' must be at least " + std::to_string(k_min_jwt_secret) + " bytes, got " +
                    std::to_string(text->size()) + ": a short HMAC secret can be guessed offline");
        } else {
          jwt.secret = std::move(*text);
        }
      }
    }

    if (const Field* algorithms = f->get("algorithms")) {
      const Value& v = algorithms->value;
      if (v.node.IsSequence() && v.node.size() == 0) {
        error(v.mark, "'algorithms' needs at least one algorithm");
      }
      for (auto& [text, mark] : string_or_list(v, "an algorithm")) {
        if (to_lower(text) == "none") {
          error(mark, "JWT algorithm " + quote(text) +
                          " is never allowed: it accepts tokens without a signature");
          continue;
        }
        if (!contains(k_jwt_algorithms, text)) {
          auto hint = closest(text, k_jwt_algorithms);
          error(mark,
                "unknown JWT algorithm " + quote(text) +
                    (hint ? did_you_mean(hint) : " (expected " + one_of(k_jwt_algorithms) + ")"));
          continue;
        }
        bool hmac = contains(k_jwt_hmac_algorithms, text);
        if (hmac && material == Material::Keys) {
          error(mark, "JWT algorithm " + quote(text) + " needs a 'secret', but authenticator " +
                          quote(authenticator.name) + " has 'keys' (use RS*, PS256, ES* or EdDSA)");
          continue;
        }
        if (!hmac && material == Material::Secret) {
          error(mark, "JWT algorithm " + quote(text) + " needs 'keys', but authenticator " +
                          quote(authenticator.name) +
                          " has a 'secret' (use HS256, HS384 or HS512)");
          continue;
        }
        if (std::find(jwt.algorithms.begin(), jwt.algorithms.end(), text) == jwt.algorithms.end()) {
          jwt.algorithms.push_back(std::move(text));
        }
      }
    } else if (material == Material::Secret) {
      jwt.algorithms.assign(std::begin(k_jwt_hmac_algorithms), std::end(k_jwt_hmac_algorithms));
    } else if (material == Material::Keys) {
      jwt.algorithms.assign(std::begin(k_jwt_key_algorithms), std::end(k_jwt_key_algorithms));
    }

    if (const Field* leeway = f->get("leeway")) {
      if (auto d = duration(leeway->value, Zero::Allowed)) jwt.leeway = *d;
    }
    if (const Field* claim = f->get("consumer_claim")) {
      if (auto text = non_empty(claim->value)) jwt.consumer_claim = *text;
    }
    if (const Field* forward = f->get("forward_claims")) {
      for (const Entry& e : entries(forward->value, "claim")) {
        auto header = scalar(e.value);
        if (!header) continue;
        if (!is_token(*header)) {
          error(e.value.mark, "invalid header name " + quote(*header));
          continue;
        }
        std::string name = to_lower(*header);
        auto same = std::find_if(jwt.forward_claims.begin(), jwt.forward_claims.end(),
                                 [&](const auto& pair) { return pair.second == name; });
        if (same != jwt.forward_claims.end()) {
          error(e.value.mark,
                "header " + quote(name) + " already carries claim " + quote(same->first));
          continue;
        }
        jwt.forward_claims.emplace_back(e.key, std::move(name));
      }
    }
  }

  void load_api_key_auth(const Field& field, ApiKeyAuth& auth) {
    bool clean = true;
    auto f = fields(field.value, k_api_key_auth, clean);
    if (!f) return;
    const Field* header = f->get("header");
    const Field* query = f->get("query");
    if (!header && !query) {
      if (clean) error(field.key_mark, "'api_key' needs 'header', 'query' or both");
      return;
    }
    if (header) {
      if (auto text = scalar(header->value)) {
        if (is_token(*text)) {
          auth.header = to_lower(*text);
        } else {
          error(header->value.mark, "invalid header name " + quote(*text));
        }
      }
    }
    if (query) {
      if (auto text = scalar(query->value)) {
        if (text->empty() || text->find_first_of("&=#") != std::string::npos) {
          error(query->value.mark, "invalid query parameter name " + quote(*text));
        } else {
          auth.query = *text;
        }
      }
    }
  }

  // The realm is sent inside a quoted string: WWW-Authenticate: Basic realm="...".
  void load_basic_auth(const Value& v, BasicAuth& basic) {
    auto f = fields(v, k_basic);
    if (!f) return;
    if (const Field* realm = f->get("realm")) {
      auto text = scalar(realm->value);
      if (!text) return;
      bool plain = std::all_of(text->begin(), text->end(), [](char c) {
        return static_cast<unsigned char>(c) >= 0x20 && c != 0x7f && c != '"' && c != '\\';
      });
      if (text->empty() || !plain) {
        error(realm->value.mark,
              "'realm' must be non-empty text without quotes, backslashes or control characters, "
              "got " +
                  quote(*text));
        return;
      }
      basic.realm = *text;
    }
  }

  // ---- Upstreams ---------------------------------------------------------------------------

  void load_upstreams(const Value& v) {
    std::vector<Entry> list = entries(v, "upstream");
    // Names first: routes may refer to an upstream whose body has errors, and that is not an
    // "unknown upstream" on top.
    for (const Entry& e : list) upstream_names_.push_back(e.key);
    for (const Entry& e : list) load_upstream(e);
  }

  void load_upstream(const Entry& e) {
    Upstream upstream;
    upstream.name = e.key;
    upstream.mark = e.key_mark;
    if (!is_object_name(e.key)) {
      error(e.key_mark,
            "invalid upstream name " + quote(e.key) + " (use letters, digits, '_', '.' and '-')");
    }
    Value targets_value = e.value;
    bool has_targets = true;
    if (e.value.node.IsMap()) {
      auto f = fields(e.value, k_upstream);
      if (!f) return;
      if (const Field* targets = f->get("targets")) {
        targets_value = targets->value;
      } else {
        has_targets = false;
        error(e.key_mark, "upstream " + quote(e.key) + " needs 'targets'");
      }
      if (const Field* balance = f->get("balance")) {
        if (auto value = choice(balance->value, "balance", k_balances)) upstream.balance = *value;
      }
      if (const Field* hash_on = f->get("hash_on")) load_hash_on(*hash_on, upstream.hash_on);
      if (const Field* sticky = f->get("sticky")) load_sticky(sticky->value, upstream.sticky);
      if (const Field* check = f->get("health_check")) {
        load_health_check(*check, upstream.health_check);
      }
      if (const Field* outlier = f->get("outlier")) load_outlier(outlier->value, upstream.outlier);
      if (const Field* retries = f->get("retries")) load_retries(retries->value, upstream.retries);
      if (const Field* max = f->get("max_connections")) {
        if (auto n = integer(max->value, 1, k_max_connections)) {
          upstream.max_connections = static_cast<uint32_t>(*n);
        }
      }
      if (const Field* max = f->get("max_pending")) {
        if (auto n = integer(max->value, 0, k_max_connections)) {
          upstream.max_pending = static_cast<uint32_t>(*n);
        }
      }
      if (const Field* protocol = f->get("protocol")) {
        if (auto value = choice(protocol->value, "upstream protocol", k_upstream_protocols)) {
          upstream.protocol = *value;
        }
      }
      if (const Field* ttl = f->get("dns_ttl")) {
        if (auto d = duration(ttl->value)) upstream.dns_ttl = *d;
      }
      if (const Field* timeouts = f->get("timeouts")) {
        load_timeouts(timeouts->value, upstream.timeouts);
      }
      const Field* tls = f->get("tls");
      if (tls) load_upstream_tls(tls->value, upstream);
      if (const Field* pp = f->get("proxy_protocol")) {
        if (auto v = choice(pp->value, "proxy_protocol version", k_proxy_protocol_versions)) {
          upstream.proxy_protocol = *v == "v1" ? 1 : 2;
        }
      }
      if (const Field* protocol = f->get("protocol")) {
        if (upstream.protocol == "http2" && !tls) {
          error(protocol->value.mark,
                "upstream " + quote(upstream.name) +
                    ": 'protocol: http2' is HTTP/2 over TLS and needs a 'tls' block (use 'h2c' "
                    "for cleartext HTTP/2)");
        } else if (upstream.protocol == "h2c" && tls) {
          error(protocol->value.mark, "upstream " + quote(upstream.name) +
                                          ": 'protocol: h2c' is cleartext HTTP/2; with 'tls' "
                                          "use 'http2'");
        }
        if (upstream.protocol != "http1" && upstream.proxy_protocol != 0) {
          error(protocol->value.mark,
                "upstream " + quote(upstream.name) +
                    ": 'proxy_protocol' names one client per connection, and an HTTP/2 "
                    "connection carries many (use x-forwarded-for, or protocol http1)");
        }
        if (upstream.protocol != "http1" && upstream.health_check.enabled &&
            upstream.health_check.type == HealthCheck::Type::Http) {
          error(
              upstream.health_check.mark,
              "upstream " + quote(upstream.name) +
                  ": active health checks of type http speak "
                  "HTTP/1.1, which an HTTP/2 target need not understand; use 'type: tcp' (passive "
                  "outlier detection still watches every HTTP/2 answer)");
        }
      }
    } else if (!e.value.node.IsSequence()) {
      type_error(e.value, "a list of addresses or a map with 'targets'");
      has_targets = false;
    }
    if (has_targets) load_targets(targets_value, upstream);
    config_.upstreams.push_back(std::move(upstream));
  }

  // ip | consumer | path | header:NAME | cookie:NAME; header names are stored lower-case. Which
  // balances use it is lint's business (a warning), not an error here.
  void load_hash_on(const Field& field, HashOn& hash_on) {
    const Value& v = field.value;
    auto text = scalar(v);
    if (!text) return;
    size_t colon = text->find(':');
    std::string kind = text->substr(0, colon);
    std::string name = colon == std::string::npos ? "" : text->substr(colon + 1);
    bool named = kind == "header" || kind == "cookie";
    if (!contains(k_hash_kinds, kind)) {
      auto hint = closest(kind, k_hash_kinds);
      std::string suggestion;
      if (hint) {
        suggestion = std::string(*hint);
        if (*hint == "header" || *hint == "cookie") {
          suggestion += ":" + (is_token(name) ? name : std::string("NAME"));
        }
      }
      error(v.mark, "unknown hash_on " + quote(*text) +
                        (hint ? did_you_mean(suggestion)
                              : " (expected " + std::string(k_hash_on_forms) + ")"));
      return;
    }
    if (named && name.empty()) {
      error(v.mark, "hash_on " + quote(kind) + " needs a name: " + kind + ":NAME");
      return;
    }
    if (!named && colon != std::string::npos) {
      error(v.mark, "hash_on " + quote(kind) + " takes no name, got " + quote(*text));
      return;
    }
    if (named && !is_token(name)) {
      error(v.mark, "invalid " + kind + " name " + quote(name) + " in 'hash_on'");
      return;
    }
    if (kind == "ip") {
      hash_on.kind = HashOn::Kind::Ip;
    } else if (kind == "header") {
      hash_on.kind = HashOn::Kind::Header;
      hash_on.name = to_lower(name);
    } else if (kind == "cookie") {
      hash_on.kind = HashOn::Kind::Cookie;
      hash_on.name = name;
    } else if (kind == "consumer") {
      hash_on.kind = HashOn::Kind::Consumer;
    } else {
      hash_on.kind = HashOn::Kind::Path;
    }
    hash_on.mark = field.key_mark;
  }

  // `sticky: true` is the defaults; a map (even an empty one) turns it on with its values.
  void load_sticky(const Value& v, Sticky& sticky) {
    Form form = map_or_switch(v);
    if (form == Form::On || form == Form::Off) sticky.enabled = form == Form::On;
    if (form != Form::Map) return;
    auto f = fields(v, k_sticky);
    if (!f) return;
    sticky.enabled = true;
    if (const Field* cookie = f->get("cookie")) {
      if (auto text = scalar(cookie->value)) {
        if (is_token(*text)) {
          sticky.cookie = *text;
        } else {
          error(cookie->value.mark, "invalid cookie name " + quote(*text));
        }
      }
    }
    if (const Field* ttl = f->get("ttl")) {
      if (auto d = duration(ttl->value)) sticky.ttl = *d;
    }
  }

  void load_health_check(const Field& field, HealthCheck& check) {
    auto f = fields(field.value, k_health_check);
    if (!f) return;
    check.enabled = true;
    check.mark = field.key_mark;
    if (const Field* type = f->get("type")) {
      if (auto value = choice(type->value, "health check type", k_health_check_types)) {
        check.type = *value == "tcp" ? HealthCheck::Type::Tcp : HealthCheck::Type::Http;
      }
    }
    if (const Field* path = f->get("path")) {
      if (check.type == HealthCheck::Type::Tcp) {
        error(path->key_mark, "'path' is only for type http: a tcp health check only connects");
      } else if (auto text = scalar(path->value)) {
        if (!text->starts_with('/')) {
          error(path->value.mark, "'path' must start with '/', got " + quote(*text));
        } else if (text->find_first_of(std::string_view(" \t\r\n\0", 5)) != std::string::npos) {
          error(path->value.mark, "'path' must be a path without spaces, got " + quote(*text));
        } else {
          check.path = *text;
        }
      }
    }
    if (const Field* interval = f->get("interval")) {
      if (auto d = duration(interval->value)) check.interval = *d;
    }
    if (const Field* timeout = f->get("timeout")) {
      if (auto d = duration(timeout->value)) check.timeout = *d;
    }
    if (const Field* healthy = f->get("healthy")) {
      if (auto n = integer(healthy->value, 1, k_max_health_threshold)) {
        check.healthy = static_cast<int>(*n);
      }
    }
    if (const Field* unhealthy = f->get("unhealthy")) {
      if (auto n = integer(unhealthy->value, 1, k_max_health_threshold)) {
        check.unhealthy = static_cast<int>(*n);
      }
    }
    if (const Field* expect = f->get("expect")) load_expect(expect->value, check.expect);
  }

  // Status codes (204) and inclusive ranges (200-399), each within 100..599; replaces the default.
  void load_expect(const Value& v, std::vector<std::pair<int, int>>& expect) {
    if (v.node.IsSequence() && v.node.size() == 0) {
      error(v.mark, "'expect' needs at least one status");
      return;
    }
    std::vector<std::pair<int, int>> ranges;
    for (auto& [text, mark] : string_or_list(v, "a status")) {
      size_t dash = text.find('-');
      auto low = parse_uint(std::string_view(text).substr(0, dash));
      auto high =
          dash == std::string::npos ? low : parse_uint(std::string_view(text).substr(dash + 1));
      if (!low || !high) {
        error(mark, "invalid status " + quote(text) +
                        " in 'expect' (expected a code like 204 or a range like 200-399)");
        continue;
      }
      if (*low < 100 || *low > 599 || *high < 100 || *high > 599) {
        error(mark, "invalid status " + quote(text) + " in 'expect': codes are from 100 to 599");
        continue;
      }
      if (*low > *high) {
        error(mark, "invalid status range " + quote(text) + " in 'expect': " +
                        std::to_string(*low) + " is greater than " + std::to_string(*high));
        continue;
      }
      ranges.emplace_back(static_cast<int>(*low), static_cast<int>(*high));
    }
    if (!ranges.empty()) expect = std::move(ranges);
  }

  // `outlier: off` (or false) turns passive ejection off; `on`/true keeps the defaults.
  void load_outlier(const Value& v, Outlier& outlier) {
    Form form = map_or_switch(v);
    if (form == Form::Off) outlier.consecutive_failures = 0;
    if (form != Form::Map) return;
    auto f = fields(v, k_outlier);
    if (!f) return;
    if (const Field* failures = f->get("consecutive_failures")) {
      if (auto n = integer(failures->value, 0, k_max_consecutive_failures)) {
        outlier.consecutive_failures = static_cast<int>(*n);
      }
    }
    if (const Field* time = f->get("ejection_time")) {
      if (auto d = duration(time->value)) outlier.ejection_time = *d;
    }
    if (const Field* max = f->get("max_ejected")) {
      if (auto p = percent(max->value)) outlier.max_ejected_percent = *p;
    }
  }

  void load_retries(const Value& v, Retries& retries) {
    auto f = fields(v, k_retries);
    if (!f) return;
    if (const Field* attempts = f->get("attempts")) {
      if (auto n = integer(attempts->value, 0, k_max_retry_attempts)) {
        retries.attempts = static_cast<int>(*n);
      }
    }
    if (const Field* on = f->get("on")) load_retry_on(on->value, retries);
    if (const Field* methods = f->get("methods")) {
      if (auto value = choice(methods->value, "retry methods", k_retry_methods)) {
        retries.all_methods = *value == "all";
      }
    }
    if (const Field* budget = f->get("budget")) {
      if (auto p = percent(budget->value)) retries.budget_percent = *p;
    }
  }

  // connect_failure | reset | a 5xx status code; the list replaces the default one.
  void load_retry_on(const Value& v, Retries& retries) {
    if (v.node.IsSequence() && v.node.size() == 0) {
      error(v.mark, "'on' needs at least one condition ('attempts: 0' turns retries off)");
      return;
    }
    retries.on_connect_failure = false;
    retries.on_reset = false;
    retries.on_status.clear();
    for (auto& [text, mark] : string_or_list(v, "a retry condition")) {
      if (text == "connect_failure") {
        retries.on_connect_failure = true;
      } else if (text == "reset") {
        retries.on_reset = true;
      } else if (auto code = parse_uint(text)) {
        if (*code < 500 || *code > 599) {
          error(mark, "retry condition " + quote(text) + " is not a 5xx status code");
          continue;
        }
        int status = static_cast<int>(*code);
        if (std::find(retries.on_status.begin(), retries.on_status.end(), status) ==
            retries.on_status.end()) {
          retries.on_status.push_back(status);
        }
      } else {
        auto hint = closest(text, k_retry_conditions);
        error(mark, "unknown retry condition " + quote(text) +
                        (hint ? did_you_mean(hint)
                              : " (expected connect_failure, reset or a 5xx status code)"));
      }
    }
  }

  // `tls: {}` is TLS with the defaults: verify against the system store, SNI from the target.
  void load_upstream_tls(const Value& v, Upstream& upstream) {
    auto f = fields(v, k_upstream_tls);
    if (!f) return;
    UpstreamTls& tls = upstream.tls.emplace();
    if (const Field* sni = f->get("sni")) {
      if (auto text = scalar(sni->value)) {
        if (!is_hostname(*text) || canonical_ip(*text)) {
          error(sni->value.mark, "invalid 'sni' " + quote(*text) +
                                     ": expected a host name (SNI cannot carry an IP address)");
        } else {
          tls.sni = to_lower(*text);
        }
      }
    }
    if (const Field* verify = f->get("verify")) {
      if (auto on = boolean(verify->value)) tls.verify = *on;
    }
    if (const Field* ca = f->get("ca")) {
      if (auto path = readable_file(ca->value)) tls.ca = *path;
    }
  }

  void load_timeouts(const Value& v, Timeouts& timeouts) {
    auto f = fields(v, k_timeouts);
    if (!f) return;
    if (const Field* connect = f->get("connect")) {
      if (auto d = duration(connect->value)) timeouts.connect = *d;
    }
    if (const Field* request = f->get("request")) {
      if (auto d = duration(request->value)) timeouts.request = *d;
    }
    if (const Field* idle = f->get("idle")) {
      if (auto d = duration(idle->value)) timeouts.idle = *d;
    }
  }

  void load_targets(const Value& v, Upstream& upstream) {
    auto items = list(v);
    if (!items) return;
    if (items->empty()) {
      error(v.mark, "upstream " + quote(upstream.name) + " has no targets");
      return;
    }
    for (const YAML::Node& node : *items) {
      Value entry = item(node, v.mark, "a target");
      Target target;
      target.mark = entry.mark;
      Value address = entry;
      if (node.IsMap()) {
        auto f = fields(entry, k_target);
        if (!f) continue;
        const Field* address_field = f->get("address");
        if (const Field* weight = f->get("weight")) {
          if (auto w = integer(weight->value, 1, k_max_weight)) {
            target.weight = static_cast<uint32_t>(*w);
          }
        }
        if (!address_field) {
          error(entry.mark, "a target needs 'address: HOST:PORT'");
          continue;
        }
        address = address_field->value;
      } else if (!node.IsScalar()) {
        type_error(entry, "an address or a map with 'address'");
        continue;
      }
      if (!load_target_address(address, target)) continue;
      bool duplicate = std::any_of(upstream.targets.begin(), upstream.targets.end(),
                                   [&](const Target& t) { return t.address == target.address; });
      if (duplicate) {
        error(address.mark,
              "duplicate target " + quote(target.address) + " in upstream " + quote(upstream.name));
        continue;
      }
      upstream.targets.push_back(std::move(target));
    }
  }

  // "host:port" where host is an IP literal or a DNS name (re-resolved every dns_ttl).
  bool load_target_address(const Value& v, Target& target) {
    auto text = scalar(v);
    if (!text) return false;
    std::string why;
    auto parts = split_host_port(*text, why);
    if (!parts) {
      error(v.mark, "invalid target address " + quote(*text) + ": " + why);
      return false;
    }
    bool is_v6 = parts->host.find(':') != std::string::npos;
    bool valid = parts->bracketed
                     ? is_v6 && canonical_ip(parts->host).has_value()
                     : canonical_ip(parts->host).has_value() || is_hostname(parts->host);
    if (!valid) {
      error(v.mark, "invalid target address " + quote(*text) + ": " + quote(parts->host) +
                        " is not an IP address or a host name");
      return false;
    }
    target.address = *text;
    target.host = parts->host;
    target.port = parts->port;
    return true;
  }

  // ---- Routes ------------------------------------------------------------------------------

  void load_routes(const Value& v) {
    auto items = list(v);
    if (!items) return;
    std::vector<Mark> name_marks;
    for (size_t i = 0; i < items->size(); ++i) {
      Value entry = item((*items)[i], v.mark, "a route");
      Route route;
      route.name = "route" + std::to_string(i);
      route.mark = entry.mark;
      Mark name_mark = entry.mark;
      if (auto f = fields(entry, k_route)) {
        if (const Field* name = f->get("name")) {
          name_mark = name->value.mark;
          if (auto text = object_name(name->value, "route")) route.name = *text;
        }
        load_route(*f, route);
      }
      for (size_t j = 0; j < config_.routes.size(); ++j) {
        if (config_.routes[j].name == route.name) {
          error(name_mark, "duplicate route name " + quote(route.name) + " (first used at line " +
                               std::to_string(name_marks[j].line) + ")");
          break;
        }
      }
      name_marks.push_back(name_mark);
      config_.routes.push_back(std::move(route));
    }
  }

  void load_route(const Fields& f, Route& route) {
    if (const Field* match = f.get("match")) load_match(match->value, route.match);

    std::vector<const Field*> actions;
    for (const Field& field : f.list) {
      if (contains(k_route_actions, field.key)) actions.push_back(&field);
    }
    if (actions.empty()) {
      error(route.mark, "route " + quote(route.name) + " needs one of " + one_of(k_route_actions));
    }
    for (size_t i = 1; i < actions.size(); ++i) {
      error(actions[i]->key_mark, "route " + quote(route.name) + " has both " +
                                      quote(actions[0]->key) + " and " + quote(actions[i]->key) +
                                      ": give exactly one of " + one_of(k_route_actions));
    }
    if (!actions.empty()) load_action(*actions[0], route);

    if (const Field* rewrite = f.get("rewrite")) load_rewrite(rewrite->value, route);
    if (const Field* headers = f.get("headers")) {
      if (auto h = fields(headers->value, k_route_headers)) {
        if (const Field* request = h->get("request")) {
          load_header_ops(request->value, route.request_headers);
        }
        if (const Field* response = h->get("response")) {
          load_header_ops(response->value, route.response_headers);
        }
      }
    }
    if (const Field* timeout = f.get("timeout")) route.timeout = duration(timeout->value);

    const Field* auth = f.get("auth");
    if (auth) load_route_auth(auth->value, route);
    if (const Field* allow = f.get("allow")) load_allow(*allow, route.allow, auth != nullptr);
    if (const Field* rl = f.get("rate_limit")) load_route_rate_limits(rl->value, route);
    if (const Field* cache = f.get("cache")) load_route_cache(cache->value, route);
    if (const Field* t = f.get("transform")) load_route_transform(t->value, route);
    const Field* ws = f.get("websocket");
    if (ws) {
      if (auto on = boolean(ws->value)) route.websocket = *on;
    }
    if (const Field* bridge = f.get("websocket_bridge")) {
      load_websocket_bridge(bridge->value, route);
      if (route.websocket) {
        error(bridge->key_mark, "route " + quote(route.name) +
                                    " has both 'websocket' (passthrough) and 'websocket_bridge' "
                                    "(terminated here): choose one");
      }
    }
    if ((route.websocket || route.websocket_bridge) && route.action != Route::Action::Upstream &&
        route.action != Route::Action::Split) {
      error(route.mark, "route " + quote(route.name) +
                            ": WebSocket needs an 'upstream' (or 'split') to send to");
    }
    if (const Field* deny = f.get("deny")) {
      bool clean = true;
      if (auto d = fields(deny->value, k_deny, clean)) {
        if (const Field* ips = d->get("ips")) {
          load_ips(ips->value, route.deny.ips);
        } else if (clean) {
          error(deny->key_mark, "'deny' needs 'ips'");
        }
      }
    }
  }

  // ---- Authentication and authorization ----------------------------------------------------

  // One authenticator name or a list of them: any one of them suffices.
  void load_route_auth(const Value& v, Route& route) {
    if (v.node.IsSequence() && v.node.size() == 0) {
      error(v.mark, "'auth' needs at least one authenticator");
      return;
    }
    for (auto& [name, mark] : string_or_list(v, "an authenticator name")) {
      if (std::find(auth_names_.begin(), auth_names_.end(), name) == auth_names_.end()) {
        error(mark, "unknown authenticator " + quote(name) +
                        did_you_mean(closest(name, std::span<const std::string>(auth_names_))));
      }
      // Kept even when unknown, so the authenticator it meant is not also "unused".
      if (std::find(route.auth.begin(), route.auth.end(), name) == route.auth.end()) {
        route.auth.push_back(std::move(name));
      }
    }
  }

  void load_allow(const Field& field, Allow& allow, bool has_auth) {
    bool clean = true;
    auto f = fields(field.value, k_allow, clean);
    if (!f) return;
    if (f->list.empty()) {
      if (clean) error(field.key_mark, "'allow' needs at least one of " + one_of(k_allow_keys));
      return;
    }
    // Lists of names: consumers, groups, scopes.
    auto names = [&](const Field& list, std::string_view item_what) {
      std::vector<std::pair<std::string, Mark>> out;
      // Who the client is comes from the route's `auth`, or from a verified client certificate
      // (a listener with `client_ca`); scopes only from a JWT.
      bool mtls = std::any_of(config_.listeners.begin(), config_.listeners.end(),
                              [](const Listener& l) { return l.tls && !l.tls->client_ca.empty(); });
      if (!has_auth && (!mtls || list.key == "scopes")) {
        error(list.key_mark, "'allow' by " + list.key + " needs 'auth' on the route" +
                                 (list.key == "scopes" ? "" : " (or a listener with 'client_ca')"));
      }
      if (list.value.node.IsSequence() && list.value.node.size() == 0) {
        error(list.value.mark, quote(list.key) + " in 'allow' needs at least one entry");
        return out;
      }
      return string_or_list(list.value, std::string(item_what));
    };
    if (const Field* consumers = f->get("consumers")) {
      for (auto& [name, mark] : names(*consumers, "a consumer name")) {
        if (std::find(consumer_names_.begin(), consumer_names_.end(), name) ==
            consumer_names_.end()) {
          error(mark,
                "unknown consumer " + quote(name) +
                    did_you_mean(closest(name, std::span<const std::string>(consumer_names_))));
          continue;
        }
        add_unique(allow.consumers, std::move(name));
      }
    }
    if (const Field* groups = f->get("groups")) {
      for (auto& [name, mark] : names(*groups, "a group name")) {
        if (!is_consumer_name(name)) {
          error(mark, "invalid group name " + quote(name) +
                          " (use letters, digits, '_', '.', '-' and '@')");
          continue;
        }
        add_unique(allow.groups, std::move(name));
      }
    }
    if (const Field* scopes = f->get("scopes")) {
      allow.scopes_mark = scopes->key_mark;
      for (auto& [scope, mark] : names(*scopes, "a scope")) {
        // RFC 6749 3.3: scope tokens are printable ASCII without space, '"' or '\'.
        bool valid = !scope.empty() && std::all_of(scope.begin(), scope.end(), [](char c) {
          return c > 0x20 && c < 0x7f && c != '"' && c != '\\';
        });
        if (!valid) {
          error(mark, "invalid scope " + quote(scope) +
                          " (a scope is printable ASCII without spaces, '\"' or '\\')");
          continue;
        }
        add_unique(allow.scopes, std::move(scope));
      }
    }
    if (const Field* ips = f->get("ips")) load_ips(ips->value, allow.ips);
  }

  static void add_unique(std::vector<std::string>& list, std::string value) {
    if (std::find(list.begin(), list.end(), value) == list.end()) list.push_back(std::move(value));
  }

  // Addresses ("10.0.0.1", "::1") and CIDR blocks ("10.0.0.0/8", "2001:db8::/32").
  void load_ips(const Value& v, std::vector<IpRange>& out) {
    if (v.node.IsSequence() && v.node.size() == 0) {
      error(v.mark, "'ips' needs at least one address or CIDR block");
      return;
    }
    for (auto& [text, mark] : string_or_list(v, "an address")) {
      if (auto range = ip_range(text, mark)) out.push_back(std::move(*range));
    }
  }

  std::optional<IpRange> ip_range(const std::string& text, Mark mark) {
    size_t slash = text.find('/');
    std::string address = text.substr(0, slash);
    auto ip = canonical_ip(address);
    if (slash == std::string::npos && !ip) {
      error(mark, "invalid address " + quote(text) +
                      " in 'ips' (expected an IPv4 or IPv6 address, or a CIDR block like "
                      "10.0.0.0/8)");
      return std::nullopt;
    }
    if (!ip) {
      error(mark, "invalid CIDR " + quote(text) + " in 'ips': " + quote(address) +
                      " is not an IP address");
      return std::nullopt;
    }
    IpRange range;
    bool v6 = ip->find(':') != std::string::npos;
    range.family = v6 ? IpRange::Family::V6 : IpRange::Family::V4;
    unsigned bits = v6 ? 128 : 32;
    range.prefix_length = static_cast<int>(bits);
    if (slash != std::string::npos) {
      auto prefix = parse_uint(std::string_view(text).substr(slash + 1));
      if (!prefix || *prefix > bits) {
        error(mark, "invalid CIDR " + quote(text) + " in 'ips': the prefix length of an " +
                        (v6 ? "IPv6" : "IPv4") + " block is 0 to " + std::to_string(bits));
        return std::nullopt;
      }
      range.prefix_length = static_cast<int>(*prefix);
    }
    auto network = network_address(*ip, static_cast<unsigned>(range.prefix_length));
    if (!network) {  // unreachable: the address and the prefix length were checked above
      error(mark, "invalid CIDR " + quote(text) + " in 'ips'");
      return std::nullopt;
    }
    if (*network != *ip) {
      std::string block = *network + "/" + std::to_string(range.prefix_length);
      error(mark,
            "invalid CIDR " + quote(text) + " in 'ips': host bits are set" + did_you_mean(block));
      return std::nullopt;
    }
    range.address = std::move(*network);
    return range;
  }

  void load_action(const Field& action, Route& route) {
    if (action.key == "upstream") {
      route.action = Route::Action::Upstream;
      if (auto name = upstream_reference(action.value)) route.upstream = *name;
    } else if (action.key == "split") {
      route.action = Route::Action::Split;
      load_split(action.value, route);
    } else if (action.key == "respond") {
      route.action = Route::Action::Respond;
      load_respond(action.value, route.respond);
    } else {
      route.action = Route::Action::Redirect;
      load_redirect(action.value, route.redirect);
    }
  }

  std::optional<std::string> upstream_reference(const Value& v) {
    auto name = scalar(v);
    if (!name) return std::nullopt;
    if (std::find(upstream_names_.begin(), upstream_names_.end(), *name) == upstream_names_.end()) {
      error(v.mark,
            "unknown upstream " + quote(*name) +
                did_you_mean(closest(*name, std::span<const std::string>(upstream_names_))));
    }
    return name;  // kept even when unknown, so the upstream it meant is not also "unused"
  }

  void load_split(const Value& v, Route& route) {
    auto items = list(v);
    if (!items) return;
    if (items->empty()) {
      error(v.mark, "'split' needs at least one entry");
      return;
    }
    for (const YAML::Node& node : *items) {
      Value entry = item(node, v.mark, "a split entry");
      auto f = fields(entry, k_split);
      if (!f) continue;
      SplitEntry split;
      if (const Field* weight = f->get("weight")) {
        if (auto w = integer(weight->value, 1, k_max_weight))
          split.weight = static_cast<uint32_t>(*w);
      }
      if (const Field* upstream = f->get("upstream")) {
        if (auto name = upstream_reference(upstream->value)) split.upstream = *name;
      } else {
        error(entry.mark, "a split entry needs 'upstream'");
        continue;
      }
      route.split.push_back(std::move(split));
    }
  }

  void load_respond(const Value& v, Respond& respond) {
    auto f = fields(v, k_respond);
    if (!f) return;
    if (const Field* status = f->get("status")) {
      if (auto s = integer(status->value, 100, 599)) respond.status = static_cast<int>(*s);
    }
    if (const Field* body = f->get("body")) {
      if (auto text = scalar(body->value)) respond.body = *text;
    }
    if (const Field* headers = f->get("headers")) load_header_set(headers->value, respond.headers);
  }

  void load_redirect(const Value& v, Redirect& redirect) {
    auto f = fields(v, k_redirect);
    if (!f) return;
    if (const Field* to = f->get("to")) {
      if (auto text = scalar(to->value)) {
        if (text->empty() || !header_value_ok(*text)) {
          error(to->value.mark, "'to' must be a non-empty URL or path, got " + quote(*text));
        } else {
          redirect.to = *text;
        }
      }
    } else {
      error(v.mark, "'redirect' needs 'to'");
    }
    if (const Field* status = f->get("status")) {
      auto text = scalar(status->value, "a status");
      if (text) {
        auto code = parse_uint(*text);
        if (!code ||
            (*code != 301 && *code != 302 && *code != 303 && *code != 307 && *code != 308)) {
          error(status->value.mark,
                "redirect 'status' must be 301, 302, 303, 307 or 308, got " + quote(*text));
        } else {
          redirect.status = static_cast<int>(*code);
        }
      }
    }
  }

  // ---- Match -------------------------------------------------------------------------------

  void load_match(const Value& v, Match& match) {
    auto f = fields(v, k_match);
    if (!f) return;
    if (const Field* host = f->get("host")) load_hosts(host->value, match);

    std::vector<const Field*> paths;
    for (const Field& field : f->list) {
      if (contains(k_path_keys, field.key)) paths.push_back(&field);
    }
    for (size_t i = 1; i < paths.size(); ++i) {
      error(paths[i]->key_mark, "'match' has both " + quote(paths[0]->key) + " and " +
                                    quote(paths[i]->key) +
                                    ": give at most one of path, path_exact or path_regex");
    }
    if (!paths.empty()) load_path(*paths[0], match);

    if (const Field* methods = f->get("methods")) {
      for (auto& [text, mark] : string_or_list(methods->value, "a method")) {
        std::string method = to_upper(text);
        if (!is_token(method)) {
          error(mark, "invalid method " + quote(text));
          continue;
        }
        if (std::find(match.methods.begin(), match.methods.end(), method) == match.methods.end()) {
          match.methods.push_back(std::move(method));
        }
      }
    }
    if (const Field* headers = f->get("headers")) {
      for (const Entry& e : entries(headers->value, "header")) {
        if (!is_token(e.key)) {
          error(e.key_mark, "invalid header name " + quote(e.key));
          continue;
        }
        if (auto m = value_match(e, to_lower(e.key))) match.headers.push_back(std::move(*m));
      }
    }
    if (const Field* query = f->get("query")) {
      for (const Entry& e : entries(query->value, "query parameter")) {
        if (e.key.empty() || e.key.find_first_of("&=#") != std::string::npos) {
          error(e.key_mark, "invalid query parameter name " + quote(e.key));
          continue;
        }
        if (auto m = value_match(e, e.key)) match.query.push_back(std::move(*m));
      }
    }
  }

  // "*.example.org" wildcards; "*" alone is the same as no host predicate.
  void load_hosts(const Value& v, Match& match) {
    bool any = false;
    for (auto& [text, mark] : string_or_list(v, "a host")) {
      std::string host = to_lower(text);
      if (host == "*") {
        any = true;
        continue;
      }
      std::string_view name = host;
      if (name.starts_with("*.")) name.remove_prefix(2);
      bool valid = is_hostname(name) || (name.starts_with('[') && name.ends_with(']') &&
                                         canonical_ip(name.substr(1, name.size() - 2)));
      if (!valid) {
        error(mark, "invalid host " + quote(text) +
                        " (expected a host name, optionally starting with '*.')");
        continue;
      }
      if (std::find(match.hosts.begin(), match.hosts.end(), host) == match.hosts.end()) {
        match.hosts.push_back(std::move(host));
      }
    }
    if (any) match.hosts.clear();
  }

  void load_path(const Field& field, Match& match) {
    auto text = scalar(field.value);
    if (!text) return;
    const Mark& at = field.value.mark;
    if (field.key == "path_regex") {
      if (auto why = regex_error(*text)) {
        error(at, "invalid path_regex " + quote(*text) + ": " + *why);
        return;
      }
      match.path_kind = Match::PathKind::Regex;
      match.path = *text;
      return;
    }
    if (!text->starts_with('/')) {
      error(at, quote(field.key) + " must start with '/', got " + quote(*text));
      return;
    }
    if (text->find_first_of(" \t\r\n?#") != std::string::npos ||
        text->find('\0') != std::string::npos) {
      error(at,
            quote(field.key) + " must be a path without spaces, '?' or '#', got " + quote(*text));
      return;
    }
    if (field.key == "path_exact") {
      match.path_kind = Match::PathKind::Exact;
      match.path = *text;
      return;
    }
    if (text->find_first_of("{}") != std::string::npos) {
      if (auto why = template_error(*text)) {
        error(at, "invalid path template " + quote(*text) + ": " + *why);
        return;
      }
      match.path_kind = Match::PathKind::Template;
    } else {
      // "/" matches every path: store it as Any so the router and the linter need no special case.
      match.path_kind = *text == "/" ? Match::PathKind::Any : Match::PathKind::Prefix;
    }
    match.path = *text;
  }

  // Each {name} must be a whole segment, names [A-Za-z_][A-Za-z0-9_]* and unique.
  static std::optional<std::string> template_error(std::string_view path) {
    std::set<std::string_view> names;
    size_t start = 1;
    while (start <= path.size()) {
      size_t end = path.find('/', start);
      if (end == std::string_view::npos) end = path.size();
      std::string_view segment = path.substr(start, end - start);
      if (segment.find_first_of("{}") != std::string_view::npos) {
        if (segment.size() < 3 || segment.front() != '{' || segment.back() != '}') {
          return "a parameter must be a whole segment, like /{id}/";
        }
        std::string_view name = segment.substr(1, segment.size() - 2);
        bool valid = !(name[0] >= '0' && name[0] <= '9') &&
                     std::all_of(name.begin(), name.end(), [](char c) {
                       return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                              (c >= '0' && c <= '9') || c == '_';
                     });
        if (!valid) return "invalid parameter name " + quote(name);
        if (!names.insert(name).second) return "parameter " + quote(name) + " appears twice";
      }
      start = end + 1;
    }
    return std::nullopt;
  }

  // "present" = the header/parameter is there; "~regex" = RE2 match; anything else = exact value.
  std::optional<ValueMatch> value_match(const Entry& e, std::string name) {
    auto text = scalar(e.value);
    if (!text) return std::nullopt;
    ValueMatch m;
    m.name = std::move(name);
    if (*text == "present") {
      m.kind = ValueMatch::Kind::Present;
    } else if (text->starts_with('~')) {
      m.kind = ValueMatch::Kind::Regex;
      m.value = text->substr(1);
      if (auto why = regex_error(m.value)) {
        error(e.value.mark,
              "invalid regex " + quote(m.value) + " for " + e.value.what + ": " + *why);
        return std::nullopt;
      }
    } else {
      m.kind = ValueMatch::Kind::Exact;
      m.value = *text;
    }
    return m;
  }

  // ---- Rewrite and header operations -------------------------------------------------------

  void load_rewrite(const Value& v, Route& route) {
    auto f = fields(v, k_rewrite);
    if (!f) return;
    const Field* strip = f->get("strip_prefix");
    const Field* prefix = f->get("prefix");
    const Field* regex = f->get("regex");
    const Field* replace = f->get("replace");
    int forms = (strip ? 1 : 0) + (prefix ? 1 : 0) + (regex || replace ? 1 : 0);
    if (forms > 1) {
      error(v.mark, "'rewrite' takes one of strip_prefix, prefix, or regex with replace");
      return;
    }
    Rewrite& rewrite = route.rewrite;
    if (strip) {
      auto on = boolean(strip->value);
      if (!on || !*on) return;
      auto kind = route.match.path_kind;
      if (kind == Match::PathKind::Regex || kind == Match::PathKind::Template) {
        error(strip->key_mark, "'strip_prefix' needs a 'path' prefix match to strip");
        return;
      }
      rewrite.kind = Rewrite::Kind::StripPrefix;
    } else if (prefix) {
      auto text = scalar(prefix->value);
      if (!text) return;
      if (!text->starts_with('/')) {
        error(prefix->value.mark, "rewrite 'prefix' must start with '/', got " + quote(*text));
        return;
      }
      rewrite.kind = Rewrite::Kind::Prefix;
      rewrite.prefix = *text;
    } else if (regex || replace) {
      if (!regex) {
        error(replace->key_mark, "rewrite 'replace' needs 'regex'");
        return;
      }
      if (!replace) {
        error(regex->key_mark, "rewrite 'regex' needs 'replace'");
        return;
      }
      auto pattern = scalar(regex->value);
      auto replacement = scalar(replace->value);
      if (!pattern || !replacement) return;
      RE2::Options options;
      options.set_log_errors(false);
      RE2 re(*pattern, options);
      if (!re.ok()) {
        error(regex->value.mark, "invalid rewrite regex " + quote(*pattern) + ": " + re.error());
        return;
      }
      std::string why;
      if (!re.CheckRewriteString(*replacement, &why)) {
        error(replace->value.mark, "invalid rewrite replace " + quote(*replacement) + ": " + why);
        return;
      }
      rewrite.kind = Rewrite::Kind::Regex;
      rewrite.regex = *pattern;
      rewrite.replace = *replacement;
    }
  }

  static bool header_value_ok(std::string_view value) {
    return value.find_first_of(std::string_view("\r\n\0", 3)) == std::string_view::npos;
  }

  void load_header_ops(const Value& v, HeaderOps& ops) {
    auto f = fields(v, k_header_ops);
    if (!f) return;
    if (const Field* set = f->get("set")) load_header_set(set->value, ops.set);
    if (const Field* remove = f->get("remove")) {
      for (auto& [text, mark] : string_or_list(remove->value, "a header name")) {
        if (!is_token(text)) {
          error(mark, "invalid header name " + quote(text));
          continue;
        }
        ops.remove.push_back(to_lower(text));
      }
    }
  }

  void load_header_set(const Value& v, std::vector<std::pair<std::string, std::string>>& out) {
    for (const Entry& e : entries(v, "header")) {
      if (!is_token(e.key)) {
        error(e.key_mark, "invalid header name " + quote(e.key));
        continue;
      }
      auto text = scalar(e.value);
      if (!text) continue;
      if (!header_value_ok(*text)) {
        error(e.value.mark,
              "the value of header " + quote(e.key) + " must not contain CR, LF or NUL");
        continue;
      }
      out.emplace_back(to_lower(e.key), std::move(*text));
    }
  }

  std::string file_;
  std::string base_dir_;
  Config config_;
  std::vector<Diagnostic> diagnostics_;
  size_t errors_ = 0;
  std::vector<std::string> upstream_names_;  // every name under `upstreams:`, valid or not
  std::vector<std::string> auth_names_;      // every name under `auth:`, valid or not
  std::vector<std::string> consumer_names_;  // every consumer's `name`, valid or not
};

}  // namespace

LoadResult load_string(const std::string& yaml, const std::string& file_name,
                       const std::string& base_dir) {
  return Loader(file_name, base_dir).load(yaml);
}

LoadResult load_file(const std::string& path) {
  // Plain POSIX reads so the error names the real cause (ENOENT, EACCES, EISDIR ...).
  std::string text;
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  int failure = fd < 0 ? errno : 0;
  if (fd >= 0) {
    char buffer[64 * 1024];
    for (;;) {
      ssize_t n = ::read(fd, buffer, sizeof buffer);
      if (n > 0) {
        text.append(buffer, static_cast<size_t>(n));
      } else if (n == 0) {
        break;
      } else if (errno != EINTR) {
        failure = errno;
        break;
      }
    }
    ::close(fd);
  }
  if (failure != 0) {
    LoadResult result;
    result.diagnostics.push_back({Diagnostic::Severity::Error, path, Mark{},
                                  std::string("cannot read: ") + std::strerror(failure)});
    return result;
  }
  std::string base_dir = std::filesystem::path(path).parent_path().string();
  return load_string(text, path, base_dir.empty() ? "." : base_dir);
}

}  // namespace sluice::config

#include "config/config.h"

namespace sluice::config {

std::string Diagnostic::str() const {
  std::string out = file;
  if (mark.line > 0) {
    out += ':' + std::to_string(mark.line) + ':' + std::to_string(mark.col);
  }
  out += ": ";
  if (severity == Severity::Warning) out += "warning: ";
  out += message;
  return out;
}

const Upstream* Config::find_upstream(std::string_view name) const {
  for (const Upstream& upstream : upstreams) {
    if (upstream.name == name) return &upstream;
  }
  return nullptr;
}

const Consumer* Config::find_consumer(std::string_view name) const {
  for (const Consumer& consumer : consumers) {
    if (consumer.name == name) return &consumer;
  }
  return nullptr;
}

const Authenticator* Config::find_authenticator(std::string_view name) const {
  for (const Authenticator& authenticator : authenticators) {
    if (authenticator.name == name) return &authenticator;
  }
  return nullptr;
}

}  // namespace sluice::config

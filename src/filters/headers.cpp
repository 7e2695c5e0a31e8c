#include "filters/headers.h"

namespace sluice::filters {
namespace {

void apply(const config::HeaderOps& ops, std::vector<http::Header>& list) {
  for (const auto& name : ops.remove) Exchange::remove(list, name);
  for (const auto& [name, value] : ops.set) Exchange::set(list, name, value);
}

class HeadersFilter final : public Filter {
 public:
  HeadersFilter(config::HeaderOps request, config::HeaderOps response)
      : request_(std::move(request)), response_(std::move(response)) {}
  std::string_view name() const override { return "headers"; }
  Step on_request(Exchange& x) const override {
    apply(request_, x.upstream_headers);
    return Step::next();
  }
  void on_response(Exchange& x) const override { apply(response_, x.response_headers); }

 private:
  config::HeaderOps request_;
  config::HeaderOps response_;
};

}  // namespace

std::unique_ptr<const Filter> make_headers_filter(const config::HeaderOps& request,
                                                  const config::HeaderOps& response) {
  if (request.set.empty() && request.remove.empty() && response.set.empty() &&
      response.remove.empty()) {
    return nullptr;
  }
  return std::make_unique<HeadersFilter>(request, response);
}

}  // namespace sluice::filters

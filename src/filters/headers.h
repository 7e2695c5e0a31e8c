// Route `headers:` policy: set/remove request headers going upstream and response headers going
// downstream (SPEC.md section 2).
#pragma once

#include <memory>

#include "config/config.h"
#include "filters/filter.h"

namespace sluice::filters {

// nullptr when the route has no header operations.
std::unique_ptr<const Filter> make_headers_filter(const config::HeaderOps& request,
                                                  const config::HeaderOps& response);

}  // namespace sluice::filters

// The live dashboard served at GET / of the admin listener (SPEC.md section 4): one self-contained
// HTML page (src/admin/dashboard.html, with dygraphs inlined), compiled in as a constant by
// src/admin/embed_page.cmake. The page fetches nothing but /api/stats (once a second, with the
// admin token the operator typed into it), so it holds no data itself.
//
//   r.content_type = "text/html; charset=utf-8";
//   r.body = server::kDashboardPage;
#pragma once

#include <string_view>

namespace sluice::server {

// The whole page (UTF-8 HTML); constant-initialised, valid for the life of the program.
extern const std::string_view kDashboardPage;

}  // namespace sluice::server

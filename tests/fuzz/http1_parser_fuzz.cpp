// libFuzzer target for the HTTP/1 parsers, the chunked decoder and the path normaliser.
//
// Besides "does not crash", it checks properties the proxy relies on:
//   - a head fed in pieces parses exactly like the same head fed whole;
//   - every view in a parsed head points into the input (zero-copy, no dangling views);
//   - a chunked body fed in pieces decodes to the same bytes, with the same end, as fed whole;
//   - normalise_path is idempotent.
//
//   clang++ -std=c++20 -fsanitize=fuzzer,address -Isrc tests/fuzz/http1_parser_fuzz.cpp \
//       src/http/*.cpp -o /tmp/h1fuzz && /tmp/h1fuzz tests/fuzz/corpus/http1_parser
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "http/normalise.h"
#include "http/parser.h"

namespace {

using sluice::http::BodyKind;
using sluice::http::ChunkedDecoder;
using sluice::http::normalise_path;
using sluice::http::NormalisedPath;
using sluice::http::ParseResult;
using sluice::http::ParseStatus;
using sluice::http::RequestHead;
using sluice::http::RequestParser;
using sluice::http::ResponseHead;
using sluice::http::ResponseParser;

constexpr size_t kStep = 7;

void check(bool ok) {
  if (!ok) std::abort();
}

bool inside(std::string_view view, std::string_view buf) {
  if (view.empty()) return true;
  return view.data() >= buf.data() && view.data() + view.size() <= buf.data() + buf.size();
}

bool same(const ParseResult& a, const ParseResult& b) {
  return a.status == b.status && a.consumed == b.consumed && a.error_status == b.error_status &&
         a.error == b.error;
}

void check_request_views(const RequestHead& h, std::string_view buf) {
  check(inside(h.method, buf) && inside(h.target, buf) && inside(h.query, buf) &&
        inside(h.host, buf));
  check(inside(h.path, buf) || h.path == "/");  // absolute-form without a path
  for (const auto& hdr : h.headers) check(inside(hdr.name, buf) && inside(hdr.value, buf));
  if (h.body_kind != BodyKind::Length) check(h.content_length == 0);
}

// Feeds `buf` growing by kStep bytes, as a socket would deliver it.
ParseResult parse_request_in_steps(std::string_view buf, RequestHead& head) {
  RequestParser parser;
  ParseResult r;
  for (size_t end = kStep;; end += kStep) {
    r = parser.parse(buf.substr(0, end < buf.size() ? end : buf.size()), head);
    if (r.status != ParseStatus::Incomplete || end >= buf.size()) return r;
  }
}

void fuzz_request(std::string_view buf) {
  RequestParser parser;
  RequestHead whole;
  const ParseResult r = parser.parse(buf, whole);
  if (r.status == ParseStatus::Done) {
    check(r.consumed <= buf.size());
    check_request_views(whole, buf);
    if (!whole.path.empty() && whole.path[0] == '/') normalise_path(whole.path);
    // Parsing again on the same buffer is harmless and gives the same answer.
    RequestHead again;
    check(same(parser.parse(buf, again), r));
  }

  RequestHead stepped;
  const ParseResult s = parse_request_in_steps(buf, stepped);
  check(same(r, s));
  if (r.status == ParseStatus::Done) {
    check(whole.method == stepped.method && whole.target == stepped.target &&
          whole.host == stepped.host && whole.headers.size() == stepped.headers.size() &&
          whole.body_kind == stepped.body_kind && whole.content_length == stepped.content_length &&
          whole.keep_alive == stepped.keep_alive);
  }
}

void fuzz_response(std::string_view buf) {
  for (std::string_view method : {"GET", "HEAD"}) {
    ResponseParser parser;
    ResponseHead head;
    const ParseResult r = parser.parse(buf, head, method);
    if (r.status == ParseStatus::Error) check(r.error_status == 502);
    if (r.status != ParseStatus::Done) continue;
    check(r.consumed <= buf.size() && inside(head.reason, buf));
    check(head.status >= 100 && head.status <= 599);
    for (const auto& hdr : head.headers) check(inside(hdr.name, buf) && inside(hdr.value, buf));
    if (head.body_kind == BodyKind::UntilClose) check(!head.keep_alive);
  }
}

struct Decoded {
  std::string data;
  size_t consumed = 0;
  bool error = false;
  bool done = false;
};

void fuzz_chunked(std::string_view buf) {
  Decoded whole;
  {
    ChunkedDecoder dec;
    std::vector<std::string_view> pieces;
    const auto r = dec.feed(buf, pieces);
    for (std::string_view p : pieces) {
      check(inside(p, buf) && !p.empty());
      whole.data += p;
    }
    whole.consumed = r.consumed;
    whole.error = r.error;
    whole.done = dec.done();
    check(r.consumed <= buf.size());
    if (!r.error && !whole.done) check(r.consumed == buf.size());
  }

  // The same bytes in kStep-byte deliveries; unconsumed bytes are presented again.
  Decoded stepped;
  ChunkedDecoder dec;
  size_t pos = 0;
  for (size_t end = kStep;; end += kStep) {
    const size_t stop = end < buf.size() ? end : buf.size();
    std::vector<std::string_view> pieces;
    const auto r = dec.feed(buf.substr(pos, stop - pos), pieces);
    for (std::string_view p : pieces) stepped.data += p;
    pos += r.consumed;
    if (r.error) {
      stepped.error = true;
      break;
    }
    if (dec.done() || stop == buf.size()) break;
  }
  stepped.done = dec.done();
  check(whole.error == stepped.error);
  if (!whole.error) {
    check(whole.done == stepped.done && whole.data == stepped.data);
    if (whole.done) check(whole.consumed == pos);
  }
}

void fuzz_normalise(std::string_view buf) {
  const NormalisedPath n = normalise_path(buf);
  if (!n.ok) {
    check(!n.error.empty());
    return;
  }
  check(!n.path.empty() && n.path[0] == '/');
  check(n.path.find("//") == std::string::npos);
  const NormalisedPath again = normalise_path(n.path);
  check(again.ok && again.path == n.path);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // A copy of exactly `size` bytes, so ASan catches any read past the end.
  const std::vector<char> copy(data, data + size);
  const std::string_view buf(copy.data(), copy.size());
  fuzz_request(buf);
  fuzz_response(buf);
  fuzz_chunked(buf);
  fuzz_normalise(buf);
  // Also the bytes after the first blank line, so a request seed exercises the body decoder.
  if (const size_t end = buf.find("\r\n\r\n"); end != std::string_view::npos) {
    fuzz_chunked(buf.substr(end + 4));
  }
  return 0;
}

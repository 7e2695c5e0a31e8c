// libFuzzer target for the PROXY protocol parser (net/proxy_protocol.h): any bytes must give a
// header, an error or "need more", never a crash, a hang or undefined behaviour. Checked too:
//   - Done never claims more bytes than given, nor more than the documented bounds;
//   - NeedMore is consistent: every prefix of a parsed header also answers NeedMore (so a reader
//     that consumes the bytes of a NeedMore never eats into what follows the header);
//   - a parsed header with addresses, encoded again, parses back to the same addresses.
//
//   clang++ -std=c++20 -fsanitize=fuzzer,address,undefined -Isrc \
//     tests/fuzz/proxy_protocol_fuzz.cpp src/net/proxy_protocol.cpp -o /tmp/ppfuzz
//   mkdir -p /tmp/ppcorpus && /tmp/ppfuzz -max_total_time=60 /tmp/ppcorpus \
//     tests/fuzz/corpus/proxy_protocol
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "net/proxy_protocol.h"

using namespace sluice::net;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view in(reinterpret_cast<const char*>(data), size);
  ProxyHeader h;
  ParseResult r = parse_proxy_header(in, h);
  if (r.status != ParseStatus::Done) return 0;
  if (r.size == 0 || r.size > size) std::abort();
  if (r.size > (h.version == 1 ? kMaxV1Size : kMaxV2Size)) std::abort();
  for (size_t n = 0; n < r.size; ++n) {
    ProxyHeader ignored;
    if (parse_proxy_header(in.substr(0, n), ignored).status != ParseStatus::NeedMore) std::abort();
  }
  if (h.local) return 0;
  for (int version = 1; version <= 2; ++version) {
    std::string again = encode_proxy_header(version, h.source, h.destination);
    ProxyHeader back;
    ParseResult r2 = parse_proxy_header(again, back);
    if (r2.status != ParseStatus::Done || r2.size != again.size() || back.local ||
        back.source.ip != h.source.ip || back.source.port != h.source.port ||
        back.destination.ip != h.destination.ip || back.destination.port != h.destination.port) {
      std::abort();
    }
  }
  return 0;
}

#include "http/parser.h"

#include <gtest/gtest.h>

#include <string>
#include <string_view>
#include <vector>

namespace sluice::http {
namespace {

using namespace std::string_view_literals;

ParseResult parse_request(std::string_view buf, RequestHead& head, ParserLimits limits = {}) {
  RequestParser parser(limits);
  return parser.parse(buf, head);
}

// Parses `buf` in one go and expects an error with `status`.
void expect_request_error(std::string_view buf, int status, ParserLimits limits = {}) {
  RequestHead head;
  const ParseResult r = parse_request(buf, head, limits);
  EXPECT_EQ(r.status, ParseStatus::Error) << buf;
  EXPECT_EQ(r.error_status, status) << buf << " -> " << r.error;
  EXPECT_FALSE(r.error.empty()) << buf;
}

// Parses `buf` in one go, expects Done with the whole buffer consumed, returns the head.
RequestHead expect_request_ok(std::string_view buf) {
  RequestHead head;
  const ParseResult r = parse_request(buf, head);
  EXPECT_EQ(r.status, ParseStatus::Done) << buf << " -> " << r.error_status << " " << r.error;
  EXPECT_EQ(r.consumed, buf.size()) << buf;
  return head;
}

bool points_into(std::string_view view, std::string_view buf) {
  return view.data() >= buf.data() && view.data() + view.size() <= buf.data() + buf.size();
}

// --- request line ---

TEST(RequestParser, SimpleGetIsParsedIntoViewsOfTheBuffer) {
  const std::string buf = "GET /a/b?x=1&y=2 HTTP/1.1\r\nHost: example.com\r\nAccept: */*\r\n\r\n";
  RequestHead head;
  const ParseResult r = parse_request(buf, head);
  ASSERT_EQ(r.status, ParseStatus::Done);
  EXPECT_EQ(r.consumed, buf.size());
  EXPECT_EQ(head.method, "GET");
  EXPECT_EQ(head.target, "/a/b?x=1&y=2");
  EXPECT_EQ(head.path, "/a/b");
  EXPECT_EQ(head.query, "x=1&y=2");
  EXPECT_EQ(head.version, Version::Http11);
  EXPECT_EQ(head.host, "example.com");
  EXPECT_EQ(head.body_kind, BodyKind::None);
  EXPECT_TRUE(head.keep_alive);
  EXPECT_FALSE(head.expect_continue);
  EXPECT_FALSE(head.upgrade);
  ASSERT_EQ(head.headers.size(), 2u);
  EXPECT_EQ(head.headers[1].name, "Accept");
  EXPECT_EQ(head.headers[1].value, "*/*");
  for (std::string_view v : {head.method, head.target, head.path, head.query, head.host,
                             head.headers[0].name, head.headers[1].value}) {
    EXPECT_TRUE(points_into(v, buf));
  }
}

TEST(RequestParser, ConsumedStopsAtEndOfHeadLeavingBodyAndPipelinedBytes) {
  const std::string buf = "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabcGET /";
  RequestHead head;
  const ParseResult r = parse_request(buf, head);
  ASSERT_EQ(r.status, ParseStatus::Done);
  EXPECT_EQ(buf.substr(r.consumed), "abcGET /");
  EXPECT_EQ(head.body_kind, BodyKind::Length);
  EXPECT_EQ(head.content_length, 3u);
}

TEST(RequestParser, LeadingEmptyLinesAreSkippedAndCounted) {
  const std::string buf = "\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n";
  RequestHead head = expect_request_ok(buf);
  EXPECT_EQ(head.method, "GET");
}

TEST(RequestParser, TooManyLeadingEmptyLinesAreRejected) {
  expect_request_error("\r\n\r\n\r\n\r\n\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n", 400);
}

TEST(RequestParser, QueryIsEmptyWhenAbsentAndMaySplitOnlyAtFirstQuestionMark) {
  EXPECT_EQ(expect_request_ok("GET /p HTTP/1.1\r\nHost: h\r\n\r\n").query, "");
  const RequestHead head = expect_request_ok("GET /p?a?b HTTP/1.1\r\nHost: h\r\n\r\n");
  EXPECT_EQ(head.path, "/p");
  EXPECT_EQ(head.query, "a?b");
}

TEST(RequestParser, Http10WithoutHostIsAccepted) {
  const RequestHead head = expect_request_ok("GET / HTTP/1.0\r\n\r\n");
  EXPECT_EQ(head.version, Version::Http10);
  EXPECT_FALSE(head.keep_alive);
  EXPECT_EQ(head.host, "");
}

TEST(RequestParser, ExtensionMethodTokenIsAccepted) {
  EXPECT_EQ(expect_request_ok("PURGE /x HTTP/1.1\r\nHost: h\r\n\r\n").method, "PURGE");
}

TEST(RequestParser, MethodThatIsNotATokenIsRejectedWith400) {
  expect_request_error("G(T / HTTP/1.1\r\nHost: h\r\n\r\n", 400);
  expect_request_error(" GET / HTTP/1.1\r\nHost: h\r\n\r\n", 400);
  expect_request_error("GE\x01T / HTTP/1.1\r\nHost: h\r\n\r\n"sv, 400);
}

TEST(RequestParser, RequestLineNeedsExactlySingleSpaces) {
  expect_request_error("GET  / HTTP/1.1\r\nHost: h\r\n\r\n", 400);
  expect_request_error("GET /  HTTP/1.1\r\nHost: h\r\n\r\n", 400);
  expect_request_error("GET / HTTP/1.1 \r\nHost: h\r\n\r\n", 400);
  expect_request_error("GET\t/ HTTP/1.1\r\nHost: h\r\n\r\n", 400);
  expect_request_error("GET /\r\nHost: h\r\n\r\n", 400);
  expect_request_error("GET\r\nHost: h\r\n\r\n", 400);
}

TEST(RequestParser, SpaceInsideTargetIsRejected) {
  expect_request_error("GET /a b HTTP/1.1\r\nHost: h\r\n\r\n", 400);
}

TEST(RequestParser, WellFormedOtherVersionsAreRejectedWith505) {
  expect_request_error("GET / HTTP/2.0\r\nHost: h\r\n\r\n", 505);
  expect_request_error("GET / HTTP/1.2\r\nHost: h\r\n\r\n", 505);
  expect_request_error("GET / HTTP/0.9\r\nHost: h\r\n\r\n", 505);
}

TEST(RequestParser, GarbageVersionIsRejectedWith400) {
  expect_request_error("GET / HTTP/1.10\r\nHost: h\r\n\r\n", 400);
  expect_request_error("GET / http/1.1\r\nHost: h\r\n\r\n", 400);
  expect_request_error("GET / HTTP/1\r\nHost: h\r\n\r\n", 400);
  expect_request_error("GET / FOO\r\nHost: h\r\n\r\n", 400);
}

TEST(RequestParser, RequestLineLongerThanLimitIsRejectedWith414) {
  ParserLimits limits;
  limits.max_request_line = 32;
  const std::string ok = "GET /" + std::string(18, 'a') + " HTTP/1.1";  // exactly 32 bytes
  ASSERT_EQ(ok.size(), 32u);
  RequestHead head;
  EXPECT_EQ(parse_request(ok + "\r\nHost: h\r\n\r\n", head, limits).status, ParseStatus::Done);
  const std::string too_long = "GET /" + std::string(19, 'a') + " HTTP/1.1\r\nHost: h\r\n\r\n";
  expect_request_error(too_long, 414, limits);
}

TEST(RequestParser, LongRequestLineIsRejectedBeforeItsCrlfArrives) {
  ParserLimits limits;
  limits.max_request_line = 32;
  RequestParser parser(limits);
  RequestHead head;
  const std::string partial = "GET /" + std::string(27, 'a');  // 32 bytes, could still end here
  EXPECT_EQ(parser.parse(partial, head).status, ParseStatus::Incomplete);
  const ParseResult r = parser.parse(partial + "a", head);
  EXPECT_EQ(r.status, ParseStatus::Error);
  EXPECT_EQ(r.error_status, 414);
}

// --- request target ---

TEST(RequestParser, TargetWithFragmentIsRejected) {
  expect_request_error("GET /a#frag HTTP/1.1\r\nHost: h\r\n\r\n", 400);
}

TEST(RequestParser, TargetWithDelOrHighBytesIsRejected) {
  expect_request_error("GET /a\x7f HTTP/1.1\r\nHost: h\r\n\r\n"sv, 400);
  expect_request_error("GET /caf\xc3\xa9 HTTP/1.1\r\nHost: h\r\n\r\n"sv, 400);
  expect_request_error("GET /a\0b HTTP/1.1\r\nHost: h\r\n\r\n"sv, 400);
}

TEST(RequestParser, AbsoluteFormTargetSetsHostPathAndQueryOverridingHostHeader) {
  const RequestHead head =
      expect_request_ok("GET http://api.example.com:8080/v1/x?y=1 HTTP/1.1\r\nHost: other\r\n\r\n");
  EXPECT_EQ(head.host, "api.example.com:8080");
  EXPECT_EQ(head.path, "/v1/x");
  EXPECT_EQ(head.query, "y=1");
  EXPECT_EQ(head.target, "http://api.example.com:8080/v1/x?y=1");
}

TEST(RequestParser, AbsoluteFormWithoutPathMeansRoot) {
  const RequestHead a = expect_request_ok("GET HTTP://h.example HTTP/1.1\r\nHost: h\r\n\r\n");
  EXPECT_EQ(a.path, "/");
  EXPECT_EQ(a.host, "h.example");
  const RequestHead b = expect_request_ok("GET http://h.example?q HTTP/1.1\r\nHost: h\r\n\r\n");
  EXPECT_EQ(b.path, "/");
  EXPECT_EQ(b.query, "q");
}

TEST(RequestParser, AbsoluteFormWithUserinfoOrBadAuthorityIsRejected) {
  expect_request_error("GET http://user@h/ HTTP/1.1\r\nHost: h\r\n\r\n", 400);
  expect_request_error("GET http:///x HTTP/1.1\r\nHost: h\r\n\r\n", 400);
  expect_request_error("GET http://h:port/ HTTP/1.1\r\nHost: h\r\n\r\n", 400);
  expect_request_error("GET ftp://h/ HTTP/1.1\r\nHost: h\r\n\r\n", 400);
}

TEST(RequestParser, AbsoluteFormStillNeedsHostHeaderInHttp11) {
  expect_request_error("GET http://h/ HTTP/1.1\r\n\r\n", 400);
}

TEST(RequestParser, AsteriskTargetIsAcceptedOnlyWithOptions) {
  const RequestHead head = expect_request_ok("OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n");
  EXPECT_EQ(head.target, "*");
  expect_request_error("GET * HTTP/1.1\r\nHost: h\r\n\r\n", 400);
}

TEST(RequestParser, ConnectIsRejectedWith501) {
  expect_request_error("CONNECT h:443 HTTP/1.1\r\nHost: h:443\r\n\r\n", 501);
}

TEST(RequestParser, AuthorityFormAndRelativeTargetsAreRejected) {
  expect_request_error("GET h:443 HTTP/1.1\r\nHost: h\r\n\r\n", 400);
  expect_request_error("GET a/b HTTP/1.1\r\nHost: h\r\n\r\n", 400);
}

// --- line endings ---

TEST(RequestParser, BareLfAnywhereInHeadIsRejected) {
  expect_request_error("GET / HTTP/1.1\nHost: h\r\n\r\n", 400);
  expect_request_error("GET / HTTP/1.1\r\nHost: h\n\r\n", 400);
  expect_request_error("GET / HTTP/1.1\r\nHost: h\r\n\n", 400);
  expect_request_error("\nGET / HTTP/1.1\r\nHost: h\r\n\r\n", 400);
}

TEST(RequestParser, BareCrAnywhereInHeadIsRejected) {
  expect_request_error("GET / HTTP/1.1\rHost: h\r\n\r\n", 400);
  expect_request_error("GET / HTTP/1.1\r\nHost: h\rX: y\r\n\r\n", 400);
  expect_request_error("GET / HTTP/1.1\r\nX: a\rb\r\nHost: h\r\n\r\n", 400);
}

TEST(RequestParser, CrAtEndOfBufferWaitsForTheNextByte) {
  RequestParser parser;
  RequestHead head;
  EXPECT_EQ(parser.parse("GET / HTTP/1.1\r", head).status, ParseStatus::Incomplete);
  EXPECT_EQ(parser.parse("GET / HTTP/1.1\rX", head).status, ParseStatus::Error);
}

// --- headers ---

TEST(RequestParser, HeaderValueHasSurroundingWhitespaceStripped) {
  const RequestHead head =
      expect_request_ok("GET / HTTP/1.1\r\nHost:h\r\nX-A: \t a b \t \r\nX-Empty:\r\n\r\n");
  EXPECT_EQ(head.header("x-a").value, "a b");
  const HeaderLookup empty = head.header("X-EMPTY");
  EXPECT_TRUE(empty.found);
  EXPECT_EQ(empty.value, "");
  EXPECT_EQ(head.host, "h");
}

TEST(RequestParser, HeaderNamesKeepTheirCaseAndOrder) {
  const RequestHead head =
      expect_request_ok("GET / HTTP/1.1\r\nhOsT: h\r\nX-b: 1\r\nx-B: 2\r\n\r\n");
  ASSERT_EQ(head.headers.size(), 3u);
  EXPECT_EQ(head.headers[0].name, "hOsT");
  EXPECT_EQ(head.headers[2].name, "x-B");
  EXPECT_EQ(head.header("x-b").value, "1");
}

TEST(RequestParser, ObsTextInHeaderValueIsAccepted) {
  const RequestHead head = expect_request_ok("GET / HTTP/1.1\r\nHost: h\r\nX: caf\xc3\xa9\r\n\r\n");
  EXPECT_EQ(head.header("x").value, "caf\xc3\xa9");
}

TEST(RequestParser, ObsFoldIsRejected) {
  expect_request_error("GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n b\r\n\r\n", 400);
  expect_request_error("GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n\tb\r\n\r\n", 400);
}

TEST(RequestParser, FirstHeaderLineStartingWithWhitespaceIsRejected) {
  expect_request_error("GET / HTTP/1.1\r\n Host: h\r\n\r\n", 400);
}

TEST(RequestParser, WhitespaceBeforeColonIsRejected) {
  expect_request_error("GET / HTTP/1.1\r\nHost : h\r\n\r\n", 400);
  expect_request_error("GET / HTTP/1.1\r\nHost: h\r\nContent-Length\t: 1\r\n\r\n", 400);
}

TEST(RequestParser, HeaderNameThatIsNotATokenIsRejected) {
  expect_request_error("GET / HTTP/1.1\r\nHost: h\r\nX(y): 1\r\n\r\n", 400);
  expect_request_error("GET / HTTP/1.1\r\nHost: h\r\n: 1\r\n\r\n", 400);
  expect_request_error("GET / HTTP/1.1\r\nHost: h\r\nNoColon\r\n\r\n", 400);
}

TEST(RequestParser, ControlCharactersInHeaderValueAreRejected) {
  expect_request_error("GET / HTTP/1.1\r\nHost: h\r\nX: a\0b\r\n\r\n"sv, 400);
  expect_request_error("GET / HTTP/1.1\r\nHost: h\r\nX: a\x01\r\n\r\n"sv, 400);
  expect_request_error("GET / HTTP/1.1\r\nHost: h\r\nX: a\x7f\r\n\r\n"sv, 400);
}

TEST(RequestParser, HeadLargerThanLimitIsRejectedWith431) {
  ParserLimits limits;
  limits.max_header_bytes = 64;
  const std::string head = "GET / HTTP/1.1\r\nHost: h\r\nX: " + std::string(100, 'v') + "\r\n\r\n";
  expect_request_error(head, 431, limits);
}

TEST(RequestParser, HeadExactlyAtLimitIsAccepted) {
  const std::string buf = "GET / HTTP/1.1\r\nHost: h\r\n\r\n";
  ParserLimits limits;
  limits.max_header_bytes = buf.size();
  RequestHead head;
  EXPECT_EQ(parse_request(buf, head, limits).status, ParseStatus::Done);
  limits.max_header_bytes = buf.size() - 1;
  expect_request_error(buf, 431, limits);
}

TEST(RequestParser, EndlessHeadIsRejectedWith431WhileIncomplete) {
  ParserLimits limits;
  limits.max_header_bytes = 64;
  RequestParser parser(limits);
  RequestHead head;
  std::string buf = "GET / HTTP/1.1\r\nHost: h\r\nX: ";
  EXPECT_EQ(parser.parse(buf, head).status, ParseStatus::Incomplete);
  buf += std::string(64, 'v');
  const ParseResult r = parser.parse(buf, head);
  EXPECT_EQ(r.status, ParseStatus::Error);
  EXPECT_EQ(r.error_status, 431);
}

TEST(RequestParser, MoreHeaderLinesThanLimitAreRejectedWith431) {
  ParserLimits limits;
  limits.max_headers = 3;
  RequestHead head;
  EXPECT_EQ(parse_request("GET / HTTP/1.1\r\nHost: h\r\nA: 1\r\nB: 2\r\n\r\n", head, limits).status,
            ParseStatus::Done);
  expect_request_error("GET / HTTP/1.1\r\nHost: h\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n", 431, limits);
}

// --- Content-Length ---

TEST(RequestParser, ContentLengthZeroIsALengthBody) {
  const RequestHead head =
      expect_request_ok("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n");
  EXPECT_EQ(head.body_kind, BodyKind::Length);
  EXPECT_EQ(head.content_length, 0u);
}

TEST(RequestParser, ContentLengthUpToUint64MaxIsAccepted) {
  const RequestHead head = expect_request_ok(
      "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 18446744073709551615\r\n\r\n");
  EXPECT_EQ(head.content_length, 18446744073709551615u);
}

TEST(RequestParser, MalformedContentLengthIsRejected) {
  for (std::string_view cl : {"-1", "+1", "1 2", "0x10", "", "1.0", "abc", "18446744073709551616",
                              "99999999999999999999999", "1,", ",1"}) {
    expect_request_error(
        "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: " + std::string(cl) + "\r\n\r\n", 400);
  }
}

TEST(RequestParser, IdenticalRepeatedContentLengthsAreAccepted) {
  const RequestHead a = expect_request_ok(
      "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n");
  EXPECT_EQ(a.content_length, 5u);
  const RequestHead b =
      expect_request_ok("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5, 5 ,5\r\n\r\n");
  EXPECT_EQ(b.content_length, 5u);
}

TEST(RequestParser, ConflictingContentLengthsAreRejected) {
  expect_request_error(
      "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", 400);
  expect_request_error("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5, 6\r\n\r\n", 400);
}

// --- Transfer-Encoding ---

TEST(RequestParser, ChunkedTransferEncodingIsAcceptedCaseInsensitively) {
  const RequestHead head =
      expect_request_ok("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: ChUnKeD\r\n\r\n");
  EXPECT_EQ(head.body_kind, BodyKind::Chunked);
}

TEST(RequestParser, TransferEncodingWithContentLengthIsRejected) {
  expect_request_error(
      "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", 400);
  expect_request_error(
      "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n", 400);
}

TEST(RequestParser, TransferEncodingInHttp10IsRejected) {
  expect_request_error("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400);
}

TEST(RequestParser, ChunkedTwiceOrEmptyTransferEncodingIsRejectedWith400) {
  expect_request_error("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
                       400);
  expect_request_error(
      "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: "
      "chunked\r\n\r\n",
      400);
  expect_request_error("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding:\r\n\r\n", 400);
  expect_request_error("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked,\r\n\r\n", 400);
  expect_request_error("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: \"chunked\"\r\n\r\n", 400);
  expect_request_error("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked;x=1\r\n\r\n", 400);
}

TEST(RequestParser, OtherTransferCodingsAreRejectedWith501) {
  expect_request_error("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n\r\n", 501);
  expect_request_error("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: identity\r\n\r\n", 501);
  expect_request_error("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
                       501);
  expect_request_error("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: xchunked\r\n\r\n", 501);
}

// --- Host ---

TEST(RequestParser, MissingHostInHttp11IsRejected) {
  expect_request_error("GET / HTTP/1.1\r\n\r\n", 400);
}

TEST(RequestParser, MultipleHostHeadersAreRejected) {
  expect_request_error("GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n", 400);
}

TEST(RequestParser, HostKeepsItsPortAndAcceptsIpLiterals) {
  EXPECT_EQ(expect_request_ok("GET / HTTP/1.1\r\nHost: a.b:8080\r\n\r\n").host, "a.b:8080");
  EXPECT_EQ(expect_request_ok("GET / HTTP/1.1\r\nHost: [::1]:80\r\n\r\n").host, "[::1]:80");
  EXPECT_EQ(expect_request_ok("GET / HTTP/1.1\r\nHost: 10.0.0.1\r\n\r\n").host, "10.0.0.1");
  EXPECT_EQ(expect_request_ok("GET / HTTP/1.1\r\nHost: xn--bcher-kva.example\r\n\r\n").host,
            "xn--bcher-kva.example");
}

TEST(RequestParser, InvalidHostValuesAreRejected) {
  for (std::string_view host : {"", "a b", "a/b", "a@b", "a:b", "a:", "a:123456", "[::1", "[]",
                                "[::1]x", "a%zz", "a:80:80", ":80"}) {
    expect_request_error("GET / HTTP/1.1\r\nHost: " + std::string(host) + "\r\n\r\n", 400);
  }
}

// --- Connection, Expect, Upgrade ---

TEST(RequestParser, ConnectionCloseDisablesKeepAliveInHttp11) {
  EXPECT_FALSE(
      expect_request_ok("GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n").keep_alive);
  EXPECT_FALSE(
      expect_request_ok("GET / HTTP/1.1\r\nHost: h\r\nConnection: foo, CLOSE\r\n\r\n").keep_alive);
  EXPECT_FALSE(
      expect_request_ok("GET / HTTP/1.1\r\nHost: h\r\nConnection: x\r\nConnection: close\r\n\r\n")
          .keep_alive);
  EXPECT_TRUE(
      expect_request_ok("GET / HTTP/1.1\r\nHost: h\r\nConnection: closed\r\n\r\n").keep_alive);
}

TEST(RequestParser, Http10KeepsAliveOnlyWithKeepAliveToken) {
  EXPECT_FALSE(expect_request_ok("GET / HTTP/1.0\r\n\r\n").keep_alive);
  EXPECT_TRUE(expect_request_ok("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").keep_alive);
  EXPECT_FALSE(
      expect_request_ok("GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n").keep_alive);
}

TEST(RequestParser, Expect100ContinueIsRecognisedCaseInsensitively) {
  EXPECT_TRUE(expect_request_ok("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\n"
                                "Expect: 100-Continue\r\n\r\n")
                  .expect_continue);
}

TEST(RequestParser, OtherExpectationsAreRejectedWith417) {
  expect_request_error("POST / HTTP/1.1\r\nHost: h\r\nExpect: 200-ok\r\n\r\n", 417);
  expect_request_error("POST / HTTP/1.1\r\nHost: h\r\nExpect:\r\n\r\n", 417);
}

TEST(RequestParser, UpgradeNeedsBothConnectionTokenAndUpgradeHeader) {
  EXPECT_TRUE(expect_request_ok("GET / HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, Upgrade\r\n"
                                "Upgrade: websocket\r\n\r\n")
                  .upgrade);
  EXPECT_FALSE(
      expect_request_ok("GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n\r\n").upgrade);
  EXPECT_FALSE(
      expect_request_ok("GET / HTTP/1.1\r\nHost: h\r\nConnection: upgrade\r\n\r\n").upgrade);
}

// --- incremental use ---

TEST(RequestParser, HeadArrivingOneByteAtATimeGivesTheSameResult) {
  const std::string buf =
      "\r\nPOST /up?x HTTP/1.1\r\nHost: h:1\r\nTransfer-Encoding: chunked\r\nX: y\r\n\r\n5\r\n";
  RequestParser parser;
  RequestHead head;
  ParseResult r;
  size_t n = 0;
  for (n = 1; n <= buf.size(); ++n) {
    r = parser.parse(std::string_view(buf).substr(0, n), head);
    if (r.status != ParseStatus::Incomplete) break;
  }
  ASSERT_EQ(r.status, ParseStatus::Done);
  EXPECT_EQ(n, buf.size() - 3);  // Done as soon as the final LF arrives
  EXPECT_EQ(r.consumed, buf.size() - 3);
  EXPECT_EQ(head.path, "/up");
  EXPECT_EQ(head.body_kind, BodyKind::Chunked);
  EXPECT_EQ(head.header("x").value, "y");
}

TEST(RequestParser, ErrorIsStickyUntilReset) {
  RequestParser parser;
  RequestHead head;
  EXPECT_EQ(parser.parse("GET / HTTP/1.1\n", head).status, ParseStatus::Error);
  EXPECT_EQ(parser.parse("GET / HTTP/1.1\r\nHost: h\r\n\r\n", head).status, ParseStatus::Error);
  parser.reset();
  EXPECT_EQ(parser.parse("GET / HTTP/1.1\r\nHost: h\r\n\r\n", head).status, ParseStatus::Done);
}

TEST(RequestParser, ResetAllowsPipelinedRequestsAndClearsPreviousHead) {
  const std::string buf =
      "POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\nxy"
      "GET /b HTTP/1.1\r\nHost: h\r\n\r\n";
  RequestParser parser;
  RequestHead head;
  ParseResult r = parser.parse(buf, head);
  ASSERT_EQ(r.status, ParseStatus::Done);
  EXPECT_TRUE(head.expect_continue);
  const size_t next = r.consumed + head.content_length;
  parser.reset();
  r = parser.parse(std::string_view(buf).substr(next), head);
  ASSERT_EQ(r.status, ParseStatus::Done);
  EXPECT_EQ(head.path, "/b");
  EXPECT_EQ(head.body_kind, BodyKind::None);
  EXPECT_EQ(head.content_length, 0u);
  EXPECT_FALSE(head.expect_continue);
  EXPECT_EQ(head.headers.size(), 1u);
}

TEST(RequestParser, ContentLengthSmugglingShapesAreRejected) {
  // CL.TE and TE.CL desync attempts and their obfuscations.
  expect_request_error(
      "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 6\r\n"
      "Transfer-Encoding : chunked\r\n\r\n0\r\n\r\nX",
      400);
  expect_request_error(
      "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 6\r\n"
      "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nX",
      400);
  expect_request_error(
      "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: x\r\n"
      " chunked\r\n\r\n",
      400);
  expect_request_error(
      "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding:\x0b"
      "chunked\r\n\r\n",
      400);
}

// --- responses ---

ParseResult parse_response(std::string_view buf, ResponseHead& head,
                           std::string_view method = "GET") {
  ResponseParser parser;
  return parser.parse(buf, head, method);
}

ResponseHead expect_response_ok(std::string_view buf, std::string_view method = "GET") {
  ResponseHead head;
  const ParseResult r = parse_response(buf, head, method);
  EXPECT_EQ(r.status, ParseStatus::Done) << buf << " -> " << r.error;
  EXPECT_EQ(r.consumed, buf.size());
  return head;
}

void expect_response_error(std::string_view buf, std::string_view method = "GET") {
  ResponseHead head;
  const ParseResult r = parse_response(buf, head, method);
  EXPECT_EQ(r.status, ParseStatus::Error) << buf;
  EXPECT_EQ(r.error_status, 502) << buf;
}

TEST(ResponseParser, StatusLineAndLengthBodyAreParsed) {
  const ResponseHead head =
      expect_response_ok("HTTP/1.1 201 Created Now\r\nContent-Length: 12\r\nX: y\r\n\r\n");
  EXPECT_EQ(head.status, 201);
  EXPECT_EQ(head.reason, "Created Now");
  EXPECT_EQ(head.version, Version::Http11);
  EXPECT_EQ(head.body_kind, BodyKind::Length);
  EXPECT_EQ(head.content_length, 12u);
  EXPECT_TRUE(head.keep_alive);
  EXPECT_EQ(head.header("X").value, "y");
}

TEST(ResponseParser, EmptyReasonWithOrWithoutSpaceIsAccepted) {
  EXPECT_EQ(expect_response_ok("HTTP/1.1 200 \r\nContent-Length: 0\r\n\r\n").reason, "");
  EXPECT_EQ(expect_response_ok("HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n").status, 200);
}

TEST(ResponseParser, MalformedStatusLinesAreRejectedWith502) {
  expect_response_error("HTTP/1.1 20 OK\r\n\r\n");
  expect_response_error("HTTP/1.1 2000 OK\r\n\r\n");
  expect_response_error("HTTP/1.1  200 OK\r\n\r\n");
  expect_response_error("HTTP/2.0 200 OK\r\n\r\n");
  expect_response_error("http/1.1 200 OK\r\n\r\n");
  expect_response_error("HTTP/1.1 099 OK\r\n\r\n");
  expect_response_error("HTTP/1.1 200 O\x01K\r\n\r\n"sv);
  expect_response_error("HTTP/1.1 200 OK\nContent-Length: 0\r\n\r\n");
}

TEST(ResponseParser, NoBodyFor1xx204304AndHeadRequests) {
  EXPECT_EQ(expect_response_ok("HTTP/1.1 100 Continue\r\n\r\n").body_kind, BodyKind::None);
  EXPECT_EQ(expect_response_ok("HTTP/1.1 204 No Content\r\n\r\n").body_kind, BodyKind::None);
  const ResponseHead not_modified =
      expect_response_ok("HTTP/1.1 304 NM\r\nContent-Length: 9\r\n\r\n");
  EXPECT_EQ(not_modified.body_kind, BodyKind::None);
  EXPECT_TRUE(not_modified.keep_alive);
  const ResponseHead head =
      expect_response_ok("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", "HEAD");
  EXPECT_EQ(head.body_kind, BodyKind::None);
  EXPECT_TRUE(head.keep_alive);
}

TEST(ResponseParser, ChunkedWhenTransferEncodingEndsWithChunked) {
  EXPECT_EQ(
      expect_response_ok("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n").body_kind,
      BodyKind::Chunked);
  const ResponseHead until_close =
      expect_response_ok("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n");
  EXPECT_EQ(until_close.body_kind, BodyKind::UntilClose);
  EXPECT_FALSE(until_close.keep_alive);
}

TEST(ResponseParser, TransferEncodingWinsOverContentLengthButConnectionIsNotReused) {
  const ResponseHead head = expect_response_ok(
      "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n");
  EXPECT_EQ(head.body_kind, BodyKind::Chunked);
  EXPECT_FALSE(head.keep_alive);
}

TEST(ResponseParser, NoFramingMeansUntilCloseWithoutKeepAlive) {
  const ResponseHead head = expect_response_ok("HTTP/1.1 200 OK\r\n\r\n");
  EXPECT_EQ(head.body_kind, BodyKind::UntilClose);
  EXPECT_FALSE(head.keep_alive);
}

TEST(ResponseParser, KeepAliveFollowsConnectionAndVersion) {
  EXPECT_FALSE(
      expect_response_ok("HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
          .keep_alive);
  EXPECT_FALSE(expect_response_ok("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n").keep_alive);
  const ResponseHead h10 =
      expect_response_ok("HTTP/1.0 200 OK\r\nContent-Length: 0\r\nConnection: keep-alive\r\n\r\n");
  EXPECT_TRUE(h10.keep_alive);
  EXPECT_EQ(h10.version, Version::Http10);
}

TEST(ResponseParser, ConflictingContentLengthsAreRejectedWith502) {
  expect_response_error("HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n");
  expect_response_error("HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n");
  EXPECT_EQ(expect_response_ok("HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\n\r\n").content_length,
            2u);
}

TEST(ResponseParser, HeaderSyntaxIsAsStrictAsForRequests) {
  expect_response_error("HTTP/1.1 200 OK\r\nX: a\r\n b\r\nContent-Length: 0\r\n\r\n");
  expect_response_error("HTTP/1.1 200 OK\r\nX : a\r\nContent-Length: 0\r\n\r\n");
  expect_response_error("HTTP/1.1 200 OK\r\nX: a\rb\r\nContent-Length: 0\r\n\r\n");
  expect_response_error("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\n");
  expect_response_error("HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
}

TEST(ResponseParser, OversizedHeadIsRejectedWith502) {
  ParserLimits limits;
  limits.max_header_bytes = 40;
  ResponseParser parser(limits);
  ResponseHead head;
  const ParseResult r =
      parser.parse("HTTP/1.1 200 OK\r\nX: " + std::string(60, 'a') + "\r\n\r\n", head, "GET");
  EXPECT_EQ(r.status, ParseStatus::Error);
  EXPECT_EQ(r.error_status, 502);
}

TEST(ResponseParser, InterimResponseThenFinalResponseAfterReset) {
  const std::string buf =
      "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
  ResponseParser parser;
  ResponseHead head;
  ParseResult r = parser.parse(buf, head, "POST");
  ASSERT_EQ(r.status, ParseStatus::Done);
  EXPECT_EQ(head.status, 100);
  parser.reset();
  r = parser.parse(std::string_view(buf).substr(r.consumed), head, "POST");
  ASSERT_EQ(r.status, ParseStatus::Done);
  EXPECT_EQ(head.status, 200);
  EXPECT_EQ(head.body_kind, BodyKind::Length);
}

// --- chunked bodies ---

struct Decoded {
  std::string data;
  size_t consumed = 0;
  bool error = false;
  bool done = false;
};

Decoded decode_all(std::string_view in, size_t max_trailer = 32768) {
  ChunkedDecoder dec(max_trailer);
  std::vector<std::string_view> pieces;
  const ChunkedDecoder::Result r = dec.feed(in, pieces);
  Decoded d;
  for (std::string_view p : pieces) d.data += p;
  d.consumed = r.consumed;
  d.error = r.error;
  d.done = dec.done();
  return d;
}

TEST(ChunkedDecoder, DecodesChunksAndStopsAtEndOfBody) {
  const std::string_view in = "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\nNEXT";
  const Decoded d = decode_all(in);
  EXPECT_FALSE(d.error);
  EXPECT_TRUE(d.done);
  EXPECT_EQ(d.data, "hello world");
  EXPECT_EQ(in.substr(d.consumed), "NEXT");
}

TEST(ChunkedDecoder, HexSizesAreCaseInsensitiveAndMayHaveLeadingZeros) {
  const std::string body(26, 'z');
  const Decoded d = decode_all("1A\r\n" + body + "\r\n0000\r\n\r\n");
  EXPECT_TRUE(d.done);
  EXPECT_EQ(d.data, body);
  EXPECT_TRUE(decode_all("1a\r\n" + body + "\r\n0\r\n\r\n").done);
}

TEST(ChunkedDecoder, ChunkExtensionsAndTrailersAreSkipped) {
  const Decoded d =
      decode_all("3;name=val;x=\"q s\"\r\nabc\r\n3 ; y\r\ndef\r\n0;last\r\nX-T: 1\r\nY:\r\n\r\n");
  EXPECT_FALSE(d.error);
  EXPECT_TRUE(d.done);
  EXPECT_EQ(d.data, "abcdef");
}

TEST(ChunkedDecoder, InvalidChunkSizesAreErrors) {
  for (std::string_view in : {"\r\n", "g\r\n", "-1\r\n", "+1\r\n", " 1\r\n", "1 \r\n", "0x1\r\n",
                              "1\n", "1\rx", "11111111111111111\r\n"}) {
    const Decoded d = decode_all(in);
    EXPECT_TRUE(d.error) << in;
  }
}

TEST(ChunkedDecoder, SixteenHexDigitsAreAccepted) {
  ChunkedDecoder dec;
  std::vector<std::string_view> data;
  const auto r = dec.feed("ffffffffffffffff\r\nab", data);
  EXPECT_FALSE(r.error);
  ASSERT_EQ(data.size(), 1u);
  EXPECT_EQ(data[0], "ab");
}

TEST(ChunkedDecoder, DataNotFollowedByCrlfIsAnError) {
  EXPECT_TRUE(decode_all("3\r\nabcd\r\n0\r\n\r\n").error);
  EXPECT_TRUE(decode_all("3\r\nabc\n0\r\n\r\n").error);
  EXPECT_TRUE(decode_all("3\r\nabc\r0\r\n\r\n").error);
}

TEST(ChunkedDecoder, ControlCharactersInExtensionAreErrors) {
  EXPECT_TRUE(decode_all("1;a\x01\r\nx\r\n0\r\n\r\n"sv).error);
  EXPECT_TRUE(decode_all("1;a\nb\r\nx\r\n0\r\n\r\n").error);
}

TEST(ChunkedDecoder, OverlongExtensionIsAnError) {
  EXPECT_FALSE(decode_all("1;" + std::string(4095, 'e') + "\r\nx\r\n0\r\n\r\n").error);
  EXPECT_TRUE(decode_all("1;" + std::string(4097, 'e') + "\r\nx\r\n0\r\n\r\n").error);
}

TEST(ChunkedDecoder, MalformedTrailersAreErrors) {
  EXPECT_TRUE(decode_all("0\r\nX: a\r\n b\r\n\r\n").error);
  EXPECT_TRUE(decode_all("0\r\nX : a\r\n\r\n").error);
  EXPECT_TRUE(decode_all("0\r\nNoColon\r\n\r\n").error);
  EXPECT_TRUE(decode_all("0\r\nX: a\0\r\n\r\n"sv).error);
  EXPECT_TRUE(decode_all("0\r\n\n").error);
  EXPECT_TRUE(decode_all("0\r\nX: a\n\r\n").error);
}

TEST(ChunkedDecoder, TrailerSectionLargerThanLimitIsAnError) {
  EXPECT_TRUE(decode_all("0\r\nX: " + std::string(100, 'a') + "\r\n\r\n", 64).error);
  EXPECT_FALSE(decode_all("0\r\nX: a\r\n\r\n", 64).error);
}

TEST(ChunkedDecoder, MissingLastChunkIsNotDone) {
  const Decoded d = decode_all("3\r\nabc\r\n");
  EXPECT_FALSE(d.error);
  EXPECT_FALSE(d.done);
  EXPECT_EQ(d.data, "abc");
}

TEST(ChunkedDecoder, ByteAtATimeFeedingGivesTheSameData) {
  const std::string in =
      "4;e=1\r\nWiki\r\n5\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\nT: v\r\n\r\nX";
  ChunkedDecoder dec;
  std::string out;
  size_t pos = 0;
  for (size_t end = 1; end <= in.size() && !dec.done(); ++end) {
    std::vector<std::string_view> data;
    const auto r = dec.feed(std::string_view(in).substr(pos, end - pos), data);
    ASSERT_FALSE(r.error) << r.reason;
    for (auto p : data) out += p;
    pos += r.consumed;
  }
  EXPECT_TRUE(dec.done());
  EXPECT_EQ(out, "Wikipedia in\r\n\r\nchunks.");
  EXPECT_EQ(in.substr(pos), "X");
}

TEST(ChunkedDecoder, ErrorIsStickyAndResetStartsOver) {
  ChunkedDecoder dec;
  std::vector<std::string_view> data;
  EXPECT_TRUE(dec.feed("z", data).error);
  EXPECT_TRUE(dec.feed("0\r\n\r\n", data).error);
  dec.reset();
  EXPECT_FALSE(dec.feed("0\r\n\r\n", data).error);
  EXPECT_TRUE(dec.done());
  EXPECT_EQ(dec.feed("more", data).consumed, 0u);
}

TEST(MessageTest, HasTokenSplitsCommaListsAndIgnoresCaseAndWhitespace) {
  EXPECT_TRUE(has_token("keep-alive, Upgrade", "upgrade"));
  EXPECT_TRUE(has_token("upgrade", "upgrade"));
  EXPECT_TRUE(has_token(" \tUPGRADE\t ,x", "upgrade"));
  EXPECT_FALSE(has_token("upgrades", "upgrade"));
  EXPECT_FALSE(has_token("keep-alive,, close", "upgrade"));
  EXPECT_FALSE(has_token("", "upgrade"));
}

TEST(MessageTest, WebSocketUpgradeNeedsGetHttp11UpgradeAndConnection) {
  RequestHead h;
  h.method = "GET";
  h.headers = {{"Upgrade", "websocket"}, {"Connection", "keep-alive, Upgrade"}};
  EXPECT_TRUE(is_websocket_upgrade(h));
  RequestHead post = h;
  post.method = "POST";
  EXPECT_FALSE(is_websocket_upgrade(post));
  RequestHead old = h;
  old.version = Version::Http10;
  EXPECT_FALSE(is_websocket_upgrade(old));
  RequestHead no_connection = h;
  no_connection.headers = {{"Upgrade", "websocket"}};
  EXPECT_FALSE(is_websocket_upgrade(no_connection));
  RequestHead h2c = h;
  h2c.headers = {{"Upgrade", "h2c"}, {"Connection", "Upgrade"}};
  EXPECT_FALSE(is_websocket_upgrade(h2c));
}

}  // namespace
}  // namespace sluice::http

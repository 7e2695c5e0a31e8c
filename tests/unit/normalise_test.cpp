#include "http/normalise.h"

#include <gtest/gtest.h>

#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace sluice::http {
namespace {

using namespace std::string_view_literals;

void expect_path(std::string_view raw, std::string_view expected) {
  const NormalisedPath n = normalise_path(raw);
  EXPECT_TRUE(n.ok) << raw << " -> " << n.error;
  EXPECT_EQ(n.path, expected) << raw;
  EXPECT_TRUE(n.error.empty()) << raw;
}

void expect_error(std::string_view raw) {
  const NormalisedPath n = normalise_path(raw);
  EXPECT_FALSE(n.ok) << raw << " -> " << n.path;
  EXPECT_FALSE(n.error.empty()) << raw;
}

TEST(NormalisePath, CanonicalPathsAreUnchanged) {
  expect_path("/", "/");
  expect_path("/a", "/a");
  expect_path("/a/b/c", "/a/b/c");
  expect_path("/a/b/", "/a/b/");
  expect_path("/v1/users/42:activate", "/v1/users/42:activate");
  expect_path("/a;b=c/d,e", "/a;b=c/d,e");
}

TEST(NormalisePath, PathMustStartWithSlash) {
  expect_error("");
  expect_error("a/b");
  expect_error("*");
  expect_error("%2Fa");
}

TEST(NormalisePath, RunsOfSlashesAreMerged) {
  expect_path("//", "/");
  expect_path("//a///b//", "/a/b/");
  expect_path("/a//b", "/a/b");
}

TEST(NormalisePath, SingleDotSegmentsAreRemoved) {
  expect_path("/.", "/");
  expect_path("/./a", "/a");
  expect_path("/a/./b", "/a/b");
  expect_path("/a/.", "/a/");
  expect_path("/a/./", "/a/");
}

TEST(NormalisePath, DoubleDotSegmentsRemoveThePreviousSegment) {
  expect_path("/a/..", "/");
  expect_path("/a/../b", "/b");
  expect_path("/a/b/../c", "/a/c");
  expect_path("/a/b/..", "/a/");
  expect_path("/a/b/../", "/a/");
  expect_path("/a/b/c/../../d", "/a/d");
  expect_path("/a/./b/../../c/", "/c/");
}

TEST(NormalisePath, SlashRunsAreMergedBeforeDotSegmentsResolve) {
  expect_path("/a//../b", "/b");
  expect_path("/a/b//..//c", "/a/c");
}

TEST(NormalisePath, DotsInsideSegmentsAreOrdinaryCharacters) {
  expect_path("/a.b/c..d/...", "/a.b/c..d/...");
  expect_path("/.hidden/..x", "/.hidden/..x");
}

TEST(NormalisePath, ClimbingAboveTheRootIsAnError) {
  expect_error("/..");
  expect_error("/../a");
  expect_error("/a/../..");
  expect_error("/a/../../b");
  expect_error("/%2e%2e/etc/passwd");
  expect_error("/a/%2E%2e/%2e./b");
}

TEST(NormalisePath, EncodedDotSegmentsAreResolved) {
  expect_path("/a/%2e/b", "/a/b");
  expect_path("/a/%2E%2E/b", "/b");
  expect_path("/a/.%2e/b", "/b");
  expect_path("/a/%2e./b", "/b");
}

TEST(NormalisePath, EscapedUnreservedCharactersAreDecoded) {
  expect_path("/%61%64%6D%69%6e", "/admin");
  expect_path("/%7Euser/%2D%5f%2E%30", "/~user/-_.0");
  expect_path("/%41%5A", "/AZ");
}

TEST(NormalisePath, OtherEscapesAreKeptWithUpperCaseHex) {
  expect_path("/a%2fb", "/a%2Fb");
  expect_path("/a%2Fb", "/a%2Fb");
  expect_path("/%20x%3f%23", "/%20x%3F%23");
  expect_path("/caf%c3%a9", "/caf%C3%A9");
  expect_path("/%25", "/%25");
}

TEST(NormalisePath, EncodedSlashDoesNotSplitSegmentsOrClimb) {
  expect_path("/a/..%2f..%2fetc", "/a/..%2F..%2Fetc");
  expect_path("/a%2f..", "/a%2F..");
}

TEST(NormalisePath, EscapedPercentIsNotDecodedTwice) {
  expect_path("/%252e%252e/x", "/%252e%252e/x");
  expect_path("/%2561", "/%2561");
}

TEST(NormalisePath, MalformedPercentEncodingIsAnError) {
  expect_error("/%");
  expect_error("/a%");
  expect_error("/a%2");
  expect_error("/a%zz");
  expect_error("/a%g0");
  expect_error("/a%0g/b");
  expect_error("/%%41");
}

TEST(NormalisePath, EncodedNulIsAnError) {
  expect_error("/a%00");
  expect_error("/%00/b");
}

TEST(NormalisePath, RawControlSpaceAndHighBytesAreErrors) {
  expect_error("/a b");
  expect_error("/a\tb");
  expect_error("/a\0b"sv);
  expect_error("/a\x7f");
  expect_error("/caf\xc3\xa9");
}

TEST(NormalisePath, ResultIsAFixedPoint) {
  for (std::string_view raw : {"/a/%2e%2E/b/%7e/%2f/./", "//x/../y/%41%42%63", "/a/b/..",
                               "/%252e%252e", "/a/./b/../../c/"}) {
    const NormalisedPath once = normalise_path(raw);
    ASSERT_TRUE(once.ok) << raw;
    const NormalisedPath twice = normalise_path(once.path);
    ASSERT_TRUE(twice.ok) << once.path;
    EXPECT_EQ(twice.path, once.path);
  }
}

}  // namespace
}  // namespace sluice::http

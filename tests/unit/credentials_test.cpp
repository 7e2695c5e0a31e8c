// Proves the edge-security building blocks of issue 4: API key lookup, Basic header parsing,
// crypt(3) password verification and its cache (credentials.h), and IP allow/deny ranges (cidr.h).
#include <crypt.h>
#include <gtest/gtest.h>

#include <cctype>
#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <variant>
#include <vector>

#include "auth/cidr.h"
#include "auth/credentials.h"

namespace sluice::auth {
namespace {

using namespace std::chrono_literals;

// ---------------------------------------------------------------------------------------------
// SHA-256 and key specs

constexpr std::string_view k_test_sha256 =  // sha256("test"), as `printf %s test | sha256sum`
    "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

TEST(Sha256, HexMatchesKnownVectors) {
  EXPECT_EQ(sha256_hex("test"), k_test_sha256);
  EXPECT_EQ(sha256_hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

TEST(KeySpec, Sha256FormIsParsedInEitherCase) {
  auto lower = parse_key_spec("sha256:" + std::string(k_test_sha256));
  ASSERT_TRUE(std::holds_alternative<KeySpec>(lower));
  EXPECT_FALSE(std::get<KeySpec>(lower).plain);
  EXPECT_EQ(std::get<KeySpec>(lower).digest, sha256("test"));

  std::string upper(k_test_sha256);
  for (char& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  auto parsed = parse_key_spec("sha256:" + upper);
  ASSERT_TRUE(std::holds_alternative<KeySpec>(parsed));
  EXPECT_EQ(std::get<KeySpec>(parsed).digest, sha256("test"));
}

TEST(KeySpec, PlainFormIsHashedAtLoadAndFlagged) {
  auto parsed = parse_key_spec("key:test");
  ASSERT_TRUE(std::holds_alternative<KeySpec>(parsed));
  EXPECT_TRUE(std::get<KeySpec>(parsed).plain);
  EXPECT_EQ(std::get<KeySpec>(parsed).digest, sha256("test"));
}

TEST(KeySpec, MalformedSpecsAreRejectedWithoutEchoingTheKey) {
  for (std::string_view bad : {
           "sha256:",
           "sha256:9f86d0",
           "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a0g",  // 'g'
           "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a0800",
           "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",  // empty key
           "key:",
           "key:has space",
           "key:tab\there",
           "SHA256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
           "supersecretvalue",
           "",
       }) {
    auto parsed = parse_key_spec(bad);
    ASSERT_TRUE(std::holds_alternative<std::string>(parsed)) << bad;
    EXPECT_EQ(std::get<std::string>(parsed).find("supersecretvalue"), std::string::npos);
  }
}

// ---------------------------------------------------------------------------------------------
// ApiKeyStore

ApiKeyStore build_store(const std::vector<ConsumerKeys>& consumers) {
  auto built = ApiKeyStore::build(consumers);
  if (auto* errors = std::get_if<std::vector<std::string>>(&built)) {
    ADD_FAILURE() << "unexpected build errors: " << errors->front();
    return {};
  }
  return std::get<ApiKeyStore>(std::move(built));
}

TEST(ApiKeyStore, PresentedKeyResolvesToItsConsumer) {
  ApiKeyStore store = build_store({
      {"alice", {"sha256:" + std::string(k_test_sha256), "key:alice-second"}},
      {"bob", {"key:bob-key"}},
  });
  EXPECT_EQ(store.size(), 3u);
  EXPECT_EQ(store.lookup("test"), "alice");
  EXPECT_EQ(store.lookup("alice-second"), "alice");
  EXPECT_EQ(store.lookup("bob-key"), "bob");
}

TEST(ApiKeyStore, WrongEmptyOrNearMissKeyIsRejected) {
  ApiKeyStore store = build_store({{"alice", {"key:alice-key"}}});
  EXPECT_EQ(store.lookup("alice-kez"), std::nullopt);
  EXPECT_EQ(store.lookup("alice-key "), std::nullopt);
  EXPECT_EQ(store.lookup("ALICE-KEY"), std::nullopt);  // keys are case-sensitive
  EXPECT_EQ(store.lookup(""), std::nullopt);
  // The stored digest itself is not a key.
  EXPECT_EQ(store.lookup(sha256_hex("alice-key")), std::nullopt);
}

TEST(ApiKeyStore, EmptyStoreMatchesNothing) {
  ApiKeyStore store;
  EXPECT_EQ(store.lookup("anything"), std::nullopt);
}

TEST(ApiKeyStore, ReportsEveryBadKeyWithItsConsumerAndIndex) {
  auto built = ApiKeyStore::build({
      {"alice", {"key:ok", "sha256:abc"}},
      {"bob", {"plain-no-prefix"}},
  });
  auto* errors = std::get_if<std::vector<std::string>>(&built);
  ASSERT_NE(errors, nullptr);
  ASSERT_EQ(errors->size(), 2u);
  EXPECT_EQ((*errors)[0].rfind("consumer \"alice\": api_keys[1]: ", 0), 0u) << (*errors)[0];
  EXPECT_EQ((*errors)[1].rfind("consumer \"bob\": api_keys[0]: ", 0), 0u) << (*errors)[1];
  EXPECT_EQ((*errors)[1].find("plain-no-prefix"), std::string::npos);
}

TEST(ApiKeyStore, KeySharedByTwoConsumersIsAnErrorButARepeatIsNot) {
  auto shared = ApiKeyStore::build({{"alice", {"key:same"}}, {"bob", {"key:same"}}});
  auto* errors = std::get_if<std::vector<std::string>>(&shared);
  ASSERT_NE(errors, nullptr);
  EXPECT_NE(errors->front().find("same key as consumer \"alice\""), std::string::npos);

  ApiKeyStore repeat =
      build_store({{"alice", {"key:same", "sha256:" + sha256_hex("same"), "key:same"}}});
  EXPECT_EQ(repeat.size(), 1u);
  EXPECT_EQ(repeat.lookup("same"), "alice");
}

TEST(QueryParam, FindsAndDecodesTheFirstValue) {
  EXPECT_EQ(query_param("a=1&api_key=k%2Fey+1&api_key=2", "api_key"), "k/ey+1");
  EXPECT_EQ(query_param("api_key=", "api_key"), "");
  EXPECT_EQ(query_param("api_key", "api_key"), "");
  EXPECT_EQ(query_param("xapi_key=1&api_keyx=2", "api_key"), std::nullopt);
  EXPECT_EQ(query_param("", "api_key"), std::nullopt);
  EXPECT_EQ(query_param("api_key=%zz", "api_key"), std::nullopt);
  EXPECT_EQ(query_param("api_key=%4", "api_key"), std::nullopt);
}

TEST(QueryParam, RemoveDropsEveryOccurrenceAndKeepsTheRest) {
  EXPECT_EQ(remove_query_param("a=1&api_key=x&b=%20&api_key", "api_key"), "a=1&b=%20");
  EXPECT_EQ(remove_query_param("api_key=x", "api_key"), "");
  EXPECT_EQ(remove_query_param("a=1", "api_key"), "a=1");
  EXPECT_EQ(remove_query_param("", "api_key"), "");
}

// ---------------------------------------------------------------------------------------------
// Basic header parsing

std::string b64(std::string_view s) {
  static constexpr char k_alphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  size_t i = 0;
  for (; i + 2 < s.size(); i += 3) {
    uint32_t v = uint8_t(s[i]) << 16 | uint8_t(s[i + 1]) << 8 | uint8_t(s[i + 2]);
    for (int shift : {18, 12, 6, 0}) out.push_back(k_alphabet[(v >> shift) & 63]);
  }
  if (s.size() - i == 1) {
    uint32_t v = uint8_t(s[i]) << 16;
    out += {k_alphabet[v >> 18 & 63], k_alphabet[v >> 12 & 63], '=', '='};
  } else if (s.size() - i == 2) {
    uint32_t v = uint8_t(s[i]) << 16 | uint8_t(s[i + 1]) << 8;
    out += {k_alphabet[v >> 18 & 63], k_alphabet[v >> 12 & 63], k_alphabet[v >> 6 & 63], '='};
  }
  return out;
}

BasicCredentials parse_ok(std::string_view value) {
  auto parsed = parse_basic_authorization(value);
  if (auto* error = std::get_if<std::string>(&parsed)) {
    ADD_FAILURE() << "rejected \"" << value << "\": " << *error;
    return {};
  }
  return std::get<BasicCredentials>(parsed);
}

std::string parse_error(std::string_view value) {
  auto parsed = parse_basic_authorization(value);
  if (auto* error = std::get_if<std::string>(&parsed)) return *error;
  ADD_FAILURE() << "accepted \"" << value << "\"";
  return {};
}

TEST(BasicHeader, ValidCredentialsSplitAtTheFirstColon) {
  BasicCredentials c = parse_ok("Basic " + b64("alice:pa:ss:word"));
  EXPECT_EQ(c.username, "alice");
  EXPECT_EQ(c.password, "pa:ss:word");

  EXPECT_EQ(parse_ok("Basic dXNlcjpwYXNz").password, "pass");  // "user:pass", no padding
  EXPECT_EQ(parse_ok("Basic " + b64("u:p")).username, "u");    // one '=' of padding
  EXPECT_EQ(parse_ok("Basic " + b64("us:p")).username, "us");  // two '='
  EXPECT_EQ(parse_ok("Basic " + b64("bob:")).password, "");    // empty password is a password
  EXPECT_EQ(parse_ok("Basic " + b64("j\xc3\xb6rg:\xe2\x82\xac")).username, "j\xc3\xb6rg");  // UTF-8
}

TEST(BasicHeader, SchemeIsCaseInsensitiveAndExtraSpacesAroundTheTokenAreAccepted) {
  const std::string token = b64("alice:secret");
  EXPECT_EQ(parse_ok("basic " + token).username, "alice");
  EXPECT_EQ(parse_ok("BASIC " + token).username, "alice");
  EXPECT_EQ(parse_ok("Basic    " + token).username, "alice");
  EXPECT_EQ(parse_ok("  Basic " + token + " \t").username, "alice");
}

TEST(BasicHeader, OtherSchemesAndMissingTokensAreRejected) {
  EXPECT_EQ(parse_error("Bearer " + b64("alice:secret")), "scheme is not Basic");
  EXPECT_EQ(parse_error("Basicx " + b64("alice:secret")), "scheme is not Basic");
  EXPECT_EQ(parse_error(b64("alice:secret")), "scheme is not Basic");
  EXPECT_EQ(parse_error(""), "scheme is not Basic");
  EXPECT_EQ(parse_error("Basic"), "Basic credentials missing");
  EXPECT_EQ(parse_error("Basic   "), "Basic credentials missing");
}

TEST(BasicHeader, BadBase64IsRejected) {
  parse_error("Basic dXNlcjpwYXNz=");     // length not a multiple of 4
  parse_error("Basic dXNlcjpwYXN");       // missing padding
  parse_error("Basic dXNl cjpwYXNz");     // space inside the token
  parse_error("Basic dXNlcjpw\tYXNz");    // tab inside the token
  parse_error("Basic dXNlcjpw*XNz");      // outside the alphabet
  parse_error("Basic dXNlcjpwYXNz-_==");  // base64url is not base64
  parse_error("Basic dT1=cjpw");          // '=' in the middle
  parse_error("Basic dQ===");             // three '='
  parse_error("Basic ====");              // only padding
  parse_error("Basic dXM6cB==");          // "us:p" with non-zero padding bits (canonical: dXM6cA==)
  parse_error("Basic " + std::string(k_max_basic_token + 4, 'A'));  // too long
  EXPECT_EQ(parse_ok("Basic dXM6cA==").username, "us");
}

TEST(BasicHeader, MissingColonEmptyUserAndControlCharactersAreRejected) {
  EXPECT_EQ(parse_error("Basic " + b64("alicesecret")),
            "Basic credentials: no ':' between username and password");
  EXPECT_EQ(parse_error("Basic " + b64(":secret")), "Basic credentials: empty username");
  EXPECT_EQ(parse_error("Basic " + b64(std::string("al\0ice:secret", 12))),
            "Basic credentials: control characters in username or password");
  parse_error("Basic " + b64("alice:sec\nret"));
  parse_error("Basic " + b64("alice:sec\x7fret"));
}

TEST(BasicHeader, ErrorsNeverContainTheCredentials) {
  for (std::string value : {"Basic " + b64("alicesupersecret"), "Basic " + b64(":supersecret"),
                            "Basic " + b64("alice:super\x01secret")}) {
    std::string error = parse_error(value);
    EXPECT_EQ(error.find("secret"), std::string::npos) << error;
    EXPECT_EQ(error.find(value.substr(6)), std::string::npos) << error;
  }
}

TEST(BasicHeader, ChallengeQuotesTheRealm) {
  EXPECT_EQ(basic_challenge("ops"), "Basic realm=\"ops\", charset=\"UTF-8\"");
  EXPECT_EQ(basic_challenge("a\"b\\c"), "Basic realm=\"a\\\"b\\\\c\", charset=\"UTF-8\"");
}

// ---------------------------------------------------------------------------------------------
// Password hashes

// A crypt(3) hash of `password`, made the way `mkpasswd` / `htpasswd -B` would.
std::string make_hash(const char* prefix, unsigned long count, const std::string& password) {
  char setting[CRYPT_GENSALT_OUTPUT_SIZE];
  if (crypt_gensalt_rn(prefix, count, nullptr, 0, setting, sizeof setting) == nullptr) {
    ADD_FAILURE() << "crypt_gensalt_rn failed for " << prefix;
    return {};
  }
  auto data = std::make_unique<crypt_data>();
  const char* hash = crypt_rn(password.c_str(), setting, data.get(), sizeof(crypt_data));
  if (hash == nullptr) {
    ADD_FAILURE() << "crypt_rn failed for " << prefix;
    return {};
  }
  return hash;
}

struct HashFamily {
  const char* name;
  const char* prefix;
  unsigned long count;  // the lowest cost, to keep tests fast
};

class PasswordHashTest : public testing::TestWithParam<HashFamily> {};

TEST_P(PasswordHashTest, RightPasswordMatchesAndWrongOneDoesNot) {
  const HashFamily& f = GetParam();
  const std::string hash = make_hash(f.prefix, f.count, "correct horse:battery");
  ASSERT_TRUE(hash.starts_with(f.prefix)) << hash;
  EXPECT_EQ(check_password_hash(hash), std::nullopt) << *check_password_hash(hash);

  EXPECT_EQ(verify_password(hash, "correct horse:battery"), PasswordCheck::Match);
  EXPECT_EQ(verify_password(hash, "correct horse:batterY"), PasswordCheck::Mismatch);
  EXPECT_EQ(verify_password(hash, ""), PasswordCheck::Mismatch);
  EXPECT_EQ(verify_password(hash, std::string("correct horse:battery\0x", 23)),
            PasswordCheck::Mismatch);
}

TEST_P(PasswordHashTest, DamagedHashIsBadNotAMismatch) {
  const HashFamily& f = GetParam();
  const std::string hash = make_hash(f.prefix, f.count, "pw");
  EXPECT_EQ(verify_password(hash.substr(0, hash.size() - 1), "pw"), PasswordCheck::BadHash);
  EXPECT_EQ(verify_password(hash + "A", "pw"), PasswordCheck::BadHash);
  std::string bad_char = hash;
  bad_char.back() = '*';
  EXPECT_EQ(verify_password(bad_char, "pw"), PasswordCheck::BadHash);
}

INSTANTIATE_TEST_SUITE_P(Families, PasswordHashTest,
                         testing::Values(HashFamily{"bcrypt", "$2b$", 4},
                                         HashFamily{"sha512crypt", "$6$", 1000},
                                         HashFamily{"yescrypt", "$y$", 1}),
                         [](const auto& info) { return std::string(info.param.name); });

TEST(PasswordHash, OtherBcryptVariantsAreAccepted) {
  std::string hash = make_hash("$2b$", 4, "pw");
  for (char variant : {'y', 'a'}) {  // htpasswd -B writes $2y$; old libraries wrote $2a$
    hash[2] = variant;
    EXPECT_EQ(check_password_hash(hash), std::nullopt) << hash;
    EXPECT_EQ(verify_password(hash, "pw"), PasswordCheck::Match) << hash;
  }
}

TEST(PasswordHash, MalformedOrUnsupportedHashesAreRejected) {
  const std::string md5 = make_hash("$1$", 0, "pw");  // supported by libxcrypt, not by us
  for (std::string bad : {
           std::string(),
           std::string("plaintext"),
           md5,
           std::string("$2b$"),
           std::string("$2b$03$abcdefghijklmnopqrstuuABCDEFGHIJKLMNOPQRSTUVWXYZ01234"),  // cost 3
           std::string("$2b$32$abcdefghijklmnopqrstuuABCDEFGHIJKLMNOPQRSTUVWXYZ01234"),
           std::string("$6$"),
           std::string("$6$rounds=x$salt$") + std::string(86, 'a'),
           std::string("$6$saltsaltsaltsalt1$") + std::string(86, 'a'),  // 17-char salt
           std::string("$6$salt$") + std::string(85, 'a'),
           std::string("$y$"),
           std::string("$y$j9T$salt"),
           std::string("$6$salt$") + std::string(86, 'a') + "\n",
       }) {
    EXPECT_NE(check_password_hash(bad), std::nullopt) << bad;
    EXPECT_EQ(verify_password(bad, "pw"), PasswordCheck::BadHash) << bad;
  }
}

// ---------------------------------------------------------------------------------------------
// PasswordCache

TEST(PasswordCache, MissThenHitAfterRemember) {
  PasswordCache cache(8, 60s);
  const auto t0 = PasswordCache::Clock::now();
  EXPECT_FALSE(cache.contains("alice", "$hash", "pw", t0));
  cache.remember("alice", "$hash", "pw", t0);
  EXPECT_TRUE(cache.contains("alice", "$hash", "pw", t0 + 1s));
  EXPECT_EQ(cache.size(), 1u);
}

TEST(PasswordCache, KeyCoversUsernameStoredHashAndPassword) {
  PasswordCache cache(8, 60s);
  const auto t0 = PasswordCache::Clock::now();
  cache.remember("alice", "$old", "pw", t0);
  EXPECT_FALSE(cache.contains("alice", "$old", "pw2", t0));
  EXPECT_FALSE(cache.contains("bob", "$old", "pw", t0));
  EXPECT_FALSE(cache.contains("alice", "$new", "pw", t0));  // password changed on reload
  // The NUL separator keeps field boundaries: "ab"+"c" is not "a"+"bc".
  cache.remember("ab", "$h", "c", t0);
  EXPECT_FALSE(cache.contains("a", "$h", "bc", t0));
  // A username with NUL could forge a boundary: never cached.
  cache.remember(std::string("a\0b", 3), "$h", "c", t0);
  EXPECT_FALSE(cache.contains(std::string("a\0b", 3), "$h", "c", t0));
}

TEST(PasswordCache, EntryExpiresAfterTtlAndHitsDoNotExtendIt) {
  PasswordCache cache(8, 10s);
  const auto t0 = PasswordCache::Clock::now();
  cache.remember("alice", "$h", "pw", t0);
  EXPECT_TRUE(cache.contains("alice", "$h", "pw", t0 + 9s));
  EXPECT_FALSE(cache.contains("alice", "$h", "pw", t0 + 10s));
  EXPECT_EQ(cache.size(), 0u);  // dropped when found expired

  cache.remember("alice", "$h", "pw", t0 + 20s);  // a fresh verification starts a new TTL
  EXPECT_TRUE(cache.contains("alice", "$h", "pw", t0 + 29s));
}

TEST(PasswordCache, BoundEvictsTheLeastRecentlyUsed) {
  PasswordCache cache(3, 60s);
  const auto t0 = PasswordCache::Clock::now();
  cache.remember("a", "$h", "pw", t0);
  cache.remember("b", "$h", "pw", t0);
  cache.remember("c", "$h", "pw", t0);
  EXPECT_TRUE(cache.contains("a", "$h", "pw", t0));  // "b" is now the least recently used
  cache.remember("d", "$h", "pw", t0);
  EXPECT_EQ(cache.size(), 3u);
  EXPECT_FALSE(cache.contains("b", "$h", "pw", t0));
  EXPECT_TRUE(cache.contains("a", "$h", "pw", t0));
  EXPECT_TRUE(cache.contains("c", "$h", "pw", t0));
  EXPECT_TRUE(cache.contains("d", "$h", "pw", t0));

  cache.clear();
  EXPECT_EQ(cache.size(), 0u);
  EXPECT_FALSE(cache.contains("a", "$h", "pw", t0));
}

TEST(PasswordCache, ZeroCapacityCachesNothing) {
  PasswordCache cache(0, 60s);
  cache.remember("a", "$h", "pw");
  EXPECT_FALSE(cache.contains("a", "$h", "pw"));
}

TEST(PasswordCache, ConcurrentUseFromSeveralThreadsStaysBounded) {
  PasswordCache cache(16, 60s);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&cache, t] {
      for (int i = 0; i < 500; ++i) {
        const std::string user = "u" + std::to_string((t * 7 + i) % 40);
        if (!cache.contains(user, "$h", "pw")) cache.remember(user, "$h", "pw");
      }
    });
  }
  for (std::thread& th : threads) th.join();
  EXPECT_LE(cache.size(), 16u);
}

TEST(PasswordCache, RealHashFlowVerifiesOnceThenHits) {
  const std::string hash = make_hash("$2b$", 4, "s3cret");
  PasswordCache cache(8, 60s);
  ASSERT_FALSE(cache.contains("alice", hash, "s3cret"));
  ASSERT_EQ(verify_password(hash, "s3cret"), PasswordCheck::Match);
  cache.remember("alice", hash, "s3cret");
  EXPECT_TRUE(cache.contains("alice", hash, "s3cret"));
  EXPECT_FALSE(cache.contains("alice", hash, "wrong"));
}

// ---------------------------------------------------------------------------------------------
// CIDR

IpRange range(std::string_view text) {
  auto parsed = IpRange::parse(text);
  if (auto* error = std::get_if<std::string>(&parsed)) {
    ADD_FAILURE() << *error;
    return std::get<IpRange>(IpRange::parse("0.0.0.0/32"));
  }
  return std::get<IpRange>(parsed);
}

bool in(std::string_view range_text, std::string_view ip) {
  auto addr = IpAddress::parse(ip);
  EXPECT_TRUE(addr.has_value()) << ip;
  return addr && range(range_text).contains(*addr);
}

TEST(IpAddress, ParsesV4V6MappedAndZonedForms) {
  auto v4 = IpAddress::parse("10.1.2.3");
  ASSERT_TRUE(v4);
  EXPECT_TRUE(v4->v4);
  EXPECT_EQ(v4->to_string(), "10.1.2.3");

  auto mapped = IpAddress::parse("::ffff:10.1.2.3");
  ASSERT_TRUE(mapped);
  EXPECT_EQ(*mapped, *v4);
  EXPECT_EQ(IpAddress::parse("::FFFF:0a01:0203"), v4);

  auto v6 = IpAddress::parse("2001:DB8::1");
  ASSERT_TRUE(v6);
  EXPECT_FALSE(v6->v4);
  EXPECT_EQ(v6->to_string(), "2001:db8::1");
  EXPECT_EQ(IpAddress::parse("fe80::1%eth0")->to_string(), "fe80::1");
  // IPv4-compatible (deprecated) and NAT64 forms are plain IPv6, not IPv4.
  EXPECT_FALSE(IpAddress::parse("::10.1.2.3")->v4);
  EXPECT_FALSE(IpAddress::parse("64:ff9b::10.1.2.3")->v4);
}

TEST(IpAddress, MalformedAddressesAreRejected) {
  for (std::string_view bad :
       {"", "1.2.3", "1.2.3.4.5", "256.1.1.1", "01.2.3.4", "1.2.3.4 ", " 1.2.3.4", "[::1]",
        "::1:", "1:2:3:4:5:6:7:8:9", "1.2.3.4:80", "10.0.0.0/8", "1.2.3.4%eth0", "fe80::1%",
        "0x7f.0.0.1", "localhost", "1111:2222:3333:4444:5555:6666:7777:8888:9999:aaaa:bbbb"}) {
    EXPECT_EQ(IpAddress::parse(bad), std::nullopt) << bad;
  }
}

TEST(IpRange, V4BoundariesAreInsideAndNeighboursOutside) {
  EXPECT_TRUE(in("10.0.0.0/8", "10.0.0.0"));
  EXPECT_TRUE(in("10.0.0.0/8", "10.255.255.255"));
  EXPECT_FALSE(in("10.0.0.0/8", "9.255.255.255"));
  EXPECT_FALSE(in("10.0.0.0/8", "11.0.0.0"));
  EXPECT_TRUE(in("192.168.1.64/26", "192.168.1.64"));
  EXPECT_TRUE(in("192.168.1.64/26", "192.168.1.127"));
  EXPECT_FALSE(in("192.168.1.64/26", "192.168.1.63"));
  EXPECT_FALSE(in("192.168.1.64/26", "192.168.1.128"));
}

TEST(IpRange, SingleAddressesAndExtremePrefixes) {
  EXPECT_TRUE(in("203.0.113.7", "203.0.113.7"));
  EXPECT_FALSE(in("203.0.113.7", "203.0.113.8"));
  EXPECT_TRUE(in("203.0.113.7/32", "203.0.113.7"));
  EXPECT_FALSE(in("203.0.113.7/32", "203.0.113.6"));
  EXPECT_TRUE(in("0.0.0.0/0", "0.0.0.0"));
  EXPECT_TRUE(in("0.0.0.0/0", "255.255.255.255"));
  EXPECT_FALSE(in("0.0.0.0/0", "::1"));
  EXPECT_TRUE(in("::1", "::1"));
  EXPECT_FALSE(in("::1", "::2"));
  EXPECT_FALSE(in("::1", "127.0.0.1"));
  EXPECT_TRUE(in("2001:db8::1/128", "2001:db8::1"));
  EXPECT_FALSE(in("2001:db8::1/128", "2001:db8::"));
  EXPECT_TRUE(in("::/0", "::"));
  EXPECT_TRUE(in("::/0", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"));
  EXPECT_FALSE(in("::/0", "10.0.0.1"));  // families are kept apart, as documented
  EXPECT_EQ(range("0.0.0.0/0").prefix(), 0);
  EXPECT_EQ(range("::1").prefix(), 128);
  EXPECT_EQ(range("1.2.3.4").prefix(), 32);
}

TEST(IpRange, V6BoundariesAcrossBothHalves) {
  EXPECT_TRUE(in("2001:db8::/32", "2001:db8::"));
  EXPECT_TRUE(in("2001:db8::/32", "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff"));
  EXPECT_FALSE(in("2001:db8::/32", "2001:db7:ffff:ffff:ffff:ffff:ffff:ffff"));
  EXPECT_FALSE(in("2001:db8::/32", "2001:db9::"));
  EXPECT_TRUE(in("2001:db8:0:0:8000::/65", "2001:db8::8000:0:0:0"));
  EXPECT_TRUE(in("2001:db8:0:0:8000::/65", "2001:db8::ffff:ffff:ffff:ffff"));
  EXPECT_FALSE(in("2001:db8:0:0:8000::/65", "2001:db8::7fff:ffff:ffff:ffff"));
  EXPECT_TRUE(in("2001:db8::/64", "2001:db8::ffff:ffff:ffff:ffff"));
  EXPECT_FALSE(in("2001:db8::/64", "2001:db8:0:1::"));
}

TEST(IpRange, MappedClientsAndMappedRangesAreIpv4) {
  EXPECT_TRUE(in("10.0.0.0/8", "::ffff:10.9.8.7"));
  EXPECT_FALSE(in("10.0.0.0/8", "::ffff:11.0.0.0"));
  EXPECT_TRUE(in("127.0.0.1", "::ffff:127.0.0.1"));
  IpRange mapped = range("::ffff:10.0.0.0/104");
  EXPECT_TRUE(mapped.v4());
  EXPECT_EQ(mapped.prefix(), 8);
  EXPECT_EQ(mapped.to_string(), "10.0.0.0/8");
  EXPECT_TRUE(mapped.contains(*IpAddress::parse("10.1.1.1")));
  EXPECT_EQ(range("::ffff:1.2.3.4").to_string(), "1.2.3.4/32");
  EXPECT_EQ(range("::ffff:0.0.0.0/96").to_string(), "0.0.0.0/0");
}

TEST(IpRange, InvalidInputsAreRejectedWithAReason) {
  for (std::string_view bad :
       {"", "/8", "10.0.0.0/", "10.0.0.0/33", "10.0.0.0/-1", "10.0.0.0/+8", "10.0.0.0/08",
        "10.0.0.0/8/8", "10.0.0.0/ 8", "10.0.0.0 /8", "::/129", "10.0.0/8", "fe80::%eth0/64",
        "::ffff:10.0.0.0/95", "not-an-ip", "10.0.0.0/1000", "10.0.0.0/8x"}) {
    auto parsed = IpRange::parse(bad);
    EXPECT_TRUE(std::holds_alternative<std::string>(parsed)) << bad;
  }
}

TEST(IpRange, HostBitsAreRejectedWithTheIntendedNetwork) {
  auto v4 = IpRange::parse("10.1.2.3/8");
  ASSERT_TRUE(std::holds_alternative<std::string>(v4));
  EXPECT_NE(std::get<std::string>(v4).find("did you mean 10.0.0.0/8?"), std::string::npos)
      << std::get<std::string>(v4);
  auto v6 = IpRange::parse("2001:db8::1/32");
  ASSERT_TRUE(std::holds_alternative<std::string>(v6));
  EXPECT_NE(std::get<std::string>(v6).find("did you mean 2001:db8::/32?"), std::string::npos)
      << std::get<std::string>(v6);
}

TEST(IpSet, MatchesAnyRangeOfTheClientsFamily) {
  auto parsed = IpSet::parse({"10.0.0.0/8", "::1", "2001:db8::/32", "192.0.2.7"});
  ASSERT_TRUE(std::holds_alternative<IpSet>(parsed));
  const IpSet& set = std::get<IpSet>(parsed);
  EXPECT_EQ(set.size(), 4u);
  EXPECT_TRUE(set.contains("10.20.30.40"));
  EXPECT_TRUE(set.contains("::ffff:10.20.30.40"));
  EXPECT_TRUE(set.contains("::1"));
  EXPECT_TRUE(set.contains("2001:db8:1::5"));
  EXPECT_TRUE(set.contains("192.0.2.7"));
  EXPECT_FALSE(set.contains("192.0.2.8"));
  EXPECT_FALSE(set.contains("127.0.0.1"));
  EXPECT_FALSE(set.contains("2001:db9::"));
  EXPECT_FALSE(set.contains("garbage"));
  EXPECT_FALSE(set.contains(""));
}

TEST(IpSet, AllowAndDenyWithOneParsedClient) {
  const IpSet allow = std::get<IpSet>(IpSet::parse({"203.0.113.0/24"}));
  const IpSet deny = std::get<IpSet>(IpSet::parse({"203.0.113.128/25"}));
  auto verdict = [&](std::string_view ip) {
    std::optional<IpAddress> client = IpAddress::parse(ip);
    return client && allow.contains(*client) && !deny.contains(*client);
  };
  EXPECT_TRUE(verdict("203.0.113.127"));
  EXPECT_FALSE(verdict("203.0.113.128"));
  EXPECT_FALSE(verdict("198.51.100.1"));
}

TEST(IpSet, EmptySetContainsNothingAndErrorsNameTheEntry) {
  EXPECT_FALSE(IpSet().contains("10.0.0.1"));
  EXPECT_TRUE(IpSet().empty());
  auto parsed = IpSet::parse({"10.0.0.0/8", "10.0.0.0/99"});
  ASSERT_TRUE(std::holds_alternative<std::string>(parsed));
  EXPECT_EQ(std::get<std::string>(parsed).rfind("ips[1]: ", 0), 0u)
      << std::get<std::string>(parsed);
}

}  // namespace
}  // namespace sluice::auth

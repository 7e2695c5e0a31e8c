"""Route `auth` (api_key, jwt) and `allow` by consumers / groups / scopes (SPEC section 2/3):
good credentials reach the backend as the right consumer, bad ones get 401 + WWW-Authenticate
and never reach it, consumed credentials are not forwarded. Tokens are minted here with the
standard library (HMAC-SHA256), independently of the gateway's code."""

import base64
import hashlib
import hmac
import json
import time

from conftest import proxy_config

SECRET = "an-hmac-secret-that-is-long-enough-for-hs256!"
ALICE_KEY = "alice-key-123"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def mint(claims: dict, secret: str = SECRET, alg: str = "HS256") -> str:
    header = b64url(json.dumps({"alg": alg, "typ": "JWT"}).encode())
    payload = b64url(json.dumps(claims).encode())
    sig = hmac.new(secret.encode(), f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{b64url(sig)}"


def auth_config(backend, routes):
    return proxy_config(
        {"app": [backend]}, routes,
        consumers=[
            {"name": "alice", "groups": ["staff"],
             "api_keys": ["sha256:" + hashlib.sha256(ALICE_KEY.encode()).hexdigest()]},
            {"name": "bob", "groups": ["partners"], "api_keys": ["sha256:" + hashlib.sha256(b"bob-key").hexdigest()]},
        ],
        auth={
            "keys": {"api_key": {"header": "x-api-key", "query": "api_key"}},
            "tokens": {"jwt": {"secret": SECRET, "algorithms": ["HS256"], "issuer": "https://issuer.test",
                               "audiences": ["api"], "leeway": "5s",
                               "forward_claims": {"sub": "x-user-id", "scope": "x-scopes"}}},
        })


def good_claims(**extra):
    claims = {"sub": "alice", "iss": "https://issuer.test", "aud": "api", "exp": int(time.time()) + 300,
              "scope": "products:read orders:write"}
    claims.update(extra)
    return claims


def assert_401(r, scheme):
    assert r.status_code == 401, r.text
    assert r.json()["error"] == "unauthorized"
    assert scheme in r.headers.get("www-authenticate", ""), r.headers


def test_api_key_in_header_reaches_the_backend_without_the_key(gateway_factory, backend, http):
    gw = gateway_factory(auth_config(backend, [{"match": {"path": "/"}, "upstream": "app", "auth": "keys"}]))
    r = http.get(gw.url("/k"), headers={"x-api-key": ALICE_KEY})
    assert r.status_code == 200
    seen = backend.last
    assert seen.target == "/k" and seen.header("x-api-key") is None
    assert gw.wait_access_log(1)[-1]["consumer"] == "alice"


def test_api_key_in_query_is_removed_from_the_forwarded_query(gateway_factory, backend, http):
    gw = gateway_factory(auth_config(backend, [{"match": {"path": "/"}, "upstream": "app", "auth": "keys"}]))
    r = http.get(gw.url(f"/q?a=1&api_key={ALICE_KEY}&b=2"))
    assert r.status_code == 200
    assert backend.last.target == "/q?a=1&b=2"


def test_missing_or_wrong_api_key_gets_401_and_never_reaches_the_backend(gateway_factory, backend, http):
    gw = gateway_factory(auth_config(backend, [{"match": {"path": "/"}, "upstream": "app", "auth": "keys"}]))
    assert_401(http.get(gw.url("/none")), "ApiKey")
    assert_401(http.get(gw.url("/bad"), headers={"x-api-key": "nope"}), "ApiKey")
    assert backend.requests == []
    entry = gw.wait_access_log(2)[-1]
    assert entry["status"] == 401 and "unknown api key" in entry["error"] and "nope" not in entry["error"]


def test_valid_jwt_is_accepted_and_claims_are_forwarded(gateway_factory, backend, http):
    gw = gateway_factory(auth_config(backend, [{"match": {"path": "/"}, "upstream": "app", "auth": "tokens"}]))
    token = mint(good_claims())
    for _ in range(3):  # the second and third come from the verified-token cache
        r = http.get(gw.url("/j"), headers={"authorization": f"Bearer {token}", "x-user-id": "forged"})
        assert r.status_code == 200
    seen = backend.last
    assert seen.header_all("x-user-id") == ["alice"]  # the client's forged value is gone
    assert seen.header("x-scopes") == "products:read orders:write"
    assert gw.wait_access_log(3)[-1]["consumer"] == "alice"


def test_bad_jwts_get_401_with_the_reason_in_the_log_and_never_the_token(gateway_factory, backend, http):
    gw = gateway_factory(auth_config(backend, [{"match": {"path": "/"}, "upstream": "app", "auth": "tokens"}]))
    cases = {
        "expired": mint(good_claims(exp=int(time.time()) - 60)),
        "not yet valid": mint(good_claims(nbf=int(time.time()) + 600)),
        "issuer": mint(good_claims(iss="https://evil.test")),
        "audience": mint(good_claims(aud="other")),
        "signature": mint(good_claims(), secret="another-secret-that-is-long-enough-too!!"),
        "none": mint(good_claims(), alg="none").rsplit(".", 1)[0] + ".",
        "malformed": "not-a-jwt",
    }
    for name, token in cases.items():
        r = http.get(gw.url(f"/{name.replace(' ', '-')}"), headers={"authorization": f"Bearer {token}"})
        assert_401(r, "Bearer")
    assert backend.requests == []
    log = gw.wait_access_log(len(cases))
    errors = [e["error"] for e in log]
    assert all(e.startswith("auth failed") for e in errors), errors
    for token in cases.values():
        assert not any(token in e for e in errors if len(token) > 12)


def test_any_of_authenticators_suffices(gateway_factory, backend, http):
    gw = gateway_factory(auth_config(backend, [{"match": {"path": "/"}, "upstream": "app", "auth": ["tokens", "keys"]}]))
    assert http.get(gw.url("/a"), headers={"x-api-key": ALICE_KEY}).status_code == 200
    assert http.get(gw.url("/b"), headers={"authorization": "Bearer " + mint(good_claims())}).status_code == 200
    r = http.get(gw.url("/c"))
    assert r.status_code == 401
    assert "Bearer" in r.headers["www-authenticate"] and "ApiKey" in r.headers["www-authenticate"]


def test_allow_by_consumer_group_and_scope(gateway_factory, backend, http):
    routes = [
        {"match": {"path": "/staff"}, "upstream": "app", "auth": "keys", "allow": {"groups": ["staff"]}},
        {"match": {"path": "/alice"}, "upstream": "app", "auth": "keys", "allow": {"consumers": ["alice"]}},
        {"match": {"path": "/write"}, "upstream": "app", "auth": "tokens", "allow": {"scopes": ["orders:write"]}},
        {"match": {"path": "/admin"}, "upstream": "app", "auth": "tokens", "allow": {"scopes": ["admin"]}},
    ]
    gw = gateway_factory(auth_config(backend, routes))
    assert http.get(gw.url("/staff"), headers={"x-api-key": ALICE_KEY}).status_code == 200
    r = http.get(gw.url("/staff"), headers={"x-api-key": "bob-key"})
    assert r.status_code == 403 and r.json()["error"] == "forbidden"
    assert http.get(gw.url("/alice"), headers={"x-api-key": ALICE_KEY}).status_code == 200
    assert http.get(gw.url("/alice"), headers={"x-api-key": "bob-key"}).status_code == 403
    bearer = {"authorization": "Bearer " + mint(good_claims())}
    assert http.get(gw.url("/write"), headers=bearer).status_code == 200
    assert http.get(gw.url("/admin"), headers=bearer).status_code == 403
    assert sorted(q.target for q in backend.requests) == ["/alice", "/staff", "/write"]


def test_hash_on_consumer_keeps_each_consumer_on_one_target(gateway_factory, backend_factory, http):
    backends = [backend_factory(n) for n in ("a", "b", "c")]
    cfg = auth_config(backends[0], [{"match": {"path": "/"}, "upstream": "app", "auth": "keys"}])
    cfg["upstreams"] = {"app": {"targets": [b.address for b in backends], "balance": "maglev",
                                "hash_on": "consumer"}}
    gw = gateway_factory(cfg)
    for key in (ALICE_KEY, "bob-key"):
        for i in range(12):
            assert http.get(gw.url(f"/{key}/{i}"), headers={"x-api-key": key}).status_code == 200
    for key in (ALICE_KEY, "bob-key"):
        hit = {b.name for b in backends for q in b.requests if q.target.startswith(f"/{key}/")}
        assert len(hit) == 1, (key, hit)


def _crypt_hash(password: str, prefix: str) -> str:
    """A crypt(3) hash made by libxcrypt itself (through ctypes), independent of the gateway."""
    import ctypes
    lib = ctypes.CDLL("libcrypt.so.1")
    lib.crypt_gensalt.restype = ctypes.c_char_p
    lib.crypt_gensalt.argtypes = [ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p, ctypes.c_int]
    lib.crypt.restype = ctypes.c_char_p
    lib.crypt.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
    salt = lib.crypt_gensalt(prefix.encode(), 4 if prefix == "$2b$" else 0, None, 0)
    return lib.crypt(password.encode(), salt).decode()


def test_basic_auth_with_bcrypt_and_sha512_crypt(gateway_factory, backend, http):
    cfg = proxy_config({"app": [backend]}, [{"match": {"path": "/"}, "upstream": "app", "auth": "ops"}],
                       consumers=[{"name": "dora", "groups": ["ops"], "password": _crypt_hash("s3cret!", "$2b$")},
                                  {"name": "eve", "password": _crypt_hash("hunter2", "$6$")}],
                       auth={"ops": {"basic": {"realm": "ops"}}})
    gw = gateway_factory(cfg)
    for _ in range(2):  # the second request is answered from the verified-password cache
        r = http.get(gw.url("/d"), auth=("dora", "s3cret!"))
        assert r.status_code == 200, r.text
        assert backend.last.header("authorization") is None  # consumed: not forwarded
    assert http.get(gw.url("/e"), auth=("eve", "hunter2")).status_code == 200
    for user, password in [("dora", "wrong"), ("nobody", "s3cret!"), ("eve", "")]:
        r = http.get(gw.url("/x"), auth=(user, password))
        assert r.status_code == 401
        assert r.headers["www-authenticate"].startswith('Basic realm="ops"')
    assert [q.target for q in backend.requests] == ["/d", "/d", "/e"]
    log = gw.wait_access_log(6)
    assert [e["consumer"] for e in log[:3]] == ["dora", "dora", "eve"]
    assert all("s3cret" not in e["error"] for e in log[3:] if e["error"])


def test_respond_and_redirect_routes_are_protected_too(gateway_factory, backend, http):
    """`auth`, `allow` and `deny` run before the gateway answers a route itself."""
    gw = gateway_factory(auth_config(backend, [
        {"match": {"path": "/local"}, "respond": {"status": 200, "body": "secret"}, "auth": "keys"},
        {"match": {"path": "/moved"}, "redirect": {"to": "https://example.test/"}, "auth": "keys",
         "allow": {"consumers": ["bob"]}},
        {"match": {"path": "/denied"}, "respond": {"status": 200, "body": "x"}, "deny": {"ips": ["127.0.0.0/8"]}},
    ]))
    r = http.get(gw.url("/local"))
    assert_401(r, "ApiKey")
    assert "secret" not in r.text
    r = http.get(gw.url("/local"), headers={"x-api-key": ALICE_KEY})
    assert r.status_code == 200 and r.text == "secret"
    r = http.get(gw.url("/moved"), headers={"x-api-key": ALICE_KEY}, allow_redirects=False)
    assert r.status_code == 403
    r = http.get(gw.url("/moved"), headers={"x-api-key": "bob-key"}, allow_redirects=False)
    assert r.status_code == 301 and r.headers["location"] == "https://example.test/"
    assert http.get(gw.url("/denied")).status_code == 403
    assert backend.requests == []

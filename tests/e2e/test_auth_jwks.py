"""JWT with asymmetric keys (SPEC section 2 `auth: jwt: keys`): tokens minted by an independent
library (PyJWT + cryptography) with RS256, ES256 and EdDSA keys published in a JWKS file and
selected by `kid`; a token signed by a key that is not in the set, or HS256 with the public key
as the secret (the algorithm-confusion attack), is refused."""

import base64
import hashlib
import hmac
import json
import time

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from conftest import proxy_config


def make_keys():
    return {
        "rsa-1": ("RS256", rsa.generate_private_key(public_exponent=65537, key_size=2048), RSAAlgorithm),
        "ec-1": ("ES256", ec.generate_private_key(ec.SECP256R1()), ECAlgorithm),
        "ed-1": ("EdDSA", ed25519.Ed25519PrivateKey.generate(), OKPAlgorithm),
    }


def jwks_of(keys):
    out = []
    for kid, (alg, private, algo) in keys.items():
        jwk = json.loads(algo.to_jwk(private.public_key()))
        jwk.update({"kid": kid, "use": "sig"})
        out.append(jwk)
    return {"keys": out}


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def claims():
    return {"sub": "carol", "iss": "https://issuer.test", "aud": "api", "exp": int(time.time()) + 300,
            "scope": "read"}


def start_gateway(tmp_path, gateway_factory, backend, keys):
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(jwks_of(keys)))
    cfg = proxy_config({"app": [backend]}, [{"match": {"path": "/"}, "upstream": "app", "auth": "idp",
                                              "allow": {"scopes": ["read"]}}],
                       auth={"idp": {"jwt": {"keys": str(path), "algorithms": ["RS256", "ES256", "EdDSA"],
                                             "issuer": "https://issuer.test", "audiences": ["api"],
                                             "forward_claims": {"sub": "x-user"}}}})
    return gateway_factory(cfg)


def test_tokens_from_an_independent_library_verify_with_every_key_of_the_jwks(tmp_path, gateway_factory, backend, http):
    keys = make_keys()
    gw = start_gateway(tmp_path, gateway_factory, backend, keys)
    for kid, (alg, private, _) in keys.items():
        token = jwt.encode(claims(), private, algorithm=alg, headers={"kid": kid})
        r = http.get(gw.url(f"/{kid}"), headers={"authorization": f"Bearer {token}"})
        assert r.status_code == 200, (kid, r.text)
        assert backend.last.header("x-user") == "carol"
    assert [q.target for q in backend.requests] == ["/rsa-1", "/ec-1", "/ed-1"]


def test_foreign_key_unknown_kid_and_hs256_confusion_are_refused(tmp_path, gateway_factory, backend, http):
    keys = make_keys()
    gw = start_gateway(tmp_path, gateway_factory, backend, keys)
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public_pem = keys["rsa-1"][1].public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    # PyJWT refuses to HMAC with a PEM key, so the confusion token is built by hand: HS256 keyed
    # with the RSA public key's PEM text, the classic attack on verifiers that mix key kinds.
    head = b64(json.dumps({"alg": "HS256", "kid": "rsa-1"}).encode())
    body = b64(json.dumps(claims()).encode())
    forged_hs = f"{head}.{body}." + b64(hmac.new(public_pem, f"{head}.{body}".encode(), hashlib.sha256).digest())
    bad = {
        "foreign": jwt.encode(claims(), stranger, algorithm="RS256", headers={"kid": "rsa-1"}),
        "unknown-kid": jwt.encode(claims(), keys["ec-1"][1], algorithm="ES256", headers={"kid": "nope"}),
        "confusion": forged_hs,
    }
    for name, token in bad.items():
        r = http.get(gw.url(f"/{name}"), headers={"authorization": f"Bearer {token}"})
        assert r.status_code == 401, (name, r.text)
        assert r.headers["www-authenticate"].startswith("Bearer")
    assert backend.requests == []

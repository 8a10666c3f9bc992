#!/usr/bin/env python3
"""TEST-ONLY key material for palisade jwt_auth. Never use these keys for anything real.

The PEM files here were made with openssl:
    openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out rsa_private.pem
    openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out rsa2_private.pem   # rotation
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out ec_p256_private.pem
    openssl genpkey -algorithm ed25519 -out ed25519_private.pem
    openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out demo_only_rsa_private.pem
    openssl rand 32 | base64url > hmac_secret.b64url
This script (python3 + the `cryptography` package) derives the JWK files the Rust tests read:
    <name>.private.jwk.json   private JWKs, used by the tests to sign tokens with jwt-compact
    jwks.json                 the public JWKS (with kid and alg) the tests verify against
and the demo token `envoy/jwt_auth.token` (RS256, exp in 2100, signed by the demo-only key whose
public half is inlined in envoy/jwt_auth.yaml). Run it from this directory.
"""
import base64, json, time
from cryptography.hazmat.primitives import serialization, hashes
from cryptography.hazmat.primitives.asymmetric import rsa, ec, ed25519, padding

def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

def uint(n: int) -> str:
    return b64(n.to_bytes((n.bit_length() + 7) // 8, "big"))

def load(path):
    return serialization.load_pem_private_key(open(path, "rb").read(), password=None)

def rsa_jwks(key, kid, alg):
    pub = key.public_key().public_numbers()
    priv = key.private_numbers()
    public = {"kty": "RSA", "kid": kid, "alg": alg, "use": "sig", "n": uint(pub.n), "e": uint(pub.e)}
    private = dict(public, d=uint(priv.d), p=uint(priv.p), q=uint(priv.q))
    return public, private

def ec_jwks(key, kid):
    nums = key.private_numbers()
    public = {"kty": "EC", "kid": kid, "alg": "ES256", "use": "sig", "crv": "P-256",
              "x": b64(nums.public_numbers.x.to_bytes(32, "big")),
              "y": b64(nums.public_numbers.y.to_bytes(32, "big"))}
    private = dict(public, d=b64(nums.private_value.to_bytes(32, "big")))
    return public, private

def ed_jwks(key, kid):
    raw_pub = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    raw_priv = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                 serialization.NoEncryption())
    public = {"kty": "OKP", "kid": kid, "alg": "EdDSA", "use": "sig", "crv": "Ed25519", "x": b64(raw_pub)}
    private = dict(public, d=b64(raw_priv))
    return public, private

keys = {
    "rsa": rsa_jwks(load("rsa_private.pem"), "test-rsa", "RS256"),
    "rsa_ps": rsa_jwks(load("rsa_private.pem"), "test-rsa-ps", "PS256"),
    "rsa2": rsa_jwks(load("rsa2_private.pem"), "test-rsa-2", "RS256"),
    "ec": ec_jwks(load("ec_p256_private.pem"), "test-ec"),
    "ed25519": ed_jwks(load("ed25519_private.pem"), "test-ed25519"),
    "demo": rsa_jwks(load("demo_only_rsa_private.pem"), "demo-only", "RS256"),
}
for name, (_, private) in keys.items():
    json.dump(private, open(f"{name}.private.jwk.json", "w"), indent=1)
json.dump({"keys": [keys[k][0] for k in ("rsa", "rsa_ps", "ec", "ed25519")]}, open("jwks.json", "w"), indent=1)
json.dump({"keys": [keys["rsa2"][0]]}, open("jwks_rotated.json", "w"), indent=1)
json.dump({"keys": [keys["demo"][0]]}, open("demo_only_jwks.json", "w"))

# The demo token: iss/aud match envoy/jwt_auth.yaml, exp 2100-01-01.
header = {"alg": "RS256", "typ": "JWT", "kid": "demo-only"}
claims = {"iss": "https://demo.palisade.invalid", "aud": "palisade-demo", "sub": "demo-user",
          "scope": "read write", "iat": 1700000000, "exp": 4102444800}
signing_input = b64(json.dumps(header, separators=(",", ":")).encode()) + "." + \
    b64(json.dumps(claims, separators=(",", ":")).encode())
sig = load("demo_only_rsa_private.pem").sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
open("../../../envoy/jwt_auth.token", "w").write(signing_input + "." + b64(sig) + "\n")

# Static tokens for the end-to-end tests (tests/harness/tests/jwt_auth.rs): far-future or far-past
# times, so they need no clock. Unit tests sign their own tokens relative to a fake clock.
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

def sign_token(header, claims, name):
    signing_input = b64(json.dumps(header, separators=(",", ":")).encode()) + "." + \
        b64(json.dumps(claims, separators=(",", ":")).encode())
    msg = signing_input.encode()
    if name in ("rsa", "rsa2"):
        sig = load(f"{name}_private.pem" if name == "rsa2" else "rsa_private.pem").sign(
            msg, padding.PKCS1v15(), hashes.SHA256())
    elif name == "ec":
        r, s = decode_dss_signature(load("ec_p256_private.pem").sign(msg, ec.ECDSA(hashes.SHA256())))
        sig = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    elif name == "ed25519":
        sig = load("ed25519_private.pem").sign(msg)
    return signing_input + "." + b64(sig)

FAR, PAST = 4102444800, 946684800
base = {"iss": "https://issuer.test", "aud": "api", "sub": "alice", "scope": "read",
        "roles": ["reader", "writer"], "iat": 1700000000, "exp": FAR}
tokens = {
    "valid_rs256": sign_token({"alg": "RS256", "kid": "test-rsa"}, base, "rsa"),
    "valid_es256": sign_token({"alg": "ES256", "kid": "test-ec"}, base, "ec"),
    "valid_eddsa": sign_token({"alg": "EdDSA", "kid": "test-ed25519"}, base, "ed25519"),
    "admin": sign_token({"alg": "RS256", "kid": "test-rsa"}, dict(base, scope="read admin"), "rsa"),
    "expired": sign_token({"alg": "RS256", "kid": "test-rsa"}, dict(base, exp=PAST), "rsa"),
    "wrong_audience": sign_token({"alg": "RS256", "kid": "test-rsa"}, dict(base, aud="other"), "rsa"),
    "rotated": sign_token({"alg": "RS256", "kid": "test-rsa-2"}, dict(base, sub="bob"), "rsa2"),
    "unknown_kid": sign_token({"alg": "RS256", "kid": "nope"}, base, "rsa"),
}
json.dump(tokens, open("e2e_tokens.json", "w"), indent=1)

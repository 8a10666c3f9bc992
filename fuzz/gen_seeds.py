#!/usr/bin/env python3
"""Regenerate the committed fuzz seeds and dictionaries (run from the repo root:
`python3 fuzz/gen_seeds.py`; needs python3 with PyYAML and `cryptography`).

- `seeds/config_<plugin>/`: every plugin `configuration` in envoy/*.yaml, every JSON config and
  Istio `pluginConfig` in docs/<plugin>.md (as JSON), plus hand-written invalid ones.
- `dicts/config_<plugin>.dict`: libFuzzer dictionary of every JSON member name and string value
  found in those seeds plus the serde field names of plugins/<plugin>/src/config.rs, so mutations
  get past `deny_unknown_fields`.
- `seeds/jwt_verify/` and `seeds/jwt_parse/`: tokens of every algorithm signed with the TEST-ONLY
  keys of plugins/jwt_auth/testdata (HS256 with its test secret), plus attack tokens. The file
  `genuine_tokens.txt` lists every genuinely signed token: the `jwt_verify` target compiles it in
  and asserts that any token that verifies has one of their signed parts.
- `seeds/jwks/`: the test JWKS documents and broken ones.
"""
import base64, glob, hashlib, json, os, re
import yaml
from cryptography.hazmat.primitives import serialization, hashes, hmac
from cryptography.hazmat.primitives.asymmetric import padding, ec, utils

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FUZZ = os.path.join(ROOT, "fuzz")
TESTDATA = os.path.join(ROOT, "plugins/jwt_auth/testdata")
PLUGINS = ["rate_limit", "jwt_auth", "circuit_breaker", "bulkhead", "transform"]


def write_seed(target, name, data):
    d = os.path.join(FUZZ, "seeds", target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def wasm_configs(doc, plugin):
    """Every Wasm filter configuration string in a parsed Envoy bootstrap."""
    out = []
    def walk(v):
        if isinstance(v, dict):
            cfg = v.get("config")
            if isinstance(cfg, dict) and "configuration" in cfg and "vm_config" in cfg:
                code = json.dumps(cfg["vm_config"])
                if plugin + ".wasm" in code:
                    val = cfg["configuration"].get("value")
                    if isinstance(val, str):
                        out.append(val)
            for x in v.values():
                walk(x)
        elif isinstance(v, list):
            for x in v:
                walk(x)
    walk(doc)
    return out


def json_keys_and_strings(v, keys, strings):
    if isinstance(v, dict):
        for k, x in v.items():
            keys.add(k)
            json_keys_and_strings(x, keys, strings)
    elif isinstance(v, list):
        for x in v:
            json_keys_and_strings(x, keys, strings)
    elif isinstance(v, str) and len(v) < 40:
        strings.add(v)


INVALID = {
    "common": ['', '{}', '[]', 'null', '{"rules": []}', '{"rules": [{}]}', '{"unknown": 1}',
               '{"rules": [{"name": ""}]}', '{"rules": [{"name": "a b"}]}', '{"rules": 7}',
               '{"rules": [{"name": "r", "match": {"path": "no-slash"}}]}',
               '{"rules": [{"name": "r", "match": {"path_regex": "("}}]}',
               '{"rules": [{"name": "r", "match": {"path_regex": "^/(?P<a>x)$", "methods": [""]}}]}',
               '{"failure_mode": "maybe", "rules": [{"name": "r"}]}',
               '{"rules": [{"name": "r", "key": ["client_ip"], "limits": [{"capacity": 0, "refill": 1, "period": "0s"}]}]}',
               '{"rules": [{"name": "r", "limits": [{"capacity": 18446744073709551615, "refill": 18446744073709551615, "period": "1ns"}]}]}',
               '{"rules": [{"name": "r", "timeout": "99999999999999999999h"}]}',
               '{"rules": [{"name": "r", "period": "-1s"}]}',
               '{"rules": [{"name": "r", "period": "1.5e308s"}]}',
               '{"client_ip": {"trusted_hops": 4294967296}, "rules": [{"name": "r"}]}',
               '{"rules": [{"name": "\\u0000"}], "rules": []}'],
}


def config_seeds():
    for plugin in PLUGINS:
        target = "config_" + plugin
        texts = []
        y = os.path.join(ROOT, "envoy", plugin + ".yaml")
        if os.path.exists(y):
            texts += wasm_configs(yaml.safe_load(open(y)), plugin)
        demo = os.path.join(ROOT, "envoy", "demo.yaml")
        texts += wasm_configs(yaml.safe_load(open(demo)), plugin)
        md = open(os.path.join(ROOT, "docs", plugin + ".md")).read()
        for lang, block in re.findall(r"```(\w*)\n(.*?)```", md, re.S):
            if lang == "json":
                texts.append(block)
            elif lang == "yaml":
                try:
                    doc = yaml.safe_load(block)
                except yaml.YAMLError:
                    continue
                if isinstance(doc, dict) and isinstance(doc.get("spec"), dict) and "pluginConfig" in doc["spec"]:
                    texts.append(json.dumps(doc["spec"]["pluginConfig"], indent=1))
                elif isinstance(doc, (dict, list)):
                    texts += wasm_configs(doc, plugin)
        keys, strings = set(), set()
        n = 0
        for t in dict.fromkeys(texts):
            try:
                json_keys_and_strings(json.loads(t), keys, strings)
            except ValueError:
                pass
            write_seed(target, "valid_%02d.json" % n, t)
            n += 1
        for i, t in enumerate(INVALID["common"]):
            write_seed(target, "invalid_%02d.json" % i, t)
        # Field names of the serde wire types (`name: Type,` lines) and the string literals the
        # validators match on.
        src = open(os.path.join(ROOT, "plugins", plugin, "src", "config.rs")).read()
        src = src.split("#[cfg(test)]")[0]
        keys |= set(re.findall(r"^\s+(?:pub\s+)?([a-z][a-z0-9_]*)\s*:\s*[A-Za-z(\[&]", src, re.M))
        keys |= set(re.findall(r'rename\s*=\s*"([^"]+)"', src))
        strings |= set(re.findall(r'"([a-z][a-z0-9_+*/-]{0,30})"\s*(?:=>|\|)', src))
        words = sorted(keys | strings)
        d = os.path.join(FUZZ, "dicts")
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, target + ".dict"), "w") as f:
            f.write("# generated by fuzz/gen_seeds.py\n")
            for w in words:
                f.write('"\\"%s\\""\n' % w.replace("\\", "\\\\").replace('"', '\\"'))
            for tok in ['{', '}', '[', ']', ':', ',', 'true', 'false', 'null', '"1s"', '"100ms"', '"1m"',
                        '0', '1', '-1', '1e999', '18446744073709551615', '"^/"', '"/"']:
                f.write('"%s"\n' % tok.replace('"', '\\"'))


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def load_pem(name):
    return serialization.load_pem_private_key(open(os.path.join(TESTDATA, name), "rb").read(), password=None)


def ec_key(alg):
    """The TEST-ONLY P-384 / P-521 keys, from the fixed scalars of plugins/jwt_auth/src/testkeys.rs."""
    if alg == "ES384":
        return ec.derive_private_key(int.from_bytes(b"\x38" * 48, "big"), ec.SECP384R1())
    return ec.derive_private_key(int.from_bytes(b"\x01" + b"\x52" * 65, "big"), ec.SECP521R1())


def sign(alg, header, payload):
    signing_input = b64(header.encode()) + "." + b64(payload.encode())
    msg = signing_input.encode()
    if alg == "RS256":
        sig = load_pem("rsa_private.pem").sign(msg, padding.PKCS1v15(), hashes.SHA256())
    elif alg == "PS256":
        sig = load_pem("rsa_private.pem").sign(
            msg, padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32), hashes.SHA256())
    elif alg == "ES256":
        der = load_pem("ec_p256_private.pem").sign(msg, ec.ECDSA(hashes.SHA256()))
        r, s = utils.decode_dss_signature(der)
        sig = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    elif alg in ("ES384", "ES512"):
        size, digest = (48, hashes.SHA384()) if alg == "ES384" else (66, hashes.SHA512())
        r, s = utils.decode_dss_signature(ec_key(alg).sign(msg, ec.ECDSA(digest)))
        sig = r.to_bytes(size, "big") + s.to_bytes(size, "big")
    elif alg == "EdDSA":
        sig = load_pem("ed25519_private.pem").sign(msg)
    elif alg == "HS256":
        secret = base64.urlsafe_b64decode(open(os.path.join(TESTDATA, "hmac_secret.b64url")).read().strip() + "==")
        h = hmac.HMAC(secret, hashes.SHA256())
        h.update(msg)
        sig = h.finalize()
    else:
        raise ValueError(alg)
    return signing_input + "." + b64(sig)


def jwt_seeds():
    claims = '{"iss":"https://issuer.test","aud":"api","sub":"alice","iat":1700000000,"exp":4102444800,"nbf":1700000000}'
    kids = {"RS256": "test-rsa", "PS256": "test-rsa-ps", "ES256": "test-ec", "ES384": "test-ec384",
            "ES512": "test-ec521", "EdDSA": "test-ed25519", "HS256": "test-hmac"}
    genuine = []
    for alg, kid in kids.items():
        genuine.append(sign(alg, '{"alg":"%s","kid":"%s","typ":"JWT"}' % (alg, kid), claims))
        genuine.append(sign(alg, '{"alg":"%s"}' % alg,
                            '{"iss":"https://issuer.test","aud":["other","api"],"exp":1800000000,"roles":["a","b"],"n":{"x":[1,2.5,null,true]}}'))
    # Genuinely signed, but wrong in a way only a later check catches: kept in the oracle set.
    genuine.append(sign("RS256", '{"alg":"RS256","kid":"test-rsa"}', '{"aud":"other","exp":1}'))
    genuine.append(sign("ES256", '{"alg":"ES256","kid":"test-rsa"}', '{"aud":"api"}'))  # wrong kid
    with open(os.path.join(FUZZ, "seeds", "genuine_tokens.txt"), "w") as f:
        f.write("# Tokens signed with the TEST-ONLY keys (generated by fuzz/gen_seeds.py).\n")
        f.write("# jwt_verify asserts that any token that verifies has the signed part of one of these.\n")
        for t in genuine:
            f.write(t + "\n")
    h, p, s = genuine[0].split(".")
    rsa_h_p = h + "." + p
    attacks = {
        "alg_none": b64(b'{"alg":"none"}') + "." + p + ".",
        "alg_none_sig": b64(b'{"alg":"none"}') + "." + p + "." + s,
        "alg_None": b64(b'{"alg":"None"}') + "." + p + "." + s,
        # RS256 -> HS256 confusion: the RSA public key's JWK text as HMAC secret.
        "alg_confusion": b64(b'{"alg":"HS256","kid":"test-rsa"}') + "." + p + "." + s,
        "crit": b64(b'{"alg":"RS256","kid":"test-rsa","crit":["exp"]}') + "." + p + "." + s,
        "jwk_header": b64(b'{"alg":"RS256","jwk":{"kty":"oct","k":"AAAA"}}') + "." + p + "." + s,
        "jku_header": b64(b'{"alg":"RS256","jku":"https://evil.test/jwks"}') + "." + p + "." + s,
        "dup_alg": b64(b'{"alg":"RS256","alg":"none"}') + "." + p + "." + s,
        "dup_claim": h + "." + b64(b'{"aud":"api","aud":"admin"}') + "." + s,
        "padded": h + "=." + p + "." + s,
        "std_b64": rsa_h_p.replace("-", "+").replace("_", "/") + "." + s,
        "empty_sig": rsa_h_p + ".",
        "two_segments": rsa_h_p,
        "five_segments": rsa_h_p + "." + s + ".a.b",
        "huge_header": b64(('{"alg":"RS256","x":"' + "a" * 9000 + '"}').encode()) + "." + p + "." + s,
        "nested_header": b64(('{"alg":"RS256","x":' + "[" * 200 + "]" * 200 + "}").encode()) + "." + p + "." + s,
        "exp_string": h + "." + b64(b'{"exp":"4102444800"}') + "." + s,
        "exp_huge": h + "." + b64(b'{"exp":1e308,"nbf":-1e308}') + "." + s,
        "payload_array": h + "." + b64(b'[1,2]') + "." + s,
        "truncated_sig": rsa_h_p + "." + s[:-4],
        "kid_number": b64(b'{"alg":"RS256","kid":7}') + "." + p + "." + s,
        "eddsa_with_rsa_kid": b64(b'{"alg":"EdDSA","kid":"test-rsa"}') + "." + p + "." + s,
        # Curve confusion: a genuine ES384 signature under an ES256 header naming the P-256 key.
        "es384_as_es256": b64(b'{"alg":"ES256","kid":"test-ec"}') + "." + p + "." + genuine[6].split(".")[2],
        "es512_on_p384_key": b64(b'{"alg":"ES512","kid":"test-ec384"}') + "." + p + "." + genuine[8].split(".")[2],
        "unicode": b64('{"alg":"RS256","kid":"t\u00e9st"}'.encode()) + "." + p + "." + s,
    }
    for i, t in enumerate(genuine):
        write_seed("jwt_verify", "genuine_%02d.jwt" % i, t)
        write_seed("jwt_parse", "genuine_%02d.jwt" % i, t)
    for name, t in attacks.items():
        write_seed("jwt_verify", name + ".jwt", t)
        write_seed("jwt_parse", name + ".jwt", t)
    for name in ["jwks.json", "jwks_rotated.json", "demo_only_jwks.json"]:
        write_seed("jwks", name, open(os.path.join(TESTDATA, name)).read())
    secret = open(os.path.join(TESTDATA, "hmac_secret.b64url")).read().strip()
    for i, t in enumerate([
        '{"keys":[{"kty":"oct","k":"%s","alg":"HS256"}]}' % secret,
        '{"keys":[{"kty":"oct","k":"AAAA"}]}',
        '{"keys":[{"kty":"RSA","n":"AQAB","e":"AQAB"}]}',
        '{"keys":[{"kty":"RSA","n":"","e":""}]}',
        '{"keys":[{"kty":"EC","crv":"P-256","x":"AAAA","y":"AAAA"}]}',
        '{"keys":[{"kty":"EC","crv":"P-256","x":"%s","y":"%s"}]}' % (b64(b"\0" * 32), b64(b"\xff" * 32)),
        '{"keys":[{"kty":"OKP","crv":"Ed25519","x":"%s"}]}' % b64(b"\0" * 32),
        '{"keys":[{"kty":"EC","crv":"P-384","x":"%s","y":"%s"}]}' % (b64(b"\0" * 48), b64(b"\xff" * 48)),
        '{"keys":[{"kty":"EC","crv":"P-521","x":"%s","y":"%s","alg":"ES384"}]}' % (b64(b"\1" * 66), b64(b"\1" * 66)),
        '{"keys":[{"kty":"OKP","crv":"X25519","x":"AAAA","use":"enc"}]}',
        '{"keys":[{"kty":"RSA","alg":"RS256","alg":"HS256"}]}',
        '{"keys":{}}', '{"keys":[]}', '[]', '',
    ]):
        write_seed("jwks", "edge_%02d.json" % i, t)
    with open(os.path.join(FUZZ, "dicts", "jwt.dict"), "w") as f:
        f.write("# generated by fuzz/gen_seeds.py: base64url of common header/claim fragments\n")
        for frag in ['{"alg":"', '"}', '","kid":"', 'RS256', 'PS256', 'ES256', 'ES384', 'ES512', 'EdDSA', 'HS256', 'none',
                     'test-rsa', 'test-ec', 'test-ec384', 'test-ec521', 'test-ed25519', 'test-hmac', '"exp":', '"nbf":', '"aud":', '"crit":[',
                     '"kty":"', '"keys":[', '"crv":"P-256"', '"crv":"P-384"', '"crv":"P-521"', '"crv":"Ed25519"', '"n":"', '"e":"AQAB"', '"x":"', '"y":"', '"k":"']:
            f.write('"%s"\n' % frag.replace('"', '\\"'))
            f.write('"%s"\n' % b64(frag.encode()))
        f.write('"."\n')


if __name__ == "__main__":
    config_seeds()
    jwt_seeds()

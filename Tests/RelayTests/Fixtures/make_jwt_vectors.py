#!/usr/bin/env python3
"""Prints the JWT test vectors used by JWTTests.swift, as a Swift enum.

Valid tokens and the standard attacks come from PyJWT (`pip install pyjwt`). Tokens PyJWT
refuses to produce (bad claim types, odd headers, broken encodings) are assembled here by hand
and signed with Python's hmac, so that each one reaches the check it is meant to exercise
instead of failing earlier on its signature.

Run: python3 make_jwt_vectors.py > vectors.swift.txt, then paste the enum into JWTTests.swift.
"""

import base64
import hashlib
import hmac
import json
import warnings

import jwt

SECRET = b"relay-test-secret-0123456789abcd"
OTHER_SECRET = b"some-other-secret-0123456789abcd"
NOW = 1_700_000_000
MAX_TOKEN_LENGTH = 8192

# PyJWT warns that 32 bytes is short for HS512; the HS512 vector exists to be refused.
warnings.simplefilter("ignore")


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def compact(obj) -> str:
    return json.dumps(obj, separators=(",", ":"))


def sign_segments(header_segment: str, payload_segment: str, secret: bytes = SECRET) -> str:
    """Signs already-encoded segments exactly as given, however odd they are."""
    signing_input = f"{header_segment}.{payload_segment}"
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(mac)}"


def raw(header_json: str, payload_json: str) -> str:
    """A correctly signed token whose header and payload are the given JSON text."""
    return sign_segments(b64(header_json.encode()), b64(payload_json.encode()))


STD_HEADER = '{"alg":"HS256","typ":"JWT"}'
GOOD = {"sub": "alice", "exp": NOW + 3600}


def good(**changes) -> str:
    return compact({**GOOD, **changes})


def pyjwt(payload, key=SECRET, algorithm="HS256", headers=None) -> str:
    return jwt.encode(payload, key, algorithm=algorithm, headers=headers)


def with_signature(token: str, signature: bytes) -> str:
    head, payload, _ = token.split(".")
    return f"{head}.{payload}.{b64(signature)}"


def signature_of(token: str) -> bytes:
    s = token.split(".")[2]
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


vectors = []  # (name, comment, token)


def add(name, comment, token):
    vectors.append((name, comment, token))


# Accepted.
valid = pyjwt({"sub": "alice", "sid": "laptop", "exp": NOW + 3600, "iat": NOW})
add("valid", "PyJWT: sub alice, sid laptop, exp now+3600, iat now", valid)
add("validNoSID", "PyJWT: sub bob, exp now+60, no sid", pyjwt({"sub": "bob", "exp": NOW + 60}))
add(
    "validExtraClaims",
    "PyJWT: sub carol.x_1-Z, exp now+1 (the last valid second), plus aud, nbf, jti",
    pyjwt({"sub": "carol.x_1-Z", "exp": NOW + 1, "aud": "relay", "nbf": NOW, "jti": "j1"}),
)
add("validNoTyp", "PyJWT without typ: header {\"alg\":\"HS256\"}", pyjwt(GOOD, headers={"typ": None}))
add("validLowercaseTyp", "header typ \"jwt\"", raw('{"alg":"HS256","typ":"jwt"}', good()))
add("validFloatExp", "exp now+10.0 (integral float)", raw(STD_HEADER, compact({"sub": "alice", "exp": float(NOW + 10)})))
add("validExponentExp", "exp 2e9", raw(STD_HEADER, '{"sub":"alice","exp":2e9}'))
add("validLongestIDs", "sub and sid of 64 characters", raw(STD_HEADER, good(sub="u" * 64, sid="s" * 64)))
# Byte-for-byte what HS256.sign must produce: PyJWT keeps the payload's key order, so the
# keys are given sorted, as HS256.sign writes them.
add(
    "pyjwtOfSortedClaims",
    "PyJWT of {exp: now+3600, iat: now, sid: laptop, sub: alice} in that key order",
    pyjwt({"exp": NOW + 3600, "iat": NOW, "sid": "laptop", "sub": "alice"}),
)
add(
    "pyjwtOfSortedClaimsNoIAT",
    "PyJWT of {exp: now+3600, sid: default, sub: alice} in that key order",
    pyjwt({"exp": NOW + 3600, "sid": "default", "sub": "alice"}),
)

# Algorithm attacks.
none_token = pyjwt(GOOD, key=None, algorithm="none")
add("algNoneEmptySignature", "PyJWT alg none: empty signature", none_token)
add(
    "algNoneCopiedSignature",
    "alg none header spliced onto the payload and signature of `valid`",
    b64(b'{"alg":"none","typ":"JWT"}') + "." + ".".join(valid.split(".")[1:]),
)
add("algHS512", "PyJWT HS512 with the right secret", pyjwt(GOOD, algorithm="HS512"))
add("algRS256", "header alg RS256, HMAC-SHA256 signature with the right secret", raw('{"alg":"RS256","typ":"JWT"}', good()))
add("algLowercase", "header alg \"hs256\", correctly signed", raw('{"alg":"hs256","typ":"JWT"}', good()))
add("algMixedCase", "header alg \"Hs256\", correctly signed", raw('{"alg":"Hs256","typ":"JWT"}', good()))
add("algTrailingSpace", "header alg \"HS256 \", correctly signed", raw('{"alg":"HS256 ","typ":"JWT"}', good()))
add("algMissing", "header without alg, correctly signed", raw('{"typ":"JWT"}', good()))
add("algNotString", "header alg 256, correctly signed", raw('{"alg":256,"typ":"JWT"}', good()))
add("algNull", "header alg null, correctly signed", raw('{"alg":null,"typ":"JWT"}', good()))
add("typJWS", "header typ \"JWS\", correctly signed", raw('{"alg":"HS256","typ":"JWS"}', good()))
add("typNotString", "header typ 1, correctly signed", raw('{"alg":"HS256","typ":1}', good()))

# Signature attacks.
add("wrongSecret", "PyJWT with another secret", pyjwt(GOOD, key=OTHER_SECRET))
sig = signature_of(valid)
add("flippedSignatureBit", "`valid` with the signature's first bit flipped", with_signature(valid, bytes([sig[0] ^ 0x80]) + sig[1:]))
add("truncatedSignature", "`valid` with a 31-byte signature (last byte dropped)", with_signature(valid, sig[:31]))
add("longSignature", "`valid` with a zero byte appended to the signature", with_signature(valid, sig + b"\0"))
add("emptySignature", "`valid` with an empty signature", ".".join(valid.split(".")[:2]) + ".")
sig_text = valid.split(".")[2]
assert len(sig_text) == 43
alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
last = alphabet.index(sig_text[-1])
assert last & 3 == 0
non_canonical = sig_text[:-1] + alphabet[last | 1]
assert base64.urlsafe_b64decode(non_canonical + "=") == sig  # decodes to the same bytes
add(
    "nonCanonicalSignature",
    "`valid` whose last signature character has a non-zero unused bit (same bytes when decoded leniently)",
    ".".join(valid.split(".")[:2]) + "." + non_canonical,
)
add("paddedSignature", "`valid` with \"=\" padding on the signature", valid + "=")

# Encoding.
padded_payload_json = good(sid="ab")
padded_segment = base64.urlsafe_b64encode(padded_payload_json.encode()).decode()
assert padded_segment.endswith("=")
add("paddedPayload", "payload segment with \"=\" padding, signed as written", sign_segments(b64(STD_HEADER.encode()), padded_segment))
# An ignored claim of "?" characters puts "/" into the standard alphabet's output.
std_segment = base64.b64encode(good(note="???").encode()).decode().rstrip("=")
assert "+" in std_segment or "/" in std_segment
add("standardBase64Payload", "payload segment in standard base64 (+ or /), signed as written", sign_segments(b64(STD_HEADER.encode()), std_segment))
add("invalidCharacterInHeader", "\"*\" in the header segment, signed as written", sign_segments(b64(STD_HEADER.encode()) + "*", b64(good().encode())))

# Claims.
add("missingExp", "no exp", raw(STD_HEADER, compact({"sub": "alice"})))
add("expInThePast", "exp now-1", raw(STD_HEADER, good(exp=NOW - 1)))
add("expIsNow", "exp now", raw(STD_HEADER, good(exp=NOW)))
add("expString", "exp \"1700003600\" (a string)", raw(STD_HEADER, good(exp=str(NOW + 3600))))
add("expFraction", "exp now+10.5", raw(STD_HEADER, good(exp=NOW + 10.5)))
add("expBool", "exp true", raw(STD_HEADER, good(exp=True)))
add("expNull", "exp null", raw(STD_HEADER, good(exp=None)))
add("expOverflow", "exp 2^63", raw(STD_HEADER, good(exp=2**63)))
add("missingSub", "no sub", raw(STD_HEADER, compact({"exp": NOW + 3600})))
add("subEmpty", "sub \"\"", raw(STD_HEADER, good(sub="")))
add("subWithSpace", "sub \"al ice\"", raw(STD_HEADER, good(sub="al ice")))
add("subWithSlash", "sub \"alice/x\"", raw(STD_HEADER, good(sub="alice/x")))
add("subNonASCII", "sub \"\u00e1lice\"", raw(STD_HEADER, good(sub="\u00e1lice")))
add("subTooLong", "sub of 65 characters", raw(STD_HEADER, good(sub="u" * 65)))
add("subNumber", "sub 42", raw(STD_HEADER, good(sub=42)))
add("sidWithColon", "sid \"a:b\"", raw(STD_HEADER, good(sid="a:b")))
add("sidEmpty", "sid \"\"", raw(STD_HEADER, good(sid="")))
add("sidNumber", "sid 7", raw(STD_HEADER, good(sid=7)))

# Not JSON objects.
add("headerNotJSON", "header segment \"not json\"", raw("not json", good()))
add("headerArray", "header [\"HS256\"]", raw('["HS256"]', good()))
add("headerString", "header \"HS256\"", raw('"HS256"', good()))
add("payloadNotJSON", "payload segment \"alice\" (not JSON)", raw(STD_HEADER, "alice"))
add("payloadArray", "payload [\"alice\"]", raw(STD_HEADER, '["alice"]'))
add("payloadString", "payload \"alice\"", raw(STD_HEADER, '"alice"'))
add("payloadNumber", "payload 42", raw(STD_HEADER, "42"))
add("payloadNull", "payload null", raw(STD_HEADER, "null"))


# Size: payloads {"sub":"alice","exp":now+3600,"pad":"xxx…"} padded to make the whole token
# exactly MAX_TOKEN_LENGTH bytes, and the shortest longer one. Only the pad length and the
# signature are printed; the test rebuilds the rest.
def padded(n):
    return pyjwt({"sub": "alice", "exp": NOW + 3600, "pad": "x" * n})


sizes = {}
for n in range(5000, 7000):
    length = len(padded(n))
    if length == MAX_TOKEN_LENGTH and "fits" not in sizes:
        sizes["fits"] = n
    if length > MAX_TOKEN_LENGTH:
        sizes["over"] = n
        break
assert set(sizes) == {"fits", "over"}


def swift_string(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


# Tokens are single literals, longer than any line limit, hence the formatter exemption.
print("/// Produced by Fixtures/make_jwt_vectors.py with PyJWT %s." % jwt.__version__)
print("// swift-format-ignore")
print("private enum PyJWTVectors {")
print("    static let secret = Array(%s.utf8)" % swift_string(SECRET.decode()))
print("    static let otherSecret = Array(%s.utf8)" % swift_string(OTHER_SECRET.decode()))
print("    static let now: Int64 = %s" % f"{NOW:_}")
for name, comment, token in vectors:
    print()
    print("    /// %s" % comment)
    print("    static let %s = %s" % (name, swift_string(token)))
for label, n in sorted(sizes.items()):
    token = padded(n)
    head, _, signature = token.split(".")
    print()
    print("    /// PyJWT of {sub: alice, exp: now+3600, pad: %d \"x\"}: %d bytes" % (n, len(token)))
    print("    static let %sPadLength = %d" % (label, n))
    print("    static let %sSignature = %s" % (label, swift_string(signature)))
print("}")

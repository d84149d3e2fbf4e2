"""The verifier's cache and claim checks, with keys made here."""

import time

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from latchkey import InvalidToken, TokenVerifier


def keypair(kid):
    private = Ed25519PrivateKey.generate()
    public = jwt.algorithms.OKPAlgorithm.to_jwk(private.public_key(), as_dict=True)
    return private, {**public, "kid": kid, "alg": "EdDSA", "use": "sig"}


def sign(private, kid, **overrides):
    now = int(time.time())
    claims = {"iss": "iss", "aud": "aud", "sub": "u", "tid": "t", "nbf": now, "exp": now + 60}
    claims.update(overrides)
    return jwt.encode(claims, private, algorithm="EdDSA", headers={"kid": kid})


class Clock:
    now = 1000.0

    def __call__(self):
        return self.now


def verifier(keys, clock, **kwargs):
    return TokenVerifier(
        lambda: {"keys": list(keys)}, issuer="iss", audience="aud", clock=clock, **kwargs
    )


def test_unknown_kids_refetch_at_most_once_per_interval():
    clock = Clock()
    a, jwk_a = keypair("a")
    b, jwk_b = keypair("b")
    keys = [jwk_a]
    v = verifier(keys, clock, min_refetch_seconds=10)
    assert v.verify(sign(a, "a"))["sub"] == "u"
    assert v.fetches == 1
    # A forged kid: one refetch, then none until the interval has passed.
    with pytest.raises(InvalidToken):
        v.verify(sign(b, "forged"))
    keys.append(jwk_b)
    with pytest.raises(InvalidToken):
        v.verify(sign(b, "b"))
    assert v.fetches == 2
    clock.now += 10
    assert v.verify(sign(b, "b"))["sub"] == "u"
    assert v.fetches == 3


@pytest.mark.parametrize(
    "claims",
    [
        {"iss": "other"},
        {"aud": "other"},
        {"exp": int(time.time()) - 5},
        {"nbf": int(time.time()) + 60},
        {"tid": "other"},
    ],
)
def test_claims_are_checked(claims):
    a, jwk_a = keypair("a")
    v = verifier([jwk_a], Clock(), tenant_id="t")
    with pytest.raises(InvalidToken):
        v.verify(sign(a, "a", **claims))


def test_the_alg_is_pinned_to_the_key():
    _, jwk_a = keypair("a")
    v = verifier([jwk_a], Clock())
    forged = jwt.encode({"sub": "u"}, "s" * 32, algorithm="HS256", headers={"kid": "a"})
    with pytest.raises(InvalidToken):
        v.verify(forged)

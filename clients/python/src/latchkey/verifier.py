"""Verifies latchkey access tokens locally with the tenant's published keys."""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from typing import Any, Callable, Iterable

import jwt
from google.protobuf import json_format

ALGORITHMS = ("EdDSA", "ES256", "RS256")


class InvalidToken(Exception):
    """The token is not a valid access token for this verifier: bad signature,
    unknown key, wrong ``alg``, expired or not yet valid, or a wrong ``iss``,
    ``aud`` or ``tid``."""


def jwks_url(base_url: str, tenant_id: str | None = None) -> str:
    """The JWKS document of a tenant on latchkey's HTTP listener."""
    base = base_url.rstrip("/")
    if not tenant_id or tenant_id == "default":
        return f"{base}/.well-known/jwks.json"
    return f"{base}/tenants/{tenant_id}/.well-known/jwks.json"


class TokenVerifier:
    """Checks signature, ``alg`` (pinned to the key's), ``exp``/``nbf``,
    ``iss``, ``aud`` and, when ``tenant_id`` is given, ``tid``.

    The key set is cached for ``cache_seconds``; a token whose ``kid`` is not
    in the cache makes it refetch at once, but such refetches happen at most
    once per ``min_refetch_seconds`` (so forged ``kid``s cannot flood the
    server). Thread-safe. Build it with :meth:`from_http` or
    :meth:`from_client`, or pass any ``fetch`` returning a JWKS dict."""

    def __init__(
        self,
        fetch: Callable[[], dict],
        *,
        issuer: str,
        audience: str,
        tenant_id: str | None = None,
        algorithms: Iterable[str] = ALGORITHMS,
        leeway: float = 0,
        cache_seconds: float = 300,
        min_refetch_seconds: float = 10,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._fetch = fetch
        self.issuer = issuer
        self.audience = audience
        self.tenant_id = tenant_id
        self._algorithms = frozenset(algorithms)
        self._leeway = leeway
        self._cache_seconds = cache_seconds
        self._min_refetch = min_refetch_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at: float | None = None
        self._refetched_at: float | None = None
        self.fetches = 0

    @classmethod
    def from_http(cls, base_url: str, **kwargs: Any) -> "TokenVerifier":
        """Keys from ``/.well-known/jwks.json`` (or the tenant's JWKS path)."""
        url = jwks_url(base_url, kwargs.get("tenant_id"))

        def fetch() -> dict:
            with urllib.request.urlopen(url, timeout=10) as response:
                return json.load(response)

        return cls(fetch, **kwargs)

    @classmethod
    def from_client(cls, client: Any, **kwargs: Any) -> "TokenVerifier":
        """Keys from GetJwks over gRPC (a :class:`latchkey.Client`)."""
        tenant = kwargs.get("tenant_id") or ""

        def fetch() -> dict:
            reply = client.get_jwks(tenant_id=tenant)
            return {
                "keys": [
                    {k: v for k, v in json_format.MessageToDict(key).items() if v}
                    for key in reply.keys
                ]
            }

        return cls(fetch, **kwargs)

    def _load(self, now: float) -> None:
        keys = {}
        for jwk in self._fetch().get("keys", []):
            if jwk.get("use", "sig") != "sig" or not jwk.get("kid"):
                continue
            try:
                keys[jwk["kid"]] = jwt.PyJWK(jwk)
            except jwt.PyJWKError:
                continue  # a key type this verifier cannot use
        self._keys = keys
        self._fetched_at = now
        self.fetches += 1

    def _key(self, kid: str) -> jwt.PyJWK:
        with self._lock:
            now = self._clock()
            if self._fetched_at is None or now - self._fetched_at >= self._cache_seconds:
                self._load(now)
            elif kid not in self._keys and (
                self._refetched_at is None or now - self._refetched_at >= self._min_refetch
            ):
                self._refetched_at = now
                self._load(now)
            try:
                return self._keys[kid]
            except KeyError:
                raise InvalidToken(f"unknown signing key {kid!r}") from None

    def verify(self, token: str) -> dict[str, Any]:
        """The token's claims, or :class:`InvalidToken`."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as error:
            raise InvalidToken(str(error)) from None
        alg, kid = header.get("alg"), header.get("kid")
        if alg not in self._algorithms:
            raise InvalidToken(f"algorithm {alg!r} is not accepted")
        if not isinstance(kid, str):
            raise InvalidToken("the token names no signing key")
        key = self._key(kid)
        if key.algorithm_name != alg:
            raise InvalidToken(f"key {kid!r} signs with {key.algorithm_name}, not {alg}")
        try:
            claims = jwt.decode(
                token,
                key.key,
                algorithms=[alg],
                audience=self.audience,
                issuer=self.issuer,
                leeway=self._leeway,
                options={"require": ["exp", "nbf", "iss", "aud", "sub", "tid"]},
            )
        except jwt.PyJWTError as error:
            raise InvalidToken(str(error)) from None
        if self.tenant_id is not None and claims.get("tid") != self.tenant_id:
            raise InvalidToken(f"token of tenant {claims.get('tid')!r}, not {self.tenant_id!r}")
        return claims

"""The whole flow against the real server, through this package only."""

import subprocess
import time
import uuid

import grpc
import pytest

import latchkey
from latchkey import Client, InvalidToken, LatchkeyError, TokenVerifier


def wait_for(what, predicate, timeout=20.0):
    """Polls ``predicate`` (the server's outbox and key reload run on their
    own schedule; there is no event to await from outside)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


def address() -> str:
    return f"py-{uuid.uuid4().hex[:12]}@example.com"


def kid_of(token: str) -> str:
    import jwt

    return jwt.get_unverified_header(token)["kid"]


def test_the_whole_login_flow(server):
    client = Client(server.grpc, api_key=server.api_key)
    verifier = TokenVerifier.from_http(
        server.http, issuer=server.issuer, audience=server.audience, tenant_id="default"
    )
    user = address()

    started = client.start_auth(email=user)
    code = wait_for("the sign-in email", lambda: server.codes_for(user))[-1]
    assert len(code) == started.code_length

    wrong = "0" * len(code) if code != "0" * len(code) else "1" * len(code)
    with pytest.raises(LatchkeyError) as refused:
        client.verify(session_id=started.session_id, code=wrong)
    assert refused.value.reason == "CODE_INVALID"
    assert refused.value.code == grpc.StatusCode.UNAUTHENTICATED

    verified = client.verify(session_id=started.session_id, code=code)
    assert verified.new_user and verified.user.email == user

    refreshed = client.refresh(refresh_token=verified.refresh_token)
    claims = verifier.verify(refreshed.token)
    assert claims["sub"] == verified.user.id
    assert claims["sid"] == started.session_id
    assert claims["tid"] == "default"

    # A token of another audience is refused by the same verifier.
    strict = TokenVerifier.from_http(server.http, issuer=server.issuer, audience="someone-else")
    with pytest.raises(InvalidToken):
        strict.verify(refreshed.token)

    # Rotate the signing key: the server signs with a kid the verifier has
    # not seen, and the verifier refetches the key set once to verify it.
    old_kid = kid_of(refreshed.token)
    fetches = verifier.fetches
    subprocess.run(
        [server.binary, "keys", "rotate", "--activate-in", "0s"],
        check=True,
        capture_output=True,
    )
    current = {"refresh_token": refreshed.refresh_token}

    def signed_by_new_key():
        answer = client.refresh(refresh_token=current["refresh_token"])
        current["refresh_token"] = answer.refresh_token
        return answer if kid_of(answer.token) != old_kid else None

    rotated = wait_for("a token signed by the new key", signed_by_new_key)
    claims = verifier.verify(rotated.token)
    assert claims["sub"] == verified.user.id
    assert verifier.fetches == fetches + 1

    # Logout: the refresh token stops working.
    client.revoke(refresh_token=current["refresh_token"])
    with pytest.raises(LatchkeyError) as ended:
        client.refresh(refresh_token=current["refresh_token"])
    assert ended.value.reason == "REFRESH_TOKEN_INVALID"


def test_keys_over_grpc_verify_the_same_tokens(server):
    client = Client(server.grpc, api_key=server.api_key)
    user = address()
    started = client.start_auth(email=user)
    code = wait_for("the sign-in email", lambda: server.codes_for(user))[-1]
    token = client.verify(session_id=started.session_id, code=code).token
    verifier = TokenVerifier.from_client(
        client, issuer=server.issuer, audience=server.audience, tenant_id="default"
    )
    assert verifier.verify(token)["email"] == user
    # The token names its tenant: a verifier for another tenant refuses it.
    other = TokenVerifier(
        verifier._fetch, issuer=server.issuer, audience=server.audience, tenant_id="another"
    )
    with pytest.raises(InvalidToken):
        other.verify(token)


def test_a_rate_limited_call_says_when_to_retry(server):
    client = Client(server.grpc, api_key=server.api_key)
    user = address()
    with pytest.raises(LatchkeyError) as limited:
        for _ in range(10):  # the run allows 3 emails per address
            client.start_auth(email=user)
    assert limited.value.reason == "RATE_LIMITED"
    assert limited.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert limited.value.retry_after is not None and limited.value.retry_after > 0


def test_bad_input_and_bad_keys_are_decoded(server):
    with pytest.raises(LatchkeyError) as bad:
        Client(server.grpc, api_key=server.api_key).start_auth(email="not an address")
    assert bad.value.reason == "INVALID_ARGUMENT"
    assert bad.value.field == "email"

    with pytest.raises(LatchkeyError) as unknown_key:
        Client(server.grpc, api_key="lk_app_nope_nope").start_auth(email=address())
    assert unknown_key.value.reason == "UNAUTHENTICATED"
    # Every reason the server sends is a value of the proto's ErrorReason.
    for reason in ("CODE_INVALID", "RATE_LIMITED", "INVALID_ARGUMENT", "UNAUTHENTICATED"):
        assert latchkey.ErrorReason.Value("ERROR_REASON_" + reason)


def test_the_asyncio_client_raises_the_same_errors(server):
    import asyncio

    async def flow():
        async with latchkey.AsyncClient(server.grpc, api_key=server.api_key) as client:
            started = await client.start_auth(email=address())
            with pytest.raises(LatchkeyError) as refused:
                await client.verify(session_id=started.session_id, code="000000")
            return refused.value.reason

    assert asyncio.run(flow()) == "CODE_INVALID"

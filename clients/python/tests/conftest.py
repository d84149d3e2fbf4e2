"""The server under test: started by clients/run-e2e.sh (LATCHKEY_E2E_*)."""

import email
import email.policy
import os
import pathlib
import re

import pytest


class Server:
    def __init__(self) -> None:
        missing = [v for v in ("LATCHKEY_E2E_GRPC", "LATCHKEY_E2E_HTTP", "LATCHKEY_E2E_API_KEY", "LATCHKEY_E2E_MAILBOX") if v not in os.environ]
        if missing:
            pytest.fail(f"run these tests through clients/run-e2e.sh (missing {', '.join(missing)})")
        self.grpc = os.environ["LATCHKEY_E2E_GRPC"]
        self.http = os.environ["LATCHKEY_E2E_HTTP"]
        self.api_key = os.environ["LATCHKEY_E2E_API_KEY"]
        self.mailbox = pathlib.Path(os.environ["LATCHKEY_E2E_MAILBOX"])
        self.issuer = os.environ["LATCHKEY_ISSUER"]
        self.audience = os.environ["LATCHKEY_AUDIENCE"]
        self.binary = os.environ["LATCHKEY_BIN"]

    def codes_for(self, address: str) -> list[str]:
        """The codes emailed to ``address``, oldest first (dev mailbox)."""
        found = []
        for path in self.mailbox.glob("*.eml") if self.mailbox.is_dir() else ():
            message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
            if address not in str(message["To"]):
                continue
            match = re.match(r"(\d+) is your ", str(message["Subject"]))
            if match:
                found.append((path.stat().st_mtime_ns, match.group(1)))
        return [code for _, code in sorted(found)]


@pytest.fixture(scope="session")
def server() -> Server:
    return Server()

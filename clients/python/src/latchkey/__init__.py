"""latchkey client: passwordless email login over gRPC.

>>> from latchkey import Client
>>> client = Client("127.0.0.1:50051", api_key="lk_app_...")
>>> started = client.start_auth(email="ada@example.com")
"""

from latchkey.client import AsyncClient, Client
from latchkey.errors import LatchkeyError
from latchkey.v1.auth_pb2 import ErrorReason, Method
from latchkey.verifier import InvalidToken, TokenVerifier, jwks_url

__version__ = "0.1.0"

__all__ = [
    "AsyncClient",
    "Client",
    "ErrorReason",
    "InvalidToken",
    "LatchkeyError",
    "Method",
    "TokenVerifier",
    "jwks_url",
]

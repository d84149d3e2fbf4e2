"""gRPC clients with the API key set once and errors raised as LatchkeyError.

Every RPC of AuthService and AdminService is a snake_case method taking
either a request message or its fields as keyword arguments, and returning
the response message: ``client.start_auth(email="ada@example.com")``.
"""

from __future__ import annotations

import re
from typing import Any, Callable

import grpc
from google.protobuf import message_factory

from latchkey.errors import LatchkeyError
from latchkey.v1 import admin_pb2, admin_pb2_grpc, auth_pb2, auth_pb2_grpc


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _rpcs(file_descriptor, service: str, stub) -> dict[str, tuple[Any, type]]:
    methods = file_descriptor.services_by_name[service].methods
    return {
        _snake(m.name): (getattr(stub, m.name), message_factory.GetMessageClass(m.input_type))
        for m in methods
    }


def _request(request_type: type, request: Any, fields: dict) -> Any:
    if request is None:
        return request_type(**fields)
    if fields:
        raise TypeError("pass a request message or keyword fields, not both")
    return request


def _channel_args(target: str, credentials: grpc.ChannelCredentials | None, aio: bool):
    module = grpc.aio if aio else grpc
    if credentials is None:
        return module.insecure_channel(target)
    return module.secure_channel(target, credentials)


class Client:
    """A synchronous client. ``target`` is ``host:port`` of latchkey's gRPC
    listener; ``credentials`` (``grpc.ssl_channel_credentials()``) for TLS,
    none for plaintext. ``api_key`` goes with every call (GetJwks needs
    none; AdminService calls need an admin key)."""

    def __init__(
        self,
        target: str,
        api_key: str = "",
        *,
        credentials: grpc.ChannelCredentials | None = None,
        timeout: float | None = 10.0,
    ) -> None:
        self._channel = _channel_args(target, credentials, aio=False)
        self._metadata = (("authorization", f"Bearer {api_key}"),) if api_key else ()
        self._timeout = timeout
        self._rpcs = {
            **_rpcs(auth_pb2.DESCRIPTOR, "AuthService", auth_pb2_grpc.AuthServiceStub(self._channel)),
            **_rpcs(admin_pb2.DESCRIPTOR, "AdminService", admin_pb2_grpc.AdminServiceStub(self._channel)),
        }

    def __getattr__(self, name: str) -> Callable[..., Any]:
        try:
            rpc, request_type = self.__dict__["_rpcs"][name]
        except KeyError:
            raise AttributeError(name) from None

        def call(request: Any = None, **fields: Any) -> Any:
            try:
                return rpc(
                    _request(request_type, request, fields),
                    metadata=self._metadata,
                    timeout=self._timeout,
                )
            except grpc.RpcError as error:
                raise LatchkeyError.from_rpc_error(error) from None

        call.__name__ = name
        return call

    def __dir__(self):
        return [*super().__dir__(), *self._rpcs]

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncClient:
    """The same over ``grpc.aio``: every RPC method is a coroutine."""

    def __init__(
        self,
        target: str,
        api_key: str = "",
        *,
        credentials: grpc.ChannelCredentials | None = None,
        timeout: float | None = 10.0,
    ) -> None:
        self._channel = _channel_args(target, credentials, aio=True)
        self._metadata = (("authorization", f"Bearer {api_key}"),) if api_key else ()
        self._timeout = timeout
        self._rpcs = {
            **_rpcs(auth_pb2.DESCRIPTOR, "AuthService", auth_pb2_grpc.AuthServiceStub(self._channel)),
            **_rpcs(admin_pb2.DESCRIPTOR, "AdminService", admin_pb2_grpc.AdminServiceStub(self._channel)),
        }

    def __getattr__(self, name: str) -> Callable[..., Any]:
        try:
            rpc, request_type = self.__dict__["_rpcs"][name]
        except KeyError:
            raise AttributeError(name) from None

        async def call(request: Any = None, **fields: Any) -> Any:
            try:
                return await rpc(
                    _request(request_type, request, fields),
                    metadata=self._metadata,
                    timeout=self._timeout,
                )
            except grpc.RpcError as error:
                raise LatchkeyError.from_rpc_error(error) from None

        call.__name__ = name
        return call

    def __dir__(self):
        return [*super().__dir__(), *self._rpcs]

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

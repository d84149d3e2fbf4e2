"""One exception for every latchkey error, decoded from the gRPC status."""

from __future__ import annotations

import grpc
from google.rpc import error_details_pb2, status_pb2

_DETAILS_KEY = "grpc-status-details-bin"


class LatchkeyError(Exception):
    """A call failed. ``reason`` is the stable code (``CODE_INVALID``,
    ``RATE_LIMITED``, ... : the ``ErrorReason`` value names without their
    ``ERROR_REASON_`` prefix); ``retry_after`` is the wait in seconds a rate
    limit asks for; ``field`` is the request field at fault, for bad input.
    ``reason`` is empty when the status carries no ErrorInfo (for example a
    connection failure: ``code`` is then UNAVAILABLE)."""

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        reason: str = "",
        retry_after: float | None = None,
        field: str | None = None,
    ) -> None:
        super().__init__(f"{reason or code.name}: {message}")
        self.code = code
        self.message = message
        self.reason = reason
        self.retry_after = retry_after
        self.field = field

    @classmethod
    def from_rpc_error(cls, error: grpc.RpcError) -> "LatchkeyError":
        """Decodes ErrorInfo, RetryInfo and BadRequest from the status details."""
        code = error.code()
        message = error.details() or ""
        reason, retry_after, field = "", None, None
        for key, value in error.trailing_metadata() or ():
            if key != _DETAILS_KEY:
                continue
            for detail in status_pb2.Status.FromString(value).details:
                if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                    info = error_details_pb2.ErrorInfo()
                    detail.Unpack(info)
                    reason = info.reason
                    field = info.metadata.get("field") or field
                elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
                    retry = error_details_pb2.RetryInfo()
                    detail.Unpack(retry)
                    retry_after = retry.retry_delay.ToTimedelta().total_seconds()
                elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                    bad = error_details_pb2.BadRequest()
                    detail.Unpack(bad)
                    if bad.field_violations:
                        field = bad.field_violations[0].field
        return cls(code, message, reason, retry_after, field)

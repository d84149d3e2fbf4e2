import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Method(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    METHOD_UNSPECIFIED: _ClassVar[Method]
    METHOD_CODE: _ClassVar[Method]
    METHOD_LINK: _ClassVar[Method]
    METHOD_CODE_AND_LINK: _ClassVar[Method]

class SessionState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SESSION_STATE_UNSPECIFIED: _ClassVar[SessionState]
    SESSION_STATE_ACTIVE: _ClassVar[SessionState]
    SESSION_STATE_ENDED: _ClassVar[SessionState]
    SESSION_STATE_EXPIRED: _ClassVar[SessionState]

class ErrorReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ERROR_REASON_UNSPECIFIED: _ClassVar[ErrorReason]
    ERROR_REASON_INVALID_ARGUMENT: _ClassVar[ErrorReason]
    ERROR_REASON_CODE_INVALID: _ClassVar[ErrorReason]
    ERROR_REASON_TOO_MANY_ATTEMPTS: _ClassVar[ErrorReason]
    ERROR_REASON_REFRESH_TOKEN_INVALID: _ClassVar[ErrorReason]
    ERROR_REASON_REFRESH_TOKEN_REUSED: _ClassVar[ErrorReason]
    ERROR_REASON_VALIDATION_URL_NOT_ALLOWED: _ClassVar[ErrorReason]
    ERROR_REASON_RATE_LIMITED: _ClassVar[ErrorReason]
    ERROR_REASON_IDEMPOTENCY_KEY_REUSED: _ClassVar[ErrorReason]
    ERROR_REASON_UNAUTHENTICATED: _ClassVar[ErrorReason]
    ERROR_REASON_PERMISSION_DENIED: _ClassVar[ErrorReason]
    ERROR_REASON_NOT_FOUND: _ClassVar[ErrorReason]
    ERROR_REASON_ALREADY_EXISTS: _ClassVar[ErrorReason]
    ERROR_REASON_UNAVAILABLE: _ClassVar[ErrorReason]
    ERROR_REASON_INTERNAL: _ClassVar[ErrorReason]
    ERROR_REASON_ACCESS_TOKEN_INVALID: _ClassVar[ErrorReason]
    ERROR_REASON_PASSKEYS_NOT_CONFIGURED: _ClassVar[ErrorReason]
    ERROR_REASON_PASSKEY_CEREMONY_INVALID: _ClassVar[ErrorReason]
    ERROR_REASON_PASSKEY_INVALID: _ClassVar[ErrorReason]
    ERROR_REASON_PASSKEY_COUNTER_REGRESSED: _ClassVar[ErrorReason]
    ERROR_REASON_PASSKEY_NOT_FOUND: _ClassVar[ErrorReason]
    ERROR_REASON_USER_DISABLED: _ClassVar[ErrorReason]
METHOD_UNSPECIFIED: Method
METHOD_CODE: Method
METHOD_LINK: Method
METHOD_CODE_AND_LINK: Method
SESSION_STATE_UNSPECIFIED: SessionState
SESSION_STATE_ACTIVE: SessionState
SESSION_STATE_ENDED: SessionState
SESSION_STATE_EXPIRED: SessionState
ERROR_REASON_UNSPECIFIED: ErrorReason
ERROR_REASON_INVALID_ARGUMENT: ErrorReason
ERROR_REASON_CODE_INVALID: ErrorReason
ERROR_REASON_TOO_MANY_ATTEMPTS: ErrorReason
ERROR_REASON_REFRESH_TOKEN_INVALID: ErrorReason
ERROR_REASON_REFRESH_TOKEN_REUSED: ErrorReason
ERROR_REASON_VALIDATION_URL_NOT_ALLOWED: ErrorReason
ERROR_REASON_RATE_LIMITED: ErrorReason
ERROR_REASON_IDEMPOTENCY_KEY_REUSED: ErrorReason
ERROR_REASON_UNAUTHENTICATED: ErrorReason
ERROR_REASON_PERMISSION_DENIED: ErrorReason
ERROR_REASON_NOT_FOUND: ErrorReason
ERROR_REASON_ALREADY_EXISTS: ErrorReason
ERROR_REASON_UNAVAILABLE: ErrorReason
ERROR_REASON_INTERNAL: ErrorReason
ERROR_REASON_ACCESS_TOKEN_INVALID: ErrorReason
ERROR_REASON_PASSKEYS_NOT_CONFIGURED: ErrorReason
ERROR_REASON_PASSKEY_CEREMONY_INVALID: ErrorReason
ERROR_REASON_PASSKEY_INVALID: ErrorReason
ERROR_REASON_PASSKEY_COUNTER_REGRESSED: ErrorReason
ERROR_REASON_PASSKEY_NOT_FOUND: ErrorReason
ERROR_REASON_USER_DISABLED: ErrorReason

class ClientInfo(_message.Message):
    __slots__ = ("ip", "user_agent")
    IP_FIELD_NUMBER: _ClassVar[int]
    USER_AGENT_FIELD_NUMBER: _ClassVar[int]
    ip: str
    user_agent: str
    def __init__(self, ip: _Optional[str] = ..., user_agent: _Optional[str] = ...) -> None: ...

class StartAuthRequest(_message.Message):
    __slots__ = ("email", "method", "validation_url", "client", "locale", "idempotency_key")
    EMAIL_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    VALIDATION_URL_FIELD_NUMBER: _ClassVar[int]
    CLIENT_FIELD_NUMBER: _ClassVar[int]
    LOCALE_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    email: str
    method: Method
    validation_url: str
    client: ClientInfo
    locale: str
    idempotency_key: str
    def __init__(self, email: _Optional[str] = ..., method: _Optional[_Union[Method, str]] = ..., validation_url: _Optional[str] = ..., client: _Optional[_Union[ClientInfo, _Mapping]] = ..., locale: _Optional[str] = ..., idempotency_key: _Optional[str] = ...) -> None: ...

class StartAuthResponse(_message.Message):
    __slots__ = ("session_id", "expires_at", "code_length")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    CODE_LENGTH_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    expires_at: _timestamp_pb2.Timestamp
    code_length: int
    def __init__(self, session_id: _Optional[str] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., code_length: _Optional[int] = ...) -> None: ...

class VerifyRequest(_message.Message):
    __slots__ = ("session_id", "code", "link_token")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    LINK_TOKEN_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    code: str
    link_token: str
    def __init__(self, session_id: _Optional[str] = ..., code: _Optional[str] = ..., link_token: _Optional[str] = ...) -> None: ...

class VerifyResponse(_message.Message):
    __slots__ = ("token", "token_type", "expires_in", "refresh_token", "user", "session_id", "new_user")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    TOKEN_TYPE_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_IN_FIELD_NUMBER: _ClassVar[int]
    REFRESH_TOKEN_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    NEW_USER_FIELD_NUMBER: _ClassVar[int]
    token: str
    token_type: str
    expires_in: int
    refresh_token: str
    user: User
    session_id: str
    new_user: bool
    def __init__(self, token: _Optional[str] = ..., token_type: _Optional[str] = ..., expires_in: _Optional[int] = ..., refresh_token: _Optional[str] = ..., user: _Optional[_Union[User, _Mapping]] = ..., session_id: _Optional[str] = ..., new_user: _Optional[bool] = ...) -> None: ...

class User(_message.Message):
    __slots__ = ("id", "email", "created_at", "updated_at", "disabled_at", "app_metadata")
    ID_FIELD_NUMBER: _ClassVar[int]
    EMAIL_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    DISABLED_AT_FIELD_NUMBER: _ClassVar[int]
    APP_METADATA_FIELD_NUMBER: _ClassVar[int]
    id: str
    email: str
    created_at: _timestamp_pb2.Timestamp
    updated_at: _timestamp_pb2.Timestamp
    disabled_at: _timestamp_pb2.Timestamp
    app_metadata: str
    def __init__(self, id: _Optional[str] = ..., email: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., disabled_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., app_metadata: _Optional[str] = ...) -> None: ...

class RefreshRequest(_message.Message):
    __slots__ = ("refresh_token",)
    REFRESH_TOKEN_FIELD_NUMBER: _ClassVar[int]
    refresh_token: str
    def __init__(self, refresh_token: _Optional[str] = ...) -> None: ...

class RefreshResponse(_message.Message):
    __slots__ = ("token", "token_type", "expires_in", "refresh_token")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    TOKEN_TYPE_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_IN_FIELD_NUMBER: _ClassVar[int]
    REFRESH_TOKEN_FIELD_NUMBER: _ClassVar[int]
    token: str
    token_type: str
    expires_in: int
    refresh_token: str
    def __init__(self, token: _Optional[str] = ..., token_type: _Optional[str] = ..., expires_in: _Optional[int] = ..., refresh_token: _Optional[str] = ...) -> None: ...

class RevokeRequest(_message.Message):
    __slots__ = ("refresh_token", "session_id")
    REFRESH_TOKEN_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    refresh_token: str
    session_id: str
    def __init__(self, refresh_token: _Optional[str] = ..., session_id: _Optional[str] = ...) -> None: ...

class RevokeResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetJwksRequest(_message.Message):
    __slots__ = ("tenant_id",)
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    def __init__(self, tenant_id: _Optional[str] = ...) -> None: ...

class GetJwksResponse(_message.Message):
    __slots__ = ("keys",)
    KEYS_FIELD_NUMBER: _ClassVar[int]
    keys: _containers.RepeatedCompositeFieldContainer[Jwk]
    def __init__(self, keys: _Optional[_Iterable[_Union[Jwk, _Mapping]]] = ...) -> None: ...

class Jwk(_message.Message):
    __slots__ = ("kty", "crv", "x", "y", "n", "e", "kid", "alg", "use")
    KTY_FIELD_NUMBER: _ClassVar[int]
    CRV_FIELD_NUMBER: _ClassVar[int]
    X_FIELD_NUMBER: _ClassVar[int]
    Y_FIELD_NUMBER: _ClassVar[int]
    N_FIELD_NUMBER: _ClassVar[int]
    E_FIELD_NUMBER: _ClassVar[int]
    KID_FIELD_NUMBER: _ClassVar[int]
    ALG_FIELD_NUMBER: _ClassVar[int]
    USE_FIELD_NUMBER: _ClassVar[int]
    kty: str
    crv: str
    x: str
    y: str
    n: str
    e: str
    kid: str
    alg: str
    use: str
    def __init__(self, kty: _Optional[str] = ..., crv: _Optional[str] = ..., x: _Optional[str] = ..., y: _Optional[str] = ..., n: _Optional[str] = ..., e: _Optional[str] = ..., kid: _Optional[str] = ..., alg: _Optional[str] = ..., use: _Optional[str] = ...) -> None: ...

class ResendCodeRequest(_message.Message):
    __slots__ = ("session_id",)
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    def __init__(self, session_id: _Optional[str] = ...) -> None: ...

class ResendCodeResponse(_message.Message):
    __slots__ = ("session_id", "expires_at", "code_length")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    CODE_LENGTH_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    expires_at: _timestamp_pb2.Timestamp
    code_length: int
    def __init__(self, session_id: _Optional[str] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., code_length: _Optional[int] = ...) -> None: ...

class ListSessionsRequest(_message.Message):
    __slots__ = ("user_id",)
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    def __init__(self, user_id: _Optional[str] = ...) -> None: ...

class ListSessionsResponse(_message.Message):
    __slots__ = ("sessions",)
    SESSIONS_FIELD_NUMBER: _ClassVar[int]
    sessions: _containers.RepeatedCompositeFieldContainer[Session]
    def __init__(self, sessions: _Optional[_Iterable[_Union[Session, _Mapping]]] = ...) -> None: ...

class Session(_message.Message):
    __slots__ = ("id", "state", "end_reason", "created_at", "verified_at", "last_refreshed_at", "expires_at", "ended_at", "client")
    ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    END_REASON_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    VERIFIED_AT_FIELD_NUMBER: _ClassVar[int]
    LAST_REFRESHED_AT_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    ENDED_AT_FIELD_NUMBER: _ClassVar[int]
    CLIENT_FIELD_NUMBER: _ClassVar[int]
    id: str
    state: SessionState
    end_reason: str
    created_at: _timestamp_pb2.Timestamp
    verified_at: _timestamp_pb2.Timestamp
    last_refreshed_at: _timestamp_pb2.Timestamp
    expires_at: _timestamp_pb2.Timestamp
    ended_at: _timestamp_pb2.Timestamp
    client: ClientInfo
    def __init__(self, id: _Optional[str] = ..., state: _Optional[_Union[SessionState, str]] = ..., end_reason: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., verified_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_refreshed_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., ended_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., client: _Optional[_Union[ClientInfo, _Mapping]] = ...) -> None: ...

class RevokeSessionRequest(_message.Message):
    __slots__ = ("session_id",)
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    def __init__(self, session_id: _Optional[str] = ...) -> None: ...

class RevokeSessionResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class RevokeAllSessionsRequest(_message.Message):
    __slots__ = ("user_id", "except_session_id")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    EXCEPT_SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    except_session_id: str
    def __init__(self, user_id: _Optional[str] = ..., except_session_id: _Optional[str] = ...) -> None: ...

class RevokeAllSessionsResponse(_message.Message):
    __slots__ = ("revoked",)
    REVOKED_FIELD_NUMBER: _ClassVar[int]
    revoked: int
    def __init__(self, revoked: _Optional[int] = ...) -> None: ...

class IntrospectTokenRequest(_message.Message):
    __slots__ = ("token",)
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    token: str
    def __init__(self, token: _Optional[str] = ...) -> None: ...

class IntrospectTokenResponse(_message.Message):
    __slots__ = ("active", "claims", "session_ended")
    ACTIVE_FIELD_NUMBER: _ClassVar[int]
    CLAIMS_FIELD_NUMBER: _ClassVar[int]
    SESSION_ENDED_FIELD_NUMBER: _ClassVar[int]
    active: bool
    claims: TokenClaims
    session_ended: bool
    def __init__(self, active: _Optional[bool] = ..., claims: _Optional[_Union[TokenClaims, _Mapping]] = ..., session_ended: _Optional[bool] = ...) -> None: ...

class TokenClaims(_message.Message):
    __slots__ = ("iss", "aud", "sub", "email", "sid", "tid", "iat", "nbf", "exp", "jti", "app_metadata")
    ISS_FIELD_NUMBER: _ClassVar[int]
    AUD_FIELD_NUMBER: _ClassVar[int]
    SUB_FIELD_NUMBER: _ClassVar[int]
    EMAIL_FIELD_NUMBER: _ClassVar[int]
    SID_FIELD_NUMBER: _ClassVar[int]
    TID_FIELD_NUMBER: _ClassVar[int]
    IAT_FIELD_NUMBER: _ClassVar[int]
    NBF_FIELD_NUMBER: _ClassVar[int]
    EXP_FIELD_NUMBER: _ClassVar[int]
    JTI_FIELD_NUMBER: _ClassVar[int]
    APP_METADATA_FIELD_NUMBER: _ClassVar[int]
    iss: str
    aud: str
    sub: str
    email: str
    sid: str
    tid: str
    iat: _timestamp_pb2.Timestamp
    nbf: _timestamp_pb2.Timestamp
    exp: _timestamp_pb2.Timestamp
    jti: str
    app_metadata: str
    def __init__(self, iss: _Optional[str] = ..., aud: _Optional[str] = ..., sub: _Optional[str] = ..., email: _Optional[str] = ..., sid: _Optional[str] = ..., tid: _Optional[str] = ..., iat: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., nbf: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., exp: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., jti: _Optional[str] = ..., app_metadata: _Optional[str] = ...) -> None: ...

class StartEmailChangeRequest(_message.Message):
    __slots__ = ("user_id", "new_email", "method", "validation_url", "client", "locale")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    NEW_EMAIL_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    VALIDATION_URL_FIELD_NUMBER: _ClassVar[int]
    CLIENT_FIELD_NUMBER: _ClassVar[int]
    LOCALE_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    new_email: str
    method: Method
    validation_url: str
    client: ClientInfo
    locale: str
    def __init__(self, user_id: _Optional[str] = ..., new_email: _Optional[str] = ..., method: _Optional[_Union[Method, str]] = ..., validation_url: _Optional[str] = ..., client: _Optional[_Union[ClientInfo, _Mapping]] = ..., locale: _Optional[str] = ...) -> None: ...

class StartEmailChangeResponse(_message.Message):
    __slots__ = ("session_id", "expires_at", "code_length")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    CODE_LENGTH_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    expires_at: _timestamp_pb2.Timestamp
    code_length: int
    def __init__(self, session_id: _Optional[str] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., code_length: _Optional[int] = ...) -> None: ...

class AuthServiceGetUserRequest(_message.Message):
    __slots__ = ("user_id", "email")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    EMAIL_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    email: str
    def __init__(self, user_id: _Optional[str] = ..., email: _Optional[str] = ...) -> None: ...

class AuthServiceGetUserResponse(_message.Message):
    __slots__ = ("user",)
    USER_FIELD_NUMBER: _ClassVar[int]
    user: User
    def __init__(self, user: _Optional[_Union[User, _Mapping]] = ...) -> None: ...

class AuthServiceUpdateUserRequest(_message.Message):
    __slots__ = ("user_id", "app_metadata")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    APP_METADATA_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    app_metadata: str
    def __init__(self, user_id: _Optional[str] = ..., app_metadata: _Optional[str] = ...) -> None: ...

class AuthServiceUpdateUserResponse(_message.Message):
    __slots__ = ("user",)
    USER_FIELD_NUMBER: _ClassVar[int]
    user: User
    def __init__(self, user: _Optional[_Union[User, _Mapping]] = ...) -> None: ...

class StartPasskeyRegistrationRequest(_message.Message):
    __slots__ = ("access_token",)
    ACCESS_TOKEN_FIELD_NUMBER: _ClassVar[int]
    access_token: str
    def __init__(self, access_token: _Optional[str] = ...) -> None: ...

class StartPasskeyRegistrationResponse(_message.Message):
    __slots__ = ("ceremony_id", "options_json", "expires_at")
    CEREMONY_ID_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_JSON_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    ceremony_id: str
    options_json: str
    expires_at: _timestamp_pb2.Timestamp
    def __init__(self, ceremony_id: _Optional[str] = ..., options_json: _Optional[str] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class FinishPasskeyRegistrationRequest(_message.Message):
    __slots__ = ("access_token", "ceremony_id", "credential_json", "name")
    ACCESS_TOKEN_FIELD_NUMBER: _ClassVar[int]
    CEREMONY_ID_FIELD_NUMBER: _ClassVar[int]
    CREDENTIAL_JSON_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    access_token: str
    ceremony_id: str
    credential_json: str
    name: str
    def __init__(self, access_token: _Optional[str] = ..., ceremony_id: _Optional[str] = ..., credential_json: _Optional[str] = ..., name: _Optional[str] = ...) -> None: ...

class FinishPasskeyRegistrationResponse(_message.Message):
    __slots__ = ("passkey",)
    PASSKEY_FIELD_NUMBER: _ClassVar[int]
    passkey: Passkey
    def __init__(self, passkey: _Optional[_Union[Passkey, _Mapping]] = ...) -> None: ...

class Passkey(_message.Message):
    __slots__ = ("id", "name", "credential_id", "created_at", "last_used_at", "backup_eligible", "backed_up", "counter_regressed_at")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    CREDENTIAL_ID_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    LAST_USED_AT_FIELD_NUMBER: _ClassVar[int]
    BACKUP_ELIGIBLE_FIELD_NUMBER: _ClassVar[int]
    BACKED_UP_FIELD_NUMBER: _ClassVar[int]
    COUNTER_REGRESSED_AT_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    credential_id: str
    created_at: _timestamp_pb2.Timestamp
    last_used_at: _timestamp_pb2.Timestamp
    backup_eligible: bool
    backed_up: bool
    counter_regressed_at: _timestamp_pb2.Timestamp
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., credential_id: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_used_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., backup_eligible: _Optional[bool] = ..., backed_up: _Optional[bool] = ..., counter_regressed_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class StartPasskeyLoginRequest(_message.Message):
    __slots__ = ("email",)
    EMAIL_FIELD_NUMBER: _ClassVar[int]
    email: str
    def __init__(self, email: _Optional[str] = ...) -> None: ...

class StartPasskeyLoginResponse(_message.Message):
    __slots__ = ("ceremony_id", "options_json", "expires_at")
    CEREMONY_ID_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_JSON_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    ceremony_id: str
    options_json: str
    expires_at: _timestamp_pb2.Timestamp
    def __init__(self, ceremony_id: _Optional[str] = ..., options_json: _Optional[str] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class FinishPasskeyLoginRequest(_message.Message):
    __slots__ = ("ceremony_id", "credential_json", "client")
    CEREMONY_ID_FIELD_NUMBER: _ClassVar[int]
    CREDENTIAL_JSON_FIELD_NUMBER: _ClassVar[int]
    CLIENT_FIELD_NUMBER: _ClassVar[int]
    ceremony_id: str
    credential_json: str
    client: ClientInfo
    def __init__(self, ceremony_id: _Optional[str] = ..., credential_json: _Optional[str] = ..., client: _Optional[_Union[ClientInfo, _Mapping]] = ...) -> None: ...

class FinishPasskeyLoginResponse(_message.Message):
    __slots__ = ("token", "token_type", "expires_in", "refresh_token", "user", "session_id", "new_user")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    TOKEN_TYPE_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_IN_FIELD_NUMBER: _ClassVar[int]
    REFRESH_TOKEN_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    NEW_USER_FIELD_NUMBER: _ClassVar[int]
    token: str
    token_type: str
    expires_in: int
    refresh_token: str
    user: User
    session_id: str
    new_user: bool
    def __init__(self, token: _Optional[str] = ..., token_type: _Optional[str] = ..., expires_in: _Optional[int] = ..., refresh_token: _Optional[str] = ..., user: _Optional[_Union[User, _Mapping]] = ..., session_id: _Optional[str] = ..., new_user: _Optional[bool] = ...) -> None: ...

class ListPasskeysRequest(_message.Message):
    __slots__ = ("access_token",)
    ACCESS_TOKEN_FIELD_NUMBER: _ClassVar[int]
    access_token: str
    def __init__(self, access_token: _Optional[str] = ...) -> None: ...

class ListPasskeysResponse(_message.Message):
    __slots__ = ("passkeys",)
    PASSKEYS_FIELD_NUMBER: _ClassVar[int]
    passkeys: _containers.RepeatedCompositeFieldContainer[Passkey]
    def __init__(self, passkeys: _Optional[_Iterable[_Union[Passkey, _Mapping]]] = ...) -> None: ...

class DeletePasskeyRequest(_message.Message):
    __slots__ = ("access_token", "passkey_id")
    ACCESS_TOKEN_FIELD_NUMBER: _ClassVar[int]
    PASSKEY_ID_FIELD_NUMBER: _ClassVar[int]
    access_token: str
    passkey_id: str
    def __init__(self, access_token: _Optional[str] = ..., passkey_id: _Optional[str] = ...) -> None: ...

class DeletePasskeyResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

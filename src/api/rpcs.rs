//! The AuthService RPCs that act for an authenticated caller, declared once.
//! The gRPC service ([`super::grpc`]), the gateway's routes
//! ([`super::rest::router`]), its OpenAPI operations ([`super::openapi`]) and
//! the integration tests' client are all generated from [`crate::gateway_rpcs!`].

/// The table of AuthService RPCs served on both transports behind an app API
/// key. `gateway_rpcs!(callback)` expands to `callback! { rows }`, one row
/// per RPC:
///
/// ```text
/// method Rpc(Request) -> Response at "/http/path" also [statuses] $(with hook)?;
/// ```
///
/// - `method`: the snake-case name of the [`crate::api::Api`] method, of the
///   tonic service method and of the test client's method;
/// - `Rpc`, `Request`, `Response`: the RPC and its messages in
///   `proto/latchkey/v1/auth.proto` (types in [`crate::proto`]);
/// - `"/http/path"`: the gateway route (always POST, JSON body);
/// - `also [...]`: the HTTP error statuses it may answer besides
///   [`crate::api::rpcs::COMMON_ERRORS`] (for the OpenAPI document);
/// - `with hook`: an HTTP-only step `fn(&HeaderMap, Request) ->
///   Result<Request, AuthError>` run on the decoded body before the call.
///
/// GetJwks is not here: it is public and has routes of its own.
#[macro_export]
macro_rules! gateway_rpcs {
    ($callback:ident) => {
        $callback! {
            start_auth StartAuth(StartAuthRequest) -> StartAuthResponse at "/auth/start"
                also [422, 429] with $crate::api::rest::idempotency_key_header;
            verify Verify(VerifyRequest) -> VerifyResponse at "/auth/verify" also [409, 429];
            refresh Refresh(RefreshRequest) -> RefreshResponse at "/auth/refresh" also [];
            revoke Revoke(RevokeRequest) -> RevokeResponse at "/auth/revoke" also [];
            resend_code ResendCode(ResendCodeRequest) -> ResendCodeResponse at "/auth/resend"
                also [429];
            list_sessions ListSessions(ListSessionsRequest) -> ListSessionsResponse
                at "/sessions/list" also [];
            revoke_session RevokeSession(RevokeSessionRequest) -> RevokeSessionResponse
                at "/sessions/revoke" also [];
            revoke_all_sessions RevokeAllSessions(RevokeAllSessionsRequest)
                -> RevokeAllSessionsResponse at "/sessions/revoke-all" also [];
            introspect_token IntrospectToken(IntrospectTokenRequest) -> IntrospectTokenResponse
                at "/tokens/introspect" also [];
            start_passkey_registration StartPasskeyRegistration(StartPasskeyRegistrationRequest)
                -> StartPasskeyRegistrationResponse at "/passkeys/register/start" also [409];
            finish_passkey_registration FinishPasskeyRegistration(FinishPasskeyRegistrationRequest)
                -> FinishPasskeyRegistrationResponse at "/passkeys/register/finish" also [409];
            start_passkey_login StartPasskeyLogin(StartPasskeyLoginRequest)
                -> StartPasskeyLoginResponse at "/passkeys/login/start" also [409];
            finish_passkey_login FinishPasskeyLogin(FinishPasskeyLoginRequest)
                -> FinishPasskeyLoginResponse at "/passkeys/login/finish" also [409, 429];
            list_passkeys ListPasskeys(ListPasskeysRequest) -> ListPasskeysResponse
                at "/passkeys/list" also [];
            delete_passkey DeletePasskey(DeletePasskeyRequest) -> DeletePasskeyResponse
                at "/passkeys/delete" also [404];
            get_user GetUser(AuthServiceGetUserRequest) -> AuthServiceGetUserResponse
                at "/users/get" also [404];
            update_user UpdateUser(AuthServiceUpdateUserRequest) -> AuthServiceUpdateUserResponse
                at "/users/update" also [404];
            start_email_change StartEmailChange(StartEmailChangeRequest) -> StartEmailChangeResponse
                at "/users/change-email" also [404, 409, 429];
        }
    };
}

/// What every gateway RPC may answer besides success: bad input, a missing
/// or wrong key, an admin key, a body too large or not JSON, a bug, no
/// database.
pub const COMMON_ERRORS: &[u16] = &[400, 401, 403, 413, 415, 500, 503];

/// One row of [`crate::gateway_rpcs!`] as data.
#[derive(Clone, Copy, Debug)]
pub struct GatewayRpc {
    /// The RPC's name in the proto (`StartAuth`).
    pub rpc: &'static str,
    /// Its gateway route (POST).
    pub path: &'static str,
    /// The error statuses it may answer besides [`COMMON_ERRORS`].
    pub also: &'static [u16],
}

macro_rules! rows_as_data {
    ($($method:ident $rpc:ident($req:ident) -> $resp:ident at $path:literal
        also [$($status:literal),*] $(with $hook:path)?;)+) => {
        /// Every row of [`crate::gateway_rpcs!`], in its order.
        pub const GATEWAY_RPCS: &[GatewayRpc] = &[$(GatewayRpc {
            rpc: stringify!($rpc),
            path: $path,
            also: &[$($status),*],
        }),+];
    };
}

gateway_rpcs!(rows_as_data);

impl GatewayRpc {
    /// The row whose route is `path`.
    pub fn at(path: &str) -> Option<&'static Self> {
        GATEWAY_RPCS.iter().find(|r| r.path == path)
    }

    /// Every error status it may answer, ascending.
    pub fn errors(&self) -> Vec<u16> {
        let mut all: Vec<u16> = COMMON_ERRORS.iter().chain(self.also).copied().collect();
        all.sort_unstable();
        all.dedup();
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rpc_of_the_service_but_get_jwks_is_in_the_table_once() {
        use prost::Message;
        let set = prost_types::FileDescriptorSet::decode(crate::proto::FILE_DESCRIPTOR_SET)
            .expect("embedded descriptors");
        let mut in_proto: Vec<&str> = set
            .file
            .iter()
            .flat_map(|f| &f.service)
            .filter(|s| s.name() == "AuthService")
            .flat_map(|s| &s.method)
            .map(|m| m.name())
            .filter(|name| *name != "GetJwks")
            .collect();
        let mut in_table: Vec<&str> = GATEWAY_RPCS.iter().map(|r| r.rpc).collect();
        in_proto.sort_unstable();
        in_table.sort_unstable();
        assert_eq!(in_table, in_proto);
        let mut paths: Vec<&str> = GATEWAY_RPCS.iter().map(|r| r.path).collect();
        paths.sort_unstable();
        paths.dedup();
        assert_eq!(paths.len(), GATEWAY_RPCS.len(), "two RPCs share a path");
    }

    #[test]
    fn errors_are_the_common_ones_plus_the_row_s_own_in_order() {
        let start = GatewayRpc::at("/auth/start").unwrap();
        assert_eq!(start.rpc, "StartAuth");
        assert_eq!(
            start.errors(),
            [400, 401, 403, 413, 415, 422, 429, 500, 503]
        );
        assert_eq!(
            GatewayRpc::at("/auth/refresh").unwrap().errors(),
            COMMON_ERRORS
        );
        assert!(GatewayRpc::at("/healthz").is_none());
    }
}

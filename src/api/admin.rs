//! The gRPC AdminService over [`Admin`]: every call needs an admin key.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::{
    grpc::{Authenticated, MAX_REQUEST_BYTES, reply, status, tenant},
    timestamp, to_completion, user_to_proto,
};
use crate::{
    auth::{
        admin::{Admin, ApiKeyInfo},
        apikeys::Scope,
        tenants::{SignupPolicy, Tenant, TenantSettings},
        users::UserFilter,
    },
    error::AuthError,
    proto::{self, admin_service_server},
};

pub struct GrpcAdmin {
    admin: Admin,
}

impl GrpcAdmin {
    /// The tonic service, behind the admin-key check.
    pub fn server(
        admin: Admin,
        api: super::Api,
    ) -> Authenticated<admin_service_server::AdminServiceServer<Self>> {
        let server = admin_service_server::AdminServiceServer::new(Self { admin })
            .max_decoding_message_size(MAX_REQUEST_BYTES);
        Authenticated::new(server, api, Scope::Admin, &[])
    }
}

/// Admin calls only need to know an admin key was checked.
fn admin_key<T>(request: &Request<T>) -> Result<(), Status> {
    tenant(request).map(|_| ())
}

#[tonic::async_trait]
impl admin_service_server::AdminService for GrpcAdmin {
    async fn create_tenant(
        &self,
        request: Request<proto::CreateTenantRequest>,
    ) -> Result<Response<proto::CreateTenantResponse>, Status> {
        admin_key(&request)?;
        let req = request.into_inner();
        let settings = settings_from_proto(req.settings.unwrap_or_default());
        let admin = self.admin.clone();
        reply(
            to_completion(async move {
                admin
                    .create_tenant(&req.tenant_id, &req.name, settings)
                    .await
            })
            .await
            .map(|t| tenant_message!(proto::CreateTenantResponse, &t)),
        )
    }

    async fn list_tenants(
        &self,
        request: Request<proto::ListTenantsRequest>,
    ) -> Result<Response<proto::ListTenantsResponse>, Status> {
        admin_key(&request)?;
        reply(
            self.admin
                .list_tenants()
                .await
                .map(|all| proto::ListTenantsResponse {
                    tenants: all.iter().map(tenant_to_proto).collect(),
                }),
        )
    }

    async fn get_tenant(
        &self,
        request: Request<proto::GetTenantRequest>,
    ) -> Result<Response<proto::GetTenantResponse>, Status> {
        admin_key(&request)?;
        let id = request.into_inner().tenant_id;
        reply(
            self.admin
                .tenant(&id)
                .map(|t| tenant_message!(proto::GetTenantResponse, &t)),
        )
    }

    async fn update_tenant(
        &self,
        request: Request<proto::UpdateTenantRequest>,
    ) -> Result<Response<proto::UpdateTenantResponse>, Status> {
        admin_key(&request)?;
        let req = request.into_inner();
        let set = settings_from_proto(req.settings.unwrap_or_default());
        let admin = self.admin.clone();
        reply(
            to_completion(async move {
                admin
                    .update_tenant(
                        &req.tenant_id,
                        req.name.as_deref(),
                        &set,
                        &req.clear_settings,
                    )
                    .await
            })
            .await
            .map(|t| tenant_message!(proto::UpdateTenantResponse, &t)),
        )
    }

    async fn create_api_key(
        &self,
        request: Request<proto::CreateApiKeyRequest>,
    ) -> Result<Response<proto::CreateApiKeyResponse>, Status> {
        admin_key(&request)?;
        let req = request.into_inner();
        let scope = match proto::ApiKeyScope::try_from(req.scope) {
            Ok(proto::ApiKeyScope::Unspecified | proto::ApiKeyScope::App) => Scope::App,
            Ok(proto::ApiKeyScope::Admin) => Scope::Admin,
            Err(_) => return Err(status(AuthError::invalid("scope", "unknown scope"))),
        };
        let expires_at = req.expires_at.map(millis_of);
        let admin = self.admin.clone();
        reply(
            to_completion(async move {
                admin
                    .create_api_key(&req.tenant_id, &req.name, scope, expires_at)
                    .await
            })
            .await
            .map(|created| proto::CreateApiKeyResponse {
                api_key: Some(key_to_proto(&created.info)),
                key: created.key,
            }),
        )
    }

    async fn list_api_keys(
        &self,
        request: Request<proto::ListApiKeysRequest>,
    ) -> Result<Response<proto::ListApiKeysResponse>, Status> {
        admin_key(&request)?;
        let tenant_id = request.into_inner().tenant_id;
        let filter = Some(tenant_id.as_str()).filter(|t| !t.is_empty());
        reply(
            self.admin
                .list_api_keys(filter)
                .await
                .map(|keys| proto::ListApiKeysResponse {
                    api_keys: keys.iter().map(key_to_proto).collect(),
                }),
        )
    }

    async fn revoke_api_key(
        &self,
        request: Request<proto::RevokeApiKeyRequest>,
    ) -> Result<Response<proto::RevokeApiKeyResponse>, Status> {
        admin_key(&request)?;
        let prefix = request.into_inner().prefix;
        let admin = self.admin.clone();
        reply(
            to_completion(async move { admin.revoke_api_key(&prefix).await })
                .await
                .map(|()| proto::RevokeApiKeyResponse {}),
        )
    }

    async fn get_user(
        &self,
        request: Request<proto::GetUserRequest>,
    ) -> Result<Response<proto::GetUserResponse>, Status> {
        admin_key(&request)?;
        let req = request.into_inner();
        reply(
            self.admin
                .find_user(&req.tenant_id, &req.user_id, &req.email)
                .await
                .map(|u| {
                    let u = user_to_proto(u);
                    proto::GetUserResponse {
                        id: u.id,
                        email: u.email,
                        created_at: u.created_at,
                        updated_at: u.updated_at,
                        disabled_at: u.disabled_at,
                        app_metadata: u.app_metadata,
                    }
                }),
        )
    }

    async fn list_users(
        &self,
        request: Request<proto::ListUsersRequest>,
    ) -> Result<Response<proto::ListUsersResponse>, Status> {
        admin_key(&request)?;
        let req = request.into_inner();
        let filter = UserFilter {
            email_prefix: Some(req.email_prefix).filter(|p| !p.trim().is_empty()),
            created_from: req.created_after.map(millis_of),
            created_before: req.created_before.map(millis_of),
            page_size: req.page_size,
            page_token: Some(req.page_token).filter(|t| !t.is_empty()),
        };
        let result = match self.admin.users(&req.tenant_id) {
            Ok(users) => users.list(&req.tenant_id, &filter).await,
            Err(e) => Err(e),
        };
        reply(result.map(|page| proto::ListUsersResponse {
            users: page.users.into_iter().map(user_to_proto).collect(),
            next_page_token: page.next_page_token.unwrap_or_default(),
        }))
    }

    async fn update_user(
        &self,
        request: Request<proto::UpdateUserRequest>,
    ) -> Result<Response<proto::UpdateUserResponse>, Status> {
        admin_key(&request)?;
        let req = request.into_inner();
        let admin = self.admin.clone();
        reply(
            to_completion(async move {
                admin
                    .users(&req.tenant_id)?
                    .update_metadata(&req.tenant_id, &req.user_id, &req.app_metadata)
                    .await
            })
            .await
            .map(|u| proto::UpdateUserResponse {
                user: Some(user_to_proto(u)),
            }),
        )
    }

    async fn disable_user(
        &self,
        request: Request<proto::DisableUserRequest>,
    ) -> Result<Response<proto::DisableUserResponse>, Status> {
        admin_key(&request)?;
        let req = request.into_inner();
        let admin = self.admin.clone();
        reply(
            to_completion(async move {
                admin
                    .users(&req.tenant_id)?
                    .disable(&req.tenant_id, &req.user_id)
                    .await
            })
            .await
            .map(|(u, ended)| proto::DisableUserResponse {
                user: Some(user_to_proto(u)),
                ended_logins: u32::try_from(ended).unwrap_or(u32::MAX),
            }),
        )
    }

    async fn enable_user(
        &self,
        request: Request<proto::EnableUserRequest>,
    ) -> Result<Response<proto::EnableUserResponse>, Status> {
        admin_key(&request)?;
        let req = request.into_inner();
        let admin = self.admin.clone();
        reply(
            to_completion(async move {
                admin
                    .users(&req.tenant_id)?
                    .enable(&req.tenant_id, &req.user_id)
                    .await
            })
            .await
            .map(|u| proto::EnableUserResponse {
                user: Some(user_to_proto(u)),
            }),
        )
    }

    async fn delete_user(
        &self,
        request: Request<proto::DeleteUserRequest>,
    ) -> Result<Response<proto::DeleteUserResponse>, Status> {
        admin_key(&request)?;
        let req = request.into_inner();
        let admin = self.admin.clone();
        reply(
            to_completion(async move { admin.delete_user(&req.tenant_id, &req.user_id).await })
                .await
                .map(|()| proto::DeleteUserResponse {}),
        )
    }
}

/// A proto timestamp in Unix milliseconds.
fn millis_of(t: pbjson_types::Timestamp) -> crate::clock::UnixMillis {
    t.seconds.saturating_mul(1000) + i64::from(t.nanos) / 1_000_000
}

/// How a tenant setting's type travels in `proto::TenantSettings`.
trait Wire: Sized {
    type Proto;
    fn from_proto(p: Self::Proto) -> Option<Self>;
    fn to_proto(v: &Option<Self>) -> Self::Proto;
}

/// Types that travel as proto3 `optional` fields of the same type.
macro_rules! optional_wire {
    ($($ty:ty),+) => {$(
        impl Wire for $ty {
            type Proto = Option<$ty>;
            fn from_proto(p: Self::Proto) -> Option<Self> {
                p
            }
            fn to_proto(v: &Option<Self>) -> Self::Proto {
                v.clone()
            }
        }
    )+};
}
optional_wire!(String, u32, bool);

impl Wire for u8 {
    type Proto = Option<u32>;
    fn from_proto(p: Option<u32>) -> Option<u8> {
        // Out-of-range values become 0, which validation refuses.
        p.map(|v| u8::try_from(v).unwrap_or(0))
    }
    fn to_proto(v: &Option<u8>) -> Option<u32> {
        v.map(u32::from)
    }
}

/// A repeated field cannot be absent: empty means "not set".
impl Wire for Vec<String> {
    type Proto = Vec<String>;
    fn from_proto(p: Vec<String>) -> Option<Self> {
        Some(p).filter(|v| !v.is_empty())
    }
    fn to_proto(v: &Option<Self>) -> Vec<String> {
        v.clone().unwrap_or_default()
    }
}

impl Wire for SignupPolicy {
    type Proto = i32;
    fn from_proto(p: i32) -> Option<Self> {
        match proto::SignupPolicy::try_from(p) {
            Ok(proto::SignupPolicy::LoginOrCreate) => Some(SignupPolicy::LoginOrCreate),
            Ok(proto::SignupPolicy::LoginOnly) => Some(SignupPolicy::LoginOnly),
            _ => None,
        }
    }
    fn to_proto(v: &Option<Self>) -> i32 {
        let p = match v {
            None => proto::SignupPolicy::Unspecified,
            Some(SignupPolicy::LoginOrCreate) => proto::SignupPolicy::LoginOrCreate,
            Some(SignupPolicy::LoginOnly) => proto::SignupPolicy::LoginOnly,
        };
        p as i32
    }
}

/// The conversions, one field per row of the tenant settings table
/// (`auth::settings`): a row without its proto field, or a proto field
/// without its row, does not compile.
macro_rules! define_proto_settings {
    ($($(#[doc = $doc:literal])* $name:ident: $ty:ty as $kind:ident = $flag:literal => $rule:expr;)+) => {
        pub fn settings_from_proto(p: proto::TenantSettings) -> TenantSettings {
            TenantSettings {
                $($name: <$ty as Wire>::from_proto(p.$name),)+
            }
        }

        pub fn settings_to_proto(s: &TenantSettings) -> proto::TenantSettings {
            proto::TenantSettings {
                $($name: <$ty as Wire>::to_proto(&s.$name),)+
            }
        }
    };
}

crate::auth::settings::with_tenant_settings!(define_proto_settings);

/// A tenant as one of the messages with Tenant's fields (`Tenant` itself,
/// and the Create/Get/UpdateTenant responses, which repeat its fields so the
/// wire format stays that of `Tenant`).
macro_rules! tenant_message {
    ($message:path, $t:expr) => {{
        let t: &Arc<Tenant> = $t;
        $message {
            id: t.id.clone(),
            name: t.name.clone(),
            settings: Some(settings_to_proto(&t.settings)),
            created_at: Some(timestamp(t.created_at)),
            updated_at: Some(timestamp(t.updated_at)),
        }
    }};
}
use tenant_message;

fn tenant_to_proto(t: &Arc<Tenant>) -> proto::Tenant {
    tenant_message!(proto::Tenant, t)
}

fn key_to_proto(k: &ApiKeyInfo) -> proto::ApiKey {
    proto::ApiKey {
        prefix: k.prefix.clone(),
        tenant_id: k.tenant_id.clone(),
        name: k.name.clone(),
        scope: match k.scope {
            Scope::App => proto::ApiKeyScope::App,
            Scope::Admin => proto::ApiKeyScope::Admin,
        } as i32,
        created_at: Some(timestamp(k.created_at)),
        expires_at: k.expires_at.map(timestamp),
        revoked_at: k.revoked_at.map(timestamp),
        last_used_at: k.last_used_at.map(timestamp),
    }
}

//! The gRPC AdminService over [`Admin`]: every call needs an admin key.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::{
    grpc::{Authenticated, MAX_REQUEST_BYTES, reply, status, tenant},
    timestamp, to_completion,
};
use crate::{
    auth::{
        admin::{Admin, ApiKeyInfo},
        apikeys::Scope,
        tenants::{SignupPolicy, Tenant, TenantSettings},
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
        let expires_at = req
            .expires_at
            .map(|t| t.seconds.saturating_mul(1000) + i64::from(t.nanos) / 1_000_000);
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
                .map(|u| proto::GetUserResponse {
                    id: u.id,
                    email: u.email,
                    created_at: Some(timestamp(u.created_at)),
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

pub fn settings_from_proto(p: proto::TenantSettings) -> TenantSettings {
    TenantSettings {
        issuer: p.issuer,
        audience: p.audience,
        access_token_ttl_seconds: p.access_token_ttl_seconds,
        session_ttl_seconds: p.session_ttl_seconds,
        // Out-of-range lengths become 0, which validation refuses.
        code_length: p.code_length.map(|v| u8::try_from(v).unwrap_or(0)),
        code_ttl_seconds: p.code_ttl_seconds,
        code_max_attempts: p.code_max_attempts,
        mail_from: p.mail_from,
        app_name: p.app_name,
        allowed_validation_urls: Some(p.allowed_validation_urls).filter(|v| !v.is_empty()),
        default_locale: p.default_locale,
        signup_policy: match proto::SignupPolicy::try_from(p.signup_policy) {
            Ok(proto::SignupPolicy::LoginOrCreate) => Some(SignupPolicy::LoginOrCreate),
            Ok(proto::SignupPolicy::LoginOnly) => Some(SignupPolicy::LoginOnly),
            _ => None,
        },
        notify_unknown_address: p.notify_unknown_address,
        default_validation_url: p.default_validation_url,
        rate_limit_email: p.rate_limit_email,
        rate_limit_ip: p.rate_limit_ip,
        rate_limit_tenant: p.rate_limit_tenant,
        verify_failure_budget: p.verify_failure_budget,
    }
}

pub fn settings_to_proto(s: &TenantSettings) -> proto::TenantSettings {
    proto::TenantSettings {
        issuer: s.issuer.clone(),
        audience: s.audience.clone(),
        access_token_ttl_seconds: s.access_token_ttl_seconds,
        session_ttl_seconds: s.session_ttl_seconds,
        code_length: s.code_length.map(u32::from),
        code_ttl_seconds: s.code_ttl_seconds,
        code_max_attempts: s.code_max_attempts,
        mail_from: s.mail_from.clone(),
        app_name: s.app_name.clone(),
        allowed_validation_urls: s.allowed_validation_urls.clone().unwrap_or_default(),
        default_locale: s.default_locale.clone(),
        signup_policy: match s.signup_policy {
            None => proto::SignupPolicy::Unspecified,
            Some(SignupPolicy::LoginOrCreate) => proto::SignupPolicy::LoginOrCreate,
            Some(SignupPolicy::LoginOnly) => proto::SignupPolicy::LoginOnly,
        } as i32,
        notify_unknown_address: s.notify_unknown_address,
        default_validation_url: s.default_validation_url.clone(),
        rate_limit_email: s.rate_limit_email,
        rate_limit_ip: s.rate_limit_ip,
        rate_limit_tenant: s.rate_limit_tenant,
        verify_failure_budget: s.verify_failure_budget,
    }
}

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

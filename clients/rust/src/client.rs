//! Both services on one channel, with the API key sent on every call.

use std::{fmt, time::Duration};

use tonic::{
    Request, Status,
    metadata::AsciiMetadataValue,
    service::{Interceptor, interceptor::InterceptedService},
    transport::{Channel, Endpoint},
};

use crate::proto::{
    admin_service_client::AdminServiceClient, auth_service_client::AuthServiceClient,
};

/// `AuthService` with the API key on every call.
pub type AuthClient = AuthServiceClient<InterceptedService<Channel, ApiKey>>;
/// `AdminService` with the (admin) API key on every call.
pub type AdminClient = AdminServiceClient<InterceptedService<Channel, ApiKey>>;

/// Sends `authorization: Bearer <key>` with every call (a tonic interceptor).
/// `ApiKey::default()` sends none, which is enough for `GetJwks`.
#[derive(Clone, Default)]
pub struct ApiKey(Option<AsciiMetadataValue>);

impl ApiKey {
    /// The key as issued (`lk_app_…`, `lk_adm_…`). An empty key sends none.
    pub fn new(key: &str) -> Result<Self, InvalidApiKey> {
        if key.is_empty() {
            return Ok(Self(None));
        }
        let mut value =
            AsciiMetadataValue::try_from(format!("Bearer {key}")).map_err(|_| InvalidApiKey)?;
        value.set_sensitive(true);
        Ok(Self(Some(value)))
    }
}

impl Interceptor for ApiKey {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() {
            "ApiKey(…)"
        } else {
            "ApiKey(none)"
        })
    }
}

/// The API key has characters a gRPC header cannot carry.
#[derive(Debug, thiserror::Error)]
#[error("the API key is not a valid header value")]
pub struct InvalidApiKey;

/// [`Client::connect`] failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error(transparent)]
    ApiKey(#[from] InvalidApiKey),
    #[error("cannot connect to latchkey: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// Both latchkey services on one HTTP/2 channel. Cheap to clone (clones
/// share the channel); the RPC methods take `&mut self`, so clone a client
/// per task.
#[derive(Clone, Debug)]
pub struct Client {
    /// StartAuth, Verify, Refresh, Revoke, GetJwks, …
    pub auth: AuthClient,
    /// Tenants, API keys and users; needs an admin key.
    pub admin: AdminClient,
}

impl Client {
    /// Connects to latchkey's gRPC listener, `http://host:port` (plaintext)
    /// or `https://…` when your tonic has a TLS feature enabled. Calls time
    /// out after 10 seconds.
    pub async fn connect(uri: &str, api_key: &str) -> Result<Self, ConnectError> {
        let api_key = ApiKey::new(api_key)?;
        let channel = Endpoint::from_shared(uri.to_owned())?
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(10))
            .connect()
            .await?;
        Ok(Self::new(channel, api_key))
    }

    /// The services on a channel you configured (TLS, timeouts, lazy
    /// connection).
    pub fn new(channel: Channel, api_key: ApiKey) -> Self {
        Self {
            auth: AuthServiceClient::with_interceptor(channel.clone(), api_key.clone()),
            admin: AdminServiceClient::with_interceptor(channel, api_key),
        }
    }
}

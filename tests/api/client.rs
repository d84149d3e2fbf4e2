//! One client over both transports: the same calls and the same error shape
//! through gRPC and through the JSON gateway, so every behaviour test runs on
//! each.

use latchkey::proto::{self, auth_service_client::AuthServiceClient};
use serde::{Serialize, de::DeserializeOwned};
use tonic::transport::Channel;

/// Which surface a test talks to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Grpc,
    Http,
}

/// An error answer, as either transport reports it.
#[derive(Clone, Debug)]
pub struct ApiError {
    /// The machine code (`ErrorInfo.reason` / JSON `code`).
    pub code: String,
    /// The field at fault (proto name over gRPC, JSON name over HTTP).
    pub field: String,
    pub message: String,
    pub grpc: Option<tonic::Code>,
    pub http: Option<u16>,
    /// `RetryInfo.retry_delay` over gRPC; `Retry-After` (whole seconds)
    /// over HTTP.
    pub retry_after: Option<std::time::Duration>,
}

impl ApiError {
    /// Asserts the transport status: `grpc` over gRPC, `http` over HTTP.
    pub fn assert_status(&self, grpc: tonic::Code, http: u16) {
        match (self.grpc, self.http) {
            (Some(code), _) => assert_eq!(code, grpc, "{self:?}"),
            (_, Some(status)) => assert_eq!(status, http, "{self:?}"),
            _ => unreachable!(),
        }
    }

    fn from_status(status: tonic::Status) -> Self {
        use tonic_types::StatusExt;
        let details = status.get_error_details();
        let info = details
            .error_info()
            .unwrap_or_else(|| panic!("no ErrorInfo in {status:?}"));
        Self {
            code: info.reason.clone(),
            field: info.metadata.get("field").cloned().unwrap_or_default(),
            message: status.message().to_owned(),
            grpc: Some(status.code()),
            http: None,
            retry_after: details.retry_info().and_then(|r| r.retry_delay),
        }
    }
}

/// One method per AuthService call of `latchkey::gateway_rpcs!`, on either
/// transport.
macro_rules! calls {
    ($($name:ident $rpc:ident($req:ident) -> $resp:ident at $path:literal
        also [$($status:literal),*] $(with $hook:path)?;)+) => {$(
        pub async fn $name(&self, req: proto::$req) -> Result<proto::$resp, ApiError> {
            match self {
                Self::Grpc { client, .. } => {
                    grpc(client.clone().$name(self.grpc_request(req)).await)
                }
                Self::Http { .. } => self.post($path, &req).await,
            }
        }
    )+};
}

#[derive(Clone)]
pub enum ApiClient {
    Grpc {
        client: AuthServiceClient<Channel>,
        key: Option<String>,
    },
    Http {
        client: reqwest::Client,
        base: String,
        key: Option<String>,
    },
}

impl ApiClient {
    /// The same client sending another API key (or none).
    pub fn with_key(&self, new: Option<&str>) -> Self {
        let mut c = self.clone();
        match &mut c {
            Self::Grpc { key, .. } | Self::Http { key, .. } => *key = new.map(str::to_owned),
        }
        c
    }

    fn grpc_request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        if let Self::Grpc { key: Some(key), .. } = self {
            request
                .metadata_mut()
                .insert("authorization", format!("Bearer {key}").parse().unwrap());
        }
        request
    }

    pub fn transport(&self) -> Transport {
        match self {
            Self::Grpc { .. } => Transport::Grpc,
            Self::Http { .. } => Transport::Http,
        }
    }

    latchkey::gateway_rpcs!(calls);

    pub async fn jwks(&self) -> proto::GetJwksResponse {
        match self {
            Self::Grpc { client, .. } => client
                .clone()
                .get_jwks(proto::GetJwksRequest::default())
                .await
                .expect("GetJwks")
                .into_inner(),
            Self::Http { client, base, .. } => {
                let response = client
                    .get(format!("{base}/.well-known/jwks.json"))
                    .send()
                    .await
                    .expect("GET jwks");
                assert_eq!(response.status(), 200);
                response.json().await.expect("a JWKS document")
            }
        }
    }

    async fn post<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        path: &str,
        req: &Req,
    ) -> Result<Resp, ApiError> {
        let Self::Http { client, base, key } = self else {
            unreachable!()
        };
        let mut request = client.post(format!("{base}{path}")).json(req);
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        http_answer(request).await
    }

    /// GetJwks of a named tenant, sending no key: `tenant_id` over gRPC,
    /// the tenant's own `/.well-known` path over HTTP.
    pub async fn tenant_jwks(&self, tenant: &str) -> Result<proto::GetJwksResponse, ApiError> {
        match self {
            Self::Grpc { client, .. } => grpc(
                client
                    .clone()
                    .get_jwks(proto::GetJwksRequest {
                        tenant_id: tenant.to_owned(),
                    })
                    .await,
            ),
            Self::Http { client, base, .. } => {
                let url = format!("{base}/tenants/{tenant}/.well-known/jwks.json");
                http_answer(client.get(url)).await
            }
        }
    }
}

/// A JSON gateway answer: the body as `Resp`, or the error it reports.
async fn http_answer<Resp: DeserializeOwned>(
    request: reqwest::RequestBuilder,
) -> Result<Resp, ApiError> {
    {
        let response = request.send().await.expect("HTTP request");
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get("retry-after")
            .map(|v| {
                v.to_str()
                    .unwrap()
                    .parse::<u64>()
                    .expect("Retry-After in seconds")
            })
            .map(std::time::Duration::from_secs);
        let content_type = response
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned());
        let body = response.bytes().await.expect("HTTP body");
        assert_eq!(
            content_type.as_deref(),
            Some("application/json"),
            "{status}"
        );
        if status == 200 {
            return Ok(serde_json::from_slice(&body).unwrap_or_else(|e| {
                panic!(
                    "response does not match its type: {e}: {}",
                    String::from_utf8_lossy(&body)
                )
            }));
        }
        let error: serde_json::Value = serde_json::from_slice(&body).expect("JSON error body");
        Err(ApiError {
            code: error["code"].as_str().expect("code").to_owned(),
            field: error["field"].as_str().unwrap_or_default().to_owned(),
            message: error["error"].as_str().expect("error message").to_owned(),
            grpc: None,
            http: Some(status),
            retry_after,
        })
    }
}

fn grpc<T>(result: Result<tonic::Response<T>, tonic::Status>) -> Result<T, ApiError> {
    result
        .map(tonic::Response::into_inner)
        .map_err(ApiError::from_status)
}

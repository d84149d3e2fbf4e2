//! The `components/schemas` of the OpenAPI document: one schema per message
//! of the AuthService proto (the proto3 JSON mapping pbjson implements, the
//! proto comments as descriptions, the limits the domain enforces), plus the
//! gateway's own shapes (errors, the JWKS, health).

use std::collections::{BTreeMap, BTreeSet};

use prost::Message;
use prost_types::{
    DescriptorProto, FileDescriptorProto, FileDescriptorSet, field_descriptor_proto::Label,
    field_descriptor_proto::Type,
};
use serde_json::{Value, json};

use crate::{
    auth::{self, email, secrets, sessions},
    proto::FILE_DESCRIPTOR_SET,
};

const AUTH_PROTO: &str = "latchkey/v1/auth.proto";

/// Printable ASCII, the characters of an idempotency key.
pub(super) const PRINTABLE_ASCII: &str = "^[!-~]*$";

/// What the server checks about request fields, for the document (the proto
/// cannot say it). The server enforces more than this (an address must also
/// parse, a session id must exist), answering 400 with the field; schemathesis
/// in CI checks that nothing the document calls invalid is accepted.
fn request_constraints(message: &str) -> Vec<(&'static str, Value)> {
    match message {
        "StartAuthRequest" => vec![
            (
                "email",
                // The shortest address: `a@b`.
                json!({ "format": "email", "minLength": 3, "maxLength": email::MAX_EMAIL_LEN }),
            ),
            ("validationUrl", json!({ "maxLength": auth::MAX_URL_LEN })),
            (
                "idempotencyKey",
                json!({ "maxLength": auth::MAX_IDEMPOTENCY_KEY_LEN, "pattern": PRINTABLE_ASCII }),
            ),
        ],
        "ClientInfo" => vec![
            (
                "ip",
                json!({ "anyOf": [{ "const": "" }, { "format": "ipv4" }, { "format": "ipv6" }] }),
            ),
            (
                "userAgent",
                json!({ "maxLength": auth::MAX_USER_AGENT_LEN }),
            ),
        ],
        "VerifyRequest" => vec![
            (
                "code",
                json!({ "maxLength": auth::MAX_CODE_LENGTH, "pattern": "^[0-9]*$" }),
            ),
            (
                "sessionId",
                json!({ "anyOf": [{ "const": "" }, { "format": "uuid" }] }),
            ),
        ],
        "RefreshRequest" => vec![(
            "refreshToken",
            json!({ "pattern": format!("^{}$", refresh_token_pattern()) }),
        )],
        "ResendCodeRequest" | "RevokeSessionRequest" => {
            vec![("sessionId", json!({ "format": "uuid" }))]
        }
        "ListSessionsRequest" => vec![("userId", json!({ "format": "uuid" }))],
        "StartEmailChangeRequest" => vec![
            ("userId", json!({ "format": "uuid" })),
            (
                "newEmail",
                json!({ "format": "email", "minLength": 3, "maxLength": email::MAX_EMAIL_LEN }),
            ),
            ("validationUrl", json!({ "maxLength": auth::MAX_URL_LEN })),
        ],
        "AuthServiceGetUserRequest" => vec![
            (
                "userId",
                json!({ "anyOf": [{ "const": "" }, { "format": "uuid" }] }),
            ),
            ("email", json!({ "maxLength": email::MAX_EMAIL_LEN })),
        ],
        "AuthServiceUpdateUserRequest" => vec![
            ("userId", json!({ "format": "uuid" })),
            (
                "appMetadata",
                json!({ "minLength": 2, "maxLength": 8 * auth::users::MAX_METADATA_BYTES }),
            ),
        ],
        "RevokeAllSessionsRequest" => vec![
            ("userId", json!({ "format": "uuid" })),
            (
                "exceptSessionId",
                json!({ "anyOf": [{ "const": "" }, { "format": "uuid" }] }),
            ),
        ],
        "IntrospectTokenRequest" => vec![(
            "token",
            json!({ "minLength": 1, "maxLength": sessions::MAX_TOKEN_LEN }),
        )],
        "RevokeRequest" => vec![
            (
                "refreshToken",
                json!({ "pattern": format!("^({})?$", refresh_token_pattern()) }),
            ),
            (
                "sessionId",
                json!({ "anyOf": [{ "const": "" }, { "format": "uuid" }] }),
            ),
        ],
        _ => Vec::new(),
    }
}

/// Request fields without which the server always answers 400.
fn request_required(message: &str) -> &'static [&'static str] {
    match message {
        "StartAuthRequest" => &["email"],
        "RefreshRequest" => &["refreshToken"],
        "ResendCodeRequest" | "RevokeSessionRequest" => &["sessionId"],
        "ListSessionsRequest" | "RevokeAllSessionsRequest" => &["userId"],
        "IntrospectTokenRequest" => &["token"],
        "AuthServiceUpdateUserRequest" => &["userId", "appMetadata"],
        "StartEmailChangeRequest" => &["userId", "newEmail"],
        _ => &[],
    }
}

/// Response fields that may be absent: pbjson leaves out a message field
/// that is not set. Every other response field is always there.
fn response_optional(message: &str) -> &'static [&'static str] {
    match message {
        "Session" => &["lastRefreshedAt", "endedAt"],
        "IntrospectTokenResponse" => &["claims"],
        "User" => &["disabledAt"],
        _ => &[],
    }
}

/// A refresh token (unanchored): its prefix and 256 bits in base64url.
fn refresh_token_pattern() -> String {
    format!(
        "{}[A-Za-z0-9_-]{{{}}}",
        secrets::REFRESH_PREFIX,
        secrets::TOKEN_B64_LEN
    )
}

pub(super) struct Descriptors {
    file: FileDescriptorProto,
}

impl Descriptors {
    pub(super) fn load() -> Self {
        let set = FileDescriptorSet::decode(FILE_DESCRIPTOR_SET).expect("embedded descriptors");
        let file = set
            .file
            .into_iter()
            .find(|f| f.name() == AUTH_PROTO)
            .expect("the AuthService file");
        Self { file }
    }

    /// The leading comment at a source path, as one paragraph per blank line.
    fn comment(&self, path: &[i32]) -> Option<String> {
        let info = self.file.source_code_info.as_ref()?;
        let location = info.location.iter().find(|l| l.path == path)?;
        let text = location.leading_comments.as_deref()?;
        let paragraphs: Vec<String> = text
            .split("\n\n")
            .map(|p| p.lines().map(str::trim).collect::<Vec<_>>().join(" "))
            .map(|p| p.trim().to_owned())
            .filter(|p| !p.is_empty())
            .collect();
        (!paragraphs.is_empty()).then(|| paragraphs.join("\n\n"))
    }

    /// Messages that appear in requests: `*Request` and what they contain.
    fn request_side(&self) -> BTreeSet<String> {
        let mut side: BTreeSet<String> = self
            .file
            .message_type
            .iter()
            .filter(|m| m.name().ends_with("Request"))
            .map(|m| m.name().to_owned())
            .collect();
        loop {
            let before = side.len();
            let referenced: Vec<String> = self
                .file
                .message_type
                .iter()
                .filter(|m| side.contains(m.name()))
                .flat_map(|m| &m.field)
                .filter(|f| f.r#type() == Type::Message)
                .map(|f| {
                    f.type_name()
                        .rsplit('.')
                        .next()
                        .unwrap_or_default()
                        .to_owned()
                })
                .collect();
            side.extend(referenced);
            if side.len() == before {
                return side;
            }
        }
    }

    fn schema_of(&self, index: usize, message: &DescriptorProto, is_request: bool) -> Value {
        // Requests accept any subset of fields (the server says which are
        // missing) and ignore unknown ones; responses carry every field.
        let mut properties = serde_json::Map::new();
        let mut required = Vec::new();
        for (f, field) in message.field.iter().enumerate() {
            let mut schema = self.field_schema(field, is_request);
            if let Some(doc) = self.comment(&[4, index as i32, 2, f as i32]) {
                schema["description"] = doc.into();
            }
            properties.insert(field.json_name().to_owned(), schema);
            if !response_optional(message.name()).contains(&field.json_name()) {
                required.push(Value::from(field.json_name()));
            }
        }
        let mut schema = json!({ "type": "object", "properties": properties });
        if let Some(doc) = self.comment(&[4, index as i32]) {
            schema["description"] = doc.into();
        }
        if is_request {
            for (field, constraint) in request_constraints(message.name()) {
                let target = &mut schema["properties"][field];
                for (k, v) in constraint.as_object().expect("an object") {
                    target[k] = v.clone();
                }
            }
            let must: Vec<&str> = request_required(message.name()).to_vec();
            if !must.is_empty() {
                schema["required"] = must.into();
            }
        } else {
            schema["required"] = required.into();
            schema["additionalProperties"] = false.into();
        }
        schema
    }

    fn field_schema(&self, field: &prost_types::FieldDescriptorProto, is_request: bool) -> Value {
        let single = match field.r#type() {
            Type::String => json!({ "type": "string" }),
            Type::Bool => json!({ "type": "boolean" }),
            Type::Int32 | Type::Sint32 | Type::Sfixed32 => {
                json!({ "type": "integer", "format": "int32" })
            }
            Type::Uint32 | Type::Fixed32 => {
                json!({ "type": "integer", "format": "int64", "minimum": 0, "maximum": u32::MAX })
            }
            // proto3 JSON writes 64-bit integers as strings.
            Type::Int64 | Type::Sint64 | Type::Sfixed64 | Type::Uint64 | Type::Fixed64 => {
                json!({ "type": "string", "pattern": "^-?[0-9]+$" })
            }
            Type::Double | Type::Float => json!({ "type": "number" }),
            Type::Bytes => json!({ "type": "string", "contentEncoding": "base64" }),
            Type::Enum => {
                let name = field.type_name().rsplit('.').next().unwrap_or_default();
                let values: Vec<(&str, i32)> = self
                    .file
                    .enum_type
                    .iter()
                    .find(|e| e.name() == name)
                    .map(|e| e.value.iter().map(|v| (v.name(), v.number())).collect())
                    .unwrap_or_default();
                let names: Vec<&str> = values.iter().map(|v| v.0).collect();
                let numbers: Vec<i32> = values.iter().map(|v| v.1).collect();
                if is_request {
                    // proto3 JSON parsers take the number as well as the name.
                    json!({ "anyOf": [
                        { "type": "string", "enum": names },
                        { "type": "integer", "enum": numbers }
                    ] })
                } else {
                    json!({ "type": "string", "enum": names })
                }
            }
            Type::Message if field.type_name() == ".google.protobuf.Timestamp" => {
                json!({ "type": "string", "format": "date-time" })
            }
            Type::Message | Type::Group => {
                let name = field.type_name().rsplit('.').next().unwrap_or_default();
                let reference = json!({ "$ref": format!("#/components/schemas/{name}") });
                if is_request {
                    // proto3 JSON: `null` for a message means "not set".
                    json!({ "anyOf": [reference, { "type": "null" }] })
                } else {
                    reference
                }
            }
        };
        if field.label() == Label::Repeated {
            json!({ "type": "array", "items": single })
        } else {
            single
        }
    }

    /// The request and response message names of an RPC.
    pub(super) fn rpc_types(&self, rpc: &str) -> (&str, &str) {
        let method = self
            .file
            .service
            .iter()
            .flat_map(|s| &s.method)
            .find(|m| m.name() == rpc)
            .unwrap_or_else(|| panic!("no RPC {rpc}"));
        (
            method.input_type().rsplit('.').next().unwrap_or_default(),
            method.output_type().rsplit('.').next().unwrap_or_default(),
        )
    }

    pub(super) fn rpc_comment(&self, rpc: &str) -> Option<String> {
        let service = self.file.service.first()?;
        let k = service.method.iter().position(|m| m.name() == rpc)?;
        self.comment(&[6, 0, 2, k as i32])
    }
}

pub(super) fn schema_ref(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

/// Every schema of the document, by name.
pub(super) fn all(d: &Descriptors) -> BTreeMap<String, Value> {
    let mut schemas = BTreeMap::new();
    let request_side = d.request_side();
    for (i, message) in d.file.message_type.iter().enumerate() {
        let is_request = request_side.contains(message.name());
        schemas.insert(
            message.name().to_owned(),
            d.schema_of(i, message, is_request),
        );
    }
    schemas.insert(
        "Error".into(),
        json!({
            "type": "object",
            "description": "Every error answer. `code` is the same machine code gRPC puts in `google.rpc.ErrorInfo.reason`.",
            "properties": {
                "error": { "type": "string", "description": "A human-readable message." },
                "code": {
                    "type": "string",
                    "description": "The machine code (see the README's error table); NOT_FOUND and METHOD_NOT_ALLOWED also for unknown routes.",
                    "enum": crate::error::ErrorCode::ALL.iter().map(|c| c.as_str())
                        .chain(["METHOD_NOT_ALLOWED"]).collect::<Vec<_>>()
                },
                "field": { "type": "string", "description": "For bad input: the field at fault (JSON name)." }
            },
            "required": ["error", "code"],
            "additionalProperties": false
        }),
    );
    schemas.insert(
        "JsonWebKeySet".into(),
        json!({
            "type": "object",
            "description": "RFC 7517 key set: every key that may have signed a still-valid access token, plus keys about to start signing.",
            "properties": { "keys": { "type": "array", "items": schema_ref("JsonWebKey") } },
            "required": ["keys"],
            "additionalProperties": false
        }),
    );
    schemas.insert(
        "JsonWebKey".into(),
        json!({
            "type": "object",
            "description": "A public key (RFC 7517). Members that do not apply to the key type are absent.",
            "properties": {
                "kty": { "type": "string", "enum": ["OKP", "EC", "RSA"] },
                "crv": { "type": "string", "enum": ["Ed25519", "P-256"] },
                "x": { "type": "string" },
                "y": { "type": "string" },
                "n": { "type": "string" },
                "e": { "type": "string" },
                "kid": { "type": "string" },
                "alg": { "type": "string", "enum": ["EdDSA", "ES256", "RS256"] },
                "use": { "type": "string", "enum": ["sig"] }
            },
            "required": ["kty", "kid", "alg", "use"],
            "additionalProperties": false
        }),
    );
    schemas.insert(
        "Health".into(),
        json!({
            "type": "object",
            "properties": { "status": { "type": "string", "enum": ["SERVING", "NOT_SERVING"] } },
            "required": ["status"],
            "additionalProperties": false
        }),
    );
    schemas
}

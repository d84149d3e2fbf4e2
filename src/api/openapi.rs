//! The OpenAPI 3.1 document of the JSON gateway, generated from the proto
//! descriptors the service is built from: the message schemas follow the
//! proto3 JSON mapping pbjson implements, and their descriptions are the
//! proto comments. `latchkey openapi` prints it; `docs/openapi.json` is that
//! output, and a test keeps the two equal.
//!
//! This file assembles the document: one operation per row of
//! [`crate::gateway_rpcs!`] plus the fixed routes; `schemas` builds its
//! `components/schemas`.

mod schemas;

use serde_json::{Value, json};

use super::rpcs::GATEWAY_RPCS;
use crate::auth;
use schemas::{Descriptors, PRINTABLE_ASCII, schema_ref};

fn error_description(status: u16) -> &'static str {
    match status {
        400 => {
            "Bad input: `INVALID_ARGUMENT` or `VALIDATION_URL_NOT_ALLOWED`, with `field`. Nothing changed."
        }
        401 => {
            "`UNAUTHENTICATED` (missing, malformed, unknown, expired or revoked API key; nothing was done), `CODE_INVALID` (wrong, expired, used or unknown code), `REFRESH_TOKEN_INVALID` or `REFRESH_TOKEN_REUSED`."
        }
        403 => {
            "`TOO_MANY_ATTEMPTS` (the login ended after too many wrong codes) or `PERMISSION_DENIED` (an admin key: use an app key)."
        }
        422 => {
            "`IDEMPOTENCY_KEY_REUSED`: the idempotency key was first used for a different request (within 24 h). Nothing was sent."
        }
        429 => {
            "`RATE_LIMITED`: a limit is reached (emails per address, starts per client IP, the tenant's ceiling, or the wrong-code budget of the address). `Retry-After` says how many seconds to wait. Nothing changed."
        }
        413 => "The body is larger than 64 KiB (`INVALID_ARGUMENT`).",
        415 => "The body is not sent as `application/json` (`INVALID_ARGUMENT`).",
        500 => "`INTERNAL`: a bug. Not expected; the cause is logged, never returned.",
        503 => "`UNAVAILABLE`: the database cannot be reached. Retry with backoff.",
        _ => "Error.",
    }
}

fn json_body(schema: Value) -> Value {
    json!({ "content": { "application/json": { "schema": schema } } })
}

/// The whole OpenAPI document.
pub fn document() -> Value {
    let d = Descriptors::load();
    let schemas = schemas::all(&d);

    let mut paths = serde_json::Map::new();
    for op in GATEWAY_RPCS {
        let mut responses = serde_json::Map::new();
        let (input, output) = d.rpc_types(op.rpc);
        let mut ok = json_body(schema_ref(output));
        ok["description"] = "Success.".into();
        responses.insert("200".into(), ok);
        for status in op.errors() {
            let mut error = json_body(schema_ref("Error"));
            error["description"] = error_description(status).into();
            responses.insert(status.to_string(), error);
        }
        if let Some(limited) = responses.get_mut("429") {
            limited["headers"] = json!({ "Retry-After": {
                "description": "Seconds until the call may succeed.",
                "schema": { "type": "integer", "minimum": 1 }
            }});
        }
        let description = d.rpc_comment(op.rpc).unwrap_or_default();
        let mut request = json_body(schema_ref(input));
        request["required"] = true.into();
        let mut operation = json!({
            "operationId": lower_first(op.rpc),
            "security": [{ "apiKey": [] }],
            "summary": description.split(". ").next().unwrap_or_default().trim_end_matches('.'),
            "description": description,
            "requestBody": request,
            "responses": responses,
        });
        if op.rpc == "StartAuth" {
            operation["parameters"] = json!([{
                "name": "Idempotency-Key", "in": "header", "required": false,
                "description": "The same as the body's `idempotencyKey` (give either, or both equal).",
                "schema": {
                    "type": "string",
                    "maxLength": auth::MAX_IDEMPOTENCY_KEY_LEN,
                    "pattern": PRINTABLE_ASCII
                }
            }]);
        }
        paths.insert(op.path.into(), json!({ "post": operation }));
    }
    let jwks_operation = |operation_id: &str, summary: &str| {
        json!({ "get": {
            "operationId": operation_id,
            "summary": summary,
            "description": d.rpc_comment("GetJwks").unwrap_or_default(),
            "parameters": [{
                "name": "If-None-Match", "in": "header", "required": false,
                "schema": { "type": "string" },
                "description": "An ETag from an earlier answer: 304 when the keys are unchanged."
            }],
            "responses": {
                "200": {
                    "description": "The key set. Cacheable (`Cache-Control: max-age`, shorter than the key activation delay), with an `ETag`.",
                    "headers": {
                        "Cache-Control": { "schema": { "type": "string" } },
                        "ETag": { "schema": { "type": "string" } }
                    },
                    "content": { "application/json": { "schema": schema_ref("JsonWebKeySet") } }
                },
                "304": { "description": "Unchanged since the ETag in `If-None-Match`." }
            }
        }})
    };
    paths.insert(
        "/.well-known/jwks.json".into(),
        jwks_operation(
            "getJwks",
            "The public keys that verify the default tenant's access tokens",
        ),
    );
    let mut tenant_jwks = jwks_operation(
        "getTenantJwks",
        "The public keys that verify one tenant's access tokens",
    );
    let get = &mut tenant_jwks["get"];
    get["parameters"]
        .as_array_mut()
        .expect("parameters")
        .insert(
            0,
            json!({
                "name": "tenant", "in": "path", "required": true,
                "schema": { "type": "string" },
                "description": "The tenant id (the `tid` claim of its tokens)."
            }),
        );
    let mut unknown = json_body(schema_ref("Error"));
    unknown["description"] = "No such tenant (`NOT_FOUND`).".into();
    get["responses"]["404"] = unknown;
    paths.insert(
        "/tenants/{tenant}/.well-known/jwks.json".into(),
        tenant_jwks,
    );
    paths.insert(
        "/healthz".into(),
        json!({ "get": {
            "operationId": "healthz",
            "summary": "Liveness: the process answers",
            "responses": { "200": { "description": "Alive.", "content": { "application/json": { "schema": schema_ref("Health") } } } }
        }}),
    );
    paths.insert(
        "/readyz".into(),
        json!({ "get": {
            "operationId": "readyz",
            "summary": "Readiness: the process serves and shutdown has not begun (a database outage does not change it)",
            "responses": {
                "200": { "description": "Ready.", "content": { "application/json": { "schema": schema_ref("Health") } } },
                "503": { "description": "Not ready.", "content": { "application/json": { "schema": schema_ref("Health") } } }
            }
        }}),
    );
    paths.insert(
        "/openapi.json".into(),
        json!({ "get": {
            "operationId": "openapi",
            "summary": "This document",
            "responses": { "200": { "description": "The OpenAPI 3.1 document.", "content": { "application/json": { "schema": { "type": "object" } } } } }
        }}),
    );

    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "latchkey JSON gateway",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Passwordless email login for backends: the AuthService of proto/latchkey/v1/auth.proto over JSON (proto3 JSON mapping, camelCase). Errors are {\"error\", \"code\"} with the same machine codes as gRPC."
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "apiKey": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An app API key of your tenant (`lk_app_…`): `Authorization: Bearer <key>`."
                }
            }
        }
    })
}

/// The document as served and committed: pretty JSON with a final newline.
pub fn document_text() -> String {
    let mut text = serde_json::to_string_pretty(&document()).expect("serialises");
    text.push('\n');
    text
}

fn lower_first(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(first) => first.to_lowercase().chain(c).collect(),
        None => String::new(),
    }
}

/// Every `(method, path)` the document describes, for the router test.
pub fn documented_routes() -> Vec<(String, String)> {
    let doc = document();
    let mut routes = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("path item").keys() {
            routes.push((method.to_uppercase(), path.clone()));
        }
    }
    routes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_committed_document_is_current() {
        let committed = include_str!("../../docs/openapi.json");
        assert!(
            committed == document_text(),
            "docs/openapi.json is stale: run `cargo run -- openapi > docs/openapi.json`"
        );
    }

    #[test]
    fn every_reference_resolves() {
        fn refs<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
            match v {
                Value::Object(map) => {
                    if let Some(Value::String(r)) = map.get("$ref") {
                        out.push(r);
                    }
                    map.values().for_each(|v| refs(v, out));
                }
                Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
                _ => {}
            }
        }
        let doc = document();
        let mut found = Vec::new();
        refs(&doc, &mut found);
        assert!(found.len() > 20);
        for r in found {
            let name = r.strip_prefix("#/components/schemas/").unwrap();
            assert!(doc["components"]["schemas"].get(name).is_some(), "{r}");
        }
    }

    #[test]
    fn message_schemas_follow_the_proto3_json_mapping() {
        let doc = document();
        let s = &doc["components"]["schemas"];
        assert_eq!(
            s["StartAuthRequest"]["properties"]["validationUrl"]["type"],
            "string"
        );
        assert_eq!(
            s["StartAuthRequest"]["properties"]["method"]["anyOf"][0]["enum"][1],
            "METHOD_CODE"
        );
        assert_eq!(
            s["StartAuthResponse"]["properties"]["expiresAt"]["format"],
            "date-time"
        );
        assert_eq!(
            s["VerifyResponse"]["properties"]["expiresIn"]["type"],
            "integer"
        );
        assert_eq!(
            s["VerifyResponse"]["properties"]["user"]["$ref"],
            "#/components/schemas/User"
        );
        assert!(
            s["VerifyResponse"]["required"]
                .as_array()
                .unwrap()
                .contains(&"newUser".into())
        );
        assert_eq!(s["StartAuthRequest"]["required"], json!(["email"]));
        assert!(s["StartAuthRequest"].get("additionalProperties").is_none());
        assert!(
            s["ClientInfo"].get("required").is_none(),
            "used in requests only"
        );
        assert!(
            s["User"]["required"]
                .as_array()
                .unwrap()
                .contains(&"createdAt".into())
        );
        assert!(
            s["StartAuthRequest"]["properties"]["email"]["description"]
                .as_str()
                .unwrap()
                .contains("254")
        );
    }
}

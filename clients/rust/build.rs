//! Generates the gRPC client (no server code) from `proto/` with a vendored
//! `protoc`, like the server's build: a fresh clone builds with cargo alone
//! (set `PROTOC` to use another protoc).

use std::{env, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = match env::var_os("PROTOC") {
        Some(path) => PathBuf::from(path),
        None => protoc_bin_vendored::protoc_bin_path()?,
    };
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc);

    // A JWKS document (`{"keys": [...]}`) deserialises into GetJwksResponse;
    // absent members are empty strings, and empty ones are left out again.
    let serde = "#[derive(serde::Serialize, serde::Deserialize)] #[serde(default)]";
    tonic_prost_build::configure()
        .build_server(false)
        .type_attribute(".latchkey.v1.Jwk", serde)
        .type_attribute(".latchkey.v1.GetJwksResponse", serde)
        .field_attribute(
            ".latchkey.v1.Jwk",
            "#[serde(skip_serializing_if = \"String::is_empty\")]",
        )
        .compile_with_config(
            config,
            &[
                "proto/latchkey/v1/auth.proto",
                "proto/latchkey/v1/admin.proto",
            ],
            &["proto"],
        )?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}

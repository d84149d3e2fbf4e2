//! Generates the gRPC code from `proto/` with a vendored `protoc`, so a fresh
//! clone builds with nothing but cargo (set `PROTOC` to use another protoc),
//! and the proto3 JSON mapping (pbjson) the HTTP gateway speaks, from the same
//! descriptors: one set of message types serves both transports.

use std::{env, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = match env::var_os("PROTOC") {
        Some(path) => PathBuf::from(path),
        None => protoc_bin_vendored::protoc_bin_path()?,
    };
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc);

    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    let descriptor_path = out_dir.join("latchkey_descriptor.bin");
    tonic_prost_build::configure()
        .file_descriptor_set_path(&descriptor_path)
        // Well-known types with proto3 JSON support (Timestamp as RFC 3339).
        .compile_well_known_types(true)
        .extern_path(".google.protobuf", "::pbjson_types")
        .compile_with_config(
            config,
            &[
                "proto/latchkey/v1/auth.proto",
                "proto/latchkey/v1/admin.proto",
            ],
            &["proto"],
        )?;

    let descriptors = std::fs::read(&descriptor_path)?;
    pbjson_build::Builder::new()
        .register_descriptors(&descriptors)?
        // Every field appears in responses, defaults included (`"newUser": false`).
        .emit_fields()
        // Callers may send fields a newer or older contract has.
        .ignore_unknown_fields()
        .build(&[".latchkey"])?;
    println!("cargo:rerun-if-changed=proto");
    // `sqlx::migrate!` embeds the migration files but cannot see a new one:
    // rebuild the crate whenever `migrations/` changes.
    println!("cargo:rerun-if-changed=migrations");
    Ok(())
}

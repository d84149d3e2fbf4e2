//! An axum service whose routes need a latchkey access token.
//!
//! ```sh
//! cargo run -p latchkey-client --features axum --example axum -- \
//!     http://127.0.0.1:8080 https://login.example.com my-app
//! curl -H "authorization: Bearer $TOKEN" http://127.0.0.1:3000/me
//! ```
//!
//! The arguments: latchkey's HTTP listener (for its JWKS), then the issuer
//! and audience its tokens carry (`LATCHKEY_ISSUER`, `LATCHKEY_AUDIENCE`).

use axum::{Extension, Router, routing::get};
use latchkey_client::{Claims, Verifier, axum::RequireToken};

/// The `Claims` extractor: only requests with a valid token reach this.
async fn me(claims: Claims) -> String {
    format!(
        "hello {} (user {}, tenant {})\n",
        claims.email, claims.sub, claims.tid
    )
}

/// Behind the `RequireToken` layer the claims are a request extension.
async fn session(Extension(claims): Extension<Claims>) -> String {
    format!("session {}\n", claims.sid)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(latchkey), Some(issuer), Some(audience)) = (args.next(), args.next(), args.next())
    else {
        return Err("usage: axum LATCHKEY_HTTP_URL ISSUER AUDIENCE".into());
    };
    let verifier = Verifier::builder(issuer, audience).http(&latchkey)?;

    let app = Router::new()
        .route("/me", get(me))
        .merge(
            Router::new()
                .route("/session", get(session))
                .layer(RequireToken::new(verifier.clone())),
        )
        .with_state(verifier);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}

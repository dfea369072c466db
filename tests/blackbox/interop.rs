//! Interoperability with stock OAuth tooling: a partner written with
//! Python's Authlib gets a token by client credentials, reads the catalog,
//! verifies the token with PyJWT from our JWKS alone, and revokes it.
//!
//! `scripts/test.sh` installs the pinned libraries into `.venv-interop` and
//! names its Python in `PHARMAGATE_TEST_PYTHON`; a plain `cargo test`
//! without it skips this test and says so.

use std::process::Command;

use serde_json::{Value, json};

use crate::harness::*;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/interop/stock_client.py");

fn python() -> Option<String> {
    let python = std::env::var("PHARMAGATE_TEST_PYTHON").ok().filter(|p| !p.is_empty());
    if python.is_none() {
        eprintln!(
            "SKIPPED stock-client interop: PHARMAGATE_TEST_PYTHON is not set (scripts/test.sh sets it)"
        );
    }
    python
}

async fn run_stock_client(python: &str, s: &Server, client_id: &str, secret: &str, method: &str) -> Value {
    let path = format!("/v1/products/{ASPIRIN}");
    let out = Command::new(python)
        .args([SCRIPT, &s.base, client_id, secret, method, &path])
        .output()
        .expect("run the stock client");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stock client failed ({method}): {stderr}");
    serde_json::from_slice(&out.stdout).expect("stock client prints JSON")
}

#[tokio::test]
async fn stock_python_oauth_client_and_pyjwt_interoperate() {
    let Some(python) = python() else { return };
    let s = shared_mutable();
    let api = s.api();
    // Authlib's client_secret_basic does not form-encode the credentials
    // (RFC 6749 §2.3.1), so an id with reserved characters goes by
    // client_secret_post there; generated ids never need encoding.
    for (client_id, method) in
        [("pgc-interop-basic", "client_secret_basic"), ("partner:erp/sync 1+2%", "client_secret_post")]
    {
        let body = json!({
            "name": "stock client", "customer": "interop-co", "client_id": client_id,
            "scopes": ["catalog:read", "manufacturing:read"],
        });
        let (id, secret) = api.create_client(s.admin(), &body).await;
        let seen = run_stock_client(&python, s, &id, &secret, method).await;
        assert_eq!(seen["token_type"], "Bearer", "{seen}");
        assert_eq!(seen["scope"], "catalog:read");
        assert_eq!(seen["expires_in"], 900);
        assert_eq!(seen["status_before"], 200);
        assert_eq!(seen["body_before"]["cas"], ASPIRIN);
        assert_eq!(seen["header"]["alg"], "EdDSA");
        assert_eq!(seen["header"]["typ"], "at+jwt");
        let expected = json!({
            "iss": s.base, "sub": client_id, "aud": "pharmagate-api", "client_id": client_id,
            "scope": "catalog:read",
        });
        assert_eq!(seen["claims"], expected);
        assert_eq!(seen["lifetime"], 900);
        assert_eq!(seen["status_after"], 401, "revoked by the stock client: {seen}");
    }
}

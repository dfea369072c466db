//! OAuth 2.0 for partners, end to end: an administrator creates a client, the
//! client gets tokens by client credentials (Basic with form-encoded
//! credentials, or in the body), reads the catalog with them within its
//! scopes and entitlements, and loses access at once when a token is revoked
//! or the client deleted. Errors follow RFC 6749 §5.2.

use serde_json::{Value, json};

use crate::harness::*;

fn client_body(customer: &str, scopes: &[&str]) -> Value {
    json!({"name": format!("{customer} integration"), "customer": customer, "scopes": scopes, "tier": "paid"})
}

#[tokio::test]
async fn a_created_client_reads_the_catalog_with_its_token() {
    let s = shared_mutable();
    let api = s.api();
    let (id, secret) = api.create_client(s.admin(), &client_body("oauth-read-co", &["catalog:read"])).await;
    assert!(id.starts_with("pgc_") && id.len() == 20, "{id}");
    assert!(secret.starts_with("pgcs_") && secret.len() == 48, "{secret}");

    let resp = api
        .post_form("/oauth/token", Some((&id, &secret)), &form(&[("grant_type", "client_credentials")]))
        .await;
    let body = resp.json(200);
    assert_eq!(resp.header("cache-control"), Some("no-store"));
    assert_eq!(resp.header("pragma"), Some("no-cache"));
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 900);
    assert_eq!(body["scope"], "catalog:read");
    assert_eq!(body.as_object().unwrap().len(), 4, "{body}");
    let token = body["access_token"].as_str().unwrap();

    let product = api.get_bearer(&format!("/v1/products/{ASPIRIN}"), token).await.json(200);
    assert_eq!(product["cas"], ASPIRIN);
    // A partner token never reaches key or client management, or writes.
    api.get_bearer("/v1/keys", token).await.assert_gateway_forbidden();
    api.get_bearer("/v1/clients", token).await.assert_gateway_forbidden();
    api.get_bearer(&format!("/v1/products/{TOBRAMYCIN}/manufacturing"), token)
        .await
        .assert_gateway_forbidden();

    // The secret is shown once: listing and showing never carry it.
    let shown = api.get(&format!("/v1/clients/{id}"), s.admin()).await.json(200);
    assert_eq!(shown["client_id"], id.as_str());
    assert_eq!(shown["scopes"], json!(["catalog:read"]));
    assert!(!shown.to_string().contains(&secret) && shown.get("client_secret").is_none());
    let listed = api.get("/v1/clients?customer=oauth-read-co", s.admin()).await.json(200);
    assert_eq!(listed["items"].as_array().unwrap().len(), 1);
    assert_eq!(listed["items"][0]["client_id"], id.as_str());
}

#[tokio::test]
async fn credentials_with_reserved_characters_work_both_ways() {
    let s = shared_mutable();
    let api = s.api();
    let chosen = "acme:erp/sync 1+2%";
    let mut body = client_body("oauth-chars-co", &["catalog:read"]);
    body["client_id"] = json!(chosen);
    let (id, secret) = api.create_client(s.admin(), &body).await;
    assert_eq!(id, chosen);

    // client_secret_basic, form-encoded as RFC 6749 §2.3.1 requires.
    let token = api.token(&id, &secret, None).await;
    assert_eq!(api.get_bearer(&format!("/v1/products/{ASPIRIN}"), &token).await.status, 200);

    // client_secret_post.
    let post = form(&[("grant_type", "client_credentials"), ("client_id", &id), ("client_secret", &secret)]);
    let resp = api.post_form("/oauth/token", None, &post).await;
    assert_eq!(resp.json(200)["token_type"], "Bearer");

    // The same id not form-encoded inside Basic is another client: refused.
    use base64::Engine;
    let raw = base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"));
    let rb = api
        .request(reqwest::Method::POST, "/oauth/token", ANON)
        .header("authorization", format!("Basic {raw}"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("grant_type=client_credentials");
    api.send(rb).await.assert_oauth_error(401, "invalid_client");

    // The path names the client percent-encoded.
    let shown = api.get("/v1/clients/acme%3Aerp%2Fsync%201%2B2%25", s.admin()).await.json(200);
    assert_eq!(shown["client_id"], chosen);
}

#[tokio::test]
async fn unknown_client_and_wrong_secret_are_indistinguishable() {
    let s = shared_mutable();
    let api = s.api();
    let (id, secret) = api.create_client(s.admin(), &client_body("oauth-twin-co", &["catalog:read"])).await;
    let grant = form(&[("grant_type", "client_credentials")]);
    let mut wrong = secret.clone();
    wrong.replace_range(10..11, if &secret[10..11] == "A" { "B" } else { "A" });
    let cases = [
        (id.as_str(), wrong.as_str()),
        ("pgc_doesnotexist00", secret.as_str()),
        ("pgc_doesnotexist00", "pgcs_whatever"),
        (id.as_str(), ""),
        ("", ""),
    ];
    let mut bodies = Vec::new();
    for (cid, sec) in cases {
        let resp = api.post_form("/oauth/token", Some((cid, sec)), &grant).await;
        let mut body = resp.assert_oauth_error(401, "invalid_client");
        body.as_object_mut().unwrap().remove("request_id");
        bodies.push(body);
    }
    // Without credentials at all: the same answer.
    let mut none =
        api.post_form("/oauth/token", None, &grant).await.assert_oauth_error(401, "invalid_client");
    none.as_object_mut().unwrap().remove("request_id");
    bodies.push(none);
    for body in &bodies {
        assert_eq!(body, &bodies[0]);
    }
    assert_eq!(bodies[0]["error_description"], "client authentication failed");
}

#[tokio::test]
async fn token_requests_are_checked_strictly() {
    let s = shared_mutable();
    let api = s.api();
    let (id, secret) = api.create_client(s.admin(), &client_body("oauth-strict-co", &["catalog:read"])).await;
    let basic = Some((id.as_str(), secret.as_str()));
    let post = |pairs: &[(&str, &str)]| form(pairs);

    for grant in ["password", "authorization_code", "refresh_token", "CLIENT_CREDENTIALS"] {
        let resp = api.post_form("/oauth/token", basic, &post(&[("grant_type", grant)])).await;
        resp.assert_oauth_error(400, "unsupported_grant_type");
    }
    api.post_form("/oauth/token", basic, "").await.assert_oauth_error(400, "invalid_request");
    let twice = "grant_type=client_credentials&grant_type=client_credentials";
    api.post_form("/oauth/token", basic, twice).await.assert_oauth_error(400, "invalid_request");
    let broken = "grant_type=client_credentials&scope=%zz";
    api.post_form("/oauth/token", basic, broken).await.assert_oauth_error(400, "invalid_request");
    for scope in ["manufacturing:read", "catalog:read keys:any", "root"] {
        let body = post(&[("grant_type", "client_credentials"), ("scope", scope)]);
        api.post_form("/oauth/token", basic, &body).await.assert_oauth_error(400, "invalid_scope");
    }
    // Basic and client_secret in the body at once: two methods.
    let both = post(&[("grant_type", "client_credentials"), ("client_secret", &secret)]);
    api.post_form("/oauth/token", basic, &both).await.assert_oauth_error(400, "invalid_request");
    // A JSON body is not a token request.
    let rb = api
        .request(reqwest::Method::POST, "/oauth/token", ANON)
        .header("authorization", basic_auth(&id, &secret))
        .json(&json!({"grant_type": "client_credentials"}));
    api.send(rb).await.assert_oauth_error(400, "invalid_request");
    // GET is not allowed on the token endpoint.
    api.get("/oauth/token", ANON).await.problem(405, "method-not-allowed");
}

#[tokio::test]
async fn scopes_and_entitlements_bound_what_a_token_reads() {
    let s = shared_mutable();
    let api = s.api();
    let customer = "oauth-ent-co";
    s.grant(customer, TOBRAMYCIN);
    let scopes = ["catalog:read", "manufacturing:read"];
    let (id, secret) = api.create_client(s.admin(), &client_body(customer, &scopes)).await;

    let full = api.token(&id, &secret, None).await;
    let path = |cas: &str| format!("/v1/products/{cas}/manufacturing");
    let process = api.get_bearer(&path(TOBRAMYCIN), &full).await.json(200);
    assert_eq!(process["cas"], TOBRAMYCIN);
    // Entitled to tobramycin only.
    let other = api.get_bearer(&path(ASPIRIN), &full).await;
    assert!(other.status == 403 || other.status == 404, "{}", other.text());

    // A token asking for less gets less.
    let narrow = api.token(&id, &secret, Some("catalog:read")).await;
    api.get_bearer(&path(TOBRAMYCIN), &narrow).await.assert_gateway_forbidden();
    assert_eq!(api.get_bearer(&format!("/v1/products/{ASPIRIN}"), &narrow).await.status, 200);
}

#[tokio::test]
async fn revocation_and_deletion_end_access_at_once() {
    let s = shared_mutable();
    let api = s.api();
    let (id, secret) = api.create_client(s.admin(), &client_body("oauth-revoke-co", &["catalog:read"])).await;
    let basic = Some((id.as_str(), secret.as_str()));
    let product = format!("/v1/products/{ASPIRIN}");

    let token = api.token(&id, &secret, None).await;
    let keep = api.token(&id, &secret, None).await;
    assert_eq!(api.get_bearer(&product, &token).await.status, 200);
    let active = api.post_form("/oauth/introspect", basic, &form(&[("token", &token)])).await.json(200);
    assert_eq!(active["active"], true);
    assert_eq!(active["client_id"], id.as_str());
    assert_eq!(active["scope"], "catalog:read");
    assert_eq!(active["token_type"], "Bearer");

    let revoked = api.post_form("/oauth/revoke", basic, &form(&[("token", &token)])).await;
    assert_eq!(revoked.status, 200, "{}", revoked.text());
    api.get_bearer(&product, &token).await.assert_unauthorized();
    let inactive = api.post_form("/oauth/introspect", basic, &form(&[("token", &token)])).await.json(200);
    assert_eq!(inactive, json!({"active": false}));
    // Other tokens of the client still work; revoking junk is a quiet 200.
    assert_eq!(api.get_bearer(&product, &keep).await.status, 200);
    let junk = api.post_form("/oauth/revoke", basic, &form(&[("token", "not-a-token")])).await;
    assert_eq!(junk.status, 200);
    // Revocation needs the client's own credentials.
    let anonymous = api.post_form("/oauth/revoke", None, &form(&[("token", &keep)])).await;
    anonymous.assert_oauth_error(401, "invalid_client");

    // Another client can neither revoke nor inspect this client's token.
    let (other, other_secret) =
        api.create_client(s.admin(), &client_body("oauth-revoke-other", &["catalog:read"])).await;
    let other_basic = Some((other.as_str(), other_secret.as_str()));
    assert_eq!(api.post_form("/oauth/revoke", other_basic, &form(&[("token", &keep)])).await.status, 200);
    assert_eq!(api.get_bearer(&product, &keep).await.status, 200);
    let peek = api.post_form("/oauth/introspect", other_basic, &form(&[("token", &keep)])).await.json(200);
    assert_eq!(peek, json!({"active": false}));

    // Deleting the client ends every token it holds.
    assert_eq!(api.delete(&format!("/v1/clients/{id}"), s.admin()).await.status, 204);
    api.get_bearer(&product, &keep).await.assert_unauthorized();
    let again = form(&[("grant_type", "client_credentials")]);
    api.post_form("/oauth/token", basic, &again).await.assert_oauth_error(401, "invalid_client");
    api.get(&format!("/v1/clients/{id}"), s.admin()).await.problem(404, "not-found");
}

#[tokio::test]
async fn rotating_a_client_secret_keeps_the_old_one_for_the_grace_period_only() {
    let s = shared_mutable();
    let api = s.api();
    let (id, old) = api.create_client(s.admin(), &client_body("oauth-rotate-co", &["catalog:read"])).await;
    let path = format!("/v1/clients/{id}/rotate-secret");

    let rotated = api.post_json(&path, s.admin(), &json!({"grace_period_seconds": 3600})).await.json(200);
    let new = rotated["client_secret"].as_str().unwrap().to_string();
    assert_ne!(new, old);
    assert!(rotated["previous_secret_expires_at"].is_string(), "{rotated}");
    api.token(&id, &new, None).await;
    api.token(&id, &old, None).await;

    // A leaked secret: rotate with no grace, and the old one stops at once.
    let leaked = api.post_json(&path, s.admin(), &json!({"grace_period_seconds": 0})).await.json(200);
    let newest = leaked["client_secret"].as_str().unwrap().to_string();
    assert_eq!(leaked["previous_secret_expires_at"], Value::Null);
    let grant = form(&[("grant_type", "client_credentials")]);
    for stale in [&old, &new] {
        let resp = api.post_form("/oauth/token", Some((&id, stale)), &grant).await;
        resp.assert_oauth_error(401, "invalid_client");
    }
    api.token(&id, &newest, None).await;
}

#[tokio::test]
async fn only_administrators_manage_clients_and_bad_definitions_are_refused() {
    let s = shared_mutable();
    let api = s.api();
    let body = client_body("oauth-admin-co", &["catalog:read"]);
    api.post_json("/v1/clients", s.demo(), &body).await.assert_gateway_forbidden();
    let developer = s.issue_key("oauth-admin-co", "developer", "paid");
    api.post_json("/v1/clients", &developer, &body).await.assert_gateway_forbidden();

    let bad = [
        (json!({"name": "x", "customer": "c-co", "scopes": ["keys:own"]}), "scopes"),
        (json!({"name": "x", "customer": "c-co", "scopes": ["clients:manage"]}), "scopes"),
        (json!({"name": "x", "customer": "c-co", "scopes": []}), "scopes"),
        (json!({"name": "x", "customer": "c-co", "scopes": ["catalog:read manufacturing:read"]}), "scopes"),
        (json!({"name": "x", "customer": "C CO", "scopes": ["catalog:read"]}), "customer"),
        (json!({"name": " ", "customer": "c-co", "scopes": ["catalog:read"]}), "name"),
        (json!({"name": "x", "customer": "c-co", "scopes": ["catalog:read"], "tier": "gold"}), "tier"),
        (
            json!({"name": "x", "customer": "c-co", "scopes": ["catalog:read"], "client_id": "a\u{e9}b"}),
            "client_id",
        ),
    ];
    for (body, field) in bad {
        let resp = api.post_json("/v1/clients", s.admin(), &body).await;
        assert_eq!(resp.problem(400, "validation")["field"], field, "{body}");
    }
    let unknown = json!({"name": "x", "customer": "c-co", "scopes": ["catalog:read"], "role": "admin"});
    api.post_json("/v1/clients", s.admin(), &unknown).await.problem(400, "malformed-body");

    let mut chosen = body.clone();
    chosen["client_id"] = json!("oauth-admin-fixed");
    api.create_client(s.admin(), &chosen).await;
    api.post_json("/v1/clients", s.admin(), &chosen).await.problem(409, "client-exists");
}

#[tokio::test]
async fn discovery_documents_describe_the_server() {
    let s = shared_readonly();
    let api = s.api();
    let meta = api.get("/.well-known/oauth-authorization-server", ANON).await.json(200);
    assert_eq!(meta["issuer"], s.base.as_str());
    assert_eq!(meta["token_endpoint"], format!("{}/oauth/token", s.base));
    assert_eq!(meta["jwks_uri"], format!("{}/.well-known/jwks.json", s.base));
    assert_eq!(meta["grant_types_supported"], json!(["client_credentials"]));
    assert_eq!(
        meta["token_endpoint_auth_methods_supported"],
        json!(["client_secret_basic", "client_secret_post"])
    );
    assert_eq!(meta["scopes_supported"], json!(["catalog:read", "manufacturing:read"]));

    let resp = api.get("/.well-known/jwks.json", ANON).await;
    assert_eq!(resp.header("content-type"), Some("application/jwk-set+json"));
    let jwks: Value = serde_json::from_slice(&resp.body).unwrap();
    let keys = jwks["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1, "{jwks}");
    let key = keys[0].as_object().unwrap();
    let mut names: Vec<&str> = key.keys().map(String::as_str).collect();
    names.sort_unstable();
    // Public members only: never `d`.
    assert_eq!(names, ["alg", "crv", "kid", "kty", "use", "x"]);
    assert_eq!(
        (key["kty"].as_str(), key["crv"].as_str(), key["alg"].as_str()),
        (Some("OKP"), Some("Ed25519"), Some("EdDSA"))
    );
}

#[tokio::test]
async fn old_tokens_never_pass_to_a_recreated_client_or_survive_a_leaked_secret() {
    let s = shared_mutable();
    let api = s.api();
    s.grant("oauth-heir-co", ASPIRIN);
    let manufacturing = format!("/v1/products/{ASPIRIN}/manufacturing");
    let scopes = ["catalog:read", "manufacturing:read"];
    let mut first = client_body("oauth-victim-co", &scopes);
    first["client_id"] = json!("oauth-reused-id");
    let (id, secret) = api.create_client(s.admin(), &first).await;
    let old = api.token(&id, &secret, None).await;
    api.get_bearer(&manufacturing, &old).await.problem(403, "forbidden"); // victim is not entitled

    // The id is deleted and registered again for a customer that is entitled:
    // the old token must not pass to the new owner.
    assert_eq!(api.delete(&format!("/v1/clients/{id}"), s.admin()).await.status, 204);
    let mut second = client_body("oauth-heir-co", &scopes);
    second["client_id"] = json!("oauth-reused-id");
    let (_, heir_secret) = api.create_client(s.admin(), &second).await;
    api.get_bearer(&manufacturing, &old).await.assert_unauthorized();
    let basic = Some((id.as_str(), heir_secret.as_str()));
    let peek = api.post_form("/oauth/introspect", basic, &form(&[("token", &old)])).await.json(200);
    assert_eq!(peek, json!({"active": false}));
    let heir = api.token(&id, &heir_secret, None).await;
    assert_eq!(api.get_bearer(&manufacturing, &heir).await.json(200)["cas"], ASPIRIN);

    // Rotation with a grace period keeps tokens; without one (a leaked
    // secret) it retires every token minted before.
    let rotate = format!("/v1/clients/{id}/rotate-secret");
    let graced = api.post_json(&rotate, s.admin(), &json!({"grace_period_seconds": 600})).await.json(200);
    assert_eq!(api.get_bearer(&manufacturing, &heir).await.status, 200);
    let newer = graced["client_secret"].as_str().unwrap();
    let kept = api.token(&id, newer, None).await;
    api.post_json(&rotate, s.admin(), &json!({"grace_period_seconds": 0})).await.json(200);
    for retired in [&heir, &kept] {
        api.get_bearer(&manufacturing, retired).await.assert_unauthorized();
    }
}

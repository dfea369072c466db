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
    // Credentials or anything else in the query: refused in the endpoints'
    // own error shape, before the client is authenticated.
    let grant = post(&[("grant_type", "client_credentials")]);
    for path in ["/oauth/token", "/oauth/revoke", "/oauth/introspect"] {
        let target = format!("{path}?client_secret=x");
        let body = api.post_form(&target, basic, &grant).await.assert_oauth_error(400, "invalid_request");
        assert_eq!(
            body["error_description"], "client_secret: this route takes no query parameters",
            "{body}"
        );
    }
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

// ------------------------------------------------- limits on the token endpoint --

/// Free tier: 5 per hour-long window (so a burst cannot straddle two
/// windows), 1,000 a day; one customer's override: a daily quota of 3.
const TOKEN_LIMITS: &str = r#"{"free": {"rate": 5, "window_seconds": 3600, "daily_quota": 1000},
    "overrides": {"customer:oauth-quota-co": {"rate": 100, "window_seconds": 3600, "daily_quota": 3},
                  "customer:oauth-revoke-co": {"rate": 3, "window_seconds": 3600, "daily_quota": 1000}}}"#;
const FREE_POLICY: &str = "\"rate\";q=5;w=3600, \"daily\";q=1000;w=86400";

fn limited_server(limits: &str, guard: &str) -> Server {
    let env = vec![
        ("PHARMAGATE_RATE_LIMITS".to_string(), limits.to_string()),
        ("PHARMAGATE_AUTH_GUARD".to_string(), guard.to_string()),
    ];
    Server::start_with(Opts { env, ..Opts::default() })
}

/// `n` token requests at once by one client.
async fn token_burst(api: &Api, id: &str, secret: &str, n: usize) -> Vec<Resp> {
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let (api, id, secret) = (api.clone(), id.to_string(), secret.to_string());
            tokio::spawn(async move {
                let grant = form(&[("grant_type", "client_credentials")]);
                api.post_form("/oauth/token", Some((&id, &secret)), &grant).await
            })
        })
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

/// A token request over a limit: 429 in the token endpoint's error shape
/// (RFC 6749 §5.2 members and the RFC 9457 ones), with `Retry-After` and the
/// `RateLimit` fields as on every limited route. Returns `Retry-After`.
fn assert_token_rate_limited(r: &Resp, policy: &str, exhausted: &str) -> u64 {
    let body = r.assert_oauth_error(429, "slow_down");
    assert_eq!(body["type"], "urn:pharmagate:problem:oauth-slow-down", "{body}");
    assert_eq!(body["status"], 429, "{body}");
    assert_eq!(body["request_id"].as_str(), r.header("x-amzn-requestid"), "{body}");
    let description = body["error_description"].as_str().unwrap();
    assert!(description.starts_with("rate limit or daily quota exceeded; retry in "), "{body}");
    assert!(body.get("access_token").is_none(), "{body}");
    assert_eq!(r.header("pragma"), Some("no-cache"));
    assert_eq!(r.header("ratelimit-policy"), Some(policy));
    let state = r.header("ratelimit").unwrap();
    assert!(state.contains(exhausted), "{state} should show {exhausted}");
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!(description.ends_with(&format!("retry in {retry} s")), "{body}");
    retry
}

#[tokio::test]
async fn token_requests_are_counted_against_the_clients_limits() {
    let s = limited_server(TOKEN_LIMITS, SUITE_AUTH_GUARD);
    let api = s.api();
    away_from_the_hour_boundary().await;
    let mut body = client_body("oauth-burst-co", &["catalog:read"]);
    body["tier"] = json!("free");
    let (id, secret) = api.create_client(s.admin(), &body).await;

    // A failed authentication is the guard's: it uses none of the limits.
    let grant = form(&[("grant_type", "client_credentials")]);
    let wrong = api.post_form("/oauth/token", Some((&id, "pgcs_wrong")), &grant).await;
    wrong.assert_oauth_error(401, "invalid_client");
    assert!(wrong.header("ratelimit").is_none() && wrong.header("ratelimit-policy").is_none());

    // N = 2L token requests at once against a rate of L = 5: exactly 5 pass.
    let responses = token_burst(&api, &id, &secret, 10).await;
    let ok: Vec<&Resp> = responses.iter().filter(|r| r.status == 200).collect();
    let limited: Vec<&Resp> = responses.iter().filter(|r| r.status == 429).collect();
    assert_eq!((ok.len(), limited.len()), (5, 5), "10 at once against a limit of 5");
    for r in &limited {
        let retry = assert_token_rate_limited(r, FREE_POLICY, "\"rate\";r=0;t=");
        assert!((1..=3600).contains(&retry), "{retry}");
    }
    // The admitted ones carry the fields too, and saw 4, 3, 2, 1, 0 remaining.
    let mut remaining: Vec<String> = ok
        .iter()
        .map(|r| {
            assert_eq!(r.json(200)["token_type"], "Bearer");
            assert_eq!(r.header("ratelimit-policy"), Some(FREE_POLICY));
            r.header("ratelimit").unwrap().split(';').nth(1).unwrap().to_string()
        })
        .collect();
    remaining.sort();
    assert_eq!(remaining, ["r=0", "r=1", "r=2", "r=3", "r=4"]);

    // The same counters as the client's API calls: its tokens are limited now
    // too; the refused token requests used no quota.
    let token = ok[0].json(200)["access_token"].as_str().unwrap().to_string();
    let read = api.get_bearer(&format!("/v1/products/{ASPIRIN}"), &token).await;
    read.problem(429, "rate-limited");
    let usage = api.get(&format!("/v1/usage?principal={id}"), s.admin()).await.json(200);
    assert_eq!(usage["tier"], "free", "{usage}");
    assert_eq!(usage["usage"]["rate"]["used"], 5, "{usage}");
    assert_eq!(usage["usage"]["daily"]["used"], 5, "{usage}");
}

/// Introspection is counted like the token request: against the same
/// limits once the client has authenticated, refused over them before the
/// token is looked at. Revocation is never limited: a client can revoke a
/// stolen token even when its holder has used up the client's limits.
#[tokio::test]
async fn introspection_is_counted_and_revocation_never_limited() {
    let s = limited_server(TOKEN_LIMITS, SUITE_AUTH_GUARD);
    let api = s.api();
    away_from_the_hour_boundary().await;
    let (id, secret) = api.create_client(s.admin(), &client_body("oauth-revoke-co", &["catalog:read"])).await;
    let policy = "\"rate\";q=3;w=3600, \"daily\";q=1000;w=86400";
    let remaining = |r: &Resp| {
        assert_eq!(r.header("ratelimit-policy"), Some(policy));
        r.header("ratelimit").unwrap().split(';').nth(1).unwrap().to_string()
    };
    let grant = form(&[("grant_type", "client_credentials")]);
    let issued = api.post_form("/oauth/token", Some((&id, &secret)), &grant).await;
    let stolen = issued.json(200)["access_token"].as_str().unwrap().to_string();
    assert_eq!(remaining(&issued), "r=2");
    let about = form(&[("token", &stolen)]);
    let introspected = api.post_form("/oauth/introspect", Some((&id, &secret)), &about).await;
    assert_eq!(introspected.json(200)["active"], true);
    assert_eq!(remaining(&introspected), "r=1");
    // The thief uses the client's last unit with the stolen token.
    assert_eq!(api.get_bearer(&format!("/v1/products/{ASPIRIN}"), &stolen).await.status, 200);

    // A wrong secret is the guard's: 401, no limits spent or shown.
    let wrong = api.post_form("/oauth/introspect", Some((&id, "pgcs_wrong")), &about).await;
    wrong.assert_oauth_error(401, "invalid_client");
    assert!(wrong.header("ratelimit").is_none() && wrong.header("ratelimit-policy").is_none());

    // Over the rate: introspection and new tokens are 429 slow_down …
    for (path, body) in [("/oauth/introspect", &about), ("/oauth/token", &grant)] {
        let r = api.post_form(path, Some((&id, &secret)), body).await;
        let retry = assert_token_rate_limited(&r, policy, "\"rate\";r=0;t=");
        assert!((1..=3600).contains(&retry), "{path}: {retry}");
    }
    // … but the client still revokes the stolen token, and it is dead at once.
    let revoked = api.post_form("/oauth/revoke", Some((&id, &secret)), &about).await;
    assert_eq!(revoked.status, 200, "{}", revoked.text());
    assert!(revoked.header("ratelimit").is_none());
    api.get_bearer(&format!("/v1/products/{ASPIRIN}"), &stolen).await.assert_unauthorized();
    let usage = api.get(&format!("/v1/usage?principal={id}"), s.admin()).await.json(200);
    assert_eq!(usage["usage"]["rate"]["used"], 3, "{usage}");
    assert_eq!(usage["usage"]["daily"]["used"], 3, "{usage}");
}

#[tokio::test]
async fn token_requests_use_the_customers_daily_quota_and_internal_clients_are_not_limited() {
    let s = limited_server(TOKEN_LIMITS, SUITE_AUTH_GUARD);
    let api = s.api();
    let mut body = client_body("oauth-quota-co", &["catalog:read"]);
    body["tier"] = json!("free");
    let (id, secret) = api.create_client(s.admin(), &body).await;
    // The quota is the customer's: a second client shares it.
    let (other, other_secret) = api.create_client(s.admin(), &body).await;
    let policy = "\"rate\";q=100;w=3600, \"daily\";q=3;w=86400";
    api.token(&id, &secret, None).await;
    api.token(&other, &other_secret, None).await;
    api.token(&id, &secret, None).await;
    let grant = form(&[("grant_type", "client_credentials")]);
    for (cid, sec) in [(&id, &secret), (&other, &other_secret)] {
        let r = api.post_form("/oauth/token", Some((cid, sec)), &grant).await;
        let retry = assert_token_rate_limited(&r, policy, "\"daily\";r=0;t=");
        assert!((1..=86_400).contains(&retry), "{retry}");
        // Audited as every limited request is: the client, denied, rate-limited.
        let request_id = r.header("x-amzn-requestid").unwrap();
        let trail = api.get(&format!("/v1/audit?principal={cid}&limit=100"), s.admin()).await.json(200);
        let items = trail["items"].as_array().unwrap();
        let record = items.iter().find(|i| i["request_id"] == request_id).expect("an audit record");
        assert_eq!(
            (&record["route"], &record["customer"], &record["role"]),
            (&json!("/oauth/token"), &json!("oauth-quota-co"), &json!("partner")),
            "{record}"
        );
        assert_eq!(
            (&record["decision"], &record["reason"], &record["status"]),
            (&json!("denied"), &json!("rate-limited"), &json!(429)),
            "{record}"
        );
    }

    // An internal client is unlimited, and gets no RateLimit fields.
    let mut body = client_body("oauth-internal-co", &["catalog:read"]);
    body["tier"] = json!("internal");
    let (id, secret) = api.create_client(s.admin(), &body).await;
    let responses = token_burst(&api, &id, &secret, 12).await;
    for r in &responses {
        assert_eq!(r.json(200)["token_type"], "Bearer");
        assert!(r.header("ratelimit").is_none() && r.header("ratelimit-policy").is_none());
    }
}

#[tokio::test]
async fn repeated_wrong_secrets_are_throttled_before_the_secret_is_checked() {
    let guard = r#"{"free_failures": 2, "window_seconds": 600, "max_backoff_seconds": 60}"#;
    let s = limited_server(SUITE_RATE_LIMITS, guard);
    let api = s.api();
    let (id, secret) = api.create_client(s.admin(), &client_body("oauth-guess-co", &["catalog:read"])).await;
    let grant = form(&[("grant_type", "client_credentials")]);
    let guesser = api.via_address("127.0.0.60");
    // Two failures are free; the third blocks this address and this client
    // id for 2 s (then 4, 8 …).
    for _ in 0..3 {
        let r = guesser.post_form("/oauth/token", Some((&id, "pgcs_wrong")), &grant).await;
        r.assert_oauth_error(401, "invalid_client");
    }
    // From the blocked address, before any lookup or comparison: a wrong
    // secret and the right one alike are refused with 429 and Retry-After.
    for attempt in ["pgcs_wrong", secret.as_str()] {
        let r = guesser.post_form("/oauth/token", Some((&id, attempt)), &grant).await;
        let body = r.assert_oauth_error(429, "slow_down");
        assert!(matches!(r.header("retry-after"), Some("1" | "2")), "{body}");
        let description = body["error_description"].as_str().unwrap();
        assert!(description.starts_with("too many failed authentications; retry in "), "{body}");
        // Not a counted request: no RateLimit fields.
        assert!(r.header("ratelimit").is_none() && r.header("ratelimit-policy").is_none());
    }
    // The client id is blocked too: a guess from a fresh address is 429 …
    let fresh = api.via_address("127.0.0.61");
    let r = fresh.post_form("/oauth/token", Some((&id, "pgcs_wrong")), &grant).await;
    r.assert_oauth_error(429, "slow_down");
    // … but its id is no secret, so others' guesses never lock out the
    // client itself: the right secret from another address passes.
    api.via_address("127.0.0.62").token(&id, &secret, None).await;
}

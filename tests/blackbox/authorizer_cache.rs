//! With the authorizer's answer cached per key, the cached policy must decide
//! every route exactly as a fresh one would.

use serde_json::json;

use crate::harness::*;

#[tokio::test]
async fn a_cached_policy_covers_every_route_correctly() {
    let server = Server::start_with(Opts {
        extra_args: vec!["--authorizer-cache-ttl".into(), "300".into()],
        ..Opts::default()
    });
    let api = server.api();
    let demo = server.demo().to_string();
    let admin = server.admin().to_string();

    // The admin's policy is cached first; it must not leak to other keys.
    assert_eq!(api.get("/v1/keys", &admin).await.status, 200);

    // Demo customer: the first request caches its policy (for a product read).
    assert_eq!(api.get(&format!("/v1/products/{ASPIRIN}"), &demo).await.json(200)["cas"], ASPIRIN);
    // Entitled to tobramycin, but the customer role has no manufacturing access.
    api.get(&format!("/v1/products/{TOBRAMYCIN}/manufacturing"), &demo).await.assert_gateway_forbidden();
    api.get(&format!("/v1/products/{ASPIRIN}/manufacturing"), &demo).await.assert_gateway_forbidden();
    let body = json!({"name": "x", "molecular_formula": "C", "molecular_weight": 1});
    api.put_json(&format!("/v1/products/{ASPIRIN}"), &demo, &body).await.assert_gateway_forbidden();
    api.delete(&format!("/v1/products/{ASPIRIN}"), &demo).await.assert_gateway_forbidden();
    let keys = api.get("/v1/keys", &demo).await.json(200);
    assert!(keys["items"].as_array().unwrap().iter().all(|k| k["customer"] == "demo-customer"), "{keys}");
    assert_eq!(api.get("/v1/products?name=tob", &demo).await.status, 200);
    assert_eq!(api.get(&format!("/dev/v1/products/{BLZ945}"), &demo).await.status, 200);
    let issued = api.post_json("/v1/keys", &demo, &json!({})).await.json(201);
    let issued_id = issued["id"].as_str().unwrap();
    let rotated = api
        .post_json(&format!("/v1/keys/{issued_id}/rotate"), &demo, &json!({"grace_period_seconds": 0}))
        .await
        .json(201);
    let r = api.delete(&format!("/v1/keys/{}", rotated["id"].as_str().unwrap()), &demo).await;
    assert_eq!(r.status, 204);
    // Still refused after all those cached allows.
    api.get(&format!("/v1/products/{TOBRAMYCIN}/manufacturing"), &demo).await.assert_gateway_forbidden();

    // A partner whose policy was cached on a read gets manufacturing data
    // where entitled, and the function's 403 elsewhere.
    let partner = server.issue_key("cache-partner", "partner", "paid");
    server.grant("cache-partner", TOBRAMYCIN);
    assert_eq!(api.get(&format!("/v1/products/{BLZ945}"), &partner).await.status, 200);
    let mfg = api.get(&format!("/v1/products/{TOBRAMYCIN}/manufacturing"), &partner).await.json(200);
    assert_eq!(mfg["cas"], TOBRAMYCIN);
    let detail = format!("customer cache-partner has no entitlement to manufacturing data of {ASPIRIN}");
    api.get(&format!("/v1/products/{ASPIRIN}/manufacturing"), &partner).await.assert_problem(
        403,
        "forbidden",
        None,
        &detail,
    );
    api.put_json(&format!("/v1/products/{ASPIRIN}"), &partner, &body).await.assert_gateway_forbidden();
    assert_eq!(api.get("/v1/keys", &partner).await.status, 200);

    // A developer cached on the keys route may still write but not delete.
    let developer = server.issue_key("cache-developer", "developer", "paid");
    assert_eq!(api.get("/v1/keys", &developer).await.status, 200);
    let c = cas(9_600_001, 61);
    assert_eq!(api.put_json(&format!("/v1/products/{c}"), &developer, &body).await.status, 201);
    api.delete(&format!("/v1/products/{c}"), &developer).await.assert_gateway_forbidden();
    api.get(&format!("/v1/products/{c}/manufacturing"), &developer).await.problem(403, "forbidden");

    // The admin's cached policy still opens everything.
    assert_eq!(api.get(&format!("/v1/products/{ASPIRIN}/manufacturing"), &admin).await.status, 200);
    assert_eq!(api.delete(&format!("/v1/products/{c}"), &admin).await.status, 204);

    // Failed authentications are not cached as successes.
    api.get("/v1/keys", "garbage").await.assert_unauthorized();
    api.get("/v1/keys", "garbage").await.assert_unauthorized();
    api.get("/v1/keys", ANON).await.assert_unauthorized();
}

/// The cache is keyed by the header the gateway checks; the authorizer must
/// authenticate that same value, or one key's policy is cached under another.
#[tokio::test]
async fn a_cached_policy_is_never_stored_under_another_key() {
    let server = Server::start_with(Opts {
        extra_args: vec!["--authorizer-cache-ttl".into(), "300".into()],
        ..Opts::default()
    });
    let api = server.api();
    let stranger = forge_key("dev", "strangerkey1");
    let rb = api
        .request(reqwest::Method::GET, "/v1/keys", ANON)
        .header("x-api-key", stranger.as_str())
        .header("x-api-key", server.admin());
    // Refused, and it must not bind the admin's policy to the stranger's key.
    api.send(rb).await.assert_unauthorized();
    // A key nobody issued must never act as the admin.
    api.get("/v1/keys", &stranger).await.assert_unauthorized();
}

/// The authorizer's answer depends on the source address (a blocked address
/// waits, whatever key it sends), so a cached answer for a key from one
/// address never admits that key from a blocked one, and a block's answer is
/// never cached for the key.
#[tokio::test]
async fn a_cached_answer_never_lets_a_blocked_address_through() {
    let guard = r#"{"free_failures": 1, "window_seconds": 3600, "max_backoff_seconds": 600}"#;
    let server = Server::start_with(Opts {
        extra_args: vec!["--authorizer-cache-ttl".into(), "300".into()],
        env: vec![("PHARMAGATE_AUTH_GUARD".to_string(), guard.to_string())],
    });
    away_from_the_hour_boundary().await;
    let key = server.issue_key("cache-guard-co", "customer", "free");
    let path = format!("/v1/products/{ASPIRIN}");
    let (home, blocked, other) = (
        server.api().via_address("127.0.0.81"),
        server.api().via_address("127.0.0.82"),
        server.api().via_address("127.0.0.83"),
    );
    // The key's answer is cached from its home address.
    assert_eq!(home.get(&path, &key).await.status, 200);
    // Another address fails twice: the second failure blocks it for 2 s.
    blocked.get(&path, "garbage").await.assert_unauthorized();
    blocked.get(&path, "garbage").await.assert_unauthorized();
    // The cached answer is not that address's: the right key waits there …
    let refused = blocked.get(&path, &key).await;
    refused.problem(429, "too-many-failures");
    assert!(matches!(refused.header("retry-after"), Some("1" | "2")), "{:?}", refused.header("retry-after"));
    // … and that refusal was not cached for the key: from its home and from a
    // third address it still reads.
    assert_eq!(home.get(&path, &key).await.status, 200);
    assert_eq!(other.get(&path, &key).await.status, 200);
}

/// With the authorizer's answers cached, a key revoked a moment ago still
/// arrives with its cached principal (as behind API Gateway's cache), but it
/// can no longer issue, rotate or revoke keys: those are re-checked against
/// the key's record, so a leaked key cannot mint a successor that outlives
/// its revocation.
#[tokio::test]
async fn a_revoked_key_with_a_cached_answer_cannot_manage_keys() {
    let server = Server::start_with(Opts {
        extra_args: vec!["--authorizer-cache-ttl".into(), "300".into()],
        ..Opts::default()
    });
    let api = server.api();
    let key = server.issue_key("cache-revoke-co", "customer", "free");
    let id = key_id(&key).to_string();
    // Cached for every route the customer role may use.
    assert_eq!(api.get("/v1/keys", &key).await.status, 200);
    assert_eq!(api.delete(&format!("/v1/keys/{id}"), server.admin()).await.status, 204);
    // The cached answer still reads (so what follows reaches the function).
    assert_eq!(api.get("/v1/keys", &key).await.status, 200);
    api.post_json("/v1/keys", &key, &json!({})).await.assert_unauthorized();
    api.post_json(&format!("/v1/keys/{id}/rotate"), &key, &json!({})).await.assert_unauthorized();
    api.delete(&format!("/v1/keys/{id}"), &key).await.assert_unauthorized();
    // No key was minted for the customer after the revocation.
    let listed = api.get("/v1/keys?customer=cache-revoke-co", server.admin()).await.json(200);
    let ids: Vec<&str> =
        listed["items"].as_array().unwrap().iter().map(|k| k["id"].as_str().unwrap()).collect();
    assert_eq!(ids, [id.as_str()], "{listed}");
}

//! Authentication: every way a key can be wrong gets the same 401, the same
//! body (except its request id) and the same `WWW-Authenticate` header.

use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::*;

/// A key issued in another data directory: well formed, valid checksum, but
/// unknown here (and, with `env`, of another environment).
fn foreign_key(env: &[(&str, &str)]) -> String {
    let dir = tempfile::tempdir().unwrap();
    issue_key_env(&dir.path().join("data"), "elsewhere", "admin", "internal", env)
}

fn rotate(api: &Api, key: &str, grace: i64) -> impl std::future::Future<Output = Resp> {
    let path = format!("/v1/keys/{}/rotate", key_id(key));
    let body = json!({"grace_period_seconds": grace});
    let api = api.clone();
    let key = key.to_string();
    async move { api.post_json(&path, &key, &body).await }
}

#[tokio::test]
async fn every_bad_key_gets_the_same_401() {
    let s = shared_mutable();
    let api = s.api();
    let path = format!("/v1/products/{ASPIRIN}");

    let good = s.issue_key("authn-co", "customer", "free");
    assert_eq!(api.get(&path, &good).await.status, 200);

    // The checksum helper agrees with real keys, so forged keys below differ
    // from real ones only where they mean to.
    let (body, sum) = good.split_at(good.len() - 6);
    assert_eq!(key_checksum(body), sum);

    let mut wrong_checksum = good.clone();
    let last = wrong_checksum.pop().unwrap();
    wrong_checksum.push(if last == 'A' { 'B' } else { 'A' });

    let unknown_id = foreign_key(&[]);
    assert!(unknown_id.starts_with("pg_dev_"), "{unknown_id}");
    let other_env = foreign_key(&[("PHARMAGATE_ENV_NAME", "test")]);
    assert!(other_env.starts_with("pg_test_"), "{other_env}");
    // Another environment's key with the id of a key that exists here.
    let other_env_same_id = forge_key("test", key_id(&good));
    // The real id of an active key with a secret nobody issued.
    let wrong_secret = forge_key("dev", key_id(&good));

    let revoked = s.issue_key("authn-co", "customer", "free");
    assert_eq!(api.get(&path, &revoked).await.status, 200);
    s.revoke_cli(&revoked);

    let rotated_away = s.issue_key("authn-co", "customer", "free");
    let successor = rotate(&api, &rotated_away, 0).await.json(201)["key"].as_str().unwrap().to_string();
    assert_eq!(api.get(&path, &successor).await.status, 200, "the new key works at once");

    let expiring = s.issue_key("authn-co", "customer", "free");
    let expiring_successor = rotate(&api, &expiring, 1).await.json(201)["key"].as_str().unwrap().to_string();

    let in_grace = s.issue_key("authn-co", "customer", "free");
    let in_grace_successor = rotate(&api, &in_grace, 30).await.json(201)["key"].as_str().unwrap().to_string();
    // Within the grace period both keys work.
    assert_eq!(api.get(&path, &in_grace).await.status, 200);
    assert_eq!(api.get(&path, &in_grace_successor).await.status, 200);
    let listed = api.get("/v1/keys?limit=100", &in_grace).await.json(200);
    let old = listed["items"].as_array().unwrap().iter().find(|k| k["id"] == key_id(&in_grace)).unwrap();
    assert_eq!(old["status"], "active");
    assert_eq!(old["replaced_by"], key_id(&in_grace_successor));
    assert!(old["expires_at"].is_string(), "grace end is shown: {old}");

    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(api.get(&path, &expiring_successor).await.status, 200);

    let cases: Vec<(&str, Option<String>)> = vec![
        ("missing", None),
        ("empty", Some(String::new())),
        ("malformed", Some("hello".into())),
        ("wrong prefix", Some(good.replacen("pg_", "pk_", 1))),
        ("truncated", Some(good[..good.len() - 1].to_string())),
        ("too long", Some(format!("{good}{}", "x".repeat(100)))),
        ("wrong checksum", Some(wrong_checksum)),
        ("unknown id with valid checksum", Some(unknown_id)),
        ("known id, wrong secret, valid checksum", Some(wrong_secret)),
        ("revoked", Some(revoked)),
        ("rotated with grace 0", Some(rotated_away)),
        ("grace period over", Some(expiring)),
        ("another environment", Some(other_env)),
        ("another environment, known id", Some(other_env_same_id)),
    ];
    let mut first: Option<Value> = None;
    for (what, key) in &cases {
        // A read, a write and a keys route: 401 comes before anything else.
        let requests = [
            api.request(reqwest::Method::GET, &path, Key(key.as_deref())),
            api.request(reqwest::Method::PUT, &path, Key(key.as_deref()))
                .header("content-type", "text/plain"),
            api.request(reqwest::Method::GET, "/v1/keys", Key(key.as_deref())),
            api.request(reqwest::Method::GET, "/dev/v1/products/50-78-2/manufacturing", Key(key.as_deref())),
        ];
        for rb in requests {
            let r = api.send(rb).await;
            assert_eq!(r.status, 401, "{what}: {}", r.text());
            r.assert_unauthorized();
            let body = r.problem_without_id();
            match &first {
                None => first = Some(body),
                Some(f) => assert_eq!(&body, f, "{what}: identical bodies"),
            }
        }
    }
    // The successor of the expired key still works; so does the good key.
    assert_eq!(api.get(&path, &in_grace_successor).await.status, 200);
    assert_eq!(api.get(&path, &good).await.status, 200);
}

/// Two `x-api-key` headers are refused, in any order and even when equal
/// (the gateway checks the first value, API Gateway passes the authorizer
/// the last one: picking either would be ambiguous).
#[tokio::test]
async fn a_repeated_key_header_is_refused() {
    let s = shared_mutable();
    let api = s.api();
    let good = s.issue_key("repeat-co", "customer", "free");
    let path = format!("/v1/products/{ASPIRIN}");
    for (first, second) in
        [(good.as_str(), "garbage"), ("garbage", good.as_str()), (good.as_str(), good.as_str())]
    {
        let rb = api
            .request(reqwest::Method::GET, &path, ANON)
            .header("x-api-key", first)
            .header("x-api-key", second);
        api.send(rb).await.assert_unauthorized();
    }
}

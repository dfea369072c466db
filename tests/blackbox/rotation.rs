//! Signing-key rotation seen from outside: `pharmagate rotate` while
//! partners and customers keep calling (zero failed requests; tokens from
//! before, during and after all verify), the compromised-key rotation, the
//! `dev` schedule, and the key lifecycle job (`pharmagate jobs run`).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde_json::{Value, json};

use crate::harness::*;

/// Verifiers re-read the keys every second, so a rotation's new key signs
/// three seconds after it is published (cache + 2 s margin).
const CACHE: (&str, &str) = ("PHARMAGATE_SIGNING_KEY_CACHE_SECONDS", "1");

fn server() -> Server {
    Server::start_with(Opts { env: vec![(CACHE.0.into(), CACHE.1.into())], ..Opts::default() })
}

fn kid_of(token: &str) -> String {
    let header = token.split('.').next().unwrap();
    let header: Value = serde_json::from_slice(&B64.decode(header).unwrap()).unwrap();
    header["kid"].as_str().unwrap().to_string()
}

async fn jwks_kids(api: &Api) -> BTreeSet<String> {
    let jwks: Value = serde_json::from_slice(&api.get("/.well-known/jwks.json", ANON).await.body).unwrap();
    jwks["keys"].as_array().unwrap().iter().map(|k| k["kid"].as_str().unwrap().to_string()).collect()
}

fn rotate(s: &Server, args: &[&str]) -> std::process::Output {
    let mut all = vec!["rotate"];
    all.extend_from_slice(args);
    cli_env(&s.data_dir, &all, &[CACHE])
}

/// What the load saw.
#[derive(Default)]
struct Tally {
    requests: AtomicU64,
    failures: std::sync::Mutex<Vec<String>>,
    kids: std::sync::Mutex<BTreeSet<String>>,
}

/// One load worker: a fresh token, then a catalog read with it, with the
/// token from before the rotation, and with an API key; until `stop`.
async fn worker(
    api: Api,
    client: (String, String),
    before: String,
    key: String,
    stop: Arc<AtomicBool>,
    tally: Arc<Tally>,
) {
    let path = format!("/v1/products/{ASPIRIN}");
    let body = form(&[("grant_type", "client_credentials")]);
    while !stop.load(Ordering::SeqCst) {
        let issued = api.post_form("/oauth/token", Some((&client.0, &client.1)), &body).await;
        let mut results = vec![("token", issued.status)];
        if issued.status == 200 {
            let fresh = issued.json(200)["access_token"].as_str().unwrap().to_string();
            tally.kids.lock().unwrap().insert(kid_of(&fresh));
            results.push(("fresh token", api.get_bearer(&path, &fresh).await.status));
        }
        results.push(("token from before", api.get_bearer(&path, &before).await.status));
        results.push(("api key", api.get(&path, key.as_str()).await.status));
        tally.requests.fetch_add(results.len() as u64, Ordering::SeqCst);
        for (what, status) in results.into_iter().filter(|(_, status)| *status != 200) {
            tally.failures.lock().unwrap().push(format!("{what}: {status}"));
        }
    }
}

#[tokio::test]
async fn a_rotation_under_load_fails_no_request() {
    let s = server();
    let api = s.api();
    let body = json!({"name": "rotation load", "customer": "rotation-co", "scopes": ["catalog:read"]});
    let client = api.create_client(s.admin(), &body).await;
    let before = api.token(&client.0, &client.1, None).await;
    let old_kid = kid_of(&before);
    let key = s.issue_key("rotation-co", "customer", "paid");

    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let workers: Vec<_> = (0..3)
        .map(|_| {
            let args =
                (api.clone(), client.clone(), before.clone(), key.clone(), stop.clone(), tally.clone());
            tokio::spawn(worker(args.0, args.1, args.2, args.3, args.4, args.5))
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rotated = {
        let data_dir = s.data_dir.clone();
        tokio::task::spawn_blocking(move || cli_env(&data_dir, &["rotate"], &[CACHE])).await.unwrap()
    };
    assert!(rotated.status.success(), "rotate failed: {}", String::from_utf8_lossy(&rotated.stderr));
    let rotated_at = Instant::now();
    // Through the switch (3 s after publishing) and some time beyond it.
    let during = api.token(&client.0, &client.1, None).await;
    while rotated_at.elapsed() < Duration::from_secs(6) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stop.store(true, Ordering::SeqCst);
    for w in workers {
        w.await.unwrap();
    }
    let after = api.token(&client.0, &client.1, None).await;

    let failures = tally.failures.lock().unwrap().clone();
    let requests = tally.requests.load(Ordering::SeqCst);
    assert_eq!(failures, Vec::<String>::new(), "failed requests out of {requests}");
    assert!(requests >= 12, "too little load to mean anything: {requests} requests");
    let new_kid = kid_of(&after);
    assert_ne!(new_kid, old_kid);
    let issued_kids = tally.kids.lock().unwrap().clone();
    assert_eq!(
        issued_kids,
        BTreeSet::from([old_kid.clone(), new_kid.clone()]),
        "tokens from both keys were issued"
    );
    assert_eq!(kid_of(&during), old_kid, "right after the rotation the old key still signs");
    assert_eq!(jwks_kids(&api).await, BTreeSet::from([old_kid, new_kid]));
    let path = format!("/v1/products/{ASPIRIN}");
    for (name, token) in [("before", &before), ("during", &during), ("after", &after)] {
        assert_eq!(api.get_bearer(&path, token).await.status, 200, "the token from {name} the rotation");
    }
    eprintln!("rotation under load: {requests} requests, 0 failed");

    // At once again: the first key's tokens are still valid, so it waits.
    let again = rotate(&s, &[]);
    assert_eq!(again.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(stderr.contains("not rotating") && stderr.contains("rotate after then"), "{stderr}");
    assert_eq!(api.get_bearer(&path, &before).await.status, 200, "a refused rotation withdrew nothing");
}

#[tokio::test]
async fn a_compromised_key_rotation_ends_its_tokens_and_keeps_serving() {
    let s = server();
    let api = s.api();
    let body = json!({"name": "leaky", "customer": "leak-co", "scopes": ["catalog:read"]});
    let client = api.create_client(s.admin(), &body).await;
    let leaked = api.token(&client.0, &client.1, None).await;
    let path = format!("/v1/products/{ASPIRIN}");
    assert_eq!(api.get_bearer(&path, &leaked).await.status, 200);

    let out = rotate(&s, &["--compromised"]);
    assert!(out.status.success(), "rotate --compromised failed: {}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!stdout.contains("AWSPREVIOUS"), "the compromised key keeps no stage: {stdout}");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    api.get_bearer(&path, &leaked).await.assert_unauthorized();
    let fresh = api.token(&client.0, &client.1, None).await;
    assert_ne!(kid_of(&fresh), kid_of(&leaked));
    assert_eq!(api.get_bearer(&path, &fresh).await.status, 200);
    assert_eq!(jwks_kids(&api).await, BTreeSet::from([kid_of(&fresh)]));
}

#[tokio::test]
async fn dev_rotates_on_its_schedule_and_waits_while_old_tokens_live() {
    let env = vec![(CACHE.0.into(), CACHE.1.into())];
    let extra_args = vec!["--rotate-every".to_string(), "2".to_string()];
    let s = Server::start_with(Opts { env, extra_args });
    let api = s.api();
    let first = jwks_kids(&api).await;
    assert_eq!(first.len(), 1);
    // First tick at 2 s rotates; the tick at 4 s must wait (the first key's
    // tokens live 15 minutes).
    tokio::time::sleep(Duration::from_millis(4_800)).await;
    let kids = jwks_kids(&api).await;
    assert_eq!(kids.len(), 2, "{kids:?}");
    assert!(kids.is_superset(&first));
    let log = std::fs::read_to_string(s.root_dir.join("server.log")).unwrap();
    assert!(log.contains("scheduled rotation done"), "{log}");
    assert!(log.contains("scheduled rotation waits"), "{log}");
}

#[tokio::test]
async fn the_lifecycle_job_expires_dead_keys_once() {
    let s = Server::start();
    let api = s.api();
    let key = s.issue_key("jobs-co", "customer", "free");
    let rotated = api
        .post_json(
            &format!("/v1/keys/{}/rotate", key_id(&key)),
            s.admin(),
            &json!({"grace_period_seconds": 0}),
        )
        .await;
    assert_eq!(rotated.status, 201, "{}", rotated.text());

    let run = || {
        let out = s.cli(&["jobs", "run"]);
        assert!(out.status.success(), "jobs run failed: {}", String::from_utf8_lossy(&out.stderr));
        let report: Value = serde_json::from_slice(&out.stdout).unwrap();
        (
            report["keys"].as_u64().unwrap(),
            report["expired"].as_u64().unwrap(),
            report["flagged"].as_u64().unwrap(),
        )
    };
    // The seeded admin and demo keys, the rotated key and its successor.
    assert_eq!(run(), (4, 1, 0));
    assert_eq!(run(), (4, 0, 0), "a second run changes nothing");
    let listed = api.get("/v1/keys?customer=jobs-co", s.admin()).await.json(200);
    let statuses: Vec<(&str, &str)> = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| (k["id"].as_str().unwrap(), k["status"].as_str().unwrap()))
        .collect();
    assert!(statuses.contains(&(key_id(&key), "expired")), "{listed}");
}

#[tokio::test]
async fn the_integrity_key_rotates_and_every_record_keeps_working() {
    let s = Server::start();
    let api = s.api();
    let partner = s.issue_key("integrity-co", "partner", "paid");
    s.grant("integrity-co", ASPIRIN);
    let manufacturing = format!("/v1/products/{ASPIRIN}/manufacturing");
    assert_eq!(api.get(&manufacturing, partner.as_str()).await.status, 200);

    // The key is minutes old: a scheduled rotation waits.
    let early = cli_env(&s.data_dir, &["rotate", "--secret", "integrity"], &[]);
    assert_eq!(early.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&early.stderr);
    assert!(stderr.contains("not rotating") && stderr.contains("integrity-key yet"), "{stderr}");

    // A leaked key is replaced at once; every record is re-sealed.
    let out = cli_env(&s.data_dir, &["rotate", "--secret", "integrity", "--compromised"], &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("AWSCURRENT: version rotation-") && !stdout.contains("AWSPREVIOUS"), "{stdout}");
    assert_eq!(api.get(&manufacturing, partner.as_str()).await.status, 200, "key and entitlement re-sealed");
    assert_eq!(api.get("/v1/keys", s.admin()).await.status, 200, "the seeded admin key too");
    // New records are signed with the new key at once.
    let issued = api.post_json("/v1/keys", s.admin(), &json!({"customer": "integrity-co"})).await;
    let new_key = issued.json(201)["key"].as_str().unwrap().to_string();
    assert_eq!(api.get(&format!("/v1/products/{ASPIRIN}"), new_key.as_str()).await.status, 200);
}

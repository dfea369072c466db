//! Rate limits, quotas and brute-force protection over HTTP: exact admission
//! under concurrent bursts, the headers, `/v1/usage`, the internal tier, and
//! growing back-off for repeated authentication failures.

use serde_json::{Value, json};

use crate::harness::*;

/// Free tier: 5 per hour-long window (so a burst cannot straddle two
/// windows), 1,000 a day.
const HOURLY: &str = r#"{"free": {"rate": 5, "window_seconds": 3600, "daily_quota": 1000}}"#;

fn server_with(limits: &str, guard: &str) -> Server {
    let env = vec![
        ("PHARMAGATE_RATE_LIMITS".to_string(), limits.to_string()),
        ("PHARMAGATE_AUTH_GUARD".to_string(), guard.to_string()),
    ];
    Server::start_with(Opts { env, ..Opts::default() })
}

/// Waits out the last minute of an hour, so a burst stays in one window.
async fn away_from_the_hour_boundary() {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let left = 3600 - now % 3600;
    if left < 60 {
        tokio::time::sleep(std::time::Duration::from_secs(left + 1)).await;
    }
}

async fn burst(api: &Api, key: &str, n: usize) -> Vec<Resp> {
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let (api, key) = (api.clone(), key.to_string());
            tokio::spawn(async move { api.get(&format!("/v1/products/{ASPIRIN}"), &key).await })
        })
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

#[tokio::test]
async fn concurrent_bursts_admit_exactly_the_limit() {
    let s = server_with(HOURLY, SUITE_AUTH_GUARD);
    let api = s.api();
    away_from_the_hour_boundary().await;
    for (n, customer) in [(10, "burst-twice-co"), (25, "burst-five-co")] {
        let key = s.issue_key(customer, "customer", "free");
        let responses = burst(&api, &key, n).await;
        let ok: Vec<&Resp> = responses.iter().filter(|r| r.status == 200).collect();
        let limited: Vec<&Resp> = responses.iter().filter(|r| r.status == 429).collect();
        assert_eq!((ok.len(), limited.len()), (5, n - 5), "{n} at once against a limit of 5");
        for r in &limited {
            r.problem(429, "rate-limited");
            let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
            assert!((1..=3600).contains(&retry), "{retry}");
            assert_eq!(r.header("ratelimit-policy"), Some("\"rate\";q=5;w=3600, \"daily\";q=1000;w=86400"));
            assert!(
                r.header("ratelimit").unwrap().starts_with("\"rate\";r=0;t="),
                "{:?}",
                r.header("ratelimit")
            );
        }
        // The remaining counts the admitted requests saw are 4, 3, 2, 1, 0.
        let mut remaining: Vec<String> = ok
            .iter()
            .map(|r| r.header("ratelimit").unwrap().split(';').nth(1).unwrap().to_string())
            .collect();
        remaining.sort();
        assert_eq!(remaining, ["r=0", "r=1", "r=2", "r=3", "r=4"]);
    }
}

#[tokio::test]
async fn usage_shows_limits_and_counts_and_the_internal_tier_is_not_limited() {
    let s = server_with(HOURLY, SUITE_AUTH_GUARD);
    let api = s.api();
    away_from_the_hour_boundary().await;
    let key = s.issue_key("usage-co", "customer", "free");
    // A search costs 2, a product read 1.
    assert_eq!(api.get("/v1/products?name=tob", &key).await.status, 200);
    assert_eq!(api.get(&format!("/v1/products/{ASPIRIN}"), &key).await.status, 200);
    let usage = api.get("/v1/usage", &key).await.json(200);
    assert_eq!(usage["principal"], key_id(&key));
    assert_eq!(usage["customer"], "usage-co");
    assert_eq!(usage["tier"], "free");
    assert_eq!(usage["limits"], json!({"rate": 5, "window_seconds": 3600, "daily_quota": 1000}));
    // The usage request itself counts too: 2 + 1 + 1.
    assert_eq!(usage["usage"]["rate"]["used"], 4);
    assert_eq!(usage["usage"]["rate"]["remaining"], 1);
    assert_eq!(usage["usage"]["daily"]["used"], 4);
    assert_eq!(usage["usage"]["daily"]["limit"], 1000);

    // Others' usage: administrators only.
    let other = s.issue_key("usage-other-co", "customer", "free");
    let path = format!("/v1/usage?principal={}", key_id(&key));
    api.get(&path, &other).await.problem(403, "forbidden");
    let seen = api.get(&path, s.admin()).await.json(200);
    assert_eq!(seen["principal"], key_id(&key));
    assert_eq!(seen["usage"]["daily"]["used"], 4);
    api.get("/v1/usage?principal=nobody0000000", s.admin()).await.problem(404, "not-found");

    // The seeded admin key is internal: a burst of 60 all pass, unlimited.
    let responses = burst(&api, s.admin(), 60).await;
    assert!(responses.iter().all(|r| r.status == 200));
    assert!(
        responses.iter().all(|r| r.header("ratelimit").is_none() && r.header("ratelimit-policy").is_none())
    );
    let own = api.get("/v1/usage", s.admin()).await.json(200);
    assert_eq!(own["limits"], json!({"rate": null, "window_seconds": 1, "daily_quota": null}));
    assert_eq!(own["usage"], json!({"rate": null, "daily": null}));
}

#[tokio::test]
async fn repeated_authentication_failures_are_throttled_before_any_work() {
    let s = server_with(HOURLY, r#"{"free_failures": 3, "window_seconds": 600, "max_backoff_seconds": 60}"#);
    let api = s.api();
    let good = s.issue_key("guard-co", "customer", "free");
    let path = format!("/v1/products/{ASPIRIN}");
    let wrong = forge_key("dev", key_id(&good));
    for _ in 0..3 {
        api.get(&path, &wrong).await.assert_unauthorized();
    }
    // Three failures are free and took nothing from the key's quota.
    let usage = api.get("/v1/usage", &good).await.json(200);
    assert_eq!(usage["usage"]["daily"]["used"], 1, "only this usage request: {usage}");
    // The 4th failure blocks this address (and the key id) for 2 s.
    api.get(&path, &wrong).await.assert_unauthorized();
    let blocked = api.get(&path, &good).await;
    let body = blocked.problem(429, "too-many-failures");
    // 2 s from the failure; 1 if a second ticked over since.
    assert!(matches!(blocked.header("retry-after"), Some("1" | "2")), "{body}");
    // The token endpoint shares the address's block.
    let grant = form(&[("grant_type", "client_credentials")]);
    let resp = api.post_form("/oauth/token", Some(("pgc_whoever000000", "pgcs_x")), &grant).await;
    resp.assert_oauth_error(429, "slow_down");
    assert!(matches!(resp.header("retry-after"), Some("1" | "2")));
}

#[tokio::test]
async fn guessing_a_client_secret_is_throttled_per_client() {
    let s = server_with(HOURLY, r#"{"free_failures": 2, "window_seconds": 600, "max_backoff_seconds": 60}"#);
    let api = s.api();
    let body = json!({"name": "guarded", "customer": "guard-oauth-co", "scopes": ["catalog:read"]});
    let (id, secret) = api.create_client(s.admin(), &body).await;
    let grant = form(&[("grant_type", "client_credentials")]);
    // Guesses from one address each: no address is blocked, the client id is.
    for n in 0..3 {
        let guesser = api.via_address(&format!("127.0.0.{}", 20 + n));
        let r = guesser.post_form("/oauth/token", Some((&id, "pgcs_wrong")), &grant).await;
        r.assert_oauth_error(401, "invalid_client");
    }
    let r = api.via_address("127.0.0.30").post_form("/oauth/token", Some((&id, "pgcs_wrong")), &grant).await;
    let error: Value = r.assert_oauth_error(429, "slow_down");
    let description = error["error_description"].as_str().unwrap();
    assert!(description.ends_with("retry in 2 s") || description.ends_with("retry in 1 s"), "{error}");
    // The client itself, with its right secret, is never locked out by
    // others' guesses (its id is no secret).
    api.token(&id, &secret, None).await;
}

#[tokio::test]
async fn guesses_against_a_key_id_never_lock_out_its_owner() {
    let s = server_with(HOURLY, r#"{"free_failures": 2, "window_seconds": 600, "max_backoff_seconds": 60}"#);
    let api = s.api();
    let good = s.issue_key("guard-owner-co", "customer", "free");
    let wrong = forge_key("dev", key_id(&good));
    let path = format!("/v1/products/{ASPIRIN}");
    for n in 0..3 {
        api.via_address(&format!("127.0.0.{}", 40 + n)).get(&path, &wrong).await.assert_unauthorized();
    }
    // The id is now blocked: a further guess, from a fresh address, waits.
    let guess = api.via_address("127.0.0.50").get(&path, &wrong).await;
    guess.problem(429, "too-many-failures");
    // The owner's right key passes.
    assert_eq!(api.get(&path, &good).await.status, 200);
}

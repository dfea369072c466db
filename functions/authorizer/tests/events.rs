//! The authorizer handler fed with a real API Gateway REST REQUEST
//! authorizer event, as JSON, for good and bad keys.

use aws_lambda_events::apigw::ApiGatewayCustomAuthorizerRequestTypeRequest;
use lambda_runtime::{Context, LambdaEvent};
use pharmagate_authorizer::Authorizer;
use pharmagate_shared::config::{Backend, Settings};
use pharmagate_shared::domain::{ApiKey, CustomerId, Role, Tier};
use pharmagate_shared::guard::GuardConfig;
use pharmagate_shared::repo::keys::NewKey;
use serde_json::{Value, json};

const BASE: &str = "arn:aws:execute-api:eu-west-1:123456789012:abc123/prod";

fn fixture(key: &str) -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/events/authorizer-request.json");
    let mut event: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    event["headers"]["x-api-key"] = json!(key);
    event["multiValueHeaders"]["x-api-key"] = json!([key]);
    event
}

struct Setup {
    _dir: tempfile::TempDir,
    backend: Backend,
    authorizer: Authorizer,
}

/// Brute-force protection loose enough for tests that send many bad keys.
fn setup() -> Setup {
    let guard = GuardConfig { free_failures: 1_000, ..GuardConfig::default() };
    setup_with(Settings { auth_guard: guard, ..Settings::default() })
}

fn setup_with(settings: Settings) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let backend = Backend::embedded(dir.path(), settings).unwrap();
    let authorizer = Authorizer::new(&backend);
    Setup { _dir: dir, backend, authorizer }
}

async fn issue(backend: &Backend, role: Role) -> ApiKey {
    let new = NewKey {
        customer: CustomerId::parse("demo-customer").unwrap(),
        role,
        tier: Tier::Free,
        label: None,
        expires_at: None,
    };
    backend.keys().issue(new, None).await.unwrap().0
}

/// The handler's answer as API Gateway reads it: JSON, or the error message.
async fn decide(authorizer: &Authorizer, event: Value) -> Result<Value, String> {
    let payload: ApiGatewayCustomAuthorizerRequestTypeRequest = serde_json::from_value(event).unwrap();
    match authorizer.handle(LambdaEvent::new(payload, Context::default())).await {
        Ok(response) => Ok(serde_json::to_value(response).unwrap()),
        Err(e) => Err(e.to_string()),
    }
}

#[tokio::test]
async fn a_valid_key_gets_a_policy_context_and_usage_key() {
    let s = setup();
    let key = issue(&s.backend, Role::Customer).await;
    let answer = decide(&s.authorizer, fixture(key.expose())).await.unwrap();
    assert_eq!(answer["principalId"], key.id().as_str());
    assert_eq!(
        answer["context"],
        json!({"principal": key.id().as_str(), "customer": "demo-customer", "role": "customer", "tier": "free"})
    );
    assert_eq!(answer["usageIdentifierKey"], "pharmagate-free");
    let statements = answer["policyDocument"]["Statement"].as_array().unwrap();
    assert_eq!(statements[0]["Effect"], "Allow");
    assert_eq!(statements[0]["Action"], json!(["execute-api:Invoke"]));
    let allowed: Vec<&str> =
        statements[0]["Resource"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    let want: Vec<String> = [
        "GET/v1/products",
        "GET/v1/products/*",
        "GET/v1/keys",
        "POST/v1/keys",
        "DELETE/v1/keys/*",
        "POST/v1/keys/*/rotate",
        "GET/v1/usage",
    ]
    .iter()
    .map(|r| format!("{BASE}/{r}"))
    .collect();
    assert_eq!(allowed, want);
    assert_eq!(statements[1]["Effect"], "Deny");
    assert_eq!(statements[1]["Resource"], json!([format!("{BASE}/GET/v1/products/*/manufacturing")]));
}

#[tokio::test]
async fn every_kind_of_bad_key_gets_the_same_unauthorized() {
    let s = setup();
    let good = issue(&s.backend, Role::Customer).await;
    let revoked = issue(&s.backend, Role::Customer).await;
    s.backend.keys().revoke(revoked.id()).await.unwrap();
    let rotated = issue(&s.backend, Role::Customer).await;
    s.backend.keys().rotate(rotated.id(), 0, None).await.unwrap();
    let unknown = ApiKey::generate("dev");
    let other_env = ApiKey::generate("live");
    let text = good.expose();
    let mut wrong_checksum = text.to_string();
    let last = wrong_checksum.pop().unwrap();
    wrong_checksum.push(if last == 'A' { 'B' } else { 'A' });
    let cases: Vec<(&str, String)> = vec![
        ("empty", String::new()),
        ("garbage", "hello".into()),
        ("wrong checksum", wrong_checksum),
        ("unknown id", unknown.expose().into()),
        ("other environment", other_env.expose().into()),
        ("revoked", revoked.expose().into()),
        ("rotated with no grace", rotated.expose().into()),
        ("very long", "x".repeat(10_000)),
    ];
    for (name, key) in cases {
        assert_eq!(decide(&s.authorizer, fixture(&key)).await, Err("Unauthorized".to_string()), "{name}");
    }
    // A key whose id exists but whose secret differs.
    let forged = format!("{}{}", &text[..20], &unknown.expose()[20..]);
    assert_eq!(decide(&s.authorizer, fixture(&forged)).await, Err("Unauthorized".to_string()));
}

#[tokio::test]
async fn missing_repeated_or_odd_event_fields_are_unauthorized() {
    let s = setup();
    let key = issue(&s.backend, Role::Admin).await;
    let mut no_header = fixture(key.expose());
    no_header["headers"].as_object_mut().unwrap().remove("x-api-key");
    no_header["multiValueHeaders"].as_object_mut().unwrap().remove("x-api-key");
    let mut repeated = fixture(key.expose());
    repeated["multiValueHeaders"]["x-api-key"] = json!([key.expose(), key.expose()]);
    let mut null_headers = fixture(key.expose());
    null_headers["headers"] = Value::Null;
    null_headers["multiValueHeaders"] = Value::Null;
    let mut no_arn = fixture(key.expose());
    no_arn.as_object_mut().unwrap().remove("methodArn");
    let mut bad_arn = fixture(key.expose());
    bad_arn["methodArn"] = json!("*");
    for (name, event) in [
        ("no header", no_header),
        ("repeated", repeated),
        ("null headers", null_headers),
        ("no methodArn", no_arn),
        ("bad methodArn", bad_arn),
    ] {
        assert_eq!(decide(&s.authorizer, event).await, Err("Unauthorized".to_string()), "{name}");
    }
    // Header names are case-insensitive, as in API Gateway.
    let mut upper = fixture("");
    upper["headers"].as_object_mut().unwrap().remove("x-api-key");
    upper["headers"]["X-Api-Key"] = json!(key.expose());
    assert!(decide(&s.authorizer, upper).await.is_ok());
}

/// The fixture with `Authorization: Bearer <token>` instead of a key.
fn bearer_fixture(token: &str) -> Value {
    let mut event = fixture("x");
    for map in ["headers", "multiValueHeaders"] {
        event[map].as_object_mut().unwrap().remove("x-api-key");
    }
    let value = format!("Bearer {token}");
    event["headers"]["authorization"] = json!(value);
    event["multiValueHeaders"]["authorization"] = json!([value]);
    event
}

#[tokio::test]
async fn a_valid_bearer_token_gets_a_partner_policy_narrowed_to_its_scopes() {
    use pharmagate_shared::domain::Permission;
    use pharmagate_shared::jwt::{Claims, new_jti};
    use pharmagate_shared::repo::clients::NewClient;

    let s = setup();
    let signing = s.backend.signing_keys();
    assert!(signing.bootstrap().await.unwrap());
    let new = NewClient {
        id: None,
        name: "erp".into(),
        customer: CustomerId::parse("demo-customer").unwrap(),
        tier: Tier::Paid,
        scopes: vec![Permission::CatalogRead, Permission::ManufacturingRead],
    };
    let (_, client) = s.backend.clients().create(new).await.unwrap();
    let now = pharmagate_shared::clock::now_secs();
    let settings = Settings::default();
    let claims = Claims {
        iss: settings.issuer.clone(),
        sub: client.id.to_string(),
        aud: settings.audience.clone(),
        client_id: client.id.to_string(),
        client_gen: client.token_generation.clone(),
        scope: "catalog:read".into(),
        iat: now,
        exp: now + 300,
        nbf: None,
        jti: new_jti(),
    };
    let token = signing.signer().await.unwrap().sign(&claims);
    let answer = decide(&s.authorizer, bearer_fixture(&token)).await.unwrap();
    assert_eq!(answer["principalId"], client.id.as_str());
    assert_eq!(
        answer["context"],
        json!({"principal": client.id.as_str(), "customer": "demo-customer", "role": "partner",
               "tier": "paid", "scope": "catalog:read"})
    );
    assert_eq!(answer["usageIdentifierKey"], "pharmagate-paid");
    let statements = answer["policyDocument"]["Statement"].as_array().unwrap();
    let allowed: Vec<&str> =
        statements[0]["Resource"].as_array().unwrap().iter().map(|r| r.as_str().unwrap()).collect();
    let want = ["GET/v1/products", "GET/v1/products/*", "GET/v1/usage"].map(|r| format!("{BASE}/{r}"));
    assert_eq!(allowed, want);
    let denied = statements[1]["Resource"].as_array().unwrap();
    assert_eq!(denied, &[json!(format!("{BASE}/GET/v1/products/*/manufacturing"))]);

    // The same token with the key header as well: ambiguous, refused.
    let mut both = bearer_fixture(&token);
    both["headers"]["x-api-key"] = json!("pg_dev_x");
    assert_eq!(decide(&s.authorizer, both).await.unwrap_err(), "Unauthorized");
    // Once revoked, refused.
    s.backend.clients().revoke_token(&claims.jti, &client.id, claims.exp).await.unwrap();
    assert_eq!(decide(&s.authorizer, bearer_fixture(&token)).await.unwrap_err(), "Unauthorized");
}

#[tokio::test]
async fn repeated_failures_from_one_address_are_throttled_with_growing_backoff() {
    let s = setup_with(Settings::default()); // 5 free failures per 10 minutes
    let good = issue(&s.backend, Role::Customer).await;
    let bad = ApiKey::generate("dev");
    for attempt in 1..=5 {
        assert_eq!(
            decide(&s.authorizer, fixture(bad.expose())).await,
            Err("Unauthorized".into()),
            "{attempt}"
        );
    }
    // The 6th failure blocks the address for 2 s; the 7th is never tried
    // (blocked requests do no key work and count nothing).
    assert_eq!(decide(&s.authorizer, fixture(bad.expose())).await, Err("Unauthorized".into()));
    for key in [bad.expose(), good.expose()] {
        let answer = decide(&s.authorizer, fixture(key)).await.unwrap();
        assert_eq!(answer["principalId"], "throttled");
        let wait: u64 = answer["context"]["throttled_retry_after"].as_str().unwrap().parse().unwrap();
        assert!((1..=2).contains(&wait), "{answer}");
        assert!(answer["context"].get("principal").is_none(), "no principal: {answer}");
        // Counted on a plan of its own, never on the throttle a tier shares.
        assert_eq!(answer["usageIdentifierKey"], "pharmagate-blocked");
    }
    // Another address is not affected.
    let mut elsewhere = fixture(good.expose());
    elsewhere["requestContext"]["identity"]["sourceIp"] = json!("203.0.113.9");
    assert_eq!(decide(&s.authorizer, elsewhere).await.unwrap()["principalId"], good.id().as_str());
    // Once the block ends, the next failure doubles it.
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    assert_eq!(decide(&s.authorizer, fixture(bad.expose())).await, Err("Unauthorized".into()));
    let answer = decide(&s.authorizer, fixture(good.expose())).await.unwrap();
    let wait: u64 = answer["context"]["throttled_retry_after"].as_str().unwrap().parse().unwrap();
    assert!((3..=4).contains(&wait), "back-off grows: {answer}");
}

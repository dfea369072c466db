//! The authorizer handler fed with a real API Gateway REST REQUEST
//! authorizer event, as JSON, for good and bad keys.

use aws_lambda_events::apigw::ApiGatewayCustomAuthorizerRequestTypeRequest;
use lambda_runtime::{Context, LambdaEvent};
use pharmagate_authorizer::Authorizer;
use pharmagate_shared::config::{Backend, Settings};
use pharmagate_shared::domain::{ApiKey, CustomerId, Role, Tier};
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

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let backend = Backend::embedded(dir.path(), Settings::default()).unwrap();
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

//! The catalog handler fed with real API Gateway REST proxy events (JSON as
//! API Gateway sends it, through lambda_http's own deserializer), including
//! events with missing and null fields.

use base64::Engine;
use http::StatusCode;
use lambda_http::request::LambdaRequest;
use pharmagate_catalog::CatalogService;
use pharmagate_shared::config::{Backend, Settings};
use pharmagate_shared::domain::{Cas, ProductDraft};
use pharmagate_shared::limits::{Limit, LimitConfig};
use serde_json::{Value, json};

fn fixture() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/events/rest-get-product.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

async fn service() -> (tempfile::TempDir, CatalogService) {
    let dir = tempfile::tempdir().unwrap();
    // Many requests from one fixture principal: limits out of the way (the
    // limiter has its own tests).
    let high = Limit { rate: Some(1_000_000), window_seconds: 1, daily_quota: Some(1_000_000) };
    let limits = LimitConfig { free: high, paid: high, ..LimitConfig::default() };
    let settings = Settings { limits, ..Settings::default() };
    let backend = Backend::embedded(&dir.path().join("data"), settings).unwrap();
    let draft: ProductDraft = serde_json::from_value(json!({
        "name": "BLZ-945", "molecular_formula": "C20H22N4O3S", "molecular_weight": 398.488
    }))
    .unwrap();
    let (product, _) = draft.validate(Cas::parse("953769-46-5").unwrap()).unwrap();
    backend.catalog().put(product, None).await.unwrap();
    (dir, CatalogService::new(&backend))
}

/// Status and JSON body, or `None` when the event is not a REST event at all
/// (the runtime then reports an invocation error; nothing panics).
async fn call(service: &CatalogService, event: Value) -> Option<(StatusCode, Value)> {
    let payload: LambdaRequest = serde_json::from_value(event).ok()?;
    let response = service.handle(payload.into()).await.unwrap();
    let body: &[u8] = response.body().as_ref();
    let json = if body.is_empty() { Value::Null } else { serde_json::from_slice(body).unwrap() };
    Some((response.status(), json))
}

#[tokio::test]
async fn a_real_rest_event_reads_the_product() {
    let (_dir, service) = service().await;
    let (status, body) = call(&service, fixture()).await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["cas"], "953769-46-5");
    assert_eq!(body["name"], "BLZ-945");
    assert_eq!(body["molecular_weight"], 398.488);
}

#[tokio::test]
async fn the_stage_prefix_does_not_break_routing_either_way() {
    let (_dir, service) = service().await;
    for path in ["/v1/products/953769-46-5", "/prod/v1/products/953769-46-5"] {
        let mut event = fixture();
        event["path"] = json!(path);
        let (status, body) = call(&service, event).await.unwrap();
        assert_eq!((status, body["cas"].clone()), (StatusCode::OK, json!("953769-46-5")), "{path}");
    }
}

#[tokio::test]
async fn missing_or_malformed_authorizer_context_is_401_never_a_default() {
    let (_dir, service) = service().await;
    let variants: Vec<(&str, Value)> = vec![
        ("null authorizer", Value::Null),
        ("empty authorizer", json!({})),
        ("no role", json!({"principal": "k", "customer": "demo-customer", "tier": "free"})),
        (
            "unknown role",
            json!({"principal": "k", "customer": "demo-customer", "role": "root", "tier": "free"}),
        ),
        (
            "bad customer",
            json!({"principal": "k", "customer": "Demo Customer", "role": "admin", "tier": "free"}),
        ),
        ("numeric role", json!({"principal": "k", "customer": "demo-customer", "role": 7, "tier": "free"})),
        (
            "empty principal",
            json!({"principal": "", "customer": "demo-customer", "role": "admin", "tier": "free"}),
        ),
    ];
    for (name, authorizer) in variants {
        let mut event = fixture();
        event["requestContext"]["authorizer"] = authorizer;
        let (status, body) = call(&service, event).await.unwrap();
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{name}");
        assert_eq!(body["type"], "urn:pharmagate:problem:unauthorized", "{name}");
        assert_eq!(body["request_id"], "6b7c8d9e-0f1a-4b2c-9d3e-4f5a6b7c8d9e", "{name}");
    }
}

#[tokio::test]
async fn null_and_missing_fields_do_not_panic() {
    let (_dir, service) = service().await;
    let nulled =
        ["headers", "multiValueHeaders", "pathParameters", "queryStringParameters", "stageVariables", "body"];
    for field in nulled {
        let mut event = fixture();
        event[field] = Value::Null;
        let (status, _) = call(&service, event).await.unwrap();
        assert_eq!(status, StatusCode::OK, "{field}: null");
        let mut event = fixture();
        event.as_object_mut().unwrap().remove(field);
        let (status, _) = call(&service, event).await.unwrap();
        assert_eq!(status, StatusCode::OK, "{field} missing");
    }
    let mut event = fixture();
    event["requestContext"]["identity"] = Value::Null;
    assert!(call(&service, event).await.is_none(), "identity is required by the event type");
    // Without a path the request cannot be routed: 404, not a panic.
    let mut event = fixture();
    event["path"] = Value::Null;
    assert_eq!(call(&service, event).await.unwrap().0, StatusCode::NOT_FOUND);
    // Not a REST event at all: refused by deserialization.
    assert!(call(&service, json!({"hello": "world"})).await.is_none());
    let mut event = fixture();
    event.as_object_mut().unwrap().remove("requestContext");
    assert!(call(&service, event).await.is_none());
}

#[tokio::test]
async fn base64_encoded_bodies_are_decoded() {
    let (_dir, service) = service().await;
    let mut event = fixture();
    let body =
        json!({"name": "aspirin", "molecular_formula": "C9H8O4", "molecular_weight": 180.16}).to_string();
    event["httpMethod"] = json!("PUT");
    event["path"] = json!("/v1/products/50-78-2");
    event["headers"]["Content-Type"] = json!("application/json");
    event["multiValueHeaders"]["Content-Type"] = json!(["application/json"]);
    event["requestContext"]["authorizer"]["role"] = json!("developer");
    event["body"] = json!(base64::engine::general_purpose::STANDARD.encode(body));
    event["isBase64Encoded"] = json!(true);
    let (status, body) = call(&service, event).await.unwrap();
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(body["name"], "aspirin");
}

#[tokio::test]
async fn a_customer_context_cannot_write_even_if_the_gateway_let_it_through() {
    let (_dir, service) = service().await;
    let mut event = fixture();
    event["httpMethod"] = json!("DELETE");
    let (status, body) = call(&service, event).await.unwrap();
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body["type"], "urn:pharmagate:problem:forbidden");
}

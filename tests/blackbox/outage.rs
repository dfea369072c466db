//! Fail closed: with DynamoDB, KMS or Secrets Manager unreachable or
//! throttling past the SDK's retries, the API answers 503 problem+json with
//! `Retry-After`, serves nothing it could not authorise or decrypt, and
//! leaves no half-written state. AWS backend only: each service is reached
//! through its own [`FaultProxy`], switched mid-run.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::harness::*;

const SECRET_ROUTE: &str = "Outage route OX-9";

/// A 503 `unavailable` problem with `Retry-After`, within a few seconds.
async fn assert_unavailable(api: &Api, rb: reqwest::RequestBuilder, what: &str) {
    let started = Instant::now();
    let r = api.send(rb).await;
    let took = started.elapsed();
    assert_eq!(r.status, 503, "{what}: {}", r.text());
    assert_eq!(r.header("content-type"), Some(PROBLEM_JSON), "{what}");
    assert_eq!(r.header("retry-after"), Some("5"), "{what}");
    let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(body["type"], "urn:pharmagate:problem:unavailable", "{what}");
    assert!(!r.text().contains(SECRET_ROUTE) && !r.text().contains("Illustrative"), "{what}: data served");
    assert!(took < Duration::from_secs(40), "{what}: failed after {took:?}, not within a few seconds");
}

/// The proxies' endpoints; with `bounded`, calls get 15 s in all (the
/// default is 5 s; healthy calls to the suite's shared moto may queue).
fn endpoints(d: &FaultProxy, k: &FaultProxy, s: &FaultProxy, bounded: bool) -> Vec<(String, String)> {
    let timeout =
        if bounded { vec![("PHARMAGATE_AWS_TIMEOUT_SECS".to_string(), "15".to_string())] } else { vec![] };
    let mut env = vec![
        ("AWS_ENDPOINT_URL_DYNAMODB".into(), d.url.clone()),
        ("AWS_ENDPOINT_URL_KMS".into(), k.url.clone()),
        ("AWS_ENDPOINT_URL_SECRETS_MANAGER".into(), s.url.clone()),
    ];
    env.extend(timeout);
    env
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_or_throttling_aws_service_is_a_503_and_writes_nothing() {
    let Some(endpoint) = aws_backend() else {
        eprintln!("note: outage tests need the AWS backend (PHARMAGATE_TEST_BACKEND=aws)");
        return;
    };
    let (dynamodb, kms, secrets) = (
        FaultProxy::start(endpoint).await,
        FaultProxy::start(endpoint).await,
        FaultProxy::start(endpoint).await,
    );
    let root = tempfile::tempdir().unwrap();
    let data_dir = root.path().join("data");
    // The first start seeds through moto with the suite's generous timeout.
    let first = Server::restart_with_env(&data_dir, &endpoints(&dynamodb, &kms, &secrets, false));
    let admin = first.admin().to_string();
    drop(first);

    // A new process (cold caches) with KMS gone: public data is served,
    // confidential data is not, and a write that needs KMS leaves nothing.
    let server = Server::restart_with_env(&data_dir, &endpoints(&dynamodb, &kms, &secrets, true));
    let api = server.api();
    kms.set(Fault::Down);
    assert_eq!(api.get(&format!("/v1/products/{ASPIRIN}"), &admin).await.status, 200);
    let mfg = format!("/v1/products/{ASPIRIN}/manufacturing");
    assert_unavailable(&api, api.request(reqwest::Method::GET, &mfg, &admin), "read with KMS down").await;
    let c = cas(9_600_001, 61);
    let product = json!({"name": "Outagium", "molecular_formula": "C3H3", "molecular_weight": 39.06,
        "manufacturing": {"route": SECRET_ROUTE, "site": "S", "steps": [{"step": 1, "operation": "x"}]}});
    let put =
        |api: &Api| api.request(reqwest::Method::PUT, &format!("/v1/products/{c}"), &admin).json(&product);
    assert_unavailable(&api, put(&api), "write with KMS down").await;
    kms.set(Fault::Pass);
    api.get(&format!("/v1/products/{c}"), &admin).await.problem(404, "not-found");
    assert_eq!(api.get("/v1/products?name=outagium", &admin).await.json(200)["items"], json!([]));
    assert_eq!(api.get(&mfg, &admin).await.status, 200, "KMS back: decrypts again");

    // DynamoDB gone, then throttling: nothing is authorised, nothing written.
    for fault in [Fault::Down, Fault::Throttle] {
        dynamodb.set(fault);
        let what = format!("DynamoDB {fault:?}");
        let read = api.request(reqwest::Method::GET, &format!("/v1/products/{ASPIRIN}"), &admin);
        assert_unavailable(&api, read, &format!("read, {what}")).await;
        assert_unavailable(&api, put(&api), &format!("write, {what}")).await;
        dynamodb.set(Fault::Pass);
        api.get(&format!("/v1/products/{c}"), &admin).await.problem(404, "not-found");
    }
    drop(server);

    // Secrets Manager gone at a cold start: no integrity key, no principal.
    let server = Server::restart_with_env(&data_dir, &endpoints(&dynamodb, &kms, &secrets, true));
    let api = server.api();
    secrets.set(Fault::Down);
    let read = api.request(reqwest::Method::GET, &format!("/v1/products/{ASPIRIN}"), &admin);
    assert_unavailable(&api, read, "Secrets Manager down").await;
    secrets.set(Fault::Pass);
    assert_eq!(api.get(&format!("/v1/products/{ASPIRIN}"), &admin).await.status, 200);

    // Every service back: the write goes through whole.
    assert_eq!(api.send(put(&api)).await.status, 201);
    assert_eq!(
        api.get(&format!("/v1/products/{c}/manufacturing"), &admin).await.json(200)["manufacturing"]["route"],
        SECRET_ROUTE
    );
}

//! Measured AWS call counts for the README, through the local gateway in
//! process (authorizer, then the catalog function), against moto. Skipped
//! with a notice when `PHARMAGATE_TEST_AWS_ENDPOINT` is unset.

use std::net::SocketAddr;
use std::time::Duration;

use http::{HeaderMap, HeaderValue, Method};
use pharmagate_cli::gateway::Gateway;
use pharmagate_shared::aws::{self, AwsResources};
use pharmagate_shared::config::{Backend, Settings};
use pharmagate_shared::domain::{Cas, CustomerId, Product, Role, Tier};
use pharmagate_shared::repo::keys::NewKey;

#[tokio::test]
async fn an_authenticated_catalog_read_costs_six_dynamodb_calls_when_warm() {
    let Some(endpoint) = aws::test_endpoint("dynamodb_calls_per_catalog_read") else { return };
    let resources = AwsResources::with_prefix(&aws::unique_prefix("figures"));
    let sdk = aws::local_sdk_config(&endpoint).await;
    let backend = Backend::aws_with(&sdk, &resources, Settings::default(), true).await.expect("backend");
    let cas = Cas::parse("50-78-2").unwrap();
    let product = Product {
        cas,
        name: "Aspirin".into(),
        synonyms: vec![],
        molecular_formula: "C9H8O4".into(),
        molecular_weight: 180.16,
        smiles: None,
        inchikey: None,
        iupac_name: None,
    };
    backend.catalog().put(product, None).await.expect("put");
    let new = NewKey {
        customer: CustomerId::parse("figures-co").unwrap(),
        role: Role::Customer,
        tier: Tier::Free,
        label: None,
        expires_at: None,
    };
    let (key, _) = backend.keys().issue(new, None).await.expect("issue");

    let gateway = Gateway::new(&backend, "dev", Duration::ZERO);
    let mut headers = HeaderMap::new();
    headers.insert("x-api-key", HeaderValue::from_str(key.expose()).unwrap());
    let peer: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let calls = backend.aws_calls.clone().expect("aws counters");
    let mut per_read = Vec::new();
    for _ in 0..5 {
        let before = calls.snapshot();
        let response = gateway.handle(&Method::GET, "/v1/products/50-78-2", &headers, b"", peer).await;
        assert_eq!(response.status, 200);
        let after = calls.snapshot();
        per_read.push((after.0 - before.0, after.1 - before.1, after.2 - before.2));
    }
    println!("figures: (DynamoDB, KMS, Secrets Manager) calls per authenticated catalog read: {per_read:?}");
    // Warm: the authorizer's brute-force check of the source address (a
    // key id's block is read only when authentication fails), the key record; the function's rate and quota counters
    // (one conditional update each), the product, and the function's audit
    // record (one transaction). The integrity key is cached since the key
    // was issued in this process.
    assert_eq!(per_read, vec![(6, 0, 0); 5]);
}

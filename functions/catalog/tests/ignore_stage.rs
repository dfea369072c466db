//! Routing with `AWS_LAMBDA_HTTP_IGNORE_STAGE_IN_PATH` set, in its own test
//! binary because the variable is process-wide (the other binary runs with
//! it unset).

use http::StatusCode;
use lambda_http::RequestExt;
use lambda_http::request::LambdaRequest;
use pharmagate_catalog::CatalogService;
use pharmagate_shared::config::{Backend, Settings};
use serde_json::Value;

#[tokio::test]
async fn routing_works_when_lambda_http_drops_the_stage() {
    // SAFETY: the only test in this binary; no other thread reads the environment yet.
    unsafe { std::env::set_var("AWS_LAMBDA_HTTP_IGNORE_STAGE_IN_PATH", "true") };
    let dir = tempfile::tempdir().unwrap();
    let backend = Backend::embedded(dir.path(), Settings::default()).unwrap();
    let service = CatalogService::new(&backend);
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/events/rest-get-product.json");
    let event: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let payload: LambdaRequest = serde_json::from_value(event).unwrap();
    let request: lambda_http::Request = payload.into();
    assert_eq!(request.uri().path(), "/v1/products/953769-46-5");
    assert_eq!(request.raw_http_path(), "/v1/products/953769-46-5");
    let response = service.handle(request).await.unwrap();
    // Routed to the product lookup: the store is empty, so 404 for that CAS.
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let body: Value = serde_json::from_slice(response.body().as_ref()).unwrap();
    assert_eq!(body["detail"], "no product with CAS number 953769-46-5");
}

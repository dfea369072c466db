//! Lambda entry point of the catalog function: build state once, then serve.

use lambda_http::{Error, service_fn};
use pharmagate_catalog::CatalogService;
use pharmagate_shared::config::Backend;

#[tokio::main]
async fn main() -> Result<(), Error> {
    pharmagate_shared::telemetry::init_json();
    let backend = Backend::from_env().await?;
    let service = &CatalogService::new(&backend);
    lambda_http::run(service_fn(move |req| service.handle(req))).await
}

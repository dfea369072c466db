//! Lambda entry point of the authorizer: build state once, then serve events.

use lambda_runtime::{Error, service_fn};
use pharmagate_authorizer::Authorizer;
use pharmagate_shared::config::{Backend, require_env};

#[tokio::main]
async fn main() -> Result<(), Error> {
    pharmagate_shared::telemetry::init_json();
    let backend = Backend::from_env().await?;
    // The default issuer names a local gateway; in AWS, tokens must name the API.
    require_env("PHARMAGATE_ISSUER", "the API's base URL, the `iss` of access tokens")?;
    let authorizer = &Authorizer::new(&backend);
    lambda_runtime::run(service_fn(move |event| authorizer.handle(event))).await
}

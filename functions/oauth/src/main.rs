//! Lambda entry point of the oauth function (the authorization server): build state once, then serve.

use lambda_http::{Error, service_fn};
use pharmagate_oauth::OauthService;
use pharmagate_shared::config::{Backend, require_env};

#[tokio::main]
async fn main() -> Result<(), Error> {
    pharmagate_shared::telemetry::init_json();
    let backend = Backend::from_env().await?;
    // The default issuer names a local gateway; in AWS, tokens must name the API.
    require_env("PHARMAGATE_ISSUER", "the API's base URL, the `iss` of access tokens")?;
    let service = &OauthService::new(&backend);
    lambda_http::run(service_fn(move |req| service.handle(req))).await
}

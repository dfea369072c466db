//! Lambda entry point of the jobs function, invoked by an EventBridge
//! schedule. Build state once, then serve events.

use lambda_runtime::{Error, service_fn};
use pharmagate_jobs::Jobs;
use pharmagate_shared::config::Backend;

#[tokio::main]
async fn main() -> Result<(), Error> {
    pharmagate_shared::telemetry::init_json();
    let backend = Backend::from_env().await?;
    let jobs = &Jobs::new(&backend);
    lambda_runtime::run(service_fn(move |event| jobs.handle(event))).await
}

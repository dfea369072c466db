//! Lambda entry point of the rotation function: Secrets Manager invokes it
//! once per rotation step. Build state once, then serve events.

use lambda_runtime::{Error, service_fn};
use pharmagate_rotation::RotationHandler;
use pharmagate_shared::config::Backend;

#[tokio::main]
async fn main() -> Result<(), Error> {
    pharmagate_shared::telemetry::init_json();
    let backend = Backend::from_env().await?;
    let handler = &RotationHandler::new(&backend);
    lambda_runtime::run(service_fn(move |event| handler.handle(event))).await
}

//! The Secrets Manager rotation handler for our secrets: the token signing
//! key and the record integrity key.
//!
//! Secrets Manager calls it four times per rotation with
//! `{"Step", "SecretId", "ClientRequestToken"}`; the work is in
//! `pharmagate_shared::rotation`, shared with `pharmagate rotate`. An error
//! fails the invocation, so Secrets Manager retries the step and, past its
//! retries, marks the rotation failed (the template alarms on the function's
//! errors). Secrets this function does not know are refused, not guessed at.

use lambda_runtime::LambdaEvent;
use pharmagate_shared::config::Backend;
use pharmagate_shared::rotation::{Outcome, RotationError, SecretRotation, Step, same_secret};
use serde::Deserialize;
use serde_json::{Value, json};

/// The event Secrets Manager sends a rotation function.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RotationEvent {
    pub step: String,
    pub secret_id: String,
    pub client_request_token: String,
}

#[derive(Debug, thiserror::Error)]
pub enum RotationFailure {
    #[error("unknown rotation step {0:?}")]
    UnknownStep(String),
    #[error("this function rotates {configured}, not {asked}")]
    UnknownSecret { configured: String, asked: String },
    #[error(transparent)]
    Rotation(#[from] RotationError),
}

pub struct RotationHandler {
    rotations: Vec<SecretRotation>,
}

impl RotationHandler {
    pub fn new(backend: &Backend) -> Self {
        RotationHandler { rotations: vec![backend.signing_rotation(), backend.integrity_rotation()] }
    }

    pub async fn handle(&self, event: LambdaEvent<RotationEvent>) -> Result<Value, lambda_runtime::Error> {
        let span = tracing::info_span!("rotation", lambda_request_id = %event.context.request_id);
        let _entered = span.enter();
        Ok(self.run(&event.payload).await?)
    }

    /// One step of one rotation; the answer says whether it changed anything.
    pub async fn run(&self, event: &RotationEvent) -> Result<Value, RotationFailure> {
        let step =
            Step::parse(&event.step).ok_or_else(|| RotationFailure::UnknownStep(event.step.clone()))?;
        let Some(rotation) = self.rotations.iter().find(|r| same_secret(r.secret_id(), &event.secret_id))
        else {
            tracing::error!(asked = %event.secret_id, "rotation requested for a secret this function does not rotate");
            let configured: Vec<&str> = self.rotations.iter().map(SecretRotation::secret_id).collect();
            return Err(RotationFailure::UnknownSecret {
                configured: configured.join(" and "),
                asked: event.secret_id.clone(),
            });
        };
        let outcome = rotation.run(step, &event.client_request_token).await?;
        Ok(json!({"step": step.as_str(), "changed": outcome == Outcome::Changed}))
    }
}

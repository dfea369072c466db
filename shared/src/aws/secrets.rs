//! The Secrets Manager secret store. The port was modelled on Secrets
//! Manager, so most calls map one to one; the differences handled here:
//! - a port version id becomes the `ClientRequestToken`, which must be 32-64
//!   characters: shorter ids are padded with `_` (ids may not end in `_`);
//! - the stage is always named on reads (`GetSecretValue` without one can
//!   return a stale version on some servers);
//! - "no such secret" and "no version with that stage" are both
//!   `ResourceNotFoundException`, told apart with `DescribeSecret`;
//! - stage moves check the holder first so a re-run is a no-op, exactly as
//!   the port promises; Secrets Manager re-checks `RemoveFromVersionId`;
//! - a version put as current is put under a private label first and then
//!   given `AWSCURRENT` by an explicit stage move from its holder, which is
//!   what `PutSecretValue` does in one step on AWS; moto's one-step path
//!   hands `AWSPREVIOUS` to a stale version after an earlier stage move.

use std::sync::Arc;

use async_trait::async_trait;
use aws_config::SdkConfig;
use aws_sdk_secretsmanager::Client;
use zeroize::Zeroizing;

use super::error::{Failure, classify};
use super::{CallCounters, count};
use crate::ports::{SecretError, SecretStore, SecretVersion, Stage};

const MIN_TOKEN: usize = 32;
const MAX_TOKEN: usize = 64;
const PAD: char = '_';
/// Label of a version between its put and its move to `AWSCURRENT`.
const PUT_LABEL: &str = "PHARMAGATE_PUT";
pub const MAX_SECRET_BYTES: usize = 65_536;

#[derive(Clone)]
pub struct SecretsManagerStore {
    client: Client,
    calls: Arc<CallCounters>,
}

impl SecretsManagerStore {
    pub fn new(sdk: &SdkConfig, calls: Arc<CallCounters>) -> Self {
        SecretsManagerStore { client: Client::new(sdk), calls }
    }

    fn count(&self) {
        count(&self.calls.secrets_manager);
    }
}

/// A port version id as a `ClientRequestToken`.
fn token(version_id: &str) -> Result<String, SecretError> {
    let ok = (1..=MAX_TOKEN).contains(&version_id.len())
        && version_id.bytes().all(|b| b.is_ascii_graphic())
        && !version_id.ends_with(PAD);
    if !ok {
        return Err(SecretError::Invalid(
            "version id must be 1-64 printable ASCII characters, not ending in _".into(),
        ));
    }
    let pad = MIN_TOKEN.saturating_sub(version_id.len());
    Ok(format!("{version_id}{}", PAD.to_string().repeat(pad)))
}

fn version_id(token: &str) -> String {
    token.trim_end_matches(PAD).to_string()
}

fn stages(labels: &[String]) -> Vec<Stage> {
    let mut out: Vec<Stage> = labels.iter().filter_map(|l| Stage::parse(l)).collect();
    out.sort();
    out
}

fn to_secret_error(failure: Failure) -> SecretError {
    match failure {
        Failure::Unavailable(m) => SecretError::Unavailable(m),
        Failure::Service { code, message } => match code.as_str() {
            "ResourceNotFoundException" => SecretError::NotFound(message),
            "ResourceExistsException" | "InvalidRequestException" | "InvalidParameterException" => {
                SecretError::Conflict(format!("{code}: {message}"))
            }
            _ => SecretError::Unavailable(format!("{code}: {message}")),
        },
    }
}

impl SecretsManagerStore {
    /// Version id → stages of every staged version (errors if no secret).
    async fn describe(&self, secret_id: &str) -> Result<Vec<(String, Vec<Stage>)>, SecretError> {
        self.count();
        let out = self
            .client
            .describe_secret()
            .secret_id(secret_id)
            .send()
            .await
            .map_err(|e| to_secret_error(classify("DescribeSecret", e)))?;
        let mut versions: Vec<(String, Vec<Stage>)> = out
            .version_ids_to_stages
            .unwrap_or_default()
            .into_iter()
            .map(|(token, labels)| (version_id(&token), stages(&labels)))
            .filter(|(_, s)| !s.is_empty())
            .collect();
        versions.sort();
        Ok(versions)
    }

    /// One version by stage or token; `None` when the secret exists but has
    /// no such version.
    async fn fetch(
        &self,
        secret_id: &str,
        stage: Option<Stage>,
        token: Option<String>,
    ) -> Result<Option<SecretVersion>, SecretError> {
        self.count();
        let sent = self
            .client
            .get_secret_value()
            .secret_id(secret_id)
            .set_version_stage(stage.map(|s| s.as_str().to_string()))
            .set_version_id(token)
            .send()
            .await;
        let out = match sent.map_err(|e| to_secret_error(classify("GetSecretValue", e))) {
            Ok(out) => out,
            Err(SecretError::NotFound(_)) => {
                self.describe(secret_id).await?; // NotFound here: no secret at all
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        let value = out.secret_string.ok_or_else(|| SecretError::Unavailable("secret is not text".into()))?;
        Ok(Some(SecretVersion {
            version_id: version_id(out.version_id.as_deref().unwrap_or_default()),
            stages: stages(out.version_stages.as_deref().unwrap_or_default()),
            value: Zeroizing::new(value),
        }))
    }
}

impl SecretsManagerStore {
    /// The version holding `stage` now, if any.
    async fn holder(&self, secret_id: &str, stage: Stage) -> Result<Option<String>, SecretError> {
        let versions = self.describe(secret_id).await?;
        Ok(versions.into_iter().find(|(_, s)| s.contains(&stage)).map(|(v, _)| v))
    }

    async fn update_stage(
        &self,
        secret_id: &str,
        label: &str,
        to: Option<&str>,
        from: Option<&str>,
    ) -> Result<(), SecretError> {
        self.count();
        self.client
            .update_secret_version_stage()
            .secret_id(secret_id)
            .version_stage(label)
            .set_move_to_version_id(to.map(token).transpose()?)
            .set_remove_from_version_id(from.map(token).transpose()?)
            .send()
            .await
            .map_err(|e| match to_secret_error(classify("UpdateSecretVersionStage", e)) {
                SecretError::NotFound(m) => SecretError::Conflict(format!("no such version: {m}")),
                other => other,
            })?;
        Ok(())
    }
}

#[async_trait]
impl SecretStore for SecretsManagerStore {
    async fn ensure_secret(&self, secret_id: &str) -> Result<(), SecretError> {
        self.count();
        match self.client.create_secret().name(secret_id).send().await {
            Ok(_) => Ok(()),
            Err(e) => match to_secret_error(classify("CreateSecret", e)) {
                SecretError::Conflict(m) if m.starts_with("ResourceExistsException") => Ok(()),
                other => Err(other),
            },
        }
    }

    async fn get_stage(&self, secret_id: &str, stage: Stage) -> Result<Option<SecretVersion>, SecretError> {
        self.fetch(secret_id, Some(stage), None).await
    }

    async fn get_version(
        &self,
        secret_id: &str,
        version_id: &str,
    ) -> Result<Option<SecretVersion>, SecretError> {
        self.fetch(secret_id, None, Some(token(version_id)?)).await
    }

    async fn staged_versions(&self, secret_id: &str) -> Result<Vec<(String, Vec<Stage>)>, SecretError> {
        self.describe(secret_id).await
    }

    async fn put_version(
        &self,
        secret_id: &str,
        version_id: &str,
        value: &str,
        stages: &[Stage],
    ) -> Result<(), SecretError> {
        let token = token(version_id)?;
        if stages.is_empty() {
            return Err(SecretError::Invalid("a new version needs at least one stage".into()));
        }
        if value.is_empty() || value.len() > MAX_SECRET_BYTES {
            return Err(SecretError::Invalid(format!("a secret value holds 1 to {MAX_SECRET_BYTES} bytes")));
        }
        // The same id again is a no-op only with the same value.
        if let Some(existing) = self.get_version(secret_id, version_id).await? {
            let same: bool =
                subtle::ConstantTimeEq::ct_eq(existing.value.as_bytes(), value.as_bytes()).into();
            return if same {
                Ok(())
            } else {
                Err(SecretError::Conflict(format!("version {version_id} already exists with another value")))
            };
        }
        let current = stages.contains(&Stage::Current);
        let mut labels: Vec<String> =
            stages.iter().filter(|s| **s != Stage::Current).map(|s| s.as_str().to_string()).collect();
        if current {
            labels.push(PUT_LABEL.into());
        }
        let holder = if current { self.holder(secret_id, Stage::Current).await? } else { None };
        self.count();
        self.client
            .put_secret_value()
            .secret_id(secret_id)
            .client_request_token(token)
            .secret_string(value)
            .set_version_stages(Some(labels))
            .send()
            .await
            .map_err(|e| to_secret_error(classify("PutSecretValue", e)))?;
        if current {
            self.move_stage(secret_id, Stage::Current, Some(version_id), holder.as_deref()).await?;
            self.update_stage(secret_id, PUT_LABEL, None, Some(version_id)).await?;
        }
        Ok(())
    }

    async fn move_stage(
        &self,
        secret_id: &str,
        stage: Stage,
        to: Option<&str>,
        from: Option<&str>,
    ) -> Result<(), SecretError> {
        if to.is_none() && from.is_none() {
            return Err(SecretError::Invalid("name a version to move to or from".into()));
        }
        let versions = self.describe(secret_id).await?;
        let holder = versions.iter().find(|(_, s)| s.contains(&stage)).map(|(v, _)| v.as_str());
        if holder.is_some() && holder == to {
            return Ok(()); // already there: a re-run is a no-op
        }
        match (holder, from) {
            (Some(h), Some(f)) if h != f => {
                return Err(SecretError::Conflict(format!("{} is not on version {f}", stage.as_str())));
            }
            (None, Some(f)) => {
                return Err(SecretError::Conflict(format!("{} is not on version {f}", stage.as_str())));
            }
            (Some(h), None) => {
                return Err(SecretError::Conflict(format!(
                    "{} is on version {h}; name it as the version to move from",
                    stage.as_str()
                )));
            }
            _ => {}
        }
        self.update_stage(secret_id, stage.as_str(), to, from).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_ids_map_to_request_tokens_and_back() {
        for id in ["v1", "version-0001", "0123456789abcdef0123456789abcdef", &"x".repeat(64)] {
            let t = token(id).unwrap();
            assert!((MIN_TOKEN..=MAX_TOKEN).contains(&t.len()), "{t}");
            assert_eq!(version_id(&t), id);
        }
        for bad in ["", "ends_", "has space", &"x".repeat(65)] {
            assert!(matches!(token(bad), Err(SecretError::Invalid(_))), "{bad:?}");
        }
    }
}

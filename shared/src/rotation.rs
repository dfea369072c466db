//! Rotation of our secrets through the Secrets Manager rotation protocol:
//! `createSecret`, `setSecret`, `testSecret`, `finishSecret`, each called
//! with the secret and a `ClientRequestToken` naming the new version. The
//! `rotation` function runs these steps for Secrets Manager; `pharmagate
//! rotate` runs the same code on the embedded secret store. The protocol
//! (stages, idempotence, refusals) is here once; what differs per secret is
//! a [`SecretKind`]: the token signing key ([`SigningKeyKind`]) and the
//! record integrity key (`crate::integrity::IntegrityKeyKind`).
//!
//! Signing key, zero failed requests: the new key is written as
//! `AWSPENDING`, which every verifier already accepts (`crate::signing`),
//! with `sign_from` set one verifier-cache lifetime (plus a margin) ahead, so
//! no token is signed with it before every verifier has had time to read it.
//! `finishSecret` makes it `AWSCURRENT`; the old key becomes `AWSPREVIOUS`,
//! still accepted, and keeps signing until `sign_from`. The key that was
//! previous is dropped, so a rotation that would drop it while tokens it
//! signed may still be valid is refused (`TooSoon`) instead.
//!
//! Every step is safe to re-run, as Secrets Manager retries: stages are read
//! explicitly, a step finding its work done writes nothing, and a token that
//! is neither pending nor current is refused without writing.
//!
//! A secret with no `AWSCURRENT` version yet (the template creates the
//! signing key's secret empty and lets its first rotation make the key)
//! rotates through the same four steps: `createSecret` makes the first key
//! as `AWSPENDING` and `finishSecret` makes it current with no `AWSPREVIOUS`
//! to keep; it signs at once (`SecretRotation::finish` says why the first key
//! need not wait). Secrets Manager itself attaches `AWSCURRENT` to the first
//! version written to a secret, so there the first key is current (and still
//! `AWSPENDING`) from `createSecret` on: `setSecret` and `testSecret` find it
//! current and have nothing to do, `finishSecret` removes `AWSPENDING`. A
//! kind that cannot start from nothing refuses in `check_ready` (the
//! integrity key: `NoCurrent`).

use std::sync::Arc;

use async_trait::async_trait;
use zeroize::Zeroizing;

use crate::clock::Clock;
use crate::config::Settings;
use crate::jwt::{self, Claims, Expectations, KeySet, SigningKey};
use crate::ports::{SecretError, SecretStore, SecretVersion, Stage};

/// Added to the verifiers' cache lifetime before a new key signs: covers a
/// verifier whose re-read was in flight when the key was published.
pub const PUBLISH_MARGIN_SECS: i64 = 2;

/// The four steps, named as Secrets Manager names them in the event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Create,
    Set,
    Test,
    Finish,
}

impl Step {
    pub const ALL: [Step; 4] = [Step::Create, Step::Set, Step::Test, Step::Finish];

    pub fn as_str(self) -> &'static str {
        match self {
            Step::Create => "createSecret",
            Step::Set => "setSecret",
            Step::Test => "testSecret",
            Step::Finish => "finishSecret",
        }
    }

    pub fn parse(text: &str) -> Option<Step> {
        Step::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

/// Whether a step changed anything (the secret, or records it protects).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Changed,
    Unchanged,
}

/// The signing key's timing rules, derived from the settings every function
/// shares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RotationPolicy {
    /// From publishing a key to its first signature: the verifiers' cache
    /// lifetime plus [`PUBLISH_MARGIN_SECS`].
    pub publish_delay_secs: i64,
    /// From a key's last signature to the last moment a token it signed can
    /// be accepted: token lifetime, verification leeway, and the signers'
    /// cache lifetime (a signer may use a key that long after it changed).
    pub retire_after_secs: i64,
}

impl RotationPolicy {
    pub fn from_settings(settings: &Settings) -> Self {
        let cache = settings.signing_key_cache_secs as i64;
        RotationPolicy {
            publish_delay_secs: cache + PUBLISH_MARGIN_SECS,
            retire_after_secs: settings.token_lifetime_secs + jwt::LEEWAY_SECS + cache,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RotationError {
    /// Secrets Manager's "not set as AWSPENDING": nothing was written.
    #[error("version {token} of {secret} is neither AWSPENDING nor AWSCURRENT; nothing was written")]
    NotPending { secret: String, token: String },
    #[error("{0} has no AWSCURRENT version: bootstrap it first (pharmagate dev or aws bootstrap)")]
    NoCurrent(String),
    /// Rotating now would break something still in use; nothing written.
    #[error(
        "not rotating {secret} yet: {reason} until {} (Unix time {until}); rotate after then, or use the \
         compromised-secret rotation to replace it now",
        crate::clock::rfc3339(*.until)
    )]
    TooSoon { secret: String, reason: String, until: i64 },
    #[error("secret material of {secret} version {version} is unusable: {message}")]
    BadValue { secret: String, version: String, message: String },
    #[error("testSecret failed for {secret} version {token}: {message}")]
    TestFailed { secret: String, token: String, message: String },
    #[error(transparent)]
    Secret(#[from] SecretError),
    /// A store or key fault while re-sealing or checking records.
    #[error("rotation of {secret} could not finish its work: {message}")]
    Unavailable { secret: String, message: String },
}

/// What is particular to one kind of secret; [`SecretRotation`] runs the
/// protocol around it.
#[async_trait]
pub trait SecretKind: Send + Sync {
    /// Before `createSecret` writes: refuses a rotation that cannot go ahead
    /// yet (`TooSoon`).
    async fn check_ready(&self, rotation: &SecretRotation, now: i64) -> Result<(), RotationError>;
    /// New secret material made at `now`; `immediate` when it replaces a
    /// compromised secret and must be used at once.
    fn new_value(&self, now: i64, immediate: bool) -> Zeroizing<String>;
    /// `setSecret`: makes the pending value usable wherever it must be.
    async fn set(&self, rotation: &SecretRotation, pending: &SecretVersion)
    -> Result<Outcome, RotationError>;
    /// `testSecret`: proves the pending value works; writes nothing.
    async fn test(&self, rotation: &SecretRotation, pending: &SecretVersion) -> Result<(), RotationError>;
}

/// The rotation of one secret.
pub struct SecretRotation {
    secrets: Arc<dyn SecretStore>,
    secret_id: String,
    kind: Arc<dyn SecretKind>,
    clock: Clock,
}

impl SecretRotation {
    pub fn new(
        secrets: Arc<dyn SecretStore>,
        secret_id: impl Into<String>,
        kind: Arc<dyn SecretKind>,
    ) -> Self {
        SecretRotation { secrets, secret_id: secret_id.into(), kind, clock: Clock::system() }
    }

    /// The rotation of a token signing key.
    pub fn signing_key(
        secrets: Arc<dyn SecretStore>,
        secret_id: impl Into<String>,
        policy: RotationPolicy,
    ) -> Self {
        Self::new(secrets, secret_id, Arc::new(SigningKeyKind { policy }))
    }

    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    pub fn secret_id(&self) -> &str {
        &self.secret_id
    }

    pub fn secrets(&self) -> &Arc<dyn SecretStore> {
        &self.secrets
    }

    /// Runs one step for version `token`, as Secrets Manager invokes it.
    pub async fn run(&self, step: Step, token: &str) -> Result<Outcome, RotationError> {
        let outcome = match step {
            Step::Create => self.create(token).await,
            Step::Set => self.set(token).await,
            Step::Test => self.test(token).await,
            Step::Finish => self.finish(token).await,
        };
        match &outcome {
            Ok(o) => {
                tracing::info!(secret = %self.secret_id, %token, step = step.as_str(), outcome = ?o, "rotation step")
            }
            Err(e) => {
                tracing::error!(secret = %self.secret_id, %token, step = step.as_str(), error = %e, "rotation step failed")
            }
        }
        outcome
    }

    /// All four steps in order: a scheduled rotation, as Secrets Manager
    /// drives it.
    pub async fn rotate(&self, token: &str) -> Result<(), RotationError> {
        for step in Step::ALL {
            self.run(step, token).await?;
        }
        Ok(())
    }

    /// Replaces a compromised current secret at once: the new value is used
    /// immediately and the old one is withdrawn (no stage left), so it stops
    /// being accepted within the readers' cache lifetime.
    pub async fn rotate_compromised(&self, token: &str) -> Result<(), RotationError> {
        let current = self.current().await?;
        let value = self.kind.new_value(self.clock.now(), true);
        self.secrets.put_version(&self.secret_id, token, &value, &[Stage::Pending]).await?;
        for step in [Step::Set, Step::Test, Step::Finish] {
            self.run(step, token).await?;
        }
        if current.version_id != token {
            self.secrets
                .move_stage(&self.secret_id, Stage::Previous, None, Some(&current.version_id))
                .await?;
        }
        tracing::warn!(secret = %self.secret_id, withdrawn = %current.version_id, "compromised secret withdrawn");
        Ok(())
    }

    /// `createSecret`: new material as `AWSPENDING`, unless this version
    /// already has it. A stale `AWSPENDING` left by a crashed rotation moves
    /// to the new version (it was never current).
    async fn create(&self, token: &str) -> Result<Outcome, RotationError> {
        let stages = self.stages_of(token).await?;
        if stages.contains(&Stage::Current) {
            return Ok(Outcome::Unchanged);
        }
        if let Some(existing) = self.secrets.get_version(&self.secret_id, token).await? {
            return if existing.stages.contains(&Stage::Pending) {
                Ok(Outcome::Unchanged)
            } else {
                Err(self.not_pending(token))
            };
        }
        // No value yet: a token we have never seen (our drivers) or one
        // Secrets Manager labelled AWSPENDING before calling us.
        if !stages.is_empty() && !stages.contains(&Stage::Pending) {
            return Err(self.not_pending(token));
        }
        let now = self.clock.now();
        self.kind.check_ready(self, now).await?;
        // Made like any other, also on an empty secret: whether it may be
        // used at once is decided when it becomes current (see `finish`).
        let value = self.kind.new_value(now, false);
        self.secrets.put_version(&self.secret_id, token, &value, &[Stage::Pending]).await?;
        Ok(Outcome::Changed)
    }

    async fn set(&self, token: &str) -> Result<Outcome, RotationError> {
        match self.pending(token).await? {
            Some(pending) => self.kind.set(self, &pending).await,
            None => Ok(Outcome::Unchanged),
        }
    }

    async fn test(&self, token: &str) -> Result<Outcome, RotationError> {
        if let Some(pending) = self.pending(token).await? {
            self.kind.test(self, &pending).await?;
        }
        Ok(Outcome::Unchanged)
    }

    /// `finishSecret`: the pending version becomes `AWSCURRENT` (the old
    /// current becomes `AWSPREVIOUS`) and loses `AWSPENDING`. Finishing a
    /// version that is already current only tidies a leftover label.
    ///
    /// On a secret with no current version yet, `AWSCURRENT` is simply given
    /// to the pending version: there is no old version to keep as
    /// `AWSPREVIOUS`. The signing key then signs at once, before its
    /// `sign_from` (a signer with no `AWSPREVIOUS` key signs with the current
    /// one, `crate::signing`): the "publish first, sign one verifier-cache
    /// lifetime later" wait exists to keep the *old* key signing while
    /// verifiers learn the new one, and here there is no old key. Nothing
    /// has ever been signed, so no token exists that a verifier could refuse,
    /// and until this key is current no token can be issued at all; waiting
    /// would only keep issuance down longer. (The key is published as
    /// `AWSPENDING` since `createSecret`; a verifier that cached the empty key
    /// set re-reads on the new `kid`, at most every `min_refresh`.) The move
    /// names no holder, so if a current version appeared meanwhile (someone
    /// bootstrapped one) the store refuses it (`Conflict`, nothing written)
    /// and the retry takes the normal path, where that key keeps signing
    /// until this one's `sign_from` as in any rotation.
    async fn finish(&self, token: &str) -> Result<Outcome, RotationError> {
        let current = self.current_version().await?;
        let current_id = current.as_ref().map(|c| c.version_id.as_str());
        let stages = self.stages_of(token).await?;
        if current_id != Some(token) {
            if !stages.contains(&Stage::Pending) {
                return Err(self.not_pending(token));
            }
            self.secrets.move_stage(&self.secret_id, Stage::Current, Some(token), current_id).await?;
        } else if !stages.contains(&Stage::Pending) {
            return Ok(Outcome::Unchanged);
        }
        self.secrets.move_stage(&self.secret_id, Stage::Pending, None, Some(token)).await?;
        Ok(Outcome::Changed)
    }

    /// The stages `token` holds now (read explicitly, never assumed).
    async fn stages_of(&self, token: &str) -> Result<Vec<Stage>, RotationError> {
        let versions = self.secrets.staged_versions(&self.secret_id).await?;
        Ok(versions.into_iter().find(|(id, _)| id == token).map(|(_, s)| s).unwrap_or_default())
    }

    /// The pending version `token`; `None` when it is already current (the
    /// step has nothing to do); an error when it is neither.
    async fn pending(&self, token: &str) -> Result<Option<SecretVersion>, RotationError> {
        let version = self.secrets.get_version(&self.secret_id, token).await?;
        match version {
            Some(v) if v.stages.contains(&Stage::Current) => Ok(None),
            Some(v) if v.stages.contains(&Stage::Pending) => Ok(Some(v)),
            _ => Err(self.not_pending(token)),
        }
    }

    /// The `AWSCURRENT` version; `NoCurrent` when the secret has none.
    pub async fn current(&self) -> Result<SecretVersion, RotationError> {
        self.current_version().await?.ok_or_else(|| RotationError::NoCurrent(self.secret_id.clone()))
    }

    /// The `AWSCURRENT` version, if the secret has one yet.
    pub async fn current_version(&self) -> Result<Option<SecretVersion>, RotationError> {
        Ok(self.secrets.get_stage(&self.secret_id, Stage::Current).await?)
    }

    fn not_pending(&self, token: &str) -> RotationError {
        RotationError::NotPending { secret: self.secret_id.clone(), token: token.to_string() }
    }

    pub fn bad_value(&self, version: &SecretVersion, message: impl ToString) -> RotationError {
        RotationError::BadValue {
            secret: self.secret_id.clone(),
            version: version.version_id.clone(),
            message: message.to_string(),
        }
    }

    pub fn test_failed(&self, version: &SecretVersion, message: impl ToString) -> RotationError {
        RotationError::TestFailed {
            secret: self.secret_id.clone(),
            token: version.version_id.clone(),
            message: message.to_string(),
        }
    }

    pub fn unavailable(&self, message: impl ToString) -> RotationError {
        RotationError::Unavailable { secret: self.secret_id.clone(), message: message.to_string() }
    }

    pub fn too_soon(&self, reason: String, until: i64) -> RotationError {
        RotationError::TooSoon { secret: self.secret_id.clone(), reason, until }
    }
}

// ------------------------------------------------------- the signing key --

/// The token signing key: an Ed25519 private JWK with `sign_from`.
pub struct SigningKeyKind {
    pub policy: RotationPolicy,
}

impl SigningKeyKind {
    fn key_of(rotation: &SecretRotation, version: &SecretVersion) -> Result<SigningKey, RotationError> {
        SigningKey::from_secret(&version.value).map_err(|e| rotation.bad_value(version, e))
    }

    /// The keys a verifier reading the store now would accept.
    async fn published_keys(rotation: &SecretRotation) -> Result<KeySet, RotationError> {
        let mut keys = Vec::new();
        for stage in Stage::ALL {
            if let Some(version) = rotation.secrets().get_stage(rotation.secret_id(), stage).await? {
                keys.push(Self::key_of(rotation, &version)?.public());
            }
        }
        Ok(KeySet::new(keys))
    }
}

#[async_trait]
impl SecretKind for SigningKeyKind {
    /// Refuses a rotation that would drop `AWSPREVIOUS` while tokens it
    /// signed may still be accepted. The previous key signed until the
    /// current key's `sign_from`. With no current key (an empty secret) the
    /// rotation makes the first one and drops nothing: always ready.
    async fn check_ready(&self, rotation: &SecretRotation, now: i64) -> Result<(), RotationError> {
        let Some(current) = rotation.current_version().await? else { return Ok(()) };
        let Some(previous) = rotation.secrets().get_stage(rotation.secret_id(), Stage::Previous).await?
        else {
            return Ok(());
        };
        let last_signature = Self::key_of(rotation, &current)?.sign_from().unwrap_or(0);
        let until = last_signature + self.policy.retire_after_secs;
        if now < until {
            let kid = Self::key_of(rotation, &previous)?.kid().to_string();
            return Err(rotation
                .too_soon(format!("key {kid} would be withdrawn, and its tokens may be accepted"), until));
        }
        Ok(())
    }

    fn new_value(&self, now: i64, immediate: bool) -> Zeroizing<String> {
        let sign_from = if immediate { now } else { now + self.policy.publish_delay_secs };
        SigningKey::generate().with_sign_from(sign_from).to_secret()
    }

    /// There is no external service holding this key; what "setting" it
    /// means is that verifiers can find it. Checks that a verifier reading
    /// the secret now gets the pending key in its set.
    async fn set(
        &self,
        rotation: &SecretRotation,
        pending: &SecretVersion,
    ) -> Result<Outcome, RotationError> {
        let key = Self::key_of(rotation, pending)?;
        if Self::published_keys(rotation).await?.find(key.kid()).is_none() {
            return Err(rotation.test_failed(pending, "the pending key is not in the published key set"));
        }
        Ok(Outcome::Unchanged)
    }

    /// A token signed with the pending key verifies against the key set
    /// verifiers build from the store.
    async fn test(&self, rotation: &SecretRotation, pending: &SecretVersion) -> Result<(), RotationError> {
        let key = Self::key_of(rotation, pending)?;
        let now = rotation.clock.now();
        let expect = Expectations {
            issuer: "urn:pharmagate:rotation-test".into(),
            audience: "urn:pharmagate:rotation-test".into(),
            max_lifetime_secs: 60,
        };
        let claims = Claims {
            iss: expect.issuer.clone(),
            sub: "rotation-test".into(),
            aud: expect.audience.clone(),
            client_id: "rotation-test".into(),
            client_gen: "0".into(),
            scope: String::new(),
            iat: now,
            exp: now + 60,
            nbf: None,
            jti: jwt::new_jti(),
        };
        let probe = key.sign(&claims);
        jwt::verify(&probe, &Self::published_keys(rotation).await?, &expect, now)
            .map_err(|e| rotation.test_failed(pending, e))?;
        Ok(())
    }
}

/// A fresh version id for a rotation run by us (Secrets Manager brings its
/// own): time-ordered, so `staged_versions` lists read naturally.
pub fn new_token(now: i64) -> String {
    let mut random = [0u8; 8];
    getrandom::fill(&mut random).expect("the operating system's random source failed");
    let hex: String = random.iter().map(|b| format!("{b:02x}")).collect();
    format!("rotation-{now}-{hex}")
}

/// Whether the secret named in a rotation event is the configured one: the
/// event carries the ARN; the configuration may hold the ARN or the name
/// (an ARN's last part is the name plus `-` and six random characters).
pub fn same_secret(configured: &str, event_secret: &str) -> bool {
    if configured == event_secret {
        return true;
    }
    let Some((_, name_with_suffix)) = event_secret.split_once(":secret:") else { return false };
    match name_with_suffix.rsplit_once('-') {
        Some((name, suffix)) => name == configured && suffix.len() == 6,
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_says_until_when_in_words_a_person_reads() {
        let e =
            RotationError::TooSoon { secret: "s".into(), reason: "tokens live".into(), until: 1_800_000_000 };
        assert_eq!(
            e.to_string(),
            "not rotating s yet: tokens live until 2027-01-15T08:00:00Z (Unix time 1800000000); rotate after \
             then, or use the compromised-secret rotation to replace it now"
        );
    }

    #[test]
    fn steps_parse_by_their_secrets_manager_names_only() {
        for step in Step::ALL {
            assert_eq!(Step::parse(step.as_str()), Some(step));
        }
        assert_eq!(Step::parse("CreateSecret"), None);
        assert_eq!(Step::parse(""), None);
    }

    #[test]
    fn an_event_arn_names_the_configured_secret() {
        let arn =
            "arn:aws:secretsmanager:eu-west-1:123456789012:secret:pharmagate/prod/jwt-signing-key-AbC123";
        assert!(same_secret("pharmagate/prod/jwt-signing-key", arn));
        assert!(same_secret(arn, arn));
        assert!(!same_secret("pharmagate/prod/integrity-key", arn));
        assert!(!same_secret("pharmagate/prod/jwt-signing", arn));
        assert!(!same_secret("pharmagate/prod/jwt-signing-key", "pharmagate/prod/jwt-signing-key-AbC123"));
    }

    #[test]
    fn the_policy_waits_one_cache_lifetime_and_retires_after_the_token_lifetime() {
        let settings =
            Settings { signing_key_cache_secs: 60, token_lifetime_secs: 900, ..Settings::default() };
        let policy = RotationPolicy::from_settings(&settings);
        assert_eq!(policy, RotationPolicy { publish_delay_secs: 62, retire_after_secs: 990 });
    }

    #[test]
    fn tokens_are_valid_version_ids() {
        let token = new_token(1_800_000_000);
        assert!(token.starts_with("rotation-1800000000-"));
        assert_eq!(token.len(), "rotation-1800000000-".len() + 16);
    }
}

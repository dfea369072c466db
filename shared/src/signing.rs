//! The token signing keys, kept in the secret store.
//!
//! The secret's `AWSCURRENT` version signs; verifiers accept `AWSCURRENT`,
//! `AWSPENDING` (published before it becomes current, so a rotation never
//! produces a token nobody can verify) and `AWSPREVIOUS` (so tokens signed
//! just before a rotation stay valid until they expire). A key with none of
//! these stages is no longer accepted: that is how a compromised key is
//! withdrawn.
//!
//! A rotated-in key carries `sign_from` (see `crate::rotation`): until then
//! the previous key keeps signing, so no verifier is ever handed a token
//! whose key it has not had time to read.
//!
//! Each process caches what it read for `ttl`; a token naming an unknown
//! `kid` triggers one early re-read, at most once per `min_refresh`, so an
//! attacker sending made-up key ids cannot make us hammer the secret store.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::jwt::{KeySet, SigningKey};
use crate::ports::{SecretError, SecretStore, Stage};

pub const DEFAULT_CACHE_TTL: Duration = Duration::from_secs(60);
pub const DEFAULT_MIN_REFRESH: Duration = Duration::from_secs(10);
/// The version id of the key made at bootstrap, so two processes
/// bootstrapping at once write the same version once.
const INITIAL_VERSION: &str = "initial";

#[derive(Debug, thiserror::Error)]
pub enum SigningError {
    #[error("signing keys unavailable: {0}")]
    Unavailable(String),
    /// The secret exists but has no current key: not bootstrapped yet.
    #[error("no current signing key in secret {0}")]
    NoCurrentKey(String),
    #[error("signing key in secret {secret} version {version} is unusable: {message}")]
    BadKey { secret: String, version: String, message: String },
}

impl From<SecretError> for SigningError {
    fn from(e: SecretError) -> Self {
        crate::metrics::count(crate::metrics::Failure::SecretStore);
        SigningError::Unavailable(e.to_string())
    }
}

struct Snapshot {
    loaded_at: Instant,
    /// The `AWSCURRENT` key.
    signer: Option<Arc<SigningKey>>,
    /// The `AWSPREVIOUS` key, which signs until the current one's `sign_from`.
    outgoing: Option<Arc<SigningKey>>,
    keys: Arc<KeySet>,
}

pub struct SigningKeys {
    secrets: Arc<dyn SecretStore>,
    secret_id: String,
    ttl: Duration,
    min_refresh: Duration,
    snapshot: Mutex<Option<Arc<Snapshot>>>,
    /// Serializes re-reads, so a burst of requests causes one.
    refreshing: tokio::sync::Mutex<()>,
}

impl SigningKeys {
    pub fn new(secrets: Arc<dyn SecretStore>, secret_id: impl Into<String>) -> Self {
        SigningKeys {
            secrets,
            secret_id: secret_id.into(),
            ttl: DEFAULT_CACHE_TTL,
            min_refresh: DEFAULT_MIN_REFRESH,
            snapshot: Mutex::new(None),
            refreshing: tokio::sync::Mutex::new(()),
        }
    }

    pub fn with_cache(mut self, ttl: Duration, min_refresh: Duration) -> Self {
        self.ttl = ttl;
        self.min_refresh = min_refresh;
        self
    }

    pub fn secret_id(&self) -> &str {
        &self.secret_id
    }

    /// Creates the secret and a first current key if there is none. Returns
    /// whether it made the key.
    pub async fn bootstrap(&self) -> Result<bool, SigningError> {
        self.secrets.ensure_secret(&self.secret_id).await?;
        if self.secrets.get_stage(&self.secret_id, Stage::Current).await?.is_some() {
            return Ok(false);
        }
        let key = SigningKey::generate();
        match self
            .secrets
            .put_version(&self.secret_id, INITIAL_VERSION, &key.to_secret(), &[Stage::Current])
            .await
        {
            Ok(()) => Ok(true),
            // Another process bootstrapped first with its own key: keep theirs.
            Err(SecretError::Conflict(_)) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// The key that signs new tokens now.
    pub async fn signer(&self) -> Result<Arc<SigningKey>, SigningError> {
        self.signer_at(crate::clock::now_secs()).await
    }

    /// The key that signs at `now`: the current one once its `sign_from` has
    /// come, the previous one before that.
    pub async fn signer_at(&self, now: i64) -> Result<Arc<SigningKey>, SigningError> {
        let snapshot = self.fresh_snapshot().await?;
        let current =
            snapshot.signer.clone().ok_or_else(|| SigningError::NoCurrentKey(self.secret_id.clone()))?;
        match &snapshot.outgoing {
            Some(previous) if !current.may_sign_at(now) => Ok(previous.clone()),
            _ => Ok(current),
        }
    }

    /// Every key a token may be signed with (the JWKS).
    pub async fn key_set(&self) -> Result<Arc<KeySet>, SigningError> {
        Ok(self.fresh_snapshot().await?.keys.clone())
    }

    /// The key set for verifying a token that names `kid`: re-read early if
    /// `kid` is unknown, unless a re-read happened within `min_refresh`.
    pub async fn key_set_for(&self, kid: &str) -> Result<Arc<KeySet>, SigningError> {
        let snapshot = self.fresh_snapshot().await?;
        if snapshot.keys.find(kid).is_some() || snapshot.loaded_at.elapsed() < self.min_refresh {
            return Ok(snapshot.keys.clone());
        }
        let _guard = self.refreshing.lock().await;
        let current = self.cached();
        if let Some(s) = current.filter(|s| s.loaded_at.elapsed() < self.min_refresh) {
            return Ok(s.keys.clone()); // someone re-read while we waited
        }
        Ok(self.reload().await?.keys.clone())
    }

    /// Forgets the cache (after this process rotated the keys itself).
    pub fn invalidate(&self) {
        if let Ok(mut slot) = self.snapshot.lock() {
            *slot = None;
        }
    }

    fn cached(&self) -> Option<Arc<Snapshot>> {
        self.snapshot.lock().ok().and_then(|s| s.clone())
    }

    async fn fresh_snapshot(&self) -> Result<Arc<Snapshot>, SigningError> {
        if let Some(s) = self.cached().filter(|s| s.loaded_at.elapsed() < self.ttl) {
            return Ok(s);
        }
        let _guard = self.refreshing.lock().await;
        if let Some(s) = self.cached().filter(|s| s.loaded_at.elapsed() < self.ttl) {
            return Ok(s);
        }
        self.reload().await
    }

    async fn reload(&self) -> Result<Arc<Snapshot>, SigningError> {
        let mut signer = None;
        let mut outgoing = None;
        let mut public = Vec::new();
        for stage in [Stage::Current, Stage::Pending, Stage::Previous] {
            let Some(version) = self.secrets.get_stage(&self.secret_id, stage).await? else { continue };
            let key = SigningKey::from_secret(&version.value).map_err(|e| SigningError::BadKey {
                secret: self.secret_id.clone(),
                version: version.version_id.clone(),
                message: e.to_string(),
            })?;
            public.push(key.public());
            match stage {
                Stage::Current => signer = Some(Arc::new(key)),
                Stage::Previous => outgoing = Some(Arc::new(key)),
                Stage::Pending => {}
            }
        }
        let keys = Arc::new(KeySet::new(public));
        let snapshot = Arc::new(Snapshot { loaded_at: Instant::now(), signer, outgoing, keys });
        if let Ok(mut slot) = self.snapshot.lock() {
            *slot = Some(snapshot.clone());
        }
        Ok(snapshot)
    }
}

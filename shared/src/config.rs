//! Configuration from the environment, validated once at start-up with
//! messages that name the variable at fault.

#[cfg(feature = "embedded")]
use std::path::Path;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::anomaly::AnomalyConfig;
use crate::aws::{
    self, AwsResources, BootstrapError, CallCounters, DynamoStore, KmsVault, SecretsManagerStore,
};
use crate::clock::Clock;
#[cfg(feature = "embedded")]
use crate::embedded::{EmbeddedSecrets, LocalVault, SqliteStore};
use crate::guard::{AuthGuard, GuardConfig};
use crate::integrity::{Integrity, IntegrityKeyKind};
use crate::jwt::Expectations;
use crate::keycache::{CacheLimits, CachingVault};
use crate::lifecycle::LifecyclePolicy;
use crate::limits::{LimitConfig, Limiter};
use crate::metrics::MetricsTarget;
use crate::ports::{ItemStore, KeyVault, SecretStore};
use crate::repo::{CatalogRepo, ClientRepo, CustomerRepo, KeyRepo};
use crate::rotation::{RotationPolicy, SecretRotation};
use crate::signing::{DEFAULT_CACHE_TTL, DEFAULT_MIN_REFRESH, SigningKeys};

pub const DEFAULT_ENV_NAME: &str = "dev";
pub const DEFAULT_MAX_KEYS_PER_CUSTOMER: usize = 10;
pub const DEFAULT_ISSUER: &str = "http://127.0.0.1:8080";
pub const DEFAULT_AUDIENCE: &str = "pharmagate-api";
pub const DEFAULT_TOKEN_LIFETIME_SECS: i64 = 15 * 60;
pub const DEFAULT_AUDIT_RETENTION_DAYS: i64 = 365;
pub const DB_FILE: &str = "pharmagate.db";
pub const MASTER_KEY_FILE: &str = "master.key";
/// The embedded backend's integrity (MAC) key, in its own secret store.
pub const EMBEDDED_INTEGRITY_SECRET: &str = "pharmagate/integrity-key";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{name}: {message}")]
    Invalid { name: &'static str, message: String },
    #[error("cannot open the data directory {path}: {message}")]
    DataDir { path: String, message: String },
    #[error(
        "missing configuration: set {} (AWS resource names can all be derived from PHARMAGATE_AWS_PREFIX)",
        .0.join(", ")
    )]
    Missing(Vec<&'static str>),
    #[error(transparent)]
    Bootstrap(#[from] BootstrapError),
}

/// Which adapters serve the ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    /// SQLite, a master-key file and vault-sealed secrets in a data directory.
    Embedded,
    /// DynamoDB, KMS and Secrets Manager (or a local server speaking them).
    Aws,
}

impl BackendKind {
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        match text {
            "embedded" => Ok(BackendKind::Embedded),
            "aws" => Ok(BackendKind::Aws),
            other => Err(ConfigError::Invalid {
                name: "PHARMAGATE_BACKEND",
                message: format!("unknown backend {other:?}; choose embedded or aws"),
            }),
        }
    }

    /// `PHARMAGATE_BACKEND`, default `embedded` (`aws` in a build without
    /// the embedded backend, such as the Lambda bundles).
    pub fn from_env() -> Result<Self, ConfigError> {
        let default = if cfg!(feature = "embedded") { BackendKind::Embedded } else { BackendKind::Aws };
        std::env::var("PHARMAGATE_BACKEND").map_or(Ok(default), |v| BackendKind::parse(&v))
    }
}

/// Settings shared by every function.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Environment name inside issued API keys (`pg_<env>_…`); keys of other
    /// environments are refused.
    pub env_name: String,
    /// Most active keys a customer may hold when issuing keys for itself.
    pub max_keys_per_customer: usize,
    /// OAuth: the token issuer (`iss`), the authorization server's base URL.
    pub issuer: String,
    /// OAuth: the audience (`aud`) of access tokens, naming this API.
    pub audience: String,
    /// OAuth: access-token lifetime in seconds (60-3600).
    pub token_lifetime_secs: i64,
    /// The secret-store id of the token signing key.
    pub signing_secret_id: String,
    /// How long a process trusts the signing keys it read (0-3600 s): the
    /// longest a withdrawn key is still accepted, and a new one not yet used.
    pub signing_key_cache_secs: u64,
    /// Rate limits and daily quotas per tier (`PHARMAGATE_RATE_LIMITS`, JSON).
    pub limits: LimitConfig,
    /// Brute-force protection (`PHARMAGATE_AUTH_GUARD`, JSON).
    pub auth_guard: GuardConfig,
    /// How long audit records are kept (their TTL), in days.
    pub audit_retention_days: i64,
    /// Where metric (EMF) lines go: `PHARMAGATE_METRICS`, stdout when read
    /// from the environment (Lambda), off by default (tests).
    pub metrics: MetricsTarget,
    /// When to signal (and optionally suspend) anomalous principals.
    pub anomaly: AnomalyConfig,
    /// The API-key lifecycle job's ages (`PHARMAGATE_KEY_ROTATE_AFTER_DAYS`,
    /// `PHARMAGATE_DEAD_KEY_RETENTION_DAYS`).
    pub lifecycle: LifecyclePolicy,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            env_name: DEFAULT_ENV_NAME.into(),
            max_keys_per_customer: DEFAULT_MAX_KEYS_PER_CUSTOMER,
            issuer: DEFAULT_ISSUER.into(),
            audience: DEFAULT_AUDIENCE.into(),
            token_lifetime_secs: DEFAULT_TOKEN_LIFETIME_SECS,
            signing_secret_id: signing_secret_id(DEFAULT_ENV_NAME),
            signing_key_cache_secs: DEFAULT_CACHE_TTL.as_secs(),
            limits: LimitConfig::default(),
            auth_guard: GuardConfig::default(),
            audit_retention_days: DEFAULT_AUDIT_RETENTION_DAYS,
            metrics: MetricsTarget::Off,
            anomaly: AnomalyConfig::default(),
            lifecycle: LifecyclePolicy::default(),
        }
    }
}

/// The default secret id of the signing key for an environment.
pub fn signing_secret_id(env_name: &str) -> String {
    format!("pharmagate/{env_name}/jwt-signing-key")
}

impl Settings {
    /// Reads `PHARMAGATE_ENV_NAME` and `PHARMAGATE_MAX_KEYS_PER_CUSTOMER`.
    pub fn from_env() -> Result<Self, ConfigError> {
        let mut settings = Settings::default();
        if let Ok(name) = std::env::var("PHARMAGATE_ENV_NAME") {
            let ok = (2..=8).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_lowercase());
            if !ok {
                return Err(ConfigError::Invalid {
                    name: "PHARMAGATE_ENV_NAME",
                    message: "must be 2-8 characters of a-z".into(),
                });
            }
            settings.env_name = name;
        }
        if let Ok(text) = std::env::var("PHARMAGATE_MAX_KEYS_PER_CUSTOMER") {
            settings.max_keys_per_customer =
                text.parse().ok().filter(|n| (1..=1000).contains(n)).ok_or(ConfigError::Invalid {
                    name: "PHARMAGATE_MAX_KEYS_PER_CUSTOMER",
                    message: "must be 1 to 1000".into(),
                })?;
        }
        settings.signing_secret_id = signing_secret_id(&settings.env_name);
        if let Ok(url) = std::env::var("PHARMAGATE_ISSUER") {
            settings.issuer = validate_issuer(&url)
                .map_err(|message| ConfigError::Invalid { name: "PHARMAGATE_ISSUER", message })?;
        }
        if let Ok(text) = std::env::var("PHARMAGATE_TOKEN_AUDIENCE") {
            let ok = (1..=200).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_graphic());
            if !ok {
                return Err(ConfigError::Invalid {
                    name: "PHARMAGATE_TOKEN_AUDIENCE",
                    message: "must be 1-200 visible ASCII characters".into(),
                });
            }
            settings.audience = text;
        }
        if let Ok(text) = std::env::var("PHARMAGATE_TOKEN_LIFETIME_SECONDS") {
            settings.token_lifetime_secs =
                text.parse().ok().filter(|n| (60..=3600).contains(n)).ok_or(ConfigError::Invalid {
                    name: "PHARMAGATE_TOKEN_LIFETIME_SECONDS",
                    message: "must be 60 to 3600".into(),
                })?;
        }
        if let Ok(id) = std::env::var("PHARMAGATE_SIGNING_SECRET_ID") {
            let ok = (1..=256).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_graphic());
            if !ok {
                return Err(ConfigError::Invalid {
                    name: "PHARMAGATE_SIGNING_SECRET_ID",
                    message: "must be 1-256 visible ASCII characters".into(),
                });
            }
            settings.signing_secret_id = id;
        }
        if let Ok(text) = std::env::var("PHARMAGATE_SIGNING_KEY_CACHE_SECONDS") {
            settings.signing_key_cache_secs =
                text.parse().ok().filter(|n| *n <= 3600).ok_or(ConfigError::Invalid {
                    name: "PHARMAGATE_SIGNING_KEY_CACHE_SECONDS",
                    message: "must be 0 to 3600".into(),
                })?;
        }
        if let Some(days) = days_from_env("PHARMAGATE_KEY_ROTATE_AFTER_DAYS")? {
            settings.lifecycle.rotate_after_secs = days * 86_400;
        }
        if let Some(days) = days_from_env("PHARMAGATE_DEAD_KEY_RETENTION_DAYS")? {
            settings.lifecycle.dead_key_retention_secs = days * 86_400;
        }
        if let Ok(text) = std::env::var("PHARMAGATE_RATE_LIMITS") {
            settings.limits = LimitConfig::parse(&text)
                .map_err(|message| ConfigError::Invalid { name: "PHARMAGATE_RATE_LIMITS", message })?;
        }
        if let Ok(text) = std::env::var("PHARMAGATE_AUTH_GUARD") {
            settings.auth_guard = GuardConfig::parse(&text)
                .map_err(|message| ConfigError::Invalid { name: "PHARMAGATE_AUTH_GUARD", message })?;
        }
        settings.read_observability()?;
        Ok(settings)
    }

    /// The audit, metrics and anomaly settings.
    fn read_observability(&mut self) -> Result<(), ConfigError> {
        if let Some(days) = number_from_env("PHARMAGATE_AUDIT_RETENTION_DAYS", 1, 3650)? {
            self.audit_retention_days = days;
        }
        self.metrics = match std::env::var("PHARMAGATE_METRICS") {
            Ok(text) => MetricsTarget::parse(&text)
                .map_err(|message| ConfigError::Invalid { name: "PHARMAGATE_METRICS", message })?,
            Err(_) => MetricsTarget::Stdout,
        };
        let limit = |name| number_from_env(name, 1, 1_000_000);
        let a = &mut self.anomaly;
        a.rate_threshold = limit("PHARMAGATE_ANOMALY_RATE_THRESHOLD")?.map_or(a.rate_threshold, |n| n as u32);
        a.failure_threshold =
            limit("PHARMAGATE_ANOMALY_FAILURE_THRESHOLD")?.map_or(a.failure_threshold, |n| n as u32);
        a.scan_threshold = limit("PHARMAGATE_ANOMALY_SCAN_THRESHOLD")?.map_or(a.scan_threshold, |n| n as u32);
        a.suspend_threshold = limit("PHARMAGATE_ANOMALY_SUSPEND_THRESHOLD")?.map(|n| n as u32);
        Ok(())
    }
}

/// An integer setting in `min..=max`, if the variable is set.
fn number_from_env(name: &'static str, min: i64, max: i64) -> Result<Option<i64>, ConfigError> {
    let Ok(text) = std::env::var(name) else {
        return Ok(None);
    };
    let digits = !text.is_empty() && text.len() <= 10 && text.bytes().all(|b| b.is_ascii_digit());
    match text.parse::<i64>() {
        Ok(n) if digits && (min..=max).contains(&n) => Ok(Some(n)),
        _ => Err(ConfigError::Invalid { name, message: format!("must be an integer from {min} to {max}") }),
    }
}

/// The backend behind the ports, and the repositories built on it. Built
/// once per process and shared by reference.
#[derive(Clone)]
pub struct Backend {
    pub store: Arc<dyn ItemStore>,
    /// Always behind the data-key cache, on both backends.
    pub vault: Arc<dyn KeyVault>,
    pub secrets: Arc<dyn SecretStore>,
    pub integrity: Arc<Integrity>,
    pub settings: Settings,
    /// Calls made to each AWS service (AWS backend only).
    pub aws_calls: Option<Arc<CallCounters>>,
}

impl Backend {
    /// The embedded backend in `data_dir` (created 0700 if absent).
    #[cfg(feature = "embedded")]
    pub fn embedded(data_dir: &Path, settings: Settings) -> Result<Self, ConfigError> {
        let fail = |message: String| ConfigError::DataDir { path: data_dir.display().to_string(), message };
        create_private_dir(data_dir).map_err(|e| fail(e.to_string()))?;
        let store = SqliteStore::open(&data_dir.join(DB_FILE)).map_err(|e| fail(e.to_string()))?;
        let vault =
            LocalVault::open_or_create(&data_dir.join(MASTER_KEY_FILE)).map_err(|e| fail(e.to_string()))?;
        let vault: Arc<dyn KeyVault> = Arc::new(CachingVault::new(Arc::new(vault), CacheLimits::default()));
        let secrets: Arc<dyn SecretStore> = Arc::new(EmbeddedSecrets::new(store.clone(), vault.clone()));
        let integrity = Arc::new(Integrity::new(secrets.clone(), EMBEDDED_INTEGRITY_SECRET));
        Ok(Backend { store: Arc::new(store), vault, secrets, integrity, settings, aws_calls: None })
    }

    /// The AWS backend for `resources`, with one SDK configuration from the
    /// standard AWS environment. With `bootstrap`, missing tables, key and
    /// secret are created first (local servers only; SAM creates them in AWS).
    pub async fn aws(
        resources: &AwsResources,
        settings: Settings,
        bootstrap: bool,
    ) -> Result<Self, ConfigError> {
        Backend::aws_with(&aws::sdk_config().await?, resources, settings, bootstrap).await
    }

    /// Like [`Backend::aws`], with a given SDK configuration.
    pub async fn aws_with(
        sdk: &aws::SdkConfig,
        resources: &AwsResources,
        mut settings: Settings,
        bootstrap: bool,
    ) -> Result<Self, ConfigError> {
        // In AWS the signing key's secret is a named resource like the others.
        settings.signing_secret_id = resources.signing_secret_id.clone();
        let calls = CallCounters::new();
        let store = DynamoStore::new(sdk, resources.tables.clone(), calls.clone());
        let kms = KmsVault::new(sdk, resources.kms_key_id.clone(), calls.clone());
        let sm = SecretsManagerStore::new(sdk, calls.clone());
        if bootstrap {
            aws::bootstrap(resources, &store, &kms, &sm).await?;
        }
        let vault: Arc<dyn KeyVault> = Arc::new(CachingVault::new(Arc::new(kms), CacheLimits::default()));
        let secrets: Arc<dyn SecretStore> = Arc::new(sm);
        let integrity = Arc::new(Integrity::new(secrets.clone(), resources.integrity_secret_id.clone()));
        Ok(Backend { store: Arc::new(store), vault, secrets, integrity, settings, aws_calls: Some(calls) })
    }

    /// What a Lambda function uses: `PHARMAGATE_BACKEND` (`embedded`, the
    /// default, with `PHARMAGATE_DATA_DIR`; or `aws`, with the resource names
    /// of `AwsResources::from_env`).
    pub async fn from_env() -> Result<Self, ConfigError> {
        let settings = Settings::from_env()?;
        match BackendKind::from_env()? {
            #[cfg(feature = "embedded")]
            BackendKind::Embedded => Backend::embedded(&data_dir_from_env(), settings),
            // The Lambda bundles leave SQLite out: they run on AWS only.
            #[cfg(not(feature = "embedded"))]
            BackendKind::Embedded => Err(ConfigError::Invalid {
                name: "PHARMAGATE_BACKEND",
                message: "this build has only the aws backend (built without the embedded feature)".into(),
            }),
            BackendKind::Aws => Backend::aws(&AwsResources::from_env()?, settings, false).await,
        }
    }

    pub fn catalog(&self) -> CatalogRepo {
        CatalogRepo::new(self.store.clone(), self.vault.clone())
    }

    pub fn keys(&self) -> KeyRepo {
        KeyRepo::new(self.store.clone(), self.integrity.clone(), self.settings.env_name.clone())
    }

    pub fn customers(&self) -> CustomerRepo {
        CustomerRepo::new(self.store.clone(), self.integrity.clone())
    }

    pub fn clients(&self) -> ClientRepo {
        ClientRepo::new(self.store.clone(), self.integrity.clone())
    }

    /// The token signing keys (each caller keeps its own cache).
    pub fn signing_keys(&self) -> SigningKeys {
        let ttl = Duration::from_secs(self.settings.signing_key_cache_secs);
        SigningKeys::new(self.secrets.clone(), self.settings.signing_secret_id.clone())
            .with_cache(ttl, ttl.min(DEFAULT_MIN_REFRESH))
    }

    /// The rotation of the token signing key (the four Secrets Manager steps).
    pub fn signing_rotation(&self) -> SecretRotation {
        SecretRotation::signing_key(
            self.secrets.clone(),
            self.settings.signing_secret_id.clone(),
            RotationPolicy::from_settings(&self.settings),
        )
    }

    /// The rotation of the record integrity key (re-seals signed records).
    pub fn integrity_rotation(&self) -> SecretRotation {
        let kind = IntegrityKeyKind { store: self.store.clone(), integrity: self.integrity.clone() };
        SecretRotation::new(self.secrets.clone(), self.integrity.secret_id(), Arc::new(kind))
    }

    /// The rate limiter, on the system clock.
    pub fn limiter(&self) -> Limiter {
        Limiter::new(self.store.clone(), self.settings.limits.clone(), Clock::system())
    }

    /// Brute-force protection for authentication, on the system clock.
    pub fn auth_guard(&self) -> AuthGuard {
        AuthGuard::new(self.store.clone(), self.settings.auth_guard, Clock::system())
    }

    /// What a verifier of our access tokens insists on.
    pub fn token_expectations(&self) -> Expectations {
        Expectations {
            issuer: self.settings.issuer.clone(),
            audience: self.settings.audience.clone(),
            max_lifetime_secs: self.settings.token_lifetime_secs,
        }
    }
}

/// A number of days (1-3650) from the environment, if set.
fn days_from_env(name: &'static str) -> Result<Option<i64>, ConfigError> {
    let Ok(text) = std::env::var(name) else { return Ok(None) };
    let days = text.parse::<i64>().ok().filter(|d| (1..=3650).contains(d));
    days.map(Some).ok_or(ConfigError::Invalid { name, message: "must be 1 to 3650 (days)".into() })
}

/// Refuses to start without `name` set: for settings whose default only
/// suits a local run (the token issuer, in a Lambda function).
pub fn require_env(name: &'static str, why: &str) -> Result<(), ConfigError> {
    match std::env::var_os(name) {
        Some(_) => Ok(()),
        None => Err(ConfigError::Invalid { name, message: format!("must be set: {why}") }),
    }
}

/// An issuer is an absolute `https` URL (or `http` on a loopback host, for
/// local runs) with no query, fragment or trailing slash (RFC 8414 §2).
pub fn validate_issuer(url: &str) -> Result<String, String> {
    let local = ["http://127.0.0.1", "http://localhost", "http://[::1]"];
    let scheme_ok = url.starts_with("https://")
        || local
            .iter()
            .any(|p| url.strip_prefix(p).is_some_and(|r| r.is_empty() || r.starts_with([':', '/'])));
    let clean = !url.contains(['?', '#', ' ']) && !url.ends_with('/') && url.len() <= 200 && url.is_ascii();
    if scheme_ok && clean {
        Ok(url.to_string())
    } else {
        Err("must be an https URL (http only on loopback) without query, fragment or trailing slash".into())
    }
}

/// `PHARMAGATE_DATA_DIR`, else `.pharmagate` in the working directory.
pub fn data_dir_from_env() -> PathBuf {
    std::env::var_os("PHARMAGATE_DATA_DIR").map_or_else(|| PathBuf::from(".pharmagate"), PathBuf::from)
}

#[cfg(feature = "embedded")]
fn create_private_dir(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if path.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(path)
}

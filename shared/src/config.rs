//! Configuration from the environment, validated once at start-up with
//! messages that name the variable at fault.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::embedded::{LocalVault, SqliteStore};
use crate::ports::{ItemStore, KeyVault};
use crate::repo::{CatalogRepo, CustomerRepo, KeyRepo};

pub const DEFAULT_ENV_NAME: &str = "dev";
pub const DEFAULT_MAX_KEYS_PER_CUSTOMER: usize = 10;
pub const DB_FILE: &str = "pharmagate.db";
pub const MASTER_KEY_FILE: &str = "master.key";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{name}: {message}")]
    Invalid { name: &'static str, message: String },
    #[error("cannot open the data directory {path}: {message}")]
    DataDir { path: String, message: String },
}

/// Settings shared by every function.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Environment name inside issued API keys (`pg_<env>_…`); keys of other
    /// environments are refused.
    pub env_name: String,
    /// Most active keys a customer may hold when issuing keys for itself.
    pub max_keys_per_customer: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Settings { env_name: DEFAULT_ENV_NAME.into(), max_keys_per_customer: DEFAULT_MAX_KEYS_PER_CUSTOMER }
    }
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
        Ok(settings)
    }
}

/// The backend behind the ports, and the repositories built on it. Built
/// once per process and shared by reference.
#[derive(Clone)]
pub struct Backend {
    pub store: Arc<dyn ItemStore>,
    pub vault: Arc<dyn KeyVault>,
    pub settings: Settings,
}

impl Backend {
    /// The embedded backend in `data_dir` (created 0700 if absent).
    pub fn embedded(data_dir: &Path, settings: Settings) -> Result<Self, ConfigError> {
        let fail = |message: String| ConfigError::DataDir { path: data_dir.display().to_string(), message };
        create_private_dir(data_dir).map_err(|e| fail(e.to_string()))?;
        let store = SqliteStore::open(&data_dir.join(DB_FILE)).map_err(|e| fail(e.to_string()))?;
        let vault =
            LocalVault::open_or_create(&data_dir.join(MASTER_KEY_FILE)).map_err(|e| fail(e.to_string()))?;
        Ok(Backend { store: Arc::new(store), vault: Arc::new(vault), settings })
    }

    /// What a Lambda function uses: `PHARMAGATE_BACKEND` (`embedded`, the
    /// default) with `PHARMAGATE_DATA_DIR`.
    pub fn from_env() -> Result<Self, ConfigError> {
        let settings = Settings::from_env()?;
        match std::env::var("PHARMAGATE_BACKEND").as_deref() {
            Ok("embedded") | Err(_) => Backend::embedded(&data_dir_from_env(), settings),
            Ok(other) => Err(ConfigError::Invalid {
                name: "PHARMAGATE_BACKEND",
                message: format!("unknown backend {other:?}; this build supports: embedded"),
            }),
        }
    }

    pub fn catalog(&self) -> CatalogRepo {
        CatalogRepo::new(self.store.clone(), self.vault.clone())
    }

    pub fn keys(&self) -> KeyRepo {
        KeyRepo::new(self.store.clone(), self.settings.env_name.clone())
    }

    pub fn customers(&self) -> CustomerRepo {
        CustomerRepo::new(self.store.clone())
    }
}

/// `PHARMAGATE_DATA_DIR`, else `.pharmagate` in the working directory.
pub fn data_dir_from_env() -> PathBuf {
    std::env::var_os("PHARMAGATE_DATA_DIR").map_or_else(|| PathBuf::from(".pharmagate"), PathBuf::from)
}

fn create_private_dir(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if path.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(path)
}

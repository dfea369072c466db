//! Repositories: the catalog, API keys and customers, written once against
//! the ports so every backend runs the same code.

pub mod catalog;
pub mod customers;
pub mod keys;

pub use catalog::{CatalogRepo, PutOutcome, Search};
pub use customers::CustomerRepo;
pub use keys::{KeyRecord, KeyRepo, KeyStatus};

use crate::crypto::CryptoError;
use crate::ports::StoreError;

/// Errors a repository reports to its callers.
#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    /// Backend unreachable or throttling: answer 503, serve nothing.
    #[error("backend unavailable: {0}")]
    Unavailable(String),
    /// Concurrent writers kept colliding; the caller may retry.
    #[error("conflicting concurrent update")]
    Conflict,
    /// Stored data is unreadable, or confidential data failed to decrypt.
    #[error("stored data is corrupt or was altered: {0}")]
    Corrupt(String),
}

impl RepoError {
    pub fn corrupt(e: impl std::fmt::Display) -> Self {
        RepoError::Corrupt(e.to_string())
    }
}

impl From<StoreError> for RepoError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(m) => RepoError::Unavailable(m),
            StoreError::ConditionFailed => RepoError::Conflict,
            StoreError::Invalid(m) | StoreError::Corrupt(m) => RepoError::Corrupt(m),
        }
    }
}

impl From<CryptoError> for RepoError {
    fn from(e: CryptoError) -> Self {
        match e {
            CryptoError::Unavailable(m) => RepoError::Unavailable(m),
            other => RepoError::Corrupt(other.to_string()),
        }
    }
}

//! Repositories: the catalog, API keys, customers, OAuth clients and the
//! audit trail, written once against the ports so every backend runs the
//! same code.

pub mod audit;
pub mod catalog;
pub mod clients;
pub mod customers;
pub mod keys;

pub use audit::{AuditFilter, AuditRecord, AuditRepo, Decision, StreamWriter};
pub use catalog::{CatalogRepo, PutOutcome, Search};
pub use clients::{ClientRecord, ClientRepo};
pub use customers::CustomerRepo;
pub use keys::{KeyRecord, KeyRepo, KeyStatus};

use crate::crypto::CryptoError;
use crate::integrity::IntegrityError;
use crate::metrics::{self, Failure};
use crate::ports::StoreError;

/// How long a rotated credential (API key or client secret) keeps working
/// unless told otherwise: one day. 0 ends it at once (a leaked credential).
pub const DEFAULT_GRACE_SECS: i64 = 24 * 3600;
pub const MAX_GRACE_SECS: i64 = 30 * 24 * 3600;

/// A grace period in seconds: 0 to 30 days.
pub fn validate_grace(secs: i64) -> Result<i64, String> {
    if (0..=MAX_GRACE_SECS).contains(&secs) {
        Ok(secs)
    } else {
        Err(format!("must be 0 to {MAX_GRACE_SECS}"))
    }
}

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
    /// An authorization record failed its integrity check (forged or
    /// altered in the store): never act on it.
    #[error("authorization record failed its integrity check: {0}")]
    Integrity(String),
}

impl RepoError {
    pub fn corrupt(e: impl std::fmt::Display) -> Self {
        RepoError::Corrupt(e.to_string())
    }
}

/// The one place store and vault failures become repository errors, so the
/// one place they are counted for the request's metrics.
impl From<StoreError> for RepoError {
    fn from(e: StoreError) -> Self {
        if !matches!(e, StoreError::ConditionFailed) {
            metrics::count(Failure::Store);
        }
        match e {
            StoreError::Unavailable(m) => RepoError::Unavailable(m),
            StoreError::ConditionFailed => RepoError::Conflict,
            StoreError::Invalid(m) | StoreError::Corrupt(m) => RepoError::Corrupt(m),
        }
    }
}

impl From<IntegrityError> for RepoError {
    fn from(e: IntegrityError) -> Self {
        match e {
            IntegrityError::Invalid(m) => RepoError::Integrity(m),
            IntegrityError::Unavailable(m) => RepoError::Unavailable(m),
        }
    }
}

impl From<CryptoError> for RepoError {
    fn from(e: CryptoError) -> Self {
        match e {
            CryptoError::Unavailable(m) => {
                metrics::count(Failure::Vault);
                RepoError::Unavailable(m)
            }
            other => RepoError::Corrupt(other.to_string()),
        }
    }
}

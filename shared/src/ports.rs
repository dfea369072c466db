//! The ports: the only way business logic reaches storage and key material.
//!
//! Each port has an embedded adapter (`crate::embedded`) and an AWS adapter
//! (DynamoDB, KMS, Secrets Manager). Repositories are written once against
//! these traits, so the same code and the same contract tests run on both.
//!
//! Item-store contract, which every adapter must keep:
//! - items live in a logical `Table`, addressed by a partition key `pk` and a
//!   sort key `sk`; attributes are a JSON object (strings, numbers, booleans,
//!   arrays, objects);
//! - `query` returns one partition's items whose `sk` starts with a prefix,
//!   in ascending byte order of `sk`, at most `limit` per page, resuming
//!   strictly after the `after` sort key; `Page::next` is the sort key to resume
//!   after, or `None` when the partition is exhausted;
//! - an item whose `expires_at` (Unix seconds) has passed is invisible to
//!   `get` and `query` and counts as absent for conditions, even before the
//!   backend deletes it (DynamoDB TTL deletes lazily);
//! - `transact` applies all of its operations or none; a failed condition
//!   fails the whole transaction with `StoreError::ConditionFailed`;
//! - at most `MAX_TRANSACTION_OPS` operations per transaction (DynamoDB's limit).

use std::collections::BTreeMap;
use std::fmt;

use async_trait::async_trait;
use serde_json::{Map, Value};
use zeroize::Zeroizing;

pub type Attrs = Map<String, Value>;

pub const MAX_TRANSACTION_OPS: usize = 100;

/// Logical tables. Adapters map them to physical names (one DynamoDB table
/// each, configured by environment; one SQLite table column locally).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Table {
    Catalog,
    Keys,
    Customers,
    /// OAuth clients and revoked access-token ids.
    Clients,
    /// Rate-limit and quota counters, authentication-failure counters and
    /// blocks: short-lived, all with a TTL.
    Usage,
    /// The audit trail: hash-chained records of every request, with a TTL.
    Audit,
}

impl Table {
    pub const ALL: [Table; 6] =
        [Table::Catalog, Table::Keys, Table::Customers, Table::Clients, Table::Usage, Table::Audit];

    pub fn as_str(self) -> &'static str {
        match self {
            Table::Catalog => "catalog",
            Table::Keys => "keys",
            Table::Customers => "customers",
            Table::Clients => "clients",
            Table::Usage => "usage",
            Table::Audit => "audit",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    pub pk: String,
    pub sk: String,
    pub attrs: Attrs,
    /// Unix seconds after which the item is gone (TTL).
    pub expires_at: Option<i64>,
}

impl Item {
    pub fn new(pk: impl Into<String>, sk: impl Into<String>, attrs: Attrs) -> Self {
        Item { pk: pk.into(), sk: sk.into(), attrs, expires_at: None }
    }
}

/// A condition a write must meet, checked atomically with the write.
#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    Always,
    /// No live item with this key exists.
    NotExists,
    /// A live item exists.
    Exists,
    /// A live item exists and its attribute equals the value.
    AttrEquals(String, Value),
}

#[derive(Debug, Clone, PartialEq)]
pub enum WriteOp {
    Put { table: Table, item: Item, condition: Condition },
    Delete { table: Table, pk: String, sk: String, condition: Condition },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    pub table: Table,
    pub pk: String,
    pub sk_prefix: String,
    pub after: Option<String>,
    pub limit: usize,
}

/// The `next` of a scan page: the last item's key, as JSON `[pk, sk]`.
pub fn scan_cursor(item: &Item) -> String {
    serde_json::json!([item.pk, item.sk]).to_string()
}

/// The key a scan cursor names; `Invalid` for anything we did not make.
pub fn parse_scan_cursor(cursor: &str) -> Result<(String, String), StoreError> {
    serde_json::from_str::<(String, String)>(cursor)
        .map_err(|_| StoreError::Invalid(format!("not a scan cursor: {cursor:?}")))
}

#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    pub items: Vec<Item>,
    pub next: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A write's condition did not hold; nothing was written.
    #[error("condition failed")]
    ConditionFailed,
    /// The backend cannot be reached or is throttling; retry later.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The request itself was wrong (too many ops, bad key): a bug, not bad input.
    #[error("invalid store request: {0}")]
    Invalid(String),
    /// Stored data could not be read back.
    #[error("corrupt item: {0}")]
    Corrupt(String),
}

#[async_trait]
pub trait ItemStore: Send + Sync {
    async fn get(&self, table: Table, pk: &str, sk: &str) -> Result<Option<Item>, StoreError>;
    async fn put(&self, table: Table, item: Item, condition: Condition) -> Result<(), StoreError>;
    async fn delete(&self, table: Table, pk: &str, sk: &str, condition: Condition) -> Result<(), StoreError>;
    async fn query(&self, query: Query) -> Result<Page, StoreError>;
    /// Atomically adds `by` to the counter attribute `n` of an item (created at
    /// 0 with `expires_at` if absent). Returns the new value, or `None` without
    /// changing anything if the new value would exceed `max`.
    async fn add(
        &self,
        table: Table,
        pk: &str,
        sk: &str,
        by: i64,
        max: Option<i64>,
        expires_at: Option<i64>,
    ) -> Result<Option<i64>, StoreError>;
    async fn transact(&self, ops: Vec<WriteOp>) -> Result<(), StoreError>;
    /// Every live item of `table`, `limit` at a time, in no particular order;
    /// `after` is the previous page's `next`. For maintenance jobs (re-sealing
    /// records under a new integrity key), never on a request path.
    async fn scan(&self, table: Table, after: Option<String>, limit: usize) -> Result<Page, StoreError>;
    /// Physically removes up to `limit` items whose TTL passed at or before
    /// `now`, returning how many went. Reads already hide such items; this
    /// frees the space. The default suits backends that delete expired items
    /// themselves (DynamoDB's TTL): nothing to do.
    async fn purge_expired(&self, now: i64, limit: usize) -> Result<u64, StoreError> {
        let _ = (now, limit);
        Ok(0)
    }
}

/// What a data key is bound to. Serialized canonically (sorted keys) so the
/// same context always yields the same associated data.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EncryptionContext(BTreeMap<String, String>);

impl EncryptionContext {
    pub fn new<const N: usize>(pairs: [(&str, &str); N]) -> Self {
        EncryptionContext(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
    }

    pub fn pairs(&self) -> &BTreeMap<String, String> {
        &self.0
    }

    /// Length-prefixed `key=value` pairs in key order: unambiguous bytes.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for (k, v) in &self.0 {
            for part in [k, v] {
                out.extend_from_slice(&(part.len() as u32).to_be_bytes());
                out.extend_from_slice(part.as_bytes());
            }
        }
        out
    }
}

impl FromIterator<(String, String)> for EncryptionContext {
    fn from_iter<I: IntoIterator<Item = (String, String)>>(pairs: I) -> Self {
        EncryptionContext(pairs.into_iter().collect())
    }
}

/// A fresh data key: the plaintext for immediate use, and its wrapped form to
/// store beside the ciphertext.
pub struct DataKey {
    pub plaintext: Zeroizing<[u8; 32]>,
    pub wrapped: Vec<u8>,
}

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DataKey {{ plaintext: [redacted], wrapped: {} bytes }}", self.wrapped.len())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    /// Wrong context, wrong key or tampered bytes: never decrypt.
    #[error("data key cannot be unwrapped with this context")]
    Denied,
    #[error("key vault unavailable: {0}")]
    Unavailable(String),
}

#[async_trait]
pub trait KeyVault: Send + Sync {
    async fn generate_data_key(&self, context: &EncryptionContext) -> Result<DataKey, VaultError>;
    async fn decrypt_data_key(
        &self,
        wrapped: &[u8],
        context: &EncryptionContext,
    ) -> Result<Zeroizing<[u8; 32]>, VaultError>;
}

/// The staging labels of a secret version, as Secrets Manager names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Stage {
    Current,
    Pending,
    Previous,
}

impl Stage {
    pub const ALL: [Stage; 3] = [Stage::Current, Stage::Pending, Stage::Previous];

    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Current => "AWSCURRENT",
            Stage::Pending => "AWSPENDING",
            Stage::Previous => "AWSPREVIOUS",
        }
    }

    pub fn parse(text: &str) -> Option<Stage> {
        Stage::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

/// One version of a secret. The value is wiped from memory when dropped and
/// never printed.
pub struct SecretVersion {
    pub version_id: String,
    pub stages: Vec<Stage>,
    pub value: Zeroizing<String>,
}

impl fmt::Debug for SecretVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "SecretVersion {{ version_id: {:?}, stages: {:?}, value: [redacted] }}",
            self.version_id, self.stages
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The secret itself does not exist (create it first).
    #[error("no such secret: {0}")]
    NotFound(String),
    /// The request contradicts the secret's state: a version id reused with
    /// another value, or a stage moved from a version that does not hold it.
    #[error("secret conflict: {0}")]
    Conflict(String),
    #[error("secret store unavailable: {0}")]
    Unavailable(String),
    #[error("invalid secret request: {0}")]
    Invalid(String),
}

/// Secret-store contract, modelled on Secrets Manager so the rotation
/// protocol runs unchanged on both adapters:
/// - a secret has versions (id chosen by the caller, like a
///   `ClientRequestToken`) and each stage labels at most one version;
/// - `put_version` is idempotent: the same id with the same value succeeds
///   and changes nothing, the same id with another value is a `Conflict`;
/// - giving a version `Current` (by put or move) moves `Previous` to the
///   version that was current, as Secrets Manager does;
/// - `move_stage` must name the version that holds the stage now (`from`)
///   when one does, else `Conflict`; `to: None` removes the stage;
/// - version ids are 1-64 printable ASCII characters, not ending in `_` (the
///   Secrets Manager adapter pads them into 32-64 character request tokens).
#[async_trait]
pub trait SecretStore: Send + Sync {
    /// Creates the secret with no versions; an existing secret is left as is.
    async fn ensure_secret(&self, secret_id: &str) -> Result<(), SecretError>;
    /// The version holding `stage`, if any. Always asks for the stage
    /// explicitly (Secrets Manager's default can be stale).
    async fn get_stage(&self, secret_id: &str, stage: Stage) -> Result<Option<SecretVersion>, SecretError>;
    async fn get_version(
        &self,
        secret_id: &str,
        version_id: &str,
    ) -> Result<Option<SecretVersion>, SecretError>;
    /// Every version that holds at least one stage, with its stages.
    async fn staged_versions(&self, secret_id: &str) -> Result<Vec<(String, Vec<Stage>)>, SecretError>;
    async fn put_version(
        &self,
        secret_id: &str,
        version_id: &str,
        value: &str,
        stages: &[Stage],
    ) -> Result<(), SecretError>;
    async fn move_stage(
        &self,
        secret_id: &str,
        stage: Stage,
        to: Option<&str>,
        from: Option<&str>,
    ) -> Result<(), SecretError>;
}

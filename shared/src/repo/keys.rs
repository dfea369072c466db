//! API keys on the item store.
//!
//! Layout in the `keys` table:
//! - `KEY#<id>` / `KEY`: the key record (hash, customer, role, tier, times);
//! - `CUSTOMER#<customer>` / `KEY#<id>`: the customer's list of keys;
//! - `ALL` / `<id>`: every key, for administrators;
//! - `CUSTOMER#<customer>` / `KEYSET`: a version bumped by every issue, so
//!   concurrent issues for one customer serialize and the per-customer cap
//!   holds exactly.
//!
//! Key records carry an integrity MAC (`crate::integrity`), checked on every
//! read: a record forged or altered in the store (a raised role or tier, a
//! cleared revocation) is refused, never turned into a principal.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::RepoError;
use crate::clock::now_secs;
use crate::domain::{ApiKey, CustomerId, KeyHash, KeyId, Principal, Role, Tier};
use crate::integrity::Integrity;
use crate::ports::{Attrs, Condition, Item, ItemStore, Query, StoreError, Table, WriteOp};

const KEY_SK: &str = "KEY";
const KEYSET_SK: &str = "KEYSET";
const ALL_PK: &str = "ALL";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRecord {
    pub id: KeyId,
    pub customer: CustomerId,
    pub role: Role,
    pub tier: Tier,
    /// SHA-256 of the whole key, hex.
    pub hash: String,
    #[serde(default)]
    pub label: Option<String>,
    pub created_at: i64,
    /// End of life: set by rotation (end of the grace period) or at issue.
    #[serde(default)]
    pub expires_at: Option<i64>,
    #[serde(default)]
    pub revoked_at: Option<i64>,
    /// The key that replaced this one, once rotated.
    #[serde(default)]
    pub replaced_by: Option<KeyId>,
    /// Since when the lifecycle job has asked for this key to be rotated (it
    /// is older than the configured age).
    #[serde(default)]
    pub rotation_due_since: Option<i64>,
    /// When the store drops this dead key and its index entries (their TTL),
    /// set by the lifecycle job once the key expired or was revoked.
    #[serde(default)]
    pub purge_at: Option<i64>,
    /// Bumped by every change; writes are conditional on it.
    #[serde(default)]
    pub rev: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyStatus {
    Active,
    Expired,
    Revoked,
}

impl KeyRecord {
    pub fn status(&self, now: i64) -> KeyStatus {
        if self.revoked_at.is_some() {
            KeyStatus::Revoked
        } else if self.expires_at.is_some_and(|t| t <= now) {
            KeyStatus::Expired
        } else {
            KeyStatus::Active
        }
    }

    /// Whether `hash` (of a presented key) is this record's (constant time).
    pub fn matches(&self, hash: &KeyHash) -> bool {
        KeyHash::from_hex(&self.hash).is_some_and(|h| h.matches(hash))
    }
}

pub const MAX_LABEL_CHARS: usize = 100;
pub const MAX_LIFETIME_DAYS: i64 = 3650;

/// The expiry time of a key issued now to live `days` days (1-3650).
pub fn expiry_after_days(days: i64) -> Result<i64, String> {
    if (1..=MAX_LIFETIME_DAYS).contains(&days) {
        Ok(now_secs() + days * 86_400)
    } else {
        Err(format!("must be 1 to {MAX_LIFETIME_DAYS}"))
    }
}

/// A key's label: trimmed, 1-100 characters, no control characters.
pub fn validate_label(text: &str) -> Result<String, String> {
    crate::domain::product::clean_text("label", text, MAX_LABEL_CHARS).map_err(|e| e.message)
}

/// What to issue.
#[derive(Debug, Clone)]
pub struct NewKey {
    pub customer: CustomerId,
    pub role: Role,
    pub tier: Tier,
    pub label: Option<String>,
    pub expires_at: Option<i64>,
}

#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    #[error("the customer already has {0} active keys, the most allowed")]
    CapReached(usize),
    #[error(transparent)]
    Repo(#[from] RepoError),
}

#[derive(Debug, thiserror::Error)]
pub enum RotateError {
    #[error("no such key")]
    NotFound,
    #[error("the key is {0:?} and cannot be rotated")]
    NotActive(KeyStatus),
    #[error("the key was already rotated")]
    AlreadyRotated,
    #[error("the customer already has {0} active keys, the most allowed")]
    CapReached(usize),
    #[error(transparent)]
    Repo(#[from] RepoError),
}

#[derive(Clone)]
pub struct KeyRepo {
    store: Arc<dyn ItemStore>,
    integrity: Arc<Integrity>,
    env: String,
}

fn key_pk(id: &KeyId) -> String {
    format!("KEY#{id}")
}

fn customer_pk(customer: &CustomerId) -> String {
    format!("CUSTOMER#{customer}")
}

fn record_attrs(record: &KeyRecord) -> Attrs {
    match serde_json::to_value(record).expect("key record serializes") {
        Value::Object(map) => map,
        _ => unreachable!("a struct serializes to an object"),
    }
}

impl KeyRepo {
    /// `env` is the environment name baked into issued keys (`dev`, `live`…).
    pub fn new(store: Arc<dyn ItemStore>, integrity: Arc<Integrity>, env: impl Into<String>) -> Self {
        KeyRepo { store, integrity, env: env.into() }
    }

    pub fn env(&self) -> &str {
        &self.env
    }

    /// Whether `principal` may still act, read again from its record: an
    /// API key must still be active. For what must not be done on a stale
    /// answer (with an authorizer cache, API Gateway's or `dev`'s, a key
    /// revoked a moment ago still arrives with its principal): minting keys
    /// or client credentials that would outlive the revocation. OAuth
    /// principals pass (their scopes never reach those routes; their tokens
    /// are checked for revocation on every verification).
    pub async fn still_active(&self, principal: &Principal) -> Result<bool, RepoError> {
        if principal.scopes.is_some() {
            return Ok(true);
        }
        let Ok(id) = KeyId::parse(&principal.id) else { return Ok(false) };
        let record = self.get(&id).await?;
        Ok(record.is_some_and(|r| r.status(now_secs()) == KeyStatus::Active))
    }

    /// The key record, verified: `Err(RepoError::Integrity)` if it was
    /// forged or altered in the store.
    pub async fn get(&self, id: &KeyId) -> Result<Option<KeyRecord>, RepoError> {
        let Some(item) = self.store.get(Table::Keys, &key_pk(id), KEY_SK).await? else {
            return Ok(None);
        };
        let attrs = self.integrity.verified_attrs(Table::Keys, item).await?;
        let record: KeyRecord = serde_json::from_value(Value::Object(attrs)).map_err(RepoError::corrupt)?;
        if record.id != *id {
            return Err(RepoError::Integrity(format!("record under {id} names key {}", record.id)));
        }
        Ok(Some(record))
    }

    /// The record as a signed item, ready to write.
    async fn signed_item(&self, record: &KeyRecord) -> Result<Item, RepoError> {
        let mut item = Item::new(key_pk(&record.id), KEY_SK, record_attrs(record));
        item.expires_at = record.purge_at;
        self.integrity.sign(Table::Keys, &mut item).await?;
        Ok(item)
    }

    /// Issues a key. With `cap`, refuses when the customer already has that
    /// many active keys; exact under concurrency (see module docs).
    pub async fn issue(&self, new: NewKey, cap: Option<usize>) -> Result<(ApiKey, KeyRecord), IssueError> {
        for _ in 0..20 {
            let version = self.keyset_version(&new.customer).await?;
            if let Some(cap) = cap {
                let active = self.count_active(&new.customer).await?;
                if active >= cap {
                    return Err(IssueError::CapReached(cap));
                }
            }
            let key = ApiKey::generate(&self.env);
            let record = KeyRecord {
                id: key.id().clone(),
                customer: new.customer.clone(),
                role: new.role,
                tier: new.tier,
                hash: key.hash().to_hex(),
                label: new.label.clone(),
                created_at: now_secs(),
                expires_at: new.expires_at,
                revoked_at: None,
                replaced_by: None,
                rotation_due_since: None,
                purge_at: None,
                rev: 1,
            };
            let mut ops = self.insert_ops(&record).await?;
            ops.push(self.bump_keyset(&new.customer, version));
            match self.store.transact(ops).await {
                Ok(()) => return Ok((key, record)),
                Err(StoreError::ConditionFailed) => continue, // lost a race; re-count
                Err(e) => return Err(RepoError::from(e).into()),
            }
        }
        Err(RepoError::Conflict.into())
    }

    async fn insert_ops(&self, record: &KeyRecord) -> Result<Vec<WriteOp>, RepoError> {
        let reference = Attrs::from_iter([("id".to_string(), json!(record.id))]);
        Ok(vec![
            WriteOp::Put {
                table: Table::Keys,
                item: self.signed_item(record).await?,
                condition: Condition::NotExists,
            },
            WriteOp::Put {
                table: Table::Keys,
                item: Item::new(
                    customer_pk(&record.customer),
                    format!("KEY#{}", record.id),
                    reference.clone(),
                ),
                condition: Condition::NotExists,
            },
            WriteOp::Put {
                table: Table::Keys,
                item: Item::new(ALL_PK, record.id.as_str(), reference),
                condition: Condition::NotExists,
            },
        ])
    }

    async fn keyset_version(&self, customer: &CustomerId) -> Result<i64, RepoError> {
        let item = self.store.get(Table::Keys, &customer_pk(customer), KEYSET_SK).await?;
        Ok(item.and_then(|i| i.attrs.get("version").and_then(Value::as_i64)).unwrap_or(0))
    }

    fn bump_keyset(&self, customer: &CustomerId, version: i64) -> WriteOp {
        let condition = if version == 0 {
            Condition::NotExists
        } else {
            Condition::AttrEquals("version".into(), json!(version))
        };
        let attrs = Attrs::from_iter([("version".to_string(), json!(version + 1))]);
        WriteOp::Put {
            table: Table::Keys,
            item: Item::new(customer_pk(customer), KEYSET_SK, attrs),
            condition,
        }
    }

    async fn count_active(&self, customer: &CustomerId) -> Result<usize, RepoError> {
        let now = now_secs();
        let mut count = 0;
        let mut after = None;
        loop {
            let (records, next) = self.list_page(Some(customer), after, 100).await?;
            count += records.iter().filter(|r| r.status(now) == KeyStatus::Active).count();
            match next {
                Some(n) => after = Some(n),
                None => return Ok(count),
            }
        }
    }

    /// A page of key records: one customer's, or every key when `None`.
    pub async fn list_page(
        &self,
        customer: Option<&CustomerId>,
        after: Option<String>,
        limit: usize,
    ) -> Result<(Vec<KeyRecord>, Option<String>), RepoError> {
        let (pk, prefix) = match customer {
            Some(c) => (customer_pk(c), "KEY#".to_string()),
            None => (ALL_PK.to_string(), String::new()),
        };
        let page =
            self.store.query(Query { table: Table::Keys, pk, sk_prefix: prefix, after, limit }).await?;
        let mut records = Vec::with_capacity(page.items.len());
        for item in &page.items {
            let id =
                item.attrs.get("id").and_then(Value::as_str).ok_or_else(|| RepoError::corrupt("key ref"))?;
            let id = KeyId::parse(id).map_err(RepoError::corrupt)?;
            if let Some(record) = self.get(&id).await? {
                records.push(record);
            }
        }
        Ok((records, page.next))
    }

    /// Revokes a key now. Returns the record as it is afterwards.
    pub async fn revoke(&self, id: &KeyId) -> Result<Option<KeyRecord>, RepoError> {
        for _ in 0..5 {
            let Some(mut record) = self.get(id).await? else {
                return Ok(None);
            };
            if record.revoked_at.is_some() {
                return Ok(Some(record));
            }
            record.revoked_at = Some(now_secs());
            match self.store.transact(vec![self.update_op(&record).await?]).await {
                Ok(()) => return Ok(Some(record)),
                Err(StoreError::ConditionFailed) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(RepoError::Conflict)
    }

    /// Issues a replacement key with the same customer, role and tier; the old
    /// key keeps working for `grace_secs` (0: stops at once). With `cap`, a
    /// rotation that keeps the old key alive may not bring the customer above
    /// `cap + 1` active keys, so chained rotations cannot mint keys past the
    /// cap; a rotation with no grace (a compromised key) is never refused.
    pub async fn rotate(
        &self,
        id: &KeyId,
        grace_secs: i64,
        cap: Option<usize>,
    ) -> Result<(ApiKey, KeyRecord), RotateError> {
        for _ in 0..20 {
            let now = now_secs();
            let old = self.get(id).await?.ok_or(RotateError::NotFound)?;
            match old.status(now) {
                KeyStatus::Active => {}
                other => return Err(RotateError::NotActive(other)),
            }
            if old.replaced_by.is_some() {
                return Err(RotateError::AlreadyRotated);
            }
            let version = self.keyset_version(&old.customer).await?;
            if let Some(cap) = cap.filter(|_| grace_secs > 0) {
                let active = self.count_active(&old.customer).await?;
                if active > cap {
                    return Err(RotateError::CapReached(cap));
                }
            }
            let key = ApiKey::generate(&self.env);
            let new = KeyRecord {
                id: key.id().clone(),
                hash: key.hash().to_hex(),
                created_at: now,
                // A key issued with a lifetime keeps it across rotations.
                expires_at: old.expires_at,
                revoked_at: None,
                replaced_by: None,
                rotation_due_since: None,
                rev: 1,
                ..old.clone()
            };
            let mut retired = old.clone();
            let grace_end = now + grace_secs.max(0);
            retired.expires_at = Some(old.expires_at.map_or(grace_end, |t| t.min(grace_end)));
            retired.replaced_by = Some(new.id.clone());
            let mut ops = self.insert_ops(&new).await?;
            ops.push(self.update_op(&retired).await?);
            ops.push(self.bump_keyset(&old.customer, version));
            match self.store.transact(ops).await {
                Ok(()) => return Ok((key, new)),
                // Someone changed the key or the customer's key set: look again.
                Err(StoreError::ConditionFailed) => continue,
                Err(e) => return Err(RepoError::from(e).into()),
            }
        }
        Err(RepoError::Conflict.into())
    }

    /// Marks an active key as due for rotation (the lifecycle job). `false`
    /// when someone changed the key meanwhile: the next run looks again.
    pub async fn flag_for_rotation(&self, record: &KeyRecord, now: i64) -> Result<bool, RepoError> {
        let flagged = KeyRecord { rotation_due_since: Some(now), ..record.clone() };
        self.apply_if_unchanged(vec![self.update_op(&flagged).await?]).await
    }

    /// Gives a dead key's record and index entries the TTL `purge_at`, so
    /// the store drops them then (the lifecycle job). `false` when someone
    /// changed the key meanwhile.
    pub async fn schedule_purge(&self, record: &KeyRecord, purge_at: i64) -> Result<bool, RepoError> {
        let dead = KeyRecord { purge_at: Some(purge_at), ..record.clone() };
        let reference = Attrs::from_iter([("id".to_string(), json!(record.id))]);
        let index = |pk: String, sk: String| {
            let mut item = Item::new(pk, sk, reference.clone());
            item.expires_at = Some(purge_at);
            WriteOp::Put { table: Table::Keys, item, condition: Condition::Always }
        };
        let ops = vec![
            self.update_op(&dead).await?,
            index(customer_pk(&record.customer), format!("KEY#{}", record.id)),
            index(ALL_PK.to_string(), record.id.to_string()),
        ];
        self.apply_if_unchanged(ops).await
    }

    async fn apply_if_unchanged(&self, ops: Vec<WriteOp>) -> Result<bool, RepoError> {
        match self.store.transact(ops).await {
            Ok(()) => Ok(true),
            Err(StoreError::ConditionFailed) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Writes a changed record, bumping `rev`, only if nobody else changed it
    /// since it was read.
    async fn update_op(&self, record: &KeyRecord) -> Result<WriteOp, RepoError> {
        let mut next = record.clone();
        next.rev = record.rev + 1;
        Ok(WriteOp::Put {
            table: Table::Keys,
            item: self.signed_item(&next).await?,
            condition: Condition::AttrEquals("rev".into(), json!(record.rev)),
        })
    }
}

//! Integrity of authorization data: records whose alteration would grant
//! access (API-key records, OAuth client records, entitlements) carry an
//! HMAC-SHA256 made with a key from the secret store (Secrets Manager in
//! AWS, the vault-sealed embedded store locally), checked on every read.
//! Write access to a table alone therefore cannot mint a key, raise a
//! role or tier, or grant an entitlement: the forged record fails to verify.
//!
//! The MAC covers the table, the item's key (`pk`, `sk`), its TTL and every
//! attribute (canonical JSON: sorted keys, integral numbers as integers), so a
//! signed record moved to another key fails too. It does not stop a rollback
//! to an earlier genuine version of the same item (see the README).
//!
//! Rotation ([`IntegrityKeyKind`], run by the `rotation` function and
//! `pharmagate rotate --secret integrity`): `createSecret` makes a new key;
//! `setSecret` re-seals every signed record with it, each record checked
//! first (a forged record is never re-sealed) and rewritten only if it did
//! not change meanwhile; `testSecret` checks that every signed record
//! verifies and uses the pending or current key, so the key `finishSecret`
//! retires signs nothing still stored. Readers accept any staged key.
//!
//! Use in a repository (see `repo::keys`): [`Integrity::sign`] an item just
//! before writing it, and [`Integrity::verified_attrs`] right after reading
//! it (verify, then drop the two MAC attributes); map a failure with
//! `RepoError::from` (`Integrity` for a forged record, `Unavailable` when the
//! key cannot be fetched) and never act on a record that failed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::Value;
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::ports::{
    Attrs, Condition, Item, ItemStore, SecretError, SecretStore, SecretVersion, Stage, StoreError, Table,
};
use crate::rotation::{Outcome, RotationError, SecretKind, SecretRotation};

/// The MAC, base64url.
pub const MAC_ATTR: &str = "_mac";
/// The secret version whose key made the MAC.
pub const MAC_KEY_ATTR: &str = "_mac_key";
/// The version id the first key gets, so racing first starts agree on one.
pub const INITIAL_KEY_VERSION: &str = "integrity-key-0001";
/// How long a fetched key is trusted before the secret store is asked again:
/// a withdrawn key stops verifying within this time.
pub const KEY_CACHE_TTL: Duration = Duration::from_secs(300);
const MIN_KEY_BYTES: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum IntegrityError {
    /// Missing, malformed or wrong MAC, or a key version that is not staged.
    #[error("record failed its integrity check: {0}")]
    Invalid(String),
    #[error("integrity key unavailable: {0}")]
    Unavailable(String),
}

impl From<SecretError> for IntegrityError {
    fn from(e: SecretError) -> Self {
        IntegrityError::Unavailable(e.to_string())
    }
}

struct CachedKey {
    key: Zeroizing<Vec<u8>>,
    fetched: Instant,
}

#[derive(Default)]
struct Keys {
    by_version: HashMap<String, CachedKey>,
}

/// Signs and verifies records with the MAC key in `secret_id`. Cheap to
/// share; keys are cached for [`KEY_CACHE_TTL`].
pub struct Integrity {
    secrets: Arc<dyn SecretStore>,
    secret_id: String,
    keys: Mutex<Keys>,
}

impl Integrity {
    pub fn new(secrets: Arc<dyn SecretStore>, secret_id: impl Into<String>) -> Self {
        Integrity { secrets, secret_id: secret_id.into(), keys: Mutex::default() }
    }

    pub fn secret_id(&self) -> &str {
        &self.secret_id
    }

    /// Re-signs a verified record with the key of `version` (which must be
    /// staged). Refuses a record that does not verify: re-sealing must never
    /// launder a forgery.
    pub async fn reseal(&self, table: Table, item: &Item, version: &str) -> Result<Item, IntegrityError> {
        self.verify(table, item).await?;
        let mut resealed = item.clone();
        strip(&mut resealed.attrs);
        let key = self.key_of(version).await?;
        let mac = compute(&key, table, &resealed);
        resealed.attrs.insert(MAC_KEY_ATTR.into(), Value::String(version.to_string()));
        resealed.attrs.insert(MAC_ATTR.into(), Value::String(B64.encode(mac)));
        Ok(resealed)
    }

    /// Adds the MAC attributes to `item` (replacing any old ones).
    pub async fn sign(&self, table: Table, item: &mut Item) -> Result<(), IntegrityError> {
        strip(&mut item.attrs);
        let (version, key) = self.current_key().await?;
        let mac = compute(&key, table, item);
        item.attrs.insert(MAC_KEY_ATTR.into(), Value::String(version));
        item.attrs.insert(MAC_ATTR.into(), Value::String(B64.encode(mac)));
        Ok(())
    }

    /// Checks `item`'s MAC in constant time.
    pub async fn verify(&self, table: Table, item: &Item) -> Result<(), IntegrityError> {
        let text = |name: &str| item.attrs.get(name).and_then(Value::as_str);
        let (Some(version), Some(mac)) = (text(MAC_KEY_ATTR), text(MAC_ATTR)) else {
            return Err(IntegrityError::Invalid(format!("{}/{} carries no MAC", item.pk, item.sk)));
        };
        let mac = B64.decode(mac).map_err(|_| IntegrityError::Invalid("malformed MAC".into()))?;
        let key = self.key_of(version).await?;
        let mut unsigned = item.clone();
        strip(&mut unsigned.attrs);
        let mut hmac = new_mac(&key);
        hmac.update(&canonical_record(table, &unsigned));
        hmac.verify_slice(&mac)
            .map_err(|_| IntegrityError::Invalid(format!("{}/{} has a wrong MAC", item.pk, item.sk)))
    }

    /// Verifies `item` and returns its attributes without the MAC, ready to
    /// deserialize: the one call a repository makes after every read.
    pub async fn verified_attrs(&self, table: Table, item: Item) -> Result<Attrs, IntegrityError> {
        self.verify(table, &item).await?;
        let mut attrs = item.attrs;
        strip(&mut attrs);
        Ok(attrs)
    }

    /// The current key, read from the secret store on every signature (not
    /// cached): signed writes are rare (keys, clients, entitlements), and a
    /// writer that never uses a stale key cannot strand a record on a key a
    /// rotation is about to retire.
    async fn current_key(&self) -> Result<(String, Zeroizing<Vec<u8>>), IntegrityError> {
        let version = match self.secrets.get_stage(&self.secret_id, Stage::Current).await {
            Ok(Some(v)) => v,
            // A first start (locally): make the key, then read what won.
            Ok(None) | Err(SecretError::NotFound(_)) => {
                ensure_key(self.secrets.as_ref(), &self.secret_id).await?;
                self.secrets.get_stage(&self.secret_id, Stage::Current).await?.ok_or_else(|| {
                    IntegrityError::Unavailable("integrity secret has no current version".into())
                })?
            }
            Err(e) => return Err(e.into()),
        };
        let key = key_bytes(&version.value)?;
        let mut keys = self.keys.lock().map_err(|_| IntegrityError::Unavailable("poisoned".into()))?;
        keys.by_version
            .insert(version.version_id.clone(), CachedKey { key: key.clone(), fetched: Instant::now() });
        Ok((version.version_id, key))
    }

    /// The key of `version`, which must still hold a stage (current,
    /// previous or pending): a retired key verifies nothing.
    async fn key_of(&self, version: &str) -> Result<Zeroizing<Vec<u8>>, IntegrityError> {
        if let Ok(keys) = self.keys.lock()
            && let Some(cached) = keys.by_version.get(version).filter(|c| c.fetched.elapsed() < KEY_CACHE_TTL)
        {
            return Ok(cached.key.clone());
        }
        let found = match self.secrets.get_version(&self.secret_id, version).await {
            Ok(found) => found,
            Err(SecretError::Invalid(_)) => None,
            Err(e) => return Err(e.into()),
        };
        let Some(found) = found.filter(|v| !v.stages.is_empty()) else {
            return Err(IntegrityError::Invalid(format!("unknown or retired MAC key {version:?}")));
        };
        let key = key_bytes(&found.value)?;
        if let Ok(mut keys) = self.keys.lock() {
            keys.by_version
                .insert(version.to_string(), CachedKey { key: key.clone(), fetched: Instant::now() });
        }
        Ok(key)
    }
}

/// Creates the secret and its first key unless it has a current version.
/// Idempotent and safe to race: every racer proposes the same version id,
/// the first value stored wins, the others' puts are refused.
pub async fn ensure_key(secrets: &dyn SecretStore, secret_id: &str) -> Result<(), SecretError> {
    secrets.ensure_secret(secret_id).await?;
    if secrets.get_stage(secret_id, Stage::Current).await?.is_some() {
        return Ok(());
    }
    let value = new_key_value(crate::clock::now_secs())?;
    match secrets.put_version(secret_id, INITIAL_KEY_VERSION, &value, &[Stage::Current]).await {
        Ok(()) | Err(SecretError::Conflict(_)) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Removes the MAC attributes (before deserializing a verified record).
pub fn strip(attrs: &mut Attrs) {
    attrs.remove(MAC_ATTR);
    attrs.remove(MAC_KEY_ATTR);
}

/// An integrity key as stored: `{"key": "<base64url>", "created_at": <unix>}`
/// (keys from before rotation existed are the bare key text).
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredKey {
    key: String,
    created_at: i64,
}

/// A new key's stored value.
fn new_key_value(now: i64) -> Result<Zeroizing<String>, SecretError> {
    let mut bytes = Zeroizing::new([0u8; 32]);
    getrandom::fill(bytes.as_mut()).map_err(|e| SecretError::Unavailable(e.to_string()))?;
    let stored = StoredKey { key: B64.encode(bytes.as_ref()), created_at: now };
    let text = Zeroizing::new(serde_json::to_string(&stored).expect("a key serializes"));
    drop(Zeroizing::new(stored.key));
    Ok(text)
}

/// When a stored key was made, if it says.
fn created_at(value: &str) -> Option<i64> {
    serde_json::from_str::<StoredKey>(value).ok().map(|k| k.created_at)
}

fn key_bytes(value: &str) -> Result<Zeroizing<Vec<u8>>, IntegrityError> {
    if value.starts_with('{') {
        let stored: StoredKey = serde_json::from_str(value)
            .map_err(|_| IntegrityError::Unavailable("the integrity key is not a stored key".into()))?;
        let stored = StoredKey { key: stored.key, created_at: stored.created_at };
        let key = Zeroizing::new(stored.key);
        return key_text_bytes(&key);
    }
    key_text_bytes(value)
}

fn key_text_bytes(value: &str) -> Result<Zeroizing<Vec<u8>>, IntegrityError> {
    if value.len() < MIN_KEY_BYTES {
        return Err(IntegrityError::Unavailable(format!(
            "the integrity key must be at least {MIN_KEY_BYTES} characters"
        )));
    }
    Ok(Zeroizing::new(value.as_bytes().to_vec()))
}

fn new_mac(key: &[u8]) -> Hmac<Sha256> {
    <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes keys of any length")
}

fn compute(key: &[u8], table: Table, item: &Item) -> Vec<u8> {
    let mut mac = new_mac(key);
    mac.update(&canonical_record(table, item));
    mac.finalize().into_bytes().to_vec()
}

/// Unambiguous bytes of what the MAC covers.
fn canonical_record(table: Table, item: &Item) -> Vec<u8> {
    let expires = item.expires_at.map_or_else(|| "-".to_string(), |t| t.to_string());
    let mut attrs = String::new();
    canonical_json(&Value::Object(item.attrs.clone()), &mut attrs);
    let mut out = b"pharmagate-mac-v1".to_vec();
    for part in [table.as_str(), &item.pk, &item.sk, &expires, &attrs] {
        out.extend_from_slice(&(part.len() as u64).to_be_bytes());
        out.extend_from_slice(part.as_bytes());
    }
    out
}

/// JSON with object keys sorted and numbers in one form, whatever order or
/// number spelling a backend hands back.
fn canonical_json(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                canonical_json(v, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical_json(v, out);
            }
            out.push(']');
        }
        Value::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => out.push_str(&i.to_string()),
            (None, Some(f)) if f.fract() == 0.0 && f.abs() < 9.0e15 => out.push_str(&(f as i64).to_string()),
            _ => out.push_str(&n.to_string()),
        },
        other => out.push_str(&other.to_string()),
    }
}

// ------------------------------------------------------------- rotation --

/// The tables whose records carry a MAC.
pub const SIGNED_TABLES: [Table; 3] = [Table::Keys, Table::Customers, Table::Clients];
/// A rotation retires the previous key; a write that read the current key
/// before the last rotation finished and lands after this one's test would
/// be stranded on it. Writers read the current key on every signature, so
/// that takes a write slower than this; rotations are kept this far apart.
pub const MIN_KEY_AGE_SECS: i64 = 2 * KEY_CACHE_TTL.as_secs() as i64;
const SCAN_PAGE: usize = 200;

/// The integrity key as a rotated secret: re-seals the records it protects.
pub struct IntegrityKeyKind {
    pub store: Arc<dyn ItemStore>,
    pub integrity: Arc<Integrity>,
}

/// Pages through every signed record of [`SIGNED_TABLES`].
struct SignedRecords {
    table: usize,
    after: Option<String>,
}

impl SignedRecords {
    fn new() -> Self {
        SignedRecords { table: 0, after: None }
    }

    /// The next page (possibly empty), or `None` when every table is done.
    async fn next(&mut self, store: &dyn ItemStore) -> Result<Option<Vec<(Table, Item)>>, StoreError> {
        let Some(&table) = SIGNED_TABLES.get(self.table) else { return Ok(None) };
        let page = store.scan(table, self.after.take(), SCAN_PAGE).await?;
        match page.next {
            Some(next) => self.after = Some(next),
            None => self.table += 1,
        }
        let signed = page.items.into_iter().filter(|i| i.attrs.contains_key(MAC_KEY_ATTR));
        Ok(Some(signed.map(|item| (table, item)).collect()))
    }
}

#[async_trait::async_trait]
impl SecretKind for IntegrityKeyKind {
    async fn check_ready(&self, rotation: &SecretRotation, now: i64) -> Result<(), RotationError> {
        let current = rotation.current().await?;
        match created_at(&current.value) {
            Some(made) if now < made + MIN_KEY_AGE_SECS => Err(rotation.too_soon(
                format!("key {} is new and writers may still be learning it", current.version_id),
                made + MIN_KEY_AGE_SECS,
            )),
            _ => Ok(()),
        }
    }

    fn new_value(&self, now: i64, _immediate: bool) -> Zeroizing<String> {
        new_key_value(now).expect("the operating system's random source failed")
    }

    /// Re-seals every signed record still under another key. A record that
    /// fails its check is left alone (and fails `testSecret`); one changed
    /// meanwhile is skipped (its writer signed it; `testSecret` sees it).
    async fn set(
        &self,
        rotation: &SecretRotation,
        pending: &SecretVersion,
    ) -> Result<Outcome, RotationError> {
        key_bytes(&pending.value).map_err(|e| rotation.bad_value(pending, e))?;
        let version = pending.version_id.as_str();
        let (mut resealed, mut refused) = (0u64, 0u64);
        let mut records = SignedRecords::new();
        while let Some(page) = records.next(self.store.as_ref()).await.map_err(|e| rotation.unavailable(e))? {
            for (table, item) in page {
                if item.attrs.get(MAC_KEY_ATTR).and_then(Value::as_str) == Some(version) {
                    continue;
                }
                let new = match self.integrity.reseal(table, &item, version).await {
                    Ok(new) => new,
                    Err(IntegrityError::Invalid(why)) => {
                        tracing::error!(table = table.as_str(), pk = %item.pk, sk = %item.sk, %why, "not re-sealing a record that fails its check");
                        refused += 1;
                        continue;
                    }
                    Err(e) => return Err(rotation.unavailable(e)),
                };
                let old_mac = item.attrs.get(MAC_ATTR).cloned().unwrap_or(Value::Null);
                match self.store.put(table, new, Condition::AttrEquals(MAC_ATTR.into(), old_mac)).await {
                    Ok(()) => resealed += 1,
                    Err(StoreError::ConditionFailed) => {}
                    Err(e) => return Err(rotation.unavailable(e)),
                }
            }
        }
        tracing::info!(
            secret = rotation.secret_id(),
            resealed,
            refused,
            "records re-sealed under the pending key"
        );
        Ok(if resealed > 0 { Outcome::Changed } else { Outcome::Unchanged })
    }

    /// Every signed record that verifies is under the pending or the current
    /// key: finishing then retires a key that signs nothing stored. (A record
    /// failing its check is refused on read anyway; it is only reported.)
    async fn test(&self, rotation: &SecretRotation, pending: &SecretVersion) -> Result<(), RotationError> {
        let current = rotation.current().await?;
        let allowed = [pending.version_id.as_str(), current.version_id.as_str()];
        let (mut stray, mut invalid) = (0u64, 0u64);
        let mut records = SignedRecords::new();
        while let Some(page) = records.next(self.store.as_ref()).await.map_err(|e| rotation.unavailable(e))? {
            for (table, item) in page {
                let version = item.attrs.get(MAC_KEY_ATTR).and_then(Value::as_str).unwrap_or_default();
                match self.integrity.verify(table, &item).await {
                    Ok(()) if allowed.contains(&version) => {}
                    Ok(()) => stray += 1,
                    // Refused on every read already; retiring a key changes nothing for it.
                    Err(IntegrityError::Invalid(_)) => invalid += 1,
                    Err(e) => return Err(rotation.unavailable(e)),
                }
            }
        }
        if invalid > 0 {
            tracing::warn!(
                secret = rotation.secret_id(),
                invalid,
                "signed records that fail their check are in the store"
            );
        }
        if stray > 0 {
            let message = format!("{stray} signed records still use a key finishing would retire");
            return Err(rotation.test_failed(pending, message));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::embedded::{EmbeddedSecrets, LocalVault, SqliteStore};
    use serde_json::json;

    fn open_integrity(dir: &std::path::Path) -> Integrity {
        let db = SqliteStore::open(&dir.join("db")).unwrap();
        let vault = Arc::new(LocalVault::open_or_create(&dir.join("k")).unwrap());
        Integrity::new(Arc::new(EmbeddedSecrets::new(db, vault)), "pharmagate/integrity-key")
    }

    fn record() -> Item {
        let attrs = json!({"role": "customer", "tier": "free", "n": 3, "nested": {"b": 1, "a": [1.0, 2.5]}});
        Item::new("KEY#abc", "KEY", attrs.as_object().unwrap().clone())
    }

    #[tokio::test]
    async fn a_signed_record_verifies_and_any_change_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        let integrity = open_integrity(dir.path());
        let mut item = record();
        integrity.sign(Table::Keys, &mut item).await.unwrap();
        assert_eq!(item.attrs[MAC_KEY_ATTR], json!(INITIAL_KEY_VERSION));
        integrity.verify(Table::Keys, &item).await.unwrap();

        let mut changes: Vec<(&str, Item)> = Vec::new();
        let mut role = item.clone();
        role.attrs.insert("role".into(), json!("admin"));
        changes.push(("role", role));
        let mut added = item.clone();
        added.attrs.insert("extra".into(), json!(true));
        changes.push(("added attribute", added));
        let mut moved = item.clone();
        moved.pk = "KEY#other".into();
        changes.push(("moved", moved));
        let mut ttl = item.clone();
        ttl.expires_at = Some(1);
        changes.push(("ttl", ttl));
        let mut unsigned = item.clone();
        strip(&mut unsigned.attrs);
        changes.push(("unsigned", unsigned));
        let mut unknown_key = item.clone();
        unknown_key.attrs.insert(MAC_KEY_ATTR.into(), json!("integrity-key-0002"));
        changes.push(("unknown key version", unknown_key));
        for (what, changed) in changes {
            let result = integrity.verify(Table::Keys, &changed).await;
            assert!(matches!(result, Err(IntegrityError::Invalid(_))), "{what}: {result:?}");
        }
        let result = integrity.verify(Table::Customers, &item).await;
        assert!(matches!(result, Err(IntegrityError::Invalid(_))), "another table");
    }

    #[tokio::test]
    async fn key_order_and_number_spelling_do_not_matter() {
        let dir = tempfile::tempdir().unwrap();
        let integrity = open_integrity(dir.path());
        let mut item = record();
        integrity.sign(Table::Keys, &mut item).await.unwrap();
        // As a backend may hand it back: 1.0 normalised to 1, keys reordered.
        let mut back = item.clone();
        back.attrs.insert("nested".into(), json!({"a": [1, 2.5], "b": 1}));
        integrity.verify(Table::Keys, &back).await.unwrap();
        // A second process (cold cache) with the same secret agrees.
        open_integrity(dir.path()).verify(Table::Keys, &item).await.unwrap();
    }
}

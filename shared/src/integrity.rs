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

use crate::ports::{Attrs, Item, SecretError, SecretStore, Stage, Table};

/// The MAC, base64url.
pub const MAC_ATTR: &str = "_mac";
/// The secret version whose key made the MAC.
pub const MAC_KEY_ATTR: &str = "_mac_key";
/// The version id the first key gets, so racing first starts agree on one.
pub const INITIAL_KEY_VERSION: &str = "integrity-key-0001";
/// How long a fetched key (and which version is current) is trusted before
/// the secret store is asked again: rotation takes effect within this time.
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
    current: Option<(String, Instant)>,
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

    async fn current_key(&self) -> Result<(String, Zeroizing<Vec<u8>>), IntegrityError> {
        if let Some(found) = self.cached_current() {
            return Ok(found);
        }
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
        keys.current = Some((version.version_id.clone(), Instant::now()));
        keys.by_version
            .insert(version.version_id.clone(), CachedKey { key: key.clone(), fetched: Instant::now() });
        Ok((version.version_id, key))
    }

    fn cached_current(&self) -> Option<(String, Zeroizing<Vec<u8>>)> {
        let keys = self.keys.lock().ok()?;
        let (version, _) = keys.current.as_ref().filter(|(_, at)| at.elapsed() < KEY_CACHE_TTL)?;
        let cached = keys.by_version.get(version)?;
        Some((version.clone(), cached.key.clone()))
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
    let mut bytes = Zeroizing::new([0u8; 32]);
    getrandom::fill(bytes.as_mut()).map_err(|e| SecretError::Unavailable(e.to_string()))?;
    let value = Zeroizing::new(B64.encode(bytes.as_ref()));
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

fn key_bytes(value: &str) -> Result<Zeroizing<Vec<u8>>, IntegrityError> {
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

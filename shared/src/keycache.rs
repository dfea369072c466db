//! A bounded in-process cache of data keys in front of any `KeyVault`, like
//! the AWS Encryption SDK's caching materials manager: a warm function reuses
//! a data key instead of calling KMS per request.
//!
//! - Sealing: one data key per encryption context is reused for up to
//!   `max_age` and `max_encryptions` values, then a fresh one is asked for
//!   (AES-GCM with random nonces stays far below its 2^32 messages bound).
//! - Opening: unwrapped keys are cached by (wrapped bytes, context), for up
//!   to `max_age` and `max_decryptions` uses. The vault still decides who
//!   may unwrap: a context it refused is never cached.
//! - At most `capacity` entries per direction; expired and then oldest
//!   entries are evicted first. Keys are wiped from memory when evicted.
//!
//! Both backends use it, so the embedded run exercises the same code path.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use zeroize::Zeroizing;

use crate::ports::{DataKey, EncryptionContext, KeyVault, VaultError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheLimits {
    pub max_age: Duration,
    pub max_encryptions: u64,
    pub max_decryptions: u64,
    pub capacity: usize,
}

impl Default for CacheLimits {
    fn default() -> Self {
        CacheLimits {
            max_age: Duration::from_secs(300),
            max_encryptions: 10_000,
            max_decryptions: 1_000_000,
            capacity: 1_000,
        }
    }
}

struct Entry {
    key: Zeroizing<[u8; 32]>,
    wrapped: Vec<u8>,
    born: Instant,
    uses: u64,
}

type Cache<K> = Mutex<HashMap<K, Entry>>;

pub struct CachingVault {
    inner: Arc<dyn KeyVault>,
    limits: CacheLimits,
    sealing: Cache<Vec<u8>>,
    opening: Cache<(Vec<u8>, Vec<u8>)>,
}

impl CachingVault {
    pub fn new(inner: Arc<dyn KeyVault>, limits: CacheLimits) -> Self {
        CachingVault { inner, limits, sealing: Mutex::default(), opening: Mutex::default() }
    }
}

/// Takes one use of a fresh entry, or drops a stale one.
fn take_use<K: std::hash::Hash + Eq>(
    cache: &Cache<K>,
    key: &K,
    max_uses: u64,
    max_age: Duration,
) -> Option<Entry> {
    let mut map = cache.lock().ok()?;
    let fresh = map.get(key).is_some_and(|e| e.uses < max_uses && e.born.elapsed() < max_age);
    if !fresh {
        map.remove(key);
        return None;
    }
    let entry = map.get_mut(key)?;
    entry.uses += 1;
    Some(Entry { key: entry.key.clone(), wrapped: entry.wrapped.clone(), born: entry.born, uses: entry.uses })
}

fn insert<K: std::hash::Hash + Eq + Clone>(cache: &Cache<K>, key: K, entry: Entry, limits: &CacheLimits) {
    let Ok(mut map) = cache.lock() else { return };
    if map.len() >= limits.capacity {
        map.retain(|_, e| e.born.elapsed() < limits.max_age);
    }
    while map.len() >= limits.capacity {
        let Some(oldest) = map.iter().min_by_key(|(_, e)| e.born).map(|(k, _)| k.clone()) else { break };
        map.remove(&oldest);
    }
    map.insert(key, entry);
}

#[async_trait]
impl KeyVault for CachingVault {
    async fn generate_data_key(&self, context: &EncryptionContext) -> Result<DataKey, VaultError> {
        let id = context.canonical_bytes();
        let limits = &self.limits;
        if let Some(e) = take_use(&self.sealing, &id, limits.max_encryptions, limits.max_age) {
            return Ok(DataKey { plaintext: e.key, wrapped: e.wrapped });
        }
        let fresh = self.inner.generate_data_key(context).await?;
        let born = Instant::now();
        let entry = |uses| Entry { key: fresh.plaintext.clone(), wrapped: fresh.wrapped.clone(), born, uses };
        // What this process seals it can open again without asking the vault.
        insert(&self.opening, (fresh.wrapped.clone(), id.clone()), entry(0), limits);
        insert(&self.sealing, id, entry(1), limits);
        Ok(fresh)
    }

    async fn decrypt_data_key(
        &self,
        wrapped: &[u8],
        context: &EncryptionContext,
    ) -> Result<Zeroizing<[u8; 32]>, VaultError> {
        let id = (wrapped.to_vec(), context.canonical_bytes());
        let limits = &self.limits;
        if let Some(e) = take_use(&self.opening, &id, limits.max_decryptions, limits.max_age) {
            return Ok(e.key);
        }
        let key = self.inner.decrypt_data_key(wrapped, context).await?;
        let entry = Entry { key: key.clone(), wrapped: wrapped.to_vec(), born: Instant::now(), uses: 1 };
        insert(&self.opening, id, entry, limits);
        Ok(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::embedded::LocalVault;

    fn ctx(field: &str) -> EncryptionContext {
        EncryptionContext::new([("table", "catalog"), ("field", field)])
    }

    fn vault(limits: CacheLimits) -> (tempfile::TempDir, CachingVault) {
        let dir = tempfile::tempdir().unwrap();
        let inner = LocalVault::open_or_create(&dir.path().join("k")).unwrap();
        (dir, CachingVault::new(Arc::new(inner), limits))
    }

    #[tokio::test]
    async fn a_data_key_is_reused_up_to_its_use_limit_then_renewed() {
        let limits = CacheLimits { max_encryptions: 3, ..CacheLimits::default() };
        let (_dir, v) = vault(limits);
        let mut wrapped = Vec::new();
        for _ in 0..7 {
            wrapped.push(v.generate_data_key(&ctx("process")).await.unwrap().wrapped);
        }
        let distinct: std::collections::HashSet<_> = wrapped.iter().collect();
        assert_eq!(distinct.len(), 3, "7 seals with 3 uses per key need 3 keys");
        assert_eq!(wrapped[0], wrapped[2]);
        assert_ne!(wrapped[2], wrapped[3]);
        let other = v.generate_data_key(&ctx("notes")).await.unwrap().wrapped;
        assert!(!distinct.contains(&other), "another context gets its own key");
    }

    #[tokio::test]
    async fn expired_entries_are_not_served_and_refusals_are_not_cached() {
        let limits = CacheLimits { max_age: Duration::from_millis(50), ..CacheLimits::default() };
        let (_dir, v) = vault(limits);
        let first = v.generate_data_key(&ctx("process")).await.unwrap();
        tokio::time::sleep(Duration::from_millis(80)).await;
        let second = v.generate_data_key(&ctx("process")).await.unwrap();
        assert_ne!(first.wrapped, second.wrapped);
        assert_eq!(*v.decrypt_data_key(&first.wrapped, &ctx("process")).await.unwrap(), *first.plaintext);
        for _ in 0..2 {
            let moved = v.decrypt_data_key(&first.wrapped, &ctx("notes")).await;
            assert!(matches!(moved, Err(VaultError::Denied)));
        }
    }

    #[tokio::test]
    async fn the_cache_holds_at_most_its_capacity() {
        let limits = CacheLimits { capacity: 4, ..CacheLimits::default() };
        let (_dir, v) = vault(limits);
        for i in 0..10 {
            v.generate_data_key(&ctx(&format!("f{i}"))).await.unwrap();
        }
        assert_eq!(v.sealing.lock().unwrap().len(), 4);
        assert_eq!(v.opening.lock().unwrap().len(), 4);
    }
}

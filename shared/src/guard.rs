//! Brute-force protection: repeated authentication failures from one source
//! address, against one API key id or against one OAuth client id are
//! throttled with a growing back-off, checked before any expensive work
//! (hashing, lookups, signature checks).
//!
//! Each subject has a failure counter per window (default 10 minutes). Up to
//! `free_failures` failures pass unhindered (typos happen); every failure
//! beyond them blocks the subject for 2, 4, 8 … seconds, capped at
//! `max_backoff`. The source address is the one the gateway saw
//! (`requestContext.identity.sourceIp`), never a header a client can set.
//! Failures are counted apart from rate limits, so they never use up a
//! legitimate principal's quota.

use std::sync::Arc;

use serde_json::{Value, json};

use crate::clock::Clock;
use crate::ports::{Attrs, Condition, Item, ItemStore, StoreError, Table};
use crate::repo::RepoError;

/// What failed authentication is counted against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    SourceIp(String),
    ApiKeyId(String),
    ClientId(String),
}

impl Subject {
    fn key(&self) -> String {
        match self {
            Subject::SourceIp(ip) => format!("ip:{ip}"),
            Subject::ApiKeyId(id) => format!("key:{id}"),
            Subject::ClientId(id) => format!("client:{id}"),
        }
    }
}

/// `PHARMAGATE_AUTH_GUARD` (JSON, every member optional):
/// `{"free_failures": 5, "window_seconds": 600, "max_backoff_seconds": 900}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GuardConfig {
    pub free_failures: u64,
    pub window_seconds: i64,
    pub max_backoff_seconds: i64,
}

impl GuardConfig {
    pub fn parse(text: &str) -> Result<Self, String> {
        let config: GuardConfig = serde_json::from_str(text).map_err(|e| e.to_string())?;
        if !(1..=86_400).contains(&config.window_seconds)
            || !(1..=86_400).contains(&config.max_backoff_seconds)
        {
            return Err("window_seconds and max_backoff_seconds must be 1 to 86400".into());
        }
        Ok(config)
    }
}

impl Default for GuardConfig {
    fn default() -> Self {
        GuardConfig { free_failures: 5, window_seconds: 600, max_backoff_seconds: 900 }
    }
}

#[derive(Clone)]
pub struct AuthGuard {
    store: Arc<dyn ItemStore>,
    config: GuardConfig,
    clock: Clock,
}

impl AuthGuard {
    pub fn new(store: Arc<dyn ItemStore>, config: GuardConfig, clock: Clock) -> Self {
        AuthGuard { store, config, clock }
    }

    /// Seconds to wait if any of `subjects` is blocked now, else `None`.
    pub async fn blocked(&self, subjects: &[Subject]) -> Result<Option<u64>, RepoError> {
        let now = self.clock.now();
        let mut wait = None;
        for subject in subjects {
            let block = self.store.get(Table::Usage, &block_pk(subject), "BLOCK").await?;
            // Judged by this guard's clock, not only by the store's TTL
            // check: a block whose time is up is over, even if the store
            // (or DynamoDB's lazy TTL) still returns it.
            if let Some(until) = block.and_then(|b| b.expires_at).filter(|&until| until > now) {
                let left = (until - now) as u64;
                wait = Some(wait.map_or(left, |w: u64| w.max(left)));
            }
        }
        Ok(wait)
    }

    /// Counts a failure against each subject and blocks those past their
    /// free failures. Returns the longest block imposed, if any.
    pub async fn record_failure(&self, subjects: &[Subject]) -> Result<Option<u64>, RepoError> {
        let now = self.clock.now();
        let window = self.config.window_seconds;
        let start = now - now.rem_euclid(window);
        let mut longest = None;
        for subject in subjects {
            let pk = format!("AUTHFAIL#{}", subject.key());
            let count =
                self.store.add(Table::Usage, &pk, &start.to_string(), 1, None, Some(start + window)).await?;
            let failures = count.unwrap_or(0).max(0) as u64;
            if failures <= self.config.free_failures {
                continue;
            }
            let excess = (failures - self.config.free_failures).min(30) as u32;
            let backoff = 2i64.saturating_pow(excess).min(self.config.max_backoff_seconds);
            self.block(subject, failures, now + backoff).await?;
            longest = Some(longest.map_or(backoff as u64, |l: u64| l.max(backoff as u64)));
        }
        Ok(longest)
    }

    /// Blocks `subject` until `until`, unless a block lasting at least as
    /// long is already in place: concurrent failures must not shorten each
    /// other's block (with a blind write, the 6th failure's 2 s landing after
    /// the 7th failure's 4 s would win). Compare-and-set on the block's
    /// failure count; a failed condition means another failure just wrote a
    /// block, so look again.
    async fn block(&self, subject: &Subject, failures: u64, until: i64) -> Result<(), RepoError> {
        let pk = block_pk(subject);
        for _ in 0..BLOCK_WRITE_ATTEMPTS {
            let current = self.store.get(Table::Usage, &pk, "BLOCK").await?;
            let condition = match &current {
                Some(item) if item.expires_at.is_some_and(|t| t >= until) => return Ok(()),
                Some(item) => {
                    let seen = item.attrs.get("failures").cloned().unwrap_or(Value::Null);
                    Condition::AttrEquals("failures".into(), seen)
                }
                None => Condition::NotExists,
            };
            let attrs = Attrs::from_iter([("failures".to_string(), json!(failures))]);
            let mut item = Item::new(pk.clone(), "BLOCK", attrs);
            item.expires_at = Some(until);
            match self.store.put(Table::Usage, item, condition).await {
                Ok(()) => return Ok(()),
                Err(StoreError::ConditionFailed) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        // Every lost race was another failure writing its own block: one
        // is in place.
        Ok(())
    }
}

/// Compare-and-set attempts before leaving the block to concurrent writers.
const BLOCK_WRITE_ATTEMPTS: usize = 8;

fn block_pk(subject: &Subject) -> String {
    format!("AUTHBLOCK#{}", subject.key())
}

#[cfg(all(test, feature = "embedded"))]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicI64, Ordering};

    use async_trait::async_trait;
    use tokio::sync::oneshot;

    use super::*;
    use crate::embedded::SqliteStore;
    use crate::ports::{Page, Query, WriteOp};

    /// 10:00 UTC tomorrow: the start of a window of any length that divides
    /// an hour. The store judges TTLs by the real clock, so the hand-moved
    /// clock runs ahead of it: every item the store returns is live to it,
    /// and only the guard's own clock can say a block is over.
    fn t0() -> i64 {
        let now = crate::clock::now_secs();
        now - now.rem_euclid(86_400) + 86_400 + 10 * 3600
    }

    struct Rig {
        _dir: tempfile::TempDir,
        store: Arc<dyn ItemStore>,
        time: Arc<AtomicI64>,
    }

    impl Rig {
        fn new() -> Rig {
            let dir = tempfile::tempdir().unwrap();
            let store: Arc<dyn ItemStore> = Arc::new(SqliteStore::open(&dir.path().join("db")).unwrap());
            Rig { _dir: dir, store, time: Arc::new(AtomicI64::new(t0())) }
        }

        fn guard(&self, config: GuardConfig) -> AuthGuard {
            self.guard_on(self.store.clone(), config)
        }

        fn guard_on(&self, store: Arc<dyn ItemStore>, config: GuardConfig) -> AuthGuard {
            AuthGuard::new(store, config, Clock::manual(self.time.clone()))
        }

        fn set(&self, t: i64) {
            self.time.store(t, Ordering::SeqCst);
        }
    }

    fn config(free_failures: u64, window_seconds: i64, max_backoff_seconds: i64) -> GuardConfig {
        GuardConfig { free_failures, window_seconds, max_backoff_seconds }
    }

    fn ip(text: &str) -> Subject {
        Subject::SourceIp(text.into())
    }

    /// What each of `n` further failures of `subjects` imposes.
    async fn fail(guard: &AuthGuard, subjects: &[Subject], n: usize) -> Vec<Option<u64>> {
        let mut imposed = Vec::new();
        for _ in 0..n {
            imposed.push(guard.record_failure(subjects).await.unwrap());
        }
        imposed
    }

    #[tokio::test]
    async fn back_off_doubles_past_the_free_failures_and_stops_at_the_maximum() {
        let r = Rig::new();
        let guard = r.guard(GuardConfig::default());
        let who = [ip("192.0.2.1")];
        // Five failures are free: no block, nothing to wait for.
        assert_eq!(fail(&guard, &who, 5).await, [None; 5]);
        assert_eq!(guard.blocked(&who).await.unwrap(), None);
        // Then 2, 4, 8 … s, and never more than 900 s (2^10 = 1024 is cut).
        let expected: Vec<Option<u64>> =
            [2, 4, 8, 16, 32, 64, 128, 256, 512, 900, 900].into_iter().map(Some).collect();
        for want in expected {
            assert_eq!(fail(&guard, &who, 1).await, [want]);
            // The clock has not moved: the wait is the whole back-off.
            assert_eq!(guard.blocked(&who).await.unwrap(), want);
        }
        // Far past the cap (2^30 and beyond): still 900, no overflow.
        let many = fail(&guard, &who, 40).await;
        assert_eq!(many, vec![Some(900); 40]);

        // A smaller cap and other free failures.
        let r = Rig::new();
        let guard = r.guard(config(2, 600, 20));
        assert_eq!(fail(&guard, &who, 7).await, [None, None, Some(2), Some(4), Some(8), Some(16), Some(20)]);
        assert_eq!(guard.blocked(&who).await.unwrap(), Some(20));
        // The wait counts down with the clock.
        r.set(t0() + 5);
        assert_eq!(guard.blocked(&who).await.unwrap(), Some(15));
    }

    #[tokio::test]
    async fn a_block_lasts_exactly_its_back_off() {
        let r = Rig::new();
        let guard = r.guard(config(1, 600, 900));
        let who = [ip("192.0.2.1")];
        assert_eq!(fail(&guard, &who, 2).await, [None, Some(2)]);
        assert_eq!(guard.blocked(&who).await.unwrap(), Some(2));
        r.set(t0() + 1);
        assert_eq!(guard.blocked(&who).await.unwrap(), Some(1));
        // Over at t + 2 by the guard's clock, though the store (whose clock
        // is behind) still holds the block.
        r.set(t0() + 2);
        assert_eq!(guard.blocked(&who).await.unwrap(), None);
        r.set(t0() + 100);
        assert_eq!(guard.blocked(&who).await.unwrap(), None);
        // The count was not reset by the block ending: the next failure
        // (the 3rd in the window) blocks for 4 s.
        assert_eq!(fail(&guard, &who, 1).await, [Some(4)]);
        r.set(t0() + 103);
        assert_eq!(guard.blocked(&who).await.unwrap(), Some(1));
        r.set(t0() + 104);
        assert_eq!(guard.blocked(&who).await.unwrap(), None);
    }

    /// The guard has no success hook: an authentication that succeeds only
    /// asked `blocked`. So a success between failures resets nothing; only
    /// the window does.
    #[tokio::test]
    async fn a_success_does_not_reset_the_count() {
        let r = Rig::new();
        let guard = r.guard(config(1, 600, 900));
        let who = [ip("192.0.2.1"), Subject::ApiKeyId("abcdefghijkl".into())];
        assert_eq!(fail(&guard, &who, 2).await, [None, Some(2)]);
        r.set(t0() + 2);
        // The right secret now: it asks, is let through, and records nothing.
        assert_eq!(guard.blocked(&who).await.unwrap(), None);
        assert_eq!(guard.blocked(&who).await.unwrap(), None);
        // The next failure carries on from the 2nd: 4 s, then 8 s.
        assert_eq!(fail(&guard, &who, 1).await, [Some(4)]);
        r.set(t0() + 6);
        assert_eq!(guard.blocked(&who).await.unwrap(), None);
        assert_eq!(fail(&guard, &who, 1).await, [Some(8)]);
    }

    #[tokio::test]
    async fn the_window_forgets_old_failures() {
        let r = Rig::new();
        let guard = r.guard(config(2, 600, 900));
        let who = [ip("192.0.2.1")];
        // A fixed window: t0 .. t0 + 600.
        assert_eq!(fail(&guard, &who, 3).await, [None, None, Some(2)]);
        // 599 s later is the same window: the 4th failure, 4 s.
        r.set(t0() + 599);
        assert_eq!(fail(&guard, &who, 1).await, [Some(4)]);
        // The next window counts from zero, but a block in force stays in
        // force (it ends at t0 + 603).
        r.set(t0() + 600);
        assert_eq!(fail(&guard, &who, 1).await, [None]);
        assert_eq!(guard.blocked(&who).await.unwrap(), Some(3));
        r.set(t0() + 603);
        assert_eq!(guard.blocked(&who).await.unwrap(), None);
        // Two free failures in this window (one used above), then 2 s again.
        assert_eq!(fail(&guard, &who, 2).await, [None, Some(2)]);
        // Long after: all forgotten, two free failures again.
        r.set(t0() + 5 * 600 + 17);
        assert_eq!(guard.blocked(&who).await.unwrap(), None);
        assert_eq!(fail(&guard, &who, 3).await, [None, None, Some(2)]);
    }

    /// A long block is not cut short by the first block of a new window
    /// (a key id's failures are still counted while it is blocked).
    #[tokio::test]
    async fn a_new_window_never_shortens_a_block_in_force() {
        let r = Rig::new();
        let guard = r.guard(config(0, 10, 60));
        let key = [Subject::ApiKeyId("abcdefghijkl".into())];
        assert_eq!(fail(&guard, &key, 6).await, [Some(2), Some(4), Some(8), Some(16), Some(32), Some(60)]);
        r.set(t0() + 10);
        // 1st failure of the new window: 2 s, but 50 s of the 60 s are left.
        assert_eq!(fail(&guard, &key, 1).await, [Some(2)]);
        assert_eq!(guard.blocked(&key).await.unwrap(), Some(50));
    }

    #[tokio::test]
    async fn every_subject_is_counted_apart() {
        let r = Rig::new();
        let guard = r.guard(config(1, 600, 900));
        let source = ip("192.0.2.1");
        let key = Subject::ApiKeyId("abcdefghijkl".into());
        assert_eq!(fail(&guard, &[source.clone(), key.clone()], 2).await, [None, Some(2)]);
        for (subject, wait) in [
            (source.clone(), Some(2)),
            (key.clone(), Some(2)),
            // Another address, another key id, the same text as another kind.
            (ip("192.0.2.2"), None),
            (Subject::ApiKeyId("abcdefghijkm".into()), None),
            (Subject::ClientId("abcdefghijkl".into()), None),
            (ip("abcdefghijkl"), None),
        ] {
            assert_eq!(guard.blocked(std::slice::from_ref(&subject)).await.unwrap(), wait, "{subject:?}");
        }
        // A 3rd failure of the address alone: the address 4 s, the key id
        // still 2 s; asked together, the longer wait.
        assert_eq!(fail(&guard, std::slice::from_ref(&source), 1).await, [Some(4)]);
        assert_eq!(guard.blocked(std::slice::from_ref(&source)).await.unwrap(), Some(4));
        assert_eq!(guard.blocked(std::slice::from_ref(&key)).await.unwrap(), Some(2));
        assert_eq!(guard.blocked(&[key.clone(), source.clone()]).await.unwrap(), Some(4));
        // Together again: each gets its own count's back-off (address: 4th,
        // 8 s; key: 3rd, 4 s), and the longest is returned.
        assert_eq!(fail(&guard, &[key.clone(), source.clone()], 1).await, [Some(8)]);
        assert_eq!(guard.blocked(std::slice::from_ref(&key)).await.unwrap(), Some(4));
        // A client id of its own.
        let client = Subject::ClientId("pgc_abcdefghijkl".into());
        assert_eq!(fail(&guard, std::slice::from_ref(&client), 2).await, [None, Some(2)]);
        assert_eq!(guard.blocked(std::slice::from_ref(&client)).await.unwrap(), Some(2));

        // Failures touch nothing but the guard's own items: no rate or quota
        // counter of any principal.
        let page = r.store.scan(Table::Usage, None, 100).await.unwrap();
        assert!(!page.items.is_empty());
        for item in &page.items {
            assert!(item.pk.starts_with("AUTHFAIL#") || item.pk.starts_with("AUTHBLOCK#"), "{}", item.pk);
        }
    }

    /// A store that holds back the block write of one failure count until
    /// told, so two failures race deterministically.
    struct Gate {
        inner: Arc<dyn ItemStore>,
        held_failures: u64,
        reached: Mutex<Option<oneshot::Sender<()>>>,
        release: tokio::sync::Mutex<Option<oneshot::Receiver<()>>>,
    }

    #[async_trait]
    impl ItemStore for Gate {
        async fn get(&self, table: Table, pk: &str, sk: &str) -> Result<Option<Item>, StoreError> {
            self.inner.get(table, pk, sk).await
        }
        async fn put(&self, table: Table, item: Item, condition: Condition) -> Result<(), StoreError> {
            if item.attrs.get("failures") == Some(&json!(self.held_failures)) {
                let reached = self.reached.lock().unwrap().take();
                if let Some(reached) = reached {
                    reached.send(()).unwrap();
                    let release = self.release.lock().await.take().unwrap();
                    release.await.unwrap();
                }
            }
            self.inner.put(table, item, condition).await
        }
        async fn delete(
            &self,
            table: Table,
            pk: &str,
            sk: &str,
            condition: Condition,
        ) -> Result<(), StoreError> {
            self.inner.delete(table, pk, sk, condition).await
        }
        async fn query(&self, query: Query) -> Result<Page, StoreError> {
            self.inner.query(query).await
        }
        async fn add(
            &self,
            table: Table,
            pk: &str,
            sk: &str,
            by: i64,
            max: Option<i64>,
            expires_at: Option<i64>,
        ) -> Result<Option<i64>, StoreError> {
            self.inner.add(table, pk, sk, by, max, expires_at).await
        }
        async fn transact(&self, ops: Vec<WriteOp>) -> Result<(), StoreError> {
            self.inner.transact(ops).await
        }
        async fn scan(&self, table: Table, after: Option<String>, limit: usize) -> Result<Page, StoreError> {
            self.inner.scan(table, after, limit).await
        }
    }

    #[tokio::test]
    async fn concurrent_failures_never_shorten_a_block() {
        let r = Rig::new();
        let (reached_tx, reached_rx) = oneshot::channel();
        let (release_tx, release_rx) = oneshot::channel();
        let gate = Arc::new(Gate {
            inner: r.store.clone(),
            held_failures: 2,
            reached: Mutex::new(Some(reached_tx)),
            release: tokio::sync::Mutex::new(Some(release_rx)),
        });
        let guard = r.guard_on(gate, config(1, 600, 900));
        let who = [ip("192.0.2.1")];
        assert_eq!(fail(&guard, &who, 1).await, [None]);
        // The 2nd failure (2 s) is counted, then held just before its write…
        let second = tokio::spawn({
            let (guard, who) = (guard.clone(), who.clone());
            async move { guard.record_failure(&who).await.unwrap() }
        });
        reached_rx.await.unwrap();
        // …while the 3rd (4 s) is counted and written.
        assert_eq!(fail(&guard, &who, 1).await, [Some(4)]);
        assert_eq!(guard.blocked(&who).await.unwrap(), Some(4));
        // The 2nd's write lands last, and must not cut the block to 2 s.
        release_tx.send(()).unwrap();
        assert_eq!(second.await.unwrap(), Some(2));
        assert_eq!(guard.blocked(&who).await.unwrap(), Some(4));
    }

    #[test]
    fn the_configuration_parses_with_defaults_and_bounds() {
        assert_eq!(GuardConfig::parse("{}").unwrap(), GuardConfig::default());
        assert_eq!(GuardConfig::default(), config(5, 600, 900));
        assert_eq!(
            GuardConfig::parse(r#"{"free_failures": 1, "max_backoff_seconds": 6}"#).unwrap(),
            config(1, 600, 6)
        );
        for bad in [
            r#"{"window_seconds": 0}"#,
            r#"{"window_seconds": 86401}"#,
            r#"{"max_backoff_seconds": 0}"#,
            r#"{"free_failure": 5}"#,
            r#"{"free_failures": -1}"#,
        ] {
            assert!(GuardConfig::parse(bad).is_err(), "{bad}");
        }
    }
}

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

use serde_json::json;

use crate::clock::Clock;
use crate::ports::{Attrs, Condition, Item, ItemStore, Table};
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
            if let Some(until) = block.and_then(|b| b.expires_at) {
                let left = (until - now).max(1) as u64;
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
            let attrs = Attrs::from_iter([("failures".to_string(), json!(failures))]);
            let mut item = Item::new(block_pk(subject), "BLOCK", attrs);
            item.expires_at = Some(now + backoff);
            self.store.put(Table::Usage, item, Condition::Always).await?;
            longest = Some(longest.map_or(backoff as u64, |l: u64| l.max(backoff as u64)));
        }
        Ok(longest)
    }
}

fn block_pk(subject: &Subject) -> String {
    format!("AUTHBLOCK#{}", subject.key())
}

//! The API-key lifecycle job: run on a schedule (the `jobs` function on
//! EventBridge, `pharmagate jobs run` locally), it walks every key once and
//! - expires keys that are dead (grace period over, lifetime over, or
//!   revoked): their record and index entries get a TTL `retention` later,
//!   so the store drops them after they have served as evidence;
//! - flags active keys older than the configured age as due for rotation
//!   (shown in `GET /v1/keys` and `pharmagate keys list`);
//! - purges what TTL does not: expired items the embedded store still holds
//!   (DynamoDB deletes them itself).
//!
//! Every change is conditional on the key being unchanged since it was read,
//! so a run racing a customer's own rotation or revocation changes nothing of
//! theirs; the next run picks the key up again. Safe to run twice at once.

use serde::Serialize;

use crate::ports::{ItemStore, StoreError};
use crate::repo::RepoError;
use crate::repo::keys::{KeyRecord, KeyRepo, KeyStatus};

pub const DEFAULT_ROTATE_AFTER_DAYS: i64 = 90;
pub const DEFAULT_DEAD_KEY_RETENTION_DAYS: i64 = 30;
/// Rows deleted per purge batch (one SQLite statement each).
const PURGE_BATCH: usize = 1_000;
const PAGE: usize = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LifecyclePolicy {
    /// Active keys older than this are flagged for rotation.
    pub rotate_after_secs: i64,
    /// How long a dead key stays (listed as expired or revoked) before it is
    /// dropped.
    pub dead_key_retention_secs: i64,
}

impl Default for LifecyclePolicy {
    fn default() -> Self {
        LifecyclePolicy {
            rotate_after_secs: DEFAULT_ROTATE_AFTER_DAYS * 86_400,
            dead_key_retention_secs: DEFAULT_DEAD_KEY_RETENTION_DAYS * 86_400,
        }
    }
}

/// What one run did, for its log line and the CLI.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SweepReport {
    /// Keys looked at.
    pub keys: u64,
    /// Dead keys given their purge time in this run.
    pub expired: u64,
    /// Active keys newly flagged for rotation.
    pub flagged: u64,
    /// Keys skipped because they changed while the job ran.
    pub raced: u64,
    /// Expired items physically removed from the store.
    pub purged: u64,
}

/// One run of the job at `now`.
pub async fn sweep(
    keys: &KeyRepo,
    store: &dyn ItemStore,
    policy: &LifecyclePolicy,
    now: i64,
) -> Result<SweepReport, RepoError> {
    let mut report = SweepReport::default();
    let mut after = None;
    loop {
        let (records, next) = keys.list_page(None, after, PAGE).await?;
        for record in &records {
            report.keys += 1;
            match visit(keys, record, policy, now).await? {
                Visit::Expired => report.expired += 1,
                Visit::Flagged => report.flagged += 1,
                Visit::Raced => report.raced += 1,
                Visit::Nothing => {}
            }
        }
        match next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    report.purged = purge(store, now).await?;
    tracing::info!(
        keys = report.keys,
        expired = report.expired,
        flagged = report.flagged,
        raced = report.raced,
        purged = report.purged,
        "key lifecycle sweep done"
    );
    Ok(report)
}

enum Visit {
    Expired,
    Flagged,
    Raced,
    Nothing,
}

async fn visit(
    keys: &KeyRepo,
    record: &KeyRecord,
    policy: &LifecyclePolicy,
    now: i64,
) -> Result<Visit, RepoError> {
    let done = |changed: bool, visit: Visit| if changed { visit } else { Visit::Raced };
    match record.status(now) {
        KeyStatus::Active => {
            let old = now - record.created_at >= policy.rotate_after_secs;
            if !old || record.rotation_due_since.is_some() || record.replaced_by.is_some() {
                return Ok(Visit::Nothing);
            }
            tracing::info!(key_id = %record.id, customer = %record.customer, "key due for rotation");
            Ok(done(keys.flag_for_rotation(record, now).await?, Visit::Flagged))
        }
        KeyStatus::Expired | KeyStatus::Revoked => {
            if record.purge_at.is_some() {
                return Ok(Visit::Nothing);
            }
            let died = record.revoked_at.or(record.expires_at).unwrap_or(now).min(now);
            let purge_at = died + policy.dead_key_retention_secs;
            tracing::info!(key_id = %record.id, customer = %record.customer, purge_at, "key expired");
            Ok(done(keys.schedule_purge(record, purge_at).await?, Visit::Expired))
        }
    }
}

async fn purge(store: &dyn ItemStore, now: i64) -> Result<u64, StoreError> {
    let mut total = 0;
    loop {
        let removed = store.purge_expired(now, PURGE_BATCH).await?;
        total += removed;
        if removed < PURGE_BATCH as u64 {
            return Ok(total);
        }
    }
}

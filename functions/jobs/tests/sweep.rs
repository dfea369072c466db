//! The jobs function fed with EventBridge's scheduled event, on a hand-moved
//! clock: dead keys get their purge time, old keys are flagged for rotation,
//! expired items are purged, and a second run changes nothing. The same body
//! runs on the embedded backend and on the AWS backend (moto), where
//! DynamoDB's own TTL does the purging.

use std::sync::Arc;
use std::sync::atomic::AtomicI64;

use lambda_runtime::{Context, LambdaEvent};
use pharmagate_jobs::Jobs;
use pharmagate_shared::aws::{self, AwsResources};
use pharmagate_shared::clock::{Clock, now_secs};
use pharmagate_shared::config::{Backend, Settings};
use pharmagate_shared::domain::{CustomerId, Role, Tier};
use pharmagate_shared::lifecycle::SweepReport;
use pharmagate_shared::repo::KeyStatus;
use pharmagate_shared::repo::keys::NewKey;
use serde_json::Value;

const DAY: i64 = 86_400;

fn scheduled_event() -> LambdaEvent<Value> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/events/eventbridge-scheduled.json");
    LambdaEvent::new(
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap(),
        Context::default(),
    )
}

fn report(keys: u64, expired: u64, flagged: u64, purged: u64) -> SweepReport {
    SweepReport { keys, expired, flagged, raced: 0, purged }
}

/// `purges_itself`: whether the backend leaves expired items to the job
/// (embedded) or deletes them itself (DynamoDB TTL).
async fn lifecycle(backend: Backend, purges_itself: bool) {
    let keys = backend.keys();
    let customer = CustomerId::parse(&format!("acme-{}", &aws::unique_prefix("c")[4..])).unwrap();
    let new = || NewKey {
        customer: customer.clone(),
        role: Role::Customer,
        tier: Tier::Free,
        label: None,
        expires_at: None,
    };
    let (_, rotated) = keys.issue(new(), None).await.unwrap();
    let (_, replacement) = keys.rotate(&rotated.id, 0, None).await.unwrap();
    let (_, revoked) = keys.issue(new(), None).await.unwrap();
    keys.revoke(&revoked.id).await.unwrap();

    let start = now_secs();
    let time = Arc::new(AtomicI64::new(start + DAY));
    let jobs = Jobs::new(&backend).with_clock(Clock::manual(time.clone()));
    let run = || async { jobs.handle(scheduled_event()).await.unwrap() };

    assert_eq!(run().await, report(3, 2, 0, 0), "a day later: two dead keys expire");
    assert_eq!(run().await, report(3, 0, 0, 0), "a second run changes nothing");
    let dead = keys.get(&revoked.id).await.unwrap().unwrap();
    assert_eq!(dead.status(start + DAY), KeyStatus::Revoked);
    assert_eq!(dead.purge_at, Some(dead.revoked_at.unwrap() + 30 * DAY));

    time.store(start + 91 * DAY, std::sync::atomic::Ordering::SeqCst);
    let purged = if purges_itself { 6 } else { 0 };
    assert_eq!(run().await, report(3, 0, 1, purged), "91 days on: flag the live key, purge the dead");
    let live = keys.get(&replacement.id).await.unwrap().unwrap();
    assert_eq!(live.rotation_due_since, Some(start + 91 * DAY));
    assert_eq!(live.status(start + 91 * DAY), KeyStatus::Active, "flagged, still working");
    let left = if purges_itself { 1 } else { 3 };
    assert_eq!(run().await, report(left, 0, 0, 0));
    if purges_itself {
        assert_eq!(keys.get(&revoked.id).await.unwrap(), None);
        let (listed, _) = keys.list_page(Some(&customer), None, 10).await.unwrap();
        assert_eq!(listed.iter().map(|r| &r.id).collect::<Vec<_>>(), vec![&replacement.id]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_key_lifecycle_job_on_the_embedded_backend() {
    let dir = tempfile::tempdir().unwrap();
    lifecycle(Backend::embedded(dir.path(), Settings::default()).unwrap(), true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_key_lifecycle_job_on_the_aws_backend() {
    let Some(endpoint) = aws::test_endpoint("the_key_lifecycle_job_on_the_aws_backend") else { return };
    let resources = AwsResources::with_prefix(&aws::unique_prefix("jobs"));
    let sdk = aws::local_sdk_config(&endpoint).await;
    let backend = Backend::aws_with(&sdk, &resources, Settings::default(), true).await.unwrap();
    lifecycle(backend, false).await;
}

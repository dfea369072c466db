//! The audit trail's cost: one append (the record, its chain head and its
//! index references in one immediate SQLite transaction, WAL) as every
//! request pays it, and `verify`'s cost per stored record.

use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use pharmagate_shared::clock::now_secs;
use pharmagate_shared::embedded::SqliteStore;
use pharmagate_shared::ports::ItemStore;
use pharmagate_shared::repo::audit::{AuditRecord, AuditRepo, Decision};

fn record(n: u64) -> AuditRecord {
    AuditRecord {
        at_ms: chrono::Utc::now().timestamp_millis(),
        request_id: format!("bench-{n}"),
        function: "catalog".into(),
        principal: Some("abcdefghijkl".into()),
        customer: Some("bench".into()),
        role: Some("customer".into()),
        source_ip: Some("127.0.0.1".into()),
        method: "GET".into(),
        route: Some("/v1/products/{cas}".into()),
        cas: Some("953769-46-5".into()),
        decision: Decision::Allowed,
        reason: "ok".into(),
        status: 200,
        latency_us: 1500,
    }
}

fn audit(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn ItemStore> = Arc::new(SqliteStore::open(&dir.path().join("db")).unwrap());
    let repo = AuditRepo::new(store, 365 * 86_400);
    let writer = repo.writer("catalog");
    let mut n = 0;
    c.bench_function("audit/append one record (5 writes, one sqlite transaction)", |b| {
        b.iter(|| {
            n += 1;
            rt.block_on(writer.append(record(n))).unwrap()
        })
    });
    let other = tempfile::tempdir().unwrap();
    let store: Arc<dyn ItemStore> = Arc::new(SqliteStore::open(&other.path().join("db")).unwrap());
    let repo = AuditRepo::new(store, 365 * 86_400);
    let writer = repo.writer("catalog");
    rt.block_on(async {
        for i in 0..1000 {
            writer.append(record(i)).await.unwrap();
        }
    });
    c.bench_function("audit/verify 1000 records (chain and day index)", |b| {
        b.iter(|| {
            let report = rt.block_on(repo.verify(now_secs())).unwrap();
            assert_eq!((report.records, report.breaks.len()), (1000, 0));
        })
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(5)).warm_up_time(Duration::from_secs(1));
    targets = audit
}
criterion_main!(benches);

//! The audit trail on the embedded store: chained appends (also from many
//! tasks and from two writers of one stream), listing by principal,
//! customer and time, and `verify` naming the first break of every kind of
//! tampering: an edited, deleted, replaced or truncated record, a chain cut
//! at its start, a stream removed whole.

use std::sync::Arc;

use pharmagate_shared::clock::now_secs;
use pharmagate_shared::domain::CustomerId;
use pharmagate_shared::embedded::SqliteStore;
use pharmagate_shared::ports::{Condition, ItemStore, Table};
use pharmagate_shared::repo::audit::{AuditFilter, AuditRecord, AuditRepo, Break, Decision};
use serde_json::json;

const DAY: i64 = 86_400;

fn store() -> (tempfile::TempDir, Arc<dyn ItemStore>) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("db")).unwrap();
    (dir, Arc::new(store))
}

fn record(n: u64, at_ms: i64, principal: Option<&str>, customer: Option<&str>) -> AuditRecord {
    AuditRecord {
        at_ms,
        request_id: format!("req-{n}"),
        function: "catalog".into(),
        principal: principal.map(String::from),
        customer: customer.map(String::from),
        role: principal.map(|_| "customer".into()),
        source_ip: Some("127.0.0.1".into()),
        method: "GET".into(),
        route: Some("/v1/products/{cas}".into()),
        cas: Some("50-78-2".into()),
        decision: Decision::Allowed,
        reason: "ok".into(),
        status: 200,
        latency_us: 1234,
    }
}

fn now_ms() -> i64 {
    now_secs() * 1000
}

/// A repo with one stream of `n` records; returns the stream id.
async fn chain_of(store: &Arc<dyn ItemStore>, n: u64) -> (AuditRepo, String) {
    let repo = AuditRepo::new(store.clone(), 30 * DAY);
    let writer = repo.writer("catalog");
    for i in 1..=n {
        let appended = writer.append(record(i, now_ms(), Some("key1"), Some("acme"))).await.unwrap();
        assert_eq!(appended.seq, i);
    }
    (repo, writer.stream().to_string())
}

fn seq_sk(seq: u64) -> String {
    format!("SEQ#{seq:012}")
}

async fn first_break(repo: &AuditRepo) -> Break {
    let report = repo.verify(now_secs()).await.unwrap();
    assert_eq!(report.breaks.len(), 1, "{:?}", report.breaks);
    report.breaks[0].clone()
}

#[tokio::test]
async fn an_untouched_chain_verifies_and_lists_by_principal_customer_and_day() {
    let (_d, store) = store();
    let (repo, stream) = chain_of(&store, 5).await;
    let other = repo.writer("keys");
    other.append(record(6, now_ms(), Some("key2"), Some("globex"))).await.unwrap();
    other.append(record(7, now_ms(), None, None)).await.unwrap();
    let report = repo.verify(now_secs()).await.unwrap();
    assert_eq!((report.streams, report.records, report.breaks.len()), (2, 7, 0), "{report:?}");
    // A reference per day, per principal and per customer named.
    assert_eq!(report.index_entries, 7);

    let all =
        AuditFilter { principal: None, customer: None, from_ms: now_ms() - 60_000, to_ms: now_ms() + 1000 };
    let ids = |records: Vec<pharmagate_shared::repo::audit::ChainedRecord>| -> Vec<String> {
        records.into_iter().map(|r| r.record.request_id).collect()
    };
    let (page, next) = repo.list(&all, None, 4).await.unwrap();
    assert_eq!(page.len(), 4);
    let (rest, end) = repo.list(&all, next, 4).await.unwrap();
    assert_eq!(end, None);
    let mut listed = ids(page);
    listed.extend(ids(rest));
    listed.sort();
    assert_eq!(listed, (1..=7).map(|i| format!("req-{i}")).collect::<Vec<_>>());

    let by_key2 = AuditFilter { principal: Some("key2".into()), ..all.clone() };
    assert_eq!(ids(repo.list(&by_key2, None, 10).await.unwrap().0), ["req-6"]);
    let by_acme = AuditFilter { customer: Some(CustomerId::parse("acme").unwrap()), ..all.clone() };
    assert_eq!(repo.list(&by_acme, None, 10).await.unwrap().0.len(), 5);
    let both = AuditFilter { principal: Some("key1".into()), ..by_acme.clone() };
    let listed = repo.list(&both, None, 10).await.unwrap().0;
    assert_eq!(listed.len(), 5);
    assert!(listed.iter().all(|r| r.stream == stream));
    let before = AuditFilter { from_ms: 0, to_ms: now_ms() - 120_000, ..all };
    assert!(repo.list(&before, None, 10).await.unwrap().0.is_empty());
}

#[tokio::test]
async fn an_edited_record_is_named() {
    let (_d, store) = store();
    let (repo, stream) = chain_of(&store, 5).await;
    let pk = format!("STREAM#{stream}");
    let mut item = store.get(Table::Audit, &pk, &seq_sk(3)).await.unwrap().unwrap();
    item.attrs["record"]["status"] = json!(403);
    store.put(Table::Audit, item, Condition::Exists).await.unwrap();
    let b = first_break(&repo).await;
    assert_eq!((b.stream.as_str(), b.seq), (stream.as_str(), Some(3)));
    assert_eq!(b.problem, "record was altered: its content does not match its hash");
    assert_eq!(b.to_string(), format!("stream {stream} at seq 3: {}", b.problem));
}

#[tokio::test]
async fn a_record_rewritten_with_a_fresh_hash_breaks_the_next_link() {
    let (_d, store) = store();
    let (repo, stream) = chain_of(&store, 4).await;
    let mut forged = repo.record(&stream, 2).await.unwrap().unwrap();
    forged.record.principal = Some("someone-else".into());
    forged.hash = forged.content_hash();
    let pk = format!("STREAM#{stream}");
    let mut item = store.get(Table::Audit, &pk, &seq_sk(2)).await.unwrap().unwrap();
    item.attrs = match serde_json::to_value(&forged).unwrap() {
        serde_json::Value::Object(map) => map,
        _ => unreachable!(),
    };
    store.put(Table::Audit, item, Condition::Exists).await.unwrap();
    let b = first_break(&repo).await;
    assert_eq!(b.seq, Some(3));
    assert_eq!(b.problem, "record does not follow seq 2: its predecessor was replaced");
}

#[tokio::test]
async fn deleted_records_are_named_wherever_they_were() {
    for (deleted, seq, problem) in [
        (vec![3], Some(4), "record 3 is missing".to_string()),
        (vec![3, 4], Some(5), "records 3 to 4 are missing".to_string()),
        (vec![1], Some(2), "records before seq 2 are missing but had not expired".to_string()),
        (
            vec![6],
            Some(5),
            "the chain ends at seq 5 but its head names seq 6: records were removed".to_string(),
        ),
    ] {
        let (_d, store) = store();
        let (repo, stream) = chain_of(&store, 6).await;
        for n in &deleted {
            store
                .delete(Table::Audit, &format!("STREAM#{stream}"), &seq_sk(*n), Condition::Exists)
                .await
                .unwrap();
        }
        let b = first_break(&repo).await;
        assert_eq!((b.seq, b.problem.as_str()), (seq, problem.as_str()), "deleting {deleted:?}");
    }
}

#[tokio::test]
async fn a_stream_removed_whole_is_found_through_its_index_entries() {
    let (_d, store) = store();
    let (repo, stream) = chain_of(&store, 3).await;
    let pk = format!("STREAM#{stream}");
    for sk in [seq_sk(1), seq_sk(2), seq_sk(3), "HEAD".into()] {
        store.delete(Table::Audit, &pk, &sk, Condition::Exists).await.unwrap();
    }
    store.delete(Table::Audit, "STREAMS", &stream, Condition::Exists).await.unwrap();
    let b = first_break(&repo).await;
    assert_eq!(b.stream, stream);
    assert!(b.problem.contains("names a stream that is not listed"), "{}", b.problem);
}

/// Records expire oldest first: a chain whose first records are gone is
/// sound only if they were due to expire.
#[tokio::test]
async fn a_chain_whose_oldest_records_expired_still_verifies() {
    let (_d, store) = store();
    let repo = AuditRepo::new(store.clone(), DAY);
    let writer = repo.writer("catalog");
    let old = now_ms() - 2 * DAY * 1000;
    for i in 1..=3 {
        writer.append(record(i, old, Some("key1"), None)).await.unwrap();
    }
    for i in 4..=5 {
        writer.append(record(i, now_ms(), Some("key1"), None)).await.unwrap();
    }
    let report = repo.verify(now_secs()).await.unwrap();
    assert_eq!((report.records, report.breaks.clone()), (2, vec![]));
    // Deleting the oldest live record is still caught.
    let pk = format!("STREAM#{}", writer.stream());
    store.delete(Table::Audit, &pk, &seq_sk(4), Condition::Exists).await.unwrap();
    let b = first_break(&repo).await;
    assert_eq!(
        (b.seq, b.problem.as_str()),
        (Some(5), "records before seq 5 are missing but had not expired")
    );
}

/// Appends are serialized per stream and atomic through the store: 300
/// concurrent appends to one writer, and two writers that (by mistake) share
/// a stream, give one gapless chain each, with no record lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appends_lose_nothing_and_never_fork_a_chain() {
    let (_d, store) = store();
    let repo = AuditRepo::new(store.clone(), 30 * DAY);
    let writer = Arc::new(repo.writer("catalog"));
    let twin_a = Arc::new(repo.writer_for_stream("keys", "shared-stream"));
    let twin_b = Arc::new(repo.writer_for_stream("keys", "shared-stream"));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..300u64 {
        let w = match i % 3 {
            0 => writer.clone(),
            1 => twin_a.clone(),
            _ => twin_b.clone(),
        };
        tasks.spawn(async move { w.append(record(i, now_ms(), Some("key1"), Some("acme"))).await.unwrap() });
    }
    let mut seqs = std::collections::HashMap::<String, Vec<u64>>::new();
    while let Some(done) = tasks.join_next().await {
        let appended = done.unwrap();
        seqs.entry(appended.stream).or_default().push(appended.seq);
    }
    for (stream, mut list) in seqs {
        list.sort_unstable();
        let expected: Vec<u64> = (1..=list.len() as u64).collect();
        assert_eq!(list, expected, "stream {stream}");
    }
    let report = repo.verify(now_secs()).await.unwrap();
    assert_eq!((report.streams, report.records, report.breaks), (2, 300, vec![]));
}

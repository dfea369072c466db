//! Runs the `ItemStore` port contract against the embedded SQLite adapter,
//! and checks that two stores on one file (standing in for two processes)
//! see each other's writes and keep counters exact.

use std::sync::Arc;

use pharmagate_shared::contract::item_store_contract;
use pharmagate_shared::embedded::SqliteStore;
use pharmagate_shared::ports::{Condition, Item, ItemStore, StoreError, Table};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_store_keeps_the_item_store_contract() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open(&dir.path().join("db.sqlite")).expect("open store");
    item_store_contract(Arc::new(store)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_store_keeps_the_contract_when_run_twice_on_one_file() {
    // A second run over a store already full of the first run's items.
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("db.sqlite");
    item_store_contract(Arc::new(SqliteStore::open(&path).expect("open store"))).await;
    item_store_contract(Arc::new(SqliteStore::open(&path).expect("reopen store"))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_stores_on_one_file_share_items_and_counters() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("db.sqlite");
    let one: Arc<dyn ItemStore> = Arc::new(SqliteStore::open(&path).expect("open first store"));
    let two: Arc<dyn ItemStore> = Arc::new(SqliteStore::open(&path).expect("open second store"));

    let attrs = json!({"name": "Aspirin", "mg": 500}).as_object().cloned().expect("object");
    let written = Item::new("prod#1", "meta", attrs);
    one.put(Table::Catalog, written.clone(), Condition::NotExists).await.expect("put via one");
    assert_eq!(two.get(Table::Catalog, "prod#1", "meta").await.expect("get via two"), Some(written));
    match two.put(Table::Catalog, Item::new("prod#1", "meta", Default::default()), Condition::NotExists).await
    {
        Err(StoreError::ConditionFailed) => {}
        other => panic!("NotExists via two over one's item: expected ConditionFailed, got {other:?}"),
    }
    two.delete(Table::Catalog, "prod#1", "meta", Condition::Exists).await.expect("delete via two");
    assert_eq!(one.get(Table::Catalog, "prod#1", "meta").await.expect("get via one"), None);

    // Concurrent counters across both stores stay exact.
    let tasks: Vec<_> = (0..60)
        .map(|i| {
            let store = Arc::clone(if i % 2 == 0 { &one } else { &two });
            tokio::spawn(async move { store.add(Table::Keys, "quota", "day", 1, Some(25), None).await })
        })
        .collect();
    let mut granted = Vec::new();
    for task in tasks {
        if let Some(n) = task.await.expect("add task").expect("add") {
            granted.push(n);
        }
    }
    granted.sort_unstable();
    assert_eq!(granted, (1..=25).collect::<Vec<i64>>());
    for store in [&one, &two] {
        let counter = store.get(Table::Keys, "quota", "day").await.expect("get counter").expect("counter");
        assert_eq!(counter.attrs["n"], json!(25));
    }

    // Concurrent NotExists puts across both stores: exactly one wins.
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let store = Arc::clone(if i % 2 == 0 { &one } else { &two });
            let attrs = json!({"writer": i}).as_object().cloned().expect("object");
            tokio::spawn(async move {
                store.put(Table::Keys, Item::new("lock", "owner", attrs), Condition::NotExists).await
            })
        })
        .collect();
    let mut wins = 0;
    for task in tasks {
        match task.await.expect("put task") {
            Ok(()) => wins += 1,
            Err(StoreError::ConditionFailed) => {}
            Err(e) => panic!("unexpected error: {e:?}"),
        }
    }
    assert_eq!(wins, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_secrets_keep_the_secret_store_contract() {
    use pharmagate_shared::embedded::{EmbeddedSecrets, LocalVault};
    let dir = tempfile::tempdir().expect("tempdir");
    let db = SqliteStore::open(&dir.path().join("db.sqlite")).expect("open store");
    let vault = LocalVault::open_or_create(&dir.path().join("master.key")).expect("vault");
    let secrets = EmbeddedSecrets::new(db, Arc::new(vault));
    pharmagate_shared::secret_contract::secret_store_contract(Arc::new(secrets)).await;
}

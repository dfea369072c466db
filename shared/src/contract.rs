//! Port contract tests for `ItemStore`: one suite that every adapter must pass.
//!
//! The checks encode the contract documented in `crate::ports` with exact
//! expected values, and use nothing but the trait, so the embedded SQLite
//! adapter and the DynamoDB adapter (against moto or real AWS) run the very
//! same bodies. Every check writes under its own fresh partition keys (a random
//! per-run prefix plus a counter), so the suite can run against a shared,
//! non-empty store and alongside other runs.
//!
//! Run everything with [`item_store_contract`], or iterate [`CHECKS`] to run
//! the checks one by one.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use serde_json::{Value, json};

use crate::clock::now_secs;
use crate::ports::{
    Attrs, Condition, Item, ItemStore, MAX_TRANSACTION_OPS, Page, Query, StoreError, Table, WriteOp,
};

/// A contract check: takes the store under test, panics on a violation.
pub type CheckFn = fn(Arc<dyn ItemStore>) -> Pin<Box<dyn Future<Output = ()> + Send>>;

/// One named contract check.
pub struct Check {
    pub name: &'static str,
    pub run: CheckFn,
}

macro_rules! checks {
    ($($name:ident),* $(,)?) => {
        &[$(Check { name: stringify!($name), run: |store| Box::pin($name(store)) }),*]
    };
}

/// Every contract check, in the order [`item_store_contract`] runs them.
pub const CHECKS: &[Check] = checks![
    get_of_absent_item_is_none,
    put_then_get_round_trips,
    put_replaces_the_whole_item,
    tables_are_separate,
    not_exists_rejects_an_existing_item,
    exists_requires_a_live_item,
    attr_equals_compares_exactly,
    reserved_words_and_expression_syntax_are_plain_names,
    delete_with_and_without_condition,
    expired_items_are_absent,
    query_returns_prefix_in_byte_order,
    query_with_empty_prefix_returns_whole_partition,
    query_after_resumes_strictly_after,
    query_paging_visits_every_item_once,
    query_paging_skips_expired_items,
    query_with_huge_limit_returns_everything,
    add_creates_increments_and_respects_max,
    add_keeps_other_attributes,
    add_restarts_an_expired_counter,
    add_is_exact_under_concurrency,
    transact_applies_all_operations,
    transact_is_all_or_nothing,
    transact_rejects_invalid_requests,
    concurrent_not_exists_puts_have_one_winner,
    scan_visits_every_live_item_once,
];

/// Runs every check in [`CHECKS`] in sequence against `store`, then panics
/// naming every check that failed (each failure's own message is printed by
/// the panic hook as it happens).
pub async fn item_store_contract(store: Arc<dyn ItemStore>) {
    let mut failed = Vec::new();
    for check in CHECKS {
        if tokio::spawn((check.run)(Arc::clone(&store))).await.is_err() {
            failed.push(check.name);
        }
    }
    assert!(failed.is_empty(), "item store contract checks failed: {failed:?}");
}

// ---------------------------------------------------------------- helpers --

/// A partition key no other check, run or process uses.
fn unique_pk(tag: &str) -> String {
    static RUN: OnceLock<String> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let run = RUN.get_or_init(|| {
        let mut bytes = [0u8; 8];
        getrandom::fill(&mut bytes).expect("the operating system's random source failed");
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    });
    format!("contract#{run}#{}#{tag}", COUNTER.fetch_add(1, Ordering::Relaxed))
}

fn attrs(value: Value) -> Attrs {
    match value {
        Value::Object(map) => map,
        other => panic!("attributes must be a JSON object, got {other}"),
    }
}

fn item(pk: &str, sk: &str, value: Value, expires_at: Option<i64>) -> Item {
    Item { pk: pk.to_string(), sk: sk.to_string(), attrs: attrs(value), expires_at }
}

fn expect_condition_failed<T: std::fmt::Debug>(result: Result<T, StoreError>, what: &str) {
    match result {
        Err(StoreError::ConditionFailed) => {}
        other => panic!("{what}: expected Err(ConditionFailed), got {other:?}"),
    }
}

fn expect_invalid<T: std::fmt::Debug>(result: Result<T, StoreError>, what: &str) {
    match result {
        Err(StoreError::Invalid(_)) => {}
        other => panic!("{what}: expected Err(Invalid(_)), got {other:?}"),
    }
}

async fn get(store: &dyn ItemStore, table: Table, pk: &str, sk: &str) -> Option<Item> {
    store.get(table, pk, sk).await.unwrap_or_else(|e| panic!("get {pk:?}/{sk:?}: {e}"))
}

async fn put(store: &dyn ItemStore, table: Table, item: Item) {
    let what = format!("put {:?}/{:?}", item.pk, item.sk);
    store.put(table, item, Condition::Always).await.unwrap_or_else(|e| panic!("{what}: {e}"));
}

async fn query_page(
    store: &dyn ItemStore,
    table: Table,
    pk: &str,
    sk_prefix: &str,
    after: Option<&str>,
    limit: usize,
) -> Page {
    let query = Query {
        table,
        pk: pk.to_string(),
        sk_prefix: sk_prefix.to_string(),
        after: after.map(str::to_string),
        limit,
    };
    store.query(query).await.unwrap_or_else(|e| panic!("query {pk:?} {sk_prefix:?} after {after:?}: {e}"))
}

/// Pages through a query. Checks that no page exceeds `limit`, that every page
/// but the last is full when `full_pages` (no expired items in the range),
/// that sort keys strictly ascend across pages (so each item is seen once),
/// and that paging terminates.
async fn query_all(
    store: &dyn ItemStore,
    table: Table,
    pk: &str,
    sk_prefix: &str,
    limit: usize,
    full_pages: bool,
) -> Vec<Item> {
    let mut all: Vec<Item> = Vec::new();
    let mut after: Option<String> = None;
    for _ in 0..1000 {
        let page = query_page(store, table, pk, sk_prefix, after.as_deref(), limit).await;
        assert!(page.items.len() <= limit, "page of {} items exceeds limit {limit}", page.items.len());
        for item in &page.items {
            if let Some(last) = all.last() {
                assert!(
                    last.sk.as_bytes() < item.sk.as_bytes(),
                    "sort keys must strictly ascend across pages: {:?} then {:?}",
                    last.sk,
                    item.sk
                );
            }
        }
        all.extend(page.items.iter().cloned());
        match page.next {
            None => return all,
            Some(next) => {
                if full_pages {
                    assert_eq!(page.items.len(), limit, "a page before the last must be full");
                }
                if let Some(prev) = &after {
                    assert!(next > *prev, "resume key must advance: {prev:?} then {next:?}");
                }
                after = Some(next);
            }
        }
    }
    panic!("query {pk:?} {sk_prefix:?} limit {limit} did not terminate after 1000 pages");
}

fn sks(items: &[Item]) -> Vec<&str> {
    items.iter().map(|i| i.sk.as_str()).collect()
}

/// Attributes exercising every JSON type the contract allows.
fn rich_attrs() -> Value {
    json!({
        "s": "plain",
        "empty": "",
        "unicode": "Grüße, 日本語, emoji 😀, ctrl \u{1f} and \"quotes\" \\ slash",
        "int": 42,
        "neg": -7,
        "zero": 0,
        "max": i64::MAX,
        "min": i64::MIN,
        "float": 1.5,
        "negfloat": -0.25,
        "yes": true,
        "no": false,
        "list": [1, "two", false, [3, [4.5]], {"k": "v"}],
        "empty_list": [],
        "empty_map": {},
        "nested": {"a": {"b": {"c": [1, 2, 3], "d": "deep"}}, "flag": true},
        "ключ": "значение",
    })
}

// ----------------------------------------------------------- basic access --

async fn get_of_absent_item_is_none(store: Arc<dyn ItemStore>) {
    let pk = unique_pk("absent");
    for table in Table::ALL {
        assert_eq!(get(&*store, table, &pk, "nothing").await, None, "absent item in {table:?}");
    }
}

async fn put_then_get_round_trips(store: Arc<dyn ItemStore>) {
    let pk = unique_pk("roundtrip");
    let expires = now_secs() + 3600;
    let forever = item(&pk, "rich", rich_attrs(), None);
    let expiring = item(&pk, "expiring", json!({"v": "soon"}), Some(expires));
    let unicode_key = item(&pk, "ünï\u{1f}cødé😀", json!({"ok": true}), None);
    for it in [&forever, &expiring, &unicode_key] {
        put(&*store, Table::Catalog, it.clone()).await;
    }
    for it in [&forever, &expiring, &unicode_key] {
        assert_eq!(get(&*store, Table::Catalog, &it.pk, &it.sk).await.as_ref(), Some(it));
    }
    let got = get(&*store, Table::Catalog, &pk, "rich").await.expect("rich item");
    assert_eq!(got.attrs["max"], json!(i64::MAX));
    assert_eq!(got.attrs["float"], json!(1.5));
    assert_eq!(got.attrs["nested"]["a"]["b"]["c"], json!([1, 2, 3]));
    assert_eq!(got.attrs["unicode"], json!("Grüße, 日本語, emoji 😀, ctrl \u{1f} and \"quotes\" \\ slash"));
    assert_eq!(got.expires_at, None);
    let got = get(&*store, Table::Catalog, &pk, "expiring").await.expect("expiring item");
    assert_eq!(got.expires_at, Some(expires));
}

async fn put_replaces_the_whole_item(store: Arc<dyn ItemStore>) {
    let pk = unique_pk("replace");
    let expires = now_secs() + 3600;
    put(&*store, Table::Keys, item(&pk, "x", json!({"a": 1, "b": "old"}), Some(expires))).await;
    let replacement = item(&pk, "x", json!({"b": "new", "c": [true]}), None);
    put(&*store, Table::Keys, replacement.clone()).await;
    // Not a merge: `a` is gone and the expiry is cleared.
    assert_eq!(get(&*store, Table::Keys, &pk, "x").await, Some(replacement));
}

async fn tables_are_separate(store: Arc<dyn ItemStore>) {
    let pk = unique_pk("tables");
    for (n, table) in Table::ALL.into_iter().enumerate() {
        put(&*store, table, item(&pk, "same", json!({"table": table.as_str(), "n": n}), None)).await;
    }
    for (n, table) in Table::ALL.into_iter().enumerate() {
        let want = item(&pk, "same", json!({"table": table.as_str(), "n": n}), None);
        assert_eq!(get(&*store, table, &pk, "same").await, Some(want));
        let page = query_page(&*store, table, &pk, "", None, 10).await;
        assert_eq!(sks(&page.items), ["same"], "one item per table in {table:?}");
        assert_eq!(page.items[0].attrs["table"], json!(table.as_str()));
    }
    store.delete(Table::Keys, &pk, "same", Condition::Always).await.expect("delete");
    assert_eq!(get(&*store, Table::Keys, &pk, "same").await, None);
    assert!(get(&*store, Table::Catalog, &pk, "same").await.is_some(), "delete leaked across tables");
    assert!(get(&*store, Table::Customers, &pk, "same").await.is_some(), "delete leaked across tables");
}

// ------------------------------------------------------------- conditions --

async fn not_exists_rejects_an_existing_item(store: Arc<dyn ItemStore>) {
    let pk = unique_pk("notexists");
    let first = item(&pk, "k", json!({"v": "first"}), None);
    store.put(Table::Catalog, first.clone(), Condition::NotExists).await.expect("put on absent item");
    assert_eq!(get(&*store, Table::Catalog, &pk, "k").await.as_ref(), Some(&first));

    let second = item(&pk, "k", json!({"v": "second"}), Some(now_secs() + 60));
    let result = store.put(Table::Catalog, second, Condition::NotExists).await;
    expect_condition_failed(result, "NotExists put over an existing item");
    assert_eq!(get(&*store, Table::Catalog, &pk, "k").await, Some(first), "failed put changed the item");
}

async fn exists_requires_a_live_item(store: Arc<dyn ItemStore>) {
    let pk = unique_pk("exists");
    let result = store.put(Table::Catalog, item(&pk, "k", json!({"v": 1}), None), Condition::Exists).await;
    expect_condition_failed(result, "Exists put on an absent item");
    assert_eq!(get(&*store, Table::Catalog, &pk, "k").await, None, "failed Exists put created the item");

    put(&*store, Table::Catalog, item(&pk, "k", json!({"v": 1}), None)).await;
    let updated = item(&pk, "k", json!({"v": 2}), None);
    store.put(Table::Catalog, updated.clone(), Condition::Exists).await.expect("Exists put on present item");
    assert_eq!(get(&*store, Table::Catalog, &pk, "k").await, Some(updated));
}

async fn attr_equals_compares_exactly(store: Arc<dyn ItemStore>) {
    let pk = unique_pk("attrequals");
    let t = Table::Customers;
    let original = item(&pk, "k", json!({"state": "active", "version": 3, "flag": true}), None);
    put(&*store, t, original.clone()).await;

    let mismatches = [
        ("state", json!("revoked")),
        ("state", json!("Active")),
        ("version", json!(4)),
        ("version", json!("3")),
        ("flag", json!(false)),
        ("flag", json!("true")),
        ("missing", json!("active")),
    ];
    for (name, value) in mismatches {
        let next = item(&pk, "k", json!({"state": "changed"}), None);
        let result = store.put(t, next, Condition::AttrEquals(name.into(), value.clone())).await;
        expect_condition_failed(result, &format!("AttrEquals({name}, {value}) on a mismatch"));
        assert_eq!(get(&*store, t, &pk, "k").await.as_ref(), Some(&original), "failed put changed the item");
    }

    let absent = item(&pk, "absent", json!({"state": "active"}), None);
    let result = store.put(t, absent, Condition::AttrEquals("state".into(), json!("active"))).await;
    expect_condition_failed(result, "AttrEquals on an absent item");
    assert_eq!(get(&*store, t, &pk, "absent").await, None);

    let v4 = item(&pk, "k", json!({"state": "active", "version": 4, "flag": true}), None);
    store.put(t, v4.clone(), Condition::AttrEquals("version".into(), json!(3))).await.expect("number match");
    assert_eq!(get(&*store, t, &pk, "k").await.as_ref(), Some(&v4));
    let v5 = item(&pk, "k", json!({"state": "revoked", "version": 5, "flag": true}), None);
    store
        .put(t, v5.clone(), Condition::AttrEquals("state".into(), json!("active")))
        .await
        .expect("string match");
    assert_eq!(get(&*store, t, &pk, "k").await.as_ref(), Some(&v5));
    let v6 = item(&pk, "k", json!({"state": "revoked", "version": 6, "flag": false}), None);
    store.put(t, v6.clone(), Condition::AttrEquals("flag".into(), json!(true))).await.expect("bool match");
    assert_eq!(get(&*store, t, &pk, "k").await, Some(v6));
}

/// DynamoDB reserved words (`status`, `name`, `size`, `data`, `key`,
/// `count`, `timestamp`) and names and values that look like expression
/// syntax are plain attributes: stored, compared and matched exactly, never
/// read as expression text (a value that would close a parenthesis and add
/// `OR 1 = 1` must not satisfy a condition it does not equal).
async fn reserved_words_and_expression_syntax_are_plain_names(store: Arc<dyn ItemStore>) {
    let pk = unique_pk("reserved");
    let t = Table::Keys;
    let fields = json!({
        "status": "active",
        "name": "tobramycin",
        "size": 3,
        "data": {"count": 1, "status": "nested"},
        "key": "k",
        "count": 2,
        "timestamp": 1_700_000_000,
        "#a = :b OR attribute_exists(pk)": ":v) OR (1 = 1",
        "a.b[0]": "dotted",
        "#name": "hash",
        ":value": "colon",
        "with space": "spaced",
    });
    let mut current = item(&pk, "k", fields.clone(), None);
    put(&*store, t, current.clone()).await;
    assert_eq!(get(&*store, t, &pk, "k").await.as_ref(), Some(&current));
    let traps = [json!("x) OR (1 = 1"), json!(":v"), json!("#a"), json!("active OR 1 = 1")];
    for (round, (name, value)) in fields.as_object().unwrap().iter().enumerate() {
        for trap in &traps {
            let next = item(&pk, "k", json!({"status": "changed"}), None);
            let result = store.put(t, next, Condition::AttrEquals(name.clone(), trap.clone())).await;
            expect_condition_failed(result, &format!("AttrEquals({name:?}, {trap}) on a mismatch"));
        }
        assert_eq!(get(&*store, t, &pk, "k").await.as_ref(), Some(&current), "a failed put changed {name:?}");
        let mut next = current.clone();
        next.attrs.insert("round".into(), json!(round));
        store.put(t, next.clone(), Condition::AttrEquals(name.clone(), value.clone())).await.expect(name);
        current = next;
        assert_eq!(get(&*store, t, &pk, "k").await.as_ref(), Some(&current));
    }
    // The same names in a transaction's conditions, and a query's answer.
    let delete = |name: &str, value: Value| WriteOp::Delete {
        table: t,
        pk: pk.clone(),
        sk: "k".into(),
        condition: Condition::AttrEquals(name.into(), value),
    };
    let result = store.transact(vec![delete("status", json!("x) OR (1 = 1"))]).await;
    expect_condition_failed(result, "a transaction's AttrEquals(status) on a mismatch");
    assert_eq!(query_all(&*store, t, &pk, "", 10, false).await, vec![current]);
    store.transact(vec![delete("status", json!("active"))]).await.expect("delete on status");
    assert_eq!(get(&*store, t, &pk, "k").await, None);
}

async fn delete_with_and_without_condition(store: Arc<dyn ItemStore>) {
    let pk = unique_pk("delete");
    let t = Table::Keys;

    // Unconditional: present item goes, absent item is fine.
    put(&*store, t, item(&pk, "plain", json!({"v": 1}), None)).await;
    store.delete(t, &pk, "plain", Condition::Always).await.expect("delete present item");
    assert_eq!(get(&*store, t, &pk, "plain").await, None);
    store.delete(t, &pk, "plain", Condition::Always).await.expect("delete absent item");
    assert_eq!(get(&*store, t, &pk, "plain").await, None);

    // Exists.
    expect_condition_failed(store.delete(t, &pk, "gone", Condition::Exists).await, "Exists delete of absent");
    let kept = item(&pk, "cond", json!({"state": "active"}), None);
    put(&*store, t, kept.clone()).await;
    expect_condition_failed(
        store.delete(t, &pk, "cond", Condition::NotExists).await,
        "NotExists delete of present item",
    );
    assert_eq!(get(&*store, t, &pk, "cond").await.as_ref(), Some(&kept));

    // AttrEquals.
    let mismatch = Condition::AttrEquals("state".into(), json!("revoked"));
    expect_condition_failed(store.delete(t, &pk, "cond", mismatch).await, "AttrEquals delete on mismatch");
    assert_eq!(get(&*store, t, &pk, "cond").await.as_ref(), Some(&kept), "failed delete removed the item");
    let matching = Condition::AttrEquals("state".into(), json!("active"));
    store.delete(t, &pk, "cond", matching.clone()).await.expect("AttrEquals delete on match");
    assert_eq!(get(&*store, t, &pk, "cond").await, None);
    expect_condition_failed(store.delete(t, &pk, "cond", matching).await, "AttrEquals delete of absent");

    put(&*store, t, item(&pk, "exists", json!({}), None)).await;
    store.delete(t, &pk, "exists", Condition::Exists).await.expect("Exists delete of present item");
    assert_eq!(get(&*store, t, &pk, "exists").await, None);
}

async fn expired_items_are_absent(store: Arc<dyn ItemStore>) {
    let pk = unique_pk("expired");
    let t = Table::Keys;
    let past = now_secs() - 60;
    let future = now_secs() + 3600;
    put(&*store, t, item(&pk, "e#old", json!({"state": "active"}), Some(past))).await;
    put(&*store, t, item(&pk, "e#live", json!({"state": "active"}), Some(future))).await;

    assert_eq!(get(&*store, t, &pk, "e#old").await, None, "expired item visible to get");
    let page = query_page(&*store, t, &pk, "e#", None, 10).await;
    assert_eq!(sks(&page.items), ["e#live"], "expired item visible to query");
    assert_eq!(page.next, None);

    let new = item(&pk, "e#old", json!({"state": "x"}), None);
    expect_condition_failed(store.put(t, new.clone(), Condition::Exists).await, "Exists on expired item");
    let attr = Condition::AttrEquals("state".into(), json!("active"));
    expect_condition_failed(store.put(t, new.clone(), attr.clone()).await, "AttrEquals on expired item");
    expect_condition_failed(store.delete(t, &pk, "e#old", Condition::Exists).await, "Exists delete, expired");
    expect_condition_failed(store.delete(t, &pk, "e#old", attr).await, "AttrEquals delete, expired");
    assert_eq!(get(&*store, t, &pk, "e#old").await, None);

    // NotExists treats the expired item as absent, and the new item is live.
    let fresh = item(&pk, "e#old", json!({"state": "fresh"}), Some(future));
    store.put(t, fresh.clone(), Condition::NotExists).await.expect("NotExists over an expired item");
    assert_eq!(get(&*store, t, &pk, "e#old").await.as_ref(), Some(&fresh));
    let page = query_page(&*store, t, &pk, "e#", None, 10).await;
    assert_eq!(page.items, vec![item(&pk, "e#live", json!({"state": "active"}), Some(future)), fresh]);

    // An expired item can be replaced in a transaction guarded by NotExists.
    put(&*store, t, item(&pk, "e#tx", json!({}), Some(past))).await;
    let tx_item = item(&pk, "e#tx", json!({"via": "transact"}), None);
    store
        .transact(vec![WriteOp::Put { table: t, item: tx_item.clone(), condition: Condition::NotExists }])
        .await
        .expect("transactional NotExists over an expired item");
    assert_eq!(get(&*store, t, &pk, "e#tx").await, Some(tx_item));
}

// ------------------------------------------------------------------ query --

const PREFIX: &str = "ord\u{1f}";

/// Sort keys under `PREFIX`, in ascending byte order (the expected order).
/// Mixed case, digits, separators, and multibyte UTF-8 where byte order
/// differs from both case-insensitive and UTF-16 order.
const IN_PREFIX_SORTED: &[&str] = &[
    "ord\u{1f}",
    "ord\u{1f}\u{1f}",
    "ord\u{1f}1",
    "ord\u{1f}10",
    "ord\u{1f}9",
    "ord\u{1f}A",
    "ord\u{1f}B",
    "ord\u{1f}a",
    "ord\u{1f}a\u{1f}",
    "ord\u{1f}a\u{1f}b",
    "ord\u{1f}b",
    "ord\u{1f}e",
    "ord\u{1f}z",
    "ord\u{1f}~",
    "ord\u{1f}\u{7f}",
    "ord\u{1f}\u{80}",
    "ord\u{1f}é",
    "ord\u{1f}日本",
    "ord\u{1f}\u{ff5e}",
    "ord\u{1f}😀",
    "ord\u{1f}\u{10ffff}",
    "ord\u{1f}\u{10ffff}z",
];

/// Sort keys of the same partition that do not start with `PREFIX`.
const OUTSIDE_PREFIX: &[&str] =
    &["ord", "ord\u{1e}z", "ord ", "ord a", "ordx", "orc\u{1f}z", "ore\u{1f}a", "Ord\u{1f}a", "\u{1f}"];

fn query_item(pk: &str, index: usize, sk: &str) -> Item {
    // Every third item carries a (future) expiry, to check it is returned.
    let expires_at = index.is_multiple_of(3).then_some(4_000_000_000 + index as i64);
    item(pk, sk, json!({"sk": sk, "i": index}), expires_at)
}

/// Writes the ordering fixture (in scrambled order) and returns the expected
/// items under `PREFIX` in order. Neighbouring partitions get decoys.
async fn write_ordering_fixture(store: &dyn ItemStore, table: Table, pk: &str) -> Vec<Item> {
    let expected: Vec<Item> =
        IN_PREFIX_SORTED.iter().enumerate().map(|(i, sk)| query_item(pk, i, sk)).collect();
    let mut writes: Vec<Item> = expected.clone();
    writes.extend(OUTSIDE_PREFIX.iter().map(|sk| item(pk, sk, json!({"outside": true}), None)));
    // Scramble deterministically so insertion order is not sort order.
    let len = writes.len();
    let scrambled: Vec<Item> = (0..len).map(|i| writes[(i * 7 + 3) % len].clone()).collect();
    assert!(!len.is_multiple_of(7), "scramble must be a permutation");
    for chunk in scrambled.chunks(25) {
        let ops = chunk
            .iter()
            .map(|it| WriteOp::Put { table, item: it.clone(), condition: Condition::NotExists })
            .collect();
        store.transact(ops).await.expect("write ordering fixture");
    }
    for decoy_pk in [format!("{pk}0"), format!("{pk}\u{1f}"), pk[..pk.len() - 1].to_string()] {
        for sk in ["ord\u{1f}a", "ord\u{1f}", "ord\u{1f}zz"] {
            put(store, table, item(&decoy_pk, sk, json!({"decoy": true}), None)).await;
        }
    }
    expected
}

async fn query_returns_prefix_in_byte_order(store: Arc<dyn ItemStore>) {
    let pk = unique_pk("order");
    let expected = write_ordering_fixture(&*store, Table::Catalog, &pk).await;
    let page = query_page(&*store, Table::Catalog, &pk, PREFIX, None, 100).await;
    assert_eq!(sks(&page.items), IN_PREFIX_SORTED, "sort keys must come in ascending byte order");
    assert_eq!(page.items, expected, "items must round-trip exactly");
    assert_eq!(page.next, None);

    // Narrower prefixes.
    let page = query_page(&*store, Table::Catalog, &pk, "ord\u{1f}a", None, 100).await;
    assert_eq!(sks(&page.items), ["ord\u{1f}a", "ord\u{1f}a\u{1f}", "ord\u{1f}a\u{1f}b"]);
    assert_eq!(page.next, None);
    let page = query_page(&*store, Table::Catalog, &pk, "ord\u{1f}1", None, 100).await;
    assert_eq!(sks(&page.items), ["ord\u{1f}1", "ord\u{1f}10"]);
    let page = query_page(&*store, Table::Catalog, &pk, "ord\u{1f}\u{10ffff}", None, 100).await;
    assert_eq!(sks(&page.items), ["ord\u{1f}\u{10ffff}", "ord\u{1f}\u{10ffff}z"]);
    let page = query_page(&*store, Table::Catalog, &pk, "ord\u{1f}日", None, 100).await;
    assert_eq!(sks(&page.items), ["ord\u{1f}日本"]);
    let page = query_page(&*store, Table::Catalog, &pk, "ord\u{1f}a\u{1f}b", None, 100).await;
    assert_eq!(sks(&page.items), ["ord\u{1f}a\u{1f}b"], "a prefix equal to a whole sort key matches it");

    // Prefixes matching nothing, and a partition with nothing.
    for prefix in ["ord\u{1f}c", "ord\u{1f}\u{1f}\u{1f}", "zzz", "ORD\u{1f}"] {
        let page = query_page(&*store, Table::Catalog, &pk, prefix, None, 100).await;
        assert_eq!(page, Page { items: vec![], next: None }, "prefix {prefix:?}");
    }
    let page = query_page(&*store, Table::Catalog, &unique_pk("empty"), "", None, 100).await;
    assert_eq!(page, Page { items: vec![], next: None });
    let page = query_page(&*store, Table::Keys, &pk, PREFIX, None, 100).await;
    assert_eq!(page, Page { items: vec![], next: None }, "query leaked across tables");
}

async fn query_with_empty_prefix_returns_whole_partition(store: Arc<dyn ItemStore>) {
    let pk = unique_pk("wholepartition");
    write_ordering_fixture(&*store, Table::Customers, &pk).await;
    let mut want: Vec<&str> = IN_PREFIX_SORTED.iter().chain(OUTSIDE_PREFIX).copied().collect();
    want.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    let page = query_page(&*store, Table::Customers, &pk, "", None, 100).await;
    assert_eq!(sks(&page.items), want);
    assert_eq!(page.next, None);
    assert_eq!(&want[..4], ["\u{1f}", "Ord\u{1f}a", "orc\u{1f}z", "ord"], "fixture sanity");
    let all = query_all(&*store, Table::Customers, &pk, "", 4, true).await;
    assert_eq!(sks(&all), want);
}

async fn query_after_resumes_strictly_after(store: Arc<dyn ItemStore>) {
    let pk = unique_pk("after");
    let t = Table::Catalog;
    write_ordering_fixture(&*store, t, &pk).await;
    let tail = |from: usize| IN_PREFIX_SORTED[from..].to_vec();

    // After an existing sort key: strictly after it.
    let page = query_page(&*store, t, &pk, PREFIX, Some("ord\u{1f}a"), 100).await;
    assert_eq!(sks(&page.items), tail(8));
    assert_eq!(page.next, None);
    // After a sort key that does not exist: from the next one up.
    let page = query_page(&*store, t, &pk, PREFIX, Some("ord\u{1f}c"), 100).await;
    assert_eq!(sks(&page.items), tail(11));
    let page = query_page(&*store, t, &pk, PREFIX, Some("ord\u{1f}a\u{1f}a"), 100).await;
    assert_eq!(sks(&page.items), tail(9));
    // After the prefix itself, which is also an item's sort key.
    let page = query_page(&*store, t, &pk, PREFIX, Some(PREFIX), 100).await;
    assert_eq!(sks(&page.items), tail(1));
    // After the last key: nothing.
    let last = IN_PREFIX_SORTED[IN_PREFIX_SORTED.len() - 1];
    let page = query_page(&*store, t, &pk, PREFIX, Some(last), 100).await;
    assert_eq!(page, Page { items: vec![], next: None });
    // With a limit, `next` resumes exactly.
    let page = query_page(&*store, t, &pk, PREFIX, Some("ord\u{1f}9"), 3).await;
    assert_eq!(sks(&page.items), ["ord\u{1f}A", "ord\u{1f}B", "ord\u{1f}a"]);
    assert_eq!(page.next.as_deref(), Some("ord\u{1f}a"));
    // With the empty prefix.
    let page = query_page(&*store, t, &pk, "", Some("ord\u{1f}\u{10ffff}z"), 100).await;
    assert_eq!(sks(&page.items), ["ord ", "ord a", "ordx", "ore\u{1f}a"]);
}

async fn query_paging_visits_every_item_once(store: Arc<dyn ItemStore>) {
    let pk = unique_pk("paging");
    let t = Table::Catalog;
    let expected = write_ordering_fixture(&*store, t, &pk).await;
    let n = expected.len();
    for limit in 1..=n + 2 {
        let all = query_all(&*store, t, &pk, PREFIX, limit, true).await;
        assert_eq!(sks(&all), sks(&expected), "paging with limit {limit}");
        assert_eq!(all, expected, "paging with limit {limit}");
    }
    // Page by page with a limit that divides the item count: the last page is
    // exactly full and still says there is nothing more.
    assert_eq!(n % 11, 0, "fixture size");
    let mut after: Option<String> = None;
    for page_no in 0..n / 11 {
        let page = query_page(&*store, t, &pk, PREFIX, after.as_deref(), 11).await;
        let want = &expected[page_no * 11..(page_no + 1) * 11];
        assert_eq!(page.items, want, "page {page_no}");
        let last_page = page_no + 1 == n / 11;
        if last_page {
            assert_eq!(page.next, None, "an exactly full last page must have no next");
        } else {
            assert_eq!(page.next.as_deref(), Some(want[10].sk.as_str()), "next on page {page_no}");
        }
        after = page.next;
    }
    let page = query_page(&*store, t, &pk, PREFIX, None, n).await;
    assert_eq!(page.items, expected);
    assert_eq!(page.next, None, "a single exactly full page must have no next");
    let page = query_page(&*store, t, &pk, PREFIX, None, n - 1).await;
    assert_eq!(page.items, expected[..n - 1]);
    assert_eq!(page.next.as_deref(), Some(expected[n - 2].sk.as_str()));
    let page = query_page(&*store, t, &pk, PREFIX, page.next.as_deref(), n - 1).await;
    assert_eq!(page.items, expected[n - 1..]);
    assert_eq!(page.next, None);
}

async fn query_paging_skips_expired_items(store: Arc<dyn ItemStore>) {
    let pk = unique_pk("pagingexpired");
    let t = Table::Keys;
    let past = now_secs() - 60;
    // Live (L) and expired (x) items, with expired runs at the start, in the
    // middle and at the end: x x L L x x x L x L L x x x x
    let pattern = "xxLLxxxLxLLxxxx";
    let mut live = Vec::new();
    for (i, c) in pattern.chars().enumerate() {
        let sk = format!("p#{i:02}");
        let expires_at = if c == 'x' { Some(past) } else { None };
        let it = item(&pk, &sk, json!({"i": i}), expires_at);
        put(&*store, t, it.clone()).await;
        if c == 'L' {
            live.push(it);
        }
    }
    for limit in 1..=pattern.len() + 1 {
        let all = query_all(&*store, t, &pk, "p#", limit, false).await;
        assert_eq!(sks(&all), sks(&live), "paging with limit {limit} over expired items");
        assert_eq!(all, live, "paging with limit {limit} over expired items");
    }
    // Nothing live at all: one empty page, or pages that end in `None`.
    let pk2 = unique_pk("allexpired");
    for i in 0..5 {
        put(&*store, t, item(&pk2, &format!("p#{i}"), json!({}), Some(past))).await;
    }
    for limit in 1..=6 {
        assert_eq!(query_all(&*store, t, &pk2, "p#", limit, false).await, vec![], "limit {limit}");
    }
}

/// `limit` is a `usize`; a huge one means "no limit" (an adapter clamps it to
/// what its backend takes, e.g. DynamoDB's `i32` `Limit`) and must not wrap.
async fn query_with_huge_limit_returns_everything(store: Arc<dyn ItemStore>) {
    let pk = unique_pk("hugelimit");
    let t = Table::Catalog;
    let expected = write_ordering_fixture(&*store, t, &pk).await;
    for limit in [1000, i32::MAX as usize, usize::MAX] {
        let all = query_all(&*store, t, &pk, PREFIX, limit, false).await;
        assert_eq!(sks(&all), sks(&expected), "limit {limit}");
        assert_eq!(all, expected, "limit {limit}");
    }
}

// -------------------------------------------------------------------- add --

async fn add_creates_increments_and_respects_max(store: Arc<dyn ItemStore>) {
    let pk = unique_pk("add");
    let t = Table::Keys;
    let first_expiry = now_secs() + 3600;
    let later_expiry = first_expiry + 3600;
    let add = |by: i64, max: Option<i64>, expires_at: Option<i64>| {
        let (store, pk) = (Arc::clone(&store), pk.clone());
        async move { store.add(t, &pk, "c", by, max, expires_at).await.expect("add") }
    };
    let counter = |n: i64| item(&pk, "c", json!({"n": n}), Some(first_expiry));

    assert_eq!(add(5, None, Some(first_expiry)).await, Some(5), "created at `by`");
    assert_eq!(get(&*store, t, &pk, "c").await, Some(counter(5)));
    assert_eq!(add(3, None, Some(later_expiry)).await, Some(8));
    assert_eq!(get(&*store, t, &pk, "c").await, Some(counter(8)), "the first expires_at is kept");
    assert_eq!(add(3, None, None).await, Some(11));
    assert_eq!(get(&*store, t, &pk, "c").await, Some(counter(11)), "the first expires_at is kept");
    assert_eq!(add(-2, None, None).await, Some(9), "negative steps subtract");
    assert_eq!(add(2, Some(10), None).await, None, "would exceed max");
    assert_eq!(get(&*store, t, &pk, "c").await, Some(counter(9)), "a refused add changes nothing");
    assert_eq!(add(1, Some(10), None).await, Some(10), "reaching max exactly is allowed");
    assert_eq!(add(1, Some(10), None).await, None);
    assert_eq!(add(0, Some(10), None).await, Some(10), "adding 0 at max is allowed");
    assert_eq!(get(&*store, t, &pk, "c").await, Some(counter(10)));

    // A new counter that would exceed max is not created.
    let result = store.add(t, &pk, "over", 3, Some(2), Some(first_expiry)).await.expect("add");
    assert_eq!(result, None);
    assert_eq!(get(&*store, t, &pk, "over").await, None, "a refused add must not create the item");
    // A new counter without expiry has none.
    assert_eq!(store.add(t, &pk, "plain", 1, Some(1), None).await.expect("add"), Some(1));
    assert_eq!(get(&*store, t, &pk, "plain").await, Some(item(&pk, "plain", json!({"n": 1}), None)));
    // Counters are per item.
    assert_eq!(get(&*store, t, &pk, "c").await, Some(counter(10)));
}

async fn add_keeps_other_attributes(store: Arc<dyn ItemStore>) {
    let pk = unique_pk("addattrs");
    let t = Table::Customers;
    let expires = now_secs() + 3600;
    put(&*store, t, item(&pk, "c", json!({"n": 2, "label": "quota", "tags": ["a"]}), Some(expires))).await;
    assert_eq!(store.add(t, &pk, "c", 3, Some(100), None).await.expect("add"), Some(5));
    let want = item(&pk, "c", json!({"n": 5, "label": "quota", "tags": ["a"]}), Some(expires));
    assert_eq!(get(&*store, t, &pk, "c").await, Some(want));
}

async fn add_restarts_an_expired_counter(store: Arc<dyn ItemStore>) {
    let pk = unique_pk("addexpired");
    let t = Table::Keys;
    let new_expiry = now_secs() + 3600;
    put(&*store, t, item(&pk, "c", json!({"n": 50, "old": true}), Some(now_secs() - 60))).await;
    assert_eq!(store.add(t, &pk, "c", 1, Some(10), Some(new_expiry)).await.expect("add"), Some(1));
    assert_eq!(get(&*store, t, &pk, "c").await, Some(item(&pk, "c", json!({"n": 1}), Some(new_expiry))));
}

async fn add_is_exact_under_concurrency(store: Arc<dyn ItemStore>) {
    let pk = unique_pk("addconcurrent");
    let t = Table::Keys;
    let expires = now_secs() + 3600;
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let (store, pk) = (Arc::clone(&store), pk.clone());
            tokio::spawn(async move { store.add(t, &pk, "c", 1, Some(20), Some(expires)).await })
        })
        .collect();
    let mut granted = Vec::new();
    for task in tasks {
        if let Some(n) = task.await.expect("add task").expect("add") {
            granted.push(n);
        }
    }
    granted.sort_unstable();
    assert_eq!(granted, (1..=20).collect::<Vec<i64>>(), "each value 1..=20 granted exactly once");
    assert_eq!(get(&*store, t, &pk, "c").await, Some(item(&pk, "c", json!({"n": 20}), Some(expires))));
}

// --------------------------------------------------------------- transact --

async fn transact_applies_all_operations(store: Arc<dyn ItemStore>) {
    let pk = unique_pk("transact");
    let a = item(&pk, "a", json!({"v": "a"}), None);
    let b = item(&pk, "b", json!({"v": "b"}), Some(now_secs() + 3600));
    let c = item(&pk, "c", json!({"v": "c", "state": "open"}), None);
    put(&*store, Table::Keys, c.clone()).await;
    put(&*store, Table::Catalog, item(&pk, "d", json!({}), None)).await;
    let c2 = item(&pk, "c", json!({"v": "c2"}), None);
    store
        .transact(vec![
            WriteOp::Put { table: Table::Keys, item: a.clone(), condition: Condition::NotExists },
            WriteOp::Put { table: Table::Customers, item: b.clone(), condition: Condition::Always },
            WriteOp::Put {
                table: Table::Keys,
                item: c2.clone(),
                condition: Condition::AttrEquals("state".into(), json!("open")),
            },
            WriteOp::Delete {
                table: Table::Catalog,
                pk: pk.clone(),
                sk: "d".into(),
                condition: Condition::Exists,
            },
            // The same key in another table is another item.
            WriteOp::Put { table: Table::Catalog, item: a.clone(), condition: Condition::NotExists },
        ])
        .await
        .expect("transaction");
    assert_eq!(get(&*store, Table::Keys, &pk, "a").await.as_ref(), Some(&a));
    assert_eq!(get(&*store, Table::Catalog, &pk, "a").await.as_ref(), Some(&a));
    assert_eq!(get(&*store, Table::Customers, &pk, "b").await, Some(b));
    assert_eq!(get(&*store, Table::Keys, &pk, "c").await, Some(c2));
    assert_eq!(get(&*store, Table::Catalog, &pk, "d").await, None);
}

async fn transact_is_all_or_nothing(store: Arc<dyn ItemStore>) {
    let pk = unique_pk("atomic");
    let existing = item(&pk, "existing", json!({"v": "keep"}), None);
    let doomed = item(&pk, "doomed", json!({"v": "stay"}), None);
    put(&*store, Table::Keys, existing.clone()).await;
    put(&*store, Table::Keys, doomed.clone()).await;
    let failing_last_ops = [
        WriteOp::Put {
            table: Table::Keys,
            item: item(&pk, "missing", json!({}), None),
            condition: Condition::Exists,
        },
        WriteOp::Put {
            table: Table::Keys,
            item: item(&pk, "existing", json!({}), None),
            condition: Condition::NotExists,
        },
        WriteOp::Delete {
            table: Table::Keys,
            pk: pk.clone(),
            sk: "existing".into(),
            condition: Condition::AttrEquals("v".into(), json!("other")),
        },
    ];
    for (n, failing) in failing_last_ops.into_iter().enumerate() {
        let ops = vec![
            WriteOp::Put {
                table: Table::Keys,
                item: item(&pk, &format!("new{n}"), json!({"n": n}), None),
                condition: Condition::NotExists,
            },
            WriteOp::Put {
                table: Table::Catalog,
                item: item(&pk, "other", json!({"n": n}), None),
                condition: Condition::Always,
            },
            WriteOp::Delete {
                table: Table::Keys,
                pk: pk.clone(),
                sk: "doomed".into(),
                condition: Condition::Exists,
            },
            failing,
        ];
        expect_condition_failed(
            store.transact(ops).await,
            &format!("transaction {n} with a failing last op"),
        );
        assert_eq!(get(&*store, Table::Keys, &pk, &format!("new{n}")).await, None, "put {n} was applied");
        assert_eq!(get(&*store, Table::Catalog, &pk, "other").await, None, "put {n} was applied");
        assert_eq!(
            get(&*store, Table::Keys, &pk, "doomed").await.as_ref(),
            Some(&doomed),
            "delete {n} applied"
        );
        assert_eq!(get(&*store, Table::Keys, &pk, "existing").await.as_ref(), Some(&existing));
        assert_eq!(get(&*store, Table::Keys, &pk, "missing").await, None);
    }
    // A failing first op as well.
    let ops = vec![
        WriteOp::Delete {
            table: Table::Keys,
            pk: pk.clone(),
            sk: "missing".into(),
            condition: Condition::Exists,
        },
        WriteOp::Put {
            table: Table::Keys,
            item: item(&pk, "after", json!({}), None),
            condition: Condition::Always,
        },
    ];
    expect_condition_failed(store.transact(ops).await, "transaction with a failing first op");
    assert_eq!(get(&*store, Table::Keys, &pk, "after").await, None);
}

async fn transact_rejects_invalid_requests(store: Arc<dyn ItemStore>) {
    let pk = unique_pk("invalid");
    let t = Table::Catalog;
    let put_op = |sk: String| WriteOp::Put {
        table: t,
        item: item(&pk, &sk, json!({"sk": sk}), None),
        condition: Condition::Always,
    };

    expect_invalid(store.transact(vec![]).await, "empty transaction");

    let too_many: Vec<WriteOp> = (0..=MAX_TRANSACTION_OPS).map(|i| put_op(format!("many#{i:03}"))).collect();
    expect_invalid(store.transact(too_many).await, "transaction over the limit");
    assert_eq!(query_page(&*store, t, &pk, "many#", None, 1000).await.items, vec![], "rejected ops applied");

    let same_put_twice = vec![put_op("dup".into()), put_op("dup".into())];
    expect_invalid(store.transact(same_put_twice).await, "two puts of one item");
    let put_and_delete = vec![
        put_op("dup".into()),
        WriteOp::Delete { table: t, pk: pk.clone(), sk: "dup".into(), condition: Condition::Always },
    ];
    expect_invalid(store.transact(put_and_delete).await, "put and delete of one item");
    assert_eq!(get(&*store, t, &pk, "dup").await, None, "rejected ops applied");

    // Exactly at the limit is fine.
    let at_limit: Vec<WriteOp> = (0..MAX_TRANSACTION_OPS).map(|i| put_op(format!("max#{i:03}"))).collect();
    store.transact(at_limit).await.expect("transaction at the limit");
    let all = query_all(&*store, t, &pk, "max#", 1000, false).await;
    assert_eq!(all.len(), MAX_TRANSACTION_OPS);
    assert_eq!(all[0], item(&pk, "max#000", json!({"sk": "max#000"}), None));
    assert_eq!(all[99], item(&pk, "max#099", json!({"sk": "max#099"}), None));
}

async fn concurrent_not_exists_puts_have_one_winner(store: Arc<dyn ItemStore>) {
    for round in 0..3 {
        let pk = unique_pk("race");
        let tasks: Vec<_> = (0..20)
            .map(|writer| {
                let (store, pk) = (Arc::clone(&store), pk.clone());
                tokio::spawn(async move {
                    let it = item(&pk, "k", json!({"writer": writer}), None);
                    (writer, store.put(Table::Keys, it, Condition::NotExists).await)
                })
            })
            .collect();
        let mut winners = Vec::new();
        for task in tasks {
            match task.await.expect("put task") {
                (writer, Ok(())) => winners.push(writer),
                (_, Err(StoreError::ConditionFailed)) => {}
                (writer, Err(e)) => panic!("round {round}: writer {writer} failed with {e:?}"),
            }
        }
        assert_eq!(winners.len(), 1, "round {round}: exactly one NotExists put wins, got {winners:?}");
        let want = item(&pk, "k", json!({"writer": winners[0]}), None);
        assert_eq!(get(&*store, Table::Keys, &pk, "k").await, Some(want), "round {round}: winner's item");
    }
}

/// A scan pages through a whole table: every live item of ours once (other
/// checks' items are in the table too), none expired, pages within `limit`.
async fn scan_visits_every_live_item_once(store: Arc<dyn ItemStore>) {
    let table = Table::Customers;
    let base = unique_pk("scan");
    let mut want = Vec::new();
    for p in 0..3 {
        for s in 0..4 {
            let (pk, sk) = (format!("{base}#{p}"), format!("item#{s}"));
            put(store.as_ref(), table, item(&pk, &sk, json!({"p": p, "s": s}), None)).await;
            want.push((pk, sk));
        }
    }
    let expired = item(&format!("{base}#0"), "gone", json!({"gone": true}), Some(now_secs() - 10));
    put(store.as_ref(), table, expired).await;
    let mut seen = Vec::new();
    let mut after = None;
    for _ in 0..10_000 {
        let page = store.scan(table, after.take(), 5).await.unwrap_or_else(|e| panic!("scan: {e}"));
        assert!(page.items.len() <= 5, "a page of {} items exceeds the limit 5", page.items.len());
        seen.extend(
            page.items.iter().filter(|i| i.pk.starts_with(&base)).map(|i| (i.pk.clone(), i.sk.clone())),
        );
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    assert!(after.is_none(), "scan did not terminate");
    seen.sort();
    want.sort();
    assert_eq!(seen, want, "each live item once, no expired item");
    expect_invalid(store.scan(table, Some("not a cursor".into()), 5).await, "a cursor we did not make");
    expect_invalid(store.scan(table, None, 0).await, "limit 0");
}

//! Repositories on the embedded backend: catalog search and index upkeep,
//! envelope binding of confidential records, and the key lifecycle.

use std::collections::HashSet;
use std::sync::Arc;

use pharmagate_shared::clock::now_secs;
use pharmagate_shared::config::{Backend, Settings};
use pharmagate_shared::domain::{Cas, CustomerId, ManufacturingProcess, Product, ProductDraft, Role, Tier};
use pharmagate_shared::ports::{Condition, Table};
use pharmagate_shared::repo::keys::{IssueError, NewKey, RotateError};
use pharmagate_shared::repo::{KeyStatus, RepoError, Search};
use serde_json::json;

fn backend() -> (tempfile::TempDir, Backend) {
    let dir = tempfile::tempdir().unwrap();
    let backend = Backend::embedded(dir.path(), Settings::default()).unwrap();
    (dir, backend)
}

fn product(cas: &str, name: &str, synonyms: &[&str], formula: &str) -> Product {
    let draft: ProductDraft = serde_json::from_value(json!({
        "name": name, "synonyms": synonyms, "molecular_formula": formula, "molecular_weight": 100.0
    }))
    .unwrap();
    draft.validate(Cas::parse(cas).unwrap()).unwrap().0
}

fn process(route: &str) -> ManufacturingProcess {
    serde_json::from_value(json!({"route": route, "site": "s", "steps": [{"step": 1, "operation": "mix"}]}))
        .unwrap()
}

async fn names(backend: &Backend, search: Search, limit: usize) -> Vec<String> {
    let catalog = backend.catalog();
    let mut out = Vec::new();
    let mut after = None;
    loop {
        let page = catalog.search(&search, after, limit).await.unwrap();
        assert!(page.items.len() <= limit);
        out.extend(page.items.into_iter().map(|s| s.cas.to_string()));
        match page.next {
            Some(n) => after = Some(n),
            None => return out,
        }
    }
}

#[tokio::test]
async fn search_lists_each_product_once_across_pages() {
    let (_d, backend) = backend();
    let catalog = backend.catalog();
    catalog
        .put(
            product("665-66-7", "amantadine hydrochloride", &["Symmetrel", "amantadine HCl"], "C10H18ClN"),
            None,
        )
        .await
        .unwrap();
    catalog
        .put(product("32986-56-4", "tobramycin", &["Tobramycine", "Nebcin"], "C18H37N5O9"), None)
        .await
        .unwrap();
    catalog.put(product("50-78-2", "acetylsalicylic acid", &["aspirin"], "C9H8O4"), None).await.unwrap();
    for limit in [1, 2, 3, 100] {
        assert_eq!(
            names(&backend, Search::All, limit).await,
            ["50-78-2", "665-66-7", "32986-56-4"],
            "limit {limit}"
        );
        assert_eq!(names(&backend, Search::Name("AMANTA".into()), limit).await, ["665-66-7"]);
        assert_eq!(names(&backend, Search::Name("tob".into()), limit).await, ["32986-56-4"]);
        assert_eq!(names(&backend, Search::Name("hcl".into()), limit).await, ["665-66-7"]);
        assert_eq!(names(&backend, Search::Name("a".into()), limit).await, ["50-78-2", "665-66-7"]);
    }
    assert_eq!(names(&backend, Search::Formula("C9H8O4".into()), 10).await, ["50-78-2"]);
    assert!(names(&backend, Search::Formula("C9H8O".into()), 10).await.is_empty(), "formula is exact");
}

#[tokio::test]
async fn replacing_and_deleting_keep_the_index_exact() {
    let (_d, backend) = backend();
    let catalog = backend.catalog();
    catalog.put(product("50-78-2", "aspirin", &["acetylsalicylic acid"], "C9H8O4"), None).await.unwrap();
    catalog.put(product("50-78-2", "aspirin", &["ASA"], "C9H8O4X"), None).await.unwrap();
    assert!(names(&backend, Search::Name("acetyl".into()), 10).await.is_empty());
    assert_eq!(names(&backend, Search::Name("asa".into()), 10).await, ["50-78-2"]);
    assert!(names(&backend, Search::Formula("C9H8O4".into()), 10).await.is_empty());
    assert_eq!(names(&backend, Search::Formula("C9H8O4X".into()), 10).await, ["50-78-2"]);
    assert!(catalog.delete(Cas::parse("50-78-2").unwrap()).await.unwrap());
    assert!(names(&backend, Search::All, 10).await.is_empty());
    let leftovers = backend
        .store
        .query(pharmagate_shared::ports::Query {
            table: Table::Catalog,
            pk: "PRODUCT#50-78-2".into(),
            sk_prefix: String::new(),
            after: None,
            limit: 10,
        })
        .await
        .unwrap();
    assert!(leftovers.items.is_empty(), "product and manufacturing items are gone");
    assert!(!catalog.delete(Cas::parse("50-78-2").unwrap()).await.unwrap());
}

#[tokio::test]
async fn concurrent_replacements_leave_one_consistent_product() {
    let (_d, backend) = backend();
    let catalog = Arc::new(backend.catalog());
    let mut tasks = Vec::new();
    for i in 0..20 {
        let catalog = catalog.clone();
        tasks.push(tokio::spawn(async move {
            catalog.put(product("50-78-2", &format!("name{i:02}"), &[], "C9H8O4"), None).await
        }));
    }
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) | Err(RepoError::Conflict) => {}
            Err(e) => panic!("{e}"),
        }
    }
    let stored = catalog.get(Cas::parse("50-78-2").unwrap()).await.unwrap().unwrap();
    assert_eq!(names(&backend, Search::All, 100).await, ["50-78-2"]);
    assert_eq!(names(&backend, Search::Name(stored.name.clone()), 100).await, ["50-78-2"]);
    assert_eq!(
        names(&backend, Search::Name("name".into()), 100).await,
        ["50-78-2"],
        "no stale index entries"
    );
}

#[tokio::test]
async fn a_confidential_record_moved_to_another_product_does_not_decrypt() {
    let (_d, backend) = backend();
    let catalog = backend.catalog();
    catalog.put(product("50-78-2", "aspirin", &[], "C9H8O4"), Some(&process("route A"))).await.unwrap();
    catalog.put(product("64-17-5", "ethanol", &[], "C2H6O"), Some(&process("route B"))).await.unwrap();
    let aspirin = Cas::parse("50-78-2").unwrap();
    assert_eq!(catalog.manufacturing(aspirin).await.unwrap().unwrap().route, "route A");
    let stolen =
        backend.store.get(Table::Catalog, "PRODUCT#64-17-5", "MANUFACTURING").await.unwrap().unwrap();
    assert!(!stolen.attrs["process"].as_str().unwrap().contains("route B"));
    let mut moved = stolen.clone();
    moved.pk = "PRODUCT#50-78-2".into();
    backend.store.put(Table::Catalog, moved, Condition::Always).await.unwrap();
    assert!(matches!(catalog.manufacturing(aspirin).await, Err(RepoError::Corrupt(_))));
}

fn new_key(customer: &str) -> NewKey {
    NewKey {
        customer: CustomerId::parse(customer).unwrap(),
        role: Role::Customer,
        tier: Tier::Free,
        label: None,
        expires_at: None,
    }
}

#[tokio::test]
async fn the_key_cap_holds_exactly_under_concurrency() {
    let (_d, backend) = backend();
    let keys = Arc::new(backend.keys());
    let mut tasks = Vec::new();
    for _ in 0..30 {
        let keys = keys.clone();
        tasks.push(tokio::spawn(async move { keys.issue(new_key("acme"), Some(10)).await }));
    }
    let mut issued = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => issued += 1,
            Err(IssueError::CapReached(10)) => {}
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(issued, 10);
    let (listed, _) = keys.list_page(Some(&CustomerId::parse("acme").unwrap()), None, 100).await.unwrap();
    assert_eq!(listed.len(), 10);
    let ids: HashSet<_> = listed.iter().map(|r| r.id.clone()).collect();
    assert_eq!(ids.len(), 10);
}

#[tokio::test]
async fn rotation_gives_grace_once_and_revocation_is_immediate() {
    let (_d, backend) = backend();
    let keys = backend.keys();
    let (old_key, old) = keys.issue(new_key("acme"), None).await.unwrap();
    let now = now_secs();
    let (new_key_text, new) = keys.rotate(&old.id, 3600, None).await.unwrap();
    assert_ne!(new_key_text.expose(), old_key.expose());
    let retired = keys.get(&old.id).await.unwrap().unwrap();
    assert!((now + 3600..=now + 3601).contains(&retired.expires_at.unwrap()));
    assert_eq!(retired.replaced_by.as_ref(), Some(&new.id));
    assert_eq!(retired.status(now_secs()), KeyStatus::Active);
    assert!(matches!(keys.rotate(&old.id, 0, None).await, Err(RotateError::AlreadyRotated)));
    assert_eq!((new.customer.as_str(), new.role, new.tier), ("acme", Role::Customer, Tier::Free));
    assert!(keys.get(&new.id).await.unwrap().unwrap().matches(&new_key_text.hash()));
    keys.revoke(&new.id).await.unwrap();
    assert_eq!(keys.get(&new.id).await.unwrap().unwrap().status(now_secs()), KeyStatus::Revoked);
    assert!(matches!(keys.rotate(&new.id, 0, None).await, Err(RotateError::NotActive(KeyStatus::Revoked))));
    let again = keys.revoke(&new.id).await.unwrap().unwrap();
    assert_eq!(again.status(now_secs()), KeyStatus::Revoked, "revoking twice is harmless");
    let (_, zero) = keys.issue(new_key("acme"), None).await.unwrap();
    keys.rotate(&zero.id, 0, None).await.unwrap();
    assert_eq!(keys.get(&zero.id).await.unwrap().unwrap().status(now_secs()), KeyStatus::Expired);
}

#[tokio::test]
async fn chained_rotations_with_grace_cannot_mint_keys_past_the_cap() {
    let (_d, backend) = backend();
    let keys = backend.keys();
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(keys.issue(new_key("acme"), Some(3)).await.unwrap().1.id);
    }
    let (_, first) = keys.rotate(&ids[0], 3600, Some(3)).await.unwrap();
    assert!(matches!(keys.rotate(&first.id, 3600, Some(3)).await, Err(RotateError::CapReached(3))));
    assert!(matches!(keys.rotate(&ids[1], 3600, Some(3)).await, Err(RotateError::CapReached(3))));
    // A compromised key can always be replaced at once.
    let (_, second) = keys.rotate(&first.id, 0, Some(3)).await.unwrap();
    let (listed, _) = keys.list_page(Some(&CustomerId::parse("acme").unwrap()), None, 100).await.unwrap();
    let active = listed.iter().filter(|r| r.status(now_secs()) == KeyStatus::Active).count();
    assert_eq!(active, 4, "3 keys plus the one in its grace period");
    assert!(listed.iter().any(|r| r.id == second.id));
}

#[tokio::test]
async fn concurrent_writes_and_deletes_never_orphan_index_entries() {
    let (_d, backend) = backend();
    let catalog = Arc::new(backend.catalog());
    let cas = Cas::parse("67-64-1").unwrap();
    for round in 0..5 {
        let mut tasks = Vec::new();
        for i in 0..24 {
            let catalog = catalog.clone();
            tasks.push(tokio::spawn(async move {
                if i % 3 == 2 {
                    catalog.delete(cas).await.map(|_| ())
                } else {
                    let synonym = format!("propanone {round} {i}");
                    catalog
                        .put(product("67-64-1", &format!("acetone v{i}"), &[&synonym], "C3H6O"), None)
                        .await
                        .map(|_| ())
                }
            }));
        }
        for t in tasks {
            match t.await.unwrap() {
                Ok(()) | Err(RepoError::Conflict) => {}
                Err(e) => panic!("{e}"),
            }
        }
        let listed = names(&backend, Search::Name("acetone".into()), 100).await;
        let by_synonym = names(&backend, Search::Name("propanone".into()), 100).await;
        match catalog.get(cas).await.unwrap() {
            Some(_) => {
                assert_eq!(listed, ["67-64-1"], "round {round}");
                assert_eq!(by_synonym, ["67-64-1"], "round {round}");
            }
            None => {
                assert!(listed.is_empty(), "round {round}: orphans {listed:?}");
                assert!(by_synonym.is_empty(), "round {round}: orphans {by_synonym:?}");
            }
        }
        // Every index entry must belong to the stored product's current tokens.
        let entries = backend
            .store
            .query(pharmagate_shared::ports::Query {
                table: Table::Catalog,
                pk: "NAME".into(),
                sk_prefix: String::new(),
                after: None,
                limit: 1000,
            })
            .await
            .unwrap();
        let expected = match catalog.get(cas).await.unwrap() {
            Some(p) => pharmagate_shared::repo::catalog::search_tokens(&p).len(),
            None => 0,
        };
        assert_eq!(entries.items.len(), expected, "round {round}");
    }
}

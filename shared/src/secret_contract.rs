//! Port contract for `SecretStore`: the behaviour the rotation protocol
//! relies on, checked with exact values through the trait alone, so the
//! embedded adapter and the Secrets Manager adapter (against moto) run the
//! same bodies. Every run uses fresh secret ids, so a shared server is fine.

use std::sync::Arc;

use crate::ports::{SecretError, SecretStore, Stage};

fn fresh_id(name: &str) -> String {
    let mut bytes = [0u8; 6];
    getrandom::fill(&mut bytes).expect("random");
    let suffix: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("contract/{name}-{suffix}")
}

async fn value_at(store: &dyn SecretStore, id: &str, stage: Stage) -> Option<(String, String)> {
    let version = store.get_stage(id, stage).await.expect("get_stage");
    version.map(|v| (v.version_id.clone(), v.value.to_string()))
}

fn pair(version: &str, value: &str) -> Option<(String, String)> {
    Some((version.to_string(), value.to_string()))
}

/// Runs every check against `store`; panics at the first violation.
pub async fn secret_store_contract(store: Arc<dyn SecretStore>) {
    unknown_secret_is_not_found(store.as_ref()).await;
    new_secret_has_no_versions(store.as_ref()).await;
    put_is_idempotent_and_refuses_a_changed_value(store.as_ref()).await;
    rotation_moves_stages_like_secrets_manager(store.as_ref()).await;
    stage_moves_must_name_the_holder(store.as_ref()).await;
}

async fn unknown_secret_is_not_found(store: &dyn SecretStore) {
    let id = fresh_id("absent");
    match store.get_stage(&id, Stage::Current).await {
        Err(SecretError::NotFound(_)) => {}
        other => panic!("get_stage of an unknown secret: expected NotFound, got {other:?}"),
    }
    match store.put_version(&id, "v1", "x", &[Stage::Current]).await {
        Err(SecretError::NotFound(_)) => {}
        other => panic!("put_version into an unknown secret: expected NotFound, got {other:?}"),
    }
}

async fn new_secret_has_no_versions(store: &dyn SecretStore) {
    let id = fresh_id("empty");
    store.ensure_secret(&id).await.expect("ensure");
    store.ensure_secret(&id).await.expect("ensure again is a no-op");
    for stage in Stage::ALL {
        assert_eq!(value_at(store, &id, stage).await, None, "{stage:?} of a new secret");
    }
    assert_eq!(store.staged_versions(&id).await.expect("versions"), vec![]);
    assert!(store.get_version(&id, "nope").await.expect("get_version").is_none());
}

async fn put_is_idempotent_and_refuses_a_changed_value(store: &dyn SecretStore) {
    let id = fresh_id("idem");
    store.ensure_secret(&id).await.expect("ensure");
    store.put_version(&id, "version-0001", "alpha", &[Stage::Current]).await.expect("put");
    store.put_version(&id, "version-0001", "alpha", &[Stage::Current]).await.expect("same put again");
    match store.put_version(&id, "version-0001", "beta", &[Stage::Current]).await {
        Err(SecretError::Conflict(_)) => {}
        other => panic!("same version id, other value: expected Conflict, got {other:?}"),
    }
    assert_eq!(value_at(store, &id, Stage::Current).await, pair("version-0001", "alpha"));
    let version = store.get_version(&id, "version-0001").await.expect("get").expect("present");
    assert_eq!(version.stages, vec![Stage::Current]);
    assert_eq!(version.value.as_str(), "alpha");
}

async fn rotation_moves_stages_like_secrets_manager(store: &dyn SecretStore) {
    let id = fresh_id("rotate");
    store.ensure_secret(&id).await.expect("ensure");
    store.put_version(&id, "version-0001", "one", &[Stage::Current]).await.expect("put v1");
    store.put_version(&id, "version-0002", "two", &[Stage::Pending]).await.expect("put v2 pending");
    assert_eq!(value_at(store, &id, Stage::Current).await, pair("version-0001", "one"));
    assert_eq!(value_at(store, &id, Stage::Pending).await, pair("version-0002", "two"));
    let staged = store.staged_versions(&id).await.expect("versions");
    assert_eq!(
        staged,
        vec![("version-0001".into(), vec![Stage::Current]), ("version-0002".into(), vec![Stage::Pending])]
    );

    store.move_stage(&id, Stage::Current, Some("version-0002"), Some("version-0001")).await.expect("finish");
    assert_eq!(value_at(store, &id, Stage::Current).await, pair("version-0002", "two"));
    assert_eq!(value_at(store, &id, Stage::Previous).await, pair("version-0001", "one"));
    // Re-running the same finish is a no-op.
    store.move_stage(&id, Stage::Current, Some("version-0002"), Some("version-0001")).await.expect("re-run");
    assert_eq!(value_at(store, &id, Stage::Previous).await, pair("version-0001", "one"));

    store.move_stage(&id, Stage::Pending, None, Some("version-0002")).await.expect("drop pending");
    assert_eq!(value_at(store, &id, Stage::Pending).await, None);
    let staged = store.staged_versions(&id).await.expect("versions");
    assert_eq!(
        staged,
        vec![("version-0001".into(), vec![Stage::Previous]), ("version-0002".into(), vec![Stage::Current])]
    );

    // A third version put straight to Current pushes the second to Previous
    // and leaves the first without a stage.
    store.put_version(&id, "version-0003", "three", &[Stage::Current]).await.expect("put v3");
    assert_eq!(value_at(store, &id, Stage::Current).await, pair("version-0003", "three"));
    assert_eq!(value_at(store, &id, Stage::Previous).await, pair("version-0002", "two"));
    let first = store.get_version(&id, "version-0001").await.expect("get").expect("kept");
    assert_eq!(first.stages, vec![]);
    assert_eq!(first.value.as_str(), "one");
}

async fn stage_moves_must_name_the_holder(store: &dyn SecretStore) {
    let id = fresh_id("holder");
    store.ensure_secret(&id).await.expect("ensure");
    store.put_version(&id, "version-000a", "a", &[Stage::Current]).await.expect("put a");
    store.put_version(&id, "version-000b", "b", &[Stage::Pending]).await.expect("put b");
    for from in [None, Some("version-000b")] {
        match store.move_stage(&id, Stage::Current, Some("version-000b"), from).await {
            Err(SecretError::Conflict(_)) | Err(SecretError::Invalid(_)) => {}
            other => panic!("moving Current without naming its holder ({from:?}): got {other:?}"),
        }
    }
    assert_eq!(value_at(store, &id, Stage::Current).await, pair("version-000a", "a"));
}

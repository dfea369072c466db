//! What write access to the tables alone can do: nothing that grants access.
//! Each test edits the server's store directly (SQLite file or DynamoDB
//! table, whichever backend runs) and checks that the API refuses.

use pharmagate_shared::ports::{Condition, Item, Table};
use serde_json::json;

use crate::authz::aspirin_manufacturing;
use crate::harness::*;

#[tokio::test]
async fn a_key_record_whose_role_was_raised_in_the_store_is_refused() {
    let s = shared_mutable();
    let api = s.api();
    let key = s.issue_key("tamper-co", "customer", "free");
    assert_eq!(api.get(&format!("/v1/products/{ASPIRIN}"), &key).await.status, 200);

    let store = raw_store(&s.data_dir).await;
    let pk = format!("KEY#{}", key_id(&key));
    let mut item = store.get(Table::Keys, &pk, "KEY").await.expect("read").expect("key record");
    assert_eq!(item.attrs["role"], json!("customer"));
    item.attrs.insert("role".into(), json!("admin"));
    item.attrs.insert("tier".into(), json!("internal"));
    store.put(Table::Keys, item, Condition::Always).await.expect("write");

    // The altered record is refused like an unknown key: everywhere, 401.
    api.get("/v1/keys?customer=pharmagate", &key).await.assert_unauthorized();
    api.get(&format!("/v1/products/{ASPIRIN}/manufacturing"), &key).await.assert_unauthorized();
    api.get(&format!("/v1/products/{ASPIRIN}"), &key).await.assert_unauthorized();
}

#[tokio::test]
async fn a_forged_key_record_and_a_cleared_revocation_are_refused() {
    let s = shared_mutable();
    let api = s.api();
    let store = raw_store(&s.data_dir).await;
    let path = format!("/v1/products/{ASPIRIN}");

    // A revoked key brought back by clearing `revoked_at` in the store.
    let revoked = s.issue_key("tamper-co2", "customer", "free");
    s.revoke_cli(&revoked);
    api.get(&path, &revoked).await.assert_unauthorized();
    let pk = format!("KEY#{}", key_id(&revoked));
    let mut item = store.get(Table::Keys, &pk, "KEY").await.expect("read").expect("key record");
    item.attrs.insert("revoked_at".into(), json!(null));
    store.put(Table::Keys, item, Condition::Always).await.expect("write");
    api.get(&path, &revoked).await.assert_unauthorized();

    // A genuine record copied under another key id (whose secret we chose).
    let genuine = s.issue_key("tamper-co2", "customer", "free");
    let forged = forge_key("dev", "forgedid0001");
    let mut copy =
        store.get(Table::Keys, &format!("KEY#{}", key_id(&genuine)), "KEY").await.unwrap().unwrap();
    copy.pk = "KEY#forgedid0001".into();
    copy.attrs.insert("id".into(), json!("forgedid0001"));
    store.put(Table::Keys, copy, Condition::Always).await.expect("write");
    api.get(&path, &forged).await.assert_unauthorized();
    assert_eq!(api.get(&path, &genuine).await.status, 200, "the genuine key still works");
}

#[tokio::test]
async fn entitlements_written_or_copied_in_the_store_grant_nothing() {
    let s = shared_mutable();
    let api = s.api();
    let store = raw_store(&s.data_dir).await;
    let partner = s.issue_key("tamper-partner", "partner", "paid");
    let path = format!("/v1/products/{ASPIRIN}/manufacturing");
    api.get(&path, &partner).await.problem(403, "forbidden");

    // Written straight into the table: no MAC.
    let attrs = json!({"cas": ASPIRIN, "granted_at": 1}).as_object().unwrap().clone();
    let forged = Item::new("CUSTOMER#tamper-partner", format!("ENT#{ASPIRIN}"), attrs);
    store.put(Table::Customers, forged, Condition::Always).await.expect("write");
    api.get(&path, &partner).await.problem(403, "forbidden");

    // A genuine entitlement of another customer, copied over.
    s.grant("tamper-other", ASPIRIN);
    let sk = format!("ENT#{ASPIRIN}");
    let mut copy = store.get(Table::Customers, "CUSTOMER#tamper-other", &sk).await.unwrap().expect("granted");
    copy.pk = "CUSTOMER#tamper-partner".into();
    store.put(Table::Customers, copy, Condition::Always).await.expect("write");
    api.get(&path, &partner).await.problem(403, "forbidden");

    // A genuine grant works.
    s.grant("tamper-partner", ASPIRIN);
    let record = api.get(&path, &partner).await.json(200);
    assert_eq!(record["manufacturing"], aspirin_manufacturing());
}

#[tokio::test]
async fn stored_manufacturing_records_hold_only_ciphertext() {
    let s = shared_readonly();
    let store = raw_store(&s.data_dir).await;
    let item =
        store.get(Table::Catalog, &format!("PRODUCT#{ASPIRIN}"), "MANUFACTURING").await.unwrap().unwrap();
    let sealed = item.attrs["process"].as_str().expect("a sealed string");
    assert!(sealed.starts_with("pge2."), "{sealed}");
    assert_eq!(sealed.split('.').count(), 4);
    for clear in ["Illustrative", "Coupling reaction", "SAMPLE DATA", "Sample site"] {
        assert!(!sealed.contains(clear), "{clear} in clear");
    }
    assert_eq!(item.attrs.len(), 1, "nothing else stored beside the ciphertext: {:?}", item.attrs);
}

#[tokio::test]
async fn a_client_record_whose_scopes_were_widened_in_the_store_is_refused() {
    let s = shared_mutable();
    let api = s.api();
    s.grant("tamper-client-co", ASPIRIN);
    let body = json!({"name": "narrow", "customer": "tamper-client-co", "scopes": ["catalog:read"]});
    let (id, secret) = api.create_client(s.admin(), &body).await;
    let token = api.token(&id, &secret, None).await;
    let manufacturing = format!("/v1/products/{ASPIRIN}/manufacturing");
    api.get_bearer(&manufacturing, &token).await.assert_gateway_forbidden();

    let store = raw_store(&s.data_dir).await;
    let pk = format!("CLIENT#{id}");
    let mut item = store.get(Table::Clients, &pk, "CLIENT").await.expect("read").expect("client record");
    assert_eq!(item.attrs["scopes"], json!(["catalog:read"]));
    item.attrs.insert("scopes".into(), json!(["catalog:read", "manufacturing:read"]));
    store.put(Table::Clients, item, Condition::Always).await.expect("write");

    // The token it holds and any new token request are refused.
    api.get_bearer(&manufacturing, &token).await.assert_unauthorized();
    let grant = form(&[("grant_type", "client_credentials"), ("scope", "manufacturing:read")]);
    api.post_form("/oauth/token", Some((&id, &secret)), &grant)
        .await
        .assert_oauth_error(401, "invalid_client");
}

//! OAuth clients and revoked access tokens on the item store.
//!
//! Layout in the `clients` table:
//! - `CLIENT#<id>` / `CLIENT`: the client record (secret hash, customer,
//!   tier, scopes, times);
//! - `CUSTOMER#<customer>` / `CLIENT#<id>`: the customer's list of clients;
//! - `ALL` / `<id>`: every client, for administrators;
//! - `JTI#<jti>` / `REVOKED`: a revoked access token, kept (TTL) until the
//!   token would have expired anyway.
//!
//! Client records carry an integrity MAC (`crate::integrity`), checked on
//! every read, so write access to the table alone cannot widen a client's
//! scopes, change its customer or plant a secret hash. Revocation marks need
//! none: forging one can only deny access.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::RepoError;
use crate::clock::now_secs;
use crate::domain::client::ClientSecret;
use crate::domain::{ClientId, CustomerId, KeyHash, Permission, Tier};
use crate::integrity::Integrity;
use crate::ports::{Attrs, Condition, Item, ItemStore, Query, StoreError, Table, WriteOp};

const CLIENT_SK: &str = "CLIENT";
const REVOKED_SK: &str = "REVOKED";
const ALL_PK: &str = "ALL";
pub const MAX_NAME_CHARS: usize = 100;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientRecord {
    pub id: ClientId,
    pub name: String,
    pub customer: CustomerId,
    pub tier: Tier,
    pub scopes: Vec<Permission>,
    /// SHA-256 of the secret, hex.
    pub secret_hash: String,
    /// The secret before the last rotation, accepted until
    /// `previous_secret_expires_at` (the grace period).
    #[serde(default)]
    pub previous_secret_hash: Option<String>,
    #[serde(default)]
    pub previous_secret_expires_at: Option<i64>,
    pub created_at: i64,
    #[serde(default)]
    pub secret_rotated_at: Option<i64>,
    /// Tokens carry the generation they were issued in and are valid only
    /// while it is the client's. A new client (even under a reused id) and
    /// a secret rotation with no grace period start a new one.
    pub token_generation: String,
    /// Bumped by every change; writes are conditional on it.
    pub rev: i64,
}

impl ClientRecord {
    /// Whether `presented` is this client's secret (or its previous one,
    /// within the grace period). Both comparisons always run, in constant
    /// time, so timing does not tell which matched.
    pub fn secret_matches(&self, presented: &KeyHash, now: i64) -> bool {
        let current = KeyHash::from_hex(&self.secret_hash).is_some_and(|h| h.matches(presented));
        let previous_live = self.previous_secret_expires_at.is_some_and(|t| t > now);
        let previous = self
            .previous_secret_hash
            .as_deref()
            .and_then(KeyHash::from_hex)
            .is_some_and(|h| h.matches(presented));
        current | (previous & previous_live)
    }
}

/// A client's name: trimmed, 1-100 characters, no control characters.
pub fn validate_name(text: &str) -> Result<String, String> {
    crate::domain::product::clean_text("name", text, MAX_NAME_CHARS).map_err(|e| e.message)
}

#[derive(Debug, Clone)]
pub struct NewClient {
    /// Chosen by the administrator, or generated when `None`.
    pub id: Option<ClientId>,
    pub name: String,
    pub customer: CustomerId,
    pub tier: Tier,
    pub scopes: Vec<Permission>,
}

#[derive(Debug, thiserror::Error)]
pub enum CreateClientError {
    #[error("a client with this id already exists")]
    Exists,
    #[error(transparent)]
    Repo(#[from] RepoError),
}

#[derive(Clone)]
pub struct ClientRepo {
    store: Arc<dyn ItemStore>,
    integrity: Arc<Integrity>,
}

fn client_pk(id: &ClientId) -> String {
    format!("CLIENT#{id}")
}

fn customer_pk(customer: &CustomerId) -> String {
    format!("CUSTOMER#{customer}")
}

fn jti_pk(jti: &str) -> String {
    format!("JTI#{jti}")
}

fn new_generation() -> String {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).expect("the operating system's random source failed");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn record_attrs(record: &ClientRecord) -> Attrs {
    match serde_json::to_value(record).expect("client record serializes") {
        Value::Object(map) => map,
        _ => unreachable!("a struct serializes to an object"),
    }
}

impl ClientRepo {
    pub fn new(store: Arc<dyn ItemStore>, integrity: Arc<Integrity>) -> Self {
        ClientRepo { store, integrity }
    }

    /// The client record, verified: `Err(RepoError::Integrity)` if it was
    /// forged or altered in the store.
    pub async fn get(&self, id: &ClientId) -> Result<Option<ClientRecord>, RepoError> {
        let Some(item) = self.store.get(Table::Clients, &client_pk(id), CLIENT_SK).await? else {
            return Ok(None);
        };
        let attrs = self.integrity.verified_attrs(Table::Clients, item).await?;
        let record: ClientRecord =
            serde_json::from_value(Value::Object(attrs)).map_err(RepoError::corrupt)?;
        if record.id != *id {
            return Err(RepoError::Integrity(format!("record under {id} names client {}", record.id)));
        }
        Ok(Some(record))
    }

    /// The record as a signed item, ready to write.
    async fn signed_item(&self, record: &ClientRecord) -> Result<Item, RepoError> {
        let mut item = Item::new(client_pk(&record.id), CLIENT_SK, record_attrs(record));
        self.integrity.sign(Table::Clients, &mut item).await?;
        Ok(item)
    }

    /// Creates a client and returns its secret (shown once, never stored).
    pub async fn create(&self, new: NewClient) -> Result<(ClientSecret, ClientRecord), CreateClientError> {
        let chosen = new.id.is_some();
        for _ in 0..5 {
            let secret = ClientSecret::generate();
            let record = ClientRecord {
                id: new.id.clone().unwrap_or_else(ClientId::generate),
                name: new.name.clone(),
                customer: new.customer.clone(),
                tier: new.tier,
                scopes: new.scopes.clone(),
                secret_hash: secret.hash().to_hex(),
                previous_secret_hash: None,
                previous_secret_expires_at: None,
                created_at: now_secs(),
                secret_rotated_at: None,
                token_generation: new_generation(),
                rev: 1,
            };
            match self.store.transact(self.insert_ops(&record).await?).await {
                Ok(()) => return Ok((secret, record)),
                Err(StoreError::ConditionFailed) if chosen => return Err(CreateClientError::Exists),
                Err(StoreError::ConditionFailed) => continue, // generated id collided: draw again
                Err(e) => return Err(RepoError::from(e).into()),
            }
        }
        Err(RepoError::Conflict.into())
    }

    async fn insert_ops(&self, record: &ClientRecord) -> Result<Vec<WriteOp>, RepoError> {
        let reference = Attrs::from_iter([("id".to_string(), json!(record.id))]);
        let put = |item: Item| WriteOp::Put { table: Table::Clients, item, condition: Condition::NotExists };
        Ok(vec![
            put(self.signed_item(record).await?),
            put(Item::new(customer_pk(&record.customer), client_pk(&record.id), reference.clone())),
            put(Item::new(ALL_PK, record.id.to_string(), reference)),
        ])
    }

    /// A page of clients: one customer's, or every client when `None`.
    pub async fn list_page(
        &self,
        customer: Option<&CustomerId>,
        after: Option<String>,
        limit: usize,
    ) -> Result<(Vec<ClientRecord>, Option<String>), RepoError> {
        let (pk, prefix) = match customer {
            Some(c) => (customer_pk(c), "CLIENT#".to_string()),
            None => (ALL_PK.to_string(), String::new()),
        };
        let page =
            self.store.query(Query { table: Table::Clients, pk, sk_prefix: prefix, after, limit }).await?;
        let mut records = Vec::with_capacity(page.items.len());
        for item in &page.items {
            let id = item.attrs.get("id").and_then(Value::as_str).ok_or_else(|| RepoError::corrupt("ref"))?;
            let id = ClientId::parse(id).map_err(RepoError::corrupt)?;
            if let Some(record) = self.get(&id).await? {
                records.push(record);
            }
        }
        Ok((records, page.next))
    }

    /// Deletes a client and its list entries. Its tokens stop working at
    /// once: the authorizer looks the client up for every token.
    pub async fn delete(&self, id: &ClientId) -> Result<bool, RepoError> {
        let Some(record) = self.get(id).await? else {
            return Ok(false);
        };
        let delete =
            |pk: String, sk: String, condition| WriteOp::Delete { table: Table::Clients, pk, sk, condition };
        let ops = vec![
            delete(client_pk(id), CLIENT_SK.into(), Condition::AttrEquals("rev".into(), json!(record.rev))),
            delete(customer_pk(&record.customer), client_pk(id), Condition::Always),
            delete(ALL_PK.into(), id.to_string(), Condition::Always),
        ];
        match self.store.transact(ops).await {
            Ok(()) => Ok(true),
            Err(StoreError::ConditionFailed) => Err(RepoError::Conflict),
            Err(e) => Err(e.into()),
        }
    }

    /// Gives the client a new secret; the old one keeps working for
    /// `grace_secs` (0: stops at once, for a leaked secret).
    pub async fn rotate_secret(
        &self,
        id: &ClientId,
        grace_secs: i64,
    ) -> Result<Option<(ClientSecret, ClientRecord)>, RepoError> {
        for _ in 0..5 {
            let Some(old) = self.get(id).await? else {
                return Ok(None);
            };
            let now = now_secs();
            let secret = ClientSecret::generate();
            let keep_old = grace_secs > 0;
            let record = ClientRecord {
                secret_hash: secret.hash().to_hex(),
                previous_secret_hash: keep_old.then(|| old.secret_hash.clone()),
                previous_secret_expires_at: keep_old.then_some(now + grace_secs),
                secret_rotated_at: Some(now),
                // A leaked secret (no grace) also retires the tokens minted with it.
                token_generation: if keep_old { old.token_generation.clone() } else { new_generation() },
                rev: old.rev + 1,
                ..old.clone()
            };
            let op = WriteOp::Put {
                table: Table::Clients,
                item: self.signed_item(&record).await?,
                condition: Condition::AttrEquals("rev".into(), json!(old.rev)),
            };
            match self.store.transact(vec![op]).await {
                Ok(()) => return Ok(Some((secret, record))),
                Err(StoreError::ConditionFailed) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(RepoError::Conflict)
    }

    /// Marks an access token revoked until `until` (its expiry), after
    /// which the token is dead anyway and the mark expires by TTL.
    pub async fn revoke_token(&self, jti: &str, client: &ClientId, until: i64) -> Result<(), RepoError> {
        let attrs = Attrs::from_iter([
            ("client_id".to_string(), json!(client)),
            ("revoked_at".to_string(), json!(now_secs())),
        ]);
        let mut item = Item::new(jti_pk(jti), REVOKED_SK, attrs);
        item.expires_at = Some(until);
        Ok(self.store.put(Table::Clients, item, Condition::Always).await?)
    }

    pub async fn is_token_revoked(&self, jti: &str) -> Result<bool, RepoError> {
        Ok(self.store.get(Table::Clients, &jti_pk(jti), REVOKED_SK).await?.is_some())
    }
}

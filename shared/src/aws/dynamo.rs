//! The DynamoDB item store: one physical table per logical `Table`.
//!
//! Table design (also in the README and `infra/template.yaml`): partition key
//! `PK` (S), sort key `SK` (S), on-demand capacity, TTL on the Number
//! attribute `TTL` (Unix seconds). An item's attributes are stored as
//! top-level attributes with native types (JSON objects as maps, arrays as
//! lists, numbers as N), so the `ADD` counter and conditions work on them.
//!
//! DynamoDB deletes expired items lazily (hours later), so "expired means
//! absent" is enforced here: reads drop expired items and every condition
//! is written so an expired item counts as absent. Expression text is
//! always fixed; names and values go in `#name` / `:value` placeholders, so
//! reserved words work and no input ever becomes expression text. Reads are
//! strongly consistent: a revoked key must stop working at once.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use aws_config::SdkConfig;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{AttributeValue, Delete, Put, ReturnValue, TransactWriteItem};
use serde_json::{Map, Number, Value};

use super::error::{Failure, classify};
use super::{CallCounters, count};
use crate::clock::now_secs;
use crate::ports::{
    Attrs, Condition, Item, ItemStore, MAX_TRANSACTION_OPS, Page, Query, StoreError, Table, WriteOp,
    parse_scan_cursor, scan_cursor,
};

const PK: &str = "PK";
const SK: &str = "SK";
const TTL: &str = "TTL";
/// Attribute names an item's own attributes may not use.
pub const RESERVED_ATTRIBUTES: [&str; 3] = [PK, SK, TTL];
/// Attempts at a transaction that DynamoDB cancels for a conflicting one.
const TRANSACTION_ATTEMPTS: u32 = 4;

type AttrMap = HashMap<String, AttributeValue>;

/// Physical table names, one per logical table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableNames {
    pub catalog: String,
    pub keys: String,
    pub customers: String,
    pub clients: String,
    pub usage: String,
    pub audit: String,
}

impl TableNames {
    pub fn name(&self, table: Table) -> &str {
        match table {
            Table::Catalog => &self.catalog,
            Table::Keys => &self.keys,
            Table::Customers => &self.customers,
            Table::Clients => &self.clients,
            Table::Usage => &self.usage,
            Table::Audit => &self.audit,
        }
    }
}

#[derive(Clone)]
pub struct DynamoStore {
    client: Client,
    tables: TableNames,
    calls: Arc<CallCounters>,
}

impl DynamoStore {
    pub fn new(sdk: &SdkConfig, tables: TableNames, calls: Arc<CallCounters>) -> Self {
        DynamoStore { client: Client::new(sdk), tables, calls }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    fn count(&self) {
        count(&self.calls.dynamodb);
    }

    fn key(&self, pk: &str, sk: &str) -> AttrMap {
        HashMap::from([(PK.into(), AttributeValue::S(pk.into())), (SK.into(), AttributeValue::S(sk.into()))])
    }
}

// ------------------------------------------------------ value conversion --

fn to_attribute(value: &Value) -> AttributeValue {
    match value {
        Value::Null => AttributeValue::Null(true),
        Value::Bool(b) => AttributeValue::Bool(*b),
        Value::Number(n) => AttributeValue::N(n.to_string()),
        Value::String(s) => AttributeValue::S(s.clone()),
        Value::Array(items) => AttributeValue::L(items.iter().map(to_attribute).collect()),
        Value::Object(map) => {
            AttributeValue::M(map.iter().map(|(k, v)| (k.clone(), to_attribute(v))).collect())
        }
    }
}

fn from_attribute(value: &AttributeValue) -> Result<Value, StoreError> {
    Ok(match value {
        AttributeValue::Null(_) => Value::Null,
        AttributeValue::Bool(b) => Value::Bool(*b),
        AttributeValue::N(text) => Value::Number(parse_number(text)?),
        AttributeValue::S(s) => Value::String(s.clone()),
        AttributeValue::L(items) => Value::Array(items.iter().map(from_attribute).collect::<Result<_, _>>()?),
        AttributeValue::M(map) => Value::Object(
            map.iter()
                .map(|(k, v)| Ok((k.clone(), from_attribute(v)?)))
                .collect::<Result<_, StoreError>>()?,
        ),
        other => return Err(StoreError::Corrupt(format!("unsupported attribute type {other:?}"))),
    })
}

/// DynamoDB numbers are decimal text: integers stay integers.
fn parse_number(text: &str) -> Result<Number, StoreError> {
    if let Ok(i) = text.parse::<i64>() {
        return Ok(Number::from(i));
    }
    if let Ok(u) = text.parse::<u64>() {
        return Ok(Number::from(u));
    }
    text.parse::<f64>()
        .ok()
        .and_then(Number::from_f64)
        .ok_or_else(|| StoreError::Corrupt(format!("number {text:?} out of range")))
}

fn item_to_map(item: &Item) -> Result<AttrMap, StoreError> {
    let mut map = AttrMap::with_capacity(item.attrs.len() + 3);
    for (name, value) in &item.attrs {
        if RESERVED_ATTRIBUTES.contains(&name.as_str()) {
            return Err(StoreError::Invalid(format!("attribute name {name:?} is reserved")));
        }
        map.insert(name.clone(), to_attribute(value));
    }
    map.insert(PK.into(), AttributeValue::S(item.pk.clone()));
    map.insert(SK.into(), AttributeValue::S(item.sk.clone()));
    if let Some(t) = item.expires_at {
        map.insert(TTL.into(), AttributeValue::N(t.to_string()));
    }
    Ok(map)
}

/// The item, or `None` if it has expired (TTL deletion is lazy).
fn map_to_item(mut map: AttrMap, now: i64) -> Result<Option<Item>, StoreError> {
    let text = |v: Option<AttributeValue>, what: &str| match v {
        Some(AttributeValue::S(s)) => Ok(s),
        _ => Err(StoreError::Corrupt(format!("item without a string {what}"))),
    };
    let pk = text(map.remove(PK), PK)?;
    let sk = text(map.remove(SK), SK)?;
    let expires_at = match map.remove(TTL) {
        None => None,
        Some(AttributeValue::N(n)) => {
            Some(n.parse::<i64>().map_err(|_| StoreError::Corrupt("bad TTL".into()))?)
        }
        Some(_) => return Err(StoreError::Corrupt("TTL is not a number".into())),
    };
    if expires_at.is_some_and(|t| t <= now) {
        return Ok(None);
    }
    let attrs: Map<String, Value> =
        map.iter().map(|(k, v)| Ok((k.clone(), from_attribute(v)?))).collect::<Result<_, StoreError>>()?;
    Ok(Some(Item { pk, sk, attrs, expires_at }))
}

// ------------------------------------------------------------ conditions --

/// A condition expression with its placeholders.
#[derive(Default)]
struct Expr {
    text: Option<String>,
    names: HashMap<String, String>,
    values: AttrMap,
}

const LIVE: &str = "(attribute_not_exists(#ttl) OR #ttl > :now)";

fn condition_expr(condition: &Condition, now: i64) -> Result<Expr, StoreError> {
    let mut expr = Expr::default();
    let text = match condition {
        Condition::Always => return Ok(expr),
        Condition::NotExists => "attribute_not_exists(#pk) OR #ttl <= :now".to_string(),
        Condition::Exists => format!("attribute_exists(#pk) AND {LIVE}"),
        Condition::AttrEquals(name, value) => {
            if RESERVED_ATTRIBUTES.contains(&name.as_str()) {
                return Err(StoreError::Invalid(format!("attribute name {name:?} is reserved")));
            }
            expr.names.insert("#a".into(), name.clone());
            expr.values.insert(":v".into(), to_attribute(value));
            format!("attribute_exists(#pk) AND {LIVE} AND #a = :v")
        }
    };
    expr.names.insert("#ttl".into(), TTL.into());
    if text.contains("#pk") {
        expr.names.insert("#pk".into(), PK.into());
    }
    expr.values.insert(":now".into(), AttributeValue::N(now.to_string()));
    expr.text = Some(text);
    Ok(expr)
}

// ------------------------------------------------------------ error maps --

fn unavailable(failure: Failure) -> StoreError {
    match failure {
        Failure::Unavailable(m) => StoreError::Unavailable(m),
        Failure::Service { code, message } => service_error(&code, &message),
    }
}

fn service_error(code: &str, message: &str) -> StoreError {
    match code {
        "ConditionalCheckFailedException" => StoreError::ConditionFailed,
        "ValidationException" | "SerializationException" => StoreError::Invalid(format!("{code}: {message}")),
        // A missing table or a denied call is a deployment problem: fail closed.
        _ => StoreError::Unavailable(format!("{code}: {message}")),
    }
}

// ----------------------------------------------------------------- query --

/// The key condition for a page: a range after `after` when the cursor is
/// inside the prefix's range, else the prefix itself. (DynamoDB cannot
/// combine `begins_with` and `>` on one key, so the prefix's end is found by
/// reading in order and stopping at the first key outside it.)
fn key_condition(query: &Query) -> Expr {
    let mut expr = Expr::default();
    expr.names.insert("#pk".into(), PK.into());
    expr.values.insert(":pk".into(), AttributeValue::S(query.pk.clone()));
    let after = query.after.as_deref().filter(|a| *a >= query.sk_prefix.as_str());
    let text = match after {
        Some(a) => {
            expr.values.insert(":after".into(), AttributeValue::S(a.into()));
            "#pk = :pk AND #sk > :after"
        }
        None if !query.sk_prefix.is_empty() => {
            expr.values.insert(":prefix".into(), AttributeValue::S(query.sk_prefix.clone()));
            "#pk = :pk AND begins_with(#sk, :prefix)"
        }
        None => "#pk = :pk",
    };
    if text.contains("#sk") {
        expr.names.insert("#sk".into(), SK.into());
    }
    expr.text = Some(text.into());
    expr
}

/// Collects up to `want` live items of the prefix, following
/// `LastEvaluatedKey`; the second value says whether the range ended.
async fn collect_live(
    store: &DynamoStore,
    query: &Query,
    want: usize,
) -> Result<(Vec<Item>, bool), StoreError> {
    let condition = key_condition(query);
    let now = now_secs();
    let mut items = Vec::new();
    let mut start: Option<AttrMap> = None;
    loop {
        let page_limit = i32::try_from(want - items.len()).unwrap_or(i32::MAX);
        store.count();
        let out = store
            .client
            .query()
            .table_name(store.tables.name(query.table))
            .set_key_condition_expression(condition.text.clone())
            .set_expression_attribute_names(Some(condition.names.clone()))
            .set_expression_attribute_values(Some(condition.values.clone()))
            .consistent_read(true)
            .limit(page_limit)
            .set_exclusive_start_key(start.take())
            .send()
            .await
            .map_err(|e| unavailable(classify("Query", e)))?;
        for map in out.items.unwrap_or_default() {
            let Some(item) = map_to_item(map, now)? else { continue };
            if !item.sk.starts_with(&query.sk_prefix) {
                return Ok((items, true));
            }
            items.push(item);
            if items.len() == want {
                return Ok((items, false));
            }
        }
        match out.last_evaluated_key {
            Some(key) if !key.is_empty() => start = Some(key),
            _ => return Ok((items, true)),
        }
    }
}

// ------------------------------------------------------------ the adapter --

#[async_trait]
impl ItemStore for DynamoStore {
    async fn get(&self, table: Table, pk: &str, sk: &str) -> Result<Option<Item>, StoreError> {
        self.count();
        let out = self
            .client
            .get_item()
            .table_name(self.tables.name(table))
            .set_key(Some(self.key(pk, sk)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| unavailable(classify("GetItem", e)))?;
        match out.item {
            Some(map) => map_to_item(map, now_secs()),
            None => Ok(None),
        }
    }

    async fn put(&self, table: Table, item: Item, condition: Condition) -> Result<(), StoreError> {
        let expr = condition_expr(&condition, now_secs())?;
        self.count();
        self.client
            .put_item()
            .table_name(self.tables.name(table))
            .set_item(Some(item_to_map(&item)?))
            .set_condition_expression(expr.text)
            .set_expression_attribute_names(non_empty(expr.names))
            .set_expression_attribute_values(non_empty(expr.values))
            .send()
            .await
            .map_err(|e| unavailable(classify("PutItem", e)))?;
        Ok(())
    }

    async fn delete(&self, table: Table, pk: &str, sk: &str, condition: Condition) -> Result<(), StoreError> {
        let expr = condition_expr(&condition, now_secs())?;
        self.count();
        self.client
            .delete_item()
            .table_name(self.tables.name(table))
            .set_key(Some(self.key(pk, sk)))
            .set_condition_expression(expr.text)
            .set_expression_attribute_names(non_empty(expr.names))
            .set_expression_attribute_values(non_empty(expr.values))
            .send()
            .await
            .map_err(|e| unavailable(classify("DeleteItem", e)))?;
        Ok(())
    }

    async fn query(&self, query: Query) -> Result<Page, StoreError> {
        if query.limit == 0 {
            return Err(StoreError::Invalid("query limit must be at least 1".into()));
        }
        // One extra item tells whether another page exists; DynamoDB's
        // `Limit` is an i32, so a huge limit is clamped (never wrapped).
        let limit = query.limit.min(i32::MAX as usize - 1);
        let (mut items, _) = collect_live(self, &query, limit + 1).await?;
        let more = items.len() > limit;
        items.truncate(limit);
        let next = if more { items.last().map(|i| i.sk.clone()) } else { None };
        Ok(Page { items, next })
    }

    /// Scan pages, resumed from the last item returned (any item's key is a
    /// valid `ExclusiveStartKey`); expired items are dropped as on reads.
    async fn scan(&self, table: Table, after: Option<String>, limit: usize) -> Result<Page, StoreError> {
        if limit == 0 {
            return Err(StoreError::Invalid("scan limit must be at least 1".into()));
        }
        let want = limit.min(i32::MAX as usize - 1) + 1;
        let mut start =
            after.as_deref().map(parse_scan_cursor).transpose()?.map(|(pk, sk)| self.key(&pk, &sk));
        let now = now_secs();
        let mut items = Vec::new();
        while items.len() < want {
            self.count();
            let out = self
                .client
                .scan()
                .table_name(self.tables.name(table))
                .consistent_read(true)
                .limit(i32::try_from(want - items.len()).unwrap_or(i32::MAX))
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| unavailable(classify("Scan", e)))?;
            for map in out.items.unwrap_or_default() {
                if let Some(item) = map_to_item(map, now)? {
                    items.push(item);
                }
            }
            match out.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => break,
            }
        }
        let more = items.len() > limit;
        items.truncate(limit);
        let next = if more { items.last().map(scan_cursor) } else { None };
        Ok(Page { items, next })
    }

    async fn add(
        &self,
        table: Table,
        pk: &str,
        sk: &str,
        by: i64,
        max: Option<i64>,
        expires_at: Option<i64>,
    ) -> Result<Option<i64>, StoreError> {
        // One UpdateItem adds to a live counter or creates an absent one (the
        // usual case: one call). Only an expired item that TTL has not yet
        // deleted needs the slow path: read it, then replace it; a lost race
        // with another writer just goes round again.
        for _ in 0..20 {
            if let Some(n) = self.increment(table, pk, sk, by, max, expires_at).await? {
                return Ok(Some(n));
            }
            match self.get(table, pk, sk).await? {
                Some(item) => {
                    let n = item.attrs.get("n").and_then(Value::as_i64).unwrap_or(0);
                    if max.is_some_and(|m| n.saturating_add(by) > m) {
                        return Ok(None);
                    }
                }
                None => {
                    if max.is_some_and(|m| by > m) {
                        return Ok(None);
                    }
                    let attrs = Attrs::from_iter([("n".to_string(), Value::from(by))]);
                    let item = Item { pk: pk.into(), sk: sk.into(), attrs, expires_at };
                    match self.put(table, item, Condition::NotExists).await {
                        Ok(()) => return Ok(Some(by)),
                        Err(StoreError::ConditionFailed) => {}
                        Err(e) => return Err(e),
                    }
                }
            }
        }
        Err(StoreError::Unavailable("counter kept colliding with concurrent updates".into()))
    }

    async fn transact(&self, ops: Vec<WriteOp>) -> Result<(), StoreError> {
        validate_transaction(&ops)?;
        let now = now_secs();
        let items = ops.iter().map(|op| self.transact_item(op, now)).collect::<Result<Vec<_>, _>>()?;
        // One token for every attempt: DynamoDB applies a retried request
        // at most once, so a timeout after success cannot write twice.
        let token = random_token();
        for attempt in 1..=TRANSACTION_ATTEMPTS {
            self.count();
            let sent = self
                .client
                .transact_write_items()
                .set_transact_items(Some(items.clone()))
                .client_request_token(&token)
                .send()
                .await;
            let Err(err) = sent else { return Ok(()) };
            match transaction_failure(err) {
                TxFailure::Conflict if attempt < TRANSACTION_ATTEMPTS => {
                    tokio::time::sleep(std::time::Duration::from_millis(20 << attempt)).await;
                }
                TxFailure::Conflict => {
                    return Err(StoreError::Unavailable("transaction kept conflicting".into()));
                }
                TxFailure::Store(e) => return Err(e),
            }
        }
        Err(StoreError::Unavailable("transaction kept conflicting".into()))
    }
}

impl DynamoStore {
    /// `ADD n :by` on a live item whose counter leaves room; `None` when
    /// the item is absent, expired or full.
    async fn increment(
        &self,
        table: Table,
        pk: &str,
        sk: &str,
        by: i64,
        max: Option<i64>,
        expires_at: Option<i64>,
    ) -> Result<Option<i64>, StoreError> {
        let mut condition = format!("(attribute_not_exists(#pk) OR {LIVE})");
        let mut values = HashMap::from([
            (":by".to_string(), AttributeValue::N(by.to_string())),
            (":now".to_string(), AttributeValue::N(now_secs().to_string())),
        ]);
        // A new counter gets its expiry; a live one keeps the one it has.
        let mut update = "ADD #n :by".to_string();
        if let Some(t) = expires_at {
            update.push_str(" SET #ttl = if_not_exists(#ttl, :ttl)");
            values.insert(":ttl".into(), AttributeValue::N(t.to_string()));
        }
        if let Some(m) = max {
            let Some(room) = m.checked_sub(by) else { return Ok(None) };
            // An absent counter is 0.
            let absent_ok = if room >= 0 { "attribute_not_exists(#n) OR " } else { "" };
            condition.push_str(&format!(" AND ({absent_ok}#n <= :room)"));
            values.insert(":room".into(), AttributeValue::N(room.to_string()));
        }
        let names = HashMap::from([
            ("#pk".to_string(), PK.to_string()),
            ("#ttl".to_string(), TTL.to_string()),
            ("#n".to_string(), "n".to_string()),
        ]);
        self.count();
        let out = self
            .client
            .update_item()
            .table_name(self.tables.name(table))
            .set_key(Some(self.key(pk, sk)))
            .update_expression(update)
            .condition_expression(condition)
            .set_expression_attribute_names(Some(names))
            .set_expression_attribute_values(Some(values))
            .return_values(ReturnValue::AllNew)
            .send()
            .await;
        match out {
            Ok(out) => match out.attributes.as_ref().and_then(|a| a.get("n")) {
                Some(AttributeValue::N(n)) => {
                    n.parse().map(Some).map_err(|_| StoreError::Corrupt("counter is not an integer".into()))
                }
                _ => Err(StoreError::Corrupt("counter missing after update".into())),
            },
            Err(e) => match unavailable(classify("UpdateItem", e)) {
                StoreError::ConditionFailed => Ok(None),
                other => Err(other),
            },
        }
    }

    fn transact_item(&self, op: &WriteOp, now: i64) -> Result<TransactWriteItem, StoreError> {
        let invalid = |e: aws_sdk_dynamodb::error::BuildError| StoreError::Invalid(e.to_string());
        Ok(match op {
            WriteOp::Put { table, item, condition } => {
                let expr = condition_expr(condition, now)?;
                let put = Put::builder()
                    .table_name(self.tables.name(*table))
                    .set_item(Some(item_to_map(item)?))
                    .set_condition_expression(expr.text)
                    .set_expression_attribute_names(non_empty(expr.names))
                    .set_expression_attribute_values(non_empty(expr.values))
                    .build()
                    .map_err(invalid)?;
                TransactWriteItem::builder().put(put).build()
            }
            WriteOp::Delete { table, pk, sk, condition } => {
                let expr = condition_expr(condition, now)?;
                let delete = Delete::builder()
                    .table_name(self.tables.name(*table))
                    .set_key(Some(self.key(pk, sk)))
                    .set_condition_expression(expr.text)
                    .set_expression_attribute_names(non_empty(expr.names))
                    .set_expression_attribute_values(non_empty(expr.values))
                    .build()
                    .map_err(invalid)?;
                TransactWriteItem::builder().delete(delete).build()
            }
        })
    }
}

/// The same checks as the embedded store, before anything is sent.
fn validate_transaction(ops: &[WriteOp]) -> Result<(), StoreError> {
    if ops.is_empty() || ops.len() > MAX_TRANSACTION_OPS {
        return Err(StoreError::Invalid(format!(
            "a transaction needs 1 to {MAX_TRANSACTION_OPS} operations, got {}",
            ops.len()
        )));
    }
    let mut keys = std::collections::HashSet::new();
    for op in ops {
        let key = match op {
            WriteOp::Put { table, item, .. } => (*table, item.pk.as_str(), item.sk.as_str()),
            WriteOp::Delete { table, pk, sk, .. } => (*table, pk.as_str(), sk.as_str()),
        };
        if !keys.insert(key) {
            return Err(StoreError::Invalid("a transaction may touch each item only once".into()));
        }
    }
    Ok(())
}

enum TxFailure {
    /// Another transaction held one of the items: worth another attempt.
    Conflict,
    Store(StoreError),
}

/// Reads a cancelled transaction's reasons: a failed condition anywhere is
/// `ConditionFailed`; a conflict with another transaction is retried.
fn transaction_failure(
    err: aws_sdk_dynamodb::error::SdkError<
        aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError,
        aws_sdk_dynamodb::config::http::HttpResponse,
    >,
) -> TxFailure {
    use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError as E;
    if let Some(E::TransactionCanceledException(e)) = err.as_service_error() {
        let codes: Vec<&str> = e.cancellation_reasons().iter().filter_map(|r| r.code()).collect();
        let message = e.message().unwrap_or_default();
        if codes.contains(&"ConditionalCheckFailed") || message.contains("ConditionalCheckFailed") {
            return TxFailure::Store(StoreError::ConditionFailed);
        }
        if codes.contains(&"TransactionConflict") || message.contains("TransactionConflict") {
            return TxFailure::Conflict;
        }
        if codes.iter().any(|c| c.contains("Throughput") || c.contains("Throttl")) {
            return TxFailure::Store(StoreError::Unavailable(format!("transaction throttled: {codes:?}")));
        }
        return TxFailure::Store(StoreError::Invalid(format!("transaction cancelled: {codes:?} {message}")));
    }
    if let Some(E::TransactionInProgressException(_)) = err.as_service_error() {
        return TxFailure::Conflict;
    }
    TxFailure::Store(unavailable(classify("TransactWriteItems", err)))
}

fn non_empty<K, V>(map: HashMap<K, V>) -> Option<HashMap<K, V>> {
    if map.is_empty() { None } else { Some(map) }
}

fn random_token() -> String {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).expect("OS randomness");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_round_trips_through_attribute_values() {
        let value = json!({"i": i64::MAX, "min": i64::MIN, "u": u64::MAX, "f": -0.25, "s": "", "b": true,
            "null": null, "l": [1, "x", [2.5]], "m": {"k": {"k": []}}});
        assert_eq!(from_attribute(&to_attribute(&value)).unwrap(), value);
    }

    #[test]
    fn conditions_treat_expired_items_as_absent_and_use_placeholders() {
        let expr = condition_expr(&Condition::AttrEquals("status".into(), json!("active")), 100).unwrap();
        assert_eq!(
            expr.text.as_deref(),
            Some("attribute_exists(#pk) AND (attribute_not_exists(#ttl) OR #ttl > :now) AND #a = :v")
        );
        assert_eq!(expr.names["#a"], "status");
        assert_eq!(expr.values[":now"], AttributeValue::N("100".into()));
        let not_exists = condition_expr(&Condition::NotExists, 7).unwrap();
        assert_eq!(not_exists.text.as_deref(), Some("attribute_not_exists(#pk) OR #ttl <= :now"));
        assert!(condition_expr(&Condition::Always, 7).unwrap().text.is_none());
        assert!(matches!(
            condition_expr(&Condition::AttrEquals("TTL".into(), json!(1)), 1),
            Err(StoreError::Invalid(_))
        ));
    }

    #[test]
    fn reserved_attribute_names_are_refused() {
        let item = Item::new("p", "s", json!({"PK": "x"}).as_object().unwrap().clone());
        assert!(matches!(item_to_map(&item), Err(StoreError::Invalid(_))));
    }
}

//! The embedded item store: SQLite (WAL mode) in the data directory.
//!
//! One physical table holds every logical table's items. WAL mode lets the
//! `pharmagate` admin commands write while `pharmagate dev` is serving; every
//! write runs in a `BEGIN IMMEDIATE` transaction so conditions and counters
//! are atomic across processes, not just across threads.

use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use serde_json::Value;

use crate::clock::now_secs;
use crate::ports::{
    Attrs, Condition, Item, ItemStore, MAX_TRANSACTION_OPS, Page, Query, StoreError, Table, WriteOp,
    parse_scan_cursor, scan_cursor,
};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS items (
    tbl TEXT NOT NULL,
    pk TEXT NOT NULL,
    sk TEXT NOT NULL,
    attrs TEXT NOT NULL,
    expires_at INTEGER,
    PRIMARY KEY (tbl, pk, sk)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS secrets (
    secret_id TEXT PRIMARY KEY
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS secret_versions (
    secret_id TEXT NOT NULL,
    version_id TEXT NOT NULL,
    sealed TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (secret_id, version_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS secret_stages (
    secret_id TEXT NOT NULL,
    stage TEXT NOT NULL,
    version_id TEXT NOT NULL,
    PRIMARY KEY (secret_id, stage)
) WITHOUT ROWID;
";
const MAX_IDLE_CONNECTIONS: usize = 8;

/// SQLite-backed `ItemStore`. Cheap to clone.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database file at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        // Owner-only, like the master key: the file holds key hashes and
        // ciphertexts. SQLite gives its -wal and -shm files the same mode.
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| unavailable(format!("{}: {e}", path.display())))?;
        let conn = open_connection(path)?;
        conn.execute_batch(SCHEMA).map_err(unavailable)?;
        let inner = Inner { path: path.to_path_buf(), idle: Mutex::new(vec![conn]) };
        Ok(SqliteStore { inner: Arc::new(inner) })
    }

    /// Runs `work` on a pooled connection on the blocking thread pool.
    pub(crate) async fn with_conn<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let pooled = inner.idle.lock().map_err(|_| unavailable("pool poisoned"))?.pop();
            let mut conn = match pooled {
                Some(conn) => conn,
                None => open_connection(&inner.path)?,
            };
            let result = work(&mut conn);
            if let Ok(mut idle) = inner.idle.lock()
                && idle.len() < MAX_IDLE_CONNECTIONS
            {
                idle.push(conn);
            }
            result
        })
        .await
        .map_err(|e| unavailable(format!("store task failed: {e}")))?
    }
}

fn open_connection(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open(path).map_err(unavailable)?;
    conn.busy_timeout(Duration::from_secs(10)).map_err(unavailable)?;
    // WAL + NORMAL: commits survive a crash of any process; only a power loss
    // can lose the last commits, never corrupt the file.
    conn.execute_batch("PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;").map_err(unavailable)?;
    Ok(conn)
}

pub(crate) fn unavailable(e: impl ToString) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

fn is_live(expires_at: Option<i64>, now: i64) -> bool {
    expires_at.is_none_or(|t| t > now)
}

/// Reads one live row: (attrs JSON, expires_at).
fn read_row(
    conn: &Connection,
    table: Table,
    pk: &str,
    sk: &str,
) -> Result<Option<(String, Option<i64>)>, StoreError> {
    let row = conn
        .query_row(
            "SELECT attrs, expires_at FROM items WHERE tbl = ?1 AND pk = ?2 AND sk = ?3",
            params![table.as_str(), pk, sk],
            |r| Ok((r.get::<_, String>(0)?, r.get::<_, Option<i64>>(1)?)),
        )
        .optional()
        .map_err(unavailable)?;
    Ok(row.filter(|(_, exp)| is_live(*exp, now_secs())))
}

fn parse_attrs(text: &str) -> Result<Attrs, StoreError> {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(StoreError::Corrupt("attributes are not a JSON object".into())),
    }
}

fn check(
    conn: &Connection,
    table: Table,
    pk: &str,
    sk: &str,
    condition: &Condition,
) -> Result<(), StoreError> {
    let holds = match condition {
        Condition::Always => true,
        Condition::NotExists => read_row(conn, table, pk, sk)?.is_none(),
        Condition::Exists => read_row(conn, table, pk, sk)?.is_some(),
        Condition::AttrEquals(name, want) => match read_row(conn, table, pk, sk)? {
            Some((attrs, _)) => parse_attrs(&attrs)?.get(name) == Some(want),
            None => false,
        },
    };
    if holds { Ok(()) } else { Err(StoreError::ConditionFailed) }
}

fn apply(conn: &Connection, op: &WriteOp) -> Result<(), StoreError> {
    match op {
        WriteOp::Put { table, item, condition } => {
            check(conn, *table, &item.pk, &item.sk, condition)?;
            let attrs = Value::Object(item.attrs.clone()).to_string();
            conn.execute(
                "INSERT OR REPLACE INTO items (tbl, pk, sk, attrs, expires_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![table.as_str(), item.pk, item.sk, attrs, item.expires_at],
            )
            .map_err(unavailable)?;
        }
        WriteOp::Delete { table, pk, sk, condition } => {
            check(conn, *table, pk, sk, condition)?;
            conn.execute(
                "DELETE FROM items WHERE tbl = ?1 AND pk = ?2 AND sk = ?3",
                params![table.as_str(), pk, sk],
            )
            .map_err(unavailable)?;
        }
    }
    Ok(())
}

/// Runs `ops` in one immediate transaction: all or nothing.
fn run_transaction(conn: &mut Connection, ops: &[WriteOp]) -> Result<(), StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(unavailable)?;
    for op in ops {
        apply(&tx, op)?; // dropping `tx` on error rolls back
    }
    tx.commit().map_err(unavailable)
}

/// The smallest string greater than every string that starts with `prefix`
/// (for a range scan), or `None` when there is no upper bound.
fn prefix_upper_bound(prefix: &str) -> Option<String> {
    // UTF-8 byte order is code point order, so bumping the last character that
    // has a successor gives the bound; `prefix + char::MAX` would not do, as
    // it sorts before `prefix + char::MAX + "x"`.
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        let next = if last == '\u{d7ff}' { Some('\u{e000}') } else { char::from_u32(last as u32 + 1) };
        if let Some(next) = next {
            chars.push(next);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

#[async_trait]
impl ItemStore for SqliteStore {
    async fn get(&self, table: Table, pk: &str, sk: &str) -> Result<Option<Item>, StoreError> {
        let (pk, sk) = (pk.to_string(), sk.to_string());
        self.with_conn(move |conn| {
            let Some((attrs, expires_at)) = read_row(conn, table, &pk, &sk)? else {
                return Ok(None);
            };
            Ok(Some(Item { pk, sk, attrs: parse_attrs(&attrs)?, expires_at }))
        })
        .await
    }

    async fn put(&self, table: Table, item: Item, condition: Condition) -> Result<(), StoreError> {
        self.transact(vec![WriteOp::Put { table, item, condition }]).await
    }

    async fn delete(&self, table: Table, pk: &str, sk: &str, condition: Condition) -> Result<(), StoreError> {
        let op = WriteOp::Delete { table, pk: pk.to_string(), sk: sk.to_string(), condition };
        self.transact(vec![op]).await
    }

    async fn query(&self, query: Query) -> Result<Page, StoreError> {
        if query.limit == 0 {
            return Err(StoreError::Invalid("query limit must be at least 1".into()));
        }
        self.with_conn(move |conn| {
            let lower = match &query.after {
                Some(after) if after.as_str() >= query.sk_prefix.as_str() => after.clone(),
                _ => query.sk_prefix.clone(),
            };
            let strict = query.after.as_deref() == Some(lower.as_str());
            let upper = prefix_upper_bound(&query.sk_prefix);
            let sql = format!(
                "SELECT sk, attrs, expires_at FROM items WHERE tbl = ?1 AND pk = ?2 AND sk {} ?3 \
                 AND (?4 IS NULL OR sk < ?4) AND (expires_at IS NULL OR expires_at > ?6) \
                 ORDER BY sk LIMIT ?5",
                if strict { ">" } else { ">=" }
            );
            let mut stmt = conn.prepare_cached(&sql).map_err(unavailable)?;
            // One extra row tells whether another page exists.
            // (`as i64` would wrap a huge limit to a negative one.)
            let fetch = i64::try_from(query.limit).unwrap_or(i64::MAX).saturating_add(1);
            // Expired rows are filtered here, not below, so they never take
            // the places of live rows (or of the extra row) in the `LIMIT`.
            let now = now_secs();
            let rows = stmt
                .query_map(params![query.table.as_str(), query.pk, lower, upper, fetch, now], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, Option<i64>>(2)?))
                })
                .map_err(unavailable)?;
            let mut items = Vec::new();
            let mut more = false;
            for row in rows {
                let (sk, attrs, expires_at) = row.map_err(unavailable)?;
                if !sk.starts_with(&query.sk_prefix) {
                    break;
                }
                if items.len() == query.limit {
                    more = true;
                    break;
                }
                if is_live(expires_at, now) {
                    items.push(Item { pk: query.pk.clone(), sk, attrs: parse_attrs(&attrs)?, expires_at });
                }
            }
            let next = if more { items.last().map(|i| i.sk.clone()) } else { None };
            Ok(Page { items, next })
        })
        .await
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
        let (pk, sk) = (pk.to_string(), sk.to_string());
        self.with_conn(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(unavailable)?;
            let current = read_row(&tx, table, &pk, &sk)?;
            let (mut attrs, expiry) = match current {
                Some((text, exp)) => (parse_attrs(&text)?, exp),
                None => (Attrs::new(), expires_at),
            };
            let value = attrs.get("n").and_then(Value::as_i64).unwrap_or(0) + by;
            if max.is_some_and(|m| value > m) {
                return Ok(None);
            }
            attrs.insert("n".into(), Value::from(value));
            let item = Item { pk, sk, attrs, expires_at: expiry };
            apply(&tx, &WriteOp::Put { table, item, condition: Condition::Always })?;
            tx.commit().map_err(unavailable)?;
            Ok(Some(value))
        })
        .await
    }

    async fn scan(&self, table: Table, after: Option<String>, limit: usize) -> Result<Page, StoreError> {
        if limit == 0 {
            return Err(StoreError::Invalid("scan limit must be at least 1".into()));
        }
        let start = after.as_deref().map(parse_scan_cursor).transpose()?;
        self.with_conn(move |conn| {
            let (pk, sk) = start.unzip();
            let mut stmt = conn
                .prepare_cached(
                    "SELECT pk, sk, attrs, expires_at FROM items WHERE tbl = ?1 \
                     AND (?2 IS NULL OR (pk, sk) > (?2, ?3)) AND (expires_at IS NULL OR expires_at > ?4) \
                     ORDER BY pk, sk LIMIT ?5",
                )
                .map_err(unavailable)?;
            let fetch = i64::try_from(limit).unwrap_or(i64::MAX).saturating_add(1);
            let rows = stmt
                .query_map(params![table.as_str(), pk, sk, now_secs(), fetch], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?, r.get(3)?))
                })
                .map_err(unavailable)?;
            let mut items = Vec::new();
            for row in rows {
                let (pk, sk, attrs, expires_at) = row.map_err(unavailable)?;
                items.push(Item { pk, sk, attrs: parse_attrs(&attrs)?, expires_at });
            }
            let more = items.len() > limit;
            items.truncate(limit);
            let next = if more { items.last().map(scan_cursor) } else { None };
            Ok(Page { items, next })
        })
        .await
    }

    /// SQLite has no TTL of its own: expired rows stay (hidden) until this.
    async fn purge_expired(&self, now: i64, limit: usize) -> Result<u64, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.with_conn(move |conn| {
            let removed = conn
                .execute(
                    "DELETE FROM items WHERE (tbl, pk, sk) IN (SELECT tbl, pk, sk FROM items \
                     WHERE expires_at IS NOT NULL AND expires_at <= ?1 LIMIT ?2)",
                    params![now, limit],
                )
                .map_err(unavailable)?;
            Ok(removed as u64)
        })
        .await
    }

    async fn transact(&self, ops: Vec<WriteOp>) -> Result<(), StoreError> {
        if ops.is_empty() || ops.len() > MAX_TRANSACTION_OPS {
            return Err(StoreError::Invalid(format!(
                "a transaction needs 1 to {MAX_TRANSACTION_OPS} operations, got {}",
                ops.len()
            )));
        }
        let mut keys = std::collections::HashSet::new();
        for op in &ops {
            let key = match op {
                WriteOp::Put { table, item, .. } => (*table, item.pk.clone(), item.sk.clone()),
                WriteOp::Delete { table, pk, sk, .. } => (*table, pk.clone(), sk.clone()),
            };
            if !keys.insert(key) {
                return Err(StoreError::Invalid("a transaction may touch each item only once".into()));
            }
        }
        self.with_conn(move |conn| run_transaction(conn, &ops)).await
    }
}

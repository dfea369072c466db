//! The embedded secret store: versions and stages in the SQLite file, each
//! value sealed by the key vault under a context naming the secret and the
//! version (as Secrets Manager encrypts every version under KMS).
//! Version ids follow the port: 1-64 printable ASCII characters, not ending
//! in `_` (what the Secrets Manager adapter can store).
//!
//! Stage moves run in one `BEGIN IMMEDIATE` transaction, so two rotations
//! racing (two processes) cannot leave a stage on two versions.

use std::sync::Arc;

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use zeroize::Zeroizing;

use super::sqlite::unavailable;
use crate::clock::now_secs;
use crate::crypto::{self, Binding, CryptoError};
use crate::embedded::SqliteStore;
use crate::ports::{EncryptionContext, KeyVault, SecretError, SecretStore, SecretVersion, Stage, StoreError};

/// Longest secret value accepted (Secrets Manager's limit).
pub const MAX_SECRET_BYTES: usize = 65_536;

#[derive(Clone)]
pub struct EmbeddedSecrets {
    db: SqliteStore,
    vault: Arc<dyn KeyVault>,
}

impl EmbeddedSecrets {
    pub fn new(db: SqliteStore, vault: Arc<dyn KeyVault>) -> Self {
        EmbeddedSecrets { db, vault }
    }

    async fn open(
        &self,
        secret_id: &str,
        version_id: &str,
        sealed: &str,
    ) -> Result<Zeroizing<String>, SecretError> {
        let bytes = crypto::open(self.vault.as_ref(), &context(secret_id, version_id), sealed)
            .await
            .map_err(|e| match e {
                CryptoError::Unavailable(m) => SecretError::Unavailable(m),
                other => {
                    SecretError::Unavailable(format!("secret {secret_id} version {version_id}: {other}"))
                }
            })?;
        let text = String::from_utf8(bytes.to_vec())
            .map_err(|_| SecretError::Unavailable("secret value is not UTF-8".into()))?;
        Ok(Zeroizing::new(text))
    }

    /// Reads (stages, sealed value) of one version.
    async fn read_version(
        &self,
        secret_id: &str,
        version_id: &str,
    ) -> Result<Option<(Vec<Stage>, String)>, SecretError> {
        let (secret, version) = (secret_id.to_string(), version_id.to_string());
        self.db
            .with_conn(move |conn| {
                require_secret(conn, &secret)?;
                let sealed: Option<String> = conn
                    .query_row(
                        "SELECT sealed FROM secret_versions WHERE secret_id = ?1 AND version_id = ?2",
                        params![secret, version],
                        |r| r.get(0),
                    )
                    .optional()
                    .map_err(unavailable)?;
                let Some(sealed) = sealed else { return Ok(None) };
                Ok(Some((stages_of(conn, &secret, &version)?, sealed)))
            })
            .await
            .map_err(from_store)
    }
}

/// One data key per secret (cached), the version in the associated data.
fn context(secret_id: &str, version_id: &str) -> Binding {
    Binding {
        key_context: EncryptionContext::new([("secret", secret_id)]),
        item: EncryptionContext::new([("version", version_id)]),
    }
}

/// Store errors carry secret-store meaning through `Invalid` / `ConditionFailed`.
fn from_store(e: StoreError) -> SecretError {
    match e {
        StoreError::Invalid(m) if m.starts_with("no such secret") => SecretError::NotFound(m),
        StoreError::Invalid(m) if m.starts_with("conflict: ") => {
            SecretError::Conflict(m["conflict: ".len()..].into())
        }
        StoreError::Invalid(m) => SecretError::Invalid(m),
        StoreError::ConditionFailed => SecretError::Conflict("concurrent change".into()),
        StoreError::Unavailable(m) | StoreError::Corrupt(m) => SecretError::Unavailable(m),
    }
}

/// A secret-store conflict carried through the item store's error type;
/// `from_store` maps it back.
fn conflict(message: String) -> StoreError {
    StoreError::Invalid(format!("conflict: {message}"))
}

fn require_secret(conn: &Connection, secret_id: &str) -> Result<(), StoreError> {
    let found: Option<String> = conn
        .query_row("SELECT secret_id FROM secrets WHERE secret_id = ?1", params![secret_id], |r| r.get(0))
        .optional()
        .map_err(unavailable)?;
    match found {
        Some(_) => Ok(()),
        None => Err(StoreError::Invalid(format!("no such secret: {secret_id}"))),
    }
}

fn stages_of(conn: &Connection, secret_id: &str, version_id: &str) -> Result<Vec<Stage>, StoreError> {
    let mut stmt = conn
        .prepare_cached("SELECT stage FROM secret_stages WHERE secret_id = ?1 AND version_id = ?2")
        .map_err(unavailable)?;
    let rows =
        stmt.query_map(params![secret_id, version_id], |r| r.get::<_, String>(0)).map_err(unavailable)?;
    let mut stages = Vec::new();
    for row in rows {
        let text = row.map_err(unavailable)?;
        stages.push(Stage::parse(&text).ok_or_else(|| StoreError::Corrupt(format!("unknown stage {text}")))?);
    }
    stages.sort();
    Ok(stages)
}

fn holder(conn: &Connection, secret_id: &str, stage: Stage) -> Result<Option<String>, StoreError> {
    conn.query_row(
        "SELECT version_id FROM secret_stages WHERE secret_id = ?1 AND stage = ?2",
        params![secret_id, stage.as_str()],
        |r| r.get(0),
    )
    .optional()
    .map_err(unavailable)
}

/// Puts `stage` on `version_id`, taking it from whichever version holds it;
/// moving `Current` hands `Previous` to the version that was current.
fn attach(conn: &Connection, secret_id: &str, stage: Stage, version_id: &str) -> Result<(), StoreError> {
    let old = holder(conn, secret_id, stage)?;
    if old.as_deref() == Some(version_id) {
        return Ok(());
    }
    conn.execute(
        "INSERT OR REPLACE INTO secret_stages (secret_id, stage, version_id) VALUES (?1, ?2, ?3)",
        params![secret_id, stage.as_str(), version_id],
    )
    .map_err(unavailable)?;
    if stage == Stage::Current
        && let Some(old) = old
    {
        attach(conn, secret_id, Stage::Previous, &old)?;
    }
    Ok(())
}

fn version_exists(conn: &Connection, secret_id: &str, version_id: &str) -> Result<bool, StoreError> {
    let found: Option<i64> = conn
        .query_row(
            "SELECT 1 FROM secret_versions WHERE secret_id = ?1 AND version_id = ?2",
            params![secret_id, version_id],
            |r| r.get(0),
        )
        .optional()
        .map_err(unavailable)?;
    Ok(found.is_some())
}

fn move_in_tx(
    conn: &mut Connection,
    secret_id: &str,
    stage: Stage,
    to: Option<&str>,
    from: Option<&str>,
) -> Result<(), StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(unavailable)?;
    require_secret(&tx, secret_id)?;
    let current = holder(&tx, secret_id, stage)?;
    if current.is_some() && current.as_deref() == to {
        return Ok(()); // already there: a re-run is a no-op
    }
    if let Some(from) = from
        && current.as_deref() != Some(from)
    {
        return Err(conflict(format!("{} is not on version {from}", stage.as_str())));
    }
    if let (Some(holding), None) = (&current, from) {
        return Err(conflict(format!(
            "{} is on version {holding}; name it as the version to move from",
            stage.as_str()
        )));
    }
    match to {
        Some(to) => {
            if !version_exists(&tx, secret_id, to)? {
                return Err(conflict(format!("no version {to}")));
            }
            attach(&tx, secret_id, stage, to)?;
        }
        None => {
            tx.execute(
                "DELETE FROM secret_stages WHERE secret_id = ?1 AND stage = ?2",
                params![secret_id, stage.as_str()],
            )
            .map_err(unavailable)?;
        }
    }
    tx.commit().map_err(unavailable)
}

#[async_trait]
impl SecretStore for EmbeddedSecrets {
    async fn ensure_secret(&self, secret_id: &str) -> Result<(), SecretError> {
        validate_id("secret id", secret_id)?;
        let secret = secret_id.to_string();
        self.db
            .with_conn(move |conn| {
                conn.execute("INSERT OR IGNORE INTO secrets (secret_id) VALUES (?1)", params![secret])
                    .map_err(unavailable)?;
                Ok(())
            })
            .await
            .map_err(from_store)
    }

    async fn get_stage(&self, secret_id: &str, stage: Stage) -> Result<Option<SecretVersion>, SecretError> {
        let secret = secret_id.to_string();
        let found = self
            .db
            .with_conn(move |conn| {
                require_secret(conn, &secret)?;
                let Some(version) = holder(conn, &secret, stage)? else { return Ok(None) };
                let sealed: String = conn
                    .query_row(
                        "SELECT sealed FROM secret_versions WHERE secret_id = ?1 AND version_id = ?2",
                        params![secret, version],
                        |r| r.get(0),
                    )
                    .map_err(unavailable)?;
                Ok(Some((version.clone(), stages_of(conn, &secret, &version)?, sealed)))
            })
            .await
            .map_err(from_store)?;
        let Some((version_id, stages, sealed)) = found else { return Ok(None) };
        let value = self.open(secret_id, &version_id, &sealed).await?;
        Ok(Some(SecretVersion { version_id, stages, value }))
    }

    async fn get_version(
        &self,
        secret_id: &str,
        version_id: &str,
    ) -> Result<Option<SecretVersion>, SecretError> {
        let Some((stages, sealed)) = self.read_version(secret_id, version_id).await? else { return Ok(None) };
        let value = self.open(secret_id, version_id, &sealed).await?;
        Ok(Some(SecretVersion { version_id: version_id.to_string(), stages, value }))
    }

    async fn staged_versions(&self, secret_id: &str) -> Result<Vec<(String, Vec<Stage>)>, SecretError> {
        let secret = secret_id.to_string();
        self.db
            .with_conn(move |conn| {
                require_secret(conn, &secret)?;
                let mut stmt = conn
                    .prepare_cached(
                        "SELECT DISTINCT version_id FROM secret_stages WHERE secret_id = ?1 ORDER BY version_id",
                    )
                    .map_err(unavailable)?;
                let ids: Vec<String> = stmt
                    .query_map(params![secret], |r| r.get(0))
                    .map_err(unavailable)?
                    .collect::<Result<_, _>>()
                    .map_err(unavailable)?;
                ids.into_iter().map(|id| Ok((id.clone(), stages_of(conn, &secret, &id)?))).collect()
            })
            .await
            .map_err(from_store)
    }

    async fn put_version(
        &self,
        secret_id: &str,
        version_id: &str,
        value: &str,
        stages: &[Stage],
    ) -> Result<(), SecretError> {
        validate_id("version id", version_id)?;
        if stages.is_empty() {
            return Err(SecretError::Invalid("a new version needs at least one stage".into()));
        }
        if value.is_empty() || value.len() > MAX_SECRET_BYTES {
            return Err(SecretError::Invalid(format!("a secret value holds 1 to {MAX_SECRET_BYTES} bytes")));
        }
        if let Some((_, sealed)) = self.read_version(secret_id, version_id).await? {
            return self.same_value(secret_id, version_id, &sealed, value).await;
        }
        let sealed = crypto::seal(self.vault.as_ref(), &context(secret_id, version_id), value.as_bytes())
            .await
            .map_err(|e| SecretError::Unavailable(e.to_string()))?;
        let (secret, version, stages) = (secret_id.to_string(), version_id.to_string(), stages.to_vec());
        let inserted = self
            .db
            .with_conn(move |conn| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(unavailable)?;
                require_secret(&tx, &secret)?;
                if version_exists(&tx, &secret, &version)? {
                    return Ok(false);
                }
                tx.execute(
                    "INSERT INTO secret_versions (secret_id, version_id, sealed, created_at) VALUES (?1, ?2, ?3, ?4)",
                    params![secret, version, sealed, now_secs()],
                )
                .map_err(unavailable)?;
                for stage in stages {
                    attach(&tx, &secret, stage, &version)?;
                }
                tx.commit().map_err(unavailable)?;
                Ok(true)
            })
            .await
            .map_err(from_store)?;
        if inserted {
            return Ok(());
        }
        // Another writer put the same version id first: same rule as above.
        match self.read_version(secret_id, version_id).await? {
            Some((_, sealed)) => self.same_value(secret_id, version_id, &sealed, value).await,
            None => Err(SecretError::Conflict("version vanished during put".into())),
        }
    }

    async fn move_stage(
        &self,
        secret_id: &str,
        stage: Stage,
        to: Option<&str>,
        from: Option<&str>,
    ) -> Result<(), SecretError> {
        if to.is_none() && from.is_none() {
            return Err(SecretError::Invalid("name a version to move to or from".into()));
        }
        let (secret, to, from) = (secret_id.to_string(), to.map(String::from), from.map(String::from));
        self.db
            .with_conn(move |conn| move_in_tx(conn, &secret, stage, to.as_deref(), from.as_deref()))
            .await
            .map_err(from_store)
    }
}

impl EmbeddedSecrets {
    async fn same_value(
        &self,
        secret_id: &str,
        version_id: &str,
        sealed: &str,
        value: &str,
    ) -> Result<(), SecretError> {
        let stored = self.open(secret_id, version_id, sealed).await?;
        let same: bool = subtle::ConstantTimeEq::ct_eq(stored.as_bytes(), value.as_bytes()).into();
        if same {
            Ok(())
        } else {
            Err(SecretError::Conflict(format!("version {version_id} already exists with another value")))
        }
    }
}

/// Secret ids: 1-256 printable ASCII characters; version ids: 1-64, not
/// ending in `_` (the Secrets Manager adapter pads short ids with `_` to
/// make its 32-64 character request tokens).
fn validate_id(what: &str, id: &str) -> Result<(), SecretError> {
    let max = if what == "version id" { 64 } else { 256 };
    let ok = (1..=max).contains(&id.len())
        && id.bytes().all(|b| b.is_ascii_graphic())
        && !(what == "version id" && id.ends_with('_'));
    if ok {
        Ok(())
    } else {
        Err(SecretError::Invalid(format!("{what} must be 1-{max} printable ASCII characters")))
    }
}

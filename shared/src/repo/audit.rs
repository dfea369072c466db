//! The audit trail on the item store: one record per request, hash-chained
//! per stream so that an edited, removed or truncated record is detectable.
//!
//! A *stream* is one writer: a function instance (a Lambda execution
//! environment, or one service of `pharmagate dev`). Giving every writer its
//! own chain means concurrent writers never contend for one chain head, and
//! each append is a single transaction through the port:
//!
//! - `STREAM#<stream>` / `SEQ#<seq>`: the record, written only if absent, so a
//!   sequence number is never reused and a chain can never fork;
//! - `STREAM#<stream>` / `HEAD`: the newest sequence number and hash, so a
//!   removed tail is detectable too;
//! - `STREAMS` / `<stream>`: the list of streams `verify` walks (refreshed
//!   daily so it outlives the stream's records);
//! - `DAY#<yyyy-mm-dd>`, `PRINCIPAL#<id>`, `CUSTOMER#<id>` / `<ms>#<stream>#<seq>`:
//!   references for listing by time, principal and customer.
//!
//! Each record holds the hash of its predecessor and the predecessor's expiry
//! time. Records expire (retention TTL) oldest first; a chain whose first
//! records are gone is accepted only if those records were due to expire, so
//! deleting the oldest live records is detected like any other deletion.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::RepoError;
use crate::domain::CustomerId;
use crate::ports::{Attrs, Condition, Item, ItemStore, Query, StoreError, Table, WriteOp};

const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";
const HEAD_SK: &str = "HEAD";
const STREAMS_PK: &str = "STREAMS";
const FORMAT_VERSION: u8 = 1;
const DAY_MS: i64 = 86_400_000;
/// Attempts of one append: conflicts (another writer moved the head) are
/// retried at once, transient store failures a few times with a pause.
const MAX_ATTEMPTS: u32 = 16;
const MAX_TRANSIENT_RETRIES: u32 = 3;
/// How often a stream refreshes its entry in the stream list.
const REGISTRY_REFRESH_SECS: i64 = 86_400;

/// What was decided about a request, from the status it was answered with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    /// Authorized and served (1xx-3xx).
    Allowed,
    /// Authentication or authorization refused it, or it was throttled
    /// (401, 403, 429).
    Denied,
    /// Refused for what it is: unknown route, bad input, too large, too slow
    /// (other 4xx).
    Rejected,
    /// The service failed (5xx).
    Failed,
    /// Not a request: a principal suspended for anomalous behaviour.
    Suspended,
}

impl Decision {
    pub fn for_status(status: u16) -> Decision {
        match status {
            401 | 403 | 429 => Decision::Denied,
            400..=499 => Decision::Rejected,
            500.. => Decision::Failed,
            _ => Decision::Allowed,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Allowed => "allowed",
            Decision::Denied => "denied",
            Decision::Rejected => "rejected",
            Decision::Failed => "failed",
            Decision::Suspended => "suspended",
        }
    }
}

/// One request, as the audit trail keeps it. Field order is the hashed
/// order: do not reorder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditRecord {
    /// When the request arrived, Unix milliseconds.
    pub at_ms: i64,
    /// The gateway's request id.
    pub request_id: String,
    /// Who answered: `authorizer`, `catalog`, `keys`, `oauth`, `audit`, `gateway`.
    pub function: String,
    pub principal: Option<String>,
    pub customer: Option<String>,
    pub role: Option<String>,
    pub source_ip: Option<String>,
    pub method: String,
    /// The route template; `None` when the request named no route.
    pub route: Option<String>,
    pub cas: Option<String>,
    pub decision: Decision,
    /// A reason code: `ok`, a problem type, an authentication failure code.
    pub reason: String,
    pub status: u16,
    pub latency_us: u64,
}

/// A record in its chain, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChainedRecord {
    pub v: u8,
    pub stream: String,
    pub seq: u64,
    pub prev_hash: String,
    /// When the predecessor expires (`None` for the first record).
    pub prev_expires_at: Option<i64>,
    /// When this record expires (Unix seconds).
    pub expires_at: i64,
    pub record: AuditRecord,
    /// SHA-256 (hex) of everything above.
    pub hash: String,
}

/// The hashed content: a `ChainedRecord` without its hash.
#[derive(Serialize)]
struct HashInput<'a> {
    v: u8,
    stream: &'a str,
    seq: u64,
    prev_hash: &'a str,
    prev_expires_at: Option<i64>,
    expires_at: i64,
    record: &'a AuditRecord,
}

impl ChainedRecord {
    /// The hash this record's content should have.
    pub fn content_hash(&self) -> String {
        let input = HashInput {
            v: self.v,
            stream: &self.stream,
            seq: self.seq,
            prev_hash: &self.prev_hash,
            prev_expires_at: self.prev_expires_at,
            expires_at: self.expires_at,
            record: &self.record,
        };
        let bytes = serde_json::to_vec(&input).expect("a record serializes");
        hex(&Sha256::digest(bytes))
    }

    fn to_attrs(&self) -> Attrs {
        match serde_json::to_value(self).expect("a record serializes") {
            Value::Object(map) => map,
            _ => unreachable!("a struct serializes to an object"),
        }
    }

    fn from_attrs(attrs: Attrs) -> Result<Self, String> {
        serde_json::from_value(Value::Object(attrs)).map_err(|e| e.to_string())
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn stream_pk(stream: &str) -> String {
    format!("STREAM#{stream}")
}

fn seq_sk(seq: u64) -> String {
    format!("SEQ#{seq:012}")
}

/// The sort key of every index reference: time order, then stream order.
fn index_sk(at_ms: i64, stream: &str, seq: u64) -> String {
    format!("{:013}#{stream}#{seq:012}", at_ms.max(0))
}

fn day_pk(at_ms: i64) -> String {
    let day = chrono::DateTime::from_timestamp_millis(at_ms).unwrap_or_default();
    format!("DAY#{}", day.format("%Y-%m-%d"))
}

fn principal_pk(principal: &str) -> String {
    format!("PRINCIPAL#{principal}")
}

fn customer_pk(customer: &str) -> String {
    format!("CUSTOMER#{customer}")
}

/// The time in an index sort key.
fn at_of(sk: &str) -> Option<i64> {
    sk.split('#').next()?.parse().ok()
}

/// Where a stream's chain stands: what the next record links to.
#[derive(Debug, Clone)]
struct Head {
    next_seq: u64,
    prev_hash: String,
    prev_expires_at: Option<i64>,
    /// When this writer last refreshed the stream list entry.
    registered_at: Option<i64>,
}

impl Head {
    fn genesis() -> Self {
        Head { next_seq: 1, prev_hash: GENESIS.into(), prev_expires_at: None, registered_at: None }
    }
}

/// A record appended: its place in the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    pub stream: String,
    pub seq: u64,
    pub hash: String,
}

/// The audit trail's storage: append, list, verify.
#[derive(Clone)]
pub struct AuditRepo {
    store: Arc<dyn ItemStore>,
    retention_secs: i64,
}

/// One writer's chain. Appends are serialized (a chain is a sequence), and
/// the head moves only when the store confirmed a write, so a failed write
/// leaves no gap.
pub struct StreamWriter {
    repo: AuditRepo,
    stream: String,
    function: String,
    head: tokio::sync::Mutex<Head>,
}

/// Filters of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditFilter {
    pub principal: Option<String>,
    pub customer: Option<CustomerId>,
    pub from_ms: i64,
    pub to_ms: i64,
}

/// What `verify` found.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VerifyReport {
    pub streams: usize,
    pub records: u64,
    pub index_entries: u64,
    /// The first break of each broken stream, in stream order.
    pub breaks: Vec<Break>,
}

/// Where a chain breaks, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Break {
    pub stream: String,
    pub seq: Option<u64>,
    pub problem: String,
}

impl std::fmt::Display for Break {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.seq {
            Some(seq) => write!(f, "stream {} at seq {seq}: {}", self.stream, self.problem),
            None => write!(f, "stream {}: {}", self.stream, self.problem),
        }
    }
}

impl AuditRepo {
    pub fn new(store: Arc<dyn ItemStore>, retention_secs: i64) -> Self {
        AuditRepo { store, retention_secs }
    }

    pub fn retention_secs(&self) -> i64 {
        self.retention_secs
    }

    /// A writer with a new stream of its own, named after `function`.
    pub fn writer(&self, function: &str) -> StreamWriter {
        let started = chrono::Utc::now().format("%Y%m%dT%H%M%SZ");
        let random = crate::domain::apikey::random_string(crate::domain::apikey::BASE36, 10);
        self.writer_for_stream(function, &format!("{function}-{started}-{random}"))
    }

    /// A writer continuing the named stream (after reading its head).
    pub fn writer_for_stream(&self, function: &str, stream: &str) -> StreamWriter {
        StreamWriter {
            repo: self.clone(),
            stream: stream.to_string(),
            function: function.to_string(),
            head: tokio::sync::Mutex::new(Head::genesis()),
        }
    }

    async fn read_head(&self, stream: &str) -> Result<Option<(u64, String, i64)>, RepoError> {
        let Some(item) = self.store.get(Table::Audit, &stream_pk(stream), HEAD_SK).await? else {
            return Ok(None);
        };
        let seq = item.attrs.get("seq").and_then(Value::as_u64);
        let hash = item.attrs.get("hash").and_then(Value::as_str);
        let expires = item.attrs.get("record_expires_at").and_then(Value::as_i64);
        match (seq, hash, expires) {
            (Some(seq), Some(hash), Some(expires)) => Ok(Some((seq, hash.to_string(), expires))),
            _ => Err(RepoError::corrupt(format!("audit head of stream {stream} is unreadable"))),
        }
    }

    /// The stream ids in the stream list.
    pub async fn streams(&self) -> Result<Vec<String>, RepoError> {
        let mut out = Vec::new();
        let mut after = None;
        loop {
            let query = Query {
                table: Table::Audit,
                pk: STREAMS_PK.into(),
                sk_prefix: String::new(),
                after,
                limit: 100,
            };
            let page = self.store.query(query).await?;
            out.extend(page.items.into_iter().map(|i| i.sk));
            match page.next {
                Some(next) => after = Some(next),
                None => return Ok(out),
            }
        }
    }

    /// One stored record, parsed (not verified).
    pub async fn record(&self, stream: &str, seq: u64) -> Result<Option<ChainedRecord>, RepoError> {
        let Some(item) = self.store.get(Table::Audit, &stream_pk(stream), &seq_sk(seq)).await? else {
            return Ok(None);
        };
        ChainedRecord::from_attrs(item.attrs).map(Some).map_err(RepoError::corrupt)
    }

    /// A page of records matching `filter`, oldest first, and the position
    /// to resume after (an index sort key) when more may follow. By principal
    /// or customer the listing reads that principal's or customer's index;
    /// otherwise the index of each day in the range.
    pub async fn list(
        &self,
        filter: &AuditFilter,
        after: Option<String>,
        limit: usize,
    ) -> Result<(Vec<ChainedRecord>, Option<String>), RepoError> {
        let partitions: Vec<String> = match (&filter.principal, &filter.customer) {
            (Some(p), _) => vec![principal_pk(p)],
            (None, Some(c)) => vec![customer_pk(c.as_str())],
            (None, None) => {
                let start = after.as_deref().and_then(at_of).unwrap_or(filter.from_ms).max(filter.from_ms);
                days_between(start, filter.to_ms)
            }
        };
        let mut out = Vec::new();
        let mut after = after.or_else(|| Some(format!("{:013}", filter.from_ms.max(0))));
        for pk in partitions {
            loop {
                let want = limit - out.len();
                let query = Query {
                    table: Table::Audit,
                    pk: pk.clone(),
                    sk_prefix: String::new(),
                    after: after.clone(),
                    limit: want,
                };
                let page = self.store.query(query).await?;
                for item in page.items {
                    if at_of(&item.sk).is_none_or(|at| at > filter.to_ms) {
                        return Ok((out, None));
                    }
                    after = Some(item.sk.clone());
                    if let Some(record) = self.referenced(&item).await?
                        && matches(filter, &record.record)
                    {
                        out.push(record);
                        if out.len() == limit {
                            return Ok((out, after));
                        }
                    }
                }
                if page.next.is_none() {
                    break;
                }
            }
        }
        Ok((out, None))
    }

    /// The record an index reference points to, if it still exists.
    async fn referenced(&self, item: &Item) -> Result<Option<ChainedRecord>, RepoError> {
        let stream = item.attrs.get("stream").and_then(Value::as_str);
        let seq = item.attrs.get("seq").and_then(Value::as_u64);
        let (Some(stream), Some(seq)) = (stream, seq) else {
            return Err(RepoError::corrupt("audit index entry is unreadable"));
        };
        self.record(stream, seq).await
    }

    /// Checks every chain in the stream list and every day's index over the
    /// retention period; reports the first break of each broken stream.
    pub async fn verify(&self, now_secs: i64) -> Result<VerifyReport, RepoError> {
        let mut report = VerifyReport::default();
        let streams = self.streams().await?;
        report.streams = streams.len();
        for stream in &streams {
            if let Err(b) = self.verify_stream(stream, now_secs, &mut report).await? {
                report.breaks.push(b);
            }
        }
        self.verify_index(&streams, now_secs, &mut report).await?;
        Ok(report)
    }

    /// Walks one chain up to its head. `Ok(Err(break))` for a broken chain.
    async fn verify_stream(
        &self,
        stream: &str,
        now_secs: i64,
        report: &mut VerifyReport,
    ) -> Result<Result<(), Break>, RepoError> {
        let fault =
            |seq: Option<u64>, problem: String| Ok(Err(Break { stream: stream.into(), seq, problem }));
        let head = self.read_head(stream).await?;
        let mut last: Option<ChainedRecord> = None;
        let mut after = None;
        'pages: loop {
            let query = Query {
                table: Table::Audit,
                pk: stream_pk(stream),
                sk_prefix: "SEQ#".into(),
                after,
                limit: 200,
            };
            let page = self.store.query(query).await?;
            for item in page.items {
                let Some(seq) = item.sk.strip_prefix("SEQ#").and_then(|s| s.parse::<u64>().ok()) else {
                    return fault(None, format!("unexpected item {}", item.sk));
                };
                if head.as_ref().is_some_and(|(h, _, _)| seq > *h) {
                    break 'pages; // appended after the head was read
                }
                let record = match ChainedRecord::from_attrs(item.attrs) {
                    Ok(r) => r,
                    Err(e) => return fault(Some(seq), format!("record is unreadable ({e})")),
                };
                if let Err(problem) = check_link(&record, seq, stream, last.as_ref(), now_secs) {
                    return fault(Some(seq), problem);
                }
                report.records += 1;
                last = Some(record);
            }
            match page.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        match (head, last) {
            (None, None) => Ok(Ok(())), // every record expired, and then the head
            (None, Some(last)) => fault(Some(last.seq), "the stream's head is missing".into()),
            // The head expires with the newest record, so a live head means
            // a live record.
            (Some((seq, _, _)), None) => fault(Some(seq), format!("records up to seq {seq} are missing")),
            (Some((seq, hash, _)), Some(last)) if last.seq != seq || last.hash != hash => fault(
                Some(last.seq),
                format!(
                    "the chain ends at seq {} but its head names seq {seq}: records were removed",
                    last.seq
                ),
            ),
            _ => Ok(Ok(())),
        }
    }

    /// Every live index reference must point to an existing record of a
    /// listed stream: this catches a stream removed whole, head included.
    async fn verify_index(
        &self,
        streams: &[String],
        now_secs: i64,
        report: &mut VerifyReport,
    ) -> Result<(), RepoError> {
        let now_ms = now_secs * 1000;
        let from_ms = now_ms - (self.retention_secs + 2 * 86_400) * 1000;
        let listed: HashSet<&String> = streams.iter().collect();
        let mut broken: HashSet<String> = report.breaks.iter().map(|b| b.stream.clone()).collect();
        for pk in days_between(from_ms, now_ms + DAY_MS) {
            let mut after = None;
            loop {
                let query = Query {
                    table: Table::Audit,
                    pk: pk.clone(),
                    sk_prefix: String::new(),
                    after,
                    limit: 500,
                };
                let page = self.store.query(query).await?;
                for item in &page.items {
                    report.index_entries += 1;
                    let stream =
                        item.attrs.get("stream").and_then(Value::as_str).unwrap_or_default().to_string();
                    let seq = item.attrs.get("seq").and_then(Value::as_u64);
                    if broken.contains(&stream) {
                        continue;
                    }
                    let problem = if !listed.contains(&stream) {
                        Some(format!("index entry {pk}/{} names a stream that is not listed", item.sk))
                    } else {
                        match self.referenced(item).await {
                            Ok(Some(r)) if index_sk(r.record.at_ms, &r.stream, r.seq) == item.sk => None,
                            Ok(Some(_)) => {
                                Some(format!("index entry {pk}/{} does not match its record", item.sk))
                            }
                            Ok(None) => {
                                Some(format!("index entry {pk}/{} points to a missing record", item.sk))
                            }
                            Err(RepoError::Corrupt(m)) => Some(format!("index entry {pk}/{}: {m}", item.sk)),
                            Err(e) => return Err(e),
                        }
                    };
                    if let Some(problem) = problem {
                        report.breaks.push(Break { stream: stream.clone(), seq, problem });
                        broken.insert(stream);
                    }
                }
                match page.next {
                    Some(next) => after = Some(next),
                    None => break,
                }
            }
        }
        report.breaks.sort_by(|a, b| a.stream.cmp(&b.stream));
        Ok(())
    }
}

/// Whether `record` is a sound successor of `prev` (or a sound first record).
fn check_link(
    record: &ChainedRecord,
    seq: u64,
    stream: &str,
    prev: Option<&ChainedRecord>,
    now_secs: i64,
) -> Result<(), String> {
    if record.seq != seq || record.stream != stream || record.v != FORMAT_VERSION {
        return Err("record is stored under another stream or sequence number".into());
    }
    if record.content_hash() != record.hash {
        return Err("record was altered: its content does not match its hash".into());
    }
    match prev {
        None if seq == 1 && record.prev_hash == GENESIS => Ok(()),
        None if seq == 1 => Err("the first record does not start the chain".into()),
        // The oldest records may be gone only if they were due to expire.
        None if record.prev_expires_at.is_some_and(|t| t <= now_secs) => Ok(()),
        None => Err(format!("records before seq {seq} are missing but had not expired")),
        Some(prev) if prev.seq + 2 == seq => Err(format!("record {} is missing", prev.seq + 1)),
        Some(prev) if prev.seq + 1 != seq => {
            Err(format!("records {} to {} are missing", prev.seq + 1, seq - 1))
        }
        Some(prev) if record.prev_hash != prev.hash => {
            Err(format!("record does not follow seq {}: its predecessor was replaced", prev.seq))
        }
        Some(_) => Ok(()),
    }
}

fn matches(filter: &AuditFilter, record: &AuditRecord) -> bool {
    let principal_ok = filter.principal.as_ref().is_none_or(|p| record.principal.as_ref() == Some(p));
    let customer_ok = filter.customer.as_ref().is_none_or(|c| record.customer.as_deref() == Some(c.as_str()));
    principal_ok && customer_ok && (filter.from_ms..=filter.to_ms).contains(&record.at_ms)
}

/// The day partitions from `from_ms` to `to_ms`, in order.
fn days_between(from_ms: i64, to_ms: i64) -> Vec<String> {
    let mut out = Vec::new();
    let mut day = from_ms.max(0) - from_ms.max(0).rem_euclid(DAY_MS);
    while day <= to_ms {
        out.push(day_pk(day));
        day += DAY_MS;
    }
    out
}

impl StreamWriter {
    pub fn stream(&self) -> &str {
        &self.stream
    }

    /// Appends `record` to this writer's chain: one transaction, retried on
    /// a transient failure; on a conflict (the head moved: an earlier write
    /// whose answer was lost did commit) the head is read again first.
    pub async fn append(&self, record: AuditRecord) -> Result<Appended, RepoError> {
        let mut head = self.head.lock().await;
        let mut failures = 0u32;
        for _ in 0..MAX_ATTEMPTS {
            let now = crate::clock::now_secs();
            let chained = self.chain(&head, record.clone());
            let register = head.registered_at.is_none_or(|t| now - t >= REGISTRY_REFRESH_SECS);
            let ops = self.ops(&chained, register.then_some(now));
            match self.repo.store.transact(ops).await {
                Ok(()) => {
                    *head = Head {
                        next_seq: chained.seq + 1,
                        prev_hash: chained.hash.clone(),
                        prev_expires_at: Some(chained.expires_at),
                        registered_at: if register { Some(now) } else { head.registered_at },
                    };
                    return Ok(Appended {
                        stream: self.stream.clone(),
                        seq: chained.seq,
                        hash: chained.hash,
                    });
                }
                Err(StoreError::ConditionFailed) => {
                    *head = match self.repo.read_head(&self.stream).await? {
                        Some((seq, hash, expires)) => Head {
                            next_seq: seq + 1,
                            prev_hash: hash,
                            prev_expires_at: Some(expires),
                            registered_at: head.registered_at,
                        },
                        None => Head::genesis(),
                    };
                }
                Err(StoreError::Unavailable(m)) => {
                    failures += 1;
                    if failures > MAX_TRANSIENT_RETRIES {
                        return Err(StoreError::Unavailable(m).into());
                    }
                    tokio::time::sleep(Duration::from_millis(20 << failures)).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(RepoError::Conflict)
    }

    fn chain(&self, head: &Head, record: AuditRecord) -> ChainedRecord {
        let expires_at = record.at_ms.div_euclid(1000) + self.repo.retention_secs;
        let mut chained = ChainedRecord {
            v: FORMAT_VERSION,
            stream: self.stream.clone(),
            seq: head.next_seq,
            prev_hash: head.prev_hash.clone(),
            prev_expires_at: head.prev_expires_at,
            expires_at,
            record,
            hash: String::new(),
        };
        chained.hash = chained.content_hash();
        chained
    }

    /// The writes of one append: the record (only if its place is free), the
    /// head, the index references, and (when due) the stream list entry.
    fn ops(&self, chained: &ChainedRecord, register_at: Option<i64>) -> Vec<WriteOp> {
        let expires = Some(chained.expires_at);
        let put = |item: Item, condition| WriteOp::Put { table: Table::Audit, item, condition };
        let pk = stream_pk(&self.stream);
        let mut record = Item::new(pk.clone(), seq_sk(chained.seq), chained.to_attrs());
        record.expires_at = expires;
        let head_attrs =
            json!({"seq": chained.seq, "hash": chained.hash, "record_expires_at": chained.expires_at});
        let mut head = Item::new(pk, HEAD_SK, object(head_attrs));
        head.expires_at = expires;
        let mut ops = vec![put(record, Condition::NotExists), put(head, Condition::Always)];
        let r = &chained.record;
        let reference = object(json!({"stream": self.stream, "seq": chained.seq}));
        let sk = index_sk(r.at_ms, &self.stream, chained.seq);
        let mut index_pks = vec![day_pk(r.at_ms)];
        index_pks.extend(r.principal.as_deref().map(principal_pk));
        index_pks.extend(r.customer.as_deref().map(customer_pk));
        for index_pk in index_pks {
            let mut item = Item::new(index_pk, sk.clone(), reference.clone());
            item.expires_at = expires;
            ops.push(put(item, Condition::Always));
        }
        if let Some(now) = register_at {
            let attrs = object(json!({"function": self.function, "refreshed_at": now}));
            let mut entry = Item::new(STREAMS_PK, self.stream.clone(), attrs);
            entry.expires_at = Some(now + self.repo.retention_secs + 2 * REGISTRY_REFRESH_SECS);
            ops.push(put(entry, Condition::Always));
        }
        ops
    }
}

fn object(value: Value) -> Attrs {
    match value {
        Value::Object(map) => map,
        _ => Attrs::new(),
    }
}

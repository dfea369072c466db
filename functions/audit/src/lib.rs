//! The audit function: `GET /v1/audit`, the audit trail for administrators
//! (`audit:read`), filtered by principal, customer and time range, oldest
//! first, paged with an opaque cursor.
//!
//! A function of its own so that, in AWS, only it may read the audit table;
//! every other function may only append to it.

use std::collections::HashMap;

use chrono::{DateTime, SecondsFormat};
use http::StatusCode;
use lambda_http::{Body, Request, Response};
use pharmagate_shared::audit::AuditTrail;
use pharmagate_shared::config::Backend;
use pharmagate_shared::cursor;
use pharmagate_shared::domain::CustomerId;
use pharmagate_shared::http::{self as api, Problem};
use pharmagate_shared::limits::Limiter;
use pharmagate_shared::repo::AuditRepo;
use pharmagate_shared::repo::audit::{AuditFilter, ChainedRecord};
use pharmagate_shared::routes::Function;
use serde_json::{Value, json};

pub const DEFAULT_PAGE: usize = 50;
pub const MAX_PAGE: usize = 100;
/// The range listed when `from` is not given: the last day.
pub const DEFAULT_RANGE_MS: i64 = 86_400_000;
const MAX_PRINCIPAL_CHARS: usize = 128;

pub struct AuditService {
    repo: AuditRepo,
    trail: AuditTrail,
    limiter: Limiter,
}

type Outcome = Result<Response<Body>, Problem>;

impl AuditService {
    pub fn new(backend: &Backend) -> Self {
        let retention_secs = backend.settings.audit_retention_days * 86_400;
        AuditService {
            repo: AuditRepo::new(backend.store.clone(), retention_secs),
            trail: AuditTrail::new(backend, "audit"),
            limiter: backend.limiter(),
        }
    }

    /// The Lambda handler. Never fails: every error is a problem response.
    pub async fn handle(&self, req: Request) -> Result<Response<Body>, std::convert::Infallible> {
        let log = api::RequestLog::start(&req, &self.trail);
        let outcome = log.serve(self.route(&req)).await;
        Ok(log.finish(outcome).await)
    }

    async fn route(&self, req: &Request) -> Outcome {
        let routed = api::route_request(req, Function::Audit)?;
        let admission = api::admit(&self.limiter, &routed).await?;
        routed.principal.as_ref().ok_or_else(Problem::unauthorized)?;
        let outcome = match (routed.route.method, routed.route.path) {
            ("GET", "/v1/audit") => self.list(&routed.query).await,
            _ => Err(Problem::not_found("no such resource")),
        };
        admission.apply(outcome)
    }

    async fn list(&self, query: &HashMap<String, String>) -> Outcome {
        let limit = api::page_limit(query, DEFAULT_PAGE, MAX_PAGE)?;
        let principal = query.get("principal").map(|p| principal_filter(p)).transpose()?;
        let customer = query.get("customer").map(|c| CustomerId::parse(c)).transpose();
        let customer = customer.map_err(|m| Problem::validation("customer", m))?;
        // A listing's pages share one time range: the first page fixes it
        // and the cursor carries it.
        let scope = format!(
            "audit:{}:{}:{}:{}",
            principal.as_deref().unwrap_or("*"),
            customer.as_ref().map_or("*", |c| c.as_str()),
            query.get("from").map_or("", String::as_str),
            query.get("to").map_or("", String::as_str),
        );
        let (from_ms, to_ms, after) = match query.get("cursor") {
            Some(text) => resume(&cursor::decode(&scope, text)?)?,
            None => {
                let (from_ms, to_ms) = self.range(query)?;
                (from_ms, to_ms, None)
            }
        };
        // Cursors are not signed: a made-up one must not widen the range.
        let (from_ms, to_ms) = self.clamp(from_ms, to_ms);
        let filter = AuditFilter { principal, customer, from_ms, to_ms };
        let (records, next) = self.repo.list(&filter, after, limit).await?;
        let items: Vec<Value> = records.iter().map(record_view).collect();
        let next = next.map(|sk| cursor::encode(&scope, &format!("{from_ms}|{to_ms}|{sk}")));
        Ok(api::json_response(
            StatusCode::OK,
            &json!({ "items": items, "limit": limit, "next_cursor": next }),
        ))
    }

    /// `from` and `to` as Unix milliseconds: the last day by default, never
    /// reaching back further than records are kept.
    fn range(&self, query: &HashMap<String, String>) -> Result<(i64, i64), Problem> {
        let now_ms = chrono::Utc::now().timestamp_millis();
        let to_ms = query.get("to").map(|t| timestamp("to", t)).transpose()?.unwrap_or(now_ms);
        let from_ms = query.get("from").map(|t| timestamp("from", t)).transpose()?;
        let from_ms = from_ms.unwrap_or(to_ms - DEFAULT_RANGE_MS);
        if from_ms > to_ms {
            return Err(Problem::validation("from", "must not be later than to"));
        }
        Ok(self.clamp(from_ms, to_ms))
    }

    /// A range within what can exist: no older than retention, no later than
    /// tomorrow (every day in between is one query).
    fn clamp(&self, from_ms: i64, to_ms: i64) -> (i64, i64) {
        let now_ms = chrono::Utc::now().timestamp_millis();
        let oldest = now_ms - (self.repo.retention_secs() + 86_400) * 1000;
        let latest = now_ms + 86_400_000;
        (from_ms.clamp(oldest, latest), to_ms.clamp(oldest, latest))
    }
}

/// A principal id as the trail keeps it: an API key id or an OAuth client id.
fn principal_filter(text: &str) -> Result<String, Problem> {
    let ok =
        (1..=MAX_PRINCIPAL_CHARS).contains(&text.len()) && text.bytes().all(|b| (0x20..0x7f).contains(&b));
    if ok {
        Ok(text.to_string())
    } else {
        Err(Problem::validation(
            "principal",
            format!("must be 1-{MAX_PRINCIPAL_CHARS} characters of visible ASCII"),
        ))
    }
}

fn timestamp(field: &str, text: &str) -> Result<i64, Problem> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.timestamp_millis())
        .map_err(|_| Problem::validation(field, "must be an RFC 3339 time such as 2026-08-21T09:30:00Z"))
}

/// The range and position a cursor carries.
fn resume(text: &str) -> Result<(i64, i64, Option<String>), Problem> {
    let invalid =
        || Problem::validation("cursor", "not a cursor returned by this listing with the same filters");
    let mut parts = text.splitn(3, '|');
    let (Some(from), Some(to), Some(after)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(invalid());
    };
    let from = from.parse().map_err(|_| invalid())?;
    let to = to.parse().map_err(|_| invalid())?;
    Ok((from, to, Some(after.to_string())))
}

/// A record as the API shows it.
pub fn record_view(chained: &ChainedRecord) -> Value {
    let r = &chained.record;
    let time = DateTime::from_timestamp_millis(r.at_ms)
        .map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true))
        .unwrap_or_default();
    json!({
        "time": time,
        "request_id": r.request_id,
        "function": r.function,
        "principal": r.principal,
        "customer": r.customer,
        "role": r.role,
        "source_ip": r.source_ip,
        "method": r.method,
        "route": r.route,
        "cas": r.cas,
        "decision": r.decision,
        "reason": r.reason,
        "status": r.status,
        "latency_ms": r.latency_us as f64 / 1000.0,
        "stream": chained.stream,
        "seq": chained.seq,
        "hash": chained.hash,
    })
}

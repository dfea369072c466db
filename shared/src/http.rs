//! HTTP conventions every function follows: RFC 9457 problem responses,
//! security headers, strict JSON bodies and query strings, and reading the
//! principal that the authorizer put in the request context.

use std::collections::HashMap;
use std::sync::Arc;

use http::{HeaderMap, HeaderValue, StatusCode, header};
use lambda_http::request::RequestContext;
use lambda_http::{Body, Request, RequestExt, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use tracing::Instrument;

use crate::audit::AuditTrail;
use crate::domain::{Cas, CustomerId, Principal, Role, Tier};
use crate::limits::{self, Limiter};
use crate::metrics::{self, Counters, RequestMetrics};
use crate::repo::RepoError;
use crate::repo::audit::{AuditRecord, Decision};
use crate::routes::{Access, Function, Params, Route, RouteMatch, match_route};
use crate::telemetry;

pub const PROBLEM_TYPE_PREFIX: &str = "urn:pharmagate:problem:";
pub const PROBLEM_CONTENT_TYPE: &str = "application/problem+json";
pub const UNAUTHORIZED_DETAIL: &str =
    "a valid API key (x-api-key header) or OAuth access token (Authorization: Bearer) is required";

/// An RFC 9457 problem: the only error shape the API ever returns.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    pub status: StatusCode,
    /// Short machine-readable name; the `type` is `urn:pharmagate:problem:<slug>`.
    pub slug: &'static str,
    pub title: &'static str,
    pub detail: Option<String>,
    /// The request field at fault, for validation problems.
    pub field: Option<String>,
    pub headers: Vec<(header::HeaderName, String)>,
}

impl Problem {
    pub fn new(status: StatusCode, slug: &'static str, title: &'static str) -> Self {
        Problem { status, slug, title, detail: None, field: None, headers: Vec::new() }
    }

    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    pub fn field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    pub fn header(mut self, name: header::HeaderName, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    pub fn bad_request(slug: &'static str, detail: impl Into<String>) -> Self {
        Problem::new(StatusCode::BAD_REQUEST, slug, "Bad request").detail(detail)
    }

    pub fn validation(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Problem::new(StatusCode::BAD_REQUEST, "validation", "Invalid request").field(field).detail(detail)
    }

    pub fn unauthorized() -> Self {
        Problem::new(StatusCode::UNAUTHORIZED, "unauthorized", "Unauthorized")
            .detail(UNAUTHORIZED_DETAIL)
            .header(header::WWW_AUTHENTICATE, "ApiKey realm=\"pharmagate\", header=\"x-api-key\"")
            .header(header::WWW_AUTHENTICATE, "Bearer realm=\"pharmagate\"")
    }

    pub fn forbidden(detail: impl Into<String>) -> Self {
        Problem::new(StatusCode::FORBIDDEN, "forbidden", "Forbidden").detail(detail)
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Problem::new(StatusCode::NOT_FOUND, "not-found", "Not found").detail(detail)
    }

    pub fn method_not_allowed(allowed: &[&str]) -> Self {
        Problem::new(StatusCode::METHOD_NOT_ALLOWED, "method-not-allowed", "Method not allowed")
            .detail(format!("this resource supports {}", allowed.join(", ")))
            .header(header::ALLOW, allowed.join(", "))
    }

    pub fn payload_too_large(max_bytes: usize) -> Self {
        Problem::new(StatusCode::PAYLOAD_TOO_LARGE, "payload-too-large", "Payload too large")
            .detail(format!("request bodies are limited to {max_bytes} bytes"))
    }

    pub fn unsupported_media_type() -> Self {
        Problem::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported-media-type", "Unsupported media type")
            .detail("send the body as application/json")
    }

    pub fn conflict(slug: &'static str, detail: impl Into<String>) -> Self {
        Problem::new(StatusCode::CONFLICT, slug, "Conflict").detail(detail)
    }

    /// Over the rate limit or the daily quota.
    pub fn rate_limited(retry_after: u64) -> Self {
        Problem::new(StatusCode::TOO_MANY_REQUESTS, "rate-limited", "Too many requests")
            .detail(format!("rate limit or daily quota exceeded; retry in {retry_after} s"))
            .header(header::RETRY_AFTER, retry_after.to_string())
    }

    /// Too many failed authentications from this source or for this key.
    pub fn too_many_failures(retry_after: u64) -> Self {
        Problem::new(StatusCode::TOO_MANY_REQUESTS, "too-many-failures", "Too many requests")
            .detail(format!("too many failed authentications; retry in {retry_after} s"))
            .header(header::RETRY_AFTER, retry_after.to_string())
    }

    /// A backend (store, vault) is unavailable: fail closed, ask to retry.
    pub fn unavailable() -> Self {
        Problem::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "Service unavailable")
            .detail("a backend service is unavailable; retry later")
            .header(header::RETRY_AFTER, "5")
    }

    /// Anything unexpected. Details go to the log, never to the caller.
    pub fn internal() -> Self {
        Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "Internal error")
            .detail("the request could not be completed")
    }

    pub fn type_uri(&self) -> String {
        format!("{PROBLEM_TYPE_PREFIX}{}", self.slug)
    }

    pub fn to_response(&self, request_id: Option<&str>) -> Response<Body> {
        let mut body = json!({
            "type": self.type_uri(),
            "title": self.title,
            "status": self.status.as_u16(),
        });
        if let Some(detail) = &self.detail {
            body["detail"] = json!(detail);
        }
        if let Some(field) = &self.field {
            body["field"] = json!(field);
        }
        if let Some(id) = request_id {
            body["request_id"] = json!(id);
        }
        let mut response = raw_response(self.status, PROBLEM_CONTENT_TYPE, body.to_string());
        for (name, value) in &self.headers {
            if let Ok(v) = HeaderValue::from_str(value) {
                response.headers_mut().append(name.clone(), v);
            }
        }
        response
    }
}

/// Headers on every response, success or error.
pub fn apply_security_headers(headers: &mut HeaderMap) {
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(
        header::STRICT_TRANSPORT_SECURITY,
        HeaderValue::from_static("max-age=63072000; includeSubDomains"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; frame-ancestors 'none'"),
    );
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
}

fn raw_response(status: StatusCode, content_type: &'static str, body: String) -> Response<Body> {
    let mut response = Response::new(Body::Text(body));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    apply_security_headers(response.headers_mut());
    response
}

pub fn json_response(status: StatusCode, body: &impl Serialize) -> Response<Body> {
    let text = serde_json::to_string(body).unwrap_or_else(|_| "{}".into());
    raw_response(status, "application/json", text)
}

pub fn empty_response(status: StatusCode) -> Response<Body> {
    let mut response = Response::new(Body::Empty);
    *response.status_mut() = status;
    apply_security_headers(response.headers_mut());
    response
}

/// A method is client input: records keep a token of sane length.
const MAX_METHOD_CHARS: usize = 16;

/// What the audit record and the log line say about a request, known when
/// it arrives: the functions read it from the proxy event, the authorizer
/// from its event, the local gateway from the connection.
#[derive(Debug, Clone, Default)]
pub struct RequestFacts {
    /// The gateway's request id.
    pub request_id: Option<String>,
    /// The Lambda invocation's request id (locally, the gateway's).
    pub lambda_request_id: Option<String>,
    pub method: String,
    /// The route the request names, if any.
    pub route: Option<&'static Route>,
    pub principal: Option<Principal>,
    pub source_ip: Option<String>,
    /// The product concerned, from the path or a `cas` query.
    pub cas: Option<Cas>,
}

impl RequestFacts {
    /// The facts of a proxy event; the principal as the authorizer described it.
    pub fn of(req: &Request) -> Self {
        let method = req.method().as_str();
        let (route, params) = match match_route(method, &route_path(req)) {
            RouteMatch::Found(route, params) => (Some(route), params),
            _ => (None, Vec::new()),
        };
        let source_ip = match req.request_context_ref() {
            Some(RequestContext::ApiGatewayV1(ctx)) => ctx.identity.source_ip.clone(),
            _ => None,
        };
        let query = req.query_string_parameters();
        let cas_text =
            params.iter().find(|(n, _)| *n == "cas").map(|(_, v)| v.as_str()).or(query.first("cas"));
        RequestFacts {
            request_id: request_id(req),
            lambda_request_id: req.lambda_context_ref().map(|c| c.request_id.clone()),
            method: method.chars().take(MAX_METHOD_CHARS).collect(),
            route,
            principal: principal(req).ok(),
            source_ip,
            cas: cas_text.and_then(|t| Cas::parse(t).ok()),
        }
    }

    /// The facts of a request to `method` and `path` (a route path without
    /// stage), for answers made outside a function.
    pub fn for_path(method: &str, path: &str) -> Self {
        let (route, cas) = match match_route(method, path) {
            RouteMatch::Found(route, params) => {
                let cas = params.iter().find(|(n, _)| *n == "cas").and_then(|(_, v)| Cas::parse(v).ok());
                (Some(route), cas)
            }
            _ => (None, None),
        };
        let method: String = method.chars().take(MAX_METHOD_CHARS).collect();
        RequestFacts { method, route, cas, ..RequestFacts::default() }
    }
}

/// What a handler knows that the request did not say, attached to its
/// response (in the extensions, never sent): who the caller turned out to be
/// (OAuth clients authenticate inside the function) or a finer reason code.
#[derive(Debug, Clone, Default)]
pub struct AuditNote {
    pub principal: Option<Principal>,
    pub reason: Option<&'static str>,
}

impl AuditNote {
    pub fn attach(self, response: &mut Response<Body>) {
        response.extensions_mut().insert(self);
    }
}

/// One request seen through: the span its work runs in (every line names the
/// request ids), then one audit record, one metric line and one log line
/// when it is answered. Every function, the authorizer and the local gateway
/// use it for the requests they answer.
pub struct RequestLog {
    started: std::time::Instant,
    arrived_ms: i64,
    facts: RequestFacts,
    trail: AuditTrail,
    span: tracing::Span,
    counters: Arc<Counters>,
}

impl RequestLog {
    /// For a lambda_http function's request.
    pub fn start(req: &Request, trail: &AuditTrail) -> Self {
        RequestLog::begin(RequestFacts::of(req), trail)
    }

    pub fn begin(facts: RequestFacts, trail: &AuditTrail) -> Self {
        let lambda_id = facts.lambda_request_id.as_deref().unwrap_or("-");
        let span = telemetry::request_span(facts.request_id.as_deref(), lambda_id);
        RequestLog {
            started: std::time::Instant::now(),
            arrived_ms: chrono::Utc::now().timestamp_millis(),
            facts,
            trail: trail.clone(),
            span,
            counters: Arc::new(Counters::default()),
        }
    }

    pub fn facts(&self) -> &RequestFacts {
        &self.facts
    }

    /// Names the principal once authentication found it (the authorizer).
    pub fn set_principal(&mut self, principal: Principal) {
        self.facts.principal = Some(principal);
    }

    /// Runs the handler's work in the request's span, counting backend
    /// failures against the request.
    pub async fn serve<F: std::future::Future>(&self, work: F) -> F::Output {
        metrics::counting(self.counters.clone(), work).instrument(self.span.clone()).await
    }

    /// Turns a router's outcome into the response (a problem carries the
    /// request id), audits and logs it.
    pub async fn finish(mut self, outcome: Result<Response<Body>, Problem>) -> Response<Body> {
        let (response, reason) = match outcome {
            Ok(response) => {
                let note = response.extensions().get::<AuditNote>().cloned().unwrap_or_default();
                if let Some(principal) = note.principal {
                    self.facts.principal = Some(principal);
                }
                let reason =
                    note.reason.unwrap_or(if response.status().as_u16() < 400 { "ok" } else { "refused" });
                (response, reason)
            }
            Err(problem) => (problem.to_response(self.facts.request_id.as_deref()), problem.slug),
        };
        self.conclude(response.status(), reason, Audit::Record).await;
        response
    }

    /// Audits (or, for an answer another hop audits, only logs and measures)
    /// an answer that is not a function's response: the authorizer's
    /// decision, the gateway's own refusals.
    pub async fn conclude(self, status: StatusCode, reason: &str, audit: Audit) {
        let span = self.span.clone();
        self.record(status.as_u16(), reason, audit).instrument(span).await
    }

    async fn record(self, status: u16, reason: &str, audit: Audit) {
        let latency = self.started.elapsed();
        let function = self.trail.function();
        let facts = &self.facts;
        let route = facts.route.map_or_else(|| "unmatched".to_string(), Route::name);
        let latency_ms = latency.as_secs_f64() * 1000.0;
        let mut measured =
            RequestMetrics::new(function, route.clone(), status, latency_ms).with_counters(&self.counters);
        if status == 401 {
            measured.auth_failure = Some(reason.to_string());
        }
        let record = AuditRecord {
            at_ms: self.arrived_ms,
            request_id: facts.request_id.clone().unwrap_or_else(|| "-".into()),
            function: function.to_string(),
            principal: facts.principal.as_ref().map(|p| p.id.clone()),
            customer: facts.principal.as_ref().map(|p| p.customer.to_string()),
            role: facts.principal.as_ref().map(|p| p.role.as_str().to_string()),
            source_ip: facts.source_ip.clone(),
            method: facts.method.clone(),
            route: facts.route.map(|r| r.path.to_string()),
            cas: facts.cas.map(|c| c.to_string()),
            decision: Decision::for_status(status),
            reason: reason.to_string(),
            status,
            latency_us: u64::try_from(latency.as_micros()).unwrap_or(u64::MAX),
        };
        let appended = match audit {
            Audit::Record => self.trail.record(record.clone(), measured).await,
            Audit::ByAnotherHop => {
                self.trail.measure(measured, &record.request_id);
                None
            }
        };
        // The record's place and hash in the log too: a copy of the chain
        // outside the store, to compare with if the store itself is doubted.
        let (stream, seq, hash) = match &appended {
            Some(a) => (Some(a.stream.as_str()), Some(a.seq), Some(&a.hash[..16])),
            None => (None, None, None),
        };
        tracing::info!(
            function,
            method = %record.method,
            route = %route,
            status,
            decision = record.decision.as_str(),
            reason = %record.reason,
            principal = record.principal.as_deref().unwrap_or("-"),
            latency_us = record.latency_us,
            audit_stream = stream,
            audit_seq = seq,
            audit_hash = hash,
            "request"
        );
    }
}

/// Whether a hop writes the audit record of a request it answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Audit {
    Record,
    /// Another hop will (the authorizer's allow: the function records it).
    ByAnotherHop,
}

/// The caller's address as the gateway saw it (`requestContext.identity`),
/// never a header the client could set.
pub fn source_ip(req: &Request) -> Option<String> {
    match req.request_context_ref() {
        Some(RequestContext::ApiGatewayV1(ctx)) => ctx.identity.source_ip.clone(),
        _ => None,
    }
}

/// The gateway's request id, for logs and problem bodies.
pub fn request_id(req: &Request) -> Option<String> {
    match req.request_context_ref() {
        Some(RequestContext::ApiGatewayV1(ctx)) => ctx.request_id.clone(),
        _ => None,
    }
}

/// The route path without the stage prefix. lambda_http puts the stage in
/// the URI unless `AWS_LAMBDA_HTTP_IGNORE_STAGE_IN_PATH` is set, and some
/// events (custom domains, test consoles) carry it in `path` itself; so the
/// raw path is used as is when it names a route, and with a leading
/// `/<stage>` removed otherwise (a stage may be called `v1`, too).
pub fn route_path(req: &Request) -> String {
    let raw = match req.raw_http_path() {
        "" => req.uri().path(),
        raw => raw,
    };
    let stage = match req.request_context_ref() {
        Some(RequestContext::ApiGatewayV1(ctx)) => ctx.stage.as_deref(),
        _ => None,
    };
    crate::routes::without_stage(req.method().as_str(), raw, stage).to_string()
}

/// A request matched to one of a function's routes.
pub struct Routed {
    pub route: &'static Route,
    pub params: Params,
    pub query: HashMap<String, String>,
    /// Present on every protected route; `None` on public ones.
    pub principal: Option<Principal>,
}

/// The one entry check of every function: the request must name one of
/// `function`'s routes (404, or 405 with `Allow`); on a protected route the
/// authorizer's principal must be present (401) and allowed (403) — checked
/// again here, never trusted from the gateway alone; and the query string
/// must hold only the route's parameters (400).
pub fn route_request(req: &Request, function: Function) -> Result<Routed, Problem> {
    let path = route_path(req);
    let (route, params) = match match_route(req.method().as_str(), &path) {
        RouteMatch::Found(route, params) if route.function == function => (route, params),
        RouteMatch::MethodNotAllowed(allowed) => return Err(Problem::method_not_allowed(&allowed)),
        _ => return Err(Problem::not_found("no such resource")),
    };
    let principal = match route.access {
        Access::Public => None,
        Access::AnyOf(_) | Access::Authenticated => {
            refuse_if_throttled(req)?;
            let principal = principal(req)?;
            if !route.allows(&principal) {
                return Err(Problem::forbidden("your role does not allow this operation"));
            }
            Some(principal)
        }
    };
    let query = query_params(req, route.query)?;
    Ok(Routed { route, params, query, principal })
}

/// The authorizer lets a source that keeps failing authentication through
/// with `throttled` instead of a principal (API Gateway has no way for an
/// authorizer to answer 429); the function answers 429 before any work.
fn refuse_if_throttled(req: &Request) -> Result<(), Problem> {
    let Some(RequestContext::ApiGatewayV1(ctx)) = req.request_context_ref() else {
        return Ok(());
    };
    let Some(retry) = ctx.authorizer.fields.get(THROTTLED_CONTEXT_KEY) else {
        return Ok(());
    };
    let seconds = retry.as_str().and_then(|s| s.parse::<u64>().ok()).unwrap_or(60);
    Err(Problem::too_many_failures(seconds))
}

/// The authorizer context key that carries a brute-force block (seconds).
pub const THROTTLED_CONTEXT_KEY: &str = "throttled_retry_after";

/// A protected request counted against its principal's limits; its
/// `RateLimit-Policy` and `RateLimit` headers go on the response, success or
/// problem.
pub struct Admission(Option<(String, String)>);

/// Counts the request (its route's cost) against the principal's rate and
/// daily quota: 429 with `Retry-After` when over. Public routes are not
/// counted.
pub async fn admit(limiter: &Limiter, routed: &Routed) -> Result<Admission, Problem> {
    let Some(principal) = &routed.principal else { return Ok(Admission(None)) };
    match limiter.admit(principal, routed.route.cost).await? {
        limits::Decision::Admitted(usage) => Ok(Admission(usage.headers())),
        limits::Decision::Limited { usage, retry_after } => {
            let problem = Problem::rate_limited(retry_after);
            Err(Admission(usage.headers()).decorate(problem))
        }
    }
}

impl Admission {
    pub fn apply(&self, outcome: Result<Response<Body>, Problem>) -> Result<Response<Body>, Problem> {
        let Some((policy, state)) = &self.0 else { return outcome };
        match outcome {
            Ok(mut response) => {
                for (name, value) in [(RATELIMIT_POLICY, policy), (RATELIMIT, state)] {
                    if let Ok(v) = HeaderValue::from_str(value) {
                        response.headers_mut().insert(name, v);
                    }
                }
                Ok(response)
            }
            Err(problem) => Err(self.decorate(problem)),
        }
    }

    fn decorate(&self, problem: Problem) -> Problem {
        match &self.0 {
            Some((policy, state)) => problem
                .header(header::HeaderName::from_static(RATELIMIT_POLICY), policy.clone())
                .header(header::HeaderName::from_static(RATELIMIT), state.clone()),
            None => problem,
        }
    }
}

pub const RATELIMIT_POLICY: &str = "ratelimit-policy";
pub const RATELIMIT: &str = "ratelimit";

/// The principal the authorizer described in `requestContext.authorizer`.
/// Anything missing or malformed is a 401: never a default identity.
pub fn principal(req: &Request) -> Result<Principal, Problem> {
    let Some(RequestContext::ApiGatewayV1(ctx)) = req.request_context_ref() else {
        return Err(Problem::unauthorized());
    };
    let fields = &ctx.authorizer.fields;
    let text = |name: &str| fields.get(name).and_then(|v| v.as_str()).ok_or_else(Problem::unauthorized);
    let id = text("principal")?;
    if id.is_empty() {
        return Err(Problem::unauthorized());
    }
    Ok(Principal {
        id: id.to_string(),
        customer: CustomerId::parse(text("customer")?).map_err(|_| Problem::unauthorized())?,
        role: text("role")?.parse::<Role>().map_err(|_| Problem::unauthorized())?,
        tier: text("tier")?.parse::<Tier>().map_err(|_| Problem::unauthorized())?,
        scopes: match fields.get("scope") {
            None => None,
            Some(value) => {
                let text = value.as_str().ok_or_else(Problem::unauthorized)?;
                Some(crate::domain::client::parse_scope_list(text).map_err(|_| Problem::unauthorized())?)
            }
        },
    })
}

/// Parses a JSON body strictly: `application/json` only (415), at most
/// `max_bytes` (413), well-formed and matching `T` (400).
pub fn json_body<T: DeserializeOwned>(req: &Request, max_bytes: usize) -> Result<T, Problem> {
    let bytes: &[u8] = req.body().as_ref();
    if bytes.len() > max_bytes {
        return Err(Problem::payload_too_large(max_bytes));
    }
    if !is_json(req.headers()) {
        return Err(Problem::unsupported_media_type());
    }
    if bytes.is_empty() {
        return Err(Problem::bad_request("malformed-body", "a JSON request body is required"));
    }
    let text = std::str::from_utf8(bytes)
        .map_err(|_| Problem::bad_request("malformed-body", "body is not UTF-8"))?;
    // serde would also read a struct from a JSON array; only objects are ours.
    if !text.trim_start().starts_with('{') {
        return Err(Problem::bad_request("malformed-body", "the body must be a JSON object"));
    }
    serde_json::from_str(text).map_err(|e| Problem::bad_request("malformed-body", describe_json_error(&e)))
}

/// Like `json_body`, but an absent body (no bytes) yields `None`.
pub fn optional_json_body<T: DeserializeOwned>(
    req: &Request,
    max_bytes: usize,
) -> Result<Option<T>, Problem> {
    let body: &[u8] = req.body().as_ref();
    if body.is_empty() { Ok(None) } else { json_body(req, max_bytes).map(Some) }
}

fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let mut parts = value.split(';').map(str::trim);
    let essence = parts.next().unwrap_or_default();
    let params_ok =
        parts.all(|p| p.eq_ignore_ascii_case("charset=utf-8") || p.eq_ignore_ascii_case("charset=\"utf-8\""));
    essence.eq_ignore_ascii_case("application/json") && params_ok
}

/// serde_json's message in the API's words: a value of the wrong type or
/// range is named by its JSON kind, never echoed back (it may be a secret
/// sent in the wrong place), and Rust's type names (`i64`, `struct …`) stay
/// inside; other messages (unknown or missing fields, syntax) are cut short.
fn describe_json_error(e: &serde_json::Error) -> String {
    let message = e.to_string();
    let at = (e.line() > 0).then(|| format!(" (line {}, column {})", e.line(), e.column()));
    let body = message.split(" at line ").next().unwrap_or_default();
    let mismatch = ["invalid type: ", "invalid value: "]
        .iter()
        .find_map(|prefix| body.strip_prefix(prefix).map(|rest| (prefix.trim_end_matches(": "), rest)));
    let described = match mismatch {
        Some((what, rest)) => {
            let (found, expected) = rest.rsplit_once(", expected ").unwrap_or((rest, ""));
            format!("{what}: {} where {} is expected", json_kind(found), expected_kind(expected))
        }
        // "unknown variant `<the value sent>`, expected one of …"
        None if body.starts_with("unknown variant ") => {
            let expected = body.rsplit_once(", expected ").map_or("", |(_, e)| e);
            format!("unknown value, expected {}", expected.chars().take(200).collect::<String>())
        }
        None => body.chars().take(300).collect(),
    };
    format!("invalid JSON body: {described}{}", at.unwrap_or_default())
}

/// The JSON kind of serde's "unexpected" value (`floating point `1.5``,
/// `string "…"`, `integer `-5``, `map`, …), without the value.
fn json_kind(found: &str) -> &'static str {
    match found.split([' ', '`', '"']).next().unwrap_or_default() {
        "string" | "character" => "a string",
        "integer" | "floating" => "a number",
        "boolean" => "a boolean",
        "map" => "an object",
        "sequence" => "an array",
        "null" | "unit" => "null",
        _ => "a value",
    }
}

/// What serde expected, in JSON terms.
fn expected_kind(expected: &str) -> String {
    match expected {
        "i8" | "i16" | "i32" | "i64" | "i128" | "isize" => "an integer".into(),
        "u8" | "u16" | "u32" | "u64" | "u128" | "usize" => "a non-negative integer".into(),
        "f32" | "f64" => "a number".into(),
        "a boolean" | "a string" | "a borrowed string" => expected.replace("borrowed ", ""),
        "a sequence" => "an array".into(),
        "a map" => "an object".into(),
        e if e.starts_with("struct ") => "an object".into(),
        e if e.starts_with("a ") || e.starts_with("an ") || e.starts_with("one of ") => {
            e.chars().take(200).collect()
        }
        _ => "another value".into(),
    }
}

/// The query string as single values, refusing parameters not in `allowed`
/// and repeated parameters.
pub fn query_params(req: &Request, allowed: &[&str]) -> Result<HashMap<String, String>, Problem> {
    let params = req.query_string_parameters();
    let mut out = HashMap::new();
    for (name, _) in params.iter() {
        if out.contains_key(name) {
            continue;
        }
        if !allowed.contains(&name) {
            let shown: String = name.chars().take(40).collect();
            let message = if allowed.is_empty() {
                "this route takes no query parameters".to_string()
            } else {
                format!("unknown query parameter; allowed: {}", allowed.join(", "))
            };
            return Err(Problem::validation(shown, message));
        }
        let values = params.all(name).unwrap_or_default();
        if values.len() != 1 {
            return Err(Problem::validation(name, "give this parameter once"));
        }
        out.insert(name.to_string(), values[0].to_string());
    }
    Ok(out)
}

/// `limit` query parameter: an integer in 1..=max, default `default`.
pub fn page_limit(params: &HashMap<String, String>, default: usize, max: usize) -> Result<usize, Problem> {
    let Some(text) = params.get("limit") else {
        return Ok(default);
    };
    let digits = !text.is_empty() && text.len() <= 4 && text.bytes().all(|b| b.is_ascii_digit());
    match text.parse::<usize>() {
        Ok(n) if digits && (1..=max).contains(&n) => Ok(n),
        _ => Err(Problem::validation("limit", format!("must be an integer from 1 to {max}"))),
    }
}

/// Repository failures, mapped once for every function: an unavailable
/// backend is a 503 (fail closed), anything else is logged and answered with
/// an opaque 500.
impl From<RepoError> for Problem {
    fn from(e: RepoError) -> Self {
        match e {
            RepoError::Unavailable(m) => {
                tracing::error!(error = %m, "backend unavailable");
                Problem::unavailable()
            }
            RepoError::Conflict => Problem::conflict("conflict", "the resource changed concurrently; retry"),
            RepoError::Corrupt(m) => {
                tracing::error!(error = %m, "stored data unreadable");
                Problem::internal()
            }
            RepoError::Integrity(m) => {
                tracing::error!(error = %m, "integrity check failed: record forged or altered in the store");
                Problem::internal()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::describe_json_error;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        step: u32,
    }

    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "lowercase")]
    enum Kind {
        Free,
        Paid,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body {
        tier: Option<Kind>,
        grace: Option<i64>,
        inner: Option<Inner>,
        steps: Option<Vec<Inner>>,
        name: Option<String>,
    }

    fn described(text: &str) -> String {
        describe_json_error(&serde_json::from_str::<Body>(text).unwrap_err())
    }

    /// Wrong types are named by their JSON kinds: no Rust type names, and
    /// never the value sent (which may be a secret in the wrong field).
    #[test]
    fn type_errors_name_json_kinds_and_never_echo_the_value() {
        let cases = [
            (r#"{"grace": 1.5}"#, "invalid type: a number where an integer is expected (line 1, column 13)"),
            (
                r#"{"inner": "SECRETVALUE"}"#,
                "invalid type: a string where an object is expected (line 1, column 23)",
            ),
            (
                r#"{"steps": [{"step": "SECRETSTEP"}]}"#,
                "invalid type: a string where a non-negative integer is expected (line 1, column 32)",
            ),
            (
                r#"{"steps": [{"step": -1}]}"#,
                "invalid value: a number where a non-negative integer is expected (line 1, column 22)",
            ),
            (r#"{"name": 5}"#, "invalid type: a number where a string is expected (line 1, column 10)"),
            (
                r#"{"steps": {"a": 1}}"#,
                "invalid type: an object where an array is expected (line 1, column 10)",
            ),
            (r#"{"tier": "SECRET-TIER"}"#, "unknown value, expected `free` or `paid` (line 1, column 22)"),
        ];
        for (text, want) in cases {
            let got = described(text);
            assert_eq!(got, format!("invalid JSON body: {want}"), "{text}");
            assert!(!got.contains("SECRET") && !got.contains("i64") && !got.contains("struct"), "{got}");
        }
    }

    #[test]
    fn field_and_syntax_errors_keep_their_message() {
        assert_eq!(
            described(r#"{"graze": 1}"#),
            "invalid JSON body: unknown field `graze`, expected one of `tier`, `grace`, `inner`, `steps`, `name` \
             (line 1, column 8)"
        );
        assert_eq!(
            described(r#"{"grace": 1,"#),
            "invalid JSON body: EOF while parsing a value (line 1, column 12)"
        );
    }
}

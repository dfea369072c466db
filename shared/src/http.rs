//! HTTP conventions every function follows: RFC 9457 problem responses,
//! security headers, strict JSON bodies and query strings, and reading the
//! principal that the authorizer put in the request context.

use std::collections::HashMap;

use http::{HeaderMap, HeaderValue, StatusCode, header};
use lambda_http::request::RequestContext;
use lambda_http::{Body, Request, RequestExt, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::domain::{CustomerId, Principal, Role, Tier};
use crate::repo::RepoError;
use crate::routes::{Access, Function, Params, Route, RouteMatch, match_route};

pub const PROBLEM_TYPE_PREFIX: &str = "urn:pharmagate:problem:";
pub const PROBLEM_CONTENT_TYPE: &str = "application/problem+json";

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
            .detail("a valid API key is required in the x-api-key header")
            .header(header::WWW_AUTHENTICATE, "ApiKey realm=\"pharmagate\", header=\"x-api-key\"")
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

/// One log line per request, written when the function answers.
pub struct RequestLog {
    started: std::time::Instant,
    request_id: Option<String>,
    method: String,
    path: String,
}

impl RequestLog {
    pub fn start(req: &Request) -> Self {
        RequestLog {
            started: std::time::Instant::now(),
            request_id: request_id(req),
            method: req.method().to_string(),
            path: route_path(req),
        }
    }

    /// Turns a router's outcome into the response (a problem carries the
    /// request id) and logs it.
    pub fn finish(self, function: &'static str, outcome: Result<Response<Body>, Problem>) -> Response<Body> {
        let response = outcome.unwrap_or_else(|p| p.to_response(self.request_id.as_deref()));
        tracing::info!(
            function,
            request_id = self.request_id.as_deref().unwrap_or("-"),
            method = %self.method,
            path = %self.path,
            status = response.status().as_u16(),
            latency_us = self.started.elapsed().as_micros() as u64,
            "request"
        );
        response
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
    if crate::routes::match_route(req.method().as_str(), raw) != crate::routes::RouteMatch::NotFound {
        return raw.to_string();
    }
    if let Some(RequestContext::ApiGatewayV1(ctx)) = req.request_context_ref()
        && let Some(stage) = ctx.stage.as_deref()
        && let Some(rest) = raw.strip_prefix('/').and_then(|r| r.strip_prefix(stage))
        && rest.starts_with('/')
    {
        return rest.to_string();
    }
    raw.to_string()
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
        Access::AnyOf(_) => {
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

/// serde_json's message without echoing large inputs back.
fn describe_json_error(e: &serde_json::Error) -> String {
    let message = e.to_string();
    let short: String = message.chars().take(300).collect();
    format!("invalid JSON body: {short}")
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
            return Err(Problem::validation(
                shown,
                format!("unknown query parameter; allowed: {}", allowed.join(", ")),
            ));
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
        }
    }
}

//! The local API Gateway: `pharmagate dev` serves HTTP on loopback and does
//! what API Gateway (REST API) does in AWS, through the functions' own
//! handlers and lambda_http's own event conversion:
//!
//! 1. match the route (unknown path → 404, known path with another method →
//!    405 with `Allow`, the way the OpenAPI mock integrations answer);
//! 2. for protected routes, refuse a request without `x-api-key` or
//!    `Authorization`, or with either repeated (401), build
//!    the REST REQUEST authorizer event, call the authorizer's handler,
//!    turn `Unauthorized` into 401 and any other failure into 503, optionally
//!    cache its answer per key and source address for a TTL (never a
//!    brute-force block's), and evaluate the returned IAM
//!    policy against the method ARN (Deny → 403);
//! 3. build the REST proxy (v1) event with `requestContext.authorizer` filled
//!    in, deserialize it as lambda_http does, run the function through
//!    lambda_http's adapter, and turn the proxy response back into HTTP.
//!
//! Every hop goes through JSON, so the local run exercises the real event
//! contract, not a shortcut.
//!
//! Each request gets exactly one audit record, written by whoever answers
//! it: a function, the authorizer (its 401s, its policy's 403s, its
//! failures), or this gateway for what it refuses itself (404, 405, a
//! missing credential, a broken query, a cached policy's 403, and in
//! `server` 408, 413 and 502), as API Gateway's own refusals never reach a
//! function in AWS either.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use aws_lambda_events::apigw::{
    ApiGatewayCustomAuthorizerRequestTypeRequest, ApiGatewayCustomAuthorizerResponse, ApiGatewayProxyResponse,
};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use lambda_http::request::LambdaRequest;
use lambda_http::{Adapter, Context, LambdaEvent, Service, service_fn};
use pharmagate_audit::AuditService;
use pharmagate_authorizer::policy::evaluate;
use pharmagate_authorizer::{API_KEY_HEADER, AUTHORIZATION_HEADER, Authorizer, UNAUTHORIZED};
use pharmagate_catalog::CatalogService;
use pharmagate_keys::KeysService;
use pharmagate_oauth::OauthService;
use pharmagate_shared::audit::AuditTrail;
use pharmagate_shared::config::Backend;
use pharmagate_shared::domain::client::parse_scope_list;
use pharmagate_shared::domain::{CustomerId, Principal};
use pharmagate_shared::http::{Audit, Problem, RequestFacts, RequestLog, THROTTLED_CONTEXT_KEY};
use pharmagate_shared::routes::{Access, Function, Route, RouteMatch, match_route, without_stage};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(30);

/// Authorizer answers the optional cache holds at most.
const MAX_CACHED_ANSWERS: usize = 10_000;

/// API Gateway's payload limit.
pub const MAX_REQUEST_BYTES: usize = 10 * 1024 * 1024;
const REGION: &str = "us-east-1";
const ACCOUNT: &str = "000000000000";
const API_ID: &str = "pharmagate";
const POLICY_DENIED: &str = "your credentials do not allow this operation";

/// A response as the gateway sends it.
pub struct GatewayResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

pub struct Gateway {
    authorizer: Authorizer,
    catalog: CatalogService,
    keys: KeysService,
    oauth: OauthService,
    audit: AuditService,
    /// The gateway's own audit stream, for the requests it refuses itself.
    trail: AuditTrail,
    stage: String,
    cache_ttl: Duration,
    cache: Mutex<HashMap<[u8; 32], (Instant, ApiGatewayCustomAuthorizerResponse)>>,
    /// The host (and port) the gateway answers as: its `Host` header.
    domain: String,
    /// How long a client may take to send its body (then 408).
    body_timeout: Duration,
}

/// What the authorizer step decided.
enum Authorization {
    Allowed(ApiGatewayCustomAuthorizerResponse),
    Refused(Answer),
}

/// Who answered a request, so that exactly one hop audits it.
enum Answer {
    /// The gateway refused it itself, and audits that.
    Refused { problem: Problem, reason: &'static str },
    /// The authorizer or a function answered it, and audited it.
    Delegated(GatewayResponse),
}

impl Answer {
    fn refused(problem: Problem) -> Self {
        let reason = problem.slug;
        Answer::Refused { problem, reason }
    }
}

impl Gateway {
    /// `stage` is the deployment stage name: requests may carry it as their
    /// first path segment (`/dev/v1/products`, like an execute-api URL) or
    /// not (`/v1/products`, like a custom domain).
    pub fn new(backend: &Backend, stage: &str, cache_ttl: Duration) -> Self {
        Gateway {
            authorizer: Authorizer::new(backend),
            catalog: CatalogService::new(backend),
            keys: KeysService::new(backend),
            oauth: OauthService::new(backend),
            audit: AuditService::new(backend),
            trail: AuditTrail::new(backend, "gateway"),
            stage: stage.to_string(),
            cache_ttl,
            cache: Mutex::new(HashMap::new()),
            domain: "localhost".into(),
            body_timeout: DEFAULT_BODY_TIMEOUT,
        }
    }

    pub fn with_body_timeout(mut self, timeout: Duration) -> Self {
        self.body_timeout = timeout;
        self
    }

    pub fn body_timeout(&self) -> Duration {
        self.body_timeout
    }

    /// Sets the `host:port` the gateway is reached at (the events' `Host`).
    pub fn with_domain(mut self, domain: &str) -> Self {
        self.domain = domain.to_string();
        self
    }

    pub async fn handle(
        &self,
        method: &Method,
        target: &str,
        headers: &HeaderMap,
        body: &[u8],
        peer: SocketAddr,
    ) -> GatewayResponse {
        let request_id = new_request_id();
        let (raw_path, query) = target.split_once('?').unwrap_or((target, ""));
        let path = without_stage(method.as_str(), raw_path, Some(&self.stage));
        let mut log = RequestLog::begin(facts(&request_id, method, path, peer), &self.trail);
        let answer = match match_route(method.as_str(), path) {
            RouteMatch::NotFound => Answer::refused(Problem::not_found("no such resource")),
            RouteMatch::MethodNotAllowed(allowed) => Answer::refused(Problem::method_not_allowed(&allowed)),
            RouteMatch::Found(route, params) => match query_maps(query) {
                Some(query) => {
                    let call = Call {
                        method,
                        path,
                        query,
                        headers,
                        body,
                        peer,
                        route,
                        params,
                        request_id: &request_id,
                    };
                    self.dispatch(call, &mut log).await
                }
                None => Answer::refused(Problem::bad_request(
                    "malformed-query",
                    "the query string has a broken %-escape",
                )),
            },
        };
        let mut response = match answer {
            Answer::Delegated(response) => response,
            Answer::Refused { problem: refusal, reason } => {
                log.conclude(refusal.status, reason, Audit::Record).await;
                problem(refusal, &request_id)
            }
        };
        response.headers.insert("x-amzn-requestid", HeaderValue::from_str(&request_id).expect("hex id"));
        response
    }

    /// A refusal made before a request reaches `handle` (a body too large
    /// or too slow) or instead of its answer (a failed function), with a
    /// request id of its own; audited like the gateway's other refusals.
    pub async fn refuse(
        &self,
        refusal: Problem,
        method: &Method,
        target: &str,
        peer: SocketAddr,
    ) -> GatewayResponse {
        let request_id = new_request_id();
        let raw_path = target.split_once('?').map_or(target, |(p, _)| p);
        let path = without_stage(method.as_str(), raw_path, Some(&self.stage));
        let log = RequestLog::begin(facts(&request_id, method, path, peer), &self.trail);
        log.conclude(refusal.status, refusal.slug, Audit::Record).await;
        let mut response = problem(refusal, &request_id);
        response.headers.insert("x-amzn-requestid", HeaderValue::from_str(&request_id).expect("hex id"));
        response
    }

    async fn dispatch(&self, call: Call<'_>, log: &mut RequestLog) -> Answer {
        let started = Instant::now();
        let authorizer_response = if call.route.access == Access::Public {
            None
        } else {
            match self.authorize(&call, log).await {
                Authorization::Allowed(response) => Some(response),
                Authorization::Refused(answer) => return answer,
            }
        };
        let latency = started.elapsed().as_millis() as u64;
        let event = proxy_event(&call, &self.stage, &self.domain, authorizer_response.as_ref(), latency);
        self.invoke(call.route.function, event, call.request_id).await
    }

    async fn authorize(&self, call: &Call<'_>, log: &mut RequestLog) -> Authorization {
        let identity = match identity(call.headers) {
            Ok(identity) => identity,
            // API Gateway refuses a request without an identity source before
            // calling the authorizer; repeated credentials are refused too,
            // before the cache, so a cached answer for one never covers another.
            Err(reason) => {
                return Authorization::Refused(Answer::Refused { problem: Problem::unauthorized(), reason });
            }
        };
        let method_arn = format!(
            "arn:aws:execute-api:{REGION}:{ACCOUNT}:{API_ID}/{}/{}{}",
            self.stage, call.method, call.path
        );
        // The authorizer's answer depends on the source address too (a
        // blocked address waits, whatever key it sends), so the cache is
        // keyed as if `context.identity.sourceIp` were an identity source.
        let cache_key: [u8; 32] = Sha256::new()
            .chain_update(identity.as_bytes())
            .chain_update([0])
            .chain_update(call.peer.ip().to_string())
            .finalize()
            .into();
        if let Some(response) = self.cached(&cache_key) {
            // The authorizer is not asked, so it audits nothing: a refusal
            // here is the gateway's own.
            if evaluate(&response.policy_document, &method_arn) {
                return Authorization::Allowed(response);
            }
            if let Some(principal) = principal_of(&response) {
                log.set_principal(principal);
            }
            let problem = Problem::forbidden(POLICY_DENIED);
            return Authorization::Refused(Answer::Refused { problem, reason: "policy" });
        }
        let response = match self.call_authorizer(call, &method_arn).await {
            Ok(response) => response,
            Err(answer) => return Authorization::Refused(answer),
        };
        self.remember(cache_key, &response);
        if evaluate(&response.policy_document, &method_arn) {
            Authorization::Allowed(response)
        } else {
            // The authorizer saw that its policy denies this route, and audited it.
            let refusal = problem(Problem::forbidden(POLICY_DENIED), call.request_id);
            Authorization::Refused(Answer::Delegated(refusal))
        }
    }

    fn cached(&self, key: &[u8; 32]) -> Option<ApiGatewayCustomAuthorizerResponse> {
        if self.cache_ttl.is_zero() {
            return None;
        }
        let cache = self.cache.lock().ok()?;
        cache.get(key).filter(|(at, _)| at.elapsed() < self.cache_ttl).map(|(_, r)| r.clone())
    }

    fn remember(&self, key: [u8; 32], response: &ApiGatewayCustomAuthorizerResponse) {
        // A brute-force block's answer carries a wait that is only true now.
        if self.cache_ttl.is_zero() || response.context.get(THROTTLED_CONTEXT_KEY).is_some() {
            return;
        }
        if let Ok(mut cache) = self.cache.lock() {
            cache.retain(|_, (at, _)| at.elapsed() < self.cache_ttl);
            // Bounded: a flood of distinct credentials (each a cache key)
            // must not grow it without end; past the bound, answers are
            // simply not cached.
            if cache.len() < MAX_CACHED_ANSWERS {
                cache.insert(key, (Instant::now(), response.clone()));
            }
        }
    }

    /// The authorizer's answer; its refusals (401, 503) it audited itself.
    async fn call_authorizer(
        &self,
        call: &Call<'_>,
        method_arn: &str,
    ) -> Result<ApiGatewayCustomAuthorizerResponse, Answer> {
        let internal = |_| Answer::refused(Problem::internal());
        let event = authorizer_event(call, &self.stage, &self.domain, method_arn);
        let payload: ApiGatewayCustomAuthorizerRequestTypeRequest =
            serde_json::from_value(event).map_err(internal)?;
        let context = lambda_context(call.request_id);
        let delegated = |refusal| Answer::Delegated(problem(refusal, call.request_id));
        match self.authorizer.handle(LambdaEvent::new(payload, context)).await {
            Ok(response) => {
                // Through JSON and back, as API Gateway reads it.
                let text = serde_json::to_string(&response).map_err(internal)?;
                serde_json::from_str(&text).map_err(internal)
            }
            Err(e) if e.to_string() == UNAUTHORIZED => Err(delegated(Problem::unauthorized())),
            Err(_) => Err(delegated(Problem::unavailable())),
        }
    }

    /// The function's answer. Once the handler ran it has audited the
    /// request, even if its response cannot be read back (then a 500 goes
    /// out under its record).
    async fn invoke(&self, function: Function, event: Value, request_id: &str) -> Answer {
        let payload: LambdaRequest = match serde_json::from_value(event) {
            Ok(p) => p,
            Err(_) => return Answer::refused(Problem::internal()),
        };
        let lambda_event = LambdaEvent::new(payload, lambda_context(request_id));
        let output = match function {
            Function::Catalog => run(service_fn(|req| self.catalog.handle(req)), lambda_event).await,
            Function::Keys => run(service_fn(|req| self.keys.handle(req)), lambda_event).await,
            Function::Oauth => run(service_fn(|req| self.oauth.handle(req)), lambda_event).await,
            Function::Audit => run(service_fn(|req| self.audit.handle(req)), lambda_event).await,
        };
        Answer::Delegated(match output {
            Some(response) => proxy_response(response),
            None => problem(Problem::internal(), request_id),
        })
    }
}

/// Runs a lambda_http service the way `lambda_http::run` does and returns the
/// proxy response the Lambda would have returned, read back from its JSON.
async fn run<S>(service: S, event: LambdaEvent<LambdaRequest>) -> Option<ApiGatewayProxyResponse>
where
    S: Service<
            lambda_http::Request,
            Response = lambda_http::Response<lambda_http::Body>,
            Error = std::convert::Infallible,
        >,
    S::Future: Send,
{
    let mut adapter = Adapter::from(service);
    std::future::poll_fn(|cx| adapter.poll_ready(cx)).await.ok()?;
    let response = adapter.call(event).await.ok()?;
    let text = serde_json::to_string(&response).ok()?;
    serde_json::from_str(&text).ok()
}

struct Call<'a> {
    method: &'a Method,
    path: &'a str,
    /// `queryStringParameters` and `multiValueQueryStringParameters`.
    query: (Value, Value),
    headers: &'a HeaderMap,
    body: &'a [u8],
    peer: SocketAddr,
    route: &'static Route,
    params: Vec<(&'static str, String)>,
    request_id: &'a str,
}

fn lambda_context(request_id: &str) -> Context {
    let mut context = Context::default();
    context.request_id = request_id.to_string();
    context
}

/// A fresh request id in API Gateway's format.
pub fn new_request_id() -> String {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).expect("OS randomness");
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &hex[..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..])
}

/// The credentials a request carries, as the authorizer cache key's input;
/// refused (with the reason code) when there are none, or when either header
/// is repeated.
fn identity(headers: &HeaderMap) -> Result<String, &'static str> {
    let repeated = |name| headers.get_all(name).iter().count() > 1;
    if repeated(API_KEY_HEADER) || repeated(AUTHORIZATION_HEADER) {
        return Err("repeated_credentials");
    }
    let key = single_header(headers, API_KEY_HEADER);
    let authorization = single_header(headers, AUTHORIZATION_HEADER);
    if key.is_none() && authorization.is_none() {
        return Err("missing_credentials");
    }
    Ok(format!("{}\n{}", key.unwrap_or_default(), authorization.unwrap_or_default()))
}

/// What the audit record says about a request the gateway received.
fn facts(request_id: &str, method: &Method, path: &str, peer: SocketAddr) -> RequestFacts {
    RequestFacts {
        request_id: Some(request_id.to_string()),
        lambda_request_id: Some(request_id.to_string()),
        source_ip: Some(peer.ip().to_string()),
        ..RequestFacts::for_path(method.as_str(), path)
    }
}

/// The principal an authorizer answer describes in its context.
fn principal_of(response: &ApiGatewayCustomAuthorizerResponse) -> Option<Principal> {
    let text = |name: &str| response.context.get(name).and_then(Value::as_str);
    Some(Principal {
        id: text("principal")?.to_string(),
        customer: CustomerId::parse(text("customer")?).ok()?,
        role: text("role")?.parse().ok()?,
        tier: text("tier")?.parse().ok()?,
        scopes: text("scope").map(|s| parse_scope_list(s).unwrap_or_default()),
    })
}

/// The header's value if it is present exactly once, non-empty and text.
fn single_header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    let mut values = headers.get_all(name).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return None;
    };
    let value = value.to_str().ok()?;
    (!value.is_empty()).then_some(value)
}

/// Headers API Gateway sets itself, replacing what the client sent.
const GATEWAY_HEADERS: [&str; 4] = ["host", "x-forwarded-for", "x-forwarded-proto", "x-forwarded-port"];

/// `headers` (last value wins) and `multiValueHeaders`, as API Gateway sends
/// them: the client's headers, with `Host` and `X-Forwarded-*` set by the
/// gateway (clients cannot forge them; lambda_http builds URIs from them).
fn header_maps(call: &Call<'_>, domain: &str) -> (Map<String, Value>, Map<String, Value>) {
    let port = domain.rsplit_once(':').map_or("80", |(_, p)| p);
    let own = [
        ("host", domain.to_string()),
        ("x-forwarded-for", call.peer.ip().to_string()),
        ("x-forwarded-proto", "http".to_string()),
        ("x-forwarded-port", port.to_string()),
    ];
    let client = call.headers.iter().filter(|(n, _)| !GATEWAY_HEADERS.contains(&n.as_str()));
    let client = client.filter_map(|(n, v)| Some((n.as_str().to_string(), v.to_str().ok()?.to_string())));
    let mut single = Map::new();
    let mut multi: Map<String, Value> = Map::new();
    for (name, text) in own.into_iter().map(|(n, v)| (n.to_string(), v)).chain(client) {
        single.insert(name.clone(), json!(text));
        let entry = multi.entry(name).or_insert_with(|| json!([]));
        if let Some(list) = entry.as_array_mut() {
            list.push(json!(text));
        }
    }
    (single, multi)
}

/// `queryStringParameters` (last value) and `multiValueQueryStringParameters`,
/// or `None` for a query string with broken %-escapes.
fn query_maps(query: &str) -> Option<(Value, Value)> {
    if query.is_empty() {
        return Some((Value::Null, Value::Null));
    }
    let mut single = Map::new();
    let mut multi: Map<String, Value> = Map::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let decode = |s: &str| pharmagate_shared::routes::percent_decode(&s.replace('+', " "));
        let (name, value) = (decode(name)?, decode(value)?);
        single.insert(name.clone(), json!(value));
        let entry = multi.entry(name).or_insert_with(|| json!([]));
        if let Some(list) = entry.as_array_mut() {
            list.push(json!(value));
        }
    }
    Some((Value::Object(single), Value::Object(multi)))
}

fn path_parameters(call: &Call<'_>) -> Value {
    if call.params.is_empty() {
        return Value::Null;
    }
    Value::Object(call.params.iter().map(|(k, v)| (k.to_string(), json!(v))).collect())
}

/// The REST API REQUEST authorizer event.
fn authorizer_event(call: &Call<'_>, stage: &str, domain: &str, method_arn: &str) -> Value {
    let mut event = request_part(call, domain);
    event.insert("type".into(), json!("REQUEST"));
    event.insert("methodArn".into(), json!(method_arn));
    event.insert(
        "requestContext".into(),
        json!({
                "path": format!("/{stage}{}", call.path),
                "accountId": ACCOUNT,
                "resourceId": "local",
                "stage": stage,
                "requestId": call.request_id,
                "identity": { "sourceIp": call.peer.ip().to_string() },
                "resourcePath": call.route.path,
                "httpMethod": call.method.as_str(),
                "apiId": API_ID,
        }),
    );
    Value::Object(event)
}

/// The REST API proxy (v1) integration event.
fn proxy_event(
    call: &Call<'_>,
    stage: &str,
    domain: &str,
    authorizer: Option<&ApiGatewayCustomAuthorizerResponse>,
    latency_ms: u64,
) -> Value {
    let (body, base64) = match std::str::from_utf8(call.body) {
        _ if call.body.is_empty() => (Value::Null, false),
        Ok(text) => (json!(text), false),
        Err(_) => (json!(B64.encode(call.body)), true),
    };
    let now = chrono::Utc::now();
    let mut context = json!({
        "accountId": ACCOUNT,
        "resourceId": "local",
        "stage": stage,
        "requestId": call.request_id,
        "identity": {
            "sourceIp": call.peer.ip().to_string(),
            "userAgent": call.headers.get(header::USER_AGENT).and_then(|v| v.to_str().ok()),
        },
        "resourcePath": call.route.path,
        "httpMethod": call.method.as_str(),
        "apiId": API_ID,
        "path": format!("/{stage}{}", call.path),
        "protocol": "HTTP/1.1",
        "requestTime": now.format("%d/%b/%Y:%H:%M:%S %z").to_string(),
        "requestTimeEpoch": now.timestamp_millis(),
        "domainName": domain,
    });
    if let Some(auth) = authorizer {
        let mut fields = auth.context.as_object().cloned().unwrap_or_default();
        fields.insert("principalId".into(), json!(auth.principal_id));
        fields.insert("integrationLatency".into(), json!(latency_ms));
        context["authorizer"] = Value::Object(fields);
    }
    let mut event = request_part(call, domain);
    event.insert("requestContext".into(), context);
    event.insert("body".into(), body);
    event.insert("isBase64Encoded".into(), json!(base64));
    Value::Object(event)
}

/// The fields both REST events share: the request as the client sent it.
fn request_part(call: &Call<'_>, domain: &str) -> Map<String, Value> {
    let (headers, multi_headers) = header_maps(call, domain);
    let (query, multi_query) = call.query.clone();
    let part = json!({
        "resource": call.route.path,
        "path": call.path,
        "httpMethod": call.method.as_str(),
        "headers": headers,
        "multiValueHeaders": multi_headers,
        "queryStringParameters": query,
        "multiValueQueryStringParameters": multi_query,
        "pathParameters": path_parameters(call),
        "stageVariables": null,
    });
    match part {
        Value::Object(map) => map,
        _ => unreachable!("a JSON object literal"),
    }
}

fn proxy_response(response: ApiGatewayProxyResponse) -> GatewayResponse {
    let status = u16::try_from(response.status_code)
        .ok()
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(StatusCode::BAD_GATEWAY);
    let mut headers = response.multi_value_headers;
    for (name, value) in response.headers.iter() {
        headers.insert(name.clone(), value.clone());
    }
    let body = match response.body {
        Some(aws_lambda_events::encodings::Body::Text(t)) => t.into_bytes(),
        Some(aws_lambda_events::encodings::Body::Binary(b)) => b,
        _ => Vec::new(),
    };
    GatewayResponse { status, headers, body }
}

/// A response the gateway makes itself (gateway responses in AWS terms).
fn problem(problem: Problem, request_id: &str) -> GatewayResponse {
    let (parts, body) = problem.to_response(Some(request_id)).into_parts();
    GatewayResponse { status: parts.status, headers: parts.headers, body: body.to_vec() }
}

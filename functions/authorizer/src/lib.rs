//! The REQUEST authorizer: authenticates the API key in `x-api-key` or the
//! OAuth access token in `Authorization: Bearer …`, and answers API Gateway
//! with an IAM policy covering every route the principal may call, plus the
//! context (principal, customer, role, tier, and for tokens the scope) that
//! the functions read from `requestContext.authorizer`.
//!
//! Unknown, malformed, revoked, expired and wrong-environment keys all get
//! the same answer (`Unauthorized`, a 401) and the same work: the key's hash
//! is computed before the lookup whatever the outcome. Tokens are verified
//! by `shared::jwt` (RFC 8725 rules), then their client must still exist and
//! their `jti` must not be revoked; the scopes granted are those of the token
//! that the client still holds, so narrowing a client takes effect at once.

pub mod policy;

use aws_lambda_events::apigw::{
    ApiGatewayCustomAuthorizerRequestTypeRequest, ApiGatewayCustomAuthorizerResponse,
};
use http::StatusCode;
use lambda_runtime::LambdaEvent;
use pharmagate_shared::audit::AuditTrail;
use pharmagate_shared::clock::now_secs;
use pharmagate_shared::config::Backend;
use pharmagate_shared::domain::client::{parse_scope_list, scope_text};
use pharmagate_shared::domain::{ApiKey, ClientId, Principal, Role};
use pharmagate_shared::guard::{AuthGuard, Subject};
use pharmagate_shared::http::{Audit, RequestFacts, RequestLog, THROTTLED_CONTEXT_KEY};
use pharmagate_shared::jwt::{self, Expectations};
use pharmagate_shared::repo::{ClientRepo, KeyRepo, KeyStatus, RepoError};
use pharmagate_shared::routes::without_stage;
use pharmagate_shared::signing::SigningKeys;
use serde_json::json;

pub const API_KEY_HEADER: &str = "x-api-key";
pub const AUTHORIZATION_HEADER: &str = "authorization";
/// The error message API Gateway turns into a 401.
pub const UNAUTHORIZED: &str = "Unauthorized";

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// Any failed authentication. `reason` goes to logs and metrics only.
    #[error("Unauthorized")]
    Unauthorized { reason: &'static str },
    /// The store could not be asked: fail closed (the gateway answers 5xx).
    #[error("authorizer backend unavailable")]
    Unavailable,
}

pub struct Authorizer {
    guard: AuthGuard,
    keys: KeyRepo,
    clients: ClientRepo,
    signing: SigningKeys,
    expect: Expectations,
    trail: AuditTrail,
}

impl Authorizer {
    pub fn new(backend: &Backend) -> Self {
        Authorizer {
            guard: backend.auth_guard(),
            keys: backend.keys(),
            clients: backend.clients(),
            signing: backend.signing_keys(),
            expect: backend.token_expectations(),
            trail: AuditTrail::new(backend, "authorizer"),
        }
    }

    /// The same authorizer with its own signing-key cache settings.
    pub fn with_key_cache(mut self, ttl: std::time::Duration, min_refresh: std::time::Duration) -> Self {
        self.signing = self.signing.with_cache(ttl, min_refresh);
        self
    }

    /// The Lambda handler: `Err("Unauthorized")` is API Gateway's signal for
    /// a 401; any other error makes the gateway fail closed.
    ///
    /// The authorizer audits the requests that end here: refused
    /// authentication (401), a policy that denies the route asked for (403:
    /// API Gateway answers it without calling a function) and its own
    /// failures. An allowed request is audited by the function that serves it.
    pub async fn handle(
        &self,
        event: LambdaEvent<ApiGatewayCustomAuthorizerRequestTypeRequest>,
    ) -> Result<ApiGatewayCustomAuthorizerResponse, lambda_runtime::Error> {
        let mut log = RequestLog::begin(facts(&event), &self.trail);
        match log.serve(self.decide(&event.payload)).await {
            Ok((response, principal)) => {
                let arn = event.payload.method_arn.as_deref().unwrap_or_default();
                let allowed = policy::evaluate(&response.policy_document, arn);
                // A throttled source has no principal; the function answers 429.
                if let Some(principal) = principal {
                    log.set_principal(principal);
                }
                if allowed {
                    log.conclude(StatusCode::OK, "allow", Audit::ByAnotherHop).await;
                } else {
                    log.conclude(StatusCode::FORBIDDEN, "policy", Audit::Record).await;
                }
                Ok(response)
            }
            Err(AuthError::Unauthorized { reason }) => {
                log.conclude(StatusCode::UNAUTHORIZED, reason, Audit::Record).await;
                Err(lambda_runtime::Error::from(UNAUTHORIZED))
            }
            Err(e) => {
                log.serve(async { tracing::error!(error = %e, "authorizer failed") }).await;
                log.conclude(StatusCode::SERVICE_UNAVAILABLE, "backend_unavailable", Audit::Record).await;
                Err(lambda_runtime::Error::from(e.to_string()))
            }
        }
    }

    /// Decides one request.
    pub async fn authorize(
        &self,
        event: &ApiGatewayCustomAuthorizerRequestTypeRequest,
    ) -> Result<ApiGatewayCustomAuthorizerResponse, AuthError> {
        self.decide(event).await.map(|(response, _)| response)
    }

    /// The answer for one request, and whom it authenticated (none for a
    /// throttled source).
    async fn decide(
        &self,
        event: &ApiGatewayCustomAuthorizerRequestTypeRequest,
    ) -> Result<(ApiGatewayCustomAuthorizerResponse, Option<Principal>), AuthError> {
        let deny = |reason| AuthError::Unauthorized { reason };
        let base = event.method_arn.as_deref().and_then(policy::api_base).ok_or(deny("bad_method_arn"))?;
        // Brute-force protection: a blocked source address waits before any
        // hashing or lookup. A blocked key id does not stop its owner (ids
        // are not secret: anyone could lock a key out): it turns a *failed*
        // attempt on that id into a 429 with the growing wait.
        let (source, key) = guard_subjects(event);
        let unavailable = |_| AuthError::Unavailable;
        if let Some(wait) = self.guard.blocked(&source).await.map_err(unavailable)? {
            return Ok((throttled(base, wait), None));
        }
        let principal = match self.authenticate(event).await {
            Ok(principal) => principal,
            Err(AuthError::Unauthorized { reason }) => {
                let key_wait = self.guard.blocked(&key).await.map_err(unavailable)?;
                let subjects: Vec<Subject> = source.into_iter().chain(key).collect();
                let imposed = self.guard.record_failure(&subjects).await.map_err(unavailable)?;
                return match key_wait {
                    // This failure may have lengthened the block: say the
                    // wait it imposed, not the one it found.
                    Some(wait) => Ok((throttled(base, imposed.map_or(wait, |i| i.max(wait))), None)),
                    None => Err(AuthError::Unauthorized { reason }),
                };
            }
            Err(e) => return Err(e),
        };
        let mut response = ApiGatewayCustomAuthorizerResponse::default();
        response.principal_id = Some(principal.id.clone());
        response.policy_document = policy::policy_for(&principal, base);
        response.context = json!({
            "principal": principal.id,
            "customer": principal.customer.as_str(),
            "role": principal.role.as_str(),
            "tier": principal.tier.as_str(),
        });
        if let Some(scopes) = &principal.scopes {
            response.context["scope"] = json!(scope_text(scopes));
        }
        response.usage_identifier_key = Some(usage_identifier_key(principal.tier.as_str()));
        Ok((response, Some(principal)))
    }

    async fn authenticate(
        &self,
        event: &ApiGatewayCustomAuthorizerRequestTypeRequest,
    ) -> Result<Principal, AuthError> {
        let deny = |reason| AuthError::Unauthorized { reason };
        match (single_header(event, API_KEY_HEADER)?, single_header(event, AUTHORIZATION_HEADER)?) {
            (Some(key), None) => self.authenticate_key(key).await,
            (None, Some(authorization)) => self.authenticate_token(authorization).await,
            (Some(_), Some(_)) => Err(deny("two_credentials")),
            (None, None) => Err(deny("missing_credentials")),
        }
    }

    async fn authenticate_key(&self, text: &str) -> Result<Principal, AuthError> {
        let deny = |reason| AuthError::Unauthorized { reason };
        let key = ApiKey::parse(text).map_err(|e| deny(e.reason()))?;
        let hash = key.hash();
        if key.env() != self.keys.env() {
            return Err(deny("other_environment"));
        }
        let record = match self.keys.get(key.id()).await {
            Ok(record) => record,
            // Forged or altered in the store: refuse like an unknown key,
            // but loudly in the logs.
            Err(RepoError::Integrity(m)) => {
                tracing::error!(error = %m, "key record failed its integrity check");
                return Err(deny("record_integrity"));
            }
            Err(e) => {
                tracing::error!(error = %e, "key store unavailable");
                return Err(AuthError::Unavailable);
            }
        };
        let Some(record) = record else {
            return Err(deny("unknown_key"));
        };
        if !record.matches(&hash) {
            return Err(deny("wrong_secret"));
        }
        match record.status(now_secs()) {
            KeyStatus::Active => {}
            KeyStatus::Expired => return Err(deny("expired")),
            KeyStatus::Revoked => return Err(deny("revoked")),
        }
        Ok(Principal {
            id: record.id.to_string(),
            customer: record.customer,
            role: record.role,
            tier: record.tier,
            scopes: None,
        })
    }

    async fn authenticate_token(&self, authorization: &str) -> Result<Principal, AuthError> {
        let deny = |reason| AuthError::Unauthorized { reason };
        let (scheme, token) = authorization.split_once(' ').ok_or(deny("malformed_authorization"))?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(deny("unsupported_scheme"));
        }
        let parsed = jwt::parse(token).map_err(|e| deny(e.reason()))?;
        let keys = self.signing.key_set_for(&parsed.kid).await.map_err(|e| {
            tracing::error!(error = %e, "signing keys unavailable");
            AuthError::Unavailable
        })?;
        let key = keys.find(&parsed.kid).ok_or(deny(jwt::JwtError::UnknownKey.reason()))?;
        let claims = parsed.verify(key, &self.expect, now_secs()).map_err(|e| deny(e.reason()))?;
        let client_id = ClientId::parse(&claims.client_id).map_err(|_| deny("jwt_claims"))?;
        let unavailable = |_| AuthError::Unavailable;
        let client = match self.clients.get(&client_id).await {
            Ok(client) => client.ok_or(deny("unknown_client"))?,
            Err(RepoError::Integrity(m)) => {
                tracing::error!(error = %m, "client record failed its integrity check");
                return Err(deny("record_integrity"));
            }
            Err(_) => return Err(AuthError::Unavailable),
        };
        if claims.client_gen != client.token_generation {
            return Err(deny("retired_client_generation"));
        }
        if self.clients.is_token_revoked(&claims.jti).await.map_err(unavailable)? {
            return Err(deny("revoked_token"));
        }
        let asked = parse_scope_list(&claims.scope).map_err(|_| deny("jwt_claims"))?;
        let scopes: Vec<_> = asked.into_iter().filter(|s| client.scopes.contains(s)).collect();
        Ok(Principal {
            id: client.id.to_string(),
            customer: client.customer,
            role: Role::Partner,
            tier: client.tier,
            scopes: Some(scopes),
        })
    }
}

/// What a failure here is counted against: the source address the gateway
/// saw, and the id of a well-formed API key (tokens have no secret to guess).
fn guard_subjects(event: &ApiGatewayCustomAuthorizerRequestTypeRequest) -> (Vec<Subject>, Vec<Subject>) {
    let ip = event.request_context.identity.as_ref().and_then(|i| i.source_ip.as_deref());
    let source = ip.map(|ip| Subject::SourceIp(ip.to_string())).into_iter().collect();
    let key = event.headers.get(API_KEY_HEADER).and_then(|v| v.to_str().ok());
    let key = key.and_then(|k| ApiKey::parse(k).ok()).map(|k| Subject::ApiKeyId(k.id().to_string()));
    (source, key.into_iter().collect())
}

/// The answer for a blocked source or key. API Gateway cannot take a 429
/// from an authorizer, so the request goes on without a principal and with
/// the wait in the context; every function answers 429 with `Retry-After`
/// before doing anything (`shared::http::route_request`). It is counted on a
/// usage plan of its own: charged to a tier's plan, a blocked attacker's
/// requests would eat the throttle every caller of that tier shares.
fn throttled(base: &str, wait: u64) -> ApiGatewayCustomAuthorizerResponse {
    let mut response = ApiGatewayCustomAuthorizerResponse::default();
    response.principal_id = Some("throttled".into());
    response.policy_document = policy::allow_everything(base);
    response.context = json!({ THROTTLED_CONTEXT_KEY: wait.to_string() });
    response.usage_identifier_key = Some(usage_identifier_key(BLOCKED_USAGE_PLAN));
    response
}

/// What the audit record says about the request an authorizer event is for.
fn facts(event: &LambdaEvent<ApiGatewayCustomAuthorizerRequestTypeRequest>) -> RequestFacts {
    let payload = &event.payload;
    let ctx = &payload.request_context;
    let method = payload.http_method.as_ref().or(ctx.http_method.as_ref()).map_or("", |m| m.as_str());
    let path = payload.path.as_deref().unwrap_or_default();
    let path = without_stage(method, path, ctx.stage.as_deref());
    RequestFacts {
        request_id: ctx.request_id.clone(),
        lambda_request_id: Some(event.context.request_id.clone()),
        source_ip: ctx.identity.as_ref().and_then(|i| i.source_ip.clone()),
        ..RequestFacts::for_path(method, path)
    }
}

/// The one value of header `name`, if present. API Gateway keeps only the
/// last value in `headers`; two values in one request are ambiguous, so they
/// are refused rather than one picked.
fn single_header<'a>(
    event: &'a ApiGatewayCustomAuthorizerRequestTypeRequest,
    name: &str,
) -> Result<Option<&'a str>, AuthError> {
    let deny = |reason| AuthError::Unauthorized { reason };
    let mut values = event.headers.get_all(name).iter();
    let value = match (values.next(), values.next()) {
        (None, _) => return Ok(None),
        (Some(value), None) => value,
        (Some(_), Some(_)) => return Err(deny("repeated_credentials")),
    };
    if event.multi_value_headers.get_all(name).iter().count() > 1 {
        return Err(deny("repeated_credentials"));
    }
    value.to_str().map(Some).map_err(|_| deny("malformed_encoding"))
}

/// The usage plan of requests from a blocked source or key.
pub const BLOCKED_USAGE_PLAN: &str = "blocked";

/// The API Gateway usage-plan key of a plan (a tier's name, or
/// [`BLOCKED_USAGE_PLAN`]): `PHARMAGATE_USAGE_KEY_<PLAN>`, default
/// `pharmagate-<plan>`. The plans are the gateway's coarse outer throttle,
/// shared by every caller of a tier; the exact per-principal and
/// per-customer limits are the functions'.
pub fn usage_identifier_key(plan: &str) -> String {
    let var = format!("PHARMAGATE_USAGE_KEY_{}", plan.to_uppercase());
    std::env::var(var).unwrap_or_else(|_| format!("pharmagate-{plan}"))
}

//! The oauth function: pharmagate's OAuth 2.0 authorization server.
//!
//! - `POST /oauth/token`: client credentials grant only (RFC 6749 §4.4,
//!   RFC 9700), issuing RFC 9068 JWT access tokens signed with the current
//!   key from the secret store; an authenticated token request is counted
//!   against the client's rate and its customer's daily quota like any
//!   protected request, failed authentications against the brute-force guard;
//! - `POST /oauth/revoke` (RFC 7009) and `POST /oauth/introspect`
//!   (RFC 7662), for authenticated clients and their own tokens only;
//! - `GET /.well-known/jwks.json` (RFC 7517) and
//!   `GET /.well-known/oauth-authorization-server` (RFC 8414);
//! - `/v1/clients…`: administrators create, list, show and delete clients
//!   and rotate their secrets (see `clients`).

mod clients;
pub mod form;

use http::header::HeaderName;
use http::{HeaderValue, StatusCode, header};
use lambda_http::{Body, Request, Response};
use pharmagate_shared::audit::AuditTrail;
use pharmagate_shared::clock::now_secs;
use pharmagate_shared::config::{Backend, Settings};
use pharmagate_shared::domain::client::{GRANTABLE_SCOPES, parse_scope_list, scope_text};
use pharmagate_shared::domain::{ClientId, ClientSecret, Principal, Role};
use pharmagate_shared::guard::{AuthGuard, Subject};
use pharmagate_shared::http::{self as api, AuditNote, Problem};
use pharmagate_shared::jwt::{self, Claims, Expectations, LEEWAY_SECS};
use pharmagate_shared::limits::{Decision, Limiter, Usage};
use pharmagate_shared::repo::{ClientRecord, ClientRepo, KeyRepo, RepoError};
use pharmagate_shared::routes::{Function, Route};
use pharmagate_shared::signing::{SigningError, SigningKeys};
use serde_json::{Value, json};

use form::{Form, OAuthError, credentials, form_body};

pub struct OauthService {
    clients: ClientRepo,
    keys: SigningKeys,
    /// API keys, to re-read an administrator's key before it changes clients.
    api_keys: KeyRepo,
    settings: Settings,
    expect: Expectations,
    /// What an unknown client is checked against, so that it costs what a
    /// wrong secret costs: the same store read (of `decoy_id`, which never
    /// exists), the same record parsing and the same two comparisons.
    decoy_id: ClientId,
    decoy_record: String,
    limiter: Limiter,
    guard: AuthGuard,
    trail: AuditTrail,
}

/// What a client asks with its own credentials and is counted for.
#[derive(Clone, Copy)]
enum ClientCall {
    Token,
    Introspect,
}

/// Either an OAuth error (token endpoints) or a problem (everything else).
enum Refusal {
    OAuth(OAuthError),
    Problem(Problem),
}

impl From<OAuthError> for Refusal {
    fn from(e: OAuthError) -> Self {
        Refusal::OAuth(e)
    }
}

impl From<Problem> for Refusal {
    fn from(p: Problem) -> Self {
        Refusal::Problem(p)
    }
}

impl From<pharmagate_shared::repo::RepoError> for Refusal {
    fn from(e: pharmagate_shared::repo::RepoError) -> Self {
        Refusal::Problem(e.into())
    }
}

impl From<SigningError> for Refusal {
    fn from(e: SigningError) -> Self {
        tracing::error!(error = %e, "signing keys unavailable");
        Refusal::Problem(Problem::unavailable())
    }
}

type Outcome = Result<Response<Body>, Refusal>;

impl OauthService {
    pub fn new(backend: &Backend) -> Self {
        OauthService {
            clients: backend.clients(),
            keys: backend.signing_keys(),
            api_keys: backend.keys(),
            settings: backend.settings.clone(),
            expect: backend.token_expectations(),
            decoy_id: ClientId::generate(),
            decoy_record: decoy_record(),
            limiter: backend.limiter(),
            guard: backend.auth_guard(),
            trail: AuditTrail::new(backend, "oauth"),
        }
    }

    /// The Lambda handler. Never fails: every error is a response.
    pub async fn handle(&self, req: Request) -> Result<Response<Body>, std::convert::Infallible> {
        let log = api::RequestLog::start(&req, &self.trail);
        let request_id = api::request_id(&req);
        let outcome = match log.serve(self.route(&req)).await {
            Ok(response) => Ok(response),
            Err(Refusal::Problem(p)) => Err(p),
            Err(Refusal::OAuth(e)) => Ok(e.to_response(request_id.as_deref())),
        };
        Ok(log.finish(outcome).await)
    }

    async fn route(&self, req: &Request) -> Outcome {
        let routed = api::route_request(req, Function::Oauth).map_err(|p| oauth_shaped(req, p))?;
        match (routed.route.method, routed.route.path) {
            ("POST", "/oauth/token") => self.client_call(req, routed.route, ClientCall::Token).await,
            ("POST", "/oauth/revoke") => self.revoke_call(req).await,
            ("POST", "/oauth/introspect") => {
                self.client_call(req, routed.route, ClientCall::Introspect).await
            }
            ("GET", "/.well-known/jwks.json") => self.jwks().await,
            ("GET", "/.well-known/oauth-authorization-server") => Ok(self.metadata()),
            // Client administration: a principal's request, counted like any.
            _ => {
                let admission = api::admit(&self.limiter, &routed).await?;
                let principal = routed.principal.as_ref().ok_or_else(Problem::unauthorized)?;
                // Creating a client or its secret on a stale authorizer
                // answer would mint a credential that outlives the caller's
                // revocation: the caller's key is read again.
                if routed.route.method != "GET" && !self.api_keys.still_active(principal).await? {
                    tracing::info!(key_id = %principal.id, "client management by a key no longer active refused");
                    return Err(Problem::unauthorized().into());
                }
                let outcome = self.manage(req, routed.route, &routed.params, &routed.query, principal).await;
                Ok(admission.apply(outcome)?)
            }
        }
    }

    /// Authenticates the calling client. Every failure is the same
    /// `invalid_client`, after the same work: one store read, parsing a
    /// record and two constant-time comparisons.
    async fn authenticate(&self, req: &Request, form: &Form) -> Result<ClientRecord, Refusal> {
        let mut subjects: Vec<Subject> = api::source_ip(req).map(Subject::SourceIp).into_iter().collect();
        // Before any lookup or hashing: a blocked source waits.
        if let Some(wait) = self.guard.blocked(&subjects).await? {
            return Err(OAuthError::slow_down(wait).into());
        }
        let presented = match credentials(req, form) {
            Ok(presented) => presented,
            Err(e) => return Err(self.failed(&subjects, e, "malformed_credentials").await),
        };
        let client_subject = Subject::ClientId(presented.client_id.chars().take(128).collect());
        // A blocked client id does not stop the client itself (its id is no
        // secret): only a failed attempt on it becomes `slow_down`.
        let client_wait = self.guard.blocked(std::slice::from_ref(&client_subject)).await?;
        subjects.push(client_subject);
        let hash = ClientSecret::presented(presented.secret.expose()).hash();
        let id = ClientId::parse(&presented.client_id).unwrap_or_else(|_| self.decoy_id.clone());
        let record = match self.clients.get(&id).await {
            Ok(record) => record,
            // Forged or altered in the store: an unknown client, loudly logged.
            Err(RepoError::Integrity(m)) => {
                tracing::error!(error = %m, "client record failed its integrity check");
                None
            }
            Err(e) => return Err(e.into()),
        };
        let now = now_secs();
        match record {
            Some(record) if record.secret_matches(&hash, now) => Ok(record),
            Some(_) => Err(self.wrong_secret(&subjects, client_wait, "wrong_secret").await),
            None => {
                let decoy: Option<ClientRecord> = serde_json::from_str(&self.decoy_record).ok();
                std::hint::black_box(decoy.map(|d| d.secret_matches(&hash, now)));
                Err(self.wrong_secret(&subjects, client_wait, "unknown_client").await)
            }
        }
    }

    /// A malformed credential: `invalid_request` as it is, anything else
    /// counted (see `count_failure`) and answered with `error`.
    async fn failed(&self, subjects: &[Subject], error: OAuthError, reason: &'static str) -> Refusal {
        if error.code == "invalid_request" {
            tracing::info!(reason, "client authentication failed");
            return error.into();
        }
        match self.count_failure(subjects, reason).await {
            Ok(_) => error.into(),
            Err(refusal) => refusal,
        }
    }

    /// A wrong secret for a well-formed client id: `invalid_client`, or
    /// `slow_down` when the client id was blocked already, with the wait this
    /// failure imposed (it may have lengthened the block) rather than the one
    /// it found.
    async fn wrong_secret(
        &self,
        subjects: &[Subject],
        client_wait: Option<u64>,
        reason: &'static str,
    ) -> Refusal {
        let imposed = match self.count_failure(subjects, reason).await {
            Ok(imposed) => imposed,
            Err(refusal) => return refusal,
        };
        match client_wait {
            Some(wait) => OAuthError::slow_down(imposed.map_or(wait, |i| i.max(wait))).into(),
            None => OAuthError::invalid_client().into(),
        }
    }

    /// Counts a failed client authentication against its source and client
    /// id; the block it imposed, or 503 if the count cannot be kept (fail
    /// closed rather than allow unthrottled guessing).
    async fn count_failure(
        &self,
        subjects: &[Subject],
        reason: &'static str,
    ) -> Result<Option<u64>, Refusal> {
        tracing::info!(reason, "client authentication failed");
        self.guard.record_failure(subjects).await.map_err(Refusal::from)
    }

    /// The token and introspection endpoints. Once the client has authenticated, the
    /// request is counted against the client's limits as every protected
    /// request is counted against its principal's (the same limiter and
    /// counters: the client's rate, its customer's daily quota for its tier;
    /// the route's cost): over a limit it is 429 before any signing or token
    /// check, with `Retry-After`; every answer after that carries
    /// `RateLimit-Policy` and `RateLimit`. Failed authentications are the
    /// guard's instead, and never use quota.
    async fn client_call(&self, req: &Request, route: &'static Route, call: ClientCall) -> Outcome {
        let form = form_body(req)?;
        let client = self.authenticate(req, &form).await?;
        let request_id = api::request_id(req);
        let usage = match self.limiter.admit(&client_principal(&client), route.cost).await? {
            Decision::Admitted(usage) => usage,
            Decision::Limited { usage, retry_after } => {
                let mut response = OAuthError::rate_limited(retry_after).to_response(request_id.as_deref());
                with_usage(&mut response, &usage);
                let note =
                    AuditNote { principal: Some(client_principal(&client)), reason: Some("rate-limited") };
                note.attach(&mut response);
                return Ok(response);
            }
        };
        let outcome = match call {
            ClientCall::Token => self.issue(&form, &client).await,
            ClientCall::Introspect => self.introspect(&form, &client).await,
        };
        match outcome {
            Ok(mut response) => {
                with_usage(&mut response, &usage);
                Ok(response)
            }
            Err(Refusal::OAuth(e)) => {
                let mut response = e.to_response(request_id.as_deref());
                with_usage(&mut response, &usage);
                Ok(response)
            }
            Err(Refusal::Problem(problem)) => {
                let decorated = rate_limit_fields(&usage)
                    .into_iter()
                    .fold(problem, |p, (name, value)| p.header(name, value));
                Err(decorated.into())
            }
        }
    }

    /// Issues an access token to an authenticated (and admitted) client.
    async fn issue(&self, form: &Form, client: &ClientRecord) -> Outcome {
        match form.get("grant_type").map(String::as_str) {
            Some("client_credentials") => {}
            Some(_) => return Err(OAuthError::unsupported_grant_type().into()),
            None => return Err(OAuthError::invalid_request("grant_type is required").into()),
        }
        let scopes = match form.get("scope") {
            None => client.scopes.clone(),
            Some(text) => {
                let asked = parse_scope_list(text).map_err(OAuthError::invalid_scope)?;
                if let Some(extra) = asked.iter().find(|s| !client.scopes.contains(s)) {
                    let message = format!("scope {} is not granted to this client", extra.as_str());
                    return Err(OAuthError::invalid_scope(message).into());
                }
                if asked.is_empty() { client.scopes.clone() } else { asked }
            }
        };
        let signer = self.keys.signer().await?;
        let now = now_secs();
        let claims = Claims {
            iss: self.settings.issuer.clone(),
            sub: client.id.to_string(),
            aud: self.settings.audience.clone(),
            client_id: client.id.to_string(),
            client_gen: client.token_generation.clone(),
            scope: scope_text(&scopes),
            iat: now,
            exp: now + self.settings.token_lifetime_secs,
            nbf: None,
            jti: jwt::new_jti(),
        };
        let token = signer.sign(&claims);
        tracing::info!(client_id = ?client.id.as_str(), customer = %client.customer, kid = signer.kid(), "token issued");
        let body = json!({
            "access_token": token,
            "token_type": "Bearer",
            "expires_in": self.settings.token_lifetime_secs,
            "scope": claims.scope,
        });
        Ok(as_client(no_cache(api::json_response(StatusCode::OK, &body)), client))
    }

    /// A token of `client`'s current generation, checked as the authorizer
    /// would (signature, issuer, audience, lifetime), or `None`.
    async fn own_token(&self, token: &str, client: &ClientRecord) -> Result<Option<Claims>, Refusal> {
        let Ok(parsed) = jwt::parse(token) else { return Ok(None) };
        let keys = self.keys.key_set_for(&parsed.kid).await?;
        let Some(key) = keys.find(&parsed.kid) else { return Ok(None) };
        let claims = parsed.verify(key, &self.expect, now_secs()).ok();
        Ok(claims.filter(|c| c.client_id == client.id.as_str() && c.client_gen == client.token_generation))
    }

    /// The revocation endpoint: authenticated like the others (and behind
    /// the same brute-force guard) but never rate-limited, so that a client
    /// can revoke a stolen token even when whoever holds it has used up the
    /// client's rate or its customer's quota with it.
    async fn revoke_call(&self, req: &Request) -> Outcome {
        let form = form_body(req)?;
        let client = self.authenticate(req, &form).await?;
        self.revoke(&form, &client).await
    }

    /// RFC 7009 revocation of one of the client's own tokens.
    async fn revoke(&self, form: &Form, client: &ClientRecord) -> Outcome {
        let token = form.get("token").ok_or_else(|| OAuthError::invalid_request("token is required"))?;
        // RFC 7009 §2.2: an invalid or unknown token is answered with 200 too.
        if let Some(claims) = self.own_token(token, client).await? {
            self.clients.revoke_token(&claims.jti, &client.id, claims.exp + LEEWAY_SECS).await?;
            tracing::info!(client_id = ?client.id.as_str(), jti = %claims.jti, "token revoked");
        }
        Ok(as_client(no_cache(api::empty_response(StatusCode::OK)), client))
    }

    /// RFC 7662 introspection of one of the client's own tokens.
    async fn introspect(&self, form: &Form, client: &ClientRecord) -> Outcome {
        let token = form.get("token").ok_or_else(|| OAuthError::invalid_request("token is required"))?;
        let inactive = || {
            let response = no_cache(api::json_response(StatusCode::OK, &json!({"active": false})));
            Ok(as_client(response, client))
        };
        // A client may only learn about its own tokens.
        let Some(claims) = self.own_token(token, client).await? else { return inactive() };
        // Expired is expired here: the verifier's clock-skew leeway is for
        // verifiers, not a lifetime extension to report (RFC 7662 §2.2).
        if claims.exp <= now_secs() || self.clients.is_token_revoked(&claims.jti).await? {
            return inactive();
        }
        let body = json!({
            "active": true,
            "scope": claims.scope,
            "client_id": claims.client_id,
            "token_type": "Bearer",
            "exp": claims.exp,
            "iat": claims.iat,
            "sub": claims.sub,
            "aud": claims.aud,
            "iss": claims.iss,
            "jti": claims.jti,
        });
        Ok(as_client(no_cache(api::json_response(StatusCode::OK, &body)), client))
    }

    async fn jwks(&self) -> Outcome {
        let keys = self.keys.key_set().await?;
        let mut response = api::json_response(StatusCode::OK, &keys.to_jwks());
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/jwk-set+json"));
        Ok(response)
    }

    fn metadata(&self) -> Response<Body> {
        let base = &self.settings.issuer;
        let scopes: Vec<&str> = GRANTABLE_SCOPES.iter().map(|p| p.as_str()).collect();
        let auth_methods = ["client_secret_basic", "client_secret_post"];
        let body: Value = json!({
            "issuer": base,
            "token_endpoint": format!("{base}/oauth/token"),
            "jwks_uri": format!("{base}/.well-known/jwks.json"),
            "revocation_endpoint": format!("{base}/oauth/revoke"),
            "introspection_endpoint": format!("{base}/oauth/introspect"),
            "grant_types_supported": ["client_credentials"],
            "response_types_supported": [],
            "scopes_supported": scopes,
            "token_endpoint_auth_methods_supported": auth_methods,
            "revocation_endpoint_auth_methods_supported": auth_methods,
            "introspection_endpoint_auth_methods_supported": auth_methods,
        });
        api::json_response(StatusCode::OK, &body)
    }
}

/// A client record nobody holds the secret of, as stored JSON, with a live
/// previous secret so both comparisons run.
fn decoy_record() -> String {
    let record = ClientRecord {
        id: ClientId::generate(),
        name: "decoy".into(),
        customer: pharmagate_shared::domain::CustomerId::parse("decoy").expect("valid id"),
        tier: pharmagate_shared::domain::Tier::Free,
        scopes: GRANTABLE_SCOPES.to_vec(),
        secret_hash: ClientSecret::generate().hash().to_hex(),
        previous_secret_hash: Some(ClientSecret::generate().hash().to_hex()),
        previous_secret_expires_at: Some(i64::MAX),
        created_at: 0,
        secret_rotated_at: Some(0),
        token_generation: "0000000000000000".into(),
        rev: 1,
    };
    serde_json::to_string(&record).expect("a record serializes")
}

/// Names the authenticated client as the request's principal in the audit
/// trail: the gateway lets these endpoints through without the authorizer.
fn as_client(mut response: Response<Body>, client: &ClientRecord) -> Response<Body> {
    AuditNote { principal: Some(client_principal(client)), reason: None }.attach(&mut response);
    response
}

/// A refusal of a bad request to an endpoint clients call with their own
/// credentials (token, revocation, introspection) in those endpoints' own
/// error shape (RFC 6749 §5.2): `invalid_request` with the problem's detail.
fn oauth_shaped(req: &Request, problem: Problem) -> Refusal {
    let client_call = req.method() == http::Method::POST
        && ["/oauth/token", "/oauth/revoke", "/oauth/introspect"].contains(&api::route_path(req).as_str());
    if client_call && problem.status == StatusCode::BAD_REQUEST {
        let field = problem.field.map(|f| format!("{f}: ")).unwrap_or_default();
        return OAuthError::invalid_request(format!("{field}{}", problem.detail.unwrap_or_default())).into();
    }
    problem.into()
}

/// The principal an authenticated client is: the one the authorizer makes of
/// its tokens (the same id, customer and tier, so the same rate and quota
/// counters).
fn client_principal(client: &ClientRecord) -> Principal {
    Principal {
        id: client.id.to_string(),
        customer: client.customer.clone(),
        role: Role::Partner,
        tier: client.tier,
        scopes: Some(client.scopes.clone()),
    }
}

/// The `RateLimit-Policy` and `RateLimit` fields of a counted request, as
/// every limited route sends them; none for an unlimited tier.
fn rate_limit_fields(usage: &Usage) -> Vec<(HeaderName, String)> {
    let Some((policy, state)) = usage.headers() else { return Vec::new() };
    vec![
        (HeaderName::from_static(api::RATELIMIT_POLICY), policy),
        (HeaderName::from_static(api::RATELIMIT), state),
    ]
}

fn with_usage(response: &mut Response<Body>, usage: &Usage) {
    for (name, value) in rate_limit_fields(usage) {
        if let Ok(value) = HeaderValue::from_str(&value) {
            response.headers_mut().insert(name, value);
        }
    }
}

/// Token responses must not be cached anywhere (RFC 6749 §5.1).
fn no_cache(mut response: Response<Body>) -> Response<Body> {
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response.headers_mut().insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    response
}

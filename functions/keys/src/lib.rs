//! The keys function: issue, list, revoke and rotate API keys.
//!
//! A principal with `keys:any` (admin) manages every customer's keys; one
//! with `keys:own` manages its own customer's keys only, cannot give a key
//! more than its own role and tier, and is capped in how many active keys
//! it may hold. Another customer's key is answered with 404, never 403, so
//! key ids cannot be probed.

use std::collections::HashMap;

use http::{StatusCode, header};
use lambda_http::{Body, Request, Response};
use pharmagate_shared::audit::AuditTrail;
use pharmagate_shared::clock::{now_secs, rfc3339};
use pharmagate_shared::config::Backend;
use pharmagate_shared::cursor;
use pharmagate_shared::domain::{ApiKey, ClientId, CustomerId, KeyId, Permission, Principal, Role, Tier};
use pharmagate_shared::http::{self as api, Problem};
use pharmagate_shared::limits::Limiter;
use pharmagate_shared::repo::keys::{IssueError, NewKey, RotateError, expiry_after_days, validate_label};
use pharmagate_shared::repo::{ClientRepo, DEFAULT_GRACE_SECS, KeyRecord, KeyRepo, validate_grace};
use pharmagate_shared::routes::{Function, Params};
use serde::Deserialize;
use serde_json::{Value, json};

pub const MAX_BODY: usize = 4 * 1024;
pub const DEFAULT_PAGE: usize = 20;
pub const MAX_PAGE: usize = 100;

pub struct KeysService {
    keys: KeyRepo,
    clients: ClientRepo,
    max_keys_per_customer: usize,
    limiter: Limiter,
    trail: AuditTrail,
}

type Outcome = Result<Response<Body>, Problem>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IssueBody {
    #[serde(default)]
    customer: Option<String>,
    #[serde(default)]
    role: Option<String>,
    #[serde(default)]
    tier: Option<String>,
    #[serde(default)]
    label: Option<String>,
    #[serde(default)]
    expires_in_days: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RotateBody {
    #[serde(default)]
    grace_period_seconds: Option<i64>,
}

impl KeysService {
    pub fn new(backend: &Backend) -> Self {
        KeysService {
            keys: backend.keys(),
            clients: backend.clients(),
            max_keys_per_customer: backend.settings.max_keys_per_customer,
            limiter: backend.limiter(),
            trail: AuditTrail::new(backend, "keys"),
        }
    }

    /// The Lambda handler. Never fails: every error is a problem response.
    pub async fn handle(&self, req: Request) -> Result<Response<Body>, std::convert::Infallible> {
        let log = api::RequestLog::start(&req, &self.trail);
        let outcome = log.serve(self.route(&req)).await;
        Ok(log.finish(outcome).await)
    }

    async fn route(&self, req: &Request) -> Outcome {
        let routed = api::route_request(req, Function::Keys)?;
        let admission = api::admit(&self.limiter, &routed).await?;
        admission.apply(self.dispatch(req, routed).await)
    }

    async fn dispatch(&self, req: &Request, routed: api::Routed) -> Outcome {
        let api::Routed { route, params, query, principal } = routed;
        let principal = principal.ok_or_else(Problem::unauthorized)?;
        if route.method != "GET" {
            self.caller_still_active(&principal).await?;
        }
        match (route.method, route.path) {
            ("GET", "/v1/usage") => self.usage(&query, &principal).await,
            ("POST", "/v1/keys") => self.issue(req, &principal).await,
            ("GET", "/v1/keys") => self.list(&query, &principal).await,
            ("DELETE", "/v1/keys/{id}") => self.revoke(&principal, &params).await,
            ("POST", "/v1/keys/{id}/rotate") => self.rotate(req, &principal, &params).await,
            _ => Err(Problem::not_found("no such resource")),
        }
    }

    /// Issuing, rotating or revoking keys on a stale authorizer answer
    /// could mint a key that outlives its caller's revocation: the caller is
    /// read again (`KeyRepo::still_active`).
    async fn caller_still_active(&self, principal: &Principal) -> Result<(), Problem> {
        if self.keys.still_active(principal).await? {
            return Ok(());
        }
        tracing::info!(key_id = %principal.id, "key management by a key no longer active refused");
        Err(Problem::unauthorized())
    }

    async fn issue(&self, req: &Request, principal: &Principal) -> Outcome {
        let body: IssueBody = api::json_body(req, MAX_BODY)?;
        let admin = principal.can(Permission::KeysAny);
        let customer = match body.customer.as_deref() {
            Some(text) => CustomerId::parse(text).map_err(|m| Problem::validation("customer", m))?,
            None if admin => {
                return Err(Problem::validation("customer", "required when issuing as an administrator"));
            }
            None => principal.customer.clone(),
        };
        let role = parse_opt::<Role>("role", body.role.as_deref())?.unwrap_or(if admin {
            Role::Customer
        } else {
            principal.role
        });
        let tier = parse_opt::<Tier>("tier", body.tier.as_deref())?.unwrap_or(if admin {
            Tier::Free
        } else {
            principal.tier
        });
        if !admin && (customer != principal.customer || !within_self_service(principal, role, tier)) {
            return Err(Problem::forbidden(
                "you may only issue keys for your own customer and tier, with your role or a lesser one",
            ));
        }
        let label = body.label.as_deref().map(clean_label).transpose()?;
        let expires_at = body.expires_in_days.map(expiry_after_days).transpose();
        let expires_at = expires_at.map_err(|m| Problem::validation("expires_in_days", m))?;
        let cap = (!admin).then_some(self.max_keys_per_customer);
        let new = NewKey { customer, role, tier, label, expires_at };
        let (key, record) = self.keys.issue(new, cap).await.map_err(|e| match e {
            IssueError::CapReached(n) => {
                Problem::conflict("key-limit", format!("at most {n} active keys per customer"))
            }
            IssueError::Repo(e) => e.into(),
        })?;
        tracing::info!(key_id = %record.id, customer = %record.customer, by = ?principal.id, "key issued");
        Ok(created(&key, &record))
    }

    async fn list(&self, params: &HashMap<String, String>, principal: &Principal) -> Outcome {
        let limit = api::page_limit(params, DEFAULT_PAGE, MAX_PAGE)?;
        let requested = params.get("customer").map(|c| CustomerId::parse(c)).transpose();
        let requested = requested.map_err(|m| Problem::validation("customer", m))?;
        let customer = if principal.can(Permission::KeysAny) {
            requested
        } else {
            if requested.as_ref().is_some_and(|c| *c != principal.customer) {
                return Err(Problem::forbidden("you may only list your own customer's keys"));
            }
            Some(principal.customer.clone())
        };
        let scope = format!("keys:{}", customer.as_ref().map_or("*", |c| c.as_str()));
        let after = params.get("cursor").map(|c| cursor::decode(&scope, c)).transpose()?;
        let (records, next) = self.keys.list_page(customer.as_ref(), after, limit).await?;
        let now = now_secs();
        let items: Vec<Value> = records.iter().map(|r| key_view(r, now)).collect();
        let next = next.map(|n| cursor::encode(&scope, &n));
        Ok(api::json_response(
            StatusCode::OK,
            &json!({ "items": items, "limit": limit, "next_cursor": next }),
        ))
    }

    async fn revoke(&self, principal: &Principal, params: &Params) -> Outcome {
        let record = self.owned_key(principal, params).await?;
        self.keys.revoke(&record.id).await?;
        tracing::info!(key_id = %record.id, by = ?principal.id, "key revoked");
        Ok(api::empty_response(StatusCode::NO_CONTENT))
    }

    async fn rotate(&self, req: &Request, principal: &Principal, params: &Params) -> Outcome {
        let record = self.owned_key(principal, params).await?;
        let body: Option<RotateBody> = api::optional_json_body(req, MAX_BODY)?;
        let grace = body.and_then(|b| b.grace_period_seconds).unwrap_or(DEFAULT_GRACE_SECS);
        let grace = validate_grace(grace).map_err(|m| Problem::validation("grace_period_seconds", m))?;
        let cap = (!principal.can(Permission::KeysAny)).then_some(self.max_keys_per_customer);
        let (key, new) = self.keys.rotate(&record.id, grace, cap).await.map_err(|e| match e {
            RotateError::NotFound => no_key(),
            RotateError::NotActive(status) => Problem::conflict(
                "key-not-active",
                format!("the key is {status:?} and cannot be rotated").to_lowercase(),
            ),
            RotateError::AlreadyRotated => {
                Problem::conflict("key-already-rotated", "the key was already rotated")
            }
            RotateError::CapReached(n) => Problem::conflict(
                "key-limit",
                format!(
                    "at most {n} active keys per customer, plus one in its grace period; \
                     rotate with grace_period_seconds 0 or revoke a key first"
                ),
            ),
            RotateError::Repo(e) => e.into(),
        })?;
        tracing::info!(old_key_id = %record.id, key_id = %new.id, grace, by = ?principal.id, "key rotated");
        Ok(created(&key, &new))
    }

    /// The caller's own limits and usage; an administrator may name any
    /// principal (an API key id or an OAuth client id) with `?principal=`.
    async fn usage(&self, params: &HashMap<String, String>, principal: &Principal) -> Outcome {
        let subject = match params.get("principal") {
            None => principal.clone(),
            Some(id) if *id == principal.id => principal.clone(),
            Some(_) if !principal.can(Permission::KeysAny) => {
                return Err(Problem::forbidden("you may only see your own usage"));
            }
            Some(id) => self.principal_by_id(id).await?,
        };
        let limit = self.limiter.config().limit_for(&subject);
        let usage = self.limiter.peek(&subject).await?;
        let body = json!({
            "principal": subject.id,
            "customer": subject.customer,
            "tier": subject.tier,
            "limits": limit,
            "usage": usage,
        });
        Ok(api::json_response(StatusCode::OK, &body))
    }

    /// Any principal by id, for administrators: a key, else a client.
    async fn principal_by_id(&self, id: &str) -> Result<Principal, Problem> {
        if let Ok(key_id) = KeyId::parse(id)
            && let Some(record) = self.keys.get(&key_id).await?
        {
            return Ok(Principal {
                id: record.id.to_string(),
                customer: record.customer,
                role: record.role,
                tier: record.tier,
                scopes: None,
            });
        }
        if let Ok(client_id) = ClientId::parse(id)
            && let Some(record) = self.clients.get(&client_id).await?
        {
            return Ok(Principal {
                id: record.id.to_string(),
                customer: record.customer,
                role: Role::Partner,
                tier: record.tier,
                scopes: Some(record.scopes),
            });
        }
        Err(Problem::not_found("no such principal"))
    }

    /// The key named in the path, if the principal may manage it; 404 otherwise.
    async fn owned_key(&self, principal: &Principal, params: &Params) -> Result<KeyRecord, Problem> {
        let text = params.iter().find(|(n, _)| *n == "id").map(|(_, v)| v.as_str()).unwrap_or_default();
        let id = KeyId::parse(text).map_err(|m| Problem::validation("id", m))?;
        let record = self.keys.get(&id).await?.ok_or_else(no_key)?;
        if principal.can(Permission::KeysAny) {
            return Ok(record);
        }
        if record.customer != principal.customer {
            return Err(no_key());
        }
        // Rotation copies role and tier, and revocation can lock others out:
        // self-service may only manage keys it could have issued itself.
        if !within_self_service(principal, record.role, record.tier) {
            return Err(Problem::forbidden(
                "you may only manage keys of your own tier with your role or a lesser one",
            ));
        }
        Ok(record)
    }
}

/// What self-service may issue or manage: the caller's tier, and a role
/// with no permission the caller lacks (its own role or a lesser one).
fn within_self_service(principal: &Principal, role: Role, tier: Tier) -> bool {
    tier == principal.tier && role.permissions().iter().all(|p| principal.role.allows(*p))
}

fn no_key() -> Problem {
    Problem::not_found("no such key")
}

fn parse_opt<T: std::str::FromStr<Err = String>>(
    field: &str,
    text: Option<&str>,
) -> Result<Option<T>, Problem> {
    text.map(|t| t.parse::<T>().map_err(|m| Problem::validation(field, m))).transpose()
}

fn clean_label(text: &str) -> Result<String, Problem> {
    validate_label(text).map_err(|m| Problem::validation("label", m))
}

/// A key as the API shows it: never the secret or its hash.
pub fn key_view(record: &KeyRecord, now: i64) -> Value {
    json!({
        "id": record.id,
        "customer": record.customer,
        "role": record.role,
        "tier": record.tier,
        "label": record.label,
        "status": record.status(now),
        "created_at": rfc3339(record.created_at),
        "expires_at": record.expires_at.map(rfc3339),
        "revoked_at": record.revoked_at.map(rfc3339),
        "replaced_by": record.replaced_by,
        "rotation_due_since": record.rotation_due_since.map(rfc3339),
    })
}

/// 201 with the new key shown once.
fn created(key: &ApiKey, record: &KeyRecord) -> Response<Body> {
    let mut body = key_view(record, now_secs());
    body["key"] = json!(key.expose());
    let mut response = api::json_response(StatusCode::CREATED, &body);
    if let Ok(location) = format!("/v1/keys/{}", record.id).parse() {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response
}

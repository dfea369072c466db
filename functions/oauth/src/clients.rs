//! Administrators' management of OAuth clients: create (the secret is shown
//! once), list, show, delete, and rotate a client's secret with an optional
//! grace period for the old one. Client views never carry a secret or hash.

use std::collections::HashMap;

use http::{StatusCode, header};
use lambda_http::{Body, Request, Response};
use pharmagate_shared::clock::{now_secs, rfc3339};
use pharmagate_shared::cursor;
use pharmagate_shared::domain::client::{ClientSecret, parse_scope_list, validate_grant};
use pharmagate_shared::domain::{ClientId, CustomerId, Principal, Tier};
use pharmagate_shared::http::{self as api, Problem};
use pharmagate_shared::repo::clients::{CreateClientError, NewClient, validate_name};
use pharmagate_shared::repo::{ClientRecord, DEFAULT_GRACE_SECS, validate_grace};
use pharmagate_shared::routes::{Params, Route};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::OauthService;

pub const MAX_BODY: usize = 4 * 1024;
pub const DEFAULT_PAGE: usize = 20;
pub const MAX_PAGE: usize = 100;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    name: String,
    customer: String,
    scopes: Vec<String>,
    #[serde(default)]
    tier: Option<String>,
    #[serde(default)]
    client_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RotateBody {
    #[serde(default)]
    grace_period_seconds: Option<i64>,
}

type Managed = Result<Response<Body>, Problem>;

impl OauthService {
    pub(crate) async fn manage(
        &self,
        req: &Request,
        route: &Route,
        params: &Params,
        query: &HashMap<String, String>,
        principal: &Principal,
    ) -> Managed {
        match (route.method, route.path) {
            ("POST", "/v1/clients") => self.create_client(req, principal).await,
            ("GET", "/v1/clients") => self.list_clients(query).await,
            ("GET", "/v1/clients/{id}") => {
                let record = self.named_client(params).await?;
                Ok(api::json_response(StatusCode::OK, &client_view(&record)))
            }
            ("DELETE", "/v1/clients/{id}") => self.delete_client(params, principal).await,
            ("POST", "/v1/clients/{id}/rotate-secret") => self.rotate_client(req, params, principal).await,
            _ => Err(Problem::not_found("no such resource")),
        }
    }

    async fn create_client(&self, req: &Request, principal: &Principal) -> Managed {
        let body: CreateBody = api::json_body(req, MAX_BODY)?;
        let name = validate_name(&body.name).map_err(|m| Problem::validation("name", m))?;
        let customer = CustomerId::parse(&body.customer).map_err(|m| Problem::validation("customer", m))?;
        let tier = match body.tier.as_deref() {
            Some(text) => text.parse::<Tier>().map_err(|m| Problem::validation("tier", m))?,
            None => Tier::Free,
        };
        let scopes =
            parse_scope_list(&body.scopes.join(" ")).map_err(|m| Problem::validation("scopes", m))?;
        if body.scopes.iter().any(|s| s.is_empty() || s.contains(' ')) {
            return Err(Problem::validation("scopes", "each scope is one name, e.g. catalog:read"));
        }
        validate_grant(&scopes).map_err(|m| Problem::validation("scopes", m))?;
        let id = body.client_id.as_deref().map(ClientId::parse).transpose();
        let id = id.map_err(|m| Problem::validation("client_id", m))?;
        let new = NewClient { id, name, customer, tier, scopes };
        let (secret, record) = self.clients.create(new).await.map_err(|e| match e {
            CreateClientError::Exists => Problem::conflict("client-exists", "a client with this id exists"),
            CreateClientError::Repo(e) => e.into(),
        })?;
        tracing::info!(client_id = ?record.id.as_str(), customer = %record.customer, by = ?principal.id, "client created");
        Ok(with_secret(StatusCode::CREATED, &secret, &record))
    }

    async fn list_clients(&self, query: &HashMap<String, String>) -> Managed {
        let limit = api::page_limit(query, DEFAULT_PAGE, MAX_PAGE)?;
        let customer = query.get("customer").map(|c| CustomerId::parse(c)).transpose();
        let customer = customer.map_err(|m| Problem::validation("customer", m))?;
        let scope = format!("clients:{}", customer.as_ref().map_or("*", |c| c.as_str()));
        let after = query.get("cursor").map(|c| cursor::decode(&scope, c)).transpose()?;
        let (records, next) = self.clients.list_page(customer.as_ref(), after, limit).await?;
        let items: Vec<Value> = records.iter().map(client_view).collect();
        let next = next.map(|n| cursor::encode(&scope, &n));
        Ok(api::json_response(StatusCode::OK, &json!({"items": items, "limit": limit, "next_cursor": next})))
    }

    async fn delete_client(&self, params: &Params, principal: &Principal) -> Managed {
        let record = self.named_client(params).await?;
        if !self.clients.delete(&record.id).await? {
            return Err(no_client());
        }
        tracing::info!(client_id = ?record.id.as_str(), by = ?principal.id, "client deleted");
        Ok(api::empty_response(StatusCode::NO_CONTENT))
    }

    async fn rotate_client(&self, req: &Request, params: &Params, principal: &Principal) -> Managed {
        let record = self.named_client(params).await?;
        let body: Option<RotateBody> = api::optional_json_body(req, MAX_BODY)?;
        let grace = body.and_then(|b| b.grace_period_seconds).unwrap_or(DEFAULT_GRACE_SECS);
        let grace = validate_grace(grace).map_err(|m| Problem::validation("grace_period_seconds", m))?;
        let (secret, record) = self.clients.rotate_secret(&record.id, grace).await?.ok_or_else(no_client)?;
        tracing::info!(client_id = ?record.id.as_str(), grace, by = ?principal.id, "client secret rotated");
        Ok(with_secret(StatusCode::OK, &secret, &record))
    }

    async fn named_client(&self, params: &Params) -> Result<ClientRecord, Problem> {
        let text = params.iter().find(|(n, _)| *n == "id").map(|(_, v)| v.as_str()).unwrap_or_default();
        let id = ClientId::parse(text).map_err(|m| Problem::validation("id", m))?;
        self.clients.get(&id).await?.ok_or_else(no_client)
    }
}

fn no_client() -> Problem {
    Problem::not_found("no such client")
}

/// A client as the API shows it: never its secret or the secret's hash.
pub fn client_view(record: &ClientRecord) -> Value {
    let now = now_secs();
    json!({
        "client_id": record.id,
        "name": record.name,
        "customer": record.customer,
        "tier": record.tier,
        "scopes": record.scopes,
        "created_at": rfc3339(record.created_at),
        "secret_rotated_at": record.secret_rotated_at.map(rfc3339),
        "previous_secret_expires_at": record.previous_secret_expires_at.filter(|t| *t > now).map(rfc3339),
    })
}

/// The client with its new secret, shown this once.
fn with_secret(status: StatusCode, secret: &ClientSecret, record: &ClientRecord) -> Response<Body> {
    let mut body = client_view(record);
    body["client_secret"] = json!(secret.expose());
    let mut response = api::json_response(status, &body);
    let location = format!("/v1/clients/{}", percent_encode(record.id.as_str()));
    if let Ok(value) = location.parse() {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

/// Escapes everything but unreserved characters, for a path segment.
pub fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

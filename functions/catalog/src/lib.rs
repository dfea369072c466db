//! The catalog function: product search and reads, manufacturing data for
//! entitled principals, and catalog maintenance for developers and admins.
//!
//! Every request is routed through the shared route table; the principal
//! comes from the authorizer's context and is checked again here (defense in
//! depth), then object-level rules apply (entitlement per product).

use std::collections::HashMap;

use http::{StatusCode, header};
use lambda_http::{Body, Request, Response};
use pharmagate_shared::audit::AuditTrail;
use pharmagate_shared::config::Backend;
use pharmagate_shared::cursor;
use pharmagate_shared::domain::product::{MAX_FORMULA_CHARS, validate_formula};
use pharmagate_shared::domain::{Cas, Permission, Principal, ProductDraft};
use pharmagate_shared::http::{self as api, Problem};
use pharmagate_shared::limits::Limiter;
use pharmagate_shared::repo::catalog::{MAX_TOKEN_CHARS, PutOutcome, Search};
use pharmagate_shared::repo::{CatalogRepo, CustomerRepo};
use pharmagate_shared::routes::{Function, Params};
use serde_json::json;

/// Largest accepted `PUT /v1/products/{cas}` body.
pub const MAX_PRODUCT_BODY: usize = 64 * 1024;
pub const DEFAULT_PAGE: usize = 20;
pub const MAX_PAGE: usize = 100;

pub struct CatalogService {
    catalog: CatalogRepo,
    customers: CustomerRepo,
    limiter: Limiter,
    trail: AuditTrail,
}

type Outcome = Result<Response<Body>, Problem>;

impl CatalogService {
    pub fn new(backend: &Backend) -> Self {
        CatalogService {
            catalog: backend.catalog(),
            customers: backend.customers(),
            limiter: backend.limiter(),
            trail: AuditTrail::new(backend, "catalog"),
        }
    }

    /// The Lambda handler. Never fails: every error is a problem response.
    pub async fn handle(&self, req: Request) -> Result<Response<Body>, std::convert::Infallible> {
        let log = api::RequestLog::start(&req, &self.trail);
        let outcome = log.serve(self.route(&req)).await;
        Ok(log.finish(outcome).await)
    }

    async fn route(&self, req: &Request) -> Outcome {
        let routed = api::route_request(req, Function::Catalog)?;
        let admission = api::admit(&self.limiter, &routed).await?;
        admission.apply(self.dispatch(req, routed).await)
    }

    async fn dispatch(&self, req: &Request, routed: api::Routed) -> Outcome {
        let api::Routed { route, params, query, principal } = routed;
        let Some(principal) = principal else {
            // The only public route.
            return Ok(api::json_response(StatusCode::OK, &json!({ "status": "ok" })));
        };
        match (route.method, route.path) {
            ("GET", "/v1/products") => self.search(&query).await,
            ("GET", "/v1/products/{cas}") => self.get(&params).await,
            ("PUT", "/v1/products/{cas}") => self.put(req, &params).await,
            ("DELETE", "/v1/products/{cas}") => self.delete(&params).await,
            ("GET", "/v1/products/{cas}/manufacturing") => self.manufacturing(&principal, &params).await,
            _ => Err(Problem::not_found("no such resource")),
        }
    }

    async fn search(&self, params: &HashMap<String, String>) -> Outcome {
        let limit = api::page_limit(params, DEFAULT_PAGE, MAX_PAGE)?;
        let filters: Vec<&str> =
            ["name", "formula", "cas"].into_iter().filter(|f| params.contains_key(*f)).collect();
        if filters.len() > 1 {
            return Err(Problem::validation(
                filters.join(","),
                "filter by one of name, formula or cas at a time",
            ));
        }
        if let Some(text) = params.get("cas") {
            if params.contains_key("cursor") {
                return Err(Problem::validation("cursor", "a CAS lookup has a single page"));
            }
            let cas = parse_cas(text)?;
            let items: Vec<_> = self.catalog.get(cas).await?.into_iter().map(summary).collect();
            return Ok(page_response(items, None, limit));
        }
        let (search, scope) = search_from(params)?;
        let after = params.get("cursor").map(|c| cursor::decode(&scope, c)).transpose()?;
        let page = self.catalog.search(&search, after, limit).await?;
        let next = page.next.map(|n| cursor::encode(&scope, &n));
        let items = page.items.into_iter().map(|s| serde_json::to_value(s).unwrap_or_default()).collect();
        Ok(page_response(items, next, limit))
    }

    async fn get(&self, params: &Params) -> Outcome {
        let cas = cas_param(params)?;
        match self.catalog.get(cas).await? {
            Some(product) => Ok(api::json_response(StatusCode::OK, &product)),
            None => Err(no_product(cas)),
        }
    }

    async fn put(&self, req: &Request, params: &Params) -> Outcome {
        let cas = cas_param(params)?;
        let draft: ProductDraft = api::json_body(req, MAX_PRODUCT_BODY)?;
        let (product, manufacturing) =
            draft.validate(cas).map_err(|e| Problem::validation(e.field.clone(), e.message.clone()))?;
        let outcome = self.catalog.put(product.clone(), manufacturing.as_ref()).await?;
        let status = if outcome == PutOutcome::Created { StatusCode::CREATED } else { StatusCode::OK };
        let mut response = api::json_response(status, &product);
        if let Ok(location) = format!("/v1/products/{cas}").parse() {
            response.headers_mut().insert(header::LOCATION, location);
        }
        Ok(response)
    }

    async fn delete(&self, params: &Params) -> Outcome {
        let cas = cas_param(params)?;
        if self.catalog.delete(cas).await? {
            Ok(api::empty_response(StatusCode::NO_CONTENT))
        } else {
            Err(no_product(cas))
        }
    }

    async fn manufacturing(&self, principal: &Principal, params: &Params) -> Outcome {
        let cas = cas_param(params)?;
        if !principal.can(Permission::ManufacturingReadAny)
            && !self.customers.is_entitled(&principal.customer, cas).await?
        {
            return Err(Problem::forbidden(format!(
                "customer {} has no entitlement to manufacturing data of {cas}",
                principal.customer
            )));
        }
        match self.catalog.manufacturing(cas).await? {
            Some(record) => {
                Ok(api::json_response(StatusCode::OK, &json!({ "cas": cas, "manufacturing": record })))
            }
            None => Err(Problem::not_found(format!("no manufacturing record for {cas}"))),
        }
    }
}

fn search_from(params: &HashMap<String, String>) -> Result<(Search, String), Problem> {
    if let Some(name) = params.get("name") {
        let chars = name.trim().chars().count();
        if chars == 0 || chars > MAX_TOKEN_CHARS || name.chars().any(char::is_control) {
            return Err(Problem::validation(
                "name",
                format!("must be 1 to {MAX_TOKEN_CHARS} characters of text"),
            ));
        }
        return Ok((Search::Name(name.clone()), format!("name:{}", name.trim().to_lowercase())));
    }
    if let Some(formula) = params.get("formula") {
        let formula = validate_formula(formula).map_err(|e| {
            Problem::validation("formula", format!("{} (at most {MAX_FORMULA_CHARS} characters)", e.message))
        })?;
        return Ok((Search::Formula(formula.clone()), format!("formula:{formula}")));
    }
    Ok((Search::All, "all".into()))
}

fn summary(p: pharmagate_shared::domain::Product) -> serde_json::Value {
    json!({
        "cas": p.cas,
        "name": p.name,
        "molecular_formula": p.molecular_formula,
        "molecular_weight": p.molecular_weight,
    })
}

fn page_response(items: Vec<serde_json::Value>, next: Option<String>, limit: usize) -> Response<Body> {
    api::json_response(StatusCode::OK, &json!({ "items": items, "limit": limit, "next_cursor": next }))
}

fn parse_cas(text: &str) -> Result<Cas, Problem> {
    Cas::parse(text).map_err(|e| {
        Problem::new(StatusCode::BAD_REQUEST, "invalid-cas", "Invalid CAS number")
            .field("cas")
            .detail(e.to_string())
    })
}

fn cas_param(params: &Params) -> Result<Cas, Problem> {
    let text = params.iter().find(|(n, _)| *n == "cas").map(|(_, v)| v.as_str()).unwrap_or_default();
    parse_cas(text)
}

fn no_product(cas: Cas) -> Problem {
    Problem::not_found(format!("no product with CAS number {cas}"))
}

//! The REQUEST authorizer: authenticates the API key in `x-api-key` and
//! answers API Gateway with an IAM policy covering every route the principal
//! may call, plus the context (principal, customer, role, tier) that the
//! functions read from `requestContext.authorizer`.
//!
//! Unknown, malformed, revoked, expired and wrong-environment keys all get
//! the same answer (`Unauthorized`, a 401) and the same work: the key's hash
//! is computed before the lookup whatever the outcome.

pub mod policy;

use aws_lambda_events::apigw::{
    ApiGatewayCustomAuthorizerRequestTypeRequest, ApiGatewayCustomAuthorizerResponse,
};
use lambda_runtime::LambdaEvent;
use pharmagate_shared::clock::now_secs;
use pharmagate_shared::config::Backend;
use pharmagate_shared::domain::{ApiKey, Principal, Tier};
use pharmagate_shared::repo::{KeyRepo, KeyStatus};
use serde_json::json;

pub const API_KEY_HEADER: &str = "x-api-key";
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
    keys: KeyRepo,
}

impl Authorizer {
    pub fn new(backend: &Backend) -> Self {
        Authorizer { keys: backend.keys() }
    }

    /// The Lambda handler: `Err("Unauthorized")` is API Gateway's signal for
    /// a 401; any other error makes the gateway fail closed.
    pub async fn handle(
        &self,
        event: LambdaEvent<ApiGatewayCustomAuthorizerRequestTypeRequest>,
    ) -> Result<ApiGatewayCustomAuthorizerResponse, lambda_runtime::Error> {
        let request_id = &event.context.request_id;
        match self.authorize(&event.payload).await {
            Ok(response) => Ok(response),
            Err(AuthError::Unauthorized { reason }) => {
                tracing::info!(request_id, reason, "authentication failed");
                Err(lambda_runtime::Error::from(UNAUTHORIZED))
            }
            Err(e) => {
                tracing::error!(request_id, error = %e, "authorizer failed");
                Err(lambda_runtime::Error::from(e.to_string()))
            }
        }
    }

    /// Decides one request.
    pub async fn authorize(
        &self,
        event: &ApiGatewayCustomAuthorizerRequestTypeRequest,
    ) -> Result<ApiGatewayCustomAuthorizerResponse, AuthError> {
        let deny = |reason| AuthError::Unauthorized { reason };
        let base = event.method_arn.as_deref().and_then(policy::api_base).ok_or(deny("bad_method_arn"))?;
        let principal = self.authenticate(event).await?;
        let mut response = ApiGatewayCustomAuthorizerResponse::default();
        response.principal_id = Some(principal.id.clone());
        response.policy_document = policy::policy_for(&principal, base);
        response.context = json!({
            "principal": principal.id,
            "customer": principal.customer.as_str(),
            "role": principal.role.as_str(),
            "tier": principal.tier.as_str(),
        });
        response.usage_identifier_key = Some(usage_identifier_key(principal.tier));
        Ok(response)
    }

    async fn authenticate(
        &self,
        event: &ApiGatewayCustomAuthorizerRequestTypeRequest,
    ) -> Result<Principal, AuthError> {
        let deny = |reason| AuthError::Unauthorized { reason };
        let mut values = event.headers.get_all(API_KEY_HEADER).iter();
        let (Some(value), None) = (values.next(), values.next()) else {
            return Err(deny("missing_or_repeated_key"));
        };
        // API Gateway keeps only the last value in `headers`; two keys in one
        // request are ambiguous, so refuse rather than pick one.
        if event.multi_value_headers.get_all(API_KEY_HEADER).iter().count() > 1 {
            return Err(deny("missing_or_repeated_key"));
        }
        let text = value.to_str().map_err(|_| deny("malformed_encoding"))?;
        let key = ApiKey::parse(text).map_err(|e| deny(e.reason()))?;
        let hash = key.hash();
        if key.env() != self.keys.env() {
            return Err(deny("other_environment"));
        }
        let record = self.keys.get(key.id()).await.map_err(|_| AuthError::Unavailable)?;
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
        })
    }
}

/// The API Gateway usage-plan key for a tier (`PHARMAGATE_USAGE_KEY_<TIER>`,
/// default `pharmagate-<tier>`): the gateway's coarse outer throttle.
pub fn usage_identifier_key(tier: Tier) -> String {
    let var = format!("PHARMAGATE_USAGE_KEY_{}", tier.as_str().to_uppercase());
    std::env::var(var).unwrap_or_else(|_| format!("pharmagate-{tier}"))
}

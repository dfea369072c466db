//! IAM policies as API Gateway reads an authorizer's answer: building the
//! policy for a principal, and evaluating a policy against a method ARN the
//! way API Gateway does (explicit Deny wins, then any Allow, else deny;
//! `*` matches any run of characters including `/`, `?` one character).

use aws_lambda_events::apigw::ApiGatewayCustomAuthorizerPolicy;
use aws_lambda_events::iam::{IamPolicyEffect, IamPolicyStatement};
use pharmagate_shared::domain::Principal;
use pharmagate_shared::routes::{Access, ROUTES, Route};

pub const INVOKE: &str = "execute-api:Invoke";

/// `arn:aws:execute-api:<region>:<account>:<api-id>/<stage>` from a method
/// ARN `…/<stage>/<METHOD>/<path>`.
pub fn api_base(method_arn: &str) -> Option<&str> {
    let mut slashes = method_arn.match_indices('/').map(|(i, _)| i);
    let _after_api = slashes.next()?;
    let after_stage = slashes.next()?;
    let base = &method_arn[..after_stage];
    base.starts_with("arn:").then_some(base)
}

pub fn route_arn(base: &str, route: &Route) -> String {
    format!("{base}/{}{}", route.method, route.arn_path())
}

fn statement(effect: IamPolicyEffect, resources: Vec<String>) -> IamPolicyStatement {
    let mut s = IamPolicyStatement::default();
    s.action = vec![INVOKE.to_string()];
    s.effect = effect;
    s.resource = resources;
    s
}

/// A policy covering every route the principal may call, so a decision the
/// gateway caches for one route never wrongly denies another. Routes the
/// principal may not call but that an Allow wildcard would cover (for example
/// `GET /v1/products/*/manufacturing` under `GET /v1/products/*`) get an
/// explicit Deny.
pub fn policy_for(principal: &Principal, base: &str) -> ApiGatewayCustomAuthorizerPolicy {
    let protected = ROUTES.iter().filter(|r| r.access != Access::Public);
    let (allowed, refused): (Vec<&Route>, Vec<&Route>) = protected.partition(|r| r.allows(principal));
    let allow: Vec<String> = allowed.iter().map(|r| route_arn(base, r)).collect();
    let deny: Vec<String> = refused
        .iter()
        .filter(|r| {
            let concrete = format!("{base}/{}{}", r.method, r.sample_path("x"));
            allow.iter().any(|pattern| wildcard_match(pattern, &concrete))
        })
        .map(|r| route_arn(base, r))
        .collect();
    let mut policy = ApiGatewayCustomAuthorizerPolicy::default();
    policy.version = Some("2012-10-17".into());
    if !allow.is_empty() {
        policy.statement.push(statement(IamPolicyEffect::Allow, allow));
    }
    if !deny.is_empty() {
        policy.statement.push(statement(IamPolicyEffect::Deny, deny));
    }
    policy
}

/// Every method of every route of the stage (for a throttled caller, whom
/// the function refuses itself).
pub fn allow_everything(base: &str) -> ApiGatewayCustomAuthorizerPolicy {
    let mut policy = ApiGatewayCustomAuthorizerPolicy::default();
    policy.version = Some("2012-10-17".into());
    policy.statement.push(statement(IamPolicyEffect::Allow, vec![format!("{base}/*")]));
    policy
}

/// API Gateway's decision for `method_arn` under `policy`.
pub fn evaluate(policy: &ApiGatewayCustomAuthorizerPolicy, method_arn: &str) -> bool {
    let applies = |s: &IamPolicyStatement| {
        s.action.iter().any(|a| wildcard_match(a, INVOKE))
            && s.resource.iter().any(|r| wildcard_match(r, method_arn))
    };
    let denied = policy.statement.iter().any(|s| s.effect == IamPolicyEffect::Deny && applies(s));
    let allowed = policy.statement.iter().any(|s| s.effect == IamPolicyEffect::Allow && applies(s));
    allowed && !denied
}

/// IAM wildcard match: `*` any run (also empty, also across `/`), `?` one char.
pub fn wildcard_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;
    use pharmagate_shared::domain::{CustomerId, Role, Tier};

    const BASE: &str = "arn:aws:execute-api:eu-west-1:123456789012:abc123/prod";

    fn principal(role: Role) -> Principal {
        Principal {
            id: "k".into(),
            customer: CustomerId::parse("acme").unwrap(),
            role,
            tier: Tier::Free,
            scopes: None,
        }
    }

    #[test]
    fn base_is_cut_after_the_stage() {
        assert_eq!(api_base(&format!("{BASE}/GET/v1/products/50-78-2")), Some(BASE));
        assert_eq!(api_base("nonsense"), None);
        assert_eq!(api_base("x/y/GET/"), None);
    }

    #[test]
    fn wildcards_behave_like_iam() {
        assert!(wildcard_match("a/*", "a/b/c"));
        assert!(wildcard_match("a/*/c", "a/b/c"));
        assert!(wildcard_match("a/*/c", "a/b/x/c"));
        assert!(!wildcard_match("a/*/c", "a/b/d"));
        assert!(wildcard_match("a?c", "abc"));
        assert!(!wildcard_match("a?c", "ac"));
        assert!(wildcard_match("*", ""));
        assert!(wildcard_match("execute-api:*", INVOKE));
    }

    /// The one property that matters: for every role and route, the cached
    /// policy allows the route exactly when the role may call it.
    #[test]
    fn every_role_gets_exactly_its_routes_on_every_route() {
        for role in Role::ALL {
            let p = principal(role);
            let policy = policy_for(&p, BASE);
            for route in ROUTES.iter().filter(|r| r.access != Access::Public) {
                for value in ["953769-46-5", "abc123def456", "x"] {
                    let arn = format!("{BASE}/{}{}", route.method, route.sample_path(value));
                    assert_eq!(
                        evaluate(&policy, &arn),
                        route.allows(&p),
                        "{role:?} {} {}",
                        route.method,
                        route.path
                    );
                }
            }
        }
    }

    #[test]
    fn customer_policy_denies_manufacturing_explicitly() {
        let policy = policy_for(&principal(Role::Customer), BASE);
        let json = serde_json::to_value(&policy).unwrap();
        let deny = &json["Statement"][1];
        assert_eq!(deny["Effect"], "Deny");
        assert!(
            deny["Resource"]
                .as_array()
                .unwrap()
                .contains(&serde_json::json!(format!("{BASE}/GET/v1/products/*/manufacturing")))
        );
    }

    #[test]
    fn a_policy_for_one_stage_does_not_open_another() {
        let policy = policy_for(&principal(Role::Admin), BASE);
        assert!(!evaluate(&policy, "arn:aws:execute-api:eu-west-1:123456789012:abc123/test/GET/v1/products"));
    }
}

//! The API contract (`infra/openapi.yaml`) says what the route table
//! (`routes::ROUTES`) does: the same (method, path) pairs and no others, the
//! same public/protected split, the same query parameters, the same Lambda
//! function behind each, and security alternatives that match who may call
//! the route (an OAuth token only where a grantable scope allows it).
//! `scripts/schemathesis.sh` checks the running gateway's answers against the
//! same file.

use std::collections::{BTreeMap, BTreeSet};

use pharmagate_shared::domain::client::GRANTABLE_SCOPES;
use pharmagate_shared::routes::{Access, Function, ROUTES, Route};
use serde_json::Value;

const METHODS: [&str; 7] = ["get", "put", "post", "delete", "patch", "head", "options"];

fn spec() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../infra/openapi.yaml");
    let text = std::fs::read_to_string(path).expect("infra/openapi.yaml is readable");
    serde_norway::from_str(&text).expect("infra/openapi.yaml is YAML")
}

/// `value`, or what its `$ref` (a local JSON pointer) names.
fn resolve<'a>(spec: &'a Value, value: &'a Value) -> &'a Value {
    match value.get("$ref").and_then(Value::as_str) {
        Some(reference) => {
            let pointer = reference.strip_prefix('#').unwrap_or_else(|| panic!("non-local $ref {reference}"));
            let target = spec.pointer(pointer).unwrap_or_else(|| panic!("dangling $ref {reference}"));
            resolve(spec, target)
        }
        None => value,
    }
}

/// Every operation of the spec: (METHOD, path) → operation object.
fn operations(spec: &Value) -> BTreeMap<(String, String), &Value> {
    let mut out = BTreeMap::new();
    let paths = spec["paths"].as_object().expect("paths is a map");
    for (path, item) in paths {
        for method in METHODS {
            if let Some(op) = item.get(method) {
                out.insert((method.to_uppercase(), path.clone()), op);
            }
        }
    }
    out
}

/// The operation's parameters (path-level ones too) located `location`.
fn parameters(spec: &Value, path: &str, op: &Value, location: &str) -> BTreeSet<String> {
    let shared = spec["paths"][path].get("parameters").and_then(Value::as_array).cloned().unwrap_or_default();
    let own = op.get("parameters").and_then(Value::as_array).cloned().unwrap_or_default();
    shared
        .iter()
        .chain(own.iter())
        .map(|p| resolve(spec, p).clone())
        .filter(|p| p["in"] == location)
        .map(|p| p["name"].as_str().expect("a parameter has a name").to_string())
        .collect()
}

fn logical_id(function: Function) -> &'static str {
    match function {
        Function::Catalog => "CatalogFunction",
        Function::Keys => "KeysFunction",
        Function::Oauth => "OauthFunction",
        Function::Audit => "AuditFunction",
    }
}

fn key(route: &Route) -> (String, String) {
    (route.method.to_string(), route.path.to_string())
}

fn operation<'a>(ops: &BTreeMap<(String, String), &'a Value>, route: &Route) -> &'a Value {
    ops.get(&key(route)).unwrap_or_else(|| panic!("{} is not in infra/openapi.yaml", route.name()))
}

#[test]
fn every_route_is_in_the_spec_and_every_operation_is_a_route() {
    let spec = spec();
    let in_spec: BTreeSet<_> = operations(&spec).into_keys().collect();
    let in_code: BTreeSet<_> = ROUTES.iter().map(key).collect();
    let missing: Vec<_> = in_code.difference(&in_spec).collect();
    let extra: Vec<_> = in_spec.difference(&in_code).collect();
    assert!(
        missing.is_empty(),
        "routes in shared/src/routes.rs missing from infra/openapi.yaml: {missing:?}"
    );
    assert!(extra.is_empty(), "operations in infra/openapi.yaml that no route serves: {extra:?}");
    assert_eq!(in_code.len(), ROUTES.len(), "a route is listed twice");
}

#[test]
fn public_routes_have_no_security_and_protected_routes_go_through_the_authorizer() {
    let spec = spec();
    let ops = operations(&spec);
    let schemes = spec["components"]["securitySchemes"].as_object().expect("security schemes");
    let authorizers: BTreeSet<&str> = schemes
        .iter()
        .filter(|(_, s)| s.get("x-amazon-apigateway-authorizer").is_some())
        .map(|(name, _)| name.as_str())
        .collect();
    let oauth: BTreeSet<&str> =
        schemes.iter().filter(|(_, s)| s["type"] == "oauth2").map(|(name, _)| name.as_str()).collect();
    assert_eq!(authorizers.len(), 1, "one REQUEST authorizer: {authorizers:?}");
    assert_eq!(oauth.len(), 1, "one OAuth 2.0 scheme: {oauth:?}");
    let grantable: BTreeSet<&str> = GRANTABLE_SCOPES.iter().map(|p| p.as_str()).collect();

    for route in ROUTES {
        let name = route.name();
        let op = operation(&ops, route);
        let security = op.get("security").and_then(Value::as_array).unwrap_or_else(|| {
            panic!("{name}: every operation states its security (public ones `security: []`)")
        });
        if route.access == Access::Public {
            assert!(security.is_empty(), "{name} is public: its security must be []");
            continue;
        }
        assert!(!security.is_empty(), "{name} is protected: it needs a security requirement");
        // API Gateway attaches the authorizer named in the first requirement.
        let first = security[0].as_object().expect("a requirement is a map");
        assert!(
            first.keys().any(|k| authorizers.contains(k.as_str())),
            "{name}: the first security requirement must name the authorizer scheme"
        );
        for requirement in security {
            let requirement = requirement.as_object().expect("a requirement is a map");
            assert!(!requirement.is_empty(), "{name}: an empty requirement would make it public");
            for scheme in requirement.keys() {
                assert!(schemes.contains_key(scheme), "{name}: unknown security scheme {scheme}");
            }
        }
        // A token may call the route only through a grantable scope the route
        // accepts: the OAuth alternative must be there exactly then, with
        // those scopes.
        let token_scopes: Option<BTreeSet<&str>> = security
            .iter()
            .filter_map(|r| r.as_object())
            .find_map(|r| r.iter().find(|(k, _)| oauth.contains(k.as_str())))
            .map(|(_, scopes)| scopes.as_array().expect("scopes").iter().filter_map(Value::as_str).collect());
        let expected: Option<BTreeSet<&str>> = match route.access {
            Access::Public => unreachable!(),
            Access::Authenticated => Some(BTreeSet::new()),
            Access::AnyOf(perms) => {
                let usable: BTreeSet<&str> =
                    perms.iter().map(|p| p.as_str()).filter(|p| grantable.contains(p)).collect();
                (!usable.is_empty()).then_some(usable)
            }
        };
        assert_eq!(token_scopes, expected, "{name}: OAuth 2.0 requirement and scopes");
    }
}

#[test]
fn query_and_path_parameters_are_the_routes_own() {
    let spec = spec();
    let ops = operations(&spec);
    for route in ROUTES {
        let op = operation(&ops, route);
        let query = parameters(&spec, route.path, op, "query");
        let allowed: BTreeSet<String> = route.query.iter().map(|q| q.to_string()).collect();
        assert_eq!(query, allowed, "{}: query parameters", route.name());
        let path = parameters(&spec, route.path, op, "path");
        let template: BTreeSet<String> = route
            .path
            .split('/')
            .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(str::to_string)
            .collect();
        assert_eq!(path, template, "{}: path parameters", route.name());
        // Headers are never declared as parameters: the credentials are
        // security schemes, and the functions read no other header.
        assert!(
            parameters(&spec, route.path, op, "header").is_empty(),
            "{}: header parameters",
            route.name()
        );
    }
}

#[test]
fn each_operation_invokes_the_function_that_serves_its_route() {
    let spec = spec();
    let ops = operations(&spec);
    let validators = spec["x-amazon-apigateway-request-validators"].as_object().expect("request validators");
    for route in ROUTES {
        let name = route.name();
        let op = operation(&ops, route);
        let integration = &op["x-amazon-apigateway-integration"];
        assert_eq!(integration["type"], "aws_proxy", "{name}: integration type");
        assert_eq!(integration["httpMethod"], "POST", "{name}: Lambda is invoked with POST");
        let uri = integration["uri"]["Fn::Sub"].as_str().unwrap_or_else(|| panic!("{name}: uri is Fn::Sub"));
        let expected = format!(
            "arn:aws:apigateway:${{AWS::Region}}:lambda:path/2015-03-31/functions/${{{}.Arn}}/invocations",
            logical_id(route.function)
        );
        assert_eq!(uri, expected, "{name}: integration uri");
        let validator = op["x-amazon-apigateway-request-validator"].as_str();
        let validator = validator.unwrap_or_else(|| panic!("{name}: a request validator"));
        assert!(validators.contains_key(validator), "{name}: unknown validator {validator}");
        // API Gateway validates bodies against JSON models only.
        let json_body = op.pointer("/requestBody/content/application~1json").is_some();
        assert_eq!(
            validators[validator]["validateRequestBody"],
            Value::Bool(json_body),
            "{name}: body validation exactly for JSON bodies"
        );
    }
}

#[test]
fn the_authorizer_is_a_request_authorizer_without_caching() {
    let spec = spec();
    assert_eq!(spec["openapi"].as_str().map(|v| v.starts_with("3.0.")), Some(true), "OpenAPI 3.0.x");
    assert_eq!(spec["x-amazon-apigateway-api-key-source"], "AUTHORIZER");
    let schemes = spec["components"]["securitySchemes"].as_object().expect("security schemes");
    let (_, scheme) = schemes
        .iter()
        .find(|(_, s)| s.get("x-amazon-apigateway-authorizer").is_some())
        .expect("an authorizer scheme");
    let authorizer = &scheme["x-amazon-apigateway-authorizer"];
    assert_eq!(authorizer["type"], "request");
    // Cached, a policy would be reused and revocation would lag (and the
    // cached 403s would not be audited).
    assert_eq!(authorizer["authorizerResultTtlInSeconds"], 0);
    // API Gateway refuses a request missing any identity source: x-api-key
    // and Authorization are alternatives, so neither may be required.
    assert!(authorizer.get("identitySource").is_none(), "no identity source may be required");
    assert_eq!(
        authorizer["authorizerUri"]["Fn::Sub"],
        "arn:aws:apigateway:${AWS::Region}:lambda:path/2015-03-31/functions/${AuthorizerFunction.Arn}/invocations"
    );
    let oauth = schemes.values().find(|s| s["type"] == "oauth2").expect("an OAuth 2.0 scheme");
    assert_eq!(oauth["flows"]["clientCredentials"]["tokenUrl"], "/oauth/token");
    let scopes: BTreeSet<&str> = oauth["flows"]["clientCredentials"]["scopes"]
        .as_object()
        .expect("scopes")
        .keys()
        .map(String::as_str)
        .collect();
    let grantable: BTreeSet<&str> = GRANTABLE_SCOPES.iter().map(|p| p.as_str()).collect();
    assert_eq!(scopes, grantable, "the OAuth scopes are the grantable ones");
}

#[test]
fn every_reference_resolves_and_errors_are_problems() {
    let spec = spec();
    fn walk(spec: &Value, value: &Value) {
        match value {
            Value::Object(map) => {
                if map.contains_key("$ref") {
                    resolve(spec, value);
                }
                map.values().for_each(|v| walk(spec, v));
            }
            Value::Array(items) => items.iter().for_each(|v| walk(spec, v)),
            _ => {}
        }
    }
    walk(&spec, &spec);
    for ((method, path), op) in operations(&spec) {
        let responses = op["responses"].as_object().expect("responses");
        for (status, response) in responses {
            let code: u16 = status.parse().unwrap_or_else(|_| panic!("{method} {path}: status {status}"));
            let response = resolve(&spec, response);
            if code >= 400 {
                let content = response["content"].as_object().expect("error responses have a body");
                let problem = content.contains_key("application/problem+json");
                let oauth = path.starts_with("/oauth/") && content.contains_key("application/json");
                assert!(problem || oauth, "{method} {path} {status}: problem+json (or an OAuth error)");
            }
            if code == 429 || code == 503 {
                assert!(
                    response["headers"].get("Retry-After").is_some(),
                    "{method} {path} {status}: Retry-After"
                );
            }
            if code == 401 {
                assert!(
                    response["headers"].get("WWW-Authenticate").is_some(),
                    "{method} {path} 401: challenge"
                );
            }
        }
        let route = ROUTES.iter().find(|r| r.method == method && r.path == path).expect("a route");
        if route.access != Access::Public {
            for status in ["401", "403", "429"] {
                assert!(
                    responses.contains_key(status),
                    "{method} {path}: protected routes document {status}"
                );
            }
        }
    }
}
